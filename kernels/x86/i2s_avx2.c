/* i2s_avx2: I2_S dot product with AVX2 (vpmaddubsw on codes 0..2, minus Σq), four rows share
 * each activation load. Integer result equals i2s_dot_ref exactly. Not here: scales (mat.c). */
#include "kernels/ternary.h"
#include <immintrin.h>
#include "kernels/x86/simd_x86.h"

/* R rows starting at w (row stride rs bytes) · one token q: out[i] = Σ code·q */
static inline __attribute__((always_inline)) void rows_dot(const uint8_t *w, int64_t rs, int64_t cols,
                                                           const int8_t *q, int R, int32_t *out) {
    const __m256i m3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int64_t k = 0; k < cols; k += 128) {
        __m256i q0 = _mm256_loadu_si256((const __m256i *)(q + k)), q1 = _mm256_loadu_si256((const __m256i *)(q + k + 32));
        __m256i q2 = _mm256_loadu_si256((const __m256i *)(q + k + 64)), q3 = _mm256_loadu_si256((const __m256i *)(q + k + 96));
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(w + i * rs + k / 4));
            __m256i c0 = _mm256_and_si256(_mm256_srli_epi16(v, 6), m3), c1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m3);
            __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(v, 2), m3), c3 = _mm256_and_si256(v, m3);
            __m256i s = _mm256_add_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(c0, q0), _mm256_maddubs_epi16(c1, q1)),
                                         _mm256_add_epi16(_mm256_maddubs_epi16(c2, q2), _mm256_maddubs_epi16(c3, q3)));
            acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(s, ones));
        }
    }
    for (int i = 0; i < R; i++) out[i] = hsum8(acc[i]);
}

void i2s_dot_avx2(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t cols = a->cols, rs = cols / 4;
    const uint8_t *base = (const uint8_t *)w + r0 * rs;
    for (int t = 0; t < a->n; t++) {
        const int8_t *q = a->q + t * cols;
        int32_t *o = isum + t * nr;
        int64_t r = 0;
        for (; r + 4 <= nr; r += 4) rows_dot(base + r * rs, rs, cols, q, 4, o + r);
        for (; r < nr; r++) rows_dot(base + r * rs, rs, cols, q, 1, o + r);
        for (r = 0; r < nr; r++) o[r] -= a->sum[t];
    }
}
