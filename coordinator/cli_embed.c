/* cli_embed: `tern embed` — llama-embedding's job: the pooled, normalised final hidden states
 * (after the output norm, before the lm head) of one or more texts, printed to stdout. Texts come
 * from -p (repeatable) or -f FILE, each split at --embd-separator (default a newline); they run
 * side by side in the slots (-np) of the engine's pipeline, so --cluster/--workers/--mpi work as
 * for `tern run`. Output: "embedding N: v v ..." lines (default), or --embd-output-format array
 * ([[...],...]) / json (OpenAI's list shape). Values are printed with 9 significant digits, so
 * two runs can be compared bit for bit. Not here: the pooling itself (sched_embed). */
#include "coordinator/cli_common.h"
#include "coordinator/engine.h"
#include "core/err.h"
#include "core/log.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EMBED_MAX_TEXTS 4096

typedef struct embed_out {
    float *v;        /* (rows, n_embd), malloc'd when done */
    int rows, done, failed;
} embed_out_t;

static void on_vec(void *user, int id, const float *v, int n, int n_embd) {
    embed_out_t *o = user;
    (void)id;
    if ((o->v = malloc((size_t)n * (size_t)n_embd * sizeof(float)))) {
        memcpy(o->v, v, (size_t)n * (size_t)n_embd * sizeof(float));
        o->rows = n;
    }
}

static int on_end(void *user, int id, int32_t token, float logprob, const sched_top_t *top, int finish) {
    embed_out_t *o = user;
    (void)id, (void)token, (void)logprob, (void)top;
    if (finish) o->done = 1, o->failed = finish != SCHED_LENGTH || !o->v;
    return 0;
}

/* splits text at sep (an empty sep: no split) into texts[] (pointers into text, which is
 * modified); empty pieces are dropped. Returns the count. */
static int split_texts(char *text, const char *sep, char **texts, int n, int cap) {
    size_t sl = strlen(sep);
    for (char *p = text; p && n < cap;) {
        char *q = sl ? strstr(p, sep) : NULL;
        if (q) *q = 0;
        if (*p) texts[n++] = p;
        p = q ? q + sl : NULL;
    }
    return n;
}

/* runs every text as an embedding sequence, up to the slots at once; out[i] gets text i's rows */
static int embed_all(tern_model *m, char **texts, int n, int pool, int norm, embed_out_t *out, char *err,
                     size_t errlen) {
    sched_t *sc = &m->sched;
    sampler_params_t sp;
    engine_sampler_params(NULL, &sp);
    int32_t *ids = malloc((size_t)(m->n_ctx + 1) * sizeof(int32_t));
    if (!ids) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    int next = 0, rc = 0;
    while (rc == 0 && (next < n || sched_active(sc) > 0)) {
        while (next < n && sched_active(sc) < sc->n_seq) {
            int k = tern_tokenize(m, texts[next], 1, ids, m->n_ctx + 1);
            if (k < 1 || k >= m->n_ctx) {
                rc = err_set(err, errlen, TERN_EINVAL, "text %d: %s", next,
                             k < 1 ? "cannot tokenize it (empty?)" : "it is longer than the context (-c)");
                if (k >= m->n_ctx) snprintf(err + strlen(err), errlen - strlen(err), ": %d tokens, at most %d", k, m->n_ctx - 1);
                break;
            }
            int id = sched_add(sc, ids, k, 0, &sp, on_end, &out[next]);
            if (id < 0 || (rc = sched_embed(sc, id, pool, norm, on_vec)) < 0) {
                if (id >= 0) sched_cancel(sc, id);
                rc = err_set(err, errlen, id < 0 ? id : rc, "text %d: cannot start it: %s", next, tern_strerror(id < 0 ? id : rc));
                break;
            }
            next++;
        }
        if (rc == 0 && sched_active(sc) > 0 && sched_step(sc) < 0) rc = err_set(err, errlen, TERN_EIO, "%s", sc->err);
    }
    for (int i = 0; rc == 0 && i < n; i++)
        if (out[i].failed) rc = err_set(err, errlen, TERN_EIO, "text %d failed: %s", i, sc->err[0] ? sc->err : "no vector");
    free(ids);
    return rc;
}

static void print_vec(const float *v, int n, const char *sep) {
    for (int i = 0; i < n; i++) printf("%s%.9g", i ? sep : "", (double)v[i]);
}

static void print_all(const embed_out_t *out, int n, int E, const char *fmt) {
    int json = !strcmp(fmt, "json"), array = !strcmp(fmt, "array"), k = 0;
    if (json) printf("{\n  \"object\": \"list\",\n  \"data\": [\n");
    if (array) printf("[");
    for (int i = 0; i < n; i++)
        for (int r = 0; r < out[i].rows; r++, k++) {
            const float *v = out[i].v + (size_t)r * E;
            if (json) {
                printf("%s    {\n      \"object\": \"embedding\",\n      \"index\": %d,\n      \"embedding\": [", k ? ",\n" : "", k);
                print_vec(v, E, ",");
                printf("]\n    }");
            } else if (array) {
                printf("%s[", k ? "," : "");
                print_vec(v, E, ",");
                printf("]");
            } else {
                printf("embedding %d: ", k);
                print_vec(v, E, " ");
                printf("\n");
            }
        }
    if (json) printf("\n  ]\n}\n");
    if (array) printf("]\n");
}

/* -p may be given several times: takes every -p/--prompt value out of argv (the option table
 * keeps the last one only) into texts; returns the new argc */
static int take_prompts(int argc, char **argv, char **texts, int *n) {
    int w = 0;
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "-p") || !strcmp(argv[i], "--prompt")) && i + 1 < argc && *n < EMBED_MAX_TEXTS) {
            texts[(*n)++] = argv[++i];
            continue;
        }
        argv[w++] = argv[i];
    }
    return w;
}

int cli_embed(int argc, char **argv) {
    log_set_role("C");
    cli_model_opts_t mo;
    cli_model_opts_default(&mo);
    mo.p.n_seq = 0;
    const char *file = NULL, *unused = NULL, *fmt = "", *pooling = "mean", *sep = NULL;
    int norm = 2;
    opt_t opts[96] = {
        {"-p", "--prompt", OPT_STR, &unused, "TEXT", "text to embed (repeatable; each split at --embd-separator)", 0, 0},
        {"-f", "--file", OPT_STR, &file, "FILE", "texts to embed, split at --embd-separator", 0, 0},
        {NULL, "--pooling", OPT_STR, &pooling, "TYPE", "mean, last, cls, or none (every token's row)", 0, 0},
        {NULL, "--embd-normalize", OPT_INT, &norm, "N", "-1 none, 0 max absolute (int16), 1 taxicab, 2 Euclidean, >2 p-norm", -1, 1 << 20},
        {NULL, "--embd-output-format", OPT_STR, &fmt, "FMT", "'' (lines), array or json", 0, 0},
        {NULL, "--embd-separator", OPT_STR, &sep, "SEP", "separator between the texts of one -p or file (default: a newline)", 0, 0},
    };
    cli_model_opts_table(&mo, opts, (int)(sizeof opts / sizeof opts[0]), 0);
    char err[512], *texts[EMBED_MAX_TEXTS], *ptexts[EMBED_MAX_TEXTS];
    int np = 0, npos, nt = 0;
    argc = take_prompts(argc, argv, ptexts, &np);
    int rc = opt_parse(opts, argc, argv, NULL, 0, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern embed -m MODEL (-p TEXT [-p TEXT ...] | -f FILE) [--pooling mean] [options]", opts);
        return 0;
    }
    int pool = sched_pool_parse(pooling);
    if (rc == 0) rc = cli_model_opts_check(&mo, err, sizeof err);
    if (rc == 0 && pool < 0) rc = err_set(err, sizeof err, TERN_EINVAL, "--pooling %s: expected mean, last, cls or none", pooling);
    if (rc == 0 && strcmp(fmt, "") && strcmp(fmt, "array") && strcmp(fmt, "json"))
        rc = err_set(err, sizeof err, TERN_EINVAL, "--embd-output-format %s: expected array or json", fmt);
    if (rc == 0 && (np > 0) == (file != NULL)) rc = err_set(err, sizeof err, TERN_EINVAL, "give the texts with -p or -f (one of them)");
    if (rc < 0) { fprintf(stderr, "tern embed: %s\n", err); return 1; }
    char *text = file ? cli_read_file(file, "text file", 64L << 20, err, sizeof err) : NULL;
    if (file && !text) { fprintf(stderr, "tern embed: %s\n", err); return 1; }
    if (!sep) sep = "\n";
    if (text) nt = split_texts(text, sep, texts, 0, EMBED_MAX_TEXTS);
    for (int i = 0; i < np; i++) {
        if (!(ptexts[i] = strdup(ptexts[i]))) { fprintf(stderr, "tern embed: out of memory\n"); return 1; }
        nt = split_texts(ptexts[i], sep, texts, nt, EMBED_MAX_TEXTS);
    }
    tern_model *m = NULL;
    embed_out_t *out = calloc((size_t)(nt ? nt : 1), sizeof *out);
    if (!nt) rc = err_set(err, sizeof err, TERN_EINVAL, "no text to embed");
    if (rc == 0 && !mo.p.n_seq) mo.p.n_seq = nt < 4 ? nt : 4;
    if (rc == 0 && !out) rc = err_set(err, sizeof err, TERN_ENOMEM, "out of memory");
    if (rc == 0) rc = tern_load(&m, &mo.p, err, sizeof err);
    if (rc == 0) rc = embed_all(m, texts, nt, pool, norm, out, err, sizeof err);
    if (rc == 0) print_all(out, nt, m->hp.n_embd, fmt);
    else fprintf(stderr, "tern embed: %s\n", err);
    for (int i = 0; out && i < nt; i++) free(out[i].v);
    for (int i = 0; i < np; i++) free(ptexts[i]);
    free(out);
    free(text);
    tern_model_free(&m);
    return rc < 0 ? 1 : 0;
}
