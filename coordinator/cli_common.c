/* cli_common: see cli_common.h. */
#include "coordinator/cli_common.h"
#include "coordinator/cluster_mpi.h"
#include "coordinator/engine.h"
#include "coordinator/grammar.h"
#include "coordinator/pipeline.h"
#include "core/alloc.h"
#include "coordinator/json_schema.h"
#include "core/err.h"
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void cli_model_opts_default(cli_model_opts_t *o) {
    memset(o, 0, sizeof *o);
    tern_params_default(&o->p);
    tern_sampling_default(&o->s);
    o->p.n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    o->seed = -1;
    o->reasoning_format = "auto";
    o->reasoning_budget = -1;
}

/* a command's option table too small for the shared options is a bug in tern, not the user's:
 * dropping flags quietly would make them "unknown option" errors, so it stops at once */
static void table_fits(size_t need, int cap) {
    if (need + 1 > (size_t)cap) {
        fprintf(stderr, "tern: internal error: an option table holds %d entries, %zu needed\n", cap, need + 1);
        abort();
    }
}

int cli_model_opts_table(cli_model_opts_t *o, opt_t *opts, int cap, int with_sampling) {
    int n = 0;
    while (n < cap && (opts[n].shrt || opts[n].lng)) n++;   /* the command's own, first */
    opt_t model[] = {
        {"-m", "--model", OPT_STR, &o->p.model, "FILE", "model GGUF file", 0, 0},
        {"-t", "--threads", OPT_INT, &o->p.n_threads, "N", "threads", 1, 1024},
        {"-tb", "--threads-batch", OPT_INT, &o->p.n_threads_batch, "N", "threads of steps with more than one token, prompts (0: as -t)", 0, 1024},
        {NULL, "--no-mmap", OPT_FLAG, &o->p.no_mmap, NULL, "read the weights into memory instead of mapping the model file (network file systems)", 0, 0},
        {NULL, "--mlock", OPT_FLAG, &o->p.mlock, NULL, "keep the weights in memory: no swapping, no eviction (workers: tern worker --mlock, or this flag passed on)", 0, 0},
        {"-c", "--ctx-size", OPT_INT, &o->p.n_ctx, "N", "context size per sequence (0: model's, at most 4096)", 0, 1 << 20},
        {"-b", "--batch-size", OPT_INT, &o->p.n_batch, "N", "tokens per forward step", 1, 8192},
        {"-ub", "--ubatch-size", OPT_INT, &o->p.n_ubatch, "N", "tokens per forward pass inside a step: the stages' buffers (0: the -b)", 0, 8192},
        {NULL, "--prefill-chunk", OPT_INT, &o->p.prefill_chunk, "N", "prompt tokens per step while other sequences generate (0: up to -b; -1: default 32)", -1, 8192},
        {"-np", "--parallel", OPT_INT, &o->p.n_seq, "N", "concurrent sequences", 1, 1024},
        {NULL, "--head", OPT_STR, &o->p.head_type, "TYPE", "convert the lm head at load: f16 | q8_0", 0, 0},
        {NULL, "--kv-type", OPT_STR, &o->p.kv_type, "TYPE", "KV cache elements: f16 (default) | q8_0 (half the memory) | f32", 0, 0},
        {NULL, "--kv-f32", OPT_FLAG, &o->p.kv_f32, NULL, "keep the KV cache in f32 (as --kv-type f32)", 0, 0},
        {NULL, "--cluster", OPT_STR, &o->p.cluster, "FILE", "run on the workers of a cluster YAML file", 0, 0},
        {NULL, "--workers", OPT_STR, &o->p.workers, "LIST", "run on workers tcp://host:port,... (quick start)", 0, 0},
        {"-ngl", "--n-gpu-layers", OPT_INT, &o->p.n_gpu_layers, "N", "run the first N layers on the GPU (CUDA builds; >= layers: all)", 0, 1 << 20},
        {NULL, "--mpi", OPT_FLAG, &o->p.mpi, NULL, "started by mpirun: this is rank 0, the other ranks are the workers (README: MPI)", 0, 0},
        {"-md", "--model-draft", OPT_STR, &o->p.draft_model, "FILE", "speculative decoding: a small model with the same vocabulary proposes drafts (greedy, run here), checked by sampling as usual: the same text as without", 0, 0},
        {NULL, "--draft", OPT_INT, &o->p.n_draft, "N", "draft tokens a step with -md (0: 8)", 0, 16},
        {NULL, "--lookup", OPT_INT, &o->p.lookup, "N", "prompt lookup decoding: check up to N draft tokens from the text so far in each step, greedy or sampled: the same text as without (0: off)", 0, 16},
        {NULL, "--stages", OPT_INT, &o->p.stages, "N", "split the model into N in-process stages (testing)", 1, 1024},
        {NULL, "--rope-scaling", OPT_STR, &o->p.rope_scaling, "{none,linear,yarn}", "RoPE frequency scaling method (default: the model's)", 0, 0},
        {NULL, "--rope-scale", OPT_FLOAT, &o->p.rope_scale, "N", "RoPE context scaling factor: the context grows by N (--rope-freq-scale 1/N; 0: the model's)", 0, 1e6},
        {NULL, "--rope-freq-base", OPT_FLOAT, &o->p.rope_freq_base, "N", "RoPE base frequency (NTK-aware scaling; 0: the model's)", 0, 1e12},
        {NULL, "--rope-freq-scale", OPT_FLOAT, &o->p.rope_freq_scale, "N", "RoPE frequency scaling factor: the context grows by 1/N (0: the model's)", 0, 1e6},
        {NULL, "--yarn-orig-ctx", OPT_INT, &o->p.yarn_orig_ctx, "N", "YaRN: the model's original context size (0: the model's)", 0, 1 << 24},
        {NULL, "--yarn-ext-factor", OPT_FLOAT, &o->p.yarn_ext_factor, "N", "YaRN: extrapolation mix factor (0: full interpolation; -1: the model's)", -1, 1000},
        {NULL, "--yarn-attn-factor", OPT_FLOAT, &o->p.yarn_attn_factor, "N", "YaRN: scale of sqrt(t), the magnitude of q and k (multiplies the model's; 0: 1)", 0, 1000},
        {NULL, "--yarn-beta-slow", OPT_FLOAT, &o->p.yarn_beta_slow, "N", "YaRN: high correction dim, alpha (0: the model's, else 1)", 0, 1e6},
        {NULL, "--yarn-beta-fast", OPT_FLOAT, &o->p.yarn_beta_fast, "N", "YaRN: low correction dim, beta (0: the model's, else 32)", 0, 1e6},
        {"-v", "--verbose", OPT_FLAG, &o->verbose, NULL, "debug logging", 0, 0},
    };
    opt_t samp[] = {
        {"-s", "--seed", OPT_INT, &o->seed, "N", "sampling seed (-1: random)", -1, 2147483647.0},
        {NULL, "--temp", OPT_FLOAT, &o->s.temp, "T", "temperature (0: greedy)", 0, 100},
        {NULL, "--top-k", OPT_INT, &o->s.top_k, "N", "top-k (0: off)", 0, 1 << 24},
        {NULL, "--top-p", OPT_FLOAT, &o->s.top_p, "P", "top-p (1: off)", 0, 1},
        {NULL, "--min-p", OPT_FLOAT, &o->s.min_p, "P", "min-p (0: off)", 0, 1},
        {NULL, "--repeat-penalty", OPT_FLOAT, &o->s.repeat_penalty, "X", "repetition penalty (1: off)", 0, 100},
        {NULL, "--repeat-last-n", OPT_INT, &o->s.repeat_last_n, "N", "tokens the penalty looks back", 0, 1024},
        {NULL, "--frequency-penalty", OPT_FLOAT, &o->s.freq_penalty, "X", "logit -= X per occurrence in the last --repeat-last-n tokens (0: off)", -100, 100},
        {NULL, "--presence-penalty", OPT_FLOAT, &o->s.presence_penalty, "X", "logit -= X when the token is among them (0: off)", -100, 100},
        {"-l", "--logit-bias", OPT_STR, &o->logit_bias, "ID(+|-)B,...", "add B (-100..100) to token ID's logit, e.g. 15043+1,29-100", 0, 0},
        {NULL, "--grammar", OPT_STR, &o->grammar, "GBNF", "constrain the output to a GBNF grammar (llama.cpp's syntax, rule root)", 0, 0},
        {NULL, "--grammar-file", OPT_STR, &o->grammar_file, "FILE", "the same from a file", 0, 0},
        {"-j", "--json-schema", OPT_STR, &o->json_schema, "SCHEMA", "constrain the output to JSON matching a JSON Schema ({} : any object)", 0, 0},
        {"-jf", "--json-schema-file", OPT_STR, &o->json_schema_file, "FILE", "the same from a file", 0, 0},
        {NULL, "--context-shift", OPT_FLAG, &o->p.context_shift, NULL, "a sequence that fills its context (-c) drops the older half of it after --keep tokens and goes on (default: it ends there)", 0, 0},
        {NULL, "--ignore-eos", OPT_FLAG, &o->s.ignore_eos, NULL, "never sample an end-of-generation token (generate exactly -n tokens)", 0, 0},
        {NULL, "--keep", OPT_INT, &o->s.n_keep, "N", "with --context-shift: prompt tokens kept after the BOS (-1: the whole prompt)", -1, 1 << 20},
        {NULL, "--typical", OPT_FLOAT, &o->s.typical_p, "P", "locally typical sampling (1: off)", 0, 1},
        {NULL, "--top-nsigma", OPT_FLOAT, &o->s.top_n_sigma, "N", "keep logits >= max - N standard deviations (<= 0: off)", -1, 1000},
        {NULL, "--xtc-probability", OPT_FLOAT, &o->s.xtc_probability, "P", "XTC: chance the most likely tokens leave (0: off)", 0, 1},
        {NULL, "--xtc-threshold", OPT_FLOAT, &o->s.xtc_threshold, "P", "XTC: ... those of probability >= P but the last (> 0.5: off)", 0, 1},
        {NULL, "--dynatemp-range", OPT_FLOAT, &o->s.dynatemp_range, "R", "dynamic temperature: --temp +- R by the entropy (0: off)", 0, 100},
        {NULL, "--dynatemp-exp", OPT_FLOAT, &o->s.dynatemp_exponent, "X", "dynamic temperature exponent", 0, 100},
        {NULL, "--mirostat", OPT_INT, &o->s.mirostat, "N", "mirostat 1 or 2 in place of top-k/p, min-p, typical, XTC, the penalties (0: off; no drafts)", 0, 2},
        {NULL, "--mirostat-lr", OPT_FLOAT, &o->s.mirostat_eta, "ETA", "mirostat learning rate", 0, 10},
        {NULL, "--mirostat-ent", OPT_FLOAT, &o->s.mirostat_tau, "TAU", "mirostat target entropy", 0, 100},
        {NULL, "--dry-multiplier", OPT_FLOAT, &o->s.dry_multiplier, "X", "DRY repetition penalty multiplier (0: off)", 0, 1000},
        {NULL, "--dry-base", OPT_FLOAT, &o->s.dry_base, "X", "DRY base (< 1: off)", 0, 100},
        {NULL, "--dry-allowed-length", OPT_INT, &o->s.dry_allowed_length, "N", "DRY: repeats this long go unpenalised", 0, 4096},
        {NULL, "--dry-penalty-last-n", OPT_INT, &o->s.dry_penalty_last_n, "N", "DRY: tokens looked back (-1: all kept, at most 4096; 0: off)", -1, 1 << 20},
        {NULL, "--samplers", OPT_STR, &o->samplers, "LIST", "the samplers that run, in this order, ';'-separated (llama.cpp's names; default penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature); one left out does not run", 0, 0},
        {NULL, "--sampling-seq", OPT_STR, &o->sampling_seq, "SEQ", "the same as letters: e penalties, d dry, s top_n_sigma, k top_k, y typ_p, p top_p, m min_p, x xtc, t temperature (default edskypmxt)", 0, 0},
        {NULL, "--dry-sequence-breaker", OPT_STRS, &o->dry_breakers, "S", "DRY: a sequence breaker, once per breaker (the first replaces the defaults \\n : \" *; 'none': none)", 0, 0},
    };
    size_t need = (size_t)n + sizeof model / sizeof model[0] + (with_sampling ? sizeof samp / sizeof samp[0] : 0);
    table_fits(need, cap);
    for (size_t i = 0; i < sizeof model / sizeof model[0]; i++) opts[n++] = model[i];
    if (with_sampling)
        for (size_t i = 0; i < sizeof samp / sizeof samp[0]; i++) opts[n++] = samp[i];
    opt_t end = OPT_END;
    opts[n] = end;
    return n;
}

int cli_chat_template_opts(cli_model_opts_t *o, opt_t *opts, int n, int cap) {
    opt_t t[] = {
        {NULL, "--jinja", OPT_FLAG, &o->jinja, NULL,
         "render the model's own chat template (Jinja), as llama.cpp's --jinja; serve: tools in the template's native "
         "call format (hermes, llama3, mistral) when it has one", 0, 0},
        {NULL, "--chat-template", OPT_STR, &o->chat_template, "NAME|TEXT",
         "chat format: llama3, bitnet, falcon3, chatml, llama2, llama2-sys, phi3, or a template text (rendered with --jinja)", 0, 0},
        {NULL, "--chat-template-file", OPT_STR, &o->chat_template_file, "FILE", "the chat template from a file", 0, 0},
    };
    table_fits((size_t)n + sizeof t / sizeof t[0], cap);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) opts[n++] = t[i];
    opt_t end = OPT_END;
    opts[n] = end;
    return n;
}

int cli_reasoning_opts(cli_model_opts_t *o, opt_t *opts, int n, int cap) {
    opt_t t[] = {
        {NULL, "--reasoning-format", OPT_STR, &o->reasoning_format, "FMT",
         "replies of reasoning models: deepseek (<think>...</think> apart from the answer: serve's "
         "reasoning_content, chat's thinking shown marked and left out of the conversation), deepseek-legacy (as "
         "deepseek, but serve's streams keep it in the content between <think> tags), none (left in the "
         "reply), auto (deepseek when the chat template writes <think>)", 0, 0},
        {NULL, "--reasoning-budget", OPT_INT, &o->reasoning_budget, "N",
         "-1: think freely; 0: no thinking (the template gets enable_thinking = false); N > 0: at most N tokens of "
         "thinking, then </think> is forced and the model answers", -1, 1 << 30},
        {NULL, "--chat-template-kwargs", OPT_STR, &o->chat_template_kwargs, "JSON",
         "more variables for the --jinja template, e.g. '{\"enable_thinking\":false}' (serve: a request's "
         "chat_template_kwargs go over them)", 0, 0},
    };
    table_fits((size_t)n + sizeof t / sizeof t[0], cap);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) opts[n++] = t[i];
    opt_t end = OPT_END;
    opts[n] = end;
    return n;
}

int cli_chat_kwargs(const cli_model_opts_t *o, void **out, char *err, size_t errlen) {
    *out = NULL;
    json_t *kw = json_pack("{s:b}", "enable_thinking", o->reasoning_budget != 0), *user = NULL;
    if (!kw) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    if (o->chat_template_kwargs) {
        json_error_t je;
        user = json_loads(o->chat_template_kwargs, 0, &je);
        json_t *et = json_object_get(user, "enable_thinking");
        if (!json_is_object(user) || (et && !json_is_boolean(et))) {
            err_set(err, errlen, TERN_EINVAL, "--chat-template-kwargs: %s", !user ? je.text : !json_is_object(user)
                    ? "not a JSON object" : "enable_thinking must be true or false");
            json_decref(user);
            json_decref(kw);
            return TERN_EINVAL;
        }
        if (json_object_update(kw, user) < 0) {
            json_decref(user);
            json_decref(kw);
            return err_set(err, errlen, TERN_ENOMEM, "out of memory");
        }
        json_decref(user);
    }
    *out = kw;
    return 0;
}

int cli_chat_template_apply(tern_model *m, const cli_model_opts_t *o, char *err, size_t errlen) {
    if (o->chat_template && o->chat_template_file)
        return err_set(err, errlen, TERN_EINVAL, "use --chat-template or --chat-template-file, not both");
    char *text = o->chat_template_file ? cli_read_file(o->chat_template_file, "--chat-template-file", 1 << 20, err, errlen) : NULL;
    if (o->chat_template_file && !text) return TERN_EIO;
    int rc = chat_template_set(m->tok, text ? text : o->chat_template, o->jinja, err, errlen);
    free(text);
    return rc;
}

char *cli_read_file(const char *path, const char *what, long max, char *err, size_t errlen) {
    size_t n;
    return cli_read_file_n(path, what, max, &n, err, errlen);
}

char *cli_read_file_n(const char *path, const char *what, long max, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { err_set(err, errlen, TERN_EIO, "cannot open %s '%s'", what, path); return NULL; }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (;;) {   /* read as it comes (a pipe has no size to ask for) */
        if (n + 4096 + 1 > cap) {
            cap = 2 * cap + 8192;
            char *nb = realloc(buf, cap);
            if (!nb) { rc = err_set(err, errlen, TERN_ENOMEM, "out of memory reading %s '%s'", what, path); break; }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, 4096, f);
        n += r;
        if (n > (size_t)max) { rc = err_set(err, errlen, TERN_EINVAL, "%s '%s' is too large (at most %ld bytes)", what, path, max); break; }
        if (r < 4096) {
            if (ferror(f)) rc = err_set(err, errlen, TERN_EIO, "cannot read %s '%s'", what, path);
            break;
        }
    }
    fclose(f);
    if (rc < 0) { free(buf); return NULL; }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* The GBNF of the command line's grammar flags: one per process, kept for its whole life (s.grammar
 * points at it from every front end), so it hangs here rather than on each command's exit path. */
static char *g_grammar_text;

/* --grammar / --grammar-file / -j / -jf → o->s.grammar (checked: it parses) */
static int grammar_opts(cli_model_opts_t *o, char *err, size_t errlen) {
    int given = !!o->grammar + !!o->grammar_file + !!o->json_schema + !!o->json_schema_file;
    if (given > 1) return err_set(err, errlen, TERN_EINVAL, "use one of --grammar, --grammar-file, --json-schema, --json-schema-file");
    if (!given) return 0;
    char *text = o->grammar_file ? cli_read_file(o->grammar_file, "--grammar-file", GRAMMAR_MAX_TEXT, err, errlen)
                 : o->json_schema_file ? cli_read_file(o->json_schema_file, "--json-schema-file", GRAMMAR_MAX_TEXT, err, errlen)
                 : strdup(o->grammar ? o->grammar : o->json_schema);
    if (!text) return o->grammar || o->json_schema ? err_set(err, errlen, TERN_ENOMEM, "out of memory") : TERN_EINVAL;
    size_t len = strlen(text);
    char why[256];
    if (o->json_schema || o->json_schema_file) {
        char *g = json_schema_to_gbnf(text, len, why, sizeof why);
        free(text);
        if (!g) return err_set(err, errlen, TERN_EINVAL, "--json-schema: %s", why);
        text = g;
        len = strlen(g);
    }
    grammar_t *g = grammar_parse(text, len, NULL, why, sizeof why);
    if (!g) {
        free(text);
        return err_set(err, errlen, TERN_EINVAL, "--grammar: %s", why);
    }
    grammar_destroy(&g);
    free(g_grammar_text);
    o->s.grammar = g_grammar_text = text;
    return 0;
}

/* -l "ID+B,ID-B,...": token ids (checked against the vocabulary at load) and biases in [-100, 100] */
static int bias_opts(cli_model_opts_t *o, char *err, size_t errlen) {
    const char *p = o->logit_bias;
    int n = 0;
    while (p && *p) {
        char *end;
        long id = strtol(p, &end, 10);
        if (end == p || id < 0 || id > INT32_MAX || (*end != '+' && *end != '-'))
            return err_set(err, errlen, TERN_EINVAL, "--logit-bias '%s': expected TOKEN_ID+BIAS or TOKEN_ID-BIAS, comma-separated", o->logit_bias);
        const char *b = end;
        float v = strtof(b, &end);
        if (end == b || !(v >= -100 && v <= 100) || (*end && (*end != ',' || !end[1])))
            return err_set(err, errlen, TERN_EINVAL, "--logit-bias '%s': a bias is a number in [-100, 100]", o->logit_bias);
        if (n == (int)(sizeof o->bias / sizeof o->bias[0]))
            return err_set(err, errlen, TERN_EINVAL, "--logit-bias: at most %d tokens", n);
        o->bias_id[n] = (int32_t)id;
        o->bias[n++] = v;
        p = *end ? end + 1 : end;
    }
    o->s.n_bias = n;
    o->s.bias_id = o->bias_id;
    o->s.bias = o->bias;
    return 0;
}

_Static_assert(sizeof ((cli_model_opts_t *)0)->order == SAMPLER_ORDER_MAX + 1, "room for an order's letters");

/* --samplers NAMES / --sampling-seq LETTERS → o->s.sampling_seq (letters; checked here) */
static int order_opts(cli_model_opts_t *o, char *err, size_t errlen) {
    if (o->samplers && o->sampling_seq)
        return err_set(err, errlen, TERN_EINVAL, "use --samplers or --sampling-seq, not both");
    const char *text = o->samplers ? o->samplers : o->sampling_seq;
    if (!text) return 0;
    sampler_params_t *sp = malloc(sizeof *sp);   /* ~50 KiB: not on the stack */
    if (!sp) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    char why[200];
    sp->n_order = 0;
    int rc = sampler_order_parse(sp, text, o->sampling_seq != NULL, why, sizeof why);
    if (rc == 0) sampler_order_letters(sp, o->order);
    free(sp);
    if (rc < 0) return err_set(err, errlen, rc, "%s: %s", o->samplers ? "--samplers" : "--sampling-seq", why);
    o->s.sampling_seq = o->order;
    return 0;
}

/* --dry-sequence-breaker: none given keeps llama.cpp's defaults; "none" alone clears them */
static void dry_opts(cli_model_opts_t *o) {
    if (!o->dry_breakers.n) return;
    o->s.dry_breakers = o->dry_breakers.v;
    o->s.n_dry_breakers = o->dry_breakers.n == 1 && !strcmp(o->dry_breakers.v[0], "none") ? 0 : o->dry_breakers.n;
}

int cli_model_opts_check(cli_model_opts_t *o, char *err, size_t errlen) {
    if (!o->p.model) return err_set(err, errlen, TERN_EINVAL, "no model given: use -m FILE");
    dry_opts(o);
    int rc = bias_opts(o, err, errlen);
    if (rc == 0) rc = order_opts(o, err, errlen);
    if (rc == 0) rc = grammar_opts(o, err, errlen);
    if (rc < 0) return rc;
    if (access(o->p.model, R_OK) != 0) return err_set(err, errlen, TERN_ENOTFOUND, "cannot read model '%s'", o->p.model);
    if (o->p.cluster && o->p.workers) return err_set(err, errlen, TERN_EINVAL, "use --cluster or --workers, not both");
    o->s.seed = o->seed >= 0 ? (uint64_t)o->seed : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    return cluster_mpi_start(&o->p, err, errlen);   /* under mpirun: ranks > 0 serve as workers and exit there */
}

int cli_score_step_alloc(struct step *s, int nb, int rows, int n_embd) {
    s->tokens = malloc((size_t)nb * sizeof(int32_t));
    s->seq = calloc((size_t)nb, sizeof(int));
    s->pos = malloc((size_t)nb * sizeof(int));
    s->sample = calloc((size_t)nb, 1);
    s->out_target_lp = malloc((size_t)nb * sizeof(double));
    s->out_tok = malloc((size_t)rows * sizeof(int32_t));
    s->out_lp = malloc((size_t)rows * sizeof(float));
    s->h = tern_alloc((size_t)nb * (size_t)n_embd * sizeof(float));
    return s->tokens && s->seq && s->pos && s->sample && s->out_target_lp && s->out_tok && s->out_lp && s->h ? 0 : TERN_ENOMEM;
}

void cli_score_step_free(struct step *s) {
    free(s->tokens);
    free(s->seq);
    free(s->pos);
    free(s->sample);
    free(s->out_target_lp);
    free(s->out_tok);
    free(s->out_lp);
    tern_free(s->h);
}
