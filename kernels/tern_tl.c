/* tern_tl: tern's own "TL" ternary layout (see ternary.h): rows interleaved in groups of TL_R
 * per 256-column chunk so the whole matrix is one sequential stream and one 64-byte load yields
 * 64 codes per shift in natural column order (no activation shuffling for any vector width).
 * Made at load time from I2_S / TQ2_0 / TQ1_0 by mat.c. Here: size, packing, scalar spec. */
#include "kernels/ternary.h"
#include <string.h>

static int64_t tl_groups(int64_t rows) { return (rows + TL_R - 1) / TL_R; }

size_t tern_tl_bytes(int64_t rows, int64_t cols) { return (size_t)(tl_groups(rows) * TL_R * cols / 4); }

/* byte offset of (row r, chunk k) */
static size_t tl_off(int64_t cols, int64_t r, int64_t k) {
    return (size_t)((r / TL_R) * TL_R * cols / 4 + k * TL_R * 64 + (r % TL_R) * 64);
}

void tern_tl_pad(int64_t rows, int64_t cols, void *dst) {
    for (int64_t r = rows; r < tl_groups(rows) * TL_R; r++)
        for (int64_t k = 0; k < cols / 256; k++) memset((uint8_t *)dst + tl_off(cols, r, k), 0x55, 64);
}

void tern_tl_pack_rows(const int8_t *t, int64_t rows, int64_t cols, int64_t r0, int64_t nr, void *dst) {
    (void)rows;
    for (int64_t r = 0; r < nr; r++)
        for (int64_t k = 0; k < cols / 256; k++) {
            uint8_t *o = (uint8_t *)dst + tl_off(cols, r0 + r, k);
            const int8_t *s = t + r * cols + 256 * k;
            for (int j = 0; j < 64; j++)
                o[j] = (uint8_t)((s[j] + 1) << 6 | (s[j + 64] + 1) << 4 | (s[j + 128] + 1) << 2 | (s[j + 192] + 1));
        }
}

void tern_tl_dot_ref(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t cols = a->cols;
    for (int t = 0; t < a->n; t++) {
        const int8_t *q = a->q + t * cols;
        for (int64_t r = 0; r < nr; r++) {
            int32_t acc = 0;
            for (int64_t k = 0; k < cols / 256; k++) {
                const uint8_t *b = (const uint8_t *)w + tl_off(cols, r0 + r, k);
                for (int g = 0; g < 4; g++)
                    for (int j = 0; j < 64; j++) acc += (((b[j] >> (6 - 2 * g)) & 3) - 1) * q[256 * k + 64 * g + j];
            }
            isum[t * nr + r] = acc;
        }
    }
}

/* 8 I2_S bytes → the same with every 2-bit code 3 made 1 (quant_unpack_trits reads 3 as 0) */
static uint64_t i2s_fix3(uint64_t x) { return x & ~((x & (x >> 1) & 0x5555555555555555ull) << 1); }

/* An I2_S row's 128-column blocks A = 2k, B = 2k+1 hold column 128b + 32s + j in bits 7−2s of
 * byte j; TL chunk k holds column 256k + 64s + j in bits 7−2s of byte j. So TL bytes 0..31 are
 * A's shifts 0, 2 and B's shifts 0, 2; bytes 32..63 the shifts 1, 3. Every move stays inside
 * a byte, so 8 bytes go at once. */
void tern_tl_from_i2s(const void *src, int64_t cols, int64_t r0, int64_t nr, void *dst) {
    const uint64_t c0 = 0xc0c0c0c0c0c0c0c0ull, c1 = 0x3030303030303030ull, c2 = 0x0c0c0c0c0c0c0c0cull,
                   c3 = 0x0303030303030303ull;
    for (int64_t r = r0; r < r0 + nr; r++) {
        const uint8_t *s = (const uint8_t *)src + (size_t)(r * cols / 4);
        for (int64_t k = 0; k < cols / 256; k++, s += 64) {
            uint8_t *o = (uint8_t *)dst + tl_off(cols, r, k);
            for (int j = 0; j < 32; j += 8) {
                uint64_t a, b, lo, hi;
                memcpy(&a, s + j, 8);
                memcpy(&b, s + 32 + j, 8);
                a = i2s_fix3(a);
                b = i2s_fix3(b);
                lo = (a & c0) | (a & c2) << 2 | (b & c0) >> 4 | (b & c2) >> 2;
                hi = (a & c1) << 2 | (a & c3) << 4 | (b & c1) >> 2 | (b & c3);
                memcpy(o + j, &lo, 8);
                memcpy(o + 32 + j, &hi, 8);
            }
        }
    }
}
