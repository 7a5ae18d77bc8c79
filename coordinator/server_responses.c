/* server_responses: see server_responses.h. The request is rebuilt with jansson as the
 * chat-completions JSON it means and handed to server_req_parse_fmt, so every limit and check of
 * that route applies (its errors are renamed into this API's fields). The reply side is one
 * reader of a job (resp_step) that turns the released text into output items — the thinking as a
 * reasoning item, the answer as a message item, a tools reply's calls (read by toolstream.h) as
 * function_call items — writing each change as its stream event when the job streams; the plain
 * reply is the same reader run once over the finished job, keeping only the items. */
#include "coordinator/server_responses.h"
#include "coordinator/server_int.h"
#include "coordinator/toolstream.h"
#include "core/err.h"
#include "core/strbuf.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD(e, param, ...) server_err_set((e), 400, "invalid_request_error", "invalid_value", (param), __VA_ARGS__)
#define OOM(e) server_err_set((e), 500, "server_error", NULL, NULL, "out of memory")

/* ---- request --------------------------------------------------------------------------- */

/* 1 when v is absent or null */
static int absent(json_t *v) { return !v || json_is_null(v); }

/* o's "type" string, or NULL */
static const char *type_of(json_t *o) { return json_string_value(json_object_get(o, "type")); }

/* the chat messages being built from instructions and input */
typedef struct conv {
    json_t *msgs;      /* chat "messages" (borrowed: the chat request's) */
    json_t *think;     /* a reasoning item's text, for the assistant turn that follows (owned) */
} conv_t;

/* a message's content: a string, or text parts (input_text, output_text; a refusal's text)
 * joined back to back as chat joins its parts → *out (new reference) */
static int content_text(json_t *c, const char *param, json_t **out, server_err_t *e) {
    if (json_is_string(c)) {
        *out = json_incref(c);
        return 0;
    }
    if (!json_is_array(c)) return BAD(e, param, "%s must be a string or an array of content parts", param);
    strbuf_t b = {0};
    size_t k;
    json_t *part;
    json_array_foreach(c, k, part) {
        const char *t = type_of(part);
        json_t *txt = json_object_get(part, t && !strcmp(t, "refusal") ? "refusal" : "text");
        if (t && (!strcmp(t, "input_image") || !strcmp(t, "input_file") || !strcmp(t, "input_audio"))) {
            strbuf_free(&b);
            return BAD(e, param, "%s[%zu]: %s parts are not supported (text only)", param, k, t);
        }
        if (!t || (strcmp(t, "input_text") && strcmp(t, "output_text") && strcmp(t, "refusal") && strcmp(t, "text")) ||
            !json_is_string(txt)) {
            strbuf_free(&b);
            return BAD(e, param, "%s[%zu] must be {\"type\": \"input_text\" | \"output_text\", \"text\": ...}", param, k);
        }
        strbuf_add(&b, json_string_value(txt), json_string_length(txt));
    }
    *out = b.err ? NULL : json_stringn(b.p ? b.p : "", b.n);
    strbuf_free(&b);
    return *out ? 0 : OOM(e);
}

/* the last chat message when it is an assistant's (the turn a function_call item joins) */
static json_t *last_assistant(conv_t *cv) {
    size_t n = json_array_size(cv->msgs);
    json_t *m = n ? json_array_get(cv->msgs, n - 1) : NULL;
    const char *role = json_string_value(json_object_get(m, "role"));
    return role && !strcmp(role, "assistant") ? m : NULL;
}

/* an assistant message about to be added takes the pending reasoning as its reasoning_content */
static int take_think(conv_t *cv, json_t *m, server_err_t *e) {
    if (!cv->think) return 0;
    int rc = json_object_set_new(m, "reasoning_content", cv->think) < 0 ? OOM(e) : 0;
    cv->think = NULL;
    return rc;
}

/* {"type"?: "message", "role", "content"} → a chat message (developer → system) */
static int item_message(conv_t *cv, json_t *it, const char *p, server_err_t *e) {
    const char *role = json_string_value(json_object_get(it, "role"));
    char pc[64];
    if (!role || (strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "system") && strcmp(role, "developer")))
        return BAD(e, p, "%s.role must be \"user\", \"assistant\", \"system\" or \"developer\"", p);
    snprintf(pc, sizeof pc, "%s.content", p);
    json_t *c = NULL;
    int rc = content_text(json_object_get(it, "content"), pc, &c, e);
    if (rc < 0) return rc;
    json_t *m = json_pack("{s:s, s:o}", "role", !strcmp(role, "developer") ? "system" : role, "content", c);
    if (!m) return OOM(e);
    if (!strcmp(role, "assistant") && (rc = take_think(cv, m, e)) < 0) { json_decref(m); return rc; }
    return json_array_append_new(cv->msgs, m) < 0 ? OOM(e) : 0;
}

/* 1 when v is a string of 1..max bytes without a NUL */
static int str_ok(json_t *v, size_t max) {
    size_t n = json_string_length(v);
    return json_is_string(v) && n > 0 && n <= max && strlen(json_string_value(v)) == n;
}

/* {"type": "function_call", "call_id", "name", "arguments"} → a tool call of the assistant turn
 * it follows (a message or calls of the same response), else of a new assistant message */
static int item_call(conv_t *cv, json_t *it, const char *p, server_err_t *e) {
    json_t *id = json_object_get(it, "call_id"), *name = json_object_get(it, "name"), *args = json_object_get(it, "arguments");
    if (!str_ok(id, 256) || !str_ok(name, 64) || !json_is_string(args))
        return BAD(e, p, "%s: a function_call item needs 'call_id', 'name' and 'arguments' (a JSON text) strings", p);
    json_t *m = last_assistant(cv);
    if (!m || json_object_get(m, "tool_calls") == NULL) {   /* a turn of its own unless it continues one */
        if (!m) {
            if (!(m = json_pack("{s:s, s:n}", "role", "assistant", "content"))) return OOM(e);
            int rc = take_think(cv, m, e);
            if (rc < 0 || json_array_append_new(cv->msgs, m) < 0) return rc < 0 ? rc : OOM(e);
        }
        if (json_object_set_new(m, "tool_calls", json_array()) < 0) return OOM(e);
    }
    json_t *c = json_pack("{s:O, s:s, s:{s:O, s:O}}", "id", id, "type", "function", "function", "name", name, "arguments", args);
    return c && json_array_append_new(json_object_get(m, "tool_calls"), c) == 0 ? 0 : OOM(e);
}

/* {"type": "function_call_output", "call_id", "output"} → a chat "tool" message */
static int item_output(conv_t *cv, json_t *it, const char *p, server_err_t *e) {
    json_t *id = json_object_get(it, "call_id"), *out = NULL;
    char po[64];
    if (!str_ok(id, 256)) return BAD(e, p, "%s: a function_call_output item needs a 'call_id' string", p);
    snprintf(po, sizeof po, "%s.output", p);
    int rc = content_text(json_object_get(it, "output"), po, &out, e);
    if (rc < 0) return rc;
    json_t *m = json_pack("{s:s, s:O, s:o}", "role", "tool", "tool_call_id", id, "content", out);
    return m && json_array_append_new(cv->msgs, m) == 0 ? 0 : OOM(e);
}

/* {"type": "reasoning", "content": [{"text"}], "summary": [{"text"}]}: its text (the content's,
 * else the summary's) waits for the assistant turn that follows, as its reasoning_content */
static int item_reasoning(conv_t *cv, json_t *it, const char *p, server_err_t *e) {
    json_t *parts = json_object_get(it, "content"), *part;
    if (!json_is_array(parts) || !json_array_size(parts)) parts = json_object_get(it, "summary");
    if (!absent(parts) && !json_is_array(parts)) return BAD(e, p, "%s: a reasoning item's 'summary' must be an array", p);
    strbuf_t b = {0};
    size_t k;
    json_array_foreach(parts, k, part) {
        json_t *t = json_object_get(part, "text");
        if (!json_is_string(t)) {
            strbuf_free(&b);
            return BAD(e, p, "%s: a reasoning item's parts need a 'text' string", p);
        }
        strbuf_add(&b, json_string_value(t), json_string_length(t));
    }
    json_decref(cv->think);
    cv->think = b.n && !b.err ? json_stringn(b.p, b.n) : NULL;
    strbuf_free(&b);
    return 0;
}

/* input[i] → chat messages */
static int conv_item(conv_t *cv, json_t *it, size_t i, server_err_t *e) {
    char p[32];
    snprintf(p, sizeof p, "input[%zu]", i);
    const char *t = type_of(it);
    if (!json_is_object(it)) return BAD(e, p, "%s must be an input item object", p);
    if (!t || !strcmp(t, "message")) return item_message(cv, it, p, e);
    if (!strcmp(t, "function_call")) return item_call(cv, it, p, e);
    if (!strcmp(t, "function_call_output")) return item_output(cv, it, p, e);
    if (!strcmp(t, "reasoning")) return item_reasoning(cv, it, p, e);
    if (!strcmp(t, "item_reference"))
        return BAD(e, p, "%s: tern keeps no responses (stateless), so an item_reference cannot be resolved: send the "
                         "item itself", p);
    return BAD(e, p, "%s: items of type '%.40s' are not supported (message, function_call, function_call_output, "
                     "reasoning)", p, t);
}

/* "instructions" and "input" → chat's "messages" */
static int conv_input(json_t *root, json_t *chat, server_err_t *e) {
    json_t *ins = json_object_get(root, "instructions"), *in = json_object_get(root, "input"), *it;
    conv_t cv = {json_array(), NULL};
    if (!cv.msgs || json_object_set_new(chat, "messages", cv.msgs) < 0) return OOM(e);
    if (!absent(ins) && !json_is_string(ins)) return BAD(e, "instructions", "'instructions' must be a string");
    if (json_is_string(ins) && json_array_append_new(cv.msgs, json_pack("{s:s, s:O}", "role", "system", "content", ins)) < 0)
        return OOM(e);
    int rc = 0;
    if (json_is_string(in)) {
        rc = json_array_append_new(cv.msgs, json_pack("{s:s, s:O}", "role", "user", "content", in)) < 0 ? OOM(e) : 0;
    } else if (json_is_array(in)) {
        size_t i;
        json_array_foreach(in, i, it) if ((rc = conv_item(&cv, it, i, e)) < 0) break;
    } else if (!absent(in)) {
        rc = BAD(e, "input", "'input' must be a string or an array of input items");
    }
    json_decref(cv.think);   /* a reasoning item with no assistant turn after it: nothing to show */
    if (rc == 0 && json_array_size(cv.msgs) == 0)
        rc = BAD(e, "input", "'input' is required: a string or a non-empty array of input items");
    return rc;
}

/* tools[i]: {"type": "function", "name", "description"?, "parameters"?, "strict"?} → chat's
 * function tool; *echo the tools as a Response shows them (description, parameters and strict
 * filled in) */
static int conv_tools(json_t *tools, json_t *chat, json_t **echo, server_err_t *e) {
    *echo = json_array();
    if (!*echo) return OOM(e);
    if (absent(tools)) return 0;
    if (!json_is_array(tools)) return BAD(e, "tools", "'tools' must be an array");
    json_t *out = json_array(), *t;
    if (!out || json_object_set_new(chat, "tools", out) < 0) return OOM(e);
    size_t i;
    json_array_foreach(tools, i, t) {
        json_t *name = json_object_get(t, "name"), *desc = json_object_get(t, "description"),
               *par = json_object_get(t, "parameters"), *strict = json_object_get(t, "strict");
        const char *type = type_of(t);
        char p[32];
        snprintf(p, sizeof p, "tools[%zu]", i);
        if (!json_is_object(t) || !type) return BAD(e, p, "%s must be {\"type\": \"function\", \"name\": ...}", p);
        if (strcmp(type, "function"))
            return BAD(e, p, "%s: built-in tools (type '%.40s') are not supported; only function tools", p, type);
        if (!absent(strict) && !json_is_boolean(strict)) return BAD(e, p, "%s.strict must be true or false", p);
        json_t *fn = json_pack("{s:O?, s:O?, s:O?}", "name", name, "description", desc, "parameters", par);
        if (!fn || json_array_append_new(out, json_pack("{s:s, s:o}", "type", "function", "function", fn)) < 0) return OOM(e);
        json_t *shown = json_pack("{s:s, s:O?, s:O?, s:O?, s:b}", "type", "function", "name", name, "description",
                                  desc ? desc : json_null(), "parameters", par ? par : json_null(), "strict",
                                  absent(strict) || json_is_true(strict));
        if (!shown || json_array_append_new(*echo, shown) < 0) return OOM(e);
    }
    return 0;
}

/* tool_choice: none | auto | required | {"type": "function", "name"} → chat's */
static int conv_choice(json_t *tc, json_t *chat, server_err_t *e) {
    static const char P[] = "tool_choice";
    if (absent(tc)) return 0;
    json_t *v = NULL;
    const char *t = type_of(tc), *s = json_string_value(tc);
    if (s && (!strcmp(s, "none") || !strcmp(s, "auto") || !strcmp(s, "required"))) v = json_incref(tc);
    else if (t && !strcmp(t, "function") && json_is_string(json_object_get(tc, "name")))
        v = json_pack("{s:s, s:{s:O}}", "type", "function", "function", "name", json_object_get(tc, "name"));
    else if (t && strcmp(t, "function"))
        return BAD(e, P, "tool_choice type '%.40s': built-in tools are not supported (none, auto, required or "
                         "{\"type\": \"function\", \"name\": ...})", t);
    else return BAD(e, P, "'tool_choice' must be none, auto, required or {\"type\": \"function\", \"name\": ...}");
    return v && json_object_set_new(chat, "tool_choice", v) == 0 ? 0 : OOM(e);
}

/* text.format: {"type": "text"} | {"type": "json_schema", "name", "schema", "strict"?} |
 * {"type": "json_object"} → chat's response_format */
static int conv_text(json_t *text, json_t *chat, server_err_t *e) {
    static const char P[] = "text.format";
    if (absent(text)) return 0;
    if (!json_is_object(text)) return BAD(e, "text", "'text' must be an object {\"format\": {...}}");
    json_t *f = json_object_get(text, "format"), *rf = NULL;
    if (absent(f)) return 0;
    const char *t = type_of(f);
    if (!json_is_object(f) || !t)
        return BAD(e, P, "'text.format' must be an object with a 'type': text, json_schema or json_object");
    if (!strcmp(t, "text")) return 0;
    if (!strcmp(t, "json_object")) {
        rf = json_pack("{s:s}", "type", "json_object");
    } else if (!strcmp(t, "json_schema")) {
        json_t *sc = json_object_get(f, "schema"), *name = json_object_get(f, "name");
        if (!json_is_object(sc)) return BAD(e, P, "text.format json_schema needs 'schema': a JSON Schema object");
        if (!absent(name) && !json_is_string(name)) return BAD(e, P, "text.format.name must be a string");
        rf = json_pack("{s:s, s:{s:O, s:s}}", "type", "json_schema", "json_schema", "schema", sc, "name",
                       json_is_string(name) ? json_string_value(name) : "response");
    } else {
        return BAD(e, P, "text.format type '%.40s': expected text, json_schema or json_object", t);
    }
    return rf && json_object_set_new(chat, "response_format", rf) == 0 ? 0 : OOM(e);
}

/* reasoning {"effort"}: none / minimal turn the template's thinking off (enable_thinking false,
 * reasoning budget 0), low / medium / high on (enable_thinking true); no effort changes nothing.
 * The effort sets no budget: a model thinks as long as it does (--reasoning-budget caps it). */
static int conv_reasoning(json_t *rs, json_t *chat, server_err_t *e) {
    static const char P[] = "reasoning";
    if (absent(rs)) return 0;
    json_t *ef = json_object_get(rs, "effort");
    if (!json_is_object(rs)) return BAD(e, P, "'reasoning' must be an object {\"effort\": ...}");
    if (absent(ef)) return 0;
    const char *s = json_string_value(ef);
    int off = s && (!strcmp(s, "none") || !strcmp(s, "minimal"));
    if (!s || (!off && strcmp(s, "low") && strcmp(s, "medium") && strcmp(s, "high")))
        return BAD(e, P, "reasoning.effort must be none, minimal, low, medium or high");
    json_t *kw = json_object_get(chat, "chat_template_kwargs");
    if (kw && !json_is_object(kw)) return 0;   /* not an object: the chat parse refuses it */
    kw = kw ? json_deep_copy(kw) : json_object();
    if (!kw || json_object_set_new(kw, "enable_thinking", json_boolean(!off)) < 0 ||
        json_object_set_new(chat, "chat_template_kwargs", kw) < 0 ||
        (off && json_object_set_new(chat, "reasoning_budget", json_integer(0)) < 0))
        return OOM(e);
    return 0;
}

/* the fields tern cannot honour, refused by name; and the ones only checked */
static int check_other(json_t *root, server_err_t *e) {
    static const char *const stateful[] = {"previous_response_id", "conversation"};
    for (size_t k = 0; k < 2; k++)
        if (!absent(json_object_get(root, stateful[k])))
            return BAD(e, stateful[k], "'%s': tern keeps no responses (stateless); send the whole conversation in "
                                       "'input'", stateful[k]);
    json_t *bg = json_object_get(root, "background"), *pr = json_object_get(root, "prompt"),
           *md = json_object_get(root, "metadata"), *u = json_object_get(root, "user"), *st = json_object_get(root, "store"),
           *inc = json_object_get(root, "include"), *tr = json_object_get(root, "truncation"),
           *m = json_object_get(root, "model");
    if (json_is_true(bg)) return BAD(e, "background", "'background': tern keeps no responses to run in the background");
    if (!absent(bg) && !json_is_boolean(bg)) return BAD(e, "background", "'background' must be true or false");
    if (!absent(pr)) return BAD(e, "prompt", "'prompt': stored prompt templates are not supported");
    if (!absent(md) && !json_is_object(md)) return BAD(e, "metadata", "'metadata' must be an object");
    if (!absent(u) && !json_is_string(u)) return BAD(e, "user", "'user' must be a string");
    if (!absent(st) && !json_is_boolean(st)) return BAD(e, "store", "'store' must be true or false");
    if (!absent(inc) && !json_is_array(inc)) return BAD(e, "include", "'include' must be an array");
    if (!absent(m) && !json_is_string(m)) return BAD(e, "model", "'model' must be a string");
    const char *ts = json_string_value(tr);
    if (!absent(tr) && (!ts || (strcmp(ts, "auto") && strcmp(ts, "disabled"))))
        return BAD(e, "truncation", "'truncation' must be \"auto\" or \"disabled\"");
    json_t *mo = json_object_get(root, "max_output_tokens");
    if (!absent(mo) && (!json_is_integer(mo) || json_integer_value(mo) < 1 || json_integer_value(mo) > (1 << 30)))
        return BAD(e, "max_output_tokens", "'max_output_tokens' must be a positive integer");
    return 0;
}

/* the request's fields a Response repeats (temperature and top_p: set once the chat parse has
 * them); tools: conv_tools' echo (stolen) */
static json_t *echo_of(json_t *root, json_t *tools) {
    json_t *ins = json_object_get(root, "instructions"), *mo = json_object_get(root, "max_output_tokens"),
           *md = json_object_get(root, "metadata"), *tc = json_object_get(root, "tool_choice"),
           *text = json_object_get(root, "text"), *rs = json_object_get(root, "reasoning"),
           *ptc = json_object_get(root, "parallel_tool_calls"), *u = json_object_get(root, "user");
    json_t *fmt = json_is_object(text) ? json_object_get(text, "format") : NULL;
    json_t *ef = json_is_object(rs) ? json_object_get(rs, "effort") : NULL;
    json_t *sm = json_is_object(rs) ? json_object_get(rs, "summary") : NULL;
    json_t *o = json_pack("{s:o, s:b, s:n, s:s}", "tools", tools, "parallel_tool_calls", json_is_true(ptc),
                          "previous_response_id", "truncation", "disabled");
    if (!o) return NULL;
    int bad = json_object_set(o, "instructions", json_is_string(ins) ? ins : json_null()) < 0 ||
              json_object_set(o, "max_output_tokens", json_is_integer(mo) ? mo : json_null()) < 0 ||
              json_object_set(o, "metadata", json_is_object(md) ? md : json_null()) < 0 ||
              json_object_set_new(o, "tool_choice", absent(tc) ? json_string("auto") : json_incref(tc)) < 0 ||
              json_object_set_new(o, "reasoning", json_pack("{s:O, s:O}", "effort", ef ? ef : json_null(), "summary",
                                                            sm ? sm : json_null())) < 0 ||
              json_object_set_new(o, "text", absent(fmt) ? json_pack("{s:{s:s}}", "format", "type", "text")
                                                         : json_pack("{s:O}", "format", fmt)) < 0 ||
              (json_is_string(u) && json_object_set(o, "user", u) < 0);
    for (int k = 0; k < 2 && !bad; k++) {   /* the request's own values (the server's are filled in later) */
        json_t *v = json_object_get(root, k ? "top_p" : "temperature");
        if (json_is_number(v)) bad = json_object_set(o, k ? "top_p" : "temperature", v) < 0;
    }
    if (bad) json_decref(o);
    return bad ? NULL : o;
}

/* the chat request for the Responses root into chat; *echo the Response's repeated fields */
static int conv_request(json_t *root, json_t *chat, json_t **echo, server_err_t *e) {
    /* the Responses API's sampling fields, and llama.cpp's seed, top_k, min_p, grammar,
     * reasoning_format and chat_template_kwargs (not the Responses API's: extensions) */
    static const char *const copied[] = {"temperature", "top_p", "stream", "parallel_tool_calls", "seed", "top_k", "min_p",
                                         "grammar", "reasoning_format", "chat_template_kwargs"};
    json_t *tools = NULL;
    int rc = check_other(root, e);
    if (rc == 0) rc = conv_input(root, chat, e);
    if (rc == 0) rc = conv_tools(json_object_get(root, "tools"), chat, &tools, e);
    if (rc == 0) rc = conv_choice(json_object_get(root, "tool_choice"), chat, e);
    if (rc == 0) rc = conv_text(json_object_get(root, "text"), chat, e);
    for (size_t k = 0; rc == 0 && k < sizeof copied / sizeof copied[0]; k++) {
        json_t *v = json_object_get(root, copied[k]);
        if (v && json_object_set(chat, copied[k], v) < 0) rc = OOM(e);
    }
    if (rc == 0) rc = conv_reasoning(json_object_get(root, "reasoning"), chat, e);   /* over chat_template_kwargs */
    json_t *mo = json_object_get(root, "max_output_tokens");
    if (rc == 0 && json_is_integer(mo) && json_object_set(chat, "max_tokens", mo) < 0) rc = OOM(e);
    if (rc < 0) { json_decref(tools); return rc; }
    *echo = echo_of(root, tools);
    return *echo ? 0 : OOM(e);
}

/* s with every `from` replaced by `to`, within cap bytes (cut short if it would not fit) */
static void replace_all(char *s, size_t cap, const char *from, const char *to) {
    char out[512];
    size_t n = 0, lf = strlen(from), lt = strlen(to);
    for (const char *p = s; *p && n + 1 < sizeof out;) {
        if (!strncmp(p, from, lf)) {
            size_t k = lt < sizeof out - 1 - n ? lt : sizeof out - 1 - n;
            memcpy(out + n, to, k);
            n += k;
            p += lf;
        } else {
            out[n++] = *p++;
        }
    }
    out[n < cap ? n : cap - 1] = 0;
    memcpy(s, out, (n < cap ? n : cap - 1) + 1);
}

/* an error of the chat parse in this API's names: response_format is text.format, max_tokens
 * max_output_tokens, messages input, tools[i].function.x tools[i].x */
static void err_rename(server_err_t *e) {
    static const char *const names[][2] = {{"response_format", "text.format"}, {"max_tokens", "max_output_tokens"},
                                           {".function.", "."}, {"'messages'", "'input'"}};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        replace_all(e->param, sizeof e->param, names[k][0], names[k][1]);
        replace_all(e->msg, sizeof e->msg, names[k][0], names[k][1]);
    }
    if (!strcmp(e->param, "messages")) snprintf(e->param, sizeof e->param, "input");
}

/* x as the number a person wrote (0.95, not 0.949999988: the float's shortest decimal) */
static json_t *real_short(float x) {
    char b[32];
    snprintf(b, sizeof b, "%.7g", (double)x);
    return json_real(strtod(b, NULL));
}

int server_responses_parse(server_req_t *r, const char *body, size_t len, const sampler_params_t *def, int tool_fmt,
                           server_err_t *e) {
    memset(r, 0, sizeof *r);
    r->kind = SERVER_REQ_CHAT;
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", len, 0, &jerr), *chat = json_object(), *echo = NULL;
    int rc = !chat ? OOM(e) : !root ? server_err_set(e, 400, "invalid_request_error", "invalid_json", NULL,
                                                     "the request body is not valid JSON: %s (line %d, column %d)",
                                                     jerr.text, jerr.line, jerr.column)
             : !json_is_object(root) ? BAD(e, NULL, "the request body must be a JSON object")
                                     : conv_request(root, chat, &echo, e);
    char *txt = rc == 0 ? json_dumps(chat, JSON_COMPACT) : NULL;
    json_decref(root);
    json_decref(chat);
    if (rc == 0 && !txt) rc = OOM(e);
    if (rc == 0 && (rc = server_req_parse_fmt(r, SERVER_REQ_CHAT, txt, strlen(txt), def, tool_fmt, e)) < 0) err_rename(e);
    free(txt);
    if (rc < 0) {
        json_decref(echo);
        return rc;
    }
    if (!json_object_get(echo, "temperature")) json_object_set_new(echo, "temperature", real_short(r->sp.temp));
    if (!json_object_get(echo, "top_p")) json_object_set_new(echo, "top_p", real_short(r->sp.top_p));
    r->api = SERVER_API_RESPONSES;
    r->resp_echo = echo;
    return 0;
}

/* ---- reply: one reader for the stream and the plain reply -------------------------------- */

enum { RS_NONE = 0, RS_REASON = 1, RS_MSG = 2, RS_CALL = 3 };

/* a job's reader (j->resp): the items so far and the open one */
struct resp_stream {
    json_t *output;        /* the closed items, in output_index order */
    int ev;                /* events are written into j->sse (a stream); else only the items kept */
    int seq;               /* the next event's sequence_number */
    int started, finished; /* response.created / the last event is out */
    int open;              /* RS_*: the open item's kind */
    int index;             /* its output_index */
    int call;              /* RS_CALL: its call in j->ts */
    char item_id[96];
    strbuf_t acc;          /* its text (reasoning, message) or arguments so far */
    int n_msg, n_call;     /* message / function_call items so far */
};

void server_responses_job_free(job_t *j) {
    json_decref(j->resp_echo);
    j->resp_echo = NULL;
    if (!j->resp) return;
    json_decref(j->resp->output);
    strbuf_free(&j->resp->acc);
    free(j->resp);
    j->resp = NULL;
}

/* the unique part of j's id ("resp_" + it), which its items' ids repeat */
static const char *uniq(const job_t *j) { return strncmp(j->id, "resp_", 5) ? j->id : j->id + 5; }

/* appends "event: TYPE\ndata: JSON\n\n" to j's unsent stream bytes: o (stolen) with its type and
 * sequence_number set; nothing when the reader writes no events */
static void ev(job_t *j, const char *type, json_t *o) {
    struct resp_stream *st = j->resp;
    if (!st->ev) { json_decref(o); return; }
    json_t *head = o ? json_pack("{s:s, s:i}", "type", type, "sequence_number", st->seq++) : NULL;
    if (head && json_object_update(head, o) == 0) {   /* type and sequence_number first, for people reading */
        json_decref(o);
        o = head;
    } else {
        json_decref(head);
        json_decref(o);
        o = NULL;
    }
    server_gen_sse_put(j, type, o,
                       "{\"type\":\"error\",\"code\":\"server_error\",\"message\":\"out of memory\",\"param\":null}");
}

/* the usage of finished job j: reasoning_tokens the engine's count of the tokens inside the thinking */
static json_t *usage_json(const job_t *j) {
    int think = j->reason ? SERVER_THINK_COUNT - j->rcount.left : 0;
    if (think < 0 || think > j->n_gen) think = think < 0 ? 0 : j->n_gen;
    return json_pack("{s:i, s:{s:i}, s:i, s:{s:i}, s:i}", "input_tokens", j->n_ids, "input_tokens_details", "cached_tokens",
                     j->n_cached, "output_tokens", j->n_gen, "output_tokens_details", "reasoning_tokens", think,
                     "total_tokens", j->n_ids + j->n_gen);
}

/* the Response of j with status (in_progress: no output yet, no usage): its own fields, then the
 * request's repeated ones */
static json_t *response_json(struct server *s, const job_t *j, const char *status) {
    int fin = strcmp(status, "in_progress") != 0, inc = !strcmp(status, "incomplete");
    json_t *out = fin && j->resp ? json_deep_copy(j->resp->output) : json_array();
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:o, s:n, s:o, s:o}", "id", j->id, "object", "response", "created_at",
                          (json_int_t)j->created, "status", status, "model", s->model_id, "output", out ? out : json_array(),
                          "error", "incomplete_details", inc ? json_pack("{s:s}", "reason", "max_output_tokens") : json_null(),
                          "usage", fin ? usage_json(j) : json_null());
    if (o && j->resp_echo) json_object_update_missing(o, j->resp_echo);
    return o;
}

/* an output_text / reasoning_text part of text p[0..n) */
static json_t *part_json(int kind, const char *p, size_t n) {
    json_t *t = server_json_text(p ? p : "", n);
    return kind == RS_MSG ? json_pack("{s:s, s:o, s:[], s:[]}", "type", "output_text", "text", t, "annotations", "logprobs")
                          : json_pack("{s:s, s:o}", "type", "reasoning_text", "text", t);
}

/* the open item with status; with its text so far (done) or as it opens (content empty) */
static json_t *item_json(job_t *j, const char *status, int done) {
    struct resp_stream *st = j->resp;
    const char *p = st->acc.p ? st->acc.p : "";
    size_t n = st->acc.n;
    if (st->open == RS_CALL) {
        char call_id[96];
        snprintf(call_id, sizeof call_id, "call_%s%02d", uniq(j), st->call);
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "id", st->item_id, "type", "function_call", "status", status,
                         "call_id", call_id, "name", j->ts->calls[st->call].name, "arguments",
                         done ? server_json_text(p, n) : json_string(""));
    }
    json_t *content = json_array();
    if (done && content) json_array_append_new(content, part_json(st->open, p, n));
    if (st->open == RS_REASON)
        return json_pack("{s:s, s:s, s:[], s:o, s:s}", "id", st->item_id, "type", "reasoning", "summary", "content", content,
                         "status", status);
    return json_pack("{s:s, s:s, s:s, s:s, s:o}", "id", st->item_id, "type", "message", "role", "assistant", "status", status,
                     "content", content);
}

/* the item fields every event of the open item carries */
static json_t *item_ev(const struct resp_stream *st, int content) {
    json_t *o = json_pack("{s:s, s:i}", "item_id", st->item_id, "output_index", st->index);
    if (o && content) json_object_set_new(o, "content_index", json_integer(0));
    return o;
}

/* closes the open item with status: its done events, and it joins the output */
static void item_close(job_t *j, const char *status) {
    struct resp_stream *st = j->resp;
    if (st->open == RS_NONE) return;
    const char *p = st->acc.p ? st->acc.p : "";
    json_t *o = item_ev(st, st->open != RS_CALL);
    if (st->open == RS_CALL) {
        if (o) json_object_set_new(o, "arguments", server_json_text(p, st->acc.n));
        ev(j, "response.function_call_arguments.done", o);
    } else {
        if (o) json_object_set_new(o, "text", server_json_text(p, st->acc.n));
        if (o && st->open == RS_MSG) json_object_set_new(o, "logprobs", json_array());
        ev(j, st->open == RS_MSG ? "response.output_text.done" : "response.reasoning_text.done", o);
        o = item_ev(st, 1);
        if (o) json_object_set_new(o, "part", part_json(st->open, p, st->acc.n));
        ev(j, "response.content_part.done", o);
    }
    json_t *item = item_json(j, status, 1);
    if (item) {
        ev(j, "response.output_item.done", json_pack("{s:i, s:O}", "output_index", st->index, "item", item));
        json_array_append_new(st->output, item);
    }
    strbuf_free(&st->acc);
    st->open = RS_NONE;
}

/* opens an item of kind (RS_CALL: for call k of j->ts), closing the open one as completed */
static void item_open(job_t *j, int kind, int k) {
    struct resp_stream *st = j->resp;
    static const char *const prefix[] = {"", "rs", "msg", "fc"};
    item_close(j, "completed");
    st->open = kind;
    st->index = (int)json_array_size(st->output);
    st->call = k;
    snprintf(st->item_id, sizeof st->item_id, "%s_%s%02d", prefix[kind], uniq(j), st->index);
    st->n_msg += kind == RS_MSG;
    st->n_call += kind == RS_CALL;
    ev(j, "response.output_item.added",
       json_pack("{s:i, s:o}", "output_index", st->index, "item", item_json(j, "in_progress", 0)));
    if (kind == RS_CALL) return;
    json_t *o = item_ev(st, 1);
    if (o) json_object_set_new(o, "part", part_json(kind, "", 0));
    ev(j, "response.content_part.added", o);
}

/* text p[0..n) of kind (RS_REASON, RS_MSG), or arguments (RS_CALL: of the open call): into the
 * open item of that kind (opened when another is), and its delta event */
static void item_text(job_t *j, int kind, const char *p, size_t n) {
    static const char *const delta[] = {"", "response.reasoning_text.delta", "response.output_text.delta",
                                        "response.function_call_arguments.delta"};
    struct resp_stream *st = j->resp;
    if (!n) return;
    if (st->open != kind) item_open(j, kind, 0);
    strbuf_add(&st->acc, p, n);
    json_t *o = item_ev(st, kind != RS_CALL);
    if (o) json_object_set_new(o, "delta", server_json_text(p, n));
    if (o && kind == RS_MSG) json_object_set_new(o, "logprobs", json_array());
    ev(j, delta[kind], o);
}

/* a tools reply's text t[0..n) through j's reader (toolstream.h), as the chat stream reads it:
 * the content before the first call as it comes, each call as a function_call item once its
 * name is read with its arguments as they come, and once done the content after the calls (a
 * message item of its own). 0, or -1 (OOM). */
static int tools_step(job_t *j, const char *t, size_t n, int done) {
    if (!j->ts && (j->ts = malloc(sizeof *j->ts))) toolstream_init(j->ts, j->tool_fmt);
    toolstream_t *ts = j->ts;
    if (!ts || (n && toolstream_feed(ts, t, n) < 0) || (done && toolstream_finish(ts) < 0)) return -1;
    size_t lim = ts->n_committed ? ts->content_before : ts->content.n;
    size_t m = ts->content_sent < lim ? toolstream_ready(ts, &ts->content, ts->content_sent) : 0;
    if (m > lim - ts->content_sent) m = lim - ts->content_sent;
    if (m) item_text(j, RS_MSG, ts->content.p + ts->content_sent, m);   /* p is NULL while empty */
    ts->content_sent += m;
    for (int k = 0; k < ts->n_committed; k++) {   /* calls commit in order, each complete before the next */
        toolstream_call_t *c = &ts->calls[k];
        if (!c->hdr_sent) {
            item_open(j, RS_CALL, k);
            c->hdr_sent = 1;
        }
        size_t an = toolstream_ready(ts, &c->args, c->sent);
        if (an) item_text(j, RS_CALL, c->args.p + c->sent, an);
        c->sent += an;
    }
    if (done && ts->content.n > ts->content_sent) {
        item_text(j, RS_MSG, ts->content.p + ts->content_sent, ts->content.n - ts->content_sent);
        ts->content_sent = ts->content.n;
    }
    return 0;
}

/* Reads what j has released into its items (events too when st->ev), and once j is done closes
 * them (a reply with neither a message nor a call gets an empty message) and ends with
 * response.completed, or response.incomplete when max_output_tokens (or the context) cut it.
 * 0, or -1 (OOM). Caller holds s->mu. */
static int resp_step(struct server *s, job_t *j) {
    struct resp_stream *st = j->resp;
    int done = j->state == JOB_DONE;
    if (st->finished) return 0;
    if (!st->started) {
        st->started = 1;
        ev(j, "response.created", json_pack("{s:o}", "response", response_json(s, j, "in_progress")));
        ev(j, "response.in_progress", json_pack("{s:o}", "response", response_json(s, j, "in_progress")));
    }
    const char *r = NULL, *t = j->out ? j->out : "";
    size_t nr = 0, nt = j->out_len;
    if (j->reason) server_gen_reason_new(j, &r, &nr, &t, &nt);   /* the thinking apart */
    else j->out_len = 0;                                         /* t stays valid: nothing appends under s->mu */
    item_text(j, RS_REASON, r, nr);
    if (!j->tools) item_text(j, RS_MSG, t, nt);
    else if (tools_step(j, t, nt, done) < 0) return -1;
    if (!done) return 0;
    const char *status = j->finish == SCHED_LENGTH ? "incomplete" : "completed";
    item_close(j, status);
    if (!st->n_msg && !st->n_call) {   /* nothing said: an empty message, as OpenAI's */
        item_open(j, RS_MSG, 0);
        item_close(j, status);
    }
    ev(j, strcmp(status, "completed") ? "response.incomplete" : "response.completed",
       json_pack("{s:o}", "response", response_json(s, j, status)));
    st->finished = 1;
    return 0;
}

/* j's reader, made on first use (ev: it writes events); NULL: OOM */
static struct resp_stream *reader(job_t *j, int evs) {
    if (!j->resp && (j->resp = calloc(1, sizeof *j->resp)) && !(j->resp->output = json_array())) {
        free(j->resp);
        j->resp = NULL;
    }
    if (j->resp) j->resp->ev = evs;
    return j->resp;
}

void *server_responses_reply(struct server *s, job_t *j) {
    if (!reader(j, 0) || resp_step(s, j) < 0) return NULL;
    return response_json(s, j, j->finish == SCHED_LENGTH ? "incomplete" : "completed");
}

int server_responses_sse(struct server *s, job_t *j) {
    int failed = j->state == JOB_DONE && (j->finish == SCHED_ERROR || j->finish == SCHED_CANCEL);
    if (j->sse_phase == 2) return 0;
    if (failed || !reader(j, 1)) return 1;
    j->sse_phase = 1;
    if (resp_step(s, j) < 0) return 1;
    if (j->resp->finished) j->sse_phase = 2;
    return 0;
}

void server_responses_sse_end(job_t *j, const server_err_t *e) {
    if (!e || !reader(j, 1)) return;
    ev(j, "error", json_pack("{s:s?, s:s, s:s?}", "code", e->code ? e->code : e->type, "message", e->msg, "param",
                             e->param[0] ? e->param : NULL));
}

/* ---- route ----------------------------------------------------------------------------- */

enum MHD_Result server_responses_handle(struct server *s, struct MHD_Connection *c, const char *body, size_t len,
                                        job_t **job_out) {
    server_err_t e;
    server_req_t r;
    *job_out = NULL;
    if (server_responses_parse(&r, body, len, &s->def_sp, chat_tool_format(s->m->tok), &e) < 0) return server_reply_err(c, &e);
    enum MHD_Result ret = server_gen_jobs(s, c, &r, job_out);
    server_req_free(&r);
    return ret;
}
