/* test_kv_shift: the stages' side of the context shift (llama.cpp's KV-cache shift). (1) The cache
 * operation against a plain double reference written here from the definition (RoPE angle
 * -discard·base^(-2i/rot_dim), neox and adjacent pairs, partial rotation), for f32/f16/q8_0, 1
 * and 3 threads: moved keys within the type's rounding, values moved byte for byte, rows below
 * keep, at and past n_past and other slots untouched; hostile shifts refused whole; with YaRN and
 * frequency factors too (the shift is the rotation alone: its magnitude is not applied again). (2)
 * Real models (NEOX and normal RoPE; plain, YaRN with llama3 factors, llama3 factors alone): layer
 * 0's keys depend on the token alone, so after a shift its
 * moved keys equal the keys recomputed by running the same tokens at their new positions in
 * another slot (within rounding), its values exactly; every layer as in (1). (3) Prefill, decode,
 * shifts of one and of two slots in one step: the direct stages (TERN_EMBEDDED=direct's
 * pipeline_local), the embedded cluster (inproc workers) and two ZeroMQ workers (ipc://) give
 * bit-identical tokens and log-probabilities, and they differ from the same steps unshifted — for a
 * plain model, a YaRN one, and RoPE overrides sent in LoadShard.rope.
 * KV copies (llama_memory_seq_cp): (4) hostile copy sets refused whole; (5) a real model: the
 * copied rows are byte for byte what a prefill of the same tokens in a third slot computes, the
 * rest of the cache untouched, a copy past what the source slot holds refused; (6) a prompt copied
 * into a slot then decoded there with its own sampler gives the tokens and log-probabilities of
 * that slot prefilling the prompt itself, through every path alike. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "coordinator/cluster_client.h"
#include "coordinator/cluster_embedded.h"
#include "coordinator/cluster_file.h"
#include "coordinator/embed.h"
#include "coordinator/pipeline_local.h"
#include "core/err.h"
#include "core/gguf.h"
#include "core/half.h"
#include "core/tpool.h"
#include "kernels/ops.h"
#include "worker/kv_cache.h"
#include "worker/stage.h"
#include "worker/worker_loop.h"

int mkmodel_main(int argc, char **argv);

static char g_dir[64], g_b158[128], g_llama[128], g_yarn[128], g_l3[128];
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) % 20001) / 10000.0f - 1.0f;
}

/* ---- (1) the cache operation against the definition -------------------------------------- */

/* RoPE scaling as the reference sees it (NULL: none): linear/YaRN interpolation, frequency factors.
 * A shift turns a key by the angle difference only: the magnitude YaRN gives q and k was applied
 * once, when the key was computed. */
typedef struct ref_scale {
    double freq_scale, ext;   /* ext 0: linear (or none with freq_scale 1) */
    int n_orig;               /* YaRN's original context; betas 32 and 1 */
    const float *ff;          /* (rot/2,) or NULL */
} ref_scale_t;

/* theta_i per position: base^(-2i/rot) / ff_i, interpolated by freq_scale, YaRN-mixed on its ramp */
static double ref_theta(const ref_scale_t *rs, int rot, double base, int i) {
    double ex = pow(base, -2.0 * i / rot);
    if (!rs) return ex;
    if (rs->ff) ex /= rs->ff[i];
    double th = rs->freq_scale * ex;
    if (rs->ext != 0) {
        const double tau = 2 * 3.14159265358979323846;
        double lo = fmax(0, floor(rot * log(rs->n_orig / (32 * tau)) / (2 * log(base))));
        double hi = fmin(rot - 1, ceil(rot * log(rs->n_orig / (1 * tau)) / (2 * log(base))));
        double mix = (1 - fmin(1, fmax(0, (i - lo) / fmax(0.001, hi - lo)))) * rs->ext;
        th = th * (1 - mix) + ex * mix;
    }
    return th;
}

/* one head (hd,) rotated by -d in double: theta_i = ref_theta, pairs as the model's */
static void ref_rot(double *y, const float *x, int hd, int rot, int neox, double base, int d, const ref_scale_t *rs) {
    for (int j = 0; j < hd; j++) y[j] = x[j];
    for (int i = 0; i < rot / 2; i++) {
        double th = -(double)d * ref_theta(rs, rot, base, i);
        int a = neox ? i : 2 * i, b = neox ? i + rot / 2 : 2 * i + 1;
        y[a] = x[a] * cos(th) - x[b] * sin(th);
        y[b] = x[a] * sin(th) + x[b] * cos(th);
    }
}

/* how far a stored element may be from the exact value x of its row (max |row| = amax) */
static double tol_for(int type, double x, double amax) {
    if (type == KV_F32) return 1e-5 * amax + 1e-6;
    if (type == KV_F16) return fabs(x) * (1.0 / 1024) + 1e-4 * amax + 1e-6;
    return amax / 127.0 + 1e-4 * amax;   /* one q8_0 step of its block, at most */
}

/* new key row (deq) at p - d against old key row (deq) at p rotated in double, head by head */
static void check_keys(const float *newk, const float *oldk, int kv_dim, int hd, int rot, int neox, double base, int d,
                       const ref_scale_t *rs, int type, const char *what) {
    double y[1024];
    for (int h = 0; h < kv_dim / hd; h++) {
        ref_rot(y, oldk + h * hd, hd, rot, neox, base, d, rs);
        double amax = 0;
        for (int j = 0; j < hd; j++) amax = fmax(amax, fabs(y[j]));
        for (int j = 0; j < hd; j++)
            if (fabs(newk[h * hd + j] - y[j]) > tol_for(type, y[j], amax))
                fail_msg("%s: head %d dim %d: %.9g, expected %.9g", what, h, j, newk[h * hd + j], y[j]);
    }
}

static void cache_case(int type, int neox, int rot, int yarn, tpool_t *tp) {
    const int L = 2, S = 3, C = 40, hd = 64, kvd = 2 * hd;
    const float base = 10000.0f;
    char err[256], what[128];
    kv_cache_t kv;
    assert_int_equal(kv_cache_init(&kv, type, L, S, C, kvd, err, sizeof err), 0);
    float *x = malloc((size_t)kvd * 4), *y = malloc((size_t)kvd * 4), *z = malloc((size_t)kvd * 4);
    for (int l = 0; l < L; l++)
        for (int s = 0; s < S; s++)
            for (int p = 0; p < C; p++) {
                for (int j = 0; j < kvd; j++) x[j] = frand() * (1 + j % 5), y[j] = frand();
                kv_cache_store(&kv, l, s, p, x, y);
            }
    size_t half = kv_cache_bytes_for(type, L, S, C, kvd) / 2;
    uint8_t *k0 = malloc(half), *v0 = malloc(half);
    memcpy(k0, kv.k, half);
    memcpy(v0, kv.v, half);
    const kv_shift_t sh = {1, 5, 7, 31};
    float cs[512], sn[512], *tmp = malloc((size_t)tpool_size(tp) * hd * 4);
    /* yarn: factor 4, a 32-position original context (a ramp inside the rotated dims), frequency
     * factors, and a magnitude that must not reach a shift */
    float ff[64];
    for (int i = 0; i < rot / 2; i++) ff[i] = 1.0f + (float)(i % 5) * 0.75f;
    rope_params_t rp;
    ops_rope_init(&rp, rot, neox, base);
    if (yarn) {
        ops_rope_yarn(&rp, 1, 0.25f, -1.0f, 1.4f, 32, 32.0f, 1.0f);
        rp.freq_factors = ff;
    }
    const ref_scale_t rs = {0.25, 1.0, 32, ff};
    ops_rope_shift_table(cs, sn, -sh.discard, &rp);
    kv_rope_t r = {hd, rot, neox, cs, sn};
    kv_cache_shift(&kv, &sh, &r, tp, tmp);
    for (int l = 0; l < L; l++)
        for (int s = 0; s < S; s++) {
            size_t blk = (uint8_t *)kv_cache_k(&kv, l, s) - kv.k;
            for (int p = 0; p < C; p++) {
                size_t o = blk + (size_t)p * kv.row;
                int moved = s == sh.seq && p >= sh.keep && p < sh.n_past - sh.discard;
                int touched = s == sh.seq && p >= sh.keep && p < sh.n_past;
                if (!touched && (memcmp(kv.k + o, k0 + o, kv.row) || memcmp(kv.v + o, v0 + o, kv.row)))
                    fail_msg("type %d: layer %d slot %d row %d changed", type, l, s, p);
                if (!moved) continue;
                size_t src = o + (size_t)sh.discard * kv.row;
                if (memcmp(kv.v + o, v0 + src, kv.row)) fail_msg("type %d: layer %d row %d: values not moved", type, l, p);
                ops_kv_get(y, kv.k + o, type, kvd);
                ops_kv_get(z, k0 + src, type, kvd);
                snprintf(what, sizeof what, "type %d neox %d rot %d yarn %d threads %d: layer %d row %d", type, neox,
                         rot, yarn, tpool_size(tp), l, p);
                check_keys(y, z, kvd, hd, rot, neox, base, sh.discard, yarn ? &rs : NULL, type, what);
            }
        }
    free(x), free(y), free(z), free(k0), free(v0), free(tmp);
    kv_cache_free(&kv);
}

static void test_cache_shift(void **st) {
    (void)st;
    tpool_t *tp3 = tpool_new(3);
    for (int type = 0; type <= KV_Q8_0; type++)
        for (int neox = 0; neox < 2; neox++)
            for (int rot = 32; rot <= 64; rot += 32)
                for (int yarn = 0; yarn < 2; yarn++) {
                    cache_case(type, neox, rot, yarn, NULL);
                    cache_case(type, neox, rot, yarn, tp3);
                }
    tpool_destroy(&tp3);
}

static void test_check(void **st) {
    (void)st;
    char err[256];
    const kv_shift_t ok[2] = {{0, 0, 4, 10}, {1, 3, 1, 16}};
    assert_int_equal(kv_shift_check(ok, 2, 2, 16, err, sizeof err), 0);
    assert_int_equal(kv_shift_check(ok, 0, 2, 16, err, sizeof err), 0);
    const kv_shift_t bad[][2] = {
        {{2, 0, 4, 10}, {0, 0, 1, 2}},     /* slot out of range */
        {{-1, 0, 4, 10}, {0, 0, 1, 2}},
        {{0, 0, 0, 10}, {1, 0, 1, 2}},     /* discard 0 */
        {{0, 0, -3, 10}, {1, 0, 1, 2}},
        {{0, -1, 4, 10}, {1, 0, 1, 2}},    /* keep < 0 */
        {{0, 0, 4, 17}, {1, 0, 1, 2}},     /* n_past > ctx */
        {{0, 7, 4, 10}, {1, 0, 1, 2}},     /* keep + discard > n_past */
        {{0, 2147483647, 2147483647, 16}, {1, 0, 1, 2}},   /* would overflow an int */
        {{1, 0, 4, 10}, {1, 0, 1, 2}},     /* the same slot twice */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        if (kv_shift_check(bad[i], 2, 2, 16, err, sizeof err) != TERN_EINVAL) fail_msg("bad shift set %zu accepted", i);
        assert_non_null(strstr(err, "context shift"));
    }
    assert_int_equal(kv_shift_check(ok, 3, 2, 16, err, sizeof err), TERN_EINVAL);   /* more than the slots */
}

/* ---- (4) hostile copies ---------------------------------------------------------------------- */

static void test_copy_check(void **st) {
    (void)st;
    char err[256];
    const int fill[3] = {10, 16, 0};
    const kv_copy_t ok[2] = {{0, 2, 10}, {1, 2 - 2, 0}};
    const kv_copy_t ok2[2] = {{0, 2, 10}, {0, 1, 3}};
    assert_int_equal(kv_copy_check(ok2, 2, 3, 16, fill, err, sizeof err), 0);
    assert_int_equal(kv_copy_check(ok, 1, 3, 16, fill, err, sizeof err), 0);
    assert_int_equal(kv_copy_check(ok, 0, 3, 16, fill, err, sizeof err), 0);
    const kv_copy_t big = {1, 0, 16};
    assert_int_equal(kv_copy_check(&big, 1, 3, 16, fill, err, sizeof err), 0);
    assert_int_equal(kv_copy_check(&big, 1, 3, 15, NULL, err, sizeof err), TERN_EINVAL);   /* n > ctx */
    const kv_copy_t bad[][2] = {
        {{3, 0, 4}, {1, 2, 1}},       /* slot out of range */
        {{0, 3, 4}, {1, 2, 1}},
        {{-1, 0, 4}, {1, 2, 1}},
        {{0, -5, 4}, {1, 2, 1}},
        {{0, 0, 4}, {1, 2, 1}},       /* into itself */
        {{0, 1, 0}, {1, 2, 1}},       /* n < 1 */
        {{0, 1, -7}, {1, 2, 1}},
        {{1, 0, 17}, {1, 2, 1}},      /* n > ctx */
        {{0, 1, 11}, {1, 2, 1}},      /* more than slot 0 has had written */
        {{2, 1, 1}, {0, 2, 1}},       /* slot 2 holds nothing */
        {{0, 2, 4}, {1, 2, 1}},       /* slot 2 copied into twice */
        {{0, 2, 4}, {2, 1, 1}},       /* slot 2 both ways */
        {{1, 0, 4}, {0, 2, 1}},       /* slot 0 both ways (the later copy into it) */
        {{0, 1, 2147483647}, {1, 2, 1}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        if (kv_copy_check(bad[i], 2, 3, 16, fill, err, sizeof err) != TERN_EINVAL) fail_msg("bad copy set %zu accepted", i);
        assert_non_null(strstr(err, "KV copy"));
    }
    assert_int_equal(kv_copy_check(ok2, 4, 3, 16, fill, err, sizeof err), TERN_EINVAL);   /* more than the slots */
    assert_int_equal(kv_copy_check(ok2, -1, 3, 16, fill, err, sizeof err), TERN_EINVAL);
}

/* ---- (5) a real model: copied rows == recomputed rows ----------------------------------------- */

static void copy_case(const char *path, int type) {
    char err[256];
    gguf_t *g;
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    embed_t emb;
    assert_int_equal(embed_init(&emb, g, err, sizeof err), 0);
    tpool_t *tp = tpool_new(2);
    stage_t sg;
    stage_cfg_t c;
    stage_cfg_default(&c);
    hparams_t hp;
    assert_int_equal(hparams_from_gguf(&hp, g, err, sizeof err), 0);
    c.first = 0, c.last = hp.n_layer - 1, c.has_head = 1, c.n_ctx = 48, c.n_seq = 4, c.n_batch = 32, c.kv_type = type;
    if (stage_init(&sg, g, &c, tp, err, sizeof err)) fail_msg("stage: %s", err);
    enum { N = 24, K = 17 };
    int32_t tok[N], ot;
    int seq[N], pos[N];
    uint8_t smp[N] = {0};
    float lp, *h = malloc((size_t)N * hp.n_embd * 4);
    /* slot 0: N tokens; slot 1: the first K of them (the reference); slot 3: other tokens */
    for (int i = 0; i < N; i++) tok[i] = (int32_t)((i * 41 + 7) % hp.n_vocab), seq[i] = 0, pos[i] = i;
    assert_int_equal(embed_lookup(&emb, tok, N, h), 0);
    assert_int_equal(stage_step(&sg, h, N, tok, seq, pos, smp, &ot, &lp, err, sizeof err), 0);
    for (int i = 0; i < K; i++) seq[i] = 1;
    assert_int_equal(embed_lookup(&emb, tok, K, h), 0);
    assert_int_equal(stage_step(&sg, h, K, tok, seq, pos, smp, &ot, &lp, err, sizeof err), 0);
    int32_t t3[N];
    for (int i = 0; i < N; i++) t3[i] = (int32_t)((i * 13 + 3) % hp.n_vocab), seq[i] = 3;
    assert_int_equal(embed_lookup(&emb, t3, N, h), 0);
    assert_int_equal(stage_step(&sg, h, N, t3, seq, pos, smp, &ot, &lp, err, sizeof err), 0);
    assert_int_equal(sg.kv_fill[0], N);
    assert_int_equal(sg.kv_fill[1], K);
    assert_int_equal(sg.kv_fill[2], 0);
    kv_cache_t *kv = &sg.fwd.kv;
    size_t all = (size_t)kv->n_layer * kv->n_seq * kv->n_ctx * kv->row;
    uint8_t *k0 = malloc(all), *v0 = malloc(all);
    memcpy(k0, kv->k, all);
    memcpy(v0, kv->v, all);
    /* refused whole: past what slot 0 holds, from an empty slot, a second step's worth of bad ones */
    const kv_copy_t past = {0, 2, N + 1}, empty = {2, 0, 1}, two[2] = {{0, 2, K}, {3, 2, 4}};
    assert_int_equal(stage_copy(&sg, &past, 1, err, sizeof err), TERN_EINVAL);
    assert_non_null(strstr(err, "positions written"));
    assert_int_equal(stage_copy(&sg, &empty, 1, err, sizeof err), TERN_EINVAL);
    assert_int_equal(stage_copy(&sg, two, 2, err, sizeof err), TERN_EINVAL);
    assert_int_equal(memcmp(k0, kv->k, all), 0);
    assert_int_equal(memcmp(v0, kv->v, all), 0);
    assert_int_equal(sg.kv_fill[2], 0);
    /* slot 3 holds other tokens: the copy of slot 0's first K overwrites its rows [0, K) only */
    const kv_copy_t cp[2] = {{0, 2, K}, {0, 3, K}};
    assert_int_equal(stage_copy(&sg, cp, 2, err, sizeof err), 0);
    assert_int_equal(sg.kv_fill[2], K);
    assert_int_equal(sg.kv_fill[3], K);
    size_t rows = (size_t)K * kv->row;
    for (int l = 0; l < kv->n_layer; l++)
        for (int s = 0; s < kv->n_seq; s++) {
            const uint8_t *Kc = kv_cache_k(kv, l, s), *Vc = kv_cache_v(kv, l, s);
            const uint8_t *Ko = k0 + (Kc - kv->k), *Vo = v0 + (Vc - kv->v);
            size_t blk = (size_t)kv->n_ctx * kv->row;
            if (s < 2) {   /* source and reference untouched */
                assert_int_equal(memcmp(Kc, Ko, blk), 0);
                assert_int_equal(memcmp(Vc, Vo, blk), 0);
                continue;
            }
            /* the copies: what slot 1's prefill of the same K tokens computed, byte for byte */
            const uint8_t *Kr = kv_cache_k(kv, l, 1), *Vr = kv_cache_v(kv, l, 1);
            if (memcmp(Kc, Kr, rows) || memcmp(Vc, Vr, rows))
                fail_msg("%s type %d layer %d slot %d: copied rows != a prefill's", path, type, l, s);
            assert_int_equal(memcmp(Kc + rows, Ko + rows, blk - rows), 0);   /* rows from K on as they were */
            assert_int_equal(memcmp(Vc + rows, Vo + rows, blk - rows), 0);
        }
    /* a shift lowers what a slot holds: a copy of more is refused */
    const kv_shift_t sh = {0, 2, 10, N};
    assert_int_equal(stage_shift(&sg, &sh, 1, err, sizeof err), 0);
    assert_int_equal(sg.kv_fill[0], N - 10);
    const kv_copy_t after = {0, 1, N - 9};
    assert_int_equal(stage_copy(&sg, &after, 1, err, sizeof err), TERN_EINVAL);
    free(h), free(k0), free(v0);
    stage_free(&sg);
    tpool_destroy(&tp);
    gguf_close(&g);
}

static void test_model_copy(void **st) {
    (void)st;
    for (int type = 0; type <= KV_Q8_0; type++) {
        copy_case(g_b158, type);
        copy_case(g_llama, type);
    }
}

/* ---- (2) a real model: layer 0 recomputed at the new positions ---------------------------- */

static void model_case(const char *path, int type) {
    char err[256], what[160];
    gguf_t *g;
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    embed_t emb;
    assert_int_equal(embed_init(&emb, g, err, sizeof err), 0);
    tpool_t *tp = tpool_new(2);
    stage_t sg;
    stage_cfg_t c;
    stage_cfg_default(&c);
    hparams_t hp;
    assert_int_equal(hparams_from_gguf(&hp, g, err, sizeof err), 0);
    c.first = 0, c.last = hp.n_layer - 1, c.has_head = 1, c.n_ctx = 48, c.n_seq = 3, c.n_batch = 32, c.kv_type = type;
    if (stage_init(&sg, g, &c, tp, err, sizeof err)) fail_msg("stage: %s", err);
    /* the model's scaling, read here from the file's keys and tensor for the reference */
    const gguf_tensor_t *fft = gguf_find_tensor(g, "rope_freqs.weight");
    const rope_scaling_t *rsc = &hp.rope;
    ref_scale_t rs = {rsc->freq_scale, rsc->type == ROPE_SCALING_YARN ? (rsc->ext_factor < 0 ? 1.0 : rsc->ext_factor) : 0,
                      rsc->n_ctx_orig ? rsc->n_ctx_orig : hp.n_ctx_train, fft ? (const float *)fft->data : NULL};
    const ref_scale_t *rsp = rsc->type != ROPE_SCALING_NONE || fft ? &rs : NULL;
    enum { N = 24 };
    const kv_shift_t sh = {0, 4, 9, N};
    const int E = hp.n_embd, M = N - sh.keep - sh.discard;
    int32_t tok[N], ot;
    int seq[N], pos[N];
    uint8_t smp[N] = {0};
    float lp, *h = malloc((size_t)N * E * 4);
    for (int i = 0; i < N; i++) tok[i] = (int32_t)((i * 37 + 11) % hp.n_vocab), seq[i] = 0, pos[i] = i;
    assert_int_equal(embed_lookup(&emb, tok, N, h), 0);
    assert_int_equal(stage_step(&sg, h, N, tok, seq, pos, smp, &ot, &lp, err, sizeof err), 0);
    kv_cache_t *kv = &sg.fwd.kv;
    size_t lb = (size_t)kv->n_seq * kv->n_ctx * kv->row;   /* one layer's bytes */
    uint8_t *k0 = malloc(lb * kv->n_layer), *v0 = malloc(lb * kv->n_layer);
    memcpy(k0, kv->k, lb * kv->n_layer);
    memcpy(v0, kv->v, lb * kv->n_layer);
    kv_shift_t bad = sh;
    bad.n_past = c.n_ctx + 1;
    assert_int_equal(stage_shift(&sg, &bad, 1, err, sizeof err), TERN_EINVAL);
    assert_int_equal(memcmp(k0, kv->k, lb * kv->n_layer), 0);   /* refused whole */
    assert_int_equal(sg.drawn_off[sh.seq], 0);   /* the refused shift counted nothing */
    assert_int_equal(stage_shift(&sg, &sh, 1, err, sizeof err), 0);
    /* the slot's later draws go on past the dropped positions (keyed on pos + discard) */
    for (int s = 0; s < c.n_seq; s++) assert_int_equal(sg.drawn_off[s], s == sh.seq ? sh.discard : 0);
    /* slot 1: tokens keep + discard .. N-1 at their new positions keep .. */
    for (int i = 0; i < M; i++) seq[i] = 1, pos[i] = sh.keep + i;
    assert_int_equal(embed_lookup(&emb, tok + sh.keep + sh.discard, M, h), 0);
    assert_int_equal(stage_step(&sg, h, M, tok + sh.keep + sh.discard, seq, pos, smp, &ot, &lp, err, sizeof err), 0);
    float *a = malloc((size_t)kv->kv_dim * 4), *b = malloc((size_t)kv->kv_dim * 4);
    for (int l = 0; l < kv->n_layer; l++) {
        const uint8_t *K = kv_cache_k(kv, l, 0), *V = kv_cache_v(kv, l, 0);
        const uint8_t *K1 = kv_cache_k(kv, l, 1), *V1 = kv_cache_v(kv, l, 1);
        const uint8_t *Ko = k0 + ((const uint8_t *)K - kv->k), *Vo = v0 + ((const uint8_t *)V - kv->v);
        assert_int_equal(memcmp(K, Ko, (size_t)sh.keep * kv->row), 0);   /* kept rows as they were */
        assert_int_equal(memcmp(V, Vo, (size_t)sh.keep * kv->row), 0);
        for (int i = 0; i < M; i++) {
            size_t dst = (size_t)(sh.keep + i) * kv->row, src = dst + (size_t)sh.discard * kv->row;
            if (memcmp(V + dst, Vo + src, kv->row)) fail_msg("%s type %d layer %d: value %d not moved", path, type, l, i);
            ops_kv_get(a, K + dst, type, kv->kv_dim);
            ops_kv_get(b, Ko + src, type, kv->kv_dim);
            snprintf(what, sizeof what, "%s type %d layer %d row %d vs rotated old key", path, type, l, sh.keep + i);
            check_keys(a, b, kv->kv_dim, hp.head_dim, hp.rot_dim, hp.rope_neox, hp.rope_base, sh.discard, rsp, type, what);
            if (l) continue;
            /* layer 0: the key recomputed at the new position, and the same value bytes */
            if (memcmp(V + dst, V1 + dst, kv->row)) fail_msg("%s type %d: layer 0 value %d != recomputed", path, type, i);
            ops_kv_get(b, K1 + dst, type, kv->kv_dim);
            for (int j = 0; j < kv->kv_dim; j++) {
                int h0 = j / hp.head_dim * hp.head_dim;
                double amax = 0;
                for (int e = h0; e < h0 + hp.head_dim; e++) amax = fmax(amax, fabs(b[e]));
                /* two roundings apart (the shifted key was stored twice); an f16 rotation also turns the
                 * rounding of the pair's other element (up to |partner|/2048) into this one */
                int hi = j - h0, half = hp.rot_dim / 2, pj = hi >= hp.rot_dim ? j
                    : hp.rope_neox ? h0 + (hi < half ? hi + half : hi - half) : h0 + (hi ^ 1);
                double tol = 2 * tol_for(type, b[j], amax) + (type == KV_F16 ? fabs(b[pj]) / 2048 : 0);
                if (fabs(a[j] - b[j]) > tol)
                    fail_msg("%s type %d: layer 0 row %d dim %d: shifted %.9g, recomputed %.9g (amax %.3g)", path, type,
                             sh.keep + i, j, a[j], b[j], amax);
            }
        }
    }
    sampler_params_t sp;
    sampler_params_default(&sp);
    stage_seq_start(&sg, sh.seq, &sp);   /* a new sequence in the slot draws from its position again */
    assert_int_equal(sg.drawn_off[sh.seq], 0);
    free(a), free(b), free(h), free(k0), free(v0);
    stage_free(&sg);
    tpool_destroy(&tp);
    gguf_close(&g);
}

static void test_model_shift(void **st) {
    (void)st;
    for (int type = 0; type <= KV_Q8_0; type++) {
        model_case(g_b158, type);
        model_case(g_llama, type);
        model_case(g_yarn, type);
        model_case(g_l3, type);
    }
}

/* ---- (3) the same steps through every path ------------------------------------------------- */

#define GEN 9
#define TOPN 4
typedef struct trace {
    int n;
    int32_t tok[2 * (GEN + 1)];
    float lp[2 * (GEN + 1)], top_lp[2 * (GEN + 1) * TOPN];
    int32_t top[2 * (GEN + 1) * TOPN];
} trace_t;

/* slot 0: a 20-token prompt, slot 1: 6 tokens; then GEN decode steps of both. Before decode step
 * 2 slot 0 shifts; before step 5 both shift (two in one step). shifts 0: the same steps with
 * the shifts left out (positions as shifted). */
static void drive(pipeline_t *p, const embed_t *emb, int shifts, trace_t *t) {
    sampler_params_t sp;
    sampler_params_default(&sp);
    sp.temp = 0, sp.logprobs = 1, sp.top_logprobs = TOPN;
    assert_int_equal(p->ops->seq_start(p, 0, &sp), 0);
    assert_int_equal(p->ops->seq_start(p, 1, &sp), 0);
    enum { NP = 26 };
    int32_t tok[NP], out_tok[NP], top[NP * SAMPLER_TOP_MAX];
    int seq[NP], pos[NP];
    uint8_t smp[NP] = {0};
    float lp[NP], top_lp[NP * SAMPLER_TOP_MAX], *h = malloc((size_t)NP * p->n_embd * 4);
    for (int i = 0; i < NP; i++) {
        tok[i] = (int32_t)((i * 53 + 5) % p->n_vocab);
        seq[i] = i < 20 ? 0 : 1;
        pos[i] = i < 20 ? i : i - 20;
    }
    smp[19] = smp[NP - 1] = 1;
    int n = NP, past[2] = {20, 6};
    memset(t, 0, sizeof *t);
    for (int k = 0; k <= GEN; k++) {
        step_shift_t sh[2];
        int nsh = 0;
        if (k == 2) sh[nsh++] = (step_shift_t){0, 2, 7, past[0]};
        if (k == 5) sh[nsh++] = (step_shift_t){1, 0, 3, past[1]}, sh[nsh++] = (step_shift_t){0, 1, 2, past[0]};
        for (int i = 0; i < nsh; i++) past[sh[i].seq] -= sh[i].discard;
        if (k > 0) {   /* decode: each slot's last sampled token at its next position */
            n = 2;
            for (int s = 0; s < 2; s++) tok[s] = out_tok[s], seq[s] = s, pos[s] = past[s], smp[s] = 1;
        }
        assert_int_equal(embed_lookup(emb, tok, n, h), 0);
        step_t st;
        memset(&st, 0, sizeof st);
        st.id = (uint64_t)k + 1, st.n = n, st.tokens = tok, st.seq = seq, st.pos = pos, st.sample = smp, st.h = h;
        st.out_tok = out_tok, st.out_lp = lp, st.out_top = top, st.out_top_lp = top_lp;
        st.n_shift = shifts ? nsh : 0, st.shift = sh;
        assert_int_equal(p->ops->submit(p, &st), 0);
        step_t *done = p->ops->wait(p, 60000);
        assert_ptr_equal(done, &st);
        if (st.rc < 0) fail_msg("step %d: %s", k, st.err);
        assert_int_equal(st.n_out, 2);
        assert_int_equal(st.n_top, TOPN);
        for (int j = 0; j < 2; j++, t->n++) {
            t->tok[t->n] = out_tok[j], t->lp[t->n] = lp[j];
            memcpy(t->top + t->n * TOPN, top + j * TOPN, TOPN * 4);
            memcpy(t->top_lp + t->n * TOPN, top_lp + j * TOPN, TOPN * 4);
        }
        for (int s = 0; s < 2 && k > 0; s++) past[s]++;
    }
    free(h);
}

/* slot 0: a 20-token prompt (greedy); slot 1: the same prompt, sampled at temperature 0.9 with its
 * own seed — copy 1: step 2 copies slot 0's first 19 positions into slot 1, which feeds only the
 * last prompt token; copy 0: slot 1 prefills all 20 in step 2. Then GEN decode steps of both. */
static void drive_copy(pipeline_t *p, const embed_t *emb, int copy, trace_t *t) {
    sampler_params_t sp0, sp1;
    sampler_params_default(&sp0);
    sp0.temp = 0, sp0.logprobs = 1, sp0.top_logprobs = TOPN;
    sp1 = sp0;
    sp1.temp = 0.9f, sp1.seed = 5;
    assert_int_equal(p->ops->seq_start(p, 0, &sp0), 0);
    assert_int_equal(p->ops->seq_start(p, 1, &sp1), 0);
    enum { NP = 21 };
    int32_t prompt[20], tok[NP], out_tok[NP], top[NP * SAMPLER_TOP_MAX];
    int seq[NP], pos[NP];
    uint8_t smp[NP];
    float lp[NP], top_lp[NP * SAMPLER_TOP_MAX], *h = malloc((size_t)NP * p->n_embd * 4);
    for (int i = 0; i < 20; i++) prompt[i] = (int32_t)((i * 29 + 3) % p->n_vocab);
    int past[2] = {0, 0};
    int32_t next[2] = {0, 0};
    memset(t, 0, sizeof *t);
    for (int k = 0; k <= GEN; k++) {   /* 1 + 2·GEN samples: the trace holds 2·(GEN + 1) */
        int n = 0;
        step_copy_t cp = {0, 1, 19};
        if (k == 0) {
            for (int i = 0; i < 20; i++) tok[n] = prompt[i], seq[n] = 0, pos[n] = i, smp[n++] = i == 19;
        } else {
            tok[n] = next[0], seq[n] = 0, pos[n] = past[0], smp[n++] = 1;
            if (k == 1)
                for (int i = copy ? 19 : 0; i < 20; i++) tok[n] = prompt[i], seq[n] = 1, pos[n] = i, smp[n++] = i == 19;
            else
                tok[n] = next[1], seq[n] = 1, pos[n] = past[1], smp[n++] = 1;
        }
        assert_int_equal(embed_lookup(emb, tok, n, h), 0);
        step_t st;
        memset(&st, 0, sizeof st);
        st.id = (uint64_t)k + 1, st.n = n, st.tokens = tok, st.seq = seq, st.pos = pos, st.sample = smp, st.h = h;
        st.out_tok = out_tok, st.out_lp = lp, st.out_top = top, st.out_top_lp = top_lp;
        st.n_copy = copy && k == 1, st.copy = &cp;
        assert_int_equal(p->ops->submit(p, &st), 0);
        step_t *done = p->ops->wait(p, 60000);
        assert_ptr_equal(done, &st);
        if (st.rc < 0) fail_msg("step %d: %s", k, st.err);
        assert_int_equal(st.n_out, k == 0 ? 1 : 2);
        for (int j = 0; j < st.n_out; j++, t->n++) {
            int s = k == 0 ? 0 : j;
            next[s] = out_tok[j];
            past[s] = k == 0 ? 20 : k == 1 && s == 1 ? 20 : past[s] + 1;
            t->tok[t->n] = out_tok[j], t->lp[t->n] = lp[j];
            memcpy(t->top + t->n * TOPN, top + j * TOPN, TOPN * 4);
            memcpy(t->top_lp + t->n * TOPN, top_lp + j * TOPN, TOPN * 4);
        }
    }
    free(h);
}

static void assert_same(const trace_t *a, const trace_t *b, const char *what) {
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++)
        if (a->tok[i] != b->tok[i] || memcmp(&a->lp[i], &b->lp[i], 4) ||
            memcmp(a->top + i * TOPN, b->top + i * TOPN, TOPN * 4) || memcmp(a->top_lp + i * TOPN, b->top_lp + i * TOPN, TOPN * 4))
            fail_msg("%s: sample %d: token %d (%.9g) vs %d (%.9g), or their alternatives", what, i, a->tok[i], a->lp[i],
                     b->tok[i], b->lp[i]);
}

/* two worker threads on ipc:// (ZeroMQ, as separate processes would be), layers pinned */
static int zmq_pipeline(pipeline_t **out, const gguf_t *g, const char *path, const stage_cfg_t *cfg,
                        worker_thread_t **w, char *err, size_t errlen) {
    cluster_t cl;
    assert_int_equal(cluster_init(&cl), 0);
    cl.workers = calloc(2, sizeof *cl.workers);
    cl.name = strdup("shift");
    cl.heartbeat_interval_ms = 60000, cl.heartbeat_timeout_ms = 600000, cl.quiet = 1;
    const int first[2] = {0, 2}, last[2] = {1, 2};
    for (int i = 0; i < 2; i++) {
        cluster_worker_t *cw = &cl.workers[cl.n_workers++];
        char name[16], ep[128];
        snprintf(name, sizeof name, "sw%d", i);
        snprintf(ep, sizeof ep, "ipc://%s/w%d", g_dir, i);
        cw->name = strdup(name), cw->endpoint = strdup(ep), cw->first = first[i], cw->last = last[i], cw->threads = 2;
        worker_cfg_t wc;
        memset(&wc, 0, sizeof wc);
        wc.listen = cw->endpoint, wc.model = path, wc.name = cw->name, wc.threads = 2;
        int rc = worker_thread_start(&w[i], &wc, err, errlen);
        if (rc < 0) {
            cluster_free(&cl);
            return rc;
        }
    }
    return cluster_pipeline_start(out, g, path, &cl, cfg, err, errlen);
}

/* the shift steps through the direct stages, the embedded cluster and two ZeroMQ workers: the same
 * bits, and not those of the steps unshifted. c->rope_set: RoPE overrides, which reach the workers
 * in LoadShard.rope. */
static void shift_paths(const char *path, const stage_cfg_t *cfg) {
    char err[512];
    gguf_t *g;
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    embed_t emb;
    assert_int_equal(embed_init(&emb, g, err, sizeof err), 0);
    stage_cfg_t c = *cfg;
    trace_t direct, unshifted, emb_t, zmq_t;
    tpool_t *tp = tpool_new(2);
    pipeline_t *p = NULL;
    if (pipeline_local_new(&p, g, &c, 2, tp, err, sizeof err) < 0) fail_msg("local: %s", err);
    drive(p, &emb, 1, &direct);
    pipeline_destroy(&p);
    if (pipeline_local_new(&p, g, &c, 2, tp, err, sizeof err) < 0) fail_msg("local: %s", err);
    drive(p, &emb, 0, &unshifted);
    pipeline_destroy(&p);
    tpool_destroy(&tp);
    /* the shifts change the outcome (so a path that dropped them would show) */
    assert_true(memcmp(direct.top_lp, unshifted.top_lp, sizeof direct.top_lp) != 0);
    if (cluster_pipeline_new_embedded(&p, g, path, &c, 2, 0, 1, err, sizeof err) < 0) fail_msg("embedded: %s", err);
    drive(p, &emb, 1, &emb_t);
    pipeline_destroy(&p);
    assert_same(&direct, &emb_t, "embedded cluster vs direct");
    worker_thread_t *w[2] = {NULL, NULL};
    int rc = zmq_pipeline(&p, g, path, &c, w, err, sizeof err);
    if (rc == 0) drive(p, &emb, 1, &zmq_t);
    for (int i = 0; i < 2; i++) worker_thread_stop(&w[i]);   /* workers first, as cluster_embedded does */
    pipeline_destroy(&p);
    if (rc < 0) fail_msg("zmq cluster: %s", err);
    assert_same(&direct, &zmq_t, "ZeroMQ workers vs direct");
    if (c.rope_set) {   /* the override really changed the rotation */
        stage_cfg_t plain = c;
        plain.rope_set = 0;
        tp = tpool_new(2);
        if (pipeline_local_new(&p, g, &plain, 2, tp, err, sizeof err) < 0) fail_msg("local: %s", err);
        drive(p, &emb, 1, &unshifted);
        pipeline_destroy(&p);
        tpool_destroy(&tp);
        assert_true(memcmp(direct.top_lp, unshifted.top_lp, sizeof direct.top_lp) != 0);
    }
    gguf_close(&g);
}

static void test_paths_agree(void **st) {
    (void)st;
    char err[512];
    stage_cfg_t c;
    stage_cfg_default(&c);
    c.n_ctx = 40, c.n_seq = 2, c.n_batch = 32, c.kv_type = KV_F16;
    shift_paths(g_b158, &c);
    shift_paths(g_yarn, &c);   /* YaRN with frequency factors: a shift turns keys without the magnitude */
    /* an override of the file's RoPE (linear, another base and magnitude), as the coordinator
     * resolves it: through LoadShard.rope to the inproc and ZeroMQ workers */
    stage_cfg_t o = c;
    hparams_t hp;
    gguf_t *g;
    assert_int_equal(gguf_open(&g, g_yarn, err, sizeof err), 0);
    assert_int_equal(hparams_from_gguf(&hp, g, err, sizeof err), 0);
    gguf_close(&g);
    o.rope_set = 1, o.rope_base = 10000.0f, o.rope = hp.rope;
    o.rope.type = ROPE_SCALING_LINEAR, o.rope.freq_scale = 0.5f, o.rope.attn_factor = 1.1f;
    shift_paths(g_yarn, &o);
    assert_int_equal(gguf_open(&g, g_b158, err, sizeof err), 0);
    embed_t emb;
    assert_int_equal(embed_init(&emb, g, err, sizeof err), 0);
    tpool_t *tp;
    pipeline_t *p = NULL;
    worker_thread_t *w[2] = {NULL, NULL};
    int rc;
    /* a prompt copied into slot 1 == slot 1 prefilling it, through every path */
    trace_t cp_direct, cp_ref, cp_emb, cp_zmq;
    tp = tpool_new(2);
    if (pipeline_local_new(&p, g, &c, 2, tp, err, sizeof err) < 0) fail_msg("local: %s", err);
    drive_copy(p, &emb, 0, &cp_ref);
    pipeline_destroy(&p);
    if (pipeline_local_new(&p, g, &c, 2, tp, err, sizeof err) < 0) fail_msg("local: %s", err);
    drive_copy(p, &emb, 1, &cp_direct);
    pipeline_destroy(&p);
    tpool_destroy(&tp);
    assert_same(&cp_ref, &cp_direct, "copied prompt vs prefilled prompt");
    if (cluster_pipeline_new_embedded(&p, g, g_b158, &c, 2, 0, 1, err, sizeof err) < 0) fail_msg("embedded: %s", err);
    drive_copy(p, &emb, 1, &cp_emb);
    pipeline_destroy(&p);
    assert_same(&cp_ref, &cp_emb, "copied prompt, embedded cluster");
    rc = zmq_pipeline(&p, g, g_b158, &c, w, err, sizeof err);
    if (rc == 0) drive_copy(p, &emb, 1, &cp_zmq);
    for (int i = 0; i < 2; i++) worker_thread_stop(&w[i]);
    pipeline_destroy(&p);
    if (rc < 0) fail_msg("zmq cluster: %s", err);
    assert_same(&cp_ref, &cp_zmq, "copied prompt, ZeroMQ workers");
    /* a bad shift: the step fails with the reason, nothing crashes */
    if (pipeline_local_new(&p, g, &c, 2, NULL, err, sizeof err) < 0) fail_msg("local: %s", err);
    step_shift_t sh = {0, 0, 5, 41};
    int32_t tok = 1, ot;
    int seq = 0, pos = 0;
    uint8_t smp = 0;
    float lp, *h = malloc((size_t)p->n_embd * 4);
    assert_int_equal(embed_lookup(&emb, &tok, 1, h), 0);
    step_t s;
    memset(&s, 0, sizeof s);
    s.id = 1, s.n = 1, s.tokens = &tok, s.seq = &seq, s.pos = &pos, s.sample = &smp, s.h = h, s.out_tok = &ot, s.out_lp = &lp;
    s.n_shift = 1, s.shift = &sh;
    assert_int_equal(p->ops->submit(p, &s), 0);
    assert_ptr_equal(p->ops->wait(p, 1000), &s);
    assert_true(s.rc < 0);
    assert_non_null(strstr(s.err, "n_past > the context"));
    /* a copy from a slot that holds nothing, and a copy into itself: the step fails, says why */
    step_copy_t cpb = {1, 0, 3};
    s.n_shift = 0, s.n_copy = 1, s.copy = &cpb;
    assert_int_equal(p->ops->submit(p, &s), 0);
    assert_ptr_equal(p->ops->wait(p, 1000), &s);
    assert_true(s.rc < 0);
    assert_non_null(strstr(s.err, "positions written"));
    cpb = (step_copy_t){0, 0, 1};
    assert_int_equal(p->ops->submit(p, &s), 0);
    assert_ptr_equal(p->ops->wait(p, 1000), &s);
    assert_true(s.rc < 0);
    assert_non_null(strstr(s.err, "into itself"));
    pipeline_destroy(&p);
    free(h);
    gguf_close(&g);
}

static int setup(void **st) {
    (void)st;
    snprintf(g_dir, sizeof g_dir, "/tmp/tern-shift-XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    snprintf(g_b158, sizeof g_b158, "%s/b.gguf", g_dir);
    snprintf(g_llama, sizeof g_llama, "%s/l.gguf", g_dir);
    snprintf(g_yarn, sizeof g_yarn, "%s/y.gguf", g_dir);
    snprintf(g_l3, sizeof g_l3, "%s/l3.gguf", g_dir);
    char *a1[] = {"mkmodel", "--arch", "bitnet-b1.58", "--preset", "tiny", "--layers", "3", "--type", "i2_s", "--seed",
                  "31", "-o", g_b158, NULL};
    char *a2[] = {"mkmodel", "--arch", "llama", "--preset", "tiny", "--layers", "2", "--type", "tq2_0", "--seed", "32",
                  "-o", g_llama, NULL};
    /* YaRN (factor 4 over a 16-position original context, magnitude 1.2) with llama3 factors too;
     * and a NEOX model with llama3 frequency factors alone */
    char *a3[] = {"mkmodel", "--arch", "llama", "--preset", "tiny", "--layers", "3", "--type", "tq2_0", "--seed", "33",
                  "--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", "16", "--yarn-attn-factor", "1.2",
                  "--rope-freqs", "8", "-o", g_yarn, NULL};
    char *a4[] = {"mkmodel", "--arch", "bitnet-b1.58", "--preset", "tiny", "--layers", "2", "--type", "i2_s", "--seed",
                  "34", "--rope-freqs", "8", "-o", g_l3, NULL};
    if (mkmodel_main(13, a1) != 0 || mkmodel_main(13, a2) != 0 || mkmodel_main(23, a3) != 0 || mkmodel_main(15, a4) != 0) {
        fprintf(stderr, "mkmodel failed\n");
        return -1;
    }
    return 0;
}

static int teardown(void **st) {
    (void)st;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_shift),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_model_shift),
        cmocka_unit_test(test_copy_check),
        cmocka_unit_test(test_model_copy),
        cmocka_unit_test(test_paths_agree),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
