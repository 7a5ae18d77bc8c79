/* ops_avx2: AVX2 + FMA + F16C softmax (with the spec's polynomial exp), attention heads and f16
 * row conversions. Same arithmetic as the scalar spec in ops.c / ops_isa.h, so the same bits:
 * two ymm hold the 16 spec lanes (lanes 0-7, 8-15); tails finish the same lanes in scalar.
 * Not here: the scalar ops that are not hot (ops.c serves every ISA). */
#pragma GCC optimize("fp-contract=off") /* only the spec's multiply-adds are fused */
#include <immintrin.h>
#include "core/half.h"
#include "kernels/ops.h"
#include "kernels/ops_isa.h"
#include "kernels/x86/simd_x86.h"
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

static float fold_scalar16(float *acc) {
    for (int s = 8; s >= 1; s /= 2)
        for (int i = 0; i < s; i++) acc[i] += acc[i + s];
    return acc[0];
}

/* ops_exp_spec on 8 lanes */
INLINE __m256 exp8(__m256 x) {
    __m256 ok = _mm256_cmp_ps(x, _mm256_set1_ps(OPS_EXP_LO), _CMP_GE_OQ);
    x = _mm256_min_ps(x, _mm256_set1_ps(OPS_EXP_HI));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(OPS_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-OPS_LN2_HI), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-OPS_LN2_LO), r);
    __m256 z = _mm256_mul_ps(r, r), p = _mm256_set1_ps(OPS_EXP_C0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP_C1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(OPS_EXP_C5));
    __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, z, r), _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(ok, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

void ops_softmax_avx2(float *x, int64_t n) {
    if (n <= 0) return;
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    float l[16];
    _mm256_storeu_ps(l, vm);
    float mx = l[0];
    for (int k = 1; k < 8; k++) mx = l[k] > mx ? l[k] : mx;
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    const __m256 m = _mm256_set1_ps(mx);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    for (i = 0; i + 16 <= n; i += 16) {
        __m256 e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        __m256 e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), m));
        _mm256_storeu_ps(x + i, e0);
        _mm256_storeu_ps(x + i + 8, e1);
        a0 = _mm256_add_ps(a0, e0);
        a1 = _mm256_add_ps(a1, e1);
    }
    float sum;
    if (i < n) {
        _mm256_storeu_ps(l, a0);
        _mm256_storeu_ps(l + 8, a1);
        for (; i < n; i++) {
            x[i] = ops_exp_spec(x[i] - mx);
            l[i % 16] += x[i];
        }
        sum = fold_scalar16(l);
    } else {
        sum = fold8(_mm256_add_ps(a0, a1));
    }
    const float inv = 1.0f / sum;
    const __m256 vi = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vi));
    for (; i < n; i++) x[i] *= inv;
}

/* ---- attention: NG query heads of one kv head together ------------------------------------
 * Each cache row is loaded (and converted: f16, or q8_0's (float)q · d) once for the NG heads
 * that read it; every head's arithmetic is the spec's, in its order (the 16 spec lanes of a
 * score as a (lo, hi) ymm pair; several positions or heads at once to hide FMA latency). */

/* 8 values from element d of position j's row: f32/f16 at element offsets (stride elements a
 * row), q8_0 by block (rb bytes a row) */
INLINE __m256 kv8(const int kind, const void *p, int j, int64_t stride, size_t rb, int d) {
    if (kind == KV_Q8_0) {
        const uint8_t *blk = (const uint8_t *)p + (size_t)j * rb + (size_t)(d / KV_Q8_0_BLOCK) * KV_Q8_0_BYTES;
        uint16_t h;
        memcpy(&h, blk, 2);
        __m128i q = _mm_loadl_epi64((const __m128i *)(blk + 2 + d % KV_Q8_0_BLOCK));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_set1_ps(_cvtsh_ss(h)));   /* F16C: exact */
    }
    const int64_t i = (int64_t)j * stride + d;
    if (kind == KV_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    return _mm256_loadu_ps((const float *)p + i);
}

/* scores of positions j .. j+NP-1 for heads 0..NG-1 (row g of sc: n_kv apart) */
INLINE void kdots(const int kind, const int NG, const int NP, float *sc, int n_kv, const float *q, const void *k,
                  int j, int64_t stride, size_t rb, int hd, float scale) {
    __m256 lo[2][4], hi[2][4];
#pragma GCC unroll 2
    for (int p = 0; p < NP; p++)
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) lo[p][g] = hi[p][g] = _mm256_setzero_ps();
    for (int d = 0; d < hd; d += 16) {
#pragma GCC unroll 2
        for (int p = 0; p < NP; p++) {
            __m256 k0 = kv8(kind, k, j + p, stride, rb, d), k1 = kv8(kind, k, j + p, stride, rb, d + 8);
#pragma GCC unroll 4
            for (int g = 0; g < NG; g++) {
                lo[p][g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)g * hd + d), k0, lo[p][g]);
                hi[p][g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)g * hd + d + 8), k1, hi[p][g]);
            }
        }
    }
#pragma GCC unroll 2
    for (int p = 0; p < NP; p++)
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) sc[(size_t)g * n_kv + j + p] = fold8(_mm256_add_ps(lo[p][g], hi[p][g])) * scale;
}

/* out_g[d0 .. d0 + 8·NV) = Σ_j p_gj · v_j for the NG heads */
INLINE void vsums(const int kind, const int NG, const int NV, float *out, const void *v, int n_kv, int64_t stride,
                  size_t rb, int hd, int d0, const float *p) {
    __m256 o[4][8];
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++)
#pragma GCC unroll 8
        for (int i = 0; i < NV; i++) o[g][i] = _mm256_setzero_ps();
    for (int j = 0; j < n_kv; j++) {
        __m256 x[8];
#pragma GCC unroll 8
        for (int i = 0; i < NV; i++) x[i] = kv8(kind, v, j, stride, rb, d0 + 8 * i);
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) {
            __m256 pj = _mm256_set1_ps(p[(size_t)g * n_kv + j]);
#pragma GCC unroll 8
            for (int i = 0; i < NV; i++) o[g][i] = _mm256_fmadd_ps(pj, x[i], o[g][i]);
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++)
#pragma GCC unroll 8
        for (int i = 0; i < NV; i++) _mm256_storeu_ps(out + (size_t)g * hd + d0 + 8 * i, o[g][i]);
}

/* NG (1, 2, 4) heads: q, out (NG, hd); scores (NG, n_kv) */
INLINE void heads(const int kind, const int NG, float *out, const float *q, const void *k, const void *v, int n_kv,
                  int64_t stride, int hd, float scale, float *scores) {
    const size_t rb = kind == KV_Q8_0 ? ops_kv_bytes(KV_Q8_0, stride) : 0;
    const int NP = NG >= 4 ? 1 : 2;   /* accumulators 2 · NP · NG <= 8 */
    int j = 0;
    for (; j + NP <= n_kv; j += NP) kdots(kind, NG, NP, scores, n_kv, q, k, j, stride, rb, hd, scale);
    for (; j < n_kv; j++) kdots(kind, NG, 1, scores, n_kv, q, k, j, stride, rb, hd, scale);
    for (int g = 0; g < NG; g++) ops_softmax_avx2(scores + (size_t)g * n_kv, n_kv);
    const int NV = NG >= 4 ? 2 : NG == 2 ? 4 : 8;   /* NG · NV <= 8 accumulators */
    int d0 = 0;
    for (; d0 + 8 * NV <= hd; d0 += 8 * NV) vsums(kind, NG, NV, out, v, n_kv, stride, rb, hd, d0, scores);
    for (; d0 < hd; d0 += 16) vsums(kind, NG, 2, out, v, n_kv, stride, rb, hd, d0, scores);
}

/* ng: 1, 2, 4 (ops_attention splits longer runs) */
INLINE void heads_kind(const int kind, int ng, float *out, const float *q, const void *k, const void *v, int n_kv,
                       int64_t stride, int hd, float scale, float *scores) {
    if (ng == 4) heads(kind, 4, out, q, k, v, n_kv, stride, hd, scale, scores);
    else if (ng == 2) heads(kind, 2, out, q, k, v, n_kv, stride, hd, scale, scores);
    else heads(kind, 1, out, q, k, v, n_kv, stride, hd, scale, scores);
}

void ops_attn_heads_avx2(float *out, const float *q, const void *k, const void *v, int kv_type, int ng, int n_kv,
                         int64_t stride, int hd, float scale, float *scores) {
    if (hd % 16) ops_attn_heads_ref(out, q, k, v, kv_type, ng, n_kv, stride, hd, scale, scores);
    else if (kv_type == KV_F16) heads_kind(KV_F16, ng, out, q, k, v, n_kv, stride, hd, scale, scores);
    else if (kv_type == KV_Q8_0) heads_kind(KV_Q8_0, ng, out, q, k, v, n_kv, stride, hd, scale, scores);
    else heads_kind(KV_F32, ng, out, q, k, v, n_kv, stride, hd, scale, scores);
}

void ops_f32_to_f16_avx2(uint16_t *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = f32_to_f16(x[i]);
}

void ops_f16_to_f32_avx2(float *y, const uint16_t *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < n; i++) y[i] = f16_to_f32(x[i]);
}

/* the gates: the spec's arithmetic lane by lane (ops_silu_mul_ref, ops_relu2_mul_ref) */
INLINE __m256 silu8(__m256 g, __m256 u) {
    __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

INLINE __m256 relu2_8(__m256 g, __m256 u) {
    __m256 r = _mm256_max_ps(g, _mm256_setzero_ps());   /* NaN, -0 → the second operand, +0 */
    return _mm256_mul_ps(_mm256_mul_ps(r, r), u);
}

void ops_silu_mul_avx2(float *restrict g, const float *restrict u, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(g + i, silu8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) ops_silu_mul_ref(g + i, u + i, n - i);
}

void ops_relu2_mul_avx2(float *restrict g, const float *restrict u, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(g + i, relu2_8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) ops_relu2_mul_ref(g + i, u + i, n - i);
}
