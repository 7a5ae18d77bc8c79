/* kvfile: a sequence slot's KV cache on disk (llama-server's slot save / restore, llama-cli's
 * --prompt-cache): the model's identity, the tokens the slot holds, then every layer's key and
 * value rows of those positions as the caches store them. The rows are the model's, not a
 * placement's: a file saved by one split of the layers restores into any other. Not here: moving
 * rows in and out of the stages (pipeline.h kv_read / kv_write), which slot (sched.c).
 *
 * Layout (little-endian): "TERNKV\r\n", u32 version (1), u64 model size, 24 bytes model hash
 * (NUL-padded, core/model_id.h), u32 n_layer, n_embd, n_vocab, kv_dim, kv_type (enum kv_type,
 * kernels/ops.h), u64 row bytes, u32 n_tok, i32 tokens[n_tok], u64 kv bytes (= n_layer x 2 x
 * n_tok x row), the rows ((n_layer, 2, n_tok, row): each layer's keys, then its values), u64
 * checksum (a word-wise FNV-1a of everything before it). */
#ifndef TERN_KVFILE_H
#define TERN_KVFILE_H
#include <stddef.h>
#include <stdint.h>
#include "core/model_id.h"
#include "core/model_spec.h"

#define KVFILE_MAGIC "TERNKV\r\n"
#define KVFILE_VERSION 1
#define KVFILE_MAX_TOKENS (1 << 24)

/* what a file must match to be restored */
typedef struct kvfile_model {
    uint64_t size;                 /* the model file's identity (model_id.h) */
    char hash[MODEL_ID_HASH_LEN];
    int n_layer, n_embd, n_vocab, kv_dim;
    int kv_type;                   /* enum kv_type */
    size_t row;                    /* bytes of one position's (kv_dim,) row of kv_type */
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

/* Identity of the model at path (model_id_compute) with hp's shapes and the caches' kv_type.
 * 0 or <0 with err. */
int kvfile_model_init(kvfile_model_t *m, const char *path, const hparams_t *hp, int kv_type, char *err, size_t errlen);
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
/* Can f be restored into slots of n_ctx positions of the model want? Same model file, shapes and
 * tokens inside the vocabulary, n_tok <= n_ctx; a different kv_type is converted, each value as
 * the cache would store it (close to, not bit for bit, what a prefill in want's type computes:
 * layers past the first attended over the other type's values). 0, or TERN_EINVAL / TERN_ENOMEM
 * with err. */
int kvfile_check(kvfile_t *f, const kvfile_model_t *want, int n_ctx, char *err, size_t errlen);
void kvfile_free(kvfile_t *f);

#endif
