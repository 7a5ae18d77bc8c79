/* worker_loop: see worker_loop.h. One thread receives, computes and sends, in message order, so
 * steps of different sequences pipeline across stages while each stage stays sequential. */
#include "worker/worker_loop.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/gguf.h"
#include "core/log.h"
#include "core/membw.h"
#include "core/model_id.h"
#include "core/progress.h"
#include "core/types.h"
#include "kernels/dispatch.h"
#include "kernels/ops.h"
#include "proto/curve.h"
#include "worker/fetch.h"
#include "worker/stage.h"
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WL_NEXT_SEND_MS 1000   /* a send to the next stage blocks at most this (link down) */
#define WL_POLL_MS 100         /* the idle loop wakes this often (signals, silence checks) */
#define WL_ORPHAN_S 10.0       /* how long a worker without layers retries telling the coordinator */

static volatile sig_atomic_t g_stop;
void worker_loop_stop(void) { g_stop = 1; }

#define WL_STASH 64
#define WL_TICK_S 0.05

typedef struct worker {
    const worker_cfg_t *cfg;
    tp_conn_t *in, *next;
    tp_peer_t coord;
    int have_coord;
    char name[TP_NAME_MAX];
    gguf_t *g;
    uint64_t model_size;
    char model_hash[MODEL_ID_HASH_LEN];
    tpool_t *tp;
    tpool_t *tp_batch;        /* -tb: steps of more than one token, or NULL (tp) */
    float gbps;               /* the Hello's speed: host memory's, or the GPU's for a CUDA worker */
    uint64_t dev_mem;         /* CUDA worker: the GPU's memory (0: a CPU worker) */
    char dev_name[128];
    stage_t st;
    int loaded, is_last;
    uint64_t first_step;      /* Forwards below it predate the current LoadShard: dropped */
    int hb_timeout_ms;        /* coordinator silent this long: free the shard (0 = never) */
    double coord_seen;        /* last message from the coordinator (any of its links) */
    int next_broken;          /* a send to the next stage failed since the LoadShard */
    uint32_t hidden;
    float *h;
    size_t h_cap;
    int32_t *out_tok;
    float *out_lp;
    uint32_t *seq_u;
    double *tgt_lp;        /* (cap_tokens,) scored targets' log probabilities */
    float *logits;         /* (n_logit_rows, n_vocab) sampled rows' logits (Forward.want_logits), on first use */
    size_t logits_cap;     /* bytes */
    int *seq, *pos;
    int32_t *tok;
    uint8_t *smp;
    uint8_t *emf;          /* (cap_tokens,) the step's embedding flags */
    float *embd_out;       /* rows of embeddings a step sends back (last stage; grown on use) */
    size_t embd_cap;
    int cap_tokens;
    kv_shift_t *shift;        /* (n_seq,) a step's context shifts, sized at LoadShard */
    kv_copy_t *copy;          /* (n_seq,) a step's KV copies, likewise */
    tp_peer_t loader;         /* who sent the current LoadShard: the only peer Kv* messages are taken from */
    uint8_t *kv_buf;          /* a slot's KV rows (KvRead / KvWrite), grown on use */
    size_t kv_cap;
    /* messages that arrived during a long step (see worker_tick), handled after it in order */
    tp_msg_t stash[WL_STASH];
    int st_head, st_n;
    double last_tick;
    int test_block_delay_us;   /* TERN_TEST_BLOCK_DELAY_MS: tests of long steps only */
    uint64_t orphan_step;      /* a Forward came before any LoadShard: tell_no_layers */
    double orphan_until;       /* retry telling the coordinator until then; 0 = nothing to tell */
    int quit;                  /* a Shutdown came */
    atomic_int *stop;          /* embedded: the owner asks the loop to end */
} worker_t;

/* A worker restarted at the same endpoint gets the old pipeline's steps (from the previous
 * stage, whose link reconnects by itself) before any Hello. The coordinator would wait for
 * those steps forever, since this new process answers its heartbeats, so the worker tells it
 * (Error TERN_ENOTFOUND, to the coordinators' routing id "coord", or the one it knows) that
 * it holds no layers; the coordinator's own link may come up only later, so this is retried
 * from the loop until it goes through or WL_ORPHAN_S pass. */
static void tell_no_layers(worker_t *w) {
    if (!w->orphan_until) return;
    if (w->loaded || time_now() > w->orphan_until) { w->orphan_until = 0; return; }   /* placed again, or too late */
    tp_peer_t to = w->coord;
    if (!w->have_coord) {
        memset(&to, 0, sizeof to);
        memcpy(to.id, "coord", 5), to.id_len = 5;
        snprintf(to.name, sizeof to.name, "coord");
    }
    Tern__Msg m = TERN__MSG__INIT;
    Tern__Error e = TERN__ERROR__INIT;
    e.code = TERN_ENOTFOUND;
    e.node = w->name;
    e.message = "Forward before LoadShard: this worker holds no layers (restarted?)";
    e.step_id = w->orphan_step;
    m.body_case = TERN__MSG__BODY_ERROR;
    m.error = &e;
    char err[256];
    if (tp_send(w->in, &to, &m, NULL, 0, err, sizeof err) == 0) {
        log_i("told the coordinator that this worker holds no layers (step %llu)", (unsigned long long)w->orphan_step);
        w->orphan_until = 0;
    }
}

static int send_error(worker_t *w, const tp_peer_t *to, int code, uint64_t step, const char *msg) {
    Tern__Msg m = TERN__MSG__INIT;
    Tern__Error e = TERN__ERROR__INIT;
    e.code = code;
    e.node = w->name;
    e.message = (char *)msg;
    e.step_id = step;
    m.body_case = TERN__MSG__BODY_ERROR;
    m.error = &e;
    char err[256];
    log_msg(w->cfg->embedded ? LOG_D : LOG_E, "%s", msg);   /* embedded: the coordinator reports it */
    return tp_send(w->in, to, &m, NULL, 0, err, sizeof err);
}

static uint64_t mem_total(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
}

static void on_hello(worker_t *w, tp_msg_t *rx) {
    char err[256];
    if (tp_hello_check(rx->msg->hello, rx->from.name, err, sizeof err) < 0) {
        Tern__Msg m = TERN__MSG__INIT;
        Tern__Refuse r = TERN__REFUSE__INIT;
        r.code = TERN_EPROTO;
        r.reason = err;
        m.body_case = TERN__MSG__BODY_REFUSE;
        m.refuse = &r;
        log_e("%s", err);
        tp_send(w->in, &rx->from, &m, NULL, 0, err, sizeof err);
        return;
    }
    w->coord = rx->from;
    w->have_coord = 1;
    Tern__Msg m = TERN__MSG__INIT;
    Tern__Hello h = TERN__HELLO__INIT;
    h.proto_version = TERN_PROTO_VERSION;
    h.node_name = w->name;
    h.role = TERN__ROLE__ROLE_WORKER;
    h.cores = (uint32_t)tpool_size(w->tp);
    /* a CUDA worker's layers and KV cache live in GPU memory: offer 90 % of it (the CUDA context,
     * activations and attention scratch take the rest) */
    h.memory_bytes = w->cfg->memory ? w->cfg->memory : w->dev_mem ? w->dev_mem / 10 * 9 : mem_total();
    char isa[64];   /* the transport takes at most 63 characters here */
    snprintf(isa, sizeof isa, "%s%.57s%s", w->dev_mem ? "cuda: " : "", w->dev_mem ? w->dev_name : "",
             w->dev_mem ? "" : isa_name(isa_current()));
    h.isa = isa;
    h.numa_nodes = 1;
    h.gbps = w->gbps;
    h.model_size = w->model_size;
    h.model_hash = w->model_hash;
    h.endpoint = (char *)tp_endpoint(w->in);
    h.build = "tern 0.1.0";
    m.body_case = TERN__MSG__BODY_HELLO;
    m.hello = &h;
    if (tp_send(w->in, &rx->from, &m, NULL, 0, err, sizeof err) < 0) log_w("hello reply to %s: %s", rx->from.name, err);
    log_msg(w->cfg->embedded ? LOG_D : LOG_I, "coordinator %s connected", rx->from.name);
}

static int grow(worker_t *w, int n_tokens, uint32_t hidden) {
    size_t need = (size_t)n_tokens * hidden * sizeof(float);
    if (need > w->h_cap) {
        tern_free(w->h);
        w->h = tern_alloc(need);
        w->h_cap = w->h ? need : 0;
        if (!w->h) return TERN_ENOMEM;
    }
    if (n_tokens > w->cap_tokens) {
        free(w->seq); free(w->pos); free(w->tok); free(w->smp); free(w->out_tok); free(w->out_lp); free(w->seq_u);
        free(w->tgt_lp); free(w->emf);
        w->seq = malloc((size_t)n_tokens * sizeof(int));
        w->pos = malloc((size_t)n_tokens * sizeof(int));
        w->tok = malloc((size_t)n_tokens * sizeof(int32_t));
        w->smp = malloc((size_t)n_tokens);
        w->out_tok = malloc((size_t)n_tokens * sizeof(int32_t));
        w->out_lp = malloc((size_t)n_tokens * sizeof(float));
        w->seq_u = malloc((size_t)n_tokens * sizeof(uint32_t));
        w->tgt_lp = malloc((size_t)n_tokens * sizeof(double));
        w->emf = malloc((size_t)n_tokens);
        w->cap_tokens = n_tokens;
        if (!w->seq || !w->pos || !w->tok || !w->smp || !w->out_tok || !w->out_lp || !w->seq_u || !w->tgt_lp || !w->emf) {
            w->cap_tokens = 0;
            return TERN_ENOMEM;
        }
    }
    return 0;
}

/* room for n rows of embeddings (only steps that ask for them: a last stage's extra frame) */
static int grow_embd(worker_t *w, int n) {
    size_t need = (size_t)n * w->hidden * sizeof(float);
    if (need <= w->embd_cap) return 0;
    tern_free(w->embd_out);
    w->embd_out = tern_alloc(need);
    w->embd_cap = w->embd_out ? need : 0;
    return w->embd_out ? 0 : TERN_ENOMEM;
}

static void on_heartbeat(worker_t *w, tp_msg_t *rx);
static int from_coordinator(const worker_t *w, const tp_msg_t *rx);

/* Called between blocks of a step: answers heartbeats at once, so a step longer than the
 * heartbeat timeout (a long prompt chunk on a big model) does not get this worker declared
 * lost; anything else is kept, in order, for the main loop. One slot stays free: the message
 * being handled may itself be a stashed one. */
static void worker_tick(void *ctx) {
    worker_t *w = ctx;
    if (w->test_block_delay_us) usleep((useconds_t)w->test_block_delay_us);   /* tests: slow blocks */
    double now = time_now();
    if (now - w->last_tick < WL_TICK_S) return;
    w->last_tick = now;
    char err[256];
    while (w->st_n < WL_STASH - 1) {
        tp_msg_t *m = &w->stash[(w->st_head + w->st_n) % WL_STASH];
        if (tp_recv(w->in, m, 0, err, sizeof err) < 0) break;
        if (from_coordinator(w, m)) w->coord_seen = now;
        if (m->msg->body_case == TERN__MSG__BODY_HEARTBEAT) { on_heartbeat(w, m); continue; }
        w->st_n++;
    }
}

/* The pool of a shard's multi-token steps: the worker's own -tb wins (its pool, made at start),
 * else the coordinator's (coord_tb, LoadShard.threads_batch: made, or remade at another size,
 * here), else none (they run on the -t pool). A CUDA worker has none. Called with no stage loaded,
 * so nothing holds the pool it replaces. Logs which -tb applies. 0 or TERN_ENOMEM with err. */
static int batch_pool_for(worker_t *w, uint32_t coord_tb, char *err, size_t errlen) {
    int own = w->cfg->threads_batch, lvl = w->cfg->embedded ? LOG_D : LOG_I;
    if (w->cfg->cuda) return 0;
    if (own > 0) {
        if (coord_tb && coord_tb != (uint32_t)own)
            log_msg(lvl, "threads-batch %d (this worker's -tb; the coordinator's is %u)", own, coord_tb);
        else
            log_msg(lvl, "threads-batch %d (this worker's -tb)", own);
        return 0;
    }
    int want = coord_tb == (uint32_t)tpool_size(w->tp) ? 0 : (int)coord_tb;   /* as many as -t: that pool */
    if ((w->tp_batch ? tpool_size(w->tp_batch) : 0) != want) {
        tpool_destroy(&w->tp_batch);
        if (want && !(w->tp_batch = tpool_new(want)))
            return err_set(err, errlen, TERN_ENOMEM, "cannot start %d batch threads", want);
    }
    if (coord_tb) log_msg(lvl, "threads-batch %u (the coordinator's -tb)", coord_tb);
    return 0;
}

/* The pool of a shard's steps: the worker's own -t wins, else the cluster file's `threads`
 * (LoadShard.threads: the pool is remade at that size here), else the one made at start (all
 * cores). A CUDA worker keeps its own. Called with no stage loaded, so nothing holds the pool it
 * replaces. Logs where the count came from when the file names one. 0 or TERN_ENOMEM with err. */
static int main_pool_for(worker_t *w, uint32_t file_threads, char *err, size_t errlen) {
    int lvl = w->cfg->embedded ? LOG_D : LOG_I;
    if (!file_threads || w->cfg->cuda) return 0;
    if (w->cfg->threads_given) {
        if (file_threads != (uint32_t)tpool_size(w->tp))
            log_msg(lvl, "threads %d (this worker's -t; the cluster file's is %u)", tpool_size(w->tp), file_threads);
        return 0;
    }
    if (file_threads != (uint32_t)tpool_size(w->tp)) {
        tpool_destroy(&w->tp);
        if (!(w->tp = tpool_new((int)file_threads)))
            return err_set(err, errlen, TERN_ENOMEM, "cannot start %u threads", file_threads);
        log_msg(lvl, "threads %u (the cluster file's)", file_threads);
    }
    return 0;
}

static void on_load(worker_t *w, tp_msg_t *rx) {
    const Tern__LoadShard *ls = rx->msg->load_shard;
    char err[512], msg[1200];
    double t0 = time_now();
    if (!w->cfg->model && w->cfg->fetch && ls->model) {
        /* no copy of our own: the shard's bytes come from the coordinator (cached by hash) */
        if (w->loaded) { stage_free(&w->st); w->loaded = 0; }
        gguf_close(&w->g);
        fetch_req_t fr = {w->in, &rx->from, w->cfg->cache_dir, w->name, ls->model, (int)ls->first_layer,
                          (int)ls->last_layer, ls->is_last, 0, w->cfg->no_mmap ? GGUF_NO_MMAP : 0};
        int frc = fetch_shard(&fr, &w->g, err, sizeof err);
        if (frc < 0) {
            snprintf(msg, sizeof msg, "%s: cannot fetch layers [%u, %u]: %s", w->name, ls->first_layer, ls->last_layer, err);
            send_error(w, &rx->from, frc, 0, msg);
            return;
        }
        w->model_size = ls->model->size;
        snprintf(w->model_hash, sizeof w->model_hash, "%s", ls->model->hash ? ls->model->hash : "");
    }
    if (!w->g) {
        snprintf(msg, sizeof msg, "%s has no local model file (start it with -m MODEL, or with --fetch-weights to get "
                 "the layers from the coordinator)", w->name);
        send_error(w, &rx->from, TERN_ENOTFOUND, 0, msg);
        return;
    }
    if (ls->model && (ls->model->size != w->model_size || strcmp(ls->model->hash ? ls->model->hash : "", w->model_hash))) {
        snprintf(msg, sizeof msg, "%s: model file mismatch: coordinator has %s (%llu bytes, %s), this worker %s "
                 "(%llu bytes, %s)", w->name, ls->model->name ? ls->model->name : "?",
                 (unsigned long long)ls->model->size, ls->model->hash ? ls->model->hash : "", w->cfg->model,
                 (unsigned long long)w->model_size, w->model_hash);
        send_error(w, &rx->from, TERN_EINVAL, 0, msg);
        return;
    }
    if (w->loaded) { stage_free(&w->st); w->loaded = 0; }
    tp_close(&w->next);
    w->next_broken = 0;
    stage_cfg_t c;
    stage_cfg_default(&c);
    c.first = (int)ls->first_layer;
    c.last = (int)ls->last_layer;
    c.has_head = ls->is_last;
    c.n_ctx = (int)ls->ctx;
    c.n_seq = (int)ls->max_seqs;
    c.n_batch = ls->max_batch_tokens ? (int)ls->max_batch_tokens : 64;
    c.head_type = ls->head_type ? (int)ls->head_type : -1;
    c.kv_type = ls->kv_type == TERN__KV_TYPE__KV_F32 ? KV_F32 : ls->kv_type == TERN__KV_TYPE__KV_Q8_0 ? KV_Q8_0 : KV_F16;
    if (w->cfg->cuda) c.device = STAGE_DEV_CUDA;
    c.mlock = w->cfg->mlock || ls->mlock;   /* the worker's own flag, or the coordinator's --mlock */
    if (ls->rope) {   /* checked by shard_load (rope_scaling_check): the bytes came over the network */
        const Tern__RopeParams *r = ls->rope;
        c.rope_set = 1;
        c.rope_base = r->freq_base;
        c.rope.type = r->scaling > ROPE_SCALING_YARN ? -1 : (int)r->scaling;
        c.rope.freq_scale = r->freq_scale;
        c.rope.n_ctx_orig = r->n_ctx_orig > (1u << 24) ? -1 : (int)r->n_ctx_orig;
        c.rope.ext_factor = r->ext_factor;
        c.rope.attn_factor = r->attn_factor;
        c.rope.beta_fast = r->beta_fast;
        c.rope.beta_slow = r->beta_slow;
    }
    int rc = main_pool_for(w, ls->threads, err, sizeof err);
    if (rc == 0) rc = batch_pool_for(w, ls->threads_batch, err, sizeof err);
    if (rc == 0) rc = stage_init(&w->st, w->g, &c, w->tp, err, sizeof err);
    if (rc < 0) {
        snprintf(msg, sizeof msg, "%s: cannot load layers [%u, %u]: %s", w->name, ls->first_layer, ls->last_layer, err);
        send_error(w, &rx->from, rc, 0, msg);
        return;
    }
    if (!w->st.cuda && forward_set_batch_pool(&w->st.fwd, w->tp_batch) < 0) {
        stage_free(&w->st);
        snprintf(msg, sizeof msg, "%s: out of memory for %d batch threads", w->name, tpool_size(w->tp_batch));
        send_error(w, &rx->from, TERN_ENOMEM, 0, msg);
        return;
    }
    w->st.fwd.tick = worker_tick;
    w->st.fwd.tick_ctx = w;
    kv_shift_t *sh = realloc(w->shift, (size_t)c.n_seq * sizeof *sh);
    if (sh) w->shift = sh;
    kv_copy_t *cp = sh ? realloc(w->copy, (size_t)c.n_seq * sizeof *cp) : NULL;
    if (cp) w->copy = cp;
    if (!sh || !cp) {
        stage_free(&w->st);
        snprintf(msg, sizeof msg, "%s: out of memory for %d sequence slots", w->name, c.n_seq);
        send_error(w, &rx->from, TERN_ENOMEM, 0, msg);
        return;
    }
    uint64_t need = w->st.shard.weight_bytes + kv_cache_bytes_for(c.kv_type, c.last - c.first + 1, c.n_seq, c.n_ctx,
                                                                   w->st.fwd.kv.kv_dim);
    if (w->cfg->memory && need > w->cfg->memory) {
        snprintf(msg, sizeof msg, "%s: layers [%d, %d] need %.2f GiB but --memory allows %.2f GiB", w->name, c.first,
                 c.last, (double)need / (1 << 30), (double)w->cfg->memory / (1 << 30));
        stage_free(&w->st);
        send_error(w, &rx->from, TERN_ENOMEM, 0, msg);
        return;
    }
    if (ls->next_endpoint && ls->next_endpoint[0]) {
        tp_opts_t o = {0};
        tp_curve_t cv;
        o.name = w->name;
        o.send_timeout_ms = WL_NEXT_SEND_MS;
        rc = 0;
        if (w->cfg->curve) {   /* the next stage is a CURVE server: its public key from our key dir */
            char path[1024];
            cv = *w->cfg->curve;
            snprintf(path, sizeof path, "%s/%s.pub", w->cfg->keys_dir ? w->cfg->keys_dir : ".",
                     ls->next_name ? ls->next_name : "");
            o.curve = &cv;
            rc = curve_read_key(path, cv.server_key, err, sizeof err);
        }
        if (rc < 0 || (rc = tp_connect(&w->next, ls->next_endpoint, &o, err, sizeof err)) < 0) {
            snprintf(msg, sizeof msg, "%s: cannot connect to the next stage %s: %s", w->name, ls->next_endpoint, err);
            stage_free(&w->st);
            send_error(w, &rx->from, rc, 0, msg);
            return;
        }
    }
    w->loaded = 1;
    w->loader = rx->from;
    w->is_last = ls->is_last;
    w->first_step = ls->first_step_id;
    w->hb_timeout_ms = (int)ls->heartbeat_timeout_ms;
    w->hidden = (uint32_t)w->st.shard.hp.n_embd;
    w->coord = rx->from;
    w->have_coord = 1;
    Tern__Msg m = TERN__MSG__INIT;
    Tern__ShardReady r = TERN__SHARD_READY__INIT;
    r.bytes_loaded = w->st.shard.weight_bytes;
    r.load_seconds = time_now() - t0;
    r.first_layer = ls->first_layer;
    r.last_layer = ls->last_layer;
    m.body_case = TERN__MSG__BODY_SHARD_READY;
    m.shard_ready = &r;
    log_msg(w->cfg->embedded ? LOG_D : LOG_I, "loaded layers [%u, %u]%s (%.1f MiB) in %.2f s", ls->first_layer, ls->last_layer,
          ls->is_last ? " + head" : "", (double)r.bytes_loaded / 1048576, r.load_seconds);
    tp_send(w->in, &rx->from, &m, NULL, 0, err, sizeof err);
}

_Static_assert(TP_MAX_BIAS == SAMPLER_BIAS_MAX, "the wire's logit_bias limit is the sampler's");
_Static_assert(TP_MAX_ORDER == SAMPLER_ORDER_MAX, "the wire's sampler order limit is the sampler's");
_Static_assert(TP_MAX_DRY_SEQ == SAMPLER_DRY_SEQ_MAX && TP_MAX_DRY_TOK == SAMPLER_DRY_TOK_MAX &&
               TP_MAX_DRY_LEN == 1 + SAMPLER_DRY_TAIL_MAX, "the wire's DRY breaker limits are the sampler's");

/* a sequence's sampling params as they came (transport.c checked their ranges and counts) */
static void params_from_msg(sampler_params_t *p, const Tern__SamplingParams *m) {
    memset(p, 0, sizeof *p);
    p->temp = m->temp;
    p->top_k = m->top_k;
    p->top_p = m->top_p;
    p->min_p = m->min_p;
    p->repeat_penalty = m->repeat_penalty;
    p->repeat_last_n = m->repeat_last_n;
    p->seed = m->seed;
    p->logprobs = m->logprobs;
    p->top_logprobs = (int)(m->top_logprobs > SAMPLER_TOP_MAX ? SAMPLER_TOP_MAX : m->top_logprobs);
    p->freq_penalty = m->frequency_penalty;
    p->presence_penalty = m->presence_penalty;
    p->n_bias = (int)(m->n_bias_ids < SAMPLER_BIAS_MAX ? m->n_bias_ids : SAMPLER_BIAS_MAX);
    for (int i = 0; i < p->n_bias; i++) p->bias_id[i] = m->bias_ids[i], p->bias[i] = m->bias_values[i];
    p->typical_p = m->typical_p;
    p->top_n_sigma = m->top_n_sigma;
    p->xtc_probability = m->xtc_probability;
    p->xtc_threshold = m->xtc_threshold;
    p->dynatemp_range = m->dynatemp_range;
    p->dynatemp_exponent = m->dynatemp_exponent;
    p->mirostat = (int)m->mirostat;
    p->mirostat_tau = m->mirostat_tau;
    p->mirostat_eta = m->mirostat_eta;
    p->dry_multiplier = m->dry_multiplier;
    p->dry_base = m->dry_base;
    p->dry_allowed_length = (int)m->dry_allowed_length;
    p->dry_penalty_last_n = m->dry_penalty_last_n > SAMPLER_DRY_MAX ? SAMPLER_DRY_MAX : m->dry_penalty_last_n;
    p->n_dry_seq = (int)m->n_dry_breaker_lens;
    for (size_t i = 0; i < m->n_dry_breaker_lens; i++) p->dry_seq_len[i] = (uint8_t)m->dry_breaker_lens[i];
    if (m->n_dry_breaker_tokens) memcpy(p->dry_tok, m->dry_breaker_tokens, m->n_dry_breaker_tokens * sizeof *p->dry_tok);
    /* the order's letters (checked by transport.c); "" or none: the default (sampler_init keeps
     * only known letters) */
    size_t no = m->sampler_order ? strnlen(m->sampler_order, SAMPLER_ORDER_MAX + 1) : 0;
    if (no <= SAMPLER_ORDER_MAX) {
        memcpy(p->order, m->sampler_order ? m->sampler_order : "", no);
        p->n_order = (int)no;
    }
}

static int wire_int(uint32_t v) { return v > (uint32_t)INT_MAX ? INT_MAX : (int)v; }

/* The step's context shifts, checked against this stage (a bad one: none applied, err says
 * why) and applied to its layers before the step's tokens. 0 or <0. */
static int apply_shifts(worker_t *w, const Tern__Forward *f, char *err, size_t errlen) {
    if (!f->n_shift) return 0;
    if (f->n_shift > (size_t)w->st.cfg.n_seq)
        return err_set(err, errlen, TERN_EINVAL, "%zu context shifts in one step for %d sequence slots", f->n_shift,
                       w->st.cfg.n_seq);
    for (size_t i = 0; i < f->n_shift; i++) {
        const Tern__KvShift *k = f->shift[i];
        w->shift[i] = (kv_shift_t){wire_int(k->seq_id), wire_int(k->keep), wire_int(k->discard), wire_int(k->n_past)};
    }
    return stage_shift(&w->st, w->shift, (int)f->n_shift, err, errlen);
}

/* The step's KV copies, checked against this stage (a bad one: none applied, err says why) and
 * applied to its layers before its shifts and tokens; the shifts are checked first, so that a bad
 * shift leaves the copies undone too. 0 or <0. */
static int apply_copies(worker_t *w, const Tern__Forward *f, char *err, size_t errlen) {
    if (!f->n_copy) return 0;
    int n_seq = w->st.cfg.n_seq;
    if (f->n_copy > (size_t)n_seq || f->n_shift > (size_t)n_seq)
        return err_set(err, errlen, TERN_EINVAL, "%zu KV copies and %zu context shifts in one step for %d sequence slots",
                       f->n_copy, f->n_shift, n_seq);
    for (size_t i = 0; i < f->n_shift; i++) {
        const Tern__KvShift *k = f->shift[i];
        w->shift[i] = (kv_shift_t){wire_int(k->seq_id), wire_int(k->keep), wire_int(k->discard), wire_int(k->n_past)};
    }
    int rc = kv_shift_check(w->shift, (int)f->n_shift, n_seq, w->st.cfg.n_ctx, err, errlen);
    for (size_t i = 0; rc >= 0 && i < f->n_copy; i++) {
        const Tern__KvCopy *k = f->copy[i];
        w->copy[i] = (kv_copy_t){wire_int(k->src), wire_int(k->dst), wire_int(k->n)};
    }
    return rc < 0 ? rc : stage_copy(&w->st, w->copy, (int)f->n_copy, err, errlen);
}

static void on_forward(worker_t *w, tp_msg_t *rx) {
    const Tern__Forward *f = rx->msg->forward;
    char err[512], msg[1200];
    if (!w->loaded) {
        log_e("Forward step %llu from %s before LoadShard: this worker holds no layers", (unsigned long long)f->step_id,
              rx->from.name);
        w->orphan_step = f->step_id;
        w->orphan_until = time_now() + WL_ORPHAN_S;
        tell_no_layers(w);
        return;
    }
    if (f->step_id < w->first_step) {
        log_d("dropping step %llu from %s: it predates the current placement", (unsigned long long)f->step_id,
              rx->from.name);
        return;
    }
    int n = (int)f->n_tokens;
    if (f->hidden_size != w->hidden || f->dtype != TERN__DTYPE__DTYPE_F32 || f->n_seq_ids != (size_t)n ||
        f->n_positions != (size_t)n || (f->n_token_ids && f->n_token_ids != (size_t)n) ||
        (f->n_sample && f->n_sample != (size_t)n) || (f->n_targets && f->n_targets != (size_t)n) ||
        (f->n_embd && f->n_embd != (size_t)n)) {
        snprintf(msg, sizeof msg, "%s: Forward step %llu does not match this stage (hidden %u, expected %u f32; %d "
                 "tokens)", w->name, (unsigned long long)f->step_id, f->hidden_size, w->hidden, n);
        send_error(w, &w->coord, TERN_EPROTO, f->step_id, msg);
        return;
    }
    if (grow(w, n, w->hidden) < 0) { send_error(w, &w->coord, TERN_ENOMEM, f->step_id, "out of memory"); return; }
    memcpy(w->h, rx->tensor, (size_t)n * w->hidden * sizeof(float));
    for (int i = 0; i < n; i++) {
        w->seq[i] = (int)f->seq_ids[i];
        w->pos[i] = (int)f->positions[i];
        w->tok[i] = f->n_token_ids ? f->token_ids[i] : -1;
        w->smp[i] = f->n_sample ? (uint8_t)f->sample[i] : 0;
        w->emf[i] = f->n_embd ? (uint8_t)f->embd[i] : 0;
    }
    if (w->is_last)
        for (size_t i = 0; i < f->n_sampling; i++) {
            const Tern__SeqSampling *ss = f->sampling[i];
            if (!ss->params || ss->seq_id >= (uint32_t)w->st.cfg.n_seq) continue;
            sampler_params_t p;
            params_from_msg(&p, ss->params);
            stage_seq_start(&w->st, (int)ss->seq_id, &p);
        }
    for (size_t i = 0; w->is_last && i < f->n_allow; i++) {   /* grammar masks for this step's samples */
        const Tern__SeqAllow *a = f->allow[i];
        if (stage_seq_allow(&w->st, (int)a->seq_id, a->bits.data, a->bits.len) < 0) {
            snprintf(msg, sizeof msg, "%s: Forward step %llu: a token mask for sequence slot %u of %zu bytes (this "
                     "stage: %d slots, %d bytes)", w->name, (unsigned long long)f->step_id, a->seq_id, a->bits.len,
                     w->st.cfg.n_seq, (w->st.shard.hp.n_vocab + 7) / 8);
            send_error(w, &w->coord, TERN_EPROTO, f->step_id, msg);
            return;
        }
    }
    int src = apply_copies(w, f, err, sizeof err);
    if (src >= 0) src = apply_shifts(w, f, err, sizeof err);
    if (src < 0) {
        snprintf(msg, sizeof msg, "%s: Forward step %llu: %s", w->name, (unsigned long long)f->step_id, err);
        send_error(w, &w->coord, src, f->step_id, msg);
        return;
    }
    size_t lbytes = (size_t)w->st.n_logit_rows * (size_t)w->st.shard.hp.n_vocab * sizeof(float);
    int want_logits = w->is_last && f->want_logits;
    if (want_logits && lbytes > w->logits_cap) {   /* the shard (vocabulary, slots) may change with a LoadShard */
        free(w->logits);
        w->logits_cap = (w->logits = malloc(lbytes)) ? lbytes : 0;
        if (!w->logits) { send_error(w, &w->coord, TERN_ENOMEM, f->step_id, "out of memory for the logits"); return; }
    }
    int m = stage_step_logits(&w->st, w->h, n, w->tok, w->seq, w->pos, w->smp, w->out_tok, w->out_lp,
                              want_logits ? w->logits : NULL, err, sizeof err);
    /* the last stage scores every step (none to score: it only resets its counts) */
    int ns = m < 0 || !w->is_last ? 0
             : stage_score(&w->st, w->h, n, w->seq, f->n_targets ? f->targets : NULL, w->tgt_lp, err, sizeof err);
    if (ns < 0) m = ns;
    int ne = 0;   /* embeddings: the normed final hidden states of the flagged tokens */
    if (m >= 0 && w->is_last && f->n_embd) {
        ne = grow_embd(w, n) < 0 ? err_set(err, sizeof err, TERN_ENOMEM, "out of memory for %d embeddings", n)
                                 : stage_embd(&w->st, w->h, n, w->emf, w->embd_out, err, sizeof err);
        if (ne < 0) m = ne;
    }
    if (m < 0) {
        snprintf(msg, sizeof msg, "%s: step %llu: %s", w->name, (unsigned long long)f->step_id, err);
        send_error(w, &w->coord, m, f->step_id, msg);
        return;
    }
    Tern__Msg out = TERN__MSG__INIT;
    if (!w->is_last) {
        out.body_case = TERN__MSG__BODY_FORWARD;
        out.forward = (Tern__Forward *)f;   /* same header, new hidden states */
        /* after one failed send the next stage is taken as gone until the next LoadShard, so that
         * a queue of steps cannot keep this loop from answering heartbeats */
        if (w->next_broken) snprintf(err, sizeof err, "the link failed before");
        if (w->next_broken ||
            tp_send(w->next, NULL, &out, w->h, (size_t)n * w->hidden * sizeof(float), err, sizeof err) < 0) {
            w->next_broken = 1;
            snprintf(msg, sizeof msg, "%s: cannot pass step %llu to the next stage: %s", w->name,
                     (unsigned long long)f->step_id, err);
            send_error(w, &w->coord, TERN_EPEER, f->step_id, msg);
        }
        return;
    }
    Tern__Sampled s = TERN__SAMPLED__INIT;
    s.step_id = f->step_id;
    int j = 0;
    for (int i = 0; i < n; i++)
        if (w->smp[i]) w->seq_u[j++] = (uint32_t)w->seq[i];
    s.n_seq_ids = s.n_token_ids = s.n_logprobs = (size_t)m;
    s.seq_ids = w->seq_u;
    s.token_ids = w->out_tok;
    s.logprobs = w->out_lp;
    s.n_top = (uint32_t)w->st.n_top;
    s.n_top_ids = s.n_top_logprobs = (size_t)m * (size_t)w->st.n_top;
    s.top_ids = w->st.top_ids;
    s.top_logprobs = w->st.top_lp;
    s.n_target_logprobs = (size_t)ns;
    s.target_logprobs = w->tgt_lp;
    s.target_n_top = (uint32_t)w->st.score_n_top;
    s.n_target_top_ids = s.n_target_top_logprobs = (size_t)ns * (size_t)s.target_n_top;
    s.target_top_ids = w->st.score_top_ids;
    s.target_top_logprobs = w->st.score_top_lp;
    s.vocab = want_logits ? (uint32_t)w->st.shard.hp.n_vocab : 0;
    s.embd_rows = (uint32_t)ne;
    s.embd_size = ne ? w->hidden : 0;
    out.body_case = TERN__MSG__BODY_SAMPLED;
    out.sampled = &s;
    /* one frame: the logits rows, then the embedding rows */
    size_t lb = (size_t)m * s.vocab * sizeof(float), eb = (size_t)ne * w->hidden * sizeof(float);
    const void *frame = lb ? (const void *)w->logits : (const void *)w->embd_out;
    if (lb && eb) {   /* both asked for (rare): the rows follow the logits in their buffer */
        float *grown = lb + eb > w->logits_cap ? realloc(w->logits, lb + eb) : w->logits;
        if (!grown) { send_error(w, &w->coord, TERN_ENOMEM, f->step_id, "out of memory for the reply"); return; }
        if (lb + eb > w->logits_cap) w->logits = grown, w->logits_cap = lb + eb;
        memcpy((uint8_t *)w->logits + lb, w->embd_out, eb);
        frame = w->logits;
    }
    if (tp_send(w->in, &w->coord, &out, lb + eb ? frame : NULL, lb + eb, err,
                sizeof err) < 0)
        log_e("cannot send step %llu's tokens to the coordinator: %s", (unsigned long long)f->step_id, err);
}

/* ---- slot save / restore: a slot's KV rows out of and into this stage (KvRead, KvWrite) --- */

static Tern__KvType kv_wire(int kv_type) {
    return kv_type == KV_F32 ? TERN__KV_TYPE__KV_F32 : kv_type == KV_Q8_0 ? TERN__KV_TYPE__KV_Q8_0 : TERN__KV_TYPE__KV_F16;
}

/* the size of this stage's rows of the request (slot, positions) as a frame in *out, and with
 * room 1 that much room in w->kv_buf. 0, or <0 with msg (bad slot or count, no layers, no memory) */
static int kv_frame(worker_t *w, const tp_peer_t *from, uint32_t seq, uint32_t n, int room, size_t *out, char *msg,
                    size_t cap) {
    if (!w->loaded) return err_set(msg, cap, TERN_ENOTFOUND, "%s: KV rows asked of a worker that holds no layers", w->name);
    if (from->id_len != w->loader.id_len || memcmp(from->id, w->loader.id, from->id_len))   /* they are a sequence's text */
        return err_set(msg, cap, TERN_EAUTH, "%s: KV rows are only for the coordinator that loaded this stage, not %s",
                       w->name, from->name);
    if (seq >= (uint32_t)w->st.cfg.n_seq || !n || n > (uint32_t)w->st.cfg.n_ctx)
        return err_set(msg, cap, TERN_EINVAL, "%s: KV rows [0, %u) of slot %u: this stage has %d slots of %d positions",
                       w->name, n, seq, w->st.cfg.n_seq, w->st.cfg.n_ctx);
    size_t need = (size_t)(w->st.cfg.last - w->st.cfg.first + 1) * 2 * n * stage_kv_row(&w->st);
    if (room && need > w->kv_cap) {
        tern_free(w->kv_buf);
        w->kv_cap = (w->kv_buf = tern_alloc(need)) ? need : 0;
        if (!w->kv_buf) return err_set(msg, cap, TERN_ENOMEM, "%s: out of memory for %zu bytes of KV rows", w->name, need);
    }
    *out = need;
    return 0;
}

static void on_kv_read(worker_t *w, tp_msg_t *rx) {
    const Tern__KvRead *q = rx->msg->kv_read;
    char err[256], msg[600];
    size_t bytes = 0;
    int rc = kv_frame(w, &rx->from, q->seq_id, q->n_pos, 1, &bytes, msg, sizeof msg);
    if (rc == 0 && (rc = stage_kv_io(&w->st, (int)q->seq_id, (int)q->n_pos, w->kv_buf, 0, err, sizeof err)) < 0)
        snprintf(msg, sizeof msg, "%s: %s", w->name, err);
    if (rc < 0) { send_error(w, &rx->from, rc, 0, msg); return; }
    Tern__Msg m = TERN__MSG__INIT;
    Tern__KvData d = TERN__KV_DATA__INIT;
    d.seq_id = q->seq_id, d.n_pos = q->n_pos;
    d.first_layer = (uint32_t)w->st.cfg.first, d.last_layer = (uint32_t)w->st.cfg.last;
    d.kv_type = kv_wire(w->st.cfg.kv_type);
    d.row_bytes = stage_kv_row(&w->st);
    m.body_case = TERN__MSG__BODY_KV_DATA;
    m.kv_data = &d;
    if (tp_send(w->in, &rx->from, &m, w->kv_buf, bytes, err, sizeof err) < 0) {   /* e.g. past the frame limit */
        snprintf(msg, sizeof msg, "%s: cannot send %zu bytes of KV rows: %s", w->name, bytes, err);
        send_error(w, &rx->from, TERN_EIO, 0, msg);
    }
}

/* KvWrite: everything is checked against this stage (transport.c checked the frame's size
 * against the header) before a byte of the cache changes */
static void on_kv_write(worker_t *w, tp_msg_t *rx) {
    const Tern__KvData *d = rx->msg->kv_write;
    char err[256], msg[600];
    size_t bytes = 0;
    int rc = kv_frame(w, &rx->from, d->seq_id, d->n_pos, 0, &bytes, msg, sizeof msg);
    if (rc == 0 && (d->first_layer != (uint32_t)w->st.cfg.first || d->last_layer != (uint32_t)w->st.cfg.last ||
                    d->kv_type != kv_wire(w->st.cfg.kv_type) || d->row_bytes != stage_kv_row(&w->st) ||
                    rx->tensor_bytes != bytes))
        rc = err_set(msg, sizeof msg, TERN_EINVAL, "%s: KV rows for layers [%u, %u], kv type %d, %llu-byte rows: this "
                     "stage holds layers [%d, %d], kv type %d, %zu-byte rows", w->name, d->first_layer, d->last_layer,
                     (int)d->kv_type, (unsigned long long)d->row_bytes, w->st.cfg.first, w->st.cfg.last,
                     (int)kv_wire(w->st.cfg.kv_type), stage_kv_row(&w->st));
    /* the frame lives in rx's own buffer (tp_msg_t), which kv_io only reads when writing */
    if (rc == 0 && (rc = stage_kv_io(&w->st, (int)d->seq_id, (int)d->n_pos, (uint8_t *)rx->tensor, 1, err, sizeof err)) < 0)
        snprintf(msg, sizeof msg, "%s: %s", w->name, err);
    if (rc < 0) { send_error(w, &rx->from, rc, 0, msg); return; }
    Tern__Msg m = TERN__MSG__INIT;
    Tern__KvDone k = TERN__KV_DONE__INIT;
    k.seq_id = d->seq_id, k.n_pos = d->n_pos;
    m.body_case = TERN__MSG__BODY_KV_DONE;
    m.kv_done = &k;
    if (tp_send(w->in, &rx->from, &m, NULL, 0, err, sizeof err) < 0) log_e("cannot answer a KV write: %s", err);
}

static void on_heartbeat(worker_t *w, tp_msg_t *rx) {
    char err[256];
    tp_answer_heartbeat(w->in, rx, err, sizeof err);
}

static void on_signal(int sig) { (void)sig; g_stop = 1; }

/* The coordinator (or a heartbeat link of it) spoke: it is alive. */
static int from_coordinator(const worker_t *w, const tp_msg_t *rx) {
    int bc = rx->msg->body_case;
    if (bc == TERN__MSG__BODY_HEARTBEAT || bc == TERN__MSG__BODY_HELLO || bc == TERN__MSG__BODY_LOAD_SHARD ||
        bc == TERN__MSG__BODY_SHUTDOWN)
        return 1;
    return w->have_coord && rx->from.id_len == w->coord.id_len && !memcmp(rx->from.id, w->coord.id, w->coord.id_len);
}

/* A loaded worker whose coordinator went silent frees its shard and waits to be used again. */
static void check_coordinator(worker_t *w) {
    if (!w->loaded || w->hb_timeout_ms <= 0) return;
    double silent = time_now() - w->coord_seen;
    if (silent * 1000 <= w->hb_timeout_ms) return;
    log_w("coordinator %s silent for %.1f s: freeing layers [%d, %d] and waiting to be used again", w->coord.name, silent,
          w->st.cfg.first, w->st.cfg.last);
    stage_free(&w->st);
    w->loaded = 0;
    w->have_coord = 0;
    tp_close(&w->next);
}

static int worker_open(worker_t *w, const worker_cfg_t *cfg, char *err, size_t errlen) {
    int rc;
    w->cfg = cfg;
    int threads = cfg->threads > 0 ? cfg->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (!(w->tp = tpool_new(threads))) return err_set(err, errlen, TERN_ENOMEM, "cannot start %d threads", threads);
    if (cfg->threads_batch > 0 && cfg->threads_batch != threads && !(w->tp_batch = tpool_new(cfg->threads_batch)))
        return err_set(err, errlen, TERN_ENOMEM, "cannot start %d threads", cfg->threads_batch);
    if (cfg->model) {
        if ((rc = model_id_compute(cfg->model, &w->model_size, w->model_hash, err, errlen)) < 0) return rc;
        if ((rc = gguf_open_ex(&w->g, cfg->model, cfg->no_mmap ? GGUF_NO_MMAP : 0, err, errlen)) < 0) return rc;
    }
    if (cfg->cuda && !cfg->embedded) {   /* placement sizes a CUDA worker by its GPU */
        size_t mem = 0;
        double gb = 0;
        char why[256];
        if (cuda_stage_device_info(w->dev_name, sizeof w->dev_name, &mem, &gb, why, sizeof why) == 0) {
            w->dev_mem = mem;
            w->gbps = (float)gb;
        } else {
            log_w("announcing host memory and bandwidth: %s", why);
        }
    }
    /* embedded: the process's other threads would skew the probe, and no placement needs it */
    if (!w->dev_mem && !cfg->embedded) w->gbps = (float)membw_measure(256u << 20, 3, w->tp);
    tp_opts_t o = {0};
    o.curve = cfg->curve;
    if ((rc = tp_listen(&w->in, cfg->listen, &o, err, errlen)) < 0) return rc;
    if (cfg->name) snprintf(w->name, sizeof w->name, "%s", cfg->name);
    else {
        char host[48] = "worker";
        gethostname(host, sizeof host - 1);
        const char *ep = tp_endpoint(w->in), *colon = strrchr(ep, ':');
        snprintf(w->name, sizeof w->name, "%s:%s", host, colon ? colon + 1 : ep);
    }
    return 0;
}

static void worker_close(worker_t *w) {
    if (w->loaded) stage_free(&w->st);
    tp_close(&w->next);
    tp_close(&w->in);
    gguf_close(&w->g);
    tpool_destroy(&w->tp);
    tpool_destroy(&w->tp_batch);
    tern_free(w->h);
    free(w->seq); free(w->pos); free(w->tok); free(w->smp); free(w->out_tok); free(w->out_lp); free(w->seq_u);
    free(w->tgt_lp); free(w->emf);
    free(w->shift);
    free(w->copy);
    free(w->logits);
    w->logits = NULL, w->logits_cap = 0;
    tern_free(w->embd_out);
    tern_free(w->kv_buf);
    if (!w->cfg->embedded) tp_term();
}

/* The loop: messages in arrival order (those stashed during a step first) until a Shutdown,
 * a signal, the owner's stop flag or the idle limit. */
static void worker_serve(worker_t *w) {
    const worker_cfg_t *cfg = w->cfg;
    char err[512];
    tp_msg_t rx;
    tp_msg_init(&rx);
    double last = time_now();
    for (int i = 0; i < WL_STASH; i++) tp_msg_init(&w->stash[i]);
    while (!g_stop && !w->quit && !(w->stop && *w->stop)) {
        tp_msg_t *cur = &rx;
        int rc;
        if (w->st_n) {   /* what came during the last step first, in arrival order */
            cur = &w->stash[w->st_head];
            w->st_head = (w->st_head + 1) % WL_STASH;
            w->st_n--;
            rc = 0;
        } else {
            rc = tp_recv(w->in, &rx, w->orphan_until ? 20 : WL_POLL_MS, err, sizeof err);
        }
        tell_no_layers(w);
        if (rc == TERN_ETIMEOUT) {   /* nothing queued: only now is silence real (not a long step) */
            check_coordinator(w);
            if (cfg->idle_exit_ms && (time_now() - last) * 1000 > cfg->idle_exit_ms) break;
            continue;
        }
        if (rc == TERN_ECANCEL) { log_e("%s", err); break; }   /* the transport is gone */
        if (rc < 0) { log_w("%s", err); continue; }
        last = time_now();
        if (from_coordinator(w, cur)) w->coord_seen = last;
        switch (cur->msg->body_case) {
        case TERN__MSG__BODY_HELLO: on_hello(w, cur); break;
        case TERN__MSG__BODY_LOAD_SHARD: on_load(w, cur); break;
        case TERN__MSG__BODY_FORWARD: on_forward(w, cur); break;
        case TERN__MSG__BODY_HEARTBEAT: on_heartbeat(w, cur); break;
        case TERN__MSG__BODY_FREE_SEQUENCE: break;
        case TERN__MSG__BODY_KV_READ: on_kv_read(w, cur); break;
        case TERN__MSG__BODY_KV_WRITE: on_kv_write(w, cur); break;
        case TERN__MSG__BODY_SHUTDOWN:
            log_msg(w->cfg->embedded ? LOG_D : LOG_I, "shutdown from %s: %s", cur->from.name, cur->msg->shutdown->reason ? cur->msg->shutdown->reason : "");
            w->quit = 1;
            break;
        default:
            log_w("ignoring %s from %s", tp_body_name(cur->msg->body_case), cur->from.name);
        }
    }
    for (int i = 0; i < WL_STASH; i++) tp_msg_free(&w->stash[i]);
    tp_msg_free(&rx);
}

static void worker_init(worker_t *w) {
    memset(w, 0, sizeof *w);
    const char *tdelay = getenv("TERN_TEST_BLOCK_DELAY_MS");
    w->test_block_delay_us = tdelay ? atoi(tdelay) * 1000 : 0;
}

int worker_loop_run(const worker_cfg_t *cfg, char *err, size_t errlen) {
    worker_t w;
    worker_init(&w);
    int rc = worker_open(&w, cfg, err, errlen);
    if (rc < 0) { worker_close(&w); return rc; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;   /* no SA_RESTART: a signal cuts the wait short */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    char tb[48] = "";
    if (w.tp_batch) snprintf(tb, sizeof tb, " (%d for prompts)", tpool_size(w.tp_batch));
    log_i("%s listening on %s (%d threads%s, %s, %.1f GB/s%s%s%s%s%s%s)", w.name, tp_endpoint(w.in), tpool_size(w.tp), tb,
          isa_name(isa_current()), w.gbps, w.dev_mem ? ", GPU " : "", w.dev_mem ? w.dev_name : "",
          cfg->model ? ", model " : "", cfg->model ? cfg->model : "", cfg->no_mmap ? ", --no-mmap" : "",
          cfg->mlock ? ", --mlock" : "");
    /* one line on stdout for scripts that wait for readiness */
    printf("ready %s\n", tp_endpoint(w.in));
    fflush(stdout);
    worker_serve(&w);
    log_i("%s stopped", w.name);
    worker_close(&w);
    g_stop = 0;
    return 0;
}

/* ---- embedded: the loop on a thread ---------------------------------------------------- */

struct worker_thread {
    pthread_t th;
    worker_cfg_t cfg;
    char *listen, *model, *name;   /* cfg's strings, owned */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state;                     /* 0 starting, 1 listening, <0 could not start */
    char err[512];
    atomic_int stop;
};

static void *worker_thread_main(void *arg) {
    worker_thread_t *t = arg;
    worker_t w;
    worker_init(&w);
    w.stop = &t->stop;
    char err[512];
    int rc = worker_open(&w, &t->cfg, err, sizeof err);
    if (rc == 0)
        log_d("%s listening on %s (embedded, %d threads)", w.name, tp_endpoint(w.in), tpool_size(w.tp));
    pthread_mutex_lock(&t->mu);
    if (rc < 0) snprintf(t->err, sizeof t->err, "%s", err);
    t->state = rc < 0 ? rc : 1;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (rc == 0) worker_serve(&w);
    worker_close(&w);
    return NULL;
}

static void worker_thread_free(worker_thread_t *t) {
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t->listen); free(t->model); free(t->name);
    free(t);
}

int worker_thread_start(worker_thread_t **out, const worker_cfg_t *cfg, char *err, size_t errlen) {
    *out = NULL;
    worker_thread_t *t = calloc(1, sizeof *t);
    if (!t) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    t->cfg = *cfg;
    t->cfg.embedded = 1;
    t->cfg.idle_exit_ms = 0;
    t->listen = strdup(cfg->listen ? cfg->listen : "");
    t->model = cfg->model ? strdup(cfg->model) : NULL;
    t->name = cfg->name ? strdup(cfg->name) : NULL;
    if (!t->listen || (cfg->model && !t->model) || (cfg->name && !t->name)) {
        worker_thread_free(t);
        return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    }
    t->cfg.listen = t->listen, t->cfg.model = t->model, t->cfg.name = t->name;
    /* signals stay with the process's own threads (Ctrl-C in chat, SIGTERM in serve): the
     * worker thread and the pool threads it starts inherit this mask */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int prc = pthread_create(&t->th, NULL, worker_thread_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (prc != 0) {
        worker_thread_free(t);
        return err_set(err, errlen, TERN_ENOMEM, "cannot start a worker thread");
    }
    pthread_mutex_lock(&t->mu);
    while (!t->state) pthread_cond_wait(&t->cv, &t->mu);
    int rc = t->state;
    pthread_mutex_unlock(&t->mu);
    if (rc < 0) {
        err_set(err, errlen, rc, "%s", t->err);
        pthread_join(t->th, NULL);
        worker_thread_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void worker_thread_stop(worker_thread_t **pt) {
    if (!pt || !*pt) return;
    worker_thread_t *t = *pt;
    t->stop = 1;
    /* wake it now rather than at its next poll (a failure only costs that wait) */
    char err[256];
    tp_send_shutdown(t->listen, "the embedded engine is done", 100, err, sizeof err);
    pthread_join(t->th, NULL);
    worker_thread_free(t);
    *pt = NULL;
}
