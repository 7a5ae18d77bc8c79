/* quant: f32 <-> stored types (the scalar spec of every byte layout) and per-token int8
 * activation quantisation. Layouts follow llama.cpp's ggml-common.h (Q8_0, TQ1_0, TQ2_0) and
 * bitnet.cpp's quantize_i2_s (I2_S). Not here: matrix products (mat.c, fmat.c) and the
 * tern-native repacked layouts (tern*.c). */
#include "kernels/quant.h"
#include "core/err.h"
#include "core/half.h"
#include "core/types.h"
#include "kernels/dispatch.h"
#include "kernels/kquant.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- activations ---------------------------------------------------------------------- */

float act_quant_ref(const float *x, int64_t n, int8_t *q, int32_t *sum) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    float s = amax > 0.0f ? 127.0f / amax : 1.0f;
    int32_t acc = 0;
    for (int64_t i = 0; i < n; i++) {
        q[i] = act_quant_one(x[i], s);
        acc += q[i];
    }
    if (sum) *sum = acc;
    return s;
}

#if defined(TERN_HAVE_X86)
float act_quant_avx2(const float *x, int64_t n, int8_t *q, int32_t *sum);
#endif

float act_quant(const float *x, int64_t n, int8_t *q, int32_t *sum) {
#if defined(TERN_HAVE_X86)
    if (isa_current() >= ISA_AVX2 && isa_current() <= ISA_AVX512) return act_quant_avx2(x, n, q, sum);
#endif
    return act_quant_ref(x, n, q, sum);
}

/* ---- trit packing --------------------------------------------------------------------- */

static const uint8_t k_pow3[6] = {1, 3, 9, 27, 81, 243};

static uint8_t code(int8_t t) { return (uint8_t)(t + 1); }   /* -1,0,+1 → 0,1,2 */

/* five (or four, then ×3) base-3 digits, first most significant, stored as ceil(q·256/243) */
static uint8_t tq1_byte(const int8_t *t, int stride, int n) {
    unsigned q = 0;
    for (int i = 0; i < n; i++) q = q * 3 + code(t[i * stride]);
    for (int i = n; i < 5; i++) q *= 3;
    return (uint8_t)((q * 256 + 242) / 243);
}

static int8_t tq1_digit(uint8_t b, int n) {
    uint8_t q = (uint8_t)(b * k_pow3[n]);
    return (int8_t)((((uint16_t)q * 3) >> 8) - 1);
}

/* t (256,) → block_tq1_0 {qs[48]; qh[4]; f16 d} */
static void tq1_pack_block(const int8_t *t, uint16_t d, uint8_t *b) {
    for (int m = 0; m < 32; m++) b[m] = tq1_byte(t + m, 32, 5);
    for (int m = 0; m < 16; m++) b[32 + m] = tq1_byte(t + 160 + m, 16, 5);
    for (int j = 0; j < 4; j++) b[48 + j] = tq1_byte(t + 240 + j, 4, 4);
    memcpy(b + 52, &d, 2);
}

static void tq1_unpack_block(const uint8_t *b, int8_t *t) {
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 32; m++) t[m + 32 * n] = tq1_digit(b[m], n);
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 16; m++) t[160 + m + 16 * n] = tq1_digit(b[32 + m], n);
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++) t[240 + j + 4 * n] = tq1_digit(b[48 + j], n);
}

/* t (256,) → block_tq2_0 {qs[64]; f16 d}: byte 32h+m holds element 128h + m + 32n at bits 2n */
static void tq2_pack_block(const int8_t *t, uint16_t d, uint8_t *b) {
    for (int h = 0; h < 2; h++)
        for (int m = 0; m < 32; m++) {
            uint8_t v = 0;
            for (int n = 0; n < 4; n++) v |= (uint8_t)(code(t[128 * h + m + 32 * n]) << (2 * n));
            b[32 * h + m] = v;
        }
    memcpy(b + 64, &d, 2);
}

static void tq2_unpack_block(const uint8_t *b, int8_t *t) {
    for (int h = 0; h < 2; h++)
        for (int n = 0; n < 4; n++)
            for (int m = 0; m < 32; m++)
                t[128 * h + m + 32 * n] = (int8_t)(((b[32 * h + m] >> (2 * n)) & 3) - 1);
}

/* t (128,) → I2_S block of 32 bytes: byte j holds j, j+32, j+64, j+96 in bits 7:6 .. 1:0 */
static void i2s_pack_block(const int8_t *t, uint8_t *b) {
    for (int j = 0; j < 32; j++)
        b[j] = (uint8_t)(code(t[j]) << 6 | code(t[j + 32]) << 4 | code(t[j + 64]) << 2 | code(t[j + 96]));
}

static void i2s_unpack_block(const uint8_t *b, int8_t *t) {
    for (int g = 0; g < 4; g++)
        for (int j = 0; j < 32; j++) {
            int c = (b[j] >> (6 - 2 * g)) & 3;
            t[32 * g + j] = (int8_t)(c == 3 ? 0 : c - 1);   /* code 3 is unused; read as 0 */
        }
}

static uint16_t d_at(const uint8_t *blk, size_t off) {
    uint16_t d;
    memcpy(&d, blk + off, 2);
    return d;
}

static int check_shape(int type, int64_t rows, int64_t cols) {
    const type_traits_t *tt = type_traits(type);
    if (!tt || rows < 0 || cols <= 0 || cols % tt->blck) return TERN_EINVAL;
    return 0;
}

int quant_pack_trits(int type, const int8_t *t, int64_t rows, int64_t cols, float scale, void *dst) {
    if ((type != TT_I2_S && type != TT_TQ1_0 && type != TT_TQ2_0) || check_shape(type, rows, cols))
        return TERN_EINVAL;
    uint8_t *o = dst;
    uint16_t d = f32_to_f16(scale);
    int64_t n = rows * cols;
    if (type == TT_I2_S)
        for (int64_t i = 0; i < n; i += 128) i2s_pack_block(t + i, o + i / 4);
    else if (type == TT_TQ2_0)
        for (int64_t i = 0; i < n; i += 256) tq2_pack_block(t + i, d, o + i / 256 * 66);
    else
        for (int64_t i = 0; i < n; i += 256) tq1_pack_block(t + i, d, o + i / 256 * 54);
    return 0;
}

void quant_i2s_tail(void *tail32, float scale) {
    memset(tail32, 0, I2_S_TAIL);
    memcpy(tail32, &scale, 4);
}

float quant_tq_scale(int type, const void *src, int64_t rows, int64_t cols, int *differ) {
    size_t bb = type == TT_TQ2_0 ? 66 : 54;
    int64_t nblk = rows * cols / 256;
    uint16_t d0 = 0;
    *differ = 0;
    for (int64_t b = 0; b < nblk; b++) {
        uint16_t d;
        memcpy(&d, (const uint8_t *)src + b * bb + bb - 2, 2);
        if ((d & 0x7fff) == 0) continue;
        if (d0 == 0) d0 = d;
        else if (d != d0) { *differ = 1; return 0.0f; }
    }
    return f16_to_f32(d0);
}

int quant_unpack_trits(int type, const void *src, int64_t rows, int64_t cols, int64_t r0, int64_t nr,
                       int8_t *t, float *scale) {
    if ((type != TT_I2_S && type != TT_TQ1_0 && type != TT_TQ2_0) || check_shape(type, rows, cols) ||
        r0 < 0 || nr < 0 || r0 + nr > rows)
        return TERN_EINVAL;
    const uint8_t *s = src;
    int64_t n = nr * cols;
    if (type == TT_I2_S) {
        s += r0 * cols / 4;
        for (int64_t i = 0; i < n; i += 128) i2s_unpack_block(s + i / 4, t + i);
        if (scale) memcpy(scale, (const uint8_t *)src + rows * cols / 4, 4);
        return 0;
    }
    size_t bb = type == TT_TQ2_0 ? 66 : 54;
    s += (size_t)(r0 * cols / 256) * bb;
    for (int64_t i = 0; i < n; i += 256) {
        if (type == TT_TQ2_0) tq2_unpack_block(s + i / 256 * bb, t + i);
        else tq1_unpack_block(s + i / 256 * bb, t + i);
    }
    if (scale) *scale = n > 0 ? f16_to_f32(d_at(s, bb - 2)) : 0.0f;
    return 0;
}

/* ---- f32 → type ----------------------------------------------------------------------- */

static void q8_0_row(const float *x, int64_t cols, uint8_t *o) {
    for (int64_t b = 0; b < cols / QK8_0; b++, x += QK8_0, o += 34) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t h = f32_to_f16(d);
        memcpy(o, &h, 2);
        for (int j = 0; j < QK8_0; j++) o[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

/* absmean ternarisation: scale = mean|W|, t = clamp(round(W/scale), -1, 1), row by row */
static int ternary_from_f32(int type, const float *x, int64_t rows, int64_t cols, uint8_t *dst) {
    double acc = 0.0;
    for (int64_t i = 0; i < rows * cols; i++) acc += fabs((double)x[i]);
    float scale = (float)(acc / (double)(rows * cols));
    int8_t *t = malloc((size_t)cols);
    if (!t) return TERN_ENOMEM;
    size_t rb = type == TT_I2_S ? (size_t)cols / 4 : type_row_bytes(type, cols);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            float v = scale > 0.0f ? roundf(x[r * cols + c] / scale) : 0.0f;
            t[c] = (int8_t)(v > 1.0f ? 1 : v < -1.0f ? -1 : v);
        }
        quant_pack_trits(type, t, 1, cols, scale, dst + (size_t)r * rb);
    }
    free(t);
    if (type == TT_I2_S) quant_i2s_tail(dst + (size_t)rows * rb, scale);
    return 0;
}

int quant_from_f32(int type, const float *x, int64_t rows, int64_t cols, void *dst) {
    if (check_shape(type, rows, cols)) return TERN_EINVAL;
    uint8_t *o = dst;
    if (kquant_is(type)) {   /* rows are whole blocks: one stream */
        kquant_quantize(type, x, rows * cols, dst);
        return 0;
    }
    int64_t n = rows * cols;
    switch (type) {
    case TT_F32: memcpy(dst, x, (size_t)n * 4); return 0;
    case TT_F16:
        for (int64_t i = 0; i < n; i++) { uint16_t h = f32_to_f16(x[i]); memcpy(o + 2 * i, &h, 2); }
        return 0;
    case TT_BF16:
        for (int64_t i = 0; i < n; i++) { uint16_t h = f32_to_bf16(x[i]); memcpy(o + 2 * i, &h, 2); }
        return 0;
    case TT_Q8_0:
        for (int64_t r = 0; r < rows; r++) q8_0_row(x + r * cols, cols, o + (size_t)r * type_row_bytes(type, cols));
        return 0;
    case TT_TQ1_0: case TT_TQ2_0: case TT_I2_S:
        return ternary_from_f32(type, x, rows, cols, o);
    default: return TERN_ENOTSUP;
    }
}

/* ---- type → f32 ----------------------------------------------------------------------- */

int dequant_rows(int type, const void *src, int64_t rows, int64_t cols, int64_t r0, int64_t nr, float *y) {
    if (check_shape(type, rows, cols) || r0 < 0 || nr < 0 || r0 + nr > rows)
        return TERN_EINVAL;
    const uint8_t *s = src;
    int64_t n = nr * cols;
    if (kquant_is(type)) {
        kquant_dequant(type, s + (size_t)r0 * type_row_bytes(type, cols), n, y);
        return 0;
    }
    switch (type) {
    case TT_F32: memcpy(y, s + (size_t)(r0 * cols) * 4, (size_t)n * 4); return 0;
    case TT_F16:
        s += (size_t)(r0 * cols) * 2;
        for (int64_t i = 0; i < n; i++) y[i] = f16_to_f32(d_at(s, (size_t)i * 2));
        return 0;
    case TT_BF16:
        s += (size_t)(r0 * cols) * 2;
        for (int64_t i = 0; i < n; i++) y[i] = bf16_to_f32(d_at(s, (size_t)i * 2));
        return 0;
    case TT_Q8_0:
        s += (size_t)(r0 * cols / QK8_0) * 34;
        for (int64_t b = 0; b < n / QK8_0; b++, s += 34) {
            float d = f16_to_f32(d_at(s, 0));
            for (int j = 0; j < QK8_0; j++) y[b * QK8_0 + j] = (float)(int8_t)s[2 + j] * d;
        }
        return 0;
    default: break;
    }
    /* ternary: unpack in row-sized pieces, then scale (TQ: each block's own d) */
    int8_t *t = malloc((size_t)cols);
    if (!t) return TERN_ENOMEM;
    float scale = 0.0f;
    size_t bb = type == TT_TQ2_0 ? 66 : 54;
    for (int64_t r = 0; r < nr; r++) {
        quant_unpack_trits(type, src, rows, cols, r0 + r, 1, t, &scale);
        for (int64_t c = 0; c < cols; c++) {
            float d = scale;
            if (type != TT_I2_S) d = f16_to_f32(d_at(s, (size_t)(((r0 + r) * cols + c) / 256) * bb + bb - 2));
            y[r * cols + c] = (float)t[c] * d;
        }
    }
    free(t);
    return 0;
}
