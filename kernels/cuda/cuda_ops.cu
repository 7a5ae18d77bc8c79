/* cuda_ops: block float ops on the GPU in kernels/ops.c's arithmetic (see ops_isa.h): products
 * that the CPU rounds separately are written __fmul_rn/__fadd_rn so nvcc cannot fuse them, and
 * the fmaf the spec fuses are fmaf here. RMSNorm sums x² in double in a tree (the CPU: 8 lanes
 * in order) — the f32 scale differs only on a double-rounding tie. SiLU uses CUDA's expf (≤ 2
 * ulp from glibc's); everything else follows the spec operation by operation. */
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops_isa.h"
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* ---- RMSNorm: one block per row ------------------------------------------------------------ */
__global__ void k_rmsnorm(float *y, const float *x, const float *w, int64_t dim, float eps, const int *rows) {
    __shared__ double part[32];
    __shared__ float sc;
    const float *xt = x + (int64_t)(rows ? rows[blockIdx.x] : (int)blockIdx.x) * dim;
    float *yt = y + (int64_t)blockIdx.x * dim;
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) acc += (double)__fmul_rn(xt[i], xt[i]);
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (!(threadIdx.x & 31)) part[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (!threadIdx.x) {
        double sum = 0.0;
        for (int i = 0; i < (int)(blockDim.x >> 5); i++) sum += part[i];
        sc = __fdiv_rn(1.0f, sqrtf(__fadd_rn((float)(sum / (double)dim), eps)));
    }
    __syncthreads();
    float s = sc;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = __fmul_rn(xt[i], s);
        yt[i] = w ? __fmul_rn(v, w[i]) : v;
    }
}

extern "C" void cuda_ops_rmsnorm(float *y, const float *x, const float *w, int n, int64_t dim, float eps,
                                 const int *rows) {
    if (n > 0) k_rmsnorm<<<n, 256>>>(y, x, w, dim, eps, rows);
}

/* ---- RoPE: block (head, token), thread per pair --------------------------------------------- */
__global__ void k_rope(float *x, int n_heads, int head_dim, int half, const int *pos, const float *cs,
                       const float *sn, int neox) {
    float *xh = x + ((int64_t)blockIdx.y * n_heads + blockIdx.x) * head_dim;
    const float *c = cs + (int64_t)pos[blockIdx.y] * half, *s = sn + (int64_t)pos[blockIdx.y] * half;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        float x0 = xh[a], x1 = xh[b];
        xh[a] = __fsub_rn(__fmul_rn(x0, c[i]), __fmul_rn(x1, s[i]));
        xh[b] = __fadd_rn(__fmul_rn(x0, s[i]), __fmul_rn(x1, c[i]));
    }
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

/* ---- attention: block (head, token); the spec of ops_isa.h step by step ----------------------- */
__device__ float exp_spec(float x) {   /* ops_exp_spec */
    if (!(x >= OPS_EXP_LO)) return 0.0f;
    x = x < OPS_EXP_HI ? x : OPS_EXP_HI;
    float n = rintf(__fmul_rn(x, OPS_LOG2E));
    float r = fmaf(n, -OPS_LN2_HI, x);
    r = fmaf(n, -OPS_LN2_LO, r);
    float z = __fmul_rn(r, r), p = OPS_EXP_C0;
    p = fmaf(p, r, OPS_EXP_C1);
    p = fmaf(p, r, OPS_EXP_C2);
    p = fmaf(p, r, OPS_EXP_C3);
    p = fmaf(p, r, OPS_EXP_C4);
    p = fmaf(p, r, OPS_EXP_C5);
    float y = __fadd_rn(fmaf(p, z, r), 1.0f);
    return __fmul_rn(y, __int_as_float(((int)n + 127) << 23));
}

__device__ __forceinline__ float fold16(float *a) {
#pragma unroll
    for (int s = 8; s >= 1; s /= 2)
#pragma unroll
        for (int i = 0; i < s; i++) a[i] = __fadd_rn(a[i], a[i + s]);
    return a[0];
}

#define ATT_THREADS 128

template <typename KT>
__global__ void __launch_bounds__(ATT_THREADS) k_attn(float *out, const float *q, const KT *kc, const KT *vc,
                                                      const int *seq, const int *pos, int64_t seq_stride, int n_heads,
                                                      int n_kv_heads, int hd, float scale, float *scores, int n_ctx) {
    extern __shared__ float qs[];   /* (hd,) */
    __shared__ float red[ATT_THREADS / 32], lanes[16], bc;
    int h = blockIdx.x, t = blockIdx.y, tid = threadIdx.x;
    int nkv = pos[t] + 1, kvh = h / (n_heads / n_kv_heads);
    int64_t stride = (int64_t)n_kv_heads * hd;
    const KT *K = kc + (int64_t)seq[t] * seq_stride + (int64_t)kvh * hd;
    const KT *V = vc + (int64_t)seq[t] * seq_stride + (int64_t)kvh * hd;
    const float *qh = q + ((int64_t)t * n_heads + h) * hd;
    float *sc = scores + ((int64_t)t * n_heads + h) * n_ctx;
    for (int d = tid; d < hd; d += ATT_THREADS) qs[d] = qh[d];
    __syncthreads();
    /* s_j = fold16(lanes d % 16 of fmaf(q_d, k_jd, ·)) · scale; and the running max */
    float m = -INFINITY;
    for (int j = tid; j < nkv; j += ATT_THREADS) {
        const KT *kj = K + (int64_t)j * stride;
        float a[16];
#pragma unroll
        for (int l = 0; l < 16; l++) a[l] = 0.0f;
        for (int d0 = 0; d0 < hd; d0 += 16)
#pragma unroll
            for (int l = 0; l < 16; l++)
                if (d0 + l < hd) a[l] = fmaf(qs[d0 + l], kv_get(kj + d0 + l), a[l]);
        float s = __fmul_rn(fold16(a), scale);
        sc[j] = s;
        m = fmaxf(m, s);
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
    for (int j = tid; j < nkv; j += ATT_THREADS) sc[j] = __fmul_rn(sc[j], inv);
    __syncthreads();
    /* out_d = fmaf(p_j, v_jd, out_d) for j = 0, 1, … */
    float *o = out + ((int64_t)t * n_heads + h) * hd;
    for (int d = tid; d < hd; d += ATT_THREADS) {
        float acc = 0.0f;
        for (int j = 0; j < nkv; j++) acc = fmaf(sc[j], kv_get(V + (int64_t)j * stride + d), acc);
        o[d] = acc;
    }
}

extern "C" void cuda_ops_attention(float *out, const float *q, const void *kc, const void *vc, int kv_type, int n,
                                   const int *seq, const int *pos, int64_t seq_stride, int n_heads, int n_kv_heads,
                                   int hd, float scale, float *scores, int n_ctx) {
    if (n <= 0) return;
    dim3 grid((unsigned)n_heads, (unsigned)n);
    size_t shm = (size_t)hd * sizeof(float);
    if (kv_type == 1)
        k_attn<__half><<<grid, ATT_THREADS, shm>>>(out, q, (const __half *)kc, (const __half *)vc, seq, pos, seq_stride,
                                                   n_heads, n_kv_heads, hd, scale, scores, n_ctx);
    else
        k_attn<float><<<grid, ATT_THREADS, shm>>>(out, q, (const float *)kc, (const float *)vc, seq, pos, seq_stride,
                                                  n_heads, n_kv_heads, hd, scale, scores, n_ctx);
}

/* ---- gates and residuals ---------------------------------------------------------------------- */
__global__ void k_act_mul(float *g, const float *u, int64_t n, int relu2) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float x = g[i];
        if (relu2) {
            float r = x > 0.0f ? x : 0.0f;
            g[i] = __fmul_rn(__fmul_rn(r, r), u[i]);
        } else {
            g[i] = __fmul_rn(__fdiv_rn(x, __fadd_rn(1.0f, expf(-x))), u[i]);
        }
    }
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
