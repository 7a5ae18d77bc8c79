/* test_kernels: byte layouts of the stored ternary types (against facts read off llama.cpp's and
 * bitnet.cpp's code, not our own output), pack/unpack/dequant round trips, activation
 * quantisation, every ternary kernel variant against its _ref bit-exactly on odd and real
 * shapes, and mat_mul: thread- and ISA-independence and agreement with a double reference. */
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
#include "core/err.h"
#include "core/half.h"
#include "core/tpool.h"
#include "core/types.h"
#include "kernels/dispatch.h"
#include "kernels/lut.h"
#include "kernels/mat.h"
#include "kernels/quant.h"
#include "kernels/ternary.h"

/* ---- helpers --------------------------------------------------------------------------- */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}
static float frnd(void) { return (float)(rnd() % 2000001) / 1000000.0f - 1.0f; }   /* [-1, 1] */

static void rand_trits(int8_t *t, int64_t n) {
    for (int64_t i = 0; i < n; i++) t[i] = (int8_t)(rnd() % 3) - 1;
}

/* int8 activations of n tokens with sums and 256-block sums; freed by act_free */
typedef struct test_act {
    tact_t a;
    int8_t *q, *lut;
    int32_t *sum, *bsum;
} test_act_t;

static void act_make(test_act_t *ta, int64_t cols, int n, int mode) {
    ta->q = tern_alloc((size_t)(n * cols));
    ta->sum = calloc((size_t)n, 4);
    ta->bsum = calloc((size_t)n * (size_t)(cols / 256 + 1), 4);
    for (int64_t i = 0; i < n * cols; i++)
        ta->q[i] = mode == 1 ? 127 : mode == 2 ? -127 : (int8_t)((int)(rnd() % 255) - 127);
    for (int t = 0; t < n; t++)
        for (int64_t c = 0; c < cols; c++) {
            ta->sum[t] += ta->q[t * cols + c];
            if (c / 256 < cols / 256) ta->bsum[t * (cols / 256) + c / 256] += ta->q[t * cols + c];
        }
    size_t tb = lut_tbl_bytes(cols);
    ta->lut = tern_alloc((size_t)n * tb);
    for (int t = 0; t < n; t++) lut_tables_ref(ta->q + t * cols, cols, ta->lut + (size_t)t * tb);
    ta->a = (tact_t){ta->q, ta->sum, ta->bsum, cols, n, ta->lut};
}
static void act_free(test_act_t *ta) {
    tern_free(ta->q);
    tern_free(ta->lut);
    free(ta->sum);
    free(ta->bsum);
}

/* ---- layouts: facts from the reference engines ------------------------------------------ */

static void test_i2s_layout(void **st) {
    (void)st;
    int8_t t[128] = {0};
    uint8_t b[32];
    t[0] = 1;     /* code 2 in bits 7:6 of byte 0 */
    t[32] = -1;   /* code 0 in bits 5:4 of byte 0 */
    t[97] = 1;    /* code 2 in bits 1:0 of byte 1 */
    assert_int_equal(quant_pack_trits(TT_I2_S, t, 1, 128, 1.0f, b), 0);
    assert_int_equal(b[0], 0x85);   /* 10 00 01 01 */
    assert_int_equal(b[1], 0x56);   /* 01 01 01 10 */
    assert_int_equal(b[2], 0x55);
    uint8_t tail[32];
    quant_i2s_tail(tail, 0.5f);
    float s;
    memcpy(&s, tail, 4);
    assert_true(s == 0.5f);
    for (int i = 4; i < 32; i++) assert_int_equal(tail[i], 0);
}

static void test_tq2_layout(void **st) {
    (void)st;
    int8_t t[256] = {0};
    uint8_t b[66];
    t[0] = 1;     /* byte 0 bits 1:0 = 2 */
    t[32] = -1;   /* byte 0 bits 3:2 = 0 */
    t[128 + 96 + 5] = 1;   /* byte 32+5 bits 7:6 = 2 */
    assert_int_equal(quant_pack_trits(TT_TQ2_0, t, 1, 256, 2.0f, b), 0);
    assert_int_equal(b[0], 0x52);        /* 01 01 00 10 */
    assert_int_equal(b[37], 0x95);       /* 10 01 01 01 */
    assert_int_equal(b[1], 0x55);
    uint16_t d;
    memcpy(&d, b + 64, 2);
    assert_int_equal(d, 0x4000);         /* f16 2.0 */
}

static void test_tq1_layout(void **st) {
    (void)st;
    int8_t t[256] = {0};
    uint8_t b[54];
    /* all zero trits: digits 1,1,1,1,1 = 121 → ceil(121·256/243) = 128; qh: 1,1,1,1,0 = 120 → 127 */
    assert_int_equal(quant_pack_trits(TT_TQ1_0, t, 1, 256, 1.0f, b), 0);
    assert_int_equal(b[0], 128);
    assert_int_equal(b[47], 128);
    assert_int_equal(b[48], 127);
    /* element 0 = +1 is byte 0's most significant digit: 2·81+27+9+3+1 = 202 → 213;
     * element 160+16 = −1 is digit 1 of byte 32: 81+0+9+3+1 = 94 → 100;
     * element 240+4·3+2 = +1 is digit 3 of qh[2]: (1,1,1,2)·3 = 123 → 130 */
    t[0] = 1;
    t[176] = -1;
    t[254] = 1;
    quant_pack_trits(TT_TQ1_0, t, 1, 256, 1.0f, b);
    assert_int_equal(b[0], 213);
    assert_int_equal(b[32], 100);
    assert_int_equal(b[50], 130);
    uint16_t d;
    memcpy(&d, b + 52, 2);
    assert_int_equal(d, 0x3c00);
}

static void test_pack_roundtrip(void **st) {
    (void)st;
    const int types[3] = {TT_I2_S, TT_TQ1_0, TT_TQ2_0};
    for (int ti = 0; ti < 3; ti++) {
        int type = types[ti];
        int64_t rows = 7, cols = type == TT_I2_S ? 384 : 512;
        int8_t *t = malloc((size_t)(rows * cols)), *u = malloc((size_t)(rows * cols));
        size_t nb = type_tensor_bytes(type, cols, rows);
        uint8_t *p = malloc(nb);
        rand_trits(t, rows * cols);
        assert_int_equal(quant_pack_trits(type, t, rows, cols, 0.75f, p), 0);
        if (type == TT_I2_S) quant_i2s_tail(p + rows * cols / 4, 0.75f);
        float s = 0;
        assert_int_equal(quant_unpack_trits(type, p, rows, cols, 0, rows, u, &s), 0);
        assert_memory_equal(t, u, (size_t)(rows * cols));
        assert_true(s == 0.75f);
        assert_int_equal(quant_unpack_trits(type, p, rows, cols, 3, 2, u, NULL), 0);
        assert_memory_equal(t + 3 * cols, u, (size_t)(2 * cols));
        assert_true(quant_unpack_trits(type, p, rows, cols, 6, 2, u, NULL) < 0);   /* past the end */
        float *y = malloc((size_t)(rows * cols) * 4);
        assert_int_equal(dequant_rows(type, p, rows, cols, 1, 5, y), 0);
        for (int64_t i = 0; i < 5 * cols; i++) assert_true(y[i] == (float)t[cols + i] * 0.75f);
        free(y);
        free(p);
        free(t);
        free(u);
    }
    assert_true(quant_pack_trits(TT_TQ2_0, NULL, 1, 100, 1.0f, NULL) < 0);   /* cols % 256 */
    assert_true(quant_pack_trits(TT_F32, NULL, 1, 256, 1.0f, NULL) < 0);
}

static void test_from_f32(void **st) {
    (void)st;
    int64_t rows = 5, cols = 256;
    float *x = malloc((size_t)(rows * cols) * 4), *y = malloc((size_t)(rows * cols) * 4);
    for (int64_t i = 0; i < rows * cols; i++) x[i] = frnd() * 3.0f;
    double am = 0;
    for (int64_t i = 0; i < rows * cols; i++) am += fabs(x[i]);
    am /= (double)(rows * cols);
    uint8_t *buf = malloc(type_tensor_bytes(TT_F32, cols, rows));
    const int ftypes[4] = {TT_F32, TT_F16, TT_BF16, TT_Q8_0};
    const double tol[4] = {0, 1e-3, 8e-3, 3.0 / 127};
    for (int k = 0; k < 4; k++) {
        assert_int_equal(quant_from_f32(ftypes[k], x, rows, cols, buf), 0);
        assert_int_equal(dequant_rows(ftypes[k], buf, rows, cols, 0, rows, y), 0);
        for (int64_t i = 0; i < rows * cols; i++)
            if (fabs(y[i] - x[i]) > tol[k] * 3.0 * (k == 3 ? 1.0 : fabs(x[i]) / 3.0 + 1e-9)) {
                print_error("%s: x %g y %g\n", type_name(ftypes[k]), x[i], y[i]);
                fail();
            }
    }
    const int tt[3] = {TT_I2_S, TT_TQ1_0, TT_TQ2_0};
    for (int k = 0; k < 3; k++) {
        assert_int_equal(quant_from_f32(tt[k], x, rows, cols, buf), 0);
        assert_int_equal(dequant_rows(tt[k], buf, rows, cols, 0, rows, y), 0);
        float sc = (float)am;
        float s16 = f16_to_f32(f32_to_f16(sc));
        for (int64_t i = 0; i < rows * cols; i++) {
            float tr = roundf(x[i] / sc);
            tr = tr > 1 ? 1 : tr < -1 ? -1 : tr;
            assert_true(y[i] == tr * (tt[k] == TT_I2_S ? sc : s16));
        }
    }
    assert_true(quant_from_f32(TT_Q8_0, x, 1, 40, buf) < 0);
    free(buf);
    free(x);
    free(y);
}

/* ---- activations ------------------------------------------------------------------------ */

static void test_act_quant(void **st) {
    (void)st;
    float x[300];
    int8_t q[300], q2[300];
    for (int i = 0; i < 300; i++) x[i] = frnd() * 5.0f;
    x[17] = -6.0f;
    int32_t sum = 0;
    float s = act_quant_ref(x, 300, q, &sum);
    assert_true(s == 127.0f / 6.0f);
    assert_int_equal(q[17], -127);
    int32_t chk = 0;
    for (int i = 0; i < 300; i++) {
        chk += q[i];
        assert_true(fabsf((float)q[i] - x[i] * s) <= 0.5f);
    }
    assert_int_equal(sum, chk);
    /* exact halves round away from zero: 127/254 scale → x=1.5 ↦ ... use amax 127 so s = 1 */
    float h[64];
    for (int i = 0; i < 64; i++) h[i] = (float)(i - 32) + 0.5f;
    h[0] = 127.0f;
    act_quant_ref(h, 64, q, NULL);
    assert_int_equal(q[1], -31);   /* -30.5 → -31 */
    assert_int_equal(q[33], 2);                /* 1.5 → 2 */
    assert_int_equal(q[32], 1);                /* 0.5 → 1 */
    float z[40] = {0};
    assert_true(act_quant_ref(z, 40, q, &sum) == 1.0f);
    assert_int_equal(sum, 0);
    /* the dispatched version is bit-identical, on random data, halves and odd lengths */
    for (int isa = 0; isa < ISA_COUNT; isa++) {
        if (!isa_supported(isa)) continue;
        isa_force(isa);
        for (int n = 1; n <= 300; n += 37) {
            int32_t s1, s2;
            float a1 = act_quant_ref(x, n, q, &s1), a2 = act_quant(x, n, q2, &s2);
            assert_true(a1 == a2);
            assert_int_equal(s1, s2);
            assert_memory_equal(q, q2, (size_t)n);
        }
        int32_t s1, s2;
        act_quant_ref(h, 64, q, &s1);
        act_quant(h, 64, q2, &s2);
        assert_memory_equal(q, q2, 64);
        assert_int_equal(s1, s2);
    }
    isa_force(isa_best());
}

/* ---- kernel variants vs _ref ------------------------------------------------------------ */

enum { F_I2S, F_TQ2, F_TQ1, F_TL, F_LUT, F_RL, F_N };
static const char *g_fname[F_N] = {"i2_s", "tq2_0", "tq1_0", "tl", "lut3", "rl32"};

static tdot_fn variant(int f, int isa) {
    static const tdot_fn ref[F_N] = {i2s_dot_ref, tq2_dot_ref, tq1_dot_ref, tern_tl_dot_ref, lut_dot_ref, tern_rl_dot_ref};
    if (isa == ISA_REF) return ref[f];
#if defined(TERN_HAVE_X86)
    static const tdot_fn avx2[F_N] = {i2s_dot_avx2, tq2_dot_avx2, tq1_dot_avx2, tern_tl_dot_avx2, lut_dot_avx2, NULL};
    static const tdot_fn avx512[F_N] = {i2s_dot_avx512, tq2_dot_avx512, tq1_dot_avx512, tern_tl_dot_avx512,
                                        lut_dot_avx512, tern_rl_dot_avx512};
    if (isa == ISA_AVX2) return avx2[f];
    if (isa == ISA_AVX512) return avx512[f];
#endif
#if defined(TERN_HAVE_ARM)
    static const tdot_fn neon[F_N] = {i2s_dot_neon, tq2_dot_neon, tq1_dot_neon, tern_tl_dot_neon, lut_dot_neon, NULL};
    if (isa == ISA_NEON) return neon[f];
#endif
    return NULL;
}

static size_t fam_bytes(int f, int64_t rows, int64_t cols) {
    switch (f) {
    case F_I2S: return (size_t)(rows * cols / 4) + 32;
    case F_TQ2: return (size_t)(rows * cols / 256) * 66;
    case F_TQ1: return (size_t)(rows * cols / 256) * 54;
    case F_LUT: return lut_bytes(rows, cols);
    case F_RL: return tern_rl_bytes(rows, cols);
    default: return tern_tl_bytes(rows, cols);
    }
}

static int g_checked;

/* every variant of family f against ref on one shape; random bytes (so every code, including
 * the unused 3, and every TQ1 byte value, is exercised) or mode 1/2 extremes */
static void check_shape_w(int f, int64_t rows, int64_t cols, int n, int mode, int wfill) {
    size_t wb = fam_bytes(f, rows, cols);
    uint8_t *w = tern_alloc(wb);
    for (size_t i = 0; i < wb; i++) w[i] = mode ? (f == F_TQ1 ? 255 : 0xaa) : (uint8_t)rnd();
    if (wfill >= 0) memset(w, wfill, wb);
    if (f == F_LUT && mode)   /* every group ±381 (index 13), all one sign: the int16 worst case */
        for (size_t i = 0; i < wb; i++) w[i] = i % LUT_BLK < 64 ? (mode == 1 ? 0 : 0xff) : 0xdd;
    test_act_t ta;
    act_make(&ta, cols, n, mode);
    int nb = (f == F_TQ2 || f == F_TQ1) ? (int)(cols / 256) : 1;
    size_t ib = (size_t)n * (size_t)rows * (size_t)nb;
    int32_t *want = malloc(ib * 4), *got = malloc(ib * 4);
    variant(f, ISA_REF)(w, rows, 0, rows, &ta.a, want);
    for (int isa = 1; isa < ISA_COUNT; isa++) {
        tdot_fn fn = variant(f, isa);
        if (!fn || !isa_supported(isa)) continue;
        memset(got, 0x5a, ib * 4);
        fn(w, rows, 0, rows, &ta.a, got);
        for (size_t i = 0; i < ib; i++)
            if (got[i] != want[i]) {
                print_error("%s/%s rows %lld cols %lld n %d mode %d: isum[%zu] = %d, ref %d\n", g_fname[f],
                            isa_name(isa), (long long)rows, (long long)cols, n, mode, i, got[i], want[i]);
                fail();
            }
        /* a sub-range of rows starting off the tile grid */
        if (rows > 5) {
            int64_t r0 = 1 + rows / 3, nr = rows - r0 - 1;
            fn(w, rows, r0, nr, &ta.a, got);
            for (int t = 0; t < n; t++)
                for (int64_t r = 0; r < nr * nb; r++)
                    if (got[((size_t)t * nr) * nb + r] != want[((size_t)t * rows + r0) * nb + r]) {
                        print_error("%s/%s sub-range r0 %lld: mismatch\n", g_fname[f], isa_name(isa), (long long)r0);
                        fail();
                    }
        }
        g_checked++;
    }
    free(want);
    free(got);
    act_free(&ta);
    tern_free(w);
}

static void check_shape(int f, int64_t rows, int64_t cols, int n, int mode) { check_shape_w(f, rows, cols, n, mode, -1); }

static void test_variants_odd(void **st) {
    (void)st;
    const int64_t rows[] = {1, 2, 3, 5, 7, 9, 13, 31, 33, 67};
    const int64_t cols[] = {16, 48, 128, 256, 384, 512, 768, 1024};
    const int ns[] = {1, 2, 3, 4, 5, 7, 9, 17, 33};
    for (int f = 0; f < F_N; f++)
        for (size_t ci = 0; ci < sizeof cols / sizeof *cols; ci++) {
            int64_t blk = f == F_RL ? 16 : f == F_LUT ? 1 : f == F_I2S ? 128 : 256;
            if (cols[ci] % blk) continue;
            for (size_t ri = 0; ri < sizeof rows / sizeof *rows; ri++) {
                int n = ns[(ri + ci) % (sizeof ns / sizeof *ns)];
                check_shape(f, rows[ri], cols[ci], n, 0);
            }
            check_shape(f, 11, cols[ci], 6, 1);   /* largest positive sums */
            check_shape(f, 11, cols[ci], 3, 2);   /* largest negative sums */
        }
    /* every batch size 1..33 on one shape */
    for (int f = 0; f < F_N; f++)
        for (int n = 1; n <= 33; n += (n < 9 ? 1 : 4)) check_shape(f, 13, 512, n, 0);
    print_message("checked %d variant/shape pairs\n", g_checked);
}

static void test_variants_real(void **st) {
    (void)st;
    const int64_t shapes[4][2] = {{2560, 2560}, {640, 2560}, {6912, 2560}, {2560, 6912}};
    for (int s = 0; s < 4; s++) {
        check_shape(F_TL, shapes[s][0], shapes[s][1], 1, 0);
        check_shape(F_I2S, shapes[s][0], shapes[s][1], 1, 0);
        check_shape(F_TQ2, shapes[s][0], shapes[s][1], 1, 0);
        check_shape(F_LUT, shapes[s][0], shapes[s][1], 1 + s, 0);
        check_shape(F_RL, shapes[s][0], shapes[s][1], 1, 0);
        check_shape(F_RL, shapes[s][0], shapes[s][1], 13 + s, 0);
    }
    check_shape(F_TQ1, 2560, 6912, 1, 0);
    check_shape(F_RL, 5, 65536, 2, 1);   /* the scaled-code GEMV path at its width limit */
    check_shape(F_RL, 3, 65552, 1, 0);   /* wider: the plain path */
    check_shape(F_TQ1, 640, 2560, 1, 0);
    check_shape(F_TL, 640, 2560, 5, 0);
    check_shape(F_I2S, 640, 2560, 3, 0);
}

/* the TL GEMM tiles (AVX2: one row × up to 8 tokens, balanced; int16 sums widened every 1024
 * columns; AVX-512: 4 rows × 6 tokens): every batch 1..34 on a shape wider than one widening
 * step, row sub-ranges off the group grid (inside check_shape), and the int16 worst case: every
 * code 3 (weight +2; vpmaddubsw sees 3·q) against q = ±127 over 6912 columns */
static void test_tl_tiles(void **st) {
    (void)st;
    for (int n = 1; n <= 34; n++) check_shape(F_TL, 7, 2560, n, 0);
    check_shape(F_TL, 9, 1024, 30, 0);
    check_shape(F_TL, 5, 256, 17, 0);
    for (int mode = 1; mode <= 2; mode++) {
        check_shape_w(F_TL, 6, 6912, 8, mode, 0xff);   /* code 3 everywhere */
        check_shape_w(F_TL, 6, 6912, 11, mode, 0x00);  /* code 0 everywhere */
        check_shape_w(F_TL, 6, 1280, 3, mode, 0xff);
    }
}

/* LUT layout semantics: pack random trits, then lut_dot_ref (and every ISA variant) must equal
 * the plain Σ t·q — on column counts that are not multiples of 3, 24 or 128 — and the ISA
 * table builders must write the reference tables byte for byte. */
static void test_lut_exact(void **st) {
    (void)st;
    const int64_t cols[] = {1, 2, 3, 4, 5, 23, 24, 25, 47, 128, 383, 768, 1000, 2560};
    const int64_t rows[] = {1, 3, 64, 65, 130};
    for (size_t ci = 0; ci < sizeof cols / sizeof *cols; ci++)
        for (size_t ri = 0; ri < sizeof rows / sizeof *rows; ri++) {
            int64_t R = rows[ri], C = cols[ci];
            int n = 1 + (int)((ci + ri) % 6);
            int8_t *t = malloc((size_t)(R * C));
            rand_trits(t, R * C);
            uint8_t *w = tern_calloc(lut_bytes(R, C));
            lut_pack_rows(t, C, 0, R, w);
            test_act_t ta;
            act_make(&ta, C, n, (int)(ci % 3));
            int32_t *got = malloc((size_t)(n * R) * 4);
            for (int isa = 0; isa < ISA_COUNT; isa++) {
                tdot_fn fn = variant(F_LUT, isa);
                if (!fn || !isa_supported(isa)) continue;
                fn(w, R, 0, R, &ta.a, got);
                for (int tk = 0; tk < n; tk++)
                    for (int64_t r = 0; r < R; r++) {
                        int32_t want = 0;
                        for (int64_t c = 0; c < C; c++) want += t[r * C + c] * ta.q[tk * C + c];
                        if (got[tk * R + r] != want) {
                            print_error("lut/%s rows %lld cols %lld t %d r %lld: %d, want %d\n", isa_name(isa),
                                        (long long)R, (long long)C, tk, (long long)r, got[tk * R + r], want);
                            fail();
                        }
                    }
            }
            /* tables: the dispatched builder equals the reference for every ISA */
            size_t tb = lut_tbl_bytes(C);
            int8_t *tbl = tern_alloc(tb);
            for (int isa = 0; isa < ISA_COUNT; isa++) {
                if (!isa_supported(isa)) continue;
                isa_force(isa);
                memset(tbl, 0x77, tb);
                lut_tables(ta.q, C, tbl);
                if (memcmp(tbl, ta.lut, tb)) {
                    print_error("lut_tables/%s cols %lld differs from lut_tables_ref\n", isa_name(isa), (long long)C);
                    fail();
                }
            }
            isa_force(isa_best());
            tern_free(tbl);
            free(got);
            act_free(&ta);
            tern_free(w);
            free(t);
        }
}

/* the byte-level I2_S → TL and → RL repacks equal unpack-to-trits + pack_rows, on random bytes
 * (so code 3 appears) and on row sub-ranges */
static void test_from_i2s(void **st) {
    (void)st;
    const int64_t shapes[][2] = {{1, 256}, {5, 512}, {13, 2560}, {64, 6912}, {33, 768}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int64_t R = shapes[si][0], C = shapes[si][1];
        size_t sb = (size_t)(R * C / 4) + 32, tb = tern_tl_bytes(R, C);
        uint8_t *src = malloc(sb), *a = tern_alloc(tb), *b = tern_alloc(tb);
        for (size_t i = 0; i < sb; i++) src[i] = (uint8_t)rnd();
        int8_t *t = malloc((size_t)(R * C));
        assert_int_equal(quant_unpack_trits(TT_I2_S, src, R, C, 0, R, t, NULL), 0);
        memset(a, 0x11, tb);
        memset(b, 0x22, tb);
        tern_tl_pad(R, C, a);
        tern_tl_pad(R, C, b);
        tern_tl_pack_rows(t, R, C, 0, R, a);
        int64_t mid = R / 2;
        tern_tl_from_i2s(src, C, 0, mid, b);
        tern_tl_from_i2s(src, C, mid, R - mid, b);
        if (memcmp(a, b, tb)) {
            print_error("tern_tl_from_i2s %lld x %lld differs from pack_rows(unpack)\n", (long long)R, (long long)C);
            fail();
        }
        size_t rb = tern_rl_bytes(R, C);
        uint8_t *c = tern_alloc(rb), *d = tern_alloc(rb);
        memset(c, 0x33, rb);
        memset(d, 0x44, rb);
        tern_rl_pad(R, C, c);
        tern_rl_pad(R, C, d);
        tern_rl_pack_rows(t, C, 0, R, c);
        tern_rl_from_i2s(src, C, 0, mid, d);
        tern_rl_from_i2s(src, C, mid, R - mid, d);
        if (memcmp(c, d, rb)) {
            print_error("tern_rl_from_i2s %lld x %lld differs from pack_rows(unpack)\n", (long long)R, (long long)C);
            fail();
        }
        tern_free(c);
        tern_free(d);
        free(t);
        free(src);
        tern_free(a);
        tern_free(b);
    }
}

/* the repack into tern-lut3 as it was before lut_from_src: int8 trits of 64 rows at a time,
 * zero-scale TQ blocks made zero trits, then lut_pack_rows; lut_from_src must write the same bytes */
static void lut_from_src_old(int type, const uint8_t *src, int64_t rows, int64_t cols, int64_t r0, int64_t nr,
                             uint8_t *dst) {
    size_t bb = type == TT_TQ2_0 ? 66 : 54;
    int8_t *t = malloc((size_t)(64 * cols));
    assert_non_null(t);
    for (int64_t a = r0; a < r0 + nr; a += 64) {
        int64_t k = r0 + nr - a < 64 ? r0 + nr - a : 64;
        assert_int_equal(quant_unpack_trits(type, src, rows, cols, a, k, t, NULL), 0);
        if (type != TT_I2_S)
            for (int64_t i = 0; i < k * cols; i += 256) {
                uint16_t d;
                memcpy(&d, src + ((a * cols + i) / 256) * bb + bb - 2, 2);
                if ((d & 0x7fff) == 0) memset(t + i, 0, 256);
            }
        lut_pack_rows(t, cols, a, k, dst);
    }
    free(t);
}

/* lut_from_src equals the trit path byte for byte: random bytes (I2_S and TQ2_0 code 3, every
 * TQ1_0 byte value), zero-scale TQ blocks (+0 and −0), column counts around the 768-column piece
 * and the 24-column block, rows split inside a tile; and the packed weights compute Σ t·q */
static void test_lut_from_src(void **st) {
    (void)st;
    const int types[3] = {TT_I2_S, TT_TQ2_0, TT_TQ1_0};
    const int64_t shapes[][2] = {{1, 256}, {3, 512}, {65, 768}, {7, 1024}, {130, 1280}, {64, 2560}, {5, 6912}, {2, 128}, {9, 384}};
    for (int ti = 0; ti < 3; ti++)
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
            int type = types[ti];
            int64_t R = shapes[si][0], C = shapes[si][1];
            if (C % (type == TT_I2_S ? 128 : 256)) continue;
            size_t sb = type_tensor_bytes(type, C, R), lb = lut_bytes(R, C);
            uint8_t *src = malloc(sb), *a = tern_calloc(lb), *b = tern_calloc(lb);
            for (size_t i = 0; i < sb; i++) src[i] = (uint8_t)rnd();
            if (type != TT_I2_S) {
                size_t bb = type == TT_TQ2_0 ? 66 : 54;
                for (int64_t k = 0; k < R * C / 256; k++) {
                    uint16_t d = k % 5 == 1 ? 0x0000 : k % 5 == 3 ? 0x8000 : 0x3c00;
                    memcpy(src + (size_t)k * bb + bb - 2, &d, 2);
                }
            }
            lut_from_src_old(type, src, R, C, 0, R, a);
            int64_t mid = R / 3;
            lut_from_src(type, src, C, 0, mid, b);
            lut_from_src(type, src, C, mid, R - mid, b);
            if (memcmp(a, b, lb)) {
                size_t i = 0;
                while (a[i] == b[i]) i++;
                print_error("lut_from_src %s %lld x %lld: byte %zu is %02x, trit path %02x\n", type_name(type),
                            (long long)R, (long long)C, i, b[i], a[i]);
                fail();
            }
            tern_free(a);
            tern_free(b);
            free(src);
        }
    /* semantics on well-formed data: packed from trits, repacked, the dot product is Σ t·q */
    int64_t R = 70, C = 2560;
    int8_t *t = malloc((size_t)(R * C));
    rand_trits(t, R * C);
    size_t sb = type_tensor_bytes(TT_TQ2_0, C, R);
    uint8_t *src = malloc(sb), *w = tern_calloc(lut_bytes(R, C));
    assert_int_equal(quant_pack_trits(TT_TQ2_0, t, R, C, 1.0f, src), 0);
    lut_from_src(TT_TQ2_0, src, C, 0, R, w);
    test_act_t ta;
    act_make(&ta, C, 2, 0);
    int32_t got[2 * 70];
    lut_dot_ref(w, R, 0, R, &ta.a, got);
    for (int tk = 0; tk < 2; tk++)
        for (int64_t r = 0; r < R; r++) {
            int32_t want = 0;
            for (int64_t c = 0; c < C; c++) want += t[r * C + c] * ta.q[tk * C + c];
            assert_int_equal(got[tk * R + r], want);
        }
    act_free(&ta);
    tern_free(w);
    free(src);
    free(t);
}

/* ---- mat -------------------------------------------------------------------------------- */

/* ternary tensor of `type` with random trits; TQ with per-block scales when nonuniform */
static uint8_t *make_tensor(int type, int64_t rows, int64_t cols, int nonuniform, size_t *nbytes) {
    *nbytes = type_tensor_bytes(type, cols, rows);
    uint8_t *p = tern_alloc(*nbytes);
    int8_t *t = malloc((size_t)(rows * cols));
    rand_trits(t, rows * cols);
    quant_pack_trits(type, t, rows, cols, 0.0371f, p);
    if (type == TT_I2_S) quant_i2s_tail(p + rows * cols / 4, 0.0371f);
    if (nonuniform && type != TT_I2_S) {
        size_t bb = type == TT_TQ2_0 ? 66 : 54;
        for (int64_t b = 0; b < rows * cols / 256; b++) {
            uint16_t d = f32_to_f16(0.01f + 0.001f * (float)(b % 7));
            memcpy(p + b * bb + bb - 2, &d, 2);
        }
    }
    free(t);
    return p;
}

static void mat_run(const mat_t *m, const float *x, int n, float *y, tpool_t *tp) {
    void *scratch = tern_alloc(mat_scratch_bytes(m, n));
    mat_mul(m, x, n, y, scratch, tp);
    tern_free(scratch);
}

/* y vs Σ dequant(W)·(q/s) in double, q from act_quant_ref */
static void check_vs_double(const mat_t *m, const void *data, const float *x, int n, const float *y) {
    int64_t rows = m->rows, cols = m->cols;
    float *wf = malloc((size_t)(rows * cols) * 4);
    int8_t *q = malloc((size_t)cols);
    assert_int_equal(dequant_rows(m->type, data, rows, cols, 0, rows, wf), 0);
    for (int t = 0; t < n; t++) {
        float s = act_quant_ref(x + t * cols, cols, q, NULL);
        for (int64_t r = 0; r < rows; r++) {
            double acc = 0, mag = 0;
            for (int64_t c = 0; c < cols; c++) {
                acc += (double)wf[r * cols + c] * q[c] / s;
                mag += fabs((double)wf[r * cols + c] * q[c] / s);
            }
            double got = y[t * rows + r];
            if (fabs(got - acc) > 1e-6 * mag + 1e-30) {
                print_error("%s rows %lld cols %lld n %d: y[%d][%lld] = %.9g, double %.9g\n", mat_kernel_name(m),
                            (long long)rows, (long long)cols, n, t, (long long)r, got, acc);
                fail();
            }
        }
    }
    free(wf);
    free(q);
}

static void test_mat_ternary(void **st) {
    (void)st;
    tpool_t *tp2 = tpool_new(2), *tp3 = tpool_new(3);
    const int types[3] = {TT_I2_S, TT_TQ2_0, TT_TQ1_0};
    const int64_t shapes[][2] = {{37, 512}, {64, 256}, {5, 1024}, {70, 768}, {33, 384}, {130, 640}};
    /* layouts: 0 auto, 1 the file's own (MAT_NO_REPACK), 2..4 TERN_KERNEL=lut3, tl4, rl32 */
    static const char *envs[5] = {"auto", "auto", "lut3", "tl4", "rl32"};
    for (int ti = 0; ti < 3; ti++)
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
            for (int lay = 0; lay < 5; lay++)
                for (int nonu = 0; nonu <= (types[ti] == TT_I2_S ? 0 : 1); nonu++) {
                    int64_t rows = shapes[si][0], cols = shapes[si][1];
                    if (types[ti] != TT_I2_S && cols % 256) continue;
                    int flags = lay == 1 ? MAT_NO_REPACK : 0;
                    setenv("TERN_KERNEL", envs[lay], 1);
                    size_t nbytes;
                    uint8_t *data = make_tensor(types[ti], rows, cols, nonu, &nbytes);
                    int n = 1 + (int)(si * 3 + (size_t)ti) % 9;
                    float *x = malloc((size_t)(n * cols) * 4);
                    for (int64_t i = 0; i < n * cols; i++) x[i] = frnd();
                    size_t yb = (size_t)(n * rows) * 4;
                    float *y0 = malloc(yb), *y1 = malloc(yb);
                    char err[128];
                    /* the reference ISA with no pool is the baseline */
                    isa_force(ISA_REF);
                    mat_t m;
                    assert_int_equal(mat_init(&m, types[ti], rows, cols, data, nbytes, flags, err, sizeof err), 0);
                    mat_run(&m, x, n, y0, NULL);
                    check_vs_double(&m, data, x, n, y0);
                    /* the layout asked for is the one made (TL needs cols % 256; TQ with non-uniform
                     * block scales keeps the file's layout) */
                    int repackable = types[ti] == TT_I2_S || !nonu;
                    if (lay == 2 && repackable) assert_non_null(strstr(mat_kernel_name(&m), "tern-lut3"));
                    if (lay == 3 && repackable && cols % 256 == 0) assert_non_null(strstr(mat_kernel_name(&m), "tern-tl4"));
                    if (lay == 1) assert_null(m.packed);
                    mat_free(&m);
                    /* exact integer sums and one epilogue: every I2_S layout gives the same y */
                    if (types[ti] == TT_I2_S && lay != 1) {
                        assert_int_equal(mat_init(&m, types[ti], rows, cols, data, nbytes, MAT_NO_REPACK, err, sizeof err), 0);
                        mat_run(&m, x, n, y1, NULL);
                        if (memcmp(y0, y1, yb)) {
                            print_error("layout %s (%lld x %lld) differs from the file's layout\n", envs[lay],
                                        (long long)rows, (long long)cols);
                            fail();
                        }
                        mat_free(&m);
                    }
                    for (int isa = 0; isa < ISA_COUNT; isa++) {
                        if (!isa_supported(isa)) continue;
                        isa_force(isa);
                        assert_int_equal(mat_init(&m, types[ti], rows, cols, data, nbytes, flags, err, sizeof err), 0);
                        tpool_t *pools[3] = {NULL, tp2, tp3};
                        for (int p = 0; p < 3; p++) {
                            memset(y1, 0xff, yb);
                            mat_run(&m, x, n, y1, pools[p]);
                            if (memcmp(y0, y1, yb)) {
                                print_error("%s threads %d layout %d nonuniform %d: y differs from ref/1 thread\n",
                                            mat_kernel_name(&m), tpool_size(pools[p]), lay, nonu);
                                fail();
                            }
                        }
                        mat_free(&m);
                    }
                    isa_force(isa_best());
                    free(x);
                    free(y0);
                    free(y1);
                    tern_free(data);
                }
    unsetenv("TERN_KERNEL");
    tpool_destroy(&tp2);
    tpool_destroy(&tp3);
}

/* which layout mat_init picks (the rule in mat.c): per ISA for I2_S and uniform TQ, restricted
 * by the column count; the file's layout for TQ with differing block scales or MAT_NO_REPACK;
 * TERN_KERNEL overrides the rule, and an unknown value is ignored */
static const char *choice(int type, int64_t rows, int64_t cols, int nonu, int isa, const char *env) {
    static char name[64];
    size_t nb;
    char err[128];
    mat_t m;
    uint8_t *d = make_tensor(type, rows, cols, nonu, &nb);
    if (env) setenv("TERN_KERNEL", env, 1);
    else unsetenv("TERN_KERNEL");
    isa_force(isa);
    assert_int_equal(mat_init(&m, type, rows, cols, d, nb, 0, err, sizeof err), 0);
    snprintf(name, sizeof name, "%s", mat_kernel_name(&m));
    mat_free(&m);
    tern_free(d);
    unsetenv("TERN_KERNEL");
    isa_force(isa_best());
    return name;
}

static void test_mat_choice(void **st) {
    (void)st;
    size_t nb;
    char err[128];
    mat_t m;
    uint8_t *d = make_tensor(TT_TQ2_0, 8, 512, 0, &nb);
    assert_int_equal(mat_init(&m, TT_TQ2_0, 8, 512, d, nb, MAT_NO_REPACK, err, sizeof err), 0);
    assert_non_null(strstr(mat_kernel_name(&m), "tq2_0"));
    assert_null(m.packed);
    mat_free(&m);
    tern_free(d);
    assert_non_null(strstr(choice(TT_TQ1_0, 8, 512, 1, ISA_REF, NULL), "tq1_0"));   /* differing scales */
    assert_non_null(strstr(choice(TT_TQ1_0, 8, 512, 1, ISA_REF, "lut3"), "tq1_0"));
    /* the rule per ISA */
    assert_string_equal(choice(TT_TQ2_0, 8, 512, 0, ISA_REF, NULL), "tern-tl4/ref");
    assert_string_equal(choice(TT_I2_S, 8, 384, 0, ISA_REF, NULL), "tern-lut3/ref");   /* cols % 256 */
    if (isa_supported(ISA_AVX2)) assert_string_equal(choice(TT_I2_S, 8, 512, 0, ISA_AVX2, NULL), "tern-tl4/avx2");
    if (isa_supported(ISA_AVX512)) {
        assert_string_equal(choice(TT_I2_S, 8, 512, 0, ISA_AVX512, NULL), "tern-rl32/avx512");
        assert_string_equal(choice(TT_I2_S, 8, 384, 0, ISA_AVX512, NULL), "tern-rl32/avx512");
        assert_string_equal(choice(TT_I2_S, 8, 512, 0, ISA_AVX512, "tl4"), "tern-tl4/avx512");
    }
    if (isa_supported(ISA_NEON))
        assert_string_equal(choice(TT_I2_S, 8, 512, 0, ISA_NEON, NULL),
                            isa_has_neon_dotprod() ? "tern-tl4/neon" : "tern-lut3/neon");
    /* overrides */
    assert_string_equal(choice(TT_I2_S, 8, 512, 0, ISA_REF, "lut3"), "tern-lut3/ref");
    assert_string_equal(choice(TT_I2_S, 8, 512, 0, ISA_REF, "native"), "i2_s/ref");
    assert_string_equal(choice(TT_I2_S, 8, 512, 0, ISA_REF, "rl32"), "tern-tl4/ref");   /* RL: VNNI only */
    assert_string_equal(choice(TT_I2_S, 8, 512, 0, ISA_REF, "bogus"), "tern-tl4/ref");
}

/* mat_fuse: Q|K|V-like parts (different scales, a short last part) in one matrix give exactly
 * the rows of separate calls, for 1 and several tokens and 1–3 threads; unfusable parts refused */
static void test_mat_fuse(void **st) {
    (void)st;
    const int64_t cols = 512, rows[3] = {64, 32, 42};
    const float scales[3] = {0.031f, 0.017f, 0.052f};
    uint8_t *data[3];
    mat_t parts[3], fused;
    char err[256];
    uint64_t rng = 12345;
    for (int p = 0; p < 3; p++) {
        int8_t *t = malloc((size_t)(rows[p] * cols));
        for (int64_t i = 0; i < rows[p] * cols; i++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            t[i] = (int8_t)((rng >> 33) % 3) - 1;
        }
        size_t bytes = type_tensor_bytes(TT_I2_S, cols, rows[p]);
        data[p] = malloc(bytes);
        assert_int_equal(quant_pack_trits(TT_I2_S, t, rows[p], cols, scales[p], data[p]), 0);
        quant_i2s_tail(data[p] + rows[p] * cols / 4, scales[p]);
        assert_int_equal(mat_init(&parts[p], TT_I2_S, rows[p], cols, data[p], bytes, 0, err, sizeof err), 0);
        free(t);
    }
    int rc = mat_fuse(&fused, parts, 3);
    const char *kn = mat_kernel_name(&parts[0]);
    if (!strstr(kn, "rl32") && !strstr(kn, "tl4")) {   /* only the row-tiled tern layouts fuse */
        assert_int_equal(rc, TERN_ENOTSUP);
        goto done;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(fused.rows, 138);
    for (int n = 1; n <= 5; n += 4)
        for (int th = 1; th <= 3; th++) {
            tpool_t *tp = tpool_new(th);
            float *x = malloc((size_t)(n * cols) * 4), *yf = malloc((size_t)(n * 138) * 4), *yp = malloc((size_t)(n * 64) * 4);
            for (int64_t i = 0; i < n * cols; i++) x[i] = sinf((float)i * 0.37f) * 3.0f;
            void *scr = tern_alloc(mat_scratch_bytes(&fused, n) + mat_scratch_bytes(&parts[0], n) + 4096);
            mat_mul(&fused, x, n, yf, scr, tp);
            int64_t r0 = 0;
            for (int p = 0; p < 3; p++) {
                mat_mul(&parts[p], x, n, yp, scr, tp);
                for (int t = 0; t < n; t++)
                    assert_memory_equal(yf + t * 138 + r0, yp + t * rows[p], (size_t)rows[p] * 4);
                r0 += rows[p];
            }
            tern_free(scr);
            free(x); free(yf); free(yp);
            tpool_destroy(&tp);
        }
    mat_free(&fused);
    /* a part whose rows are not whole tiles may only come last */
    mat_t bad[2] = {parts[2], parts[0]};
    assert_int_equal(mat_fuse(&fused, bad, 2), TERN_ENOTSUP);
done:
    for (int p = 0; p < 3; p++) { mat_free(&parts[p]); free(data[p]); }
}

static void test_mat_errors(void **st) {
    (void)st;
    char err[128] = "";
    mat_t m;
    uint8_t buf[1024] = {0};
    assert_true(mat_init(&m, TT_I2_S, 4, 128, buf, 100, 0, err, sizeof err) < 0);
    assert_non_null(strstr(err, "bytes"));
    assert_true(mat_init(&m, TT_TQ2_0, 1, 100, buf, 66, 0, err, sizeof err) < 0);
    assert_non_null(strstr(err, "multiple"));
    assert_true(mat_init(&m, 99, 1, 256, buf, 66, 0, err, sizeof err) < 0);
    assert_non_null(strstr(err, "unsupported"));
    assert_true(mat_init(&m, TT_I2_S, 0, 128, buf, 32, 0, err, sizeof err) < 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_i2s_layout),    cmocka_unit_test(test_tq2_layout),
        cmocka_unit_test(test_tq1_layout),    cmocka_unit_test(test_pack_roundtrip),
        cmocka_unit_test(test_from_f32),      cmocka_unit_test(test_act_quant),
        cmocka_unit_test(test_variants_odd),  cmocka_unit_test(test_variants_real),
        cmocka_unit_test(test_lut_exact),     cmocka_unit_test(test_from_i2s),
        cmocka_unit_test(test_tl_tiles),      cmocka_unit_test(test_lut_from_src),
        cmocka_unit_test(test_mat_ternary),   cmocka_unit_test(test_mat_choice),
        cmocka_unit_test(test_mat_errors),
        cmocka_unit_test(test_mat_fuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
