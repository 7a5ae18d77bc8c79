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
    if (!strcmp(name, "deepseek-legacy")) return REASONING_DEEPSEEK_LEGACY;
    return -1;
}

const char *reasoning_format_name(int f) {
    return f == REASONING_DEEPSEEK ? "deepseek" : f == REASONING_AUTO ? "auto"
           : f == REASONING_DEEPSEEK_LEGACY ? "deepseek-legacy" : "none";
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

int reasoning_closed(const char *text, size_t n, int open) {
    if (!open && (n < OPEN_LEN || memcmp(text, OPEN, OPEN_LEN))) return 0;
    size_t t = open ? 0 : OPEN_LEN;
    return find_close(text, n, t) < n;
}

int reasoning_prompt_open(const char *prompt, size_t n) {
    while (n && is_ws(prompt[n - 1])) n--;
    return n >= OPEN_LEN && !memcmp(prompt + n - OPEN_LEN, OPEN, OPEN_LEN);
}

/* ---- the budget -------------------------------------------------------------------------- */

enum { RB_START, RB_THINK, RB_DONE };

const char *reasoning_close_marker(void) { return CLOSE; }

void reasoning_budget_init(reasoning_budget_t *b, int budget, int open) {
    *b = (reasoning_budget_t){budget, open ? RB_THINK : RB_START, {0}, 0};
    if (budget <= 0) b->state = RB_DONE;
}

/* state RB_START: the reply's first bytes against "<think>"; returns how many bytes of p[0..n)
 * the marker took (the rest is thinking), or n when it is still open or not a thinking */
static size_t budget_open(reasoning_budget_t *b, const char *p, size_t n) {
    size_t take = OPEN_LEN - b->n_buf < n ? OPEN_LEN - b->n_buf : n;
    memcpy(b->buf + b->n_buf, p, take);
    b->n_buf += take;
    if (memcmp(b->buf, OPEN, b->n_buf)) { b->state = RB_DONE; return n; }   /* no thinking: free */
    if (b->n_buf < OPEN_LEN) return n;
    b->state = RB_THINK;
    b->n_buf = 0;
    return take;
}

int reasoning_budget_feed(reasoning_budget_t *b, const char *p, size_t n) {
    if (b->state == RB_START) {
        size_t used = budget_open(b, p, n);
        p += used;
        n -= used;
    }
    if (b->state != RB_THINK || n == 0) return -1;
    /* the end marker across the token boundary: the kept tail, then this piece */
    char win[sizeof b->buf + 64];
    size_t nb = b->n_buf, k = n < 64 ? n : 64;
    memcpy(win, b->buf, nb);
    memcpy(win + nb, p, k);
    if (find_close(win, nb + k, 0) < nb + k || (n > 64 && find_close(p, n, 0) < n)) {
        b->state = RB_DONE;   /* closed by the model */
        return -1;
    }
    size_t keep = CLOSE_LEN - 1;   /* the thinking's last bytes, where a marker may begin */
    if (n >= keep) { memcpy(b->buf, p + n - keep, keep); b->n_buf = keep; }
    else {
        size_t old = nb + n > keep ? keep - n : nb;
        memmove(b->buf, b->buf + nb - old, old);
        memcpy(b->buf + old, p, n);
        b->n_buf = old + n;
    }
    if (--b->left > 0) return -1;
    b->state = RB_DONE;
    return (int)close_prefix_tail(b->buf, b->n_buf);
}
