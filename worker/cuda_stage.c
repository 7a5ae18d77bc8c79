/* cuda_stage: uploads a shard and runs forward.c's block on the GPU (see cuda_stage.h). The
 * orchestration is C; kernels are in kernels/cuda/. One block per layer:
 *   h += Wo · subnorm(attn(rope(Wq·n), rope(Wk·n), Wv·n)),  n = rmsnorm(h)
 *   h += Wdown · subnorm(act(Wgate·m) ⊙ Wup·m),              m = rmsnorm(h)
 * with the activations quantised once per input and shared by the linears that read them —
 * fused into 10 launches (block_fused) and, for steps of up to 8 tokens, replayed as one CUDA
 * graph per token count. TERN_CUDA_FUSE/GRAPHS/PDL=0 and TERN_CUDA_GEMV_ROWS switch the parts
 * off for comparison; TERN_CUDA_TIMING=1 logs the phases of one-token steps at destroy;
 * TERN_CUDA_MMA=1 runs prefill's GEMM on the int8 tensor cores (opt-in: not yet run on a GPU). The
 * head's sampled rows are picked on the device when the caller asks and TERN_CUDA_SAMPLE=1 (opt-in
 * until run on a GPU). */
#include "worker/cuda_stage.h"
#include "core/err.h"
#include <stdio.h>

#if !defined(TERN_HAVE_CUDA)

int cuda_stage_probe(char *name, size_t cap, char *err, size_t errlen) {
    return err_set(err, errlen, TERN_ENOTSUP, "tern was built without CUDA");
}
int cuda_stage_new(cuda_stage_t **out, const shard_t *s, int n_ctx, int n_seq, int n_max, int n_logits_max,
                   int kv_type, char *err, size_t errlen) {
    *out = NULL;
    return err_set(err, errlen, TERN_ENOTSUP, "tern was built without CUDA");
}
void cuda_stage_destroy(cuda_stage_t **p) { if (p) *p = NULL; }
int cuda_stage_forward(cuda_stage_t *c, float *h, int n, const int *seq, const int *pos, int m, const int *rows,
                       float *logits, char *err, size_t errlen) {
    return err_set(err, errlen, TERN_ENOTSUP, "tern was built without CUDA");
}
int cuda_stage_forward_pick(cuda_stage_t *c, float *h, int n, const int *seq, const int *pos, int m, const int *rows,
                            float *logits, const cuda_pick_req_t *pick, const int32_t *pen, int n_pen,
                            cuda_pick_res_t *res, char *err, size_t errlen) {
    return err_set(err, errlen, TERN_ENOTSUP, "tern was built without CUDA");
}
int cuda_stage_shift(cuda_stage_t *c, const kv_shift_t *sh, char *err, size_t errlen) {
    return err_set(err, errlen, TERN_ENOTSUP, "tern was built without CUDA");
}
int cuda_stage_kv_io(cuda_stage_t *c, int seq, int n, uint8_t *buf, int write, char *err, size_t errlen) {
    return err_set(err, errlen, TERN_ENOTSUP, "tern was built without CUDA");
}
int cuda_stage_copy(cuda_stage_t *c, const kv_copy_t *cp, char *err, size_t errlen) {
    return err_set(err, errlen, TERN_ENOTSUP, "tern was built without CUDA");
}
int cuda_stage_picks(const cuda_stage_t *c) { return 0; }
size_t cuda_stage_device_bytes(const cuda_stage_t *c) { return 0; }
int cuda_stage_device_info(char *name, size_t cap, size_t *mem, double *gbps, char *err, size_t errlen) {
    return err_set(err, errlen, TERN_ENOTSUP, "tern was built without CUDA");
}

#else

#include "core/types.h"
#include "kernels/cuda/cuda_fmat.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_pick.h"
#include "kernels/cuda/cuda_rt.h"
#include "kernels/cuda/cuda_tmat.h"
#include "kernels/gpack.h"
#include "kernels/kquant.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "worker/sampler.h"
#include "core/log.h"
#include "core/progress.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GRAPH_MAX_N 8   /* decode and batched decode; prefill launches directly */
#define SCORES_MAX_BYTES ((size_t)256 << 20)   /* attention scratch cap: tokens per launch follow */

typedef struct cu_lin {
    uint32_t *w;            /* (rows, cols/16) gpack words, device */
    int64_t rows, cols;
    float scale, lscale;    /* weight scale; blk.N.<name>.scale (1 when absent) */
} cu_lin_t;

typedef struct cu_layer {
    float *an, *asn, *fn, *fsn;   /* norms (device f32); sub-norms may be NULL */
    cu_lin_t lin[LIN_COUNT];
} cu_layer_t;

struct cuda_stage {
    const shard_t *s;
    hparams_t hp;
    int n_ctx, n_seq, n_max, n_lmax, kv_type, nl, att_chunk;
    cu_layer_t *L;
    float *out_norm;
    void *head;             /* as stored (kind), device */
    int head_kind;
    void *kc, *vc;          /* [layer][seq][pos][kv_dim] */
    size_t kv_layer_bytes;
    int64_t seq_stride;     /* elements per (layer, seq) block */
    float *cs, *sn;         /* (n_ctx, rot_dim/2) rope tables */
    float *shift_cs, *shift_sn; /* (rot_dim/2,) a context shift's rotation (magnitude 1) */
    float *h, *xn, *q, *k, *v, *att, *o, *g, *u, *hn, *logits, *scores;
    int8_t *aq;             /* (n_max, max cols) quantised activations */
    float *as;
    int32_t *asum;
    void *fscratch;         /* head Q8_0 scratch */
    cuda_pick_req_t *preq;  /* (n_lmax,) device: what to pick of each sampled row */
    int32_t *ppen;          /* (n_lmax · SAMPLER_HIST_MAX,) device: their penalty ids */
    cuda_pick_res_t *pres;  /* (n_lmax,) device */
    int picks;              /* device picking allowed (cuda_stage_picks) */
    int *seq, *pos;         /* (n_max,) device */
    float *hrows;           /* (n_lmax, n_embd) host: rows gathered for the head */
    size_t bytes;
    int graphs;             /* replay the layers as CUDA graphs for small steps (TERN_CUDA_GRAPHS=0: off) */
    int fuse;               /* fused kernels (TERN_CUDA_FUSE=0: one kernel per operation, for comparison) */
    int pdl;                /* products by programmatic dependent launch (sm_90+; TERN_CUDA_PDL=0: off) */
    int mma;                /* prefill GEMM on the int8 tensor cores (sm_80+; TERN_CUDA_MMA=1: on) */
    int timing;             /* TERN_CUDA_TIMING=1: time the phases of 1-token forwards, summed, logged at destroy */
    size_t lin_bytes;       /* the layers' ternary weights on the device */
    double t_up, t_layers, t_down, t_head;
    long n_fwd;
    cuda_rt_graph_t *graph[GRAPH_MAX_N + 1];   /* by token count; positions/slots are read on the device */
};

int cuda_stage_probe(char *name, size_t cap, char *err, size_t errlen) {
    char why[256] = "";
    if (cuda_rt_device_count(why, sizeof why) <= 0)
        return err_set(err, errlen, TERN_ENOTSUP, "no CUDA device found (%s)", why[0] ? why : "no device");
    char tmp[256];
    if (cuda_rt_open(0, name ? name : tmp, name ? cap : sizeof tmp, NULL, why, sizeof why) < 0)
        return err_set(err, errlen, TERN_ENOTSUP, "%s", why);
    return 0;
}

int cuda_stage_device_info(char *name, size_t cap, size_t *mem, double *gbps, char *err, size_t errlen) {
    int rc = cuda_stage_probe(NULL, 0, err, errlen);
    if (rc < 0) return rc;
    char why[256];
    if (cuda_rt_open(0, name, cap, mem, why, sizeof why) < 0) return err_set(err, errlen, TERN_ENOTSUP, "%s", why);
    *gbps = cuda_rt_read_gbps((size_t)256 << 20, 3);
    if (*gbps <= 0) return err_set(err, errlen, TERN_EIO, "cuda: the bandwidth probe failed");
    return 0;
}

static void *dalloc(cuda_stage_t *c, size_t n, int *ok) {
    if (!*ok) return NULL;
    void *p = cuda_rt_alloc(n);
    if (!p) *ok = 0;
    else c->bytes += n;
    return p;
}

static float *up_f32(cuda_stage_t *c, const float *x, size_t n, int *ok, char *err, size_t errlen) {
    if (!x || !*ok) return NULL;
    float *d = dalloc(c, n * 4, ok);
    if (d && cuda_rt_h2d(d, x, n * 4, err, errlen) < 0) *ok = 0;
    return d;
}

static int lin_upload(cuda_stage_t *c, cu_lin_t *d, const mat_t *m, float lscale, int layer, char *err, size_t errlen) {
    const type_traits_t *tt = type_traits(m->type);
    if (!tt || !tt->ternary)
        return err_set(err, errlen, TERN_ENOTSUP, "cuda: layer %d has a %s linear; the GPU path takes ternary linears",
                       layer, tt ? tt->name : "?");
    d->rows = m->rows;
    d->cols = m->cols;
    d->lscale = lscale;
    size_t nb = gpack_bytes(m->rows, m->cols);
    uint32_t *tmp = malloc(nb);
    if (!tmp) return err_set(err, errlen, TERN_ENOMEM, "cuda: out of host memory packing layer %d", layer);
    char why[256];
    int rc = gpack_from_tensor(m->type, m->src, m->rows, m->cols, tmp, &d->scale, why, sizeof why);
    if (rc < 0) {
        free(tmp);
        return err_set(err, errlen, rc, "layer %d: %s", layer, why);
    }
    int ok = 1;
    d->w = dalloc(c, nb, &ok);
    c->lin_bytes += nb;
    if (!ok) rc = err_set(err, errlen, TERN_ENOMEM, "cuda: out of device memory (%.1f MiB held)", c->bytes / 1048576.0);
    else rc = cuda_rt_h2d(d->w, tmp, nb, err, errlen) < 0 ? TERN_EIO : 0;
    free(tmp);
    return rc;
}

/* ops_rope_table at every position (the shard's RoPE: scaling and frequency factors included) */
static int rope_upload(cuda_stage_t *c, int *ok, char *err, size_t errlen) {
    int half = c->hp.rot_dim / 2;
    size_t n = (size_t)c->n_ctx * (size_t)half;
    float *cs = malloc(n * 4), *sn = malloc(n * 4);
    if (!cs || !sn) {
        free(cs);
        free(sn);
        return err_set(err, errlen, TERN_ENOMEM, "cuda: out of host memory for the RoPE table");
    }
    rope_params_t rp;
    shard_rope(c->s, &rp);
    for (int p = 0; p < c->n_ctx; p++) ops_rope_table(cs + (size_t)p * half, sn + (size_t)p * half, p, &rp);
    c->cs = up_f32(c, cs, n, ok, err, errlen);
    c->sn = up_f32(c, sn, n, ok, err, errlen);
    c->shift_cs = dalloc(c, (size_t)half * 4, ok);
    c->shift_sn = dalloc(c, (size_t)half * 4, ok);
    free(cs);
    free(sn);
    return 0;
}

static int head_kind(int type) {
    switch (type) {
    case TT_F32: return CUDA_FMAT_F32;
    case TT_F16: return CUDA_FMAT_F16;
    case TT_BF16: return CUDA_FMAT_BF16;
    case TT_Q8_0: return CUDA_FMAT_Q8_0;
    default: return -1;
    }
}

/* Q4_0/Q5_0/K-quant heads (llama-quantize's Q6_K output, tied Q6_K/Q4_K embeddings): the GPU has
 * no kernels for them, so the head is requantised to Q8_0 on the host, row chunks through f32
 * (logits then differ from the CPU's in the last digits). Unverified: no GPU where written. */
static int head_to_q8(const shard_t *s, void **out, size_t *bytes, char *err, size_t errlen) {
    int64_t V = s->head.rows, E = s->head.cols, chunk = 256;
    size_t rowb = type_row_bytes(TT_Q8_0, E);
    uint8_t *q = malloc(rowb * (size_t)V);
    float *tmp = malloc(sizeof(float) * (size_t)(E * chunk));
    if (!q || !tmp) {
        free(q);
        free(tmp);
        return err_set(err, errlen, TERN_ENOMEM, "cuda: out of host memory converting the lm head to q8_0");
    }
    for (int64_t r = 0; r < V; r += chunk) {
        int64_t nr = V - r < chunk ? V - r : chunk;
        dequant_rows(s->head.type, s->head.src, V, E, r, nr, tmp);
        quant_from_f32(TT_Q8_0, tmp, nr, E, q + (size_t)r * rowb);
    }
    free(tmp);
    *out = q;
    *bytes = rowb * (size_t)V;
    log_i("cuda: lm head %s converted to q8_0 for the GPU", type_name(s->head.type));
    return 0;
}

static int head_upload(cuda_stage_t *c, int *ok, char *err, size_t errlen) {
    const shard_t *s = c->s;
    const void *src = s->head.src;
    size_t bytes = s->head.src_bytes;
    void *conv = NULL;
    int type = s->head.type;
    if (kquant_is(type)) {
        int rc = head_to_q8(s, &conv, &bytes, err, errlen);
        if (rc < 0) return rc;
        src = conv;
        type = TT_Q8_0;
    }
    c->head_kind = head_kind(type);
    if (c->head_kind < 0)
        return err_set(err, errlen, TERN_ENOTSUP, "cuda: lm head of type %s is not supported on the GPU (use --head f16|q8_0)",
                       type_name(s->head.type));
    c->out_norm = up_f32(c, s->out_norm, (size_t)c->hp.n_embd, ok, err, errlen);
    c->head = dalloc(c, bytes, ok);
    if (*ok && cuda_rt_h2d(c->head, src, bytes, err, errlen) < 0) *ok = 0;
    free(conv);
    size_t E = (size_t)c->hp.n_embd, L = (size_t)c->n_lmax;
    c->hn = dalloc(c, L * E * 4, ok);
    c->logits = dalloc(c, L * (size_t)c->hp.n_vocab * 4, ok);
    size_t fs = cuda_fmat_scratch_bytes(c->head_kind, c->hp.n_embd, c->n_lmax);
    c->fscratch = dalloc(c, fs ? fs : 256, ok);
    c->preq = dalloc(c, L * sizeof(cuda_pick_req_t), ok);
    c->ppen = dalloc(c, L * SAMPLER_HIST_MAX * sizeof(int32_t), ok);
    c->pres = dalloc(c, L * sizeof(cuda_pick_res_t), ok);
    c->hrows = malloc(L * E * 4);
    if (!c->hrows) return err_set(err, errlen, TERN_ENOMEM, "cuda: out of host memory");
    return 0;
}

static int acts_alloc(cuda_stage_t *c, int *ok) {
    const hparams_t *hp = &c->hp;
    size_t N = (size_t)c->n_max, E = (size_t)hp->n_embd, F = (size_t)hp->n_ff;
    size_t qd = (size_t)hp->n_head * hp->head_dim, kvd = (size_t)hp->n_head_kv * hp->head_dim;
    size_t wmax = E > qd ? E : qd;
    wmax = wmax > F ? wmax : F;
    c->h = dalloc(c, N * E * 4, ok);
    c->xn = dalloc(c, N * E * 4, ok);
    c->q = dalloc(c, N * qd * 4, ok);
    c->k = dalloc(c, N * kvd * 4, ok);
    c->v = dalloc(c, N * kvd * 4, ok);
    c->att = dalloc(c, N * qd * 4, ok);
    c->o = dalloc(c, N * E * 4, ok);
    c->g = dalloc(c, N * F * 4, ok);
    c->u = dalloc(c, N * F * 4, ok);
    c->aq = dalloc(c, N * wmax, ok);
    c->as = dalloc(c, N * 4, ok);
    c->asum = dalloc(c, N * 4, ok);
    c->seq = dalloc(c, N * sizeof(int), ok);
    c->pos = dalloc(c, N * sizeof(int), ok);
    size_t per_tok = (size_t)hp->n_head * (size_t)c->n_ctx * 4;
    size_t ac = SCORES_MAX_BYTES / per_tok;
    c->att_chunk = ac < 1 ? 1 : ac > N ? (int)N : (int)ac;
    c->scores = dalloc(c, (size_t)c->att_chunk * per_tok, ok);
    c->kv_layer_bytes = (size_t)c->n_seq * (size_t)c->n_ctx * ops_kv_bytes(c->kv_type, (int64_t)kvd);
    c->seq_stride = (int64_t)c->n_ctx * (int64_t)kvd;
    size_t nl = (size_t)(c->nl > 0 ? c->nl : 1);
    c->kc = dalloc(c, nl * c->kv_layer_bytes, ok);
    c->vc = dalloc(c, nl * c->kv_layer_bytes, ok);
    return 0;
}

/* the environment variable name is set to exactly val */
static int env_is(const char *name, const char *val) {
    const char *e = getenv(name);
    return e && !strcmp(e, val);
}

int cuda_stage_new(cuda_stage_t **out, const shard_t *s, int n_ctx, int n_seq, int n_max, int n_logits_max,
                   int kv_type, char *err, size_t errlen) {
    *out = NULL;
    int rc = cuda_stage_probe(NULL, 0, err, errlen);
    if (rc < 0) return rc;
    if (!ops_kv_name(kv_type))
        return err_set(err, errlen, TERN_EINVAL, "cuda: unknown KV cache type %d", kv_type);
    if (kv_type == KV_Q8_0 && s->hp.head_dim % KV_Q8_0_BLOCK)
        return err_set(err, errlen, TERN_EINVAL, "cuda: a q8_0 KV cache needs a head size that is a multiple of 32 (%d)",
                       s->hp.head_dim);
    if (n_ctx < 1 || n_seq < 1 || n_max < 1)
        return err_set(err, errlen, TERN_EINVAL, "cuda: bad limits (ctx %d, sequences %d, batch %d)", n_ctx, n_seq, n_max);
    cuda_stage_t *c = calloc(1, sizeof *c);
    if (!c) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    c->s = s;
    c->hp = s->hp;
    c->n_ctx = n_ctx;
    c->n_seq = n_seq;
    c->n_max = n_max;
    c->n_lmax = n_logits_max > 0 ? n_logits_max : 1;
    c->kv_type = kv_type;
    c->graphs = !env_is("TERN_CUDA_GRAPHS", "0");
    c->fuse = !env_is("TERN_CUDA_FUSE", "0");
    c->timing = env_is("TERN_CUDA_TIMING", "1");
    c->pdl = cuda_tmat_set_pdl(!env_is("TERN_CUDA_PDL", "0"));
    c->picks = s->has_head && env_is("TERN_CUDA_SAMPLE", "1");   /* opt-in until run on a GPU, as: */
    c->mma = cuda_tmat_set_mma(env_is("TERN_CUDA_MMA", "1"));    /* prefill on the tensor cores */
    const char *re = getenv("TERN_CUDA_GEMV_ROWS");   /* 1, 2, 4; else by size */
    cuda_tmat_set_rows(re ? atoi(re) : 0);
    c->nl = s->last - s->first + 1;
    if (c->nl < 0) c->nl = 0;
    int ok = 1;
    if (c->hp.head_dim % 4 || c->hp.n_embd % 64 || (size_t)c->hp.head_dim > cuda_ops_attention_max_hd()) {
        rc = err_set(err, errlen, TERN_ENOTSUP, "cuda: n_embd %d / head_dim %d not supported", c->hp.n_embd, c->hp.head_dim);
        goto fail;
    }
    c->L = calloc((size_t)(c->nl > 0 ? c->nl : 1), sizeof(cu_layer_t));
    if (!c->L) { rc = err_set(err, errlen, TERN_ENOMEM, "out of memory"); goto fail; }
    for (int i = 0; i < c->nl; i++) {
        const layer_w_t *w = &s->layers[i];
        cu_layer_t *d = &c->L[i];
        size_t E = (size_t)c->hp.n_embd, F = (size_t)c->hp.n_ff, qd = (size_t)c->hp.n_head * c->hp.head_dim;
        d->an = up_f32(c, w->attn_norm, E, &ok, err, errlen);
        d->asn = up_f32(c, w->attn_sub_norm, qd, &ok, err, errlen);
        d->fn = up_f32(c, w->ffn_norm, E, &ok, err, errlen);
        d->fsn = up_f32(c, w->ffn_sub_norm, F, &ok, err, errlen);
        for (int j = 0; j < LIN_COUNT && ok; j++)
            if ((rc = lin_upload(c, &d->lin[j], &w->lin[j], w->lin_scale[j], s->first + i, err, errlen)) < 0) goto fail;
    }
    if (ok && c->nl > 0 && (rc = rope_upload(c, &ok, err, errlen)) < 0) goto fail;
    if (ok && s->has_head && (rc = head_upload(c, &ok, err, errlen)) < 0) goto fail;
    if (ok) acts_alloc(c, &ok);
    if (!ok) {
        rc = err_set(err, errlen, TERN_ENOMEM, "cuda: out of device memory (%.1f MiB allocated for layers %d-%d)",
                     c->bytes / 1048576.0, s->first, s->last);
        goto fail;
    }
    if ((rc = cuda_rt_sync(err, errlen)) < 0) { rc = TERN_EIO; goto fail; }
    *out = c;
    return 0;
fail:
    cuda_stage_destroy(&c);
    return rc < 0 ? rc : TERN_EIO;
}

void cuda_stage_destroy(cuda_stage_t **p) {
    if (!p || !*p) return;
    cuda_stage_t *c = *p;
    if (c->timing && c->n_fwd)
        log_i("cuda stage %d-%d: %ld one-token forwards; each: upload %.1f us, layers %.1f us (%.0f GB/s of weights), "
              "download %.1f us, head %.1f us (%s kernels, graphs %s, PDL %s, GEMM %s)",
              c->s->first, c->s->last, c->n_fwd, 1e6 * c->t_up / c->n_fwd, 1e6 * c->t_layers / c->n_fwd,
              c->t_layers > 0 ? c->lin_bytes * (double)c->n_fwd / c->t_layers / 1e9 : 0.0, 1e6 * c->t_down / c->n_fwd,
              1e6 * c->t_head / c->n_fwd, c->fuse ? "fused" : "separate",
              c->graphs ? "on" : "off", c->pdl ? "on" : "off", c->mma ? "mma" : "dp4a");
    for (int i = 0; c->L && i < c->nl; i++) {
        cu_layer_t *d = &c->L[i];
        void *b[] = {d->an, d->asn, d->fn, d->fsn};
        for (int j = 0; j < 4; j++) cuda_rt_free(b[j]);
        for (int j = 0; j < LIN_COUNT; j++) cuda_rt_free(d->lin[j].w);
    }
    void *b[] = {c->out_norm, c->head, c->kc, c->vc, c->cs, c->sn, c->h, c->xn, c->q, c->k, c->v, c->att, c->o,
                 c->g, c->u, c->hn, c->logits, c->scores, c->aq, c->as, c->asum, c->fscratch, c->seq, c->pos,
                 c->preq, c->ppen, c->pres};
    for (size_t j = 0; j < sizeof b / sizeof b[0]; j++) cuda_rt_free(b[j]);
    for (int k = 0; k <= GRAPH_MAX_N; k++) cuda_rt_graph_free(c->graph[k]);
    free(c->L);
    free(c->hrows);
    free(c);
    *p = NULL;
}

size_t cuda_stage_device_bytes(const cuda_stage_t *c) { return c ? c->bytes : 0; }
int cuda_stage_picks(const cuda_stage_t *c) { return c && c->picks; }

static void lin(cuda_stage_t *c, const cu_lin_t *l, int n, float *y) {
    cuda_tmat_mul(l->w, l->rows, l->cols, l->scale, l->lscale, c->aq, c->as, c->asum, n, y);
}

static void block(cuda_stage_t *c, int il, int n) {
    const hparams_t *hp = &c->hp;
    const cu_layer_t *L = &c->L[il];
    int64_t E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim;
    int64_t qd = (int64_t)hp->n_head * hd, kvd = (int64_t)hp->n_head_kv * hd;
    float eps = hp->norm_eps;
    void *kc = (uint8_t *)c->kc + (size_t)il * c->kv_layer_bytes, *vc = (uint8_t *)c->vc + (size_t)il * c->kv_layer_bytes;

    cuda_ops_rmsnorm(c->xn, c->h, L->an, n, E, eps, NULL);
    cuda_tmat_quant(c->xn, n, E, c->aq, c->as, c->asum);
    lin(c, &L->lin[LIN_Q], n, c->q);
    lin(c, &L->lin[LIN_K], n, c->k);
    lin(c, &L->lin[LIN_V], n, c->v);
    cuda_ops_rope(c->q, n, hp->n_head, (int)hd, hp->rot_dim, c->pos, c->cs, c->sn, hp->rope_neox);
    cuda_ops_rope(c->k, n, hp->n_head_kv, (int)hd, hp->rot_dim, c->pos, c->cs, c->sn, hp->rope_neox);
    cuda_ops_kv_store(kc, vc, c->kv_type, c->k, c->v, n, c->seq, c->pos, c->seq_stride, (int)kvd);
    float scale = 1.0f / sqrtf((float)hd);
    for (int a0 = 0; a0 < n; a0 += c->att_chunk) {
        int na = n - a0 < c->att_chunk ? n - a0 : c->att_chunk;
        cuda_ops_attention(c->att + a0 * qd, c->q + a0 * qd, kc, vc, c->kv_type, na, c->seq + a0, c->pos + a0,
                           c->seq_stride, hp->n_head, hp->n_head_kv, (int)hd, scale, c->scores, c->n_ctx);
    }
    if (L->asn) cuda_ops_rmsnorm(c->att, c->att, L->asn, n, qd, eps, NULL);
    cuda_tmat_quant(c->att, n, qd, c->aq, c->as, c->asum);
    lin(c, &L->lin[LIN_O], n, c->o);
    cuda_ops_add(c->h, c->o, (int64_t)n * E);

    cuda_ops_rmsnorm(c->xn, c->h, L->fn, n, E, eps, NULL);
    cuda_tmat_quant(c->xn, n, E, c->aq, c->as, c->asum);
    lin(c, &L->lin[LIN_GATE], n, c->g);
    lin(c, &L->lin[LIN_UP], n, c->u);
    cuda_ops_act_mul(c->g, c->u, (int64_t)n * F, hp->act == ACT_RELU2);
    if (L->fsn) cuda_ops_rmsnorm(c->g, c->g, L->fsn, n, F, eps, NULL);
    cuda_tmat_quant(c->g, n, F, c->aq, c->as, c->asum);
    lin(c, &L->lin[LIN_DOWN], n, c->o);
    cuda_ops_add(c->h, c->o, (int64_t)n * E);
}

static cuda_tmat_seg_t seg(const cu_lin_t *l, float *y) {
    cuda_tmat_seg_t g = {l->w, y, l->rows, l->scale, l->lscale};
    return g;
}

/* block() in 10 launches instead of 22: the residual add of the previous layer (pending), the
 * norm and the quantisation of each linear's input are one kernel; q, k and v one product; RoPE
 * and the cache store one kernel; gate, up and the activation one product. The layer's last
 * residual add (h += o) is left pending for the next layer or the caller. Same bits as block(). */
static void block_fused(cuda_stage_t *c, int il, int n, int pending) {
    const hparams_t *hp = &c->hp;
    const cu_layer_t *L = &c->L[il];
    int64_t E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim, qd = (int64_t)hp->n_head * hd;
    float eps = hp->norm_eps;
    void *kc = (uint8_t *)c->kc + (size_t)il * c->kv_layer_bytes, *vc = (uint8_t *)c->vc + (size_t)il * c->kv_layer_bytes;

    cuda_tmat_norm_quant(c->h, pending ? c->o : NULL, 1, L->an, n, E, eps, c->aq, c->as, c->asum);
    cuda_tmat_seg_t qkv[3] = {seg(&L->lin[LIN_Q], c->q), seg(&L->lin[LIN_K], c->k), seg(&L->lin[LIN_V], c->v)};
    cuda_tmat_mul_segs(qkv, 3, E, c->aq, c->as, c->asum, n);
    cuda_ops_rope_kv(c->q, c->k, c->v, n, hp->n_head, hp->n_head_kv, (int)hd, hp->rot_dim, c->pos, c->cs, c->sn,
                     hp->rope_neox, kc, vc, c->kv_type, c->seq, c->seq_stride);
    float scale = 1.0f / sqrtf((float)hd);
    for (int a0 = 0; a0 < n; a0 += c->att_chunk) {
        int na = n - a0 < c->att_chunk ? n - a0 : c->att_chunk;
        cuda_ops_attention(c->att + a0 * qd, c->q + a0 * qd, kc, vc, c->kv_type, na, c->seq + a0, c->pos + a0,
                           c->seq_stride, hp->n_head, hp->n_head_kv, (int)hd, scale, c->scores, c->n_ctx);
    }
    cuda_tmat_norm_quant(c->att, NULL, L->asn != NULL, L->asn, n, qd, eps, c->aq, c->as, c->asum);
    lin(c, &L->lin[LIN_O], n, c->o);
    cuda_tmat_norm_quant(c->h, c->o, 1, L->fn, n, E, eps, c->aq, c->as, c->asum);
    cuda_tmat_seg_t gate = seg(&L->lin[LIN_GATE], c->g), up = seg(&L->lin[LIN_UP], c->u);
    cuda_tmat_glu(&gate, &up, E, hp->act == ACT_RELU2, c->aq, c->as, c->asum, n);
    cuda_tmat_norm_quant(c->g, NULL, L->fsn != NULL, L->fsn, n, F, eps, c->aq, c->as, c->asum);
    lin(c, &L->lin[LIN_DOWN], n, c->o);
}

static void all_blocks(cuda_stage_t *c, int k) {
    if (!c->fuse) {
        for (int il = 0; il < c->nl; il++) block(c, il, k);
        return;
    }
    for (int il = 0; il < c->nl; il++) block_fused(c, il, k, il > 0);
    if (c->nl > 0) cuda_ops_add(c->h, c->o, (int64_t)k * c->hp.n_embd);
}

/* every layer for k tokens: one graph launch when a graph for k exists or can be made, else
 * direct launches. Kernel arguments depend only on k (slots and positions are device buffers). */
static void layers(cuda_stage_t *c, int k) {
    if (c->graphs && k <= GRAPH_MAX_N && c->nl > 0) {
        if (!c->graph[k] && cuda_rt_capture_begin() == 0) {
            all_blocks(c, k);
            c->graph[k] = cuda_rt_capture_end();
            if (!c->graph[k]) c->graphs = 0;   /* capture unsupported here: never try again */
        }
        if (c->graph[k] && cuda_rt_graph_launch(c->graph[k]) == 0) return;
    }
    all_blocks(c, k);
}

/* the picks of rows 0..k) of c->logits (k <= n_lmax): penalty + argmax / top-k on the device,
 * the outcomes to res; the rows left to the host (CUDA_PICK_LOGITS, or a NaN) to logits */
static int pick_rows(cuda_stage_t *c, int k, float *logits, const cuda_pick_req_t *pick, const int32_t *pen, int n_pen,
                     cuda_pick_res_t *res, char *err, size_t errlen) {
    int64_t V = c->hp.n_vocab;
    int any = 0;
    for (int j = 0; j < k; j++) any |= pick[j].mode != CUDA_PICK_LOGITS;
    if (any) {
        if (n_pen < 0 || n_pen > c->n_lmax * SAMPLER_HIST_MAX)
            return err_set(err, errlen, TERN_EINVAL, "cuda: %d penalty ids for %d rows", n_pen, k);
        if (cuda_rt_h2d(c->preq, pick, (size_t)k * sizeof *pick, err, errlen) < 0 ||
            cuda_rt_h2d(c->ppen, pen, (size_t)n_pen * sizeof *pen, err, errlen) < 0)
            return TERN_EIO;
        cuda_pick(c->logits, k, V, c->preq, c->ppen, c->pres);
        if (cuda_rt_d2h(res, c->pres, (size_t)k * sizeof *res, err, errlen) < 0) return TERN_EIO;
    }
    for (int j = 0; j < k; j++) {
        if (pick[j].mode == CUDA_PICK_LOGITS) res[j].n = 0;
        if (res[j].n <= 0 &&
            cuda_rt_d2h(logits + (size_t)j * V, c->logits + (size_t)j * V, (size_t)V * 4, err, errlen) < 0)
            return TERN_EIO;
    }
    return 0;
}

static int logits_rows(cuda_stage_t *c, const float *h, int m, const int *rows, float *logits,
                       const cuda_pick_req_t *pick, const int32_t *pen, int n_pen, cuda_pick_res_t *res, char *err,
                       size_t errlen) {
    int64_t E = c->hp.n_embd, V = c->hp.n_vocab;
    if (pick && (!c->picks || m > c->n_lmax))
        return err_set(err, errlen, TERN_EINVAL, "cuda: %d rows to pick (at most %d, picking %s)", m, c->n_lmax,
                       c->picks ? "on" : "off");
    for (int done = 0; done < m; done += c->n_lmax) {
        int k = m - done < c->n_lmax ? m - done : c->n_lmax;
        for (int i = 0; i < k; i++) memcpy(c->hrows + i * E, h + (int64_t)rows[done + i] * E, (size_t)E * 4);
        if (cuda_rt_h2d(c->hn, c->hrows, (size_t)k * E * 4, err, errlen) < 0) return TERN_EIO;
        cuda_ops_rmsnorm(c->hn, c->hn, c->out_norm, k, E, c->hp.norm_eps, NULL);
        cuda_fmat_mul(c->head_kind, c->head, V, E, c->hn, k, c->logits, c->fscratch);
        if (pick) {
            int rc = pick_rows(c, k, logits, pick, pen, n_pen, res, err, errlen);
            if (rc < 0) return rc;
        } else if (cuda_rt_d2h(logits + (size_t)done * V, c->logits, (size_t)k * V * 4, err, errlen) < 0) {
            return TERN_EIO;
        }
    }
    return 0;
}

/* the time since *t0 added to *acc; *t0 = now (TERN_CUDA_TIMING's phases) */
static void lap(double *t0, double *acc) {
    double t1 = time_now();
    *acc += t1 - *t0;
    *t0 = t1;
}

int cuda_stage_forward(cuda_stage_t *c, float *h, int n, const int *seq, const int *pos, int m, const int *rows,
                       float *logits, char *err, size_t errlen) {
    return cuda_stage_forward_pick(c, h, n, seq, pos, m, rows, logits, NULL, NULL, 0, NULL, err, errlen);
}

int cuda_stage_forward_pick(cuda_stage_t *c, float *h, int n, const int *seq, const int *pos, int m, const int *rows,
                            float *logits, const cuda_pick_req_t *pick, const int32_t *pen, int n_pen,
                            cuda_pick_res_t *res, char *err, size_t errlen) {
    int64_t E = c->hp.n_embd;
    int timing = c->timing && n == 1;
    double t0 = timing ? time_now() : 0;
    if (n > GRAPH_MAX_N) cuda_tmat_set_mma(c->mma);   /* this stage's GEMM (stages may differ) */
    for (int done = 0; done < n; done += c->n_max) {
        int k = n - done < c->n_max ? n - done : c->n_max;
        float *hh = h + (int64_t)done * E;
        if (cuda_rt_h2d(c->h, hh, (size_t)k * E * 4, err, errlen) < 0 ||
            cuda_rt_h2d(c->seq, seq + done, (size_t)k * sizeof(int), err, errlen) < 0 ||
            cuda_rt_h2d(c->pos, pos + done, (size_t)k * sizeof(int), err, errlen) < 0)
            return TERN_EIO;
        if (timing) lap(&t0, &c->t_up);
        layers(c, k);
        if (timing) {
            if (cuda_rt_sync(err, errlen) < 0) return TERN_EIO;
            lap(&t0, &c->t_layers);
        }
        if (cuda_rt_d2h(hh, c->h, (size_t)k * E * 4, err, errlen) < 0) return TERN_EIO;
        if (timing) lap(&t0, &c->t_down);
    }
    if (m > 0) {
        if (!c->s->has_head) return err_set(err, errlen, TERN_EINVAL, "cuda: logits asked of a stage without the head");
        int rc = logits_rows(c, h, m, rows, logits, pick, pen, n_pen, res, err, errlen);
        if (rc < 0) return rc;
    }
    int rc = cuda_rt_sync(err, errlen) < 0 ? TERN_EIO : 0;
    if (timing) {
        lap(&t0, &c->t_head);
        c->n_fwd++;
    }
    return rc;
}

int cuda_stage_shift(cuda_stage_t *c, const kv_shift_t *sh, char *err, size_t errlen) {
    if (c->nl <= 0 || sh->keep + sh->discard >= sh->n_past) return 0;   /* nothing moves (no RoPE table either) */
    const hparams_t *hp = &c->hp;
    /* the kernel negates the sine: the rotation by +discard (magnitude 1, not the forward table's,
     * which holds yarn's magnitude the keys already carry) */
    float cs[512], sn[512];
    rope_params_t rp;
    shard_rope(c->s, &rp);
    ops_rope_shift_table(cs, sn, sh->discard, &rp);
    size_t hb = (size_t)hp->rot_dim / 2 * 4;
    if (cuda_rt_h2d(c->shift_cs, cs, hb, err, errlen) < 0 || cuda_rt_h2d(c->shift_sn, sn, hb, err, errlen) < 0) return TERN_EIO;
    cuda_ops_kv_shift(c->kc, c->vc, c->kv_type, c->nl, (int64_t)c->n_seq * c->seq_stride, c->seq_stride, sh->seq,
                      sh->keep, sh->discard, sh->n_past, hp->n_head_kv, hp->head_dim, hp->rot_dim, c->shift_cs,
                      c->shift_sn, hp->rope_neox);
    return cuda_rt_sync(err, errlen) < 0 ? TERN_EIO : 0;
}

int cuda_stage_copy(cuda_stage_t *c, const kv_copy_t *cp, char *err, size_t errlen) {
    size_t row = ops_kv_bytes(c->kv_type, (int64_t)c->hp.n_head_kv * c->hp.head_dim), bytes = (size_t)cp->n * row;
    size_t src = (size_t)cp->src * (size_t)c->n_ctx * row, dst = (size_t)cp->dst * (size_t)c->n_ctx * row;
    for (int il = 0; il < c->nl; il++) {   /* queued on the default stream after the steps before it */
        uint8_t *k = (uint8_t *)c->kc + (size_t)il * c->kv_layer_bytes, *v = (uint8_t *)c->vc + (size_t)il * c->kv_layer_bytes;
        if (cuda_rt_d2d(k + dst, k + src, bytes, err, errlen) < 0 || cuda_rt_d2d(v + dst, v + src, bytes, err, errlen) < 0)
            return TERN_EIO;
    }
    return 0;
}

int cuda_stage_kv_io(cuda_stage_t *c, int seq, int n, uint8_t *buf, int write, char *err, size_t errlen) {
    size_t row = ops_kv_bytes(c->kv_type, (int64_t)c->hp.n_head_kv * c->hp.head_dim), bytes = (size_t)n * row;
    size_t off = (size_t)seq * (size_t)c->n_ctx * row;   /* [layer][seq][pos][kv_dim]: rows [0, n) are contiguous */
    if (cuda_rt_sync(err, errlen) < 0) return TERN_EIO;   /* no step may still write the cache */
    for (int il = 0; il < c->nl; il++) {
        uint8_t *k = buf + (size_t)il * 2 * bytes, *v = k + bytes;
        uint8_t *dk = (uint8_t *)c->kc + (size_t)il * c->kv_layer_bytes + off;
        uint8_t *dv = (uint8_t *)c->vc + (size_t)il * c->kv_layer_bytes + off;
        int rc = write ? cuda_rt_h2d(dk, k, bytes, err, errlen) : cuda_rt_d2h(k, dk, bytes, err, errlen);
        if (rc >= 0) rc = write ? cuda_rt_h2d(dv, v, bytes, err, errlen) : cuda_rt_d2h(v, dv, bytes, err, errlen);
        if (rc < 0) return TERN_EIO;
    }
    return cuda_rt_sync(err, errlen) < 0 ? TERN_EIO : 0;
}

#endif
