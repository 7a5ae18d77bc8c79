/* draft: see draft.h. One local stage of the draft model; a slot's cache holds the tokens it was
 * fed by position (fed[slot]), so a proposal feeds only what differs from the last one — after a
 * round the confirmed tokens usually extend what it already holds. */
#include "coordinator/draft.h"
#include "coordinator/pipeline_local.h"
#include "coordinator/tokenizer.h"
#include "coordinator/toks.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "core/memlock.h"
#include "core/model_spec.h"
#include <stdlib.h>
#include <string.h>

#define DRAFT_MAX 64

struct draft {
    gguf_t *g;
    embed_t emb;
    memlock_t lock;        /* --mlock: the token embeddings (the stage locks the rest) */
    tpool_t *tp;
    pipeline_t *pl;
    int n_seq, n_ctx, n_batch;
    int32_t *fed;          /* (n_seq, n_ctx) tokens whose keys and values the slot holds, by position */
    int *n_fed;            /* (n_seq,) */
    uint8_t *started;      /* (n_seq,) the slot's sampler was set up (greedy) */
    step_t st;             /* one micro-batch of one slot */
    int32_t out_tok[1];
    float out_lp[1];
};

/* the draft model's token texts against the big model's: the same vocabulary or a reason */
static int same_vocab(const gguf_t *a, const gguf_t *b, int n_vocab, char *err, size_t errlen) {
    tokenizer_t *ta = NULL, *tb = NULL;
    int rc = tokenizer_load(&ta, a, err, errlen);
    if (rc == 0) rc = tokenizer_load(&tb, b, err, errlen);
    if (rc == 0 && (tokenizer_n_vocab(ta) != n_vocab || tokenizer_n_vocab(tb) != n_vocab))
        rc = err_set(err, errlen, TERN_EINVAL, "the draft model has %d tokens, the model %d: not the same vocabulary",
                     tokenizer_n_vocab(ta), n_vocab);
    char x[512], y[512];
    for (int t = 0; rc == 0 && t < n_vocab; t++) {
        int nx = tokenizer_token_text(ta, t, x, sizeof x), ny = tokenizer_token_text(tb, t, y, sizeof y);
        if (nx != ny || (nx > 0 && memcmp(x, y, (size_t)nx)))
            rc = err_set(err, errlen, TERN_EINVAL, "the draft model's token %d is not the model's: not the same vocabulary", t);
    }
    tokenizer_destroy(&ta);
    tokenizer_destroy(&tb);
    return rc;
}

/* --mlock: the token embeddings, read in place every step (the stage locks its layers and head) */
static int lock_embeddings(draft_t *d) {
    if (memlock_add(&d->lock, d->emb.t->data, d->emb.t->nbytes) < 0) return TERN_ENOMEM;
    char sz[32];
    memlock_apply(&d->lock, "draft token embeddings");
    log_i("--mlock: locked %s in memory (draft token embeddings)", memlock_size(sz, sizeof sz, d->lock.locked));
    return 0;
}

int draft_open(draft_t **out, const char *path, const gguf_t *big, const draft_opts_t *o, char *err, size_t errlen) {
    *out = NULL;
    draft_t *d = calloc(1, sizeof *d);
    if (!d) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    memlock_init(&d->lock);
    int n_seq = o->n_seq, n_ctx = o->n_ctx, n_batch = o->n_batch;
    char why[256];
    hparams_t hp;
    int rc = gguf_open_ex(&d->g, path, o->no_mmap ? GGUF_NO_MMAP : 0, why, sizeof why);
    if (rc == 0) rc = hparams_from_gguf(&hp, d->g, why, sizeof why);
    if (rc == 0) rc = same_vocab(d->g, big, o->n_vocab, why, sizeof why);
    if (rc == 0) rc = embed_init(&d->emb, d->g, why, sizeof why);
    if (rc == 0 && o->mlock && (rc = lock_embeddings(d)) < 0) err_set(why, sizeof why, rc, "out of memory");
    if (rc == 0 && !(d->tp = tpool_new(o->threads))) rc = err_set(why, sizeof why, TERN_ENOMEM, "cannot start threads");
    stage_cfg_t cfg;
    stage_cfg_default(&cfg);
    cfg.n_ctx = n_ctx, cfg.n_seq = n_seq, cfg.n_batch = n_batch;
    cfg.mlock = o->mlock;   /* the stage locks its layers and head itself */
    if (rc == 0) rc = pipeline_local_new(&d->pl, d->g, &cfg, 1, d->tp, why, sizeof why);
    d->n_seq = n_seq, d->n_ctx = n_ctx, d->n_batch = n_batch;
    if (rc == 0) {
        d->fed = malloc((size_t)n_seq * (size_t)n_ctx * sizeof *d->fed);
        d->n_fed = calloc((size_t)n_seq, sizeof *d->n_fed);
        d->started = calloc((size_t)n_seq, 1);
        d->st.tokens = malloc((size_t)n_batch * sizeof(int32_t));
        d->st.seq = calloc((size_t)n_batch, sizeof(int));
        d->st.pos = malloc((size_t)n_batch * sizeof(int));
        d->st.sample = malloc((size_t)n_batch);
        d->st.h = tern_alloc((size_t)n_batch * (size_t)hp.n_embd * sizeof(float));
        d->st.out_tok = d->out_tok, d->st.out_lp = d->out_lp;
        if (!d->fed || !d->n_fed || !d->started || !d->st.tokens || !d->st.seq || !d->st.pos || !d->st.sample || !d->st.h)
            rc = err_set(why, sizeof why, TERN_ENOMEM, "out of memory");
    }
    if (rc < 0) {
        draft_close(&d);
        return err_set(err, errlen, rc, "draft model %s: %s", path, why);
    }
    log_i("draft model %s: %d layers, %.1f MiB of weights%s", path, hp.n_layer, (double)d->pl->weight_bytes / 1048576,
          gguf_mapped(d->g) ? "" : ", read into memory (--no-mmap)");
    *out = d;
    return 0;
}

void draft_close(draft_t **pd) {
    draft_t *d = *pd;
    if (!d) return;
    pipeline_destroy(&d->pl);
    tpool_destroy(&d->tp);
    memlock_free(&d->lock);
    gguf_close(&d->g);
    free(d->fed);
    free(d->n_fed);
    free(d->started);
    free(d->st.tokens);
    free(d->st.seq);
    free(d->st.pos);
    free(d->st.sample);
    tern_free(d->st.h);
    free(d);
    *pd = NULL;
}

/* feeds toks[0..n) of slot at positions from..from+n and samples after the last: the token, or <0 */
static int feed(draft_t *d, int slot, const int32_t *toks, int n, int from) {
    int tok = -1;
    for (int done = 0; done < n;) {
        int k = n - done < d->n_batch ? n - done : d->n_batch;
        for (int i = 0; i < k; i++) {
            d->st.tokens[i] = toks[done + i];
            d->st.seq[i] = slot;
            d->st.pos[i] = from + done + i;
            d->st.sample[i] = (uint8_t)(done + i == n - 1);
        }
        d->st.n = k;
        if (embed_lookup(&d->emb, d->st.tokens, k, d->st.h) < 0) return TERN_EINVAL;
        int rc = d->pl->ops->submit(d->pl, &d->st);
        step_t *s = rc < 0 ? NULL : d->pl->ops->wait(d->pl, -1);
        if (!s || s->rc < 0) return s ? s->rc : rc;
        memcpy(d->fed + (size_t)slot * d->n_ctx + from + done, toks + done, (size_t)k * sizeof *toks);
        d->n_fed[slot] = from + done + k;
        done += k;
        if (done == n) tok = s->n_out == 1 ? s->out_tok[0] : TERN_EPROTO;
    }
    return tok;
}

int draft_propose(draft_t *d, int slot, const int32_t *toks, int n, int k, int32_t *out) {
    if (!d || slot < 0 || slot >= d->n_seq || n < 1) return 0;
    if (k > DRAFT_MAX) k = DRAFT_MAX;
    if (k > d->n_ctx - n) k = d->n_ctx - n;   /* the drafts fed: positions n .. n+k-2 */
    if (k < 1) return 0;
    if (!d->started[slot]) {
        sampler_params_t sp;
        sampler_params_default(&sp);
        sp.temp = 0;   /* greedy: the big model keeps a draft only where it is its own sample, at any temperature */
        if (d->pl->ops->seq_start(d->pl, slot, &sp) < 0) return 0;
        d->started[slot] = 1;
    }
    const int32_t *have = d->fed + (size_t)slot * d->n_ctx;
    int c = toks_common(have, toks, d->n_fed[slot] < n ? d->n_fed[slot] : n);
    if (c == n) c = n - 1;   /* the last token is fed again: its logits give the first draft */
    int t = feed(d, slot, toks + c, n - c, c), m = 0;
    while (t >= 0 && m < k) {
        out[m++] = t;
        if (m == k) break;
        int32_t in = t;
        t = feed(d, slot, &in, 1, n + m - 1);
    }
    return t < 0 ? 0 : m;
}
