/* simd_x86: small helpers every AVX2 / AVX-512 kernel file uses. Header-only and static inline:
 * each kernels/x86 file is compiled with its own -m flags, so each gets its own copy built for
 * its ISA (a shared .c would be built for one ISA only). */
#ifndef TERN_SIMD_X86_H
#define TERN_SIMD_X86_H
#include <immintrin.h>
#include <stdint.h>

/* the sum of a vector's 8 int32 lanes */
static inline __attribute__((always_inline)) int32_t hsum8(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

#endif
