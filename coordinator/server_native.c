/* server_native: llama.cpp's own (non-OpenAI) API for the front ends that speak it — POST
 * /completion, POST /infill (fill-in-the-middle for code editors: its prompt is built by
 * infill.c, then it runs as a /completion of those ids) and POST /apply-template. They run on
 * the same jobs, slots, sampling, grammar, stop strings and streaming as /v1/completions
 * (server_gen.c); only the request's extra fields (a mixed prompt, n_probs, return_tokens,
 * id_slot: the slot the request must run in, server_engine.c) and the reply's shapes live
 * here. "samplers", the chain's order, is parsed with the
 * shared fields (server_req.c). */
#include "coordinator/server_int.h"
#include "core/err.h"
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* llama.cpp's error body: {"error": {"code": status, "message", "type", "param"}} */
static enum MHD_Result native_err(struct MHD_Connection *c, const server_err_t *e) {
    json_t *o = json_pack("{s:{s:i, s:s, s:s, s:o}}", "error", "code", e->status, "message", e->msg, "type",
                          e->type ? e->type : "invalid_request_error", "param",
                          e->param[0] ? json_string(e->param) : json_null());
    return server_reply_json(c, e->status, o);
}

/* r's mixed prompt (r->parts: strings and runs of ids) as one id list in r->ids: the strings
 * tokenized, BOS before the first when it is a string and the model adds one (llama.cpp's
 * rule). 0, or <0 with e. */
static int native_ids(struct server *s, server_req_t *r, server_err_t *e) {
    const tokenizer_t *tok = s->m->tok;
    int cap = s->m->n_ctx + 1, n = 0;
    if (!r->n_parts) return 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids) return server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    for (int i = 0; i < r->n_parts && n < cap; i++) {
        const server_prompt_t *p = &r->parts[i];
        int k = p->text ? tokenizer_encode(tok, p->text, strlen(p->text), i == 0 && tokenizer_add_bos(tok), 1, ids + n,
                                           cap - n)
                        : p->n_ids;
        if (k < 0) {
            free(ids);
            return server_err_set(e, 400, "invalid_request_error", "invalid_value", "prompt", "cannot tokenize the prompt");
        }
        if (!p->text) memcpy(ids + n, p->ids, (size_t)(k < cap - n ? k : cap - n) * sizeof *ids);
        n += k < cap - n ? k : cap - n;
    }
    r->ids = ids;
    r->n_ids = n;   /* n == cap: too long; build_prompt says so */
    return 0;
}

/* the request's id_slot names a slot of this server (-1: any); 0 or <0 with e */
static int check_slot(struct server *s, const server_req_t *r, server_err_t *e) {
    if (r->id_slot < s->m->sched.n_seq) return 0;
    return server_err_set(e, 400, "invalid_request_error", "invalid_value", "id_slot",
                          "'id_slot' %d: the server has %d slots (-1: any)", r->id_slot, s->m->sched.n_seq);
}

enum MHD_Result server_native_handle(struct server *s, struct MHD_Connection *c, const char *body, size_t len,
                                     job_t **job_out) {
    server_err_t e;
    server_req_t r;
    *job_out = NULL;
    if (server_req_parse(&r, SERVER_REQ_NATIVE, body, len, &s->def_sp, &e) < 0) return native_err(c, &e);
    int rc = native_ids(s, &r, &e);
    if (rc == 0) rc = check_slot(s, &r, &e);
    enum MHD_Result ret = rc < 0 ? native_err(c, &e) : server_gen_run(s, c, &r, job_out);
    server_req_free(&r);
    return ret;
}

/* r's FIM sequence (infill.h) into r->ids: its prefix and suffix tokenized without special
 * tokens, its prompt with them (llama.cpp's rules). 0, or <0 with e. */
static int infill_ids(struct server *s, server_req_t *r, const infill_cfg_t *c, server_err_t *e) {
    const tokenizer_t *tok = s->m->tok;
    int32_t *pre = NULL, *suf = NULL, *prm = NULL, *ext = NULL;
    int np = infill_tokenize(tok, r->input_prefix, strlen(r->input_prefix), 0, &pre);
    int ns = np < 0 ? -1 : infill_tokenize(tok, r->input_suffix, strlen(r->input_suffix), 0, &suf);
    int nq = ns < 0 ? -1 : r->prompt ? infill_tokenize(tok, r->prompt, strlen(r->prompt), 1, &prm) : 0;
    int nx = nq < 0 ? -1 : infill_extra(tok, c, r->extra, r->n_extra, &ext);
    int rc = 0;
    if (nx < 0) {
        rc = server_err_set(e, 400, "invalid_request_error", "invalid_value", "input_prefix",
                            "cannot tokenize the input");
    } else {
        size_t cap = (size_t)np + (size_t)ns + (size_t)nq + (size_t)nx + 4;
        if (!(r->ids = malloc(cap * sizeof *r->ids)))
            rc = server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
        else
            r->n_ids = infill_format(c, pre, np, suf, ns, prm, nq, ext, nx, r->ids);
    }
    free(pre);
    free(suf);
    free(prm);
    free(ext);
    free(r->prompt);   /* the ids stand for it now (build_prompt takes ids first) */
    r->prompt = NULL;
    return rc;
}

enum MHD_Result server_native_infill(struct server *s, struct MHD_Connection *c, const char *body, size_t len,
                                     job_t **job_out) {
    server_err_t e;
    server_req_t r;
    const tokenizer_t *tok = s->m->tok;
    *job_out = NULL;
    infill_cfg_t cfg = {
        .pre = tokenizer_fim(tok, TOKENIZER_FIM_PRE), .suf = tokenizer_fim(tok, TOKENIZER_FIM_SUF),
        .mid = tokenizer_fim(tok, TOKENIZER_FIM_MID), .rep = tokenizer_fim(tok, TOKENIZER_FIM_REP),
        .sep = tokenizer_fim(tok, TOKENIZER_FIM_SEP), .bos = tokenizer_add_bos(tok) ? tokenizer_bos(tok) : -1,
        .n_batch = s->m->sched.n_batch, .n_predict = s->cfg.max_tokens > 0 ? s->cfg.max_tokens : -1,
        .n_ctx = s->m->n_ctx, .spm = s->cfg.spm_infill,
    };
    if (cfg.pre < 0 || cfg.suf < 0 || cfg.mid < 0) {   /* llama-server's check, message and status */
        server_err_set(&e, 501, "not_supported_error", NULL, NULL, "Infill is not supported by this model:%s%s%s",
                       cfg.pre < 0 ? " prefix token is missing." : "", cfg.suf < 0 ? " suffix token is missing." : "",
                       cfg.mid < 0 ? " middle token is missing." : "");
        return native_err(c, &e);
    }
    if (server_req_parse(&r, SERVER_REQ_INFILL, body, len, &s->def_sp, &e) < 0) return native_err(c, &e);
    int rc = infill_ids(s, &r, &cfg, &e);
    if (rc == 0) rc = check_slot(s, &r, &e);
    r.kind = SERVER_REQ_NATIVE;   /* from here on, a /completion of those ids */
    enum MHD_Result ret = rc < 0 ? native_err(c, &e) : server_gen_run(s, c, &r, job_out);
    server_req_free(&r);
    return ret;
}

enum MHD_Result server_native_template(struct server *s, struct MHD_Connection *c, const char *body, size_t len) {
    server_err_t e;
    server_req_t r;
    if (server_req_parse(&r, SERVER_REQ_TEMPLATE, body, len, NULL, &e) < 0) return native_err(c, &e);
    char *text = server_gen_prompt_text(s, &r, &e);
    server_req_free(&r);
    if (!text) return native_err(c, &e);
    json_t *o = json_pack("{s:o}", "prompt", server_json_text(text, strlen(text)));
    free(text);
    return server_reply_json(c, 200, o);
}

/* ---- reply shapes (caller holds s->mu) ------------------------------------------------ */

/* {"id", "token", "logprob", "bytes"} of token id */
static json_t *prob_entry(const tokenizer_t *tok, int32_t id, float logprob) {
    char buf[512];
    int n = tokenizer_piece(tok, id, 0, buf, sizeof buf);
    if (n < 0 || n > (int)sizeof buf) n = 0;
    json_t *bytes = json_array();
    for (int k = 0; k < n; k++) json_array_append_new(bytes, json_integer((unsigned char)buf[k]));
    return json_pack("{s:i, s:o, s:f, s:o}", "id", id, "token", server_json_text(buf, (size_t)n), "logprob",
                     isfinite(logprob) ? (double)logprob : -9999.0, "bytes", bytes);
}

/* completion_probabilities of j's records [a, b): each with its top_logprobs */
static json_t *probs_json(struct server *s, const job_t *j, int a, int b) {
    json_t *arr = json_array();
    for (int i = a; i < b; i++) {
        json_t *e = prob_entry(s->m->tok, j->lp[i].token, j->lp[i].logprob), *top = json_array();
        for (int k = 0; k < j->lp[i].n_top; k++) {
            size_t at = (size_t)i * (size_t)j->n_top + (size_t)k;
            json_array_append_new(top, prob_entry(s->m->tok, j->top_ids[at], j->top_lp[at]));
        }
        json_object_set_new(e, "top_logprobs", top);
        json_array_append_new(arr, e);
    }
    return arr;
}

static json_t *tokens_json(const job_t *j, int from) {
    json_t *a = json_array();
    for (int i = from; j->toks && i < j->n_toks; i++) json_array_append_new(a, json_integer(j->toks[i]));
    return a;
}

static json_t *timings(const job_t *j) {
    double pms = j->t_first > j->t_start ? (j->t_first - j->t_start) * 1e3 : 0;
    double gms = j->t_end > j->t_first && j->t_first > 0 ? (j->t_end - j->t_first) * 1e3 : 0;
    int fed = j->n_ids - j->n_cached, gen = j->n_gen;
    return json_pack("{s:i, s:i, s:f, s:f, s:f, s:i, s:f, s:f, s:f}", "cache_n", j->n_cached, "prompt_n", fed,
                     "prompt_ms", pms, "prompt_per_token_ms", fed > 0 ? pms / fed : 0.0, "prompt_per_second",
                     pms > 0 ? fed / (pms / 1e3) : 0.0, "predicted_n", gen, "predicted_ms", gms,
                     "predicted_per_token_ms", gen > 0 ? gms / gen : 0.0, "predicted_per_second",
                     gms > 0 && gen > 1 ? (gen - 1) / (gms / 1e3) : 0.0);
}

/* llama.cpp's generation_settings: /slots' params of this request, and what it adds */
static json_t *settings_json(struct server *s, const job_t *j) {
    server_slot_t sl;
    memset(&sl, 0, sizeof sl);
    server_info_slot_params(&sl, &j->sp);
    sl.max_gen = j->max_gen;
    sl.stream = j->stream;
    json_t *slot = server_info_slot_json(&sl, j->slot, s->m->n_ctx, 0, 0, "");
    json_t *p = slot ? json_incref(json_object_get(slot, "params")) : NULL;
    json_decref(slot);
    if (!p) return json_object();
    json_t *stop = json_array();
    for (int i = 0; i < j->n_stop; i++) json_array_append_new(stop, json_string(j->stop[i]));
    json_object_set_new(p, "stop", stop);
    json_object_set_new(p, "n_ctx", json_integer(s->m->n_ctx));
    json_object_set_new(p, "model", json_string(s->model_id));
    json_object_set_new(p, "ignore_eos", json_boolean(j->ignore_eos));
    json_object_set_new(p, "n_keep", json_integer(j->n_keep));
    json_object_set_new(p, "cache_prompt", json_boolean(j->cache_prompt));
    json_object_set_new(p, "grammar", json_string(j->grammar ? j->grammar : ""));
    return p;
}

/* the prompt's ids as text, special tokens written out */
static json_t *prompt_json(struct server *s, const job_t *j) {
    int cap = j->n_ids * 16 + 16;
    char *buf = malloc((size_t)cap);
    int n = buf ? tokenizer_decode(s->m->tok, j->ids, j->n_ids, 1, buf, cap) : -1;
    if (n >= cap) {
        char *b2 = realloc(buf, (size_t)n + 1);
        n = b2 ? tokenizer_decode(s->m->tok, j->ids, j->n_ids, 1, (buf = b2), n + 1) : -1;
    }
    json_t *o = server_json_text(buf ? buf : "", n > 0 ? (size_t)n : 0);
    free(buf);
    return o;
}

static const char *stop_type(const job_t *j) {
    if (j->finish == SCHED_STOP) return j->st.hit ? "word" : "eos";
    return "limit";
}

/* a finished job's summary: content text[0..n), its probabilities from record lp_from and its
 * tokens from tok_from (all of them in a plain reply; the unsent rest in a stream's last chunk) */
static json_t *summary(struct server *s, const job_t *j, int index, const char *text, size_t n, int lp_from,
                       int tok_from) {
    int nl = j->out && memchr(j->out, '\n', j->out_len) != NULL;
    json_t *o = json_pack("{s:i, s:o, s:o, s:i, s:b, s:s, s:i, s:i, s:o, s:o, s:b, s:b, s:s, s:s, s:i, s:o}", "index",
                          index, "content", server_json_text(text, n), "tokens", tokens_json(j, tok_from), "id_slot",
                          j->slot, "stop", 1, "model", s->model_id, "tokens_predicted", j->n_gen, "tokens_evaluated",
                          j->n_ids, "generation_settings", settings_json(s, j), "prompt", prompt_json(s, j),
                          "has_new_line", nl, "truncated", j->finish == SCHED_CTX, "stop_type", stop_type(j),
                          "stopping_word", j->st.hit ? j->stop[j->st.which] : "", "tokens_cached", j->n_cached,
                          "timings", timings(j));
    if (o && j->logprobs) json_object_set_new(o, "completion_probabilities", probs_json(s, j, lp_from, j->lp_final));
    return o;
}

void *server_native_reply(struct server *s, job_t *const *jobs, int k) {
    if (k == 1) return summary(s, jobs[0], 0, jobs[0]->out ? jobs[0]->out : "", jobs[0]->out_len, 0, 0);
    json_t *a = json_array();   /* several prompts: one result each, as llama.cpp */
    for (int i = 0; i < k; i++)
        json_array_append_new(a, summary(s, jobs[i], i, jobs[i]->out ? jobs[i]->out : "", jobs[i]->out_len, 0, 0));
    return a;
}

void *server_native_chunk(struct server *s, job_t *j, int index, const char *text, size_t n) {
    json_t *o = json_pack("{s:i, s:o, s:o, s:b, s:i}", "index", index, "content", server_json_text(text, n), "tokens",
                          tokens_json(j, j->toks_sent), "stop", 0, "id_slot", j->slot);
    j->toks_sent = j->n_toks;
    if (o && j->logprobs) {   /* the tokens whose text is all out */
        int k = j->lp_sent;
        while (k < j->n_lp && j->lp[k].bend <= j->out_total) k++;
        json_object_set_new(o, "completion_probabilities", probs_json(s, j, j->lp_sent, k));
        j->lp_sent = k;
    }
    return o;
}

void *server_native_final(struct server *s, job_t *j, int index) {
    json_t *o = summary(s, j, index, "", 0, j->lp_sent < j->lp_final ? j->lp_sent : j->lp_final, j->toks_sent);
    j->lp_sent = j->lp_final;
    j->toks_sent = j->n_toks;
    return o;
}
