/* kquant_neon: K-quant (Q4_K, Q5_K, Q6_K) lm head rows with NEON: per sub-block an exact int32 dot
 * (sdot where the CPU has dotprod, else widening multiplies: neon_dot.h; |q| ≤ 32, |x| ≤ 127, so
 * the int16 pair sums of the fallback cannot overflow), times its scale, summed; the float steps
 * are the spec's, in block order, so the result is bit-identical to kquant_row_ref
 * (kernels/kquant.h). Untested on real ARM hardware: qemu-user only. */
#pragma GCC optimize("fp-contract=off") /* only the spec's multiply-adds are fused */
#include <math.h>
#include <string.h>
#include "core/half.h"
#include "core/types.h"
#include "kernels/arm/neon_dot.h"
#include "kernels/dispatch.h"
#include "kernels/fmat_isa.h"
#include "kernels/kquant.h"

#define INLINE static inline __attribute__((always_inline))

/* Q6_K: a = Σ_i sc_i · Σ (q − 32)·x over 16-value sub-blocks i */
INLINE int32_t q6k_block(const uint8_t *blk, const int8_t *x, int dp) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m3 = vdupq_n_u8(3);
    const int8x16_t k32 = vdupq_n_s8(32);
    const int8_t *sc = (const int8_t *)(blk + 192);
    int32x4_t acc = vdupq_n_s32(0);
    for (int h = 0; h < 2; h++)
        for (int lc = 0; lc < 2; lc++) {   /* l = 16·lc … 16·lc + 15 */
            uint8x16_t l0 = vld1q_u8(blk + 64 * h + 16 * lc), l1 = vld1q_u8(blk + 64 * h + 32 + 16 * lc);
            uint8x16_t hb = vld1q_u8(blk + 128 + 32 * h + 16 * lc);
            uint8x16_t q[4];
            q[0] = vorrq_u8(vandq_u8(l0, m4), vshlq_n_u8(vandq_u8(hb, m3), 4));
            q[1] = vorrq_u8(vandq_u8(l1, m4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), m3), 4));
            q[2] = vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), m3), 4));
            q[3] = vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4));
            for (int k = 0; k < 4; k++) {
                int8x16_t qs = vsubq_s8(vreinterpretq_s8_u8(q[k]), k32);
                int32x4_t d = neon_dot16(vdupq_n_s32(0), qs, vld1q_s8(x + 128 * h + 32 * k + 16 * lc), dp);
                acc = vmlaq_n_s32(acc, d, sc[8 * h + 2 * k + lc]);
            }
        }
    return vaddvq_s32(acc);
}

/* Q4_K / Q5_K: a = Σ_j sc_j · Σ q·x, b = Σ_j m_j · Σ x over 32-value sub-blocks j */
INLINE void k45_block(const int Q5, const uint8_t *blk, const int8_t *x, const int16_t *bs, int dp, int32_t *a,
                      int32_t *b) {
    const uint8x16_t m4 = vdupq_n_u8(0x0F), k16 = vdupq_n_u8(0x10);
    const uint8_t *qs = blk + (Q5 ? 48 : 16);
    uint8_t sc[8], m[8];
    for (int j = 0; j < 8; j++) kquant_scale_min(j, blk + 4, &sc[j], &m[j]);
    int32x4_t acc = vdupq_n_s32(0);
    for (int c = 0; c < 4; c++) {
        int32x4_t dlo = vdupq_n_s32(0), dhi = vdupq_n_s32(0);
        for (int p = 0; p < 2; p++) {
            uint8x16_t q = vld1q_u8(qs + 32 * c + 16 * p);
            uint8x16_t lo = vandq_u8(q, m4), hi = vshrq_n_u8(q, 4);
            if (Q5) {
                uint8x16_t hb = vld1q_u8(blk + 16 + 16 * p);
                lo = vorrq_u8(lo, vandq_u8(vtstq_u8(hb, vdupq_n_u8((uint8_t)(1u << (2 * c)))), k16));
                hi = vorrq_u8(hi, vandq_u8(vtstq_u8(hb, vdupq_n_u8((uint8_t)(2u << (2 * c)))), k16));
            }
            dlo = neon_dot16(dlo, vreinterpretq_s8_u8(lo), vld1q_s8(x + 64 * c + 16 * p), dp);
            dhi = neon_dot16(dhi, vreinterpretq_s8_u8(hi), vld1q_s8(x + 64 * c + 32 + 16 * p), dp);
        }
        acc = vmlaq_n_s32(acc, dlo, sc[2 * c]);
        acc = vmlaq_n_s32(acc, dhi, sc[2 * c + 1]);
    }
    *a = vaddvq_s32(acc);
    int32_t s = 0;
    for (int j = 0; j < 8; j++) s += m[j] * (bs[2 * j] + bs[2 * j + 1]);
    *b = s;
}

INLINE float krow(const int type, const uint8_t *row, int64_t cols, const uint8_t *xt, int dp) {
    const size_t bb = type == TT_Q6_K ? 210 : type == TT_Q5_K ? 176 : 144;
    const int8_t *xq = (const int8_t *)xt;
    const float *dx = (const float *)(xt + kquant_x_d_off(cols));
    const int16_t *bs = (const int16_t *)(xt + kquant_x_bs_off(cols));
    float acc = 0.0f;
    for (int64_t k = 0; k < cols / 256; k++) {
        const uint8_t *blk = row + (size_t)k * bb;
        int32_t a, b = 0;
        if (type == TT_Q6_K) a = q6k_block(blk, xq + 256 * k, dp);
        else k45_block(type == TT_Q5_K, blk, xq + 256 * k, bs + 16 * k, dp, &a, &b);
        acc = kquant_block_acc(type, blk, dx[k], a, b, acc);
    }
    return acc;
}

INLINE void rows(const int type, const fmat_job_t *j, int64_t r0, int64_t r1) {
    const size_t rb = type_row_bytes(type, j->cols), xs = kquant_x_stride(j->cols);
    const int dp = isa_has_neon_dotprod();
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)j->w + (size_t)r * rb;
        for (int t = 0; t < j->n; t++) j->y[(size_t)t * j->rows + r] = krow(type, row, j->cols, j->xq + t * xs, dp);
    }
}

void kquant_rows_neon(const fmat_job_t *j, int64_t r0, int64_t r1) {
    switch (j->type) {
    case TT_Q4_K: rows(TT_Q4_K, j, r0, r1); break;
    case TT_Q5_K: rows(TT_Q5_K, j, r0, r1); break;
    case TT_Q6_K: rows(TT_Q6_K, j, r0, r1); break;
    default: break;
    }
}
