/* test_jinja: coordinator/jinja.c against Python's jinja2 set up as Hugging Face's
 * apply_chat_template — byte for byte. tests/data/jinja/expected.json (made by render.py there;
 * TERN_JINJA_EXPECTED names a fresh one, as tests/integration/jinja_py.sh does) holds, for every
 * real chat template there × every conversation of conversations.json, and for every language
 * case of features.json (with HF's trim/lstrip blocks and with Jinja's defaults), the text jinja2
 * rendered, or the raise_exception message (tern must
 * fail with the same message), or another error (tern must fail too). Then: parse errors name
 * line:col, render errors name the line, and the limits (output, steps, bytes built, depth) stop
 * hostile templates. Last, the chat integration (coordinator/chat.c): a GGUF's own template
 * rendered with --jinja gives the family formatter's text, and the flags' error paths. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "tests/unit/cmocka_or_shim.h"

#include "coordinator/jinja.h"
#include "coordinator/tokenizer.h"
#include "coordinator/vocab.h"
#include "core/err.h"
#include "core/gguf.h"
#include <jansson.h>
#include <stdlib.h>
#include <unistd.h>

#define NOW 1721995200   /* 2024-07-26 12:00:00 UTC, as render.py's strftime_now */

static char g_dir[1024];

static const char *data_dir(void) {
    if (!g_dir[0]) {
        const char *src = getenv("TERN_SRC");
        snprintf(g_dir, sizeof g_dir, "%s/tests/data/jinja", src ? src : ".");
    }
    return g_dir;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) { free(p); p = NULL; }
    fclose(f);
    if (p) { p[n] = 0; if (len) *len = (size_t)n; }
    return p;
}

static json_t *load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) fail_msg("%s: %s (line %d)", path, je.text, je.line);
    return j;
}

static int g_raw;   /* render with Jinja's own defaults (trim_blocks, lstrip_blocks off) */

/* renders t with vars; NULL with err on failure */
static char *render(const char *tmpl, const json_t *vars, char *err, size_t errlen) {
    jinja_opts_t o;
    jinja_opts_default(&o);
    o.now = NOW;
    if (g_raw) o.trim_blocks = o.lstrip_blocks = 0;
    jinja_t *t = jinja_parse(tmpl, strlen(tmpl), &o, err, errlen);
    if (!t) return NULL;
    char *out = jinja_render(t, vars, NULL, NULL, err, errlen);
    jinja_destroy(&t);
    return out;
}

/* the first differing byte, with some context, for a failure message */
static void show_diff(const char *key, const char *want, const char *got) {
    size_t i = 0;
    while (want[i] && want[i] == got[i]) i++;
    size_t from = i > 40 ? i - 40 : 0;
    fprintf(stderr, "MISMATCH %s at byte %zu\n  want: %.80s\n  got:  %.80s\n", key, i, want + from, got + from);
}

/* compares one rendering with jinja2's; 1 when it agrees */
static int check_one(const char *key, const json_t *exp, const char *tmpl, const json_t *vars) {
    char err[512];
    char *out = render(tmpl, vars, err, sizeof err);
    const char *want = json_string_value(json_object_get(exp, "out"));
    const char *raised = json_string_value(json_object_get(exp, "raise"));
    int ok;
    if (want) {
        ok = out && !strcmp(out, want);
        if (!out) fprintf(stderr, "FAILED %s: tern: %s\n", key, err);
        else if (!ok) show_diff(key, want, out);
    } else if (raised) {
        ok = !out && !strcmp(err, raised);
        if (!ok) fprintf(stderr, "FAILED %s: want raise_exception '%s', got %s\n", key, raised, out ? "output" : err);
    } else {
        ok = !out && err[0];
        if (!ok) fprintf(stderr, "FAILED %s: jinja2 failed (%s) but tern rendered\n", key,
                         json_string_value(json_object_get(exp, "error")));
    }
    free(out);
    return ok;
}

/* the variables render.py passes for a conversation */
static json_t *conv_vars(const json_t *conv, const json_t *tools) {
    json_t *agp = json_object_get(conv, "add_generation_prompt");
    return json_pack("{s:O, s:b, s:s, s:s, s:O}", "messages", json_object_get(conv, "messages"),
                     "add_generation_prompt", agp ? json_is_true(agp) : 1, "bos_token", "<s>", "eos_token", "</s>",
                     "tools", json_is_true(json_object_get(conv, "tools")) ? (json_t *)tools : json_null());
}

static void test_against_jinja2(void **st) {
    (void)st;
    char path[1200];
    const char *exp_path = getenv("TERN_JINJA_EXPECTED");
    snprintf(path, sizeof path, "%s/conversations.json", data_dir());
    json_t *convs = load_json(path);
    snprintf(path, sizeof path, "%s/features.json", data_dir());
    json_t *features = load_json(path);
    if (!exp_path) snprintf(path, sizeof path, "%s/expected.json", data_dir());
    json_t *expected = load_json(exp_path ? exp_path : path);
    const char *key;
    json_t *exp;
    int n = 0, bad = 0, templates = 0;
    char last[256] = "";
    char *tmpl = NULL;
    json_object_foreach(expected, key, exp) {
        if (!strncmp(key, "server|", 7)) continue;   /* the server's renderings: test_toolfmt.c */
        const char *bar = strchr(key, '|');
        assert_non_null(bar);
        if (!strncmp(key, "features", 8)) {
            json_t *f = json_array_get(features, (size_t)atoi(bar + 1));
            assert_non_null(f);
            g_raw = key[8] == '-';
            bad += !check_one(key, exp, json_string_value(json_object_get(f, "t")), json_object_get(f, "v"));
            g_raw = 0;
            n++;
            continue;
        }
        if (strncmp(last, key, (size_t)(bar - key)) || last[bar - key]) {
            snprintf(last, sizeof last, "%.*s", (int)(bar - key), key);
            snprintf(path, sizeof path, "%s/%s.jinja", data_dir(), last);
            free(tmpl);
            tmpl = read_all(path, NULL);
            if (!tmpl) fail_msg("cannot read %s", path);
            templates++;
        }
        json_t *conv = json_object_get(json_object_get(convs, "conversations"), bar + 1);
        assert_non_null(conv);
        json_t *vars = conv_vars(conv, json_object_get(convs, "tools"));
        bad += !check_one(key, exp, tmpl, vars);
        json_decref(vars);
        n++;
    }
    free(tmpl);
    printf("jinja2 comparison: %d renderings of %d templates and %zu feature cases, %d differ\n", n, templates,
           json_array_size(features), bad);
    json_decref(convs);
    json_decref(features);
    json_decref(expected);
    assert_true(templates >= 8);
    assert_int_equal(bad, 0);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void expect_parse_error(const char *tmpl, const char *want) {
    char err[256];
    jinja_t *t = jinja_parse(tmpl, strlen(tmpl), NULL, err, sizeof err);
    if (t) { jinja_destroy(&t); fail_msg("parsed: %s", tmpl); }
    if (!strstr(err, want)) fail_msg("'%s': error '%s' lacks '%s'", tmpl, err, want);
}

static void test_parse_errors(void **st) {
    (void)st;
    expect_parse_error("{% if x %}never closed", "line 1:1");
    expect_parse_error("{% if x %}never closed", "endif");
    expect_parse_error("ok\n  {{ 1 + }}", "line 2:10");
    expect_parse_error("{{ 'unterminated }}", "unterminated string");
    expect_parse_error("{% for x in %}{% endfor %}", "line 1:13");
    expect_parse_error("{% endfor %}", "unexpected {% endfor %}");
    expect_parse_error("{% frobnicate %}", "unknown statement 'frobnicate'");
    expect_parse_error("{{ x", "missing '}}'");
    expect_parse_error("{# open comment", "unterminated comment");
    expect_parse_error("{{ a b }}", "expected '}}'");
    expect_parse_error("{{ x | }}", "expected a filter name");
    expect_parse_error("{% raw %}no end", "endraw");
    expect_parse_error("{{ \"\\x4\" }}", "bad \\x escape");
    expect_parse_error("{{ @ }}", "unexpected character '@'");
    /* nesting beyond max_depth is a parse error, not a stack overflow */
    char deep[4096] = "{{ ";
    for (int i = 0; i < 1000; i++) strcat(deep, "(");
    strcat(deep, "1");
    for (int i = 0; i < 1000; i++) strcat(deep, ")");
    strcat(deep, " }}");
    expect_parse_error(deep, "nested too deeply");
    char ifs[20000] = "";
    for (int i = 0; i < 500; i++) strcat(ifs, "{% if 1 %}");
    expect_parse_error(ifs, "nested too deeply");
}

static void expect_render_error(const char *tmpl, const char *vars_json, const char *want) {
    char err[256];
    json_t *vars = json_loads(vars_json, 0, NULL);
    assert_non_null(vars);
    char *out = render(tmpl, vars, err, sizeof err);
    json_decref(vars);
    if (out) fail_msg("'%s' rendered '%s'", tmpl, out);
    if (!strstr(err, want)) fail_msg("'%s': error '%s' lacks '%s'", tmpl, err, want);
}

static void test_render_errors(void **st) {
    (void)st;
    expect_render_error("{{ raise_exception('Roles must alternate') }}", "{}", "Roles must alternate");
    expect_render_error("a\n{{ x.y.z }}", "{}", "line 2: 'x' is undefined");
    expect_render_error("{{ 'a' + 1 }}", "{}", "unsupported operand");
    expect_render_error("{{ 1 / 0 }}", "{}", "division by zero");
    expect_render_error("{{ x | nosuchfilter }}", "{\"x\": 1}", "no filter named 'nosuchfilter'");
    expect_render_error("{{ x is nosuchtest }}", "{\"x\": 1}", "no test named 'nosuchtest'");
    expect_render_error("{% set d = {} %}{% set d.x = 1 %}", "{}", "non-namespace");
    expect_render_error("{{ 1 < 'a' }}", "{}", "not supported between");
    expect_render_error("{{ nosuch() }}", "{}", "'nosuch' is undefined");
    expect_render_error("{% for a, b in [1] %}{% endfor %}", "{}", "cannot unpack");
    expect_render_error("{{ m }}{% macro m() %}{% endmacro %}{{ m }}", "{}", "cannot print a macro");
    /* raise_exception's message is the whole error, as HF's TemplateError */
    char err[256];
    json_t *vars = json_pack("{s:[{s:s}]}", "messages", "role", "system");
    char *out = render("{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}",
                       vars, err, sizeof err);
    json_decref(vars);
    assert_null(out);
    assert_string_equal(err, "System role not supported");
    /* *raised tells a refusal from a failure, whatever the message says */
    const char *const srcs[2] = {"{{ raise_exception('line 1: looks like an error') }}", "{{ 1 // 0 }}"};
    for (int k = 0; k < 2; k++) {
        jinja_t *t = jinja_parse(srcs[k], strlen(srcs[k]), NULL, err, sizeof err);
        assert_non_null(t);
        int raised = -1;
        assert_null(jinja_render(t, NULL, NULL, &raised, err, sizeof err));
        assert_int_equal(raised, k == 0);
        jinja_destroy(&t);
    }
}

static char *render_limited(const char *tmpl, size_t max_output, long max_steps, char *err, size_t errlen) {
    jinja_opts_t o;
    jinja_opts_default(&o);
    o.max_output = max_output;
    o.max_alloc = 8 * max_output;
    o.max_steps = max_steps;
    o.max_depth = 32;
    jinja_t *t = jinja_parse(tmpl, strlen(tmpl), &o, err, errlen);
    if (!t) return NULL;
    char *out = jinja_render(t, NULL, NULL, NULL, err, errlen);
    jinja_destroy(&t);
    return out;
}

static void expect_limit(const char *tmpl, const char *want) {
    char err[256];
    char *out = render_limited(tmpl, 1 << 20, 1000000, err, sizeof err);
    if (out) fail_msg("'%s' rendered %zu bytes", tmpl, strlen(out));
    if (!strstr(err, want)) fail_msg("'%s': error '%s' lacks '%s'", tmpl, err, want);
}

static void test_limits(void **st) {
    (void)st;
    expect_limit("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "steps");
    expect_limit("{% for i in range(100000) %}{{ 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' }}{% endfor %}", "output is longer");
    expect_limit("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                 "bytes");
    expect_limit("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "nested too deeply");
    expect_limit("{{ range(100000000) | length }}", "range longer");
    expect_limit("{{ 'x' * 100000000 }}", "output limit");
    expect_limit("{{ [1, 2, 3] * 100000000 }}", "output limit");
    /* within the limits the same shapes render */
    char err[256];
    /* an empty sequence repeated a billion times is empty at once (fuzz_jinja found it spinning) */
    char *empty = render_limited("{{ '' * 888888888 }}|{{ [] * 888888888 }}|{{ -4 }}", 1 << 20, 1000000, err, sizeof err);
    assert_non_null(empty);
    assert_string_equal(empty, "|[]|-4");
    free(empty);
    char *out = render_limited("{% for i in range(3) %}{{ i }}{% endfor %}", 1 << 20, 1000000, err, sizeof err);
    assert_non_null(out);
    assert_string_equal(out, "012");
    free(out);
}

/* an empty template, NULL vars, a template of only whitespace control */
static void test_edges(void **st) {
    (void)st;
    char err[256];
    char *out = render("", NULL, err, sizeof err);
    assert_non_null(out);
    assert_string_equal(out, "");
    free(out);
    out = render("x\n", NULL, err, sizeof err);   /* one trailing newline is dropped, as Jinja's default */
    assert_string_equal(out, "x");
    free(out);
    out = render("  {%- if true -%}  \n  {%- endif -%}  y", NULL, err, sizeof err);
    assert_string_equal(out, "y");
    free(out);
    jinja_opts_t o;
    jinja_opts_default(&o);
    o.trim_blocks = o.lstrip_blocks = 0;   /* Jinja's own defaults */
    const char *src = "  {% if true %}\nA\n  {% endif %}\n";
    jinja_t *t = jinja_parse(src, strlen(src), &o, err, sizeof err);
    assert_non_null(t);
    out = jinja_render(t, NULL, NULL, NULL, err, sizeof err);
    assert_string_equal(out, "  \nA\n  ");
    free(out);
    jinja_destroy(&t);
    jinja_destroy(&t);   /* NULL-safe */
}

/* ---- chat.c: the model's template through the interpreter --------------------------------- */

/* a generated vocabulary with tmpl as tokenizer.chat_template (NULL: none), loaded */
static tokenizer_t *chat_vocab(const char *tmpl, char *path) {
    gguf_writer_t *w = gguf_writer_new();
    char err[256] = "";
    assert_non_null(w);
    assert_int_equal(vocab_generate(w, 280, 7, err, sizeof err), 0);
    gguf_writer_set_str(w, "general.architecture", "bitnet-b1.58");
    if (tmpl) gguf_writer_set_str(w, "tokenizer.chat_template", tmpl);
    strcpy(path, "/tmp/tern_jinja_XXXXXX");
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
    return t;
}

static char *apply(const tokenizer_t *t, const chat_msg_t *m, int n, const char *const *ids, int add_gen, int *rc) {
    static char out[4096];
    *rc = chat_apply_ex(t, m, n, ids, add_gen, out, sizeof out);
    return *rc >= 0 ? out : NULL;
}

static void test_chat_integration(void **st) {
    (void)st;
    char path[64], err[256];
    const chat_msg_t m[4] = {{"system", "You are helpful."}, {"user", " Hi there \n"}, {"assistant", "Hello."}, {"user", "More"}};
    /* BitNet b1.58 2B-4T's own template (bos_token first) in the GGUF: the family formatter and the
     * interpreter give the same prompt (the BOS text dropped when the tokenizer adds BOS itself) */
    char *tmpl = NULL;
    {
        char p[1200];
        snprintf(p, sizeof p, "%s/bitnet-b1.58-2B-4T.jinja", data_dir());
        tmpl = read_all(p, NULL);
        assert_non_null(tmpl);
    }
    tokenizer_t *t = chat_vocab(tmpl, path);
    assert_string_equal(chat_template_name(t), "bitnet");
    int rc;
    char family[4096];
    snprintf(family, sizeof family, "%s", apply(t, m, 4, NULL, 1, &rc));
    assert_true(rc > 0);
    assert_int_equal(chat_template_set(t, NULL, 1, err, sizeof err), 0);
    assert_string_equal(chat_template_name(t), "jinja");
    char *got = apply(t, m, 4, NULL, 1, &rc);
    assert_non_null(got);
    if (tokenizer_add_bos(t)) assert_string_equal(got, family);
    else assert_true(strlen(got) > strlen(family) && !strcmp(got + strlen(got) - strlen(family), family));
    assert_int_equal(chat_apply(t, m, 4, NULL, 0), rc);   /* the size query agrees */
    got = apply(t, m, 4, NULL, 0, &rc);                  /* add_generation_prompt false */
    assert_true(rc > 0 && strstr(got, "Assistant: ") && strcmp(got + strlen(got) - 11, "Assistant: ") != 0);
    /* a family name still picks the formatter, also with --jinja */
    assert_int_equal(chat_template_set(t, "chatml", 1, err, sizeof err), 0);
    assert_string_equal(chat_template_name(t), "chatml");
    /* a template text: tool_call_id reaches it; raise_exception refuses the conversation */
    assert_int_equal(chat_template_set(t, "{% for x in messages %}{{ x.role }}:{{ x.tool_call_id }};{% endfor %}"
                                          "{% if add_generation_prompt %}>{% endif %}", 1, err, sizeof err), 0);
    const chat_msg_t tm[2] = {{"user", "q"}, {"tool", "42"}};
    const char *ids[2] = {NULL, "call_1"};
    got = apply(t, tm, 2, ids, 1, &rc);
    assert_non_null(got);
    assert_string_equal(got, "user:;tool:call_1;>");
    assert_int_equal(chat_template_set(t, "{{ raise_exception('Roles must alternate') }}", 1, err, sizeof err), 0);
    assert_null(apply(t, m, 4, NULL, 1, &rc));
    assert_int_equal(rc, TERN_EINVAL);
    assert_non_null(strstr(chat_error(), "Roles must alternate"));
    assert_int_equal(chat_template_set(t, "{{ 1 + 'a' }}", 1, err, sizeof err), 0);   /* a template bug */
    assert_null(apply(t, m, 4, NULL, 1, &rc));
    assert_int_equal(rc, TERN_EFORMAT);
    assert_non_null(strstr(chat_error(), "line 1"));
    /* errors at set time: a parse error names line:col; a text tern cannot match without --jinja */
    assert_true(chat_template_set(t, "ok\n{% if x %}", 1, err, sizeof err) < 0);
    assert_non_null(strstr(err, "line 2:"));
    assert_true(chat_template_set(t, "{{ unknown }}", 0, err, sizeof err) < 0);
    assert_non_null(strstr(err, "--jinja"));
    tokenizer_destroy(&t);
    free(tmpl);
    /* --jinja on a model without a template */
    t = chat_vocab(NULL, path);
    assert_true(chat_template_set(t, NULL, 1, err, sizeof err) < 0);
    assert_non_null(strstr(err, "no chat template"));
    assert_int_equal(chat_template_set(t, NULL, 0, err, sizeof err), 0);   /* without --jinja: as before */
    tokenizer_destroy(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_jinja2),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_render_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_chat_integration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
