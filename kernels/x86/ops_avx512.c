/* ops_avx512: AVX-512 softmax (with the spec's polynomial exp), attention heads and f16 row
 * conversions. Same arithmetic as the scalar spec in ops.c / ops_isa.h, so the same bits:
 * one zmm holds the 16 spec lanes; four cache positions are dotted at once to hide FMA latency.
 * Not here: the scalar ops that are not hot (ops.c serves every ISA). */
#pragma GCC optimize("fp-contract=off") /* only the spec's multiply-adds are fused */
#include <immintrin.h>
#include "core/half.h"
#include "kernels/ops.h"
#include "kernels/ops_isa.h"
#include "kernels/x86/simd_x86.h"
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

/* ops_exp_spec on 16 lanes */
INLINE __m512 exp16(__m512 x) {
    __mmask16 ok = _mm512_cmp_ps_mask(x, _mm512_set1_ps(OPS_EXP_LO), _CMP_GE_OQ);
    x = _mm512_min_ps(x, _mm512_set1_ps(OPS_EXP_HI));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(OPS_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-OPS_LN2_HI), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-OPS_LN2_LO), r);
    __m512 z = _mm512_mul_ps(r, r), p = _mm512_set1_ps(OPS_EXP_C0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP_C1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(OPS_EXP_C5));
    __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, z, r), _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mov_ps(ok, _mm512_mul_ps(y, _mm512_castsi512_ps(e)));
}

INLINE __mmask16 tail_mask(int64_t left) { return (__mmask16)((1u << left) - 1); }

void ops_softmax_avx512(float *x, int64_t n) {
    if (n <= 0) return;
    __m512 vm = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(x + i));
    if (i < n) vm = _mm512_max_ps(vm, _mm512_mask_loadu_ps(vm, tail_mask(n - i), x + i));
    const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vm));
    __m512 acc = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), m));
        _mm512_storeu_ps(x + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (i < n) { /* masked lanes add +0: the sum lanes are never -0 */
        __mmask16 t = tail_mask(n - i);
        __m512 e = _mm512_maskz_mov_ps(t, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, x + i), m)));
        _mm512_mask_storeu_ps(x + i, t, e);
        acc = _mm512_add_ps(acc, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / fold16(acc));
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    if (i < n) {
        __mmask16 t = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, t, _mm512_mul_ps(_mm512_maskz_loadu_ps(t, x + i), inv));
    }
}

/* ---- attention: NG query heads of one kv head together ------------------------------------
 * Each cache row is loaded (and converted: f16, or q8_0's (float)q · d) once for the NG heads
 * that read it; every head's arithmetic is the spec's, in its order (one zmm holds the 16 spec
 * lanes of a score; several positions or heads at once to hide FMA latency). */

/* 16 values from element d of position j's row: f32/f16 at element offsets (stride elements a
 * row), q8_0 by block (rb bytes a row) */
INLINE __m512 kv16(const int kind, const void *p, int j, int64_t stride, size_t rb, int d) {
    if (kind == KV_Q8_0) {
        const uint8_t *blk = (const uint8_t *)p + (size_t)j * rb + (size_t)(d / KV_Q8_0_BLOCK) * KV_Q8_0_BYTES;
        uint16_t h;
        memcpy(&h, blk, 2);
        __m128i q = _mm_loadu_si128((const __m128i *)(blk + 2 + d % KV_Q8_0_BLOCK));
        return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), _mm512_set1_ps(_cvtsh_ss(h)));   /* F16C: exact */
    }
    const int64_t i = (int64_t)j * stride + d;
    if (kind == KV_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)));
    return _mm512_loadu_ps((const float *)p + i);
}

/* scores of positions j .. j+NP-1 for heads 0..NG-1 (row g of sc: n_kv apart) */
INLINE void kdots(const int kind, const int NG, const int NP, float *sc, int n_kv, const float *q, const void *k,
                  int j, int64_t stride, size_t rb, int hd, float scale) {
    __m512 a[4][8];
#pragma GCC unroll 4
    for (int p = 0; p < NP; p++)
#pragma GCC unroll 8
        for (int g = 0; g < NG; g++) a[p][g] = _mm512_setzero_ps();
    for (int d = 0; d < hd; d += 16) {
        __m512 qv[8];
#pragma GCC unroll 8
        for (int g = 0; g < NG; g++) qv[g] = _mm512_loadu_ps(q + (size_t)g * hd + d);
#pragma GCC unroll 4
        for (int p = 0; p < NP; p++) {
            __m512 kv = kv16(kind, k, j + p, stride, rb, d);
#pragma GCC unroll 8
            for (int g = 0; g < NG; g++) a[p][g] = _mm512_fmadd_ps(qv[g], kv, a[p][g]);
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < NP; p++)
#pragma GCC unroll 8
        for (int g = 0; g < NG; g++) sc[(size_t)g * n_kv + j + p] = fold16(a[p][g]) * scale;
}

/* out_g[d0 .. d0 + 16·NV) = Σ_j p_gj · v_j for the NG heads */
INLINE void vsums(const int kind, const int NG, const int NV, float *out, const void *v, int n_kv, int64_t stride,
                  size_t rb, int hd, int d0, const float *p) {
    __m512 o[8][8];
#pragma GCC unroll 8
    for (int g = 0; g < NG; g++)
#pragma GCC unroll 8
        for (int i = 0; i < NV; i++) o[g][i] = _mm512_setzero_ps();
    for (int j = 0; j < n_kv; j++) {
        __m512 x[8];
#pragma GCC unroll 8
        for (int i = 0; i < NV; i++) x[i] = kv16(kind, v, j, stride, rb, d0 + 16 * i);
#pragma GCC unroll 8
        for (int g = 0; g < NG; g++) {
            __m512 pj = _mm512_set1_ps(p[(size_t)g * n_kv + j]);
#pragma GCC unroll 8
            for (int i = 0; i < NV; i++) o[g][i] = _mm512_fmadd_ps(pj, x[i], o[g][i]);
        }
    }
#pragma GCC unroll 8
    for (int g = 0; g < NG; g++)
#pragma GCC unroll 8
        for (int i = 0; i < NV; i++) _mm512_storeu_ps(out + (size_t)g * hd + d0 + 16 * i, o[g][i]);
}

/* NG (1, 2, 4, 8) heads: q, out (NG, hd); scores (NG, n_kv) */
INLINE void heads(const int kind, const int NG, float *out, const float *q, const void *k, const void *v, int n_kv,
                  int64_t stride, int hd, float scale, float *scores) {
    const size_t rb = kind == KV_Q8_0 ? ops_kv_bytes(KV_Q8_0, stride) : 0;
    const int NP = NG >= 4 ? 1 : NG == 2 ? 2 : 4;   /* independent accumulators: NP · NG >= 4 */
    int j = 0;
    for (; j + NP <= n_kv; j += NP) kdots(kind, NG, NP, scores, n_kv, q, k, j, stride, rb, hd, scale);
    for (; j < n_kv; j++) kdots(kind, NG, 1, scores, n_kv, q, k, j, stride, rb, hd, scale);
    for (int g = 0; g < NG; g++) ops_softmax_avx512(scores + (size_t)g * n_kv, n_kv);
    const int NV = NG >= 8 ? 2 : NG == 4 ? 4 : 8;   /* NG · NV <= 16 accumulators */
    int d0 = 0;
    for (; d0 + 16 * NV <= hd; d0 += 16 * NV) vsums(kind, NG, NV, out, v, n_kv, stride, rb, hd, d0, scores);
    for (; d0 < hd; d0 += 16) vsums(kind, NG, 1, out, v, n_kv, stride, rb, hd, d0, scores);
}

/* ng: 1, 2, 4 or 8 (ops_attention splits longer runs) */
INLINE void heads_kind(const int kind, int ng, float *out, const float *q, const void *k, const void *v, int n_kv,
                       int64_t stride, int hd, float scale, float *scores) {
    if (ng == 8) heads(kind, 8, out, q, k, v, n_kv, stride, hd, scale, scores);
    else if (ng == 4) heads(kind, 4, out, q, k, v, n_kv, stride, hd, scale, scores);
    else if (ng == 2) heads(kind, 2, out, q, k, v, n_kv, stride, hd, scale, scores);
    else heads(kind, 1, out, q, k, v, n_kv, stride, hd, scale, scores);
}

void ops_attn_heads_avx512(float *out, const float *q, const void *k, const void *v, int kv_type, int ng, int n_kv,
                           int64_t stride, int hd, float scale, float *scores) {
    if (hd % 16) ops_attn_heads_ref(out, q, k, v, kv_type, ng, n_kv, stride, hd, scale, scores);
    else if (kv_type == KV_F16) heads_kind(KV_F16, ng, out, q, k, v, n_kv, stride, hd, scale, scores);
    else if (kv_type == KV_Q8_0) heads_kind(KV_Q8_0, ng, out, q, k, v, n_kv, stride, hd, scale, scores);
    else heads_kind(KV_F32, ng, out, q, k, v, n_kv, stride, hd, scale, scores);
}

void ops_f32_to_f16_avx512(uint16_t *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(y + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    if (i < n) {
        __mmask16 t = tail_mask(n - i);
        _mm256_mask_storeu_epi16(y + i, t, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(t, x + i),
                                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
}

void ops_f16_to_f32_avx512(float *y, const uint16_t *x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i))));
    if (i < n) {
        __mmask16 t = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, t, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(t, x + i)));
    }
}

/* the gates: the spec's arithmetic lane by lane (ops_silu_mul_ref, ops_relu2_mul_ref) */
INLINE __m512 silu16(__m512 g, __m512 u) {
    __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
    return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), u);
}

INLINE __m512 relu2_16(__m512 g, __m512 u) {
    __m512 r = _mm512_max_ps(g, _mm512_setzero_ps());   /* NaN, -0 → the second operand, +0 */
    return _mm512_mul_ps(_mm512_mul_ps(r, r), u);
}

void ops_silu_mul_avx512(float *restrict g, const float *restrict u, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(g + i, silu16(_mm512_loadu_ps(g + i), _mm512_loadu_ps(u + i)));
    if (i < n) {
        __mmask16 t = tail_mask(n - i);
        _mm512_mask_storeu_ps(g + i, t, silu16(_mm512_maskz_loadu_ps(t, g + i), _mm512_maskz_loadu_ps(t, u + i)));
    }
}

void ops_relu2_mul_avx512(float *restrict g, const float *restrict u, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(g + i, relu2_16(_mm512_loadu_ps(g + i), _mm512_loadu_ps(u + i)));
    if (i < n) {
        __mmask16 t = tail_mask(n - i);
        _mm512_mask_storeu_ps(g + i, t, relu2_16(_mm512_maskz_loadu_ps(t, g + i), _mm512_maskz_loadu_ps(t, u + i)));
    }
}

/* the spec's 8 double accumulators are the 8 lanes of one zmm: 16 squares (in float, as the
 * spec rounds them) go in as their low 8 then their high 8, so each lane sees the same adds in
 * the same order */
void ops_rmsnorm_avx512(float *y, const float *x, const float *w, int64_t n, float eps) {
    __m512d acc = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i), q = _mm512_mul_ps(v, v);
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(q)));
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_extractf32x8_ps(q, 1)));
    }
    double a[8];
    _mm512_storeu_pd(a, acc);
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) a[k] += (double)(x[i + k] * x[i + k]);
    for (; i < n; i++) a[i % 8] += (double)(x[i] * x[i]);
    double sum = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
    const __m512 s = _mm512_set1_ps(1.0f / sqrtf((float)(sum / (double)n) + eps));
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), s);
        _mm512_storeu_ps(y + i, w ? _mm512_mul_ps(v, _mm512_loadu_ps(w + i)) : v);
    }
    if (i < n) {
        __mmask16 t = tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(t, x + i), s);
        _mm512_mask_storeu_ps(y + i, t, w ? _mm512_mul_ps(v, _mm512_maskz_loadu_ps(t, w + i)) : v);
    }
}
