/* reasoning: see reasoning.h. One pure function over the text so far; streaming callers keep
 * how much of each piece they sent and send the rest of the next split. */
#include "coordinator/reasoning.h"
#include <string.h>

static const char OPEN[] = "<think>", CLOSE[] = "</think>";
#define OPEN_LEN (sizeof OPEN - 1)
#define CLOSE_LEN (sizeof CLOSE - 1)

int reasoning_format_parse(const char *name) {
    if (!name) return -1;
    if (!strcmp(name, "none")) return REASONING_NONE;
    if (!strcmp(name, "deepseek")) return REASONING_DEEPSEEK;
    if (!strcmp(name, "auto")) return REASONING_AUTO;
    return -1;
}

const char *reasoning_format_name(int f) {
    return f == REASONING_DEEPSEEK ? "deepseek" : f == REASONING_AUTO ? "auto" : "none";
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* the length of the longest end of s[0..n) that is a start (not all) of CLOSE */
static size_t close_prefix_tail(const char *s, size_t n) {
    for (size_t k = CLOSE_LEN - 1; k > 0; k--)
        if (k <= n && !memcmp(s + n - k, CLOSE, k)) return k;
    return 0;
}

/* the first CLOSE in text[from..n), or n */
static size_t find_close(const char *text, size_t n, size_t from) {
    for (size_t i = from; i + CLOSE_LEN <= n; i++) {
        const char *p = memchr(text + i, '<', n - i);
        if (!p) return n;
        i = (size_t)(p - text);
        if (i + CLOSE_LEN <= n && !memcmp(p, CLOSE, CLOSE_LEN)) return i;
    }
    return n;
}

void reasoning_split(const char *text, size_t n, int open, int final, size_t *scan, reasoning_split_t *out) {
    size_t t = 0;   /* where the thinking starts */
    *out = (reasoning_split_t){0, 0, 0, 0};
    if (!open) {
        size_t k = n < OPEN_LEN ? n : OPEN_LEN;
        if (memcmp(text, OPEN, k) != 0) {   /* no thinking: all answer */
            out->c1 = n;
            return;
        }
        if (k < OPEN_LEN) {   /* "<thi": may yet open the thinking */
            if (final) out->c1 = n;
            return;
        }
        t = OPEN_LEN;
    }
    size_t from = *scan > t ? *scan : t;
    size_t e = find_close(text, n, from);
    size_t end = e;   /* the thinking's end as far as known */
    if (e == n && !final) end = n - close_prefix_tail(text + t, n - t);
    /* a marker found stays found; else the next search starts where a marker could still begin */
    *scan = e < n ? e : (n - t >= CLOSE_LEN ? n - (CLOSE_LEN - 1) : t);
    size_t a = t, b = end;
    while (a < b && is_ws(text[a])) a++;
    /* trimmed at its end too: while streaming that holds white space back, as it may be the
     * space before </think>; more text after it brings it back */
    while (b > a && is_ws(text[b - 1])) b--;
    out->r0 = a;
    out->r1 = b;
    if (e == n) {   /* still thinking (or, when final, thinking that never closed: all reasoning) */
        out->c0 = out->c1 = n;
        return;
    }
    size_t c = e + CLOSE_LEN;
    while (c < n && is_ws(text[c])) c++;
    out->c0 = c;
    out->c1 = n;
}

int reasoning_prompt_open(const char *prompt, size_t n) {
    while (n && is_ws(prompt[n - 1])) n--;
    return n >= OPEN_LEN && !memcmp(prompt + n - OPEN_LEN, OPEN, OPEN_LEN);
}
