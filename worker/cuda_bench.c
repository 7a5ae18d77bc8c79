/* cuda_bench: kernel benchmarks on GPU 0 (see cuda_bench.h). Each figure is the best of -r
 * timed batches of back-to-back launches (host clock around a synchronised batch), so launch
 * gaps count against the kernel as they would in decode. */
#include "worker/cuda_bench.h"
#include "core/err.h"
#include "core/opt.h"
#include "worker/cuda_stage.h"
#include <stdio.h>
#include <string.h>

#if !defined(TERN_HAVE_CUDA)

int cuda_bench_main(int argc, char **argv) {
    fprintf(stderr, "tern bench --cuda: tern was built without CUDA\n");
    return 1;
}
double cuda_bench_read_gbps(size_t bytes, int reps) { return 0; }

#else

#include "core/progress.h"
#include "core/types.h"
#include "kernels/cuda/cuda_fmat.h"
#include "kernels/cuda/cuda_rt.h"
#include "kernels/cuda/cuda_tmat.h"
#include "kernels/gpack.h"
#include "kernels/quant.h"
#include <stdlib.h>

typedef struct shape { const char *name; int64_t rows, cols; } shape_t;

/* 2B-4T: q/o 2560x2560, k/v 640x2560, gate/up 6912x2560, down 2560x6912 */
static const shape_t k_shapes[] = {
    {"attn_q/o", 2560, 2560}, {"attn_k/v", 640, 2560}, {"ffn_gate/up", 6912, 2560}, {"ffn_down", 2560, 6912},
};

#define L2_DEFEAT_BYTES ((size_t)512 << 20)   /* weights cycled through: far more than any L2 */

typedef struct bufs {
    void *w;               /* weights (device): ncopy copies, wstride bytes apart */
    int ncopy;
    size_t wstride;
    float *x, *y, *s;
    int8_t *q;
    int32_t *sum;
    void *scr;
} bufs_t;

static uint64_t g_r = 88172645463325252ull;
static uint32_t rnd(void) { g_r ^= g_r << 13; g_r ^= g_r >> 7; g_r ^= g_r << 17; return (uint32_t)(g_r >> 16); }

/* seconds per call of the ternary product of shape sh for n tokens */
static double time_tmat(const shape_t *sh, const bufs_t *b, int n, int reps, int iters) {
    double best = 1e30;
    char err[256];
    for (int r = 0; r < reps; r++) {
        if (cuda_rt_sync(err, sizeof err) < 0) return -1;
        double t0 = time_now();
        for (int i = 0; i < iters; i++)   /* a different copy each call: DRAM, not L2, is measured */
            cuda_tmat_mul((const uint32_t *)((const uint8_t *)b->w + (size_t)(i % b->ncopy) * b->wstride), sh->rows,
                          sh->cols, 0.01f, 1.0f, b->q, b->s, b->sum, n, b->y);
        if (cuda_rt_sync(err, sizeof err) < 0) return -1;
        double t = (time_now() - t0) / iters;
        best = t < best ? t : best;
    }
    return best;
}

static double time_head(int kind, const bufs_t *b, int64_t rows, int64_t cols, int n, int reps, int iters) {
    double best = 1e30;
    char err[256];
    for (int r = 0; r < reps; r++) {
        if (cuda_rt_sync(err, sizeof err) < 0) return -1;
        double t0 = time_now();
        for (int i = 0; i < iters; i++) cuda_fmat_mul(kind, b->w, rows, cols, b->x, n, b->y, b->scr);
        if (cuda_rt_sync(err, sizeof err) < 0) return -1;
        double t = (time_now() - t0) / iters;
        best = t < best ? t : best;
    }
    return best;
}

/* n random gpack words: codes 0..2 only (trits -1, 0, 1) */
static void rand_gpack(uint32_t *w, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t v = 0;
        for (int k = 0; k < 16; k++) v |= (rnd() % 3) << (2 * k);
        w[i] = v;
    }
}

/* random gpack weights (rows, cols) on the device, *ncopy copies totalling >= L2_DEFEAT_BYTES
 * (uploaded once; NULL on failure) */
static void *rand_weights(int64_t rows, int64_t cols, int *ncopy) {
    size_t nb = gpack_bytes(rows, cols);
    *ncopy = (int)((L2_DEFEAT_BYTES + nb - 1) / nb);
    uint32_t *w = malloc(nb);
    if (!w) return NULL;
    rand_gpack(w, nb / 4);
    char err[256];
    uint8_t *d = cuda_rt_alloc(nb * (size_t)*ncopy);
    for (int k = 0; d && k < *ncopy; k++)
        if (cuda_rt_h2d(d + (size_t)k * nb, w, nb, err, sizeof err) < 0) { cuda_rt_free(d); d = NULL; }
    free(w);
    return d;
}

static int bench_ternary(double bw, int reps, int quick) {
    const int max_n = 512;
    bufs_t b = {0};
    int64_t maxc = 6912;
    b.x = cuda_rt_alloc((size_t)max_n * maxc * 4);
    b.y = cuda_rt_alloc((size_t)max_n * 6912 * 4);
    b.q = cuda_rt_alloc((size_t)max_n * maxc);
    b.s = cuda_rt_alloc((size_t)max_n * 4);
    b.sum = cuda_rt_alloc((size_t)max_n * 4);
    if (!b.x || !b.y || !b.q || !b.s || !b.sum) { fprintf(stderr, "tern bench --cuda: out of device memory\n"); return 1; }
    char err[256];
    float *hx = malloc((size_t)max_n * maxc * 4);
    for (int64_t i = 0; i < max_n * maxc; i++) hx[i] = (float)((int)(rnd() % 2001) - 1000) / 1000.0f;
    cuda_rt_h2d(b.x, hx, (size_t)max_n * maxc * 4, err, sizeof err);
    free(hx);
    cuda_tmat_quant(b.x, max_n, maxc, b.q, b.s, b.sum);   /* any valid activations will do */
    printf("\n| W2A8 GEMV (2B-4T)  | tokens |   us/call | weight GB/s | %% of measured |\n");
    printf("|--------------------|-------:|----------:|------------:|--------------:|\n");
    double layer_t = 0, layer_b = 0;
    for (size_t k = 0; k < sizeof k_shapes / sizeof k_shapes[0]; k++) {
        const shape_t *sh = &k_shapes[k];
        b.w = rand_weights(sh->rows, sh->cols, &b.ncopy);
        b.wstride = gpack_bytes(sh->rows, sh->cols);
        if (!b.w) { fprintf(stderr, "tern bench --cuda: out of device memory\n"); return 1; }
        double wb = (double)b.wstride;
        const int ns[] = {1, 4, 8};
        for (int i = 0; i < 3; i++) {
            double t = time_tmat(sh, &b, ns[i], reps, quick ? 20 : 200);
            if (t < 0) { fprintf(stderr, "tern bench --cuda: kernel failed\n"); return 1; }
            double gbps = wb / t / 1e9;
            printf("| %-18s | %6d | %9.2f | %11.1f | %12.1f%% |\n", sh->name, ns[i], t * 1e6, gbps, 100 * gbps / bw);
            if (ns[i] == 1) {   /* one layer: q, k, v, o, gate, up, down */
                int times = k == 0 ? 2 : k == 1 ? 2 : k == 2 ? 2 : 1;
                layer_t += times * t;
                layer_b += times * wb;
            }
        }
        double ops = 2.0 * (double)sh->rows * (double)sh->cols;
        for (int n = 64; n <= max_n; n *= 8)
            for (int e = 0; e < 2; e++) {   /* dp4a, then the tensor cores (sm_80+) */
                if (cuda_tmat_set_mma(e) != e) continue;
                double t = time_tmat(sh, &b, n, reps, quick ? 5 : 50);
                printf("| %-18s | %6d | %9.2f | GEMM %6.1f TOPS (int8 %s) |\n", sh->name, n, t * 1e6, ops * n / t / 1e12,
                       e ? "mma" : "dp4a");
            }
        cuda_tmat_set_mma(0);
        cuda_rt_free(b.w);
    }
    double lg = layer_b / layer_t / 1e9;
    printf("\none 2B-4T layer, decode (7 GEMVs, 1 token): %.1f us, %.1f GB/s = %.1f%% of measured %s\n", layer_t * 1e6, lg,
           100 * lg / bw, lg >= 0.7 * bw ? "(target >= 70%: met)" : "(target >= 70%: NOT met)");
    /* the lm head: 128256 x 2560 */
    int64_t V = 128256, E = 2560;
    const int kinds[2] = {CUDA_FMAT_F16, CUDA_FMAT_Q8_0}, types[2] = {TT_F16, TT_Q8_0};
    for (int k = 0; k < 2; k++) {
        size_t nb = type_tensor_bytes(types[k], E, V);
        uint8_t *hw = malloc(nb);
        for (size_t i = 0; i < nb; i++) hw[i] = (uint8_t)(rnd() & 0x3b);   /* finite f16 / small d */
        b.w = cuda_rt_alloc(nb);
        b.scr = cuda_rt_alloc(cuda_fmat_scratch_bytes(kinds[k], E, 1) + 256);
        float *y = b.y;
        b.y = cuda_rt_alloc((size_t)V * 4);
        if (!b.w || !b.scr || !b.y || cuda_rt_h2d(b.w, hw, nb, err, sizeof err) < 0) {
            fprintf(stderr, "tern bench --cuda: out of device memory for the head\n");
            return 1;
        }
        double t = time_head(kinds[k], &b, V, E, 1, reps, quick ? 5 : 50);
        double gbps = (double)nb / t / 1e9;
        printf("lm head %s %lldx%lld, 1 token: %.1f us, %.1f GB/s = %.1f%% of measured\n", type_name(types[k]),
               (long long)V, (long long)E, t * 1e6, gbps, 100 * gbps / bw);
        cuda_rt_free(b.w);
        cuda_rt_free(b.scr);
        cuda_rt_free(b.y);
        b.y = y;
        free(hw);
    }
    void *d[] = {b.x, b.y, b.q, b.s, b.sum};
    for (int i = 0; i < 5; i++) cuda_rt_free(d[i]);
    return 0;
}

/* A 2B-4T decode's products as the GPU stage launches them: per layer the input's
 * norm+quantisation, then q/k/v in one product; quantisation, o; norm+quantisation, gate/up/act in
 * one product; quantisation, down — NL layers of distinct weights (far more than L2), one token.
 * Timed as direct launches and as one CUDA graph, with and without programmatic dependent launch.
 * Effective bandwidth = the layers' weight bytes / time (the small quantisation kernels count
 * against it, as in decode; attention does not). */
#define DEC_NL 30
static int bench_decode(double bw, int reps, int quick) {
    enum { Q, K, V, O, G, U, D, NM };
    const int64_t R[NM] = {2560, 640, 640, 2560, 6912, 6912, 2560}, C[NM] = {2560, 2560, 2560, 2560, 2560, 2560, 6912};
    uint32_t *w[DEC_NL][NM];
    memset(w, 0, sizeof w);
    size_t total = 0;
    char err[256];
    int ok = 1;
    for (int m = 0; m < NM && ok; m++) {
        size_t nb = gpack_bytes(R[m], C[m]);
        uint32_t *h = malloc(nb);
        ok = h != NULL;
        if (ok) rand_gpack(h, nb / 4);
        for (int l = 0; ok && l < DEC_NL; l++) {
            ok = (w[l][m] = cuda_rt_alloc(nb)) && cuda_rt_h2d(w[l][m], h, nb, err, sizeof err) == 0;
            total += nb;
        }
        free(h);
    }
    float *x = cuda_rt_alloc(6912 * 4), *y[NM], *s = cuda_rt_alloc(64), *nw = cuda_rt_alloc(6912 * 4);
    int8_t *q = cuda_rt_alloc(6912);
    int32_t *sum = cuda_rt_alloc(64);
    for (int m = 0; m < NM; m++) ok = ok && (y[m] = cuda_rt_alloc((size_t)R[m] * 4));
    if (!ok || !x || !s || !nw || !q || !sum) {
        fprintf(stderr, "tern bench --cuda: out of device memory for the decode set\n");
        return 1;
    }
    float *hx = malloc(6912 * 4);
    for (int i = 0; i < 6912; i++) hx[i] = (float)((int)(rnd() % 2001) - 1000) / 1000.0f;
    cuda_rt_h2d(x, hx, 6912 * 4, err, sizeof err);
    for (int i = 0; i < 6912; i++) hx[i] = 1.0f;
    cuda_rt_h2d(nw, hx, 6912 * 4, err, sizeof err);
    free(hx);
    printf("\n| 2B-4T decode products, %d layers, 1 token | launches | PDL | us/token | weight GB/s | %% of measured |\n", DEC_NL);
    printf("|--------------------------------------------|----------|-----|---------:|------------:|--------------:|\n");
    double best_pct = 0;
    for (int pdl = 0; pdl < 2; pdl++) {
        int pdl_on = cuda_tmat_set_pdl(pdl);
        if (pdl && !pdl_on) {
            printf("| (PDL needs sm_90: not measured)            |          |     |          |             |               |\n");
            break;
        }
        for (int graph = 0; graph < 2; graph++) {
            cuda_rt_graph_t *gr = NULL;
            int iters = quick ? 5 : 50;
            double best = 1e30;
            for (int r = -1; r < reps; r++) {   /* r = -1: warm-up (and the capture) */
                if (cuda_rt_sync(err, sizeof err) < 0) { fprintf(stderr, "tern bench --cuda: %s\n", err); return 1; }
                double t0 = time_now();
                for (int it = 0; it < (r < 0 ? 1 : iters); it++) {
                    if (gr) {
                        cuda_rt_graph_launch(gr);
                        continue;
                    }
                    int capturing = graph && r < 0 && cuda_rt_capture_begin() == 0;
                    for (int l = 0; l < DEC_NL; l++) {
                        cuda_tmat_seg_t qkv[3] = {{w[l][Q], y[Q], R[Q], 0.01f, 1.0f}, {w[l][K], y[K], R[K], 0.01f, 1.0f},
                                                  {w[l][V], y[V], R[V], 0.01f, 1.0f}};
                        cuda_tmat_seg_t gs = {w[l][G], y[G], R[G], 0.01f, 1.0f}, us = {w[l][U], y[U], R[U], 0.01f, 1.0f};
                        cuda_tmat_norm_quant(x, NULL, 1, nw, 1, 2560, 1e-5f, q, s, sum);
                        cuda_tmat_mul_segs(qkv, 3, 2560, q, s, sum, 1);
                        cuda_tmat_norm_quant(x, NULL, 0, NULL, 1, 2560, 1e-5f, q, s, sum);
                        cuda_tmat_mul(w[l][O], R[O], 2560, 0.01f, 1.0f, q, s, sum, 1, y[O]);
                        cuda_tmat_norm_quant(x, NULL, 1, nw, 1, 2560, 1e-5f, q, s, sum);
                        cuda_tmat_glu(&gs, &us, 2560, 1, q, s, sum, 1);
                        cuda_tmat_norm_quant(x, NULL, 1, nw, 1, 6912, 1e-5f, q, s, sum);
                        cuda_tmat_mul(w[l][D], R[D], 6912, 0.01f, 1.0f, q, s, sum, 1, y[D]);
                    }
                    if (capturing && !(gr = cuda_rt_capture_end())) {
                        printf("| (graph capture failed)                     |          |     |          |             |               |\n");
                        break;
                    }
                }
                if (cuda_rt_sync(err, sizeof err) < 0) { fprintf(stderr, "tern bench --cuda: %s\n", err); return 1; }
                double t = (time_now() - t0) / iters;
                if (r >= 0 && t < best) best = t;
            }
            if (graph && !gr) continue;
            double gbps = (double)total / best / 1e9;
            if (100 * gbps / bw > best_pct) best_pct = 100 * gbps / bw;
            printf("| %-42s | %8d | %-3s | %8.1f | %11.1f | %12.1f%% |\n", graph ? "one CUDA graph" : "direct launches",
                   DEC_NL * 8, pdl ? "on" : "off", best * 1e6, gbps, 100 * gbps / bw);
            cuda_rt_graph_free(gr);
        }
    }
    cuda_tmat_set_pdl(1);
    printf("\ndecode products: best %.1f%% of measured bandwidth (target >= 70%%: %s); %.1f MB of weights per token\n",
           best_pct, best_pct >= 70 ? "met" : "NOT met", total / 1e6);
    for (int l = 0; l < DEC_NL; l++)
        for (int m = 0; m < NM; m++) cuda_rt_free(w[l][m]);
    for (int m = 0; m < NM; m++) cuda_rt_free(y[m]);
    void *d[] = {x, s, nw, q, sum};
    for (int i = 0; i < 5; i++) cuda_rt_free(d[i]);
    return 0;
}

/* the GEMV on a tall matrix of the 2B-4T width (the lm head's shape in ternary, 82 MB): the
 * kernel's streaming rate when launches and a single wave of loads do not dominate */
static void bench_tall(double bw, int reps, int quick) {
    const int64_t rows = 128256, cols = 2560;
    int ncopy;
    void *wd = rand_weights(rows, cols, &ncopy);
    float *x = cuda_rt_alloc(cols * 4 * 8), *y = cuda_rt_alloc((size_t)rows * 4 * 8), *s = cuda_rt_alloc(64);
    int8_t *q = cuda_rt_alloc(cols * 8);
    int32_t *sum = cuda_rt_alloc(64);
    char err[256];
    if (!wd || !x || !y || !s || !q || !sum || cuda_rt_memset(x, 0, cols * 4 * 8, err, sizeof err) < 0) {
        fprintf(stderr, "tern bench --cuda: out of device memory for the tall GEMV\n");
        return;
    }
    cuda_tmat_quant(x, 8, cols, q, s, sum);
    bufs_t b = {.w = wd, .ncopy = ncopy, .wstride = gpack_bytes(rows, cols), .q = q, .s = s, .sum = sum, .y = y};
    shape_t sh = {"tall", rows, cols};
    for (int r = 0; r <= 4; r = r ? 2 * r : 1) {   /* rows per warp: by size (0), 1, 2, 4 */
        cuda_tmat_set_rows(r);
        for (int n = 1; n <= 8; n *= 8) {
            double t = time_tmat(&sh, &b, n, reps, quick ? 5 : 30);
            double gbps = (double)b.wstride / t / 1e9;
            printf("ternary GEMV %lldx%lld (%.0f MB), %d token%s, rows/warp %s: %.1f us, %.1f GB/s = %.1f%% of measured\n",
                   (long long)rows, (long long)cols, b.wstride / 1e6, n, n > 1 ? "s" : "", r == 0 ? "by size" : r == 1 ? "1" : r == 2 ? "2" : "4",
                   t * 1e6, gbps, 100 * gbps / bw);
        }
    }
    cuda_tmat_set_rows(0);
    void *d[] = {wd, x, y, s, q, sum};
    for (int i = 0; i < 6; i++) cuda_rt_free(d[i]);
}

double cuda_bench_read_gbps(size_t bytes, int reps) {
    char err[256];
    if (cuda_stage_probe(NULL, 0, err, sizeof err) < 0) return 0;
    return cuda_rt_read_gbps(bytes, reps);
}

int cuda_bench_main(int argc, char **argv) {
    int cuda = 0, reps = 5, quick = 0;
    opt_t opts[] = {
        {NULL, "--cuda", OPT_FLAG, &cuda, NULL, "GPU kernel benchmarks (this mode)", 0, 0},
        {"-r", "--repetitions", OPT_INT, &reps, "N", "timed batches per figure (best is kept)", 1, 1000},
        {NULL, "--quick", OPT_FLAG, &quick, NULL, "fewer iterations (smoke test)", 0, 0},
        OPT_END,
    };
    char err[512], *pos[1];
    int npos, rc = opt_parse(opts, argc, argv, pos, 0, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern bench --cuda [-r N] [--quick]   (model tg/pp on the GPU: tern bench -m M -ngl 99)", opts);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "tern bench --cuda: %s\n", err);
        return 1;
    }
    char name[256];
    if (cuda_stage_probe(name, sizeof name, err, sizeof err) < 0) {
        fprintf(stderr, "tern bench --cuda: %s\n", err);
        return 1;
    }
    double bw = cuda_rt_read_gbps((size_t)1 << 30, reps);
    if (bw <= 0) {
        fprintf(stderr, "tern bench --cuda: the bandwidth probe failed\n");
        return 1;
    }
    printf("device: %s, measured device-memory read bandwidth %.1f GB/s\n", name, bw);
    rc = bench_ternary(bw, reps, quick);
    if (rc == 0) bench_tall(bw, reps, quick);
    return rc ? rc : bench_decode(bw, reps, quick);
}

#endif
