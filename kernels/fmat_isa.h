/* fmat_isa: private interface between kernels/fmat.c (dispatch, x quantisation, the scalar
 * spec) and its ISA variants (x86/fmat_avx2.c, x86/fmat_avx512.c). Not a public API.
 * Summation spec shared by every variant, so all ISAs give bit-identical results:
 *  - F32/F16/BF16: 32 float lanes, lane l = c % 32 accumulates fmaf(w[c], x[c], acc[l]) in
 *    increasing c; then the lanes are folded by halves (l += l+16, +8, +4, +2, +1).
 *  - Q8_0: per 32-block j, 8 exact int partial sums part[k] = Σ_{i<4} w[4k+i]·xq[4k+i];
 *    s = d_w·d_x (one float multiply); lane (j&1)·8+k: acc = fmaf(s, (float)part[k], acc);
 *    then the 16 lanes are folded by halves (+8, +4, +2, +1).
 *  - Q4_0/Q5_0: exactly Q8_0's spec, with the block's values from kquant_unpack32 for w.
 *  - Q4_K/Q5_K/Q6_K: x quantised per 256-block (kquant_quantize_x); per block exact integer
 *    products, then one float accumulator in block order (kquant_row_ref in kernels/kquant.h). */
#ifndef TERN_FMAT_ISA_H
#define TERN_FMAT_ISA_H
#include <stddef.h>
#include <stdint.h>

/* one call's operands; xq is the quantised x: Q8_0/Q4_0/Q5_0 in the fmat_q8 layout, K-quants in
 * kquant_x's (kquant.h), else NULL */
typedef struct fmat_job {
    int type;
    const void *w;      /* (rows, cols) of type */
    int64_t rows, cols;
    const float *x;     /* (n, cols) */
    const uint8_t *xq;  /* n × fmat_q8_stride(cols) (or kquant_x_stride(cols)) bytes */
    int n;
    float *y;           /* (n, rows) */
} fmat_job_t;

/* Quantised x for Q8_0, per token: int8 q[cols] at 0, then float dx8[cols/32 · 8] at
 * fmat_q8_dx_off(cols): each block's scale f16-rounded like ggml, repeated 8 times so that a
 * vector of lanes loads it directly. */
static inline size_t fmat_q8_dx_off(int64_t cols) { return ((size_t)cols + 63) / 64 * 64; }
static inline size_t fmat_q8_stride(int64_t cols) {
    return fmat_q8_dx_off(cols) + ((size_t)cols / 32 * 8 * 4 + 63) / 64 * 64;
}

/* y rows [r0, r1) for all n tokens */
void fmat_rows_ref(const fmat_job_t *j, int64_t r0, int64_t r1);
void fmat_rows_avx2(const fmat_job_t *j, int64_t r0, int64_t r1);
void fmat_rows_avx512(const fmat_job_t *j, int64_t r0, int64_t r1);
/* K-quant rows (Q4_K, Q5_K, Q6_K) of the same job: x86/kquant_avx2.c, x86/kquant_avx512.c,
 * arm/kquant_neon.c */
void kquant_rows_avx2(const fmat_job_t *j, int64_t r0, int64_t r1);
void kquant_rows_avx512(const fmat_job_t *j, int64_t r0, int64_t r1);
void kquant_rows_neon(const fmat_job_t *j, int64_t r0, int64_t r1);

#endif
