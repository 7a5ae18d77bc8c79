/* cuda_ops: block float ops on the GPU in kernels/ops.c's arithmetic (see ops_isa.h): products
 * that the CPU rounds separately are written __fmul_rn/__fadd_rn so nvcc cannot fuse them, and
 * the fmaf the spec fuses are fmaf here. RMSNorm sums x² in double in a tree (the CPU: 8 lanes
 * in order) — the f32 scale differs only on a double-rounding tie. Everything else, SiLU's and
 * the softmax's exp included (exp_spec, cuda_rowops.cuh), follows the spec operation by operation. */
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_rowops.cuh"
#include "kernels/ops_isa.h"
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* ---- RMSNorm: one block per row ------------------------------------------------------------ */
__global__ void k_rmsnorm(float *y, const float *x, const float *w, int64_t dim, float eps, const int *rows) {
    const float *xt = x + (int64_t)(rows ? rows[blockIdx.x] : (int)blockIdx.x) * dim;
    float *yt = y + (int64_t)blockIdx.x * dim;
    float s = row_rms_scale(xt, dim, eps);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = __fmul_rn(xt[i], s);
        yt[i] = w ? __fmul_rn(v, w[i]) : v;
    }
}

extern "C" void cuda_ops_rmsnorm(float *y, const float *x, const float *w, int n, int64_t dim, float eps,
                                 const int *rows) {
    if (n > 0) k_rmsnorm<<<n, ROW_THREADS>>>(y, x, w, dim, eps, rows);
}

/* ---- RoPE: block (head, token), thread per pair --------------------------------------------- */
__global__ void k_rope(float *x, int n_heads, int head_dim, int half, const int *pos, const float *cs,
                       const float *sn, int neox) {
    float *xh = x + ((int64_t)blockIdx.y * n_heads + blockIdx.x) * head_dim;
    rope_head(xh, half, cs + (int64_t)pos[blockIdx.y] * half, sn + (int64_t)pos[blockIdx.y] * half, neox);
}

extern "C" void cuda_ops_rope(float *x, int n, int n_heads, int head_dim, int rot_dim, const int *pos,
                              const float *cs, const float *sn, int neox) {
    if (n <= 0) return;
    dim3 grid((unsigned)n_heads, (unsigned)n);
    k_rope<<<grid, 64>>>(x, n_heads, head_dim, rot_dim / 2, pos, cs, sn, neox);
}

/* ---- KV cache -------------------------------------------------------------------------------- */
__device__ __forceinline__ void kv_put(float *p, float v) { *p = v; }
__device__ __forceinline__ void kv_put(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ float kv_get(const float *p) { return *p; }
__device__ __forceinline__ float kv_get(const __half *p) { return __half2float(*p); }

template <typename KT>
__global__ void k_kv_store(KT *kc, KT *vc, const float *k, const float *v, const int *seq, const int *pos,
                           int64_t seq_stride, int kv_dim) {
    int t = blockIdx.x;
    int64_t off = (int64_t)seq[t] * seq_stride + (int64_t)pos[t] * kv_dim;
    for (int d = threadIdx.x; d < kv_dim; d += blockDim.x) {
        kv_put(kc + off + d, k[(int64_t)t * kv_dim + d]);
        kv_put(vc + off + d, v[(int64_t)t * kv_dim + d]);
    }
}

extern "C" void cuda_ops_kv_store(void *kc, void *vc, int kv_type, const float *k, const float *v, int n,
                                  const int *seq, const int *pos, int64_t seq_stride, int kv_dim) {
    if (n <= 0) return;
    if (kv_type == 1) k_kv_store<__half><<<n, 128>>>((__half *)kc, (__half *)vc, k, v, seq, pos, seq_stride, kv_dim);
    else k_kv_store<float><<<n, 128>>>((float *)kc, (float *)vc, k, v, seq, pos, seq_stride, kv_dim);
}

/* ---- RoPE of q and k and the cache store of k and v in one launch: block (head, token); the
 * blocks of q heads rotate, those of kv heads rotate k, then store that head of k and v */
template <typename KT>
__global__ void k_rope_kv(float *q, float *k, const float *v, int n_heads, int n_kv_heads, int hd, int half,
                          const int *pos, const float *cs, const float *sn, int neox, KT *kc, KT *vc, const int *seq,
                          int64_t seq_stride) {
    int h = blockIdx.x, t = blockIdx.y;
    const float *c = cs + (int64_t)pos[t] * half, *s = sn + (int64_t)pos[t] * half;
    if (h < n_heads) {
        rope_head(q + ((int64_t)t * n_heads + h) * hd, half, c, s, neox);
        return;
    }
    h -= n_heads;
    int64_t kvd = (int64_t)n_kv_heads * hd, src = (int64_t)t * kvd + (int64_t)h * hd;
    rope_head(k + src, half, c, s, neox);
    __syncthreads();
    int64_t off = (int64_t)seq[t] * seq_stride + (int64_t)pos[t] * kvd + (int64_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        kv_put(kc + off + d, k[src + d]);
        kv_put(vc + off + d, v[src + d]);
    }
}

extern "C" void cuda_ops_rope_kv(float *q, float *k, const float *v, int n, int n_heads, int n_kv_heads, int head_dim,
                                 int rot_dim, const int *pos, const float *cs, const float *sn, int neox, void *kc,
                                 void *vc, int kv_type, const int *seq, int64_t seq_stride) {
    if (n <= 0) return;
    dim3 grid((unsigned)(n_heads + n_kv_heads), (unsigned)n);
    if (kv_type == 1)
        k_rope_kv<__half><<<grid, 64>>>(q, k, v, n_heads, n_kv_heads, head_dim, rot_dim / 2, pos, cs, sn, neox,
                                        (__half *)kc, (__half *)vc, seq, seq_stride);
    else
        k_rope_kv<float><<<grid, 64>>>(q, k, v, n_heads, n_kv_heads, head_dim, rot_dim / 2, pos, cs, sn, neox,
                                       (float *)kc, (float *)vc, seq, seq_stride);
}

/* ---- attention: block (head, token); the spec of ops_isa.h step by step ----------------------- */
__device__ __forceinline__ float fold16(float *a) {
#pragma unroll
    for (int s = 8; s >= 1; s /= 2)
#pragma unroll
        for (int i = 0; i < s; i++) a[i] = __fadd_rn(a[i], a[i + s]);
    return a[0];
}

#define ATT_THREADS 128
#define ATT_TJ 32          /* cache rows per shared-memory tile */
#define ATT_MAXD 4         /* head_dim <= ATT_MAXD · ATT_THREADS */

/* rows j0..j0+nj-1 of one head of a cache (stride elements apart) into tile (ATT_TJ, hd + 1), as
 * f32, all threads loading (coalesced along d); the caller syncs */
template <typename KT>
__device__ __forceinline__ void att_tile(float *tile, const KT *X, int64_t stride, int j0, int nj, int hd) {
    for (int e = threadIdx.x; e < nj * hd; e += ATT_THREADS) {
        int r = e / hd, d = e - r * hd;
        tile[r * (hd + 1) + d] = kv_get(X + (int64_t)(j0 + r) * stride + d);
    }
}

/* The arithmetic is the spec's, operation for operation and in its order (each score by one
 * thread over d; each output element by one thread over j); the cache is read in tiles through
 * shared memory so that the loads are coalesced and in flight together. */
template <typename KT>
__global__ void __launch_bounds__(ATT_THREADS) k_attn(float *out, const float *q, const KT *kc, const KT *vc,
                                                      const int *seq, const int *pos, int64_t seq_stride, int n_heads,
                                                      int n_kv_heads, int hd, float scale, float *scores, int n_ctx) {
    extern __shared__ float shm[];   /* qs (hd) | tile (ATT_TJ, hd + 1) | ptile (ATT_TJ) */
    float *qs = shm, *tile = shm + hd, *ptile = tile + ATT_TJ * (hd + 1);
    __shared__ float red[ATT_THREADS / 32], lanes[16], bc;
    int h = blockIdx.x, t = blockIdx.y, tid = threadIdx.x;
    int nkv = pos[t] + 1, kvh = h / (n_heads / n_kv_heads);
    int64_t stride = (int64_t)n_kv_heads * hd;
    const KT *K = kc + (int64_t)seq[t] * seq_stride + (int64_t)kvh * hd;
    const KT *V = vc + (int64_t)seq[t] * seq_stride + (int64_t)kvh * hd;
    const float *qh = q + ((int64_t)t * n_heads + h) * hd;
    float *sc = scores + ((int64_t)t * n_heads + h) * n_ctx;
    for (int d = tid; d < hd; d += ATT_THREADS) qs[d] = qh[d];
    /* s_j = fold16(lanes d % 16 of fmaf(q_d, k_jd, ·)) · scale; and the running max */
    float m = -INFINITY;
    for (int j0 = 0; j0 < nkv; j0 += ATT_TJ) {
        int nj = nkv - j0 < ATT_TJ ? nkv - j0 : ATT_TJ;
        __syncthreads();   /* qs written / the last tile read */
        att_tile(tile, K, stride, j0, nj, hd);
        __syncthreads();
        if (tid < nj) {
            const float *kj = tile + tid * (hd + 1);
            float a[16];
#pragma unroll
            for (int l = 0; l < 16; l++) a[l] = 0.0f;
            for (int d0 = 0; d0 < hd; d0 += 16)
#pragma unroll
                for (int l = 0; l < 16; l++)
                    if (d0 + l < hd) a[l] = fmaf(qs[d0 + l], kj[d0 + l], a[l]);
            float s = __fmul_rn(fold16(a), scale);
            sc[j0 + tid] = s;
            m = fmaxf(m, s);
        }
    }
    for (int o = 16; o; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (!(tid & 31)) red[tid >> 5] = m;
    __syncthreads();
    if (!tid) {
        float mm = red[0];
        for (int i = 1; i < ATT_THREADS / 32; i++) mm = fmaxf(mm, red[i]);
        bc = mm;
    }
    __syncthreads();
    m = bc;
    for (int j = tid; j < nkv; j += ATT_THREADS) sc[j] = exp_spec(__fsub_rn(sc[j], m));
    __syncthreads();
    /* softmax sum: lane i % 16 in increasing i, folded by halves */
    if (tid < 16) {
        float acc = 0.0f;
        for (int j = tid; j < nkv; j += 16) acc = __fadd_rn(acc, sc[j]);
        lanes[tid] = acc;
    }
    __syncthreads();
    if (!tid) bc = __fdiv_rn(1.0f, fold16(lanes));
    __syncthreads();
    float inv = bc;
    /* out_d = fmaf(p_j, v_jd, out_d) for j = 0, 1, … with p_j = e_j · inv */
    float acc[ATT_MAXD];
#pragma unroll
    for (int i = 0; i < ATT_MAXD; i++) acc[i] = 0.0f;
    for (int j0 = 0; j0 < nkv; j0 += ATT_TJ) {
        int nj = nkv - j0 < ATT_TJ ? nkv - j0 : ATT_TJ;
        att_tile(tile, V, stride, j0, nj, hd);
        if (tid < nj) ptile[tid] = __fmul_rn(sc[j0 + tid], inv);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < ATT_MAXD; i++) {
            int d = tid + i * ATT_THREADS;
            if (d < hd)
                for (int r = 0; r < nj; r++) acc[i] = fmaf(ptile[r], tile[r * (hd + 1) + d], acc[i]);
        }
        __syncthreads();
    }
    float *o = out + ((int64_t)t * n_heads + h) * hd;
#pragma unroll
    for (int i = 0; i < ATT_MAXD; i++) {
        int d = tid + i * ATT_THREADS;
        if (d < hd) o[d] = acc[i];
    }
}

extern "C" size_t cuda_ops_attention_max_hd(void) { return ATT_MAXD * ATT_THREADS; }

extern "C" void cuda_ops_attention(float *out, const float *q, const void *kc, const void *vc, int kv_type, int n,
                                   const int *seq, const int *pos, int64_t seq_stride, int n_heads, int n_kv_heads,
                                   int hd, float scale, float *scores, int n_ctx) {
    if (n <= 0) return;
    dim3 grid((unsigned)n_heads, (unsigned)n);
    size_t shm = ((size_t)hd + (size_t)ATT_TJ * (hd + 1) + ATT_TJ) * sizeof(float);
    if (shm > 48 * 1024) {   /* heads over ~360 wide: opt in to more than the default 48 KiB, raised as needed */
        static size_t granted[2];
        if (shm > granted[kv_type == 1]) {
            if (kv_type == 1) cudaFuncSetAttribute(k_attn<__half>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
            else cudaFuncSetAttribute(k_attn<float>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
            granted[kv_type == 1] = shm;
        }
    }
    if (kv_type == 1)
        k_attn<__half><<<grid, ATT_THREADS, shm>>>(out, q, (const __half *)kc, (const __half *)vc, seq, pos, seq_stride,
                                                   n_heads, n_kv_heads, hd, scale, scores, n_ctx);
    else
        k_attn<float><<<grid, ATT_THREADS, shm>>>(out, q, (const float *)kc, (const float *)vc, seq, pos, seq_stride,
                                                  n_heads, n_kv_heads, hd, scale, scores, n_ctx);
}

/* ---- gates and residuals ---------------------------------------------------------------------- */
__global__ void k_act_mul(float *g, const float *u, int64_t n, int relu2) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        g[i] = act_mul1(g[i], u[i], relu2);
}

__global__ void k_add(float *y, const float *x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __fadd_rn(y[i], x[i]);
}

static unsigned blocks_for(int64_t n) {
    int64_t b = (n + 255) / 256;
    return (unsigned)(b < 4096 ? (b > 0 ? b : 1) : 4096);
}

extern "C" void cuda_ops_act_mul(float *g, const float *u, int64_t n, int relu2) {
    if (n > 0) k_act_mul<<<blocks_for(n), 256>>>(g, u, n, relu2);
}

extern "C" void cuda_ops_add(float *y, const float *x, int64_t n) {
    if (n > 0) k_add<<<blocks_for(n), 256>>>(y, x, n);
}
