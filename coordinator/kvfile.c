/* kvfile: see kvfile.h. A file is read whole and checked before anything points into it; writes
 * go through a temporary file renamed into place. */
#include "coordinator/kvfile.h"
#include "core/err.h"
#include "core/hash.h"
#include "kernels/ops.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define KVFILE_HEAD1 (8 + 4 + 8 + MODEL_ID_HASH_LEN + 5 * 4 + 8 + 4)   /* up to the tokens, version 1 */
#define KVFILE_HEAD (KVFILE_HEAD1 + KVFILE_ROPE_BYTES)                      /* and this version */

/* the checksum: FNV-1a over 8-byte little-endian words (a byte-wise one is slow on gigabytes) of
 * the header, its tail byte-wise, then the same over the rows, finished with fmix64 */
static uint64_t fnvw(uint64_t h, const uint8_t *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = 0;
        for (int b = 0; b < 8; b++) w |= (uint64_t)p[i + b] << (8 * b);
        h = (h ^ w) * 1099511628211ull;
    }
    return hash_fnv1a(h, p + i, n - i);
}

static uint64_t sum64(const uint8_t *head, size_t hn, const uint8_t *kv, size_t kn) {
    return hash_mix64(fnvw(fnvw(HASH_FNV_OFFSET, head, hn), kv, kn));
}

static void put32(uint8_t **p, uint32_t v) {
    for (int i = 0; i < 4; i++) *(*p)++ = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t **p, uint64_t v) {
    for (int i = 0; i < 8; i++) *(*p)++ = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t **p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)(*p)[i] << (8 * i);
    *p += 4;
    return v;
}
static uint64_t get64(const uint8_t **p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)(*p)[i] << (8 * i);
    *p += 8;
    return v;
}
static uint32_t fbits(float f) {
    uint32_t v;
    memcpy(&v, &f, 4);
    return v;
}
static float getf(const uint8_t **p) {
    uint32_t v = get32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

int kvfile_model_init(kvfile_model_t *m, const char *path, const hparams_t *hp, int kv_type, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    int rc = model_id_compute(path, &m->size, m->hash, err, errlen);
    if (rc < 0) return rc;
    m->n_layer = hp->n_layer, m->n_embd = hp->n_embd, m->n_vocab = hp->n_vocab;
    m->kv_dim = hp->n_head_kv * hp->head_dim;
    m->kv_type = kv_type;
    m->row = ops_kv_bytes(kv_type, m->kv_dim);
    kvfile_model_rope(m, hp, NULL, 0, 0);
    return m->row ? 0 : err_set(err, errlen, TERN_EINVAL, "unknown KV cache type %d", kv_type);
}

void kvfile_model_rope(kvfile_model_t *m, const hparams_t *hp, const void *freqs, size_t n, int flagged) {
    const rope_scaling_t *r = &hp->rope;
    kvfile_rope_t *k = &m->rope;
    memset(k, 0, sizeof *k);
    k->type = r->type;
    k->freq_base = hp->rope_base;
    k->freq_scale = r->freq_scale;
    k->attn_factor = r->attn_factor;
    /* ext_factor < 0: ops_rope_yarn's default */
    k->ext_factor = r->ext_factor < 0 ? (r->type == ROPE_SCALING_YARN ? 1.0f : 0.0f) : r->ext_factor;
    if (k->ext_factor == 0) {
        k->ext_factor = 0;   /* not -0: the record compares bits */
    } else {
        k->n_ctx_orig = r->n_ctx_orig ? r->n_ctx_orig : hp->n_ctx_train;   /* as shard_rope */
        k->beta_fast = r->beta_fast, k->beta_slow = r->beta_slow;
    }
    if (freqs) {
        uint64_t h = hash_mix64(hash_fnv1a(HASH_FNV_OFFSET, freqs, n));
        k->freqs_hash = h ? h : 1;
    }
    m->rope_plain = !flagged && !freqs && k->type == ROPE_SCALING_NONE && k->freq_scale == 1.0f &&
                    k->attn_factor == 1.0f && k->ext_factor == 0;
}

size_t kvfile_kv_bytes(const kvfile_model_t *m, int n_tok) {
    return (size_t)m->n_layer * 2 * (size_t)n_tok * m->row;
}

/* the file's bytes before the rows, in buf (room for KVFILE_HEAD + 4 n + 8); returns its size */
static size_t header(uint8_t *buf, const kvfile_model_t *m, const int32_t *toks, int n) {
    uint8_t *p = buf;
    memcpy(p, KVFILE_MAGIC, 8), p += 8;
    put32(&p, KVFILE_VERSION);
    put64(&p, m->size);
    memset(p, 0, MODEL_ID_HASH_LEN);
    memcpy(p, m->hash, strnlen(m->hash, MODEL_ID_HASH_LEN - 1)), p += MODEL_ID_HASH_LEN;
    put32(&p, (uint32_t)m->n_layer), put32(&p, (uint32_t)m->n_embd), put32(&p, (uint32_t)m->n_vocab);
    put32(&p, (uint32_t)m->kv_dim), put32(&p, (uint32_t)m->kv_type);
    put64(&p, m->row);
    const kvfile_rope_t *r = &m->rope;
    put32(&p, (uint32_t)r->type), put32(&p, fbits(r->freq_base)), put32(&p, fbits(r->freq_scale));
    put32(&p, (uint32_t)r->n_ctx_orig), put32(&p, fbits(r->ext_factor)), put32(&p, fbits(r->attn_factor));
    put32(&p, fbits(r->beta_fast)), put32(&p, fbits(r->beta_slow));
    put64(&p, r->freqs_hash);
    put32(&p, (uint32_t)n);
    for (int i = 0; i < n; i++) put32(&p, (uint32_t)toks[i]);
    put64(&p, kvfile_kv_bytes(m, n));
    return (size_t)(p - buf);
}

int kvfile_save(const char *path, const kvfile_model_t *m, const int32_t *toks, int n, const uint8_t *kv,
                uint64_t *written, char *err, size_t errlen) {
    if (n < 1 || n > KVFILE_MAX_TOKENS) return err_set(err, errlen, TERN_EINVAL, "%s: %d tokens to save", path, n);
    uint8_t *head = malloc(KVFILE_HEAD + 4 * (size_t)n + 8);
    char tmp[4200];
    if (!head) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        free(head);
        return err_set(err, errlen, TERN_EINVAL, "%s: path too long", path);
    }
    size_t hn = header(head, m, toks, n), kn = kvfile_kv_bytes(m, n);
    uint8_t tail[8], *tp = tail;
    put64(&tp, sum64(head, hn, kv, kn));
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(head, 1, hn, f) == hn && fwrite(kv, 1, kn, f) == kn && fwrite(tail, 1, 8, f) == 8;
    ok = f && fclose(f) == 0 && ok;
    free(head);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        return err_set(err, errlen, TERN_EIO, "cannot write %s: %s", path, strerror(e));
    }
    if (written) *written = hn + kn + 8;
    return 0;
}

void kvfile_free(kvfile_t *f) {
    if (!f) return;
    free(f->toks);
    free(f->data);
    memset(f, 0, sizeof *f);
}

/* the RoPE record at *p (KVFILE_ROPE_BYTES there): a known type, finite values; 0 or TERN_EFORMAT */
static int get_rope(kvfile_rope_t *r, const uint8_t **p, char *err, size_t errlen) {
    r->type = (int)get32(p);
    r->freq_base = getf(p), r->freq_scale = getf(p);
    uint32_t n_ctx_orig = get32(p);
    r->ext_factor = getf(p), r->attn_factor = getf(p), r->beta_fast = getf(p), r->beta_slow = getf(p);
    r->freqs_hash = get64(p);
    const float v[] = {r->freq_base, r->freq_scale, r->ext_factor, r->attn_factor, r->beta_fast, r->beta_slow};
    int finite = 1;
    for (int i = 0; i < 6; i++) finite &= isfinite(v[i]) != 0;
    if ((uint32_t)r->type > ROPE_SCALING_YARN || n_ctx_orig > (1u << 24) || !finite)
        return err_set(err, errlen, TERN_EFORMAT, "bad RoPE record: scaling type %u, freq_base %g, freq_scale %g, "
                       "original context %u, ext_factor %g, attn_factor %g", (unsigned)r->type, r->freq_base,
                       r->freq_scale, n_ctx_orig, r->ext_factor, r->attn_factor);
    r->n_ctx_orig = (int)n_ctx_orig;
    return 0;
}

int kvfile_parse(kvfile_t *f, uint8_t *buf, size_t len, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    f->data = buf, f->len = len;
    const uint8_t *p = buf, *end = buf + len;
    int rc = TERN_EFORMAT;
    if (len < KVFILE_HEAD1 || memcmp(p, KVFILE_MAGIC, 8)) {
        err_set(err, errlen, rc, "not a tern KV cache file (bad magic or too short: %zu bytes)", len);
        goto fail;
    }
    p += 8;
    uint32_t ver = get32(&p);
    if (ver != KVFILE_VERSION && ver != 1) {
        err_set(err, errlen, rc, "KV cache file version %u, this tern reads 1 to %d", ver, KVFILE_VERSION);
        goto fail;
    }
    if (ver > 1 && len < KVFILE_HEAD) {
        err_set(err, errlen, rc, "too short for a version %u header: %zu bytes", ver, len);
        goto fail;
    }
    kvfile_model_t *m = &f->m;
    m->size = get64(&p);
    memcpy(m->hash, p, MODEL_ID_HASH_LEN), p += MODEL_ID_HASH_LEN;
    m->hash[MODEL_ID_HASH_LEN - 1] = 0;
    uint32_t nl = get32(&p), ne = get32(&p), nv = get32(&p), kd = get32(&p), kt = get32(&p);
    uint64_t row = get64(&p);
    if (!nl || nl > 65536 || !ne || ne > (1u << 20) || !nv || nv > (1u << 24) || !kd || kd > (1u << 20) ||
        !ops_kv_name((int)kt) || kt > 16 || (kt == KV_Q8_0 && kd % KV_Q8_0_BLOCK) || row != ops_kv_bytes((int)kt, kd)) {
        err_set(err, errlen, rc, "bad shapes: %u layers, n_embd %u, vocabulary %u, kv_dim %u, kv type %u, %llu-byte rows",
                nl, ne, nv, kd, kt, (unsigned long long)row);
        goto fail;
    }
    m->n_layer = (int)nl, m->n_embd = (int)ne, m->n_vocab = (int)nv, m->kv_dim = (int)kd, m->kv_type = (int)kt;
    m->row = (size_t)row;
    if (ver == 1) m->rope_old = 1;
    else if ((rc = get_rope(&m->rope, &p, err, errlen)) < 0) goto fail;
    rc = TERN_EFORMAT;
    uint32_t nt = get32(&p);
    if (!nt || nt > KVFILE_MAX_TOKENS || (size_t)(end - p) < 4 * (size_t)nt + 8) {
        err_set(err, errlen, rc, "%u tokens in a %zu-byte file (truncated?)", nt, len);
        goto fail;
    }
    f->n_tok = (int)nt;
    if (!(f->toks = malloc(4 * (size_t)nt))) { rc = err_set(err, errlen, TERN_ENOMEM, "out of memory"); goto fail; }
    for (uint32_t i = 0; i < nt; i++) f->toks[i] = (int32_t)get32(&p);
    uint64_t kb = get64(&p), want = (uint64_t)nl * 2 * nt * row;   /* < 2^16 * 2 * 2^24 * 2^22: no overflow */
    if (kb != want || (uint64_t)(end - p) != kb + 8) {
        err_set(err, errlen, rc, "%llu bytes of KV rows declared, %llu expected, %zu left in the file (truncated?)",
                (unsigned long long)kb, (unsigned long long)want, (size_t)(end - p));
        goto fail;
    }
    f->kv = (uint8_t *)p;
    p += kb;
    uint64_t sum = get64(&p);
    if (sum != sum64(buf, (size_t)(f->kv - buf), f->kv, (size_t)kb)) {
        err_set(err, errlen, rc, "checksum mismatch (the file is corrupt)");
        goto fail;
    }
    return 0;
fail:
    kvfile_free(f);
    return rc;
}

int kvfile_load(kvfile_t *f, const char *path, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    FILE *fp = fopen(path, "rb");
    if (!fp) return err_set(err, errlen, errno == ENOENT ? TERN_ENOTFOUND : TERN_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return err_set(err, errlen, TERN_EIO, "%s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        fclose(fp);
        return err_set(err, errlen, TERN_ENOMEM, "%s: out of memory for %zu bytes", path, len);
    }
    size_t got = fread(buf, 1, len, fp);
    fclose(fp);
    if (got != len) {
        free(buf);
        return err_set(err, errlen, TERN_EIO, "%s: read %zu of %zu bytes", path, got, len);
    }
    char why[256];
    int rc = kvfile_parse(f, buf, len, why, sizeof why);
    if (rc < 0) return err_set(err, errlen, rc, "%s: %s", path, why);
    return 0;
}

/* the rows in another cache type: each row through f32 (ops_kv_get, ops_kv_put) */
static int convert(kvfile_t *f, int kv_type, size_t row, char *err, size_t errlen) {
    size_t rows = (size_t)f->m.n_layer * 2 * (size_t)f->n_tok;
    uint8_t *out = malloc(rows * row + 1);
    float *x = malloc((size_t)f->m.kv_dim * sizeof(float));
    if (!out || !x) {
        free(out), free(x);
        return err_set(err, errlen, TERN_ENOMEM, "out of memory converting the KV rows");
    }
    for (size_t r = 0; r < rows; r++) {
        ops_kv_get(x, f->kv + r * f->m.row, f->m.kv_type, f->m.kv_dim);
        ops_kv_put(out + r * row, kv_type, x, f->m.kv_dim);
    }
    free(x);
    free(f->data);
    f->data = f->kv = out;
    f->len = rows * row;
    f->m.kv_type = kv_type, f->m.row = row;
    return 0;
}

/* file m's RoPE record against want's: the first field that differs, named with both values */
static int rope_check(const kvfile_model_t *m, const kvfile_model_t *want, char *err, size_t errlen) {
    if (m->rope_old)
        return want->rope_plain ? 0
                                : err_set(err, errlen, TERN_EINVAL, "the file predates the RoPE record (KV cache file "
                                          "version 1, plain RoPE) and this model runs scaled or overridden RoPE "
                                          "(--rope-* / --yarn-* or the model's keys): save it again");
    const kvfile_rope_t *a = &m->rope, *b = &want->rope;
    const char *hint = "(its keys are rotated: restore under the --rope-* / --yarn-* flags it was saved with)";
    if (a->type != b->type)
        return err_set(err, errlen, TERN_EINVAL, "saved with RoPE scaling %s, this model runs %s %s",
                       rope_scaling_name(a->type), rope_scaling_name(b->type), hint);
    const struct { const char *name; float x, y; } fl[] = {
        {"freq_base", a->freq_base, b->freq_base},     {"freq_scale", a->freq_scale, b->freq_scale},
        {"ext_factor", a->ext_factor, b->ext_factor},  {"attn_factor", a->attn_factor, b->attn_factor},
        {"beta_fast", a->beta_fast, b->beta_fast},     {"beta_slow", a->beta_slow, b->beta_slow},
    };
    for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++)
        if (fbits(fl[i].x) != fbits(fl[i].y))
            return err_set(err, errlen, TERN_EINVAL, "saved with RoPE %s %.9g, this model runs %.9g %s", fl[i].name,
                           fl[i].x, fl[i].y, hint);
    if (a->n_ctx_orig != b->n_ctx_orig)
        return err_set(err, errlen, TERN_EINVAL, "saved with RoPE original context (yarn) %d, this model runs %d %s",
                       a->n_ctx_orig, b->n_ctx_orig, hint);
    if (a->freqs_hash != b->freqs_hash) {
        char x[32] = "none", y[32] = "none";
        if (a->freqs_hash) snprintf(x, sizeof x, "%016llx", (unsigned long long)a->freqs_hash);
        if (b->freqs_hash) snprintf(y, sizeof y, "%016llx", (unsigned long long)b->freqs_hash);
        return err_set(err, errlen, TERN_EINVAL, "saved with RoPE frequency factors (%s) %s, this model has %s",
                       ROPE_FREQS_NAME, x, y);
    }
    return 0;
}

int kvfile_check(kvfile_t *f, const kvfile_model_t *want, int n_ctx, char *err, size_t errlen) {
    const kvfile_model_t *m = &f->m;
    int rc;
    if (m->size != want->size || strcmp(m->hash, want->hash))
        return err_set(err, errlen, TERN_EINVAL, "saved with another model file (%llu bytes, %s; this one: %llu bytes, %s)",
                       (unsigned long long)m->size, m->hash, (unsigned long long)want->size, want->hash);
    if (m->n_layer != want->n_layer || m->n_embd != want->n_embd || m->n_vocab != want->n_vocab ||
        m->kv_dim != want->kv_dim)
        return err_set(err, errlen, TERN_EINVAL, "shapes differ from the model's (%d layers, n_embd %d, kv_dim %d)",
                       m->n_layer, m->n_embd, m->kv_dim);
    if ((rc = rope_check(m, want, err, errlen)) < 0) return rc;
    if (f->n_tok > n_ctx)
        return err_set(err, errlen, TERN_EINVAL, "%d tokens do not fit a context of %d (raise -c)", f->n_tok, n_ctx);
    for (int i = 0; i < f->n_tok; i++)
        if (f->toks[i] < 0 || f->toks[i] >= want->n_vocab)
            return err_set(err, errlen, TERN_EINVAL, "token %d at position %d is outside the vocabulary", f->toks[i], i);
    if (m->kv_type == want->kv_type) return 0;
    if (want->kv_type == KV_Q8_0 && want->kv_dim % KV_Q8_0_BLOCK)
        return err_set(err, errlen, TERN_EINVAL, "cannot convert KV rows to q8_0 (kv_dim %d)", want->kv_dim);
    return convert(f, want->kv_type, want->row, err, errlen);
}
