/* kquant_x86: the Q4_K / Q5_K scale unpacking that kquant_avx2.c and kquant_avx512.c share
 * (static inline: each file builds it with its own -m flags). Not here: the block products,
 * whose widths differ (maddubs + madd on ymm, vpdpwssd on zmm). */
#ifndef TERN_KQUANT_X86_H
#define TERN_KQUANT_X86_H
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include "kernels/x86/simd_x86.h"

/* Q4_K / Q5_K scales[12] → 8 scales (bytes 0..7) and 8 mins (bytes 8..15), four at a time */
static inline __attribute__((always_inline)) __m128i k45_scales(const uint8_t *s12) {
    uint32_t u[4];
    memcpy(u, s12, 12);
    u[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    uint32_t m03 = u[1] & 0x3f3f3f3fu;
    u[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    u[2] = m03;
    u[0] &= 0x3f3f3f3fu;
    return _mm_loadu_si128((const __m128i *)u);
}

/* Σ_j m_j · Σ_{32 values} xq: sm = k45_scales in both 128-bit lanes, bs the block's 16 sums of
 * 16 x values; int16 lane i (of 16) takes m[i / 2] */
static inline __attribute__((always_inline)) int32_t k45_mins(__m256i sm, const int16_t *bs) {
    const __m256i mi = _mm256_setr_epi8(8, -128, 8, -128, 9, -128, 9, -128, 10, -128, 10, -128, 11, -128, 11, -128,
                                        12, -128, 12, -128, 13, -128, 13, -128, 14, -128, 14, -128, 15, -128, 15, -128);
    return hsum8(_mm256_madd_epi16(_mm256_shuffle_epi8(sm, mi), _mm256_loadu_si256((const __m256i *)bs)));
}

#endif
