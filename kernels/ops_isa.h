/* ops_isa: private interface between kernels/ops.c (scalar spec + dispatch) and its ISA
 * variants (x86/ops_avx2.c, x86/ops_avx512.c). Not a public API.
 * The variants follow the spec's arithmetic exactly, so every ISA gives the same bits:
 *  - exp: ops_exp_spec below (Cephes-style, fmaf Horner); inputs below -87.3 give 0.
 *  - softmax: m = max; e = exp(x − m); sum in 16 lanes (lane i % 16, increasing i), folded by
 *    halves (+8, +4, +2, +1); x = e · (1/sum).
 *  - attention, per head: s_j = fold16(lanes d % 16 of fmaf(q_d, k_jd, ·)) · scale; p = softmax(s);
 *    out_d = fmaf(p_j, v_jd, out_d) for j = 0, 1, … (out starts at 0). */
#ifndef TERN_OPS_ISA_H
#define TERN_OPS_ISA_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define OPS_EXP_LO (-87.3f)   /* below: 0 (2^-126 is the smallest normal scale) */
#define OPS_EXP_HI 88.0f      /* above: clamped (finite) */
#define OPS_LOG2E 1.44269504088896341f
#define OPS_LN2_HI 0.693359375f
#define OPS_LN2_LO (-2.12194440e-4f)
#define OPS_EXP_C0 1.9875691500e-4f
#define OPS_EXP_C1 1.3981999507e-3f
#define OPS_EXP_C2 8.3334519073e-3f
#define OPS_EXP_C3 4.1665795894e-2f
#define OPS_EXP_C4 1.6666665459e-1f
#define OPS_EXP_C5 5.0000001201e-1f

/* exp(x) to ~2 ulp; the files that include this must compile with fp-contract off */
static inline float ops_exp_spec(float x) {
    if (!(x >= OPS_EXP_LO)) return 0.0f;
    x = x < OPS_EXP_HI ? x : OPS_EXP_HI;
    float n = rintf(x * OPS_LOG2E);
    float r = fmaf(n, -OPS_LN2_HI, x);
    r = fmaf(n, -OPS_LN2_LO, r);
    float z = r * r, p = OPS_EXP_C0;
    p = fmaf(p, r, OPS_EXP_C1);
    p = fmaf(p, r, OPS_EXP_C2);
    p = fmaf(p, r, OPS_EXP_C3);
    p = fmaf(p, r, OPS_EXP_C4);
    p = fmaf(p, r, OPS_EXP_C5);
    float y = fmaf(p, z, r) + 1.0f;
    uint32_t eb = (uint32_t)((int)n + 127) << 23;
    float e;
    memcpy(&e, &eb, 4);
    return y * e;
}

/* one head: q (hd,); k, v: this kv head at position 0, `stride` elements between positions */
void ops_attn_head_ref(float *out, const float *q, const void *k, const void *v, int kv_type, int n_kv,
                       int64_t stride, int hd, float scale, float *scores);
/* ng consecutive query heads of one kv head: q, out (ng, hd); scores (ng, n_kv). Each head's
 * arithmetic is ops_attn_head_ref's; a variant may share cache loads across the ng heads.
 * ng: 1, 2 or 4 (8 too for the reference and AVX-512): ops_attention splits the runs. */
typedef void (*ops_attn_heads_fn)(float *out, const float *q, const void *k, const void *v, int kv_type, int ng,
                                  int n_kv, int64_t stride, int hd, float scale, float *scores);
void ops_attn_heads_ref(float *out, const float *q, const void *k, const void *v, int kv_type, int ng, int n_kv,
                        int64_t stride, int hd, float scale, float *scores);
void ops_attn_heads_avx2(float *out, const float *q, const void *k, const void *v, int kv_type, int ng, int n_kv,
                         int64_t stride, int hd, float scale, float *scores);
void ops_attn_heads_avx512(float *out, const float *q, const void *k, const void *v, int kv_type, int ng, int n_kv,
                           int64_t stride, int hd, float scale, float *scores);
void ops_attn_heads_neon(float *out, const float *q, const void *k, const void *v, int kv_type, int ng, int n_kv,
                         int64_t stride, int hd, float scale, float *scores);

void ops_softmax_ref(float *x, int64_t n);
/* rmsnorm: acc[i % 8] += (double)(x_i · x_i) in increasing i (the last n % 8 too); sum =
 * ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)); s = 1 / sqrtf((float)(sum / n) + eps);
 * y_i = (x_i · s) · w_i (or x_i · s without w). */
void ops_rmsnorm_ref(float *y, const float *x, const float *w, int64_t n, float eps);
void ops_rmsnorm_avx512(float *y, const float *x, const float *w, int64_t n, float eps);
void ops_silu_mul_ref(float *g, const float *u, int64_t n);
void ops_relu2_mul_ref(float *g, const float *u, int64_t n);
void ops_silu_mul_avx2(float *g, const float *u, int64_t n);
void ops_relu2_mul_avx2(float *g, const float *u, int64_t n);
void ops_silu_mul_avx512(float *g, const float *u, int64_t n);
void ops_relu2_mul_avx512(float *g, const float *u, int64_t n);
void ops_softmax_avx2(float *x, int64_t n);
void ops_softmax_avx512(float *x, int64_t n);

void ops_softmax_neon(float *x, int64_t n);
void ops_rmsnorm_neon(float *y, const float *x, const float *w, int64_t n, float eps);
void ops_silu_mul_neon(float *g, const float *u, int64_t n);
void ops_relu2_mul_neon(float *g, const float *u, int64_t n);
void ops_f32_to_f16_neon(uint16_t *y, const float *x, int64_t n);
void ops_f16_to_f32_neon(float *y, const uint16_t *x, int64_t n);

void ops_f32_to_f16_avx2(uint16_t *y, const float *x, int64_t n);
void ops_f16_to_f32_avx2(float *y, const uint16_t *x, int64_t n);
void ops_f32_to_f16_avx512(uint16_t *y, const float *x, int64_t n);
void ops_f16_to_f32_avx512(float *y, const uint16_t *x, int64_t n);

#endif
