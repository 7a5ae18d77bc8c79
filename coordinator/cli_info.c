/* cli_info: `tern info FILE` — describes a GGUF file: architecture and hyper-parameters, the
 * vocabulary, a table of tensors (name, type, shape, bytes) and totals (parameters, size,
 * bits per weight). --kv lists every metadata key. Reads only the header: weights stay unmapped
 * pages. A KV cache file (slot save, --prompt-cache; known by its magic) gets its header instead.
 * Not here: checking that a model runs (tern run does that), or that a KV file restores into one. */
#include "coordinator/kvfile.h"
#include "coordinator/tokenizer.h"
#include "core/err.h"
#include "core/gguf.h"
#include "core/model_spec.h"
#include "core/opt.h"
#include "core/types.h"
#include "kernels/ops.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void human(char *buf, size_t cap, double b) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) { b /= 1024; i++; }
    snprintf(buf, cap, i ? "%.2f %s" : "%.0f %s", b, u[i]);
}

static int64_t tensor_elems(const gguf_tensor_t *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }

/* the RoPE scaling line: the type with its parameters, and the frequency factors tensor */
static void info_rope(const gguf_t *g, const hparams_t *hp) {
    const rope_scaling_t *r = &hp->rope;
    const gguf_tensor_t *ff = gguf_find_tensor(g, ROPE_FREQS_NAME);
    printf("rope scaling:  %s", rope_scaling_name(r->type));
    if (r->type != ROPE_SCALING_NONE) printf(" factor %g", 1.0 / r->freq_scale);
    if (r->type == ROPE_SCALING_YARN)
        printf(", orig ctx %d, ext %g, beta fast %g slow %g", r->n_ctx_orig ? r->n_ctx_orig : hp->n_ctx_train,
               r->ext_factor < 0 ? 1.0 : r->ext_factor, r->beta_fast, r->beta_slow);
    if (r->attn_factor != 1.0f) printf(", attn factor %g", r->attn_factor);
    if (ff) printf(", frequency factors %s (%lld)", ROPE_FREQS_NAME, (long long)ff->ne[0]);
    printf("\n");
}

static void info_hparams(const gguf_t *g) {
    hparams_t hp;
    char err[512], name[128] = "";
    if (gguf_get_str(g, "general.name", name, sizeof name) == 0) printf("name:          %s\n", name);
    if (hparams_from_gguf(&hp, g, err, sizeof err) < 0) {
        char arch[64] = "?";
        gguf_get_str(g, "general.architecture", arch, sizeof arch);
        size_t pl = strlen(g->path);
        const char *why = !strncmp(err, g->path, pl) && !strncmp(err + pl, ": ", 2) ? err + pl + 2 : err;
        printf("architecture:  %s (tern cannot run it: %s)\n", arch, why);
        return;
    }
    printf("architecture:  %s\n", hp.arch_name);
    printf("hparams:       layers %d, embd %d, ff %d, heads %d/%d (head dim %d), vocab %d, ctx %d\n", hp.n_layer,
           hp.n_embd, hp.n_ff, hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_vocab, hp.n_ctx_train);
    printf("               rope %s dims %d base %g, rms eps %g, act %s, sub-norms %s, lm head %s\n",
           hp.rope_neox ? "neox" : "normal", hp.rot_dim, hp.rope_base, hp.norm_eps,
           hp.act == ACT_RELU2 ? "relu2" : "silu", hp.sub_norms ? "yes" : "no",
           hp.tied ? "tied to token_embd" : "output.weight");
    info_rope(g, &hp);
}

/* the fill-in-the-middle tokens as the tokenizer finds them (keys, else their text) */
static void info_fim(const gguf_t *g) {
    static const char *const what[TOKENIZER_FIM_N] = {"pre", "suf", "mid", "pad", "rep", "sep"};
    char err[256], line[512] = "", piece[64];
    tokenizer_t *t = NULL;
    if (tokenizer_load(&t, g, err, sizeof err) < 0) return;   /* the vocab line said what it could */
    size_t n = 0;
    for (int k = 0; k < TOKENIZER_FIM_N && n < sizeof line; k++) {
        int id = tokenizer_fim(t, k);
        if (id < 0) continue;
        int pl = tokenizer_token_text(t, id, piece, sizeof piece);
        if (pl < 0 || pl >= (int)sizeof piece) piece[0] = 0;
        n += (size_t)snprintf(line + n, sizeof line - n, "%s%s %d %s", n ? ", " : "", what[k], id, piece);
    }
    int ok = tokenizer_fim(t, TOKENIZER_FIM_PRE) >= 0 && tokenizer_fim(t, TOKENIZER_FIM_SUF) >= 0 &&
             tokenizer_fim(t, TOKENIZER_FIM_MID) >= 0;
    printf("fim tokens:    %s%s\n", n ? line : "none",
           ok ? " (/infill works)" : n ? " (/infill needs pre, suf and mid)" : "");
    tokenizer_destroy(&t);
}

static void info_vocab(const gguf_t *g) {
    char model[64] = "", pre[64] = "";
    int64_t bos = -1, eos = -1;
    const gguf_kv_t *toks = gguf_find(g, "tokenizer.ggml.tokens");
    if (gguf_get_str(g, "tokenizer.ggml.model", model, sizeof model) < 0 && !toks) {
        printf("vocab:         none (no tokenizer.ggml.* keys)\n");
        return;
    }
    gguf_get_str(g, "tokenizer.ggml.pre", pre, sizeof pre);
    gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &bos);
    gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &eos);
    const gguf_kv_t *merges = gguf_find(g, "tokenizer.ggml.merges");
    printf("vocab:         %s%s%s%s, %" PRIu64 " tokens, %" PRIu64 " merges, bos %" PRId64 ", eos %" PRId64 "%s\n",
           model[0] ? model : "?", pre[0] ? " (pre " : "", pre, pre[0] ? ")" : "",
           toks && toks->type == GGUF_ARR ? toks->arr_n : 0, merges && merges->type == GGUF_ARR ? merges->arr_n : 0,
           bos, eos, gguf_find(g, "tokenizer.chat_template") ? ", chat template" : "");
    info_fim(g);
    const gguf_kv_t *ct = gguf_find(g, "tokenizer.chat_template");
    char *tmpl = ct && ct->type == GGUF_STR ? strndup(ct->v.s.ptr, ct->v.s.len) : NULL;
    if (tmpl) {
        char line[320];
        chat_template_describe(tmpl, line, sizeof line);
        printf("chat template: %s\n", line);
        free(tmpl);
    }
}

/* one metadata value, arrays shortened to their first elements */
static void print_kv(const gguf_kv_t *kv) {
    static const char *tn[GGUF_VTYPE_COUNT] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr",
                                               "u64", "i64", "f64"};
    printf("  %-44s %-5s ", kv->key, tn[kv->type]);
    switch (kv->type) {
    case GGUF_U8: case GGUF_U16: case GGUF_U32: case GGUF_U64: printf("%" PRIu64, kv->v.u); break;
    case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64: printf("%" PRId64, kv->v.i); break;
    case GGUF_F32: case GGUF_F64: printf("%g", kv->v.f); break;
    case GGUF_BOOL: printf("%s", kv->v.u ? "true" : "false"); break;
    case GGUF_STR: {
        int n = kv->v.s.len > 60 ? 60 : (int)kv->v.s.len;
        printf("\"");
        for (int i = 0; i < n; i++) {
            char c = kv->v.s.ptr[i];
            putchar(c == '\n' ? ' ' : (unsigned char)c < 0x20 ? '?' : c);
        }
        printf("\"%s", kv->v.s.len > 60 ? "..." : "");
        break;
    }
    default:
        printf("[%s × %" PRIu64 "]", tn[kv->arr_type], kv->arr_n);
        if (kv->arr_type == GGUF_STR && kv->arr_n) {
            gguf_str_t s = gguf_arr_str(kv, 0);
            printf(" \"%.*s\", ...", (int)(s.len > 20 ? 20 : s.len), s.ptr);
        }
    }
    putchar('\n');
}

static void info_tensors(const gguf_t *g, int table) {
    int64_t params = 0, ter_params = 0;
    uint64_t bytes = 0, ter_bytes = 0;
    if (table && g->n_tensors) printf("\n  %-32s %-6s %-22s %14s\n", "tensor", "type", "shape", "bytes");
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor_t *t = &g->tensors[i];
        int64_t n = tensor_elems(t);
        params += n;
        bytes += t->nbytes;
        if (type_traits(t->type)->ternary) {
            ter_params += n;
            ter_bytes += t->nbytes;
        }
        if (!table) continue;
        char shape[64];
        int k = snprintf(shape, sizeof shape, "%" PRId64, t->ne[0]);
        for (int d = 1; d < t->ndim; d++) k += snprintf(shape + k, sizeof shape - (size_t)k, " x %" PRId64, t->ne[d]);
        printf("  %-32s %-6s %-22s %14zu\n", t->name, type_name(t->type), shape, t->nbytes);
    }
    char hb[32], hf[32];
    human(hb, sizeof hb, (double)bytes);
    human(hf, sizeof hf, (double)g->size);
    printf("\ntotals:        %" PRIu64 " tensors, %" PRId64 " params (%" PRId64 " ternary), tensor data %" PRIu64
           " bytes (%s), file %zu bytes (%s)\n", g->n_tensors, params, ter_params, bytes, hb, g->size, hf);
    printf("bits/weight:   %.4f overall", params ? (double)bytes * 8 / (double)params : 0.0);
    if (ter_params) printf(", %.4f ternary", (double)ter_bytes * 8 / (double)ter_params);
    printf("\n");
    /* one line per file of the element types and how many tensors have each (llama-quantize's
     * TQ1_0 files: tq1_0, f32, q4_k for token_embd, q6_k for output) */
    printf("types:        ");
    for (int ty = 0; ty < TT_COUNT; ty++) {
        int n = 0;
        for (uint64_t i = 0; i < g->n_tensors; i++) n += g->tensors[i].type == ty;
        if (n) printf(" %s x%d", type_name(ty), n);
    }
    printf("\n");
}

/* 1 when path begins with the KV cache file magic (kvfile.h), else 0 (GGUF's parser reports the rest) */
static int is_kvfile(const char *path) {
    FILE *f = fopen(path, "rb");
    char magic[8];
    int yes = f && fread(magic, 1, sizeof magic, f) == sizeof magic && !memcmp(magic, KVFILE_MAGIC, sizeof magic);
    if (f) fclose(f);
    return yes;
}

/* the RoPE record's line: what the keys were rotated with (a restore needs the same) */
static void info_kv_rope(const kvfile_model_t *m) {
    const kvfile_rope_t *r = &m->rope;
    if (m->rope_old) {
        printf("rope:          not recorded (version 1: plain RoPE of the model file's own base)\n");
        return;
    }
    printf("rope:          scaling %s, freq_base %.9g, freq_scale %.9g, ext_factor %g, attn_factor %g",
           rope_scaling_name(r->type), r->freq_base, r->freq_scale, r->ext_factor, r->attn_factor);
    if (r->ext_factor != 0)   /* the record keeps yarn's ramp only where it takes effect */
        printf(", orig ctx %d, beta fast %g slow %g", r->n_ctx_orig, r->beta_fast, r->beta_slow);
    if (r->freqs_hash) printf(", frequency factors applied (%s %016" PRIx64 ")\n", ROPE_FREQS_NAME, r->freqs_hash);
    else printf(", frequency factors none\n");
}

/* `tern info FILE.kv`: the header of a slot save / --prompt-cache file, after kvfile_load has checked
 * the whole file (a corrupt one is its one-line error). 0, or 1 with the error on stderr. */
static int info_kvfile(const char *path) {
    kvfile_t f;
    char err[512], hb[32];
    if (kvfile_load(&f, path, err, sizeof err) < 0) {
        fprintf(stderr, "tern info: %s\n", err);
        return 1;
    }
    const kvfile_model_t *m = &f.m;
    human(hb, sizeof hb, (double)f.len);
    printf("file:          %s (tern KV cache file v%d, %zu bytes, %s)\n", path, m->rope_old ? 1 : 2, f.len, hb);
    printf("model:         the file of %" PRIu64 " bytes with hash %s\n", m->size, m->hash);
    printf("kv cache:      %s, layers %d, embd %d, vocab %d, kv dim %d (%zu-byte rows)\n", ops_kv_name(m->kv_type),
           m->n_layer, m->n_embd, m->n_vocab, m->kv_dim, m->row);
    human(hb, sizeof hb, (double)kvfile_kv_bytes(m, f.n_tok));
    printf("tokens:        %d (%s of keys and values)\n", f.n_tok, hb);
    info_kv_rope(m);
    kvfile_free(&f);
    return fflush(stdout) == 0 ? 0 : 1;
}

int cli_info(int argc, char **argv) {
    const char *model = NULL;
    int kv = 0, no_tensors = 0;
    opt_t opts[] = {
        {"-m", "--model", OPT_STR, &model, "FILE", "GGUF or KV cache file (slot save, --prompt-cache), or the argument",
         0, 0},
        {NULL, "--kv", OPT_FLAG, &kv, NULL, "list every metadata key and value", 0, 0},
        {NULL, "--no-tensors", OPT_FLAG, &no_tensors, NULL, "totals only, no tensor table", 0, 0},
        OPT_END,
    };
    char err[512], *pos[2];
    int npos, rc = opt_parse(opts, argc, argv, pos, 1, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern info [options] FILE.gguf|FILE.kv", opts);
        return 0;
    }
    if (rc == 0 && npos == 1) {
        if (model) rc = err_set(err, sizeof err, TERN_EINVAL, "give the file once (-m or argument), not both");
        model = pos[0];
    }
    if (rc == 0 && !model) rc = err_set(err, sizeof err, TERN_EINVAL, "missing FILE (see --help)");
    if (rc == 0 && is_kvfile(model)) return info_kvfile(model);
    gguf_t *g = NULL;
    if (rc == 0) rc = gguf_open(&g, model, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "tern info: %s\n", err);
        return 1;
    }
    printf("file:          %s (GGUF v%u, %" PRIu64 " keys, %" PRIu64 " tensors, alignment %zu)\n", g->path,
           g->version, g->n_kv, g->n_tensors, g->alignment);
    info_hparams(g);
    info_vocab(g);
    if (kv) {
        printf("\nmetadata:\n");
        for (uint64_t i = 0; i < g->n_kv; i++) print_kv(&g->kv[i]);
    }
    info_tensors(g, !no_tensors);
    gguf_close(&g);
    return fflush(stdout) == 0 ? 0 : 1;
}
