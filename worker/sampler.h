/* sampler: picks the next token from logits — logit biases, then the repetition, frequency and
 * presence penalties over the last N tokens, then greedy (temp <= 0) or top-k, top-p, min-p,
 * temperature and a seeded draw (llama.cpp's order).
 * One sampler per sequence. The draw for a token is a pure function of (seed, the token's
 * position), not a stream: sampling position p gives the same token from the same logits and
 * history whether it comes in a plain step, among draft checks, or in a replay. Lives with the
 * last stage, since logits never cross the network. */
#ifndef TERN_SAMPLER_H
#define TERN_SAMPLER_H
#include <stdint.h>

#define SAMPLER_BIAS_MAX 300   /* logit_bias entries (OpenAI's limit) */

typedef struct sampler_params {
    float temp;           /* <= 0: greedy */
    int top_k;            /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off */
    int repeat_last_n;    /* tokens of history the penalty looks at */
    uint64_t seed;
    int logprobs;         /* 1: sampler_sample fills *logprob (a log-softmax over the whole
                           * vocabulary, ~0.4 ms a token at 128k: only when someone reads it) */
    int top_logprobs;     /* 0..SAMPLER_TOP_MAX alternatives sampler_sample_top returns (needs
                           * logprobs; clamped by sampler_init) */
    float freq_penalty;   /* OpenAI's frequency_penalty: logit -= this · the token's count in the
                           * last repeat_last_n tokens (0: off) */
    float presence_penalty;  /* OpenAI's presence_penalty: logit -= this once the token is among
                           * them (0: off) */
    int n_bias;           /* OpenAI's logit_bias: logit[bias_id[i]] += bias[i], before anything */
    int32_t bias_id[SAMPLER_BIAS_MAX];
    float bias[SAMPLER_BIAS_MAX];
} sampler_params_t;

#define SAMPLER_HIST_MAX 1024   /* the most tokens a penalty looks back (repeat_last_n) */
#define SAMPLER_DROP_MAX 32     /* tokens a sampler_drop may take back with the window still whole */
#define SAMPLER_RING (SAMPLER_HIST_MAX + SAMPLER_DROP_MAX)
#define SAMPLER_TOP_MAX 20
/* the draw depends on the tokens so far (a penalty reads them): prefix caches care (a cached
 * prompt part is not fed, so it is not in the history) */
int sampler_params_use_history(const sampler_params_t *p);

typedef struct sampler {
    sampler_params_t p;
    int pos;                          /* the position of the token the next sample is for */
    int32_t hist[SAMPLER_RING];       /* ring of recent tokens (prompt and generated) */
    int nhist, hpos;
} sampler_t;

void sampler_params_default(sampler_params_t *p);
/* a fresh sampler: empty history, the next sample for position 0 */
void sampler_init(sampler_t *s, const sampler_params_t *p);
void sampler_accept(sampler_t *s, int token);   /* records a token in the history */
/* forgets the n most recent tokens of the history (draft tokens the model refused; clamped to
 * what it holds). Up to SAMPLER_DROP_MAX at a time between accepts keep the window whole. */
void sampler_drop(sampler_t *s, int n);
/* the next sample is for the token at position pos (each sample then moves it on by one) */
void sampler_seek(sampler_t *s, int pos);
/* The uniform [0, 1) draw of the token at position pos of a sequence with this seed: a counter-
 * based generator (splitmix64's mixing of seed and position), the same number wherever it is
 * computed (a device that draws must compute this). */
double sampler_uniform(uint64_t seed, int pos);
/* samples the token at position s->pos (then moves it on by one) from logits (n_vocab,), which
 * it may modify; work: scratch of 2*n_vocab floats+ints (sampler_work_bytes). *logprob
 * (optional) = log softmax prob of the chosen token at temp 1 after the penalty when the params
 * ask for it (logprobs), else 0. Does not record the token (call sampler_accept). */
int sampler_sample(sampler_t *s, float *logits, int n_vocab, void *work, float *logprob);
/* sampler_sample, and when the params ask for alternatives (logprobs and top_logprobs = N > 0)
 * the N most likely tokens at temp 1 after the penalty with their log-probabilities (same
 * definition as *logprob), best first, ties by lower id, in top_ids / top_lp (each N long;
 * either may be NULL). Returns N in *n_top (optional; 0 when not asked). */
int sampler_sample_top(sampler_t *s, float *logits, int n_vocab, void *work, float *logprob, int32_t *top_ids,
                       float *top_lp, int *n_top);
/* The k (<= SAMPLER_TOP_MAX) most likely tokens of logits as they are (no penalty) with their
 * log-softmax, best first, ties by lower id, as sampler_sample_top's alternatives. Returns k
 * (clamped to [0, min(SAMPLER_TOP_MAX, n_vocab)]). */
int sampler_top(const float *logits, int n_vocab, int k, int32_t *ids, float *lp);
unsigned long sampler_work_bytes(int n_vocab);

/* For a device that samples (cuda_stage; only when no logit bias, frequency or presence penalty is
 * set): the distinct ids the repetition penalty changes now (ids: room for SAMPLER_HIST_MAX),
 * returning their count — 0 when the penalty is off. Each becomes logits[id] > 0 ?
 * logits[id] / penalty : logits[id] * penalty. */
int sampler_penalty_ids(const sampler_t *s, int n_vocab, int32_t *ids);
/* sampler_sample without logprobs on logits the penalty was already applied to */
int sampler_sample_penalised(sampler_t *s, float *logits, int n_vocab, void *work);
/* sampler_sample's draw for temp > 0 and top_k = n (< n_vocab), without logprobs, from the n best
 * candidates instead of the logits: ids / logits (after the penalty) best first, ties by lower
 * id. The same token as sampler_sample on the whole row (and the same move of s->pos). */
int sampler_sample_cands(sampler_t *s, const int32_t *ids, const float *logits, int n, void *work);

#endif
