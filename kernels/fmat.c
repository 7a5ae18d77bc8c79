/* fmat: y = x·Wᵀ for float-ish weights (F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K): the
 * scalar spec, the quantisation of x for the block types, and the dispatch to ISA variants with
 * rows split across the thread pool. The summation order is fixed by the spec in fmat_isa.h, so every ISA and every
 * thread count gives the same bits. Not here: ternary weights (mat.c and the quant kernels). */
#pragma GCC optimize("fp-contract=off") /* the spec says which multiply-adds are fused */
#include "kernels/fmat.h"
#include <math.h>
#include <string.h>
#include "core/err.h"
#include "core/half.h"
#include "core/types.h"
#include "kernels/dispatch.h"
#include "kernels/fmat_isa.h"
#include "kernels/kquant.h"

int fmat_supported(int type) {
    return type == TT_F32 || type == TT_F16 || type == TT_BF16 || type == TT_Q8_0 || kquant_is(type);
}

/* Q8_0, Q4_0, Q5_0: x as Q8_0 blocks */
static int q8_like(int type) { return type == TT_Q8_0 || type == TT_Q4_0 || type == TT_Q5_0; }

size_t fmat_scratch_bytes(int type, int64_t cols, int n) {
    size_t nn = (size_t)(n > 0 ? n : 0);
    if (kquant_is_k(type)) return kquant_x_stride(cols) * nn;
    if (!q8_like(type)) return 0;
    return fmat_q8_stride(cols) * nn;
}

/* ggml quantize_row_q8_0 (reference): d = max|x|/127 stored as f16, q = roundf(x/d).
 * dst: one token of the layout in fmat_isa.h. */
static void q8_quantize(const float *x, int64_t cols, uint8_t *dst) {
    int8_t *q = (int8_t *)dst;
    float *dx8 = (float *)(dst + fmat_q8_dx_off(cols));
    for (int64_t b = 0; b < cols / 32; b++) {
        float dh = f16_to_f32(f32_to_f16(kquant_i8_block(x + b * 32, 32, q + b * 32)));
        for (int k = 0; k < 8; k++) dx8[b * 8 + k] = dh;
    }
}

static float fold(float *acc, int lanes) {
    for (int s = lanes / 2; s >= 1; s /= 2)
        for (int i = 0; i < s; i++) acc[i] += acc[i + s];
    return acc[0];
}

static float wval(int type, const void *row, int64_t c) {
    switch (type) {
    case TT_F32: return ((const float *)row)[c];
    case TT_F16: return f16_to_f32(((const uint16_t *)row)[c]);
    default: return bf16_to_f32(((const uint16_t *)row)[c]);
    }
}

/* the spec: see fmat_isa.h */
void fmat_rows_ref(const fmat_job_t *j, int64_t r0, int64_t r1) {
    size_t rb = type_row_bytes(j->type, j->cols);
    for (int t = 0; t < j->n; t++) {
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *row = (const uint8_t *)j->w + (size_t)r * rb;
            float acc[32] = {0};
            if (kquant_is_k(j->type)) {
                const uint8_t *xt = j->xq + (size_t)t * kquant_x_stride(j->cols);
                j->y[(size_t)t * j->rows + r] = kquant_row_ref(j->type, row, j->cols, xt);
                continue;
            }
            if (!q8_like(j->type)) {
                const float *x = j->x + (size_t)t * j->cols;
                for (int64_t c = 0; c < j->cols; c++)
                    acc[c % 32] = fmaf(wval(j->type, row, c), x[c], acc[c % 32]);
                j->y[(size_t)t * j->rows + r] = fold(acc, 32);
                continue;
            }
            const uint8_t *xt = j->xq + (size_t)t * fmat_q8_stride(j->cols);
            const int8_t *xq = (const int8_t *)xt;
            const float *dx8 = (const float *)(xt + fmat_q8_dx_off(j->cols));
            size_t bb = type_traits(j->type)->bytes;
            for (int64_t b = 0; b < j->cols / 32; b++) {
                const uint8_t *blk = row + b * bb;
                uint16_t dh;
                int8_t wbuf[32];
                const int8_t *wq = (const int8_t *)(blk + 2);
                if (j->type == TT_Q8_0) memcpy(&dh, blk, 2);
                else {
                    dh = kquant_unpack32(j->type, blk, wbuf);
                    wq = wbuf;
                }
                float s = f16_to_f32(dh) * dx8[b * 8];
                for (int k = 0; k < 8; k++) {
                    int part = 0;
                    for (int i = 0; i < 4; i++) part += wq[4 * k + i] * xq[b * 32 + 4 * k + i];
                    int l = (int)(b & 1) * 8 + k;
                    acc[l] = fmaf(s, (float)part, acc[l]);
                }
            }
            j->y[(size_t)t * j->rows + r] = fold(acc, 16);
        }
    }
}

static void check_args(int type, const void *w, int64_t rows, int64_t cols, const float *x, int n,
                       float *y, void *scratch) {
    TERN_ASSERT(fmat_supported(type));
    TERN_ASSERT(rows >= 0 && cols >= 0 && n >= 0);
    TERN_ASSERT(cols % type_traits(type)->blck == 0);
    TERN_ASSERT((w && x && y) || rows * cols * n == 0);
    TERN_ASSERT(!fmat_scratch_bytes(type, cols, 1) || scratch || n == 0 || cols == 0);
}

static void quantize_all(int type, const float *x, int64_t cols, int n, void *scratch) {
    if (kquant_is_k(type)) {
        for (int t = 0; t < n; t++)
            kquant_quantize_x(x + (size_t)t * cols, cols, (uint8_t *)scratch + (size_t)t * kquant_x_stride(cols));
        return;
    }
    if (!q8_like(type)) return;
    for (int t = 0; t < n; t++)
        q8_quantize(x + (size_t)t * cols, cols, (uint8_t *)scratch + (size_t)t * fmat_q8_stride(cols));
}

void fmat_mul_ref(int type, const void *w, int64_t rows, int64_t cols, const float *x, int n, float *y,
                  void *scratch) {
    check_args(type, w, rows, cols, x, n, y, scratch);
    quantize_all(type, x, cols, n, scratch);
    fmat_job_t j = {type, w, rows, cols, x, scratch, n, y};
    fmat_rows_ref(&j, 0, rows);
}

typedef void (*fmat_rows_fn)(const fmat_job_t *j, int64_t r0, int64_t r1);

/* Q4_0 / Q5_0 heads (rare: llama-quantize --output-tensor-type) take the AVX2 code on AVX-512
 * CPUs too, and the scalar spec on NEON */
static fmat_rows_fn rows_fn(int type) {
    switch (isa_current()) {
#if defined(TERN_HAVE_X86)
    case ISA_AVX2: return kquant_is(type) ? kquant_rows_avx2 : fmat_rows_avx2;
    case ISA_AVX512:
        if (type == TT_Q4_0 || type == TT_Q5_0) return kquant_rows_avx2;
        return kquant_is_k(type) ? kquant_rows_avx512 : fmat_rows_avx512;
#endif
#if defined(TERN_HAVE_ARM)
    case ISA_NEON: return kquant_is_k(type) ? kquant_rows_neon : fmat_rows_ref;
#endif
    default: return fmat_rows_ref;
    }
}

typedef struct { const fmat_job_t *j; fmat_rows_fn fn; } task_t;

static void task(void *arg, int ith, int nth) {
    const task_t *tk = arg;
    long r0, r1;
    tpool_split((long)tk->j->rows, ith, nth, 8, &r0, &r1);
    if (r1 > r0) tk->fn(tk->j, r0, r1);
}

void fmat_mul(int type, const void *w, int64_t rows, int64_t cols, const float *x, int n, float *y,
              void *scratch, tpool_t *tp) {
    check_args(type, w, rows, cols, x, n, y, scratch);
    if (rows == 0 || n == 0) return;
    quantize_all(type, x, cols, n, scratch);
    fmat_job_t j = {type, w, rows, cols, x, scratch, n, y};
    task_t tk = {&j, rows_fn(type)};
    if (rows < 64 || !tp) tk.fn(&j, 0, rows);
    else tpool_run(tp, task, &tk);
}
