/* transport: one small interface (prefix tp_) over which coordinator and workers exchange
 * tern.proto messages, each optionally followed by one raw tensor frame. Backends sit behind a
 * vtable picked by the endpoint's scheme: tcp:// and ipc:// (zmq.c), inproc:// (inproc.c,
 * embedded single-process mode), mpi:// (mpi.c, under mpirun). Every received message is validated here
 * (version, body, sizes) before the caller sees it. Not here: what messages mean (worker/,
 * coordinator/), retries, heartbeat policy.
 *
 * Topology (ZeroMQ ROUTER/DEALER): each process *listens* on one endpoint (ROUTER) where all
 * its incoming traffic arrives, and *connects* one conn (DEALER) to each peer it sends to. A
 * listening conn tells who sent each message (tp_msg_t.from) and can answer that peer over the
 * same link (tp_send with `to`); a connected conn talks to its one peer (to = NULL). The
 * connecting side's routing id is its node name (tp_opts_t.name), so the listener's logs and
 * errors name the peer; a reconnect with the same name takes the link over (ROUTER_HANDOVER).
 * coordinator: listens (results, Hello from workers), connects to every worker.
 * worker: listens (LoadShard, Forward from the previous stage or the coordinator), connects to
 * the next stage (or not, when results go back over the coordinator's link). */
#ifndef TERN_TRANSPORT_H
#define TERN_TRANSPORT_H
#include "proto/tern.pb-c.h"
#include <stddef.h>
#include <stdint.h>

/* v3: Forward.shift (KV-cache context shifts; a v2 worker would ignore them silently),
 * Forward.embd / Sampled.embd_rows (embeddings). v4: SamplingParams 14-28 (typical, top-n-sigma,
 * XTC, dynamic temperature, mirostat, DRY; a v3 worker would ignore them silently); KvRead /
 * KvData / KvWrite / KvDone (slot save and restore: a v3 worker would ignore them and leave the
 * coordinator waiting). v5: Forward.copy (KV rows copied between slots: a v4 worker would ignore
 * them silently). v6: LoadShard.rope (RoPE overrides: a v5 worker would ignore them silently) */
#define TERN_PROTO_VERSION 6
#define TP_MAX_KV_ROW (1u << 24)             /* KvData.row_bytes bound */
#define TP_MAX_BIAS 300   /* SamplingParams.bias_ids at most (= SAMPLER_BIAS_MAX, worker/sampler.h) */
#define TP_MAX_DRY_SEQ 8192   /* SamplingParams.dry_breaker_lens at most (= SAMPLER_DRY_SEQ_MAX) */
#define TP_MAX_DRY_TOK 8192   /* SamplingParams.dry_breaker_tokens at most (= SAMPLER_DRY_TOK_MAX) */
#define TP_MAX_DRY_LEN 21     /* tokens of one breaker (= 1 + SAMPLER_DRY_TAIL_MAX) */
#define TP_MAX_ORDER 16       /* SamplingParams.sampler_order letters at most (= SAMPLER_ORDER_MAX) */
#define TP_ORDER_LETTERS "edskypmxt"   /* its letters (= SAMPLER_ORDER_DEFAULT) */

#define TP_NAME_MAX 64                       /* node names, routing ids (bytes, printable) */
#define TP_KEY_Z85 41                        /* CURVE key in Z85: 40 chars + NUL */
#define TP_DEFAULT_MAX_FRAME (1ull << 30)    /* largest tensor frame accepted: 1 GiB */
#define TP_DEFAULT_HWM 1000                  /* messages queued per peer and direction */
#define TP_DEFAULT_SEND_TIMEOUT_MS 5000
#define TP_MAX_TOKENS (1u << 16)             /* Forward.n_tokens bound */
#define TP_MAX_HIDDEN (1u << 18)             /* Forward.hidden_size bound */
#define TP_MAX_VOCAB (1u << 22)              /* Sampled.vocab bound */
#define TP_MAX_TOP 20                        /* Sampled.n_top bound (= SAMPLER_TOP_MAX) */
#define TP_MAX_THREADS 1024                  /* LoadShard.threads_batch bound (= the -tb flag's) */
#define TP_MAX_POLL 64

/* CURVE (ZeroMQ's Curve25519 handshake): authenticates and encrypts tcp:// and ipc:// links;
 * ignored for inproc://. Keys are Z85 text (curve.h: curve_read_key, `tern keygen`). */
typedef struct tp_curve {
    char public_key[TP_KEY_Z85];   /* own key pair */
    char secret_key[TP_KEY_Z85];
    char server_key[TP_KEY_Z85];   /* connect: the listener's public key */
    const char (*allowed)[TP_KEY_Z85]; /* listen: client public keys let in (copied) */
    int n_allowed;
    int allow_any;                 /* listen: 1 = any client key (encryption only); else a
                                    * client not in `allowed` is refused and logged */
} tp_curve_t;

typedef struct tp_opts {
    const char *name;         /* this node ("coord", "w1"): routing id when connecting; NULL =
                               * anonymous (ZeroMQ picks). At most TP_NAME_MAX-1 printable bytes */
    const char *peer_name;    /* connect: the peer's name for errors; NULL = the endpoint */
    int send_timeout_ms;      /* a send blocks at most this long (no peer, queue full); 0 = default */
    int hwm;                  /* 0 = TP_DEFAULT_HWM */
    uint64_t max_frame_bytes; /* 0 = TP_DEFAULT_MAX_FRAME; bigger frames are refused */
    const tp_curve_t *curve;  /* NULL = plaintext */
} tp_opts_t;

/* Who sent a message (listening conns), or the one peer (connected conns). */
typedef struct tp_peer {
    uint8_t id[TP_NAME_MAX];  /* routing id bytes; id_len == 0 on a connected conn */
    size_t id_len;
    char name[TP_NAME_MAX * 2 + 8]; /* printable: the id as text (hex when not printable), or
                                     * peer_name / endpoint on a connected conn */
} tp_peer_t;

typedef struct tp_arena tp_arena_t;
/* One received message, caller-owned: tp_msg_init once, then tp_recv into it any number of
 * times (the previous contents are released; buffers are kept, so a steady stream of
 * same-sized messages allocates nothing), tp_msg_free at the end. */
typedef struct tp_msg {
    Tern__Msg *msg;           /* decoded and validated; valid until the next recv / free */
    const void *tensor;       /* raw frame, 64-byte aligned; NULL when tensor_bytes == 0 */
    size_t tensor_bytes;      /* == msg->tensor_bytes */
    tp_peer_t from;
    /* private */
    void *buf;
    size_t cap;
    tp_arena_t *arena;
} tp_msg_t;

typedef struct tp_conn tp_conn_t;

void tp_msg_init(tp_msg_t *m);
void tp_msg_free(tp_msg_t *m);

/* Binds `endpoint` (tcp://host:port, tcp://host:* for an ephemeral port, ipc:///path,
 * inproc://name) and returns a listening conn in *c. o may be NULL (defaults).
 * Errors: TERN_EINVAL (unknown scheme, bad options), TERN_EIO (bind failed: in use, bad
 * address) with the reason in err; *c stays NULL. */
int tp_listen(tp_conn_t **c, const char *endpoint, const tp_opts_t *o, char *err, size_t errlen);
/* Connects to a listener at `endpoint`. Returns at once: the link comes up in the background
 * and is re-made if it drops; a send waits up to send_timeout_ms for it. Errors as tp_listen. */
int tp_connect(tp_conn_t **c, const char *endpoint, const tp_opts_t *o, char *err, size_t errlen);
/* Closes the conn (pending messages are dropped: linger 0) and nulls *c; NULL ok. */
void tp_close(tp_conn_t **c);

/* The endpoint as bound or connected, with the real port for tcp://host:* ("tcp://127.0.0.1:
 * 41234"). Valid while c is open. */
const char *tp_endpoint(const tp_conn_t *c);

/* Sends m (its version and tensor_bytes are set here) and, when tensor_bytes > 0, the raw
 * frame tensor[0..tensor_bytes) (copied; the caller keeps its buffer). `to` names the peer on
 * a listening conn (usually &received.from) and must be NULL on a connected conn. m is checked
 * as a receiver would check it first. Errors: TERN_EINVAL (m invalid, refused before sending),
 * TERN_ETIMEOUT (no link to the peer or its queue full for send_timeout_ms), TERN_EPEER (`to`
 * is not connected), TERN_EAUTH (the peer refused our CURVE key), TERN_EIO. */
int tp_send(tp_conn_t *c, const tp_peer_t *to, const Tern__Msg *m, const void *tensor,
            size_t tensor_bytes, char *err, size_t errlen);

/* Waits up to timeout_ms (>= 0; 0 = just look) for one message and decodes it into out.
 * Returns 0, TERN_ETIMEOUT (nothing came; out->msg == NULL), or, for a message that fails
 * validation, TERN_EPROTO / TERN_EFORMAT with an error naming the peer; the bad message is
 * consumed whole, so the next recv starts clean. */
int tp_recv(tp_conn_t *c, tp_msg_t *out, int timeout_ms, char *err, size_t errlen);

/* Waits up to timeout_ms for any of conns[0..n) (n <= TP_MAX_POLL, all of one backend) to have
 * a message; ready[i] = 1 for those that do. Returns how many are ready (0 = timeout) or
 * TERN_EIO. */
int tp_poll(tp_conn_t *const *conns, int n, int timeout_ms, int *ready, char *err, size_t errlen);

/* Connects to a listener at `endpoint`, sends it Shutdown(reason) and closes the link: how a
 * coordinator ends MPI worker ranks and an embedded engine its worker threads.
 * send_timeout_ms 0 = default. Errors as tp_connect / tp_send. */
int tp_send_shutdown(const char *endpoint, const char *reason, int send_timeout_ms, char *err, size_t errlen);
/* Answers the Heartbeat `ping` (received on c) with one of the same seq and this node's time. */
int tp_answer_heartbeat(tp_conn_t *c, const tp_msg_t *ping, char *err, size_t errlen);

/* Handshake: 0 when the peer's Hello speaks our protocol, else TERN_EPROTO with
 * "peer X speaks protocol v2, this tern speaks v1". */
int tp_hello_check(const Tern__Hello *h, const char *peer, char *err, size_t errlen);

/* Name of a body case ("forward", "hello", ...; "none" when unset) for logs. */
const char *tp_body_name(int body_case);

/* Releases process-wide transport state (the shared ZeroMQ context, the CURVE ZAP thread)
 * when no conn of this process is open any more; with conns still open (another engine or an
 * embedded worker in the same process) it does nothing, and the last user's call does it.
 * Optional: for clean exits and leak checkers. */
void tp_term(void);

/* ---- for frame decoders and backends (transport.c, zmq.c, inproc.c, fuzz tests) ---------- */

/* One received frame, as bytes. */
typedef struct tp_iov {
    const void *p;
    size_t n;
} tp_iov_t;

/* Decodes one message given as frames fr[0..nfr) (without the routing id): frame 0 is the
 * protobuf envelope, frame 1 the raw tensor when the envelope declares one; anything else is
 * refused. Checks everything (tp_msg_check) and copies the tensor into out's aligned buffer.
 * `peer` names the sender in errors. Returns 0 or TERN_EPROTO / TERN_EFORMAT / TERN_ENOMEM. */
int tp_frames_decode(tp_msg_t *out, const tp_iov_t *fr, int nfr, const char *peer,
                     uint64_t max_frame, char *err, size_t errlen);
/* Checks a decoded envelope against its tensor frame: version, a known body, counts and sizes
 * (e.g. Forward: hidden bytes == n_tokens * hidden_size * 4). Used on receive and before send. */
int tp_msg_check(const Tern__Msg *m, uint64_t tensor_bytes, const char *peer, char *err,
                 size_t errlen);
/* Packs m (with version and tensor_bytes set) into c's reusable buffer; returns its size, or 0
 * on allocation failure. The bytes stay valid until the next tp_pack on c. */
size_t tp_pack(tp_conn_t *c, const Tern__Msg *m, uint64_t tensor_bytes, const uint8_t **out);

/* A backend. Calls come through transport.c, which has already parsed the scheme and
 * filled the common fields of tp_conn_t. */
typedef struct tp_ops {
    const char *scheme;
    int (*open)(tp_conn_t *c, int listen, char *err, size_t errlen);
    int (*send)(tp_conn_t *c, const tp_peer_t *to, const void *hdr, size_t hdr_bytes,
                const void *tensor, size_t tensor_bytes, char *err, size_t errlen);
    int (*recv)(tp_conn_t *c, tp_msg_t *out, int timeout_ms, char *err, size_t errlen);
    int (*poll)(tp_conn_t *const *conns, int n, int timeout_ms, int *ready, char *err, size_t errlen);
    void (*close)(tp_conn_t *c);
} tp_ops_t;

struct tp_conn {
    const tp_ops_t *ops;
    void *impl;                       /* backend state */
    int listening;
    char endpoint[256];               /* as given, then as bound (real port) */
    char name[TP_NAME_MAX];           /* own node name ("" = anonymous) */
    tp_peer_t peer;                   /* connected conns: the one peer */
    int send_timeout_ms, hwm;
    uint64_t max_frame;
    int has_curve;
    tp_curve_t curve;                 /* copy; allowed points into curve_allowed */
    char (*curve_allowed)[TP_KEY_Z85];
    uint8_t *pack;                    /* tp_pack's buffer */
    size_t pack_cap;
};

extern const tp_ops_t tp_zmq_ops;     /* zmq.c: tcp://, ipc:// */
extern const tp_ops_t tp_inproc_ops;  /* inproc.c: inproc:// */
#ifdef TERN_HAVE_MPI
#define TP_HAVE_MPI 1
extern const tp_ops_t tp_mpi_ops;     /* mpi.c: mpi://self (listen), mpi://RANK (proto/mpi.h) */
#else
#define TP_HAVE_MPI 0
#endif

/* zmq.c, shared with inproc.c and curve.c: the process-wide ZeroMQ context (made on first
 * use; NULL if that fails). */
void *tp_zmq_ctx(void);
void tp_zmq_term(void);
/* zmq.c: opens a ROUTER (listen) or DEALER (connect) socket on the shared context for c,
 * with TCP options when tcp != 0 and CURVE when c->has_curve. */
int tp_zmq_open(tp_conn_t *c, int listen, int tcp, char *err, size_t errlen);
int tp_zmq_send(tp_conn_t *c, const tp_peer_t *to, const void *hdr, size_t hdr_bytes,
                const void *tensor, size_t tensor_bytes, char *err, size_t errlen);
int tp_zmq_recv(tp_conn_t *c, tp_msg_t *out, int timeout_ms, char *err, size_t errlen);
int tp_zmq_poll(tp_conn_t *const *conns, int n, int timeout_ms, int *ready, char *err, size_t errlen);
void tp_zmq_close(tp_conn_t *c);

#endif
