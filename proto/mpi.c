/* mpi: the MPI backend of transport.h (mpi://). Endpoints are ranks of MPI_COMM_WORLD:
 * "mpi://self" listens (messages from any rank), "mpi://3" connects to rank 3. A message is one
 * MPI message holding the protobuf envelope (+ one byte: does a tensor follow), then, when it
 * carries a tensor, a second MPI message with the raw bytes on a communicator of its own. The
 * MPI tag is the connected conn's id, so several conns of one process to one rank (engine and
 * heartbeat links) each get their own replies, like ZeroMQ routing ids. Waiting never blocks inside MPI
 * (Open MPI's blocking calls spin a core): MPI_Improbe, a few yields, then sleeps that grow from
 * 20 us to TERN_MPI_IDLE_US (default 1000 us); an idle worker measured ~1.2% of a core (with the
 * coordinator's heartbeats). Sends are posted (MPI_Isend) and not waited for, so a stage never
 * waits for the next one to be ready (MPI's rendezvous above the eager limit would).
 * Not here: frame validation (transport.c), launching and roles (mpi_launch.c). */
#include "proto/mpi.h"
#include "proto/transport.h"
#include "core/err.h"
#include <limits.h>
#include <mpi.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Tags: a header's tag is the id of the connected conn at either end (its sender on
 * to_listen, its receiver on to_conn); its tensor's tag on g.tensor is id * 2 + direction.
 * Ids cycle through [1, MP_MAX_ID]; MPI guarantees tags up to 32767. */
#define MP_MAX_ID 16000
enum { DIR_LISTEN = 0, DIR_CONN = 1 };

#define MP_BACKOFF_FIRST_US 20
#define MP_BACKOFF_MAX_US 1000
#define MP_SPIN 50                /* yields before the first sleep */
#define MP_HOT_S 0.005            /* after traffic, keep polling without sleeping this long: large
                                   * messages move only while both ends are inside MPI calls, so a
                                   * stage asleep in its backoff would stall the pipeline (a token
                                   * is a few ms apart while decoding); an idle node still backs off */
#define MP_TENSOR_WAIT_MS 60000   /* a tensor is sent right after its header: this is a hang */

/* Three private duplicates of MPI_COMM_WORLD keep the streams apart so that one probe with
 * MPI_ANY_TAG sees messages in the order they were sent:
 *   to_listen: headers sent on connected conns, received by the peer's listening conn
 *   to_conn:   replies sent on a listening conn, received by the peer's conn to us
 *   tensor:    tensor bytes of either (tag says which) */
static struct {
    pthread_mutex_t mu;      /* every MPI call (works with any thread level) */
    int active, we_init, listening;
    int rank, size;
    int next_id;
    long idle_max_us;
    MPI_Comm to_listen, to_conn, tensor;
    _Atomic double last_active; /* last send or receive: within MP_HOT_S of it, waits never sleep */
    double hot_s;
} g = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, -1, 0, 0, MP_BACKOFF_MAX_US, MPI_COMM_NULL, MPI_COMM_NULL, MPI_COMM_NULL,
       0, MP_HOT_S};

/* One send in flight: MPI reads buf until both requests complete. */
typedef struct mslot {
    MPI_Request req[2];
    int n_req;
    uint8_t *buf;            /* header + tensor, copied (kept and reused) */
    size_t cap;
} mslot_t;

#define MP_SLOTS 64          /* sends in flight per conn; the next one waits for the oldest */

typedef struct mconn {
    int peer;                /* connected conns: the peer's rank */
    int id;                  /* connected conns: tag of this link */
    mslot_t slot[MP_SLOTS];  /* ring of sends in flight: head is the oldest */
    int head, count;
    uint8_t *hbuf, *tbuf;    /* receive buffers, grown to the largest message */
    size_t hcap, tcap;
} mconn_t;

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Next wait of a poll loop: the first MP_SPIN tries only yield the core (a reply that is
 * about to come costs no sleep), then sleeps double from 20 us up to the idle maximum. */
static long backoff_next(long us) {
    if (us < 0 || now_s() - g.last_active < g.hot_s) {
        sched_yield();
        return us < 0 ? us + 1 : 0;
    }
    us = us ? us * 2 : MP_BACKOFF_FIRST_US;
    return us > g.idle_max_us ? g.idle_max_us : us;
}

static void backoff_wait(long *us) {
    *us = backoff_next(*us);
    if (*us > 0) sleep_us(*us);
}

static int mpi_fail(char *err, size_t errlen, const char *what, int code) {
    char s[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(code, s, &n) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", code);
    return err_set(err, errlen, TERN_EIO, "%s: %s", what, s);
}

/* ---- process-wide state ------------------------------------------------------------------ */

static int dup_world(MPI_Comm *c) {
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, c);
    if (rc == MPI_SUCCESS) MPI_Comm_set_errhandler(*c, MPI_ERRORS_RETURN);
    return rc;
}

int tp_mpi_init(int *rank, int *size, char *err, size_t errlen) {
    pthread_mutex_lock(&g.mu);
    int rc = 0, flag = 0, fin = 0;
    if (g.active) goto out;
    MPI_Finalized(&fin);
    if (fin) {
        rc = err_set(err, errlen, TERN_EIO, "MPI was already finalized in this process");
        goto out;
    }
    MPI_Initialized(&flag);
    if (!flag) {
        int provided = 0;
        if ((rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided)) != MPI_SUCCESS) {
            rc = mpi_fail(err, errlen, "MPI_Init_thread", rc);
            goto out;
        }
        g.we_init = 1;
        atexit(tp_mpi_finalize);   /* for users that never finalize (tern bench --hop); mpi_launch.c
                                    * registers its own exit policy later, which runs first */
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g.size);
    if ((rc = dup_world(&g.to_listen)) != MPI_SUCCESS || (rc = dup_world(&g.to_conn)) != MPI_SUCCESS ||
        (rc = dup_world(&g.tensor)) != MPI_SUCCESS) {
        rc = mpi_fail(err, errlen, "MPI_Comm_dup", rc);
        goto out;
    }
    const char *e = getenv("TERN_MPI_IDLE_US");
    long v = e ? strtol(e, NULL, 10) : 0;
    if (v >= MP_BACKOFF_FIRST_US && v <= 1000000) g.idle_max_us = v;
    const char *h = getenv("TERN_MPI_HOT_US");   /* 0: sleep-backoff at once (oversubscribed cores) */
    long hv = h ? strtol(h, NULL, 10) : -1;
    if (hv >= 0 && hv <= 1000000) g.hot_s = (double)hv * 1e-6;
    g.active = 1;
out:
    if (g.active) {
        if (rank) *rank = g.rank;
        if (size) *size = g.size;
    }
    pthread_mutex_unlock(&g.mu);
    return rc;
}

int tp_mpi_active(void) { return g.active; }
int tp_mpi_rank(void) { return g.active ? g.rank : -1; }
int tp_mpi_size(void) { return g.active ? g.size : 0; }

void tp_mpi_finalize(void) {
    pthread_mutex_lock(&g.mu);
    if (g.active) {
        MPI_Comm_free(&g.to_listen);
        MPI_Comm_free(&g.to_conn);
        MPI_Comm_free(&g.tensor);
        g.active = 0;
        int fin = 0;
        MPI_Finalized(&fin);
        if (g.we_init && !fin) MPI_Finalize();
    }
    pthread_mutex_unlock(&g.mu);
}

void tp_mpi_abort(int code) {
    int flag = 0, fin = 0;
    MPI_Initialized(&flag);
    MPI_Finalized(&fin);
    if (flag && !fin) MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
}

/* ---- endpoints and peers ------------------------------------------------------------------ */

/* "mpi://self" -> own rank, "mpi://N" -> N; -1 when malformed or out of range */
static int ep_rank(const char *ep) {
    const char *s = ep + 6;
    if (!strcmp(s, "self")) return g.rank;
    if (*s < '0' || *s > '9') return -1;
    char *end;
    long r = strtol(s, &end, 10);
    return *end || r < 0 || r >= g.size ? -1 : (int)r;
}

/* A listening conn names each sender "rankR.cID" (rank, link id); the routing id is the same
 * text, so a reply finds the very link the request came on. */
static void peer_set(tp_peer_t *p, int rank, int id) {
    int n = snprintf(p->name, sizeof p->name, "rank%d.c%d", rank, id);
    memcpy(p->id, p->name, (size_t)n);
    p->id_len = (size_t)n;
}

/* parses digits at s[*i..]; -1 when there are none or they overflow */
static int num_at(const uint8_t *s, size_t n, size_t *i) {
    long v = 0;
    size_t j = *i;
    for (; j < n && s[j] >= '0' && s[j] <= '9' && v < INT_MAX / 10; j++) v = v * 10 + (s[j] - '0');
    if (j == *i || (j < n && s[j] >= '0' && s[j] <= '9')) return -1;
    *i = j;
    return (int)v;
}

static int peer_parse(const tp_peer_t *p, int *rank, int *id) {
    size_t n = p->id_len < sizeof p->id ? p->id_len : 0, i = 4;
    if (n < 8 || memcmp(p->id, "rank", 4)) return -1;
    if ((*rank = num_at(p->id, n, &i)) < 0 || *rank >= g.size || i + 2 > n || p->id[i] != '.' || p->id[i + 1] != 'c')
        return -1;
    i += 2;
    if ((*id = num_at(p->id, n, &i)) < 1 || *id > MP_MAX_ID || i != n) return -1;
    return 0;
}

/* ---- ops --------------------------------------------------------------------------------- */

static int mpi_open(tp_conn_t *c, int listen, char *err, size_t errlen) {
    int rc = tp_mpi_init(NULL, NULL, err, errlen);
    if (rc < 0) return rc;
    int r = ep_rank(c->endpoint);
    if (r < 0)
        return err_set(err, errlen, TERN_EINVAL, "endpoint '%s': expected mpi://self or mpi://RANK with RANK in [0, %d)",
                       c->endpoint, g.size);
    if (listen && r != g.rank)
        return err_set(err, errlen, TERN_EINVAL, "cannot listen on %s: this process is rank %d (use mpi://self)",
                       c->endpoint, g.rank);
    mconn_t *m = calloc(1, sizeof *m);
    if (!m) return err_set(err, errlen, TERN_ENOMEM, "no memory for a connection");
    pthread_mutex_lock(&g.mu);
    if (listen && g.listening) {
        pthread_mutex_unlock(&g.mu);
        free(m);
        return err_set(err, errlen, TERN_EIO, "rank %d already listens (one mpi://self per process)", g.rank);
    }
    if (listen) g.listening = 1;
    else m->id = g.next_id = g.next_id % MP_MAX_ID + 1;
    pthread_mutex_unlock(&g.mu);
    m->peer = r;
    if (listen) snprintf(c->endpoint, sizeof c->endpoint, "mpi://%d", g.rank);
    c->impl = m;
    return 0;
}

static int grow(uint8_t **b, size_t *cap, size_t n) {
    if (n <= *cap) return 0;
    uint8_t *nb = realloc(*b, n);
    if (!nb) return TERN_ENOMEM;
    *b = nb;
    *cap = n;
    return 0;
}

/* Retires completed sends, oldest first. With wait, keeps trying (sleeping between tries) until
 * at most `keep` remain or `deadline` passes. Returns 0, TERN_ETIMEOUT or TERN_EIO. */
static int send_reap(mconn_t *m, int keep, double deadline, char *err, size_t errlen) {
    long us = -MP_SPIN;
    for (;;) {
        int rc = MPI_SUCCESS;
        pthread_mutex_lock(&g.mu);
        while (m->count && rc == MPI_SUCCESS) {
            mslot_t *s = &m->slot[m->head];
            int done = 0;
            rc = MPI_Testall(s->n_req, s->req, &done, MPI_STATUSES_IGNORE);
            if (!done && rc == MPI_SUCCESS) break;
            s->n_req = 0;
            m->head = (m->head + 1) % MP_SLOTS;
            m->count--;
        }
        pthread_mutex_unlock(&g.mu);
        if (rc != MPI_SUCCESS) return mpi_fail(err, errlen, "send", rc);
        if (m->count <= keep) return 0;
        if (now_s() > deadline) return TERN_ETIMEOUT;
        backoff_wait(&us);
    }
}

/* Posts header (+ tensor) and returns without waiting for the peer to take them, so a stage
 * never waits on the next one (MPI's rendezvous for big messages would otherwise make it). */
static int mpi_send(tp_conn_t *c, const tp_peer_t *to, const void *hdr, size_t hdr_bytes, const void *tensor,
                    size_t tensor_bytes, char *err, size_t errlen) {
    mconn_t *m = c->impl;
    const char *peer = to ? to->name : c->peer.name;
    int dest = m->peer, id = m->id;
    if (to && peer_parse(to, &dest, &id) < 0)
        return err_set(err, errlen, TERN_EPEER, "peer %s is not a link from a rank of this MPI job", peer);
    if (hdr_bytes >= INT_MAX || tensor_bytes > INT_MAX)
        return err_set(err, errlen, TERN_EINVAL, "a %zu-byte message is too big for one MPI message", tensor_bytes);
    int keep = (c->hwm < MP_SLOTS ? c->hwm : MP_SLOTS) - 1;
    int rc = send_reap(m, keep, now_s() + c->send_timeout_ms / 1000.0, err, errlen);
    if (rc == TERN_ETIMEOUT)
        return err_set(err, errlen, TERN_ETIMEOUT, "peer %s has not taken %d queued messages within %d ms", peer,
                       m->count, c->send_timeout_ms);
    if (rc < 0) return rc;
    mslot_t *s = &m->slot[(m->head + m->count) % MP_SLOTS];
    size_t hn = hdr_bytes + 1, need = hn + tensor_bytes;   /* header, flag byte, tensor */
    if (grow(&s->buf, &s->cap, need) < 0) return err_set(err, errlen, TERN_ENOMEM, "no memory for a %zu-byte send", need);
    memcpy(s->buf, hdr, hdr_bytes);
    s->buf[hdr_bytes] = tensor_bytes != 0;
    if (tensor_bytes) memcpy(s->buf + hn, tensor, tensor_bytes);
    MPI_Comm hc = c->listening ? g.to_conn : g.to_listen;
    int ttag = id * 2 + (c->listening ? DIR_CONN : DIR_LISTEN);
    pthread_mutex_lock(&g.mu);   /* header and tensor posted together: per-link order holds */
    rc = MPI_Isend(s->buf, (int)hn, MPI_BYTE, dest, id, hc, &s->req[0]);
    s->n_req = rc == MPI_SUCCESS;
    if (rc == MPI_SUCCESS && tensor_bytes) {
        rc = MPI_Isend(s->buf + hn, (int)tensor_bytes, MPI_BYTE, dest, ttag, g.tensor, &s->req[1]);
        s->n_req += rc == MPI_SUCCESS;
    }
    if (s->n_req) m->count++;
    pthread_mutex_unlock(&g.mu);
    if (rc != MPI_SUCCESS) return mpi_fail(err, errlen, "MPI_Isend", rc);
    g.last_active = now_s();
    return 0;
}


/* Receives the tensor that follows a header from `src`: it was posted with the header, so it
 * is there at once or soon. A frame over max_frame is consumed and refused. */
static int recv_tensor(tp_conn_t *c, mconn_t *m, int src, int id, size_t *n, char *err, size_t errlen) {
    int tag = id * 2 + (c->listening ? DIR_LISTEN : DIR_CONN), flag = 0, count = 0, rc;
    MPI_Message mh;
    MPI_Status st;
    double deadline = now_s() + MP_TENSOR_WAIT_MS / 1000.0;
    for (long us = -MP_SPIN;; backoff_wait(&us)) {
        pthread_mutex_lock(&g.mu);
        rc = MPI_Improbe(src, tag, g.tensor, &flag, &mh, &st);
        if (rc == MPI_SUCCESS && flag) {
            MPI_Get_count(&st, MPI_BYTE, &count);
            int keep = (uint64_t)count <= c->max_frame && grow(&m->tbuf, &m->tcap, (size_t)count) == 0;
            /* a refused tensor is still received whole (into a scratch buffer) to consume it:
             * Open MPI's truncation path is not safe to rely on with single-copy transports */
            void *dst = keep ? m->tbuf : malloc(count ? (size_t)count : 1);
            rc = MPI_Mrecv(dst, dst ? count : 0, MPI_BYTE, &mh, MPI_STATUS_IGNORE);
            if (!keep) free(dst);
            pthread_mutex_unlock(&g.mu);
            if (!keep)
                return err_set(err, errlen, TERN_EPROTO, "peer rank%d.c%d: %d-byte tensor refused (limit %llu)", src, id, count,
                               (unsigned long long)c->max_frame);
            if (rc != MPI_SUCCESS) return mpi_fail(err, errlen, "receive tensor", rc);
            *n = (size_t)count;
            return 0;
        }
        pthread_mutex_unlock(&g.mu);
        if (rc != MPI_SUCCESS) return mpi_fail(err, errlen, "probe tensor", rc);
        if (now_s() > deadline)
            return err_set(err, errlen, TERN_EPROTO, "peer rank%d.c%d: header announced a tensor that never came", src, id);
    }
}

static int mpi_recv(tp_conn_t *c, tp_msg_t *out, int timeout_ms, char *err, size_t errlen) {
    mconn_t *m = c->impl;
    MPI_Comm hc = c->listening ? g.to_listen : g.to_conn;
    int src = c->listening ? MPI_ANY_SOURCE : m->peer, tag = c->listening ? MPI_ANY_TAG : m->id;
    int flag = 0, count = 0, rc;
    MPI_Message mh;
    MPI_Status st;
    double deadline = now_s() + timeout_ms / 1000.0;
    for (long us = -MP_SPIN;; backoff_wait(&us)) {
        pthread_mutex_lock(&g.mu);
        rc = MPI_Improbe(src, tag, hc, &flag, &mh, &st);
        if (rc == MPI_SUCCESS && flag) {
            MPI_Get_count(&st, MPI_BYTE, &count);
            if (grow(&m->hbuf, &m->hcap, count ? (size_t)count : 1) < 0) {
                MPI_Mrecv(NULL, 0, MPI_BYTE, &mh, MPI_STATUS_IGNORE);   /* consume it anyway */
                rc = -1;
            } else {
                rc = MPI_Mrecv(m->hbuf, count, MPI_BYTE, &mh, MPI_STATUS_IGNORE);
            }
        }
        pthread_mutex_unlock(&g.mu);
        if (rc == -1) return err_set(err, errlen, TERN_ENOMEM, "no memory for a %d-byte header", count);
        if (rc != MPI_SUCCESS) return mpi_fail(err, errlen, "receive", rc);
        if (flag) break;
        if (now_s() >= deadline)
            return err_set(err, errlen, TERN_ETIMEOUT, "nothing from %s within %d ms",
                           c->listening ? c->endpoint : c->peer.name, timeout_ms);
    }
    if (c->listening) peer_set(&out->from, st.MPI_SOURCE, st.MPI_TAG);
    if (count < 1) return err_set(err, errlen, TERN_EFORMAT, "empty message from peer %s", out->from.name);
    tp_iov_t iov[2] = {{m->hbuf, (size_t)count - 1}, {NULL, 0}};
    int nfr = 1;
    if (m->hbuf[count - 1]) {
        size_t tn = 0;
        if ((rc = recv_tensor(c, m, st.MPI_SOURCE, st.MPI_TAG, &tn, err, errlen)) < 0) return rc;
        iov[1] = (tp_iov_t){m->tbuf, tn};
        nfr = 2;
    }
    g.last_active = now_s();
    return tp_frames_decode(out, iov, nfr, out->from.name, c->max_frame, err, errlen);
}

static int mpi_poll(tp_conn_t *const *conns, int n, int timeout_ms, int *ready, char *err, size_t errlen) {
    double deadline = now_s() + timeout_ms / 1000.0;
    for (long us = -MP_SPIN;; backoff_wait(&us)) {
        int nr = 0, rc = MPI_SUCCESS;
        pthread_mutex_lock(&g.mu);
        for (int i = 0; i < n && rc == MPI_SUCCESS; i++) {
            const mconn_t *m = conns[i]->impl;
            int flag = 0;
            rc = MPI_Iprobe(conns[i]->listening ? MPI_ANY_SOURCE : m->peer, conns[i]->listening ? MPI_ANY_TAG : m->id,
                            conns[i]->listening ? g.to_listen : g.to_conn, &flag, MPI_STATUS_IGNORE);
            ready[i] = flag;
            nr += flag;
        }
        pthread_mutex_unlock(&g.mu);
        if (rc != MPI_SUCCESS) return mpi_fail(err, errlen, "poll", rc);
        if (nr || now_s() >= deadline) return nr;
    }
}

static void mpi_close(tp_conn_t *c) {
    mconn_t *m = c->impl;
    if (!m) return;
    char err[64];
    /* sends still in flight read their buffers: give them a moment, then cancel them and leave
     * those buffers allocated (MPI may still read them) */
    if (send_reap(m, 0, now_s() + 0.5, err, sizeof err) != 0) {
        pthread_mutex_lock(&g.mu);
        for (; m->count; m->count--, m->head = (m->head + 1) % MP_SLOTS) {
            mslot_t *s = &m->slot[m->head];
            for (int i = 0; i < s->n_req; i++) {
                MPI_Cancel(&s->req[i]);
                MPI_Request_free(&s->req[i]);
            }
            s->buf = NULL;
        }
        pthread_mutex_unlock(&g.mu);
    }
    pthread_mutex_lock(&g.mu);
    if (c->listening) g.listening = 0;
    pthread_mutex_unlock(&g.mu);
    for (int i = 0; i < MP_SLOTS; i++) free(m->slot[i].buf);
    free(m->hbuf);
    free(m->tbuf);
    free(m);
    c->impl = NULL;
}

const tp_ops_t tp_mpi_ops = {"mpi", mpi_open, mpi_send, mpi_recv, mpi_poll, mpi_close};
