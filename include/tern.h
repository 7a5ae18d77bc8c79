/* tern.h — the public C API: load a ternary model (in this process, or across a cluster of
 * workers), tokenize, generate with a callback, free. The `tern` CLI is built on it.
 *
 *   tern_params p; tern_params_default(&p); p.model = "model.gguf";
 *   tern_model *m; char err[256];
 *   if (tern_load(&m, &p, err, sizeof err) < 0) { fprintf(stderr, "%s\n", err); return 1; }
 *   tern_sampling s; tern_sampling_default(&s);
 *   tern_generate(m, "Hello", 32, &s, print_piece, NULL, NULL);
 *   tern_model_free(&m);
 */
#ifndef TERN_H
#define TERN_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct tern_model tern_model;

typedef struct tern_params {
    const char *model;       /* GGUF path */
    int n_ctx;               /* context per sequence (0: min(model's, 4096)) */
    int n_batch;             /* tokens per forward step (the scheduler's batch; llama.cpp's -b) */
    int prefill_chunk;       /* prompt tokens per step while others generate (0: up to n_batch;
                              * -1: the scheduler's default) */
    int n_threads;           /* 0: all cores */
    int n_threads_batch;     /* threads of steps with more than one token (prompts; llama.cpp's -tb);
                              * 0: n_threads */
    int no_mmap;             /* read the weights into memory with pread instead of mapping the file */
    int mlock;               /* lock the weights this process uses in memory (llama.cpp's --mlock) */
    int n_seq;               /* concurrent sequences */
    int kv_f32;              /* KV cache in f32 instead of f16 */
    const char *kv_type;     /* NULL: f16 (f32 with kv_f32); "f16", "f32" or "q8_0" (half of f16's
                              * memory and attention reads; head size a multiple of 32) */
    const char *head_type;   /* NULL: as stored; "q8_0" / "f16": convert the lm head at load */
    const char *cluster;     /* cluster YAML file, or NULL */
    const char *workers;     /* "tcp://a:7101,tcp://b:7101", or NULL */
    int stages;              /* local only: split into this many in-process stages (tests) */
    int mpi;                 /* started by mpirun: rank 0 coordinates, ranks 1.. are the workers */
    int n_gpu_layers;        /* local only: the first N layers as a CUDA stage (>= n_layer: all + head) */
    int n_ubatch;            /* tokens per forward pass inside a step: the stages' activation
                              * buffers (0 or > n_batch: n_batch); llama.cpp's -ub */
    int lookup;              /* prompt lookup decoding: up to N draft tokens from the text so far
                              * checked in one step, for greedy sequences (0: off; at most 16) */
    const char *draft_model; /* speculative decoding: a small model with the same vocabulary,
                              * run here on the CPU, proposes the drafts (NULL: none) */
    int n_draft;             /* with draft_model: drafts a step (0: 8; at most 16) */
    int context_shift;       /* a sequence that fills its context drops part of it and goes on
                              * (llama.cpp's --context-shift; tern_sampling.n_keep says what stays);
                              * 0: it ends there */
    /* RoPE overrides, llama.cpp's flags and meanings; each at its default keeps the file's value */
    const char *rope_scaling; /* NULL, or "none" | "linear" | "yarn" (--rope-scaling) */
    float rope_scale;        /* --rope-scale: the context factor, freq_scale = 1/N (0: the file's) */
    float rope_freq_base;    /* --rope-freq-base (0: the file's) */
    float rope_freq_scale;   /* --rope-freq-scale (0: the file's) */
    int yarn_orig_ctx;       /* --yarn-orig-ctx: the context before extension (0: the file's) */
    float yarn_ext_factor;   /* --yarn-ext-factor (-1: the file's, else 1 for yarn, 0 otherwise) */
    float yarn_attn_factor;  /* --yarn-attn-factor: multiplies the file's magnitude (0: 1) */
    float yarn_beta_slow;    /* --yarn-beta-slow (0: the file's, else 1) */
    float yarn_beta_fast;    /* --yarn-beta-fast (0: the file's, else 32) */
} tern_params;

typedef struct tern_sampling {
    float temp, top_p, min_p, repeat_penalty;
    int top_k, repeat_last_n;
    uint64_t seed;
    const char *grammar;     /* GBNF text (llama.cpp's grammar syntax, start rule "root"): the
                              * generated text is a sentence of it (NULL: free text) */
    float freq_penalty;      /* OpenAI's frequency / presence penalties over the last repeat_last_n */
    float presence_penalty;  /* tokens (0: off) */
    int n_bias;              /* logit biases (at most 300): logit[bias_id[i]] += bias[i] */
    const int32_t *bias_id;
    const float *bias;
    int ignore_eos;          /* end-of-generation tokens are never sampled (llama.cpp's --ignore-eos) */
    int n_keep;              /* with context_shift: prompt tokens a shift keeps after the BOS
                              * (llama.cpp's --keep; -1: the whole prompt; default 0) */
    /* llama.cpp's other samplers, in its default chain order (each off at its default) */
    float typical_p;         /* locally typical sampling (1: off) */
    float top_n_sigma;       /* keep logits >= max - n * stddev (0: off) */
    float xtc_probability;   /* XTC: the chance the most likely tokens leave (0: off) */
    float xtc_threshold;     /* ... those of probability >= this but the last (> 0.5: off; 0.1) */
    float dynatemp_range;    /* dynamic temperature: temp +- this by the entropy (0: off) */
    float dynatemp_exponent; /* (1) */
    int mirostat;            /* 1, 2: mirostat v1 / v2 in place of the filters and penalties (0: off) */
    float mirostat_tau, mirostat_eta;   /* target surprise (5), learning rate (0.1) */
    float dry_multiplier;    /* DRY (0: off) */
    float dry_base;          /* (1.75) */
    int dry_allowed_length;  /* (2) */
    int dry_penalty_last_n;  /* tokens DRY looks back (-1: as many as kept, at most 4096; 0: off) */
    const char *const *dry_breakers;   /* sequence breakers (NULL: "\n" ":" "\"" "*"; with */
    int n_dry_breakers;                /* n_dry_breakers 0 and non-NULL: none) */
    const char *sampling_seq;  /* the chain's samplers and their order as llama.cpp's --sampling-seq
                              * letters: e penalties, d DRY, s top-n-sigma, k top-k, y typical,
                              * p top-p, m min-p, x XTC, t temperature; one left out does not run
                              * (NULL: "edskypmxt", llama.cpp's default) */
} tern_sampling;

typedef struct tern_stats {
    double t_load, t_prompt, t_gen;   /* seconds */
    int n_prompt, n_gen;
    size_t weight_bytes;              /* bytes of weights read per generated token */
    long n_drafted, n_draft_ok;       /* --lookup: draft tokens checked, and those taken */
    int n_ctx_shifts;                 /* context shifts made (tern_params.context_shift) */
    int n_cached;                     /* of n_prompt, tokens taken from the slot's cache (not fed) */
} tern_stats;

/* piece: the bytes of complete UTF-8 characters to append (may be empty), token: its id.
 * Return nonzero to stop generating. */
typedef int (*tern_token_cb)(void *user, const char *piece, size_t len, int32_t token);

void tern_params_default(tern_params *p);
void tern_sampling_default(tern_sampling *s);
int tern_load(tern_model **out, const tern_params *p, char *err, size_t errlen);
void tern_model_free(tern_model **m);
/* ids (cap); returns the count (may exceed cap) or <0 */
int tern_tokenize(tern_model *m, const char *text, int add_bos, int32_t *ids, int cap);
/* Generates up to n_predict tokens after `prompt` (BOS added when the vocab asks for it; special
 * tokens in the prompt are parsed). Stops at end-of-generation tokens. Returns the number of
 * generated tokens or <0 (err via tern_last_error). stats may be NULL. */
int tern_generate(tern_model *m, const char *prompt, int n_predict, const tern_sampling *s, tern_token_cb cb,
                  void *user, tern_stats *stats);
/* same from token ids */
int tern_generate_ids(tern_model *m, const int32_t *ids, int n, int n_predict, const tern_sampling *s,
                      tern_token_cb cb, void *user, tern_stats *stats);
const char *tern_last_error(const tern_model *m);

#ifdef __cplusplus
}
#endif
#endif
