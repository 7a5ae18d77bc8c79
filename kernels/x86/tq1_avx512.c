/* tq1_avx512: TQ1_0 dot product with AVX-512 (BW + VNNI): two rows share each 512-bit register
 * (row r in the low 256 bits, row r+1 in the high), so the base-3 digit extraction — the costly
 * part — runs once per two rows, and vpdpbusd against the activations broadcast to both halves
 * replaces vpmaddubsw + vpmaddwd. Digits as tq1_avx2: ((u8)(b·3ⁿ)·3) >> 8. Equals tq1_dot_ref. */
#include "kernels/ternary.h"
#include <immintrin.h>
#include "kernels/x86/simd_x86.h"
#include <string.h>

/* codes (0..2) of the bytes of v, digit chosen per 16-bit word by multiplier p (a power of 3) */
static inline __m512i digits(__m512i v, __m512i p) {
    const __m512i lo = _mm512_set1_epi16(0x00ff), hi = _mm512_set1_epi16((short)0xff00), three = _mm512_set1_epi16(3);
    __m512i e = _mm512_mullo_epi16(v, p);
    __m512i o = _mm512_mullo_epi16(_mm512_and_si512(v, hi), p);
    __m512i de = _mm512_mulhi_epu16(_mm512_slli_epi16(e, 8), three);
    __m512i dd = _mm512_mulhi_epu16(_mm512_and_si512(o, hi), three);
    return _mm512_or_si512(_mm512_and_si512(de, lo), _mm512_slli_epi16(dd, 8));
}

static inline __m512i two(__m256i a, __m256i b) { return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1); }
static inline __m512i bq(const int8_t *q) { return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)q)); }

/* block sums Σ code·q of block b0 (row r) in the low half, b1 (row r+1) in the high half */
static inline __m512i block2(const uint8_t *b0, const uint8_t *b1, const int8_t *q) {
    static const short pw[5] = {1, 3, 9, 27, 81};
    const __m512i p01 = _mm512_broadcast_i64x4(_mm256_setr_epi16(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m512i p23 = _mm512_broadcast_i64x4(_mm256_setr_epi16(9, 9, 9, 9, 9, 9, 9, 9, 27, 27, 27, 27, 27, 27, 27, 27));
    const __m512i p4 = _mm512_set1_epi16(81);
    const __m512i ph = _mm512_broadcast_i64x4(_mm256_setr_epi16(1, 1, 3, 3, 9, 9, 27, 27, 1, 1, 1, 1, 1, 1, 1, 1));
    __m512i acc = _mm512_setzero_si512();
    __m512i v = two(_mm256_loadu_si256((const __m256i *)b0), _mm256_loadu_si256((const __m256i *)b1));
#pragma GCC unroll 5
    for (int n = 0; n < 5; n++) acc = _mm512_dpbusd_epi32(acc, digits(v, _mm512_set1_epi16(pw[n])), bq(q + 32 * n));
    __m512i v16 = two(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b0 + 32))),
                      _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b1 + 32))));
    acc = _mm512_dpbusd_epi32(acc, digits(v16, p01), bq(q + 160));
    acc = _mm512_dpbusd_epi32(acc, digits(v16, p23), bq(q + 192));
    __m512i q4 = _mm512_broadcast_i64x4(_mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(q + 224))));
    acc = _mm512_dpbusd_epi32(acc, digits(v16, p4), q4);
    int32_t h0, h1;
    memcpy(&h0, b0 + 48, 4);
    memcpy(&h1, b1 + 48, 4);
    __m512i vh = two(_mm256_set1_epi32(h0), _mm256_set1_epi32(h1));
    __m512i qh = _mm512_broadcast_i64x4(_mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(q + 240))));
    return _mm512_dpbusd_epi32(acc, digits(vh, ph), qh);
}

void tq1_dot_avx512(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t cols = a->cols, nb = cols / 256;
    for (int t = 0; t < a->n; t++)
        for (int64_t r = 0; r < nr; r += 2) {
            const uint8_t *b0 = (const uint8_t *)w + (r0 + r) * nb * 54;
            const uint8_t *b1 = r + 1 < nr ? b0 + nb * 54 : b0;   /* odd tail: row r twice */
            for (int64_t k = 0; k < nb; k++, b0 += 54, b1 += 54) {
                __m512i acc = block2(b0, b1, a->q + t * cols + 256 * k);
                int32_t bs = a->bsum[t * nb + k];
                isum[(t * nr + r) * nb + k] = hsum8(_mm512_castsi512_si256(acc)) - bs;
                if (r + 1 < nr) isum[(t * nr + r + 1) * nb + k] = hsum8(_mm512_extracti64x4_epi64(acc, 1)) - bs;
            }
        }
}
