/* stage: everything one pipeline stage needs to serve Forward steps — its shard, activations
 * and KV cache, and when it is the last stage the samplers of its sequence slots. A step
 * takes hidden states (n, n_embd) for n tokens of any mix of sequences and returns either the
 * new hidden states (middle stages) or the sampled tokens (last stage), and on request the
 * log-probabilities of given next tokens (stage_score: perplexity, prompt logprobs) or the
 * normed final hidden states (stage_embd: embeddings).
 * Used in-process by the embedded engine and by the worker loop behind a transport. */
#ifndef TERN_STAGE_H
#define TERN_STAGE_H
#include "worker/cuda_stage.h"
#include "worker/forward.h"
#include "worker/sampler.h"

#define STAGE_SCORE_ROWS 32   /* rows of logits per lm-head call when scoring targets */

enum stage_device { STAGE_DEV_CPU = 0, STAGE_DEV_CUDA = 1 };

typedef struct stage_cfg {
    int first, last;       /* layer range (inclusive) */
    int has_head;          /* last stage: output norm, lm head, sampler */
    int n_ctx, n_seq;      /* positions per sequence, sequence slots */
    int n_batch;           /* max tokens per forward call (micro-batch) */
    int kv_type;           /* KV_F16 / KV_F32 */
    int head_type;         /* -1 as stored, or TT_Q8_0 / TT_F16 */
    int mat_flags;
    int mlock;             /* --mlock: lock the shard's weights in memory after loading */
    int no_mmap;           /* embedded workers only: open the file with GGUF_NO_MMAP (--no-mmap) */
    int threads_batch;     /* -tb (0: their threads): embedded workers' own; remote workers get it in
                            * LoadShard.threads_batch and use it where they have no -tb of their own */
    int device;            /* STAGE_DEV_CPU, or STAGE_DEV_CUDA: layers (and head) on GPU 0 */
    int rope_set;          /* 1: RoPE base and scaling below, not the file's (--rope-* overrides) */
    float rope_base;
    rope_scaling_t rope;
} stage_cfg_t;

typedef struct stage {
    stage_cfg_t cfg;
    shard_t shard;
    forward_t fwd;
    sampler_t *samplers;   /* (n_seq,) last stage only */
    int *drawn_off;        /* (n_seq,) positions context shifts dropped since the slot's sequence
                            * started: its draws are keyed on pos + this, so a shift does not make
                            * them repeat the draws of the positions it reuses */
    float *logits;         /* (n_logit_rows, n_vocab) */
    int n_logit_rows;      /* max(n_seq, STAGE_SCORE_ROWS) on the last stage */
    void *swork;
    int *rows;             /* (n_batch,) */
    int *hide;             /* (n_logit_rows,) per sampled row: its slot's tokens after it in the step */
    int *slot_tmp;         /* (n_seq,) scratch per slot */
    int n_top;             /* after stage_step: alternatives per sampled token (the most any of
                            * the step's sequences asked for; 0 = none) */
    int32_t *top_ids;      /* (n_logit_rows, SAMPLER_TOP_MAX): row j = sampled token j's alternatives, */
    float *top_lp;         /* n_top of them, stride n_top (padded with id -1 / 0) */
    int score_n_top;       /* after stage_score: alternatives per scored token (the most any of the
                            * scored tokens' sequences asked for, sampler_params_t top_logprobs) */
    int32_t *score_top_ids;   /* (scored, score_n_top), padded with id -1 / 0 */
    float *score_top_lp;
    int score_cap;         /* scored tokens the two above have room for */
    cuda_stage_t *cuda;    /* device == STAGE_DEV_CUDA: the GPU runs forward (fwd unused) */
    cuda_pick_req_t *pick; /* (n_seq,) a CUDA head stage's sampled rows: what the GPU picks */
    cuda_pick_res_t *picked;   /* (n_seq,) and what came of it */
    int32_t *pen_ids;      /* (n_seq · SAMPLER_HIST_MAX,) the rows' penalty ids */
    uint8_t *allow;        /* (n_seq, (n_vocab + 7) / 8) each slot's mask for its next sample, */
    uint8_t *allow_on;     /* (n_seq,) where set (stage_seq_allow); allocated on first use */
    int *kv_fill;          /* (n_seq,) per slot: positions [0, kv_fill) have been written (a step, a
                            * copy or a restore; a shift lowers it): what a copy may read */
} stage_t;

void stage_cfg_default(stage_cfg_t *c);
/* the device stage_cfg_default picks from now on (tern worker --device cuda sets it before the
 * worker loop builds its stages) */
void stage_default_device(int device);
/* How one process splits a model into stages (the embedded engine, and direct stage calls): the
 * first n_gpu_layers layers as one CUDA stage (n_gpu_layers >= n_layer: every layer and the head),
 * then the other layers in n_cpu_stages equal ranges. Fills first/last/cuda[i] for each stage
 * (arrays of n_cpu_stages + 1) and returns the stage count, or TERN_EINVAL when the CPU layers
 * cannot be split n_cpu_stages ways. */
int stage_split(int n_layer, int n_cpu_stages, int n_gpu_layers, int *first, int *last, int *cuda, char *err,
                size_t errlen);
int stage_init(stage_t *st, const gguf_t *g, const stage_cfg_t *cfg, tpool_t *tp, char *err, size_t errlen);
void stage_free(stage_t *st);
/* resets slot `seq` for a new sequence with these sampling params (last stage) */
void stage_seq_start(stage_t *st, int seq, const sampler_params_t *p);
/* The tokens slot seq's next sample may take (a grammar's mask, grammar.h: bit t of bits set =
 * token t allowed; (n_vocab + 7) / 8 bytes), for the next stage_step that samples it: the others'
 * logits become -inf before the penalty and the draw (and the logprobs are those of the masked
 * distribution). Last stage only. 0, TERN_EINVAL (no head, bad slot or size) or TERN_ENOMEM. */
int stage_seq_allow(stage_t *st, int seq, const uint8_t *bits, size_t nbytes);

/* Context shifts before a step (llama.cpp's KV-cache shift; kv_cache.h): sh[0..n) are checked
 * against this stage's slots and context (kv_shift_check: a bad one applies none), then applied
 * in order to every layer of this stage, on the CPU or the GPU. 0, or <0 with err. */
int stage_shift(stage_t *st, const kv_shift_t *sh, int n, char *err, size_t errlen);

/* KV copies before a step (llama.cpp's llama_memory_seq_cp; kv_cache.h): cp[0..n) are checked
 * against this stage's slots, context and what each source slot has had written (kv_copy_check
 * with st->kv_fill: a bad one applies none), then each copies positions [0, n) of src's keys and
 * values into dst in every layer of this stage, on the CPU or the GPU; dst then counts n positions
 * written. The samplers are left alone (dst's is the scheduler's: stage_seq_start). Applied before
 * the step's context shifts. 0, or <0 with err. */
int stage_copy(stage_t *st, const kv_copy_t *cp, int n, char *err, size_t errlen);

/* Bytes of one position's (kv_dim,) KV cache row of this stage (its cache's kv_type). */
size_t stage_kv_row(const stage_t *st);
/* Slot save / restore (Kv* messages): slot seq's keys and values of positions [0, n) of every layer
 * of this stage, as buf (nl, 2, n, stage_kv_row) bytes: for each layer first..last in order its n
 * key rows, then its n value rows. write 0 copies the cache into buf, 1 buf into the cache (rows
 * from n on are left as they are). From the host cache or the GPU's. 0, or TERN_EINVAL (bad slot,
 * n outside [1, n_ctx]) / a device error, with err. */
int stage_kv_io(stage_t *st, int seq, int n, uint8_t *buf, int write, char *err, size_t errlen);

/* One step: h (n, n_embd) in place through the layers. tokens[i] (the input token id, used by the
 * last stage for the repetition-penalty history), seq[i], pos[i]; sample[i] != 0 asks the last
 * stage to sample after token i, the token at pos[i] + 1 (at most n_logit_rows a step; several of
 * one sequence are its draft tokens' checks: each sampled from its own row with the history up to
 * its own token; a draft its check refused leaves the history again). For the last stage, the
 * sampled tokens are written in order of the sampling tokens to out_tok / out_logprob (and their
 * top_logprobs alternatives to st->top_ids / top_lp, st->n_top each); returns their count (0 for
 * a middle stage) or <0 on a bad request (err says why). */
int stage_step(stage_t *st, float *h, int n, const int32_t *tokens, const int *seq, const int *pos,
               const uint8_t *sample, int32_t *out_tok, float *out_logprob, char *err, size_t errlen);
/* stage_step, and when out_logits is not NULL (room for (n_logit_rows, n_vocab)): the last stage
 * also copies each sampled row's logits there, in order of the sampling tokens, as the head made
 * them (before penalties, biases, a grammar's mask or the draw). KL divergence, Forward.want_logits. */
int stage_step_logits(stage_t *st, float *h, int n, const int32_t *tokens, const int *seq, const int *pos,
                      const uint8_t *sample, int32_t *out_tok, float *out_logprob, float *out_logits, char *err,
                      size_t errlen);
/* Teacher forcing (perplexity, prompt logprobs), after stage_step on the last stage with the h it
 * left: for each token i with target[i] >= 0, in token order, out[k++] = log softmax(logits of
 * token i)[target[i]], computed in double; and when a scored token's sequence asks for
 * alternatives (its sampler's logprobs and top_logprobs), the most likely tokens there with
 * their log-probabilities in st->score_top_ids / score_top_lp (st->score_n_top per scored token,
 * rows padded with id -1). target NULL: nothing. Returns k, or <0 when a target is outside the
 * vocabulary or this stage has no head (err says why). */
int stage_score(stage_t *st, const float *h, int n, const int *seq, const int32_t *target, double *out, char *err,
                size_t errlen);
/* Embeddings, after stage_step on the last stage with the h it left (a CUDA stage's too: its
 * layers' output comes back to the host): out (k, n_embd) row k++ = out_norm(h row i) for each
 * token i with embd[i] != 0, in token order — the final hidden state the lm head would read.
 * embd NULL: nothing. Returns k, or <0 when this stage has no head (err says why). */
int stage_embd(stage_t *st, const float *h, int n, const uint8_t *embd, float *out, char *err, size_t errlen);

#endif
