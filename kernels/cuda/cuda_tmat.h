/* cuda_tmat: the W2A8 ternary matrix product on the GPU — per-token int8 activation
 * quantisation (act_quant's rule exactly), and y = x·Wᵀ over W in the gpack layout
 * (kernels/gpack.h) with dp4a: a GEMV (a warp per 1, 2 or 4 rows) for up to 8 tokens (decode,
 * batched decode) and a shared-memory tiled GEMM above (prefill); fused forms for the stage (the
 * q/k/v products in one launch, gate/up/activation in one, norm + residual + quantisation in one). Integer sums are exact; the epilogue is
 * mat.c's: y = (float)(Σcode·q − Σq) / s · scale, then · lscale when lscale != 1, so y equals the
 * CPU's bit for bit. All pointers are device pointers; calls queue on the default stream. */
#ifndef TERN_CUDA_TMAT_H
#define TERN_CUDA_TMAT_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/* one matrix of a fused product: W (rows, cols) gpack words, its scales, and its output y (n, rows) */
typedef struct cuda_tmat_seg {
    const uint32_t *w;
    float *y;
    int64_t rows;
    float scale, lscale;
} cuda_tmat_seg_t;
#define CUDA_TMAT_MAX_SEGS 4

/* x (n, cols) f32 → q (n, cols) int8, s (n,) = 127/max|x| (1 when x == 0), qsum (n,) = Σ q */
void cuda_tmat_quant(const float *x, int n, int64_t cols, int8_t *q, float *s, int32_t *qsum);
/* y (n, rows) = W (rows, cols) gpack · q (n, cols); cols % 64 == 0 */
void cuda_tmat_mul(const uint32_t *w, int64_t rows, int64_t cols, float scale, float lscale, const int8_t *q,
                   const float *s, const int32_t *qsum, int n, float *y);

/* products launched with programmatic dependent launch (sm_90+ only; else off): they fetch their
 * weights into L2 while the kernel before them (cuda_tmat_norm_quant) still runs. Returns the
 * setting in force. Process-wide; set before capturing graphs. */
int cuda_tmat_set_pdl(int on);
/* the GEMM (more than 8 tokens: prefill) on the int8 tensor cores (mma.sync m16n8k32; sm_80+,
 * else off) instead of dp4a: the same bits. Returns the setting in force. Process-wide (a stage
 * sets its own before each step). */
int cuda_tmat_set_mma(int on);
/* rows per warp of the GEMV: 1, 2 or 4, or 0 (the default): by the matrix's rows — as many as
 * keep two blocks per multiprocessor. Returns the setting. Process-wide. */
int cuda_tmat_set_rows(int r);
/* x (n, cols) += add (when add != NULL, written back), then q/s/qsum = act_quant of
 * rmsnorm(x) ⊙ w (norm != 0; w may be NULL) or of x: cuda_ops_add + cuda_ops_rmsnorm +
 * cuda_tmat_quant in one launch, the same bits */
void cuda_tmat_norm_quant(float *x, const float *add, int norm, const float *w, int n, int64_t cols, float eps,
                          int8_t *q, float *s, int32_t *qsum);
/* the products of nseg (<= CUDA_TMAT_MAX_SEGS) matrices of the same cols with the same
 * activations, each into its own y: one launch for n <= 8 (q, k and v of a layer) */
void cuda_tmat_mul_segs(const cuda_tmat_seg_t *seg, int nseg, int64_t cols, const int8_t *q, const float *s,
                        const int32_t *qsum, int n);
/* gate->y (n, rows) = act(gate·q) ⊙ (up·q), act relu² (relu2) or SiLU, as cuda_ops_act_mul after
 * two products; one launch for n <= 8, else up->y is used as scratch */
void cuda_tmat_glu(const cuda_tmat_seg_t *gate, const cuda_tmat_seg_t *up, int64_t cols, int relu2, const int8_t *q,
                   const float *s, const int32_t *qsum, int n);

#ifdef __cplusplus
}
#endif
#endif
