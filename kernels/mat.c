/* mat: a weight matrix ready for y = W·x. mat_init validates the stored tensor, picks a layout
 * (the file's own, or one of tern's made at load: TL, RL, LUT — layout_rule, TERN_KERNEL
 * overrides) and an ISA variant once; mat_mul quantises activations per token, runs the integer
 * kernel over rows split across threads, and applies the scales in one fixed order (here,
 * compiled once), so y is bit-identical for every ISA, layout and thread count.
 * Not here: kernels themselves (ternary.h, lut.h) and float types (fmat.c). */
#include "kernels/mat.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/half.h"
#include "core/types.h"
#include "kernels/dispatch.h"
#include "kernels/fmat.h"
#include "kernels/lut.h"
#include "kernels/quant.h"
#include "kernels/ternary.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* layout families; m->kernel = fam * ISA_COUNT + isa */
enum { FAM_FLOAT, FAM_I2S, FAM_TQ2, FAM_TQ1, FAM_TL, FAM_LUT, FAM_RL, FAM_COUNT };

static const char *g_fam_names[FAM_COUNT] = {"fmat", "i2_s", "tq2_0", "tq1_0", "tern-tl4", "tern-lut3", "tern-rl32"};

static tdot_fn fam_fn(int fam, int isa) {
    static const tdot_fn refs[FAM_COUNT] = {0, i2s_dot_ref, tq2_dot_ref, tq1_dot_ref, tern_tl_dot_ref, lut_dot_ref,
                                            tern_rl_dot_ref};
#if defined(TERN_HAVE_X86)
    /* RL is a VNNI layout; mat_init only picks it for AVX-512, the others fall back to ref */
    static const tdot_fn avx2[FAM_COUNT] = {0, i2s_dot_avx2, tq2_dot_avx2, tq1_dot_avx2, tern_tl_dot_avx2, lut_dot_avx2,
                                            tern_rl_dot_ref};
    static const tdot_fn avx512[FAM_COUNT] = {0, i2s_dot_avx512, tq2_dot_avx512, tq1_dot_avx512,
                                              tern_tl_dot_avx512, lut_dot_avx512, tern_rl_dot_avx512};
    if (isa == ISA_AVX512) return avx512[fam];
    if (isa == ISA_AVX2) return avx2[fam];
#endif
#if defined(TERN_HAVE_ARM)
    static const tdot_fn neon[FAM_COUNT] = {0, i2s_dot_neon, tq2_dot_neon, tq1_dot_neon, tern_tl_dot_neon,
                                            lut_dot_neon, tern_rl_dot_ref};
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
    int differ;
    float s = quant_tq_scale(type, src, rows, cols, &differ);   /* 0 when they differ */
    return s == s && s != 0.0f ? s : 0.0f;   /* NaN or all-zero: keep the reference layout */
}

/* ---- repacking at load ------------------------------------------------------------------ */

typedef struct repack_job {
    mat_t *m;
    int fam;         /* FAM_TL or FAM_LUT */
    int failed;      /* a thread could not allocate its trit buffer */
} repack_job_t;

/* rows of [b, e) in 64-row chunks: I2_S → TL or RL byte to byte, any type → LUT from the codes;
 * otherwise through int8 trits */
static void repack_task(void *arg, int ith, int nth) {
    repack_job_t *j = arg;
    mat_t *m = j->m;
    int64_t rows = m->rows, cols = m->cols, chunk = 64;
    long b, e;
    tpool_split((long)rows, ith, nth, chunk, &b, &e);
    if (j->fam == FAM_TL && m->type == TT_I2_S) {
        tern_tl_from_i2s(m->src, cols, b, e - b, m->packed);
        return;
    }
    if (j->fam == FAM_RL && m->type == TT_I2_S) {
        tern_rl_from_i2s(m->src, cols, b, e - b, m->packed);
        return;
    }
    if (j->fam == FAM_LUT) {   /* any ternary type, straight from its codes */
        lut_from_src(m->type, m->src, cols, b, e - b, m->packed);
        return;
    }
    int8_t *t = malloc((size_t)(chunk * cols));
    if (!t) {
        j->failed = 1;
        return;
    }
    size_t bb = m->type == TT_TQ2_0 ? 66 : 54;
    for (int64_t r0 = b; r0 < e; r0 += chunk) {
        int64_t nr = e - r0 < chunk ? e - r0 : chunk;
        quant_unpack_trits(m->type, m->src, rows, cols, r0, nr, t, NULL);
        if (m->type != TT_I2_S)   /* zero-scale blocks contribute nothing: make their trits 0 */
            for (int64_t i = 0; i < nr * cols; i += 256) {
                uint16_t d;
                memcpy(&d, (const uint8_t *)m->src + ((r0 * cols + i) / 256) * bb + bb - 2, 2);
                if ((d & 0x7fff) == 0) memset(t + i, 0, 256);
            }
        if (j->fam == FAM_TL) tern_tl_pack_rows(t, rows, cols, r0, nr, m->packed);
        else if (j->fam == FAM_RL) tern_rl_pack_rows(t, cols, r0, nr, m->packed);
        else lut_pack_rows(t, cols, r0, nr, m->packed);
    }
    free(t);
}

/* threads for repacking a tensor of n weights: one per 4M weights, at most the online CPUs
 * (a 2560 × 6912 I2_S → TL repack is ~10 ms on one core: small tensors are not worth a pool) */
static int repack_threads(int64_t n) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t want = n >> 22;
    if (want > cpus) want = cpus;
    if (want > 16) want = 16;
    return want < 1 ? 1 : (int)want;
}

/* repack any ternary tensor into fam's layout (TL or LUT), across threads for big tensors */
static int repack(mat_t *m, int fam) {
    int64_t rows = m->rows, cols = m->cols;
    m->packed_bytes = fam == FAM_TL ? tern_tl_bytes(rows, cols) : fam == FAM_RL ? tern_rl_bytes(rows, cols)
                                                                : lut_bytes(rows, cols);
    m->packed = fam == FAM_LUT ? tern_calloc(m->packed_bytes) : tern_alloc(m->packed_bytes);
    if (!m->packed) return TERN_ENOMEM;
    if (fam == FAM_TL) tern_tl_pad(rows, cols, m->packed);
    if (fam == FAM_RL) tern_rl_pad(rows, cols, m->packed);
    repack_job_t j = {.m = m, .fam = fam};
    int nth = repack_threads(rows * cols);
    tpool_t *tp = nth > 1 ? tpool_new(nth) : NULL;
    tpool_run(tp, repack_task, &j);
    tpool_destroy(&tp);
    if (j.failed) {
        tern_free(m->packed);
        m->packed = NULL;
        return TERN_ENOMEM;
    }
    return 0;
}

/* ---- layout choice ----------------------------------------------------------------------- */

/* TERN_KERNEL=native|tl4|lut3 (tests and benches): FAM_* to force, -1 for the file's own
 * layout, 0 when unset/auto. */
static int layout_override(void) {
    const char *e = getenv("TERN_KERNEL");
    if (!e || !*e || !strcmp(e, "auto")) return 0;
    if (!strcmp(e, "native")) return -1;
    if (!strcmp(e, "tl4") || !strcmp(e, "tern-tl4")) return FAM_TL;
    if (!strcmp(e, "lut3") || !strcmp(e, "tern-lut3")) return FAM_LUT;
    if (!strcmp(e, "rl32") || !strcmp(e, "tern-rl32")) return FAM_RL;
    static int warned;
    if (!warned++) fprintf(stderr, "tern: TERN_KERNEL=%s is not one of native, tl4, lut3, rl32, auto; ignored\n", e);
    return 0;
}

/* Which repacked layout serves this ISA and shape best. The layout is made once at load and
 * serves decode (GEMV, memory-bound) and prefill / batched decode (GEMM) alike, so the rule
 * weighs both. Measured on the build host (AMD EPYC Zen 5, 2 vCPUs, 1 thread, best of several
 * runs on a shared machine; GEMV = GB/s of weights read, 2560×2560 and 640×2560 I2_S, sets of
 * 3 × L3; GEMM = GOPS at batch 8/32/128/512, 2560×2560; read ~42–48 GB/s, VNNI peak ~1600):
 *
 *   ISA     layout     GEMV GB/s   GEMM GOPS (b8 / b128 / b512)
 *   avx512  tern-rl32  35–37.6     850 / 840–858 / 790–822   (53–54 % of peak)
 *   avx512  tern-tl4   35–37.9     740–770 / 720–760 / 540–710
 *   avx512  tern-lut3  19–21       370 / 310–350              (compute-bound)
 *   avx2    tern-tl4   27–29       368 / 368                 (1 row × 8 tokens per pass)
 *   avx2    tern-lut3  13          210 / 207
 *
 * So: VNNI → RL (GEMV equal within noise, GEMM +12–15 %); AVX2 and NEON with dotprod → TL.
 * The LUT layout reads 17 % fewer bytes (1.67 bits per weight) but needs ~2× the instructions
 * per weight; it pays only where a core's share of memory bandwidth is below its LUT compute
 * rate (~20 GB/s here with AVX-512): many cores on few memory channels, or small NEON cores
 * without dotprod (whose TL path is a widening multiply), where it is chosen. Shape does not
 * change the ranking on this host for any real shape; it only restricts: RL needs cols % 16,
 * TL cols % 256, LUT takes any cols (I2_S tensors with cols % 256 ≠ 0 go to LUT or RL). */
static int layout_rule(int isa, int64_t rows, int64_t cols) {
    (void)rows;
    (void)cols;
    if (isa == ISA_AVX512) return FAM_RL;
    if (isa == ISA_NEON && !isa_has_neon_dotprod()) return FAM_LUT;
    return FAM_TL;
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
    if (!tt) return err_set(err, errlen, TERN_ENOTSUP, "mat: unsupported tensor type %d (%s)", type, type_name(type));
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
    int want_fam = layout_override();
    if (want_fam == 0) want_fam = layout_rule(isa, rows, cols);
    if (want_fam == FAM_RL && isa != ISA_AVX512) want_fam = FAM_TL;   /* RL has only a VNNI kernel */
    if (want_fam == FAM_RL && cols % 16) want_fam = FAM_LUT;
    if (want_fam == FAM_TL && cols % 256) want_fam = FAM_LUT;   /* TL needs whole 256-column chunks */
    if (!(flags & MAT_NO_REPACK) && want_fam > 0 && tl_scale != 0.0f) {
        int rc = repack(m, want_fam);
        if (rc) return err_set(err, errlen, rc, "mat: out of memory repacking %lld x %lld", (long long)rows, (long long)cols);
        m->scale = tl_scale;
        fam = want_fam;
    }
    m->kernel = fam * ISA_COUNT + isa;
    return 0;
}

int mat_fuse(mat_t *out, const mat_t *parts, int n) {
    if (n < 1) return TERN_EINVAL;
    int fam = mat_fam(&parts[0]);
    int64_t tile = fam == FAM_RL ? RL_R : fam == FAM_TL ? TL_R : 0, rows = 0;
    size_t bytes = 0;
    for (int i = 0; i < n; i++) {
        const mat_t *p = &parts[i];
        if (!tile || !p->packed || p->kernel != parts[0].kernel || p->cols != parts[0].cols || p->row_scale ||
            (i < n - 1 && p->rows % tile))
            return TERN_ENOTSUP;
        rows += p->rows;
        bytes += p->packed_bytes;
    }
    if (bytes != (fam == FAM_RL ? tern_rl_bytes(rows, parts[0].cols) : tern_tl_bytes(rows, parts[0].cols)))
        return TERN_ENOTSUP;
    mat_t m;
    memset(&m, 0, sizeof m);
    m.type = parts[0].type;
    m.kernel = parts[0].kernel;
    m.rows = rows;
    m.cols = parts[0].cols;
    m.scale = 1.0f;
    m.packed_bytes = bytes;
    m.packed = tern_alloc(bytes);
    m.row_scale = tern_alloc((size_t)rows * sizeof(float));
    if (!m.packed || !m.row_scale) { tern_free(m.packed); tern_free(m.row_scale); return TERN_ENOMEM; }
    size_t off = 0;
    int64_t r = 0;
    for (int i = 0; i < n; i++) {   /* tiles are row-major blocks: the parts' tiles concatenate */
        memcpy((uint8_t *)m.packed + off, parts[i].packed, parts[i].packed_bytes);
        off += parts[i].packed_bytes;
        for (int64_t k = 0; k < parts[i].rows; k++) m.row_scale[r++] = parts[i].scale;
        m.src_bytes += parts[i].src_bytes;
    }
    *out = m;
    return 0;
}

void mat_free(mat_t *m) {
    if (!m) return;
    tern_free(m->row_scale);
    tern_free(m->packed);
    memset(m, 0, sizeof *m);
}

size_t mat_weight_bytes(const mat_t *m) { return m->packed ? m->packed_bytes : m->src_bytes; }

int mat_reads_src(const mat_t *m) {
    if (!m->rows) return 0;
    int fam = mat_fam(m);
    return !m->packed || fam == FAM_TQ2 || fam == FAM_TQ1;   /* per-block TQ scales stay in the source */
}

/* scratch: q (n, cols) int8 | s (n) f32 | sum (n) i32 | bsum (n, cols/256) i32 |
 * LUT layout only: lut (n, lut_tbl_bytes(cols)) int8; each 64-aligned */
typedef struct act_scratch {
    int8_t *q;
    float *s;
    int32_t *sum, *bsum;
    int8_t *lut;
} act_scratch_t;

static size_t act_layout(int64_t cols, int n, int lut, uint8_t *base, act_scratch_t *a) {
    size_t qb = tern_pad((size_t)n * (size_t)cols, 64), fb = tern_pad((size_t)n * 4, 64);
    size_t bb = tern_pad((size_t)n * (size_t)(cols / 256 + 1) * 4, 64);
    size_t lb = lut ? (size_t)n * lut_tbl_bytes(cols) : 0;
    if (a) {
        a->q = (int8_t *)base;
        a->s = (float *)(base + qb);
        a->sum = (int32_t *)(base + qb + fb);
        a->bsum = (int32_t *)(base + qb + 2 * fb);
        a->lut = lut ? (int8_t *)(base + qb + 2 * fb + bb) : NULL;
    }
    return qb + 2 * fb + bb + lb;
}

size_t mat_scratch_bytes(const mat_t *m, int n) {
    if (mat_fam(m) == FAM_FLOAT) return fmat_scratch_bytes(m->type, m->cols, n);
    return act_layout(m->cols, n, mat_fam(m) == FAM_LUT, NULL, NULL);
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
        if (j->a.lut) lut_tables(q, cols, j->a.lut + (size_t)t * lut_tbl_bytes(cols));
    }
}

/* y for rows [r0, r0+nr) and tokens [t0, t0+nt) from their integer sums */
/* y[r] = (float)is[r] / s · (rs ? rs[r] : sc), 4 rows at a time: IEEE division and conversion
 * per lane are the scalar ones, so the bits are too. One division per output row was ~2 % of
 * decode in scalar code (a divss every few cycles at best). */
typedef float v4f_t __attribute__((vector_size(16)));
typedef int32_t v4i_t __attribute__((vector_size(16)));
static void scale_rows(float *y, const int32_t *is, int64_t nr, float s, const float *rs, float sc) {
    const v4f_t vs = {s, s, s, s}, vc = {sc, sc, sc, sc};
    int64_t r = 0;
    for (; r + 4 <= nr; r += 4) {
        v4i_t iv;
        v4f_t m = vc, q;
        memcpy(&iv, is + r, sizeof iv);
        if (rs) memcpy(&m, rs + r, sizeof m);
        q = __builtin_convertvector(iv, v4f_t) / vs * m;
        memcpy(y + r, &q, sizeof q);
    }
    for (; r < nr; r++) y[r] = (float)is[r] / s * (rs ? rs[r] : sc);
}

static void epilogue(const mul_job_t *j, int64_t r0, int64_t nr, int t0, int nt, int nb, const int32_t *isum) {
    const mat_t *m = j->m;
    int per_block = mat_fam(m) == FAM_TQ2 || mat_fam(m) == FAM_TQ1;
    size_t bb = m->type == TT_TQ2_0 ? 66 : 54;
    for (int t = 0; t < nt; t++) {
        float s = j->a.s[t0 + t];
        float *y = j->y + (int64_t)(t0 + t) * m->rows + r0;
        const int32_t *is = isum + (int64_t)t * nr * nb;
        if (!per_block) {
            scale_rows(y, is, nr, s, m->row_scale ? m->row_scale + r0 : NULL, m->scale);
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
    int tc = j->n < 30 ? j->n : 30;   /* a multiple of the AVX-512 TL tile (6 tokens) */
    if (fam == FAM_RL) tc = j->n < 24 ? j->n : 24;   /* RL: 2 tiles of 12 tokens */
    if (tc * nb > ISUM_CAP) tc = ISUM_CAP / nb;
    int64_t rc = ISUM_CAP / (tc * nb);
    rc = rc > 64 ? 64 : rc >= TL_R ? rc / TL_R * TL_R : rc;
    /* each thread: one contiguous range of whole row tiles (TL: 4 rows = 16-byte outputs, 64-row
     * chunks below keep outputs in whole cache lines; LUT: 64-row tiles) */
    if (fam == FAM_LUT) rc = LUT_R;
    if (fam == FAM_RL) rc = rc / RL_R * RL_R;
    long b, e;
    tpool_split(m->rows, ith, nth, fam == FAM_LUT ? LUT_R : fam == FAM_RL ? RL_R : 16, &b, &e);
    /* token blocks of ~96 (≤ 96·cols bytes of activations, L2-resident) outer, so large batches
     * do not stream all activations past every row chunk (batch 512 ran at half speed) */
    int tb = tc * (96 / tc > 0 ? 96 / tc : 1);
    for (int b0 = 0; b0 < j->n; b0 += tb)
    for (int64_t r0 = b; r0 < e; r0 += rc) {
        int64_t nr = e - r0 < rc ? e - r0 : rc;
        for (int t0 = b0; t0 < j->n && t0 < b0 + tb; t0 += tc) {
            int nt = j->n - t0 < tc ? j->n - t0 : tc;
            int64_t cols = m->cols;
            tact_t a = {j->a.q + t0 * cols, j->a.sum + t0, j->a.bsum + (int64_t)t0 * (cols / 256), cols, nt,
                        j->a.lut ? j->a.lut + (size_t)t0 * lut_tbl_bytes(cols) : NULL};
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
    act_layout(m->cols, n, fam == FAM_LUT, scratch, &j.a);
    if (n > 1 && tp) tpool_run(tp, quant_task, &j);
    else quant_task(&j, 0, 1);
    tpool_run(tp, dot_task, &j);
}
