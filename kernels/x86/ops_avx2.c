/* ops_avx2: AVX2 + FMA + F16C softmax (with the spec's polynomial exp), attention heads and f16
 * row conversions. Same arithmetic as the scalar spec in ops.c / ops_isa.h, so the same bits:
 * two ymm hold the 16 spec lanes (lanes 0-7, 8-15); tails finish the same lanes in scalar.
 * Not here: the scalar ops that are not hot (ops.c serves every ISA). */
#pragma GCC optimize("fp-contract=off") /* only the spec's multiply-adds are fused */
#include <immintrin.h>
#include "core/half.h"
#include "kernels/ops.h"
#include "kernels/ops_isa.h"
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

INLINE float fold8(__m256 s) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

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

/* 8 cache values from element i of kind KV_F32 / KV_F16 */
INLINE __m256 load_kv(const int kind, const void *p, int64_t i) {
    if (kind == KV_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    return _mm256_loadu_ps((const float *)p + i);
}

/* out[d0 .. d0+8·NV) = Σ_j p_j · v_j */
INLINE void v_acc(const int kind, const int NV, float *out, const void *v, int n_kv, int64_t stride,
                  int d0, const float *p) {
    __m256 o[8];
#pragma GCC unroll 8
    for (int i = 0; i < NV; i++) o[i] = _mm256_setzero_ps();
    for (int j = 0; j < n_kv; j++) {
        __m256 pj = _mm256_set1_ps(p[j]);
        const int64_t base = (int64_t)j * stride + d0;
#pragma GCC unroll 8
        for (int i = 0; i < NV; i++) o[i] = _mm256_fmadd_ps(pj, load_kv(kind, v, base + 8 * i), o[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < NV; i++) _mm256_storeu_ps(out + d0 + 8 * i, o[i]);
}

/* q·k_j for 2 positions: lanes d%16 in (lo, hi) ymm pairs */
INLINE void head(const int kind, float *out, const float *q, const void *k, const void *v, int n_kv,
                 int64_t stride, int hd, float scale, float *scores) {
    int j = 0;
    for (; j + 2 <= n_kv; j += 2) {
        __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0;
        const int64_t b = (int64_t)j * stride;
        for (int d = 0; d < hd; d += 16) {
            __m256 q0 = _mm256_loadu_ps(q + d), q1 = _mm256_loadu_ps(q + d + 8);
            a0 = _mm256_fmadd_ps(q0, load_kv(kind, k, b + d), a0);
            b0 = _mm256_fmadd_ps(q1, load_kv(kind, k, b + d + 8), b0);
            a1 = _mm256_fmadd_ps(q0, load_kv(kind, k, b + stride + d), a1);
            b1 = _mm256_fmadd_ps(q1, load_kv(kind, k, b + stride + d + 8), b1);
        }
        scores[j] = fold8(_mm256_add_ps(a0, b0)) * scale;
        scores[j + 1] = fold8(_mm256_add_ps(a1, b1)) * scale;
    }
    for (; j < n_kv; j++) {
        __m256 a = _mm256_setzero_ps(), bb = a;
        const int64_t b = (int64_t)j * stride;
        for (int d = 0; d < hd; d += 16) {
            a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), load_kv(kind, k, b + d), a);
            bb = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 8), load_kv(kind, k, b + d + 8), bb);
        }
        scores[j] = fold8(_mm256_add_ps(a, bb)) * scale;
    }
    ops_softmax_avx2(scores, n_kv);
    int d0 = 0;
    for (; d0 + 64 <= hd; d0 += 64) v_acc(kind, 8, out, v, n_kv, stride, d0, scores);
    for (; d0 < hd; d0 += 16) v_acc(kind, 2, out, v, n_kv, stride, d0, scores);
}

/* ---- q8_0 cache: a head is hd/32 blocks (f16 d, 32 int8); values (float)q · d as kv_at ---- */
INLINE __m256 q8_d(const uint8_t *blk) {
    uint16_t h;
    memcpy(&h, blk, 2);
    return _mm256_set1_ps(_cvtsh_ss(h));   /* F16C: exact, as f16_to_f32 */
}
/* values 8·part .. 8·part + 7 of the block (part 0..3) */
INLINE __m256 q8_vals(const uint8_t *blk, int part, __m256 d) {
    __m128i q = _mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * part));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
}

/* out[32·b0 .. 32·(b0 + NB)) = Σ_j p_j · v_j: NB blocks, four ymm each */
INLINE void v_acc_q8(const int NB, float *out, const uint8_t *v, int n_kv, size_t rb, int b0, const float *p) {
    __m256 o[8];
#pragma GCC unroll 8
    for (int i = 0; i < 4 * NB; i++) o[i] = _mm256_setzero_ps();
    for (int j = 0; j < n_kv; j++) {
        __m256 pj = _mm256_set1_ps(p[j]);
        const uint8_t *row = v + (size_t)j * rb + (size_t)b0 * KV_Q8_0_BYTES;
#pragma GCC unroll 2
        for (int b = 0; b < NB; b++) {
            const uint8_t *blk = row + (size_t)b * KV_Q8_0_BYTES;
            __m256 d = q8_d(blk);
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) o[4 * b + c] = _mm256_fmadd_ps(pj, q8_vals(blk, c, d), o[4 * b + c]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < 4 * NB; i++) _mm256_storeu_ps(out + 32 * b0 + 8 * i, o[i]);
}

/* head() for a q8_0 cache: rows of rb bytes; the same (lo, hi) lanes and order, two positions at once */
static void head_q8(float *out, const float *q, const uint8_t *k, const uint8_t *v, int n_kv, size_t rb, int hd,
                    float scale, float *scores) {
    const int nb = hd / KV_Q8_0_BLOCK;
    int j = 0;
    for (; j + 2 <= n_kv; j += 2) {
        __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0;
        const uint8_t *r0 = k + (size_t)j * rb, *r1 = r0 + rb;
        for (int b = 0; b < nb; b++) {
            const uint8_t *k0 = r0 + (size_t)b * KV_Q8_0_BYTES, *k1 = r1 + (size_t)b * KV_Q8_0_BYTES;
            __m256 d0 = q8_d(k0), d1 = q8_d(k1);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {   /* elements 16h .. 16h + 15: lo 8, hi 8 */
                __m256 q0 = _mm256_loadu_ps(q + 32 * b + 16 * h), q1 = _mm256_loadu_ps(q + 32 * b + 16 * h + 8);
                a0 = _mm256_fmadd_ps(q0, q8_vals(k0, 2 * h, d0), a0);
                b0 = _mm256_fmadd_ps(q1, q8_vals(k0, 2 * h + 1, d0), b0);
                a1 = _mm256_fmadd_ps(q0, q8_vals(k1, 2 * h, d1), a1);
                b1 = _mm256_fmadd_ps(q1, q8_vals(k1, 2 * h + 1, d1), b1);
            }
        }
        scores[j] = fold8(_mm256_add_ps(a0, b0)) * scale;
        scores[j + 1] = fold8(_mm256_add_ps(a1, b1)) * scale;
    }
    for (; j < n_kv; j++) {
        __m256 a = _mm256_setzero_ps(), bb = a;
        for (int b = 0; b < nb; b++) {
            const uint8_t *k0 = k + (size_t)j * rb + (size_t)b * KV_Q8_0_BYTES;
            __m256 d0 = q8_d(k0);
            for (int h = 0; h < 2; h++) {
                a = _mm256_fmadd_ps(_mm256_loadu_ps(q + 32 * b + 16 * h), q8_vals(k0, 2 * h, d0), a);
                bb = _mm256_fmadd_ps(_mm256_loadu_ps(q + 32 * b + 16 * h + 8), q8_vals(k0, 2 * h + 1, d0), bb);
            }
        }
        scores[j] = fold8(_mm256_add_ps(a, bb)) * scale;
    }
    ops_softmax_avx2(scores, n_kv);
    int c0 = 0;
    for (; c0 + 2 <= nb; c0 += 2) v_acc_q8(2, out, v, n_kv, rb, c0, scores);
    for (; c0 < nb; c0++) v_acc_q8(1, out, v, n_kv, rb, c0, scores);
}

static void attn_head(float *out, const float *q, const void *k, const void *v, int kv_type, int n_kv,
                      int64_t stride, int hd, float scale, float *scores) {
    if (hd % 16) ops_attn_head_ref(out, q, k, v, kv_type, n_kv, stride, hd, scale, scores);
    else if (kv_type == KV_F16) head(KV_F16, out, q, k, v, n_kv, stride, hd, scale, scores);
    else if (kv_type == KV_Q8_0) head_q8(out, q, k, v, n_kv, ops_kv_bytes(KV_Q8_0, stride), hd, scale, scores);
    else head(KV_F32, out, q, k, v, n_kv, stride, hd, scale, scores);
}

/* one head at a time (each row's conversion not shared yet: AVX-512 shares it) */
void ops_attn_heads_avx2(float *out, const float *q, const void *k, const void *v, int kv_type, int ng, int n_kv,
                         int64_t stride, int hd, float scale, float *scores) {
    for (int g = 0; g < ng; g++)
        attn_head(out + (size_t)g * hd, q + (size_t)g * hd, k, v, kv_type, n_kv, stride, hd, scale, scores);
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
