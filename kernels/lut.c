/* lut: the "tern-lut3" layout (lut.h): sizes, packing from trits, the activation tables and the
 * scalar spec of the lookup-table dot product. The SIMD variants (x86/lut_*.c, arm/lut_neon.c)
 * read the same bytes and tables and must give the same exact sums. */
#include "kernels/lut.h"
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
