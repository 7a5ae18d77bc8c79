/* tq2_ref: the spec of the TQ2_0 dot product (llama.cpp block_tq2_0: qs[64] then f16 d; byte
 * 32h+m holds element 128h+m+32n at bits 2n): one exact int32 sum per 256-block, scalar.
 * Not here: the per-block f16 scales (mat.c applies them) and fast variants. */
#include "kernels/ternary.h"

void tq2_dot_ref(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t cols = a->cols, nb = cols / 256;
    for (int t = 0; t < a->n; t++) {
        const int8_t *q = a->q + t * cols;
        for (int64_t r = 0; r < nr; r++) {
            const uint8_t *b = (const uint8_t *)w + (r0 + r) * nb * 66;
            for (int64_t k = 0; k < nb; k++, b += 66) {
                int32_t acc = 0;
                for (int h = 0; h < 2; h++)
                    for (int n = 0; n < 4; n++)
                        for (int m = 0; m < 32; m++)
                            acc += (((b[32 * h + m] >> (2 * n)) & 3) - 1) * q[256 * k + 128 * h + 32 * n + m];
                isum[(t * nr + r) * nb + k] = acc;
            }
        }
    }
}
