/* tq2_avx512: TQ2_0 dot product with AVX-512 VNNI (256-bit vpdpbusd); the body is tq2_x86.h's,
 * equal to tq2_dot_ref. Not here: the f16 block scales (mat.c). */
#include "kernels/x86/tq2_x86.h"

void tq2_dot_avx512(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    tq2_dot_x86(w, r0, nr, a, isum);
}
