/* pipeline_local: one FIFO of submitted steps; wait runs the oldest through every stage. */
#include "coordinator/pipeline_local.h"
#include "core/err.h"
#include "kernels/ops.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCAL_QUEUE 16

/* A sampler reset takes effect with the step submitted after it, like on a cluster, so a step
 * of the slot's previous sequence still queued keeps the old sampler. */
typedef struct local_entry {
    step_t *step;
    int n_reset;
    int *reset_slot;            /* (n_seq,) */
    sampler_params_t *reset;    /* (n_seq,) */
} local_entry_t;

typedef struct local {
    pipeline_t base;
    stage_t *stages;
    int n_stages, n_seq;
    local_entry_t queue[LOCAL_QUEUE];
    int head, count;
    sampler_params_t *pending;
    uint8_t *has_pending;
    kv_shift_t *kvs;            /* (n_seq,) a step's context shifts */
    kv_copy_t *kvc;             /* (n_seq,) a step's KV copies */
} local_t;

static int local_seq_start(pipeline_t *p, int slot, const sampler_params_t *sp) {
    local_t *l = (local_t *)p;
    if (slot < 0 || slot >= l->n_seq) return TERN_EINVAL;
    l->pending[slot] = *sp;
    l->has_pending[slot] = 1;
    return 0;
}

static int local_submit(pipeline_t *p, step_t *s) {
    local_t *l = (local_t *)p;
    if (l->count == LOCAL_QUEUE) return TERN_EINVAL;
    local_entry_t *e = &l->queue[(l->head + l->count++) % LOCAL_QUEUE];
    e->step = s;
    e->n_reset = 0;
    for (int i = 0; i < l->n_seq; i++)
        if (l->has_pending[i]) {
            e->reset_slot[e->n_reset] = i;
            e->reset[e->n_reset++] = l->pending[i];
            l->has_pending[i] = 0;
        }
    return 0;
}

/* the step's context shifts in every stage (each checks them first: a bad one applies none) */
static int local_shifts(local_t *l, step_t *s) {
    if (s->n_shift < 0 || s->n_shift > l->n_seq)
        return err_set(s->err, sizeof s->err, TERN_EINVAL, "%d context shifts in one step for %d sequence slots",
                       s->n_shift, l->n_seq);
    for (int i = 0; i < s->n_shift; i++) {
        const step_shift_t *x = &s->shift[i];
        l->kvs[i] = (kv_shift_t){x->seq, x->keep, x->discard, x->n_past};
    }
    int rc = 0;
    for (int i = 0; i < l->n_stages && rc >= 0; i++)
        rc = stage_shift(&l->stages[i], l->kvs, s->n_shift, s->err, sizeof s->err);
    return rc;
}

/* the step's KV copies in every stage, after its shifts were found good (each stage checks the
 * copies first: a bad one applies none) */
static int local_copies(local_t *l, step_t *s) {
    if (s->n_copy < 0 || s->n_copy > l->n_seq || s->n_shift < 0 || s->n_shift > l->n_seq)
        return err_set(s->err, sizeof s->err, TERN_EINVAL, "%d KV copies and %d context shifts in one step for %d "
                       "sequence slots", s->n_copy, s->n_shift, l->n_seq);
    for (int i = 0; i < s->n_shift; i++) {
        const step_shift_t *x = &s->shift[i];
        l->kvs[i] = (kv_shift_t){x->seq, x->keep, x->discard, x->n_past};
    }
    int rc = kv_shift_check(l->kvs, s->n_shift, l->n_seq, l->stages[0].cfg.n_ctx, s->err, sizeof s->err);
    for (int i = 0; i < s->n_copy; i++) {
        const step_copy_t *x = &s->copy[i];
        l->kvc[i] = (kv_copy_t){x->src_slot, x->dst_slot, x->n};
    }
    for (int i = 0; i < l->n_stages && rc >= 0; i++)
        rc = stage_copy(&l->stages[i], l->kvc, s->n_copy, s->err, sizeof s->err);
    return rc;
}

static step_t *local_wait(pipeline_t *p, int timeout_ms) {
    local_t *l = (local_t *)p;
    (void)timeout_ms;
    if (!l->count) return NULL;
    local_entry_t *e = &l->queue[l->head];
    step_t *s = e->step;
    l->head = (l->head + 1) % LOCAL_QUEUE;
    l->count--;
    for (int i = 0; i < e->n_reset; i++) stage_seq_start(&l->stages[l->n_stages - 1], e->reset_slot[i], &e->reset[i]);
    s->n_out = 0;
    s->n_top = 0;
    s->n_scored = 0;
    s->n_target_top = 0;
    s->n_embd_out = 0;
    s->rc = 0;
    stage_t *last = &l->stages[l->n_stages - 1];
    for (int i = 0; s->allow && i < s->n; i++)   /* the masks of the step's constrained samples */
        if (s->sample[i] && s->allow[s->seq[i]] &&
            (s->rc = stage_seq_allow(last, s->seq[i], s->allow[s->seq[i]], ((size_t)p->n_vocab + 7) / 8)) < 0) {
            snprintf(s->err, sizeof s->err, "cannot set the token mask of sequence slot %d", s->seq[i]);
            return s;
        }
    if (s->n_copy && (s->rc = local_copies(l, s)) < 0) return s;
    if (s->n_shift && (s->rc = local_shifts(l, s)) < 0) return s;
    for (int i = 0; i < l->n_stages && s->rc >= 0; i++) {
        stage_t *st = &l->stages[i];
        s->rc = stage_step_logits(st, s->h, s->n, s->tokens, s->seq, s->pos, s->sample, s->out_tok, s->out_lp,
                                  s->out_logits, s->err, sizeof s->err);
        if (i == l->n_stages - 1 && s->rc >= 0) {
            s->n_out = s->rc;
            int ns = stage_score(st, s->h, s->n, s->seq, s->target, s->out_target_lp, s->err, sizeof s->err);
            if (ns < 0) { s->rc = ns; break; }
            s->n_scored = ns;
            int ne = s->out_embd ? stage_embd(st, s->h, s->n, s->embd, s->out_embd, s->err, sizeof s->err) : 0;
            if (ne < 0) { s->rc = ne; break; }
            s->n_embd_out = ne;
            if (s->out_target_top && s->out_target_top_lp && st->score_n_top) {
                size_t nt = (size_t)ns * (size_t)st->score_n_top;
                memcpy(s->out_target_top, st->score_top_ids, nt * sizeof(int32_t));
                memcpy(s->out_target_top_lp, st->score_top_lp, nt * sizeof(float));
                s->n_target_top = st->score_n_top;
            }
            if (s->out_top && s->out_top_lp && st->n_top) {
                size_t nt = (size_t)s->n_out * (size_t)st->n_top;
                memcpy(s->out_top, st->top_ids, nt * sizeof(int32_t));
                memcpy(s->out_top_lp, st->top_lp, nt * sizeof(float));
                s->n_top = st->n_top;
            }
        }
    }
    return s;
}

static void local_destroy(pipeline_t *p) {
    local_t *l = (local_t *)p;
    for (int i = 0; i < l->n_stages; i++) stage_free(&l->stages[i]);
    for (int i = 0; i < LOCAL_QUEUE; i++) { free(l->queue[i].reset_slot); free(l->queue[i].reset); }
    free(l->stages);
    free(l->pending);
    free(l->has_pending);
    free(l->kvs);
    free(l->kvc);
    free(l);
}

/* a slot's rows in or out of every stage (pipeline.h kv_read / kv_write); each stage's layers are
 * one contiguous piece of buf */
static int local_kv(pipeline_t *p, int slot, int n, int kv_type, size_t row, uint8_t *buf, int write, char *err,
                    size_t errlen) {
    local_t *l = (local_t *)p;
    if (l->count) return err_set(err, errlen, TERN_EINVAL, "KV rows moved while steps are queued");
    for (int i = 0; i < l->n_stages; i++) {
        stage_t *st = &l->stages[i];
        if (st->cfg.kv_type != kv_type || stage_kv_row(st) != row)
            return err_set(err, errlen, TERN_EINVAL, "KV rows of type %s, %zu bytes: the stages' are %s, %zu bytes",
                           ops_kv_name(kv_type) ? ops_kv_name(kv_type) : "?", row, ops_kv_name(st->cfg.kv_type),
                           stage_kv_row(st));
        int rc = stage_kv_io(st, slot, n, buf + (size_t)st->cfg.first * 2 * (size_t)n * row, write, err, errlen);
        if (rc < 0) return rc;
    }
    return 0;
}

static int local_kv_read(pipeline_t *p, int slot, int n, int kv_type, size_t row, uint8_t *buf, char *err,
                         size_t errlen) {
    return local_kv(p, slot, n, kv_type, row, buf, 0, err, errlen);
}

static int local_kv_write(pipeline_t *p, int slot, int n, int kv_type, size_t row, const uint8_t *buf, char *err,
                          size_t errlen) {
    return local_kv(p, slot, n, kv_type, row, (uint8_t *)buf, 1, err, errlen);   /* only read when writing */
}

static const pipeline_ops_t g_local_ops = {local_seq_start, local_submit, local_wait, local_destroy, NULL, NULL,
                                           local_kv_read, local_kv_write};

int pipeline_local_new(pipeline_t **out, const gguf_t *g, const stage_cfg_t *cfg, int n_stages, tpool_t *tp,
                       char *err, size_t errlen) {
    return pipeline_local_new_gpu(out, g, cfg, n_stages, 0, tp, err, errlen);
}

int pipeline_local_new_gpu(pipeline_t **out, const gguf_t *g, const stage_cfg_t *cfg, int n_stages, int n_gpu_layers,
                           tpool_t *tp, char *err, size_t errlen) {
    *out = NULL;
    hparams_t hp;
    int rc = hparams_from_gguf(&hp, g, err, errlen);
    if (rc < 0) return rc;
    int n = n_stages > 0 ? n_stages + 1 : 1;
    int *first = calloc((size_t)n * 3, sizeof(int)), *last = first + n, *cuda = last + n;
    if (!first) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    if ((n_stages = stage_split(hp.n_layer, n_stages, n_gpu_layers, first, last, cuda, err, errlen)) < 0) {
        free(first);
        return n_stages;
    }
    int gpu = cuda[0];
    local_t *l = calloc(1, sizeof *l);
    int ok = l && (l->stages = calloc((size_t)n_stages, sizeof(stage_t))) &&
             (l->pending = calloc((size_t)cfg->n_seq, sizeof(sampler_params_t))) &&
             (l->has_pending = calloc((size_t)cfg->n_seq, 1)) &&
             (l->kvs = calloc((size_t)cfg->n_seq, sizeof(kv_shift_t))) &&
             (l->kvc = calloc((size_t)cfg->n_seq, sizeof(kv_copy_t)));
    for (int i = 0; ok && i < LOCAL_QUEUE; i++)
        ok = (l->queue[i].reset_slot = calloc((size_t)cfg->n_seq, sizeof(int))) &&
             (l->queue[i].reset = calloc((size_t)cfg->n_seq, sizeof(sampler_params_t)));
    if (!ok) {
        if (l) local_destroy(&l->base);
        free(first);
        return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    }
    l->n_seq = cfg->n_seq;
    l->base.ops = &g_local_ops;
    l->base.max_inflight = 1;
    l->base.n_embd = hp.n_embd;
    l->base.n_vocab = hp.n_vocab;
    for (int i = 0; i < n_stages; i++) {
        stage_cfg_t c = *cfg;
        c.first = first[i];
        c.last = last[i];
        c.has_head = i == n_stages - 1;
        if (gpu) c.device = cuda[i] ? STAGE_DEV_CUDA : STAGE_DEV_CPU;
        if ((rc = stage_init(&l->stages[i], g, &c, tp, err, errlen)) < 0) {
            l->n_stages = i;
            local_destroy(&l->base);
            free(first);
            return rc;
        }
        l->n_stages = i + 1;
        l->base.weight_bytes += l->stages[i].shard.weight_bytes;
    }
    free(first);
    *out = &l->base;
    return 0;
}
