/* strbuf: a growing NUL-terminated byte string for text built piece by piece (JSON, prompts,
 * grammars, rendered templates). A failed allocation, or a write that would pass max (0: no
 * limit), sets err and drops that write and every later one, so a builder checks err once at
 * the end. Not here: formatting of values (callers print what they add). */
#ifndef TERN_STRBUF_H
#define TERN_STRBUF_H
#include <stddef.h>

enum strbuf_err { STRBUF_OK = 0, STRBUF_NOMEM = 1, STRBUF_TOOBIG = 2 };

typedef struct strbuf {
    char *p;          /* NULL until the first byte; else NUL-terminated (partial once err is set) */
    size_t n, cap;
    size_t max;       /* bytes it may hold (the NUL aside); 0 = no limit */
    int err;          /* enum strbuf_err */
} strbuf_t;

/* Each returns 0, or -1 when err is (now) set. */
int strbuf_add(strbuf_t *b, const char *s, size_t n);
int strbuf_puts(strbuf_t *b, const char *s);
int strbuf_printf(strbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_free(strbuf_t *b);   /* frees p; b is then empty (max kept) */

#endif
