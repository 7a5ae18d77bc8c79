/* simd_x86: small helpers every AVX2 / AVX-512 kernel file uses. Header-only and static inline:
 * each kernels/x86 file is compiled with its own -m flags, so each gets its own copy built for
 * its ISA (a shared .c would be built for one ISA only). Helpers that need AVX-512 (or pick
 * VNNI) look at the __AVX512*__ macros those flags define. */
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

/* the sum of 8 float lanes in the specs' order: l += l+4, +2, +1 */
static inline __attribute__((always_inline)) float fold8(__m256 s) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* acc + Σ_k c[k]·q[k] in 4-product int32 lanes: unsigned c ≤ 3 (2-bit codes) × int8 q, exact
 * either way (vpdpbusd; or maddubs, whose int16 sums of 4 pairs stay ≤ 4·2·3·127 < 32767) */
static inline __attribute__((always_inline)) __m256i dot4_codes(__m256i acc, const __m256i c[4], const __m256i q[4]) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    acc = _mm256_dpbusd_epi32(acc, c[0], q[0]);
    acc = _mm256_dpbusd_epi32(acc, c[1], q[1]);
    acc = _mm256_dpbusd_epi32(acc, c[2], q[2]);
    return _mm256_dpbusd_epi32(acc, c[3], q[3]);
#else
    __m256i s = _mm256_add_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(c[0], q[0]), _mm256_maddubs_epi16(c[1], q[1])),
                                 _mm256_add_epi16(_mm256_maddubs_epi16(c[2], q[2]), _mm256_maddubs_epi16(c[3], q[3])));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(s, _mm256_set1_epi16(1)));
#endif
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
/* the sum of 16 float lanes in the specs' order: l += l+8, +4, +2, +1 */
static inline __attribute__((always_inline)) float fold16(__m512 a) {
    return fold8(_mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1)));
}

/* the sum of 16 int32 lanes */
static inline __attribute__((always_inline)) int32_t hsum16(__m512i v) {
    return hsum8(_mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)));
}
#endif

#endif
