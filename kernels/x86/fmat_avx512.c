/* fmat_avx512: fmat rows with AVX-512 (F16C converts, FMA, VNNI vpdpbusd for Q8_0).
 * Follows the summation spec in kernels/fmat_isa.h exactly (bit-identical to fmat_rows_ref):
 * two zmm accumulators per token hold the 32 float lanes; Q8_0 packs two blocks per zmm.
 * Tokens are processed in blocks of up to 4 per weight row, so a row read from memory once
 * serves every token (batched decode is then compute-, not bandwidth-bound). */
#pragma GCC optimize("fp-contract=off") /* only the spec's multiply-adds are fused */
#include <immintrin.h>
#include <string.h>
#include "core/membw.h"
#include "core/types.h"
#include "kernels/fmat_isa.h"
#include "kernels/x86/simd_x86.h"

#define INLINE static inline __attribute__((always_inline))

/* 16 weights from column c, lanes outside mask m are 0 */
INLINE __m512 load_w(const int type, const void *row, int64_t c, __mmask16 m) {
    if (type == TT_F32) return _mm512_maskz_loadu_ps(m, (const float *)row + c);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + c);
    if (type == TT_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* columns [c0, c1) of NR rows (row, row + rb) · x[t*cols ..] for t < NT, accumulated into
 * acc[r][t][32] in memory. NR·NT·2 zmm accumulators: two rows share each x load. */
INLINE void frow(const int type, const int NR, const int NT, const uint8_t *row, size_t rb,
                 const float *x, int64_t cols, int64_t c0, int64_t c1, float (*acc)[4][32]) {
    __m512 a0[2][4], a1[2][4];
#pragma GCC unroll 2
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++)
            a0[r][t] = _mm512_load_ps(acc[r][t]), a1[r][t] = _mm512_load_ps(acc[r][t] + 16);
    int64_t c = c0;
    const int es = type == TT_F32 ? 4 : 2;
    for (; c + 32 <= c1; c += 32) {
        __m512 w0[2], w1[2];
#pragma GCC unroll 2
        for (int r = 0; r < NR; r++) {
            /* rows follow each other in memory: TERN_PF_AHEAD bytes ahead is this row's or the next's */
            const char *pf = (const char *)row + r * rb + c * es + TERN_PF_AHEAD;
            _mm_prefetch(pf, _MM_HINT_T0);
            if (es == 4) _mm_prefetch(pf + 64, _MM_HINT_T0);
            w0[r] = load_w(type, row + r * rb, c, 0xffff), w1[r] = load_w(type, row + r * rb, c + 16, 0xffff);
        }
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const float *xt = x + t * cols + c;
            __m512 x0 = _mm512_loadu_ps(xt), x1 = _mm512_loadu_ps(xt + 16);
#pragma GCC unroll 2
            for (int r = 0; r < NR; r++) {
                a0[r][t] = _mm512_fmadd_ps(w0[r], x0, a0[r][t]);
                a1[r][t] = _mm512_fmadd_ps(w1[r], x1, a1[r][t]);
            }
        }
    }
    if (c < c1) { /* masked lanes add fma(0, 0, acc) = acc: accumulators are never -0 */
        int64_t left = c1 - c;
        __mmask16 m0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
        __mmask16 m1 = left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
#pragma GCC unroll 2
        for (int r = 0; r < NR; r++) {
            __m512 w0 = load_w(type, row + r * rb, c, m0), w1 = load_w(type, row + r * rb, c + 16, m1);
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                const float *xt = x + t * cols + c;
                a0[r][t] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m0, xt), a0[r][t]);
                a1[r][t] = _mm512_fmadd_ps(w1, _mm512_maskz_loadu_ps(m1, xt + 16), a1[r][t]);
            }
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++)
            _mm512_store_ps(acc[r][t], a0[r][t]), _mm512_store_ps(acc[r][t] + 16, a1[r][t]);
}

/* RB rows × NT tokens, walked in column chunks so that the NT tokens' x chunk (16 KiB) stays in
 * L1 while the RB weight rows (read from memory once, then from L2) pass over it. Per (row,
 * token) the lanes still accumulate in increasing column order: the spec's result. */
#define RB 8
INLINE void tile(const int type, const int NT, const uint8_t *w, size_t rb, int nr, const float *x,
                 int64_t cols, float *y, int64_t ys) {
    float acc[RB][4][32] __attribute__((aligned(64)));
    memset(acc, 0, sizeof acc);
    const int64_t cc = 4096 / NT / 32 * 32; /* whole 32-lane groups per chunk */
    for (int64_t c0 = 0; c0 < cols; c0 += cc) {
        int64_t c1 = c0 + cc < cols ? c0 + cc : cols;
        int r = 0;
        for (; NT > 1 && r + 2 <= nr; r += 2) frow(type, 2, NT, w + (size_t)r * rb, rb, x, cols, c0, c1, acc + r);
        for (; r < nr; r++) frow(type, 1, NT, w + (size_t)r * rb, rb, x, cols, c0, c1, acc + r);
    }
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++)
            y[t * ys + r] = fold16(_mm512_add_ps(_mm512_load_ps(acc[r][t]), _mm512_load_ps(acc[r][t] + 16)));
}

INLINE void rows_float(const int type, const fmat_job_t *j, int64_t r0, int64_t r1) {
    size_t rb = type_row_bytes(type, j->cols);
    for (int64_t b = r0; b < r1; b += RB) {
        const int nr = (int)(r1 - b < RB ? r1 - b : RB);
        const uint8_t *w = (const uint8_t *)j->w + (size_t)b * rb;
        for (int t = 0; t < j->n; t += 4) {
            const float *x = j->x + (size_t)t * j->cols;
            float *y = j->y + (size_t)t * j->rows + b;
            switch (j->n - t) {
            case 1: tile(type, 1, w, rb, nr, x, j->cols, y, j->rows); break;
            case 2: tile(type, 2, w, rb, nr, x, j->cols, y, j->rows); break;
            case 3: tile(type, 3, w, rb, nr, x, j->cols, y, j->rows); break;
            default: tile(type, 4, w, rb, nr, x, j->cols, y, j->rows); break;
            }
        }
    }
}

/* Q8_0 row · NT quantised tokens. vpdpbusd wants unsigned × signed bytes: with xu = x + 128,
 * Σ xu·w − 128·Σ w = Σ x·w exactly (int32), per lane of 4 products as the spec's part[k]. */
INLINE void qrow(const int NT, const uint8_t *row, const uint8_t *xq, size_t xs, int64_t cols,
                 float *y, int64_t ys) {
    const int64_t nb = cols / 32;
    const size_t dxo = fmat_q8_dx_off(cols);
    const __m512i k80 = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    __m512 acc[4];
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b += 2) {
        const uint8_t *b0 = row + b * 34, *b1 = b0 + 34;
        _mm_prefetch((const char *)b0 + TERN_PF_AHEAD, _MM_HINT_T0);
        _mm_prefetch((const char *)b0 + TERN_PF_AHEAD + 64, _MM_HINT_T0);
        const int pair = b + 1 < nb;
        uint16_t d0, d1 = 0;
        memcpy(&d0, b0, 2);
        __m512i wv;
        if (pair) {
            memcpy(&d1, b1, 2);
            wv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2))),
                                    _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1);
        } else {
            wv = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 2)));
        }
        const __mmask64 mx = pair ? ~(__mmask64)0 : 0xffffffffull;
        const __mmask16 md = pair ? 0xffff : 0x00ff;
        __m512 dw = _mm512_cvtph_ps(_mm256_set_m128i(_mm_set1_epi16((short)d1), _mm_set1_epi16((short)d0)));
        __m512i corr = _mm512_dpbusd_epi32(zero, k80, wv);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const uint8_t *xt = xq + t * xs;
            __m512i xu = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mx, xt + b * 32), k80);
            __m512i p = _mm512_sub_epi32(_mm512_dpbusd_epi32(zero, xu, wv), corr);
            __m512 s = _mm512_mul_ps(dw, _mm512_maskz_loadu_ps(md, (const float *)(xt + dxo) + b * 8));
            acc[t] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(p), acc[t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) y[t * ys] = fold16(acc[t]);
}

#include "kernels/x86/fmat_x86.h"

void fmat_rows_avx512(const fmat_job_t *j, int64_t r0, int64_t r1) { fmat_rows_x86(j, r0, r1); }
