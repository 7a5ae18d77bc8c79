/* fbench: microbenchmark of the lm-head GEMV (fmat) against the machine's streaming-read
 * bandwidth measured in the same run — the roofline a memory-bound GEMV should approach.
 * `fbench [rows cols [reps]]` (default 128256 2560 5, the BitNet 2B-4T head) prints GB/s for
 * F16 and Q8_0 at 1 and 2 threads, plus batched F16 (n = 4, 8) as tokens/s. Best of reps. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "core/alloc.h"
#include "core/half.h"
#include "core/tpool.h"
#include "core/types.h"
#include "kernels/dispatch.h"
#include "kernels/fmat.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct { const uint64_t *p; size_t n; uint64_t sums[16 * 8]; } stream_t;

#if defined(__x86_64__)
/* two cache lines per step in four ymm lanes; the buffer is 64-byte aligned */
__attribute__((target("avx2"))) static void stream_avx2(const uint64_t *p, long b, long e, uint64_t *out) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (long i = b; i < e; i += 16) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 12)));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    _mm256_storeu_si256((__m256i *)out, a0);
}
#endif

/* each thread sums its share of the buffer (16 u64 = two cache lines per step) */
static void stream_task(void *arg, int ith, int nth) {
    stream_t *s = arg;
    long b, e;
    tpool_split((long)(s->n / 16), ith, nth, 64, &b, &e);
    b *= 16, e *= 16;
#if defined(__x86_64__)
    if (isa_current() >= ISA_AVX2 && isa_current() <= ISA_AVX512) {
        stream_avx2(s->p, b, e, &s->sums[ith * 8]);
        return;
    }
#endif
    uint64_t a[8] = {0};
    for (long i = b; i < e; i += 8)
        for (int k = 0; k < 8; k++) a[k] += s->p[i + k];
    memcpy(&s->sums[ith * 8], a, sizeof a);
}

static double stream_gbs(const void *buf, size_t bytes, tpool_t *tp, int reps) {
    stream_t s = {buf, bytes / 8, {0}};
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        tpool_run(tp, stream_task, &s);
        double t = now() - t0;
        best = t < best ? t : best;
    }
    volatile uint64_t sink = s.sums[0];
    (void)sink;
    return (double)bytes / best * 1e-9;
}

static double gemv_s(int type, const void *w, int64_t rows, int64_t cols, const float *x, int n, float *y,
                     void *scr, tpool_t *tp, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        fmat_mul(type, w, rows, cols, x, n, y, scr, tp);
        double t = now() - t0;
        best = t < best ? t : best;
    }
    return best;
}

int fbench_main(int argc, char **argv) {
    int64_t rows = argc > 2 ? atoll(argv[1]) : 128256, cols = argc > 2 ? atoll(argv[2]) : 2560;
    int reps = argc > 3 ? atoi(argv[3]) : 5;
    if (rows < 1 || cols < 32 || cols % 32 || reps < 1) {
        fprintf(stderr, "fbench: usage: fbench [rows cols(multiple of 32) [reps]]\n");
        return 1;
    }
    size_t f16b = type_tensor_bytes(TT_F16, cols, rows), q8b = type_tensor_bytes(TT_Q8_0, cols, rows);
    uint16_t *wf = tern_alloc(f16b);
    uint8_t *wq = tern_alloc(q8b);
    float *x = tern_alloc(sizeof(float) * (size_t)cols * 8), *y = tern_alloc(sizeof(float) * (size_t)rows * 8);
    void *scr = tern_alloc(fmat_scratch_bytes(TT_Q8_0, cols, 8));
    if (!wf || !wq || !x || !y || !scr) {
        fprintf(stderr, "fbench: out of memory for a %lld x %lld matrix\n", (long long)rows, (long long)cols);
        return 1;
    }
    uint32_t s = 1;
    for (size_t i = 0; i < f16b / 2; i++) { s = s * 1664525u + 1013904223u; wf[i] = f32_to_f16((float)(s >> 8) * 0x1p-24f - 0.5f); }
    for (size_t i = 0; i < q8b; i++) { s = s * 1664525u + 1013904223u; wq[i] = (uint8_t)(s >> 24); }
    for (size_t b = 0; b < q8b; b += 34) { uint16_t d = f32_to_f16(0.01f); memcpy(wq + b, &d, 2); }
    for (int64_t i = 0; i < cols * 8; i++) x[i] = (float)(i % 17) * 0.1f - 0.8f;
    printf("fbench: %lld x %lld, isa %s, best of %d (shared machine: numbers are noisy)\n", (long long)rows,
           (long long)cols, isa_name(isa_current()), reps);
    for (int th = 1; th <= 2; th++) {
        tpool_t *tp = th > 1 ? tpool_new(th) : NULL;
        double bw = stream_gbs(wf, f16b, tp, reps);
        double tf = gemv_s(TT_F16, wf, rows, cols, x, 1, y, NULL, tp, reps);
        double tq = gemv_s(TT_Q8_0, wq, rows, cols, x, 1, y, scr, tp, reps);
        double t4 = gemv_s(TT_F16, wf, rows, cols, x, 4, y, NULL, tp, reps);
        double t8 = gemv_s(TT_F16, wf, rows, cols, x, 8, y, NULL, tp, reps);
        printf("threads %d: stream read %6.2f GB/s | f16 gemv %6.2f GB/s (%3.0f%%) %6.1f ms | "
               "q8_0 gemv %6.2f GB/s (%3.0f%%) %6.1f ms | f16 n=4 %5.1f tok/s, n=8 %5.1f tok/s\n",
               th, bw, (double)f16b / tf * 1e-9, 100.0 * (double)f16b / tf * 1e-9 / bw, tf * 1e3,
               (double)q8b / tq * 1e-9, 100.0 * (double)q8b / tq * 1e-9 / bw, tq * 1e3, 4 / t4, 8 / t8);
        tpool_destroy(&tp);
    }
    tern_free(wf); tern_free(wq); tern_free(x); tern_free(y); tern_free(scr);
    return 0;
}
