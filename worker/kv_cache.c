/* kv_cache: see kv_cache.h. */
#include "worker/kv_cache.h"
#include "core/alloc.h"
#include "core/err.h"
#include "kernels/ops.h"
#include <string.h>

size_t kv_cache_bytes_for(int type, int n_layer, int n_seq, int n_ctx, int kv_dim) {
    return 2 * ops_kv_bytes(type, kv_dim) * (size_t)n_layer * (size_t)n_seq * (size_t)n_ctx;
}

int kv_cache_init(kv_cache_t *kv, int type, int n_layer, int n_seq, int n_ctx, int kv_dim, char *err, size_t errlen) {
    memset(kv, 0, sizeof *kv);
    if (!ops_kv_name(type)) return err_set(err, errlen, TERN_EINVAL, "unknown KV cache type %d", type);
    if (type == KV_Q8_0 && kv_dim % KV_Q8_0_BLOCK)
        return err_set(err, errlen, TERN_EINVAL, "a q8_0 KV cache needs rows of whole 32-blocks (kv dim %d)", kv_dim);
    kv->type = type;
    kv->n_layer = n_layer;
    kv->n_seq = n_seq;
    kv->n_ctx = n_ctx;
    kv->kv_dim = kv_dim;
    kv->row = ops_kv_bytes(type, kv_dim);
    size_t half = kv_cache_bytes_for(type, n_layer, n_seq, n_ctx, kv_dim) / 2;
    kv->k = tern_alloc(half);
    kv->v = tern_alloc(half);
    if (!kv->k || !kv->v) {
        kv_cache_free(kv);
        return err_set(err, errlen, TERN_ENOMEM, "out of memory for the KV cache (%.1f MiB)", 2.0 * (double)half / 1048576);
    }
    return 0;
}

void kv_cache_free(kv_cache_t *kv) {
    tern_free(kv->k);
    tern_free(kv->v);
    kv->k = kv->v = NULL;
}

static size_t block_off(const kv_cache_t *kv, int il, int seq) {
    return ((size_t)il * (size_t)kv->n_seq + (size_t)seq) * (size_t)kv->n_ctx * kv->row;
}

void *kv_cache_k(const kv_cache_t *kv, int il, int seq) { return kv->k + block_off(kv, il, seq); }
void *kv_cache_v(const kv_cache_t *kv, int il, int seq) { return kv->v + block_off(kv, il, seq); }

void kv_cache_store(kv_cache_t *kv, int il, int seq, int pos, const float *k, const float *v) {
    size_t off = block_off(kv, il, seq) + (size_t)pos * kv->row;
    ops_kv_put(kv->k + off, kv->type, k, kv->kv_dim);
    ops_kv_put(kv->v + off, kv->type, v, kv->kv_dim);
}
