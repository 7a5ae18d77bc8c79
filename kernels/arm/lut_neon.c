/* lut_neon: the tern-lut3 lookup-table kernel (lut.h) with NEON tbl, for every aarch64 core
 * (no dotprod needed): one vqtbl1q looks up 16 rows' partial sums for a group of 3 columns,
 * eor/sub applies the sign bits, and the lo and hi tables are widened into separate int16
 * sums, joined as lo + 16·hi in int32. Equals lut_dot_ref. */
#include "kernels/lut.h"
#include <arm_neon.h>

/* out[16] for rows 16c.. of the tile at wt, one token's tables tbl */
static void chunk(const uint8_t *wt, int64_t nblk, const int8_t *tbl, int32_t *out) {
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    int32x4_t a32[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
    int16x8_t lo16[2] = {vdupq_n_s16(0), vdupq_n_s16(0)}, hi16[2] = {vdupq_n_s16(0), vdupq_n_s16(0)};
    for (int64_t m = 0; m < nblk; m++, wt += LUT_BLK, tbl += LUT_TBL) {
        uint8x16_t s = vld1q_u8(wt);
        for (int p = 0; p < 4; p++) {
            uint8x16_t iv = vld1q_u8(wt + 64 + 64 * p);
            for (int h = 0; h < 2; h++) {
                int g = 2 * p + h;
                uint8x16_t idx = h ? vshrq_n_u8(iv, 4) : vandq_u8(iv, m4);
                int8x16_t neg = vreinterpretq_s8_u8(vtstq_u8(s, vdupq_n_u8((uint8_t)(1u << g))));
                int8x16_t lo = vqtbl1q_s8(vld1q_s8(tbl + 32 * g), idx), hi = vqtbl1q_s8(vld1q_s8(tbl + 32 * g + 16), idx);
                lo = vsubq_s8(veorq_s8(lo, neg), neg);   /* −x where neg = −1 */
                hi = vsubq_s8(veorq_s8(hi, neg), neg);
                lo16[0] = vaddw_s8(lo16[0], vget_low_s8(lo));
                lo16[1] = vaddw_high_s8(lo16[1], lo);
                hi16[0] = vaddw_s8(hi16[0], vget_low_s8(hi));
                hi16[1] = vaddw_high_s8(hi16[1], hi);
            }
        }
        if ((m & 63) == 63 || m == nblk - 1) {   /* ≤ 512 groups × 45 per int16 lane */
            for (int u = 0; u < 2; u++) {
                a32[2 * u] = vaddq_s32(vaddw_s16(a32[2 * u], vget_low_s16(lo16[u])), vshll_n_s16(vget_low_s16(hi16[u]), 4));
                a32[2 * u + 1] = vaddq_s32(vaddw_high_s16(a32[2 * u + 1], lo16[u]), vshll_high_n_s16(hi16[u], 4));
                lo16[u] = hi16[u] = vdupq_n_s16(0);
            }
        }
    }
    for (int v = 0; v < 4; v++) vst1q_s32(out + 4 * v, a32[v]);
}

void lut_dot_neon(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t nblk = lut_blocks(a->cols);
    size_t tb = lut_tbl_bytes(a->cols);
    int32_t part[16];
    for (int64_t c = r0 / 16; c * 16 < r0 + nr; c++) {   /* 16-row chunks; LUT_R = 64 = 4 chunks */
        const uint8_t *wt = (const uint8_t *)w + (size_t)(c / 4) * (size_t)nblk * LUT_BLK + 16 * (c % 4);
        int64_t lo = c * 16 > r0 ? c * 16 : r0, hi = (c + 1) * 16 < r0 + nr ? (c + 1) * 16 : r0 + nr;
        for (int t = 0; t < a->n; t++) {
            chunk(wt, nblk, a->lut + (size_t)t * tb, part);
            for (int64_t r = lo; r < hi; r++) isum[(int64_t)t * nr + (r - r0)] = part[r - c * 16];
        }
    }
}
