/* server_stop: stop strings over streamed text. Generated text is fed piece by piece; what
 * comes out is only text that can no longer become part of a stop string, so a client never
 * sees the beginning of a stop string that later completes. When a stop string appears, the
 * text before it is released and the rest (the stop string and anything after) is dropped.
 * Not here: tokens or UTF-8 (pieces arrive as whole characters from the detokenizer). */
#ifndef TERN_SERVER_STOP_H
#define TERN_SERVER_STOP_H
#include <stddef.h>

typedef struct server_stop {
    char *const *stops;   /* (n,) NUL-terminated, non-empty; not owned */
    int n;
    char *text;           /* all text fed so far (up to the stop string once hit) */
    size_t len, cap;
    size_t sent;          /* bytes of text already released */
    int hit;              /* a stop string was found */
    int which;            /* once hit: the index of that stop string (the earliest in the text) */
} server_stop_t;

void server_stop_init(server_stop_t *s, char *const *stops, int n);
void server_stop_free(server_stop_t *s);
/* Appends piece[0..n). out, outlen: the newly releasable bytes (pointer into s->text, valid
 * until the next call). Returns 1 when a stop string was found (feed no more), 0 otherwise,
 * or TERN_ENOMEM. */
int server_stop_feed(server_stop_t *s, const char *piece, size_t n, const char **out, size_t *outlen);
/* end of generation: releases the bytes held back (they did not become a stop string) */
void server_stop_flush(server_stop_t *s, const char **out, size_t *outlen);

#endif
