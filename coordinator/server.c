/* server: see server.h. This file holds the daemon (bind, thread per connection), the request
 * body collection with its size limit, authentication, routing and the small routes
 * (/health, /v1/models, /metrics); the generation routes live in server_gen.c (Anthropic's
 * /v1/messages in server_anthropic.c, OpenAI's /v1/responses in server_responses.c), the web UI
 * page, /props and /slots in server_info.c and the engine thread in server_engine.c. */
#define _GNU_SOURCE   /* POLLRDHUP */
#include "coordinator/server_int.h"
#include "coordinator/server_anthropic.h"
#include "core/err.h"
#include "core/log.h"
#include "core/progress.h"
#include <arpa/inet.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct conn {
    char *body;
    size_t len, cap;
    int too_big;
    job_t *job;
} conn_t;

void server_cfg_default(server_cfg_t *c) {
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8080;
    c->max_body = 8u << 20;
    c->max_queue = 64;
    c->cors_origin = "*";
    c->pooling = 1;   /* SCHED_POOL_MEAN */
    c->reasoning_format = 2;   /* REASONING_AUTO */
    c->reasoning_budget = -1;
    c->slot_sim = SCHED_SLOT_SIM_DEFAULT;
}

/* The CORS origin every reply carries: one server a process, set by server_start before its
 * threads run (the reply helpers see the connection only). "" = none. */
static char g_cors[256];

void server_cors(struct MHD_Response *r) {
    if (g_cors[0]) MHD_add_response_header(r, "Access-Control-Allow-Origin", g_cors);
}

/* a browser's preflight (OPTIONS) of a known route: what it may send */
static enum MHD_Result reply_preflight(struct MHD_Connection *c) {
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    server_cors(r);
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers",
                            "Authorization, Content-Type, x-api-key, anthropic-version");
    MHD_add_response_header(r, "Access-Control-Max-Age", "86400");
    enum MHD_Result ret = MHD_queue_response(c, 204, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- replies ---------------------------------------------------------------------- */

enum MHD_Result server_reply(struct MHD_Connection *c, int status, const char *ctype, char *body) {
    static char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
    struct MHD_Response *r = body ? MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE)
                                  : MHD_create_response_from_buffer(strlen(oom), oom, MHD_RESPMEM_PERSISTENT);
    if (!r) { free(body); return MHD_NO; }
    MHD_add_response_header(r, "Content-Type", ctype);
    server_cors(r);
    enum MHD_Result ret = MHD_queue_response(c, body ? (unsigned)status : 500u, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result server_reply_err(struct MHD_Connection *c, const server_err_t *e) {
    if (e->status >= 500) log_w("serve: %d %s", e->status, e->msg);
    else log_d("serve: %d %s", e->status, e->msg);
    return server_reply(c, e->status, "application/json", server_err_body(e));
}

enum MHD_Result server_reply_json(struct MHD_Connection *c, int status, void *json) {
    char *txt = json ? json_dumps(json, JSON_COMPACT) : NULL;
    json_decref(json);
    return server_reply(c, status, "application/json", txt);
}

int server_conn_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = c ? MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD) : NULL;
    if (!ci) return 0;
    struct pollfd p = {ci->connect_fd, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* ---- small routes -------------------------------------------------------------------- */

static int is_ready(struct server *s) {
    pthread_mutex_lock(&s->mu);
    int ready = s->m != NULL;
    pthread_mutex_unlock(&s->mu);
    return ready;
}

static enum MHD_Result not_ready(struct MHD_Connection *c) {
    server_err_t e;
    server_err_set(&e, 503, "unavailable_error", "loading", NULL, "Loading model");
    return server_reply_err(c, &e);
}

static enum MHD_Result route_models(struct server *s, struct MHD_Connection *c) {
    json_t *model = json_pack("{s:s, s:s, s:I, s:s, s:{s:i, s:i}}", "id", s->model_id, "object", "model", "created",
                              (json_int_t)time(NULL), "owned_by", "tern", "meta", "n_ctx", s->m->n_ctx, "n_vocab",
                              tokenizer_n_vocab(s->m->tok));
    return server_reply_json(c, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model));
}

/* {"status":"ok"} — with a cluster, its state too ("degraded": a worker is down but the rest
 * serve; "unavailable" with a reason, answered with 503) */
static enum MHD_Result route_health(struct server *s, struct MHD_Connection *c) {
    pipeline_t *pl = s->m->pl;
    char st[8192];
    if (!pl || !pl->ops->status) return server_reply(c, 200, "application/json", strdup("{\"status\":\"ok\"}"));
    int ok = pl->ops->status(pl, st, sizeof st);
    const char *state = strstr(st, "\"state\":\"degraded\"") ? "degraded" : ok ? "ok" : "unavailable";
    size_t n = strlen(st) + 64;
    char *body = malloc(n);
    if (body) snprintf(body, n, "{\"status\":\"%s\",\"cluster\":%s}", state, st[0] ? st : "null");
    return server_reply(c, ok ? 200 : 503, "application/json", body);
}

/* per-worker gauges from the pipeline's status JSON (cluster only): up and heartbeat RTT */
static char *worker_metrics(pipeline_t *pl) {
    char st[8192];
    if (!pl || !pl->ops->status) return NULL;
    pl->ops->status(pl, st, sizeof st);
    json_t *root = json_loads(st, 0, NULL), *ws = root ? json_object_get(root, "workers") : NULL;
    if (!json_is_array(ws)) { json_decref(root); return NULL; }
    size_t cap = 256 + json_array_size(ws) * 256, n = 0, i;
    char *out = malloc(cap);
    json_t *w;
    if (out) {
        n += (size_t)snprintf(out + n, cap - n, "# HELP tern_worker_up 1 when the worker answers heartbeats\n"
                              "# TYPE tern_worker_up gauge\n");
        json_array_foreach(ws, i, w)
            n += (size_t)snprintf(out + n, cap - n, "tern_worker_up{worker=\"%s\"} %d\n",
                                  json_string_value(json_object_get(w, "name")) ?: "?",
                                  json_is_true(json_object_get(w, "up")));
        n += (size_t)snprintf(out + n, cap - n, "# HELP tern_worker_rtt_seconds last heartbeat round trip\n"
                              "# TYPE tern_worker_rtt_seconds gauge\n");
        json_array_foreach(ws, i, w)
            n += (size_t)snprintf(out + n, cap - n, "tern_worker_rtt_seconds{worker=\"%s\"} %.6f\n",
                                  json_string_value(json_object_get(w, "name")) ?: "?",
                                  json_number_value(json_object_get(w, "rtt_ms")) / 1e3);
    }
    json_decref(root);
    return out;
}

static enum MHD_Result route_metrics(struct server *s, struct MHD_Connection *c) {
    char *body = server_metrics_render(&s->met), *wm = worker_metrics(s->m->pl);
    if (body && wm) {
        size_t a = strlen(body), b = strlen(wm);
        char *both = realloc(body, a + b + 1);
        if (both) { memcpy(both + a, wm, b + 1); body = both; }
    }
    free(wm);
    return server_reply(c, 200, "text/plain; version=0.0.4", body);
}

/* constant-time comparison of the Authorization header with "Bearer <key>", or of Anthropic's
 * x-api-key header with the key */
static int auth_ok(struct server *s, struct MHD_Connection *c) {
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        h += 7;
        while (*h == ' ') h++;
    } else if (!(h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-api-key"))) {
        return 0;
    }
    size_t n = strlen(h), m = strlen(s->cfg.api_key);
    unsigned diff = (unsigned)(n ^ m);
    for (size_t i = 0; i < m; i++) diff |= (unsigned char)s->cfg.api_key[i] ^ (unsigned char)(i < n ? h[i] : 0);
    return diff == 0;
}

/* ---- routing ------------------------------------------------------------------------- */

typedef struct route {
    const char *path, *alias, *method;
    int id;
} route_t;

enum { R_HEALTH, R_MODELS, R_COMPLETIONS, R_CHAT, R_TOKENIZE, R_DETOKENIZE, R_METRICS, R_EMBEDDINGS, R_WEBUI, R_PROPS, R_SLOTS,
       R_SLOT_ACTION, R_NATIVE, R_TEMPLATE, R_MESSAGES, R_COUNT_TOKENS, R_INFILL, R_RESPONSES };

static const route_t g_slot_action = {"/slots/", NULL, "POST", R_SLOT_ACTION};   /* /slots/{id}?action= */

static const route_t g_routes[] = {
    {"/health", "/v1/health", "GET", R_HEALTH},
    {"/v1/models", "/models", "GET", R_MODELS},
    {"/v1/completions", "/completions", "POST", R_COMPLETIONS},
    {"/v1/chat/completions", "/chat/completions", "POST", R_CHAT},
    {"/tokenize", NULL, "POST", R_TOKENIZE},
    {"/detokenize", NULL, "POST", R_DETOKENIZE},
    {"/metrics", NULL, "GET", R_METRICS},
    {"/v1/embeddings", "/embeddings", "POST", R_EMBEDDINGS},
    {"/", "/index.html", "GET", R_WEBUI},   /* server_info.c */
    {"/props", NULL, "GET", R_PROPS},
    {"/slots", NULL, "GET", R_SLOTS},
    {"/completion", NULL, "POST", R_NATIVE},   /* llama.cpp's own API: server_native.c */
    {"/apply-template", NULL, "POST", R_TEMPLATE},
    {"/infill", NULL, "POST", R_INFILL},
    {"/v1/messages", NULL, "POST", R_MESSAGES},   /* server_anthropic.c */
    {"/v1/messages/count_tokens", NULL, "POST", R_COUNT_TOKENS},
    {"/v1/responses", "/responses", "POST", R_RESPONSES},   /* server_responses.c */
};

static enum MHD_Result dispatch(struct server *s, struct MHD_Connection *c, const char *url, const char *method,
                                conn_t *cn) {
    server_err_t e;
    const route_t *r = NULL;
    for (size_t i = 0; i < sizeof g_routes / sizeof g_routes[0]; i++)
        if (!strcmp(url, g_routes[i].path) || (g_routes[i].alias && !strcmp(url, g_routes[i].alias))) r = &g_routes[i];
    if (!strncmp(url, "/slots/", 7)) r = &g_slot_action;
    if (!r || (r->id == R_METRICS && !s->cfg.metrics) || (r->id == R_WEBUI && s->cfg.no_webui)) {
        server_err_set(&e, 404, "invalid_request_error", "not_found", NULL, "no route %s %s", method, url);
        return server_reply_err(c, &e);
    }
    if (!strcmp(method, "OPTIONS") && g_cors[0]) return reply_preflight(c);   /* no credentials in a preflight */
    if (r->id != R_HEALTH && r->id != R_WEBUI && s->cfg.api_key && !auth_ok(s, c)) {   /* the page asks for the key */
        server_err_set(&e, 401, "authentication_error", "invalid_api_key", NULL, "invalid or missing API key");
        return server_reply_err(c, &e);
    }
    if (strcmp(method, r->method) != 0 && !((r->id == R_HEALTH || r->id == R_WEBUI) && !strcmp(method, "HEAD"))) {
        server_err_set(&e, 405, "invalid_request_error", "method_not_allowed", NULL, "%s wants %s, not %s", url,
                       r->method, method);
        return server_reply_err(c, &e);
    }
    if (cn->too_big) {
        server_err_set(&e, 413, "invalid_request_error", "request_too_large", NULL,
                       "the request body is larger than %zu bytes (--max-body)", s->cfg.max_body);
        return server_reply_err(c, &e);
    }
    if (r->id == R_METRICS) return route_metrics(s, c);
    if (r->id == R_WEBUI) return server_info_page(c);                         /* needs no model */
    if (r->id == R_SLOTS && s->cfg.no_slots) return server_info_slots(s, c);   /* 501, likewise */
    if (!is_ready(s)) return not_ready(c);
    switch (r->id) {
    case R_HEALTH: return route_health(s, c);
    case R_MODELS: return route_models(s, c);
    case R_COMPLETIONS: return server_gen_handle(s, c, SERVER_REQ_COMPLETION, cn->body, cn->len, &cn->job);
    case R_CHAT: return server_gen_handle(s, c, SERVER_REQ_CHAT, cn->body, cn->len, &cn->job);
    case R_EMBEDDINGS: return server_gen_handle(s, c, SERVER_REQ_EMBEDDINGS, cn->body, cn->len, &cn->job);
    case R_TOKENIZE: return server_tok_handle(s, c, SERVER_REQ_TOKENIZE, cn->body, cn->len);
    case R_PROPS: return server_info_props(s, c);
    case R_SLOTS: return server_info_slots(s, c);
    case R_SLOT_ACTION: return server_slots_action(s, c, url + 7, cn->body, cn->len);
    case R_NATIVE: return server_native_handle(s, c, cn->body, cn->len, &cn->job);
    case R_TEMPLATE: return server_native_template(s, c, cn->body, cn->len);
    case R_INFILL: return server_native_infill(s, c, cn->body, cn->len, &cn->job);
    case R_MESSAGES: return server_anthropic_handle(s, c, 0, cn->body, cn->len, &cn->job);
    case R_COUNT_TOKENS: return server_anthropic_handle(s, c, 1, cn->body, cn->len, &cn->job);
    case R_RESPONSES: return server_responses_handle(s, c, cn->body, cn->len, &cn->job);
    default: return server_tok_handle(s, c, SERVER_REQ_DETOKENIZE, cn->body, cn->len);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    struct server *s = cls;
    (void)version;
    conn_t *cn = *con_cls;
    if (!cn) {   /* first call: headers only */
        if (!(cn = calloc(1, sizeof *cn))) return MHD_NO;
        *con_cls = cn;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->cfg.max_body) cn->too_big = 1;
        return MHD_YES;
    }
    if (*upload_size) {   /* body bytes: keep them up to the limit, drop the rest */
        size_t n = *upload_size;
        *upload_size = 0;
        if (cn->too_big || cn->len + n > s->cfg.max_body) { cn->too_big = 1; return MHD_YES; }
        if (cn->len + n + 1 > cn->cap) {
            size_t cap = cn->cap ? cn->cap : 4096;
            while (cap < cn->len + n + 1) cap *= 2;
            char *b = realloc(cn->body, cap);
            if (!b) return MHD_NO;
            cn->body = b;
            cn->cap = cap;
        }
        memcpy(cn->body + cn->len, upload, n);
        cn->len += n;
        cn->body[cn->len] = 0;
        return MHD_YES;
    }
    server_anthropic_style(!strncmp(url, "/v1/messages", 12));   /* its errors in Anthropic's shape */
    pthread_mutex_lock(&s->mu);
    int draining = s->draining;
    pthread_mutex_unlock(&s->mu);
    if (draining) {
        server_err_t e;
        server_err_set(&e, 503, "unavailable_error", "shutting_down", NULL, "the server is shutting down");
        return server_reply_err(c, &e);
    }
    return dispatch(s, c, url, method, cn);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
    struct server *s = cls;
    conn_t *cn = *con_cls;
    (void)c;
    if (!cn) return;
    if (cn->job) {
        pthread_mutex_lock(&s->mu);
        if (cn->job->state != JOB_DONE && !cn->job->cancel) {
            cn->job->cancel = JOB_CANCEL_GONE;   /* the client left (or the reply failed): free the slot */
            pthread_cond_signal(&s->engine_cv);
        }
        cn->job->conn = NULL;
        server_job_unref(s, cn->job);
        if (--s->n_busy == 0) pthread_cond_broadcast(&s->idle_cv);
        pthread_mutex_unlock(&s->mu);
    }
    if (why != MHD_REQUEST_TERMINATED_COMPLETED_OK) log_d("serve: request ended early (%d)", (int)why);
    free(cn->body);
    free(cn);
    *con_cls = NULL;
}

/* While server_start runs MHD_start_daemon, the thread calling it keeps MHD's first complaint
 * here instead of logging it: a refused key or certificate becomes the one error line (and a
 * start that succeeds logs it after all); later ones during the start go to the debug log. */
static _Thread_local char *t_start_msg;

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == '.')) buf[--n] = 0;
    if (!t_start_msg) log_w("http: %s", buf);
    else if (!t_start_msg[0]) snprintf(t_start_msg, 256, "%.255s", buf);   /* its buffer is 256 */
    else log_d("http: %s", buf);   /* a consequence of the first ("Failed to initialize TLS support") */
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static int resolve(const char *host, int port, struct sockaddr_storage *ss, int *v6, char *err, size_t errlen) {
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc != 0 || !ai) return err_set(err, errlen, TERN_EINVAL, "--host %s: %s", host, gai_strerror(rc));
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    return 0;
}

/* the TLS options (none without a key), ending in MHD_OPTION_END; 0 or TERN_EINVAL with err
 * when this libmicrohttpd cannot do what cfg asks */
static int tls_options(const server_cfg_t *cfg, struct MHD_OptionItem o[4], unsigned *flags, char *err, size_t errlen) {
    int n = 0;
    if (cfg->tls_key || cfg->tls_cert) {
        if (!cfg->tls_key || !cfg->tls_cert)
            return err_set(err, errlen, TERN_EINVAL, "TLS needs both a key and a certificate");
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
            return err_set(err, errlen, TERN_EINVAL, "this libmicrohttpd was built without TLS (GnuTLS): cannot serve HTTPS");
        if (cfg->tls_key_password && MHD_is_feature_supported(MHD_FEATURE_HTTPS_KEY_PASSWORD) != MHD_YES)
            return err_set(err, errlen, TERN_EINVAL, "this libmicrohttpd cannot decrypt keys: decrypt it first "
                           "(openssl pkey -in KEY -out PLAIN)");
        *flags |= MHD_USE_TLS;
        o[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)cfg->tls_key};
        o[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cfg->tls_cert};
        if (cfg->tls_key_password)
            o[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_KEY_PASSWORD, 0, (void *)cfg->tls_key_password};
    }
    o[n] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    return 0;
}

int server_kwargs_parse(const char *text, void **out, char *err, size_t errlen) {
    *out = NULL;
    if (!text) return 0;
    json_error_t je;
    json_t *o = json_loads(text, 0, &je), *et = json_object_get(o, "enable_thinking");
    if (!json_is_object(o) || (et && !json_is_boolean(et))) {
        int rc = err_set(err, errlen, TERN_EINVAL, "--chat-template-kwargs: %s", !o ? je.text : !json_is_object(o)
                         ? "not a JSON object" : "enable_thinking must be true or false");
        json_decref(o);
        return rc;
    }
    *out = o;
    return 0;
}

int server_start(server_t **out, const server_cfg_t *cfg, char *err, size_t errlen) {
    *out = NULL;
    struct MHD_OptionItem tls[4];
    unsigned tls_flag = 0;
    void *kw;
    if (server_kwargs_parse(cfg->chat_template_kwargs, &kw, err, errlen) < 0) return TERN_EINVAL;
    json_decref(kw);   /* checked here; each request parses its own copy (server_gen_prompt_text) */
    if (tls_options(cfg, tls, &tls_flag, err, errlen) < 0) return TERN_EINVAL;
    struct sockaddr_storage ss;
    int v6 = 0, rc = resolve(cfg->host ? cfg->host : "127.0.0.1", cfg->port, &ss, &v6, err, errlen);
    if (rc < 0) return rc;
    struct server *s = calloc(1, sizeof *s);
    if (!s) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    s->cfg = *cfg;
    snprintf(s->model_id, sizeof s->model_id, "%s", cfg->model_name ? cfg->model_name : "tern");
    snprintf(g_cors, sizeof g_cors, "%s", cfg->cors_origin && strcmp(cfg->cors_origin, "none") ? cfg->cors_origin : "");
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->engine_cv, NULL);
    pthread_cond_init(&s->idle_cv, NULL);
    server_metrics_init(&s->met, 0);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0) | tls_flag;
    unsigned idle = (unsigned)(cfg->timeout_s > 0 ? cfg->timeout_s + 60 : 600);
    char msg[256] = "";
    t_start_msg = msg;
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_CONNECTION_TIMEOUT, idle, MHD_OPTION_CONNECTION_LIMIT, 512u,
                            MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    t_start_msg = NULL;
    if (!s->d) {
        /* MHD binds, then sets TLS up; which of them failed it says only in its log line */
        if (tls_flag && !strstr(msg, "bind") && !strstr(msg, "socket") && !strstr(msg, "listen"))
            rc = err_set(err, errlen, TERN_EINVAL, "%s", msg[0] ? msg : "TLS setup failed (no reason given)");
        else {   /* MHD's "Failed to bind to port 0: REASON" names the port it was given (none): keep REASON */
            const char *why = strrchr(msg, ':');
            why = why ? why + strspn(why, ": ") : "";
            rc = err_set(err, errlen, TERN_EIO, "cannot listen on %s:%d: %s", cfg->host ? cfg->host : "127.0.0.1",
                         cfg->port, why[0] ? why : "in use, or not an address of this host?");
        }
        server_destroy(&s);
        return rc;
    }
    if (msg[0]) log_w("http: %s", msg);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    *out = s;
    return 0;
}

int server_port(const server_t *s) { return s->port; }

int server_attach(server_t *s, tern_model *m, const sampler_params_t *sp, char *err, size_t errlen) {
    server_slot_t *slots = calloc((size_t)m->sched.n_seq, sizeof *slots);
    if (!slots) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    for (int i = 0; i < m->sched.n_seq; i++) slots[i].id_task = -1;
    pthread_mutex_lock(&s->met.mu);
    s->met.n_slots = m->sched.n_seq;
    pthread_mutex_unlock(&s->met.mu);
    s->sched_t0_prefill = m->sched.t_prefill;
    s->sched_t0_decode = m->sched.t_decode;
    if (s->cfg.cache_ram_mib && !s->cfg.no_cache_prompt) {   /* before the engine thread owns the scheduler */
        size_t lim = s->cfg.cache_ram_mib < 0 ? SIZE_MAX : (size_t)s->cfg.cache_ram_mib << 20;
        int rc = sched_set_ram_cache(&m->sched, lim);
        if (rc == TERN_ENOTSUP) log_w("serve: --cache-ram: this pipeline cannot move KV cache rows; the RAM prompt cache is off");
        else if (rc < 0) {
            free(slots);
            return err_set(err, errlen, rc, "--cache-ram: out of memory");
        } else if (s->cfg.cache_ram_mib < 0) log_i("serve: RAM prompt cache without a size limit");
        else log_i("serve: RAM prompt cache of up to %ld MiB", s->cfg.cache_ram_mib);
        pthread_mutex_lock(&s->met.mu);
        s->met.ram_limit = !m->sched.ram ? 0 : s->cfg.cache_ram_mib < 0 ? -1 : (double)lim;
        pthread_mutex_unlock(&s->met.mu);
    }
    pthread_mutex_lock(&s->mu);
    s->def_sp = *sp;
    s->slots = slots;
    s->m = m;
    int rc = pthread_create(&s->engine, NULL, server_engine_main, s);
    if (rc == 0) s->engine_started = 1;
    else s->m = NULL;
    pthread_mutex_unlock(&s->mu);
    return rc == 0 ? 0 : err_set(err, errlen, TERN_ENOMEM, "cannot start the engine thread");
}

void server_shutdown(server_t *s, double grace_s) {
    pthread_mutex_lock(&s->mu);
    if (s->draining) { pthread_mutex_unlock(&s->mu); return; }
    s->draining = 1;
    pthread_mutex_unlock(&s->mu);
    MHD_socket fd = s->d ? MHD_quiesce_daemon(s->d) : MHD_INVALID_SOCKET;
    if (fd != MHD_INVALID_SOCKET) close(fd);
    double until = time_now() + grace_s;
    pthread_mutex_lock(&s->mu);
    while ((s->n_inflight > 0 || s->n_busy > 0) && !s->abort && time_now() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&s->idle_cv, &s->mu, &ts);
    }
    if (s->n_inflight > 0 || s->n_busy > 0) log_w("serve: ending %d unfinished requests", s->n_busy);
    s->abort = 1;
    s->stop_engine = 1;
    pthread_cond_broadcast(&s->engine_cv);
    pthread_mutex_unlock(&s->mu);
    if (s->engine_started) {
        pthread_join(s->engine, NULL);
        s->engine_started = 0;
    }
    if (s->d) {   /* waits for the connection threads, which end once their jobs are done */
        MHD_stop_daemon(s->d);
        s->d = NULL;
    }
}

void server_abort(server_t *s) {
    pthread_mutex_lock(&s->mu);
    s->abort = 1;
    pthread_cond_broadcast(&s->engine_cv);
    pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mu);
}

void server_destroy(server_t **ps) {
    if (!ps || !*ps) return;
    struct server *s = *ps;
    server_shutdown(s, 0);
    server_metrics_free(&s->met);
    free(s->slots);
    pthread_cond_destroy(&s->engine_cv);
    pthread_cond_destroy(&s->idle_cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
    *ps = NULL;
}
