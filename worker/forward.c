/* forward: one block is
 *   h += Wo · subnorm_attn(attn(rope(Wq·n), rope(Wk·n), Wv·n)),  n = attn_norm(h)
 *   h += Wdown · subnorm_ffn(act(Wgate·m) ⊙ (Wup·m)),             m = ffn_norm(h)
 * (sub-norms only for the bitnet archs; act = relu² or SiLU). Matmuls run all n tokens at once
 * (GEMM); attention is split over (token, head) pairs across the thread pool. */
#include "worker/forward.h"
#include "core/alloc.h"
#include "core/err.h"
#include "kernels/ops.h"
#include <math.h>
#include <string.h>

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

int forward_init(forward_t *f, const shard_t *s, int n_ctx, int n_seq, int n_max, int n_logits_max, int kv_type,
                 tpool_t *tp, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    const hparams_t *hp = &s->hp;
    f->s = s;
    f->tp = tp;
    f->n_max = n_max;
    f->n_logits_max = n_logits_max;
    shard_rope(s, &f->rope);
    int nl = s->last - s->first + 1;
    size_t qdim = (size_t)hp->n_head * hp->head_dim, kvdim = (size_t)hp->n_head_kv * hp->head_dim;
    if (kv_type == KV_Q8_0 && hp->head_dim % KV_Q8_0_BLOCK)
        return err_set(err, errlen, TERN_EINVAL, "a q8_0 KV cache needs a head size that is a multiple of 32 (this model: %d)",
                       hp->head_dim);
    int rc = kv_cache_init(&f->kv, kv_type, nl > 0 ? nl : 1, n_seq, n_ctx, (int)kvdim, err, errlen);
    if (rc < 0) return rc;
    size_t N = (size_t)n_max, E = (size_t)hp->n_embd;
    f->xn = tern_alloc(N * E * 4);
    f->q = tern_alloc(N * qdim * 4);
    f->k = tern_alloc(N * kvdim * 4);
    f->v = tern_alloc(N * kvdim * 4);
    f->att = tern_alloc(N * qdim * 4);
    f->o = tern_alloc(N * E * 4);
    f->g = tern_alloc(N * (size_t)hp->n_ff * 4);
    f->u = tern_alloc(N * (size_t)hp->n_ff * 4);
    f->hn = tern_alloc((size_t)(n_logits_max > 0 ? n_logits_max : 1) * E * 4);
    int any_fused = 0;
    for (int i = 0; i < nl; i++) any_fused |= s->layers[i].qkv.rows > 0 || s->layers[i].gu.rows > 0;
    if (any_fused) {
        size_t w = qdim + 2 * kvdim > 2 * (size_t)hp->n_ff ? qdim + 2 * kvdim : 2 * (size_t)hp->n_ff;
        if (!(f->fused = tern_alloc(N * w * 4))) { forward_free(f); return err_set(err, errlen, TERN_ENOMEM, "out of memory for activations"); }
    }
    f->scores = tern_alloc((size_t)tpool_size(tp) * (size_t)n_ctx * OPS_ATTN_GROUP * 4);
    f->rot = tern_alloc((size_t)tpool_size(tp) * (size_t)hp->head_dim * 4);
    size_t sb = 0;
    for (int i = 0; i < nl; i++) {
        for (int j = 0; j < LIN_COUNT; j++) sb = max_sz(sb, mat_scratch_bytes(&s->layers[i].lin[j], n_max));
        if (s->layers[i].qkv.rows) sb = max_sz(sb, mat_scratch_bytes(&s->layers[i].qkv, n_max));
        if (s->layers[i].gu.rows) sb = max_sz(sb, mat_scratch_bytes(&s->layers[i].gu, n_max));
    }
    if (s->has_head) sb = max_sz(sb, mat_scratch_bytes(&s->head, n_logits_max));
    f->scratch_bytes = sb;
    f->scratch = tern_alloc(sb ? sb : 64);
    if (!f->xn || !f->q || !f->k || !f->v || !f->att || !f->o || !f->g || !f->u || !f->hn || !f->scores ||
        !f->rot || !f->scratch) {
        forward_free(f);
        return err_set(err, errlen, TERN_ENOMEM, "out of memory for activations (%d tokens)", n_max);
    }
    return 0;
}

int forward_set_batch_pool(forward_t *f, tpool_t *tp_batch) {
    int n = tpool_size(tp_batch);
    if (tp_batch && n > tpool_size(f->tp)) {   /* attention's scores are per thread */
        float *sc = tern_alloc((size_t)n * (size_t)f->kv.n_ctx * OPS_ATTN_GROUP * 4);
        if (!sc) return TERN_ENOMEM;
        tern_free(f->scores);
        f->scores = sc;
    }
    f->tp_batch = tp_batch;
    return 0;
}

void forward_free(forward_t *f) {
    kv_cache_free(&f->kv);
    void *bufs[] = {f->xn, f->q, f->k, f->v, f->att, f->o, f->g, f->u, f->hn, f->scores, f->scratch, f->fused, f->rot};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) tern_free(bufs[i]);
    memset(f, 0, sizeof *f);
}

typedef struct attn_task {
    forward_t *f;
    int il, n;
    const int *seq, *pos;
} attn_task_t;

/* Heads that read one kv head are best done together (each cache row is read and converted
 * once for them), but a decode step has few heads to spread over the threads. The size of those
 * runs: the gs in {1, 2, 4, 8} (within a kv group) that minimises the busiest thread's cost,
 * units · (gs + 1.5) — a head's FMAs, plus the row conversion shared by the run — ties to the larger. */
static int attn_run(int n, int nh, int nkv, int nth) {
    int group = nh / nkv, best = 1;
    double best_cost = 1e300;
    for (int gs = 1; gs <= OPS_ATTN_GROUP && gs <= group; gs *= 2) {
        long units = (long)n * nkv * ((group + gs - 1) / gs);
        double cost = (double)((units + nth - 1) / nth) * (gs + 1.5);
        if (cost <= best_cost) best_cost = cost, best = gs;
    }
    return best;
}

/* (token, run of heads) units split evenly; each unit is computed by one thread: deterministic
 * (every head's arithmetic is the spec's, whoever computes it and with whichever others) */
static void attn_worker(void *arg, int ith, int nth) {
    attn_task_t *a = arg;
    forward_t *f = a->f;
    const hparams_t *hp = &f->s->hp;
    int hd = hp->head_dim, nh = hp->n_head, nkv = hp->n_head_kv, group = nh / nkv;
    int gs = attn_run(a->n, nh, nkv, nth), per_group = (group + gs - 1) / gs, per_tok = nkv * per_group;
    long b, e;
    tpool_split((long)a->n * per_tok, ith, nth, 1, &b, &e);
    float *scores = f->scores + (size_t)ith * (size_t)f->kv.n_ctx * OPS_ATTN_GROUP;
    float scale = 1.0f / sqrtf((float)hd);
    for (long p = b; p < e; p++) {
        int t = (int)(p / per_tok), u = (int)(p % per_tok), kvh = u / per_group;
        int h0 = kvh * group + (u % per_group) * gs, h1 = h0 + gs < (kvh + 1) * group ? h0 + gs : (kvh + 1) * group;
        const float *q = f->q + (size_t)t * nh * hd;
        float *out = f->att + (size_t)t * nh * hd;
        ops_attention(out, q, kv_cache_k(&f->kv, a->il, a->seq[t]), kv_cache_v(&f->kv, a->il, a->seq[t]), f->kv.type,
                      a->pos[t] + 1, nh, nkv, hd, h0, h1, scale, scores);
    }
}

static void lin(forward_t *f, const layer_w_t *L, int which, const float *x, int n, float *y) {
    const mat_t *m = &L->lin[which];
    mat_mul(m, x, n, y, f->scratch, f->tp);
    if (L->lin_scale[which] != 1.0f) ops_scale(y, L->lin_scale[which], (int64_t)n * m->rows);
}

static void block(forward_t *f, int il, float *h, int n, const int *seq, const int *pos) {
    const hparams_t *hp = &f->s->hp;
    const layer_w_t *L = &f->s->layers[il];
    int64_t E = hp->n_embd, F = hp->n_ff;
    int64_t qdim = (int64_t)hp->n_head * hp->head_dim, kvdim = (int64_t)hp->n_head_kv * hp->head_dim;

    for (int t = 0; t < n; t++) ops_rmsnorm(f->xn + t * E, h + t * E, L->attn_norm, E, hp->norm_eps);
    if (L->qkv.rows) {   /* one stream for Q|K|V, then split per token */
        int64_t R = qdim + 2 * kvdim;
        mat_mul(&L->qkv, f->xn, n, f->fused, f->scratch, f->tp);
        for (int t = 0; t < n; t++) {
            const float *y = f->fused + t * R;
            memcpy(f->q + t * qdim, y, (size_t)qdim * 4);
            memcpy(f->k + t * kvdim, y + qdim, (size_t)kvdim * 4);
            memcpy(f->v + t * kvdim, y + qdim + kvdim, (size_t)kvdim * 4);
        }
    } else {
        lin(f, L, LIN_Q, f->xn, n, f->q);
        lin(f, L, LIN_K, f->xn, n, f->k);
        lin(f, L, LIN_V, f->xn, n, f->v);
    }
    for (int t = 0; t < n; t++) {
        ops_rope(f->q + t * qdim, hp->n_head, hp->head_dim, pos[t], &f->rope);
        ops_rope(f->k + t * kvdim, hp->n_head_kv, hp->head_dim, pos[t], &f->rope);
        kv_cache_store(&f->kv, il, seq[t], pos[t], f->k + t * kvdim, f->v + t * kvdim);
    }
    attn_task_t task = {f, il, n, seq, pos};
    tpool_run(f->tp, attn_worker, &task);
    if (L->attn_sub_norm)
        for (int t = 0; t < n; t++) ops_rmsnorm(f->att + t * qdim, f->att + t * qdim, L->attn_sub_norm, qdim, hp->norm_eps);
    lin(f, L, LIN_O, f->att, n, f->o);
    ops_add(h, f->o, (int64_t)n * E);

    for (int t = 0; t < n; t++) ops_rmsnorm(f->xn + t * E, h + t * E, L->ffn_norm, E, hp->norm_eps);
    if (L->gu.rows) {   /* one stream for gate|up */
        mat_mul(&L->gu, f->xn, n, f->fused, f->scratch, f->tp);
        for (int t = 0; t < n; t++) {
            memcpy(f->g + t * F, f->fused + t * 2 * F, (size_t)F * 4);
            memcpy(f->u + t * F, f->fused + t * 2 * F + F, (size_t)F * 4);
        }
    } else {
        lin(f, L, LIN_GATE, f->xn, n, f->g);
        lin(f, L, LIN_UP, f->xn, n, f->u);
    }
    if (hp->act == ACT_RELU2) ops_relu2_mul(f->g, f->u, (int64_t)n * F);
    else ops_silu_mul(f->g, f->u, (int64_t)n * F);
    if (L->ffn_sub_norm)
        for (int t = 0; t < n; t++) ops_rmsnorm(f->g + t * F, f->g + t * F, L->ffn_sub_norm, F, hp->norm_eps);
    lin(f, L, LIN_DOWN, f->g, n, f->o);
    ops_add(h, f->o, (int64_t)n * E);
}

void forward_layers(forward_t *f, float *h, int n, const int *seq, const int *pos) {
    tpool_t *gen = f->tp;
    if (n > 1 && f->tp_batch) f->tp = f->tp_batch;   /* llama.cpp's -tb: prompt-sized steps */
    for (int done = 0; done < n; done += f->n_max) {
        int m = n - done < f->n_max ? n - done : f->n_max;
        float *hh = h + (size_t)done * f->s->hp.n_embd;
        for (int il = 0; il <= f->s->last - f->s->first; il++) {
            block(f, il, hh, m, seq + done, pos + done);
            if (f->tick) f->tick(f->tick_ctx);
        }
    }
    f->tp = gen;
}

void forward_shift(forward_t *f, const kv_shift_t *sh) {
    const hparams_t *hp = &f->s->hp;
    float cs[512], sn[512];   /* rot_dim <= head_dim <= 1024 (ops_rope's bound) */
    TERN_ASSERT(hp->rot_dim <= 1024);
    /* the rotation alone: the keys were scaled by the magnitude (yarn) once, when computed */
    ops_rope_shift_table(cs, sn, -sh->discard, &f->rope);
    kv_rope_t r = {hp->head_dim, hp->rot_dim, hp->rope_neox, cs, sn};
    kv_cache_shift(&f->kv, sh, &r, f->tp, f->rot);
}

void forward_logits(forward_t *f, const float *h, int m, const int *rows, float *logits) {
    const hparams_t *hp = &f->s->hp;
    int64_t E = hp->n_embd;
    tpool_t *gen = f->tp;
    if (m > 1 && f->tp_batch) f->tp = f->tp_batch;
    for (int done = 0; done < m; done += f->n_logits_max) {
        int k = m - done < f->n_logits_max ? m - done : f->n_logits_max;
        for (int i = 0; i < k; i++)
            ops_rmsnorm(f->hn + i * E, h + (int64_t)rows[done + i] * E, f->s->out_norm, E, hp->norm_eps);
        mat_mul(&f->s->head, f->hn, k, logits + (size_t)done * hp->n_vocab, f->scratch, f->tp);
    }
    f->tp = gen;
}
