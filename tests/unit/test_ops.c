/* test_ops: each float op against a plain double-precision formula (rmsnorm, rope in NEOX and
 * normal pairing, softmax, silu/relu² gates, add, scale, attention = naive softmax(q·Kᵀ)·V with
 * GQA over f32, f16 and q8_0 caches), and every ISA this CPU has (AVX2, AVX-512, NEON) against the scalar spec bit for bit
 * (f16 conversions: identical to core/half.h for every non-NaN value). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "tests/unit/cmocka_or_shim.h"

#include <stdlib.h>
#include <string.h>
#include "core/half.h"
#include "core/types.h"
#include "kernels/dispatch.h"
#include "kernels/ops.h"
#include "kernels/ops_isa.h"
#include "kernels/quant.h"

static uint64_t g_rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}
static float frand(void) { return (float)((rnd() & 0xffffff) / 8388608.0 - 1.0); } /* [-1, 1) */
static float *frandv(int64_t n, float amp) {
    float *v = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) v[i] = frand() * amp;
    return v;
}

static void close_to(double got, double want, double tol, const char *what, int64_t i) {
    if (!(fabs(got - want) <= tol))
        fail_msg("%s [%lld]: got %.9g, want %.9g (tol %.3g)", what, (long long)i, got, want, tol);
}

static void same_bits(const float *a, const float *b, int64_t n, const char *what, int isa) {
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], 4) != 0)
            fail_msg("%s/%s [%lld]: %.9g but ref %.9g", what, isa_name(isa), (long long)i, a[i], b[i]);
}

/* ---- rmsnorm ----------------------------------------------------------- */
static void test_ops_rmsnorm(void **st) {
    static const int64_t ns[] = {1, 7, 8, 9, 15, 16, 17, 23, 24, 31, 33, 100, 2560, 6912};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        int64_t n = ns[k];
        float *x = frandv(n, 3.0f), *w = frandv(n, 2.0f), *y = malloc(sizeof(float) * (size_t)n);
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
        double s = 1.0 / sqrt(ss / (double)n + 1e-5);
        ops_rmsnorm(y, x, w, n, 1e-5f);
        for (int64_t i = 0; i < n; i++) close_to(y[i], x[i] * s * w[i], 1e-6 * fabs(x[i] * s * w[i]) + 1e-30, "rmsnorm", i);
        /* every ISA gives the spec's bits, with and without the gain */
        float *r = malloc(sizeof(float) * (size_t)n), *z = malloc(sizeof(float) * (size_t)n);
        for (int g = 0; g < 2; g++) {
            ops_rmsnorm_ref(r, x, g ? w : NULL, n, 1e-5f);
            for (int isa = 0; isa < ISA_COUNT; isa++) {
                if (!isa_supported(isa)) continue;
                isa_force(isa);
                ops_rmsnorm(z, x, g ? w : NULL, n, 1e-5f);
                isa_force(isa_best());
                same_bits(z, r, n, "rmsnorm", isa);
            }
        }
        free(r); free(z);
        ops_rmsnorm(x, x, NULL, n, 1e-5f); /* in place, no gain */
        for (int64_t i = 0; i < n; i++) close_to(x[i], y[i] / w[i], 1e-6 * fabs(y[i] / w[i]) + 1e-30, "rmsnorm alias", i);
        free(x); free(w); free(y);
    }
}

/* ---- rope -------------------------------------------------------------- */
/* rotate pair (a, b) of head h by the direct formula in double */
static void rope_direct(double *xd, int n_heads, int hd, int rot, int pos, double base, int neox,
                        const float *ff, int ggml_recurrence) {
    float theta_f = (float)pos, ts = powf((float)base, -2.0f / (float)rot);
    for (int i = 0; i < rot / 2; i++) {
        double th = ggml_recurrence ? (double)theta_f : pos * pow(base, -2.0 * i / rot);
        if (ff) th = ggml_recurrence ? (double)(theta_f / ff[i]) : th / ff[i];
        theta_f *= ts;
        for (int h = 0; h < n_heads; h++) {
            double *x = xd + h * hd;
            int a = neox ? i : 2 * i, b = neox ? i + rot / 2 : 2 * i + 1;
            double x0 = x[a], x1 = x[b];
            x[a] = x0 * cos(th) - x1 * sin(th);
            x[b] = x0 * sin(th) + x1 * cos(th);
        }
    }
}

/* x (n,) rotated by ops_rope against the reference xd: the dims of each head past rot_dim
 * (i % hd >= rot) unchanged, exactly; the rotated ones within tol */
static void rope_check(const float *x, const double *xd, int n, int hd, int rot, double tol, const char *what) {
    for (int i = 0; i < n; i++) {
        if (i % hd >= rot) {
            if (x[i] != (float)xd[i]) fail_msg("%s: dim %d beyond rot_dim changed", what, i % hd);
            continue;
        }
        close_to(x[i], xd[i], tol, what, i);
    }
}

static void rope_case(int n_heads, int hd, int rot, int pos, float base, int neox, int use_ff, int rec,
                      double tol) {
    int n = n_heads * hd;
    float *x = frandv(n, 2.0f), ff[256];
    double *xd = malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < rot / 2; i++) ff[i] = 1.0f + (float)i * 0.25f;
    for (int i = 0; i < n; i++) xd[i] = x[i];
    rope_params_t rp;
    ops_rope_init(&rp, rot, neox, base);
    rp.freq_factors = use_ff ? ff : NULL;
    ops_rope(x, n_heads, hd, pos, &rp);
    rope_direct(xd, n_heads, hd, rot, pos, base, neox, use_ff ? ff : NULL, rec);
    char what[96];
    snprintf(what, sizeof what, "rope %s heads=%d hd=%d rot=%d pos=%d ff=%d", neox ? "neox" : "norm",
             n_heads, hd, rot, pos, use_ff);
    rope_check(x, xd, n, hd, rot, tol, what);
    free(x); free(xd);
}

static void test_ops_rope_direct_formula(void **st) {
    static const int pos[] = {0, 1, 2, 7, 100};
    for (int neox = 0; neox < 2; neox++)
        for (size_t p = 0; p < 5; p++) {
            rope_case(4, 128, 128, pos[p], 500000.0f, neox, 0, 0, 2e-5 + pos[p] * 4e-7);
            rope_case(3, 64, 32, pos[p], 10000.0f, neox, 0, 0, 2e-5 + pos[p] * 4e-7);
            rope_case(2, 80, 80, pos[p], 10000.0f, neox, 1, 0, 2e-5 + pos[p] * 4e-7);
        }
}

/* at long positions ggml's float recurrence for theta is the spec, not the exact power */
static void test_ops_rope_ggml_recurrence(void **st) {
    static const int pos[] = {511, 4095, 32767};
    for (int neox = 0; neox < 2; neox++)
        for (size_t p = 0; p < 3; p++) {
            rope_case(5, 128, 128, pos[p], 500000.0f, neox, 0, 1, 2e-5);
            rope_case(2, 96, 64, pos[p], 10000.0f, neox, 1, 1, 2e-5);
        }
}

/* the pairing: a one-hot input moves to its partner dimension */
static void test_ops_rope_pairs(void **st) {
    float x[16];
    /* pos such that theta_0 = pi/2 is not exact; use the 90° test on pair 0 with base such that
     * only theta_0 = pos matters: theta_0 = pos regardless of base */
    for (int neox = 0; neox < 2; neox++) {
        memset(x, 0, sizeof x);
        x[0] = 1.0f;
        rope_params_t rp;
        ops_rope_init(&rp, 8, neox, 10000.0f);
        ops_rope(x, 1, 16, 1, &rp);
        int partner = neox ? 4 : 1;
        close_to(x[0], cos(1.0), 1e-6, "rope pair cos", 0);
        close_to(x[partner], sin(1.0), 1e-6, "rope pair sin", partner);
        for (int i = 0; i < 16; i++)
            if (i != 0 && i != partner && x[i] != 0.0f) fail_msg("rope neox=%d: dim %d touched", neox, i);
    }
}

/* ---- rope scaling: linear, YaRN, frequency factors, against the formula in double ---------- */
typedef struct scaled_ref {
    double freq_scale, ext, attn, beta_fast, beta_slow;
    int n_orig;
    const float *ff;
} scaled_ref_t;

/* the pair index making n_rot turns over n_orig positions (YaRN's correction dims) */
static double ref_corr_dim(int rot, int n_orig, double n_rot, double base) {
    return rot * log(n_orig / (n_rot * 2 * 3.14159265358979323846)) / (2 * log(base));
}

/* theta_extrap = pos base^(-2i/rot) / ff_i; theta_interp = freq_scale theta_extrap; YaRN mixes them
 * over the ramp between the correction dims and scales the magnitude by 1 + 0.1 ln(1/freq_scale) */
static void rope_scaled_ref(double *xd, int n_heads, int hd, int rot, int pos, double base, int neox,
                            const scaled_ref_t *y) {
    double lo = fmax(0, floor(ref_corr_dim(rot, y->n_orig, y->beta_fast, base)));
    double hi = fmin(rot - 1, ceil(ref_corr_dim(rot, y->n_orig, y->beta_slow, base)));
    double mag = y->attn * (y->ext != 0 ? 1 + 0.1 * log(1 / y->freq_scale) : 1);
    for (int i = 0; i < rot / 2; i++) {
        double ex = pos * pow(base, -2.0 * i / rot) / (y->ff ? y->ff[i] : 1.0), th = y->freq_scale * ex;
        if (y->ext != 0) {
            double mix = (1 - fmin(1, fmax(0, (i - lo) / fmax(0.001, hi - lo)))) * y->ext;
            th = th * (1 - mix) + ex * mix;
        }
        for (int h = 0; h < n_heads; h++) {
            double *x = xd + h * hd;
            int a = neox ? i : 2 * i, b = neox ? i + rot / 2 : 2 * i + 1;
            double x0 = x[a], x1 = x[b];
            x[a] = (x0 * cos(th) - x1 * sin(th)) * mag;
            x[b] = (x0 * sin(th) + x1 * cos(th)) * mag;
        }
    }
}

static void scaled_case(int yarn, double freq_scale, double ext, double attn, int n_orig, int use_ff, int neox, int rot,
                        float base, int pos) {
    const int n_heads = 3, hd = 80 > rot ? 80 : rot, n = n_heads * hd;
    float *x = frandv(n, 2.0f), ff[256];
    double *xd = malloc(sizeof(double) * (size_t)n);
    for (int i = 0; i < rot / 2; i++) ff[i] = 1.0f + (float)(i % 7) * 0.5f;
    for (int i = 0; i < n; i++) xd[i] = x[i];
    rope_params_t rp;
    ops_rope_init(&rp, rot, neox, base);
    ops_rope_yarn(&rp, yarn, (float)freq_scale, (float)ext, (float)attn, n_orig, 32.0f, 1.0f);
    rp.freq_factors = use_ff ? ff : NULL;
    ops_rope(x, n_heads, hd, pos, &rp);
    scaled_ref_t y = {freq_scale, ext < 0 ? (yarn ? 1 : 0) : ext, attn, 32, 1, n_orig, use_ff ? ff : NULL};
    rope_scaled_ref(xd, n_heads, hd, rot, pos, base, neox, &y);
    char what[128];
    snprintf(what, sizeof what, "rope yarn=%d fs=%g ext=%g attn=%g orig=%d ff=%d neox=%d rot=%d pos=%d", yarn, freq_scale,
             ext, attn, n_orig, use_ff, neox, rot, pos);
    double tol = (2e-5 + pos * 4e-7) * 2.5;
    rope_check(x, xd, n, hd, rot, tol, what);
    free(x); free(xd);
}

static void test_ops_rope_scaled(void **st) {
    static const int pos[] = {0, 1, 7, 100, 1000};
    for (int neox = 0; neox < 2; neox++)
        for (size_t p = 0; p < 5; p++) {
            scaled_case(0, 0.25, -1, 1.0, 0, 0, neox, 64, 10000.0f, pos[p]);             /* linear */
            scaled_case(0, 0.5, -1, 1.0, 0, 1, neox, 128, 500000.0f, pos[p]);            /* linear + factors */
            scaled_case(1, 0.125, -1, 1.0, 256, 0, neox, 64, 10000.0f, pos[p]);          /* yarn, defaults */
            scaled_case(1, 0.25, 0.5, 0.9, 64, 1, neox, 128, 500000.0f, pos[p]);         /* yarn, all set, factors */
            scaled_case(1, 0.0625, -1, 1.0, 8192, 0, neox, 32, 1000042.0f, pos[p]);      /* falcon-like base */
            scaled_case(0, 1.0, -1, 1.3, 0, 0, neox, 64, 10000.0f, pos[p]);              /* magnitude alone */
        }
}

/* the plain parameters give plain RoPE bit for bit (linear with factor 1, yarn's setter with its
 * no-op values); a shift table is a pure rotation by the angle difference, magnitude 1 */
static void test_ops_rope_plain_and_shift(void **st) {
    float cs0[64], sn0[64], cs1[64], sn1[64];
    rope_params_t a, b;
    ops_rope_init(&a, 128, 1, 500000.0f);
    ops_rope_init(&b, 128, 1, 500000.0f);
    ops_rope_yarn(&b, 0, 1.0f, -1.0f, 1.0f, 4096, 32.0f, 1.0f);
    for (int pos = -40; pos < 5000; pos += 37) {
        ops_rope_table(cs0, sn0, pos, &a);
        ops_rope_table(cs1, sn1, pos, &b);
        if (memcmp(cs0, cs1, sizeof cs0) || memcmp(sn0, sn1, sizeof sn0)) fail_msg("plain params differ at pos %d", pos);
        ops_rope_shift_table(cs1, sn1, pos, &a);
        if (memcmp(cs0, cs1, sizeof cs0) || memcmp(sn0, sn1, sizeof sn0)) fail_msg("plain shift differs at pos %d", pos);
    }
    ops_rope_yarn(&b, 1, 0.25f, -1.0f, 1.3f, 256, 32.0f, 1.0f);
    const int hd = 128, p = 300, d = 77;
    float *x = frandv(hd, 2.0f), y[128];
    memcpy(y, x, sizeof y);
    ops_rope(x, 1, hd, p, &b);                       /* at p, then shifted by -d */
    ops_rope_shift_table(cs1, sn1, -d, &b);
    for (int i = 0; i < 64; i++) close_to(cs1[i] * (double)cs1[i] + sn1[i] * (double)sn1[i], 1.0, 1e-6, "shift magnitude", i);
    ops_rope_apply(x, 1, hd, 128, 1, cs1, sn1);
    ops_rope(y, 1, hd, p - d, &b);                   /* directly at p - d */
    for (int i = 0; i < hd; i++) close_to(x[i], y[i], 2e-4, "yarn shift == recompute", i);
    free(x);
}

/* ---- softmax ----------------------------------------------------------- */
static void test_ops_exp_spec(void **st) {
    for (int i = 0; i <= 200000; i++) {
        float x = -87.0f + 175.0f * (float)i / 200000.0f;
        double want = exp((double)x);
        close_to(ops_exp_spec(x), want, 4e-7 * want, "exp_spec", i);
    }
    assert_true(ops_exp_spec(-100.0f) == 0.0f);
    assert_true(ops_exp_spec(-INFINITY) == 0.0f);
    assert_true(ops_exp_spec(0.0f) == 1.0f);
}

static void test_ops_softmax(void **st) {
    static const int64_t ns[] = {1, 2, 5, 8, 15, 16, 17, 31, 33, 100, 4096, 128256};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        int64_t n = ns[k];
        float *x = frandv(n, 20.0f), *r = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
        if (n > 3) x[1] = -1e30f, x[2] = -INFINITY; /* masked entries give 0 */
        double m = -INFINITY, s = 0;
        for (int64_t i = 0; i < n; i++) m = fmax(m, x[i]);
        for (int64_t i = 0; i < n; i++) s += exp((double)x[i] - m);
        memcpy(r, x, sizeof(float) * (size_t)n);
        ops_softmax_ref(r, n);
        for (int64_t i = 0; i < n; i++) {
            double want = exp((double)x[i] - m) / s;
            /* x − max is rounded to float (relative error up to |x − max|·2⁻²⁴ in exp), exp is
             * good to ~2 ulp, and the sum runs in 16 float lanes (≤ (n/16 + 4)·2⁻²⁴) */
            double rel = 3e-7 + fabs((double)x[i] - m) * 6e-8 + ((double)n / 16 + 4) * 6e-8;
            close_to(r[i], want, want == 0 ? 0 : want * rel, "softmax", i);
        }
        for (int isa = 0; isa < ISA_COUNT; isa++) {
            if (!isa_supported(isa)) continue;
            isa_force(isa);
            memcpy(y, x, sizeof(float) * (size_t)n);
            ops_softmax(y, n);
            same_bits(y, r, n, "softmax", isa);
        }
        isa_force(isa_best());
        free(x); free(r); free(y);
    }
}

/* ---- gates and elementwise -------------------------------------------- */
static void test_ops_elementwise(void **st) {
    const int64_t n = 6913;
    float *g = frandv(n, 8.0f), *u = frandv(n, 2.0f), *y = malloc(sizeof(float) * (size_t)n);
    /* specials where the vector lanes could part from the spec: ±0, NaN, ±inf, exp's range ends */
    static const float sp[] = {0.0f, -0.0f, NAN, INFINITY, -INFINITY, 87.3f, -87.3f, 88.5f, -88.5f, 1e-40f, -1e-40f};
    float *g2 = malloc(sizeof(float) * (size_t)n), *r = malloc(sizeof(float) * (size_t)n);
    memcpy(g2, g, sizeof(float) * (size_t)n);
    for (size_t k = 0; k < sizeof sp / sizeof *sp; k++) g2[100 + 7 * k] = sp[k], g2[n - 1 - k] = sp[k];
    memcpy(y, g, sizeof(float) * (size_t)n);
    ops_silu_mul_ref(y, u, n);
    for (int64_t i = 0; i < n; i++) {
        double want = g[i] / (1.0 + exp(-(double)g[i])) * u[i];   /* exp is the spec's (~2 ulp) */
        close_to(y[i], want, 6e-7 * fabs(want) + 1e-30, "silu_mul", i);
    }
    memcpy(y, g, sizeof(float) * (size_t)n);
    ops_relu2_mul_ref(y, u, n);
    for (int64_t i = 0; i < n; i++) {
        double r = g[i] > 0 ? g[i] : 0, want = r * r * u[i];
        close_to(y[i], want, 3e-7 * fabs(want) + 1e-30, "relu2_mul", i);
    }
    /* every ISA gives the spec's bits, at every length (vector bodies and tails) */
    for (int64_t len = 1; len <= n; len = len < 40 ? len + 1 : len * 3 + 1)
        for (int isa = 0; isa < ISA_COUNT; isa++) {
            if (!isa_supported(isa)) continue;
            for (int f = 0; f < 2; f++) {
                memcpy(r, g2, sizeof(float) * (size_t)n);
                f ? ops_relu2_mul_ref(r, u, len) : ops_silu_mul_ref(r, u, len);
                isa_force(isa);
                memcpy(y, g2, sizeof(float) * (size_t)n);
                f ? ops_relu2_mul(y, u, len) : ops_silu_mul(y, u, len);
                isa_force(isa_best());
                same_bits(y, r, n, f ? "relu2_mul" : "silu_mul", isa);
            }
        }
    free(g2);
    free(r);
    memcpy(y, g, sizeof(float) * (size_t)n);
    ops_add(y, u, n);
    for (int64_t i = 0; i < n; i++) assert_true(y[i] == g[i] + u[i]);
    memcpy(y, g, sizeof(float) * (size_t)n);
    ops_scale(y, 0.375f, n);
    for (int64_t i = 0; i < n; i++) assert_true(y[i] == g[i] * 0.375f);
    free(g); free(u); free(y);
}

/* ---- attention --------------------------------------------------------- */
static void attn_case(int n_heads, int n_kv_heads, int hd, int n_kv, int kv_type) {
    int64_t kvn = (int64_t)n_kv * n_kv_heads * hd;
    float *q = frandv((int64_t)n_heads * hd, 1.0f), *kf = frandv(kvn, 1.0f), *vf = frandv(kvn, 1.0f);
    uint16_t *kh = malloc(2 * (size_t)kvn), *vh = malloc(2 * (size_t)kvn);
    for (int64_t i = 0; i < kvn; i++) {
        kh[i] = f32_to_f16(kf[i]); vh[i] = f32_to_f16(vf[i]);
        if (kv_type == KV_F16) { kf[i] = f16_to_f32(kh[i]); vf[i] = f16_to_f32(vh[i]); }
    }
    /* q8_0: rows quantised by ops_kv_put as the cache stores them; the double reference reads
     * them back through dequant_rows (ggml's Q8_0 rule), so both sides see the same values */
    uint8_t *kq = NULL, *vq = NULL;
    if (kv_type == KV_Q8_0) {
        size_t rb = ops_kv_bytes(KV_Q8_0, (int64_t)n_kv_heads * hd);
        assert_int_equal(rb, (size_t)n_kv_heads * hd / 32 * 34);
        kq = malloc(rb * (size_t)n_kv);
        vq = malloc(rb * (size_t)n_kv);
        for (int j = 0; j < n_kv; j++) {
            ops_kv_put(kq + rb * j, KV_Q8_0, kf + (int64_t)j * n_kv_heads * hd, (int64_t)n_kv_heads * hd);
            ops_kv_put(vq + rb * j, KV_Q8_0, vf + (int64_t)j * n_kv_heads * hd, (int64_t)n_kv_heads * hd);
        }
        float *kd = malloc(4 * (size_t)kvn), *vd = malloc(4 * (size_t)kvn);
        assert_int_equal(dequant_rows(TT_Q8_0, kq, n_kv, (int64_t)n_kv_heads * hd, 0, n_kv, kd), 0);
        assert_int_equal(dequant_rows(TT_Q8_0, vq, n_kv, (int64_t)n_kv_heads * hd, 0, n_kv, vd), 0);
        for (int64_t i = 0; i < kvn; i++) {   /* within half a step of the block's scale */
            assert_true(fabsf(kd[i] - kf[i]) <= 0.6f / 127.0f);   /* max|x| <= 1; d rounded to f16 */
            kf[i] = kd[i], vf[i] = vd[i];
        }
        free(kd); free(vd);
    }
    const void *k = kv_type == KV_F16 ? (const void *)kh : kv_type == KV_Q8_0 ? (const void *)kq : kf;
    const void *v = kv_type == KV_F16 ? (const void *)vh : kv_type == KV_Q8_0 ? (const void *)vq : vf;
    size_t on = (size_t)n_heads * hd;
    float *out = malloc(sizeof(float) * on), *ref = malloc(sizeof(float) * on), *sc = malloc(sizeof(float) * (size_t)n_kv * OPS_ATTN_GROUP);
    float scale = 1.0f / sqrtf((float)hd);
    char what[96];
    snprintf(what, sizeof what, "attention %s heads=%d/%d hd=%d n_kv=%d", ops_kv_name(kv_type),
             n_heads, n_kv_heads, hd, n_kv);
    isa_force(ISA_REF);
    ops_attention(ref, q, k, v, kv_type, n_kv, n_heads, n_kv_heads, hd, 0, n_heads, scale, sc);
    /* naive softmax(q·Kᵀ·scale)·V in double, head h on kv head h / (n_heads / n_kv_heads) */
    double *p = malloc(sizeof(double) * (size_t)n_kv);
    for (int h = 0; h < n_heads; h++) {
        int g = h / (n_heads / n_kv_heads);
        double m = -INFINITY, s = 0;
        for (int j = 0; j < n_kv; j++) {
            double d = 0;
            for (int i = 0; i < hd; i++) d += (double)q[h * hd + i] * kf[((int64_t)j * n_kv_heads + g) * hd + i];
            p[j] = d * scale;
            m = fmax(m, p[j]);
        }
        for (int j = 0; j < n_kv; j++) s += (p[j] = exp(p[j] - m));
        for (int i = 0; i < hd; i++) {
            double o = 0;
            for (int j = 0; j < n_kv; j++) o += p[j] / s * vf[((int64_t)j * n_kv_heads + g) * hd + i];
            close_to(ref[h * hd + i], o, 2e-6, what, h * hd + i);
        }
    }
    for (int isa = 0; isa < ISA_COUNT; isa++) {
        if (!isa_supported(isa)) continue;
        isa_force(isa);
        memset(out, 0xff, sizeof(float) * on);
        ops_attention(out, q, k, v, kv_type, n_kv, n_heads, n_kv_heads, hd, 0, n_heads, scale, sc);
        same_bits(out, ref, (int64_t)on, what, isa);
        /* split heads like callers do: [0, a) and [a, n): same bits, nothing outside written */
        int a = n_heads / 3;
        memset(out, 0xff, sizeof(float) * on);
        ops_attention(out, q, k, v, kv_type, n_kv, n_heads, n_kv_heads, hd, a, n_heads, scale, sc);
        for (size_t i = 0; i < (size_t)a * hd; i++)
            if (!isnan(out[i])) fail_msg("%s: head range [%d,%d) wrote head %zu", what, a, n_heads, i / hd);
        ops_attention(out, q, k, v, kv_type, n_kv, n_heads, n_kv_heads, hd, 0, a, scale, sc);
        same_bits(out, ref, (int64_t)on, what, isa);
    }
    isa_force(isa_best());
    free(q); free(kf); free(vf); free(kh); free(vh); free(kq); free(vq); free(out); free(ref); free(sc); free(p);
}

static void test_ops_attention(void **st) {
    static const int nkv[] = {1, 2, 3, 5, 17, 64, 257};
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < sizeof nkv / sizeof *nkv; i++) {
            attn_case(8, 2, 64, nkv[i], t);
            if (t == KV_Q8_0) {   /* q8_0 heads are whole 32-blocks */
                attn_case(4, 4, 96, nkv[i], t);   /* no GQA, hd not a multiple of 64 */
                attn_case(6, 3, 32, nkv[i], t);   /* one block a head */
                continue;
            }
            attn_case(4, 4, 48, nkv[i], t);   /* no GQA, hd not a multiple of 64 */
            attn_case(6, 3, 24, nkv[i], t);   /* hd not a multiple of 16: spec path */
        }
}

static void test_ops_attention_model_shape(void **st) {
    attn_case(20, 5, 128, 1000, KV_F16);  /* BitNet 2B-4T */
    attn_case(20, 5, 128, 333, KV_F32);
    attn_case(32, 8, 128, 129, KV_F16);   /* Llama-3 8B */
    attn_case(20, 5, 128, 1000, KV_Q8_0);
    attn_case(12, 4, 256, 77, KV_Q8_0);   /* Falcon3: 256-wide heads */
    attn_case(16, 1, 64, 100, KV_F16);    /* multi-query: runs of 8 heads over one kv head */
    attn_case(10, 1, 32, 33, KV_Q8_0);    /* 8 + 2 */
    attn_case(14, 2, 48, 21, KV_F32);     /* 7 = 4 + 2 + 1 */
}

/* ---- f16 conversions --------------------------------------------------- */
static void test_ops_f16_to_f32_all(void **st) {
    uint16_t *h = malloc(2 * 65536 + 2);
    float *y = malloc(4 * 65536 + 4);
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    for (int isa = 0; isa < ISA_COUNT; isa++) {
        if (!isa_supported(isa)) continue;
        isa_force(isa);
        for (int len = 65536; len >= 65536 - 17; len--) { /* every tail length */
            memset(y, 0, 4 * 65536);
            ops_f16_to_f32(y, h, len);
            for (int i = 0; i < len; i++) {
                float want = f16_to_f32(h[i]);
                if (isnan(want) ? !isnan(y[i]) : memcmp(&y[i], &want, 4) != 0)
                    fail_msg("f16_to_f32/%s len %d: 0x%04x -> %.9g, want %.9g", isa_name(isa), len, h[i], y[i], want);
            }
            assert_true(y[len] == 0.0f || len == 65536);
        }
    }
    isa_force(isa_best());
    free(h); free(y);
}

static void test_ops_f32_to_f16(void **st) {
    const int n = 1 << 20;
    float *x = malloc(4 * (size_t)n + 4);
    uint16_t *y = malloc(2 * (size_t)n + 2);
    for (int i = 0; i < n; i++) {
        uint32_t b = rnd() << 16 ^ rnd();
        if (i % 4 == 1) b = (b & 0x807fffff) | ((uint32_t)(100 + rnd() % 60) << 23); /* f16 range */
        if (i % 4 == 2) b = (b & 0x80001fff) | ((uint32_t)(102 + rnd() % 40) << 23) | 0x1000; /* ties */
        memcpy(&x[i], &b, 4);
    }
    static const float special[] = {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, -65520.0f, 5.96e-8f,
                                    2.98e-8f, 2.99e-8f, 6.1e-5f, 1e-10f, INFINITY, -INFINITY};
    memcpy(x, special, sizeof special);
    x[20] = NAN;
    for (int isa = 0; isa < ISA_COUNT; isa++) {
        if (!isa_supported(isa)) continue;
        isa_force(isa);
        for (int len = n; len >= n - 17; len -= 5) {
            ops_f32_to_f16(y, x, len);
            for (int i = 0; i < len; i++) {
                uint16_t want = f32_to_f16(x[i]);
                int nan = (want & 0x7c00) == 0x7c00 && (want & 0x3ff);
                int ynan = (y[i] & 0x7c00) == 0x7c00 && (y[i] & 0x3ff);
                if (nan ? !ynan : y[i] != want) /* NaN payloads may differ (F16C keeps them) */
                    fail_msg("f32_to_f16/%s: %.9g -> 0x%04x, want 0x%04x", isa_name(isa), x[i], y[i], want);
            }
        }
    }
    isa_force(isa_best());
    free(x); free(y);
}

int main(void) {
    printf("isa: %s\n", isa_name(isa_best()));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ops_rmsnorm),
        cmocka_unit_test(test_ops_rope_direct_formula),
        cmocka_unit_test(test_ops_rope_ggml_recurrence),
        cmocka_unit_test(test_ops_rope_pairs),
        cmocka_unit_test(test_ops_rope_scaled),
        cmocka_unit_test(test_ops_rope_plain_and_shift),
        cmocka_unit_test(test_ops_exp_spec),
        cmocka_unit_test(test_ops_softmax),
        cmocka_unit_test(test_ops_elementwise),
        cmocka_unit_test(test_ops_attention),
        cmocka_unit_test(test_ops_attention_model_shape),
        cmocka_unit_test(test_ops_f16_to_f32_all),
        cmocka_unit_test(test_ops_f32_to_f16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
