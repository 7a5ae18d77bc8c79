/* fuzz_grammar: arbitrary GBNF through grammar_parse and, when it parses, arbitrary text through
 * the matcher. The input is the grammar, a 0x00 byte, then the text. A refusal must come with a
 * message; for an accepted grammar the text is fed a byte at a time with the mask of a small
 * built-in vocabulary (single bytes, words, split UTF-8, an end token) checked against accepting
 * each token on a clone for the first steps, and the whole text at once must agree. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "coordinator/grammar.h"

#define N_CHECKED 6      /* steps whose mask is compared with the brute-force reference */
#define MAX_STEPS 64     /* bytes of text walked (each mask may cost up to MASK_MAX_WORK: 64 keep a unit well inside the 10 s fuzz timeout under ASan) */

static grammar_vocab_t *vocab;
static int n_vocab;

static void setup(void) {
    static const char *const extra[] = {
        "\"", "{", "}", "[", "]", ":", ",", "\":", "{\"", " \"", "\\n", "\\u00", "true", "null", " the", "ab",
        "\n  ", "  ", "12", "-0.5e+3", "é", "中", "😀", "\xc3", "\xa9", "\xe4\xb8", "\xad", "\xf0\x9f", "\x98\x80",
        "\xff", "\xc0\x80", "\xed\xa0\x80", "",
    };
    int n_extra = (int)(sizeof extra / sizeof *extra);
    n_vocab = 256 + n_extra + 1;
    const char **pieces = calloc((size_t)n_vocab, sizeof *pieces);
    int *len = calloc((size_t)n_vocab, sizeof *len);
    static char bytes[256];
    if (!pieces || !len) abort();
    for (int b = 0; b < 256; b++) {
        bytes[b] = (char)b;
        pieces[b] = bytes + b;
        len[b] = 1;
    }
    for (int k = 0; k < n_extra; k++) {
        pieces[256 + k] = extra[k];
        len[256 + k] = (int)strlen(extra[k]);
    }
    int32_t eog = n_vocab - 1;
    pieces[eog] = "</s>";
    len[eog] = 4;
    vocab = grammar_vocab_new(n_vocab, pieces, len, &eog, 1);
    if (!vocab) abort();
    free(pieces);
    free(len);
}

/* the mask of s must equal accepting each token on a clone */
static void check_mask(const grammar_state_t *s, const uint8_t *mask, int count) {
    int ref = 0;
    for (int t = 0; t < n_vocab; t++) {
        grammar_state_t *c = grammar_state_clone(s);
        if (!c) abort();
        int ok = grammar_state_accept_token(c, vocab, t) == 0;
        if (ok != (mask[t >> 3] >> (t & 7) & 1)) abort();
        ref += ok;
        grammar_state_destroy(&c);
    }
    if (ref != count) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!vocab) setup();
    const uint8_t *nul = memchr(data, 0, size);
    size_t glen = nul ? (size_t)(nul - data) : size;
    const char *text = nul ? (const char *)nul + 1 : "";
    size_t tlen = nul ? size - glen - 1 : 0;
    char err[128];
    grammar_t *g = grammar_parse((const char *)data, glen, NULL, err, sizeof err);
    if (!g) {
        if (!err[0] || !memchr(err, 0, sizeof err)) abort();
        return 0;
    }
    grammar_state_t *s = grammar_state_new(g), *whole = grammar_state_new(g);
    uint8_t mask[64];   /* n_vocab < 512 */
    if (!s || !whole) abort();
    size_t n = tlen < MAX_STEPS ? tlen : MAX_STEPS, k = 0;
    for (; k < n; k++) {
        int count = grammar_state_mask(s, vocab, mask);
        if (count < 0) abort();
        if (k < N_CHECKED) check_mask(s, mask, count);
        uint8_t b = (uint8_t)text[k];
        int rc = grammar_state_accept_bytes(s, text + k, 1);
        if ((rc == 0) != (mask[b >> 3] >> (b & 7) & 1)) abort();   /* token b is the byte b */
        if (rc) break;
    }
    if (grammar_state_done(s) && !grammar_state_can_end(s)) abort();
    int all = grammar_state_accept_bytes(whole, text, n);
    if ((all == 0) != (k == n)) abort();
    if (all == 0 && grammar_state_can_end(whole) != grammar_state_can_end(s)) abort();
    grammar_state_destroy(&s);
    grammar_state_destroy(&whole);
    grammar_destroy(&g);
    return 0;
}
