/* test_forward: the real forward pass (ternary kernels, int8 activations, batched prefill,
 * KV cache) against a plain float reference written here from the model's definition:
 * weights dequantised to f32, activations of every ternary linear quantised per token to int8
 * with scale 127/max|x| (BitNet b1.58's rule — part of the model, not an approximation), all
 * other maths in double. For every arch and ternary type, for prompt and decode positions, at 1
 * and 2 threads. Tolerance on max |Δlogit| / max|logit| per position: see compare(); plus the
 * same argmax wherever the reference's top-2 margin exceeds twice the error. Embeddings
 * (test_embd): the scheduler's pooled rows against the reference's normed final hidden states. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "core/gguf.h"
#include "core/half.h"
#include "core/model_spec.h"
#include "core/types.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "worker/forward.h"
#include "worker/stage.h"
#include "core/err.h"
#include "coordinator/pipeline_local.h"
#include "coordinator/sched.h"

int mkmodel_main(int argc, char **argv);

/* ---- reference -------------------------------------------------------------------------- */
typedef struct ref_lin { int rows, cols; float *w; int ternary, q8, qk; } ref_lin_t;
typedef struct ref_layer {
    float *an, *asn, *fn, *fsn;
    ref_lin_t q, k, v, o, g, u, d;
} ref_layer_t;
typedef struct ref_model {
    hparams_t hp;
    float *emb;         /* (vocab, embd) */
    float *out_norm;
    float *rope_freqs;  /* (rot_dim/2,) the file's frequency factors, or NULL */
    ref_lin_t head;
    ref_layer_t *L;
    double *kc, *vc;    /* (layer, ctx, kvdim) */
    int ctx;
    int kv_f16;         /* keys and values are stored as f16, as in the real cache */
    int kv_q8;          /* ... as ggml Q8_0 blocks of each position's row (quantised from floats) */
} ref_model_t;

static float *deq(const gguf_t *g, const char *name, int64_t *cols, int64_t *rows) {
    const gguf_tensor_t *t = gguf_find_tensor(g, name);
    if (!t) return NULL;
    *cols = t->ne[0];
    *rows = t->ne[1];
    float *y = malloc((size_t)(*cols * *rows) * sizeof(float));
    assert_int_equal(dequant_rows(t->type, t->data, *rows, *cols, 0, *rows, y), 0);
    return y;
}

static void ref_lin_load(const gguf_t *g, const char *name, ref_lin_t *l) {
    int64_t c, r;
    l->w = deq(g, name, &c, &r);
    assert_non_null(l->w);
    l->cols = (int)c;
    l->rows = (int)r;
    l->ternary = type_traits(gguf_find_tensor(g, name)->type)->ternary;
    int type = gguf_find_tensor(g, name)->type;
    l->q8 = type == TT_Q8_0 || type == TT_Q4_0 || type == TT_Q5_0;
    l->qk = type == TT_Q4_K || type == TT_Q5_K || type == TT_Q6_K;
}

static void ref_load(ref_model_t *m, const gguf_t *g, int ctx) {
    char err[256], name[128];
    memset(m, 0, sizeof *m);   /* kv_f16 off unless the caller sets it */
    assert_int_equal(hparams_from_gguf(&m->hp, g, err, sizeof err), 0);
    const hparams_t *hp = &m->hp;
    int64_t c, r;
    m->emb = deq(g, "token_embd.weight", &c, &r);
    m->out_norm = deq(g, "output_norm.weight", &c, &r);
    m->rope_freqs = deq(g, "rope_freqs.weight", &c, &r);
    ref_lin_load(g, hp->tied ? "token_embd.weight" : "output.weight", &m->head);
    m->L = calloc((size_t)hp->n_layer, sizeof(ref_layer_t));
    for (int l = 0; l < hp->n_layer; l++) {
        ref_layer_t *L = &m->L[l];
#define V(field, role) do { tensor_block_name(name, sizeof name, l, role); L->field = deq(g, name, &c, &r); } while (0)
#define M(field, role) do { tensor_block_name(name, sizeof name, l, role); ref_lin_load(g, name, &L->field); } while (0)
        V(an, TR_ATTN_NORM); V(asn, TR_ATTN_SUB_NORM); V(fn, TR_FFN_NORM); V(fsn, TR_FFN_SUB_NORM);
        M(q, TR_ATTN_Q); M(k, TR_ATTN_K); M(v, TR_ATTN_V); M(o, TR_ATTN_OUT);
        M(g, TR_FFN_GATE); M(u, TR_FFN_UP); M(d, TR_FFN_DOWN);
#undef V
#undef M
    }
    m->ctx = ctx;
    size_t kvd = (size_t)hp->n_head_kv * hp->head_dim;
    m->kc = calloc((size_t)hp->n_layer * ctx * kvd, sizeof(double));
    m->vc = calloc((size_t)hp->n_layer * ctx * kvd, sizeof(double));
}

static void ref_free(ref_model_t *m) {
    for (int l = 0; l < m->hp.n_layer; l++) {
        ref_layer_t *L = &m->L[l];
        free(L->an); free(L->asn); free(L->fn); free(L->fsn);
        free(L->q.w); free(L->k.w); free(L->v.w); free(L->o.w); free(L->g.w); free(L->u.w); free(L->d.w);
    }
    free(m->L); free(m->emb); free(m->out_norm); free(m->rope_freqs); free(m->head.w); free(m->kc); free(m->vc);
}

static void ref_rmsnorm(double *x, int n, const float *w, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) x[i] = x[i] * r * (w ? w[i] : 1.0);
}

/* y = W·x' where x' is x quantised to int8 per token when W is ternary (the model's rule), or
 * per 32-block like ggml's q8_0 when W is Q8_0/Q4_0/Q5_0, or per 256-block like ggml's q8_K
 * (f32 scale) when W is a K-quant (ggml's definitions of those products) */
static void ref_matvec(const ref_lin_t *l, const double *x, double *y) {
    double *xq = malloc((size_t)l->cols * sizeof(double));
    if (l->qk) {
        for (int b = 0; b < l->cols; b += 256) {
            float amax = 0;
            for (int i = b; i < b + 256; i++) amax = fmaxf(amax, fabsf((float)x[i]));
            float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
            for (int i = b; i < b + 256; i++) xq[i] = roundf((float)x[i] * id) * (double)d;
        }
    }
    if (l->q8 || l->qk) {
        for (int b = 0; b < l->cols; b += 32) {
            /* ggml's quantize_row_q8_0_ref: q = round(x / d) with d = amax/127, stored as f16 */
            float amax = 0;
            if (l->qk) break;
            for (int i = b; i < b + 32; i++) amax = fmaxf(amax, fabsf((float)x[i]));
            float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f, d16 = f16_to_f32(f32_to_f16(d));
            for (int i = b; i < b + 32; i++) xq[i] = roundf((float)x[i] * id) * (double)d16;
        }
        for (int r = 0; r < l->rows; r++) {
            double acc = 0;
            for (int c = 0; c < l->cols; c++) acc += (double)l->w[(size_t)r * l->cols + c] * xq[c];
            y[r] = acc;
        }
        free(xq);
        return;
    }
    double mx = 0;
    for (int i = 0; i < l->cols; i++) mx = fmax(mx, fabs(x[i]));
    double s = mx > 0 ? 127.0 / (float)mx : 1.0;
    for (int i = 0; i < l->cols; i++) {
        if (!l->ternary) { xq[i] = x[i]; continue; }
        double q = nearbyint((double)((float)x[i] * (float)s));
        xq[i] = fmax(-127, fmin(127, q)) / s;
    }
    for (int r = 0; r < l->rows; r++) {
        double acc = 0;
        for (int c = 0; c < l->cols; c++) acc += (double)l->w[(size_t)r * l->cols + c] * xq[c];
        y[r] = acc;
    }
    free(xq);
}

/* RoPE with the model's scaling, from the definitions: theta_i = pos base^(-2i/rot) / ff_i
 * (extrapolated); linear and YaRN interpolate it by freq_scale = 1/factor; YaRN keeps the
 * extrapolated angle for the fast pairs, the interpolated one for the slow, and mixes them on a
 * linear ramp between the pairs that turn beta_fast and beta_slow times over the original context,
 * and scales q and k by attn_factor · (1 + 0.1 ln factor) */
static void ref_rope(const ref_model_t *m, double *x, int nh, int pos) {
    const hparams_t *hp = &m->hp;
    const rope_scaling_t *r = &hp->rope;
    int hd = hp->head_dim, rot = hp->rot_dim, neox = hp->rope_neox;
    double base = hp->rope_base, ext = r->type == ROPE_SCALING_YARN ? (r->ext_factor < 0 ? 1 : r->ext_factor) : 0;
    double orig = r->n_ctx_orig ? r->n_ctx_orig : hp->n_ctx_train, tau = 2 * 3.14159265358979323846;
    double lo = fmax(0, floor(rot * log(orig / (r->beta_fast * tau)) / (2 * log(base))));
    double hi = fmin(rot - 1, ceil(rot * log(orig / (r->beta_slow * tau)) / (2 * log(base))));
    double mag = r->attn_factor * (ext != 0 ? 1 + 0.1 * log(1 / (double)r->freq_scale) : 1);
    for (int h = 0; h < nh; h++) {
        double *v = x + h * hd;
        for (int i = 0; i < rot / 2; i++) {
            double ex = pos * pow(base, -2.0 * i / rot) / (m->rope_freqs ? m->rope_freqs[i] : 1.0);
            double th = (r->type == ROPE_SCALING_NONE ? 1.0 : r->freq_scale) * ex;
            if (ext != 0) {
                double mix = (1 - fmin(1, fmax(0, (i - lo) / fmax(0.001, hi - lo)))) * ext;
                th = th * (1 - mix) + ex * mix;
            }
            int a = neox ? i : 2 * i, b = neox ? i + rot / 2 : 2 * i + 1;
            double x0 = v[a], x1 = v[b];
            v[a] = (x0 * cos(th) - x1 * sin(th)) * mag;
            v[b] = (x0 * sin(th) + x1 * cos(th)) * mag;
        }
    }
}

/* one token at position pos → logits (vocab), and when hn is not NULL the final hidden state after
 * the output norm (n_embd) */
static void ref_token_h(ref_model_t *m, int tok, int pos, double *logits, double *hn) {
    const hparams_t *hp = &m->hp;
    int E = hp->n_embd, F = hp->n_ff, hd = hp->head_dim, nh = hp->n_head, nkv = hp->n_head_kv;
    int qd = nh * hd, kvd = nkv * hd;
    double *h = calloc(E, sizeof(double)), *n = calloc(E, sizeof(double)), *q = calloc(qd, sizeof(double));
    double *k = calloc(kvd, sizeof(double)), *v = calloc(kvd, sizeof(double)), *a = calloc(qd, sizeof(double));
    double *o = calloc(E, sizeof(double)), *g = calloc(F, sizeof(double)), *u = calloc(F, sizeof(double));
    double *sc = calloc(m->ctx, sizeof(double));
    for (int i = 0; i < E; i++) h[i] = m->emb[(size_t)tok * E + i];
    for (int l = 0; l < hp->n_layer; l++) {
        ref_layer_t *L = &m->L[l];
        memcpy(n, h, E * sizeof(double));
        ref_rmsnorm(n, E, L->an, hp->norm_eps);
        ref_matvec(&L->q, n, q);
        ref_matvec(&L->k, n, k);
        ref_matvec(&L->v, n, v);
        ref_rope(m, q, nh, pos);
        ref_rope(m, k, nkv, pos);
        double *kc = m->kc + (size_t)l * m->ctx * kvd, *vc = m->vc + (size_t)l * m->ctx * kvd;
        for (int i = 0; i < kvd; i++) {
            kc[(size_t)pos * kvd + i] = m->kv_f16 ? f16_to_f32(f32_to_f16((float)k[i])) : k[i];
            vc[(size_t)pos * kvd + i] = m->kv_f16 ? f16_to_f32(f32_to_f16((float)v[i])) : v[i];
        }
        if (m->kv_q8) {   /* the cache's rounding: float row → Q8_0 → float */
            float *rf = malloc((size_t)kvd * 4);
            uint8_t *qb = malloc((size_t)kvd / 32 * 34);
            double *rows[2] = {kc + (size_t)pos * kvd, vc + (size_t)pos * kvd};
            const double *src[2] = {k, v};
            for (int r = 0; r < 2; r++) {
                for (int i = 0; i < kvd; i++) rf[i] = (float)src[r][i];
                assert_int_equal(quant_from_f32(TT_Q8_0, rf, 1, kvd, qb), 0);
                assert_int_equal(dequant_rows(TT_Q8_0, qb, 1, kvd, 0, 1, rf), 0);
                for (int i = 0; i < kvd; i++) rows[r][i] = rf[i];
            }
            free(rf);
            free(qb);
        }
        for (int hh = 0; hh < nh; hh++) {
            int kh = hh / (nh / nkv);
            double mx = -1e300, sum = 0;
            for (int p = 0; p <= pos; p++) {
                double d = 0;
                for (int i = 0; i < hd; i++) d += q[hh * hd + i] * kc[(size_t)p * kvd + kh * hd + i];
                sc[p] = d / sqrt((double)hd);
                mx = fmax(mx, sc[p]);
            }
            for (int p = 0; p <= pos; p++) { sc[p] = exp(sc[p] - mx); sum += sc[p]; }
            for (int i = 0; i < hd; i++) {
                double acc = 0;
                for (int p = 0; p <= pos; p++) acc += sc[p] / sum * vc[(size_t)p * kvd + kh * hd + i];
                a[hh * hd + i] = acc;
            }
        }
        if (L->asn) ref_rmsnorm(a, qd, L->asn, hp->norm_eps);
        ref_matvec(&L->o, a, o);
        for (int i = 0; i < E; i++) h[i] += o[i];
        memcpy(n, h, E * sizeof(double));
        ref_rmsnorm(n, E, L->fn, hp->norm_eps);
        ref_matvec(&L->g, n, g);
        ref_matvec(&L->u, n, u);
        for (int i = 0; i < F; i++) {
            double x = g[i];
            g[i] = (hp->act == ACT_RELU2 ? (x > 0 ? x * x : 0) : x / (1 + exp(-x))) * u[i];
        }
        if (L->fsn) ref_rmsnorm(g, F, L->fsn, hp->norm_eps);
        ref_matvec(&L->d, g, o);
        for (int i = 0; i < E; i++) h[i] += o[i];
    }
    ref_rmsnorm(h, E, m->out_norm, hp->norm_eps);
    if (hn) memcpy(hn, h, (size_t)E * sizeof(double));
    ref_matvec(&m->head, h, logits);
    free(h); free(n); free(q); free(k); free(v); free(a); free(o); free(g); free(u); free(sc);
}

static void ref_token(ref_model_t *m, int tok, int pos, double *logits) { ref_token_h(m, tok, pos, logits, NULL); }

/* ---- the test ----------------------------------------------------------------------------- */
static char g_dir[256];
static const char *g_rope_args[16];   /* extra mkmodel flags (RoPE scaling) for compare(); NULL-ended */
static const char *g_rope_tag = "";  /* and the file name's suffix for them */

/* a q8_0 head is written untied (output.weight), so the head really is Q8_0; head "H+E" is an lm
 * head of type H and token embeddings of type E (llama-quantize's Q6_K head + Q4_K embeddings) */
static void make_model(const char *path, const char *arch, const char *type, const char *head) {
    char h[32], *e = NULL;
    snprintf(h, sizeof h, "%s", head);
    if ((e = strchr(h, '+'))) *e++ = 0;
    char *argv[] = {"mkmodel", "--arch", (char *)arch, "--preset", "tiny", "--type", (char *)type, "--head-type",
                    h, "--seed", "7", "-o", (char *)path, "--untied", NULL, NULL, NULL};
    int argc = strcmp(h, "q8_0") ? 13 : 14;
    if (e) { argv[14] = "--embd-type"; argv[15] = e; argc = 16; }
    char *all[32];
    int n = 0;
    for (int i = 0; i < argc; i++) all[n++] = argv[i];
    for (int i = 0; g_rope_args[i]; i++) all[n++] = (char *)g_rope_args[i];
    all[n] = NULL;
    assert_int_equal(mkmodel_main(n, all), 0);
}

/* Every position's relative logit error must be <= loose, and at least 80% of them <= tight: an
 * activation that lies within float rounding of an int8 rounding boundary may round the other
 * way in the reference (a "flip"), which moves that position's logits by up to ~1e-2 — the rest
 * must agree to float precision. */
static void compare(const char *arch, const char *type, const char *head, int kv_type, int threads, double tight,
                    double loose) {
    double rtol = loose;
    int n_tight = 0;
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/%s-%s-%s%s.gguf", g_dir, arch, type, head, g_rope_tag);
    if (access(path, R_OK) != 0) make_model(path, arch, type, head);
    gguf_t *g;
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    const int ctx = 24, n_prompt = 11, n_decode = 5;
    ref_model_t ref;
    ref_load(&ref, g, ctx);
    ref.kv_f16 = kv_type == KV_F16;
    ref.kv_q8 = kv_type == KV_Q8_0;
    shard_t s;
    int rc = shard_load(&s, g, 0, ref.hp.n_layer - 1, 1, NULL, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    tpool_t *tp = tpool_new(threads);
    forward_t f;
    assert_int_equal(forward_init(&f, &s, ctx, 2, 4, 4, kv_type, tp, err, sizeof err), 0);
    int E = ref.hp.n_embd, V = ref.hp.n_vocab, n = n_prompt + n_decode;
    float *h = malloc((size_t)n * E * sizeof(float)), *logits = malloc((size_t)n * V * sizeof(float));
    double *rl = malloc((size_t)V * sizeof(double));
    int seq[32], pos[32], rows[32], toks[32];
    for (int i = 0; i < n; i++) { toks[i] = (i * 37 + 5) % V; seq[i] = 1; pos[i] = i; rows[i] = i; }
    /* prompt in one call (micro-batches of 4 inside), then decode steps one at a time */
    for (int i = 0; i < n_prompt; i++) memcpy(h + (size_t)i * E, ref.emb + (size_t)toks[i] * E, E * sizeof(float));
    forward_layers(&f, h, n_prompt, seq, pos);
    forward_logits(&f, h, n_prompt, rows, logits);
    for (int i = n_prompt; i < n; i++) {
        float *hi = h + (size_t)i * E;
        memcpy(hi, ref.emb + (size_t)toks[i] * E, E * sizeof(float));
        forward_layers(&f, hi, 1, seq + i, pos + i);
        forward_logits(&f, hi, 1, rows, logits + (size_t)i * V);
    }
    double worst = 0;
    for (int i = 0; i < n; i++) {
        ref_token(&ref, toks[i], i, rl);
        double mx = 0, d = 0;
        int am_ref = 0, am = 0;
        for (int j = 0; j < V; j++) {
            float y = logits[(size_t)i * V + j];
            mx = fmax(mx, fabs(rl[j]));
            d = fmax(d, fabs(rl[j] - y));
            if (rl[j] > rl[am_ref]) am_ref = j;
            if (y > logits[(size_t)i * V + am]) am = j;
        }
        double rel = d / (mx + 1e-30), second = -1e300;
        for (int j = 0; j < V; j++)
            if (j != am_ref) second = fmax(second, rl[j]);
        if (rl[am_ref] - second <= 2 * d) am = am_ref;   /* a near-tie: argmax is not defined by the tolerance */
        worst = fmax(worst, rel);
        n_tight += rel <= tight;
        if (getenv("TERN_TEST_VERBOSE")) fprintf(stderr, "pos %d rel %.3g (max|ref| %.6g)\n", i, rel, mx);
        if (rel > rtol || am != am_ref)
            fprintf(stderr, "%s %s head %s kv %d t%d pos %d: max|d| %.3g, max|ref| %.3g (rel %.3g), argmax %d vs %d\n",
                    arch, type, head, kv_type, threads, i, d, mx, rel, am, am_ref);
        assert_true(rel <= rtol);
        assert_int_equal(am, am_ref);
    }
    printf("  %-13s %-6s head %-5s%s kv %s threads %d: worst relative logit error %.2e (<= %.0e), %d/%d positions "
           "<= %.0e\n", arch, type, head, g_rope_tag, ops_kv_name(kv_type), threads, worst, loose, n_tight, n, tight);
    assert_true(n_tight * 5 >= n * 4);
    free(h); free(logits); free(rl);
    forward_free(&f);
    tpool_destroy(&tp);
    shard_free(&s);
    ref_free(&ref);
    gguf_close(&g);
}

static void test_bitnet_b158(void **st) {
    (void)st;
    const char *types[] = {"i2_s", "tq2_0", "tq1_0"};
    for (int i = 0; i < 3; i++)
        for (int t = 1; t <= 2; t++) compare("bitnet-b1.58", types[i], "f16", KV_F32, t, 1e-5, 2e-2);
    compare("bitnet-b1.58", "i2_s", "f16", KV_F16, 2, 1e-5, 2e-2);
    compare("bitnet-b1.58", "i2_s", "q8_0", KV_F32, 1, 1e-5, 2e-2);
    compare("bitnet-b1.58", "i2_s", "f16", KV_Q8_0, 2, 1e-5, 2e-2);
    /* llama-quantize's TQ1_0/TQ2_0 files: Q6_K head, Q4_K embeddings (and the other block types) */
    for (int t = 1; t <= 2; t++) compare("bitnet-b1.58", "tq1_0", "q6_k+q4_k", KV_F32, t, 1e-5, 2e-2);
    compare("bitnet-b1.58", "tq2_0", "q4_k+q6_k", KV_F32, 2, 1e-5, 2e-2);
    compare("bitnet-b1.58", "i2_s", "q5_k+q5_0", KV_F32, 1, 1e-5, 2e-2);
    compare("bitnet-b1.58", "i2_s", "q4_0+q8_0", KV_F32, 2, 1e-5, 2e-2);
    compare("bitnet-b1.58", "i2_s", "q5_0+q4_0", KV_F32, 1, 1e-5, 2e-2);
}
static void test_bitnet(void **st) {
    (void)st;
    for (int t = 1; t <= 2; t++) compare("bitnet", "tq2_0", "f16", KV_F32, t, 1e-5, 2e-2);
    compare("bitnet", "i2_s", "q8_0", KV_F32, 2, 1e-5, 2e-2);
}
static void test_llama(void **st) {
    (void)st;
    for (int t = 1; t <= 2; t++) compare("llama", "tq1_0", "f16", KV_F32, t, 1e-5, 2e-2);
    compare("llama", "i2_s", "q8_0", KV_F32, 2, 1e-5, 2e-2);
    compare("llama", "i2_s", "q8_0", KV_F16, 1, 1e-5, 2e-2);
    compare("llama", "tq2_0", "f16", KV_Q8_0, 1, 1e-5, 2e-2);
}

/* RoPE scaling (context extension) against the reference's own maths: YaRN (ramp inside the rotated
 * dims: a 16-position original context), linear, and llama3 frequency factors (rope_freqs.weight),
 * alone and with YaRN; NEOX and normal pairs */
static void rope_compare(const char *arch, const char *type, const char *tag, const char *const *args) {
    int n = 0;
    for (; args[n]; n++) {
        assert_true(n + 1 < (int)(sizeof g_rope_args / sizeof g_rope_args[0]));
        g_rope_args[n] = args[n];
    }
    g_rope_args[n] = NULL;
    g_rope_tag = tag;
    for (int t = 1; t <= 2; t++) compare(arch, type, "f16", KV_F32, t, 1e-5, 2e-2);
    compare(arch, type, "f16", KV_F16, 2, 1e-5, 2e-2);
    g_rope_args[0] = NULL;
    g_rope_tag = "";
}

static void test_rope_scaling(void **st) {
    (void)st;
    const char *yarn[] = {"--rope-scaling", "yarn", "--rope-scale", "4", "--yarn-orig-ctx", "16", "--yarn-attn-factor",
                          "1.3", NULL};
    const char *linear[] = {"--rope-scaling", "linear", "--rope-scale", "2.5", NULL};
    const char *l3[] = {"--rope-freqs", "8", "--yarn-orig-ctx", "64", NULL};
    const char *yarn_l3[] = {"--rope-scaling", "yarn", "--rope-scale", "8", "--yarn-orig-ctx", "32", "--rope-freqs", "4",
                             NULL};
    rope_compare("llama", "tq2_0", "-yarn", yarn);
    rope_compare("bitnet-b1.58", "i2_s", "-yarn", yarn);
    rope_compare("llama", "i2_s", "-linear", linear);
    rope_compare("llama", "tq1_0", "-llama3", l3);
    rope_compare("bitnet-b1.58", "i2_s", "-llama3", l3);
    rope_compare("llama", "tq2_0", "-yarn-llama3", yarn_l3);
}

/* rope_freqs.weight of the given type, length n and values v (n floats or halves) in a file of the
 * tiny preset's keys; shard_load of no layers (it still reads the factors): its rc, message in err */
static int freqs_file(int type, int n, const void *v, char *err, size_t errlen) {
    char path[512];
    snprintf(path, sizeof path, "%s/freqs.gguf", g_dir);
    hparams_t hp;
    assert_int_equal(preset_find("tiny", ARCH_LLAMA, &hp), 0);
    gguf_writer_t *w = gguf_writer_new();
    hparams_to_gguf(&hp, w, NULL);
    int64_t ne[2] = {n, 1};
    assert_int_equal(gguf_writer_add_tensor(w, "rope_freqs.weight", type, 1, ne), 0);
    assert_int_equal(gguf_writer_begin(w, path, err, errlen), 0);
    assert_int_equal(gguf_writer_write(w, v, (size_t)n * (type == TT_F32 ? 4 : 2), err, errlen), 0);
    assert_int_equal(gguf_writer_finish(w, err, errlen), 0);
    gguf_writer_destroy(&w);
    gguf_t *g;
    assert_int_equal(gguf_open(&g, path, err, errlen), 0);
    shard_t s;
    int rc = shard_load(&s, g, 0, -1, 0, NULL, err, errlen);
    if (rc == 0) {
        assert_non_null(s.rope_freqs);
        assert_memory_equal(s.rope_freqs, v, (size_t)n * 4);
        shard_free(&s);
    }
    gguf_close(&g);
    unlink(path);
    return rc;
}

/* a frequency factors tensor that is not F32 of rot_dim/2 finite positive values is refused, named */
static void test_rope_freqs_bad(void **st) {
    (void)st;
    char err[256];
    float ok[32], big[33];
    uint16_t half[32];
    for (int i = 0; i < 33; i++) big[i] = 1.0f + (float)i;
    for (int i = 0; i < 32; i++) ok[i] = 1.0f + (float)i, half[i] = f32_to_f16(ok[i]);
    if (freqs_file(TT_F32, 32, ok, err, sizeof err) != 0) fail_msg("good factors refused: %s", err);
    assert_true(freqs_file(TT_F32, 33, big, err, sizeof err) < 0);
    assert_non_null(strstr(err, "rope_freqs.weight"));
    assert_true(freqs_file(TT_F32, 16, ok, err, sizeof err) < 0);
    assert_non_null(strstr(err, "expected f32 [32]"));
    assert_true(freqs_file(TT_F16, 32, half, err, sizeof err) < 0);
    assert_non_null(strstr(err, "rope_freqs.weight"));
    const float bad[] = {0.0f, -1.0f, NAN, INFINITY};
    for (int k = 0; k < 4; k++) {
        ok[5] = bad[k];
        assert_true(freqs_file(TT_F32, 32, ok, err, sizeof err) < 0);
        assert_non_null(strstr(err, "finite and > 0"));
        assert_null(strchr(err, '\n'));
    }
}

/* Teacher forcing (perplexity, prompt logprobs): a prompt through two stages, the last scoring
 * every token's successor, with a sampled row in the same step. stage_score's log p(target) must
 * match the reference's log softmax, position by position, within the logit tolerance (a log
 * softmax moves at most 2·max|Δlogit|); a target outside the vocabulary and targets sent to a
 * stage without the head are refused. More positions than the logit buffer holds, so the
 * chunking is exercised too. */
static void test_score(void **st) {
    (void)st;
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/%s-%s-%s.gguf", g_dir, "llama", "tq2_0", "f16");
    if (access(path, R_OK) != 0) make_model(path, "llama", "tq2_0", "f16");
    gguf_t *g;
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    enum { N = STAGE_SCORE_ROWS + 9 };
    ref_model_t ref;
    ref_load(&ref, g, N + 1);
    const int E = ref.hp.n_embd, V = ref.hp.n_vocab, L = ref.hp.n_layer;
    tpool_t *tp = tpool_new(2);
    stage_t sg[2];
    for (int k = 0; k < 2; k++) {
        stage_cfg_t c;
        stage_cfg_default(&c);
        c.first = k ? L / 2 : 0, c.last = k ? L - 1 : L / 2 - 1, c.has_head = k;
        c.n_ctx = N + 1, c.n_seq = 2, c.n_batch = 8, c.kv_type = KV_F32;
        if (stage_init(&sg[k], g, &c, tp, err, sizeof err)) fail_msg("stage %d: %s", k, err);
    }
    int32_t toks[N + 1], tgt[N];
    int seq[N], pos[N];
    uint8_t smp[N] = {0};
    float *h = malloc((size_t)N * E * sizeof(float));
    for (int i = 0; i <= N; i++) toks[i] = (i * 53 + 11) % V;
    for (int i = 0; i < N; i++) {
        seq[i] = 1, pos[i] = i, tgt[i] = i % 7 == 3 ? -1 : toks[i + 1];
        memcpy(h + (size_t)i * E, ref.emb + (size_t)toks[i] * E, E * sizeof(float));
    }
    smp[N - 1] = 1;
    sampler_params_t spp;   /* slot 1 asks for 5 alternatives a token */
    sampler_params_default(&spp);
    spp.logprobs = 1, spp.top_logprobs = 5;
    stage_seq_start(&sg[1], 1, &spp);
    int32_t ot;
    float olp;
    double out[N];
    assert_int_equal(stage_step(&sg[0], h, N, toks, seq, pos, smp, &ot, &olp, err, sizeof err), 0);
    assert_true(stage_score(&sg[0], h, N, seq, tgt, out, err, sizeof err) < 0);   /* no head here */
    assert_non_null(strstr(err, "without the head"));
    assert_int_equal(stage_step(&sg[1], h, N, toks, seq, pos, smp, &ot, &olp, err, sizeof err), 1);
    int ns = stage_score(&sg[1], h, N, seq, tgt, out, err, sizeof err), want = 0;
    for (int i = 0; i < N; i++) want += tgt[i] >= 0;
    assert_int_equal(ns, want);
    assert_int_equal(sg[1].score_n_top, 5);
    double *rl = malloc((size_t)V * sizeof(double)), worst = 0;
    int k = 0, n_tight = 0;
    for (int i = 0; i < N; i++) {
        ref_token(&ref, toks[i], i, rl);
        if (tgt[i] < 0) continue;
        double mx = -1e300, sum = 0, amax = 0;
        for (int j = 0; j < V; j++) mx = fmax(mx, rl[j]), amax = fmax(amax, fabs(rl[j]));
        for (int j = 0; j < V; j++) sum += exp(rl[j] - mx);
        double lp = rl[tgt[i]] - mx - log(sum), d = fabs(out[k] - lp) / amax;
        assert_true(out[k] <= 0);
        /* the alternatives: 5, best first, the reference's best among them, the target's own
         * log p where it is one of them */
        const int32_t *ti = sg[1].score_top_ids + (size_t)k * 5;
        const float *tl = sg[1].score_top_lp + (size_t)k * 5;
        int am = 0, seen = 0;
        for (int j = 1; j < V; j++) am = rl[j] > rl[am] ? j : am;
        for (int t = 0; t < 5; t++) {
            assert_true(ti[t] >= 0 && ti[t] < V);
            if (t) assert_true(tl[t] <= tl[t - 1]);
            seen |= ti[t] == am;
            if (ti[t] == tgt[i]) assert_true(fabs(tl[t] - out[k]) < 1e-5);
        }
        assert_true(seen);
        if (d > 4e-2 || getenv("TERN_TEST_VERBOSE")) fprintf(stderr, "pos %d: log p %.6f, reference %.6f\n", i, out[k], lp);
        assert_true(d <= 4e-2);
        n_tight += d <= 2e-5;
        worst = fmax(worst, d);
        k++;
    }
    printf("  scored %d of %d tokens over 2 stages: worst |d log p| / max|logit| %.2e, %d <= 2e-5\n", ns, N, worst,
           n_tight);
    assert_true(n_tight * 5 >= ns * 4);
    tgt[2] = V;
    assert_true(stage_score(&sg[1], h, N, seq, tgt, out, err, sizeof err) < 0);
    assert_non_null(strstr(err, "outside the vocabulary"));
    assert_int_equal(stage_score(&sg[1], h, N, seq, NULL, out, err, sizeof err), 0);
    free(h);
    free(rl);
    stage_free(&sg[0]);
    stage_free(&sg[1]);
    tpool_destroy(&tp);
    ref_free(&ref);
    gguf_close(&g);
}

/* A grammar's mask on the last stage (stage_seq_allow): the sample is the best of the allowed
 * tokens (greedy) or one of them (sampled), the alternatives are allowed tokens only (while
 * stage_step_logits returns the row's logits unmasked: the reference's), and the
 * mask is used up by that sample (the next step of the slot samples freely). Masks of a wrong
 * size or slot, or on a stage without the head, are refused. */
static void test_allow(void **st) {
    (void)st;
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/%s-%s-%s.gguf", g_dir, "llama", "tq2_0", "f16");
    if (access(path, R_OK) != 0) make_model(path, "llama", "tq2_0", "f16");
    gguf_t *g;
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    ref_model_t ref;
    ref_load(&ref, g, 8);
    const int E = ref.hp.n_embd, V = ref.hp.n_vocab, L = ref.hp.n_layer;
    tpool_t *tp = tpool_new(2);
    stage_t sg;
    stage_cfg_t c;
    stage_cfg_default(&c);
    c.first = 0, c.last = L - 1, c.has_head = 1, c.n_ctx = 8, c.n_seq = 2, c.n_batch = 4, c.kv_type = KV_F32;
    if (stage_init(&sg, g, &c, tp, err, sizeof err)) fail_msg("stage: %s", err);
    size_t mb = ((size_t)V + 7) / 8;
    uint8_t *bits = calloc(mb, 1);
    double *rl = malloc((size_t)V * sizeof(double));
    float *h = malloc((size_t)E * sizeof(float));
    int32_t tok = 7, ot;
    int seq = 1, pos = 0, best = 0;
    uint8_t smp = 1;
    float olp;
    ref_token(&ref, tok, 0, rl);
    for (int j = 1; j < V; j++) best = rl[j] > rl[best] ? j : best;
    int allow[3] = {(best + 1) % V, (best + V / 3) % V, (best + 2 * V / 3) % V}, want = allow[0];
    for (int k = 0; k < 3; k++) {
        bits[allow[k] >> 3] |= (uint8_t)(1u << (allow[k] & 7));
        if (rl[allow[k]] > rl[want]) want = allow[k];
    }
    assert_int_equal(stage_seq_allow(&sg, 2, bits, mb), TERN_EINVAL);       /* no such slot */
    assert_int_equal(stage_seq_allow(&sg, 1, bits, mb - 1), TERN_EINVAL);   /* wrong size */
    sampler_params_t sp;
    sampler_params_default(&sp);
    sp.temp = 0, sp.logprobs = 1, sp.top_logprobs = 5;
    stage_seq_start(&sg, 1, &sp);
    assert_int_equal(stage_seq_allow(&sg, 1, bits, mb), 0);
    memcpy(h, ref.emb + (size_t)tok * E, E * sizeof(float));
    float *lo = malloc((size_t)V * sizeof(float));   /* the row's logits come back raw: before the mask */
    assert_int_equal(stage_step_logits(&sg, h, 1, &tok, &seq, &pos, &smp, &ot, &olp, lo, err, sizeof err), 1);
    assert_int_equal(ot, want);   /* the reference's best among the three (its gaps dwarf the tolerance) */
    int lbest = 0;
    double amax = 0;
    for (int j = 0; j < V; j++) amax = fmax(amax, fabs(rl[j]));
    for (int j = 0; j < V; j++) {
        assert_true(isfinite(lo[j]) && fabs(lo[j] - rl[j]) <= 4e-2 * amax);
        lbest = lo[j] > lo[lbest] ? j : lbest;
    }
    assert_int_equal(lbest, best);
    free(lo);
    assert_true(olp <= 0 && olp > -log(3.0) - 1e-5);
    assert_true(sg.n_top == 5);
    int nalt = 0;
    for (int t = 0; t < 5; t++) {
        int id = sg.top_ids[t];
        if (id < 0) continue;
        nalt++;
        assert_true(id == allow[0] || id == allow[1] || id == allow[2]);
    }
    assert_int_equal(nalt, 3);
    /* used up: the next sample of the slot is free again (here: the unmasked best) */
    pos = 1, tok = ot;
    ref_token(&ref, tok, 1, rl);
    best = 0;
    for (int j = 1; j < V; j++) best = rl[j] > rl[best] ? j : best;
    memcpy(h, ref.emb + (size_t)tok * E, E * sizeof(float));
    assert_int_equal(stage_step(&sg, h, 1, &tok, &seq, &pos, &smp, &ot, &olp, err, sizeof err), 1);
    assert_int_equal(ot, best);
    /* sampled: every draw among the allowed */
    for (int r = 0; r < 40; r++) {
        sp.temp = 1.5f, sp.top_k = r % 2 ? 0 : 40, sp.seed = 100 + (uint64_t)r, sp.logprobs = 0, sp.top_logprobs = 0;
        stage_seq_start(&sg, 0, &sp);
        assert_int_equal(stage_seq_allow(&sg, 0, bits, mb), 0);
        int s0 = 0, p0 = 0;
        tok = (int32_t)(r * 13 % V);
        memcpy(h, ref.emb + (size_t)tok * E, E * sizeof(float));
        assert_int_equal(stage_step(&sg, h, 1, &tok, &s0, &p0, &smp, &ot, &olp, err, sizeof err), 1);
        assert_true(ot == allow[0] || ot == allow[1] || ot == allow[2]);
    }
    stage_free(&sg);
    c.has_head = 0;
    if (stage_init(&sg, g, &c, tp, err, sizeof err)) fail_msg("stage: %s", err);
    assert_int_equal(stage_seq_allow(&sg, 0, bits, mb), TERN_EINVAL);   /* no head */
    stage_free(&sg);
    free(bits);
    free(rl);
    free(h);
    tpool_destroy(&tp);
    ref_free(&ref);
    gguf_close(&g);
}

/* embeddings through the scheduler on a local pipeline of `stages` stages (n_batch tokens a step):
 * prompts a (pooling none: every row) and b (pool, L2-normalised), side by side in two slots */
typedef struct embd_res { float *v[2]; int rows[2]; int ended; } embd_res_t;
static void embd_cb(void *user, int id, const float *v, int n, int E) {
    embd_res_t *r = user;
    int k = id & 1;   /* ids 0, 1 (first run) and 2, 3 (...): a, then b */
    r->v[k] = malloc((size_t)n * E * sizeof(float));
    memcpy(r->v[k], v, (size_t)n * E * sizeof(float));
    r->rows[k] = n;
}
static int embd_end(void *user, int id, int32_t tok, float lp, const sched_top_t *top, int finish) {
    (void)id, (void)tok, (void)lp, (void)top;
    assert_int_equal(finish, SCHED_LENGTH);
    ((embd_res_t *)user)->ended++;
    return 0;
}
static void embd_run(const gguf_t *g, int stages, int n_batch, const int32_t *a, int na, const int32_t *b, int nb,
                     int pool, embd_res_t *r) {
    char err[256];
    stage_cfg_t c;
    stage_cfg_default(&c);
    c.n_ctx = 32, c.n_seq = 2, c.n_batch = n_batch, c.kv_type = KV_F32;
    tpool_t *tp = tpool_new(2);
    pipeline_t *pl;
    if (pipeline_local_new(&pl, g, &c, stages, tp, err, sizeof err)) fail_msg("pipeline: %s", err);
    embed_t emb;
    assert_int_equal(embed_init(&emb, g, err, sizeof err), 0);
    sched_t s;
    assert_int_equal(sched_init(&s, pl, &emb, 2, 32, n_batch, err, sizeof err), 0);
    sched_set_prefill_chunk(&s, n_batch);
    sampler_params_t sp;
    sampler_params_default(&sp);
    memset(r, 0, sizeof *r);
    int ia = sched_add(&s, a, na, 0, &sp, embd_end, r), ib = sched_add(&s, b, nb, 0, &sp, embd_end, r);
    assert_true(ia >= 0 && ib >= 0);
    assert_int_equal(sched_embed(&s, ia, SCHED_POOL_NONE, -1, embd_cb), 0);
    assert_int_equal(sched_embed(&s, ib, SCHED_POOL_LAST + 1, 2, embd_cb), TERN_EINVAL);   /* no such pooling */
    assert_int_equal(sched_embed(&s, ib + 5, pool, 2, embd_cb), TERN_EINVAL);              /* no such sequence */
    assert_int_equal(sched_embed(&s, ib, pool, 2, embd_cb), 0);
    while (sched_active(&s) > 0) assert_true(sched_step(&s) >= 0);
    assert_int_equal(r->ended, 2);
    assert_int_equal(r->rows[0], na);
    assert_int_equal(r->rows[1], 1);
    sched_free(&s);
    pipeline_destroy(&pl);
    tpool_destroy(&tp);
}

/* Embeddings (sched_embed over stage_embd): every row of pooling none is the reference's final
 * hidden state after the output norm, within the forward's tolerance (max |d| / max |ref| per row
 * <= 2e-2, 80% of rows <= 1e-4: see compare() on int8 flips); the mean / cls / last vectors are
 * the pooled, L2-normalised reference rows within the same tolerance; and the vectors are bit for
 * bit the same whether the prompts go in one step, in chunks of 3 tokens, or through 2 stages.
 * A stage without the head refuses embeddings. */
static void test_embd(void **st) {
    (void)st;
    char path[512], err[256];
    snprintf(path, sizeof path, "%s/%s-%s-%s.gguf", g_dir, "llama", "tq2_0", "f16");
    if (access(path, R_OK) != 0) make_model(path, "llama", "tq2_0", "f16");
    gguf_t *g;
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    ref_model_t ref;
    ref_load(&ref, g, 32);
    const int E = ref.hp.n_embd, V = ref.hp.n_vocab, na = 13, nb = 9;
    int32_t a[13], b[9];
    for (int i = 0; i < na; i++) a[i] = (i * 53 + 11) % V;
    for (int i = 0; i < nb; i++) b[i] = (i * 29 + 3) % V;
    double *rl = malloc((size_t)V * sizeof(double)), *ha = malloc((size_t)na * E * sizeof(double));
    double *hb = malloc((size_t)nb * E * sizeof(double)), worst = 0;
    for (int i = 0; i < na; i++) ref_token_h(&ref, a[i], i, rl, ha + (size_t)i * E);
    ref_free(&ref);
    ref_load(&ref, g, 32);   /* a fresh cache for prompt b */
    for (int i = 0; i < nb; i++) ref_token_h(&ref, b[i], i, rl, hb + (size_t)i * E);
    int n_tight = 0;
    embd_res_t r0, r1;
    const int pools[3] = {SCHED_POOL_MEAN, SCHED_POOL_CLS, SCHED_POOL_LAST};
    for (int pi = 0; pi < 3; pi++) {
        int pool = pools[pi];
        embd_run(g, 1, 64, a, na, b, nb, pool, &r0);
        if (pi == 0)
            for (int i = 0; i < na; i++) {   /* pooling none: each row against the reference */
                double mx = 0, d = 0;
                for (int e = 0; e < E; e++) {
                    mx = fmax(mx, fabs(ha[(size_t)i * E + e]));
                    d = fmax(d, fabs(ha[(size_t)i * E + e] - r0.v[0][(size_t)i * E + e]));
                }
                worst = fmax(worst, d / mx);
                n_tight += d / mx <= 1e-4;
                assert_true(d / mx <= 2e-2);
            }
        double want[4096], nn = 0, mx = 0, d = 0;   /* the pooled reference, L2-normalised */
        assert_true(E <= 4096);
        for (int e = 0; e < E; e++) {
            double x = 0;
            if (pool == SCHED_POOL_MEAN) for (int i = 0; i < nb; i++) x += hb[(size_t)i * E + e] / nb;
            else x = hb[(size_t)(pool == SCHED_POOL_CLS ? 0 : nb - 1) * E + e];
            want[e] = x, nn += x * x;
        }
        for (int e = 0; e < E; e++) {
            mx = fmax(mx, fabs(want[e] / sqrt(nn)));
            d = fmax(d, fabs(want[e] / sqrt(nn) - r0.v[1][e]));
        }
        printf("  embeddings, pooling %d: max |d| / max |ref| %.2e\n", pool, d / mx);
        assert_true(d / mx <= 2e-2);
        /* the same bits in chunks of 3 tokens, and through 2 stages */
        embd_run(g, 1, 3, a, na, b, nb, pool, &r1);
        assert_memory_equal(r0.v[0], r1.v[0], (size_t)na * E * sizeof(float));
        assert_memory_equal(r0.v[1], r1.v[1], (size_t)E * sizeof(float));
        for (int k = 0; k < 2; k++) free(r1.v[k]);
        embd_run(g, 2, 5, a, na, b, nb, pool, &r1);
        assert_memory_equal(r0.v[0], r1.v[0], (size_t)na * E * sizeof(float));
        assert_memory_equal(r0.v[1], r1.v[1], (size_t)E * sizeof(float));
        for (int k = 0; k < 2; k++) free(r0.v[k]), free(r1.v[k]);
    }
    printf("  embeddings, pooling none: worst row max |d| / max |ref| %.2e, %d/%d rows <= 1e-4\n", worst, n_tight, na);
    assert_true(n_tight * 5 >= na * 4);
    /* a stage without the head refuses */
    stage_t sg;
    stage_cfg_t c;
    stage_cfg_default(&c);
    c.first = 0, c.last = 0, c.has_head = 0, c.n_ctx = 8;
    tpool_t *tp = tpool_new(1);
    assert_int_equal(stage_init(&sg, g, &c, tp, err, sizeof err), 0);
    uint8_t fl = 1;
    float h[4096], out[4096];
    memset(h, 0, sizeof h);
    assert_true(stage_embd(&sg, h, 1, &fl, out, err, sizeof err) < 0);
    assert_non_null(strstr(err, "without the head"));
    assert_int_equal(stage_embd(&sg, h, 1, NULL, out, err, sizeof err), 0);
    stage_free(&sg);
    tpool_destroy(&tp);
    free(rl), free(ha), free(hb);
    ref_free(&ref);
    gguf_close(&g);
}

/* ---- drafts for sampled sequences through the real last stage ---- */

enum { DR_SEQ = 2, DR_GEN = 48, DR_PROMPT = 6 };
typedef struct draft_run {
    int32_t out[DR_SEQ][DR_GEN];
    float lp[DR_SEQ][DR_GEN];
    int n[DR_SEQ];
    const int32_t (*want)[DR_GEN];   /* the drafter's text: plain decoding's tokens */
    int calls;
} draft_run_t;

static int dr_token(void *user, int id, int32_t tok, float lp, const sched_top_t *top, int finish) {
    (void)top;
    draft_run_t *r = user;
    if (finish || id < 0 || id >= DR_SEQ) return 0;
    assert_true(r->n[id] < DR_GEN);
    r->lp[id][r->n[id]] = lp;
    r->out[id][r->n[id]++] = tok;
    return 0;
}

/* proposes plain decoding's next tokens of the sequence in slot (its id: slots fill in order);
 * every other call, one of them is wrong from the (calls % 3)-th on: a token the text holds a
 * few positions later (a refused draft that stayed in the penalties' history would change the
 * draws there) */
static int dr_draft(void *user, int slot, const int32_t *toks, int n, int k, int32_t *out) {
    (void)toks;
    draft_run_t *r = user;
    const int32_t *w = r->want[slot];
    int g = n - DR_PROMPT, m = 0, bad = r->calls++ % 2 ? r->calls % 3 : k;
    for (; m < k && g + m < DR_GEN; m++) {
        out[m] = w[g + m];
        if (m >= bad && g + m + 3 < DR_GEN && w[g + m + 3] != w[g + m]) out[m] = w[g + m + 3];
    }
    return m;
}

/* two sampled sequences (temperature, top-k/p, repetition, frequency and presence penalties over
 * a short window; one with logprobs) on a local pipeline of `stages` stages, with drafts from a
 * drafter (want != NULL) or without */
static void dr_run(const gguf_t *g, int stages, const int32_t (*want)[DR_GEN], draft_run_t *r, long *drafted, long *taken) {
    char err[256];
    stage_cfg_t c;
    stage_cfg_default(&c);
    c.n_ctx = 64, c.n_seq = DR_SEQ, c.n_batch = 32, c.kv_type = KV_F32;
    tpool_t *tp = tpool_new(2);
    pipeline_t *pl;
    if (pipeline_local_new(&pl, g, &c, stages, tp, err, sizeof err)) fail_msg("pipeline: %s", err);
    embed_t emb;
    assert_int_equal(embed_init(&emb, g, err, sizeof err), 0);
    sched_t s;
    assert_int_equal(sched_init(&s, pl, &emb, DR_SEQ, 64, 32, err, sizeof err), 0);
    memset(r, 0, sizeof *r);
    r->want = want;
    if (want) {
        assert_int_equal(sched_set_lookup(&s, 6), 0);
        sched_set_drafter(&s, dr_draft, r);
    }
    for (int q = 0; q < DR_SEQ; q++) {
        int32_t prompt[DR_PROMPT];
        for (int i = 0; i < DR_PROMPT; i++) prompt[i] = (int32_t)((i * 37 + q * 11 + 5) % pl->n_vocab);
        sampler_params_t sp;
        sampler_params_default(&sp);
        sp.temp = 0.8f + 0.4f * (float)q, sp.top_k = 40, sp.top_p = 0.95f, sp.min_p = 0.0f, sp.seed = 7 + (uint64_t)q;
        sp.repeat_penalty = 1.5f, sp.repeat_last_n = 12, sp.freq_penalty = 0.5f, sp.presence_penalty = 0.5f;
        sp.logprobs = q;
        assert_int_equal(sched_add(&s, prompt, DR_PROMPT, DR_GEN, &sp, dr_token, r), q);
    }
    while (sched_active(&s) > 0) assert_true(sched_step(&s) >= 0);
    for (int q = 0; q < DR_SEQ; q++) assert_int_equal(r->n[q], DR_GEN);
    *drafted = s.n_drafted, *taken = s.n_draft_ok;
    sched_free(&s);
    pipeline_destroy(&pl);
    tpool_destroy(&tp);
}

/* Drafts for sampled sequences through the real last stage (stage_step's per-row history and
 * its forgetting of refused drafts; the sampler's position-keyed draw): with a drafter that is
 * right, then wrong, by turns, the tokens — and the logprobs — are exactly those of plain
 * decoding with the same seeds, in one stage and over two; drafts are taken and refused. A stage
 * that gave every row the whole step's history, kept refused drafts in it, or drew from a stream
 * fails this. */
static void test_drafts_sampled(void **st) {
    (void)st;
    char path[512];
    snprintf(path, sizeof path, "%s/%s-%s-%s.gguf", g_dir, "llama", "tq2_0", "f16");
    if (access(path, R_OK) != 0) make_model(path, "llama", "tq2_0", "f16");
    gguf_t *g;
    char err[256];
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    static draft_run_t plain, spec;
    long d, t;
    for (int stages = 1; stages <= 2; stages++) {
        dr_run(g, stages, NULL, &plain, &d, &t);
        assert_int_equal(d, 0);
        dr_run(g, stages, (const int32_t(*)[DR_GEN])plain.out, &spec, &d, &t);
        printf("  sampled with drafts, %d stage(s): %ld of %ld drafts taken\n", stages, t, d);
        assert_true(t > 0 && t < d);
        for (int q = 0; q < DR_SEQ; q++)
            for (int i = 0; i < DR_GEN; i++) {
                if (spec.out[q][i] != plain.out[q][i])
                    fail_msg("%d stage(s), sequence %d, token %d: %d with drafts, %d plain", stages, q, i, spec.out[q][i],
                             plain.out[q][i]);
                if (memcmp(&spec.lp[q][i], &plain.lp[q][i], sizeof(float)))
                    fail_msg("%d stage(s), sequence %d, token %d: logprob %.9g with drafts, %.9g plain", stages, q, i,
                             spec.lp[q][i], plain.lp[q][i]);
            }
    }
    gguf_close(&g);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/tern_test_forward_%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", g_dir);
    if (system(cmd) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bitnet_b158),
        cmocka_unit_test(test_bitnet),
        cmocka_unit_test(test_llama),
        cmocka_unit_test(test_rope_scaling),
        cmocka_unit_test(test_rope_freqs_bad),
        cmocka_unit_test(test_score),
        cmocka_unit_test(test_allow),
        cmocka_unit_test(test_embd),
        cmocka_unit_test(test_drafts_sampled),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) return 1;
    return rc;
}
