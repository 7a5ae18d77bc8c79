/* tern_tl_avx2: the TL layout (ternary.h) with AVX2: per 256-column chunk each row is two
 * 32-byte loads, four shifts each give codes in natural column order; vpmaddubsw into int16
 * (≤ 8·762 per lane per chunk, no overflow), widened once per chunk. Equals tern_tl_dot_ref. */
#include "kernels/ternary.h"
#include <immintrin.h>

static inline int32_t hsum8(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static inline __attribute__((always_inline)) void tile(const uint8_t *wg, int64_t cols, const int8_t *q, int T,
                                                       int32_t *out) {
    const __m256i m3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    __m256i acc[4][2];
    for (int i = 0; i < 4; i++)
        for (int t = 0; t < T; t++) acc[i][t] = _mm256_setzero_si256();
    for (int64_t k = 0; k < cols; k += 256, wg += 256) {
        __m256i s[4][2];
        for (int i = 0; i < 4; i++)
            for (int t = 0; t < T; t++) s[i][t] = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i w[4];
            for (int i = 0; i < 4; i++) w[i] = _mm256_loadu_si256((const __m256i *)(wg + 64 * i + 32 * h));
#pragma GCC unroll 4
            for (int g = 0; g < 4; g++) {
                __m256i c[4];
                for (int i = 0; i < 4; i++)
                    c[i] = _mm256_and_si256(g == 3 ? w[i] : _mm256_srli_epi16(w[i], 6 - 2 * g), m3);
                for (int t = 0; t < T; t++) {
                    __m256i x = _mm256_loadu_si256((const __m256i *)(q + t * cols + k + 64 * g + 32 * h));
                    for (int i = 0; i < 4; i++) s[i][t] = _mm256_add_epi16(s[i][t], _mm256_maddubs_epi16(c[i], x));
                }
            }
        }
        for (int i = 0; i < 4; i++)
            for (int t = 0; t < T; t++) acc[i][t] = _mm256_add_epi32(acc[i][t], _mm256_madd_epi16(s[i][t], ones));
    }
    for (int t = 0; t < T; t++)
        for (int i = 0; i < 4; i++) out[t * 4 + i] = hsum8(acc[i][t]);
}

void tern_tl_dot_avx2(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t cols = a->cols;
    int32_t part[4 * 2];
    for (int64_t g = r0 / 4; g * 4 < r0 + nr; g++) {
        const uint8_t *wg = (const uint8_t *)w + g * cols;
        for (int t0 = 0; t0 < a->n; t0 += 2) {
            int T = a->n - t0 < 2 ? a->n - t0 : 2;
            const int8_t *q = a->q + t0 * cols;
            if (T == 1) tile(wg, cols, q, 1, part);
            else tile(wg, cols, q, 2, part);
            for (int t = 0; t < T; t++)
                for (int i = 0; i < 4; i++) {
                    int64_t r = g * 4 + i;
                    if (r >= r0 && r < r0 + nr) isum[(t0 + t) * nr + (r - r0)] = part[t * 4 + i] - a->sum[t0 + t];
                }
        }
    }
}
