/* sp_vocab: SentencePiece tokenizer.model → tokenizer.ggml.* the way llama.cpp's
 * convert_hf_to_gguf.py (_create_vocab_sentencepiece + SpecialVocab) writes it. The file is read
 * whole (it is small) and parsed by protobuf-c; unknown fields of real files are skipped.
 * Not here: Unigram scoring or normaliser rules (the engine reads only what llama.cpp reads). */
#define _GNU_SOURCE
#include "tools/sp_vocab.h"
#include "core/err.h"
#include "tools/sp_model.pb-c.h"
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SP_MAX_FILE (256u << 20)
enum { SPT_NORMAL = 1, SPT_UNKNOWN = 2, SPT_CONTROL = 3, SPT_USER_DEFINED = 4, SPT_UNUSED = 5, SPT_BYTE = 6 };

typedef struct spv {
    int n;
    char **tok;        /* owned copies */
    uint64_t *len;
    float *score;
    int32_t *type;
} spv_t;

static void spv_free(spv_t *v) {
    for (int i = 0; v->tok && i < v->n; i++) free(v->tok[i]);
    free(v->tok);
    free(v->len);
    free(v->score);
    free(v->type);
}

static int read_all(const char *path, uint8_t **buf, size_t *n, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(err, errlen, TERN_EIO, "%s: cannot open: %s", path, strerror(errno));
    long sz = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (sz < 0 || (unsigned long)sz > SP_MAX_FILE) {
        fclose(f);
        return err_set(err, errlen, TERN_EFORMAT, "%s: unreadable or larger than %u MiB", path, SP_MAX_FILE >> 20);
    }
    rewind(f);
    *buf = malloc((size_t)sz + 1);
    *n = *buf ? fread(*buf, 1, (size_t)sz, f) : 0;
    fclose(f);
    if (!*buf || *n != (size_t)sz) {
        free(*buf);
        *buf = NULL;
        return err_set(err, errlen, TERN_EIO, "%s: read failed", path);
    }
    return 0;
}

static const char *token_str(json_t *v) {   /* "x" or {"content": "x"} */
    return json_is_string(v) ? json_string_value(v) : json_string_value(json_object_get(v, "content"));
}

static int find_id(const spv_t *v, const char *s) {
    for (int i = 0; s && i < v->n; i++)
        if (v->len[i] == strlen(s) && !memcmp(v->tok[i], s, v->len[i])) return i;
    return -1;
}

static int set_tok(spv_t *v, int i, const char *s, size_t len) {
    char *c = strndup(s, len);
    if (!c) return TERN_ENOMEM;
    free(v->tok[i]);
    v->tok[i] = c;
    v->len[i] = len;
    return 0;
}

/* pieces, then [PADi] up to n */
static int spv_fill(spv_t *v, const Sentencepiece__ModelProto *mp, int n, const char *path, char *err, size_t errlen) {
    v->n = n;
    v->tok = calloc((size_t)n, sizeof *v->tok);
    v->len = calloc((size_t)n, sizeof *v->len);
    v->score = calloc((size_t)n, sizeof *v->score);
    v->type = calloc((size_t)n, sizeof *v->type);
    if (!v->tok || !v->len || !v->score || !v->type) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        char pad[32];
        const Sentencepiece__SentencePiece *p = (size_t)i < mp->n_pieces ? mp->pieces[i] : NULL;
        if (p && !p->piece) return err_set(err, errlen, TERN_EFORMAT, "%s: piece %d has no text", path, i);
        int l = p ? (int)strlen(p->piece) : snprintf(pad, sizeof pad, "[PAD%d]", i);
        if (set_tok(v, i, p ? p->piece : pad, (size_t)l) < 0) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
        v->score[i] = p ? (p->has_score ? p->score : 0.0f) : -1000.0f;
        int t = p ? (int)p->type : SPT_UNUSED;
        v->type[i] = t >= SPT_NORMAL && t <= SPT_BYTE ? t : SPT_NORMAL;
    }
    return 0;
}

/* tokenizer_config.json's added_tokens_decoder {"id": {content, special}} overrides pieces */
static int spv_added(spv_t *v, json_t *cfg) {
    const char *k;
    json_t *e;
    json_object_foreach(json_object_get(cfg, "added_tokens_decoder"), k, e) {
        char *end;
        long id = strtol(k, &end, 10);
        json_t *c = json_object_get(e, "content");
        if (*end || id < 0 || id >= v->n || !json_is_string(c)) continue;
        if (set_tok(v, (int)id, json_string_value(c), json_string_length(c)) < 0) return TERN_ENOMEM;
        v->type[id] = json_is_true(json_object_get(e, "special")) ? SPT_CONTROL : SPT_USER_DEFINED;
    }
    return 0;
}

/* special ids: tokenizer_config.json token strings, else config.json ids, else the trainer spec */
static void sp_special(gguf_writer_t *w, const spv_t *v, json_t *tcfg, json_t *mcfg, const Sentencepiece__TrainerSpec *ts) {
    static const char *cfgk[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    static const char *ggk[4] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                 "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};
    int tsid[4] = {ts ? ts->bos_id : 1, ts ? ts->eos_id : 2, ts ? ts->unk_id : 0, ts ? ts->pad_id : -1};
    for (int k = 0; k < 4; k++) {
        int id = find_id(v, token_str(json_object_get(tcfg, cfgk[k])));
        char key[32];
        snprintf(key, sizeof key, "%s_id", cfgk[k]);
        json_t *ci = json_object_get(mcfg, key);
        if (id < 0 && json_is_integer(ci)) id = (int)json_integer_value(ci);
        if (id < 0) id = tsid[k];
        if (id >= 0 && id < v->n) gguf_writer_set_u32(w, ggk[k], (uint32_t)id);
    }
}

static void sp_flags(gguf_writer_t *w, json_t *tcfg, const Sentencepiece__NormalizerSpec *ns) {
    json_t *ab = json_object_get(tcfg, "add_bos_token"), *ae = json_object_get(tcfg, "add_eos_token");
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", json_is_boolean(ab) ? json_is_true(ab) : 1);
    if (json_is_boolean(ae)) gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", json_is_true(ae));
    gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", ns ? ns->add_dummy_prefix : 1);
    json_t *ct = json_object_get(tcfg, "chat_template");
    if (json_is_array(ct)) {   /* [{name, template}, ...]: the "default" one, else the first */
        size_t i;
        json_t *e, *pick = NULL;
        json_array_foreach(ct, i, e) {
            const char *nm = json_string_value(json_object_get(e, "name"));
            if (!pick || (nm && !strcmp(nm, "default"))) pick = e;
        }
        ct = json_object_get(pick, "template");
    }
    if (json_is_string(ct)) gguf_writer_set_str(w, "tokenizer.chat_template", json_string_value(ct));
}

static json_t *load_beside(const char *path, const char *name) {
    char p[4096];
    const char *slash = strrchr(path, '/');
    snprintf(p, sizeof p, "%.*s/%s", slash ? (int)(slash - path) : 1, slash ? path : ".", name);
    json_error_t je;
    return json_load_file(p, JSON_DECODE_INT_AS_REAL, &je);
}

int sp_vocab_import(gguf_writer_t *w, const char *model_path, int n_vocab_min, const char *config_json,
                    int *n_vocab, char *err, size_t errlen) {
    uint8_t *buf = NULL;
    size_t n = 0;
    int rc = read_all(model_path, &buf, &n, err, errlen);
    if (rc < 0) return rc;
    Sentencepiece__ModelProto *mp = sentencepiece__model_proto__unpack(NULL, n, buf);
    free(buf);
    if (!mp || mp->n_pieces == 0 || mp->n_pieces > (1u << 24)) {
        if (mp) sentencepiece__model_proto__free_unpacked(mp, NULL);
        return err_set(err, errlen, TERN_EFORMAT, "%s: not a SentencePiece model (no pieces)", model_path);
    }
    json_error_t je;
    json_t *tcfg = load_beside(model_path, "tokenizer_config.json");
    json_t *mcfg = config_json ? json_load_file(config_json, 0, &je) : NULL;
    spv_t v = {0};
    int total = (int)mp->n_pieces > n_vocab_min ? (int)mp->n_pieces : n_vocab_min;
    if ((rc = spv_fill(&v, mp, total, model_path, err, errlen)) < 0) goto done;
    if ((rc = spv_added(&v, tcfg)) < 0) { err_set(err, errlen, rc, "out of memory"); goto done; }
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", "default");
    gguf_writer_set_arr_strn(w, "tokenizer.ggml.tokens", (const char *const *)v.tok, v.len, (uint64_t)v.n);
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_F32, v.score, (uint64_t)v.n);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_I32, v.type, (uint64_t)v.n);
    sp_special(w, &v, tcfg, mcfg, mp->trainer_spec);
    sp_flags(w, tcfg, mp->normalizer_spec);
    if (n_vocab) *n_vocab = v.n;
done:
    spv_free(&v);
    json_decref(tcfg);
    json_decref(mcfg);
    sentencepiece__model_proto__free_unpacked(mp, NULL);
    return rc;
}
