/* sampler: picks the next token from logits in llama.cpp's default chain — logit biases, the
 * repetition, frequency and presence penalties over the last N tokens, DRY, then greedy (temp <=
 * 0) or top-n-sigma, top-k, typical, top-p, min-p, XTC, the temperature (or dynamic temperature)
 * and a seeded draw — or in an order of the user's own (llama.cpp's --samplers: which of those
 * run, and when); or, with mirostat, logit biases, the temperature and mirostat v1 / v2.
 * One sampler per sequence. The draw for a token is a pure function of (seed, the token's
 * position), not a stream: sampling position p gives the same token from the same logits and
 * history whether it comes in a plain step, among draft checks, or in a replay. Lives with the
 * last stage, since logits never cross the network. */
#ifndef TERN_SAMPLER_H
#define TERN_SAMPLER_H
#include <stddef.h>
#include <stdint.h>

#define SAMPLER_BIAS_MAX 300   /* logit_bias entries (OpenAI's limit) */
#define SAMPLER_DRY_SEQ_MAX 8192  /* DRY sequence breakers as token sequences (head + tail) */
#define SAMPLER_DRY_TOK_MAX 8192  /* their tokens in all */
#define SAMPLER_DRY_TAIL_MAX 20   /* tokens after a breaker's head (llama.cpp's MAX_SEQ_LEN) */
#define SAMPLER_ORDER_MAX 16      /* samplers in a chain order (llama.cpp's --samplers; repeats allowed) */
/* llama.cpp's default chain as its --sampling-seq letters: e penalties, d DRY, s top-n-sigma,
 * k top-k, y typical, p top-p, m min-p, x XTC, t temperature */
#define SAMPLER_ORDER_DEFAULT "edskypmxt"

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
    /* llama.cpp's other samplers; each is off at its default */
    float typical_p;      /* locally typical sampling: >= 1 (or <= 0): off */
    float top_n_sigma;    /* keep logits >= max - n·σ: <= 0: off */
    float xtc_probability;   /* XTC: the chance (its own draw, keyed on (seed, position)) that the
                           * most likely tokens above xtc_threshold but the last leave: <= 0: off */
    float xtc_threshold;  /* > 0.5: off */
    float dynatemp_range; /* dynamic temperature: temp ± range by the entropy (0: off) */
    float dynatemp_exponent;
    int mirostat;         /* 0: off; 1, 2: mirostat v1 / v2 in place of the filters (stateful:
                           * mu moves each sample, so such a sequence takes no drafts) */
    float mirostat_tau, mirostat_eta;
    float dry_multiplier; /* DRY: 0: off */
    float dry_base;       /* < 1: off */
    int dry_allowed_length;
    int dry_penalty_last_n;  /* tokens DRY looks back (-1: the whole history it keeps, at most
                           * SAMPLER_DRY_MAX; 0: off) */
    int n_dry_seq;        /* sequence breakers: dry_seq_len[k] tokens each (head, then up to
                           * SAMPLER_DRY_TAIL_MAX), one after another in dry_tok */
    uint8_t dry_seq_len[SAMPLER_DRY_SEQ_MAX];
    int32_t dry_tok[SAMPLER_DRY_TOK_MAX];
    int n_order;          /* the chain's samplers and their order (llama.cpp's --samplers): order[0..
                           * n_order) as SAMPLER_ORDER_DEFAULT's letters; one left out does not run
                           * whatever its parameter says. 0: the default order (sampler_init makes an
                           * order equal to it 0). The logit bias always comes first; mirostat
                           * replaces the chain; temp <= 0 is greedy after the penalties and DRY the
                           * order holds. */
    uint8_t order[SAMPLER_ORDER_MAX];
} sampler_params_t;

#define SAMPLER_HIST_MAX 1024   /* the most tokens a penalty looks back (repeat_last_n) */
#define SAMPLER_DRY_MAX 4096    /* the most tokens DRY looks back (dry_penalty_last_n) */
#define SAMPLER_DROP_MAX 32     /* tokens a sampler_drop may take back with the window still whole */
#define SAMPLER_RING (SAMPLER_DRY_MAX + SAMPLER_DROP_MAX)
#define SAMPLER_TOP_MAX 20
/* the draw depends on the tokens so far (a penalty reads them): prefix caches care (a cached
 * prompt part is not fed, so it is not in the history) */
int sampler_params_use_history(const sampler_params_t *p);
/* DRY is on (it reads the history) */
int sampler_params_dry(const sampler_params_t *p);
/* the params need the host's chain: a logit bias, frequency or presence penalty, DRY, typical,
 * top-n-sigma, XTC, dynamic temperature, mirostat or an order of its own (a device pick does
 * only the default chain's repetition penalty, top-k and the draw) */
int sampler_params_host_only(const sampler_params_t *p);

#define SAMPLER_ORDER_LETTERS 1   /* text is --sampling-seq letters ("kt"), not names */
#define SAMPLER_ORDER_LENIENT 2   /* skip unknown names / letters (llama-server's requests) */
/* The chain order of llama.cpp's --samplers "top_k;temperature" (names, its aliases too: top-k,
 * nucleus, typical, temp, ...; separated by ';' or ',') or, SAMPLER_ORDER_LETTERS in flags, of
 * its --sampling-seq "kt" (SAMPLER_ORDER_DEFAULT's letters) into p->order / p->n_order (0 when
 * it is the default order). Strict (the CLI): 0, or TERN_EINVAL with a one-line reason naming
 * the bad name in err (p unchanged): an unknown name or letter, one tern lacks (infill,
 * adaptive_p), none, or more than SAMPLER_ORDER_MAX. SAMPLER_ORDER_LENIENT (an HTTP request,
 * as llama-server's common_sampler_types_from_names): names match in any case, an unknown or
 * lacking one is skipped; returns how many were skipped, err listing them ("'foo', 'bar'"),
 * and still TERN_EINVAL when none known is left (llama.cpp would run an empty chain, a plain
 * draw at temperature 1 — never what a client meant) or more than SAMPLER_ORDER_MAX. */
int sampler_order_parse(sampler_params_t *p, const char *text, int flags, char *err, size_t errlen);
/* the letter of one sampler name (len bytes, llama.cpp's names and aliases), or 0 */
int sampler_order_letter(const char *name, size_t len);
/* llama.cpp's name of a sampler letter ("top_k" for 'k'), or NULL */
const char *sampler_order_name(int letter);
/* p's order as letters, NUL-terminated (out: room for SAMPLER_ORDER_MAX + 1) */
void sampler_order_letters(const sampler_params_t *p, char *out);

typedef struct sampler {
    sampler_params_t p;
    int pos;                          /* the position of the token the next sample is for */
    int32_t hist[SAMPLER_RING];       /* ring of recent tokens (prompt and generated) */
    int nhist, hpos;
    float mu;                         /* mirostat's target surprise x 2 at the start, then moved by
                                       * each sample (not by position: a replay starts it again) */
    int32_t dry_off[SAMPLER_DRY_SEQ_MAX];      /* where breaker k starts in p.dry_tok */
    uint16_t dry_by_head[SAMPLER_DRY_SEQ_MAX]; /* breakers ordered by head token */
    int n_lead;                       /* with an order: its leading penalties / DRY, which act on
                                       * the whole row before the logprobs (as the default's do) */
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
/* the same for another stream of draws (stream 0 is sampler_uniform; 1 is XTC's coin) */
double sampler_uniform_stream(uint64_t seed, int pos, uint32_t stream);
#define SAMPLER_STREAM_XTC 1u
/* samples the token at position s->pos (then moves it on by one) from logits (n_vocab,), which
 * it may modify; work: scratch of sampler_work_bytes(n_vocab). *logprob (optional) = log softmax
 * prob of the chosen token at temp 1 after the penalty (with an order: after the penalties and DRY
 * that lead it) when the params ask for it (logprobs), else 0. Does not record the token (call
 * sampler_accept). */
int sampler_sample(sampler_t *s, float *logits, int n_vocab, void *work, float *logprob);
/* DRY's penalty on logits (n_vocab,) from the history as it stands (a no-op when off); work as
 * sampler_sample's. For tests and sampler_sample. */
void sampler_dry_apply(const sampler_t *s, float *logits, int n_vocab, void *work);
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

/* For a device that samples (cuda_stage; only when sampler_params_host_only is 0): the distinct ids the repetition penalty changes now (ids: room for SAMPLER_HIST_MAX),
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
