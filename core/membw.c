/* membw: each thread streams its slice of the buffer with the widest loads the CPU has (AVX-512,
 * AVX2, else 64-bit scalar with 8 accumulators), so the read — not the instruction rate — is the
 * bottleneck, as it is for the kernels. Functions carry their own target attribute, so core/
 * needs no ISA flags; the variant is chosen by CPU detection. */
#include "core/membw.h"
#include "core/alloc.h"
#include "core/progress.h"
#include <stdint.h>
#include <stdatomic.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif


typedef struct bw_task { const uint64_t *p; size_t n; uint64_t sink[64]; } bw_task_t;

static uint64_t read_scalar(const uint64_t *p, long b, long e) {
    uint64_t a[8] = {0};
    for (long i = b; i + 8 <= e; i += 8)
        for (int k = 0; k < 8; k++) a[k] += p[i + k];
    return a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static uint64_t read_avx2(const uint64_t *p, long b, long e) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (long i = b; i + 16 <= e; i += 16) {
        _mm_prefetch((const char *)(p + i) + TERN_PF_AHEAD, _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i) + TERN_PF_AHEAD + 64, _MM_HINT_T0);
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 12)));
    }
    __m256i s = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    return (uint64_t)_mm256_extract_epi64(s, 0) ^ (uint64_t)_mm256_extract_epi64(s, 3);
}

__attribute__((target("avx512f"))) static uint64_t read_avx512(const uint64_t *p, long b, long e) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (long i = b; i + 32 <= e; i += 32) {
        for (int k = 0; k < 4; k++) _mm_prefetch((const char *)(p + i) + TERN_PF_AHEAD + 64 * k, _MM_HINT_T0);
        a0 = _mm512_add_epi64(a0, _mm512_load_si512((const void *)(p + i)));
        a1 = _mm512_add_epi64(a1, _mm512_load_si512((const void *)(p + i + 8)));
        a2 = _mm512_add_epi64(a2, _mm512_load_si512((const void *)(p + i + 16)));
        a3 = _mm512_add_epi64(a3, _mm512_load_si512((const void *)(p + i + 24)));
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3)));
}
#endif

uint64_t membw_read(const uint64_t *p, long b, long e) {
#if defined(__x86_64__)
    static atomic_int g_isa = -1;   /* 2 avx512, 1 avx2, 0 scalar; the pool's threads may race to set it */
    int isa = atomic_load_explicit(&g_isa, memory_order_relaxed);
    if (isa < 0) {
        __builtin_cpu_init();
        isa = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
        atomic_store_explicit(&g_isa, isa, memory_order_relaxed);
    }
    if (isa == 2) return read_avx512(p, b, e);
    if (isa == 1) return read_avx2(p, b, e);
#endif
    return read_scalar(p, b, e);
}

/* The buffer is walked in pieces of MEMBW_PIECE bytes, each split among the threads, as a
 * matmul splits a weight matrix's rows: the threads stream neighbouring memory at any moment.
 * (Each thread streaming its own half of the buffer measured ~20 % less with 2 threads here,
 * less than the kernels reached: a probe must not understate the machine.) */
#define MEMBW_PIECE (2u << 20)

static void bw_worker(void *arg, int ith, int nth) {
    bw_task_t *t = arg;
    const size_t pw = MEMBW_PIECE / 8;
    uint64_t sink = 0;
    for (size_t o = 0; o < t->n; o += pw) {
        long b, e, len = (long)(t->n - o < pw ? t->n - o : pw);
        tpool_split(len, ith, nth, 64, &b, &e);   /* 64 words = 512 B: whole vectors */
        sink ^= membw_read(t->p + o, b, e);
    }
    t->sink[ith % 64] = sink;
}

double membw_measure(size_t bytes, int reps, tpool_t *tp) {
    bytes = bytes / 4096 * 4096;
    uint64_t *p = tern_alloc(bytes);
    if (!p) return 0;
    memset(p, 1, bytes);   /* touch every page before timing */
    double bw = membw_measure_on(p, bytes, reps, tp);
    tern_free(p);
    return bw;
}

double membw_measure_on(const uint64_t *p, size_t bytes, int reps, tpool_t *tp) {
    size_t n = bytes / 8;
    bw_task_t t = {p, n, {0}};
    double best = 1e30;
    for (int r = 0; r < (reps > 0 ? reps : 1); r++) {
        double t0 = time_now();
        tpool_run(tp, bw_worker, &t);
        double dt = time_now() - t0;
        if (dt < best) best = dt;
    }
    return (double)(n * 8) / best / 1e9;
}
