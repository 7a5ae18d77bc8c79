/* ops: the float operations of a transformer block, f32 in and out. Each has a scalar form
 * here; SIMD versions are dispatched inside where it pays. All are deterministic (fixed
 * reduction order independent of threads). Not here: matmuls (mat.h, fmat.h). */
#ifndef TERN_OPS_H
#define TERN_OPS_H
#include <stddef.h>
#include <stdint.h>

/* y (n,) = x / sqrt(mean(x²) + eps) ⊙ w ; w may be NULL (no gain); y may alias x */
void ops_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps);
/* RoPE as ggml's rope_ext: everything but the position, in one place so every caller (forward,
 * context shift, the CUDA stage's table) computes the same angles. ops_rope_init gives plain RoPE
 * (freq_scale 1, ext_factor 0, attn_factor 1, no freq_factors): the arithmetic of tern before
 * scaling existed, bit for bit. */
typedef struct rope_params {
    int rot_dim;            /* dims rotated per head (even) */
    int neox;               /* pairs (i, i + rot_dim/2) (ggml NEOX: bitnet-b1.58, bitnet); else (2i, 2i+1)
                             * (ggml NORM: llama, whose GGUF converter permutes Q/K rows) */
    float base;             /* theta_i = pos · base^(-2i/rot_dim) */
    float freq_scale;       /* 1/factor: theta_interp = freq_scale · theta (linear, yarn) */
    float ext_factor;       /* yarn: theta = mix of interp and extrap over the ramp; 0 = interp only */
    float attn_factor;      /* cos, sin are multiplied by it (and by 1 + 0.1 ln(1/freq_scale) with yarn) */
    float corr_dims[2];     /* yarn ramp [low, high] in pair indices (ops_rope_yarn) */
    const float *freq_factors;  /* (rot_dim/2,) divide theta_i (llama3's rope_freqs), or NULL */
} rope_params_t;

void ops_rope_init(rope_params_t *p, int rot_dim, int neox, float base);
/* sets the scaling: freq_scale, ext_factor (< 0: 1 when yarn, else 0 — llama.cpp's default),
 * attn_factor, and the ramp from n_ctx_orig, beta_fast, beta_slow (ggml_rope_yarn_corr_dims) */
void ops_rope_yarn(rope_params_t *p, int yarn, float freq_scale, float ext_factor, float attn_factor, int n_ctx_orig,
                   float beta_fast, float beta_slow);
/* RoPE in place on x (n_heads, head_dim) at position pos, on the first rot_dim dims of each head */
void ops_rope(float *x, int n_heads, int head_dim, int pos, const rope_params_t *p);
/* ops_rope in two halves, for callers that rotate many rows by one angle (the KV cache's context
 * shift): cs, sn (rot_dim/2,) = cos, sin of theta_i at pos, times the magnitude; then x
 * (n_heads, head_dim) rotated by them. ops_rope = table + apply, same arithmetic. */
void ops_rope_table(float *cs, float *sn, int pos, const rope_params_t *p);
/* the rotation alone (magnitude 1) by the angles of delta positions: a key already rotated at pos
 * (and scaled by the magnitude once) turned by it is the key at pos + delta (pos may be negative:
 * rot(-d) undoes rot(d)) */
void ops_rope_shift_table(float *cs, float *sn, int delta, const rope_params_t *p);
void ops_rope_apply(float *x, int n_heads, int head_dim, int rot_dim, int neox, const float *cs, const float *sn);
void ops_softmax(float *x, int64_t n);                 /* in place, max-subtracted */
void ops_silu_mul(float *g, const float *u, int64_t n);   /* g = silu(g) ⊙ u */
void ops_relu2_mul(float *g, const float *u, int64_t n);  /* g = relu(g)² ⊙ u */
void ops_add(float *y, const float *x, int64_t n);        /* y += x */
void ops_scale(float *y, float s, int64_t n);             /* y *= s */

/* KV cache element types. KV_Q8_0: ggml's Q8_0 blocks (f16 d, then 32 int8 q; value q·d), a
 * position's (n_kv_heads · hd) row as kv_dim / 32 blocks: needs hd % 32 == 0, so a head is
 * whole blocks. */
enum kv_type { KV_F32 = 0, KV_F16 = 1, KV_Q8_0 = 2 };
#define KV_Q8_0_BLOCK 32
#define KV_Q8_0_BYTES 34   /* bytes of one block */

/* bytes of n cache elements of kv_type (n % 32 == 0 for KV_Q8_0); 0 for an unknown type */
size_t ops_kv_bytes(int kv_type, int64_t n);
/* x (n,) f32 → n cache elements of kv_type at dst: f16 round to nearest even; q8_0 as ggml's
 * quantize_row_q8_0 (d = max|x|/127, q = round(x/d)) */
void ops_kv_put(void *dst, int kv_type, const float *x, int64_t n);
/* n cache elements of kv_type at src → y (n,) f32, as attention reads them (f16 exactly, q8_0 as
 * (float)q · d); n % 32 == 0 for KV_Q8_0 */
void ops_kv_get(float *y, const void *src, int kv_type, int64_t n);
/* the name of a kv_type ("f32", "f16", "q8_0"), or NULL */
const char *ops_kv_name(int kv_type);
/* the kv_type named (as ops_kv_name), or -1 */
int ops_kv_parse(const char *name);

/* Attention of one query token (all heads) over positions [0, n_kv) of one layer's cache.
 * q (n_heads, hd); k, v: (ctx, n_kv_heads, hd) of kv_type, position-major; head h uses kv head
 * h / (n_heads / n_kv_heads) (GQA). out (n_heads, hd). scores: scratch of OPS_ATTN_GROUP · n_kv
 * floats (up to OPS_ATTN_GROUP heads of one kv head are done together, each cache row read once
 * for them).
 * Heads [h0, h1) only, so callers can split heads across threads. scale = 1/sqrt(hd). The cache
 * values enter the arithmetic as floats (f16 → f32 exactly, q8_0 as (float)q · d), the same
 * operations for every element type. */
#define OPS_ATTN_GROUP 8
void ops_attention(float *out, const float *q, const void *k, const void *v, int kv_type, int n_kv,
                   int n_heads, int n_kv_heads, int hd, int h0, int h1, float scale, float *scores);

/* f32 ↔ f16 row conversions (dispatched) */
void ops_f32_to_f16(uint16_t *y, const float *x, int64_t n);
void ops_f16_to_f32(float *y, const uint16_t *x, int64_t n);

#endif
