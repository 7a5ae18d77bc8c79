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

typedef struct hparams {
    int arch;
    char arch_name[32];     /* as in general.architecture */
    int n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab, n_ctx_train, rot_dim;
    float norm_eps, rope_base;
    int rope_neox;          /* 1: NEOX pairs (i, i+d/2); 0: adjacent pairs */
    int act;                /* enum act */
    int sub_norms;          /* attn_sub_norm / ffn_sub_norm present */
    int tied;               /* lm head = token_embd (no output.weight) */
} hparams_t;

const char *arch_name(int arch);
int arch_from_name(const char *name);     /* accepts "bitnet-b1.58", "bitnet-25", "bitnet", "llama"; -1 */

/* Reads hparams from GGUF keys and checks them for consistency (heads divide, dims positive and
 * not absurd). `tied` is set from whether output.weight exists. 0 or <0 with err. */
int hparams_from_gguf(hparams_t *hp, const gguf_t *g, char *err, size_t errlen);
/* writes general.architecture, general.name and the {arch}.* keys */
void hparams_to_gguf(const hparams_t *hp, gguf_writer_t *w, const char *model_name);
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
