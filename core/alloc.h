/* alloc: 64-byte aligned allocation for tensors and scratch (cache line / AVX-512). */
#ifndef TERN_ALLOC_H
#define TERN_ALLOC_H
#include <stddef.h>

#define TERN_ALIGN 64
void *tern_alloc(size_t n);          /* aligned, uninitialised; NULL on failure (n==0 → 64 bytes) */
void *tern_calloc(size_t n);         /* aligned, zeroed */
void tern_free(void *p);             /* NULL ok */
static inline size_t tern_pad(size_t n, size_t a) { return (n + a - 1) / a * a; }

#endif
