/* test_fmat: y = x·Wᵀ for F32, F16, BF16 and Q8_0 weights. The scalar spec (fmat_mul_ref) is
 * checked against a double-precision formula; every ISA this CPU has must equal the spec bit for
 * bit (all variants follow the same lane/fold summation order, see kernels/fmat_isa.h), and the
 * result must not depend on the thread count. Odd shapes: rows 1..67, cols up to 2592, n 1..9,17. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/alloc.h"
#include "core/half.h"
#include "core/tpool.h"
#include "core/types.h"
#include "kernels/dispatch.h"
#include "kernels/fmat.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}
static float frand(void) { return (float)((rnd() & 0xffffff) / 8388608.0 - 1.0); } /* [-1, 1) */

/* random weights of `type`; also returns them as floats in wf (rows*cols) */
static void *make_w(int type, int64_t rows, int64_t cols, float *wf) {
    size_t nb = type_tensor_bytes(type, cols, rows);
    uint8_t *w = tern_alloc(nb);
    assert_non_null(w);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            float v = frand() * 2.0f;
            size_t i = (size_t)(r * cols + c);
            if (type == TT_F32) { ((float *)w)[i] = v; wf[i] = v; }
            if (type == TT_F16) { ((uint16_t *)w)[i] = f32_to_f16(v); wf[i] = f16_to_f32(f32_to_f16(v)); }
            if (type == TT_BF16) { ((uint16_t *)w)[i] = f32_to_bf16(v); wf[i] = bf16_to_f32(f32_to_bf16(v)); }
        }
        if (type != TT_Q8_0) continue;
        for (int64_t b = 0; b < cols / 32; b++) {
            uint8_t *blk = w + (size_t)(r * (cols / 32) + b) * 34;
            uint16_t d = f32_to_f16(0.001f + 0.02f * (frand() + 1.0f));
            memcpy(blk, &d, 2);
            for (int i = 0; i < 32; i++) {
                int8_t q = (int8_t)(rnd() & 0xff); /* full range, including -128 */
                blk[2 + i] = (uint8_t)q;
                wf[r * cols + b * 32 + i] = f16_to_f32(d) * q;
            }
        }
    }
    return w;
}

static float *make_x(int64_t cols, int n) {
    float *x = tern_alloc(sizeof(float) * (size_t)(cols * n) + 64);
    assert_non_null(x);
    for (int64_t i = 0; i < cols * n; i++) x[i] = frand() * 3.0f;
    if (cols >= 64) for (int i = 32; i < 64; i++) x[i] = 0.0f; /* an all-zero block (d = 0) */
    return x;
}

/* ggml's quantize_row_q8_0 reference, written out independently of the library */
static void q8_x(const float *x, int64_t cols, float *xqf) {
    for (int64_t b = 0; b < cols / 32; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[b * 32 + i]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f, dh = f16_to_f32(f32_to_f16(d));
        for (int i = 0; i < 32; i++) xqf[b * 32 + i] = dh * roundf(x[b * 32 + i] * id);
    }
}

/* the double-precision formula: for Q8_0, on the quantised x */
static void check_vs_double(int type, const float *wf, int64_t rows, int64_t cols, const float *x,
                            int n, const float *y, const char *what) {
    float *xq = malloc(sizeof(float) * (size_t)cols + 4);
    for (int t = 0; t < n; t++) {
        const float *xt = x + t * cols;
        if (type == TT_Q8_0) { q8_x(xt, cols, xq); xt = xq; }
        for (int64_t r = 0; r < rows; r++) {
            double s = 0, sa = 0;
            for (int64_t c = 0; c < cols; c++) {
                s += (double)wf[r * cols + c] * xt[c];
                sa += fabs((double)wf[r * cols + c] * xt[c]);
            }
            /* f32 accumulation in 32 lanes: error ≲ (cols/32 + 6)·2⁻²⁴·Σ|w·x|; Q8_0 also rounds
             * d_w·d_x once per block */
            double tol = (cols / 32.0 + 8.0) * 6.0e-8 * sa * (type == TT_Q8_0 ? 2 : 1) + 1e-30;
            double got = y[(size_t)t * rows + r];
            if (fabs(got - s) > tol)
                fail_msg("%s %s rows=%lld cols=%lld n=%d: y[%d][%lld] = %.9g, double says %.9g (tol %.3g)",
                         what, type_name(type), (long long)rows, (long long)cols, n, t, (long long)r, got, s, tol);
        }
    }
    free(xq);
}

static const int g_types[] = {TT_F32, TT_F16, TT_BF16, TT_Q8_0};

/* run one shape: ref vs double, and every ISA vs ref (exact) with threads 1..3 */
static void run_shape(int type, int64_t rows, int64_t cols, int n, tpool_t **pools) {
    float *wf = malloc(sizeof(float) * (size_t)(rows * cols) + 4);
    void *w = make_w(type, rows, cols, wf);
    float *x = make_x(cols, n);
    size_t ysz = sizeof(float) * (size_t)(rows * n) + 4;
    float *yr = malloc(ysz), *yi = malloc(ysz);
    void *scr = tern_alloc(fmat_scratch_bytes(type, cols, n));
    fmat_mul_ref(type, w, rows, cols, x, n, yr, scr);
    check_vs_double(type, wf, rows, cols, x, n, yr, "ref");
    for (int isa = 0; isa < ISA_COUNT; isa++) {
        if (!isa_supported(isa)) continue;
        isa_force(isa);
        for (int th = 0; th < 3; th++) {
            memset(yi, 0xff, ysz);
            fmat_mul(type, w, rows, cols, x, n, yi, scr, pools[th]);
            for (int64_t i = 0; i < rows * n; i++)
                if (memcmp(&yi[i], &yr[i], 4) != 0)
                    fail_msg("%s/%s threads=%d rows=%lld cols=%lld n=%d: y[%lld] = %.9g, ref %.9g",
                             type_name(type), isa_name(isa), th + 1, (long long)rows, (long long)cols, n,
                             (long long)i, yi[i], yr[i]);
        }
    }
    isa_force(isa_best());
    tern_free(scr); free(yr); free(yi); tern_free(x); tern_free(w); free(wf);
}

static tpool_t *g_pools[3];

static int setup(void **st) {
    for (int i = 0; i < 3; i++) g_pools[i] = i == 0 ? NULL : tpool_new(i + 1);
    return 0;
}
static int teardown(void **st) {
    for (int i = 0; i < 3; i++) tpool_destroy(&g_pools[i]);
    return 0;
}

static void test_fmat_small_shapes(void **st) {
    static const int64_t rows[] = {1, 2, 3, 5, 7, 8, 9, 16, 17, 31, 33, 64, 65, 67};
    static const int64_t cols[] = {32, 64, 96, 160, 224};
    static const int ns[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 17};
    for (size_t ti = 0; ti < 4; ti++)
        for (size_t r = 0; r < sizeof rows / sizeof *rows; r++)
            for (size_t c = 0; c < sizeof cols / sizeof *cols; c++)
                run_shape(g_types[ti], rows[r], cols[c], ns[(r + c) % 10], g_pools);
}

static void test_fmat_every_n(void **st) {
    static const int ns[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 17};
    for (size_t ti = 0; ti < 4; ti++)
        for (size_t i = 0; i < 10; i++) run_shape(g_types[ti], 67, 96, ns[i], g_pools);
}

/* F32/F16/BF16 rows of any length: the masked/scalar tails must follow the same lanes */
static void test_fmat_odd_cols(void **st) {
    static const int64_t cols[] = {1, 3, 15, 16, 17, 31, 33, 47, 63, 100, 257};
    for (size_t ti = 0; ti < 3; ti++)
        for (size_t c = 0; c < sizeof cols / sizeof *cols; c++)
            run_shape(g_types[ti], 13 + (int64_t)c, cols[c], 1 + (int)(c % 5), g_pools);
}

/* model widths (2560, 2592 = odd block count) and rows enough for 1..3 threads to split */
static void test_fmat_model_widths(void **st) {
    for (size_t ti = 0; ti < 4; ti++) {
        run_shape(g_types[ti], 130, 2560, 1, g_pools);
        run_shape(g_types[ti], 67, 2592, 3, g_pools);
        run_shape(g_types[ti], 200, 2560, 5, g_pools);
    }
}

/* Q8_0 of x follows ggml: a pure-scale x whose blocks are exactly representable comes back
 * exactly, and zero blocks give 0 (not NaN) */
static void test_fmat_q8_exact_values(void **st) {
    const int64_t cols = 64, rows = 3;
    uint8_t w[3 * 2 * 34];
    float x[64], y[3];
    memset(w, 0, sizeof w);
    for (int r = 0; r < 3; r++)
        for (int b = 0; b < 2; b++) {
            uint16_t d = f32_to_f16(r == 2 ? 0.0f : 0.5f);
            memcpy(w + (r * 2 + b) * 34, &d, 2);
            for (int i = 0; i < 32; i++) w[(r * 2 + b) * 34 + 2 + i] = (uint8_t)(int8_t)(r == 1 ? -1 : 1);
        }
    for (int i = 0; i < 64; i++) x[i] = i < 32 ? 0.0f : (i % 2 ? 127.0f : -127.0f) * 0.25f;
    x[32] = 127.0f * 0.25f; /* 17 positive, 15 negative */
    void *scr = tern_alloc(fmat_scratch_bytes(TT_Q8_0, cols, 1));
    for (int isa = 0; isa < ISA_COUNT; isa++) {
        if (!isa_supported(isa)) continue;
        isa_force(isa);
        fmat_mul(TT_Q8_0, w, rows, cols, x, 1, y, scr, NULL);
        /* Σx = 127·0.25·(17 − 15) = 63.5, times 0.5 */
        assert_true(y[0] == 31.75f);
        assert_true(y[1] == -31.75f);
        assert_true(y[2] == 0.0f);
    }
    isa_force(isa_best());
    tern_free(scr);
}

static void test_fmat_supported(void **st) {
    assert_true(fmat_supported(TT_F32) && fmat_supported(TT_F16) && fmat_supported(TT_BF16) &&
                fmat_supported(TT_Q8_0));
    assert_false(fmat_supported(TT_I2_S));
    assert_false(fmat_supported(TT_TQ2_0));
    assert_int_equal(fmat_scratch_bytes(TT_F16, 2560, 4), 0);
    assert_true(fmat_scratch_bytes(TT_Q8_0, 2560, 4) >= 4 * (2560 + 2560 / 32 * 4));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fmat_supported),
        cmocka_unit_test(test_fmat_q8_exact_values),
        cmocka_unit_test(test_fmat_small_shapes),
        cmocka_unit_test(test_fmat_every_n),
        cmocka_unit_test(test_fmat_odd_cols),
        cmocka_unit_test(test_fmat_model_widths),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
