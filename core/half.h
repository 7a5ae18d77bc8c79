/* half: scalar f16 and bf16 <-> f32 conversions (IEEE binary16, bfloat16 round-to-nearest-even).
 * Header-only so that every module can use them; vector versions live in kernels/. */
#ifndef TERN_HALF_H
#define TERN_HALF_H
#include <stdint.h>
#include <string.h>

static inline float half_f32_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t half_bits_f32(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        if (man == 0) return half_f32_bits(sign);
        float f = (float)man * (1.0f / 16777216.0f); /* subnormal: man * 2^-24 */
        return sign ? -f : f;
    }
    if (exp == 31) return half_f32_bits(sign | 0x7f800000 | (man << 13));
    return half_f32_bits(sign | ((exp + 112) << 23) | (man << 13));
}

static inline uint16_t f32_to_f16(float f) {
    uint32_t x = half_bits_f32(f), sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0));
    if (ax >= 0x477ff000) return (uint16_t)(sign | 0x7c00);             /* overflow → inf */
    if (ax < 0x38800000) {                                              /* subnormal or zero */
        float a = half_f32_bits(ax) * 16777216.0f;                      /* value / 2^-24 */
        uint32_t m = (uint32_t)a;
        float r = a - (float)m;
        if (r > 0.5f || (r == 0.5f && (m & 1))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t e = ((ax >> 23) - 112) << 10, m = (ax >> 13) & 0x3ff;
    uint32_t h = e | m, rest = ax & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

static inline float bf16_to_f32(uint16_t h) { return half_f32_bits((uint32_t)h << 16); }
static inline uint16_t f32_to_bf16(float f) {
    uint32_t x = half_bits_f32(f);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 64); /* quiet NaN */
    return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

#endif
