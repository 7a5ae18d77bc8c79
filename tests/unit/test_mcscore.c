/* test_mcscore: the benchmark task files and scoring rules (coordinator/mcscore.c): std::mt19937's
 * known outputs, the picks against plain formulas, the three parsers on good files (fields,
 * quotes, CRLF, headers, llama.cpp's picks) and on bad ones (each error one line naming the line
 * or byte; every truncation of a binary file), the scored ranges against a plain transcription
 * of llama.cpp's loops on random sequences, the pick's tie rules and Wilson's interval against
 * the textbook formula's values. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "coordinator/mcscore.h"
#include "core/err.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n) {   /* uniform-ish [0, n) */
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 33) % n;
}

static void test_mt19937(void **state) {
    (void)state;
    mc_rng_t r;
    mc_rng_seed(&r, 5489);   /* the C++ standard: the 10000th output of a default mt19937 */
    uint32_t v = 0;
    for (int i = 0; i < 10000; i++) v = mc_rng_next(&r);
    assert_int_equal(v, 4123659995u);
    mc_rng_seed(&r, 1);
    assert_int_equal(mc_rng_next(&r), 1791095845u);
    /* below(n): the high word of next * n whenever the low word is not in the reject zone */
    mc_rng_t a, b;
    mc_rng_seed(&a, 1), mc_rng_seed(&b, 1);
    for (int i = 0; i < 2000; i++) {
        uint32_t n = 1 + rnd(100000), x = mc_rng_below(&a, n);
        uint64_t p = (uint64_t)mc_rng_next(&b) * n;
        assert_true(x < n);
        if ((uint32_t)p >= (uint32_t)(-n) % n) assert_int_equal(x, (uint32_t)(p >> 32));
        else mc_rng_seed(&a, (uint32_t)i), mc_rng_seed(&b, (uint32_t)i);   /* rejected: resync */
    }
    /* the float pick: int(f32(f32(2^-32 * f32(r)) * n)), never n */
    mc_rng_seed(&a, 1), mc_rng_seed(&b, 1);
    for (int i = 0; i < 2000; i++) {
        uint32_t n = 1 + rnd(50000), x = mc_rng_pick_float(&a, n);
        float f = (float)mc_rng_next(&b) * (1.0f / 4294967296.0f);
        f = f * (float)n;
        uint32_t want = (uint32_t)f < n ? (uint32_t)f : n - 1;
        assert_int_equal(x, want);
    }
}

/* err is one non-empty line containing want */
static void err_like(int rc, const char *err, const char *want) {
    if (rc >= 0 || !strstr(err, want) || strchr(err, '\n')) fail_msg("rc %d, err '%s', want '%s'", rc, err, want);
}

static int hs(const char *text, int n_pick, mc_set_t *s, char *err) {
    return mc_parse_hellaswag(text, strlen(text), n_pick, s, err, 300);
}
static int wg(const char *text, int n_pick, mc_set_t *s, char *err) {
    return mc_parse_winogrande(text, strlen(text), n_pick, s, err, 300);
}

static void test_hellaswag(void **state) {
    (void)state;
    char err[300];
    mc_set_t s;
    const char *two = "ctx A\n2\nend a0\nend a1\nend a2\nend a3\r\nctx B\n 0 \nb0\nb1\nb2\nb3";   /* CRLF, no final \n */
    assert_int_equal(hs(two, 0, &s, err), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.n_file, 2);
    for (int i = 0; i < 2; i++) {
        const mc_task_t *t = &s.t[i];
        int a = t->where == 1;
        assert_true(t->where == 1 || t->where == 7);
        assert_string_equal(t->ctx, a ? "ctx A" : "ctx B");
        assert_int_equal(t->gold, a ? 2 : 0);
        assert_int_equal(t->n_choice, 4);
        assert_string_equal(t->choice[3], a ? "end a3" : "b3");
        assert_null(t->ctx2);
    }
    /* llama.cpp's order: mt19937(1), uniform among those left; 2 tasks: below(2) picks the first */
    mc_rng_t r;
    mc_rng_seed(&r, 1);
    assert_int_equal(s.t[0].where, 6 * (long)mc_rng_below(&r, 2) + 1);
    mc_set_free(&s);
    /* 40 tasks: the order against a plain erase-from-the-list transcription */
    static char many[40 * 40];
    size_t o = 0;
    for (int i = 0; i < 40; i++) o += (size_t)snprintf(many + o, sizeof many - o, "c%d\n%d\na\nb\nc\nd\n", i, i % 4);
    assert_int_equal(hs(many, 33, &s, err), 0);
    assert_int_equal(s.n, 33);
    int list[40], n_list = 40;
    for (int i = 0; i < 40; i++) list[i] = i;
    mc_rng_seed(&r, 1);
    for (int i = 0; i < 33; i++) {
        int j = (int)mc_rng_below(&r, (uint32_t)n_list), idx = list[j];
        memmove(list + j, list + j + 1, (size_t)(n_list - j - 1) * sizeof *list);
        n_list--;
        assert_int_equal(s.t[i].where, 6 * idx + 1);
        assert_int_equal(s.t[i].gold, idx % 4);
    }
    mc_set_free(&s);
    assert_int_equal(hs(two, 1, &s, err), 0);
    assert_int_equal(s.n, 1);
    mc_set_free(&s);
    err_like(hs("c\n1\na\nb\nc\nd\nc2\n1\na\n", 0, &s, err), err, "the task from line 7 has 3 of its 6");
    assert_null(s.t);
    err_like(hs("c\n4\na\nb\nc\nd\n", 0, &s, err), err, "line 2: the gold ending index '4'");
    err_like(hs("c\n1\na\nb\nc\nd\nc\nx1\na\nb\nc\nd\n", 0, &s, err), err, "line 8: the gold ending index 'x1'");
    err_like(hs("c\n-1\na\nb\nc\nd\n", 0, &s, err), err, "line 2");
    err_like(hs("", 0, &s, err), err, "no tasks");
}

static void test_winogrande(void **state) {
    (void)state;
    char err[300];
    mc_set_t s;
    const char *csv = "index,sentence,option1,option2,answer\n"
                      "0,Sarah was better than Maria so _ got the easy cases.,Sarah,Maria,2\r\n"
                      "\n"
                      "1,\"He said \"\"hi, there\"\" and _ left.\",Tom, \"Ann, B\" ,1\n";
    assert_int_equal(wg(csv, 0, &s, err), 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.t[0].ctx, "Sarah was better than Maria so ");
    assert_string_equal(s.t[0].ctx2, " got the easy cases.");
    assert_string_equal(s.t[0].choice[1], "Maria");
    assert_int_equal(s.t[0].gold, 1);
    assert_int_equal(s.t[0].where, 2);
    assert_string_equal(s.t[1].ctx, "He said \"hi, there\" and ");
    assert_string_equal(s.t[1].ctx2, " left.");
    assert_string_equal(s.t[1].choice[1], "Ann, B");
    assert_int_equal(s.t[1].gold, 0);
    assert_int_equal(s.t[1].where, 4);
    mc_set_free(&s);
    /* a pick of 3 of 5: llama.cpp's float pick, in its order */
    char five[400] = "";
    for (int i = 0; i < 5; i++) snprintf(five + strlen(five), sizeof five - strlen(five), "%d,s%d _ x.,a,b,1\n", i, i);
    assert_int_equal(wg(five, 3, &s, err), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.n_file, 5);
    mc_rng_t r;
    mc_rng_seed(&r, 1);
    long left[5] = {1, 2, 3, 4, 5};
    for (int i = 0, n = 5; i < 3; i++) {
        uint32_t j = mc_rng_pick_float(&r, (uint32_t)n);
        assert_int_equal(s.t[i].where, left[j]);
        left[j] = left[--n];
    }
    mc_set_free(&s);
    err_like(wg("0,no blank here.,a,b,1\n", 0, &s, err), err, "line 1: no '_'");
    err_like(wg("i,s,a,b,answer\n0,x _ y,a,b,0\n", 0, &s, err), err, "line 2: the answer '0'");
    err_like(wg("0,x _ y,a,b,1\n1,x _ y,a,b,one\n", 0, &s, err), err, "line 2: the answer 'one'");
    err_like(wg("0,x _ y,a,b,1\n1,x _ y,a\n", 0, &s, err), err, "line 2: not 5 comma-separated");
    err_like(wg("0,\"x _ y,a,b,1\n", 0, &s, err), err, "line 1: not 5");   /* an open quote eats the commas */
    err_like(wg("\n\n", 0, &s, err), err, "no tasks");
    assert_null(s.t);
}

/* a multiple-choice file: tasks with n[i] answers (label 1 on answer right[i]) */
static size_t put_u32(uint8_t *b, size_t o, uint32_t v) { memcpy(b + o, &v, 4); return o + 4; }
static size_t put_str(uint8_t *b, size_t o, const char *s) {
    o = put_u32(b, o, (uint32_t)strlen(s));
    memcpy(b + o, s, strlen(s));
    return o + strlen(s);
}
static size_t mc_file(uint8_t *b, int n_task, const int *n, const int *right) {
    size_t o = 4 + 4 * (size_t)n_task;
    put_u32(b, 0, (uint32_t)n_task);
    for (int i = 0; i < n_task; i++) {
        put_u32(b, 4 + 4 * (size_t)i, (uint32_t)o);
        char q[32];
        snprintf(q, sizeof q, "question %d", i);
        o = put_str(b, o, q);
        o = put_u32(b, o, (uint32_t)n[i]);
        for (int a = 0; a < n[i]; a++) o = put_str(b, o, a % 2 ? "yes" : "no");
        for (int a = 0; a < n[i]; a++) o = put_u32(b, o, a == right[i]);
        o = put_u32(b, o, 1);   /* mc2: one answer */
        o = put_str(b, o, "maybe");
        o = put_u32(b, o, 1);
    }
    return o;
}

static void test_multi(void **state) {
    (void)state;
    static uint8_t b[4096];
    char err[300];
    mc_set_t s;
    const int n[4] = {2, 5, 3, 4}, right[4] = {1, 4, 0, 2};
    size_t len = mc_file(b, 4, n, right);
    assert_int_equal(mc_parse_multi(b, len, 0, &s, err, sizeof err), 0);
    assert_int_equal(s.n, 4);
    for (int i = 0; i < 4; i++) {
        char q[32];
        snprintf(q, sizeof q, "question %d", i);
        assert_string_equal(s.t[i].ctx, q);
        assert_int_equal(s.t[i].n_choice, n[i]);
        assert_string_equal(s.t[i].choice[1], "yes");
        for (int a = 0; a < n[i]; a++) assert_int_equal(mc_correct(&s.t[i], a), a == right[i]);
    }
    assert_int_equal(s.t[0].where, 20);
    mc_set_free(&s);
    assert_int_equal(mc_parse_multi(b, len, 2, &s, err, sizeof err), 0);   /* picked by offset */
    assert_int_equal(s.n, 2);
    for (int i = 0; i < 2; i++) assert_true(s.t[i].n_choice == n[strtol(s.t[i].ctx + 9, NULL, 10)]);
    mc_set_free(&s);
    /* every truncation fails cleanly (all tasks, and picking 2: then only the picked are read) */
    for (size_t cut = 0; cut < len; cut++) {
        int rc = mc_parse_multi(b, cut, 0, &s, err, sizeof err);
        err_like(rc, err, cut < 20 ? "t" : "truncated");
        assert_null(s.t);
        rc = mc_parse_multi(b, cut, 2, &s, err, sizeof err);
        if (rc == 0) mc_set_free(&s);
        else err_like(rc, err, "");
    }
    uint8_t c[4096];
    memcpy(c, b, len);
    put_u32(c, 20 + 4 + 10, 101);   /* task 1's answer count */
    err_like(mc_parse_multi(c, len, 0, &s, err, sizeof err), err, "task 1 (byte 20): 101 answers");
    memcpy(c, b, len);
    put_u32(c, 20 + 4 + 10, 0);
    err_like(mc_parse_multi(c, len, 0, &s, err, sizeof err), err, "task 1 (byte 20): no answers");
    memcpy(c, b, len);
    put_u32(c, 20, 0);   /* an empty question */
    err_like(mc_parse_multi(c, len, 0, &s, err, sizeof err), err, "");
    memcpy(c, b, len);
    for (int i = 0; i < 4; i++) put_u32(c, 4 + 4 * (size_t)i, (uint32_t)len + 9);
    err_like(mc_parse_multi(c, len, 2, &s, err, sizeof err), err, "outside the tasks");
    memcpy(c, b, len);
    put_u32(c, 0, 1u << 30);
    err_like(mc_parse_multi(c, len, 0, &s, err, sizeof err), err, "at most");
    put_u32(c, 0, 1000);
    err_like(mc_parse_multi(c, len, 0, &s, err, sizeof err), err, "no room for their 1000 offsets");
}

/* llama.cpp's loops, transcribed plainly (hellaswag / multiple_choice_score, winogrande_score),
 * for sequences where they are well defined */
static void ranges_ref(int kind, int n, int32_t seq[][40], const int *len, const int *nb, int *lo, int *hi) {
    int cp = 0;
    for (;; cp++) {
        int same = 1;
        for (int s = 0; s < n; s++) same = same && cp < len[s] && seq[s][cp] == seq[0][cp];
        if (!same) break;
    }
    if (kind != MC_WINOGRANDE) {
        for (int s = 0; s < n; s++) lo[s] = cp, hi[s] = len[s];
        return;
    }
    int skip = len[0] - cp > 3 && len[1] - cp > 3;
    for (int s = 0; s < 2; s++) {
        int base = skip ? nb[s] : cp, last = len[s] - base > 1 ? 1 : 0;
        lo[s] = base;   /* j from base - 1 to len - 2 - last scores tokens j + 1 */
        hi[s] = len[s] - 1 - last + 1;
    }
}

static void test_ranges(void **state) {
    (void)state;
    int compared = 0;
    for (int iter = 0; iter < 5000; iter++) {
        int kind = (int)rnd(3), n = kind == MC_WINOGRANDE ? 2 : kind == MC_HELLASWAG ? 4 : 2 + (int)rnd(5);
        int32_t seq[6][40];
        const int32_t *p[6];
        int len[6], nb[2], lo[6], hi[6], rlo[6], rhi[6];
        int pre = 1 + (int)rnd(10);   /* a shared head (BOS and the context) */
        for (int s = 0; s < n; s++) {
            len[s] = pre + 1 + (int)rnd(12);
            for (int i = 0; i < len[s]; i++) seq[s][i] = i < pre ? 7 + i : (int32_t)rnd(4);
            p[s] = seq[s];
        }
        for (int s = 0; s < 2; s++) nb[s] = pre + 1 + (int)rnd((uint32_t)(len[s] - pre));   /* <= len */
        assert_int_equal(mc_ranges(kind, n, p, len, nb, lo, hi), 0);
        ranges_ref(kind, n, seq, len, nb, rlo, rhi);
        /* llama.cpp's are defined when every range is non-empty and after token 0 (it reads past
         * a sequence that all the others begin with, and divides by 0 on an empty range) */
        int defined = 1;
        for (int s = 0; s < n; s++) defined = defined && rlo[s] < rhi[s] && rlo[s] >= 1;
        compared += defined;
        for (int s = 0; s < n; s++) {
            assert_true(lo[s] >= 1 && lo[s] < hi[s] && hi[s] <= len[s]);
            if (defined) {
                assert_int_equal(lo[s], rlo[s]);
                assert_int_equal(hi[s], rhi[s]);
            }
        }
    }
    assert_true(compared > 2500);
    int32_t one[1] = {5};
    const int32_t *p1[1] = {one};
    int l1 = 1, lo, hi;
    assert_true(mc_ranges(MC_MULTI, 1, p1, &l1, NULL, &lo, &hi) < 0);   /* nothing to score */
    int32_t same[2][3] = {{1, 2, 3}, {1, 2, 3}};
    const int32_t *p2[2] = {same[0], same[1]};
    int l2[2] = {3, 3}, lo2[2], hi2[2];
    assert_int_equal(mc_ranges(MC_HELLASWAG, 2, p2, l2, NULL, lo2, hi2), 0);   /* identical: the last token */
    assert_int_equal(lo2[0], 2);
    assert_int_equal(hi2[1], 3);
}

static void test_pick_wilson(void **state) {
    (void)state;
    const double tie[4] = {-1.5, -1.0, -1.0, -2.0}, wtie[2] = {-1.0, -1.0}, w1[2] = {-0.5, -1.0};
    assert_int_equal(mc_pick(MC_HELLASWAG, tie, 4), 1);      /* the first best */
    assert_int_equal(mc_pick(MC_MULTI, tie, 4), 1);
    assert_int_equal(mc_pick(MC_WINOGRANDE, wtie, 2), 1);    /* a tie goes to option 2 */
    assert_int_equal(mc_pick(MC_WINOGRANDE, w1, 2), 0);
    mc_task_t t = {.n_choice = 4, .gold = 2};
    assert_true(mc_correct(&t, 2) && !mc_correct(&t, 1) && !mc_correct(&t, 4) && !mc_correct(&t, -1));
    /* (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), computed apart */
    const struct { int c, n; double lo, hi; } w[] = {
        {3, 12, 0.088941668394, 0.532305334934},
        {0, 5, 0.0, 0.434482464783},
        {7, 7, 0.645669564933, 1.0},
        {250, 400, 0.576579005880, 0.671042920537},
    };
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        double lo, hi;
        mc_wilson(w[i].c, w[i].n, &lo, &hi);
        assert_true(fabs(lo - w[i].lo) < 1e-9 && fabs(hi - w[i].hi) < 1e-9);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mt19937),
        cmocka_unit_test(test_hellaswag),
        cmocka_unit_test(test_winogrande),
        cmocka_unit_test(test_multi),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_pick_wilson),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
