/* draft: a small draft model in the coordinator's process that proposes the next tokens of a
 * sequence for speculative decoding (llama.cpp's -md): the scheduler sends them after the
 * sequence's last token in one step through the big model (on the cluster) and keeps the ones it
 * confirms — one pipeline round trip for several tokens where the two models agree. Greedy: the
 * draft model runs whole on this host's CPU, in one local stage with its own KV cache per slot
 * (what it already holds of a slot is reused, like the prefix cache); the big model may sample at
 * any temperature (sched keeps a draft only where it is the big model's own sample). Not here:
 * drafting from the text itself (sched's prompt lookup), drafting at a temperature. */
#ifndef TERN_DRAFT_H
#define TERN_DRAFT_H
#include <stdint.h>
#include "coordinator/embed.h"
#include "coordinator/pipeline.h"
#include "core/gguf.h"
#include "core/tpool.h"

typedef struct draft draft_t;

typedef struct draft_opts {
    int n_vocab;          /* the big model's vocabulary size */
    int n_seq, n_ctx;     /* slots, positions per slot */
    int n_batch;          /* tokens per step at most */
    int threads;
    int no_mmap;          /* --no-mmap: read the draft's tensors into memory, not map the file */
    int mlock;            /* --mlock: lock its weights (layers, head, token embeddings) in memory */
} draft_opts_t;

/* Opens the draft model at path as o says. Its vocabulary must be the big model's: o->n_vocab
 * tokens whose texts match big's (checked on every token). 0 or <0 with err (a one-line reason). */
int draft_open(draft_t **out, const char *path, const gguf_t *big, const draft_opts_t *o, char *err, size_t errlen);
void draft_close(draft_t **d);
/* Up to k (<= 64) greedy tokens that the draft model says follow toks[0..n) in slot `slot`; the
 * slot's cache keeps what it fed (a later call with the same beginning feeds only the rest).
 * Returns how many (0 on any failure: drafting is only ever an optimisation). */
int draft_propose(draft_t *d, int slot, const int32_t *toks, int n, int k, int32_t *out);

#endif
