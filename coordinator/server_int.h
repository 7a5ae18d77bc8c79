/* server_int: the parts of the HTTP server shared by its files — the server struct, a job
 * (one generation request on its way through the engine) and the helpers between them.
 * Private to coordinator/server*.c. */
#ifndef TERN_SERVER_INT_H
#define TERN_SERVER_INT_H
#include "coordinator/engine.h"
#include "coordinator/server.h"
#include "coordinator/reasoning.h"
#include "coordinator/server_metrics.h"
#include "coordinator/server_req.h"
#include "coordinator/server_stop.h"
#include <microhttpd.h>
#include <pthread.h>
#include <stdint.h>

#define SERVER_THINK_COUNT (1 << 30)   /* job_t.rcount's budget: never reached, only counted down */

enum job_state { JOB_QUEUED = 0, JOB_RUNNING = 1, JOB_DONE = 2 };
enum job_cancel { JOB_CANCEL_NONE = 0, JOB_CANCEL_GONE = 1, JOB_CANCEL_TIMEOUT = 2, JOB_CANCEL_SHUTDOWN = 3 };

/* one generated token's log-probability, and where its text lies in the generated text (the
 * detokenizer's output before stop strings cut it): [bstart, bend) in bytes, cstart in
 * characters as the reply shows them (OpenAI's text_offset) */
typedef struct job_lp {
    int32_t token;
    float logprob;
    uint32_t bstart, bend, cstart;
    int n_top;                 /* alternatives at j->top_ids / top_lp + index * j->n_top */
} job_lp_t;

typedef struct job {
    struct job *next;          /* queue link (under srv->mu) */
    struct server *srv;
    int refs;                  /* under srv->mu: HTTP connection, stream reader, engine */
    int kind, stream, include_usage, ignore_eos;
    int api;                   /* SERVER_API_*: the reply's shape (OpenAI's, Anthropic's) */
    int logprobs;              /* the reply carries log-probabilities (j->lp) */
    int tools;                 /* chat with tools: the text is a tool call / response object, read
                                * into the message (streaming: by j->ts as it comes) */
    int tool_fmt;              /* TOOLFMT_* of those calls (toolfmt.h) */
    int reason;                /* chat: the text's <think>...</think> is the reply's reasoning_content
                                * (reasoning.h; the request's or server's reasoning format) */
    int reason_inline;         /* with reason, streaming under deepseek-legacy: the thinking goes
                                * out in the content, between <think> tags (llama.cpp's) */
    int think_tag;             /* reason_inline: 0 no tag out yet, 1 "<think>" out, 2 "</think>" too */
    int think_open;            /* the prompt ended inside <think>: the text starts in the thinking */
    int think_budget;          /* chat: > 0: the thinking's tokens, then </think> is forced (rb) */
    reasoning_budget_t rb;     /* the engine's count of them (engine thread) */
    char *racc;                /* streaming with reason: all the text released so far (the HTTP side) */
    size_t racc_len, racc_cap, rsent, csent, rscan;   /* bytes of reasoning / content sent; split's scan */
    int ablk, aidx;            /* Anthropic's stream with reason: the open block (0 none, 1 thinking,
                                * 2 text) and its index */
    struct toolstream *ts;     /* streaming a tools reply: its reader (HTTP side, under srv->mu) */
    int anth_block, anth_open; /* Anthropic's stream of it: the open block's index; 0 none open,
                                * 1 a text block, 2 a tool_use block,
                                * 3 a thinking block */
    void *resp_echo;           /* Responses API: the request's fields its Response repeats (json_t *) */
    struct resp_stream *resp;  /* Responses API: the reader of the text into output items (and
                                * its stream events; server_responses.c) */
    reasoning_budget_t rcount; /* Responses API with reason: counts the thinking's tokens (engine
                                * thread; read once done): SERVER_THINK_COUNT - rcount.left */
    int cache_prompt;          /* may start on a slot's cached tokens (the request's "cache_prompt") */
    int n_keep;                /* a context shift keeps this many prompt tokens after the BOS (-1: all) */
    char *grammar;             /* GBNF the output follows (the request's, else the server's), or NULL */
    char *grammar_trigger;     /* non-NULL: grammar is lazy, free text until this (owned) */
    int n_cached;              /* prompt tokens that came from the slot's cache (not fed) */
    int extra;                 /* a choice after the first of its request: not counted as a request */
    int32_t *ids;              /* (n_ids,) prompt */
    int n_ids, max_gen;
    sampler_params_t sp;
    char *stop[SERVER_MAX_STOP];
    int n_stop;
    char id[48];
    long long created;
    /* engine thread only */
    detok_t dt;
    server_stop_t st;
    int seq_id;
    double t_last;
    size_t gen_bytes, gen_chars;   /* the detokenizer's output so far */
    /* under srv->mu */
    pthread_cond_t cv;         /* signalled when the job has news (and its lead's too) */
    struct job *lead;          /* another choice of a request: the request's first job, held by a
                                * reference; the engine signals its cv too, so one wait sees all */
    int state, cancel, finish;
    char *out;                 /* released text: all of it (plain), or not yet sent (stream) */
    size_t out_len, out_cap;
    size_t out_total;          /* bytes of text released so far (all of it, streamed or not) */
    job_lp_t *lp;              /* (lp_cap,) when logprobs: one per generated token but end-of-generation */
    int n_lp, lp_cap;
    int n_top;                 /* alternatives asked per token (top_logprobs; 0 = none) */
    int32_t *top_ids;          /* (lp_cap, n_top) when n_top: each record's alternatives */
    float *top_lp;
    int lp_final;              /* once done: the records that belong to the reply (a prefix of lp;
                                * a stop string drops the tokens from where it starts) */
    int lp_placed;             /* records whose text_offset is known (engine thread) */
    int lp_sent;               /* streaming: records already sent (the HTTP side only) */
    /* echo (completions): the prompt as text, and with logprobs its tokens' records */
    int echo, echo_sent;       /* echo_sent: streaming, the prompt's chunk is out (HTTP side) */
    char *echo_text;           /* the prompt's ids decoded (control tokens: no text) */
    size_t echo_len, echo_chars;
    job_lp_t *plp;             /* (n_ids,) when echo and logprobs: record pos = prompt token pos
                                * (cstart its text_offset; plp[0] has no log-probability) */
    int n_plp;                 /* prompt positions scored so far, + 1 (under srv->mu) */
    int32_t *ptop_ids;         /* (n_ids, n_top) the prompt records' alternatives */
    float *ptop_lp;
    int n_gen;
    int slot;                  /* the slot it runs in (-1 until admitted) */
    int want_slot;             /* /completion's id_slot: the slot it must run in, waiting for it
                                * while busy (-1: any free one) */
    int32_t *toks;             /* (max_gen,) when the request asked for its tokens (/completion's
                                * return_tokens): the generated ids, EOG excluded; n_toks of them */
    int n_toks, toks_sent;     /* toks_sent: streaming, ids already sent (the HTTP side only) */
    float *embd;               /* embeddings: (n_embd,) the pooled vector once done */
    int embd_b64;              /* embeddings: the reply's vector as base64 */
    double t_enq, t_start, t_first, t_end;
    char errmsg[256];
    int err_code;              /* TERN_E* of a SCHED_ERROR (TERN_EPEER: the cluster cannot serve) */
    /* the HTTP side only */
    struct MHD_Connection *conn;
    double deadline;           /* 0: none */
    char *sse;                 /* stream bytes formatted but not yet handed to MHD (the first
                                * choice's job carries the stream of all its request's choices) */
    size_t sse_len, sse_pos, sse_cap;
    int sse_phase;             /* this choice in the stream: 0 start, 1 tokens, 2 its last chunk sent */
} job_t;

/* One slot as GET /slots shows it: a copy that the engine thread (the scheduler's owner)
 * publishes under srv->mu after it admits requests, when a request ends and after every step;
 * HTTP threads read the copies, never the scheduler. */
typedef struct server_slot {
    int active;                /* a request runs in it */
    int id_task;               /* its sequence's id (-1: idle) */
    char request_id[48];       /* the reply's id ("" when idle) */
    int stream;
    int n_prompt;              /* the current (else last) request's prompt tokens */
    int n_prompt_cached;       /* of them, taken from the slot's cache */
    int n_prompt_processed;    /* of the rest, fed so far */
    int n_decoded, max_gen;    /* tokens generated so far; the request's cap */
    int n_cache;               /* tokens whose keys and values the slot holds: a prompt that begins
                                * with them starts after them (0: none, or the cache is off) */
    /* the current (else last) request's sampling (sampler_params_t's scalars) */
    float temp, top_p, min_p, repeat_penalty, freq_penalty, presence_penalty;
    int top_k, repeat_last_n, n_probs;
    uint64_t seed;
    float typical_p, top_n_sigma, xtc_probability, xtc_threshold, dynatemp_range, dynatemp_exponent;
    float mirostat_tau, mirostat_eta, dry_multiplier, dry_base;
    int mirostat, dry_allowed_length, dry_penalty_last_n;
    char samplers[SAMPLER_ORDER_MAX + 1];   /* the chain's order as letters (sampler_order_letters) */
} server_slot_t;

/* POST /slots/{id}?action=...: made by the HTTP thread, run by the engine thread (server_slots.c) */
typedef struct slot_job {
    int action, slot;
    char path[4200];           /* save / restore: DIR/filename */
    pthread_cond_t cv;         /* signalled under srv->mu once done */
    int done, rc, status;      /* status: the HTTP status of a failure */
    int n;                     /* tokens saved / restored / erased */
    uint64_t bytes;            /* the file's */
    double ms;
    char err[512];
} slot_job_t;

struct server {
    server_cfg_t cfg;
    char model_id[256];
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;
    pthread_cond_t engine_cv, idle_cv;
    tern_model *m;             /* NULL while loading */
    sampler_params_t def_sp;
    job_t *qhead, *qtail;      /* waiting for a slot */
    int n_queue, n_inflight;   /* queued; queued + running */
    int n_busy;                /* connections with a job whose reply is not yet fully sent */
    int draining, abort, stop_engine;
    pthread_t engine;
    int engine_started;
    uint64_t next_id;
    double sched_t0_prefill, sched_t0_decode;
    server_metrics_t met;
    server_slot_t *slots;      /* (m->sched.n_seq,) under mu (server_info_publish) */
    slot_job_t *slot_job;      /* a slot action waiting for the engine (under mu; one at a time) */
};

/* server_engine.c */
void *server_engine_main(void *srv);
/* queues jobs[0..n) — a request's choices — all or none (takes one reference each for the
 * engine): 0, or <0 when the slots and the queue cannot take them all (TERN_ENOMEM) / draining */
int server_engine_enqueue(struct server *s, job_t **jobs, int n);
void server_job_unref(struct server *s, job_t *j);   /* caller holds s->mu */

/* server_embd.c: the /v1/embeddings reply of a request's finished jobs[0..k) (caller holds s->mu) */
void *server_embd_reply(struct server *s, job_t *const *jobs, int k);

/* server_gen.c: runs parsed request r (its jobs, then the stream or one reply; r stays the
 * caller's to free); the chat template's text of r's messages (malloc'd; NULL with e) */
enum MHD_Result server_gen_run(struct server *s, struct MHD_Connection *c, server_req_t *r, job_t **job_out);
char *server_gen_chat_text(const tokenizer_t *tok, const server_req_t *r, server_err_t *e);
/* server_gen_chat_text with the server's template variables (enable_thinking) under the
 * request's chat_template_kwargs: the prompt text the server really uses */
char *server_gen_prompt_text(struct server *s, const server_req_t *r, server_err_t *e);

/* server_native.c: llama.cpp's own routes POST /completion and /apply-template; and the shapes
 * server_gen.c uses for /completion's jobs (caller holds s->mu): the reply of finished jobs[0..k)
 * (an object, or an array when k > 1), a stream chunk of text[0..n) and the final chunk */
enum MHD_Result server_native_handle(struct server *s, struct MHD_Connection *c, const char *body, size_t len,
                                     job_t **job_out);
enum MHD_Result server_native_template(struct server *s, struct MHD_Connection *c, const char *body, size_t len);
/* POST /infill: llama-server's fill-in-the-middle (501 when the model has no FIM tokens) */
enum MHD_Result server_native_infill(struct server *s, struct MHD_Connection *c, const char *body, size_t len,
                                     job_t **job_out);
void *server_native_reply(struct server *s, job_t *const *jobs, int k);
void *server_native_chunk(struct server *s, job_t *j, int index, const char *text, size_t n);
void *server_native_final(struct server *s, job_t *j, int index);

/* server_gen.c: the generation routes (and /v1/embeddings, whose inputs run as jobs); returns an
 * MHD result */
enum MHD_Result server_gen_handle(struct server *s, struct MHD_Connection *c, int kind, const char *body,
                                  size_t len, job_t **job_out);
enum MHD_Result server_tok_handle(struct server *s, struct MHD_Connection *c, int kind, const char *body,
                                  size_t len);

/* server_info.c: the web UI page, /props and /slots; an MHD result */
enum MHD_Result server_info_page(struct MHD_Connection *c);
enum MHD_Result server_info_props(struct server *s, struct MHD_Connection *c);
enum MHD_Result server_info_slots(struct server *s, struct MHD_Connection *c);
/* engine thread, caller holds s->mu: copies the scheduler's slots into s->slots */
void server_info_publish(struct server *s);
/* sl's sampling fields from sp */
void server_info_slot_params(server_slot_t *sl, const sampler_params_t *sp);
/* the JSON (json_t *, new reference; NULL on out of memory) of slot sl: llama.cpp's /slots entry,
 * also /props' default_generation_settings. seed_random: the seed is drawn per request (shown
 * as llama.cpp's 4294967295). */
void *server_info_slot_json(const server_slot_t *sl, int id, int n_ctx, int speculative, int seed_random,
                            const char *chat_format);

/* server_slots.c: POST /slots/{id} (id: the text after "/slots/"); and the engine thread's part,
 * between steps (s->mu not held) */
enum MHD_Result server_slots_action(struct server *s, struct MHD_Connection *c, const char *id, const char *body,
                                    size_t len);
void server_slots_run(struct server *s, slot_job_t *sj);

/* server_gen.c: appends j->out to j->racc (j->out emptied; out of memory: kept for the next call),
 * splits all of it (final once j is done) and gives the reasoning [*r, +*nr) and the content
 * [*c, +*nc) not sent yet, counting them sent (j->rsent / j->csent; a split never shrinks). The
 * caller sends them (caller holds s->mu). */
void server_gen_reason_new(job_t *j, const char **r, size_t *nr, const char **c, size_t *nc);

/* server_gen.c: OpenAI's usage (json_t *) of a request's jobs[0..k), n choices per prompt
 * (prompt-major): each prompt's tokens once, its cached_tokens the fewest among its choices
 * (caller holds s->mu) */
void *server_gen_usage(job_t *const *jobs, int k, int n);

/* server_gen.c: appends the event "event: NAME\ndata: JSON(o)\n\n" (o a json_t *, stolen; name NULL:
 * no event line, as OpenAI's chat streams) to j's unsent stream bytes; when o is NULL or does not
 * dump, data OOM instead (under the name "error" when a name is given); out of memory for the
 * bytes: nothing (caller holds s->mu) */
void server_gen_sse_put(job_t *j, const char *name, void *o, const char *oom);

/* server_gen.c, for server_anthropic.c: runs parsed request r (a stream or one reply), as
 * server_gen_handle does after parsing; and the prompt tokens r would have (<0 with e) */
enum MHD_Result server_gen_jobs(struct server *s, struct MHD_Connection *c, server_req_t *r, job_t **job_out);
int server_gen_count(struct server *s, const server_req_t *r, server_err_t *e);

/* server_anthropic.c: POST /v1/messages (count 0) and /v1/messages/count_tokens (count 1); a
 * finished job's Messages reply (json_t *; caller holds s->mu); the stream's next events of
 * job j into its sse buffer (caller holds s->mu; 1: j failed, the caller ends the stream) and
 * the stream's end (e: the error event, or NULL) */
enum MHD_Result server_anthropic_handle(struct server *s, struct MHD_Connection *c, int count, const char *body,
                                        size_t len, job_t **job_out);
void *server_anthropic_reply(struct server *s, const job_t *j);
int server_anthropic_sse(struct server *s, job_t *j);
void server_anthropic_sse_end(job_t *j, const server_err_t *e);

/* server_responses.c: POST /v1/responses; a finished job's Response (json_t *; caller holds s->mu;
 * it reads j's text); the stream's next events of job j into its sse buffer (caller holds s->mu;
 * 1: j failed, the caller ends the stream), the stream's end (e: the error event, or NULL); and
 * frees j's Responses state (job free) */
enum MHD_Result server_responses_handle(struct server *s, struct MHD_Connection *c, const char *body, size_t len,
                                        job_t **job_out);
void *server_responses_reply(struct server *s, job_t *j);
int server_responses_sse(struct server *s, job_t *j);
void server_responses_sse_end(job_t *j, const server_err_t *e);
void server_responses_job_free(job_t *j);

/* server.c */
enum MHD_Result server_reply(struct MHD_Connection *c, int status, const char *ctype, char *body);
void server_cors(struct MHD_Response *r);   /* the CORS header every reply carries (server.c) */
enum MHD_Result server_reply_err(struct MHD_Connection *c, const server_err_t *e);
enum MHD_Result server_reply_json(struct MHD_Connection *c, int status, void *json /* json_t *, stolen */);
int server_conn_gone(struct MHD_Connection *c);

#endif
