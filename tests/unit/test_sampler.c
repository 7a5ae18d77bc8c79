/* test_sampler: worker/sampler.c against expectations computed here in double precision —
 * greedy argmax (ties, logprob = log-softmax), seeds, top-k / top-p / min-p supports and the
 * frequencies of the renormalised distribution at a temperature (chi-square), and the
 * repetition penalty (divide / multiply, once per distinct token, only within repeat_last_n,
 * across the history ring's wrap), top_logprobs alternatives, and draw-for-draw equality with the
 * previous full-sort implementation (kept here as a reference). llama.cpp's other samplers: a
 * plain reference of its chain (top-n-sigma, top-k, typical, top-p, min-p, XTC, dynamic
 * temperature) token for token on random mixes; each by hand (the kept set and frequencies);
 * the chain's order; XTC's coin as its own keyed stream; DRY's penalty amounts with breakers and
 * windows against a plain O(n²) reference; mirostat v1 / v2 tokens and mu; determinism by position;
 * and tokens at the defaults equal to those drawn before these samplers existed. Orders of the
 * user's own (--samplers): parsing, token for token a plain reference that runs the samplers as
 * listed (which in the default order is the default chain), samplers left out not running. Draw
 * counts are small enough to run in well under a second. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "worker/sampler.h"
#include "core/err.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ----------------------------------------------------------------------------- */

static uint64_t g_rng = 0x5EED;
static double urand(void) {   /* splitmix64 → [0, 1): the test's own generator */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

/* every filter off: the params a test then narrows to what it checks */
static sampler_params_t plain(float temp, uint64_t seed) {
    sampler_params_t p;
    sampler_params_default(&p);
    p.temp = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.seed = seed;
    p.logprobs = 0;
    return p;
}

/* one draw from a copy of logits (the sampler may modify its input) */
static int draw(sampler_t *s, const float *logits, int n, float *lp) {
    float *x = malloc((size_t)n * sizeof *x);
    void *work = malloc(sampler_work_bytes(n));
    assert_non_null(x);
    assert_non_null(work);
    memcpy(x, logits, (size_t)n * sizeof *x);
    int id = sampler_sample(s, x, n, work, lp);
    free(x);
    free(work);
    assert_true(id >= 0 && id < n);
    return id;
}

/* log softmax of x at index id, in double */
static double log_softmax(const double *x, int n, int id) {
    double mx = x[0], sum = 0;
    for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++) sum += exp(x[i] - mx);
    return x[id] - mx - log(sum);
}

static double log_softmax_f(const float *x, int n, int id) {
    double *d = malloc((size_t)n * sizeof *d);
    assert_non_null(d);
    for (int i = 0; i < n; i++) d[i] = x[i];
    double r = log_softmax(d, n, id);
    free(d);
    return r;
}

/* draws `draws` times from logits (n) with params p; counts[n] filled */
static void histogram(const sampler_params_t *p, const float *logits, int n, int draws, int *counts) {
    sampler_t s;
    sampler_init(&s, p);
    float *x = malloc((size_t)n * sizeof *x);
    void *work = malloc(sampler_work_bytes(n));
    assert_non_null(x);
    assert_non_null(work);
    memset(counts, 0, (size_t)n * sizeof *counts);
    for (int d = 0; d < draws; d++) {
        memcpy(x, logits, (size_t)n * sizeof *x);
        int id = sampler_sample(&s, x, n, work, NULL);
        assert_true(id >= 0 && id < n);
        counts[id]++;
    }
    free(x);
    free(work);
}

/* The draw must stay inside keep[] (ids with keep[i] != 0) and follow the distribution
 * softmax(logit / temp) renormalised over the kept ids: a chi-square statistic under a bound
 * far in the tail (p < 1e-6 for <= 8 degrees of freedom), so a correct sampler never fails it
 * while a wrong support or a missing temperature or renormalisation does by a wide margin. */
static void expect_distribution(const int *counts, const float *logits, const int *keep, int n, double temp,
                                int draws, const char *what) {
    double mx = -INFINITY, sum = 0, chi2 = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (keep[i] && logits[i] > mx) mx = logits[i];
    for (int i = 0; i < n; i++)
        if (keep[i]) sum += exp((logits[i] - mx) / temp);
    for (int i = 0; i < n; i++) {
        if (!keep[i]) {
            if (counts[i]) fail_msg("%s: id %d was drawn %d times but is outside the kept set", what, i, counts[i]);
            continue;
        }
        double e = draws * exp((logits[i] - mx) / temp) / sum;
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
        k++;
        if (e > 20 && counts[i] == 0) fail_msg("%s: id %d expected %.0f times, never drawn", what, i, e);
    }
    assert_true(k >= 1 && k <= 9);
    if (chi2 > 45.0) {
        for (int i = 0; i < n; i++)
            if (keep[i]) fprintf(stderr, "  id %d: %d draws, expected %.1f\n", i, counts[i],
                                 draws * exp((logits[i] - mx) / temp) / sum);
        fail_msg("%s: chi-square %.1f over %d ids (bound 45): frequencies do not follow the renormalised "
                 "distribution at temperature %g", what, chi2, k, temp);
    }
}

/* draws with p over logits[0..n): expect_distribution of what they gave */
static void expect_kept(const sampler_params_t *p, const float *logits, const int *keep, int n, double temp, int draws,
                        const char *what) {
    int *counts = malloc((size_t)n * sizeof *counts);
    assert_non_null(counts);
    histogram(p, logits, n, draws, counts);
    expect_distribution(counts, logits, keep, n, temp, draws, what);
    free(counts);
}

/* a on x and b on y (the same logits): the same token, which both accept */
static void expect_same_draw(sampler_t *a, sampler_t *b, float *x, float *y, int n, void *work) {
    int ia = sampler_sample(a, x, n, work, NULL), ib = sampler_sample(b, y, n, work, NULL);
    assert_int_equal(ia, ib);
    sampler_accept(a, ia), sampler_accept(b, ib);
}

/* logits = log(probs) for a distribution given as probabilities */
static void logits_of(const double *probs, int n, float *logits) {
    for (int i = 0; i < n; i++) logits[i] = (float)log(probs[i]);
}

/* ---- greedy ------------------------------------------------------------------------------ */

static void test_greedy_argmax_and_logprob(void **state) {
    (void)state;
    enum { N = 5003 };
    float *x = malloc(N * sizeof *x);
    assert_non_null(x);
    for (int trial = 0; trial < 20; trial++) {
        int want = 0;
        for (int i = 0; i < N; i++) {
            x[i] = (float)(urand() * 30.0 - 15.0);
            if (x[i] > x[want]) want = i;
        }
        sampler_params_t p = plain(0.0f, (uint64_t)trial);
        p.top_k = 3;   /* ignored when greedy */
        p.logprobs = 1;
        sampler_t s;
        sampler_init(&s, &p);
        float lp = 1.0f;
        int got = draw(&s, x, N, &lp);
        if (got != want) fail_msg("trial %d: greedy picked %d (logit %g), argmax is %d (logit %g)", trial, got,
                                  x[got], want, x[want]);
        double ref = log_softmax_f(x, N, want);
        if (fabs(lp - ref) > 1e-5) fail_msg("trial %d: logprob %.8f, log-softmax %.8f", trial, lp, ref);
        assert_true(lp <= 0.0f);
        /* not asked: the logprob is 0 (written, not left alone) */
        p.logprobs = 0;
        sampler_init(&s, &p);
        lp = 1.0f;
        assert_int_equal(draw(&s, x, N, &lp), want);
        assert_true(lp == 0.0f);
        /* no logprob pointer at all */
        assert_int_equal(draw(&s, x, N, NULL), want);
    }
    free(x);
}

static void test_greedy_ties_lowest_id(void **state) {
    (void)state;
    float x[10] = {0, 1, 2, 5, 3, 5, 4, 5, -1, 0};
    sampler_params_t p = plain(0.0f, 1);
    p.logprobs = 1;
    sampler_t s;
    sampler_init(&s, &p);
    float lp;
    assert_int_equal(draw(&s, x, 10, &lp), 3);
    assert_true(fabs(lp - log_softmax_f(x, 10, 3)) < 1e-5);
    /* all equal: id 0, logprob -log(n) */
    float u[7] = {2, 2, 2, 2, 2, 2, 2};
    assert_int_equal(draw(&s, u, 7, &lp), 0);
    assert_true(fabs(lp + log(7.0)) < 1e-5);
    /* the 8-lane scan: a maximum in the tail past the last 8, ties across lanes (the lowest id),
     * NaNs never picked unless at id 0 (then nothing compares larger: id 0), all -inf: id 0 */
    p.logprobs = 0;
    sampler_init(&s, &p);
    float t[19];
    for (int i = 0; i < 19; i++) t[i] = (float)(i % 5);
    t[18] = 9.0f;
    assert_int_equal(draw(&s, t, 19, NULL), 18);
    t[18] = 0.0f;
    t[9] = t[17] = 7.0f;
    assert_int_equal(draw(&s, t, 19, NULL), 9);
    t[3] = NAN;
    assert_int_equal(draw(&s, t, 19, NULL), 9);
    t[0] = NAN;
    assert_int_equal(draw(&s, t, 19, NULL), 0);
    for (int i = 0; i < 19; i++) t[i] = -INFINITY;
    assert_int_equal(draw(&s, t, 19, NULL), 0);
    p.logprobs = 1;
    /* a negative temperature is greedy too; one token: always it, logprob 0 */
    p.temp = -1.0f;
    sampler_init(&s, &p);
    assert_int_equal(draw(&s, x, 10, NULL), 3);
    float one[1] = {-3.5f};
    assert_int_equal(draw(&s, one, 1, &lp), 0);
    assert_true(fabs(lp) < 1e-6);
}

/* the sampled token's logprob is the temperature-1 log-softmax over the whole vocabulary
 * (not the truncated, tempered distribution it was drawn from) */
static void test_logprob_when_sampling(void **state) {
    (void)state;
    enum { N = 300 };
    float x[N];
    for (int i = 0; i < N; i++) x[i] = (float)(urand() * 8.0 - 4.0);
    sampler_params_t p = plain(0.7f, 99);
    p.top_k = 20;
    p.top_p = 0.9f;
    p.logprobs = 1;
    sampler_t s;
    sampler_init(&s, &p);
    for (int d = 0; d < 200; d++) {
        float lp = 1.0f;
        int id = draw(&s, x, N, &lp);
        double ref = log_softmax_f(x, N, id);
        if (fabs(lp - ref) > 1e-5) fail_msg("draw %d: id %d logprob %.8f, log-softmax %.8f", d, id, lp, ref);
    }
    p.logprobs = 0;
    sampler_init(&s, &p);
    float lp = 1.0f;
    draw(&s, x, N, &lp);
    assert_true(lp == 0.0f);
}

/* ---- seeds ------------------------------------------------------------------------------- */

static void seq_of(uint64_t seed, const float *x, int n, int len, int *out) {
    sampler_params_t p = plain(1.0f, seed);
    sampler_t s;
    sampler_init(&s, &p);
    for (int i = 0; i < len; i++) out[i] = draw(&s, x, n, NULL);
}

static void test_seeds(void **state) {
    (void)state;
    enum { N = 1000, L = 100 };
    float *x = malloc(N * sizeof *x);
    assert_non_null(x);
    for (int i = 0; i < N; i++) x[i] = (float)(urand() * 0.5);   /* near uniform: draws spread out */
    int a[L], b[L], c[L];
    seq_of(42, x, N, L, a);
    seq_of(42, x, N, L, b);
    seq_of(43, x, N, L, c);
    assert_memory_equal(a, b, sizeof a);
    int same = 0, distinct = 0;
    for (int i = 0; i < L; i++) same += a[i] == c[i];
    for (int i = 0; i < L; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++) seen |= a[j] == a[i];
        distinct += !seen;
    }
    /* ~1000 equally likely ids: two independent sequences agree at ~0.1 of 100 places */
    if (same > 5) fail_msg("seeds 42 and 43 agree at %d of %d draws", same, L);
    if (distinct < 80) fail_msg("seed 42 drew only %d distinct ids in %d draws", distinct, L);
    /* the seed also fixes draws of a filtered chain */
    sampler_params_t p = plain(0.8f, 7);
    p.top_k = 40, p.top_p = 0.95f, p.min_p = 0.05f, p.repeat_penalty = 1.1f, p.repeat_last_n = 64;
    sampler_t s1, s2;
    sampler_init(&s1, &p);
    sampler_init(&s2, &p);
    for (int i = 0; i < 50; i++) {
        int t1 = draw(&s1, x, N, NULL), t2 = draw(&s2, x, N, NULL);
        assert_int_equal(t1, t2);
        sampler_accept(&s1, t1);
        sampler_accept(&s2, t2);
    }
    free(x);
}

/* ---- top-k ------------------------------------------------------------------------------- */

static void test_top_k(void **state) {
    (void)state;
    enum { N = 100, D = 20000 };
    float x[N];
    int counts[N];
    for (int i = 0; i < N; i++) x[i] = (float)(urand() * 2.0);
    int best = 0;
    for (int i = 1; i < N; i++) best = x[i] > x[best] ? i : best;
    /* top_k = 1: the argmax at any temperature */
    for (int t = 0; t < 3; t++) {
        sampler_params_t p = plain(t == 0 ? 0.5f : t == 1 ? 2.0f : 50.0f, 3 + (uint64_t)t);
        p.top_k = 1;
        histogram(&p, x, N, 500, counts);
        assert_int_equal(counts[best], 500);
    }
    /* top_k = 5 at temperature 1.5: only the 5 best ids, in proportion exp(logit / 1.5) */
    int keep[N] = {0};
    for (int k = 0; k < 5; k++) {
        int b = -1;
        for (int i = 0; i < N; i++)
            if (!keep[i] && (b < 0 || x[i] > x[b])) b = i;
        keep[b] = 1;
    }
    sampler_params_t p = plain(1.5f, 11);
    p.top_k = 5;
    expect_kept(&p, x, keep, N, 1.5, D, "top_k=5, temp 1.5");
    /* top_k larger than the vocabulary: every id can come */
    float y[6] = {0, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
    int all[6] = {1, 1, 1, 1, 1, 1};
    p = plain(1.0f, 12);
    p.top_k = 1000;
    expect_kept(&p, y, all, 6, 1.0, D, "top_k > n_vocab, temp 1");
    /* ties at the cut: the lower ids stay (as in greedy) */
    float u[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    int low3[8] = {1, 1, 1, 0, 0, 0, 0, 0};
    p = plain(1.0f, 13);
    p.top_k = 3;
    expect_kept(&p, u, low3, 8, 1.0, 3000, "top_k=3 over equal logits");
}

/* ---- top-p ------------------------------------------------------------------------------- */

static void test_top_p(void **state) {
    (void)state;
    enum { N = 6, D = 20000 };
    static const double probs[N] = {0.25, 0.35, 0.1, 0.2, 0.06, 0.04};   /* sorted: 1, 0, 3, 2, 4, 5 */
    float x[N];
    int counts[N];
    logits_of(probs, N, x);
    /* llama.cpp keeps the shortest best-first prefix whose mass reaches p: 0.35, 0.60, 0.80 ≥ 0.7 */
    sampler_params_t p = plain(1.5f, 21);
    p.top_p = 0.7f;
    int keep3[N] = {1, 1, 0, 1, 0, 0};
    expect_kept(&p, x, keep3, N, 1.5, D, "top_p=0.7, temp 1.5");
    /* p below the best token's mass: that token alone */
    p.top_p = 0.3f;
    histogram(&p, x, N, 2000, counts);
    assert_int_equal(counts[1], 2000);
    /* after top_k = 3 the mass is renormalised over the 3 survivors (0.4375, 0.3125, 0.25):
     * 0.4375 + 0.3125 = 0.75 ≥ 0.7 keeps 2 (without renormalisation it would keep 3) */
    p = plain(0.8f, 22);
    p.top_k = 3;
    p.top_p = 0.7f;
    int keep2[N] = {1, 1, 0, 0, 0, 0};
    expect_kept(&p, x, keep2, N, 0.8, D, "top_k=3 then top_p=0.7, temp 0.8");
    /* top_p = 1: off */
    p = plain(1.0f, 23);
    p.top_p = 1.0f;
    int all[N] = {1, 1, 1, 1, 1, 1};
    expect_kept(&p, x, all, N, 1.0, D, "top_p=1 (off), temp 1");
}

/* ---- min-p ------------------------------------------------------------------------------- */

static void test_min_p(void **state) {
    (void)state;
    enum { N = 7, D = 20000 };
    static const double probs[N] = {0.1, 0.04, 0.4, 0.15, 0.25, 0.05, 0.01};
    float x[N];
    int counts[N];
    logits_of(probs, N, x);
    /* keeps p >= min_p * p_max (at temperature 1): 0.3 * 0.4 = 0.12 keeps 0.4, 0.25, 0.15 */
    sampler_params_t p = plain(2.0f, 31);
    p.min_p = 0.3f;
    int keep3[N] = {0, 0, 1, 1, 1, 0, 0};
    expect_kept(&p, x, keep3, N, 2.0, D, "min_p=0.3, temp 2");
    /* 0.2 * 0.4 = 0.08: 0.1 joins; the temperature does not move the cut */
    p = plain(0.6f, 32);
    p.min_p = 0.2f;
    int keep4[N] = {1, 0, 1, 1, 1, 0, 0};
    expect_kept(&p, x, keep4, N, 0.6, D, "min_p=0.2, temp 0.6");
    /* min_p = 1: only the best */
    p.min_p = 1.0f;
    histogram(&p, x, N, 1000, counts);
    assert_int_equal(counts[2], 1000);
    /* after top_p: 0.85 keeps 0.4 0.25 0.15 0.1 (mass 0.9), then min_p=0.3 drops 0.1 */
    p = plain(1.0f, 33);
    p.top_p = 0.85f;
    p.min_p = 0.3f;
    expect_kept(&p, x, keep3, N, 1.0, D, "top_p=0.85 then min_p=0.3");
}

/* ---- repetition penalty ------------------------------------------------------------------ */

/* the penalised logits the sampler should see: each distinct token of the last n accepted
 * (hist[0..nh), oldest first) divided by pen if positive, else multiplied */
static void penalise(const float *x, int nv, const int *hist, int nh, int last_n, double pen, double *out) {
    for (int i = 0; i < nv; i++) out[i] = x[i];
    int from = nh - last_n < 0 ? 0 : nh - last_n;
    for (int i = 0; i < nv; i++) {
        int in = 0;
        for (int j = from; j < nh && !in; j++) in = hist[j] == i;
        if (in) out[i] = x[i] > 0 ? x[i] / pen : x[i] * pen;
    }
}

static void test_penalty_decisive(void **state) {
    (void)state;
    sampler_params_t p = plain(0.0f, 1);
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 4;
    sampler_t s;
    float pos[10] = {2.0f, 1.5f, 0, 0, 0, 0, 0, 0, 0, 0};
    /* positive logit divided: 2.0 / 1.5 = 1.33 < 1.5 */
    sampler_init(&s, &p);
    assert_int_equal(draw(&s, pos, 10, NULL), 0);
    sampler_accept(&s, 0);
    assert_int_equal(draw(&s, pos, 10, NULL), 1);
    /* once per distinct token: 2.0 / 1.5 = 1.33 > 1.2 (twice would be 0.89) */
    float pos2[10] = {2.0f, 1.2f, 0, 0, 0, 0, 0, 0, 0, 0};
    sampler_init(&s, &p);
    sampler_accept(&s, 0), sampler_accept(&s, 0), sampler_accept(&s, 0);
    assert_int_equal(draw(&s, pos2, 10, NULL), 0);
    /* negative logit multiplied: -1.0 * 1.5 = -1.5 < -1.2 */
    float neg[10] = {-1.0f, -1.2f, -9, -9, -9, -9, -9, -9, -9, -9};
    sampler_init(&s, &p);
    assert_int_equal(draw(&s, neg, 10, NULL), 0);
    sampler_accept(&s, 0);
    assert_int_equal(draw(&s, neg, 10, NULL), 1);
    /* window: 0 then 3 others is within the last 4; then a 4th pushes it out */
    sampler_init(&s, &p);
    sampler_accept(&s, 0), sampler_accept(&s, 5), sampler_accept(&s, 6), sampler_accept(&s, 7);
    assert_int_equal(draw(&s, pos, 10, NULL), 1);
    sampler_accept(&s, 8);
    assert_int_equal(draw(&s, pos, 10, NULL), 0);
    /* off: penalty 1, or repeat_last_n 0 */
    p.repeat_penalty = 1.0f;
    sampler_init(&s, &p);
    sampler_accept(&s, 0);
    assert_int_equal(draw(&s, pos, 10, NULL), 0);
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 0;
    sampler_init(&s, &p);
    sampler_accept(&s, 0);
    assert_int_equal(draw(&s, pos, 10, NULL), 0);
    /* out-of-vocabulary ids in the history are ignored, not written */
    p.repeat_last_n = 4;
    sampler_init(&s, &p);
    sampler_accept(&s, 1000), sampler_accept(&s, -3);
    assert_int_equal(draw(&s, pos, 10, NULL), 0);
    /* the penalty applies before sampling too: top_k = 1 at temperature 1 picks the penalised argmax */
    p.temp = 1.0f, p.top_k = 1;
    sampler_init(&s, &p);
    sampler_accept(&s, 0);
    assert_int_equal(draw(&s, pos, 10, NULL), 1);
}

/* random logits and histories: the greedy pick and its logprob match a penalty applied here */
static void test_penalty_random(void **state) {
    (void)state;
    enum { NV = 64, NH = 40 };
    float x[NV];
    double want[NV];
    int hist[NH];
    for (int trial = 0; trial < 200; trial++) {
        for (int i = 0; i < NV; i++) x[i] = (float)(urand() * 6.0 - 3.0);
        int last_n = 1 + (int)(urand() * NH), nh = (int)(urand() * NH);
        double pen = 1.05 + urand() * 1.5;
        sampler_params_t p = plain(0.0f, 1);
        p.repeat_penalty = (float)pen;
        p.repeat_last_n = last_n;
        p.logprobs = 1;
        sampler_t s;
        sampler_init(&s, &p);
        for (int i = 0; i < nh; i++) {
            hist[i] = urand() < 0.5 ? (int)(urand() * 4) : (int)(urand() * NV);   /* many repeats */
            sampler_accept(&s, hist[i]);
        }
        penalise(x, NV, hist, nh, last_n, (double)(float)pen, want);
        int best = 0;
        for (int i = 1; i < NV; i++) best = want[i] > want[best] ? i : best;
        float lp;
        int got = draw(&s, x, NV, &lp);
        if (got != best) fail_msg("trial %d (last_n %d, %d accepted, penalty %.3f): picked %d, want %d", trial,
                                  last_n, nh, pen, got, best);
        double ref = log_softmax(want, NV, best);
        if (fabs(lp - ref) > 1e-5) fail_msg("trial %d: logprob %.8f, want %.8f (after the penalty)", trial, lp, ref);
    }
}

/* OpenAI's logit_bias, frequency_penalty and presence_penalty with the repetition penalty, against
 * a double-precision reference: biases first (a repeated id adds up), then per distinct token of
 * the last repeat_last_n: the repetition penalty once, count · frequency + presence subtracted.
 * Tokens outside the vocabulary in the bias list are ignored; the logprob is the penalised one. */
static void test_freq_presence_bias(void **state) {
    (void)state;
    enum { NV = 64, NH = 60 };
    float x[NV];
    double want[NV];
    int hist[NH];
    for (int trial = 0; trial < 300; trial++) {
        for (int i = 0; i < NV; i++) x[i] = (float)(urand() * 6.0 - 3.0);
        sampler_params_t p = plain(0.0f, 1);
        p.repeat_penalty = trial % 3 ? 1.0f : (float)(1.05 + urand());
        p.repeat_last_n = 1 + (int)(urand() * NH);
        p.freq_penalty = (float)(urand() * 2.0 - 0.5);
        p.presence_penalty = trial % 4 ? (float)(urand() * 2.0 - 0.5) : 0.0f;
        p.n_bias = (int)(urand() * 6);
        for (int b = 0; b < p.n_bias; b++) {
            p.bias_id[b] = b == 5 ? NV + 3 : (int)(urand() * NV);   /* one outside the vocabulary */
            p.bias[b] = (float)(urand() * 10.0 - 5.0);
        }
        p.logprobs = 1;
        sampler_t s;
        sampler_init(&s, &p);
        int nh = (int)(urand() * NH);
        for (int i = 0; i < nh; i++) {
            hist[i] = urand() < 0.6 ? (int)(urand() * 5) : (int)(urand() * NV);
            sampler_accept(&s, hist[i]);
        }
        float xb[NV];
        memcpy(xb, x, sizeof xb);
        for (int b = 0; b < p.n_bias; b++)
            if (p.bias_id[b] < NV) xb[p.bias_id[b]] += p.bias[b];
        penalise(xb, NV, hist, nh, p.repeat_last_n, (double)p.repeat_penalty, want);
        int from = nh - p.repeat_last_n < 0 ? 0 : nh - p.repeat_last_n;
        for (int i = 0; i < NV; i++) {
            int count = 0;
            for (int j = from; j < nh; j++) count += hist[j] == i;
            if (count) want[i] -= count * (double)p.freq_penalty + (double)p.presence_penalty;
        }
        int best = 0;
        for (int i = 1; i < NV; i++) best = want[i] > want[best] ? i : best;
        float lp;
        int got = draw(&s, x, NV, &lp);
        if (got != best && fabs(want[got] - want[best]) > 1e-4)
            fail_msg("trial %d: picked %d (%.6f), want %d (%.6f)", trial, got, want[got], best, want[best]);
        double ref = log_softmax(want, NV, got);
        if (fabs(lp - ref) > 1e-4) fail_msg("trial %d: logprob %.8f, want %.8f", trial, lp, ref);
    }
    /* only the repetition penalty: the history matters; only a bias: it does not */
    sampler_params_t p = plain(0.0f, 1);
    assert_false(sampler_params_use_history(&p));
    p.n_bias = 1;
    assert_false(sampler_params_use_history(&p));
    p.presence_penalty = 0.5f;
    assert_true(sampler_params_use_history(&p));
    p.repeat_last_n = 0;
    assert_false(sampler_params_use_history(&p));
}

/* the history is a ring of SAMPLER_HIST_MAX: a token older than that is forgotten, and
 * repeat_last_n above it is clamped */
static void test_penalty_ring(void **state) {
    (void)state;
    sampler_params_t p = plain(0.0f, 1);
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = SAMPLER_HIST_MAX + 500;
    sampler_t s;
    sampler_init(&s, &p);
    float x[16] = {4.0f, 3.0f, 2.5f, 0};
    sampler_accept(&s, 0);
    for (int i = 0; i < SAMPLER_HIST_MAX - 1; i++) sampler_accept(&s, 9);
    assert_int_equal(draw(&s, x, 16, NULL), 1);   /* 0 is exactly SAMPLER_HIST_MAX back: 4 / 2 < 3 */
    sampler_accept(&s, 9);
    assert_int_equal(draw(&s, x, 16, NULL), 0);   /* one more back: overwritten, forgotten */
    for (int i = 0; i < 3000; i++) sampler_accept(&s, 9 + i % 5);   /* wrap several times */
    sampler_accept(&s, 1);
    assert_int_equal(draw(&s, x, 16, NULL), 0);
    sampler_accept(&s, 0);   /* 0 and 1 both penalised: 2, 1.5 < 2.5 */
    assert_int_equal(draw(&s, x, 16, NULL), 2);
}

/* ---- plain temperature draw ---------------------------------------------------------------- */

static void test_temperature(void **state) {
    (void)state;
    enum { N = 8, D = 20000 };
    float x[N];
    int all[N];
    for (int i = 0; i < N; i++) x[i] = (float)(urand() * 3.0 - 1.5), all[i] = 1;
    static const float temps[] = {0.5f, 1.0f, 3.0f};
    for (int t = 0; t < 3; t++) {
        sampler_params_t p = plain(temps[t], 40 + (uint64_t)t);
        char what[64];
        snprintf(what, sizeof what, "no filters, temp %g", temps[t]);
        expect_kept(&p, x, all, N, temps[t], D, what);
    }
}


/* ---- the sampler before the lazy ordering and the O(n) penalty: a full sort, an O(n^2)
 * duplicate check. The current one must draw exactly the same tokens. ---------------------- */

typedef struct ref_cand { float logit; int id; } ref_cand_t;

static int ref_cmp(const void *a, const void *b) {
    const ref_cand_t *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

/* the keyed draw, written out again: splitmix64's finaliser of (mixed seed + (pos + 1) · golden) */
static uint64_t ref_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double ref_uniform(uint64_t seed, int pos) {
    uint64_t z = ref_mix(ref_mix(seed) + ((uint64_t)(uint32_t)pos + 1) * 0x9e3779b97f4a7c15ULL);
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static void ref_penalty(const int32_t *hist, int nhist, const sampler_params_t *p, float *logits, int n_vocab) {
    int n = nhist < p->repeat_last_n ? nhist : p->repeat_last_n;   /* hist: most recent first */
    if (p->repeat_penalty == 1.0f) return;
    for (int i = 0; i < n; i++) {
        int id = hist[i], seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = hist[j] == id;
        if (seen || id < 0 || id >= n_vocab) continue;
        logits[id] = logits[id] > 0 ? logits[id] / p->repeat_penalty : logits[id] * p->repeat_penalty;
    }
}

/* top_k = 0 (or >= n_vocab) only: the whole vocabulary sorted */
static int ref_sample(const sampler_params_t *p, int pos, float *logits, int n_vocab, ref_cand_t *c) {
    for (int i = 0; i < n_vocab; i++) { c[i].logit = logits[i]; c[i].id = i; }
    qsort(c, (size_t)n_vocab, sizeof *c, ref_cmp);
    int n = n_vocab;
    double mx = c[0].logit, sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)c[i].logit - mx);
    if (p->top_p < 1.0f) {
        double acc = 0;
        for (int i = 0; i < n; i++) {
            acc += exp((double)c[i].logit - mx) / sum;
            if (acc >= p->top_p) { n = i + 1; break; }
        }
    }
    if (p->min_p > 0) {
        double thr = log((double)p->min_p);
        int keep = 1;
        while (keep < n && (double)c[keep].logit - mx >= thr) keep++;
        n = keep;
    }
    double inv_t = 1.0 / p->temp;
    sum = 0;
    for (int i = 0; i < n; i++) sum += exp(((double)c[i].logit - mx) * inv_t);
    double r = ref_uniform(p->seed, pos) * sum, acc = 0;
    int pick = c[n - 1].id;
    for (int i = 0; i < n; i++) {
        acc += exp(((double)c[i].logit - mx) * inv_t);
        if (r < acc) { pick = c[i].id; break; }
    }
    return pick;
}

/* random logits (a wide spread, a flat one, and many exact ties), top_k = 0, several top_p /
 * min_p / temperatures / penalties: token for token the same draws as the reference */
static void test_matches_reference(void **state) {
    (void)state;
    enum { V = 3000, STEPS = 40 };
    static const float top_ps[] = {1.0f, 0.95f, 0.5f, 0.999f, 0.1f};
    static const float min_ps[] = {0.0f, 0.05f, 0.0f, 0.001f, 0.2f};
    float *base = malloc(V * sizeof *base), *x = malloc(V * sizeof *x), *y = malloc(V * sizeof *y);
    ref_cand_t *c = malloc(V * sizeof *c);
    void *work = malloc(sampler_work_bytes(V));
    int32_t *hist = malloc(SAMPLER_HIST_MAX * sizeof *hist);
    assert_true(base && x && y && c && work && hist);
    for (int cfg = 0; cfg < 15; cfg++) {
        int shape = cfg % 3;
        for (int i = 0; i < V; i++)
            base[i] = shape == 0 ? (float)(urand() * 20.0 - 10.0)
                    : shape == 1 ? (float)(urand() * 2.0)
                                 : (float)((int)(urand() * 8.0)) * 0.5f;   /* ties */
        sampler_params_t p = plain(cfg % 2 ? 0.7f : 1.3f, 1000 + (uint64_t)cfg);
        p.top_p = top_ps[cfg % 5];
        p.min_p = min_ps[(cfg / 5 + cfg) % 5];
        p.repeat_penalty = cfg % 4 == 3 ? 1.0f : 1.3f;
        p.repeat_last_n = cfg % 2 ? 1024 : 64;
        sampler_t s;
        sampler_init(&s, &p);
        int nh = 0;
        for (int t = 0; t < STEPS; t++) {
            for (int i = 0; i < V; i++) x[i] = y[i] = base[i] + (float)(urand() - 0.5);
            int got = sampler_sample(&s, x, V, work, NULL);
            ref_penalty(hist, nh, &p, y, V);
            int want = ref_sample(&p, t, y, V, c);   /* the t-th sample: position t */
            if (got != want)
                fail_msg("config %d (temp %g top_p %g min_p %g penalty %g), step %d: drew %d, the reference %d", cfg,
                         p.temp, p.top_p, p.min_p, p.repeat_penalty, t, got, want);
            for (int i = 0; i < V; i++)
                if (x[i] != y[i]) fail_msg("config %d step %d: penalised logit %d is %g, the reference %g", cfg, t, i, x[i], y[i]);
            /* history: the drawn token plus a burst of repeats, up to the ring's size */
            int adds = 1 + (int)(urand() * 60);
            for (int k = 0; k < adds; k++) {
                int tok = k == 0 ? got : (int)(urand() * 40);
                sampler_accept(&s, tok);
                memmove(hist + 1, hist, (size_t)(SAMPLER_HIST_MAX - 1) * sizeof *hist);
                hist[0] = tok;
                if (nh < SAMPLER_HIST_MAX) nh++;
            }
        }
    }
    free(base), free(x), free(y), free(c), free(work), free(hist);
}

/* ---- top_logprobs alternatives ------------------------------------------------------------ */

static void test_top_alternatives(void **state) {
    (void)state;
    enum { V = 500 };
    float x[V], y[V];
    double d[V];
    void *work = malloc(sampler_work_bytes(V));
    assert_non_null(work);
    for (int trial = 0; trial < 20; trial++) {
        for (int i = 0; i < V; i++) x[i] = (float)((int)(urand() * 40.0)) * 0.25f;   /* ties */
        sampler_params_t p = plain(trial % 2 ? 0.0f : 0.9f, (uint64_t)trial);
        p.logprobs = 1;
        p.top_logprobs = trial % 5 == 4 ? SAMPLER_TOP_MAX + 7 : 1 + trial % 20;   /* clamped */
        p.repeat_penalty = 1.5f;
        sampler_t s;
        sampler_init(&s, &p);
        int want_n = p.top_logprobs > SAMPLER_TOP_MAX ? SAMPLER_TOP_MAX : p.top_logprobs;
        for (int k = 0; k < 5; k++) sampler_accept(&s, (int)(urand() * V));
        for (int i = 0; i < V; i++) y[i] = x[i];
        for (int i = 0; i < 5; i++) {   /* the penalised logits the sampler sees */
            int id = s.hist[i];
            int dup = 0;
            for (int j = 0; j < i; j++) dup |= s.hist[j] == id;
            if (!dup) y[id] = y[id] > 0 ? y[id] / 1.5f : y[id] * 1.5f;
        }
        for (int i = 0; i < V; i++) d[i] = y[i];
        int32_t ids[SAMPLER_TOP_MAX + 8];
        float lps[SAMPLER_TOP_MAX + 8], lp;
        int n = -1;
        int tok = sampler_sample_top(&s, x, V, work, &lp, ids, lps, &n);
        assert_int_equal(n, want_n);
        for (int i = 0; i < n; i++) {
            /* rank i: exactly i tokens are better (higher logit, or equal and lower id) */
            int better = 0;
            for (int j = 0; j < V; j++) better += y[j] > y[ids[i]] || (y[j] == y[ids[i]] && j < ids[i]);
            if (better != i) fail_msg("trial %d: alternative %d is token %d with %d better tokens", trial, i, ids[i], better);
            assert_true(fabs(lps[i] - log_softmax(d, V, ids[i])) < 1e-5);
            assert_true(lps[i] <= 0.0f);
            if (i) assert_true(lps[i] <= lps[i - 1]);
        }
        if (p.temp <= 0) {   /* greedy: the sampled token is the first alternative, same logprob */
            assert_int_equal(tok, ids[0]);
            assert_true(lp == lps[0]);
        } else {
            assert_true(fabs(lp - log_softmax(d, V, tok)) < 1e-5);
        }
    }
    /* not asked (logprobs off, or N = 0): none */
    sampler_params_t p = plain(0.0f, 1);
    p.top_logprobs = 5;
    sampler_t s;
    sampler_init(&s, &p);
    int n = -1;
    for (int i = 0; i < V; i++) x[i] = (float)i;
    assert_int_equal(sampler_sample_top(&s, x, V, work, NULL, NULL, NULL, &n), V - 1);
    assert_int_equal(n, 0);
    free(work);
}

/* ---- the device's split of the work (cuda_stage samples on the GPU) ------------------------- */

/* a is better than b: the candidates' order (higher logit, then lower id) */
static int better_than(const float *y, int a, int b) { return y[a] > y[b] || (y[a] == y[b] && a < b); }

/* The device applies sampler_penalty_ids' penalty, then either takes the argmax
 * (sampler_sample_penalised, temp 0) or hands the top_k best (computed here by counting) to
 * sampler_sample_cands; both must give sampler_sample's token, draw after draw, with the history
 * growing (the penalty changes) and the positions in step. */
static void test_device_split(void **state) {
    (void)state;
    enum { V = 700 };
    float x[V], y[V], cl[64];
    int32_t ci[64], pid[SAMPLER_HIST_MAX];
    void *w1 = malloc(sampler_work_bytes(V)), *w2 = malloc(sampler_work_bytes(V));
    assert_non_null(w1);
    assert_non_null(w2);
    const int ks[] = {1, 2, 5, 40, 64};
    for (int trial = 0; trial < 40; trial++) {
        sampler_params_t p = plain(trial % 4 == 0 ? 0.0f : 0.3f + 0.1f * (float)(trial % 9), (uint64_t)trial);
        p.top_k = ks[trial % 5];
        p.top_p = trial % 3 ? 0.9f : 1.0f;
        p.min_p = trial % 2 ? 0.05f : 0.0f;
        p.repeat_penalty = trial % 6 == 5 ? 1.0f : 1.3f;
        p.repeat_last_n = 8 + trial;
        sampler_t a, b;
        sampler_init(&a, &p);
        sampler_init(&b, &p);
        for (int step = 0; step < 30; step++) {
            int coarse = (trial + step) % 2;   /* ties, zeros of both signs */
            for (int i = 0; i < V; i++)
                x[i] = coarse ? (float)((int)(urand() * 12.0) - 6) * 0.5f : (float)(urand() * 8.0 - 4.0);
            if (coarse) x[(int)(urand() * V)] = -0.0f;
            memcpy(y, x, sizeof x);
            int ta = sampler_sample(&a, x, V, w1, NULL);
            int np = sampler_penalty_ids(&b, V, pid);
            if (p.repeat_penalty == 1.0f) assert_int_equal(np, 0);
            for (int i = 0; i < np; i++) {
                for (int j = 0; j < i; j++) assert_int_not_equal(pid[i], pid[j]);   /* distinct */
                y[pid[i]] = y[pid[i]] > 0 ? y[pid[i]] / p.repeat_penalty : y[pid[i]] * p.repeat_penalty;
            }
            int tb;
            if (p.temp <= 0) {
                tb = sampler_sample_penalised(&b, y, V, w2);
            } else {
                int k = p.top_k;
                for (int i = 0; i < V; i++) {   /* rank by counting: the device's order */
                    int r = 0;
                    for (int j = 0; j < V && r < k; j++) r += better_than(y, j, i);
                    if (r < k) ci[r] = i, cl[r] = y[i];
                }
                tb = sampler_sample_cands(&b, ci, cl, k, w2);
            }
            if (ta != tb) fail_msg("trial %d step %d: sampler_sample %d, the device split %d", trial, step, ta, tb);
            assert_int_equal(a.pos, b.pos);
            sampler_accept(&a, ta);
            sampler_accept(&b, tb);
        }
    }
    free(w1);
    free(w2);
}

/* A grammar's mask (worker/stage.c): the logits of the tokens it leaves out are -inf. Whatever the
 * filters (greedy, top-k larger than what is left, top-p, min-p, penalty, a tiny temperature),
 * no draw lands on one, and the logprob is that of the masked distribution. */
static void test_masked_logits(void **state) {
    (void)state;
    enum { NV = 1000 };
    float *l = malloc(NV * sizeof(float)), *w = malloc(NV * sizeof(float));
    void *work = malloc(sampler_work_bytes(NV));
    assert_non_null(l);
    assert_non_null(w);
    assert_non_null(work);
    const int keep[3] = {17, 503, 998};   /* not the best tokens of the row */
    for (int round = 0; round < 400; round++) {
        for (int i = 0; i < NV; i++) l[i] = (float)(urand() * 8.0);
        for (int i = 0; i < NV; i++) {
            int in = i == keep[0] || i == keep[1] || i == keep[2];
            if (!in) l[i] = -INFINITY;
        }
        sampler_params_t p = plain(round % 5 == 0 ? 0.0f : round % 5 == 1 ? 1e-4f : 0.9f, 77 + (uint64_t)round);
        p.top_k = round % 3 == 0 ? 40 : 0;
        p.top_p = round % 4 == 0 ? 0.5f : 1.0f;
        p.min_p = round % 7 == 0 ? 0.2f : 0.0f;
        p.repeat_penalty = round % 2 ? 1.3f : 1.0f;
        p.logprobs = 1;
        sampler_t sm;
        sampler_init(&sm, &p);
        sampler_accept(&sm, keep[round % 3]);
        sampler_accept(&sm, 5);
        memcpy(w, l, NV * sizeof(float));
        float lp = 1;
        int t = sampler_sample(&sm, w, NV, work, &lp);
        assert_true(t == keep[0] || t == keep[1] || t == keep[2]);
        assert_true(isfinite(lp) && lp <= 0.0f && lp >= -60.0f);
        double sum = 0;   /* the three carry all the mass: log p of the pick against theirs */
        float mx = -INFINITY;
        for (int k = 0; k < 3; k++) mx = fmaxf(mx, w[keep[k]]);
        for (int k = 0; k < 3; k++) sum += exp((double)w[keep[k]] - mx);
        assert_true(fabs(((double)w[t] - mx - log(sum)) - lp) < 1e-4);
    }
    free(l);
    free(w);
    free(work);
}

/* ---- draws keyed on the position ------------------------------------------------------------ */

/* The draw of position p depends on (seed, p) alone: a sampler that went through the p rows
 * before it (other logits, its own tokens as history, extra tokens taken back with
 * sampler_drop) and a fresh one given the same history and sent to p (sampler_seek) pick the
 * same token; so does taking p again (a replay). A stream generator fails this at the first
 * position after 0. Also: the keyed draw is the one written out here (ref_uniform), seeds apart
 * by the key's increment are unrelated, and draws along the positions are spread out. */
static void test_draw_by_position(void **state) {
    (void)state;
    enum { N = 300, P = 60 };
    float *x = malloc((size_t)P * N * sizeof *x), *y = malloc(N * sizeof *y);
    void *work = malloc(sampler_work_bytes(N));
    assert_true(x && y && work);
    for (int cfg = 0; cfg < 4; cfg++) {
        sampler_params_t p = plain(cfg == 3 ? 2.0f : 0.8f, 7 + (uint64_t)cfg);
        if (cfg >= 1) p.top_k = 40, p.top_p = 0.95f, p.min_p = 0.02f;
        if (cfg >= 2) p.repeat_penalty = 1.3f, p.repeat_last_n = 16, p.presence_penalty = 0.2f;
        for (int i = 0; i < P * N; i++) x[i] = (float)(urand() * 4.0);
        sampler_t a;
        sampler_init(&a, &p);
        int32_t hist[P];
        int differs = 0;
        for (int pos = 0; pos < P; pos++) {
            memcpy(y, x + (size_t)pos * N, N * sizeof *y);
            sampler_seek(&a, pos);
            int ta = sampler_sample(&a, y, N, work, NULL);
            assert_int_equal(a.pos, pos + 1);
            sampler_t b;   /* fresh: the same history, sent straight to pos */
            sampler_init(&b, &p);
            for (int k = 0; k < pos; k++) sampler_accept(&b, hist[k]);
            sampler_seek(&b, pos);
            memcpy(y, x + (size_t)pos * N, N * sizeof *y);
            int tb = sampler_sample(&b, y, N, work, NULL);
            if (ta != tb) fail_msg("config %d position %d: %d after the rows before, %d from a fresh sampler", cfg, pos, ta, tb);
            sampler_seek(&a, pos);   /* a replay of the position */
            memcpy(y, x + (size_t)pos * N, N * sizeof *y);
            assert_int_equal(sampler_sample(&a, y, N, work, NULL), ta);
            sampler_seek(&b, pos + 1);   /* the next position's draw, from these logits: another token, mostly */
            memcpy(y, x + (size_t)pos * N, N * sizeof *y);
            differs += sampler_sample(&b, y, N, work, NULL) != ta;
            hist[pos] = ta;
            sampler_accept(&a, ta);
            /* drafts refused: taken in, then taken back; the history is as before */
            int extra = pos % 3 ? 1 + pos % SAMPLER_DROP_MAX : 0;
            for (int k = 0; k < extra; k++) sampler_accept(&a, (int)(urand() * N));
            sampler_drop(&a, extra);
        }
        if (differs < P / 2) fail_msg("config %d: the next position drew the same token %d times of %d", cfg, P - differs, P);
    }
    /* the draw itself */
    int same = 0;
    double mean = 0;
    for (int pos = 0; pos < 4000; pos++) {
        double u = sampler_uniform(99, pos);
        assert_true(u >= 0.0 && u < 1.0);
        assert_true(u == ref_uniform(99, pos));
        mean += u / 4000;
        same += u == sampler_uniform(99 + 0x9e3779b97f4a7c15ULL, pos - 1) || u == sampler_uniform(100, pos);
    }
    assert_int_equal(same, 0);
    assert_true(fabs(mean - 0.5) < 0.02);   /* 6 sigma */
    free(x), free(y), free(work);
}

/* sampler_drop keeps the window whole: with the ring full, SAMPLER_DROP_MAX tokens taken in and
 * back leave the last repeat_last_n = SAMPLER_HIST_MAX tokens all in view (the penalty sees the
 * same ids as a sampler that never saw them); dropping more than it holds empties it. */
static void test_drop_window(void **state) {
    (void)state;
    enum { N = 4096 };
    sampler_params_t p = plain(0.0f, 1);
    p.repeat_penalty = 1.5f, p.repeat_last_n = SAMPLER_HIST_MAX;
    sampler_t a, b;
    sampler_init(&a, &p);
    sampler_init(&b, &p);
    for (int i = 0; i < 3 * SAMPLER_HIST_MAX; i++) {   /* unique ids near the window's far end */
        int t = i % SAMPLER_HIST_MAX == 5 ? 3000 + i / SAMPLER_HIST_MAX : i % 50;
        sampler_accept(&a, t), sampler_accept(&b, t);
    }
    for (int k = 0; k < SAMPLER_DROP_MAX; k++) sampler_accept(&a, 100 + k);
    sampler_drop(&a, SAMPLER_DROP_MAX);
    int32_t ia[SAMPLER_HIST_MAX], ib[SAMPLER_HIST_MAX];
    int na = sampler_penalty_ids(&a, N, ia), nb = sampler_penalty_ids(&b, N, ib);
    assert_int_equal(na, nb);
    assert_int_equal(na, 50 + 1);   /* 0..49 and the one unique id the window still holds */
    assert_memory_equal(ia, ib, (size_t)na * sizeof *ia);
    sampler_drop(&a, 5 * SAMPLER_HIST_MAX);
    assert_int_equal(sampler_penalty_ids(&a, N, ia), 0);
    sampler_accept(&a, 7);
    assert_int_equal(sampler_penalty_ids(&a, N, ia), 1);
}

/* ---- llama.cpp's other samplers: a plain reference of its chain, written out again ---------- */

/* the keyed draw of another stream (XTC's coin: stream 1), written out again */
static double ref_uniform_stream(uint64_t seed, int pos, uint32_t stream) {
    uint64_t z = ref_mix(ref_mix(seed) + (uint64_t)stream * 0xd1b54a32d192ed03ULL +
                         ((uint64_t)(uint32_t)pos + 1) * 0x9e3779b97f4a7c15ULL);
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* softmax of c[0..n) (c[0] the largest) into p, as floats */
static void ref_softmax(const ref_cand_t *c, int n, float *p) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)c[i].logit - c[0].logit);
    for (int i = 0; i < n; i++) p[i] = (float)(exp((double)c[i].logit - c[0].logit) / sum);
}

typedef struct ref_typ { float score; int i; } ref_typ_t;
static int ref_typ_cmp(const void *a, const void *b) {
    const ref_typ_t *x = a, *y = b;
    return x->score != y->score ? (x->score < y->score ? -1 : 1) : x->i - y->i;
}

/* typical-p on c[0..n) with probabilities pr[0..n) (same order): the candidates whose surprise is
 * closest to the entropy, until their mass passes typical_p, in that order; returns their count */
static int ref_typical(float typical_p, ref_cand_t *c, const float *pr, int n) {
    float ent = 0, cum = 0;
    for (int i = 0; i < n; i++) if (pr[i] > 0) ent += -pr[i] * logf(pr[i]);
    ref_typ_t *t = malloc((size_t)n * sizeof *t);
    ref_cand_t *kept = malloc((size_t)n * sizeof *kept);
    assert_true(t && kept);
    for (int i = 0; i < n; i++) t[i] = (ref_typ_t){fabsf(-logf(pr[i]) - ent), i};
    qsort(t, (size_t)n, sizeof *t, ref_typ_cmp);
    int keep = n;
    for (int i = 0; i < n; i++) {
        cum += pr[t[i].i];
        if (cum > typical_p) { keep = i + 1; break; }
    }
    for (int i = 0; i < keep; i++) kept[i] = c[t[i].i];
    memcpy(c, kept, (size_t)keep * sizeof *c);
    free(t), free(kept);
    return keep;
}

/* top-p, min-p and XTC (at position pos, pr: n floats of scratch) on sorted c[0..n): the count kept */
static int ref_top_p(const sampler_params_t *p, const ref_cand_t *c, int n) {
    if (p->top_p < 1.0f) {
        double sum = 0, acc = 0;
        for (int i = 0; i < n; i++) sum += exp((double)c[i].logit - c[0].logit);
        for (int i = 0; i < n; i++) {
            acc += exp((double)c[i].logit - c[0].logit) / sum;
            if (acc >= p->top_p) return i + 1;
        }
    }
    return n;
}

static int ref_min_p(const sampler_params_t *p, const ref_cand_t *c, int n) {
    if (p->min_p <= 0) return n;
    int keep = 1;
    while (keep < n && (double)c[keep].logit - c[0].logit >= log((double)p->min_p)) keep++;
    return keep;
}

static int ref_xtc(const sampler_params_t *p, int pos, ref_cand_t *c, int n, float *pr) {
    if (p->xtc_probability > 0 && p->xtc_threshold <= 0.5f && n >= 2 &&
        !((float)ref_uniform_stream(p->seed, pos, 1) > p->xtc_probability)) {
        ref_softmax(c, n, pr);
        int last = 0;
        for (int i = 0; i < n && pr[i] >= p->xtc_threshold; i++) last = i;
        memmove(c, c + last, (size_t)(n - last) * sizeof *c);
        n -= last;
    }
    return n;
}

/* Sorted candidates after llama.cpp's chain up to (not including) the temperature: top-n-sigma,
 * top-k, typical, top-p, min-p, XTC at position pos. Returns their count; c sorted best first. */
static int ref_filters(const sampler_params_t *p, int pos, const float *logits, int nv, ref_cand_t *c) {
    int n = 0;
    if (p->top_n_sigma > 0 && nv > 1) {
        float mx = logits[0], sum = 0, acc = 0;
        int cnt = 0;
        for (int i = 0; i < nv; i++)
            if (logits[i] != -INFINITY) { if (logits[i] > mx) mx = logits[i]; sum += logits[i]; cnt++; }
        float mean = sum / (float)cnt;
        for (int i = 0; i < nv; i++)
            if (logits[i] != -INFINITY) acc += (float)pow((double)(logits[i] - mean), 2);
        float thr = mx - p->top_n_sigma * sqrtf(acc / (float)cnt);
        for (int i = 0; i < nv; i++)
            if (!(logits[i] < thr)) c[n].logit = logits[i], c[n++].id = i;
    } else {
        for (int i = 0; i < nv; i++) c[n].logit = logits[i], c[n++].id = i;
    }
    qsort(c, (size_t)n, sizeof *c, ref_cmp);
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    float *pr = malloc((size_t)n * sizeof *pr);
    assert_non_null(pr);
    if (p->typical_p > 0 && p->typical_p < 1 && n > 1) {
        ref_softmax(c, n, pr);
        n = ref_typical(p->typical_p, c, pr, n);
        qsort(c, (size_t)n, sizeof *c, ref_cmp);
    }
    n = ref_min_p(p, c, ref_top_p(p, c, n));
    n = ref_xtc(p, pos, c, n, pr);
    free(pr);
    return n;
}

/* the temperature llama.cpp's temp-ext gives c[0..n) */
static double ref_temp(const sampler_params_t *p, const ref_cand_t *c, int n) {
    if (p->dynatemp_range <= 0) return p->temp;
    if (n <= 1) return 1.0;
    float lo = p->temp - p->dynatemp_range > 0 ? p->temp - p->dynatemp_range : 0, hi = p->temp + p->dynatemp_range;
    float *pr = malloc((size_t)n * sizeof *pr), ent = 0;
    assert_non_null(pr);
    ref_softmax(c, n, pr);
    for (int i = 0; i < n; i++) if (pr[i] > 0) ent -= pr[i] * logf(pr[i]);
    free(pr);
    return lo + (hi - lo) * powf(ent / -logf(1.0f / (float)n), p->dynatemp_exponent);
}

/* the draw at temperature t over sorted c[0..n) with the uniform u; *pp: the pick's probability */
static int ref_draw(const ref_cand_t *c, int n, double t, double u, float *pp) {
    double sum = 0, acc = 0;
    for (int i = 0; i < n; i++) sum += exp(((double)c[i].logit - c[0].logit) / t);
    double r = u * sum;
    int pick = n - 1;
    for (int i = 0; i < n; i++) {
        acc += exp(((double)c[i].logit - c[0].logit) / t);
        if (r < acc) { pick = i; break; }
    }
    if (pp) *pp = (float)(exp(((double)c[pick].logit - c[0].logit) / t) / sum);
    return c[pick].id;
}

static int ref_chain(const sampler_params_t *p, int pos, const float *logits, int nv, ref_cand_t *c) {
    int n = ref_filters(p, pos, logits, nv, c);
    return ref_draw(c, n, ref_temp(p, c, n), ref_uniform(p->seed, pos), NULL);
}

/* random logits and random mixes of the new samplers with the old: token for token the reference */
static void test_chain_matches_reference(void **state) {
    (void)state;
    enum { V = 700, STEPS = 30 };
    float *x = malloc(V * sizeof *x), *y = malloc(V * sizeof *y);
    ref_cand_t *c = malloc(V * sizeof *c);
    void *work = malloc(sampler_work_bytes(V));
    assert_true(x && y && c && work);
    int used_xtc = 0, xtc_fired = 0;
    for (int cfg = 0; cfg < 40; cfg++) {
        sampler_params_t p = plain(urand() < 0.5 ? 0.7f : 1.2f, 500 + (uint64_t)cfg);
        if (urand() < 0.5) p.typical_p = (float)(0.2 + 0.7 * urand());
        if (urand() < 0.4) p.top_n_sigma = (float)(0.5 + 2.5 * urand());
        if (urand() < 0.5) p.xtc_probability = (float)(0.3 + 0.7 * urand()), p.xtc_threshold = (float)(0.02 + 0.2 * urand());
        if (urand() < 0.4) p.dynatemp_range = (float)(0.2 + urand()), p.dynatemp_exponent = (float)(0.5 + 1.5 * urand());
        if (urand() < 0.5) p.top_k = 1 + (int)(urand() * 80);
        if (urand() < 0.4) p.top_p = (float)(0.5 + 0.49 * urand());
        if (urand() < 0.4) p.min_p = (float)(0.01 + 0.1 * urand());
        used_xtc += p.xtc_probability > 0;
        sampler_t s;
        sampler_init(&s, &p);
        double spread = cfg % 2 ? 6.0 : 2.0;
        for (int t = 0; t < STEPS; t++) {
            for (int i = 0; i < V; i++) x[i] = y[i] = (float)(urand() * spread - spread / 2);
            int got = sampler_sample(&s, x, V, work, NULL);
            int want = ref_chain(&p, t, y, V, c);
            if (p.xtc_probability > 0 && ref_uniform_stream(p.seed, t, 1) <= p.xtc_probability) xtc_fired++;
            if (got != want)
                fail_msg("config %d (temp %g top_k %d typical %g nsigma %g xtc %g/%g dynatemp %g^%g top_p %g "
                         "min_p %g) step %d: drew %d, the reference %d", cfg, p.temp, p.top_k, p.typical_p,
                         p.top_n_sigma, p.xtc_probability, p.xtc_threshold, p.dynatemp_range, p.dynatemp_exponent,
                         p.top_p, p.min_p, t, got, want);
        }
    }
    assert_true(used_xtc > 5 && xtc_fired > 20);   /* the mixes did exercise XTC */
    free(x), free(y), free(c), free(work);
}

/* draws of params p from logits at positions 0..n-1 into out (a fresh sampler, in order) */
static void draws_of(const sampler_params_t *p, const float *logits, int nv, int n, int *out) {
    sampler_t s;
    sampler_init(&s, p);
    for (int t = 0; t < n; t++) out[t] = draw(&s, logits, nv, NULL);
}

/* draws_of, then the same positions drawn backwards on one sampler, seeking to each: the same */
static void expect_by_position(const sampler_params_t *p, const float *logits, int nv, int n, int *fwd) {
    draws_of(p, logits, nv, n, fwd);
    sampler_t s;
    sampler_init(&s, p);
    for (int t = n - 1; t >= 0; t--) {
        sampler_seek(&s, t);
        assert_int_equal(draw(&s, logits, nv, NULL), fwd[t]);
    }
}

/* probabilities .4 .3 .2 .06 .04: H = 1.347 nats; |-ln p - H| = .431 .143 .262 1.466 1.872, so
 * typical 0.45 keeps ids 1 and 2 (mass .5) — not the most likely id 0 */
static void test_typical_by_hand(void **state) {
    (void)state;
    static const double probs[] = {0.4, 0.3, 0.2, 0.06, 0.04};
    float lg[5];
    logits_of(probs, 5, lg);
    sampler_params_t p = plain(1.0f, 11);
    p.typical_p = 0.45f;
    static const int keep[] = {0, 1, 1, 0, 0};
    expect_kept(&p, lg, keep, 5, 1.0, 4000, "typical 0.45");
}

/* logits 4 3 2 1 0 -1 -2 -3: mean .5, σ = sqrt(5.25) = 2.291; n = 1: max − σ = 1.709 keeps ids
 * 0, 1, 2 */
static void test_top_n_sigma_by_hand(void **state) {
    (void)state;
    static const float lg[] = {4, 3, 2, 1, 0, -1, -2, -3};
    sampler_params_t p = plain(1.0f, 12);
    p.top_n_sigma = 1.0f;
    static const int keep[] = {1, 1, 1, 0, 0, 0, 0, 0};
    expect_kept(&p, lg, keep, 8, 1.0, 4000, "top-n-sigma 1");
}

/* probabilities .5 .3 .15 .05, threshold .1: .5 .3 .15 pass, all but the last of them leave;
 * probability 1: every draw is id 2 or 3 in the ratio .15 : .05. XTC's coin is its own stream:
 * at probability .5, where the reference coin says no, the token is the one drawn without XTC. */
static void test_xtc_by_hand(void **state) {
    (void)state;
    static const double probs[] = {0.5, 0.3, 0.15, 0.05};
    float lg[4];
    logits_of(probs, 4, lg);
    sampler_params_t p = plain(1.0f, 13);
    p.xtc_probability = 1.0f;
    p.xtc_threshold = 0.1f;
    static const int keep[] = {0, 0, 1, 1};
    expect_kept(&p, lg, keep, 4, 1.0, 4000, "XTC 1 / 0.1");
    enum { N = 400 };
    int with[N], without[N], fired = 0, same_stream = 0;
    sampler_params_t q = plain(1.0f, 14);
    draws_of(&q, lg, 4, N, without);
    q.xtc_probability = 0.5f;
    q.xtc_threshold = 0.1f;
    draws_of(&q, lg, 4, N, with);
    for (int t = 0; t < N; t++) {
        int coin = (float)ref_uniform_stream(q.seed, t, 1) <= q.xtc_probability;
        fired += coin;
        same_stream += (ref_uniform_stream(q.seed, t, 1) <= 0.5) == (ref_uniform(q.seed, t) <= 0.5);
        if (!coin) assert_int_equal(with[t], without[t]);
        else assert_true(with[t] == 2 || with[t] == 3);
    }
    assert_true(fired > N / 4 && fired < 3 * N / 4);
    assert_true(same_stream < 3 * N / 4);   /* not the token draw's number again */
    q.xtc_threshold = 0.6f;   /* > 0.5: off */
    draws_of(&q, lg, 4, N, with);
    assert_memory_equal(with, without, sizeof with);
}

/* probabilities .85 .05 .05 .05: H / ln 4 = .4234; temp 1 range .8 exponent 2: .2 + 1.6 · .4234² =
 * .4868 — the draw follows softmax(logit / .4868) */
static void test_dynatemp_by_hand(void **state) {
    (void)state;
    static const double probs[] = {0.85, 0.05, 0.05, 0.05};
    float lg[4];
    logits_of(probs, 4, lg);
    double h = 0;
    for (int i = 0; i < 4; i++) h -= probs[i] * log(probs[i]);
    double t = 0.2 + 1.6 * pow(h / log(4.0), 2.0);
    assert_true(fabs(t - 0.4868) < 1e-3);
    sampler_params_t p = plain(1.0f, 15);
    p.dynatemp_range = 0.8f;
    p.dynatemp_exponent = 2.0f;
    static const int keep[] = {1, 1, 1, 1};
    expect_kept(&p, lg, keep, 4, t, 6000, "dynatemp");
}

/* the chain's order: top-k before typical (typical over the top 3 of .4 .3 .2 .06 .04 keeps ids 0
 * and 1, where typical first would keep 1 and 2), min-p before XTC (min-p .2 leaves .5 .3 .15,
 * XTC .1 then keeps id 2 alone; XTC first would leave 2 and 3) */
static void test_chain_order(void **state) {
    (void)state;
    static const double p1[] = {0.4, 0.3, 0.2, 0.06, 0.04}, p2[] = {0.5, 0.3, 0.15, 0.05};
    float l1[5], l2[4];
    logits_of(p1, 5, l1);
    logits_of(p2, 4, l2);
    sampler_params_t p = plain(1.0f, 16);
    p.top_k = 3;
    p.typical_p = 0.45f;
    int counts[5];
    static const int keep1[] = {1, 1, 0, 0, 0};
    expect_kept(&p, l1, keep1, 5, 1.0, 4000, "top-k 3 then typical .45");
    p = plain(1.0f, 17);
    p.min_p = 0.2f;
    p.xtc_probability = 1.0f;
    p.xtc_threshold = 0.1f;
    histogram(&p, l2, 4, 500, counts);
    assert_int_equal(counts[2], 500);
}

/* the same (seed, position) gives the same token in any order of positions and on a fresh sampler */
static void test_new_samplers_deterministic(void **state) {
    (void)state;
    enum { V = 300, N = 60 };
    float *lg = malloc(V * sizeof *lg);
    assert_non_null(lg);
    for (int i = 0; i < V; i++) lg[i] = (float)(urand() * 6 - 3);
    sampler_params_t p = plain(1.0f, 99);
    p.typical_p = 0.7f, p.top_n_sigma = 2.0f, p.xtc_probability = 0.5f, p.xtc_threshold = 0.05f;
    p.dynatemp_range = 0.5f;
    int fwd[N];
    expect_by_position(&p, lg, V, N, fwd);
    int distinct = 0;
    for (int t = 1; t < N; t++) distinct += fwd[t] != fwd[0];
    assert_true(distinct > 0);
    free(lg);
}

/* the tokens the sampler drew before these samplers existed (commit before them, sampler_params_default
 * and two variations, logits from gold_u): at the defaults nothing may change */
static uint64_t gold_z;
static double gold_u(void) {
    uint64_t z = (gold_z += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

static void test_defaults_unchanged(void **state) {
    (void)state;
    enum { V = 500, STEPS = 48 };
    static const int gold[3][STEPS] = {
    {450, 69, 103, 54, 191, 474, 119, 107, 251, 19, 77, 180, 219, 237, 273, 382, 382, 62, 168, 326, 3, 144, 318, 226, 116, 72, 324, 277, 285, 130, 35, 288, 294, 407, 407, 467, 497, 111, 64, 14, 493, 374, 240, 437, 409, 159, 394, 12},
    {494, 84, 53, 487, 238, 313, 416, 94, 173, 458, 122, 166, 59, 19, 438, 360, 109, 24, 417, 160, 117, 112, 47, 149, 64, 375, 86, 332, 120, 441, 371, 428, 259, 459, 469, 103, 31, 132, 400, 118, 135, 305, 344, 160, 396, 220, 455, 485},
    {189, 293, 427, 131, 214, 220, 76, 129, 186, 481, 344, 219, 284, 440, 349, 62, 379, 494, 312, 226, 93, 86, 270, 372, 212, 332, 273, 18, 160, 439, 323, 194, 393, 157, 197, 368, 402, 6, 404, 491, 397, 306, 200, 310, 89, 456, 365, 173},
    };
    float x[V];
    void *w = malloc(sampler_work_bytes(V));
    assert_non_null(w);
    for (int cfg = 0; cfg < 3; cfg++) {
        sampler_params_t p;
        sampler_params_default(&p);
        if (cfg == 1) p.top_k = 0, p.repeat_penalty = 1.3f, p.freq_penalty = 0.2f, p.presence_penalty = 0.1f, p.temp = 1.1f;
        if (cfg == 2) p.temp = 0, p.repeat_penalty = 1.5f;
        /* none of the newer samplers is on (cfg 1's frequency / presence penalties alone keep a
         * device from sampling) */
        assert_int_equal(sampler_params_host_only(&p), cfg == 1);
        assert_false(sampler_params_dry(&p));
        sampler_t s;
        sampler_init(&s, &p);
        gold_z = 77 + (uint64_t)cfg;
        for (int t = 0; t < STEPS; t++) {
            for (int i = 0; i < V; i++) x[i] = (float)(gold_u() * 8.0 - 4.0);
            int id = sampler_sample(&s, x, V, w, NULL);
            if (id != gold[cfg][t]) fail_msg("defaults config %d step %d: drew %d, before %d", cfg, t, id, gold[cfg][t]);
            sampler_accept(&s, id);
        }
    }
    free(w);
}

/* ---- DRY ---------------------------------------------------------------------------------- */

/* DRY's penalties written plainly: h[0..L) the window, oldest first; for each earlier position i
 * the longest run ending at h[i] that equals the run ending at h[L-1] (capped by the latest
 * breaker), penalising h[i+1] once by its longest such run */
static void ref_dry(const int32_t *h, int L, const sampler_params_t *p, const int *heads, const int *tails,
                    const int *ntail, int nbr, float *logits, int nv) {
    if (L <= p->dry_allowed_length) return;
    int limit = L;
    for (int i = 0, found = 0; i < L && !found; i++) {   /* i tokens back from the latest */
        int best = -1;
        for (int b = 0; b < nbr; b++) {
            if (heads[b] != h[L - 1 - i] || ntail[b] > i || ntail[b] <= best) continue;
            int ok = 1;
            for (int o = 0; o < ntail[b]; o++) ok &= tails[b * 4 + o] == h[L - 1 - i + 1 + o];
            if (ok) best = ntail[b];
        }
        if (best >= 0) limit = i - best, found = 1;
    }
    if (limit < p->dry_allowed_length) return;
    int *maxrun = malloc((size_t)nv * sizeof *maxrun);
    assert_non_null(maxrun);
    for (int id = 0; id < nv; id++) maxrun[id] = -1;   /* allowed_length 0 penalises runs of 0 too */
    for (int i = 0; i + 1 < L; i++) {
        int k = 0;
        while (k <= i && h[i - k] == h[L - 1 - k]) k++;
        if (k > limit) k = limit;
        if (k >= p->dry_allowed_length && k > maxrun[h[i + 1]]) maxrun[h[i + 1]] = k;
    }
    for (int id = 0; id < nv; id++) {
        int single = 0;
        for (int b = 0; b < nbr; b++) single |= heads[b] == id && ntail[b] == 0;
        if (maxrun[id] >= 0 && !single)
            logits[id] -= (float)(p->dry_multiplier * pow(p->dry_base, maxrun[id] - p->dry_allowed_length));
    }
    free(maxrun);
}

/* breakers b (head, then up to 3 tail tokens) into p */
static void set_breakers(sampler_params_t *p, const int *heads, const int *tails, const int *ntail, int n) {
    int off = 0;
    p->n_dry_seq = n;
    for (int b = 0; b < n; b++) {
        p->dry_seq_len[b] = (uint8_t)(1 + ntail[b]);
        p->dry_tok[off++] = heads[b];
        for (int o = 0; o < ntail[b]; o++) p->dry_tok[off++] = tails[b * 4 + o];
    }
}

static void dry_of(const sampler_params_t *p, const int32_t *h, int L, float *out, int nv) {
    sampler_t s;
    sampler_init(&s, p);
    for (int i = 0; i < L; i++) sampler_accept(&s, h[i]);
    void *w = malloc(sampler_work_bytes(nv));
    assert_non_null(w);
    memset(out, 0, (size_t)nv * sizeof *out);
    sampler_dry_apply(&s, out, nv, w);
    free(w);
}

/* history 5 6 7 8 0 6 7 9 0 5 6 7, allowed 2, ×0.8, base 1.75: "5 6 7" came before 8 (3 long:
 * 0.8 · 1.75 = 1.4 off 8), "6 7" before 9 (0.8 off 9), nothing else; 8 a single-token breaker:
 * 8 keeps its logit; breaker "6 7" (head 6, tail 7) right at the end: no penalty at all; a
 * window of 5: no repeat in it */
static void test_dry_by_hand(void **state) {
    (void)state;
    static const int32_t h[] = {5, 6, 7, 8, 0, 6, 7, 9, 0, 5, 6, 7};
    enum { L = 12, NV = 10 };
    float out[NV];
    sampler_params_t p = plain(1.0f, 1);
    p.dry_multiplier = 0.8f, p.dry_base = 1.75f, p.dry_allowed_length = 2, p.dry_penalty_last_n = -1;
    assert_true(sampler_params_use_history(&p) && sampler_params_host_only(&p));
    dry_of(&p, h, L, out, NV);
    for (int i = 0; i < NV; i++) {
        float want = i == 8 ? -1.4f : i == 9 ? -0.8f : 0.0f;
        if (fabsf(out[i] - want) > 1e-5f) fail_msg("DRY: token %d penalised %g, expected %g", i, -out[i], -want);
    }
    static const int hd1[] = {8}, tl1[4] = {0}, nt1[] = {0};
    set_breakers(&p, hd1, tl1, nt1, 1);
    dry_of(&p, h, L, out, NV);
    assert_true(out[8] == 0.0f && fabsf(out[9] + 0.8f) < 1e-5f);
    static const int hd2[] = {6}, tl2[4] = {7}, nt2[] = {1};
    set_breakers(&p, hd2, tl2, nt2, 1);
    dry_of(&p, h, L, out, NV);
    for (int i = 0; i < NV; i++) assert_true(out[i] == 0.0f);
    p.n_dry_seq = 0;
    p.dry_penalty_last_n = 5;
    dry_of(&p, h, L, out, NV);
    for (int i = 0; i < NV; i++) assert_true(out[i] == 0.0f);
    p.dry_penalty_last_n = -1;
    p.dry_multiplier = 0;   /* off */
    dry_of(&p, h, L, out, NV);
    for (int i = 0; i < NV; i++) assert_true(out[i] == 0.0f);
}

/* random histories over a 4-token vocabulary (many repeats), random windows and breakers: the
 * Z-algorithm's penalties equal the plain reference's */
static void test_dry_random(void **state) {
    (void)state;
    enum { NV = 5, HMAX = 300 };
    int32_t h[HMAX];
    float got[NV], want[NV];
    for (int trial = 0; trial < 400; trial++) {
        int L = 1 + (int)(urand() * HMAX);
        for (int i = 0; i < L; i++) h[i] = (int32_t)(urand() * (trial % 3 ? 4 : 2));
        sampler_params_t p = plain(1.0f, 1);
        p.dry_multiplier = (float)(0.1 + urand());
        p.dry_base = (float)(1.0 + urand());
        p.dry_allowed_length = (int)(urand() * 4);
        p.dry_penalty_last_n = urand() < 0.3 ? -1 : 1 + (int)(urand() * HMAX);
        int heads[3], tails[12], ntail[3], nbr = (int)(urand() * 4);
        for (int b = 0; b < nbr; b++) {
            heads[b] = (int)(urand() * 4);
            ntail[b] = (int)(urand() * 3);
            for (int o = 0; o < ntail[b]; o++) tails[b * 4 + o] = (int)(urand() * 4);
        }
        set_breakers(&p, heads, tails, ntail, nbr);
        dry_of(&p, h, L, got, NV);
        int win = p.dry_penalty_last_n < 0 ? L : p.dry_penalty_last_n < L ? p.dry_penalty_last_n : L;
        memset(want, 0, sizeof want);
        ref_dry(h + L - win, win, &p, heads, tails, ntail, nbr, want, NV);
        for (int i = 0; i < NV; i++)
            if (fabsf(got[i] - want[i]) > 1e-4f * (1 + fabsf(want[i])))
                fail_msg("trial %d (L %d window %d allowed %d breakers %d): token %d penalised %g, the reference %g",
                         trial, L, win, p.dry_allowed_length, nbr, i, -got[i], -want[i]);
    }
}

/* DRY goes through sampler_sample: the drawn token is the reference chain's on the penalised logits */
static void test_dry_in_chain(void **state) {
    (void)state;
    static const int32_t h[] = {1, 2, 3, 4, 1, 2, 3};
    float lg[6] = {0, 0, 0, 0, 3.0f, 0}, x[6];
    sampler_params_t p = plain(0.0f, 1);   /* greedy: 4 wins without DRY */
    sampler_t s;
    sampler_init(&s, &p);
    for (int i = 0; i < 7; i++) sampler_accept(&s, h[i]);
    assert_int_equal(draw(&s, lg, 6, NULL), 4);
    p.dry_multiplier = 4.0f, p.dry_base = 1.75f, p.dry_allowed_length = 2;   /* 4 after "1 2 3": −7 */
    sampler_init(&s, &p);
    for (int i = 0; i < 7; i++) sampler_accept(&s, h[i]);
    memcpy(x, lg, sizeof x);
    assert_int_equal(draw(&s, x, 6, NULL), 0);
}

/* ---- an order of the user's own (llama.cpp's --samplers) --------------------------------------- */

/* the penalties sampler written plainly on candidates c[0..n): each candidate's count in the last
 * repeat_last_n tokens of h[0..L) (oldest first) */
static void ref_order_penalties(const sampler_params_t *p, const int32_t *h, int L, ref_cand_t *c, int n) {
    int win = L < p->repeat_last_n ? L : p->repeat_last_n;
    for (int i = 0; i < n; i++) {
        int cnt = 0;
        for (int j = L - win; j < L; j++) cnt += h[j] == c[i].id;
        if (!cnt) continue;
        float *l = &c[i].logit;
        if (p->repeat_penalty != 1.0f) *l = *l > 0 ? *l / p->repeat_penalty : *l * p->repeat_penalty;
        *l -= (float)cnt * p->freq_penalty + p->presence_penalty;
    }
}

static int ref_id_cmp(const void *a, const void *b) { return ((const ref_cand_t *)a)->id - ((const ref_cand_t *)b)->id; }

/* a copy of c[0..n) ordered by id (malloc'd) */
static ref_cand_t *by_id(const ref_cand_t *c, int n) {
    ref_cand_t *b = malloc((size_t)n * sizeof *b);
    assert_non_null(b);
    memcpy(b, c, (size_t)n * sizeof *b);
    qsort(b, (size_t)n, sizeof *b, ref_id_cmp);
    return b;
}

/* llama.cpp's chain in the order `order` (its --sampling-seq letters) at temp > 0 written plainly:
 * the candidates sorted before every sampler, the temperature dividing the logits, the keyed draw at
 * temperature 1 at the end. h[0..L): the history (oldest first; no DRY breakers). Returns the token. */
static int ref_order(const sampler_params_t *p, const char *order, int pos, const float *logits, int nv,
                     const int32_t *h, int L, ref_cand_t *c) {
    int n = nv;
    for (int i = 0; i < nv; i++) c[i].logit = logits[i], c[i].id = i;
    float *pr = malloc((size_t)nv * sizeof *pr), *dry = malloc((size_t)nv * sizeof *dry);
    assert_true(pr && dry);
    for (const char *o = order; *o; o++) {
        qsort(c, (size_t)n, sizeof *c, ref_cmp);
        switch (*o) {
        case 'e': ref_order_penalties(p, h, L, c, n); break;
        case 'd': {
            int win = p->dry_penalty_last_n < 0 || p->dry_penalty_last_n > L ? L : p->dry_penalty_last_n;
            memset(dry, 0, (size_t)nv * sizeof *dry);
            if (p->dry_multiplier != 0 && p->dry_base >= 1 && p->dry_penalty_last_n != 0)
                ref_dry(h + L - win, win, p, NULL, NULL, NULL, 0, dry, nv);
            for (int i = 0; i < n; i++) c[i].logit += dry[c[i].id];
            break;
        }
        case 's':
            if (p->top_n_sigma > 0 && n > 1) {   /* the statistics summed in id order */
                ref_cand_t *b = by_id(c, n);
                float mx = c[0].logit, sum = 0, acc = 0;
                for (int i = 0; i < n; i++) sum += b[i].logit;
                float mean = sum / (float)n;
                for (int i = 0; i < n; i++) acc += (float)pow((double)(b[i].logit - mean), 2);
                float thr = mx - p->top_n_sigma * sqrtf(acc / (float)n);
                int k = 0;
                for (int i = 0; i < n; i++)
                    if (!(c[i].logit < thr)) c[k++] = c[i];
                n = k;
                free(b);
            }
            break;
        case 'k': if (p->top_k > 0 && p->top_k < n) n = p->top_k; break;
        case 'y':
            if (p->typical_p > 0 && p->typical_p < 1 && n > 1) {   /* over the candidates in id order */
                ref_cand_t *b = by_id(c, n);
                double sum = 0;
                for (int i = 0; i < n; i++) sum += exp((double)b[i].logit - c[0].logit);
                for (int i = 0; i < n; i++) pr[i] = (float)(exp((double)b[i].logit - c[0].logit) / sum);
                memcpy(c, b, (size_t)n * sizeof *c);
                free(b);
                n = ref_typical(p->typical_p, c, pr, n);
            }
            break;
        case 'p': n = ref_top_p(p, c, n); break;
        case 'm': n = ref_min_p(p, c, n); break;
        case 'x': n = ref_xtc(p, pos, c, n, pr); break;
        case 't': {
            float t = p->temp;
            if (p->dynatemp_range > 0 && n <= 1) t = 1.0f;
            else if (p->dynatemp_range > 0) {   /* the entropy of the candidates, summed in id order */
                ref_cand_t *b = by_id(c, n);
                double sum = 0;
                float ent = 0, lo = p->temp - p->dynatemp_range > 0 ? p->temp - p->dynatemp_range : 0;
                float hi = p->temp + p->dynatemp_range;
                for (int i = 0; i < n; i++) sum += exp((double)b[i].logit - c[0].logit);
                for (int i = 0; i < n; i++) {
                    float q = (float)(exp((double)b[i].logit - c[0].logit) / sum);
                    if (q > 0) ent -= q * logf(q);
                }
                t = (float)(lo + (hi - lo) * powf(ent / -logf(1.0f / (float)n), p->dynatemp_exponent));
                free(b);
            }
            for (int i = 0; i < n; i++) c[i].logit /= t;
            break;
        }
        default: fail_msg("reference: letter '%c'", *o);
        }
    }
    qsort(c, (size_t)n, sizeof *c, ref_cmp);
    free(pr), free(dry);
    return ref_draw(c, n, 1.0, ref_uniform(p->seed, pos), NULL);
}

/* a sampler with params p and the order of letters (sampler_order_parse must take them) */
static void init_ordered(sampler_t *s, sampler_params_t *p, const char *letters) {
    char err[200];
    if (sampler_order_parse(p, letters, 1, err, sizeof err) < 0) fail_msg("order '%s': %s", letters, err);
    sampler_init(s, p);
}

/* names (llama.cpp's and its aliases, ';' or ',' apart, spaces around), letters, the default
 * order as 0, and every kind of bad input as one line naming it (p untouched then) */
static void test_order_parse(void **state) {
    (void)state;
    sampler_params_t p = plain(1.0f, 1);
    char err[200], l[SAMPLER_ORDER_MAX + 1];
    assert_int_equal(sampler_order_parse(&p, "dry;top_k;typ_p;top_p;min_p;xtc;temperature", 0, err, sizeof err), 0);
    sampler_order_letters(&p, l);
    assert_string_equal(l, "dkypmxt");
    assert_int_equal(p.n_order, 7);
    assert_int_equal(sampler_order_parse(&p, " top-k ,nucleus;typical; temp;min-p;typ-p;typ;top-n-sigma;penalties;", 0, err,
                                         sizeof err), 0);
    sampler_order_letters(&p, l);
    assert_string_equal(l, "kpytmyyse");
    assert_int_equal(sampler_order_parse(&p, "tkkt", 1, err, sizeof err), 0);   /* repeats are fine */
    sampler_order_letters(&p, l);
    assert_string_equal(l, "tkkt");
    /* the default order, by names or letters: 0 (the default chain itself) */
    assert_int_equal(sampler_order_parse(&p, "penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature", 0, err,
                                         sizeof err), 0);
    assert_int_equal(p.n_order, 0);
    sampler_order_letters(&p, l);
    assert_string_equal(l, SAMPLER_ORDER_DEFAULT);
    assert_int_equal(sampler_order_parse(&p, "kt", 1, err, sizeof err), 0);
    assert_int_equal(sampler_order_parse(&p, SAMPLER_ORDER_DEFAULT, 1, err, sizeof err), 0);
    assert_int_equal(p.n_order, 0);
    for (int c = 'a'; c <= 'z'; c++) {   /* each letter is its name's */
        const char *nm = sampler_order_name(c);
        assert_int_equal(nm != NULL, strchr(SAMPLER_ORDER_DEFAULT, c) != NULL);
        if (nm) assert_int_equal(sampler_order_letter(nm, strlen(nm)), c);
    }
    /* bad ones: an error naming what is wrong, the order as it was */
    assert_int_equal(sampler_order_parse(&p, "ky", 1, err, sizeof err), 0);
    static const struct { const char *text; int letters; const char *says; } bad[] = {
        {"top_k;foo", 0, "unknown sampler 'foo'"},      {"top_k;Top_K", 0, "'Top_K'"},
        {"infill", 0, "'infill' is not supported"},    {"adaptive-p", 0, "'adaptive-p' is not supported"},
        {"", 0, "no sampler"},                          {" ; ;", 0, "no sampler"},
        {"kz", 1, "letter 'z'"},                        {"k t", 1, "letter ' '"},
        {"", 1, "no sampler"},                          {"ia", 1, "letter 'i'"},
        {"kkkkkkkkkkkkkkkkk", 1, "more than 16"},       {"top_k;top_k;top_k;top_k;top_k;top_k;top_k;top_k;top_k;top_k;top_k;top_k;top_k;top_k;top_k;top_k;top_k", 0, "more than 16"},
        {"top_k;temperature", 1, "letter 'o'"},         {"kt", 0, "unknown sampler 'kt'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        assert_int_equal(sampler_order_parse(&p, bad[i].text, bad[i].letters, err, sizeof err), TERN_EINVAL);
        if (!strstr(err, bad[i].says) || strchr(err, '\n')) fail_msg("'%s': \"%s\" lacks \"%s\"", bad[i].text, err, bad[i].says);
        sampler_order_letters(&p, l);
        assert_string_equal(l, "ky");
    }
    assert_int_equal(sampler_order_parse(&p, NULL, 1, NULL, 0), TERN_EINVAL);   /* no err buffer: still no crash */
}

/* SAMPLER_ORDER_LENIENT (an HTTP request, as llama-server): unknown names and letters skipped and
 * listed in err, any case matches, the count skipped returned; none known left still an error */
static void test_order_parse_lenient(void **state) {
    (void)state;
    sampler_params_t p = plain(1.0f, 1);
    char err[200], l[SAMPLER_ORDER_MAX + 1];
    const int LN = SAMPLER_ORDER_LENIENT;
    assert_int_equal(sampler_order_parse(&p, "top_k;foo;Temperature;infill", LN, err, sizeof err), 2);
    sampler_order_letters(&p, l);
    assert_string_equal(l, "kt");
    assert_string_equal(err, "'foo', 'infill'");
    assert_int_equal(sampler_order_parse(&p, "mzq", LN | SAMPLER_ORDER_LETTERS, err, sizeof err), 2);
    sampler_order_letters(&p, l);
    assert_string_equal(l, "m");
    assert_string_equal(err, "'z', 'q'");
    assert_int_equal(sampler_order_parse(&p, "MIN_P;top-K", LN, err, sizeof err), 0);   /* nothing skipped: err empty */
    sampler_order_letters(&p, l);
    assert_string_equal(l, "mk");
    assert_string_equal(err, "");
    /* none known: an error, the order as it was */
    assert_int_equal(sampler_order_parse(&p, "foo;bar", LN, err, sizeof err), TERN_EINVAL);
    assert_non_null(strstr(err, "no known sampler among 2"));
    assert_int_equal(sampler_order_parse(&p, "zq", LN | SAMPLER_ORDER_LETTERS, err, sizeof err), TERN_EINVAL);
    assert_int_equal(sampler_order_parse(&p, "", LN, err, sizeof err), TERN_EINVAL);
    assert_non_null(strstr(err, "no sampler"));
    sampler_order_letters(&p, l);
    assert_string_equal(l, "mk");
    /* strict is unchanged by all this: the CLI's typed flag still refuses */
    assert_int_equal(sampler_order_parse(&p, "top_k;foo", 0, err, sizeof err), TERN_EINVAL);
    assert_int_equal(sampler_order_parse(&p, "Top_K", 0, err, sizeof err), TERN_EINVAL);
    /* a long skipped list is cut, never overrun */
    char small[12];
    assert_int_equal(sampler_order_parse(&p, "aaaaaaaa;bbbbbbbb;cccccccc;top_k", LN, small, sizeof small), 3);
    assert_true(strlen(small) < sizeof small);
    assert_int_equal(sampler_order_parse(&p, "foo;top_k", LN, NULL, 0), 1);
}

/* random orders (subsets, permutations, repeats) of random mixes of every sampler, with a history
 * for the penalties and DRY: token for token the plain reference of llama.cpp's chain in that order */
static void test_order_matches_reference(void **state) {
    (void)state;
    enum { V = 400, STEPS = 24, H = 60 };
    float *x = malloc(V * sizeof *x), *y = malloc(V * sizeof *y);
    ref_cand_t *c = malloc(V * sizeof *c);
    void *work = malloc(sampler_work_bytes(V));
    int32_t h[H + STEPS];
    assert_true(x && y && c && work);
    int differs = 0;
    for (int cfg = 0; cfg < 60; cfg++) {
        sampler_params_t p = plain(urand() < 0.5 ? 0.6f : 1.7f, 900 + (uint64_t)cfg);
        if (urand() < 0.5) p.typical_p = (float)(0.3 + 0.6 * urand());
        if (urand() < 0.4) p.top_n_sigma = (float)(0.5 + 2.0 * urand());
        if (urand() < 0.5) p.xtc_probability = (float)(0.3 + 0.7 * urand()), p.xtc_threshold = (float)(0.01 + 0.1 * urand());
        if (urand() < 0.3) p.dynatemp_range = (float)(0.2 + urand()), p.dynatemp_exponent = (float)(0.5 + 1.5 * urand());
        if (urand() < 0.6) p.top_k = 1 + (int)(urand() * 60);
        if (urand() < 0.5) p.top_p = (float)(0.5 + 0.49 * urand());
        if (urand() < 0.5) p.min_p = (float)(0.01 + 0.2 * urand());
        if (urand() < 0.5) p.repeat_penalty = 1.5f, p.freq_penalty = 0.3f, p.presence_penalty = 0.2f, p.repeat_last_n = 32;
        if (urand() < 0.4) p.dry_multiplier = 0.8f, p.dry_base = 1.75f, p.dry_allowed_length = 1, p.dry_penalty_last_n = 40;
        char order[SAMPLER_ORDER_MAX + 1];
        int n = 1 + (int)(urand() * 12);
        for (int k = 0; k < n; k++) order[k] = SAMPLER_ORDER_DEFAULT[(int)(urand() * 9)];
        order[n] = 0;
        sampler_t s;
        init_ordered(&s, &p, order);
        int L = 0;
        for (; L < H; L++) h[L] = (int32_t)(urand() * 12), sampler_accept(&s, h[L]);   /* repeats among 12 ids */
        double spread = cfg % 2 ? 7.0 : 2.5;
        for (int t = 0; t < STEPS; t++) {
            for (int i = 0; i < V; i++) x[i] = y[i] = (float)(urand() * spread - spread / 2);
            for (int i = 0; i < 12; i++) x[i] = y[i] = y[i] + 2.0f;   /* the repeated ids are likely */
            int got = sampler_sample(&s, x, V, work, NULL);
            int want = ref_order(&p, order, t, y, V, h, L, c);   /* (accepting moves no position) */
            if (got != want)
                fail_msg("config %d order '%s' (temp %g top_k %d typical %g nsigma %g xtc %g/%g dynatemp %g top_p %g "
                         "min_p %g pen %g dry %g) step %d: drew %d, the reference %d", cfg, order, p.temp, p.top_k,
                         p.typical_p, p.top_n_sigma, p.xtc_probability, p.xtc_threshold, p.dynatemp_range, p.top_p,
                         p.min_p, p.repeat_penalty, p.dry_multiplier, t, got, want);
            sampler_accept(&s, got);
            h[L++] = got;
        }
        /* the same params in the default order draw something else somewhere (the order matters) */
        sampler_params_t q = p;
        q.n_order = 0;
        sampler_t d;
        sampler_init(&d, &q);
        for (int i = 0; i < L; i++) sampler_accept(&d, h[i]);
        sampler_seek(&d, STEPS);
        for (int t = 0; t < 8 && strcmp(order, SAMPLER_ORDER_DEFAULT); t++) {
            for (int i = 0; i < V; i++) x[i] = y[i] = (float)(urand() * spread - spread / 2);
            differs += sampler_sample(&s, x, V, work, NULL) != sampler_sample(&d, y, V, work, NULL);
        }
    }
    assert_true(differs > 20);
    free(x), free(y), free(c), free(work);
}

/* the reference in the default order is the default chain: the same tokens on random mixes, so
 * the reference above is llama.cpp's chain as tern has always run it */
static void test_order_reference_is_default(void **state) {
    (void)state;
    enum { V = 300, STEPS = 20 };
    float *x = malloc(V * sizeof *x), *y = malloc(V * sizeof *y);
    ref_cand_t *c = malloc(V * sizeof *c);
    void *work = malloc(sampler_work_bytes(V));
    int32_t h[STEPS + 40];
    assert_true(x && y && c && work);
    for (int cfg = 0; cfg < 30; cfg++) {
        sampler_params_t p = plain(cfg % 3 ? 1.0f : 0.8f, 300 + (uint64_t)cfg);
        if (urand() < 0.5) p.typical_p = (float)(0.3 + 0.6 * urand());
        if (urand() < 0.4) p.top_n_sigma = (float)(0.5 + 2.0 * urand());
        if (urand() < 0.5) p.xtc_probability = 0.7f, p.xtc_threshold = 0.05f;
        if (urand() < 0.6) p.top_k = 1 + (int)(urand() * 60);
        if (urand() < 0.5) p.top_p = 0.9f;
        if (urand() < 0.5) p.min_p = 0.05f;
        if (urand() < 0.5) p.repeat_penalty = 1.3f, p.freq_penalty = 0.2f, p.repeat_last_n = 16;
        if (urand() < 0.4) p.dry_multiplier = 0.8f, p.dry_base = 1.75f, p.dry_allowed_length = 1, p.dry_penalty_last_n = 30;
        sampler_t s;
        sampler_init(&s, &p);
        int L = 0;
        for (; L < 40; L++) h[L] = (int32_t)(urand() * 10), sampler_accept(&s, h[L]);
        for (int t = 0; t < STEPS; t++) {
            for (int i = 0; i < V; i++) x[i] = y[i] = (float)(urand() * 4 - 2) + (i < 10 ? 1.5f : 0.0f);
            int got = sampler_sample(&s, x, V, work, NULL);
            int want = ref_order(&p, SAMPLER_ORDER_DEFAULT, t, y, V, h, L, c);
            if (got != want) fail_msg("config %d step %d: the default chain drew %d, the reference %d", cfg, t, got, want);
            sampler_accept(&s, got);
            h[L++] = got;
        }
    }
    free(x), free(y), free(c), free(work);
}

/* an order equal to the default (hand-set, as a worker could receive it) draws what no order
 * draws: the default chain's own tokens */
static void test_order_default_unchanged(void **state) {
    (void)state;
    enum { V = 500, STEPS = 48 };
    float x[V], y[V];
    void *w = malloc(sampler_work_bytes(V));
    assert_non_null(w);
    for (int cfg = 0; cfg < 3; cfg++) {
        sampler_params_t p;
        sampler_params_default(&p);
        if (cfg == 1) p.top_k = 0, p.repeat_penalty = 1.3f, p.freq_penalty = 0.2f, p.temp = 1.1f, p.typical_p = 0.8f;
        if (cfg == 2) p.temp = 0, p.repeat_penalty = 1.5f, p.dry_multiplier = 0.8f;
        sampler_params_t q = p;
        q.n_order = 9;
        memcpy(q.order, SAMPLER_ORDER_DEFAULT, 9);
        sampler_t a, b;
        sampler_init(&a, &p);
        sampler_init(&b, &q);
        assert_int_equal(b.p.n_order, 0);
        assert_int_equal(sampler_params_host_only(&b.p), sampler_params_host_only(&p));
        gold_z = 500 + (uint64_t)cfg;
        for (int t = 0; t < STEPS; t++) {
            for (int i = 0; i < V; i++) x[i] = y[i] = (float)(gold_u() * 8.0 - 4.0);
            expect_same_draw(&a, &b, x, y, V, w);
        }
    }
    free(w);
}

/* a sampler the order leaves out does not run, however its parameter is set: the tokens are
 * those of the same order with that sampler off; listed, it does change them */
static void test_order_omitted(void **state) {
    (void)state;
    enum { V = 200, STEPS = 40 };
    float x[V], y[V];
    void *w = malloc(sampler_work_bytes(V));
    assert_non_null(w);
    for (const char *l = SAMPLER_ORDER_DEFAULT; *l; l++) {
        sampler_params_t on = plain(1.3f, 40 + (uint64_t)*l), off = on;
        switch (*l) {   /* each sampler strongly on */
        case 'e': on.repeat_penalty = 3.0f, on.presence_penalty = 2.0f, on.repeat_last_n = 64; break;
        case 'd': on.dry_multiplier = 3.0f, on.dry_base = 2.0f, on.dry_allowed_length = 1, on.dry_penalty_last_n = -1; break;
        case 's': on.top_n_sigma = 0.5f; break;
        case 'k': on.top_k = 2; break;
        case 'y': on.typical_p = 0.3f; break;
        case 'p': on.top_p = 0.3f; break;
        case 'm': on.min_p = 0.5f; break;
        case 'x': on.xtc_probability = 1.0f, on.xtc_threshold = 0.02f; break;
        case 't': on.temp = 0.3f; break;
        }
        if (*l == 't') off.temp = 1.0f;   /* left out, the draw is at temperature 1 */
        char without[16], with[24];
        int n = 0;
        for (const char *k = SAMPLER_ORDER_DEFAULT; *k; k++)
            if (*k != *l) without[n++] = *k;
        without[n] = 0;
        snprintf(with, sizeof with, "%c%s", *l, without);   /* listed (first): it acts */
        sampler_t a, b, c;
        sampler_params_t pa = on, pb = off, pc = on;
        init_ordered(&a, &pa, without);
        init_ordered(&b, &pb, without);
        init_ordered(&c, &pc, with);
        if (*l == 'e' || *l == 'd') {
            assert_false(*l == 'e' ? sampler_params_use_history(&a.p) : sampler_params_dry(&a.p));
            assert_true(*l == 'e' ? sampler_params_use_history(&c.p) : sampler_params_dry(&c.p));
        }
        int changed = 0;
        g_rng = 0xABC;
        for (int t = 0; t < STEPS; t++) {
            for (int i = 0; i < V; i++) x[i] = (float)(urand() * 5 - 2.5) + (i < 8 ? 2.0f : 0.0f);
            memcpy(y, x, sizeof y);
            int ia = sampler_sample(&a, y, V, w, NULL);
            memcpy(y, x, sizeof y);
            int ib = sampler_sample(&b, y, V, w, NULL);
            memcpy(y, x, sizeof y);
            int ic = sampler_sample(&c, y, V, w, NULL);
            if (ia != ib) fail_msg("'%c' left out (order %s) still acts: step %d drew %d, %d without it", *l, without, t, ia, ib);
            changed += ic != ia;
            int hist = t % 4;   /* a history of repeats for the penalties and DRY */
            sampler_accept(&a, hist), sampler_accept(&b, hist), sampler_accept(&c, hist);
        }
        if (!changed) fail_msg("'%c' listed first (order %s) changed no token", *l, with);
    }
    free(w);
}

/* an order is the host's (a device pick runs the default chain only); greedy with an order: the
 * penalties it lists act (those leading it before the logprob, the later ones after) */
static void test_order_greedy_and_host(void **state) {
    (void)state;
    enum { V = 6 };
    sampler_params_t p = plain(0.8f, 1);
    sampler_t s;
    init_ordered(&s, &p, "kt");
    assert_true(sampler_params_host_only(&s.p));
    assert_false(sampler_params_use_history(&s.p));
    float lg[V] = {0, 0, 0, 4.0f, 3.0f, 0}, x[V];
    p = plain(0.0f, 1);
    p.repeat_penalty = 2.0f, p.repeat_last_n = 8, p.logprobs = 1;
    for (int lead = 0; lead < 2; lead++) {   /* "ek": the penalty leads; "ke": it comes later */
        sampler_params_t q = p;
        init_ordered(&s, &q, lead ? "ek" : "ke");
        sampler_accept(&s, 3);   /* 3 penalised: 4 / 2 = 2 < 3 */
        memcpy(x, lg, sizeof x);
        float lp;
        assert_int_equal(draw(&s, x, V, &lp), 4);
        float pen[V] = {0, 0, 0, 2.0f, 3.0f, 0};
        double want = log_softmax_f(lead ? pen : lg, V, 4);
        if (fabs(lp - want) > 1e-5) fail_msg("order %s: logprob %g, expected %g", lead ? "ek" : "ke", lp, want);
    }
    p.repeat_penalty = 1.0f;
    init_ordered(&s, &p, "ke");
    sampler_accept(&s, 3);
    memcpy(x, lg, sizeof x);
    assert_int_equal(draw(&s, x, V, NULL), 3);
}

/* the draw of a position with an order is the same in any order of positions (drafts, replays) */
static void test_order_by_position(void **state) {
    (void)state;
    enum { V = 300, N = 50 };
    float *lg = malloc(V * sizeof *lg);
    assert_non_null(lg);
    for (int i = 0; i < V; i++) lg[i] = (float)(urand() * 6 - 3);
    sampler_params_t p = plain(1.4f, 77);
    p.top_k = 30, p.min_p = 0.1f, p.xtc_probability = 0.5f, p.xtc_threshold = 0.05f;
    char err[100];
    assert_int_equal(sampler_order_parse(&p, "xtc;temperature;top_k;min_p", 0, err, sizeof err), 0);
    int fwd[N];
    expect_by_position(&p, lg, V, N, fwd);
    free(lg);
}

/* mirostat replaces the chain, order and all (as llama.cpp): the same tokens and mu with an order */
static void test_order_mirostat(void **state) {
    (void)state;
    enum { V = 200, STEPS = 40 };
    float x[V], y[V];
    void *w = malloc(sampler_work_bytes(V));
    assert_non_null(w);
    for (int v = 1; v <= 2; v++) {
        sampler_params_t p = plain(0.9f, 60 + (uint64_t)v), q;
        p.mirostat = v, p.mirostat_tau = 3.0f, p.mirostat_eta = 0.2f, p.repeat_penalty = 1.5f, p.top_k = 5;
        q = p;
        sampler_t a, b;
        sampler_init(&a, &p);
        init_ordered(&b, &q, "tkpe");
        for (int t = 0; t < STEPS; t++) {
            for (int i = 0; i < V; i++) x[i] = y[i] = (float)(urand() * 6 - 3);
            expect_same_draw(&a, &b, x, y, V, w);
            assert_true(a.mu == b.mu);   /* mu moves in the draw; accepting leaves it */
        }
    }
    free(w);
}

/* ---- mirostat ----------------------------------------------------------------------------- */

/* mirostat v1 / v2 as llama.cpp writes them, with the keyed draw; returns the token, moves *mu */
static int ref_mirostat(const sampler_params_t *p, int pos, const float *logits, int nv, ref_cand_t *c, float *mu) {
    for (int i = 0; i < nv; i++) c[i].logit = logits[i] / p->temp, c[i].id = i;
    qsort(c, (size_t)nv, sizeof *c, ref_cmp);
    float *pr = malloc((size_t)nv * sizeof *pr);
    assert_non_null(pr);
    ref_softmax(c, nv, pr);
    int k;
    if (p->mirostat == 1) {
        float st = 0, tt = 0;
        for (int i = 0; i < 99 && i < nv - 1; i++) {
            float ti = logf((float)(i + 2) / (float)(i + 1)), bi = logf(pr[i] / pr[i + 1]);
            st += ti * bi, tt += ti * ti;
        }
        float sh = st / tt, eps = sh - 1;
        float kf = powf((eps * powf(2, *mu)) / (1 - powf((float)nv, -eps)), 1 / sh);
        k = kf >= (float)nv ? nv : kf >= 1 ? (int)kf : 1;
    } else {
        for (k = 0; k < nv && !(-log2f(pr[k]) > *mu); k++) {}
        if (k == 0) k = 1;
    }
    free(pr);
    float pk;
    int id = ref_draw(c, k, 1.0, ref_uniform(p->seed, pos), &pk);
    *mu -= p->mirostat_eta * (-log2f(pk) - p->mirostat_tau);
    return id;
}

/* v2 by hand: probabilities .5 .25 .125 .125 (surprises 1 2 3 3 bits), tau 1.5, eta .1: mu starts
 * at 3 (nothing above it is cut); a pick of surprise s moves it to 3 − .1 (s − 1.5). Then v1 and v2
 * on random logits: tokens and mu as the reference's, step by step. */
static void test_mirostat(void **state) {
    (void)state;
    static const double probs[] = {0.5, 0.25, 0.125, 0.125};
    float lg[4];
    logits_of(probs, 4, lg);
    sampler_params_t p = plain(1.0f, 21);
    p.mirostat = 2, p.mirostat_tau = 1.5f, p.mirostat_eta = 0.1f;
    assert_true(sampler_params_host_only(&p));
    sampler_t s;
    sampler_init(&s, &p);
    assert_true(s.mu == 3.0f);
    int id = draw(&s, lg, 4, NULL);
    double surprise = -log2(probs[id]);
    assert_true(fabs(s.mu - (3.0 - 0.1 * (surprise - 1.5))) < 1e-5);
    enum { V = 400, STEPS = 60 };
    float *x = malloc(V * sizeof *x), *y = malloc(V * sizeof *y);
    ref_cand_t *c = malloc(V * sizeof *c);
    void *work = malloc(sampler_work_bytes(V));
    assert_true(x && y && c && work);
    for (int v = 1; v <= 2; v++) {
        p = plain(v == 1 ? 0.9f : 1.1f, 30 + (uint64_t)v);
        p.mirostat = v, p.mirostat_tau = 3.0f, p.mirostat_eta = 0.2f;
        p.repeat_penalty = 5.0f, p.repeat_last_n = 64;   /* mirostat's chain has no penalties */
        sampler_init(&s, &p);
        float mu = 2 * p.mirostat_tau;
        for (int t = 0; t < STEPS; t++) {
            for (int i = 0; i < V; i++) x[i] = y[i] = (float)(urand() * 10 - 5);
            int got = sampler_sample(&s, x, V, work, NULL);
            int want = ref_mirostat(&p, t, y, V, c, &mu);
            sampler_accept(&s, got);
            if (got != want || fabsf(s.mu - mu) > 1e-4f)
                fail_msg("mirostat v%d step %d: drew %d (mu %g), the reference %d (mu %g)", v, t, got, s.mu, want, mu);
        }
    }
    free(x), free(y), free(c), free(work);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_argmax_and_logprob),
        cmocka_unit_test(test_greedy_ties_lowest_id),
        cmocka_unit_test(test_logprob_when_sampling),
        cmocka_unit_test(test_seeds),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_penalty_decisive),
        cmocka_unit_test(test_penalty_random),
        cmocka_unit_test(test_penalty_ring),
        cmocka_unit_test(test_temperature),
        cmocka_unit_test(test_matches_reference),
        cmocka_unit_test(test_top_alternatives),
        cmocka_unit_test(test_device_split),
        cmocka_unit_test(test_masked_logits),
        cmocka_unit_test(test_freq_presence_bias),
        cmocka_unit_test(test_draw_by_position),
        cmocka_unit_test(test_drop_window),
        cmocka_unit_test(test_chain_matches_reference),
        cmocka_unit_test(test_typical_by_hand),
        cmocka_unit_test(test_top_n_sigma_by_hand),
        cmocka_unit_test(test_xtc_by_hand),
        cmocka_unit_test(test_dynatemp_by_hand),
        cmocka_unit_test(test_chain_order),
        cmocka_unit_test(test_new_samplers_deterministic),
        cmocka_unit_test(test_defaults_unchanged),
        cmocka_unit_test(test_dry_by_hand),
        cmocka_unit_test(test_dry_random),
        cmocka_unit_test(test_dry_in_chain),
        cmocka_unit_test(test_mirostat),
        cmocka_unit_test(test_order_parse),
        cmocka_unit_test(test_order_parse_lenient),
        cmocka_unit_test(test_order_matches_reference),
        cmocka_unit_test(test_order_reference_is_default),
        cmocka_unit_test(test_order_default_unchanged),
        cmocka_unit_test(test_order_omitted),
        cmocka_unit_test(test_order_greedy_and_host),
        cmocka_unit_test(test_order_by_position),
        cmocka_unit_test(test_order_mirostat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
