/* toks: what the scheduler, the RAM prompt cache, the draft model and the benchmarks each ask of
 * two arrays of token ids — how long a beginning they share. Header-only: a loop this small
 * belongs inline. Not here: tokenizing (tokenizer.h). */
#ifndef TERN_TOKS_H
#define TERN_TOKS_H
#include <stdint.h>

/* the leading tokens a[0..n) and b[0..n) share (0 when n <= 0) */
static inline int toks_common(const int32_t *a, const int32_t *b, int n) {
    int k = 0;
    while (k < n && a[k] == b[k]) k++;
    return k;
}

#endif
