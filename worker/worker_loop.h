/* worker_loop: a worker process's life — listen, answer the coordinator's Hello with this
 * node's facts, load the shard it is given (checking the model file's identity), then serve
 * Forward steps: run the stage and pass hidden states on to the next stage, or, as the last
 * stage, send the sampled tokens to the coordinator. Heartbeats are answered; when the
 * coordinator stays silent past the timeout its LoadShard named, the shard is freed and the
 * worker waits to be used again. A Shutdown or a signal ends the loop. Not here: flag parsing (worker_cli.c). */
#ifndef TERN_WORKER_LOOP_H
#define TERN_WORKER_LOOP_H
#include <stdint.h>
#include "proto/transport.h"

typedef struct worker_cfg {
    const char *listen;        /* endpoint to bind */
    const char *model;         /* local model file, or NULL */
    const char *name;          /* node name (default: hostname:port) */
    int threads;
    uint64_t memory;           /* bytes this worker may use (0: physical memory) */
    int idle_exit_ms;          /* 0: run until Shutdown/signal */
    const tp_curve_t *curve;   /* own key pair + the client keys let in (CURVE on), or NULL */
    const char *keys_dir;      /* CURVE: where the next stage's key is (DIR/<next name>.pub) */
    int fetch;                 /* no model of its own: fetch layers from the coordinator (worker/fetch.h) */
    const char *cache_dir;     /* where fetched weights are kept (by model hash) */
} worker_cfg_t;

/* runs until Shutdown or SIGINT/SIGTERM; returns 0, or <0 with err when it cannot start */
int worker_loop_run(const worker_cfg_t *cfg, char *err, size_t errlen);
/* asks a running loop to stop (signal-safe) */
void worker_loop_stop(void);

#endif
