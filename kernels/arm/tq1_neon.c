/* tq1_neon: TQ1_0 dot product with NEON. Digit n of byte b is ((u8)(b·3ⁿ)·3) >> 8: an 8-bit
 * multiply, a widening ×3 and a narrowing shift. One exact int32 per 256-block (minus the
 * block's Σq), equal to tq1_dot_ref. Not here: scales (mat.c). */
#include "kernels/arm/neon_dot.h"
#include "kernels/dispatch.h"
#include "kernels/ternary.h"

static inline int8x16_t digits(uint8x16_t b, uint8x16_t p) {
    uint8x16_t q = vmulq_u8(b, p);
    uint8x16_t three = vdupq_n_u8(3);
    uint8x8_t lo = vshrn_n_u16(vmull_u8(vget_low_u8(q), vget_low_u8(three)), 8);
    uint8x8_t hi = vshrn_n_u16(vmull_high_u8(q, three), 8);
    return vreinterpretq_s8_u8(vcombine_u8(lo, hi));
}

static inline __attribute__((always_inline)) int32_t block_dot(const uint8_t *b, const int8_t *q, int dp) {
    static const uint8_t pw[5] = {1, 3, 9, 27, 81};
    static const uint8_t ph[16] = {1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27};
    int32x4_t acc = vdupq_n_s32(0);
    uint8x16_t v0 = vld1q_u8(b), v1 = vld1q_u8(b + 16), v2 = vld1q_u8(b + 32);
    for (int n = 0; n < 5; n++) {
        uint8x16_t p = vdupq_n_u8(pw[n]);
        acc = neon_dot16(acc, digits(v0, p), vld1q_s8(q + 32 * n), dp);
        acc = neon_dot16(acc, digits(v1, p), vld1q_s8(q + 32 * n + 16), dp);
        acc = neon_dot16(acc, digits(v2, p), vld1q_s8(q + 160 + 16 * n), dp);
    }
    uint32_t h;
    __builtin_memcpy(&h, b + 48, 4);
    uint8x16_t vh = vreinterpretq_u8_u32(vdupq_n_u32(h));   /* byte 4n+j = qh[j] */
    acc = neon_dot16(acc, digits(vh, vld1q_u8(ph)), vld1q_s8(q + 240), dp);
    return vaddvq_s32(acc);
}

void tq1_dot_neon(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int dp = isa_has_neon_dotprod();
    int64_t cols = a->cols, nb = cols / 256;
    for (int t = 0; t < a->n; t++)
        for (int64_t r = 0; r < nr; r++) {
            const uint8_t *b = (const uint8_t *)w + (r0 + r) * nb * 54;
            for (int64_t k = 0; k < nb; k++, b += 54) {
                const int8_t *q = a->q + t * cols + 256 * k;
                int32_t s = dp ? block_dot(b, q, 1) : block_dot(b, q, 0);
                isum[(t * nr + r) * nb + k] = s - a->bsum[t * nb + k];
            }
        }
}
