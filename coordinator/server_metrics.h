/* server_metrics: the counters, gauges and latency histograms behind GET /metrics, rendered
 * in the Prometheus text format (version 0.0.4). Thread-safe: HTTP threads and the engine
 * thread update it under its own mutex. Not here: where the numbers come from. */
#ifndef TERN_SERVER_METRICS_H
#define TERN_SERVER_METRICS_H
#include <pthread.h>
#include <stddef.h>

#define SERVER_HIST_BUCKETS 14

typedef struct server_hist {
    unsigned long long count[SERVER_HIST_BUCKETS + 1];   /* per bucket, last = +Inf */
    unsigned long long n;
    double sum;
} server_hist_t;

typedef struct server_metrics {
    pthread_mutex_t mu;
    unsigned long long requests_total, requests_errors, requests_cancelled;
    unsigned long long prompt_tokens, gen_tokens;
    unsigned long long prompt_tokens_cached;   /* prompt tokens a slot's cache spared */
    double prompt_seconds, gen_seconds;     /* engine time in prefill / decode-only steps */
    int running, waiting, n_slots;
    double kv_used;                         /* fraction of all slots' context in use */
    unsigned long long drafted, drafts_taken;   /* --lookup: draft tokens checked, taken */
    unsigned long long grammar_requests;    /* generation requests held to a grammar (schema, tools) */
    unsigned long long ctx_shifts;          /* context shifts (--context-shift) */
    unsigned long long kv_copies, kv_copied;   /* KV copies between slots, and the positions copied */
    unsigned long long ram_entries, ram_bytes;   /* the RAM prompt cache (--cache-ram): now */
    double ram_limit;                       /* its bytes (0: off, -1: no limit) */
    unsigned long long ram_saved, ram_evicted, ram_hits, ram_restored;   /* and so far (tokens restored) */
    server_hist_t ttft, itl, e2e;           /* seconds */
} server_metrics_t;

void server_metrics_init(server_metrics_t *m, int n_slots);
void server_metrics_free(server_metrics_t *m);
void server_hist_observe(server_hist_t *h, double seconds);   /* caller holds m->mu */
/* Prometheus text into a malloc'd NUL-terminated string (NULL: out of memory) */
char *server_metrics_render(server_metrics_t *m);

#endif
