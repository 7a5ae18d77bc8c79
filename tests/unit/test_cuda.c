/* test_cuda: the CUDA stage. Always (no GPU needed): the gpack layout round-trips trits exactly
 * for every ternary type and odd shapes; its dp4a bit contract holds; gpack_gemv_ref (the spec
 * of the GPU W2A8 kernels) equals the CPU mat_mul bit for bit; the probe, stage_init and the -ngl
 * pipeline fail with one clear line when there is no CUDA build or no device. With a device:
 * every kernel against its CPU twin (ternary products, act_quant and the SiLU/relu² gates exact;
 * other float ops within 1e-5 relative, by design exact; attention also with 256-wide heads), and a tiny model (relu²/NEOX/F16 head and SiLU/normal-rope/
 * Q8_0 head) on the GPU against the CPU stage: logits within 1e-3 · max|logit|, greedy tokens
 * identical, also for a GPU+CPU split; the fused kernels of the default path equal the separate
 * ones bit for bit (each kernel, and whole-model logits with TERN_CUDA_FUSE=0); the device picks
 * (penalty, argmax, top-k: cuda_pick) equal the sampler's on hostile rows (ties, ±0, ±inf, NaN),
 * and seeded sampled runs with the GPU picking give the CPU stage's tokens; the context shift
 * (cuda_ops_kv_shift) against kv_cache_shift on the same cache bytes (f32/f16/q8_0, NEOX and
 * normal pairs, partial rotation: values and untouched rows byte for byte, keys within one
 * rounding of the type, by design exact), and a tiny model that shifts mid-generation on the GPU
 * against the CPU stage (logits within 1e-3, same tokens). Without one those print "skipped: no
 * CUDA device". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "coordinator/pipeline_local.h"
#include "core/err.h"
#include "core/gguf.h"
#include "core/half.h"
#include "core/types.h"
#include "kernels/fmat.h"
#include "kernels/gpack.h"
#include "kernels/mat.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "worker/cuda_stage.h"
#include "worker/kv_cache.h"
#include "worker/sampler.h"
#include "worker/stage.h"
#if defined(TERN_HAVE_CUDA)
#include "kernels/cuda/cuda_fmat.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_pick.h"
#include "kernels/cuda/cuda_rt.h"
#include "kernels/cuda/cuda_tmat.h"
#endif

int mkmodel_main(int argc, char **argv);

static int g_gpu;           /* a usable device */
static char g_dir[256];
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}
static void rand_trits(int8_t *t, int64_t n) { for (int64_t i = 0; i < n; i++) t[i] = (int8_t)(rnd() % 3) - 1; }
static void rand_f32(float *x, int64_t n, float a) {
    for (int64_t i = 0; i < n; i++) x[i] = a * ((float)(rnd() % 20001) / 10000.0f - 1.0f);
}

/* ---- always: the layout ------------------------------------------------------------------- */
static void test_gpack_roundtrip(void **state) {
    (void)state;
    const int64_t rows[] = {1, 3, 7, 64, 65}, cols[] = {16, 48, 128, 256, 2560};
    for (size_t a = 0; a < 5; a++)
        for (size_t b = 0; b < 5; b++) {
            int64_t r = rows[a], c = cols[b];
            int8_t *t = malloc((size_t)(r * c)), *u = malloc((size_t)(r * c));
            uint32_t *w = malloc(gpack_bytes(r, c));
            rand_trits(t, r * c);
            gpack_pack_rows(t, r, c, w);
            gpack_unpack_rows(w, r, c, u);
            if (memcmp(t, u, (size_t)(r * c))) fail_msg("gpack round trip differs at %lld x %lld", (long long)r, (long long)c);
            /* the bit contract the kernels rely on: byte b of (w >> 2j) & 0x03030303 is trit 16g+4j+b, + 1 */
            for (int64_t g = 0; g < r * c / 16; g++)
                for (int j = 0; j < 4; j++)
                    for (int bb = 0; bb < 4; bb++) {
                        int code = (int)(((w[g] >> (2 * j)) & 0x03030303u) >> (8 * bb)) & 0xff;
                        if (code != t[16 * g + 4 * j + bb] + 1)
                            fail_msg("word %lld j %d byte %d: code %d for trit %d", (long long)g, j, bb, code,
                                     t[16 * g + 4 * j + bb]);
                    }
            free(t); free(u); free(w);
        }
}

/* a stored tensor of `type` from trits t (rows, cols) with scale s; returns bytes (caller frees) */
static uint8_t *store(int type, const int8_t *t, int64_t rows, int64_t cols, float s) {
    size_t nb = type_tensor_bytes(type, cols, rows);
    uint8_t *buf = calloc(1, nb);
    assert_int_equal(quant_pack_trits(type, t, rows, cols, s, buf), 0);
    if (type == TT_I2_S) quant_i2s_tail(buf + rows * cols / 4, s);
    return buf;
}

static void test_gpack_from_tensor(void **state) {
    (void)state;
    const int types[] = {TT_I2_S, TT_TQ1_0, TT_TQ2_0};
    const int64_t rows = 70, cols[] = {256, 768};
    char err[256];
    for (int ti = 0; ti < 3; ti++)
        for (int ci = 0; ci < 2; ci++) {
            int type = types[ti];
            int64_t c = cols[ci];
            int8_t *t = malloc((size_t)(rows * c)), *u = malloc((size_t)(rows * c));
            uint32_t *w = malloc(gpack_bytes(rows, c));
            rand_trits(t, rows * c);
            float s = 0.0371f, got = 0;
            uint8_t *buf = store(type, t, rows, c, s);
            assert_int_equal(gpack_from_tensor(type, buf, rows, c, w, &got, err, sizeof err), 0);
            gpack_unpack_rows(w, rows, c, u);
            if (memcmp(t, u, (size_t)(rows * c))) fail_msg("%s %lld x %lld: trits differ", type_name(type), (long long)rows, (long long)c);
            float want = type == TT_I2_S ? s : f16_to_f32(f32_to_f16(s));
            if (got != want) fail_msg("%s: scale %g, want %g", type_name(type), got, want);
            if (type != TT_I2_S) {
                size_t bb = type == TT_TQ2_0 ? 66 : 54;
                uint16_t z = 0, other = f32_to_f16(0.5f);
                memcpy(buf + 2 * bb + bb - 2, &z, 2);   /* block 2: scale 0 → its trits read as 0 */
                assert_int_equal(gpack_from_tensor(type, buf, rows, c, w, &got, err, sizeof err), 0);
                gpack_unpack_rows(w, rows, c, u);
                for (int i = 0; i < 256; i++) assert_int_equal(u[512 + i], 0);
                assert_memory_equal(u + 768, t + 768, 256);
                memcpy(buf + 3 * bb + bb - 2, &other, 2);   /* a different scale: refused by name */
                assert_int_equal(gpack_from_tensor(type, buf, rows, c, w, &got, err, sizeof err), TERN_ENOTSUP);
                assert_non_null(strstr(err, "per-block scales"));
            }
            free(buf); free(t); free(u); free(w);
        }
    assert_int_equal(gpack_from_tensor(TT_F16, NULL, 4, 256, NULL, NULL, err, sizeof err), TERN_EINVAL);
    assert_non_null(strstr(err, "not a ternary type"));
}

/* gpack_gemv_ref is what the GPU computes; it must equal the CPU's mat_mul bit for bit */
static void test_gpack_ref_equals_mat(void **state) {
    (void)state;
    const int types[] = {TT_I2_S, TT_TQ2_0, TT_I2_S};
    const int64_t shapes[][2] = {{70, 512}, {33, 768}, {19, 384}};   /* 384: I2_S not on the TL path */
    char err[256];
    for (int k = 0; k < 3; k++) {
        int type = types[k];
        int64_t rows = shapes[k][0], cols = shapes[k][1];
        const int n = 3;
        int8_t *t = malloc((size_t)(rows * cols)), *q = malloc((size_t)cols);
        rand_trits(t, rows * cols);
        uint8_t *buf = store(type, t, rows, cols, 0.0123f);
        mat_t m;
        assert_int_equal(mat_init(&m, type, rows, cols, buf, type_tensor_bytes(type, cols, rows), 0, err, sizeof err), 0);
        float *x = malloc((size_t)(n * cols) * 4), *y = malloc((size_t)(n * rows) * 4), *yr = malloc((size_t)rows * 4);
        rand_f32(x, n * cols, 3.0f);
        void *scr = aligned_alloc(64, (mat_scratch_bytes(&m, n) + 63) / 64 * 64);
        mat_mul(&m, x, n, y, scr, NULL);
        uint32_t *w = malloc(gpack_bytes(rows, cols));
        float sc;
        assert_int_equal(gpack_from_tensor(type, buf, rows, cols, w, &sc, err, sizeof err), 0);
        for (int i = 0; i < n; i++) {
            int32_t qs;
            float s = act_quant_ref(x + i * cols, cols, q, &qs);
            gpack_gemv_ref(w, rows, cols, sc, q, s, qs, yr);
            for (int64_t r = 0; r < rows; r++)
                if (memcmp(&yr[r], &y[i * rows + r], 4))
                    fail_msg("%s (%s) token %d row %lld: gpack %.9g, mat %.9g", type_name(type), mat_kernel_name(&m), i,
                             (long long)r, yr[r], y[i * rows + r]);
        }
        mat_free(&m);
        free(scr); free(w); free(x); free(y); free(yr); free(t); free(q); free(buf);
    }
}

/* ---- always: no device / no CUDA build is one clear line ------------------------------------ */
static void make_model(const char *path, const char *arch, const char *type, const char *head) {
    if (access(path, R_OK) == 0) return;
    char *argv[] = {"mkmodel", "--arch", (char *)arch, "--preset", "tiny", "--type", (char *)type, "--head",
                    (char *)head, "--seed", "11", "-o", (char *)path, "--untied", NULL};
    assert_int_equal(mkmodel_main(strcmp(head, "q8_0") ? 13 : 14, argv), 0);
}

static void check_no_gpu_msg(const char *err) {
    if (!strstr(err, "tern was built without CUDA") && !strstr(err, "no CUDA device found"))
        fail_msg("unexpected message: '%s'", err);
    assert_null(strchr(err, '\n'));
}

static void test_probe_and_hooks(void **state) {
    (void)state;
    char name[256] = "", err[512] = "";
    int rc = cuda_stage_probe(name, sizeof name, err, sizeof err);
#if !defined(TERN_HAVE_CUDA)
    assert_true(rc < 0);
    assert_string_equal(err, "tern was built without CUDA");
#endif
    if (rc == 0) {
        printf("device: %s\n", name);
        return;   /* the GPU tests below cover the hooks */
    }
    check_no_gpu_msg(err);
    char path[512];
    snprintf(path, sizeof path, "%s/hook.gguf", g_dir);
    make_model(path, "bitnet-b1.58", "i2_s", "f16");
    gguf_t *g;
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    stage_cfg_t c;
    stage_cfg_default(&c);
    assert_int_equal(c.device, STAGE_DEV_CPU);
    c.first = 0;
    c.last = 1;
    c.has_head = 1;
    c.n_ctx = 32;
    c.device = STAGE_DEV_CUDA;
    stage_t st;
    err[0] = 0;
    assert_true(stage_init(&st, g, &c, NULL, err, sizeof err) < 0);
    check_no_gpu_msg(err);
    c.device = STAGE_DEV_CPU;
    pipeline_t *pl = NULL;
    err[0] = 0;
    assert_true(pipeline_local_new_gpu(&pl, g, &c, 1, 1, NULL, err, sizeof err) < 0);
    assert_null(pl);
    check_no_gpu_msg(err);
    gguf_close(&g);
}

/* ---- with a device ------------------------------------------------------------------------- */
#define NEED_GPU() do { if (!g_gpu) { printf("skipped: no CUDA device\n"); skip(); } } while (0)

static double max_rel(const float *a, const float *b, int64_t n) {
    double md = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        md = d > md ? d : md;
        mx = fabs((double)b[i]) > mx ? fabs((double)b[i]) : mx;
    }
    return mx > 0 ? md / mx : md;
}

#if defined(TERN_HAVE_CUDA)
static void *dup_to_dev(const void *p, size_t n) {
    char err[256];
    void *d = cuda_rt_alloc(n);
    assert_non_null(d);
    assert_int_equal(cuda_rt_h2d(d, p, n, err, sizeof err), 0);
    return d;
}
static void from_dev(void *dst, const void *d, size_t n) {
    char err[256];
    if (cuda_rt_sync(err, sizeof err) < 0) fail_msg("%s", err);
    assert_int_equal(cuda_rt_d2h(dst, d, n, err, sizeof err), 0);
}

static void test_gpu_tmat(void **state) {
    (void)state;
    NEED_GPU();
    char err[256];
    const int64_t shapes[][2] = {{333, 2560}, {2560, 768}, {7, 256}};
    const int ns[] = {1, 2, 3, 5, 8, 9, 40, 67, 130};
    /* each shape with the GEMV's rows per warp by size, 1, 2 and 4; then the GEMM on the tensor
     * cores (sm_80+: tokens > 8, rows and tokens past whole tiles) */
    for (int k = 0; k < 3 * 5; k++) {
        int rpw = cuda_tmat_set_rows(k / 3 == 3 ? 4 : k / 3 == 4 ? 0 : k / 3);
        int mma = cuda_tmat_set_mma(k / 3 == 4);
        if (k / 3 == 4 && !mma) { printf("skipped: the tensor-core GEMM needs sm_80+\n"); break; }
        int64_t rows = shapes[k % 3][0], cols = shapes[k % 3][1];
        int8_t *t = malloc((size_t)(rows * cols));
        rand_trits(t, rows * cols);
        uint8_t *buf = store(TT_I2_S, t, rows, cols, 0.021f);
        mat_t m;
        assert_int_equal(mat_init(&m, TT_I2_S, rows, cols, buf, type_tensor_bytes(TT_I2_S, cols, rows), 0, err, sizeof err), 0);
        uint32_t *w = malloc(gpack_bytes(rows, cols));
        float sc;
        assert_int_equal(gpack_from_tensor(TT_I2_S, buf, rows, cols, w, &sc, err, sizeof err), 0);
        void *dw = dup_to_dev(w, gpack_bytes(rows, cols));
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
            int n = ns[a];
            float *x = malloc((size_t)(n * cols) * 4), *y = malloc((size_t)(n * rows) * 4), *yg = malloc((size_t)(n * rows) * 4);
            rand_f32(x, n * cols, 2.5f);
            x[0] = 0.5f * 2.5f;   /* an exact .5 after scaling is likely somewhere: ties round away from 0 */
            void *scr = aligned_alloc(64, (mat_scratch_bytes(&m, n) + 63) / 64 * 64);
            mat_mul(&m, x, n, y, scr, NULL);
            float *dx = dup_to_dev(x, (size_t)(n * cols) * 4), *dy = cuda_rt_alloc((size_t)(n * rows) * 4), *ds = cuda_rt_alloc((size_t)n * 4);
            int8_t *dq = cuda_rt_alloc((size_t)(n * cols));
            int32_t *dsum = cuda_rt_alloc((size_t)n * 4);
            cuda_tmat_quant(dx, n, cols, dq, ds, dsum);
            /* activations: exactly act_quant_ref */
            int8_t *q = malloc((size_t)(n * cols)), *qr = malloc((size_t)cols);
            float *s = malloc((size_t)n * 4);
            int32_t *sum = malloc((size_t)n * 4);
            from_dev(q, dq, (size_t)(n * cols));
            from_dev(s, ds, (size_t)n * 4);
            from_dev(sum, dsum, (size_t)n * 4);
            for (int i = 0; i < n; i++) {
                int32_t sr;
                float ssr = act_quant_ref(x + i * cols, cols, qr, &sr);
                if (ssr != s[i] || sr != sum[i] || memcmp(qr, q + i * cols, (size_t)cols))
                    fail_msg("act quant token %d of %d: s %g/%g sum %d/%d", i, n, s[i], ssr, sum[i], sr);
            }
            cuda_tmat_mul(dw, rows, cols, sc, 1.0f, dq, ds, dsum, n, dy);
            from_dev(yg, dy, (size_t)(n * rows) * 4);
            for (int64_t i = 0; i < n * rows; i++)
                if (memcmp(&y[i], &yg[i], 4))
                    fail_msg("%lld x %lld, n %d, %d rows/warp, mma %d, token %lld row %lld: gpu %.9g cpu %.9g", (long long)rows,
                             (long long)cols, n, rpw, mma, (long long)(i / rows), (long long)(i % rows), yg[i], y[i]);
            cuda_rt_free(dx); cuda_rt_free(dy); cuda_rt_free(ds); cuda_rt_free(dq); cuda_rt_free(dsum);
            free(x); free(y); free(yg); free(scr); free(q); free(qr); free(s); free(sum);
        }
        cuda_rt_free(dw);
        mat_free(&m);
        free(w); free(t); free(buf);
    }
    cuda_tmat_set_rows(0);
    cuda_tmat_set_mma(0);
}

static void test_gpu_ops(void **state) {
    (void)state;
    NEED_GPU();
    const double tol = 1e-5;
    /* rmsnorm, with and without gain, gathered rows */
    int n = 3;
    int64_t dim = 2560;
    float *x = malloc((size_t)(n * dim) * 4), *w = malloc((size_t)dim * 4), *y = malloc((size_t)(n * dim) * 4),
          *yg = malloc((size_t)(n * dim) * 4);
    rand_f32(x, n * dim, 4.0f);
    rand_f32(w, dim, 1.0f);
    int rows[3] = {2, 0, 1};
    for (int i = 0; i < n; i++) ops_rmsnorm(y + i * dim, x + rows[i] * dim, w, dim, 1e-5f);
    float *dx = dup_to_dev(x, (size_t)(n * dim) * 4), *dw = dup_to_dev(w, (size_t)dim * 4), *dy = cuda_rt_alloc((size_t)(n * dim) * 4);
    int *drows = dup_to_dev(rows, sizeof rows);
    cuda_ops_rmsnorm(dy, dx, dw, n, dim, 1e-5f, drows);
    from_dev(yg, dy, (size_t)(n * dim) * 4);
    double e = max_rel(yg, y, n * dim);
    printf("rmsnorm: max rel err %.3g\n", e);
    assert_true(e <= tol);
    /* rope both modes: q (n, 4 heads, 64), positions 0, 5, 300 */
    int nh = 4, hd = 64, rot = 64, pos[3] = {0, 5, 300}, nctx = 512, half = rot / 2;
    float *cs = malloc((size_t)nctx * half * 4), *sn = malloc((size_t)nctx * half * 4);
    float base = 500000.0f, ts = powf(base, -2.0f / (float)rot);
    for (int p = 0; p < nctx; p++) {
        float th = (float)p;
        for (int i = 0; i < half; i++) { cs[p * half + i] = cosf(th); sn[p * half + i] = sinf(th); th *= ts; }
    }
    float *dcs = dup_to_dev(cs, (size_t)nctx * half * 4), *dsn = dup_to_dev(sn, (size_t)nctx * half * 4);
    int *dpos = dup_to_dev(pos, sizeof pos);
    for (int neox = 0; neox < 2; neox++) {
        float *qv = malloc((size_t)(n * nh * hd) * 4), *qg = malloc((size_t)(n * nh * hd) * 4);
        rand_f32(qv, n * nh * hd, 2.0f);
        float *dq = dup_to_dev(qv, (size_t)(n * nh * hd) * 4);
        rope_params_t rp;
        ops_rope_init(&rp, rot, neox, base);
        for (int t = 0; t < n; t++) ops_rope(qv + t * nh * hd, nh, hd, pos[t], &rp);
        cuda_ops_rope(dq, n, nh, hd, rot, dpos, dcs, dsn, neox);
        from_dev(qg, dq, (size_t)(n * nh * hd) * 4);
        e = max_rel(qg, qv, n * nh * hd);
        printf("rope %s: max rel err %.3g\n", neox ? "neox" : "normal", e);
        assert_true(e <= tol);
        cuda_rt_free(dq); free(qv); free(qg);
    }
    /* attention over an f16 cache: 1 sequence, 301 positions, GQA 4/2, tokens at pos[] */
    int nkvh = 2, kvd = nkvh * hd, npos = 301;
    uint16_t *kc = malloc((size_t)npos * kvd * 2), *vc = malloc((size_t)npos * kvd * 2);
    float *tmp = malloc((size_t)npos * kvd * 4);
    rand_f32(tmp, npos * kvd, 1.5f);
    ops_f32_to_f16(kc, tmp, npos * kvd);
    rand_f32(tmp, npos * kvd, 1.5f);
    ops_f32_to_f16(vc, tmp, npos * kvd);
    float *qv = malloc((size_t)(n * nh * hd) * 4), *o = malloc((size_t)(n * nh * hd) * 4), *og = malloc((size_t)(n * nh * hd) * 4);
    float *scores = malloc((size_t)npos * OPS_ATTN_GROUP * 4);
    rand_f32(qv, n * nh * hd, 1.0f);
    float scale = 1.0f / sqrtf((float)hd);
    for (int t = 0; t < n; t++) ops_attention(o + t * nh * hd, qv + t * nh * hd, kc, vc, KV_F16, pos[t] + 1, nh, nkvh, hd, 0, nh, scale, scores);
    int seq[3] = {0, 0, 0};
    int *dseq = dup_to_dev(seq, sizeof seq);
    void *dkc = dup_to_dev(kc, (size_t)npos * kvd * 2), *dvc = dup_to_dev(vc, (size_t)npos * kvd * 2);
    float *dqv = dup_to_dev(qv, (size_t)(n * nh * hd) * 4), *dout = cuda_rt_alloc((size_t)(n * nh * hd) * 4);
    float *dsc = cuda_rt_alloc((size_t)(n * nh * npos) * 4);
    cuda_ops_attention(dout, dqv, dkc, dvc, KV_F16, n, dseq, dpos, (int64_t)npos * kvd, nh, nkvh, hd, scale, dsc, npos);
    from_dev(og, dout, (size_t)(n * nh * hd) * 4);
    e = max_rel(og, o, n * nh * hd);
    printf("attention: max rel err %.3g\n", e);
    assert_true(e <= tol);
    /* the same over a q8_0 cache (rows quantised by the CPU's ops_kv_put) */
    {
        size_t rb = ops_kv_bytes(KV_Q8_0, kvd);
        uint8_t *kq = malloc(rb * npos), *vq = malloc(rb * npos);
        for (int j = 0; j < npos; j++) {
            rand_f32(tmp, kvd, 1.5f);
            ops_kv_put(kq + rb * j, KV_Q8_0, tmp, kvd);
            rand_f32(tmp, kvd, 1.5f);
            ops_kv_put(vq + rb * j, KV_Q8_0, tmp, kvd);
        }
        for (int t = 0; t < n; t++)
            ops_attention(o + t * nh * hd, qv + t * nh * hd, kq, vq, KV_Q8_0, pos[t] + 1, nh, nkvh, hd, 0, nh, scale, scores);
        void *dkq = dup_to_dev(kq, rb * npos), *dvq = dup_to_dev(vq, rb * npos);
        cuda_ops_attention(dout, dqv, dkq, dvq, KV_Q8_0, n, dseq, dpos, (int64_t)npos * kvd, nh, nkvh, hd, scale, dsc, npos);
        from_dev(og, dout, (size_t)(n * nh * hd) * 4);
        e = max_rel(og, o, n * nh * hd);
        printf("attention (q8_0 cache): max rel err %.3g\n", e);
        assert_true(e <= tol);
        cuda_rt_free(dkq); cuda_rt_free(dvq);
        free(kq); free(vq);
    }
    /* the gates, bit for bit: SiLU (the spec's exp) and relu², over [-20, 20] and a few specials */
    {
        const int64_t ng = 1 << 20;
        float *g = malloc((size_t)ng * 4), *u = malloc((size_t)ng * 4), *gc = malloc((size_t)ng * 4), *gg = malloc((size_t)ng * 4);
        rand_f32(g, ng, 20.0f);
        rand_f32(u, ng, 3.0f);
        const float sp[] = {0.0f, -0.0f, 88.5f, -88.5f, -87.0f, 1e-30f, -1e-30f, 0.5f};
        memcpy(g, sp, sizeof sp);
        for (int relu2 = 0; relu2 < 2; relu2++) {
            memcpy(gc, g, (size_t)ng * 4);
            if (relu2) ops_relu2_mul(gc, u, ng);   /* the CPU path tern runs (every ISA: the same bits) */
            else ops_silu_mul(gc, u, ng);
            float *dg = dup_to_dev(g, (size_t)ng * 4), *du = dup_to_dev(u, (size_t)ng * 4);
            cuda_ops_act_mul(dg, du, ng, relu2);
            from_dev(gg, dg, (size_t)ng * 4);
            for (int64_t i = 0; i < ng; i++)
                if (memcmp(&gc[i], &gg[i], 4))
                    fail_msg("%s(%.9g) * %.9g: gpu %.9g cpu %.9g", relu2 ? "relu2" : "silu", g[i], u[i], gg[i], gc[i]);
            cuda_rt_free(dg); cuda_rt_free(du);
        }
        printf("gates: silu and relu2 equal the CPU's on %lld values\n", (long long)ng);
        free(g); free(u); free(gc); free(gg);
    }
    /* attention with 256-wide heads (two outputs per thread), 40 positions, f32 cache */
    {
        int hd2 = 256, nh2 = 2, nkv2 = 1, np2 = 40, kvd2 = nkv2 * hd2, p2[2] = {0, 39}, s2[2] = {0, 0};
        float *k2 = malloc((size_t)np2 * kvd2 * 4), *v2 = malloc((size_t)np2 * kvd2 * 4), *q2 = malloc((size_t)2 * nh2 * hd2 * 4);
        float *o2 = malloc((size_t)2 * nh2 * hd2 * 4), *og2 = malloc((size_t)2 * nh2 * hd2 * 4), *sc2 = malloc((size_t)np2 * OPS_ATTN_GROUP * 4);
        rand_f32(k2, np2 * kvd2, 1.0f); rand_f32(v2, np2 * kvd2, 1.0f); rand_f32(q2, 2 * nh2 * hd2, 1.0f);
        float sc = 1.0f / sqrtf((float)hd2);
        for (int t = 0; t < 2; t++)
            ops_attention(o2 + t * nh2 * hd2, q2 + t * nh2 * hd2, k2, v2, KV_F32, p2[t] + 1, nh2, nkv2, hd2, 0, nh2, sc, sc2);
        float *dk2 = dup_to_dev(k2, (size_t)np2 * kvd2 * 4), *dv2 = dup_to_dev(v2, (size_t)np2 * kvd2 * 4);
        float *dq2 = dup_to_dev(q2, (size_t)2 * nh2 * hd2 * 4), *do2 = cuda_rt_alloc((size_t)2 * nh2 * hd2 * 4);
        float *ds2 = cuda_rt_alloc((size_t)2 * nh2 * np2 * 4);
        int *dp2 = dup_to_dev(p2, sizeof p2), *dsq2 = dup_to_dev(s2, sizeof s2);
        cuda_ops_attention(do2, dq2, dk2, dv2, KV_F32, 2, dsq2, dp2, (int64_t)np2 * kvd2, nh2, nkv2, hd2, sc, ds2, np2);
        from_dev(og2, do2, (size_t)2 * nh2 * hd2 * 4);
        e = max_rel(og2, o2, 2 * nh2 * hd2);
        printf("attention hd 256: max rel err %.3g\n", e);
        assert_true(e <= tol);
        void *dd[] = {dk2, dv2, dq2, do2, ds2, dp2, dsq2};
        for (size_t i = 0; i < sizeof dd / sizeof dd[0]; i++) cuda_rt_free(dd[i]);
        free(k2); free(v2); free(q2); free(o2); free(og2); free(sc2);
    }
    /* head: F16 and Q8_0, 1 and 5 tokens */
    int64_t V = 1000, E = 512;
    float *hw = malloc((size_t)(V * E) * 4);
    rand_f32(hw, V * E, 0.2f);
    const int kinds[2] = {CUDA_FMAT_F16, CUDA_FMAT_Q8_0}, types[2] = {TT_F16, TT_Q8_0};
    for (int k = 0; k < 2; k++)
        for (int nt = 1; nt <= 5; nt += 4) {
            size_t nb = type_tensor_bytes(types[k], E, V);
            void *wb = malloc(nb);
            assert_int_equal(quant_from_f32(types[k], hw, V, E, wb), 0);
            float *xx = malloc((size_t)(nt * E) * 4), *l = malloc((size_t)(nt * V) * 4), *lg = malloc((size_t)(nt * V) * 4);
            rand_f32(xx, nt * E, 3.0f);
            void *scr = malloc(fmat_scratch_bytes(types[k], E, nt) + 64);
            fmat_mul_ref(types[k], wb, V, E, xx, nt, l, scr);
            void *dwb = dup_to_dev(wb, nb);
            float *dxx = dup_to_dev(xx, (size_t)(nt * E) * 4), *dl = cuda_rt_alloc((size_t)(nt * V) * 4);
            void *dscr = cuda_rt_alloc(cuda_fmat_scratch_bytes(kinds[k], E, nt) + 256);
            cuda_fmat_mul(kinds[k], dwb, V, E, dxx, nt, dl, dscr);
            from_dev(lg, dl, (size_t)(nt * V) * 4);
            e = max_rel(lg, l, nt * V);
            printf("head %s n=%d: max rel err %.3g\n", type_name(types[k]), nt, e);
            assert_true(e <= tol);
            cuda_rt_free(dwb); cuda_rt_free(dxx); cuda_rt_free(dl); cuda_rt_free(dscr);
            free(wb); free(xx); free(l); free(lg); free(scr);
        }
    free(hw);
    void *dev[] = {dx, dw, dy, drows, dcs, dsn, dpos, dseq, dkc, dvc, dqv, dout, dsc};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) cuda_rt_free(dev[i]);
    free(x); free(w); free(y); free(yg); free(cs); free(sn); free(kc); free(vc); free(tmp); free(qv); free(o); free(og); free(scores);
}

/* the fused kernels of the stage's default path against the separate ones (each checked against
 * the CPU above): equal bits */
static void test_gpu_fused(void **state) {
    (void)state;
    NEED_GPU();
    char err[256];
    /* add + rmsnorm + quant, and quant alone */
    const int64_t dims[] = {2560, 6912, 320};
    for (int di = 0; di < 3; di++) {
        int n = 3;
        int64_t dim = dims[di];
        float *x = malloc((size_t)(n * dim) * 4), *ad = malloc((size_t)(n * dim) * 4), *w = malloc((size_t)dim * 4);
        rand_f32(x, n * dim, 3.0f);
        rand_f32(ad, n * dim, 2.0f);
        rand_f32(w, dim, 1.0f);
        for (int mode = 0; mode < 3; mode++) {   /* add+norm+w, norm without w, neither */
            float *d1 = dup_to_dev(x, (size_t)(n * dim) * 4), *d2 = dup_to_dev(x, (size_t)(n * dim) * 4);
            float *dad = dup_to_dev(ad, (size_t)(n * dim) * 4), *dw = dup_to_dev(w, (size_t)dim * 4);
            float *dxn = cuda_rt_alloc((size_t)(n * dim) * 4), *ds1 = cuda_rt_alloc(64), *ds2 = cuda_rt_alloc(64);
            int8_t *dq1 = cuda_rt_alloc((size_t)(n * dim)), *dq2 = cuda_rt_alloc((size_t)(n * dim));
            int32_t *dm1 = cuda_rt_alloc(64), *dm2 = cuda_rt_alloc(64);
            const float *wp = mode == 0 ? dw : NULL;
            if (mode == 0) cuda_ops_add(d1, dad, n * dim);
            if (mode < 2) cuda_ops_rmsnorm(dxn, d1, wp, n, dim, 1e-5f, NULL);
            cuda_tmat_quant(mode < 2 ? dxn : d1, n, dim, dq1, ds1, dm1);
            cuda_tmat_norm_quant(d2, mode == 0 ? dad : NULL, mode < 2, wp, n, dim, 1e-5f, dq2, ds2, dm2);
            int8_t *q1 = malloc((size_t)(n * dim)), *q2 = malloc((size_t)(n * dim));
            float s1[3], s2[3], *h1 = malloc((size_t)(n * dim) * 4), *h2 = malloc((size_t)(n * dim) * 4);
            int32_t m1[3], m2[3];
            from_dev(q1, dq1, (size_t)(n * dim)); from_dev(q2, dq2, (size_t)(n * dim));
            from_dev(s1, ds1, sizeof s1); from_dev(s2, ds2, sizeof s2);
            from_dev(m1, dm1, sizeof m1); from_dev(m2, dm2, sizeof m2);
            from_dev(h1, d1, (size_t)(n * dim) * 4); from_dev(h2, d2, (size_t)(n * dim) * 4);
            if (memcmp(q1, q2, (size_t)(n * dim)) || memcmp(s1, s2, sizeof s1) || memcmp(m1, m2, sizeof m1) ||
                memcmp(h1, h2, (size_t)(n * dim) * 4))
                fail_msg("norm_quant dim %lld mode %d differs from add/rmsnorm/quant", (long long)dim, mode);
            void *dv[] = {d1, d2, dad, dw, dxn, ds1, ds2, dq1, dq2, dm1, dm2};
            for (size_t i = 0; i < sizeof dv / sizeof dv[0]; i++) cuda_rt_free(dv[i]);
            free(q1); free(q2); free(h1); free(h2);
        }
        free(x); free(ad); free(w);
    }
    /* q/k/v in one launch, and gate/up/act in one, for decode and prefill sizes */
    const int64_t cols = 2560, rows[3] = {333, 64, 7};
    uint32_t *dw[3];
    float scales[3] = {0.021f, 0.5f, 1.7f};
    for (int i = 0; i < 3; i++) {
        int8_t *t = malloc((size_t)(rows[i] * cols));
        rand_trits(t, rows[i] * cols);
        uint32_t *w = malloc(gpack_bytes(rows[i], cols));
        gpack_pack_rows(t, rows[i], cols, w);
        dw[i] = dup_to_dev(w, gpack_bytes(rows[i], cols));
        free(t); free(w);
    }
    const int ns[] = {1, 3, 8, 9, 40};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        int n = ns[a];
        float *x = malloc((size_t)(n * cols) * 4);
        rand_f32(x, n * cols, 2.0f);
        float *dx = dup_to_dev(x, (size_t)(n * cols) * 4), *ds = cuda_rt_alloc((size_t)n * 4);
        int8_t *dq = cuda_rt_alloc((size_t)(n * cols));
        int32_t *dm = cuda_rt_alloc((size_t)n * 4);
        cuda_tmat_quant(dx, n, cols, dq, ds, dm);
        float *y1[3], *y2[3];
        cuda_tmat_seg_t sg[3];
        for (int i = 0; i < 3; i++) {
            y1[i] = cuda_rt_alloc((size_t)(n * rows[i]) * 4);
            y2[i] = cuda_rt_alloc((size_t)(n * rows[i]) * 4);
            cuda_tmat_mul(dw[i], rows[i], cols, scales[i], i == 1 ? 0.75f : 1.0f, dq, ds, dm, n, y1[i]);
            sg[i] = (cuda_tmat_seg_t){dw[i], y2[i], rows[i], scales[i], i == 1 ? 0.75f : 1.0f};
        }
        cuda_tmat_mul_segs(sg, 3, cols, dq, ds, dm, n);
        for (int i = 0; i < 3; i++) {
            float *a1 = malloc((size_t)(n * rows[i]) * 4), *a2 = malloc((size_t)(n * rows[i]) * 4);
            from_dev(a1, y1[i], (size_t)(n * rows[i]) * 4);
            from_dev(a2, y2[i], (size_t)(n * rows[i]) * 4);
            if (memcmp(a1, a2, (size_t)(n * rows[i]) * 4)) fail_msg("segment %d of 3, n %d: differs from its own product", i, n);
            free(a1); free(a2);
        }
        for (int relu2 = 0; relu2 < 2; relu2++) {   /* gate = matrix 0, up = a second copy of it with another scale */
            float *g1 = cuda_rt_alloc((size_t)(n * rows[0]) * 4), *u1 = cuda_rt_alloc((size_t)(n * rows[0]) * 4);
            float *g2 = cuda_rt_alloc((size_t)(n * rows[0]) * 4), *u2 = cuda_rt_alloc((size_t)(n * rows[0]) * 4);
            cuda_tmat_mul(dw[0], rows[0], cols, 0.03f, 1.0f, dq, ds, dm, n, g1);
            cuda_tmat_mul(dw[0], rows[0], cols, 0.011f, 1.25f, dq, ds, dm, n, u1);
            cuda_ops_act_mul(g1, u1, n * rows[0], relu2);
            cuda_tmat_seg_t gs = {dw[0], g2, rows[0], 0.03f, 1.0f}, us = {dw[0], u2, rows[0], 0.011f, 1.25f};
            cuda_tmat_glu(&gs, &us, cols, relu2, dq, ds, dm, n);
            float *a1 = malloc((size_t)(n * rows[0]) * 4), *a2 = malloc((size_t)(n * rows[0]) * 4);
            from_dev(a1, g1, (size_t)(n * rows[0]) * 4);
            from_dev(a2, g2, (size_t)(n * rows[0]) * 4);
            if (memcmp(a1, a2, (size_t)(n * rows[0]) * 4)) fail_msg("glu n %d relu2 %d differs from two products + act", n, relu2);
            cuda_rt_free(g1); cuda_rt_free(u1); cuda_rt_free(g2); cuda_rt_free(u2);
            free(a1); free(a2);
        }
        for (int i = 0; i < 3; i++) { cuda_rt_free(y1[i]); cuda_rt_free(y2[i]); }
        cuda_rt_free(dx); cuda_rt_free(ds); cuda_rt_free(dq); cuda_rt_free(dm);
        free(x);
    }
    for (int i = 0; i < 3; i++) cuda_rt_free(dw[i]);
    /* RoPE of q and k + the cache store in one launch: 3 tokens of 2 sequences, both cache types */
    int n = 3, nh = 4, nkv = 2, hd = 64, nctx = 16, half = hd / 2, pos[3] = {0, 5, 15}, seq[3] = {1, 0, 1};
    float *cs = malloc((size_t)nctx * half * 4), *sn = malloc((size_t)nctx * half * 4);
    rand_f32(cs, nctx * half, 1.0f);
    rand_f32(sn, nctx * half, 1.0f);
    float *dcs = dup_to_dev(cs, (size_t)nctx * half * 4), *dsn = dup_to_dev(sn, (size_t)nctx * half * 4);
    int *dpos = dup_to_dev(pos, sizeof pos), *dseq = dup_to_dev(seq, sizeof seq);
    size_t qb = (size_t)(n * nh * hd) * 4, kb = (size_t)(n * nkv * hd) * 4, cb = (size_t)2 * nctx * nkv * hd * 4;
    float *q = malloc(qb), *k = malloc(kb), *v = malloc(kb);
    rand_f32(q, n * nh * hd, 1.0f); rand_f32(k, n * nkv * hd, 1.0f); rand_f32(v, n * nkv * hd, 1.0f);
    for (int kt = 0; kt < 3; kt++)   /* KV_F32, KV_F16, KV_Q8_0 */
        for (int neox = 0; neox < 2; neox++) {
            float *q1 = dup_to_dev(q, qb), *k1 = dup_to_dev(k, kb), *q2 = dup_to_dev(q, qb), *k2 = dup_to_dev(k, kb), *dv = dup_to_dev(v, kb);
            void *kc1 = cuda_rt_alloc(cb), *vc1 = cuda_rt_alloc(cb), *kc2 = cuda_rt_alloc(cb), *vc2 = cuda_rt_alloc(cb);
            void *cc[] = {kc1, vc1, kc2, vc2};
            for (int i = 0; i < 4; i++) assert_int_equal(cuda_rt_memset(cc[i], 0, cb, err, sizeof err), 0);
            cuda_ops_rope(q1, n, nh, hd, hd, dpos, dcs, dsn, neox);
            cuda_ops_rope(k1, n, nkv, hd, hd, dpos, dcs, dsn, neox);
            cuda_ops_kv_store(kc1, vc1, kt, k1, dv, n, dseq, dpos, (int64_t)nctx * nkv * hd, nkv * hd);
            cuda_ops_rope_kv(q2, k2, dv, n, nh, nkv, hd, hd, dpos, dcs, dsn, neox, kc2, vc2, kt, dseq, (int64_t)nctx * nkv * hd);
            uint8_t *b1 = malloc(cb), *b2 = malloc(cb);
            const void *pairs[][2] = {{q1, q2}, {k1, k2}, {kc1, kc2}, {vc1, vc2}};
            size_t sz[] = {qb, kb, cb, cb};
            for (int i = 0; i < 4; i++) {
                from_dev(b1, pairs[i][0], sz[i]);
                from_dev(b2, pairs[i][1], sz[i]);
                if (memcmp(b1, b2, sz[i])) fail_msg("rope_kv (kv type %d, neox %d): buffer %d differs", kt, neox, i);
            }
            if (kt == KV_Q8_0) {   /* the stored rows are the CPU's q8_0 rows of the rotated k and of v */
                int kvd = nkv * hd;
                size_t rb = ops_kv_bytes(KV_Q8_0, kvd);
                float *kr = malloc(kb);
                uint8_t *want = malloc(rb);
                from_dev(kr, k1, kb);
                for (int c2 = 0; c2 < 2; c2++) {
                    from_dev(b1, c2 ? vc2 : kc2, cb);
                    for (int t = 0; t < n; t++) {
                        ops_kv_put(want, KV_Q8_0, (c2 ? v : kr) + (size_t)t * kvd, kvd);
                        if (memcmp(b1 + ops_kv_bytes(KV_Q8_0, ((int64_t)seq[t] * nctx + pos[t]) * kvd), want, rb))
                            fail_msg("q8_0 cache %s row of token %d differs from the CPU's", c2 ? "v" : "k", t);
                    }
                }
                free(kr);
                free(want);
            }
            free(b1); free(b2);
            void *dd[] = {q1, k1, q2, k2, dv, kc1, vc1, kc2, vc2};
            for (size_t i = 0; i < sizeof dd / sizeof dd[0]; i++) cuda_rt_free(dd[i]);
        }
    cuda_rt_free(dcs); cuda_rt_free(dsn); cuda_rt_free(dpos); cuda_rt_free(dseq);
    free(cs); free(sn); free(q); free(k); free(v);
}

/* cuda_pick against the sampler: rows of logits of every kind (spread, coarse with many ties,
 * all equal, zeros of both signs, ±inf, NaN first or inside) with a penalty or none, as argmax
 * and as top-k for k = 1..64, next to a row left alone. The penalised rows equal the CPU's
 * penalty bit for bit; argmax equals sampler.c's; top-k equals the sampler's candidate order
 * (counted here); a NaN row comes back as n = -1 for top-k, and argmax follows the CPU rule. */
static void pick_row_fill(float *x, int64_t V, int kind) {
    for (int64_t i = 0; i < V; i++) {
        switch (kind) {
        case 0: x[i] = (float)((double)(rnd() % 2000001) / 100000.0 - 10.0); break;
        case 1: x[i] = (float)((int)(rnd() % 9) - 4) * 0.5f; break;
        case 2: x[i] = 1.25f; break;
        default: x[i] = (float)((int)(rnd() % 5) - 4); break;   /* <= 0: zeros, some negative */
        }
    }
    if (kind == 3) x[V / 3] = -0.0f, x[V / 2] = -INFINITY;
    if (kind == 4) x[V - 1] = INFINITY;
}

static int pick_better(const float *y, int64_t a, int64_t b) { return y[a] > y[b] || (y[a] == y[b] && a < b); }

static void test_gpu_pick(void **state) {
    (void)state;
    NEED_GPU();
    const int64_t vs[] = {7, 1000, 128256};
    const int ks[] = {1, 2, 6, 40, 64};
    enum { M = 6 };
    char err[256];
    for (size_t vi = 0; vi < 3; vi++) {
        int64_t V = vs[vi];
        for (int trial = 0; trial < 12; trial++) {
            float *x = malloc((size_t)(M * V) * 4), *y = malloc((size_t)(M * V) * 4), *g = malloc((size_t)(M * V) * 4);
            cuda_pick_req_t req[M];
            int32_t pen[M * 16];
            int npen = 0;
            for (int j = 0; j < M; j++) {
                float *xj = x + j * V;
                pick_row_fill(xj, V, (trial + j) % 5);
                if (trial % 4 == 1 && j == 2) xj[0] = NAN;          /* argmax: 0; top-k: handed back */
                if (trial % 4 == 3 && j == 3) xj[V / 2] = NAN;
                int k = ks[(trial + j) % 5];
                req[j] = (cuda_pick_req_t){j == 5 ? CUDA_PICK_LOGITS : (j + trial) % 2 ? CUDA_PICK_TOP : CUDA_PICK_ARGMAX,
                                           k < V ? k : (int)V - 1, trial % 3 ? 1.3f : 1.0f, npen, 0};
                for (int i = 0; i < 16 && req[j].penalty != 1.0f; i++) {   /* distinct ids */
                    int id = (int)((i * 7919 + j * 31) % V);
                    int dup = 0;
                    for (int q = req[j].pen_off; q < npen; q++) dup |= pen[q] == id;
                    if (!dup) pen[npen++] = id, req[j].pen_n++;
                }
            }
            memcpy(y, x, (size_t)(M * V) * 4);
            for (int j = 0; j < M; j++)   /* the CPU's penalty */
                for (int q = 0; q < req[j].pen_n && req[j].mode != CUDA_PICK_LOGITS; q++) {
                    float *l = &y[j * V + pen[req[j].pen_off + q]];
                    *l = *l > 0 ? *l / req[j].penalty : *l * req[j].penalty;
                }
            float *dx = dup_to_dev(x, (size_t)(M * V) * 4);
            cuda_pick_req_t *dreq = dup_to_dev(req, sizeof req);
            int32_t *dpen = dup_to_dev(pen, sizeof pen);
            cuda_pick_res_t res[M], *dres = cuda_rt_alloc(sizeof res);
            assert_non_null(dres);
            for (int j = 0; j < M; j++) res[j].n = -7;
            assert_int_equal(cuda_rt_h2d(dres, res, sizeof res, err, sizeof err), 0);
            cuda_pick(dx, M, V, dreq, dpen, dres);
            from_dev(res, dres, sizeof res);
            from_dev(g, dx, (size_t)(M * V) * 4);
            for (int64_t i = 0; i < M * V; i++)
                if (memcmp(&g[i], &y[i], 4) && !(g[i] != g[i] && y[i] != y[i]))
                    fail_msg("V %lld trial %d: penalised logit %lld: gpu %g cpu %g", (long long)V, trial, (long long)i, g[i], y[i]);
            for (int j = 0; j < M; j++) {
                const float *yj = y + j * V;
                int nan = 0;
                for (int64_t i = 0; i < V; i++) nan |= yj[i] != yj[i];
                if (req[j].mode == CUDA_PICK_LOGITS) {
                    assert_int_equal(res[j].n, -7);   /* left alone */
                } else if (req[j].mode == CUDA_PICK_ARGMAX) {
                    sampler_params_t sp;
                    sampler_params_default(&sp);
                    sp.temp = 0.0f;
                    sampler_t sm;
                    sampler_init(&sm, &sp);
                    float *cp = malloc((size_t)V * 4);
                    void *work = malloc(sampler_work_bytes((int)V));
                    memcpy(cp, yj, (size_t)V * 4);
                    int want = sampler_sample_penalised(&sm, cp, (int)V, work);
                    free(cp);
                    free(work);
                    assert_int_equal(res[j].n, 1);
                    if (res[j].id[0] != want)
                        fail_msg("V %lld trial %d row %d: argmax gpu %d cpu %d", (long long)V, trial, j, res[j].id[0], want);
                } else if (nan) {
                    assert_int_equal(res[j].n, -1);
                } else {
                    int k = req[j].k;
                    if (res[j].n != k) fail_msg("V %lld trial %d row %d: %d candidates, asked %d", (long long)V, trial, j, res[j].n, k);
                    for (int r = 0; r < k; r++) {
                        int64_t id = res[j].id[r], better = 0;
                        assert_true(id >= 0 && id < V);
                        for (int64_t i = 0; i < V; i++) better += pick_better(yj, i, id);
                        if (better != r || memcmp(&res[j].logit[r], &yj[id], 4))
                            fail_msg("V %lld trial %d row %d: candidate %d is %lld (%g) with %lld better", (long long)V,
                                     trial, j, r, (long long)id, res[j].logit[r], (long long)better);
                    }
                }
            }
            cuda_rt_free(dx); cuda_rt_free(dreq); cuda_rt_free(dpen); cuda_rt_free(dres);
            free(x); free(y); free(g);
        }
    }
}

/* the context shift: cuda_ops_kv_shift against kv_cache_shift (the CPU's) on the same bytes */
static void kv_shift_case(int type, int neox, int rot) {
    const int L = 2, S = 3, C = 40, hd = 64, nkv = 2, kvd = nkv * hd;
    const float base = 500000.0f;
    const kv_shift_t sh = {1, 5, 7, 31};
    char err[256];
    kv_cache_t kv;
    assert_int_equal(kv_cache_init(&kv, type, L, S, C, kvd, err, sizeof err), 0);
    float *x = malloc((size_t)kvd * 4), *y = malloc((size_t)kvd * 4);
    for (int l = 0; l < L; l++)
        for (int sq = 0; sq < S; sq++)
            for (int p = 0; p < C; p++) {
                rand_f32(x, kvd, 2.0f);
                rand_f32(y, kvd, 1.0f);
                kv_cache_store(&kv, l, sq, p, x, y);
            }
    size_t half = kv_cache_bytes_for(type, L, S, C, kvd) / 2;
    void *dk = dup_to_dev(kv.k, half), *dv = dup_to_dev(kv.v, half);
    /* the stage's table row `discard` (cuda_stage.c rope_upload's arithmetic) */
    float tc[64], ts[64];
    const float theta_scale = powf(base, -2.0f / (float)rot);
    float theta = (float)sh.discard;
    for (int i = 0; i < rot / 2; i++) tc[i] = cosf(theta), ts[i] = sinf(theta), theta *= theta_scale;
    float *dcs = dup_to_dev(tc, sizeof tc), *dsn = dup_to_dev(ts, sizeof ts);
    cuda_ops_kv_shift(dk, dv, type, L, (int64_t)S * C * kvd, (int64_t)C * kvd, sh.seq, sh.keep, sh.discard, sh.n_past, nkv,
                      hd, rot, dcs, dsn, neox);
    uint8_t *gk = malloc(half), *gv = malloc(half);
    from_dev(gk, dk, half);
    from_dev(gv, dv, half);
    float cs[64], sn[64], *tmp = malloc((size_t)hd * 4);
    rope_params_t rp;
    ops_rope_init(&rp, rot, neox, base);
    ops_rope_shift_table(cs, sn, -sh.discard, &rp);
    kv_rope_t r = {hd, rot, neox, cs, sn};
    kv_cache_shift(&kv, &sh, &r, NULL, tmp);
    if (memcmp(gv, kv.v, half)) fail_msg("kv shift type %d: values differ from the CPU's", type);
    for (size_t o = 0; o < half; o += kv.row) {
        int p = (int)(o / kv.row % (size_t)C);
        int moved = (int)(o / kv.row / (size_t)C % (size_t)S) == sh.seq && p >= sh.keep && p < sh.n_past - sh.discard;
        if (!moved) {
            if (memcmp(gk + o, kv.k + o, kv.row)) fail_msg("kv shift type %d: row %zu changed", type, o / kv.row);
            continue;
        }
        ops_kv_get(x, gk + o, type, kvd);
        ops_kv_get(y, kv.k + o, type, kvd);
        double amax = 0;
        for (int j = 0; j < kvd; j++) amax = fmax(amax, fabs(y[j]));
        double tol = type == KV_F32 ? 1e-5 * amax : type == KV_F16 ? amax / 1024 : amax / 127;
        for (int j = 0; j < kvd; j++)
            if (fabs(x[j] - y[j]) > tol)
                fail_msg("kv shift type %d neox %d rot %d: row %zu dim %d: gpu %.9g cpu %.9g", type, neox, rot,
                         o / kv.row, j, x[j], y[j]);
    }
    cuda_rt_free(dk); cuda_rt_free(dv); cuda_rt_free(dcs); cuda_rt_free(dsn);
    free(x); free(y); free(gk); free(gv); free(tmp);
    kv_cache_free(&kv);
}

static void test_gpu_kv_shift(void **state) {
    (void)state;
    NEED_GPU();
    for (int type = 0; type <= KV_Q8_0; type++)
        for (int neox = 0; neox < 2; neox++)
            for (int rot = 32; rot <= 64; rot += 32) kv_shift_case(type, neox, rot);
}
#endif

/* One prompt (9 tokens) then 8 greedy steps through a CPU stage list and a GPU one; the next
 * input is the embedding row of the sampled token. Logits of every sampled row compared. */
typedef struct run_out { int32_t tok[16]; int ntok; float *logits; double score[8]; float embd[9 * 512]; } run_out_t;
static int g_run_shift;   /* 1: run() shifts slot 0 ({keep 2, discard 3}) before its 5th step, in every stage */

static void embed(const gguf_t *g, int tok, int E, float *h) {
    const gguf_tensor_t *t = gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(dequant_rows(t->type, t->data, t->ne[1], t->ne[0], tok, 1, h), 0);
}

/* sp NULL: greedy with logprobs, so that every sampled row's logits come to the host (and are
 * kept); else those params (the GPU picks the rows where they allow: tokens only) */
static void run(const gguf_t *g, stage_t *st, int nst, run_out_t *out, const sampler_params_t *params) {
    const int E = st[0].shard.hp.n_embd, V = st[nst - 1].shard.hp.n_vocab, np = 9, steps = 8;
    sampler_params_t sp;
    sampler_params_default(&sp);
    sp.temp = 0.0f;
    sp.logprobs = 1;
    if (params) sp = *params;
    stage_seq_start(&st[nst - 1], 0, &sp);
    out->logits = malloc((size_t)(steps + 1) * V * 4);
    out->ntok = 0;
    float *h = malloc((size_t)np * E * 4);
    int32_t toks[9];
    int seq[9] = {0}, pos[9];
    uint8_t smp[9] = {0};
    char err[256];
    for (int i = 0; i < np; i++) { toks[i] = (int32_t)(1 + 37 * i) % V; pos[i] = i; embed(g, toks[i], E, h + i * E); }
    int n = np;
    for (int s = 0; s <= steps; s++) {
        memset(smp, 0, sizeof smp);
        smp[n - 1] = 1;
        int32_t ot;
        float lp;
        int rc = 0;
        if (g_run_shift && s == 5) {
            kv_shift_t sh = {0, 2, 3, pos[0]};
            for (int k = 0; k < nst && rc >= 0; k++) rc = stage_shift(&st[k], &sh, 1, err, sizeof err);
            if (rc < 0) fail_msg("stage_shift: %s", err);
            pos[0] -= sh.discard;
        }
        for (int k = 0; k < nst && rc >= 0; k++) rc = stage_step(&st[k], h, n, toks, seq, pos, smp, &ot, &lp, err, sizeof err);
        if (rc < 0) fail_msg("stage_step: %s", err);
        assert_int_equal(rc, 1);
        if (s == 0) {   /* the prompt's tokens scored (teacher forcing: perplexity, echo) */
            int32_t tgt[9];
            for (int i = 0; i < np; i++) tgt[i] = i + 1 < np ? toks[i + 1] : -1;
            if (stage_score(&st[nst - 1], h, n, seq, tgt, out->score, err, sizeof err) != np - 1)
                fail_msg("stage_score: %s", err);
            uint8_t all[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};   /* embeddings: the normed rows the GPU left on the host */
            assert_true(E <= 512);
            if (stage_embd(&st[nst - 1], h, n, all, out->embd, err, sizeof err) != np) fail_msg("stage_embd: %s", err);
        }
        memcpy(out->logits + (size_t)s * V, st[nst - 1].logits, (size_t)V * 4);
        out->tok[out->ntok++] = ot;
        int next = pos[n - 1] + 1;
        n = 1;
        toks[0] = ot;
        pos[0] = next;
        embed(g, ot, E, h);
    }
    free(h);
}

/* the whole tiny model (layers 0-1 and the head) as one stage on device dev with a kv_type cache */
static stage_cfg_t model_cfg(int dev, int kv_type) {
    stage_cfg_t c;
    stage_cfg_default(&c);
    c.n_ctx = 32;
    c.n_batch = 16;
    c.first = 0;
    c.last = 1;
    c.has_head = 1;
    c.device = dev;
    c.kv_type = kv_type;
    return c;
}

/* stage_init with the environment variable name set to val while the stage is made (the CUDA
 * stage reads its switches then); fails the test with what's why */
static void stage_with_env(stage_t *st, const gguf_t *g, const stage_cfg_t *c, const char *name, const char *val,
                           const char *what) {
    char err[256];
    setenv(name, val, 1);
    int rc = stage_init(st, g, c, NULL, err, sizeof err);
    unsetenv(name);
    if (rc < 0) fail_msg("%s: %s", what, err);
}

static void gpu_model(const char *arch, const char *type, const char *head) {
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/%s-%s-%s.gguf", g_dir, arch, type, head);
    make_model(path, arch, type, head);
    gguf_t *g;
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    stage_cfg_t c = model_cfg(STAGE_DEV_CPU, KV_F16);
    stage_t cpu[1], gpu[1], mix[2], sep[1], tc[1];
    assert_int_equal(stage_init(&cpu[0], g, &c, NULL, err, sizeof err), 0);
    c.device = STAGE_DEV_CUDA;
    /* picks on the device (the logits runs ask logprobs: rows come back) */
    stage_with_env(&gpu[0], g, &c, "TERN_CUDA_SAMPLE", "1", "gpu stage");
    stage_with_env(&sep[0], g, &c, "TERN_CUDA_FUSE", "0", "gpu stage (separate kernels)");   /* one kernel per op */
    /* prefill's GEMM on the tensor cores (sm_80+; else the same dp4a stage) */
    stage_with_env(&tc[0], g, &c, "TERN_CUDA_MMA", "1", "gpu stage (tensor cores)");
    c.last = 0;
    c.has_head = 0;
    if (stage_init(&mix[0], g, &c, NULL, err, sizeof err) < 0) fail_msg("gpu stage 0-0: %s", err);
    c.device = STAGE_DEV_CPU;
    c.first = c.last = 1;
    c.has_head = 1;
    assert_int_equal(stage_init(&mix[1], g, &c, NULL, err, sizeof err), 0);
    run_out_t a, b, m, u;
    run(g, cpu, 1, &a, NULL);
    run(g, gpu, 1, &b, NULL);
    run(g, mix, 2, &m, NULL);
    run(g, sep, 1, &u, NULL);
    run_out_t w;
    run(g, tc, 1, &w, NULL);
    /* the GPU picks (cuda_pick): greedy; top-k draws with a penalty; top-k past what the GPU
     * orders and no top-k (the host samples the row) — each the CPU's tokens */
    int V0 = cpu[0].shard.hp.n_vocab;
    assert_true(cuda_stage_picks(gpu[0].cuda));
    const int tks[][2] = {{0, 0}, {40, 1}, {5, 0}, {CUDA_PICK_MAX + 1, 1}, {0, 1}};
    for (int v = 0; v < 5; v++) {
        sampler_params_t sp;
        sampler_params_default(&sp);
        sp.temp = v ? 0.9f : 0.0f;
        sp.top_k = tks[v][0] < V0 ? tks[v][0] : V0 - 1;
        sp.top_p = 1.0f;   /* flat logits of a tiny model: keep the candidates many */
        sp.min_p = 0.0f;
        sp.repeat_penalty = tks[v][1] ? 1.5f : 1.0f;
        sp.seed = 77 + (uint64_t)v;
        run_out_t pc, pg;
        run(g, cpu, 1, &pc, &sp);
        run(g, gpu, 1, &pg, &sp);
        for (int s = 0; s < pc.ntok; s++)
            if (pc.tok[s] != pg.tok[s])
                fail_msg("%s: sampling %d (top-k %d, penalty %g) step %d: cpu %d gpu %d", arch, v, sp.top_k,
                         sp.repeat_penalty, s, pc.tok[s], pg.tok[s]);
        free(pc.logits);
        free(pg.logits);
    }
    int V = cpu[0].shard.hp.n_vocab;
    for (int s = 0; s < a.ntok; s++) {
        double eb = max_rel(b.logits + (size_t)s * V, a.logits + (size_t)s * V, V);
        double em = max_rel(m.logits + (size_t)s * V, a.logits + (size_t)s * V, V);
        if (memcmp(u.logits + (size_t)s * V, b.logits + (size_t)s * V, (size_t)V * 4))
            fail_msg("step %d: separate-kernel logits differ from the fused ones", s);
        if (memcmp(w.logits + (size_t)s * V, b.logits + (size_t)s * V, (size_t)V * 4))
            fail_msg("step %d: logits after a tensor-core prefill differ from the dp4a ones", s);
        printf("%s %s %s step %d: token cpu %d gpu %d split %d, max rel logit err gpu %.3g split %.3g\n", arch, type,
               head, s, a.tok[s], b.tok[s], m.tok[s], eb, em);
        assert_true(eb <= 1e-3 && em <= 1e-3);
        if (s < 8) {
            printf("  prompt token %d: log p cpu %.5f gpu %.5f split %.5f\n", s + 1, a.score[s], b.score[s], m.score[s]);
            assert_true(fabs(b.score[s] - a.score[s]) <= 1e-2 && fabs(m.score[s] - a.score[s]) <= 1e-2);
        }
        assert_int_equal(a.tok[s], b.tok[s]);
        assert_int_equal(a.tok[s], m.tok[s]);
    }
    {   /* embeddings (stage_embd after a GPU step): the CPU stage's rows within the logits' tolerance */
        const int E = cpu[0].shard.hp.n_embd;
        double eb = max_rel(b.embd, a.embd, 9 * E), em = max_rel(m.embd, a.embd, 9 * E);
        printf("  embeddings of the prompt's 9 rows: max rel err gpu %.3g split %.3g\n", eb, em);
        assert_true(eb <= 1e-3 && em <= 1e-3);
    }
    /* a q8_0 KV cache: the GPU stage against the CPU stage with the same cache type */
    {
        stage_cfg_t c8 = model_cfg(STAGE_DEV_CPU, KV_Q8_0);
        stage_t cq[1], gq[1];
        assert_int_equal(stage_init(&cq[0], g, &c8, NULL, err, sizeof err), 0);
        c8.device = STAGE_DEV_CUDA;
        if (stage_init(&gq[0], g, &c8, NULL, err, sizeof err) < 0) fail_msg("gpu stage, q8_0 cache: %s", err);
        run_out_t x8, y8;
        run(g, cq, 1, &x8, NULL);
        run(g, gq, 1, &y8, NULL);
        for (int s = 0; s < x8.ntok; s++) {
            double eq = max_rel(y8.logits + (size_t)s * V, x8.logits + (size_t)s * V, V);
            printf("%s q8_0 cache step %d: token cpu %d gpu %d, max rel logit err %.3g\n", arch, s, x8.tok[s], y8.tok[s], eq);
            assert_true(eq <= 1e-3);
            assert_int_equal(x8.tok[s], y8.tok[s]);
        }
        free(x8.logits); free(y8.logits);
        stage_free(&cq[0]); stage_free(&gq[0]);
    }
    free(a.logits); free(b.logits); free(m.logits); free(u.logits); free(w.logits);
    stage_free(&sep[0]);
    stage_free(&tc[0]);
    stage_free(&cpu[0]); stage_free(&gpu[0]); stage_free(&mix[0]); stage_free(&mix[1]);
    gguf_close(&g);
}

/* a shift mid-generation: the GPU stage (and a GPU+CPU split) against the CPU stage, every cache type */
static void gpu_model_shift(const char *arch, const char *type, const char *head) {
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/%s-%s-%s.gguf", g_dir, arch, type, head);
    make_model(path, arch, type, head);
    gguf_t *g;
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    g_run_shift = 1;
    for (int kt = 0; kt <= KV_Q8_0; kt++) {
        stage_cfg_t c = model_cfg(STAGE_DEV_CPU, kt);
        stage_t cpu[1], gpu[1], mix[2];
        assert_int_equal(stage_init(&cpu[0], g, &c, NULL, err, sizeof err), 0);
        c.device = STAGE_DEV_CUDA;
        if (stage_init(&gpu[0], g, &c, NULL, err, sizeof err) < 0) fail_msg("gpu stage: %s", err);
        c.last = 0, c.has_head = 0;
        if (stage_init(&mix[0], g, &c, NULL, err, sizeof err) < 0) fail_msg("gpu stage 0-0: %s", err);
        c.device = STAGE_DEV_CPU, c.first = c.last = 1, c.has_head = 1;
        assert_int_equal(stage_init(&mix[1], g, &c, NULL, err, sizeof err), 0);
        run_out_t a, b, m;
        run(g, cpu, 1, &a, NULL);
        run(g, gpu, 1, &b, NULL);
        run(g, mix, 2, &m, NULL);
        int V = cpu[0].shard.hp.n_vocab;
        for (int s = 0; s < a.ntok; s++) {
            double eb = max_rel(b.logits + (size_t)s * V, a.logits + (size_t)s * V, V);
            double em = max_rel(m.logits + (size_t)s * V, a.logits + (size_t)s * V, V);
            printf("%s kv %d shifted, step %d: token cpu %d gpu %d split %d, max rel logit err gpu %.3g split %.3g\n",
                   arch, kt, s, a.tok[s], b.tok[s], m.tok[s], eb, em);
            assert_true(eb <= 1e-3 && em <= 1e-3);
            assert_int_equal(a.tok[s], b.tok[s]);
            assert_int_equal(a.tok[s], m.tok[s]);
        }
        free(a.logits); free(b.logits); free(m.logits);
        stage_free(&cpu[0]); stage_free(&gpu[0]); stage_free(&mix[0]); stage_free(&mix[1]);
    }
    g_run_shift = 0;
    gguf_close(&g);
}

static void test_gpu_model_shift(void **state) {
    (void)state;
    NEED_GPU();
    gpu_model_shift("bitnet-b1.58", "i2_s", "f16");   /* NEOX */
    gpu_model_shift("llama", "tq2_0", "q8_0");        /* normal pairs */
}

static void test_gpu_model_b158(void **state) { (void)state; NEED_GPU(); gpu_model("bitnet-b1.58", "i2_s", "f16"); }
static void test_gpu_model_llama(void **state) { (void)state; NEED_GPU(); gpu_model("llama", "tq2_0", "q8_0"); }
static void test_gpu_model_bitnet_tq1(void **state) { (void)state; NEED_GPU(); gpu_model("bitnet", "tq1_0", "f16"); }

int main(void) {
    char err[256];
    g_gpu = cuda_stage_probe(NULL, 0, err, sizeof err) == 0;
    if (!g_gpu) printf("no GPU: %s — GPU tests will print \"skipped: no CUDA device\"\n", err);
    snprintf(g_dir, sizeof g_dir, "/tmp/tern_test_cuda_%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", g_dir);
    if (system(cmd) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gpack_roundtrip),
        cmocka_unit_test(test_gpack_from_tensor),
        cmocka_unit_test(test_gpack_ref_equals_mat),
        cmocka_unit_test(test_probe_and_hooks),
#if defined(TERN_HAVE_CUDA)
        cmocka_unit_test(test_gpu_tmat),
        cmocka_unit_test(test_gpu_ops),
        cmocka_unit_test(test_gpu_fused),
        cmocka_unit_test(test_gpu_pick),
        cmocka_unit_test(test_gpu_kv_shift),
#endif
        cmocka_unit_test(test_gpu_model_b158),
        cmocka_unit_test(test_gpu_model_llama),
        cmocka_unit_test(test_gpu_model_bitnet_tq1),
        cmocka_unit_test(test_gpu_model_shift),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) return 1;
    return rc;
}
