/* server_req: see server_req.h. One small checker per field kind (integer, number, bool,
 * stop, prompt, messages); each names the field in its error, so a client sees exactly what
 * was wrong. The JSON is parsed by jansson; nothing is trusted before its type is checked. */
#include "coordinator/server_req.h"
#include "coordinator/chatfile.h"
#include "coordinator/grammar.h"
#include "coordinator/json_schema.h"
#include "coordinator/reasoning.h"
#include "coordinator/server_tools.h"
#include "coordinator/toolfmt.h"
#include "core/err.h"
#include "core/log.h"
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int server_err_set(server_err_t *e, int status, const char *type, const char *code, const char *param,
                   const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return status >= 500 ? TERN_EIO : TERN_EINVAL;
}

#define BAD(e, param, ...) server_err_set((e), 400, "invalid_request_error", "invalid_value", (param), __VA_ARGS__)

char *server_err_json(const server_err_t *e) {
    json_t *o = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", e->msg, "type",
                          e->type ? e->type : "invalid_request_error", "param",
                          e->param[0] ? json_string(e->param) : json_null(), "code",
                          e->code ? json_string(e->code) : json_null());
    if (!o) return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* integer field: absent/null leaves *out; a real with a fractional part is refused */
static int get_int(json_t *root, const char *key, long long lo, long long hi, long long *out, server_err_t *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    double d;
    if (json_is_integer(v)) d = (double)json_integer_value(v);
    else if (json_is_real(v)) d = json_real_value(v);
    else return BAD(e, key, "'%s' must be an integer", key);
    if (d != floor(d)) return BAD(e, key, "'%s' must be an integer", key);
    if (d < (double)lo || d > (double)hi) return BAD(e, key, "'%s' must be in [%lld, %lld]", key, lo, hi);
    *out = json_is_integer(v) ? json_integer_value(v) : (long long)d;
    return 1;
}

static int get_num(json_t *root, const char *key, double lo, double hi, float *out, server_err_t *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return BAD(e, key, "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) return BAD(e, key, "'%s' must be in [%g, %g]", key, lo, hi);
    *out = (float)d;
    return 1;
}

static int get_bool(json_t *root, const char *key, int *out, server_err_t *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return BAD(e, key, "'%s' must be true or false", key);
    *out = json_is_true(v);
    return 1;
}

static int add_stop(server_req_t *r, json_t *s, server_err_t *e) {
    if (!json_is_string(s)) return BAD(e, "stop", "'stop' must be a string or an array of strings");
    size_t n = json_string_length(s);
    if (n == 0) return 0;   /* an empty stop string would end every reply at once: ignore it */
    if (n > SERVER_MAX_STOP_LEN) return BAD(e, "stop", "a stop string is longer than %d bytes", SERVER_MAX_STOP_LEN);
    if (r->n_stop == SERVER_MAX_STOP) return BAD(e, "stop", "at most %d stop strings", SERVER_MAX_STOP);
    if (memchr(json_string_value(s), 0, n)) return BAD(e, "stop", "a stop string contains a NUL byte");
    if (!(r->stop[r->n_stop] = strdup(json_string_value(s))))
        return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    r->n_stop++;
    return 0;
}

static int parse_stop(server_req_t *r, json_t *root, server_err_t *e) {
    json_t *v = json_object_get(root, "stop");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_array(v)) return add_stop(r, v, e);
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s) {
        int rc = add_stop(r, s, e);
        if (rc < 0) return rc;
    }
    return 0;
}

/* token id array (non-empty unless allow_empty); ids are checked against the vocab later */
static int parse_ids(server_req_t *r, json_t *a, const char *key, int allow_empty, server_err_t *e) {
    size_t n = json_array_size(a);
    if (n == 0 && !allow_empty) return BAD(e, key, "'%s' is empty", key);
    if (n > (1u << 24)) return BAD(e, key, "'%s' has too many tokens", key);
    if (!(r->ids = malloc((n ? n : 1) * sizeof(int32_t))))
        return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    size_t i;
    json_t *t;
    json_array_foreach(a, i, t) {
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX)
            return BAD(e, key, "'%s' must hold token ids (non-negative integers)", key);
        r->ids[i] = (int32_t)json_integer_value(t);
    }
    r->n_ids = (int)n;
    return 0;
}

static int dup_string(char **dst, json_t *s, const char *key, server_err_t *e) {
    size_t n = json_string_length(s);
    if (memchr(json_string_value(s), 0, n)) return BAD(e, key, "'%s' contains a NUL byte", key);
    if (!(*dst = strdup(json_string_value(s))))
        return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    return 0;
}

/* one prompt of a list: "text" or [ids], into r->prompt or r->ids */
static int parse_one(server_req_t *r, json_t *el, const char *key, server_err_t *e) {
    if (json_is_string(el)) return dup_string(&r->prompt, el, key, e);
    if (json_is_array(el)) return parse_ids(r, el, key, 0, e);
    return BAD(e, key, "each %s of a list must be a string or an array of token ids", key);
}

/* llama.cpp's mixed prompt [12, "text", 34, ...] (native only): its runs of ids and its
 * strings as r->parts in order */
static int parse_mixed(server_req_t *r, json_t *p, const char *key, server_err_t *e) {
    size_t n = json_array_size(p), i;
    json_t *el;
    if (n > (1u << 24)) return BAD(e, key, "'%s' has too many parts", key);
    if (!(r->parts = calloc(n, sizeof *r->parts)))
        return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    json_array_foreach(p, i, el) {
        server_prompt_t *last = r->n_parts ? &r->parts[r->n_parts - 1] : NULL;
        if (json_is_string(el)) {
            int rc = dup_string(&r->parts[r->n_parts++].text, el, key, e);
            if (rc < 0) return rc;
            continue;
        }
        if (!json_is_integer(el) || json_integer_value(el) < 0 || json_integer_value(el) > INT32_MAX)
            return BAD(e, key, "'%s' must mix token ids (non-negative integers) and strings", key);
        if (!last || last->text) {   /* a new run of ids */
            size_t run = i;   /* the run's length: ids until the next string */
            while (run < n && !json_is_string(json_array_get(p, run))) run++;
            last = &r->parts[r->n_parts++];
            if (!(last->ids = malloc((run - i) * sizeof(int32_t))))
                return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
        }
        last->ids[last->n_ids++] = (int32_t)json_integer_value(el);
    }
    return 0;
}

/* 1 when array p mixes token ids and strings (llama.cpp's single mixed prompt) */
static int is_mixed(json_t *p) {
    size_t i;
    json_t *el;
    int ints = 0, strs = 0;
    json_array_foreach(p, i, el) ints |= json_is_integer(el), strs |= json_is_string(el);
    return ints && strs;
}

/* prompt (or key): "text" | [ids] | ["text", ...] | [[ids], ...] (up to SERVER_MAX_CHOICES);
 * native also [12, "text", 34] */
static int parse_prompt(server_req_t *r, json_t *root, const char *key, server_err_t *e) {
    json_t *p = json_object_get(root, key);
    if (!p || json_is_null(p)) return BAD(e, key, "'%s' is required", key);
    if (json_is_string(p)) return dup_string(&r->prompt, p, key, e);
    if (!json_is_array(p)) return BAD(e, key, "'%s' must be a string or an array of token ids", key);
    if (r->kind == SERVER_REQ_NATIVE && is_mixed(p)) return parse_mixed(r, p, key, e);
    json_t *first = json_array_get(p, 0);
    if (!first || !(json_is_string(first) || json_is_array(first))) return parse_ids(r, p, key, 0, e);
    size_t np = json_array_size(p);
    if (np > SERVER_MAX_CHOICES) return BAD(e, key, "at most %d %ss per request", SERVER_MAX_CHOICES, key);
    int rc = parse_one(r, first, key, e);
    if (rc < 0 || np == 1) return rc;
    if (!(r->more = calloc(np - 1, sizeof *r->more)))
        return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    for (size_t i = 1; i < np; i++) {
        server_req_t one;
        memset(&one, 0, sizeof one);
        rc = parse_one(&one, json_array_get(p, i), key, e);
        r->more[i - 1] = (server_prompt_t){one.prompt, one.ids, one.n_ids};
        r->n_more = (int)i;
        if (rc < 0) return rc;
    }
    return 0;
}

/* content: string | null | [{"type":"text","text":...}, ...] (text parts joined) */
static int parse_content(json_t *c, char **out, server_err_t *e) {
    if (!c || json_is_null(c)) { *out = strdup(""); goto done; }
    if (json_is_string(c)) return dup_string(out, c, "messages", e);
    if (!json_is_array(c)) return BAD(e, "messages", "a message's 'content' must be a string or an array of parts");
    size_t len = 0;
    int rc = chatfile_join_parts(c, out, &len);
    if (rc == TERN_EFORMAT) return BAD(e, "messages", "only text content parts ({\"type\":\"text\",\"text\":...}) are supported");
    if (rc < 0) goto done;
    if (strlen(*out) != len) return BAD(e, "messages", "a message's content contains a NUL byte");
done:
    return *out ? 0 : server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
}

/* an assistant message's "reasoning_content" (its thinking): kept in msg_extra[i] for a Jinja
 * template, which may show it (llama.cpp passes it on; most templates drop it) */
static int parse_reasoning_content(server_req_t *r, json_t *msg, size_t i, server_err_t *e) {
    json_t *rc = json_object_get(msg, "reasoning_content");
    if (!rc || json_is_null(rc)) return 0;
    if (!json_is_string(rc) || strlen(json_string_value(rc)) != json_string_length(rc))
        return BAD(e, "messages", "message %zu: 'reasoning_content' must be a string", i);
    if (!r->msg_extra[i] && !(r->msg_extra[i] = json_object()))
        return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    if (json_object_set(r->msg_extra[i], "reasoning_content", rc))
        return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    return 0;
}

/* message i's tool fields: an assistant's "tool_calls" (rendered after its content, which may
 * be null), a "tool" message's "tool_call_id" (into r->tool_ids) and its content (not null) */
static int parse_tool_fields(server_req_t *r, json_t *msg, size_t i, server_err_t *e) {
    const char *role = r->msgs[i].role;
    json_t *calls = json_object_get(msg, "tool_calls"), *id = json_object_get(msg, "tool_call_id"),
           *c = json_object_get(msg, "content");
    if (calls && !json_is_null(calls)) {
        if (strcmp(role, "assistant") != 0) return BAD(e, "messages", "message %zu: only an assistant message has 'tool_calls'", i);
        int rc = server_tools_msg_extra(msg, r->msgs[i].content, &r->msg_extra[i], e);
        return rc < 0 ? rc : server_tools_render_calls(calls, (char **)&r->msgs[i].content, e);
    }
    if (strcmp(role, "tool") != 0) return 0;
    if (!c || json_is_null(c)) return BAD(e, "messages", "message %zu: a tool message needs 'content'", i);
    if (!json_is_string(id) || json_string_length(id) == 0 || json_string_length(id) > 256 ||
        strlen(json_string_value(id)) != json_string_length(id))
        return BAD(e, "messages", "message %zu: a tool message needs a 'tool_call_id' string (1..256 bytes)", i);
    int rc = dup_string(&r->tool_ids[i], id, "messages", e);
    return rc < 0 ? rc : server_tools_msg_extra(msg, NULL, &r->msg_extra[i], e);
}

static int parse_messages(server_req_t *r, json_t *root, server_err_t *e) {
    json_t *m = json_object_get(root, "messages");
    if (!json_is_array(m) || json_array_size(m) == 0)
        return BAD(e, "messages", "'messages' must be a non-empty array");
    size_t n = json_array_size(m);
    if (n > SERVER_MAX_MSGS) return BAD(e, "messages", "at most %d messages", SERVER_MAX_MSGS);
    if (!(r->msgs = calloc(n, sizeof(chat_msg_t))) || !(r->tool_ids = calloc(n, sizeof(char *))) ||
        !(r->msg_extra = calloc(n, sizeof(void *))))
        return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    size_t i;
    json_t *msg;
    json_array_foreach(m, i, msg) {
        json_t *role = json_object_get(msg, "role");
        if (!json_is_object(msg) || !json_is_string(role) || json_string_length(role) == 0)
            return BAD(e, "messages", "message %zu needs a 'role' string", i);
        char *rs = NULL, *cs = NULL;
        int rc = dup_string(&rs, role, "messages", e);
        r->msgs[i].role = rs;
        r->n_msgs = (int)i + 1;
        if (rc < 0) return rc;
        rc = parse_content(json_object_get(msg, "content"), &cs, e);
        r->msgs[i].content = cs;
        if (rc < 0) return rc;
        if ((rc = parse_tool_fields(r, msg, i, e)) < 0) return rc;
        if ((rc = parse_reasoning_content(r, msg, i, e)) < 0) return rc;
    }
    return 0;
}

/* llama.cpp's chat request fields for reasoning models: "reasoning_format" (none, deepseek,
 * deepseek-legacy, auto), "reasoning_budget" (an integer >= -1) and "chat_template_kwargs" (an
 * object; its enable_thinking, when there, a bool) */
static int parse_reasoning(server_req_t *r, json_t *root, server_err_t *e) {
    json_t *f = json_object_get(root, "reasoning_format"), *k = json_object_get(root, "chat_template_kwargs");
    json_t *b = json_object_get(root, "reasoning_budget");
    if (f && !json_is_null(f) && (!json_is_string(f) || (r->reasoning_format = reasoning_format_parse(json_string_value(f))) < 0))
        return BAD(e, "reasoning_format", "'reasoning_format' must be \"none\", \"deepseek\", \"deepseek-legacy\" or \"auto\"");
    if (b && !json_is_null(b) && (!json_is_integer(b) || json_integer_value(b) < -1 || json_integer_value(b) > INT32_MAX))
        return BAD(e, "reasoning_budget", "'reasoning_budget' must be an integer: -1 (no limit), 0 (no thinking) or "
                   "the thinking's tokens");
    if (b && json_is_integer(b)) r->reasoning_budget = (int)json_integer_value(b);
    if (!k || json_is_null(k)) return 0;
    if (!json_is_object(k)) return BAD(e, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
    json_t *et = json_object_get(k, "enable_thinking");
    if (et && !json_is_boolean(et))
        return BAD(e, "chat_template_kwargs", "'chat_template_kwargs': enable_thinking must be true or false");
    r->tmpl_kwargs = json_incref(k);
    return 0;
}

/* OpenAI's two spellings: completions "logprobs": N (0..5, null = off); chat "logprobs": bool
 * with "top_logprobs": N (0..20, only with logprobs true). Only a request that asks pays for
 * the log-softmax on the last stage (sp.logprobs). */
static int parse_logprobs(server_req_t *r, json_t *root, server_err_t *e) {
    long long n = 0;
    int rc;
    if (r->kind == SERVER_REQ_NATIVE || r->kind == SERVER_REQ_INFILL) {   /* llama.cpp's n_probs: alternatives
                                                                           * per token, 0 = none */
        if ((rc = get_int(root, "n_probs", 0, SAMPLER_TOP_MAX, &n, e)) < 0) return rc;
        r->logprobs = n > 0;
    } else if (r->kind == SERVER_REQ_COMPLETION) {
        if ((rc = get_int(root, "logprobs", 0, 5, &n, e)) < 0) return rc;
        r->logprobs = rc == 1;
    } else {
        if ((rc = get_bool(root, "logprobs", &r->logprobs, e)) < 0) return rc;
        if ((rc = get_int(root, "top_logprobs", 0, 20, &n, e)) < 0) return rc;
        if (n > 0 && !r->logprobs) return BAD(e, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
    }
    r->top_logprobs = r->logprobs ? (int)n : 0;
    r->sp.logprobs = r->logprobs;
    r->sp.top_logprobs = r->top_logprobs;
    return 0;
}

/* schema (a JSON object) → GBNF in r->grammar; 0 or <0 with e naming param */
static int schema_grammar(server_req_t *r, json_t *schema, const char *param, server_err_t *e) {
    if (!json_is_object(schema) && !json_is_boolean(schema)) return BAD(e, param, "'%s' must be a JSON Schema object", param);
    char *text = json_dumps(schema, JSON_COMPACT | JSON_ENCODE_ANY), why[256];
    if (!text) return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    r->grammar = json_schema_to_gbnf(text, strlen(text), why, sizeof why);
    free(text);
    return r->grammar ? 0 : BAD(e, param, "%s: %s", param, why);
}

/* OpenAI's response_format: {"type": "text"}, {"type": "json_object"} (any JSON object; a
 * "schema" beside it, as llama.cpp takes, narrows it) or {"type": "json_schema", "json_schema":
 * {"name": ..., "schema": {...}, "strict": ...}} */
static int parse_response_format(server_req_t *r, json_t *rf, server_err_t *e) {
    const char *P = "response_format";
    json_t *type = json_object_get(rf, "type");
    if (!json_is_object(rf) || !json_is_string(type))
        return BAD(e, P, "'response_format' must be an object with a 'type': text, json_object or json_schema");
    const char *t = json_string_value(type);
    if (!strcmp(t, "text")) return 0;
    if (!strcmp(t, "json_object")) {
        json_t *sc = json_object_get(rf, "schema");
        if (sc && !json_is_null(sc)) return schema_grammar(r, sc, P, e);
        return (r->grammar = strdup(grammar_json_object_gbnf)) ? 0
               : server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    if (!strcmp(t, "json_schema")) {
        json_t *js = json_object_get(rf, "json_schema");
        json_t *sc = json_is_object(js) ? json_object_get(js, "schema") : NULL;
        if (!sc) return BAD(e, P, "response_format json_schema needs 'json_schema': {\"schema\": {...}}");
        return schema_grammar(r, sc, P, e);
    }
    return BAD(e, P, "response_format type '%.40s': expected text, json_object or json_schema", t);
}

/* "grammar" (GBNF), "json_schema" or "response_format": one at most; the GBNF must parse */
static int parse_grammar(server_req_t *r, json_t *root, server_err_t *e) {
    json_t *g = json_object_get(root, "grammar"), *js = json_object_get(root, "json_schema"),
           *rf = json_object_get(root, "response_format");
    if (g && json_is_null(g)) g = NULL;
    if (js && json_is_null(js)) js = NULL;
    if (rf && json_is_null(rf)) rf = NULL;
    if (!!g + !!js + !!rf > 1) return BAD(e, "grammar", "use one of 'grammar', 'json_schema' and 'response_format'");
    int rc = 0;
    if (g) {
        if (!json_is_string(g)) return BAD(e, "grammar", "'grammar' must be a string of GBNF");
        if (json_string_length(g) > GRAMMAR_MAX_TEXT) return BAD(e, "grammar", "'grammar' is longer than %d bytes", GRAMMAR_MAX_TEXT);
        rc = dup_string(&r->grammar, g, "grammar", e);
    } else if (js) {
        rc = schema_grammar(r, js, "json_schema", e);
    } else if (rf) {
        rc = parse_response_format(r, rf, e);
    }
    if (r->grammar && !*r->grammar) { free(r->grammar); r->grammar = NULL; }   /* "": free text, as llama.cpp */
    if (rc < 0 || !r->grammar) return rc;
    char why[256];
    grammar_t *gr = grammar_parse(r->grammar, strlen(r->grammar), NULL, why, sizeof why);
    if (!gr) return BAD(e, g ? "grammar" : js ? "json_schema" : "response_format", "grammar: %s", why);
    grammar_destroy(&gr);
    return 0;
}

/* OpenAI's logit_bias: {"TOKEN_ID": bias, ...} (bias in [-100, 100]); also llama.cpp's list of
 * [TOKEN_ID, bias] pairs. The ids are checked against the vocabulary with the prompt. */
static int bias_ok(const json_t *v) {
    return json_is_false(v) || (json_is_number(v) && json_number_value(v) >= -100 && json_number_value(v) <= 100);
}

/* a bias value bias_ok accepted; llama.cpp's false bans the token (finite, as engine_ban_eog) */
static float bias_of(const json_t *v) { return json_is_false(v) ? -1e30f : (float)json_number_value(v); }

static int parse_logit_bias(server_req_t *r, json_t *root, server_err_t *e) {
    const char *P = "logit_bias";
    json_t *lb = json_object_get(root, P);
    sampler_params_t *sp = &r->sp;
    if (!lb || json_is_null(lb)) return 0;
    size_t n = json_is_object(lb) ? json_object_size(lb) : json_is_array(lb) ? json_array_size(lb) : 0;
    if (!json_is_object(lb) && !json_is_array(lb)) return BAD(e, P, "'logit_bias' must map token ids to biases");
    if (n > SAMPLER_BIAS_MAX) return BAD(e, P, "'logit_bias' has %zu entries (at most %d)", n, SAMPLER_BIAS_MAX);
    sp->n_bias = 0;
    const char *key;
    json_t *v;
    size_t i;
    if (json_is_object(lb)) {
        json_object_foreach(lb, key, v) {
            char *end;
            long id = strtol(key, &end, 10);
            if (!*key || *end || id < 0 || id > INT32_MAX) return BAD(e, P, "logit_bias key '%.40s' is not a token id", key);
            if (!bias_ok(v)) return BAD(e, P, "logit_bias of token %ld must be a number in [-100, 100] or false", id);
            sp->bias_id[sp->n_bias] = (int32_t)id;
            sp->bias[sp->n_bias++] = bias_of(v);
        }
        return 0;
    }
    json_array_foreach(lb, i, v) {
        json_t *id = json_array_get(v, 0), *b = json_array_get(v, 1);
        if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) > INT32_MAX || !bias_ok(b))
            return BAD(e, P, "logit_bias entry %zu must be [token id, bias in [-100, 100] or false]", i);
        sp->bias_id[sp->n_bias] = (int32_t)json_integer_value(id);
        sp->bias[sp->n_bias++] = bias_of(b);
    }
    return 0;
}

/* the fields shared by completions and chat */
/* llama.cpp's dry_sequence_breakers: a non-empty array of strings */
static int parse_dry_breakers(server_req_t *r, json_t *root, server_err_t *e) {
    const char *P = "dry_sequence_breakers";
    json_t *a = json_object_get(root, P);
    if (!a || json_is_null(a)) return 0;
    size_t n = json_is_array(a) ? json_array_size(a) : 0;
    if (!n) return BAD(e, P, "'%s' must be a non-empty array of strings", P);
    if (n > SERVER_MAX_DRY_BREAKERS) return BAD(e, P, "'%s' has %zu entries (at most %d)", P, n, SERVER_MAX_DRY_BREAKERS);
    if (!(r->dry_breakers = calloc(n, sizeof *r->dry_breakers)))
        return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(a, i);
        if (!json_is_string(s)) return BAD(e, P, "'%s' entry %zu must be a string", P, i);
        int rc = dup_string(&r->dry_breakers[i], s, P, e);
        if (rc < 0) return rc;
        r->n_dry_breakers = (int)i + 1;
    }
    return 0;
}

/* parse_order's one warning for the n names it skipped: a (those no sampler name looks like)
 * then b (sampler_order_parse's), control bytes shown as '?' so that it stays one log line */
static void order_warn(const char *a, const char *b, int n) {
    char line[420];
    snprintf(line, sizeof line, "%s%s%s", a, a[0] && b[0] ? ", " : "", b);
    for (char *c = line; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
    if (n > 0) log_w("serve: 'samplers': skipped %d unknown name%s: %s", n, n == 1 ? "" : "s", line);
}

/* llama.cpp's "samplers": the chain's order, an array of sampler names or a string of its
 * --sampling-seq letters ("kt"; names separated by ';' taken too). Lenient as llama-server is:
 * an unknown name or letter is skipped with a warning in the log; none known left is a 400
 * (llama.cpp would run an empty chain, a plain draw, never what a client meant). */
static int parse_order(server_req_t *r, json_t *root, server_err_t *e) {
    const char *P = "samplers";
    json_t *sm = json_object_get(root, P), *el;
    char names[SAMPLER_ORDER_MAX * 24], why[200] = "", odd[200] = "";
    size_t i, len = 0;
    int rc, n_odd = 0;
    if (!sm || json_is_null(sm)) return 0;
    if (json_is_string(sm)) {
        const char *v = json_string_value(sm);
        if (strlen(v) != json_string_length(sm)) return BAD(e, P, "'samplers': a NUL in the string");
        int flags = SAMPLER_ORDER_LENIENT | (strpbrk(v, ";,") ? 0 : SAMPLER_ORDER_LETTERS);
        if ((rc = sampler_order_parse(&r->sp, v, flags, why, sizeof why)) < 0) return BAD(e, P, "'samplers': %s", why);
        order_warn("", rc > 0 ? why : "", rc);
        return 0;
    }
    if (!json_is_array(sm)) return BAD(e, P, "'samplers' must be an array of sampler names or a string of letters");
    if (json_array_size(sm) > SAMPLER_ORDER_MAX)
        return BAD(e, P, "'samplers' has %zu entries (at most %d)", json_array_size(sm), SAMPLER_ORDER_MAX);
    json_array_foreach(sm, i, el) {   /* one name each: joined by ';' for sampler_order_parse */
        const char *v = json_string_value(el);
        if (!v) return BAD(e, P, "'samplers' entry %zu must be a string", i);
        size_t n = json_string_length(el);
        if (!n || n > 20 || strlen(v) != n || strpbrk(v, ";, ")) {   /* no sampler's name: skipped here */
            size_t at = strlen(odd);
            snprintf(odd + at, sizeof odd - at, "%s'%.40s'", n_odd++ ? ", " : "", v);
            continue;
        }
        memcpy(names + len, v, n);
        len += n;
        names[len++] = ';';
    }
    names[len] = 0;
    rc = sampler_order_parse(&r->sp, names, SAMPLER_ORDER_LENIENT, why, sizeof why);
    if (rc < 0 && !json_array_size(sm)) return BAD(e, P, "'samplers' is empty");
    if (rc < 0)   /* at most SAMPLER_ORDER_MAX entries: none known is the only way to fail */
        return BAD(e, P, "'samplers': no known sampler among the %zu given (e.g. top_k, temperature)", json_array_size(sm));
    order_warn(odd, rc > 0 ? why : "", n_odd + rc);
    return 0;
}

/* llama.cpp's other samplers (typical, top-n-sigma, XTC, dynamic temperature, mirostat, DRY) */
static int parse_samplers(server_req_t *r, json_t *root, server_err_t *e) {
    sampler_params_t *sp = &r->sp;
    int rc;
    if ((rc = get_num(root, "typical_p", 0, 1, &sp->typical_p, e)) < 0) return rc;
    if ((rc = get_num(root, "top_n_sigma", -1, 1000, &sp->top_n_sigma, e)) < 0) return rc;
    if (sp->top_n_sigma < 0) sp->top_n_sigma = 0;   /* llama.cpp's -1: off */
    if ((rc = get_num(root, "xtc_probability", 0, 1, &sp->xtc_probability, e)) < 0) return rc;
    if ((rc = get_num(root, "xtc_threshold", 0, 1, &sp->xtc_threshold, e)) < 0) return rc;
    if ((rc = get_num(root, "dynatemp_range", 0, 100, &sp->dynatemp_range, e)) < 0) return rc;
    if ((rc = get_num(root, "dynatemp_exponent", 0, 100, &sp->dynatemp_exponent, e)) < 0) return rc;
    if ((rc = get_num(root, "mirostat_tau", 0, 100, &sp->mirostat_tau, e)) < 0) return rc;
    if ((rc = get_num(root, "mirostat_eta", 0, 10, &sp->mirostat_eta, e)) < 0) return rc;
    if ((rc = get_num(root, "dry_multiplier", 0, 1000, &sp->dry_multiplier, e)) < 0) return rc;
    if ((rc = get_num(root, "dry_base", 0, 100, &sp->dry_base, e)) < 0) return rc;
    long long v = sp->mirostat;
    if ((rc = get_int(root, "mirostat", 0, 2, &v, e)) < 0) return rc;
    sp->mirostat = (int)v;
    v = sp->dry_allowed_length;
    if ((rc = get_int(root, "dry_allowed_length", 0, SAMPLER_DRY_MAX, &v, e)) < 0) return rc;
    sp->dry_allowed_length = (int)v;
    v = sp->dry_penalty_last_n;
    if ((rc = get_int(root, "dry_penalty_last_n", -1, 1 << 30, &v, e)) < 0) return rc;
    sp->dry_penalty_last_n = v > SAMPLER_DRY_MAX ? SAMPLER_DRY_MAX : (int)v;   /* what the history keeps */
    if ((rc = parse_order(r, root, e)) < 0) return rc;
    return parse_dry_breakers(r, root, e);
}

static int parse_generation(server_req_t *r, json_t *root, server_err_t *e) {
    long long v = 1;
    int rc;
    if ((rc = get_int(root, "n", 1, SERVER_MAX_CHOICES, &v, e)) < 0) return rc;
    r->n = (int)v;
    if (r->n * (1 + r->n_more) > SERVER_MAX_CHOICES)
        return BAD(e, "n", "%d prompts x n=%d: at most %d choices per request", 1 + r->n_more, r->n, SERVER_MAX_CHOICES);
    v = -1;
    if ((rc = get_int(root, "max_tokens", -1, 1 << 30, &v, e)) < 0) return rc;
    if ((rc = get_int(root, "max_completion_tokens", -1, 1 << 30, &v, e)) < 0) return rc;
    if ((rc = get_int(root, "n_predict", -1, 1 << 30, &v, e)) < 0) return rc;   /* llama.cpp's name */
    if (r->kind == SERVER_REQ_COMPLETION && (rc = get_bool(root, "echo", &r->echo, e)) < 0) return rc;
    if (v == 0 && !r->echo && (r->kind == SERVER_REQ_NATIVE || r->kind == SERVER_REQ_INFILL))
        return BAD(e, "n_predict", "'n_predict' must be -1 or at least 1");
    if (v == 0 && !r->echo) return BAD(e, "max_tokens", "'max_tokens' must be at least 1 (0 only with 'echo': true)");
    r->max_tokens = (int)v;
    sampler_params_t *sp = &r->sp;
    if ((rc = get_num(root, "temperature", 0, 100, &sp->temp, e)) < 0) return rc;
    if ((rc = get_num(root, "top_p", 0, 1, &sp->top_p, e)) < 0) return rc;
    if ((rc = get_num(root, "min_p", 0, 1, &sp->min_p, e)) < 0) return rc;
    if ((rc = get_num(root, "repeat_penalty", 0.0001, 100, &sp->repeat_penalty, e)) < 0) return rc;
    if ((rc = get_num(root, "frequency_penalty", -100, 100, &sp->freq_penalty, e)) < 0) return rc;
    if ((rc = get_num(root, "presence_penalty", -100, 100, &sp->presence_penalty, e)) < 0) return rc;
    if ((rc = parse_logit_bias(r, root, e)) < 0) return rc;
    if ((rc = parse_samplers(r, root, e)) < 0) return rc;
    v = sp->top_k;
    if ((rc = get_int(root, "top_k", 0, 1 << 24, &v, e)) < 0) return rc;
    sp->top_k = (int)v;
    v = sp->repeat_last_n;
    if ((rc = get_int(root, "repeat_last_n", 0, SAMPLER_HIST_MAX, &v, e)) < 0) return rc;
    sp->repeat_last_n = (int)v;
    v = -1;
    if ((rc = get_int(root, "seed", INT64_MIN, INT64_MAX, &v, e)) < 0) return rc;
    if (rc == 1 && v != -1) { sp->seed = (uint64_t)v; r->seed_set = 1; }   /* -1: the server's choice */
    if ((rc = parse_logprobs(r, root, e)) < 0) return rc;
    if ((rc = get_bool(root, "stream", &r->stream, e)) < 0) return rc;
    if ((rc = get_bool(root, "ignore_eos", &r->ignore_eos, e)) < 0) return rc;
    if ((rc = get_bool(root, "cache_prompt", &r->cache_prompt, e)) < 0) return rc;
    v = SERVER_KEEP_DEFAULT;
    if ((rc = get_int(root, "n_keep", -1, 1 << 30, &v, e)) < 0) return rc;
    r->n_keep = (int)v;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return BAD(e, "stream_options", "'stream_options' must be an object");
        if ((rc = get_bool(so, "include_usage", &r->include_usage, e)) < 0) return rc;
    }
    if ((rc = parse_grammar(r, root, e)) < 0) return rc;
    return parse_stop(r, root, e);
}

/* /completion's own fields: return_tokens, id_slot (checked against the slots later) */
static int parse_native(server_req_t *r, json_t *root, server_err_t *e) {
    long long v = -1;
    int rc;
    if ((rc = get_bool(root, "return_tokens", &r->return_tokens, e)) < 0) return rc;
    if ((rc = get_int(root, "id_slot", -1, 1 << 20, &v, e)) < 0) return rc;
    r->id_slot = (int)v;
    return 0;
}

/* /infill's inputs, as llama-server checks them: input_prefix and input_suffix (strings, both
 * required), input_extra ([{"filename"?, "text"}]) and an optional string prompt */
static int parse_infill(server_req_t *r, json_t *root, server_err_t *e) {
    static const char *const keys[2] = {"input_prefix", "input_suffix"};
    char **dst[2] = {&r->input_prefix, &r->input_suffix};
    int rc;
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(root, keys[k]);
        if (!v) return BAD(e, keys[k], "\"%s\" is required", keys[k]);
        if (!json_is_string(v)) return BAD(e, keys[k], "\"%s\" must be a string", keys[k]);
        if ((rc = dup_string(dst[k], v, keys[k], e)) < 0) return rc;
    }
    json_t *p = json_object_get(root, "prompt");
    if (p && !json_is_null(p) && !json_is_string(p)) return BAD(e, "prompt", "\"prompt\" must be a string");
    if (json_is_string(p) && (rc = dup_string(&r->prompt, p, "prompt", e)) < 0) return rc;
    json_t *x = json_object_get(root, "input_extra"), *el;
    if (!x || json_is_null(x)) return 0;
    if (!json_is_array(x))
        return BAD(e, "input_extra", "\"input_extra\" must be an array of {\"filename\": string, \"text\": string}");
    if (json_array_size(x) > SERVER_MAX_EXTRA)
        return BAD(e, "input_extra", "\"input_extra\" has more than %d chunks", SERVER_MAX_EXTRA);
    if (json_array_size(x) && !(r->extra = calloc(json_array_size(x), sizeof *r->extra)))
        return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    size_t i;
    json_array_foreach(x, i, el) {
        json_t *t = json_object_get(el, "text"), *f = json_object_get(el, "filename");
        if (!json_is_string(t))
            return BAD(e, "input_extra", "extra_context chunk must contain a \"text\" field with a string value");
        if (f && !json_is_string(f))
            return BAD(e, "input_extra", "extra_context chunk's \"filename\" field must be a string");
        infill_chunk_t *c = &r->extra[r->n_extra++];
        if ((rc = dup_string(&c->text, t, "input_extra", e)) < 0) return rc;
        if (f && (rc = dup_string(&c->filename, f, "input_extra", e)) < 0) return rc;
    }
    return 0;
}

static int parse_kind(server_req_t *r, json_t *root, server_err_t *e) {
    int rc;
    switch (r->kind) {
    case SERVER_REQ_COMPLETION:
        if ((rc = parse_prompt(r, root, "prompt", e)) < 0) return rc;
        return parse_generation(r, root, e);
    case SERVER_REQ_EMBEDDINGS: {
        json_t *f = json_object_get(root, "encoding_format");
        long long dim = -1;
        if (f && !json_is_null(f) && !(json_is_string(f) && (!strcmp(json_string_value(f), "float") ||
                                                               (r->base64 = !strcmp(json_string_value(f), "base64")))))
            return BAD(e, "encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
        if ((rc = get_int(root, "dimensions", 1, 1 << 20, &dim, e)) < 0) return rc;
        r->dimensions = (int)dim;
        return parse_prompt(r, root, json_object_get(root, "input") || !json_object_get(root, "content") ? "input"
                                                                                                           : "content", e);
    }
    case SERVER_REQ_NATIVE:
        if ((rc = parse_prompt(r, root, "prompt", e)) < 0) return rc;
        if ((rc = parse_native(r, root, e)) < 0) return rc;
        return parse_generation(r, root, e);
    case SERVER_REQ_INFILL:
        if ((rc = parse_infill(r, root, e)) < 0) return rc;
        if ((rc = parse_native(r, root, e)) < 0) return rc;
        return parse_generation(r, root, e);
    case SERVER_REQ_TEMPLATE:
        if ((rc = parse_messages(r, root, e)) < 0) return rc;
        return parse_reasoning(r, root, e);
    case SERVER_REQ_CHAT:
        if ((rc = parse_messages(r, root, e)) < 0) return rc;
        if ((rc = parse_reasoning(r, root, e)) < 0) return rc;
        if ((rc = parse_generation(r, root, e)) < 0) return rc;
        return server_tools_parse(r, root, e);
    case SERVER_REQ_TOKENIZE: {
        json_t *c = json_object_get(root, "content");
        if (!json_is_string(c)) return BAD(e, "content", "'content' must be a string");
        if ((rc = get_bool(root, "add_special", &r->add_special, e)) < 0) return rc;
        if ((rc = get_bool(root, "parse_special", &r->parse_special, e)) < 0) return rc;
        if ((rc = get_bool(root, "with_pieces", &r->with_pieces, e)) < 0) return rc;
        return dup_string(&r->prompt, c, "content", e);
    }
    case SERVER_REQ_DETOKENIZE: {
        json_t *t = json_object_get(root, "tokens");
        if (!json_is_array(t)) return BAD(e, "tokens", "'tokens' must be an array of token ids");
        return parse_ids(r, t, "tokens", 1, e);
    }
    }
    return BAD(e, NULL, "unknown request kind");
}

int server_req_parse(server_req_t *r, int kind, const char *body, size_t len, const sampler_params_t *def,
                     server_err_t *e) {
    return server_req_parse_fmt(r, kind, body, len, def, TOOLFMT_GENERIC, e);
}

int server_req_parse_fmt(server_req_t *r, int kind, const char *body, size_t len, const sampler_params_t *def,
                         int tool_fmt, server_err_t *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->tool_fmt = tool_fmt;
    r->max_tokens = -1;
    r->parse_special = 1;
    r->cache_prompt = 1;
    r->n_keep = SERVER_KEEP_DEFAULT;
    r->n = 1;
    r->id_slot = -1;
    r->reasoning_format = -1;
    r->reasoning_budget = SERVER_BUDGET_DEFAULT;
    if (def) r->sp = *def;
    else sampler_params_default(&r->sp);
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", len, 0, &jerr);
    if (!root)
        return server_err_set(e, 400, "invalid_request_error", "invalid_json", NULL,
                              "the request body is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                              jerr.column);
    int rc = json_is_object(root) ? parse_kind(r, root, e)
                                  : BAD(e, NULL, "the request body must be a JSON object");
    json_decref(root);
    if (rc < 0) server_req_free(r);
    return rc < 0 ? rc : 0;
}

void server_req_free(server_req_t *r) {
    free(r->prompt);
    free(r->ids);
    for (int i = 0; i < r->n_more; i++) { free(r->more[i].text); free(r->more[i].ids); }
    free(r->more);
    for (int i = 0; i < r->n_parts; i++) { free(r->parts[i].text); free(r->parts[i].ids); }
    free(r->parts);
    free(r->input_prefix);
    free(r->input_suffix);
    for (int i = 0; i < r->n_extra; i++) { free(r->extra[i].filename); free(r->extra[i].text); }
    free(r->extra);
    for (int i = 0; i < r->n_msgs; i++) {
        free((char *)r->msgs[i].role);
        free((char *)r->msgs[i].content);
        if (r->tool_ids) free(r->tool_ids[i]);
        if (r->msg_extra) json_decref(r->msg_extra[i]);
    }
    free(r->msgs);
    free(r->tool_ids);
    free(r->msg_extra);
    json_decref(r->tools_json);
    json_decref(r->tmpl_kwargs);
    json_decref(r->resp_echo);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->grammar);
    free(r->grammar_trigger);
    for (int i = 0; i < r->n_dry_breakers; i++) free(r->dry_breakers[i]);
    free(r->dry_breakers);
    int kind = r->kind;
    memset(r, 0, sizeof *r);
    r->kind = kind;
}

/* UTF-8 at s[0..n): the length of a valid character (*ok = 1), or else the length of the
 * longest start of one, at least 1 (*ok = 0), so that a cut character becomes one U+FFFD
 * (Unicode's "maximal subpart" rule, as Python and browsers do) */
static size_t utf8_step(const unsigned char *s, size_t n, int *ok) {
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t k = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    *ok = k == 1;
    if (k <= 1) return 1;
    if (c == 0xE0) lo = 0xA0;
    else if (c == 0xED) hi = 0x9F;
    else if (c == 0xF0) lo = 0x90;
    else if (c == 0xF4) hi = 0x8F;
    size_t i = 1;
    for (; i < k && i < n; i++) {
        if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xBF)) break;
    }
    *ok = i == k;
    return i;
}

void *server_json_text(const char *s, size_t n) {
    json_t *j = json_stringn(s, n);
    if (j) return j;
    char *buf = malloc(n * 3 + 1);   /* every bad byte becomes EF BF BD */
    if (!buf) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int ok;
        size_t k = utf8_step((const unsigned char *)s + i, n - i, &ok);
        if (ok) memcpy(buf + o, s + i, k), o += k;
        else memcpy(buf + o, "\xEF\xBF\xBD", 3), o += 3;
        i += k;
    }
    j = json_stringn(buf, o);
    free(buf);
    return j;
}

size_t server_text_chars(const char *s, size_t n) {
    size_t chars = 0;
    for (size_t i = 0; i < n; chars++) {
        int ok;
        i += utf8_step((const unsigned char *)s + i, n - i, &ok);
    }
    return chars;
}

int server_text_valid(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int ok;
        i += utf8_step((const unsigned char *)s + i, n - i, &ok);
        if (!ok) return 0;
    }
    return 1;
}
