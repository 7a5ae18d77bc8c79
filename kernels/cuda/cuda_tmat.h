/* cuda_tmat: the W2A8 ternary matrix product on the GPU — per-token int8 activation
 * quantisation (act_quant's rule exactly), and y = x·Wᵀ over W in the gpack layout
 * (kernels/gpack.h) with dp4a: a warp-per-row GEMV for up to 8 tokens (decode, batched decode)
 * and a shared-memory tiled GEMM above (prefill). Integer sums are exact; the epilogue is
 * mat.c's: y = (float)(Σcode·q − Σq) / s · scale, then · lscale when lscale != 1, so y equals the
 * CPU's bit for bit. All pointers are device pointers; calls queue on the default stream. */
#ifndef TERN_CUDA_TMAT_H
#define TERN_CUDA_TMAT_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/* x (n, cols) f32 → q (n, cols) int8, s (n,) = 127/max|x| (1 when x == 0), qsum (n,) = Σ q */
void cuda_tmat_quant(const float *x, int n, int64_t cols, int8_t *q, float *s, int32_t *qsum);
/* y (n, rows) = W (rows, cols) gpack · q (n, cols); cols % 64 == 0 */
void cuda_tmat_mul(const uint32_t *w, int64_t rows, int64_t cols, float scale, float lscale, const int8_t *q,
                   const float *s, const int32_t *qsum, int n, float *y);

#ifdef __cplusplus
}
#endif
#endif
