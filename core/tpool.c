/* tpool: generation-counted dispatch. The caller bumps `gen`; each share ith of a run is claimed
 * exactly once (an atomic exchange of claim[ith] to the run's gen) by its worker or — when that
 * worker has not started yet, e.g. because another process holds its core — by the caller once
 * its own share is done (see claim()). So a descheduled worker never stalls a run, and since a share's work
 * depends only on ith, results stay the same whoever runs it. Workers spin ~50 µs before
 * sleeping so back-to-back kernel calls (hundreds per token) do not pay a wake-up each. */
#define _GNU_SOURCE
#include "core/tpool.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

struct tpool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic unsigned gen;
    _Atomic int done;
    _Atomic int sleepers;
    _Atomic int stop;
    tpool_fn fn;
    void *arg;
    _Atomic unsigned *claim;   /* (n,) gen of the run that claimed share i */
};

typedef struct { tpool_t *tp; int ith; } tpool_arg;

#define SPIN_ITERS 20000

/* Every run claims every share, so when run g starts claim[i] == g - 1. Moving it to g only from
 * g - 1 (not from any value) makes a worker that read a stale g fail instead of running a later
 * run's share twice. */
static int claim(tpool_t *tp, int i, unsigned g) {
    unsigned expect = g - 1;
    return atomic_compare_exchange_strong(&tp->claim[i], &expect, g);
}

static void *worker(void *p) {
    tpool_arg *a = p;
    tpool_t *tp = a->tp;
    int ith = a->ith;
    free(a);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&tp->gen, memory_order_acquire)) == seen) {
            if (atomic_load(&tp->stop)) return NULL;
            if (++spins < SPIN_ITERS) { cpu_relax(); continue; }
            pthread_mutex_lock(&tp->mu);
            atomic_fetch_add(&tp->sleepers, 1);
            while (atomic_load(&tp->gen) == seen && !atomic_load(&tp->stop))
                pthread_cond_wait(&tp->cv, &tp->mu);
            atomic_fetch_sub(&tp->sleepers, 1);
            pthread_mutex_unlock(&tp->mu);
            spins = 0;
        }
        seen = g;
        if (atomic_load(&tp->stop)) return NULL;
        if (!claim(tp, ith, g)) continue;   /* the caller ran it, or g is already over */
        tp->fn(tp->arg, ith, tp->n);
        atomic_fetch_add_explicit(&tp->done, 1, memory_order_release);
    }
}

tpool_t *tpool_new(int n) {
    if (n < 1) return NULL;
    tpool_t *tp = calloc(1, sizeof *tp);
    if (!tp) return NULL;
    tp->n = n;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv, NULL);
    tp->threads = calloc((size_t)n, sizeof(pthread_t));
    tp->claim = calloc((size_t)n, sizeof *tp->claim);
    if (!tp->threads || !tp->claim) { free(tp->threads); free((void *)tp->claim); free(tp); return NULL; }
    for (int i = 1; i < n; i++) {
        tpool_arg *a = malloc(sizeof *a);
        if (!a) { tp->n = i; tpool_destroy(&tp); return NULL; }
        a->tp = tp;
        a->ith = i;
        if (pthread_create(&tp->threads[i], NULL, worker, a) != 0) {
            free(a);
            tp->n = i;
            tpool_destroy(&tp);
            return NULL;
        }
    }
    return tp;
}

void tpool_destroy(tpool_t **p) {
    if (!p || !*p) return;
    tpool_t *tp = *p;
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->stop, 1);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 1; i < tp->n; i++) pthread_join(tp->threads[i], NULL);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->cv);
    free(tp->threads);
    free((void *)tp->claim);
    free(tp);
    *p = NULL;
}

int tpool_size(const tpool_t *tp) { return tp ? tp->n : 1; }

void tpool_run(tpool_t *tp, tpool_fn fn, void *arg) {
    if (!tp || tp->n == 1) { fn(arg, 0, 1); return; }
    tp->fn = fn;
    tp->arg = arg;
    atomic_store_explicit(&tp->done, 0, memory_order_relaxed);
    atomic_fetch_add(&tp->gen, 1); /* seq_cst: pairs with the sleepers check */
    if (atomic_load(&tp->sleepers) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->cv);
        pthread_mutex_unlock(&tp->mu);
    }
    unsigned g = atomic_load(&tp->gen);
    fn(arg, 0, tp->n);
    for (int i = 1; i < tp->n; i++)   /* shares whose worker has not started: run them here */
        if (claim(tp, i, g)) {
            fn(arg, i, tp->n);
            atomic_fetch_add_explicit(&tp->done, 1, memory_order_release);
        }
    while (atomic_load_explicit(&tp->done, memory_order_acquire) < tp->n - 1) cpu_relax();
}

int tpool_pin(tpool_t *tp, const int *cpus, int ncpus) {
#ifdef __linux__
    int n = tpool_size(tp);
    for (int i = 0; i < n && i < ncpus; i++) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpus[i], &set);
        pthread_t t = i == 0 ? pthread_self() : tp->threads[i];
        if (pthread_setaffinity_np(t, sizeof set, &set) != 0) return -1;
    }
    return 0;
#else
    (void)tp; (void)cpus; (void)ncpus;
    return -7;
#endif
}
