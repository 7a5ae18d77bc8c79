/* fuzz_mcscore: libFuzzer target for the benchmark task file parsers (coordinator/mcscore.c:
 * llama-perplexity's HellaSwag lines, Winogrande CSV, binary multiple-choice file). The first byte
 * picks the format and how many tasks to keep; the rest is the file. Any input must give either
 * tasks whose fields are all there (gold index in range, at most MC_MAX_CHOICES choices, each
 * choice a string), which then go through mc_ranges / mc_pick on token ids made from their
 * bytes, or a one-line error; never a crash, leak or hang. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "coordinator/mcscore.h"

/* a BOS (256), then the bytes of a and b as token ids, at most cap in all; the count */
static int toks(const char *a, const char *b, int32_t *out, int cap) {
    int n = 0;
    out[n++] = 256;
    for (; *a && n < cap; a++) out[n++] = (unsigned char)*a;
    for (; *b && n < cap; b++) out[n++] = (unsigned char)*b;
    return n;
}

static void check_task(int kind, const mc_task_t *t) {
    if (!t->ctx || t->n_choice < 1 || t->n_choice > MC_MAX_CHOICES || !t->choice) abort();
    if (kind == MC_HELLASWAG && (t->n_choice != 4 || t->gold < 0 || t->gold > 3)) abort();
    if (kind == MC_WINOGRANDE && (t->n_choice != 2 || t->gold < 0 || t->gold > 1 || !t->ctx2)) abort();
    if (kind == MC_MULTI && (!t->label || t->gold != -1)) abort();
    static int32_t buf[MC_MAX_CHOICES][64];
    const int32_t *seq[MC_MAX_CHOICES];
    int len[MC_MAX_CHOICES], lo[MC_MAX_CHOICES], hi[MC_MAX_CHOICES], base[2];
    double score[MC_MAX_CHOICES];
    for (int s = 0; s < t->n_choice; s++) {
        if (!t->choice[s]) abort();
        int n = toks(t->ctx, t->choice[s], buf[s], 64);
        len[s] = n;
        seq[s] = buf[s];
        if (s < 2) base[s] = 1 + (int)(strlen(t->choice[s]) % (unsigned)n);
    }
    if (mc_ranges(kind, t->n_choice, seq, len, base, lo, hi) == 0) {
        for (int s = 0; s < t->n_choice; s++) {
            if (lo[s] < 1 || lo[s] >= hi[s] || hi[s] > len[s]) abort();
            score[s] = -(double)(hi[s] - lo[s]) / (1 + lo[s]);
        }
        int p = mc_pick(kind, score, t->n_choice);
        if (p < 0 || p >= t->n_choice) abort();
        (void)mc_correct(t, p);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!size) return 0;
    int kind = data[0] % 3, n_pick = (data[0] / 3) % 8;   /* 0: all */
    mc_set_t set;
    char err[400];
    err[0] = 0;
    const char *text = (const char *)data + 1;
    int rc = kind == MC_HELLASWAG   ? mc_parse_hellaswag(text, size - 1, n_pick, &set, err, sizeof err)
             : kind == MC_WINOGRANDE ? mc_parse_winogrande(text, size - 1, n_pick, &set, err, sizeof err)
                                     : mc_parse_multi(data + 1, size - 1, n_pick, &set, err, sizeof err);
    if (rc < 0) {
        if (set.t || set.n || !err[0] || strchr(err, '\n')) abort();
        return 0;
    }
    if (set.n < 1 || set.n > set.n_file || (n_pick && set.n > n_pick)) abort();
    for (int i = 0; i < set.n; i++) check_task(kind, &set.t[i]);
    mc_set_free(&set);
    return 0;
}
