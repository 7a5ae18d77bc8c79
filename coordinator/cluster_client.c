/* cluster_client: the coordinator's side of a cluster. Setup: connect to every worker, trade
 * Hellos (protocol version, memory, bandwidth, model identity), place layers (placement.c), send
 * each stage its LoadShard with the endpoint of the stage after it, wait for ShardReady. Steps:
 * Forward + hidden frame to the first stage; the last stage answers with Sampled over its link
 * to us. Steps finish in submission order (each stage is a FIFO).
 * Faults: a heartbeat thread pings every worker over links of its own and marks one down when
 * it stays silent past the cluster file's timeout; the waiting step then fails, and recover
 * re-places the layers on the workers left (standbys first), reloads them, and the scheduler
 * replays its sequences. A worker that answers again rejoins for the next re-placement.
 * Not here: replaying tokens (sched.c), CURVE key files (curve.c). */
#include "coordinator/cluster_client.h"
#include "coordinator/cluster_file.h"
#include "coordinator/placement.h"
#include "core/err.h"
#include "core/hash.h"
#include "kernels/ops.h"
#include "core/log.h"
#include "core/model_id.h"
#include "core/model_spec.h"
#include "core/progress.h"
#include "proto/curve.h"
#include "proto/transport.h"
#include "worker/kv_cache.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CL_QUEUE 64
#define CL_HELLO_SEND_MS 5000      /* a worker's link must come up within this */
#define CL_HELLO_TIMEOUT_MS 10000  /* and its Hello answer arrive within this */
#define CL_REJOIN_MS 2000          /* same, for a worker that comes back */
#define CL_PROBE_MS 300            /* a worker that is down must have its link up within this */
#define CL_LOAD_TIMEOUT_MS 600000
#define CL_STEP_TIMEOUT_MS 120000
#define CL_SEND_SLICE_MS 10        /* sends never block longer; callers retry */
#define CL_MAX_RECOVER 4           /* recoveries in a row without a finished step */

typedef struct cworker {
    const cluster_worker_t *cw;
    tp_conn_t *c;           /* engine thread's link: Hello, LoadShard, Forward, results */
    tp_conn_t *hb;          /* heartbeat thread's link */
    tp_curve_t curve;       /* own key pair + this worker's public key (CURVE on) */
    uint64_t memory;
    float gbps;
    int first, last;        /* layers it holds now; -1 = none */
    int standby;            /* spare: no layers until a loss promotes it */
    int helloed;            /* the engine link's Hello was answered since the worker (re)joined */
    int fetch;              /* it has no model file of its own: it fetches its layers from us */
    /* shared with the heartbeat thread, under cpl.mu */
    int up, loading;
    double last_seen, last_ping, last_send_ok;
    double rtt_ms;
    uint64_t ping_seq;
} cworker_t;

typedef struct cpl {
    pipeline_t base;
    cluster_t cl;
    cworker_t *w;
    int n;
    int stage[PLACEMENT_MAX_WORKERS];   /* worker index of each stage */
    int n_stages;
    int n_seq;
    stage_cfg_t cfg;
    tp_msg_t rx;
    step_t *queue[CL_QUEUE];
    int head, count;
    uint64_t next_step;                 /* lowest step id not yet submitted */
    uint64_t id_base;                   /* added to step ids on the wire: a random base per pipeline,
                                         * so that answers meant for another coordinator (workers
                                         * send to the routing id "coord") or forged ones are not
                                         * taken for this one's */
    sampler_params_t *pending;          /* (n_seq,) params to send with the next step */
    uint8_t *has_pending;
    uint32_t *u_seq, *u_pos;
    protobuf_c_boolean *b_sample;
    protobuf_c_boolean *b_embd;         /* a step's embedding flags */
    Tern__SeqSampling *ss;
    Tern__SamplingParams *sp;
    uint32_t *dry_lens;                 /* (n_seq, SAMPLER_DRY_SEQ_MAX) */
    char *orders;                       /* (n_seq, SAMPLER_ORDER_MAX + 1) sampler_order letters */
    Tern__SeqSampling **ssp;
    Tern__SeqAllow *sa;                 /* (n_seq,) a step's grammar masks */
    Tern__SeqAllow **sap;
    Tern__KvShift *ks;                  /* (n_seq,) a step's context shifts */
    Tern__KvShift **ksp;
    kv_shift_t *kvs;                    /* (n_seq,) the same, checked before they are sent */
    Tern__KvCopy *kc;                   /* (n_seq,) a step's KV copies */
    Tern__KvCopy **kcp;
    kv_copy_t *kvc;                     /* (n_seq,) the same, checked before they are sent */
    int cap;
    /* model */
    int n_layer;
    uint64_t *lmem, *lrd, head_mem;
    uint64_t model_size;
    char model_hash[MODEL_ID_HASH_LEN];
    const char *model_name;
    const gguf_t *g;                    /* our mmap of the model: serves WeightRequests */
    /* faults */
    int hb_ms, hb_timeout_ms;
    int broken;                         /* cannot serve; why says so */
    char why[512];
    int n_recover;
    int lost_shard;                     /* a stage worker answered that it holds no layers */
    tp_curve_t curve;                   /* coordinator's key pair (CURVE on) */
    int has_curve;
    pthread_mutex_t mu;
    pthread_t hb_thread;
    int hb_running;
    atomic_int hb_stop;
} cpl_t;

static const char *wname(const cworker_t *w) { return w->cw->name; }

static int worker_up(cpl_t *p, const cworker_t *w) {
    pthread_mutex_lock(&p->mu);
    int up = w->up;
    pthread_mutex_unlock(&p->mu);
    return up;
}

/* (re)opens link *c to w; a send on it blocks at most CL_SEND_SLICE_MS */
static int wconnect(cpl_t *p, cworker_t *w, tp_conn_t **c, const char *as, char *err, size_t errlen) {
    tp_close(c);
    tp_opts_t o = {0};
    o.name = as;
    o.peer_name = w->cw->name;
    o.send_timeout_ms = CL_SEND_SLICE_MS;
    o.curve = p->has_curve ? &w->curve : NULL;
    return tp_connect(c, w->cw->endpoint, &o, err, errlen);
}

/* sends m on w's engine link, retrying while the link is not up, for at most timeout_ms or
 * until the heartbeat thread marks w down */
static int send_to(cpl_t *p, cworker_t *w, const Tern__Msg *m, const void *tensor, size_t bytes, int timeout_ms,
                   char *err, size_t errlen) {
    double deadline = time_now() + timeout_ms / 1000.0;
    for (;;) {
        int rc = tp_send(w->c, NULL, m, tensor, bytes, err, errlen);
        if (rc != TERN_ETIMEOUT) return rc;
        if (time_now() > deadline || !worker_up(p, w)) return rc;
    }
}

/* waits for one message from worker w on its engine link (others are ignored until later) */
static int recv_from(cpl_t *p, cworker_t *w, int timeout_ms, char *err, size_t errlen) {
    double deadline = time_now() + timeout_ms / 1000.0;
    int rc, left = timeout_ms;
    for (;;) {
        rc = tp_recv(w->c, &p->rx, left, err, errlen);
        /* an Error about a Forward step (step_id > 0) is not an answer to a Hello or LoadShard
         * (those carry 0): a worker that was frozen or cut off tells "coord" that a stale step of an
         * earlier pipeline found no layers, and a new coordinator may hear it first */
        if (rc < 0 || p->rx.msg->body_case != TERN__MSG__BODY_ERROR || !p->rx.msg->error->step_id) break;
        log_d("worker %s: ignoring an error about step %llu of an earlier pipeline", wname(w),
              (unsigned long long)p->rx.msg->error->step_id);
        left = (int)((deadline - time_now()) * 1000);
        if (left < 0) left = 0;
    }
    if (rc == TERN_ETIMEOUT)
        return err_set(err, errlen, TERN_ETIMEOUT, "worker %s at %s did not answer within %d s%s", wname(w),
                       w->cw->endpoint, timeout_ms / 1000,
                       p->has_curve ? " (CURVE: does its key pair match the coordinator's KEYS/<name>.pub, and is "
                                      "coordinator.pub in its --keys directory?)" : "");
    if (rc < 0) return rc;
    int bc = p->rx.msg->body_case;
    if (bc == TERN__MSG__BODY_ERROR) {
        const char *m = p->rx.msg->error->message ? p->rx.msg->error->message : "error";
        size_t nl = strlen(wname(w));   /* workers start their messages with their name */
        int named = !strncmp(m, wname(w), nl) && m[nl] == ':';
        return err_set(err, errlen, TERN_EPEER, named ? "worker %.0s%s" : "worker %s: %s", wname(w), m);
    }
    if (bc == TERN__MSG__BODY_REFUSE)
        return err_set(err, errlen, TERN_EPROTO, "worker %s refused: %s", wname(w),
                       p->rx.msg->refuse->reason ? p->rx.msg->refuse->reason : "");
    return 0;
}

/* Opens w's engine link and trades Hellos; on success w is up and usable. */
static int hello(cpl_t *p, cworker_t *w, int send_ms, int reply_ms, char *err, size_t errlen) {
    int rc = wconnect(p, w, &w->c, "coord", err, errlen);
    if (rc < 0) return rc;
    Tern__Msg m = TERN__MSG__INIT;
    Tern__Hello h = TERN__HELLO__INIT;
    h.proto_version = TERN_PROTO_VERSION;
    h.node_name = "coord";
    h.role = TERN__ROLE__ROLE_COORDINATOR;
    h.build = "tern 0.1.0";
    m.body_case = TERN__MSG__BODY_HELLO;
    m.hello = &h;
    double deadline = time_now() + send_ms / 1000.0;
    while ((rc = tp_send(w->c, NULL, &m, NULL, 0, err, errlen)) == TERN_ETIMEOUT && time_now() < deadline) {}
    if (rc < 0) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", err);
        if (rc == TERN_ETIMEOUT && p->has_curve)
            return err_set(err, errlen, rc, "cannot reach worker %s at %s: no CURVE handshake within %d s (is the "
                           "worker's key pair the one in %s/%s.pub, and is it started with --keys?)", wname(w),
                           w->cw->endpoint, send_ms / 1000, p->cl.keys, wname(w));
        return rc == TERN_ETIMEOUT ? err_set(err, errlen, rc, "cannot reach worker %s at %s: no link within %d s", wname(w), w->cw->endpoint, send_ms / 1000)
                                   : err_set(err, errlen, rc, "cannot reach worker %s at %s: %s", wname(w), w->cw->endpoint, tmp);
    }
    for (;;) {
        if ((rc = recv_from(p, w, reply_ms, err, errlen)) < 0) return rc;
        if (p->rx.msg->body_case == TERN__MSG__BODY_HELLO) break;
    }
    const Tern__Hello *r = p->rx.msg->hello;
    if ((rc = tp_hello_check(r, wname(w), err, errlen)) < 0) return rc;
    w->memory = w->cw->memory ? w->cw->memory : r->memory_bytes;
    w->gbps = r->gbps;
    w->fetch = r->model_size == 0;
    pthread_mutex_lock(&p->mu);
    w->helloed = 1;
    w->up = 1;
    w->last_seen = w->last_send_ok = time_now();
    pthread_mutex_unlock(&p->mu);
    log_msg(p->cl.quiet ? LOG_D : LOG_I, "worker %s (%s): %u cores, %.1f GiB, %s, %.1f GB/s%s", wname(w), r->node_name ? r->node_name : "?", r->cores,
          (double)w->memory / (1 << 30), r->isa ? r->isa : "?", r->gbps, w->standby ? ", standby" : "");
    return 0;
}

/* ---- heartbeats ------------------------------------------------------------------------ */

static void hb_ping(cpl_t *p, cworker_t *w, double now) {
    Tern__Msg m = TERN__MSG__INIT;
    Tern__Heartbeat hb = TERN__HEARTBEAT__INIT;
    char err[256];
    hb.seq = ++w->ping_seq;
    hb.time_us = (uint64_t)(now * 1e6);
    m.body_case = TERN__MSG__BODY_HEARTBEAT;
    m.heartbeat = &hb;
    int ok = tp_send(w->hb, NULL, &m, NULL, 0, err, sizeof err) == 0;
    pthread_mutex_lock(&p->mu);
    w->last_ping = now;
    if (ok) w->last_send_ok = now;
    pthread_mutex_unlock(&p->mu);
}

/* marks silent workers down (caller holds mu). A loading worker answers nothing until it is
 * done, so for it only a dead link counts. */
static void hb_judge(cpl_t *p, double now) {
    double lim = p->hb_timeout_ms / 1000.0;
    for (int i = 0; i < p->n; i++) {
        cworker_t *w = &p->w[i];
        if (!w->up) continue;
        double silent = now - (w->loading ? w->last_send_ok : w->last_seen);
        if (silent <= lim) continue;
        w->up = 0;
        w->helloed = 0;
        log_w("worker %s at %s lost: no answer for %.1f s%s", wname(w), w->cw->endpoint, silent,
              w->first >= 0 ? "" : " (it held no layers)");
    }
}

static void hb_absorb(cpl_t *p, cworker_t *w, const tp_msg_t *rx, double now) {
    if (rx->msg->body_case != TERN__MSG__BODY_HEARTBEAT) return;
    pthread_mutex_lock(&p->mu);
    w->last_seen = now;
    if (rx->msg->heartbeat->seq == w->ping_seq) w->rtt_ms = (now - w->last_ping) * 1e3;
    if (!w->up) {
        w->up = 1;
        w->helloed = 0;
        log_i("worker %s at %s answers again: it rejoins for the next placement", wname(w), w->cw->endpoint);
    }
    pthread_mutex_unlock(&p->mu);
}

/* The heartbeat thread: pings every worker each interval over its own links, and reads the
 * answers; owns the hb links (opened before it starts, closed after it ends). */
static void *hb_main(void *arg) {
    cpl_t *p = arg;
    tp_msg_t rx;
    tp_msg_init(&rx);
    tp_conn_t *conns[PLACEMENT_MAX_WORKERS];
    int idx[PLACEMENT_MAX_WORKERS], ready[PLACEMENT_MAX_WORKERS], nc = 0;
    char err[256];
    for (int i = 0; i < p->n && nc < TP_MAX_POLL; i++)
        if (p->w[i].hb) { conns[nc] = p->w[i].hb; idx[nc++] = i; }
    int slice = p->hb_ms / 4 < 5 ? 5 : p->hb_ms / 4 > 100 ? 100 : p->hb_ms / 4;
    while (!p->hb_stop) {
        double now = time_now();
        for (int k = 0; k < nc; k++)
            if ((now - p->w[idx[k]].last_ping) * 1000 >= p->hb_ms) hb_ping(p, &p->w[idx[k]], now);
        pthread_mutex_lock(&p->mu);
        hb_judge(p, now);
        pthread_mutex_unlock(&p->mu);
        int nr = nc ? tp_poll(conns, nc, slice, ready, err, sizeof err) : 0;
        if (nr < 0) usleep((useconds_t)slice * 1000);   /* the transport is failing: do not spin */
        if (nr <= 0) continue;
        for (int k = 0; k < nc; k++)
            while (ready[k] && tp_recv(conns[k], &rx, 0, err, sizeof err) == 0) hb_absorb(p, &p->w[idx[k]], &rx, time_now());
    }
    tp_msg_free(&rx);
    return NULL;
}

static int hb_start(cpl_t *p, char *err, size_t errlen) {
    for (int i = 0; i < p->n; i++) {
        int rc = wconnect(p, &p->w[i], &p->w[i].hb, "coord.hb", err, errlen);
        if (rc < 0) return rc;
    }
    if (pthread_create(&p->hb_thread, NULL, hb_main, p) != 0)
        return err_set(err, errlen, TERN_EIO, "cannot start the heartbeat thread");
    p->hb_running = 1;
    return 0;
}

/* ---- placement and loading --------------------------------------------------------------- */

/* bytes per layer (weights + KV cache) from the tensor table */
static void layer_sizes(const gguf_t *g, const hparams_t *hp, const stage_cfg_t *cfg, uint64_t *mem, uint64_t *rd,
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
}

static int usable(cpl_t *p, const cworker_t *w) {
    pthread_mutex_lock(&p->mu);
    int ok = w->helloed && w->up;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* Plans the layers over the usable workers; when they cannot hold the model, promotes the
 * standbys one by one. On success the stages are set; else the reason is in err. */
static int plan(cpl_t *p, char *err, size_t errlen) {
    placement_worker_t pw[PLACEMENT_MAX_WORKERS];
    placement_out_t out;
    memset(pw, 0, sizeof pw);
    int rc;
    for (;;) {
        int spare = -1;
        for (int i = 0; i < p->n; i++) {
            cworker_t *w = &p->w[i];
            pw[i].name = wname(w);
            pw[i].memory = w->memory;
            pw[i].speed = w->gbps;
            pw[i].first = w->standby ? -1 : w->cw->first;
            pw[i].last = w->standby ? -1 : w->cw->last;
            pw[i].standby = w->standby;
            pw[i].gone = !usable(p, w);
            if (w->standby && !pw[i].gone && spare < 0) spare = i;
        }
        placement_in_t in = {p->n_layer, p->lmem, p->lrd, p->head_mem, 0, pw, p->n};
        rc = placement_plan(&in, &out, err, errlen);
        if (rc == 0) {
            char buf[2048];
            placement_format(&in, &out, buf, sizeof buf);
            log_msg(p->cl.quiet ? LOG_D : LOG_I, "placement:\n%s", buf);
            break;
        }
        if (spare < 0) return rc;
        log_i("promoting standby worker %s: %s", wname(&p->w[spare]), err);
        pthread_mutex_lock(&p->mu);
        p->w[spare].standby = 0;
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_lock(&p->mu);   /* cl_status reads these */
    for (int i = 0; i < p->n; i++) { p->w[i].first = out.first[i]; p->w[i].last = out.last[i]; }
    pthread_mutex_unlock(&p->mu);
    p->n_stages = out.n_stages;
    for (int s = 0; s < out.n_stages; s++) p->stage[s] = out.stage[s];
    return 0;
}

/* answers a worker's WeightRequest (--fetch-weights) with the bytes of our copy of the model */
static int serve_weights(cpl_t *p, cworker_t *w, const Tern__WeightRequest *q, char *err, size_t errlen) {
    if (!q->model || q->model->size != p->model_size || strcmp(q->model->hash ? q->model->hash : "", p->model_hash) ||
        q->offset > p->g->size || q->length > p->g->size - q->offset || q->length > (64u << 20))
        return err_set(err, errlen, TERN_EPROTO, "worker %s asked for bytes [%llu, +%llu) of another model or outside "
                       "this one", wname(w), (unsigned long long)q->offset, (unsigned long long)q->length);
    Tern__Msg m = TERN__MSG__INIT;
    Tern__WeightChunk ch = TERN__WEIGHT_CHUNK__INIT;
    Tern__ModelId id = TERN__MODEL_ID__INIT;
    id.size = p->model_size;
    id.hash = p->model_hash;
    ch.model = &id;
    ch.offset = q->offset;
    m.body_case = TERN__MSG__BODY_WEIGHT_CHUNK;
    m.weight_chunk = &ch;
    if (gguf_mapped(p->g))
        return send_to(p, w, &m, p->g->map + q->offset, (size_t)q->length, p->hb_timeout_ms, err, errlen);
    void *buf = malloc(q->length ? (size_t)q->length : 1);   /* --no-mmap: read the chunk (at most 64 MiB) */
    if (!buf) return err_set(err, errlen, TERN_ENOMEM, "out of memory for a %llu-byte weight chunk", (unsigned long long)q->length);
    int rc = gguf_read(p->g, q->offset, buf, (size_t)q->length, err, errlen);
    if (rc == 0) rc = send_to(p, w, &m, buf, (size_t)q->length, p->hb_timeout_ms, err, errlen);
    free(buf);
    return rc;
}

/* waits for stage s's ShardReady; fails early when the worker is marked down */
static int wait_ready(cpl_t *p, int s, char *err, size_t errlen) {
    cworker_t *w = &p->w[p->stage[s]];
    double deadline = time_now() + CL_LOAD_TIMEOUT_MS / 1000.0;
    for (;;) {
        if (!worker_up(p, w))
            return err_set(err, errlen, TERN_EPEER, "worker %s at %s was lost while loading its layers", wname(w),
                           w->cw->endpoint);
        int left = (int)((deadline - time_now()) * 1000);
        int rc = recv_from(p, w, left < 100 ? (left > 0 ? left : 0) : 100, err, errlen);
        if (rc == TERN_ETIMEOUT && left > 0) continue;
        if (rc < 0) return rc;
        if (p->rx.msg->body_case == TERN__MSG__BODY_WEIGHT_REQUEST) {
            if ((rc = serve_weights(p, w, p->rx.msg->weight_request, err, errlen)) < 0) return rc;
            deadline = time_now() + CL_LOAD_TIMEOUT_MS / 1000.0;   /* progress: the clock restarts */
            continue;
        }
        if (p->rx.msg->body_case == TERN__MSG__BODY_SHARD_READY) break;
    }
    p->base.weight_bytes += p->rx.msg->shard_ready->bytes_loaded;
    log_msg(p->cl.quiet ? LOG_D : LOG_I, "worker %s ready: layers [%d, %d]%s in %.2f s", wname(w), w->first, w->last,
          s == p->n_stages - 1 ? " + head" : "", p->rx.msg->shard_ready->load_seconds);
    return 0;
}

static int load_shards(cpl_t *p, char *err, size_t errlen) {
    int rc = 0;
    p->base.weight_bytes = 0;
    pthread_mutex_lock(&p->mu);
    for (int s = 0; s < p->n_stages; s++) p->w[p->stage[s]].loading = 1;
    pthread_mutex_unlock(&p->mu);
    for (int s = 0; s < p->n_stages && !rc; s++) {
        cworker_t *w = &p->w[p->stage[s]];
        Tern__Msg m = TERN__MSG__INIT;
        Tern__LoadShard ls = TERN__LOAD_SHARD__INIT;
        Tern__ModelId id = TERN__MODEL_ID__INIT;
        id.size = p->model_size;
        id.hash = p->model_hash;
        id.name = (char *)p->model_name;
        ls.model = &id;
        ls.first_layer = (uint32_t)w->first;
        ls.last_layer = (uint32_t)w->last;
        ls.has_embedding = 0;
        ls.is_last = s == p->n_stages - 1;
        ls.ctx = (uint32_t)p->cfg.n_ctx;
        ls.max_seqs = (uint32_t)p->cfg.n_seq;
        ls.threads = (uint32_t)w->cw->threads;
        ls.mlock = p->cfg.mlock;
        ls.threads_batch = p->cfg.threads_batch > 0 ? (uint32_t)p->cfg.threads_batch : 0;   /* workers without -tb */
        ls.head_type = p->cfg.head_type >= 0 ? (uint32_t)p->cfg.head_type : 0;
        ls.next_endpoint = s + 1 < p->n_stages ? p->w[p->stage[s + 1]].cw->endpoint : "";
        ls.next_name = s + 1 < p->n_stages ? p->w[p->stage[s + 1]].cw->name : "";
        ls.rank = (uint32_t)(s + 1);
        ls.max_batch_tokens = (uint32_t)p->cfg.n_batch;
        ls.heartbeat_timeout_ms = (uint32_t)p->hb_timeout_ms;
        ls.first_step_id = p->id_base + p->next_step;
        ls.fetch_weights = w->fetch;
        ls.kv_type = p->cfg.kv_type == KV_F32     ? TERN__KV_TYPE__KV_F32
                     : p->cfg.kv_type == KV_Q8_0 ? TERN__KV_TYPE__KV_Q8_0
                                                 : TERN__KV_TYPE__KV_F16;
        Tern__RopeParams rope = TERN__ROPE_PARAMS__INIT;
        if (p->cfg.rope_set) {   /* the user's overrides, resolved: every stage rotates alike */
            const rope_scaling_t *r = &p->cfg.rope;
            rope.freq_base = p->cfg.rope_base;
            rope.scaling = (uint32_t)r->type;
            rope.freq_scale = r->freq_scale;
            rope.n_ctx_orig = (uint32_t)r->n_ctx_orig;
            rope.ext_factor = r->ext_factor;
            rope.attn_factor = r->attn_factor;
            rope.beta_fast = r->beta_fast;
            rope.beta_slow = r->beta_slow;
            ls.rope = &rope;
        }
        m.body_case = TERN__MSG__BODY_LOAD_SHARD;
        m.load_shard = &ls;
        rc = send_to(p, w, &m, NULL, 0, p->hb_timeout_ms, err, errlen);
    }
    for (int s = 0; s < p->n_stages && !rc; s++) rc = wait_ready(p, s, err, errlen);
    pthread_mutex_lock(&p->mu);
    double now = time_now();
    for (int s = 0; s < p->n_stages; s++) {
        cworker_t *w = &p->w[p->stage[s]];
        w->loading = 0;
        if (w->last_seen < now) w->last_seen = now;   /* it could not answer while loading */
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* ---- pipeline ops ------------------------------------------------------------------------ */

/* SamplingParams 14-29 (v4) from sp; lens: room for SAMPLER_DRY_SEQ_MAX (the wire's uint32
 * lengths), order: for SAMPLER_ORDER_MAX + 1 chars; the tokens point into sp */
static void put_v4_params(Tern__SamplingParams *m, const sampler_params_t *sp, uint32_t *lens, char *order) {
    m->typical_p = sp->typical_p;
    m->top_n_sigma = sp->top_n_sigma;
    m->xtc_probability = sp->xtc_probability;
    m->xtc_threshold = sp->xtc_threshold;
    m->dynatemp_range = sp->dynatemp_range;
    m->dynatemp_exponent = sp->dynatemp_exponent;
    m->mirostat = sp->mirostat > 0 ? (uint32_t)sp->mirostat : 0;
    m->mirostat_tau = sp->mirostat_tau;
    m->mirostat_eta = sp->mirostat_eta;
    m->dry_multiplier = sp->dry_multiplier;
    m->dry_base = sp->dry_base;
    m->dry_allowed_length = sp->dry_allowed_length > 0 ? (uint32_t)sp->dry_allowed_length : 0;
    m->dry_penalty_last_n = sp->dry_penalty_last_n;
    int n = sp->n_dry_seq > 0 && sp->n_dry_seq <= SAMPLER_DRY_SEQ_MAX ? sp->n_dry_seq : 0;
    size_t ntok = 0;
    for (int i = 0; i < n; i++) ntok += lens[i] = sp->dry_seq_len[i];
    m->n_dry_breaker_lens = (size_t)n;
    m->dry_breaker_lens = lens;
    m->n_dry_breaker_tokens = ntok;
    m->dry_breaker_tokens = (int32_t *)sp->dry_tok;
    sampler_order_letters(sp, order);
    if (!strcmp(order, SAMPLER_ORDER_DEFAULT)) order[0] = 0;   /* "": the default, as older workers take it */
    m->sampler_order = order;
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
    free(p->u_seq); free(p->u_pos); free(p->b_sample); free(p->b_embd);
    p->u_seq = malloc((size_t)n * 4);
    p->u_pos = malloc((size_t)n * 4);
    p->b_sample = malloc((size_t)n * sizeof(protobuf_c_boolean));
    p->b_embd = malloc((size_t)n * sizeof(protobuf_c_boolean));
    p->cap = p->u_seq && p->u_pos && p->b_sample && p->b_embd ? n : 0;
    return p->cap ? 0 : TERN_ENOMEM;
}

/* the step's context shifts into f (checked here as every stage will: a bad one is the caller's
 * error, not a lost stage). 0 or TERN_EINVAL with s->err. */
static int put_shifts(cpl_t *p, step_t *s, Tern__Forward *f) {
    if (s->n_shift < 0 || s->n_shift > p->n_seq)
        return err_set(s->err, sizeof s->err, TERN_EINVAL, "%d context shifts in one step for %d sequence slots",
                       s->n_shift, p->n_seq);
    for (int i = 0; i < s->n_shift; i++) {
        const step_shift_t *x = &s->shift[i];
        p->kvs[i] = (kv_shift_t){x->seq, x->keep, x->discard, x->n_past};
    }
    char err[256];
    if (kv_shift_check(p->kvs, s->n_shift, p->n_seq, p->cfg.n_ctx, err, sizeof err) < 0)
        return err_set(s->err, sizeof s->err, TERN_EINVAL, "%s", err);
    for (int i = 0; i < s->n_shift; i++) {
        tern__kv_shift__init(&p->ks[i]);
        p->ks[i].seq_id = (uint32_t)p->kvs[i].seq;
        p->ks[i].keep = (uint32_t)p->kvs[i].keep;
        p->ks[i].discard = (uint32_t)p->kvs[i].discard;
        p->ks[i].n_past = (uint32_t)p->kvs[i].n_past;
        p->ksp[i] = &p->ks[i];
    }
    f->n_shift = (size_t)s->n_shift;
    f->shift = p->ksp;
    return 0;
}

/* the step's KV copies into f, checked here as every stage will (but for what each source slot
 * holds: the stages know that) — a bad one is the caller's error, not a lost stage. 0 or
 * TERN_EINVAL with s->err. */
static int put_copies(cpl_t *p, step_t *s, Tern__Forward *f) {
    if (s->n_copy < 0 || s->n_copy > p->n_seq)
        return err_set(s->err, sizeof s->err, TERN_EINVAL, "%d KV copies in one step for %d sequence slots", s->n_copy,
                       p->n_seq);
    for (int i = 0; i < s->n_copy; i++) {
        const step_copy_t *x = &s->copy[i];
        p->kvc[i] = (kv_copy_t){x->src_slot, x->dst_slot, x->n};
    }
    char err[256];
    if (kv_copy_check(p->kvc, s->n_copy, p->n_seq, p->cfg.n_ctx, NULL, err, sizeof err) < 0)
        return err_set(s->err, sizeof s->err, TERN_EINVAL, "%s", err);
    for (int i = 0; i < s->n_copy; i++) {
        tern__kv_copy__init(&p->kc[i]);
        p->kc[i].src = (uint32_t)p->kvc[i].src;
        p->kc[i].dst = (uint32_t)p->kvc[i].dst;
        p->kc[i].n = (uint32_t)p->kvc[i].n;
        p->kcp[i] = &p->kc[i];
    }
    f->n_copy = (size_t)s->n_copy;
    f->copy = p->kcp;
    return 0;
}

static int cl_submit(pipeline_t *pl, step_t *s) {
    cpl_t *p = (cpl_t *)pl;
    if (p->broken) return err_set(s->err, sizeof s->err, TERN_EPEER, "cluster unavailable: %s", p->why);
    if (p->count == CL_QUEUE || grow(p, s->n) < 0) return TERN_ENOMEM;
    for (int i = 0; i < s->n; i++) {
        p->u_seq[i] = (uint32_t)s->seq[i];
        p->u_pos[i] = (uint32_t)s->pos[i];
        p->b_sample[i] = s->sample[i];
        p->b_embd[i] = s->embd && s->embd[i];
    }
    Tern__Msg m = TERN__MSG__INIT;
    Tern__Forward f = TERN__FORWARD__INIT;
    f.step_id = p->id_base + s->id;
    f.n_tokens = (uint32_t)s->n;
    f.n_seq_ids = f.n_positions = f.n_token_ids = f.n_sample = (size_t)s->n;
    f.seq_ids = p->u_seq;
    f.positions = p->u_pos;
    f.token_ids = s->tokens;
    f.sample = p->b_sample;
    if (s->target) {
        f.n_targets = (size_t)s->n;
        f.targets = (int32_t *)s->target;
    }
    if (s->embd && s->out_embd) {
        f.n_embd = (size_t)s->n;
        f.embd = p->b_embd;
    }
    f.hidden_size = (uint32_t)p->base.n_embd;
    f.dtype = TERN__DTYPE__DTYPE_F32;
    f.want_logits = s->out_logits != NULL;
    int rc = s->n_shift ? put_shifts(p, s, &f) : 0;   /* before the sampler params are marked as sent */
    if (rc == 0 && s->n_copy) rc = put_copies(p, s, &f);
    if (rc < 0) return rc;
    int k = 0;
    /* params go with the first step that carries a token of the sequence (the worker refuses
     * params for a sequence absent from the step); 2 marks "in this step" until it is sent */
    for (int i = 0; i < s->n; i++) {
        int slot = s->seq[i];
        if (p->has_pending[slot] != 1) continue;
        p->has_pending[slot] = 2;
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
        p->sp[k].logprobs = sp->logprobs != 0;
        p->sp[k].top_logprobs = sp->top_logprobs > 0 ? (uint32_t)sp->top_logprobs : 0;
        p->sp[k].frequency_penalty = sp->freq_penalty;
        p->sp[k].presence_penalty = sp->presence_penalty;
        p->sp[k].n_bias_ids = p->sp[k].n_bias_values = (size_t)(sp->n_bias > 0 ? sp->n_bias : 0);
        p->sp[k].bias_ids = (int32_t *)sp->bias_id;
        p->sp[k].bias_values = (float *)sp->bias;
        put_v4_params(&p->sp[k], sp, p->dry_lens + (size_t)k * SAMPLER_DRY_SEQ_MAX,
                      p->orders + (size_t)k * (SAMPLER_ORDER_MAX + 1));
        p->ss[k].seq_id = (uint32_t)slot;
        p->ss[k].params = &p->sp[k];
        p->ssp[k] = &p->ss[k];
        k++;
    }
    f.n_sampling = (size_t)k;
    f.sampling = p->ssp;
    k = 0;
    for (int i = 0; s->allow && i < s->n; i++) {   /* the masks of the step's constrained samples */
        if (!s->sample[i] || !s->allow[s->seq[i]] || k == p->n_seq) continue;
        tern__seq_allow__init(&p->sa[k]);
        p->sa[k].seq_id = (uint32_t)s->seq[i];
        p->sa[k].bits.data = (uint8_t *)s->allow[s->seq[i]];
        p->sa[k].bits.len = ((size_t)p->base.n_vocab + 7) / 8;
        p->sap[k] = &p->sa[k];
        k++;
    }
    f.n_allow = (size_t)k;
    f.allow = p->sap;
    m.body_case = TERN__MSG__BODY_FORWARD;
    m.forward = &f;
    cworker_t *w0 = &p->w[p->stage[0]];
    rc = send_to(p, w0, &m, s->h, (size_t)s->n * (size_t)p->base.n_embd * sizeof(float), p->hb_timeout_ms, s->err,
                     sizeof s->err);
    for (int slot = 0; slot < p->n_seq; slot++)
        if (p->has_pending[slot] == 2) p->has_pending[slot] = rc < 0 ? 1 : 0;
    if (rc < 0) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", s->err);
        return err_set(s->err, sizeof s->err, TERN_EPEER, "first stage %s: %s", wname(w0), tmp);
    }
    if (s->id >= p->next_step) p->next_step = s->id + 1;
    p->queue[(p->head + p->count++) % CL_QUEUE] = s;
    return 0;
}

/* a stage worker the heartbeat thread has marked down, or -1 */
static int lost_stage(cpl_t *p) {
    int lost = -1;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n_stages && lost < 0; i++)
        if (!p->w[p->stage[i]].up) lost = p->stage[i];
    pthread_mutex_unlock(&p->mu);
    return lost;
}

/* One message from a stage for step s: 1 = s is done (rc filled), 0 = not for s (stale or
 * unrelated: ignored). */
static int take(cpl_t *p, cworker_t *w, step_t *s) {
    const Tern__Msg *m = p->rx.msg;
    const uint64_t want = p->id_base + s->id, end = p->id_base + p->next_step;   /* wire ids in flight: [want, end) */
    if (m->body_case == TERN__MSG__BODY_ERROR) {
        uint64_t id = m->error->step_id;
        if (id && (id < want || id >= end)) {   /* before a re-placement, or not this pipeline's */
            log_d("ignoring an error about step %llu from %s (not in flight here)", (unsigned long long)id, wname(w));
            return 0;
        }
        if (m->error->code == TERN_ENOTFOUND) {   /* the worker restarted: its layers are gone */
            pthread_mutex_lock(&p->mu);
            w->helloed = 0;
            p->lost_shard = 1;
            pthread_mutex_unlock(&p->mu);
            log_w("worker %s at %s holds no layers (restarted): re-placing", wname(w), w->cw->endpoint);
        }
        s->rc = err_set(s->err, sizeof s->err, TERN_EPEER, "%s", m->error->message ? m->error->message : wname(w));
        return 1;
    }
    if (m->body_case != TERN__MSG__BODY_SAMPLED) return 0;
    const Tern__Sampled *r = m->sampled;
    if (r->step_id < want || r->step_id >= end) {   /* stale, or not this pipeline's */
        log_d("ignoring step %llu's tokens from %s (not in flight here)", (unsigned long long)r->step_id, wname(w));
        return 0;
    }
    size_t want_sampled = 0;
    for (int i = 0; i < s->n; i++) want_sampled += s->sample[i] != 0;
    if (r->step_id != want || r->n_token_ids != want_sampled || r->n_logprobs != r->n_token_ids) {
        s->rc = err_set(s->err, sizeof s->err, TERN_EPROTO, "worker %s answered step %llu, expected %llu", wname(w),
                        (unsigned long long)(r->step_id - p->id_base), (unsigned long long)s->id);
        return 1;
    }
    if (r->n_top > SAMPLER_TOP_MAX || r->n_top_ids != r->n_token_ids * r->n_top || r->n_top_logprobs != r->n_top_ids) {
        s->rc = err_set(s->err, sizeof s->err, TERN_EPROTO, "worker %s answered step %llu with %u alternatives a token "
                        "(max %d) but %zu ids, %zu logprobs for %zu tokens", wname(w), (unsigned long long)s->id,
                        r->n_top, SAMPLER_TOP_MAX, r->n_top_ids, r->n_top_logprobs, r->n_token_ids);
        return 1;
    }
    size_t want_scored = 0;
    for (int i = 0; s->target && i < s->n; i++) want_scored += s->target[i] >= 0;
    if (r->n_target_logprobs != want_scored) {
        s->rc = err_set(s->err, sizeof s->err, TERN_EPROTO, "worker %s answered step %llu with %zu target logprobs, "
                        "expected %zu", wname(w), (unsigned long long)s->id, r->n_target_logprobs, want_scored);
        return 1;
    }
    if (r->target_n_top > SAMPLER_TOP_MAX || r->n_target_top_ids != want_scored * r->target_n_top ||
        r->n_target_top_logprobs != r->n_target_top_ids) {
        s->rc = err_set(s->err, sizeof s->err, TERN_EPROTO, "worker %s answered step %llu with %u alternatives a scored "
                        "token but %zu ids for %zu tokens", wname(w), (unsigned long long)s->id, r->target_n_top,
                        r->n_target_top_ids, want_scored);
        return 1;
    }
    if (s->out_logits && r->n_token_ids && r->vocab != (uint32_t)p->base.n_vocab) {   /* frame size: tp checked */
        s->rc = err_set(s->err, sizeof s->err, TERN_EPROTO, "worker %s answered step %llu with logits of a vocabulary "
                        "of %u, expected %d", wname(w), (unsigned long long)s->id, r->vocab, p->base.n_vocab);
        return 1;
    }
    if (s->out_logits && r->n_token_ids)
        memcpy(s->out_logits, p->rx.tensor, r->n_token_ids * (size_t)r->vocab * sizeof(float));
    size_t want_embd = 0, E = (size_t)p->base.n_embd, logit_bytes = r->n_seq_ids * (size_t)r->vocab * 4;
    for (int i = 0; s->embd && s->out_embd && i < s->n; i++) want_embd += s->embd[i] != 0;
    if (r->embd_rows != want_embd || (want_embd && r->embd_size != E) ||
        p->rx.tensor_bytes != logit_bytes + want_embd * E * sizeof(float)) {   /* transport.c checked the sum */
        s->rc = err_set(s->err, sizeof s->err, TERN_EPROTO, "worker %s answered step %llu with %u embedding rows of %u, "
                        "expected %zu of %zu", wname(w), (unsigned long long)s->id, r->embd_rows, r->embd_size, want_embd, E);
        return 1;
    }
    s->n_embd_out = (int)want_embd;
    if (want_embd) memcpy(s->out_embd, (const uint8_t *)p->rx.tensor + logit_bytes, want_embd * E * sizeof(float));
    s->n_scored = (int)want_scored;
    s->n_target_top = 0;
    if (want_scored && s->out_target_lp) memcpy(s->out_target_lp, r->target_logprobs, want_scored * sizeof(double));
    if (r->target_n_top && r->n_target_top_ids && s->out_target_top && s->out_target_top_lp) {
        memcpy(s->out_target_top, r->target_top_ids, r->n_target_top_ids * sizeof(int32_t));
        memcpy(s->out_target_top_lp, r->target_top_logprobs, r->n_target_top_logprobs * sizeof(float));
        s->n_target_top = (int)r->target_n_top;
    }
    s->n_out = (int)r->n_token_ids;
    s->n_top = 0;
    if (s->n_out) {   /* a step without samples comes back empty (NULL arrays) */
        memcpy(s->out_tok, r->token_ids, r->n_token_ids * sizeof(int32_t));
        memcpy(s->out_lp, r->logprobs, r->n_logprobs * sizeof(float));
        if (r->n_top && s->out_top && s->out_top_lp) {
            memcpy(s->out_top, r->top_ids, r->n_top_ids * sizeof(int32_t));
            memcpy(s->out_top_lp, r->top_logprobs, r->n_top_logprobs * sizeof(float));
            s->n_top = (int)r->n_top;
        }
    }
    s->rc = s->n_out;
    return 1;
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
        int lost = lost_stage(p);
        if (lost >= 0) {
            s->rc = err_set(s->err, sizeof s->err, TERN_EPEER, "worker %s at %s was lost", wname(&p->w[lost]),
                            p->w[lost].cw->endpoint);
            break;
        }
        int left = (int)((deadline - time_now()) * 1000);
        if (left <= 0) {
            if (timeout_ms >= 0) return NULL;
            s->rc = err_set(s->err, sizeof s->err, TERN_ETIMEOUT, "no answer from the cluster for step %llu within %d s",
                            (unsigned long long)s->id, CL_STEP_TIMEOUT_MS / 1000);
            break;
        }
        int nr = tp_poll(conns, p->n_stages, left < 50 ? left : 50, ready, s->err, sizeof s->err);
        if (nr < 0) { s->rc = nr; break; }
        for (int i = 0; i < p->n_stages; i++) {
            if (!ready[i]) continue;
            cworker_t *w = &p->w[p->stage[i]];
            int rc = tp_recv(w->c, &p->rx, 0, s->err, sizeof s->err);
            if (rc == TERN_ETIMEOUT) continue;
            if (rc < 0) { s->rc = rc; goto done; }
            if (take(p, w, s)) goto done;
        }
    }
done:
    if (s->rc >= 0) p->n_recover = 0;
    p->head = (p->head + 1) % CL_QUEUE;
    p->count--;
    return s;
}

/* waits up to the heartbeat timeout for the heartbeat thread to name a lost stage worker */
static int await_loss(cpl_t *p) {
    double until = time_now() + (p->hb_timeout_ms + 2 * p->hb_ms) / 1000.0;
    int lost;
    while ((lost = lost_stage(p)) < 0 && time_now() < until) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return lost;
}

/* names of the usable workers, for messages */
static void usable_names(cpl_t *p, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; i < p->n && n + 1 < cap; i++)
        if (usable(p, &p->w[i])) n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", wname(&p->w[i]));
    if (!buf[0]) snprintf(buf, cap, "none");
}

/* Says Hello to every worker that is down, in case it is back but its heartbeat link has not
 * reconnected yet (ZeroMQ backs off up to 2 s); returns how many answered. */
static int probe_down(cpl_t *p) {
    int n = 0;
    char err[512];
    for (int i = 0; i < p->n; i++) {
        cworker_t *w = &p->w[i];
        if (usable(p, w)) continue;
        if (hello(p, w, CL_PROBE_MS, CL_REJOIN_MS, err, sizeof err) == 0) {
            log_i("worker %s at %s is back: it rejoins", wname(w), w->cw->endpoint);
            n++;
        } else {
            log_i("worker %s is still away: %s", wname(w), err);
        }
    }
    return n;
}

static int cl_recover(pipeline_t *pl, const char *why, char *err, size_t errlen) {
    cpl_t *p = (cpl_t *)pl;
    p->count = 0;
    p->head = 0;
    int lost_shard = p->lost_shard;
    p->lost_shard = 0;
    if (!p->broken && !lost_shard && await_loss(p) < 0)   /* no worker was lost: the failure is final */
        return err_set(err, errlen, TERN_EPEER, "%s", why);
    if (++p->n_recover > CL_MAX_RECOVER)
        return err_set(err, errlen, TERN_EPEER, "giving up after %d recoveries in a row: %s", CL_MAX_RECOVER, why);
    double t0 = time_now();
    int rc = 0;
    for (int attempt = 0; attempt <= p->n; attempt++) {
        log_w("recovering the pipeline: %s", attempt ? err : why);
        for (int i = 0; i < p->n; i++) {   /* workers that came back: Hello again */
            cworker_t *w = &p->w[i];
            if (usable(p, w) || !worker_up(p, w)) continue;
            if (hello(p, w, CL_REJOIN_MS, CL_REJOIN_MS, err, errlen) < 0) log_w("worker %s cannot rejoin: %s", wname(w), err);
        }
        for (int s = 0; s < p->n_stages; s++) {   /* a standby takes each lost stage's place */
            if (usable(p, &p->w[p->stage[s]])) continue;
            for (int i = 0; i < p->n; i++)
                if (p->w[i].standby && usable(p, &p->w[i])) {
                    log_i("standby worker %s replaces %s", wname(&p->w[i]), wname(&p->w[p->stage[s]]));
                    pthread_mutex_lock(&p->mu);
                    p->w[i].standby = 0;
                    pthread_mutex_unlock(&p->mu);
                    break;
                }
        }
        char names[512], tmp[512];
        if ((rc = plan(p, tmp, sizeof tmp)) < 0 && probe_down(p) > 0) rc = plan(p, tmp, sizeof tmp);
        if (rc < 0) {
            usable_names(p, names, sizeof names);
            snprintf(p->why, sizeof p->why, "the model no longer fits on the workers left (%.150s): %.300s", names, tmp);
            break;
        }
        if ((rc = load_shards(p, err, errlen)) == 0) break;
        snprintf(p->why, sizeof p->why, "%s", err);
    }
    pthread_mutex_lock(&p->mu);
    p->broken = rc < 0;
    pthread_mutex_unlock(&p->mu);
    if (rc < 0) {
        log_e("cluster unavailable: %s", p->why);
        return err_set(err, errlen, TERN_EPEER, "cluster unavailable: %s", p->why);
    }
    memset(p->has_pending, 0, (size_t)p->n_seq);
    log_i("pipeline recovered in %.2f s on %d stage%s", time_now() - t0, p->n_stages, p->n_stages == 1 ? "" : "s");
    return 0;
}

static int cl_status(pipeline_t *pl, char *buf, size_t cap) {
    cpl_t *p = (cpl_t *)pl;
    size_t n = 0;
#define PUT(...) do { if (n < cap) n += (size_t)snprintf(buf + n, cap - n, __VA_ARGS__); } while (0)
    pthread_mutex_lock(&p->mu);
    int down = 0;
    for (int i = 0; i < p->n; i++) down += !p->w[i].up;
    PUT("{\"state\":\"%s\",", p->broken ? "unavailable" : down ? "degraded" : "ok");
    if (p->broken) {
        PUT("\"reason\":\"");
        for (const char *c = p->why; *c; c++)
            if (*c == '"' || *c == '\\') PUT("\\%c", *c);
            else if ((unsigned char)*c >= ' ') PUT("%c", *c);
        PUT("\",");
    }
    PUT("\"workers\":[");
    for (int i = 0; i < p->n; i++) {
        const cworker_t *w = &p->w[i];
        PUT("%s{\"name\":\"%s\",\"endpoint\":\"%s\",\"up\":%s,\"standby\":%s,", i ? "," : "", wname(w), w->cw->endpoint,
            w->up ? "true" : "false", w->standby ? "true" : "false");
        if (w->first >= 0 && w->up) PUT("\"layers\":[%d,%d],", w->first, w->last);
        else PUT("\"layers\":null,");
        PUT("\"rtt_ms\":%.3f}", w->rtt_ms);
    }
    PUT("]}");
    int ok = !p->broken;
    pthread_mutex_unlock(&p->mu);
#undef PUT
    if (n >= cap && cap) buf[0] = 0;
    return ok;
}

static void cl_destroy(pipeline_t *pl) {
    cpl_t *p = (cpl_t *)pl;
    if (p->hb_running) {
        p->hb_stop = 1;
        pthread_join(p->hb_thread, NULL);
    }
    for (int i = 0; p->w && i < p->n; i++) { tp_close(&p->w[i].c); tp_close(&p->w[i].hb); }
    tp_msg_free(&p->rx);
    free(p->w);
    free(p->pending); free(p->has_pending);
    free(p->u_seq); free(p->u_pos); free(p->b_sample); free(p->b_embd);
    free(p->ss); free(p->sp); free(p->ssp); free(p->dry_lens); free(p->orders);
    free(p->sa); free(p->sap);
    free(p->ks); free(p->ksp); free(p->kvs);
    free(p->kc); free(p->kcp); free(p->kvc);
    free(p->lmem); free(p->lrd);
    cluster_free(&p->cl);
    pthread_mutex_destroy(&p->mu);
    free(p);
    tp_term();
}

/* ---- slot save / restore: KvRead / KvWrite to every stage worker, between steps -------- */

static Tern__KvType kv_wire(int kv_type) {
    return kv_type == KV_F32 ? TERN__KV_TYPE__KV_F32 : kv_type == KV_Q8_0 ? TERN__KV_TYPE__KV_Q8_0 : TERN__KV_TYPE__KV_F16;
}

/* stage s's answer to a Kv request: KvData (read: checked and copied to its piece of buf) or
 * KvDone (write); other messages (stale results) are skipped. 0 or <0 with err. */
static int kv_answer(cpl_t *p, int s, int slot, int n, int kv_type, size_t row, uint8_t *buf, int write, char *err,
                     size_t errlen) {
    cworker_t *w = &p->w[p->stage[s]];
    double deadline = time_now() + CL_STEP_TIMEOUT_MS / 1000.0;
    for (;;) {
        if (!worker_up(p, w)) return err_set(err, errlen, TERN_EPEER, "worker %s at %s was lost", wname(w), w->cw->endpoint);
        int left = (int)((deadline - time_now()) * 1000);
        int rc = recv_from(p, w, left < 100 ? (left > 0 ? left : 0) : 100, err, errlen);
        if (rc == TERN_ETIMEOUT && left > 0) continue;
        if (rc < 0) return rc;
        int bc = p->rx.msg->body_case;
        if (write && bc == TERN__MSG__BODY_KV_DONE) {
            const Tern__KvDone *k = p->rx.msg->kv_done;
            if (k->seq_id != (uint32_t)slot || k->n_pos != (uint32_t)n) continue;   /* not this request's */
            return 0;
        }
        if (write || bc != TERN__MSG__BODY_KV_DATA) {
            log_d("worker %s: ignoring %s while waiting for KV rows", wname(w), tp_body_name(bc));
            continue;
        }
        const Tern__KvData *d = p->rx.msg->kv_data;
        if (d->seq_id != (uint32_t)slot || d->n_pos != (uint32_t)n) continue;
        if (d->first_layer != (uint32_t)w->first || d->last_layer != (uint32_t)w->last || d->kv_type != kv_wire(kv_type) ||
            d->row_bytes != row)
            return err_set(err, errlen, TERN_EPROTO, "worker %s sent KV rows of layers [%u, %u], type %d, %llu-byte rows; "
                           "expected [%d, %d], type %d, %zu-byte rows", wname(w), d->first_layer, d->last_layer,
                           (int)d->kv_type, (unsigned long long)d->row_bytes, w->first, w->last, (int)kv_wire(kv_type), row);
        /* transport.c checked the frame: layers x 2 x n x row bytes */
        memcpy(buf + (size_t)w->first * 2 * (size_t)n * row, p->rx.tensor, p->rx.tensor_bytes);
        return 0;
    }
}

/* pipeline.h kv_read / kv_write: the requests go to every stage at once, then the answers are
 * taken stage by stage */
static int cl_kv(pipeline_t *pl, int slot, int n, int kv_type, size_t row, uint8_t *buf, int write, char *err,
                 size_t errlen) {
    cpl_t *p = (cpl_t *)pl;
    if (p->broken) return err_set(err, errlen, TERN_EPEER, "%s", p->why);
    if (p->count) return err_set(err, errlen, TERN_EINVAL, "KV rows moved while %d steps are in flight", p->count);
    if (slot < 0 || slot >= p->n_seq || n < 1 || n > p->cfg.n_ctx || kv_type != p->cfg.kv_type)
        return err_set(err, errlen, TERN_EINVAL, "KV rows [0, %d) of slot %d, type %s: the stages have %d slots of %d "
                       "positions, type %s", n, slot, ops_kv_name(kv_type) ? ops_kv_name(kv_type) : "?", p->n_seq,
                       p->cfg.n_ctx, ops_kv_name(p->cfg.kv_type));
    int rc = 0;
    for (int s = 0; s < p->n_stages && rc >= 0; s++) {
        cworker_t *w = &p->w[p->stage[s]];
        Tern__Msg m = TERN__MSG__INIT;
        Tern__KvRead q = TERN__KV_READ__INIT;
        Tern__KvData d = TERN__KV_DATA__INIT;
        size_t off = (size_t)w->first * 2 * (size_t)n * row, bytes = (size_t)(w->last - w->first + 1) * 2 * (size_t)n * row;
        if (write) {
            d.seq_id = (uint32_t)slot, d.n_pos = (uint32_t)n;
            d.first_layer = (uint32_t)w->first, d.last_layer = (uint32_t)w->last;
            d.kv_type = kv_wire(kv_type);
            d.row_bytes = row;
            m.body_case = TERN__MSG__BODY_KV_WRITE;
            m.kv_write = &d;
        } else {
            q.seq_id = (uint32_t)slot, q.n_pos = (uint32_t)n;
            m.body_case = TERN__MSG__BODY_KV_READ;
            m.kv_read = &q;
        }
        rc = send_to(p, w, &m, write ? buf + off : NULL, write ? bytes : 0, p->hb_timeout_ms, err, errlen);
    }
    for (int s = 0; s < p->n_stages && rc >= 0; s++) rc = kv_answer(p, s, slot, n, kv_type, row, buf, write, err, errlen);
    return rc;
}

static int cl_kv_read(pipeline_t *pl, int slot, int n, int kv_type, size_t row, uint8_t *buf, char *err,
                      size_t errlen) {
    return cl_kv(pl, slot, n, kv_type, row, buf, 0, err, errlen);
}

static int cl_kv_write(pipeline_t *pl, int slot, int n, int kv_type, size_t row, const uint8_t *buf, char *err,
                       size_t errlen) {
    return cl_kv(pl, slot, n, kv_type, row, (uint8_t *)buf, 1, err, errlen);   /* only read when writing */
}

static const pipeline_ops_t g_cl_ops = {cl_seq_start, cl_submit, cl_wait,     cl_destroy,
                                        cl_recover,   cl_status, cl_kv_read,  cl_kv_write};

/* ---- setup ------------------------------------------------------------------------------- */

static int is_loopback(const char *ep) {
    if (strncmp(ep, "tcp://", 6)) return 1;   /* ipc:// stays on this machine */
    ep += 6;
    return !strncmp(ep, "127.", 4) || !strncmp(ep, "localhost:", 10) || !strncmp(ep, "[::1]", 5);
}

/* CURVE keys: the coordinator's pair KEYS/coordinator.key, each worker's KEYS/<name>.pub */
static int keys_load(cpl_t *p, char *err, size_t errlen) {
    if (!p->cl.curve) {
        for (int i = 0; i < p->n; i++)
            if (!is_loopback(p->cl.workers[i].endpoint))
                log_w("the link to worker %s at %s is neither authenticated nor encrypted: set security: {curve: "
                      "true, keys: DIR} in the cluster file (see README)", p->cl.workers[i].name,
                      p->cl.workers[i].endpoint);
        return 0;
    }
    if (!p->cl.keys) return err_set(err, errlen, TERN_EINVAL, "%s: security.curve needs security.keys (a directory made "
                                    "with tern keygen)", p->cl.name);
    char path[1024], tmp[512];
    snprintf(path, sizeof path, "%s/coordinator", p->cl.keys);
    int rc = curve_load_identity(path, &p->curve, tmp, sizeof tmp);
    if (rc < 0) return err_set(err, errlen, rc, "coordinator key pair %.300s.key: %.300s (tern keygen -o %.300s)", path, tmp, path);
    for (int i = 0; i < p->n; i++) {
        cworker_t *w = &p->w[i];
        w->curve = p->curve;
        snprintf(path, sizeof path, "%s/%s.pub", p->cl.keys, wname(w));
        if ((rc = curve_read_key(path, w->curve.server_key, tmp, sizeof tmp)) < 0)
            return err_set(err, errlen, rc, "no public key for worker %s: %s", wname(w), tmp);
    }
    p->has_curve = 1;
    log_i("CURVE on: links to %d worker%s authenticated and encrypted (keys in %s)", p->n, p->n == 1 ? "" : "s", p->cl.keys);
    return 0;
}

static int model_load_info(cpl_t *p, const gguf_t *g, const char *model_path, char *err, size_t errlen) {
    hparams_t hp;
    int rc = hparams_from_gguf(&hp, g, err, errlen);
    if (rc < 0) return rc;
    p->base.n_embd = hp.n_embd;
    p->base.n_vocab = hp.n_vocab;
    p->n_layer = hp.n_layer;
    p->lmem = calloc((size_t)hp.n_layer, 8);
    p->lrd = calloc((size_t)hp.n_layer, 8);
    if (!p->lmem || !p->lrd) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    layer_sizes(g, &hp, &p->cfg, p->lmem, p->lrd, &p->head_mem);
    const char *base = strrchr(model_path, '/');
    p->model_name = base ? base + 1 : model_path;
    p->g = g;
    return model_id_compute(model_path, &p->model_size, p->model_hash, err, errlen);
}

int cluster_pipeline_new(pipeline_t **out, const gguf_t *g, const char *model_path, const char *cluster_file,
                         const char *workers_csv, const stage_cfg_t *cfg, int threads, char *err, size_t errlen) {
    (void)threads;
    *out = NULL;
    cluster_t cl;
    memset(&cl, 0, sizeof cl);
    int rc = cluster_file ? cluster_file_load(&cl, cluster_file, err, errlen)
                          : cluster_from_workers_list(&cl, workers_csv, err, errlen);
    if (rc < 0) return rc;
    if (cl.transport != CLUSTER_TRANSPORT_ZMQ) {
        rc = err_set(err, errlen, TERN_ENOTSUP, "%s: transport mpi needs mpirun (see README: tern ... --mpi)", cl.name);
        cluster_free(&cl);
        return rc;
    }
    return cluster_pipeline_start(out, g, model_path, &cl, cfg, err, errlen);
}

/* a base for this pipeline's wire step ids: random bits 40..61 (time, process, address, a
 * counter) and bit 62, so two pipelines' ids practically never meet and local ids (< 2^40) fit */
static uint64_t step_id_base(const void *p) {
    static atomic_uint_fast64_t n;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t h = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 17) ^
                 (uint64_t)(uintptr_t)p ^ (atomic_fetch_add(&n, 1) * 0x9E3779B97F4A7C15ull);
    return (hash_mix64(h) & 0x3FFFFF0000000000ull) | (1ull << 62);
}

int cluster_pipeline_start(pipeline_t **out, const gguf_t *g, const char *model_path, cluster_t *cl,
                           const stage_cfg_t *cfg, char *err, size_t errlen) {
    *out = NULL;
    cpl_t *p = calloc(1, sizeof *p);
    if (!p) {
        cluster_free(cl);
        return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    }
    tp_msg_init(&p->rx);
    pthread_mutex_init(&p->mu, NULL);
    p->base.ops = &g_cl_ops;
    p->id_base = step_id_base(p);
    p->cfg = *cfg;
    p->cl = *cl;   /* taken: freed with the pipeline */
    memset(cl, 0, sizeof *cl);
    int rc = 0;
    p->hb_ms = p->cl.heartbeat_interval_ms;
    p->hb_timeout_ms = p->cl.heartbeat_timeout_ms;
    p->n = p->cl.n_workers;
    p->n_seq = cfg->n_seq;
    p->w = calloc((size_t)p->n, sizeof(cworker_t));
    p->pending = calloc((size_t)p->n_seq, sizeof(sampler_params_t));
    p->has_pending = calloc((size_t)p->n_seq, 1);
    p->ss = calloc((size_t)p->n_seq, sizeof(Tern__SeqSampling));
    p->sp = calloc((size_t)p->n_seq, sizeof(Tern__SamplingParams));
    p->dry_lens = calloc((size_t)p->n_seq * SAMPLER_DRY_SEQ_MAX, sizeof(uint32_t));
    p->orders = calloc((size_t)p->n_seq, SAMPLER_ORDER_MAX + 1);
    p->ssp = calloc((size_t)p->n_seq, sizeof(Tern__SeqSampling *));
    p->sa = calloc((size_t)p->n_seq, sizeof(Tern__SeqAllow));
    p->sap = calloc((size_t)p->n_seq, sizeof(Tern__SeqAllow *));
    p->ks = calloc((size_t)p->n_seq, sizeof(Tern__KvShift));
    p->ksp = calloc((size_t)p->n_seq, sizeof(Tern__KvShift *));
    p->kvs = calloc((size_t)p->n_seq, sizeof(kv_shift_t));
    p->kc = calloc((size_t)p->n_seq, sizeof(Tern__KvCopy));
    p->kcp = calloc((size_t)p->n_seq, sizeof(Tern__KvCopy *));
    p->kvc = calloc((size_t)p->n_seq, sizeof(kv_copy_t));
    if (!p->w || !p->pending || !p->has_pending || !p->ss || !p->sp || !p->dry_lens || !p->orders || !p->ssp || !p->sa || !p->sap || !p->ks ||
        !p->ksp || !p->kvs || !p->kc || !p->kcp || !p->kvc) {
        rc = err_set(err, errlen, TERN_ENOMEM, "out of memory");
        goto fail;
    }
    if (p->n > PLACEMENT_MAX_WORKERS || p->n > TP_MAX_POLL) {
        rc = err_set(err, errlen, TERN_EINVAL, "%s: %d workers, at most %d", p->cl.name, p->n, TP_MAX_POLL);
        goto fail;
    }
    if ((rc = model_load_info(p, g, model_path, err, errlen)) < 0) goto fail;
    for (int i = 0; i < p->n; i++) {
        p->w[i].cw = &p->cl.workers[i];
        p->w[i].first = p->w[i].last = -1;
        p->w[i].standby = p->cl.workers[i].standby;
    }
    if ((rc = keys_load(p, err, errlen)) < 0) goto fail;
    for (int i = 0; i < p->n; i++) {
        cworker_t *w = &p->w[i];
        if ((rc = hello(p, w, CL_HELLO_SEND_MS, CL_HELLO_TIMEOUT_MS, err, errlen)) < 0) {
            if (!w->standby) goto fail;
            log_w("standby worker %s is not available: %s", wname(w), err);
            rc = 0;
        }
    }
    if ((rc = hb_start(p, err, errlen)) < 0) goto fail;
    if ((rc = plan(p, err, errlen)) < 0) goto fail;
    if ((rc = load_shards(p, err, errlen)) < 0) goto fail;
    p->base.max_inflight = p->n_stages;
    *out = &p->base;
    return 0;
fail:
    cl_destroy(&p->base);
    return rc;
}
