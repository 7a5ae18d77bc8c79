/* test_embedded: the embedded default (coordinator/cluster_embedded.c) — tern_load without a
 * cluster runs its workers as threads over inproc:// through the cluster code, and must give
 * exactly what calling the stages directly gives (TERN_EMBEDDED=direct): tokens and logprobs,
 * greedy and seeded, 1–3 stages, 1–2 threads, f16 and f32 KV cache (LoadShard carries the KV
 * type), two models at once in one process; load errors come back as one line. DRY's sequence
 * breakers from strings (engine_dry_breakers): a token is a single-token breaker exactly when its
 * text holds the string, and every longer breaker is a token ending with a start of the string
 * followed by the rest tokenized. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "coordinator/engine.h"
#include "coordinator/tokenizer.h"
#include "tern.h"

int mkmodel_main(int argc, char **argv);   /* tools/mkmodel.c (`tern mkmodel`) */

static char g_tmp[64], g_model[128], g_llama[128];

#define MAX_GEN 24
typedef struct trace {
    int n;
    int32_t tok[MAX_GEN];
    float lp[MAX_GEN];
} trace_t;

static int on_tok(void *user, int id, int32_t token, float logprob, const sched_top_t *top, int finish) {
    trace_t *t = user;
    (void)id;
    (void)top;
    if (!finish && t->n < MAX_GEN) t->tok[t->n] = token, t->lp[t->n++] = logprob;
    return 0;
}

typedef struct run_cfg {
    const char *model;
    int stages, threads, kv_f32, direct;
    float temp;
    const char *kv_type;   /* NULL: as kv_f32 says */
} run_cfg_t;

static tern_model *load(const run_cfg_t *c) {
    tern_params p;
    tern_params_default(&p);
    p.model = c->model;
    p.stages = c->stages;
    p.n_threads = c->threads;
    p.kv_f32 = c->kv_f32;
    p.kv_type = c->kv_type;
    p.n_ctx = 128;
    if (c->direct) setenv("TERN_EMBEDDED", "direct", 1);
    else unsetenv("TERN_EMBEDDED");
    tern_model *m = NULL;
    char err[512];
    int rc = tern_load(&m, &p, err, sizeof err);
    unsetenv("TERN_EMBEDDED");
    if (rc < 0) fail_msg("tern_load (%s, %d stages, direct %d): %s", c->model, c->stages, c->direct, err);
    return m;
}

static void start(tern_model *m, const run_cfg_t *c, trace_t *t) {
    static const int32_t prompt[] = {1, 17, 42, 99, 7, 250, 3};
    sampler_params_t sp;
    sampler_params_default(&sp);
    sp.temp = c->temp;
    sp.seed = 1234;
    sp.logprobs = 1;   /* the flag crosses to the last stage too */
    memset(t, 0, sizeof *t);
    assert_true(sched_add(&m->sched, prompt, 7, MAX_GEN, &sp, on_tok, t) >= 0);
}

static void generate(const run_cfg_t *c, trace_t *t) {
    tern_model *m = load(c);
    start(m, c, t);
    int rc;
    while ((rc = sched_step(&m->sched)) > 0) {}
    if (rc < 0) fail_msg("sched_step: %s", m->sched.err);
    tern_model_free(&m);
    assert_int_equal(t->n, MAX_GEN);
}

static void assert_same(const trace_t *a, const trace_t *b, const char *what) {
    for (int i = 0; i < MAX_GEN; i++)
        if (a->tok[i] != b->tok[i] || memcmp(&a->lp[i], &b->lp[i], sizeof(float)))
            fail_msg("%s: token %d: %d (%.9g) vs %d (%.9g)", what, i, a->tok[i], a->lp[i], b->tok[i], b->lp[i]);
}

static void test_same_as_direct(void **st) {
    (void)st;
    const char *models[] = {g_model, g_llama};
    for (int mi = 0; mi < 2; mi++)
        for (int stages = 1; stages <= 3; stages++)
            for (int thr = 1; thr <= 2; thr++)
                for (int s = 0; s < 2; s++) {
                    run_cfg_t c = {models[mi], stages, thr, 0, 0, s ? 0.8f : 0.0f, NULL};
                    trace_t e, d;
                    generate(&c, &e);
                    c.direct = 1;
                    generate(&c, &d);
                    char what[256];
                    snprintf(what, sizeof what, "%s, %d stages, %d threads, temp %.1f", models[mi], stages, thr, c.temp);
                    assert_same(&e, &d, what);
                }
}

/* the KV type crosses LoadShard: f32 embedded == f32 direct, and f32 != f16 (so a dropped
 * field would show) */
static void test_kv_f32(void **st) {
    (void)st;
    run_cfg_t c = {g_model, 2, 2, 1, 0, 0.0f, NULL};
    trace_t e, d, h;
    generate(&c, &e);
    c.direct = 1;
    generate(&c, &d);
    assert_same(&e, &d, "kv f32");
    c.kv_f32 = 0;
    generate(&c, &h);
    int differ = 0;
    for (int i = 0; i < MAX_GEN; i++) differ |= memcmp(&h.lp[i], &d.lp[i], sizeof(float)) != 0;
    assert_true(differ);
}

/* the same for q8_0 (a third LoadShard value): embedded == direct, != f16 */
static void test_kv_q8_0(void **st) {
    (void)st;
    run_cfg_t c = {g_model, 3, 2, 0, 0, 0.0f, "q8_0"};
    trace_t e, d, h;
    generate(&c, &e);
    c.direct = 1;
    generate(&c, &d);
    assert_same(&e, &d, "kv q8_0");
    c.kv_type = "f16";
    generate(&c, &h);
    int differ = 0;
    for (int i = 0; i < MAX_GEN; i++) differ |= memcmp(&h.lp[i], &d.lp[i], sizeof(float)) != 0;
    assert_true(differ);
    /* a bad name: one line naming the flag */
    tern_params p;
    tern_params_default(&p);
    p.model = g_model;
    p.kv_type = "q4_k";
    tern_model *m = NULL;
    char err[512];
    assert_true(tern_load(&m, &p, err, sizeof err) < 0);
    assert_null(m);
    assert_non_null(strstr(err, "--kv-type q4_k"));
}

/* two engines in one process: their inproc endpoints do not collide, steps interleave */
static void test_two_at_once(void **st) {
    (void)st;
    run_cfg_t c1 = {g_model, 2, 1, 0, 0, 0.0f, NULL}, c2 = {g_llama, 1, 1, 0, 0, 0.8f, NULL};
    trace_t a1, a2, b1, b2;
    generate(&c1, &a1);
    generate(&c2, &a2);
    tern_model *m1 = load(&c1), *m2 = load(&c2);
    start(m1, &c1, &b1);
    start(m2, &c2, &b2);
    int r1 = 1, r2 = 1;
    while (r1 > 0 || r2 > 0) {
        if (r1 > 0) r1 = sched_step(&m1->sched);
        if (r2 > 0) r2 = sched_step(&m2->sched);
    }
    assert_int_equal(r1, 0);
    assert_int_equal(r2, 0);
    tern_model_free(&m1);
    tern_model_free(&m2);
    assert_same(&a1, &b1, "first engine");
    assert_same(&a2, &b2, "second engine");
}

static void test_load_errors(void **st) {
    (void)st;
    tern_params p;
    tern_params_default(&p);
    p.model = g_model;
    p.stages = 9;   /* the model has 3 layers */
    tern_model *m = NULL;
    char err[512] = "";
    assert_true(tern_load(&m, &p, err, sizeof err) < 0);
    assert_null(m);
    assert_non_null(strstr(err, "cannot split 3 layers into 9 stages"));
    assert_null(strchr(err, '\n'));
    /* a worker thread's own failure is quoted: its layers on a GPU this process cannot use */
    p.stages = 1;
    p.n_gpu_layers = 1;
    err[0] = 0;
    int rc = tern_load(&m, &p, err, sizeof err);
    if (rc < 0) {
        assert_null(m);
        assert_true(strlen(err) > 10);
        assert_null(strchr(err, '\n'));
    } else {
        tern_model_free(&m);   /* a CUDA build on a machine with a GPU */
    }
}

/* a start of str (1..sl-1 bytes) that w[0..wl) ends with, after a mismatch-free run from some
 * occurrence of str[0]: the byte counts i (as llama.cpp's loop) into *is (at most 8); their number */
static int ends_with_start(const char *w, int wl, const char *str, int sl, int *is) {
    int n = 0;
    for (int at = 0; at < wl; at++) {
        int i = 0;
        while (i < sl && at + i < wl && w[at + i] == str[i]) i++;
        if (i > 0 && at + i == wl && i < sl && n < 8) is[n++] = i;
    }
    return n;
}

static int holds(const char *w, int wl, const char *str, int sl) {
    for (int at = 0; at + sl <= wl; at++)
        if (!memcmp(w + at, str, (size_t)sl)) return 1;
    return 0;
}

static void test_dry_breakers(void **st) {
    (void)st;
    run_cfg_t c = {g_model, 1, 1, 0, 0, 0, NULL};
    tern_model *m = load(&c);
    const tokenizer_t *t = m->tok;
    static sampler_params_t sp;
    char err[256], w[512];
    static const char *const strs[] = {"e", " the", "ing ", "\n"};
    int V = tokenizer_n_vocab(t), multi = 0;
    for (int k = 0; k < 4; k++) {
        int sl = (int)strlen(strs[k]);
        assert_int_equal(engine_dry_breakers(m, &strs[k], 1, &sp, err, sizeof err), 0);
        assert_true(sp.n_dry_seq > 0);
        int *single = calloc((size_t)V, sizeof *single);
        assert_non_null(single);
        for (int b = 0, off = 0; b < sp.n_dry_seq; off += sp.dry_seq_len[b++]) {
            int head = sp.dry_tok[off], len = sp.dry_seq_len[b];
            assert_true(head >= 0 && head < V);
            int wl = tokenizer_piece(t, head, 1, w, sizeof w);
            if (len == 1) { single[head] = 1; continue; }
            multi++;
            int is[8], n = ends_with_start(w, wl, strs[k], sl, is), found = 0;
            assert_true(n > 0);
            for (int j = 0; j < n && !found; j++) {
                int32_t tail[64];
                int nt = tokenizer_encode(t, strs[k] + is[j], (size_t)(sl - is[j]), 0, 0, tail, 64);
                found = nt == len - 1 && !memcmp(tail, sp.dry_tok + off + 1, (size_t)nt * sizeof *tail);
            }
            if (!found) fail_msg("breaker '%s': token %d's tail is not the rest of the string tokenized", strs[k], head);
        }
        for (int id = 0; id < V; id++) {
            int wl = tokenizer_piece(t, id, 1, w, sizeof w);
            int want = wl > 0 && wl <= (int)sizeof w && holds(w, wl, strs[k], sl);
            if (single[id] != want) fail_msg("breaker '%s': token %d single %d, its text holds it: %d", strs[k], id, single[id], want);
        }
        free(single);
    }
    assert_true(multi > 0);   /* tokens ending with a start of " the" / "ing " were found */
    assert_int_equal(engine_dry_breakers(m, NULL, 0, &sp, err, sizeof err), 0);   /* llama.cpp's defaults */
    assert_true(sp.n_dry_seq > 0);
    assert_int_equal(engine_dry_breakers(m, strs, 0, &sp, err, sizeof err), 0);   /* none */
    assert_int_equal(sp.n_dry_seq, 0);
    tern_model_free(&m);
}

static int setup(void **st) {
    (void)st;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/tern-embedded-XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    snprintf(g_model, sizeof g_model, "%s/b.gguf", g_tmp);
    snprintf(g_llama, sizeof g_llama, "%s/l.gguf", g_tmp);
    char *a1[] = {"mkmodel", "--arch", "bitnet-b1.58", "--preset", "tiny", "--layers", "3", "--type", "i2_s", "--seed",
                  "21", "-o", g_model, NULL};
    char *a2[] = {"mkmodel", "--arch", "llama", "--preset", "tiny", "--layers", "4", "--type", "tq2_0", "--seed", "22",
                  "-o", g_llama, NULL};
    if (mkmodel_main(13, a1) != 0 || mkmodel_main(13, a2) != 0) {
        fprintf(stderr, "mkmodel failed\n");
        return -1;
    }
    return 0;
}

static int teardown(void **st) {
    (void)st;
    unlink(g_model);
    unlink(g_llama);
    rmdir(g_tmp);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_as_direct),
        cmocka_unit_test(test_kv_f32),
        cmocka_unit_test(test_kv_q8_0),
        cmocka_unit_test(test_two_at_once),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_dry_breakers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
