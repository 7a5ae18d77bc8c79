/* cli_perplexity: `tern perplexity` — llama-perplexity's method: tokenize the file whole, cut
 * it into chunks of n_ctx, run each from an empty cache with BOS in place of its first token, and
 * score the second half (token j+1 from position j, j in [n_ctx/2, n_ctx-1)); prints running
 * estimates and `Final estimate: PPL = X +/- Y`. Logits never leave a pipeline's last stage, so
 * it runs the whole model here with its own shard + forward. Not here: KLD, HellaSwag. */
#include "coordinator/cli_common.h"
#include "coordinator/embed.h"
#include "coordinator/tokenizer.h"
#include "core/err.h"
#include "core/log.h"
#include "core/model_spec.h"
#include "core/progress.h"
#include "core/types.h"
#include "kernels/ops.h"
#include "worker/forward.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PPL_LOGIT_ROWS 32   /* rows of logits per forward_logits call: bounds memory at 32 × n_vocab */

typedef struct ppl {
    gguf_t *g;
    tokenizer_t *tok;
    embed_t emb;
    shard_t shard;
    int shard_ok;
    tpool_t *tp;
    forward_t fwd;
    int fwd_ok;
    int n_ctx, n_batch, n_vocab, n_embd;
    float *h;              /* (n_batch, n_embd) */
    float *logits;         /* (PPL_LOGIT_ROWS, n_vocab) */
    int *seq, *pos, *rows; /* (n_batch,) */
} ppl_t;

static void ppl_free(ppl_t *p) {
    free(p->h);
    free(p->logits);
    free(p->seq);
    free(p->pos);
    free(p->rows);
    if (p->fwd_ok) forward_free(&p->fwd);
    tpool_destroy(&p->tp);
    if (p->shard_ok) shard_free(&p->shard);
    tokenizer_destroy(&p->tok);
    gguf_close(&p->g);
}

static int ppl_load(ppl_t *p, const tern_params *tp, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    int rc = gguf_open(&p->g, tp->model, err, errlen);
    if (rc < 0) return rc;
    if ((rc = tokenizer_load(&p->tok, p->g, err, errlen)) < 0) return rc;
    if ((rc = embed_init(&p->emb, p->g, err, errlen)) < 0) return rc;
    shard_opts_t so;
    shard_opts_default(&so);
    if (tp->head_type) {
        so.head_type = type_from_name(tp->head_type);
        if (so.head_type != TT_Q8_0 && so.head_type != TT_F16 && so.head_type != TT_F32)
            return err_set(err, errlen, TERN_EINVAL, "--head %s: expected f16, q8_0 or f32", tp->head_type);
    }
    hparams_t hp;
    if ((rc = hparams_from_gguf(&hp, p->g, err, errlen)) < 0) return rc;
    if ((rc = shard_load(&p->shard, p->g, 0, hp.n_layer - 1, 1, &so, err, errlen)) < 0) return rc;
    p->shard_ok = 1;
    if (!(p->tp = tpool_new(tp->n_threads))) return err_set(err, errlen, TERN_ENOMEM, "cannot start %d threads", tp->n_threads);
    p->n_ctx = tp->n_ctx;
    p->n_batch = tp->n_batch < p->n_ctx ? tp->n_batch : p->n_ctx;
    p->n_vocab = hp.n_vocab;
    p->n_embd = hp.n_embd;
    rc = forward_init(&p->fwd, &p->shard, p->n_ctx, 1, p->n_batch, PPL_LOGIT_ROWS, tp->kv_f32 ? KV_F32 : KV_F16, p->tp,
                      err, errlen);
    if (rc < 0) return rc;
    p->fwd_ok = 1;
    p->h = malloc((size_t)p->n_batch * (size_t)p->n_embd * sizeof(float));
    p->logits = malloc((size_t)PPL_LOGIT_ROWS * (size_t)p->n_vocab * sizeof(float));
    p->seq = calloc((size_t)p->n_batch, sizeof(int));
    p->pos = malloc((size_t)p->n_batch * sizeof(int));
    p->rows = malloc((size_t)p->n_batch * sizeof(int));
    if (!p->h || !p->logits || !p->seq || !p->pos || !p->rows) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    return 0;
}

/* -log softmax(logits)[target], in double */
static double nll_of(const float *logits, int n, int target) {
    float mx = logits[0];
    for (int i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    return log(sum) - ((double)logits[target] - mx);
}

/* Runs one chunk toks[0..n_ctx) (toks[0] already BOS when wanted) and adds the negative log
 * likelihoods of tokens [first+1, n_ctx) to *nll, *nll2. Returns the count scored or <0. */
static int ppl_chunk(ppl_t *p, const int32_t *toks, int first, double *nll, double *nll2, char *err, size_t errlen) {
    int count = 0;
    for (int b0 = 0; b0 < p->n_ctx; b0 += p->n_batch) {
        int k = p->n_ctx - b0 < p->n_batch ? p->n_ctx - b0 : p->n_batch;
        if (embed_lookup(&p->emb, toks + b0, k, p->h) < 0)
            return err_set(err, errlen, TERN_EINVAL, "token id outside the vocabulary");
        for (int i = 0; i < k; i++) p->pos[i] = b0 + i;
        forward_layers(&p->fwd, p->h, k, p->seq, p->pos);
        /* rows whose prediction is scored: position j in [first, n_ctx - 1) */
        int m = 0;
        for (int i = 0; i < k; i++)
            if (b0 + i >= first && b0 + i < p->n_ctx - 1) p->rows[m++] = i;
        for (int r0 = 0; r0 < m; r0 += PPL_LOGIT_ROWS) {
            int mr = m - r0 < PPL_LOGIT_ROWS ? m - r0 : PPL_LOGIT_ROWS;
            forward_logits(&p->fwd, p->h, mr, p->rows + r0, p->logits);
            for (int r = 0; r < mr; r++) {
                int j = b0 + p->rows[r0 + r];
                double v = nll_of(p->logits + (size_t)r * p->n_vocab, p->n_vocab, toks[j + 1]);
                *nll += v;
                *nll2 += v * v;
                count++;
            }
        }
    }
    return count;
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

static int ppl_run(ppl_t *p, int32_t *toks, int n_tok, int n_chunks_max, char *err, size_t errlen) {
    int n_chunk = n_tok / p->n_ctx;
    if (n_chunks_max > 0 && n_chunks_max < n_chunk) n_chunk = n_chunks_max;
    int bos = tokenizer_bos(p->tok), add_bos = tokenizer_add_bos(p->tok) && bos >= 0;
    const int first = p->n_ctx / 2;
    fprintf(stderr, "perplexity: %d tokens, %d chunks of %d, batch %d, scoring tokens [%d, %d) of each\n", n_tok,
            n_chunk, p->n_ctx, p->n_batch, first + 1, p->n_ctx);
    double nll = 0, nll2 = 0;
    long count = 0;
    double t0 = time_now();
    for (int i = 0; i < n_chunk; i++) {
        int32_t *chunk = toks + (size_t)i * p->n_ctx;
        int32_t saved = chunk[0];
        if (add_bos) chunk[0] = bos;   /* as llama.cpp: BOS in place of each chunk's first token */
        int c = ppl_chunk(p, chunk, first, &nll, &nll2, err, errlen);
        chunk[0] = saved;
        if (c < 0) return c;
        count += c;
        if (i == 0) fprintf(stderr, "perplexity: %.2f seconds per pass - ETA %.2f minutes\n", time_now() - t0,
                            (time_now() - t0) * n_chunk / 60);
        printf("[%d]%.4lf,", i + 1, exp(nll / count));
        fflush(stdout);
    }
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
    if (rc == 0 && (mo.p.cluster || mo.p.workers || mo.p.stages > 1))
        rc = err_set(err, sizeof err, TERN_ENOTSUP, "perplexity needs the logits, so it runs in one process: drop "
                                                     "--cluster/--workers/--stages");
    if (rc < 0) { fprintf(stderr, "tern perplexity: %s\n", err); return 1; }
    size_t len = 0;
    char *text = slurp(file, &len, err, sizeof err);
    if (!text) { fprintf(stderr, "tern perplexity: %s\n", err); return 1; }
    ppl_t p;
    int32_t *toks = NULL;
    double t0 = time_now();
    rc = ppl_load(&p, &mo.p, err, sizeof err);
    int n_tok = rc < 0 ? rc : tokenize_all(p.tok, text, len, &toks, err, sizeof err);
    if (n_tok >= 0 && n_tok < 2 * p.n_ctx)
        n_tok = err_set(err, sizeof err, TERN_EINVAL,
                        "'%s' has %d tokens; perplexity with a context of %d needs at least %d (use a longer text or a "
                        "smaller -c)", file, n_tok, p.n_ctx, 2 * p.n_ctx);
    if (n_tok >= 0) {
        log_d("perplexity: loaded and tokenized in %.2f s", time_now() - t0);
        rc = ppl_run(&p, toks, n_tok, chunks, err, sizeof err);
    } else {
        rc = n_tok;
    }
    if (rc < 0) fprintf(stderr, "tern perplexity: %s\n", err);
    free(toks);
    free(text);
    ppl_free(&p);
    return rc < 0 ? 1 : 0;
}
