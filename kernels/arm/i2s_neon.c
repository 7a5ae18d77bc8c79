/* i2s_neon: I2_S dot product with NEON (sdot when the CPU has dotprod): codes 0..2 per shift,
 * Σ code·q − Σq per row, equal to i2s_dot_ref. Not here: scales (mat.c). */
#include "kernels/arm/neon_dot.h"
#include "kernels/dispatch.h"
#include "kernels/ternary.h"

static inline __attribute__((always_inline)) int32_t row_dot(const uint8_t *b, const int8_t *q, int64_t cols, int dp) {
    const uint8x16_t m3 = vdupq_n_u8(3);
    int32x4_t acc = vdupq_n_s32(0);
    for (int64_t k = 0; k < cols; k += 128, b += 32, q += 128) {
        uint8x16_t v0 = vld1q_u8(b), v1 = vld1q_u8(b + 16);
        acc = neon_dot16(acc, vreinterpretq_s8_u8(vshrq_n_u8(v0, 6)), vld1q_s8(q), dp);
        acc = neon_dot16(acc, vreinterpretq_s8_u8(vshrq_n_u8(v1, 6)), vld1q_s8(q + 16), dp);
        acc = neon_dot16(acc, vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v0, 4), m3)), vld1q_s8(q + 32), dp);
        acc = neon_dot16(acc, vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v1, 4), m3)), vld1q_s8(q + 48), dp);
        acc = neon_dot16(acc, vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v0, 2), m3)), vld1q_s8(q + 64), dp);
        acc = neon_dot16(acc, vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v1, 2), m3)), vld1q_s8(q + 80), dp);
        acc = neon_dot16(acc, vreinterpretq_s8_u8(vandq_u8(v0, m3)), vld1q_s8(q + 96), dp);
        acc = neon_dot16(acc, vreinterpretq_s8_u8(vandq_u8(v1, m3)), vld1q_s8(q + 112), dp);
    }
    return vaddvq_s32(acc);
}

void i2s_dot_neon(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int dp = isa_has_neon_dotprod();
    int64_t cols = a->cols;
    for (int t = 0; t < a->n; t++)
        for (int64_t r = 0; r < nr; r++) {
            const uint8_t *b = (const uint8_t *)w + (r0 + r) * cols / 4;
            int32_t s = dp ? row_dot(b, a->q + t * cols, cols, 1) : row_dot(b, a->q + t * cols, cols, 0);
            isum[t * nr + r] = s - a->sum[t];
        }
}
