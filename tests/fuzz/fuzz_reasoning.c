/* fuzz_reasoning: arbitrary model output through the thinking / answer split (reasoning_split)
 * and the reasoning budget (reasoning_budget_feed). The first byte picks open (bit 0) and a chunk
 * size (the rest, 1..128); the rest is the text. Checked: the pieces lie inside the text; the text
 * fed in chunks (as a stream) never takes back what an earlier split gave and ends with the whole
 * text's split, piece for piece; the budget, fed the same chunks as tokens, fires at most once,
 * only while the split still reads the text as an unclosed thinking, with a marker remainder that
 * the thinking's end really holds. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "coordinator/reasoning.h"

static void inside(const reasoning_split_t *s, size_t n) {
    if (s->r0 > s->r1 || s->r1 > n || s->c0 > s->c1 || s->c1 > n) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int open = data[0] & 1;
    size_t step = (size_t)(data[0] >> 1) + 1;
    const char *text = (const char *)data + 1;
    size_t n = size - 1, scan = 0, whole_scan = 0, rs = 0, cs = 0, r0 = 0, c0 = 0;
    reasoning_split_t whole, s;
    reasoning_split(text, n, open, 1, &whole_scan, &whole);
    inside(&whole, n);
    for (size_t have = 0; have < n;) {   /* at most n / step + 1 splits, each O(step) amortised */
        have = have + step < n ? have + step : n;
        reasoning_split(text, have, open, 0, &scan, &s);
        inside(&s, have);
        if (s.r1 - s.r0 < rs || s.c1 - s.c0 < cs) abort();
        if ((rs && s.r0 != r0) || (cs && s.c0 != c0)) abort();   /* a piece, once begun, starts where it began */
        rs = s.r1 - s.r0, cs = s.c1 - s.c0, r0 = s.r0, c0 = s.c0;
    }
    reasoning_split(text, n, open, 1, &scan, &s);
    if (memcmp(&s, &whole, sizeof s) != 0) abort();
    reasoning_budget_t b;
    reasoning_budget_init(&b, 1 + (int)(step % 7), open);
    const char *close = reasoning_close_marker();
    int fired = 0;
    for (size_t have = 0; have < n;) {
        size_t from = have;
        have = have + step < n ? have + step : n;
        int k = reasoning_budget_feed(&b, text + from, have - from);
        if (k < 0) continue;
        if (fired++ || k >= (int)strlen(close) || reasoning_closed(text, have, open)) abort();
        if ((size_t)k > have || memcmp(text + have - k, close, (size_t)k)) abort();
    }
    if (s.r1 - s.r0 < rs || s.c1 - s.c0 < cs || (rs && s.r0 != r0) || (cs && s.c0 != c0)) abort();
    return 0;
}
