/* cli_perplexity: `tern perplexity` — llama-perplexity's method: tokenize the file whole, cut
 * it into chunks of n_ctx, run each from an empty cache with BOS in place of its first token, and
 * score the second half (token j+1 from position j, j in [n_ctx/2, n_ctx-1)); prints running
 * estimates and `Final estimate: PPL = X +/- Y`. It runs on the engine's pipeline like `tern run`
 * (embedded worker threads, or --cluster/--workers/--mpi): each step carries the tokens to score
 * as teacher-forced targets and the last stage sends back log p(target) only, so logits never
 * cross the network. Steps are kept in flight so a pipeline of stages works on several micro-
 * batches at once (every stage takes steps in order, so a chunk may reuse slot 0 while the one
 * before is still in a later stage).
 * KL divergence (--kl-divergence-base FILE, llama.cpp's file, kld.h): the scored positions are
 * sampled (greedy) with step_t.out_logits instead, so the last stage returns their whole logit
 * rows (at most PPL_ROWS a step), which are packed into FILE or compared with it, step by step.
 * Benchmarks (--hellaswag, --winogrande, --multiple-choice): the task file is parsed here, before
 * the model loads (its choices size the sequence slots), and scored by mcscore_run (mcscore.h). */
#include "coordinator/cli_common.h"
#include "coordinator/engine.h"
#include "coordinator/kld.h"
#include "coordinator/mcscore.h"
#include "coordinator/tokenizer.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "core/progress.h"
#include "worker/stage.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PPL_INFLIGHT 8
#define PPL_ROWS STAGE_SCORE_ROWS   /* sampled rows a step may have: the last stage's n_logit_rows >= this */

enum { PPL_PLAIN, PPL_KLD_SAVE, PPL_KLD_COMPARE };

typedef struct ppl_kld {   /* --kl-divergence-base */
    int mode;
    const char *path;
    FILE *f;
    kld_header_t h;
    uint16_t *rows;        /* (PPL_ROWS, kld_row_len(n_vocab)) one step's rows of the file */
    kld_stats_t st;
} ppl_kld_t;

typedef struct ppl_step {
    step_t s;
    int chunk;            /* which chunk this micro-batch belongs to */
    int last_of_chunk;    /* 1: the chunk's estimate can be printed when it is done */
    int32_t *tgt;         /* (n_batch,) s.target's buffer (plain) */
    int n_rows;           /* KLD: sampled rows, and the token that followed each */
    int32_t *row_tgt;
} ppl_step_t;

static void ppl_steps_free(ppl_step_t *ps, int n) {
    for (int i = 0; i < n; i++) {
        cli_score_step_free(&ps[i].s);
        free(ps[i].s.out_logits);
        free(ps[i].tgt);
        free(ps[i].row_tgt);
    }
}

/* n steps of nb tokens; n_vocab > 0: with room for PPL_ROWS rows of logits each (KLD) */
static int ppl_steps_alloc(ppl_step_t *ps, int n, int nb, int n_embd, int n_vocab) {
    int ok = 1;
    memset(ps, 0, (size_t)n * sizeof *ps);
    for (int i = 0; i < n; i++) {
        step_t *s = &ps[i].s;
        ps[i].tgt = malloc((size_t)nb * sizeof(int32_t));
        ps[i].row_tgt = malloc(PPL_ROWS * sizeof(int32_t));
        ok = cli_score_step_alloc(s, nb, PPL_ROWS, n_embd) == 0 && ok && ps[i].tgt && ps[i].row_tgt;
        if (n_vocab > 0) ok = ok && (s->out_logits = malloc((size_t)PPL_ROWS * (size_t)n_vocab * sizeof(float)));
    }
    return ok ? 0 : TERN_ENOMEM;
}

static char *slurp(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { err_set(err, errlen, TERN_EIO, "cannot open text file '%s'", path); return NULL; }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = (n + 65536 + 1) * 2;
            char *nb = cap <= (1UL << 31) ? realloc(buf, cap) : NULL;
            if (!nb) { free(buf); fclose(f); err_set(err, errlen, TERN_ENOMEM, "text file '%s' is too large", path); return NULL; }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, 65536, f);
        n += r;
        if (r < 65536) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); err_set(err, errlen, TERN_EIO, "cannot read text file '%s'", path); return NULL; }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* tokens of the whole text (BOS first when the vocab adds one); count or <0 */
static int tokenize_all(tokenizer_t *tok, const char *text, size_t len, int32_t **out, char *err, size_t errlen) {
    if (len > (size_t)INT32_MAX - 16) return err_set(err, errlen, TERN_EINVAL, "text file is too large");
    int cap = (int)len + 16;
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *ids = malloc((size_t)cap * sizeof(int32_t));
        if (!ids) return err_set(err, errlen, TERN_ENOMEM, "out of memory for %d tokens", cap);
        int n = tokenizer_encode(tok, text, len, tokenizer_add_bos(tok), 0, ids, cap);
        if (n < 0) { free(ids); return err_set(err, errlen, n, "cannot tokenize the text"); }
        if (n <= cap) { *out = ids; return n; }
        free(ids);
        cap = n;
    }
    return err_set(err, errlen, TERN_EINVAL, "cannot tokenize the text");
}

/* Fills step ps for tokens [b0, b0 + k) of chunk c (its first token BOS when add_bos). Plain: the
 * scored tokens as targets; kld: sampled instead (their logits come back), targets in row_tgt. */
static int ppl_fill(tern_model *m, ppl_step_t *ps, const int32_t *chunk, int c, int b0, int k, int n_ctx, int bos,
                    int kld, char *err, size_t errlen) {
    step_t *s = &ps->s;
    int32_t *tgt = ps->tgt;
    const int first = n_ctx / 2;
    ps->n_rows = 0;
    for (int i = 0; i < k; i++) {
        int j = b0 + i, scored = j >= first && j < n_ctx - 1;
        s->tokens[i] = j == 0 && bos >= 0 ? bos : chunk[j];
        s->pos[i] = j;
        tgt[i] = scored && !kld ? chunk[j + 1] : -1;
        s->sample[i] = (uint8_t)(scored && kld);
        if (scored && kld) ps->row_tgt[ps->n_rows++] = chunk[j + 1];
    }
    s->target = kld ? NULL : tgt;   /* kld: no teacher forcing */
    s->n = k;
    if (embed_lookup(&m->emb, s->tokens, k, s->h) < 0)
        return err_set(err, errlen, TERN_EINVAL, "token id outside the vocabulary");
    ps->chunk = c;
    ps->last_of_chunk = b0 + k == n_ctx;
    return 0;
}

/* Where each step of a chunk starts (starts[0..n], starts[n] = n_ctx); returns n. Steps of
 * n_batch tokens; kld: also at most PPL_ROWS scored positions a step. */
static int ppl_plan(int n_ctx, int n_batch, int kld, int *starts) {
    int n = 0, first = n_ctx / 2;
    for (int b0 = 0; b0 < n_ctx; n++) {
        starts[n] = b0;
        int k = n_ctx - b0 < n_batch ? n_ctx - b0 : n_batch;
        int lo = b0 > first ? b0 : first, hi = b0 + k < n_ctx - 1 ? b0 + k : n_ctx - 1;
        if (kld && hi - lo > PPL_ROWS) k = lo + PPL_ROWS - b0;
        b0 += k;
    }
    starts[n] = n_ctx;
    return n;
}

/* A finished step's rows (kld): packed into the base file (nll, nll2: the running sums of
 * -log p(target)), or compared with the file's (kd->st). */
static int ppl_rows(ppl_kld_t *kd, ppl_step_t *p, int n_vocab, double *nll, double *nll2, char *err, size_t errlen) {
    const step_t *s = &p->s;
    if (s->n_out != p->n_rows)
        return err_set(err, errlen, TERN_EPROTO, "the pipeline returned %d rows of logits, expected %d", s->n_out,
                       p->n_rows);
    size_t len = kld_row_len(n_vocab);
    if (kd->mode == PPL_KLD_COMPARE) {
        char why[300];
        int rc = kld_read_rows(kd->f, n_vocab, p->n_rows, kd->rows, why, sizeof why);
        if (rc < 0) return err_set(err, errlen, rc, "%s: chunk %d: %s", kd->path, p->chunk + 1, why);
    }
    for (int r = 0; r < p->n_rows; r++) {
        const float *l = s->out_logits + (size_t)r * (size_t)n_vocab;
        uint16_t *row = kd->rows + (size_t)r * len;
        if (kd->mode == PPL_KLD_SAVE) {
            double v = kld_row_pack(l, n_vocab, p->row_tgt[r], row);
            *nll += v, *nll2 += v * v;
        } else if (kld_stats_add(&kd->st, l, n_vocab, row, p->row_tgt[r]) < 0) {
            return err_set(err, errlen, TERN_ENOMEM, "out of memory for the statistics");
        }
    }
    if (kd->mode == PPL_KLD_SAVE && fwrite(kd->rows, len * sizeof *kd->rows, (size_t)p->n_rows, kd->f) != (size_t)p->n_rows)
        return err_set(err, errlen, TERN_EIO, "cannot write the KL-divergence base file");
    return 0;
}

static void ppl_chunk_done(ppl_kld_t *kd, int chunk, double nll, long count) {
    if (kd->mode != PPL_KLD_COMPARE) {
        printf("[%d]%.4lf,", chunk + 1, exp(nll / count));
    } else {
        if (chunk == 0) kld_stats_print_head(stdout);
        kld_stats_print_chunk(stdout, &kd->st, chunk + 1);
    }
    fflush(stdout);
}

static int ppl_run(tern_model *m, ppl_kld_t *kd, int32_t *toks, int n_tok, int n_ctx, int n_batch, int n_chunks_max,
                   char *err, size_t errlen) {
    int n_chunk = n_tok / n_ctx;
    if (n_chunks_max > 0 && n_chunks_max < n_chunk) n_chunk = n_chunks_max;
    int bos = tokenizer_add_bos(m->tok) ? tokenizer_bos(m->tok) : -1;
    const int kld = kd->mode != PPL_PLAIN, first = n_ctx / 2, V = m->pl->n_vocab;
    int *starts = malloc(((size_t)n_ctx + 1) * sizeof *starts);
    if (!starts) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    const int per_chunk = ppl_plan(n_ctx, n_batch, kld, starts);
    int inflight = m->pl->max_inflight < 1 ? 1 : m->pl->max_inflight > PPL_INFLIGHT ? PPL_INFLIGHT : m->pl->max_inflight;
    fprintf(stderr, "perplexity: %d tokens, %d chunks of %d, batch %d, scoring tokens [%d, %d) of each\n", n_tok,
            n_chunk, n_ctx, n_batch, first + 1, n_ctx);
    ppl_step_t ps[PPL_INFLIGHT];
    int rc = 0;
    if (ppl_steps_alloc(ps, inflight, n_batch, m->hp.n_embd, kld ? V : 0) < 0 ||
        (kld && !(kd->rows = malloc((size_t)PPL_ROWS * kld_row_len(V) * sizeof *kd->rows))))
        rc = err_set(err, errlen, TERN_ENOMEM, "out of memory for %d steps of %d tokens", inflight, n_batch);
    if (rc == 0 && kd->mode == PPL_KLD_SAVE) {
        kd->h = (kld_header_t){n_ctx, V, n_chunk};
        rc = kld_write_header(kd->f, &kd->h, toks, err, errlen);
    }
    if (rc == 0 && kld) {   /* the scored rows are sampled: greedy, no penalty (their logits come back raw) */
        sampler_params_t sp;
        sampler_params_default(&sp);
        sp.temp = 0;
        rc = m->pl->ops->seq_start(m->pl, 0, &sp);
        if (rc < 0) err_set(err, errlen, rc, "cannot start the sequence slot");
    }
    double nll = 0, nll2 = 0, t0 = time_now();
    long count = 0;
    int next = 0, done = 0, total = n_chunk * per_chunk, head = 0, queued = 0;
    uint64_t id = 1;
    while (rc == 0 && done < total) {
        while (rc == 0 && next < total && queued < inflight) {   /* keep the stages busy */
            ppl_step_t *p = &ps[(head + queued) % inflight];
            int c = next / per_chunk, b0 = starts[next % per_chunk], k = starts[next % per_chunk + 1] - b0;
            if ((rc = ppl_fill(m, p, toks + (size_t)c * n_ctx, c, b0, k, n_ctx, bos, kld, err, errlen)) < 0) break;
            p->s.id = id++;
            if ((rc = m->pl->ops->submit(m->pl, &p->s)) < 0) {
                rc = err_set(err, errlen, rc, "%s", p->s.err[0] ? p->s.err : "the pipeline refused a step");
                break;
            }
            next++, queued++;
        }
        if (rc < 0 || !queued) break;
        ppl_step_t *p = &ps[head];
        step_t *got = m->pl->ops->wait(m->pl, -1);
        if (got != &p->s) { rc = err_set(err, errlen, TERN_EIO, "the pipeline lost a step"); break; }
        if (got->rc < 0) { rc = err_set(err, errlen, got->rc, "%s", got->err); break; }
        head = (head + 1) % inflight, queued--, done++;
        if (kld) {
            if ((rc = ppl_rows(kd, p, V, &nll, &nll2, err, errlen)) < 0) break;
            count += p->n_rows;
        } else {
            for (int i = 0; i < got->n_scored; i++) {
                double v = -got->out_target_lp[i];
                nll += v;
                nll2 += v * v;
            }
            count += got->n_scored;
        }
        if (p->last_of_chunk) {
            if (p->chunk == 0)
                fprintf(stderr, "perplexity: %.2f seconds per pass - ETA %.2f minutes\n", time_now() - t0,
                        (time_now() - t0) * n_chunk / 60);
            ppl_chunk_done(kd, p->chunk, nll, count);
        }
    }
    while (queued-- > 0) m->pl->ops->wait(m->pl, -1);   /* after an error: collect what is still out */
    ppl_steps_free(ps, inflight);
    free(starts);
    if (rc < 0) return rc;
    printf("\n");
    if (kd->mode == PPL_KLD_COMPARE) {
        kld_stats_print(stdout, &kd->st);
        return 0;
    }
    double mean = nll / count, var = nll2 / count - mean * mean, ppl = exp(mean);
    if (!(var > 0) || count < 2) return err_set(err, errlen, TERN_EINVAL, "unexpected non-positive variance of log(prob)");
    printf("Final estimate: PPL = %.4lf +/- %.5lf\n", ppl, sqrt(var / (count - 1)) * ppl);
    return 0;
}

/* --kl-divergence: the base file's header and tokens, before the model loads (its n_ctx is the
 * context); 0 or <0 with the reason in err */
static int ppl_kld_open_base(ppl_kld_t *kd, const char *path, int32_t **toks, char *err, size_t errlen) {
    if (!(kd->f = fopen(path, "rb"))) return err_set(err, errlen, TERN_EIO, "cannot open '%s'", path);
    char why[400];
    int rc = kld_read_header(kd->f, &kd->h, toks, why, sizeof why);
    return rc < 0 ? err_set(err, errlen, rc, "%s: %s", path, why) : 0;
}

/* the base file against the loaded model: same vocabulary */
static int ppl_kld_check(const ppl_kld_t *kd, const tern_model *m, const char *path, char *err, size_t errlen) {
    if (kd->h.n_vocab != m->pl->n_vocab)
        return err_set(err, errlen, TERN_EINVAL, "%s: made with a vocabulary of %d tokens, this model has %d", path,
                       kd->h.n_vocab, m->pl->n_vocab);
    return 0;
}

/* -c for the tasks of set, before the model loads: the user's (0: none given), checked against
 * the longest task now rather than after the load; or just what the longest task needs (8 at
 * least), so a benchmark never fails on a long task nor reserves a context it does not use (the
 * KV cache is slots x -c). Only the model file's tokenizer is read. 0 or <0 with err. */
static int mc_size_ctx(cli_model_opts_t *mo, const mc_set_t *set, char *err, size_t errlen) {
    gguf_t *g = NULL;
    tokenizer_t *tok = NULL;
    if (!mo->p.model) return err_set(err, errlen, TERN_EINVAL, "no model given (-m FILE)");
    int rc = gguf_open(&g, mo->p.model, err, errlen);
    if (rc == 0) rc = tokenizer_load(&tok, g, err, errlen);
    if (rc == 0) rc = mcscore_ctx_need(tok, set, mo->p.n_ctx, err, errlen);
    if (rc > (1 << 20) && mo->p.n_ctx <= 0)   /* -c's own limit */
        rc = err_set(err, errlen, TERN_EINVAL, "a task needs %d positions, more than -c may be (%d)", rc, 1 << 20);
    if (rc >= 0 && mo->p.n_ctx <= 0) {
        mo->p.n_ctx = rc > 8 ? rc : 8;
        log_i("perplexity: -c %d, what the longest task needs", mo->p.n_ctx);
    }
    tokenizer_destroy(&tok);
    gguf_close(&g);
    return rc < 0 ? rc : 0;
}

/* --hellaswag / --winogrande / --multiple-choice: parse the task file, size -c (mc_size_ctx),
 * load the model with a sequence slot per choice (up to 4 tasks' worth, 16 slots, so short tasks
 * share a step; -np raises it), score.
 * Exit status as cli_perplexity's. */
static int ppl_mc(cli_model_opts_t *mo, int kind, const char *file, int n_pick, int kv_copy) {
    static const char *flag[] = {"--hellaswag", "--winogrande", "--multiple-choice"};
    char err[512];
    size_t len = 0;
    char *buf = slurp(file, &len, err, sizeof err);
    mc_set_t set = {0};
    int rc = buf ? 0 : TERN_EIO;
    if (rc == 0) {
        char why[400];
        rc = kind == MC_HELLASWAG   ? mc_parse_hellaswag(buf, len, n_pick, &set, why, sizeof why)
             : kind == MC_WINOGRANDE ? mc_parse_winogrande(buf, len, n_pick, &set, why, sizeof why)
                                     : mc_parse_multi((const uint8_t *)buf, len, n_pick, &set, why, sizeof why);
        if (rc < 0) err_set(err, sizeof err, rc, "%s %s: %s", flag[kind], file, why);
    }
    free(buf);
    tern_model *m = NULL;
    if (rc == 0) rc = mc_size_ctx(mo, &set, err, sizeof err);
    if (rc == 0) {
        int most = 1;
        for (int i = 0; i < set.n; i++) most = set.t[i].n_choice > most ? set.t[i].n_choice : most;
        int want = 4 * most <= 16 ? 4 * most : most > 16 ? most : 16;   /* the KV cache is slots × -c */
        int slots = mo->p.n_seq > want ? mo->p.n_seq : want;
        mo->p.n_seq = slots;
        if (mo->p.n_batch > mo->p.n_ctx) mo->p.n_batch = mo->p.n_ctx;
        rc = tern_load(&m, &mo->p, err, sizeof err);
        if (rc == 0) rc = mcscore_run(m, &set, mo->p.n_batch, slots, kv_copy, err, sizeof err);
    }
    if (rc < 0) fprintf(stderr, "tern perplexity: %s\n", err);
    mc_set_free(&set);
    tern_model_free(&m);
    return rc < 0 ? 1 : 0;
}

int cli_perplexity(int argc, char **argv) {
    log_set_role("C");
    cli_model_opts_t mo;
    cli_model_opts_default(&mo);
    mo.p.n_ctx = 0;   /* 512 for a text, a benchmark's tasks size it (mc_size_ctx) */
    mo.p.n_batch = 512;
    const char *file = NULL, *base = NULL;
    int chunks = -1, compare = 0, hs = 0, wg = 0, mc = 0, hs_tasks = 400, wg_tasks = 0, mc_tasks = 0, no_copy = 0;
    opt_t opts[96] = {
        {"-f", "--file", OPT_STR, &file, "FILE", "text to score", 0, 0},
        {NULL, "--chunks", OPT_INT, &chunks, "N", "score at most N chunks (-1: all)", -1, 1 << 30},
        {NULL, "--kl-divergence-base", OPT_STR, &base, "FILE",
         "llama.cpp's base log-probability file: written from -f's text, or read with --kl-divergence", 0, 0},
        {NULL, "--kl-divergence", OPT_FLAG, &compare, NULL,
         "compare this model with --kl-divergence-base's (its tokens; no -f): KLD, Δp, same top p", 0, 0},
        {NULL, "--hellaswag", OPT_FLAG, &hs, NULL,
         "HellaSwag score of -f (6 lines a task: context, gold ending 0-3, 4 endings): acc_norm", 0, 0},
        {NULL, "--hellaswag-tasks", OPT_INT, &hs_tasks, "N", "score N tasks, picked as llama.cpp picks them", 1,
         MC_MAX_TASKS},
        {NULL, "--winogrande", OPT_FLAG, &wg, NULL,
         "Winogrande score of -f (CSV: index,sentence with _,option1,option2,answer 1|2)", 0, 0},
        {NULL, "--winogrande-tasks", OPT_INT, &wg_tasks, "N", "score N random tasks (0: all)", 0, MC_MAX_TASKS},
        {NULL, "--multiple-choice", OPT_FLAG, &mc, NULL,
         "multiple-choice score of -f (llama.cpp's binary file of ARC, MMLU, TruthfulQA tasks)", 0, 0},
        {NULL, "--multiple-choice-tasks", OPT_INT, &mc_tasks, "N", "score N random tasks (0: all)", 0, MC_MAX_TASKS},
        {NULL, "--no-kv-copy", OPT_FLAG, &no_copy, NULL,
         "benchmarks: feed a task's common prefix in every choice's slot (default: once, copied to the others)", 0, 0},
    };
    cli_model_opts_table(&mo, opts, (int)(sizeof opts / sizeof opts[0]), 0);
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)   /* -c means something of its own here */
        if (opts[i].lng && !strcmp(opts[i].lng, "--ctx-size"))
            opts[i].help = "context size per sequence (0: 512 for a text; for --hellaswag, --winogrande and "
                           "--multiple-choice what the longest task needs)";
    char err[512], *pos[1];
    int npos, rc = opt_parse(opts, argc, argv, pos, 0, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern perplexity -m MODEL -f TEXT [-c 512] [-b N] [--kl-divergence-base FILE] [options]\n"
                         "       tern perplexity -m MODEL --kl-divergence-base FILE --kl-divergence\n"
                         "       tern perplexity -m MODEL -f TASKS --hellaswag|--winogrande|--multiple-choice [-np N]", opts);
        return 0;
    }
    if (rc == 0) rc = cli_model_opts_check(&mo, err, sizeof err);
    if (rc == 0 && hs + wg + mc > 1)
        rc = err_set(err, sizeof err, TERN_EINVAL, "--hellaswag, --winogrande and --multiple-choice: one at a time");
    if (rc == 0 && hs + wg + mc && (base || compare))
        rc = err_set(err, sizeof err, TERN_EINVAL, "--kl-divergence does not go with a benchmark's tasks");
    if (rc == 0 && hs + wg + mc && !file)
        rc = err_set(err, sizeof err, TERN_EINVAL, "no task file given: use -f FILE");
    if (rc == 0 && compare && !base)
        rc = err_set(err, sizeof err, TERN_EINVAL, "--kl-divergence needs --kl-divergence-base FILE");
    if (rc == 0 && !file && !compare) rc = err_set(err, sizeof err, TERN_EINVAL, "no text given: use -f FILE");
    if (rc == 0 && mo.p.n_ctx == 0 && !(hs + wg + mc)) mo.p.n_ctx = 512;
    if (rc == 0 && mo.p.n_ctx < 8 && !(hs + wg + mc && mo.p.n_ctx == 0))
        rc = err_set(err, sizeof err, TERN_EINVAL, "-c %d: at least 8 tokens", mo.p.n_ctx);
    if (rc < 0) { fprintf(stderr, "tern perplexity: %s\n", err); return 1; }
    if (hs || wg || mc)
        return ppl_mc(&mo, hs ? MC_HELLASWAG : wg ? MC_WINOGRANDE : MC_MULTI, file, hs ? hs_tasks : wg ? wg_tasks : mc_tasks,
                      !no_copy);
    ppl_kld_t kd = {.mode = !base ? PPL_PLAIN : compare ? PPL_KLD_COMPARE : PPL_KLD_SAVE, .path = base};
    kld_stats_init(&kd.st);
    size_t len = 0;
    char *text = NULL;
    int32_t *toks = NULL;
    int n_tok = 0;
    if (kd.mode == PPL_KLD_COMPARE) {
        rc = ppl_kld_open_base(&kd, base, &toks, err, sizeof err);
        if (rc == 0 && file) log_w("perplexity: --kl-divergence scores the base file's tokens; -f %s is not read", file);
        if (rc == 0) mo.p.n_ctx = kd.h.n_ctx, n_tok = kd.h.n_ctx * kd.h.n_chunk;
    } else {
        text = slurp(file, &len, err, sizeof err);
        rc = text ? 0 : TERN_EIO;
        if (rc == 0 && kd.mode == PPL_KLD_SAVE && !(kd.f = fopen(base, "wb")))
            rc = err_set(err, sizeof err, TERN_EIO, "cannot create '%s'", base);
    }
    tern_model *m = NULL;
    if (rc == 0) {
        if (mo.p.n_batch > mo.p.n_ctx) mo.p.n_batch = mo.p.n_ctx;
        mo.p.n_seq = 1;
        double t0 = time_now();
        rc = tern_load(&m, &mo.p, err, sizeof err);
        if (rc == 0 && kd.mode == PPL_KLD_COMPARE) rc = ppl_kld_check(&kd, m, base, err, sizeof err);
        if (rc == 0 && kd.mode != PPL_KLD_COMPARE) {
            n_tok = tokenize_all(m->tok, text, len, &toks, err, sizeof err);
            if (n_tok >= 0 && n_tok < 2 * m->n_ctx)
                n_tok = err_set(err, sizeof err, TERN_EINVAL,
                                "'%s' has %d tokens; perplexity with a context of %d needs at least %d (use a longer "
                                "text or a smaller -c)", file, n_tok, m->n_ctx, 2 * m->n_ctx);
            rc = n_tok < 0 ? n_tok : 0;
        }
        if (rc == 0) {
            log_d("perplexity: loaded and tokenized in %.2f s", time_now() - t0);
            rc = ppl_run(m, &kd, toks, n_tok, m->n_ctx, mo.p.n_batch, chunks, err, sizeof err);
        }
    }
    if (kd.f && fclose(kd.f) != 0 && rc == 0 && kd.mode == PPL_KLD_SAVE)
        rc = err_set(err, sizeof err, TERN_EIO, "cannot write '%s'", base);
    if (rc < 0) fprintf(stderr, "tern perplexity: %s\n", err);
    if (rc < 0 && kd.mode == PPL_KLD_SAVE) remove(base);   /* no half-written base file */
    free(kd.rows);
    kld_stats_free(&kd.st);
    free(toks);
    free(text);
    tern_model_free(&m);
    return rc < 0 ? 1 : 0;
}
