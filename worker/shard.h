/* shard: a view of the layers [first, last] of a GGUF model, ready to run — each linear as a
 * mat_t (possibly repacked at load), norms as f32 — plus, for the last stage, the output norm
 * and the lm head (tied to token_embd when the file has no output.weight). Weights stay in
 * the mmap'd file unless a kernel repacks them; with a GGUF_NO_MMAP file only the shard's own
 * tensors are read in (and given back by shard_free). Not here: activations, KV cache (forward.c). */
#ifndef TERN_SHARD_H
#define TERN_SHARD_H
#include "core/gguf.h"
#include "core/memlock.h"
#include "core/model_spec.h"
#include "kernels/mat.h"
#include "kernels/ops.h"

enum { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_COUNT };

typedef struct layer_w {
    float *attn_norm;       /* (n_embd,) owned f32 copy */
    float *attn_sub_norm;   /* (n_head*head_dim,) or NULL */
    float *ffn_norm;        /* (n_embd,) */
    float *ffn_sub_norm;    /* (n_ff,) or NULL */
    mat_t lin[LIN_COUNT];   /* q (qdim, embd), k/v (kvdim, embd), o (embd, qdim), gate/up (ff, embd), down (embd, ff) */
    float lin_scale[LIN_COUNT]; /* optional blk.N.<name>.scale multipliers (bitnet arch); 1 when absent */
    mat_t qkv, gu;          /* Q|K|V and gate|up fused into one stream each (mat_fuse), when the
                               kernels allow; rows == 0 when not fused (then lin[] is used) */
} layer_w_t;

typedef struct shard_opts {
    int head_type;          /* -1: as stored; TT_Q8_0 / TT_F16: convert the lm head at load */
    int mat_flags;          /* MAT_NO_REPACK for tests */
    int mlock;              /* --mlock: lock what the shard uses (shard_t.lock) after loading */
    int rope_set;           /* 1: RoPE base and scaling are these (the user's overrides, resolved by the
                             * coordinator), not the file's */
    float rope_base;
    rope_scaling_t rope;
} shard_opts_t;

typedef struct shard {
    const gguf_t *g;        /* not owned */
    hparams_t hp;
    int first, last;        /* layer range, inclusive; first > last: no layers */
    int has_head;           /* output norm + lm head */
    layer_w_t *layers;      /* last - first + 1 */
    float *out_norm;        /* (n_embd,) */
    mat_t head;             /* (n_vocab, n_embd) */
    void *head_owned;       /* converted head bytes, if --head asked for a conversion */
    size_t weight_bytes;    /* bytes of weights read per token (layers + head) */
    float *rope_freqs;      /* (rot_dim/2,) rope_freqs.weight (llama3 frequency factors), or NULL */
    uint8_t *held;          /* (g->n_tensors,) 1: tensor i loaded for this shard (gguf_tensor_load) */
    memlock_t lock;         /* --mlock: what is locked (lock.locked bytes, lock.failed could not be) */
} shard_t;

void shard_opts_default(shard_opts_t *o);
/* Loads layers [first, last] (and the head when has_head). Every tensor is checked for
 * presence, type and shape; a missing one is named in err. 0 or <0. */
int shard_load(shard_t *s, const gguf_t *g, int first, int last, int has_head, const shard_opts_t *o,
               char *err, size_t errlen);
void shard_free(shard_t *s);
/* the RoPE of the shard's model: hp's base and scaling, and its frequency factors */
void shard_rope(const shard_t *s, rope_params_t *p);

#endif
