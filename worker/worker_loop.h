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
    int threads_given;         /* -t was given: it wins over the cluster file's threads (LoadShard.threads) */
    int threads_batch;         /* -tb: threads of steps with more than one token (0: threads) */
    int no_mmap;               /* --no-mmap: read the shard's tensors into memory, no mapping */
    int mlock;                 /* --mlock: lock the shard's weights (also when LoadShard.mlock asks) */
    uint64_t memory;           /* bytes this worker may use (0: physical memory) */
    int idle_exit_ms;          /* 0: run until Shutdown/signal */
    const tp_curve_t *curve;   /* own key pair + the client keys let in (CURVE on), or NULL */
    const char *keys_dir;      /* CURVE: where the next stage's key is (DIR/<next name>.pub) */
    int fetch;                 /* no model of its own: fetch layers from the coordinator (worker/fetch.h) */
    const char *cache_dir;     /* where fetched weights are kept (by model hash) */
    int cuda;                  /* 1: its layers on GPU 0 whatever the process default (embedded -ngl) */
    int embedded;              /* a thread of the coordinator's process (worker_thread_start): no
                                * signal handlers, no "ready" line, no bandwidth probe, and the
                                * process-wide transport state is left alone */
} worker_cfg_t;

/* runs until Shutdown or SIGINT/SIGTERM; returns 0, or <0 with err when it cannot start */
int worker_loop_run(const worker_cfg_t *cfg, char *err, size_t errlen);
/* asks every running loop of the process to stop (signal-safe) */
void worker_loop_stop(void);

/* The embedded mode: the same loop on a thread of this process, listening on cfg->listen
 * (inproc://NAME). Returns once it listens (0) or could not start (<0, err says why; nothing
 * is left running). cfg is copied, strings included. */
typedef struct worker_thread worker_thread_t;
int worker_thread_start(worker_thread_t **out, const worker_cfg_t *cfg, char *err, size_t errlen);
/* Ends the loop (a Shutdown through its own endpoint, within WL_POLL_MS at worst), joins the
 * thread and frees it; *t is nulled. NULL ok. */
void worker_thread_stop(worker_thread_t **t);

#endif
