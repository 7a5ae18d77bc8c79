/* tq1_ref: the spec of the TQ1_0 dot product (llama.cpp block_tq1_0: qs[48], qh[4], f16 d; five
 * base-3 digits per byte stored as ceil(v·256/243), digit n read as ((u8)(b·3ⁿ)·3) >> 8): one
 * exact int32 sum per 256-block, scalar. Not here: scales (mat.c) and fast variants. */
#include "kernels/ternary.h"

static const uint8_t k_pow3[5] = {1, 3, 9, 27, 81};

static int trit(uint8_t b, int n) { return (((uint8_t)(b * k_pow3[n]) * 3) >> 8) - 1; }

void tq1_dot_ref(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t cols = a->cols, nb = cols / 256;
    for (int t = 0; t < a->n; t++) {
        for (int64_t r = 0; r < nr; r++) {
            const uint8_t *b = (const uint8_t *)w + (r0 + r) * nb * 54;
            for (int64_t k = 0; k < nb; k++, b += 54) {
                const int8_t *q = a->q + t * cols + 256 * k;
                int32_t acc = 0;
                for (int n = 0; n < 5; n++)
                    for (int m = 0; m < 32; m++) acc += trit(b[m], n) * q[32 * n + m];
                for (int n = 0; n < 5; n++)
                    for (int m = 0; m < 16; m++) acc += trit(b[32 + m], n) * q[160 + 16 * n + m];
                for (int n = 0; n < 4; n++)
                    for (int j = 0; j < 4; j++) acc += trit(b[48 + j], n) * q[240 + 4 * n + j];
                isum[(t * nr + r) * nb + k] = acc;
            }
        }
    }
}
