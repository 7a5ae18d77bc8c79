/* jinja: a Jinja2 subset interpreter for chat templates (the model's tokenizer.chat_template),
 * as Hugging Face's apply_chat_template and llama.cpp's --jinja (minja) render them. Values are
 * jansson json_t (messages and tools are JSON already). Text, {{ }}, {% %}, {# #}, whitespace
 * control, if/for/set/namespace/macro/call/break/continue, the filters, tests and string and
 * dict methods that real chat templates use (list in README and jinja.c's header). Not here:
 * template inheritance (extends/block/include/import), autoescaping, Python's full Unicode case
 * mapping (upper/lower/title map Latin-1, Latin Extended-A, Greek and Cyrillic letters; other
 * scripts are left as they are). Hostile templates are bounded: output
 * size, work steps, bytes built, recursion depth. */
#ifndef TERN_JINJA_H
#define TERN_JINJA_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

typedef struct jinja jinja_t;

typedef struct jinja_opts {
    int trim_blocks;       /* drop the first newline after a block tag (HF: 1) */
    int lstrip_blocks;     /* strip spaces/tabs before a block tag at the start of a line (HF: 1) */
    int keep_trailing_newline;   /* 0: one newline ending the template is dropped (Jinja's default) */
    size_t max_output;     /* bytes a render may produce (and any one string may hold) */
    size_t max_alloc;      /* bytes of strings a render may build in all */
    long max_steps;        /* nodes evaluated (loops, calls, expressions) */
    int max_depth;         /* nesting of the template and of macro calls */
    int64_t now;           /* strftime_now's time (Unix seconds, UTC); < 0: the clock */
} jinja_opts_t;

/* HF's settings (trim_blocks, lstrip_blocks) with limits fit for chat prompts: 16 MiB output,
 * 256 MiB built, 10M steps, depth 64, the clock */
void jinja_opts_default(jinja_opts_t *o);

/* Parses a template (src[0..len), UTF-8). NULL on a syntax error with "line L:C: why" in err.
 * opts may be NULL (defaults); it is copied. */
jinja_t *jinja_parse(const char *src, size_t len, const jinja_opts_t *opts, char *err, size_t errlen);
void jinja_destroy(jinja_t **t);

/* Renders with the variables of vars (a JSON object; not modified). Returns the output,
 * malloc'd and NUL-terminated (its length in *len when len != NULL), or NULL with a one-line
 * reason in err: raise_exception's message as given (and *raised = 1 when raised != NULL: the
 * template refused its input), else "line L: why" (*raised = 0). */
char *jinja_render(const jinja_t *t, const json_t *vars, size_t *len, int *raised, char *err, size_t errlen);

#endif
