/* cuda_ops: the float operations of a block on the GPU, following kernels/ops.c's spec
 * (ops_isa.h): RMSNorm (Σx² in double), RoPE from a host-made cos/sin table (both modes),
 * KV-cache stores (f32, f16 or q8_0), attention with GQA in the spec's lane order and exp, relu²/SiLU
 * gates, residual adds. Device pointers; default stream. Not here: matmuls. */
#ifndef TERN_CUDA_OPS_H
#define TERN_CUDA_OPS_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/* y row i (dim,) = rmsnorm(x row rows ? rows[i] : i) ⊙ w (w may be NULL); y may alias x when rows is NULL */
void cuda_ops_rmsnorm(float *y, const float *x, const float *w, int n, int64_t dim, float eps, const int *rows);
/* x (n, n_heads, head_dim) in place; token t rotated at pos[t] with cs/sn rows pos[t] of the
 * (n_ctx, rot_dim/2) tables; neox: pairs (i, i + rot_dim/2), else (2i, 2i+1) */
void cuda_ops_rope(float *x, int n, int n_heads, int head_dim, int rot_dim, const int *pos, const float *cs,
                   const float *sn, int neox);
/* one layer's cache kc/vc: [seq][pos][kv_dim] (seq_stride = n_ctx·kv_dim elements), kv_type KV_F32 /
 * KV_F16 / KV_Q8_0 (kernels/ops.h: Q8_0 blocks of each row, quantised as quant.c does; head_dim
 * % 32 == 0) */
void cuda_ops_kv_store(void *kc, void *vc, int kv_type, const float *k, const float *v, int n, const int *seq,
                       const int *pos, int64_t seq_stride, int kv_dim);
/* cuda_ops_rope on q (n, n_heads, hd) and k (n, n_kv_heads, hd), then cuda_ops_kv_store of k
 * and v: the same results in one launch */
void cuda_ops_rope_kv(float *q, float *k, const float *v, int n, int n_heads, int n_kv_heads, int head_dim, int rot_dim,
                      const int *pos, const float *cs, const float *sn, int neox, void *kc, void *vc, int kv_type,
                      const int *seq, int64_t seq_stride);
/* Context shift of slot seq in layers [0, n_layer) of a cache kc/vc [layer][seq][pos][kv_dim]
 * (layer_stride, seq_stride in elements): rows [keep + discard, n_past) move down by discard, keys
 * rotated by -discard on their first rot_dim dims (cs, sn: the (rot_dim/2,) rotation of discard
 * positions, ops_rope_shift_table; the sine is negated here) and stored again in kv_type, values copied byte for byte —
 * worker/kv_cache.c's kv_cache_shift, operation for operation. Block (kv head, layer) walks its
 * rows upwards, so the move is in place. hd % 32 == 0 for KV_Q8_0. */
void cuda_ops_kv_shift(void *kc, void *vc, int kv_type, int n_layer, int64_t layer_stride, int64_t seq_stride, int seq,
                       int keep, int discard, int n_past, int n_kv_heads, int hd, int rot_dim, const float *cs,
                       const float *sn, int neox);
/* out (n, n_heads, hd): token t attends to positions [0, pos[t]] of its sequence's cache.
 * scores: (n, n_heads, n_ctx) f32 scratch. hd <= cuda_ops_attention_max_hd(). */
void cuda_ops_attention(float *out, const float *q, const void *kc, const void *vc, int kv_type, int n,
                        const int *seq, const int *pos, int64_t seq_stride, int n_heads, int n_kv_heads, int hd,
                        float scale, float *scores, int n_ctx);
size_t cuda_ops_attention_max_hd(void);
void cuda_ops_act_mul(float *g, const float *u, int64_t n, int relu2);   /* g = act(g) ⊙ u */
void cuda_ops_add(float *y, const float *x, int64_t n);                  /* y += x */

#ifdef __cplusplus
}
#endif
#endif
