/* convert: `tern convert HF_DIR -o OUT.gguf --type T` — a Hugging Face checkpoint (config.json,
 * *.safetensors, tokenizer.json or tokenizer.model) to a GGUF tern and llama.cpp read. Master
 * weights (BF16/F16/F32) become absmean ternary per tensor; already-packed checkpoints (uint8, 4
 * codes per byte, + weight_scale) are unpacked exactly. Tensors are read from the mmap'd
 * safetensors and written in row chunks, so memory stays small. Not here: re-quantising a GGUF
 * (tools/quantize.c), parsing safetensors (tools/safetensors.c). */
#define _GNU_SOURCE
#include "coordinator/vocab.h"
#include "core/err.h"
#include "core/gguf.h"
#include "core/half.h"
#include "core/log.h"
#include "core/model_spec.h"
#include "core/opt.h"
#include "core/progress.h"
#include "core/types.h"
#include "kernels/quant.h"
#include "tools/safetensors.h"
#include "tools/sp_vocab.h"
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#define CV_CHUNK (1 << 20)   /* elements converted per chunk */

enum cv_kind { CK_EMBD, CK_NORM, CK_TERN, CK_HEAD };

typedef struct cv_item {
    char name[64];           /* GGUF name */
    int kind, type, ndim;
    int64_t ne[2];           /* ne[0] cols, ne[1] rows */
    const st_tensor_t *w;    /* source: float, or U8 packed (rows/4, cols) */
    const st_tensor_t *ws;   /* weight_scale of a packed source */
    int perm_heads;          /* > 0: rows permuted for adjacent-pair RoPE, this many heads */
} cv_item_t;

typedef struct cv {
    hparams_t hp;
    int wtype, head_type;
    int scale_mul;           /* packed: weight = code·scale (autobitlinear); else code / scale */
    st_set_t *st;
    gguf_writer_t *w;
    progress_t prog;
    cv_item_t *items;
    int n_items;
    char cfg_path[4096];
    int special[2];          /* config.json's bos_token_id, eos_token_id (-1: none) */
    float *f;
    int8_t *trits;
    uint8_t *bytes;
    size_t cap;              /* elements f / trits hold; bytes holds cap * 4 */
    float *rope_freqs;       /* (rot_dim/2,) rope_scaling llama3's frequency factors, or NULL */
} cv_t;

/* ---- config.json ------------------------------------------------------------------ */

static int cfg_int(json_t *c, const char *key, int *out, int def, const char *path, char *err, size_t errlen) {
    json_t *v = json_object_get(c, key);
    if (!v || json_is_null(v)) {
        if (def < 0) return err_set(err, errlen, TERN_EFORMAT, "%s: missing key '%s'", path, key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > (1 << 24))
        return err_set(err, errlen, TERN_EFORMAT, "%s: key '%s' is not an integer in 1..2^24", path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static float cfg_float(json_t *c, const char *key, float def) {
    json_t *v = json_object_get(c, key);
    return json_is_number(v) ? (float)json_number_value(v) : def;
}

/* the architecture from `architectures` and the activation */
static int cfg_arch(cv_t *c, json_t *cfg, int *tied, char *err, size_t errlen) {
    const char *p = c->cfg_path;
    const char *a = json_string_value(json_array_get(json_object_get(cfg, "architectures"), 0));
    const char *act = json_string_value(json_object_get(cfg, "hidden_act"));
    const char *mt = json_string_value(json_object_get(cfg, "model_type"));
    json_t *tie = json_object_get(cfg, "tie_word_embeddings");
    *tied = json_is_true(tie);
    if (!a) return err_set(err, errlen, TERN_EFORMAT, "%s: missing key 'architectures'", p);
    if (!strcmp(a, "BitNetForCausalLM") || !strcmp(a, "BitnetForCausalLM")) {
        /* 2B-4T: relu² (and model_type bitnet, tied); 1bitLLM large/3B: SiLU */
        int b158 = act ? !strcmp(act, "relu2") : (mt && !strcmp(mt, "bitnet") && *tied);
        if (act && !b158 && strcmp(act, "silu"))
            return err_set(err, errlen, TERN_ENOTSUP, "%s: hidden_act '%s' is not supported (relu2, silu)", p, act);
        c->hp.arch = b158 ? ARCH_BITNET_B158 : ARCH_BITNET;
    } else if (!strcmp(a, "LlamaForCausalLM")) {
        if (act && strcmp(act, "silu"))
            return err_set(err, errlen, TERN_ENOTSUP, "%s: hidden_act '%s' is not supported for llama (silu)", p, act);
        c->hp.arch = ARCH_LLAMA;
    } else {
        return err_set(err, errlen, TERN_ENOTSUP, "%s: unknown architecture '%s' (supported: BitNetForCausalLM, "
                       "BitnetForCausalLM, LlamaForCausalLM)", p, a);
    }
    return 0;
}

/* a number of rope_scaling (def < 0: required); finite and > 0 */
static int rs_num(const cv_t *c, json_t *rs, const char *key, double def, double *out, char *err, size_t errlen) {
    json_t *v = json_object_get(rs, key);
    if (!v || json_is_null(v)) {
        if (def < 0) return err_set(err, errlen, TERN_EFORMAT, "%s: rope_scaling needs '%s'", c->cfg_path, key);
        *out = def;
        return 0;
    }
    *out = json_is_number(v) ? json_number_value(v) : -1;
    if (!(*out > 0) || !isfinite(*out))
        return err_set(err, errlen, TERN_EFORMAT, "%s: rope_scaling '%s' is not a number > 0", c->cfg_path, key);
    return 0;
}

/* llama3: llama.cpp's convert_hf_to_gguf writes the frequency factors as rope_freqs.weight (and no
 * scaling type); its defaults for the missing keys */
static int cv_rope_llama3(cv_t *c, json_t *rs, char *err, size_t errlen) {
    double factor, low, high, orig;
    int rc;
    if ((rc = rs_num(c, rs, "factor", 8.0, &factor, err, errlen)) < 0 ||
        (rc = rs_num(c, rs, "low_freq_factor", 1.0, &low, err, errlen)) < 0 ||
        (rc = rs_num(c, rs, "high_freq_factor", 4.0, &high, err, errlen)) < 0 ||
        (rc = rs_num(c, rs, "original_max_position_embeddings", 8192, &orig, err, errlen)) < 0)
        return rc;
    if (!(high > low) || orig > (1 << 24))
        return err_set(err, errlen, TERN_EFORMAT, "%s: rope_scaling llama3 needs high_freq_factor > low_freq_factor "
                       "(%g, %g) and original_max_position_embeddings <= 2^24", c->cfg_path, high, low);
    if (!(c->rope_freqs = malloc((size_t)c->hp.rot_dim / 2 * sizeof(float))))
        return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    rope_llama3_factors(c->rope_freqs, c->hp.rot_dim, c->hp.rope_base, (float)factor, (float)low, (float)high, (int)orig);
    return 0;
}

/* config.json's rope_scaling (rope_type, or the older type): linear and yarn as GGUF keys, llama3 as
 * the frequency factors tensor; the others (dynamic, longrope, ...) are refused: a model converted
 * without them would run, silently wrong */
static int cv_rope(cv_t *c, json_t *rs, char *err, size_t errlen) {
    const char *p = c->cfg_path;
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs)) return err_set(err, errlen, TERN_EFORMAT, "%s: rope_scaling is not an object", p);
    const char *t = json_string_value(json_object_get(rs, "rope_type"));
    if (!t) t = json_string_value(json_object_get(rs, "type"));
    if (!t) return err_set(err, errlen, TERN_EFORMAT, "%s: rope_scaling has no rope_type", p);
    rope_scaling_t *r = &c->hp.rope;
    double factor, v;
    int rc;
    if (!strcmp(t, "default")) return 0;
    if (!strcasecmp(t, "llama3")) return cv_rope_llama3(c, rs, err, errlen);
    if (strcmp(t, "linear") && strcmp(t, "yarn"))
        return err_set(err, errlen, TERN_ENOTSUP, "%s: rope_scaling type '%s' is not supported (linear, yarn, llama3)", p, t);
    if ((rc = rs_num(c, rs, "factor", -1, &factor, err, errlen)) < 0) return rc;
    r->type = strcmp(t, "yarn") ? ROPE_SCALING_LINEAR : ROPE_SCALING_YARN;
    r->freq_scale = (float)(1.0 / factor);
    if (r->type == ROPE_SCALING_YARN) {
        /* transformers' default for the original context is max_position_embeddings */
        if ((rc = rs_num(c, rs, "original_max_position_embeddings", c->hp.n_ctx_train, &v, err, errlen)) < 0) return rc;
        r->n_ctx_orig = v <= (1 << 24) ? (int)v : -1;
        json_t *af = json_object_get(rs, "attention_factor");
        if ((rc = rs_num(c, rs, af ? "attention_factor" : "attn_factor", 1.0, &v, err, errlen)) < 0) return rc;
        r->attn_factor = (float)v;
        if ((rc = rs_num(c, rs, "beta_fast", 32.0, &v, err, errlen)) < 0) return rc;
        r->beta_fast = (float)v;
        if ((rc = rs_num(c, rs, "beta_slow", 1.0, &v, err, errlen)) < 0) return rc;
        r->beta_slow = (float)v;
        json_t *ef = json_object_get(rs, "extrapolation_factor");
        if (json_is_number(ef)) r->ext_factor = (float)json_number_value(ef);
    }
    char why[200];
    if (rope_scaling_check(&c->hp, why, sizeof why) < 0)
        return err_set(err, errlen, TERN_EFORMAT, "%s: rope_scaling: %s", p, why);
    return 0;
}

static int cv_config(cv_t *c, const char *dir, int *tied, char *err, size_t errlen) {
    snprintf(c->cfg_path, sizeof c->cfg_path, "%s/config.json", dir);
    json_error_t je;
    if (access(c->cfg_path, R_OK) < 0) return err_set(err, errlen, TERN_ENOTFOUND, "%s: no config.json", dir);
    json_t *cfg = json_load_file(c->cfg_path, 0, &je);
    if (!cfg) return err_set(err, errlen, TERN_EFORMAT, "%s:%d: %s", c->cfg_path, je.line, je.text);
    hparams_t *hp = &c->hp;
    const char *p = c->cfg_path;
    int rc;
    if (!json_is_object(cfg)) { rc = err_set(err, errlen, TERN_EFORMAT, "%s: not a JSON object", p); goto done; }
    if ((rc = cfg_arch(c, cfg, tied, err, errlen)) < 0 ||
        (rc = cfg_int(cfg, "hidden_size", &hp->n_embd, -1, p, err, errlen)) < 0 ||
        (rc = cfg_int(cfg, "intermediate_size", &hp->n_ff, -1, p, err, errlen)) < 0 ||
        (rc = cfg_int(cfg, "num_hidden_layers", &hp->n_layer, -1, p, err, errlen)) < 0 ||
        (rc = cfg_int(cfg, "num_attention_heads", &hp->n_head, -1, p, err, errlen)) < 0 ||
        (rc = cfg_int(cfg, "vocab_size", &hp->n_vocab, -1, p, err, errlen)) < 0 ||
        (rc = cfg_int(cfg, "num_key_value_heads", &hp->n_head_kv, hp->n_head, p, err, errlen)) < 0 ||
        (rc = cfg_int(cfg, "head_dim", &hp->head_dim, hp->n_embd / hp->n_head, p, err, errlen)) < 0 ||
        (rc = cfg_int(cfg, "max_position_embeddings", &hp->n_ctx_train, 2048, p, err, errlen)) < 0)
        goto done;
    hp->norm_eps = cfg_float(cfg, "rms_norm_eps", 1e-6f);
    hp->rope_base = cfg_float(cfg, "rope_theta", 10000.0f);
    hp->act = hp->arch == ARCH_BITNET_B158 ? ACT_RELU2 : ACT_SILU;
    hp->tied = *tied;
    hp->rope.ext_factor = -1.0f;   /* llama.cpp's default for the type */
    hparams_defaults(hp);
    if (hp->n_head % hp->n_head_kv || hp->head_dim % 2 || !(hp->norm_eps > 0) || !(hp->rope_base > 0)) {
        rc = err_set(err, errlen, TERN_EFORMAT, "%s: inconsistent heads %d/%d, head_dim %d, rms_norm_eps %g or "
                     "rope_theta %g", p, hp->n_head, hp->n_head_kv, hp->head_dim, hp->norm_eps, hp->rope_base);
        goto done;
    }
    for (int k = 0; k < 2; k++) {
        json_t *id = json_object_get(cfg, k ? "eos_token_id" : "bos_token_id");   /* may be a list: keep -1 */
        c->special[k] = json_is_integer(id) && json_integer_value(id) >= 0 ? (int)json_integer_value(id) : -1;
    }
    if ((rc = cv_rope(c, json_object_get(cfg, "rope_scaling"), err, errlen)) < 0) goto done;
    json_t *qc = json_object_get(cfg, "quantization_config");
    const char *lc = json_string_value(json_object_get(qc, "linear_class"));
    /* transformers' BitLinear divides by weight_scale (llama.cpp: "the scale is inverted");
     * AutoBitLinear in offline mode multiplies */
    c->scale_mul = lc && !strcmp(lc, "autobitlinear");
done:
    json_decref(cfg);
    return rc;
}

/* ---- the tensor plan ---------------------------------------------------------------- */

/* HF names of a block tensor (printf patterns with the layer number); NULL-terminated */
static const char *const *hf_names(int role) {
    static const char *const n[TR_COUNT][3] = {
        [TR_ATTN_NORM] = {"model.layers.%d.input_layernorm.weight"},
        [TR_ATTN_Q] = {"model.layers.%d.self_attn.q_proj.weight"},
        [TR_ATTN_K] = {"model.layers.%d.self_attn.k_proj.weight"},
        [TR_ATTN_V] = {"model.layers.%d.self_attn.v_proj.weight"},
        [TR_ATTN_OUT] = {"model.layers.%d.self_attn.o_proj.weight"},
        [TR_ATTN_SUB_NORM] = {"model.layers.%d.self_attn.attn_sub_norm.weight", "model.layers.%d.self_attn.inner_attn_ln.weight"},
        [TR_FFN_NORM] = {"model.layers.%d.post_attention_layernorm.weight"},
        [TR_FFN_GATE] = {"model.layers.%d.mlp.gate_proj.weight"},
        [TR_FFN_UP] = {"model.layers.%d.mlp.up_proj.weight"},
        [TR_FFN_DOWN] = {"model.layers.%d.mlp.down_proj.weight"},
        [TR_FFN_SUB_NORM] = {"model.layers.%d.mlp.ffn_sub_norm.weight", "model.layers.%d.mlp.ffn_layernorm.weight"},
    };
    return n[role];
}

static int shape_is(const st_tensor_t *t, int ndim, int64_t d0, int64_t d1) {
    if (ndim == 1) return t->ndim == 1 && t->shape[0] == d0;
    return t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1;
}

/* checks the source of `it` (named hf) against its GGUF shape and finds a packed scale */
static int plan_source(cv_t *c, cv_item_t *it, const char *hf, char *err, size_t errlen) {
    const st_tensor_t *t = it->w;
    int64_t cols = it->ne[0], rows = it->ne[1];
    if (t->dtype == ST_U8 && it->kind == CK_TERN) {
        char sn[160];
        snprintf(sn, sizeof sn, "%.*s_scale", (int)strlen(hf), hf);   /* x.weight → x.weight_scale */
        it->ws = st_set_find(c->st, sn);
        if (!shape_is(t, 2, rows / 4, cols) || rows % 4)
            return err_set(err, errlen, TERN_EFORMAT, "%s: packed shape [%lld, %lld], expected [%lld, %lld]", hf,
                           (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0), (long long)(rows / 4),
                           (long long)cols);
        if (!it->ws || it->ws->nelem != 1 || !st_dtype_float(it->ws->dtype))
            return err_set(err, errlen, TERN_EFORMAT, "%s: packed uint8 weights need a one-element float %s", hf, sn);
        for (size_t k = 0; k < t->nbytes; k++)   /* code 3 (both bits of a pair set) is not a trit */
            if (t->data[k] & (t->data[k] >> 1) & 0x55) {
                int g = __builtin_ctz(t->data[k] & (t->data[k] >> 1) & 0x55) / 2;
                return err_set(err, errlen, TERN_EFORMAT, "%s: packed code 3 at row %lld, column %lld (only 0, 1, 2 "
                               "= -1, 0, +1 are valid)", hf, (long long)(g * (rows / 4) + (int64_t)k / cols),
                               (long long)((int64_t)k % cols));
            }
        return 0;
    }
    if (!st_dtype_float(t->dtype))
        return err_set(err, errlen, TERN_ENOTSUP, "%s: dtype %s is not supported here (F32, F16, BF16%s)", hf,
                       st_dtype_name(t->dtype), it->kind == CK_TERN ? ", or U8 packed" : "");
    if (!shape_is(t, it->ndim, it->ndim == 1 ? cols : rows, cols))
        return err_set(err, errlen, TERN_EFORMAT, "%s: shape [%lld%s%lld], expected [%lld%s%lld]", hf,
                       (long long)t->shape[0], t->ndim > 1 ? ", " : "", t->ndim > 1 ? (long long)t->shape[1] : 0LL,
                       (long long)(it->ndim == 1 ? cols : rows), it->ndim > 1 ? ", " : "",
                       it->ndim > 1 ? (long long)cols : 0LL);
    return 0;
}

static int plan_add(cv_t *c, const char *gguf_name, const char *hf, int kind, int type, int ndim, const int64_t ne[2],
                    int perm_heads, char *err, size_t errlen) {
    cv_item_t *it = &c->items[c->n_items];
    memset(it, 0, sizeof *it);
    snprintf(it->name, sizeof it->name, "%s", gguf_name);
    it->kind = kind;
    it->type = type;
    it->ndim = ndim;
    it->ne[0] = ne[0];
    it->ne[1] = ndim > 1 ? ne[1] : 1;
    it->perm_heads = perm_heads;
    if (!(it->w = st_set_find(c->st, hf)))
        return err_set(err, errlen, TERN_ENOTFOUND, "tensor '%s' (for %s) is not in the checkpoint", hf, gguf_name);
    const type_traits_t *tt = type_traits(type);
    if (ne[0] % tt->blck)
        return err_set(err, errlen, TERN_EINVAL, "%s: %s needs rows that are a multiple of %d elements, this one has %"
                       PRId64 " (choose another type)", hf, tt->name, tt->blck, ne[0]);
    int rc = plan_source(c, it, hf, err, errlen);
    if (rc == 0) c->n_items++;
    return rc;
}

static int cv_plan(cv_t *c, char *err, size_t errlen) {
    const hparams_t *hp = &c->hp;
    c->items = calloc((size_t)hp->n_layer * TR_COUNT + 4, sizeof *c->items);
    if (!c->items) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    int64_t ne[2] = {hp->n_embd, hp->n_vocab};
    int rc;
    if ((rc = plan_add(c, "token_embd.weight", "model.embed_tokens.weight", CK_EMBD, TT_F16, 2, ne, 0, err, errlen)) < 0)
        return rc;
    for (int l = 0; l < hp->n_layer; l++)
        for (int r = 0; r < TR_COUNT; r++) {
            if (!tensor_role_present(hp, r)) continue;
            char gn[64], hf[160] = "";
            int nd = tensor_role_shape(hp, r, ne), ter = tensor_role_ternary(r);
            tensor_block_name(gn, sizeof gn, l, r);
            const char *const *names = hf_names(r);
            int found = 0;
            for (int k = 0; k < 3 && names[k] && !found; k++) {
                snprintf(hf, sizeof hf, names[k], l);
                found = st_set_find(c->st, hf) != NULL;
            }
            if (!found) snprintf(hf, sizeof hf, names[0], l);   /* the error names the usual spelling */
            /* adjacent-pair RoPE reads q/k rows interleaved: HF's (i, i+d/2) pairs become (2i, 2i+1) */
            int perm = hp->rope_neox ? 0 : r == TR_ATTN_Q ? hp->n_head : r == TR_ATTN_K ? hp->n_head_kv : 0;
            if ((rc = plan_add(c, gn, hf, ter ? CK_TERN : CK_NORM, ter ? c->wtype : TT_F32, nd, ne, perm, err, errlen)) < 0)
                return rc;
        }
    ne[0] = hp->n_embd;
    if ((rc = plan_add(c, "output_norm.weight", "model.norm.weight", CK_NORM, TT_F32, 1, ne, 0, err, errlen)) < 0)
        return rc;
    ne[1] = hp->n_vocab;
    if (!hp->tied && (rc = plan_add(c, "output.weight", "lm_head.weight", CK_HEAD, c->head_type, 2, ne, 0, err, errlen)) < 0)
        return rc;
    return 0;
}

/* tensors of the checkpoint that the plan does not use are reported (not fatal) */
static void cv_unused(const cv_t *c) {
    int skipped = 0;
    for (int i = 0; i < c->st->n; i++) {
        const st_tensor_t *t = c->st->t[i];
        int used = strstr(t->name, "rotary_emb.inv_freq") != NULL || (c->hp.tied && !strcmp(t->name, "lm_head.weight"));
        for (int k = 0; k < c->n_items && !used; k++) used = c->items[k].w == t || c->items[k].ws == t;
        if (!used && skipped++ < 5) log_w("convert: tensor '%s' is not used", t->name);
    }
    if (skipped > 5) log_w("convert: %d tensors of the checkpoint are not used", skipped);
}

/* ---- writing ----------------------------------------------------------------------- */

static int cv_emit(cv_t *c, const void *p, size_t n, char *err, size_t errlen) {
    int rc = gguf_writer_write(c->w, p, n, err, errlen);
    if (rc == 0) progress_add(&c->prog, n);
    return rc;
}

/* source row of output row r: HF q/k rows (head h, half j, index i) → (h, i, j) */
static int64_t src_row(const cv_item_t *it, int64_t r) {
    if (it->perm_heads <= 0) return r;
    int64_t hd = it->ne[1] / it->perm_heads, h = r / hd, rem = r % hd;
    return h * hd + (rem % 2) * (hd / 2) + rem / 2;
}

static void read_row(const cv_item_t *it, int64_t r, float *y) {
    st_read_f32(it->w, src_row(it, r) * it->ne[0], it->ne[0], y);
}

/* trits of output row r of a packed source: rows are split in 4 groups of rows/4, group g in
 * bits 2g+1:2g of each byte; value = code - 1 (transformers' unpack_weights) */
static int read_packed_row(const cv_item_t *it, int64_t r, int8_t *t, char *err, size_t errlen) {
    int64_t cols = it->ne[0], pr = it->ne[1] / 4, s = src_row(it, r);
    const uint8_t *b = it->w->data + (size_t)(s % pr) * (size_t)cols;
    int sh = (int)(s / pr) * 2;
    for (int64_t k = 0; k < cols; k++) {
        int code = (b[k] >> sh) & 3;
        if (code == 3)
            return err_set(err, errlen, TERN_EFORMAT, "%s: packed code 3 at row %" PRId64 ", column %" PRId64
                           " (only 0, 1, 2 = -1, 0, +1 are valid)", it->w->name, s, k);
        t[k] = (int8_t)(code - 1);
    }
    return 0;
}

/* absmean over the whole tensor, in output row order (quant_from_f32's sum, bit for bit) */
static float absmean(cv_t *c, const cv_item_t *it) {
    double acc = 0.0;
    for (int64_t r = 0; r < it->ne[1]; r++) {
        read_row(it, r, c->f);
        for (int64_t k = 0; k < it->ne[0]; k++) acc += fabs((double)c->f[k]);
    }
    return (float)(acc / (double)(it->ne[0] * it->ne[1]));
}

static int write_ternary(cv_t *c, const cv_item_t *it, char *err, size_t errlen) {
    int64_t cols = it->ne[0], rows = it->ne[1], chunk = (int64_t)c->cap / cols;
    float scale;
    int packed = it->w->dtype == ST_U8, rc = 0;
    if (packed) {
        float s;
        st_read_f32(it->ws, 0, 1, &s);
        if (!(s > 0) || !isfinite(s))
            return err_set(err, errlen, TERN_EFORMAT, "%s: weight_scale %g is not a positive number", it->ws->name, s);
        scale = c->scale_mul ? s : 1.0f / s;
    } else {
        scale = absmean(c, it);
    }
    for (int64_t r = 0; r < rows; r += chunk) {
        int64_t nr = rows - r < chunk ? rows - r : chunk;
        for (int64_t i = 0; i < nr; i++) {
            int8_t *t = c->trits + i * cols;
            if (packed) {
                if ((rc = read_packed_row(it, r + i, t, err, errlen)) < 0) return rc;
                continue;
            }
            read_row(it, r + i, c->f);
            for (int64_t k = 0; k < cols; k++) {
                float v = scale > 0.0f ? roundf(c->f[k] / scale) : 0.0f;
                t[k] = (int8_t)(v > 1.0f ? 1 : v < -1.0f ? -1 : v);
            }
        }
        size_t nb;
        if (it->type == TT_F16) {
            uint16_t *h = (uint16_t *)c->bytes;
            for (int64_t i = 0; i < nr * cols; i++) h[i] = f32_to_f16((float)c->trits[i] * scale);
            nb = (size_t)(nr * cols) * 2;
        } else {
            if ((rc = quant_pack_trits(it->type, c->trits, nr, cols, scale, c->bytes)) < 0)
                return err_set(err, errlen, rc, "%s: packing %s failed", it->name, type_name(it->type));
            nb = it->type == TT_I2_S ? (size_t)(nr * cols / 4) : type_tensor_bytes(it->type, cols, nr);
        }
        if ((rc = cv_emit(c, c->bytes, nb, err, errlen)) < 0) return rc;
    }
    if (it->type == TT_I2_S) {
        uint8_t tail[I2_S_TAIL];
        quant_i2s_tail(tail, scale);
        rc = cv_emit(c, tail, sizeof tail, err, errlen);
    }
    return rc;
}

/* float tensors: norms (F32), embedding (F16), head (F16 / Q8_0 / F32) */
static int write_float(cv_t *c, const cv_item_t *it, char *err, size_t errlen) {
    int64_t cols = it->ne[0], rows = it->ne[1], chunk = (int64_t)c->cap / cols;
    for (int64_t r = 0; r < rows; r += chunk) {
        int64_t nr = rows - r < chunk ? rows - r : chunk;
        st_read_f32(it->w, r * cols, nr * cols, c->f);
        int rc = quant_from_f32(it->type, c->f, nr, cols, c->bytes);
        if (rc < 0) return err_set(err, errlen, rc, "%s: converting to %s failed", it->name, type_name(it->type));
        if ((rc = cv_emit(c, c->bytes, type_tensor_bytes(it->type, cols, nr), err, errlen)) < 0) return rc;
    }
    return 0;
}

static int cv_write(cv_t *c, char *err, size_t errlen) {
    for (int i = 0; i < c->n_items; i++) {
        const cv_item_t *it = &c->items[i];
        int rc = it->kind == CK_TERN ? write_ternary(c, it, err, errlen) : write_float(c, it, err, errlen);
        if (rc < 0) return rc;
    }
    return c->rope_freqs ? cv_emit(c, c->rope_freqs, (size_t)c->hp.rot_dim / 2 * 4, err, errlen) : 0;
}

/* ---- tokenizer ------------------------------------------------------------------------ */

static int cv_vocab(cv_t *c, const char *dir, char *err, size_t errlen) {
    char tj[4096], tm[4096], e1[512] = "";
    int n = 0, rc = TERN_ENOTFOUND;
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    snprintf(tm, sizeof tm, "%s/tokenizer.model", dir);
    int has_tj = access(tj, R_OK) == 0, has_tm = access(tm, R_OK) == 0;
    /* config.json's ids first: tokenizer_config.json's tokens, when it names them, override */
    for (int k = 0; k < 2; k++)
        if (c->special[k] >= 0 && c->special[k] < c->hp.n_vocab)
            gguf_writer_set_u32(c->w, k ? "tokenizer.ggml.eos_token_id" : "tokenizer.ggml.bos_token_id",
                                (uint32_t)c->special[k]);
    if (has_tj) rc = vocab_import_hf(c->w, tj, &n, e1, sizeof e1);
    if (rc < 0 && has_tm) rc = sp_vocab_import(c->w, tm, c->hp.n_vocab, c->cfg_path, &n, err, errlen);
    else if (rc < 0 && has_tj) return err_set(err, errlen, rc, "%s", e1);
    else if (rc < 0) return err_set(err, errlen, TERN_ENOTFOUND, "%s: no tokenizer.json or tokenizer.model", dir);
    if (rc < 0) return rc;
    if (n > c->hp.n_vocab)
        return err_set(err, errlen, TERN_EFORMAT, "the tokenizer has %d tokens but config.json's vocab_size is %d", n,
                       c->hp.n_vocab);
    if (n < c->hp.n_vocab)
        log_w("convert: the tokenizer has %d tokens, the embedding %d rows (ids >= %d are never produced)", n,
              c->hp.n_vocab, n);
    return 0;
}

/* ---- driver ------------------------------------------------------------------------- */

typedef struct cv_opts { const char *out, *type, *head, *name; } cv_opts_t;

static void cv_free(cv_t *c) {
    gguf_writer_destroy(&c->w);
    st_set_close(&c->st);
    free(c->items);
    free(c->f);
    free(c->trits);
    free(c->bytes);
    free(c->rope_freqs);
}

static int cv_types(cv_t *c, const cv_opts_t *o, char *err, size_t errlen) {
    c->wtype = type_from_name(o->type);
    if (c->wtype < 0 || (c->wtype != TT_F16 && !type_traits(c->wtype)->ternary))
        return err_set(err, errlen, TERN_EINVAL, "--type: '%s' is not i2_s, tq2_0, tq1_0 or f16", o->type);
    c->head_type = type_from_name(o->head);
    if (c->head_type != TT_F16 && c->head_type != TT_Q8_0 && c->head_type != TT_F32)
        return err_set(err, errlen, TERN_EINVAL, "--head: '%s' is not f16, q8_0 or f32", o->head);
    return 0;
}

static int cv_alloc(cv_t *c, uint64_t *total, char *err, size_t errlen) {
    int64_t widest = 1;
    *total = 0;
    for (int i = 0; i < c->n_items; i++) {
        const cv_item_t *it = &c->items[i];
        if (it->ne[0] > widest) widest = it->ne[0];
        if (gguf_writer_add_tensor(c->w, it->name, it->type, it->ndim, it->ne) < 0)
            return err_set(err, errlen, TERN_EINVAL, "%s: cannot add tensor", it->name);
        *total += type_tensor_bytes(it->type, it->ne[0], it->ne[1]);
    }
    int64_t nf[2] = {c->hp.rot_dim / 2, 1};
    if (c->rope_freqs && gguf_writer_add_tensor(c->w, ROPE_FREQS_NAME, TT_F32, 1, nf) < 0)
        return err_set(err, errlen, TERN_EINVAL, "%s: cannot add tensor", ROPE_FREQS_NAME);
    if (c->rope_freqs) *total += (uint64_t)nf[0] * 4;
    c->cap = CV_CHUNK > widest ? CV_CHUNK : (size_t)widest;
    c->f = malloc(c->cap * sizeof(float));
    c->trits = malloc(c->cap);
    c->bytes = malloc(c->cap * sizeof(float));
    if (!c->f || !c->trits || !c->bytes) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    return 0;
}

static int cv_run(const char *dir, const cv_opts_t *o, char *err, size_t errlen) {
    cv_t c = {0};
    int rc, tied;
    uint64_t total;
    if ((rc = cv_types(&c, o, err, errlen)) < 0) return rc;
    struct stat sb;
    errno = 0;
    if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode))
        return err_set(err, errlen, TERN_ENOTFOUND, "%s: cannot open directory: %s", dir,
                       errno ? strerror(errno) : "not a directory");
    if ((rc = cv_config(&c, dir, &tied, err, errlen)) < 0) goto done;
    if ((rc = st_set_open(&c.st, dir, err, errlen)) < 0) return rc;
    if (!(c.w = gguf_writer_new())) { rc = err_set(err, errlen, TERN_ENOMEM, "out of memory"); goto done; }
    if ((rc = cv_plan(&c, err, errlen)) < 0) goto done;
    cv_unused(&c);
    char name[256];
    const char *base = strrchr(dir, '/');
    snprintf(name, sizeof name, "%s", o->name ? o->name : base && base[1] ? base + 1 : dir);
    hparams_to_gguf(&c.hp, c.w, name);
    gguf_writer_set_u32(c.w, "general.quantization_version", 2);
    if ((rc = cv_vocab(&c, dir, err, errlen)) < 0) goto done;
    if ((rc = cv_alloc(&c, &total, err, errlen)) < 0) goto done;
    if ((rc = gguf_writer_begin(c.w, o->out, err, errlen)) < 0) goto done;
    log_i("convert: %s → %s: %s, %d layers, embd %d, ff %d, heads %d/%d, vocab %d, %s weights, %s head, %.2f MiB",
          dir, o->out, c.hp.arch_name, c.hp.n_layer, c.hp.n_embd, c.hp.n_ff, c.hp.n_head, c.hp.n_head_kv,
          c.hp.n_vocab, type_name(c.wtype), c.hp.tied ? "tied" : type_name(c.head_type), (double)total / (1 << 20));
    progress_init(&c.prog, "converting", total);
    if ((rc = cv_write(&c, err, errlen)) < 0) goto done;
    if ((rc = gguf_writer_finish(c.w, err, errlen)) < 0) goto done;
    progress_done(&c.prog);
done:
    cv_free(&c);
    return rc;
}

int convert_main(int argc, char **argv) {
    log_set_role("T");
    cv_opts_t o = {.type = "i2_s", .head = "f16"};
    opt_t opts[] = {
        {"-o", "--output", OPT_STR, &o.out, "FILE", "output GGUF (written to FILE.tmp, then renamed)", 0, 0},
        {NULL, "--type", OPT_STR, &o.type, "TYPE", "linear weights: i2_s | tq2_0 | tq1_0 | f16 (ternarised)", 0, 0},
        {NULL, "--head", OPT_STR, &o.head, "TYPE", "lm head when untied: f16 | q8_0 | f32", 0, 0},
        {NULL, "--name", OPT_STR, &o.name, "TEXT", "general.name (default: the directory's name)", 0, 0},
        OPT_END,
    };
    char err[1024], *pos[2];
    int npos = 0, rc = opt_parse(opts, argc, argv, pos, 2, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern convert HF_DIR -o OUT.gguf [--type i2_s|tq2_0|tq1_0|f16] [--head f16|q8_0]", opts);
        return 0;
    }
    if (rc == 0 && npos != 1) rc = err_set(err, sizeof err, TERN_EINVAL, "expected one HF_DIR (see --help)");
    if (rc == 0 && !o.out) rc = err_set(err, sizeof err, TERN_EINVAL, "missing -o OUT.gguf (see --help)");
    if (rc == 0) rc = cv_run(pos[0], &o, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "tern convert: %s\n", err);
        return 1;
    }
    return 0;
}
