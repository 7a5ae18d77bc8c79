/* strbuf: see strbuf.h. Capacity doubles from 64 bytes. */
#include "core/strbuf.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* room for n more bytes and the NUL; 0 or -1 with err set */
static int reserve(strbuf_t *b, size_t n) {
    if (b->err) return -1;
    if (n > (size_t)-1 / 2 - b->n || (b->max && b->n + n > b->max)) {
        b->err = STRBUF_TOOBIG;
        return -1;
    }
    if (b->n + n + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->err = STRBUF_NOMEM;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

int strbuf_add(strbuf_t *b, const char *s, size_t n) {
    if (reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int strbuf_puts(strbuf_t *b, const char *s) { return strbuf_add(b, s, strlen(s)); }

int strbuf_printf(strbuf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        if (!b->err) b->err = STRBUF_NOMEM;
        return -1;
    }
    if (reserve(b, (size_t)n)) return -1;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
    return 0;
}

void strbuf_free(strbuf_t *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
    b->err = 0;
}
