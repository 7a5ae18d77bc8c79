/* kld: KL divergence against a base model, in llama-perplexity's file format so that base files
 * are interchangeable with llama.cpp (--kl-divergence-base / --kl-divergence). The file:
 *   "_logits_" · int32 n_ctx · int32 n_vocab · int32 n_chunk · int32 tokens[n_chunk · n_ctx]
 *   then per chunk, for each scored position j in [n_ctx/2, n_ctx - 1), one row of
 *   kld_row_len(n_vocab) uint16: f32 scale, f32 min log-prob (4 uint16), then n_vocab codes,
 *   log p(v) = scale · code[v] + min, padded to an even count.
 * All little-endian (the host's order, like llama.cpp). Here: packing a row, reading the header
 * with full validation, and llama.cpp's statistics; running the model is cli_perplexity's. */
#ifndef TERN_KLD_H
#define TERN_KLD_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define KLD_MAGIC "_logits_"
#define KLD_MAX_VOCAB (1 << 22)
#define KLD_MAX_CTX (1 << 20)
#define KLD_RANGE 16.0f        /* log-probs more than this below the best are stored as the minimum */

typedef struct kld_header {
    int32_t n_ctx, n_vocab, n_chunk;
} kld_header_t;

/* uint16 per row: 4 (scale, min) + n_vocab rounded up to even */
static inline size_t kld_row_len(int n_vocab) { return 2 * (((size_t)n_vocab + 1) / 2) + 4; }
/* scored rows per chunk: positions [n_ctx/2, n_ctx - 1) */
static inline int kld_chunk_rows(int n_ctx) { return n_ctx - 1 - n_ctx / 2; }

/* Packs log softmax(logits (n_vocab,)) into row (kld_row_len(n_vocab) uint16); returns the
 * negative log-likelihood of target (exact, in double, not from the packed codes). Each stored
 * log-prob within scale/2 of the true one, scale <= KLD_RANGE / 65535, except those below the
 * best by more than KLD_RANGE, stored as that floor. */
double kld_row_pack(const float *logits, int n_vocab, int target, uint16_t *row);
/* the stored log-probability of token v of a packed row */
double kld_row_logprob(const uint16_t *row, int v);
/* 0 when a row's scale and minimum are sane (finite, scale in [0, 1], min <= 0), else <0 with why */
int kld_row_check(const uint16_t *row, char *err, size_t errlen);

/* Writes the header and the tokens (n_chunk · n_ctx of them). 0 or TERN_EIO. */
int kld_write_header(FILE *f, const kld_header_t *h, const int32_t *tokens, char *err, size_t errlen);
/* Reads and validates the header: magic, n_ctx in [8, KLD_MAX_CTX], n_vocab in [1, KLD_MAX_VOCAB],
 * n_chunk >= 1, every token in [0, n_vocab), and (a seekable file) its size exactly that of
 * the header, tokens and rows. *tokens (malloc'd, caller frees) gets n_chunk · n_ctx ids. On
 * failure: <0 (TERN_EFORMAT, TERN_EIO, TERN_ENOMEM), *tokens NULL, the reason in err. */
int kld_read_header(FILE *f, kld_header_t *h, int32_t **tokens, char *err, size_t errlen);
/* Reads n rows (n · kld_row_len(n_vocab) uint16) into rows and checks each: 0, or <0 when the
 * file ends early or a row is corrupt. */
int kld_read_rows(FILE *f, int n_vocab, int n, uint16_t *rows, char *err, size_t errlen);

/* llama.cpp's accumulators, plus every token's KLD and Δp for the percentiles */
typedef struct kld_stats {
    double sum_nll, sum_nll2, sum_nll_base, sum_nll_base2, sum_nll_nll_base;
    double sum_kld, sum_kld2, sum_p_diff, sum_p_diff2, sum_p_diff4;
    double max_p_diff;
    size_t n_same_top, count, cap;
    float *kld, *p_diff;   /* (count,) */
} kld_stats_t;

void kld_stats_init(kld_stats_t *s);
void kld_stats_free(kld_stats_t *s);
/* Compares one position: logits (n_vocab,) of the model under test against the base's packed
 * row, target the token that followed. 0 or TERN_ENOMEM. */
int kld_stats_add(kld_stats_t *s, const float *logits, int n_vocab, const uint16_t *base, int target);
/* llama.cpp's per-chunk line (after the table head kld_stats_print_head) */
void kld_stats_print_head(FILE *f);
void kld_stats_print_chunk(FILE *f, const kld_stats_t *s, int chunk);
/* the final statistics (sorts s->kld and s->p_diff): PPL of both, their ratio and difference,
 * mean KLD, KLD and Δp percentiles, RMS Δp, same top p */
void kld_stats_print(FILE *f, kld_stats_t *s);

#endif
