/* zmq: the ZeroMQ backend of transport.h for tcp:// and ipc:// (inproc.c reuses it). A
 * listening conn is a ROUTER (every incoming message starts with the sender's routing id;
 * MANDATORY, so sending to a peer that is gone is an error, and HANDOVER, so a restarted peer
 * takes its name back); a connecting conn is a DEALER with IMMEDIATE, so nothing is queued for
 * a link that is not up and a send times out instead. All sockets: LINGER 0, bounded HWM,
 * MAXMSGSIZE, and on tcp keepalive + ZMTP heartbeats. Not here: frame validation (transport.c). */
#include "proto/transport.h"
#include "proto/curve.h"
#include "core/err.h"
#include "core/log.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define ZC_HEADER_SLACK (8u << 20)   /* MAXMSGSIZE = largest tensor + room for the header */
#define ZC_MAX_FRAMES 4              /* routing id + header + tensor + one to detect extras */

typedef struct zconn {
    void *sock;
    void *mon;          /* PAIR reading the socket's handshake events (CURVE clients) */
    char domain[32];    /* ZAP domain (CURVE listeners) */
    int auth_failed;
} zconn_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static void *g_ctx;
static unsigned g_mon_id;

void *tp_zmq_ctx(void) {
    pthread_mutex_lock(&g_mu);
    if (!g_ctx) g_ctx = zmq_ctx_new();
    void *c = g_ctx;
    pthread_mutex_unlock(&g_mu);
    return c;
}

void tp_zmq_term(void) {
    pthread_mutex_lock(&g_mu);
    void *c = g_ctx;
    g_ctx = NULL;
    pthread_mutex_unlock(&g_mu);
    if (c) zmq_ctx_term(c);
}

static int setopt_int(void *s, int opt, int v) {
    return zmq_setsockopt(s, opt, &v, sizeof v);
}

/* Options every socket gets; tcp-only ones when tcp. 0 or -1 (zmq_errno). */
static int base_opts(void *s, const tp_conn_t *c, int tcp) {
    int64_t maxmsg = (int64_t)c->max_frame + ZC_HEADER_SLACK;
    int rc = setopt_int(s, ZMQ_LINGER, 0) | setopt_int(s, ZMQ_SNDHWM, c->hwm) |
             setopt_int(s, ZMQ_RCVHWM, c->hwm) | setopt_int(s, ZMQ_SNDTIMEO, c->send_timeout_ms) |
             zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) |
             setopt_int(s, ZMQ_RECONNECT_IVL, 100) | setopt_int(s, ZMQ_RECONNECT_IVL_MAX, 2000);
    if (tcp)
        rc |= setopt_int(s, ZMQ_TCP_KEEPALIVE, 1) | setopt_int(s, ZMQ_TCP_KEEPALIVE_IDLE, 30) |
              setopt_int(s, ZMQ_TCP_KEEPALIVE_INTVL, 5) | setopt_int(s, ZMQ_TCP_KEEPALIVE_CNT, 3) |
              setopt_int(s, ZMQ_HEARTBEAT_IVL, 1000) | setopt_int(s, ZMQ_HEARTBEAT_TIMEOUT, 3000);
    return rc ? -1 : 0;
}

/* CURVE: server side with a ZAP domain, or client side with a handshake monitor. */
static int curve_opts(zconn_t *z, tp_conn_t *c, int listen, char *err, size_t errlen) {
    if (!zmq_has("curve")) return err_set(err, errlen, TERN_ENOTSUP, "this libzmq has no CURVE support");
    void *s = z->sock;
    int rc;
    if (listen) {
        if ((rc = curve_zap_register(&c->curve, z->domain, err, errlen))) return rc;
        rc = setopt_int(s, ZMQ_CURVE_SERVER, 1) |
             zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, c->curve.secret_key, TP_KEY_Z85) |
             zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, z->domain, strlen(z->domain));
    } else {
        char mep[64];
        pthread_mutex_lock(&g_mu);
        snprintf(mep, sizeof mep, "inproc://tern.mon.%u", g_mon_id++);
        pthread_mutex_unlock(&g_mu);
        rc = zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, c->curve.server_key, TP_KEY_Z85) |
             zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, c->curve.public_key, TP_KEY_Z85) |
             zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, c->curve.secret_key, TP_KEY_Z85);
        if (!rc && zmq_socket_monitor(s, mep, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED) == 0 &&
            (z->mon = zmq_socket(tp_zmq_ctx(), ZMQ_PAIR)) != NULL) {
            setopt_int(z->mon, ZMQ_LINGER, 0);
            if (zmq_connect(z->mon, mep) != 0) {
                zmq_close(z->mon);
                z->mon = NULL;
            }
        }
    }
    return rc ? err_set(err, errlen, TERN_EINVAL, "CURVE keys refused by ZeroMQ (not 40-char Z85?): %s",
                        zmq_strerror(zmq_errno()))
              : 0;
}

/* Reads pending monitor events; remembers whether the server refused our key. */
static void mon_drain(zconn_t *z) {
    while (z->mon) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, z->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        uint16_t id = 0;
        if (zmq_msg_size(&ev) >= 2) memcpy(&id, zmq_msg_data(&ev), 2);
        if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) z->auth_failed = 1;
        if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) z->auth_failed = 0;
        int more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        if (more) {
            zmq_msg_init(&addr);
            zmq_msg_recv(&addr, z->mon, ZMQ_DONTWAIT);
            zmq_msg_close(&addr);
        }
    }
}

static void zconn_free(zconn_t *z) {
    if (!z) return;
    if (z->mon) {
        zmq_socket_monitor(z->sock, NULL, 0);
        zmq_close(z->mon);
    }
    if (z->sock) zmq_close(z->sock);
    if (z->domain[0]) curve_zap_unregister(z->domain);
    free(z);
}

int tp_zmq_open(tp_conn_t *c, int listen, int tcp, char *err, size_t errlen) {
    void *ctx = tp_zmq_ctx();
    if (!ctx) return err_set(err, errlen, TERN_EIO, "cannot create a ZeroMQ context: %s", zmq_strerror(zmq_errno()));
    zconn_t *z = calloc(1, sizeof *z);
    if (!z) return err_set(err, errlen, TERN_ENOMEM, "no memory for a connection");
    int rc = 0;
    z->sock = zmq_socket(ctx, listen ? ZMQ_ROUTER : ZMQ_DEALER);
    if (!z->sock) {
        rc = err_set(err, errlen, TERN_EIO, "socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    int orc = base_opts(z->sock, c, tcp);
    if (listen) orc |= setopt_int(z->sock, ZMQ_ROUTER_MANDATORY, 1) | setopt_int(z->sock, ZMQ_ROUTER_HANDOVER, 1);
    else orc |= setopt_int(z->sock, ZMQ_IMMEDIATE, 1);
    if (!listen && c->name[0]) orc |= zmq_setsockopt(z->sock, ZMQ_ROUTING_ID, c->name, strlen(c->name));
    if (orc) {
        rc = err_set(err, errlen, TERN_EINVAL, "%s: socket options: %s", c->endpoint, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (c->has_curve && (rc = curve_opts(z, c, listen, err, errlen))) goto fail;
    if ((listen ? zmq_bind(z->sock, c->endpoint) : zmq_connect(z->sock, c->endpoint)) != 0) {
        rc = err_set(err, errlen, TERN_EIO, "%s %s: %s", listen ? "bind" : "connect", c->endpoint,
                     zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (listen) {
        size_t n = sizeof c->endpoint;
        if (zmq_getsockopt(z->sock, ZMQ_LAST_ENDPOINT, c->endpoint, &n) != 0) c->endpoint[0] = 0;
    }
    c->impl = z;
    return 0;
fail:
    zconn_free(z);
    return rc;
}

static int zmq_open_tcp(tp_conn_t *c, int listen, char *err, size_t errlen) {
    return tp_zmq_open(c, listen, !strncmp(c->endpoint, "tcp://", 6), err, errlen);
}

/* Maps a failed zmq_send to a tern error naming the peer. */
static int send_fail(tp_conn_t *c, zconn_t *z, const char *peer, char *err, size_t errlen) {
    int e = zmq_errno();
    if (e == EHOSTUNREACH)
        return err_set(err, errlen, TERN_EPEER, "peer %s is not connected to %s", peer, c->endpoint);
    if (e == EAGAIN) {
        mon_drain(z);
        const char *at = strcmp(peer, c->endpoint) ? c->endpoint : "";
        if (z->auth_failed)
            return err_set(err, errlen, TERN_EAUTH, "peer %s%s%s%s refused our CURVE key (not in its allowed keys)",
                           peer, *at ? " (" : "", at, *at ? ")" : "");
        return err_set(err, errlen, TERN_ETIMEOUT, "no link to peer %s%s%s%s within %d ms, or its queue is full",
                       peer, *at ? " (" : "", at, *at ? ")" : "", c->send_timeout_ms);
    }
    return err_set(err, errlen, e == ETERM ? TERN_ECANCEL : TERN_EIO, "send to peer %s: %s", peer, zmq_strerror(e));
}

int tp_zmq_send(tp_conn_t *c, const tp_peer_t *to, const void *hdr, size_t hdr_bytes, const void *tensor,
                size_t tensor_bytes, char *err, size_t errlen) {
    zconn_t *z = c->impl;
    const char *peer = to ? to->name : c->peer.name;
    if (to && zmq_send(z->sock, to->id, to->id_len, ZMQ_SNDMORE) < 0) return send_fail(c, z, peer, err, errlen);
    if (zmq_send(z->sock, hdr, hdr_bytes, tensor_bytes ? ZMQ_SNDMORE : 0) < 0) {
        if (to && zmq_errno() == EAGAIN)   /* routing id went out: the router has dropped the rest */
            return err_set(err, errlen, TERN_ETIMEOUT, "queue to peer %s is full", peer);
        return send_fail(c, z, peer, err, errlen);
    }
    if (tensor_bytes && zmq_send(z->sock, tensor, tensor_bytes, 0) < 0) return send_fail(c, z, peer, err, errlen);
    return 0;
}

/* Printable name of a routing id: the bytes when printable, else hex. */
static void peer_from_id(tp_peer_t *p, const void *id, size_t n) {
    const uint8_t *b = id;
    int printable = n > 0;
    p->id_len = n < sizeof p->id ? n : sizeof p->id;
    memcpy(p->id, id, p->id_len);
    for (size_t i = 0; i < n; i++) printable &= b[i] > ' ' && b[i] <= '~';
    if (printable) {
        snprintf(p->name, sizeof p->name, "%.*s", (int)p->id_len, (const char *)p->id);
        return;
    }
    char *o = p->name;
    o += sprintf(o, "0x");
    for (size_t i = 0; i < p->id_len && i < TP_NAME_MAX - 2; i++) o += sprintf(o, "%02x", b[i]);
}

int tp_zmq_recv(tp_conn_t *c, tp_msg_t *out, int timeout_ms, char *err, size_t errlen) {
    zconn_t *z = c->impl;
    zmq_pollitem_t it = {z->sock, 0, ZMQ_POLLIN, 0};
    int prc = zmq_poll(&it, 1, timeout_ms);
    if (prc < 0)
        return zmq_errno() == ETERM ? err_set(err, errlen, TERN_ECANCEL, "transport shut down")
               : zmq_errno() == EINTR ? err_set(err, errlen, TERN_ETIMEOUT, "interrupted")
                                      : err_set(err, errlen, TERN_EIO, "poll: %s", zmq_strerror(zmq_errno()));
    if (prc == 0) return err_set(err, errlen, TERN_ETIMEOUT, "nothing from %s within %d ms", c->listening ? c->endpoint : c->peer.name, timeout_ms);
    /* a multipart message arrives whole: read every part, keep the first few */
    zmq_msg_t f[ZC_MAX_FRAMES];
    int nf = 0, more = 1;
    while (more) {
        zmq_msg_t tmp;
        zmq_msg_init(&tmp);
        if (zmq_msg_recv(&tmp, z->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&tmp);
            break;
        }
        more = zmq_msg_more(&tmp);
        if (nf < ZC_MAX_FRAMES) f[nf++] = tmp;
        else zmq_msg_close(&tmp);
    }
    int first = 0, rc;
    if (c->listening) {
        if (nf < 1) return err_set(err, errlen, TERN_EIO, "receive on %s failed", c->endpoint);
        peer_from_id(&out->from, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]));
        first = 1;
    }
    tp_iov_t iov[ZC_MAX_FRAMES];
    int ni = 0;
    for (int i = first; i < nf; i++) iov[ni++] = (tp_iov_t){zmq_msg_data(&f[i]), zmq_msg_size(&f[i])};
    rc = tp_frames_decode(out, iov, ni, out->from.name, c->max_frame, err, errlen);
    for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
    return rc;
}

int tp_zmq_poll(tp_conn_t *const *conns, int n, int timeout_ms, int *ready, char *err, size_t errlen) {
    zmq_pollitem_t it[TP_MAX_POLL];
    for (int i = 0; i < n; i++) it[i] = (zmq_pollitem_t){((zconn_t *)conns[i]->impl)->sock, 0, ZMQ_POLLIN, 0};
    int rc = zmq_poll(it, n, timeout_ms);
    if (rc < 0) {
        if (zmq_errno() != EINTR) return err_set(err, errlen, TERN_EIO, "poll: %s", zmq_strerror(zmq_errno()));
        rc = 0;
    }
    for (int i = 0; i < n; i++) ready[i] = rc > 0 && (it[i].revents & ZMQ_POLLIN);
    return rc;
}

void tp_zmq_close(tp_conn_t *c) {
    zconn_free(c->impl);
    c->impl = NULL;
    /* libzmq leaves a bound ipc:// socket file behind; "ipc://@name" is abstract (no file) */
    if (c->listening && !strncmp(c->endpoint, "ipc://", 6) && c->endpoint[6] && c->endpoint[6] != '@')
        unlink(c->endpoint + 6);
}

const tp_ops_t tp_zmq_ops = {"zmq", zmq_open_tcp, tp_zmq_send, tp_zmq_recv, tp_zmq_poll, tp_zmq_close};
