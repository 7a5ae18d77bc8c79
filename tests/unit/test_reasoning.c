/* test_reasoning: the thinking / answer split of reasoning models' output
 * (coordinator/reasoning.c). A table of texts with their splits written out by hand (no tags,
 * tags, an unclosed thinking at max_tokens, a prompt that opened <think>, nested and stray
 * markers, white space); a plain reimplementation with strstr as the reference on random texts
 * built from marker pieces; and streaming: every text cut into random chunks, each split of the
 * growing text sending only what is new, adds up to the whole text's split, and never takes
 * back what it sent; the chat request's reasoning fields (reasoning_format, chat_template_kwargs,
 * an assistant's reasoning_content) parsed and checked; the reasoning budget (where it fires and
 * what is left of </think> to force) by hand and against its rule written plainly on random
 * token texts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "tests/unit/cmocka_or_shim.h"

#include "coordinator/reasoning.h"
#include "coordinator/server_req.h"
#include <jansson.h>
#include <stdlib.h>

typedef struct { const char *text; int open; const char *reasoning, *content; } case_t;

static const case_t CASES[] = {
    {"", 0, "", ""},
    {"hello world", 0, "", "hello world"},
    {"<think>plan</think>answer", 0, "plan", "answer"},
    {"<think>\nstep one\nstep two\n</think>\n\nThe answer.", 0, "step one\nstep two", "The answer."},
    {"<think>all thought, cut by max_tokens", 0, "all thought, cut by max_tokens", ""},
    {"<think>", 0, "", ""},
    {"<thi", 0, "", "<thi"},                       /* ends before it could open */
    {" <think>x</think>y", 0, "", " <think>x</think>y"},   /* not at the start: text */
    {"<think>a <think>b</think> c</think>d", 0, "a <think>b", "c</think>d"},   /* the first close ends it */
    {"<think></think>", 0, "", ""},
    {"<think>  </think>  ", 0, "", ""},
    {"<think>x</think", 0, "x</think", ""},       /* a cut marker is thinking */
    {"answer </think> more", 0, "", "answer </think> more"},
    {"thought</think>answer", 1, "thought", "answer"},
    {"\nthought\n</think>\n\nanswer\n", 1, "thought", "answer\n"},
    {"never closed", 1, "never closed", ""},
    {"<think>x</think>y", 1, "<think>x", "y"},     /* opened by the prompt: its own <think> is text */
    {"</think>answer", 1, "", "answer"},
    {"<<think>>", 0, "", "<<think>>"},
    {"<think><</think><</think>", 0, "<", "<</think>"},
};

static void split_str(const char *text, int open, char **r, char **c) {
    size_t scan = 0;
    reasoning_split_t s;
    size_t n = strlen(text);
    reasoning_split(text, n, open, 1, &scan, &s);
    assert_true(s.r0 <= s.r1 && s.r1 <= n && s.c0 <= s.c1 && s.c1 <= n);
    *r = strndup(text + s.r0, s.r1 - s.r0);
    *c = strndup(text + s.c0, s.c1 - s.c0);
}

static void test_cases(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        char *r, *c;
        split_str(CASES[i].text, CASES[i].open, &r, &c);
        if (strcmp(r, CASES[i].reasoning) || strcmp(c, CASES[i].content))
            fail_msg("case %zu \"%s\": got [%s] [%s], want [%s] [%s]", i, CASES[i].text, r, c, CASES[i].reasoning,
                     CASES[i].content);
        free(r);
        free(c);
    }
}

/* the reference: the rule as llama.cpp's try_parse_reasoning states it, on a whole string */
static char *strip(const char *a, const char *b) {
    while (a < b && strchr(" \t\n\r\f\v", *a)) a++;
    while (b > a && strchr(" \t\n\r\f\v", b[-1])) b--;
    return strndup(a, (size_t)(b - a));
}

static void ref_split(const char *text, int open, char **r, char **c) {
    const char *t = text;
    if (!open) {
        if (strncmp(text, "<think>", 7) != 0) { *r = strdup(""); *c = strdup(text); return; }
        t = text + 7;
    }
    const char *e = strstr(t, "</think>");
    if (!e) { *r = strip(t, t + strlen(t)); *c = strdup(""); return; }
    *r = strip(t, e);
    e += 8;
    while (*e && strchr(" \t\n\r\f\v", *e)) e++;
    *c = strdup(e);
}

static const char *const PIECES[] = {"<think>", "</think>", "<", "</", "<th", "</thi", "think>", ">", " ", "\n",
                                     "a", "bc", "x y", "\t", "\xc3\xa9", "<think", "</think"};

static char *random_text(unsigned *seed, size_t *n) {
    int k = rand_r(seed) % 12;
    char *s = calloc(1, 256);
    for (int i = 0; i < k; i++) strcat(s, PIECES[rand_r(seed) % (sizeof PIECES / sizeof PIECES[0])]);
    *n = strlen(s);
    return s;
}

static void test_reference(void **state) {
    (void)state;
    unsigned seed = 1234;
    for (int it = 0; it < 20000; it++) {
        size_t n;
        char *t = random_text(&seed, &n);
        int open = it & 1;
        char *r, *c, *rr, *rc;
        split_str(t, open, &r, &c);
        ref_split(t, open, &rr, &rc);
        if (strcmp(r, rr) || strcmp(c, rc)) fail_msg("\"%s\" open %d: got [%s] [%s], reference [%s] [%s]", t, open, r, c, rr, rc);
        free(r); free(c); free(rr); free(rc); free(t);
    }
}

/* text fed in random chunks: the pieces sent add up to the whole split, and each split's
 * pieces start with what was sent before */
static void stream_check(const char *text, size_t n, int open, unsigned *seed) {
    char r[512] = "", c[512] = "";
    size_t rs = 0, cs = 0, have = 0, scan = 0;
    reasoning_split_t s;
    while (have < n) {
        have += 1 + (size_t)rand_r(seed) % (n - have < 9 ? n - have : 9);
        reasoning_split(text, have, open, 0, &scan, &s);
        assert_true(s.r1 - s.r0 >= rs && s.c1 - s.c0 >= cs);
        if (memcmp(text + s.r0, r, rs) || memcmp(text + s.c0, c, cs))
            fail_msg("\"%s\": a split at %zu takes back what was sent", text, have);
        memcpy(r + rs, text + s.r0 + rs, s.r1 - s.r0 - rs);
        rs = s.r1 - s.r0;
        memcpy(c + cs, text + s.c0 + cs, s.c1 - s.c0 - cs);
        cs = s.c1 - s.c0;
    }
    reasoning_split(text, n, open, 1, &scan, &s);   /* the end: what was held back */
    assert_true(s.r1 - s.r0 >= rs && s.c1 - s.c0 >= cs);
    if (memcmp(text + s.r0, r, rs) || memcmp(text + s.c0, c, cs)) fail_msg("\"%s\": the end takes back what was sent", text);
    r[s.r1 - s.r0] = 0;
    c[s.c1 - s.c0] = 0;
    memcpy(r + rs, text + s.r0 + rs, s.r1 - s.r0 - rs);
    memcpy(c + cs, text + s.c0 + cs, s.c1 - s.c0 - cs);
    char *wr, *wc;
    split_str(text, open, &wr, &wc);
    if (strcmp(r, wr) || strcmp(c, wc)) fail_msg("\"%s\" open %d: streamed [%s] [%s], whole [%s] [%s]", text, open, r, c, wr, wc);
    free(wr);
    free(wc);
}

static void test_stream(void **state) {
    (void)state;
    unsigned seed = 99;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++)
        for (int k = 0; k < 50; k++) stream_check(CASES[i].text, strlen(CASES[i].text), CASES[i].open, &seed);
    for (int it = 0; it < 20000; it++) {
        size_t n;
        char *t = random_text(&seed, &n);
        stream_check(t, n, it & 1, &seed);
        free(t);
    }
}

static void test_prompt_open_and_names(void **state) {
    (void)state;
    assert_true(reasoning_prompt_open("<|im_start|>assistant\n<think>\n", strlen("<|im_start|>assistant\n<think>\n")));
    assert_true(reasoning_prompt_open("<think>", strlen("<think>")));
    assert_true(!reasoning_prompt_open("<|im_start|>assistant\n<think>\n\n</think>\n\n", strlen("<|im_start|>assistant\n<think>\n\n</think>\n\n")));
    assert_true(!reasoning_prompt_open("think>", strlen("think>")));
    assert_true(!reasoning_prompt_open("", strlen("")));
    assert_int_equal(reasoning_format_parse("none"), REASONING_NONE);
    assert_int_equal(reasoning_format_parse("deepseek"), REASONING_DEEPSEEK);
    assert_int_equal(reasoning_format_parse("auto"), REASONING_AUTO);
    assert_int_equal(reasoning_format_parse("deepseek-legacy"), REASONING_DEEPSEEK_LEGACY);
    for (int f = REASONING_NONE; f <= REASONING_DEEPSEEK_LEGACY; f++)
        assert_int_equal(reasoning_format_parse(reasoning_format_name(f)), f);
    assert_int_equal(reasoning_format_parse("deepseek_legacy"), -1);
    /* reasoning_closed: a thinking its </think> ended */
    static const struct { const char *t; int open, closed; } cl[] = {
        {"<think>a</think>b", 0, 1}, {"<think>a</thi", 0, 0}, {"<think></think>", 0, 1}, {"x</think>", 0, 0},
        {"x</think>", 1, 1}, {"x", 1, 0}, {"<think>", 0, 0}, {"<thin", 0, 0}, {"", 1, 0},
    };
    for (size_t i = 0; i < sizeof cl / sizeof cl[0]; i++)
        if (reasoning_closed(cl[i].t, strlen(cl[i].t), cl[i].open) != cl[i].closed) fail_msg("reasoning_closed('%s', %d)", cl[i].t, cl[i].open);
    assert_int_equal(reasoning_format_parse("Deepseek"), -1);
    assert_int_equal(reasoning_format_parse(NULL), -1);
}

/* the budget by hand: where it fires and with which marker bytes left to force */
typedef struct { int budget, open; const char *pieces[12]; int fire_at, k; } bcase_t;
static const bcase_t BCASES[] = {
    {3, 0, {"<thi", "nk>", "a", "b", "c", "d"}, 4, 0},                /* the third thinking token */
    {3, 0, {"<think>", "a", "</think>", "b", "c", "d"}, -1, 0},        /* closed in time */
    {3, 0, {"<think>", "a", "</th", "ink>", "b", "c"}, -1, 0},         /* closed across tokens */
    {2, 0, {"<think>", "a", "x</th", "y"}, 2, 4},                      /* "</th" written: force "ink>" */
    {2, 0, {"<think>ab", "c", "d"}, 1, 0},                             /* the opening token thinks too */
    {1, 0, {"hello", "<think>", "a", "b"}, -1, 0},                     /* no thinking: free */
    {2, 1, {"a", "b", "c"}, 1, 0},                                     /* opened by the prompt */
    {2, 1, {"a</think>", "b", "c"}, -1, 0},
    {1, 0, {"<", "think", ">", "", "z"}, 4, 0},                        /* an empty piece does not count */
};

static void test_budget_cases(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof BCASES / sizeof BCASES[0]; i++) {
        const bcase_t *c = &BCASES[i];
        reasoning_budget_t b;
        reasoning_budget_init(&b, c->budget, c->open);
        int at = -1, k = 0;
        for (int t = 0; t < 12 && c->pieces[t]; t++) {
            int r = reasoning_budget_feed(&b, c->pieces[t], strlen(c->pieces[t]));
            if (r >= 0 && at >= 0) fail_msg("case %zu: fired twice", i);
            if (r >= 0) at = t, k = r;
        }
        if (at != c->fire_at || (at >= 0 && k != c->k))
            fail_msg("case %zu: fired at %d (k %d), want %d (k %d)", i, at, k, c->fire_at, c->k);
    }
    assert_string_equal(reasoning_close_marker(), "</think>");
}

/* the budget against its rule written plainly, on random token texts made of marker pieces */
static void test_budget_reference(void **state) {
    (void)state;
    static const char *const bits[] = {"<think>", "</think>", "<", "/", "think", ">", "</", "th", "ink>", "a", "bc",
                                       " ", "\n", "</thi", ""};
    unsigned seed = 5;
    for (int round = 0; round < 20000; round++) {
        char text[512];
        size_t end[40];
        int nt = 0;
        size_t n = 0;
        seed = seed * 1103515245u + 12345u;
        int open = (seed >> 9) % 3 == 0, budget = 1 + (int)((seed >> 12) % 6);
        if (!open && (seed >> 16) % 4) { memcpy(text, "<think>", 7); n = 7; end[nt++] = 7; }
        while (nt < 30) {
            seed = seed * 1103515245u + 12345u;
            const char *p = bits[(seed >> 8) % (sizeof bits / sizeof bits[0])];
            memcpy(text + n, p, strlen(p));
            n += strlen(p);
            end[nt++] = n;
        }
        /* the rule: thinking starts after "<think>" at 0 (or at 0 when open); a token counts when
         * it ends past that and the text up to its end holds no "</think>" after it */
        size_t t0 = open ? 0 : !strncmp(text, "<think>", n < 7 ? n : 7) && n >= 7 ? 7 : (size_t)-1;
        int want = -1, wk = 0, count = 0;
        for (int t = 0; t < nt && t0 != (size_t)-1; t++) {
            if (end[t] <= t0 || (t > 0 && end[t] == end[t - 1])) continue;
            char *seg = strndup(text + t0, end[t] - t0);
            int closed = strstr(seg, "</think>") != NULL;
            size_t sl = strlen(seg);
            int kk = 0;
            for (int q = 7; q > 0 && !kk; q--) if ((size_t)q <= sl && !strncmp(seg + sl - q, "</think>", (size_t)q)) kk = q;
            free(seg);
            if (closed) break;
            if (++count == budget) { want = t; wk = kk; break; }
        }
        reasoning_budget_t b;
        reasoning_budget_init(&b, budget, open);
        int got = -1, gk = 0;
        for (int t = 0; t < nt; t++) {
            int r = reasoning_budget_feed(&b, text + (t ? end[t - 1] : 0), end[t] - (t ? end[t - 1] : 0));
            if (r >= 0 && got < 0) got = t, gk = r;
            else if (r >= 0) fail_msg("round %d: fired twice", round);
        }
        if (got != want || gk != wk)
            fail_msg("round %d (budget %d, open %d, '%.*s'): fired at %d k %d, want %d k %d", round, budget, open, (int)n,
                     text, got, gk, want, wk);
    }
}

static int parse(const char *body, server_req_t *r, server_err_t *e) {
    return server_req_parse(r, SERVER_REQ_CHAT, body, strlen(body), NULL, e);
}

static void test_request_fields(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r, &e), 0);
    assert_int_equal(r.reasoning_format, -1);   /* the server's */
    assert_int_equal(r.reasoning_budget, SERVER_BUDGET_DEFAULT);
    assert_true(r.tmpl_kwargs == NULL);
    server_req_free(&r);
    assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_budget\":512,"
                           "\"reasoning_format\":\"deepseek-legacy\"}", &r, &e), 0);
    assert_int_equal(r.reasoning_budget, 512);
    assert_int_equal(r.reasoning_format, REASONING_DEEPSEEK_LEGACY);
    server_req_free(&r);
    assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_budget\":-1}", &r, &e), 0);
    assert_int_equal(r.reasoning_budget, -1);
    server_req_free(&r);
    assert_int_equal(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":\"a\","
                           "\"reasoning_content\":\"r\"}],\"reasoning_format\":\"none\",\"chat_template_kwargs\":{\"enable_thinking\":false,\"k\":[1]}}",
                           &r, &e), 0);
    assert_int_equal(r.reasoning_format, REASONING_NONE);
    assert_true(json_is_false(json_object_get(r.tmpl_kwargs, "enable_thinking")));
    assert_true(json_is_array(json_object_get(r.tmpl_kwargs, "k")));
    assert_true(r.msg_extra[0] == NULL);
    assert_string_equal(json_string_value(json_object_get(r.msg_extra[1], "reasoning_content")), "r");
    server_req_free(&r);
    static const char *const bad[][2] = {
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_format\":\"deep\"}", "reasoning_format"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_format\":1}", "reasoning_format"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_budget\":-2}", "reasoning_budget"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_budget\":\"5\"}", "reasoning_budget"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_budget\":3000000000}", "reasoning_budget"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":\"x\"}", "chat_template_kwargs"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":{\"enable_thinking\":0}}", "chat_template_kwargs"},
        {"{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\",\"reasoning_content\":5}]}", "messages"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i][0], &r, &e) == 0) fail_msg("accepted: %s", bad[i][0]);
        assert_int_equal(e.status, 400);
        assert_string_equal(e.param, bad[i][1]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_reference),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_prompt_open_and_names),
        cmocka_unit_test(test_request_fields),
        cmocka_unit_test(test_budget_cases),
        cmocka_unit_test(test_budget_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
