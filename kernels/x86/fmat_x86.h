/* fmat_x86: the row loops that fmat_avx2.c and fmat_avx512.c share, included by each after its
 * own kernels (so each gets them built with its -m flags and its kernels inlined): the file
 * defines rows_float(type, j, r0, r1) and qrow(NT, row, xq, xs, cols, y, ys), NT = 1..4 tokens,
 * both always_inline with constant type / NT. Not here: anything whose SIMD width differs. */
#ifndef TERN_FMAT_X86_H
#define TERN_FMAT_X86_H

/* Q8_0 rows [r0, r1): tokens 4 at a time, then the 1..3 left, each block against a row in L1 */
static void rows_q8(const fmat_job_t *j, int64_t r0, int64_t r1) {
    size_t rb = type_row_bytes(TT_Q8_0, j->cols), xs = fmat_q8_stride(j->cols);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)j->w + (size_t)r * rb;
        int t = 0;
        for (; t + 4 <= j->n; t += 4)
            qrow(4, row, j->xq + t * xs, xs, j->cols, j->y + (size_t)t * j->rows + r, j->rows);
        const uint8_t *xq = j->xq + t * xs;
        float *y = j->y + (size_t)t * j->rows + r;
        switch (j->n - t) {
        case 3: qrow(3, row, xq, xs, j->cols, y, j->rows); break;
        case 2: qrow(2, row, xq, xs, j->cols, y, j->rows); break;
        case 1: qrow(1, row, xq, xs, j->cols, y, j->rows); break;
        default: break;
        }
    }
}

/* the job's rows [r0, r1) of its type */
static inline void fmat_rows_x86(const fmat_job_t *j, int64_t r0, int64_t r1) {
    switch (j->type) {
    case TT_F32: rows_float(TT_F32, j, r0, r1); break;
    case TT_F16: rows_float(TT_F16, j, r0, r1); break;
    case TT_BF16: rows_float(TT_BF16, j, r0, r1); break;
    case TT_Q8_0: rows_q8(j, r0, r1); break;
    default: break;
    }
}

#endif
