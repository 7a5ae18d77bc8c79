/* server_gen: the generation routes (/v1/completions, /v1/chat/completions) and the token
 * routes (/tokenize, /detokenize). A generation request is parsed, its prompt tokenized and
 * checked against the context here on the connection's thread, then queued for the engine;
 * the thread waits for the whole reply, or streams it as server-sent events. A request with
 * several choices (a list of prompts, n) becomes one job a choice, run side by side: one reply
 * at the end, or one stream whose chunks of all choices interleave as they come (each naming
 * its choice's index); echo puts the prompt (and its tokens' log-probabilities) before the
 * generated text. /v1/embeddings (--embeddings) goes the same way, one job an input with nothing
 * to generate; its reply is server_embd.c's. */
#include "coordinator/server_int.h"
#include "coordinator/server_anthropic.h"
#include "coordinator/reasoning.h"
#include "coordinator/server_tools.h"
#include "coordinator/toolstream.h"
#include "coordinator/toolfmt.h"
#include "core/err.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/strbuf.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT_SLICE_MS 100   /* how often a waiting thread looks for a gone client or a timeout */

/* ---- prompt ------------------------------------------------------------------------ */

/* r's messages as the template takes them: where it has no tool turn, a "tool" message becomes
 * a user message "Tool result (ID): CONTENT". Returns r->msgs, or a copy whose rewritten
 * contents are the caller's to free with chat_view_free; NULL: out of memory. */
static chat_msg_t *chat_view(const tokenizer_t *tok, const server_req_t *r) {
    int any = 0;
    for (int i = 0; i < r->n_msgs; i++) any |= !strcmp(r->msgs[i].role, "tool");
    if (!any || chat_has_tool_role(tok)) return r->msgs;
    chat_msg_t *m = malloc((size_t)r->n_msgs * sizeof *m);
    for (int i = 0; m && i < r->n_msgs; i++) {
        m[i] = r->msgs[i];
        if (strcmp(m[i].role, "tool") != 0) continue;
        const char *id = r->tool_ids && r->tool_ids[i] ? r->tool_ids[i] : "";
        size_t n = strlen(id) + strlen(m[i].content) + 32;
        char *c = malloc(n);
        if (c) snprintf(c, n, "Tool result (%s): %s", id, m[i].content);
        m[i] = (chat_msg_t){"user", c ? c : ""};
    }
    return m;
}

static void chat_view_free(const server_req_t *r, chat_msg_t *m) {
    if (m == r->msgs) return;
    for (int i = 0; i < r->n_msgs; i++)
        if (!strcmp(r->msgs[i].role, "tool") && *m[i].content) free((char *)m[i].content);
    free(m);
}

/* the generic tool format renders calls into the content, so a template sees no extra fields
 * then, but for an assistant's reasoning_content: those alone (a new array; NULL: none to show
 * or out of memory) */
static void **reasoning_extra(const server_req_t *r) {
    void **x = NULL;
    for (int i = 0; r->msg_extra && i < r->n_msgs; i++) {
        json_t *rc = r->msg_extra[i] ? json_object_get(r->msg_extra[i], "reasoning_content") : NULL;
        if (!rc) continue;
        if (!x && !(x = calloc((size_t)r->n_msgs, sizeof *x))) return NULL;
        x[i] = json_pack("{s:O}", "reasoning_content", rc);
    }
    return x;
}

static char *chat_text_kw(const tokenizer_t *tok, const server_req_t *r, json_t *kwargs, server_err_t *e) {
    int cap = 4096;
    for (int i = 0; i < r->n_msgs; i++) cap += (int)(strlen(r->msgs[i].content) + strlen(r->msgs[i].role) + 64);
    for (int i = 0; r->tool_ids && i < r->n_msgs; i++) cap += r->tool_ids[i] ? (int)strlen(r->tool_ids[i]) + 32 : 0;
    chat_msg_t *m = chat_view(tok, r);
    char *buf = m && cap > 0 ? malloc((size_t)cap) : NULL;
    const char *const *ids = (const char *const *)r->tool_ids;
    /* a template with a native tool format sees the calls as objects and the tools (as HF's) */
    void **own = chat_tool_format(tok) == TOOLFMT_GENERIC ? reasoning_extra(r) : NULL;
    void *const *extra = chat_tool_format(tok) != TOOLFMT_GENERIC ? r->msg_extra : own;
    int need = buf ? chat_apply_vars(tok, m, r->n_msgs, ids, extra, r->tools_json, kwargs, 1, buf, cap) : TERN_ENOMEM;
    if (buf && need >= cap) {
        char *b2 = realloc(buf, (size_t)need + 1);
        if (b2) { buf = b2; need = chat_apply_vars(tok, m, r->n_msgs, ids, extra, r->tools_json, kwargs, 1, buf, need + 1); }
        else need = TERN_ENOMEM;
    }
    for (int i = 0; own && i < r->n_msgs; i++) json_decref(own[i]);
    free(own);
    if (m) chat_view_free(r, m);
    if (need < 0) {   /* a Jinja template that refuses the conversation: the client's to fix */
        free(buf);
        if (need == TERN_EINVAL && *chat_error())
            server_err_set(e, 400, "invalid_request_error", "invalid_value", "messages", "%s", chat_error());
        else
            server_err_set(e, 500, "server_error", NULL, NULL, "%s", need == TERN_ENOMEM ? "out of memory"
                           : *chat_error() ? chat_error() : "the model's chat template is not one tern knows");
        return NULL;
    }
    return buf;
}

char *server_gen_chat_text(const tokenizer_t *tok, const server_req_t *r, server_err_t *e) {
    return chat_text_kw(tok, r, r->tmpl_kwargs, e);
}

/* the request's reasoning budget, else the server's */
static int budget_of(const struct server *s, const server_req_t *r) {
    return r->reasoning_budget != SERVER_BUDGET_DEFAULT ? r->reasoning_budget : s->cfg.reasoning_budget;
}

/* llama.cpp's: enable_thinking is false under a reasoning budget of 0 (the request's, else
 * --reasoning-budget), else true; the server's --chat-template-kwargs over it, the request's
 * chat_template_kwargs over those */
char *server_gen_prompt_text(struct server *s, const server_req_t *r, server_err_t *e) {
    json_t *kw = json_pack("{s:b}", "enable_thinking", budget_of(s, r) != 0);
    void *srv = NULL;
    char why[160];
    if (kw && s->cfg.chat_template_kwargs && server_kwargs_parse(s->cfg.chat_template_kwargs, &srv, why, sizeof why) == 0 &&
        srv && json_object_update(kw, srv)) {
        json_decref(kw);
        kw = NULL;
    }
    json_decref(srv);
    if (!kw || (r->tmpl_kwargs && json_object_update(kw, r->tmpl_kwargs))) {
        json_decref(kw);
        server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
    }
    char *text = chat_text_kw(s->m->tok, r, kw, e);
    json_decref(kw);
    return text;
}

/* the prompt's token ids into j->ids / j->n_ids; 0 or <0 with e (400 for the client's fault) */
static int build_prompt(struct server *s, const server_req_t *r, job_t *j, server_err_t *e) {
    tern_model *m = s->m;
    const tokenizer_t *tok = m->tok;
    int n_ctx = m->n_ctx, n_vocab = tokenizer_n_vocab(tok);
    if (!(j->ids = malloc((size_t)(n_ctx + 1) * sizeof(int32_t))))
        return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    for (int i = 0; i < r->sp.n_bias; i++)
        if (r->sp.bias_id[i] >= n_vocab)
            return server_err_set(e, 400, "invalid_request_error", "invalid_value", "logit_bias",
                                  "logit_bias: token id %d is outside the vocabulary (%d tokens)", r->sp.bias_id[i], n_vocab);
    char why[160];
    if (r->ignore_eos && engine_ban_eog(m, &j->sp, why, sizeof why) < 0)
        return server_err_set(e, 400, "invalid_request_error", "invalid_value", "ignore_eos", "%s", why);
    if (r->dry_breakers && sampler_params_dry(&j->sp) &&
        engine_dry_breakers(m, (const char *const *)r->dry_breakers, r->n_dry_breakers, &j->sp, why, sizeof why) < 0)
        return server_err_set(e, 400, "invalid_request_error", "invalid_value", "dry_sequence_breakers", "%s", why);
    int n;
    if (r->ids) {
        for (int i = 0; i < r->n_ids; i++)
            if (r->ids[i] >= n_vocab)
                return server_err_set(e, 400, "invalid_request_error", "invalid_value",
                                      r->kind == SERVER_REQ_EMBEDDINGS ? "input" : "prompt",
                                      "token id %d is outside the vocabulary (%d tokens)", r->ids[i], n_vocab);
        n = r->n_ids;
        if (n <= n_ctx) memcpy(j->ids, r->ids, (size_t)n * sizeof(int32_t));
    } else {
        char *chat = r->kind == SERVER_REQ_CHAT ? server_gen_prompt_text(s, r, e) : NULL;
        if (r->kind == SERVER_REQ_CHAT && !chat) return TERN_EIO;
        if (chat) j->think_open = reasoning_prompt_open(chat, strlen(chat));
        const char *text = chat ? chat : r->prompt;
        n = tokenizer_encode(tok, text, strlen(text), tokenizer_add_bos(tok), 1, j->ids, n_ctx + 1);
        free(chat);
        if (n < 0) return server_err_set(e, 400, "invalid_request_error", "invalid_value", "prompt",
                                         "cannot tokenize the prompt");
        int bos = tokenizer_bos(tok);   /* a template that writes BOS itself: keep one */
        if (r->kind == SERVER_REQ_CHAT && n >= 2 && n <= n_ctx + 1 && bos >= 0 && j->ids[0] == bos &&
            j->ids[1] == bos) {
            memmove(j->ids, j->ids + 1, (size_t)(n - 1) * sizeof(int32_t));
            n--;
        }
    }
    if (n == 0)
        return server_err_set(e, 400, "invalid_request_error", "invalid_value", "prompt",
                              "the prompt is empty and the vocabulary has no BOS token");
    if (n >= n_ctx)
        return server_err_set(e, 400, "invalid_request_error", "context_length_exceeded",
                              r->kind == SERVER_REQ_CHAT ? "messages" : r->kind == SERVER_REQ_EMBEDDINGS ? "input" : "prompt",
                              "the %s has %d tokens but the context holds %d (the server's -c)",
                              r->kind == SERVER_REQ_EMBEDDINGS ? "input" : "prompt", n, n_ctx);
    j->n_ids = n;
    return 0;
}

/* ---- reply JSON --------------------------------------------------------------------- */

static const char *finish_name(int finish) {
    return finish == SCHED_STOP ? "stop" : "length";
}

void *server_gen_usage(job_t *const *jobs, int k, int n) {
    int pt = 0, ct = 0, cached = 0, least = 0;
    for (int c = 0; c < k; c++) {
        /* a prompt counts once, as OpenAI's n does; its cached tokens are the fewest any choice
         * had: a choice that copied the prompt from a sibling (KV copy) found rows computed for
         * this very request, not a cache, so the prompt's uncached part is the most any one
         * choice computed (usually the first's; /metrics counts every choice's copies) */
        if (c % n == 0) pt += jobs[c]->n_ids, cached += least, least = jobs[c]->n_cached;
        if (jobs[c]->n_cached < least) least = jobs[c]->n_cached;
        ct += jobs[c]->n_gen;
    }
    cached += least;
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", pt, "completion_tokens", ct, "total_tokens", pt + ct,
                     "prompt_tokens_details", "cached_tokens", cached);
}

static json_t *timings_json(const job_t *j) {
    double pms = j->t_first > j->t_start ? (j->t_first - j->t_start) * 1e3 : 0;
    double gms = j->t_end > j->t_first && j->t_first > 0 ? (j->t_end - j->t_first) * 1e3 : 0;
    int fed = j->n_ids - j->n_cached;   /* llama.cpp's: prompt_n counts what was processed, cache_n the rest */
    return json_pack("{s:i, s:i, s:f, s:f, s:i, s:f, s:f}", "cache_n", j->n_cached, "prompt_n", fed, "prompt_ms", pms,
                     "prompt_per_second", pms > 0 ? fed / (pms / 1e3) : 0.0, "predicted_n", j->n_gen, "predicted_ms", gms,
                     "predicted_per_second", gms > 0 && j->n_gen > 1 ? (j->n_gen - 1) / (gms / 1e3) : 0.0);
}

static json_t *reply_base(struct server *s, const job_t *j, const char *object) {
    return json_pack("{s:s, s:s, s:I, s:s, s:s}", "id", j->id, "object", object, "created", (json_int_t)j->created,
                     "model", s->model_id, "system_fingerprint", "tern");
}

/* ---- logprobs ---------------------------------------------------------------------------
 * The sampled tokens' log-probabilities in OpenAI's shapes, with the N most likely alternatives
 * the last stage sends along (proto Sampled top_ids): completions' top_logprobs (a {token:
 * logprob} object per position; null when N = 0) and chat's top_logprobs ([{token, logprob,
 * bytes}] per entry). */

/* token id's bytes as they add to the text (control tokens: none); *n its length. Returns buf,
 * or a malloc'd copy the caller frees when the piece is longer than cap */
static char *lp_piece(const tokenizer_t *tok, int id, char *buf, int cap, int *n) {
    int k = tokenizer_piece(tok, id, 0, buf, cap);
    *n = k > 0 && k <= cap ? k : 0;
    if (k <= cap) return buf;
    char *p = malloc((size_t)k);
    if (p && tokenizer_piece(tok, id, 0, p, k) == k) { *n = k; return p; }
    free(p);
    return buf;
}

static json_t *lp_value(float x) { return json_real(isfinite(x) ? (double)x : -9999.0); }

/* a completions "tokens" entry: the piece, or when it is part of a character OpenAI's
 * "bytes:\\xNN..." */
static json_t *lp_token_text(const char *p, int n) {
    if (server_text_valid(p, (size_t)n)) return json_stringn(p, (size_t)n);
    char *hex = malloc((size_t)n * 4 + 8);
    if (!hex) return NULL;
    int h = sprintf(hex, "bytes:");
    for (int k = 0; k < n; k++) h += sprintf(hex + h, "\\x%02x", (unsigned char)p[k]);
    json_t *o = json_string(hex);
    free(hex);
    return o;
}

/* a chat entry: token, logprob, its bytes (alternatives: the caller adds top_logprobs) */
static json_t *lp_chat_entry(const char *p, int n, float logprob) {
    json_t *bytes = json_array();
    for (int k = 0; k < n; k++) json_array_append_new(bytes, json_integer((unsigned char)p[k]));
    return json_pack("{s:o, s:o, s:o}", "token", server_json_text(p, (size_t)n), "logprob", lp_value(logprob), "bytes",
                     bytes);
}

/* record i's alternatives (nt of them at ids/lps + i * stride): chat's [{token, logprob,
 * bytes}], or completions' {token: logprob} (a token text that repeats keeps its first, most
 * likely, value) */
static json_t *lp_top(struct server *s, int i, int nt, int stride, const int32_t *ids, const float *lps, int chat) {
    json_t *o = chat ? json_array() : json_object();
    for (int k = 0; k < nt; k++) {
        size_t at = (size_t)i * (size_t)stride + (size_t)k;
        char buf[512];
        int n;
        char *p = lp_piece(s->m->tok, ids[at], buf, sizeof buf, &n);
        if (chat) {
            json_array_append_new(o, lp_chat_entry(p, n, lps[at]));
        } else {
            json_t *key = lp_token_text(p, n);
            const char *ks = key ? json_string_value(key) : NULL;
            if (ks && !json_object_get(o, ks)) json_object_set_new(o, ks, lp_value(lps[at]));
            json_decref(key);
        }
        if (p != buf) free(p);
    }
    return o;
}

/* completions with echo: the prompt's tokens first (the first has no log-probability: null) */
static void lp_json_prompt(struct server *s, const job_t *j, json_t *toks, json_t *vals, json_t *tops, json_t *offs) {
    for (int i = 0; i < j->n_ids; i++) {
        char buf[512];
        int n;
        char *p = lp_piece(s->m->tok, j->ids[i], buf, sizeof buf, &n);
        const job_lp_t *r = &j->plp[i];
        json_array_append_new(toks, lp_token_text(p, n));
        json_array_append_new(vals, i ? lp_value(r->logprob) : json_null());
        json_array_append_new(offs, json_integer(r->cstart));
        if (j->n_top)
            json_array_append_new(tops, i ? lp_top(s, i, r->n_top, j->n_top, j->ptop_ids, j->ptop_lp, 0) : json_null());
        if (p != buf) free(p);
    }
}

/* records [a, b) of j->lp as the reply's "logprobs" object, after the prompt's when prompt is
 * set (echo; caller holds s->mu); NULL when the request did not ask (the reply then says null) */
static json_t *lp_json(struct server *s, const job_t *j, int a, int b, int prompt) {
    if (!j->logprobs) return NULL;
    int chat = j->kind == SERVER_REQ_CHAT;
    json_t *toks = json_array(), *vals = json_array(), *offs = json_array();
    json_t *tops = j->n_top ? json_array() : json_null();
    if (prompt && j->plp) lp_json_prompt(s, j, toks, vals, tops, offs);
    for (int i = a; i < b; i++) {
        char buf[512];
        int n;
        char *p = lp_piece(s->m->tok, j->lp[i].token, buf, sizeof buf, &n);
        if (chat) {
            json_t *e = lp_chat_entry(p, n, j->lp[i].logprob);
            json_object_set_new(e, "top_logprobs", lp_top(s, i, j->lp[i].n_top, j->n_top, j->top_ids, j->top_lp, 1));
            json_array_append_new(toks, e);
        } else {
            json_array_append_new(toks, lp_token_text(p, n));
            json_array_append_new(vals, lp_value(j->lp[i].logprob));
            json_array_append_new(offs, json_integer((json_int_t)j->lp[i].cstart + (json_int_t)j->echo_chars));
            if (j->n_top) json_array_append_new(tops, lp_top(s, i, j->lp[i].n_top, j->n_top, j->top_ids, j->top_lp, 0));
        }
        if (p != buf) free(p);
    }
    if (chat) {
        json_decref(vals);
        json_decref(offs);
        json_decref(tops);
        return json_pack("{s:o}", "content", toks);
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", toks, "token_logprobs", vals, "top_logprobs", tops,
                     "text_offset", offs);
}

/* the id of choice index's tool call: unique as the job's id is ("call_" + its unique part) */
static void tool_call_id(const job_t *j, int index, char out[64]) {
    const char *u = strchr(j->id, '-');
    snprintf(out, 64, "call_%s%02d", u ? u + 1 : j->id, index);
}

/* a finished job's entry in "choices" (caller holds s->mu) */
static json_t *choice_json(struct server *s, const job_t *j, int index) {
    int chat = j->kind == SERVER_REQ_CHAT;
    json_t *text;
    if (j->echo_text) {   /* the prompt, then what was generated */
        char *all = malloc(j->echo_len + j->out_len + 1);
        if (all) {
            memcpy(all, j->echo_text, j->echo_len);
            if (j->out_len) memcpy(all + j->echo_len, j->out, j->out_len);
        }
        text = all ? server_json_text(all, j->echo_len + j->out_len) : NULL;
        free(all);
    } else {
        text = server_json_text(j->out ? j->out : "", j->out_len);
    }
    json_t *lp = lp_json(s, j, 0, j->lp_final, 1);
    const char *out = j->out ? j->out : "";
    reasoning_split_t rs = {0, 0, 0, j->out_len};
    if (chat && j->reason) {   /* the thinking apart; the rest is the reply */
        size_t scan = 0;
        reasoning_split(out, j->out_len, j->think_open, 1, &scan, &rs);
        json_decref(text);
        text = server_json_text(out + rs.c0, rs.c1 - rs.c0);
    }
    json_t *think = rs.r1 > rs.r0 ? server_json_text(out + rs.r0, rs.r1 - rs.r0) : NULL;
    if (chat && j->tools) {   /* the reply object parsed back into a message */
        const char *fin;
        char call_id[64];
        tool_call_id(j, index, call_id);
        json_t *msg = server_tools_reply(j->tool_fmt, out + rs.c0, rs.c1 - rs.c0, call_id, 0, finish_name(j->finish), &fin);
        if (msg && think) json_object_set(msg, "reasoning_content", think);
        json_decref(think);
        json_decref(text);
        return json_pack("{s:i, s:o, s:o?, s:s}", "index", index, "message", msg, "logprobs", lp, "finish_reason", fin);
    }
    if (chat && think) {
        json_t *msg = json_pack("{s:s, s:o, s:o}", "role", "assistant", "content", text, "reasoning_content", think);
        return json_pack("{s:i, s:o, s:o?, s:s}", "index", index, "message", msg, "logprobs", lp, "finish_reason",
                         finish_name(j->finish));
    }
    json_decref(think);
    return chat ? json_pack("{s:i, s:{s:s, s:o}, s:o?, s:s}", "index", index, "message", "role", "assistant", "content",
                            text, "logprobs", lp, "finish_reason", finish_name(j->finish))
                : json_pack("{s:o, s:i, s:o?, s:s}", "text", text, "index", index, "logprobs", lp, "finish_reason",
                            finish_name(j->finish));
}

/* the non-streamed reply of k finished jobs, choice c from jobs[c]; n choices per prompt (prompt
 * tokens count once a prompt); timings are the first job's (caller holds s->mu) */
static json_t *final_reply(struct server *s, job_t *const *jobs, int k, int n) {
    const job_t *j = jobs[0];
    if (j->kind == SERVER_REQ_EMBEDDINGS) return server_embd_reply(s, jobs, k);
    if (j->api == SERVER_API_ANTHROPIC) return server_anthropic_reply(s, j);   /* one choice */
    if (j->api == SERVER_API_RESPONSES) return server_responses_reply(s, jobs[0]);   /* one choice */
    if (j->kind == SERVER_REQ_NATIVE) return server_native_reply(s, jobs, k);
    json_t *o = reply_base(s, j, j->kind == SERVER_REQ_CHAT ? "chat.completion" : "text_completion");
    json_t *choices = json_array();
    for (int c = 0; c < k; c++) json_array_append_new(choices, choice_json(s, jobs[c], c));
    json_object_set_new(o, "choices", choices);
    json_object_set_new(o, "usage", server_gen_usage(jobs, k, n));
    json_object_set_new(o, "timings", timings_json(j));
    return o;
}

/* the error for a job that did not finish normally (caller holds s->mu) */
static void job_err(const job_t *j, server_err_t *e) {
    if (j->finish == SCHED_ERROR && (j->err_code == TERN_EPEER || j->err_code == TERN_ETIMEOUT))   /* cluster */
        server_err_set(e, 503, "unavailable_error", "cluster_unavailable", NULL, "%s", j->errmsg);
    else if (j->finish == SCHED_ERROR) server_err_set(e, 500, "server_error", NULL, NULL, "%s", j->errmsg);
    else if (j->cancel == JOB_CANCEL_TIMEOUT)
        server_err_set(e, 504, "timeout_error", "timeout", NULL, "the request ran past the server's --timeout");
    else server_err_set(e, 503, "unavailable_error", "shutting_down", NULL, "the server is shutting down");
}

/* one wait slice on w's condition variable (which the engine signals for j too: w is j or its
 * request's lead): notices a timeout or a gone client and flags j (caller holds s->mu) */
static int wait_slice(struct server *s, job_t *w, job_t *j) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += WAIT_SLICE_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&w->cv, &s->mu, &ts);
    if (j->cancel || j->state == JOB_DONE) return j->cancel;
    if (j->deadline > 0 && time_now() > j->deadline) j->cancel = JOB_CANCEL_TIMEOUT;
    else if (server_conn_gone(j->conn)) j->cancel = JOB_CANCEL_GONE;
    if (j->cancel) pthread_cond_signal(&s->engine_cv);
    return j->cancel;
}

/* calls off for why every job of jobs[0..k) not done nor called off yet, and wakes the engine to
 * drop them (caller holds s->mu) */
static void jobs_cancel(struct server *s, job_t *const *jobs, int k, int why) {
    int any = 0;
    for (int q = 0; q < k; q++)
        if (jobs[q]->state != JOB_DONE && !jobs[q]->cancel) jobs[q]->cancel = why, any = 1;
    if (any) pthread_cond_signal(&s->engine_cv);
}

/* One wait slice over a request's jobs[0..k) (caller holds s->mu) on jobs[0]'s condition
 * variable, which the engine signals for every job of the request (job_t.lead); the first job
 * not done is checked for a timeout or a gone client, which then calls off every job not done.
 * Returns that reason (JOB_CANCEL_*) or 0; -1 when all are done (no wait). */
static int group_wait(struct server *s, job_t *const *jobs, int k) {
    int i = 0;
    while (i < k && jobs[i]->state == JOB_DONE) i++;
    if (i == k) return -1;
    int why = wait_slice(s, jobs[0], jobs[i]);
    if (why) jobs_cancel(s, jobs, k, why);
    return why;
}

/* ---- streaming ----------------------------------------------------------------------
 * One SSE stream a request. MHD's content reader (on the connection's thread) formats what the
 * engine has released into the first choice's sse buffer, under the server mutex, and waits
 * when nothing is ready. The chunks of several choices interleave as they come, each naming its
 * choice's index; each choice ends with its own finish_reason chunk; then one usage chunk over
 * all of them (include_usage) and [DONE]. A choice that fails ends the stream where it fails,
 * as with one choice: its error event, then [DONE] (the reader's end calls the others off). */

typedef struct sse {
    job_t *jobs[SERVER_MAX_CHOICES];   /* by choice index: the reader's references */
    int k, n;                          /* choices; choices per prompt (usage counts a prompt once) */
    int done;                          /* [DONE] is formatted */
} sse_t;

/* appends "event: NAME\n" (name NULL: none, as OpenAI's chat streams) and "data: BODY\n\n" to
 * j's unsent stream bytes; out of memory: nothing */
static void sse_event(job_t *j, const char *name, const char *body) {
    size_t need = j->sse_len + (name ? strlen(name) : 0) + strlen(body) + 32;
    if (need > j->sse_cap) {
        char *p = realloc(j->sse, need * 2);
        if (!p) return;
        j->sse = p;
        j->sse_cap = need * 2;
    }
    if (name) j->sse_len += (size_t)sprintf(j->sse + j->sse_len, "event: %s\n", name);
    j->sse_len += (size_t)sprintf(j->sse + j->sse_len, "data: %s\n\n", body);
}

void server_gen_sse_put(job_t *j, const char *name, void *o, const char *oom) {
    char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    sse_event(j, txt || !name ? name : "error", txt ? txt : oom);
    free(txt);
}

static void sse_put(job_t *j, json_t *o) {
    server_gen_sse_put(j, NULL, o, "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}");
}

/* a chunk of request h's choice `index` with text (NULL: none), finish reason (NULL: still
 * running) and logprobs (NULL: null; stolen) */
static json_t *chunk_delta(struct server *s, const job_t *h, int index, json_t *delta, const char *text, size_t n,
                           const char *finish, json_t *lp);
static json_t *chunk(struct server *s, const job_t *h, int index, const char *text, size_t n, const char *finish,
                     int role, json_t *lp) {
    json_t *delta = NULL;
    if (h->kind == SERVER_REQ_CHAT) {
        delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string("assistant"));
        if (text) json_object_set_new(delta, "content", server_json_text(text, n));
    }
    return chunk_delta(s, h, index, delta, text, n, finish, lp);
}

/* chunk() with chat's delta given (stolen) */
static json_t *chunk_delta(struct server *s, const job_t *h, int index, json_t *delta, const char *text, size_t n,
                           const char *finish, json_t *lp) {
    int chat = h->kind == SERVER_REQ_CHAT;
    json_t *o = reply_base(s, h, chat ? "chat.completion.chunk" : "text_completion");
    json_t *fin = finish ? json_string(finish) : json_null(), *c;
    if (chat) {
        c = json_pack("{s:i, s:o, s:o?, s:o}", "index", index, "delta", delta, "logprobs", lp, "finish_reason", fin);
    } else {
        c = json_pack("{s:i, s:o, s:o?, s:o}", "index", index, "text", server_json_text(text ? text : "", n),
                      "logprobs", lp, "finish_reason", fin);
    }
    json_object_set_new(o, "choices", json_pack("[o]", c));
    if (h->include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

/* sse_choice for a tools reply: the released text goes through the job's reader (toolstream.h),
 * and what it has decided goes out as OpenAI's delta — content as it comes, a call once its
 * name is read, its arguments as they are generated; once j is done, the rest with all the
 * logprobs, and the finish chunk */
static int sse_tools(struct server *s, job_t *h, job_t *j, int c, int failed) {
    if (!j->ts && (j->ts = malloc(sizeof *j->ts))) toolstream_init(j->ts, j->tool_fmt);
    if (!j->ts) return 1;
    int rc = 0;
    json_t *think = NULL;
    if (j->reason) {   /* the thinking goes out as reasoning_content; the text after it feeds the reader */
        const char *r, *t;
        size_t nr, nc;
        server_gen_reason_new(j, &r, &nr, &t, &nc);
        if (nr) think = server_json_text(r, nr);
        if (nc) rc = toolstream_feed(j->ts, t, nc);
    } else {
        rc = j->out_len ? toolstream_feed(j->ts, j->out, j->out_len) : 0;
        j->out_len = 0;
    }
    if (rc == 0 && j->state == JOB_DONE && !failed) rc = toolstream_finish(j->ts);
    if (rc < 0) { json_decref(think); return 1; }
    char call_id[64];
    tool_call_id(j, c, call_id);
    json_t *delta = failed ? NULL : server_tools_delta(j->ts, call_id);
    if (delta && think) json_object_set_new(delta, "reasoning_content", think);
    else json_decref(think);
    json_t *lp = j->state == JOB_DONE && !failed && j->lp_final > 0 ? lp_json(s, j, 0, j->lp_final, 0) : NULL;
    if (delta && (json_object_size(delta) || lp)) sse_put(h, chunk_delta(s, h, c, delta, NULL, 0, NULL, lp));
    else { json_decref(delta); json_decref(lp); }
    if (j->state != JOB_DONE) return 0;
    if (failed) return 1;
    sse_put(h, chunk(s, h, c, NULL, 0, server_tools_finish(j->ts, finish_name(j->finish)), 0, NULL));
    j->lp_sent = j->lp_final;
    j->sse_phase = 2;
    return 0;
}

/* sse_choice's text for a job that splits its thinking: j->out joins the text so far, whose split
 * (final once j is done) sends what is new of the reasoning and of the content as one delta, with
 * the log-probabilities of the tokens whose text is all out. Out of memory: j->out waits for the
 * next call. */
void server_gen_reason_new(job_t *j, const char **r, size_t *nr, const char **c, size_t *nc) {
    int room = 1;
    if (j->out_len && j->racc_len + j->out_len > j->racc_cap) {
        size_t cap = (j->racc_len + j->out_len) * 2 + 64;
        char *p = realloc(j->racc, cap);
        if (p) j->racc = p, j->racc_cap = cap;
        else room = 0;
    }
    if (room && j->out_len) {
        memcpy(j->racc + j->racc_len, j->out, j->out_len);
        j->racc_len += j->out_len;
        j->out_len = 0;
    }
    reasoning_split_t rs;
    const char *t = j->racc ? j->racc : "";
    reasoning_split(t, j->racc_len, j->think_open, j->state == JOB_DONE && room, &j->rscan, &rs);
    *r = t + rs.r0 + j->rsent, *nr = rs.r1 - rs.r0 - j->rsent;
    *c = t + rs.c0 + j->csent, *nc = rs.c1 - rs.c0 - j->csent;
    j->rsent += *nr;
    j->csent += *nc;
}

/* deepseek-legacy's stream (llama.cpp's reasoning_in_content): the thinking stays in the content,
 * as "<think>" THINKING "</think>" ANSWER with the split's trimming, the tags only around a
 * thinking that is not empty (the close once the answer begins, or at the end when the text
 * closed it). A new content text of the pieces r[0..nr), t[0..nc); NULL when nothing is new. */
static json_t *reason_inline(job_t *j, const char *r, size_t nr, const char *t, size_t nc) {
    static const char OPEN[] = "<think>";
    strbuf_t b = {0};
    if (nr && j->think_tag == 0) { strbuf_puts(&b, OPEN); j->think_tag = 1; }
    strbuf_add(&b, r, nr);
    int closed = j->state == JOB_DONE && j->racc && reasoning_closed(j->racc, j->racc_len, j->think_open);
    if (j->think_tag == 1 && (nc || closed)) { strbuf_puts(&b, reasoning_close_marker()); j->think_tag = 2; }
    strbuf_add(&b, t, nc);
    json_t *o = b.n && !b.err ? server_json_text(b.p, b.n) : NULL;
    free(b.p);
    return o;
}

static void sse_reason(struct server *s, job_t *h, job_t *j, int c) {
    const char *r, *t;
    size_t nr, nc;
    server_gen_reason_new(j, &r, &nr, &t, &nc);
    json_t *inl = j->reason_inline ? reason_inline(j, r, nr, t, nc) : NULL;
    if (!nr && !nc && !inl) return;
    json_t *delta = json_object();
    if (inl) json_object_set_new(delta, "content", inl);
    else if (nr) json_object_set_new(delta, "reasoning_content", server_json_text(r, nr));
    if (nc && !j->reason_inline) json_object_set_new(delta, "content", server_json_text(t, nc));
    int k = j->lp_sent;
    while (k < j->n_lp && j->lp[k].bend <= j->out_total) k++;
    sse_put(h, chunk_delta(s, h, c, delta, NULL, 0, NULL, lp_json(s, j, j->lp_sent, k, 0)));
    j->lp_sent = k;
}

/* sse_choice for /completion (llama.cpp's stream): a chunk for the released text, then the
 * final chunk with the summary (server_native.c's shapes) */
static int sse_native(struct server *s, job_t *h, job_t *j, int c, int failed) {
    if (j->out_len) {
        sse_put(h, server_native_chunk(s, j, c, j->out, j->out_len));
        j->out_len = 0;
    }
    if (j->state != JOB_DONE) return 0;
    if (failed) return 1;
    sse_put(h, server_native_final(s, j, c));
    j->sse_phase = 2;
    return 0;
}

/* Formats what choice c (job j) has ready into h's stream (caller holds s->mu): the role first
 * (chat), the echoed prompt once its tokens are scored, the released text with the tokens whose
 * text is all out, and once j is done its last chunk. Returns 1 when j failed (error or called
 * off: the caller ends the stream with its error), else 0. */
static int sse_choice(struct server *s, job_t *h, job_t *j, int c) {
    int failed = j->state == JOB_DONE && (j->finish == SCHED_ERROR || j->finish == SCHED_CANCEL);
    if (j->sse_phase == 2) return 0;
    if (j->sse_phase == 0) {
        j->sse_phase = 1;
        if (j->kind == SERVER_REQ_CHAT) sse_put(h, chunk(s, h, c, "", 0, NULL, 1, NULL));
    }
    if (j->echo_text && !j->echo_sent) {   /* before any generated token */
        if (j->plp && j->n_plp < j->n_ids && j->state != JOB_DONE) return 0;
        if (!failed) sse_put(h, chunk(s, h, c, j->echo_text, j->echo_len, NULL, 0, lp_json(s, j, 0, 0, 1)));
        j->echo_sent = 1;
    }
    if (j->tools) return sse_tools(s, h, j, c, failed);
    if (j->kind == SERVER_REQ_NATIVE) return sse_native(s, h, j, c, failed);
    if (j->reason && !failed) sse_reason(s, h, j, c);
    if (j->out_len) {
        int k = j->lp_sent;
        while (k < j->n_lp && j->lp[k].bend <= j->out_total) k++;
        sse_put(h, chunk(s, h, c, j->out, j->out_len, NULL, 0, lp_json(s, j, j->lp_sent, k, 0)));
        j->lp_sent = k;
        j->out_len = 0;
    }
    if (j->state != JOB_DONE) return 0;
    if (failed) return 1;
    json_t *lp = j->lp_final > j->lp_sent ? lp_json(s, j, j->lp_sent, j->lp_final, 0) : NULL;
    sse_put(h, chunk(s, h, c, NULL, 0, finish_name(j->finish), 0, lp));
    j->lp_sent = j->lp_final;
    j->sse_phase = 2;
    return 0;
}

/* the end of stream g after its choices: the failed one's error, or the usage chunk; then [DONE]
 * (caller holds s->mu) */
static void sse_end(struct server *s, sse_t *g, int bad) {
    job_t *h = g->jobs[0];
    if (h->api == SERVER_API_ANTHROPIC) {   /* no usage chunk nor [DONE]: an error event at most */
        server_err_t e;
        if (bad >= 0) job_err(g->jobs[bad], &e);
        server_anthropic_sse_end(h, bad >= 0 ? &e : NULL);
        g->done = 1;
        return;
    }
    if (h->api == SERVER_API_RESPONSES) {   /* likewise: response.completed was the last event */
        server_err_t e;
        if (bad >= 0) job_err(g->jobs[bad], &e);
        server_responses_sse_end(h, bad >= 0 ? &e : NULL);
        g->done = 1;
        return;
    }
    if (bad >= 0) {
        server_err_t e;
        job_err(g->jobs[bad], &e);
        char *txt = server_err_json(&e);
        if (txt) sse_event(h, NULL, txt);
        free(txt);
    } else if (h->include_usage && h->kind != SERVER_REQ_NATIVE) {
        json_t *o = reply_base(s, h, h->kind == SERVER_REQ_CHAT ? "chat.completion.chunk" : "text_completion");
        json_object_set_new(o, "choices", json_array());
        json_object_set_new(o, "usage", server_gen_usage(g->jobs, g->k, g->n));
        json_object_set_new(o, "timings", timings_json(h));
        sse_put(h, o);
    }
    if (h->kind != SERVER_REQ_NATIVE) sse_event(h, NULL, "[DONE]");   /* llama.cpp's own stream has none */
    g->done = 1;
}

/* formats the next events of g into its first job's buffer, waiting until there are some; <0
 * when the client is gone */
static int sse_fill(struct server *s, sse_t *g) {
    job_t *h = g->jobs[0];
    if (g->done) return 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int ended = 0, bad = -1;
        for (int c = 0; c < g->k && bad < 0; c++) {
            if (h->api == SERVER_API_ANTHROPIC   ? server_anthropic_sse(s, g->jobs[c])
                : h->api == SERVER_API_RESPONSES ? server_responses_sse(s, g->jobs[c])
                                                 : sse_choice(s, h, g->jobs[c], c))
                bad = c;
            ended += g->jobs[c]->sse_phase == 2;
        }
        if (bad >= 0 || ended == g->k) sse_end(s, g, bad);
        if (h->sse_len) break;
        if (group_wait(s, g->jobs, g->k) == JOB_CANCEL_GONE) { pthread_mutex_unlock(&s->mu); return -1; }
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    sse_t *g = cls;
    job_t *h = g->jobs[0];
    (void)pos;
    if (h->sse_pos == h->sse_len) {
        h->sse_pos = h->sse_len = 0;
        if (sse_fill(h->srv, g) < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (h->sse_len == 0) return MHD_CONTENT_READER_END_OF_STREAM;
    }
    size_t n = h->sse_len - h->sse_pos < max ? h->sse_len - h->sse_pos : max;
    memcpy(buf, h->sse + h->sse_pos, n);
    h->sse_pos += n;
    return (ssize_t)n;
}

/* drops the reader's references to jobs[0..k), calling off those not done */
static void sse_drop(struct server *s, job_t *const *jobs, int k) {
    pthread_mutex_lock(&s->mu);
    jobs_cancel(s, jobs, k, JOB_CANCEL_GONE);
    for (int c = 0; c < k; c++) {
        if (c > 0) jobs[c]->conn = NULL;   /* the first's is the connection's to clear */
        server_job_unref(s, jobs[c]);
    }
    pthread_mutex_unlock(&s->mu);
}

static void sse_free(void *cls) {
    sse_t *g = cls;
    sse_drop(g->jobs[0]->srv, g->jobs, g->k);
    free(g);
}

/* Answers with the stream of a request's queued jobs[0..k), n choices per prompt. The reader
 * takes a reference to jobs[0] (the connection keeps its own) and the request's references to
 * the others. MHD_NO when the response cannot be made (the jobs are then called off). */
static enum MHD_Result stream_reply(struct server *s, struct MHD_Connection *c, job_t *const *jobs, int k, int n) {
    pthread_mutex_lock(&s->mu);
    jobs[0]->refs++;
    pthread_mutex_unlock(&s->mu);
    sse_t *g = calloc(1, sizeof *g);
    struct MHD_Response *resp = NULL;
    if (g) {
        memcpy(g->jobs, jobs, (size_t)k * sizeof *jobs);
        g->k = k;
        g->n = n;
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, g, sse_free);
    }
    if (!resp) {
        sse_drop(s, jobs, k);
        free(g);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    server_cors(resp);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- routes -------------------------------------------------------------------------- */

static job_t *job_new(struct server *s, server_req_t *r) {
    job_t *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_cond_init(&j->cv, NULL);
    j->srv = s;
    j->refs = 1;
    j->slot = -1;
    j->want_slot = r->id_slot;
    j->kind = r->kind;
    j->api = r->api;
    j->stream = r->stream;
    j->include_usage = r->stream && r->include_usage;
    j->ignore_eos = r->ignore_eos;
    j->logprobs = r->logprobs;
    j->tools = r->kind == SERVER_REQ_CHAT && r->tools != SERVER_TOOLS_NONE;
    j->tool_fmt = r->tool_fmt;
    int rf = r->reasoning_format >= 0 ? r->reasoning_format : s->cfg.reasoning_format;
    j->reason = r->kind == SERVER_REQ_CHAT && (rf == REASONING_DEEPSEEK || rf == REASONING_DEEPSEEK_LEGACY ||
                                               (rf == REASONING_AUTO && chat_template_thinks(s->m->tok)));
    j->reason_inline = j->reason && r->stream && rf == REASONING_DEEPSEEK_LEGACY && r->api == SERVER_API_OPENAI;
    j->think_budget = r->kind == SERVER_REQ_CHAT ? budget_of(s, r) : -1;
    j->echo = r->echo;
    j->cache_prompt = r->cache_prompt;
    j->n_keep = r->n_keep != SERVER_KEEP_DEFAULT ? r->n_keep : s->cfg.n_keep;
    j->sp = r->sp;
    /* the server's own grammar never holds a tools reply (a native "auto" one may have none) */
    const char *gbnf = r->grammar ? r->grammar : r->tools == SERVER_TOOLS_NONE ? s->cfg.grammar : NULL;
    if ((gbnf && !(j->grammar = strdup(gbnf))) ||
        (gbnf && r->grammar_trigger && !(j->grammar_trigger = strdup(r->grammar_trigger)))) {
        free(j->grammar);
        pthread_cond_destroy(&j->cv);
        free(j);
        return NULL;
    }
    for (int i = 0; i < r->n_stop; i++) { j->stop[i] = r->stop[i]; r->stop[i] = NULL; }
    j->n_stop = r->n_stop;
    r->n_stop = 0;
    pthread_mutex_lock(&s->mu);
    uint64_t seq = s->next_id++;
    pthread_mutex_unlock(&s->mu);
    j->created = (long long)time(NULL);
    if (!r->seed_set && !s->cfg.seed_fixed)   /* a fresh seed per request, as llama.cpp does */
        j->sp.seed ^= (seq + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)j->created * 0xBF58476D1CE4E5B9ull;
    if (r->api == SERVER_API_RESPONSES) {   /* one choice: the first job takes the echo */
        j->resp_echo = r->resp_echo;
        r->resp_echo = NULL;
    }
    snprintf(j->id, sizeof j->id, r->api != SERVER_API_OPENAI ? "%s_%llx%06llx" : "%s-%llx%06llx",
             r->api == SERVER_API_ANTHROPIC ? "msg" : r->api == SERVER_API_RESPONSES ? "resp"
             : r->kind == SERVER_REQ_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)j->created, (unsigned long long)seq & 0xffffff);
    return j;
}

/* echo: the prompt's text (its ids decoded as a whole text decodes) and, with logprobs,
 * room for its tokens' records with their text offsets. 0 or <0 with e (500: out of memory). */
static int echo_prepare(struct server *s, job_t *j, server_err_t *e) {
    int bcap = tokenizer_max_piece(s->m->tok) + 8;
    size_t cap = 256, len = 0, chars = 0;
    char *t = malloc(cap), *buf = malloc((size_t)bcap);
    if (j->logprobs) {
        j->plp = calloc((size_t)j->n_ids, sizeof *j->plp);
        if (j->n_top) {
            j->ptop_ids = malloc((size_t)j->n_ids * (size_t)j->n_top * sizeof(int32_t));
            j->ptop_lp = malloc((size_t)j->n_ids * (size_t)j->n_top * sizeof(float));
        }
    }
    int ok = t && buf && (!j->logprobs || (j->plp && (!j->n_top || (j->ptop_ids && j->ptop_lp))));
    detok_t d;   /* as the whole text decodes: SPM's leading space dropped, cut characters held */
    detok_init(&d, s->m->tok, 0);
    for (int i = 0; ok && i <= j->n_ids; i++) {
        int n = i < j->n_ids ? detok_feed(&d, j->ids[i], buf, bcap) : detok_flush(&d, buf, bcap);
        if (n < 0) n = 0;
        if (len + (size_t)n + 1 > cap) {
            while (len + (size_t)n + 1 > cap) cap *= 2;
            char *t2 = realloc(t, cap);
            if (!t2) ok = 0;
            else t = t2;
        }
        if (!ok) break;
        if (j->plp && i < j->n_ids) j->plp[i].cstart = (uint32_t)chars, j->plp[i].token = j->ids[i];
        memcpy(t + len, buf, (size_t)n);
        len += (size_t)n;
        chars += server_text_chars(buf, (size_t)n);
    }
    free(buf);
    if (!ok) {
        free(t);
        return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    t[len] = 0;
    j->echo_text = t;
    j->echo_len = len;
    j->echo_chars = server_text_chars(t, len);
    j->n_plp = 1;   /* position 0 has no log-probability: nothing to wait for there */
    return 0;
}

/* the request's max_tokens (else what the context holds after the prompt), within the server's
 * cap and, without a context shift (--context-shift; never for a scored prompt), the context */
static int max_gen(const struct server *s, const server_req_t *r, int n_prompt) {
    int room = s->m->n_ctx - n_prompt;
    if (r->max_tokens == 0) return 0;   /* echo only: the prompt scored, nothing generated */
    int mg = r->max_tokens > 0 ? r->max_tokens : room;
    if (s->cfg.max_tokens > 0 && mg > s->cfg.max_tokens) mg = s->cfg.max_tokens;
    int shift = s->m->sched.ctx_shift && !(r->echo && r->logprobs);
    return mg < room || shift ? mg : room;
}

/* Job j for choice c of request r: its prompt (c / r->n), token budget, log-probability records
 * and echo text; choices past the first of a prompt get their own seeds. 0 or <0 with e. */
static int job_prepare(struct server *s, const server_req_t *r, job_t *j, int c, server_err_t *e) {
    server_req_t ri = *r;   /* the same request with this choice's prompt */
    int pi = c / r->n;
    if (pi > 0) {
        ri.prompt = r->more[pi - 1].text;
        ri.ids = r->more[pi - 1].ids;
        ri.n_ids = r->more[pi - 1].n_ids;
    }
    if (c % r->n) j->sp.seed += (uint64_t)(c % r->n) * 0x9E3779B97F4A7C15ull;   /* n samples, not n copies */
    int rc = build_prompt(s, &ri, j, e);
    j->max_gen = max_gen(s, &ri, j->n_ids);
    j->n_top = j->logprobs ? (r->top_logprobs > SAMPLER_TOP_MAX ? SAMPLER_TOP_MAX : r->top_logprobs) : 0;
    if (rc == 0 && j->echo) rc = echo_prepare(s, j, e);
    if (j->kind == SERVER_REQ_EMBEDDINGS) {   /* no tokens: the prompt's pooled vector */
        j->max_gen = 0;
        j->embd_b64 = r->base64;
        if (rc == 0 && !(j->embd = calloc((size_t)s->m->hp.n_embd, sizeof(float))))
            rc = server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    }
    if (rc == 0 && r->return_tokens && j->max_gen > 0 && !(j->toks = malloc((size_t)j->max_gen * sizeof *j->toks)))
        rc = server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    if (rc == 0 && j->logprobs && j->max_gen > 0) {   /* no allocation once generating */
        size_t nt = (size_t)j->max_gen * (size_t)j->n_top;
        j->lp = malloc((size_t)j->max_gen * sizeof *j->lp);
        if (nt) {
            j->top_ids = malloc(nt * sizeof *j->top_ids);
            j->top_lp = malloc(nt * sizeof *j->top_lp);
        }
        if (!j->lp || (nt && (!j->top_ids || !j->top_lp)))
            rc = server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
        j->lp_cap = j->lp ? j->max_gen : 0;
    }
    return rc;
}

static enum MHD_Result reply_busy(struct MHD_Connection *c) {
    server_err_t e;
    server_err_set(&e, 503, "unavailable_error", "server_busy", NULL,
                   "every slot is busy and the queue is full (--max-queue); retry later");
    char *txt = server_err_body(&e);
    struct MHD_Response *resp = MHD_create_response_from_buffer(txt ? strlen(txt) : 0, txt, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Retry-After", "1");
    server_cors(resp);
    enum MHD_Result ret = MHD_queue_response(c, 503, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Makes and prepares the request's k choices' jobs into jobs[] (*made of them), jobs[0] the
 * connection's (*job_out, counted in n_busy). The first takes the request's stop strings; the
 * others copy them. 0, or <0 with e. */
static int jobs_make(struct server *s, struct MHD_Connection *c, server_req_t *r, job_t **jobs, int k, int *made,
                     job_t **job_out, server_err_t *e) {
    int rc = 0;
    for (int i = 0; i < k && rc == 0; i++) {
        job_t *j = job_new(s, r);
        if (!j) return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
        jobs[(*made)++] = j;
        j->extra = i > 0;   /* a request is counted once, by its first choice */
        if (i == 0) {
            *job_out = j;
            pthread_mutex_lock(&s->mu);
            s->n_busy++;
            pthread_mutex_unlock(&s->mu);
        }
        if (i > 0) {   /* woken with the first: one condition variable a request */
            pthread_mutex_lock(&s->mu);
            j->lead = jobs[0];
            jobs[0]->refs++;
            pthread_mutex_unlock(&s->mu);
        }
        for (int t = 0; i > 0 && t < jobs[0]->n_stop; t++)
            if ((j->stop[t] = strdup(jobs[0]->stop[t]))) j->n_stop = t + 1;
        j->conn = c;
        j->deadline = s->cfg.timeout_s > 0 ? time_now() + s->cfg.timeout_s : 0;
        rc = job_prepare(s, r, j, i, e);
    }
    return rc;
}

/* A generation request: one job a choice (prompts x n), run side by side in the slots; then the
 * stream of them all, or one reply once all are done. jobs[0] is the connection's (*job_out);
 * the others are the request's, handed to the stream's reader or dropped here at the end. */
static enum MHD_Result handle_jobs(struct server *s, struct MHD_Connection *c, server_req_t *r, job_t **job_out) {
    server_err_t e;
    job_t *jobs[SERVER_MAX_CHOICES] = {0};
    int k = r->n * (1 + r->n_more), made = 0, queued = 0;
    int rc = jobs_make(s, c, r, jobs, k, &made, job_out, &e);
    if (rc == 0 && (rc = server_engine_enqueue(s, jobs, made)) == 0) queued = made;   /* the request's choices at once */
    if (rc == 0 && r->stream) return stream_reply(s, c, jobs, k, r->n);
    pthread_mutex_lock(&s->mu);
    if (rc < 0) jobs_cancel(s, jobs, queued, JOB_CANCEL_GONE);   /* what was queued is called off */
    pthread_cond_signal(&s->engine_cv);
    while (group_wait(s, jobs, queued) >= 0) continue;   /* a timeout or a gone client ends them all */
    json_t *reply = NULL;
    int gone = 0, bad = -1;
    for (int i = 0; i < queued; i++) {
        gone |= jobs[i]->cancel == JOB_CANCEL_GONE && rc == 0;
        if (bad < 0 && (jobs[i]->finish == SCHED_ERROR || jobs[i]->finish == SCHED_CANCEL)) bad = i;
    }
    if (rc == 0 && bad >= 0) job_err(jobs[bad], &e);
    else if (rc == 0 && !(reply = final_reply(s, jobs, k, r->n)))   /* e was never set: say why */
        server_err_set(&e, 500, "server_error", NULL, NULL, "out of memory building the reply");
    for (int i = 1; i < made; i++) {   /* the extra jobs: this request's references */
        jobs[i]->conn = NULL;
        server_job_unref(s, jobs[i]);
    }
    pthread_mutex_unlock(&s->mu);
    if (gone) { json_decref(reply); return MHD_NO; }
    if (rc == TERN_ENOMEM) return reply_busy(c);
    if (rc == TERN_ECANCEL) {
        server_err_set(&e, 503, "unavailable_error", "shutting_down", NULL, "the server is shutting down");
        return server_reply_err(c, &e);
    }
    return reply ? server_reply_json(c, 200, reply) : server_reply_err(c, &e);
}

enum MHD_Result server_gen_jobs(struct server *s, struct MHD_Connection *c, server_req_t *r, job_t **job_out) {
    return handle_jobs(s, c, r, job_out);
}

int server_gen_count(struct server *s, const server_req_t *r, server_err_t *e) {
    job_t j;   /* only its prompt: build_prompt reads sp and fills ids */
    memset(&j, 0, sizeof j);
    j.sp = r->sp;
    int rc = build_prompt(s, r, &j, e);
    free(j.ids);
    return rc < 0 ? rc : j.n_ids;
}

enum MHD_Result server_gen_handle(struct server *s, struct MHD_Connection *c, int kind, const char *body,
                                  size_t len, job_t **job_out) {
    server_err_t e;
    server_req_t r;
    *job_out = NULL;
    if (kind == SERVER_REQ_EMBEDDINGS && !s->cfg.embeddings) {
        server_err_set(&e, 501, "not_supported_error", NULL, NULL,
                       "this server does not serve embeddings: start it with --embeddings");
        return server_reply_err(c, &e);
    }
    if (server_req_parse_fmt(&r, kind, body, len, &s->def_sp, chat_tool_format(s->m->tok), &e) < 0)
        return server_reply_err(c, &e);
    if (kind == SERVER_REQ_EMBEDDINGS && r.dimensions >= 0 && r.dimensions != s->m->hp.n_embd) {
        server_err_set(&e, 400, "invalid_request_error", "invalid_value", "dimensions",
                       "'dimensions' %d: this model's embeddings have %d (no shortening)", r.dimensions, s->m->hp.n_embd);
        server_req_free(&r);
        return server_reply_err(c, &e);
    }
    enum MHD_Result ret = handle_jobs(s, c, &r, job_out);
    server_req_free(&r);
    return ret;
}

enum MHD_Result server_gen_run(struct server *s, struct MHD_Connection *c, server_req_t *r, job_t **job_out) {
    *job_out = NULL;
    return handle_jobs(s, c, r, job_out);
}

/* ---- /tokenize, /detokenize --------------------------------------------------------- */

static json_t *piece_json(const tokenizer_t *tok, int id) {
    char buf[256];
    int n = tokenizer_piece(tok, id, 1, buf, sizeof buf);
    if (n < 0 || n > (int)sizeof buf) n = 0;
    json_t *str = json_stringn(buf, (size_t)n);
    if (str) return str;
    json_t *a = json_array();   /* not valid UTF-8 on its own: the bytes, as llama.cpp does */
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer((unsigned char)buf[i]));
    return a;
}

static json_t *tokenize(struct server *s, const server_req_t *r, server_err_t *e) {
    const tokenizer_t *tok = s->m->tok;
    size_t len = strlen(r->prompt);
    int cap = (int)(len < 1u << 20 ? len : 1u << 20) + 8;
    int32_t *ids = malloc((size_t)cap * sizeof(int32_t));
    int add = r->add_special && tokenizer_add_bos(tok);
    int n = ids ? tokenizer_encode(tok, r->prompt, len, add, r->parse_special, ids, cap) : TERN_ENOMEM;
    if (n > cap) {
        free(ids);
        ids = malloc((size_t)n * sizeof(int32_t));
        n = ids ? tokenizer_encode(tok, r->prompt, len, add, r->parse_special, ids, n) : TERN_ENOMEM;
    }
    if (n < 0) {
        free(ids);
        server_err_set(e, 400, "invalid_request_error", "invalid_value", "content", "cannot tokenize the content");
        return NULL;
    }
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, r->with_pieces ? json_pack("{s:i, s:o}", "id", ids[i], "piece", piece_json(tok, ids[i]))
                                                : json_integer(ids[i]));
    free(ids);
    return json_pack("{s:o}", "tokens", a);
}

static json_t *detokenize(struct server *s, const server_req_t *r, server_err_t *e) {
    const tokenizer_t *tok = s->m->tok;
    for (int i = 0; i < r->n_ids; i++)
        if (r->ids[i] >= tokenizer_n_vocab(tok)) {
            server_err_set(e, 400, "invalid_request_error", "invalid_value", "tokens",
                           "token id %d is outside the vocabulary (%d tokens)", r->ids[i], tokenizer_n_vocab(tok));
            return NULL;
        }
    int cap = r->n_ids * 16 + 16;
    char *buf = malloc((size_t)cap);
    int n = buf ? tokenizer_decode(tok, r->ids, r->n_ids, 1, buf, cap) : TERN_ENOMEM;
    if (n >= cap) {
        char *b2 = realloc(buf, (size_t)n + 1);
        if (b2) { buf = b2; n = tokenizer_decode(tok, r->ids, r->n_ids, 1, buf, n + 1); }
        else n = TERN_ENOMEM;
    }
    if (n < 0) {
        free(buf);
        server_err_set(e, 500, "server_error", NULL, NULL, "cannot decode the tokens");
        return NULL;
    }
    json_t *o = json_pack("{s:o}", "content", server_json_text(buf, (size_t)n));
    free(buf);
    return o;
}

enum MHD_Result server_tok_handle(struct server *s, struct MHD_Connection *c, int kind, const char *body,
                                  size_t len) {
    server_err_t e;
    server_req_t r;
    if (server_req_parse(&r, kind, body, len, NULL, &e) < 0) return server_reply_err(c, &e);
    json_t *o = kind == SERVER_REQ_TOKENIZE ? tokenize(s, &r, &e) : detokenize(s, &r, &e);
    server_req_free(&r);
    return o ? server_reply_json(c, 200, o) : server_reply_err(c, &e);
}
