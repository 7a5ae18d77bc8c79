/* tokenizer: GGUF vocabularies → token ids and back. Byte-level BPE (tokenizer.ggml.model
 * "gpt2": PCRE2 pre-tokenizer regexes per `pre` type, GPT-2 byte↔unicode map, merges by rank)
 * and SentencePiece ("llama": score-ordered merges, ▁ for spaces, <0xNN> byte fallback).
 * Behaviour follows llama.cpp's llama-vocab so the reference test vectors match exactly.
 * Not here: WordPiece/Unigram vocabularies, chat templates (chat.c), writing vocabularies
 * (vocab.c). The loaded tokenizer is immutable: encode/decode are safe from many threads. */
#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8
#include "coordinator/tokenizer.h"
#include "coordinator/tokenizer_impl.h"
#include "core/err.h"
#include "core/hash.h"
#include "core/log.h"
#include <ctype.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ------------------------------------------------------ */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = hash_fnv1a(1469598103934665603ull, s, n);   /* this map's own seed */
    return h ^ (h >> 29);
}

/* UTF-8 sequence length from its first byte (1 for continuation/invalid bytes, as llama.cpp) */
static int utf8_len(uint8_t c) {
    static const uint8_t tab[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return tab[c >> 4];
}

/* length of the character at s[0..n): a malformed sequence counts as one byte (llama.cpp would
 * swallow the following bytes, e.g. a space after a stray 0xFF, and lose them on decode) */
static size_t seq_len(const char *s, size_t n) {
    size_t len = (size_t)utf8_len((uint8_t)s[0]);
    if (len > n) return 1;
    for (size_t k = 1; k < len; k++)
        if (((uint8_t)s[k] & 0xC0) != 0x80) return 1;
    return len;
}

/* GPT-2 bytes_to_unicode: printable bytes map to themselves, the rest to U+0100.. in order */
static int byte_to_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    return 256 + n;
}

static int cp_to_utf8(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

/* decodes one well-formed UTF-8 sequence at s[0..n); returns its length or 0 when invalid */
static int utf8_decode(const char *s, size_t n, uint32_t *cp) {
    uint8_t c = (uint8_t)s[0];
    int len = utf8_len(c);
    if (len == 1) { *cp = c; return c < 0x80; }
    if ((size_t)len > n) return 0;
    uint32_t v = c & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if (((uint8_t)s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | ((uint8_t)s[i] & 0x3F);
    }
    *cp = v;
    return len;
}

/* growable int32 array used for outputs and offsets */
typedef struct ivec { int32_t *v; size_t n, cap; int oom; } ivec_t;
static void ivec_push(ivec_t *a, int32_t x) {
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        int32_t *nv = realloc(a->v, nc * sizeof *nv);
        if (!nv) { a->oom = 1; return; }
        a->v = nv; a->cap = nc;
    }
    a->v[a->n++] = x;
}

/* ---- lookups ------------------------------------------------------------ */

static int tok_lookup(const tokenizer_t *t, const char *s, size_t n) {
    if (n == 0) return -1;
    uint64_t h = hash_bytes(s, n);
    for (uint32_t i = (uint32_t)h & t->hmask;; i = (i + 1) & t->hmask) {
        int32_t id = t->htab[i];
        if (id < 0) return -1;
        if (t->tok_len[id] == n && !memcmp(t->arena + t->tok_off[id], s, n)) return id;
    }
}

static int hash_insert(tokenizer_t *t, int id) {
    const char *s = t->arena + t->tok_off[id];
    size_t n = t->tok_len[id];
    for (uint32_t i = (uint32_t)hash_bytes(s, n) & t->hmask;; i = (i + 1) & t->hmask) {
        int32_t o = t->htab[i];
        if (o < 0) { t->htab[i] = id; return -1; }
        if (t->tok_len[o] == n && !memcmp(t->arena + t->tok_off[o], s, n)) return o;
    }
}

static uint32_t merge_slot(const tokenizer_t *t, uint64_t key) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & t->mmask;
}

/* rank of merging tokens a,b (lower merges first) and the resulting token; -1 when none */
static int merge_find(const tokenizer_t *t, int a, int b, int *res) {
    if (!t->mtab || a < 0 || b < 0) return -1;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (uint32_t i = merge_slot(t, key);; i = (i + 1) & t->mmask) {
        if (t->mtab[i].rank < 0) return -1;
        if (t->mtab[i].key == key) { *res = t->mtab[i].res; return t->mtab[i].rank; }
    }
}

static void merge_insert(tokenizer_t *t, int a, int b, int rank, int res) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (uint32_t i = merge_slot(t, key);; i = (i + 1) & t->mmask) {
        if (t->mtab[i].rank < 0) { t->mtab[i].key = key; t->mtab[i].rank = rank; t->mtab[i].res = res; return; }
        if (t->mtab[i].key == key) return;   /* the first (lowest) rank wins, as llama.cpp */
    }
}

/* ---- pre-tokenizer regexes per `pre` type (llama.cpp llama-vocab.cpp) ---- */

static const char *const RE_LLAMA3[] = {
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", NULL};
static const char *const RE_GPT2[] = {
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", NULL};
static const char *const RE_FALCON[] = {
    "[\\p{P}\\$\\+<=>\\^~\\|`]+",
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
    "[0-9][0-9][0-9]", NULL};
static const char *const RE_DEEPSEEK_CODER[] = {
    "[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}", NULL};
static const char *const RE_STARCODER[] = {
    "\\p{N}", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)", NULL};
static const char *const RE_QWEN2[] = {
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", NULL};
static const char *const RE_DEFAULT[] = {
    "[\\p{P}\\$\\+<=>\\^~\\|]+",
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
    "\\p{N}+", "[0-9][0-9][0-9]", NULL};

typedef struct pre_def { const char *name; int pre; const char *const *re; int ignore_merges, add_bos; } pre_def_t;
static const pre_def_t PRE_DEFS[] = {
    {"default", TOK_PRE_DEFAULT, RE_DEFAULT, 0, 0},
    {"llama3", TOK_PRE_LLAMA3, RE_LLAMA3, 1, 1},
    {"llama-v3", TOK_PRE_LLAMA3, RE_LLAMA3, 1, 1},
    {"llama-bpe", TOK_PRE_LLAMA3, RE_LLAMA3, 1, 1},
    {"falcon3", TOK_PRE_LLAMA3, RE_LLAMA3, 1, 1},
    {"pixtral", TOK_PRE_LLAMA3, RE_LLAMA3, 1, 1},
    {"dbrx", TOK_PRE_LLAMA3, RE_LLAMA3, 0, 0},
    {"smaug-bpe", TOK_PRE_LLAMA3, RE_LLAMA3, 0, 0},
    {"falcon", TOK_PRE_FALCON, RE_FALCON, 0, 0},
    {"deepseek-coder", TOK_PRE_DEEPSEEK_CODER, RE_DEEPSEEK_CODER, 0, 0},
    {"gpt-2", TOK_PRE_GPT2, RE_GPT2, 0, 0},
    {"gpt2", TOK_PRE_GPT2, RE_GPT2, 0, 0},
    {"phi-2", TOK_PRE_GPT2, RE_GPT2, 0, 0},
    {"mpt", TOK_PRE_GPT2, RE_GPT2, 0, 0},
    {"olmo", TOK_PRE_GPT2, RE_GPT2, 0, 0},
    {"jais", TOK_PRE_GPT2, RE_GPT2, 0, 0},
    {"starcoder", TOK_PRE_STARCODER, RE_STARCODER, 0, 0},
    {"refact", TOK_PRE_STARCODER, RE_STARCODER, 0, 0},
    {"smollm", TOK_PRE_STARCODER, RE_STARCODER, 0, 0},
    {"qwen2", TOK_PRE_QWEN2, RE_QWEN2, 0, 0},
    {"stablelm2", TOK_PRE_QWEN2, RE_QWEN2, 0, 0},
    {NULL, 0, NULL, 0, 0},
};

static int compile_regexes(tokenizer_t *t, const char *const *re, char *err, size_t errlen) {
    for (int i = 0; re[i]; i++) {
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *c = pcre2_compile((PCRE2_SPTR)re[i], PCRE2_ZERO_TERMINATED,
                                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ec, &eo, NULL);
        if (!c) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(ec, msg, sizeof msg);
            return err_set(err, errlen, TERN_EFORMAT, "tokenizer: pre-tokenizer regex %d: %s at %zu", i,
                           (const char *)msg, (size_t)eo);
        }
        pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);   /* interpreter when JIT is unavailable */
        t->re[t->n_re++] = c;
    }
    return 0;
}

/* ---- encode scratch (one per call: the tokenizer itself stays immutable) ---- */

typedef struct sym { int32_t start, n, prev, next, id; } sym_t;
typedef struct bigram { float score; int32_t rank, left, right, lid, rid, size; } bigram_t;

typedef struct scratch {
    const tokenizer_t *t;
    ivec_t out;
    sym_t *sym; size_t nsym, capsym;
    bigram_t *heap; size_t nheap, capheap;
    char *buf; size_t capbuf;
    ivec_t offs, offs2;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    int oom;
} scratch_t;

static void *grow(void *p, size_t *cap, size_t need, size_t elem, int *oom) {
    if (need <= *cap) return p;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *np = realloc(p, nc * elem);
    if (!np) { *oom = 1; return p; }
    *cap = nc;
    return np;
}

static int sym_push(scratch_t *s, int32_t start, int32_t n, int32_t id) {
    s->sym = grow(s->sym, &s->capsym, s->nsym + 1, sizeof *s->sym, &s->oom);
    if (s->oom) return -1;
    int32_t i = (int32_t)s->nsym++;
    s->sym[i] = (sym_t){start, n, i - 1, i + 1, id};
    return 0;
}

/* heap order: SPM wants the highest score, BPE the lowest rank; ties go to the leftmost pair */
static int bg_before(const tokenizer_t *t, const bigram_t *a, const bigram_t *b) {
    if (t->type == TOK_SPM) {
        if (a->score != b->score) return a->score > b->score;
    } else if (a->rank != b->rank) {
        return a->rank < b->rank;
    }
    return a->left < b->left;
}

static void heap_push(scratch_t *s, bigram_t b) {
    s->heap = grow(s->heap, &s->capheap, s->nheap + 1, sizeof *s->heap, &s->oom);
    if (s->oom) return;
    size_t i = s->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bg_before(s->t, &b, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = b;
}

static bigram_t heap_pop(scratch_t *s) {
    bigram_t top = s->heap[0], last = s->heap[--s->nheap];
    size_t i = 0, n = s->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bg_before(s->t, &s->heap[c + 1], &s->heap[c])) c++;
        if (!bg_before(s->t, &s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

static void emit(scratch_t *s, int id) { if (id >= 0) ivec_push(&s->out, id); }

/* ---- SentencePiece ---------------------------------------------------------- */

static void spm_try_pair(scratch_t *s, const char *text, int l, int r) {
    if (l < 0 || r < 0) return;
    int n = s->sym[l].n + s->sym[r].n;
    int id = tok_lookup(s->t, text + s->sym[l].start, (size_t)n);
    if (id < 0) return;
    heap_push(s, (bigram_t){s->t->score[id], 0, l, r, 0, 0, n});
}

static int is_ws_sym(const char *text, const sym_t *y) {
    return y->n == 3 && !memcmp(text + y->start, "\xE2\x96\x81", 3);
}

/* merges symbols [a, b) by score and emits their tokens */
static void spm_segment(scratch_t *s, const char *text, int a, int b) {
    const tokenizer_t *t = s->t;
    for (int i = a; i < b; i++) { s->sym[i].prev = i - 1 >= a ? i - 1 : -1; s->sym[i].next = i + 1 < b ? i + 1 : -1; }
    s->nheap = 0;
    for (int i = a + 1; i < b; i++) spm_try_pair(s, text, i - 1, i);
    while (s->nheap && !s->oom) {
        bigram_t g = heap_pop(s);
        sym_t *L = &s->sym[g.left], *R = &s->sym[g.right];
        if (L->n == 0 || R->n == 0 || L->n + R->n != g.size) continue;
        L->n += R->n;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) s->sym[R->next].prev = g.left;
        spm_try_pair(s, text, L->prev, g.left);
        spm_try_pair(s, text, g.left, L->next);
    }
    for (int i = a; i != -1; i = s->sym[i].next) {
        const sym_t *y = &s->sym[i];
        int id = tok_lookup(t, text + y->start, (size_t)y->n);
        if (id >= 0) { emit(s, id); continue; }
        for (int j = 0; j < y->n; j++) {
            int bt = t->byte_tok[(uint8_t)text[y->start + j]];
            emit(s, bt >= 0 ? bt : t->unk);
        }
    }
}

/* text[0..n) is already escaped (▁ for spaces). When no token has ▁ after another character
 * (t->spm_cut), no merge can cross the start of a word, so each word is merged on its own:
 * the same result as one pass over the whole text, with a small heap. */
static void spm_encode_escaped(scratch_t *s, const char *text, size_t n) {
    s->nsym = 0;
    for (size_t off = 0; off < n;) {
        size_t len = seq_len(text + off, n - off);
        if (sym_push(s, (int32_t)off, (int32_t)len, -1) < 0) return;
        off += len;
    }
    int a = 0, ns = (int)s->nsym;
    for (int i = 1; i < ns && !s->oom; i++) {
        if (s->t->spm_cut && is_ws_sym(text, &s->sym[i]) && !is_ws_sym(text, &s->sym[i - 1])) {
            spm_segment(s, text, a, i);
            a = i;
        }
    }
    if (ns && !s->oom) spm_segment(s, text, a, ns);
}

static void spm_encode(scratch_t *s, const char *text, size_t n, int prefix_space) {
    size_t need = 3 * n + 4;
    s->buf = grow(s->buf, &s->capbuf, need, 1, &s->oom);
    if (s->oom) return;
    size_t m = 0;
    if (prefix_space) { memcpy(s->buf, "\xE2\x96\x81", 3); m = 3; }
    for (size_t i = 0; i < n; i++) {
        if (text[i] == ' ') { memcpy(s->buf + m, "\xE2\x96\x81", 3); m += 3; }
        else s->buf[m++] = text[i];
    }
    /* the symbols point into s->buf, which spm_encode_escaped does not grow */
    spm_encode_escaped(s, s->buf, m);
}

/* ---- byte-level BPE ---------------------------------------------------------- */

/* splits text[0..n) into pieces with each regex in turn (matches and the gaps between them are
 * both kept, as llama.cpp's unicode_regex_split); result: piece lengths in s->offs */
static int bpe_split(scratch_t *s, const char *text, size_t n) {
    const tokenizer_t *t = s->t;
    s->offs.n = 0;
    ivec_push(&s->offs, (int32_t)n);
    for (int r = 0; r < t->n_re; r++) {
        s->offs2.n = 0;
        size_t start = 0;
        for (size_t k = 0; k < s->offs.n; k++) {
            size_t len = (size_t)s->offs.v[k], pos = 0, last = 0;
            const char *subj = text + start;
            while (pos < len) {
                int rc = pcre2_match(t->re[r], (PCRE2_SPTR)subj, len, pos, 0, s->md, s->mctx);
                if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
                    rc = pcre2_match(t->re[r], (PCRE2_SPTR)subj, len, pos, PCRE2_NO_JIT, s->md, s->mctx);
                if (rc == PCRE2_ERROR_NOMATCH) break;
                if (rc < 0) return TERN_EINVAL;
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
                size_t ms = ov[0], me = ov[1];
                if (me <= ms) {          /* empty match: step one character */
                    pos = ms + (size_t)utf8_len((uint8_t)subj[ms]);
                    continue;
                }
                if (ms > last) ivec_push(&s->offs2, (int32_t)(ms - last));
                ivec_push(&s->offs2, (int32_t)(me - ms));
                last = pos = me;
            }
            if (last < len) ivec_push(&s->offs2, (int32_t)(len - last));
            start += len;
        }
        ivec_t tmp = s->offs; s->offs = s->offs2; s->offs2 = tmp;
        if (s->offs.oom || s->offs2.oom) return TERN_ENOMEM;
    }
    return 0;
}

static void bpe_try_pair(scratch_t *s, int l, int r) {
    if (l < 0 || r < 0) return;
    int res, lid = s->sym[l].id, rid = s->sym[r].id;
    int rank = merge_find(s->t, lid, rid, &res);
    if (rank < 0) return;
    heap_push(s, (bigram_t){0, rank, l, r, lid, rid, res});
}

/* one pre-tokenized word (raw bytes) */
static void bpe_word(scratch_t *s, const char *w, size_t n) {
    const tokenizer_t *t = s->t;
    if (t->ignore_merges) {
        size_t m = 0;
        s->buf = grow(s->buf, &s->capbuf, 2 * n + 1, 1, &s->oom);
        if (s->oom) return;
        for (size_t i = 0; i < n; i++) {
            const tok_bchar_t *c = &t->bchar[(uint8_t)w[i]];
            memcpy(s->buf + m, c->utf8, c->len);
            m += c->len;
        }
        int id = tok_lookup(t, s->buf, m);
        if (id >= 0) { emit(s, id); return; }
    }
    s->nsym = s->nheap = 0;
    for (size_t i = 0; i < n; i++)
        if (sym_push(s, (int32_t)i, 1, t->bchar[(uint8_t)w[i]].id) < 0) return;
    if (!s->nsym) return;
    s->sym[s->nsym - 1].next = -1;
    for (size_t i = 1; i < s->nsym; i++) bpe_try_pair(s, (int)i - 1, (int)i);
    while (s->nheap && !s->oom) {
        bigram_t b = heap_pop(s);
        sym_t *L = &s->sym[b.left], *R = &s->sym[b.right];
        if (L->n == 0 || R->n == 0 || L->id != b.lid || R->id != b.rid || L->next != b.right) continue;
        L->n += R->n;
        L->id = b.size;   /* the merged token (size field carries it for BPE) */
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) s->sym[R->next].prev = b.left;
        bpe_try_pair(s, L->prev, b.left);
        bpe_try_pair(s, b.left, L->next);
    }
    for (int i = 0; i != -1; i = s->sym[i].next) {
        const sym_t *y = &s->sym[i];
        if (y->id >= 0) { emit(s, y->id); continue; }
        for (int j = 0; j < y->n; j++) emit(s, t->bchar[(uint8_t)w[y->start + j]].id);
    }
}

static int bpe_encode(scratch_t *s, const char *text, size_t n) {
    int rc = bpe_split(s, text, n);
    if (rc < 0) return rc;
    size_t start = 0;
    for (size_t k = 0; k < s->offs.n && !s->oom; k++) {
        size_t len = (size_t)s->offs.v[k];
        bpe_word(s, text + start, len);
        start += len;
    }
    return s->oom ? TERN_ENOMEM : 0;
}

/* ---- special-token partition (llama.cpp tokenizer_st_partition) ---------- */

typedef struct frag { size_t off, len; int id; } frag_t;   /* id >= 0: a token; else raw text */
typedef struct fvec { frag_t *v; size_t n, cap; int oom; } fvec_t;
static void fvec_push(fvec_t *a, frag_t f) {
    a->v = grow(a->v, &a->cap, a->n + 1, sizeof *a->v, &a->oom);
    if (!a->oom) a->v[a->n++] = f;
}

static int partition(const tokenizer_t *t, const char *text, size_t len, int parse_special, fvec_t *out) {
    fvec_t a = {0}, b = {0};
    if (len) fvec_push(&a, (frag_t){0, len, -1});
    for (int k = 0; k < t->n_special && !a.oom; k++) {
        int sid = t->special[k];
        int tt = t->ttype[sid];
        if (!parse_special && (tt == TOK_TYPE_CONTROL || tt == TOK_TYPE_UNKNOWN)) continue;
        const char *st = t->arena + t->tok_off[sid];
        size_t sl = t->tok_len[sid];
        int hit = 0;
        for (size_t i = 0; i < a.n && !hit; i++)
            hit = a.v[i].id < 0 && a.v[i].len >= sl && memmem(text + a.v[i].off, a.v[i].len, st, sl);
        if (!hit) continue;
        b.n = 0;
        for (size_t i = 0; i < a.n; i++) {
            frag_t f = a.v[i];
            if (f.id >= 0) { fvec_push(&b, f); continue; }
            size_t pos = f.off, end = f.off + f.len;
            const char *m;
            while (pos < end && (m = memmem(text + pos, end - pos, st, sl))) {
                size_t mo = (size_t)(m - text), ll = mo - pos;
                if (t->attr[sid] & TOK_ATTR_LSTRIP)
                    while (ll > 0 && isspace((uint8_t)text[pos + ll - 1])) ll--;
                if (ll) fvec_push(&b, (frag_t){pos, ll, -1});
                fvec_push(&b, (frag_t){0, 0, sid});
                pos = mo + sl;
                if (t->attr[sid] & TOK_ATTR_RSTRIP)
                    while (pos < end && isspace((uint8_t)text[pos])) pos++;
            }
            if (pos < end) fvec_push(&b, (frag_t){pos, end - pos, -1});
        }
        fvec_t tmp = a; a = b; b = tmp;
    }
    free(b.v);
    if (a.oom) { free(a.v); return TERN_ENOMEM; }
    *out = a;
    return 0;
}

static void scratch_free(scratch_t *s) {
    free(s->out.v); free(s->sym); free(s->heap); free(s->buf); free(s->offs.v); free(s->offs2.v);
    if (s->md) pcre2_match_data_free(s->md);
    if (s->mctx) pcre2_match_context_free(s->mctx);
    if (s->jstack) pcre2_jit_stack_free(s->jstack);
}

int tokenizer_encode(const tokenizer_t *t, const char *text, size_t len, int add_bos, int parse_special,
                     int32_t *ids, int cap) {
    TERN_ASSERT(t && (text || len == 0) && (ids || cap <= 0));
    if (len > (size_t)INT32_MAX / 4) return TERN_EINVAL;
    scratch_t s = {.t = t};
    fvec_t frags = {0};
    int rc = partition(t, text, len, parse_special, &frags);
    if (rc < 0) return rc;
    if (t->type == TOK_BPE) {
        s.md = pcre2_match_data_create(1, NULL);
        s.mctx = pcre2_match_context_create(NULL);
        s.jstack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
        if (!s.md || !s.mctx) { rc = TERN_ENOMEM; goto done; }
        if (s.jstack) pcre2_jit_stack_assign(s.mctx, NULL, s.jstack);
    }
    if (add_bos && t->bos >= 0) emit(&s, t->bos);
    int prev_special = 1;   /* SPM: a space prefix goes before the first text and after specials */
    for (size_t i = 0; i < frags.n && rc >= 0 && !s.oom; i++) {
        const frag_t *f = &frags.v[i];
        if (f->id >= 0) { emit(&s, f->id); prev_special = 1; continue; }
        if (t->type == TOK_SPM) spm_encode(&s, text + f->off, f->len, t->add_space_prefix && prev_special);
        else rc = bpe_encode(&s, text + f->off, f->len);
        prev_special = 0;
    }
    if (rc >= 0 && (s.oom || s.out.oom)) rc = TERN_ENOMEM;
    if (rc >= 0) {
        if (s.out.n > (size_t)INT32_MAX) { rc = TERN_EINVAL; goto done; }
        size_t ncopy = cap > 0 ? (s.out.n < (size_t)cap ? s.out.n : (size_t)cap) : 0;
        if (ncopy) memcpy(ids, s.out.v, ncopy * sizeof *ids);
        rc = (int)s.out.n;
    }
done:
    free(frags.v);
    scratch_free(&s);
    return rc;
}

/* ---- pieces and decoding ------------------------------------------------------ */

int tokenizer_n_vocab(const tokenizer_t *t) { return t->n_vocab; }
int tokenizer_bos(const tokenizer_t *t) { return t->bos; }
int tokenizer_eos(const tokenizer_t *t) { return t->eos; }
int tokenizer_eot(const tokenizer_t *t) { return t->eot; }
int tokenizer_add_bos(const tokenizer_t *t) { return t->add_bos; }
int tokenizer_max_piece(const tokenizer_t *t) { return t->max_piece; }

int tokenizer_is_eog(const tokenizer_t *t, int id) {
    if (id < 0) return 0;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return 1;
    return 0;
}

int tokenizer_find(const tokenizer_t *t, const char *token_text) {
    return tok_lookup(t, token_text, strlen(token_text));
}

int tokenizer_fim(const tokenizer_t *t, int which) {
    return which >= 0 && which < TOKENIZER_FIM_N ? t->fim[which] : -1;
}

/* ---- fill-in-the-middle tokens ------------------------------------------------- */

static const char *const FIM_KEYS[TOKENIZER_FIM_N][2] = {   /* the key, then the deprecated one */
    {"tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"},
    {"tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"},
    {"tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"},
    {"tokenizer.ggml.fim_pad_token_id", NULL},
    {"tokenizer.ggml.fim_rep_token_id", NULL},
    {"tokenizer.ggml.fim_sep_token_id", NULL},
};

/* llama.cpp's llama-vocab.cpp lists (Qwen, Granite, DeepSeek, CodeLlama, GLM-4.5, ...) */
#define FIM_DS(x) "<\xef\xbd\x9c" "fim\xe2\x96\x81" x "\xef\xbd\x9c>"   /* DeepSeek's <｜fim▁x｜> */
#define FIM_SP "\xe2\x96\x81"                                              /* CodeLlama's ▁<PRE> */
static const char *const FIM_PRE_NAMES[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", FIM_DS("begin"),
                                            "<PRE>", FIM_SP "<PRE>", "<|code_prefix|>", NULL};
static const char *const FIM_SUF_NAMES[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", FIM_DS("hole"),
                                            "<SUF>", FIM_SP "<SUF>", "<|code_suffix|>", NULL};
static const char *const FIM_MID_NAMES[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", FIM_DS("end"),
                                            "<MID>", FIM_SP "<MID>", "<|code_middle|>", NULL};
static const char *const FIM_PAD_NAMES[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", NULL};
static const char *const FIM_REP_NAMES[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
                                            NULL};
static const char *const FIM_SEP_NAMES[] = {"<|file_sep|>", NULL};
static const char *const *const FIM_NAMES[TOKENIZER_FIM_N] = {FIM_PRE_NAMES, FIM_SUF_NAMES, FIM_MID_NAMES,
                                                               FIM_PAD_NAMES, FIM_REP_NAMES, FIM_SEP_NAMES};

const char *tokenizer_fim_key(int which) { return which >= 0 && which < TOKENIZER_FIM_N ? FIM_KEYS[which][0] : ""; }

const char *const *tokenizer_fim_names(int which) {
    static const char *const none[] = {NULL};
    return which >= 0 && which < TOKENIZER_FIM_N ? FIM_NAMES[which] : none;
}

/* the FIM ids as llama.cpp's vocab loader finds them: the keys (a deprecated key present wins,
 * as there), else the first known text in the vocabulary; an id outside it is ignored with a
 * warning, as there. Each becomes a control token (llama.cpp overrides a normal one too). */
static void find_fim(tokenizer_t *t, const gguf_t *g) {
    for (int k = 0; k < TOKENIZER_FIM_N; k++) {
        t->fim[k] = -1;
        for (int d = 0; d < 2; d++) {
            int64_t v;
            if (!FIM_KEYS[k][d] || gguf_get_i64(g, FIM_KEYS[k][d], &v) < 0) continue;
            if (v >= 0 && v < t->n_vocab) t->fim[k] = (int)v;
            else log_w("tokenizer: %s = %lld is outside the vocabulary (%d tokens): ignored", FIM_KEYS[k][d],
                       (long long)v, t->n_vocab);
        }
        for (int i = 0; t->fim[k] < 0 && FIM_NAMES[k][i]; i++) t->fim[k] = tokenizer_find(t, FIM_NAMES[k][i]);
        if (t->fim[k] >= 0) t->ttype[t->fim[k]] = TOK_TYPE_CONTROL;
    }
}

int tokenizer_token_text(const tokenizer_t *t, int id, char *buf, int cap) {
    if (id < 0 || id >= t->n_vocab) return TERN_EINVAL;
    int n = (int)t->tok_len[id];
    if (n < cap) { memcpy(buf, t->arena + t->tok_off[id], (size_t)n); buf[n] = 0; }
    return n;
}

static int piece_hidden(const tokenizer_t *t, int id, int render_special) {
    int tt = t->ttype[id];
    return !render_special && (tt == TOK_TYPE_CONTROL || tt == TOK_TYPE_UNKNOWN);
}

int tokenizer_piece(const tokenizer_t *t, int id, int render_special, char *buf, int cap) {
    if (id < 0 || id >= t->n_vocab) return TERN_EINVAL;
    if (piece_hidden(t, id, render_special)) return 0;
    int n = (int)t->piece_len[id];
    if (n > 0 && n <= cap) memcpy(buf, t->pieces + t->piece_off[id], (size_t)n);
    return n;
}

/* the piece of id with SPM's leading space removed when strip is set */
static void piece_view(const tokenizer_t *t, int id, int render_special, int strip, const char **p, int *n) {
    *p = t->pieces + t->piece_off[id];
    *n = piece_hidden(t, id, render_special) ? 0 : (int)t->piece_len[id];
    if (strip && *n > 0 && **p == ' ') { (*p)++; (*n)--; }
}

int tokenizer_decode(const tokenizer_t *t, const int32_t *ids, int n, int render_special, char *buf, int cap) {
    int total = 0, strip = t->add_space_prefix;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) return TERN_EINVAL;
        if (i == 0 && ids[i] == t->bos) {   /* the space rule applies to the text after BOS */
            const char *p; int m;
            piece_view(t, ids[i], render_special, 0, &p, &m);
            if (m > 0 && total + m <= cap) memcpy(buf + total, p, (size_t)m);
            total += m;
            continue;
        }
        const char *p; int m;
        piece_view(t, ids[i], render_special, strip, &p, &m);
        strip = 0;
        if (total > INT32_MAX - m) return TERN_EINVAL;
        if (m > 0 && total + m <= cap) memcpy(buf + total, p, (size_t)m);
        total += m;
    }
    if (total < cap) buf[total] = 0;
    return total;
}

/* ---- incremental detokenizer ------------------------------------------------ */

void detok_init(detok_t *d, const tokenizer_t *t, int render_special) {
    memset(d, 0, sizeof *d);
    d->t = t;
    d->first = t->add_space_prefix ? 2 : 0;   /* 2: a BOS may come first; 1: strip the next piece */
    d->render_special = render_special;
    d->preserve = -1;
}

void detok_preserve(detok_t *d, int id) { d->preserve = id; }

/* length of the complete prefix of s[0..n): an unfinished UTF-8 sequence at the end is held */
static int utf8_complete(const char *s, int n) {
    for (int back = 1; back <= 3 && back <= n; back++) {
        uint8_t c = (uint8_t)s[n - back];
        if ((c & 0xC0) == 0x80) continue;          /* continuation: keep looking for the lead */
        int need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? n - back : n;
    }
    return n;
}

void detok_continue(detok_t *d) { d->first = 0; }

int detok_feed(detok_t *d, int id, char *out, int cap) {
    const tokenizer_t *t = d->t;
    if (id < 0 || id >= t->n_vocab) return 0;
    const char *p; int m;
    int special = d->render_special || id == d->preserve;
    /* the same leading-space rule as tokenizer_decode: the first token after an optional BOS */
    if (id == t->bos && d->first == 2) {
        piece_view(t, id, special, 0, &p, &m);
        d->first = 1;
    } else {
        piece_view(t, id, special, d->first != 0, &p, &m);
        d->first = 0;
    }
    int np = d->npending, nw = 0;
    /* pending bytes first, then the piece; emit up to the last complete character */
    char tmp[16];
    int head = m < 8 ? m : 8;
    memcpy(tmp, d->pending, (size_t)np);
    memcpy(tmp + np, p, (size_t)head);
    if (m <= 8) {
        int ok = utf8_complete(tmp, np + m);
        nw = ok < cap ? ok : cap;
        memcpy(out, tmp, (size_t)nw);
        d->npending = np + m - nw;
        if (d->npending > (int)sizeof d->pending) d->npending = (int)sizeof d->pending;
        memmove(d->pending, tmp + nw, (size_t)d->npending);
        return nw;
    }
    /* long piece: pending + piece minus its unfinished tail */
    int ok = utf8_complete(p, m);
    int want = np + ok;
    nw = want < cap ? want : cap;
    int fromp = nw - np < 0 ? 0 : nw - np;
    memcpy(out, d->pending, (size_t)(nw < np ? nw : np));
    memcpy(out + (nw < np ? nw : np), p, (size_t)fromp);
    d->npending = m - ok;
    memcpy(d->pending, p + ok, (size_t)d->npending);
    return nw;
}

int detok_flush(detok_t *d, char *out, int cap) {
    int n = d->npending < cap ? d->npending : cap;
    memcpy(out, d->pending, (size_t)n);
    d->npending = 0;
    return n;
}

/* ---- loading --------------------------------------------------------------------- */

void tokenizer_destroy(tokenizer_t **pt) {
    if (!pt || !*pt) return;
    tokenizer_t *t = *pt;
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    free(t->arena); free(t->tok_off); free(t->tok_len); free(t->score); free(t->ttype); free(t->attr);
    free(t->pieces); free(t->piece_off); free(t->piece_len); free(t->htab); free(t->mtab);
    free(t->special);
    chat_free(t);
    free(t);
    *pt = NULL;
}

static int get_id(const gguf_t *g, const char *key, int n_vocab, int *id, char *err, size_t errlen) {
    int64_t v;
    if (!gguf_find(g, key)) return 0;
    if (gguf_get_i64(g, key, &v) < 0)
        return err_set(err, errlen, TERN_EFORMAT, "tokenizer: %s is not an integer", key);
    if (v < 0 || v >= n_vocab)
        return err_set(err, errlen, TERN_EFORMAT, "tokenizer: %s = %lld is out of range (n_vocab %d)", key,
                       (long long)v, n_vocab);
    *id = (int)v;
    return 0;
}

static int get_flag(const gguf_t *g, const char *key, int *v) {
    int b;
    if (gguf_get_bool(g, key, &b) == 0) *v = !!b;
    return 0;
}

static const gguf_kv_t *find_arr(const gguf_t *g, const char *key, int elem, uint64_t n, int required,
                                 int *rc, char *err, size_t errlen) {
    const gguf_kv_t *kv = gguf_find(g, key);
    *rc = 0;
    if (!kv) {
        if (required) *rc = err_set(err, errlen, TERN_ENOTFOUND, "tokenizer: %s is missing", key);
        return NULL;
    }
    if (kv->type != GGUF_ARR || kv->arr_type != elem) {
        *rc = err_set(err, errlen, TERN_EFORMAT, "tokenizer: %s has the wrong type (%d/%d)", key, kv->type,
                      kv->arr_type);
        return NULL;
    }
    if (n && kv->arr_n != n) {
        *rc = err_set(err, errlen, TERN_EFORMAT, "tokenizer: %s has %llu entries but tokenizer.ggml.tokens has %llu",
                      key, (unsigned long long)kv->arr_n, (unsigned long long)n);
        return NULL;
    }
    return kv;
}

static int load_tokens(tokenizer_t *t, const gguf_t *g, char *err, size_t errlen) {
    int rc;
    const gguf_kv_t *kt = find_arr(g, "tokenizer.ggml.tokens", GGUF_STR, 0, 1, &rc, err, errlen);
    if (!kt) return rc;
    if (kt->arr_n == 0 || kt->arr_n > (1u << 24))
        return err_set(err, errlen, TERN_EFORMAT, "tokenizer: tokenizer.ggml.tokens has %llu entries",
                       (unsigned long long)kt->arr_n);
    int n = t->n_vocab = (int)kt->arr_n;
    const gguf_kv_t *ks = gguf_find(g, "tokenizer.ggml.scores");
    int iscores = ks && ks->type == GGUF_ARR && ks->arr_type == GGUF_I32;   /* llama.cpp accepts both */
    ks = find_arr(g, "tokenizer.ggml.scores", iscores ? GGUF_I32 : GGUF_F32, kt->arr_n, 0, &rc, err, errlen);
    if (rc < 0) return rc;
    const gguf_kv_t *ky = find_arr(g, "tokenizer.ggml.token_type", GGUF_I32, kt->arr_n, 0, &rc, err, errlen);
    if (rc < 0) return rc;
    size_t total = 0;
    for (int i = 0; i < n; i++) total += gguf_arr_str(kt, (uint64_t)i).len + 1;
    t->arena = malloc(total);
    t->tok_off = malloc((size_t)n * sizeof *t->tok_off);
    t->tok_len = malloc((size_t)n * sizeof *t->tok_len);
    t->score = calloc((size_t)n, sizeof *t->score);
    t->ttype = malloc((size_t)n);
    t->attr = calloc((size_t)n, 1);
    uint32_t hcap = 16;
    while (hcap < 2u * (uint32_t)n) hcap *= 2;
    t->htab = malloc(hcap * sizeof *t->htab);
    t->hmask = hcap - 1;
    if (!t->arena || !t->tok_off || !t->tok_len || !t->score || !t->ttype || !t->attr || !t->htab)
        return err_set(err, errlen, TERN_ENOMEM, "tokenizer: out of memory for %d tokens", n);
    memset(t->htab, 0xFF, hcap * sizeof *t->htab);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        gguf_str_t s = gguf_arr_str(kt, (uint64_t)i);
        memcpy(t->arena + off, s.ptr, s.len);
        t->arena[off + s.len] = 0;
        t->tok_off[i] = (uint32_t)off;
        t->tok_len[i] = (uint32_t)s.len;
        off += s.len + 1;
        if (ks && iscores) {
            int32_t v;
            memcpy(&v, (const char *)ks->data + 4 * (size_t)i, 4);
            t->score[i] = (float)v;
        } else if (ks) {
            memcpy(&t->score[i], (const char *)ks->data + 4 * (size_t)i, 4);
        }
        int32_t ty = TOK_TYPE_NORMAL;
        if (ky) memcpy(&ty, (const char *)ky->data + 4 * (size_t)i, 4);
        t->ttype[i] = (uint8_t)(ty >= 0 && ty <= TOK_TYPE_BYTE ? ty : TOK_TYPE_UNDEFINED);
        if (s.len == 0) continue;   /* an empty token can never match text */
        int dup = hash_insert(t, i);
        if (dup >= 0)
            return err_set(err, errlen, TERN_EFORMAT, "tokenizer: duplicate token '%.*s' at ids %d and %d",
                           (int)(s.len > 40 ? 40 : s.len), s.ptr, dup, i);
    }
    return 0;
}

static int load_merges(tokenizer_t *t, const gguf_t *g, char *err, size_t errlen) {
    int rc;
    const gguf_kv_t *km = find_arr(g, "tokenizer.ggml.merges", GGUF_STR, 0, 1, &rc, err, errlen);
    if (!km) return rc;
    if (km->arr_n > (1u << 24))
        return err_set(err, errlen, TERN_EFORMAT, "tokenizer: too many merges (%llu)", (unsigned long long)km->arr_n);
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)km->arr_n) cap *= 2;
    t->mtab = malloc(cap * sizeof *t->mtab);
    if (!t->mtab) return err_set(err, errlen, TERN_ENOMEM, "tokenizer: out of memory for merges");
    t->mmask = cap - 1;
    for (uint32_t i = 0; i < cap; i++) t->mtab[i].rank = -1;
    char *tmp = NULL;
    size_t tcap = 0;
    for (uint64_t i = 0; i < km->arr_n; i++) {
        gguf_str_t s = gguf_arr_str(km, i);
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        if (!sp) {
            free(tmp);
            return err_set(err, errlen, TERN_EFORMAT, "tokenizer: tokenizer.ggml.merges[%llu] = '%.*s' has no space",
                           (unsigned long long)i, (int)(s.len > 40 ? 40 : s.len), s.ptr);
        }
        size_t la = (size_t)(sp - s.ptr), lb = s.len - la - 1;
        int a = tok_lookup(t, s.ptr, la), b = tok_lookup(t, sp + 1, lb);
        if (a < 0 || b < 0) {
            free(tmp);
            return err_set(err, errlen, TERN_EFORMAT,
                           "tokenizer: tokenizer.ggml.merges[%llu] = '%.*s' names a token not in the vocabulary",
                           (unsigned long long)i, (int)(s.len > 40 ? 40 : s.len), s.ptr);
        }
        if (la + lb > tcap) {
            tcap = 2 * (la + lb);
            char *nt = realloc(tmp, tcap);
            if (!nt) { free(tmp); return err_set(err, errlen, TERN_ENOMEM, "tokenizer: out of memory"); }
            tmp = nt;
        }
        memcpy(tmp, s.ptr, la);
        memcpy(tmp + la, sp + 1, lb);
        merge_insert(t, a, b, (int)i, tok_lookup(t, tmp, la + lb));
    }
    free(tmp);
    t->n_merges = (int)km->arr_n;
    return 0;
}

/* decoded text of every token, computed once (llama.cpp's token_to_piece cache) */
static int build_pieces(tokenizer_t *t, char *err, size_t errlen) {
    size_t cap = 0;
    for (int i = 0; i < t->n_vocab; i++) cap += t->tok_len[i] + 1;
    t->pieces = malloc(cap + 1);
    t->piece_off = malloc((size_t)t->n_vocab * sizeof *t->piece_off);
    t->piece_len = malloc((size_t)t->n_vocab * sizeof *t->piece_len);
    if (!t->pieces || !t->piece_off || !t->piece_len)
        return err_set(err, errlen, TERN_ENOMEM, "tokenizer: out of memory for pieces");
    int rev[512];
    for (int c = 0; c < 512; c++) rev[c] = -1;
    for (int b = 0; b < 256; b++) rev[byte_to_cp(b)] = b;
    size_t off = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        const char *s = t->arena + t->tok_off[i];
        size_t n = t->tok_len[i], m = 0;
        char *o = t->pieces + off;
        int tt = t->ttype[i];
        if (tt == TOK_TYPE_BYTE && n == 6 && !memcmp(s, "<0x", 3)) {
            o[m++] = (char)strtol((char[3]){s[3], s[4], 0}, NULL, 16);
        } else if (tt == TOK_TYPE_CONTROL || tt == TOK_TYPE_UNKNOWN || tt == TOK_TYPE_USER_DEFINED) {
            memcpy(o, s, n); m = n;
        } else if (tt != TOK_TYPE_NORMAL) {
            m = 0;   /* unused/undefined tokens render as nothing, as llama.cpp */
        } else if (t->type == TOK_SPM) {
            for (size_t k = 0; k < n; k++) {
                if (k + 2 < n && !memcmp(s + k, "\xE2\x96\x81", 3)) { o[m++] = ' '; k += 2; }
                else o[m++] = s[k];
            }
        } else {
            for (size_t k = 0; k < n;) {
                uint32_t cp;
                int l = utf8_decode(s + k, n - k, &cp);
                if (l > 0 && cp < 512 && rev[cp] >= 0) { o[m++] = (char)rev[cp]; k += (size_t)l; continue; }
                l = l > 0 ? l : 1;   /* not a byte-level character: keep its bytes */
                memcpy(o + m, s + k, (size_t)l);
                m += (size_t)l; k += (size_t)l;
            }
        }
        t->piece_off[i] = (uint32_t)off;
        t->piece_len[i] = (uint32_t)m;
        if ((int)m > t->max_piece) t->max_piece = (int)m;
        off += m;
    }
    return 0;
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const tokenizer_t *t = ctx;
    int x = *(const int *)a, y = *(const int *)b;
    if (t->tok_len[x] != t->tok_len[y]) return t->tok_len[x] > t->tok_len[y] ? -1 : 1;
    return x - y;
}

static int build_specials(tokenizer_t *t, const gguf_t *g) {
    int n = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        int tt = t->ttype[i];
        if ((tt == TOK_TYPE_CONTROL || tt == TOK_TYPE_USER_DEFINED || tt == TOK_TYPE_UNKNOWN) && t->tok_len[i]) n++;
    }
    t->special = malloc((size_t)(n ? n : 1) * sizeof *t->special);
    if (!t->special) return TERN_ENOMEM;
    for (int i = 0; i < t->n_vocab; i++) {
        int tt = t->ttype[i];
        if ((tt == TOK_TYPE_CONTROL || tt == TOK_TYPE_USER_DEFINED || tt == TOK_TYPE_UNKNOWN) && t->tok_len[i])
            t->special[t->n_special++] = i;
    }
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special, t);
    /* per-model strip attributes that llama.cpp sets by name (Phi-3 strips spaces after specials) */
    char name[128] = "";
    gguf_get_str(g, "general.name", name, sizeof name);
    for (char *p = name; *p; p++) *p = (char)tolower((uint8_t)*p);
    if (strstr(name, "phi-3") || strstr(name, "phi3")) {
        for (int k = 0; k < t->n_special; k++) t->attr[t->special[k]] |= TOK_ATTR_RSTRIP;
        const char *no[] = {"<unk>", "<s>", "<|endoftext|>"};
        for (int k = 0; k < 3; k++) {
            int id = tokenizer_find(t, no[k]);
            if (id >= 0) t->attr[id] &= (uint8_t)~TOK_ATTR_RSTRIP;
        }
        int id = tokenizer_find(t, "</s>");
        if (id >= 0) t->attr[id] |= TOK_ATTR_RSTRIP;
    }
    return 0;
}

static void find_eog(tokenizer_t *t) {
    static const char *const eot_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                            "<|end_of_text|>", "<EOT>", "<|eom_id|>", NULL};
    for (int k = 0; eot_names[k] && t->eot < 0; k++) {
        int id = tokenizer_find(t, eot_names[k]);
        if (id >= 0 && strcmp(eot_names[k], "<|eom_id|>")) t->eot = id;
    }
    int cand[16], nc = 0;
    cand[nc++] = t->eos;
    cand[nc++] = t->eot;
    for (int k = TOKENIZER_FIM_PAD; k <= TOKENIZER_FIM_SEP; k++) cand[nc++] = t->fim[k];   /* as llama.cpp */
    for (int k = 0; eot_names[k]; k++) cand[nc++] = tokenizer_find(t, eot_names[k]);
    for (int k = 0; k < nc; k++) {
        if (cand[k] < 0 || tokenizer_is_eog(t, cand[k]) || t->n_eog >= (int)(sizeof t->eog / sizeof t->eog[0])) continue;
        t->eog[t->n_eog++] = cand[k];
    }
}

static void find_bytes(tokenizer_t *t) {
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        int id = tokenizer_find(t, buf);
        if (id < 0 && t->type == TOK_SPM) id = tok_lookup(t, (char[1]){(char)b}, 1);
        t->byte_tok[b] = id;
        tok_bchar_t *c = &t->bchar[b];
        c->len = (uint8_t)cp_to_utf8((uint32_t)byte_to_cp(b), c->utf8);
        c->id = tok_lookup(t, c->utf8, c->len);
    }
}

/* does any token have ▁ right after another (non-▁) character? */
static int ws_inside_token(const tokenizer_t *t) {
    for (int i = 0; i < t->n_vocab; i++) {
        const char *p = t->arena + t->tok_off[i];
        size_t n = t->tok_len[i];
        for (size_t k = 1; k + 3 <= n; k++) {
            if (memcmp(p + k, "\xE2\x96\x81", 3)) continue;
            if (k < 3 || memcmp(p + k - 3, "\xE2\x96\x81", 3)) return 1;
        }
    }
    return 0;
}

static int load_type(tokenizer_t *t, const gguf_t *g, char *err, size_t errlen) {
    char model[64] = "";
    if (gguf_get_str(g, "tokenizer.ggml.model", model, sizeof model) < 0)
        return err_set(err, errlen, TERN_ENOTFOUND, "tokenizer: tokenizer.ggml.model is missing");
    if (!strcmp(model, "llama")) {
        t->type = TOK_SPM;
        t->bos = 1; t->eos = 2; t->unk = 0;
        t->add_bos = 1;
        t->add_space_prefix = 1;
        return 0;
    }
    if (!strcmp(model, "gpt2")) {
        t->type = TOK_BPE;
        return 0;
    }
    if (!strcmp(model, "bert") || !strcmp(model, "t5") || !strcmp(model, "rwkv"))
        return err_set(err, errlen, TERN_ENOTSUP, "tokenizer: tokenizer.ggml.model '%s' is not supported "
                       "(only gpt2 byte-level BPE and llama SentencePiece)", model);
    return err_set(err, errlen, TERN_EFORMAT, "tokenizer: unknown tokenizer.ggml.model '%s'", model);
}

static int load_pre(tokenizer_t *t, const gguf_t *g, char *err, size_t errlen) {
    char pre[64] = "default";
    gguf_get_str(g, "tokenizer.ggml.pre", pre, sizeof pre);
    snprintf(t->pre_name, sizeof t->pre_name, "%s", pre);
    if (t->type != TOK_BPE) return 0;
    for (const pre_def_t *d = PRE_DEFS; d->name; d++) {
        if (strcmp(d->name, pre)) continue;
        t->pre = d->pre;
        t->ignore_merges = d->ignore_merges;
        t->add_bos = d->add_bos;
        return compile_regexes(t, d->re, err, errlen);
    }
    return err_set(err, errlen, TERN_ENOTSUP, "tokenizer: unknown pre-tokenizer type tokenizer.ggml.pre = '%s'", pre);
}

static int load_specials(tokenizer_t *t, const gguf_t *g, char *err, size_t errlen) {
    int n = t->n_vocab, rc;
    int *defaults[] = {&t->bos, &t->eos, &t->eot, &t->unk, &t->pad};
    for (int k = 0; k < 5; k++)
        if (*defaults[k] >= n) *defaults[k] = -1;   /* model-type defaults outside a tiny vocab */
    if ((rc = get_id(g, "tokenizer.ggml.bos_token_id", n, &t->bos, err, errlen)) < 0) return rc;
    if ((rc = get_id(g, "tokenizer.ggml.eos_token_id", n, &t->eos, err, errlen)) < 0) return rc;
    if ((rc = get_id(g, "tokenizer.ggml.eot_token_id", n, &t->eot, err, errlen)) < 0) return rc;
    if ((rc = get_id(g, "tokenizer.ggml.unknown_token_id", n, &t->unk, err, errlen)) < 0) return rc;
    if ((rc = get_id(g, "tokenizer.ggml.padding_token_id", n, &t->pad, err, errlen)) < 0) return rc;
    get_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
    get_flag(g, "tokenizer.ggml.add_eos_token", &t->add_eos);
    get_flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    if (t->add_bos && t->bos < 0)
        return err_set(err, errlen, TERN_EFORMAT,
                       "tokenizer: tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is not set");
    return 0;
}

int tokenizer_load(tokenizer_t **out, const gguf_t *g, char *err, size_t errlen) {
    TERN_ASSERT(out && g);
    *out = NULL;
    tokenizer_t *t = calloc(1, sizeof *t);
    if (!t) return err_set(err, errlen, TERN_ENOMEM, "tokenizer: out of memory");
    t->bos = t->eos = t->eot = t->unk = t->pad = -1;
    int rc;
    if ((rc = load_type(t, g, err, errlen)) < 0) goto fail;
    if ((rc = load_tokens(t, g, err, errlen)) < 0) goto fail;
    if ((rc = load_pre(t, g, err, errlen)) < 0) goto fail;
    if (t->type == TOK_BPE && (rc = load_merges(t, g, err, errlen)) < 0) goto fail;
    if ((rc = load_specials(t, g, err, errlen)) < 0) goto fail;
    find_fim(t, g);
    find_bytes(t);
    t->spm_cut = t->type == TOK_SPM && !ws_inside_token(t);
    if ((rc = build_pieces(t, err, errlen)) < 0) goto fail;
    if ((rc = build_specials(t, g)) < 0) {
        err_set(err, errlen, rc, "tokenizer: out of memory");
        goto fail;
    }
    find_eog(t);
    if ((rc = chat_init(t, g, err, errlen)) < 0) goto fail;
    *out = t;
    return 0;
fail:
    tokenizer_destroy(&t);
    return rc;
}
