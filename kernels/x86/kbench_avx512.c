/* kbench_avx512: the register-only vpdpbusd loop that measures one core's int8 dot-product
 * peak (12 independent accumulators, no memory traffic) for kbench's "% of peak" column. */
#include <immintrin.h>
#include <stdint.h>

int64_t kbench_vnni_loop_avx512(int64_t iters);

/* runs iters × 12 zmm vpdpbusd (each 64 int8 MACs = 128 ops); returns a value to keep it live */
int64_t kbench_vnni_loop_avx512(int64_t iters) {
    __m512i a0 = _mm512_set1_epi8(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,
            a9 = a0, a10 = a0, a11 = a0;
    __m512i u = _mm512_set1_epi8(2), s = _mm512_set1_epi8(-1);
    for (int64_t i = 0; i < iters; i++) {
        __asm__ volatile("" : "+v"(u), "+v"(s));
        a0 = _mm512_dpbusd_epi32(a0, u, s); a1 = _mm512_dpbusd_epi32(a1, u, s);
        a2 = _mm512_dpbusd_epi32(a2, u, s); a3 = _mm512_dpbusd_epi32(a3, u, s);
        a4 = _mm512_dpbusd_epi32(a4, u, s); a5 = _mm512_dpbusd_epi32(a5, u, s);
        a6 = _mm512_dpbusd_epi32(a6, u, s); a7 = _mm512_dpbusd_epi32(a7, u, s);
        a8 = _mm512_dpbusd_epi32(a8, u, s); a9 = _mm512_dpbusd_epi32(a9, u, s);
        a10 = _mm512_dpbusd_epi32(a10, u, s); a11 = _mm512_dpbusd_epi32(a11, u, s);
    }
    __m512i t = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                 _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
    t = _mm512_add_epi32(t, _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)));
    return _mm512_reduce_add_epi32(t);
}
