/* Garbage on a worker's port, with real processes: `tern worker` (from $TERN_BIN) gets
 * thousands of hostile messages from a raw ZeroMQ DEALER — random bytes, random multi-part
 * messages, truncated protobuf envelopes, valid envelopes whose declared sizes do not match
 * their frames, wrong versions, LoadShard and Forward with impossible layer ranges, sequence
 * ids, positions, token ids and context shifts, KvRead / KvWrite with impossible slots, ranges
 * and sizes — before, right after and during real cluster
 * runs. The worker must stay alive and a proper coordinator (`tern run --workers EP`) must still
 * get exactly the tokens of one process. Hostile KV copies (slots, counts, past what the source
 * holds, twice, both ways) get an Error naming the fault. Hostile context shifts (slot out of range, discard 0,
 * n_past past the context, keep + discard > n_past, a slot twice, more than the slots) sent as a
 * coordinator that loaded the shard each get an Error naming the problem, and a good one after
 * them is served. Hostile KvWrite / KvRead (slot save / restore: bad slot, more positions than the
 * context, another layer range, kv type or row size, a frame that does not match its header) each
 * get an Error (the transport drops the last kind unanswered) and change nothing: rows written
 * before read back the same, and a good write then reads back. A peer without the right CURVE
 * key: tests/integration/curve.sh. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>
#include <cmocka.h>
#include "core/model_id.h"
#include "proto/transport.h"

#define N_GARBAGE 3000            /* per phase */

static char g_tmp[256], g_model[320], g_ep[256], g_ref[8192];
static const char *g_tern;
static pid_t g_worker = -1;

/* xorshift: deterministic garbage (a failure can be replayed) */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return g_rng;
}
static void rnd_fill(uint8_t *p, size_t n) { for (size_t i = 0; i < n; i++) p[i] = (uint8_t)rnd(); }

/* Runs a shell command, returns its stdout (at most cap-1 bytes) and exit status. */
static int run_cmd(char *out, size_t cap, const char *fmt, ...) {
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Starts `tern worker` on an ephemeral loopback port; waits for its "ready EP" line. */
static void start_worker(void) {
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    g_worker = fork();
    assert_true(g_worker >= 0);
    if (g_worker == 0) {
        char log[400];
        snprintf(log, sizeof log, "%s/worker.log", g_tmp);
        dup2(fd[1], 1);
        if (!freopen(log, "w", stderr)) _exit(127);
        close(fd[0]), close(fd[1]);
        execl(g_tern, g_tern, "worker", "--listen", "tcp://127.0.0.1:*", "-m", g_model, "-t", "1",
              "--name", "gw", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    FILE *f = fdopen(fd[0], "r");
    char line[512];
    g_ep[0] = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "ready %255s", g_ep) == 1) break;
    fclose(f);   /* the worker prints nothing more on stdout */
    if (!g_ep[0]) fail_msg("tern worker did not start (see %s/worker.log)", g_tmp);
}

static int worker_alive(void) {
    int st;
    return waitpid(g_worker, &st, WNOHANG) == 0;
}

static int setup(void **st) {
    (void)st;
    g_tern = getenv("TERN_BIN");
    if (!g_tern) { fprintf(stderr, "TERN_BIN not set\n"); return -1; }
    snprintf(g_tmp, sizeof g_tmp, "/tmp/tern-garbage-XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    snprintf(g_model, sizeof g_model, "%s/m.gguf", g_tmp);
    char out[4096];
    if (run_cmd(out, sizeof out, "'%s' mkmodel --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s "
                "--seed 11 -o '%s' 2>&1", g_tern, g_model)) {
        fprintf(stderr, "mkmodel failed: %s\n", out);
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static int teardown(void **st) {
    (void)st;
    if (g_worker > 0) { kill(g_worker, SIGKILL); waitpid(g_worker, NULL, 0); }
    char out[64];
    if (g_tmp[0] && !getenv("TERN_KEEP_TMP")) run_cmd(out, sizeof out, "rm -rf '%s'", g_tmp);
    return 0;
}

#define RUN_ARGS "--no-display-prompt --summary=0 -t 1 -p 'Hello world, this is tern' -n 24 --temp 0"

/* One cluster run through the worker; its output must equal the single-process reference. */
static void cluster_run_equals_ref(const char *when) {
    char got[8192];
    int rc = run_cmd(got, sizeof got, "timeout 60 '%s' run -m '%s' " RUN_ARGS " --workers '%s' 2>>'%s/run.log'",
                     g_tern, g_model, g_ep, g_tmp);
    if (rc != 0 || strcmp(got, g_ref) != 0)
        fail_msg("%s: cluster run rc %d, output '%s' != one process '%s' (logs in %s)", when, rc, got, g_ref, g_tmp);
}

/* ---- garbage ---------------------------------------------------------------------------- */

typedef struct sender {
    void *ctx, *sock;
    long sent, refused_sends, replies;
    int kinds;            /* how many message kinds to draw from (all, or only never-valid) */
    int n;
} sender_t;

static void sender_open_as(sender_t *s, const char *ep, const char *id) {
    memset(s, 0, sizeof *s);
    s->ctx = zmq_ctx_new();
    s->sock = zmq_socket(s->ctx, ZMQ_DEALER);
    int z = 0, t = 5000;
    zmq_setsockopt(s->sock, ZMQ_LINGER, &z, sizeof z);
    zmq_setsockopt(s->sock, ZMQ_SNDTIMEO, &t, sizeof t);
    zmq_setsockopt(s->sock, ZMQ_ROUTING_ID, id, strlen(id));
    assert_int_equal(zmq_connect(s->sock, ep), 0);
}

static void sender_open(sender_t *s, const char *ep) { sender_open_as(s, ep, "garbage"); }

static void sender_close(sender_t *s) {
    zmq_close(s->sock);
    zmq_ctx_term(s->ctx);
}

/* reads (and counts) whatever the worker answered so far, without waiting */
static void drain(sender_t *s) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, s->sock, ZMQ_DONTWAIT) >= 0)
        if (!zmq_msg_more(&m)) s->replies++;
    zmq_msg_close(&m);
}

static void send_frames(sender_t *s, const uint8_t *const *p, const size_t *n, int nf) {
    for (int i = 0; i < nf; i++)
        if (zmq_send(s->sock, p[i], n[i], i + 1 < nf ? ZMQ_SNDMORE : 0) < 0) { s->refused_sends++; return; }
    s->sent++;
}

/* A Forward or LoadShard envelope with hostile but internally consistent fields, or with
 * sizes that do not match (embedding flags too: counts off by one, on a middle or the last
 * stage); variant 3: a Sampled whose top_logprobs alternatives do not match its token count (or
 * exceed 20 a token), or whose embedding rows disagree with its frame or exceed the bounds;
 * variant 4: KvRead / KvWrite / KvData with small or absurd fields (the worker takes them only
 * from the coordinator that loaded its shard: a stranger's never touch a running sequence's rows).
 * Returns the packed size in buf; *tb = tensor bytes to send. */
static size_t hostile_envelope(uint8_t *buf, size_t *tb, int variant) {
    static uint32_t seq[8], pos[8];
    static int32_t tok[8];
    static protobuf_c_boolean smp[8];
    Tern__Msg m = TERN__MSG__INIT;
    Tern__Forward f = TERN__FORWARD__INIT;
    Tern__LoadShard ls = TERN__LOAD_SHARD__INIT;
    Tern__ModelId mid = TERN__MODEL_ID__INIT;
    Tern__Sampled sd = TERN__SAMPLED__INIT;
    static int32_t top_ids[8 * 24];
    static float top_lp[8 * 24];
    uint32_t nt = 1 + (uint32_t)(rnd() % 8);
    for (uint32_t i = 0; i < nt; i++) {
        seq[i] = (uint32_t)(rnd() % 3 ? rnd() % 4 : rnd());     /* small or absurd */
        pos[i] = (uint32_t)(rnd() % 3 ? rnd() % 64 : rnd());
        tok[i] = (int32_t)(rnd() % 3 ? (int64_t)(rnd() % 600) - 50 : (int64_t)(int32_t)rnd());
        smp[i] = rnd() & 1;
    }
    m.version = TERN_PROTO_VERSION;
    *tb = 0;
    if (variant == 3) {   /* Sampled: n_top and the flattened alternatives disagree */
        sd.step_id = rnd() % 1000;
        sd.n_seq_ids = sd.n_token_ids = sd.n_logprobs = nt;
        sd.seq_ids = seq, sd.token_ids = tok, sd.logprobs = top_lp;
        sd.n_top = (uint32_t)(rnd() % 3 ? 1 + rnd() % 20 : 21 + rnd() % 3);
        size_t want = (size_t)nt * sd.n_top, got = rnd() % 2 ? want + 1 + rnd() % 3 : want - 1;
        if (sd.n_top > 20) got = want;   /* consistent, but too many alternatives */
        if (got > sizeof top_ids / sizeof *top_ids) got = sizeof top_ids / sizeof *top_ids;
        sd.n_top_ids = got, sd.top_ids = top_ids;
        sd.n_top_logprobs = rnd() % 2 ? got : want, sd.top_logprobs = top_lp;
        if (rnd() % 2) {   /* embedding rows: absurd sizes, or a frame that does not hold them */
            sd.embd_rows = (uint32_t)(rnd() % 3 ? rnd() % 4 : rnd());
            sd.embd_size = (uint32_t)(rnd() % 3 ? 256 : rnd() % 2 ? 0 : rnd());
            *tb = (size_t)(rnd() % 4) * 256 * 4;
        }
        m.body_case = TERN__MSG__BODY_SAMPLED, m.sampled = &sd;
    } else if (variant == 4) {   /* KvWrite / KvRead / KvData: small or absurd slots, ranges, types, rows */
        static Tern__KvData kd;
        static Tern__KvRead kr;
        tern__kv_data__init(&kd), tern__kv_read__init(&kr);
        kd.seq_id = kr.seq_id = seq[0], kd.n_pos = kr.n_pos = rnd() % 3 ? pos[0] : (uint32_t)rnd();
        kd.first_layer = (uint32_t)(rnd() % 4), kd.last_layer = (uint32_t)(rnd() % 3 ? rnd() % 4 : rnd());
        kd.kv_type = (Tern__KvType)(rnd() % 4), kd.row_bytes = rnd() % 3 ? 128 * (1 + rnd() % 4) : rnd();
        if (kd.last_layer >= kd.first_layer && kd.last_layer - kd.first_layer < 8 && kd.n_pos < 64 && kd.row_bytes < 4096)
            *tb = (size_t)(kd.last_layer - kd.first_layer + 1) * 2 * kd.n_pos * kd.row_bytes;
        int k = (int)(rnd() % 3);
        m.body_case = k == 0 ? TERN__MSG__BODY_KV_READ : k == 1 ? TERN__MSG__BODY_KV_WRITE : TERN__MSG__BODY_KV_DATA;
        if (k == 0) m.kv_read = &kr, *tb = 0;
        else if (k == 1) m.kv_write = &kd;
        else m.kv_data = &kd;
    } else if (variant == 0) {   /* LoadShard: impossible ranges, unknown model */
        mid.size = rnd() % 100000, mid.hash = "not-the-model", mid.name = "x.gguf";
        ls.model = &mid;
        ls.first_layer = (uint32_t)(rnd() % 8), ls.last_layer = (uint32_t)(rnd() % 3 ? rnd() % 8 : rnd());
        ls.ctx = (uint32_t)rnd(), ls.max_seqs = (uint32_t)rnd();
        ls.has_embedding = rnd() & 1, ls.is_last = rnd() & 1;
        ls.next_endpoint = rnd() & 1 ? "tcp://127.0.0.1:1" : "";
        m.body_case = TERN__MSG__BODY_LOAD_SHARD, m.load_shard = &ls;
    } else {              /* Forward: tokens only, or a hidden frame whose size may be wrong */
        f.step_id = rnd() % 4 ? rnd() % 1000 : rnd();
        f.n_tokens = rnd() % 8 ? nt : (uint32_t)rnd();
        f.n_seq_ids = nt, f.seq_ids = seq;
        f.n_positions = rnd() % 8 ? nt : nt - 1, f.positions = pos;
        f.n_token_ids = nt, f.token_ids = tok;
        f.n_sample = rnd() & 1 ? nt : 0, f.sample = smp;
        static int32_t tgt[64];   /* teacher-forced targets: in range, -1, below -1 or past the vocabulary */
        for (size_t i = 0; i < sizeof tgt / sizeof *tgt; i++)
            tgt[i] = rnd() % 4 ? (int32_t)(rnd() % 512) : rnd() % 2 ? -1 : rnd() % 3 ? (int32_t)(512 + rnd() % 9) : -2;
        f.n_targets = rnd() % 3 ? 0 : rnd() % 4 ? nt : nt + 1, f.targets = tgt;
        static protobuf_c_boolean emb[9];   /* embedding flags: none, one a token, or one too many */
        for (size_t i = 0; i < 9; i++) emb[i] = rnd() & 1;
        f.n_embd = rnd() % 3 ? 0 : rnd() % 4 ? nt : nt + 1, f.embd = emb;
        /* grammar masks: the tiny model's 512 tokens are 64 bytes; slots small or absurd */
        static uint8_t bits[80];
        static Tern__SeqAllow al[3];
        static Tern__SeqAllow *alp[3];
        f.n_allow = rnd() % 3 ? 0 : 1 + rnd() % 3, f.allow = alp;
        for (size_t i = 0; i < f.n_allow; i++) {
            tern__seq_allow__init(&al[i]);
            al[i].seq_id = (uint32_t)(rnd() % 3 ? rnd() % 4 : rnd());
            al[i].bits.data = bits, al[i].bits.len = rnd() % 3 ? 64 : rnd() % sizeof bits;
            alp[i] = &al[i];
        }
        rnd_fill(bits, sizeof bits);
        /* sampling params: logit biases with counts that disagree, too many, NaN, ids outside the
         * vocabulary; penalties that are not finite */
        static int32_t bid[320];
        static float bval[320];
        static Tern__SamplingParams sp;
        static Tern__SeqSampling ss;
        static Tern__SeqSampling *ssp[1];
        tern__sampling_params__init(&sp);
        tern__seq_sampling__init(&ss);
        sp.temp = rnd() % 2 ? 0.8f : 0, sp.top_p = 1, sp.repeat_penalty = 1, sp.repeat_last_n = 64;
        sp.frequency_penalty = rnd() % 5 ? 0.5f : NAN, sp.presence_penalty = rnd() % 5 ? -0.5f : INFINITY;
        sp.n_bias_ids = rnd() % 320, sp.n_bias_values = rnd() % 4 ? sp.n_bias_ids : rnd() % 320;
        for (size_t i = 0; i < 320; i++) {
            bid[i] = rnd() % 3 ? (int32_t)(rnd() % 512) : (int32_t)rnd();
            bval[i] = rnd() % 9 ? (float)(rnd() % 200) - 100.0f : NAN;
        }
        sp.bias_ids = bid, sp.bias_values = bval;
        /* v4's samplers: mostly sane, sometimes NaN, out of range, or breaker lists that lie */
        static uint32_t dlen[24];
        static int32_t dtok[96];
        for (size_t i = 0; i < 24; i++) dlen[i] = rnd() % 5 ? 1 + (uint32_t)(rnd() % 4) : (uint32_t)rnd();
        for (size_t i = 0; i < 96; i++) dtok[i] = rnd() % 5 ? (int32_t)(rnd() % 512) : (int32_t)rnd();
        sp.typical_p = rnd() % 7 ? 0.9f : rnd() % 2 ? NAN : 7.0f;
        sp.xtc_probability = rnd() % 7 ? 0.5f : -1.0f, sp.xtc_threshold = rnd() % 7 ? 0.1f : INFINITY;
        sp.mirostat = rnd() % 7 ? (uint32_t)(rnd() % 3) : (uint32_t)rnd();
        sp.mirostat_tau = rnd() % 9 ? 5.0f : NAN, sp.dry_multiplier = rnd() % 9 ? 0.8f : -INFINITY;
        sp.dry_base = 1.75f, sp.dry_allowed_length = (uint32_t)(rnd() % 7 ? 2 : rnd());
        sp.dry_penalty_last_n = rnd() % 7 ? -1 : (int32_t)rnd();
        sp.n_dry_breaker_lens = rnd() % 24, sp.dry_breaker_lens = dlen;
        sp.n_dry_breaker_tokens = rnd() % 96, sp.dry_breaker_tokens = dtok;
        /* a sampler order: mostly known letters, sometimes any byte, sometimes too long */
        static char ord[40];
        size_t nord = rnd() % 5 ? rnd() % 12 : rnd() % 40;
        for (size_t i = 0; i < nord; i++) ord[i] = rnd() % 6 ? "edskypmxt"[rnd() % 9] : (char)(1 + rnd() % 255);
        ord[nord] = 0;
        sp.sampler_order = ord;
        ss.seq_id = seq[0], ss.params = &sp, ssp[0] = &ss;
        f.n_sampling = rnd() % 3 ? 0 : 1, f.sampling = ssp;
        /* context shifts: small or absurd slots and ranges, sometimes a slot twice */
        static Tern__KvShift ks[5];
        static Tern__KvShift *ksp[5];
        f.n_shift = rnd() % 3 ? 0 : 1 + rnd() % 5, f.shift = ksp;
        for (size_t i = 0; i < f.n_shift; i++) {
            tern__kv_shift__init(&ks[i]);
            ks[i].seq_id = (uint32_t)(rnd() % 3 ? rnd() % 4 : rnd());
            ks[i].keep = (uint32_t)(rnd() % 3 ? rnd() % 16 : rnd());
            ks[i].discard = (uint32_t)(rnd() % 3 ? rnd() % 16 : rnd());
            ks[i].n_past = (uint32_t)(rnd() % 3 ? rnd() % 80 : rnd());
            ksp[i] = &ks[i];
        }
        /* KV copies: small or absurd slots and counts, sometimes a slot twice or both ways */
        static Tern__KvCopy kc[5];
        static Tern__KvCopy *kcp[5];
        f.n_copy = rnd() % 3 ? 0 : 1 + rnd() % 5, f.copy = kcp;
        for (size_t i = 0; i < f.n_copy; i++) {
            tern__kv_copy__init(&kc[i]);
            kc[i].src = (uint32_t)(rnd() % 3 ? rnd() % 3 : rnd());
            kc[i].dst = (uint32_t)(rnd() % 3 ? rnd() % 3 : rnd());
            kc[i].n = (uint32_t)(rnd() % 3 ? rnd() % 80 : rnd());
            kcp[i] = &kc[i];
        }
        if (variant == 2) {
            /* the tiny model's hidden size is 256: mostly right, so the values get checked */
            f.hidden_size = rnd() % 4 ? 256 : (uint32_t)(rnd() % 3 ? 64 : rnd());
            *tb = (size_t)nt * 256 * 4;   /* right only for hidden_size 256 */
        }
        m.body_case = TERN__MSG__BODY_FORWARD, m.forward = &f;
    }
    m.tensor_bytes = rnd() % 6 ? *tb : rnd() % 100000;   /* sometimes the declared size lies */
    return tern__msg__pack(&m, buf);
}

/* Sends one garbage message of a randomly drawn kind. */
static void send_garbage(sender_t *s) {
    static uint8_t a[1 << 16], b[1 << 16], env[4096];
    const uint8_t *p[4];
    size_t n[4];
    int kind = (int)(rnd() % (uint64_t)s->kinds);
    switch (kind) {
    case 0: {   /* random bytes, one frame (sometimes empty) */
        n[0] = rnd() % 600;
        rnd_fill(a, n[0]);
        p[0] = a;
        send_frames(s, p, n, 1);
        break;
    }
    case 1: {   /* 2..4 random frames */
        int nf = 2 + (int)(rnd() % 3);
        for (int i = 0; i < nf; i++) {
            n[i] = rnd() % 300;
            p[i] = a + i * 1024;
        }
        rnd_fill(a, 4096);
        send_frames(s, p, n, nf);
        break;
    }
    case 2: {   /* an envelope with the wrong version, or declaring a frame it does not send */
        Tern__Msg m = TERN__MSG__INIT;
        Tern__Heartbeat hb = TERN__HEARTBEAT__INIT;
        m.body_case = TERN__MSG__BODY_HEARTBEAT, m.heartbeat = &hb;
        m.version = rnd() & 1 ? 0 : TERN_PROTO_VERSION + 1 + (uint32_t)(rnd() % 100);
        m.tensor_bytes = rnd() & 1 ? 0 : 1 + rnd() % (1u << 20);
        if (m.version == 0) m.version = TERN_PROTO_VERSION, m.tensor_bytes = 1 + rnd() % 100;
        n[0] = tern__msg__pack(&m, env), p[0] = env;
        send_frames(s, p, n, 1);
        break;
    }
    case 3: {   /* a Forward whose hidden frame is a different size than its header says */
        size_t tb;
        n[0] = hostile_envelope(env, &tb, 2), p[0] = env;
        n[1] = rnd() % 4 ? tb + 1 + rnd() % 64 : (tb > 4 ? tb - 4 : 0);
        rnd_fill(b, n[1]);
        p[1] = b;
        send_frames(s, p, n, 2);
        break;
    }
    case 4: {   /* truncated protobuf: a hostile envelope cut short (with its frame, if any) */
        size_t tb;
        int v = (int)(rnd() % 4);
        size_t full = hostile_envelope(env, &tb, v == 3 ? 4 : v);
        n[0] = full ? rnd() % full : 0, p[0] = env;
        n[1] = tb < sizeof b ? tb : sizeof b, p[1] = b;
        send_frames(s, p, n, tb ? 2 : 1);
        break;
    }
    default: {  /* hostile but well-formed LoadShard / Forward / Sampled: the values get checked */
        size_t tb;
        n[0] = hostile_envelope(env, &tb, (int)(rnd() % 5)), p[0] = env;
        n[1] = tb < sizeof b ? tb : sizeof b, p[1] = b;
        rnd_fill(b, n[1]);
        send_frames(s, p, n, tb ? 2 : 1);
        break;
    }
    }
}

static void send_n(sender_t *s, int n) {
    for (int i = 0; i < n; i++) {
        send_garbage(s);
        if (i % 16 == 0) drain(s);
    }
    drain(s);
}

static void *garbage_thread(void *arg) {
    sender_t *s = arg;
    send_n(s, s->n);
    return NULL;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_garbage_leaves_worker_serving(void **st) {
    (void)st;
    int rc = run_cmd(g_ref, sizeof g_ref, "timeout 60 '%s' run -m '%s' " RUN_ARGS " 2>>'%s/run.log'", g_tern, g_model, g_tmp);
    if (rc != 0 || strlen(g_ref) < 10) fail_msg("reference run failed (rc %d): '%s'", rc, g_ref);
    start_worker();
    cluster_run_equals_ref("before any garbage");

    /* 1. a fresh worker (shard still loaded from the run above): every kind of garbage */
    sender_t s;
    sender_open(&s, g_ep);
    s.kinds = 6;
    send_n(&s, N_GARBAGE);
    if (!worker_alive()) fail_msg("worker died after %ld garbage messages (see %s/worker.log)", s.sent, g_tmp);
    fprintf(stderr, "phase 1: %ld garbage messages sent (%ld not accepted by our queue), %ld replies\n",
            s.sent, s.refused_sends, s.replies);
    assert_true(s.sent >= N_GARBAGE * 9 / 10);
    cluster_run_equals_ref("after garbage");

    /* 2. garbage that can never be valid, sent while a real generation runs */
    s.kinds = 4;   /* random bytes, random multi-part, bad envelopes, wrong frame sizes */
    s.n = N_GARBAGE;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, garbage_thread, &s), 0);
    cluster_run_equals_ref("with garbage arriving during the run");
    pthread_join(th, NULL);
    fprintf(stderr, "phase 2: %ld garbage messages in all, %ld replies\n", s.sent, s.replies);
    sender_close(&s);
    if (!worker_alive()) fail_msg("worker died (see %s/worker.log)", g_tmp);
    cluster_run_equals_ref("after all the garbage");
    /* and its embeddings (a last stage's extra frame) are still one process's, bit for bit */
    static char eref[65536], egot[65536];
    rc = run_cmd(eref, sizeof eref, "timeout 60 '%s' embed -m '%s' -t 1 -p 'Hello world' -p 'tern' 2>>'%s/run.log'",
                 g_tern, g_model, g_tmp);
    if (rc != 0 || strncmp(eref, "embedding 0: ", 13) != 0) fail_msg("reference embed failed (rc %d): '%.200s'", rc, eref);
    rc = run_cmd(egot, sizeof egot, "timeout 60 '%s' embed -m '%s' -t 1 -p 'Hello world' -p 'tern' --workers '%s' 2>>'%s/run.log'",
                 g_tern, g_model, g_ep, g_tmp);
    if (rc != 0 || strcmp(egot, eref) != 0) fail_msg("cluster embed rc %d differs from one process's", rc);
}

/* ---- hostile context shifts, as the coordinator of the worker ----------------------------- */

static void send_msg(sender_t *s, Tern__Msg *m, const void *tensor, size_t tb) {
    static uint8_t env[1 << 16];
    m->version = TERN_PROTO_VERSION;
    m->tensor_bytes = tb;
    size_t n = tern__msg__pack(m, env);
    assert_true(n < sizeof env);
    assert_true(zmq_send(s->sock, env, n, tb ? ZMQ_SNDMORE : 0) >= 0);
    if (tb) assert_true(zmq_send(s->sock, tensor, tb, 0) >= 0);
}

static Tern__Msg *g_last;   /* reply()'s last answer */
static uint8_t g_frame[1 << 20];   /* and its tensor frame (g_frame_n bytes; cut at the buffer) */
static size_t g_frame_n;
static void reply_free(void) {
    if (g_last) tern__msg__free_unpacked(g_last, NULL);
    g_last = NULL;
}

/* the next reply of the worker's other than a Heartbeat (NULL after 10 s); frees the last one */
static Tern__Msg *reply(sender_t *s) {
    reply_free();
    Tern__Msg *last = NULL;
    for (int tries = 0; tries < 100 && !last; tries++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        int t = 100;
        zmq_setsockopt(s->sock, ZMQ_RCVTIMEO, &t, sizeof t);
        if (zmq_msg_recv(&m, s->sock, 0) < 0) { zmq_msg_close(&m); continue; }
        int more = zmq_msg_more(&m);
        last = tern__msg__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
        zmq_msg_close(&m);
        g_frame_n = 0;
        while (more) {   /* a tensor frame (KvData's) */
            zmq_msg_init(&m);
            zmq_msg_recv(&m, s->sock, 0);
            more = zmq_msg_more(&m);
            g_frame_n = zmq_msg_size(&m) < sizeof g_frame ? zmq_msg_size(&m) : sizeof g_frame;
            memcpy(g_frame, zmq_msg_data(&m), g_frame_n);
            zmq_msg_close(&m);
        }
        if (last && last->body_case == TERN__MSG__BODY_HEARTBEAT) tern__msg__free_unpacked(last, NULL), last = NULL;
    }
    return g_last = last;
}

/* a reply's kind ("nothing" for none) and its Error text ("" when it is not an Error), for messages */
static const char *reply_kind(const Tern__Msg *r) { return r ? tp_body_name(r->body_case) : "nothing"; }
static const char *reply_error(const Tern__Msg *r) {
    return r && r->body_case == TERN__MSG__BODY_ERROR ? r->error->message : "";
}

/* hostile message `what` number c got r: an Error (for step, unless step < 0) saying why, and the
 * worker lives on */
static void expect_refused(const Tern__Msg *r, int64_t step, const char *why, const char *what, size_t c) {
    if (!r || r->body_case != TERN__MSG__BODY_ERROR || (step >= 0 && r->error->step_id != (uint64_t)step) ||
        !strstr(r->error->message, why))
        fail_msg("hostile %s %zu: expected an Error '%s', got %s '%s'", what, c, why, reply_kind(r), reply_error(r));
    if (!worker_alive()) fail_msg("worker died on hostile %s %zu (see %s/worker.log)", what, c, g_tmp);
}

/* r: the Sampled of one token for step */
static void expect_sampled(const Tern__Msg *r, uint64_t step, const char *what) {
    if (!r || r->body_case != TERN__MSG__BODY_SAMPLED || r->sampled->step_id != step || r->sampled->n_token_ids != 1)
        fail_msg("%s: expected Sampled, got %s '%s'", what, reply_kind(r), reply_error(r));
}

/* s opened to the worker (started if need be), then Hello and LoadShard of the whole model (2
 * slots of 64 positions, f16 cache) as its coordinator */
static void open_as_coordinator(sender_t *s) {
    if (g_worker <= 0) start_worker();
    sender_open(s, g_ep);
    Tern__Msg m = TERN__MSG__INIT;
    Tern__Hello h = TERN__HELLO__INIT;
    h.proto_version = TERN_PROTO_VERSION, h.node_name = "garbage", h.role = TERN__ROLE__ROLE_COORDINATOR;
    m.body_case = TERN__MSG__BODY_HELLO, m.hello = &h;
    send_msg(s, &m, NULL, 0);
    Tern__Msg *r = reply(s);
    assert_non_null(r);
    assert_int_equal(r->body_case, TERN__MSG__BODY_HELLO);
    char hash[MODEL_ID_HASH_LEN], err[256];
    Tern__ModelId mid = TERN__MODEL_ID__INIT;
    assert_int_equal(model_id_compute(g_model, &mid.size, hash, err, sizeof err), 0);
    mid.hash = hash, mid.name = "m.gguf";
    Tern__LoadShard ls = TERN__LOAD_SHARD__INIT;
    ls.model = &mid, ls.first_layer = 0, ls.last_layer = 2, ls.has_embedding = 1, ls.is_last = 1;
    ls.ctx = 64, ls.max_seqs = 2, ls.max_batch_tokens = 8, ls.next_endpoint = "";
    m.body_case = TERN__MSG__BODY_LOAD_SHARD, m.load_shard = &ls;
    send_msg(s, &m, NULL, 0);
    r = reply(s);
    assert_non_null(r);
    if (r->body_case != TERN__MSG__BODY_SHARD_READY)
        fail_msg("LoadShard answered with %s: %s", tp_body_name(r->body_case), reply_error(r));
}

static void test_hostile_shifts(void **st) {
    (void)st;
    sender_t s;
    open_as_coordinator(&s);
    Tern__Msg m = TERN__MSG__INIT;
    /* one token at position 10 of slot 1, after a shift */
    static float hid[256];
    for (int i = 0; i < 256; i++) hid[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
    uint32_t seq = 1, pos = 10;
    int32_t tok = 5;
    protobuf_c_boolean smp = 1;
    Tern__Forward f = TERN__FORWARD__INIT;
    f.n_tokens = 1, f.n_seq_ids = 1, f.seq_ids = &seq, f.n_positions = 1, f.positions = &pos;
    f.n_token_ids = 1, f.token_ids = &tok, f.n_sample = 1, f.sample = &smp, f.hidden_size = 256;
    static const struct { uint32_t sh[3][4]; int n; const char *why; } cases[] = {
        {{{2, 0, 4, 20}}, 1, "slot out of range"},
        {{{4000000000u, 0, 4, 20}}, 1, "slot out of range"},
        {{{1, 0, 0, 20}}, 1, "discard must be > 0"},
        {{{1, 0, 4, 65}}, 1, "n_past > the context"},
        {{{1, 0, 4, 4000000000u}}, 1, "n_past > the context"},
        {{{1, 18, 4, 20}}, 1, "keep + discard > n_past"},
        {{{1, 4000000000u, 4000000000u, 20}}, 1, "keep + discard > n_past"},
        {{{1, 0, 4, 20}, {1, 2, 3, 20}}, 2, "a second shift of the same slot"},
        {{{0, 0, 4, 20}, {1, 0, 4, 20}, {0, 1, 1, 2}}, 3, "3 context shifts in one step for 2 sequence slots"},
    };
    Tern__KvShift ks[3], *ksp[3];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int i = 0; i < cases[c].n; i++) {
            tern__kv_shift__init(&ks[i]);
            ks[i].seq_id = cases[c].sh[i][0], ks[i].keep = cases[c].sh[i][1];
            ks[i].discard = cases[c].sh[i][2], ks[i].n_past = cases[c].sh[i][3];
            ksp[i] = &ks[i];
        }
        f.step_id = 100 + c, f.n_shift = (size_t)cases[c].n, f.shift = ksp;
        m.body_case = TERN__MSG__BODY_FORWARD, m.forward = &f;
        send_msg(&s, &m, hid, sizeof hid);
        expect_refused(reply(&s), (int64_t)f.step_id, cases[c].why, "shift", c);
    }
    /* a good one is served */
    tern__kv_shift__init(&ks[0]);
    ks[0].seq_id = 1, ks[0].keep = 2, ks[0].discard = 3, ks[0].n_past = 13;
    f.step_id = 200, f.n_shift = 1;
    send_msg(&s, &m, hid, sizeof hid);
    expect_sampled(reply(&s), 200, "good shift");
    /* hostile KV copies (slot 1 now holds positions [0, 11), slot 0 nothing): an Error each */
    static const struct { uint32_t cp[3][3]; int n; const char *why; } copies[] = {
        {{{2, 0, 1}}, 1, "slot out of range"},
        {{{1, 4000000000u, 1}}, 1, "slot out of range"},
        {{{0, 0, 1}}, 1, "a slot into itself"},
        {{{1, 0, 0}}, 1, "n must be >= 1"},
        {{{1, 0, 65}}, 1, "n > the context"},
        {{{1, 0, 4000000000u}}, 1, "n > the context"},
        {{{1, 0, 12}}, 1, "n > the positions written in the source slot"},
        {{{0, 1, 1}}, 1, "n > the positions written in the source slot"},
        {{{1, 0, 3}, {1, 0, 2}}, 2, "a second copy into the same slot"},
        {{{1, 0, 3}, {0, 1, 1}}, 2, "the source slot is copied into in the same step"},
        {{{1, 0, 3}, {1, 0, 3}, {1, 0, 3}}, 3, "3 KV copies and 0 context shifts in one step for 2 sequence slots"},
    };
    Tern__KvCopy kc[3], *kcp[3];
    uint32_t pos0 = 11, seq0 = 0;
    f.n_shift = 0, f.seq_ids = &seq0, f.positions = &pos0;
    for (size_t c = 0; c < sizeof copies / sizeof copies[0]; c++) {
        for (int i = 0; i < copies[c].n; i++) {
            tern__kv_copy__init(&kc[i]);
            kc[i].src = copies[c].cp[i][0], kc[i].dst = copies[c].cp[i][1], kc[i].n = copies[c].cp[i][2];
            kcp[i] = &kc[i];
        }
        f.step_id = 300 + c, f.n_copy = (size_t)copies[c].n, f.copy = kcp;
        send_msg(&s, &m, hid, sizeof hid);
        expect_refused(reply(&s), (int64_t)f.step_id, copies[c].why, "copy", c);
    }
    /* a good one is served: slot 1's 11 positions into slot 0, whose token comes at 11 */
    tern__kv_copy__init(&kc[0]);
    kc[0].src = 1, kc[0].dst = 0, kc[0].n = 11;
    f.step_id = 400, f.n_copy = 1;
    send_msg(&s, &m, hid, sizeof hid);
    expect_sampled(reply(&s), 400, "good copy");
    reply_free();
    sender_close(&s);
    if (g_ref[0]) cluster_run_equals_ref("after hostile shifts and copies");
}

/* ---- hostile slot save / restore (KvRead, KvWrite), as the coordinator of the worker -------- */

/* KvRead of slot seq, n positions: the KvData's frame into out (room for cap), its row size in *row */
static void kv_read(sender_t *s, uint32_t seq, uint32_t n, uint8_t *out, size_t cap, size_t *row) {
    Tern__Msg m = TERN__MSG__INIT;
    Tern__KvRead q = TERN__KV_READ__INIT;
    q.seq_id = seq, q.n_pos = n;
    m.body_case = TERN__MSG__BODY_KV_READ, m.kv_read = &q;
    send_msg(s, &m, NULL, 0);
    Tern__Msg *r = reply(s);
    if (!r || r->body_case != TERN__MSG__BODY_KV_DATA)
        fail_msg("KvRead: expected KvData, got %s '%s'", reply_kind(r), reply_error(r));
    const Tern__KvData *d = r->kv_data;
    assert_int_equal(d->first_layer, 0);
    assert_int_equal(d->last_layer, 2);
    assert_int_equal(d->kv_type, TERN__KV_TYPE__KV_F16);
    assert_int_equal(g_frame_n, 3 * 2 * (size_t)n * d->row_bytes);
    assert_true(g_frame_n <= cap);
    memcpy(out, g_frame, g_frame_n);
    *row = (size_t)d->row_bytes;
}

static void test_hostile_kv(void **st) {
    (void)st;
    sender_t s;
    open_as_coordinator(&s);
    enum { N = 4 };
    static uint8_t a[1 << 18], b[1 << 18], got[1 << 18];
    size_t row = 0;
    kv_read(&s, 1, N, got, sizeof got, &row);
    size_t bytes = 3 * 2 * N * row;
    for (size_t i = 0; i < sizeof a; i++) a[i] = (uint8_t)(i * 31 + 7), b[i] = (uint8_t)(i * 17 + 3);
    Tern__Msg m = TERN__MSG__INIT;
    Tern__KvData d = TERN__KV_DATA__INIT;
    d.seq_id = 1, d.n_pos = N, d.first_layer = 0, d.last_layer = 2, d.kv_type = TERN__KV_TYPE__KV_F16, d.row_bytes = row;
    m.body_case = TERN__MSG__BODY_KV_WRITE, m.kv_write = &d;
    send_msg(&s, &m, a, bytes);
    Tern__Msg *r = reply(&s);
    if (!r || r->body_case != TERN__MSG__BODY_KV_DONE || r->kv_done->seq_id != 1 || r->kv_done->n_pos != N)
        fail_msg("KvWrite: expected KvDone, got %s '%s'", reply_kind(r), reply_error(r));
    kv_read(&s, 1, N, got, sizeof got, &row);
    if (memcmp(got, a, bytes)) fail_msg("the rows written do not read back");
    /* each hostile write: the fields changed from the good one, its frame sized to match them */
    static const struct { uint32_t seq, n, first, last; int kv; int drow; const char *why; } cases[] = {
        {2, N, 0, 2, TERN__KV_TYPE__KV_F16, 0, "this stage has 2 slots of 64 positions"},
        {4000000000u, N, 0, 2, TERN__KV_TYPE__KV_F16, 0, "this stage has 2 slots"},
        {1, 65, 0, 2, TERN__KV_TYPE__KV_F16, 0, "slots of 64 positions"},
        {1, N, 1, 2, TERN__KV_TYPE__KV_F16, 0, "this stage holds layers [0, 2]"},
        {1, N, 0, 3, TERN__KV_TYPE__KV_F16, 0, "this stage holds layers [0, 2]"},
        {1, N, 0, 2, TERN__KV_TYPE__KV_F32, 0, "kv type"},
        {1, N, 0, 2, TERN__KV_TYPE__KV_F16, 2, "-byte rows"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        d.seq_id = cases[c].seq, d.n_pos = cases[c].n, d.first_layer = cases[c].first, d.last_layer = cases[c].last;
        d.kv_type = (Tern__KvType)cases[c].kv, d.row_bytes = row + (size_t)cases[c].drow;
        size_t tb = (size_t)(d.last_layer - d.first_layer + 1) * 2 * d.n_pos * d.row_bytes;
        assert_true(tb <= sizeof b);
        send_msg(&s, &m, b, tb);
        expect_refused(reply(&s), -1, cases[c].why, "KvWrite", c);
    }
    /* a frame that does not match its header: dropped by the transport (nothing to answer) */
    d.seq_id = 1, d.n_pos = N, d.first_layer = 0, d.last_layer = 2, d.kv_type = TERN__KV_TYPE__KV_F16, d.row_bytes = row;
    send_msg(&s, &m, b, bytes - 1);
    Tern__KvRead q = TERN__KV_READ__INIT;   /* hostile reads: an Error each */
    m.body_case = TERN__MSG__BODY_KV_READ, m.kv_read = &q;
    static const uint32_t rq[][2] = {{2, 1}, {1, 0}, {1, 65}, {4000000000u, 4000000000u}};
    for (size_t c = 0; c < sizeof rq / sizeof rq[0]; c++) {
        q.seq_id = rq[c][0], q.n_pos = rq[c][1];
        send_msg(&s, &m, NULL, 0);
        expect_refused(reply(&s), -1, "KV rows", "KvRead", c);
    }
    sender_t s2;   /* a peer that did not load the shard: neither reads nor writes */
    sender_open_as(&s2, g_ep, "stranger");
    q.seq_id = 1, q.n_pos = N;
    send_msg(&s2, &m, NULL, 0);
    r = reply(&s2);
    if (!r || r->body_case != TERN__MSG__BODY_ERROR || !strstr(r->error->message, "only for the coordinator"))
        fail_msg("KvRead from a stranger: expected an Error, got %s", reply_kind(r));
    m.body_case = TERN__MSG__BODY_KV_WRITE, m.kv_write = &d;   /* d: the good write's fields */
    send_msg(&s2, &m, b, bytes);
    r = reply(&s2);
    if (!r || r->body_case != TERN__MSG__BODY_ERROR || !strstr(r->error->message, "only for the coordinator"))
        fail_msg("KvWrite from a stranger: expected an Error, got %s", reply_kind(r));
    sender_close(&s2);
    assert_true(worker_alive());
    kv_read(&s, 1, N, got, sizeof got, &row);
    if (memcmp(got, a, bytes)) fail_msg("a refused KvWrite changed the slot's rows");
    reply_free();
    sender_close(&s);
    if (g_ref[0]) cluster_run_equals_ref("after hostile KV writes");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_garbage_leaves_worker_serving),
        cmocka_unit_test(test_hostile_shifts),
        cmocka_unit_test(test_hostile_kv),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
