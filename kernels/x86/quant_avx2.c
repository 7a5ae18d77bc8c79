/* quant_avx2: act_quant with AVX2, bit-identical to act_quant_ref (same float multiply, round
 * half away from zero done exactly via trunc + exact fraction, same clamp). Not here: weight
 * conversions (scalar in quant.c; they run once at load). */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include "kernels/quant.h"

float act_quant_avx2(const float *x, int64_t n, int8_t *q, int32_t *sum);

float act_quant_avx2(const float *x, int64_t n, int8_t *q, int32_t *sum) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 vmax = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(x + i), absmask));
    float m8[8], amax = 0.0f;
    _mm256_storeu_ps(m8, vmax);
    for (int k = 0; k < 8; k++) amax = m8[k] > amax ? m8[k] : amax;
    for (; i < n; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    float s = amax > 0.0f ? 127.0f / amax : 1.0f;

    const __m256 vs = _mm256_set1_ps(s), half = _mm256_set1_ps(0.5f), mhalf = _mm256_set1_ps(-0.5f);
    const __m256 one = _mm256_set1_ps(1.0f), lim = _mm256_set1_ps(127.0f), mlim = _mm256_set1_ps(-127.0f);
    __m256i vsum = _mm256_setzero_si256();
    for (i = 0; i + 32 <= n; i += 32) {
        __m256i w[4];
        for (int k = 0; k < 4; k++) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * k), vs);
            __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m256 f = _mm256_sub_ps(v, t);
            t = _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(f, half, _CMP_GE_OQ), one));
            t = _mm256_sub_ps(t, _mm256_and_ps(_mm256_cmp_ps(f, mhalf, _CMP_LE_OQ), one));
            t = _mm256_min_ps(_mm256_max_ps(t, mlim), lim);
            w[k] = _mm256_cvtps_epi32(t);
            vsum = _mm256_add_epi32(vsum, w[k]);
        }
        __m256i p01 = _mm256_packs_epi32(w[0], w[1]), p23 = _mm256_packs_epi32(w[2], w[3]);
        __m256i b = _mm256_packs_epi16(p01, p23);
        /* packs interleave 128-bit lanes: dwords come out as 0,2,4,6,1,3,5,7 */
        b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(q + i), b);
    }
    int32_t s8[8], acc = 0;
    _mm256_storeu_si256((__m256i *)s8, vsum);
    for (int k = 0; k < 8; k++) acc += s8[k];
    for (; i < n; i++) {
        q[i] = act_quant_one(x[i], s);
        acc += q[i];
    }
    if (sum) *sum = acc;
    return s;
}
