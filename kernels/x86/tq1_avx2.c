/* tq1_avx2: TQ1_0 dot product with AVX2. Base-3 digits come out of each byte as
 * ((u8)(b·3ⁿ)·3) >> 8, done with 16-bit multiplies on even and odd bytes separately; then
 * vpmaddubsw on codes 0..2 minus the block's Σq. Equals tq1_dot_ref. Not here: scales (mat.c). */
#include "kernels/ternary.h"
#include <immintrin.h>
#include "kernels/x86/simd_x86.h"

/* codes (0..2) of the bytes of v, digit chosen per 16-bit word by multiplier p (a power of 3) */
static inline __m256i digits(__m256i v, __m256i p) {
    const __m256i lo = _mm256_set1_epi16(0x00ff), hi = _mm256_set1_epi16((short)0xff00), three = _mm256_set1_epi16(3);
    __m256i e = _mm256_mullo_epi16(v, p);                               /* low byte = (u8)(b_even·p) */
    __m256i o = _mm256_mullo_epi16(_mm256_and_si256(v, hi), p);        /* high byte = (u8)(b_odd·p) */
    __m256i de = _mm256_mulhi_epu16(_mm256_slli_epi16(e, 8), three);   /* (q·3) >> 8 */
    __m256i dd = _mm256_mulhi_epu16(_mm256_and_si256(o, hi), three);
    return _mm256_or_si256(_mm256_and_si256(de, lo), _mm256_slli_epi16(dd, 8));
}

static inline __m256i dot32(__m256i c, __m256i q) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(c, q), _mm256_set1_epi16(1));
}

void tq1_dot_avx2(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    static const short pw[5] = {1, 3, 9, 27, 81};
    int64_t cols = a->cols, nb = cols / 256;
    /* qs[32..47] broadcast to both lanes: lane 0 gives digit 2i, lane 1 digit 2i+1 */
    const __m256i p01 = _mm256_setr_epi16(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i p23 = _mm256_setr_epi16(9, 9, 9, 9, 9, 9, 9, 9, 27, 27, 27, 27, 27, 27, 27, 27);
    const __m256i p4 = _mm256_set1_epi16(81);
    /* qh[0..3] repeated: byte 4n+j holds qh[j], word (4n+j)/2 multiplies by 3ⁿ */
    const __m256i ph = _mm256_setr_epi16(1, 1, 3, 3, 9, 9, 27, 27, 1, 1, 1, 1, 1, 1, 1, 1);
    for (int t = 0; t < a->n; t++) {
        for (int64_t r = 0; r < nr; r++) {
            const uint8_t *b = (const uint8_t *)w + (r0 + r) * nb * 54;
            for (int64_t k = 0; k < nb; k++, b += 54) {
                const int8_t *q = a->q + t * cols + 256 * k;
                __m256i acc = _mm256_setzero_si256();
                __m256i v = _mm256_loadu_si256((const __m256i *)b);
                for (int n = 0; n < 5; n++)
                    acc = _mm256_add_epi32(acc, dot32(digits(v, _mm256_set1_epi16(pw[n])),
                                                      _mm256_loadu_si256((const __m256i *)(q + 32 * n))));
                __m256i v16 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b + 32)));
                acc = _mm256_add_epi32(acc, dot32(digits(v16, p01), _mm256_loadu_si256((const __m256i *)(q + 160))));
                acc = _mm256_add_epi32(acc, dot32(digits(v16, p23), _mm256_loadu_si256((const __m256i *)(q + 192))));
                __m256i q4 = _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(q + 224)));
                acc = _mm256_add_epi32(acc, dot32(digits(v16, p4), q4));
                int32_t h;
                __builtin_memcpy(&h, b + 48, 4);
                __m256i vh = _mm256_set1_epi32(h);
                __m256i qh = _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)(q + 240)));
                acc = _mm256_add_epi32(acc, dot32(digits(vh, ph), qh));
                isum[(t * nr + r) * nb + k] = hsum8(acc) - a->bsum[t * nb + k];
            }
        }
    }
}
