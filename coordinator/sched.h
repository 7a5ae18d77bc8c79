/* sched: the coordinator's scheduler. Sequences are admitted into free slots; every step packs
 * one decode token of each generating sequence plus prompt chunks of sequences still in prefill
 * (up to n_batch tokens), looks up their embeddings and runs the step through the pipeline —
 * continuous batching at token boundaries. Sampled tokens come back through a callback.
 * Chunked prefill: while any sequence decodes, a step carries at most prefill_chunk prompt
 * tokens (oldest prompt first), so streams keep a short inter-token gap when prompts arrive.
 * Also: a prompt's own log-probabilities (teacher-forced targets, sched_score_prompt), a
 * prefix cache (a prompt starts after what its slot already holds, sched_set_prefix_cache, or
 * after what another slot holds, copied from there: sched_set_kv_copy),
 * embeddings (a prompt's pooled final hidden states instead of tokens, sched_embed),
 * context shifting (a sequence that fills its context drops part of it and goes on,
 * sched_set_context_shift), slot save / restore (a slot's cache to and from a file,
 * sched_slot.c) and a RAM prompt cache (slots' caches kept in memory for later prompts,
 * sched_set_ram_cache).
 * Not here: text (the caller tokenizes and detokenizes), transports (pipeline). */
#ifndef TERN_SCHED_H
#define TERN_SCHED_H
#include <stdint.h>
#include "coordinator/embed.h"
#include "coordinator/grammar.h"
#include "coordinator/kvfile.h"
#include "coordinator/pipeline.h"
#include "coordinator/promptcache.h"

#define SCHED_MAX_INFLIGHT 8
#define SCHED_TRIGGER_MAX 64   /* bytes of a lazy grammar's trigger (sched_grammar_trigger) */
#define SCHED_FORCE_MAX 16     /* tokens sched_force can queue */
/* Default prompt tokens per step while some sequence decodes (sched_set_prefill_chunk). On CPUs a
 * step costs about a + b*tokens (compute bound; a sampled token also pays the output head), so
 * the chunk bounds what a prompt adds to every stream's next-token gap (chunk*b, ~7 ms a token
 * for 2b4t on 2 cores), while the prompt's own time to first token grows as the chunk shrinks.
 * Measured on 2b4t, 2 cores. 16 streams arriving at once (bench/serve.sh): gap p99 610 ms
 * uncapped (p50 300), 450 at 32, 375 at 16; first-token p99 1.64 s uncapped, 1.65-1.78 at 32,
 * 2.3-2.7 at 16. 12 streams decoding (gap 250 ms) while three ~240-token prompts arrive: gap
 * 630 ms uncapped, 480 / 365 / 310 at 32 / 16 / 8; the prompts' first token after 6.1 s
 * uncapped, 7.5 / 10.2 / 12 s. Aggregate tokens/s equal within noise from 32 up. 32 halves the
 * added gap at little cost in time to first token; 16 suits latency-first serving. */
#define SCHED_PREFILL_CHUNK 32

enum sched_finish { SCHED_RUNNING = 0, SCHED_STOP = 1, SCHED_LENGTH = 2, SCHED_CTX = 3, SCHED_CANCEL = 4, SCHED_ERROR = 5 };

/* A sampled token's top_logprobs alternatives (sampler_params_t top_logprobs): n of them, best
 * first; valid only during the callback. */
typedef struct sched_top {
    int n;
    const int32_t *ids;
    const float *lp;
} sched_top_t;

/* token: a sampled token (or -1 with finish set when the sequence ends without one); top: its
 * alternatives, NULL when none were asked for (or none came back).
 * Return nonzero to stop the sequence (e.g. end-of-generation token or a stop string). */
typedef int (*sched_cb)(void *user, int id, int32_t token, float logprob, const sched_top_t *top, int finish);
/* A prompt token's log-probability (sched_score_prompt): the token at prompt position pos (>= 1),
 * log p(token | the prompt before it), and its alternatives (NULL when none were asked for). */
typedef void (*sched_score_cb)(void *user, int id, int pos, int32_t token, float logprob, const sched_top_t *top);
/* Embedding pooling (llama.cpp's --pooling, same values) */
enum sched_pool { SCHED_POOL_NONE = 0, SCHED_POOL_MEAN = 1, SCHED_POOL_CLS = 2, SCHED_POOL_LAST = 3 };
/* A sequence's embedding (sched_embed): n rows (1, or one per prompt token with SCHED_POOL_NONE)
 * of n_embd floats, row-major; valid only during the callback. */
typedef void (*sched_embd_cb)(void *user, int id, const float *v, int n, int n_embd);

typedef struct sched_seq {
    int active, slot, id;
    int waiting;           /* a token that samples for it is in flight */
    int32_t *toks;         /* prompt then generated, capacity n_ctx + 1 (a context shift takes the
                            * sequence to n_ctx + 1 tokens: position n_ctx is the one it frees) */
    int n_prompt, n_toks, n_fed;   /* after a context shift: what is left of them */
    int n_prefill;         /* tokens fed as a prompt (chunks, one sample at the end): n_prompt, or
                            * after a pipeline recovery every known token; tokens past it are fed
                            * one per step (with drafts after them, sched_set_lookup) */
    int kv_ok;             /* the stages still hold this slot's keys and values for toks[0..n_fed)
                            * (0 after a pipeline recovery or failure): a later prompt with the
                            * same beginning starts after it (sched_set_prefix_cache) */
    int kv_exact;          /* the cache's first kv_exact positions are what a fresh prefill of toks
                            * computes (all, n_ctx + 1, until a context shift: then its keep — the
                            * moved keys and values were computed with the dropped tokens in view) */
    int n_cached;          /* prompt tokens taken from the slot's cache at admission (not fed), or
                            * copied into it from another slot's (copy_src) */
    int copy_src;          /* >= 0: toks[0..copy_n) come from slot copy_src's cache by a KV copy
                            * (step_t.copy) not made yet — it waits until that slot has fed them;
                            * -1: none pending */
    int copy_n, copy_own;  /* the copy's positions; what this slot's own cache held of the prompt */
    int n_ram;             /* prompt tokens written into the slot from the RAM cache at admission */
    unsigned long last_use;   /* admission or release stamp (0: never used): the least recently
                               * used idle slot takes a prompt no slot's cache suits */
    int max_gen, n_gen;
    int n_keep;            /* tokens a context shift keeps at the start (sched_set_keep; resolved) */
    int n_shifted;         /* context shifts so far */
    int finish;
    sampler_params_t sp;
    sched_cb cb;
    void *user;
    sched_score_cb score_cb;   /* non-NULL: the prompt is scored (teacher forcing) */
    int n_scored;          /* next prompt position whose score is due (replays skip the others) */
    sched_embd_cb embd_cb; /* non-NULL: an embedding sequence (sched_embed) */
    int embd_pool, embd_norm;
    float *embd;           /* (rows, n_embd) the pooled rows so far; kept with the slot */
    size_t embd_cap;       /* floats embd holds */
    double t_start, t_first;  /* admission time, first token time (timing summaries) */
    grammar_t *grammar;       /* non-NULL: the generated tokens follow it (sched_set_grammar; owned) */
    grammar_state_t *gram;    /* where they are in it */
    grammar_state_t *gram0;   /* its start, for replays */
    const grammar_vocab_t *gvocab;
    int gram_n;               /* gram has consumed toks[n_prompt..gram_n) */
    uint8_t *allow;           /* ((n_vocab + 7) / 8) the tokens gram lets through next; kept with
                               * the slot (a step in flight may still point at it) */
    char trigger[SCHED_TRIGGER_MAX + 1];   /* "" or a lazy grammar's trigger (sched_grammar_trigger) */
    int triggered;            /* the trigger has come: gram follows the text from its start */
    char tail[SCHED_TRIGGER_MAX];   /* while waiting: the generated text's last bytes (n_tail of them,
                                     * fewer than the trigger's), where a trigger may begin */
    int n_tail;
    int32_t trigger_tok;      /* -1, or a token that is the trigger too (sched_grammar_trigger_token) */
    int32_t force[SCHED_FORCE_MAX];   /* the tokens the next samples must be (sched_force), force[0] next */
    int n_force;
    int force_new;            /* sched_force came during a delivery: the rest of that step (drafts
                               * sampled without its mask) is refused */
} sched_seq_t;

typedef struct sched {
    pipeline_t *pl;        /* not owned */
    const embed_t *emb;    /* not owned */
    int n_seq, n_ctx, n_batch;
    int prefill_chunk;     /* prompt tokens per step while a sequence decodes; 0 = up to n_batch */
    int prefix_cache;      /* sched_set_prefix_cache */
    int kv_copy;           /* sched_set_kv_copy */
    double slot_sim;       /* sched_set_slot_similarity */
    long n_copies, n_copied_tok;   /* KV copies made, and the positions they carried */
    int ctx_shift;         /* sched_set_context_shift */
    long n_ctx_shifts;     /* context shifts made (all sequences) */
    int lookup;            /* sched_set_lookup: draft tokens a decode step may check (0: off) */
    int (*draft_fn)(void *user, int slot, const int32_t *toks, int n, int k, int32_t *out);   /* sched_set_drafter */
    void *draft_user;
    long n_drafted, n_draft_ok;   /* draft tokens sent, and those the model confirmed */
    long n_cached_tok;     /* prompt tokens not fed again thanks to the prefix cache */
    unsigned long use_clock;
    sched_seq_t *seqs;     /* (n_seq,) one per slot */
    int *order;            /* (n_seq,) scratch: slots with prompt work, oldest first */
    int dec_next;          /* slot the decode scan starts at when n_batch cannot hold every decoder */
    int next_id;
    step_t steps[SCHED_MAX_INFLIGHT];   /* ring of steps in flight (pipelining across stages) */
    int *sids[SCHED_MAX_INFLIGHT];      /* sequence id of each token of a step */
    int32_t *tgt[SCHED_MAX_INFLIGHT];   /* teacher-forced targets of a step (its target when any) */
    uint8_t *emf[SCHED_MAX_INFLIGHT];   /* embedding flags of a step (its embd when any) */
    step_shift_t *shifts[SCHED_MAX_INFLIGHT];   /* (n_seq,) a step's context shifts (its shift) */
    step_copy_t *copies[SCHED_MAX_INFLIGHT];    /* (n_seq,) a step's KV copies (its copy) */
    int has_prompt[SCHED_MAX_INFLIGHT];
    int first, inflight, max_inflight;
    int steps_run;
    double t_prefill, t_decode;   /* seconds spent in steps containing prompt / only decode */
    long n_prefill_tok, n_decode_tok;
    int n_recoveries;      /* times the pipeline was rebuilt and the sequences replayed */
    const uint8_t **allow; /* (n_seq,) the slots' masks (NULL: free sampling), for step_t.allow */
    int hold;              /* sched_step submits nothing new, only waits (a slot save / restore drains) */
    kvfile_model_t kvm;    /* the model as slot files name it (sched_set_model; size 0: not set) */
    promptcache_t *ram;    /* the RAM prompt cache (sched_set_ram_cache; owned); NULL: off */
    int err_code;          /* the TERN_E* code of the failure in err (0 = none) */
    char err[256];
} sched_t;

/* prefill_chunk starts at SCHED_PREFILL_CHUNK. Returns 0 or TERN_ENOMEM (err says why). */
int sched_init(sched_t *s, pipeline_t *pl, const embed_t *emb, int n_seq, int n_ctx, int n_batch, char *err,
               size_t errlen);
void sched_free(sched_t *s);
/* At most n prompt tokens per step while any sequence decodes (its prompt is all fed); when none
 * does, prompts fill n_batch. 0 = no cap (prompts always fill n_batch). Prompts are prefilled
 * oldest first, and one advances by at least one token every step even when decode tokens fill
 * n_batch (the step is then n_batch + 1 tokens). Returns 0, or TERN_EINVAL when n < 0. */
int sched_set_prefill_chunk(sched_t *s, int n);
/* Prefix cache (llama.cpp's cache_prompt; off after sched_init): a sequence is admitted into the
 * free slot whose cached tokens (what its last sequence fed, still in the stages' KV cache)
 * share the longest beginning with its prompt (sched_set_slot_similarity), and its prefill starts
 * after that shared part
 * (at least the last prompt token is fed: it samples). Output is the same as without the cache
 * (the CPU kernels compute a position the same way whatever the batch it came in; a GPU stage may
 * differ in the last bits). Skipped for a sequence whose sampling reads its history (repeat
 * penalty) or whose prompt is scored. */
void sched_set_prefix_cache(sched_t *s, int on);
/* Which idle slot a prompt takes (llama-server's --slot-prompt-similarity, f in [0, 1]; 0.1 after
 * sched_init, its default): with the prefix cache, the slot whose cache holds the longest
 * beginning of the prompt when that is more than f of the prompt's tokens; otherwise, and always
 * with f = 0, the least recently used idle slot (admitted or released longest ago). 0 or
 * TERN_EINVAL (f out of range). */
#define SCHED_SLOT_SIM_DEFAULT 0.1
int sched_set_slot_similarity(sched_t *s, double f);
/* KV copies (llama.cpp's llama_memory_seq_cp; on after sched_init, used only with the prefix cache
 * and under its conditions): when another slot holds — or, busy with a sequence still in prefill,
 * will hold — a longer beginning of a new prompt than the slot the prompt gets, that beginning is
 * copied (step_t.copy) instead of computed again: the n choices of one request, or requests
 * sharing a system prompt, evaluate it once. The new sequence waits until the source slot has fed
 * those tokens (its own prefill starts with the copy's step); if the source's sequence ends or
 * changes first, it copies what is there or falls back to its own cache. Output is unchanged
 * (a position's keys and values depend only on the tokens up to it: the copy holds what a prefill
 * computes, and each sequence keeps its own sampler and seed). */
#define SCHED_COPY_MIN 4   /* tokens a copy must add to the slot's own cache (fewer: not worth a wait) */
void sched_set_kv_copy(sched_t *s, int on);
/* Context shifting (llama.cpp's --context-shift; off after sched_init): a generating sequence
 * that needs position n_ctx keeps its first n_keep tokens (sched_set_keep), drops half of the
 * rest ((n_ctx - n_keep) / 2, llama.cpp's rule) and goes on — the step that feeds its next token
 * carries the shift (step_t.shift) for the stages' caches, sent only once none of its tokens is
 * in flight — so it ends at max_gen or a stop, not at the context. Off: such a sequence ends
 * (SCHED_CTX). Never for a scored prompt (it ends there). A prompt alone must still fit. After a
 * shift the text differs from an unshifted run's; a pipeline recovery then replays the shifted
 * text as one prompt (the grammar state is kept), so the tokens after it may differ from a run
 * without the failure. */
void sched_set_context_shift(sched_t *s, int on);
/* Right after sched_add (before the sequence's first shift): a context shift of sequence id
 * keeps its first n_keep tokens; -1: the whole prompt (the default is 0). Clamped to the prompt
 * and to n_ctx - 4, so that a shift always drops something (llama.cpp's rule). 0, or TERN_EINVAL
 * (no such sequence, it has shifted, or n_keep < -1). */
int sched_set_keep(sched_t *s, int id, int n_keep);
/* Admits a sequence: prompt ids (n >= 1), at most max_gen new tokens. Returns its id (>= 0),
 * TERN_ENOMEM when no slot is free, or TERN_EINVAL when the prompt does not fit the context. */
int sched_add(sched_t *s, const int32_t *prompt, int n, int max_gen, const sampler_params_t *sp, sched_cb cb,
              void *user);
/* sched_add into slot `slot` (llama-server's id_slot: its cache serves this prompt; -1: any
 * free slot, as sched_add). cache 0: the prompt will be fed whole (cache_prompt false, an
 * embedding, a scored prompt), so no slot is picked for its cache and nothing is restored from the
 * RAM cache for it (a restore it would not use costs a pause and a write, and is no hit).
 * TERN_ENOMEM when that slot is busy, TERN_EINVAL when there is none. */
int sched_add_at(sched_t *s, int slot, int cache, const int32_t *prompt, int n, int max_gen,
                 const sampler_params_t *sp, sched_cb cb, void *user);
/* Right after sched_add: sequence id's prompt is fed whole, from position 0, though its slot held
 * a beginning of it (a request that turned the prefix cache off). 0 or TERN_EINVAL (no such
 * sequence, or it has started). */
int sched_feed_whole(sched_t *s, int id);
/* Right after sched_add: scores the prompt of sequence id — cb gets, for each prompt position
 * 1..n-1 in order, log p(prompt[pos] | prompt[0..pos)) with the sequence's top_logprobs
 * alternatives (sp.logprobs). Costs the lm head on every prompt token. Returns 0 or TERN_EINVAL
 * (no such sequence, or it has started). A sequence admitted with max_gen 0 samples nothing: it
 * ends (SCHED_LENGTH, token -1) once its prompt is fed and scored. */
int sched_score_prompt(sched_t *s, int id, sched_score_cb cb);
/* Right after sched_add (with max_gen 0): sequence id is an embedding — its prompt is fed whole
 * (chunked like any prompt), nothing is sampled, and the last stage sends back each token's final
 * hidden state after the output norm; once the last prompt token is through, cb gets them pooled
 * (pool: SCHED_POOL_*) and normalised (norm as llama.cpp's --embd-normalize: -1 none, 0 max
 * absolute (int16 range), 1 taxicab, 2 Euclidean, > 2 p-norm), then the sequence ends
 * (SCHED_LENGTH, token -1). 0, TERN_EINVAL (no such sequence, it has started, it generates, or a
 * bad pool) or TERN_ENOMEM. */
int sched_embed(sched_t *s, int id, int pool, int norm, sched_embd_cb cb);
/* v[0..n) scaled by llama.cpp's common_embd_normalize rule `norm` (see sched_embed) */
void sched_embd_normalize(float *v, int n, int norm);
/* "none" / "mean" / "cls" / "last" as SCHED_POOL_*, or -1 */
int sched_pool_parse(const char *name);
/* Right after sched_add: sequence id's generated tokens follow a grammar — each sample is drawn
 * among the tokens the grammar lets through next (the step carries the mask to the last stage),
 * and the sequence ends (SCHED_STOP, token -1) once the grammar is complete (nothing but the end
 * may follow); an end-of-generation token is allowed only where the grammar may end. Takes *g
 * (nulls it; freed with the sequence, or on any failure); v (not owned) must outlive the sequence.
 * 0, or TERN_EINVAL (no such sequence, or it has started) / TERN_EINVAL (no token of v can begin
 * the grammar) / TERN_ENOMEM with err set — the latter two end the sequence (SCHED_ERROR, s->err
 * says why). Computing a mask costs about a full pass over the vocabulary's prefix
 * tree per sampled token where the grammar is open (inside a JSON string), far less elsewhere. */
/* Right after sched_add: ends sequence id as a failed one (SCHED_ERROR through its callback),
 * s->err = why, s->err_code = code (<0) — a request that cannot start (a grammar that does not
 * parse). Returns code, or TERN_EINVAL (no such sequence, or it has started). */
int sched_fail(sched_t *s, int id, int code, const char *why);
int sched_set_grammar(sched_t *s, int id, grammar_t **g, const grammar_vocab_t *v, char *err, size_t errlen);
/* Right after sched_set_grammar: the grammar is lazy (llama.cpp's grammar triggers) — the text is
 * free (no mask, any end) until the generated text holds trigger (1..SCHED_TRIGGER_MAX bytes,
 * across token boundaries); from the trigger's first byte on, the text follows the grammar (the
 * bytes after the trigger's token boundary are fed to it at once; a grammar that refuses them
 * ends the sequence as SCHED_ERROR, as llama.cpp's fails the request). 0, or TERN_EINVAL (no
 * such sequence, not started under a grammar, or a bad trigger). */
int sched_grammar_trigger(sched_t *s, int id, const char *trigger);

/* Right after sched_grammar_trigger: token tok (0..n_vocab) fires the trigger too, when it is
 * sampled — llama.cpp's preserved tokens, for a marker that is a control token (Mistral Nemo's
 * [TOOL_CALLS]: it renders no text, so the text trigger never sees it). The grammar then takes
 * the trigger's text in the token's place and follows from there. 0, or TERN_EINVAL (no such
 * sequence, not started, no text trigger, or tok out of range). */
int sched_grammar_trigger_token(sched_t *s, int id, int32_t tok);
/* Sequence id's next n samples (1..SCHED_FORCE_MAX) are toks, in order, whatever the model
 * would draw: each sample's mask admits its token alone (the last stage samples it, so its
 * history and log-probabilities stay the real ones) — a reasoning budget's end-of-thinking marker
 * (server_engine.c). Called from a token callback, it applies from the next sample on; a later
 * call replaces what is left. Under a grammar a forced token must be one it lets through: where
 * it is not, the rest of the forcing is dropped (the grammar wins). No drafts meanwhile (the mask
 * is one per slot and step). 0, or TERN_EINVAL (no such active sequence, n or a token out of
 * range) / TERN_ENOMEM. */
int sched_force(sched_t *s, int id, const int32_t *toks, int n);
/* Prompt lookup decoding (llama.cpp's lookup / n-gram speculation; off after sched_init): a
 * sequence (greedy or sampled, penalties and logprobs included; not under a grammar, not a scored
 * prompt) sends, after its last token, up to n draft tokens — what followed the latest earlier
 * occurrence of its last 3 (else 2) tokens in its own text — each sampled in the same step; the
 * drafts the model confirms are delivered at once (a memory-bound step checks several tokens for
 * about the price of one). The tokens are exactly those of plain decoding with the same seed:
 * every row is sampled as plain decoding samples its position (the draw is keyed on the position,
 * the penalties' history ends at the row's own token), a draft counts only when it is the token
 * sampled before it, so each kept token is the model's own sample there — distribution-preserving
 * at any temperature; the last stage forgets refused drafts' tokens, and the stages' keys and
 * values of them are overwritten before anything reads them. Drafts stop before the context's
 * end (a context shift is never crossed) and before max_gen. Returns 0, or TERN_EINVAL when n is
 * outside [0, SCHED_LOOKUP_MAX]. */
#define SCHED_LOOKUP_MAX 16
int sched_set_lookup(sched_t *s, int n);
/* Drafts come from fn instead of the text (speculative decoding with a draft model, draft.h):
 * fn(user, slot, toks, n, k, out) writes up to k tokens it predicts after toks[0..n) of the
 * sequence in slot and returns how many (0: none this time). The same rules as lookup otherwise
 * (sched_set_lookup's n bounds k; the output is plain decoding's, greedy or sampled). fn NULL:
 * back to lookup. */
void sched_set_drafter(sched_t *s, int (*fn)(void *user, int slot, const int32_t *toks, int n, int k, int32_t *out),
                       void *user);
/* prompt tokens sequence id took from its slot's cache (0 when none, or no such sequence) */
int sched_cached(const sched_t *s, int id);
void sched_cancel(sched_t *s, int id);
int sched_active(const sched_t *s);      /* sequences still running */
/* After a failure the pipeline recovers from (pipeline_ops_t.recover), every active sequence is
 * replayed: its known tokens are fed again from position 0 as one prompt, and its next sample is
 * the one it would have drawn (the draw is keyed on the seed and the position; the penalties'
 * history is what was fed) — the client sees a pause, not an error, and the same tokens (under
 * mirostat not necessarily: its mu starts again).
 * Fills the pipeline with steps (up to its max_inflight: with several stages, steps of different
 * sequences — and successive chunks of one prompt — are in flight at once), then waits for the
 * oldest and delivers its tokens. Returns the number of sequences still active, or <0 when the
 * pipeline failed (every sequence is then finished with SCHED_ERROR and s->err says why). */
int sched_step(sched_t *s);

/* ---- slot save / restore (sched_slot.c) --------------------------------------------------- */
/* The model's identity and KV shapes as slot files record them (kvfile_model_init; copied). */
void sched_set_model(sched_t *s, const kvfile_model_t *m);
/* llama-server's /slots/{id}?action=save (llama-cli's --prompt-cache): the tokens idle slot `slot`
 * holds in the stages' caches (toks[0..n_fed), up to a context shift's keep) with their keys and
 * values of every layer, read out of the stages (pipeline kv_read), written to path (kvfile.h).
 * Steps in flight are waited for first (nothing new is submitted: s->hold; their tokens go to
 * the callbacks as in sched_step). *n_saved: tokens, *n_written: bytes (either may be NULL).
 * 0, or <0 with err: TERN_EINVAL (a busy slot, nothing cached, no model set), TERN_ENOTSUP (the
 * pipeline cannot), the pipeline's or the file's error. */
int sched_slot_save(sched_t *s, int slot, const char *path, int *n_saved, uint64_t *n_written, char *err,
                    size_t errlen);
/* The opposite: path's rows (the same model file and shapes; another kv_type is converted, see
 * kvfile_check) into idle slot `slot`, whose cached tokens become the file's — a later prompt that
 * begins with them starts after them (sched_set_prefix_cache). The file may come from any
 * placement of the layers. Same conditions as save; a failed write leaves the slot with nothing
 * cached. *n_restored: tokens, *n_read: the file's bytes. 0 or <0 with a one-line err (TERN_ENOTFOUND: no such file;
 * TERN_EFORMAT: not a slot file, truncated or corrupt; TERN_EINVAL: another model, too long). */
int sched_slot_restore(sched_t *s, int slot, const char *path, int *n_restored, uint64_t *n_read, char *err,
                       size_t errlen);
/* For a caller that drives the pipeline on idle slot `slot` itself (tern chat): the stages' cache
 * of the slot holds toks[0..n) (copied; every position as a fresh prefill computes it), so that
 * sched_slot_save writes them. 0 or TERN_EINVAL (no such slot, busy, n outside [0, n_ctx]). */
int sched_slot_adopt(sched_t *s, int slot, const int32_t *toks, int n);
/* RAM prompt cache (llama-server's --cache-ram; off after sched_init): with the prefix cache, a
 * free slot that holds at least SCHED_RAM_MIN tokens, of which a new prompt taking the slot reuses
 * less than half, first has them (with their rows, pipeline kv_read) put into a RAM store of
 * `limit` bytes (promptcache.h: LRU, an entry that a longer one begins is dropped); and a prompt
 * that begins with an entry's tokens SCHED_COPY_MIN more than its slot's cache or a KV copy gives
 * gets the entry's rows written into its slot (kv_write) and starts after them. kv_read / kv_write
 * need the whole pipeline idle, so such an admission first waits for the steps in flight (nothing
 * new is submitted meanwhile: a pause of the other streams of about one step per stage). Output is
 * unchanged (the rows are what a prefill of those tokens computes). limit 0: off (entries freed).
 * 0, or TERN_ENOTSUP (the pipeline cannot move rows, or the model's identity is not set) /
 * TERN_ENOMEM. */
#define SCHED_RAM_MIN 16
int sched_set_ram_cache(sched_t *s, size_t limit);
/* sched_add_at's part (sched_slot.c): before sequence of prompt[0..n) takes free slot `slot`, whose
 * cache it reuses for `keep` tokens and a copy would give `than`: the slot's cache saved, an entry
 * restored (*restored: its tokens, else 0), by the rules above. Returns 1 when it waited for the
 * pipeline (the caller looks at the slots again), 0 when it did nothing. */
int sched_ram_admit(sched_t *s, int slot, const int32_t *prompt, int n, int use, int keep, int than, int *restored);
/* Forgets idle slot `slot`'s cached tokens (llama-server's action=erase): how many it held, or
 * TERN_EINVAL (no such slot, or busy). */
int sched_slot_erase(sched_t *s, int slot);

#endif
