/* ops: the float operations of a transformer block (norm, rope, softmax, gated activations,
 * attention, f16 conversions) — the scalar spec of each, and dispatch to the ISA variants for
 * the ones that are hot (attention, softmax, conversions). Every variant follows the spec's
 * arithmetic (see ops_isa.h), so results do not depend on the ISA or on how callers split heads.
 * Not here: matmuls (fmat.c, mat.c), the KV cache itself (worker/). */
#pragma GCC optimize("fp-contract=off") /* the spec says which multiply-adds are fused */
#include "kernels/ops.h"
#include <math.h>
#include "core/err.h"
#include "core/half.h"
#include "kernels/dispatch.h"
#include "kernels/ops_isa.h"
#include "kernels/quant.h"
#include "core/types.h"
#include <string.h>

/* ggml's rms_norm: Σx² accumulated in double (8 partial sums), then (x · 1/√(mean+eps)) · w */
void ops_rmsnorm_ref(float *y, const float *x, const float *w, int64_t n, float eps) {
    TERN_ASSERT(n > 0);
    double acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += (double)(x[i + k] * x[i + k]);
    for (; i < n; i++) acc[i % 8] += (double)(x[i] * x[i]);
    double sum = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    float s = 1.0f / sqrtf((float)(sum / (double)n) + eps);
    if (w)
        for (i = 0; i < n; i++) y[i] = (x[i] * s) * w[i];
    else
        for (i = 0; i < n; i++) y[i] = x[i] * s;
}

/* single-threaded between the matmuls of every block: ~0.5 ms a token on 2B-4T in scalar code */
void ops_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps) {
    switch (isa_current()) {
#if defined(TERN_HAVE_X86)
    case ISA_AVX512: ops_rmsnorm_avx512(y, x, w, n, eps); return;
#endif
#if defined(TERN_HAVE_ARM)
    case ISA_NEON: ops_rmsnorm_neon(y, x, w, n, eps); return;
#endif
    default: ops_rmsnorm_ref(y, x, w, n, eps); return;
    }
}

void ops_rope_init(rope_params_t *p, int rot_dim, int neox, float base) {
    memset(p, 0, sizeof *p);
    p->rot_dim = rot_dim;
    p->neox = neox;
    p->base = base;
    p->freq_scale = 1.0f;
    p->attn_factor = 1.0f;
}

/* ggml_rope_yarn_corr_dim: the pair index whose wavelength makes n_rot turns over n_ctx_orig
 * positions, n_dims · ln(n_ctx_orig / (n_rot · 2π)) / (2 ln base) */
static float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
    return n_dims * logf((float)n_ctx_orig / (n_rot * 2 * 3.14159265358979f)) / (2 * logf(base));
}

void ops_rope_yarn(rope_params_t *p, int yarn, float freq_scale, float ext_factor, float attn_factor, int n_ctx_orig,
                   float beta_fast, float beta_slow) {
    p->freq_scale = freq_scale;
    p->ext_factor = ext_factor < 0 ? (yarn ? 1.0f : 0.0f) : ext_factor;
    p->attn_factor = attn_factor;
    float lo = floorf(yarn_corr_dim(p->rot_dim, n_ctx_orig, beta_fast, p->base));
    float hi = ceilf(yarn_corr_dim(p->rot_dim, n_ctx_orig, beta_slow, p->base));
    p->corr_dims[0] = lo > 0 ? lo : 0;
    p->corr_dims[1] = hi < p->rot_dim - 1 ? hi : (float)(p->rot_dim - 1);
}

/* ggml's rope_yarn_ramp: 1 below the low pair, 0 above the high one, linear between */
static float yarn_ramp(float low, float high, int i) {
    float y = ((float)i - low) / fmaxf(0.001f, high - low);
    return 1.0f - fminf(1.0f, fmaxf(0.0f, y));
}

/* ggml_rope_cache_init + rope_yarn: theta starts at pos and is multiplied by base^(-2/rot_dim) (in
 * float) per pair; freq_factors divide it; linear/yarn scale it; with_mag: cos, sin times the
 * magnitude (attn_factor, and yarn's 1 + 0.1 ln(1/freq_scale)). With the plain params every step
 * is exact (· 1), so the result is that of plain RoPE bit for bit. */
static void rope_table(float *cs, float *sn, int pos, const rope_params_t *p, int with_mag) {
    TERN_ASSERT(p->rot_dim > 0 && p->rot_dim % 2 == 0);
    const int half = p->rot_dim / 2;
    const float theta_scale = powf(p->base, -2.0f / (float)p->rot_dim);
    float mscale = p->attn_factor;
    if (p->ext_factor != 0.0f) mscale *= 1.0f + 0.1f * logf(1.0f / p->freq_scale);
    if (!with_mag) mscale = 1.0f;
    float theta = (float)pos;
    for (int i = 0; i < half; i++) {
        float extrap = p->freq_factors ? theta / p->freq_factors[i] : theta;
        float th = p->freq_scale * extrap;
        if (p->ext_factor != 0.0f) {
            float mix = yarn_ramp(p->corr_dims[0], p->corr_dims[1], i) * p->ext_factor;
            th = th * (1 - mix) + extrap * mix;
        }
        cs[i] = cosf(th) * mscale;
        sn[i] = sinf(th) * mscale;
        theta *= theta_scale;
    }
}

void ops_rope_table(float *cs, float *sn, int pos, const rope_params_t *p) { rope_table(cs, sn, pos, p, 1); }

void ops_rope_shift_table(float *cs, float *sn, int delta, const rope_params_t *p) { rope_table(cs, sn, delta, p, 0); }

void ops_rope_apply(float *x, int n_heads, int head_dim, int rot_dim, int neox, const float *cs, const float *sn) {
    const int half = rot_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *xh = x + (int64_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            float x0 = xh[a], x1 = xh[b];
            xh[a] = x0 * cs[i] - x1 * sn[i];
            xh[b] = x0 * sn[i] + x1 * cs[i];
        }
    }
}

void ops_rope(float *x, int n_heads, int head_dim, int pos, const rope_params_t *p) {
    TERN_ASSERT(p->rot_dim > 0 && p->rot_dim % 2 == 0 && p->rot_dim <= head_dim && p->rot_dim <= 1024);
    float cs[512], sn[512];
    ops_rope_table(cs, sn, pos, p);
    ops_rope_apply(x, n_heads, head_dim, p->rot_dim, p->neox, cs, sn);
}

static float fold16(float *acc) {
    for (int s = 8; s >= 1; s /= 2)
        for (int i = 0; i < s; i++) acc[i] += acc[i + s];
    return acc[0];
}

void ops_softmax_ref(float *x, int64_t n) {
    if (n <= 0) return;
    float m = x[0], acc[16] = {0};
    for (int64_t i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    for (int64_t i = 0; i < n; i++) {
        x[i] = ops_exp_spec(x[i] - m);
        acc[i % 16] += x[i];
    }
    float inv = 1.0f / fold16(acc);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void ops_softmax(float *x, int64_t n) {
    switch (isa_current()) {
#if defined(TERN_HAVE_X86)
    case ISA_AVX2: ops_softmax_avx2(x, n); return;
    case ISA_AVX512: ops_softmax_avx512(x, n); return;
#endif
#if defined(TERN_HAVE_ARM)
    case ISA_NEON: ops_softmax_neon(x, n); return;
#endif
    default: ops_softmax_ref(x, n); return;
    }
}

/* silu(g) = g / (1 + e^-g), with the spec's exp (ops_isa.h), so every ISA gives the same bits */
void ops_silu_mul_ref(float *restrict g, const float *restrict u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + ops_exp_spec(-g[i])) * u[i];
}

/* relu(g)² · u as (r · r) · u; r = g > 0 ? g : +0 (NaN and -0 give +0) */
void ops_relu2_mul_ref(float *restrict g, const float *restrict u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float r = g[i] > 0.0f ? g[i] : 0.0f;
        g[i] = r * r * u[i];
    }
}

void ops_silu_mul(float *restrict g, const float *restrict u, int64_t n) {
    switch (isa_current()) {
#if defined(TERN_HAVE_X86)
    case ISA_AVX2: ops_silu_mul_avx2(g, u, n); return;
    case ISA_AVX512: ops_silu_mul_avx512(g, u, n); return;
#endif
#if defined(TERN_HAVE_ARM)
    case ISA_NEON: ops_silu_mul_neon(g, u, n); return;
#endif
    default: ops_silu_mul_ref(g, u, n); return;
    }
}

/* the scalar loop branches on the sign: half the branches mispredict on real activations */
void ops_relu2_mul(float *restrict g, const float *restrict u, int64_t n) {
    switch (isa_current()) {
#if defined(TERN_HAVE_X86)
    case ISA_AVX2: ops_relu2_mul_avx2(g, u, n); return;
    case ISA_AVX512: ops_relu2_mul_avx512(g, u, n); return;
#endif
#if defined(TERN_HAVE_ARM)
    case ISA_NEON: ops_relu2_mul_neon(g, u, n); return;
#endif
    default: ops_relu2_mul_ref(g, u, n); return;
    }
}

void ops_add(float *restrict y, const float *restrict x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

void ops_scale(float *y, float s, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] *= s;
}

size_t ops_kv_bytes(int kv_type, int64_t n) {
    switch (kv_type) {
    case KV_F32: return (size_t)n * 4;
    case KV_F16: return (size_t)n * 2;
    case KV_Q8_0: return (size_t)(n / KV_Q8_0_BLOCK) * KV_Q8_0_BYTES;
    default: return 0;
    }
}

static const char *const kv_names[] = {"f32", "f16", "q8_0"};

const char *ops_kv_name(int kv_type) { return kv_type >= 0 && kv_type <= KV_Q8_0 ? kv_names[kv_type] : NULL; }

int ops_kv_parse(const char *name) {
    for (int t = 0; name && t <= KV_Q8_0; t++)
        if (!strcmp(name, kv_names[t])) return t;
    return -1;
}

void ops_kv_put(void *dst, int kv_type, const float *x, int64_t n) {
    switch (kv_type) {
    case KV_F16: ops_f32_to_f16(dst, x, n); return;
    case KV_Q8_0: quant_from_f32(TT_Q8_0, x, 1, n, dst); return;
    default: memcpy(dst, x, (size_t)n * 4); return;
    }
}

void ops_kv_get(float *y, const void *src, int kv_type, int64_t n) {
    switch (kv_type) {
    case KV_F16: ops_f16_to_f32(y, src, n); return;
    case KV_Q8_0:
        for (int64_t b = 0; b < n / KV_Q8_0_BLOCK; b++) {
            const uint8_t *blk = (const uint8_t *)src + (size_t)b * KV_Q8_0_BYTES;
            uint16_t d16;
            memcpy(&d16, blk, 2);
            float d = f16_to_f32(d16);
            for (int i = 0; i < KV_Q8_0_BLOCK; i++) y[b * KV_Q8_0_BLOCK + i] = (float)(int8_t)blk[2 + i] * d;
        }
        return;
    default: memcpy(y, src, (size_t)n * 4); return;
    }
}

/* element i of a cache run: q8_0 blocks count from p (the head's first block) */
static inline float kv_at(const void *p, int kv_type, int64_t i) {
    if (kv_type == KV_Q8_0) {
        const uint8_t *b = (const uint8_t *)p + (size_t)(i / KV_Q8_0_BLOCK) * KV_Q8_0_BYTES;
        uint16_t d;
        memcpy(&d, b, 2);
        return (float)(int8_t)b[2 + i % KV_Q8_0_BLOCK] * f16_to_f32(d);
    }
    return kv_type == KV_F16 ? f16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

void ops_attn_head_ref(float *out, const float *q, const void *k, const void *v, int kv_type, int n_kv,
                       int64_t stride, int hd, float scale, float *scores) {
    for (int j = 0; j < n_kv; j++) {
        float acc[16] = {0};
        for (int d = 0; d < hd; d++)
            acc[d % 16] = fmaf(q[d], kv_at(k, kv_type, (int64_t)j * stride + d), acc[d % 16]);
        scores[j] = fold16(acc) * scale;
    }
    ops_softmax_ref(scores, n_kv);
    for (int d = 0; d < hd; d++) out[d] = 0.0f;
    for (int j = 0; j < n_kv; j++)
        for (int d = 0; d < hd; d++) out[d] = fmaf(scores[j], kv_at(v, kv_type, (int64_t)j * stride + d), out[d]);
}

void ops_attn_heads_ref(float *out, const float *q, const void *k, const void *v, int kv_type, int ng, int n_kv,
                        int64_t stride, int hd, float scale, float *scores) {
    for (int g = 0; g < ng; g++)
        ops_attn_head_ref(out + (size_t)g * hd, q + (size_t)g * hd, k, v, kv_type, n_kv, stride, hd, scale, scores);
}

void ops_attention(float *out, const float *q, const void *k, const void *v, int kv_type, int n_kv,
                   int n_heads, int n_kv_heads, int hd, int h0, int h1, float scale, float *scores) {
    TERN_ASSERT(kv_type == KV_F32 || kv_type == KV_F16 || (kv_type == KV_Q8_0 && hd % KV_Q8_0_BLOCK == 0));
    TERN_ASSERT(n_kv_heads > 0 && n_heads % n_kv_heads == 0 && hd > 0);
    TERN_ASSERT(0 <= h0 && h0 <= h1 && h1 <= n_heads && n_kv >= 1);
    ops_attn_heads_fn fn = ops_attn_heads_ref;
    int gmax = OPS_ATTN_GROUP;   /* the most heads the variant takes at once */
#if defined(TERN_HAVE_X86)
    if (isa_current() == ISA_AVX2) fn = ops_attn_heads_avx2, gmax = 4;
    if (isa_current() == ISA_AVX512) fn = ops_attn_heads_avx512;
#endif
#if defined(TERN_HAVE_ARM)
    if (isa_current() == ISA_NEON) fn = ops_attn_heads_neon, gmax = 4;
#endif
    const size_t hb = ops_kv_bytes(kv_type, hd);   /* one head's bytes in a position's row */
    const int64_t stride = (int64_t)n_kv_heads * hd;
    const int group = n_heads / n_kv_heads;
    for (int h = h0; h < h1;) {   /* runs of heads of [h0, h1) that read one kv head: 8, 4, 2 or 1 */
        int kvh = h / group, end = (kvh + 1) * group < h1 ? (kvh + 1) * group : h1;
        int ng = end - h < gmax ? end - h : gmax;
        while (ng & (ng - 1)) ng &= ng - 1;   /* the largest power of two in it */
        size_t off = (size_t)kvh * hb;
        fn(out + (int64_t)h * hd, q + (int64_t)h * hd, (const uint8_t *)k + off, (const uint8_t *)v + off, kv_type, ng,
           n_kv, stride, hd, scale, scores);
        h += ng;
    }
}

void ops_f32_to_f16(uint16_t *y, const float *x, int64_t n) {
    switch (isa_current()) {
#if defined(TERN_HAVE_X86)
    case ISA_AVX2: ops_f32_to_f16_avx2(y, x, n); return;
    case ISA_AVX512: ops_f32_to_f16_avx512(y, x, n); return;
#endif
#if defined(TERN_HAVE_ARM)
    case ISA_NEON: ops_f32_to_f16_neon(y, x, n); return;
#endif
    default:
        for (int64_t i = 0; i < n; i++) y[i] = f32_to_f16(x[i]);
    }
}

void ops_f16_to_f32(float *y, const uint16_t *x, int64_t n) {
    switch (isa_current()) {
#if defined(TERN_HAVE_X86)
    case ISA_AVX2: ops_f16_to_f32_avx2(y, x, n); return;
    case ISA_AVX512: ops_f16_to_f32_avx512(y, x, n); return;
#endif
#if defined(TERN_HAVE_ARM)
    case ISA_NEON: ops_f16_to_f32_neon(y, x, n); return;
#endif
    default:
        for (int64_t i = 0; i < n; i++) y[i] = f16_to_f32(x[i]);
    }
}
