/* test_kvfile: the slot / prompt cache file (coordinator/kvfile.c). A saved file reads back
 * field for field (identity, shapes, tokens, every row byte); kvfile_check takes the same model
 * and refuses another file, other shapes, tokens past the context or the vocabulary, each in one
 * line; a file restores only under the RoPE it was saved with (each field that differs named), a
 * version-1 file without the record only under plain RoPE; another cache type is converted as the
 * stages would store the values (f32 -> f16 equals ops_kv_put of the f32 values). Hostile files:
 * every truncation, a flipped bit anywhere (the checksum, or a size check first), huge counts in a
 * small file, bad magic / version / shapes / RoPE record — each refused with TERN_EFORMAT and a
 * one-line message, nothing allocated for the counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "coordinator/kvfile.h"
#include "core/err.h"
#include "core/hash.h"
#include "kernels/ops.h"

static char g_dir[64];

/* hp's RoPE fields for rope_model: yarn over a base and factor, the rest llama.cpp's */
static hparams_t rope_hp(float base, float factor) {
    hparams_t hp;
    memset(&hp, 0, sizeof hp);
    hp.rope_base = base, hp.n_ctx_train = 128;
    hp.rope.type = ROPE_SCALING_YARN, hp.rope.freq_scale = 1.0f / factor, hp.rope.ext_factor = -1.0f;
    hp.rope.attn_factor = 1.0f, hp.rope.beta_fast = 32.0f, hp.rope.beta_slow = 1.0f, hp.rope.n_ctx_orig = 32;
    return hp;
}

static kvfile_model_t model(int kv_type) {
    kvfile_model_t m;
    memset(&m, 0, sizeof m);
    m.size = 1234567;
    snprintf(m.hash, sizeof m.hash, "fnv64:00112233aabbccdd");
    m.n_layer = 3, m.n_embd = 64, m.n_vocab = 300, m.kv_dim = 32, m.kv_type = kv_type;
    m.row = ops_kv_bytes(kv_type, m.kv_dim);
    return m;
}

/* a file of n tokens of model m in g_dir/name with rows from seed; its rows in *kv (caller frees) */
static void save(const char *name, const kvfile_model_t *m, int n, uint8_t **kv, char *path, size_t cap) {
    int32_t toks[64];
    for (int i = 0; i < n; i++) toks[i] = (i * 37 + 1) % m->n_vocab;
    size_t kb = kvfile_kv_bytes(m, n);
    *kv = malloc(kb);
    assert_non_null(*kv);
    if (m->kv_type == KV_F32) {   /* real values: conversions are compared through f32 */
        float *f = (float *)*kv;
        for (size_t i = 0; i < kb / 4; i++) f[i] = (float)((int)(i * 2654435761u % 2001) - 1000) / 97.0f;
    } else {
        for (size_t i = 0; i < kb; i++) (*kv)[i] = (uint8_t)(i * 131 + 17) & 0x3b;   /* finite f16 / q8_0 bits */
    }
    snprintf(path, cap, "%s/%s", g_dir, name);
    char err[256];
    uint64_t written = 0;
    assert_int_equal(kvfile_save(path, m, toks, n, *kv, &written, err, sizeof err), 0);
    uint64_t head = 8 + 4 + 8 + MODEL_ID_HASH_LEN + 20 + 8 + KVFILE_ROPE_BYTES + 4;
    assert_int_equal(written, head + 4 * (uint64_t)n + 8 + kb + 8);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);   /* renamed into place */
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len + 1);
    assert_int_equal(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

/* buf[0..len) (copied) must be refused: TERN_EFORMAT, one line containing what (NULL: anything) */
static void expect_bad(const uint8_t *buf, size_t len, const char *what, const char *why) {
    uint8_t *b = malloc(len ? len : 1);
    memcpy(b, buf, len);
    kvfile_t f;
    char err[512] = "";
    int rc = kvfile_parse(&f, b, len, err, sizeof err);
    if (rc != TERN_EFORMAT || !err[0] || strchr(err, '\n') || (what && !strstr(err, what)) || f.data || f.toks)
        fail_msg("%s: rc %d, '%s' (expected TERN_EFORMAT with '%s')", why, rc, err, what ? what : "");
}

static void test_round_trip(void **st) {
    (void)st;
    static const float ff[4] = {1.0f, 2.0f, 4.0f, 8.0f};
    for (int t = KV_F32; t <= KV_Q8_0; t++) {
        kvfile_model_t m = model(t);
        hparams_t hp = rope_hp(50000.0f, 4.0f);   /* non-default RoPE, with frequency factors */
        kvfile_model_rope(&m, &hp, ff, sizeof ff, 1);
        assert_int_equal(m.rope_plain, 0);
        uint8_t *kv;
        char path[256], err[256];
        save("rt.kv", &m, 17, &kv, path, sizeof path);
        kvfile_t f;
        assert_int_equal(kvfile_load(&f, path, err, sizeof err), 0);
        assert_int_equal(f.m.size, m.size);
        assert_string_equal(f.m.hash, m.hash);
        assert_int_equal(f.m.n_layer, 3);
        assert_int_equal(f.m.n_embd, 64);
        assert_int_equal(f.m.n_vocab, 300);
        assert_int_equal(f.m.kv_dim, 32);
        assert_int_equal(f.m.kv_type, t);
        assert_int_equal(f.m.row, m.row);
        assert_int_equal(f.m.rope_old, 0);
        assert_int_equal(f.m.rope.type, ROPE_SCALING_YARN);
        assert_true(f.m.rope.freq_base == 50000.0f && f.m.rope.freq_scale == 0.25f && f.m.rope.ext_factor == 1.0f);
        assert_true(f.m.rope.attn_factor == 1.0f && f.m.rope.beta_fast == 32.0f && f.m.rope.beta_slow == 1.0f);
        assert_int_equal(f.m.rope.n_ctx_orig, 32);
        assert_int_equal(f.m.rope.freqs_hash, hash_mix64(hash_fnv1a(HASH_FNV_OFFSET, ff, sizeof ff)));
        assert_memory_equal(&f.m.rope, &m.rope, sizeof m.rope);
        assert_int_equal(f.n_tok, 17);
        for (int i = 0; i < 17; i++) assert_int_equal(f.toks[i], (i * 37 + 1) % 300);
        assert_memory_equal(f.kv, kv, kvfile_kv_bytes(&m, 17));
        assert_int_equal(kvfile_check(&f, &m, 17, err, sizeof err), 0);   /* exactly the context: fits */
        kvfile_free(&f);
        free(kv);
    }
}

static void test_check_refuses(void **st) {
    (void)st;
    kvfile_model_t m = model(KV_F16);
    uint8_t *kv;
    char path[256], err[512];
    save("ck.kv", &m, 10, &kv, path, sizeof path);
    free(kv);
    struct { kvfile_model_t want; int n_ctx; const char *what; } cases[4];
    for (int i = 0; i < 4; i++) cases[i].want = m, cases[i].n_ctx = 64;
    cases[0].want.hash[8] ^= 1, cases[0].what = "saved with another model file";
    cases[1].want.size++, cases[1].what = "saved with another model file";
    cases[2].want.n_layer = 4, cases[2].what = "shapes differ";
    cases[3].n_ctx = 9, cases[3].what = "10 tokens do not fit a context of 9";
    for (int i = 0; i < 4; i++) {
        kvfile_t f;
        assert_int_equal(kvfile_load(&f, path, err, sizeof err), 0);
        int rc = kvfile_check(&f, &cases[i].want, cases[i].n_ctx, err, sizeof err);
        if (rc != TERN_EINVAL || !strstr(err, cases[i].what) || strchr(err, '\n'))
            fail_msg("check case %d: rc %d '%s' (expected '%s')", i, rc, err, cases[i].what);
        kvfile_free(&f);
    }
    kvfile_t f;   /* a token outside the vocabulary (a file of a model with more tokens) */
    assert_int_equal(kvfile_load(&f, path, err, sizeof err), 0);
    f.toks[3] = 300;
    assert_int_equal(kvfile_check(&f, &m, 64, err, sizeof err), TERN_EINVAL);
    assert_non_null(strstr(err, "outside the vocabulary"));
    kvfile_free(&f);
    assert_int_equal(kvfile_load(&f, "/nonexistent/x.kv", err, sizeof err), TERN_ENOTFOUND);
    assert_non_null(strstr(err, "/nonexistent/x.kv"));
    int32_t tok = 1;
    uint8_t row[64 * 6] = {0};
    assert_int_equal(kvfile_save("/nonexistent/dir/x.kv", &m, &tok, 1, row, NULL, err, sizeof err), TERN_EIO);
}

/* kvfile_check against want with the RoPE of hp (factors ff[0..n) or NULL, flagged): rc, err */
static int check_rope(const char *path, const hparams_t *hp, const void *ff, size_t n, int flagged, char *err,
                      size_t errlen) {
    kvfile_model_t want = model(KV_F16);
    kvfile_model_rope(&want, hp, ff, n, flagged);
    kvfile_t f;
    assert_int_equal(kvfile_load(&f, path, err, errlen), 0);
    int rc = kvfile_check(&f, &want, 64, err, errlen);
    kvfile_free(&f);
    return rc;
}

/* a file saved under one RoPE restores under the same only: each field that differs is named
 * with both values; flags that change nothing (yarn's ramp with ext_factor 0) do not refuse */
static void test_rope_refuses(void **st) {
    (void)st;
    static const float ff[4] = {1.0f, 2.0f, 4.0f, 8.0f}, ff2[4] = {1.0f, 2.0f, 4.0f, 9.0f};
    kvfile_model_t m = model(KV_F16);
    hparams_t hp = rope_hp(50000.0f, 4.0f);
    kvfile_model_rope(&m, &hp, ff, sizeof ff, 1);
    uint8_t *kv;
    char path[256], err[512];
    save("rope.kv", &m, 10, &kv, path, sizeof path);
    free(kv);
    assert_int_equal(check_rope(path, &hp, ff, sizeof ff, 1, err, sizeof err), 0);
    assert_int_equal(check_rope(path, &hp, ff, sizeof ff, 0, err, sizeof err), 0);   /* flags or keys: the same */
    struct { hparams_t hp; const float *ff; const char *what; } c[9];
    for (int i = 0; i < 9; i++) c[i].hp = hp, c[i].ff = ff;
    c[0].hp.rope_base = 10000.0f, c[0].what = "saved with RoPE freq_base 50000, this model runs 10000";
    c[1].hp.rope.type = ROPE_SCALING_LINEAR, c[1].what = "saved with RoPE scaling yarn, this model runs linear";
    c[2].hp.rope.freq_scale = 0.5f, c[2].what = "RoPE freq_scale 0.25, this model runs 0.5";
    c[3].hp.rope.ext_factor = 0.5f, c[3].what = "RoPE ext_factor 1, this model runs 0.5";
    c[4].hp.rope.attn_factor = 1.5f, c[4].what = "RoPE attn_factor 1, this model runs 1.5";
    c[5].hp.rope.beta_fast = 16.0f, c[5].what = "RoPE beta_fast 32, this model runs 16";
    c[6].hp.rope.beta_slow = 2.0f, c[6].what = "RoPE beta_slow 1, this model runs 2";
    c[7].hp.rope.n_ctx_orig = 0, c[7].what = "original context (yarn) 32, this model runs 128";   /* n_ctx_train */
    c[8].ff = ff2, c[8].what = "frequency factors (rope_freqs.weight)";
    for (int i = 0; i < 9; i++) {
        int rc = check_rope(path, &c[i].hp, c[i].ff, sizeof ff, 1, err, sizeof err);
        if (rc != TERN_EINVAL || !strstr(err, c[i].what) || strchr(err, '\n'))
            fail_msg("rope case %d: rc %d '%s' (expected '%s')", i, rc, err, c[i].what);
    }
    assert_int_equal(check_rope(path, &hp, NULL, 0, 1, err, sizeof err), TERN_EINVAL);
    assert_non_null(strstr(err, ", this model has none"));
    /* linear scaling (ext_factor 0): the yarn ramp's flags change nothing, so they do not refuse */
    hparams_t lin = hp;
    lin.rope.type = ROPE_SCALING_LINEAR;
    kvfile_model_rope(&m, &lin, NULL, 0, 1);
    save("lin.kv", &m, 4, &kv, path, sizeof path);
    free(kv);
    lin.rope.beta_fast = 8.0f, lin.rope.n_ctx_orig = 1000;
    assert_int_equal(check_rope(path, &lin, NULL, 0, 1, err, sizeof err), 0);
    lin.rope.ext_factor = 0.25f;
    assert_int_equal(check_rope(path, &lin, NULL, 0, 1, err, sizeof err), TERN_EINVAL);
    assert_non_null(strstr(err, "RoPE ext_factor 0, this model runs 0.25"));
}

/* kvfile.c's checksum (FNV-1a over 8-byte words, then the tail, fmix64), to make version-1 files */
static uint64_t fnvw(uint64_t h, const uint8_t *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = 0;
        for (int b = 0; b < 8; b++) w |= (uint64_t)p[i + b] << (8 * b);
        h = (h ^ w) * 1099511628211ull;
    }
    return hash_fnv1a(h, p + i, n - i);
}

/* A version-1 file (no RoPE record; made here from a version-2 one) restores into a model that
 * runs the plain RoPE of its own file and is refused, naming why, under scaling, factors or flags. */
static void test_rope_v1(void **st) {
    (void)st;
    kvfile_model_t m = model(KV_F16);
    hparams_t plain;
    memset(&plain, 0, sizeof plain);
    plain.rope_base = 10000.0f, plain.n_ctx_train = 128;
    plain.rope.freq_scale = 1.0f, plain.rope.attn_factor = 1.0f, plain.rope.ext_factor = -1.0f;
    plain.rope.beta_fast = 32.0f, plain.rope.beta_slow = 1.0f;
    kvfile_model_rope(&m, &plain, NULL, 0, 0);
    assert_int_equal(m.rope_plain, 1);
    uint8_t *kv;
    char path[256], err[512];
    save("v2.kv", &m, 5, &kv, path, sizeof path);
    free(kv);
    size_t len;
    uint8_t *b = slurp(path, &len);
    const size_t rec = 72;   /* the record's offset: after the row size */
    memmove(b + rec, b + rec + KVFILE_ROPE_BYTES, len - rec - KVFILE_ROPE_BYTES);
    len -= KVFILE_ROPE_BYTES;
    b[8] = 1;   /* version 1 */
    uint64_t sum = hash_mix64(fnvw(HASH_FNV_OFFSET, b, len - 8));
    for (int i = 0; i < 8; i++) b[len - 8 + i] = (uint8_t)(sum >> (8 * i));
    snprintf(path, sizeof path, "%s/v1.kv", g_dir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, len, fp), len);
    fclose(fp);
    free(b);
    kvfile_t f;
    if (kvfile_load(&f, path, err, sizeof err) != 0) fail_msg("version 1: %s", err);
    assert_int_equal(f.m.rope_old, 1);
    assert_int_equal(f.n_tok, 5);
    kvfile_free(&f);
    assert_int_equal(check_rope(path, &plain, NULL, 0, 0, err, sizeof err), 0);
    static const float ff[2] = {1.0f, 2.0f};
    hparams_t yarn = rope_hp(10000.0f, 2.0f), base = plain;
    base.rope_base = 20000.0f;
    const struct { const hparams_t *hp; const float *ff; int flagged; } c[] = {
        {&plain, NULL, 1}, {&plain, ff, 0}, {&yarn, NULL, 0}, {&base, NULL, 1},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        int rc = check_rope(path, c[i].hp, c[i].ff, sizeof ff, c[i].flagged, err, sizeof err);
        if (rc != TERN_EINVAL || !strstr(err, "predates the RoPE record") || strchr(err, '\n'))
            fail_msg("v1 case %zu: rc %d '%s'", i, rc, err);
    }
}

/* f32 rows restored into an f16 (or q8_0) cache: each value as the cache would have stored it */
static void test_convert(void **st) {
    (void)st;
    kvfile_model_t m32 = model(KV_F32);
    uint8_t *kv;
    char path[256], err[256];
    save("cv.kv", &m32, 5, &kv, path, sizeof path);
    for (int t = KV_F16; t <= KV_Q8_0; t++) {
        kvfile_model_t want = model(t);
        kvfile_t f;
        assert_int_equal(kvfile_load(&f, path, err, sizeof err), 0);
        assert_int_equal(kvfile_check(&f, &want, 64, err, sizeof err), 0);
        assert_int_equal(f.m.kv_type, t);
        assert_int_equal(f.m.row, want.row);
        size_t rows = 3 * 2 * 5;
        uint8_t *exp = malloc(rows * want.row);
        for (size_t r = 0; r < rows; r++) ops_kv_put(exp + r * want.row, t, (const float *)kv + r * 32, 32);
        assert_memory_equal(f.kv, exp, rows * want.row);
        free(exp);
        kvfile_free(&f);
    }
    free(kv);
}

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }

static void test_hostile(void **st) {
    (void)st;
    kvfile_model_t m = model(KV_F16);
    uint8_t *kv;
    char path[256];
    save("h.kv", &m, 6, &kv, path, sizeof path);
    free(kv);
    size_t len;
    uint8_t *good = slurp(path, &len);
    char why[64];
    for (size_t n = 0; n < len; n++) {   /* every truncation */
        snprintf(why, sizeof why, "cut at %zu", n);
        expect_bad(good, n, NULL, why);
    }
    uint8_t *b = malloc(len + 16);
    for (size_t i = 0; i < len; i++) {   /* one flipped bit anywhere */
        memcpy(b, good, len);
        b[i] ^= (uint8_t)(1u << (i % 8));
        snprintf(why, sizeof why, "bit flip at %zu", i);
        expect_bad(b, len, NULL, why);
    }
    memcpy(b, good, len);   /* trailing bytes */
    memset(b + len, 0, 16);
    expect_bad(b, len + 3, "KV rows declared", "trailing bytes");
    /* header fields (offsets: magic 0, version 8, size 12, hash 20, n_layer 44, n_embd 48, vocab 52,
     * kv_dim 56, kv_type 60, row 64, RoPE record 72: type 72, freq_base 76, freq_scale 80, n_ctx_orig
     * 84, ext_factor 88, attn_factor 92, beta_fast 96, beta_slow 100, factors' hash 104; n_tok 112) */
    static const struct { size_t off; uint32_t v; const char *what; } f[] = {
        {0, 0x4b4e5245, "bad magic"},
        {8, 3, "version 3"},
        {8, 0, "version 0"},
        {72, 3, "bad RoPE record"},
        {76, 0x7fc00000u, "bad RoPE record"},   /* NaN */
        {80, 0x7f800000u, "bad RoPE record"},   /* inf */
        {84, 0xffffffffu, "bad RoPE record"},
        {100, 0xff800000u, "bad RoPE record"},
        {44, 0, "bad shapes"},
        {44, 0xffffffffu, "bad shapes"},
        {56, 0x7fffffffu, "bad shapes"},
        {60, 7, "bad shapes"},
        {64, 1u << 30, "bad shapes"},
        {112, 0xffffffffu, "tokens in a"},
        {112, 1u << 23, "tokens in a"},   /* 8 M tokens in a small file: refused before allocating */
        {112, 5, "KV rows declared"},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        memcpy(b, good, len);
        put32(b + f[i].off, f[i].v);
        snprintf(why, sizeof why, "field at %zu = %u", f[i].off, f[i].v);
        expect_bad(b, len, f[i].what, why);
    }
    memcpy(b, good, len);   /* a q8_0 file whose kv_dim is not a multiple of 32 */
    put32(b + 56, 33), put32(b + 60, KV_Q8_0);
    expect_bad(b, len, "bad shapes", "q8_0 with kv_dim 33");
    free(b);
    free(good);
}

static int setup(void **st) {
    (void)st;
    snprintf(g_dir, sizeof g_dir, "/tmp/tern-kvfile-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_check_refuses),
        cmocka_unit_test(test_rope_refuses),
        cmocka_unit_test(test_rope_v1),
        cmocka_unit_test(test_convert),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
