/* tern_tl_avx512: the TL layout (ternary.h) with AVX-512 VNNI: each 256-column chunk of a
 * 4-row group is four 64-byte loads; every shift gives 64 codes in natural column order, so one
 * activation load feeds four vpdpbusd (four rows), and a GEMM tile of 4 rows × T ≤ 6 tokens reuses
 * each unpacked code register T times. Σ code·q − Σq equals tern_tl_dot_ref exactly. */
#include "core/membw.h"
#include "kernels/ternary.h"
#include <immintrin.h>
#include <string.h>

/* the four row sums of a0..a3 as one 128-bit vector (a transposing reduction: 13 ops instead
 * of four full horizontal sums) */
static inline __m128i sum4(__m512i a0, __m512i a1, __m512i a2, __m512i a3) {
    __m512i x01 = _mm512_add_epi32(_mm512_unpacklo_epi32(a0, a1), _mm512_unpackhi_epi32(a0, a1));
    __m512i x23 = _mm512_add_epi32(_mm512_unpacklo_epi32(a2, a3), _mm512_unpackhi_epi32(a2, a3));
    __m512i y = _mm512_add_epi32(_mm512_unpacklo_epi64(x01, x23), _mm512_unpackhi_epi64(x01, x23));
    __m256i z = _mm256_add_epi32(_mm512_castsi512_si256(y), _mm512_extracti64x4_epi64(y, 1));
    return _mm_add_epi32(_mm256_castsi256_si128(z), _mm256_extracti128_si256(z, 1));
}

/* out[t*TL_R + i] = Σ code·q for the 4 rows of group base wg and T ≤ 6 tokens (q row stride
 * cols). 4 × T accumulators; the row words are reloaded from L1 for each shift so 24
 * accumulators, 4 code registers and the activation fit the 32 zmm registers. */
static inline __attribute__((always_inline)) void tile(const uint8_t *wg, int64_t cols, const int8_t *q, int T,
                                                       int32_t *out) {
    const __m512i m3 = _mm512_set1_epi8(3);
    __m512i acc[4][6];
    #pragma GCC unroll 16
    for (int i = 0; i < 4; i++)
        #pragma GCC unroll 16
        for (int t = 0; t < T; t++) acc[i][t] = _mm512_setzero_si512();
    for (int64_t k = 0; k < cols; k += 256, wg += 256) {
        _mm_prefetch((const char *)(wg + TERN_PF_AHEAD), _MM_HINT_T0);
        _mm_prefetch((const char *)(wg + TERN_PF_AHEAD + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(wg + TERN_PF_AHEAD + 128), _MM_HINT_T0);
        _mm_prefetch((const char *)(wg + TERN_PF_AHEAD + 192), _MM_HINT_T0);
        #pragma GCC unroll 16
        for (int g = 0; g < 4; g++) {
            __m512i c[4];
            #pragma GCC unroll 16
            for (int i = 0; i < 4; i++) {
                __m512i w = _mm512_loadu_si512(wg + 64 * i);
                c[i] = _mm512_and_si512(g == 3 ? w : _mm512_srli_epi16(w, 6 - 2 * g), m3);
            }
            #pragma GCC unroll 16
            for (int t = 0; t < T; t++) {
                __m512i x = _mm512_loadu_si512(q + t * cols + k + 64 * g);
                #pragma GCC unroll 16
                for (int i = 0; i < 4; i++) acc[i][t] = _mm512_dpbusd_epi32(acc[i][t], c[i], x);
            }
        }
    }
    #pragma GCC unroll 16
    for (int t = 0; t < T; t++) _mm_storeu_si128((__m128i *)(out + 4 * t), sum4(acc[0][t], acc[1][t], acc[2][t], acc[3][t]));
}

void tern_tl_dot_avx512(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t cols = a->cols;
    int32_t part[4 * 6];
    /* token tiles outer: a tile's activations (6 × cols bytes) stay in L1 while the rows' weights
     * stream past them (sequential, prefetched) */
    for (int t0 = 0; t0 < a->n; t0 += 6) {
        int T = a->n - t0 < 6 ? a->n - t0 : 6;
        const int8_t *q = a->q + t0 * cols;
        for (int64_t g = r0 / 4; g * 4 < r0 + nr; g++) {
            const uint8_t *wg = (const uint8_t *)w + g * cols;   /* 4 rows × cols/4 bytes per group */
            switch (T) {
            case 1: tile(wg, cols, q, 1, part); break;
            case 2: tile(wg, cols, q, 2, part); break;
            case 3: tile(wg, cols, q, 3, part); break;
            case 4: tile(wg, cols, q, 4, part); break;
            case 5: tile(wg, cols, q, 5, part); break;
            default: tile(wg, cols, q, 6, part); break;
            }
            for (int t = 0; t < T; t++)
                for (int i = 0; i < 4; i++) {
                    int64_t r = g * 4 + i;
                    if (r >= r0 && r < r0 + nr) isum[(t0 + t) * nr + (r - r0)] = part[t * 4 + i] - a->sum[t0 + t];
                }
        }
    }
}
