/* mkmodel: `tern mkmodel` — writes a synthetic model of a real model's shape (preset), with
 * deterministic random ternary weights (≈35–40% zeros, a per-tensor absmean-like scale), small
 * gaussian-ish embeddings and head, norms near 1, and a tokenizer (generated, copied from a
 * GGUF, or imported from tokenizer.json). Everything is streamed in row chunks, so a 100B
 * preset is written in a few MiB of memory. Not here: trained weights (tools/convert). */
#include "coordinator/vocab.h"
#include "core/cache.h"
#include "core/err.h"
#include "core/gguf.h"
#include "core/half.h"
#include "core/log.h"
#include "core/model_spec.h"
#include "core/opt.h"
#include "core/progress.h"
#include "core/types.h"
#include "kernels/fmat.h"
#include "kernels/quant.h"
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>

#define MK_CHUNK (1 << 20)   /* elements generated per chunk */

typedef struct mk_opts {
    const char *arch, *preset, *type, *head, *head_type, *embd, *vocab, *out, *name;
    int64_t seed;
    int layers, ctx, n_vocab, untied;
    int fim;   /* --fim: the generated vocabulary gets fill-in-the-middle tokens */
    const char *rope_scaling;   /* --rope-scaling none|linear|yarn */
    float rope_scale, yarn_attn_factor, rope_freqs;   /* factor; yarn magnitude; llama3 factor (0: none) */
    int yarn_orig_ctx;
    const char *control;   /* --control: a control token of the generated vocabulary */
} mk_opts_t;

typedef struct mk {
    hparams_t hp;
    int wtype, head_type;     /* ternary type of the linears; type of output.weight */
    int embd_type;            /* type of token_embd.weight (the head too when tied) */
    int untied;               /* write output.weight */
    float *rope_freqs;        /* (rot_dim/2,) llama3 frequency factors to write, or NULL */
    uint64_t seed;
    gguf_writer_t *w;
    progress_t prog;
    int8_t *trits;            /* (MK_CHUNK or one row) */
    float *f;                 /* same */
    uint8_t *bytes;           /* packed output of one chunk */
    size_t cap;               /* elements the buffers hold */
} mk_t;

/* ---- deterministic random numbers (splitmix64: one state per tensor) ------------------- */

static uint64_t mk_rand(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t mk_tensor_seed(const mk_t *m, int idx) {
    uint64_t s = m->seed ^ ((uint64_t)(idx + 1) * 0xd1b54a32d192ed03ull);
    return mk_rand(&s);
}

static double mk_unif(uint64_t *s) { return (double)(mk_rand(s) >> 11) * (1.0 / 9007199254740992.0); }

/* approximately N(0, 1): Irwin–Hall sum of four 16-bit uniforms from one draw */
static float mk_gauss(uint64_t *s) {
    uint64_t r = mk_rand(s);
    uint32_t sum = (uint32_t)(r & 0xffff) + (uint32_t)((r >> 16) & 0xffff) + (uint32_t)((r >> 32) & 0xffff) +
                   (uint32_t)(r >> 48);
    return ((float)sum * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
}

/* ---- tensors ------------------------------------------------------------------------- */

/* adds every tensor info in data order; returns the count or <0 */
static int mk_add_tensors(mk_t *m, uint64_t *total, char *err, size_t errlen) {
    const hparams_t *hp = &m->hp;
    int64_t ne[2] = {hp->n_embd, hp->n_vocab};
    int n = 0;
    *total = 0;
#define ADD(name, type, nd) do { \
        if (gguf_writer_add_tensor(m->w, name, type, nd, ne) < 0) \
            return err_set(err, errlen, TERN_EINVAL, "%s: cannot add tensor of type %s, shape %" PRId64 " x %" PRId64, \
                           name, type_name(type), ne[0], ne[1]); \
        *total += type_tensor_bytes(type, ne[0], ne[1]); n++; } while (0)
    if (ne[0] % type_traits(m->embd_type)->blck)
        return err_set(err, errlen, TERN_EINVAL, "--embd-type %s needs n_embd to be a multiple of %d (%d)",
                       type_name(m->embd_type), type_traits(m->embd_type)->blck, hp->n_embd);
    ADD("token_embd.weight", m->embd_type, 2);
    for (int l = 0; l < hp->n_layer; l++)
        for (int r = 0; r < TR_COUNT; r++) {
            if (!tensor_role_present(hp, r)) continue;
            char name[64];
            int nd = tensor_role_shape(hp, r, ne);
            tensor_block_name(name, sizeof name, l, r);
            int ter = tensor_role_ternary(r);
            if (ter && ne[0] % type_traits(m->wtype)->blck)
                return err_set(err, errlen, TERN_EINVAL, "--type %s needs rows that are a multiple of %d elements, but "
                               "%s has %" PRId64 " (choose another --type or preset)", type_name(m->wtype),
                               type_traits(m->wtype)->blck, name, ne[0]);
            ADD(name, ter ? m->wtype : TT_F32, nd);
        }
    ne[0] = hp->n_embd;
    ne[1] = 1;
    ADD("output_norm.weight", TT_F32, 1);
    if (m->untied) {
        ne[1] = hp->n_vocab;
        if (ne[0] % type_traits(m->head_type)->blck)
            return err_set(err, errlen, TERN_EINVAL, "--head %s needs n_embd to be a multiple of %d (%d)",
                           type_name(m->head_type), type_traits(m->head_type)->blck, hp->n_embd);
        ADD("output.weight", m->head_type, 2);
    }
    if (m->rope_freqs) {   /* last, so the other tensors' seeds (by index) stay those of the plain model */
        ne[0] = hp->rot_dim / 2;
        ne[1] = 1;
        ADD(ROPE_FREQS_NAME, TT_F32, 1);
    }
#undef ADD
    return n;
}

static int mk_emit(mk_t *m, const void *p, size_t n, char *err, size_t errlen) {
    int rc = gguf_writer_write(m->w, p, n, err, errlen);
    if (rc == 0) progress_add(&m->prog, n);
    return rc;
}

/* norm weights: f32 1 + 0.1 · noise */
static int mk_write_norm(mk_t *m, int idx, int64_t n, char *err, size_t errlen) {
    uint64_t s = mk_tensor_seed(m, idx);
    for (int64_t done = 0; done < n;) {
        int64_t k = n - done < (int64_t)m->cap ? n - done : (int64_t)m->cap;
        for (int64_t i = 0; i < k; i++) m->f[i] = 1.0f + 0.1f * mk_gauss(&s);
        int rc = mk_emit(m, m->f, (size_t)k * 4, err, errlen);
        if (rc < 0) return rc;
        done += k;
    }
    return 0;
}

/* embedding / head (rows, cols): gaussian-ish with a per-tensor std in [0.02, 0.05] */
static int mk_write_dense(mk_t *m, int idx, int type, int64_t rows, int64_t cols, char *err, size_t errlen) {
    uint64_t s = mk_tensor_seed(m, idx);
    float sd = 0.02f + 0.03f * (float)mk_unif(&s);
    int64_t chunk = (int64_t)m->cap / cols;
    for (int64_t r = 0; r < rows; r += chunk) {
        int64_t nr = rows - r < chunk ? rows - r : chunk, n = nr * cols;
        size_t nb = type_tensor_bytes(type, cols, nr);
        if (type == TT_F16) {
            uint16_t *h = (uint16_t *)m->bytes;
            for (int64_t i = 0; i < n; i++) h[i] = f32_to_f16(sd * mk_gauss(&s));
        } else {
            for (int64_t i = 0; i < n; i++) m->f[i] = sd * mk_gauss(&s);
            int rc = quant_from_f32(type, m->f, nr, cols, m->bytes);
            if (rc < 0) return err_set(err, errlen, rc, "quantising to %s failed", type_name(type));
        }
        int rc = mk_emit(m, m->bytes, nb, err, errlen);
        if (rc < 0) return rc;
    }
    return 0;
}

/* ternary (rows, cols): each random byte picks a trit; the zero share (35–40%) and the scale
 * (0.02–0.05) vary per tensor, as in trained BitNet weights */
static int mk_write_ternary(mk_t *m, int idx, int64_t rows, int64_t cols, char *err, size_t errlen) {
    uint64_t s = mk_tensor_seed(m, idx);
    float scale = 0.02f + 0.03f * (float)mk_unif(&s);
    int zero_below = 90 + (int)(mk_rand(&s) % 13);       /* zero if byte < 90..102 of 256 */
    int8_t lut[256];
    for (int b = 0; b < 256; b++) lut[b] = (int8_t)(b < zero_below ? 0 : (b & 1) ? 1 : -1);
    int64_t chunk = (int64_t)m->cap / cols;
    for (int64_t r = 0; r < rows; r += chunk) {
        int64_t nr = rows - r < chunk ? rows - r : chunk, n = nr * cols;
        for (int64_t i = 0; i < n; i += 8) {
            uint64_t v = mk_rand(&s);
            for (int k = 0; k < 8; k++, v >>= 8) m->trits[i + k] = lut[v & 0xff];
        }
        int rc = quant_pack_trits(m->wtype, m->trits, nr, cols, scale, m->bytes);
        if (rc < 0) return err_set(err, errlen, rc, "packing %s failed", type_name(m->wtype));
        size_t nb = m->wtype == TT_I2_S ? (size_t)(n / 4) : type_tensor_bytes(m->wtype, cols, nr);
        if ((rc = mk_emit(m, m->bytes, nb, err, errlen)) < 0) return rc;
    }
    if (m->wtype == TT_I2_S) {
        uint8_t tail[I2_S_TAIL];
        quant_i2s_tail(tail, scale);
        return mk_emit(m, tail, sizeof tail, err, errlen);
    }
    return 0;
}

static int mk_write_data(mk_t *m, char *err, size_t errlen) {
    const hparams_t *hp = &m->hp;
    int idx = 0, rc;
    if ((rc = mk_write_dense(m, idx++, m->embd_type, hp->n_vocab, hp->n_embd, err, errlen)) < 0) return rc;
    for (int l = 0; l < hp->n_layer; l++)
        for (int r = 0; r < TR_COUNT; r++) {
            int64_t ne[2];
            if (!tensor_role_present(hp, r)) continue;
            tensor_role_shape(hp, r, ne);
            rc = tensor_role_ternary(r) ? mk_write_ternary(m, idx, ne[1], ne[0], err, errlen)
                                        : mk_write_norm(m, idx, ne[0], err, errlen);
            if (rc < 0) return rc;
            idx++;
        }
    if ((rc = mk_write_norm(m, idx++, hp->n_embd, err, errlen)) < 0) return rc;
    if (m->untied && (rc = mk_write_dense(m, idx++, m->head_type, hp->n_vocab, hp->n_embd, err, errlen)) < 0) return rc;
    if (m->rope_freqs) rc = mk_emit(m, m->rope_freqs, (size_t)hp->rot_dim / 2 * sizeof(float), err, errlen);
    return rc;
}

/* ---- setup ------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcasecmp(s + a - b, suf);
}

/* tokenizer keys; sets hp->n_vocab to the vocabulary's size */
static int mk_vocab(mk_t *m, const mk_opts_t *o, char *err, size_t errlen) {
    int n = 0, rc;
    if (!o->vocab) {
        rc = vocab_generate_control(m->w, m->hp.n_vocab, m->seed, o->fim, o->control, err, errlen);
        n = m->hp.n_vocab;
    } else if (o->fim || o->control) {
        return err_set(err, errlen, TERN_EINVAL, "%s adds tokens to the generated vocabulary: not with --vocab",
                       o->fim ? "--fim" : "--control");
    } else if (ends_with(o->vocab, ".gguf")) {
        rc = vocab_copy_gguf(m->w, o->vocab, &n, err, errlen);
    } else if (ends_with(o->vocab, ".json")) {
        rc = vocab_import_hf(m->w, o->vocab, &n, err, errlen);
    } else {
        return err_set(err, errlen, TERN_EINVAL, "--vocab %s: expected a .gguf or a tokenizer.json file", o->vocab);
    }
    if (rc < 0) return rc;
    if (n < 1) return err_set(err, errlen, TERN_EFORMAT, "--vocab %s: no tokens", o->vocab ? o->vocab : "");
    m->hp.n_vocab = n;
    return 0;
}

/* the RoPE scaling keys and the llama3 frequency factors tensor the flags ask for */
static int mk_rope(mk_t *m, const mk_opts_t *o, char *err, size_t errlen) {
    hparams_t *hp = &m->hp;
    rope_override_t ov;
    rope_override_default(&ov);
    if (o->rope_scaling && (ov.type = rope_scaling_parse(o->rope_scaling)) < 0)
        return err_set(err, errlen, TERN_EINVAL, "--rope-scaling %s: expected none, linear or yarn", o->rope_scaling);
    ov.freq_scale = o->rope_scale > 0 ? 1.0f / o->rope_scale : 0;
    ov.n_ctx_orig = o->yarn_orig_ctx;
    ov.attn_factor = o->yarn_attn_factor;
    int rc = hparams_rope_override(hp, &ov, err, errlen);
    if (rc < 0) return rc;
    if (o->rope_freqs > 0) {
        if (!(m->rope_freqs = malloc((size_t)hp->rot_dim / 2 * sizeof(float))))
            return err_set(err, errlen, TERN_ENOMEM, "out of memory");
        rope_llama3_factors(m->rope_freqs, hp->rot_dim, hp->rope_base, o->rope_freqs, 1.0f, 4.0f,
                            o->yarn_orig_ctx > 0 ? o->yarn_orig_ctx : 8192);
    }
    return 0;
}

static int mk_hparams(mk_t *m, const mk_opts_t *o, char *err, size_t errlen) {
    int arch = -1;
    if (o->arch && (arch = arch_from_name(o->arch)) < 0)
        return err_set(err, errlen, TERN_EINVAL, "--arch: unknown architecture '%s' (bitnet-b1.58, bitnet, llama)",
                       o->arch);
    if (preset_find(o->preset, arch, &m->hp) < 0)
        return err_set(err, errlen, TERN_EINVAL, "--preset: unknown preset '%s' (%s)", o->preset, preset_list());
    if (o->layers > 0) m->hp.n_layer = o->layers;
    if (o->ctx > 0) m->hp.n_ctx_train = o->ctx;
    if (o->n_vocab > 0) {
        if (o->vocab) return err_set(err, errlen, TERN_EINVAL, "--n-vocab and --vocab exclude each other");
        m->hp.n_vocab = o->n_vocab;
    }
    m->wtype = type_from_name(o->type);
    if (m->wtype < 0 || !type_traits(m->wtype)->ternary)
        return err_set(err, errlen, TERN_EINVAL, "--type: '%s' is not a ternary type (i2_s, tq2_0, tq1_0)", o->type);
    const char *head = o->head_type ? o->head_type : o->head ? o->head : "f16";
    m->head_type = type_from_name(head);
    m->embd_type = type_from_name(o->embd ? o->embd : "f16");
    if (m->head_type < 0 || !fmat_supported(m->head_type))
        return err_set(err, errlen, TERN_EINVAL, "--head-type: '%s' is not f16, q8_0, f32, bf16, q6_k, q5_k, q4_k, "
                       "q5_0 or q4_0", head);
    if (m->embd_type < 0 || !fmat_supported(m->embd_type))
        return err_set(err, errlen, TERN_EINVAL, "--embd-type: '%s' is not f16, q8_0, f32, bf16, q6_k, q5_k, q4_k, "
                       "q5_0 or q4_0", o->embd);
    m->untied = !m->hp.tied || o->untied;
    /* a tied model has one tensor: --head-type alone sets it (llama-quantize gives a tied model's
     * shared token_embd its head type, Q6_K); two different types need output.weight. (--head
     * keeps its old meaning: the type of output.weight when there is one.) */
    if (m->hp.tied && !m->untied && o->head_type && !o->embd) m->embd_type = m->head_type;
    else if (m->hp.tied && !m->untied && o->head_type && m->head_type != m->embd_type) {
        m->untied = 1;
        log_i("mkmodel: --head-type %s and --embd-type %s differ: writing output.weight", type_name(m->head_type),
              type_name(m->embd_type));
    }
    m->seed = (uint64_t)o->seed;
    return mk_rope(m, o, err, errlen);
}

static void mk_free(mk_t *m) {
    gguf_writer_destroy(&m->w);
    free(m->trits);
    free(m->f);
    free(m->bytes);
    free(m->rope_freqs);
}

/* makes the model described by o; 0 or <0 with a one-line reason */
static int mk_run(const mk_opts_t *o, char *err, size_t errlen) {
    mk_t m = {0};
    uint64_t total;
    int rc;
    if ((rc = mk_hparams(&m, o, err, errlen)) < 0) return rc;
    m.w = gguf_writer_new();
    if (!m.w) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    char name[96];
    snprintf(name, sizeof name, "tern-synthetic-%s", o->preset);
    /* the vocabulary decides n_vocab: the second hparams_to_gguf updates the keys in place */
    hparams_to_gguf(&m.hp, m.w, o->name ? o->name : name);
    if ((rc = mk_vocab(&m, o, err, errlen)) < 0) goto done;
    hparams_to_gguf(&m.hp, m.w, o->name ? o->name : name);
    gguf_writer_set_u32(m.w, "general.quantization_version", 2);
    gguf_writer_set_str(m.w, "general.description", "synthetic model written by tern mkmodel (random weights)");
    gguf_writer_set_u64(m.w, "tern.mkmodel.seed", m.seed);
    if ((rc = mk_add_tensors(&m, &total, err, errlen)) < 0) goto done;
    int64_t widest = m.hp.n_ff > m.hp.n_embd ? m.hp.n_ff : m.hp.n_embd;
    if ((int64_t)m.hp.n_head * m.hp.head_dim > widest) widest = (int64_t)m.hp.n_head * m.hp.head_dim;
    m.cap = MK_CHUNK > widest ? MK_CHUNK : (size_t)widest;
    m.trits = malloc(m.cap);
    m.f = malloc(m.cap * sizeof(float));
    m.bytes = malloc(m.cap * sizeof(float));
    if (!m.trits || !m.f || !m.bytes) { rc = err_set(err, errlen, TERN_ENOMEM, "out of memory"); goto done; }
    if ((rc = gguf_writer_begin(m.w, o->out, err, errlen)) < 0) goto done;
    log_i("mkmodel: %s %s, %d layers, embd %d, ff %d, vocab %d, %s weights, %s embeddings, %s head: %.2f GiB",
          m.hp.arch_name, o->preset, m.hp.n_layer, m.hp.n_embd, m.hp.n_ff, m.hp.n_vocab, type_name(m.wtype),
          type_name(m.embd_type), m.untied ? type_name(m.head_type) : "tied", (double)total / (1 << 30));
    progress_init(&m.prog, "writing", total);
    if ((rc = mk_write_data(&m, err, errlen)) < 0) goto done;
    if ((rc = gguf_writer_finish(m.w, err, errlen)) < 0) goto done;
    progress_done(&m.prog);
done:
    mk_free(&m);
    return rc;
}

int mkmodel_main(int argc, char **argv) {
    log_set_role("T");
    mk_opts_t o = {.preset = "tiny", .type = "i2_s", .seed = 42};
    opt_t opts[] = {
        {NULL, "--arch", OPT_STR, &o.arch, "NAME", "bitnet-b1.58 | bitnet | llama (default: the preset's)", 0, 0},
        {NULL, "--preset", OPT_STR, &o.preset, "NAME", "model shape: 2b4t, large, falcon3-1b, falcon3-7b, "
                                                        "llama3-8b, 7b, 13b, 30b, 70b, 100b, small, tiny", 0, 0},
        {NULL, "--type", OPT_STR, &o.type, "TYPE", "ternary weight type: i2_s | tq2_0 | tq1_0", 0, 0},
        {NULL, "--head", OPT_STR, &o.head, "TYPE", "output.weight's type when untied (see --head-type)", 0, 0},
        {NULL, "--head-type", OPT_STR, &o.head_type, "TYPE",
         "lm head type: f16 (default) | q8_0 | f32 | bf16 | q6_k | q5_k | q4_k | q5_0 | q4_0 (a tied model: its "
         "embeddings)", 0, 0},
        {NULL, "--embd-type", OPT_STR, &o.embd, "TYPE", "token embedding type: f16 (default), or as --head-type", 0, 0},
        {NULL, "--untied", OPT_FLAG, &o.untied, NULL, "write output.weight even for a tied architecture", 0, 0},
        {NULL, "--vocab", OPT_STR, &o.vocab, "FILE", "tokenizer from a .gguf or a tokenizer.json (default: generated)",
         0, 0},
        {NULL, "--fim", OPT_FLAG, &o.fim, NULL, "add Qwen2.5-Coder's fill-in-the-middle tokens (<|fim_prefix|> ... "
                                                "<|file_sep|>) to the generated vocabulary, for /infill", 0, 0},
        {NULL, "--control", OPT_STR, &o.control, "TEXT", "make TEXT a control token of the generated vocabulary (after "
                                                       "its specials), e.g. [TOOL_CALLS]", 0, 0},
        {NULL, "--n-vocab", OPT_INT, &o.n_vocab, "N", "generated vocabulary size (0: the preset's)", 0, 1 << 24},
        {NULL, "--layers", OPT_INT, &o.layers, "N", "override the layer count (0: the preset's)", 0, 4096},
        {NULL, "--rope-scaling", OPT_STR, &o.rope_scaling, "{none,linear,yarn}", "write RoPE scaling keys of this type (with --rope-scale)", 0, 0},
        {NULL, "--rope-scale", OPT_FLOAT, &o.rope_scale, "N", "RoPE scaling factor (rope.scaling.factor)", 0, 1e6},
        {NULL, "--yarn-orig-ctx", OPT_INT, &o.yarn_orig_ctx, "N", "rope.scaling.original_context_length (and the llama3 factors' original context; default 8192)", 0, 1 << 24},
        {NULL, "--yarn-attn-factor", OPT_FLOAT, &o.yarn_attn_factor, "N", "rope.scaling.attn_factor", 0, 1000},
        {NULL, "--rope-freqs", OPT_FLOAT, &o.rope_freqs, "FACTOR", "write rope_freqs.weight: llama3 frequency factors (this factor, low 1, high 4)", 0, 1e6},
        {NULL, "--ctx", OPT_INT, &o.ctx, "N", "override the training context length (0: the preset's)", 0, 1 << 24},
        {NULL, "--name", OPT_STR, &o.name, "TEXT", "general.name (default: tern-synthetic-PRESET)", 0, 0},
        {"-s", "--seed", OPT_I64, &o.seed, "N", "random seed", 0, 0},
        {"-o", "--output", OPT_STR, &o.out, "FILE", "output GGUF (written to FILE.tmp, then renamed)", 0, 0},
        OPT_END,
    };
    char err[512], *pos[1];
    int npos, rc = opt_parse(opts, argc, argv, pos, 0, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern mkmodel [--arch A] [--preset P] [--type i2_s|tq2_0|tq1_0] [--head-type T] "
                         "[--embd-type T] "
                         "[--vocab FILE | --fim] [-s SEED] -o OUT.gguf", opts);
        return 0;
    }
    if (rc == 0 && !o.out) rc = err_set(err, sizeof err, TERN_EINVAL, "missing -o OUT.gguf (see --help)");
    /* 2B-4T's real vocabulary is Llama 3's: use the tokenizer.json that deploy/install-deps.sh
     * caches, when it is there and no vocabulary was asked for */
    char llama3[1024];
    if (rc == 0 && !o.vocab && !o.n_vocab && o.preset && !strcmp(o.preset, "2b4t")) {
        cache_path(llama3, sizeof llama3, "llama3/tokenizer.json");
        if (access(llama3, R_OK) == 0) {
            o.vocab = llama3;
            log_i("mkmodel: 2b4t uses the Llama-3 vocabulary from %s", llama3);
        }
    }
    if (rc == 0) rc = mk_run(&o, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "tern mkmodel: %s\n", err);
        return 1;
    }
    return 0;
}
