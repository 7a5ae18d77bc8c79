/* cli_perplexity: `tern perplexity` — llama-perplexity's method: tokenize the file whole, cut
 * it into chunks of n_ctx, run each from an empty cache with BOS in place of its first token, and
 * score the second half (token j+1 from position j, j in [n_ctx/2, n_ctx-1)); prints running
 * estimates and `Final estimate: PPL = X +/- Y`. It runs on the engine's pipeline like `tern run`
 * (embedded worker threads, or --cluster/--workers/--mpi): each step carries the tokens to score
 * as teacher-forced targets and the last stage sends back log p(target) only, so logits never
 * cross the network. Steps are kept in flight so a pipeline of stages works on several micro-
 * batches at once (every stage takes steps in order, so a chunk may reuse slot 0 while the one
 * before is still in a later stage). Not here: KLD, HellaSwag. */
#include "coordinator/cli_common.h"
#include "coordinator/engine.h"
#include "coordinator/tokenizer.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "core/progress.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PPL_INFLIGHT 8

typedef struct ppl_step {
    step_t s;
    int chunk;            /* which chunk this micro-batch belongs to */
    int last_of_chunk;    /* 1: the chunk's estimate can be printed when it is done */
} ppl_step_t;

static void ppl_steps_free(ppl_step_t *ps, int n) {
    for (int i = 0; i < n; i++) {
        free(ps[i].s.tokens);
        free(ps[i].s.seq);
        free(ps[i].s.pos);
        free(ps[i].s.sample);
        free((void *)ps[i].s.target);
        free(ps[i].s.out_target_lp);
        free(ps[i].s.out_tok);
        free(ps[i].s.out_lp);
        tern_free(ps[i].s.h);
    }
}

static int ppl_steps_alloc(ppl_step_t *ps, int n, int nb, int n_embd) {
    int ok = 1;
    memset(ps, 0, (size_t)n * sizeof *ps);
    for (int i = 0; i < n; i++) {
        step_t *s = &ps[i].s;
        s->tokens = malloc((size_t)nb * sizeof(int32_t));
        s->seq = calloc((size_t)nb, sizeof(int));
        s->pos = malloc((size_t)nb * sizeof(int));
        s->sample = calloc((size_t)nb, 1);
        s->target = malloc((size_t)nb * sizeof(int32_t));
        s->out_target_lp = malloc((size_t)nb * sizeof(double));
        s->out_tok = malloc(sizeof(int32_t));
        s->out_lp = malloc(sizeof(float));
        s->h = tern_alloc((size_t)nb * (size_t)n_embd * sizeof(float));
        ok = ok && s->tokens && s->seq && s->pos && s->sample && s->target && s->out_target_lp && s->out_tok &&
             s->out_lp && s->h;
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

/* Fills step ps for tokens [b0, b0 + k) of chunk c (its first token BOS when add_bos). */
static int ppl_fill(tern_model *m, ppl_step_t *ps, const int32_t *chunk, int c, int b0, int k, int n_ctx, int bos,
                    char *err, size_t errlen) {
    step_t *s = &ps->s;
    int32_t *tgt = (int32_t *)s->target;
    const int first = n_ctx / 2;
    for (int i = 0; i < k; i++) {
        int j = b0 + i;
        s->tokens[i] = j == 0 && bos >= 0 ? bos : chunk[j];
        s->pos[i] = j;
        tgt[i] = j >= first && j < n_ctx - 1 ? chunk[j + 1] : -1;
    }
    s->n = k;
    if (embed_lookup(&m->emb, s->tokens, k, s->h) < 0)
        return err_set(err, errlen, TERN_EINVAL, "token id outside the vocabulary");
    ps->chunk = c;
    ps->last_of_chunk = b0 + k == n_ctx;
    return 0;
}

static int ppl_run(tern_model *m, int32_t *toks, int n_tok, int n_ctx, int n_batch, int n_chunks_max, char *err,
                   size_t errlen) {
    int n_chunk = n_tok / n_ctx;
    if (n_chunks_max > 0 && n_chunks_max < n_chunk) n_chunk = n_chunks_max;
    int bos = tokenizer_add_bos(m->tok) ? tokenizer_bos(m->tok) : -1;
    const int first = n_ctx / 2, per_chunk = (n_ctx + n_batch - 1) / n_batch;
    int inflight = m->pl->max_inflight < 1 ? 1 : m->pl->max_inflight > PPL_INFLIGHT ? PPL_INFLIGHT : m->pl->max_inflight;
    fprintf(stderr, "perplexity: %d tokens, %d chunks of %d, batch %d, scoring tokens [%d, %d) of each\n", n_tok,
            n_chunk, n_ctx, n_batch, first + 1, n_ctx);
    ppl_step_t ps[PPL_INFLIGHT];
    if (ppl_steps_alloc(ps, inflight, n_batch, m->hp.n_embd) < 0) {
        ppl_steps_free(ps, inflight);
        return err_set(err, errlen, TERN_ENOMEM, "out of memory for %d steps of %d tokens", inflight, n_batch);
    }
    double nll = 0, nll2 = 0, t0 = time_now();
    long count = 0;
    int rc = 0, next = 0, done = 0, total = n_chunk * per_chunk, head = 0, queued = 0;
    uint64_t id = 1;
    while (rc == 0 && done < total) {
        while (rc == 0 && next < total && queued < inflight) {   /* keep the stages busy */
            ppl_step_t *p = &ps[(head + queued) % inflight];
            int c = next / per_chunk, b0 = (next % per_chunk) * n_batch;
            int k = n_ctx - b0 < n_batch ? n_ctx - b0 : n_batch;
            if ((rc = ppl_fill(m, p, toks + (size_t)c * n_ctx, c, b0, k, n_ctx, bos, err, errlen)) < 0) break;
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
        for (int i = 0; i < got->n_scored; i++) {
            double v = -got->out_target_lp[i];
            nll += v;
            nll2 += v * v;
        }
        count += got->n_scored;
        head = (head + 1) % inflight, queued--, done++;
        if (p->last_of_chunk) {
            if (p->chunk == 0)
                fprintf(stderr, "perplexity: %.2f seconds per pass - ETA %.2f minutes\n", time_now() - t0,
                        (time_now() - t0) * n_chunk / 60);
            printf("[%d]%.4lf,", p->chunk + 1, exp(nll / count));
            fflush(stdout);
        }
    }
    while (queued-- > 0) m->pl->ops->wait(m->pl, -1);   /* after an error: collect what is still out */
    ppl_steps_free(ps, inflight);
    if (rc < 0) return rc;
    printf("\n");
    double mean = nll / count, var = nll2 / count - mean * mean, ppl = exp(mean);
    if (!(var > 0) || count < 2) return err_set(err, errlen, TERN_EINVAL, "unexpected non-positive variance of log(prob)");
    printf("Final estimate: PPL = %.4lf +/- %.5lf\n", ppl, sqrt(var / (count - 1)) * ppl);
    return 0;
}

int cli_perplexity(int argc, char **argv) {
    log_set_role("C");
    cli_model_opts_t mo;
    cli_model_opts_default(&mo);
    mo.p.n_ctx = 512;
    mo.p.n_batch = 512;
    const char *file = NULL;
    int chunks = -1;
    opt_t opts[48] = {
        {"-f", "--file", OPT_STR, &file, "FILE", "text to score", 0, 0},
        {NULL, "--chunks", OPT_INT, &chunks, "N", "score at most N chunks (-1: all)", -1, 1 << 30},
    };
    cli_model_opts_table(&mo, opts, 2, 48, 0);
    char err[512], *pos[1];
    int npos, rc = opt_parse(opts, argc, argv, pos, 0, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern perplexity -m MODEL -f TEXT [-c 512] [-b N] [options]", opts);
        return 0;
    }
    if (rc == 0) rc = cli_model_opts_check(&mo, err, sizeof err);
    if (rc == 0 && !file) rc = err_set(err, sizeof err, TERN_EINVAL, "no text given: use -f FILE");
    if (rc == 0 && mo.p.n_ctx < 8) rc = err_set(err, sizeof err, TERN_EINVAL, "-c %d: at least 8 tokens", mo.p.n_ctx);
    if (rc < 0) { fprintf(stderr, "tern perplexity: %s\n", err); return 1; }
    size_t len = 0;
    char *text = slurp(file, &len, err, sizeof err);
    if (!text) { fprintf(stderr, "tern perplexity: %s\n", err); return 1; }
    if (mo.p.n_batch > mo.p.n_ctx) mo.p.n_batch = mo.p.n_ctx;
    mo.p.n_seq = 1;
    tern_model *m = NULL;
    int32_t *toks = NULL;
    double t0 = time_now();
    rc = tern_load(&m, &mo.p, err, sizeof err);
    int n_tok = rc < 0 ? rc : tokenize_all(m->tok, text, len, &toks, err, sizeof err);
    if (n_tok >= 0 && n_tok < 2 * m->n_ctx)
        n_tok = err_set(err, sizeof err, TERN_EINVAL,
                        "'%s' has %d tokens; perplexity with a context of %d needs at least %d (use a longer text or a "
                        "smaller -c)", file, n_tok, m->n_ctx, 2 * m->n_ctx);
    if (n_tok >= 0) {
        log_d("perplexity: loaded and tokenized in %.2f s", time_now() - t0);
        rc = ppl_run(m, toks, n_tok, m->n_ctx, mo.p.n_batch, chunks, err, sizeof err);
    } else {
        rc = n_tok;
    }
    if (rc < 0) fprintf(stderr, "tern perplexity: %s\n", err);
    free(toks);
    free(text);
    tern_model_free(&m);
    return rc < 0 ? 1 : 0;
}
