/* cuda_fmat: the lm head on the GPU in fmat.c's spec order (fmat_isa.h). F32/F16/BF16: lane l of
 * a warp accumulates columns c ≡ l (mod 32) in increasing c with fmaf, then the 32 lanes fold by
 * halves (shfl_down 16, 8, 4, 2, 1 is exactly that fold). F16 rows are staged 256 columns at a
 * time through shared memory, 4 stages loaded at once, so the warp's loads are 16-byte,
 * contiguous and 2 KiB in flight. Q8_0: x quantised
 * per 32-block as ggml's reference does; 16 lanes per row, lane (b&1)·8 + k takes bytes 4k..4k+3
 * of the blocks b of its parity. */
#include "kernels/cuda/cuda_fmat.h"
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#define FM_NT 4   /* tokens per pass over a row */

__device__ __forceinline__ float wget(int kind, const void *w, int64_t i) {
    if (kind == CUDA_FMAT_F32) return ((const float *)w)[i];
    if (kind == CUDA_FMAT_F16) return __half2float(((const __half *)w)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)w)[i]);
}

__device__ __forceinline__ float fold32(float a) {
    for (int o = 16; o; o >>= 1) a = __fadd_rn(a, __shfl_down_sync(0xffffffffu, a, o));
    return a;
}

#define FM_PF 4   /* F16: 256-column stages loaded ahead, so a warp has 2 KiB in flight */

/* one warp per row; 8 warps per block; NT tokens per pass over the row (1 at decode, else FM_NT) */
template <int KIND, int NT>
__global__ void __launch_bounds__(256) k_fmat(const void *__restrict__ w, int64_t rows, int64_t cols,
                                              const float *__restrict__ x, int n, float *__restrict__ y) {
    __shared__ __align__(16) __half stage[8][FM_PF][256];
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    int64_t row = (int64_t)blockIdx.x * 8 + wid;
    if (row >= rows) return;   /* per-warp exit; only __syncwarp below */
    int staged = KIND == CUDA_FMAT_F16 && cols % 8 == 0;
    int64_t cs = staged ? cols / 256 * 256 : 0;
    for (int t0 = 0; t0 < n; t0 += NT) {
        float acc[NT];
#pragma unroll
        for (int i = 0; i < NT; i++) acc[i] = 0.0f;
        for (int64_t c0 = 0; c0 < cs; c0 += 256 * FM_PF) {
            int ns = (int)((cs - c0) / 256 < FM_PF ? (cs - c0) / 256 : FM_PF);
            const uint4 *src = (const uint4 *)((const __half *)w + row * cols + c0);
            uint4 v[FM_PF];
#pragma unroll
            for (int p = 0; p < FM_PF; p++)
                if (p < ns) v[p] = __ldg(src + 32 * p + lane);
#pragma unroll
            for (int p = 0; p < FM_PF; p++)
                if (p < ns) ((uint4 *)stage[wid][p])[lane] = v[p];
            __syncwarp();
            for (int p = 0; p < ns; p++)
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    int c = k * 32 + lane;
                    float wv = __half2float(stage[wid][p][c]);
#pragma unroll
                    for (int i = 0; i < NT; i++)
                        if (t0 + i < n) acc[i] = fmaf(wv, x[(int64_t)(t0 + i) * cols + c0 + 256 * p + c], acc[i]);
                }
            __syncwarp();
        }
        for (int64_t c = cs + lane; c < cols; c += 32) {
            float wv = wget(KIND, w, row * cols + c);
#pragma unroll
            for (int i = 0; i < NT; i++)
                if (t0 + i < n) acc[i] = fmaf(wv, x[(int64_t)(t0 + i) * cols + c], acc[i]);
        }
#pragma unroll
        for (int i = 0; i < NT; i++) {
            float v = fold32(acc[i]);
            if (lane == 0 && t0 + i < n) y[(int64_t)(t0 + i) * rows + row] = v;
        }
    }
}

/* ggml quantize_row_q8_0 (reference): one thread per 32-block */
__global__ void k_q8_quant(const float *x, int64_t cols, int n, int8_t *q, float *dx) {
    int64_t nb = cols / 32;
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= nb * n) return;
    const float *xb = x + i * 32;
    float amax = 0.0f;
    for (int k = 0; k < 32; k++) amax = fmaxf(amax, fabsf(xb[k]));
    float d = __fdiv_rn(amax, 127.0f), id = d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f;
    for (int k = 0; k < 32; k++) {
        float v = __fmul_rn(xb[k], id);
        q[i * 32 + k] = (int8_t)(v == v ? roundf(fminf(fmaxf(v, -127.0f), 127.0f)) : 0.0f);
    }
    dx[i] = __half2float(__float2half_rn(d));
}

/* 16 lanes per row, 2 rows per warp */
__global__ void __launch_bounds__(256) k_q8(const uint8_t *__restrict__ w, int64_t rows, int64_t cols,
                                            const int8_t *__restrict__ xq, const float *__restrict__ dx, int n,
                                            float *__restrict__ y) {
    int64_t gt = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    int64_t row = gt >> 4;
    int l = threadIdx.x & 15, k = l & 7;
    int valid = row < rows;
    int64_t nb = cols / 32, rr = valid ? row : rows - 1;
    const uint8_t *wr = w + rr * nb * 34;
    for (int t = 0; t < n; t++) {
        float acc = 0.0f;
        for (int64_t b = l >> 3; b < nb; b += 2) {
            const uint8_t *blk = wr + b * 34;
            const uint16_t *p = (const uint16_t *)(blk + 2 + 4 * k);   /* 2-byte aligned only */
            int wq = (int)((uint32_t)p[0] | (uint32_t)p[1] << 16);
            int xv = *(const int *)(xq + (int64_t)t * cols + b * 32 + 4 * k);
            int part = __dp4a(wq, xv, 0);
            float sc = __fmul_rn(__half2float(__ushort_as_half(*(const unsigned short *)blk)), dx[(int64_t)t * nb + b]);
            acc = fmaf(sc, (float)part, acc);
        }
        for (int o = 8; o; o >>= 1) acc = __fadd_rn(acc, __shfl_down_sync(0xffffffffu, acc, o, 16));
        if (l == 0 && valid) y[(int64_t)t * rows + row] = acc;
    }
}

extern "C" size_t cuda_fmat_scratch_bytes(int kind, int64_t cols, int n) {
    if (kind != CUDA_FMAT_Q8_0 || n <= 0) return 0;
    size_t qb = ((size_t)n * (size_t)cols + 255) / 256 * 256;
    return qb + (size_t)n * (size_t)(cols / 32) * sizeof(float);
}

extern "C" void cuda_fmat_mul(int kind, const void *w, int64_t rows, int64_t cols, const float *x, int n, float *y,
                              void *scratch) {
    if (n <= 0 || rows <= 0) return;
    if (kind == CUDA_FMAT_Q8_0) {
        int8_t *q = (int8_t *)scratch;
        float *dx = (float *)((uint8_t *)scratch + ((size_t)n * (size_t)cols + 255) / 256 * 256);
        int64_t nblk = (int64_t)n * (cols / 32);
        k_q8_quant<<<(unsigned)((nblk + 127) / 128), 128>>>(x, cols, n, q, dx);
        k_q8<<<(unsigned)((rows * 16 + 255) / 256), 256>>>((const uint8_t *)w, rows, cols, q, dx, n, y);
        return;
    }
    unsigned blocks = (unsigned)((rows + 7) / 8);
    if (n == 1) {   /* decode: no per-token predicates in the inner loop */
        if (kind == CUDA_FMAT_F16) k_fmat<CUDA_FMAT_F16, 1><<<blocks, 256>>>(w, rows, cols, x, n, y);
        else if (kind == CUDA_FMAT_BF16) k_fmat<CUDA_FMAT_BF16, 1><<<blocks, 256>>>(w, rows, cols, x, n, y);
        else k_fmat<CUDA_FMAT_F32, 1><<<blocks, 256>>>(w, rows, cols, x, n, y);
    } else if (kind == CUDA_FMAT_F16) k_fmat<CUDA_FMAT_F16, FM_NT><<<blocks, 256>>>(w, rows, cols, x, n, y);
    else if (kind == CUDA_FMAT_BF16) k_fmat<CUDA_FMAT_BF16, FM_NT><<<blocks, 256>>>(w, rows, cols, x, n, y);
    else k_fmat<CUDA_FMAT_F32, FM_NT><<<blocks, 256>>>(w, rows, cols, x, n, y);
}
