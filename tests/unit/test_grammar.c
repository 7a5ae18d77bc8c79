/* test_grammar: coordinator/grammar.c — GBNF parse errors (each names its problem and place),
 * texts accepted or refused by small grammars and by the JSON object grammar, can_end / done and
 * end-of-generation tokens, code points split across tokens, and the mask against a brute-force
 * reference (clone, accept the token, allowed iff accepted) on a random vocabulary over states
 * reached by random walks. Prints (does not assert) mask timings on a 128k-token vocabulary. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "tests/unit/cmocka_or_shim.h"

#include "coordinator/grammar.h"
#include "coordinator/tokenizer.h"
#include "core/err.h"
#include "core/gguf.h"
#include <stdlib.h>
#include <time.h>

/* ---- helpers ----------------------------------------------------------------------------- */

static uint64_t g_rng = 0x5EED;
static uint64_t rnd(void) {   /* splitmix64: the test's own generator */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static int rnd_n(int n) { return (int)(rnd() % (uint64_t)n); }

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static grammar_t *parse(const char *text) {
    char err[256];
    grammar_t *g = grammar_parse(text, strlen(text), NULL, err, sizeof err);
    if (!g) fail_msg("grammar refused: %s\n---\n%s", err, text);
    return g;
}

/* 1 iff the whole of s is a sentence of g, 0 iff refused somewhere, -1 iff a prefix only */
static int match(const grammar_t *g, const char *s) {
    grammar_state_t *st = grammar_state_new(g);
    assert_non_null(st);
    int rc = grammar_state_accept_bytes(st, s, strlen(s));
    int r = rc ? 0 : grammar_state_can_end(st) ? 1 : -1;
    grammar_state_destroy(&st);
    return r;
}

/* ---- parse errors -------------------------------------------------------------------------- */

static void expect_error(const char *text, size_t len, const char *want) {
    char err[256] = "";
    grammar_t *g = grammar_parse(text, len, NULL, err, sizeof err);
    if (g) fail_msg("accepted, expected an error with '%s':\n%s", want, text);
    if (!strstr(err, want)) fail_msg("error '%s' does not say '%s' (grammar: %.80s)", err, want, text);
}

static void test_parse_errors(void **state) {
    static const struct { const char *text, *want; } cases[] = {
        {"root ::= foo", "line 1 col 10: undefined rule 'foo'"},
        {"root ::= \"a\"\n  b", "line 2 col 3: undefined rule 'b'"},
        {"a ::= \"x\"", "no rule 'root'"},
        {"root ::= \"a\"\nroot ::= \"b\"", "line 2 col 1: rule 'root' is defined twice (first at line 1)"},
        {"root ::= root \"a\" | \"b\"", "rule 'root' is left-recursive"},
        {"root ::= a\na ::= b \"x\"\nb ::= \"y\" | root", "left-recursive"},
        {"root ::= n root \"x\" | \"y\"\nn ::= \"a\"?", "rule 'root' is left-recursive"},
        {"root ::= x\nx ::= \"\" (\"b\" | \"\") x \"c\" | \"d\"", "rule 'x' is left-recursive"},
        {"root ::= (\"a\"*)*", "rule 'root' is left-recursive (through a group or repetition in it)"},
        {"root ::= \"abc", "line 1 col 10: unterminated string literal"},
        {"root ::= \"abc\n\"", "unterminated string literal"},
        {"root ::= [abc", "unterminated character class"},
        {"root ::= \"\\q\"", "line 1 col 11: bad escape '\\q'"},
        {"root ::= \"\\x4\"", "needs 2 hex digits"},
        {"root ::= \"\\u12G4\"", "needs 4 hex digits"},
        {"root ::= \"\\uD800\"", "not a Unicode scalar value"},
        {"root ::= [\\U00110000]", "not a Unicode scalar value"},
        {"root ::= \"a\"{1001}", "repetition bound above 1000"},
        {"root ::= \"a\"{3,2}", "minimum is above the maximum"},
        {"root ::= \"a\"{2", "unterminated repetition"},
        {"root ::= \"a\\", "unterminated escape at the end"},
        {"root ::= \"a\"{x}", "expected a number"},
        {"root ::= *", "'*' must follow something to repeat"},
        {"root ::= []", "empty character class"},
        {"root ::= [z-a]", "empty range"},
        {"root ::= ( \"a\"", "unclosed '('"},
        {"root ::= ( \"a\"\nb ::= \"c\" )", "unclosed '('"},
        {"root ::= \"a\" )", "unmatched ')'"},
        {"root \"a\"", "expected '::=' after rule name 'root'"},
        {"::= \"a\"", "expected a rule name"},
        {"root ::= \"a\" @", "line 1 col 14: unexpected '@'"},
        {"root ::= o{1000} o{1000} o{1000} o{1000} o{1000} \"z\"\no ::= \"x\"?", "GRAMMAR_MAX_STACKS"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) expect_error(cases[k].text, strlen(cases[k].text), cases[k].want);
#define EXPECT_ERROR(lit, want) expect_error(lit, sizeof lit - 1, want)
    EXPECT_ERROR("root ::= \"\xff\"", "line 1 col 11: invalid UTF-8");
    EXPECT_ERROR("root ::= \"\xc3\"", "invalid UTF-8");
    EXPECT_ERROR("root ::= \"\xed\xa0\x80\"", "invalid UTF-8");   /* a surrogate */
    EXPECT_ERROR("root ::= \"a\"\0", "unexpected byte 0x00");

    /* limits: text size, named rules, nesting */
    size_t big = GRAMMAR_MAX_TEXT + 1;
    char *t = malloc(big + 1);
    assert_non_null(t);
    memset(t, ' ', big);
    memcpy(t, "root ::= \"a\"", 12);
    expect_error(t, big, "GRAMMAR_MAX_TEXT");
    size_t n = (size_t)sprintf(t, "root ::= r0\n");
    for (int r = 0; r <= GRAMMAR_MAX_RULES; r++) n += (size_t)sprintf(t + n, "r%d ::= \"x\" r%d\n", r, r + 1);
    expect_error(t, n, "GRAMMAR_MAX_RULES");
    n = (size_t)sprintf(t, "root ::= ");
    for (int k = 0; k < 300; k++) t[n++] = '(';
    t[n++] = '"', t[n++] = 'a', t[n++] = '"';
    for (int k = 0; k < 300; k++) t[n++] = ')';
    expect_error(t, n, "nested deeper than");
    /* expansion: a long literal repeated, many bounded repetitions */
    n = (size_t)sprintf(t, "root ::= \"");
    for (int k = 0; k < 5000; k++) t[n++] = 'a';
    n += (size_t)sprintf(t + n, "\"{1000}");
    expect_error(t, n, "grammar expands to more than 4194304 elements");
    n = (size_t)sprintf(t, "root ::= ");
    for (int k = 0; k < 70; k++) n += (size_t)sprintf(t + n, "\"a\"{0,1000} ");
    expect_error(t, n, "grammar expands to more than 65536 rules");
    /* the message is cut to errlen, and NULL err is fine */
    char small[8];
    assert_null(grammar_parse("root ::= foo", 12, NULL, small, sizeof small));
    assert_int_equal(strlen(small), 7);
    assert_null(grammar_parse("root ::= foo", 12, NULL, NULL, 0));
    /* another start rule */
    char err[128];
    grammar_t *g = grammar_parse("a ::= \"x\"", 9, "a", err, sizeof err);
    assert_non_null(g);
    assert_int_equal(match(g, "x"), 1);
    grammar_destroy(&g);
    grammar_destroy(&g);
    free(t);
}

/* ---- accept / refuse ----------------------------------------------------------------------- */

static void test_match(void **state) {
    static const struct { const char *grammar, *text; int want; } cases[] = {
        {"root ::= \"hello\"", "hello", 1},
        {"root ::= \"hello\"", "hell", -1},
        {"root ::= \"hello\"", "help", 0},
        {"root ::= \"hello\"", "hello!", 0},
        {"root ::= \"\"", "", 1},
        {"root ::= \"a\\n\\t\\\\\\\"\\x41\\u00e9\\U0001F600\"", "a\n\t\\\"A\xc3\xa9\xf0\x9f\x98\x80", 1},
        {"root ::= [a-c0-9_]+", "abc_09", 1},
        {"root ::= [a-c0-9_]+", "abd", 0},
        {"root ::= [^\"\\\\]*", "any thing", 1},
        {"root ::= [^\"\\\\]*", "no\"", 0},
        {"root ::= [^a-z]", "\xe4\xb8\xad", 1},
        {"root ::= [^a-z]", "q", 0},
        {"root ::= [\\]\\[\\-]+", "][-", 1},
        {"root ::= [-a]+", "-a-", 1},
        {"root ::= [a-]+", "a--", 1},
        {"root ::= [\\x00-\\x1f]", "\x01", 1},
        {"root ::= [α-ω]+", "αβγω", 1},
        {"root ::= [α-ω]+", "αbγ", 0},
        {"root ::= \"中文\" | \"日本\"", "日本", 1},
        {"root ::= \"中文\" | \"日本\"", "中本", 0},
        {"root ::= . . .", "a\xc3\xa9\xf0\x9f\x98\x80", 1},
        {"root ::= . . .", "ab", -1},
        {"root ::= \"a\"{3}", "aaa", 1},
        {"root ::= \"a\"{3}", "aaaa", 0},
        {"root ::= \"a\"{2,4}", "a", -1},
        {"root ::= \"a\"{2,4}", "aaaa", 1},
        {"root ::= \"a\"{2,4}", "aaaaa", 0},
        {"root ::= \"a\"{2,}", "aaaaaaaaaa", 1},
        {"root ::= \"a\"{0}\"b\"", "b", 1},
        {"root ::= \"ab\"{1,2}", "abab", 1},
        {"root ::= \"ab\"{1,2}", "aba", -1},
        {"root ::= \"ab\"* \"c\"", "ababc", 1},
        {"root ::= \"ab\"* \"c\"", "abac", 0},
        {"root ::= \"x\"? \"y\"", "y", 1},
        {"root ::= \"x\"? \"y\"", "xy", 1},
        {"root ::= \"x\"? \"y\"", "xxy", 0},
        {"root ::= ( \"a\" | \"b\" )+ \"!\"", "abba!", 1},
        {"root ::= ( \"a\" | \"b\" )+ \"!\"", "!", 0},
        {"root ::= ( \"a\" ( \"b\" | \"c\" )? )*", "aabac", 1},
        {"root ::= expr\nexpr ::= term ( [-+] term )*\nterm ::= [0-9]+ | \"(\" expr \")\"", "1+(2-30)+4", 1},
        {"root ::= expr\nexpr ::= term ( [-+] term )*\nterm ::= [0-9]+ | \"(\" expr \")\"", "1+(2-30", -1},
        {"root ::= expr\nexpr ::= term ( [-+] term )*\nterm ::= [0-9]+ | \"(\" expr \")\"", "1+)", 0},
        {"root ::= \"a\" root \"b\" | \"\"", "aaabbb", 1},
        {"root ::= \"a\" root \"b\" | \"\"", "aaabb", -1},
        {"# comment\nroot ::= # here too\n  \"a\" # and here\n  | \"b\"\n\nother ::= \"c\"", "b", 1},
        {"root ::= \"a\"\n       \"b\"", "ab", 1},
        {"root::=\"a\"b\nb::=\"b\"", "ab", 1},
        {"root ::= x x\nx ::= \"a\"?", "a", 1},
        {"root ::= (\"a\"?){3} \"b\"", "aab", 1},
        {"root ::= (\"a\"?){3} \"b\"", "aaaab", 0},
        {"root ::= a \"x\" a ()\na ::=", "x", 1},
        {"root ::= \"\"* \"x\" ( ){2,3}", "x", 1},
        /* a code point after which more than GRAMMAR_MAX_STACKS stacks would be alive: refused */
        {"root ::= \"a\" o{1000} o{1000} o{1000} o{1000} o{1000} \"z\" | \"b\"\no ::= \"x\"?", "a", 0},
        {"root ::= \"a\" o{1000} o{1000} o{1000} o{1000} o{1000} \"z\" | \"b\"\no ::= \"x\"?", "b", 1},
        {"root ::= \"a\" o{1000} o{1000} o{1000} \"z\"\no ::= \"x\"?", "axxxz", 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        grammar_t *g = parse(cases[k].grammar);
        int got = match(g, cases[k].text);
        if (got != cases[k].want) fail_msg("'%s' on\n%s\n: got %d, want %d", cases[k].text, cases[k].grammar, got, cases[k].want);
        grammar_destroy(&g);
    }
}

static void test_json(void **state) {
    static const char *good[] = {
        "{}",
        "{ }",
        "{\"a\":1}",
        "{\"a\": 1, \"b\": [true, false, null], \"c\": {\"d\": \"e\"}}",
        "{\n  \"name\": \"tern\",\n  \"n\": -12.5e+3,\n  \"z\": 0,\n  \"f\": 0.25,\n  \"l\": []\n}",
        "{\"s\": \"esc \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uABCD\"}",
        "{\"u\": \"caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80\"}",
        "{\"nested\": [[[{\"x\": [1, 2, {\"y\": []}]}]]]}",
        "{\"a\":\n\t\t\"b\"}",
        "{\"big\": 1234567890123456}",
    };
    static const char *bad[] = {
        "[]", "\"x\"", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}",
        "{\"a\":+1}", "{\"a\":\"\x01\"}", "{\"a\":\"\\x\"}", "{\"a\":\"\\u12\"}", "{\"a\":tru}", "{\"a\":[1,]}",
        "{\"a\":  1}", "{\"a\":\n                     1}", "{\"a\": 12345678901234567}", "{}}", "{\"a\":1} ",
    };
    grammar_t *g = parse(grammar_json_object_gbnf);
    for (size_t k = 0; k < sizeof good / sizeof *good; k++)
        if (match(g, good[k]) != 1) fail_msg("JSON refused: %s", good[k]);
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++)
        if (match(g, bad[k]) == 1) fail_msg("JSON accepted: %s", bad[k]);
    assert_int_equal(match(g, "{\"a\": [1, {\"b\": \"c"), -1);
    grammar_destroy(&g);
}

/* ---- end, done, end-of-generation ---------------------------------------------------------- */

static void test_end_and_eog(void **state) {
    grammar_t *g = parse("root ::= \"a\" \"b\"?");
    const char *pieces[] = {"a", "b", "ab", "</s>", "", NULL, "c"};
    int len[] = {1, 1, 2, 4, 0, 0, 1};
    int32_t eog[] = {3, 3};
    grammar_vocab_t *v = grammar_vocab_new(7, pieces, len, eog, 2);
    assert_non_null(v);
    assert_int_equal(grammar_vocab_n(v), 7);
    uint8_t mask[1];
    grammar_state_t *s = grammar_state_new(g);
    assert_int_equal(grammar_state_can_end(s), 0);
    assert_int_equal(grammar_state_done(s), 0);
    assert_int_equal(grammar_state_mask(s, v, mask), 2);   /* a, ab */
    assert_int_equal(mask[0], 0x05);
    assert_int_equal(grammar_state_accept_token(s, v, 3), TERN_EINVAL);
    assert_int_equal(grammar_state_accept_token(s, v, 4), TERN_EINVAL);   /* empty piece */
    assert_int_equal(grammar_state_accept_token(s, v, 5), TERN_EINVAL);   /* NULL piece */
    assert_int_equal(grammar_state_accept_token(s, v, 7), TERN_EINVAL);
    assert_int_equal(grammar_state_accept_token(s, v, -1), TERN_EINVAL);
    assert_int_equal(grammar_state_accept_token(s, v, 6), TERN_EINVAL);
    assert_int_equal(grammar_state_accept_token(s, v, 0), 0);
    assert_int_equal(grammar_state_can_end(s), 1);
    assert_int_equal(grammar_state_done(s), 0);
    assert_int_equal(grammar_state_mask(s, v, mask), 2);   /* b, </s> */
    assert_int_equal(mask[0], 0x0A);
    grammar_state_t *c = grammar_state_clone(s);
    assert_int_equal(grammar_state_accept_token(c, v, 1), 0);
    assert_int_equal(grammar_state_done(c), 1);
    assert_int_equal(grammar_state_mask(c, v, mask), 1);   /* only </s> */
    assert_int_equal(mask[0], 0x08);
    assert_int_equal(grammar_state_accept_token(c, v, 3), 0);
    assert_int_equal(grammar_state_done(c), 1);
    assert_int_equal(grammar_state_mask(c, v, mask), 0);   /* finished */
    assert_int_equal(grammar_state_accept_token(c, v, 3), TERN_EINVAL);
    assert_int_equal(grammar_state_accept_bytes(c, "b", 1), TERN_EINVAL);
    grammar_state_destroy(&c);
    assert_int_equal(grammar_state_accept_token(s, v, 3), 0);   /* the end right after "a" */
    assert_int_equal(grammar_state_accept_token(s, v, 1), TERN_EINVAL);
    grammar_state_destroy(&s);
    grammar_state_destroy(&s);
    grammar_vocab_destroy(&v);
    grammar_vocab_destroy(&v);
    grammar_destroy(&g);
}

/* ---- code points split across tokens ------------------------------------------------------- */

static void test_partial_utf8(void **state) {
    grammar_t *g = parse("root ::= \"\xc3\xa9\" [\xe4\xb8\x80-\xe4\xb8\xbf] \"x\"");   /* é [一-丿] x */
    const char *pieces[] = {"\xc3", "\xa9", "\xc3\xa9", "x", "\xe4", "\xe4\xb8", "\xb8\xad", "\xad", "\xff",
                            "\xa9\xe4", "\xc3\xa8", "\xe4\xb9", "\xc0\x80", "\xa9\xe4\xb8\xadx"};
    int n = (int)(sizeof pieces / sizeof *pieces), len[16];
    for (int k = 0; k < n; k++) len[k] = (int)strlen(pieces[k]);
    grammar_vocab_t *v = grammar_vocab_new(n, pieces, len, NULL, 0);
    uint8_t mask[2];
    grammar_state_t *s = grammar_state_new(g);
    assert_int_equal(grammar_state_mask(s, v, mask), 2);   /* \xc3, é */
    assert_int_equal(mask[0] | mask[1] << 8, 0x0005);
    assert_int_equal(grammar_state_accept_token(s, v, 0), 0);
    assert_int_equal(grammar_state_can_end(s), 0);
    assert_int_equal(grammar_state_mask(s, v, mask), 3);   /* \xa9, \xa9\xe4, \xa9\xe4\xb8\xadx */
    assert_int_equal(mask[0] | mask[1] << 8, 0x2202);
    assert_int_equal(grammar_state_accept_token(s, v, 3), TERN_EINVAL);
    assert_int_equal(grammar_state_accept_token(s, v, 9), 0);   /* é done, 中 begun */
    assert_int_equal(grammar_state_mask(s, v, mask), 1);   /* \xb8\xad */
    assert_int_equal(mask[0] | mask[1] << 8, 0x0040);
    assert_int_equal(grammar_state_accept_token(s, v, 6), 0);
    assert_int_equal(grammar_state_accept_token(s, v, 3), 0);
    assert_int_equal(grammar_state_done(s), 1);
    grammar_state_destroy(&s);
    /* bytes one at a time, and refusals leave the state as it was */
    s = grammar_state_new(g);
    assert_int_equal(grammar_state_accept_bytes(s, "\xc3", 1), 0);
    assert_int_equal(grammar_state_accept_bytes(s, "\xa8", 1), TERN_EINVAL);   /* è */
    assert_int_equal(grammar_state_accept_bytes(s, "\xa9\xe4\xb9", 3), TERN_EINVAL);   /* 乀..: out of range */
    assert_int_equal(grammar_state_accept_bytes(s, "\xa9\xe4\xb8\xbfx", 5), 0);
    assert_int_equal(grammar_state_done(s), 1);
    grammar_state_destroy(&s);
    /* malformed UTF-8 is never accepted, even by `.` */
    grammar_t *any = parse("root ::= .*");
    s = grammar_state_new(any);
    assert_int_equal(grammar_state_accept_bytes(s, "\xff", 1), TERN_EINVAL);
    assert_int_equal(grammar_state_accept_bytes(s, "\xc0\x80", 2), TERN_EINVAL);     /* overlong */
    assert_int_equal(grammar_state_accept_bytes(s, "\xed\xa0\x80", 3), TERN_EINVAL); /* surrogate */
    assert_int_equal(grammar_state_accept_bytes(s, "\xf4\x90\x80\x80", 4), TERN_EINVAL);
    assert_int_equal(grammar_state_accept_bytes(s, "\xe0\x9f", 2), TERN_EINVAL);
    assert_int_equal(grammar_state_accept_bytes(s, "\xf0\x9f\x98", 3), 0);
    assert_int_equal(grammar_state_can_end(s), 0);
    assert_int_equal(grammar_state_accept_bytes(s, "\x80", 1), 0);
    assert_int_equal(grammar_state_can_end(s), 1);
    grammar_state_destroy(&s);
    grammar_destroy(&any);
    grammar_vocab_destroy(&v);
    grammar_destroy(&g);
}

/* ---- mask against the brute-force reference ----------------------------------------------- */

typedef struct tvocab { int n; char **p; int *len; int32_t eog[2]; } tvocab_t;

static const char *const k_punct[] = {
    "{", "}", "[", "]", "\"", ":", ",", "\":", "\",", "{\"", "\"}", "\\", "\\n", "\\u", "\\\"", " \"", "\n", "\n  ",
    "\n\t", "  ", " ", "0", "1", "12", "-", ".", "e", "E+", "true", "false", "null", " {", "},", "}]", "],", "\":\"",
    "\": ", "\x01", "\t", "\\u00", "e9", "ff", "é", "中", "😀", "ab", "x", "y", "a", "b", "(", ")", "+", "!",
};

static const char *const k_multi[] = {"é", "ü", "中", "文", "日本", "😀", "αβ", "ω", "Ж"};

/* one random piece into buf: ASCII words, JSON-ish punctuation, multibyte characters and their
 * fragments, random bytes */
static int random_piece(char *buf, int words_bias) {
    int kind = rnd_n(10 + words_bias), n = 0;
    if (kind >= 10 || kind < 3) {
        if (rnd_n(2)) buf[n++] = ' ';
        int w = 1 + rnd_n(9);
        for (int k = 0; k < w; k++) buf[n++] = (char)('a' + rnd_n(26) - (rnd_n(8) ? 0 : 32));
    } else if (kind < 6) {
        const char *p = k_punct[rnd_n((int)(sizeof k_punct / sizeof *k_punct))];
        n = (int)strlen(p);
        memcpy(buf, p, (size_t)n);
        if (rnd_n(3) == 0) {
            const char *q = k_punct[rnd_n((int)(sizeof k_punct / sizeof *k_punct))];
            memcpy(buf + n, q, strlen(q));
            n += (int)strlen(q);
        }
    } else if (kind < 8) {
        const char *p = k_multi[rnd_n((int)(sizeof k_multi / sizeof *k_multi))];
        int l = (int)strlen(p), a = rnd_n(3) ? 0 : rnd_n(l), b = rnd_n(2) ? l : a + 1 + rnd_n(l - a);
        memcpy(buf, p + a, (size_t)(b - a));
        n = b - a;
    } else if (kind < 9) {
        n = 1 + rnd_n(4);
        for (int k = 0; k < n; k++) buf[k] = (char)(rnd_n(4) ? '0' + rnd_n(10) : ' ' + rnd_n(95));
    } else {
        n = 1 + rnd_n(12);
        for (int k = 0; k < n; k++) buf[k] = (char)rnd_n(256);
    }
    return n;
}

static tvocab_t make_vocab(int n, int words_bias) {
    tvocab_t v = {n, calloc((size_t)n, sizeof(char *)), calloc((size_t)n, sizeof(int)), {n - 1, n / 2}};
    assert_true(v.p && v.len);
    char buf[64];
    for (int t = 0; t < n; t++) {
        if (t == v.eog[0] || t == v.eog[1]) {
            v.p[t] = strdup("<|eot|>");
            v.len[t] = 7;
            continue;
        }
        if (t % 97 == 5) continue;   /* NULL piece */
        v.len[t] = t % 89 == 3 ? 0 : random_piece(buf, words_bias);
        v.p[t] = malloc((size_t)v.len[t] + 1);
        memcpy(v.p[t], buf, (size_t)v.len[t]);
    }
    return v;
}

static void free_vocab(tvocab_t *v) {
    for (int t = 0; t < v->n; t++) free(v->p[t]);
    free(v->p);
    free(v->len);
}

/* compares the mask of s with accepting each token on a clone; returns the allowed count */
static int check_mask(const grammar_state_t *s, const grammar_vocab_t *gv, int n, uint8_t *mask) {
    int count = grammar_state_mask(s, gv, mask), ref = 0;
    assert_true(count >= 0);
    for (int t = 0; t < n; t++) {
        grammar_state_t *c = grammar_state_clone(s);
        assert_non_null(c);
        int ok = grammar_state_accept_token(c, gv, t) == 0, bit = mask[t >> 3] >> (t & 7) & 1;
        if (ok != bit) fail_msg("token %d: mask says %d, accepting it says %d", t, bit, ok);
        ref += ok;
        grammar_state_destroy(&c);
    }
    assert_int_equal(count, ref);
    return count;
}

static void test_mask_reference(void **state) {
    static const char *grammars[] = {
        NULL,   /* the JSON grammar */
        "root ::= ( [a-z]+ | \" \" | \"é\" | [\\u4e00-\\u9fff] )* \".\"",
        "root ::= item{1,6}\nitem ::= \"ab\" | [^a-z\\n] | \"\\\\n\" | \"😀\"",
        "root ::= \"{\" ( \"\\\"\" [^\"]{0,5} \"\\\"\" )? ( \",\" root )* \"}\"",
        "root ::= .{0,20}",
        "root ::= [ -~]* \"\\n\" | \"x\" root \"y\"",
        "root ::= o{300} \"z\"\no ::= [a-z ]?",   /* hundreds of stacks alive */
    };
    tvocab_t tv = make_vocab(3000, 0);
    grammar_vocab_t *gv = grammar_vocab_new(tv.n, (const char *const *)tv.p, tv.len, tv.eog, 2);
    assert_non_null(gv);
    uint8_t *mask = malloc((size_t)(tv.n + 7) / 8);
    int *allowed = malloc((size_t)tv.n * sizeof *allowed);
    for (size_t gi = 0; gi < sizeof grammars / sizeof *grammars; gi++) {
        grammar_t *g = parse(grammars[gi] ? grammars[gi] : grammar_json_object_gbnf);
        int states = 0, longest = 0;
        for (int walk = 0; walk < 6; walk++) {
            grammar_state_t *s = grammar_state_new(g);
            for (int step = 0; step < 40; step++, states++) {
                int count = check_mask(s, gv, tv.n, mask), na = 0;
                if (!count) break;
                for (int t = 0; t < tv.n; t++)
                    if (mask[t >> 3] >> (t & 7) & 1 && t != tv.eog[0] && t != tv.eog[1]) allowed[na++] = t;
                if (!na) break;
                assert_int_equal(grammar_state_accept_token(s, gv, allowed[rnd_n(na)]), 0);
                longest = step + 1 > longest ? step + 1 : longest;
            }
            grammar_state_destroy(&s);
        }
        print_message("mask = reference on %d states (longest walk %d tokens): %s\n", states, longest,
                      grammars[gi] ? grammars[gi] : "JSON");
        grammar_destroy(&g);
    }
    free(allowed);
    free(mask);
    grammar_vocab_destroy(&gv);
    free_vocab(&tv);
}

/* ---- timing on a 128k vocabulary ----------------------------------------------------------- */

static void time_mask(const grammar_t *g, const grammar_vocab_t *gv, int n, const char *prefix, int check) {
    grammar_state_t *s = grammar_state_new(g);
    assert_int_equal(grammar_state_accept_bytes(s, prefix, strlen(prefix)), 0);
    uint8_t *mask = malloc((size_t)(n + 7) / 8);
    int count = check ? check_mask(s, gv, n, mask) : grammar_state_mask(s, gv, mask);
    double best = 1e9, sum = 0;
    int reps = 20;
    for (int r = 0; r < reps; r++) {
        double t0 = now_ms();
        assert_int_equal(grammar_state_mask(s, gv, mask), count);
        double dt = now_ms() - t0;
        sum += dt;
        best = dt < best ? dt : best;
    }
    print_message("mask after %-22s: %6d of %d allowed, %.2f ms best, %.2f ms mean\n", prefix, count, n, best, sum / reps);
    free(mask);
    grammar_state_destroy(&s);
}

static void test_mask_timing(void **state) {
    int n = 128256;
    g_rng = 42;
    double t0 = now_ms();
    tvocab_t tv = make_vocab(n, 10);
    grammar_vocab_t *gv = grammar_vocab_new(tv.n, (const char *const *)tv.p, tv.len, tv.eog, 2);
    assert_non_null(gv);
    print_message("vocab of %d tokens built in %.1f ms\n", n, now_ms() - t0);
    grammar_t *g = parse(grammar_json_object_gbnf);
    time_mask(g, gv, n, "", 0);
    time_mask(g, gv, n, "{", 0);
    time_mask(g, gv, n, "{\"key\": ", 0);
    time_mask(g, gv, n, "{\"key\": \"some text", 1);   /* the worst case, checked against the reference once */
    time_mask(g, gv, n, "{\"key\": [1, 2.5", 0);
    grammar_destroy(&g);
    g = parse("root ::= .*");
    time_mask(g, gv, n, "anything", 0);
    grammar_destroy(&g);
    grammar_destroy(&g);
    grammar_vocab_destroy(&gv);
    free_vocab(&tv);
}

/* the same on real vocabularies (/work/shared/vocab or $TERN_SHARED/vocab; skipped if absent):
 * pieces from tokenizer_piece, control tokens empty, the tokenizer's end-of-generation ids */
static void real_vocab_timing(const char *name) {
    char path[512], err[256];
    const char *sh = getenv("TERN_SHARED");
    snprintf(path, sizeof path, "%s/vocab/%s", sh && *sh ? sh : "/work/shared", name);
    gguf_t *gg = NULL;
    tokenizer_t *tok = NULL;
    if (gguf_open(&gg, path, err, sizeof err) < 0 || tokenizer_load(&tok, gg, err, sizeof err) < 0) {
        print_message("skipped %s: %s\n", name, err);
        gguf_close(&gg);
        return;
    }
    int n = tokenizer_n_vocab(tok), n_eog = 0, cap = tokenizer_max_piece(tok) + 8;
    char **p = calloc((size_t)n, sizeof *p);
    int *len = calloc((size_t)n, sizeof *len);
    int32_t *eog = calloc((size_t)n, sizeof *eog);
    for (int t = 0; t < n; t++) {
        p[t] = malloc((size_t)cap);
        len[t] = tokenizer_piece(tok, t, 0, p[t], cap);
        assert_true(len[t] >= 0 && len[t] <= cap);
        if (tokenizer_is_eog(tok, t)) eog[n_eog++] = t;
    }
    grammar_vocab_t *gv = grammar_vocab_new(n, (const char *const *)p, len, eog, n_eog);
    assert_non_null(gv);
    print_message("%s: %d tokens\n", name, n);
    grammar_t *g = parse(grammar_json_object_gbnf);
    time_mask(g, gv, n, "{", 0);
    time_mask(g, gv, n, "{\"key\": \"some text", 1);
    grammar_destroy(&g);
    grammar_vocab_destroy(&gv);
    for (int t = 0; t < n; t++) free(p[t]);
    free(p);
    free(len);
    free(eog);
    tokenizer_destroy(&tok);
    gguf_close(&gg);
}

static void test_mask_timing_real(void **state) {
    real_vocab_timing("ggml-vocab-falcon.gguf");
    real_vocab_timing("ggml-vocab-llama-spm.gguf");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_end_and_eog),
        cmocka_unit_test(test_partial_utf8),
        cmocka_unit_test(test_mask_reference),
        cmocka_unit_test(test_mask_timing),
        cmocka_unit_test(test_mask_timing_real),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
