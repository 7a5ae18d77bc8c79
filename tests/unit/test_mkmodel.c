/* test_mkmodel: `tern mkmodel` then `tern info` (called in-process) for every ternary type and
 * head type: tensor names, order, shapes and byte sizes equal the formats' formulas (computed
 * here independently of core/types), the weights look like BitNet weights (zero share, scale,
 * embedding spread, norms near 1), the output is deterministic per seed, and bad requests
 * fail without leaving files behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/gguf.h"
#include "core/half.h"
#include "core/model_spec.h"
#include "core/types.h"
#include "kernels/quant.h"
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int mkmodel_main(int argc, char **argv);
int cli_info(int argc, char **argv);

static char g_dir[256];

/* runs fn(args...) with argv[0] = cmd; stdout goes to out_path when given */
static int run_cmd(int (*fn)(int, char **), const char *out_path, const char *cmd, ...) {
    char *argv[40];
    int argc = 0;
    va_list ap;
    argv[argc++] = (char *)cmd;
    va_start(ap, cmd);
    for (const char *a; (a = va_arg(ap, const char *)) && argc < 39;) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    int saved = -1;
    if (out_path) {
        fflush(stdout);
        saved = dup(1);
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        dup2(fd, 1);
        close(fd);
    }
    int rc = fn(argc, argv);
    if (out_path) {
        fflush(stdout);
        dup2(saved, 1);
        close(saved);
    }
    return rc;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    return b;
}

/* bytes of a tensor by each format's definition (DESIGN.md / ggml-common.h) */
static uint64_t formula_bytes(int type, int64_t cols, int64_t rows) {
    uint64_t n = (uint64_t)(cols * rows);
    switch (type) {
    case TT_F32: return n * 4;
    case TT_F16: return n * 2;
    case TT_Q8_0: return n / 32 * (2 + 32);
    case TT_TQ2_0: return n / 256 * (64 + 2);
    case TT_TQ1_0: return n / 256 * (48 + 4 + 2);
    case TT_I2_S: return n / 4 + 32;
    default: fail_msg("unexpected type %d", type); return 0;
    }
}

static void path_in_dir(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", g_dir, name); }

/* the expected tensor list of a tiny 1-layer model */
static int expected_tensors(const hparams_t *hp, int wtype, int head, char names[][64], int *types, int64_t (*ne)[2]) {
    int n = 0;
    snprintf(names[n], 64, "token_embd.weight"); types[n] = TT_F16; ne[n][0] = hp->n_embd; ne[n][1] = hp->n_vocab; n++;
    for (int l = 0; l < hp->n_layer; l++)
        for (int r = 0; r < TR_COUNT; r++) {
            if (!tensor_role_present(hp, r)) continue;
            tensor_block_name(names[n], 64, l, r);
            tensor_role_shape(hp, r, ne[n]);
            types[n] = tensor_role_ternary(r) ? wtype : TT_F32;
            n++;
        }
    snprintf(names[n], 64, "output_norm.weight"); types[n] = TT_F32; ne[n][0] = hp->n_embd; ne[n][1] = 1; n++;
    if (head >= 0) {
        snprintf(names[n], 64, "output.weight"); types[n] = head; ne[n][0] = hp->n_embd; ne[n][1] = hp->n_vocab; n++;
    }
    return n;
}

/* ternary weights: realistic zero share, balanced signs, scale in range */
static void check_ternary(const gguf_tensor_t *t, float *scale_out) {
    int64_t cols = t->ne[0], rows = t->ne[1], n = cols * rows;
    int8_t *tr = malloc((size_t)n);
    float scale = 0;
    assert_int_equal(quant_unpack_trits(t->type, t->data, rows, cols, 0, rows, tr, &scale), 0);
    int64_t z = 0, p = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (tr[i] == 0) z++;
        else if (tr[i] == 1) p++;
        else if (tr[i] == -1) m++;
        else fail_msg("%s: trit %d at %lld", t->name, tr[i], (long long)i);
    }
    double zs = (double)z / (double)n;
    if (zs < 0.32 || zs > 0.43) fail_msg("%s: zero share %.3f outside 0.32..0.43", t->name, zs);
    if (fabs((double)(p - m)) > 0.1 * (double)(p + m)) fail_msg("%s: %lld +1 vs %lld -1", t->name, (long long)p, (long long)m);
    if (!(scale >= 0.0199f && scale <= 0.0501f)) fail_msg("%s: scale %g outside 0.02..0.05", t->name, scale);
    *scale_out = scale;
    free(tr);
}

static void check_dense(const gguf_tensor_t *t, double sd_lo, double sd_hi, double mean_lo, double mean_hi) {
    int64_t cols = t->ne[0], rows = t->ne[1], n = cols * rows;
    float *y = malloc((size_t)n * sizeof *y);
    assert_int_equal(dequant_rows(t->type, t->data, rows, cols, 0, rows, y), 0);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) { s += y[i]; s2 += (double)y[i] * y[i]; }
    double mean = s / (double)n, sd = sqrt(s2 / (double)n - mean * mean);
    if (mean < mean_lo || mean > mean_hi || sd < sd_lo || sd > sd_hi)
        fail_msg("%s: mean %g sd %g outside [%g, %g] / [%g, %g]", t->name, mean, sd, mean_lo, mean_hi, sd_lo, sd_hi);
    free(y);
}

static void test_types_and_heads(void **st) {
    (void)st;
    const char *wtypes[] = {"i2_s", "tq2_0", "tq1_0"}, *heads[] = {"f16", "q8_0"};
    for (int wi = 0; wi < 3; wi++)
        for (int hi = 0; hi < 2; hi++) {
            char path[300], out[300], err[256];
            snprintf(path, sizeof path, "%s/m_%s_%s.gguf", g_dir, wtypes[wi], heads[hi]);
            path_in_dir(out, sizeof out, "info.txt");
            int rc = run_cmd(mkmodel_main, NULL, "mkmodel", "--preset", "tiny", "--layers", "1", "--untied", "--type",
                             wtypes[wi], "--head", heads[hi], "-s", "7", "-o", path, NULL);
            assert_int_equal(rc, 0);
            gguf_t *g = NULL;
            if (gguf_open(&g, path, err, sizeof err) < 0) fail_msg("%s", err);
            hparams_t hp;
            if (hparams_from_gguf(&hp, g, err, sizeof err) < 0) fail_msg("%s", err);
            assert_int_equal(hp.n_layer, 1);
            assert_int_equal(hp.tied, 0);
            const gguf_kv_t *toks = gguf_find(g, "tokenizer.ggml.tokens");
            assert_non_null(toks);
            assert_int_equal(toks->arr_n, (uint64_t)hp.n_vocab);

            char names[32][64];
            int types[32];
            int64_t ne[32][2];
            int wt = type_from_name(wtypes[wi]), ht = type_from_name(heads[hi]);
            int n = expected_tensors(&hp, wt, ht, names, types, ne);
            assert_int_equal(g->n_tensors, (uint64_t)n);
            uint64_t end = 0;
            char *info;
            assert_int_equal(run_cmd(cli_info, out, "info", path, NULL), 0);
            info = slurp(out);
            float scales[32];
            int nsc = 0;
            for (int i = 0; i < n; i++) {
                const gguf_tensor_t *t = &g->tensors[i];
                assert_string_equal(t->name, names[i]);                 /* data order */
                if (t->type != types[i]) fail_msg("%s: type %s want %s", t->name, type_name(t->type), type_name(types[i]));
                assert_int_equal(t->ne[0], ne[i][0]);
                assert_int_equal(t->ne[1], ne[i][1]);
                uint64_t want = formula_bytes(types[i], ne[i][0], ne[i][1]);
                assert_int_equal(t->nbytes, want);
                end = t->offset + want;
                /* the info table shows the same bytes on the tensor's line */
                char key[80];
                snprintf(key, sizeof key, "\n  %s ", t->name);
                const char *line = strstr(info, key);
                if (line) line++;
                assert_non_null(line);
                char wantcol[32];
                snprintf(wantcol, sizeof wantcol, " %llu\n", (unsigned long long)want);
                const char *eol = strchr(line, '\n');
                if (!eol || (size_t)(eol - line) < strlen(wantcol) - 1 ||
                    strncmp(eol - strlen(wantcol) + 1, wantcol, strlen(wantcol)))
                    fail_msg("info line for %s does not end with %llu bytes", t->name, (unsigned long long)want);
                if (type_traits(t->type)->ternary) check_ternary(t, &scales[nsc++]);
            }
            int varied = 0;
            for (int i = 1; i < nsc; i++) varied |= scales[i] != scales[0];
            assert_true(varied);                                        /* scale varies per tensor */
            /* file = data section + padded tensors, nothing else */
            assert_int_equal(g->size, g->data_offset + (end + 31) / 32 * 32);
            assert_non_null(strstr(info, "architecture:  bitnet-b1.58"));
            assert_non_null(strstr(info, "lm head output.weight"));
            char tot[64];
            snprintf(tot, sizeof tot, "file %zu bytes", g->size);
            assert_non_null(strstr(info, tot));
            check_dense(gguf_find_tensor(g, "token_embd.weight"), 0.015, 0.055, -0.005, 0.005);
            check_dense(gguf_find_tensor(g, "output.weight"), 0.015, 0.055, -0.005, 0.005);
            check_dense(gguf_find_tensor(g, "blk.0.ffn_norm.weight"), 0.07, 0.13, 0.98, 1.02);
            free(info);
            gguf_close(&g);
            unlink(path);
        }
}

static int files_equal(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    struct stat sa, sb;
    if (stat(a, &sa) || stat(b, &sb) || sa.st_size != sb.st_size) return 0;
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    x = malloc((size_t)sa.st_size);
    y = malloc((size_t)sb.st_size);
    int eq = fread(x, 1, (size_t)sa.st_size, fa) == (size_t)sa.st_size &&
             fread(y, 1, (size_t)sb.st_size, fb) == (size_t)sb.st_size && !memcmp(x, y, (size_t)sa.st_size);
    fclose(fa);
    fclose(fb);
    free(x);
    free(y);
    return eq;
}

static void test_deterministic(void **st) {
    (void)st;
    char a[300], b[300], c[300];
    path_in_dir(a, sizeof a, "a.gguf");
    path_in_dir(b, sizeof b, "b.gguf");
    path_in_dir(c, sizeof c, "c.gguf");
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--layers", "1", "-s", "5", "-o", a, NULL), 0);
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--layers", "1", "-s", "5", "-o", b, NULL), 0);
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--layers", "1", "-s", "6", "-o", c, NULL), 0);
    assert_true(files_equal(a, b));
    assert_false(files_equal(a, c));
    unlink(a);
    unlink(b);
    unlink(c);
}

static void test_arch_and_overrides(void **st) {
    (void)st;
    char p[300], err[256];
    path_in_dir(p, sizeof p, "llama.gguf");
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--arch", "llama", "--layers", "2", "--ctx", "300",
                             "--type", "tq2_0", "--n-vocab", "300", "-o", p, NULL), 0);
    gguf_t *g = NULL;
    if (gguf_open(&g, p, err, sizeof err) < 0) fail_msg("%s", err);
    hparams_t hp;
    if (hparams_from_gguf(&hp, g, err, sizeof err) < 0) fail_msg("%s", err);
    assert_int_equal(hp.arch, ARCH_LLAMA);
    assert_int_equal(hp.n_layer, 2);
    assert_int_equal(hp.n_ctx_train, 300);
    assert_int_equal(hp.n_vocab, 300);
    assert_int_equal(hp.tied, 0);                               /* llama: head of its own, f16 by default */
    assert_int_equal(gguf_find_tensor(g, "output.weight")->type, TT_F16);
    assert_null(gguf_find_tensor(g, "blk.0.attn_sub_norm.weight"));
    assert_non_null(gguf_find_tensor(g, "blk.1.ffn_down.weight"));
    assert_null(gguf_find_tensor(g, "blk.2.ffn_down.weight"));
    gguf_close(&g);

    /* --vocab X.gguf: the tokenizer (and so n_vocab) comes from the other file */
    char q[300];
    path_in_dir(q, sizeof q, "v.gguf");
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--arch", "bitnet", "--layers", "1", "--vocab", p,
                             "--n-vocab", "0", "-o", q, NULL), 0);
    assert_int_equal(gguf_open(&g, q, err, sizeof err), 0);
    assert_int_equal(hparams_from_gguf(&hp, g, err, sizeof err), 0);
    assert_int_equal(hp.arch, ARCH_BITNET);
    assert_int_equal(hp.n_vocab, 300);                          /* the copied vocabulary's size */
    assert_int_equal(gguf_find_tensor(g, "token_embd.weight")->ne[1], 300);
    gguf_close(&g);
    unlink(p);
    unlink(q);
    /* a real llama.cpp vocabulary (SentencePiece, 32000 tokens), when the shared data is here */
    const char *shared = getenv("TERN_SHARED");
    char spm[300];
    snprintf(spm, sizeof spm, "%s/vocab/ggml-vocab-llama-spm.gguf", shared && *shared ? shared : "/work/shared");
    if (access(spm, R_OK) != 0) { print_message("skipped: no %s\n", spm); return; }
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--arch", "bitnet", "--layers", "1", "--vocab", spm,
                             "-o", q, NULL), 0);
    assert_int_equal(gguf_open(&g, q, err, sizeof err), 0);
    assert_int_equal(hparams_from_gguf(&hp, g, err, sizeof err), 0);
    assert_int_equal(hp.n_vocab, 32000);
    assert_int_equal(gguf_find_tensor(g, "token_embd.weight")->ne[1], 32000);
    char model[32];
    assert_int_equal(gguf_get_str(g, "tokenizer.ggml.model", model, sizeof model), 0);
    assert_string_equal(model, "llama");
    gguf_close(&g);
    unlink(q);
}

static void test_bad_requests(void **st) {
    (void)st;
    char p[300], tmp[310];
    path_in_dir(p, sizeof p, "bad.gguf");
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--preset", "3b", "--type", "tq2_0", "-o", p, NULL), 1);
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--preset", "3b", "-o", p, NULL), 1);
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--type", "q8_0", "-o", p, NULL), 1);
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--head", "tq2_0", "-o", p, NULL), 1);
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--preset", "nope", "-o", p, NULL), 1);
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--arch", "gpt2", "-o", p, NULL), 1);
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--vocab", "x.txt", "-o", p, NULL), 1);
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "--bogus", "-o", p, NULL), 1);
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", NULL), 1);     /* no -o */
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(run_cmd(mkmodel_main, NULL, "mkmodel", "-o", "/nonexistent-dir/m.gguf", NULL), 1);
    /* info on bad input: exit 1 */
    char out[300];
    path_in_dir(out, sizeof out, "info.txt");
    assert_int_equal(run_cmd(cli_info, out, "info", p, NULL), 1);
    assert_int_equal(run_cmd(cli_info, out, "info", NULL), 1);
    assert_int_equal(run_cmd(cli_info, out, "info", "--help", NULL), 0);
    char *h = slurp(out);
    assert_non_null(strstr(h, "--no-tensors"));
    free(h);
}

static int setup(void **st) {
    (void)st;
    setenv("TERN_PROGRESS", "0", 1);
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/tern_mkmodel_XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types_and_heads),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_arch_and_overrides),
        cmocka_unit_test(test_bad_requests),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
