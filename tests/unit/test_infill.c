/* test_infill: the fill-in-the-middle prompt (coordinator/infill.c) against a second, literal
 * transcription of llama-server's format_infill (vector erase / resize / insert at the front, as
 * the C++ does) over a grid of sizes, plus hand-checked sequences; the repo-level extra context
 * against the tokenizer's own pieces; and the FIM tokens' discovery (GGUF keys, the deprecated
 * keys, text fallback, control type, end of generation). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "coordinator/infill.h"
#include "coordinator/tokenizer.h"
#include "coordinator/vocab.h"
#include "core/err.h"
#include "core/gguf.h"

/* ---- a literal transcription of llama.cpp's format_infill (tools/server), on a tiny vector ---- */

typedef struct vec { int32_t v[4096]; int n; } vec_t;

static void v_insert(vec_t *a, int at, const int32_t *src, int n) {   /* a.insert(a.begin() + at, src, src + n) */
    memmove(a->v + at + n, a->v + at, (size_t)(a->n - at) * sizeof *a->v);
    memcpy(a->v + at, src, (size_t)n * sizeof *src);
    a->n += n;
}
static void v_erase_front(vec_t *a, int n) {   /* a.erase(a.begin(), a.begin() + n) */
    memmove(a->v, a->v + n, (size_t)(a->n - n) * sizeof *a->v);
    a->n -= n;
}
static int mn(int a, int b) { return a < b ? a : b; }
static int mx(int a, int b) { return a > b ? a : b; }

static void ref_format(const infill_cfg_t *c, const vec_t *prefix, const vec_t *suffix, const vec_t *prompt,
                       const vec_t *extra, vec_t *out) {
    vec_t tp = *prefix, ts = *suffix;
    const int n_prefix_take = mn(tp.n, 3 * (c->n_batch / 4));
    const int n_suffix_take = mn(ts.n, mx(0, (c->n_batch / 4) - (2 + prompt->n)));
    const int n_extra_take = mn(mx(0, c->n_ctx - (c->n_batch) - 2 * c->n_predict), extra->n);
    v_erase_front(&tp, tp.n - n_prefix_take);
    ts.n = n_suffix_take;   /* resize */
    int32_t pre = c->pre, suf = c->suf, mid = c->mid, bos = c->bos;
    v_insert(&tp, 0, &pre, 1);
    v_insert(&tp, tp.n, prompt->v, prompt->n);
    v_insert(&ts, 0, &suf, 1);
    vec_t inp = c->spm ? ts : tp, end = c->spm ? tp : ts;
    if (bos >= 0) v_insert(&inp, 0, &bos, 1);
    v_insert(&inp, 0, extra->v + extra->n - n_extra_take, n_extra_take);
    v_insert(&inp, inp.n, end.v, end.n);
    v_insert(&inp, inp.n, &mid, 1);
    *out = inp;
}

static void fill(vec_t *a, int n, int base) {
    a->n = n;
    for (int i = 0; i < n; i++) a->v[i] = base + i;
}

static void test_format_vs_reference(void **state) {
    (void)state;
    static vec_t pre, suf, prm, ext, want;
    int32_t got[4096];
    int cases = 0;
    const int batches[] = {1, 4, 7, 8, 16, 33, 64}, ctxs[] = {16, 64, 200}, preds[] = {-1, 0, 3, 40};
    const int lens[] = {0, 1, 3, 10, 50};
    for (size_t b = 0; b < 7; b++)
        for (size_t cx = 0; cx < 3; cx++)
            for (size_t pd = 0; pd < 4; pd++)
                for (int spm = 0; spm < 2; spm++)
                    for (int bos = -1; bos <= 1; bos += 2)
                        for (size_t lp = 0; lp < 5; lp++)
                            for (size_t ls = 0; ls < 5; ls++)
                                for (size_t lq = 0; lq < 3; lq++)
                                    for (size_t lx = 0; lx < 5; lx += 2) {
                                        infill_cfg_t c = {.pre = 900, .suf = 901, .mid = 902, .rep = -1, .sep = -1,
                                                          .bos = bos, .n_batch = batches[b], .n_predict = preds[pd],
                                                          .n_ctx = ctxs[cx], .spm = spm};
                                        fill(&pre, lens[lp], 100);
                                        fill(&suf, lens[ls], 300);
                                        fill(&prm, lens[lq], 500);
                                        fill(&ext, lens[lx], 700);
                                        ref_format(&c, &pre, &suf, &prm, &ext, &want);
                                        int n = infill_format(&c, pre.v, pre.n, suf.v, suf.n, prm.v, prm.n, ext.v,
                                                              ext.n, got);
                                        assert_int_equal(n, want.n);
                                        assert_true(n <= pre.n + suf.n + prm.n + ext.n + 4);
                                        assert_memory_equal(got, want.v, (size_t)n * sizeof *got);
                                        cases++;
                                    }
    printf("  %d size combinations equal the transcription\n", cases);
}

/* sequences checked by hand against format_infill's rules */
static void test_format_by_hand(void **state) {
    (void)state;
    int32_t pre[10], suf[6], prm[1] = {30}, ext[10], out[64];
    for (int i = 0; i < 10; i++) pre[i] = 10 + i, ext[i] = 50 + i;
    for (int i = 0; i < 6; i++) suf[i] = 20 + i;
    /* n_batch 16: the prefix may take 12 (all 10), the suffix 16/4 - (2 + 1 prompt token) = 1 */
    infill_cfg_t c = {.pre = 100, .suf = 101, .mid = 102, .rep = -1, .sep = -1, .bos = 1, .n_batch = 16,
                      .n_predict = -1, .n_ctx = 64};
    int32_t w1[] = {1, 100, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 30, 101, 20, 102};
    assert_int_equal(infill_format(&c, pre, 10, suf, 6, prm, 1, NULL, 0, out), 16);
    assert_memory_equal(out, w1, sizeof w1);
    /* n_batch 8, no prompt: the prefix's last 6, the suffix 8/4 - 2 = none */
    c.n_batch = 8;
    int32_t w2[] = {1, 100, 14, 15, 16, 17, 18, 19, 101, 102};
    assert_int_equal(infill_format(&c, pre, 10, suf, 6, NULL, 0, NULL, 0, out), 10);
    assert_memory_equal(out, w2, sizeof w2);
    /* --spm-infill, n_batch 20 (suffix 5 - 2 = 3), no BOS */
    c.n_batch = 20;
    c.spm = 1;
    c.bos = -1;
    int32_t w3[] = {101, 20, 21, 22, 100, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 102};
    assert_int_equal(infill_format(&c, pre, 10, suf, 6, NULL, 0, NULL, 0, out), 16);
    assert_memory_equal(out, w3, sizeof w3);
    /* extra context: n_ctx 30 - n_batch 16 - 2 x n_predict 4 = its last 6 tokens, before the BOS */
    c = (infill_cfg_t){.pre = 100, .suf = 101, .mid = 102, .rep = -1, .sep = -1, .bos = 1, .n_batch = 16,
                       .n_predict = 4, .n_ctx = 30};
    int32_t w4[] = {54, 55, 56, 57, 58, 59, 1, 100, 18, 19, 101, 20, 21, 102};
    assert_int_equal(infill_format(&c, pre + 8, 2, suf, 2, NULL, 0, ext, 10, out), 14);
    assert_memory_equal(out, w4, sizeof w4);
}

/* ---- tokenizers ---- */

static tokenizer_t *load(gguf_writer_t *w, char *path) {
    strcpy(path, "/tmp/tern_infill_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char err[256] = "";
    if (gguf_writer_begin(w, path, err, sizeof err) < 0 || gguf_writer_finish(w, err, sizeof err) < 0)
        fail_msg("writing %s: %s", path, err);
    gguf_writer_destroy(&w);
    gguf_t *g = NULL;
    if (gguf_open(&g, path, err, sizeof err) < 0) fail_msg("open %s: %s", path, err);
    tokenizer_t *t = NULL;
    if (tokenizer_load(&t, g, err, sizeof err) < 0) fail_msg("tokenizer_load: %s", err);
    gguf_close(&g);
    unlink(path);
    return t;
}

static int encode(const tokenizer_t *t, const char *s, int32_t *out) {
    int n = tokenizer_encode(t, s, strlen(s), 0, 0, out, 256);
    assert_true(n >= 0 && n <= 256);
    return n;
}

/* the generated vocabulary with --fim: the keys name Qwen's six tokens; three end generation */
static void test_generated_fim(void **state) {
    (void)state;
    char path[64], err[256] = "";
    gguf_writer_t *w = gguf_writer_new();
    assert_int_equal(vocab_generate_ex(w, 600, 3, 1, err, sizeof err), 0);
    tokenizer_t *t = load(w, path);
    static const char *const want[TOKENIZER_FIM_N] = {"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                                                      "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"};
    for (int k = 0; k < TOKENIZER_FIM_N; k++) {
        char buf[64];
        int id = tokenizer_fim(t, k);
        assert_true(id >= 0);
        assert_int_equal(tokenizer_token_text(t, id, buf, sizeof buf), (int)strlen(want[k]));
        assert_string_equal(buf, want[k]);
        assert_int_equal(tokenizer_find(t, want[k]), id);
        assert_int_equal(tokenizer_is_eog(t, id), k >= TOKENIZER_FIM_PAD);   /* as llama.cpp */
        assert_int_equal(tokenizer_piece(t, id, 0, buf, sizeof buf), 0);      /* control: no text */
    }
    assert_int_equal(tokenizer_fim(t, TOKENIZER_FIM_N), -1);
    /* the repo-level context: FIM_REP "myproject\n", FIM_SEP name "\n" text per chunk, FIM_SEP
     * "filename\n"; each piece tokenized on its own, without special tokens */
    infill_cfg_t c = {.pre = tokenizer_fim(t, 0), .suf = tokenizer_fim(t, 1), .mid = tokenizer_fim(t, 2),
                      .rep = tokenizer_fim(t, TOKENIZER_FIM_REP), .sep = tokenizer_fim(t, TOKENIZER_FIM_SEP),
                      .bos = -1};
    infill_chunk_t ch[2] = {{"a.py", "import os\n"}, {NULL, "x = <|fim_pad|> 1"}};
    int32_t want_ids[1024], *got = NULL;
    int n = 0;
    want_ids[n++] = c.rep;
    n += encode(t, "myproject\n", want_ids + n);
    want_ids[n++] = c.sep;
    n += encode(t, "a.py\n", want_ids + n);
    n += encode(t, "import os\n", want_ids + n);
    want_ids[n++] = c.sep;
    n += encode(t, "tmp\n", want_ids + n);   /* no filename: "tmp" */
    n += encode(t, "x = <|fim_pad|> 1", want_ids + n);   /* the text's "<|fim_pad|>" stays text */
    want_ids[n++] = c.sep;
    n += encode(t, "filename\n", want_ids + n);
    assert_int_equal(infill_extra(t, &c, ch, 2, &got), n);
    assert_memory_equal(got, want_ids, (size_t)n * sizeof *got);
    for (int i = 0; i < n; i++) assert_true(got[i] != tokenizer_fim(t, TOKENIZER_FIM_PAD));
    free(got);
    /* without FIM_REP / FIM_SEP: each chunk after the "--- snippet ---" line, nothing else */
    c.rep = c.sep = -1;
    n = 0;
    n += encode(t, "\n\n--- snippet ---\n\n", want_ids + n);
    n += encode(t, "import os\n", want_ids + n);
    assert_int_equal(infill_extra(t, &c, ch, 1, &got), n);
    assert_memory_equal(got, want_ids, (size_t)n * sizeof *got);
    free(got);
    assert_int_equal(infill_extra(t, &c, ch, 0, &got), 0);
    free(got);
    tokenizer_destroy(&t);
    /* without --fim: none, so /infill answers 501 */
    w = gguf_writer_new();
    assert_int_equal(vocab_generate_ex(w, 600, 3, 0, err, sizeof err), 0);
    t = load(w, path);
    for (int k = 0; k < TOKENIZER_FIM_N; k++) assert_int_equal(tokenizer_fim(t, k), -1);
    tokenizer_destroy(&t);
    w = gguf_writer_new();   /* 6 tokens more than the 3 specials need */
    assert_true(vocab_generate_ex(w, 261, 3, 1, err, sizeof err) < 0);
    gguf_writer_destroy(&w);
}

/* a small vocabulary with the given tokens (all normal) and optional FIM keys */
static tokenizer_t *small(const char *const *toks, int n, const char *key, int id, const char *key2, int id2) {
    char path[64];
    int32_t types[16];
    for (int i = 0; i < n; i++) types[i] = 1;
    gguf_writer_t *w = gguf_writer_new();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt-2");
    gguf_writer_set_arr(w, "tokenizer.ggml.tokens", GGUF_STR, toks, (uint64_t)n);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, types, (uint64_t)n);
    const char *merges[] = {"a b"};
    gguf_writer_set_arr(w, "tokenizer.ggml.merges", GGUF_STR, merges, 1);
    if (key) gguf_writer_set_u32(w, key, (uint32_t)id);
    if (key2) gguf_writer_set_u32(w, key2, (uint32_t)id2);
    return load(w, path);
}

/* llama.cpp's text fallback (CodeLlama's <PRE> <SUF> <MID>, made control tokens), the
 * deprecated keys (which win over the new ones, as llama.cpp reads them last), and an id outside
 * the vocabulary ignored */
static void test_fim_discovery(void **state) {
    (void)state;
    const char *toks[] = {"a", "b", "ab", "<PRE>", "<SUF>", "<MID>", "<EOT>", "<|fim_prefix|>"};
    tokenizer_t *t = small(toks, 8, NULL, 0, NULL, 0);
    assert_int_equal(tokenizer_fim(t, TOKENIZER_FIM_PRE), 7);   /* <|fim_prefix|> comes first in the list */
    assert_int_equal(tokenizer_fim(t, TOKENIZER_FIM_SUF), 4);
    assert_int_equal(tokenizer_fim(t, TOKENIZER_FIM_MID), 5);
    assert_int_equal(tokenizer_fim(t, TOKENIZER_FIM_REP), -1);
    int32_t ids[8];   /* control now: "<SUF>" in text is that token when special tokens are parsed */
    assert_int_equal(tokenizer_encode(t, "<SUF>", 5, 0, 1, ids, 8), 1);
    assert_int_equal(ids[0], 4);
    tokenizer_destroy(&t);
    t = small(toks, 8, "tokenizer.ggml.fim_pre_token_id", 3, "tokenizer.ggml.prefix_token_id", 0);
    assert_int_equal(tokenizer_fim(t, TOKENIZER_FIM_PRE), 0);
    tokenizer_destroy(&t);
    t = small(toks, 8, "tokenizer.ggml.fim_pre_token_id", 3, "tokenizer.ggml.middle_token_id", 2);
    assert_int_equal(tokenizer_fim(t, TOKENIZER_FIM_PRE), 3);
    assert_int_equal(tokenizer_fim(t, TOKENIZER_FIM_MID), 2);
    tokenizer_destroy(&t);
    t = small(toks, 8, "tokenizer.ggml.fim_suf_token_id", 99, NULL, 0);   /* out of range: the text's */
    assert_int_equal(tokenizer_fim(t, TOKENIZER_FIM_SUF), 4);
    tokenizer_destroy(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_vs_reference),
        cmocka_unit_test(test_format_by_hand),
        cmocka_unit_test(test_generated_fim),
        cmocka_unit_test(test_fim_discovery),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    int total = (int)(sizeof tests / sizeof *tests);
    printf("%d passed, %d failed\n", total - failed, failed);
    return failed ? 1 : 0;
}
