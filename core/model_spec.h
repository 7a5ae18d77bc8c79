/* model_spec: what a model of each architecture is made of — hyper-parameters from GGUF keys,
 * the tensors of each block with their names and shapes, and the preset shapes of real models
 * used by `tern mkmodel`. Keys and tensor names are spelled as llama.cpp / bitnet.cpp write
 * them, so files load in either. Not here: loading weights (worker/shard) or maths. */
#ifndef TERN_MODEL_SPEC_H
#define TERN_MODEL_SPEC_H
#include <stddef.h>
#include <stdint.h>
#include "core/gguf.h"

enum arch {
    ARCH_BITNET_B158 = 0,   /* "bitnet-b1.58" / "bitnet-25": 2B-4T (sub-norms, relu², NEOX rope) */
    ARCH_BITNET = 1,        /* "bitnet": 1bitLLM large/3B (sub-norms, SiLU unless hidden_activation=relu2) */
    ARCH_LLAMA = 2,         /* "llama": Falcon3-1.58bit, Llama3-8B-1.58 (ternary linears, untied head) */
    ARCH_COUNT = 3
};
enum act { ACT_SILU = 0, ACT_RELU2 = 1 };

/* per-block tensors, in the order they are stored */
enum tensor_role {
    TR_ATTN_NORM, TR_ATTN_Q, TR_ATTN_K, TR_ATTN_V, TR_ATTN_OUT, TR_ATTN_SUB_NORM,
    TR_FFN_NORM, TR_FFN_GATE, TR_FFN_UP, TR_FFN_DOWN, TR_FFN_SUB_NORM, TR_COUNT
};

/* RoPE scaling (context extension), as llama.cpp reads it from {arch}.rope.scaling.*. longrope and
 * the others are refused at load; llama3-style scaling is a rope_freqs.weight tensor (frequency
 * factors, loaded by worker/shard) with type none. */
enum rope_scaling_type { ROPE_SCALING_NONE = 0, ROPE_SCALING_LINEAR = 1, ROPE_SCALING_YARN = 2 };

typedef struct rope_scaling {
    int type;               /* enum rope_scaling_type */
    float freq_scale;       /* 1/factor: positions are interpolated by it (linear, yarn); 1 with none */
    int n_ctx_orig;         /* yarn: the context trained on before extension; 0: n_ctx_train */
    float ext_factor;       /* yarn: weight of extrapolation in the ramp; < 0: llama.cpp's default
                             * (1 for yarn, 0 otherwise) */
    float attn_factor;      /* magnitude of the rotation (yarn multiplies in 1 + 0.1 ln(factor)); 1 */
    float beta_fast, beta_slow; /* yarn ramp bounds, in rotations over n_ctx_orig (32, 1) */
} rope_scaling_t;

/* The user's overrides of the file's RoPE keys (llama.cpp's --rope-* / --yarn-* flags); a field at
 * its "unset" value keeps the file's. */
typedef struct rope_override {
    int type;               /* -1: the file's; else enum rope_scaling_type */
    float freq_base;        /* 0: the file's */
    float freq_scale;       /* 0: the file's (--rope-scale N gives 1/N) */
    int n_ctx_orig;         /* 0: the file's */
    float ext_factor;       /* < 0: the file's */
    float attn_factor;      /* 0: the file's; else it multiplies the file's (as llama.cpp) */
    float beta_fast, beta_slow; /* 0: the file's */
} rope_override_t;

typedef struct hparams {
    int arch;
    char arch_name[32];     /* as in general.architecture */
    int n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx_train, rot_dim;
    float norm_eps, rope_base;
    int rope_neox;          /* 1: NEOX pairs (i, i+d/2); 0: adjacent pairs */
    int act;                /* enum act */
    int sub_norms;          /* attn_sub_norm / ffn_sub_norm present */
    int tied;               /* lm head = token_embd (no output.weight) */
    rope_scaling_t rope;    /* scaling of the RoPE angles; type none: plain RoPE */
} hparams_t;

const char *arch_name(int arch);
int arch_from_name(const char *name);     /* accepts "bitnet-b1.58", "bitnet-25", "bitnet", "llama"; -1 */

/* Reads hparams from GGUF keys and checks them for consistency (heads divide, dims positive and
 * not absurd). `tied` is set from whether output.weight exists. 0 or <0 with err. */
int hparams_from_gguf(hparams_t *hp, const gguf_t *g, char *err, size_t errlen);
/* writes general.architecture, general.name and the {arch}.* keys (the rope.scaling.* ones when
 * the type is not none) */
void hparams_to_gguf(const hparams_t *hp, gguf_writer_t *w, const char *model_name);
/* the rope_scaling type named "none" / "linear" / "yarn", or -1; and its name */
int rope_scaling_parse(const char *name);
const char *rope_scaling_name(int type);
void rope_override_default(rope_override_t *o);
/* 1 when o changes nothing */
int rope_override_empty(const rope_override_t *o);
/* hp's RoPE fields with o's overrides applied, then checked (rope_scaling_check). 0 or <0 with a
 * one-line reason naming the flag. */
int hparams_rope_override(hparams_t *hp, const rope_override_t *o, char *err, size_t errlen);
/* base and scaling in range: finite, factor > 0, yarn with a known original context, ... (values
 * from a file or the network). 0 or TERN_EINVAL/TERN_EFORMAT with a one-line reason. */
int rope_scaling_check(const hparams_t *hp, char *err, size_t errlen);
/* llama3-style frequency factors (llama.cpp's convert_hf_to_gguf, rope_type "llama3"): ff (dim/2,)
 * for theta base, head dim dim, factor, low/high_freq_factor and the original context. */
void rope_llama3_factors(float *ff, int dim, float base, float factor, float low_freq_factor,
                         float high_freq_factor, int old_ctx);
#define ROPE_FREQS_NAME "rope_freqs.weight"   /* llama.cpp's LLM_TENSOR_ROPE_FREQS */

/* derived fields (head_dim, rot_dim, act, sub_norms, rope_neox) from arch + the basics */
void hparams_defaults(hparams_t *hp);

/* presets: "2b4t", "large", "falcon3-1b", "falcon3-7b", "llama3-8b", "7b", "13b", "30b",
 * "70b", "100b", "tiny", "small". arch < 0 keeps the preset's own arch. 0 ok, <0 unknown. */
int preset_find(const char *name, int arch, hparams_t *hp);
const char *preset_list(void);            /* "2b4t, large, ..." */

const char *tensor_role_name(int role);   /* "attn_q", "ffn_sub_norm", ... */
int tensor_role_ternary(int role);        /* linears are ternary, norms f32 */
int tensor_role_present(const hparams_t *hp, int role);
/* GGUF ne[] of a block tensor: ne[0] = cols (inputs), ne[1] = rows (outputs); norms are 1-D */
int tensor_role_shape(const hparams_t *hp, int role, int64_t ne[2]);
void tensor_block_name(char *buf, size_t cap, int layer, int role);   /* "blk.3.attn_q.weight" */

/* ternary weights of one block (elements), and of the whole model (excl. embedding/head) */
int64_t hparams_block_params(const hparams_t *hp);

#endif
