/* neon_dot: the one int8 dot step the NEON ternary kernels share: sdot (vdotq_s32) where the
 * CPU has dotprod, else widening multiply + pairwise add. Both give the same exact int32 sums. */
#ifndef TERN_NEON_DOT_H
#define TERN_NEON_DOT_H
#include <arm_neon.h>

/* acc + per-lane-quad Σ c·q; c codes 0..3, q int8 (products fit int16 even summed twice) */
static inline __attribute__((always_inline)) int32x4_t neon_dot16(int32x4_t acc, int8x16_t c, int8x16_t q, int dp) {
    if (dp) return vdotq_s32(acc, c, q);
    int16x8_t p = vmull_s8(vget_low_s8(c), vget_low_s8(q));
    p = vmlal_s8(p, vget_high_s8(c), vget_high_s8(q));
    return vpadalq_s16(acc, p);
}

#endif
