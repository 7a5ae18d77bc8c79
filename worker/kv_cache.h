/* kv_cache: keys and values of every layer of a shard for n_seq sequence slots of n_ctx
 * positions, f16 (default), f32 or q8_0 (half of f16's bytes), laid out [layer][seq][pos][kv_head][head_dim] so one
 * sequence's keys of one layer are contiguous for attention. Allocated once at load (pages
 * are touched only when written). kv_cache_copy copies a slot's first rows into another slot
 * (a shared prompt evaluated once). The context shift (kv_cache_shift) moves a slot's rows down in
 * place, re-rotating its keys. Not here: which sequence owns a slot, or when to shift (the
 * scheduler); the model's RoPE parameters (the caller's kv_rope_t). */
#ifndef TERN_KV_CACHE_H
#define TERN_KV_CACHE_H
#include <stddef.h>
#include <stdint.h>
#include "core/tpool.h"

typedef struct kv_cache {
    int type;          /* enum kv_type (kernels/ops.h) */
    int n_layer, n_seq, n_ctx, kv_dim;
    size_t row;        /* bytes of one position's (kv_dim,) row */
    uint8_t *k, *v;
} kv_cache_t;

int kv_cache_init(kv_cache_t *kv, int type, int n_layer, int n_seq, int n_ctx, int kv_dim, char *err, size_t errlen);
void kv_cache_free(kv_cache_t *kv);
size_t kv_cache_bytes_for(int type, int n_layer, int n_seq, int n_ctx, int kv_dim);
/* (n_ctx, kv_dim) block of layer il (shard-local index), slot seq */
void *kv_cache_k(const kv_cache_t *kv, int il, int seq);
void *kv_cache_v(const kv_cache_t *kv, int il, int seq);
/* stores one position's k, v (kv_dim,) f32 */
void kv_cache_store(kv_cache_t *kv, int il, int seq, int pos, const float *k, const float *v);

/* A context shift (llama.cpp's KV-cache shift; coordinator/pipeline.h's step_shift_t, field for
 * field): slot seq drops positions [keep, keep + discard) and moves [keep + discard, n_past) down
 * by discard, so it holds n_past - discard positions. */
typedef struct kv_shift {
    int seq, keep, discard, n_past;
} kv_shift_t;

/* n shifts to be applied in order: 0 <= n <= n_seq, each 0 <= seq < n_seq, 0 <= keep, 0 < discard,
 * keep + discard <= n_past <= n_ctx, at most one per slot. 0, or TERN_EINVAL with the first bad
 * one named in err. */
int kv_shift_check(const kv_shift_t *sh, int n, int n_seq, int n_ctx, char *err, size_t errlen);

/* A copy (llama.cpp's llama_memory_seq_cp; coordinator/pipeline.h's step_copy_t, field for field):
 * positions [0, n) of slot src's keys and values into slot dst, byte for byte (a position's rows
 * depend only on the tokens up to it, so dst then holds what a prefill of the same tokens makes). */
typedef struct kv_copy {
    int src, dst, n;
} kv_copy_t;

/* n copies to be applied in order: 0 <= n <= n_seq, each 0 <= src, dst < n_seq, src != dst,
 * 1 <= n <= n_ctx and, with fill (n_seq,) not NULL, n <= fill[src] (the positions src has had
 * written); no slot copied into twice, and none both copied into and copied from (so their order
 * does not matter). 0, or TERN_EINVAL with the first bad one named in err. */
int kv_copy_check(const kv_copy_t *cp, int n, int n_seq, int n_ctx, const int *fill, char *err, size_t errlen);
/* Applies one checked copy to layers [0, n_layer) of the cache: 2 x n_layer memcpy of n rows. */
void kv_cache_copy(kv_cache_t *kv, const kv_copy_t *cp);

/* How the keys were rotated (forward.c's RoPE): kv_dim / head_dim heads a row, the first rot_dim
 * dims of each, neox or adjacent pairs; cs, sn (rot_dim/2,): ops_rope_table at -discard. */
typedef struct kv_rope {
    int head_dim, rot_dim, neox;
    const float *cs, *sn;
} kv_rope_t;

/* Applies one checked shift to layers [0, n_layer) of the cache: each moved key is read as f32,
 * rotated by r (rot(p - d) = rot(-d) · rot(p)) and stored again in the cache's type at its new
 * position (f16 rounded, q8_0 requantised); values are moved byte for byte. Only rows
 * [keep, n_past) are touched; rows from n_past - discard on keep their old bytes (unread until
 * written again). (layer, kv head) columns are split over tp's threads, each walking its rows
 * upwards, so the move is in place; tmp: (tpool_size(tp), head_dim) floats. */
void kv_cache_shift(kv_cache_t *kv, const kv_shift_t *sh, const kv_rope_t *r, tpool_t *tp, float *tmp);

#endif
