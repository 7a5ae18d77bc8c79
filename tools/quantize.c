/* quantize: `tern quantize IN.gguf OUT.gguf TYPE [--head T] [--embd T]` — rewrites the ternary
 * linears of a GGUF as i2_s, tq2_0, tq1_0 or f16, and optionally the lm head and the token
 * embeddings (f16, q8_0, f32, bf16, or llama.cpp's q6_k, q5_k, q4_k, q5_0, q4_0). Between ternary
 * types the trits are carried over exactly (one scale per tensor; TQ files whose blocks carry
 * different scales are re-quantised by absmean over the dequantised values). All metadata is
 * copied. Streams in row chunks. Not here: HF checkpoints (tools/convert.c). */
#include "core/err.h"
#include "core/gguf.h"
#include "core/half.h"
#include "core/log.h"
#include "core/model_spec.h"
#include "core/opt.h"
#include "core/progress.h"
#include "core/types.h"
#include "kernels/fmat.h"
#include "kernels/quant.h"
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QZ_CHUNK (1 << 20)

typedef struct qz {
    gguf_t *g;
    gguf_writer_t *w;
    int type, head_type;     /* head_type < 0: keep the head */
    int embd_type;           /* < 0: keep token_embd (a tied head follows it) */
    int add_head;            /* tied input + --head: write output.weight from token_embd */
    int *dst;                /* per input tensor: output type */
    progress_t prog;
    float *f;
    int8_t *trits;
    uint8_t *bytes;
    size_t cap;
} qz_t;

static int64_t rows_of(const gguf_tensor_t *t) { return t->ne[1] * t->ne[2] * t->ne[3]; }

/* blk.N.<ternary role>.weight */
static int is_linear(const char *name) {
    int l, n = 0;
    char role[32];
    if (sscanf(name, "blk.%d.%31[a-z_].weight%n", &l, role, &n) != 2 || name[n]) return 0;
    for (int r = 0; r < TR_COUNT; r++)
        if (tensor_role_ternary(r) && !strcmp(role, tensor_role_name(r))) return 1;
    return 0;
}

/* llama.cpp's general.file_type numbers (bitnet.cpp's for I2_S) */
static int ftype_of(int type) {
    switch (type) {
    case TT_F16: return 1;
    case TT_TQ1_0: return 36;
    case TT_TQ2_0: return 37;
    case TT_I2_S: return 40;
    default: return -1;
    }
}

static int qz_emit(qz_t *q, const void *p, size_t n, char *err, size_t errlen) {
    int rc = gguf_writer_write(q->w, p, n, err, errlen);
    if (rc == 0) progress_add(&q->prog, n);
    return rc;
}

/* the one scale of a ternary tensor, or 0 when its TQ blocks disagree */
static float uniform_scale(const gguf_tensor_t *t) {
    int64_t rows = rows_of(t), cols = t->ne[0];
    if (t->type == TT_I2_S) {
        float s;
        memcpy(&s, (const uint8_t *)t->data + rows * cols / 4, 4);
        return s;
    }
    size_t bb = t->type == TT_TQ2_0 ? 66 : 54;
    int64_t nb = rows * cols / QK_K;
    uint16_t d0, d;
    memcpy(&d0, (const uint8_t *)t->data + bb - 2, 2);
    for (int64_t b = 1; b < nb; b++) {
        memcpy(&d, (const uint8_t *)t->data + (size_t)b * bb + bb - 2, 2);
        if (d != d0) return 0.0f;
    }
    return f16_to_f32(d0);
}

/* packs trits (nr, cols) of a tensor with `scale` as dst and writes them */
static int put_trits(qz_t *q, int dst, int64_t nr, int64_t cols, float scale, char *err, size_t errlen) {
    size_t nb;
    if (dst == TT_F16) {
        uint16_t *h = (uint16_t *)q->bytes;
        for (int64_t i = 0; i < nr * cols; i++) h[i] = f32_to_f16((float)q->trits[i] * scale);
        nb = (size_t)(nr * cols) * 2;
    } else {
        quant_pack_trits(dst, q->trits, nr, cols, scale, q->bytes);
        nb = dst == TT_I2_S ? (size_t)(nr * cols / 4) : type_tensor_bytes(dst, cols, nr);
    }
    return qz_emit(q, q->bytes, nb, err, errlen);
}

static int put_tail(qz_t *q, int dst, float scale, char *err, size_t errlen) {
    if (dst != TT_I2_S) return 0;
    uint8_t tail[I2_S_TAIL];
    quant_i2s_tail(tail, scale);
    return qz_emit(q, tail, sizeof tail, err, errlen);
}

/* ternary → ternary with one scale: trits copied exactly */
static int conv_trits(qz_t *q, const gguf_tensor_t *t, int dst, float scale, char *err, size_t errlen) {
    int64_t rows = rows_of(t), cols = t->ne[0], chunk = (int64_t)q->cap / cols;
    for (int64_t r = 0; r < rows; r += chunk) {
        int64_t nr = rows - r < chunk ? rows - r : chunk;
        quant_unpack_trits(t->type, t->data, rows, cols, r, nr, q->trits, NULL);
        int rc = put_trits(q, dst, nr, cols, scale, err, errlen);
        if (rc < 0) return rc;
    }
    return put_tail(q, dst, scale, err, errlen);
}

/* any type → ternary by absmean over the dequantised values (quant_from_f32's rule); values that
 * are already ternary (0 and ±s only, e.g. an f16 file tern wrote) keep s, so f16 → i2_s is exact */
static int conv_absmean(qz_t *q, const gguf_tensor_t *t, int dst, char *err, size_t errlen) {
    int64_t rows = rows_of(t), cols = t->ne[0], chunk = (int64_t)q->cap / cols;
    double acc = 0.0;
    float s1 = 0.0f;
    int ternary = 1;
    for (int64_t r = 0; r < rows; r += chunk) {
        int64_t nr = rows - r < chunk ? rows - r : chunk;
        dequant_rows(t->type, t->data, rows, cols, r, nr, q->f);
        for (int64_t i = 0; i < nr * cols; i++) {
            float a = fabsf(q->f[i]);
            acc += (double)a;
            if (a != 0.0f && s1 == 0.0f) s1 = a;
            ternary &= a == 0.0f || a == s1;
        }
    }
    float scale = ternary && s1 > 0.0f ? s1 : (float)(acc / (double)(rows * cols));
    for (int64_t r = 0; r < rows; r += chunk) {
        int64_t nr = rows - r < chunk ? rows - r : chunk;
        dequant_rows(t->type, t->data, rows, cols, r, nr, q->f);
        for (int64_t i = 0; i < nr * cols; i++) {
            float v = scale > 0.0f ? roundf(q->f[i] / scale) : 0.0f;
            q->trits[i] = (int8_t)(v > 1.0f ? 1 : v < -1.0f ? -1 : v);
        }
        int rc = put_trits(q, dst, nr, cols, scale, err, errlen);
        if (rc < 0) return rc;
    }
    return put_tail(q, dst, scale, err, errlen);
}

/* any type → a row-wise float or block type (F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K) */
static int conv_float(qz_t *q, const gguf_tensor_t *t, int dst, char *err, size_t errlen) {
    int64_t rows = rows_of(t), cols = t->ne[0], chunk = (int64_t)q->cap / cols;
    for (int64_t r = 0; r < rows; r += chunk) {
        int64_t nr = rows - r < chunk ? rows - r : chunk;
        dequant_rows(t->type, t->data, rows, cols, r, nr, q->f);
        quant_from_f32(dst, q->f, nr, cols, q->bytes);
        int rc = qz_emit(q, q->bytes, type_tensor_bytes(dst, cols, nr), err, errlen);
        if (rc < 0) return rc;
    }
    return 0;
}

static int conv_tensor(qz_t *q, const gguf_tensor_t *t, int dst, char *err, size_t errlen) {
    int st = type_traits(t->type)->ternary, dt = type_traits(dst)->ternary;
    if (dst == t->type) return qz_emit(q, t->data, t->nbytes, err, errlen);
    if (st && (dt || dst == TT_F16)) {
        float s = uniform_scale(t);
        if (t->type == TT_I2_S || s != 0.0f) return conv_trits(q, t, dst, s, err, errlen);
        log_d("quantize: %s: TQ blocks have different scales; %s", t->name, dt ? "re-quantising by absmean" : "dequantising");
    }
    return dt ? conv_absmean(q, t, dst, err, errlen) : conv_float(q, t, dst, err, errlen);
}

/* ---- plan and run ------------------------------------------------------------------- */

static int check_fits(const char *name, int type, int64_t cols, char *err, size_t errlen) {
    const type_traits_t *tt = type_traits(type);
    if (cols % tt->blck)
        return err_set(err, errlen, TERN_EINVAL, "%s: %s needs rows that are a multiple of %d elements, this one has %"
                       PRId64, name, tt->name, tt->blck, cols);
    return 0;
}

static int qz_plan(qz_t *q, uint64_t *total, char *err, size_t errlen) {
    const gguf_t *g = q->g;
    int64_t widest = 1;
    *total = 0;
    q->dst = calloc(g->n_tensors + 1, sizeof *q->dst);
    if (!q->dst) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    q->add_head = q->head_type >= 0 && !gguf_find_tensor(g, "output.weight");
    const gguf_tensor_t *emb = gguf_find_tensor(g, "token_embd.weight");
    if (q->add_head && !emb) return err_set(err, errlen, TERN_ENOTFOUND, "%s: no output.weight or token_embd.weight", g->path);
    for (uint64_t i = 0; i <= g->n_tensors; i++) {
        const gguf_tensor_t *t = i < g->n_tensors ? &g->tensors[i] : q->add_head ? emb : NULL;
        if (!t) break;
        const char *name = i < g->n_tensors ? t->name : "output.weight";
        int dst = t->type;
        if (is_linear(name)) dst = q->type;
        else if (!strcmp(name, "output.weight") && q->head_type >= 0) dst = q->head_type;
        else if (!strcmp(name, "token_embd.weight") && q->embd_type >= 0) dst = q->embd_type;
        int rc = dst != t->type ? check_fits(name, dst, t->ne[0], err, errlen) : 0;
        if (rc < 0) return rc;
        q->dst[i] = dst;
        if (gguf_writer_add_tensor(q->w, name, dst, t->ndim, t->ne) < 0)
            return err_set(err, errlen, TERN_EINVAL, "%s: cannot add tensor", name);
        *total += type_tensor_bytes(dst, t->ne[0], rows_of(t));
        if (t->ne[0] > widest) widest = t->ne[0];
    }
    q->cap = QZ_CHUNK > widest ? QZ_CHUNK : (size_t)widest;
    q->f = malloc(q->cap * sizeof(float));
    q->trits = malloc(q->cap);
    q->bytes = malloc(q->cap * sizeof(float));
    if (!q->f || !q->trits || !q->bytes) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    return 0;
}

/* --head / --embd TYPE: a type fmat computes with; -1 and a reason when not */
static int dense_type(const char *flag, const char *name, char *err, size_t errlen) {
    int t = type_from_name(name);
    if (t < 0 || !fmat_supported(t))
        return err_set(err, errlen, TERN_EINVAL, "%s: '%s' is not f16, q8_0, f32, bf16, q6_k, q5_k, q4_k, q5_0 or q4_0",
                       flag, name);
    return t;
}

static int qz_run(const char *in, const char *out, const char *type, const char *head, const char *embd, char *err,
                  size_t errlen) {
    qz_t q = {.head_type = -1, .embd_type = -1};
    uint64_t total;
    int rc;
    q.type = type_from_name(type);
    if (q.type < 0 || (q.type != TT_F16 && !type_traits(q.type)->ternary))
        return err_set(err, errlen, TERN_EINVAL, "TYPE '%s' is not i2_s, tq2_0, tq1_0 or f16", type);
    if (head && (q.head_type = dense_type("--head", head, err, errlen)) < 0) return q.head_type;
    if (embd && (q.embd_type = dense_type("--embd", embd, err, errlen)) < 0) return q.embd_type;
    if ((rc = gguf_open(&q.g, in, err, errlen)) < 0) return rc;
    if (!(q.w = gguf_writer_new())) { rc = err_set(err, errlen, TERN_ENOMEM, "out of memory"); goto done; }
    gguf_writer_copy_kv(q.w, q.g, NULL);
    if (gguf_find(q.g, "general.file_type") && ftype_of(q.type) >= 0)
        gguf_writer_set_u32(q.w, "general.file_type", (uint32_t)ftype_of(q.type));
    if ((rc = qz_plan(&q, &total, err, errlen)) < 0) goto done;
    if ((rc = gguf_writer_begin(q.w, out, err, errlen)) < 0) goto done;
    progress_init(&q.prog, "quantizing", total);
    for (uint64_t i = 0; i < q.g->n_tensors && rc == 0; i++)
        rc = conv_tensor(&q, &q.g->tensors[i], q.dst[i], err, errlen);
    if (rc == 0 && q.add_head) rc = conv_tensor(&q, gguf_find_tensor(q.g, "token_embd.weight"), q.dst[q.g->n_tensors], err, errlen);
    if (rc == 0) rc = gguf_writer_finish(q.w, err, errlen);
    if (rc == 0) {
        progress_done(&q.prog);
        log_i("quantize: %s → %s: linears %s%s%s%s%s", in, out, type_name(q.type), head ? ", head " : "",
              head ? head : "", embd ? ", embeddings " : "", embd ? embd : "");
    }
done:
    gguf_writer_destroy(&q.w);
    gguf_close(&q.g);
    free(q.dst);
    free(q.f);
    free(q.trits);
    free(q.bytes);
    return rc;
}

int quantize_main(int argc, char **argv) {
    log_set_role("T");
    const char *head = NULL, *embd = NULL;
    opt_t opts[] = {
        {NULL, "--head", OPT_STR, &head, "TYPE", "also convert the lm head: f16 | q8_0 | f32 | bf16 | q6_k | q5_k | q4_k "
                                                 "| q5_0 | q4_0 (a tied head is written as output.weight; token_embd "
                                                 "stays)", 0, 0},
        {NULL, "--embd", OPT_STR, &embd, "TYPE", "also convert token_embd (a tied head with it): the types of --head",
         0, 0},
        OPT_END,
    };
    char err[1024], *pos[3];
    int npos = 0, rc = opt_parse(opts, argc, argv, pos, 3, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern quantize IN.gguf OUT.gguf TYPE [--head T] [--embd T]   (TYPE: i2_s | tq2_0 | tq1_0 | f16)",
                 opts);
        return 0;
    }
    if (rc == 0 && npos != 3) rc = err_set(err, sizeof err, TERN_EINVAL, "expected IN.gguf OUT.gguf TYPE (see --help)");
    if (rc == 0) rc = qz_run(pos[0], pos[1], pos[2], head, embd, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "tern quantize: %s\n", err);
        return 1;
    }
    return 0;
}
