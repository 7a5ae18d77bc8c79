/* tern_tl_avx2: the TL layout (ternary.h) with AVX2: per 256-column chunk each row is two
 * 32-byte loads, four shifts each give codes in natural column order; vpmaddubsw into int16
 * (≤ 4·762 per lane, no overflow), widened every 128 columns. Equals tern_tl_dot_ref. */
#include "kernels/ternary.h"
#include <immintrin.h>

static inline int32_t hsum8(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* out[i] = Σ code·q for the 4 rows of group base wg and one token (16 ymm registers: 4 row
 * words, 4 int16 partials, 4 int32 sums, codes and activations) */
static void tile(const uint8_t *wg, int64_t cols, const int8_t *q, int32_t *out) {
    const __m256i m3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int64_t k = 0; k < cols; k += 256, wg += 256, q += 256) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const uint8_t *p = wg + 32 * h;
            __m256i w0 = _mm256_loadu_si256((const __m256i *)p), w1 = _mm256_loadu_si256((const __m256i *)(p + 64));
            __m256i w2 = _mm256_loadu_si256((const __m256i *)(p + 128)), w3 = _mm256_loadu_si256((const __m256i *)(p + 192));
            __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
#pragma GCC unroll 4
            for (int g = 0; g < 4; g++) {
                __m256i x = _mm256_loadu_si256((const __m256i *)(q + 64 * g + 32 * h));
                int sh = 6 - 2 * g;
                s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w0, sh), m3), x));
                s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w1, sh), m3), x));
                s2 = _mm256_add_epi16(s2, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w2, sh), m3), x));
                s3 = _mm256_add_epi16(s3, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w3, sh), m3), x));
            }
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(s0, ones));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(s1, ones));
            acc2 = _mm256_add_epi32(acc2, _mm256_madd_epi16(s2, ones));
            acc3 = _mm256_add_epi32(acc3, _mm256_madd_epi16(s3, ones));
        }
    }
    out[0] = hsum8(acc0);
    out[1] = hsum8(acc1);
    out[2] = hsum8(acc2);
    out[3] = hsum8(acc3);
}

void tern_tl_dot_avx2(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t cols = a->cols;
    int32_t part[4];
    for (int64_t g = r0 / 4; g * 4 < r0 + nr; g++) {
        const uint8_t *wg = (const uint8_t *)w + g * cols;
        for (int t = 0; t < a->n; t++) {
            tile(wg, cols, a->q + t * cols, part);
            for (int i = 0; i < 4; i++) {
                int64_t r = g * 4 + i;
                if (r >= r0 && r < r0 + nr) isum[t * nr + (r - r0)] = part[i] - a->sum[t];
            }
        }
    }
}
