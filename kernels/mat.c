/* mat: a weight matrix ready for y = W·x. mat_init validates the stored tensor, picks a layout
 * (the file's own, or tern's TL layout made at load) and an ISA variant once; mat_mul quantises
 * activations per token, runs the integer kernel over rows split across threads, and applies
 * the scales in one fixed order (here, compiled once), so y is bit-identical for every ISA and
 * thread count. Not here: kernels themselves (ternary.h) and float types (fmat.c). */
#include "kernels/mat.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/half.h"
#include "core/types.h"
#include "kernels/dispatch.h"
#include "kernels/fmat.h"
#include "kernels/quant.h"
#include "kernels/ternary.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* layout families; m->kernel = fam * ISA_COUNT + isa */
enum { FAM_FLOAT, FAM_I2S, FAM_TQ2, FAM_TQ1, FAM_TL, FAM_COUNT };

static const char *g_fam_names[FAM_COUNT] = {"fmat", "i2_s", "tq2_0", "tq1_0", "tern-tl4"};

static tdot_fn fam_fn(int fam, int isa) {
    static const tdot_fn refs[FAM_COUNT] = {0, i2s_dot_ref, tq2_dot_ref, tq1_dot_ref, tern_tl_dot_ref};
#if defined(TERN_HAVE_X86)
    static const tdot_fn avx2[FAM_COUNT] = {0, i2s_dot_avx2, tq2_dot_avx2, tq1_dot_avx2, tern_tl_dot_avx2};
    static const tdot_fn avx512[FAM_COUNT] = {0, i2s_dot_avx512, tq2_dot_avx512, tq1_dot_avx2,
                                              tern_tl_dot_avx512};
    if (isa == ISA_AVX512) return avx512[fam];
    if (isa == ISA_AVX2) return avx2[fam];
#endif
#if defined(TERN_HAVE_ARM)
    static const tdot_fn neon[FAM_COUNT] = {0, i2s_dot_neon, tq2_dot_neon, tq1_dot_neon, tern_tl_dot_neon};
    if (isa == ISA_NEON) return neon[fam];
#endif
    return refs[fam];
}

static int mat_fam(const mat_t *m) { return m->kernel / ISA_COUNT; }
static int mat_isa(const mat_t *m) { return m->kernel % ISA_COUNT; }

const char *mat_kernel_name(const mat_t *m) {
    static char names[FAM_COUNT][ISA_COUNT][24];
    int f = mat_fam(m), i = mat_isa(m);
    if (f < 0 || f >= FAM_COUNT || i < 0 || i >= ISA_COUNT) return "?";
    if (!names[f][i][0]) snprintf(names[f][i], sizeof names[f][i], "%s/%s", g_fam_names[f], isa_name(i));
    return names[f][i];
}

/* TQ tensors whose non-zero block scales are all equal (true of every BitNet model written
 * as TQ) are exactly an I2_S-like tensor with one scale: blocks with d == 0 contribute 0 and are
 * packed as zero trits. Returns that scale, or 0 when the scales differ. */
static float tq_uniform_scale(int type, const uint8_t *src, int64_t rows, int64_t cols) {
    size_t bb = type == TT_TQ2_0 ? 66 : 54;
    int64_t nblk = rows * cols / 256;
    uint16_t d0 = 0;
    for (int64_t b = 0; b < nblk; b++) {
        uint16_t d;
        memcpy(&d, src + b * bb + bb - 2, 2);
        if ((d & 0x7fff) == 0) continue;
        if (d0 == 0) d0 = d;
        else if (d != d0) return 0.0f;
    }
    float s = f16_to_f32(d0);
    return s == s && s != 0.0f ? s : 0.0f;   /* NaN or all-zero: keep the reference layout */
}

/* repack any ternary tensor into TL, 64 rows at a time */
static int tl_repack(mat_t *m) {
    int64_t rows = m->rows, cols = m->cols, chunk = 64;
    m->packed_bytes = tern_tl_bytes(rows, cols);
    m->packed = tern_alloc(m->packed_bytes);
    int8_t *t = malloc((size_t)(chunk * cols));
    if (!m->packed || !t) {
        free(t);
        tern_free(m->packed);
        m->packed = NULL;
        return TERN_ENOMEM;
    }
    tern_tl_pad(rows, cols, m->packed);
    size_t bb = m->type == TT_TQ2_0 ? 66 : 54;
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        quant_unpack_trits(m->type, m->src, rows, cols, r0, nr, t, NULL);
        if (m->type != TT_I2_S)   /* zero-scale blocks contribute nothing: make their trits 0 */
            for (int64_t i = 0; i < nr * cols; i += 256) {
                uint16_t d;
                memcpy(&d, (const uint8_t *)m->src + ((r0 * cols + i) / 256) * bb + bb - 2, 2);
                if ((d & 0x7fff) == 0) memset(t + i, 0, 256);
            }
        tern_tl_pack_rows(t, rows, cols, r0, nr, m->packed);
    }
    free(t);
    return 0;
}

int mat_init(mat_t *m, int type, int64_t rows, int64_t cols, const void *data, size_t nbytes,
             int flags, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->type = type;
    m->rows = rows;
    m->cols = cols;
    m->src = data;
    m->src_bytes = nbytes;
    m->scale = 1.0f;
    const type_traits_t *tt = type_traits(type);
    if (!tt || type == TT_Q6_K) return err_set(err, errlen, TERN_ENOTSUP, "mat: unsupported tensor type %d (%s)", type, type_name(type));
    if (rows <= 0 || cols <= 0 || cols % tt->blck)
        return err_set(err, errlen, TERN_EINVAL, "mat: bad shape %lld x %lld for %s (cols must be a multiple of %d)",
                       (long long)rows, (long long)cols, tt->name, tt->blck);
    size_t want = type_tensor_bytes(type, cols, rows);
    if (!data || nbytes != want)
        return err_set(err, errlen, TERN_EFORMAT, "mat: %s tensor %lld x %lld needs %zu bytes, got %zu", tt->name,
                       (long long)rows, (long long)cols, want, nbytes);
    int isa = isa_current();
    if (!tt->ternary) {
        if (!fmat_supported(type)) return err_set(err, errlen, TERN_ENOTSUP, "mat: no float kernel for %s", tt->name);
        m->kernel = FAM_FLOAT * ISA_COUNT + isa;
        return 0;
    }
    if (cols / 256 > 2048) return err_set(err, errlen, TERN_ENOTSUP, "mat: %lld columns is too wide", (long long)cols);
    int fam = type == TT_I2_S ? FAM_I2S : type == TT_TQ2_0 ? FAM_TQ2 : FAM_TQ1;
    if (type == TT_I2_S) memcpy(&m->scale, (const uint8_t *)data + rows * cols / 4, 4);
    float tl_scale = type == TT_I2_S ? m->scale : tq_uniform_scale(type, data, rows, cols);
    if (!(flags & MAT_NO_REPACK) && cols % 256 == 0 && tl_scale != 0.0f) {
        int rc = tl_repack(m);
        if (rc) return err_set(err, errlen, rc, "mat: out of memory repacking %lld x %lld", (long long)rows, (long long)cols);
        m->scale = tl_scale;
        fam = FAM_TL;
    }
    m->kernel = fam * ISA_COUNT + isa;
    return 0;
}

void mat_free(mat_t *m) {
    if (!m) return;
    tern_free(m->packed);
    memset(m, 0, sizeof *m);
}

size_t mat_weight_bytes(const mat_t *m) { return m->packed ? m->packed_bytes : m->src_bytes; }

/* scratch: q (n, cols) int8 | s (n) f32 | sum (n) i32 | bsum (n, cols/256) i32, each 64-aligned */
typedef struct act_scratch {
    int8_t *q;
    float *s;
    int32_t *sum, *bsum;
} act_scratch_t;

static size_t act_layout(int64_t cols, int n, uint8_t *base, act_scratch_t *a) {
    size_t off = 0, qb = tern_pad((size_t)n * (size_t)cols, 64), fb = tern_pad((size_t)n * 4, 64);
    size_t bb = tern_pad((size_t)n * (size_t)(cols / 256 + 1) * 4, 64);
    if (a) {
        a->q = (int8_t *)(base + off);
        a->s = (float *)(base + off + qb);
        a->sum = (int32_t *)(base + off + qb + fb);
        a->bsum = (int32_t *)(base + off + qb + 2 * fb);
    }
    return qb + 2 * fb + bb;
}

size_t mat_scratch_bytes(const mat_t *m, int n) {
    if (mat_fam(m) == FAM_FLOAT) return fmat_scratch_bytes(m->type, m->cols, n);
    return act_layout(m->cols, n, NULL, NULL);
}

typedef struct mul_job {
    const mat_t *m;
    const float *x;
    float *y;
    int n;
    act_scratch_t a;
    tdot_fn fn;
    const void *w;
} mul_job_t;

static void quant_task(void *arg, int ith, int nth) {
    mul_job_t *j = arg;
    int64_t cols = j->m->cols, nb = cols / 256;
    long b, e;
    tpool_split(j->n, ith, nth, 1, &b, &e);
    for (long t = b; t < e; t++) {
        int8_t *q = j->a.q + t * cols;
        j->a.s[t] = act_quant(j->x + t * cols, cols, q, &j->a.sum[t]);
        if (mat_fam(j->m) == FAM_TQ2 || mat_fam(j->m) == FAM_TQ1)
            for (int64_t k = 0; k < nb; k++) {
                int32_t s = 0;
                for (int i = 0; i < 256; i++) s += q[256 * k + i];
                j->a.bsum[t * nb + k] = s;
            }
    }
}

/* y for rows [r0, r0+nr) and tokens [t0, t0+nt) from their integer sums */
static void epilogue(const mul_job_t *j, int64_t r0, int64_t nr, int t0, int nt, int nb, const int32_t *isum) {
    const mat_t *m = j->m;
    int per_block = mat_fam(m) == FAM_TQ2 || mat_fam(m) == FAM_TQ1;
    size_t bb = m->type == TT_TQ2_0 ? 66 : 54;
    for (int t = 0; t < nt; t++) {
        float s = j->a.s[t0 + t];
        float *y = j->y + (int64_t)(t0 + t) * m->rows + r0;
        const int32_t *is = isum + (int64_t)t * nr * nb;
        if (!per_block) {
            for (int64_t r = 0; r < nr; r++) y[r] = (float)is[r] / s * m->scale;
            continue;
        }
        for (int64_t r = 0; r < nr; r++) {
            const uint8_t *blk = (const uint8_t *)m->src + (size_t)((r0 + r) * nb) * bb + bb - 2;
            float f = 0.0f;
            for (int b = 0; b < nb; b++) {
                uint16_t d;
                memcpy(&d, blk + (size_t)b * bb, 2);
                float p = f16_to_f32(d) * (float)is[r * nb + b];
                f += p;   /* one code path for every ISA: same rounding everywhere */
            }
            y[r] = f / s;
        }
    }
}

#define ISUM_CAP 2048

static void dot_task(void *arg, int ith, int nth) {
    mul_job_t *j = arg;
    const mat_t *m = j->m;
    int fam = mat_fam(m);
    int nb = (fam == FAM_TQ2 || fam == FAM_TQ1) ? (int)(m->cols / 256) : 1;
    int32_t isum[ISUM_CAP];
    int tc = j->n < 32 ? j->n : 32;
    if (tc * nb > ISUM_CAP) tc = ISUM_CAP / nb;
    int64_t rc = ISUM_CAP / (tc * nb);
    rc = rc > 64 ? 64 : rc >= TL_R ? rc / TL_R * TL_R : rc;
    long b, e;
    tpool_split(m->rows, ith, nth, TL_R, &b, &e);
    for (int64_t r0 = b; r0 < e; r0 += rc) {
        int64_t nr = e - r0 < rc ? e - r0 : rc;
        for (int t0 = 0; t0 < j->n; t0 += tc) {
            int nt = j->n - t0 < tc ? j->n - t0 : tc;
            int64_t cols = m->cols;
            tact_t a = {j->a.q + t0 * cols, j->a.sum + t0, j->a.bsum + (int64_t)t0 * (cols / 256), cols, nt};
            j->fn(j->w, m->rows, r0, nr, &a, isum);
            epilogue(j, r0, nr, t0, nt, nb, isum);
        }
    }
}

void mat_mul(const mat_t *m, const float *x, int n, float *y, void *scratch, tpool_t *tp) {
    if (n <= 0) return;
    int fam = mat_fam(m);
    if (fam == FAM_FLOAT) {
        fmat_mul(m->type, m->src, m->rows, m->cols, x, n, y, scratch, tp);
        return;
    }
    mul_job_t j = {.m = m, .x = x, .y = y, .n = n, .fn = fam_fn(fam, mat_isa(m)),
                   .w = m->packed ? m->packed : m->src};
    act_layout(m->cols, n, scratch, &j.a);
    if (n > 1 && tp) tpool_run(tp, quant_task, &j);
    else quant_task(&j, 0, 1);
    tpool_run(tp, dot_task, &j);
}
