/* alloc: posix_memalign wrappers. Big buffers (weights repacked at load, KV caches, the lm head
 * converted at load) are 2 MiB aligned and asked to be backed by transparent huge pages: a
 * decode step streams every weight once, and with 4 KiB pages that is a TLB miss every 4 KiB. */
#include "core/alloc.h"
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define TERN_HUGE (2u << 20)

void *tern_alloc(size_t n) {
    void *p = NULL;
    size_t a = n >= 2 * (size_t)TERN_HUGE ? TERN_HUGE : TERN_ALIGN;
    if (posix_memalign(&p, a, tern_pad(n ? n : 1, a)) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    if (a == TERN_HUGE) madvise(p, tern_pad(n, a), MADV_HUGEPAGE);   /* advice only: failure is fine */
#endif
    return p;
}
void *tern_calloc(size_t n) {
    void *p = tern_alloc(n);
    if (p) memset(p, 0, tern_pad(n ? n : 1, TERN_ALIGN));
    return p;
}
void tern_free(void *p) { free(p); }
