/* test_core: the small core modules — option tables (flags, ranges, sizes, TERN_ARG_* mirrors),
 * the thread pool (every split sums to the serial result, many back-to-back runs), f16/bf16
 * conversions against known bit patterns, tensor type sizes, and model presets and shapes
 * (including a hparams → GGUF → hparams round trip). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "core/gguf.h"
#include "core/half.h"
#include "core/model_spec.h"
#include "core/opt.h"
#include "core/strbuf.h"
#include "core/tpool.h"
#include "core/types.h"
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- opt -------------------------------------------------------------------- */

typedef struct opts {
    int verbose, threads, ctx;
    int64_t seed;
    float temp;
    const char *model, *list;
    uint64_t mem;
} opts_t;

static void opts_table(opts_t *o, opt_t *t) {
    opt_t tab[] = {
        {"-v", "--verbose", OPT_FLAG, &o->verbose, NULL, "more logs", 0, 0},
        {"-t", "--threads", OPT_INT, &o->threads, "N", "threads", 1, 64},
        {"-c", "--ctx-size", OPT_INT, &o->ctx, "N", "context", 0, 0},
        {"-s", "--seed", OPT_I64, &o->seed, "N", "seed", 0, 0},
        {NULL, "--temp", OPT_FLOAT, &o->temp, "T", "temperature", 0, 2},
        {"-m", "--model", OPT_STR, &o->model, "FILE", "model", 0, 0},
        {NULL, "--mem", OPT_SIZE, &o->mem, "SIZE", "memory", 0, 0},
        {NULL, "--list", OPT_LIST, &o->list, "A,B", "list", 0, 0},
        OPT_END,
    };
    memcpy(t, tab, sizeof tab);
}

static const char *g_envs[] = {"TERN_ARG_VERBOSE", "TERN_ARG_THREADS", "TERN_ARG_CTX_SIZE", "TERN_ARG_SEED",
                               "TERN_ARG_TEMP", "TERN_ARG_MODEL", "TERN_ARG_MEM", "TERN_ARG_LIST"};
static void clear_env(void) {
    for (size_t i = 0; i < sizeof g_envs / sizeof g_envs[0]; i++) unsetenv(g_envs[i]);
}

/* parses a NULL-terminated argv (argv[0] = "cmd") into o; returns opt_parse's result */
static int parse(opts_t *o, char **pos, int *npos, char *err, const char *a0, ...) {
    char *argv[32];
    int argc = 0;
    va_list ap;
    argv[argc++] = (char *)"cmd";
    va_start(ap, a0);
    for (const char *a = a0; a && argc < 31; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    opt_t tab[16];
    opts_table(o, tab);
    err[0] = 0;
    return opt_parse(tab, argc, argv, pos, 4, npos, err, 256);
}

static void test_opt_parse_values(void **st) {
    (void)st;
    clear_env();
    opts_t o = {.threads = 4, .temp = 0.8f};
    char *pos[4], err[256];
    int np;
    assert_int_equal(parse(&o, pos, &np, err, "-v", "-t", "8", "--ctx-size=4096", "-s", "-5", "--temp", "0.25", "-m",
                           "x.gguf", "--mem", "1.5G", "--list", "1,2", "in.txt", "-", NULL), 0);
    assert_int_equal(o.verbose, 1);
    assert_int_equal(o.threads, 8);
    assert_int_equal(o.ctx, 4096);
    assert_int_equal(o.seed, -5);                  /* negative number is a value, not a flag */
    assert_float_equal(o.temp, 0.25f, 1e-7);
    assert_string_equal(o.model, "x.gguf");
    assert_int_equal(o.mem, (uint64_t)(1.5 * 1024 * 1024 * 1024));
    assert_string_equal(o.list, "1,2");
    assert_int_equal(np, 2);
    assert_string_equal(pos[0], "in.txt");
    assert_string_equal(pos[1], "-");
    /* after "--" everything is positional */
    assert_int_equal(parse(&o, pos, &np, err, "--", "-t", NULL), 0);
    assert_int_equal(np, 1);
    assert_string_equal(pos[0], "-t");
    assert_int_equal(parse(&o, pos, &np, err, "--help", NULL), 1);
    assert_int_equal(parse(&o, pos, &np, err, "-t", "2", "-h", NULL), 1);
}

static void expect_opt_err(int rc, const char *err, const char *frag) {
    if (rc >= 0 || !strstr(err, frag)) fail_msg("expected error with '%s', got rc=%d err='%s'", frag, rc, err);
    assert_null(strchr(err, '\n'));
}

static void test_opt_errors(void **st) {
    (void)st;
    clear_env();
    opts_t o = {0};
    char *pos[4], err[256];
    int np;
    expect_opt_err(parse(&o, pos, &np, err, "--bogus", NULL), err, "unknown option '--bogus'");
    expect_opt_err(parse(&o, pos, &np, err, "--bogus=3", NULL), err, "unknown option '--bogus'");
    expect_opt_err(parse(&o, pos, &np, err, "-t", "0", NULL), err, "--threads: 0 is out of range [1, 64]");
    expect_opt_err(parse(&o, pos, &np, err, "-t", "65", NULL), err, "out of range");
    expect_opt_err(parse(&o, pos, &np, err, "-t", "4x", NULL), err, "expected an integer, got '4x'");
    expect_opt_err(parse(&o, pos, &np, err, "-c", "99999999999", NULL), err, "too large");
    expect_opt_err(parse(&o, pos, &np, err, "--temp", "3", NULL), err, "--temp: 3 is out of range");
    expect_opt_err(parse(&o, pos, &np, err, "--temp", "nan", NULL), err, "expected a number");
    expect_opt_err(parse(&o, pos, &np, err, "-m", NULL), err, "option -m needs a value (FILE)");
    expect_opt_err(parse(&o, pos, &np, err, "--mem", "12X", NULL), err, "expected a size like 512M");
    expect_opt_err(parse(&o, pos, &np, err, "a", "b", "c", "d", "e", NULL), err, "'e'");
    expect_opt_err(parse(&o, pos, &np, err, "--verbose=maybe", NULL), err, "expected a boolean");
}

static void test_opt_env_mirror(void **st) {
    (void)st;
    clear_env();
    opts_t o = {0};
    char *pos[4], err[256];
    int np;
    setenv("TERN_ARG_THREADS", "3", 1);
    setenv("TERN_ARG_CTX_SIZE", "2048", 1);
    setenv("TERN_ARG_MODEL", "env.gguf", 1);
    setenv("TERN_ARG_VERBOSE", "", 1);           /* empty = flag set */
    setenv("TERN_ARG_MEM", "512M", 1);
    assert_int_equal(parse(&o, pos, &np, err, "-t", "5", NULL), 0);
    assert_int_equal(o.threads, 5);                /* command line wins */
    assert_int_equal(o.ctx, 2048);                 /* '-' → '_', upper case */
    assert_string_equal(o.model, "env.gguf");
    assert_int_equal(o.verbose, 1);
    assert_int_equal(o.mem, 512ull << 20);
    setenv("TERN_ARG_THREADS", "100", 1);          /* env values are range-checked too */
    expect_opt_err(parse(&o, pos, &np, err, NULL), err, "TERN_ARG_THREADS --threads: 100 is out of range");
    clear_env();
    setenv("TERN_ARG_VERBOSE", "0", 1);
    o.verbose = 1;
    assert_int_equal(parse(&o, pos, &np, err, NULL), 0);
    assert_int_equal(o.verbose, 0);
    clear_env();
}

static void test_opt_sizes(void **st) {
    (void)st;
    struct { const char *s; unsigned long long v; } ok[] = {
        {"4096", 4096}, {"512M", 512ull << 20}, {"12GiB", 12ull << 30}, {"1.5G", 3ull << 29}, {"2k", 2048},
        {"1T", 1ull << 40}, {"7B", 7}, {"64 MiB", 64ull << 20}, {"0", 0}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        unsigned long long v = 1;
        if (opt_parse_size(ok[i].s, &v) != 0 || v != ok[i].v)
            fail_msg("size '%s': got %llu want %llu", ok[i].s, v, ok[i].v);
    }
    const char *bad[] = {"", "M", "-1G", "12X", "1GG", "abc", "1e30T", "inf"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned long long v;
        if (opt_parse_size(bad[i], &v) >= 0) fail_msg("size '%s' accepted", bad[i]);
    }
}

static void test_opt_help(void **st) {
    (void)st;
    clear_env();
    opts_t o = {.threads = 4};
    opt_t tab[16];
    opts_table(&o, tab);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    opt_help(f, "tern cmd [options]", tab);
    fclose(f);
    assert_non_null(strstr(buf, "usage: tern cmd [options]"));
    assert_non_null(strstr(buf, "-t, --threads N"));
    assert_non_null(strstr(buf, "(default: 4)"));
    assert_non_null(strstr(buf, "[env TERN_ARG_CTX_SIZE]"));
    assert_non_null(strstr(buf, "-h, --help"));
    free(buf);
}

/* ---- tpool --------------------------------------------------------------------- */

typedef struct sum_task {
    const int32_t *x;
    long n;
    int64_t part[8];
    _Atomic int calls;
    int seen_nth;
} sum_task_t;

static void sum_fn(void *arg, int ith, int nth) {
    sum_task_t *t = arg;
    long b, e;
    tpool_split(t->n, ith, nth, 16, &b, &e);
    int64_t s = 0;
    for (long i = b; i < e; i++) s += t->x[i];
    t->part[ith] = s;
    if (ith == 0) t->seen_nth = nth;   /* one writer: every thread sees the same nth */
    atomic_fetch_add(&t->calls, 1);
}

static void test_tpool_sums(void **st) {
    (void)st;
    long n = 100003;
    int32_t *x = malloc((size_t)n * sizeof *x);
    int64_t serial = 0;
    for (long i = 0; i < n; i++) {
        x[i] = (int32_t)((i * 2654435761u) % 1000) - 500;
        serial += x[i];
    }
    for (int nt = 1; nt <= 4; nt++) {
        tpool_t *tp = tpool_new(nt);
        assert_non_null(tp);
        assert_int_equal(tpool_size(tp), nt);
        for (int run = 0; run < 200; run++) {
            sum_task_t t = {.x = x, .n = n - run};      /* varying sizes */
            int64_t want = serial;
            for (long i = n - run; i < n; i++) want -= x[i];
            tpool_run(tp, sum_fn, &t);
            int64_t got = 0;
            for (int i = 0; i < nt; i++) got += t.part[i];
            if (got != want || atomic_load(&t.calls) != nt || t.seen_nth != nt)
                fail_msg("threads %d run %d: sum %lld want %lld, calls %d", nt, run, (long long)got, (long long)want,
                         atomic_load(&t.calls));
        }
        tpool_destroy(&tp);
        assert_null(tp);
    }
    sum_task_t t = {.x = x, .n = n};                   /* NULL pool runs inline */
    tpool_run(NULL, sum_fn, &t);
    assert_int_equal(t.part[0], serial);
    assert_int_equal(tpool_size(NULL), 1);
    assert_null(tpool_new(0));
    tpool_destroy(NULL);
    free(x);
}

/* the pool sleeps when idle and wakes again for the next run */
static void test_tpool_wake_after_idle(void **st) {
    (void)st;
    int32_t x[100];
    for (int i = 0; i < 100; i++) x[i] = i;
    tpool_t *tp = tpool_new(3);
    for (int k = 0; k < 3; k++) {
        sum_task_t t = {.x = x, .n = 100};
        tpool_run(tp, sum_fn, &t);
        assert_int_equal(t.part[0] + t.part[1] + t.part[2], 4950);
        usleep(20000);
    }
    tpool_destroy(&tp);
}

/* More threads than cores: workers are often descheduled, so the caller runs their shares.
 * Every share must still run exactly once per run, never twice, never for a later run. */
typedef struct once_job { int run; int *hits; int bad; } once_job_t;
static void once_fn(void *arg, int ith, int nth) {
    once_job_t *j = arg;
    (void)nth;
    if (__atomic_fetch_add(&j->hits[ith], 1, __ATOMIC_RELAXED) != j->run) __atomic_store_n(&j->bad, 1, __ATOMIC_RELAXED);
}

static void test_tpool_each_share_once(void **st) {
    (void)st;
    for (int n = 2; n <= 8; n += 3) {
        tpool_t *tp = tpool_new(n);
        int hits[8] = {0};
        once_job_t j = {0, hits, 0};
        for (j.run = 0; j.run < 100000; j.run++) tpool_run(tp, once_fn, &j);
        for (int i = 0; i < n; i++) assert_int_equal(hits[i], 100000);
        assert_int_equal(j.bad, 0);
        tpool_destroy(&tp);
    }
}

static void test_tpool_split(void **st) {
    (void)st;
    long ns[] = {0, 1, 7, 16, 17, 1000, 4099};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
        for (int nth = 1; nth <= 5; nth++)
            for (long align = 1; align <= 32; align *= 4) {
                long expect_b = 0;
                for (int i = 0; i < nth; i++) {
                    long b, e;
                    tpool_split(ns[k], i, nth, align, &b, &e);
                    assert_int_equal(b, expect_b);          /* contiguous, in order */
                    assert_true(e >= b);
                    if (e < ns[k]) assert_int_equal(e % align, 0);
                    expect_b = e;
                }
                assert_int_equal(expect_b, ns[k]);         /* covers [0, n) */
            }
}

/* ---- half ----------------------------------------------------------------------- */

static void test_half_known_values(void **st) {
    (void)st;
    struct { float f; uint16_t h; } exact[] = {
        {0.0f, 0x0000}, {-0.0f, 0x8000}, {1.0f, 0x3c00}, {-2.0f, 0xc000}, {0.5f, 0x3800}, {65504.0f, 0x7bff},
        {0.333251953125f, 0x3555}, {6.103515625e-05f, 0x0400} /* smallest normal */,
        {5.960464477539063e-08f, 0x0001} /* smallest subnormal */, {-1.5f, 0xbe00}, {1024.0f, 0x6400}};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        if (f32_to_f16(exact[i].f) != exact[i].h)
            fail_msg("f32_to_f16(%g) = 0x%04x want 0x%04x", exact[i].f, f32_to_f16(exact[i].f), exact[i].h);
        if (f16_to_f32(exact[i].h) != exact[i].f || signbit(f16_to_f32(exact[i].h)) != signbit(exact[i].f))
            fail_msg("f16_to_f32(0x%04x) = %g want %g", exact[i].h, f16_to_f32(exact[i].h), exact[i].f);
    }
    /* rounding: to nearest, ties to even */
    assert_int_equal(f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);          /* tie → even (down) */
    assert_int_equal(f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);          /* tie → even (up) */
    assert_int_equal(f32_to_f16(1.0f + 1.0f / 2048 + 1.0f / 65536), 0x3c01);
    assert_int_equal(f32_to_f16(65520.0f), 0x7c00);                    /* rounds past max → inf */
    assert_int_equal(f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(f32_to_f16(1e-9f), 0x0000);                       /* underflow → 0 */
    assert_int_equal(f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(f32_to_f16(-INFINITY), 0xfc00);
    assert_true(isnan(f16_to_f32(f32_to_f16(NAN))));
    assert_true(isinf(f16_to_f32(0x7c00)));
    /* every non-NaN f16 survives f16 → f32 → f16 */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;
        uint16_t back = f32_to_f16(f16_to_f32((uint16_t)h));
        if (back != h) fail_msg("f16 0x%04x round trip gave 0x%04x", h, back);
    }
    /* bf16 */
    assert_int_equal(f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(f32_to_bf16(-2.0f), 0xc000);
    assert_int_equal(f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);         /* tie → even */
    assert_int_equal(f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
    assert_float_equal(bf16_to_f32(0x4049), 3.140625f, 0);
    assert_true(isnan(bf16_to_f32(f32_to_bf16(NAN))));
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f)) continue;
        if (f32_to_bf16(bf16_to_f32((uint16_t)h)) != h) fail_msg("bf16 0x%04x round trip", h);
    }
}

/* ---- types ------------------------------------------------------------------------ */

static void test_types_sizes(void **st) {
    (void)st;
    assert_int_equal(type_tensor_bytes(TT_F32, 10, 3), 120);
    assert_int_equal(type_tensor_bytes(TT_F16, 10, 3), 60);
    assert_int_equal(type_tensor_bytes(TT_BF16, 10, 3), 60);
    assert_int_equal(type_tensor_bytes(TT_Q8_0, 64, 3), 3 * 2 * 34);
    assert_int_equal(type_tensor_bytes(TT_Q8_0, 48, 3), 0);            /* not a multiple of 32 */
    assert_int_equal(type_tensor_bytes(TT_TQ1_0, 512, 2), 2 * 2 * 54);
    assert_int_equal(type_tensor_bytes(TT_TQ2_0, 256, 5), 5 * 66);
    assert_int_equal(type_tensor_bytes(TT_Q6_K, 256, 1), 210);
    assert_int_equal(type_tensor_bytes(TT_I2_S, 2560, 640), 2560 * 640 / 4 + 32);
    assert_int_equal(type_tensor_bytes(TT_I2_S, 100, 4), 0);
    assert_int_equal(type_tensor_bytes(TT_Q4_0, 32, 1), 18);
    assert_int_equal(type_tensor_bytes(TT_Q5_0, 64, 2), 2 * 2 * 22);
    assert_int_equal(type_tensor_bytes(TT_Q4_K, 512, 3), 3 * 2 * 144);
    assert_int_equal(type_tensor_bytes(TT_Q5_K, 256, 1), 176);
    assert_int_equal(type_tensor_bytes(TT_Q6_K, 2560, 2), 2 * 10 * 210);
    assert_int_equal(type_tensor_bytes(TT_Q6_K, 2688, 1), 0);           /* not a multiple of 256 */
    assert_int_equal(type_tensor_bytes(3, 32, 1), 0);                  /* Q4_1: not tern's */
    assert_int_equal(type_tensor_bytes(TT_F32, 0, 1), 0);
    assert_int_equal(type_row_bytes(TT_TQ2_0, 512), 132);
    assert_int_equal(type_row_bytes(TT_I2_S, 512), 0);                 /* rows not addressable */
    assert_int_equal(type_from_name("TQ2_0"), TT_TQ2_0);
    assert_int_equal(type_from_name("i2_s"), TT_I2_S);
    assert_int_equal(type_from_name("q4_0"), TT_Q4_0);
    assert_int_equal(type_from_name("Q4_K"), TT_Q4_K);
    assert_int_equal(type_from_name("q5_1"), -1);
    assert_string_equal(type_name(TT_Q8_0), "q8_0");
    assert_string_equal(type_name(77), "?");
    assert_null(type_traits(-1));
    assert_null(type_traits(TT_COUNT));
    int nter = 0;
    for (int t = 0; t < TT_COUNT; t++)
        if (type_traits(t)) {
            assert_int_equal(type_from_name(type_name(t)), t);
            nter += type_traits(t)->ternary;
        }
    assert_int_equal(nter, 3);
    /* bits per weight of the ternary formats */
    assert_float_equal(type_tensor_bytes(TT_TQ1_0, 256, 1) * 8.0 / 256, 1.6875, 1e-9);
    assert_float_equal(type_tensor_bytes(TT_TQ2_0, 256, 1) * 8.0 / 256, 2.0625, 1e-9);
}

/* ---- model_spec -------------------------------------------------------------------- */

static void test_presets(void **st) {
    (void)st;
    char list[512];
    snprintf(list, sizeof list, "%s", preset_list());
    int n = 0;
    for (char *save = NULL, *p = strtok_r(list, ", ", &save); p; p = strtok_r(NULL, ", ", &save), n++) {
        hparams_t hp;
        if (preset_find(p, -1, &hp) != 0) fail_msg("preset '%s' from preset_list not found", p);
        assert_true(hp.n_layer > 0 && hp.n_embd > 0 && hp.n_ff > 0 && hp.n_vocab > 0);
        assert_int_equal(hp.n_head % hp.n_head_kv, 0);
        assert_int_equal(hp.sub_norms, hp.arch != ARCH_LLAMA);
        for (int r = 0; r < TR_COUNT; r++) {
            int64_t ne[2];
            if (!tensor_role_present(&hp, r)) continue;
            int nd = tensor_role_shape(&hp, r, ne);
            assert_int_equal(nd, tensor_role_ternary(r) ? 2 : 1);
            assert_true(ne[0] > 0 && ne[1] > 0);
            if (tensor_role_ternary(r)) assert_int_equal(ne[0] % 256, 0);   /* every preset fits TQ1_0/TQ2_0/I2_S */
        }
    }
    assert_int_equal(n, 12);
    hparams_t hp;
    assert_true(preset_find("nope", -1, &hp) < 0);
    assert_int_equal(preset_find("2b4t", -1, &hp), 0);
    assert_int_equal(hp.arch, ARCH_BITNET_B158);
    assert_int_equal(hp.n_layer, 30);
    assert_int_equal(hp.n_embd, 2560);
    assert_int_equal(hp.n_ff, 6912);
    assert_int_equal(hp.n_head, 20);
    assert_int_equal(hp.n_head_kv, 5);
    assert_int_equal(hp.head_dim, 128);
    assert_int_equal(hp.n_vocab, 128256);
    assert_int_equal(hp.act, ACT_RELU2);
    assert_int_equal(hp.rope_neox, 1);
    assert_int_equal(hp.tied, 1);
    int64_t ne[2];
    tensor_role_shape(&hp, TR_ATTN_Q, ne);   assert_int_equal(ne[0], 2560); assert_int_equal(ne[1], 2560);
    tensor_role_shape(&hp, TR_ATTN_K, ne);   assert_int_equal(ne[0], 2560); assert_int_equal(ne[1], 640);
    tensor_role_shape(&hp, TR_ATTN_OUT, ne); assert_int_equal(ne[0], 2560); assert_int_equal(ne[1], 2560);
    tensor_role_shape(&hp, TR_FFN_UP, ne);   assert_int_equal(ne[0], 2560); assert_int_equal(ne[1], 6912);
    tensor_role_shape(&hp, TR_FFN_DOWN, ne); assert_int_equal(ne[0], 6912); assert_int_equal(ne[1], 2560);
    tensor_role_shape(&hp, TR_FFN_SUB_NORM, ne); assert_int_equal(ne[0], 6912);
    /* 2B-4T: ~2.4e9 parameters total of which the blocks hold 30 × 65.5M ternary weights */
    assert_int_equal(hparams_block_params(&hp), 2560LL * 2560 * 2 + 2560LL * 640 * 2 + 2560LL * 6912 * 3);
    char name[64];
    tensor_block_name(name, sizeof name, 3, TR_ATTN_SUB_NORM);
    assert_string_equal(name, "blk.3.attn_sub_norm.weight");
    assert_int_equal(preset_find("falcon3-1b", -1, &hp), 0);
    assert_int_equal(hp.arch, ARCH_LLAMA);
    assert_int_equal(hp.tied, 0);
    assert_int_equal(hp.act, ACT_SILU);
    assert_int_equal(hp.head_dim, 256);                /* not n_embd / n_head */
    assert_int_equal(tensor_role_present(&hp, TR_FFN_SUB_NORM), 0);
    assert_int_equal(preset_find("tiny", ARCH_LLAMA, &hp), 0);  /* arch override */
    assert_int_equal(hp.arch, ARCH_LLAMA);
    assert_int_equal(hp.tied, 0);
    assert_int_equal(arch_from_name("bitnet-25"), ARCH_BITNET_B158);
    assert_int_equal(arch_from_name("bitnet"), ARCH_BITNET);
    assert_int_equal(arch_from_name("gpt2"), -1);
    assert_string_equal(arch_name(ARCH_LLAMA), "llama");
}

/* hparams → GGUF keys → hparams gives back the same shape, for every arch */
static void test_hparams_gguf_roundtrip(void **st) {
    (void)st;
    const char *presets[] = {"2b4t", "large", "falcon3-1b"};
    char dir[] = "/tmp/tern_core_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64], err[256];
    snprintf(path, sizeof path, "%s/hp.gguf", dir);
    for (size_t i = 0; i < 3; i++) {
        hparams_t a, b;
        assert_int_equal(preset_find(presets[i], -1, &a), 0);
        gguf_writer_t *w = gguf_writer_new();
        hparams_to_gguf(&a, w, presets[i]);
        int64_t ne[2] = {a.n_embd, 1};
        if (!a.tied) gguf_writer_add_tensor(w, "output.weight", TT_F32, 1, ne);
        assert_int_equal(gguf_writer_begin(w, path, err, sizeof err), 0);
        float *z = calloc((size_t)a.n_embd, sizeof(float));
        if (!a.tied) assert_int_equal(gguf_writer_write(w, z, (size_t)a.n_embd * 4, err, sizeof err), 0);
        free(z);
        assert_int_equal(gguf_writer_finish(w, err, sizeof err), 0);
        gguf_writer_destroy(&w);
        gguf_t *g = NULL;
        if (gguf_open(&g, path, err, sizeof err) < 0) fail_msg("%s", err);
        if (hparams_from_gguf(&b, g, err, sizeof err) < 0) fail_msg("%s: %s", presets[i], err);
        char name[64];
        assert_int_equal(gguf_get_str(g, "general.name", name, sizeof name), 0);
        assert_string_equal(name, presets[i]);
        gguf_close(&g);
        assert_string_equal(a.arch_name, b.arch_name);
        assert_int_equal(a.arch, b.arch);
        assert_int_equal(a.n_layer, b.n_layer);
        assert_int_equal(a.n_embd, b.n_embd);
        assert_int_equal(a.n_ff, b.n_ff);
        assert_int_equal(a.n_head, b.n_head);
        assert_int_equal(a.n_head_kv, b.n_head_kv);
        assert_int_equal(a.head_dim, b.head_dim);
        assert_int_equal(a.n_vocab, b.n_vocab);
        assert_int_equal(a.n_ctx_train, b.n_ctx_train);
        assert_int_equal(a.rot_dim, b.rot_dim);
        assert_int_equal(a.act, b.act);
        assert_int_equal(a.tied, b.tied);
        assert_int_equal(a.sub_norms, b.sub_norms);
        assert_float_equal(a.rope_base, b.rope_base, 0);
        assert_float_equal(a.norm_eps, b.norm_eps, 0);
    }
    /* inconsistent heads are refused */
    hparams_t a, b;
    preset_find("tiny", -1, &a);
    a.n_head_kv = 3;
    gguf_writer_t *w = gguf_writer_new();
    hparams_to_gguf(&a, w, NULL);
    assert_int_equal(gguf_writer_begin(w, path, err, sizeof err), 0);
    assert_int_equal(gguf_writer_finish(w, err, sizeof err), 0);
    gguf_writer_destroy(&w);
    gguf_t *g = NULL;
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    assert_true(hparams_from_gguf(&b, g, err, sizeof err) < 0);
    assert_non_null(strstr(err, "inconsistent hyper-parameters"));
    gguf_close(&g);
    unlink(path);
    rmdir(dir);
}

/* the tiny preset's keys, with hp's RoPE scaling, then one extra key (NULL: none) of GGUF type
 * vtype, written to path and read back into *b: hparams_from_gguf's rc, its message in err */
static int rope_file(const char *path, const hparams_t *a, const char *key, int vtype, double num, const char *str,
                     hparams_t *b, char *err, size_t errlen) {
    gguf_writer_t *w = gguf_writer_new();
    hparams_to_gguf(a, w, NULL);
    if (key && vtype == GGUF_STR) gguf_writer_set_str(w, key, str);
    else if (key && vtype == GGUF_U32) gguf_writer_set_u32(w, key, (uint32_t)num);
    else if (key) gguf_writer_set_f32(w, key, (float)num);
    assert_int_equal(gguf_writer_begin(w, path, err, errlen), 0);
    assert_int_equal(gguf_writer_finish(w, err, errlen), 0);
    gguf_writer_destroy(&w);
    gguf_t *g = NULL;
    assert_int_equal(gguf_open(&g, path, err, errlen), 0);
    int rc = hparams_from_gguf(b, g, err, errlen);
    gguf_close(&g);
    return rc;
}

/* asserts that every field of got is want's, exactly */
static void rope_scaling_eq(const rope_scaling_t *got, rope_scaling_t want) {
    assert_int_equal(got->type, want.type);
    assert_float_equal(got->freq_scale, want.freq_scale, 0);
    assert_int_equal(got->n_ctx_orig, want.n_ctx_orig);
    assert_float_equal(got->ext_factor, want.ext_factor, 0);
    assert_float_equal(got->attn_factor, want.attn_factor, 0);
    assert_float_equal(got->beta_fast, want.beta_fast, 0);
    assert_float_equal(got->beta_slow, want.beta_slow, 0);
}

/* RoPE scaling keys: yarn and linear round trip through hparams_to_gguf / hparams_from_gguf;
 * llama.cpp's older rope.scale_linear and the type it implies; corrupt values and unknown types
 * refused with the key named; the user's overrides applied and checked */
static void test_hparams_rope(void **st) {
    (void)st;
    char dir[] = "/tmp/tern_core_XXXXXX", path[64], err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/rope.gguf", dir);
    hparams_t a, b;
    assert_int_equal(preset_find("tiny", ARCH_LLAMA, &a), 0);
    assert_int_equal(a.rope.type, ROPE_SCALING_NONE);
    a.rope = (rope_scaling_t){ROPE_SCALING_YARN, 0.25f, 128, 0.5f, 1.25f, 16.0f, 2.0f};
    if (rope_file(path, &a, NULL, 0, 0, NULL, &b, err, sizeof err) < 0) fail_msg("%s", err);
    rope_scaling_eq(&b.rope, (rope_scaling_t){ROPE_SCALING_YARN, 0.25f, 128, 0.5f, 1.25f, 16.0f, 2.0f});
    a.rope = (rope_scaling_t){ROPE_SCALING_LINEAR, 0.5f, 0, -1.0f, 1.0f, 32.0f, 1.0f};
    if (rope_file(path, &a, NULL, 0, 0, NULL, &b, err, sizeof err) < 0) fail_msg("%s", err);
    assert_int_equal(b.rope.type, ROPE_SCALING_LINEAR);
    assert_float_equal(b.rope.freq_scale, 0.5f, 0);
    assert_true(b.rope.ext_factor < 0);
    assert_float_equal(b.rope.attn_factor, 1.0f, 0);
    /* the older key alone: linear with its factor (llama.cpp's default type) */
    assert_int_equal(preset_find("tiny", ARCH_LLAMA, &a), 0);
    if (rope_file(path, &a, "llama.rope.scale_linear", GGUF_F32, 4.0, NULL, &b, err, sizeof err) < 0) fail_msg("%s", err);
    assert_int_equal(b.rope.type, ROPE_SCALING_LINEAR);
    assert_float_equal(b.rope.freq_scale, 0.25f, 0);
    /* refused, naming the key or the value */
    const struct { const char *key; int vtype; double num; const char *str, *says; } bad[] = {
        {"llama.rope.scaling.type", GGUF_STR, 0, "longrope", "'longrope' is not supported"},
        {"llama.rope.scaling.type", GGUF_STR, 0, "dynamic", "llama.rope.scaling.type"},
        {"llama.rope.scaling.type", GGUF_U32, 2, NULL, "not a short string"},
        {"llama.rope.scaling.factor", GGUF_F32, -2.0, NULL, "rope.scaling.factor"},
        {"llama.rope.scaling.factor", GGUF_F32, NAN, NULL, "rope.scaling.factor"},
        {"llama.rope.scaling.factor", GGUF_F32, INFINITY, NULL, "rope.scaling.factor"},
        {"llama.rope.scaling.factor", GGUF_STR, 0, "4", "is not a float"},
        {"llama.rope.scaling.attn_factor", GGUF_F32, NAN, NULL, "attn_factor"},
        {"llama.rope.scaling.attn_factor", GGUF_F32, -1.0, NULL, "attn_factor"},
        {"llama.rope.scaling.yarn_beta_fast", GGUF_F32, 0.0, NULL, "beta_fast"},
        {"llama.rope.scaling.yarn_ext_factor", GGUF_F32, -7.0, NULL, "ext_factor"},
        {"llama.rope.scaling.original_context_length", GGUF_U32, 4e9, NULL, "original_context_length"},
        {"llama.rope.freq_base", GGUF_F32, INFINITY, NULL, "freq_base"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(preset_find("tiny", ARCH_LLAMA, &a), 0);
        a.rope.type = ROPE_SCALING_YARN, a.rope.freq_scale = 0.5f;
        err[0] = 0;
        if (rope_file(path, &a, bad[i].key, bad[i].vtype, bad[i].num, bad[i].str, &b, err, sizeof err) >= 0)
            fail_msg("%s accepted", bad[i].key);
        if (!strstr(err, bad[i].says) || strchr(err, '\n')) fail_msg("%s: '%s' does not say '%s'", bad[i].key, err, bad[i].says);
    }
    /* overrides: each field replaces the file's (attn_factor multiplies it); none turns scaling off */
    assert_int_equal(preset_find("tiny", ARCH_LLAMA, &a), 0);
    a.rope.attn_factor = 2.0f;
    rope_override_t o;
    rope_override_default(&o);
    assert_true(rope_override_empty(&o));
    o.type = ROPE_SCALING_YARN, o.freq_scale = 0.125f, o.n_ctx_orig = 64, o.ext_factor = 0.0f, o.attn_factor = 1.5f;
    o.beta_fast = 8.0f, o.beta_slow = 0.5f, o.freq_base = 1234.0f;
    assert_false(rope_override_empty(&o));
    assert_int_equal(hparams_rope_override(&a, &o, err, sizeof err), 0);
    rope_scaling_eq(&a.rope, (rope_scaling_t){ROPE_SCALING_YARN, 0.125f, 64, 0.0f, 3.0f, 8.0f, 0.5f});
    assert_float_equal(a.rope_base, 1234.0f, 0);
    rope_override_default(&o);
    o.type = ROPE_SCALING_NONE;
    assert_int_equal(hparams_rope_override(&a, &o, err, sizeof err), 0);
    assert_float_equal(a.rope.freq_scale, 1.0f, 0);   /* llama.cpp: never scale with none */
    rope_override_default(&o);
    o.attn_factor = NAN;
    assert_true(hparams_rope_override(&a, &o, err, sizeof err) < 0);
    assert_non_null(strstr(err, "attn_factor"));
    rope_override_default(&o);
    o.type = ROPE_SCALING_LINEAR, o.freq_scale = -1.0f;
    assert_true(hparams_rope_override(&a, &o, err, sizeof err) < 0);
    assert_non_null(strstr(err, "freq_scale"));
    rope_override_default(&o);
    o.type = 7;
    assert_true(hparams_rope_override(&a, &o, err, sizeof err) < 0);
    assert_int_equal(rope_scaling_parse("yarn"), ROPE_SCALING_YARN);
    assert_int_equal(rope_scaling_parse("longrope"), -1);
    /* llama3 factors: llama.cpp's values for Llama-3.1 (factor 8, low 1, high 4, 8192) at dim 128,
     * base 500000: the fastest pairs kept, the slowest divided by 8, a smooth step between */
    float ff[64];
    rope_llama3_factors(ff, 128, 500000.0f, 8.0f, 1.0f, 4.0f, 8192);
    assert_float_equal(ff[0], 1.0f, 0);
    assert_float_equal(ff[63], 8.0f, 0);
    int mid = 0;
    for (int i = 0; i < 64; i++) {
        if (i && ff[i] < ff[i - 1]) fail_msg("llama3 factors not rising at %d", i);
        mid += ff[i] > 1.0f && ff[i] < 8.0f;
    }
    assert_true(mid > 0);
    unlink(path);
    rmdir(dir);
}

/* strbuf: pieces join, printf formats in full, max drops the write that passes it and all later */
static void test_strbuf(void **state) {
    (void)state;
    strbuf_t b = {0};
    assert_int_equal(strbuf_add(&b, "ab", 2), 0);
    assert_int_equal(strbuf_puts(&b, "cd"), 0);
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(strbuf_printf(&b, "-%d-%s", 42, big), 0);   /* longer than any small scratch */
    assert_int_equal(b.n, 4 + 4 + 299);
    assert_int_equal(strlen(b.p), b.n);
    assert_memory_equal(b.p, "abcd-42-xx", 10);
    strbuf_free(&b);
    assert_null(b.p);
    strbuf_t m = {.max = 5};
    assert_int_equal(strbuf_puts(&m, "12345"), 0);   /* exactly max */
    assert_int_equal(strbuf_add(&m, "6", 1), -1);
    assert_int_equal(m.err, STRBUF_TOOBIG);
    assert_int_equal(strbuf_puts(&m, ""), -1);       /* sticky: nothing more goes in */
    assert_int_equal(strbuf_printf(&m, "%d", 1), -1);
    assert_string_equal(m.p, "12345");
    strbuf_free(&m);
    assert_int_equal(m.err, 0);
    assert_int_equal(m.max, 5);
    strbuf_t e = {0};
    assert_int_equal(strbuf_add(&e, NULL, 0), 0);   /* an empty piece makes an empty string */
    assert_string_equal(e.p, "");
    strbuf_free(&e);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opt_parse_values),
        cmocka_unit_test(test_opt_errors),
        cmocka_unit_test(test_opt_env_mirror),
        cmocka_unit_test(test_opt_sizes),
        cmocka_unit_test(test_opt_help),
        cmocka_unit_test(test_tpool_sums),
        cmocka_unit_test(test_tpool_wake_after_idle),
        cmocka_unit_test(test_tpool_split),
        cmocka_unit_test(test_tpool_each_share_once),
        cmocka_unit_test(test_half_known_values),
        cmocka_unit_test(test_types_sizes),
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_hparams_gguf_roundtrip),
        cmocka_unit_test(test_hparams_rope),
        cmocka_unit_test(test_strbuf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
