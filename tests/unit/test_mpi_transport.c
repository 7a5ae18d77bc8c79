/* test_mpi_transport: the mpi:// backend of transport.h. Alone (ctest: an MPI singleton) it
 * talks to itself: listen on mpi://self, connect to its own rank, headers and tensors of
 * every size arrive bit-exact and in order, replies reach the connected conn they answer (also
 * with two links to one rank), poll, timeouts,
 * oversized tensors refused with the link still usable, bad endpoints. Under
 * `mpirun -np 2` (tests/integration/mpi.sh) rank 1 echoes and rank 0 also checks a real
 * cross-process round trip, including messages past MPI's eager limit, and prints (does not
 * assert) the per-hop latency. Skips when the build has no MPI. */
#include "proto/transport.h"
#include "core/err.h"
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#ifdef TERN_HAVE_MPI
#include "proto/mpi.h"

static char g_err[512];
#define E g_err, sizeof g_err
static int g_rank, g_size;

/* Open MPI leaves its components' buffers allocated past MPI_Finalize (none of them ours: the
 * stacks end in libmpi or in unloaded plugins), so LeakSanitizer is off for this binary only. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

#define CHECK(x)                                                                 \
    do {                                                                         \
        int rc_ = (x);                                                           \
        if (rc_ < 0) fail_msg("%s -> %d: %s", #x, rc_, g_err);                   \
    } while (0)

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* A Forward of n tokens x hidden f32 with step id `step`; hidden[i] = step * 1000 + i. */
typedef struct fwd {
    Tern__Msg m;
    Tern__Forward f;
    uint32_t *seq, *pos;
    float *h;
    size_t bytes;
} fwd_t;

static void fwd_make(fwd_t *x, uint64_t step, int n, int hidden) {
    memset(x, 0, sizeof *x);
    tern__msg__init(&x->m);
    tern__forward__init(&x->f);
    x->seq = calloc((size_t)n, 4);
    x->pos = calloc((size_t)n, 4);
    x->bytes = (size_t)n * (size_t)hidden * 4;
    x->h = malloc(x->bytes);
    for (int i = 0; i < n; i++) x->pos[i] = (uint32_t)i;
    for (size_t i = 0; i < x->bytes / 4; i++) x->h[i] = (float)(step * 1000 + i);
    x->f.step_id = step;
    x->f.n_tokens = (uint32_t)n;
    x->f.n_seq_ids = x->f.n_positions = (size_t)n;
    x->f.seq_ids = x->seq;
    x->f.positions = x->pos;
    x->f.hidden_size = (uint32_t)hidden;
    x->f.dtype = TERN__DTYPE__DTYPE_F32;
    x->m.body_case = TERN__MSG__BODY_FORWARD;
    x->m.forward = &x->f;
}

static void fwd_free(fwd_t *x) { free(x->seq); free(x->pos); free(x->h); }

static void heartbeat(Tern__Msg *m, Tern__Heartbeat *hb, uint64_t seq) {
    tern__msg__init(m);
    tern__heartbeat__init(hb);
    hb->seq = seq;
    m->body_case = TERN__MSG__BODY_HEARTBEAT;
    m->heartbeat = hb;
}

/* the received message is the Forward of `step` with n x hidden, bit-exact */
static void expect_fwd(const tp_msg_t *rx, uint64_t step, int n, int hidden) {
    assert_non_null(rx->msg);
    assert_int_equal(rx->msg->body_case, TERN__MSG__BODY_FORWARD);
    assert_int_equal(rx->msg->forward->step_id, step);
    assert_int_equal(rx->msg->forward->n_tokens, n);
    assert_int_equal(rx->tensor_bytes, (size_t)n * hidden * 4);
    assert_int_equal((uintptr_t)rx->tensor % 64, 0);
    const float *h = rx->tensor;
    for (size_t i = 0; i < (size_t)n * hidden; i++)
        if (h[i] != (float)(step * 1000 + i)) fail_msg("step %llu: element %zu is %g", (unsigned long long)step, i, h[i]);
}

static void test_endpoints(void **st) {
    (void)st;
    tp_conn_t *c = NULL;
    assert_int_equal(tp_connect(&c, "mpi://x", NULL, E), TERN_EINVAL);
    assert_non_null(strstr(g_err, "mpi://RANK"));
    assert_null(c);
    char ep[32];
    snprintf(ep, sizeof ep, "mpi://%d", g_size);
    assert_int_equal(tp_connect(&c, ep, NULL, E), TERN_EINVAL);
    assert_int_equal(tp_connect(&c, "mpi://-1", NULL, E), TERN_EINVAL);
    assert_int_equal(tp_connect(&c, "mpi://1x", NULL, E), TERN_EINVAL);
    tp_conn_t *l = NULL, *l2 = NULL;
    CHECK(tp_listen(&l, "mpi://self", NULL, E));
    snprintf(ep, sizeof ep, "mpi://%d", g_rank);
    assert_string_equal(tp_endpoint(l), ep);
    assert_int_equal(tp_listen(&l2, "mpi://self", NULL, E), TERN_EIO);   /* one listener per process */
    assert_non_null(strstr(g_err, "already listens"));
    tp_close(&l);
    CHECK(tp_listen(&l2, ep, NULL, E));   /* free again after close; own rank spelled out */
    tp_close(&l2);
    if (g_size > 1) {
        assert_int_equal(tp_listen(&l, g_rank ? "mpi://0" : "mpi://1", NULL, E), TERN_EINVAL);
        assert_non_null(strstr(g_err, "mpi://self"));
    }
}

/* listen + connect to our own rank: request on the listener, reply on the conn */
static void test_self_roundtrip(void **st) {
    (void)st;
    tp_conn_t *l = NULL, *c = NULL;
    char ep[32];
    snprintf(ep, sizeof ep, "mpi://%d", g_rank);
    CHECK(tp_listen(&l, "mpi://self", NULL, E));
    tp_opts_t o = {0};
    o.peer_name = "me";
    CHECK(tp_connect(&c, ep, &o, E));
    tp_msg_t rx;
    tp_msg_init(&rx);
    int ready[2] = {9, 9};
    tp_conn_t *both[2] = {l, c};
    assert_int_equal(tp_poll(both, 2, 20, ready, E), 0);
    assert_int_equal(ready[0] + ready[1], 0);
    assert_int_equal(tp_recv(l, &rx, 30, E), TERN_ETIMEOUT);
    assert_null(rx.msg);
    /* sizes around the eager limits and a 4 MiB one; odd ones too */
    int ns[] = {1, 3, 1, 64, 2, 256};
    int hs[] = {8, 37, 2560, 2560, 65536, 4096};
    for (int k = 0; k < 6; k++) {
        fwd_t x;
        fwd_make(&x, (uint64_t)k + 1, ns[k], hs[k]);
        CHECK(tp_send(c, NULL, &x.m, x.h, x.bytes, E));
        assert_int_equal(tp_poll(both, 2, 5000, ready, E), 1);
        assert_int_equal(ready[0], 1);
        assert_int_equal(ready[1], 0);
        CHECK(tp_recv(l, &rx, 5000, E));
        expect_fwd(&rx, (uint64_t)k + 1, ns[k], hs[k]);
        char me[32];
        snprintf(me, sizeof me, "rank%d.c", g_rank);
        if (strncmp(rx.from.name, me, strlen(me))) fail_msg("sender '%s', expected %s<id>", rx.from.name, me);
        /* the reply goes back to the connected conn, not to the listener */
        tp_peer_t from = rx.from;
        CHECK(tp_send(l, &from, &x.m, x.h, x.bytes, E));
        CHECK(tp_recv(c, &rx, 5000, E));
        expect_fwd(&rx, (uint64_t)k + 1, ns[k], hs[k]);
        assert_string_equal(rx.from.name, "me");
        assert_int_equal(tp_recv(l, &rx, 0, E), TERN_ETIMEOUT);
        fwd_free(&x);
    }
    tp_peer_t bogus = {0};
    memcpy(bogus.id, "rank99999", 9);
    bogus.id_len = 9;
    snprintf(bogus.name, sizeof bogus.name, "rank99999");
    Tern__Msg m;
    Tern__Heartbeat hb;
    heartbeat(&m, &hb, 1);
    assert_int_equal(tp_send(l, &bogus, &m, NULL, 0, E), TERN_EPEER);
    tp_msg_free(&rx);
    tp_close(&c);
    tp_close(&l);
}

/* two links from one process to one rank (engine + heartbeat): each reply reaches the link
 * its request came on, even when both are answered before either is read */
static void test_two_links(void **st) {
    (void)st;
    tp_conn_t *l = NULL, *a = NULL, *b = NULL;
    char ep[32];
    snprintf(ep, sizeof ep, "mpi://%d", g_rank);
    CHECK(tp_listen(&l, "mpi://self", NULL, E));
    CHECK(tp_connect(&a, ep, NULL, E));
    CHECK(tp_connect(&b, ep, NULL, E));
    Tern__Msg m;
    Tern__Heartbeat hb;
    tp_msg_t rx;
    tp_msg_init(&rx);
    heartbeat(&m, &hb, 1);
    CHECK(tp_send(a, NULL, &m, NULL, 0, E));
    heartbeat(&m, &hb, 2);
    CHECK(tp_send(b, NULL, &m, NULL, 0, E));
    tp_peer_t from[2];
    for (int i = 0; i < 2; i++) {
        CHECK(tp_recv(l, &rx, 5000, E));
        assert_int_equal(rx.msg->heartbeat->seq, i + 1);
        from[i] = rx.from;
    }
    assert_string_not_equal(from[0].name, from[1].name);
    for (int i = 1; i >= 0; i--) {   /* answer b first, with a tensor-carrying message */
        fwd_t x;
        fwd_make(&x, (uint64_t)i + 40, 1, 2560);
        CHECK(tp_send(l, &from[i], &x.m, x.h, x.bytes, E));
        fwd_free(&x);
    }
    int ready[2];
    tp_conn_t *both[2] = {a, b};
    assert_int_equal(tp_poll(both, 2, 5000, ready, E), 2);
    CHECK(tp_recv(a, &rx, 5000, E));
    expect_fwd(&rx, 40, 1, 2560);
    CHECK(tp_recv(b, &rx, 5000, E));
    expect_fwd(&rx, 41, 1, 2560);
    assert_int_equal(tp_recv(a, &rx, 0, E), TERN_ETIMEOUT);
    assert_int_equal(tp_recv(b, &rx, 0, E), TERN_ETIMEOUT);
    tp_msg_free(&rx);
    tp_close(&a);
    tp_close(&b);
    tp_close(&l);
}

/* 200 messages, tensors on every third, sent before any is received: all in order */
static void test_order(void **st) {
    (void)st;
    tp_conn_t *l = NULL, *c = NULL;
    char ep[32];
    snprintf(ep, sizeof ep, "mpi://%d", g_rank);
    CHECK(tp_listen(&l, "mpi://self", NULL, E));
    tp_opts_t o = {0};
    o.hwm = 1000;
    CHECK(tp_connect(&c, ep, &o, E));
    tp_msg_t rx;
    tp_msg_init(&rx);
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 50; i++) {
            uint64_t id = (uint64_t)round * 50 + (uint64_t)i;
            if (i % 3 == 0) {
                fwd_t x;
                fwd_make(&x, id, 1 + i % 4, 2560);
                CHECK(tp_send(c, NULL, &x.m, x.h, x.bytes, E));
                fwd_free(&x);
            } else {
                Tern__Msg m;
                Tern__Heartbeat hb;
                heartbeat(&m, &hb, id);
                CHECK(tp_send(c, NULL, &m, NULL, 0, E));
            }
        }
        for (int i = 0; i < 50; i++) {
            uint64_t id = (uint64_t)round * 50 + (uint64_t)i;
            CHECK(tp_recv(l, &rx, 5000, E));
            if (i % 3 == 0) expect_fwd(&rx, id, 1 + i % 4, 2560);
            else {
                assert_int_equal(rx.msg->body_case, TERN__MSG__BODY_HEARTBEAT);
                assert_int_equal(rx.msg->heartbeat->seq, id);
                assert_int_equal(rx.tensor_bytes, 0);
            }
        }
    }
    tp_msg_free(&rx);
    tp_close(&c);
    tp_close(&l);
}

/* a listener with a 1 KiB frame limit refuses a 40 KiB tensor, names the peer, and the next
 * message on the link arrives intact */
static void test_oversized(void **st) {
    (void)st;
    tp_conn_t *l = NULL, *c = NULL;
    char ep[32];
    snprintf(ep, sizeof ep, "mpi://%d", g_rank);
    tp_opts_t lo = {0};
    lo.max_frame_bytes = 1024;
    CHECK(tp_listen(&l, "mpi://self", &lo, E));
    CHECK(tp_connect(&c, ep, NULL, E));
    fwd_t big, small;
    fwd_make(&big, 5, 4, 2560);
    fwd_make(&small, 6, 2, 16);
    CHECK(tp_send(c, NULL, &big.m, big.h, big.bytes, E));
    CHECK(tp_send(c, NULL, &small.m, small.h, small.bytes, E));
    tp_msg_t rx;
    tp_msg_init(&rx);
    int rc = tp_recv(l, &rx, 5000, E);
    assert_int_equal(rc, TERN_EPROTO);
    assert_null(rx.msg);
    assert_non_null(strstr(g_err, "rank"));
    CHECK(tp_recv(l, &rx, 5000, E));
    expect_fwd(&rx, 6, 2, 16);
    fwd_free(&big);
    fwd_free(&small);
    tp_msg_free(&rx);
    tp_close(&c);
    tp_close(&l);
}

/* rank 0 <-> rank 1 (echo): real cross-process messages, then a printed per-hop latency */
static void test_cross_rank(void **st) {
    (void)st;
    if (g_size < 2) skip();
    tp_conn_t *c = NULL;
    tp_opts_t o = {0};
    o.name = "r0";
    CHECK(tp_connect(&c, "mpi://1", &o, E));
    tp_msg_t rx;
    tp_msg_init(&rx);
    int ns[] = {1, 1, 64, 512};
    int hs[] = {8, 2560, 2560, 2560};
    for (int k = 0; k < 4; k++) {
        fwd_t x;
        fwd_make(&x, (uint64_t)k + 100, ns[k], hs[k]);
        CHECK(tp_send(c, NULL, &x.m, x.h, x.bytes, E));
        CHECK(tp_recv(c, &rx, 10000, E));
        expect_fwd(&rx, (uint64_t)k + 100, ns[k], hs[k]);
        fwd_free(&x);
    }
    /* ping-pong of one token's hidden state (10 KiB): half a round trip = one hop */
    fwd_t x;
    fwd_make(&x, 7, 1, 2560);
    int iters = 300;
    double t0 = now_s();
    for (int i = 0; i < iters; i++) {
        CHECK(tp_send(c, NULL, &x.m, x.h, x.bytes, E));
        CHECK(tp_recv(c, &rx, 10000, E));
    }
    double hop = (now_s() - t0) / iters / 2;
    printf("# mpi per-hop latency, 10 KiB Forward, rank 0 <-> 1: %.1f us\n", hop * 1e6);
    fwd_free(&x);
    Tern__Msg m = TERN__MSG__INIT;
    Tern__Shutdown sd = TERN__SHUTDOWN__INIT;
    m.body_case = TERN__MSG__BODY_SHUTDOWN;
    m.shutdown = &sd;
    CHECK(tp_send(c, NULL, &m, NULL, 0, E));
    tp_msg_free(&rx);
    tp_close(&c);
}

/* ranks > 0: echo every message back to its sender until Shutdown */
static int echo_loop(void) {
    tp_conn_t *l = NULL;
    if (tp_listen(&l, "mpi://self", NULL, E) < 0) {
        fprintf(stderr, "rank %d: %s\n", g_rank, g_err);
        return 1;
    }
    tp_msg_t rx;
    tp_msg_init(&rx);
    int rc = 0;
    for (;;) {
        int r = tp_recv(l, &rx, 60000, E);
        if (r < 0) {
            fprintf(stderr, "rank %d: %s\n", g_rank, g_err);
            rc = 1;
            break;
        }
        if (rx.msg->body_case == TERN__MSG__BODY_SHUTDOWN) break;
        tp_peer_t from = rx.from;
        if (tp_send(l, &from, rx.msg, rx.tensor, rx.tensor_bytes, E) < 0) {
            fprintf(stderr, "rank %d: echo: %s\n", g_rank, g_err);
            rc = 1;
            break;
        }
    }
    tp_msg_free(&rx);
    tp_close(&l);
    return rc;
}

int main(void) {
    if (tp_mpi_init(&g_rank, &g_size, E) < 0) {
        printf("MPI did not start (%s): skipped\n0 passed, 0 failed\n", g_err);
        return 0;
    }
    int failed = 0;
    if (g_rank == 0) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_endpoints),
            cmocka_unit_test(test_self_roundtrip),
            cmocka_unit_test(test_two_links),
            cmocka_unit_test(test_order),
            cmocka_unit_test(test_oversized),
            cmocka_unit_test(test_cross_rank),
        };
        failed = cmocka_run_group_tests(tests, NULL, NULL);
        printf("%d passed, %d failed\n", (int)(sizeof tests / sizeof tests[0]) - failed, failed);
        fflush(stdout);
        /* the other ranks (beyond 1) only echo: stop them */
        for (int r = 2; r < g_size; r++) {
            tp_conn_t *c = NULL;
            char ep[32];
            snprintf(ep, sizeof ep, "mpi://%d", r);
            Tern__Msg m = TERN__MSG__INIT;
            Tern__Shutdown sd = TERN__SHUTDOWN__INIT;
            m.body_case = TERN__MSG__BODY_SHUTDOWN;
            m.shutdown = &sd;
            if (tp_connect(&c, ep, NULL, E) == 0) tp_send(c, NULL, &m, NULL, 0, E);
            tp_close(&c);
        }
    } else {
        failed = echo_loop();
    }
    tp_term();
    tp_mpi_finalize();
    return failed ? 1 : 0;
}
#else
int main(void) {
    printf("built without MPI: skipped\n0 passed, 0 failed\n");
    return 0;
}
#endif
