/* engine: the inside of a tern_model (include/tern.h) for the coordinator's own front ends
 * (CLI, HTTP server, perplexity): the opened model, tokenizer, embedding view, pipeline and
 * scheduler. Front ends that run several sequences drive sched_* directly. */
#ifndef TERN_ENGINE_H
#define TERN_ENGINE_H
#include "tern.h"
#include "coordinator/embed.h"
#include "coordinator/grammar.h"
#include "coordinator/pipeline.h"
#include "coordinator/sched.h"
#include "coordinator/tokenizer.h"
#include "core/gguf.h"
#include "core/memlock.h"
#include "core/model_spec.h"
#include "core/tpool.h"

struct tern_model {
    gguf_t *g;
    tokenizer_t *tok;
    embed_t emb;
    tpool_t *tp;
    memlock_t lock;         /* --mlock: the token embeddings read here in place */
    pipeline_t *pl;
    sched_t sched;
    hparams_t hp;
    int n_ctx;
    int kv_type;            /* the stages' KV cache elements (kernels/ops.h) */
    double t_load;
    grammar_vocab_t *gvocab;   /* the tokens as grammars see them; made on first use (engine_grammar_vocab) */
    struct draft *draft;       /* tern_params.draft_model, or NULL */
    char err[256];
};

/* The model's vocabulary for grammars (each token's text, end-of-generation ids), made on the
 * first call (a pass over the vocabulary; not thread-safe: call it from the thread that drives
 * the scheduler). NULL on out of memory. */
const grammar_vocab_t *engine_grammar_vocab(tern_model *m);
/* Right after sched_add: sequence id's output follows the GBNF text gbnf (parsed here; the
 * model's vocabulary) — with trigger (or NULL), lazily: free text until trigger appears
 * (sched_grammar_trigger). 0, or <0 with the sequence ended as SCHED_ERROR and m->sched.err
 * saying why (the text does not parse, no token can begin it, out of memory). Engine thread. */
int engine_start_grammar(tern_model *m, int id, const char *gbnf, const char *trigger);
/* the control token whose text is trigger (a marker that renders no text: Mistral Nemo's
 * [TOOL_CALLS]), or -1 when trigger is NULL or no such token */
int engine_trigger_token(tern_model *m, const char *trigger);
/* the scheduler's sampling params of the API's (s NULL: the defaults); logit biases past the
 * sampler's SAMPLER_BIAS_MAX are dropped (the front ends refuse more) */
void engine_sampler_params(const tern_sampling *s, sampler_params_t *sp);
/* s's fields engine_sampler_params cannot refuse: sampling_seq's letters. 0, or TERN_EINVAL with
 * a one-line reason naming the bad letter. */
int engine_sampling_check(const tern_sampling *s, char *err, size_t errlen);
/* ignore_eos (llama.cpp's): every end-of-generation token gets a logit bias of -1e30 in sp, so it
 * is never sampled. 0, or TERN_EINVAL when sp's biases leave no room for them (err says why). */
int engine_ban_eog(const tern_model *m, sampler_params_t *sp, char *err, size_t errlen);
/* DRY's sequence breakers as llama.cpp makes them (get_overlapping_token_sequences): for each
 * string (cut to 40 bytes), every token whose text holds it is a breaker alone, and every token
 * whose text ends with a start of it is one with the rest of the string tokenized after it (at most
 * SAMPLER_DRY_TAIL_MAX tokens). strs NULL: llama.cpp's defaults "\n" ":" "\"" "*"; n 0 and strs
 * non-NULL: none. Replaces sp's breakers. 0, or TERN_EINVAL when they need more than
 * SAMPLER_DRY_SEQ_MAX / SAMPLER_DRY_TOK_MAX (err says why). */
int engine_dry_breakers(const tern_model *m, const char *const *strs, int n, sampler_params_t *sp, char *err,
                        size_t errlen);
/* sched_set_keep's count for a request's n_keep (llama.cpp's: tokens after the BOS, which a
 * shift always keeps; -1: the whole prompt) */
int engine_keep(const tern_model *m, int n_keep);

#endif
