/* server_stop: see server_stop.h. Stop strings are short and few, so a plain search over the
 * unreleased tail (plus the longest stop string's reach back into released text) is enough. */
#include "coordinator/server_stop.h"
#include "core/err.h"
#include <stdlib.h>
#include <string.h>

void server_stop_init(server_stop_t *s, char *const *stops, int n) {
    memset(s, 0, sizeof *s);
    s->stops = stops;
    s->n = n;
}

void server_stop_free(server_stop_t *s) {
    free(s->text);
    memset(s, 0, sizeof *s);
}

/* first occurrence of needle in hay[0..n), or NULL */
static const char *find(const char *hay, size_t n, const char *needle, size_t m) {
    if (m > n) return NULL;
    for (size_t i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && !memcmp(hay + i, needle, m)) return hay + i;
    return NULL;
}

/* longest k < len(stop) such that text's last k bytes start some stop string */
static size_t held_back(const server_stop_t *s) {
    size_t best = 0;
    for (int i = 0; i < s->n; i++) {
        size_t m = strlen(s->stops[i]);
        size_t k = m - 1 < s->len ? m - 1 : s->len;
        for (; k > best; k--)
            if (!memcmp(s->text + s->len - k, s->stops[i], k)) { best = k; break; }
    }
    return best;
}

int server_stop_feed(server_stop_t *s, const char *piece, size_t n, const char **out, size_t *outlen) {
    *out = s->text ? s->text + s->sent : "";
    *outlen = 0;
    if (s->hit) return 1;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1) cap *= 2;
        char *t = realloc(s->text, cap);
        if (!t) return TERN_ENOMEM;
        s->text = t;
        s->cap = cap;
    }
    memcpy(s->text + s->len, piece, n);
    s->len += n;
    s->text[s->len] = 0;
    /* the earliest stop string that ends in the new bytes; it cannot start before `sent`,
     * since released text never held the start of a stop string */
    size_t end = s->len, cut = s->len;
    for (int i = 0; i < s->n; i++) {
        const char *p = find(s->text + s->sent, end - s->sent, s->stops[i], strlen(s->stops[i]));
        if (p && (size_t)(p - s->text) < cut) cut = (size_t)(p - s->text), s->which = i;
    }
    if (cut < s->len) {
        s->hit = 1;
        s->len = cut;
        s->text[cut] = 0;
    }
    size_t upto = s->hit ? s->len : s->len - held_back(s);
    *out = s->text + s->sent;
    *outlen = upto > s->sent ? upto - s->sent : 0;
    if (upto > s->sent) s->sent = upto;
    return s->hit;
}

void server_stop_flush(server_stop_t *s, const char **out, size_t *outlen) {
    *out = s->text ? s->text + s->sent : "";
    *outlen = s->len - s->sent;
    s->sent = s->len;
}
