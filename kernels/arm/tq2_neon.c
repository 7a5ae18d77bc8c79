/* tq2_neon: TQ2_0 dot product with NEON: one exact int32 per 256-block (Σ code·q − block Σq),
 * equal to tq2_dot_ref. Not here: the f16 block scales (mat.c). */
#include "kernels/arm/neon_dot.h"
#include "kernels/dispatch.h"
#include "kernels/ternary.h"

static inline __attribute__((always_inline)) int32_t block_dot(const uint8_t *b, const int8_t *q, int dp) {
    const uint8x16_t m3 = vdupq_n_u8(3);
    int32x4_t acc = vdupq_n_s32(0);
    for (int h = 0; h < 2; h++)
        for (int p = 0; p < 2; p++) {
            uint8x16_t v = vld1q_u8(b + 32 * h + 16 * p);
            const int8_t *x = q + 128 * h + 16 * p;
            acc = neon_dot16(acc, vreinterpretq_s8_u8(vandq_u8(v, m3)), vld1q_s8(x), dp);
            acc = neon_dot16(acc, vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2), m3)), vld1q_s8(x + 32), dp);
            acc = neon_dot16(acc, vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 4), m3)), vld1q_s8(x + 64), dp);
            acc = neon_dot16(acc, vreinterpretq_s8_u8(vshrq_n_u8(v, 6)), vld1q_s8(x + 96), dp);
        }
    return vaddvq_s32(acc);
}

void tq2_dot_neon(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int dp = isa_has_neon_dotprod();
    int64_t cols = a->cols, nb = cols / 256;
    for (int t = 0; t < a->n; t++)
        for (int64_t r = 0; r < nr; r++) {
            const uint8_t *b = (const uint8_t *)w + (r0 + r) * nb * 66;
            for (int64_t k = 0; k < nb; k++, b += 66) {
                const int8_t *q = a->q + t * cols + 256 * k;
                int32_t s = dp ? block_dot(b, q, 1) : block_dot(b, q, 0);
                isum[(t * nr + r) * nb + k] = s - a->bsum[t * nb + k];
            }
        }
}
