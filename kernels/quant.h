/* quant: conversions between f32 and every stored type, scalar reference (the spec that all
 * SIMD kernels are tested against), plus per-token int8 activation quantisation.
 * Byte layouts equal llama.cpp's (Q8_0, TQ1_0, TQ2_0) and bitnet.cpp's (I2_S). */
#ifndef TERN_QUANT_H
#define TERN_QUANT_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* x (n,) f32 → q (n,) int8 with scale s = 127 / max|x| (bitnet.cpp's rule; s = 1 when x == 0),
 * q = round(x * s) clamped to ±127. Returns s; *sum (if not NULL) = Σ q. x ≈ q / s. */
float act_quant_ref(const float *x, int64_t n, int8_t *q, int32_t *sum);
float act_quant(const float *x, int64_t n, int8_t *q, int32_t *sum);   /* dispatched, same result */
/* that rule for one value at scale s (the SIMD variants' tails use it) */
static inline int8_t act_quant_one(float x, float s) {
    float v = roundf(x * s);
    return (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
}

/* Packs rows (rows, cols) of trits t ∈ {-1,0,+1} into `type` (TT_I2_S, TT_TQ1_0, TT_TQ2_0).
 * TQ*: every block's f16 d = scale. I2_S: writes rows*cols/4 bytes (no tail: see quant_i2s_tail),
 * and since cols % 128 == 0 a row r starts at byte r*cols/4, so rows may be packed in chunks. */
int quant_pack_trits(int type, const int8_t *t, int64_t rows, int64_t cols, float scale, void *dst);
void quant_i2s_tail(void *tail32, float scale);   /* f32 scale then 28 zero bytes */
/* Inverse of the above: trits of rows [r0, r0+nr) of a tensor with `rows` rows (I2_S needs
 * `rows` to find its tail; *scale receives the per-tensor scale, or the first block's d). */
int quant_unpack_trits(int type, const void *src, int64_t rows, int64_t cols, int64_t r0, int64_t nr,
                       int8_t *t, float *scale);
/* the common non-zero f16 block scale d of a TQ tensor (TT_TQ1_0, TT_TQ2_0; rows × cols/256 blocks)
 * as f32: 0 when every d is ±0, 0 and *differ = 1 when two differ (else *differ = 0) */
float quant_tq_scale(int type, const void *src, int64_t rows, int64_t cols, int *differ);

/* f32 (rows, cols) → type. Ternary types use absmean quantisation per tensor
 * (scale = mean|W|, t = clamp(round(W/scale), -1, 1)); TQ types store that scale in each block.
 * F32/F16/BF16/Q8_0 as ggml does; Q4_0/Q5_0/Q4_K/Q5_K/Q6_K with llama.cpp's reference quantizers
 * (kquant.h). Returns 0 or a negative TERN_E* code (cols not a multiple of
 * the block size). */
int quant_from_f32(int type, const float *x, int64_t rows, int64_t cols, void *dst);
/* type → f32 for rows [r0, r0+nr) of a tensor with `rows` rows: y (nr, cols). */
int dequant_rows(int type, const void *src, int64_t rows, int64_t cols, int64_t r0, int64_t nr, float *y);

#endif
