/* tq2_avx512: TQ2_0 dot product with AVX-512 VNNI (256-bit vpdpbusd): one exact int32 sum per 256-block
 * (Σ code·q − Σq of the block), equal to tq2_dot_ref. Not here: the f16 block scales (mat.c). */
#include "kernels/ternary.h"
#include <immintrin.h>
#include "kernels/x86/simd_x86.h"

void tq2_dot_avx512(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    const __m256i m3 = _mm256_set1_epi8(3);
    __attribute__((unused)) const __m256i ones = _mm256_set1_epi16(1);
    int64_t cols = a->cols, nb = cols / 256;
    for (int t = 0; t < a->n; t++) {
        for (int64_t r = 0; r < nr; r++) {
            const uint8_t *b = (const uint8_t *)w + (r0 + r) * nb * 66;
            for (int64_t k = 0; k < nb; k++, b += 66) {
                const int8_t *q = a->q + t * cols + 256 * k;
                __m256i acc = _mm256_setzero_si256();
                for (int h = 0; h < 2; h++, q += 128) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(b + 32 * h));
                    __m256i c0 = _mm256_and_si256(v, m3), c1 = _mm256_and_si256(_mm256_srli_epi16(v, 2), m3);
                    __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m3), c3 = _mm256_and_si256(_mm256_srli_epi16(v, 6), m3);
                    __m256i q0 = _mm256_loadu_si256((const __m256i *)q), q1 = _mm256_loadu_si256((const __m256i *)(q + 32));
                    __m256i q2 = _mm256_loadu_si256((const __m256i *)(q + 64)), q3 = _mm256_loadu_si256((const __m256i *)(q + 96));
                    acc = _mm256_dpbusd_epi32(acc, c0, q0);
                    acc = _mm256_dpbusd_epi32(acc, c1, q1);
                    acc = _mm256_dpbusd_epi32(acc, c2, q2);
                    acc = _mm256_dpbusd_epi32(acc, c3, q3);
                }
                isum[(t * nr + r) * nb + k] = hsum8(acc) - a->bsum[t * nb + k];
            }
        }
    }
}
