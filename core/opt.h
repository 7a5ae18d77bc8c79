/* opt: one table per subcommand gives parsing, TERN_ARG_* environment mirrors and --help.
 * Each option has a short and/or long name in llama.cpp's spelling; its environment mirror is
 * TERN_ARG_ + the long name upper-cased with '-' → '_' (e.g. --top-k → TERN_ARG_TOP_K); a flag
 * on the command line wins over the environment. Values are range-checked; every error is one
 * line naming the flag and the value. Not here: what the values mean. */
#ifndef TERN_OPT_H
#define TERN_OPT_H
#include <stddef.h>
#include <stdio.h>

enum opt_kind {
    OPT_FLAG,    /* int, set to 1; no value */
    OPT_INT,     /* int, [min, max] when min < max */
    OPT_I64,     /* int64_t */
    OPT_FLOAT,   /* float, [min, max] when min < max */
    OPT_STR,     /* const char * (points into argv or environ) */
    OPT_SIZE,    /* uint64_t bytes: 512M, 12GiB, 1.5G, 4096 */
    OPT_LIST,    /* const char *; the caller splits (e.g. "-t 1,2") */
    OPT_STRS,    /* opt_strs_t: each use appends one value (llama.cpp's repeatable flags) */
};

#define OPT_STRS_MAX 64
typedef struct opt_strs {
    const char *v[OPT_STRS_MAX];   /* point into argv or environ */
    int n;
} opt_strs_t;

typedef struct opt {
    const char *shrt;     /* "-m" or NULL */
    const char *lng;      /* "--model" or NULL (then no env mirror) */
    int kind;
    void *dst;
    const char *metavar;  /* "FILE", "N"; NULL for flags */
    const char *help;     /* one line; "(default: ...)" is added from the initial value */
    double min, max;
} opt_t;

#define OPT_END {0, 0, 0, 0, 0, 0, 0, 0}

/* Parses argv[1..argc) (argv[0] is the subcommand). Positional arguments are collected into
 * pos[0..*npos) (capacity max_pos). "--help"/"-h" → returns 1 (caller prints help).
 * Returns 0 ok, 1 help, or a negative TERN_E* code with a one-line reason in err. */
int opt_parse(const opt_t *opts, int argc, char **argv, char **pos, int max_pos, int *npos,
              char *err, size_t errlen);
/* usage line, then each option: "  -m, --model FILE   help (default: x) [env TERN_ARG_MODEL]" */
void opt_help(FILE *f, const char *usage, const opt_t *opts);
/* parses "12GiB", "512M", "1.5G", "4096" (bytes); 0 ok, <0 bad */
int opt_parse_size(const char *s, unsigned long long *out);

#endif
