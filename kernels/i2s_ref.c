/* i2s_ref: the spec of the I2_S dot product (bitnet.cpp layout, see quant.c): exact int32
 * Σ (code−1)·q per row, scalar. Not here: scales (mat.c) and fast variants (x86/, arm/). */
#include "kernels/ternary.h"

/* isum (n, nr) = W[r0..r0+nr) (I2_S, rows × cols) · q (n, cols)ᵀ */
void i2s_dot_ref(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t cols = a->cols;
    for (int t = 0; t < a->n; t++) {
        const int8_t *q = a->q + t * cols;
        for (int64_t r = 0; r < nr; r++) {
            const uint8_t *b = (const uint8_t *)w + (r0 + r) * cols / 4;
            int32_t acc = 0;
            for (int64_t k = 0; k < cols; k += 128, b += 32)
                for (int g = 0; g < 4; g++)
                    for (int j = 0; j < 32; j++) acc += (((b[j] >> (6 - 2 * g)) & 3) - 1) * q[k + 32 * g + j];
            isum[t * nr + r] = acc;
        }
    }
}
