/* gpack: packs trits into the GPU word layout (see gpack.h) and is the scalar spec of the CUDA
 * W2A8 kernels. Built in every configuration, so the layout is tested without a GPU. */
#include "kernels/gpack.h"
#include "core/err.h"
#include "core/half.h"
#include "core/types.h"
#include "kernels/quant.h"
#include <stdlib.h>
#include <string.h>

size_t gpack_bytes(int64_t rows, int64_t cols) { return (size_t)rows * (size_t)(cols / GPACK_K) * 4; }

void gpack_pack_rows(const int8_t *t, int64_t nr, int64_t cols, uint32_t *dst) {
    TERN_ASSERT(cols % GPACK_K == 0 && nr >= 0);
    int64_t nw = nr * cols / GPACK_K;
    for (int64_t g = 0; g < nw; g++) {
        const int8_t *e = t + g * GPACK_K;
        uint32_t w = 0;
        for (int j = 0; j < 4; j++)
            for (int b = 0; b < 4; b++) w |= (uint32_t)(e[4 * j + b] + 1) << (8 * b + 2 * j);
        dst[g] = w;
    }
}

void gpack_unpack_rows(const uint32_t *src, int64_t nr, int64_t cols, int8_t *t) {
    TERN_ASSERT(cols % GPACK_K == 0 && nr >= 0);
    int64_t nw = nr * cols / GPACK_K;
    for (int64_t g = 0; g < nw; g++)
        for (int j = 0; j < 4; j++)
            for (int b = 0; b < 4; b++) {
                int c = (int)(src[g] >> (8 * b + 2 * j)) & 3;
                t[g * GPACK_K + 4 * j + b] = (int8_t)(c == 3 ? 0 : c - 1);
            }
}

int gpack_from_tensor(int type, const void *src, int64_t rows, int64_t cols, uint32_t *dst, float *scale,
                      char *err, size_t errlen) {
    if (type != TT_I2_S && type != TT_TQ1_0 && type != TT_TQ2_0)
        return err_set(err, errlen, TERN_EINVAL, "gpack: %s is not a ternary type", type_name(type));
    if (rows <= 0 || cols <= 0 || (cols % 256 && type != TT_I2_S) || cols % 128)
        return err_set(err, errlen, TERN_EINVAL, "gpack: bad shape %lld x %lld for %s", (long long)rows,
                       (long long)cols, type_name(type));
    int differ = 0;
    float s = 0.0f;
    if (type != TT_I2_S) {
        s = quant_tq_scale(type, src, rows, cols, &differ);
        if (differ)
            return err_set(err, errlen, TERN_ENOTSUP, "gpack: %s tensor %lld x %lld has per-block scales that differ "
                           "(not supported on the GPU)", type_name(type), (long long)rows, (long long)cols);
    }
    int64_t chunk = 64;
    int8_t *t = malloc((size_t)(chunk * cols));
    if (!t) return err_set(err, errlen, TERN_ENOMEM, "gpack: out of memory");
    size_t bb = type == TT_TQ2_0 ? 66 : 54;
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        float ts = 0.0f;
        quant_unpack_trits(type, src, rows, cols, r0, nr, t, &ts);
        if (type == TT_I2_S) s = ts;
        else   /* zero-scale blocks contribute nothing (as in mat.c): make their trits 0 */
            for (int64_t i = 0; i < nr * cols; i += 256) {
                uint16_t d;
                memcpy(&d, (const uint8_t *)src + ((r0 * cols + i) / 256) * bb + bb - 2, 2);
                if ((d & 0x7fff) == 0) memset(t + i, 0, 256);
            }
        gpack_pack_rows(t, nr, cols, dst + r0 * (cols / GPACK_K));
    }
    free(t);
    *scale = s;
    return 0;
}

void gpack_gemv_ref(const uint32_t *w, int64_t rows, int64_t cols, float scale, const int8_t *q, float s,
                    int32_t qsum, float *y) {
    int64_t nw = cols / GPACK_K;
    for (int64_t r = 0; r < rows; r++) {
        int32_t acc = 0;
        for (int64_t g = 0; g < nw; g++) {
            uint32_t word = w[r * nw + g];
            for (int j = 0; j < 4; j++) {
                uint32_t c = (word >> (2 * j)) & 0x03030303u;
                for (int b = 0; b < 4; b++) acc += (int32_t)((c >> (8 * b)) & 0xff) * q[g * GPACK_K + 4 * j + b];
            }
        }
        y[r] = (float)(acc - qsum) / s * scale;
    }
}
