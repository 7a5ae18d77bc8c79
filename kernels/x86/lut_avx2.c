/* lut_avx2: the tern-lut3 lookup-table kernel (lut.h) with AVX2, the path for CPUs without VNNI:
 * a 64-row tile is two 32-row halves; vpshufb looks up 32 rows per group of 3 columns, vpsignb
 * applies the sign bits, vpmaddubsw by (1, 16) joins the lo/hi tables into exact int16 sums,
 * widened every 4 blocks. Also builds the activation tables, two groups per 256-bit op.
 * Both equal their _ref (lut.c) exactly. */
#include "kernels/lut.h"
#include <immintrin.h>
#include <string.h>

/* out[t][32] for rows 32h.. of the tile at wt, T tokens */
static inline __attribute__((always_inline)) void half(const uint8_t *wt, int64_t nblk, const int8_t *tbl,
                                                       size_t tb, int T, int32_t out[2][32]) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), c116 = _mm256_set1_epi16(0x1001), one = _mm256_set1_epi8(1);
    const __m256i zero = _mm256_setzero_si256();
    __m256i a16[2][2], a32[2][4];
#pragma GCC unroll 2
    for (int t = 0; t < T; t++) {
        a16[t][0] = a16[t][1] = zero;
        a32[t][0] = a32[t][1] = a32[t][2] = a32[t][3] = zero;
    }
    for (int64_t m = 0; m < nblk; m++, wt += LUT_BLK, tbl += LUT_TBL) {
        _mm_prefetch((const char *)(wt + 4 * LUT_BLK), _MM_HINT_T0);
        _mm_prefetch((const char *)(wt + 4 * LUT_BLK + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(wt + 4 * LUT_BLK + 128), _MM_HINT_T0);
        _mm_prefetch((const char *)(wt + 4 * LUT_BLK + 192), _MM_HINT_T0);
        _mm_prefetch((const char *)(wt + 4 * LUT_BLK + 256), _MM_HINT_T0);
        __m256i s = _mm256_loadu_si256((const __m256i *)wt);
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            __m256i iv = _mm256_loadu_si256((const __m256i *)(wt + 64 + 64 * p));
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                int g = 2 * p + h;
                __m256i idx = _mm256_and_si256(h ? _mm256_srli_epi16(iv, 4) : iv, m4);
                /* bit g of each byte to its sign bit (16-bit shifts keep each byte's own bit 7), | 1 */
                __m256i sel = _mm256_or_si256(_mm256_sll_epi16(s, _mm_cvtsi32_si128(7 - g)), one);
#pragma GCC unroll 2
                for (int t = 0; t < T; t++) {
                    const int8_t *tg = tbl + (size_t)t * tb + 32 * g;
                    __m256i lt = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)tg));
                    __m256i ht = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(tg + 16)));
                    __m256i lo = _mm256_sign_epi8(_mm256_shuffle_epi8(lt, idx), sel);
                    __m256i hi = _mm256_sign_epi8(_mm256_shuffle_epi8(ht, idx), sel);
                    a16[t][0] = _mm256_add_epi16(a16[t][0], _mm256_maddubs_epi16(c116, _mm256_unpacklo_epi8(lo, hi)));
                    a16[t][1] = _mm256_add_epi16(a16[t][1], _mm256_maddubs_epi16(c116, _mm256_unpackhi_epi8(lo, hi)));
                }
            }
        }
        if ((m & 3) == 3 || m == nblk - 1) {   /* ≤ 32 groups × 381 per int16 lane */
#pragma GCC unroll 2
            for (int t = 0; t < T; t++) {
                a32[t][0] = _mm256_add_epi32(a32[t][0], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a16[t][0])));
                a32[t][1] = _mm256_add_epi32(a32[t][1], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a16[t][0], 1)));
                a32[t][2] = _mm256_add_epi32(a32[t][2], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(a16[t][1])));
                a32[t][3] = _mm256_add_epi32(a32[t][3], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(a16[t][1], 1)));
                a16[t][0] = a16[t][1] = zero;
            }
        }
    }
    /* lane u of a32[v] is row (v&1)·16 + (v>>1)·8 + u (vpunpck works per 128-bit lane) */
#pragma GCC unroll 2
    for (int t = 0; t < T; t++)
        for (int v = 0; v < 4; v++)
            _mm256_storeu_si256((__m256i *)&out[t][(v & 1) * 16 + (v >> 1) * 8], a32[t][v]);
}

void lut_dot_avx2(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t nblk = lut_blocks(a->cols);
    size_t tb = lut_tbl_bytes(a->cols);
    int32_t part[2][32];
    for (int64_t tl = r0 / LUT_R; tl * LUT_R < r0 + nr; tl++) {
        const uint8_t *wt = (const uint8_t *)w + (size_t)tl * (size_t)nblk * LUT_BLK;
        int64_t lo = tl * LUT_R > r0 ? tl * LUT_R : r0, hi = (tl + 1) * LUT_R < r0 + nr ? (tl + 1) * LUT_R : r0 + nr;
        for (int hf = 0; hf < 2; hf++) {
            int64_t hlo = tl * LUT_R + 32 * hf, hhi = hlo + 32;
            if (hhi <= lo || hlo >= hi) continue;   /* no wanted row in this half */
            for (int t0 = 0; t0 < a->n; t0 += 2) {
                int T = a->n - t0 < 2 ? a->n - t0 : 2;
                const int8_t *tbl = a->lut + (size_t)t0 * tb;
                if (T == 1) half(wt + 32 * hf, nblk, tbl, tb, 1, part);
                else half(wt + 32 * hf, nblk, tbl, tb, 2, part);
                for (int t = 0; t < T; t++)
                    for (int64_t r = hlo > lo ? hlo : lo; r < (hhi < hi ? hhi : hi); r++)
                        isum[(int64_t)(t0 + t) * nr + (r - r0)] = part[t][r - hlo];
            }
        }
    }
}

/* ---- tables ------------------------------------------------------------------------------ */

/* trit d of entry j (entry j = the trits of n = 13 + j, base 3, minus 1; 14 and 15 are zero) */
static const int8_t k_dig[3][16] = {
    {0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0},
    {0, 0, 1, 1, 1, -1, -1, -1, 0, 0, 0, 1, 1, 1, 0, 0},
    {0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, -1, 0, 1, 0, 0},
};

/* groups g and g+1 from 16 bytes at x (x[0..5] their columns): 64 table bytes at o */
static inline void pair(const int8_t *x, __m256i d0, __m256i d1, __m256i d2, int8_t *o) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), e8 = _mm256_set1_epi8(8);
    const __m256i b0 = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
                                        3, 3, 3, 3, 3);
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x));
    __m256i vl = _mm256_and_si256(v, m4);
    __m256i vh = _mm256_sub_epi8(_mm256_xor_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), e8), e8);
    __m256i i0 = b0, i1 = _mm256_add_epi8(b0, _mm256_set1_epi8(1)), i2 = _mm256_add_epi8(b0, _mm256_set1_epi8(2));
    __m256i lo = _mm256_add_epi8(_mm256_add_epi8(_mm256_sign_epi8(_mm256_shuffle_epi8(vl, i0), d0),
                                                 _mm256_sign_epi8(_mm256_shuffle_epi8(vl, i1), d1)),
                                 _mm256_sign_epi8(_mm256_shuffle_epi8(vl, i2), d2));
    __m256i hi = _mm256_add_epi8(_mm256_add_epi8(_mm256_sign_epi8(_mm256_shuffle_epi8(vh, i0), d0),
                                                 _mm256_sign_epi8(_mm256_shuffle_epi8(vh, i1), d1)),
                                 _mm256_sign_epi8(_mm256_shuffle_epi8(vh, i2), d2));
    _mm256_storeu_si256((__m256i *)o, _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256((__m256i *)(o + 32), _mm256_permute2x128_si256(lo, hi, 0x31));
}

void lut_tables_avx2(const int8_t *q, int64_t cols, int8_t *tbl) {
    __m256i d0 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)k_dig[0]));
    __m256i d1 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)k_dig[1]));
    __m256i d2 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)k_dig[2]));
    int64_t ng = lut_blocks(cols) * 8, g = 0;
    for (; g + 2 <= ng && 3 * g + 16 <= cols; g += 2) pair(q + 3 * g, d0, d1, d2, tbl + 32 * g);
    int8_t tmp[32];
    for (; g < ng; g += 2) {   /* tail: columns past cols read as 0 */
        memset(tmp, 0, sizeof tmp);
        for (int i = 0; i < 6 && 3 * g + i < cols; i++) tmp[i] = q[3 * g + i];
        pair(tmp, d0, d1, d2, tbl + 32 * g);
    }
}
