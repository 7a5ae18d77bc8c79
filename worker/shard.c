/* shard: tensor lookup and checks, norm weights copied to f32, linears wrapped in mat_t. */
#include "worker/shard.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/half.h"
#include "core/log.h"
#include "core/memlock.h"
#include "core/progress.h"
#include "core/types.h"
#include "kernels/quant.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void shard_opts_default(shard_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->head_type = -1;
}

/* The tensor NAME with its bytes readable (--no-mmap: read in now, once per shard, and released
 * by shard_free); *out = NULL when the file has none. 0 or TERN_EIO. */
static int tensor_get(shard_t *s, const char *name, const gguf_tensor_t **out, char *err, size_t errlen) {
    const gguf_tensor_t *t = *out = gguf_find_tensor(s->g, name);
    if (!t || s->held[t - s->g->tensors]) return 0;
    int rc = gguf_tensor_load(s->g, t, err, errlen);
    if (rc == 0) s->held[t - s->g->tensors] = 1;
    return rc;
}

/* Tensors outside the shard are never read; this says which are inside: its blocks, the RoPE
 * factors, and for the head stage the output norm and the lm head. */
static int shard_wants(const shard_t *s, const char *name) {
    int il, n = 0;
    if (sscanf(name, "blk.%d.%n", &il, &n) == 1 && n > 0) return il >= s->first && il <= s->last;
    if (!strcmp(name, ROPE_FREQS_NAME)) return 1;
    if (!s->has_head) return 0;
    return !strcmp(name, "output_norm.weight") || !strcmp(name, s->hp.tied ? "token_embd.weight" : "output.weight");
}

/* --no-mmap: reads the shard's tensors in file order (sequential reads suit network file
 * systems), with a progress line for big loads */
static int prefetch(shard_t *s, char *err, size_t errlen) {
    const gguf_t *g = s->g;
    uint64_t total = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (shard_wants(s, g->tensors[i].name)) total += g->tensors[i].nbytes;
    progress_t pr;
    progress_init(&pr, "reading layers", total);
    const char *env = getenv("TERN_PROGRESS");
    if (total < (64u << 20) && !(env && *env == '1')) pr.active = 0;   /* small loads are instant */
    const gguf_tensor_t *t;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if (!shard_wants(s, g->tensors[i].name)) continue;
        int rc = tensor_get(s, g->tensors[i].name, &t, err, errlen);
        if (rc < 0) return rc;
        progress_add(&pr, g->tensors[i].nbytes);
    }
    progress_done(&pr);
    return 0;
}

/* the optional rope_freqs.weight: F32, rot_dim/2 values, each finite and > 0 (they divide theta) */
static int load_rope_freqs(shard_t *s, char *err, size_t errlen) {
    const gguf_tensor_t *t;
    int rc = tensor_get(s, ROPE_FREQS_NAME, &t, err, errlen);
    if (rc < 0 || !t) return rc;
    int64_t n = s->hp.rot_dim / 2;
    if (t->type != TT_F32 || t->ne[0] != n || t->ne[1] * t->ne[2] * t->ne[3] != 1)
        return err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%s' is %s [%lld, %lld], expected f32 [%lld] (rope dims / 2)",
                       s->g->path, ROPE_FREQS_NAME, type_name(t->type), (long long)t->ne[0], (long long)t->ne[1],
                       (long long)n);
    if (!(s->rope_freqs = tern_alloc((size_t)n * sizeof(float)))) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    memcpy(s->rope_freqs, t->data, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        if (!(s->rope_freqs[i] > 0) || !isfinite(s->rope_freqs[i]))
            return err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%s'[%lld] = %g: frequency factors must be finite and > 0",
                           s->g->path, ROPE_FREQS_NAME, (long long)i, s->rope_freqs[i]);
    return 0;
}

void shard_rope(const shard_t *s, rope_params_t *p) {
    const hparams_t *hp = &s->hp;
    const rope_scaling_t *r = &hp->rope;
    ops_rope_init(p, hp->rot_dim, hp->rope_neox, hp->rope_base);
    ops_rope_yarn(p, r->type == ROPE_SCALING_YARN, r->freq_scale, r->ext_factor, r->attn_factor,
                  r->n_ctx_orig ? r->n_ctx_orig : hp->n_ctx_train, r->beta_fast, r->beta_slow);
    p->freq_factors = s->rope_freqs;
}

static const int g_lin_role[LIN_COUNT] = {TR_ATTN_Q, TR_ATTN_K, TR_ATTN_V, TR_ATTN_OUT,
                                          TR_FFN_GATE, TR_FFN_UP, TR_FFN_DOWN};

/* a 1-D f32 (or f16) vector of length n, copied to an owned f32 array */
static int load_vec(shard_t *s, const char *name, int64_t n, float **out, char *err, size_t errlen) {
    const gguf_t *g = s->g;
    const gguf_tensor_t *t;
    int rc = tensor_get(s, name, &t, err, errlen);
    if (rc < 0) return rc;
    if (!t) return err_set(err, errlen, TERN_ENOTFOUND, "%s: missing tensor '%s'", g->path, name);
    if (t->ne[0] != n || t->ne[1] * t->ne[2] * t->ne[3] != 1)
        return err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld]", g->path,
                       name, (long long)t->ne[0], (long long)t->ne[1], (long long)n);
    if (t->type != TT_F32 && t->type != TT_F16 && t->type != TT_BF16)
        return err_set(err, errlen, TERN_ENOTSUP, "%s: tensor '%s' is %s, expected f32", g->path, name,
                       type_name(t->type));
    float *v = tern_alloc((size_t)n * sizeof(float));
    if (!v) return err_set(err, errlen, TERN_ENOMEM, "out of memory loading '%s'", name);
    dequant_rows(t->type, t->data, 1, n, 0, 1, v);
    *out = v;
    return 0;
}

static int load_mat(shard_t *s, const char *name, int64_t cols, int64_t rows, int flags, mat_t *m,
                    char *err, size_t errlen) {
    const gguf_t *g = s->g;
    const gguf_tensor_t *t;
    int rc = tensor_get(s, name, &t, err, errlen);
    if (rc < 0) return rc;
    if (!t) return err_set(err, errlen, TERN_ENOTFOUND, "%s: missing tensor '%s'", g->path, name);
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] * t->ne[3] != 1)
        return err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]",
                       g->path, name, (long long)t->ne[0], (long long)t->ne[1], (long long)cols, (long long)rows);
    rc = mat_init(m, t->type, rows, cols, t->data, t->nbytes, flags, err, errlen);
    if (rc < 0) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", err ? err : "");
        return err_set(err, errlen, rc, "%s: tensor '%s': %s", g->path, name, tmp);
    }
    return 0;
}

static void fuse(layer_w_t *L, int first, int n, mat_t *out);

static int load_layer(shard_t *s, int il, layer_w_t *L, const shard_opts_t *o, char *err, size_t errlen) {
    const hparams_t *hp = &s->hp;
    char name[128];
    int rc;
    int64_t ne[2];
    float **norms[TR_COUNT] = {0};
    norms[TR_ATTN_NORM] = &L->attn_norm;
    norms[TR_ATTN_SUB_NORM] = &L->attn_sub_norm;
    norms[TR_FFN_NORM] = &L->ffn_norm;
    norms[TR_FFN_SUB_NORM] = &L->ffn_sub_norm;
    for (int r = 0; r < TR_COUNT; r++) {
        if (!norms[r] || !tensor_role_present(hp, r)) continue;
        tensor_block_name(name, sizeof name, il, r);
        tensor_role_shape(hp, r, ne);
        if ((rc = load_vec(s, name, ne[0], norms[r], err, errlen)) < 0) return rc;
    }
    for (int i = 0; i < LIN_COUNT; i++) {
        int r = g_lin_role[i];
        tensor_block_name(name, sizeof name, il, r);
        tensor_role_shape(hp, r, ne);
        if ((rc = load_mat(s, name, ne[0], ne[1], o->mat_flags, &L->lin[i], err, errlen)) < 0) return rc;
        s->weight_bytes += mat_weight_bytes(&L->lin[i]);
        /* optional per-tensor output scale (llama.cpp's bitnet arch) */
        L->lin_scale[i] = 1.0f;
        snprintf(name, sizeof name, "blk.%d.%s.scale", il, tensor_role_name(r));
        const gguf_tensor_t *st;
        if ((rc = tensor_get(s, name, &st, err, errlen)) < 0) return rc;
        if (st) {
            float v;
            if (st->ne[0] != 1 || dequant_rows(st->type, st->data, 1, 1, 0, 1, &v) < 0)
                return err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%s' must be one f32", s->g->path, name);
            L->lin_scale[i] = v;
        }
    }
    fuse(L, LIN_Q, 3, &L->qkv);
    fuse(L, LIN_GATE, 2, &L->gu);
    return 0;
}

/* Fuses lin[first..first+n) into *out when mat_fuse can; the parts then fall back to the file's
 * layout (no second repacked copy stays in memory). */
static void fuse(layer_w_t *L, int first, int n, mat_t *out) {
    const char *off = getenv("TERN_NO_FUSE");   /* A/B benchmarks */
    if (off && *off && strcmp(off, "0")) return;
    for (int i = first; i < first + n; i++)
        if (L->lin_scale[i] != 1.0f) return;
    if (mat_fuse(out, &L->lin[first], n) != 0) return;
    for (int i = first; i < first + n; i++) {
        mat_t *m = &L->lin[i];
        int type = m->type;
        int64_t rows = m->rows, cols = m->cols;
        const void *src = m->src;
        size_t bytes = m->src_bytes;
        mat_free(m);
        if (mat_init(m, type, rows, cols, src, bytes, MAT_NO_REPACK, NULL, 0) != 0) memset(m, 0, sizeof *m);
    }
}

/* lm head: output.weight, or token_embd.weight when tied; optionally converted at load */
static int load_head(shard_t *s, const shard_opts_t *o, char *err, size_t errlen) {
    const hparams_t *hp = &s->hp;
    int rc = load_vec(s, "output_norm.weight", hp->n_embd, &s->out_norm, err, errlen);
    if (rc < 0) return rc;
    const char *hname = hp->tied ? "token_embd.weight" : "output.weight";
    const gguf_tensor_t *t;
    if ((rc = tensor_get(s, hname, &t, err, errlen)) < 0) return rc;
    if (!t) return err_set(err, errlen, TERN_ENOTFOUND, "%s: missing tensor '%s'", s->g->path, hname);
    if (t->ne[0] != hp->n_embd || t->ne[1] != hp->n_vocab || t->ne[2] * t->ne[3] != 1)
        return err_set(err, errlen, TERN_EFORMAT, "%s: lm head '%s' is [%lld, %lld], expected [%d, %d]", s->g->path,
                       hname, (long long)t->ne[0], (long long)t->ne[1], hp->n_embd, hp->n_vocab);
    if (o->head_type < 0 || o->head_type == t->type) {
        /* copied out of the file mapping into huge-page-backed memory (core/alloc.c): the head is
         * streamed whole every token, and through 4 KiB page-cache pages that ran ~8 % slower */
        if (!(s->head_owned = tern_alloc(t->nbytes)))
            return err_set(err, errlen, TERN_ENOMEM, "out of memory for the lm head (%.1f MiB)", (double)t->nbytes / 1048576);
        memcpy(s->head_owned, t->data, t->nbytes);
        char tmp[256];
        if ((rc = mat_init(&s->head, t->type, hp->n_vocab, hp->n_embd, s->head_owned, t->nbytes, o->mat_flags, tmp,
                           sizeof tmp)) < 0)
            return err_set(err, errlen, rc, "%s: tensor '%s': %s", s->g->path, hname, tmp);
        return 0;
    }
    /* convert row chunks: dequantise to f32, quantise to the asked type */
    size_t bytes = type_tensor_bytes(o->head_type, hp->n_embd, hp->n_vocab);
    if (!bytes) return err_set(err, errlen, TERN_ENOTSUP, "cannot convert the lm head to %s", type_name(o->head_type));
    size_t rowb = bytes / (size_t)hp->n_vocab;
    s->head_owned = tern_alloc(bytes);
    float *tmp = tern_alloc((size_t)hp->n_embd * 256 * sizeof(float));
    if (!s->head_owned || !tmp) { tern_free(tmp); return err_set(err, errlen, TERN_ENOMEM, "out of memory converting the lm head"); }
    for (int64_t r = 0; r < hp->n_vocab; r += 256) {
        int64_t nr = hp->n_vocab - r < 256 ? hp->n_vocab - r : 256;
        dequant_rows(t->type, t->data, hp->n_vocab, hp->n_embd, r, nr, tmp);
        quant_from_f32(o->head_type, tmp, nr, hp->n_embd, (uint8_t *)s->head_owned + (size_t)r * rowb);
    }
    tern_free(tmp);
    log_d("lm head converted %s -> %s", type_name(t->type), type_name(o->head_type));
    return mat_init(&s->head, o->head_type, hp->n_vocab, hp->n_embd, s->head_owned, bytes, o->mat_flags, err, errlen);
}

/* The matrices forward reads, into out (room for (last - first + 1) * LIN_COUNT + 1): a fused
 * Q|K|V or gate|up instead of its parts. Returns the count. */
static int used_mats(const shard_t *s, const mat_t **out) {
    int n = 0;
    for (int i = 0; i <= s->last - s->first; i++) {
        const layer_w_t *L = &s->layers[i];
        if (L->qkv.rows) out[n++] = &L->qkv;
        if (L->gu.rows) out[n++] = &L->gu;
        for (int j = 0; j < LIN_COUNT; j++)
            if (!(j <= LIN_V ? L->qkv.rows : (j == LIN_GATE || j == LIN_UP) ? L->gu.rows : 0)) out[n++] = &L->lin[j];
    }
    if (s->has_head) out[n++] = &s->head;
    return n;
}

/* --mlock: exactly what forward reads — owned copies, repacked buffers, and the file's bytes of
 * the matrices used in place */
static int lock_shard(shard_t *s, const mat_t **used, int n_used) {
    const hparams_t *hp = &s->hp;
    memlock_t *ml = &s->lock;
    size_t E = (size_t)hp->n_embd * 4, Q = (size_t)hp->n_head * hp->head_dim * 4, F = (size_t)hp->n_ff * 4;
    int rc = memlock_add(ml, s->rope_freqs, (size_t)(hp->rot_dim / 2) * 4);
    for (int i = 0; rc == 0 && i <= s->last - s->first; i++) {
        const layer_w_t *L = &s->layers[i];
        rc = memlock_add(ml, L->attn_norm, E) | memlock_add(ml, L->attn_sub_norm, Q) | memlock_add(ml, L->ffn_norm, E) |
             memlock_add(ml, L->ffn_sub_norm, F);
    }
    if (rc == 0 && s->has_head) rc = memlock_add(ml, s->out_norm, E);
    for (int i = 0; rc == 0 && i < n_used; i++) {
        const mat_t *m = used[i];
        rc = memlock_add(ml, m->packed, m->packed_bytes);
        if (rc == 0 && m->row_scale) rc = memlock_add(ml, m->row_scale, (size_t)m->rows * sizeof(float));
        if (rc == 0 && mat_reads_src(m)) rc = memlock_add(ml, m->src, m->src_bytes);
    }
    if (rc < 0) return TERN_ENOMEM;
    char who[64], sz[32];
    snprintf(who, sizeof who, "layers [%d, %d]%s", s->first, s->last, s->has_head ? " + head" : "");
    memlock_apply(ml, who);
    log_i("--mlock: locked %s in memory (%s)", memlock_size(sz, sizeof sz, ml->locked), who);
    return 0;
}

/* --no-mmap: gives back the bytes read for the load only (norms, scales and the lm head were
 * copied; repacked matrices keep their own copy), so the shard holds about what a mapped load
 * keeps resident, not twice that */
static void drop_unused(shard_t *s, const mat_t **used, int n_used) {
    const gguf_t *g = s->g;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if (!s->held[i]) continue;
        int keep = 0;
        for (int k = 0; k < n_used && !keep; k++) keep = mat_reads_src(used[k]) && used[k]->src == g->tensors[i].data;
        if (keep) continue;
        gguf_tensor_release(g, &g->tensors[i]);
        s->held[i] = 0;
    }
}

/* after the tensors are in: --no-mmap's unused bytes go back, then --mlock */
static int shard_settle(shard_t *s, const shard_opts_t *o) {
    if (gguf_mapped(s->g) && !o->mlock) return 0;
    const mat_t **used = malloc(((size_t)(s->last - s->first + 1) * LIN_COUNT + 1) * sizeof *used);
    if (!used) return TERN_ENOMEM;
    int n = used_mats(s, used), rc = 0;
    if (!gguf_mapped(s->g)) drop_unused(s, used, n);
    if (o->mlock) rc = lock_shard(s, used, n);
    free(used);
    return rc;
}

int shard_load(shard_t *s, const gguf_t *g, int first, int last, int has_head, const shard_opts_t *o, char *err,
               size_t errlen) {
    shard_opts_t def;
    if (!o) { shard_opts_default(&def); o = &def; }
    memset(s, 0, sizeof *s);
    s->g = g;
    int rc = hparams_from_gguf(&s->hp, g, err, errlen);
    if (rc < 0) return rc;
    if (o->rope_set) {
        s->hp.rope_base = o->rope_base;
        s->hp.rope = o->rope;
        if ((rc = rope_scaling_check(&s->hp, err, errlen)) < 0) return rc;
    }
    if (first < 0 || last >= s->hp.n_layer || (first > last && !(first == last + 1)))
        return err_set(err, errlen, TERN_EINVAL, "layer range [%d, %d] is outside the model's %d layers", first, last,
                       s->hp.n_layer);
    s->first = first;
    s->last = last;
    s->has_head = has_head;
    int n = last - first + 1;
    s->layers = calloc(n > 0 ? (size_t)n : 1, sizeof(layer_w_t));
    s->held = calloc((size_t)(g->n_tensors ? g->n_tensors : 1), 1);
    if (!s->layers || !s->held) { rc = err_set(err, errlen, TERN_ENOMEM, "out of memory"); goto fail; }
    if (!gguf_mapped(g) && (rc = prefetch(s, err, errlen)) < 0) goto fail;
    if ((rc = load_rope_freqs(s, err, errlen)) < 0) goto fail;
    for (int i = 0; i < n; i++)
        if ((rc = load_layer(s, first + i, &s->layers[i], o, err, errlen)) < 0) goto fail;
    if (has_head) {
        if ((rc = load_head(s, o, err, errlen)) < 0) goto fail;
        s->weight_bytes += mat_weight_bytes(&s->head);
    }
    if ((rc = shard_settle(s, o)) < 0) {
        err_set(err, errlen, rc, "out of memory");
        goto fail;
    }
    return 0;
fail:
    shard_free(s);
    return rc;
}

void shard_free(shard_t *s) {
    if (s->layers) {
        for (int i = 0; i <= s->last - s->first; i++) {
            layer_w_t *L = &s->layers[i];
            tern_free(L->attn_norm);
            tern_free(L->attn_sub_norm);
            tern_free(L->ffn_norm);
            tern_free(L->ffn_sub_norm);
            for (int j = 0; j < LIN_COUNT; j++) mat_free(&L->lin[j]);
            mat_free(&L->qkv);
            mat_free(&L->gu);
        }
        free(s->layers);
    }
    tern_free(s->out_norm);
    tern_free(s->rope_freqs);
    if (s->has_head) mat_free(&s->head);
    tern_free(s->head_owned);
    memlock_free(&s->lock);
    if (s->held)   /* the bytes read for this shard (--no-mmap) go back */
        for (uint64_t i = 0; i < s->g->n_tensors; i++)
            if (s->held[i]) gguf_tensor_release(s->g, &s->g->tensors[i]);
    free(s->held);
    memset(s, 0, sizeof *s);
}
