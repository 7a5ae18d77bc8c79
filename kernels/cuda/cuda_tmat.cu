/* cuda_tmat: act_quant and the W2A8 product over gpack weights (see cuda_tmat.h, gpack.h).
 * GEMV: one warp per row, each lane reads 16-byte chunks (64 trits) of the row, so a warp
 * reads 512 contiguous bytes per load; up to 8 tokens share each weight load. GEMM: 64 rows ×
 * 32 tokens per block through shared memory, 64 columns per step. Both reduce integers only,
 * then apply the one epilogue below. */
#include "kernels/cuda/cuda_tmat.h"
#include <cuda_runtime.h>
#include <stdint.h>

#define MASK2 0x03030303u

/* ---- activations: one block per token ---------------------------------------------------- */
__global__ void k_quant(const float *__restrict__ x, int64_t cols, int8_t *__restrict__ q, float *s, int32_t *qsum) {
    __shared__ float smax[32];
    __shared__ int ssum[32];
    __shared__ float sc;
    const float *xt = x + blockIdx.x * cols;
    int8_t *qt = q + blockIdx.x * cols;
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    float m = 0.0f;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, fabsf(xt[i]));
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
        float v = roundf(__fmul_rn(xt[i], st));   /* round half away from zero, as roundf on the CPU */
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        qt[i] = (int8_t)v;
        acc += (int)v;
    }
    for (int o = 16; o; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (!lane) ssum[wid] = acc;
    __syncthreads();
    if (!threadIdx.x) {
        int t = 0;
        for (int i = 0; i < nw; i++) t += ssum[i];
        s[blockIdx.x] = st;
        qsum[blockIdx.x] = t;
    }
}

extern "C" void cuda_tmat_quant(const float *x, int n, int64_t cols, int8_t *q, float *s, int32_t *qsum) {
    if (n > 0) k_quant<<<n, 256>>>(x, cols, q, s, qsum);
}

/* mat.c's epilogue: the same operations in the same order */
__device__ __forceinline__ float epi(int acc, int qsum, float s, float scale, float lscale) {
    float v = __fmul_rn(__fdiv_rn((float)(acc - qsum), s), scale);
    return lscale != 1.0f ? __fmul_rn(v, lscale) : v;
}

/* 16 codes × 16 activations: word w against the int4 of activations 16g..16g+15 */
__device__ __forceinline__ int dot16(uint32_t w, int4 a, int acc) {
    acc = __dp4a((int)(w & MASK2), a.x, acc);
    acc = __dp4a((int)((w >> 2) & MASK2), a.y, acc);
    acc = __dp4a((int)((w >> 4) & MASK2), a.z, acc);
    return __dp4a((int)((w >> 6) & MASK2), a.w, acc);
}

/* ---- GEMV: warp per row, NT tokens share every weight load --------------------------------- */
template <int NT>
__global__ void __launch_bounds__(256) k_gemv(const uint32_t *__restrict__ w, int64_t rows, int64_t cols, float scale,
                                              float lscale, const int8_t *__restrict__ q, const float *__restrict__ s,
                                              const int32_t *__restrict__ qsum, int n, float *__restrict__ y) {
    int64_t row = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (row >= rows) return;   /* whole warps leave together: rows are per warp */
    int64_t nc = cols / 64;    /* 16-byte chunks per row */
    const uint4 *wr = (const uint4 *)(w + row * (cols / 16));
    int acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0;
#pragma unroll 2
    for (int64_t i = lane; i < nc; i += 32) {
        uint4 wv = __ldg(wr + i);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < n) {
                const int4 *xa = (const int4 *)(q + t * cols) + 4 * i;
                acc[t] = dot16(wv.x, __ldg(xa + 0), acc[t]);
                acc[t] = dot16(wv.y, __ldg(xa + 1), acc[t]);
                acc[t] = dot16(wv.z, __ldg(xa + 2), acc[t]);
                acc[t] = dot16(wv.w, __ldg(xa + 3), acc[t]);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        int a = acc[t];
        for (int o = 16; o; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
        if (lane == 0 && t < n) y[t * rows + row] = epi(a, qsum[t], s[t], scale, lscale);
    }
}

/* ---- GEMM: block = 64 rows × 32 tokens, 256 threads; thread (r, g) owns row r, tokens 8g..8g+7 */
#define GM_BM 64
#define GM_BN 32
__global__ void __launch_bounds__(256) k_gemm(const uint32_t *__restrict__ w, int64_t rows, int64_t cols, float scale,
                                              float lscale, const int8_t *__restrict__ q, const float *__restrict__ s,
                                              const int32_t *__restrict__ qsum, int n, float *__restrict__ y) {
    __shared__ uint32_t ws[GM_BM][5];   /* 4 words (64 trits) per row, padded: no bank conflicts */
    __shared__ int xs[GM_BN][16];       /* 64 int8 per token; a warp reads one token row: broadcast */
    int tid = threadIdx.x, r = tid & 63, g = tid >> 6;
    int64_t row0 = (int64_t)blockIdx.x * GM_BM, t0 = (int64_t)blockIdx.y * GM_BN;
    int64_t nwr = cols / 16;
    int acc[8];
#pragma unroll
    for (int i = 0; i < 8; i++) acc[i] = 0;
    for (int64_t k0 = 0; k0 < cols; k0 += 64) {
        {
            int rr = tid >> 2, ww = tid & 3;
            ws[rr][ww] = row0 + rr < rows ? __ldg(w + (row0 + rr) * nwr + k0 / 16 + ww) : 0u;
        }
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int idx = tid + 256 * h, tt = idx >> 4, kk = idx & 15;
            xs[tt][kk] = t0 + tt < n ? __ldg((const int *)(q + (t0 + tt) * cols + k0) + kk) : 0;
        }
        __syncthreads();
#pragma unroll
        for (int ww = 0; ww < 4; ww++) {
            uint32_t wv = ws[r][ww];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int c = (int)((wv >> (2 * j)) & MASK2);
#pragma unroll
                for (int i = 0; i < 8; i++) acc[i] = __dp4a(c, xs[8 * g + i][4 * ww + j], acc[i]);
            }
        }
        __syncthreads();
    }
    int64_t row = row0 + r;
    if (row >= rows) return;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int64_t t = t0 + 8 * g + i;
        if (t < n) y[t * rows + row] = epi(acc[i], qsum[t], s[t], scale, lscale);
    }
}

extern "C" void cuda_tmat_mul(const uint32_t *w, int64_t rows, int64_t cols, float scale, float lscale,
                              const int8_t *q, const float *s, const int32_t *qsum, int n, float *y) {
    if (n <= 0 || rows <= 0) return;
    if (n > 8) {
        dim3 grid((unsigned)((rows + GM_BM - 1) / GM_BM), (unsigned)((n + GM_BN - 1) / GM_BN));
        k_gemm<<<grid, 256>>>(w, rows, cols, scale, lscale, q, s, qsum, n, y);
        return;
    }
    unsigned blocks = (unsigned)((rows + 7) / 8);   /* 8 warps = 8 rows per block */
    if (n == 1) k_gemv<1><<<blocks, 256>>>(w, rows, cols, scale, lscale, q, s, qsum, n, y);
    else if (n == 2) k_gemv<2><<<blocks, 256>>>(w, rows, cols, scale, lscale, q, s, qsum, n, y);
    else if (n <= 4) k_gemv<4><<<blocks, 256>>>(w, rows, cols, scale, lscale, q, s, qsum, n, y);
    else k_gemv<8><<<blocks, 256>>>(w, rows, cols, scale, lscale, q, s, qsum, n, y);
}
