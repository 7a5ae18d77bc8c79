/* cuda_rowops: block-wide row helpers shared by the kernels of cuda_ops.cu and cuda_tmat.cu, so
 * a fused kernel computes what the separate ones do, bit for bit: the RMSNorm row scale (Σx² in
 * double, the tree of k_rmsnorm), act_quant of a row whose values come from a functor, one RoPE
 * head, and the gate activation. Every helper is called by all threads of a block (they sync). */
#ifndef TERN_CUDA_ROWOPS_CUH
#define TERN_CUDA_ROWOPS_CUH
#include <cuda_runtime.h>
#include <stdint.h>
#include "kernels/ops_isa.h"

/* threads per block of the row kernels (norms, quantisation): one block per row, and at decode a
 * single row, so the block is as wide as a block may be */
#define ROW_THREADS 1024

/* 1 / sqrt(mean(x²) + eps) of the row x (dim,), as ops_rmsnorm: every thread gets it */
__device__ __forceinline__ float row_rms_scale(const float *x, int64_t dim, float eps) {
    __shared__ double part[32];
    __shared__ float sc;
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) acc += (double)__fmul_rn(x[i], x[i]);
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (!(threadIdx.x & 31)) part[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (!threadIdx.x) {
        double sum = 0.0;
        for (int i = 0; i < (int)(blockDim.x >> 5); i++) sum += part[i];
        sc = __fdiv_rn(1.0f, sqrtf(__fadd_rn((float)(sum / (double)dim), eps)));
    }
    __syncthreads();
    return sc;
}

/* act_quant of the row y(0..cols): q = round(y · 127/max|y|) clamped to ±127 (s = 1 when the
 * row is 0), s_out = that scale, qsum_out = Σq. y(i) must give the same value each call. */
template <class F>
__device__ __forceinline__ void row_quant(F y, int64_t cols, int8_t *q, float *s_out, int32_t *qsum_out) {
    __shared__ float smax[32];
    __shared__ int ssum[32];
    __shared__ float sc;
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    float m = 0.0f;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, fabsf(y(i)));
    for (int o = 16; o; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (!lane) smax[wid] = m;
    __syncthreads();
    if (!threadIdx.x) {
        float a = 0.0f;
        for (int i = 0; i < nw; i++) a = fmaxf(a, smax[i]);
        sc = a > 0.0f ? 127.0f / a : 1.0f;
    }
    __syncthreads();
    float st = sc;
    int acc = 0;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
        float v = roundf(__fmul_rn(y(i), st));   /* round half away from zero, as roundf on the CPU */
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        q[i] = (int8_t)v;
        acc += (int)v;
    }
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (!lane) ssum[wid] = acc;
    __syncthreads();
    if (!threadIdx.x) {
        int t = 0;
        for (int i = 0; i < nw; i++) t += ssum[i];
        *s_out = st;
        *qsum_out = t;
    }
}

/* one head xh (head_dim,) rotated in place by the table rows c, s (half,); threads split the pairs */
__device__ __forceinline__ void rope_head(float *xh, int half, const float *c, const float *s, int neox) {
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        float x0 = xh[a], x1 = xh[b];
        xh[a] = __fsub_rn(__fmul_rn(x0, c[i]), __fmul_rn(x1, s[i]));
        xh[b] = __fadd_rn(__fmul_rn(x0, s[i]), __fmul_rn(x1, c[i]));
    }
}

/* Programmatic dependent launch (sm_90+): a kernel launched with the PDL attribute may start
 * while the kernel before it still runs; it must call grid_dep_wait() before it reads what that
 * kernel wrote or writes anything. grid_dep_launch() lets the next such kernel start early.
 * Both are no-ops below sm_90 and for kernels launched without the attribute. */
__device__ __forceinline__ void grid_dep_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dep_launch(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
/* the 128-byte lines of [p, p + bytes) into L2, split over a warp's lanes */
__device__ __forceinline__ void prefetch_l2(const void *p, int64_t bytes, int lane) {
    for (int64_t o = (int64_t)lane * 128; o < bytes; o += 32 * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"((const char *)p + o));
}

/* ops_exp_spec (ops_isa.h) operation for operation: attention's softmax and SiLU */
__device__ __forceinline__ float exp_spec(float x) {
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

/* act(g) ⊙ u: relu² or SiLU (g / (1 + exp_spec(−g)) · u), as ops_relu2_mul / ops_silu_mul */
__device__ __forceinline__ float act_mul1(float g, float u, int relu2) {
    if (relu2) {
        float r = g > 0.0f ? g : 0.0f;
        return __fmul_rn(__fmul_rn(r, r), u);
    }
    return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, exp_spec(-g))), u);
}

#endif
