/* cli_serve: `tern serve` — flags, then the HTTP server up first (so /health answers 503
 * while the model loads), the model, and a wait for SIGINT/SIGTERM, which a dedicated thread
 * receives (blocked in every other thread) and turns into a graceful shutdown. A second
 * signal cuts the grace period short. Not here: HTTP itself (server*.c). */
#include "coordinator/cli_common.h"
#include "coordinator/engine.h"
#include "coordinator/reasoning.h"
#include "coordinator/server.h"
#include "coordinator/toolfmt.h"
#include "core/err.h"
#include "core/log.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_signals;
static server_t *g_srv;   /* for a second signal: end in-flight requests at once */

static void *signal_thread(void *arg) {
    sigset_t *set = arg;
    for (;;) {
        int sig;
        if (sigwait(set, &sig) != 0) continue;
        pthread_mutex_lock(&g_mu);
        g_signals++;
        if (g_signals > 1 && g_srv) server_abort(g_srv);
        pthread_cond_broadcast(&g_cv);
        pthread_mutex_unlock(&g_mu);
        log_i("serve: %s, shutting down%s", sig == SIGINT ? "SIGINT" : "SIGTERM",
              g_signals > 1 ? " now" : " (again to stop at once)");
    }
    return NULL;
}

static int signals_seen(void) {
    pthread_mutex_lock(&g_mu);
    int n = g_signals;
    pthread_mutex_unlock(&g_mu);
    return n;
}

/* the first line of a key file, without trailing white space; NULL with err */
static char *read_key(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) { err_set(err, errlen, TERN_EIO, "--api-key-file %s: %s", path, strerror(errno)); return NULL; }
    char buf[1024];
    char *line = fgets(buf, sizeof buf, f);
    fclose(f);
    size_t n = line ? strlen(buf) : 0;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t')) buf[--n] = 0;
    if (!n) { err_set(err, errlen, TERN_EINVAL, "--api-key-file %s: the file holds no key", path); return NULL; }
    return strdup(buf);
}

/* a PEM file's whole text (at most 1 MiB), checked to hold what its flag wants (a certificate,
 * or a private key: plain, or encrypted only when a password is given); NULL with err naming the
 * flag and the file. GnuTLS judges the rest when the server starts. */
static char *read_pem(const char *flag, const char *path, int key, int have_password, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { err_set(err, errlen, TERN_EIO, "%s %s: %s", flag, path, strerror(errno)); return NULL; }
    size_t cap = 1u << 20, n = 0;
    char *buf = malloc(cap + 1);
    if (buf) n = fread(buf, 1, cap + 1, f);
    int bad_read = ferror(f);
    fclose(f);
    const char *why = !buf ? "out of memory" : bad_read ? "cannot read it" : n > cap ? "larger than 1 MiB: not a PEM file" : NULL;
    if (!why) {
        buf[n] = 0;
        int encrypted = strstr(buf, "-----BEGIN ENCRYPTED PRIVATE KEY-----") || strstr(buf, "Proc-Type: 4,ENCRYPTED");
        if (strlen(buf) != n) why = "not a PEM file (it holds NUL bytes; DER? convert with openssl)";
        else if (key && !strstr(buf, "PRIVATE KEY-----"))
            why = strstr(buf, "-----BEGIN CERTIFICATE-----") ? "a certificate, not a private key" : "no PEM private key in it";
        else if (!key && !strstr(buf, "-----BEGIN CERTIFICATE-----"))
            why = strstr(buf, "PRIVATE KEY-----") ? "a private key, not a certificate" : "no PEM certificate in it";
        else if (key && encrypted && !have_password) why = "the key is encrypted: give its password with --ssl-key-password";
    }
    if (why) {
        err_set(err, errlen, TERN_EINVAL, "%s %s: %s", flag, path, why);
        free(buf);
        return NULL;
    }
    return buf;
}

/* HTTPS's flags: both files or neither (a password only with a key), read into *key and *cert
 * (the caller frees them) before anything starts, so that a wrong path fails at once rather than
 * after a model's load; 0 (both NULL without the flags) or <0 with err */
static int tls_files(const char *key_file, const char *cert_file, const char *password, char **key, char **cert,
                     char *err, size_t errlen) {
    *key = *cert = NULL;
    if (!key_file != !cert_file)
        return err_set(err, errlen, TERN_EINVAL, "HTTPS needs both --ssl-key-file and --ssl-cert-file (%s alone)",
                       key_file ? "--ssl-key-file" : "--ssl-cert-file");
    if (password && !key_file) return err_set(err, errlen, TERN_EINVAL, "--ssl-key-password without --ssl-key-file");
    if (!key_file) return 0;
    if (!(*key = read_pem("--ssl-key-file", key_file, 1, password != NULL, err, errlen))) return TERN_EINVAL;
    if (!(*cert = read_pem("--ssl-cert-file", cert_file, 0, 0, err, errlen))) {
        free(*key);
        *key = NULL;
        return TERN_EINVAL;
    }
    return 0;
}

static const char *base_name(const char *path) {
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

int cli_serve(int argc, char **argv) {
    log_set_role("C");
    cli_model_opts_t mo;
    cli_model_opts_default(&mo);
    mo.p.n_seq = 4;
    server_cfg_t sc;
    server_cfg_default(&sc);
    const char *key_file = NULL, *alias = NULL, *ssl_key_file = NULL, *ssl_cert_file = NULL;
    uint64_t max_body = sc.max_body;
    float grace = 30;
    const char *pooling = "mean";
    float slot_sim = (float)sc.slot_sim;
    int cache_ram = 0;   /* opt-in: a restore or save pauses the other streams for a step, and the rows
                          * of every layer land in the coordinator's RAM (in a cluster often the
                          * smallest machine) */
    opt_t opts[128] = {
        {NULL, "--host", OPT_STR, &sc.host, "ADDR", "address to listen on", 0, 0},
        {NULL, "--port", OPT_INT, &sc.port, "N", "port (0: any free port, logged at start)", 0, 65535},
        {NULL, "--api-key", OPT_STR, &sc.api_key, "KEY", "require 'Authorization: Bearer KEY' or 'x-api-key: KEY' (not on /health and the web UI page, which asks for it)", 0, 0},
        {NULL, "--api-key-file", OPT_STR, &key_file, "FILE", "read the API key from the first line of FILE", 0, 0},
        {NULL, "--ssl-key-file", OPT_STR, &ssl_key_file, "FILE", "serve HTTPS (only) with this PEM private key; needs --ssl-cert-file", 0, 0},
        {NULL, "--ssl-cert-file", OPT_STR, &ssl_cert_file, "FILE", "the PEM certificate (chain) for --ssl-key-file", 0, 0},
        {NULL, "--ssl-key-password", OPT_STR, &sc.tls_key_password, "PASS", "the password of an encrypted --ssl-key-file (the environment variable keeps it out of ps)", 0, 0},
        {NULL, "--timeout", OPT_INT, &sc.timeout_s, "S", "seconds a request may take (0: no limit)", 0, 86400 * 7},
        {NULL, "--metrics", OPT_FLAG, &sc.metrics, NULL, "serve Prometheus metrics at /metrics", 0, 0},
        {NULL, "--max-body", OPT_SIZE, &max_body, "BYTES", "largest request body", 0, 0},
        {NULL, "--max-tokens", OPT_INT, &sc.max_tokens, "N", "cap on tokens generated per request (0: context)", 0, 1 << 30},
        {NULL, "--max-queue", OPT_INT, &sc.max_queue, "N", "requests waiting for a slot before 503", 0, 1 << 20},
        {"-a", "--alias", OPT_STR, &alias, "NAME", "model name in /v1/models and replies (default: file name)", 0, 0},
        {NULL, "--grace", OPT_FLOAT, &grace, "S", "seconds in-flight requests get to finish at shutdown", 0, 3600},
        {NULL, "--cors-origin", OPT_STR, &sc.cors_origin, "ORIGIN", "Access-Control-Allow-Origin of every reply, OPTIONS preflights answered (none: no CORS)", 0, 0},
        {NULL, "--no-cache-prompt", OPT_FLAG, &sc.no_cache_prompt, NULL, "feed every prompt whole (default: a prompt that begins with a slot's cached tokens starts after them, copied from another slot when that one holds more)", 0, 0},
        {NULL, "--embeddings", OPT_FLAG, &sc.embeddings, NULL, "serve POST /v1/embeddings (L2-normalised pooled final hidden states)", 0, 0},
        {NULL, "--pooling", OPT_STR, &pooling, "TYPE", "embeddings' pooling: mean, last or cls", 0, 0},
        {NULL, "--no-webui", OPT_FLAG, &sc.no_webui, NULL, "do not serve the web UI page at / (404)", 0, 0},
        {NULL, "--no-slots", OPT_FLAG, &sc.no_slots, NULL, "do not serve /slots (501)", 0, 0},
        {NULL, "--spm-infill", OPT_FLAG, &sc.spm_infill, NULL, "/infill: suffix before prefix (Suffix/Prefix/Middle), for models trained so (default: Prefix/Suffix/Middle)", 0, 0},
        {NULL, "--cache-ram", OPT_INT, &cache_ram, "MIB", "keep up to MIB of prompts' KV caches in RAM when their slot is taken by another prompt, and restore the best one into a slot whose new prompt begins with it (-1: no limit, 0: off)", -1, 1 << 24},
        {"-sps", "--slot-prompt-similarity", OPT_FLOAT, &slot_sim, "F", "a prompt takes the idle slot whose cache holds the longest beginning of it when that is more than F of the prompt, else the least recently used slot (0: always the least recently used; a shorter beginning may still be copied from another slot)", 0, 1},
        {NULL, "--slot-save-path", OPT_STR, &sc.slot_save_path, "DIR", "POST /slots/{id}?action=save|restore|erase keep slots' KV caches in files here (default: 501)", 0, 0},
    };
    int cap = (int)(sizeof opts / sizeof opts[0]);
    cli_reasoning_opts(&mo, opts, cli_chat_template_opts(&mo, opts, cli_model_opts_table(&mo, opts, cap, 1), cap), cap);
    char err[512];
    int npos, rc = opt_parse(opts, argc, argv, NULL, 0, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern serve -m MODEL [--host ADDR] [--port N] [-np N] [options]", opts);
        return 0;
    }
    if (rc < 0 || (rc = cli_model_opts_check(&mo, err, sizeof err)) < 0) {
        fprintf(stderr, "tern serve: %s\n", err);
        return 1;
    }
    if ((sc.pooling = sched_pool_parse(pooling)) <= SCHED_POOL_NONE) {
        fprintf(stderr, "tern serve: --pooling %s: expected mean, last or cls\n", pooling);
        return 1;
    }
    sc.reasoning_budget = mo.reasoning_budget;
    sc.chat_template_kwargs = mo.chat_template_kwargs;
    if ((sc.reasoning_format = reasoning_format_parse(mo.reasoning_format)) < 0) {
        fprintf(stderr, "tern serve: --reasoning-format %s: expected none, deepseek, deepseek-legacy or auto\n", mo.reasoning_format);
        return 1;
    }
    if (sc.api_key && key_file) { fprintf(stderr, "tern serve: use --api-key or --api-key-file, not both\n"); return 1; }
    char *key = NULL;
    if (key_file && !(key = read_key(key_file, err, sizeof err))) { fprintf(stderr, "tern serve: %s\n", err); return 1; }
    if (key) sc.api_key = key;
    if (sc.api_key && !sc.api_key[0]) { fprintf(stderr, "tern serve: --api-key is empty\n"); free(key); return 1; }
    if (max_body < 64) { fprintf(stderr, "tern serve: --max-body %llu is too small\n", (unsigned long long)max_body); free(key); return 1; }
    sc.max_body = (size_t)max_body;
    sc.cache_ram_mib = cache_ram;
    sc.slot_sim = slot_sim;
    if (cache_ram && sc.no_cache_prompt) log_w("serve: --cache-ram has no effect with --no-cache-prompt");
    sc.model_name = alias ? alias : base_name(mo.p.model);
    sc.model_path = mo.p.model;
    sc.seed_fixed = mo.seed >= 0;
    sc.grammar = mo.s.grammar;
    sc.n_keep = mo.s.n_keep;
    struct stat sst;
    if (sc.slot_save_path && (stat(sc.slot_save_path, &sst) != 0 || !S_ISDIR(sst.st_mode))) {
        fprintf(stderr, "tern serve: --slot-save-path %s: not a directory\n", sc.slot_save_path);
        free(key);
        return 1;
    }
    char *tls_key = NULL, *tls_cert = NULL;
    if (tls_files(ssl_key_file, ssl_cert_file, sc.tls_key_password, &tls_key, &tls_cert, err, sizeof err) < 0) {
        fprintf(stderr, "tern serve: %s\n", err);
        free(key);
        return 1;
    }
    sc.tls_key = tls_key;
    sc.tls_cert = tls_cert;
    const char *scheme = tls_key ? "https" : "http";

    /* every thread started from here on inherits the blocked signals; one thread waits for them */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_t sig_thr;
    pthread_create(&sig_thr, NULL, signal_thread, &set);

    server_t *srv = NULL;
    tern_model *m = NULL;
    rc = server_start(&srv, &sc, err, sizeof err);
    char where[1024] = "";   /* names the files GnuTLS read when it refused them */
    if (rc == TERN_EINVAL && tls_key)
        snprintf(where, sizeof where, "--ssl-key-file %s, --ssl-cert-file %s: ", ssl_key_file, ssl_cert_file);
    if (rc == 0) {
        log_i("serve: listening on %s://%s:%d (loading %s)", scheme, sc.host, server_port(srv), mo.p.model);
        rc = tern_load(&m, &mo.p, err, sizeof err);
    }
    if (rc == 0 && (rc = cli_chat_template_apply(m, &mo, err, sizeof err)) == 0)
        log_i("serve: chat template %s, tool calls in the %s format", chat_template_name(m->tok),
              toolfmt_name(chat_tool_format(m->tok)));
    if (rc == 0 && signals_seen()) rc = 1;
    if (rc == 0) {
        sampler_params_t sp;
        engine_sampler_params(&mo.s, &sp);
        /* the breakers a request that turns DRY on gets unless it names its own */
        rc = engine_dry_breakers(m, mo.s.dry_breakers, mo.s.n_dry_breakers, &sp, err, sizeof err);
        if (rc < 0 && !sampler_params_dry(&sp)) {
            log_w("serve: %s (requests that turn DRY on must name their breakers)", err);
            rc = 0;
        }
        if (rc == 0) rc = server_attach(srv, m, &sp, err, sizeof err);
    }
    if (rc == 0) {
        pthread_mutex_lock(&g_mu);
        g_srv = srv;
        pthread_mutex_unlock(&g_mu);
        log_i("serve: ready on %s://%s:%d with %d slots", scheme, sc.host, server_port(srv), mo.p.n_seq);
        pthread_mutex_lock(&g_mu);
        while (!g_signals) pthread_cond_wait(&g_cv, &g_mu);
        pthread_mutex_unlock(&g_mu);
        server_shutdown(srv, signals_seen() > 1 ? 0 : grace);
    } else if (rc < 0) {
        fprintf(stderr, "tern serve: %s%s\n", where, err);
    }
    pthread_cancel(sig_thr);
    pthread_join(sig_thr, NULL);
    server_destroy(&srv);
    tern_model_free(&m);
    free(key);
    free(tls_key);
    free(tls_cert);
    log_i("serve: stopped");
    return rc < 0 ? 1 : 0;
}
