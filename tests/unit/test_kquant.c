/* test_kquant: llama.cpp's Q4_0, Q5_0, Q4_K, Q5_K, Q6_K in tern. Byte layouts against hand-built
 * blocks whose values follow from llama.cpp's dequantize_row_* (facts, not our output); quantise →
 * dequantise error bounds per type; the lm head product (fmat) of every type: the scalar spec vs a
 * double formula on the dequantised weights, and every ISA variant and thread count vs the spec
 * bit for bit, on odd shapes and row subsets of real head shapes (2560/4096 × 128256); mat_init
 * takes them. `test_kquant --dump DIR` writes random blocks and tern's dequantisation of them for
 * tests/unit/kquant_layout.py (a second reading of the formats, after gguf-py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests/unit/cmocka_or_shim.h"
#include "core/alloc.h"
#include "core/half.h"
#include "core/tpool.h"
#include "core/types.h"
#include "kernels/dispatch.h"
#include "kernels/fmat.h"
#include "kernels/kquant.h"
#include "kernels/mat.h"
#include "kernels/quant.h"

static const int g_types[5] = {TT_Q4_0, TT_Q5_0, TT_Q4_K, TT_Q5_K, TT_Q6_K};

static uint64_t g_rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}
static float frand(void) { return (float)((rnd() & 0xffffff) / 8388608.0 - 1.0); } /* [-1, 1) */

static void put16(uint8_t *p, float v) { uint16_t h = f32_to_f16(v); memcpy(p, &h, 2); }

/* random bytes, with the f16 scales set to finite values of a head's magnitude */
static void random_blocks(int type, uint8_t *b, int64_t nblk) {
    size_t bb = type_traits(type)->bytes;
    for (int64_t i = 0; i < nblk; i++, b += bb) {
        for (size_t k = 0; k < bb; k++) b[k] = (uint8_t)rnd();
        float d = 0.0005f + 0.002f * (frand() + 1.0f);
        if (type == TT_Q6_K) put16(b + 208, d);
        else put16(b, d);
        if (type == TT_Q4_K || type == TT_Q5_K) put16(b + 2, 0.001f * (frand() + 1.0f));
    }
}

static void expect_val(const float *y, int i, float want, const char *what) {
    if (y[i] != want) fail_msg("%s: value %d = %.9g, llama.cpp's formula gives %.9g", what, i, y[i], want);
}

/* one hand-built block per type; the wanted values are worked out from llama.cpp's dequantizers */
static void test_layout_facts(void **st) {
    (void)st;
    float y[256];
    uint8_t b[256];
    memset(b, 0, sizeof b); /* Q4_0 {d; qs[16]}: y[j] = d(lo − 8), y[j+16] = d(hi − 8) */
    put16(b, 1.0f);
    b[2 + 3] = 0x9A;
    assert_int_equal(dequant_rows(TT_Q4_0, b, 1, 32, 0, 1, y), 0);
    expect_val(y, 3, 2.0f, "q4_0"); expect_val(y, 19, 1.0f, "q4_0"); expect_val(y, 0, -8.0f, "q4_0");
    memset(b, 0, sizeof b); /* Q5_0 {d; qh u32; qs[16]}: bit 4 of value i is qh bit i */
    put16(b, 0.5f);
    uint32_t qh = 1u << 3 | 1u << 19;
    memcpy(b + 2, &qh, 4);
    b[6 + 3] = 0x21;
    assert_int_equal(dequant_rows(TT_Q5_0, b, 1, 32, 0, 1, y), 0);
    expect_val(y, 3, 0.5f, "q5_0"); expect_val(y, 19, 1.0f, "q5_0"); expect_val(y, 4, -8.0f, "q5_0");
    expect_val(y, 20, -8.0f, "q5_0");
    memset(b, 0, sizeof b); /* Q4_K {d, dmin; scales[12]; qs[128]} */
    put16(b, 1.0f);
    put16(b + 2, 0.5f);
    uint8_t *sc = b + 4;
    sc[9] = 0x23;  /* sub-block 5: scale low 4 bits 3, min low 4 bits 2 */
    sc[1] = 0x40;  /* scale of 5, bits 4-5 = 1 → 19; scale of sub-block 1 = 0 */
    sc[5] = 0x80;  /* min of 5, bits 4-5 = 2 → 34 */
    sc[0] = 7; sc[4] = 3;   /* sub-block 0: scale 7, min 3 */
    b[16 + 64 + 7] = 0xB0;  /* chunk 2, high nibble: value 160 + 7 */
    b[16 + 2] = 0x05;       /* chunk 0, low nibble: value 2 */
    assert_int_equal(dequant_rows(TT_Q4_K, b, 1, 256, 0, 1, y), 0);
    expect_val(y, 167, 19.0f * 11.0f - 17.0f, "q4_k");
    expect_val(y, 160, -17.0f, "q4_k");
    expect_val(y, 2, 35.0f - 1.5f, "q4_k");
    expect_val(y, 40, 0.0f, "q4_k");
    /* Q5_K {d, dmin; scales[12]; qh[32]; qs[128]}: same scales, qh[l] bit s = bit 4 of 32s + l */
    memmove(b + 48, b + 16, 128);
    memset(b + 16, 0, 32);
    b[16 + 7] = 1 << 5;   /* value 160 + 7 gets +16 */
    assert_int_equal(dequant_rows(TT_Q5_K, b, 1, 256, 0, 1, y), 0);
    expect_val(y, 167, 19.0f * 27.0f - 17.0f, "q5_k");
    expect_val(y, 2, 35.0f - 1.5f, "q5_k");
    memset(b, 0, sizeof b); /* Q6_K {ql[128]; qh[64]; scales[16]; d} */
    put16(b + 208, 0.25f);
    int8_t *s6 = (int8_t *)(b + 192);
    s6[14] = -3; s6[10] = 2; s6[0] = 1;
    b[101] = 0x70;  /* ql[64 + 5 + 32]: high nibble → value 128 + 5 + 96, low → 128 + 5 + 32 */
    b[128 + 37] = 0xC0;   /* qh[32 + 5] bits 7:6 → value 229 */
    b[0] = 0x0F; b[128] = 0x02;  /* value 0: low 15, high bits 2 → 47 − 32 = 15 */
    assert_int_equal(dequant_rows(TT_Q6_K, b, 1, 256, 0, 1, y), 0);
    expect_val(y, 229, 0.25f * -3.0f * 23.0f, "q6_k");
    expect_val(y, 165, 0.25f * 2.0f * -32.0f, "q6_k");
    expect_val(y, 0, 0.25f * 15.0f, "q6_k");
    expect_val(y, 64, 0.0f * 0.25f, "q6_k");   /* value 64: high nibble of ql[0] = 0 → −32, scale[4] = 0 */
}

/* quantise → dequantise: RMS error relative to the RMS of x, per type (bounds ~1.5× measured on
 * uniform data), and exact zeros for an all-zero row */
static void test_roundtrip_error(void **st) {
    (void)st;
    static const double bound[5] = {0.090, 0.045, 0.060, 0.030, 0.016};
    const int64_t rows = 7, cols = 1024;
    float *x = malloc(sizeof(float) * rows * cols), *y = malloc(sizeof(float) * rows * cols);
    uint8_t *q = malloc(type_tensor_bytes(TT_Q6_K, cols, rows) + 64);
    for (int64_t i = 0; i < rows * cols; i++) x[i] = frand() * (1.0f + (float)(i / cols));
    for (int64_t i = 0; i < cols; i++) x[i] = 0.0f;   /* row 0: zeros */
    for (int ti = 0; ti < 5; ti++) {
        int type = g_types[ti];
        assert_int_equal(quant_from_f32(type, x, rows, cols, q), 0);
        assert_int_equal(dequant_rows(type, q, rows, cols, 0, rows, y), 0);
        for (int64_t i = 0; i < cols; i++) assert_true(y[i] == 0.0f);
        double e2 = 0, x2 = 0;
        for (int64_t i = cols; i < rows * cols; i++) {
            e2 += (double)(y[i] - x[i]) * (y[i] - x[i]);
            x2 += (double)x[i] * x[i];
        }
        double rel = sqrt(e2 / x2);
        print_message("  %s: relative RMS error %.4f (bound %.3f)\n", type_name(type), rel, bound[ti]);
        if (!(rel < bound[ti])) fail_msg("%s: relative RMS error %.4f > %.3f", type_name(type), rel, bound[ti]);
        /* row subsets dequantise the same values */
        float y2[1024];
        assert_int_equal(dequant_rows(type, q, rows, cols, 3, 1, y2), 0);
        assert_memory_equal(y2, y + 3 * cols, sizeof y2);
    }
    assert_true(quant_from_f32(TT_Q6_K, x, 1, 128, q) < 0);   /* not a multiple of 256 */
    assert_true(quant_from_f32(TT_Q4_0, x, 1, 48, q) < 0);
    free(x); free(y); free(q);
}

/* y = W·x in double on the dequantised W and the quantised x the spec sees */
static void check_vs_double(int type, const uint8_t *w, int64_t rows, int64_t cols, const float *x, int n,
                            const float *y) {
    float *wf = malloc(sizeof(float) * (size_t)cols), *xf = malloc(sizeof(float) * (size_t)cols);
    uint8_t *xs = tern_alloc(fmat_scratch_bytes(type, cols, 1) + 64);
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * cols;
        if (kquant_is_k(type)) {
            kquant_quantize_x(xt, cols, xs);
            const float *d = (const float *)(xs + kquant_x_d_off(cols));
            for (int64_t c = 0; c < cols; c++) xf[c] = (float)((const int8_t *)xs)[c] * d[c / 256];
        } else {   /* Q8_0 blocks with an f16 scale, as fmat quantises */
            for (int64_t b = 0; b < cols / 32; b++) {
                float amax = 0;
                for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(xt[b * 32 + i]));
                float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f, dh = f16_to_f32(f32_to_f16(d));
                for (int i = 0; i < 32; i++) xf[b * 32 + i] = dh * roundf(xt[b * 32 + i] * id);
            }
        }
        for (int64_t r = 0; r < rows; r++) {
            assert_int_equal(dequant_rows(type, w, rows, cols, r, 1, wf), 0);
            double s = 0, sa = 0;
            for (int64_t c = 0; c < cols; c++) {
                s += (double)wf[c] * xf[c];
                sa += fabs((double)wf[c] * xf[c]);
            }
            double tol = (cols / 16.0 + 8.0) * 1.2e-7 * sa + 1e-30;
            double got = y[(size_t)t * rows + r];
            if (fabs(got - s) > tol)
                fail_msg("%s rows=%lld cols=%lld: y[%d][%lld] = %.9g, double says %.9g (tol %.3g)", type_name(type),
                         (long long)rows, (long long)cols, t, (long long)r, got, s, tol);
        }
    }
    free(wf); free(xf); tern_free(xs);
}

static tpool_t *g_pools[3];

/* the spec vs double; every ISA and 1..3 threads vs the spec, exactly */
static void run_shape(int type, int64_t rows, int64_t cols, int n, int vs_double) {
    size_t nb = type_tensor_bytes(type, cols, rows);
    uint8_t *w = tern_alloc(nb);
    random_blocks(type, w, (int64_t)(nb / type_traits(type)->bytes));
    float *x = malloc(sizeof(float) * (size_t)(cols * n));
    for (int64_t i = 0; i < cols * n; i++) x[i] = frand() * 3.0f;
    for (int64_t i = 0; i < cols && i < 256; i++) x[i] = 0.0f;   /* a zero block (d = 0) */
    if (cols >= 512) x[300] = 40.0f;                            /* an outlier */
    size_t ysz = sizeof(float) * (size_t)(rows * n);
    float *yr = malloc(ysz), *yi = malloc(ysz);
    void *scr = tern_alloc(fmat_scratch_bytes(type, cols, n));
    fmat_mul_ref(type, w, rows, cols, x, n, yr, scr);
    if (vs_double) check_vs_double(type, w, rows, cols, x, n, yr);
    for (int isa = 0; isa < ISA_COUNT; isa++) {
        if (!isa_supported(isa)) continue;
        isa_force(isa);
        for (int th = 0; th < 3; th++) {
            memset(yi, 0xff, ysz);
            fmat_mul(type, w, rows, cols, x, n, yi, scr, g_pools[th]);
            for (int64_t i = 0; i < rows * n; i++)
                if (memcmp(&yi[i], &yr[i], 4) != 0)
                    fail_msg("%s/%s threads=%d rows=%lld cols=%lld n=%d: y[%lld] = %.9g, ref %.9g", type_name(type),
                             isa_name(isa), th + 1, (long long)rows, (long long)cols, n, (long long)i, yi[i], yr[i]);
        }
    }
    isa_force(isa_best());
    tern_free(scr); free(yr); free(yi); free(x); tern_free(w);
}

static void test_fmat_odd_shapes(void **st) {
    (void)st;
    static const int64_t rows[] = {1, 2, 3, 5, 7, 17, 64, 67};
    static const int64_t cols[] = {256, 512, 768, 1280};
    for (int ti = 0; ti < 5; ti++)
        for (size_t r = 0; r < sizeof rows / sizeof *rows; r++)
            for (size_t c = 0; c < sizeof cols / sizeof *cols; c++)
                run_shape(g_types[ti], rows[r], cols[c], 1 + (int)((r + c) % 5), 1);
    run_shape(TT_Q4_0, 3, 96, 2, 1);   /* 3 blocks */
    run_shape(TT_Q5_0, 5, 32, 3, 1);
}

/* the heads of 2B-4T (2560 × 128256), Llama-3-8B (4096 × 128256), 3B (3200 × 32002): row subsets */
static void test_fmat_head_shapes(void **st) {
    (void)st;
    for (int ti = 2; ti < 5; ti++) {
        run_shape(g_types[ti], 1031, 2560, 1, 0);
        run_shape(g_types[ti], 333, 4096, 1, 0);
        run_shape(g_types[ti], 130, 2560, 3, 1);
        run_shape(g_types[ti], 67, 4096, 4, 1);
    }
    run_shape(TT_Q4_0, 130, 2560, 2, 1);
    run_shape(TT_Q5_0, 67, 3200, 1, 1);
}

/* mat_init takes every type (tied Q6_K heads go through it) and mat_mul is fmat_mul */
static void test_mat_takes_kquants(void **st) {
    (void)st;
    for (int ti = 0; ti < 5; ti++) {
        int type = g_types[ti];
        const int64_t rows = 70, cols = 512;
        size_t nb = type_tensor_bytes(type, cols, rows);
        uint8_t *w = tern_alloc(nb);
        random_blocks(type, w, (int64_t)(nb / type_traits(type)->bytes));
        mat_t m;
        char err[200];
        assert_true(mat_init(&m, type, rows, cols, w, nb - 1, 0, err, sizeof err) < 0);   /* size is checked */
        assert_int_equal(mat_init(&m, type, rows, cols, w, nb, 0, err, sizeof err), 0);
        assert_int_equal(mat_weight_bytes(&m), nb);
        float x[2 * 512], y1[140], y2[140];
        for (int i = 0; i < 1024; i++) x[i] = frand();
        void *scr = tern_alloc(mat_scratch_bytes(&m, 2)), *scr2 = tern_alloc(fmat_scratch_bytes(type, cols, 2));
        mat_mul(&m, x, 2, y1, scr, g_pools[2]);
        fmat_mul_ref(type, w, rows, cols, x, 2, y2, scr2);
        assert_memory_equal(y1, y2, sizeof y1);
        mat_free(&m);
        tern_free(scr); tern_free(scr2); tern_free(w);
    }
    assert_true(fmat_supported(TT_Q6_K) && fmat_supported(TT_Q4_K) && fmat_supported(TT_Q4_0));
    assert_true(fmat_scratch_bytes(TT_Q6_K, 2560, 2) >= 2 * (2560 + 10 * 4 + 160 * 2));
}

/* random blocks of every type (with NaN-free scales) and tern's values, for kquant_layout.py:
 * DIR/<type>.bin = blocks, DIR/<type>.f32 = dequantised values */
static int dump(const char *dir) {
    for (int ti = 0; ti < 5; ti++) {
        int type = g_types[ti];
        const int64_t cols = 1024, rows = 8;
        size_t nb = type_tensor_bytes(type, cols, rows);
        uint8_t *w = tern_alloc(nb);
        float *y = malloc(sizeof(float) * cols * rows);
        random_blocks(type, w, (int64_t)(nb / type_traits(type)->bytes));
        if (type == TT_Q4_K || type == TT_Q5_K)   /* also negative and subnormal mins */
            for (int64_t i = 0; i < (int64_t)(nb / type_traits(type)->bytes); i += 3)
                put16(w + i * type_traits(type)->bytes + 2, i % 2 ? -0.01f : 3e-6f);
        if (dequant_rows(type, w, rows, cols, 0, rows, y) < 0) return 1;
        char path[512];
        FILE *f;
        snprintf(path, sizeof path, "%s/%s.bin", dir, type_name(type));
        if (!(f = fopen(path, "wb")) || fwrite(w, 1, nb, f) != nb || fclose(f)) return 1;
        snprintf(path, sizeof path, "%s/%s.f32", dir, type_name(type));
        if (!(f = fopen(path, "wb")) || fwrite(y, 4, (size_t)(cols * rows), f) != (size_t)(cols * rows) || fclose(f))
            return 1;
        tern_free(w);
        free(y);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--dump")) return dump(argv[2]);
    for (int i = 0; i < 3; i++) g_pools[i] = i == 0 ? NULL : tpool_new(i + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_facts),
        cmocka_unit_test(test_roundtrip_error),
        cmocka_unit_test(test_mat_takes_kquants),
        cmocka_unit_test(test_fmat_odd_shapes),
        cmocka_unit_test(test_fmat_head_shapes),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (int i = 0; i < 3; i++) tpool_destroy(&g_pools[i]);
    return rc;
}
