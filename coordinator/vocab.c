/* vocab: writes tokenizer metadata (tokenizer.ggml.*) into a GGUF being made — imported from a
 * Hugging Face tokenizer.json (+ tokenizer_config.json beside it) the way llama.cpp's
 * convert_hf_to_gguf.py writes it, copied from another GGUF, or generated: a small byte-level
 * BPE learned from a built-in English text, for synthetic models. Not here: tokenizing
 * (tokenizer.c); SentencePiece/Unigram tokenizer.json import (only byte-level BPE). */
#define _GNU_SOURCE
#include "coordinator/vocab.h"
#include "coordinator/tokenizer.h"
#include "core/err.h"
#include "core/hash.h"
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TT_NORMAL = 1, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5 };

/* the Split regexes of known Hugging Face pre-tokenizers → llama.cpp's `pre` names */
static const struct { const char *regex, *pre; } HF_PRE[] = {
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
     "|\\s+(?!\\S)|\\s+", "llama-bpe"},
    {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
     "|\\s+(?!\\S)|\\s+", "qwen2"},
    {NULL, NULL},
};

/* ---- Hugging Face import ------------------------------------------------------ */

/* "pre" for the tokenizer.json pre_tokenizer, or NULL when it is not one we know */
static const char *detect_pre(json_t *pt) {
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type) return NULL;
    if (!strcmp(type, "ByteLevel")) return json_is_false(json_object_get(pt, "use_regex")) ? NULL : "gpt-2";
    if (strcmp(type, "Sequence")) return NULL;
    json_t *seq = json_object_get(pt, "pretokenizers");
    const char *pre = NULL;
    int bytelevel = 0;
    size_t i;
    json_t *p;
    json_array_foreach(seq, i, p) {
        const char *ty = json_string_value(json_object_get(p, "type"));
        if (!ty) return NULL;
        if (!strcmp(ty, "ByteLevel")) { bytelevel = 1; continue; }
        if (strcmp(ty, "Split") || pre) return NULL;
        const char *re = json_string_value(json_object_get(json_object_get(p, "pattern"), "Regex"));
        for (int k = 0; re && HF_PRE[k].regex; k++)
            if (!strcmp(re, HF_PRE[k].regex)) pre = HF_PRE[k].pre;
        if (!pre) return NULL;
    }
    return bytelevel ? pre : NULL;
}

static const char *token_str(json_t *v) {   /* "x" or {"content": "x"} */
    if (json_is_string(v)) return json_string_value(v);
    return json_string_value(json_object_get(v, "content"));
}

static int looks_special(const char *s) {
    size_t n = strlen(s);
    return (n >= 4 && !strncmp(s, "<|", 2) && !strcmp(s + n - 2, "|>")) || !strcmp(s, "<pad>") || !strcmp(s, "<mask>");
}

typedef struct hfv {
    int n;
    const char **tok;
    uint64_t *len;
    int32_t *type;
    char *pads;      /* "[PADn]" names for ids with no token */
} hfv_t;

static void hfv_free(hfv_t *v) { free(v->tok); free(v->len); free(v->type); free(v->pads); }

static int hf_tokens(json_t *root, hfv_t *v, char *err, size_t errlen) {
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab)) return err_set(err, errlen, TERN_EFORMAT, "vocab: tokenizer.json has no model.vocab object");
    long long max = -1;
    const char *k;
    json_t *val;
    size_t i;
    json_object_foreach(vocab, k, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= (1 << 24))
            return err_set(err, errlen, TERN_EFORMAT, "vocab: model.vocab['%.40s'] is not a valid id", k);
        if (json_integer_value(val) > max) max = json_integer_value(val);
    }
    json_array_foreach(added, i, val) {
        json_t *id = json_object_get(val, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 24) ||
            !json_is_string(json_object_get(val, "content")))
            return err_set(err, errlen, TERN_EFORMAT, "vocab: added_tokens[%zu] has no valid id/content", i);
        if (json_integer_value(id) > max) max = json_integer_value(id);
    }
    if (max < 0) return err_set(err, errlen, TERN_EFORMAT, "vocab: tokenizer.json has no tokens");
    v->n = (int)max + 1;
    v->tok = calloc((size_t)v->n, sizeof *v->tok);
    v->len = calloc((size_t)v->n, sizeof *v->len);
    v->type = calloc((size_t)v->n, sizeof *v->type);
    v->pads = malloc((size_t)v->n * 16);
    if (!v->tok || !v->len || !v->type || !v->pads) return err_set(err, errlen, TERN_ENOMEM, "vocab: out of memory");
    json_object_foreach(vocab, k, val) {
        int id = (int)json_integer_value(val);
        v->tok[id] = k;
        v->len[id] = strlen(k);
        v->type[id] = TT_NORMAL;
    }
    json_array_foreach(added, i, val) {
        int id = (int)json_integer_value(json_object_get(val, "id"));
        json_t *c = json_object_get(val, "content");
        v->tok[id] = json_string_value(c);
        v->len[id] = json_string_length(c);
        v->type[id] = json_is_true(json_object_get(val, "special")) || looks_special(v->tok[id]) ? TT_CONTROL
                                                                                               : TT_USER_DEFINED;
    }
    for (int id = 0; id < v->n; id++) {
        if (v->tok[id]) continue;
        char *p = v->pads + (size_t)id * 16;
        v->len[id] = (uint64_t)snprintf(p, 16, "[PAD%d]", id);
        v->tok[id] = p;
        v->type[id] = TT_UNUSED;
    }
    return 0;
}

static int hf_merges(gguf_writer_t *w, json_t *merges, char *err, size_t errlen) {
    size_t n = json_array_size(merges), i;
    char **s = calloc(n ? n : 1, sizeof *s);
    uint64_t *len = calloc(n ? n : 1, sizeof *len);
    int rc = 0;
    if (!s || !len) { rc = err_set(err, errlen, TERN_ENOMEM, "vocab: out of memory for merges"); goto done; }
    json_t *m;
    json_array_foreach(merges, i, m) {
        const char *a = NULL, *b = NULL;
        if (json_is_string(m)) {
            s[i] = strdup(json_string_value(m));
        } else if (json_array_size(m) == 2 && (a = json_string_value(json_array_get(m, 0))) &&
                   (b = json_string_value(json_array_get(m, 1)))) {
            if (asprintf(&s[i], "%s %s", a, b) < 0) s[i] = NULL;
        } else {
            rc = err_set(err, errlen, TERN_EFORMAT, "vocab: model.merges[%zu] is neither \"a b\" nor [a, b]", i);
            goto done;
        }
        if (!s[i]) { rc = err_set(err, errlen, TERN_ENOMEM, "vocab: out of memory for merges"); goto done; }
        len[i] = strlen(s[i]);
    }
    gguf_writer_set_arr_strn(w, "tokenizer.ggml.merges", (const char *const *)s, len, n);
done:
    for (size_t k = 0; s && k < n; k++) free(s[k]);
    free(s);
    free(len);
    return rc;
}

static int find_id(const hfv_t *v, const char *s) {
    if (!s) return -1;
    for (int i = 0; i < v->n; i++)
        if (v->len[i] == strlen(s) && !memcmp(v->tok[i], s, v->len[i])) return i;
    return -1;
}

/* bos/eos/pad ids, add_bos/add_eos and chat_template from tokenizer_config.json beside the json */
static void hf_config(gguf_writer_t *w, const char *tokenizer_json, const hfv_t *v, const char *pre) {
    char path[4096];
    const char *slash = strrchr(tokenizer_json, '/');
    int dl = slash ? (int)(slash - tokenizer_json) : 1;
    snprintf(path, sizeof path, "%.*s/tokenizer_config.json", dl, slash ? tokenizer_json : ".");
    json_error_t je;
    json_t *c = json_load_file(path, JSON_DECODE_INT_AS_REAL, &je);   /* model_max_length can be 1e30 */
    static const struct { const char *cfg, *key; } ids[] = {
        {"bos_token", "tokenizer.ggml.bos_token_id"}, {"eos_token", "tokenizer.ggml.eos_token_id"},
        {"pad_token", "tokenizer.ggml.padding_token_id"}, {"unk_token", "tokenizer.ggml.unknown_token_id"}};
    for (int k = 0; c && k < 4; k++) {
        int id = find_id(v, token_str(json_object_get(c, ids[k].cfg)));
        if (id >= 0) gguf_writer_set_u32(w, ids[k].key, (uint32_t)id);
    }
    /* fill-in-the-middle tokens by their text, as llama.cpp's loader finds them (its converter
     * writes these keys only for some models; a tern file names them all) */
    for (int k = 0; k < TOKENIZER_FIM_N; k++) {
        const char *const *names = tokenizer_fim_names(k);
        int id = -1;
        for (int i = 0; id < 0 && names[i]; i++) id = find_id(v, names[i]);
        if (id >= 0) gguf_writer_set_u32(w, tokenizer_fim_key(k), (uint32_t)id);
    }
    json_t *ab = c ? json_object_get(c, "add_bos_token") : NULL;
    if (json_is_boolean(ab)) gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", json_is_true(ab));
    else if (!strcmp(pre, "llama-bpe") && c && json_object_get(c, "bos_token"))
        gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1);   /* Llama 3 prepends <|begin_of_text|> */
    json_t *ae = c ? json_object_get(c, "add_eos_token") : NULL;
    if (json_is_boolean(ae)) gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", json_is_true(ae));
    json_t *ct = c ? json_object_get(c, "chat_template") : NULL;
    if (json_is_array(ct)) {   /* [{name, template}, ...]: the "default" one */
        size_t i;
        json_t *e, *pick = NULL;
        json_array_foreach(ct, i, e) if (!pick || !strcmp(json_string_value(json_object_get(e, "name")) ?: "", "default")) pick = e;
        ct = pick ? json_object_get(pick, "template") : NULL;
    }
    if (json_is_string(ct)) gguf_writer_set_str(w, "tokenizer.chat_template", json_string_value(ct));
    json_decref(c);
}

int vocab_import_hf(gguf_writer_t *w, const char *tokenizer_json, int *n_vocab, char *err, size_t errlen) {
    TERN_ASSERT(w && tokenizer_json);
    json_error_t je;
    json_t *root = json_load_file(tokenizer_json, 0, &je);
    if (!root)
        return err_set(err, errlen, TERN_EFORMAT, "vocab: %s:%d: %s", tokenizer_json, je.line, je.text);
    int rc = 0;
    hfv_t v = {0};
    json_t *model = json_object_get(root, "model");
    const char *type = json_string_value(json_object_get(model, "type"));
    if (!type || strcmp(type, "BPE") || json_is_true(json_object_get(model, "byte_fallback"))) {
        rc = err_set(err, errlen, TERN_ENOTSUP, "vocab: %s: only byte-level BPE tokenizers are supported (model.type %s%s)",
                     tokenizer_json, type ? type : "?",
                     json_is_true(json_object_get(model, "byte_fallback")) ? ", byte_fallback" : "");
        goto done;
    }
    const char *pre = detect_pre(json_object_get(root, "pre_tokenizer"));
    if (!pre) {
        rc = err_set(err, errlen, TERN_ENOTSUP, "vocab: %s: unrecognised pre_tokenizer (known: Llama 3, Qwen 2, GPT-2)",
                     tokenizer_json);
        goto done;
    }
    if ((rc = hf_tokens(root, &v, err, errlen)) < 0) goto done;
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    gguf_writer_set_arr_strn(w, "tokenizer.ggml.tokens", v.tok, v.len, (uint64_t)v.n);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, v.type, (uint64_t)v.n);
    if ((rc = hf_merges(w, json_object_get(model, "merges"), err, errlen)) < 0) goto done;
    hf_config(w, tokenizer_json, &v, pre);
    if (n_vocab) *n_vocab = v.n;
done:
    hfv_free(&v);
    json_decref(root);
    return rc;
}

/* ---- copy ------------------------------------------------------------------------ */

int vocab_copy_gguf(gguf_writer_t *w, const char *gguf_path, int *n_vocab, char *err, size_t errlen) {
    gguf_t *g = NULL;
    int rc = gguf_open(&g, gguf_path, err, errlen);
    if (rc < 0) return rc;
    const gguf_kv_t *kt = gguf_find(g, "tokenizer.ggml.tokens");
    if (!kt || kt->type != GGUF_ARR || kt->arr_type != GGUF_STR) {
        gguf_close(&g);
        return err_set(err, errlen, TERN_ENOTFOUND, "vocab: %s has no tokenizer.ggml.tokens", gguf_path);
    }
    gguf_writer_copy_kv(w, g, "tokenizer.");
    if (n_vocab) *n_vocab = (int)kt->arr_n;
    gguf_close(&g);
    return 0;
}

/* ---- generated byte-level BPE ------------------------------------------------------ */

static const char TRAIN_TEXT[] =
    "The river ran past the old mill and under the stone bridge, where the children of the village "
    "gathered every summer evening to watch the water turn from green to gold. Nobody remembered who had "
    "built the bridge, but everyone agreed that it was older than the church, older than the school, and "
    "perhaps older than the village itself. In the spring the water rose high enough to touch the arches, "
    "and the miller would stand at his door and count the days until the wheel could turn again.\n\n"
    "A small machine can still do useful work when it is given a clear task and enough time to finish it. "
    "The engine reads its weights from memory, one layer after another, and the speed of the whole system "
    "is set by how quickly those numbers can be moved. If the weights are stored with three values each, "
    "the model takes far less space, and the processor spends more of its time computing and less of its "
    "time waiting. This is the idea behind ternary networks: they are simple, they are fast, and they are "
    "surprisingly good at the things people ask them to do. In 2024 and 2025 several teams trained models "
    "with 1, 2 and 3 billion parameters this way, and the results were better than many expected.\n";

static int byte_cp(int b) {   /* GPT-2 bytes_to_unicode */
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    return 256 + n;
}

/* ASCII approximation of the llama3 pre-tokenizer: " word", digits by 3, " punct", spaces */
static size_t next_word(const char *s, size_t n, size_t i) {
    size_t j = i;
    int c = (unsigned char)s[j];
    if (isdigit(c)) {
        while (j < n && j < i + 3 && isdigit((unsigned char)s[j])) j++;
        return j;
    }
    if (!isspace(c) || c == ' ') {
        size_t k = (!isalpha(c) && j + 1 < n && isalpha((unsigned char)s[j + 1])) ? j + 1 : j;
        if (isalpha((unsigned char)s[k])) {
            while (k < n && isalpha((unsigned char)s[k])) k++;
            return k;
        }
    }
    if (c == ' ' && j + 1 < n && ispunct((unsigned char)s[j + 1])) j++;
    if (ispunct((unsigned char)s[j])) {
        while (j < n && ispunct((unsigned char)s[j])) j++;
        while (j < n && (s[j] == '\n' || s[j] == '\r')) j++;
        return j;
    }
    while (j < n && isspace((unsigned char)s[j])) j++;
    return j > i ? j : i + 1;
}

typedef struct gword { int32_t sym[64]; int n, count; } gword_t;
typedef struct gtok { char *s; size_t len; } gtok_t;

static int collect_words(gword_t *words, int maxw) {
    int nw = 0;
    size_t n = sizeof TRAIN_TEXT - 1;
    for (size_t i = 0; i < n;) {
        size_t j = next_word(TRAIN_TEXT, n, i);
        size_t len = j - i < 64 ? j - i : 64;
        int found = -1;
        for (int k = 0; k < nw && found < 0; k++) {
            if (words[k].n != (int)len) continue;
            int same = 1;
            for (size_t q = 0; q < len && same; q++) same = words[k].sym[q] == (uint8_t)TRAIN_TEXT[i + q];
            if (same) found = k;
        }
        if (found >= 0) words[found].count++;
        else if (nw < maxw) {
            for (size_t q = 0; q < len; q++) words[nw].sym[q] = (uint8_t)TRAIN_TEXT[i + q];
            words[nw].n = (int)len;
            words[nw++].count = 1;
        }
        i = j;
    }
    return nw;
}

typedef struct gpair { uint64_t key; int count; } gpair_t;
static int cmp_pair(const void *x, const void *y) {
    uint64_t a = ((const gpair_t *)x)->key, b = ((const gpair_t *)y)->key;
    return a < b ? -1 : a > b;
}

/* one BPE training step: the most frequent adjacent pair (ties by a seeded hash); 0 when none.
 * pairs has room for every adjacent pair of every word. */
static int best_pair(const gword_t *w, int nw, uint64_t seed, gpair_t *pairs, int *a, int *b) {
    size_t np = 0;
    for (int i = 0; i < nw; i++)
        for (int k = 0; k + 1 < w[i].n; k++)
            pairs[np++] = (gpair_t){(uint64_t)(uint32_t)w[i].sym[k] << 32 | (uint32_t)w[i].sym[k + 1], w[i].count};
    qsort(pairs, np, sizeof *pairs, cmp_pair);
    int best = 0;
    uint64_t bh = 0;
    for (size_t i = 0; i < np;) {
        size_t j = i;
        int cnt = 0;
        while (j < np && pairs[j].key == pairs[i].key) cnt += pairs[j++].count;
        uint64_t h = hash_mix64(pairs[i].key ^ seed);
        if (cnt > best || (cnt == best && h < bh)) {
            best = cnt; bh = h;
            *a = (int)(pairs[i].key >> 32); *b = (int)(uint32_t)pairs[i].key;
        }
        i = j;
    }
    return best;
}

static void apply_merge(gword_t *w, int nw, int a, int b, int id) {
    for (int i = 0; i < nw; i++) {
        int m = 0;
        for (int k = 0; k < w[i].n; k++) {
            if (k + 1 < w[i].n && w[i].sym[k] == a && w[i].sym[k + 1] == b) { w[i].sym[m++] = id; k++; }
            else w[i].sym[m++] = w[i].sym[k];
        }
        w[i].n = m;
    }
}

/* Fills tokens [from, n) with pseudo-words (a space, then 2+ consonant-vowel syllables: the
 * digits of a counter in base 32), each in its own 24-byte slot of buf, skipping any text a token
 * before it already has (an open-addressing set of the token texts). */
static int pseudo_words(const char **ts, uint64_t *tl, int32_t *tt, int from, int n, char *buf, char *err,
                        size_t errlen) {
    static const char cons[] = "bdfgklmnprstvwyz", vow[] = "aeiou";
    size_t cap = 1;
    while (cap < (size_t)n * 2) cap <<= 1;
    int *set = malloc(cap * sizeof *set);
    if (!set) return err_set(err, errlen, TERN_ENOMEM, "vocab: out of memory");
    memset(set, 0xff, cap * sizeof *set);
    for (int i = 0; i < from; i++) {
        size_t at = hash_fnv1a(HASH_FNV_OFFSET, ts[i], (size_t)tl[i]) & (cap - 1);
        while (set[at] >= 0) at = (at + 1) & (cap - 1);
        set[at] = i;
    }
    int nt = from;
    for (uint64_t r = 32; nt < n; r++) {
        char *p = buf + (size_t)(nt - from) * 24, dig[8];
        int nd = 0, len = 0;
        for (uint64_t x = r; x; x /= 32) dig[nd++] = (char)(x % 32);
        p[len++] = ' ';
        while (nd--) {   /* 32 syllables: 16 consonants x 2 of the vowels, chosen by the digit */
            p[len++] = cons[dig[nd] % 16];
            p[len++] = vow[(dig[nd] / 16 + dig[nd] % 5) % 5];
        }
        size_t at = hash_fnv1a(HASH_FNV_OFFSET, p, (size_t)len) & (cap - 1);
        int dup = 0;
        for (; set[at] >= 0 && !dup; at = (at + 1) & (cap - 1))
            dup = tl[set[at]] == (uint64_t)len && !memcmp(ts[set[at]], p, (size_t)len);
        if (dup) continue;
        set[at] = nt;
        ts[nt] = p, tl[nt] = (uint64_t)len, tt[nt++] = TT_NORMAL;
    }
    free(set);
    return 0;
}

int vocab_generate(gguf_writer_t *w, int n_vocab, uint64_t seed, char *err, size_t errlen) {
    return vocab_generate_ex(w, n_vocab, seed, 0, err, errlen);
}

/* Qwen2.5-Coder's fill-in-the-middle specials, in the order of enum tokenizer_fim */
static const char *const GEN_FIM[TOKENIZER_FIM_N] = {"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                                                     "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"};

int vocab_generate_ex(gguf_writer_t *w, int n_vocab, uint64_t seed, int fim, char *err, size_t errlen) {
    return vocab_generate_control(w, n_vocab, seed, fim, NULL, err, errlen);
}

int vocab_generate_control(gguf_writer_t *w, int n_vocab, uint64_t seed, int fim, const char *control, char *err,
                           size_t errlen) {
    TERN_ASSERT(w);
    if (control && (!*control || strlen(control) > 64))
        return err_set(err, errlen, TERN_EINVAL, "vocab: a control token of 1 to 64 bytes");
    int n_spec = 3 + (fim ? TOKENIZER_FIM_N : 0) + (control != NULL);
    if (n_vocab < 257 + n_spec || n_vocab > (1 << 24))
        return err_set(err, errlen, TERN_EINVAL, "vocab: n_vocab %d is out of range [%d, %d]", n_vocab, 257 + n_spec,
                       1 << 24);
    int rc = 0, n_merge_max = n_vocab - 259, nt = 0, nm = 0;
    gtok_t *tok = calloc((size_t)n_vocab, sizeof *tok);
    char **merges = calloc((size_t)n_merge_max, sizeof *merges);
    gword_t *words = calloc(512, sizeof *words);
    gpair_t *pairs = calloc(512 * 64, sizeof *pairs);
    const char **ts = calloc((size_t)n_vocab, sizeof *ts);
    uint64_t *tl = calloc((size_t)n_vocab, sizeof *tl);
    int32_t *tt = calloc((size_t)n_vocab, sizeof *tt);
    if (!tok || !merges || !words || !pairs || !ts || !tl || !tt) { rc = err_set(err, errlen, TERN_ENOMEM, "vocab: out of memory"); goto done; }
    for (int b = 0; b < 256; b++) {
        tok[nt].s = malloc(4);
        if (!tok[nt].s) { rc = err_set(err, errlen, TERN_ENOMEM, "vocab: out of memory"); goto done; }
        int cp = byte_cp(b);
        tok[nt].len = cp < 0x80 ? 1 : 2;
        if (cp < 0x80) tok[nt].s[0] = (char)cp;
        else { tok[nt].s[0] = (char)(0xC0 | (cp >> 6)); tok[nt].s[1] = (char)(0x80 | (cp & 0x3F)); }
        tt[nt++] = TT_NORMAL;
    }
    int nw = collect_words(words, 512);
    /* merges until the text is exhausted or only the specials still fit */
    while (nt < n_vocab - n_spec && nm < n_merge_max) {
        int a = -1, b = -1;
        if (best_pair(words, nw, seed, pairs, &a, &b) < 1) break;
        size_t la = tok[a].len, lb = tok[b].len;
        char *s = malloc(la + lb + 1);
        if (!s || asprintf(&merges[nm], "%.*s %.*s", (int)la, tok[a].s, (int)lb, tok[b].s) < 0) {
            free(s);
            merges[nm] = NULL;
            rc = err_set(err, errlen, TERN_ENOMEM, "vocab: out of memory");
            goto done;
        }
        nm++;
        memcpy(s, tok[a].s, la);
        memcpy(s + la, tok[b].s, lb);
        int id = -1;
        for (int k = 256; k < nt && id < 0; k++)
            if (tok[k].len == la + lb && !memcmp(tok[k].s, s, la + lb)) id = k;
        if (id < 0) { tok[nt].s = s; tok[nt].len = la + lb; tt[nt] = TT_NORMAL; id = nt++; }
        else free(s);
        apply_merge(words, nw, a, b, id);
    }
    for (int i = 0; i < nt; i++) { ts[i] = tok[i].s; tl[i] = tok[i].len; }
    static const char *const specials[] = {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"};
    int bos = nt;
    for (int k = 0; k < 3; k++) { ts[nt] = specials[k]; tl[nt] = strlen(specials[k]); tt[nt++] = TT_CONTROL; }
    int fim0 = nt;
    for (int k = 0; fim && k < TOKENIZER_FIM_N; k++) {
        ts[nt] = GEN_FIM[k];
        tl[nt] = strlen(GEN_FIM[k]);
        tt[nt++] = TT_CONTROL;
    }
    /* 256 special tokens at most, as Llama-3 has; the rest are pseudo-words (" kalomi"), so that
     * what a random model samples prints as words rather than as empty control tokens */
    if (control) { ts[nt] = control; tl[nt] = strlen(control); tt[nt++] = TT_CONTROL; }
    int max_reserved = (fim ? 253 - TOKENIZER_FIM_N : 253) - (control != NULL);
    int pad0 = nt, n_reserved = n_vocab - nt < max_reserved ? n_vocab - nt : max_reserved;
    char *pad = malloc((size_t)(n_vocab - nt) * 24 + 1);
    if (!pad) { rc = err_set(err, errlen, TERN_ENOMEM, "vocab: out of memory"); goto done; }
    for (int r = 0; r < n_reserved; r++) {
        char *p = pad + (size_t)(nt - pad0) * 24;
        tl[nt] = (uint64_t)snprintf(p, 24, "<|reserved_%d|>", r);
        ts[nt] = p;
        tt[nt++] = TT_CONTROL;
    }
    if (nt < n_vocab && (rc = pseudo_words(ts, tl, tt, nt, n_vocab, pad + (size_t)(nt - pad0) * 24, err, errlen)) < 0) {
        free(pad);
        goto done;
    }
    uint64_t *ml = calloc((size_t)(nm ? nm : 1), sizeof *ml);
    if (!ml) { free(pad); rc = err_set(err, errlen, TERN_ENOMEM, "vocab: out of memory"); goto done; }
    for (int i = 0; i < nm; i++) ml[i] = strlen(merges[i]);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", "llama-bpe");
    gguf_writer_set_arr_strn(w, "tokenizer.ggml.tokens", ts, tl, (uint64_t)n_vocab);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, tt, (uint64_t)n_vocab);
    gguf_writer_set_arr_strn(w, "tokenizer.ggml.merges", (const char *const *)merges, ml, (uint64_t)nm);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)bos + 1);
    gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)bos + 2);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", 0);
    for (int k = 0; fim && k < TOKENIZER_FIM_N; k++)
        gguf_writer_set_u32(w, tokenizer_fim_key(k), (uint32_t)(fim0 + k));
    free(ml);
    free(pad);
done:
    for (int i = 0; tok && i < n_vocab; i++) free(tok[i].s);
    for (int i = 0; merges && i < nm; i++) free(merges[i]);
    free(tok); free(merges); free(words); free(pairs); free(ts); free(tl); free(tt);
    return rc;
}
