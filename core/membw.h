/* membw: the machine's memory read bandwidth, measured by streaming a buffer larger than the
 * last-level cache on all threads of a pool (the roofline of memory-bound decode). */
#ifndef TERN_MEMBW_H
#define TERN_MEMBW_H
#include <stddef.h>
#include "core/tpool.h"

/* How far ahead (bytes) software prefetch runs when a loop streams weights from memory: the
 * kernels (kernels/x86) and this probe alike, so the probe streams at least as well as they do.
 * On the build host (Zen 5) 8 KiB took one core from ~36 to ~45–48 GB/s on the 2B-4T shapes
 * (2 KiB: 36; 16 KiB: as 8 within one matrix but slower across a model's matrices). */
#define TERN_PF_AHEAD 8192

/* sums words [b, e) of p with the widest loads this CPU has (the probe's inner loop; kbench
 * times it on pieces the size of a weight matrix) */
#include <stdint.h>
uint64_t membw_read(const uint64_t *p, long b, long e);

/* GB/s (1e9 bytes/s), best of `reps` passes over `bytes`; 0 on allocation failure */
double membw_measure(size_t bytes, int reps, tpool_t *tp);
/* the same over a buffer of the caller's (bytes a multiple of 4096, every page touched): a
 * probe buffer allocated before a model is loaded gets huge pages that one allocated after it
 * may not (fragmented memory), which measured up to ~35 % less at 2 threads */
double membw_measure_on(const uint64_t *buf, size_t bytes, int reps, tpool_t *tp);

#endif
