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

int kv_shift_check(const kv_shift_t *sh, int n, int n_seq, int n_ctx, char *err, size_t errlen) {
    if (n < 0 || n > n_seq)
        return err_set(err, errlen, TERN_EINVAL, "%d context shifts in one step for %d sequence slots", n, n_seq);
    for (int i = 0; i < n; i++) {
        const kv_shift_t *s = &sh[i];
        const char *why = s->seq < 0 || s->seq >= n_seq                  ? "slot out of range"
                          : s->keep < 0                                  ? "keep < 0"
                          : s->discard <= 0                              ? "discard must be > 0"
                          : (long)s->keep + s->discard > (long)s->n_past ? "keep + discard > n_past"
                          : s->n_past > n_ctx                            ? "n_past > the context"
                                                                         : NULL;
        for (int j = 0; !why && j < i; j++)
            if (sh[j].seq == s->seq) why = "a second shift of the same slot";
        if (why)
            return err_set(err, errlen, TERN_EINVAL,
                           "context shift %d (slot %d, keep %d, discard %d, n_past %d; %d slots, ctx %d): %s", i, s->seq,
                           s->keep, s->discard, s->n_past, n_seq, n_ctx, why);
    }
    return 0;
}

int kv_copy_check(const kv_copy_t *cp, int n, int n_seq, int n_ctx, const int *fill, char *err, size_t errlen) {
    if (n < 0 || n > n_seq)
        return err_set(err, errlen, TERN_EINVAL, "%d KV copies in one step for %d sequence slots", n, n_seq);
    for (int i = 0; i < n; i++) {
        const kv_copy_t *c = &cp[i];
        const char *why = c->src < 0 || c->src >= n_seq || c->dst < 0 || c->dst >= n_seq ? "slot out of range"
                          : c->src == c->dst                                          ? "a slot into itself"
                          : c->n < 1                                                  ? "n must be >= 1"
                          : c->n > n_ctx                                              ? "n > the context"
                          : fill && c->n > fill[c->src] ? "n > the positions written in the source slot"
                                                        : NULL;
        for (int j = 0; !why && j < n; j++)
            if (j < i && cp[j].dst == c->dst) why = "a second copy into the same slot";
            else if (cp[j].dst == c->src) why = "the source slot is copied into in the same step";
        if (why)
            return err_set(err, errlen, TERN_EINVAL, "KV copy %d (slot %d to slot %d, %d positions; %d slots, ctx %d): %s",
                           i, c->src, c->dst, c->n, n_seq, n_ctx, why);
    }
    return 0;
}

void kv_cache_copy(kv_cache_t *kv, const kv_copy_t *cp) {
    size_t bytes = (size_t)cp->n * kv->row;
    for (int il = 0; il < kv->n_layer; il++) {
        size_t s = block_off(kv, il, cp->src), d = block_off(kv, il, cp->dst);
        memcpy(kv->k + d, kv->k + s, bytes);
        memcpy(kv->v + d, kv->v + s, bytes);
    }
}

typedef struct shift_job {
    kv_cache_t *kv;
    const kv_shift_t *sh;
    const kv_rope_t *r;
    float *tmp;
    int n_head;
} shift_job_t;

/* this thread's (layer, kv head) columns: each row's head read, rotated, written discard rows down */
static void shift_cols(void *arg, int ith, int nth) {
    const shift_job_t *a = arg;
    kv_cache_t *kv = a->kv;
    const kv_shift_t *s = a->sh;
    const kv_rope_t *r = a->r;
    const int hd = r->head_dim, t = kv->type;
    const size_t hb = ops_kv_bytes(t, hd);
    float *x = a->tmp + (size_t)ith * (size_t)hd;
    long b, e;
    tpool_split((long)kv->n_layer * a->n_head, ith, nth, 1, &b, &e);
    for (long u = b; u < e; u++) {
        int il = (int)(u / a->n_head), h = (int)(u % a->n_head);
        size_t col = block_off(kv, il, s->seq) + (size_t)h * hb;
        for (int p = s->keep + s->discard; p < s->n_past; p++) {
            size_t src = col + (size_t)p * kv->row, dst = col + (size_t)(p - s->discard) * kv->row;
            ops_kv_get(x, kv->k + src, t, hd);
            ops_rope_apply(x, 1, hd, r->rot_dim, r->neox, r->cs, r->sn);
            ops_kv_put(kv->k + dst, t, x, hd);
            memcpy(kv->v + dst, kv->v + src, hb);
        }
    }
}

void kv_cache_shift(kv_cache_t *kv, const kv_shift_t *sh, const kv_rope_t *r, tpool_t *tp, float *tmp) {
    shift_job_t job = {kv, sh, r, tmp, kv->kv_dim / r->head_dim};
    if (sh->keep + sh->discard >= sh->n_past) return;   /* nothing moves */
    tpool_run(tp, shift_cols, &job);
}
