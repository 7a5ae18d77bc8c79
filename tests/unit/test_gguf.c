/* test_gguf: the GGUF writer and reader round-trip every value and tensor type, and the reader
 * refuses each kind of malformed file with a specific one-line error (one test per rule), never
 * crashing on truncated or mutated input. Hostile files are built byte by byte in memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "core/gguf.h"
#include "core/types.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[256];

/* ---- a byte builder for hand-made files ---------------------------------- */
typedef struct bb { uint8_t *p; size_t n, cap; } bb_t;

static void bb_put(bb_t *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void bb_u8(bb_t *b, uint8_t v) { bb_put(b, &v, 1); }
static void bb_u32(bb_t *b, uint32_t v) { bb_put(b, &v, 4); }
static void bb_u64(bb_t *b, uint64_t v) { bb_put(b, &v, 8); }
static void bb_str(bb_t *b, const char *s) { bb_u64(b, strlen(s)); bb_put(b, s, strlen(s)); }
static void bb_pad(bb_t *b, size_t a) { while (b->n % a) bb_u8(b, 0); }
static void bb_zeros(bb_t *b, size_t n) { while (n--) bb_u8(b, 0); }
static void bb_free(bb_t *b) { free(b->p); memset(b, 0, sizeof *b); }

static void bb_hdr(bb_t *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}
static void bb_kv_u32(bb_t *b, const char *key, uint32_t v) { bb_str(b, key); bb_u32(b, GGUF_U32); bb_u32(b, v); }
static void bb_tinfo(bb_t *b, const char *name, uint32_t ndim, const uint64_t *ne, uint32_t type, uint64_t off) {
    bb_str(b, name);
    bb_u32(b, ndim);
    for (uint32_t d = 0; d < ndim; d++) bb_u64(b, ne[d]);
    bb_u32(b, type);
    bb_u64(b, off);
}

/* opens b and expects failure with an error naming the file and containing frag */
static void expect_fail(const bb_t *b, const char *frag) {
    gguf_t *g = (gguf_t *)1;
    char err[512] = "";
    int rc = gguf_open_mem(&g, b->p, b->n, "t.gguf", err, sizeof err);
    if (rc >= 0 || !strstr(err, frag) || strncmp(err, "t.gguf: ", 8) || strchr(err, '\n')) {
        if (rc >= 0) gguf_close(&g);
        fail_msg("expected a one-line failure containing '%s', got rc=%d err='%s'", frag, rc, err);
    }
    assert_null(g);
}

static gguf_t *expect_ok(const bb_t *b) {
    gguf_t *g = NULL;
    char err[512] = "";
    int rc = gguf_open_mem(&g, b->p, b->n, "t.gguf", err, sizeof err);
    if (rc < 0) fail_msg("expected success, got rc=%d err='%s'", rc, err);
    return g;
}

/* a valid file with one kv and two F32 tensors (4 and 8 elements) */
static void bb_valid(bb_t *b) {
    uint64_t ne1[1] = {4}, ne2[2] = {4, 2};
    bb_hdr(b, 3, 2, 1);
    bb_kv_u32(b, "general.test", 7);
    bb_tinfo(b, "a", 1, ne1, TT_F32, 0);
    bb_tinfo(b, "b", 2, ne2, TT_F32, 32);
    bb_pad(b, 32);
    for (int i = 0; i < 8; i++) { float f = (float)i; bb_put(b, &f, 4); }
    for (int i = 0; i < 8; i++) { float f = (float)(10 + i); bb_put(b, &f, 4); }
}

static void path_in_dir(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", g_dir, name); }

/* ---- round trips ----------------------------------------------------------- */

static void test_valid_handmade(void **st) {
    (void)st;
    bb_t b = {0};
    bb_valid(&b);
    gguf_t *g = expect_ok(&b);
    assert_int_equal(g->version, 3);
    assert_int_equal(g->n_kv, 1);
    assert_int_equal(g->n_tensors, 2);
    assert_int_equal(g->alignment, 32);
    int64_t v;
    assert_int_equal(gguf_get_i64(g, "general.test", &v), 0);
    assert_int_equal(v, 7);
    const gguf_tensor_t *t = gguf_find_tensor(g, "b");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 4);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->ne[2], 1);
    assert_int_equal(t->nbytes, 32);
    assert_float_equal(((const float *)t->data)[3], 13.0f, 0);
    assert_null(gguf_find_tensor(g, "c"));
    gguf_close(&g);
    assert_null(g);
    bb_free(&b);
}

/* every scalar type via a hand-made file; copy_kv writes them back identically */
static void test_kv_all_types_roundtrip(void **st) {
    (void)st;
    bb_t b = {0};
    bb_hdr(&b, 3, 0, 16);
    bb_str(&b, "t.u8"); bb_u32(&b, GGUF_U8); bb_u8(&b, 200);
    bb_str(&b, "t.i8"); bb_u32(&b, GGUF_I8); bb_u8(&b, (uint8_t)(int8_t)-5);
    bb_str(&b, "t.u16"); bb_u32(&b, GGUF_U16); { uint16_t x = 60000; bb_put(&b, &x, 2); }
    bb_str(&b, "t.i16"); bb_u32(&b, GGUF_I16); { int16_t x = -30000; bb_put(&b, &x, 2); }
    bb_str(&b, "t.u32"); bb_u32(&b, GGUF_U32); bb_u32(&b, 4000000000u);
    bb_str(&b, "t.i32"); bb_u32(&b, GGUF_I32); { int32_t x = -2000000000; bb_put(&b, &x, 4); }
    bb_str(&b, "t.f32"); bb_u32(&b, GGUF_F32); { float x = 1.5f; bb_put(&b, &x, 4); }
    bb_str(&b, "t.bool"); bb_u32(&b, GGUF_BOOL); bb_u8(&b, 1);
    bb_str(&b, "t.str"); bb_u32(&b, GGUF_STR); bb_str(&b, "h\xc3\xa9llo");
    bb_str(&b, "t.u64"); bb_u32(&b, GGUF_U64); bb_u64(&b, 1ull << 40);
    bb_str(&b, "t.i64"); bb_u32(&b, GGUF_I64); bb_u64(&b, (uint64_t)-(1ll << 40));
    bb_str(&b, "t.f64"); bb_u32(&b, GGUF_F64); { double x = 2.25; bb_put(&b, &x, 8); }
    bb_str(&b, "t.big"); bb_u32(&b, GGUF_U64); bb_u64(&b, UINT64_MAX);
    bb_str(&b, "t.arr_i16"); bb_u32(&b, GGUF_ARR); bb_u32(&b, GGUF_I16); bb_u64(&b, 3);
    { int16_t x[3] = {-1, 2, -3}; bb_put(&b, x, 6); }
    bb_str(&b, "t.arr_str"); bb_u32(&b, GGUF_ARR); bb_u32(&b, GGUF_STR); bb_u64(&b, 3);
    bb_str(&b, "one"); bb_str(&b, ""); bb_u64(&b, 3); bb_put(&b, "a\0b", 3);
    bb_str(&b, "t.arr_empty"); bb_u32(&b, GGUF_ARR); bb_u32(&b, GGUF_F64); bb_u64(&b, 0);

    gguf_t *g = expect_ok(&b);
    int64_t v;
    float f;
    int bo;
    char s[16];
    struct { const char *k; int64_t want; } ints[] = {{"t.u8", 200}, {"t.i8", -5}, {"t.u16", 60000}, {"t.i16", -30000},
        {"t.u32", 4000000000ll}, {"t.i32", -2000000000}, {"t.u64", 1ll << 40}, {"t.i64", -(1ll << 40)}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        assert_int_equal(gguf_get_i64(g, ints[i].k, &v), 0);
        if (v != ints[i].want) fail_msg("%s: got %lld want %lld", ints[i].k, (long long)v, (long long)ints[i].want);
    }
    assert_true(gguf_get_i64(g, "t.big", &v) < 0);          /* does not fit int64 */
    assert_true(gguf_get_i64(g, "t.str", &v) < 0);          /* wrong type */
    assert_int_equal(gguf_get_i64(g, "t.missing", &v), TERN_ENOTFOUND);
    assert_int_equal(gguf_get_f32(g, "t.f32", &f), 0);
    assert_float_equal(f, 1.5f, 0);
    assert_int_equal(gguf_get_f32(g, "t.f64", &f), 0);
    assert_float_equal(f, 2.25f, 0);
    assert_true(gguf_get_f32(g, "t.u8", &f) < 0);
    assert_int_equal(gguf_get_bool(g, "t.bool", &bo), 0);
    assert_int_equal(bo, 1);
    assert_int_equal(gguf_get_str(g, "t.str", s, sizeof s), 0);
    assert_string_equal(s, "h\xc3\xa9llo");
    assert_int_equal(gguf_get_str(g, "t.str", s, 3), 0);    /* truncated, NUL-terminated */
    assert_string_equal(s, "h\xc3");
    const gguf_kv_t *a = gguf_find(g, "t.arr_i16");
    assert_non_null(a);
    assert_int_equal(a->type, GGUF_ARR);
    assert_int_equal(a->arr_type, GGUF_I16);
    assert_int_equal(a->arr_n, 3);
    assert_int_equal(((const int16_t *)a->data)[2], -3);
    const gguf_kv_t *as = gguf_find(g, "t.arr_str");
    gguf_str_t e0 = gguf_arr_str(as, 0), e1 = gguf_arr_str(as, 1), e2 = gguf_arr_str(as, 2), e3 = gguf_arr_str(as, 3);
    assert_int_equal(e0.len, 3);
    assert_memory_equal(e0.ptr, "one", 3);
    assert_int_equal(e1.len, 0);
    assert_int_equal(e2.len, 3);
    assert_memory_equal(e2.ptr, "a\0b", 3);
    assert_null(e3.ptr);                                    /* out of range */
    assert_null(gguf_arr_str(a, 0).ptr);                    /* not a string array */

    /* copy every kv into a new file and compare the kv bytes: the writer must reproduce them */
    char path[300], err[256];
    path_in_dir(path, sizeof path, "kv.gguf");
    gguf_writer_t *w = gguf_writer_new();
    gguf_writer_copy_kv(w, g, NULL);
    assert_int_equal(gguf_writer_begin(w, path, err, sizeof err), 0);
    assert_int_equal(gguf_writer_finish(w, err, sizeof err), 0);
    gguf_writer_destroy(&w);
    gguf_t *g2 = NULL;
    if (gguf_open(&g2, path, err, sizeof err) < 0) fail_msg("%s", err);
    assert_int_equal(g2->n_kv, g->n_kv);
    assert_true(g2->size >= b.n);
    assert_memory_equal(g2->map + 24, b.p + 24, b.n - 24);  /* same kv bytes in the same order */
    gguf_close(&g2);
    /* prefix filter */
    w = gguf_writer_new();
    gguf_writer_copy_kv(w, g, "t.arr");
    assert_int_equal(gguf_writer_begin(w, path, err, sizeof err), 0);
    assert_int_equal(gguf_writer_finish(w, err, sizeof err), 0);
    gguf_writer_destroy(&w);
    assert_int_equal(gguf_open(&g2, path, err, sizeof err), 0);
    assert_int_equal(g2->n_kv, 3);
    assert_null(gguf_find(g2, "t.u8"));
    assert_non_null(gguf_find(g2, "t.arr_empty"));
    gguf_close(&g2);
    gguf_close(&g);
    bb_free(&b);
}

/* writer setters and arrays of every element type */
static void test_writer_setters(void **st) {
    (void)st;
    char path[300], err[256];
    path_in_dir(path, sizeof path, "set.gguf");
    gguf_writer_t *w = gguf_writer_new();
    gguf_writer_set_u32(w, "a.u32", 1);
    gguf_writer_set_u32(w, "a.u32", 42);     /* set twice: last wins, stored once */
    gguf_writer_set_i32(w, "a.i32", -7);
    gguf_writer_set_u64(w, "a.u64", 1ull << 50);
    gguf_writer_set_f32(w, "a.f32", -0.25f);
    gguf_writer_set_bool(w, "a.bool", 5);
    gguf_writer_set_str(w, "a.str", "text");
    uint8_t u8[3] = {1, 2, 255}; int8_t i8[2] = {-128, 127}; uint16_t u16[2] = {0, 65535}; int16_t i16[1] = {-2};
    uint32_t u32[2] = {7, 8}; int32_t i32[2] = {-9, 10}; float f32[2] = {0.5f, -1}; uint8_t bo[2] = {0, 1};
    uint64_t u64[1] = {UINT64_MAX}; int64_t i64[2] = {INT64_MIN, 3}; double f64[1] = {1e300};
    const char *strs[3] = {"x", "", "yz"};
    struct { const char *k; int t; const void *d; uint64_t n; size_t es; } arrs[] = {
        {"b.u8", GGUF_U8, u8, 3, 1}, {"b.i8", GGUF_I8, i8, 2, 1}, {"b.u16", GGUF_U16, u16, 2, 2},
        {"b.i16", GGUF_I16, i16, 1, 2}, {"b.u32", GGUF_U32, u32, 2, 4}, {"b.i32", GGUF_I32, i32, 2, 4},
        {"b.f32", GGUF_F32, f32, 2, 4}, {"b.bool", GGUF_BOOL, bo, 2, 1}, {"b.u64", GGUF_U64, u64, 1, 8},
        {"b.i64", GGUF_I64, i64, 2, 8}, {"b.f64", GGUF_F64, f64, 1, 8}};
    size_t narr = sizeof arrs / sizeof arrs[0];
    for (size_t i = 0; i < narr; i++) gguf_writer_set_arr(w, arrs[i].k, arrs[i].t, arrs[i].d, arrs[i].n);
    gguf_writer_set_arr(w, "b.str", GGUF_STR, strs, 3);
    const char *sn[2] = {"a\0b", "c"};
    uint64_t sl[2] = {3, 1};
    gguf_writer_set_arr_strn(w, "b.strn", sn, sl, 2);
    assert_int_equal(gguf_writer_begin(w, path, err, sizeof err), 0);
    assert_int_equal(gguf_writer_finish(w, err, sizeof err), 0);
    gguf_writer_destroy(&w);

    gguf_t *g = NULL;
    if (gguf_open(&g, path, err, sizeof err) < 0) fail_msg("%s", err);
    assert_int_equal(g->n_kv, 6 + narr + 2);   /* a.u32 stored once */
    int64_t v;
    float f;
    int b;
    char s[16];
    assert_int_equal(gguf_get_i64(g, "a.u32", &v), 0); assert_int_equal(v, 42);
    assert_int_equal(gguf_find(g, "a.u32")->type, GGUF_U32);
    assert_int_equal(gguf_get_i64(g, "a.i32", &v), 0); assert_int_equal(v, -7);
    assert_int_equal(gguf_get_i64(g, "a.u64", &v), 0); assert_int_equal(v, 1ll << 50);
    assert_int_equal(gguf_get_f32(g, "a.f32", &f), 0); assert_float_equal(f, -0.25f, 0);
    assert_int_equal(gguf_get_bool(g, "a.bool", &b), 0); assert_int_equal(b, 1);
    assert_int_equal(gguf_get_str(g, "a.str", s, sizeof s), 0); assert_string_equal(s, "text");
    for (size_t i = 0; i < narr; i++) {
        const gguf_kv_t *kv = gguf_find(g, arrs[i].k);
        assert_non_null(kv);
        assert_int_equal(kv->type, GGUF_ARR);
        assert_int_equal(kv->arr_type, arrs[i].t);
        assert_int_equal(kv->arr_n, arrs[i].n);
        assert_memory_equal(kv->data, arrs[i].d, arrs[i].n * arrs[i].es);
    }
    const gguf_kv_t *ks = gguf_find(g, "b.str");
    for (int i = 0; i < 3; i++) {
        gguf_str_t e = gguf_arr_str(ks, (uint64_t)i);
        assert_int_equal(e.len, strlen(strs[i]));
        assert_memory_equal(e.ptr, strs[i], e.len);
    }
    gguf_str_t e = gguf_arr_str(gguf_find(g, "b.strn"), 0);
    assert_int_equal(e.len, 3);
    assert_memory_equal(e.ptr, "a\0b", 3);
    gguf_close(&g);
}

/* every tensor type tern knows, written in odd-sized chunks, read back byte-identical */
static void test_tensor_all_types_roundtrip(void **st) {
    (void)st;
    char path[300], err[256];
    path_in_dir(path, sizeof path, "tensors.gguf");
    gguf_writer_t *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "test");
    int types[TT_COUNT], nt = 0;
    int64_t shapes[TT_COUNT][4];
    for (int t = 0; t < TT_COUNT; t++) {
        const type_traits_t *tr = type_traits(t);
        if (!tr) continue;
        char name[32];
        snprintf(name, sizeof name, "t_%s", tr->name);
        int64_t *ne = shapes[nt];
        ne[0] = tr->blck * 2; ne[1] = 3; ne[2] = nt % 2 ? 2 : 1; ne[3] = 1;
        int ndim = nt % 2 ? 3 : 2;
        assert_int_equal(gguf_writer_add_tensor(w, name, t, ndim, ne), nt);
        types[nt++] = t;
    }
    assert_true(nt >= 8);
    assert_int_equal(gguf_writer_begin(w, path, err, sizeof err), 0);
    /* payload: a byte pattern unique per tensor, in chunks of 1, 7, 100, ... bytes */
    for (int i = 0; i < nt; i++) {
        size_t n = type_tensor_bytes(types[i], shapes[i][0], shapes[i][1] * shapes[i][2]);
        uint8_t *buf = malloc(n);
        for (size_t k = 0; k < n; k++) buf[k] = (uint8_t)(k * 31 + (size_t)i * 7 + 1);
        size_t done = 0, chunk = 1;
        while (done < n) {
            size_t c = chunk < n - done ? chunk : n - done;
            assert_int_equal(gguf_writer_write(w, buf + done, c, err, sizeof err), 0);
            done += c;
            chunk = chunk * 7 + 3;
        }
        free(buf);
    }
    assert_int_equal(gguf_writer_finish(w, err, sizeof err), 0);
    gguf_writer_destroy(&w);
    char tmp[310];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);                 /* renamed away */

    gguf_t *g = NULL;
    if (gguf_open(&g, path, err, sizeof err) < 0) fail_msg("%s", err);
    assert_int_equal(g->n_tensors, (uint64_t)nt);
    assert_int_equal(g->data_offset % 32, 0);
    for (int i = 0; i < nt; i++) {
        const gguf_tensor_t *t = &g->tensors[i];
        char name[32];
        snprintf(name, sizeof name, "t_%s", type_name(types[i]));
        assert_string_equal(t->name, name);
        assert_ptr_equal(gguf_find_tensor(g, name), t);
        assert_int_equal(t->type, types[i]);
        assert_int_equal(t->ndim, i % 2 ? 3 : 2);
        for (int d = 0; d < 4; d++) assert_int_equal(t->ne[d], shapes[i][d]);
        size_t n = type_tensor_bytes(types[i], shapes[i][0], shapes[i][1] * shapes[i][2]);
        assert_int_equal(t->nbytes, n);
        assert_int_equal(t->offset % 32, 0);
        assert_int_equal(((uintptr_t)t->data) % 32, 0);
        const uint8_t *p = t->data;
        for (size_t k = 0; k < n; k++)
            if (p[k] != (uint8_t)(k * 31 + (size_t)i * 7 + 1)) fail_msg("%s: byte %zu differs", name, k);
    }
    gguf_close(&g);
}

static void test_writer_alignment_key(void **st) {
    (void)st;
    char path[300], err[256];
    path_in_dir(path, sizeof path, "align.gguf");
    gguf_writer_t *w = gguf_writer_new();
    gguf_writer_set_u32(w, "general.alignment", 256);
    int64_t ne[2] = {3, 1};
    assert_int_equal(gguf_writer_add_tensor(w, "x", TT_F32, 1, ne), 0);
    assert_int_equal(gguf_writer_add_tensor(w, "y", TT_F16, 1, ne), 1);
    assert_int_equal(gguf_writer_begin(w, path, err, sizeof err), 0);
    float x[3] = {1, 2, 3};
    uint16_t y[3] = {1, 2, 3};
    assert_int_equal(gguf_writer_write(w, x, sizeof x, err, sizeof err), 0);
    assert_int_equal(gguf_writer_write(w, y, sizeof y, err, sizeof err), 0);
    assert_int_equal(gguf_writer_finish(w, err, sizeof err), 0);
    gguf_writer_destroy(&w);
    gguf_t *g = NULL;
    if (gguf_open(&g, path, err, sizeof err) < 0) fail_msg("%s", err);
    assert_int_equal(g->alignment, 256);
    assert_int_equal(g->data_offset % 256, 0);
    assert_int_equal(g->tensors[1].offset, 256);
    assert_int_equal(((const uint16_t *)g->tensors[1].data)[2], 3);
    gguf_close(&g);
}

static void test_writer_misuse(void **st) {
    (void)st;
    char path[300], err[256] = "", tmp[310];
    path_in_dir(path, sizeof path, "misuse.gguf");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(path);
    gguf_writer_t *w = gguf_writer_new();
    int64_t ne[2] = {256, 2}, bad[2] = {100, 2}, zero[2] = {0, 2};
    assert_int_equal(gguf_writer_add_tensor(w, "a", TT_TQ2_0, 2, ne), 0);
    assert_true(gguf_writer_add_tensor(w, "a", TT_F32, 2, ne) < 0);       /* duplicate name */
    assert_true(gguf_writer_add_tensor(w, "b", TT_TQ2_0, 2, bad) < 0);    /* row not a block multiple */
    assert_true(gguf_writer_add_tensor(w, "b", 3, 2, ne) < 0);            /* Q4_1: unknown to tern */
    assert_true(gguf_writer_add_tensor(w, "b", TT_F32, 5, ne) < 0);       /* ndim */
    assert_true(gguf_writer_add_tensor(w, "b", TT_F32, 2, zero) < 0);     /* empty dim */
    assert_true(gguf_writer_add_tensor(w, "", TT_F32, 2, ne) < 0);
    assert_int_equal(gguf_writer_begin(w, path, err, sizeof err), 0);
    assert_int_equal(access(tmp, F_OK), 0);
    uint8_t buf[200] = {0};
    assert_int_equal(gguf_writer_write(w, buf, 100, err, sizeof err), 0);
    assert_true(gguf_writer_finish(w, err, sizeof err) < 0);             /* incomplete */
    assert_non_null(strstr(err, "incomplete"));
    assert_int_equal(gguf_writer_write(w, buf, 32, err, sizeof err), 0); /* 132 = 2 rows of 66 */
    assert_true(gguf_writer_write(w, buf, 1, err, sizeof err) < 0);      /* past the last tensor */
    assert_non_null(strstr(err, "past the last tensor"));
    gguf_writer_destroy(&w);                                              /* not finished: tmp removed */
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(access(path, F_OK), -1);
    gguf_writer_destroy(&w);                                              /* NULL-safe */
    /* bad alignment key is refused at begin */
    w = gguf_writer_new();
    gguf_writer_set_u32(w, "general.alignment", 48);
    assert_true(gguf_writer_begin(w, path, err, sizeof err) < 0);
    assert_non_null(strstr(err, "power of two"));
    gguf_writer_destroy(&w);
    /* unwritable place */
    w = gguf_writer_new();
    assert_true(gguf_writer_begin(w, "/nonexistent-dir/x.gguf", err, sizeof err) < 0);
    assert_non_null(strstr(err, "/nonexistent-dir/x.gguf.tmp"));
    gguf_writer_destroy(&w);
}

/* ---- validation rules --------------------------------------------------------- */

static void test_bad_magic(void **st) {
    (void)st;
    bb_t b = {0};
    bb_valid(&b);
    memcpy(b.p, "GGUG", 4);
    expect_fail(&b, "magic: not a GGUF file");
    b.n = 3;
    expect_fail(&b, "magic: file too short");
    bb_free(&b);
}

static void test_bad_version(void **st) {
    (void)st;
    bb_t b = {0};
    bb_valid(&b);
    uint32_t v = 4;
    memcpy(b.p + 4, &v, 4);
    expect_fail(&b, "version: unsupported, tern reads v2 and v3 (4)");
    v = 1;
    memcpy(b.p + 4, &v, 4);
    expect_fail(&b, "version: unsupported");
    v = 0x03000000;
    memcpy(b.p + 4, &v, 4);
    expect_fail(&b, "big-endian");
    v = 2;                                   /* v2 has the same layout: accepted */
    memcpy(b.p + 4, &v, 4);
    gguf_t *g = expect_ok(&b);
    assert_int_equal(g->version, 2);
    gguf_close(&g);
    bb_free(&b);
}

/* a valid writer-made file cut at every length fails cleanly until its last tensor's data is in */
static void test_truncated_everywhere(void **st) {
    (void)st;
    char path[300], err[256];
    path_in_dir(path, sizeof path, "trunc.gguf");
    gguf_writer_t *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "x");
    const char *toks[3] = {"a", "bc", "def"};
    gguf_writer_set_arr(w, "tokenizer.ggml.tokens", GGUF_STR, toks, 3);
    gguf_writer_set_f32(w, "x.eps", 1e-5f);
    int64_t ne[2] = {256, 2};
    gguf_writer_add_tensor(w, "w", TT_TQ1_0, 2, ne);
    gguf_writer_add_tensor(w, "n", TT_F32, 1, ne);
    assert_int_equal(gguf_writer_begin(w, path, err, sizeof err), 0);
    uint8_t data[1024];
    memset(data, 0x11, sizeof data);
    assert_int_equal(gguf_writer_write(w, data, 108, err, sizeof err), 0);
    assert_int_equal(gguf_writer_write(w, data, 1024, err, sizeof err), 0);
    assert_int_equal(gguf_writer_finish(w, err, sizeof err), 0);
    gguf_writer_destroy(&w);
    gguf_t *full = NULL;
    assert_int_equal(gguf_open(&full, path, err, sizeof err), 0);
    size_t need = full->data_offset + full->tensors[1].offset + full->tensors[1].nbytes;
    bb_t b = {0};
    bb_put(&b, full->map, full->size);
    gguf_close(&full);
    for (size_t n = 0; n < b.n; n++) {
        /* a fresh heap copy of exactly n bytes, so ASan catches any read past the end */
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, b.p, n);
        gguf_t *g = NULL;
        err[0] = 0;
        int rc = gguf_open_mem(&g, cut, n, "t.gguf", err, sizeof err);
        if (n < need && (rc >= 0 || strncmp(err, "t.gguf: ", 8)))
            fail_msg("cut at %zu of %zu: rc=%d err='%s'", n, b.n, rc, err);
        if (n >= need && rc < 0) fail_msg("cut at %zu (only padding lost): %s", n, err);
        gguf_close(&g);
        free(cut);
    }
    bb_free(&b);
}

static void test_count_too_large(void **st) {
    (void)st;
    bb_t b = {0};
    bb_hdr(&b, 3, 0, 1ull << 40);
    bb_kv_u32(&b, "a", 1);
    expect_fail(&b, "n_kv: too large for the file size (1099511627776)");
    bb_free(&b);
    bb_hdr(&b, 3, UINT64_MAX, 1);
    bb_kv_u32(&b, "a", 1);
    expect_fail(&b, "n_tensors: too large for the file size");
    bb_free(&b);
    /* a count that fits the bytes but whose entries run out */
    bb_hdr(&b, 3, 0, 2);
    bb_kv_u32(&b, "a", 1);
    bb_zeros(&b, 16);
    expect_fail(&b, "kv[1] key: empty");
    bb_free(&b);
}

static void test_string_past_eof(void **st) {
    (void)st;
    bb_t b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, 1000);                         /* key length */
    bb_put(&b, "abcdefghijklmnop", 16);
    expect_fail(&b, "kv[0] key: string length past end of file (1000)");
    bb_free(&b);
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_STR);
    bb_u64(&b, UINT64_MAX);                   /* value length: would wrap a naive pos + len */
    bb_zeros(&b, 8);
    expect_fail(&b, "k: string length past end of file");
    bb_free(&b);
    bb_hdr(&b, 3, 0, 1);                      /* an element of a string array */
    bb_str(&b, "k");
    bb_u32(&b, GGUF_ARR);
    bb_u32(&b, GGUF_STR);
    bb_u64(&b, 2);
    bb_str(&b, "ok");
    bb_u64(&b, 99);
    bb_put(&b, "short", 5);
    expect_fail(&b, "k: string length past end of file (99)");
    bb_free(&b);
}

static void test_bad_value_types(void **st) {
    (void)st;
    bb_t b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, 13);
    bb_zeros(&b, 8);
    expect_fail(&b, "k: unknown value type (13)");
    bb_free(&b);
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_ARR);
    bb_u32(&b, 99);
    bb_u64(&b, 1);
    bb_zeros(&b, 8);
    expect_fail(&b, "k: unknown array element type (99)");
    bb_free(&b);
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_ARR);
    bb_u32(&b, GGUF_ARR);
    bb_u64(&b, 1);
    bb_zeros(&b, 16);
    expect_fail(&b, "k: nested arrays are not supported");
    bb_free(&b);
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_ARR);
    bb_u32(&b, GGUF_U64);
    bb_u64(&b, 1ull << 61);                   /* n * 8 overflows 64 bits */
    bb_zeros(&b, 16);
    expect_fail(&b, "k: array data past end of file");
    bb_free(&b);
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, GGUF_U64);
    bb_zeros(&b, 4);                          /* scalar cut short */
    expect_fail(&b, "k: truncated");
    bb_free(&b);
}

static void test_bad_keys(void **st) {
    (void)st;
    bb_t b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, 3);
    bb_put(&b, "a\0b", 3);
    bb_u32(&b, GGUF_U8);
    bb_u8(&b, 0);
    expect_fail(&b, "kv[0] key: contains a NUL byte");
    bb_free(&b);
    bb_hdr(&b, 3, 0, 2);
    bb_kv_u32(&b, "same", 1);
    bb_kv_u32(&b, "same", 2);
    expect_fail(&b, "same: duplicate key");
    bb_free(&b);
}

static void test_bad_tensor_type(void **st) {
    (void)st;
    uint64_t ne[1] = {32};
    uint32_t bad[] = {3 /* Q4_1 */, 11 /* Q3_K */, 999, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bb_t b = {0};
        char frag[64];
        bb_hdr(&b, 3, 1, 0);
        bb_tinfo(&b, "w", 1, ne, bad[i], 0);
        bb_pad(&b, 32);
        bb_zeros(&b, 256);
        snprintf(frag, sizeof frag, "w: unknown or unsupported tensor type (%u)", bad[i]);
        expect_fail(&b, frag);
        bb_free(&b);
    }
}

static void test_bad_shape(void **st) {
    (void)st;
    bb_t b = {0};
    uint64_t ne[5] = {4, 4, 4, 4, 4};
    bb_hdr(&b, 3, 1, 0);
    bb_tinfo(&b, "w", 5, ne, TT_F32, 0);
    bb_zeros(&b, 64);
    expect_fail(&b, "w: ndim out of range 1..4 (5)");
    bb_free(&b);
    bb_hdr(&b, 3, 1, 0);
    bb_tinfo(&b, "w", 0, ne, TT_F32, 0);
    bb_zeros(&b, 64);
    expect_fail(&b, "w: ndim out of range 1..4 (0)");
    bb_free(&b);
    uint64_t z[2] = {4, 0};
    bb_hdr(&b, 3, 1, 0);
    bb_tinfo(&b, "w", 2, z, TT_F32, 0);
    bb_zeros(&b, 64);
    expect_fail(&b, "w: dim 1 out of range (0)");
    bb_free(&b);
    uint64_t neg[1] = {1ull << 63};
    bb_hdr(&b, 3, 1, 0);
    bb_tinfo(&b, "w", 1, neg, TT_F32, 0);
    bb_zeros(&b, 64);
    expect_fail(&b, "w: dim 0 out of range");
    bb_free(&b);
    uint64_t ov[3] = {1ull << 32, 1ull << 20, 1ull << 20};
    bb_hdr(&b, 3, 1, 0);
    bb_tinfo(&b, "w", 3, ov, TT_F32, 0);
    bb_zeros(&b, 64);
    expect_fail(&b, "w: element count overflows at dim 2");
    bb_free(&b);
    /* elements fit in int64 but bytes do not fit the file (and would overflow size_t * 4) */
    uint64_t huge[2] = {1ull << 31, 1ull << 31};
    bb_hdr(&b, 3, 1, 0);
    bb_tinfo(&b, "w", 2, huge, TT_F32, 0);
    bb_zeros(&b, 64);
    expect_fail(&b, "w: data past end of file");
    bb_free(&b);
    uint64_t odd[2] = {100, 2};
    bb_hdr(&b, 3, 1, 0);
    bb_tinfo(&b, "w", 2, odd, TT_TQ2_0, 0);
    bb_zeros(&b, 1024);
    expect_fail(&b, "w: row length is not a multiple of tq2_0's block size 256 (100)");
    bb_free(&b);
    bb_hdr(&b, 3, 1, 0);
    bb_tinfo(&b, "a-name-that-is-far-too-long-for-ggml-which-allows-63-bytes-only-x", 1, ne, TT_F32, 0);
    bb_zeros(&b, 64);
    expect_fail(&b, "name: too long (65 bytes");
    bb_free(&b);
}

static void test_misaligned_offset(void **st) {
    (void)st;
    bb_t b = {0};
    uint64_t ne[1] = {4};
    bb_hdr(&b, 3, 1, 0);
    bb_tinfo(&b, "w", 1, ne, TT_F32, 4);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_fail(&b, "w: offset not aligned to 32 (4)");
    bb_free(&b);
    /* with general.alignment = 64, offset 32 is misaligned */
    bb_hdr(&b, 3, 1, 1);
    bb_kv_u32(&b, "general.alignment", 64);
    bb_tinfo(&b, "w", 1, ne, TT_F32, 32);
    bb_pad(&b, 64);
    bb_zeros(&b, 128);
    expect_fail(&b, "w: offset not aligned to 64 (32)");
    bb_free(&b);
}

static void test_bad_alignment_key(void **st) {
    (void)st;
    bb_t b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_kv_u32(&b, "general.alignment", 48);
    expect_fail(&b, "general.alignment: not a power of two in 1..2^30 (48)");
    bb_free(&b);
    bb_hdr(&b, 3, 0, 1);
    bb_kv_u32(&b, "general.alignment", 0);
    expect_fail(&b, "general.alignment: not a power of two");
    bb_free(&b);
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, GGUF_STR);
    bb_str(&b, "32");
    expect_fail(&b, "general.alignment: not an integer (type str)");
    bb_free(&b);
}

static void test_overlapping_tensors(void **st) {
    (void)st;
    bb_t b = {0};
    uint64_t ne[1] = {16};                    /* 64 bytes */
    bb_hdr(&b, 3, 2, 0);
    bb_tinfo(&b, "a", 1, ne, TT_F32, 0);
    bb_tinfo(&b, "b", 1, ne, TT_F32, 32);     /* inside a's 64 bytes */
    bb_pad(&b, 32);
    bb_zeros(&b, 128);
    expect_fail(&b, "b: data overlaps tensor a (offset 32)");
    bb_free(&b);
    bb_hdr(&b, 3, 2, 0);                      /* same offset, listed in reverse order */
    bb_tinfo(&b, "a", 1, ne, TT_F32, 64);
    bb_tinfo(&b, "b", 1, ne, TT_F32, 64);
    bb_pad(&b, 32);
    bb_zeros(&b, 128);
    expect_fail(&b, "data overlaps tensor");
    bb_free(&b);
}

static void test_data_past_eof(void **st) {
    (void)st;
    bb_t b = {0};
    uint64_t ne[1] = {16};
    bb_hdr(&b, 3, 1, 0);
    bb_tinfo(&b, "a", 1, ne, TT_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 60);                         /* 4 bytes short */
    expect_fail(&b, "a: data past end of file (offset 0 + 64 bytes, data section is 60 bytes)");
    bb_free(&b);
    bb_hdr(&b, 3, 1, 0);
    bb_tinfo(&b, "a", 1, ne, TT_F32, UINT64_MAX - 31);  /* aligned, offset + size wraps */
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_fail(&b, "a: data past end of file");
    bb_free(&b);
    uint64_t one[1] = {1};
    bb_hdr(&b, 3, 1, 0);                      /* file ends before the data section */
    bb_tinfo(&b, "a", 1, one, TT_F32, 0);
    expect_fail(&b, "data section: starts past end of file");
    bb_free(&b);
}

/* llama.cpp's block types are sized exactly: one byte short of a K-quant tensor (Q6_K 210, Q4_K
 * 144, Q5_K 176 per 256; Q4_0 18, Q5_0 22 per 32) fails, the exact size opens, rows must be whole
 * blocks */
static void test_kquant_sizes(void **st) {
    (void)st;
    static const struct { uint32_t type; uint64_t cols; uint64_t bytes; const char *name; } k[] = {
        {TT_Q6_K, 512, 2 * 2 * 210, "q6_k"}, {TT_Q4_K, 256, 2 * 144, "q4_k"}, {TT_Q5_K, 768, 2 * 3 * 176, "q5_k"},
        {TT_Q4_0, 64, 2 * 2 * 18, "q4_0"}, {TT_Q5_0, 96, 2 * 3 * 22, "q5_0"}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        uint64_t ne[2] = {k[i].cols, 2};
        char frag[160];
        for (int ok = 0; ok < 2; ok++) {
            bb_t b = {0};
            bb_hdr(&b, 3, 1, 0);
            bb_tinfo(&b, "w", 2, ne, k[i].type, 0);
            bb_pad(&b, 32);
            bb_zeros(&b, k[i].bytes - (ok ? 0 : 1));
            if (ok) {
                gguf_t *g = expect_ok(&b);
                assert_int_equal(gguf_find_tensor(g, "w")->nbytes, k[i].bytes);
                assert_int_equal(gguf_find_tensor(g, "w")->type, k[i].type);
                gguf_close(&g);
            } else {
                snprintf(frag, sizeof frag, "w: data past end of file (offset 0 + %llu bytes, data section is "
                         "%llu bytes)", (unsigned long long)k[i].bytes, (unsigned long long)k[i].bytes - 1);
                expect_fail(&b, frag);
            }
            bb_free(&b);
        }
        bb_t b = {0};
        uint64_t bad[2] = {k[i].cols + 16, 2};
        bb_hdr(&b, 3, 1, 0);
        bb_tinfo(&b, "w", 2, bad, k[i].type, 0);
        bb_pad(&b, 32);
        bb_zeros(&b, 4 * k[i].bytes);
        snprintf(frag, sizeof frag, "w: row length is not a multiple of %s's block size %d", k[i].name,
                 k[i].type == TT_Q4_0 || k[i].type == TT_Q5_0 ? 32 : 256);
        expect_fail(&b, frag);
        bb_free(&b);
    }
}

static void test_duplicate_tensor_names(void **st) {
    (void)st;
    bb_t b = {0};
    uint64_t ne[1] = {8};
    bb_hdr(&b, 3, 2, 0);
    bb_tinfo(&b, "dup", 1, ne, TT_F32, 0);
    bb_tinfo(&b, "dup", 1, ne, TT_F32, 32);
    bb_pad(&b, 32);
    bb_zeros(&b, 64);
    expect_fail(&b, "dup: duplicate tensor name");
    bb_free(&b);
}

static void test_open_files(void **st) {
    (void)st;
    char path[300], err[256];
    gguf_t *g = (gguf_t *)1;
    path_in_dir(path, sizeof path, "does-not-exist.gguf");
    assert_int_equal(gguf_open(&g, path, err, sizeof err), TERN_ENOTFOUND);
    assert_null(g);
    assert_non_null(strstr(err, "does-not-exist.gguf: open: "));
    assert_true(gguf_open(&g, g_dir, err, sizeof err) < 0);
    assert_non_null(strstr(err, "not a regular file"));
    path_in_dir(path, sizeof path, "empty.gguf");
    FILE *f = fopen(path, "wb");
    fclose(f);
    assert_int_equal(gguf_open(&g, path, err, sizeof err), TERN_EFORMAT);
    assert_non_null(strstr(err, "empty.gguf: magic: file too short"));
    /* a valid file through the mmap path */
    bb_t b = {0};
    bb_valid(&b);
    path_in_dir(path, sizeof path, "valid.gguf");
    f = fopen(path, "wb");
    fwrite(b.p, 1, b.n, f);
    fclose(f);
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    assert_string_equal(g->path, path);
    assert_int_equal(g->size, b.n);
    assert_true(g->fd >= 0);
    gguf_close(&g);
    gguf_close(&g);                           /* NULL-safe */
    bb_free(&b);
}

/* llama.cpp's vocab-only GGUF files (gguf-py writes them) open, their token arrays index
 * cleanly, and copying every kv reproduces the file byte for byte */
static void test_real_vocab_files(void **st) {
    (void)st;
    const char *shared = getenv("TERN_SHARED");
    char dir[300], path[600], out[300], err[512];
    snprintf(dir, sizeof dir, "%s/vocab", shared && *shared ? shared : "/work/shared");
    DIR *d = opendir(dir);
    if (!d) { print_message("skipped: no %s\n", dir); return; }
    int n = 0;
    path_in_dir(out, sizeof out, "vocab_copy.gguf");
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".gguf")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        gguf_t *g = NULL, *g2 = NULL;
        if (gguf_open(&g, path, err, sizeof err) < 0) fail_msg("%s", err);
        const gguf_kv_t *toks = gguf_find(g, "tokenizer.ggml.tokens");
        assert_non_null(toks);
        assert_int_equal(toks->arr_type, GGUF_STR);
        assert_true(toks->arr_n > 1000);
        for (uint64_t i = 0; i < toks->arr_n; i++) {
            gguf_str_t s = gguf_arr_str(toks, i);
            if (!s.ptr || s.len > 1024) fail_msg("%s: token %llu", e->d_name, (unsigned long long)i);
        }
        gguf_writer_t *w = gguf_writer_new();
        gguf_writer_copy_kv(w, g, NULL);
        assert_int_equal(gguf_writer_begin(w, out, err, sizeof err), 0);
        assert_int_equal(gguf_writer_finish(w, err, sizeof err), 0);
        gguf_writer_destroy(&w);
        if (gguf_open(&g2, out, err, sizeof err) < 0) fail_msg("%s", err);
        assert_int_equal(g2->n_kv, g->n_kv);
        size_t m = g->size < g2->size ? g->size : g2->size;
        if (memcmp(g->map, g2->map, m)) fail_msg("%s: copy differs from the original", e->d_name);
        gguf_close(&g2);
        gguf_close(&g);
        n++;
    }
    closedir(d);
    print_message("%d vocab files checked\n", n);
}

/* cheap deterministic mutation fuzz: flipped bytes never crash (ASan builds check reads) */
static void test_mutations_do_not_crash(void **st) {
    (void)st;
    bb_t b = {0};
    bb_valid(&b);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    int ok = 0, bad = 0;
    for (int it = 0; it < 20000; it++) {
        uint8_t *m = malloc(b.n);
        memcpy(m, b.p, b.n);
        int flips = 1 + it % 4;
        for (int k = 0; k < flips; k++) {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            m[s % b.n] = (uint8_t)(s >> 32);
        }
        gguf_t *g = NULL;
        char err[256];
        if (gguf_open_mem(&g, m, b.n, "m.gguf", err, sizeof err) == 0) {
            ok++;
            for (uint64_t i = 0; i < g->n_tensors; i++) {
                const gguf_tensor_t *t = &g->tensors[i];
                assert_true((const uint8_t *)t->data + t->nbytes <= m + b.n);
            }
            gguf_close(&g);
        } else {
            bad++;
            assert_null(g);
        }
        free(m);
    }
    assert_true(ok > 0 && bad > 0);
    bb_free(&b);
}

static int setup(void **st) {
    (void)st;
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/tern_gguf_XXXXXX", t && *t ? t : "/tmp");
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
        cmocka_unit_test(test_valid_handmade),
        cmocka_unit_test(test_kv_all_types_roundtrip),
        cmocka_unit_test(test_writer_setters),
        cmocka_unit_test(test_tensor_all_types_roundtrip),
        cmocka_unit_test(test_writer_alignment_key),
        cmocka_unit_test(test_writer_misuse),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_bad_version),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_count_too_large),
        cmocka_unit_test(test_string_past_eof),
        cmocka_unit_test(test_bad_value_types),
        cmocka_unit_test(test_bad_keys),
        cmocka_unit_test(test_bad_tensor_type),
        cmocka_unit_test(test_bad_shape),
        cmocka_unit_test(test_misaligned_offset),
        cmocka_unit_test(test_bad_alignment_key),
        cmocka_unit_test(test_overlapping_tensors),
        cmocka_unit_test(test_data_past_eof),
        cmocka_unit_test(test_kquant_sizes),
        cmocka_unit_test(test_duplicate_tensor_names),
        cmocka_unit_test(test_open_files),
        cmocka_unit_test(test_real_vocab_files),
        cmocka_unit_test(test_mutations_do_not_crash),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
