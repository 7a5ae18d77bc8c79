/* toolfmt: see toolfmt.h. The grammar is the tools' JSON Schema (json_schema.c) renamed from
 * root to tool_body (json_schema.c names rules [a-zA-Z0-9-] only, so the underscore cannot
 * collide) with the format's literal markers around it. The parsers look for the markers with
 * memmem and hand the JSON between them to jansson, which stops at n and checks UTF-8; every
 * loop advances through text or stops at TOOLFMT_MAX_CALLS. */
#define _GNU_SOURCE   /* memmem */
#include "coordinator/toolfmt.h"
#include "coordinator/grammar.h"
#include "coordinator/json_schema.h"
#include "core/strbuf.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const NAMES[] = {"generic", "hermes", "llama3", "mistral"};

int toolfmt_detect(const char *tmpl) {
    if (!tmpl) return TOOLFMT_GENERIC;
    /* llama.cpp's order: Hermes first (Qwen 2.5's template also mentions other markers) */
    if (strstr(tmpl, "<tool_call>")) return TOOLFMT_HERMES;
    if (strstr(tmpl, "<|start_header_id|>ipython<|end_header_id|>") || strstr(tmpl, "<|python_tag|>"))
        return TOOLFMT_LLAMA3;
    if (strstr(tmpl, "[TOOL_CALLS]")) return TOOLFMT_MISTRAL;
    return TOOLFMT_GENERIC;
}

const char *toolfmt_name(int fmt) { return fmt > 0 && fmt <= TOOLFMT_MISTRAL ? NAMES[fmt] : NAMES[0]; }

const char *toolfmt_trigger(int fmt) {
    return fmt == TOOLFMT_HERMES ? "<tool_call>" : fmt == TOOLFMT_MISTRAL ? "[TOOL_CALLS]" : NULL;
}

/* ---- grammar ---------------------------------------------------------------------------- */

/* one call of tool c ({"name", "params"}) as a JSON Schema in fmt's shape; NULL: OOM */
static json_t *call_schema(int fmt, json_t *c) {
    json_t *name = json_object_get(c, "name"), *params = json_object_get(c, "params");
    if (fmt == TOOLFMT_MISTRAL)   /* Mistral's ids are 9 characters (its templates check) */
        return json_pack("{s:s, s:{s:{s:O}, s:O, s:{s:s, s:i, s:i}}, s:[s,s,s]}", "type", "object", "properties",
                         "name", "const", name, "arguments", params, "id", "type", "string", "minLength", 9,
                         "maxLength", 9, "required", "name", "arguments", "id");
    const char *args = fmt == TOOLFMT_LLAMA3 ? "parameters" : "arguments";
    return json_pack("{s:s, s:{s:{s:O}, s:O}, s:[s,s]}", "type", "object", "properties", "name", "const", name, args,
                     params, "required", "name", args);
}

/* the schema of what follows the format's marker: one call of any tool, or mistral's array */
static json_t *body_schema(int fmt, json_t *calls, int max_calls) {
    json_t *any = json_array(), *c;
    size_t i;
    json_array_foreach(calls, i, c) {
        if (!any || json_array_append_new(any, call_schema(fmt, c)) < 0) { json_decref(any); return NULL; }
    }
    if (!any) return NULL;
    if (fmt == TOOLFMT_MISTRAL)
        return json_pack("{s:s, s:{s:o}, s:i, s:i}", "type", "array", "items", "anyOf", any, "minItems", 1, "maxItems",
                         max_calls);
    return json_pack("{s:o}", "anyOf", any);
}

/* gbnf with its "root ::=" rule renamed tool_body (taken) → the format's grammar, or NULL */
static char *wrap(int fmt, char *gbnf, int max_calls) {
    char *root = !strncmp(gbnf, "root ::= ", 9) ? gbnf : strstr(gbnf, "\nroot ::= ");
    if (!root) { free(gbnf); return NULL; }
    if (root != gbnf) root++;
    strbuf_t b = {0};
    strbuf_add(&b, gbnf, (size_t)(root - gbnf));
    strbuf_puts(&b, "tool_body");
    strbuf_puts(&b, root + 4);
    free(gbnf);
    if (b.n && b.p[b.n - 1] != '\n') strbuf_puts(&b, "\n");
    if (fmt == TOOLFMT_HERMES) {
        strbuf_puts(&b, "tool_call ::= \"<tool_call>\\n\" tool_body \"\\n</tool_call>\"\nroot ::= tool_call");
        if (max_calls > 1) strbuf_printf(&b, " (\"\\n\" tool_call){0,%d}", max_calls - 1);
        strbuf_puts(&b, "\n");
    } else if (fmt == TOOLFMT_MISTRAL) {
        strbuf_puts(&b, "root ::= \"[TOOL_CALLS]\" tool_body\n");
    } else {
        strbuf_puts(&b, "root ::= tool_body\n");
    }
    if (b.err) { free(b.p); return NULL; }
    return b.p;
}

char *toolfmt_grammar(int fmt, void *callsv, int max_calls, char *err, size_t errlen) {
    json_t *calls = callsv;
    if (fmt <= TOOLFMT_GENERIC || fmt > TOOLFMT_MISTRAL || !json_is_array(calls) || !json_array_size(calls)) {
        snprintf(err, errlen, "no native tool-call format or no tools");
        return NULL;
    }
    if (max_calls < 1 || fmt == TOOLFMT_LLAMA3) max_calls = 1;   /* Llama 3.x calls one tool a turn */
    json_t *schema = body_schema(fmt, calls, max_calls);
    char *txt = schema ? json_dumps(schema, JSON_COMPACT) : NULL;
    json_decref(schema);
    if (!txt) { snprintf(err, errlen, "out of memory"); return NULL; }
    char *gbnf = json_schema_to_gbnf(txt, strlen(txt), err, errlen);
    free(txt);
    if (!gbnf) return NULL;
    char *out = wrap(fmt, gbnf, max_calls);
    if (!out) { snprintf(err, errlen, "out of memory"); return NULL; }
    grammar_t *g = grammar_parse(out, strlen(out), NULL, err, errlen);
    if (!g) { free(out); return NULL; }
    grammar_destroy(&g);
    return out;
}

/* ---- parsing ---------------------------------------------------------------------------- */

static int name_ok(json_t *v) {   /* OpenAI's function names: [a-zA-Z0-9_-]{1,64} */
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (!s || n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", s[i]) || !s[i]) return 0;
    return 1;
}

/* o as a call {"name", "arguments"(, "id")}: arguments under key (or alt), an object or a JSON
 * text of one; NULL when o is not a call (or OOM) */
static json_t *call_of(json_t *o, const char *key, const char *alt) {
    json_t *name = json_object_get(o, "name"), *a = json_object_get(o, key), *id = json_object_get(o, "id");
    if (!a && alt) a = json_object_get(o, alt);
    if (!json_is_object(o) || !name_ok(name)) return NULL;
    json_t *args = json_is_object(a) ? json_incref(a)
                   : json_is_string(a) ? json_loadb(json_string_value(a), json_string_length(a), 0, NULL) : NULL;
    if (!json_is_object(args)) { json_decref(args); return NULL; }
    json_t *c = json_pack("{s:O, s:o}", "name", name, "arguments", args);
    if (c && json_is_string(id) && json_string_length(id) <= 256 && json_object_set(c, "id", id) < 0) {
        json_decref(c);
        return NULL;
    }
    return c;
}

/* one JSON value at text[0..n) (leading whitespace skipped); *used: bytes up to its end */
static json_t *json_at(const char *text, size_t n, size_t *used) {
    json_error_t je;
    json_t *v = json_loadb(text, n, JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &je);
    *used = v ? (size_t)je.position : 0;
    if (*used > n) *used = n;
    return v;
}

static int add_call(json_t *calls, json_t *c) {
    return c && json_array_size(calls) < TOOLFMT_MAX_CALLS && json_array_append_new(calls, c) == 0 ? 0 : (json_decref(c), -1);
}

/* hermes: <tool_call> JSON </tool_call> blocks (the last close may be missing: cut short) */
static int parse_hermes(const char *t, size_t n, json_t *calls, strbuf_t *rest) {
    static const char OPEN[] = "<tool_call>", CLOSE[] = "</tool_call>";
    size_t at = 0;
    const char *p;
    while (at < n && (p = memmem(t + at, n - at, OPEN, sizeof OPEN - 1))) {
        strbuf_add(rest, t + at, (size_t)(p - (t + at)));
        size_t b = (size_t)(p - t) + sizeof OPEN - 1;
        const char *q = memmem(t + b, n - b, CLOSE, sizeof CLOSE - 1);
        size_t e = q ? (size_t)(q - t) : n;
        json_t *o = json_loadb(t + b, e - b, 0, NULL);
        int rc = add_call(calls, call_of(o, "arguments", NULL));
        json_decref(o);
        if (rc < 0) return -1;
        at = q ? e + sizeof CLOSE - 1 : n;
    }
    if (at < n) strbuf_add(rest, t + at, n - at);
    return 0;
}

/* llama3: the reply starts with the call object (after <|python_tag|>); what follows is content */
static int parse_llama3(const char *t, size_t n, json_t *calls, strbuf_t *rest) {
    static const char TAG[] = "<|python_tag|>";
    size_t at = 0, used;
    while (at < n && strchr(" \t\r\n", t[at])) at++;
    if (n - at >= sizeof TAG - 1 && !memcmp(t + at, TAG, sizeof TAG - 1)) at += sizeof TAG - 1;
    while (at < n && strchr(" \t\r\n", t[at])) at++;
    if (at >= n || t[at] != '{') return -1;
    json_t *o = json_at(t + at, n - at, &used);
    json_t *type = json_object_get(o, "type");
    int rc = type && !(json_is_string(type) && !strcmp(json_string_value(type), "function"))
                 ? -1 : add_call(calls, call_of(o, "parameters", "arguments"));
    json_decref(o);
    if (rc < 0) return -1;
    strbuf_add(rest, t + at + used, n - at - used);
    return 0;
}

/* mistral: content, then [TOOL_CALLS] and a JSON array of calls, then content. Where the marker
 * is a control token (Mistral Nemo's vocabulary) the text never shows it: a reply that opens
 * with the array ("[{") is read as the calls it would have followed. */
static int parse_mistral(const char *t, size_t n, json_t *calls, strbuf_t *rest) {
    static const char TAG[] = "[TOOL_CALLS]";
    const char *p = memmem(t, n, TAG, sizeof TAG - 1);
    size_t b, used;
    if (p) {
        strbuf_add(rest, t, (size_t)(p - t));
        b = (size_t)(p - t) + sizeof TAG - 1;
    } else {
        for (b = 0; b < n && strchr(" \t\r\n", t[b]) && t[b]; b++) {}
        if (n - b < 2 || t[b] != '[' || t[b + 1] != '{') return -1;
    }
    json_t *a = json_at(t + b, n - b, &used), *o;
    size_t i;
    int rc = json_is_array(a) && json_array_size(a) ? 0 : -1;
    json_array_foreach(a, i, o) {
        if (rc < 0 || (rc = add_call(calls, call_of(o, "arguments", NULL))) < 0) break;
    }
    json_decref(a);
    if (rc < 0) return -1;
    strbuf_add(rest, t + b + used, n - b - used);
    return 0;
}

/* text[0..n) trimmed into a malloc'd string (NULL when empty or OOM) */
static char *trimmed(const char *s, size_t n, size_t *len) {
    while (n && strchr(" \t\r\n", *s) && *s) { s++; n--; }
    while (n && strchr(" \t\r\n", s[n - 1]) && s[n - 1]) n--;
    *len = n;
    char *o = n ? malloc(n + 1) : NULL;
    if (o) { memcpy(o, s, n); o[n] = 0; }
    return o;
}

void *toolfmt_parse(int fmt, const char *text, size_t n, char **content, size_t *content_len) {
    json_t *calls = json_array();
    strbuf_t rest = {0};
    int rc = !calls ? -1
             : fmt == TOOLFMT_HERMES ? parse_hermes(text, n, calls, &rest)
             : fmt == TOOLFMT_LLAMA3 ? parse_llama3(text, n, calls, &rest)
             : fmt == TOOLFMT_MISTRAL ? parse_mistral(text, n, calls, &rest) : -1;
    if (rc < 0 || rest.err || !json_array_size(calls)) {   /* no call: all of it is content */
        json_decref(calls);
        free(rest.p);
        *content = trimmed(text, n, content_len);
        return NULL;
    }
    *content = trimmed(rest.p ? rest.p : "", rest.n, content_len);
    free(rest.p);
    return calls;
}
