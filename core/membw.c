/* membw: each thread sums its slice of the buffer with wide independent accumulators; the
 * compiler vectorises the loop, so the read — not the arithmetic — is the bottleneck. */
#include "core/membw.h"
#include "core/alloc.h"
#include "core/progress.h"
#include <stdint.h>
#include <string.h>

typedef struct bw_task { const uint64_t *p; size_t n; uint64_t sink[64]; } bw_task_t;

static void bw_worker(void *arg, int ith, int nth) {
    bw_task_t *t = arg;
    long b, e;
    tpool_split((long)t->n, ith, nth, 64, &b, &e);
    uint64_t a[8] = {0};
    for (long i = b; i + 8 <= e; i += 8)
        for (int k = 0; k < 8; k++) a[k] += t->p[i + k];
    t->sink[ith % 64] = a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
}

double membw_measure(size_t bytes, int reps, tpool_t *tp) {
    uint64_t *p = tern_alloc(bytes);
    if (!p) return 0;
    size_t n = bytes / 8;
    memset(p, 1, n * 8);   /* touch every page before timing */
    bw_task_t t = {p, n, {0}};
    double best = 1e30;
    for (int r = 0; r < (reps > 0 ? reps : 1); r++) {
        double t0 = time_now();
        tpool_run(tp, bw_worker, &t);
        double dt = time_now() - t0;
        if (dt < best) best = dt;
    }
    tern_free(p);
    return (double)(n * 8) / best / 1e9;
}
