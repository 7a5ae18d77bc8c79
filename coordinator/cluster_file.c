/* cluster_file: YAML cluster description → cluster_t, strictly validated.
 * libyaml events are first built into a small tree (scalars keep their line and whether they
 * were quoted), refusing anchors, aliases, tags, complex keys and deep nesting, so nothing can
 * expand; the tree is then walked against the schema. Does not touch the network or keys. */
#include "coordinator/cluster_file.h"
#include "core/err.h"
#include "core/opt.h"
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define MAX_DEPTH 16        /* the schema needs 4; anything deeper is refused */
#define MAX_NODES 100000    /* bounds the tree for hostile input */
#define MAX_STR 4096

enum { YN_SCALAR, YN_SEQ, YN_MAP };

typedef struct ynode {
    int kind;
    int line;               /* 1-based */
    int plain;              /* scalar written without quotes */
    char *s;                /* scalar bytes, NUL-terminated (may contain NULs: len tells) */
    size_t len;
    struct ynode **kids;    /* seq: items; map: key, value, key, value, ... */
    int n, cap;
} ynode_t;

typedef struct ctx {
    const char *name;
    char *err;
    size_t errlen;
    int nodes;
} ctx_t;

/* control characters in err (from quoted user text) become '?', so a message stays one line */
static int one_line(char *err, int code) {
    for (char *c = err; c && *c; c++)
        if ((unsigned char)*c < 32 || *c == 127) *c = '?';
    return code;
}

/* "name:line: key: message" (key may be NULL or ""); returns TERN_EFORMAT */
static int ferr(ctx_t *x, int line, const char *key, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int ferr(ctx_t *x, int line, const char *key, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (key && *key) err_set(x->err, x->errlen, TERN_EFORMAT, "%s:%d: %s: %s", x->name, line, key, msg);
    else err_set(x->err, x->errlen, TERN_EFORMAT, "%s:%d: %s", x->name, line, msg);
    return one_line(x->err, TERN_EFORMAT);
}

static void ynode_free(ynode_t *n) {
    if (!n) return;
    for (int i = 0; i < n->n; i++) ynode_free(n->kids[i]);
    free(n->kids);
    free(n->s);
    free(n);
}

static int ynode_push(ynode_t *p, ynode_t *kid) {
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 8;
        ynode_t **k = realloc(p->kids, (size_t)cap * sizeof *k);
        if (!k) return TERN_ENOMEM;
        p->kids = k;
        p->cap = cap;
    }
    p->kids[p->n++] = kid;
    return 0;
}

/* ---- events → tree ------------------------------------------------------------------- */

static int next_event(ctx_t *x, yaml_parser_t *p, yaml_event_t *ev) {
    if (yaml_parser_parse(p, ev)) return 0;
    if (p->error == YAML_MEMORY_ERROR) return err_set(x->err, x->errlen, TERN_ENOMEM, "%s: out of memory", x->name);
    int line = (int)p->problem_mark.line + 1;
    if (p->context)
        return ferr(x, line, NULL, "YAML syntax error: %s (%s started at line %d)", p->problem ? p->problem : "?",
                    p->context, (int)p->context_mark.line + 1);
    return ferr(x, line, NULL, "YAML syntax error: %s", p->problem ? p->problem : "?");
}

/* refuses what could make the tree bigger than the text or change a value's meaning */
static int check_props(ctx_t *x, int line, const yaml_char_t *anchor, const yaml_char_t *tag) {
    if (anchor) return ferr(x, line, NULL, "anchors (&%.40s) and aliases are not supported", (const char *)anchor);
    if (tag) return ferr(x, line, NULL, "tags (%.40s) are not supported", (const char *)tag);
    return 0;
}

static int build(ctx_t *x, yaml_parser_t *p, yaml_event_t *ev, int depth, ynode_t **out);

/* reads children until the matching end event */
static int build_children(ctx_t *x, yaml_parser_t *p, ynode_t *n, yaml_event_type_t end, int depth) {
    for (;;) {
        yaml_event_t ev;
        int rc = next_event(x, p, &ev);
        if (rc) return rc;
        if (ev.type == end) {
            yaml_event_delete(&ev);
            return 0;
        }
        ynode_t *kid = NULL;
        rc = build(x, p, &ev, depth + 1, &kid);
        yaml_event_delete(&ev);
        if (rc) return rc;
        if (n->kind == YN_MAP && (n->n % 2) == 0 && kid->kind != YN_SCALAR) {
            int line = kid->line;
            ynode_free(kid);
            return ferr(x, line, NULL, "mapping keys must be plain words");
        }
        if ((rc = ynode_push(n, kid)) < 0) {
            ynode_free(kid);
            return err_set(x->err, x->errlen, rc, "%s: out of memory", x->name);
        }
    }
}

/* builds the node that starts with *ev (the caller deletes *ev) */
static int build(ctx_t *x, yaml_parser_t *p, yaml_event_t *ev, int depth, ynode_t **out) {
    int line = (int)ev->start_mark.line + 1, rc = 0;
    if (ev->type == YAML_ALIAS_EVENT) return ferr(x, line, NULL, "anchors and aliases (*%.40s) are not supported", (const char *)ev->data.alias.anchor);
    if (depth > MAX_DEPTH) return ferr(x, line, NULL, "nesting deeper than %d levels", MAX_DEPTH);
    if (++x->nodes > MAX_NODES) return ferr(x, line, NULL, "more than %d values", MAX_NODES);
    ynode_t *n = calloc(1, sizeof *n);
    if (!n) return err_set(x->err, x->errlen, TERN_ENOMEM, "%s: out of memory", x->name);
    n->line = line;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        rc = check_props(x, line, ev->data.scalar.anchor, ev->data.scalar.tag);
        if (rc) break;
        n->kind = YN_SCALAR;
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        n->len = ev->data.scalar.length;
        n->s = malloc(n->len + 1);
        if (!n->s) { rc = err_set(x->err, x->errlen, TERN_ENOMEM, "%s: out of memory", x->name); break; }
        memcpy(n->s, ev->data.scalar.value, n->len);
        n->s[n->len] = 0;
        break;
    case YAML_SEQUENCE_START_EVENT:
        rc = check_props(x, line, ev->data.sequence_start.anchor, ev->data.sequence_start.tag);
        n->kind = YN_SEQ;
        if (!rc) rc = build_children(x, p, n, YAML_SEQUENCE_END_EVENT, depth);
        break;
    case YAML_MAPPING_START_EVENT:
        rc = check_props(x, line, ev->data.mapping_start.anchor, ev->data.mapping_start.tag);
        n->kind = YN_MAP;
        if (!rc) rc = build_children(x, p, n, YAML_MAPPING_END_EVENT, depth);
        break;
    default:
        rc = ferr(x, line, NULL, "unexpected YAML event %d", (int)ev->type);
    }
    if (rc) {
        ynode_free(n);
        return rc;
    }
    *out = n;
    return 0;
}

/* expects exactly one event of type t; anything else is described by what */
static int expect(ctx_t *x, yaml_parser_t *p, yaml_event_type_t t, const char *what) {
    yaml_event_t ev;
    int rc = next_event(x, p, &ev);
    if (rc) return rc;
    int got = ev.type, line = (int)ev.start_mark.line + 1;
    yaml_event_delete(&ev);
    if (got == (int)t) return 0;
    if (got == YAML_STREAM_END_EVENT) return ferr(x, line, NULL, "the file is empty: expected a mapping with a workers list");
    if (got == YAML_DOCUMENT_START_EVENT) return ferr(x, line, NULL, "multiple YAML documents are not supported");
    return ferr(x, line, NULL, "%s", what);
}

/* parses the one document of buf into a tree */
static int load_tree(ctx_t *x, const char *buf, size_t len, ynode_t **root) {
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) return err_set(x->err, x->errlen, TERN_ENOMEM, "%s: out of memory", x->name);
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    yaml_event_t ev;
    int rc = expect(x, &p, YAML_STREAM_START_EVENT, "expected the start of the YAML stream");
    if (!rc) rc = expect(x, &p, YAML_DOCUMENT_START_EVENT, "expected a YAML document");
    if (!rc && !(rc = next_event(x, &p, &ev))) {
        rc = build(x, &p, &ev, 0, root);
        yaml_event_delete(&ev);
    }
    if (!rc) rc = expect(x, &p, YAML_DOCUMENT_END_EVENT, "expected the end of the document");
    if (!rc) rc = expect(x, &p, YAML_STREAM_END_EVENT, "multiple YAML documents are not supported");
    yaml_parser_delete(&p);
    if (rc) {
        ynode_free(*root);
        *root = NULL;
    }
    return rc;
}

/* ---- typed values ---------------------------------------------------------------------- */

static int is_null(const ynode_t *n) {
    return n->kind == YN_SCALAR && n->plain &&
           (n->len == 0 || !strcmp(n->s, "~") || !strcasecmp(n->s, "null"));
}

/* scalar bytes made printable and cut to fit cap (with "..." when cut) */
static char *printable(const ynode_t *n, char *buf, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n->len && o + 4 < cap; i++) {
        unsigned char ch = (unsigned char)n->s[i];
        buf[o++] = (ch >= 32 && ch < 127) ? (char)ch : '?';
    }
    if (o < n->len) { buf[o++] = '.'; buf[o++] = '.'; buf[o++] = '.'; }
    buf[o] = 0;
    return buf;
}

/* a short rendering of a node for messages: 'text', a mapping, a list, nothing */
static const char *show(const ynode_t *n, char *buf, size_t cap) {
    if (n->kind == YN_MAP) return "a mapping";
    if (n->kind == YN_SEQ) return "a list";
    if (is_null(n)) return "nothing";
    buf[0] = '\'';
    printable(n, buf + 1, cap - 2);
    strcat(buf, "'");
    return buf;
}

static int want_str(ctx_t *x, const ynode_t *n, const char *key, char **out) {
    char b[64];
    if (n->kind != YN_SCALAR || is_null(n)) return ferr(x, n->line, key, "expected a string, got %s", show(n, b, sizeof b));
    if (n->len == 0) return ferr(x, n->line, key, "must not be empty");
    if (strlen(n->s) != n->len) return ferr(x, n->line, key, "must not contain a NUL byte");
    if (n->len > MAX_STR) return ferr(x, n->line, key, "longer than %d bytes", MAX_STR);
    for (size_t i = 0; i < n->len; i++)
        if ((unsigned char)n->s[i] < 32 || n->s[i] == 127) return ferr(x, n->line, key, "must not contain control characters");
    char *s = strdup(n->s);
    if (!s) return err_set(x->err, x->errlen, TERN_ENOMEM, "%s: out of memory", x->name);
    free(*out);
    *out = s;
    return 0;
}

static int want_int(ctx_t *x, const ynode_t *n, const char *key, long lo, long hi, int *out) {
    char b[64];
    const char *s = n->s;
    if (n->kind != YN_SCALAR || !n->plain || is_null(n)) goto bad;
    size_t i = (s[0] == '+' || s[0] == '-') ? 1 : 0;
    if (i == n->len) goto bad;
    for (size_t j = i; j < n->len; j++)
        if (s[j] < '0' || s[j] > '9') goto bad;
    errno = 0;
    long v = strtol(s, NULL, 10);
    if (errno || v < lo || v > hi) return ferr(x, n->line, key, "must be between %ld and %ld, got %s", lo, hi, show(n, b, sizeof b));
    *out = (int)v;
    return 0;
bad:
    return ferr(x, n->line, key, "expected an integer, got %s", show(n, b, sizeof b));
}

static int want_bool(ctx_t *x, const ynode_t *n, const char *key, int *out) {
    char b[64];
    if (n->kind == YN_SCALAR && n->plain && !strcasecmp(n->s, "true")) { *out = 1; return 0; }
    if (n->kind == YN_SCALAR && n->plain && !strcasecmp(n->s, "false")) { *out = 0; return 0; }
    return ferr(x, n->line, key, "expected true or false, got %s", show(n, b, sizeof b));
}

static int want_size(ctx_t *x, const ynode_t *n, const char *key, uint64_t *out) {
    char b[64];
    unsigned long long v;
    if (n->kind != YN_SCALAR || is_null(n) || strlen(n->s) != n->len || opt_parse_size(n->s, &v) < 0)
        return ferr(x, n->line, key, "expected a size like 12GiB, got %s", show(n, b, sizeof b));
    if (v < CLUSTER_MIN_MEMORY || v > CLUSTER_MAX_MEMORY)
        return ferr(x, n->line, key, "must be between 1MiB and 1PiB, got %s", show(n, b, sizeof b));
    *out = v;
    return 0;
}

/* ---- endpoints ---------------------------------------------------------------------------- */

/* "host:port" with host non-empty (maybe "[v6]") and port 1..65535 */
static int check_hostport(const char *hp, char *err, size_t errlen) {
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp) return err_set(err, errlen, TERN_EINVAL, "expected host:port, got '%.80s'", hp);
    if (hp[0] == '[' && colon[-1] != ']') return err_set(err, errlen, TERN_EINVAL, "bad IPv6 address in '%.80s'", hp);
    for (const char *c = hp; c < colon; c++)
        if (*c <= ' ' || *c == '/' || (unsigned char)*c >= 127)
            return err_set(err, errlen, TERN_EINVAL, "bad host in '%.80s'", hp);
    const char *ps = colon + 1;
    long port = 0;
    if (!*ps || strlen(ps) > 5) return err_set(err, errlen, TERN_EINVAL, "bad port in '%.80s'", hp);
    for (const char *c = ps; *c; c++) {
        if (*c < '0' || *c > '9') return err_set(err, errlen, TERN_EINVAL, "bad port in '%.80s'", hp);
        port = port * 10 + (*c - '0');
    }
    if (port < 1 || port > 65535) return err_set(err, errlen, TERN_EINVAL, "port must be 1..65535 in '%.80s'", hp);
    return 0;
}

int cluster_check_endpoint(const char *ep, char *err, size_t errlen) {
    if (strlen(ep) > 255) return err_set(err, errlen, TERN_EINVAL, "endpoint longer than 255 bytes");
    for (const char *c = ep; *c; c++)
        if ((unsigned char)*c < 32 || *c == 127) return err_set(err, errlen, TERN_EINVAL, "control characters in endpoint");
    if (!strncmp(ep, "tcp://", 6)) return check_hostport(ep + 6, err, errlen);
    if (!strncmp(ep, "ipc://", 6)) {
        if (!ep[6]) return err_set(err, errlen, TERN_EINVAL, "ipc:// needs a path");
        return 0;
    }
    return err_set(err, errlen, TERN_EINVAL, "expected tcp://host:port or ipc://path, got '%.80s'", ep);
}

/* endpoint a coordinator connects to: checked, and not a wildcard */
static int check_worker_endpoint(const char *ep, char *err, size_t errlen) {
    int rc = cluster_check_endpoint(ep, err, errlen);
    if (rc) return rc;
    if (!strncmp(ep, "tcp://*:", 8)) return err_set(err, errlen, TERN_EINVAL, "cannot connect to '*'; give the worker's address");
    return 0;
}

/* ---- schema --------------------------------------------------------------------------------- */

/* Matches the keys of mapping n against keys[0..nk): vals[i] gets the value node of keys[i]
 * or NULL. Unknown and duplicate keys are errors. path names n ("" for the top level). */
static int map_fields(ctx_t *x, const ynode_t *n, const char *path, const char *const *keys, int nk,
                      const ynode_t **vals, int *klines) {
    char b[64], kp[160];
    if (n->kind != YN_MAP)
        return ferr(x, n->line, path, "expected a mapping, got %s", show(n, b, sizeof b));
    for (int i = 0; i < nk; i++) vals[i] = NULL;
    for (int i = 0; i + 1 < n->n; i += 2) {
        const ynode_t *k = n->kids[i];
        int j = 0;
        while (j < nk && !(strlen(keys[j]) == k->len && !memcmp(keys[j], k->s, k->len))) j++;
        if (j == nk) {
            char list[256] = "";
            for (int q = 0; q < nk; q++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", q ? ", " : "", keys[q]);
            snprintf(kp, sizeof kp, "%s%s%s", path, *path ? "." : "", k->len ? printable(k, b, sizeof b) : "(empty)");
            return ferr(x, k->line, kp, "unknown key (expected one of: %s)", list);
        }
        snprintf(kp, sizeof kp, "%s%s%s", path, *path ? "." : "", keys[j]);
        if (vals[j]) return ferr(x, k->line, kp, "duplicate key (first at line %d)", klines[j]);
        vals[j] = n->kids[i + 1];
        klines[j] = k->line;
    }
    return 0;
}

static int parse_layers(ctx_t *x, const ynode_t *n, const char *key, cluster_worker_t *w) {
    char b[64];
    if (n->kind != YN_SEQ || n->n != 2) {
        if (n->kind == YN_SEQ) return ferr(x, n->line, key, "expected [first, last], got a list of %d", n->n);
        return ferr(x, n->line, key, "expected [first, last], got %s", show(n, b, sizeof b));
    }
    int rc = want_int(x, n->kids[0], key, 0, CLUSTER_MAX_LAYER, &w->first);
    if (!rc) rc = want_int(x, n->kids[1], key, 0, CLUSTER_MAX_LAYER, &w->last);
    if (rc) return rc;
    if (w->first > w->last) return ferr(x, n->line, key, "expected [first, last] with first <= last, got [%d, %d]", w->first, w->last);
    w->layers_line = n->line;
    return 0;
}

enum { WK_NAME, WK_ENDPOINT, WK_THREADS, WK_MEMORY, WK_LAYERS, WK_STANDBY, WK_N };
static const char *const worker_keys[WK_N] = {"name", "endpoint", "threads", "memory", "layers", "standby"};

/* one workers[i] entry; elines[0..1] get the lines of name and endpoint (0 when absent) */
static int parse_worker(ctx_t *x, const ynode_t *n, int i, cluster_worker_t *w, int *elines) {
    char path[48], key[80];
    const ynode_t *v[WK_N];
    int kl[WK_N], rc;
    snprintf(path, sizeof path, "workers[%d]", i);
    w->line = n->line;
    w->first = w->last = -1;
    if ((rc = map_fields(x, n, path, worker_keys, WK_N, v, kl))) return rc;
#define KEY(k) (snprintf(key, sizeof key, "%s.%s", path, worker_keys[k]), key)
    if (v[WK_NAME] && (rc = want_str(x, v[WK_NAME], KEY(WK_NAME), &w->name))) return rc;
    if (v[WK_ENDPOINT]) {
        char why[160];
        if ((rc = want_str(x, v[WK_ENDPOINT], KEY(WK_ENDPOINT), &w->endpoint))) return rc;
        if (check_worker_endpoint(w->endpoint, why, sizeof why)) return ferr(x, v[WK_ENDPOINT]->line, key, "%s", why);
    }
    if (v[WK_THREADS] && (rc = want_int(x, v[WK_THREADS], KEY(WK_THREADS), 1, CLUSTER_MAX_THREADS, &w->threads))) return rc;
    if (v[WK_MEMORY]) {
        if ((rc = want_size(x, v[WK_MEMORY], KEY(WK_MEMORY), &w->memory))) return rc;
        w->memory_line = v[WK_MEMORY]->line;
    }
    if (v[WK_LAYERS] && (rc = parse_layers(x, v[WK_LAYERS], KEY(WK_LAYERS), w))) return rc;
    if (v[WK_STANDBY] && (rc = want_bool(x, v[WK_STANDBY], KEY(WK_STANDBY), &w->standby))) return rc;
#undef KEY
    if (w->standby && w->first >= 0)
        return ferr(x, w->layers_line, (snprintf(key, sizeof key, "%s.layers", path), key),
                    "a standby worker cannot pin layers");
    if (!w->name) {
        char nm[16];
        snprintf(nm, sizeof nm, "w%d", i);
        if (!(w->name = strdup(nm))) return err_set(x->err, x->errlen, TERN_ENOMEM, "%s: out of memory", x->name);
    }
    elines[0] = v[WK_NAME] ? v[WK_NAME]->line : w->line;
    elines[1] = v[WK_ENDPOINT] ? v[WK_ENDPOINT]->line : w->line;
    return 0;
}

/* rules between workers: unique names and endpoints, endpoints present, pins disjoint */
static int check_workers(ctx_t *x, const cluster_t *c, const int *elines) {
    char key[64];
    int active = 0;
    for (int j = 0; j < c->n_workers; j++) {
        const cluster_worker_t *w = &c->workers[j];
        active += !w->standby;
        if (!w->endpoint && c->transport == CLUSTER_TRANSPORT_ZMQ)
            return ferr(x, w->line, (snprintf(key, sizeof key, "workers[%d].endpoint", j), key),
                        "missing (every worker needs one with transport zmq)");
        for (int i = 0; i < j; i++) {
            const cluster_worker_t *u = &c->workers[i];
            if (!strcmp(u->name, w->name))
                return ferr(x, elines[2 * j], (snprintf(key, sizeof key, "workers[%d].name", j), key),
                            "'%s' is already used by workers[%d] (line %d)", w->name, i, elines[2 * i]);
            if (w->endpoint && u->endpoint && !strcmp(u->endpoint, w->endpoint))
                return ferr(x, elines[2 * j + 1], (snprintf(key, sizeof key, "workers[%d].endpoint", j), key),
                            "'%s' is already used by workers[%d] '%s' (line %d)", w->endpoint, i, u->name,
                            elines[2 * i + 1]);
            if (w->first >= 0 && u->first >= 0 && w->first <= u->last && u->first <= w->last)
                return ferr(x, w->layers_line, (snprintf(key, sizeof key, "workers[%d].layers", j), key),
                            "[%d, %d] overlaps workers[%d] '%s' [%d, %d] (line %d)", w->first, w->last, i,
                            u->name, u->first, u->last, u->layers_line);
        }
    }
    if (!active) return ferr(x, c->workers[0].line, "workers", "every worker is a standby; at least one must hold layers");
    return 0;
}

static int parse_workers(ctx_t *x, const ynode_t *n, cluster_t *c) {
    char b[64];
    if (n->kind != YN_SEQ) return ferr(x, n->line, "workers", "expected a list of workers, got %s", show(n, b, sizeof b));
    if (n->n == 0) return ferr(x, n->line, "workers", "the list is empty; give at least one worker");
    if (n->n > CLUSTER_MAX_WORKERS) return ferr(x, n->line, "workers", "more than %d workers", CLUSTER_MAX_WORKERS);
    c->workers = calloc((size_t)n->n, sizeof *c->workers);
    int *elines = calloc((size_t)n->n * 2, sizeof *elines);
    int rc = 0;
    if (!c->workers || !elines) rc = err_set(x->err, x->errlen, TERN_ENOMEM, "%s: out of memory", x->name);
    for (int i = 0; !rc && i < n->n; i++) {
        c->n_workers = i + 1;
        rc = parse_worker(x, n->kids[i], i, &c->workers[i], &elines[2 * i]);
    }
    if (!rc) rc = check_workers(x, c, elines);
    free(elines);
    return rc;
}

enum { TK_MODEL, TK_TRANSPORT, TK_COORD, TK_SECURITY, TK_HEARTBEAT, TK_WORKERS, TK_N };
static const char *const top_keys[TK_N] = {"model", "transport", "coordinator", "security", "heartbeat", "workers"};

static int parse_coordinator(ctx_t *x, const ynode_t *n, cluster_t *c) {
    static const char *const keys[] = {"listen", "http"};
    const ynode_t *v[2];
    int kl[2], rc;
    char why[160];
    if ((rc = map_fields(x, n, "coordinator", keys, 2, v, kl))) return rc;
    if (v[0]) {
        if ((rc = want_str(x, v[0], "coordinator.listen", &c->listen))) return rc;
        if (cluster_check_endpoint(c->listen, why, sizeof why)) return ferr(x, v[0]->line, "coordinator.listen", "%s", why);
    }
    if (v[1]) {
        if ((rc = want_str(x, v[1], "coordinator.http", &c->http))) return rc;
        if (check_hostport(c->http, why, sizeof why)) return ferr(x, v[1]->line, "coordinator.http", "%s", why);
    }
    return 0;
}

static int parse_security(ctx_t *x, const ynode_t *n, cluster_t *c) {
    static const char *const keys[] = {"curve", "keys"};
    const ynode_t *v[2];
    int kl[2], rc;
    if ((rc = map_fields(x, n, "security", keys, 2, v, kl))) return rc;
    if (v[0] && (rc = want_bool(x, v[0], "security.curve", &c->curve))) return rc;
    if (v[1] && (rc = want_str(x, v[1], "security.keys", &c->keys))) return rc;
    if (c->curve && !c->keys) return ferr(x, n->line, "security.keys", "missing: curve: true needs a keys directory (tern keygen)");
    return 0;
}

static int parse_heartbeat(ctx_t *x, const ynode_t *n, cluster_t *c) {
    static const char *const keys[] = {"interval_ms", "timeout_ms"};
    const ynode_t *v[2];
    int kl[2], rc;
    if ((rc = map_fields(x, n, "heartbeat", keys, 2, v, kl))) return rc;
    if (v[0] && (rc = want_int(x, v[0], "heartbeat.interval_ms", 10, 60000, &c->heartbeat_interval_ms))) return rc;
    if (v[1] && (rc = want_int(x, v[1], "heartbeat.timeout_ms", 20, 600000, &c->heartbeat_timeout_ms))) return rc;
    if (c->heartbeat_timeout_ms <= c->heartbeat_interval_ms)
        return ferr(x, v[1] ? v[1]->line : v[0]->line, v[1] ? "heartbeat.timeout_ms" : "heartbeat.interval_ms",
                    "timeout_ms (%d) must be greater than interval_ms (%d)", c->heartbeat_timeout_ms,
                    c->heartbeat_interval_ms);
    return 0;
}

static int parse_top(ctx_t *x, const ynode_t *root, cluster_t *c) {
    char b[64];
    const ynode_t *v[TK_N];
    int kl[TK_N], rc;
    if (root->kind != YN_MAP)
        return ferr(x, root->line, NULL, "expected a mapping at the top level (model, workers, ...), got %s",
                    show(root, b, sizeof b));
    if ((rc = map_fields(x, root, "", top_keys, TK_N, v, kl))) return rc;
    if (v[TK_MODEL] && (rc = want_str(x, v[TK_MODEL], "model", &c->model))) return rc;
    if (v[TK_TRANSPORT]) {
        const ynode_t *t = v[TK_TRANSPORT];
        if (t->kind == YN_SCALAR && !strcmp(t->s, "zmq")) c->transport = CLUSTER_TRANSPORT_ZMQ;
        else if (t->kind == YN_SCALAR && !strcmp(t->s, "mpi")) c->transport = CLUSTER_TRANSPORT_MPI;
        else return ferr(x, t->line, "transport", "expected zmq or mpi, got %s", show(t, b, sizeof b));
    }
    if (v[TK_COORD] && (rc = parse_coordinator(x, v[TK_COORD], c))) return rc;
    if (v[TK_SECURITY] && (rc = parse_security(x, v[TK_SECURITY], c))) return rc;
    if (v[TK_HEARTBEAT] && (rc = parse_heartbeat(x, v[TK_HEARTBEAT], c))) return rc;
    if (!v[TK_WORKERS]) return ferr(x, root->line, "workers", "missing: the cluster needs a list of workers");
    return parse_workers(x, v[TK_WORKERS], c);
}

/* ---- public ------------------------------------------------------------------------------- */

int cluster_init(cluster_t *c) {
    memset(c, 0, sizeof *c);
    c->transport = CLUSTER_TRANSPORT_ZMQ;
    c->heartbeat_interval_ms = 500;
    c->heartbeat_timeout_ms = 3000;
    c->listen = strdup("tcp://0.0.0.0:7100");
    c->http = strdup("127.0.0.1:8080");
    if (!c->listen || !c->http) {
        cluster_free(c);
        return TERN_ENOMEM;
    }
    return 0;
}

void cluster_free(cluster_t *c) {
    if (!c) return;
    for (int i = 0; i < c->n_workers; i++) {
        free(c->workers[i].name);
        free(c->workers[i].endpoint);
    }
    free(c->workers);
    free(c->name);
    free(c->model);
    free(c->listen);
    free(c->http);
    free(c->keys);
    memset(c, 0, sizeof *c);
}

int cluster_file_parse(cluster_t *c, const char *buf, size_t len, const char *name, char *err, size_t errlen) {
    TERN_ASSERT(c && (buf || !len));
    ctx_t x = {name ? name : "<cluster>", err, errlen, 0};
    if (!buf) buf = "";
    ynode_t *root = NULL;
    int rc = cluster_init(c);
    if (rc) return err_set(err, errlen, rc, "%s: out of memory", x.name);
    if (!(c->name = strdup(x.name))) rc = err_set(err, errlen, TERN_ENOMEM, "%s: out of memory", x.name);
    if (!rc) rc = load_tree(&x, buf, len, &root);
    if (!rc) rc = parse_top(&x, root, c);
    ynode_free(root);
    if (rc) cluster_free(c);
    return rc;
}

int cluster_file_load(cluster_t *c, const char *path, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(err, errlen, TERN_EIO, "%s: %s", path, strerror(errno));
    char *buf = malloc(CLUSTER_MAX_FILE + 1);
    if (!buf) {
        fclose(f);
        return err_set(err, errlen, TERN_ENOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, CLUSTER_MAX_FILE + 1, f);
    int bad = ferror(f);
    fclose(f);
    int rc;
    if (bad) rc = err_set(err, errlen, TERN_EIO, "%s: read error", path);
    else if (n > CLUSTER_MAX_FILE) rc = err_set(err, errlen, TERN_EFORMAT, "%s: larger than %u bytes; not a cluster file", path, CLUSTER_MAX_FILE);
    else rc = cluster_file_parse(c, buf, n, path, err, errlen);
    free(buf);
    return rc;
}

/* one --workers item: trimmed copy of s[0..n) checked as an endpoint */
static int list_item(cluster_t *c, const char *s, size_t n, int i, char *err, size_t errlen) {
    char why[160];
    while (n && (*s == ' ' || *s == '\t')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    if (!n) return err_set(err, errlen, TERN_EINVAL, "--workers: item %d is empty", i + 1);
    if (n > 255) return err_set(err, errlen, TERN_EINVAL, "--workers: item %d is longer than 255 bytes", i + 1);
    cluster_worker_t *w = &c->workers[i];
    char nm[16];
    snprintf(nm, sizeof nm, "w%d", i);
    w->first = w->last = -1;
    w->name = strdup(nm);
    w->endpoint = strndup(s, n);
    c->n_workers = i + 1;
    if (!w->name || !w->endpoint) return err_set(err, errlen, TERN_ENOMEM, "--workers: out of memory");
    if (check_worker_endpoint(w->endpoint, why, sizeof why))
        return err_set(err, errlen, TERN_EINVAL, "--workers: item %d '%s': %s", i + 1, w->endpoint, why);
    for (int j = 0; j < i; j++)
        if (!strcmp(c->workers[j].endpoint, w->endpoint))
            return err_set(err, errlen, TERN_EINVAL, "--workers: item %d '%s' repeats item %d", i + 1, w->endpoint, j + 1);
    return 0;
}

int cluster_from_workers_list(cluster_t *c, const char *csv, char *err, size_t errlen) {
    TERN_ASSERT(c && csv);
    int rc = cluster_init(c);
    if (rc) return err_set(err, errlen, rc, "--workers: out of memory");
    int n = 1;
    for (const char *p = csv; *p; p++) n += *p == ',';
    if (n > CLUSTER_MAX_WORKERS) rc = err_set(err, errlen, TERN_EINVAL, "--workers: more than %d workers", CLUSTER_MAX_WORKERS);
    if (!rc && !(c->name = strdup("--workers"))) rc = TERN_ENOMEM;
    if (!rc && !(c->workers = calloc((size_t)n, sizeof *c->workers))) rc = err_set(err, errlen, TERN_ENOMEM, "--workers: out of memory");
    const char *s = csv;
    for (int i = 0; !rc && i < n; i++) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        rc = list_item(c, s, len, i, err, errlen);
        s += len + 1;
    }
    if (rc) cluster_free(c);
    return rc ? one_line(err, rc) : 0;
}

int cluster_find_worker(const cluster_t *c, const char *name) {
    for (int i = 0; i < c->n_workers; i++)
        if (c->workers[i].name && !strcmp(c->workers[i].name, name)) return i;
    return -1;
}
