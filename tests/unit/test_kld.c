/* test_kld: the KL-divergence base file (coordinator/kld.c, llama-perplexity's format): packing
 * round trips within scale/2 (and the floor below KLD_RANGE), the KLD of a distribution with its
 * own packed row is 0 within the quantisation error, hand-computed KLD / Δp / top agreement,
 * the file's byte layout, and the reader's clean errors on every truncation and corruption. */
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
#include "coordinator/kld.h"
#include "core/err.h"

static uint64_t g_rng = 0x1234567;
static double rnd(void) {   /* uniform [0, 1) */
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

static float row_f(const uint16_t *row, int i) {
    float v;
    memcpy(&v, row + 2 * i, sizeof v);
    return v;
}

/* exact log softmax in double */
static void log_softmax(const float *l, int n, double *out) {
    double mx = l[0], sum = 0;
    for (int i = 1; i < n; i++) mx = l[i] > mx ? l[i] : mx;
    for (int i = 0; i < n; i++) sum += exp(l[i] - mx);
    for (int i = 0; i < n; i++) out[i] = l[i] - mx - log(sum);
}

static void test_pack_roundtrip(void **state) {
    (void)state;
    static const int sizes[] = {1, 2, 3, 7, 255, 512, 32001};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        const int V = sizes[si];
        for (int spread = 0; spread < 3; spread++) {   /* narrow, around the floor, far past it */
            float *l = malloc((size_t)V * sizeof *l);
            double *ex = malloc((size_t)V * sizeof *ex);
            uint16_t *row = malloc(kld_row_len(V) * sizeof *row);
            assert_non_null(l), assert_non_null(ex), assert_non_null(row);
            const double w = spread == 0 ? 2 : spread == 1 ? 17 : 60;
            for (int i = 0; i < V; i++) l[i] = (float)(w * (rnd() - 0.5));
            memset(row, 0xAB, kld_row_len(V) * sizeof *row);
            int tgt = V / 3;
            double nll = kld_row_pack(l, V, tgt, row);
            log_softmax(l, V, ex);
            assert_true(fabs(nll + ex[tgt]) < 1e-9);
            char err[200];
            assert_int_equal(kld_row_check(row, err, sizeof err), 0);
            float scale = row_f(row, 0), min_lp = row_f(row, 1);
            assert_true(scale >= 0 && scale <= KLD_RANGE / 65535.0f * 1.0001f);
            if (V & 1) assert_int_equal(row[4 + V], 0);   /* the padding */
            double worst = 0;
            for (int i = 0; i < V; i++) {
                double got = kld_row_logprob(row, i), d = fabs(got - ex[i]);
                if (ex[i] < min_lp - 1e-5) {   /* below the floor: stored as the floor */
                    assert_int_equal(row[4 + i], 0);
                    assert_true(got <= min_lp + 1e-6);
                    continue;
                }
                if (d > worst) worst = d;
            }
            if (worst > scale / 2 + 1e-5) fail_msg("V %d spread %d: error %g > scale/2 %g", V, spread, worst, scale / 2.0);
            free(l), free(ex), free(row);
        }
    }
}

/* a model compared with its own packed distribution: KLD ~ 0, Δp ~ 0, the same top token */
static void test_self(void **state) {
    (void)state;
    const int V = 1000, N = 200;
    float *l = malloc((size_t)V * sizeof *l);
    uint16_t *row = malloc(kld_row_len(V) * sizeof *row);
    kld_stats_t st;
    kld_stats_init(&st);
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < V; i++) l[i] = (float)(6 * (rnd() - 0.5));   /* a range < KLD_RANGE: no floor */
        l[(n * 7) % V] += 7;   /* a clear best token (ties within a code are no agreement test) */
        int tgt = (n * 13) % V;
        kld_row_pack(l, V, tgt, row);
        assert_int_equal(kld_stats_add(&st, l, V, row, tgt), 0);
        double scale = row_f(row, 0);
        if (fabs(st.kld[n]) > scale) fail_msg("row %d: KLD %g with itself (scale %g)", n, (double)st.kld[n], scale);
        assert_true(fabs(st.p_diff[n]) < 1e-5);
    }
    assert_int_equal(st.count, N);
    assert_int_equal(st.n_same_top, N);
    assert_true(fabs(st.sum_nll - st.sum_nll_base) / N < 1e-4);
    kld_stats_free(&st);
    free(l), free(row);
}

/* hand-computed: base P, model Q over two tokens */
static void test_hand(void **state) {
    (void)state;
    uint16_t row[6];
    kld_stats_t st;
    kld_stats_init(&st);
    /* P = (1/2, 1/2) (scale 0: every code 0, log p = min = -ln 2); Q = (3/4, 1/4) */
    const float p_uni[2] = {0, 0}, q[2] = {logf(3), 0};
    kld_row_pack(p_uni, 2, 0, row);
    assert_true(row_f(row, 0) == 0);
    assert_true(fabs(kld_row_logprob(row, 1) + log(2)) < 1e-6);
    assert_int_equal(kld_stats_add(&st, q, 2, row, 0), 0);
    assert_true(fabs(st.kld[0] - 0.5 * log(4.0 / 3)) < 1e-6);   /* 1/2 ln(2/3) + 1/2 ln 2 */
    assert_true(fabs(st.p_diff[0] - 0.25) < 1e-6);               /* 3/4 - 1/2 */
    assert_true(fabs(st.sum_nll - log(4.0 / 3)) < 1e-6 && fabs(st.sum_nll_base - log(2)) < 1e-6);
    assert_int_equal(st.n_same_top, 1);   /* ties: the first token is the base's best */
    /* P = (1/4, 3/4): codes {0, 65535}, log p = {-ln 4, ln 3/4}; Q = (3/4, 1/4) */
    const float p2[2] = {0, logf(3)};
    kld_row_pack(p2, 2, 1, row);
    assert_int_equal(row[4], 0);
    assert_int_equal(row[5], 65535);
    assert_true(fabs(kld_row_logprob(row, 0) + log(4)) < 1e-6 && fabs(kld_row_logprob(row, 1) - log(0.75)) < 1e-6);
    assert_int_equal(kld_stats_add(&st, q, 2, row, 1), 0);
    assert_true(fabs(st.kld[1] - 0.5 * log(3)) < 1e-6);   /* 1/4 ln(1/3) + 3/4 ln 3 */
    assert_true(fabs(st.p_diff[1] - (0.25 - 0.75)) < 1e-6);
    assert_int_equal(st.n_same_top, 1);   /* the best tokens differ */
    assert_true(fabs(st.max_p_diff - 0.5) < 1e-6);
    /* the printed statistics */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    kld_stats_print(f, &st);
    fclose(f);
    assert_non_null(strstr(buf, "Same top p: 50.000"));
    assert_non_null(strstr(buf, "Maximum KLD:   0.549306"));
    assert_non_null(strstr(buf, "Minimum KLD:   0.143841"));
    assert_non_null(strstr(buf, "Median  KLD:   0.346574"));   /* the mean of the two */
    assert_non_null(strstr(buf, "Maximum Δp: 25.000%"));
    assert_non_null(strstr(buf, "Minimum Δp: -50.000%"));
    free(buf);
    kld_stats_free(&st);
}

/* a small valid file: n_chunk chunks of n_ctx tokens, vocabulary V */
static size_t make_file(char **buf, int n_ctx, int V, int n_chunk) {
    size_t len = 0;
    FILE *f = open_memstream(buf, &len);
    kld_header_t h = {n_ctx, V, n_chunk};
    int32_t *tok = malloc((size_t)n_ctx * n_chunk * sizeof *tok);
    for (int i = 0; i < n_ctx * n_chunk; i++) tok[i] = (i * 7) % V;
    char err[200];
    assert_int_equal(kld_write_header(f, &h, tok, err, sizeof err), 0);
    float *l = malloc((size_t)V * sizeof *l);
    uint16_t *row = malloc(kld_row_len(V) * sizeof *row);
    for (int c = 0; c < n_chunk; c++)
        for (int r = 0; r < kld_chunk_rows(n_ctx); r++) {
            for (int i = 0; i < V; i++) l[i] = (float)(4 * rnd());
            kld_row_pack(l, V, 0, row);
            fwrite(row, sizeof *row, kld_row_len(V), f);
        }
    fclose(f);
    free(tok), free(l), free(row);
    return len;
}

/* reads header and every row of buf[0..len); 0 or the first error */
static int read_all(const char *buf, size_t len, char *err, size_t errlen) {
    FILE *f = fmemopen((void *)buf, len, "rb");
    kld_header_t h;
    int32_t *tok;
    int rc = kld_read_header(f, &h, &tok, err, errlen);
    if (rc == 0) {
        uint16_t *rows = malloc(kld_row_len(h.n_vocab) * sizeof *rows);
        for (int c = 0; rc == 0 && c < h.n_chunk; c++)
            for (int r = 0; rc == 0 && r < kld_chunk_rows(h.n_ctx); r++) rc = kld_read_rows(f, h.n_vocab, 1, rows, err, errlen);
        free(rows);
        free(tok);
    } else {
        assert_null(tok);
    }
    fclose(f);
    return rc;
}

static void test_file(void **state) {
    (void)state;
    char *buf, err[300];
    const int n_ctx = 10, V = 5, n_chunk = 2;
    size_t len = make_file(&buf, n_ctx, V, n_chunk);
    /* layout: 20 header bytes, the tokens, then rows of 2·((5+1)/2)+4 = 10 uint16 */
    assert_int_equal(kld_row_len(V), 10);
    assert_int_equal(kld_chunk_rows(n_ctx), 4);
    assert_int_equal(len, 20 + 4 * n_ctx * n_chunk + n_chunk * 4 * 10 * 2);
    assert_memory_equal(buf, "_logits_", 8);
    int32_t hv[3];
    memcpy(hv, buf + 8, sizeof hv);
    assert_int_equal(hv[0], n_ctx), assert_int_equal(hv[1], V), assert_int_equal(hv[2], n_chunk);
    assert_int_equal(read_all(buf, len, err, sizeof err), 0);
    /* every truncation: a clean error */
    for (size_t cut = 0; cut < len; cut++) {
        err[0] = 0;
        if (read_all(buf, cut, err, sizeof err) >= 0) fail_msg("truncated at %zu of %zu: accepted", cut, len);
        assert_true(err[0] != 0);
    }
    char *bad = malloc(len + 1);
    memcpy(bad, buf, len);
    bad[len] = 0;
    assert_true(read_all(bad, len + 1, err, sizeof err) < 0);   /* a byte too many */
    assert_non_null(strstr(err, "after the last"));
    struct { size_t off; int32_t v; const char *why; } pokes[] = {
        {0, 0x5f5f5f5f, "magic"}, {8, 4, "n_ctx"}, {12, 0, "n_vocab"}, {16, 0, "n_chunk"}, {16, 3, "truncated"},
        {20, V, "outside the vocabulary"}, {24, -1, "outside the vocabulary"},
    };
    for (size_t i = 0; i < sizeof pokes / sizeof *pokes; i++) {
        memcpy(bad, buf, len);
        memcpy(bad + pokes[i].off, &pokes[i].v, 4);
        if (read_all(bad, len, err, sizeof err) >= 0 || !strstr(err, pokes[i].why))
            fail_msg("poke %zu: '%s' (wanted '%s')", i, err, pokes[i].why);
    }
    const size_t row0 = 20 + 4 * n_ctx * n_chunk;   /* a row's scale NaN, then its minimum positive */
    const float nan_f = NAN, pos_f = 1.0f;
    memcpy(bad, buf, len);
    memcpy(bad + row0, &nan_f, 4);
    assert_true(read_all(bad, len, err, sizeof err) < 0);
    assert_non_null(strstr(err, "corrupt"));
    memcpy(bad, buf, len);
    memcpy(bad + row0 + 20 + 4, &pos_f, 4);
    assert_true(read_all(bad, len, err, sizeof err) < 0);
    free(bad);
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_roundtrip),
        cmocka_unit_test(test_self),
        cmocka_unit_test(test_hand),
        cmocka_unit_test(test_file),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    int total = (int)(sizeof tests / sizeof *tests);
    printf("%d passed, %d failed\n", total - failed, failed);
    return failed ? 1 : 0;
}
