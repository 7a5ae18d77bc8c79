/* sampler: candidates are (id, logit) pairs; each filter narrows them, then a draw keyed on
 * (seed, position) — no generator state, so a draft's check, a replay and plain decoding draw
 * the same number for a position. Ties in greedy pick the lowest id.
 * Without top-k the candidates are ordered lazily: a sorted prefix grows (quickselect + sort of
 * the new part) only as far as top-p / min-p / the draw look. */
#include "worker/sampler.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void sampler_params_default(sampler_params_t *p) {
    memset(p, 0, sizeof *p);
    p->temp = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->seed = 0xC0FFEE;
}

/* splitmix64's finaliser: a bijection of 64 bits that mixes every input bit into every output bit */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double sampler_uniform(uint64_t seed, int pos) {
    /* the seed mixed first, so that seeds a multiple of the increment apart are unrelated */
    uint64_t z = mix64(mix64(seed) + ((uint64_t)(uint32_t)pos + 1) * 0x9e3779b97f4a7c15ULL);
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* the draw of the current sample (its position: s->pos) */
static double rng_uniform(const sampler_t *s) { return sampler_uniform(s->p.seed, s->pos); }

void sampler_init(sampler_t *s, const sampler_params_t *p) {
    memset(s, 0, sizeof *s);
    s->p = *p;
    if (s->p.repeat_last_n > SAMPLER_HIST_MAX) s->p.repeat_last_n = SAMPLER_HIST_MAX;
    if (s->p.repeat_last_n < 0) s->p.repeat_last_n = 0;
    if (s->p.top_logprobs > SAMPLER_TOP_MAX) s->p.top_logprobs = SAMPLER_TOP_MAX;
    if (s->p.top_logprobs < 0 || !s->p.logprobs) s->p.top_logprobs = 0;
    if (s->p.n_bias < 0) s->p.n_bias = 0;
    if (s->p.n_bias > SAMPLER_BIAS_MAX) s->p.n_bias = SAMPLER_BIAS_MAX;
}

void sampler_seek(sampler_t *s, int pos) { s->pos = pos; }

void sampler_drop(sampler_t *s, int n) {
    if (n > s->nhist) n = s->nhist;
    if (n <= 0) return;
    s->nhist -= n;
    s->hpos = (s->hpos - n + SAMPLER_RING) % SAMPLER_RING;
}

void sampler_accept(sampler_t *s, int token) {
    s->hist[s->hpos] = token;
    s->hpos = (s->hpos + 1) % SAMPLER_RING;
    if (s->nhist < SAMPLER_RING) s->nhist++;
}

unsigned long sampler_work_bytes(int n_vocab) { return (unsigned long)n_vocab * (sizeof(float) + sizeof(int)) + 64; }

typedef struct cand { float logit; int id; } cand_t;

static int cand_cmp(const void *a, const void *b) {
    const cand_t *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

#define PEN_SET 2048   /* power of two >= 2 * SAMPLER_HIST_MAX: open addressing stays sparse */

int sampler_params_use_history(const sampler_params_t *p) {
    return p->repeat_last_n > 0 && (p->repeat_penalty != 1.0f || p->freq_penalty != 0.0f || p->presence_penalty != 0.0f);
}

/* the distinct tokens of the last repeat_last_n (most recent first) and, when counts is not NULL,
 * how often each occurs there; a set of the ids seen so far (open addressing, on the stack) keeps
 * it O(n). Returns their number. */
static int window_ids(const sampler_t *s, int n_vocab, int32_t *ids, int *counts) {
    int n = s->nhist < s->p.repeat_last_n ? s->nhist : s->p.repeat_last_n, k = 0;
    int32_t set[PEN_SET];
    int16_t at[PEN_SET];   /* the set slot's index in ids */
    memset(set, 0xff, sizeof set);   /* -1: empty */
    for (int i = 0; i < n; i++) {
        int id = s->hist[(s->hpos - 1 - i + SAMPLER_RING) % SAMPLER_RING];
        if (id < 0 || id >= n_vocab) continue;
        uint32_t h = ((uint32_t)id * 2654435761u) & (PEN_SET - 1);
        while (set[h] >= 0 && set[h] != id) h = (h + 1) & (PEN_SET - 1);
        if (set[h] == id) {
            if (counts) counts[at[h]]++;
            continue;
        }
        set[h] = id;
        at[h] = (int16_t)k;
        if (counts) counts[k] = 1;
        ids[k++] = id;
    }
    return k;
}

/* each distinct token of the last repeat_last_n is penalised once (llama.cpp) */
int sampler_penalty_ids(const sampler_t *s, int n_vocab, int32_t *ids) {
    return s->p.repeat_penalty == 1.0f ? 0 : window_ids(s, n_vocab, ids, NULL);
}

/* llama.cpp's logit bias, then its penalties sampler: per distinct token of the window, the
 * repetition penalty once, then count · frequency + presence subtracted */
static void apply_penalty(sampler_t *s, float *logits, int n_vocab) {
    for (int i = 0; i < s->p.n_bias; i++)
        if (s->p.bias_id[i] >= 0 && s->p.bias_id[i] < n_vocab) logits[s->p.bias_id[i]] += s->p.bias[i];
    if (!sampler_params_use_history(&s->p)) return;
    int32_t ids[SAMPLER_HIST_MAX];
    int counts[SAMPLER_HIST_MAX];
    int n = window_ids(s, n_vocab, ids, counts);
    float pen = s->p.repeat_penalty, fp = s->p.freq_penalty, pp = s->p.presence_penalty;
    for (int i = 0; i < n; i++) {
        float *l = &logits[ids[i]];
        if (pen != 1.0f) *l = *l > 0 ? *l / pen : *l * pen;
        *l -= (float)counts[i] * fp + pp;
    }
}

/* the first index of the largest logit (0 when none compares larger than logits[0], NaNs
 * included): the max in 8 independent lanes — no load-compare chain through the running pick,
 * a 128k-entry vocabulary takes ~4x less time — then the first index holding it */
static int argmax(const float *x, int n) {
    float m[8];
    for (int k = 0; k < 8; k++) m[k] = x[0];
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) m[k] = x[i + k] > m[k] ? x[i + k] : m[k];
    for (; i < n; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
    float mx = m[0];
    for (int k = 1; k < 8; k++) mx = m[k] > mx ? m[k] : mx;
    if (!(mx > x[0])) return 0;
    for (i = 1; i < n; i++)
        if (x[i] == mx) return i;
    return 0;
}

/* the log-softmax normaliser, split as (max, log sum exp(x - max)) so that
 * logprob(id) = (logits[id] - mx) - lse is the same number whoever asks */
static void log_norm(const float *logits, int n, float *mx_out, double *lse) {
    float mx = logits[0];
    for (int i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)(logits[i] - mx));
    *mx_out = mx;
    *lse = log(sum);
}

static float logprob_at(const float *logits, float mx, double lse, int id) {
    return (float)((double)(logits[id] - mx) - lse);
}

/* a is worse than b: lower logit, or equal logit and higher id */
static int worse(const cand_t *a, const cand_t *b) { return a->logit < b->logit || (a->logit == b->logit && a->id > b->id); }

static void heap_down(cand_t *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(&h[l], &h[m])) m = l;
        if (r < n && worse(&h[r], &h[m])) m = r;
        if (m == i) return;
        cand_t t = h[i]; h[i] = h[m]; h[m] = t;
        i = m;
    }
}

/* the k best candidates of logits, sorted best first: O(n log k) with a min-heap */
static int top_k_select(const float *logits, int n_vocab, int k, cand_t *c) {
    if (k <= 0 || k > n_vocab) k = n_vocab;
    for (int i = 0; i < k; i++) { c[i].logit = logits[i]; c[i].id = i; }
    for (int i = k / 2 - 1; i >= 0; i--) heap_down(c, k, i);
    for (int i = k; i < n_vocab; i++) {
        cand_t x = {logits[i], i};
        if (worse(&c[0], &x)) { c[0] = x; heap_down(c, k, 0); }
    }
    qsort(c, (size_t)k, sizeof *c, cand_cmp);
    return k;
}

/* Lazily sorted candidates: c[0..m) holds the m best, sorted best first; c[m..n) the rest in
 * any order. */
typedef struct lazy { cand_t *c; int n, m; } lazy_t;

static void cswap(cand_t *a, cand_t *b) { cand_t t = *a; *a = *b; *b = t; }

/* moves the k best of c[lo..hi) to c[lo..lo+k) (in any order): quickselect, median of three */
static void select_best(cand_t *c, int lo, int hi, int k) {
    int target = lo + k;   /* c[lo..target) must end up better than c[target..hi) */
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (worse(&c[mid], &c[lo])) cswap(&c[mid], &c[lo]);
        if (worse(&c[hi - 1], &c[lo])) cswap(&c[hi - 1], &c[lo]);
        if (worse(&c[hi - 1], &c[mid])) cswap(&c[hi - 1], &c[mid]);
        cand_t piv = c[mid];   /* c[lo] >= piv >= c[hi-1] */
        int i = lo, j = hi - 1;
        while (i <= j) {   /* Hoare partition: better than piv to the left */
            while (worse(&piv, &c[i])) i++;
            while (worse(&c[j], &piv)) j--;
            if (i <= j) { cswap(&c[i], &c[j]); i++; j--; }
        }
        /* c[lo..j] >= piv, c[i..hi) <= piv, c(j..i) == piv */
        if (target == j + 1 || target == i) return;
        if (target <= j) hi = j + 1;
        else if (target > i) lo = i;
        else return;
    }
}

/* makes c[0..want) sorted (want clamped to n); grows at least geometrically */
static void lazy_grow(lazy_t *z, int want) {
    if (want <= z->m) return;
    int to = z->m * 2 > want ? z->m * 2 : want;
    if (to < 64) to = 64;
    if (to > z->n) to = z->n;
    if (to < z->n) select_best(z->c, z->m, z->n, to - z->m);
    qsort(z->c + z->m, (size_t)(to - z->m), sizeof *z->c, cand_cmp);
    z->m = to;
}

static void top_alternatives(const float *logits, int n_vocab, int k, float mx, double lse, int32_t *ids, float *lp) {
    cand_t h[SAMPLER_TOP_MAX];   /* 1 <= k <= SAMPLER_TOP_MAX (sampler_init clamps it) */
    k = top_k_select(logits, n_vocab, k, h);
    for (int i = 0; i < k; i++) {
        if (ids) ids[i] = h[i].id;
        if (lp) lp[i] = logprob_at(logits, mx, lse, h[i].id);
    }
}

int sampler_top(const float *logits, int n_vocab, int k, int32_t *ids, float *lp) {
    if (k > SAMPLER_TOP_MAX) k = SAMPLER_TOP_MAX;
    if (k > n_vocab) k = n_vocab;
    if (k <= 0) return 0;
    float mx;
    double lse;
    log_norm(logits, n_vocab, &mx, &lse);
    top_alternatives(logits, n_vocab, k, mx, lse, ids, lp);
    return k;
}

int sampler_sample(sampler_t *s, float *logits, int n_vocab, void *work, float *logprob) {
    return sampler_sample_top(s, logits, n_vocab, work, logprob, NULL, NULL, NULL);
}

/* the draw from candidates c (z: c[0..z->m) sorted best first) narrowed to n by top-k: top-p,
 * min-p (at temperature 1), the temperature, a draw. logits: the whole row, read only when the
 * candidates are every token and the draw's sum passes the sorted prefix. */
static int draw_cands(sampler_t *s, lazy_t *z, int n, double sum, const float *logits) {
    cand_t *c = z->c;
    double mx = c[0].logit;
    if (s->p.top_p < 1.0f) {
        double acc = 0;
        for (int i = 0; i < n; i++) {
            if (i >= z->m) lazy_grow(z, i + 1);
            acc += exp((double)c[i].logit - mx) / sum;
            if (acc >= s->p.top_p) { n = i + 1; break; }
        }
    }
    if (s->p.min_p > 0) {
        double thr = log((double)s->p.min_p);
        int keep = 1;
        for (;;) {
            if (keep >= n) break;
            if (keep >= z->m) lazy_grow(z, keep + 1);
            if (!((double)c[keep].logit - mx >= thr)) break;
            keep++;
        }
        n = keep;
    }
    double inv_t = 1.0 / s->p.temp;
    sum = 0;
    if (n <= z->m)
        for (int i = 0; i < n; i++) sum += exp(((double)c[i].logit - mx) * inv_t);
    else   /* the whole vocabulary, unsorted past z->m: the sum in any order */
        for (int i = 0; i < n; i++) sum += exp(((double)logits[i] - mx) * inv_t);
    double r = rng_uniform(s) * sum, acc = 0;
    int last = 0;   /* where r rounds past the sum: the last candidate of nonzero weight (never a
                     * token a grammar's mask set to -inf) */
    for (int i = 0; i < n; i++) {
        if (i >= z->m) lazy_grow(z, i + 1);
        double w = exp(((double)c[i].logit - mx) * inv_t);
        acc += w;
        if (w > 0) last = i;
        if (r < acc) return c[i].id;
    }
    return c[last].id;
}

/* Σ exp(logit − best) over the n sorted top-k candidates */
static double cands_sum(const cand_t *c, int n) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)c[i].logit - c[0].logit);
    return sum;
}

/* llama.cpp's default chain: penalties, top-k, top-p, min-p (all at temperature 1), then the
 * temperature, then a draw. penalised: the caller applied the penalty already. */
static int sample_impl(sampler_t *s, float *logits, int n_vocab, void *work, float *logprob, int32_t *top_ids,
                       float *top_lp, int *n_top, int penalised) {
    if (!penalised) apply_penalty(s, logits, n_vocab);
    float lmx = 0;
    double lse = 0;
    int want_lp = s->p.logprobs && (logprob || top_ids || top_lp);
    if (want_lp) log_norm(logits, n_vocab, &lmx, &lse);
    int ntop = s->p.logprobs && s->p.top_logprobs > 0 ? s->p.top_logprobs : 0;
    if (ntop > n_vocab) ntop = n_vocab;
    if (ntop && (top_ids || top_lp)) top_alternatives(logits, n_vocab, ntop, lmx, lse, top_ids, top_lp);
    if (n_top) *n_top = ntop;
    int pick;
    if (s->p.temp <= 0) {
        pick = argmax(logits, n_vocab);
    } else {
        cand_t *c = work;
        lazy_t z = {c, n_vocab, 0};
        int n;
        double sum;
        if (s->p.top_k > 0 && s->p.top_k < n_vocab) {
            n = top_k_select(logits, n_vocab, s->p.top_k, c);
            z.n = z.m = n;
            sum = cands_sum(c, n);
        } else {   /* every token: sorted only as far as needed */
            n = n_vocab;
            for (int i = 0; i < n; i++) { c[i].logit = logits[i]; c[i].id = i; }
            lazy_grow(&z, 1);
            sum = 0;
            for (int i = 0; i < n; i++) sum += exp((double)logits[i] - c[0].logit);
        }
        pick = draw_cands(s, &z, n, sum, logits);
    }
    if (logprob) *logprob = s->p.logprobs ? logprob_at(logits, lmx, lse, pick) : 0.0f;
    s->pos++;
    return pick;
}

int sampler_sample_top(sampler_t *s, float *logits, int n_vocab, void *work, float *logprob, int32_t *top_ids,
                       float *top_lp, int *n_top) {
    return sample_impl(s, logits, n_vocab, work, logprob, top_ids, top_lp, n_top, 0);
}

int sampler_sample_penalised(sampler_t *s, float *logits, int n_vocab, void *work) {
    return sample_impl(s, logits, n_vocab, work, NULL, NULL, NULL, NULL, 1);
}

int sampler_sample_cands(sampler_t *s, const int32_t *ids, const float *logits, int n, void *work) {
    cand_t *c = work;
    for (int i = 0; i < n; i++) { c[i].logit = logits[i]; c[i].id = ids[i]; }
    lazy_t z = {c, n, n};
    int pick = draw_cands(s, &z, n, cands_sum(c, n), NULL);
    s->pos++;
    return pick;
}
