/* ternary: the integer-level contract shared by every ternary dot-product kernel (I2_S, TQ2_0,
 * TQ1_0, tern's own layouts) and the declarations of all their ISA variants. A kernel computes
 * exact int32 sums Σ_c w[r][c]·q[t][c] with w = code − 1 ∈ {−1,0,+1}; floats (scales) are applied
 * once, by mat.c, in one fixed order, so every ISA gives bit-identical y.
 * Not here: choosing a kernel (mat.c) and activation quantisation (quant.c). */
#ifndef TERN_TERNARY_H
#define TERN_TERNARY_H
#include <stddef.h>
#include <stdint.h>

/* int8 activations of n tokens, natural column order. */
typedef struct tact {
    const int8_t *q;      /* (n, cols) int8; row t at q + t*cols; 64-byte aligned rows help */
    const int32_t *sum;   /* (n,) Σ_c q[t][c] */
    const int32_t *bsum;  /* (n, cols/256) Σ q per 256-block (TQ kernels only; else may be NULL) */
    int64_t cols;
    int n;
    const int8_t *lut;    /* (n, lut_tbl_bytes(cols)) tables for the LUT layout (lut.h); else NULL */
} tact_t;

/* isum (n, nr, nb): isum[(t*nr + r)*nb + b] = Σ_{c in block b} w[r0+r][c] · q[t][c].
 * nb = 1 (whole row) for I2_S and tern layouts, cols/256 for TQ1_0/TQ2_0 (one sum per block).
 * w: the whole tensor in the kernel's layout, `rows` rows (layouts that tile rows need it).
 * Codes are read as code − 1 for every 2-bit value (3 → +2), so all variants agree on any bytes. */
typedef void (*tdot_fn)(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);

void i2s_dot_ref(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void tq2_dot_ref(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void tq1_dot_ref(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void tern_tl_dot_ref(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);

#if defined(TERN_HAVE_X86)
void i2s_dot_avx2(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void i2s_dot_avx512(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void tq2_dot_avx2(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void tq2_dot_avx512(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void tq1_dot_avx2(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void tq1_dot_avx512(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void tern_tl_dot_avx2(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void tern_tl_dot_avx512(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
#endif
#if defined(TERN_HAVE_ARM)
void i2s_dot_neon(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void tq2_dot_neon(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void tq1_dot_neon(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void tern_tl_dot_neon(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
#endif

/* tern "TL" layout: rows in groups of TL_R (rows padded up with zero trits), each group stored
 * as cols/256 chunks of TL_R × 64 bytes; in a row's 64 bytes, byte j holds columns j, j+64,
 * j+128, j+192 of the chunk in bits 7:6, 5:4, 3:2, 1:0 (codes 0,1,2 = −1,0,+1). One sequential
 * stream; a 64-byte load gives 64 codes per shift in natural column order. cols % 256 == 0. */
#define TL_R 4
size_t tern_tl_bytes(int64_t rows, int64_t cols);
/* trits t (nr, cols) of rows [r0, r0+nr) → their place in dst (a whole TL tensor, zeroed codes
 * = 0x55 for padding rows are written by tern_tl_pad). */
void tern_tl_pack_rows(const int8_t *t, int64_t rows, int64_t cols, int64_t r0, int64_t nr, void *dst);
void tern_tl_pad(int64_t rows, int64_t cols, void *dst);
/* rows [r0, r0+nr) of an I2_S tensor (src as stored) → their place in dst, byte to byte (no
 * int8 trits); bit-identical to tern_tl_pack_rows of quant_unpack_trits (code 3 reads as 0). */
void tern_tl_from_i2s(const void *src, int64_t cols, int64_t r0, int64_t nr, void *dst);

/* tern "RL" layout (row lanes, for VNNI GEMM): rows in tiles of RL_R = 32 (padded with zero
 * trits), each tile stored as cols/16 blocks of 128 bytes: [rows 0..15: 64 B][rows 16..31: 64 B];
 * in a half, byte 4j + b holds row j's columns 16m + 4s + b (s = 0..3) in bits 7−2s, 6−2s
 * (codes 0,1,2 = −1,0,+1). A shift gives one zmm whose 32-bit lane j is 4 consecutive columns of
 * row j, so vpdpbusd against 4 broadcast activation bytes yields 16 rows' sums with no
 * horizontal reduction. cols % 16 == 0. */
#define RL_R 32
size_t tern_rl_bytes(int64_t rows, int64_t cols);
void tern_rl_pack_rows(const int8_t *t, int64_t cols, int64_t r0, int64_t nr, void *dst);
void tern_rl_pad(int64_t rows, int64_t cols, void *dst);   /* padding rows → code 1 */
/* rows [r0, r0+nr) of an I2_S tensor → their place in dst, byte to byte; bit-identical to
 * tern_rl_pack_rows of quant_unpack_trits (code 3 reads as 0). cols % 128 == 0. */
void tern_rl_from_i2s(const void *src, int64_t cols, int64_t r0, int64_t nr, void *dst);
void tern_rl_dot_ref(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
#if defined(TERN_HAVE_X86)
void tern_rl_dot_avx512(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
#endif

#endif
