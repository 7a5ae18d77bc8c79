/* lut: tern's lookup-table ternary layout "tern-lut3" (T-MAC / bitnet.cpp TL2 style). Weights
 * are coded three trits at a time as a 4-bit index into 14 signed partial sums plus a sign bit
 * (1.67 bits per weight); activations become, per token, one 16-entry table per 3 columns.
 * Sums stay exact int32: q = 16·qh + ql (ql ∈ 0..15, qh ∈ −8..7) gives two int8 tables, lo and hi,
 * with |lo| ≤ 45 and |hi| ≤ 24, and a group's value is ±(lo[i] + 16·hi[i]).
 * Not here: choosing it (mat.c) and the 2-bit layouts (ternary.h). */
#ifndef TERN_LUT_H
#define TERN_LUT_H
#include <stddef.h>
#include <stdint.h>
#include "kernels/ternary.h"

/* Layout: rows in tiles of LUT_R (padded with zero trits); columns in groups of 3 (the last
 * padded with zero trits), groups in blocks of 8 (padded). Per (tile, block), LUT_BLK bytes:
 *   [0, 64)            sign bits: byte i (row i of the tile) bit b = group 8m+b is negative
 *   [64 + 64p, +64)    p = 0..3: byte i = idx(row i, group 2p) | idx(row i, group 2p+1) << 4
 * A group of trits (w0, w1, w2) has n = 9(w0+1) + 3(w1+1) + (w2+1); idx = |n − 13|, sign
 * n < 13; idx j stands for the trits of n = 13 + j. Indices 14 and 15 are unused (value 0).
 * Tiles are stored one after another, each tile's blocks in column order: one sequential
 * stream. Bytes 0 (idx 0, sign +) are zero weights. */
#define LUT_R 64
#define LUT_BLK 320
#define LUT_TBL 256   /* table bytes per block of 8 groups per token: per group lo[16] then hi[16] */

int64_t lut_blocks(int64_t cols);                 /* ceil(ceil(cols/3)/8) */
size_t lut_bytes(int64_t rows, int64_t cols);     /* whole layout */
size_t lut_tbl_bytes(int64_t cols);               /* tables of one token */
/* trits t (nr, cols) of rows [r0, r0+nr) → their bytes in dst (a whole LUT tensor that was
 * zeroed first: padding rows and columns stay zero trits). */
void lut_pack_rows(const int8_t *t, int64_t cols, int64_t r0, int64_t nr, void *dst);

/* rows [r0, r0+nr) of a tensor as stored (type TT_I2_S, TT_TQ2_0 or TT_TQ1_0; src the whole
 * tensor; cols a multiple of its block) → their bytes in dst (a whole LUT tensor zeroed first),
 * straight from the codes in 768-column pieces (no allocation). Bit-identical to lut_pack_rows
 * of quant_unpack_trits with zero-scale TQ blocks made zero trits (as mat.c's repack did). */
void lut_from_src(int type, const void *src, int64_t cols, int64_t r0, int64_t nr, void *dst);

/* tables (lut_tbl_bytes(cols)) of one token's int8 activations q (cols,); columns past cols
 * count as q = 0. The ISA variants write the same bytes. */
void lut_tables_ref(const int8_t *q, int64_t cols, int8_t *tbl);
void lut_tables(const int8_t *q, int64_t cols, int8_t *tbl);   /* dispatched by isa_current() */

/* tdot_fn over the LUT layout: a->lut holds the n tokens' tables (stride lut_tbl_bytes(cols));
 * isum (n, nr) exact. a->q and a->sum are not read. */
void lut_dot_ref(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
#if defined(TERN_HAVE_X86)
void lut_dot_avx2(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void lut_dot_avx512(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
void lut_tables_avx2(const int8_t *q, int64_t cols, int8_t *tbl);
#endif
#if defined(TERN_HAVE_ARM)
void lut_dot_neon(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum);
#endif

#endif
