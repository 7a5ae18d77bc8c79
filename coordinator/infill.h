/* infill: the token sequence of a fill-in-the-middle request, built as llama-server's
 * format_infill builds it — repo-level extra context, then
 * [BOS] FIM_PRE prefix prompt FIM_SUF suffix FIM_MID (or suffix first with spm_infill), the
 * prefix and suffix cut to fit one batch 3:1 and the extra context to what is left of the
 * context. Not here: the HTTP request (server_native.c) or the FIM ids' discovery (tokenizer.c). */
#ifndef TERN_INFILL_H
#define TERN_INFILL_H
#include <stdint.h>
#include "coordinator/tokenizer.h"

typedef struct infill_cfg {
    int pre, suf, mid;       /* FIM ids (all >= 0) */
    int rep, sep;            /* repo-level FIM ids, -1 when the model has none */
    int bos;                 /* prepended to the FIM part (before FIM_PRE / FIM_SUF); -1: none */
    int n_batch;             /* the prefix takes up to 3/4 of it, the suffix and prompt the rest */
    int n_predict;           /* the server's -n (-1: unlimited): the extra context leaves 2x room */
    int n_ctx;
    int spm;                 /* llama.cpp's --spm-infill: suffix before prefix */
} infill_cfg_t;

typedef struct infill_chunk {   /* input_extra: one file of context */
    char *filename;          /* NULL: "tmp", as llama.cpp */
    char *text;
} infill_chunk_t;

/* Writes the FIM sequence of the given pieces (token ids, no BOS) into out and returns its
 * length; out must hold n_extra + n_prefix + n_suffix + n_prompt + 4 ids. extra[] is the whole
 * repo-level context (infill_extra): its last tokens are kept. */
int infill_format(const infill_cfg_t *c, const int32_t *prefix, int n_prefix, const int32_t *suffix, int n_suffix,
                  const int32_t *prompt, int n_prompt, const int32_t *extra, int n_extra, int32_t *out);

/* text[0..len) as token ids without BOS into *out (malloc'd, caller frees): its count, or <0
 * (TERN_ENOMEM, or the tokenizer's error) */
int infill_tokenize(const tokenizer_t *tok, const char *text, size_t len, int parse_special, int32_t **out);

/* the repo-level context of chunks[0..n) as llama.cpp writes it: FIM_REP "myproject\n" (when the
 * model has it), each chunk as FIM_SEP filename "\n" text (without FIM_SEP: the text after a
 * "\n\n--- snippet ---\n\n" line), then FIM_SEP "filename\n" for the file being edited. Text is
 * tokenized without special tokens. *out malloc'd (may be NULL when empty); count or <0. */
int infill_extra(const tokenizer_t *tok, const infill_cfg_t *c, const infill_chunk_t *chunks, int n, int32_t **out);

#endif
