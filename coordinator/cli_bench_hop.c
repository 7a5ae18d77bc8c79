/* cli_bench_hop: `tern bench --hop` — the cost of one pipeline hop: Forward messages carrying an
 * (n_tokens, hidden) f32 state through the real transport (tp_*) to an echo that sends them back.
 * One way = the echo's receive time - the send time (CLOCK_MONOTONIC is one clock for every
 * process and network namespace of a machine; the echo writes its time into the first 8 bytes
 * of the state), round trip = answer time - send time. Both ends in this process (default), or
 * --hop-listen (echo only) and --hop-connect (client only) for links through netns and relays.
 * Not here: model compute (cli_bench.c). */
#include "coordinator/cli_bench_hop.h"
#include "core/err.h"
#include "core/log.h"
#include "core/opt.h"
#include "core/progress.h"
#include "proto/transport.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOP_MAX_BYTES (256u << 20)
#define HOP_RECV_MS 10000

typedef struct hop_opts {
    int hop, size, tokens, reps, warmup, idle_ms;
    const char *endpoint, *listen, *connect, *out;
} hop_opts_t;

typedef struct hop_stats {
    double med, p90, p99, min, mean;   /* microseconds */
} hop_stats_t;

/* Echoes every message back to its sender with the receive time in its first 8 tensor bytes,
 * until a Shutdown, n messages (n > 0), or idle_ms without one (TERN_ETIMEOUT). Returns the
 * number echoed or <0 with err. */
static long hop_echo(tp_conn_t *l, long n, int idle_ms, char *err, size_t errlen) {
    tp_msg_t in;
    tp_msg_init(&in);
    uint8_t *buf = NULL;
    size_t cap = 0;
    long k = 0;
    int rc = 0;
    while (n <= 0 || k < n) {
        if ((rc = tp_recv(l, &in, idle_ms, err, errlen)) < 0) break;
        double t = time_now();
        if (in.msg->body_case == TERN__MSG__BODY_SHUTDOWN) break;
        if (in.tensor_bytes > cap) {
            uint8_t *nb = realloc(buf, in.tensor_bytes);
            if (!nb) { rc = err_set(err, errlen, TERN_ENOMEM, "echo: out of memory"); break; }
            buf = nb, cap = in.tensor_bytes;
        }
        if (in.tensor_bytes) memcpy(buf, in.tensor, in.tensor_bytes);
        if (in.tensor_bytes >= sizeof t) memcpy(buf, &t, sizeof t);
        if ((rc = tp_send(l, &in.from, in.msg, buf, in.tensor_bytes, err, errlen)) < 0) break;
        k++;
    }
    free(buf);
    tp_msg_free(&in);
    return rc < 0 ? rc : k;
}

typedef struct hop_thread {
    tp_conn_t *l;
    long n;
    long rc;
    char err[256];
} hop_thread_t;

static void *hop_echo_main(void *arg) {
    hop_thread_t *e = arg;
    e->rc = hop_echo(e->l, e->n, HOP_RECV_MS, e->err, sizeof e->err);
    return NULL;
}

/* Sends warmup + reps Forward messages over d, each answered before the next; fills ow (one
 * way) and rt (round trip) in seconds for the last reps. 0 or <0 with err. */
static int hop_client(tp_conn_t *d, const hop_opts_t *o, double *ow, double *rt, char *err, size_t errlen) {
    size_t T = (size_t)o->tokens, bytes = T * (size_t)o->size * sizeof(float);
    float *h = malloc(bytes);
    uint32_t *seq = calloc(T, sizeof *seq), *pos = calloc(T, sizeof *pos);
    int rc = h && seq && pos ? 0 : err_set(err, errlen, TERN_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < T * (size_t)o->size; i++) h[i] = (float)(i % 977) * 1e-3f;
    Tern__Forward f = TERN__FORWARD__INIT;
    f.n_tokens = (uint32_t)T, f.n_seq_ids = T, f.seq_ids = seq, f.n_positions = T, f.positions = pos;
    f.hidden_size = (uint32_t)o->size;
    Tern__Msg m = TERN__MSG__INIT;
    m.body_case = TERN__MSG__BODY_FORWARD, m.forward = &f;
    tp_msg_t in;
    tp_msg_init(&in);
    for (int i = 0; !rc && i < o->warmup + o->reps; i++) {
        pos[0] = (uint32_t)i;
        double t0 = time_now(), t1;
        if ((rc = tp_send(d, NULL, &m, h, bytes, err, errlen)) < 0) break;
        if ((rc = tp_recv(d, &in, HOP_RECV_MS, err, errlen)) < 0) break;
        double t2 = time_now();
        if (in.msg->body_case != TERN__MSG__BODY_FORWARD || in.tensor_bytes != bytes ||
            in.msg->forward->positions[0] != (uint32_t)i) {
            rc = err_set(err, errlen, TERN_EPROTO, "echo from %s: message %d came back changed", in.from.name, i);
            break;
        }
        memcpy(&t1, in.tensor, sizeof t1);
        if (i >= o->warmup) ow[i - o->warmup] = t1 - t0, rt[i - o->warmup] = t2 - t0;
    }
    tp_msg_free(&in);
    free(h);
    free(seq);
    free(pos);
    return rc;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static hop_stats_t hop_stats(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    hop_stats_t r = {v[n / 2] * 1e6, v[(int)(n * 0.9)] * 1e6, v[(int)(n * 0.99)] * 1e6, v[0] * 1e6, s / n * 1e6};
    return r;
}

static void hop_print(const hop_opts_t *o, const char *link, hop_stats_t ow, hop_stats_t rt) {
    size_t bytes = (size_t)o->tokens * (size_t)o->size * sizeof(float);
    if (!strcmp(o->out, "json")) {
        printf("{\"link\": \"%s\", \"hidden\": %d, \"tokens\": %d, \"bytes\": %zu, \"samples\": %d,\n", link, o->size,
               o->tokens, bytes, o->reps);
        printf(" \"oneway_us\": {\"median\": %.2f, \"p90\": %.2f, \"p99\": %.2f, \"min\": %.2f, \"mean\": %.2f},\n",
               ow.med, ow.p90, ow.p99, ow.min, ow.mean);
        printf(" \"roundtrip_us\": {\"median\": %.2f, \"p90\": %.2f, \"p99\": %.2f, \"min\": %.2f, \"mean\": %.2f}}\n",
               rt.med, rt.p90, rt.p99, rt.min, rt.mean);
        return;
    }
    printf("| %-28s | %6s | %6s | %8s | %7s | %9s | %9s | %9s | %9s | %9s | %9s |\n", "link", "hidden", "tokens",
           "bytes", "samples", "1-way med", "1-way p90", "1-way p99", "rt med", "rt p90", "rt p99");
    printf("| %.28s | -----: | -----: | -------: | ------: | --------: | --------: | --------: | --------: | --------: "
           "| --------: |\n", "-----------------------------------");
    printf("| %-28s | %6d | %6d | %8zu | %7d | %9.1f | %9.1f | %9.1f | %9.1f | %9.1f | %9.1f |\n", link, o->size,
           o->tokens, bytes, o->reps, ow.med, ow.p90, ow.p99, rt.med, rt.p90, rt.p99);
    printf("\ntimes in microseconds; one way: send -> echo received (one clock); rt: send -> answer received\n");
}

/* 0, 1 (help printed) or <0 with err */
static int hop_parse(hop_opts_t *o, int argc, char **argv, char *err, size_t errlen) {
    *o = (hop_opts_t){.size = 2560, .tokens = 1, .reps = 2000, .warmup = 200, .idle_ms = 30000,
                      .endpoint = "tcp://127.0.0.1:*", .out = "md"};
    const opt_t opts[] = {
        {NULL, "--hop", OPT_FLAG, &o->hop, NULL, "per-hop transport benchmark (this mode)", 0, 0},
        {NULL, "--hop-size", OPT_INT, &o->size, "N", "hidden width in f32 values", 2, 1 << 18},
        {NULL, "--hop-tokens", OPT_INT, &o->tokens, "N", "tokens per message (rows of the state)", 1, 1 << 16},
        {"-r", "--repetitions", OPT_INT, &o->reps, "N", "timed messages", 1, 10000000},
        {NULL, "--warmup", OPT_INT, &o->warmup, "N", "untimed messages first", 0, 10000000},
        {NULL, "--endpoint", OPT_STR, &o->endpoint, "EP", "where the in-process echo listens", 0, 0},
        {NULL, "--hop-listen", OPT_STR, &o->listen, "EP", "run only the echo, listening here (prints 'ready EP')", 0, 0},
        {NULL, "--hop-connect", OPT_STR, &o->connect, "EP", "run only the client, against an echo there", 0, 0},
        {NULL, "--idle-ms", OPT_INT, &o->idle_ms, "MS", "--hop-listen: stop after this long without a message", 1,
         86400000},
        {"-o", "--output", OPT_STR, &o->out, "FMT", "md | json", 0, 0},
        OPT_END,
    };
    char *pos[1];
    int npos, rc = opt_parse(opts, argc, argv, pos, 0, &npos, err, errlen);
    if (rc == 1) {
        opt_help(stdout, "tern bench --hop [--hop-size 2560] [--hop-tokens 1] [-r 2000] "
                         "[--hop-listen EP | --hop-connect EP] [-o md|json]", opts);
        return 1;
    }
    if (rc < 0) return rc;
    if (strcmp(o->out, "md") && strcmp(o->out, "json"))
        return err_set(err, errlen, TERN_EINVAL, "-o %s: expected md or json", o->out);
    if (o->listen && o->connect) return err_set(err, errlen, TERN_EINVAL, "--hop-listen and --hop-connect exclude each other");
    if ((uint64_t)o->tokens * (uint64_t)o->size * 4 > HOP_MAX_BYTES)
        return err_set(err, errlen, TERN_EINVAL, "--hop-tokens %d x --hop-size %d: more than %u MiB per message",
                       o->tokens, o->size, HOP_MAX_BYTES >> 20);
    return 0;
}

/* --hop-listen: an echo until Shutdown or idle */
static int hop_listen(const hop_opts_t *o, char *err, size_t errlen) {
    tp_conn_t *l = NULL;
    tp_opts_t to = {.name = "hop-echo"};
    int rc = tp_listen(&l, o->listen, &to, err, errlen);
    if (rc < 0) return rc;
    printf("ready %s\n", tp_endpoint(l));
    fflush(stdout);
    long k = hop_echo(l, 0, o->idle_ms, err, errlen);
    if (k == TERN_ETIMEOUT) log_i("hop echo: idle for %d ms, stopping", o->idle_ms), k = 0;
    else if (k >= 0) log_i("hop echo: %ld messages echoed", k);
    tp_close(&l);
    return k < 0 ? (int)k : 0;
}

/* client side against ep (an echo thread of ours when th != NULL); prints the stats */
static int hop_run(const hop_opts_t *o, const char *ep, const char *link, char *err, size_t errlen) {
    tp_conn_t *d = NULL;
    tp_opts_t to = {.name = "hop-client", .peer_name = ep};
    double *ow = malloc((size_t)o->reps * sizeof *ow), *rt = malloc((size_t)o->reps * sizeof *rt);
    int rc = ow && rt ? tp_connect(&d, ep, &to, err, errlen) : err_set(err, errlen, TERN_ENOMEM, "out of memory");
    if (!rc) rc = hop_client(d, o, ow, rt, err, errlen);
    if (d) {
        Tern__Shutdown sd = TERN__SHUTDOWN__INIT;
        sd.reason = "hop bench done";
        Tern__Msg m = TERN__MSG__INIT;
        m.body_case = TERN__MSG__BODY_SHUTDOWN, m.shutdown = &sd;
        char e2[256];
        if (tp_send(d, NULL, &m, NULL, 0, e2, sizeof e2) < 0 && !rc) log_w("hop: shutdown to the echo: %s", e2);
    }
    if (!rc) {
        hop_stats_t a = hop_stats(ow, o->reps), b = hop_stats(rt, o->reps);
        hop_print(o, link, a, b);
    }
    tp_close(&d);
    free(ow);
    free(rt);
    return rc;
}

static int hop_local(const hop_opts_t *o, char *err, size_t errlen) {
    tp_conn_t *l = NULL;
    tp_opts_t to = {.name = "hop-echo"};
    int rc = tp_listen(&l, o->endpoint, &to, err, errlen);
    if (rc < 0) return rc;
    hop_thread_t e = {.l = l, .n = 0};
    pthread_t th;
    if (pthread_create(&th, NULL, hop_echo_main, &e)) {
        tp_close(&l);
        return err_set(err, errlen, TERN_ENOMEM, "cannot start the echo thread");
    }
    char ep[256];
    snprintf(ep, sizeof ep, "%s", tp_endpoint(l));
    rc = hop_run(o, ep, ep, err, errlen);
    pthread_join(th, NULL);   /* it stops at our Shutdown, or HOP_RECV_MS after a failure */
    if (!rc && e.rc < 0 && e.rc != TERN_ETIMEOUT) rc = err_set(err, errlen, (int)e.rc, "echo: %s", e.err);
    tp_close(&l);
    return rc;
}

int cli_bench_hop(int argc, char **argv) {
    hop_opts_t o;
    char err[512];
    int rc = hop_parse(&o, argc, argv, err, sizeof err);
    if (rc == 1) return 0;
    if (rc == 0) {
        if (o.listen) rc = hop_listen(&o, err, sizeof err);
        else if (o.connect) rc = hop_run(&o, o.connect, o.connect, err, sizeof err);
        else rc = hop_local(&o, err, sizeof err);
    }
    tp_term();
    fflush(stdout);
    if (rc < 0) {
        fprintf(stderr, "tern bench --hop: %s\n", err);
        return 1;
    }
    return 0;
}
