/* test_placement: layer placement. Every plan is checked for coverage, order, pins and
 * memory; the bottleneck (and evenness) is compared with brute force over all contiguous
 * splits on small random instances; infeasible inputs give errors naming the problem. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "coordinator/placement.h"
#include "core/err.h"

#define GIB (1024ull * 1024 * 1024)
#define MAXL 64

typedef struct fixture {
    uint64_t mem[MAXL];
    placement_worker_t w[16];
    placement_in_t in;
} fixture_t;

/* n_layers equal layers of `bytes`, n workers at speed 10 GB/s, no limits */
static void setup(fixture_t *f, int n_layers, uint64_t bytes, int n) {
    memset(f, 0, sizeof *f);
    for (int l = 0; l < n_layers; l++) f->mem[l] = bytes;
    static const char *names[] = {"pc0", "pc1", "pc2", "pc3", "pc4", "pc5", "pc6", "pc7",
                                  "pc8", "pc9", "pc10", "pc11", "pc12", "pc13", "pc14", "pc15"};
    for (int i = 0; i < n; i++) {
        f->w[i].name = names[i];
        f->w[i].speed = 10;
        f->w[i].first = f->w[i].last = -1;
    }
    f->in.n_layers = n_layers;
    f->in.layer_mem = f->mem;
    f->in.workers = f->w;
    f->in.n_workers = n;
}

/* the invariants of any valid plan */
static void check_valid(const placement_in_t *in, const placement_out_t *o) {
    int next = 0;
    double worst = 0;
    assert_int_equal(o->n_workers, in->n_workers);
    for (int s = 0; s < o->n_stages; s++) {
        int w = o->stage[s];
        assert_true(w >= 0 && w < in->n_workers);
        if (s) assert_true(w > o->stage[s - 1] || in->workers[w].standby);   /* pipeline keeps file order */
        assert_int_equal(o->first[w], next);
        assert_true(o->last[w] >= o->first[w]);
        next = o->last[w] + 1;
        uint64_t m = 0;
        for (int l = o->first[w]; l <= o->last[w]; l++) m += in->layer_mem[l];
        if (o->last[w] == in->n_layers - 1) m += in->head_mem;
        assert_true(o->mem[w] == m);
        if (in->workers[w].memory) assert_true(m <= in->workers[w].memory);
        if (o->time_s[w] > worst) worst = o->time_s[w];
        assert_false(in->workers[w].gone);
    }
    assert_int_equal(next, in->n_layers);
    assert_true(o->bottleneck_s == worst);
    int held = 0;
    for (int w = 0; w < in->n_workers; w++) {
        const placement_worker_t *pw = &in->workers[w];
        if (o->first[w] >= 0) held++;
        else assert_int_equal(o->last[w], -1);
        if (pw->first >= 0 && !pw->gone) {
            assert_int_equal(o->first[w], pw->first);
            assert_int_equal(o->last[w], pw->last);
        }
    }
    assert_int_equal(held, o->n_stages);
}

static placement_out_t plan_ok(const placement_in_t *in) {
    placement_out_t o;
    char err[256] = "";
    int rc = placement_plan(in, &o, err, sizeof err);
    if (rc) {
        print_error("placement_plan failed: %d %s\n", rc, err);
        fail();
    }
    check_valid(in, &o);
    return o;
}

static void plan_fails(const placement_in_t *in, int code, const char *msg) {
    placement_out_t o;
    char err[256] = "";
    int rc = placement_plan(in, &o, err, sizeof err);
    if (rc != code || !strstr(err, msg)) {
        print_error("want %d '%s', got %d '%s'\n", code, msg, rc, err);
        fail();
    }
}

static int count(const placement_out_t *o, int w) { return o->first[w] < 0 ? 0 : o->last[w] - o->first[w] + 1; }

static void test_equal_workers_split_evenly(void **state) {
    (void)state;
    fixture_t f;
    setup(&f, 30, 100 << 20, 3);
    placement_out_t o = plan_ok(&f.in);
    assert_int_equal(o.n_stages, 3);
    for (int w = 0; w < 3; w++) assert_int_equal(count(&o, w), 10);
    assert_int_equal(o.first[0], 0);
    assert_int_equal(o.first[1], 10);
    assert_int_equal(o.first[2], 20);
    /* 30 over 4: two of 8 and two of 7 (most even), in some order */
    setup(&f, 30, 100 << 20, 4);
    o = plan_ok(&f.in);
    int n7 = 0, n8 = 0;
    for (int w = 0; w < 4; w++) n7 += count(&o, w) == 7, n8 += count(&o, w) == 8;
    assert_int_equal(n7, 2);
    assert_int_equal(n8, 2);
    /* time = 8 layers × 100 MiB / 10 GB/s */
    assert_true(fabs(o.bottleneck_s - 8.0 * (100 << 20) / 10e9) < 1e-12);
}

static void test_faster_worker_gets_more(void **state) {
    (void)state;
    fixture_t f;
    setup(&f, 30, 1 << 20, 2);
    f.w[0].speed = 20;
    placement_out_t o = plan_ok(&f.in);
    assert_int_equal(count(&o, 0), 20);
    assert_int_equal(count(&o, 1), 10);
    f.w[0].speed = 10, f.w[1].speed = 20;
    o = plan_ok(&f.in);
    assert_int_equal(count(&o, 0), 10);
    assert_int_equal(count(&o, 1), 20);
    /* a very slow worker is better left idle than made the bottleneck */
    setup(&f, 10, 1 << 20, 2);
    f.w[1].speed = 0.01;
    o = plan_ok(&f.in);
    assert_int_equal(count(&o, 0), 10);
    assert_int_equal(count(&o, 1), 0);
    assert_int_equal(o.n_stages, 1);
}

static void test_unknown_speed_is_slowest(void **state) {
    (void)state;
    fixture_t f;
    setup(&f, 30, 1 << 20, 3);
    f.w[0].speed = 20, f.w[1].speed = 0, f.w[2].speed = 10;   /* w1 counts as 10 */
    placement_out_t o = plan_ok(&f.in);
    /* bottleneck 0.8 (8 layers at 10 or 16 at 20); 16/7/7 is the most even way to get it */
    assert_int_equal(count(&o, 0), 16);
    assert_int_equal(count(&o, 1), 7);
    assert_int_equal(count(&o, 2), 7);
    for (int w = 0; w < 3; w++) f.w[w].speed = -1;   /* none known: all equal */
    o = plan_ok(&f.in);
    for (int w = 0; w < 3; w++) assert_int_equal(count(&o, w), 10);
}

static void test_head_on_last_stage(void **state) {
    (void)state;
    fixture_t f;
    setup(&f, 10, 1 << 20, 2);
    f.in.head_mem = 4 << 20;   /* last stage reads 4 layers' worth more */
    placement_out_t o = plan_ok(&f.in);
    assert_int_equal(count(&o, 0), 7);
    assert_int_equal(count(&o, 1), 3);
    assert_true(o.mem[1] == (7u << 20));
    /* layer_read / head_read apart from memory: time follows read bytes */
    uint64_t rd[10];
    for (int l = 0; l < 10; l++) rd[l] = 1 << 20;
    f.in.layer_read = rd;
    f.in.head_read = 2 << 20;
    o = plan_ok(&f.in);
    assert_int_equal(count(&o, 0), 6);
    assert_int_equal(count(&o, 1), 4);
    assert_true(o.mem[1] == (8u << 20));
}

static void test_memory_caps(void **state) {
    (void)state;
    fixture_t f;
    setup(&f, 30, GIB, 3);
    f.w[0].memory = 5 * GIB;
    placement_out_t o = plan_ok(&f.in);
    assert_int_equal(count(&o, 0), 5);
    assert_true(count(&o, 1) + count(&o, 2) == 25);
    assert_true(abs(count(&o, 1) - count(&o, 2)) <= 1);
    /* caps force more work onto the slow worker */
    setup(&f, 30, GIB, 2);
    f.w[0].speed = 100;
    f.w[0].memory = 12 * GIB + 1;
    o = plan_ok(&f.in);
    assert_int_equal(count(&o, 0), 12);
    assert_int_equal(count(&o, 1), 18);
}

static void test_infeasible(void **state) {
    (void)state;
    fixture_t f;
    setup(&f, 30, GIB, 2);
    f.w[0].memory = 10 * GIB;
    f.w[1].memory = 10 * GIB;
    plan_fails(&f.in, TERN_ENOMEM, "model needs 30.00 GiB for layers (with the lm head), workers offer 20.00 GiB");
    /* enough in total, but no contiguous split fits (layer sizes 3,1,3 on budgets 4,3) */
    setup(&f, 3, GIB, 2);
    f.mem[0] = f.mem[2] = 3 * GIB;
    f.w[0].memory = f.w[1].memory = 3 * GIB + GIB / 2;
    plan_fails(&f.in, TERN_ENOMEM, "no contiguous split of the 3 layers fits");
    /* the lm head fits nowhere with the last layer */
    setup(&f, 4, GIB, 3);
    for (int i = 0; i < 3; i++) f.w[i].memory = 2 * GIB;
    f.in.head_mem = 2 * GIB;
    plan_fails(&f.in, TERN_ENOMEM, "lm head 2.00 GiB, largest worker budget 2.00 GiB)");
    /* bad inputs */
    setup(&f, 0, GIB, 2);
    plan_fails(&f.in, TERN_EINVAL, "0 layers");
    setup(&f, 4, GIB, 2);
    f.w[0].standby = f.w[1].standby = 1;
    plan_fails(&f.in, TERN_EINVAL, "no active worker");
    setup(&f, 4, GIB, 2);
    f.w[1].speed = NAN;
    plan_fails(&f.in, TERN_EINVAL, "worker pc1 has speed nan");
}

static void test_pinned(void **state) {
    (void)state;
    fixture_t f;
    setup(&f, 30, GIB, 2);
    f.w[1].first = 15, f.w[1].last = 29;
    f.w[0].speed = 1000;   /* would take everything if it could */
    placement_out_t o = plan_ok(&f.in);
    assert_int_equal(o.first[0], 0);
    assert_int_equal(o.last[0], 14);
    /* pins in the middle: the gaps go to the unpinned workers around them */
    setup(&f, 30, GIB, 5);
    f.w[1].first = 5, f.w[1].last = 9;
    f.w[3].first = 20, f.w[3].last = 21;
    o = plan_ok(&f.in);
    assert_int_equal(o.first[0], 0);
    assert_int_equal(o.last[0], 4);
    assert_int_equal(o.first[2], 10);
    assert_int_equal(o.last[2], 19);
    assert_int_equal(o.first[4], 22);
    assert_int_equal(o.last[4], 29);
    /* several unpinned workers share one gap evenly */
    setup(&f, 30, GIB, 3);
    f.w[0].first = 0, f.w[0].last = 9;
    o = plan_ok(&f.in);
    assert_int_equal(count(&o, 1), 10);
    assert_int_equal(count(&o, 2), 10);
}

static void test_pinned_errors(void **state) {
    (void)state;
    fixture_t f;
    setup(&f, 30, GIB, 2);
    f.w[1].first = 15, f.w[1].last = 29;
    f.w[1].memory = 10 * GIB;
    f.in.head_mem = GIB;
    plan_fails(&f.in, TERN_ENOMEM, "worker pc1 pinned layers [15,29] exceed its memory: they need 16.00 GiB with the lm head, it has 10.00 GiB");
    setup(&f, 30, GIB, 2);
    f.w[1].first = 15, f.w[1].last = 30;
    plan_fails(&f.in, TERN_EINVAL, "worker pc1 pinned layers [15,30] but the model has 30 layers (0..29)");
    setup(&f, 30, GIB, 2);
    f.w[0].first = 0, f.w[0].last = 10;
    f.w[1].first = 10, f.w[1].last = 29;
    plan_fails(&f.in, TERN_EINVAL, "worker pc1 pinned layers [10,29] overlap worker pc0 pinned [0,10]");
    setup(&f, 30, GIB, 2);
    f.w[0].first = 15, f.w[0].last = 29;
    f.w[1].first = 0, f.w[1].last = 14;
    plan_fails(&f.in, TERN_EINVAL, "worker pc1 pinned layers [0,14] comes after worker pc0 pinned [15,29] in the pipeline");
    setup(&f, 30, GIB, 2);
    f.w[0].first = 0, f.w[0].last = 9;
    f.w[1].first = 15, f.w[1].last = 29;
    plan_fails(&f.in, TERN_EINVAL, "layers [10,14] are not assigned: no unpinned worker between pc0 and pc1 in the file");
    setup(&f, 30, GIB, 2);
    f.w[0].first = 2, f.w[0].last = 9;
    plan_fails(&f.in, TERN_EINVAL, "layers [0,1] are not assigned: no unpinned worker before pc0 in the file");
    setup(&f, 30, GIB, 2);
    f.w[1].first = 0, f.w[1].last = 9;
    plan_fails(&f.in, TERN_EINVAL, "layers [10,29] are not assigned: no unpinned worker after pc1 in the file");
    setup(&f, 30, GIB, 3);
    f.w[2].first = 20, f.w[2].last = 29;
    f.w[0].memory = f.w[1].memory = 9 * GIB;
    plan_fails(&f.in, TERN_ENOMEM, "layers [0,19] need 20.00 GiB, the 2 unpinned worker(s) around them offer 18.00 GiB");
    setup(&f, 30, GIB, 2);
    f.w[1].standby = 1;
    f.w[1].first = 0, f.w[1].last = 3;
    plan_fails(&f.in, TERN_EINVAL, "worker pc1 is a standby and cannot pin layers");
}

static void test_standby_and_gone_ignored(void **state) {
    (void)state;
    fixture_t f;
    setup(&f, 30, GIB, 4);
    f.w[1].standby = 1;
    f.w[2].gone = 1;
    placement_out_t o = plan_ok(&f.in);
    assert_int_equal(o.n_stages, 2);
    assert_int_equal(o.first[1], -1);
    assert_int_equal(o.first[2], -1);
    assert_int_equal(count(&o, 0), 15);
    assert_int_equal(count(&o, 3), 15);
    assert_int_equal(o.stage[0], 0);
    assert_int_equal(o.stage[1], 3);
}

static void test_more_workers_than_layers(void **state) {
    (void)state;
    fixture_t f;
    setup(&f, 3, GIB, 5);
    placement_out_t o = plan_ok(&f.in);
    assert_int_equal(o.n_stages, 3);
    for (int s = 0; s < 3; s++) assert_int_equal(count(&o, o.stage[s]), 1);
}

static void test_deterministic(void **state) {
    (void)state;
    fixture_t f;
    setup(&f, 29, GIB, 6);
    for (int i = 0; i < 6; i++) f.w[i].speed = 7;   /* many ties */
    placement_out_t a, b;
    char err[128];
    memset(&a, 0x55, sizeof a);
    memset(&b, 0xaa, sizeof b);
    assert_int_equal(placement_plan(&f.in, &a, err, sizeof err), 0);
    assert_int_equal(placement_plan(&f.in, &b, err, sizeof err), 0);
    assert_memory_equal(&a, &b, sizeof a);
}

static void test_replan_without(void **state) {
    (void)state;
    fixture_t f;
    setup(&f, 30, GIB, 4);
    f.w[3].standby = 1;
    placement_out_t o;
    char err[256] = "";
    int promoted = 99;
    /* with the standby: it takes pc1's place in the middle of the pipeline */
    assert_int_equal(placement_replan_without(&f.in, 1, 1, &o, &promoted, err, sizeof err), 0);
    assert_int_equal(promoted, 3);
    assert_int_equal(o.n_stages, 3);
    assert_int_equal(o.stage[0], 0);
    assert_int_equal(o.stage[1], 3);
    assert_int_equal(o.stage[2], 2);
    assert_int_equal(o.first[3], 10);
    assert_int_equal(o.last[3], 19);
    assert_int_equal(o.first[1], -1);
    /* without: the two left share the layers */
    assert_int_equal(placement_replan_without(&f.in, 1, 0, &o, &promoted, err, sizeof err), 0);
    assert_int_equal(promoted, -1);
    assert_int_equal(o.n_stages, 2);
    assert_int_equal(count(&o, 0), 15);
    assert_int_equal(count(&o, 2), 15);
    /* a second failure after the first: the caller marks the first one gone */
    f.w[1].gone = 1;
    f.w[3].gone = 1;   /* the standby died too */
    assert_int_equal(placement_replan_without(&f.in, 0, 1, &o, &promoted, err, sizeof err), 0);
    assert_int_equal(promoted, -1);
    assert_int_equal(o.n_stages, 1);
    assert_int_equal(count(&o, 2), 30);
    /* losing a pinned worker between pins leaves a hole nobody may fill */
    setup(&f, 30, GIB, 3);
    f.w[0].first = 0, f.w[0].last = 9;
    f.w[1].first = 10, f.w[1].last = 19;
    f.w[2].first = 20, f.w[2].last = 29;
    assert_int_equal(placement_replan_without(&f.in, 1, 1, &o, &promoted, err, sizeof err), TERN_EINVAL);
    assert_non_null(strstr(err, "layers [10,19] are not assigned"));
    /* ... unless a standby can take its place */
    setup(&f, 30, GIB, 4);
    f.w[0].first = 0, f.w[0].last = 9;
    f.w[1].first = 10, f.w[1].last = 19;
    f.w[2].first = 20, f.w[2].last = 29;
    f.w[3].standby = 1;
    assert_int_equal(placement_replan_without(&f.in, 1, 1, &o, &promoted, err, sizeof err), 0);
    assert_int_equal(promoted, 3);
    assert_int_equal(o.first[3], 10);
    assert_int_equal(o.last[3], 19);
    /* remaining memory too small */
    setup(&f, 30, GIB, 3);
    for (int i = 0; i < 3; i++) f.w[i].memory = 16 * GIB;
    assert_int_equal(placement_replan_without(&f.in, 0, 1, &o, &promoted, err, sizeof err), 0);
    f.w[0].memory = f.w[1].memory = f.w[2].memory = 12 * GIB;
    assert_int_equal(placement_replan_without(&f.in, 0, 1, &o, &promoted, err, sizeof err), TERN_ENOMEM);
    assert_non_null(strstr(err, "workers offer 24.00 GiB"));
    assert_int_equal(placement_replan_without(&f.in, 7, 1, &o, &promoted, err, sizeof err), TERN_EINVAL);
}

static void test_format(void **state) {
    (void)state;
    fixture_t f;
    setup(&f, 30, GIB, 2);
    placement_out_t o = plan_ok(&f.in);
    char buf[256];
    placement_format(&f.in, &o, buf, sizeof buf);
    assert_string_equal(buf, "pc0 [0,14] 15.00 GiB 1610.6 ms | pc1 [15,29] 15.00 GiB 1610.6 ms");
    placement_format(&f.in, &o, buf, 10);
    assert_int_equal(strlen(buf), 9);
}

/* ---- brute force ------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static unsigned rnd(unsigned n) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

typedef struct brute {
    const placement_in_t *in;
    int act[16], na;        /* active workers in order */
    int bounds[17];
    double best_t, best_sq; /* least bottleneck; least sum of squares at it */
} brute_t;

static double bspeed(const placement_in_t *in, int w) {
    double slow = 0;
    for (int i = 0; i < in->n_workers; i++)
        if (in->workers[i].speed > 0 && (slow == 0 || in->workers[i].speed < slow)) slow = in->workers[i].speed;
    if (slow == 0) slow = 1;
    return in->workers[w].speed > 0 ? in->workers[w].speed : slow;
}

static void brute_eval(brute_t *b) {
    const placement_in_t *in = b->in;
    double t = 0, sq = 0;
    for (int q = 0; q < b->na; q++) {
        int j = b->bounds[q], k = b->bounds[q + 1], w = b->act[q];
        const placement_worker_t *pw = &in->workers[w];
        if (pw->first >= 0 && (j != pw->first || k != pw->last + 1)) return;
        if (k == j) continue;
        uint64_t m = 0, r = 0;
        for (int l = j; l < k; l++) m += in->layer_mem[l], r += in->layer_read ? in->layer_read[l] : in->layer_mem[l];
        if (k == in->n_layers) m += in->head_mem, r += in->head_read ? in->head_read : in->head_mem;
        if (pw->memory && m > pw->memory) return;
        double s = (double)r / (bspeed(in, w) * 1e9);
        t = s > t ? s : t;
        sq += s * s;
    }
    if (t < b->best_t * (1 - 1e-9)) b->best_t = t, b->best_sq = sq;
    else if (t <= b->best_t * (1 + 1e-9) && sq < b->best_sq) b->best_sq = sq;
}

static void brute_rec(brute_t *b, int q) {
    if (q == b->na) {
        if (b->bounds[q] == b->in->n_layers) brute_eval(b);
        return;
    }
    int from = b->bounds[q];
    for (int k = from; k <= b->in->n_layers; k++) {
        if (q == b->na - 1 && k != b->in->n_layers) continue;
        b->bounds[q + 1] = k;
        brute_rec(b, q + 1);
    }
}

static void test_optimal_vs_brute_force(void **state) {
    (void)state;
    int n_ok = 0, n_err = 0;
    for (int it = 0; it < 3000; it++) {
        fixture_t f;
        int L = 1 + (int)rnd(8), W = 1 + (int)rnd(4);
        setup(&f, L, 0, W);
        for (int l = 0; l < L; l++) f.mem[l] = (1 + rnd(5)) << 20;
        f.in.head_mem = (uint64_t)rnd(6) << 20;
        for (int i = 0; i < W; i++) {
            f.w[i].speed = rnd(5) ? 1 + rnd(4) : 0;
            f.w[i].memory = rnd(3) ? 0 : (uint64_t)(2 + rnd(12)) << 20;
            if (rnd(5) == 0) {
                int a = (int)rnd((unsigned)L), bb = a + (int)rnd((unsigned)(L - a));
                f.w[i].first = a, f.w[i].last = bb;
            } else if (rnd(8) == 0) {
                f.w[i].standby = 1;
            }
        }
        brute_t b = {.in = &f.in, .best_t = INFINITY, .best_sq = INFINITY};
        for (int i = 0; i < W; i++)
            if (!f.w[i].standby) b.act[b.na++] = i;
        placement_out_t o;
        char err[256] = "";
        int rc = placement_plan(&f.in, &o, err, sizeof err);
        if (b.na == 0) {
            assert_int_equal(rc, TERN_EINVAL);
            continue;
        }
        b.bounds[0] = 0;
        brute_rec(&b, 0);
        if (b.best_t == INFINITY) {
            if (rc == 0) {
                print_error("iteration %d: brute force finds no plan, placement_plan does\n", it);
                fail();
            }
            assert_true(rc == TERN_EINVAL || rc == TERN_ENOMEM);
            assert_true(err[0] != 0);
            n_err++;
            continue;
        }
        if (rc) {
            print_error("iteration %d: L=%d W=%d placement_plan failed (%s) but a plan exists (%g)\n", it, L, W, err, b.best_t);
            fail();
        }
        check_valid(&f.in, &o);
        double sq = 0;
        for (int w = 0; w < W; w++) sq += o.time_s[w] * o.time_s[w];
        if (fabs(o.bottleneck_s - b.best_t) > 1e-9 * b.best_t || sq > b.best_sq * (1 + 1e-9)) {
            print_error("iteration %d: got bottleneck %.9g sumsq %.9g, brute force %.9g %.9g\n", it, o.bottleneck_s, sq, b.best_t,
                        b.best_sq);
            fail();
        }
        n_ok++;
    }
    /* the generator must exercise both outcomes */
    assert_true(n_ok > 500);
    assert_true(n_err > 100);
}

/* the largest sizes run quickly and stay valid */
static void test_large(void **state) {
    (void)state;
    static uint64_t mem[PLACEMENT_MAX_LAYERS];
    static placement_worker_t w[PLACEMENT_MAX_WORKERS];
    for (int l = 0; l < 128; l++) mem[l] = (30 + (l % 7)) << 20;
    for (int i = 0; i < 64; i++) {
        w[i] = (placement_worker_t){.speed = 5 + i % 13, .first = -1, .last = -1, .memory = (uint64_t)(200 + i) << 20};
    }
    placement_in_t in = {.n_layers = 128, .layer_mem = mem, .head_mem = 100 << 20, .workers = w, .n_workers = 64};
    placement_out_t o = plan_ok(&in);
    assert_true(o.n_stages >= 20);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_workers_split_evenly),
        cmocka_unit_test(test_faster_worker_gets_more),
        cmocka_unit_test(test_unknown_speed_is_slowest),
        cmocka_unit_test(test_head_on_last_stage),
        cmocka_unit_test(test_memory_caps),
        cmocka_unit_test(test_infeasible),
        cmocka_unit_test(test_pinned),
        cmocka_unit_test(test_pinned_errors),
        cmocka_unit_test(test_standby_and_gone_ignored),
        cmocka_unit_test(test_more_workers_than_layers),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_replan_without),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_optimal_vs_brute_force),
        cmocka_unit_test(test_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
