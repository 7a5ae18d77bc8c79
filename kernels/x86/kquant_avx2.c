/* kquant_avx2: Q4_K, Q5_K, Q6_K (and Q4_0, Q5_0) lm head rows with AVX2: maddubs(unsigned weight
 * values, int8 x) then madd with the sub-block scales gives the spec's per-block integers
 * exactly (no int16 saturation: |q| ≤ 63, |x| ≤ 127); the float steps are the spec's, in block
 * order, so the result is bit-identical to kquant_row_ref (kernels/kquant.h). Q4_0/Q5_0 follow
 * fmat's Q8_0 spec on their unpacked values (also used on AVX-512 CPUs). One row at a time, each
 * token against the row while it sits in L1. */
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

/* byte shuffles: 8 × scale 8h+2k, then 8 × scale 8h+2k+1 (value groups of 16 in a 32-value vector) */
static const uint8_t k_q6_shuf[2][4][16] = {
    {{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1}, {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
     {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5}, {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7}},
    {{8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9}, {10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
     {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13},
     {14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15}}};

/* Q6_K: a = Σ_i sc_i · Σ q·x − 32 · Σ_i sc_i · bsum_i */
INLINE int32_t q6k_block(const uint8_t *blk, const int8_t *x, const int16_t *bs) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    const __m128i s8 = _mm_loadu_si128((const __m128i *)(blk + 192));
    __m256i acc = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = blk + 64 * h, *qh = blk + 128 + 32 * h;
        const int8_t *xh = x + 128 * h;
        __m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
        __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
        __m256i q[4];
        q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4));
        q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4));
        q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4));
        q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                               _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4));
        for (int k = 0; k < 4; k++) {
            __m256i p = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256((const __m256i *)(xh + 32 * k)));
            __m256i sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s8, _mm_loadu_si128((const __m128i *)k_q6_shuf[h][k])));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc));
        }
    }
    __m256i corr = _mm256_madd_epi16(_mm256_cvtepi8_epi16(s8), _mm256_loadu_si256((const __m256i *)bs));
    return hsum8(_mm256_sub_epi32(acc, _mm256_slli_epi32(corr, 5)));   /* one reduction per block */
}

/* byte k of each 128-bit lane, zero-extended to every int16 lane */
INLINE __m256i bcast16(__m256i s, int k) { return _mm256_shuffle_epi8(s, _mm256_set1_epi16((short)(0x8000 | k))); }

/* Q4_K / Q5_K: a = Σ_j sc_j · Σ q·x, b = Σ_j m_j · Σ x */
INLINE void k45_block(const int Q5, const uint8_t *blk, const int8_t *x, const int16_t *bs, int32_t *a, int32_t *b) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    const uint8_t *qs = blk + (Q5 ? 48 : 16);
    const __m256i sm = _mm256_broadcastsi128_si256(k45_scales(blk + 4));
    __m256i hb = Q5 ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
    __m256i acc = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
        __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if (Q5) {   /* bit 2c of qh[l] is bit 4 of value 64c + l, bit 2c+1 of value 64c + 32 + l */
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4));
            hb = _mm256_srli_epi16(hb, 2);
        }
        __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(x + 64 * c)));
        __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 64 * c + 32)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(plo, bcast16(sm, 2 * c)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(phi, bcast16(sm, 2 * c + 1)));
    }
    *a = hsum8(acc);
    *b = k45_mins(sm, bs);
}

INLINE float krow(const int type, const uint8_t *row, int64_t cols, const uint8_t *xt) {
    const size_t bb = type == TT_Q6_K ? 210 : type == TT_Q5_K ? 176 : 144;
    const int8_t *xq = (const int8_t *)xt;
    const float *dx = (const float *)(xt + kquant_x_d_off(cols));
    const int16_t *bs = (const int16_t *)(xt + kquant_x_bs_off(cols));
    float acc = 0.0f;
    for (int64_t k = 0; k < cols / 256; k++) {
        const uint8_t *blk = row + (size_t)k * bb;
        int32_t a, b = 0;
        if (type == TT_Q6_K) a = q6k_block(blk, xq + 256 * k, bs + 16 * k);
        else k45_block(type == TT_Q5_K, blk, xq + 256 * k, bs + 16 * k, &a, &b);
        acc = kquant_block_acc(type, blk, dx[k], a, b, acc);
    }
    return acc;
}

/* ---- Q4_0 / Q5_0: fmat's Q8_0 spec with the unpacked values (fmat_isa.h) ---------------------- */

/* 32 bytes: 0xFF where bit i of qh is set */
INLINE __m256i bits_to_bytes(uint32_t qh) {
    const __m256i spread = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread);
    b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1));
}

/* the block's 32 values as int8 (kquant_unpack32) */
INLINE __m256i unpack32(const int type, const uint8_t *blk) {
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m128i qs = _mm_loadu_si128((const __m128i *)(blk + (type == TT_Q5_0 ? 6 : 2)));
    __m256i v = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), m4), _mm_and_si128(qs, m4));
    if (type == TT_Q4_0) return _mm256_sub_epi8(v, _mm256_set1_epi8(8));
    uint32_t qh;
    memcpy(&qh, blk + 2, 4);
    v = _mm256_or_si256(v, _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10)));
    return _mm256_sub_epi8(v, _mm256_set1_epi8(16));
}

/* one row · one Q8_0-quantised token: lanes k of even / odd blocks, folded as the spec says */
INLINE float q32row(const int type, const uint8_t *row, int64_t cols, const uint8_t *xt) {
    const size_t bb = type == TT_Q5_0 ? 22 : 18, dxo = fmat_q8_dx_off(cols);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < cols / 32; b++) {
        const uint8_t *blk = row + (size_t)b * bb;
        uint16_t dh;
        memcpy(&dh, blk, 2);
        __m256i wv = unpack32(type, blk);
        __m256i sx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(xt + b * 32)), wv);
        __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(wv), sx), ones);
        __m256 s = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(dh)), _mm256_loadu_ps((const float *)(xt + dxo) + b * 8));
        acc[b & 1] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(p), acc[b & 1]);
    }
    return fold8(_mm256_add_ps(acc[0], acc[1]));   /* l += l+8, then +4, +2, +1 */
}

INLINE void rows32(const int type, const fmat_job_t *j, int64_t r0, int64_t r1) {
    const size_t rb = type_row_bytes(type, j->cols), xs = fmat_q8_stride(j->cols);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)j->w + (size_t)r * rb;
        for (int t = 0; t < j->n; t++) j->y[(size_t)t * j->rows + r] = q32row(type, row, j->cols, j->xq + t * xs);
    }
}

/* ---- rows ---------------------------------------------------------------------------------- */

INLINE void rows(const int type, const fmat_job_t *j, int64_t r0, int64_t r1) {
    const size_t rb = type_row_bytes(type, j->cols), xs = kquant_x_stride(j->cols);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)j->w + (size_t)r * rb;
        for (int t = 0; t < j->n; t++) j->y[(size_t)t * j->rows + r] = krow(type, row, j->cols, j->xq + t * xs);
    }
}

void kquant_rows_avx2(const fmat_job_t *j, int64_t r0, int64_t r1) {
    switch (j->type) {
    case TT_Q4_K: rows(TT_Q4_K, j, r0, r1); break;
    case TT_Q5_K: rows(TT_Q5_K, j, r0, r1); break;
    case TT_Q6_K: rows(TT_Q6_K, j, r0, r1); break;
    case TT_Q4_0: rows32(TT_Q4_0, j, r0, r1); break;
    case TT_Q5_0: rows32(TT_Q5_0, j, r0, r1); break;
    default: break;
    }
}
