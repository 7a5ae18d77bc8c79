/* cli_common: the model and sampling flags shared by run, chat, serve, bench and perplexity,
 * as option-table entries, so every subcommand spells them the same (llama.cpp's names). */
#ifndef TERN_CLI_COMMON_H
#define TERN_CLI_COMMON_H
#include "core/opt.h"
#include "tern.h"

typedef struct cli_model_opts {
    tern_params p;
    tern_sampling s;
    int seed;           /* -s; -1: random */
    const char *logit_bias;   /* -l "ID+BIAS,ID-BIAS,...": into bias_id / bias (s points at them) */
    int32_t bias_id[300];
    float bias[300];
    opt_strs_t dry_breakers;  /* --dry-sequence-breaker, each use one ("none": none; not given: llama.cpp's
                               * defaults); s.dry_breakers points at them */
    const char *samplers, *sampling_seq;   /* --samplers "top_k;temperature" / --sampling-seq kt: one
                                        * at most, as letters in order (s.sampling_seq points there) */
    char order[17];     /* SAMPLER_ORDER_MAX letters + NUL */
    const char *grammar, *grammar_file, *json_schema, *json_schema_file;   /* one at most: the GBNF
                                        * they come to is s.grammar (kept for the process's life) */
    int verbose;        /* -v (applied by main.c before parsing) */
    int jinja;          /* --jinja: render the chat template (chat, serve) */
    const char *chat_template, *chat_template_file;   /* --chat-template NAME|TEXT, --chat-template-file */
    const char *reasoning_format;   /* --reasoning-format none|deepseek|auto (chat, serve; default auto) */
    int reasoning_budget;           /* --reasoning-budget: -1 think freely, 0 enable_thinking = false */
    const char *chat_template_kwargs;   /* --chat-template-kwargs: a JSON object's text, or NULL */
} cli_model_opts_t;

void cli_model_opts_default(cli_model_opts_t *o);
/* appends the model + sampling options to opts (capacity cap) after the command's own (its leading
 * entries, up to the first that names no option: the rest of the array is zeroed); returns the
 * new count */
int cli_model_opts_table(cli_model_opts_t *o, opt_t *opts, int cap, int with_sampling);
/* appends --jinja, --chat-template, --chat-template-file (chat and serve); returns the new count */
int cli_chat_template_opts(cli_model_opts_t *o, opt_t *opts, int n, int cap);
/* appends --reasoning-format, --reasoning-budget, --chat-template-kwargs (chat and serve); returns
 * the new count */
int cli_reasoning_opts(cli_model_opts_t *o, opt_t *opts, int n, int cap);
/* The Jinja template's variables those flags give: {"enable_thinking": budget != 0} with
 * --chat-template-kwargs set over it, as a new json_t * object in *out. 0, or TERN_EINVAL with a
 * one-line reason (not JSON, not an object, enable_thinking not a bool), TERN_ENOMEM. */
int cli_chat_kwargs(const cli_model_opts_t *o, void **out, char *err, size_t errlen);
/* After the model is loaded: the chat formatter those flags choose (chat_template_set). 0, or <0
 * with a one-line reason (no template with --jinja, a file that cannot be read, a parse error). */
int cli_chat_template_apply(tern_model *m, const cli_model_opts_t *o, char *err, size_t errlen);
/* The whole of file path (a prompt, a grammar, a schema; a pipe too), NUL-terminated and
 * malloc'd; what names it in the errors; more than max bytes is refused. NULL with err set. */
char *cli_read_file(const char *path, const char *what, long max, char *err, size_t errlen);
/* cli_read_file that also says how many bytes came (*len: the text may hold NUL bytes) */
char *cli_read_file_n(const char *path, const char *what, long max, size_t *len, char *err, size_t errlen);
/* validates the parsed values (file exists, a grammar or JSON schema parses, ...); 0 or <0 with a
 * one-line reason */
int cli_model_opts_check(cli_model_opts_t *o, char *err, size_t errlen);

/* A scoring step's buffers (perplexity, multiple choice): nb tokens with their sequence, position,
 * sample flag and target log-probability, room for `rows` scored rows (token, log-probability) and
 * the hidden states (nb, n_embd). 0, or TERN_ENOMEM (what was made is freed by
 * cli_score_step_free, which also takes a zeroed step). */
struct step;
int cli_score_step_alloc(struct step *s, int nb, int rows, int n_embd);
void cli_score_step_free(struct step *s);

#endif
