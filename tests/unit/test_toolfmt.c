/* test_toolfmt: the native tool-call formats (coordinator/toolfmt.c) and the server's use of them.
 * Detection on the real templates of tests/data/jinja; each format's grammar accepts the call
 * text as llama.cpp documents it (written out here by hand) and refuses near misses; random
 * walks through each grammar (a one-byte vocabulary, every allowed byte equally likely) parse
 * back into calls whose names and arguments are checked against the tools' schemas by a plain
 * reimplementation; a table of malformed and edge replies per format; mutated replies never
 * break the parser's promises; the reply read in random chunks (toolstream.c, as a stream sends
 * it) gives OpenAI deltas that add up to the plain reply exactly, on the walks' sentences, their
 * prefixes and mutations; and the prompt `tern serve --jinja` builds for a chat request
 * with tools (server_req_parse_fmt + server_gen_chat_text) equals Python jinja2's rendering of
 * the same request (render.py's "server|..." keys in expected.json), byte for byte. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "tests/unit/cmocka_or_shim.h"

#include "coordinator/grammar.h"
#include "coordinator/reasoning.h"
#include "coordinator/server_int.h"
#include "coordinator/server_req.h"
#include "coordinator/server_tools.h"
#include "coordinator/tokenizer.h"
#include "coordinator/toolfmt.h"
#include "coordinator/toolstream.h"
#include "core/strbuf.h"
#include "coordinator/vocab.h"
#include "core/err.h"
#include "core/gguf.h"
#include <jansson.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static char g_dir[1024];

static const char *data_dir(void) {
    if (!g_dir[0]) {
        const char *src = getenv("TERN_SRC");
        snprintf(g_dir, sizeof g_dir, "%s/tests/data/jinja", src ? src : ".");
    }
    return g_dir;
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) { free(p); p = NULL; }
    fclose(f);
    if (p) p[n] = 0;
    return p;
}

static char *template_text(const char *name) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.jinja", data_dir(), name);
    char *t = read_all(path);
    if (!t) fail_msg("cannot read %s", path);
    return t;
}

/* ---- detection ---------------------------------------------------------------------------- */

static void test_detect(void **st) {
    (void)st;
    static const struct { const char *name; int fmt; } cases[] = {
        {"qwen2.5-instruct", TOOLFMT_HERMES},     {"falcon3-instruct", TOOLFMT_HERMES},
        {"llama3.1", TOOLFMT_LLAMA3},             {"llama3.2", TOOLFMT_LLAMA3},
        {"mistral-small-3.1-24b-instruct-2503", TOOLFMT_MISTRAL},
        {"llama3-8b-instruct", TOOLFMT_GENERIC},  {"chatml-openhermes-2.5", TOOLFMT_GENERIC},
        {"bitnet-b1.58-2B-4T", TOOLFMT_GENERIC},  {"deepseek-r1-distill-qwen-32b", TOOLFMT_GENERIC},
        {"mistral-7b-instruct-v0.2", TOOLFMT_GENERIC}, {"qwen3", TOOLFMT_HERMES},   /* thinks, then calls */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *t = template_text(cases[i].name);
        if (toolfmt_detect(t) != cases[i].fmt)
            fail_msg("%s: detected %s, want %s", cases[i].name, toolfmt_name(toolfmt_detect(t)), toolfmt_name(cases[i].fmt));
        char line[512], want[64];   /* `tern info` names it */
        chat_template_describe(t, line, sizeof line);
        snprintf(want, sizeof want, "tool calls in the %s format", toolfmt_name(cases[i].fmt));
        if (!strstr(line, want)) fail_msg("%s: info line '%s' lacks '%s'", cases[i].name, line, want);
        free(t);
    }
    assert_int_equal(toolfmt_detect(NULL), TOOLFMT_GENERIC);
    assert_int_equal(toolfmt_detect("{{ '<|python_tag|>' }}"), TOOLFMT_LLAMA3);
    assert_string_equal(toolfmt_name(TOOLFMT_MISTRAL), "mistral");
    assert_string_equal(toolfmt_name(99), "generic");
}

/* ---- grammars ----------------------------------------------------------------------------- */

/* two tools: get_weather {city: string of 1..8 characters, unit: "c" | "f"} and flag {on: bool}
 * (the walks below stay short: every value is bounded) */
static json_t *tools_calls(void) {
    return json_pack("[{s:s, s:{s:s, s:{s:{s:s, s:i, s:i}, s:{s:[s,s]}}, s:[s,s]}}, {s:s, s:{s:s, s:{s:{s:s}}, s:[s]}}]",
                     "name", "get_weather", "params", "type", "object", "properties", "city", "type", "string",
                     "minLength", 1, "maxLength", 8, "unit", "enum", "c", "f", "required", "city", "unit",
                     "name", "flag", "params", "type", "object", "properties", "on", "type", "boolean", "required", "on");
}

static size_t utf8_chars(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* the tools' schemas, re-checked by hand: 1 when (name, args) is a call they allow */
static int call_valid(const char *name, json_t *args) {
    if (!json_is_object(args)) return 0;
    if (!strcmp(name, "get_weather")) {
        json_t *c = json_object_get(args, "city"), *u = json_object_get(args, "unit");
        size_t n = json_is_string(c) ? utf8_chars(json_string_value(c)) : 0;
        return json_object_size(args) == 2 && n >= 1 && n <= 8 && json_is_string(u) &&
               (!strcmp(json_string_value(u), "c") || !strcmp(json_string_value(u), "f"));
    }
    if (!strcmp(name, "flag")) return json_object_size(args) == 1 && json_is_boolean(json_object_get(args, "on"));
    return 0;
}

static int accepts(const grammar_t *g, const char *text) {
    grammar_state_t *s = grammar_state_new(g);
    assert_non_null(s);
    int ok = grammar_state_accept_bytes(s, text, strlen(text)) == 0 && grammar_state_can_end(s);
    grammar_state_destroy(&s);
    return ok;
}

static grammar_t *format_grammar(int fmt, int max_calls) {
    json_t *calls = tools_calls();
    char err[256];
    char *gbnf = toolfmt_grammar(fmt, calls, max_calls, err, sizeof err);
    json_decref(calls);
    if (!gbnf) fail_msg("%s grammar: %s", toolfmt_name(fmt), err);
    grammar_t *g = grammar_parse(gbnf, strlen(gbnf), NULL, err, sizeof err);
    if (!g) fail_msg("%s grammar does not parse: %s\n%s", toolfmt_name(fmt), err, gbnf);
    free(gbnf);
    return g;
}

/* the formats as llama.cpp's common/chat.cpp documents them, and near misses */
static void test_grammar_texts(void **st) {
    (void)st;
    grammar_t *g = format_grammar(TOOLFMT_HERMES, 1);
    assert_true(accepts(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>"));
    assert_true(accepts(g, "<tool_call>\n{\"name\":\"flag\",\"arguments\":{\"on\":true}}\n</tool_call>"));
    assert_false(accepts(g, "<tool_call>\n{\"name\": \"other\", \"arguments\": {\"on\": true}}\n</tool_call>"));
    assert_false(accepts(g, "<tool_call>\n{\"name\": \"flag\", \"parameters\": {\"on\": true}}\n</tool_call>"));
    assert_false(accepts(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"k\"}}\n</tool_call>"));
    assert_false(accepts(g, "<tool_call>\n{\"name\":\"flag\",\"arguments\":{\"on\":true}}\n</tool_call>\n<tool_call>\n"
                            "{\"name\":\"flag\",\"arguments\":{\"on\":false}}\n</tool_call>"));   /* one call only */
    grammar_destroy(&g);
    g = format_grammar(TOOLFMT_HERMES, 3);
    assert_true(accepts(g, "<tool_call>\n{\"name\":\"flag\",\"arguments\":{\"on\":true}}\n</tool_call>\n<tool_call>\n"
                           "{\"name\":\"flag\",\"arguments\":{\"on\":false}}\n</tool_call>"));
    grammar_destroy(&g);
    g = format_grammar(TOOLFMT_LLAMA3, 3);   /* always one call */
    assert_true(accepts(g, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\", \"unit\": \"f\"}}"));
    assert_false(accepts(g, "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\", \"unit\": \"f\"}}"));
    assert_false(accepts(g, "<tool_call>\n{\"name\": \"flag\", \"parameters\": {\"on\": true}}\n</tool_call>"));
    grammar_destroy(&g);
    g = format_grammar(TOOLFMT_MISTRAL, 1);
    assert_true(accepts(g, "[TOOL_CALLS][{\"name\": \"flag\", \"arguments\": {\"on\": false}, \"id\": \"a1b2c3d4e\"}]"));
    assert_false(accepts(g, "[TOOL_CALLS][{\"name\": \"flag\", \"arguments\": {\"on\": false}, \"id\": \"short\"}]"));
    assert_false(accepts(g, "[TOOL_CALLS][]"));
    assert_false(accepts(g, "[TOOL_CALLS][{\"name\":\"flag\",\"arguments\":{\"on\":true},\"id\":\"a1b2c3d4e\"},"
                            "{\"name\":\"flag\",\"arguments\":{\"on\":true},\"id\":\"a1b2c3d4f\"}]"));
    grammar_destroy(&g);
    char err[200];
    json_t *none = json_array();
    assert_null(toolfmt_grammar(TOOLFMT_GENERIC, none, 1, err, sizeof err));
    assert_null(toolfmt_grammar(TOOLFMT_HERMES, none, 1, err, sizeof err));   /* no tools */
    json_decref(none);
    json_t *bad = json_pack("[{s:s, s:{s:s, s:s}}]", "name", "f", "params", "type", "string", "pattern", "^a$");
    assert_null(toolfmt_grammar(TOOLFMT_HERMES, bad, 1, err, sizeof err));   /* the converter's refusal */
    assert_non_null(strstr(err, "pattern"));
    json_decref(bad);
}

/* ---- streaming (toolstream.c) --------------------------------------------------------------- */

/* text[0..n) of fmt read in random chunks, OpenAI's deltas taken after each and put together as
 * a client does (content appended; a call's id and name from its first delta, its arguments
 * appended): the result equals the plain reply (server_tools_reply) for every split. With ref,
 * the plain reply's calls also equal toolfmt_parse's (the all-or-nothing parser, an independent
 * reading) — names, ids, and arguments as JSON values. Returns the most arguments deltas one
 * call got. */
static int stream_check(int fmt, const char *text, size_t n, int ref, unsigned *seed) {
    const char *fin = NULL, *fin2 = NULL;
    json_t *plain = server_tools_reply(fmt, text, n, "call_9", 0, "length", &fin);
    assert_non_null(plain);
    json_t *pcalls = json_object_get(plain, "tool_calls"), *pc = json_object_get(plain, "content");
    int most = 0;
    if (ref) {
        char *content = NULL;
        size_t cl = 0, i;
        json_t *calls = toolfmt_parse(fmt, text, n, &content, &cl), *c;
        assert_int_equal(json_array_size(calls), json_array_size(pcalls));
        json_array_foreach(calls, i, c) {
            json_t *f = json_object_get(json_array_get(pcalls, i), "function");
            json_t *args = json_loads(json_string_value(json_object_get(f, "arguments")), 0, NULL);
            if (!json_equal(args, json_object_get(c, "arguments"))) fail_msg("%s: call %zu's arguments differ: %.300s", toolfmt_name(fmt), i, text);
            assert_string_equal(json_string_value(json_object_get(f, "name")), json_string_value(json_object_get(c, "name")));
            if (json_object_get(c, "id"))
                assert_string_equal(json_string_value(json_object_get(json_array_get(pcalls, i), "id")),
                                    json_string_value(json_object_get(c, "id")));
            json_decref(args);
        }
        json_decref(calls);
        free(content);
    }
    for (int split = 0; split < 5; split++) {
        toolstream_t s;
        toolstream_init(&s, fmt);
        strbuf_t content = {0}, args[TOOLFMT_MAX_CALLS];
        json_t *hdr[TOOLFMT_MAX_CALLS] = {0};
        int nd[TOOLFMT_MAX_CALLS] = {0}, ncalls = 0;
        memset(args, 0, sizeof args);
        size_t at = 0;
        for (int last = 0; !last;) {
            if (at < n) {
                *seed = *seed * 1103515245u + 12345u;
                size_t k = split == 0 ? n : 1 + (*seed >> 8) % (split * 4u);
                if (k > n - at) k = n - at;
                assert_int_equal(toolstream_feed(&s, text + at, k), 0);
                at += k;
            } else {
                assert_int_equal(toolstream_finish(&s), 0);
                last = 1;
            }
            json_t *d = server_tools_delta(&s, "call_9"), *c, *v;
            assert_non_null(d);
            if ((v = json_object_get(d, "content"))) strbuf_add(&content, json_string_value(v), json_string_length(v));
            size_t i;
            json_array_foreach(json_object_get(d, "tool_calls"), i, c) {
                int k = (int)json_integer_value(json_object_get(c, "index"));
                json_t *a = json_object_get(json_object_get(c, "function"), "arguments");
                assert_true(k >= 0 && k < TOOLFMT_MAX_CALLS && json_is_string(a));
                if (json_object_get(c, "id")) {   /* a call's first delta, once, in order */
                    assert_int_equal(k, ncalls);
                    assert_null(hdr[k]);
                    hdr[k] = json_incref(c);
                    ncalls++;
                } else {
                    assert_true(k < ncalls && json_string_length(a) > 0);
                }
                if (json_string_length(a)) nd[k]++;
                strbuf_add(&args[k], json_string_value(a), json_string_length(a));
            }
            json_decref(d);
        }
        json_t *m = server_tools_message(&s, "call_9", "length", &fin2);
        assert_string_equal(fin, fin2);
        assert_true(json_equal(m, plain));
        json_decref(m);
        /* what the client put together */
        const char *want = json_is_string(pc) ? json_string_value(pc) : "";
        if (json_string_length(pc) != content.n || (content.n && memcmp(want, content.p, content.n)))
            fail_msg("%s split %d: streamed content '%s' != '%s' of %.300s", toolfmt_name(fmt), split, content.p ? content.p : "", want, text);
        assert_int_equal(ncalls, json_array_size(pcalls));
        for (int k = 0; k < ncalls; k++) {
            json_t *p = json_array_get(pcalls, k), *f = json_object_get(p, "function");
            json_t *hf = json_object_get(hdr[k], "function");
            assert_string_equal(json_string_value(json_object_get(hdr[k], "id")), json_string_value(json_object_get(p, "id")));
            assert_string_equal(json_string_value(json_object_get(hdr[k], "type")), "function");
            assert_string_equal(json_string_value(json_object_get(hf, "name")), json_string_value(json_object_get(f, "name")));
            const char *pa = json_string_value(json_object_get(f, "arguments"));
            if (json_string_length(json_object_get(f, "arguments")) != args[k].n || (args[k].n && memcmp(pa, args[k].p, args[k].n)))
                fail_msg("%s split %d: call %d's streamed arguments '%s' != '%s'", toolfmt_name(fmt), split, k, args[k].p ? args[k].p : "", pa);
            if (nd[k] > most) most = nd[k];
            json_decref(hdr[k]);
            strbuf_free(&args[k]);
        }
        strbuf_free(&content);
        toolstream_free(&s);
    }
    json_decref(plain);
    return most;
}

/* random sentences of each format's grammar over printable ASCII + '\n', one byte a token:
 * every one parses back into 1..max calls that the tools' schemas allow, with no content */
static void test_grammar_walks(void **st) {
    (void)st;
    enum { NV = 129, EOG = 128 };
    char bytes[NV];
    const char *pieces[NV];
    int len[NV];
    for (int i = 0; i < NV; i++) {
        bytes[i] = (char)i;
        pieces[i] = &bytes[i];
        len[i] = (i >= 32 && i < 127) || i == '\n' ? 1 : 0;
    }
    int32_t eog = EOG;
    grammar_vocab_t *v = grammar_vocab_new(NV, pieces, len, &eog, 1);
    assert_non_null(v);
    uint8_t mask[(NV + 7) / 8];
    unsigned seed = 12345;
    int walks = 0, multi = 0;
    for (int fmt = TOOLFMT_HERMES; fmt <= TOOLFMT_MISTRAL; fmt++)
        for (int max = 1; max <= 3; max += 2) {
            grammar_t *g = format_grammar(fmt, max);
            for (int w = 0; w < 40; w++, walks++) {
                grammar_state_t *s = grammar_state_new(g);
                char text[4096];
                size_t n = 0;
                for (int step = 0; step < 3000 && !grammar_state_done(s); step++) {
                    int k = grammar_state_mask(s, v, mask), allowed[NV], na = 0, end = 0;
                    assert_true(k > 0);
                    for (int t = 0; t < NV; t++)
                        if (mask[t >> 3] >> (t & 7) & 1) { if (t == EOG) end = 1; else allowed[na++] = t; }
                    seed = seed * 1103515245u + 12345u;
                    if (end && (na == 0 || (seed >> 16) % 8 == 0)) break;
                    assert_true(na > 0 && n + 1 < sizeof text);
                    int t = allowed[(seed >> 8) % (unsigned)na];
                    assert_int_equal(grammar_state_accept_token(s, v, t), 0);
                    text[n++] = (char)t;
                }
                assert_true(grammar_state_can_end(s));
                grammar_state_destroy(&s);
                text[n] = 0;
                /* streamed == plain for the sentence, with text around it, and each of its prefixes */
                if (stream_check(fmt, text, n, 1, &seed) > 1) multi++;
                if (fmt != TOOLFMT_LLAMA3) {
                    char around[4200];
                    int an = snprintf(around, sizeof around, "Sure, caf\xc3\xa9 \xe2\x82\xac.\n%s\nDone.", text);
                    stream_check(fmt, around, (size_t)an, 0, &seed);
                }
                for (size_t cut = 0; cut < n; cut += 1 + n / 12) stream_check(fmt, text, cut, 0, &seed);
                char *content = (char *)1;
                size_t cl = 0;
                json_t *calls = toolfmt_parse(fmt, text, n, &content, &cl), *c;
                if (!calls) fail_msg("%s: no calls parsed from a sentence of its grammar: %s", toolfmt_name(fmt), text);
                assert_null(content);
                size_t i, want_max = fmt == TOOLFMT_LLAMA3 ? 1 : (size_t)max;
                assert_true(json_array_size(calls) >= 1 && json_array_size(calls) <= want_max);
                json_array_foreach(calls, i, c) {
                    json_t *nm = json_object_get(c, "name");
                    if (!call_valid(json_string_value(nm), json_object_get(c, "arguments")))
                        fail_msg("%s: call %zu of '%s' does not follow the tool's schema", toolfmt_name(fmt), i, text);
                    if (fmt == TOOLFMT_MISTRAL) assert_int_equal(utf8_chars(json_string_value(json_object_get(c, "id"))), 9);
                }
                json_decref(calls);
            }
            grammar_destroy(&g);
        }
    grammar_vocab_destroy(&v);
    printf("grammar walks: %d sentences parsed back into valid calls; streamed == plain on every split, "
           "%d with a call's arguments in more than one delta\n", walks, multi);
    assert_true(multi > walks / 2);
}

/* ---- parsing ------------------------------------------------------------------------------ */

/* a reply of fmt: the calls (as JSON text, an array of {"name","arguments"(,"id")}; NULL: none)
 * and the content (NULL: none; with no calls, the whole text trimmed) */
typedef struct pcase { int fmt; const char *text, *calls, *content; } pcase_t;

static void test_parse_cases(void **st) {
    (void)st;
    char many[2048];   /* 17 hermes blocks: one past TOOLFMT_MAX_CALLS */
    size_t at = 0;
    for (int i = 0; i < 17; i++)
        at += (size_t)snprintf(many + at, sizeof many - at, "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>");
    const pcase_t cases[] = {
        {TOOLFMT_HERMES, "Let me check.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>",
         "[{\"name\":\"f\",\"arguments\":{\"x\":1}}]", "Let me check."},
        {TOOLFMT_HERMES, "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"g-2\", "
                         "\"arguments\": \"{\\\"y\\\": [1]}\"}\n</tool_call> done",
         "[{\"name\":\"f\",\"arguments\":{}},{\"name\":\"g-2\",\"arguments\":{\"y\":[1]}}]", "done"},
        {TOOLFMT_HERMES, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": \"</\"}}", "[{\"name\":\"f\",\"arguments\":{\"a\":\"</\"}}]", NULL},
        {TOOLFMT_HERMES, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}\n</tool_call>", NULL, NULL},
        {TOOLFMT_HERMES, "<tool_call>{\"name\": \"a b\", \"arguments\": {}}</tool_call>", NULL, NULL},
        {TOOLFMT_HERMES, "<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>", NULL, NULL},
        {TOOLFMT_HERMES, "<tool_call>{\"name\": \"f\"}</tool_call>", NULL, NULL},
        {TOOLFMT_HERMES, "<tool_call>{\"name\": \"f\", \"arguments\": \"nope\"}</tool_call>", NULL, NULL},
        {TOOLFMT_HERMES, "<tool_call><tool_call>", NULL, NULL},
        {TOOLFMT_HERMES, "<tool_call>", NULL, NULL},
        {TOOLFMT_HERMES, "just text, no call", NULL, NULL},
        {TOOLFMT_HERMES, "<tool_call>{\"name\": \"f\", \"arguments\": {\"s\": \"\xff\"}}</tool_call>", NULL, NULL},
        {TOOLFMT_HERMES, many, NULL, NULL},
        {TOOLFMT_LLAMA3, "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"x\": 1}}", "[{\"name\":\"f\",\"arguments\":{\"x\":1}}]", NULL},
        {TOOLFMT_LLAMA3, " {\"type\": \"function\", \"name\": \"f\", \"parameters\": {}} and more",
         "[{\"name\":\"f\",\"arguments\":{}}]", "and more"},
        {TOOLFMT_LLAMA3, "{\"name\": \"f\", \"arguments\": {\"k\": null}}", "[{\"name\":\"f\",\"arguments\":{\"k\":null}}]", NULL},
        {TOOLFMT_LLAMA3, "{\"type\": \"code\", \"name\": \"f\", \"parameters\": {}}", NULL, NULL},
        {TOOLFMT_LLAMA3, "Sure: {\"name\": \"f\", \"parameters\": {}}", NULL, NULL},
        {TOOLFMT_LLAMA3, "{\"name\": \"f\"}", NULL, NULL},
        {TOOLFMT_LLAMA3, "{\"name\": \"f\", \"parameters\": {", NULL, NULL},
        {TOOLFMT_LLAMA3, "<|python_tag|>", NULL, NULL},
        {TOOLFMT_MISTRAL, "hi [TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}, \"id\": \"abcdefghi\"}]",
         "[{\"name\":\"f\",\"arguments\":{},\"id\":\"abcdefghi\"}]", "hi"},
        {TOOLFMT_MISTRAL, "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": 1}}, {\"name\": \"g\", \"arguments\": {}}]",
         "[{\"name\":\"f\",\"arguments\":{\"a\":1}},{\"name\":\"g\",\"arguments\":{}}]", NULL},
        {TOOLFMT_MISTRAL, "[TOOL_CALLS]{\"name\": \"f\", \"arguments\": {}}", NULL, NULL},
        /* the marker as a hidden control token: the array opens the reply */
        {TOOLFMT_MISTRAL, " [{\"name\": \"f\", \"arguments\": {\"a\": 1}}] ok", "[{\"name\":\"f\",\"arguments\":{\"a\":1}}]", "ok"},
        {TOOLFMT_MISTRAL, "[{\"name\": \"f\"}]", NULL, NULL},
        {TOOLFMT_MISTRAL, "x [{\"name\": \"f\", \"arguments\": {}}]", NULL, NULL},
        {TOOLFMT_MISTRAL, "[1, 2]", NULL, NULL},
        {TOOLFMT_MISTRAL, "[TOOL_CALLS][]", NULL, NULL},
        {TOOLFMT_MISTRAL, "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}, 7]", NULL, NULL},
        {TOOLFMT_MISTRAL, "[TOOL_CALLS", NULL, NULL},
        {TOOLFMT_GENERIC, "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>", NULL, NULL},
        {TOOLFMT_HERMES, "", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const pcase_t *c = &cases[i];
        char *content = NULL;
        size_t cl = 0, n = strlen(c->text);
        json_t *got = toolfmt_parse(c->fmt, c->text, n, &content, &cl);
        if (!c->calls) {
            if (got) fail_msg("case %zu: parsed calls out of '%s'", i, c->text);
            /* the whole text is the content, trimmed */
            const char *s = c->text;
            size_t k = n;
            while (k && strchr(" \t\r\n", *s)) { s++; k--; }
            while (k && strchr(" \t\r\n", s[k - 1])) k--;
            if (k == 0) assert_null(content);
            else if (!content || cl != k || memcmp(content, s, k)) fail_msg("case %zu: content '%s'", i, content ? content : "(null)");
        } else {
            json_t *want = json_loads(c->calls, 0, NULL);
            assert_non_null(want);
            if (!got || !json_equal(got, want)) {
                char *g = got ? json_dumps(got, JSON_COMPACT) : NULL;
                fail_msg("case %zu: calls %s, want %s", i, g ? g : "(none)", c->calls);
            }
            json_decref(want);
            if (c->content ? !content || strcmp(content, c->content) || cl != strlen(c->content) : content != NULL)
                fail_msg("case %zu: content '%s', want '%s'", i, content ? content : "(null)", c->content ? c->content : "(null)");
        }
        json_decref(got);
        free(content);
    }
}

/* mutated replies (bytes flipped, inserted, cut): whatever comes back keeps the promises —
 * calls well-formed, content within the text's length */
static void test_parse_mutations(void **st) {
    (void)st;
    static const char *const base[] = {
        "ok <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>",
        "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        "[TOOL_CALLS][{\"name\": \"flag\", \"arguments\": {\"on\": true}, \"id\": \"a1b2c3d4e\"}]",
    };
    unsigned seed = 99;
    int parsed = 0;
    for (int fmt = TOOLFMT_HERMES; fmt <= TOOLFMT_MISTRAL; fmt++)
        for (int m = 0; m < 2000; m++) {
            char buf[256];
            size_t n = strlen(base[fmt - 1]);
            memcpy(buf, base[fmt - 1], n);
            for (int k = 0; k < 1 + m % 4; k++) {
                seed = seed * 1103515245u + 12345u;
                size_t p = (seed >> 8) % n;
                int op = (int)((seed >> 4) % 3);
                if (op == 0) buf[p] = (char)(seed >> 20);
                else if (op == 1 && n + 1 < sizeof buf) { memmove(buf + p + 1, buf + p, n - p); buf[p] = "{}[]\"<>:,"[(seed >> 20) % 9]; n++; }
                else n = p + 1;
            }
            char *content = NULL;
            size_t cl = 0;
            json_t *calls = toolfmt_parse(fmt, buf, n, &content, &cl), *c;
            size_t i;
            assert_true(cl <= n && (content == NULL) == (cl == 0));
            json_array_foreach(calls, i, c) {
                json_t *nm = json_object_get(c, "name");
                assert_true(json_is_string(nm) && json_string_length(nm) >= 1 && json_string_length(nm) <= 64);
                assert_true(json_is_object(json_object_get(c, "arguments")));
            }
            parsed += calls != NULL;
            json_decref(calls);
            free(content);
        }
    printf("mutations: %d of 6000 still parsed as calls\n", parsed);
}

/* streamed == plain on hand-written replies of every format (the generic one's too), each of
 * their prefixes (a reply cut short anywhere), and ASCII mutations of them */
static void test_stream_splits(void **st) {
    (void)st;
    static const struct { int fmt; const char *text; } base[] = {
        {TOOLFMT_GENERIC, "{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par\\u00eds \\\"x\\\"\", \"n\": [1, 2.5e3]}}}"},
        {TOOLFMT_GENERIC, "{\"tool_calls\": [{\"name\": \"f\", \"arguments\": {}}, {\"arguments\": {\"a\": {\"b\": null}}, \"name\": \"g\"}]}"},
        {TOOLFMT_GENERIC, "{\"response\": \"Hello \\u00e9 there\\n\"}"},
        {TOOLFMT_GENERIC, "{\"response\": \"a \\ud83d\\ude00 b \\\" \\/ \\t \\u0041 c\\x after\"}"},
        {TOOLFMT_GENERIC, "{\"response\": \"lone \\udc00 surrogate\"}"},
        {TOOLFMT_GENERIC, "  plain text, no JSON "},
        {TOOLFMT_HERMES, "Let me look.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": \"<tool_call>\"}}\n</tool_call>\n"
                         "<tool_call>{\"name\": \"g\", \"arguments\": \"{\\\"y\\\": 1}\"}</tool_call> then <tool_ text"},
        {TOOLFMT_HERMES, "<tool_call>not json</tool_call> and <tool_call>\n{\"name\": \"h\", \"arguments\": {\"z\": true}}\n</tool_call>"},
        {TOOLFMT_LLAMA3, " <|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}} and after"},
        {TOOLFMT_LLAMA3, "{\"type\": \"function\", \"name\": \"f\", \"parameters\": {\"x\": [1, {\"y\": \"}\"}]}}"},
        {TOOLFMT_LLAMA3, "I will not call a tool."},
        {TOOLFMT_MISTRAL, "Checking. [TOOL_CALLS][{\"name\": \"flag\", \"arguments\": {\"on\": true}, \"id\": \"a1b2c3d4e\"}, "
                          "{\"name\": \"f\", \"arguments\": {\"x\": 2}}] ok"},
        {TOOLFMT_MISTRAL, "[{\"name\": \"flag\", \"arguments\": {\"on\": false}, \"id\": \"123456789\"}]"},
        /* content first, with brackets that are not calls, then the marker (Mistral Nemo's
         * control token, shown by detok_preserve) and the calls */
        {TOOLFMT_MISTRAL, "See [1] and [{x}].\n\n[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {}, \"id\": \"abcdefghi\"}]"},
    };
    unsigned seed = 7;
    int checked = 0;
    for (size_t b = 0; b < sizeof base / sizeof base[0]; b++) {
        size_t n = strlen(base[b].text);
        /* the whole reply read as toolfmt_parse does, but for generic (not its format) and the
         * Hermes one with a bad block: there one block's failure keeps the other call */
        int ref = base[b].fmt != TOOLFMT_GENERIC && !strstr(base[b].text, "not json");
        for (size_t cut = 0; cut <= n; cut++, checked++) stream_check(base[b].fmt, base[b].text, cut, ref && cut == n, &seed);
        for (int m = 0; m < 300; m++, checked++) {
            char buf[512];
            size_t bn = n;
            memcpy(buf, base[b].text, n);
            for (int k = 0; k < 1 + m % 3; k++) {
                seed = seed * 1103515245u + 12345u;
                size_t p = (seed >> 8) % bn;
                int op = (int)((seed >> 4) % 3);
                if (op == 0) buf[p] = (char)(32 + (seed >> 20) % 95);
                else if (op == 1 && bn + 1 < sizeof buf) { memmove(buf + p + 1, buf + p, bn - p); buf[p] = "{}[]\" <>:,\\"[(seed >> 20) % 11]; bn++; }
                else if (bn > 1) { memmove(buf + p, buf + p + 1, bn - p - 1); bn--; }
            }
            stream_check(base[b].fmt, buf, bn, 0, &seed);
        }
    }
    printf("stream splits: %d replies streamed == plain\n", checked);
}

/* ---- the server's request ---------------------------------------------------------------- */

#define TOOLS_JSON "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"," \
                   "\"properties\":{\"x\":{\"type\":\"integer\"}},\"required\":[\"x\"]}}},{\"type\":\"function\"," \
                   "\"function\":{\"name\":\"g\"}}]"
#define MSGS_JSON "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

/* body under format fmt: 0 and r filled, or fails the test */
static void parse_fmt(server_req_t *r, int fmt, const char *body) {
    server_err_t e;
    memset(&e, 0, sizeof e);
    if (server_req_parse_fmt(r, SERVER_REQ_CHAT, body, strlen(body), NULL, fmt, &e) < 0) fail_msg("%s: %s", body, e.msg);
}

/* the choices under each format: native ones add no system message and keep the tools for the
 * template; "required" / named / parallel hold the reply to the format's calls (the grammar
 * accepts the named tool's call and refuses the other's); errors are the generic path's */
static void test_server_request(void **st) {
    (void)st;
    server_req_t r;
    char err[200];
    parse_fmt(&r, TOOLFMT_GENERIC, "{" MSGS_JSON "," TOOLS_JSON ",\"tool_choice\":\"required\"}");
    assert_int_equal(r.n_msgs, 2);   /* generic: its system message */
    assert_null(r.tools_json);
    server_req_free(&r);
    parse_fmt(&r, TOOLFMT_HERMES, "{" MSGS_JSON "," TOOLS_JSON ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}");
    assert_int_equal(r.n_msgs, 1);
    assert_int_equal(r.tools, SERVER_TOOLS_NAMED);
    assert_int_equal(json_array_size(r.tools_json), 2);
    assert_null(r.grammar_trigger);
    grammar_t *g = grammar_parse(r.grammar, strlen(r.grammar), NULL, err, sizeof err);
    assert_non_null(g);
    assert_true(accepts(g, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 3}}\n</tool_call>"));
    assert_false(accepts(g, "<tool_call>\n{\"name\": \"g\", \"arguments\": {}}\n</tool_call>"));
    grammar_destroy(&g);
    server_req_free(&r);
    parse_fmt(&r, TOOLFMT_MISTRAL, "{" MSGS_JSON "," TOOLS_JSON ",\"tool_choice\":\"required\",\"parallel_tool_calls\":true}");
    g = grammar_parse(r.grammar, strlen(r.grammar), NULL, err, sizeof err);
    assert_non_null(g);
    assert_true(accepts(g, "[TOOL_CALLS][{\"name\":\"g\",\"arguments\":{},\"id\":\"123456789\"},"
                           "{\"name\":\"f\",\"arguments\":{\"x\":1},\"id\":\"abcdefghi\"}]"));
    grammar_destroy(&g);
    server_req_free(&r);
    parse_fmt(&r, TOOLFMT_LLAMA3, "{" MSGS_JSON "," TOOLS_JSON ",\"tool_choice\":\"none\"}");
    assert_true(r.tools == SERVER_TOOLS_NONE && !r.grammar && !r.tools_json);
    server_req_free(&r);
    /* the generic path's checks hold: a tools request with a grammar is refused, naming it */
    server_err_t e;
    const char *bad = "{" MSGS_JSON "," TOOLS_JSON ",\"grammar\":\"root ::= \\\"a\\\"\"}";
    assert_true(server_req_parse_fmt(&r, SERVER_REQ_CHAT, bad, strlen(bad), NULL, TOOLFMT_HERMES, &e) < 0);
    assert_string_equal(e.param, "grammar");
    /* the reply: a Hermes call with text before it; a cut-short one is content, finish its own */
    const char *fin;
    const char *txt = "Sure.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 2}}\n</tool_call>";
    json_t *m = server_tools_reply(TOOLFMT_HERMES, txt, strlen(txt), "call_7", 0, "stop", &fin);
    assert_string_equal(fin, "tool_calls");
    assert_string_equal(json_string_value(json_object_get(m, "content")), "Sure.");
    json_t *c = json_array_get(json_object_get(m, "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "id")), "call_7");
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "function"), "arguments")), "{\"x\":2}");
    json_decref(m);
    /* Mistral's calls keep their ids; a streamed delta numbers them */
    const char *mt = "[TOOL_CALLS][{\"name\":\"g\",\"arguments\":{},\"id\":\"123456789\"},{\"name\":\"f\",\"arguments\":{\"x\":1}}]";
    m = server_tools_reply(TOOLFMT_MISTRAL, mt, strlen(mt), "call_7", 1, "stop", &fin);
    assert_string_equal(fin, "tool_calls");
    json_t *l = json_object_get(m, "tool_calls");
    assert_int_equal(json_array_size(l), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(l, 0), "id")), "123456789");
    assert_string_equal(json_string_value(json_object_get(json_array_get(l, 1), "id")), "call_7_1");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(l, 1), "index")), 1);
    assert_null(json_object_get(m, "content"));
    json_decref(m);
    m = server_tools_reply(TOOLFMT_HERMES, txt, 20, "call_7", 1, "length", &fin);
    assert_string_equal(fin, "length");
    assert_string_equal(json_string_value(json_object_get(m, "content")), "Sure.\n<tool_call>\n{\"");
    json_decref(m);
}

/* ---- the server's prompt vs jinja2 --------------------------------------------------------- */

/* a generated vocabulary (BOS <|begin_of_text|>, added by the tokenizer) with template tmpl */
static tokenizer_t *vocab_with(const char *tmpl) {
    gguf_writer_t *w = gguf_writer_new();
    char err[256] = "", path[64];
    assert_non_null(w);
    assert_int_equal(vocab_generate(w, 280, 7, err, sizeof err), 0);
    gguf_writer_set_str(w, "general.architecture", "bitnet-b1.58");
    gguf_writer_set_str(w, "tokenizer.chat_template", tmpl);
    strcpy(path, "/tmp/tern_toolfmt_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    if (gguf_writer_begin(w, path, err, sizeof err) < 0 || gguf_writer_finish(w, err, sizeof err) < 0)
        fail_msg("writing %s: %s", path, err);
    gguf_writer_destroy(&w);
    gguf_t *g = NULL;
    if (gguf_open(&g, path, err, sizeof err) < 0) fail_msg("open %s: %s", path, err);
    tokenizer_t *t = NULL;
    if (tokenizer_load(&t, g, err, sizeof err) < 0) fail_msg("tokenizer_load: %s", err);
    gguf_close(&g);
    unlink(path);
    if (chat_template_set(t, NULL, 1, err, sizeof err) < 0) fail_msg("--jinja: %s", err);
    return t;
}

/* text with today's date as strftime_now writes it ("%d %b %Y", Llama 3.2; "%Y-%m-%d", Mistral)
 * replaced by render.py's fixed 2024-07-26 (the server renders with the clock) */
static void fix_date(char *text) {
    static const char *const fmts[2][2] = {{"%d %b %Y", "26 Jul 2024"}, {"%Y-%m-%d", "2024-07-26"}};
    time_t now = time(NULL);
    struct tm tm;
    for (int f = 0; f < 4; f++) {   /* now, and 10 minutes ago: a render just before midnight */
        time_t when = now - (f >= 2 ? 600 : 0);
        gmtime_r(&when, &tm);
        char today[32];
        strftime(today, sizeof today, fmts[f % 2][0], &tm);
        size_t a = strlen(today), b = strlen(fmts[f % 2][1]);
        assert_int_equal(a, b);
        for (char *p = strstr(text, today); p; p = strstr(p + b, today)) memcpy(p, fmts[f % 2][1], b);
    }
}

static void test_server_prompt_vs_jinja2(void **st) {
    (void)st;
    char path[1200];
    snprintf(path, sizeof path, "%s/conversations.json", data_dir());
    json_t *convs = json_load_file(path, 0, NULL);
    snprintf(path, sizeof path, "%s/expected.json", data_dir());
    json_t *expected = json_load_file(path, 0, NULL), *exp;
    assert_non_null(convs);
    assert_non_null(expected);
    const char *key;
    int n = 0, raised = 0;
    json_object_foreach(expected, key, exp) {
        if (strncmp(key, "server|", 7)) continue;
        char name[256];
        const char *bar = strchr(key + 7, '|');
        assert_non_null(bar);
        snprintf(name, sizeof name, "%.*s", (int)(bar - key - 7), key + 7);
        char *tmpl = template_text(name);
        tokenizer_t *t = vocab_with(tmpl);
        assert_int_not_equal(chat_tool_format(t), TOOLFMT_GENERIC);
        json_t *conv = json_object_get(json_object_get(convs, "conversations"), bar + 1);
        json_t *body = json_pack("{s:O, s:O}", "messages", json_object_get(conv, "messages"), "tools",
                                 json_object_get(convs, "tools"));
        char *txt = json_dumps(body, JSON_COMPACT);
        server_req_t r;
        server_err_t e;
        memset(&e, 0, sizeof e);
        if (server_req_parse_fmt(&r, SERVER_REQ_CHAT, txt, strlen(txt), NULL, chat_tool_format(t), &e) < 0)
            fail_msg("%s: the request is refused: %s", key, e.msg);
        assert_int_equal(r.tool_fmt, chat_tool_format(t));
        /* "auto": free text, lazily held to the calls' grammar from the format's marker on */
        const char *trig = toolfmt_trigger(r.tool_fmt);
        if (trig) assert_true(r.grammar && r.grammar_trigger && !strcmp(r.grammar_trigger, trig));
        else assert_true(!r.grammar && !r.grammar_trigger);
        char *got = server_gen_chat_text(t, &r, &e);
        json_t *out = json_object_get(exp, "out"), *rs = json_object_get(exp, "raise");
        if (json_is_string(out)) {
            if (!got) fail_msg("%s: tern failed: %s", key, e.msg);
            fix_date(got);
            if (strcmp(got, json_string_value(out))) fail_msg("%s: MISMATCH\n--- tern\n%s\n--- jinja2\n%s", key, got, json_string_value(out));
        } else {
            if (got) fail_msg("%s: tern rendered, jinja2 did not", key);
            if (json_is_string(rs) && !strstr(e.msg, json_string_value(rs))) fail_msg("%s: '%s' lacks the raised message", key, e.msg);
            raised++;
        }
        free(got);
        server_req_free(&r);
        free(txt);
        json_decref(body);
        tokenizer_destroy(&t);
        free(tmpl);
        n++;
    }
    printf("server prompts == jinja2: %d renderings (%d refused by the template as jinja2 did)\n", n, raised);
    assert_true(n >= 16);
    json_decref(convs);
    json_decref(expected);
}

/* ---- thinking before the calls ------------------------------------------------------------ */

/* the message a stream's deltas add up to (OpenAI's rule: a call's first delta has its id and
 * name, later ones more arguments); *calls_seen set once a delta has tool_calls */
static void delta_apply(json_t *msg, json_t *d, int *calls_seen) {
    json_t *c = json_object_get(d, "content"), *tc = json_object_get(d, "tool_calls"), *v;
    size_t i;
    if (c) {
        json_t *was = json_object_get(msg, "content");
        char buf[1024];
        snprintf(buf, sizeof buf, "%s%s", json_is_string(was) ? json_string_value(was) : "", json_string_value(c));
        json_object_set_new(msg, "content", json_string(buf));
    }
    if (!tc) return;
    *calls_seen = 1;
    json_t *list = json_object_get(msg, "tool_calls");
    if (!list) json_object_set_new(msg, "tool_calls", list = json_array());
    json_array_foreach(tc, i, v) {
        size_t k = (size_t)json_integer_value(json_object_get(v, "index"));
        json_t *fn = json_object_get(v, "function");
        if (json_object_get(v, "id")) {
            assert_int_equal(k, json_array_size(list));
            json_array_append(list, v);
            json_object_del(json_array_get(list, k), "index");
            continue;
        }
        json_t *have = json_object_get(json_object_get(json_array_get(list, k), "function"), "arguments");
        assert_non_null(have);
        char buf[1024];
        snprintf(buf, sizeof buf, "%s%s", json_string_value(have), json_string_value(json_object_get(fn, "arguments")));
        json_object_set_new(json_object_get(json_array_get(list, k), "function"), "arguments", json_string(buf));
    }
}

/* text (a Qwen3 reply: thinking, then Hermes calls) released `step` bytes at a time (0: whole),
 * through the reasoning split into the tools reader as server_gen.c's sse_tools does: the
 * reasoning streamed (into reasoning[]) before any tool_calls delta, and the message and finish
 * reason the deltas add up to */
static json_t *stream_thinking(const char *text, int open, size_t step, char reasoning[512], const char **finish) {
    toolstream_t ts;
    toolstream_init(&ts, TOOLFMT_HERMES);
    json_t *msg = json_pack("{s:s}", "role", "assistant");
    size_t n = strlen(text), scan = 0, rsent = 0, csent = 0, at = 0;
    int calls_seen = 0;
    reasoning[0] = 0;
    for (;;) {
        size_t to = step && at + step < n ? at + step : n;
        reasoning_split_t rs;
        reasoning_split(text, to, open, to == n, &scan, &rs);
        size_t nr = rs.r1 - rs.r0 - rsent, nc = rs.c1 - rs.c0 - csent;
        if (nr) {
            assert_false(calls_seen);   /* the thinking comes first */
            strncat(reasoning, text + rs.r0 + rsent, nr);
        }
        rsent += nr;
        if (nc) assert_int_equal(toolstream_feed(&ts, text + rs.c0 + csent, nc), 0);
        csent += nc;
        if (to == n) assert_int_equal(toolstream_finish(&ts), 0);
        json_t *d = server_tools_delta(&ts, "call_x");
        assert_non_null(d);
        delta_apply(msg, d, &calls_seen);
        json_decref(d);
        if (to == n) break;
        at = to;
    }
    if (!json_object_get(msg, "content")) json_object_set_new(msg, "content", calls_seen ? json_null() : json_string(""));
    *finish = server_tools_finish(&ts, "stop");
    toolstream_free(&ts);
    return msg;
}

/* Qwen3 thinks, then calls (--reasoning-format deepseek/auto with tools): the reply's reasoning
 * is the thinking, its tool_calls the Hermes blocks after it (finish_reason tool_calls), and a
 * stream in any pieces sends the reasoning first and adds up to that reply. Expected messages
 * are written out by hand; a <tool_call> inside the thinking is thinking. */
static void test_thinking_then_calls(void **st) {
    (void)st;
#define CALL_W "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>"
#define MSG_W "{\"id\": \"call_x\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", " \
              "\"arguments\": \"{\\\"city\\\":\\\"Paris\\\",\\\"unit\\\":\\\"c\\\"}\"}}"
    static const struct { const char *text; int open; const char *reasoning, *msg, *finish; } cases[] = {
        {"<think>\nThe user wants the weather: get_weather.\n</think>\n\n" CALL_W, 0, "The user wants the weather: get_weather.",
         "{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [" MSG_W "]}", "tool_calls"},
        {"Paris, so get_weather.\n</think>\n\n" CALL_W, 1, "Paris, so get_weather.",   /* the prompt opened <think> */
         "{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [" MSG_W "]}", "tool_calls"},
        {"<think>two calls</think>Checking.\n" CALL_W "\n<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1}}</tool_call>", 0,
         "two calls", "{\"role\": \"assistant\", \"content\": \"Checking.\", \"tool_calls\": [" MSG_W ", {\"id\": \"call_x_1\", "
         "\"type\": \"function\", \"function\": {\"name\": \"add\", \"arguments\": \"{\\\"a\\\":1}\"}}]}", "tool_calls"},
        {"<think>maybe " CALL_W "? no</think>\nIt is 4.", 0, "maybe " CALL_W "? no",
         "{\"role\": \"assistant\", \"content\": \"It is 4.\"}", "stop"},
    };
    static const size_t steps[] = {0, 1, 2, 3, 5, 7, 13, 64};
    int checked = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t n = strlen(cases[c].text), scan = 0;
        reasoning_split_t rs;   /* the plain reply, as server_gen.c's choice_json builds it */
        reasoning_split(cases[c].text, n, cases[c].open, 1, &scan, &rs);
        const char *fin = NULL;
        json_t *plain = server_tools_reply(TOOLFMT_HERMES, cases[c].text + rs.c0, rs.c1 - rs.c0, "call_x", 0, "stop", &fin);
        json_t *want = json_loads(cases[c].msg, 0, NULL);
        assert_non_null(want);
        if (!json_equal(plain, want)) fail_msg("case %zu: plain %s", c, json_dumps(plain, JSON_COMPACT));
        assert_int_equal(rs.r1 - rs.r0, strlen(cases[c].reasoning));
        assert_memory_equal(cases[c].text + rs.r0, cases[c].reasoning, rs.r1 - rs.r0);
        assert_string_equal(fin, cases[c].finish);
        for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++, checked++) {
            char r[512];
            const char *sfin = NULL;
            json_t *got = stream_thinking(cases[c].text, cases[c].open, steps[k], r, &sfin);
            if (!json_equal(got, plain)) fail_msg("case %zu, step %zu: stream %s", c, steps[k], json_dumps(got, JSON_COMPACT));
            assert_string_equal(r, cases[c].reasoning);
            assert_string_equal(sfin, fin);
            json_decref(got);
        }
        json_decref(plain);
        json_decref(want);
    }
#undef CALL_W
#undef MSG_W
    printf("thinking then calls: %d streams == plain\n", checked);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_grammar_texts),
        cmocka_unit_test(test_grammar_walks),
        cmocka_unit_test(test_parse_cases),
        cmocka_unit_test(test_parse_mutations),
        cmocka_unit_test(test_stream_splits),
        cmocka_unit_test(test_thinking_then_calls),
        cmocka_unit_test(test_server_request),
        cmocka_unit_test(test_server_prompt_vs_jinja2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
