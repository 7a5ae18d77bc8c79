/* lut: the "tern-lut3" layout (lut.h): sizes, packing from trits, the activation tables and the
 * scalar spec of the lookup-table dot product. The SIMD variants (x86/lut_*.c, arm/lut_neon.c)
 * read the same bytes and tables and must give the same exact sums. */
#include "kernels/lut.h"
#include "core/err.h"
#include "core/types.h"
#include "kernels/dispatch.h"
#include <string.h>

int64_t lut_blocks(int64_t cols) { return ((cols + 2) / 3 + 7) / 8; }

size_t lut_bytes(int64_t rows, int64_t cols) {
    return (size_t)((rows + LUT_R - 1) / LUT_R) * (size_t)lut_blocks(cols) * LUT_BLK;
}

size_t lut_tbl_bytes(int64_t cols) { return (size_t)lut_blocks(cols) * LUT_TBL; }

void lut_pack_rows(const int8_t *t, int64_t cols, int64_t r0, int64_t nr, void *dst) {
    int64_t nblk = lut_blocks(cols);
    for (int64_t k = 0; k < nr; k++) {
        int64_t r = r0 + k, i = r % LUT_R;
        uint8_t *tile = (uint8_t *)dst + (size_t)(r / LUT_R) * (size_t)nblk * LUT_BLK;
        const int8_t *row = t + k * cols;
        for (int64_t g = 0; g * 3 < cols; g++) {
            int n = 0;
            for (int d = 0; d < 3; d++) n = n * 3 + (3 * g + d < cols ? row[3 * g + d] : 0) + 1;
            int idx = n >= 13 ? n - 13 : 13 - n, b = (int)(g % 8);
            uint8_t *base = tile + (size_t)(g / 8) * LUT_BLK;
            if (n < 13) base[i] |= (uint8_t)(1u << b);
            base[64 + 64 * (b / 2) + i] |= (uint8_t)(idx << (4 * (b % 2)));
        }
    }
}

/* ---- repacking straight from the stored types ------------------------------------------- */

/* codes below are trit + 1 (0..2; TQ2_0's unused code 3 stays 3, as its int8 trit +2 did) */

/* I2_S block (32 bytes, 128 columns): column 32s + j in bits 7−2s of byte j; code 3 reads as 1
 * (trit 0, as quant_unpack_trits does). 8 bytes at a time. */
static void i2s_codes(const uint8_t *b, uint8_t *c) {
    const uint64_t m3 = 0x0303030303030303ull, m1 = 0x0101010101010101ull;
    for (int j = 0; j < 32; j += 8) {
        uint64_t x;
        memcpy(&x, b + j, 8);
        for (int s = 0; s < 4; s++) {
            uint64_t v = x >> (6 - 2 * s) & m3;
            v ^= (v & v >> 1 & m1) << 1;   /* 3 → 1 */
            memcpy(c + 32 * s + j, &v, 8);
        }
    }
}

/* TQ2_0 block (66 bytes, 256 columns): column 128h + m + 32n in bits 2n of byte 32h + m */
static void tq2_codes(const uint8_t *b, uint8_t *c) {
    const uint64_t m3 = 0x0303030303030303ull;
    for (int h = 0; h < 2; h++)
        for (int m = 0; m < 32; m += 8) {
            uint64_t x;
            memcpy(&x, b + 32 * h + m, 8);
            for (int n = 0; n < 4; n++) {
                uint64_t v = x >> (2 * n) & m3;
                memcpy(c + 128 * h + 32 * n + m, &v, 8);
            }
        }
}

/* TQ1_0 block (54 bytes, 256 columns): base-3 digits as ggml stores them (see quant.c) */
static void tq1_codes(const uint8_t *b, uint8_t *c) {
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 32; m++) c[m + 32 * n] = (uint8_t)((uint8_t)(b[m] * pow3[n]) * 3 >> 8);
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 16; m++) c[160 + m + 16 * n] = (uint8_t)((uint8_t)(b[32 + m] * pow3[n]) * 3 >> 8);
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++) c[240 + j + 4 * n] = (uint8_t)((uint8_t)(b[48 + j] * pow3[n]) * 3 >> 8);
}

/* codes c (24·nb) of one row → that row's bytes (row i of its tile) in nb consecutive blocks
 * from base. Whole bytes are written, equal to lut_pack_rows's ORs into a zeroed tensor. A
 * group's n = 9c0 + 3c1 + c2 ≤ 39 is one byte of a word holding a block's 8 groups; with
 * a = n + 115 (no carry out of a byte), bit 7 of a is n ≥ 13, so sign = !bit 7 and
 * idx = |n − 13| = a & 127 (n ≥ 13) or (a ^ 127) + 1 (n < 13), all 8 bytes at once. */
static void lut_put_blocks(const uint8_t *c, int64_t nb, int64_t i, uint8_t *base) {
    const uint64_t ones = 0x0101010101010101ull, hi = 0x8080808080808080ull;
    for (int64_t m = 0; m < nb; m++, c += 24, base += LUT_BLK) {
        uint64_t x = 0;
        for (int b = 0; b < 8; b++) x |= (uint64_t)(9 * c[3 * b] + 3 * c[3 * b + 1] + c[3 * b + 2]) << (8 * b);
        uint64_t a = x + 115 * ones, neg = ~a & hi;   /* neg: bit 7 set where n < 13 */
        uint64_t flip = (neg >> 7) * 127;              /* 127 in the negative bytes */
        uint64_t idx = ((a & ~hi) ^ flip) + (neg >> 7);
        base[i] = (uint8_t)((neg * 0x0002040810204081ull) >> 56);   /* bit 7 of byte b → bit b */
        uint64_t pair = idx | (idx >> 4 & 0xf0f0f0f0f0f0f0f0ull);       /* byte 2p: idx 2p | idx 2p+1 << 4 */
        for (int p = 0; p < 4; p++) base[64 + 64 * p + i] = (uint8_t)(pair >> (16 * p));
    }
}

/* columns per piece: whole blocks of 8 groups (24) and whole stored blocks (128, 256) */
#define LUT_PIECE 768

void lut_from_src(int type, const void *src, int64_t cols, int64_t r0, int64_t nr, void *dst) {
    TERN_ASSERT(type == TT_I2_S || type == TT_TQ2_0 || type == TT_TQ1_0);
    int64_t nblk = lut_blocks(cols), blk = type == TT_I2_S ? 128 : 256;
    size_t bb = type == TT_I2_S ? 32 : type == TT_TQ2_0 ? 66 : 54;
    TERN_ASSERT(cols > 0 && cols % blk == 0);
    uint8_t c[LUT_PIECE];
    for (int64_t r = r0; r < r0 + nr; r++) {
        const uint8_t *row = (const uint8_t *)src + (size_t)(r * (cols / blk)) * bb;
        uint8_t *tile = (uint8_t *)dst + (size_t)(r / LUT_R) * (size_t)nblk * LUT_BLK;
        for (int64_t c0 = 0; c0 < cols; c0 += LUT_PIECE) {
            int64_t w = cols - c0 < LUT_PIECE ? cols - c0 : LUT_PIECE, pad = nblk * 24 - c0;
            for (int64_t k = 0; k < w; k += blk) {
                const uint8_t *b = row + (size_t)((c0 + k) / blk) * bb;
                uint16_t d = 1;
                if (type != TT_I2_S) memcpy(&d, b + bb - 2, 2);
                if ((d & 0x7fff) == 0) memset(c + k, 1, (size_t)blk);   /* zero-scale block: zero trits */
                else if (type == TT_I2_S) i2s_codes(b, c + k);
                else if (type == TT_TQ2_0) tq2_codes(b, c + k);
                else tq1_codes(b, c + k);
            }
            if (pad > LUT_PIECE) pad = LUT_PIECE;
            memset(c + w, 1, (size_t)(pad - w));   /* columns past cols: zero trits */
            lut_put_blocks(c, pad / 24, r % LUT_R, tile + (size_t)(c0 / 24) * LUT_BLK);
        }
    }
}

/* trit d (0..2 → −1..+1) of the group that index j stands for */
static int lut_digit(int j, int d) {
    int n = 13 + j;
    return (d == 0 ? n / 9 : d == 1 ? n / 3 % 3 : n % 3) - 1;
}

void lut_tables_ref(const int8_t *q, int64_t cols, int8_t *tbl) {
    int64_t ng = lut_blocks(cols) * 8;
    for (int64_t g = 0; g < ng; g++, tbl += 32) {
        int ql[3], qh[3];
        for (int d = 0; d < 3; d++) {
            int v = 3 * g + d < cols ? q[3 * g + d] : 0;
            ql[d] = v & 15;
            qh[d] = (v - ql[d]) / 16;
        }
        for (int j = 0; j < 16; j++) {
            int lo = 0, hi = 0;
            for (int d = 0; j < 14 && d < 3; d++) {
                lo += lut_digit(j, d) * ql[d];
                hi += lut_digit(j, d) * qh[d];
            }
            tbl[j] = (int8_t)lo;
            tbl[16 + j] = (int8_t)hi;
        }
    }
}

void lut_tables(const int8_t *q, int64_t cols, int8_t *tbl) {
#if defined(TERN_HAVE_X86)
    int isa = isa_current();
    if (isa == ISA_AVX2 || isa == ISA_AVX512) {
        lut_tables_avx2(q, cols, tbl);
        return;
    }
#endif
    lut_tables_ref(q, cols, tbl);
}

void lut_dot_ref(const void *w, int64_t rows, int64_t r0, int64_t nr, const tact_t *a, int32_t *isum) {
    (void)rows;
    int64_t nblk = lut_blocks(a->cols);
    size_t tb = lut_tbl_bytes(a->cols);
    for (int t = 0; t < a->n; t++) {
        const int8_t *tbl = a->lut + (size_t)t * tb;
        for (int64_t k = 0; k < nr; k++) {
            int64_t r = r0 + k, i = r % LUT_R;
            const uint8_t *base = (const uint8_t *)w + (size_t)(r / LUT_R) * (size_t)nblk * LUT_BLK;
            int32_t acc = 0;
            for (int64_t m = 0; m < nblk; m++, base += LUT_BLK)
                for (int b = 0; b < 8; b++) {
                    const int8_t *tg = tbl + (m * 8 + b) * 32;
                    int idx = (base[64 + 64 * (b / 2) + i] >> (4 * (b % 2))) & 15;
                    int v = tg[idx] + 16 * tg[16 + idx];
                    acc += (base[i] >> b & 1) ? -v : v;
                }
            isum[(int64_t)t * nr + k] = acc;
        }
    }
}
