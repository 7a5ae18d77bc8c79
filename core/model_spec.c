/* model_spec: arch names, GGUF keys, presets and tensor roles. */
#include "core/model_spec.h"
#include "core/err.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *g_arch[ARCH_COUNT] = {"bitnet-b1.58", "bitnet", "llama"};
static const char *g_roles[TR_COUNT] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_sub_norm",
                                        "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "ffn_sub_norm"};

const char *arch_name(int arch) { return arch >= 0 && arch < ARCH_COUNT ? g_arch[arch] : "?"; }

int arch_from_name(const char *name) {
    if (!name) return -1;
    if (!strcmp(name, "bitnet-b1.58") || !strcmp(name, "bitnet-25")) return ARCH_BITNET_B158;
    if (!strcmp(name, "bitnet")) return ARCH_BITNET;
    if (!strcmp(name, "llama")) return ARCH_LLAMA;
    return -1;
}

void hparams_defaults(hparams_t *hp) {
    if (!hp->arch_name[0]) snprintf(hp->arch_name, sizeof hp->arch_name, "%s", arch_name(hp->arch));
    if (!hp->n_head_kv) hp->n_head_kv = hp->n_head;
    if (!hp->head_dim && hp->n_head) hp->head_dim = hp->n_embd / hp->n_head;
    if (!hp->rot_dim) hp->rot_dim = hp->head_dim;
    if (hp->norm_eps == 0) hp->norm_eps = 1e-5f;
    if (hp->rope_base == 0) hp->rope_base = 10000.0f;
    /* zero = unset for these (ext_factor 0 is a value: callers that mean "default" set -1) */
    if (hp->rope.freq_scale == 0) hp->rope.freq_scale = 1.0f;
    if (hp->rope.attn_factor == 0) hp->rope.attn_factor = 1.0f;
    if (hp->rope.beta_fast == 0) hp->rope.beta_fast = 32.0f;
    if (hp->rope.beta_slow == 0) hp->rope.beta_slow = 1.0f;
    hp->sub_norms = hp->arch != ARCH_LLAMA;
    hp->rope_neox = hp->arch != ARCH_LLAMA;   /* llama.cpp: LLM_ARCH_BITNET is NEOX too */
    if (hp->arch == ARCH_BITNET_B158) hp->act = ACT_RELU2;
    else if (hp->arch == ARCH_LLAMA) hp->act = ACT_SILU;
}

typedef struct preset {
    const char *name;
    int arch, n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx;
    float rope_base;
    int tied;
} preset_t;

/* Shapes of the real models (HF configs) and of the bitnet.cpp benchmark table. */
static const preset_t g_presets[] = {
    {"2b4t", ARCH_BITNET_B158, 30, 2560, 6912, 20, 5, 128, 128256, 4096, 500000.0f, 1},
    {"large", ARCH_BITNET, 24, 1536, 4096, 16, 16, 96, 32002, 2048, 10000.0f, 0},
    {"falcon3-1b", ARCH_LLAMA, 18, 2048, 8192, 8, 4, 256, 131072, 8192, 1000042.0f, 0},
    {"falcon3-7b", ARCH_LLAMA, 28, 3072, 23040, 12, 4, 256, 131072, 32768, 1000042.0f, 0},
    {"llama3-8b", ARCH_LLAMA, 32, 4096, 14336, 32, 8, 128, 128256, 8192, 500000.0f, 0},
    {"7b", ARCH_LLAMA, 32, 4096, 11008, 32, 32, 128, 32000, 4096, 10000.0f, 0},
    {"13b", ARCH_LLAMA, 40, 5120, 13824, 40, 40, 128, 32000, 4096, 10000.0f, 0},
    {"30b", ARCH_LLAMA, 60, 6656, 17920, 52, 52, 128, 32000, 4096, 10000.0f, 0},
    {"70b", ARCH_LLAMA, 80, 8192, 28672, 64, 8, 128, 32000, 4096, 10000.0f, 0},
    {"100b", ARCH_LLAMA, 72, 8192, 45568, 64, 8, 128, 32000, 4096, 10000.0f, 0},
    {"small", ARCH_BITNET_B158, 8, 1024, 2816, 8, 4, 128, 32000, 2048, 500000.0f, 1},
    {"tiny", ARCH_BITNET_B158, 2, 256, 768, 4, 2, 64, 512, 512, 500000.0f, 1},
};
#define NPRESETS (int)(sizeof g_presets / sizeof g_presets[0])

int preset_find(const char *name, int arch, hparams_t *hp) {
    for (int i = 0; i < NPRESETS; i++) {
        const preset_t *p = &g_presets[i];
        if (strcmp(p->name, name)) continue;
        memset(hp, 0, sizeof *hp);
        hp->arch = arch >= 0 ? arch : p->arch;
        hp->n_layer = p->n_layer;
        hp->n_embd = p->n_embd;
        hp->n_ff = p->n_ff;
        hp->n_head = p->n_head;
        hp->n_head_kv = p->n_head_kv;
        hp->head_dim = p->head_dim;
        hp->n_vocab = p->n_vocab;
        hp->n_ctx_train = p->n_ctx;
        hp->rope_base = p->rope_base;
        hp->tied = arch < 0 || arch == p->arch ? p->tied : arch != ARCH_LLAMA;
        hp->act = hp->arch == ARCH_BITNET_B158 ? ACT_RELU2 : ACT_SILU;
        hp->rope.ext_factor = -1.0f;
        hparams_defaults(hp);
        return 0;
    }
    return TERN_ENOTFOUND;
}

const char *preset_list(void) {
    return "2b4t, large, falcon3-1b, falcon3-7b, llama3-8b, 7b, 13b, 30b, 70b, 100b, small, tiny";
}

static int get_int(const gguf_t *g, const char *arch, const char *key, int *out, int required, char *err,
                   size_t errlen) {
    char k[128];
    int64_t v;
    snprintf(k, sizeof k, "%s.%s", arch, key);
    if (gguf_get_i64(g, k, &v) < 0) {
        if (!required) return 0;
        return err_set(err, errlen, TERN_EFORMAT, "%s: missing or non-integer key '%s'", g->path, k);
    }
    if (v < 0 || v > (1 << 24))
        return err_set(err, errlen, TERN_EFORMAT, "%s: key '%s' = %lld is out of range", g->path, k, (long long)v);
    *out = (int)v;
    return 0;
}

static const char *g_rope_types[] = {"none", "linear", "yarn"};

int rope_scaling_parse(const char *name) {
    for (int t = 0; name && t <= ROPE_SCALING_YARN; t++)
        if (!strcmp(name, g_rope_types[t])) return t;
    return -1;
}

const char *rope_scaling_name(int type) {
    return type >= 0 && type <= ROPE_SCALING_YARN ? g_rope_types[type] : "?";
}

/* an optional f32 key {arch}.name: absent leaves *out; another type is an error */
static int get_f32_opt(const gguf_t *g, const char *arch, const char *name, float *out, char *err, size_t errlen) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, name);
    int rc = gguf_get_f32(g, k, out);
    if (rc == TERN_EFORMAT) return err_set(err, errlen, TERN_EFORMAT, "%s: key '%s' is not a float", g->path, k);
    return 0;
}

/* {arch}.rope.scaling.*: llama.cpp's keys and defaults (type "linear" when only a factor is given;
 * rope.scale_linear is the older name of the factor) */
static int rope_from_gguf(hparams_t *hp, const gguf_t *g, char *err, size_t errlen) {
    const char *a = hp->arch_name;
    char k[128], type[32] = "";
    int rc;
    float factor = 0;
    snprintf(k, sizeof k, "%s.rope.scaling.type", a);
    const gguf_kv_t *kv = gguf_find(g, k);
    if (kv && (kv->type != GGUF_STR || gguf_get_str(g, k, type, sizeof type) < 0))
        return err_set(err, errlen, TERN_EFORMAT, "%s: key '%s' is not a short string", g->path, k);
    if ((rc = get_f32_opt(g, a, "rope.scaling.factor", &factor, err, errlen)) < 0) return rc;
    if (factor == 0 && (rc = get_f32_opt(g, a, "rope.scale_linear", &factor, err, errlen)) < 0) return rc;
    hp->rope.type = kv ? rope_scaling_parse(type) : factor != 0 ? ROPE_SCALING_LINEAR : ROPE_SCALING_NONE;
    if (hp->rope.type < 0)
        return err_set(err, errlen, TERN_ENOTSUP, "%s: %s = '%s' is not supported (tern knows none, linear, yarn)",
                       g->path, k, type);
    if (!(factor >= 0) || !isfinite(factor) || (factor != 0 && !(factor > 1e-6f)))
        return err_set(err, errlen, TERN_EFORMAT, "%s: %s.rope.scaling.factor = %g: expected a finite factor > 0",
                       g->path, a, factor);
    hp->rope.freq_scale = factor == 0 || hp->rope.type == ROPE_SCALING_NONE ? 1.0f : 1.0f / factor;
    if ((rc = get_int(g, a, "rope.scaling.original_context_length", &hp->rope.n_ctx_orig, 0, err, errlen)) < 0 ||
        (rc = get_f32_opt(g, a, "rope.scaling.attn_factor", &hp->rope.attn_factor, err, errlen)) < 0 ||
        (rc = get_f32_opt(g, a, "rope.scaling.yarn_attn_factor", &hp->rope.attn_factor, err, errlen)) < 0 ||
        (rc = get_f32_opt(g, a, "rope.scaling.yarn_ext_factor", &hp->rope.ext_factor, err, errlen)) < 0 ||
        (rc = get_f32_opt(g, a, "rope.scaling.yarn_beta_fast", &hp->rope.beta_fast, err, errlen)) < 0 ||
        (rc = get_f32_opt(g, a, "rope.scaling.yarn_beta_slow", &hp->rope.beta_slow, err, errlen)) < 0)
        return rc;
    char why[200];
    if (rope_scaling_check(hp, why, sizeof why) < 0)
        return err_set(err, errlen, TERN_EFORMAT, "%s: %s.rope.* keys: %s", g->path, a, why);
    return 0;
}

static int bad_rope(char *err, size_t errlen, const char *what, double v, const char *want) {
    return err_set(err, errlen, TERN_EINVAL, "RoPE %s = %g: expected %s", what, v, want);
}

int rope_scaling_check(const hparams_t *hp, char *err, size_t errlen) {
    const rope_scaling_t *r = &hp->rope;
    if (!(hp->rope_base > 0) || !isfinite(hp->rope_base)) return bad_rope(err, errlen, "freq_base", hp->rope_base, "a finite base > 0");
    if (r->type == ROPE_SCALING_YARN && !(hp->rope_base > 1.0f))   /* its ramp divides by ln(base) */
        return bad_rope(err, errlen, "freq_base", hp->rope_base, "a base > 1 with yarn");
    if (r->type < ROPE_SCALING_NONE || r->type > ROPE_SCALING_YARN) return bad_rope(err, errlen, "scaling type", r->type, "none, linear or yarn");
    if (!(r->freq_scale > 1e-6f && r->freq_scale <= 1e6f))
        return bad_rope(err, errlen, "freq_scale (1/factor)", r->freq_scale, "a finite value in (1e-6, 1e6]");
    if (!(r->attn_factor > 0 && r->attn_factor <= 1e3f)) return bad_rope(err, errlen, "attn_factor", r->attn_factor, "a finite value in (0, 1000]");
    if (!(r->ext_factor <= 1e3f) || isnan(r->ext_factor) || r->ext_factor < -1.0f)
        return bad_rope(err, errlen, "ext_factor", r->ext_factor, "-1 (default) or a finite value in [0, 1000]");
    if (!(r->beta_fast > 0 && r->beta_fast <= 1e6f)) return bad_rope(err, errlen, "beta_fast", r->beta_fast, "a finite value in (0, 1e6]");
    if (!(r->beta_slow > 0 && r->beta_slow <= 1e6f)) return bad_rope(err, errlen, "beta_slow", r->beta_slow, "a finite value in (0, 1e6]");
    if (r->n_ctx_orig < 0 || r->n_ctx_orig > (1 << 24)) return bad_rope(err, errlen, "original context", r->n_ctx_orig, "0..16777216");
    if (r->type == ROPE_SCALING_YARN && r->n_ctx_orig == 0 && hp->n_ctx_train <= 0)
        return err_set(err, errlen, TERN_EINVAL, "RoPE yarn needs the original context (rope.scaling.original_context_length "
                       "or context_length)");
    return 0;
}

void rope_override_default(rope_override_t *o) {
    memset(o, 0, sizeof *o);
    o->type = -1;
    o->ext_factor = -1.0f;
}

int rope_override_empty(const rope_override_t *o) {
    return o->type < 0 && o->freq_base == 0 && o->freq_scale == 0 && o->n_ctx_orig == 0 && o->ext_factor < 0 &&
           o->attn_factor == 0 && o->beta_fast == 0 && o->beta_slow == 0;
}

int hparams_rope_override(hparams_t *hp, const rope_override_t *o, char *err, size_t errlen) {
    rope_scaling_t *r = &hp->rope;
    if (o->type > ROPE_SCALING_YARN) return bad_rope(err, errlen, "--rope-scaling", o->type, "none, linear or yarn");
    if (o->type >= 0) r->type = o->type;
    else if (o->freq_scale != 0 && r->type == ROPE_SCALING_NONE)
        r->type = ROPE_SCALING_LINEAR;   /* llama.cpp reads a file without the type key as linear (factor 1) */
    if (o->freq_base != 0) hp->rope_base = o->freq_base;
    if (o->freq_scale != 0) r->freq_scale = o->freq_scale;
    if (o->n_ctx_orig != 0) r->n_ctx_orig = o->n_ctx_orig;
    if (o->ext_factor >= 0 || isnan(o->ext_factor)) r->ext_factor = o->ext_factor;
    if (o->attn_factor != 0) r->attn_factor *= o->attn_factor;
    if (o->beta_fast != 0) r->beta_fast = o->beta_fast;
    if (o->beta_slow != 0) r->beta_slow = o->beta_slow;
    if (r->type == ROPE_SCALING_NONE) r->freq_scale = 1.0f;   /* llama.cpp: never scale with none */
    return rope_scaling_check(hp, err, errlen);
}

/* llama.cpp's convert_hf_to_gguf for rope_type llama3: wavelengths shorter than old_ctx/high are
 * kept, longer than old_ctx/low divided by factor, smoothly mixed in between */
void rope_llama3_factors(float *ff, int dim, float base, float factor, float low_freq_factor,
                         float high_freq_factor, int old_ctx) {
    const double low_wavelen = old_ctx / (double)low_freq_factor, high_wavelen = old_ctx / (double)high_freq_factor;
    for (int i = 0; i < dim / 2; i++) {
        double freq = 1.0 / pow(base, 2.0 * i / dim), wavelen = 2 * 3.14159265358979323846 / freq;
        if (wavelen < high_wavelen) ff[i] = 1.0f;
        else if (wavelen > low_wavelen) ff[i] = factor;
        else {
            double smooth = (old_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
            ff[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
}

int hparams_from_gguf(hparams_t *hp, const gguf_t *g, char *err, size_t errlen) {
    memset(hp, 0, sizeof *hp);
    if (gguf_get_str(g, "general.architecture", hp->arch_name, sizeof hp->arch_name) < 0)
        return err_set(err, errlen, TERN_EFORMAT, "%s: missing general.architecture", g->path);
    hp->arch = arch_from_name(hp->arch_name);
    if (hp->arch < 0)
        return err_set(err, errlen, TERN_ENOTSUP, "%s: unknown architecture '%s' (tern runs bitnet-b1.58, bitnet-25, "
                       "bitnet, llama)", g->path, hp->arch_name);
    const char *a = hp->arch_name;
    int rc = 0;
    if ((rc = get_int(g, a, "block_count", &hp->n_layer, 1, err, errlen)) < 0 ||
        (rc = get_int(g, a, "embedding_length", &hp->n_embd, 1, err, errlen)) < 0 ||
        (rc = get_int(g, a, "feed_forward_length", &hp->n_ff, 1, err, errlen)) < 0 ||
        (rc = get_int(g, a, "attention.head_count", &hp->n_head, 1, err, errlen)) < 0 ||
        (rc = get_int(g, a, "attention.head_count_kv", &hp->n_head_kv, 0, err, errlen)) < 0 ||
        (rc = get_int(g, a, "attention.key_length", &hp->head_dim, 0, err, errlen)) < 0 ||
        (rc = get_int(g, a, "context_length", &hp->n_ctx_train, 0, err, errlen)) < 0 ||
        (rc = get_int(g, a, "rope.dimension_count", &hp->rot_dim, 0, err, errlen)) < 0 ||
        (rc = get_int(g, a, "vocab_size", &hp->n_vocab, 0, err, errlen)) < 0)
        return rc;
    char k[128];
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", a);
    gguf_get_f32(g, k, &hp->norm_eps);
    snprintf(k, sizeof k, "%s.rope.freq_base", a);
    gguf_get_f32(g, k, &hp->rope_base);
    hp->act = hp->arch == ARCH_BITNET_B158 ? ACT_RELU2 : ACT_SILU;
    if (hp->arch == ARCH_BITNET) {
        char act[32] = "";
        snprintf(k, sizeof k, "%s.hidden_activation", a);
        if (gguf_get_str(g, k, act, sizeof act) == 0 && !strcmp(act, "relu2")) hp->act = ACT_RELU2;
    }
    const gguf_tensor_t *emb = gguf_find_tensor(g, "token_embd.weight");
    if (!hp->n_vocab) {
        const gguf_kv_t *toks = gguf_find(g, "tokenizer.ggml.tokens");
        if (toks && toks->type == GGUF_ARR) hp->n_vocab = (int)toks->arr_n;
        else if (emb) hp->n_vocab = (int)emb->ne[1];
    }
    hp->tied = gguf_find_tensor(g, "output.weight") == NULL;
    hp->rope.ext_factor = -1.0f;
    hparams_defaults(hp);
    if (hp->n_layer < 1 || hp->n_embd < 1 || hp->n_ff < 1 || hp->n_head < 1 || hp->n_head_kv < 1 ||
        hp->n_head % hp->n_head_kv || hp->head_dim < 2 || hp->head_dim % 2 || hp->rot_dim > hp->head_dim ||
        hp->rot_dim % 2 || hp->n_vocab < 1 || !(hp->norm_eps > 0) || !(hp->rope_base > 0))
        return err_set(err, errlen, TERN_EFORMAT,
                       "%s: inconsistent hyper-parameters (layers %d, embd %d, ff %d, heads %d/%d, head dim %d, "
                       "rope dims %d, vocab %d, rms eps %g, rope freq_base %g)", g->path, hp->n_layer, hp->n_embd,
                       hp->n_ff, hp->n_head, hp->n_head_kv, hp->head_dim, hp->rot_dim, hp->n_vocab, hp->norm_eps,
                       hp->rope_base);
    if (emb && emb->ne[0] != hp->n_embd)
        return err_set(err, errlen, TERN_EFORMAT, "%s: token_embd.weight is %lld wide, expected %d", g->path,
                       (long long)emb->ne[0], hp->n_embd);
    return rope_from_gguf(hp, g, err, errlen);
}

void hparams_to_gguf(const hparams_t *hp, gguf_writer_t *w, const char *model_name) {
    char k[128];
    const char *a = hp->arch_name[0] ? hp->arch_name : arch_name(hp->arch);
    gguf_writer_set_str(w, "general.architecture", a);
    gguf_writer_set_str(w, "general.name", model_name ? model_name : a);
#define SETU(key, val) do { snprintf(k, sizeof k, "%s." key, a); gguf_writer_set_u32(w, k, (uint32_t)(val)); } while (0)
#define SETF(key, val) do { snprintf(k, sizeof k, "%s." key, a); gguf_writer_set_f32(w, k, (val)); } while (0)
    SETU("vocab_size", hp->n_vocab);
    SETU("context_length", hp->n_ctx_train);
    SETU("embedding_length", hp->n_embd);
    SETU("block_count", hp->n_layer);
    SETU("feed_forward_length", hp->n_ff);
    SETU("attention.head_count", hp->n_head);
    SETU("attention.head_count_kv", hp->n_head_kv);
    SETU("rope.dimension_count", hp->rot_dim);
    if (hp->head_dim != hp->n_embd / hp->n_head) {
        SETU("attention.key_length", hp->head_dim);
        SETU("attention.value_length", hp->head_dim);
    }
    SETF("attention.layer_norm_rms_epsilon", hp->norm_eps);
    SETF("rope.freq_base", hp->rope_base);
    if (hp->rope.attn_factor != 1.0f) SETF("rope.scaling.attn_factor", hp->rope.attn_factor);   /* applies without a type too */
    if (hp->rope.type != ROPE_SCALING_NONE) {
        snprintf(k, sizeof k, "%s.rope.scaling.type", a);
        gguf_writer_set_str(w, k, rope_scaling_name(hp->rope.type));
        SETF("rope.scaling.factor", 1.0f / hp->rope.freq_scale);
        if (hp->rope.n_ctx_orig) SETU("rope.scaling.original_context_length", hp->rope.n_ctx_orig);
        if (hp->rope.ext_factor >= 0) SETF("rope.scaling.yarn_ext_factor", hp->rope.ext_factor);
        if (hp->rope.beta_fast != 32.0f) SETF("rope.scaling.yarn_beta_fast", hp->rope.beta_fast);
        if (hp->rope.beta_slow != 1.0f) SETF("rope.scaling.yarn_beta_slow", hp->rope.beta_slow);
    }
    if (hp->arch == ARCH_BITNET && hp->act == ACT_RELU2) {
        snprintf(k, sizeof k, "%s.hidden_activation", a);
        gguf_writer_set_str(w, k, "relu2");
    }
#undef SETU
#undef SETF
}

const char *tensor_role_name(int role) { return role >= 0 && role < TR_COUNT ? g_roles[role] : "?"; }

int tensor_role_ternary(int role) {
    return role == TR_ATTN_Q || role == TR_ATTN_K || role == TR_ATTN_V || role == TR_ATTN_OUT ||
           role == TR_FFN_GATE || role == TR_FFN_UP || role == TR_FFN_DOWN;
}

int tensor_role_present(const hparams_t *hp, int role) {
    if (role == TR_ATTN_SUB_NORM || role == TR_FFN_SUB_NORM) return hp->sub_norms;
    return role >= 0 && role < TR_COUNT;
}

int tensor_role_shape(const hparams_t *hp, int role, int64_t ne[2]) {
    int64_t q = (int64_t)hp->n_head * hp->head_dim, kv = (int64_t)hp->n_head_kv * hp->head_dim;
    ne[1] = 1;
    switch (role) {
    case TR_ATTN_NORM: case TR_FFN_NORM: ne[0] = hp->n_embd; return 1;
    case TR_ATTN_SUB_NORM: ne[0] = q; return 1;
    case TR_FFN_SUB_NORM: ne[0] = hp->n_ff; return 1;
    case TR_ATTN_Q: ne[0] = hp->n_embd; ne[1] = q; return 2;
    case TR_ATTN_K: case TR_ATTN_V: ne[0] = hp->n_embd; ne[1] = kv; return 2;
    case TR_ATTN_OUT: ne[0] = q; ne[1] = hp->n_embd; return 2;
    case TR_FFN_GATE: case TR_FFN_UP: ne[0] = hp->n_embd; ne[1] = hp->n_ff; return 2;
    case TR_FFN_DOWN: ne[0] = hp->n_ff; ne[1] = hp->n_embd; return 2;
    default: return 0;
    }
}

void tensor_block_name(char *buf, size_t cap, int layer, int role) {
    snprintf(buf, cap, "blk.%d.%s.weight", layer, tensor_role_name(role));
}

int64_t hparams_block_params(const hparams_t *hp) {
    int64_t n = 0, ne[2];
    for (int r = 0; r < TR_COUNT; r++)
        if (tensor_role_ternary(r) && tensor_role_present(hp, r) && tensor_role_shape(hp, r, ne)) n += ne[0] * ne[1];
    return n;
}
