/* kquant_avx512: K-quant (Q4_K, Q5_K, Q6_K) lm head rows with AVX-512BW + VNNI: 64 weight values
 * per maddubs (unsigned values × int8 x → int16 pairs, no saturation: |q| ≤ 63, |x| ≤ 127), then
 * vpdpwssd with the sub-block scales accumulates the spec's per-block integers exactly; the float
 * steps are the spec's, in block order, so the result is bit-identical to kquant_row_ref
 * (kernels/kquant.h). One row at a time, each token against the row while it sits in L1. */
#pragma GCC optimize("fp-contract=off") /* only the spec's multiply-adds are fused */
#include <immintrin.h>
#include "kernels/x86/kquant_x86.h"
#include <math.h>
#include <string.h>
#include "core/half.h"
#include "core/types.h"
#include "kernels/fmat_isa.h"
#include "kernels/kquant.h"

#define INLINE static inline __attribute__((always_inline))

/* int16 lane i of 64 values' scales: scale 4g + i / 8 of the 16 (g = 0..3: values 64g … 64g + 63) */
static const uint16_t k_q6_perm[4][32] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
    {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
    {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13,
     14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15}};

/* Q6_K: a = Σ_i sc_i · Σ q·x − 32 · Σ_i sc_i · bsum_i */
INLINE int32_t q6k_block(const uint8_t *blk, const int8_t *x, const int16_t *bs) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m3 = _mm512_set1_epi8(3);
    const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 192)));
    const __m512i s32 = _mm512_castsi256_si512(s16);   /* vpermw reads lanes 0..15 only */
    /* −32 · Σ sc_i · bsum_i, folded into the accumulator */
    __m512i acc = _mm512_zextsi256_si512(
        _mm256_sub_epi32(_mm256_setzero_si256(),
                         _mm256_slli_epi32(_mm256_madd_epi16(s16, _mm256_loadu_si256((const __m256i *)bs)), 5)));
    for (int h = 0; h < 2; h++) {
        __m512i L = _mm512_loadu_si512((const void *)(blk + 64 * h));   /* ql of values 0..31 | 32..63 */
        __m256i hb = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * h));
        __m512i H = _mm512_inserti64x4(_mm512_castsi256_si512(hb), _mm256_srli_epi16(hb, 2), 1);
        __m512i qa = _mm512_or_si512(_mm512_and_si512(L, m4), _mm512_slli_epi16(_mm512_and_si512(H, m3), 4));
        __m512i qb = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4),
                                     _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(H, 4), m3), 4));
        __m512i pa = _mm512_maddubs_epi16(qa, _mm512_loadu_si512((const void *)(x + 128 * h)));
        __m512i pb = _mm512_maddubs_epi16(qb, _mm512_loadu_si512((const void *)(x + 128 * h + 64)));
        __m512i sa = _mm512_permutexvar_epi16(_mm512_loadu_si512((const void *)k_q6_perm[2 * h]), s32);
        __m512i sb = _mm512_permutexvar_epi16(_mm512_loadu_si512((const void *)k_q6_perm[2 * h + 1]), s32);
        acc = _mm512_dpwssd_epi32(acc, pa, sa);
        acc = _mm512_dpwssd_epi32(acc, pb, sb);
    }
    return hsum16(acc);
}

/* Q4_K / Q5_K: a = Σ_j sc_j · Σ q·x, b = Σ_j m_j · Σ x; 64 values (sub-blocks 2c, 2c+1) per step */
INLINE void k45_block(const int Q5, const uint8_t *blk, const int8_t *x, const int16_t *bs, int32_t *a, int32_t *b) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const uint8_t *qs = blk + (Q5 ? 48 : 16);
    const __m128i s16 = k45_scales(blk + 4);
    const __m512i sm = _mm512_broadcast_i32x4(s16);
    __m256i hb = Q5 ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
    __m512i acc = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
        __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if (Q5) {   /* bit 2c of qh[l] is bit 4 of value 64c + l, bit 2c+1 of value 64c + 32 + l */
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4));
            hb = _mm256_srli_epi16(hb, 2);
        }
        __m512i qv = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        __m512i p = _mm512_maddubs_epi16(qv, _mm512_loadu_si512((const void *)(x + 64 * c)));
        /* int16 lanes 0..15 = scale 2c, 16..31 = scale 2c+1 (byte picked per 128-bit lane) */
        __m512i idx = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)(0x8000 | (2 * c)))),
                                         _mm256_set1_epi16((short)(0x8000 | (2 * c + 1))), 1);
        acc = _mm512_dpwssd_epi32(acc, p, _mm512_shuffle_epi8(sm, idx));
    }
    *a = hsum16(acc);
    *b = k45_mins(_mm256_broadcastsi128_si256(s16), bs);
}

INLINE float krow(const int type, const uint8_t *row, int64_t cols, const uint8_t *xt) {
    const size_t bb = type == TT_Q6_K ? 210 : type == TT_Q5_K ? 176 : 144;
    const int8_t *xq = (const int8_t *)xt;
    const float *dx = (const float *)(xt + kquant_x_d_off(cols));
    const int16_t *bs = (const int16_t *)(xt + kquant_x_bs_off(cols));
    float acc = 0.0f;
    for (int64_t k = 0; k < cols / 256; k++) {
        const uint8_t *blk = row + (size_t)k * bb;
        _mm_prefetch((const char *)blk + 1024, _MM_HINT_T0);
        int32_t a, b = 0;
        if (type == TT_Q6_K) a = q6k_block(blk, xq + 256 * k, bs + 16 * k);
        else k45_block(type == TT_Q5_K, blk, xq + 256 * k, bs + 16 * k, &a, &b);
        acc = kquant_block_acc(type, blk, dx[k], a, b, acc);
    }
    return acc;
}

INLINE void rows(const int type, const fmat_job_t *j, int64_t r0, int64_t r1) {
    const size_t rb = type_row_bytes(type, j->cols), xs = kquant_x_stride(j->cols);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)j->w + (size_t)r * rb;
        for (int t = 0; t < j->n; t++) j->y[(size_t)t * j->rows + r] = krow(type, row, j->cols, j->xq + t * xs);
    }
}

void kquant_rows_avx512(const fmat_job_t *j, int64_t r0, int64_t r1) {
    switch (j->type) {
    case TT_Q4_K: rows(TT_Q4_K, j, r0, r1); break;
    case TT_Q5_K: rows(TT_Q5_K, j, r0, r1); break;
    case TT_Q6_K: rows(TT_Q6_K, j, r0, r1); break;
    default: break;
    }
}
