/* kquant: llama.cpp's block formats Q4_0, Q5_0 (32 values per block) and the K-quants Q4_K,
 * Q5_K, Q6_K (256 values per super-block) — the types llama-quantize writes for embeddings and
 * lm heads next to ternary linears. Scalar reference (the spec): dequantisation, quantisation
 * from f32 (llama.cpp's reference quantizers, no importance matrix), and the integer block dot
 * products the lm head kernels (fmat) use. Not here: the row loops and threads (fmat.c), the
 * ISA variants (x86/kquant_avx2.c, x86/kquant_avx512.c, arm/kquant_neon.c).
 *
 * Byte layouts (little endian, f16 = IEEE half), w = weight value:
 *  Q4_0 {f16 d; u8 qs[16]}: w[j] = d·((qs[j]&15) − 8), w[j+16] = d·((qs[j]>>4) − 8)
 *  Q5_0 {f16 d; u32 qh; u8 qs[16]}: as Q4_0 with bit 4 of value i taken from qh bit i, − 16
 *  Q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]}: 8 sub-blocks of 32 with 6-bit scale sc and
 *       min m (kquant_scale_min); chunk c of 64 values: qs[32c+l]&15 is value 64c+l (sub-block
 *       2c), qs[32c+l]>>4 is 64c+32+l (sub-block 2c+1); w = d·sc·q − dmin·m
 *  Q5_K {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}: Q4_K plus bit 4 of value 32s+l
 *       in qh[l] bit s (sub-block s)
 *  Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: half h (128 values), l < 32:
 *       values 128h + l + 32k (k = 0..3) take low nibbles ql[64h + l + 32(k&1)] >> 4(k>>1) and
 *       2 high bits qh[32h + l] >> 2k; q − 32; 16 sub-blocks of 16 with int8 scale:
 *       w = d·scales[i]·(q − 32) */
#ifndef TERN_KQUANT_H
#define TERN_KQUANT_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "core/half.h"
#include "core/types.h"
#ifdef __F16C__
#include <immintrin.h>
#endif

int kquant_is(int type);   /* 1 for Q4_0, Q5_0, Q4_K, Q5_K, Q6_K */
int kquant_is_k(int type); /* 1 for the 256-value K-quants */

/* rows (n blocks of `type`) → y; n = values / block size */
void kquant_dequant(int type, const void *src, int64_t nvals, float *y);
/* x (nvals,) → blocks of `type` (nvals a multiple of the block size) */
void kquant_quantize(int type, const float *x, int64_t nvals, void *dst);

/* Q4_K / Q5_K: 6-bit scale and min of sub-block j (0..7) from scales[12] */
static inline void kquant_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* ---- activations for K-quant dot products (Q8_K-like) ----------------------------------------
 * Per token, per 256-block b: d = max|x|/127 (f32, not rounded), q = round(x/d) clamped to ±127,
 * bsum[16b + i] = Σ q over values [16i, 16i+16) of the block. Layout of one token (cols values):
 * int8 q[cols] at 0 | float d[cols/256] at kquant_x_d_off | int16 bsum[cols/16] at kquant_x_bs_off. */
static inline size_t kquant_x_d_off(int64_t cols) { return ((size_t)cols + 63) / 64 * 64; }
static inline size_t kquant_x_bs_off(int64_t cols) {
    return kquant_x_d_off(cols) + ((size_t)cols / 256 * 4 + 63) / 64 * 64;
}
static inline size_t kquant_x_stride(int64_t cols) {
    return kquant_x_bs_off(cols) + ((size_t)cols / 16 * 2 + 63) / 64 * 64;
}
void kquant_quantize_x(const float *x, int64_t cols, uint8_t *dst);

/* ggml's int8 rule for one block of n values (quantize_row_q8_0's; Q8_K's above): d = max|x|/127,
 * q = round(x/d) clamped to ±127 (NaN → 0). Returns d, not rounded. */
static inline float kquant_i8_block(const float *x, int n, int8_t *q) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++) {
        float v = x[i] * id;
        q[i] = (int8_t)(v == v ? roundf(fminf(fmaxf(v, -127.0f), 127.0f)) : 0.0f);
    }
    return d;
}

/* The spec of one 256-block's integer products with the activation block (q, bsum):
 *  Q6_K: *a = Σ_i scales[i] · Σ_{16 values} (q6 − 32)·xq;                  *b = 0
 *  Q4_K/Q5_K: *a = Σ_j sc_j · Σ_{32 values} q·xq;  *b = Σ_j m_j · Σ_{32 values} xq
 * Exact integers, whatever the order; the row's value is then, over blocks in order,
 *  acc = fmaf(d_w·d_x, (float)a, acc); for Q4_K/Q5_K then acc = fmaf(−(dmin_w·d_x), (float)b, acc)
 * starting from acc = 0 (kquant_row_ref). */
void kquant_block_ref(int type, const uint8_t *blk, const int8_t *xq, const int16_t *bsum, int32_t *a, int32_t *b);
/* y = row · x for one row of cols values of a K-quant type and one token of kquant_quantize_x */
float kquant_row_ref(int type, const uint8_t *row, int64_t cols, const uint8_t *xt);

/* an f16 of a block → f32: exact either way; F16C's one instruction where the file is built
 * with it (the x86 kernels), else the scalar spec (core/half.h) */
static inline float kquant_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
#ifdef __F16C__
    return _cvtsh_ss(h);
#else
    return f16_to_f32(h);
#endif
}

/* the float step above for one block blk (d_w, dmin_w read from it; b unused for Q6_K): what
 * acc becomes. Shared by the spec and every ISA's row loop, so the float steps are one text. */
static inline float kquant_block_acc(int type, const uint8_t *blk, float dx, int32_t a, int32_t b, float acc) {
    if (type == TT_Q6_K) return fmaf(kquant_f16(blk + 208) * dx, (float)a, acc);
    acc = fmaf(kquant_f16(blk) * dx, (float)a, acc);
    return fmaf(-(kquant_f16(blk + 2) * dx), (float)b, acc);
}

/* Q4_0 / Q5_0 → int8 (32,) values q (w = d·q) and the block's f16 d; the dot product then follows
 * fmat's Q8_0 spec (fmat_isa.h) with these values in place of Q8_0's. */
uint16_t kquant_unpack32(int type, const uint8_t *blk, int8_t *q);

#endif
