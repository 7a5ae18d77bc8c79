/* forward: runs a shard's transformer blocks on a batch of tokens that may belong to different
 * sequences (batched decode) or be one sequence's prompt chunk (prefill micro-batch), and the
 * final norm + lm head for the rows that need logits. All buffers are sized at init for n_max
 * tokens: nothing is allocated per call.
 * Not here: sampling (sampler.c), scheduling, transport. */
#ifndef TERN_FORWARD_H
#define TERN_FORWARD_H
#include "core/tpool.h"
#include "worker/kv_cache.h"
#include "worker/shard.h"

typedef struct forward {
    const shard_t *s;
    kv_cache_t kv;
    tpool_t *tp;            /* not owned; may be NULL */
    tpool_t *tp_batch;      /* not owned: the pool of calls with more than one token row (-tb;
                             * forward_set_batch_pool); NULL: tp. Results do not depend on the size */
    int n_max;              /* tokens per call */
    int n_logits_max;       /* rows of logits per call */
    rope_params_t rope;     /* the model's RoPE (shard_rope) */
    float *xn;              /* (n_max, n_embd)  normed input */
    float *q, *k, *v;       /* (n_max, qdim), (n_max, kvdim) x2 */
    float *att;             /* (n_max, qdim)   attention output */
    float *o;               /* (n_max, n_embd) block output to add */
    float *g, *u;           /* (n_max, n_ff) */
    float *hn;              /* (n_logits_max, n_embd) normed rows for the head */
    float *fused;           /* (n_max, max(qdim+2·kvdim, 2·n_ff)) output of a fused matmul, or NULL */
    float *scores;          /* (threads, n_ctx) attention scratch */
    float *rot;             /* (threads, head_dim) context-shift scratch (kv_cache_shift) */
    void *scratch;          /* mat_mul scratch, max over the shard's mats */
    size_t scratch_bytes;
    void (*tick)(void *ctx); /* optional: called after every block (a worker answers heartbeats
                                during long steps); must not touch this forward */
    void *tick_ctx;
} forward_t;

/* n_ctx positions per sequence, n_seq sequence slots, kv_type (KV_F16/KV_F32). */
int forward_init(forward_t *f, const shard_t *s, int n_ctx, int n_seq, int n_max, int n_logits_max, int kv_type,
                 tpool_t *tp, char *err, size_t errlen);
void forward_free(forward_t *f);
/* -tb: calls with more than one token row run on tp_batch (not owned; NULL: tp), the per-thread
 * scratch grown to its size. 0 or TERN_ENOMEM (then unchanged). */
int forward_set_batch_pool(forward_t *f, tpool_t *tp_batch);
/* h (n, n_embd) in place through layers first..last. seq[i] (slot) and pos[i] (< n_ctx) per
 * token; within one call, tokens of a sequence must have increasing positions. */
void forward_layers(forward_t *f, float *h, int n, const int *seq, const int *pos);
/* The context shift sh (checked by the caller: kv_shift_check) in every layer of this shard's
 * cache: keys re-rotated with the model's RoPE by -discard, values moved (kv_cache_shift). */
void forward_shift(forward_t *f, const kv_shift_t *sh);
/* logits (m, n_vocab) for rows rows[0..m) of h (n, n_embd): final norm + lm head; m <= n_logits_max */
void forward_logits(forward_t *f, const float *h, int m, const int *rows, float *logits);

#endif
