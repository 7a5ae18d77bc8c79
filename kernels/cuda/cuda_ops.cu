/* cuda_ops: block float ops on the GPU in kernels/ops.c's arithmetic (see ops_isa.h): products
 * that the CPU rounds separately are written __fmul_rn/__fadd_rn so nvcc cannot fuse them, and
 * the fmaf the spec fuses are fmaf here. RMSNorm sums x² in double in a tree (the CPU: 8 lanes
 * in order) — the f32 scale differs only on a double-rounding tie. Everything else, SiLU's and
 * the softmax's exp included (exp_spec, cuda_rowops.cuh), follows the spec operation by operation. */
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_rowops.cuh"
#include "kernels/ops.h"
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

/* ---- KV cache: f32, f16 or q8_0 (kernels/ops.h: ggml's Q8_0 blocks of a position's row) --------
 * A cache type is a policy: bytes(n) for n elements, get(base, e) for element e counted from a
 * block-aligned base, and a row store. Everything is addressed in bytes from the cache's start:
 * (seq, pos, head) offsets are whole blocks for q8_0 (head_dim % 32 == 0). */
struct kvp_f32 {
    static __host__ __device__ int64_t bytes(int64_t n) { return n * 4; }
    static __device__ float get(const uint8_t *b, int64_t e) { return ((const float *)b)[e]; }
};
struct kvp_f16 {
    static __host__ __device__ int64_t bytes(int64_t n) { return n * 2; }
    static __device__ float get(const uint8_t *b, int64_t e) { return __half2float(((const __half *)b)[e]); }
};
struct kvp_q8 {
    static __host__ __device__ int64_t bytes(int64_t n) { return n / 32 * 34; }
    static __device__ float get(const uint8_t *b, int64_t e) {   /* (float)q · d, as ops.c's kv_at */
        const uint8_t *blk = b + (e >> 5) * 34;
        return __fmul_rn((float)(int8_t)blk[2 + (e & 31)], __half2float(*(const __half *)blk));
    }
};

/* x (n,) into the cache at dst (all threads of the block; n % 32 == 0 for q8_0): f32 as is, f16
 * rounded to nearest even, q8_0 as quant.c's q8_0_row — a warp per block: d = max|x| / 127,
 * q = roundf(x · (1/d)), d stored as f16 */
template <class P>
__device__ __forceinline__ void kv_row_put(uint8_t *dst, const float *x, int n);
template <>
__device__ __forceinline__ void kv_row_put<kvp_f32>(uint8_t *dst, const float *x, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) ((float *)dst)[i] = x[i];
}
template <>
__device__ __forceinline__ void kv_row_put<kvp_f16>(uint8_t *dst, const float *x, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) ((__half *)dst)[i] = __float2half_rn(x[i]);
}
template <>
__device__ __forceinline__ void kv_row_put<kvp_q8>(uint8_t *dst, const float *x, int n) {
    int lane = threadIdx.x & 31;
    for (int b = threadIdx.x >> 5; b < n / 32; b += blockDim.x >> 5) {
        float v = x[32 * b + lane], amax = fabsf(v);
        for (int o = 16; o; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        float d = __fdiv_rn(amax, 127.0f), id = d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f;
        uint8_t *blk = dst + 34 * b;
        if (!lane) *(__half *)blk = __float2half_rn(d);
        blk[2 + lane] = (uint8_t)(int8_t)roundf(__fmul_rn(v, id));
    }
}

template <class P>
__global__ void k_kv_store(uint8_t *kc, uint8_t *vc, const float *k, const float *v, const int *seq, const int *pos,
                           int64_t seq_stride, int kv_dim) {
    int t = blockIdx.x;
    int64_t off = P::bytes((int64_t)seq[t] * seq_stride + (int64_t)pos[t] * kv_dim);
    kv_row_put<P>(kc + off, k + (int64_t)t * kv_dim, kv_dim);
    kv_row_put<P>(vc + off, v + (int64_t)t * kv_dim, kv_dim);
}

extern "C" void cuda_ops_kv_store(void *kc, void *vc, int kv_type, const float *k, const float *v, int n,
                                  const int *seq, const int *pos, int64_t seq_stride, int kv_dim) {
    if (n <= 0) return;
    uint8_t *K = (uint8_t *)kc, *V = (uint8_t *)vc;
    if (kv_type == KV_Q8_0) k_kv_store<kvp_q8><<<n, 128>>>(K, V, k, v, seq, pos, seq_stride, kv_dim);
    else if (kv_type == KV_F16) k_kv_store<kvp_f16><<<n, 128>>>(K, V, k, v, seq, pos, seq_stride, kv_dim);
    else k_kv_store<kvp_f32><<<n, 128>>>(K, V, k, v, seq, pos, seq_stride, kv_dim);
}

/* ---- RoPE of q and k and the cache store of k and v in one launch: block (head, token); the
 * blocks of q heads rotate, those of kv heads rotate k, then store that head of k and v */
template <class P>
__global__ void k_rope_kv(float *q, float *k, const float *v, int n_heads, int n_kv_heads, int hd, int half,
                          const int *pos, const float *cs, const float *sn, int neox, uint8_t *kc, uint8_t *vc,
                          const int *seq, int64_t seq_stride) {
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
    int64_t off = P::bytes((int64_t)seq[t] * seq_stride + (int64_t)pos[t] * kvd + (int64_t)h * hd);
    kv_row_put<P>(kc + off, k + src, hd);
    kv_row_put<P>(vc + off, v + src, hd);
}

extern "C" void cuda_ops_rope_kv(float *q, float *k, const float *v, int n, int n_heads, int n_kv_heads, int head_dim,
                                 int rot_dim, const int *pos, const float *cs, const float *sn, int neox, void *kc,
                                 void *vc, int kv_type, const int *seq, int64_t seq_stride) {
    if (n <= 0) return;
    dim3 grid((unsigned)(n_heads + n_kv_heads), (unsigned)n);
    uint8_t *K = (uint8_t *)kc, *V = (uint8_t *)vc;
    if (kv_type == KV_Q8_0)
        k_rope_kv<kvp_q8><<<grid, 64>>>(q, k, v, n_heads, n_kv_heads, head_dim, rot_dim / 2, pos, cs, sn, neox, K, V,
                                        seq, seq_stride);
    else if (kv_type == KV_F16)
        k_rope_kv<kvp_f16><<<grid, 64>>>(q, k, v, n_heads, n_kv_heads, head_dim, rot_dim / 2, pos, cs, sn, neox, K, V,
                                         seq, seq_stride);
    else
        k_rope_kv<kvp_f32><<<grid, 64>>>(q, k, v, n_heads, n_kv_heads, head_dim, rot_dim / 2, pos, cs, sn, neox, K, V,
                                         seq, seq_stride);
}

/* ---- context shift: block (kv head, layer) walks the slot's rows upwards: row p's head read as
 * f32, rotated by -discard (rope_head with the sine negated: ops_rope_table's values at -discard),
 * stored at row p - discard; its values copied there. Rows below p are never read again. */
template <class P>
__global__ void k_kv_shift(uint8_t *kc, uint8_t *vc, int64_t layer_stride, int64_t seq_stride, int seq, int keep,
                           int discard, int n_past, int n_kv_heads, int hd, int half, const float *cs, const float *sn,
                           int neox) {
    extern __shared__ float shx[];   /* x (hd) | negated sine (half) */
    float *x = shx, *ns = shx + hd;
    int64_t kvd = (int64_t)n_kv_heads * hd;
    int64_t col = (int64_t)blockIdx.y * layer_stride + (int64_t)seq * seq_stride + (int64_t)blockIdx.x * hd;
    int64_t hb = P::bytes(hd);
    for (int i = threadIdx.x; i < half; i += blockDim.x) ns[i] = -sn[i];
    for (int p = keep + discard; p < n_past; p++) {
        int64_t src = col + (int64_t)p * kvd, dst = src - (int64_t)discard * kvd;
        __syncthreads();   /* ns written; the last row's x stored */
        for (int d = threadIdx.x; d < hd; d += blockDim.x) x[d] = P::get(kc + P::bytes(src), d);
        __syncthreads();
        rope_head(x, half, cs, ns, neox);
        __syncthreads();
        kv_row_put<P>(kc + P::bytes(dst), x, hd);
        const uint8_t *vs = vc + P::bytes(src);
        uint8_t *vd = vc + P::bytes(dst);
        for (int64_t i = threadIdx.x; i < hb; i += blockDim.x) vd[i] = vs[i];
    }
}

extern "C" void cuda_ops_kv_shift(void *kc, void *vc, int kv_type, int n_layer, int64_t layer_stride,
                                  int64_t seq_stride, int seq, int keep, int discard, int n_past, int n_kv_heads, int hd,
                                  int rot_dim, const float *cs, const float *sn, int neox) {
    if (n_layer <= 0 || keep + discard >= n_past) return;
    dim3 grid((unsigned)n_kv_heads, (unsigned)n_layer);
    size_t shm = (size_t)(hd + rot_dim / 2) * sizeof(float);
    uint8_t *K = (uint8_t *)kc, *V = (uint8_t *)vc;
    int half = rot_dim / 2;
    if (kv_type == KV_Q8_0)
        k_kv_shift<kvp_q8><<<grid, 64, shm>>>(K, V, layer_stride, seq_stride, seq, keep, discard, n_past, n_kv_heads, hd,
                                              half, cs, sn, neox);
    else if (kv_type == KV_F16)
        k_kv_shift<kvp_f16><<<grid, 64, shm>>>(K, V, layer_stride, seq_stride, seq, keep, discard, n_past, n_kv_heads,
                                               hd, half, cs, sn, neox);
    else
        k_kv_shift<kvp_f32><<<grid, 64, shm>>>(K, V, layer_stride, seq_stride, seq, keep, discard, n_past, n_kv_heads,
                                               hd, half, cs, sn, neox);
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
template <class P>
__device__ __forceinline__ void att_tile(float *tile, const uint8_t *X, int64_t stride, int j0, int nj, int hd) {
    for (int e = threadIdx.x; e < nj * hd; e += ATT_THREADS) {
        int r = e / hd, d = e - r * hd;
        tile[r * (hd + 1) + d] = P::get(X, (int64_t)(j0 + r) * stride + d);
    }
}

/* The arithmetic is the spec's, operation for operation and in its order (each score by one
 * thread over d; each output element by one thread over j); the cache is read in tiles through
 * shared memory so that the loads are coalesced and in flight together. */
template <class P>
__global__ void __launch_bounds__(ATT_THREADS) k_attn(float *out, const float *q, const uint8_t *kc, const uint8_t *vc,
                                                      const int *seq, const int *pos, int64_t seq_stride, int n_heads,
                                                      int n_kv_heads, int hd, float scale, float *scores, int n_ctx) {
    extern __shared__ float shm[];   /* qs (hd) | tile (ATT_TJ, hd + 1) | ptile (ATT_TJ) */
    float *qs = shm, *tile = shm + hd, *ptile = tile + ATT_TJ * (hd + 1);
    __shared__ float red[ATT_THREADS / 32], lanes[16], bc;
    int h = blockIdx.x, t = blockIdx.y, tid = threadIdx.x;
    int nkv = pos[t] + 1, kvh = h / (n_heads / n_kv_heads);
    int64_t stride = (int64_t)n_kv_heads * hd;
    const uint8_t *K = kc + P::bytes((int64_t)seq[t] * seq_stride + (int64_t)kvh * hd);
    const uint8_t *V = vc + P::bytes((int64_t)seq[t] * seq_stride + (int64_t)kvh * hd);
    const float *qh = q + ((int64_t)t * n_heads + h) * hd;
    float *sc = scores + ((int64_t)t * n_heads + h) * n_ctx;
    for (int d = tid; d < hd; d += ATT_THREADS) qs[d] = qh[d];
    /* s_j = fold16(lanes d % 16 of fmaf(q_d, k_jd, ·)) · scale; and the running max */
    float m = -INFINITY;
    for (int j0 = 0; j0 < nkv; j0 += ATT_TJ) {
        int nj = nkv - j0 < ATT_TJ ? nkv - j0 : ATT_TJ;
        __syncthreads();   /* qs written / the last tile read */
        att_tile<P>(tile, K, stride, j0, nj, hd);
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
        att_tile<P>(tile, V, stride, j0, nj, hd);
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
        static size_t granted[3];
        int ti = kv_type == KV_Q8_0 ? 2 : kv_type == KV_F16 ? 1 : 0;
        if (shm > granted[ti]) {
            if (ti == 2) cudaFuncSetAttribute(k_attn<kvp_q8>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
            else if (ti == 1) cudaFuncSetAttribute(k_attn<kvp_f16>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
            else cudaFuncSetAttribute(k_attn<kvp_f32>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
            granted[ti] = shm;
        }
    }
    const uint8_t *K = (const uint8_t *)kc, *V = (const uint8_t *)vc;
    if (kv_type == KV_Q8_0)
        k_attn<kvp_q8><<<grid, ATT_THREADS, shm>>>(out, q, K, V, seq, pos, seq_stride, n_heads, n_kv_heads, hd, scale,
                                                   scores, n_ctx);
    else if (kv_type == KV_F16)
        k_attn<kvp_f16><<<grid, ATT_THREADS, shm>>>(out, q, K, V, seq, pos, seq_stride, n_heads, n_kv_heads, hd, scale,
                                                    scores, n_ctx);
    else
        k_attn<kvp_f32><<<grid, ATT_THREADS, shm>>>(out, q, K, V, seq, pos, seq_stride, n_heads, n_kv_heads, hd, scale,
                                                    scores, n_ctx);
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
