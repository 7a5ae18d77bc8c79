/* cli_bench: `tern bench` — llama-bench's tests: pp N (N random prompt tokens in micro-batches
 * of -b) and tg N (N greedy steps, end-of-text ignored), -r repetitions after a warm-up, per -t
 * thread count, through the scheduler and pipeline as `tern run` does. Markdown table or JSON
 * array; tg also gets the bandwidth roofline (read bandwidth measured now with the row's threads
 * / weight bytes per decode step). --parallel N runs tg with N concurrent sequences (aggregate
 * t/s); --workers/--cluster bench a cluster (workers on other machines: the roofline is this
 * machine's). Not here: kernel benchmarks (--kernels → kbench_main), hops (--hop → cli_bench_hop). */
#include "coordinator/cli_bench_hop.h"
#include "coordinator/cli_common.h"
#include "coordinator/engine.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "core/membw.h"
#include "core/progress.h"
#include "core/types.h"
#include "kernels/kbench.h"
#include "kernels/ops.h"
#include "worker/kv_cache.h"
#include "worker/cuda_bench.h"
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define BENCH_MAX_LIST 16
#define BENCH_MAX_REPS 1000
#define BENCH_MAX_TOKENS 65536

typedef struct bench_row {
    int threads, n_prompt, n_gen;
    int n_depth;                       /* tg: tokens in the KV cache before the timed steps */
    int n_par;                         /* tg: concurrent sequences */
    double samples[BENCH_MAX_REPS];   /* t/s of each repetition */
    int n_samples;
    double avg, sd;
    double bw_gbps, roofline;          /* tg only (0 otherwise) */
} bench_row_t;

typedef struct bench_model {
    char type[96];          /* "bitnet-b1.58 2B I2_S" */
    uint64_t size, params;  /* bytes and elements of all tensors */
    size_t weight_bytes;    /* read per decode step (pipeline) */
    size_t kv_pos_bytes;    /* KV cache bytes of one position, all layers (K and V) */
    const char *kv_type;    /* "f16", "q8_0", "f32" */
    int n_stages;           /* cluster: stages (workers holding layers); 0 = this process */
    const char *backend;    /* cluster: "zmq" (--workers/--cluster) or "mpi" (--mpi) */
    const char *device;     /* this process: "CPU", "CUDA" (-ngl >= layers) or "CUDA+CPU" */
} bench_model_t;

/* parses "1,2,4" into out (cap); every value in [lo, hi]. Count or <0 with err. */
static int parse_list(const char *flag, const char *s, int lo, int hi, int *out, int cap, char *err, size_t errlen) {
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ','))
            return err_set(err, errlen, TERN_EINVAL, "%s: expected a comma-separated list of integers, got '%s'", flag, s);
        if (v < lo || v > hi) return err_set(err, errlen, TERN_EINVAL, "%s: %ld is out of range [%d, %d]", flag, v, lo, hi);
        if (n == cap) return err_set(err, errlen, TERN_EINVAL, "%s: at most %d values", flag, cap);
        out[n++] = (int)v;
        if (!*end) return n;
        p = end + 1;
    }
}

static double row_stats(bench_row_t *r) {
    double s = 0, s2 = 0;
    int n = r->n_samples;
    for (int i = 0; i < n; i++) { s += r->samples[i]; s2 += r->samples[i] * r->samples[i]; }
    r->avg = n ? s / n : 0;
    /* llama-bench's sample standard deviation (0 for a single sample) */
    double v = n > 1 ? s2 / (n - 1) - r->avg * r->avg * n / (n - 1) : 0;
    r->sd = v > 0 ? sqrt(v) : 0;
    return r->avg;
}

/* "bitnet-b1.58 2B I2_S": arch, size label (general.size_label or from the parameter count),
 * and the type of the first block's attn_q (the file's ternary type) */
static void model_describe(const tern_model *m, bench_model_t *d) {
    const gguf_t *g = m->g;
    d->size = d->params = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor_t *t = &g->tensors[i];
        d->size += t->nbytes;
        d->params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    char label[32] = "";
    if (gguf_get_str(g, "general.size_label", label, sizeof label) < 0 || !label[0]) {
        double p = (double)d->params;
        if (p >= 1e9) snprintf(label, sizeof label, "%.0fB", p / 1e9);
        else snprintf(label, sizeof label, "%.0fM", p / 1e6);
    }
    char name[64];
    tensor_block_name(name, sizeof name, 0, TR_ATTN_Q);
    const gguf_tensor_t *q = gguf_find_tensor(g, name);
    char type[16];
    snprintf(type, sizeof type, "%s", q ? type_name(q->type) : "?");
    for (char *c = type; *c; c++) *c = (char)toupper((unsigned char)*c);
    snprintf(d->type, sizeof d->type, "%s %s %s", m->hp.arch_name, label, type);
    for (char *c = d->type; *c; c++)   /* it goes into JSON and a table unescaped */
        if (*c == '"' || *c == '\\' || *c == '|' || (unsigned char)*c < 0x20) *c = '_';
    d->weight_bytes = m->pl->weight_bytes;
    d->kv_pos_bytes = kv_cache_bytes_for(m->kv_type, m->hp.n_layer, 1, 1, m->hp.n_head_kv * m->hp.head_dim);
    d->kv_type = ops_kv_name(m->kv_type);
}

/* when the sampled tokens came: the first (the prompt's end) and the last */
typedef struct tok_times { double first, last; int n; } tok_times_t;

static int ignore_eog(void *user, int id, int32_t token, float logprob, const sched_top_t *top, int finish) {
    (void)id; (void)token; (void)logprob; (void)top; (void)finish;
    tok_times_t *tt = user;
    if (tt && token >= 0) {
        tt->last = time_now();
        if (!tt->n++) tt->first = tt->last;
    }
    return 0;
}

/* One run through the scheduler: n prompt tokens, then max_gen sampled tokens (greedy,
 * end-of-generation ignored). Returns wall seconds or <0 on failure (m->err set); tt (may be
 * NULL) gets the sampled tokens' times. */
static double run_once(tern_model *m, const int32_t *ids, int n, int max_gen, tok_times_t *tt) {
    sampler_params_t sp;
    sampler_params_default(&sp);
    sp.temp = 0;
    sched_t *s = &m->sched;
    if (tt) memset(tt, 0, sizeof *tt);
    double t0 = time_now();
    int id = sched_add(s, ids, n, max_gen, &sp, ignore_eog, tt);
    if (id < 0) {
        snprintf(m->err, sizeof m->err, "cannot start a sequence of %d tokens: %s", n, tern_strerror(id));
        return -1;
    }
    int rc;
    while ((rc = sched_step(s)) > 0) {}
    if (rc < 0) {
        snprintf(m->err, sizeof m->err, "%s", s->err);
        return -1;
    }
    return time_now() - t0;
}

/* tg with np concurrent sequences, one-token prompts ids[0..np), gen greedy steps each. Prompts
 * are admitted in groups of ceil(np / max_inflight) tokens per step, so the groups stay staggered
 * and pipeline across a cluster's stages. Returns wall seconds or <0 (m->err set). */
static double run_par(tern_model *m, const int32_t *ids, int np, int gen) {
    sampler_params_t sp;
    sampler_params_default(&sp);
    sp.temp = 0;
    sched_t *s = &m->sched;
    int nb = s->n_batch, rc = 0;
    s->n_batch = (np + s->max_inflight - 1) / s->max_inflight;   /* <= n_batch: steps keep their size */
    double t0 = time_now();
    for (int i = 0; i < np && rc >= 0; i++)
        if ((rc = sched_add(s, &ids[i], 1, gen, &sp, ignore_eog, NULL)) < 0)
            snprintf(m->err, sizeof m->err, "cannot start sequence %d of %d: %s", i + 1, np, tern_strerror(rc));
    while (rc >= 0 && (rc = sched_step(s)) > 0) {}
    if (rc < 0 && s->err[0]) snprintf(m->err, sizeof m->err, "%s", s->err);
    while (sched_active(s) > 0 && sched_step(s) > 0) {}   /* after a failed add: finish the rest */
    s->n_batch = nb;
    return rc < 0 ? -1 : time_now() - t0;
}

/* pp (n_gen == 0: the prompt, sampling once at its end) or tg (a one-token prompt, n_gen steps,
 * n_par sequences at once; at depth d: a d-token prompt first, then n_gen steps timed from the
 * prompt's token to the last, as llama-bench's -d) */
static int run_test(tern_model *m, bench_row_t *r, int reps, char *err, size_t errlen) {
    int n = r->n_gen ? (r->n_depth > 0 ? r->n_depth : r->n_par > 1 ? r->n_par : 1) : r->n_prompt;
    int gen = r->n_gen ? r->n_gen + (r->n_depth > 0) : 1;
    int32_t *ids = malloc((size_t)n * sizeof(int32_t));
    if (!ids) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    int bos = tokenizer_bos(m->tok), V = m->pl->n_vocab;
    srand(1234);   /* llama-bench: random tokens, BOS first when the vocab adds one */
    for (int i = 0; i < n; i++) ids[i] = rand() % V;
    if (bos >= 0 && tokenizer_add_bos(m->tok)) ids[0] = bos;
    int rc = 0;
    double t = run_once(m, ids, n, 1, NULL);   /* warm-up (llama-bench: the whole prompt, or one token) */
    for (int i = 0; i < reps && t >= 0; i++) {
        tok_times_t tt;
        t = r->n_par > 1 ? run_par(m, ids, r->n_par, gen) : run_once(m, ids, n, gen, &tt);
        if (t >= 0 && r->n_depth > 0 && tt.n != gen) {
            snprintf(m->err, sizeof m->err, "depth %d: %d of %d tokens came", r->n_depth, tt.n, gen);
            t = -1;
        } else if (t >= 0 && r->n_depth > 0) {
            t = tt.last - tt.first;
        }
        double toks = r->n_gen ? (double)r->n_gen * (r->n_par > 1 ? r->n_par : 1) : r->n_prompt;
        if (t >= 0) r->samples[r->n_samples++] = toks / (t > 0 ? t : 1e-9);
    }
    if (t < 0) rc = err_set(err, errlen, TERN_EINVAL, "%s", m->err);
    free(ids);
    row_stats(r);
    return rc;
}

/* the probe's buffer, made before any model is loaded (core/membw.h: membw_measure_on) */
static uint64_t *g_probe;
static size_t g_probe_bytes;

/* read bandwidth in GB/s: GPU 0's device memory (gpu), else the host's with `threads` threads
 * (core/membw: best of 3 passes over bytes ≫ L3); 0 when it cannot be measured */
static double bw_measure(size_t bytes, int threads, int gpu) {
    if (gpu) {
        double g = cuda_bench_read_gbps(bytes, 5);
        return g > 0 ? g : 0;
    }
    tpool_t *tp = tpool_new(threads);
    if (!tp) return 0;
    double bw = g_probe ? membw_measure_on(g_probe, g_probe_bytes, 3, tp) : membw_measure(bytes, 3, tp);
    tpool_destroy(&tp);
    return bw;
}

/* ---- output --------------------------------------------------------------------------------- */
/* llama-bench's markdown: left-aligned text columns, right-aligned numbers ("---:") */
static void md_sep(int width, int right) {
    printf(" ");
    for (int i = 0; i < width - right; i++) putchar('-');
    printf("%s |", right ? ":" : "");
}

static void print_md_header(int with_roof) {
    printf("| %-28s | %10s | %10s | %-8s | %7s | %13s | %20s |", "model", "size", "params", "backend", "threads", "test",
           "t/s");
    if (with_roof) printf(" %12s | %10s |", "roofline t/s", "% roofline");
    printf("\n|");
    static const int w[] = {28, 10, 10, 8, 7, 13, 20, 12, 10}, right[] = {0, 1, 1, 0, 1, 1, 1, 1, 1};
    for (int i = 0; i < (with_roof ? 9 : 7); i++) md_sep(w[i], right[i]);
    printf("\n");
}

static void test_name(const bench_row_t *r, char *buf, size_t cap) {
    if (r->n_gen && r->n_par > 1) snprintf(buf, cap, "tg%d x%d", r->n_gen, r->n_par);
    else if (r->n_gen && r->n_depth) snprintf(buf, cap, "tg%d @ d%d", r->n_gen, r->n_depth);
    else if (r->n_gen) snprintf(buf, cap, "tg%d", r->n_gen);
    else snprintf(buf, cap, "pp%d", r->n_prompt);
}

static void print_md_row(const bench_model_t *d, const bench_row_t *r, int with_roof) {
    char backend[16];
    snprintf(backend, sizeof backend, "%s", d->device ? d->device : "CPU");
    if (d->n_stages) snprintf(backend, sizeof backend, "%s x%d", d->backend, d->n_stages);
    char test[32], ts[48], size[32], params[32];
    test_name(r, test, sizeof test);
    snprintf(ts, sizeof ts, "%.2f ± %.2f", r->avg, r->sd);
    snprintf(size, sizeof size, "%.2f GiB", d->size / 1073741824.0);
    snprintf(params, sizeof params, "%.2f B", d->params / 1e9);
    /* "±" is 2 bytes but one column: widen by one */
    printf("| %-28s | %10s | %10s | %-8s | %7d | %13s | %21s |", d->type, size, params, backend, r->threads, test, ts);
    if (with_roof) {
        if (r->n_gen) printf(" %12.2f | %9.1f%% |", r->roofline, r->roofline > 0 ? 100 * r->avg / r->roofline : 0);
        else printf(" %12s | %10s |", "", "");
    }
    printf("\n");
}

static void print_json_row(const bench_model_t *d, const bench_row_t *r, int first, int last) {
    char test[32];
    test_name(r, test, sizeof test);
    printf("%s  {\n", first ? "[\n" : "");
    printf("    \"model_type\": \"%s\",\n", d->type);
    printf("    \"model_size\": %llu,\n", (unsigned long long)d->size);
    printf("    \"model_n_params\": %llu,\n", (unsigned long long)d->params);
    printf("    \"backend\": \"%s\",\n", d->n_stages ? d->backend : d->device ? d->device : "CPU");
    printf("    \"n_stages\": %d,\n", d->n_stages ? d->n_stages : 1);
    printf("    \"n_parallel\": %d,\n", r->n_par > 1 ? r->n_par : 1);
    printf("    \"n_threads\": %d,\n", r->threads);
    printf("    \"n_prompt\": %d,\n", r->n_prompt);
    printf("    \"n_gen\": %d,\n", r->n_gen);
    printf("    \"n_depth\": %d,\n", r->n_depth);
    printf("    \"type_kv\": \"%s\",\n", d->kv_type ? d->kv_type : "?");
    printf("    \"test\": \"%s\",\n", test);
    printf("    \"avg_ts\": %.6f,\n", r->avg);
    printf("    \"stddev_ts\": %.6f,\n", r->sd);
    printf("    \"samples_ts\": [");
    for (int i = 0; i < r->n_samples; i++) printf("%s%.6f", i ? ", " : " ", r->samples[i]);
    printf(" ]");
    if (r->n_gen)
        printf(",\n    \"bw_gbps\": %.3f,\n    \"roofline_ts\": %.3f,\n    \"frac_roofline\": %.4f", r->bw_gbps,
               r->roofline, r->roofline > 0 ? r->avg / r->roofline : 0);
    printf("\n  }%s\n", last ? "\n]" : ",");
}

/* ---- main ----------------------------------------------------------------------------------- */
typedef struct bench_opts {
    cli_model_opts_t mo;
    const char *p_list, *n_list, *t_list, *par_list, *out;
    int reps, kernels;
    unsigned long long bw_bytes;
    const char *d_list;
    int np, nn, nt, npar, max_par, nd;
    int pp[BENCH_MAX_LIST], tg[BENCH_MAX_LIST], th[BENCH_MAX_LIST], par[BENCH_MAX_LIST], dp[BENCH_MAX_LIST];
} bench_opts_t;

/* 0, 1 (help printed) or <0 with err */
static int bench_parse(bench_opts_t *b, int argc, char **argv, char *err, size_t errlen) {
    cli_model_opts_default(&b->mo);
    b->mo.p.n_batch = 512;   /* llama-bench's micro-batch (n_ubatch): pp512 is one forward step */
    b->p_list = "512";
    b->n_list = "128";
    b->t_list = NULL;
    b->par_list = "1";
    b->d_list = "0";
    b->out = "md";
    b->reps = 5;
    b->bw_bytes = 1ULL << 30;
    opt_t opts[96] = {
        {"-p", "--n-prompt", OPT_LIST, &b->p_list, "LIST", "prompt lengths for pp tests (0: none)", 0, 0},
        {"-n", "--n-gen", OPT_LIST, &b->n_list, "LIST", "generated tokens for tg tests (0: none)", 0, 0},
        {"-d", "--n-depth", OPT_LIST, &b->d_list, "LIST", "tg: tokens already in the KV cache (prefilled, not timed)", 0, 0},
        {"-r", "--repetitions", OPT_INT, &b->reps, "N", "repetitions of each test", 1, BENCH_MAX_REPS},
        {"-o", "--output", OPT_STR, &b->out, "FMT", "md | json", 0, 0},
        {NULL, "--bw-size", OPT_SIZE, &b->bw_bytes, "SIZE", "buffer streamed to measure the read bandwidth", 0, 0},
        {NULL, "--kernels", OPT_FLAG, &b->kernels, NULL, "kernel benchmarks instead (see tern bench --kernels --help)", 0, 0},
        {NULL, "--cuda", OPT_FLAG, &b->kernels, NULL, "GPU kernel benchmarks instead (see tern bench --cuda --help)", 0, 0},
    };
    int n = cli_model_opts_table(&b->mo, opts, (int)(sizeof opts / sizeof opts[0]), 0);
    for (int i = 0; i < n; i++)   /* -t takes a list here, as in llama-bench */
        if (opts[i].shrt && !strcmp(opts[i].shrt, "-t")) {
            opts[i].kind = OPT_LIST;
            opts[i].dst = &b->t_list;
            opts[i].metavar = "LIST";
            opts[i].help = "thread counts, e.g. 1,2,4 (default: all cores)";
        } else if (opts[i].lng && !strcmp(opts[i].lng, "--parallel")) {   /* a list here too */
            opts[i].kind = OPT_LIST;
            opts[i].dst = &b->par_list;
            opts[i].metavar = "LIST";
            opts[i].help = "tg with N concurrent sequences each, e.g. 1,2,4,8 (aggregate t/s)";
        } else if (opts[i].shrt && !strcmp(opts[i].shrt, "-c")) {
            opts[i].help = "context size (0: what the longest test needs)";
        }
    char *pos[1];
    int npos, rc = opt_parse(opts, argc, argv, pos, 0, &npos, err, errlen);
    if (rc == 1) {
        opt_help(stdout, "tern bench -m MODEL [-p 512] [-n 128] [-t 1,2] [-r 5] [-o md|json] [--head q8_0]", opts);
        return 1;
    }
    if (rc < 0 || (rc = cli_model_opts_check(&b->mo, err, errlen)) < 0) return rc;
    if (strcmp(b->out, "md") && strcmp(b->out, "json"))
        return err_set(err, errlen, TERN_EINVAL, "-o %s: expected md or json", b->out);
    if ((b->np = parse_list("-p", b->p_list, 0, BENCH_MAX_TOKENS, b->pp, BENCH_MAX_LIST, err, errlen)) < 0) return b->np;
    if ((b->nn = parse_list("-n", b->n_list, 0, BENCH_MAX_TOKENS, b->tg, BENCH_MAX_LIST, err, errlen)) < 0) return b->nn;
    if ((b->npar = parse_list("--parallel", b->par_list, 1, 256, b->par, BENCH_MAX_LIST, err, errlen)) < 0) return b->npar;
    if ((b->nd = parse_list("-d", b->d_list, 0, BENCH_MAX_TOKENS, b->dp, BENCH_MAX_LIST, err, errlen)) < 0) return b->nd;
    b->max_par = 1;
    for (int i = 0; i < b->npar; i++) b->max_par = b->par[i] > b->max_par ? b->par[i] : b->max_par;
    char tdef[16];
    snprintf(tdef, sizeof tdef, "%d", b->mo.p.n_threads);
    if ((b->nt = parse_list("-t", b->t_list ? b->t_list : tdef, 1, 1024, b->th, BENCH_MAX_LIST, err, errlen)) < 0)
        return b->nt;
    if (b->bw_bytes < (1u << 20) || b->bw_bytes > (64ULL << 30))
        return err_set(err, errlen, TERN_EINVAL, "--bw-size: expected 1MiB .. 64GiB");
    int max_p = 0, max_n = 0, max_d = 0;
    for (int i = 0; i < b->np; i++) max_p = b->pp[i] > max_p ? b->pp[i] : max_p;
    for (int i = 0; i < b->nn; i++) max_n = b->tg[i] > max_n ? b->tg[i] : max_n;
    for (int i = 0; i < b->nd; i++) max_d = b->dp[i] > max_d ? b->dp[i] : max_d;
    if (max_d > 0 && b->max_par > 1)
        return err_set(err, errlen, TERN_EINVAL, "-d applies to one-sequence tg tests: use it without -np");
    /* a prompt of p, or 1 + n generated, or d + n + 1 */
    int need = (max_p > max_n + 1 + max_d ? max_p : max_n + 1 + max_d) + 1;
    if (b->mo.p.n_ctx == 0) b->mo.p.n_ctx = need;
    else if (b->mo.p.n_ctx < need)
        return err_set(err, errlen, TERN_EINVAL, "-c %d is too small for -p %d / -n %d / -d %d (needs %d)", b->mo.p.n_ctx,
                       max_p, max_n, max_d, need);
    return 0;
}

static int bench_threads(bench_opts_t *b, int threads, bench_model_t *d, bench_row_t *rows,
                         int *nrows, char *err, size_t errlen) {
    tern_params p = b->mo.p;
    p.n_threads = threads;
    p.n_seq = b->max_par;
    tern_model *m;
    int rc = tern_load(&m, &p, err, errlen);
    if (rc < 0) return rc;
    model_describe(m, d);
    d->n_stages = p.cluster || p.workers || p.mpi ? m->pl->max_inflight : 0;
    d->backend = p.mpi ? "mpi" : "zmq";
    /* all layers on the GPU: its device memory is the roofline; a CPU+GPU split has none */
    int gpu = !d->n_stages && p.n_gpu_layers > 0, gpu_all = gpu && p.n_gpu_layers >= m->hp.n_layer;
    d->device = gpu_all ? "CUDA" : gpu ? "CUDA+CPU" : "CPU";
    double bw = 0;
    int first_row = *nrows;
    int ntg = b->npar * b->nd;   /* tg rows per -n value: every -np × every -d */
    for (int k = 0; k < b->np + b->nn * ntg && rc == 0; k++) {
        bench_row_t *r = &rows[(*nrows)];
        memset(r, 0, sizeof *r);
        r->threads = threads;
        if (k < b->np) {
            r->n_prompt = b->pp[k];
        } else {
            int j = (k - b->np) % ntg;
            r->n_gen = b->tg[(k - b->np) / ntg];
            r->n_par = b->par[j / b->nd];
            r->n_depth = b->dp[j % b->nd];
        }
        if (r->n_prompt == 0 && r->n_gen == 0) continue;
        log_i("bench: %s%d, %d sequences, depth %d, %d threads, %d repetitions", r->n_gen ? "tg" : "pp",
              r->n_gen ? r->n_gen : r->n_prompt, r->n_par > 1 ? r->n_par : 1, r->n_depth, threads, b->reps);
        if ((rc = run_test(m, r, b->reps, err, errlen)) < 0) break;
        if (r->n_gen && bw == 0 && (!gpu || gpu_all) && (bw = bw_measure((size_t)b->bw_bytes, threads, gpu_all)) == 0) {
            if (gpu_all) log_w("bench: the GPU bandwidth probe failed: no roofline");
            else log_w("bench: cannot allocate %llu bytes to measure the bandwidth: no roofline", b->bw_bytes);
        }
        (*nrows)++;
    }
    /* measured again after the tests, the better of the two kept: on a shared host the probe
     * swings run to run, and a roofline from a slow moment would flatter the tg figures */
    double bw2 = bw > 0 && rc == 0 ? bw_measure((size_t)b->bw_bytes, threads, gpu_all) : 0;
    if (bw2 > bw) bw = bw2;
    for (int i = first_row; i < *nrows; i++) {
        bench_row_t *r = &rows[i];
        if (!r->n_gen) continue;
        r->bw_gbps = bw;
        /* a step reads the weights once for all its sequences, and each sequence's KV cache up
         * to its position: at the test's mean position, depth + (n_gen + 1) / 2 */
        int par = r->n_par > 1 ? r->n_par : 1;
        double step = (double)m->pl->weight_bytes +
                      (double)par * (double)d->kv_pos_bytes * ((double)r->n_depth + (r->n_gen + 1) / 2.0);
        r->roofline = m->pl->weight_bytes ? bw * 1e9 / step * par : 0;
    }
    tern_model_free(&m);
    return rc;
}

int cli_bench(int argc, char **argv) {
    log_set_role("C");
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--cuda")) {
            return cuda_bench_main(argc, argv);   /* GPU kernels (worker/cuda_bench.c) */
        } else if (!strcmp(argv[i], "--kernels")) {
            return kbench_main(argc, argv);   /* it parses its own flags (and skips --kernels) */
        } else if (!strcmp(argv[i], "--hop")) {
            return cli_bench_hop(argc, argv);   /* transport only, no model */
        }
    bench_opts_t *b = calloc(1, sizeof *b);
    char err[512];
    int rc = b ? bench_parse(b, argc, argv, err, sizeof err) : err_set(err, sizeof err, TERN_ENOMEM, "out of memory");
    if (rc == 1) { free(b); return 0; }
    if (rc < 0) { fprintf(stderr, "tern bench: %s\n", err); free(b); return 1; }
    int maxrows = b->nt * (b->np + b->nn * b->npar * b->nd);
    bench_row_t *rows = calloc((size_t)maxrows, sizeof *rows);
    int has_tg = 0;
    for (int i = 0; i < b->nn; i++) has_tg |= b->tg[i] > 0;
    if (!rows) rc = err_set(err, sizeof err, TERN_ENOMEM, "out of memory");
    bench_model_t d;
    memset(&d, 0, sizeof d);
    int nrows = 0;
    if (has_tg && rc == 0) {
        g_probe_bytes = (size_t)b->bw_bytes / 4096 * 4096;
        if ((g_probe = tern_alloc(g_probe_bytes))) memset(g_probe, 1, g_probe_bytes);
    }
    for (int t = 0; t < b->nt && rc == 0; t++) rc = bench_threads(b, b->th[t], &d, rows, &nrows, err, sizeof err);
    tern_free(g_probe);
    g_probe = NULL;
    if (rc < 0) fprintf(stderr, "tern bench: %s\n", err);
    else if (!strcmp(b->out, "json")) {
        if (!nrows) printf("[]\n");
        for (int i = 0; i < nrows; i++) print_json_row(&d, &rows[i], i == 0, i == nrows - 1);
    } else {
        print_md_header(has_tg);
        for (int i = 0; i < nrows; i++) print_md_row(&d, &rows[i], has_tg);
        if (has_tg && nrows)
            printf("\nroofline: read bandwidth (%s, the better of a probe before and after the tests) / (%.1f MB "
                   "of weights + the KV cache read per token: %.1f KB a position, %s, at the test's mean depth)\n",
                   d.device && !strcmp(d.device, "CUDA") ? "GPU device memory" : "same threads", d.weight_bytes / 1e6,
                   d.kv_pos_bytes / 1e3, d.kv_type ? d.kv_type : "?");
    }
    fflush(stdout);
    free(rows);
    free(b);
    return rc < 0 ? 1 : 0;
}
