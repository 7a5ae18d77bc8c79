/* tpool: a pool of persistent threads for data-parallel kernels.
 * tpool_run(tp, fn, arg) calls fn(arg, ith, nth) once on each of nth threads (the caller is
 * thread 0) and returns when all have finished. Workers spin briefly, then sleep on a condition
 * variable, so an idle pool costs no CPU. No thread is created per call.
 * Not here: work splitting — callers split rows by (ith, nth) deterministically. */
#ifndef TERN_TPOOL_H
#define TERN_TPOOL_H

typedef struct tpool tpool_t;
typedef void (*tpool_fn)(void *arg, int ith, int nth);

tpool_t *tpool_new(int nthreads);           /* nthreads >= 1; NULL on failure */
void tpool_destroy(tpool_t **tp);           /* joins the threads; NULL ok */
int tpool_size(const tpool_t *tp);          /* 1 for a NULL pool */
/* Runs fn on all threads. tp may be NULL (runs fn(arg, 0, 1)). Not reentrant. */
void tpool_run(tpool_t *tp, tpool_fn fn, void *arg);
/* Optional: pins thread i to cpus[i] (Linux); returns 0 or a negative error. */
int tpool_pin(tpool_t *tp, const int *cpus, int ncpus);

/* split [0, n) into nth nearly equal parts, aligned to `align` elements: part ith = [*b, *e) */
static inline void tpool_split(long n, int ith, int nth, long align, long *b, long *e) {
    long blocks = (n + align - 1) / align;
    long per = blocks / nth, rem = blocks % nth;
    long b0 = ith * per + (ith < rem ? ith : rem);
    long b1 = b0 + per + (ith < rem ? 1 : 0);
    *b = b0 * align < n ? b0 * align : n;
    *e = b1 * align < n ? b1 * align : n;
}

#endif
