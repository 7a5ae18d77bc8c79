/* pipeline: the chain of stages as the scheduler sees it — submit a step (tokens of several
 * sequences with their embeddings), later collect the sampled tokens. Implementations: local
 * (stages in this process) and cluster (stages in workers behind a transport). Several steps
 * may be in flight when the implementation allows it (max_inflight). */
#ifndef TERN_PIPELINE_H
#define TERN_PIPELINE_H
#include <stddef.h>
#include <stdint.h>
#include "worker/sampler.h"

/* A context shift (llama.cpp's): before the step's tokens, slot seq's cache drops positions
 * [keep, keep + discard) and moves positions [keep + discard, n_past) down by discard — keys
 * re-rotated for their new positions (RoPE), values moved as they are — so the slot then holds
 * n_past - discard positions. 0 <= keep, 0 < discard, keep + discard <= n_past <= n_ctx. */
typedef struct step_shift {
    int seq, keep, discard, n_past;
} step_shift_t;

/* A KV copy (llama.cpp's llama_memory_seq_cp): before the step's shifts and tokens, positions
 * [0, n) of slot src's keys and values become slot dst's in every layer of every stage (a prompt
 * evaluated once for several sequences). Only the cache: dst's sampler is seq_start's. src != dst,
 * 1 <= n <= n_ctx, n <= the positions src has had written; a slot is copied into at most once a
 * step, and never both copied into and copied from. */
typedef struct step_copy {
    int src_slot, dst_slot, n;
} step_copy_t;

typedef struct step {
    uint64_t id;
    int n;                 /* tokens */
    int32_t *tokens;       /* (n,) input token ids */
    int *seq, *pos;        /* (n,) slot, position */
    uint8_t *sample;       /* (n,) sample after this token */
    float *h;              /* (n, n_embd) embeddings in; may be overwritten */
    int n_out;             /* filled on completion: sampled tokens, in order of sample[] */
    int32_t *out_tok;
    float *out_lp;
    /* Optional (NULL: not wanted): room for (n, SAMPLER_TOP_MAX) alternatives; on completion
     * n_top per sampled token (the most any sampled sequence asked for, sampler_params_t
     * top_logprobs), row j = out_tok[j]'s, stride n_top, best first, padded with id -1 */
    int n_top;
    int32_t *out_top;
    float *out_top_lp;
    /* Optional (NULL: not wanted; Forward.want_logits): room for (n_out, n_vocab); on completion the
     * logits of each sampled token's row, in order of sample[], as the head made them (before
     * penalties, biases, a grammar's mask) — KL divergence; rows go over the network as f32 */
    float *out_logits;
    /* Optional (NULL: none; teacher forcing for perplexity and prompt logprobs): target[i] >= 0
     * asks for log p(target[i] | the sequence up to token i); on completion out_target_lp (room
     * for n) holds one per such token, in token order, n_scored of them */
    const int32_t *target;
    double *out_target_lp;
    int n_scored;
    /* Optional: room for (n, SAMPLER_TOP_MAX) alternatives of the scored tokens; on completion
     * n_target_top per scored token (stride n_target_top, best first, padded with id -1) */
    int n_target_top;
    int32_t *out_target_top;
    float *out_target_top_lp;
    /* Optional (NULL: none; grammars): per slot (n_seq,), NULL or the bitmap of the tokens that
     * slot's sample in this step may take ((n_vocab + 7) / 8 bytes, bit t = token t, grammar.h) */
    const uint8_t *const *allow;
    /* Optional (n_shift 0: none): context shifts every stage applies before this step's tokens,
     * in order (at most one per slot) */
    int n_shift;
    const step_shift_t *shift;
    /* Optional (n_copy 0: none): KV copies every stage applies before the shifts, in order */
    int n_copy;
    const step_copy_t *copy;
    /* Optional (NULL: none; embeddings): embd[i] != 0 asks the last stage for token i's final
     * hidden state after the output norm (before the lm head); on completion out_embd (room for
     * (n, n_embd)) holds one row per such token, in token order, n_embd_out of them */
    const uint8_t *embd;
    float *out_embd;
    int n_embd_out;
    int rc;                /* <0: the step failed (err says why) */
    char err[256];
} step_t;

typedef struct pipeline pipeline_t;
typedef struct pipeline_ops {
    int (*seq_start)(pipeline_t *p, int slot, const sampler_params_t *sp);
    int (*submit)(pipeline_t *p, step_t *s);
    /* waits for the oldest submitted step; returns it (rc/err filled) or NULL on timeout */
    step_t *(*wait)(pipeline_t *p, int timeout_ms);
    void (*destroy)(pipeline_t *p);
    /* Optional (NULL: failures are final). Called after a submit failed or a waited step came
     * back with rc < 0 (why: its error). The pipeline forgets every step in flight and rebuilds
     * itself from the stages still alive (cluster: re-places the layers, reloads the shards):
     * 0 = it serves again, but every sequence's state (KV cache, sampler) is gone and the caller
     * replays them from position 0; <0 = it cannot serve (the reason in err). */
    int (*recover)(pipeline_t *p, const char *why, char *err, size_t errlen);
    /* Optional: the stages' state as one JSON object (text) in buf, for /health; callable
     * from any thread. Returns 1 when the pipeline can serve, 0 when it cannot. */
    int (*status)(pipeline_t *p, char *buf, size_t cap);
    /* Optional (NULL: this pipeline cannot; slot save / restore). Only while no step is in flight.
     * kv_read: slot's keys and values of positions [0, n) of every layer of the model into buf, as
     * (n_layer, 2, n, row) bytes: layer il's n key rows, then its n value rows, a row being one
     * position's (kv_dim,) elements as the caches store them (kv_type: enum kv_type, kernels/ops.h;
     * row: its bytes) — whatever the split of the layers into stages. kv_write: buf into the slot
     * (rows from n on are left as they are; a stage that fails may have taken some rows: the
     * caller forgets the slot's cache then). kv_type and row must be the stages' (else TERN_EINVAL).
     * 0 or <0 with err. */
    int (*kv_read)(pipeline_t *p, int slot, int n, int kv_type, size_t row, uint8_t *buf, char *err, size_t errlen);
    int (*kv_write)(pipeline_t *p, int slot, int n, int kv_type, size_t row, const uint8_t *buf, char *err,
                    size_t errlen);
} pipeline_ops_t;

struct pipeline {
    const pipeline_ops_t *ops;
    int max_inflight;      /* steps that may be submitted before a wait */
    int n_embd, n_vocab;
    size_t weight_bytes;   /* bytes of weights read per decode step across all stages */
};

static inline void pipeline_destroy(pipeline_t **p) {
    if (p && *p) { (*p)->ops->destroy(*p); *p = 0; }
}

#endif
