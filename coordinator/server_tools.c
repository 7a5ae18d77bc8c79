/* server_tools: see server_tools.h. The tools are checked one by one (each error names
 * tools[i] or tool_choice), each tool's parameters schema is converted on its own first so a
 * refused keyword is blamed on its tool, then the whole reply schema is built with jansson and
 * converted once into r->grammar. The system message text is built here and merged into
 * r->msgs. With a template's native format (toolfmt.h) the tools go to the template instead
 * (r->tools_json) and the grammar is that format's. Untrusted input: every field is type- and
 * size-checked before use. */
#include "coordinator/server_tools.h"
#include "coordinator/grammar.h"
#include "coordinator/json_schema.h"
#include "coordinator/toolfmt.h"
#include "coordinator/toolstream.h"
#include "core/err.h"
#include "core/strbuf.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD(e, param, ...) server_err_set((e), 400, "invalid_request_error", "invalid_value", (param), __VA_ARGS__)
#define OOM(e) server_err_set((e), 500, "server_error", NULL, NULL, "out of memory")

static void str_json(strbuf_t *b, json_t *v) {   /* v as compact JSON text */
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!t) { b->err = STRBUF_NOMEM; return; }
    strbuf_puts(b, t);
    free(t);
}

int server_tools_name_ok(const char *s, size_t n) {
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* one tool: name and description borrowed from the request's JSON, params a held reference */
typedef struct tool { const char *name, *desc; json_t *params; } tool_t;

/* 1 when v is a string of at most max bytes with no NUL inside */
static int text_ok(json_t *v, size_t max) {
    return json_is_string(v) && json_string_length(v) <= max && strlen(json_string_value(v)) == json_string_length(v);
}

/* tools[i]: {"type": "function", "function": {"name", "description"?, "parameters"?}} → *t
 * (parameters absent: {"type": "object"}, any object). 0 or <0 with e naming tools[i]. */
static int tool_parse(json_t *el, int i, tool_t *t, server_err_t *e) {
    char p[48];
    snprintf(p, sizeof p, "tools[%d]", i);
    json_t *type = json_object_get(el, "type"), *fn = json_object_get(el, "function");
    if (!json_is_object(el) || !json_is_string(type) || strcmp(json_string_value(type), "function") || !json_is_object(fn))
        return BAD(e, p, "'%s' must be {\"type\": \"function\", \"function\": {...}}", p);
    json_t *name = json_object_get(fn, "name"), *desc = json_object_get(fn, "description"),
           *par = json_object_get(fn, "parameters");
    if (!json_is_string(name) || !server_tools_name_ok(json_string_value(name), json_string_length(name)))
        return BAD(e, p, "%s.function.name must match [a-zA-Z0-9_-]{1,64}", p);
    if (desc && !json_is_null(desc) && !text_ok(desc, SERVER_MAX_TOOL_TEXT))
        return BAD(e, p, "%s.function.description must be a string of at most %d bytes", p, SERVER_MAX_TOOL_TEXT);
    if (par && !json_is_null(par) && !json_is_object(par))
        return BAD(e, p, "%s.function.parameters must be a JSON Schema object", p);
    t->name = json_string_value(name);
    t->desc = json_is_string(desc) ? json_string_value(desc) : NULL;
    t->params = par && !json_is_null(par) ? json_incref(par) : json_pack("{s:s}", "type", "object");
    return t->params ? 0 : OOM(e);
}

/* tool i's parameters alone through the converter, so that a refusal names its tool */
static int params_check(const tool_t *t, int i, server_err_t *e) {
    char *txt = json_dumps(t->params, JSON_COMPACT), why[200], p[48];
    if (!txt) return OOM(e);
    char *g = json_schema_to_gbnf(txt, strlen(txt), why, sizeof why);
    free(txt);
    if (g) { free(g); return 0; }
    snprintf(p, sizeof p, "tools[%d].function.parameters", i);
    return BAD(e, p, "%s: %s", p, why);
}

/* "tools" → t[0..*n) (each a reference the caller drops, also on failure); names unique */
static int tools_parse(json_t *tools, tool_t *t, int *n, server_err_t *e) {
    *n = 0;
    if (!tools || json_is_null(tools)) return 0;
    if (!json_is_array(tools)) return BAD(e, "tools", "'tools' must be an array");
    if (json_array_size(tools) > SERVER_MAX_TOOLS) return BAD(e, "tools", "at most %d tools", SERVER_MAX_TOOLS);
    size_t i;
    json_t *el;
    json_array_foreach(tools, i, el) {
        int rc = tool_parse(el, (int)i, &t[i], e);
        if (rc < 0) return rc;
        *n = (int)i + 1;
        for (size_t k = 0; k < i; k++)
            if (!strcmp(t[k].name, t[i].name)) {
                char p[48];
                snprintf(p, sizeof p, "tools[%zu]", i);
                return BAD(e, p, "tool name '%s' is given twice", t[i].name);
            }
        if ((rc = params_check(&t[i], (int)i, e)) < 0) return rc;
    }
    return 0;
}

/* "tool_choice" → *mode (SERVER_TOOLS_*), *named the chosen tool's index with NAMED */
static int choice_parse(json_t *tc, const tool_t *t, int n, int *mode, int *named, server_err_t *e) {
    const char *P = "tool_choice";
    *mode = n ? SERVER_TOOLS_AUTO : SERVER_TOOLS_NONE;
    *named = -1;
    if (!tc || json_is_null(tc)) return 0;
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        if (!strcmp(s, "none")) *mode = SERVER_TOOLS_NONE;
        else if (!strcmp(s, "required")) *mode = SERVER_TOOLS_REQUIRED;
        else if (strcmp(s, "auto") != 0)
            return BAD(e, P, "'tool_choice' must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}");
    } else {
        json_t *type = json_object_get(tc, "type"), *fn = json_object_get(tc, "function");
        json_t *name = json_object_get(fn, "name");
        if (!json_is_object(tc) || !json_is_string(type) || strcmp(json_string_value(type), "function") ||
            !json_is_string(name) || !server_tools_name_ok(json_string_value(name), json_string_length(name)))
            return BAD(e, P, "'tool_choice' must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}");
        for (int k = 0; k < n; k++)
            if (!strcmp(t[k].name, json_string_value(name))) *named = k;
        if (*named < 0) return BAD(e, P, "tool_choice names '%s', which is not one of 'tools'", json_string_value(name));
        *mode = SERVER_TOOLS_NAMED;
    }
    if (*mode == SERVER_TOOLS_REQUIRED && n == 0) return BAD(e, P, "tool_choice 'required' needs 'tools'");
    return 0;
}

/* one call of tool t: {"name": NAME, "arguments": PARAMS} */
static json_t *call_schema(const tool_t *t) {
    return json_pack("{s:s, s:{s:{s:s}, s:O}, s:[s,s]}", "type", "object", "properties", "name", "const", t->name,
                     "arguments", t->params, "required", "name", "arguments");
}

/* the reply schema of one tool: {"tool_call": CALL} */
static json_t *tool_schema(const tool_t *t) {
    return json_pack("{s:s, s:{s:o}, s:[s]}", "type", "object", "properties", "tool_call", call_schema(t), "required",
                     "tool_call");
}

/* parallel calls: {"tool_calls": [CALL of any allowed tool, ...]} (1..SERVER_MAX_PARALLEL) */
static json_t *calls_schema(const tool_t *t, int n, int mode, int named) {
    json_t *any = json_array();
    for (int k = 0; any && k < n; k++)
        if ((mode != SERVER_TOOLS_NAMED || k == named) && json_array_append_new(any, call_schema(&t[k])) < 0) {
            json_decref(any);
            return NULL;
        }
    return any ? json_pack("{s:s, s:{s:{s:s, s:{s:o}, s:i, s:i}}, s:[s]}", "type", "object", "properties", "tool_calls",
                           "type", "array", "items", "anyOf", any, "minItems", 1, "maxItems", SERVER_MAX_PARALLEL,
                           "required", "tool_calls")
               : NULL;
}

/* {"anyOf": [the allowed tools' schemas, (auto) {"response": string}]} → GBNF in r->grammar */
static int grammar_build(server_req_t *r, const tool_t *t, int n, int mode, int named, int parallel, server_err_t *e) {
    json_t *any = json_array();
    int bad = !any;
    if (parallel && !bad) bad = json_array_append_new(any, calls_schema(t, n, mode, named)) < 0;
    for (int k = 0; k < n && !bad && !parallel; k++)
        if (mode != SERVER_TOOLS_NAMED || k == named) bad = json_array_append_new(any, tool_schema(&t[k])) < 0;
    if (mode == SERVER_TOOLS_AUTO && !bad)
        bad = json_array_append_new(any, json_pack("{s:s, s:{s:{s:s}}, s:[s]}", "type", "object", "properties",
                                                   "response", "type", "string", "required", "response")) < 0;
    json_t *root = bad ? NULL : json_pack("{s:O}", "anyOf", any);
    json_decref(any);
    char *txt = root ? json_dumps(root, JSON_COMPACT) : NULL, why[200];
    json_decref(root);
    if (!txt) return OOM(e);
    r->grammar = json_schema_to_gbnf(txt, strlen(txt), why, sizeof why);
    free(txt);
    if (!r->grammar) return BAD(e, "tools", "tools: %s", why);
    grammar_t *g = grammar_parse(r->grammar, strlen(r->grammar), NULL, why, sizeof why);
    if (!g) return BAD(e, "tools", "tools: grammar: %s", why);
    grammar_destroy(&g);
    return 0;
}

/* the system text: the allowed tools and the reply format (malloc'd; NULL: OOM) */
static char *system_text(const tool_t *t, int n, int mode, int named, int parallel) {
    strbuf_t b = {0};
    strbuf_puts(&b, "You have access to the following tools:\n");
    for (int k = 0; k < n; k++) {
        if (mode == SERVER_TOOLS_NAMED && k != named) continue;
        strbuf_puts(&b, "- ");
        strbuf_puts(&b, t[k].name);
        if (t[k].desc && *t[k].desc) { strbuf_puts(&b, ": "); strbuf_puts(&b, t[k].desc); }
        strbuf_puts(&b, "\n  parameters (JSON Schema): ");
        str_json(&b, t[k].params);
        strbuf_puts(&b, "\n");
    }
    if (parallel)
        strbuf_puts(&b, "\nReply with exactly one JSON object and nothing else: {\"tool_calls\": [{\"name\": \"<tool name>\", "
                     "\"arguments\": {<the arguments, following the tool's parameters>}}, ...]} to call one or more tools");
    else
        strbuf_puts(&b, "\nReply with exactly one JSON object and nothing else: {\"tool_call\": {\"name\": \"<tool name>\", "
                     "\"arguments\": {<the arguments, following the tool's parameters>}}} to call a tool");
    if (mode == SERVER_TOOLS_AUTO) strbuf_puts(&b, ", or {\"response\": \"<your reply>\"} to answer directly.");
    else if (mode == SERVER_TOOLS_REQUIRED) strbuf_puts(&b, ". You must call one of the tools.");
    else { strbuf_puts(&b, ". You must call the tool "); strbuf_puts(&b, t[named].name); strbuf_puts(&b, "."); }
    if (b.err) { free(b.p); return NULL; }
    return b.p;
}

/* text (taken) into r->msgs: after the first message's content when that is a system message
 * (a blank line between), else as a new system message in front */
static int system_merge(server_req_t *r, char *text, server_err_t *e) {
    if (r->n_msgs > 0 && !strcmp(r->msgs[0].role, "system")) {
        strbuf_t b = {0};
        strbuf_puts(&b, r->msgs[0].content);
        if (b.n) strbuf_puts(&b, "\n\n");
        strbuf_puts(&b, text);
        free(text);
        if (b.err) { free(b.p); return OOM(e); }
        free((char *)r->msgs[0].content);
        r->msgs[0].content = b.p;
        return 0;
    }
    chat_msg_t *m = realloc(r->msgs, (size_t)(r->n_msgs + 1) * sizeof *m);
    char *role = strdup("system");
    if (m) r->msgs = m;
    char **ids = r->tool_ids && m ? realloc(r->tool_ids, (size_t)(r->n_msgs + 1) * sizeof *ids) : NULL;
    if (ids) r->tool_ids = ids;
    void **ex = r->msg_extra && m ? realloc(r->msg_extra, (size_t)(r->n_msgs + 1) * sizeof *ex) : NULL;
    if (ex) r->msg_extra = ex;
    if (!m || !role || (r->tool_ids && !ids) || (r->msg_extra && !ex)) { free(role); free(text); return OOM(e); }
    memmove(r->msgs + 1, r->msgs, (size_t)r->n_msgs * sizeof *m);
    if (ids) { memmove(ids + 1, ids, (size_t)r->n_msgs * sizeof *ids); ids[0] = NULL; }
    if (ex) { memmove(ex + 1, ex, (size_t)r->n_msgs * sizeof *ex); ex[0] = NULL; }
    r->msgs[0] = (chat_msg_t){role, text};
    r->n_msgs++;
    return 0;
}

/* the tools' constraint and system message once the mode is known */
static int tools_apply(server_req_t *r, json_t *root, const tool_t *t, int n, int mode, int named, int parallel,
                       server_err_t *e) {
    static const char *const other[] = {"response_format", "grammar", "json_schema"};
    for (int k = 0; k < 3; k++) {
        json_t *v = json_object_get(root, other[k]);
        if (v && !json_is_null(v)) return BAD(e, other[k], "'%s' cannot be used with 'tools'", other[k]);
    }
    free(r->grammar);   /* the server's own grammar never applies here; the request's was refused above */
    r->grammar = NULL;
    int rc = grammar_build(r, t, n, mode, named, parallel, e);
    if (rc < 0) return rc;
    char *text = system_text(t, n, mode, named, parallel);
    if (!text) return OOM(e);
    return system_merge(r, text, e);
}

/* native formats: the template lists the tools (r->tools_json); "required" and a named choice
 * hold the reply to the format's calls; "auto" is free text, with a lazy grammar (llama.cpp's
 * trigger) where the format has a marker that opens a call: from the marker on, the calls
 * follow the tools' schemas. Llama 3.x's calls open the reply with no marker: free, parsed after. */
static int tools_apply_native(server_req_t *r, json_t *root, const tool_t *t, int n, int mode, int named, int parallel,
                              server_err_t *e) {
    static const char *const other[] = {"response_format", "grammar", "json_schema"};
    for (int k = 0; k < 3; k++) {
        json_t *v = json_object_get(root, other[k]);
        if (v && !json_is_null(v)) return BAD(e, other[k], "'%s' cannot be used with 'tools'", other[k]);
    }
    free(r->grammar);
    r->grammar = NULL;
    r->tools_json = json_incref(json_object_get(root, "tools"));
    const char *trigger = mode == SERVER_TOOLS_AUTO ? toolfmt_trigger(r->tool_fmt) : NULL;
    if (mode == SERVER_TOOLS_AUTO && !trigger) return 0;
    if (trigger && !(r->grammar_trigger = strdup(trigger))) return OOM(e);
    json_t *calls = json_array();
    for (int k = 0; calls && k < n; k++)
        if ((mode != SERVER_TOOLS_NAMED || k == named) &&
            json_array_append_new(calls, json_pack("{s:s, s:O}", "name", t[k].name, "params", t[k].params)) < 0) {
            json_decref(calls);
            calls = NULL;
        }
    if (!calls) return OOM(e);
    char why[200];
    r->grammar = toolfmt_grammar(r->tool_fmt, calls, parallel ? SERVER_MAX_PARALLEL : 1, why, sizeof why);
    json_decref(calls);
    return r->grammar ? 0 : BAD(e, "tools", "tools: %s", why);
}

int server_tools_parse(server_req_t *r, void *rootv, server_err_t *e) {
    json_t *root = rootv, *ptc = json_object_get(root, "parallel_tool_calls");
    tool_t t[SERVER_MAX_TOOLS];
    int n = 0, mode = SERVER_TOOLS_NONE, named = -1;
    /* parallel_tool_calls (default false, as llama.cpp's): true lets a reply hold several calls */
    int rc = ptc && !json_is_null(ptc) && !json_is_boolean(ptc)
                 ? BAD(e, "parallel_tool_calls", "'parallel_tool_calls' must be true or false") : 0;
    int parallel = json_is_true(ptc);
    if (rc == 0) rc = tools_parse(json_object_get(root, "tools"), t, &n, e);
    if (rc == 0) rc = choice_parse(json_object_get(root, "tool_choice"), t, n, &mode, &named, e);
    if (rc == 0 && mode != SERVER_TOOLS_NONE)
        rc = r->tool_fmt != TOOLFMT_GENERIC ? tools_apply_native(r, root, t, n, mode, named, parallel, e)
                                            : tools_apply(r, root, t, n, mode, named, parallel, e);
    if (rc == 0) r->tools = mode;
    for (int k = 0; k < n; k++) json_decref(t[k].params);
    return rc;
}

/* call i of an assistant message's tool_calls → {"name", "arguments"} in *out; arguments: a
 * JSON text (OpenAI's), parsed back when it is an object or array, else kept as a string */
static int render_call(json_t *c, size_t i, json_t **out, server_err_t *e) {
    json_t *type = json_object_get(c, "type"), *fn = json_object_get(c, "function"), *id = json_object_get(c, "id");
    json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments"), *a;
    if (!json_is_object(c) || (type && !(json_is_string(type) && !strcmp(json_string_value(type), "function"))) ||
        (id && !text_ok(id, 256)) || !json_is_object(fn) || !json_is_string(name) ||
        !server_tools_name_ok(json_string_value(name), json_string_length(name)) ||
        (args && !json_is_null(args) && !json_is_string(args) && !json_is_object(args)))
        return BAD(e, "messages", "tool_calls[%zu] must be {\"id\", \"type\": \"function\", \"function\": {\"name\", "
                                  "\"arguments\": a JSON text}}", i);
    if (json_is_string(args)) {
        a = json_loadb(json_string_value(args), json_string_length(args), 0, NULL);
        if (!a) a = json_incref(args);
    } else {
        a = json_is_object(args) ? json_incref(args) : json_object();
    }
    *out = json_pack("{s:O, s:o}", "name", name, "arguments", a);
    return *out ? 0 : OOM(e);
}

int server_tools_msg_extra(void *msgv, const char *content, void **extra, server_err_t *e) {
    json_t *msg = msgv, *o = json_object(), *c;
    if (!o) return OOM(e);
    *extra = o;
    json_t *calls = json_object_get(msg, "tool_calls"), *name = json_object_get(msg, "name");
    if (!content) {   /* a tool message: its name when given (tool_call_id comes from r->tool_ids) */
        if (text_ok(name, 256) && json_object_set(o, "name", name) < 0) return OOM(e);
        return 0;
    }
    json_t *orig = json_object_get(msg, "content"), *list = json_array();
    if (!list || json_object_set_new(o, "content", !orig || json_is_null(orig) ? json_null() : json_string_nocheck(content)) < 0 ||
        json_object_set_new(o, "tool_calls", list) < 0)
        return OOM(e);
    size_t i;
    json_array_foreach(calls, i, c) {   /* a bad call is refused by server_tools_render_calls next */
        json_t *one = NULL, *id = json_object_get(c, "id");
        server_err_t ignore;
        if (i >= SERVER_MAX_TOOL_CALLS || render_call(c, i, &one, &ignore) < 0) break;
        json_t *fn = json_pack("{s:s, s:{s:O, s:O}}", "type", "function", "function", "name",
                               json_object_get(one, "name"), "arguments", json_object_get(one, "arguments"));
        json_decref(one);
        if (fn && json_is_string(id) && json_object_set(fn, "id", id) < 0) { json_decref(fn); fn = NULL; }
        if (!fn || json_array_append_new(list, fn) < 0) return OOM(e);
    }
    return 0;
}

/* The calls after the content as the reply the model would have written: {"tool_call": CALL}
 * for one, {"tool_calls": [CALL, ...]} (the parallel form) for several. */
int server_tools_render_calls(void *callsv, char **content, server_err_t *e) {
    json_t *calls = callsv, *c, *list = json_array(), *o = NULL;
    if (!json_is_array(calls) || json_array_size(calls) > SERVER_MAX_TOOL_CALLS) {
        json_decref(list);
        return BAD(e, "messages", "an assistant message's 'tool_calls' must be an array of at most %d calls",
                   SERVER_MAX_TOOL_CALLS);
    }
    if (!list) return OOM(e);
    size_t i;
    json_array_foreach(calls, i, c) {
        json_t *one = NULL;
        int rc = render_call(c, i, &one, e);
        if (rc == 0 && json_array_append_new(list, one) < 0) rc = OOM(e);
        if (rc < 0) { json_decref(list); return rc; }
    }
    size_t n = json_array_size(list);
    if (n == 1) o = json_pack("{s:O}", "tool_call", json_array_get(list, 0));
    else if (n > 1) o = json_pack("{s:O}", "tool_calls", list);
    json_decref(list);
    if (n && !o) return OOM(e);
    strbuf_t b = {0};
    strbuf_puts(&b, *content);
    if (o) {
        if (b.n) strbuf_puts(&b, "\n");
        str_json(&b, o);
        json_decref(o);
    }
    if (b.err) { free(b.p); return OOM(e); }
    free(*content);
    *content = b.p ? b.p : strdup("");
    return *content ? 0 : OOM(e);
}

/* the id of call k: the model's (Mistral's), else call_id, then "_k" past the first */
static void call_id_of(const toolstream_call_t *c, const char *call_id, int k, char id[300]) {
    if (c->id[0]) snprintf(id, 300, "%s", c->id);
    else snprintf(id, 300, k ? "%s_%d" : "%s", call_id, k);
}

const char *server_tools_finish(const toolstream_t *s, const char *fallback) {
    return s->n_committed && !s->incomplete ? "tool_calls" : s->response ? "stop" : fallback;
}

void *server_tools_message(toolstream_t *s, const char *call_id, const char *fallback, const char **finish) {
    json_t *list = s->n_committed ? json_array() : NULL, *content;
    for (int k = 0; k < s->n_committed && list; k++) {
        const toolstream_call_t *c = &s->calls[k];
        char id[300];
        call_id_of(c, call_id, k, id);
        json_t *one = json_pack("{s:s, s:s, s:{s:s, s:o}}", "id", id, "type", "function", "function", "name", c->name,
                                "arguments", server_json_text(c->args.p ? c->args.p : "", c->args.n));
        if (!one || json_array_append_new(list, one) < 0) { json_decref(list); return NULL; }
    }
    if (s->n_committed && !list) return NULL;
    *finish = server_tools_finish(s, fallback);
    /* with calls, no text is null content (OpenAI's); without, the text as it came */
    content = s->content.n || !list ? server_json_text(s->content.p ? s->content.p : "", s->content.n) : json_null();
    return list ? json_pack("{s:s, s:o, s:o}", "role", "assistant", "content", content, "tool_calls", list)
                : json_pack("{s:s, s:o}", "role", "assistant", "content", content);
}

void *server_tools_delta(toolstream_t *s, const char *call_id) {
    json_t *d = json_object(), *list = NULL;
    size_t n = toolstream_ready(s, &s->content, s->content_sent);
    if (d && n) {
        json_object_set_new(d, "content", server_json_text(s->content.p + s->content_sent, n));
        s->content_sent += n;
    }
    for (int k = 0; k < s->n_committed && d; k++) {
        toolstream_call_t *c = &s->calls[k];
        size_t an = toolstream_ready(s, &c->args, c->sent);
        if (c->hdr_sent && !an) continue;
        json_t *args = server_json_text(an ? c->args.p + c->sent : "", an), *one;
        if (!c->hdr_sent) {
            char id[300];
            call_id_of(c, call_id, k, id);
            one = json_pack("{s:i, s:s, s:s, s:{s:s, s:o}}", "index", k, "id", id, "type", "function", "function",
                            "name", c->name, "arguments", args);
        } else {
            one = json_pack("{s:i, s:{s:o}}", "index", k, "function", "arguments", args);
        }
        if (!list) list = json_array();
        if (!one || !list || json_array_append_new(list, one) < 0) { json_decref(d); d = NULL; break; }
        c->hdr_sent = 1;
        c->sent += an;
    }
    if (d && list && json_object_set_new(d, "tool_calls", list) < 0) { json_decref(d); return NULL; }
    if (!d) json_decref(list);
    return d;
}

void *server_tools_reply(int fmt, const char *text, size_t n, const char *call_id, int delta, const char *fallback,
                         const char **finish) {
    toolstream_t s;
    toolstream_init(&s, fmt);
    json_t *out = NULL;
    if (toolstream_feed(&s, text, n) == 0 && toolstream_finish(&s) == 0) {
        out = server_tools_message(&s, call_id, fallback, finish);
        if (out && delta) {   /* the whole reply as one delta */
            json_decref(out);
            out = server_tools_delta(&s, call_id);
        }
    }
    toolstream_free(&s);
    return out;
}
