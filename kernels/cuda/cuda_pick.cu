/* cuda_pick: penalty, argmax and top-k of logit rows on the GPU (see cuda_pick.h). One block of
 * 1024 threads per row. Argmax: one pass, each thread's first best, merged by (value, lower
 * index). Top-k: a radix select on the floats' order keys (8 bits a pass, four passes; lanes of a
 * warp with the same digit add once) finds the k-th best key T and how many of the keys equal
 * to T to take; one more pass collects the keys above T (any order) and the first of those equal
 * to T in index order (ballots ranked across the block), then a rank sort of the k. */
#include "kernels/cuda/cuda_pick.h"
#include <cuda_runtime.h>
#include <stdint.h>

#define PICK_THREADS 1024
#define PICK_WARPS (PICK_THREADS / 32)
#define FULL 0xffffffffu

/* larger float, larger key; −0 and +0 one key (the sampler orders by ==, then by id). NaN never
 * reaches a key that matters: a row with one is handed back (n = -1). */
__device__ __forceinline__ uint32_t fkey(float v) {
    uint32_t u = __float_as_uint(v);
    if (!(u << 1)) u = 0;
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

/* (bv, bi) = the better of itself and (ov, oi): higher value, then lower index; bi < 0: none */
__device__ __forceinline__ void best_merge(float &bv, int &bi, float ov, int oi) {
    if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
        bv = ov;
        bi = oi;
    }
}

/* sampler.c's argmax: the first index of the largest logit, NaNs skipped; 0 when x[0] is NaN */
__device__ void pick_argmax(const float *x, int64_t V, cuda_pick_res_t *r) {
    __shared__ float sv[PICK_WARPS];
    __shared__ int si[PICK_WARPS];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    float bv = 0.0f;
    int bi = -1;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {   /* a thread's indices ascend: > keeps its first */
        float v = x[i];
        if (v == v && (bi < 0 || v > bv)) {
            bv = v;
            bi = (int)i;
        }
    }
    for (int o = 16; o; o >>= 1) best_merge(bv, bi, __shfl_xor_sync(FULL, bv, o), __shfl_xor_sync(FULL, bi, o));
    if (!lane) {
        sv[w] = bv;
        si[w] = bi;
    }
    __syncthreads();
    if (w) return;
    bv = lane < (int)(blockDim.x >> 5) ? sv[lane] : 0.0f;
    bi = lane < (int)(blockDim.x >> 5) ? si[lane] : -1;
    for (int o = 16; o; o >>= 1) best_merge(bv, bi, __shfl_xor_sync(FULL, bv, o), __shfl_xor_sync(FULL, bi, o));
    if (!lane) {
        int id = x[0] != x[0] || bi < 0 ? 0 : bi;
        r->n = 1;
        r->id[0] = id;
        r->logit[0] = x[id];
    }
}

/* the k (1..CUDA_PICK_MAX, < V) best of x, best first, ties by lower index */
__device__ void pick_top(const float *x, int64_t V, int k, cuda_pick_res_t *r) {
    __shared__ unsigned hist[256];
    __shared__ unsigned s_sel, s_need;
    __shared__ uint32_t ckey[CUDA_PICK_MAX];
    __shared__ int cid[CUDA_PICK_MAX];
    __shared__ int s_ngt;
    __shared__ int wcnt[PICK_WARPS];
    int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, nw = blockDim.x >> 5;
    uint32_t prefix = 0, pmask = 0;
    unsigned need = (unsigned)k;
    /* radix select, most significant digit first: keys with the digits chosen so far count by
     * their next digit; the digit where the count from the top reaches `need` is the k-th's */
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        int nan = 0;
        for (int64_t c0 = 0; c0 < V; c0 += blockDim.x) {   /* whole warps in step: the match below */
            int64_t i = c0 + tid;
            float v = i < V ? x[i] : 0.0f;
            nan |= v != v;
            uint32_t kk = fkey(v);
            unsigned bin = i < V && (kk & pmask) == prefix ? (kk >> shift) & 255u : 256u;
            unsigned peers = __match_any_sync(FULL, bin);
            if (bin < 256u && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], (unsigned)__popc(peers));
        }
        if (shift == 24 && __syncthreads_or(nan)) {   /* no order: the host samples this row */
            if (!tid) r->n = -1;
            return;
        }
        __syncthreads();
        if (!tid) {
            unsigned cum = 0;
            int b = 255;
            for (; b > 0; b--) {
                if (cum + hist[b] >= need) break;
                cum += hist[b];
            }
            s_sel = (unsigned)b;
            s_need = need - cum;
        }
        __syncthreads();
        prefix |= s_sel << shift;
        pmask |= 255u << shift;
        need = s_need;
    }
    /* T = prefix: the k − need keys above it in any order, then the first `need` equal to it by
     * index; each chunk's equal keys ranked by ballots (warp counts, then lanes below) */
    const uint32_t T = prefix;
    const int base = k - (int)need;
    if (!tid) s_ngt = 0;
    __syncthreads();
    int taken = 0;
    for (int64_t c0 = 0; c0 < V; c0 += blockDim.x) {
        int64_t i = c0 + tid;
        uint32_t kk = i < V ? fkey(x[i]) : 0u;
        if (i < V && kk > T) {
            int sl = atomicAdd(&s_ngt, 1);
            ckey[sl] = kk;
            cid[sl] = (int)i;
        }
        int eq = i < V && kk == T;
        unsigned bal = __ballot_sync(FULL, eq);
        if (!lane) wcnt[w] = __popc(bal);
        __syncthreads();
        int rank = taken, all = 0;
        for (int j = 0; j < nw; j++) {
            if (j < w) rank += wcnt[j];
            all += wcnt[j];
        }
        rank += __popc(bal & ((1u << lane) - 1u));
        if (eq && rank < (int)need) {
            ckey[base + rank] = kk;
            cid[base + rank] = (int)i;
        }
        taken += all;
        __syncthreads();   /* wcnt is rewritten next chunk; s_ngt is settled */
        if (taken >= (int)need && s_ngt == base) break;   /* the same for every thread */
    }
    __syncthreads();
    if (tid < k) {   /* rank sort: (key, index) are distinct */
        uint32_t mk = ckey[tid];
        int mi = cid[tid], rk = 0;
        for (int j = 0; j < k; j++) rk += ckey[j] > mk || (ckey[j] == mk && cid[j] < mi);
        r->id[rk] = mi;
        r->logit[rk] = x[mi];
    }
    if (!tid) r->n = k;
}

__global__ void __launch_bounds__(PICK_THREADS) k_pick(float *logits, int64_t V, const cuda_pick_req_t *req,
                                                       const int32_t *pen, cuda_pick_res_t *res) {
    const cuda_pick_req_t q = req[blockIdx.x];
    if (q.mode != CUDA_PICK_ARGMAX && q.mode != CUDA_PICK_TOP) return;
    float *x = logits + (int64_t)blockIdx.x * V;
    cuda_pick_res_t *r = res + blockIdx.x;
    if (q.penalty != 1.0f)   /* sampler.c's apply_penalty: the ids are distinct, a thread each */
        for (int i = threadIdx.x; i < q.pen_n; i += blockDim.x) {
            int id = pen[q.pen_off + i];
            if (id < 0 || id >= V) continue;
            float l = x[id];
            x[id] = l > 0.0f ? __fdiv_rn(l, q.penalty) : __fmul_rn(l, q.penalty);
        }
    __syncthreads();
    if (q.mode == CUDA_PICK_ARGMAX) {
        pick_argmax(x, V, r);
    } else if (q.k < 1 || q.k > CUDA_PICK_MAX || q.k >= V) {   /* not ours to order: the host does */
        if (!threadIdx.x) r->n = -1;
    } else {
        pick_top(x, V, q.k, r);
    }
}

extern "C" void cuda_pick(float *logits, int m, int64_t n_vocab, const cuda_pick_req_t *req, const int32_t *pen,
                          cuda_pick_res_t *res) {
    if (m > 0 && n_vocab > 0) k_pick<<<m, PICK_THREADS>>>(logits, n_vocab, req, pen, res);
}
