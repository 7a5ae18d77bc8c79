/* fmat_avx2: fmat rows with AVX2 + FMA + F16C (maddubs for Q8_0).
 * Follows the summation spec in kernels/fmat_isa.h exactly (bit-identical to fmat_rows_ref):
 * four ymm accumulators per token hold the 32 float lanes; Q8_0 keeps one ymm for even and one
 * for odd blocks. Tokens are processed in blocks (2 float, 4 Q8_0) per weight row, float types
 * in column chunks so that x stays in L1. */
#pragma GCC optimize("fp-contract=off") /* only the spec's multiply-adds are fused */
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "core/half.h"
#include "core/types.h"
#include "kernels/fmat_isa.h"
#include "kernels/x86/simd_x86.h"

#define INLINE static inline __attribute__((always_inline))

INLINE __m256 load_w(const int type, const void *row, int64_t c) {
    if (type == TT_F32) return _mm256_loadu_ps((const float *)row + c);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + c));
    if (type == TT_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INLINE float w_scalar(const int type, const void *row, int64_t c) {
    if (type == TT_F32) return ((const float *)row)[c];
    if (type == TT_F16) return f16_to_f32(((const uint16_t *)row)[c]);
    return bf16_to_f32(((const uint16_t *)row)[c]);
}

/* columns [c0, c1) of row · x[t*cols ..] for t < NT, accumulated into acc[t][32] in memory;
 * a tail shorter than 32 finishes the same lanes in scalar */
INLINE void frow(const int type, const int NT, const void *row, const float *x, int64_t cols,
                 int64_t c0, int64_t c1, float (*acc)[32]) {
    __m256 a[2][4];
#pragma GCC unroll 2
    for (int t = 0; t < NT; t++)
        for (int k = 0; k < 4; k++) a[t][k] = _mm256_load_ps(acc[t] + 8 * k);
    int64_t c = c0;
    for (; c + 32 <= c1; c += 32) {
        __m256 w0 = load_w(type, row, c), w1 = load_w(type, row, c + 8);
        __m256 w2 = load_w(type, row, c + 16), w3 = load_w(type, row, c + 24);
#pragma GCC unroll 2
        for (int t = 0; t < NT; t++) {
            const float *xt = x + t * cols + c;
            a[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xt), a[t][0]);
            a[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + 8), a[t][1]);
            a[t][2] = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xt + 16), a[t][2]);
            a[t][3] = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xt + 24), a[t][3]);
        }
    }
#pragma GCC unroll 2
    for (int t = 0; t < NT; t++) {
        for (int k = 0; k < 4; k++) _mm256_store_ps(acc[t] + 8 * k, a[t][k]);
        for (int64_t i = c; i < c1; i++)
            acc[t][i % 32] = fmaf(w_scalar(type, row, i), x[t * cols + i], acc[t][i % 32]);
    }
}

/* RB rows × NT tokens in column chunks: the tokens' x chunk (16 KiB) stays in L1 while the
 * weight rows pass over it; per (row, token) the lanes still run in increasing column order */
#define RB 8
INLINE void tile(const int type, const int NT, const uint8_t *w, size_t rb, int nr, const float *x,
                 int64_t cols, float *y, int64_t ys) {
    float acc[RB][2][32] __attribute__((aligned(32)));
    memset(acc, 0, sizeof acc);
    const int64_t cc = 4096 / NT / 32 * 32;
    for (int64_t c0 = 0; c0 < cols; c0 += cc) {
        int64_t c1 = c0 + cc < cols ? c0 + cc : cols;
        for (int r = 0; r < nr; r++) frow(type, NT, w + (size_t)r * rb, x, cols, c0, c1, acc[r]);
    }
    for (int r = 0; r < nr; r++)
        for (int t = 0; t < NT; t++) {
            const float *l = acc[r][t];
            __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_load_ps(l), _mm256_load_ps(l + 16)),
                                     _mm256_add_ps(_mm256_load_ps(l + 8), _mm256_load_ps(l + 24)));
            y[t * ys + r] = fold8(s);
        }
}

INLINE void rows_float(const int type, const fmat_job_t *j, int64_t r0, int64_t r1) {
    size_t rb = type_row_bytes(type, j->cols);
    for (int64_t b = r0; b < r1; b += RB) {
        const int nr = (int)(r1 - b < RB ? r1 - b : RB);
        const uint8_t *w = (const uint8_t *)j->w + (size_t)b * rb;
        for (int t = 0; t < j->n; t += 2) {
            const float *x = j->x + (size_t)t * j->cols;
            float *y = j->y + (size_t)t * j->rows + b;
            if (j->n - t == 1) tile(type, 1, w, rb, nr, x, j->cols, y, j->rows);
            else tile(type, 2, w, rb, nr, x, j->cols, y, j->rows);
        }
    }
}

/* Q8_0 row · NT quantised tokens: maddubs(|w|, sign(x, w)) then madd with ones gives the
 * spec's part[k] (4 products per int32 lane) exactly; |x| ≤ 127 so no int16 saturation. */
INLINE void qrow(const int NT, const uint8_t *row, const uint8_t *xq, size_t xs, int64_t cols,
                 float *y, int64_t ys) {
    const int64_t nb = cols / 32;
    const size_t dxo = fmat_q8_dx_off(cols);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = row + b * 34;
        uint16_t dh;
        memcpy(&dh, blk, 2);
        __m256i wv = _mm256_loadu_si256((const __m256i *)(blk + 2));
        __m256i aw = _mm256_abs_epi8(wv);
        __m256 dw = _mm256_set1_ps(_cvtsh_ss(dh));
        const int odd = (int)(b & 1);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const uint8_t *xt = xq + t * xs;
            __m256i sx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(xt + b * 32)), wv);
            __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
            __m256 s = _mm256_mul_ps(dw, _mm256_loadu_ps((const float *)(xt + dxo) + b * 8));
            acc[t][odd] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(p), acc[t][odd]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) y[t * ys] = fold8(_mm256_add_ps(acc[t][0], acc[t][1]));
}

#include "kernels/x86/fmat_x86.h"

void fmat_rows_avx2(const fmat_job_t *j, int64_t r0, int64_t r1) { fmat_rows_x86(j, r0, r1); }
