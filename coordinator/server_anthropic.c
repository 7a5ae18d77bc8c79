/* server_anthropic: see server_anthropic.h. The request is rebuilt with jansson as the
 * chat-completions JSON it means and handed to server_req_parse, so every limit and check of
 * that route applies; a user message's tool_result blocks become "tool" messages before its
 * text, an assistant's tool_use blocks its "tool_calls", "thinking" the template's enable_thinking
 * and a reasoning budget. The reply side reads a finished (or
 * streaming) job: plain text as one text block, a tools reply parsed back by server_tools.c
 * into text and tool_use blocks. */
#include "coordinator/server_anthropic.h"
#include "coordinator/server_int.h"
#include "coordinator/server_tools.h"
#include "coordinator/toolstream.h"
#include "core/err.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAD(e, param, ...) server_err_set((e), 400, "invalid_request_error", "invalid_value", (param), __VA_ARGS__)
#define OOM(e) server_err_set((e), 500, "server_error", NULL, NULL, "out of memory")

/* ---- errors ---------------------------------------------------------------------------- */

static __thread int g_style;   /* this thread's error shape: 1 Anthropic's */

void server_anthropic_style(int on) { g_style = on; }

static const char *err_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: case 529: return "overloaded_error";
    default: return status < 500 ? "invalid_request_error" : "api_error";
    }
}

char *server_anthropic_err_json(const server_err_t *e) {
    json_t *o = json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type", err_type(e->status), "message", e->msg);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

char *server_err_body(const server_err_t *e) {
    return g_style ? server_anthropic_err_json(e) : server_err_json(e);
}

/* ---- request --------------------------------------------------------------------------- */

/* 1 when b is {"type": TYPE, ...} */
static int is_block(json_t *b, const char *type) {
    json_t *t = json_object_get(b, "type");
    return json_is_object(b) && json_is_string(t) && !strcmp(json_string_value(t), type);
}

/* a string, or an array of text blocks (joined as chat's text parts are: back to back), as a
 * chat content value in *out (new reference). absent/null: "" when may_omit. */
static int text_value(json_t *v, const char *param, int may_omit, json_t **out, server_err_t *e) {
    if ((!v || json_is_null(v)) && may_omit) v = NULL;
    else if (!v || (!json_is_string(v) && !json_is_array(v)))
        return BAD(e, param, "'%s' must be a string or an array of text blocks", param);
    if (!v || json_is_string(v)) {
        *out = v ? json_incref(v) : json_string("");
        return *out ? 0 : OOM(e);
    }
    json_t *parts = json_array(), *b;
    size_t i;
    json_array_foreach(v, i, b) {
        json_t *t = json_object_get(b, "text");
        if (is_block(b, "image")) { json_decref(parts); return BAD(e, param, "%s[%zu]: image blocks are not supported", param, i); }
        if (!is_block(b, "text") || !json_is_string(t)) {
            json_decref(parts);
            return BAD(e, param, "%s[%zu] must be a text block {\"type\": \"text\", \"text\": ...}", param, i);
        }
        json_array_append_new(parts, json_pack("{s:s, s:O}", "type", "text", "text", t));
    }
    *out = parts;
    return parts ? 0 : OOM(e);
}

/* an assistant's tool_use block → a chat tool call */
static int tool_use_call(json_t *b, const char *param, json_t *calls, server_err_t *e) {
    json_t *id = json_object_get(b, "id"), *name = json_object_get(b, "name"), *in = json_object_get(b, "input");
    if (!json_is_string(id) || !json_is_string(name) || (in && !json_is_object(in)))
        return BAD(e, param, "%s: a tool_use block needs 'id' and 'name' strings and an 'input' object", param);
    char *args = in ? json_dumps(in, JSON_COMPACT) : strdup("{}");
    json_t *c = args ? json_pack("{s:O, s:s, s:{s:O, s:s}}", "id", id, "type", "function", "function", "name", name,
                                 "arguments", args) : NULL;
    free(args);
    return c && json_array_append_new(calls, c) == 0 ? 0 : OOM(e);
}

/* a user's tool_result block → a chat "tool" message appended to out */
static int tool_result_msg(json_t *b, const char *param, json_t *out, server_err_t *e) {
    json_t *id = json_object_get(b, "tool_use_id"), *content = NULL;
    if (!json_is_string(id)) return BAD(e, param, "%s: a tool_result block needs a 'tool_use_id' string", param);
    char p[96];
    snprintf(p, sizeof p, "%.80s.content", param);
    int rc = text_value(json_object_get(b, "content"), p, 1, &content, e);
    if (rc < 0) return rc;
    json_t *m = json_pack("{s:s, s:O, s:o}", "role", "tool", "tool_call_id", id, "content", content);
    return m && json_array_append_new(out, m) == 0 ? 0 : OOM(e);
}

/* messages[i] with a block array: its chat messages appended to out (a user's tool results
 * first, then its text; an assistant's text with its tool calls) */
static int blocks_msgs(json_t *blocks, const char *role, size_t i, json_t *out, server_err_t *e) {
    int user = !strcmp(role, "user"), rc = 0;
    json_t *parts = json_array(), *calls = json_array(), *b;
    size_t k;
    json_array_foreach(blocks, k, b) {
        char p[64];
        snprintf(p, sizeof p, "messages[%zu].content[%zu]", i, k);
        json_t *t = json_object_get(b, "text");
        if (is_block(b, "text") && json_is_string(t))
            rc = json_array_append_new(parts, json_pack("{s:s, s:O}", "type", "text", "text", t)) ? OOM(e) : 0;
        else if (is_block(b, "image") || is_block(b, "document")) rc = BAD(e, p, "%s: image and document blocks are not supported", p);
        else if (user && is_block(b, "tool_result")) rc = tool_result_msg(b, p, out, e);
        else if (!user && is_block(b, "tool_use")) rc = tool_use_call(b, p, calls, e);
        else if (!user && (is_block(b, "thinking") || is_block(b, "redacted_thinking"))) continue;   /* not replayed */
        else rc = BAD(e, p, "%s: not a block a %s message may hold (%s)", p, role,
                      user ? "text, tool_result" : "text, tool_use");
        if (rc < 0) break;
    }
    json_t *m = NULL;
    if (rc == 0 && (json_array_size(parts) || json_array_size(calls) || !user)) {   /* no empty user turn */
        m = json_pack("{s:s, s:O}", "role", role, "content", parts);
        if (m && json_array_size(calls)) json_object_set(m, "tool_calls", calls);
        rc = m && json_array_append_new(out, m) == 0 ? 0 : OOM(e);
    }
    json_decref(parts);
    json_decref(calls);
    return rc;
}

/* "system" and "messages" → chat's "messages" in chat */
static int conv_messages(json_t *root, json_t *chat, server_err_t *e) {
    json_t *sys = json_object_get(root, "system"), *ms = json_object_get(root, "messages"), *out = json_array(), *m;
    if (!out || json_object_set_new(chat, "messages", out) < 0) return OOM(e);
    if (sys && !json_is_null(sys)) {
        json_t *c = NULL;
        int rc = text_value(sys, "system", 0, &c, e);
        if (rc < 0) return rc;
        if (json_array_append_new(out, json_pack("{s:s, s:o}", "role", "system", "content", c)) < 0) return OOM(e);
    }
    if (!json_is_array(ms) || json_array_size(ms) == 0) return BAD(e, "messages", "'messages' must be a non-empty array");
    size_t i;
    json_array_foreach(ms, i, m) {
        json_t *role = json_object_get(m, "role"), *c = json_object_get(m, "content");
        const char *r = json_string_value(role);
        char p[48];
        snprintf(p, sizeof p, "messages[%zu]", i);
        if (!json_is_object(m) || !r || (strcmp(r, "user") && strcmp(r, "assistant")))
            return BAD(e, p, "%s.role must be \"user\" or \"assistant\"", p);
        int rc;
        if (json_is_string(c)) rc = json_array_append_new(out, json_pack("{s:s, s:O}", "role", r, "content", c)) ? OOM(e) : 0;
        else if (json_is_array(c)) rc = blocks_msgs(c, r, i, out, e);
        else rc = BAD(e, p, "%s.content must be a string or an array of content blocks", p);
        if (rc < 0) return rc;
    }
    return 0;
}

/* tools[i]: {"name", "description"?, "input_schema"} → chat's function tool */
static int conv_tools(json_t *tools, json_t *chat, server_err_t *e) {
    if (!tools || json_is_null(tools)) return 0;
    if (!json_is_array(tools)) return BAD(e, "tools", "'tools' must be an array");
    json_t *out = json_array(), *t;
    if (!out || json_object_set_new(chat, "tools", out) < 0) return OOM(e);
    size_t i;
    json_array_foreach(tools, i, t) {
        json_t *name = json_object_get(t, "name"), *desc = json_object_get(t, "description"),
               *sc = json_object_get(t, "input_schema"), *type = json_object_get(t, "type");
        char p[32];
        snprintf(p, sizeof p, "tools[%zu]", i);
        if (type && !json_is_null(type) && !(json_is_string(type) && !strcmp(json_string_value(type), "custom")))
            return BAD(e, p, "%s: server tools (type '%.40s') are not supported", p,
                       json_is_string(type) ? json_string_value(type) : "?");
        if (!json_is_object(t) || !json_is_string(name)) return BAD(e, p, "%s needs a 'name' string", p);
        if (!json_is_object(sc)) return BAD(e, p, "%s needs an 'input_schema' object (a JSON Schema)", p);
        if (desc && !json_is_null(desc) && !json_is_string(desc)) return BAD(e, p, "%s.description must be a string", p);
        json_t *fn = json_pack("{s:O, s:O}", "name", name, "parameters", sc);
        if (fn && json_is_string(desc)) json_object_set(fn, "description", desc);
        if (!fn || json_array_append_new(out, json_pack("{s:s, s:o}", "type", "function", "function", fn)) < 0) return OOM(e);
    }
    return 0;
}

/* tool_choice {"type": auto | any | tool (with "name") | none} → chat's tool_choice */
static int conv_choice(json_t *tc, json_t *chat, server_err_t *e) {
    const char *P = "tool_choice";
    if (!tc || json_is_null(tc)) return 0;
    const char *t = json_string_value(json_object_get(tc, "type"));
    json_t *name = json_object_get(tc, "name"), *v = NULL;
    if (!json_is_object(tc) || !t) return BAD(e, P, "'tool_choice' must be {\"type\": \"auto\" | \"any\" | \"tool\" | \"none\"}");
    if (!strcmp(t, "auto") || !strcmp(t, "none")) v = json_string(t);
    else if (!strcmp(t, "any")) v = json_string("required");
    else if (!strcmp(t, "tool")) {
        if (!json_is_string(name)) return BAD(e, P, "tool_choice {\"type\": \"tool\"} needs the tool's 'name'");
        v = json_pack("{s:s, s:{s:O}}", "type", "function", "function", "name", name);
    } else return BAD(e, P, "tool_choice type '%.40s': expected auto, any, tool or none", t);
    return v && json_object_set_new(chat, "tool_choice", v) == 0 ? 0 : OOM(e);
}

/* Anthropic's "thinking" into the chat request: {"type": "enabled", "budget_tokens": N} turns the
 * template's thinking on (chat_template_kwargs.enable_thinking true, over the request's own
 * chat_template_kwargs) with a reasoning_budget of N tokens; {"type": "disabled"} turns it off
 * (enable_thinking false, reasoning_budget 0). Lenient where Anthropic is strict: any
 * budget_tokens >= 1 is taken (Anthropic wants >= 1024 and < max_tokens; a budget past max_tokens
 * simply never bites). */
static int conv_thinking(json_t *th, json_t *chat, server_err_t *e) {
    static const char P[] = "thinking";
    if (!th || json_is_null(th)) return 0;
    const char *t = json_string_value(json_object_get(th, "type"));
    json_t *bt = json_object_get(th, "budget_tokens");
    if (!json_is_object(th) || !t || (strcmp(t, "enabled") && strcmp(t, "disabled")))
        return BAD(e, P, "'thinking' must be {\"type\": \"enabled\", \"budget_tokens\": N} or {\"type\": \"disabled\"}");
    int on = !strcmp(t, "enabled");
    if (on && (!json_is_integer(bt) || json_integer_value(bt) < 1 || json_integer_value(bt) > (1 << 30)))
        return BAD(e, P, "thinking.budget_tokens must be a positive integer");
    json_t *kw = json_object_get(chat, "chat_template_kwargs");
    if (kw && !json_is_object(kw)) return 0;   /* not an object: the chat parse refuses it */
    kw = kw ? json_deep_copy(kw) : json_object();
    if (!kw || json_object_set_new(kw, "enable_thinking", json_boolean(on)) < 0 ||
        json_object_set_new(chat, "chat_template_kwargs", kw) < 0 ||
        json_object_set_new(chat, "reasoning_budget", json_integer(on ? json_integer_value(bt) : 0)) < 0)
        return OOM(e);
    return 0;
}

/* the chat request for Anthropic's root; count: count_tokens (no max_tokens, no sampling) */
static int conv_request(json_t *root, int count, json_t *chat, server_err_t *e) {
    /* Anthropic's sampling fields, and llama.cpp's seed, min_p, grammar and reasoning_format (not
     * Anthropic's: extensions) */
    static const char *const copied[] = {"temperature", "top_p", "top_k", "stream", "seed", "min_p", "grammar",
                                         "reasoning_format"};
    json_t *mt = json_object_get(root, "max_tokens"), *ss = json_object_get(root, "stop_sequences"),
           *model = json_object_get(root, "model");
    if (model && !json_is_null(model) && !json_is_string(model)) return BAD(e, "model", "'model' must be a string");
    if (!count && (!json_is_integer(mt) || json_integer_value(mt) < 1))
        return BAD(e, "max_tokens", mt ? "'max_tokens' must be a positive integer" : "'max_tokens' is required");
    int rc = conv_messages(root, chat, e);
    if (rc == 0) rc = conv_tools(json_object_get(root, "tools"), chat, e);
    if (rc == 0) rc = conv_choice(json_object_get(root, "tool_choice"), chat, e);
    json_t *kw = json_object_get(root, "chat_template_kwargs");   /* the prompt's: counted too */
    if (rc == 0 && kw && json_object_set(chat, "chat_template_kwargs", kw) < 0) return OOM(e);
    if (rc == 0) rc = conv_thinking(json_object_get(root, "thinking"), chat, e);   /* the prompt's too */
    if (rc < 0 || count) return rc;
    if (json_object_set(chat, "max_tokens", mt) < 0) return OOM(e);
    for (size_t k = 0; k < sizeof copied / sizeof copied[0]; k++) {
        json_t *v = json_object_get(root, copied[k]);
        if (v && json_object_set(chat, copied[k], v) < 0) return OOM(e);
    }
    if (ss && !json_is_null(ss)) {
        size_t i;
        json_t *s;
        if (!json_is_array(ss)) return BAD(e, "stop_sequences", "'stop_sequences' must be an array of strings");
        json_array_foreach(ss, i, s)
            if (!json_is_string(s)) return BAD(e, "stop_sequences", "stop_sequences[%zu] must be a string", i);
        if (json_object_set(chat, "stop", ss) < 0) return OOM(e);
    }
    return 0;
}

int server_anthropic_parse(server_req_t *r, int count, const char *body, size_t len, const sampler_params_t *def,
                           int tool_fmt, server_err_t *e) {
    memset(r, 0, sizeof *r);
    r->kind = SERVER_REQ_CHAT;
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", len, 0, &jerr), *chat = json_object();
    int rc = !chat ? OOM(e) : !root ? server_err_set(e, 400, "invalid_request_error", "invalid_json", NULL,
                                                     "the request body is not valid JSON: %s (line %d, column %d)",
                                                     jerr.text, jerr.line, jerr.column)
             : !json_is_object(root) ? BAD(e, NULL, "the request body must be a JSON object")
                                     : conv_request(root, count, chat, e);
    char *txt = rc == 0 ? json_dumps(chat, JSON_COMPACT) : NULL;
    json_decref(root);
    json_decref(chat);
    if (rc == 0 && !txt) rc = OOM(e);
    if (rc == 0) rc = server_req_parse_fmt(r, SERVER_REQ_CHAT, txt, strlen(txt), def, tool_fmt, e);
    free(txt);
    if (rc == 0) r->api = SERVER_API_ANTHROPIC;
    return rc;
}

/* ---- reply ----------------------------------------------------------------------------- */

/* the stop reason of finished job j (tools_fin: server_tools_reply's finish, or NULL); *seq the
 * stop sequence that ended it, else NULL */
static const char *stop_reason(const job_t *j, const char *tools_fin, const char **seq) {
    *seq = NULL;
    if (tools_fin && !strcmp(tools_fin, "tool_calls")) return "tool_use";
    if (j->finish == SCHED_STOP && j->st.hit && j->st.which >= 0 && j->st.which < j->n_stop) {
        *seq = j->stop[j->st.which];
        return "stop_sequence";
    }
    return j->finish == SCHED_STOP ? "end_turn" : "max_tokens";
}

/* tool_use block k's id: unique as the message's id is */
static void tool_use_id(const job_t *j, int k, char id[80]) {
    snprintf(id, 80, "toolu_%s%02d", strncmp(j->id, "msg_", 4) ? j->id : j->id + 4, k);
}

/* finished job j's content blocks (a json array; NULL: OOM) and its stop reason. A tools reply
 * is read by toolstream.h, as the stream reads it: the text before the first call, the calls as
 * tool_use blocks (input: the arguments parsed, {} when they do not parse), the text after. */
static json_t *content_blocks(const job_t *j, const char **reason, const char **seq) {
    json_t *out = json_array();
    const char *fin = NULL, *text = j->out ? j->out : "";
    reasoning_split_t rs = {0, 0, 0, j->out_len};
    if (j->reason) {   /* the thinking first, as a thinking block (no signature: nothing signs it) */
        size_t scan = 0;
        reasoning_split(text, j->out_len, j->think_open, 1, &scan, &rs);
        if (rs.r1 > rs.r0)
            json_array_append_new(out, json_pack("{s:s, s:o, s:s}", "type", "thinking", "thinking",
                                                 server_json_text(text + rs.r0, rs.r1 - rs.r0), "signature", ""));
    }
    text += rs.c0;
    size_t n = rs.c1 - rs.c0;
    if (!j->tools) {
        json_array_append_new(out, json_pack("{s:s, s:o}", "type", "text", "text", server_json_text(text, n)));
        *reason = stop_reason(j, NULL, seq);
        return out;
    }
    toolstream_t ts;
    toolstream_init(&ts, j->tool_fmt);
    if (toolstream_feed(&ts, text, n) < 0 || toolstream_finish(&ts) < 0) {
        json_decref(out);
        out = NULL;
    }
    size_t before = ts.n_committed ? ts.content_before : ts.content.n;
    if (out && before)
        json_array_append_new(out, json_pack("{s:s, s:o}", "type", "text", "text", server_json_text(ts.content.p, before)));
    for (int k = 0; out && k < ts.n_committed; k++) {
        const strbuf_t *a = &ts.calls[k].args;
        json_t *in = a->n ? json_loadb(a->p, a->n, 0, NULL) : NULL;
        char id[80];
        tool_use_id(j, k, id);
        if (!json_is_object(in)) { json_decref(in); in = json_object(); }
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:o}", "type", "tool_use", "id", id, "name", ts.calls[k].name,
                                             "input", in));
    }
    if (out && ts.content.n > before)
        json_array_append_new(out, json_pack("{s:s, s:o}", "type", "text", "text",
                                             server_json_text(ts.content.p + before, ts.content.n - before)));
    fin = server_tools_finish(&ts, NULL);
    toolstream_free(&ts);
    *reason = stop_reason(j, fin, seq);
    return out;
}

void *server_anthropic_reply(struct server *s, const job_t *j) {
    const char *reason, *seq;
    json_t *content = content_blocks(j, &reason, &seq);
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:o, s:{s:i, s:i}}", "id", j->id, "type", "message", "role",
                     "assistant", "model", s->model_id, "content", content, "stop_reason", reason, "stop_sequence",
                     seq ? json_string(seq) : json_null(), "usage", "input_tokens", j->n_ids, "output_tokens", j->n_gen);
}

/* ---- streaming ------------------------------------------------------------------------- */

/* appends "event: NAME\ndata: JSON(o)\n\n" (o stolen) to j's unsent stream bytes */
static void sse_ev(job_t *j, const char *name, json_t *o) {
    server_gen_sse_put(j, name, o, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"out of memory\"}}");
}

static void ev_block_start(job_t *j, int index, json_t *block) {
    sse_ev(j, "content_block_start", json_pack("{s:s, s:i, s:o}", "type", "content_block_start", "index", index,
                                               "content_block", block));
}

static void ev_delta(job_t *j, int index, json_t *delta) {
    sse_ev(j, "content_block_delta", json_pack("{s:s, s:i, s:o}", "type", "content_block_delta", "index", index, "delta", delta));
}

static void ev_block_stop(job_t *j, int index) {
    sse_ev(j, "content_block_stop", json_pack("{s:s, s:i}", "type", "content_block_stop", "index", index));
}

/* closes j's open block, if one is */
static void ev_close(job_t *j) {
    if (!j->anth_open) return;
    ev_block_stop(j, j->anth_block++);
    j->anth_open = 0;
}

/* text p[0..n) into a text block, opening one when none is */
static void ev_text(job_t *j, const char *p, size_t n) {
    if (!n) return;
    if (j->anth_open != 1) {
        ev_close(j);
        ev_block_start(j, j->anth_block, json_pack("{s:s, s:s}", "type", "text", "text", ""));
        j->anth_open = 1;
    }
    ev_delta(j, j->anth_block, json_pack("{s:s, s:o}", "type", "text_delta", "text", server_json_text(p, n)));
}

/* a streamed tools reply through j's reader (toolstream.h), as content_blocks reads it whole:
 * the text before the first call as it comes; each call's tool_use block once its name is read
 * (input {}), its arguments as input_json_delta pieces as they come; once j is done, the text
 * after the calls. *fin: the reader's finish once done. 0, or -1 (OOM). */
static int ev_tools(job_t *j, const char **fin) {
    if (!j->ts && (j->ts = malloc(sizeof *j->ts))) toolstream_init(j->ts, j->tool_fmt);
    toolstream_t *ts = j->ts;
    if (!ts) return -1;
    int rc = 0;
    if (j->reason) {   /* the thinking as a thinking block first; the text after it feeds the reader */
        const char *r, *t;
        size_t nr, nc;
        server_gen_reason_new(j, &r, &nr, &t, &nc);
        if (nr) {
            if (j->anth_open != 3) {
                ev_close(j);
                ev_block_start(j, j->anth_block, json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking", "", "signature", ""));
                j->anth_open = 3;
            }
            ev_delta(j, j->anth_block, json_pack("{s:s, s:o}", "type", "thinking_delta", "thinking", server_json_text(r, nr)));
        }
        if (nc) rc = toolstream_feed(ts, t, nc);
    } else {
        rc = j->out_len ? toolstream_feed(ts, j->out, j->out_len) : 0;
        j->out_len = 0;
    }
    if (rc == 0 && j->state == JOB_DONE) rc = toolstream_finish(ts);
    if (rc < 0) return -1;
    size_t lim = ts->n_committed ? ts->content_before : ts->content.n;
    size_t n = ts->content_sent < lim ? toolstream_ready(ts, &ts->content, ts->content_sent) : 0;
    if (n > lim - ts->content_sent) n = lim - ts->content_sent;
    if (n) ev_text(j, ts->content.p + ts->content_sent, n);   /* p is NULL while nothing came */
    ts->content_sent += n;
    for (int k = 0; k < ts->n_committed; k++) {   /* calls commit in order, each complete before the next */
        toolstream_call_t *c = &ts->calls[k];
        if (!c->hdr_sent) {
            char id[80];
            tool_use_id(j, k, id);
            ev_close(j);
            ev_block_start(j, j->anth_block, json_pack("{s:s, s:s, s:s, s:{}}", "type", "tool_use", "id", id, "name",
                                                       c->name, "input"));
            j->anth_open = 2;
            c->hdr_sent = 1;
        }
        size_t an = toolstream_ready(ts, &c->args, c->sent);
        if (an) ev_delta(j, j->anth_block, json_pack("{s:s, s:o}", "type", "input_json_delta", "partial_json",
                                                     server_json_text(c->args.p + c->sent, an)));
        c->sent += an;
    }
    if (j->state != JOB_DONE) return 0;
    if (ts->content.n > ts->content_sent) {   /* the text after the calls */
        ev_text(j, ts->content.p + ts->content_sent, ts->content.n - ts->content_sent);
        ts->content_sent = ts->content.n;
    }
    ev_close(j);
    *fin = server_tools_finish(ts, NULL);
    return 0;
}

/* a reasoning reply's stream (not tools): the thinking as a thinking block of thinking_delta
 * events, then the answer as a text block (opened empty at the end when nothing came) */
static void sse_reason(job_t *j) {
    const char *r, *t;
    size_t nr, nc;
    server_gen_reason_new(j, &r, &nr, &t, &nc);
    if (nr) {
        if (!j->ablk) {
            ev_block_start(j, j->aidx, json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking", "", "signature", ""));
            j->ablk = 1;
        }
        ev_delta(j, j->aidx, json_pack("{s:s, s:o}", "type", "thinking_delta", "thinking", server_json_text(r, nr)));
    }
    if ((nc || j->state == JOB_DONE) && j->ablk != 2) {
        if (j->ablk == 1) ev_block_stop(j, j->aidx++);
        ev_block_start(j, j->aidx, json_pack("{s:s, s:s}", "type", "text", "text", ""));
        j->ablk = 2;
    }
    if (nc) {
        ev_delta(j, j->aidx, json_pack("{s:s, s:o}", "type", "text_delta", "text", server_json_text(t, nc)));
    }
}

int server_anthropic_sse(struct server *s, job_t *j) {
    int failed = j->state == JOB_DONE && (j->finish == SCHED_ERROR || j->finish == SCHED_CANCEL);
    if (j->sse_phase == 2) return 0;
    if (failed) return 1;
    if (j->sse_phase == 0) {
        j->sse_phase = 1;
        sse_ev(j, "message_start", json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:[], s:n, s:n, s:{s:i, s:i}}}", "type",
                                             "message_start", "message", "id", j->id, "type", "message", "role",
                                             "assistant", "model", s->model_id, "content", "stop_reason",
                                             "stop_sequence", "usage", "input_tokens", j->n_ids, "output_tokens", 0));
        if (!j->tools && !j->reason) ev_block_start(j, 0, json_pack("{s:s, s:s}", "type", "text", "text", ""));
        sse_ev(j, "ping", json_pack("{s:s}", "type", "ping"));
    }
    const char *reason, *seq, *fin = NULL;
    if (j->tools && ev_tools(j, &fin) < 0) return 1;
    if (!j->tools && j->reason) sse_reason(j);
    if (!j->tools && j->out_len) {
        ev_delta(j, 0, json_pack("{s:s, s:o}", "type", "text_delta", "text", server_json_text(j->out, j->out_len)));
        j->out_len = 0;
    }
    if (j->state != JOB_DONE) return 0;
    if (j->tools) {
        reason = stop_reason(j, fin, &seq);
    } else {
        reason = stop_reason(j, NULL, &seq);
        ev_block_stop(j, j->reason ? j->aidx : 0);
    }
    sse_ev(j, "message_delta", json_pack("{s:s, s:{s:s, s:o}, s:{s:i}}", "type", "message_delta", "delta", "stop_reason",
                                         reason, "stop_sequence", seq ? json_string(seq) : json_null(), "usage",
                                         "output_tokens", j->n_gen));
    sse_ev(j, "message_stop", json_pack("{s:s}", "type", "message_stop"));
    j->sse_phase = 2;
    return 0;
}

void server_anthropic_sse_end(job_t *j, const server_err_t *e) {
    if (!e) return;
    char *txt = server_anthropic_err_json(e);
    sse_ev(j, "error", txt ? json_loads(txt, 0, NULL) : NULL);
    free(txt);
}

/* ---- route ----------------------------------------------------------------------------- */

enum MHD_Result server_anthropic_handle(struct server *s, struct MHD_Connection *c, int count, const char *body,
                                        size_t len, job_t **job_out) {
    server_err_t e;
    server_req_t r;
    *job_out = NULL;
    if (server_anthropic_parse(&r, count, body, len, &s->def_sp, chat_tool_format(s->m->tok), &e) < 0) return server_reply_err(c, &e);
    if (!count) {
        enum MHD_Result ret = server_gen_jobs(s, c, &r, job_out);
        server_req_free(&r);
        return ret;
    }
    int n = server_gen_count(s, &r, &e);
    server_req_free(&r);
    if (n < 0) return server_reply_err(c, &e);
    return server_reply_json(c, 200, json_pack("{s:i}", "input_tokens", n));
}
