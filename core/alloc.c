/* alloc: posix_memalign wrappers. */
#include "core/alloc.h"
#include <stdlib.h>
#include <string.h>

void *tern_alloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, TERN_ALIGN, tern_pad(n ? n : 1, TERN_ALIGN)) != 0) return NULL;
    return p;
}
void *tern_calloc(size_t n) {
    void *p = tern_alloc(n);
    if (p) memset(p, 0, tern_pad(n ? n : 1, TERN_ALIGN));
    return p;
}
void tern_free(void *p) { free(p); }
