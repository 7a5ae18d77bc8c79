/* gpack: the GPU ternary layout (host side: packing at load, and the scalar spec of what the
 * CUDA W2A8 kernels compute). A (rows, cols) ternary matrix becomes rows of cols/16 uint32
 * words; word g of a row holds elements 16g..16g+15 with element 16g + 4j + b in bits
 * 8b + 2j .. 8b + 2j + 1 as code = trit + 1 ∈ {0,1,2}. So (word >> 2j) & 0x03030303 is the
 * four codes of elements 16g+4j .. 16g+4j+3, one per byte, ready for one dp4a against four
 * consecutive int8 activations, and Σ t·x = Σ code·x − Σ x. Rows are contiguous, so a warp
 * reading consecutive words of a row reads consecutive bytes (coalesced).
 * Not here: the kernels themselves (kernels/cuda/), device memory. */
#ifndef TERN_GPACK_H
#define TERN_GPACK_H
#include <stddef.h>
#include <stdint.h>

#define GPACK_K 16   /* trits per word; cols must be a multiple */

size_t gpack_bytes(int64_t rows, int64_t cols);
/* t (nr, cols) trits in {-1,0,+1} → dst (nr, cols/16) words. cols % 16 == 0 (asserted). */
void gpack_pack_rows(const int8_t *t, int64_t nr, int64_t cols, uint32_t *dst);
/* inverse of gpack_pack_rows (code 3, never written, reads as 0) */
void gpack_unpack_rows(const uint32_t *src, int64_t nr, int64_t cols, int8_t *t);

/* Any stored ternary tensor (TT_I2_S, TT_TQ1_0, TT_TQ2_0) → dst (gpack_bytes) and its single
 * weight scale *scale (what mat.c's TL path uses: the I2_S tensor scale, or the common f16 d of
 * the TQ blocks; blocks with d == 0 become zero trits). TERN_ENOTSUP when TQ block scales
 * differ (no BitNet file does that), TERN_EINVAL on a bad type/shape, TERN_ENOMEM. */
int gpack_from_tensor(int type, const void *src, int64_t rows, int64_t cols, uint32_t *dst, float *scale,
                      char *err, size_t errlen);

/* The spec of the GPU W2A8 product for one token: y (rows,) = (Σ code·q − qsum) / s · scale,
 * with q (cols,) int8 from act_quant (s, qsum). Equal bit for bit to mat_mul on the TL path. */
void gpack_gemv_ref(const uint32_t *w, int64_t rows, int64_t cols, float scale, const int8_t *q, float s,
                    int32_t qsum, float *y);

#endif
