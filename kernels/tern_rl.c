/* tern_rl: tern's "RL" (row-lane) ternary layout (see ternary.h), made at load for AVX-512 VNNI:
 * its 32-bit lanes are rows, so a GEMM tile of 32 rows × 12 tokens runs on vpdpbusd with
 * broadcast activations and no horizontal sums. Here: size, padding, packing from trits and
 * the scalar spec. Not here: the VNNI kernel (x86/tern_rl_avx512.c), choosing it (mat.c). */
#include "kernels/ternary.h"
#include <string.h>

static int64_t rl_tiles(int64_t rows) { return (rows + RL_R - 1) / RL_R; }

size_t tern_rl_bytes(int64_t rows, int64_t cols) { return (size_t)(rl_tiles(rows) * RL_R * cols / 4); }

/* byte holding (row r, column c): tile, 16-column block, half, lane, byte in lane */
static size_t rl_off(int64_t cols, int64_t r, int64_t c) {
    int64_t i = r % RL_R;
    return (size_t)((r / RL_R) * RL_R * cols / 4 + (c / 16) * 128 + (i / 16) * 64 + (i % 16) * 4 + c % 4);
}

static int rl_shift(int64_t c) { return 6 - 2 * (int)(c % 16 / 4); }

void tern_rl_pad(int64_t rows, int64_t cols, void *dst) {
    for (int64_t r = rows; r < rl_tiles(rows) * RL_R; r++)
        for (int64_t c = 0; c < cols; c += 4) memset((uint8_t *)dst + rl_off(cols, r, c), 0x55, 4);
}

void tern_rl_pack_rows(const int8_t *t, int64_t cols, int64_t r0, int64_t nr, void *dst) {
    for (int64_t k = 0; k < nr; k++)
        for (int64_t c0 = 0; c0 < cols; c0 += 16)
            for (int b = 0; b < 4; b++) {
                uint8_t v = 0;
                for (int s = 0; s < 4; s++) v |= (uint8_t)((t[k * cols + c0 + 4 * s + b] + 1) << (6 - 2 * s));
                ((uint8_t *)dst)[rl_off(cols, r0 + k, c0 + b)] = v;
            }
}

void tern_rl_dot_ref(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t cols = a->cols;
    for (int t = 0; t < a->n; t++) {
        const int8_t *q = a->q + t * cols;
        for (int64_t k = 0; k < nr; k++) {
            int32_t acc = 0;
            for (int64_t c = 0; c < cols; c++)
                acc += ((((const uint8_t *)w)[rl_off(cols, r0 + k, c)] >> rl_shift(c) & 3) - 1) * q[c];
            isum[(int64_t)t * nr + k] = acc;
        }
    }
}

/* 8 I2_S bytes → the same with every 2-bit code 3 made 1 (quant_unpack_trits reads 3 as 0) */
static uint64_t i2s_fix3(uint64_t x) { return x & ~((x & (x >> 1) & 0x5555555555555555ull) << 1); }

/* An I2_S row's 128-column block holds column 32s' + j in bits 7−2s' of byte j. The RL block m
 * (16 columns) inside it takes field s' = (m % 8) / 2 of bytes 16(m % 2) .. +15, and its lane
 * byte b gathers those bytes 4s + b (s = 0..3) into bits 7−2s: with F the 16 fields as bytes,
 * the 4 lane bytes are the 32-bit words F0 << 6 | F1 << 4 | F2 << 2 | F3. No move crosses a
 * byte, so it runs on 64-bit words. */
void tern_rl_from_i2s(const void *src, int64_t cols, int64_t r0, int64_t nr, void *dst) {
    const uint64_t m3 = 0x0303030303030303ull;
    for (int64_t r = r0; r < r0 + nr; r++) {
        const uint8_t *s = (const uint8_t *)src + (size_t)(r * cols / 4);
        for (int64_t blk = 0; blk < cols / 128; blk++, s += 32) {
            uint64_t x[4];
            memcpy(x, s, 32);
            for (int k = 0; k < 4; k++) x[k] = i2s_fix3(x[k]);
            for (int sp = 0; sp < 4; sp++)
                for (int h = 0; h < 2; h++) {
                    uint64_t a = x[2 * h] >> (6 - 2 * sp) & m3, b = x[2 * h + 1] >> (6 - 2 * sp) & m3;
                    uint32_t v = (uint32_t)(a << 6 | b << 2) | (uint32_t)((a << 4 | b) >> 32);
                    memcpy((uint8_t *)dst + rl_off(cols, r, 128 * blk + 16 * (2 * sp + h)), &v, 4);
                }
        }
    }
}
