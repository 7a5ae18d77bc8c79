/* ops_neon: NEON softmax (with the spec's polynomial exp), gated activations, attention heads (f32,
 * f16 and q8_0 caches) and f16 row conversions. Same arithmetic as the scalar spec in ops.c /
 * ops_isa.h, so the same bits: the spec's 16 lanes are four q registers (lane i % 16 in register
 * (i % 16) / 4), folded by the spec's halves; two cache positions are dotted at once to hide FMA
 * latency. Not here: the scalar ops that are not hot (ops.c serves every ISA). */
#pragma GCC optimize("fp-contract=off") /* only the spec's multiply-adds are fused */
#include <arm_neon.h>
#include "core/half.h"
#include "kernels/ops.h"
#include "kernels/ops_isa.h"
#include <math.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

typedef struct lanes16 { float32x4_t r[4]; } lanes16_t;   /* the spec's 16 lanes */

INLINE lanes16_t l16_zero(void) {
    lanes16_t a = {{vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)}};
    return a;
}

/* fold16: lanes i += i + 8, then + 4, + 2, + 1 */
INLINE float fold16(lanes16_t a) {
    float32x4_t lo = vaddq_f32(a.r[0], a.r[2]), hi = vaddq_f32(a.r[1], a.r[3]);
    float32x4_t h = vaddq_f32(lo, hi);
    float32x2_t s = vadd_f32(vget_low_f32(h), vget_high_f32(h));
    return vget_lane_f32(s, 0) + vget_lane_f32(s, 1);
}

/* ops_exp_spec on 4 lanes */
INLINE float32x4_t exp4(float32x4_t x) {
    uint32x4_t ok = vcgeq_f32(x, vdupq_n_f32(OPS_EXP_LO));   /* NaN: false → 0 */
    x = vminq_f32(x, vdupq_n_f32(OPS_EXP_HI));
    float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(OPS_LOG2E)));
    float32x4_t r = vfmaq_f32(x, n, vdupq_n_f32(-OPS_LN2_HI));
    r = vfmaq_f32(r, n, vdupq_n_f32(-OPS_LN2_LO));
    float32x4_t z = vmulq_f32(r, r), p = vdupq_n_f32(OPS_EXP_C0);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP_C1), p, r);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP_C2), p, r);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP_C3), p, r);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP_C4), p, r);
    p = vfmaq_f32(vdupq_n_f32(OPS_EXP_C5), p, r);
    float32x4_t y = vaddq_f32(vfmaq_f32(r, p, z), vdupq_n_f32(1.0f));
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vmulq_f32(y, vreinterpretq_f32_s32(e))), ok));
}

void ops_softmax_neon(float *x, int64_t n) {
    if (n <= 0) return;
    float m = x[0];
    int64_t i = 0;
    if (n >= 4) {
        float32x4_t vm = vld1q_f32(x);
        for (i = 4; i + 4 <= n; i += 4) vm = vmaxq_f32(vm, vld1q_f32(x + i));
        m = vmaxvq_f32(vm);
    }
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    const float32x4_t vmx = vdupq_n_f32(m);
    lanes16_t acc = l16_zero();
    for (i = 0; i + 16 <= n; i += 16)
        for (int k = 0; k < 4; k++) {
            float32x4_t e = exp4(vsubq_f32(vld1q_f32(x + i + 4 * k), vmx));
            vst1q_f32(x + i + 4 * k, e);
            acc.r[k] = vaddq_f32(acc.r[k], e);
        }
    if (i < n) {   /* the tail into its lanes, in order */
        float l[16];
        for (int k = 0; k < 4; k++) vst1q_f32(l + 4 * k, acc.r[k]);
        for (; i < n; i++) {
            x[i] = ops_exp_spec(x[i] - m);
            l[i % 16] += x[i];
        }
        for (int k = 0; k < 4; k++) acc.r[k] = vld1q_f32(l + 4 * k);
    }
    const float inv = 1.0f / fold16(acc);
    const float32x4_t vi = vdupq_n_f32(inv);
    for (i = 0; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_f32(vld1q_f32(x + i), vi));
    for (; i < n; i++) x[i] *= inv;
}

/* ops_rmsnorm_ref: Σ (double)(x·x) in 8 lanes (two per float64x2), the spec's fold, then
 * (x · s) · w */
void ops_rmsnorm_neon(float *y, const float *x, const float *w, int64_t n, float eps) {
    float64x2_t a[4] = {vdupq_n_f64(0.0), vdupq_n_f64(0.0), vdupq_n_f64(0.0), vdupq_n_f64(0.0)};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t p0 = vmulq_f32(vld1q_f32(x + i), vld1q_f32(x + i)), p1 = vmulq_f32(vld1q_f32(x + i + 4), vld1q_f32(x + i + 4));
        a[0] = vaddq_f64(a[0], vcvt_f64_f32(vget_low_f32(p0)));
        a[1] = vaddq_f64(a[1], vcvt_high_f64_f32(p0));
        a[2] = vaddq_f64(a[2], vcvt_f64_f32(vget_low_f32(p1)));
        a[3] = vaddq_f64(a[3], vcvt_high_f64_f32(p1));
    }
    double acc[8];
    for (int k = 0; k < 4; k++) vst1q_f64(acc + 2 * k, a[k]);
    for (; i < n; i++) acc[i % 8] += (double)(x[i] * x[i]);
    double sum = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    float s = 1.0f / sqrtf((float)(sum / (double)n) + eps);
    const float32x4_t vs = vdupq_n_f32(s);
    for (i = 0; i + 4 <= n; i += 4) {
        float32x4_t v = vmulq_f32(vld1q_f32(x + i), vs);
        vst1q_f32(y + i, w ? vmulq_f32(v, vld1q_f32(w + i)) : v);
    }
    for (; i < n; i++) y[i] = w ? (x[i] * s) * w[i] : x[i] * s;
}

/* g / (1 + exp(-g)) · u */
void ops_silu_mul_neon(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    const float32x4_t one = vdupq_n_f32(1.0f);
    for (; i + 4 <= n; i += 4) {
        float32x4_t x = vld1q_f32(g + i);
        float32x4_t s = vdivq_f32(x, vaddq_f32(one, exp4(vnegq_f32(x))));
        vst1q_f32(g + i, vmulq_f32(s, vld1q_f32(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + ops_exp_spec(-g[i])) * u[i];
}

/* (r · r) · u, r = g > 0 ? g : +0 */
void ops_relu2_mul_neon(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t x = vld1q_f32(g + i);
        float32x4_t r = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(x), vcgtq_f32(x, vdupq_n_f32(0.0f))));
        vst1q_f32(g + i, vmulq_f32(vmulq_f32(r, r), vld1q_f32(u + i)));
    }
    for (; i < n; i++) {
        float r = g[i] > 0.0f ? g[i] : 0.0f;
        g[i] = r * r * u[i];
    }
}

/* ---- attention ---------------------------------------------------------------------------- */

/* 4 cache values from element i of kind KV_F32 / KV_F16 */
INLINE float32x4_t load4(const int kind, const void *p, int64_t i) {
    if (kind == KV_F16) return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)p + i)));
    return vld1q_f32((const float *)p + i);
}

/* q8_0: block blk's scale, and its values 16·half .. 16·half + 15 as (float)q · d */
INLINE float32x4_t q8_d(const uint8_t *blk) {
    uint16_t h;
    memcpy(&h, blk, 2);
    return vdupq_n_f32(f16_to_f32(h));
}
INLINE lanes16_t q8_vals(const uint8_t *blk, int half, float32x4_t d) {
    int8x16_t q = vld1q_s8((const int8_t *)blk + 2 + 16 * half);
    int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_s8(vget_high_s8(q));
    lanes16_t v;
    v.r[0] = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), d);
    v.r[1] = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))), d);
    v.r[2] = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), d);
    v.r[3] = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi))), d);
    return v;
}

/* 16 values of position row `row` from element d: f32/f16 at element offsets, q8_0 by block */
INLINE lanes16_t kv16(const int kind, const void *row, int64_t d) {
    lanes16_t v;
    if (kind == KV_Q8_0) {
        const uint8_t *blk = (const uint8_t *)row + (size_t)(d / KV_Q8_0_BLOCK) * KV_Q8_0_BYTES;
        return q8_vals(blk, (int)(d % KV_Q8_0_BLOCK) / 16, q8_d(blk));
    }
    for (int k = 0; k < 4; k++) v.r[k] = load4(kind, row, d + 4 * k);
    return v;
}

/* the address of position j's row: rb bytes a row (q8_0) or stride elements (f32/f16) */
INLINE const void *kv_row(const int kind, const void *p, int j, int64_t stride, size_t rb) {
    if (kind == KV_Q8_0) return (const uint8_t *)p + (size_t)j * rb;
    if (kind == KV_F16) return (const uint16_t *)p + (int64_t)j * stride;
    return (const float *)p + (int64_t)j * stride;
}

/* NG (1, 2, 4) query heads of one kv head together: each cache row loaded and converted once
 * for them; every head's arithmetic the spec's. q, out (NG, hd); scores (NG, n_kv). */
INLINE void heads(const int kind, const int NG, float *out, const float *q, const void *k, const void *v, int n_kv,
                  int64_t stride, int hd, float scale, float *scores) {
    const size_t rb = ops_kv_bytes(KV_Q8_0, stride);   /* q8_0 only */
    const int NP = NG >= 4 ? 1 : 2;   /* positions at once: 4 · NP · NG <= 16 accumulators */
    int j = 0;
    while (j < n_kv) {
        int np = n_kv - j >= NP ? NP : 1;
        lanes16_t a[2][4];
        for (int p = 0; p < np; p++)
            for (int g = 0; g < NG; g++) a[p][g] = l16_zero();
        for (int d = 0; d < hd; d += 16)
            for (int p = 0; p < np; p++) {
                lanes16_t kv = kv16(kind, kv_row(kind, k, j + p, stride, rb), d);
                for (int g = 0; g < NG; g++)
                    for (int r = 0; r < 4; r++)
                        a[p][g].r[r] = vfmaq_f32(a[p][g].r[r], vld1q_f32(q + (size_t)g * hd + d + 4 * r), kv.r[r]);
            }
        for (int p = 0; p < np; p++)
            for (int g = 0; g < NG; g++) scores[(size_t)g * n_kv + j + p] = fold16(a[p][g]) * scale;
        j += np;
    }
    for (int g = 0; g < NG; g++) ops_softmax_neon(scores + (size_t)g * n_kv, n_kv);
    /* out_g = Σ_j p_gj · v_j: 16 dims a pass for 4 heads, 32 for 1 or 2 */
    const int W = NG >= 4 ? 16 : 32;
    for (int d0 = 0; d0 < hd; d0 += W) {
        int nr = hd - d0 >= W ? W / 4 : 4;   /* float32x4 registers per head this pass */
        float32x4_t o[4][8];
        for (int g = 0; g < NG; g++)
            for (int r = 0; r < 8; r++) o[g][r] = vdupq_n_f32(0.0f);
        for (int jj = 0; jj < n_kv; jj++) {
            const void *row = kv_row(kind, v, jj, stride, rb);
            lanes16_t x0 = kv16(kind, row, d0), x1 = x0;
            if (nr == 8) x1 = kv16(kind, row, d0 + 16);
            for (int g = 0; g < NG; g++) {
                float32x4_t pj = vdupq_n_f32(scores[(size_t)g * n_kv + jj]);
                for (int r = 0; r < 4; r++) o[g][r] = vfmaq_f32(o[g][r], pj, x0.r[r]);
                if (nr == 8)
                    for (int r = 0; r < 4; r++) o[g][4 + r] = vfmaq_f32(o[g][4 + r], pj, x1.r[r]);
            }
        }
        for (int g = 0; g < NG; g++)
            for (int r = 0; r < nr; r++) vst1q_f32(out + (size_t)g * hd + d0 + 4 * r, o[g][r]);
    }
}

/* ng: 1, 2, 4 (ops_attention splits longer runs) */
INLINE void heads_kind(const int kind, int ng, float *out, const float *q, const void *k, const void *v, int n_kv,
                       int64_t stride, int hd, float scale, float *scores) {
    if (ng == 4) heads(kind, 4, out, q, k, v, n_kv, stride, hd, scale, scores);
    else if (ng == 2) heads(kind, 2, out, q, k, v, n_kv, stride, hd, scale, scores);
    else heads(kind, 1, out, q, k, v, n_kv, stride, hd, scale, scores);
}

void ops_attn_heads_neon(float *out, const float *q, const void *k, const void *v, int kv_type, int ng, int n_kv,
                         int64_t stride, int hd, float scale, float *scores) {
    if (hd % 16) ops_attn_heads_ref(out, q, k, v, kv_type, ng, n_kv, stride, hd, scale, scores);
    else if (kv_type == KV_F16) heads_kind(KV_F16, ng, out, q, k, v, n_kv, stride, hd, scale, scores);
    else if (kv_type == KV_Q8_0) heads_kind(KV_Q8_0, ng, out, q, k, v, n_kv, stride, hd, scale, scores);
    else heads_kind(KV_F32, ng, out, q, k, v, n_kv, stride, hd, scale, scores);
}

/* ---- f16 rows ------------------------------------------------------------------------------- */

void ops_f32_to_f16_neon(uint16_t *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    for (; i < n; i++) y[i] = f32_to_f16(x[i]);
}

void ops_f16_to_f32_neon(float *y, const uint16_t *x, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x + i))));
    for (; i < n; i++) y[i] = f16_to_f32(x[i]);
}
