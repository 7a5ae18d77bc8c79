/* fmat: y = W·x for float-ish weight types (F32, F16, BF16, Q8_0, and llama.cpp's Q4_0, Q5_0,
 * Q4_K, Q5_K, Q6_K) — embeddings used as the lm head, untied heads, anything not ternary. Same
 * contract as mat_mul (mat.h): y (n, rows), rows split across threads, each row reduced by one
 * thread in a fixed order. Q8_0/Q4_0/Q5_0 quantise x per 32-block to int8 like ggml's q8_0, the
 * K-quants per 256-block like ggml's q8_K (scratch). */
#ifndef TERN_FMAT_H
#define TERN_FMAT_H
#include <stddef.h>
#include <stdint.h>
#include "core/tpool.h"

int fmat_supported(int type);
size_t fmat_scratch_bytes(int type, int64_t cols, int n);
void fmat_mul(int type, const void *w, int64_t rows, int64_t cols, const float *x, int n, float *y,
              void *scratch, tpool_t *tp);
/* scalar reference of the same (the spec for tests) */
void fmat_mul_ref(int type, const void *w, int64_t rows, int64_t cols, const float *x, int n, float *y,
                  void *scratch);

#endif
