/* cluster_client: the coordinator's side of a cluster. Setup: connect to every worker, trade
 * Hellos (protocol version, memory, bandwidth, model identity), place layers (placement.c), send
 * each stage its LoadShard with the endpoint of the stage after it, wait for ShardReady. Steps:
 * Forward + hidden frame to the first stage; the last stage answers with Sampled over its link
 * to us. Steps finish in submission order (each stage is a FIFO). */
#include "coordinator/cluster_client.h"
#include "coordinator/cluster_file.h"
#include "coordinator/placement.h"
#include "core/err.h"
#include "core/log.h"
#include "core/model_id.h"
#include "core/model_spec.h"
#include "core/progress.h"
#include "proto/transport.h"
#include "worker/kv_cache.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CL_QUEUE 64
#define CL_HELLO_TIMEOUT_MS 10000
#define CL_LOAD_TIMEOUT_MS 600000
#define CL_STEP_TIMEOUT_MS 120000

typedef struct cworker {
    const cluster_worker_t *cw;
    tp_conn_t *c;
    uint64_t memory;
    float gbps;
    int first, last;
} cworker_t;

typedef struct cpl {
    pipeline_t base;
    cluster_t cl;
    cworker_t *w;
    int n;
    int stage[PLACEMENT_MAX_WORKERS];   /* worker index of each stage */
    int n_stages;
    int n_seq;
    tp_msg_t rx;
    step_t *queue[CL_QUEUE];
    int head, count;
    sampler_params_t *pending;          /* (n_seq,) params to send with the next step */
    uint8_t *has_pending;
    uint32_t *u_seq, *u_pos;
    protobuf_c_boolean *b_sample;
    Tern__SeqSampling *ss;
    Tern__SamplingParams *sp;
    Tern__SeqSampling **ssp;
    int cap;
} cpl_t;

static const char *wname(const cworker_t *w) { return w->cw->name; }

/* waits for one message from worker w (others are ignored until later) */
static int recv_from(cpl_t *p, cworker_t *w, int timeout_ms, char *err, size_t errlen) {
    int rc = tp_recv(w->c, &p->rx, timeout_ms, err, errlen);
    if (rc == TERN_ETIMEOUT)
        return err_set(err, errlen, TERN_ETIMEOUT, "worker %s at %s did not answer within %d s", wname(w),
                       w->cw->endpoint, timeout_ms / 1000);
    if (rc < 0) return rc;
    int bc = p->rx.msg->body_case;
    if (bc == TERN__MSG__BODY_ERROR)
        return err_set(err, errlen, TERN_EPEER, "worker %s: %s", wname(w),
                       p->rx.msg->error->message ? p->rx.msg->error->message : "error");
    if (bc == TERN__MSG__BODY_REFUSE)
        return err_set(err, errlen, TERN_EPROTO, "worker %s refused: %s", wname(w),
                       p->rx.msg->refuse->reason ? p->rx.msg->refuse->reason : "");
    return 0;
}

static int hello(cpl_t *p, cworker_t *w, char *err, size_t errlen) {
    tp_opts_t o = {0};
    o.name = "coord";
    o.peer_name = w->cw->name;
    int rc = tp_connect(&w->c, w->cw->endpoint, &o, err, errlen);
    if (rc < 0) return rc;
    Tern__Msg m = TERN__MSG__INIT;
    Tern__Hello h = TERN__HELLO__INIT;
    h.proto_version = TERN_PROTO_VERSION;
    h.node_name = "coord";
    h.role = TERN__ROLE__ROLE_COORDINATOR;
    h.build = "tern 0.1.0";
    m.body_case = TERN__MSG__BODY_HELLO;
    m.hello = &h;
    if ((rc = tp_send(w->c, NULL, &m, NULL, 0, err, errlen)) < 0) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", err);
        return err_set(err, errlen, rc, "cannot reach worker %s at %s: %s", wname(w), w->cw->endpoint, tmp);
    }
    for (;;) {
        if ((rc = recv_from(p, w, CL_HELLO_TIMEOUT_MS, err, errlen)) < 0) return rc;
        if (p->rx.msg->body_case == TERN__MSG__BODY_HELLO) break;
    }
    const Tern__Hello *r = p->rx.msg->hello;
    if ((rc = tp_hello_check(r, wname(w), err, errlen)) < 0) return rc;
    w->memory = w->cw->memory ? w->cw->memory : r->memory_bytes;
    w->gbps = r->gbps;
    log_i("worker %s (%s): %u cores, %.1f GiB, %s, %.1f GB/s", wname(w), r->node_name ? r->node_name : "?", r->cores,
          (double)w->memory / (1 << 30), r->isa ? r->isa : "?", r->gbps);
    return 0;
}

/* bytes per layer (weights + KV cache) from the tensor table */
static int layer_sizes(const gguf_t *g, const hparams_t *hp, const stage_cfg_t *cfg, uint64_t *mem, uint64_t *rd,
                       uint64_t *head) {
    size_t kv = kv_cache_bytes_for(cfg->kv_type, 1, cfg->n_seq, cfg->n_ctx, hp->n_head_kv * hp->head_dim);
    for (int l = 0; l < hp->n_layer; l++) { mem[l] = kv; rd[l] = 0; }
    *head = 0;
    char pre[32];
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor_t *t = &g->tensors[i];
        int l;
        if (sscanf(t->name, "blk.%d.", &l) == 1 && l >= 0 && l < hp->n_layer) {
            snprintf(pre, sizeof pre, "blk.%d.", l);
            if (!strncmp(t->name, pre, strlen(pre))) { mem[l] += t->nbytes; rd[l] += t->nbytes; }
        } else if (!strcmp(t->name, "output_norm.weight") || !strcmp(t->name, hp->tied ? "token_embd.weight" : "output.weight")) {
            *head += t->nbytes;
        }
    }
    return 0;
}

static int place(cpl_t *p, const gguf_t *g, const stage_cfg_t *cfg, char *err, size_t errlen) {
    hparams_t hp;
    int rc = hparams_from_gguf(&hp, g, err, errlen);
    if (rc < 0) return rc;
    uint64_t *mem = calloc((size_t)hp.n_layer, 8), *rd = calloc((size_t)hp.n_layer, 8), head;
    placement_worker_t pw[PLACEMENT_MAX_WORKERS];
    if (!mem || !rd || p->n > PLACEMENT_MAX_WORKERS) { free(mem); free(rd); return err_set(err, errlen, TERN_ENOMEM, "too many workers"); }
    layer_sizes(g, &hp, cfg, mem, rd, &head);
    memset(pw, 0, sizeof pw);
    for (int i = 0; i < p->n; i++) {
        pw[i].name = p->w[i].cw->name;
        pw[i].memory = p->w[i].memory;
        pw[i].speed = p->w[i].gbps;
        pw[i].first = p->w[i].cw->first;
        pw[i].last = p->w[i].cw->last;
        pw[i].standby = p->w[i].cw->standby;
    }
    placement_in_t in = {hp.n_layer, mem, rd, head, 0, pw, p->n};
    placement_out_t out;
    rc = placement_plan(&in, &out, err, errlen);
    if (rc == 0) {
        char buf[2048];
        placement_format(&in, &out, buf, sizeof buf);
        log_i("placement:\n%s", buf);
        p->n_stages = out.n_stages;
        for (int s = 0; s < out.n_stages; s++) {
            int wi = out.stage[s];
            p->stage[s] = wi;
            p->w[wi].first = out.first[wi];
            p->w[wi].last = out.last[wi];
        }
    }
    free(mem);
    free(rd);
    return rc;
}

static int load_shards(cpl_t *p, const char *model_path, const stage_cfg_t *cfg, char *err, size_t errlen) {
    uint64_t size;
    char hash[MODEL_ID_HASH_LEN];
    int rc = model_id_compute(model_path, &size, hash, err, errlen);
    if (rc < 0) return rc;
    const char *base = strrchr(model_path, '/');
    for (int s = 0; s < p->n_stages; s++) {
        cworker_t *w = &p->w[p->stage[s]];
        Tern__Msg m = TERN__MSG__INIT;
        Tern__LoadShard ls = TERN__LOAD_SHARD__INIT;
        Tern__ModelId id = TERN__MODEL_ID__INIT;
        id.size = size;
        id.hash = hash;
        id.name = (char *)(base ? base + 1 : model_path);
        ls.model = &id;
        ls.first_layer = (uint32_t)w->first;
        ls.last_layer = (uint32_t)w->last;
        ls.has_embedding = 0;
        ls.is_last = s == p->n_stages - 1;
        ls.ctx = (uint32_t)cfg->n_ctx;
        ls.max_seqs = (uint32_t)cfg->n_seq;
        ls.threads = (uint32_t)w->cw->threads;
        ls.head_type = cfg->head_type >= 0 ? (uint32_t)cfg->head_type : 0;
        ls.next_endpoint = s + 1 < p->n_stages ? p->w[p->stage[s + 1]].cw->endpoint : "";
        ls.rank = (uint32_t)(s + 1);
        ls.max_batch_tokens = (uint32_t)cfg->n_batch;
        m.body_case = TERN__MSG__BODY_LOAD_SHARD;
        m.load_shard = &ls;
        if ((rc = tp_send(w->c, NULL, &m, NULL, 0, err, errlen)) < 0) return rc;
    }
    for (int s = 0; s < p->n_stages; s++) {
        cworker_t *w = &p->w[p->stage[s]];
        for (;;) {
            if ((rc = recv_from(p, w, CL_LOAD_TIMEOUT_MS, err, errlen)) < 0) return rc;
            if (p->rx.msg->body_case == TERN__MSG__BODY_SHARD_READY) break;
        }
        p->base.weight_bytes += p->rx.msg->shard_ready->bytes_loaded;
        log_i("worker %s ready: layers [%d, %d]%s in %.2f s", wname(w), w->first, w->last,
              s == p->n_stages - 1 ? " + head" : "", p->rx.msg->shard_ready->load_seconds);
    }
    return 0;
}

static int cl_seq_start(pipeline_t *pl, int slot, const sampler_params_t *sp) {
    cpl_t *p = (cpl_t *)pl;
    if (slot < 0 || slot >= p->n_seq) return TERN_EINVAL;
    p->pending[slot] = *sp;
    p->has_pending[slot] = 1;
    return 0;
}

static int grow(cpl_t *p, int n) {
    if (n <= p->cap) return 0;
    free(p->u_seq); free(p->u_pos); free(p->b_sample);
    p->u_seq = malloc((size_t)n * 4);
    p->u_pos = malloc((size_t)n * 4);
    p->b_sample = malloc((size_t)n * sizeof(protobuf_c_boolean));
    p->cap = p->u_seq && p->u_pos && p->b_sample ? n : 0;
    return p->cap ? 0 : TERN_ENOMEM;
}

static int cl_submit(pipeline_t *pl, step_t *s) {
    cpl_t *p = (cpl_t *)pl;
    if (p->count == CL_QUEUE || grow(p, s->n) < 0) return TERN_ENOMEM;
    for (int i = 0; i < s->n; i++) {
        p->u_seq[i] = (uint32_t)s->seq[i];
        p->u_pos[i] = (uint32_t)s->pos[i];
        p->b_sample[i] = s->sample[i];
    }
    Tern__Msg m = TERN__MSG__INIT;
    Tern__Forward f = TERN__FORWARD__INIT;
    f.step_id = s->id;
    f.n_tokens = (uint32_t)s->n;
    f.n_seq_ids = f.n_positions = f.n_token_ids = f.n_sample = (size_t)s->n;
    f.seq_ids = p->u_seq;
    f.positions = p->u_pos;
    f.token_ids = s->tokens;
    f.sample = p->b_sample;
    f.hidden_size = (uint32_t)p->base.n_embd;
    f.dtype = TERN__DTYPE__DTYPE_F32;
    int k = 0;
    for (int slot = 0; slot < p->n_seq; slot++) {
        if (!p->has_pending[slot]) continue;
        const sampler_params_t *sp = &p->pending[slot];
        tern__seq_sampling__init(&p->ss[k]);
        tern__sampling_params__init(&p->sp[k]);
        p->sp[k].temp = sp->temp;
        p->sp[k].top_k = sp->top_k;
        p->sp[k].top_p = sp->top_p;
        p->sp[k].min_p = sp->min_p;
        p->sp[k].repeat_penalty = sp->repeat_penalty;
        p->sp[k].repeat_last_n = sp->repeat_last_n;
        p->sp[k].seed = sp->seed;
        p->ss[k].seq_id = (uint32_t)slot;
        p->ss[k].params = &p->sp[k];
        p->ssp[k] = &p->ss[k];
        k++;
    }
    f.n_sampling = (size_t)k;
    f.sampling = p->ssp;
    m.body_case = TERN__MSG__BODY_FORWARD;
    m.forward = &f;
    cworker_t *w0 = &p->w[p->stage[0]];
    int rc = tp_send(w0->c, NULL, &m, s->h, (size_t)s->n * (size_t)p->base.n_embd * sizeof(float), s->err, sizeof s->err);
    if (rc < 0) return rc;
    memset(p->has_pending, 0, (size_t)p->n_seq);
    p->queue[(p->head + p->count++) % CL_QUEUE] = s;
    return 0;
}

static step_t *cl_wait(pipeline_t *pl, int timeout_ms) {
    cpl_t *p = (cpl_t *)pl;
    if (!p->count) return NULL;
    step_t *s = p->queue[p->head];
    double deadline = time_now() + (timeout_ms < 0 ? CL_STEP_TIMEOUT_MS : timeout_ms) / 1000.0;
    tp_conn_t *conns[PLACEMENT_MAX_WORKERS];
    int ready[PLACEMENT_MAX_WORKERS];
    for (int i = 0; i < p->n_stages; i++) conns[i] = p->w[p->stage[i]].c;
    for (;;) {
        int left = (int)((deadline - time_now()) * 1000);
        if (left <= 0) {
            if (timeout_ms >= 0) return NULL;
            s->rc = err_set(s->err, sizeof s->err, TERN_ETIMEOUT, "no answer from the cluster for step %llu within %d s",
                            (unsigned long long)s->id, CL_STEP_TIMEOUT_MS / 1000);
            break;
        }
        int nr = tp_poll(conns, p->n_stages, left < 200 ? left : 200, ready, s->err, sizeof s->err);
        if (nr < 0) { s->rc = nr; break; }
        for (int i = 0; i < p->n_stages; i++) {
            if (!ready[i]) continue;
            cworker_t *w = &p->w[p->stage[i]];
            int rc = tp_recv(w->c, &p->rx, 0, s->err, sizeof s->err);
            if (rc == TERN_ETIMEOUT) continue;
            if (rc < 0) { s->rc = rc; goto done; }
            const Tern__Msg *m = p->rx.msg;
            if (m->body_case == TERN__MSG__BODY_ERROR) {
                s->rc = err_set(s->err, sizeof s->err, TERN_EPEER, "%s", m->error->message ? m->error->message : wname(w));
                goto done;
            }
            if (m->body_case != TERN__MSG__BODY_SAMPLED) continue;
            const Tern__Sampled *r = m->sampled;
            if (r->step_id != s->id || r->n_token_ids > (size_t)s->n || r->n_logprobs != r->n_token_ids) {
                s->rc = err_set(s->err, sizeof s->err, TERN_EPROTO, "worker %s answered step %llu, expected %llu",
                                wname(w), (unsigned long long)r->step_id, (unsigned long long)s->id);
                goto done;
            }
            s->n_out = (int)r->n_token_ids;
            memcpy(s->out_tok, r->token_ids, r->n_token_ids * sizeof(int32_t));
            memcpy(s->out_lp, r->logprobs, r->n_logprobs * sizeof(float));
            s->rc = s->n_out;
            goto done;
        }
    }
done:
    p->head = (p->head + 1) % CL_QUEUE;
    p->count--;
    return s;
}

static void cl_destroy(pipeline_t *pl) {
    cpl_t *p = (cpl_t *)pl;
    for (int i = 0; i < p->n; i++) tp_close(&p->w[i].c);
    tp_msg_free(&p->rx);
    free(p->w);
    free(p->pending); free(p->has_pending);
    free(p->u_seq); free(p->u_pos); free(p->b_sample);
    free(p->ss); free(p->sp); free(p->ssp);
    cluster_free(&p->cl);
    free(p);
    tp_term();
}

static const pipeline_ops_t g_cl_ops = {cl_seq_start, cl_submit, cl_wait, cl_destroy};

int cluster_pipeline_new(pipeline_t **out, const gguf_t *g, const char *model_path, const char *cluster_file,
                         const char *workers_csv, const stage_cfg_t *cfg, int threads, char *err, size_t errlen) {
    (void)threads;
    *out = NULL;
    cpl_t *p = calloc(1, sizeof *p);
    if (!p) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    tp_msg_init(&p->rx);   /* p->cl stays zeroed: the loaders below initialise it */
    p->base.ops = &g_cl_ops;
    int rc = cluster_file ? cluster_file_load(&p->cl, cluster_file, err, errlen)
                          : cluster_from_workers_list(&p->cl, workers_csv, err, errlen);
    if (rc < 0) goto fail;
    if (p->cl.transport != CLUSTER_TRANSPORT_ZMQ) {
        rc = err_set(err, errlen, TERN_ENOTSUP, "%s: transport mpi needs mpirun (see README: tern ... --mpi)", p->cl.name);
        goto fail;
    }
    hparams_t hp;
    if ((rc = hparams_from_gguf(&hp, g, err, errlen)) < 0) goto fail;
    p->base.n_embd = hp.n_embd;
    p->base.n_vocab = hp.n_vocab;
    p->n = p->cl.n_workers;
    p->n_seq = cfg->n_seq;
    p->w = calloc((size_t)p->n, sizeof(cworker_t));
    p->pending = calloc((size_t)p->n_seq, sizeof(sampler_params_t));
    p->has_pending = calloc((size_t)p->n_seq, 1);
    p->ss = calloc((size_t)p->n_seq, sizeof(Tern__SeqSampling));
    p->sp = calloc((size_t)p->n_seq, sizeof(Tern__SamplingParams));
    p->ssp = calloc((size_t)p->n_seq, sizeof(Tern__SeqSampling *));
    if (!p->w || !p->pending || !p->has_pending || !p->ss || !p->sp || !p->ssp) {
        rc = err_set(err, errlen, TERN_ENOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < p->n; i++) {
        p->w[i].cw = &p->cl.workers[i];
        p->w[i].first = p->w[i].last = -1;
        if ((rc = hello(p, &p->w[i], err, errlen)) < 0) goto fail;
    }
    if ((rc = place(p, g, cfg, err, errlen)) < 0) goto fail;
    if ((rc = load_shards(p, model_path, cfg, err, errlen)) < 0) goto fail;
    p->base.max_inflight = p->n_stages;
    *out = &p->base;
    return 0;
fail:
    cl_destroy(&p->base);
    return rc;
}
