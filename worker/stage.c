/* stage: validates a step against the configured limits, then forward + (last stage) sample. */
#include "worker/stage.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/tpool.h"
#include "kernels/ops.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int g_default_device = STAGE_DEV_CPU;

void stage_default_device(int device) { g_default_device = device; }

void stage_cfg_default(stage_cfg_t *c) {
    memset(c, 0, sizeof *c);
    c->n_ctx = 4096;
    c->n_seq = 1;
    c->n_batch = 64;
    c->kv_type = KV_F16;
    c->head_type = -1;
    c->device = g_default_device;
}

int stage_split(int n_layer, int n_cpu_stages, int n_gpu_layers, int *first, int *last, int *cuda, char *err,
                size_t errlen) {
    int ngl = n_gpu_layers < 0 ? 0 : n_gpu_layers > n_layer ? n_layer : n_gpu_layers;
    int n_cpu = n_layer - ngl, gpu = ngl > 0;
    if (ngl == n_layer) n_cpu_stages = 0;
    else if (n_cpu_stages < 1 || n_cpu_stages > n_cpu)
        return err_set(err, errlen, TERN_EINVAL, "cannot split %d layers into %d stages", n_cpu, n_cpu_stages);
    if (gpu) first[0] = 0, last[0] = ngl - 1, cuda[0] = 1;
    for (int ci = 0; ci < n_cpu_stages; ci++) {
        first[gpu + ci] = ngl + (int)((long)n_cpu * ci / n_cpu_stages);
        last[gpu + ci] = ngl + (int)((long)n_cpu * (ci + 1) / n_cpu_stages) - 1;
        cuda[gpu + ci] = 0;
    }
    return n_cpu_stages + gpu;
}

int stage_init(stage_t *st, const gguf_t *g, const stage_cfg_t *cfg, tpool_t *tp, char *err, size_t errlen) {
    memset(st, 0, sizeof *st);
    st->cfg = *cfg;
    if (cfg->n_ctx < 1 || cfg->n_seq < 1 || cfg->n_batch < 1)
        return err_set(err, errlen, TERN_EINVAL, "stage: ctx %d, sequences %d, batch %d must be positive", cfg->n_ctx,
                       cfg->n_seq, cfg->n_batch);
    shard_opts_t so;
    shard_opts_default(&so);
    so.head_type = cfg->head_type;
    so.mat_flags = cfg->mat_flags;
    so.mlock = cfg->mlock;
    so.rope_set = cfg->rope_set;
    so.rope_base = cfg->rope_base;
    so.rope = cfg->rope;
    if (cfg->device == STAGE_DEV_CUDA) {
        int prc = cuda_stage_probe(NULL, 0, err, errlen);   /* before reading any weights */
        if (prc < 0) return prc;
        so.mat_flags |= MAT_NO_REPACK;   /* the GPU repacks from the file's layout; no CPU copy */
    }
    int rc = shard_load(&st->shard, g, cfg->first, cfg->last, cfg->has_head, &so, err, errlen);
    if (rc < 0) return rc;
    /* rows of logits at once: at most one sampled token per sequence per step; scoring goes in
     * chunks of STAGE_SCORE_ROWS so the lm head runs as a GEMM */
    int nlog = !cfg->has_head ? 0 : cfg->n_seq > STAGE_SCORE_ROWS ? cfg->n_seq : STAGE_SCORE_ROWS;
    st->n_logit_rows = nlog;
    if (cfg->device == STAGE_DEV_CUDA)
        rc = cuda_stage_new(&st->cuda, &st->shard, cfg->n_ctx, cfg->n_seq, cfg->n_batch, nlog, cfg->kv_type, err, errlen);
    else
        rc = forward_init(&st->fwd, &st->shard, cfg->n_ctx, cfg->n_seq, cfg->n_batch, nlog, cfg->kv_type, tp, err, errlen);
    if (rc < 0) goto fail;
    st->rows = calloc((size_t)(cfg->n_batch > nlog ? cfg->n_batch : nlog), sizeof(int));
    st->kv_fill = calloc((size_t)cfg->n_seq, sizeof(int));
    if (!st->rows || !st->kv_fill) goto nomem;
    if (cfg->has_head) {
        int V = st->shard.hp.n_vocab;
        st->samplers = calloc((size_t)cfg->n_seq, sizeof(sampler_t));
        st->logits = tern_alloc((size_t)nlog * (size_t)V * sizeof(float));
        st->swork = tern_alloc(sampler_work_bytes(V));
        st->top_ids = calloc((size_t)nlog * SAMPLER_TOP_MAX, sizeof(int32_t));
        st->top_lp = calloc((size_t)nlog * SAMPLER_TOP_MAX, sizeof(float));
        st->hide = calloc((size_t)nlog, sizeof(int));
        st->slot_tmp = calloc((size_t)cfg->n_seq, sizeof(int));
        st->drawn_off = calloc((size_t)cfg->n_seq, sizeof(int));
        if (!st->samplers || !st->drawn_off || !st->logits || !st->swork || !st->top_ids || !st->top_lp || !st->hide || !st->slot_tmp)
            goto nomem;
        sampler_params_t p;
        sampler_params_default(&p);
        for (int i = 0; i < cfg->n_seq; i++) sampler_init(&st->samplers[i], &p);
        if (cuda_stage_picks(st->cuda)) {
            st->pick = calloc((size_t)cfg->n_seq, sizeof *st->pick);
            st->picked = calloc((size_t)cfg->n_seq, sizeof *st->picked);
            st->pen_ids = calloc((size_t)cfg->n_seq * SAMPLER_HIST_MAX, sizeof(int32_t));
            if (!st->pick || !st->picked || !st->pen_ids) goto nomem;
        }
    }
    return 0;
nomem:
    rc = err_set(err, errlen, TERN_ENOMEM, "stage: out of memory");
fail:
    stage_free(st);
    return rc;
}

void stage_free(stage_t *st) {
    cuda_stage_destroy(&st->cuda);
    forward_free(&st->fwd);
    shard_free(&st->shard);
    free(st->samplers);
    free(st->drawn_off);
    free(st->rows);
    free(st->kv_fill);
    free(st->hide);
    free(st->slot_tmp);
    free(st->top_ids);
    free(st->top_lp);
    free(st->score_top_ids);
    free(st->score_top_lp);
    free(st->pick);
    free(st->picked);
    free(st->pen_ids);
    free(st->allow);
    free(st->allow_on);
    tern_free(st->logits);
    tern_free(st->swork);
    memset(st, 0, sizeof *st);
}

void stage_seq_start(stage_t *st, int seq, const sampler_params_t *p) {
    if (st->samplers && seq >= 0 && seq < st->cfg.n_seq) {
        sampler_init(&st->samplers[seq], p);
        st->drawn_off[seq] = 0;
    }
}

int stage_seq_allow(stage_t *st, int seq, const uint8_t *bits, size_t nbytes) {
    if (!st->cfg.has_head || seq < 0 || seq >= st->cfg.n_seq) return TERN_EINVAL;
    size_t mb = ((size_t)st->shard.hp.n_vocab + 7) / 8;
    if (nbytes != mb) return TERN_EINVAL;
    if (!st->allow) {
        st->allow = malloc((size_t)st->cfg.n_seq * mb);
        st->allow_on = calloc((size_t)st->cfg.n_seq, 1);
        if (!st->allow || !st->allow_on) {
            free(st->allow), free(st->allow_on);
            st->allow = st->allow_on = NULL;
            return TERN_ENOMEM;
        }
    }
    memcpy(st->allow + (size_t)seq * mb, bits, mb);
    st->allow_on[seq] = 1;
    return 0;
}

/* the logits of the tokens slot seq's mask leaves out become -inf (the mask is used up) */
static void apply_allow(stage_t *st, int seq, float *l, int V) {
    if (!st->allow_on || !st->allow_on[seq]) return;
    const uint8_t *b = st->allow + (size_t)seq * (((size_t)V + 7) / 8);
    for (int v = 0; v < V; v++)
        if (!(b[v >> 3] >> (v & 7) & 1)) l[v] = -INFINITY;
    st->allow_on[seq] = 0;
}

int stage_shift(stage_t *st, const kv_shift_t *sh, int n, char *err, size_t errlen) {
    int rc = kv_shift_check(sh, n, st->cfg.n_seq, st->cfg.n_ctx, err, errlen);
    for (int i = 0; rc >= 0 && i < n; i++) {
        if (st->cuda) rc = cuda_stage_shift(st->cuda, &sh[i], err, errlen);
        else forward_shift(&st->fwd, &sh[i]);
        if (rc >= 0 && st->drawn_off) st->drawn_off[sh[i].seq] += sh[i].discard;
        int *f = &st->kv_fill[sh[i].seq], left = sh[i].n_past - sh[i].discard;
        if (rc >= 0 && *f > left) *f = left;   /* the rows past it are stale now */
    }
    return rc;
}

int stage_copy(stage_t *st, const kv_copy_t *cp, int n, char *err, size_t errlen) {
    int rc = kv_copy_check(cp, n, st->cfg.n_seq, st->cfg.n_ctx, st->kv_fill, err, errlen);
    for (int i = 0; rc >= 0 && i < n; i++) {
        if (st->cuda) rc = cuda_stage_copy(st->cuda, &cp[i], err, errlen);
        else kv_cache_copy(&st->fwd.kv, &cp[i]);
        if (rc >= 0) st->kv_fill[cp[i].dst] = cp[i].n;
    }
    return rc;
}

/* Draft checks (sched_set_lookup): several sampled rows of one slot in a step are its last token
 * and the draft tokens after it. Every input joins its slot's history before anything samples;
 * row j must read the history as it stood at its own token, so hide[j] counts the slot's
 * tokens of the step after row j's (taken back while it samples, then given back). */
static void rows_hide(stage_t *st, int n, const int32_t *tokens, const int *seq, const uint8_t *sample, int m) {
    for (int i = 0; i < n; i++) st->slot_tmp[seq[i]] = 0;
    for (int i = n - 1, j = m - 1; i >= 0 && j >= 0; i--) {
        if (sample[i]) st->hide[j--] = st->slot_tmp[seq[i]];
        if (tokens && tokens[i] >= 0) st->slot_tmp[seq[i]]++;
    }
}

/* row j's slot's history as it was at its token (hide[j] later tokens taken back) */
static sampler_t *hist_at_row(stage_t *st, const int *seq, int j) {
    sampler_t *sm = &st->samplers[seq[st->rows[j]]];
    sampler_drop(sm, st->hide[j]);
    return sm;
}

/* gives row j's slot back the tokens hist_at_row took (the slot's tokens after row j's) */
static void hist_restore(stage_t *st, int n, const int32_t *tokens, const int *seq, int j) {
    int i0 = st->rows[j], sl = seq[i0];
    for (int i = i0 + 1; st->hide[j] > 0 && i < n; i++)
        if (seq[i] == sl && tokens[i] >= 0) sampler_accept(&st->samplers[sl], tokens[i]);
}

/* After the draws: a token right after a sampled token of its slot (at the next position) is a
 * draft that sample checks; from the first whose check failed on, the slot's tokens of the step
 * leave its history (the scheduler feeds those positions again), so later steps penalise only
 * what plain decoding would have fed. */
static void drop_refused(stage_t *st, int n, const int32_t *tokens, const int *seq, const int *pos,
                         const uint8_t *sample, const int32_t *out_tok) {
    enum { NONE = -1, REFUSED = -2 };
    int *last = st->slot_tmp;   /* per slot: the row of its latest token when it sampled, or NONE / REFUSED */
    for (int i = 0; i < n; i++) last[seq[i]] = NONE;
    for (int i = 0, j = 0; i < n; i++) {
        int sl = seq[i], prev = last[sl];
        if (prev == REFUSED || (prev >= 0 && pos[st->rows[prev]] + 1 == pos[i] && out_tok[prev] != tokens[i])) {
            last[sl] = REFUSED;
            if (tokens[i] >= 0) sampler_drop(&st->samplers[sl], 1);   /* the slot's latest: this one's */
        } else {
            last[sl] = sample[i] ? j : NONE;
        }
        if (sample[i]) j++;
    }
}

size_t stage_kv_row(const stage_t *st) {
    return ops_kv_bytes(st->cfg.kv_type, (int64_t)st->shard.hp.n_head_kv * st->shard.hp.head_dim);
}

int stage_kv_io(stage_t *st, int seq, int n, uint8_t *buf, int write, char *err, size_t errlen) {
    if (seq < 0 || seq >= st->cfg.n_seq || n < 1 || n > st->cfg.n_ctx)
        return err_set(err, errlen, TERN_EINVAL, "KV rows [0, %d) of slot %d: this stage has %d slots of %d positions", n,
                       seq, st->cfg.n_seq, st->cfg.n_ctx);
    if (write) st->kv_fill[seq] = n;   /* the slot's text is the file's now (the rows past it: stale) */
    if (st->cuda) return cuda_stage_kv_io(st->cuda, seq, n, buf, write, err, errlen);
    const kv_cache_t *kv = &st->fwd.kv;
    size_t bytes = (size_t)n * kv->row;
    for (int il = 0; il < kv->n_layer; il++) {
        uint8_t *k = buf + (size_t)il * 2 * bytes, *v = k + bytes;
        uint8_t *ck = kv_cache_k(kv, il, seq), *cv = kv_cache_v(kv, il, seq);
        if (write) memcpy(ck, k, bytes), memcpy(cv, v, bytes);
        else memcpy(k, ck, bytes), memcpy(v, cv, bytes);
    }
    return 0;
}

int stage_step(stage_t *st, float *h, int n, const int32_t *tokens, const int *seq, const int *pos,
               const uint8_t *sample, int32_t *out_tok, float *out_logprob, char *err, size_t errlen) {
    return stage_step_logits(st, h, n, tokens, seq, pos, sample, out_tok, out_logprob, NULL, err, errlen);
}

int stage_step_logits(stage_t *st, float *h, int n, const int32_t *tokens, const int *seq, const int *pos,
                      const uint8_t *sample, int32_t *out_tok, float *out_logprob, float *out_logits, char *err,
                      size_t errlen) {
    const stage_cfg_t *c = &st->cfg;
    int nsample = 0;
    for (int i = 0; i < n; i++) {
        if (seq[i] < 0 || seq[i] >= c->n_seq || pos[i] < 0 || pos[i] >= c->n_ctx)
            return err_set(err, errlen, TERN_EINVAL, "token %d: sequence slot %d / position %d outside [0,%d) / [0,%d)",
                           i, seq[i], pos[i], c->n_seq, c->n_ctx);
        if (sample && sample[i]) nsample++;
    }
    if (n < 0 || (c->has_head && nsample > st->n_logit_rows))
        return err_set(err, errlen, TERN_EINVAL, "bad step: %d tokens, %d to sample", n, nsample);
    int m = 0;
    if (c->has_head && nsample)
        for (int i = 0; i < n; i++)
            if (sample[i]) st->rows[m++] = i;
    if (c->has_head)   /* the step's inputs join the penalty's history before anything samples */
        for (int i = 0; i < n; i++)
            if (tokens && tokens[i] >= 0) sampler_accept(&st->samplers[seq[i]], tokens[i]);
    if (m) rows_hide(st, n, tokens, seq, sample, m);
    int V = c->has_head ? st->shard.hp.n_vocab : 0, npen = 0;
    /* (drafts: rows > slots; out_logits: every row's logits come back to the host) */
    const cuda_pick_req_t *pick = m && st->pick && m <= c->n_seq && !out_logits ? st->pick : NULL;
    for (int j = 0; pick && j < m; j++) {   /* what the GPU may do of each row itself */
        const sampler_t *sm = &st->samplers[seq[st->rows[j]]];
        cuda_pick_req_t *r = &st->pick[j];
        *r = (cuda_pick_req_t){CUDA_PICK_LOGITS, 0, 1.0f, 0, 0};
        if (sm->p.logprobs) continue;   /* the log-softmax wants the whole row */
        if (st->allow_on && st->allow_on[seq[st->rows[j]]]) continue;   /* so does a grammar's mask */
        if (sampler_params_host_only(&sm->p)) continue;   /* bias, penalties but the repetition one, DRY, ... */
        if (sm->p.temp <= 0) r->mode = CUDA_PICK_ARGMAX;
        else if (sm->p.top_k > 0 && sm->p.top_k <= CUDA_PICK_MAX && sm->p.top_k < V) r->mode = CUDA_PICK_TOP, r->k = sm->p.top_k;
        else continue;
        r->penalty = sm->p.repeat_penalty;
        r->pen_off = npen;
        r->pen_n = sampler_penalty_ids(hist_at_row(st, seq, j), V, st->pen_ids + npen);
        hist_restore(st, n, tokens, seq, j);
        npen += r->pen_n;
    }
    if (st->cuda) {   /* layers and the sampled rows' logits (or picks) in one device step */
        int rc = cuda_stage_forward_pick(st->cuda, h, n, seq, pos, m, st->rows, st->logits, pick, st->pen_ids, npen,
                                         st->picked, err, errlen);
        if (rc < 0) return rc;
    } else {
        forward_layers(&st->fwd, h, n, seq, pos);
    }
    for (int i = 0; i < n; i++)
        if (pos[i] >= st->kv_fill[seq[i]]) st->kv_fill[seq[i]] = pos[i] + 1;
    st->n_top = 0;
    if (!c->has_head || !nsample) return 0;
    if (!st->cuda) forward_logits(&st->fwd, h, m, st->rows, st->logits);
    if (out_logits) memcpy(out_logits, st->logits, (size_t)m * (size_t)V * sizeof(float));   /* before the sampler */
    int nt = 0;
    for (int j = 0; j < m; j++) {
        const sampler_params_t *sp = &st->samplers[seq[st->rows[j]]].p;   /* clamped by sampler_init */
        if (sp->top_logprobs > nt) nt = sp->top_logprobs;
    }
    if (nt > V) nt = V;
    for (int j = 0; j < m; j++) {
        int i = st->rows[j], got = 0;
        int32_t *ti = st->top_ids + (size_t)j * nt;
        float *tl = st->top_lp + (size_t)j * nt;
        sampler_t *sm = hist_at_row(st, seq, j);
        sampler_seek(sm, pos[i] + 1 + st->drawn_off[seq[i]]);   /* the draw of the token it samples */
        float *lj = st->logits + (size_t)j * V;
        apply_allow(st, seq[i], lj, V);
        const cuda_pick_res_t *pr = pick && pick[j].mode != CUDA_PICK_LOGITS ? &st->picked[j] : NULL;
        if (pr) {   /* no logprobs asked: the GPU's pick, or its candidates drawn from here */
            out_tok[j] = pr->n < 0 ? sampler_sample_penalised(sm, lj, V, st->swork)
                         : pick[j].mode == CUDA_PICK_ARGMAX ? pr->id[0]
                                                            : sampler_sample_cands(sm, pr->id, pr->logit, pr->n, st->swork);
            if (out_logprob) out_logprob[j] = 0.0f;
        } else {
            out_tok[j] = sampler_sample_top(sm, lj, V, st->swork, out_logprob ? &out_logprob[j] : NULL, ti, tl, &got);
            while (got > 0 && tl[got - 1] == -INFINITY) got--;   /* a mask's tokens are no alternatives */
        }
        for (int k = got; k < nt; k++) ti[k] = -1, tl[k] = 0.0f;
        hist_restore(st, n, tokens, seq, j);
    }
    if (tokens) drop_refused(st, n, tokens, seq, pos, sample, out_tok);
    st->n_top = nt;
    return m;
}

/* logits of rows[0..m) of h into st->logits (m <= n_logit_rows) */
static int stage_logits(stage_t *st, const float *h, int m, const int *rows, char *err, size_t errlen) {
    if (st->cuda) return cuda_stage_forward(st->cuda, (float *)h, 0, NULL, NULL, m, rows, st->logits, err, errlen);
    forward_logits(&st->fwd, h, m, rows, st->logits);
    return 0;
}

typedef struct score_job {
    stage_t *st;
    const int *seq;
    const int32_t *target;
    double *out;
    int k0, m, nt, V;      /* rows st->rows[0..m) of st->logits are scored tokens k0.. */
} score_job_t;

/* log softmax at the target (in double) and the alternatives of this thread's share of the rows */
static void score_rows(void *arg, int ith, int nth) {
    const score_job_t *a = arg;
    stage_t *st = a->st;
    const int V = a->V, nt = a->nt;
    long j0, j1;
    tpool_split(a->m, ith, nth, 1, &j0, &j1);
    for (long j = j0; j < j1; j++) {
        const int row = st->rows[j], k = a->k0 + (int)j;
        const float *l = st->logits + (size_t)j * V;
        float mx = l[0];
        for (int v = 1; v < V; v++) mx = l[v] > mx ? l[v] : mx;
        double sum = 0;
        for (int v = 0; v < V; v++) sum += exp((double)l[v] - mx);
        a->out[k] = ((double)l[a->target[row]] - mx) - log(sum);
        if (!nt) continue;
        const sampler_params_t *sp = &st->samplers[a->seq[row]].p;
        int32_t *ti = st->score_top_ids + (size_t)k * nt;
        float *tl = st->score_top_lp + (size_t)k * nt;
        int got = sp->logprobs ? sampler_top(l, V, sp->top_logprobs < nt ? sp->top_logprobs : nt, ti, tl) : 0;
        for (int t = got; t < nt; t++) ti[t] = -1, tl[t] = 0.0f;
    }
}

int stage_score(stage_t *st, const float *h, int n, const int *seq, const int32_t *target, double *out, char *err,
                size_t errlen) {
    st->score_n_top = 0;
    if (!target) return 0;
    const int V = st->cfg.has_head ? st->shard.hp.n_vocab : 0, chunk = st->n_logit_rows;
    int ns = 0, nt = 0;
    for (int i = 0; i < n; i++) {
        if (target[i] < 0) continue;
        if (!st->cfg.has_head) return err_set(err, errlen, TERN_EINVAL, "tokens to score sent to a stage without the head");
        if (target[i] >= V)
            return err_set(err, errlen, TERN_EINVAL, "token %d: target %d outside the vocabulary (%d)", i, target[i], V);
        if (seq[i] < 0 || seq[i] >= st->cfg.n_seq)
            return err_set(err, errlen, TERN_EINVAL, "token %d: sequence slot %d outside [0,%d)", i, seq[i], st->cfg.n_seq);
        const sampler_params_t *sp = &st->samplers[seq[i]].p;
        if (sp->logprobs && sp->top_logprobs > nt) nt = sp->top_logprobs;
        ns++;
    }
    if (nt > V) nt = V;
    if (nt && ns > st->score_cap) {
        free(st->score_top_ids);
        free(st->score_top_lp);
        st->score_top_ids = malloc((size_t)ns * SAMPLER_TOP_MAX * sizeof(int32_t));
        st->score_top_lp = malloc((size_t)ns * SAMPLER_TOP_MAX * sizeof(float));
        st->score_cap = st->score_top_ids && st->score_top_lp ? ns : 0;
        if (!st->score_cap) return err_set(err, errlen, TERN_ENOMEM, "stage: out of memory for %d scored tokens", ns);
    }
    int k = 0, i = 0;
    while (k < ns) {
        int m = 0;
        for (; i < n && m < chunk; i++)
            if (target[i] >= 0) st->rows[m++] = i;
        int rc = stage_logits(st, h, m, st->rows, err, errlen);
        if (rc < 0) return rc;
        score_job_t job = {st, seq, target, out, k, m, nt, V};
        tpool_run(st->cuda ? NULL : st->fwd.tp, score_rows, &job);   /* rows split among threads */
        k += m;
    }
    st->score_n_top = nt;
    return ns;
}

int stage_embd(stage_t *st, const float *h, int n, const uint8_t *embd, float *out, char *err, size_t errlen) {
    if (!embd) return 0;
    const int64_t E = st->shard.hp.n_embd;
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!embd[i]) continue;
        if (!st->cfg.has_head) return err_set(err, errlen, TERN_EINVAL, "embeddings asked of a stage without the head");
        ops_rmsnorm(out + (size_t)k++ * (size_t)E, h + (size_t)i * (size_t)E, st->shard.out_norm, E, st->shard.hp.norm_eps);
    }
    return k;
}
