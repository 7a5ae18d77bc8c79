/* mat: a weight matrix ready for y = W·x, whatever its stored type. mat_init looks at the type
 * and shape and picks the fastest kernel/layout for this CPU (possibly repacking the weights
 * into a tern layout at load time); callers never choose. Ternary types go through int8
 * activations (act_quant, per token) and integer accumulation; float types (F32, F16, BF16,
 * Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K) through kernels/fmat. Deterministic: each output row is
 * reduced by one thread in a fixed order, so y is bit-identical for any thread count. */
#ifndef TERN_MAT_H
#define TERN_MAT_H
#include <stddef.h>
#include <stdint.h>
#include "core/tpool.h"

enum mat_flags {
    MAT_NO_REPACK = 1,   /* keep the file's layout (tests of the reference-layout kernels) */
};

typedef struct mat {
    int type;            /* enum tensor_type of the source */
    int kernel;          /* which implementation mat_init chose (mat-private enum) */
    int64_t rows, cols;  /* W is (rows, cols): rows outputs, cols inputs */
    const void *src;     /* weights as stored in the file (mmap'd), not owned */
    size_t src_bytes;
    void *packed;        /* repacked copy owned by the mat, or NULL */
    size_t packed_bytes;
    float scale;         /* per-tensor weight scale (I2_S), 1 otherwise */
    float *row_scale;    /* (rows,) owned: per-row scales of a fused matrix (mat_fuse), or NULL */
} mat_t;

/* data/nbytes: the tensor as stored (nbytes is checked against the type's size formula).
 * Returns 0 or a negative TERN_E* code with a reason in err. */
int mat_init(mat_t *m, int type, int64_t rows, int64_t cols, const void *data, size_t nbytes,
             int flags, char *err, size_t errlen);
void mat_free(mat_t *m);
/* One matrix whose rows are the rows of parts[0..n) in order (same cols), so one call reads
 * them as one stream (Q|K|V, gate|up): y rows are the parts' rows, each with its part's scale,
 * bit-identical to separate calls. Only for parts repacked into one tern layout with a
 * per-tensor scale and whole row tiles (except the last); otherwise TERN_ENOTSUP and out is
 * untouched. The parts stay valid (the caller may free them). */
int mat_fuse(mat_t *out, const mat_t *parts, int n);
/* scratch bytes mat_mul needs for n tokens (activation quantisation etc.) */
size_t mat_scratch_bytes(const mat_t *m, int n);
/* y (n, rows) = x (n, cols) · Wᵀ : y[t*rows + r] = Σ_c W[r][c] · x[t*cols + c].
 * scratch: mat_scratch_bytes(m, n) bytes, 64-byte aligned. tp may be NULL. */
void mat_mul(const mat_t *m, const float *x, int n, float *y, void *scratch, tpool_t *tp);
/* 1 when mat_mul reads m->src (not repacked, or per-block scales read in place), so those bytes
 * must stay resident (--mlock); 0 for an empty mat */
int mat_reads_src(const mat_t *m);
/* bytes of weights the kernel reads per call (for roofline figures) */
size_t mat_weight_bytes(const mat_t *m);
const char *mat_kernel_name(const mat_t *m);  /* e.g. "i2_s/avx512", "tern-il4/avx512" */

#endif
