/* mcscore: llama-perplexity's benchmark scoring — HellaSwag, Winogrande and its binary
 * multiple-choice format (ARC, MMLU, TruthfulQA): the task file parsers (untrusted input: every
 * error is one line naming the line or byte offset), llama.cpp's task selection (mt19937 seeded
 * with 1, so the same tasks are picked), which tokens of each choice are scored, and the
 * arithmetic (mean log-prob per choice, the pick, Wilson's interval). Running the model is
 * mcscore_run's (cli_mcscore.c), on the pipeline's teacher-forced log-probs. */
#ifndef TERN_MCSCORE_H
#define TERN_MCSCORE_H
#include <stddef.h>
#include <stdint.h>
#include "tern.h"

#define MC_MAX_CHOICES 100     /* llama.cpp's limit of answers in a multiple-choice task */
#define MC_MAX_TASKS (1 << 22)

enum mc_kind { MC_HELLASWAG, MC_WINOGRANDE, MC_MULTI };

typedef struct mc_task {   /* one question, as text */
    char *ctx;             /* context (hellaswag), the sentence before '_' (winogrande), the question */
    char *ctx2;            /* winogrande: the sentence after '_'; else NULL */
    int n_choice;
    char **choice;         /* (n_choice,) endings, options, answers */
    int gold;              /* the right choice (hellaswag 0-3, winogrande 0-1); multi: -1 */
    uint8_t *label;        /* multi: (n_choice,) 1 = a right answer; else NULL */
    long where;            /* the task's first line (text files) or byte offset (binary) */
} mc_task_t;

typedef struct mc_set {
    int kind;
    int n, n_file;         /* tasks kept (in the order they are scored), tasks in the file */
    mc_task_t *t;
} mc_set_t;

void mc_set_free(mc_set_t *s);

/* Parsers: buf (len bytes; need not be NUL-terminated). 0 with *out filled (caller frees with
 * mc_set_free), or <0 with a one-line reason naming the line (byte offset) in err and *out empty.
 * hellaswag: 6 lines a task (context, gold ending index 0-3, 4 endings); keeps n_pick (<= 0: all)
 * tasks picked at random as llama.cpp does (always shuffled, even when all are kept).
 * winogrande: CSV lines "index,sentence,option1,option2,answer" (answer 1 or 2, one '_' in the
 * sentence; a field may be in double quotes; a header line is skipped); n_pick (<= 0 or >= the
 * count: all, in file order) picked at random as llama.cpp does.
 * multi: u32 n_task, u32 offset[n_task], then each task: string question, then mc1 and mc2 (u32
 * n <= 100, n strings, n int32 labels); a string is u32 length + bytes. n_pick as winogrande's. */
int mc_parse_hellaswag(const char *buf, size_t len, int n_pick, mc_set_t *out, char *err, size_t errlen);
int mc_parse_winogrande(const char *buf, size_t len, int n_pick, mc_set_t *out, char *err, size_t errlen);
int mc_parse_multi(const uint8_t *buf, size_t len, int n_pick, mc_set_t *out, char *err, size_t errlen);

/* std::mt19937 (the C++ standard's), for llama.cpp's picks */
typedef struct mc_rng {
    uint32_t mt[624];
    int i;
} mc_rng_t;
void mc_rng_seed(mc_rng_t *r, uint32_t seed);
uint32_t mc_rng_next(mc_rng_t *r);
/* std::uniform_int_distribution<size_t>(0, n - 1)(mt19937) as libstdc++ (GCC >= 11) computes it:
 * Lemire's multiply-and-reject on 32 bits; n in [1, 2^32) */
uint32_t mc_rng_below(mc_rng_t *r, uint32_t n);
/* llama.cpp's winogrande / multiple-choice pick: int(float(2^-32) * float(rng()) * float(n)),
 * in float, clamped to n - 1 (llama.cpp would read one past the end when it rounds up to n) */
uint32_t mc_rng_pick_float(mc_rng_t *r, uint32_t n);

/* Which tokens of each choice are scored: the n sequences seq[s] (len[s] tokens, BOS first when
 * the model adds one); token i of s is scored from the logits after token i - 1, for i in
 * [lo[s], hi[s]), 1 <= lo < hi <= len. hellaswag and multi: the tokens after the prefix all the
 * sequences share. winogrande (n = 2; n_base[s]: tokens of the sentence up to and with choice s):
 * llama.cpp's partial scoring — when both sequences have more than 3 tokens after their common
 * prefix, the tokens after the choice, else after the prefix; the last token left out when there
 * are more than one. Every range is kept non-empty. 0, or <0 when a sequence has fewer than 2
 * tokens (nothing to score). */
int mc_ranges(int kind, int n, const int32_t *const *seq, const int *len, const int *n_base, int *lo, int *hi);

/* The chosen one of n scores (mean log-prob per choice): the first best; winogrande: the second
 * unless the first is strictly better (llama.cpp's `score_1st > score_2nd ? 1 : 2`). */
int mc_pick(int kind, const double *score, int n);
/* 1 when choice `pick` of task t is right */
int mc_correct(const mc_task_t *t, int pick);
/* Wilson's 95% score interval of correct successes in n trials, as llama.cpp prints it */
void mc_wilson(int correct, int n, double *lo, double *hi);

/* Scores the tasks of set on the loaded model (single process or cluster) and prints llama.cpp's
 * lines to stdout; n_batch tokens a step, n_slots the pipeline's sequence slots; kv_copy: a task's
 * common prefix is fed once and copied into its other choices' slots (same scores). 0 or <0 with
 * the reason in err (a task longer than the context, more choices than slots, a pipeline
 * failure). */
int mcscore_run(tern_model *m, mc_set_t *set, int n_batch, int n_slots, int kv_copy, char *err, size_t errlen);
/* The context positions set's longest choice needs (tokenized by tok as mcscore_run does: its
 * tokens but the last), for sizing -c before the model is loaded; with n_ctx > 0 (the user's -c)
 * a task that needs more is TERN_EINVAL naming it. The count, or <0 with err (also a task that
 * cannot be tokenized or has nothing to score). */
typedef struct tokenizer tokenizer_t;
int mcscore_ctx_need(const tokenizer_t *tok, const mc_set_t *set, int n_ctx, char *err, size_t errlen);

#endif
