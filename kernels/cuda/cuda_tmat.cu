/* cuda_tmat: act_quant and the W2A8 product over gpack weights (see cuda_tmat.h, gpack.h).
 * GEMV: one warp per R rows (1, 2, 4: by size), each lane reads 16-byte chunks (64 trits) of
 * each row, so a warp reads 512 contiguous bytes of a row per load; up to 8 tokens share each
 * weight load and R rows each activation load; with PDL (sm_90) the rows are prefetched into L2
 * before the kernel waits for the one before it. GEMM: 64 rows ×
 * 32 tokens per block through shared memory, 64 columns per step. Both reduce integers only,
 * then apply the one epilogue below. */
#include "kernels/cuda/cuda_tmat.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_rowops.cuh"
#include <cuda_runtime.h>
#include <stdint.h>

#define MASK2 0x03030303u

/* ---- activations: one block per token ---------------------------------------------------- */
__global__ void k_quant(const float *__restrict__ x, int64_t cols, int8_t *__restrict__ q, float *s, int32_t *qsum) {
    const float *xt = x + blockIdx.x * cols;
    row_quant([=](int64_t i) { return xt[i]; }, cols, q + blockIdx.x * cols, s + blockIdx.x, qsum + blockIdx.x);
}

/* x += add (when add), then act_quant of rmsnorm(x) ⊙ w (norm) or of x: one block per token */
__global__ void k_norm_quant(float *x, const float *add, int norm, const float *w, int64_t cols, float eps,
                             int8_t *__restrict__ q, float *s, int32_t *qsum) {
    grid_dep_launch();   /* the product after this may start fetching its weights now */
    float *xt = x + blockIdx.x * cols;
    if (add) {
        const float *at = add + blockIdx.x * cols;
        for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) xt[i] = __fadd_rn(xt[i], at[i]);
        __syncthreads();
    }
    int8_t *qt = q + blockIdx.x * cols;
    if (!norm) {
        row_quant([=](int64_t i) { return xt[i]; }, cols, qt, s + blockIdx.x, qsum + blockIdx.x);
        return;
    }
    float sc = row_rms_scale(xt, cols, eps);
    row_quant(
        [=](int64_t i) {
            float v = __fmul_rn(xt[i], sc);
            return w ? __fmul_rn(v, w[i]) : v;
        },
        cols, qt, s + blockIdx.x, qsum + blockIdx.x);
}

extern "C" void cuda_tmat_norm_quant(float *x, const float *add, int norm, const float *w, int n, int64_t cols,
                                     float eps, int8_t *q, float *s, int32_t *qsum) {
    if (n > 0) k_norm_quant<<<n, ROW_THREADS>>>(x, add, norm, w, cols, eps, q, s, qsum);
}

extern "C" void cuda_tmat_quant(const float *x, int n, int64_t cols, int8_t *q, float *s, int32_t *qsum) {
    if (n > 0) k_quant<<<n, ROW_THREADS>>>(x, cols, q, s, qsum);
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

/* ---- GEMV: a warp per R rows, NT tokens: each weight load serves NT tokens, each activation
 * load R rows ------------------------------------------------------------------------------------ */
/* the lane's share of rows wr[0..R) (nc 16-byte chunks each) against tokens 0..n-1 of q */
template <int NT, int R>
__device__ __forceinline__ void rows_dot(const uint4 *const *wr, int64_t nc, int64_t cols,
                                         const int8_t *__restrict__ q, int n, int lane, int (*acc)[NT]) {
#pragma unroll 2
    for (int64_t i = lane; i < nc; i += 32) {
        uint4 wv[R];
#pragma unroll
        for (int r = 0; r < R; r++) wv[r] = __ldg(wr[r] + i);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < n) {
                const int4 *xa = (const int4 *)(q + t * cols) + 4 * i;
                int4 a0 = __ldg(xa + 0), a1 = __ldg(xa + 1), a2 = __ldg(xa + 2), a3 = __ldg(xa + 3);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    int c = dot16(wv[r].x, a0, acc[r][t]);
                    c = dot16(wv[r].y, a1, c);
                    c = dot16(wv[r].z, a2, c);
                    acc[r][t] = dot16(wv[r].w, a3, c);
                }
            }
        }
    }
}

__device__ __forceinline__ int warp_sum(int a) {
    for (int o = 16; o; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
    return a;
}

#define GV_WARPS 8   /* warps per block */
typedef struct segs { cuda_tmat_seg_t s[CUDA_TMAT_MAX_SEGS]; unsigned b0[CUDA_TMAT_MAX_SEGS + 1]; int nseg; } segs_t;

/* block b belongs to the segment whose block range [b0[i], b0[i+1]) holds it; its warp w takes
 * rows R·(8·(b − b0[i]) + w) … + R − 1 of that matrix */
template <int NT, int R>
__global__ void __launch_bounds__(256) k_gemv(segs_t S, int64_t cols, const int8_t *__restrict__ q,
                                              const float *__restrict__ s, const int32_t *__restrict__ qsum, int n,
                                              int pdl) {
    int sg = 0;
    while (sg + 1 < S.nseg && blockIdx.x >= S.b0[sg + 1]) sg++;
    const cuda_tmat_seg_t G = S.s[sg];
    int64_t row0 = ((int64_t)(blockIdx.x - S.b0[sg]) * GV_WARPS + (threadIdx.x >> 5)) * R;
    int lane = threadIdx.x & 31;
    if (row0 >= G.rows) return;   /* whole warps leave together */
    int64_t nc = cols / 64, wpr = cols / 16;   /* 16-byte chunks and words per row */
    const uint4 *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = (const uint4 *)(G.w + (row0 + r < G.rows ? row0 + r : row0) * wpr);
    if (pdl) {   /* weights do not depend on the kernel before: into L2 while it finishes */
#pragma unroll
        for (int r = 0; r < R; r++) prefetch_l2(wr[r], cols / 4, lane);
        grid_dep_wait();
    }
    int acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = 0;
    rows_dot<NT, R>(wr, nc, cols, q, n, lane, acc);
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) {
            int a = warp_sum(acc[r][t]);
            if (lane == 0 && t < n && row0 + r < G.rows)
                G.y[t * G.rows + row0 + r] = epi(a, qsum[t], s[t], G.scale, G.lscale);
        }
}

/* gate and up rows r together: y[t, r] = act(gate·q) ⊙ (up·q) */
template <int NT>
__global__ void __launch_bounds__(256) k_glu(cuda_tmat_seg_t gs, cuda_tmat_seg_t us, int64_t cols, int relu2,
                                             const int8_t *__restrict__ q, const float *__restrict__ s,
                                             const int32_t *__restrict__ qsum, int n, int pdl) {
    int64_t row = (int64_t)blockIdx.x * GV_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= gs.rows) return;
    int64_t nc = cols / 64;
    const uint4 *wr[2] = {(const uint4 *)(gs.w + row * (cols / 16)), (const uint4 *)(us.w + row * (cols / 16))};
    if (pdl) {
        prefetch_l2(wr[0], cols / 4, lane);
        prefetch_l2(wr[1], cols / 4, lane);
        grid_dep_wait();
    }
    int acc[2][NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[0][t] = acc[1][t] = 0;
    rows_dot<NT, 2>(wr, nc, cols, q, n, lane, acc);
#pragma unroll
    for (int t = 0; t < NT; t++) {
        int a = warp_sum(acc[0][t]), b = warp_sum(acc[1][t]);
        if (lane == 0 && t < n)
            gs.y[t * gs.rows + row] = act_mul1(epi(a, qsum[t], s[t], gs.scale, gs.lscale),
                                               epi(b, qsum[t], s[t], us.scale, us.lscale), relu2);
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

/* ---- GEMM on the integer tensor cores (sm_80+): mma.sync m16n8k32 s8 × s8 → s32 -------------
 * A = the weight codes (0, 1, 2 as int8), B = the activations; integer sums are exact, so the
 * result and the epilogue equal k_gemm's bit for bit. A warp owns 16 rows × 8·MM_NT tokens; a
 * block MM_WARPS warps, stacked along the rows. Fragments (PTX ISA, m16n8k32 .s8; g = lane / 4,
 * c = lane % 4): a0 = A[g][4c..4c+3], a1 = A[g+8][4c..], a2 = A[g][16+4c..], a3 = A[g+8][16+4c..];
 * b0 = B[4c..4c+3][g], b1 = B[16+4c..][g]; d0,d1 = C[g][2c, 2c+1], d2,d3 = C[g+8][2c, 2c+1].
 * A gpack word covers 16 columns, column 16w + 4j + b in byte b of (word >> 2j) & 0x03030303,
 * so a0 = (word0 >> 2c) & MASK2 and a2 = (word1 >> 2c) & MASK2: no unpacking. */
#define MM_WARPS 4
#define MM_NT 8    /* token tiles of 8 per warp: 64 tokens */

__device__ __forceinline__ void mma_s8(int (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

__global__ void __launch_bounds__(32 * MM_WARPS) k_gemm_mma(const uint32_t *__restrict__ w, int64_t rows, int64_t cols,
                                                         float scale, float lscale, const int8_t *__restrict__ q,
                                                         const float *__restrict__ s, const int32_t *__restrict__ qsum,
                                                         int n, float *__restrict__ y) {
    int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    int64_t row0 = ((int64_t)blockIdx.x * MM_WARPS + (threadIdx.x >> 5)) * 16;
    int64_t t0 = (int64_t)blockIdx.y * (8 * MM_NT);
    if (row0 >= rows) return;   /* whole warps */
    int64_t wpr = cols / 16, ra = row0 + g, rb = row0 + g + 8;
    const uint2 *wa = (const uint2 *)(w + (ra < rows ? ra : row0) * wpr);   /* words 2i, 2i+1: 32 columns */
    const uint2 *wb = (const uint2 *)(w + (rb < rows ? rb : row0) * wpr);
    const int *qt[MM_NT];   /* token t0 + 8·i + g: its activations as ints */
    int tok_ok[MM_NT];
#pragma unroll
    for (int i = 0; i < MM_NT; i++) {
        int64_t t = t0 + 8 * i + g;
        tok_ok[i] = t < n;
        qt[i] = (const int *)(q + (tok_ok[i] ? t : 0) * cols);
    }
    int acc[MM_NT][4];
#pragma unroll
    for (int i = 0; i < MM_NT; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0;
    const unsigned za = ra < rows ? ~0u : 0u, zb = rb < rows ? ~0u : 0u;   /* rows past the end: codes 0 */
    for (int64_t k = 0; k < cols / 32; k++) {
        uint2 pa = __ldg(wa + k), pb = __ldg(wb + k);
        unsigned a[4] = {(pa.x >> (2 * c)) & MASK2 & za, (pb.x >> (2 * c)) & MASK2 & zb,
                         (pa.y >> (2 * c)) & MASK2 & za, (pb.y >> (2 * c)) & MASK2 & zb};
#pragma unroll
        for (int i = 0; i < MM_NT; i++) {
            unsigned b0 = tok_ok[i] ? (unsigned)__ldg(qt[i] + 8 * k + c) : 0u;
            unsigned b1 = tok_ok[i] ? (unsigned)__ldg(qt[i] + 8 * k + 4 + c) : 0u;
            mma_s8(acc[i], a, b0, b1);
        }
    }
#pragma unroll
    for (int i = 0; i < MM_NT; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int64_t row = e < 2 ? ra : rb, t = t0 + 8 * i + 2 * c + (e & 1);
            if (row < rows && t < n) y[t * rows + row] = epi(acc[i][e], qsum[t], s[t], scale, lscale);
        }
}

/* the GEMM's engine: 0 dp4a (k_gemm), 1 the tensor cores (k_gemm_mma; sm_80+) */
static int g_mma, g_major = -1;

extern "C" int cuda_tmat_set_mma(int on) {
    if (g_major < 0 && cudaDeviceGetAttribute(&g_major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) {
        cudaGetLastError();
        g_major = 0;
    }
    g_mma = on && g_major >= 8;
    return g_mma;
}

/* PDL for the products (cuda_tmat_set_pdl): launched with programmatic stream serialisation */
static int g_pdl;

extern "C" int cuda_tmat_set_pdl(int on) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) {
        cudaGetLastError();
        major = 0;
    }
    g_pdl = on && major >= 9;
    return g_pdl;
}

template <typename... KA, typename... A>
static void launch(void (*k)(KA...), unsigned blocks, A... args) {
    if (!g_pdl) {
        k<<<blocks, 256>>>(args..., 0);
        return;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(blocks);
    cfg.blockDim = dim3(256);
    cfg.stream = cudaStreamPerThread;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    cudaLaunchKernelEx(&cfg, k, args..., 1);
}

static int g_rows = 0;   /* rows per warp of the GEMV, 0: by size (cuda_tmat_set_rows) */
static int g_sms;        /* multiprocessors of the device, asked once */

extern "C" int cuda_tmat_set_rows(int r) {
    g_rows = r == 1 || r == 2 || r == 4 ? r : 0;
    return g_rows;
}

/* 0 (by size): the most rows per warp that still gives every multiprocessor two blocks — small
 * matrices need the blocks, tall ones the loads in flight and the shared activation loads */
static int rows_per_warp(int64_t rows) {
    if (g_rows) return g_rows;
    if (!g_sms && (cudaDeviceGetAttribute(&g_sms, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess || g_sms < 1)) {
        cudaGetLastError();
        g_sms = 128;
    }
    int r = 4;
    while (r > 1 && rows / (GV_WARPS * r) < 2 * g_sms) r /= 2;
    return r;
}

template <int NT>
static void gemv(segs_t &S, int64_t cols, const int8_t *q, const float *s, const int32_t *qsum, int n) {
    int64_t all = 0;
    for (int i = 0; i < S.nseg; i++) all += S.s[i].rows;
    int R = rows_per_warp(all);
    S.b0[0] = 0;
    for (int i = 0; i < S.nseg; i++)
        S.b0[i + 1] = S.b0[i] + (unsigned)((S.s[i].rows + GV_WARPS * R - 1) / (GV_WARPS * R));
    if (!S.b0[S.nseg]) return;
    if (R == 4) launch(k_gemv<NT, 4>, S.b0[S.nseg], S, cols, q, s, qsum, n);
    else if (R == 2) launch(k_gemv<NT, 2>, S.b0[S.nseg], S, cols, q, s, qsum, n);
    else launch(k_gemv<NT, 1>, S.b0[S.nseg], S, cols, q, s, qsum, n);
}

static void gemm(const cuda_tmat_seg_t *g, int64_t cols, const int8_t *q, const float *s, const int32_t *qsum, int n) {
    if (g_mma) {
        dim3 mg((unsigned)((g->rows + 16 * MM_WARPS - 1) / (16 * MM_WARPS)), (unsigned)((n + 8 * MM_NT - 1) / (8 * MM_NT)));
        k_gemm_mma<<<mg, 32 * MM_WARPS>>>(g->w, g->rows, cols, g->scale, g->lscale, q, s, qsum, n, g->y);
        return;
    }
    dim3 grid((unsigned)((g->rows + GM_BM - 1) / GM_BM), (unsigned)((n + GM_BN - 1) / GM_BN));
    k_gemm<<<grid, 256>>>(g->w, g->rows, cols, g->scale, g->lscale, q, s, qsum, n, g->y);
}

extern "C" void cuda_tmat_mul_segs(const cuda_tmat_seg_t *seg, int nseg, int64_t cols, const int8_t *q, const float *s,
                                   const int32_t *qsum, int n) {
    if (n <= 0 || nseg <= 0 || nseg > CUDA_TMAT_MAX_SEGS) return;
    if (n > 8) {   /* prefill: the tiled GEMM, a launch per matrix */
        for (int i = 0; i < nseg; i++)
            if (seg[i].rows > 0) gemm(&seg[i], cols, q, s, qsum, n);
        return;
    }
    segs_t S;
    S.nseg = nseg;
    for (int i = 0; i < nseg; i++) S.s[i] = seg[i];
    if (n == 1) gemv<1>(S, cols, q, s, qsum, n);
    else if (n == 2) gemv<2>(S, cols, q, s, qsum, n);
    else if (n <= 4) gemv<4>(S, cols, q, s, qsum, n);
    else gemv<8>(S, cols, q, s, qsum, n);
}

extern "C" void cuda_tmat_glu(const cuda_tmat_seg_t *gate, const cuda_tmat_seg_t *up, int64_t cols, int relu2,
                              const int8_t *q, const float *s, const int32_t *qsum, int n) {
    if (n <= 0 || gate->rows <= 0) return;
    if (n > 8) {
        gemm(gate, cols, q, s, qsum, n);
        gemm(up, cols, q, s, qsum, n);
        cuda_ops_act_mul(gate->y, up->y, (int64_t)n * gate->rows, relu2);
        return;
    }
    unsigned blocks = (unsigned)((gate->rows + GV_WARPS - 1) / GV_WARPS);
    if (n == 1) launch(k_glu<1>, blocks, *gate, *up, cols, relu2, q, s, qsum, n);
    else if (n == 2) launch(k_glu<2>, blocks, *gate, *up, cols, relu2, q, s, qsum, n);
    else if (n <= 4) launch(k_glu<4>, blocks, *gate, *up, cols, relu2, q, s, qsum, n);
    else launch(k_glu<8>, blocks, *gate, *up, cols, relu2, q, s, qsum, n);
}

extern "C" void cuda_tmat_mul(const uint32_t *w, int64_t rows, int64_t cols, float scale, float lscale,
                              const int8_t *q, const float *s, const int32_t *qsum, int n, float *y) {
    cuda_tmat_seg_t g = {w, y, rows, scale, lscale};
    cuda_tmat_mul_segs(&g, 1, cols, q, s, qsum, n);
}
