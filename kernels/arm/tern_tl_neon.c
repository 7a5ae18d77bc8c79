/* tern_tl_neon: the TL layout (ternary.h) with NEON: four rows of a group share each
 * activation load; 16-byte loads, four shifts give codes in natural column order. Equals
 * tern_tl_dot_ref. Not here: scales (mat.c). */
#include "kernels/arm/neon_dot.h"
#include "kernels/dispatch.h"
#include "kernels/ternary.h"

static inline __attribute__((always_inline)) void tile(const uint8_t *wg, int64_t cols, const int8_t *q, int dp,
                                                       int32_t *out) {
    const uint8x16_t m3 = vdupq_n_u8(3);
    int32x4_t acc[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
    for (int64_t k = 0; k < cols; k += 256, wg += 256, q += 256)
        for (int p = 0; p < 4; p++) {
            int8x16_t x0 = vld1q_s8(q + 16 * p), x1 = vld1q_s8(q + 64 + 16 * p);
            int8x16_t x2 = vld1q_s8(q + 128 + 16 * p), x3 = vld1q_s8(q + 192 + 16 * p);
            for (int i = 0; i < 4; i++) {
                uint8x16_t v = vld1q_u8(wg + 64 * i + 16 * p);
                acc[i] = neon_dot16(acc[i], vreinterpretq_s8_u8(vshrq_n_u8(v, 6)), x0, dp);
                acc[i] = neon_dot16(acc[i], vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 4), m3)), x1, dp);
                acc[i] = neon_dot16(acc[i], vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2), m3)), x2, dp);
                acc[i] = neon_dot16(acc[i], vreinterpretq_s8_u8(vandq_u8(v, m3)), x3, dp);
            }
        }
    for (int i = 0; i < 4; i++) out[i] = vaddvq_s32(acc[i]);
}

void tern_tl_dot_neon(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int dp = isa_has_neon_dotprod();
    int64_t cols = a->cols;
    int32_t part[4];
    for (int64_t g = r0 / 4; g * 4 < r0 + nr; g++) {
        const uint8_t *wg = (const uint8_t *)w + g * cols;
        for (int t = 0; t < a->n; t++) {
            if (dp) tile(wg, cols, a->q + t * cols, 1, part);
            else tile(wg, cols, a->q + t * cols, 0, part);
            for (int i = 0; i < 4; i++) {
                int64_t r = g * 4 + i;
                if (r >= r0 && r < r0 + nr) isum[t * nr + (r - r0)] = part[i] - a->sum[t];
            }
        }
    }
}
