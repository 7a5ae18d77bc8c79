/* kquant: the scalar spec of llama.cpp's Q4_0, Q5_0, Q4_K, Q5_K and Q6_K blocks (see kquant.h):
 * dequantisation in llama.cpp's order of float operations (so values match its dequantize_row_*
 * bit for bit), its reference quantizers (quantize_row_*_ref: same search, same rounding), the
 * activation quantisation and integer block products of the K-quant lm head. Not here: row
 * loops and threads (fmat.c), SIMD (x86/kquant_*.c, arm/kquant_neon.c). */
#pragma GCC optimize("fp-contract=off") /* every float operation rounds as written */
#include "kernels/kquant.h"
#include <math.h>
#include <string.h>
#include "core/half.h"
#include "core/types.h"

int kquant_is(int type) {
    return type == TT_Q4_0 || type == TT_Q5_0 || kquant_is_k(type);
}

int kquant_is_k(int type) { return type == TT_Q4_K || type == TT_Q5_K || type == TT_Q6_K; }

static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* ---- block → values --------------------------------------------------------------------- */

uint16_t kquant_unpack32(int type, const uint8_t *blk, int8_t *q) {
    const uint8_t *qs = blk + (type == TT_Q5_0 ? 6 : 2);
    uint32_t qh = 0;
    if (type == TT_Q5_0) memcpy(&qh, blk + 2, 4);
    int off = type == TT_Q5_0 ? 16 : 8;
    for (int j = 0; j < 16; j++) {
        int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
        q[j] = (int8_t)(((qs[j] & 0xF) | h0) - off);
        q[j + 16] = (int8_t)(((qs[j] >> 4) | h1) - off);
    }
    return rd16(blk);
}

/* Q4_K / Q5_K: unsigned values (0..15 or 0..31) of one super-block */
static void unpack_k45(int type, const uint8_t *blk, uint8_t *q) {
    const uint8_t *qs = blk + (type == TT_Q5_K ? 48 : 16), *qh = blk + 16;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            uint8_t lo = qs[32 * c + l] & 0xF, hi = qs[32 * c + l] >> 4;
            if (type == TT_Q5_K) {
                lo |= (uint8_t)(((qh[l] >> (2 * c)) & 1) << 4);
                hi |= (uint8_t)(((qh[l] >> (2 * c + 1)) & 1) << 4);
            }
            q[64 * c + l] = lo;
            q[64 * c + 32 + l] = hi;
        }
}

/* Q6_K: signed values (−32..31) of one super-block */
static void unpack_q6k(const uint8_t *blk, int8_t *q) {
    const uint8_t *ql = blk, *qh = blk + 128;
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++)
            for (int k = 0; k < 4; k++) {
                int lo = (ql[64 * h + l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0xF;
                int hi = (qh[32 * h + l] >> (2 * k)) & 3;
                q[128 * h + l + 32 * k] = (int8_t)((lo | hi << 4) - 32);
            }
}

void kquant_dequant(int type, const void *src, int64_t nvals, float *y) {
    const uint8_t *b = src;
    if (type == TT_Q4_0 || type == TT_Q5_0) {
        size_t bb = type == TT_Q4_0 ? 18 : 22;
        int8_t q[32];
        for (int64_t i = 0; i < nvals / 32; i++, b += bb, y += 32) {
            float d = f16_to_f32(kquant_unpack32(type, b, q));
            for (int j = 0; j < 32; j++) y[j] = (float)q[j] * d;
        }
        return;
    }
    if (type == TT_Q6_K) {
        int8_t q[256];
        for (int64_t i = 0; i < nvals / 256; i++, b += 210, y += 256) {
            unpack_q6k(b, q);
            float d = f16_to_f32(rd16(b + 208));
            const int8_t *sc = (const int8_t *)(b + 192);
            for (int v = 0; v < 256; v++) y[v] = d * (float)sc[v / 16] * (float)q[v];
        }
        return;
    }
    size_t bb = type == TT_Q4_K ? 144 : 176;
    uint8_t q[256];
    for (int64_t i = 0; i < nvals / 256; i++, b += bb, y += 256) {
        unpack_k45(type, b, q);
        float d = f16_to_f32(rd16(b)), dmin = f16_to_f32(rd16(b + 2));
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            kquant_scale_min(j, b + 4, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            for (int l = 0; l < 32; l++) y[32 * j + l] = d1 * (float)q[32 * j + l] - m1;
        }
    }
}

/* ---- f32 → blocks (llama.cpp's reference quantizers) --------------------------------------- */

/* round half to even, as llama.cpp's nearest_int (|v| < 2^22) */
static int nearest(float v) {
    float f = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &f, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* symmetric levels L in [0, 2·nmax) for n values, weights x² (llama.cpp make_qx_quants, rmse 1) */
static float qx_levels(int n, int nmax, const float *x, int8_t *L) {
    float max = 0.0f, amax = 0.0f;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -(float)nmax / max, sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = clampi(nearest(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + clampi(nearest(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* asymmetric levels L in [0, nmax] with a min (llama.cpp make_qkx2_quants, squared error) */
static float qkx_levels(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min, float rmin,
                        float rdelta, int nstep) {
    uint8_t Laux[32];
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0.0f) min = 0.0f;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min), scale = 1.0f / iscale, best_error = 0.0f;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi(nearest(iscale * (x[i] - min)), 0, nmax);
        float diff = scale * (float)L[i] + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0.0f) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0.0f) {
                this_min = 0.0f;
                this_scale = sum_xl / sum_l2;
            }
            float cur = 0.0f;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                cur += w[i] * (diff * diff);
            }
            if (cur < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

static void quant_q6k(const float *x, uint8_t *b) {
    int8_t L[256];
    float scales[16], max_scale = 0.0f, max_abs = 0.0f;
    for (int ib = 0; ib < 16; ib++) {
        scales[ib] = qx_levels(16, 32, x + 16 * ib, L + 16 * ib);
        if (fabsf(scales[ib]) > max_abs) { max_abs = fabsf(scales[ib]); max_scale = scales[ib]; }
    }
    memset(b, 0, 210);
    if (max_abs < 1e-15f) return;
    float iscale = -128.0f / max_scale;
    wr16(b + 208, f32_to_f16(1.0f / iscale));
    int8_t *sc = (int8_t *)(b + 192);
    for (int ib = 0; ib < 16; ib++) {
        int v = nearest(iscale * scales[ib]);
        sc[ib] = (int8_t)(v < 127 ? v : 127);
    }
    float dd = f16_to_f32(rd16(b + 208));
    for (int j = 0; j < 16; j++) {
        float d = dd * (float)sc[j];
        if (d == 0.0f) continue;
        for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(clampi(nearest(x[16 * j + i] / d), -32, 31) + 32);
    }
    uint8_t *ql = b, *qh = b + 128;
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const int8_t *Lh = L + 128 * h + l;
            ql[64 * h + l] = (uint8_t)((Lh[0] & 0xF) | (Lh[64] & 0xF) << 4);
            ql[64 * h + l + 32] = (uint8_t)((Lh[32] & 0xF) | (Lh[96] & 0xF) << 4);
            qh[32 * h + l] = (uint8_t)((Lh[0] >> 4) | (Lh[32] >> 4) << 2 | (Lh[64] >> 4) << 4 | (Lh[96] >> 4) << 6);
        }
}

static void quant_k45(int type, const float *x, uint8_t *b) {
    int nmax = type == TT_Q4_K ? 15 : 31;
    uint8_t L[256];
    float w[32], mins[8], scales[8], max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; j++) {
        const float *xj = x + 32 * j;
        float sum_x2 = 0.0f;
        for (int l = 0; l < 32; l++) sum_x2 += xj[l] * xj[l];
        float av_x = sqrtf(sum_x2 / 32.0f);
        for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(xj[l]);
        scales[j] = type == TT_Q4_K ? qkx_levels(32, nmax, xj, w, L + 32 * j, &mins[j], -1.0f, 0.1f, 20)
                                    : qkx_levels(32, nmax, xj, w, L + 32 * j, &mins[j], -0.5f, 0.1f, 15);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    memset(b, 0, type == TT_Q4_K ? 144 : 176);
    uint8_t *sb = b + 4;
    float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f, inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    for (int j = 0; j < 8; j++) {
        uint8_t ls = (uint8_t)nearest(inv_scale * scales[j]), lm = (uint8_t)nearest(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            sb[j] = ls;
            sb[j + 4] = lm;
        } else {
            sb[j + 4] = (uint8_t)((ls & 0xF) | (lm & 0xF) << 4);
            sb[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sb[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    wr16(b, f32_to_f16(max_scale / 63.0f));
    wr16(b + 2, f32_to_f16(max_min / 63.0f));
    float dd = f16_to_f32(rd16(b)), dm0 = f16_to_f32(rd16(b + 2));
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        kquant_scale_min(j, sb, &sc, &m);
        float d = dd * (float)sc;
        if (d == 0.0f) continue;
        float dm = dm0 * (float)m;
        for (int i = 0; i < 32; i++) L[32 * j + i] = (uint8_t)clampi(nearest((x[32 * j + i] + dm) / d), 0, nmax);
    }
    uint8_t *qs = b + (type == TT_Q5_K ? 48 : 16), *qh = b + 16;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int l1 = L[64 * c + l], l2 = L[64 * c + 32 + l];
            if (type == TT_Q5_K) {
                if (l1 > 15) { l1 -= 16; qh[l] |= (uint8_t)(1u << (2 * c)); }
                if (l2 > 15) { l2 -= 16; qh[l] |= (uint8_t)(2u << (2 * c)); }
            }
            qs[32 * c + l] = (uint8_t)(l1 | l2 << 4);
        }
}

/* Q4_0 / Q5_0: d = the value of largest magnitude / −8 (−16), q = trunc(x/d + 8.5), ≤ 15 (31) */
static void quant_32(int type, const float *x, uint8_t *b) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
    int five = type == TT_Q5_0;
    float d = max / (five ? -16.0f : -8.0f), id = d != 0.0f ? 1.0f / d : 0.0f;
    wr16(b, f32_to_f16(d));
    uint32_t qh = 0;
    uint8_t *qs = b + (five ? 6 : 2);
    for (int j = 0; j < 16; j++) {
        float x0 = x[j] * id, x1 = x[j + 16] * id;
        int q0 = (int8_t)(x0 + (five ? 16.5f : 8.5f)), q1 = (int8_t)(x1 + (five ? 16.5f : 8.5f));
        int top = five ? 31 : 15;
        q0 = q0 < top ? q0 : top;
        q1 = q1 < top ? q1 : top;
        qs[j] = (uint8_t)((q0 & 0xF) | (q1 & 0xF) << 4);
        qh |= (uint32_t)((q0 >> 4) & 1) << j | (uint32_t)((q1 >> 4) & 1) << (j + 16);
    }
    if (five) memcpy(b + 2, &qh, 4);
}

void kquant_quantize(int type, const float *x, int64_t nvals, void *dst) {
    uint8_t *b = dst;
    const type_traits_t *tt = type_traits(type);
    for (int64_t i = 0; i < nvals / tt->blck; i++, b += tt->bytes, x += tt->blck) {
        if (type == TT_Q6_K) quant_q6k(x, b);
        else if (type == TT_Q4_K || type == TT_Q5_K) quant_k45(type, x, b);
        else quant_32(type, x, b);
    }
}

/* ---- K-quant dot products ------------------------------------------------------------------ */

void kquant_quantize_x(const float *x, int64_t cols, uint8_t *dst) {
    int8_t *q = (int8_t *)dst;
    float *d = (float *)(dst + kquant_x_d_off(cols));
    int16_t *bs = (int16_t *)(dst + kquant_x_bs_off(cols));
    for (int64_t b = 0; b < cols / 256; b++) {
        d[b] = kquant_i8_block(x + b * 256, 256, q + b * 256);
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += q[b * 256 + 16 * g + i];
            bs[b * 16 + g] = (int16_t)s;
        }
    }
}

void kquant_block_ref(int type, const uint8_t *blk, const int8_t *xq, const int16_t *bsum, int32_t *a, int32_t *b) {
    *a = *b = 0;
    if (type == TT_Q6_K) {
        int8_t q[256];
        unpack_q6k(blk, q);
        const int8_t *sc = (const int8_t *)(blk + 192);
        for (int i = 0; i < 16; i++) {
            int32_t s = 0;
            for (int l = 0; l < 16; l++) s += q[16 * i + l] * xq[16 * i + l];
            *a += sc[i] * s;
        }
        return;
    }
    uint8_t q[256];
    unpack_k45(type, blk, q);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        kquant_scale_min(j, blk + 4, &sc, &m);
        int32_t s = 0;
        for (int l = 0; l < 32; l++) s += q[32 * j + l] * xq[32 * j + l];
        *a += sc * s;
        *b += m * (bsum[2 * j] + bsum[2 * j + 1]);
    }
}

float kquant_row_ref(int type, const uint8_t *row, int64_t cols, const uint8_t *xt) {
    size_t bb = type_traits(type)->bytes;
    const int8_t *xq = (const int8_t *)xt;
    const float *dx = (const float *)(xt + kquant_x_d_off(cols));
    const int16_t *bs = (const int16_t *)(xt + kquant_x_bs_off(cols));
    float acc = 0.0f;
    for (int64_t k = 0; k < cols / 256; k++) {
        const uint8_t *blk = row + (size_t)k * bb;
        int32_t a, b;
        kquant_block_ref(type, blk, xq + 256 * k, bs + 16 * k, &a, &b);
        acc = kquant_block_acc(type, blk, dx[k], a, b, acc);
    }
    return acc;
}
