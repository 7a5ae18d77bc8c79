/* test_memflags: llama.cpp's memory flags on real shards of generated models.
 * --no-mmap (GGUF_NO_MMAP): the same logits bit for bit as the mapped file; a shard reads exactly
 * its own tensors (bytes counted) and loads from a file whose other layers are garbage.
 * --mlock: the kernel's VmLck grows by exactly the bytes the shard reports, which cover its
 * weights but not the rest of the file, and goes back at shard_free; with RLIMIT_MEMLOCK too low
 * (and CAP_IPC_LOCK dropped) the load warns and goes on. -tb: a batch pool of another size gives
 * the same logits bit for bit. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "core/gguf.h"
#include "worker/forward.h"
#include "worker/shard.h"

int mkmodel_main(int argc, char **argv);

/* the sanitizers' runtimes replace mlock() with a no-op that returns 0: nothing to count there */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MLOCK_IS_REAL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define MLOCK_IS_REAL 0
#endif
#endif
#ifndef MLOCK_IS_REAL
#define MLOCK_IS_REAL 1
#endif

static char g_dir[256];

/* TYPE: a ternary type, or "llama" (i2_s, llama arch, rope_freqs.weight, tied head) */
static void model_path(char *path, size_t cap, const char *type) {
    snprintf(path, cap, "%s/m-%s.gguf", g_dir, type);
    if (access(path, R_OK) == 0) return;
    int llama = !strcmp(type, "llama");
    char *argv[] = {"mkmodel", "--arch", llama ? "llama" : "bitnet-b1.58", "--preset", "tiny", "--layers", "3", "--type",
                    llama ? "i2_s" : (char *)type, "--seed", "5", "-o", path, llama ? "--rope-freqs" : "--untied",
                    llama ? "8" : NULL, NULL};
    assert_int_equal(mkmodel_main(llama ? 15 : 14, argv), 0);
}

static gguf_t *open_as(const char *path, int flags) {
    gguf_t *g;
    char err[256];
    int rc = gguf_open_ex(&g, path, flags, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    return g;
}

static void load(shard_t *s, const gguf_t *g, int first, int last, int head, int mlock) {
    shard_opts_t o;
    shard_opts_default(&o);
    o.mlock = mlock;
    char err[256];
    int rc = shard_load(s, g, first, last, head, &o, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
}

/* Runs 9 prompt tokens (one call: a batch step) then 3 decode steps through shard s from fixed
 * hidden states; returns (12, n_vocab) logits, or with no head the final hidden states (12, n_embd). */
static float *run(const shard_t *s, int threads, int threads_batch) {
    const int n = 12, np = 9, E = s->hp.n_embd, V = s->hp.n_vocab;
    tpool_t *tp = tpool_new(threads), *tb = threads_batch ? tpool_new(threads_batch) : NULL;
    forward_t f;
    char err[256];
    assert_int_equal(forward_init(&f, s, 16, 1, 4, 4, KV_F16, tp, err, sizeof err), 0);
    assert_int_equal(forward_set_batch_pool(&f, tb), 0);
    float *h = malloc((size_t)n * E * sizeof(float));
    int out = s->has_head ? V : E;
    float *y = calloc((size_t)n * out, sizeof(float));
    int seq[12] = {0}, pos[12], rows[12];
    for (int i = 0; i < n; i++) pos[i] = rows[i] = i;
    for (int i = 0; i < n * E; i++) h[i] = (float)((i * 7919) % 201 - 100) / 50.0f;
    forward_layers(&f, h, np, seq, pos);
    for (int i = np; i < n; i++) forward_layers(&f, h + (size_t)i * E, 1, seq + i, pos + i);
    if (s->has_head) {
        forward_logits(&f, h, np, rows, y);
        for (int i = np; i < n; i++) forward_logits(&f, h + (size_t)i * E, 1, rows, y + (size_t)i * V);
    } else {
        memcpy(y, h, (size_t)n * E * sizeof(float));
    }
    free(h);
    forward_free(&f);
    tpool_destroy(&tb);
    tpool_destroy(&tp);
    return y;
}

static size_t out_bytes(const shard_t *s) { return (size_t)12 * (s->has_head ? s->hp.n_vocab : s->hp.n_embd) * 4; }

static void test_no_mmap_same_logits(void **st) {
    (void)st;
    const char *types[] = {"i2_s", "tq2_0", "tq1_0", "llama"};
    for (int k = 0; k < 4; k++) {
        char path[512];
        model_path(path, sizeof path, types[k]);
        gguf_t *gm = open_as(path, 0), *gr = open_as(path, GGUF_NO_MMAP);
        assert_int_equal(gguf_mapped(gm), 1);
        assert_int_equal(gguf_mapped(gr), 0);
        shard_t sm, sr;
        load(&sm, gm, 0, 2, 1, 0);
        load(&sr, gr, 0, 2, 1, 0);
        float *a = run(&sm, 1, 0), *b = run(&sr, 1, 0);
        assert_memory_equal(a, b, out_bytes(&sm));
        /* -tb: prompt steps on a pool of another size, the same bits (and the other way round) */
        float *c = run(&sr, 1, 2), *d = run(&sm, 2, 1);
        assert_memory_equal(a, c, out_bytes(&sm));
        assert_memory_equal(a, d, out_bytes(&sm));
        printf("  %-5s --no-mmap, -tb 2 -t 1 and -tb 1 -t 2 logits == mmap's, bit for bit\n", types[k]);
        free(a); free(b); free(c); free(d);
        shard_free(&sr);
        shard_free(&sm);
        gguf_close(&gr);
        gguf_close(&gm);
    }
}

static int in_layer(const char *name, int il) {
    char p[32];
    snprintf(p, sizeof p, "blk.%d.", il);
    return !strncmp(name, p, strlen(p));
}

/* the middle layer alone reads its own tensors (and the RoPE factors) and nothing else */
static void test_no_mmap_reads_own_layers(void **st) {
    (void)st;
    char path[512];
    model_path(path, sizeof path, "llama");
    gguf_t *g = open_as(path, GGUF_NO_MMAP);
    assert_non_null(gguf_find_tensor(g, "rope_freqs.weight"));
    uint64_t header = gguf_bytes_read(g), want = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (in_layer(g->tensors[i].name, 1) || !strcmp(g->tensors[i].name, "rope_freqs.weight")) want += g->tensors[i].nbytes;
    assert_true(header < g->data_offset + (256u << 10));
    shard_t s;
    load(&s, g, 1, 1, 0, 0);
    printf("  layer 1 of 3: read %llu bytes of a %zu-byte file (header %llu)\n",
           (unsigned long long)(gguf_bytes_read(g) - header), g->size, (unsigned long long)header);
    assert_int_equal(gguf_bytes_read(g) - header, want);
    shard_free(&s);
    gguf_close(&g);
}

/* layers 0 and 2, the head and the embeddings overwritten with garbage: layer 1 still loads and
 * gives the same hidden states as from the intact file, mapped or read */
static void test_other_layers_garbage(void **st) {
    (void)st;
    char path[512], bad[600];
    model_path(path, sizeof path, "i2_s");
    snprintf(bad, sizeof bad, "%s/garbage.gguf", g_dir);
    gguf_t *g = open_as(path, 0);
    FILE *f = fopen(bad, "wb");
    assert_non_null(f);
    uint8_t *copy = malloc(g->size);
    memcpy(copy, g->map, g->size);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor_t *t = &g->tensors[i];
        if (in_layer(t->name, 1) || !strcmp(t->name, "rope_freqs.weight")) continue;
        memset(copy + g->data_offset + t->offset, 0xA5, t->nbytes);
    }
    assert_int_equal(fwrite(copy, 1, g->size, f), g->size);
    fclose(f);
    free(copy);
    shard_t ref;
    load(&ref, g, 1, 1, 0, 0);
    float *a = run(&ref, 1, 0);
    for (int flags = 0; flags <= GGUF_NO_MMAP; flags += GGUF_NO_MMAP) {
        gguf_t *gb = open_as(bad, flags);
        shard_t s;
        load(&s, gb, 1, 1, 0, 0);
        float *b = run(&s, 1, 0);
        assert_memory_equal(a, b, out_bytes(&s));
        free(b);
        shard_free(&s);
        gguf_close(&gb);
    }
    free(a);
    shard_free(&ref);
    gguf_close(&g);
}

static long vm_lck_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmLck:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

/* CAP_IPC_LOCK (root in a container) ignores RLIMIT_MEMLOCK: drop it from the effective set */
static int cap_ipc_lock(int on) {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0) return -1;
    if (on) d[0].effective |= 1u << CAP_IPC_LOCK;
    else d[0].effective &= ~(1u << CAP_IPC_LOCK);
    return (int)syscall(SYS_capset, &h, d);
}

static void test_mlock_counts(void **st) {
    (void)st;
    if (!MLOCK_IS_REAL) { printf("  skipped: a sanitizer's mlock() does nothing\n"); return; }
    char path[512];
    model_path(path, sizeof path, "tq2_0");   /* TQ: repacked, and per-block scales read in place */
    struct rlimit rl;   /* an unprivileged run needs a few MiB of RLIMIT_MEMLOCK: raise it to the hard limit */
    assert_int_equal(getrlimit(RLIMIT_MEMLOCK, &rl), 0);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (8u << 20)) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_MEMLOCK, &rl);
        getrlimit(RLIMIT_MEMLOCK, &rl);
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (8u << 20) && cap_ipc_lock(1) != 0) {
            printf("  skipped: RLIMIT_MEMLOCK %llu bytes and no CAP_IPC_LOCK\n", (unsigned long long)rl.rlim_cur);
            return;
        }
    }
    for (int flags = 0; flags <= GGUF_NO_MMAP; flags += GGUF_NO_MMAP) {
        gguf_t *g = open_as(path, flags);
        long before = vm_lck_kb();
        assert_true(before >= 0);
        shard_t s;
        load(&s, g, 0, 2, 1, 1);
        long after = vm_lck_kb();
        printf("  %s: locked %zu bytes (weights read per token %zu, file %zu); VmLck %ld -> %ld kB\n",
               flags ? "--no-mmap" : "mmap", s.lock.locked, s.weight_bytes, g->size, before, after);
        assert_int_equal(s.lock.failed, 0);
        assert_int_equal((size_t)(after - before) * 1024, s.lock.locked);
        assert_true(s.lock.locked >= s.weight_bytes);
        shard_t one;   /* one layer of three, no head: much less than the file */
        load(&one, g, 1, 1, 0, 1);
        assert_true(one.lock.locked > 0 && one.lock.locked < s.lock.locked / 2);
        shard_free(&one);
        shard_free(&s);
        assert_int_equal(vm_lck_kb(), before);
        gguf_close(&g);
    }
}

static void test_mlock_limit(void **st) {
    (void)st;
    if (!MLOCK_IS_REAL) { printf("  skipped: a sanitizer's mlock() does nothing\n"); return; }
    char path[512];
    model_path(path, sizeof path, "i2_s");
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_MEMLOCK, &old), 0);
    low = old;
    low.rlim_cur = 0;
    int had_cap = cap_ipc_lock(0) == 0;
    assert_int_equal(setrlimit(RLIMIT_MEMLOCK, &low), 0);
    gguf_t *g = open_as(path, 0);
    shard_t s;
    load(&s, g, 0, 2, 1, 1);   /* warns and goes on */
    printf("  RLIMIT_MEMLOCK 0: %zu bytes could not be locked, %zu locked; the shard runs\n", s.lock.failed, s.lock.locked);
    assert_true(s.lock.failed > 0);
    assert_int_equal(s.lock.locked, 0);
    float *y = run(&s, 1, 0);
    free(y);
    shard_free(&s);
    gguf_close(&g);
    assert_int_equal(setrlimit(RLIMIT_MEMLOCK, &old), 0);
    if (had_cap) cap_ipc_lock(1);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/tern_test_memflags_%d", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", g_dir);
    if (system(cmd) != 0) return 1;
    setenv("TERN_PROGRESS", "0", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_mmap_same_logits),
        cmocka_unit_test(test_no_mmap_reads_own_layers),
        cmocka_unit_test(test_other_layers_garbage),
        cmocka_unit_test(test_mlock_counts),
        cmocka_unit_test(test_mlock_limit),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) return 1;
    return rc;
}
