/* kld: see kld.h. The packing and the statistics follow llama-perplexity's definitions (so that
 * numbers agree with llama.cpp's to the last printed digits or so: tern sums in double where
 * llama.cpp uses float in places); the reader trusts nothing in the file. */
#define _FILE_OFFSET_BITS 64
#include "coordinator/kld.h"
#include "core/err.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define KLD_HEAD_BYTES 20   /* magic, n_ctx, n_vocab, n_chunk */
#define KLD_MAX_TOKENS (1u << 28)   /* an unseekable stream's token count bound (1 GiB of ids) */

static float row_f32(const uint16_t *row, int i) {
    float v;
    memcpy(&v, row + 2 * i, sizeof v);
    return v;
}

double kld_row_pack(const float *l, int n_vocab, int target, uint16_t *row) {
    float mx = l[0], mn = l[0];
    for (int v = 1; v < n_vocab; v++) {
        mx = l[v] > mx ? l[v] : mx;
        mn = l[v] < mn ? l[v] : mn;
    }
    if (mn < mx - KLD_RANGE) mn = mx - KLD_RANGE;
    double sum = 0;
    for (int v = 0; v < n_vocab; v++) sum += exp((double)l[v] - mx);
    const double lse = log(sum);
    const float scale = (mx - mn) / 65535.0f, min_lp = (float)((double)mn - mx - lse);
    memcpy(row, &scale, sizeof scale);
    memcpy(row + 2, &min_lp, sizeof min_lp);
    uint16_t *q = row + 4;
    if (scale > 0) {
        const float inv = 1.0f / scale;
        for (int v = 0; v < n_vocab; v++) {
            long c = l[v] > mn ? lrintf(inv * (l[v] - mn)) : 0;
            q[v] = (uint16_t)(c > 65535 ? 65535 : c);
        }
    } else {
        memset(q, 0, (size_t)n_vocab * sizeof *q);
    }
    if (n_vocab & 1) q[n_vocab] = 0;
    return (double)mx + lse - l[target];
}

double kld_row_logprob(const uint16_t *row, int v) {
    return (double)row_f32(row, 0) * row[4 + v] + row_f32(row, 1);
}

int kld_row_check(const uint16_t *row, char *err, size_t errlen) {
    float scale = row_f32(row, 0), min_lp = row_f32(row, 1);
    if (!(scale >= 0 && scale <= 1) || !(min_lp <= 0 && min_lp > -1e30f))
        return err_set(err, errlen, TERN_EFORMAT, "a row has scale %g and minimum log-probability %g (corrupt file?)",
                       (double)scale, (double)min_lp);
    return 0;
}

int kld_write_header(FILE *f, const kld_header_t *h, const int32_t *tokens, char *err, size_t errlen) {
    int32_t v[3] = {h->n_ctx, h->n_vocab, h->n_chunk};
    size_t nt = (size_t)h->n_chunk * (size_t)h->n_ctx;
    if (fwrite(KLD_MAGIC, 1, 8, f) != 8 || fwrite(v, sizeof v[0], 3, f) != 3 ||
        fwrite(tokens, sizeof *tokens, nt, f) != nt)
        return err_set(err, errlen, TERN_EIO, "cannot write the header");
    return 0;
}

/* the file's size must be exactly the header, tokens and rows (skipped when not seekable) */
static int check_size(FILE *f, const kld_header_t *h, char *err, size_t errlen) {
    off_t here = ftello(f);
    if (here < 0 || fseeko(f, 0, SEEK_END) != 0) return 0;
    off_t end = ftello(f);
    if (end < 0 || fseeko(f, here, SEEK_SET) != 0) return err_set(err, errlen, TERN_EIO, "cannot seek");
    uint64_t size = (uint64_t)end, per_chunk = (uint64_t)h->n_ctx * 4 +
                                                  (uint64_t)kld_chunk_rows(h->n_ctx) * kld_row_len(h->n_vocab) * 2;
    uint64_t body = size > KLD_HEAD_BYTES ? size - KLD_HEAD_BYTES : 0;
    if ((uint64_t)h->n_chunk > body / per_chunk)
        return err_set(err, errlen, TERN_EFORMAT, "truncated: %d chunks of %d tokens (vocabulary %d) need %.0f bytes, "
                       "the file has %llu", h->n_chunk, h->n_ctx, h->n_vocab,
                       (double)KLD_HEAD_BYTES + (double)h->n_chunk * (double)per_chunk, (unsigned long long)size);
    uint64_t want = KLD_HEAD_BYTES + (uint64_t)h->n_chunk * per_chunk;
    if (want != size)
        return err_set(err, errlen, TERN_EFORMAT, "%llu bytes after the last of its %d chunks (corrupt file?)",
                       (unsigned long long)(size - want), h->n_chunk);
    return 0;
}

int kld_read_header(FILE *f, kld_header_t *h, int32_t **tokens, char *err, size_t errlen) {
    *tokens = NULL;
    char magic[8];
    int32_t v[3];
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, KLD_MAGIC, 8))
        return err_set(err, errlen, TERN_EFORMAT, "not a KL-divergence base file (no '%s' magic)", KLD_MAGIC);
    if (fread(v, sizeof v[0], 3, f) != 3) return err_set(err, errlen, TERN_EFORMAT, "truncated header");
    h->n_ctx = v[0], h->n_vocab = v[1], h->n_chunk = v[2];
    if (h->n_ctx < 8 || h->n_ctx > KLD_MAX_CTX || h->n_vocab < 1 || h->n_vocab > KLD_MAX_VOCAB || h->n_chunk < 1)
        return err_set(err, errlen, TERN_EFORMAT, "bad header: n_ctx %d (8..%d), n_vocab %d (1..%d), n_chunk %d (>= 1)",
                       h->n_ctx, KLD_MAX_CTX, h->n_vocab, KLD_MAX_VOCAB, h->n_chunk);
    int rc = check_size(f, h, err, errlen);
    if (rc < 0) return rc;
    uint64_t nt = (uint64_t)h->n_chunk * (uint64_t)h->n_ctx;
    if (nt > KLD_MAX_TOKENS) return err_set(err, errlen, TERN_EFORMAT, "%llu tokens: too many", (unsigned long long)nt);
    int32_t *t = malloc((size_t)nt * sizeof *t);
    if (!t) return err_set(err, errlen, TERN_ENOMEM, "out of memory for %llu tokens", (unsigned long long)nt);
    if (fread(t, sizeof *t, (size_t)nt, f) != (size_t)nt) {
        free(t);
        return err_set(err, errlen, TERN_EFORMAT, "truncated: fewer than the %llu tokens the header announces",
                       (unsigned long long)nt);
    }
    for (uint64_t i = 0; i < nt; i++)
        if (t[i] < 0 || t[i] >= h->n_vocab) {
            rc = err_set(err, errlen, TERN_EFORMAT, "token %llu is %d, outside the vocabulary (%d)",
                         (unsigned long long)i, t[i], h->n_vocab);
            free(t);
            return rc;
        }
    *tokens = t;
    return 0;
}

int kld_read_rows(FILE *f, int n_vocab, int n, uint16_t *rows, char *err, size_t errlen) {
    size_t len = kld_row_len(n_vocab);
    if (fread(rows, sizeof *rows * len, (size_t)n, f) != (size_t)n)
        return err_set(err, errlen, TERN_EFORMAT, "truncated: the file ends inside its log-probabilities");
    for (int i = 0; i < n; i++) {
        int rc = kld_row_check(rows + (size_t)i * len, err, errlen);
        if (rc < 0) return rc;
    }
    return 0;
}

void kld_stats_init(kld_stats_t *s) { memset(s, 0, sizeof *s); }

void kld_stats_free(kld_stats_t *s) {
    free(s->kld);
    free(s->p_diff);
    memset(s, 0, sizeof *s);
}

int kld_stats_add(kld_stats_t *s, const float *l, int n_vocab, const uint16_t *base, int target) {
    if (s->count == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1024;
        float *a = realloc(s->kld, cap * sizeof *a);
        if (a) s->kld = a;
        float *b = a ? realloc(s->p_diff, cap * sizeof *b) : NULL;
        if (!b) return TERN_ENOMEM;
        s->p_diff = b, s->cap = cap;
    }
    float mx = l[0];
    int imax = 0;
    for (int v = 1; v < n_vocab; v++)
        if (l[v] > mx) mx = l[v], imax = v;
    double sum = 0;
    for (int v = 0; v < n_vocab; v++) sum += exp((double)l[v] - mx);
    const double lse = log(sum), nll = (double)mx + lse - l[target], nll_base = -kld_row_logprob(base, target);
    const uint16_t *q = base + 4;
    int imax_base = 0;   /* scale >= 0: the best stored code is the best log-prob (the first of equals) */
    for (int v = 1; v < n_vocab; v++)
        if (q[v] > q[imax_base]) imax_base = v;
    double kld = 0;
    for (int v = 0; v < n_vocab; v++) {
        double lpb = kld_row_logprob(base, v);
        if (lpb > -KLD_RANGE) kld += exp(lpb) * (lpb - ((double)l[v] - mx - lse));
    }
    const double p_diff = exp(-nll) - exp(-nll_base);
    s->sum_nll += nll, s->sum_nll2 += nll * nll;
    s->sum_nll_base += nll_base, s->sum_nll_base2 += nll_base * nll_base;
    s->sum_nll_nll_base += nll * nll_base;
    s->sum_kld += kld, s->sum_kld2 += kld * kld;
    s->sum_p_diff += p_diff, s->sum_p_diff2 += p_diff * p_diff, s->sum_p_diff4 += p_diff * p_diff * p_diff * p_diff;
    if (fabs(p_diff) > s->max_p_diff) s->max_p_diff = fabs(p_diff);
    s->n_same_top += imax == imax_base;
    s->kld[s->count] = (float)kld;
    s->p_diff[s->count] = (float)p_diff;
    s->count++;
    return 0;
}

/* mean and its uncertainty (llama.cpp: none below 11 values) */
static void mean_unc(double sum, double sum2, size_t n, double *mean, double *unc) {
    *mean = n ? sum / n : 0;
    double var = n ? sum2 / n - *mean * *mean : 0;
    *unc = var > 0 && n > 10 ? sqrt(var / (double)(n - 1)) : 0;
}

static double covariance(double a, double b, double ab, size_t n) {
    return n < 10 ? 0 : (ab / n - (a / n) * (b / n)) / (double)(n - 1);
}

/* the top-token agreement and its uncertainty, as fractions */
static void same_top(const kld_stats_t *s, double *p, double *unc) {
    *p = s->count ? (double)s->n_same_top / s->count : 0;
    *unc = s->count > 1 ? sqrt(*p * (1 - *p) / (double)(s->count - 1)) : 0;
}

void kld_stats_print_head(FILE *f) {
    fprintf(f, "\nchunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS"
               "            Same top p\n");
}

void kld_stats_print_chunk(FILE *f, const kld_stats_t *s, int chunk) {
    double lp, lpu, lb, lbu, k, ku, mse, mseu, top, topu;
    mean_unc(s->sum_nll, s->sum_nll2, s->count, &lp, &lpu);
    mean_unc(s->sum_nll_base, s->sum_nll_base2, s->count, &lb, &lbu);
    mean_unc(s->sum_kld, s->sum_kld2, s->count, &k, &ku);
    mean_unc(s->sum_p_diff2, s->sum_p_diff4, s->count, &mse, &mseu);
    same_top(s, &top, &topu);
    double cov = covariance(s->sum_nll, s->sum_nll_base, s->sum_nll_nll_base, s->count);
    double ru = lpu * lpu + lbu * lbu - 2 * cov, rms = sqrt(mse);
    fprintf(f, "%4d    %9.4lf ± %9.4lf    %10.5lf ± %10.5lf    %10.5lf ± %10.5lf    %6.3lf ± %6.3lf %%    %6.3lf ± %6.3lf %%\n",
            chunk, exp(lp), exp(lp) * lpu, lp - lb, ru > 0 ? sqrt(ru) : 0, k, ku, 100 * rms,
            rms > 0 ? 100 * 0.5 / rms * mseu : 0, 100 * top, 100 * topu);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* llama.cpp's percentile: linear between the two nearest of the sorted values */
static double pct(const float *v, size_t n, double fr) {
    if (fr <= 0) return v[0];
    if (fr >= 1) return v[n - 1];
    double p = fr * (double)(n - 1);
    size_t i = (size_t)p;
    p -= (double)i;
    return (1 - p) * v[i] + p * v[i + 1 < n ? i + 1 : n - 1];
}

static double median(const float *v, size_t n) { return n % 2 ? v[n / 2] : 0.5 * (v[n / 2] + v[n / 2 - 1]); }

void kld_stats_print(FILE *f, kld_stats_t *s) {
    size_t n = s->count;
    if (!n) return;
    qsort(s->kld, n, sizeof *s->kld, cmp_float);
    qsort(s->p_diff, n, sizeof *s->p_diff, cmp_float);
    double lp, lpu, lb, lbu;
    mean_unc(s->sum_nll, s->sum_nll2, n, &lp, &lpu);
    mean_unc(s->sum_nll_base, s->sum_nll_base2, n, &lb, &lbu);
    double ppl = exp(lp), pplu = ppl * lpu, pb = exp(lb), pbu = pb * lbu;
    double cov = covariance(s->sum_nll, s->sum_nll_base, s->sum_nll_nll_base, n);
    double ru2 = lpu * lpu + lbu * lbu - 2 * cov, ru = ru2 > 0 ? sqrt(ru2) : 0;
    double du2 = pplu * pplu + pbu * pbu - 2 * ppl * pb * cov;
    fprintf(f, "====== Perplexity statistics ======\n");
    fprintf(f, "Mean PPL(Q)                   : %10.6lf ± %10.6lf\n", ppl, pplu);
    fprintf(f, "Mean PPL(base)                : %10.6lf ± %10.6lf\n", pb, pbu);
    fprintf(f, "Cor(ln(PPL(Q)), ln(PPL(base))): %6.2lf%%\n", lpu > 0 && lbu > 0 ? 100 * cov / (lpu * lbu) : 0.0);
    fprintf(f, "Mean ln(PPL(Q)/PPL(base))     : %10.6lf ± %10.6lf\n", lp - lb, ru);
    fprintf(f, "Mean PPL(Q)/PPL(base)         : %10.6lf ± %10.6lf\n", exp(lp - lb), exp(lp - lb) * ru);
    fprintf(f, "Mean PPL(Q)-PPL(base)         : %10.6lf ± %10.6lf\n", ppl - pb, du2 > 0 ? sqrt(du2) : 0);
    fprintf(f, "\n====== KL divergence statistics ======\n");
    double k, ku;
    mean_unc(s->sum_kld, s->sum_kld2, n, &k, &ku);
    const float *kv = s->kld, *pv = s->p_diff;
    fprintf(f, "Mean    KLD: %10.6lf ± %10.6lf\n", k, ku);
    fprintf(f, "Maximum KLD: %10.6f\n", (double)kv[n - 1]);
    fprintf(f, "99.9%%   KLD: %10.6f\n", pct(kv, n, 0.999));
    fprintf(f, "99.0%%   KLD: %10.6f\n", pct(kv, n, 0.990));
    fprintf(f, "95.0%%   KLD: %10.6f\n", pct(kv, n, 0.950));
    fprintf(f, "90.0%%   KLD: %10.6f\n", pct(kv, n, 0.900));
    fprintf(f, "Median  KLD: %10.6f\n", median(kv, n));
    fprintf(f, "10.0%%   KLD: %10.6f\n", pct(kv, n, 0.100));
    fprintf(f, " 5.0%%   KLD: %10.6f\n", pct(kv, n, 0.050));
    fprintf(f, " 1.0%%   KLD: %10.6f\n", pct(kv, n, 0.010));
    fprintf(f, " 0.1%%   KLD: %10.6f\n", pct(kv, n, 0.001));
    fprintf(f, "Minimum KLD: %10.6f\n", (double)kv[0]);
    fprintf(f, "\n====== Token probability statistics ======\n");
    double pd, pdu, mse, mseu, top, topu;
    mean_unc(s->sum_p_diff, s->sum_p_diff2, n, &pd, &pdu);
    fprintf(f, "Mean    Δp: %6.3lf ± %5.3lf %%\n", 100 * pd, 100 * pdu);
    fprintf(f, "Maximum Δp: %6.3lf%%\n", 100.0 * pv[n - 1]);
    static const struct { const char *name; double fr; } q[] = {
        {"99.9%", 0.999}, {"99.0%", 0.990}, {"95.0%", 0.950}, {"90.0%", 0.900}, {"75.0%", 0.750}, {NULL, 0.5},
        {"25.0%", 0.250}, {"10.0%", 0.100}, {" 5.0%", 0.050}, {" 1.0%", 0.010}, {" 0.1%", 0.001},
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        if (!q[i].name) fprintf(f, "Median  Δp: %6.3lf%%\n", 100 * median(pv, n));
        else fprintf(f, "%s   Δp: %6.3lf%%\n", q[i].name, 100 * pct(pv, n, q[i].fr));
    }
    fprintf(f, "Minimum Δp: %6.3lf%%\n", 100.0 * pv[0]);
    mean_unc(s->sum_p_diff2, s->sum_p_diff4, n, &mse, &mseu);
    double rms = sqrt(mse);
    fprintf(f, "RMS Δp    : %6.3lf ± %5.3lf %%\n", 100 * rms, rms > 0 ? 100 * 0.5 / rms * mseu : 0.0);
    same_top(s, &top, &topu);
    fprintf(f, "Same top p: %6.3lf ± %5.3lf %%\n", 100 * top, 100 * topu);
}
