/* lut_avx512: the tern-lut3 lookup-table kernel (lut.h) with AVX-512BW: one vpshufb looks up 64
 * rows' partial sums for a group of 3 columns (the 16-byte table broadcast to four lanes), the
 * sign bits become a mask for a masked negate, and vpmaddubsw by (1, 16) joins the lo/hi
 * nibble tables into exact int16 sums, widened to int32 every 4 blocks. Equals lut_dot_ref. */
#include "kernels/lut.h"
#include <immintrin.h>

/* out[t][64] = Σ for the 64 rows of the tile at wt, T tokens (tables stride tb) */
static inline __attribute__((always_inline)) void tile(const uint8_t *wt, int64_t nblk, const int8_t *tbl,
                                                       size_t tb, int T, int32_t out[4][64]) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), c116 = _mm512_set1_epi16(0x1001), zero = _mm512_setzero_si512();
    __m512i a16[4][2], a32[4][4];
#pragma GCC unroll 4
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
        __m512i s = _mm512_loadu_si512(wt);
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            __m512i iv = _mm512_loadu_si512(wt + 64 + 64 * p);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                int g = 2 * p + h;
                __m512i idx = _mm512_and_si512(h ? _mm512_srli_epi16(iv, 4) : iv, m4);
                __mmask64 neg = _mm512_test_epi8_mask(s, _mm512_set1_epi8((char)(1 << g)));
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    const int8_t *tg = tbl + (size_t)t * tb + 32 * g;
                    __m512i lt = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)tg));
                    __m512i ht = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(tg + 16)));
                    __m512i lo = _mm512_shuffle_epi8(lt, idx), hi = _mm512_shuffle_epi8(ht, idx);
                    lo = _mm512_mask_sub_epi8(lo, neg, zero, lo);
                    hi = _mm512_mask_sub_epi8(hi, neg, zero, hi);
                    a16[t][0] = _mm512_add_epi16(a16[t][0], _mm512_maddubs_epi16(c116, _mm512_unpacklo_epi8(lo, hi)));
                    a16[t][1] = _mm512_add_epi16(a16[t][1], _mm512_maddubs_epi16(c116, _mm512_unpackhi_epi8(lo, hi)));
                }
            }
        }
        if ((m & 3) == 3 || m == nblk - 1) {   /* ≤ 32 groups × 381 per int16 lane */
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) {
                a32[t][0] = _mm512_add_epi32(a32[t][0], _mm512_cvtepi16_epi32(_mm512_castsi512_si256(a16[t][0])));
                a32[t][1] = _mm512_add_epi32(a32[t][1], _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(a16[t][0], 1)));
                a32[t][2] = _mm512_add_epi32(a32[t][2], _mm512_cvtepi16_epi32(_mm512_castsi512_si256(a16[t][1])));
                a32[t][3] = _mm512_add_epi32(a32[t][3], _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(a16[t][1], 1)));
                a16[t][0] = a16[t][1] = zero;
            }
        }
    }
    /* lane u of a32[v] is row (v&1)·32 + (v>>1)·8 + 16·(u/8) + u%8 (vpunpck works per 128-bit lane) */
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
        for (int v = 0; v < 4; v++) {
            int32_t tmp[16];
            _mm512_storeu_si512(tmp, a32[t][v]);
            for (int u = 0; u < 16; u++) out[t][(v & 1) * 32 + (v >> 1) * 8 + 16 * (u / 8) + u % 8] = tmp[u];
        }
}

void lut_dot_avx512(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t nblk = lut_blocks(a->cols);
    size_t tb = lut_tbl_bytes(a->cols);
    int32_t part[4][64];
    for (int64_t tl = r0 / LUT_R; tl * LUT_R < r0 + nr; tl++) {
        const uint8_t *wt = (const uint8_t *)w + (size_t)tl * (size_t)nblk * LUT_BLK;
        for (int t0 = 0; t0 < a->n; t0 += 4) {
            int T = a->n - t0 < 4 ? a->n - t0 : 4;
            const int8_t *tbl = a->lut + (size_t)t0 * tb;
            switch (T) {
            case 1: tile(wt, nblk, tbl, tb, 1, part); break;
            case 2: tile(wt, nblk, tbl, tb, 2, part); break;
            case 3: tile(wt, nblk, tbl, tb, 3, part); break;
            default: tile(wt, nblk, tbl, tb, 4, part); break;
            }
            int64_t lo = tl * LUT_R > r0 ? tl * LUT_R : r0, hi = (tl + 1) * LUT_R < r0 + nr ? (tl + 1) * LUT_R : r0 + nr;
            for (int t = 0; t < T; t++)
                for (int64_t r = lo; r < hi; r++) isum[(int64_t)(t0 + t) * nr + (r - r0)] = part[t][r - tl * LUT_R];
        }
    }
}
