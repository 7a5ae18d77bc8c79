/* memlock: --mlock. Collects the memory ranges a loaded model really uses (owned buffers and
 * the file ranges read in place), rounds them to pages, merges them, and mlock()s the result
 * so those weights are never swapped out or evicted. A lock that fails (RLIMIT_MEMLOCK,
 * EPERM) is a warning, not an error: the process runs on, with one warning per process.
 * Not here: deciding which ranges a model uses (worker/shard.c, coordinator/api.c). */
#ifndef TERN_MEMLOCK_H
#define TERN_MEMLOCK_H
#include <stddef.h>

typedef struct memlock_range { size_t a, b; } memlock_range_t;   /* [a, b), page-aligned addresses */

typedef struct memlock {
    memlock_range_t *r;    /* after memlock_apply: the merged ranges that are locked */
    int n, cap;
    size_t locked;         /* bytes locked (whole pages, each counted once) */
    size_t failed;         /* bytes that could not be locked */
} memlock_t;

void memlock_init(memlock_t *m);
/* adds [p, p + n) (NULL or n == 0: nothing); 0 or TERN_ENOMEM */
int memlock_add(memlock_t *m, const void *p, size_t n);
/* Locks the ranges added so far (page-rounded, merged). Failures are counted in m->failed and
 * warned about once per process, naming the bytes and the fix; `who` names the caller in that
 * line ("layers [0, 9]"). Returns m->locked. */
size_t memlock_apply(memlock_t *m, const char *who);
/* munlock()s what memlock_apply locked and frees the list */
void memlock_free(memlock_t *m);
/* "1.5 MiB"-style size for log lines */
const char *memlock_size(char *buf, size_t cap, size_t bytes);

#endif
