/* test_promptcache: the RAM prompt cache's entry store (coordinator/promptcache.c). Byte
 * accounting (rows plus tokens) against a hand count; the least recently used entry goes first
 * when a new one needs room, a hit makes an entry recent; an entry that a new one extends is
 * dropped, one that an entry already holds is not stored; an entry larger than the limit is
 * refused; the lookup returns the longest shared beginning, capped, the most recent among equals;
 * the rows stored are the rows given. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "coordinator/promptcache.h"
#include "core/err.h"

#define ROW 10   /* bytes of rows per token in these tests */

/* tokens base, base+1, ... (n of them) into t */
static void seqt(int32_t *t, int n, int base) {
    for (int i = 0; i < n; i++) t[i] = base + i;
}

/* puts toks[0..n) with ROW bytes a token of rows filled with byte `fill` */
static int put(promptcache_t *pc, const int32_t *toks, int n, int fill) {
    uint8_t *kv = malloc((size_t)n * ROW);
    assert_non_null(kv);
    memset(kv, fill, (size_t)n * ROW);
    int rc = promptcache_put(pc, toks, n, &kv, (size_t)n * ROW);
    assert_null(kv);   /* taken either way */
    return rc;
}

static void test_bytes_and_lru(void **st) {
    (void)st;
    size_t per = promptcache_entry_bytes(20, 20 * ROW);
    assert_int_equal(per, 20 * ROW + 20 * sizeof(int32_t));
    promptcache_t pc;
    promptcache_init(&pc, 3 * per);   /* room for three entries of 20 tokens */
    int32_t a[20], b[20], c[20], d[20];
    seqt(a, 20, 100), seqt(b, 20, 200), seqt(c, 20, 300), seqt(d, 20, 400);
    assert_int_equal(put(&pc, a, 20, 1), 0);
    assert_int_equal(put(&pc, b, 20, 2), 0);
    assert_int_equal(put(&pc, c, 20, 3), 0);
    assert_int_equal(pc.n, 3);
    assert_int_equal(pc.bytes, 3 * per);
    int k, i = promptcache_find(&pc, a, 20, 19, &k);   /* a hit makes a the most recent */
    assert_true(i >= 0);
    assert_int_equal(k, 19);
    promptcache_hit(&pc, i, k);
    assert_int_equal(put(&pc, d, 20, 4), 0);           /* b, now the oldest, goes */
    assert_int_equal(pc.n, 3);
    assert_int_equal(pc.bytes, 3 * per);
    assert_int_equal(pc.n_evicted, 1);
    assert_int_equal(promptcache_find(&pc, b, 20, 20, &k), -1);
    assert_int_equal(k, 0);
    i = promptcache_find(&pc, d, 20, 20, &k);
    assert_true(i >= 0);
    assert_int_equal(k, 20);
    for (size_t j = 0; j < pc.e[i].kv_bytes; j++) assert_int_equal(pc.e[i].kv[j], 4);
    assert_int_equal(pc.n_hits, 1);
    assert_int_equal(pc.n_restored_tok, 19);
    assert_int_equal(pc.n_saved, 4);
    /* an entry larger than the limit: refused, nothing evicted */
    int32_t big[80];
    seqt(big, 80, 500);
    assert_false(promptcache_wants(&pc, big, 80, 80 * ROW));
    assert_int_equal(put(&pc, big, 80, 5), TERN_EINVAL);
    assert_int_equal(pc.n, 3);
    assert_int_equal(pc.bytes, 3 * per);
    promptcache_free(&pc);
    assert_int_equal(pc.n, 0);
    assert_int_equal(pc.bytes, 0);
}

/* --cache-ram -1 (SIZE_MAX): every entry stays, nothing is evicted, the bytes add up */
static void test_no_limit(void **st) {
    (void)st;
    promptcache_t pc;
    promptcache_init(&pc, SIZE_MAX);
    int32_t t[64];
    size_t sum = 0;
    for (int j = 0; j < 40; j++) {
        seqt(t, 64, 1000 * (j + 1));
        assert_true(promptcache_wants(&pc, t, 64, 64 * ROW));
        assert_int_equal(put(&pc, t, 64, j + 1), 0);
        sum += promptcache_entry_bytes(64, 64 * ROW);
    }
    assert_int_equal(pc.n, 40);
    assert_int_equal(pc.bytes, sum);
    assert_int_equal(pc.n_evicted, 0);
    int k;
    seqt(t, 64, 1000);   /* the first one is still there */
    assert_true(promptcache_find(&pc, t, 64, 64, &k) >= 0);
    assert_int_equal(k, 64);
    promptcache_free(&pc);
}

static void test_prefixes(void **st) {
    (void)st;
    promptcache_t pc;
    promptcache_init(&pc, SIZE_MAX);
    int32_t t[40];
    seqt(t, 40, 7);
    assert_int_equal(put(&pc, t, 20, 1), 0);
    assert_false(promptcache_wants(&pc, t, 20, 20 * ROW));   /* held already */
    assert_false(promptcache_wants(&pc, t, 12, 12 * ROW));   /* a beginning of an entry */
    assert_int_equal(put(&pc, t, 12, 1), TERN_EINVAL);
    assert_true(promptcache_wants(&pc, t, 30, 30 * ROW));
    assert_int_equal(put(&pc, t, 30, 2), 0);                  /* extends the first: it is dropped */
    assert_int_equal(pc.n, 1);
    assert_int_equal(pc.e[0].n, 30);
    assert_int_equal(pc.bytes, promptcache_entry_bytes(30, 30 * ROW));
    /* another conversation sharing the first 10 tokens */
    int32_t u[40];
    memcpy(u, t, sizeof u);
    u[10] = 9999;
    assert_int_equal(put(&pc, u, 25, 3), 0);
    assert_int_equal(pc.n, 2);
    int k, i = promptcache_find(&pc, t, 40, 39, &k);          /* t's own entry: 30 shared */
    assert_true(i >= 0);
    assert_int_equal(k, 30);
    assert_int_equal(pc.e[i].kv[0], 2);
    i = promptcache_find(&pc, t, 40, 25, &k);                 /* capped */
    assert_int_equal(k, 25);
    assert_int_equal(pc.e[i].kv[0], 2);
    i = promptcache_find(&pc, u, 40, 39, &k);
    assert_int_equal(k, 25);
    assert_int_equal(pc.e[i].kv[0], 3);
    i = promptcache_find(&pc, t, 8, 7, &k);                   /* both share 7: the most recent (u) */
    assert_int_equal(k, 7);
    assert_int_equal(pc.e[i].kv[0], 3);
    int32_t none[3] = {-5, -6, -7};
    assert_int_equal(promptcache_find(&pc, none, 3, 2, &k), -1);
    assert_int_equal(k, 0);
    promptcache_free(&pc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_and_lru),
        cmocka_unit_test(test_no_limit),
        cmocka_unit_test(test_prefixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
