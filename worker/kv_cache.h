/* kv_cache: keys and values of every layer of a shard for n_seq sequence slots of n_ctx
 * positions, f16 (default), f32 or q8_0 (half of f16's bytes), laid out [layer][seq][pos][kv_head][head_dim] so one
 * sequence's keys of one layer are contiguous for attention. Allocated once at load (pages
 * are touched only when written). Not here: which sequence owns a slot (the scheduler). */
#ifndef TERN_KV_CACHE_H
#define TERN_KV_CACHE_H
#include <stddef.h>
#include <stdint.h>

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

#endif
