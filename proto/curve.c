/* curve: CURVE key files and the ZAP handler (RFC 27) that checks client keys per listening
 * socket. One handler thread per process (ZeroMQ allows one per context), bound to
 * inproc://zeromq.zap.01 on the shared context; each CURVE listener gets its own domain with
 * its own allowed keys. Not here: the sockets' CURVE options (zmq.c). */
#define _GNU_SOURCE
#include "proto/curve.h"
#include "core/err.h"
#include "core/log.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

/* ---- keys ------------------------------------------------------------------------------ */

int curve_keypair(char pub[TP_KEY_Z85], char sec[TP_KEY_Z85], char *err, size_t errlen) {
    if (!zmq_has("curve") || zmq_curve_keypair(pub, sec) != 0)
        return err_set(err, errlen, TERN_ENOTSUP, "this libzmq has no CURVE support");
    return 0;
}

static int write_file(const char *path, const char *text, mode_t mode, int force, char *err, size_t errlen) {
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), mode);
    if (fd < 0)
        return err_set(err, errlen, errno == EEXIST ? TERN_EINVAL : TERN_EIO, "%s: %s%s", path, strerror(errno),
                       errno == EEXIST ? " (use --force to replace it)" : "");
    size_t n = strlen(text);
    int ok = fchmod(fd, mode) == 0 && write(fd, text, n) == (ssize_t)n;
    ok = (close(fd) == 0) && ok;
    return ok ? 0 : err_set(err, errlen, TERN_EIO, "%s: write failed: %s", path, strerror(errno));
}

int curve_write_keypair(const char *prefix, int force, char pub[TP_KEY_Z85], char *err, size_t errlen) {
    char sec[TP_KEY_Z85], path[4096], text[256];
    int rc = curve_keypair(pub, sec, err, errlen);
    if (rc) return rc;
    if (snprintf(path, sizeof path, "%s.key", prefix) >= (int)sizeof path)
        return err_set(err, errlen, TERN_EINVAL, "key path too long");
    snprintf(text, sizeof text, "# tern CURVE secret key: keep private\n%s\n", sec);
    if ((rc = write_file(path, text, 0600, force, err, errlen))) return rc;
    snprintf(path, sizeof path, "%s.pub", prefix);
    snprintf(text, sizeof text, "# tern CURVE public key\n%s\n", pub);
    return write_file(path, text, 0644, force, err, errlen);
}

int curve_read_key(const char *path, char key[TP_KEY_Z85], char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) return err_set(err, errlen, TERN_ENOTFOUND, "%s: %s", path, strerror(errno));
    struct stat st;
    size_t pl = strlen(path);
    if (pl > 4 && !strcmp(path + pl - 4, ".key") && fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        log_w("%s: secret key file is readable by others (chmod 600 it)", path);
    char line[512];
    int rc = err_set(err, errlen, TERN_EFORMAT, "%s: no key in the file", path);
    while (fgets(line, sizeof line, f)) {
        size_t n = strcspn(line, "\r\n");
        line[n] = 0;
        while (n && (line[n - 1] == ' ' || line[n - 1] == '\t')) line[--n] = 0;
        if (!n || line[0] == '#') continue;
        uint8_t bin[32];
        if (n != 40 || !zmq_z85_decode(bin, line))
            rc = err_set(err, errlen, TERN_EFORMAT, "%s: not a 40-character Z85 CURVE key", path);
        else {
            memcpy(key, line, TP_KEY_Z85);
            rc = 0;
        }
        break;
    }
    fclose(f);
    return rc;
}

int curve_load_identity(const char *prefix, tp_curve_t *cv, char *err, size_t errlen) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s.key", prefix) >= (int)sizeof path)
        return err_set(err, errlen, TERN_EINVAL, "key path too long");
    int rc = curve_read_key(path, cv->secret_key, err, errlen);
    if (rc) return rc;
    if (zmq_curve_public(cv->public_key, cv->secret_key) != 0)
        return err_set(err, errlen, TERN_ENOTSUP, "this libzmq has no CURVE support");
    return 0;
}

int curve_read_dir(const char *dir, char (**keys)[TP_KEY_Z85], int *n, char *err, size_t errlen) {
    *keys = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return err_set(err, errlen, TERN_ENOTFOUND, "%s: %s", dir, strerror(errno));
    int rc = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) && !rc) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".pub")) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            void *nk = realloc(*keys, (size_t)cap * TP_KEY_Z85);
            if (!nk) {
                rc = err_set(err, errlen, TERN_ENOMEM, "no memory for keys");
                break;
            }
            *keys = nk;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (!(rc = curve_read_key(path, (*keys)[*n], err, errlen))) (*n)++;
    }
    closedir(d);
    if (rc) {
        free(*keys);
        *keys = NULL;
        *n = 0;
    }
    return rc;
}

/* ---- ZAP handler ----------------------------------------------------------------------- */

typedef struct zap_domain {
    char name[32];
    int allow_any;
    int n;
    char (*keys)[TP_KEY_Z85];
} zap_domain_t;

#define ZAP_MAX_DOMAINS 256
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static zap_domain_t g_dom[ZAP_MAX_DOMAINS];
static int g_ndom;
static unsigned g_next_id;
static pthread_t g_thr;
static int g_running;
static void *g_sock;
static atomic_int g_stop;

/* 1 when `key` (Z85) may use `domain`; unknown domains are refused. */
static int zap_allowed(const char *domain, const char *key) {
    int ok = 0;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_ndom; i++) {
        if (strcmp(g_dom[i].name, domain)) continue;
        ok = g_dom[i].allow_any;
        for (int k = 0; k < g_dom[i].n && !ok; k++) ok = !strcmp(g_dom[i].keys[k], key);
        break;
    }
    pthread_mutex_unlock(&g_mu);
    return ok;
}

static void frame_str(zmq_msg_t *m, char *out, size_t cap) {
    size_t n = zmq_msg_size(m) < cap - 1 ? zmq_msg_size(m) : cap - 1;
    memcpy(out, zmq_msg_data(m), n);
    out[n] = 0;
}

/* One request: version, request id, domain, address, routing id, mechanism, credentials. */
static void zap_serve_one(void *s) {
    zmq_msg_t f[8];
    int nf = 0, more = 1;
    while (more) {
        zmq_msg_t tmp;
        zmq_msg_init(&tmp);
        if (zmq_msg_recv(&tmp, s, 0) < 0) {
            zmq_msg_close(&tmp);
            break;
        }
        more = zmq_msg_more(&tmp);
        if (nf < 8) f[nf++] = tmp;
        else zmq_msg_close(&tmp);
    }
    /* "?" only marks a missing key in the log: '?' is a Z85 character, so a real key may start with it */
    char domain[64] = "", addr[64] = "", mech[16] = "", key[TP_KEY_Z85] = "?";
    int has_key = 0;
    if (nf >= 6) {
        frame_str(&f[2], domain, sizeof domain);
        frame_str(&f[3], addr, sizeof addr);
        frame_str(&f[5], mech, sizeof mech);
    }
    if (nf >= 7 && zmq_msg_size(&f[6]) == 32) has_key = zmq_z85_encode(key, zmq_msg_data(&f[6]), 32) != NULL;
    int ok = nf == 7 && !strcmp(mech, "CURVE") && has_key && zap_allowed(domain, key);
    if (!ok) log_w("curve: refused client key %s from %s (not in the allowed keys)", key, addr);
    else log_d("curve: client key %s from %s let in", key, addr);
    /* reply: version, request id, status code, status text, user id, metadata */
    zmq_send(s, "1.0", 3, ZMQ_SNDMORE);
    if (nf >= 2) zmq_send(s, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
    else zmq_send(s, "", 0, ZMQ_SNDMORE);
    zmq_send(s, ok ? "200" : "400", 3, ZMQ_SNDMORE);
    zmq_send(s, ok ? "OK" : "key not allowed", ok ? 2 : 15, ZMQ_SNDMORE);
    zmq_send(s, ok ? key : "", ok ? 40 : 0, ZMQ_SNDMORE);
    zmq_send(s, "", 0, 0);
    for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
}

static void *zap_main(void *arg) {
    void *s = arg;
    while (!atomic_load(&g_stop)) {
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, 100);
        if (rc > 0) zap_serve_one(s);
        else if (rc < 0 && zmq_errno() != EINTR) break;
    }
    zmq_close(s);
    return NULL;
}

/* Binds the ZAP socket here (so a failure is reported to the caller), then hands it to the
 * thread. Caller holds g_mu. */
static int zap_start(char *err, size_t errlen) {
    void *ctx = tp_zmq_ctx();
    if (!ctx) return err_set(err, errlen, TERN_EIO, "no ZeroMQ context");
    void *s = zmq_socket(ctx, ZMQ_REP);
    int linger = 0;
    if (!s) return err_set(err, errlen, TERN_EIO, "ZAP socket: %s", zmq_strerror(zmq_errno()));
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(s, "inproc://zeromq.zap.01") != 0) {
        int e = zmq_errno();
        zmq_close(s);
        return err_set(err, errlen, TERN_EIO, "ZAP handler bind: %s (another handler in this process?)",
                       zmq_strerror(e));
    }
    atomic_store(&g_stop, 0);
    if (pthread_create(&g_thr, NULL, zap_main, s) != 0) {
        zmq_close(s);
        return err_set(err, errlen, TERN_EIO, "ZAP handler thread: %s", strerror(errno));
    }
    g_sock = s;
    g_running = 1;
    return 0;
}

int curve_zap_register(const tp_curve_t *cv, char domain[32], char *err, size_t errlen) {
    int rc = 0;
    pthread_mutex_lock(&g_mu);
    if (!g_running && (rc = zap_start(err, errlen))) goto out;
    if (g_ndom == ZAP_MAX_DOMAINS) {
        rc = err_set(err, errlen, TERN_ENOMEM, "more than %d CURVE listeners", ZAP_MAX_DOMAINS);
        goto out;
    }
    zap_domain_t *d = &g_dom[g_ndom];
    memset(d, 0, sizeof *d);
    if (cv->n_allowed > 0) {
        d->keys = malloc((size_t)cv->n_allowed * TP_KEY_Z85);
        if (!d->keys) {
            rc = err_set(err, errlen, TERN_ENOMEM, "no memory for CURVE keys");
            goto out;
        }
        memcpy(d->keys, cv->allowed, (size_t)cv->n_allowed * TP_KEY_Z85);
        d->n = cv->n_allowed;
    }
    d->allow_any = cv->allow_any;
    snprintf(d->name, sizeof d->name, "tern.%u", g_next_id++);
    snprintf(domain, 32, "%s", d->name);
    g_ndom++;
out:
    pthread_mutex_unlock(&g_mu);
    return rc;
}

void curve_zap_unregister(const char *domain) {
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_ndom; i++) {
        if (strcmp(g_dom[i].name, domain)) continue;
        free(g_dom[i].keys);
        g_dom[i] = g_dom[--g_ndom];
        break;
    }
    pthread_mutex_unlock(&g_mu);
}

void curve_zap_stop(void) {
    pthread_mutex_lock(&g_mu);
    int running = g_running;
    g_running = 0;
    pthread_mutex_unlock(&g_mu);
    if (!running) return;
    atomic_store(&g_stop, 1);
    pthread_join(g_thr, NULL);
    g_sock = NULL;
}
