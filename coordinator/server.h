/* server: `tern serve`'s OpenAI-compatible HTTP API (libmicrohttpd, one thread per connection;
 * HTTPS through its GnuTLS when given a key and certificate) over one engine thread that owns
 * the scheduler: requests wait in a queue, join free slots at token boundaries (continuous
 * batching) and get their tokens back through per-request queues. Endpoints: /health,
 * /v1/models, /v1/completions, /v1/chat/completions (streamed as server-sent events),
 * /v1/embeddings (with --embeddings), /tokenize, /detokenize,
 * /metrics, and llama-server's extras: the web UI page at /, /props and /slots (server_info.c).
 * Not here: flags (cli_serve.c), request JSON (server_req.c), model loading (api.c). */
#ifndef TERN_SERVER_H
#define TERN_SERVER_H
#include <stddef.h>
#include "tern.h"
#include "worker/sampler.h"

typedef struct server_cfg {
    const char *host;        /* address to bind (default 127.0.0.1) */
    int port;                /* 0: any free port (see server_port) */
    const char *api_key;     /* Bearer key required on every route but /health; NULL: open */
    int timeout_s;           /* per request (0: none) */
    int metrics;             /* serve /metrics */
    size_t max_body;         /* request body limit in bytes */
    int max_tokens;          /* cap on tokens generated per request (0: context only) */
    int max_queue;           /* requests waiting for a slot before 503 */
    const char *model_name;  /* id shown by /v1/models and in replies */
    int seed_fixed;          /* requests without a seed use the default one (else each gets its own) */
    int no_cache_prompt;     /* never start a prompt on a slot's cached tokens (sched_set_prefix_cache) */
    const char *grammar;     /* GBNF for requests that name none of their own (--grammar, -j); NULL: free */
    const char *cors_origin; /* Access-Control-Allow-Origin of every reply, and OPTIONS preflights
                              * answered (browser clients); NULL or "": none. Default "*" */
    int embeddings;          /* serve /v1/embeddings (--embeddings); else it answers 501 */
    int pooling;             /* SCHED_POOL_MEAN / _LAST / _CLS (--pooling; default mean) */
    int n_keep;              /* with --context-shift: the n_keep of requests that give none
                              * (tern_sampling.n_keep; -1: the whole prompt) */
    int no_webui;            /* GET / answers 404 instead of the web UI page */
    int no_slots;            /* GET /slots answers 501 (llama.cpp's --no-slots) */
    const char *model_path;  /* shown by /props (NULL: "") */
    int spm_infill;          /* /infill puts the suffix before the prefix (llama.cpp's --spm-infill) */
    long cache_ram_mib;      /* RAM prompt cache (--cache-ram, sched_set_ram_cache): MiB, 0 off, -1 no limit */
    double slot_sim;         /* --slot-prompt-similarity (sched_set_slot_similarity): [0, 1], 0 off */
    const char *slot_save_path; /* POST /slots/{id}?action=save|restore|erase read and write files
                                 * here (--slot-save-path); NULL: those answer 501 */
    const char *tls_key;     /* PEM private key text (not a file name); with tls_cert the server
                              * speaks HTTPS only. NULL: plain HTTP. Kept until server_destroy */
    const char *tls_cert;    /* PEM certificate (chain) text for tls_key */
    const char *tls_key_password; /* decrypts an encrypted tls_key; NULL: the key is plain */
    int reasoning_format;    /* REASONING_* (reasoning.h): chat replies' thinking as
                              * reasoning_content (--reasoning-format; default auto) */
    int reasoning_budget;    /* -1: think freely; 0: the template is told enable_thinking = false;
                              * N > 0: at most N tokens of thinking, then </think> is forced
                              * (--reasoning-budget; a request's reasoning_budget over it) */
    const char *chat_template_kwargs; /* JSON object text: variables for every request's Jinja
                              * template, under the request's own (--chat-template-kwargs); NULL: none */
} server_cfg_t;

typedef struct server server_t;

void server_cfg_default(server_cfg_t *c);
/* cfg->chat_template_kwargs parsed (json_t * object, new reference) into *out (NULL when not
 * given); 0 or TERN_EINVAL with a one-line reason (not JSON, not an object, enable_thinking not
 * a bool) */
int server_kwargs_parse(const char *text, void **out, char *err, size_t errlen);
/* Binds and starts answering (/health says 503 until server_attach). 0 or <0 with err; with
 * TLS, a key or certificate GnuTLS refuses, or a libmicrohttpd without TLS, is TERN_EINVAL
 * (a port that cannot be bound is TERN_EIO). */
int server_start(server_t **out, const server_cfg_t *cfg, char *err, size_t errlen);
int server_port(const server_t *s);   /* the bound port */
/* Hands the loaded model to the server (not owned; keep it until server_destroy) and starts
 * the engine thread; sp: default sampling for requests that do not set their own. */
int server_attach(server_t *s, tern_model *m, const sampler_params_t *sp, char *err, size_t errlen);
/* Graceful stop: refuse new requests and close the listener, let in-flight requests finish for
 * up to grace_s seconds, then end the rest with an error and stop the engine thread. */
void server_shutdown(server_t *s, double grace_s);
/* ends every in-flight request now (with an error) without waiting; safe from any thread */
void server_abort(server_t *s);
void server_destroy(server_t **s);

#endif
