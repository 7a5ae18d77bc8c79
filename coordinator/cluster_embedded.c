/* cluster_embedded: see cluster_embedded.h. A thin wrapper: it starts the worker threads,
 * describes them as a cluster_t with pinned layers, lets cluster_client.c run it, and on
 * destroy stops the threads after the coordinator side is gone. */
#include "coordinator/cluster_embedded.h"
#include "coordinator/cluster_client.h"
#include "coordinator/cluster_file.h"
#include "core/err.h"
#include "core/model_spec.h"
#include "worker/worker_loop.h"
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The workers are threads of this process: they cannot be lost apart from it, so heartbeats
 * only need to be slow enough never to misfire on a loaded machine. */
#define EMB_HB_INTERVAL_MS 60000
#define EMB_HB_TIMEOUT_MS 600000

typedef struct emb {
    pipeline_t base;
    pipeline_t *inner;          /* cluster_client's pipeline */
    worker_thread_t **w;
    int n;
} emb_t;

static int emb_seq_start(pipeline_t *p, int slot, const sampler_params_t *sp) {
    emb_t *e = (emb_t *)p;
    return e->inner->ops->seq_start(e->inner, slot, sp);
}

static int emb_submit(pipeline_t *p, step_t *s) {
    emb_t *e = (emb_t *)p;
    return e->inner->ops->submit(e->inner, s);
}

static step_t *emb_wait(pipeline_t *p, int timeout_ms) {
    emb_t *e = (emb_t *)p;
    return e->inner->ops->wait(e->inner, timeout_ms);
}

static void emb_destroy(pipeline_t *p) {
    emb_t *e = (emb_t *)p;
    /* workers first: the coordinator side ends the process's transport state (tp_term) */
    for (int i = 0; i < e->n; i++) worker_thread_stop(&e->w[i]);
    pipeline_destroy(&e->inner);
    free(e->w);
    free(e);
}

static int emb_kv_read(pipeline_t *p, int slot, int n, int kv_type, size_t row, uint8_t *buf, char *err, size_t errlen) {
    emb_t *e = (emb_t *)p;
    return e->inner->ops->kv_read(e->inner, slot, n, kv_type, row, buf, err, errlen);
}

static int emb_kv_write(pipeline_t *p, int slot, int n, int kv_type, size_t row, const uint8_t *buf, char *err,
                        size_t errlen) {
    emb_t *e = (emb_t *)p;
    return e->inner->ops->kv_write(e->inner, slot, n, kv_type, row, buf, err, errlen);
}

static const pipeline_ops_t g_emb_ops = {emb_seq_start, emb_submit, emb_wait, emb_destroy, NULL, NULL,
                                         emb_kv_read, emb_kv_write};

int cluster_pipeline_new_embedded(pipeline_t **out, const gguf_t *g, const char *model_path, const stage_cfg_t *cfg,
                                  int n_stages, int n_gpu_layers, int threads, char *err, size_t errlen) {
    static atomic_int instance;
    *out = NULL;
    hparams_t hp;
    int rc = hparams_from_gguf(&hp, g, err, errlen);
    if (rc < 0) return rc;
    int cap = n_stages > 0 ? n_stages + 1 : 1;
    int *first = calloc((size_t)cap * 3, sizeof(int)), *last = first + cap, *cuda = last + cap;
    if (!first) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    int n = stage_split(hp.n_layer, n_stages, n_gpu_layers, first, last, cuda, err, errlen);
    if (n < 0) {
        free(first);
        return n;
    }
    emb_t *e = calloc(1, sizeof *e);
    cluster_t cl;
    memset(&cl, 0, sizeof cl);
    if (!e || !(e->w = calloc((size_t)n, sizeof *e->w)) || cluster_init(&cl) < 0 ||
        !(cl.workers = calloc((size_t)n, sizeof *cl.workers)) || !(cl.name = strdup("embedded"))) {
        rc = err_set(err, errlen, TERN_ENOMEM, "out of memory");
        goto fail;
    }
    e->base.ops = &g_emb_ops;
    e->n = n;
    cl.heartbeat_interval_ms = EMB_HB_INTERVAL_MS;
    cl.heartbeat_timeout_ms = EMB_HB_TIMEOUT_MS;
    cl.quiet = 1;
    int id = atomic_fetch_add(&instance, 1);
    for (int i = 0; i < n; i++) {
        cluster_worker_t *cw = &cl.workers[cl.n_workers++];
        char name[32], ep[96];
        cw->first = first[i];
        cw->last = last[i];
        cw->threads = threads;
        snprintf(name, sizeof name, n == 1 ? "local" : "local%d", i);
        snprintf(ep, sizeof ep, "inproc://tern-embedded-%d-%d", id, i);
        if (!(cw->name = strdup(name)) || !(cw->endpoint = strdup(ep))) {
            rc = err_set(err, errlen, TERN_ENOMEM, "out of memory");
            goto fail;
        }
        worker_cfg_t wc;
        memset(&wc, 0, sizeof wc);
        wc.listen = cw->endpoint;
        wc.model = model_path;
        wc.name = cw->name;
        wc.threads = threads;
        wc.threads_batch = cfg->threads_batch;
        wc.no_mmap = cfg->no_mmap;
        wc.mlock = cfg->mlock;
        wc.cuda = cuda[i];
        if ((rc = worker_thread_start(&e->w[i], &wc, err, errlen)) < 0) goto fail;
    }
    if ((rc = cluster_pipeline_start(&e->inner, g, model_path, &cl, cfg, err, errlen)) < 0) goto fail;
    e->base.max_inflight = e->inner->max_inflight;
    e->base.n_embd = e->inner->n_embd;
    e->base.n_vocab = e->inner->n_vocab;
    e->base.weight_bytes = e->inner->weight_bytes;
    free(first);
    *out = &e->base;
    return 0;
fail:
    free(first);
    cluster_free(&cl);
    if (e) emb_destroy(&e->base);
    return rc;
}
