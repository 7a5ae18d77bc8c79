/* server_engine: the one thread that owns the scheduler. Between steps it admits queued jobs
 * into free slots and cancels the ones whose client left or whose time ran out; each
 * sched_step then runs every active sequence in one forward. Tokens go back to the waiting
 * HTTP threads through the job (text appended under the server mutex, then a signal).
 * The server mutex is never held across sched_* calls: the token callback takes it. The slots'
 * state for GET /slots is copied out under it (server_info_publish). */
#include "coordinator/server_int.h"
#include "coordinator/toolstream.h"
#include "core/err.h"
#include "core/log.h"
#include "core/progress.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void server_job_unref(struct server *s, job_t *j) {
    (void)s;
    if (--j->refs > 0) return;
    free(j->ids);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    server_stop_free(&j->st);
    free(j->out);
    if (j->ts) toolstream_free(j->ts);
    free(j->ts);
    free(j->sse);
    free(j->racc);
    free(j->lp);
    free(j->top_ids);
    free(j->top_lp);
    free(j->echo_text);
    free(j->plp);
    free(j->ptop_ids);
    free(j->ptop_lp);
    free(j->grammar);
    free(j->grammar_trigger);
    free(j->embd);
    free(j->toks);
    server_responses_job_free(j);
    pthread_cond_destroy(&j->cv);
    job_t *lead = j->lead;
    free(j);
    if (lead) server_job_unref(s, lead);
}

/* a job's news: its own waiters and its request's (caller holds s->mu) */
static void job_wake(job_t *j) {
    pthread_cond_broadcast(&j->cv);
    if (j->lead) pthread_cond_broadcast(&j->lead->cv);
}

int server_engine_enqueue(struct server *s, job_t **jobs, int n) {
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (s->draining || s->abort) rc = TERN_ECANCEL;
    else if (s->n_inflight + n > s->m->sched.n_seq + s->cfg.max_queue) rc = TERN_ENOMEM;   /* all or none */
    for (int i = 0; rc == 0 && i < n; i++) {
        job_t *j = jobs[i];
        j->refs++;
        j->state = JOB_QUEUED;
        j->t_enq = time_now();
        if (s->qtail) s->qtail->next = j;
        else s->qhead = j;
        s->qtail = j;
        s->n_queue++;
        s->n_inflight++;
        pthread_mutex_lock(&s->met.mu);
        if (!j->extra) s->met.requests_total++;
        s->met.waiting = s->n_queue;
        pthread_mutex_unlock(&s->met.mu);
    }
    if (rc == 0) pthread_cond_signal(&s->engine_cv);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* appends released text to the job (caller holds s->mu) */
static void job_emit(job_t *j, const char *p, size_t n) {
    if (!n) return;
    if (j->out_len + n + 1 > j->out_cap) {
        size_t cap = j->out_cap ? j->out_cap : 256;
        while (cap < j->out_len + n + 1) cap *= 2;
        char *o = realloc(j->out, cap);
        if (!o) { snprintf(j->errmsg, sizeof j->errmsg, "out of memory"); return; }
        j->out = o;
        j->out_cap = cap;
    }
    memcpy(j->out + j->out_len, p, n);
    j->out_len += n;
    j->out_total += n;
    j->out[j->out_len] = 0;
}

/* the log-probability records that belong to the finished reply (caller holds s->mu): all of
 * them, or after a stop string the tokens whose text starts before the released text ends
 * (and empty ones at its end) */
static int lp_kept(const job_t *j) {
    if (!j->st.hit) return j->n_lp;
    int k = 0;
    while (k < j->n_lp && (j->lp[k].bstart < j->out_total || j->lp[k].bend <= j->out_total)) k++;
    return k;
}

/* record r = (token, logprob) with up to cap of top's alternatives, kept in row `row` of ids /
 * lps (stride cap; either NULL: none kept) */
static void lp_set(job_lp_t *r, int32_t token, float logprob, const sched_top_t *top, int cap, int32_t *ids,
                   float *lps, int row) {
    r->token = token;
    r->logprob = logprob;
    r->n_top = 0;
    if (!top || !cap || !ids || !lps) return;
    r->n_top = top->n < cap ? top->n : cap;
    memcpy(ids + (size_t)row * (size_t)cap, top->ids, (size_t)r->n_top * sizeof(int32_t));
    memcpy(lps + (size_t)row * (size_t)cap, top->lp, (size_t)r->n_top * sizeof(float));
}

/* Log-probability records, in the coordinates of the detokenizer's output (which holds the
 * bytes of a cut character back until it completes): a token's text starts after the bytes
 * held before it, and ends after the bytes held after it. Caller holds s->mu. */
static void lp_record(job_t *j, int32_t token, float logprob, const sched_top_t *top, size_t bstart, size_t bend) {
    if (!j->lp || j->n_lp == j->lp_cap) return;   /* sized for max_gen tokens at admission */
    int idx = j->n_lp++;
    job_lp_t *r = &j->lp[idx];
    lp_set(r, token, logprob, top, j->n_top, j->top_ids, j->top_lp, idx);
    r->bstart = (uint32_t)bstart;
    r->bend = (uint32_t)bend;
    r->cstart = UINT32_MAX;   /* placed once its first byte is out */
}

/* text_offset (characters) of the records whose text starts within out[0..n), the output
 * that begins at byte j->gen_bytes, character j->gen_chars. Caller holds s->mu. */
static void lp_place(job_t *j, const char *out, size_t n) {
    for (; j->lp_placed < j->n_lp; j->lp_placed++) {
        job_lp_t *r = &j->lp[j->lp_placed];
        if (r->bstart > j->gen_bytes + n) break;
        size_t in = r->bstart > j->gen_bytes ? r->bstart - j->gen_bytes : 0;
        r->cstart = (uint32_t)(j->gen_chars + server_text_chars(out, in));
    }
}

/* the job has ended (any reason); drops the engine's reference. Caller does not hold s->mu. */
static void job_end(struct server *s, job_t *j, int finish) {
    char buf[64];
    const char *rel = "", *tail = "";
    size_t rlen = 0, tlen = 0;
    int n = detok_flush(&j->dt, buf, sizeof buf);   /* the bytes of a cut character, if any */
    if (n > 0 && !j->st.hit && server_stop_feed(&j->st, buf, (size_t)n, &rel, &rlen) == 1) finish = SCHED_STOP;
    double now = time_now();
    pthread_mutex_lock(&s->mu);
    if (finish != SCHED_ERROR && finish != SCHED_CANCEL) {
        job_emit(j, rel, rlen);
        server_stop_flush(&j->st, &tail, &tlen);   /* held back, but no stop string came */
        job_emit(j, tail, tlen);
    }
    if (j->logprobs) {
        lp_place(j, buf, n > 0 ? (size_t)n : 0);
        for (; j->lp_placed < j->n_lp; j->lp_placed++) j->lp[j->lp_placed].cstart = (uint32_t)j->gen_chars;
        j->lp_final = lp_kept(j);
    }
    if (j->cancel && finish != SCHED_ERROR) finish = SCHED_CANCEL;
    if (finish == SCHED_ERROR && !j->errmsg[0]) {
        snprintf(j->errmsg, sizeof j->errmsg, "generation failed: %.200s", s->m->sched.err);
        j->err_code = s->m->sched.err_code;
    }
    server_info_publish(s);   /* the slot is idle before the client can see the end */
    j->finish = finish;
    j->state = JOB_DONE;
    j->t_end = now;
    if (!j->t_first && finish != SCHED_ERROR && finish != SCHED_CANCEL) j->t_first = now;   /* echo only: the prompt's time */
    s->n_inflight--;
    pthread_mutex_lock(&s->met.mu);
    if (!j->extra) {   /* a request is counted once, by its first choice */
        if (finish == SCHED_ERROR) s->met.requests_errors++;
        else if (finish == SCHED_CANCEL) s->met.requests_cancelled++;
        else server_hist_observe(&s->met.e2e, now - j->t_enq);
    }
    pthread_mutex_unlock(&s->met.mu);
    job_wake(j);
    if (s->n_inflight == 0) pthread_cond_broadcast(&s->idle_cv);
    server_job_unref(s, j);
    pthread_mutex_unlock(&s->mu);
}

/* the reasoning budget (j->think_budget) follows token text p[0..n) of sequence id: once the
 * thinking has taken it, the rest of the end marker is forced (sched_force; engine thread) —
 * where it cannot be (a marker of more tokens than a forcing holds), the thinking goes on */
static void budget_feed(struct server *s, job_t *j, int id, const char *p, size_t n) {
    int k = reasoning_budget_feed(&j->rb, p, n);
    if (k < 0) return;
    const char *mark = reasoning_close_marker() + k;
    int32_t ids[SCHED_FORCE_MAX];
    int nt = tokenizer_encode(s->m->tok, mark, strlen(mark), 0, 1, ids, SCHED_FORCE_MAX);
    if (nt < 1 || nt > SCHED_FORCE_MAX || sched_force(&s->m->sched, id, ids, nt) < 0)
        log_w("sequence %d: the reasoning budget cannot force \"%s\"", id, mark);
    else
        log_d("sequence %d: reasoning budget of %d tokens spent: \"%s\" forced", id, j->think_budget, mark);
}

/* sched callback: one sampled token, or the end of the sequence */
static int on_token(void *user, int id, int32_t token, float logprob, const sched_top_t *top, int finish) {
    job_t *j = user;
    struct server *s = j->srv;
    (void)id;
    if (finish) { job_end(s, j, finish); return 0; }
    double now = time_now();
    pthread_mutex_lock(&s->met.mu);
    if (!j->t_first) server_hist_observe(&s->met.ttft, now - j->t_enq);
    else server_hist_observe(&s->met.itl, now - j->t_last);
    s->met.gen_tokens++;
    pthread_mutex_unlock(&s->met.mu);
    j->t_last = now;
    if (!j->ignore_eos && tokenizer_is_eog(s->m->tok, token)) {
        pthread_mutex_lock(&s->mu);
        if (!j->t_first) j->t_first = now;
        pthread_mutex_unlock(&s->mu);
        return 1;
    }
    char buf[512];
    size_t held = (size_t)j->dt.npending;   /* bytes of a cut character: this token's text follows them */
    int n = detok_feed(&j->dt, token, buf, sizeof buf);
    const char *rel = "";
    size_t rlen = 0;
    int hit = n > 0 ? server_stop_feed(&j->st, buf, (size_t)n, &rel, &rlen) : 0;
    if (j->think_budget > 0) budget_feed(s, j, id, buf, n > 0 ? (size_t)n : 0);
    if (n > 0) reasoning_budget_feed(&j->rcount, buf, (size_t)n);   /* counts (Responses' reasoning_tokens) */
    size_t chars = j->logprobs && n > 0 ? server_text_chars(buf, (size_t)n) : 0;   /* for text_offset */
    pthread_mutex_lock(&s->mu);
    if (!j->t_first) j->t_first = now;
    if (j->toks && j->n_toks < j->max_gen) j->toks[j->n_toks++] = token;
    j->n_gen++;
    if (j->logprobs) {
        size_t out = n > 0 ? (size_t)n : 0;
        lp_record(j, token, logprob, top, j->gen_bytes + held, j->gen_bytes + out + (size_t)j->dt.npending);
        lp_place(j, buf, out);
    }
    job_emit(j, rel, rlen);
    j->gen_bytes += n > 0 ? (size_t)n : 0;
    j->gen_chars += chars;
    int stop = hit != 0 || j->cancel;
    job_wake(j);
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* sched callback: a prompt token's log-probability (echo with logprobs) */
static void on_score(void *user, int id, int pos, int32_t token, float logprob, const sched_top_t *top) {
    job_t *j = user;
    struct server *s = j->srv;
    (void)id;
    if (!j->plp || pos < 1 || pos >= j->n_ids) return;
    pthread_mutex_lock(&s->mu);
    lp_set(&j->plp[pos], token, logprob, top, j->n_top, j->ptop_ids, j->ptop_lp, pos);
    j->n_plp = pos + 1;
    job_wake(j);
    pthread_mutex_unlock(&s->mu);
}

/* sched callback: an embedding's pooled vector (the sequence then ends) */
static void on_embd(void *user, int id, const float *v, int n, int n_embd) {
    job_t *j = user;
    (void)id;
    pthread_mutex_lock(&j->srv->mu);
    if (j->embd && n == 1) memcpy(j->embd, v, (size_t)n_embd * sizeof(float));
    pthread_mutex_unlock(&j->srv->mu);
}

/* sequence id (just added) of job j follows j's grammar (it parsed when the request came). 0, or
 * <0 when it cannot: the sequence has then ended (the job may be gone; sched.err or j->errmsg
 * said why) */
/* admits j into a free slot — the one it is pinned to, if any (engine thread, s->mu not held) */
static void admit(struct server *s, job_t *j) {
    sched_t *sc = &s->m->sched;
    detok_init(&j->dt, s->m->tok, 0);
    detok_continue(&j->dt);   /* the generated text follows the prompt */
    /* a tool-call marker that is a control token shows in the text, so the reply's reader finds
     * the calls after it, wherever it comes (content before it stays content) */
    detok_preserve(&j->dt, engine_trigger_token(s->m, j->grammar_trigger));
    server_stop_init(&j->st, j->stop, j->n_stop);
    reasoning_budget_init(&j->rb, j->think_budget, j->think_open);
    reasoning_budget_init(&j->rcount, j->reason && j->api == SERVER_API_RESPONSES ? SERVER_THINK_COUNT : 0, j->think_open);
    j->t_start = time_now();
    if (j->cancel) { job_end(s, j, SCHED_CANCEL); return; }
    /* a prompt fed whole does not look at the caches (no RAM restore it would not use) */
    int cache = j->cache_prompt && j->kind != SERVER_REQ_EMBEDDINGS && !j->plp;
    int id = sched_add_at(sc, j->want_slot, cache, j->ids, j->n_ids, j->max_gen, &j->sp, on_token, j);
    if (id < 0) {
        snprintf(j->errmsg, sizeof j->errmsg, "cannot start the sequence: %s", tern_strerror(id));
        job_end(s, j, SCHED_ERROR);
        return;
    }
    j->seq_id = id;
    for (int i = 0; i < sc->n_seq; i++)
        if (sc->seqs[i].active && sc->seqs[i].id == id) j->slot = i;
    if (j->kind == SERVER_REQ_EMBEDDINGS) {   /* llama.cpp's /v1/embeddings: L2-normalised */
        if (sched_embed(sc, id, s->cfg.pooling, 2, on_embd) < 0) {
            snprintf(j->errmsg, sizeof j->errmsg, "cannot start the embedding: out of memory");
            sched_cancel(sc, id);
            return;
        }
    } else if (j->grammar) {
        pthread_mutex_lock(&s->met.mu);
        s->met.grammar_requests++;
        pthread_mutex_unlock(&s->met.mu);
        if (engine_start_grammar(s->m, id, j->grammar, j->grammar_trigger) < 0) return;   /* the sequence has ended (SCHED_ERROR) */
    }
    if (!j->cache_prompt) sched_feed_whole(sc, id);     /* right after sched_add: cannot fail */
    sched_set_keep(sc, id, engine_keep(s->m, j->n_keep));   /* likewise */
    if (j->plp) sched_score_prompt(sc, id, on_score);   /* likewise */
    j->n_cached = sched_cached(sc, id);
    pthread_mutex_lock(&s->met.mu);
    s->met.prompt_tokens += (unsigned long long)(j->n_ids - j->n_cached);
    s->met.prompt_tokens_cached += (unsigned long long)j->n_cached;
    pthread_mutex_unlock(&s->met.mu);
    pthread_mutex_lock(&s->mu);
    j->state = JOB_RUNNING;
    pthread_mutex_unlock(&s->mu);
}

/* under s->mu (engine thread): takes up to `room` queued jobs in queue order, and removes
 * cancelled ones from the queue. A job pinned to a slot (id_slot) is taken only when that slot
 * is free and no job taken before it claimed it; otherwise it waits in the queue, as in
 * llama-server, while the jobs behind it go on. claimed: (n_seq,) scratch. The pinned jobs
 * come first in out[], so that the others' free choice cannot take their slots. */
static int take_queued(struct server *s, job_t **out, int room, job_t **dead, int *ndead, uint8_t *claimed) {
    const sched_t *sc = &s->m->sched;
    int n = 0, np = 0;
    *ndead = 0;
    memset(claimed, 0, (size_t)sc->n_seq);
    job_t **pp = &s->qhead, *prev = NULL;
    while (*pp) {
        job_t *j = *pp;
        int cancel = j->cancel || s->abort, w = j->want_slot;
        int pinned_busy = w >= 0 && w < sc->n_seq && (sc->seqs[w].active || claimed[w]);
        if (!cancel && (n >= room || pinned_busy)) { prev = j; pp = &j->next; continue; }
        *pp = j->next;
        if (s->qtail == j) s->qtail = prev;
        j->next = NULL;
        s->n_queue--;
        if (cancel) {
            dead[(*ndead)++] = j;
        } else if (w >= 0 && w < sc->n_seq) {   /* pinned: before the others taken so far */
            claimed[w] = 1;
            memmove(out + np + 1, out + np, (size_t)(n - np) * sizeof *out);
            out[np++] = j;
            n++;
        } else {
            out[n++] = j;
        }
        if (*ndead == 64) break;
    }
    return n;
}

/* after a step: /metrics' gauges and /slots' copies of the slots */
static void update_gauges(struct server *s) {
    sched_t *sc = &s->m->sched;
    long used = 0;
    int running = 0;
    for (int i = 0; i < sc->n_seq; i++)
        if (sc->seqs[i].active) { used += sc->seqs[i].n_toks < sc->n_ctx ? sc->seqs[i].n_toks : sc->n_ctx; running++; }
    pthread_mutex_lock(&s->met.mu);
    s->met.running = running;
    s->met.kv_used = (double)used / ((double)sc->n_seq * sc->n_ctx);
    s->met.prompt_seconds = sc->t_prefill - s->sched_t0_prefill;
    s->met.drafted = (unsigned long long)sc->n_drafted;
    s->met.drafts_taken = (unsigned long long)sc->n_draft_ok;
    s->met.ctx_shifts = (unsigned long long)sc->n_ctx_shifts;
    s->met.kv_copies = (unsigned long long)sc->n_copies;
    s->met.kv_copied = (unsigned long long)sc->n_copied_tok;
    s->met.gen_seconds = sc->t_decode - s->sched_t0_decode;
    if (sc->ram) {
        const promptcache_t *pc = sc->ram;
        s->met.ram_entries = (unsigned long long)pc->n;
        s->met.ram_bytes = pc->bytes;
        s->met.ram_limit = pc->limit == SIZE_MAX ? -1 : (double)pc->limit;
        s->met.ram_saved = pc->n_saved, s->met.ram_evicted = pc->n_evicted;
        s->met.ram_hits = pc->n_hits, s->met.ram_restored = pc->n_restored_tok;
    }
    pthread_mutex_unlock(&s->met.mu);
    pthread_mutex_lock(&s->mu);
    server_info_publish(s);
    pthread_mutex_unlock(&s->mu);
}

void *server_engine_main(void *arg) {
    struct server *s = arg;
    sched_t *sc = &s->m->sched;
    job_t **admits = calloc((size_t)sc->n_seq, sizeof(job_t *));
    int *cancels = calloc((size_t)sc->n_seq, sizeof(int));
    uint8_t *claimed = calloc((size_t)sc->n_seq, 1);
    job_t *dead[64];
    TERN_ASSERT(admits && cancels && claimed);
    sched_set_prefix_cache(sc, !s->cfg.no_cache_prompt);   /* a request may still turn it off (sched_feed_whole) */
    sched_set_slot_similarity(sc, s->cfg.slot_sim);          /* checked by the flag's range */
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop_engine && !s->qhead && !s->slot_job && sched_active(sc) == 0)
            pthread_cond_wait(&s->engine_cv, &s->mu);
        if (s->slot_job) {   /* before admitting anyone: a restore's slot must stay free */
            slot_job_t *sj = s->slot_job;
            pthread_mutex_unlock(&s->mu);
            server_slots_run(s, sj);
            pthread_mutex_lock(&s->mu);
            server_info_publish(s);
            s->slot_job = NULL;
            sj->done = 1;
            pthread_cond_signal(&sj->cv);
        }
        if (s->stop_engine && !s->qhead && sched_active(sc) == 0) break;
        int ndead, na = take_queued(s, admits, sc->n_seq - sched_active(sc), dead, &ndead, claimed), nc = 0;
        for (int i = 0; i < sc->n_seq; i++) {
            sched_seq_t *q = &sc->seqs[i];
            if (q->active && (s->abort || ((job_t *)q->user)->cancel)) {
                if (s->abort && !((job_t *)q->user)->cancel) ((job_t *)q->user)->cancel = JOB_CANCEL_SHUTDOWN;
                cancels[nc++] = q->id;
            }
        }
        pthread_mutex_lock(&s->met.mu);
        s->met.waiting = s->n_queue;
        pthread_mutex_unlock(&s->met.mu);
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < ndead; i++) job_end(s, dead[i], SCHED_CANCEL);
        for (int i = 0; i < nc; i++) sched_cancel(sc, cancels[i]);
        for (int i = 0; i < na; i++) admit(s, admits[i]);
        if (na > 0) {   /* busy before the first step, which may be a long prefill */
            pthread_mutex_lock(&s->mu);
            server_info_publish(s);
            pthread_mutex_unlock(&s->mu);
        }
        if (sched_active(sc) > 0 && sched_step(sc) < 0) log_e("serve: step failed: %s", sc->err);
        update_gauges(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    free(admits);
    free(cancels);
    free(claimed);
    return NULL;
}
