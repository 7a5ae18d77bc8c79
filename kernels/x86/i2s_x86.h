/* i2s_x86: the I2_S dot product body that i2s_avx2.c and i2s_avx512.c both build, each with its
 * own -m flags (dot4_codes is maddubs on AVX2, 256-bit vpdpbusd with VNNI): codes 0..2 · q minus
 * Σq, four rows sharing each activation load. Integer result equals i2s_dot_ref exactly. Not
 * here: scales (mat.c). */
#ifndef TERN_I2S_X86_H
#define TERN_I2S_X86_H
#include "kernels/ternary.h"
#include "kernels/x86/simd_x86.h"

/* R rows starting at w (row stride rs bytes) · one token q: out[i] = Σ code·q */
static inline __attribute__((always_inline)) void i2s_rows_dot(const uint8_t *w, int64_t rs, int64_t cols,
                                                               const int8_t *q, int R, int32_t *out) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int64_t k = 0; k < cols; k += 128) {
        __m256i qv[4] = {_mm256_loadu_si256((const __m256i *)(q + k)), _mm256_loadu_si256((const __m256i *)(q + k + 32)),
                         _mm256_loadu_si256((const __m256i *)(q + k + 64)),
                         _mm256_loadu_si256((const __m256i *)(q + k + 96))};
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(w + i * rs + k / 4));
            __m256i c[4] = {_mm256_and_si256(_mm256_srli_epi16(v, 6), m3), _mm256_and_si256(_mm256_srli_epi16(v, 4), m3),
                            _mm256_and_si256(_mm256_srli_epi16(v, 2), m3), _mm256_and_si256(v, m3)};
            acc[i] = dot4_codes(acc[i], c, qv);
        }
    }
    for (int i = 0; i < R; i++) out[i] = hsum8(acc[i]);
}

/* w: (rows, cols/4) I2_S, 4 codes a byte; isum (a->n, nr) */
static inline __attribute__((always_inline)) void i2s_dot_x86(const void *w, int64_t r0, int64_t nr, const tact_t *a,
                                                              int32_t *isum) {
    int64_t cols = a->cols, rs = cols / 4;
    const uint8_t *base = (const uint8_t *)w + r0 * rs;
    for (int t = 0; t < a->n; t++) {
        const int8_t *q = a->q + t * cols;
        int32_t *o = isum + t * nr;
        int64_t r = 0;
        for (; r + 4 <= nr; r += 4) i2s_rows_dot(base + r * rs, rs, cols, q, 4, o + r);
        for (; r < nr; r++) i2s_rows_dot(base + r * rs, rs, cols, q, 1, o + r);
        for (r = 0; r < nr; r++) o[r] -= a->sum[t];
    }
}

#endif
