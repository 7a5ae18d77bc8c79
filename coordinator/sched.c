/* sched: see sched.h. Decode tokens go first in a step so a long prompt never starves running
 * sequences; prompts fill what is left of n_batch. */
#include "coordinator/sched.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/progress.h"
#include <stdlib.h>
#include <string.h>

int sched_init(sched_t *s, pipeline_t *pl, const embed_t *emb, int n_seq, int n_ctx, int n_batch, char *err,
               size_t errlen) {
    memset(s, 0, sizeof *s);
    s->pl = pl;
    s->emb = emb;
    s->n_seq = n_seq;
    s->n_ctx = n_ctx;
    s->n_batch = n_batch;
    int cap = n_batch + n_seq;
    s->seqs = calloc((size_t)n_seq, sizeof(sched_seq_t));
    s->step.tokens = calloc((size_t)cap, sizeof(int32_t));
    s->step.seq = calloc((size_t)cap, sizeof(int));
    s->step.pos = calloc((size_t)cap, sizeof(int));
    s->step.sample = calloc((size_t)cap, 1);
    s->step.out_tok = calloc((size_t)n_seq, sizeof(int32_t));
    s->step.out_lp = calloc((size_t)n_seq, sizeof(float));
    s->h = tern_alloc((size_t)cap * (size_t)pl->n_embd * sizeof(float));
    if (!s->seqs || !s->step.tokens || !s->step.seq || !s->step.pos || !s->step.sample || !s->step.out_tok ||
        !s->step.out_lp || !s->h) {
        sched_free(s);
        return err_set(err, errlen, TERN_ENOMEM, "scheduler: out of memory");
    }
    for (int i = 0; i < n_seq; i++) {
        s->seqs[i].slot = i;
        if (!(s->seqs[i].toks = malloc((size_t)n_ctx * sizeof(int32_t)))) {
            sched_free(s);
            return err_set(err, errlen, TERN_ENOMEM, "scheduler: out of memory");
        }
    }
    return 0;
}

void sched_free(sched_t *s) {
    if (s->seqs)
        for (int i = 0; i < s->n_seq; i++) free(s->seqs[i].toks);
    free(s->seqs);
    free(s->step.tokens);
    free(s->step.seq);
    free(s->step.pos);
    free(s->step.sample);
    free(s->step.out_tok);
    free(s->step.out_lp);
    tern_free(s->h);
    memset(s, 0, sizeof *s);
}

int sched_add(sched_t *s, const int32_t *prompt, int n, int max_gen, const sampler_params_t *sp, sched_cb cb,
              void *user) {
    if (n < 1 || n >= s->n_ctx) return TERN_EINVAL;
    for (int i = 0; i < n; i++)
        if (prompt[i] < 0 || prompt[i] >= s->pl->n_vocab) return TERN_EINVAL;
    for (int i = 0; i < s->n_seq; i++) {
        sched_seq_t *q = &s->seqs[i];
        if (q->active) continue;
        int rc = s->pl->ops->seq_start(s->pl, i, sp);
        if (rc < 0) return rc;
        q->active = 1;
        q->id = s->next_id++;
        memcpy(q->toks, prompt, (size_t)n * sizeof(int32_t));
        q->n_prompt = q->n_toks = n;
        q->n_fed = 0;
        q->max_gen = max_gen;
        q->n_gen = 0;
        q->finish = SCHED_RUNNING;
        q->sp = *sp;
        q->cb = cb;
        q->user = user;
        q->t_start = time_now();
        q->t_first = 0;
        return q->id;
    }
    return TERN_ENOMEM;
}

static void finish(sched_seq_t *q, int why) {
    q->finish = why;
    q->active = 0;
    if (q->cb) q->cb(q->user, q->id, -1, 0, why);
}

void sched_cancel(sched_t *s, int id) {
    for (int i = 0; i < s->n_seq; i++)
        if (s->seqs[i].active && s->seqs[i].id == id) finish(&s->seqs[i], SCHED_CANCEL);
}

int sched_active(const sched_t *s) {
    int n = 0;
    for (int i = 0; i < s->n_seq; i++) n += s->seqs[i].active;
    return n;
}

/* packs tokens [n_fed, n_fed+k) of q into the step */
static void pack(sched_t *s, sched_seq_t *q, int k, int sample_last) {
    step_t *st = &s->step;
    for (int j = 0; j < k; j++) {
        int i = st->n++;
        st->tokens[i] = q->toks[q->n_fed + j];
        st->seq[i] = q->slot;
        st->pos[i] = q->n_fed + j;
        st->sample[i] = (uint8_t)(sample_last && j == k - 1);
    }
    q->n_fed += k;
}

int sched_step(sched_t *s) {
    step_t *st = &s->step;
    st->n = 0;
    int budget = s->n_batch, has_prompt = 0;
    for (int i = 0; i < s->n_seq; i++) {   /* decode tokens first */
        sched_seq_t *q = &s->seqs[i];
        if (q->active && q->n_fed == q->n_toks - 1 && q->n_fed >= q->n_prompt) { pack(s, q, 1, 1); budget--; }
    }
    for (int i = 0; i < s->n_seq && budget > 0; i++) {
        sched_seq_t *q = &s->seqs[i];
        if (!q->active || q->n_fed >= q->n_prompt) continue;
        int k = q->n_prompt - q->n_fed < budget ? q->n_prompt - q->n_fed : budget;
        pack(s, q, k, q->n_fed + k == q->n_prompt);
        budget -= k;
        has_prompt = 1;
    }
    if (st->n == 0) return sched_active(s);
    if (embed_lookup(s->emb, st->tokens, st->n, s->h) < 0) {
        snprintf(s->err, sizeof s->err, "token id outside the vocabulary");
        return TERN_EINVAL;
    }
    st->h = s->h;
    st->id = (uint64_t)s->steps_run++;
    double t0 = time_now();
    int rc = s->pl->ops->submit(s->pl, st);
    step_t *done = rc < 0 ? NULL : s->pl->ops->wait(s->pl, -1);
    if (!done || done->rc < 0) {
        snprintf(s->err, sizeof s->err, "%s", done ? done->err : "pipeline: step was not accepted");
        for (int i = 0; i < s->n_seq; i++)
            if (s->seqs[i].active) finish(&s->seqs[i], SCHED_ERROR);
        return done && done->rc < 0 ? done->rc : TERN_EPEER;
    }
    double dt = time_now() - t0;
    if (has_prompt) { s->t_prefill += dt; s->n_prefill_tok += st->n; }
    else { s->t_decode += dt; s->n_decode_tok += st->n; }
    /* sampled tokens come back in order of the sampling tokens in the step */
    int j = 0;
    for (int i = 0; i < st->n && j < done->n_out; i++) {
        if (!st->sample[i]) continue;
        sched_seq_t *q = &s->seqs[st->seq[i]];
        int32_t tok = done->out_tok[j];
        float lp = done->out_lp[j++];
        if (!q->active) continue;
        if (!q->t_first) q->t_first = time_now();
        q->toks[q->n_toks++] = tok;
        q->n_gen++;
        int stop = q->cb ? q->cb(q->user, q->id, tok, lp, SCHED_RUNNING) : 0;
        if (stop) finish(q, SCHED_STOP);
        else if (q->n_gen >= q->max_gen) finish(q, SCHED_LENGTH);
        else if (q->n_toks >= s->n_ctx) finish(q, SCHED_CTX);
    }
    return sched_active(s);
}
