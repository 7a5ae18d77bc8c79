/* cuda_fmat: y = x·Wᵀ on the GPU for float-ish weights — the lm head (F32, F16, BF16, Q8_0) —
 * in fmat.c's spec order (F*: 32 lanes c % 32 of fmaf, folded by halves; Q8_0: x quantised per
 * 32-block as ggml does, 16 lanes), one warp per row (Q8_0: half a warp). Device pointers. */
#ifndef TERN_CUDA_FMAT_H
#define TERN_CUDA_FMAT_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

enum cuda_fmat_kind { CUDA_FMAT_F32, CUDA_FMAT_F16, CUDA_FMAT_BF16, CUDA_FMAT_Q8_0 };

size_t cuda_fmat_scratch_bytes(int kind, int64_t cols, int n);
/* y (n, rows) = x (n, cols) · Wᵀ; scratch: cuda_fmat_scratch_bytes (Q8_0 only), 16-byte aligned */
void cuda_fmat_mul(int kind, const void *w, int64_t rows, int64_t cols, const float *x, int n, float *y,
                   void *scratch);

#ifdef __cplusplus
}
#endif
#endif
