/* server_info: what llama-server users expect beside the OpenAI routes — the web UI page at
 * GET / (coordinator/webui/index.html, embedded at build time: webui.h), GET /props (the
 * server's defaults: context, slots, sampling, model path, chat template) and GET /slots (each
 * slot's state, from copies the engine thread publishes: HTTP threads never read the
 * scheduler). Read-only: llama.cpp's POST /props and slot save/restore/erase are not here. */
#include "coordinator/server_int.h"
#include "coordinator/webui.h"
#include "core/gguf.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERVER_INFO_BUILD "tern 0.1.0"   /* what `tern --version` says (coordinator/main.c) */
/* the page talks to its own server only, runs its own inline script and nothing else */
#define SERVER_INFO_CSP                                                                              \
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; " \
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/* ---- the page -------------------------------------------------------------------------- */

/* 200 with the page, or 304 when the client's copy has the page's ETag; no-cache: browsers
 * ask again each time (a new binary may serve a new page) and get a 304 while it is the same */
enum MHD_Result server_info_page(struct MHD_Connection *c) {
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
    int same = inm && (strstr(inm, webui_index_html_etag) || !strcmp(inm, "*"));
    struct MHD_Response *r = MHD_create_response_from_buffer(same ? 0 : webui_index_html_len,
                                                             (void *)webui_index_html, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    if (!same) MHD_add_response_header(r, "Content-Type", "text/html; charset=utf-8");
    MHD_add_response_header(r, "ETag", webui_index_html_etag);
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Content-Security-Policy", SERVER_INFO_CSP);
    server_cors(r);
    enum MHD_Result ret = MHD_queue_response(c, same ? 304u : 200u, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- slots ----------------------------------------------------------------------------- */

void server_info_slot_params(server_slot_t *sl, const sampler_params_t *sp) {
    sl->temp = sp->temp;
    sl->top_p = sp->top_p;
    sl->min_p = sp->min_p;
    sl->repeat_penalty = sp->repeat_penalty;
    sl->freq_penalty = sp->freq_penalty;
    sl->presence_penalty = sp->presence_penalty;
    sl->top_k = sp->top_k;
    sl->repeat_last_n = sp->repeat_last_n;
    sl->n_probs = sp->logprobs ? sp->top_logprobs : 0;
    sl->seed = sp->seed;
    sl->typical_p = sp->typical_p;
    sl->top_n_sigma = sp->top_n_sigma;
    sl->xtc_probability = sp->xtc_probability;
    sl->xtc_threshold = sp->xtc_threshold;
    sl->dynatemp_range = sp->dynatemp_range;
    sl->dynatemp_exponent = sp->dynatemp_exponent;
    sl->mirostat = sp->mirostat;
    sl->mirostat_tau = sp->mirostat_tau;
    sl->mirostat_eta = sp->mirostat_eta;
    sl->dry_multiplier = sp->dry_multiplier;
    sl->dry_base = sp->dry_base;
    sl->dry_allowed_length = sp->dry_allowed_length;
    sl->dry_penalty_last_n = sp->dry_penalty_last_n;
    sampler_order_letters(sp, sl->samplers);
}

void server_info_publish(struct server *s) {
    const sched_t *sc = &s->m->sched;
    for (int i = 0; i < sc->n_seq; i++) {
        const sched_seq_t *q = &sc->seqs[i];
        server_slot_t *sl = &s->slots[i];
        sl->active = q->active;
        sl->id_task = q->active ? q->id : -1;
        sl->n_cache = q->kv_ok ? q->n_fed : 0;
        sl->request_id[0] = 0;
        if (!q->last_use) continue;   /* never used */
        sl->n_prompt = q->n_prompt;
        sl->n_prompt_cached = q->n_cached;
        int fed = q->n_fed < q->n_prompt ? q->n_fed : q->n_prompt;
        sl->n_prompt_processed = fed > q->n_cached ? fed - q->n_cached : 0;
        sl->n_decoded = q->n_gen;
        sl->max_gen = q->max_gen;
        server_info_slot_params(sl, &q->sp);
        if (q->active) {   /* its job lives while the sequence runs (the engine's reference) */
            const job_t *j = q->user;
            snprintf(sl->request_id, sizeof sl->request_id, "%s", j->id);
            sl->stream = j->stream;
        }
    }
}

/* f as the shortest decimal that reads back as the same float (0.8f shows 0.8) */
static double f2d(float f) {
    char b[32];
    snprintf(b, sizeof b, "%.9g", (double)f);
    for (int p = 1; p < 9; p++) {
        char t[32];
        snprintf(t, sizeof t, "%.*g", p, (double)f);
        if (strtof(t, NULL) == f) return strtod(t, NULL);
    }
    return strtod(b, NULL);
}

void *server_info_slot_json(const server_slot_t *sl, int id, int n_ctx, int speculative, int seed_random,
                            const char *chat_format) {
    json_int_t seed = seed_random ? 4294967295LL : (json_int_t)(sl->seed & 0x7fffffffffffffffULL);
    json_t *params = json_pack("{s:i, s:I, s:f, s:i, s:f, s:f, s:i, s:f, s:f, s:f, s:i, s:i, s:b, s:s}", "n_predict",
                               sl->max_gen > 0 ? sl->max_gen : -1, "seed", seed, "temperature", f2d(sl->temp), "top_k",
                               sl->top_k, "top_p", f2d(sl->top_p), "min_p", f2d(sl->min_p), "repeat_last_n",
                               sl->repeat_last_n, "repeat_penalty", f2d(sl->repeat_penalty), "presence_penalty",
                               f2d(sl->presence_penalty), "frequency_penalty", f2d(sl->freq_penalty), "max_tokens",
                               sl->max_gen > 0 ? sl->max_gen : -1, "n_probs", sl->n_probs, "stream", sl->stream,
                               "chat_format", chat_format ? chat_format : "");
    if (params) {   /* llama.cpp's other samplers, under its names */
        json_t *more = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:i, s:f, s:f, s:f, s:f, s:i, s:i}", "typical_p",
                                 f2d(sl->typical_p), "top_n_sigma", sl->top_n_sigma > 0 ? f2d(sl->top_n_sigma) : -1.0,
                                 "xtc_probability", f2d(sl->xtc_probability), "xtc_threshold", f2d(sl->xtc_threshold),
                                 "dynatemp_range", f2d(sl->dynatemp_range), "dynatemp_exponent", f2d(sl->dynatemp_exponent),
                                 "mirostat", sl->mirostat, "mirostat_tau", f2d(sl->mirostat_tau), "mirostat_eta",
                                 f2d(sl->mirostat_eta), "dry_multiplier", f2d(sl->dry_multiplier), "dry_base",
                                 f2d(sl->dry_base), "dry_allowed_length", sl->dry_allowed_length, "dry_penalty_last_n",
                                 sl->dry_penalty_last_n);
        if (more) json_object_update(params, more);
        json_decref(more);
        json_t *names = json_array();   /* the order as llama.cpp shows it: its names */
        for (const char *l = sl->samplers[0] ? sl->samplers : SAMPLER_ORDER_DEFAULT; names && *l; l++) {
            const char *nm = sampler_order_name(*l);
            if (nm) json_array_append_new(names, json_string(nm));
        }
        if (names) json_object_set_new(params, "samplers", names);
    }
    json_t *next = json_pack("{s:b, s:i, s:i}", "has_next_token", sl->active, "n_remain",
                             sl->active && sl->max_gen > 0 ? sl->max_gen - sl->n_decoded : -1, "n_decoded", sl->n_decoded);
    return json_pack("{s:i, s:i, s:s?, s:i, s:b, s:b, s:i, s:i, s:i, s:i, s:o?, s:o?}", "id", id, "id_task", sl->id_task,
                     "request_id", sl->request_id[0] ? sl->request_id : NULL, "n_ctx", n_ctx, "speculative",
                     speculative, "is_processing", sl->active, "n_prompt_tokens", sl->n_prompt,
                     "n_prompt_tokens_cached", sl->n_prompt_cached, "n_prompt_tokens_processed",
                     sl->n_prompt_processed, "n_cache_tokens", sl->n_cache, "params", params, "next_token", next);
}

static int speculative(const struct server *s) { return s->m->sched.lookup > 0 || s->m->sched.draft_fn != NULL; }

/* [one object per slot]; ?fail_on_no_slot=1: 503 when none is idle (llama.cpp's) */
enum MHD_Result server_info_slots(struct server *s, struct MHD_Connection *c) {
    server_err_t e;
    if (s->cfg.no_slots) {
        server_err_set(&e, 501, "not_supported_error", "not_supported", NULL,
                       "this server does not serve /slots (started with --no-slots)");
        return server_reply_err(c, &e);
    }
    int n = s->m->sched.n_seq, idle = 0;
    server_slot_t *cp = malloc((size_t)n * sizeof *cp);
    if (!cp) return server_reply_json(c, 500, NULL);
    pthread_mutex_lock(&s->mu);
    memcpy(cp, s->slots, (size_t)n * sizeof *cp);
    pthread_mutex_unlock(&s->mu);
    json_t *arr = json_array();
    const char *fmt = chat_template_name(s->m->tok);
    for (int i = 0; i < n; i++) {
        idle += !cp[i].active;
        json_array_append_new(arr, server_info_slot_json(&cp[i], i, s->m->n_ctx, speculative(s), 0, fmt));
    }
    free(cp);
    const char *fail = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "fail_on_no_slot");
    if (fail && atoi(fail) && !idle) {
        json_decref(arr);
        server_err_set(&e, 503, "unavailable_error", "no_slot_available", NULL, "no slot is idle");
        return server_reply_err(c, &e);
    }
    return server_reply_json(c, 200, arr);
}

/* ---- props ----------------------------------------------------------------------------- */

/* a token's text as stored, as a JSON string ("" when the model has none) */
static json_t *token_json(const tokenizer_t *t, int id) {
    char buf[256];
    int n = id >= 0 ? tokenizer_token_text(t, id, buf, sizeof buf) : -1;
    return server_json_text(n > 0 && n < (int)sizeof buf ? buf : "", n > 0 && n < (int)sizeof buf ? (size_t)n : 0);
}

enum MHD_Result server_info_props(struct server *s, struct MHD_Connection *c) {
    tern_model *m = s->m;
    server_slot_t d;
    memset(&d, 0, sizeof d);
    d.id_task = -1;
    d.max_gen = s->cfg.max_tokens;
    pthread_mutex_lock(&s->mu);
    server_info_slot_params(&d, &s->def_sp);
    pthread_mutex_unlock(&s->mu);
    json_t *dgs = server_info_slot_json(&d, 0, m->n_ctx, speculative(s), !s->cfg.seed_fixed, chat_template_name(m->tok));
    json_t *params = dgs ? json_object_get(dgs, "params") : NULL;
    if (params) json_object_set_new(params, "grammar", json_string(s->cfg.grammar ? s->cfg.grammar : ""));
    if (params) json_object_set_new(params, "cache_prompt", json_boolean(!s->cfg.no_cache_prompt));
    /* llama-server's params carry reasoning_format; a request may override it, as the budget */
    if (params)
        json_object_set_new(params, "reasoning_format", json_string(reasoning_format_name(s->cfg.reasoning_format)));
    if (params) json_object_set_new(params, "reasoning_budget", json_integer(s->cfg.reasoning_budget));
    const gguf_kv_t *kv = m->g ? gguf_find(m->g, "tokenizer.chat_template") : NULL;
    json_t *tmpl = kv && kv->type == GGUF_STR ? server_json_text(kv->v.s.ptr, (size_t)kv->v.s.len) : json_string("");
    json_t *o = json_pack("{s:o?, s:i, s:s, s:s, s:{s:b, s:b}, s:b, s:b, s:b, s:b, s:o?, s:o?, s:o?, s:s, s:b}",
                          "default_generation_settings", dgs, "total_slots", m->sched.n_seq, "model_alias", s->model_id,
                          "model_path", s->cfg.model_path ? s->cfg.model_path : "", "modalities", "vision", 0, "audio",
                          0, "endpoint_slots", !s->cfg.no_slots, "endpoint_props", 1, "endpoint_metrics",
                          s->cfg.metrics, "webui", !s->cfg.no_webui, "chat_template", tmpl, "bos_token",
                          token_json(m->tok, tokenizer_bos(m->tok)), "eos_token", token_json(m->tok, tokenizer_eos(m->tok)),
                          "build_info", SERVER_INFO_BUILD, "is_sleeping", 0);
    pthread_mutex_lock(&s->met.mu);   /* the RAM prompt cache as the engine last copied it */
    json_t *pc = json_pack("{s:f, s:I, s:I}", "limit_mib", s->met.ram_limit < 0 ? -1.0 : s->met.ram_limit / 1048576.0,
                           "entries", (json_int_t)s->met.ram_entries, "bytes", (json_int_t)s->met.ram_bytes);
    pthread_mutex_unlock(&s->met.mu);
    if (o && pc) json_object_set_new(o, "prompt_cache", pc);
    else json_decref(pc);
    void *kw = NULL;   /* --chat-template-kwargs, checked at server_start: every template's variables */
    char why[160];
    if (o && server_kwargs_parse(s->cfg.chat_template_kwargs, &kw, why, sizeof why) == 0 && kw)
        json_object_set_new(o, "chat_template_kwargs", kw);
    return server_reply_json(c, 200, o);
}
