/* fuzz_kld: libFuzzer target for the KL-divergence base file reader (coordinator/kld.c,
 * llama-perplexity's "_logits_" format). Any input must give either a header whose counts match
 * the input's size and whose tokens are in the vocabulary, then rows that read and compare
 * (against a flat distribution) or fail with a one-line error; never a crash, leak or hang. */
#define _GNU_SOURCE
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "coordinator/kld.h"
#include "core/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!size) return 0;   /* fmemopen refuses an empty buffer */
    FILE *f = fmemopen((void *)data, size, "rb");
    if (!f) return 0;
    kld_header_t h;
    int32_t *tok = NULL;
    char err[512];
    err[0] = 0;
    int rc = kld_read_header(f, &h, &tok, err, sizeof err);
    if (rc < 0) {
        if (tok || !err[0] || strchr(err, '\n')) abort();
        fclose(f);
        return 0;
    }
    uint64_t rows = (uint64_t)h.n_chunk * (uint64_t)kld_chunk_rows(h.n_ctx);
    if (20 + (uint64_t)h.n_chunk * h.n_ctx * 4 + rows * kld_row_len(h.n_vocab) * 2 != size) abort();
    for (uint64_t i = 0; i < (uint64_t)h.n_chunk * (uint64_t)h.n_ctx; i++)
        if (tok[i] < 0 || tok[i] >= h.n_vocab) abort();
    uint16_t *row = malloc(kld_row_len(h.n_vocab) * sizeof *row);
    float *flat = calloc((size_t)h.n_vocab, sizeof *flat);
    kld_stats_t st;
    kld_stats_init(&st);
    for (uint64_t r = 0; row && flat && r < rows; r++) {
        if (kld_read_rows(f, h.n_vocab, 1, row, err, sizeof err) < 0) {
            if (!err[0] || strchr(err, '\n')) abort();
            break;
        }
        int t = tok[(r * 7) % ((uint64_t)h.n_chunk * h.n_ctx)];
        if (kld_stats_add(&st, flat, h.n_vocab, row, t) == 0 && !isfinite(st.sum_nll_base)) abort();
    }
    FILE *out = fopen("/dev/null", "w");
    if (out) {
        kld_stats_print(out, &st);
        fclose(out);
    }
    kld_stats_free(&st);
    free(row);
    free(flat);
    free(tok);
    fclose(f);
    return 0;
}
