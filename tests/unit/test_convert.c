/* test_convert: `tern convert` on tiny synthetic Hugging Face checkpoints written here (config.json,
 * BF16 safetensors — single, sharded with an index, or packed uint8 + weight_scale — and a
 * tokenizer.json or a SentencePiece tokenizer.model serialised with protobuf-c), then
 * `tern quantize` on the results. Every converted tensor is checked against values computed here
 * independently: absmean ternary of the master weights, HF's q/k → adjacent-pair RoPE permutation
 * by the reshape/swapaxes formula, exact unpacking of packed codes. Bad checkpoints fail with one
 * line naming the problem. `test_convert --make-hf DIR VARIANT [tokenizer.json]` writes a
 * checkpoint for tests/integration/convert.sh. */
#define _GNU_SOURCE
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
#include "tools/safetensors.h"
#include "tools/sp_model.pb-c.h"
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int convert_main(int argc, char **argv);
int quantize_main(int argc, char **argv);
int cli_info(int argc, char **argv);

/* model shape: TQ types need rows of 256, I2_S 128 */
enum { L = 2, E = 256, FF = 512, NH = 4, NKV = 2, HD = 64 };

static char g_dir[256];

/* ---- running subcommands in-process ------------------------------------------------ */

/* fn(argv...) with stdout → out_path and stderr → err_path when given */
static int run_cmd(int (*fn)(int, char **), const char *out_path, const char *err_path, const char *cmd, ...) {
    char *argv[40];
    int argc = 0;
    va_list ap;
    argv[argc++] = (char *)cmd;
    va_start(ap, cmd);
    for (const char *a; (a = va_arg(ap, const char *)) && argc < 39;) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    const char *paths[2] = {out_path, err_path};
    int saved[2] = {-1, -1};
    fflush(stdout);
    fflush(stderr);
    for (int k = 0; k < 2; k++) {
        if (!paths[k]) continue;
        saved[k] = dup(k + 1);
        int fd = open(paths[k], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        dup2(fd, k + 1);
        close(fd);
    }
    int rc = fn(argc, argv);
    fflush(stdout);
    fflush(stderr);
    for (int k = 0; k < 2; k++)
        if (saved[k] >= 0) { dup2(saved[k], k + 1); close(saved[k]); }
    return rc;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

static void spit(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) { return remove(p); }
static void rm_rf(const char *p) { nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

/* ---- deterministic values ---------------------------------------------------------- */

static uint64_t rnd(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float gauss(uint64_t *s) {
    float a = 0;
    for (int k = 0; k < 4; k++) a += (float)(rnd(s) & 0xffff) / 65536.0f;
    return (a - 2.0f) * 1.7320508f;
}

/* ---- a synthetic HF checkpoint --------------------------------------------------------- */

enum kind { K_EMBD, K_NORM, K_TERN, K_HEAD, K_SCALE };

typedef struct tens {
    char hf[96], gg[64];     /* HF name; GGUF name ("" for weight_scale) */
    int kind, ndim, perm;    /* perm: heads of the q/k permutation (0: none) */
    int64_t shape[2];        /* HF shape: (rows, cols) or (n,) */
    const char *dtype;       /* "BF16", "U8" */
    uint8_t *data;
    size_t nbytes;
    float *master;           /* float values (BF16-exact) */
    int8_t *trits;           /* packed: the trits by HF row */
    float ws;                /* packed: weight_scale */
} tens_t;

typedef struct variant {
    const char *name, *archs, *act, *model_type, *linear_class;
    int tie, sub, packed, spm, arch, sharded;
} variant_t;

static const variant_t V_B158 = {"b158", "BitNetForCausalLM", "relu2", "bitnet", NULL, 1, 1, 0, 0, ARCH_BITNET_B158, 0};
static const variant_t V_BITNET = {"bitnet", "BitnetForCausalLM", "silu", "llama", NULL, 0, 2, 0, 1, ARCH_BITNET, 0};
static const variant_t V_LLAMA = {"llama", "LlamaForCausalLM", "silu", "llama", NULL, 0, 0, 0, 0, ARCH_LLAMA, 0};
static const variant_t V_LLAMA_SH = {"llama", "LlamaForCausalLM", "silu", "llama", NULL, 0, 0, 0, 0, ARCH_LLAMA, 1};
static const variant_t V_PACK_B158 = {"packed-b158", "BitNetForCausalLM", "relu2", "bitnet", "autobitlinear", 1, 1, 1, 0,
                                      ARCH_BITNET_B158, 0};
static const variant_t V_PACK_LLAMA = {"packed-llama", "LlamaForCausalLM", "silu", "llama", "bitlinear", 0, 0, 1, 0,
                                       ARCH_LLAMA, 0};

typedef struct model {
    const variant_t *v;
    int n_vocab, n;
    tens_t t[64];
} model_t;

static void model_free(model_t *m) {
    for (int i = 0; i < m->n; i++) { free(m->t[i].data); free(m->t[i].master); free(m->t[i].trits); }
    m->n = 0;
}

static tens_t *add_tens(model_t *m, const char *hf, const char *gg, int kind, int64_t rows, int64_t cols) {
    tens_t *t = &m->t[m->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->hf, sizeof t->hf, "%s", hf);
    snprintf(t->gg, sizeof t->gg, "%s", gg);
    t->kind = kind;
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    return t;
}

/* BF16 values amp·N(0,1) + off */
static void fill_bf16(tens_t *t, uint64_t seed, float amp, float off) {
    int64_t n = t->shape[0] * (t->ndim > 1 ? t->shape[1] : 1);
    uint16_t *h = malloc((size_t)n * 2);
    t->master = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) {
        h[i] = f32_to_bf16(off + amp * gauss(&seed));
        t->master[i] = bf16_to_f32(h[i]);
    }
    t->data = (uint8_t *)h;
    t->nbytes = (size_t)n * 2;
    t->dtype = "BF16";
}

/* transformers' pack_weights: row r = g·(rows/4) + p goes to bits 2g of packed row p */
static void fill_packed(model_t *m, tens_t *t, uint64_t seed, int autobit) {
    int64_t rows = t->shape[0], cols = t->shape[1], pr = rows / 4;
    t->trits = malloc((size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) {
        int u = (int)(rnd(&seed) % 10);
        t->trits[i] = (int8_t)(u < 3 ? 0 : u < 6 ? -1 : 1);
    }
    t->data = calloc((size_t)(pr * cols), 1);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            t->data[(r % pr) * cols + c] |= (uint8_t)((t->trits[r * cols + c] + 1) << (2 * (r / pr)));
    t->nbytes = (size_t)(pr * cols);
    t->dtype = "U8";
    float scale = 0.02f + 0.001f * (float)(seed % 10);
    char sn[96];
    snprintf(sn, sizeof sn, "%.80s_scale", t->hf);
    tens_t *s = add_tens(m, sn, "", K_SCALE, 1, 0);
    uint16_t b = f32_to_bf16(autobit ? scale : 1.0f / scale);
    t->ws = bf16_to_f32(b);
    s->data = malloc(2);
    memcpy(s->data, &b, 2);
    s->nbytes = 2;
    s->dtype = "BF16";
}

static void build_model(model_t *m, const variant_t *v, int n_vocab) {
    memset(m, 0, sizeof *m);
    m->v = v;
    m->n_vocab = n_vocab;
    uint64_t seed = 1234;
    fill_bf16(add_tens(m, "model.embed_tokens.weight", "token_embd.weight", K_EMBD, n_vocab, E), seed++, 0.03f, 0);
    static const char *sub[3][2] = {{NULL, NULL}, {"self_attn.attn_sub_norm", "mlp.ffn_sub_norm"},
                                    {"self_attn.inner_attn_ln", "mlp.ffn_layernorm"}};
    /* q/k rows are permuted when tern's RoPE for the arch takes adjacent pairs (model_spec) */
    hparams_t hp = {.arch = v->arch, .n_embd = E, .n_head = NH};
    hparams_defaults(&hp);
    int rope_pairs = !hp.rope_neox;
    for (int l = 0; l < L; l++) {
        struct { const char *hf, *gg; int kind; int64_t rows, cols; int perm; } b[] = {
            {"input_layernorm", "attn_norm", K_NORM, E, 0, 0},
            {"self_attn.q_proj", "attn_q", K_TERN, NH * HD, E, rope_pairs ? NH : 0},
            {"self_attn.k_proj", "attn_k", K_TERN, NKV * HD, E, rope_pairs ? NKV : 0},
            {"self_attn.v_proj", "attn_v", K_TERN, NKV * HD, E, 0},
            {"self_attn.o_proj", "attn_output", K_TERN, E, NH * HD, 0},
            {sub[v->sub][0], "attn_sub_norm", K_NORM, NH * HD, 0, 0},
            {"post_attention_layernorm", "ffn_norm", K_NORM, E, 0, 0},
            {"mlp.gate_proj", "ffn_gate", K_TERN, FF, E, 0},
            {"mlp.up_proj", "ffn_up", K_TERN, FF, E, 0},
            {"mlp.down_proj", "ffn_down", K_TERN, E, FF, 0},
            {sub[v->sub][1], "ffn_sub_norm", K_NORM, FF, 0, 0},
        };
        for (size_t k = 0; k < sizeof b / sizeof b[0]; k++) {
            if (!b[k].hf) continue;
            char hf[96], gg[64];
            snprintf(hf, sizeof hf, "model.layers.%d.%s.weight", l, b[k].hf);
            snprintf(gg, sizeof gg, "blk.%d.%s.weight", l, b[k].gg);
            tens_t *t = add_tens(m, hf, gg, b[k].kind, b[k].rows, b[k].cols);
            t->perm = b[k].perm;
            if (b[k].kind == K_NORM) fill_bf16(t, seed++, 0.1f, 1.0f);
            else if (v->packed) fill_packed(m, t, seed++, v->linear_class && !strcmp(v->linear_class, "autobitlinear"));
            else fill_bf16(t, seed++, 0.05f, 0);
        }
    }
    fill_bf16(add_tens(m, "model.norm.weight", "output_norm.weight", K_NORM, E, 0), seed++, 0.1f, 1.0f);
    if (!v->tie) fill_bf16(add_tens(m, "lm_head.weight", "output.weight", K_HEAD, n_vocab, E), seed++, 0.03f, 0);
    /* non-weight tensor real checkpoints carry; the converter skips it */
    tens_t *x = add_tens(m, "model.layers.0.self_attn.rotary_emb.inv_freq", "", K_SCALE, HD / 2, 0);
    fill_bf16(x, seed++, 0.1f, 0.5f);
}

/* safetensors: u64 header length, JSON header (space-padded to 8), data in list order */
static void write_st(const char *path, tens_t *const *ts, int n) {
    json_t *h = json_object();
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        json_t *e = json_object(), *shape = json_array();
        for (int d = 0; d < ts[i]->ndim; d++) json_array_append_new(shape, json_integer(ts[i]->shape[d]));
        if (!strcmp(ts[i]->dtype, "U8")) {   /* packed: (rows/4, cols) */
            json_array_set_new(shape, 0, json_integer(ts[i]->shape[0] / 4));
        }
        json_object_set_new(e, "dtype", json_string(ts[i]->dtype));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", json_pack("[II]", (json_int_t)off, (json_int_t)(off + ts[i]->nbytes)));
        json_object_set_new(h, ts[i]->hf, e);
        off += ts[i]->nbytes;
    }
    json_object_set_new(h, "__metadata__", json_pack("{ss}", "format", "pt"));
    char *js = json_dumps(h, JSON_COMPACT);
    size_t hl = (strlen(js) + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint8_t len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (uint8_t)(hl >> (8 * k));
    fwrite(len8, 1, 8, f);
    fwrite(js, 1, strlen(js), f);
    for (size_t k = strlen(js); k < hl; k++) fputc(' ', f);
    for (int i = 0; i < n; i++) fwrite(ts[i]->data, 1, ts[i]->nbytes, f);
    fclose(f);
    free(js);
    json_decref(h);
}

static void write_json(const char *dir, const char *name, json_t *j) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    assert_int_equal(json_dump_file(j, p, JSON_INDENT(1)), 0);
    json_decref(j);
}

static void write_config(const char *dir, const model_t *m) {
    const variant_t *v = m->v;
    json_t *c = json_pack("{s[s]s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:b,s:i,s:i}", "architectures", v->archs,
                          "hidden_act", v->act, "model_type", v->model_type, "hidden_size", E, "intermediate_size", FF,
                          "num_hidden_layers", L, "num_attention_heads", NH, "num_key_value_heads", NKV,
                          "max_position_embeddings", 512, "vocab_size", m->n_vocab, "rms_norm_eps", 1e-5,
                          "rope_theta", 500000.0, "tie_word_embeddings", v->tie, "bos_token_id", 1, "eos_token_id", 2);
    if (v->linear_class)
        json_object_set_new(c, "quantization_config", json_pack("{s:s,s:s,s:s}", "quant_method", "bitnet",
                                                                "linear_class", v->linear_class, "quantization_mode",
                                                                "offline"));
    write_json(dir, "config.json", c);
}

/* GPT-2 byte → unicode code point */
static int byte_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    return 256 + n;
}

static void utf8(int cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; o[1] = 0; }
    else { o[0] = (char)(0xc0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3f)); o[2] = 0; }
}

/* a tiny byte-level BPE tokenizer.json: 256 bytes, 2 merges, 2 special tokens = 260 */
static int write_bpe_tokenizer(const char *dir) {
    json_t *vocab = json_object();
    for (int b = 0; b < 256; b++) {
        char s[4];
        utf8(byte_cp(b), s);
        json_object_set_new(vocab, s, json_integer(b));
    }
    json_object_set_new(vocab, "\xc4\xa0" "t", json_integer(256));   /* "Ġt" */
    json_object_set_new(vocab, "he", json_integer(257));
    json_t *tj = json_pack("{s:{s:s,s:o,s:[ss]},s:{s:s,s:b,s:b},s:[{s:i,s:s,s:b},{s:i,s:s,s:b}]}", "model", "type",
                           "BPE", "vocab", vocab, "merges", "\xc4\xa0" " t", "h e", "pre_tokenizer", "type", "ByteLevel",
                           "add_prefix_space", 0, "use_regex", 1, "added_tokens", "id", 258, "content",
                           "<|begin_of_text|>", "special", 1, "id", 259, "content", "<|end_of_text|>", "special", 1);
    write_json(dir, "tokenizer.json", tj);
    write_json(dir, "tokenizer_config.json",
               json_pack("{s:s,s:s,s:s}", "bos_token", "<|begin_of_text|>", "eos_token", "<|end_of_text|>",
                         "chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}"));
    return 260;
}

/* a tiny SentencePiece model: <unk> <s> </s>, 256 byte pieces, a few words = 269 pieces */
static const char *SP_WORDS[] = {"\xe2\x96\x81", "\xe2\x96\x81" "t", "he", "\xe2\x96\x81" "the", "\xe2\x96\x81" "a", "in",
                                 "\xe2\x96\x81" "in", "er", "on", "\xe2\x96\x81" "of"};
static int write_spm_tokenizer(const char *dir) {
    enum { NP = 3 + 256 + 10 };
    Sentencepiece__SentencePiece pcs[NP], *pp[NP];
    char names[NP][16];
    for (int i = 0; i < NP; i++) {
        sentencepiece__sentence_piece__init(&pcs[i]);
        pp[i] = &pcs[i];
        pcs[i].has_type = 1;
        pcs[i].has_score = 1;
        if (i < 3) {
            snprintf(names[i], 16, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
            pcs[i].type = i == 0 ? SENTENCEPIECE__SENTENCE_PIECE__TYPE__UNKNOWN : SENTENCEPIECE__SENTENCE_PIECE__TYPE__CONTROL;
            pcs[i].score = 0;
        } else if (i < 259) {
            snprintf(names[i], 16, "<0x%02X>", i - 3);
            pcs[i].type = SENTENCEPIECE__SENTENCE_PIECE__TYPE__BYTE;
            pcs[i].score = 0;
        } else {
            snprintf(names[i], 16, "%s", SP_WORDS[i - 259]);
            pcs[i].type = SENTENCEPIECE__SENTENCE_PIECE__TYPE__NORMAL;
            pcs[i].score = -(float)(i - 259) - 0.5f;
        }
        pcs[i].piece = names[i];
    }
    Sentencepiece__TrainerSpec ts;
    sentencepiece__trainer_spec__init(&ts);
    ts.has_model_type = 1;
    ts.model_type = SENTENCEPIECE__TRAINER_SPEC__MODEL_TYPE__BPE;
    ts.has_byte_fallback = ts.byte_fallback = 1;
    Sentencepiece__NormalizerSpec ns;
    sentencepiece__normalizer_spec__init(&ns);
    ns.has_add_dummy_prefix = 1;
    ns.add_dummy_prefix = 1;
    Sentencepiece__ModelProto mp;
    sentencepiece__model_proto__init(&mp);
    mp.n_pieces = NP;
    mp.pieces = pp;
    mp.trainer_spec = &ts;
    mp.normalizer_spec = &ns;
    size_t n = sentencepiece__model_proto__get_packed_size(&mp);
    uint8_t *buf = malloc(n);
    sentencepiece__model_proto__pack(&mp, buf);
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizer.model", dir);
    spit(p, buf, n);
    free(buf);
    write_json(dir, "tokenizer_config.json", json_pack("{s:b,s:s,s:s}", "add_bos_token", 1, "bos_token", "<s>",
                                                       "eos_token", "</s>"));
    return NP + 3;   /* config vocab_size: 3 padding tokens */
}

/* the whole checkpoint in dir; tok_json (optional): a real tokenizer.json to copy */
static void make_hf(model_t *m, const char *dir, const variant_t *v, const char *tok_json) {
    mkdir(dir, 0755);
    int n_vocab;
    if (tok_json) {
        size_t len;
        char *s = slurp(tok_json, &len), p[512];
        assert_non_null(s);
        snprintf(p, sizeof p, "%s/tokenizer.json", dir);
        spit(p, s, len);
        free(s);
        char cfg[512];   /* its tokenizer_config.json too, when it has one */
        snprintf(cfg, sizeof cfg, "%.*s/tokenizer_config.json", (int)(strrchr(tok_json, '/') ? strrchr(tok_json, '/') - tok_json : 1),
                 strrchr(tok_json, '/') ? tok_json : ".");
        if ((s = slurp(cfg, &len))) {
            snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
            spit(p, s, len);
            free(s);
        }
        json_error_t je;
        json_t *j = json_load_file(tok_json, 0, &je);
        assert_non_null(j);
        n_vocab = (int)(json_object_size(json_object_get(json_object_get(j, "model"), "vocab")) +
                        json_array_size(json_object_get(j, "added_tokens")));
        json_decref(j);
    } else {
        n_vocab = v->spm ? write_spm_tokenizer(dir) : write_bpe_tokenizer(dir);
    }
    build_model(m, v, n_vocab);
    write_config(dir, m);
    tens_t *ts[64];
    for (int i = 0; i < m->n; i++) ts[i] = &m->t[i];
    char p[512];
    if (!v->sharded) {
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        write_st(p, ts, m->n);
        return;
    }
    int half = m->n / 2;
    json_t *wm = json_object();
    for (int i = 0; i < m->n; i++)
        json_object_set_new(wm, ts[i]->hf, json_string(i < half ? "model-00001-of-00002.safetensors"
                                                                 : "model-00002-of-00002.safetensors"));
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_st(p, ts, half);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_st(p, ts + half, m->n - half);
    write_json(dir, "model.safetensors.index.json", json_pack("{s:{s:i},s:o}", "metadata", "total_size", 0,
                                                              "weight_map", wm));
}

/* ---- expected values, computed here ------------------------------------------------- */

/* HF q/k rows → llama.cpp's permute: w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(w.shape) */
static void permute_rows(const float *src, float *dst, int64_t rows, int64_t cols, int heads) {
    int64_t half = rows / heads / 2;
    for (int h = 0; h < heads; h++)
        for (int two = 0; two < 2; two++)
            for (int64_t i = 0; i < half; i++) {
                int64_t from = (h * 2 + two) * half + i;     /* [h][two][i] */
                int64_t to = (h * half + i) * 2 + two;       /* [h][i][two] */
                memcpy(dst + to * cols, src + from * cols, (size_t)cols * 4);
            }
}

static void permute_trits(const int8_t *src, int8_t *dst, int64_t rows, int64_t cols, int heads) {
    float *a = malloc((size_t)(rows * cols) * 4), *b = malloc((size_t)(rows * cols) * 4);
    for (int64_t i = 0; i < rows * cols; i++) a[i] = src[i];
    permute_rows(a, b, rows, cols, heads);
    for (int64_t i = 0; i < rows * cols; i++) dst[i] = (int8_t)b[i];
    free(a);
    free(b);
}

/* expected trits and scale of a ternary tensor */
static float expect_trits(const tens_t *t, int autobit, int8_t *out) {
    int64_t rows = t->shape[0], cols = t->shape[1], n = rows * cols;
    if (t->trits) {
        if (t->perm) permute_trits(t->trits, out, rows, cols, t->perm);
        else memcpy(out, t->trits, (size_t)n);
        return autobit ? t->ws : 1.0f / t->ws;
    }
    double acc = 0;
    for (int64_t i = 0; i < n; i++) acc += fabs((double)t->master[i]);
    float scale = (float)(acc / (double)n);
    float *w = malloc((size_t)n * 4);
    if (t->perm) permute_rows(t->master, w, rows, cols, t->perm);
    else memcpy(w, t->master, (size_t)n * 4);
    for (int64_t i = 0; i < n; i++) {
        float q = roundf(w[i] / scale);
        out[i] = (int8_t)(q > 1 ? 1 : q < -1 ? -1 : q);
    }
    free(w);
    return scale;
}

static void check_scale(const char *name, int type, float got, float want) {
    if (type != TT_I2_S) want = f16_to_f32(f32_to_f16(want));
    if (fabsf(got - want) > 1e-6f * fabsf(want)) fail_msg("%s: scale %.9g, expected %.9g", name, got, want);
}

/* every tensor of the GGUF against the model it came from */
static void check_gguf(const char *path, const model_t *m, int wtype, int head_type) {
    gguf_t *g = NULL;
    char err[512];
    if (gguf_open(&g, path, err, sizeof err) < 0) fail_msg("%s", err);
    hparams_t hp;
    if (hparams_from_gguf(&hp, g, err, sizeof err) < 0) fail_msg("%s", err);
    assert_int_equal(hp.arch, m->v->arch);
    assert_int_equal(hp.n_layer, L);
    assert_int_equal(hp.n_embd, E);
    assert_int_equal(hp.n_ff, FF);
    assert_int_equal(hp.n_head, NH);
    assert_int_equal(hp.n_head_kv, NKV);
    assert_int_equal(hp.head_dim, HD);
    assert_int_equal(hp.n_vocab, m->n_vocab);
    assert_int_equal(hp.tied, m->v->tie);
    assert_int_equal(hp.act, m->v->arch == ARCH_BITNET_B158 ? ACT_RELU2 : ACT_SILU);
    assert_true(fabsf(hp.norm_eps - 1e-5f) < 1e-9f);
    assert_true(fabsf(hp.rope_base - 500000.0f) < 1.0f);
    const gguf_kv_t *toks = gguf_find(g, "tokenizer.ggml.tokens");
    assert_non_null(toks);
    assert_int_equal(toks->arr_n, (uint64_t)m->n_vocab);
    int autobit = m->v->linear_class && !strcmp(m->v->linear_class, "autobitlinear");
    uint64_t ntens = 0;
    for (int i = 0; i < m->n; i++) {
        const tens_t *t = &m->t[i];
        if (!t->gg[0]) continue;
        ntens++;
        const gguf_tensor_t *gt = gguf_find_tensor(g, t->gg);
        if (!gt) fail_msg("%s: missing in %s", t->gg, path);
        int64_t rows = t->ndim > 1 ? t->shape[0] : 1, cols = t->ndim > 1 ? t->shape[1] : t->shape[0], n = rows * cols;
        assert_int_equal(gt->ne[0], cols);
        assert_int_equal(gt->ne[1], rows);
        if (t->kind == K_NORM) {
            assert_int_equal(gt->type, TT_F32);
            for (int64_t k = 0; k < n; k++)
                if (((const float *)gt->data)[k] != t->master[k]) fail_msg("%s[%lld] differs", t->gg, (long long)k);
        } else if (t->kind == K_EMBD || (t->kind == K_HEAD && head_type == TT_F16)) {
            assert_int_equal(gt->type, TT_F16);
            for (int64_t k = 0; k < n; k++) {
                uint16_t h;
                memcpy(&h, (const uint8_t *)gt->data + 2 * k, 2);
                if (h != f32_to_f16(t->master[k])) fail_msg("%s[%lld]: f16 %04x", t->gg, (long long)k, h);
            }
        } else if (t->kind == K_HEAD) {
            assert_int_equal(gt->type, head_type);
            float *y = malloc((size_t)n * 4);
            assert_int_equal(dequant_rows(gt->type, gt->data, rows, cols, 0, rows, y), 0);
            for (int64_t k = 0; k < n; k++)
                if (fabsf(y[k] - t->master[k]) > 0.004f) fail_msg("%s[%lld]: %g vs %g", t->gg, (long long)k, y[k], t->master[k]);
            free(y);
        } else {
            assert_int_equal(gt->type, wtype);
            int8_t *want = malloc((size_t)n), *got = malloc((size_t)n);
            float scale = expect_trits(t, autobit, want), gs = 0;
            if (wtype == TT_F16) {
                float *y = malloc((size_t)n * 4);
                dequant_rows(TT_F16, gt->data, rows, cols, 0, rows, y);
                for (int64_t k = 0; k < n; k++)
                    if (y[k] != f16_to_f32(f32_to_f16((float)want[k] * scale)))
                        fail_msg("%s[%lld]: %g, expected trit %d × %g", t->gg, (long long)k, y[k], want[k], scale);
                free(y);
            } else {
                assert_int_equal(quant_unpack_trits(wtype, gt->data, rows, cols, 0, rows, got, &gs), 0);
                for (int64_t k = 0; k < n; k++)
                    if (got[k] != want[k])
                        fail_msg("%s: trit [%lld][%lld] = %d, expected %d", t->gg, (long long)(k / cols),
                                 (long long)(k % cols), got[k], want[k]);
                check_scale(t->gg, wtype, gs, scale);
            }
            free(want);
            free(got);
        }
    }
    assert_int_equal(g->n_tensors, ntens);
    gguf_close(&g);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void convert_and_check(const variant_t *v, const char *type, int wtype, const char *head, int head_type) {
    char dir[512], out[600], info[700];
    snprintf(dir, sizeof dir, "%s/hf-%s%s", g_dir, v->name, v->sharded ? "-sh" : "");
    snprintf(out, sizeof out, "%s/%s-%s-%s.gguf", g_dir, v->name, type, head);
    snprintf(info, sizeof info, "%s.info", out);
    model_t m;
    make_hf(&m, dir, v, NULL);
    int rc = run_cmd(convert_main, NULL, NULL, "convert", dir, "-o", out, "--type", type, "--head", head, (char *)NULL);
    assert_int_equal(rc, 0);
    check_gguf(out, &m, wtype, head_type);
    assert_int_equal(run_cmd(cli_info, info, NULL, "info", out, (char *)NULL), 0);
    char *s = slurp(info, NULL), want[64];
    snprintf(want, sizeof want, "architecture:  %s\n", arch_name(v->arch));
    if (!strstr(s, want)) fail_msg("tern info says:\n%s", s);
    free(s);
    model_free(&m);
    rm_rf(dir);
}

static void t_b158(void **st) {
    convert_and_check(&V_B158, "i2_s", TT_I2_S, "f16", TT_F16);
    convert_and_check(&V_B158, "tq1_0", TT_TQ1_0, "f16", TT_F16);
}
static void t_bitnet_spm(void **st) { convert_and_check(&V_BITNET, "tq2_0", TT_TQ2_0, "q8_0", TT_Q8_0); }
static void t_llama(void **st) {
    convert_and_check(&V_LLAMA, "i2_s", TT_I2_S, "f16", TT_F16);
    convert_and_check(&V_LLAMA, "f16", TT_F16, "q8_0", TT_Q8_0);
}
static void t_packed(void **st) {
    convert_and_check(&V_PACK_B158, "i2_s", TT_I2_S, "f16", TT_F16);
    convert_and_check(&V_PACK_LLAMA, "tq2_0", TT_TQ2_0, "f16", TT_F16);
}

/* a sharded checkpoint converts to the same bytes as the single file */
static void t_sharded(void **st) {
    convert_and_check(&V_LLAMA_SH, "i2_s", TT_I2_S, "f16", TT_F16);
    model_t m;
    char d1[512], d2[512], a[600], b[600];
    snprintf(d1, sizeof d1, "%s/cmp-single", g_dir);
    snprintf(d2, sizeof d2, "%s/cmp-sharded", g_dir);
    make_hf(&m, d1, &V_LLAMA, NULL);
    model_free(&m);
    make_hf(&m, d2, &V_LLAMA_SH, NULL);
    model_free(&m);
    snprintf(a, sizeof a, "%s/cmp1.gguf", g_dir);
    snprintf(b, sizeof b, "%s/cmp2.gguf", g_dir);
    assert_int_equal(run_cmd(convert_main, NULL, NULL, "convert", d1, "-o", a, "--name", "x", (char *)NULL), 0);
    assert_int_equal(run_cmd(convert_main, NULL, NULL, "convert", d2, "-o", b, "--name", "x", (char *)NULL), 0);
    size_t la, lb;
    char *sa = slurp(a, &la), *sb = slurp(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(sa, sb, la);
    free(sa);
    free(sb);
    rm_rf(d1);
    rm_rf(d2);
}

/* the SentencePiece vocabulary as llama.cpp writes it */
static void t_spm_vocab(void **st) {
    char dir[512], out[600], err[512];
    snprintf(dir, sizeof dir, "%s/hf-spm", g_dir);
    snprintf(out, sizeof out, "%s/spm.gguf", g_dir);
    model_t m;
    make_hf(&m, dir, &V_BITNET, NULL);
    assert_int_equal(run_cmd(convert_main, NULL, NULL, "convert", dir, "-o", out, (char *)NULL), 0);
    gguf_t *g = NULL;
    if (gguf_open(&g, out, err, sizeof err) < 0) fail_msg("%s", err);
    char model[32];
    assert_int_equal(gguf_get_str(g, "tokenizer.ggml.model", model, sizeof model), 0);
    assert_string_equal(model, "llama");
    const gguf_kv_t *tk = gguf_find(g, "tokenizer.ggml.tokens"), *sc = gguf_find(g, "tokenizer.ggml.scores"),
                    *ty = gguf_find(g, "tokenizer.ggml.token_type");
    assert_non_null(tk);
    assert_non_null(sc);
    assert_non_null(ty);
    assert_int_equal(tk->arr_n, 272);
    assert_int_equal(sc->arr_type, GGUF_F32);
    assert_int_equal(ty->arr_type, GGUF_I32);
    gguf_str_t s = gguf_arr_str(tk, 1);
    assert_true(s.len == 3 && !memcmp(s.ptr, "<s>", 3));
    s = gguf_arr_str(tk, 3 + 0x41);
    assert_true(s.len == 6 && !memcmp(s.ptr, "<0x41>", 6));
    s = gguf_arr_str(tk, 262);
    assert_true(s.len == strlen(SP_WORDS[3]) && !memcmp(s.ptr, SP_WORDS[3], s.len));
    s = gguf_arr_str(tk, 270);
    assert_true(s.len == 8 && !memcmp(s.ptr, "[PAD270]", 8));
    int32_t types[272];   /* arrays in the map are not aligned */
    float scores[272];
    memcpy(types, ty->data, sizeof types);
    memcpy(scores, sc->data, sizeof scores);
    assert_int_equal(types[0], 2);
    assert_int_equal(types[1], 3);
    assert_int_equal(types[3 + 7], 6);
    assert_int_equal(types[260], 1);
    assert_int_equal(types[271], 5);
    assert_true(scores[261] == -2.5f);
    int64_t v;
    assert_int_equal(gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(gguf_get_i64(g, "tokenizer.ggml.unknown_token_id", &v), 0);
    assert_int_equal(v, 0);
    int b = 0;
    assert_int_equal(gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b), 0);
    assert_true(b);
    assert_int_equal(gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &b), 0);
    assert_true(b);
    gguf_close(&g);
    model_free(&m);
    rm_rf(dir);
}

/* quantize: i2_s → tq1_0 → tq2_0 → i2_s keeps every trit; f16 = trit × scale, and f16 → i2_s
 * finds the trits and the scale again; --head q8_0 adds a q8_0 head to a tied model */
static void t_quantize(void **st) {
    enum { NF = 6 };
    char dir[512], f[NF][600], err[512];
    snprintf(dir, sizeof dir, "%s/hf-q", g_dir);
    const char *names[NF] = {"q-i2s", "q-tq1", "q-tq2", "q-i2s-back", "q-f16", "q-f16-i2s"};
    const char *from[NF] = {NULL, "q-i2s", "q-tq1", "q-tq2", "q-i2s", "q-f16"};
    const char *to[NF] = {NULL, "tq1_0", "tq2_0", "i2_s", "f16", "i2_s"};
    int types[NF] = {TT_I2_S, TT_TQ1_0, TT_TQ2_0, TT_I2_S, TT_F16, TT_I2_S};
    for (int k = 0; k < NF; k++) snprintf(f[k], sizeof f[k], "%s/%s.gguf", g_dir, names[k]);
    model_t m;
    make_hf(&m, dir, &V_B158, NULL);
    assert_int_equal(run_cmd(convert_main, NULL, NULL, "convert", dir, "-o", f[0], "--type", "i2_s", (char *)NULL), 0);
    for (int k = 1; k < NF; k++) {
        char src[600];
        snprintf(src, sizeof src, "%s/%s.gguf", g_dir, from[k]);
        assert_int_equal(run_cmd(quantize_main, NULL, NULL, "quantize", src, f[k], to[k], (char *)NULL), 0);
    }
    check_gguf(f[1], &m, TT_TQ1_0, TT_F16);
    check_gguf(f[2], &m, TT_TQ2_0, TT_F16);
    gguf_t *g[NF] = {0};
    for (int k = 0; k < NF; k++)
        if (gguf_open(&g[k], f[k], err, sizeof err) < 0) fail_msg("%s", err);
    for (uint64_t i = 0; i < g[0]->n_tensors; i++) {
        const gguf_tensor_t *t0 = &g[0]->tensors[i];
        int64_t rows = t0->ne[1], cols = t0->ne[0];
        for (int k = 1; k < NF; k++) {
            const gguf_tensor_t *tk = gguf_find_tensor(g[k], t0->name);
            assert_non_null(tk);
            if (t0->type != TT_I2_S) {   /* norms, embedding: copied byte for byte */
                assert_int_equal(tk->type, t0->type);
                assert_memory_equal(tk->data, t0->data, t0->nbytes);
                continue;
            }
            assert_int_equal(tk->type, types[k]);
            int8_t *a = malloc((size_t)(rows * cols)), *b = malloc((size_t)(rows * cols));
            float sa, sb;
            quant_unpack_trits(TT_I2_S, t0->data, rows, cols, 0, rows, a, &sa);
            if (tk->type == TT_F16) {
                float *y = malloc((size_t)(rows * cols) * 4);
                dequant_rows(TT_F16, tk->data, rows, cols, 0, rows, y);
                for (int64_t e = 0; e < rows * cols; e++)
                    if (y[e] != f16_to_f32(f32_to_f16(a[e] * sa))) fail_msg("%s[%lld] f16 %g", tk->name, (long long)e, y[e]);
                free(y);
            } else {
                quant_unpack_trits(tk->type, tk->data, rows, cols, 0, rows, b, &sb);
                if (memcmp(a, b, (size_t)(rows * cols))) fail_msg("%s: trits changed in %s", tk->name, names[k]);
                /* every step after the first went through an f16 scale */
                float want = f16_to_f32(f32_to_f16(sa));
                if (sb != want) fail_msg("%s in %s: scale %.9g, expected %.9g", tk->name, names[k], sb, want);
            }
            free(a);
            free(b);
        }
    }
    /* TQ blocks with different scales: re-quantised by absmean over the dequantised values */
    char mixed[600], mixed_out[600];
    snprintf(mixed, sizeof mixed, "%s/q-mixed.gguf", g_dir);
    snprintf(mixed_out, sizeof mixed_out, "%s/q-mixed-i2s.gguf", g_dir);
    const gguf_tensor_t *tq = gguf_find_tensor(g[2], "blk.0.attn_q.weight");
    size_t flen;
    uint8_t *bytes = (uint8_t *)slurp(f[2], &flen);
    size_t off = (size_t)((const uint8_t *)tq->data - g[2]->map);
    uint16_t d2 = f32_to_f16(3.0f * f16_to_f32((uint16_t)(bytes[off + 64] | bytes[off + 65] << 8)));
    memcpy(bytes + off + 64, &d2, 2);   /* block 0's d (TQ2_0: qs[64], then d) */
    spit(mixed, bytes, flen);
    free(bytes);
    assert_int_equal(run_cmd(quantize_main, NULL, NULL, "quantize", mixed, mixed_out, "i2_s", (char *)NULL), 0);
    gguf_t *gm = NULL, *go = NULL;
    if (gguf_open(&gm, mixed, err, sizeof err) < 0 || gguf_open(&go, mixed_out, err, sizeof err) < 0) fail_msg("%s", err);
    const gguf_tensor_t *tm = gguf_find_tensor(gm, "blk.0.attn_q.weight"), *to2 = gguf_find_tensor(go, "blk.0.attn_q.weight");
    int64_t nq = tm->ne[0] * tm->ne[1];
    float *yq = malloc((size_t)nq * 4), so;
    int8_t *tr = malloc((size_t)nq);
    dequant_rows(TT_TQ2_0, tm->data, tm->ne[1], tm->ne[0], 0, tm->ne[1], yq);
    double acc = 0;
    for (int64_t k = 0; k < nq; k++) acc += fabs((double)yq[k]);
    float sc = (float)(acc / (double)nq);
    quant_unpack_trits(TT_I2_S, to2->data, tm->ne[1], tm->ne[0], 0, tm->ne[1], tr, &so);
    check_scale("mixed", TT_I2_S, so, sc);
    for (int64_t k = 0; k < nq; k++) {
        float q = roundf(yq[k] / sc);
        if (tr[k] != (q > 1 ? 1 : q < -1 ? -1 : q)) fail_msg("mixed-scale trit %lld: %d for %g", (long long)k, tr[k], yq[k]);
    }
    free(yq);
    free(tr);
    gguf_close(&gm);
    gguf_close(&go);
    for (int k = 0; k < NF; k++) gguf_close(&g[k]);
    /* --head q8_0 on a tied model: output.weight appears, token_embd stays F16 */
    char hq[600];
    snprintf(hq, sizeof hq, "%s/q-head.gguf", g_dir);
    assert_int_equal(run_cmd(quantize_main, NULL, NULL, "quantize", f[0], hq, "i2_s", "--head", "q8_0", (char *)NULL), 0);
    gguf_t *h = NULL;
    if (gguf_open(&h, hq, err, sizeof err) < 0) fail_msg("%s", err);
    const gguf_tensor_t *out = gguf_find_tensor(h, "output.weight"), *emb = gguf_find_tensor(h, "token_embd.weight");
    assert_non_null(out);
    assert_non_null(emb);
    assert_int_equal(out->type, TT_Q8_0);
    assert_int_equal(emb->type, TT_F16);
    hparams_t hp;
    if (hparams_from_gguf(&hp, h, err, sizeof err) < 0) fail_msg("%s", err);
    assert_false(hp.tied);
    float *y = malloc((size_t)(m.n_vocab * E) * 4);
    dequant_rows(TT_Q8_0, out->data, m.n_vocab, E, 0, m.n_vocab, y);
    for (int64_t k = 0; k < (int64_t)m.n_vocab * E; k++)
        if (fabsf(y[k] - m.t[0].master[k]) > 0.004f) fail_msg("head[%lld] %g vs %g", (long long)k, y[k], m.t[0].master[k]);
    free(y);
    gguf_close(&h);
    model_free(&m);
    rm_rf(dir);
}

/* ---- bad input ------------------------------------------------------------------------ */

/* convert DIR must fail with exactly one stderr line containing `want`, and leave no file */
static void expect_fail(const char *dir, const char *want) {
    char out[600], errp[600];
    snprintf(out, sizeof out, "%s/bad.gguf", g_dir);
    snprintf(errp, sizeof errp, "%s/bad.err", g_dir);
    int rc = run_cmd(convert_main, NULL, errp, "convert", dir, "-o", out, (char *)NULL);
    char *e = slurp(errp, NULL);
    if (rc == 0) fail_msg("convert accepted a bad checkpoint (%s)", want);
    int lines = 0;
    for (char *p = e; *p; p++) lines += *p == '\n';
    if (!strstr(e, want) || lines != 1) fail_msg("expected one line with '%s', got: %s", want, e);
    free(e);
    char tmp[620];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    assert_int_not_equal(access(out, F_OK), 0);
    assert_int_not_equal(access(tmp, F_OK), 0);
}

static void edit_config(const char *dir, const char *key, json_t *val) {
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", dir);
    json_error_t je;
    json_t *c = json_load_file(p, 0, &je);
    if (val) json_object_set_new(c, key, val);
    else json_object_del(c, key);
    json_dump_file(c, p, 0);
    json_decref(c);
}

/* converts dir (with its config.json as edited) to out and reads its hparams back */
static gguf_t *convert_rope(const char *dir, const char *out, hparams_t *hp) {
    assert_int_equal(run_cmd(convert_main, NULL, NULL, "convert", dir, "-o", out, (char *)NULL), 0);
    gguf_t *g = NULL;
    char err[512];
    if (gguf_open(&g, out, err, sizeof err) < 0) fail_msg("%s", err);
    if (hparams_from_gguf(hp, g, err, sizeof err) < 0) fail_msg("%s", err);
    return g;
}

/* config.json's rope_scaling: linear and yarn become llama.cpp's GGUF keys, llama3 the
 * rope_freqs.weight tensor (checked against the formula written here: llama.cpp's
 * convert_hf_to_gguf), the others are refused with one line naming the type */
static void t_rope_scaling(void **st) {
    (void)st;
    char dir[512], out[600];
    snprintf(dir, sizeof dir, "%s/hf-rope", g_dir);
    snprintf(out, sizeof out, "%s/rope.gguf", g_dir);
    model_t m;
    make_hf(&m, dir, &V_LLAMA, NULL);
    hparams_t hp;
    edit_config(dir, "rope_scaling", json_pack("{s:s,s:f}", "rope_type", "linear", "factor", 2.0));
    gguf_t *g = convert_rope(dir, out, &hp);
    assert_int_equal(hp.rope.type, ROPE_SCALING_LINEAR);
    assert_float_equal(hp.rope.freq_scale, 0.5f, 0);
    assert_null(gguf_find_tensor(g, "rope_freqs.weight"));
    gguf_close(&g);
    edit_config(dir, "rope_scaling", json_pack("{s:s,s:f,s:i,s:f,s:f,s:f}", "type", "yarn", "factor", 4.0,
                                               "original_max_position_embeddings", 128, "attention_factor", 1.25,
                                               "beta_fast", 16.0, "beta_slow", 2.0));
    g = convert_rope(dir, out, &hp);
    assert_int_equal(hp.rope.type, ROPE_SCALING_YARN);
    assert_float_equal(hp.rope.freq_scale, 0.25f, 0);
    assert_int_equal(hp.rope.n_ctx_orig, 128);
    assert_float_equal(hp.rope.attn_factor, 1.25f, 0);
    assert_float_equal(hp.rope.beta_fast, 16.0f, 0);
    assert_float_equal(hp.rope.beta_slow, 2.0f, 0);
    assert_true(hp.rope.ext_factor < 0);
    gguf_close(&g);
    /* llama3: wavelengths 2π·base^(2i/d) below old/high kept, above old/low divided by factor */
    const double factor = 8, low = 1, high = 4, old = 64, base = 500000;
    edit_config(dir, "rope_scaling", json_pack("{s:s,s:f,s:f,s:f,s:i}", "rope_type", "llama3", "factor", factor,
                                               "low_freq_factor", low, "high_freq_factor", high,
                                               "original_max_position_embeddings", (int)old));
    g = convert_rope(dir, out, &hp);
    assert_int_equal(hp.rope.type, ROPE_SCALING_NONE);
    const gguf_tensor_t *t = gguf_find_tensor(g, "rope_freqs.weight");
    assert_non_null(t);
    assert_int_equal(t->type, TT_F32);
    assert_int_equal(t->ne[0], HD / 2);
    int kept = 0, divided = 0, smooth = 0;
    for (int i = 0; i < HD / 2; i++) {
        double wavelen = 2 * 3.14159265358979323846 * pow(base, 2.0 * i / HD), want;
        if (wavelen < old / high) want = 1, kept++;
        else if (wavelen > old / low) want = factor, divided++;
        else {
            double sm = (old / wavelen - low) / (high - low);
            want = 1 / ((1 - sm) / factor + sm), smooth++;
        }
        double got = ((const float *)t->data)[i];
        if (fabs(got - want) > 1e-6 * want) fail_msg("rope_freqs[%d] = %.9g, expected %.9g", i, got, want);
    }
    assert_true(kept > 0 && divided > 0 && smooth > 0);
    gguf_close(&g);
    /* refused: unknown types, a missing or bad factor, not an object */
    edit_config(dir, "rope_scaling", json_pack("{s:s,s:f}", "rope_type", "dynamic", "factor", 2.0));
    expect_fail(dir, "rope_scaling type 'dynamic' is not supported");
    edit_config(dir, "rope_scaling", json_pack("{s:s,s:f}", "type", "longrope", "factor", 2.0));
    expect_fail(dir, "rope_scaling type 'longrope' is not supported");
    edit_config(dir, "rope_scaling", json_pack("{s:s}", "rope_type", "linear"));
    expect_fail(dir, "rope_scaling needs 'factor'");
    edit_config(dir, "rope_scaling", json_pack("{s:s,s:f}", "rope_type", "yarn", "factor", -4.0));
    expect_fail(dir, "rope_scaling 'factor' is not a number > 0");
    edit_config(dir, "rope_scaling", json_pack("{s:s,s:f,s:s}", "rope_type", "yarn", "factor", 4.0, "beta_fast", "x"));
    expect_fail(dir, "rope_scaling 'beta_fast' is not a number > 0");
    edit_config(dir, "rope_scaling", json_string("yarn"));
    expect_fail(dir, "rope_scaling is not an object");
    model_free(&m);
    rm_rf(dir);
}

static void t_bad_checkpoints(void **st) {
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/hf-bad", g_dir);
    model_t m;
    make_hf(&m, dir, &V_LLAMA, NULL);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    size_t len;
    char *orig = slurp(p, &len);
    /* truncated data */
    spit(p, orig, len - 100);
    expect_fail(dir, "outside the");
    /* header length past EOF */
    uint8_t big[16] = {0, 0, 0, 0, 0, 1, 0, 0, '{', '}'};
    spit(p, big, sizeof big);
    expect_fail(dir, "runs past the end of the file");
    spit(p, orig, len);
    /* missing config keys, unknown architecture */
    edit_config(dir, "hidden_size", NULL);
    expect_fail(dir, "missing key 'hidden_size'");
    edit_config(dir, "hidden_size", json_integer(E));
    edit_config(dir, "architectures", json_pack("[s]", "GPT2LMHeadModel"));
    expect_fail(dir, "unknown architecture 'GPT2LMHeadModel'");
    edit_config(dir, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    /* a tensor of the wrong shape, a missing tensor */
    edit_config(dir, "intermediate_size", json_integer(FF * 2));
    expect_fail(dir, "mlp.gate_proj.weight: shape [512, 256], expected [1024, 256]");
    edit_config(dir, "intermediate_size", json_integer(FF));
    edit_config(dir, "num_hidden_layers", json_integer(L + 1));
    expect_fail(dir, "'model.layers.2.input_layernorm.weight' (for blk.2.attn_norm.weight) is not in the checkpoint");
    edit_config(dir, "num_hidden_layers", json_integer(L));
    /* no tokenizer */
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    unlink(p);
    expect_fail(dir, "no tokenizer.json or tokenizer.model");
    free(orig);
    model_free(&m);
    rm_rf(dir);
}

/* the header parser on crafted buffers */
static int st_try(const char *json, size_t data_len, char *err) {
    size_t hl = strlen(json), n = 8 + hl + data_len;
    uint8_t *b = calloc(1, n);
    for (int k = 0; k < 8; k++) b[k] = (uint8_t)(hl >> (8 * k));
    memcpy(b + 8, json, hl);
    st_file_t *f = NULL;
    int rc = st_open_mem(&f, b, n, "x.safetensors", err, 512);
    if (rc == 0) {
        assert_non_null(f);
        st_close(&f);
    } else {
        assert_null(f);
    }
    free(b);
    return rc;
}

static void t_safetensors_header(void **st) {
    char err[512];
    assert_int_equal(st_try("{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                            "\"__metadata__\":{\"format\":\"pt\"}}", 12, err), 0);
    struct { const char *json; size_t data; const char *want; } bad[] = {
        {"{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "unknown dtype 'F8_E4M3'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "need 12 bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "outside the 4 data bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, "shape[0]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}", 0, "shape[0]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing dtype, shape or data_offsets"},
        {"{\"a\":1}", 0, "not an object"},
        {"[1,2]", 0, "not a JSON object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{}}", 4, "header JSON"},
        {"{\"a\"", 0, "header JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        int rc = st_try(bad[i].json, bad[i].data, err);
        if (rc >= 0 || !strstr(err, bad[i].want) || strchr(err, '\n'))
            fail_msg("case %zu: rc %d, err '%s', wanted '%s'", i, rc, err, bad[i].want);
    }
    uint8_t tiny[4] = {1, 2, 3, 4};
    st_file_t *f = NULL;
    assert_true(st_open_mem(&f, tiny, sizeof tiny, "t", err, sizeof err) < 0);
    assert_non_null(strstr(err, "too short"));
}

static void t_packed_bad_code(void **st) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/hf-badcode", g_dir);
    model_t m;
    make_hf(&m, dir, &V_PACK_B158, NULL);
    /* set one code to 3 (unused) in the first packed tensor and rewrite */
    for (int i = 0; i < m.n; i++)
        if (!strcmp(m.t[i].dtype, "U8")) { m.t[i].data[5] |= 3; break; }
    tens_t *ts[64];
    for (int i = 0; i < m.n; i++) ts[i] = &m.t[i];
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_st(p, ts, m.n);
    expect_fail(dir, "packed code 3");
    model_free(&m);
    rm_rf(dir);
}

/* ---- main --------------------------------------------------------------------------- */

static const variant_t *variant_by_name(const char *s) {
    const variant_t *all[] = {&V_B158, &V_BITNET, &V_LLAMA, &V_PACK_B158, &V_PACK_LLAMA};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(all[i]->name, s)) return all[i];
    return NULL;
}

int main(int argc, char **argv) {
    setenv("TERN_PROGRESS", "0", 1);
    if (argc >= 4 && !strcmp(argv[1], "--make-hf")) {   /* for tests/integration/convert.sh */
        const variant_t *v = variant_by_name(argv[3]);
        if (!v) { fprintf(stderr, "unknown variant %s\n", argv[3]); return 2; }
        model_t m;
        make_hf(&m, argv[2], v, argc > 4 ? argv[4] : NULL);
        model_free(&m);
        return 0;
    }
    snprintf(g_dir, sizeof g_dir, "%s/tern_convert_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_dir)) { perror("mkdtemp"); return 1; }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_safetensors_header), cmocka_unit_test(t_b158),      cmocka_unit_test(t_bitnet_spm),
        cmocka_unit_test(t_llama),              cmocka_unit_test(t_packed),    cmocka_unit_test(t_sharded),
        cmocka_unit_test(t_spm_vocab),          cmocka_unit_test(t_quantize),  cmocka_unit_test(t_bad_checkpoints),
        cmocka_unit_test(t_packed_bad_code),    cmocka_unit_test(t_rope_scaling),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    rm_rf(g_dir);
    printf("%d passed, %d failed\n", (int)(sizeof tests / sizeof tests[0]) - failed, failed);
    return failed ? 1 : 0;
}
