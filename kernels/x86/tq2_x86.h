/* tq2_x86: the TQ2_0 dot product body that tq2_avx2.c and tq2_avx512.c both build, each with its
 * own -m flags (dot4_codes is maddubs on AVX2, 256-bit vpdpbusd with VNNI). One exact int32 sum
 * per 256-block (Σ code·q − Σq of the block), equal to tq2_dot_ref. Not here: the f16 block
 * scales (mat.c). */
#ifndef TERN_TQ2_X86_H
#define TERN_TQ2_X86_H
#include "kernels/ternary.h"
#include "kernels/x86/simd_x86.h"

/* w: (rows, cols/256 blocks of 66 bytes) TQ2_0; isum (a->n, nr, cols/256) */
static inline __attribute__((always_inline)) void tq2_dot_x86(const void *w, int64_t r0, int64_t nr, const tact_t *a,
                                                              int32_t *isum) {
    const __m256i m3 = _mm256_set1_epi8(3);
    int64_t cols = a->cols, nb = cols / 256;
    for (int t = 0; t < a->n; t++) {
        for (int64_t r = 0; r < nr; r++) {
            const uint8_t *b = (const uint8_t *)w + (r0 + r) * nb * 66;
            for (int64_t k = 0; k < nb; k++, b += 66) {
                const int8_t *q = a->q + t * cols + 256 * k;
                __m256i acc = _mm256_setzero_si256();
                for (int h = 0; h < 2; h++, q += 128) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(b + 32 * h));
                    __m256i c[4] = {_mm256_and_si256(v, m3), _mm256_and_si256(_mm256_srli_epi16(v, 2), m3),
                                    _mm256_and_si256(_mm256_srli_epi16(v, 4), m3),
                                    _mm256_and_si256(_mm256_srli_epi16(v, 6), m3)};
                    __m256i qv[4] = {_mm256_loadu_si256((const __m256i *)q),
                                     _mm256_loadu_si256((const __m256i *)(q + 32)),
                                     _mm256_loadu_si256((const __m256i *)(q + 64)),
                                     _mm256_loadu_si256((const __m256i *)(q + 96))};
                    acc = dot4_codes(acc, c, qv);
                }
                isum[(t * nr + r) * nb + k] = hsum8(acc) - a->bsum[t * nb + k];
            }
        }
    }
}

#endif
