/* i2s_avx512: I2_S dot product with AVX-512 VNNI (256-bit vpdpbusd on codes 0..2, minus Σq); the
 * body is i2s_x86.h's. Integer result equals i2s_dot_ref exactly. Not here: scales (mat.c). */
#include "kernels/x86/i2s_x86.h"

void i2s_dot_avx512(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    i2s_dot_x86(w, r0, nr, a, isum);
}
