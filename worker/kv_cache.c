/* kv_cache: see kv_cache.h. */
#include "worker/kv_cache.h"
#include "core/alloc.h"
#include "core/err.h"
#include "kernels/ops.h"
#include <string.h>

size_t kv_cache_bytes_for(int type, int n_layer, int n_seq, int n_ctx, int kv_dim) {
    size_t elt = type == KV_F16 ? 2 : 4;
    return 2 * elt * (size_t)n_layer * (size_t)n_seq * (size_t)n_ctx * (size_t)kv_dim;
}

int kv_cache_init(kv_cache_t *kv, int type, int n_layer, int n_seq, int n_ctx, int kv_dim, char *err, size_t errlen) {
    memset(kv, 0, sizeof *kv);
    if (type != KV_F16 && type != KV_F32) return err_set(err, errlen, TERN_EINVAL, "unknown KV cache type %d", type);
    kv->type = type;
    kv->n_layer = n_layer;
    kv->n_seq = n_seq;
    kv->n_ctx = n_ctx;
    kv->kv_dim = kv_dim;
    kv->elt = type == KV_F16 ? 2 : 4;
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
    return ((size_t)il * (size_t)kv->n_seq + (size_t)seq) * (size_t)kv->n_ctx * (size_t)kv->kv_dim * kv->elt;
}

void *kv_cache_k(const kv_cache_t *kv, int il, int seq) { return kv->k + block_off(kv, il, seq); }
void *kv_cache_v(const kv_cache_t *kv, int il, int seq) { return kv->v + block_off(kv, il, seq); }

void kv_cache_store(kv_cache_t *kv, int il, int seq, int pos, const float *k, const float *v) {
    size_t off = block_off(kv, il, seq) + (size_t)pos * (size_t)kv->kv_dim * kv->elt;
    if (kv->type == KV_F16) {
        ops_f32_to_f16((uint16_t *)(kv->k + off), k, kv->kv_dim);
        ops_f32_to_f16((uint16_t *)(kv->v + off), v, kv->kv_dim);
    } else {
        memcpy(kv->k + off, k, (size_t)kv->kv_dim * 4);
        memcpy(kv->v + off, v, (size_t)kv->kv_dim * 4);
    }
}
