/* kvfile: a sequence slot's KV cache on disk (llama-server's slot save / restore, llama-cli's
 * --prompt-cache): the model's identity, the tokens the slot holds, then every layer's key and
 * value rows of those positions as the caches store them. The rows are the model's, not a
 * placement's: a file saved by one split of the layers restores into any other. Not here: moving
 * rows in and out of the stages (pipeline.h kv_read / kv_write), which slot (sched.c).
 *
 * The keys are stored rotated, so a file also records the RoPE they were rotated with, and restores
 * only under the same. A file from before the record (version 1) restores only where the model runs
 * plain RoPE with its file's own base, as every tern before RoPE scaling did (the one commit that had
 * the --rope-* flags but not the record could have written one under other settings: unseen here).
 *
 * Layout (little-endian): "TERNKV\r\n", u32 version (2), u64 model size, 24 bytes model hash
 * (NUL-padded, core/model_id.h), u32 n_layer, n_embd, n_vocab, kv_dim, kv_type (enum kv_type,
 * kernels/ops.h), u64 row bytes, the RoPE record (u32 scaling type, f32 freq_base, f32 freq_scale,
 * u32 n_ctx_orig, f32 ext_factor, f32 attn_factor, f32 beta_fast, f32 beta_slow, u64 hash of the
 * rope_freqs factors or 0; kvfile_rope_t; version 1 has none), u32 n_tok, i32 tokens[n_tok], u64 kv
 * bytes (= n_layer x 2 x n_tok x row), the rows ((n_layer, 2, n_tok, row): each layer's keys, then
 * its values), u64 checksum (a word-wise FNV-1a of everything before it). */
#ifndef TERN_KVFILE_H
#define TERN_KVFILE_H
#include <stddef.h>
#include <stdint.h>
#include "core/model_id.h"
#include "core/model_spec.h"

#define KVFILE_MAGIC "TERNKV\r\n"
#define KVFILE_VERSION 2   /* 2: the RoPE record; 1 (read too): without it */
#define KVFILE_ROPE_BYTES 40   /* the RoPE record */
#define KVFILE_MAX_TOKENS (1 << 24)

/* The RoPE the keys were rotated with, as it takes effect: the model's keys after the --rope-* /
 * --yarn-* flags, resolved (n_ctx_orig 0 -> the training context, ext_factor < 0 -> its default).
 * n_ctx_orig, beta_fast and beta_slow only place yarn's ramp, which ext_factor 0 leaves unused:
 * they are 0 then, so flags that change nothing do not refuse a file. */
typedef struct kvfile_rope {
    int type;                      /* enum rope_scaling_type (core/model_spec.h) */
    float freq_base, freq_scale;
    int n_ctx_orig;
    float ext_factor, attn_factor, beta_fast, beta_slow;
    uint64_t freqs_hash;           /* of rope_freqs.weight's bytes (llama3 factors); 0: none */
} kvfile_rope_t;

/* what a file must match to be restored */
typedef struct kvfile_model {
    uint64_t size;                 /* the model file's identity (model_id.h) */
    char hash[MODEL_ID_HASH_LEN];
    int n_layer, n_embd, n_vocab, kv_dim;
    int kv_type;                   /* enum kv_type */
    size_t row;                    /* bytes of one position's (kv_dim,) row of kv_type */
    kvfile_rope_t rope;
    int rope_old;                  /* a file of version 1: no RoPE record (rope is zeros) */
    int rope_plain;                /* a model: rope is the plain RoPE of the model file's own base (no
                                    * flags, scaling or factors), what a version-1 file was made with */
} kvfile_model_t;

/* one file's contents (kvfile_load / kvfile_parse; kvfile_free) */
typedef struct kvfile {
    kvfile_model_t m;
    int n_tok;
    int32_t *toks;                 /* (n_tok,) owned */
    uint8_t *kv;                   /* (n_layer, 2, n_tok, m.row) bytes, inside data */
    uint8_t *data;                 /* owned: the file, or a converted copy of the rows */
    size_t len;
} kvfile_t;

/* Identity of the model at path (model_id_compute) with hp's shapes and the caches' kv_type, and
 * hp's RoPE (kvfile_model_rope without factors or flags). 0 or <0 with err. */
int kvfile_model_init(kvfile_model_t *m, const char *path, const hparams_t *hp, int kv_type, char *err, size_t errlen);
/* m's RoPE record: hp's base and scaling as they take effect (hp after the flags), the hash of the
 * rope_freqs.weight bytes freqs[0..n) (NULL: the model has none), flagged: whether --rope-* /
 * --yarn-* flags were given (then m is not rope_plain, even where they change nothing). */
void kvfile_model_rope(kvfile_model_t *m, const hparams_t *hp, const void *freqs, size_t n, int flagged);
/* Bytes of the rows of n_tok positions of m's every layer. */
size_t kvfile_kv_bytes(const kvfile_model_t *m, int n_tok);
/* Writes toks[0..n) with their rows kv (kvfile_kv_bytes(m, n) bytes) to path, through path.tmp
 * renamed into place (a crash leaves the old file). *written (may be NULL): the file's bytes.
 * 0 or TERN_EIO / TERN_EINVAL with err. */
int kvfile_save(const char *path, const kvfile_model_t *m, const int32_t *toks, int n, const uint8_t *kv,
                uint64_t *written, char *err, size_t errlen);
/* Reads path whole and parses it (kvfile_parse). 0, or TERN_ENOTFOUND (no such file), TERN_EIO,
 * TERN_EFORMAT, TERN_ENOMEM with a one-line err naming the file. */
int kvfile_load(kvfile_t *f, const char *path, char *err, size_t errlen);
/* Parses buf[0..len) (untrusted: every size is checked against what is there, the checksum last)
 * into f, which takes buf (malloc'd; freed here on failure). 0 or TERN_EFORMAT / TERN_ENOMEM. */
int kvfile_parse(kvfile_t *f, uint8_t *buf, size_t len, char *err, size_t errlen);
/* Can f be restored into slots of n_ctx positions of the model want? Same model file, shapes,
 * RoPE (every field of the record; a version-1 file only into a rope_plain model) and tokens
 * inside the vocabulary, n_tok <= n_ctx; a different kv_type is converted, each value as
 * the cache would store it (close to, not bit for bit, what a prefill in want's type computes:
 * layers past the first attended over the other type's values). 0, or TERN_EINVAL / TERN_ENOMEM
 * with err. */
int kvfile_check(kvfile_t *f, const kvfile_model_t *want, int n_ctx, char *err, size_t errlen);
void kvfile_free(kvfile_t *f);

#endif
