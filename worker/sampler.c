/* sampler: candidates are (id, logit) pairs; each filter narrows them, then a draw with a
 * xoroshiro128+ generator seeded by splitmix64(seed). Ties in greedy pick the lowest id. */
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

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static double rng_uniform(sampler_t *s) {
    uint64_t s0 = s->rng[0], s1 = s->rng[1], r = s0 + s1;
    s1 ^= s0;
    s->rng[0] = rotl(s0, 24) ^ s1 ^ (s1 << 16);
    s->rng[1] = rotl(s1, 37);
    return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}

void sampler_init(sampler_t *s, const sampler_params_t *p) {
    memset(s, 0, sizeof *s);
    s->p = *p;
    if (s->p.repeat_last_n > SAMPLER_HIST_MAX) s->p.repeat_last_n = SAMPLER_HIST_MAX;
    if (s->p.repeat_last_n < 0) s->p.repeat_last_n = 0;
    uint64_t x = p->seed;
    s->rng[0] = splitmix64(&x);
    s->rng[1] = splitmix64(&x);
}

void sampler_accept(sampler_t *s, int token) {
    s->hist[s->hpos] = token;
    s->hpos = (s->hpos + 1) % SAMPLER_HIST_MAX;
    if (s->nhist < SAMPLER_HIST_MAX) s->nhist++;
}

unsigned long sampler_work_bytes(int n_vocab) { return (unsigned long)n_vocab * (sizeof(float) + sizeof(int)) + 64; }

typedef struct cand { float logit; int id; } cand_t;

static int cand_cmp(const void *a, const void *b) {
    const cand_t *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

static void apply_penalty(sampler_t *s, float *logits, int n_vocab) {
    int n = s->nhist < s->p.repeat_last_n ? s->nhist : s->p.repeat_last_n;
    float pen = s->p.repeat_penalty;
    if (pen == 1.0f || n == 0) return;
    /* each distinct token is penalised once (llama.cpp): mark with NaN-free sign trick via a pass */
    for (int i = 0; i < n; i++) {
        int id = s->hist[(s->hpos - 1 - i + SAMPLER_HIST_MAX) % SAMPLER_HIST_MAX];
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = s->hist[(s->hpos - 1 - j + SAMPLER_HIST_MAX) % SAMPLER_HIST_MAX] == id;
        if (seen || id < 0 || id >= n_vocab) continue;
        logits[id] = logits[id] > 0 ? logits[id] / pen : logits[id] * pen;
    }
}

static float log_softmax_at(const float *logits, int n, int id) {
    float mx = logits[0];
    for (int i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)(logits[i] - mx));
    return (float)((double)(logits[id] - mx) - log(sum));
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

/* llama.cpp's default chain: penalties, top-k, top-p, min-p (all at temperature 1), then the
 * temperature, then a draw. */
int sampler_sample(sampler_t *s, float *logits, int n_vocab, void *work, float *logprob) {
    apply_penalty(s, logits, n_vocab);
    if (s->p.temp <= 0) {
        int best = 0;
        for (int i = 1; i < n_vocab; i++)
            if (logits[i] > logits[best]) best = i;
        if (logprob) *logprob = s->p.logprobs ? log_softmax_at(logits, n_vocab, best) : 0.0f;
        return best;
    }
    cand_t *c = work;
    int n = top_k_select(logits, n_vocab, s->p.top_k, c);
    double mx = c[0].logit, sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)c[i].logit - mx);
    if (s->p.top_p < 1.0f) {
        double acc = 0;
        for (int i = 0; i < n; i++) {
            acc += exp((double)c[i].logit - mx) / sum;
            if (acc >= s->p.top_p) { n = i + 1; break; }
        }
    }
    if (s->p.min_p > 0) {
        double thr = log((double)s->p.min_p);
        int keep = 1;
        while (keep < n && (double)c[keep].logit - mx >= thr) keep++;
        n = keep;
    }
    double inv_t = 1.0 / s->p.temp;
    sum = 0;
    for (int i = 0; i < n; i++) sum += exp(((double)c[i].logit - mx) * inv_t);
    double r = rng_uniform(s) * sum, acc = 0;
    int pick = c[n - 1].id;
    for (int i = 0; i < n; i++) {
        acc += exp(((double)c[i].logit - mx) * inv_t);
        if (r < acc) { pick = c[i].id; break; }
    }
    if (logprob) *logprob = s->p.logprobs ? log_softmax_at(logits, n_vocab, pick) : 0.0f;
    return pick;
}
