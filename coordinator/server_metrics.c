/* server_metrics: see server_metrics.h. Names follow llama.cpp's server (llamacpp:*) in
 * spirit, under a tern_ prefix, with the usual _total / _seconds suffixes. */
#include "coordinator/server_metrics.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double g_bounds[SERVER_HIST_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,    1,     2.5,  5,     10,  30};

void server_metrics_init(server_metrics_t *m, int n_slots) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    m->n_slots = n_slots;
}

void server_metrics_free(server_metrics_t *m) { pthread_mutex_destroy(&m->mu); }

void server_hist_observe(server_hist_t *h, double s) {
    int b = 0;
    while (b < SERVER_HIST_BUCKETS && s > g_bounds[b]) b++;
    h->count[b]++;
    h->n++;
    h->sum += s;
}

typedef struct sbuf { char *p; size_t len, cap; int oom; } sbuf_t;

static void put(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf_t *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) { b->oom = 1; return; }
        if ((size_t)n < b->cap - b->len) { b->len += (size_t)n; return; }
        size_t cap = b->cap * 2 + (size_t)n;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
}

static void metric(sbuf_t *b, const char *name, const char *type, const char *help, double v) {
    put(b, "# HELP tern_%s %s\n# TYPE tern_%s %s\ntern_%s %.17g\n", name, help, name, type, name, v);
}

static void hist(sbuf_t *b, const char *name, const char *help, const server_hist_t *h) {
    put(b, "# HELP tern_%s %s\n# TYPE tern_%s histogram\n", name, help, name);
    unsigned long long cum = 0;
    for (int i = 0; i < SERVER_HIST_BUCKETS; i++) {
        cum += h->count[i];
        put(b, "tern_%s_bucket{le=\"%g\"} %llu\n", name, g_bounds[i], cum);
    }
    cum += h->count[SERVER_HIST_BUCKETS];
    put(b, "tern_%s_bucket{le=\"+Inf\"} %llu\ntern_%s_sum %.17g\ntern_%s_count %llu\n", name, cum, name, h->sum,
        name, h->n);
}

char *server_metrics_render(server_metrics_t *m) {
    sbuf_t b = {malloc(4096), 0, 4096, 0};
    if (!b.p) return NULL;
    pthread_mutex_lock(&m->mu);
    metric(&b, "requests_total", "counter", "generation requests received", (double)m->requests_total);
    metric(&b, "requests_errors_total", "counter", "generation requests that failed", (double)m->requests_errors);
    metric(&b, "requests_cancelled_total", "counter", "generation requests cancelled (client gone, timeout)",
           (double)m->requests_cancelled);
    metric(&b, "requests_processing", "gauge", "sequences being generated now", m->running);
    metric(&b, "requests_deferred", "gauge", "requests waiting for a free slot", m->waiting);
    metric(&b, "slots", "gauge", "concurrent sequence slots (-np)", m->n_slots);
    metric(&b, "prompt_tokens_total", "counter", "prompt tokens processed", (double)m->prompt_tokens);
    metric(&b, "prompt_tokens_cached_total", "counter", "prompt tokens taken from a slot's cache instead",
           (double)m->prompt_tokens_cached);
    metric(&b, "tokens_predicted_total", "counter", "tokens generated", (double)m->gen_tokens);
    metric(&b, "prompt_seconds_total", "counter", "engine time in steps with prompt tokens", m->prompt_seconds);
    metric(&b, "tokens_predicted_seconds_total", "counter", "engine time in decode-only steps", m->gen_seconds);
    metric(&b, "prompt_tokens_seconds", "gauge", "average prompt throughput (tokens/s)",
           m->prompt_seconds > 0 ? (double)m->prompt_tokens / m->prompt_seconds : 0);
    metric(&b, "predicted_tokens_seconds", "gauge", "average generation throughput (tokens/s)",
           m->gen_seconds > 0 ? (double)m->gen_tokens / m->gen_seconds : 0);
    metric(&b, "kv_cache_usage_ratio", "gauge", "fraction of the KV cache in use", m->kv_used);
    metric(&b, "lookup_draft_tokens_total", "counter", "draft tokens checked (--lookup)", (double)m->drafted);
    metric(&b, "lookup_draft_tokens_taken_total", "counter", "draft tokens the model confirmed (--lookup)",
           (double)m->drafts_taken);
    metric(&b, "grammar_requests_total", "counter",
           "generation choices held to a grammar (grammar, json_schema, response_format, tools)",
           (double)m->grammar_requests);
    metric(&b, "context_shifts_total", "counter", "times a sequence that filled its context dropped part of it (--context-shift)",
           (double)m->ctx_shifts);
    metric(&b, "kv_copies_total", "counter", "prompt beginnings copied from another slot's KV cache, not computed again",
           (double)m->kv_copies);
    metric(&b, "kv_copied_tokens_total", "counter", "prompt tokens those copies carried (also in prompt_tokens_cached_total)",
           (double)m->kv_copied);
    metric(&b, "prompt_cache_entries", "gauge", "prompts held in the RAM prompt cache (--cache-ram)", (double)m->ram_entries);
    metric(&b, "prompt_cache_bytes", "gauge", "bytes they hold (tokens and keys and values)", (double)m->ram_bytes);
    metric(&b, "prompt_cache_limit_bytes", "gauge", "what they may hold (--cache-ram; 0: off, -1: no limit)", m->ram_limit);
    metric(&b, "prompt_cache_saves_total", "counter", "slots' caches put into the RAM prompt cache", (double)m->ram_saved);
    metric(&b, "prompt_cache_evictions_total", "counter", "entries evicted to make room (least recently used first)",
           (double)m->ram_evicted);
    metric(&b, "prompt_cache_hits_total", "counter", "prompts that began with an entry written back into their slot",
           (double)m->ram_hits);
    metric(&b, "prompt_cache_restored_tokens_total", "counter",
           "prompt tokens those hits carried (also in prompt_tokens_cached_total)", (double)m->ram_restored);
    hist(&b, "time_to_first_token_seconds", "time from request to first generated token", &m->ttft);
    hist(&b, "inter_token_latency_seconds", "time between generated tokens of one request", &m->itl);
    hist(&b, "request_duration_seconds", "time from request to last token", &m->e2e);
    pthread_mutex_unlock(&m->mu);
    if (b.oom) { free(b.p); return NULL; }
    return b.p;
}
