/* tern_rl_avx512: the RL layout (ternary.h) with AVX-512 VNNI. A 32-row tile is two zmm per 16
 * columns; each shift gives codes whose 32-bit lane j is 4 columns of row j, so one vpdpbusd
 * with 4 activation bytes broadcast (embedded {1to16}) adds 16 rows × 4 columns: GEMM tiles of
 * 32 rows × 12 tokens keep 24 accumulators busy with no horizontal sums; GEMV keeps one
 * accumulator per shift (8 chains). Σ code·q − Σq equals tern_rl_dot_ref exactly. */
#include "core/membw.h"
#include "kernels/ternary.h"
#include <immintrin.h>
#include <string.h>

static inline __m512i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* out[t*32 + i] = Σ code·q, rows i of the tile at wt, T ≤ 12 tokens (q row stride cols) */
static inline __attribute__((always_inline)) void tile(const uint8_t *wt, int64_t cols, const int8_t *q, int T,
                                                       int32_t *out) {
    const __m512i m3 = _mm512_set1_epi8(3);
    __m512i acc[2][12];
#pragma GCC unroll 12
    for (int t = 0; t < T; t++) acc[0][t] = acc[1][t] = _mm512_setzero_si512();
    for (int64_t c = 0; c < cols; c += 16, wt += 128) {
        _mm_prefetch((const char *)(wt + 1024), _MM_HINT_T0);
        _mm_prefetch((const char *)(wt + 1024 + 64), _MM_HINT_T0);
#pragma GCC unroll 4
        for (int s = 0; s < 4; s++) {
            __m512i w0 = _mm512_loadu_si512(wt), w1 = _mm512_loadu_si512(wt + 64);
            __m512i c0 = _mm512_and_si512(s == 3 ? w0 : _mm512_srli_epi16(w0, 6 - 2 * s), m3);
            __m512i c1 = _mm512_and_si512(s == 3 ? w1 : _mm512_srli_epi16(w1, 6 - 2 * s), m3);
#pragma GCC unroll 12
            for (int t = 0; t < T; t++) {
                __m512i x = bcast4(q + t * cols + c + 4 * s);
                acc[0][t] = _mm512_dpbusd_epi32(acc[0][t], c0, x);
                acc[1][t] = _mm512_dpbusd_epi32(acc[1][t], c1, x);
            }
        }
    }
#pragma GCC unroll 12
    for (int t = 0; t < T; t++) {
        _mm512_storeu_si512(out + 32 * t, acc[0][t]);
        _mm512_storeu_si512(out + 32 * t + 16, acc[1][t]);
    }
}

/* one token: an accumulator per (half, shift), 8 chains. The codes are not shifted down: lane
 * bytes w & (3 << 6−2s) are code·4^(3−s), so each accumulator holds 4^(3−s) × its sum and one
 * exact arithmetic shift at the end undoes it (one op per code vector instead of two). Bound:
 * |sum| ≤ 192·127·4 per step × cols/16 steps < 2³¹ for cols ≤ 65536 (the caller checks). */
static void tile1(const uint8_t *wt, int64_t cols, const int8_t *q, int32_t *out) {
    __m512i a[2][4], mk[4];
    for (int s = 0; s < 4; s++) {
        a[0][s] = a[1][s] = _mm512_setzero_si512();
        mk[s] = _mm512_set1_epi8((char)(3 << (6 - 2 * s)));
    }
    for (int64_t c = 0; c < cols; c += 16, wt += 128) {
        _mm_prefetch((const char *)(wt + TERN_PF_AHEAD), _MM_HINT_T0);
        _mm_prefetch((const char *)(wt + TERN_PF_AHEAD + 64), _MM_HINT_T0);
        __m512i w0 = _mm512_loadu_si512(wt), w1 = _mm512_loadu_si512(wt + 64);
#pragma GCC unroll 4
        for (int s = 0; s < 4; s++) {
            __m512i x = bcast4(q + c + 4 * s);
            a[0][s] = _mm512_dpbusd_epi32(a[0][s], _mm512_and_si512(w0, mk[s]), x);
            a[1][s] = _mm512_dpbusd_epi32(a[1][s], _mm512_and_si512(w1, mk[s]), x);
        }
    }
    for (int h = 0; h < 2; h++) {
        __m512i r = _mm512_add_epi32(_mm512_add_epi32(_mm512_srai_epi32(a[h][0], 6), _mm512_srai_epi32(a[h][1], 4)),
                                     _mm512_add_epi32(_mm512_srai_epi32(a[h][2], 2), a[h][3]));
        _mm512_storeu_si512(out + 16 * h, r);
    }
}

/* one token, any width: the plain shifted-code loop */
static void tile1_wide(const uint8_t *wt, int64_t cols, const int8_t *q, int32_t *out) { tile(wt, cols, q, 1, out); }

void tern_rl_dot_avx512(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t cols = a->cols;
    int32_t part[12 * 32];
    /* token tiles outer: a tile's activations (12 × cols bytes) stay in L1 while the weights stream */
    for (int t0 = 0; t0 < a->n; t0 += 12) {
        int T = a->n - t0 < 12 ? a->n - t0 : 12;
        const int8_t *q = a->q + t0 * cols;
        for (int64_t tl = r0 / RL_R; tl * RL_R < r0 + nr; tl++) {
            const uint8_t *wt = (const uint8_t *)w + (size_t)(tl * RL_R * cols / 4);
            switch (T) {
            case 1: cols <= 65536 ? tile1(wt, cols, q, part) : tile1_wide(wt, cols, q, part); break;
            case 2: tile(wt, cols, q, 2, part); break;
            case 3: tile(wt, cols, q, 3, part); break;
            case 4: tile(wt, cols, q, 4, part); break;
            case 5: tile(wt, cols, q, 5, part); break;
            case 6: tile(wt, cols, q, 6, part); break;
            case 7: tile(wt, cols, q, 7, part); break;
            case 8: tile(wt, cols, q, 8, part); break;
            case 9: tile(wt, cols, q, 9, part); break;
            case 10: tile(wt, cols, q, 10, part); break;
            case 11: tile(wt, cols, q, 11, part); break;
            default: tile(wt, cols, q, 12, part); break;
            }
            int64_t lo = tl * RL_R > r0 ? tl * RL_R : r0, hi = (tl + 1) * RL_R < r0 + nr ? (tl + 1) * RL_R : r0 + nr;
            for (int t = 0; t < T; t++)
                for (int64_t r = lo; r < hi; r++)
                    isum[(int64_t)(t0 + t) * nr + (r - r0)] = part[t * 32 + (r - tl * RL_R)] - a->sum[t0 + t];
        }
    }
}
