/* grammar: GBNF grammars (llama.cpp's syntax) compiled to flat rule tables, a pushdown matcher
 * over Unicode code points whose parse stacks live in a hash-consed graph (equal stacks are one
 * frame id, so sets of stacks dedup and compare as integers), and the next-token mask: a
 * preorder walk of the vocabulary's prefix tree that memoises the matcher's transitions within
 * the call, so a state that loops on itself (inside a JSON string) costs a lookup per byte.
 * Not here: JSON Schema (json_schema.c), applying the mask to logits (the sampler). */
#include "coordinator/grammar.h"
#include "core/err.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Internal limits on what a grammar may expand to (repetitions and groups generate rules, a
 * repetition copies its item): beyond them the grammar is refused. GRAMMAR_MAX_RULES counts the
 * named rules; GEN_MAX_RULES all of them. */
#define GEN_MAX_RULES (1u << 16)
#define GEN_MAX_ELEMS (1u << 22)
#define GEN_MAX_REPEAT 1000
#define GEN_MAX_NEST 256
/* Matcher limits: frames (stack cells) a state may hold, expansion steps per code point. A step
 * past them rejects the code point, as if the grammar did not allow it. */
#define GSS_MAX_FRAMES (1u << 21)
#define ADV_MAX_WORK (1u << 16)
#define ADV_LIMIT (-1000)
/* Per-mask-call memo budget: past it the memo is rebuilt from the states on the walk's path. */
#define MEMO_MAX_FRAMES (1u << 20)
#define MEMO_MAX_DATA (1u << 22)
#define MEMO_MAX_TRANS (1u << 21)
/* Expansion steps one mask may spend: past it the mask fails with TERN_ENOTSUP. The engine thread
 * computes the masks between steps, so a grammar that costs much per token slows every sequence:
 * a JSON Schema takes ~2e4 steps a mask on Llama-3's 128k vocabulary, a pathologically ambiguous
 * grammar ((. | .. | ...){0,500}) ~8e6 (~100 ms); 2^22 (~50 ms) leaves benign grammars 200x room. */
#define MASK_MAX_WORK (1ull << 22)
#define NONE UINT32_MAX

/* ---- small helpers ------------------------------------------------------------------------- */

typedef struct u32vec { uint32_t *v; size_t n, cap; } u32vec_t;

static int u32vec_reserve(u32vec_t *a, size_t need) {
    if (need <= a->cap) return 0;
    size_t cap = a->cap ? a->cap : 16;
    while (cap < need) cap *= 2;
    uint32_t *v = realloc(a->v, cap * sizeof *v);
    if (!v) return TERN_ENOMEM;
    a->v = v;
    a->cap = cap;
    return 0;
}

static int u32vec_push(u32vec_t *a, uint32_t x) {
    if (a->n == a->cap && u32vec_reserve(a, a->n + 1)) return TERN_ENOMEM;
    a->v[a->n++] = x;
    return 0;
}

static int u32vec_append(u32vec_t *a, const uint32_t *x, size_t n) {
    if (u32vec_reserve(a, a->n + n)) return TERN_ENOMEM;
    if (n) memcpy(a->v + a->n, x, n * sizeof *x);
    a->n += n;
    return 0;
}

static int u32_cmp(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static void u32_sort(uint32_t *v, size_t n) {
    if (n > 24) { qsort(v, n, sizeof *v, u32_cmp); return; }
    for (size_t i = 1; i < n; i++) {
        uint32_t x = v[i];
        size_t j = i;
        for (; j && v[j - 1] > x; j--) v[j] = v[j - 1];
        v[j] = x;
    }
}

static uint32_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (uint32_t)x;
}

static uint32_t hash_u32s(const uint32_t *v, size_t n, uint32_t seed) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ seed;
    for (size_t i = 0; i < n; i++) h = (h ^ v[i]) * 0x100000001B3ull;
    return mix64(h);
}

/* UTF-8 sequence length from its lead byte (0: not a lead byte), and the range it may encode */
static int utf8_lead_len(uint8_t b) {
    if (b < 0x80) return 1;
    if (b < 0xC2) return 0;
    return b < 0xE0 ? 2 : b < 0xF0 ? 3 : b < 0xF5 ? 4 : 0;
}
static const uint32_t utf8_min[5] = {0, 0, 0x80, 0x800, 0x10000};
static const uint32_t utf8_max[5] = {0, 0x7F, 0x7FF, 0xFFFF, 0x10FFFF};

static int cp_valid(uint32_t cp, int len) {
    return cp >= utf8_min[len] && cp <= utf8_max[len] && (cp < 0xD800 || cp > 0xDFFF);
}

/* decodes one well-formed UTF-8 sequence at s[0..n): its length, or 0 when malformed */
static int utf8_decode(const uint8_t *s, size_t n, uint32_t *cp) {
    int len = utf8_lead_len(s[0]);
    if (!len || (size_t)len > n) return 0;
    uint32_t v = len == 1 ? s[0] : s[0] & (0x7Fu >> len);
    for (int k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        v = v << 6 | (s[k] & 0x3Fu);
    }
    if (!cp_valid(v, len)) return 0;
    *cp = v;
    return len;
}

/* ---- the compiled grammar ------------------------------------------------------------------ */

/* An element is (type << 28 | value). A rule's body is its alternatives separated by GE_ALT and
 * closed by GE_END; GE_REF's value is a rule id, GE_LIT's a code point, GE_CLS's a class id. */
enum { GE_END, GE_ALT, GE_REF, GE_LIT, GE_CLS };
#define GE(t, v) ((uint32_t)(t) << 28 | (uint32_t)(v))
#define GE_T(e) ((e) >> 28)
#define GE_V(e) ((e) & 0x0FFFFFFFu)
#define GE_ENDS(e) (GE_T(e) <= GE_ALT)

struct grammar {
    uint32_t *elem;          /* (n_elem) all rule bodies */
    uint32_t n_elem, n_rules, root;
    uint32_t *alt_off;       /* (n_rules + 1) rule r's alternatives: alts[alt_off[r] .. alt_off[r+1]) */
    uint32_t *alts;          /* element index where each alternative starts (at GE_ALT/GE_END: empty) */
    uint32_t n_cls;
    uint32_t *cls_off;       /* (n_cls + 1) class c's ranges: rng[2 * cls_off[c] ..] */
    uint32_t *cls_rng;       /* (lo, hi) pairs, sorted, disjoint, negation already applied */
    uint64_t *cls_ascii;     /* (n_cls, 2) bitmap of the class over code points 0..127 */
};

/* class c holds some code point in [lo, hi] */
static int cls_hits(const grammar_t *g, uint32_t c, uint32_t lo, uint32_t hi) {
    const uint32_t *r = g->cls_rng + 2 * (size_t)g->cls_off[c];
    uint32_t a = 0, n = g->cls_off[c + 1] - g->cls_off[c], b = n;
    while (a < b) {
        uint32_t m = (a + b) / 2;
        if (r[2 * m + 1] < lo) a = m + 1;
        else b = m;
    }
    return a < n && r[2 * a] <= hi;
}

static int elem_match(const grammar_t *g, uint32_t e, uint32_t cp) {
    if (GE_T(e) == GE_LIT) return GE_V(e) == cp;
    if (cp < 128) return (int)(g->cls_ascii[2 * GE_V(e) + (cp >> 6)] >> (cp & 63) & 1);
    return cls_hits(g, GE_V(e), cp, cp);
}

static int elem_hits(const grammar_t *g, uint32_t e, uint32_t lo, uint32_t hi) {
    if (GE_T(e) == GE_LIT) return GE_V(e) >= lo && GE_V(e) <= hi;
    return cls_hits(g, GE_V(e), lo, hi);
}

void grammar_destroy(grammar_t **gp) {
    grammar_t *g = gp ? *gp : NULL;
    if (!g) return;
    free(g->elem);
    free(g->alt_off);
    free(g->alts);
    free(g->cls_off);
    free(g->cls_rng);
    free(g->cls_ascii);
    free(g);
    *gp = NULL;
}

/* ---- parse stacks: a graph of hash-consed frames ------------------------------------------ */

/* Frame f is the stack whose top is element pos[f] over the stack par[f] (par[f] < f); frame 0
 * is the empty stack. The top of a live stack is a character element; frames below it hold the
 * element to continue with when the rule above returns. */
typedef struct gss {
    uint32_t *pos, *par, *seen; /* (cap) seen: visit stamps of the current expansion */
    uint32_t n, cap, gen;
    uint32_t *ht, mask;         /* (2 cap) open addressing (pos, par) → frame; 0: free */
    u32vec_t work;
    uint64_t steps;             /* expansion steps so far (for MASK_MAX_WORK) */
    int oom;
} gss_t;

static uint32_t gss_slot(const gss_t *s, uint32_t pos, uint32_t par) {
    uint32_t i = mix64((uint64_t)pos << 32 | par) & s->mask;
    for (;; i = (i + 1) & s->mask) {
        uint32_t f = s->ht[i];
        if (!f || (s->pos[f] == pos && s->par[f] == par)) return i;
    }
}

static void gss_rehash(gss_t *s) {
    memset(s->ht, 0, ((size_t)s->mask + 1) * sizeof *s->ht);
    for (uint32_t f = 1; f < s->n; f++) s->ht[gss_slot(s, s->pos[f], s->par[f])] = f;
}

static int gss_init(gss_t *s, uint32_t cap) {
    memset(s, 0, sizeof *s);
    s->cap = cap;
    s->mask = 2 * cap - 1;
    s->pos = malloc(cap * sizeof *s->pos);
    s->par = malloc(cap * sizeof *s->par);
    s->seen = calloc(cap, sizeof *s->seen);
    s->ht = calloc(2 * (size_t)cap, sizeof *s->ht);
    s->n = 1;
    s->pos[0] = s->par[0] = 0;
    return s->pos && s->par && s->seen && s->ht ? 0 : TERN_ENOMEM;
}

static void gss_free(gss_t *s) {
    free(s->pos);
    free(s->par);
    free(s->seen);
    free(s->ht);
    free(s->work.v);
    memset(s, 0, sizeof *s);
}

static int gss_copy(gss_t *d, const gss_t *s) {
    if (gss_init(d, s->cap)) return TERN_ENOMEM;
    memcpy(d->pos, s->pos, s->n * sizeof *s->pos);
    memcpy(d->par, s->par, s->n * sizeof *s->par);
    memcpy(d->ht, s->ht, ((size_t)s->mask + 1) * sizeof *s->ht);
    d->n = s->n;
    return 0;
}

static int gss_grow(gss_t *s) {
    uint32_t cap = 2 * s->cap;
    uint32_t *pos = realloc(s->pos, cap * sizeof *pos);
    if (pos) s->pos = pos;
    uint32_t *par = realloc(s->par, cap * sizeof *par);
    if (par) s->par = par;
    uint32_t *seen = realloc(s->seen, cap * sizeof *seen);
    if (seen) s->seen = seen;
    uint32_t *ht = malloc(2 * (size_t)cap * sizeof *ht);
    if (!pos || !par || !seen || !ht) {
        free(ht);
        s->oom = 1;
        return TERN_ENOMEM;
    }
    free(s->ht);
    s->ht = ht;
    s->cap = cap;
    s->mask = 2 * cap - 1;
    gss_rehash(s);
    return 0;
}

/* the frame (pos, par), made if new; NONE past GSS_MAX_FRAMES or out of memory */
static uint32_t gss_push(gss_t *s, uint32_t pos, uint32_t par) {
    uint32_t i = gss_slot(s, pos, par);
    if (s->ht[i]) return s->ht[i];
    if (s->n == s->cap) {
        if (s->cap >= GSS_MAX_FRAMES || gss_grow(s)) return NONE;
        i = gss_slot(s, pos, par);
    }
    uint32_t f = s->n++;
    s->pos[f] = pos;
    s->par[f] = par;
    s->seen[f] = 0;
    s->ht[i] = f;
    return f;
}

static void gss_new_gen(gss_t *s) {
    if (++s->gen == 0) {
        memset(s->seen, 0, s->cap * sizeof *s->seen);
        s->gen = 1;
    }
}

/* Expands the frames on s->work until each stack's top is a character element or the stack is
 * empty, adding those stacks to out (each once: a visited frame expands as it did before).
 * 0, ADV_LIMIT (GRAMMAR_MAX_STACKS, ADV_MAX_WORK or GSS_MAX_FRAMES passed) or TERN_ENOMEM. */
static int gss_expand(const grammar_t *g, gss_t *s, u32vec_t *out) {
    uint32_t budget = ADV_MAX_WORK;
    while (s->work.n) {
        uint32_t f = s->work.v[--s->work.n];
        if (s->seen[f] == s->gen) continue;
        s->seen[f] = s->gen;
        if (!budget--) return ADV_LIMIT;
        s->steps++;
        uint32_t e = f ? g->elem[s->pos[f]] : GE(GE_END, 0);
        if (GE_T(e) != GE_REF) {
            if (out->n >= GRAMMAR_MAX_STACKS) return ADV_LIMIT;
            if (u32vec_push(out, f)) return TERN_ENOMEM;
            continue;
        }
        uint32_t base = s->par[f], next = s->pos[f] + 1, r = GE_V(e);
        if (!GE_ENDS(g->elem[next]) && (base = gss_push(s, next, base)) == NONE) return s->oom ? TERN_ENOMEM : ADV_LIMIT;
        for (uint32_t k = g->alt_off[r]; k < g->alt_off[r + 1]; k++) {
            uint32_t a = g->alts[k], nf = GE_ENDS(g->elem[a]) ? base : gss_push(s, a, base);
            if (nf == NONE || u32vec_push(&s->work, nf)) return s->oom || nf != NONE ? TERN_ENOMEM : ADV_LIMIT;
        }
    }
    u32_sort(out->v, out->n);
    return 0;
}

/* the stacks at the start of rule r */
static int gss_start(const grammar_t *g, gss_t *s, uint32_t r, u32vec_t *out) {
    gss_new_gen(s);
    out->n = s->work.n = 0;
    for (uint32_t k = g->alt_off[r]; k < g->alt_off[r + 1]; k++) {
        uint32_t a = g->alts[k], f = GE_ENDS(g->elem[a]) ? 0 : gss_push(s, a, 0);
        if (f == NONE) return s->oom ? TERN_ENOMEM : ADV_LIMIT;
        if (u32vec_push(&s->work, f)) return TERN_ENOMEM;
    }
    return gss_expand(g, s, out);
}

/* out = the stacks of in[n] that accept code point cp, advanced past it and expanded (sorted).
 * Their count (0: rejected), ADV_LIMIT or TERN_ENOMEM. */
static int gss_advance(const grammar_t *g, gss_t *s, const uint32_t *in, size_t n, uint32_t cp, u32vec_t *out) {
    gss_new_gen(s);
    out->n = s->work.n = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t f = in[i];
        if (!f || !elem_match(g, g->elem[s->pos[f]], cp)) continue;
        uint32_t nf = s->par[f], next = s->pos[f] + 1;
        if (!GE_ENDS(g->elem[next]) && (nf = gss_push(s, next, nf)) == NONE) return s->oom ? TERN_ENOMEM : ADV_LIMIT;
        if (u32vec_push(&s->work, nf)) return TERN_ENOMEM;
    }
    int rc = gss_expand(g, s, out);
    return rc < 0 ? rc : (int)out->n;
}

/* Compaction keeps the frames reachable from the stacks marked since gss_mark_begin, renumbered
 * in their order (so sorted sets stay sorted); s->work.v[old] is then the new id. */
static void gss_mark_begin(gss_t *s) { gss_new_gen(s); }

static void gss_mark(gss_t *s, const uint32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++)
        for (uint32_t f = ids[i]; f && s->seen[f] != s->gen; f = s->par[f]) s->seen[f] = s->gen;
}

static int gss_compact(gss_t *s) {
    if (u32vec_reserve(&s->work, s->n)) return TERN_ENOMEM;
    uint32_t *map = s->work.v, k = 1;
    map[0] = 0;
    for (uint32_t f = 1; f < s->n; f++) {
        if (s->seen[f] != s->gen) continue;
        map[f] = k;
        s->pos[k] = s->pos[f];
        s->par[k] = map[s->par[f]];
        s->seen[k] = 0;
        k++;
    }
    s->n = k;
    gss_rehash(s);
    return 0;
}

/* ---- one byte of text ---------------------------------------------------------------------- */

/* A code point split across tokens: the bits so far, the bytes still to come, its length. */
#define PART(bits, left, len) ((bits) | (uint32_t)(left) << 16 | (uint32_t)(len) << 20)
#define PART_BITS(p) ((p) & 0xFFFFu)
#define PART_LEFT(p) ((p) >> 16 & 15u)
#define PART_LEN(p) ((p) >> 20 & 15u)

/* some stack of in[n] could take a code point that starts with these bits (left more bytes) */
static int partial_ok(const grammar_t *g, const gss_t *s, const uint32_t *in, size_t n, uint32_t bits,
                      unsigned left, unsigned len) {
    uint32_t lo = bits << (6 * left), hi = lo | ((1u << (6 * left)) - 1);
    if (lo < utf8_min[len]) lo = utf8_min[len];
    if (hi > utf8_max[len]) hi = utf8_max[len];
    uint32_t r[2][2] = {{lo, hi < 0xD7FF ? hi : 0xD7FF}, {lo > 0xE000 ? lo : 0xE000, hi}};
    for (size_t i = 0; i < n; i++) {
        if (!in[i]) continue;
        uint32_t e = g->elem[s->pos[in[i]]];
        for (int k = 0; k < 2; k++)
            if (r[k][0] <= r[k][1] && elem_hits(g, e, r[k][0], r[k][1])) return 1;
    }
    return 0;
}

enum { STEP_REJECT, STEP_PARTIAL, STEP_FULL };

/* Feeds byte b to the stacks in[n] with the pending partial code point *part. STEP_PARTIAL: the
 * stacks stay, *part is updated; STEP_FULL: a code point completed, out holds the new stacks and
 * *part is 0; STEP_REJECT (also for malformed UTF-8 and the matcher limits); TERN_ENOMEM. */
static int step_byte(const grammar_t *g, gss_t *s, const uint32_t *in, size_t n, uint32_t *part, uint8_t b,
                     u32vec_t *out) {
    uint32_t cp, len, left;
    if (*part) {
        if ((b & 0xC0) != 0x80) return STEP_REJECT;
        cp = PART_BITS(*part) << 6 | (b & 0x3Fu);
        left = PART_LEFT(*part) - 1;
        len = PART_LEN(*part);
        if (!left && !cp_valid(cp, (int)len)) return STEP_REJECT;
    } else {
        len = (uint32_t)utf8_lead_len(b);
        if (!len) return STEP_REJECT;
        cp = len == 1 ? b : b & (0x7Fu >> len);
        left = len - 1;
    }
    if (left) {
        if (!partial_ok(g, s, in, n, cp, left, len)) return STEP_REJECT;
        *part = PART(cp, left, len);
        return STEP_PARTIAL;
    }
    int rc = gss_advance(g, s, in, n, cp, out);
    if (rc == TERN_ENOMEM) return rc;
    if (rc <= 0) return STEP_REJECT;
    *part = 0;
    return STEP_FULL;
}

/* ---- parser -------------------------------------------------------------------------------- */

/* name: the name's offset in the text (name_len 0: a rule generated for a group or repetition in
 * rule owner); def_at / ref_at: offsets of the definition and first reference; body: offset of
 * the body in P->body (NONE while undefined). */
typedef struct prule { uint32_t name, name_len, def_at, ref_at, body, owner; } prule_t;

typedef struct parser {
    const char *s;
    size_t len, i;
    char *err;
    size_t errlen;
    prule_t *rules;
    uint32_t n_rules, cap_rules, n_named, any_cls, depth;
    uint32_t *names;                 /* (2 GRAMMAR_MAX_RULES) name hash: rule id + 1, 0 free */
    u32vec_t body, seq, tmp, rng, cls_off;
} parser_t;

static void line_col(const char *s, size_t at, int *line, int *col) {
    *line = 1;
    size_t start = 0;
    for (size_t k = 0; k < at; k++)
        if (s[k] == '\n') { ++*line; start = k + 1; }
    *col = (int)(at - start) + 1;
}

/* the message "line L col C: ..." for text offset at; TERN_EINVAL */
__attribute__((format(printf, 3, 4))) static int perr(parser_t *P, size_t at, const char *fmt, ...) {
    if (!P->err || !P->errlen) return TERN_EINVAL;
    int line, col, k;
    line_col(P->s, at < P->len ? at : P->len, &line, &col);
    k = snprintf(P->err, P->errlen, "line %d col %d: ", line, col);
    if (k >= 0 && (size_t)k < P->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(P->err + k, P->errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return TERN_EINVAL;
}

static int peek(const parser_t *P, size_t k) { return P->i + k < P->len ? (uint8_t)P->s[P->i + k] : -1; }

static int is_name(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static void skip_ws(parser_t *P) {
    for (int c; (c = peek(P, 0)) >= 0; P->i++) {
        if (c == '#')
            while (peek(P, 1) >= 0 && peek(P, 1) != '\n') P->i++;
        else if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return;
    }
}

/* a quotable description of the character at the cursor, for messages */
static const char *char_desc(const parser_t *P, char buf[16]) {
    int c = peek(P, 0);
    if (c > 32 && c < 127) snprintf(buf, 16, "'%c'", c);
    else snprintf(buf, 16, "byte 0x%02X", c & 0xFF);
    return buf;
}

static uint32_t name_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t k = 0; k < n; k++) h = (h ^ (uint8_t)s[k]) * 1099511628211ull;
    return mix64(h);
}

static int64_t rule_add(parser_t *P, uint32_t name, uint32_t name_len, uint32_t owner, size_t at) {
    if (P->n_rules >= GEN_MAX_RULES)
        return perr(P, at, "grammar expands to more than %u rules (groups and repetitions count)", GEN_MAX_RULES);
    if (P->n_rules == P->cap_rules) {
        uint32_t cap = P->cap_rules ? 2 * P->cap_rules : 64;
        prule_t *r = realloc(P->rules, cap * sizeof *r);
        if (!r) return TERN_ENOMEM;
        P->rules = r;
        P->cap_rules = cap;
    }
    uint32_t id = P->n_rules++;
    P->rules[id] = (prule_t){name, name_len, NONE, (uint32_t)at, NONE, owner == NONE ? id : owner};
    return id;
}

/* the named rule at text[at .. at+n), added (undefined) on first sight; id or error */
static int64_t rule_named(parser_t *P, size_t at, size_t n) {
    uint32_t mask = 2 * GRAMMAR_MAX_RULES - 1, i = name_hash(P->s + at, n) & mask;
    for (;; i = (i + 1) & mask) {
        uint32_t r = P->names[i];
        if (!r) break;
        prule_t *pr = &P->rules[r - 1];
        if (pr->name_len == n && !memcmp(P->s + pr->name, P->s + at, n)) return r - 1;
    }
    if (P->n_named >= GRAMMAR_MAX_RULES) return perr(P, at, "more than GRAMMAR_MAX_RULES (%d) rules", GRAMMAR_MAX_RULES);
    int64_t id = rule_add(P, (uint32_t)at, (uint32_t)n, NONE, at);
    if (id < 0) return id;
    P->n_named++;
    P->names[i] = (uint32_t)id + 1;
    return id;
}

static int emit(parser_t *P, uint32_t e) {
    if (P->seq.n >= GEN_MAX_ELEMS) return perr(P, P->i, "grammar expands to more than %u elements", GEN_MAX_ELEMS);
    return u32vec_push(&P->seq, e);
}

/* appends e[n] (+ tail[nt]) as rule r's body */
static int body_set(parser_t *P, uint32_t r, const uint32_t *e, size_t n, const uint32_t *tail, size_t nt) {
    if (P->body.n + n + nt > GEN_MAX_ELEMS)
        return perr(P, P->i, "grammar expands to more than %u elements", GEN_MAX_ELEMS);
    P->rules[r].body = (uint32_t)P->body.n;
    if (u32vec_append(&P->body, e, n) || u32vec_append(&P->body, tail, nt)) return TERN_ENOMEM;
    return 0;
}

static int hex_digit(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* one character of a literal or class (an escape or a UTF-8 sequence) into *cp */
static int parse_char(parser_t *P, uint32_t *cp) {
    size_t at = P->i;
    int c = peek(P, 0);
    if (c != '\\') {
        int k = utf8_decode((const uint8_t *)P->s + P->i, P->len - P->i, cp);
        if (!k) return perr(P, at, "invalid UTF-8");
        P->i += (size_t)k;
        return 0;
    }
    c = peek(P, 1);
    if (c < 0) return perr(P, at, "unterminated escape at the end of the text");
    P->i += 2;
    int digits = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
    switch (c) {
    case 'n': *cp = '\n'; return 0;
    case 't': *cp = '\t'; return 0;
    case 'r': *cp = '\r'; return 0;
    case '\\': case '"': case '\'': case '[': case ']': case '-': case '^': case '/': *cp = (uint32_t)c; return 0;
    }
    if (!digits) {
        if (c > 32 && c < 127) return perr(P, at, "bad escape '\\%c'", c);
        return perr(P, at, "bad escape (a backslash before byte 0x%02X)", c & 0xFF);
    }
    uint32_t v = 0;
    for (int k = 0; k < digits; k++, P->i++) {
        int d = hex_digit(peek(P, 0));
        if (d < 0) return perr(P, at, "bad escape: '\\%c' needs %d hex digits", c, digits);
        v = v << 4 | (uint32_t)d;
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return perr(P, at, "bad escape: U+%X is not a Unicode scalar value", v);
    *cp = v;
    return 0;
}

static int parse_literal(parser_t *P) {
    size_t at = P->i++;
    for (int c; (c = peek(P, 0)) != '"'; ) {
        if (c < 0 || c == '\n' || c == '\r') return perr(P, at, "unterminated string literal");
        uint32_t cp;
        int rc = parse_char(P, &cp);
        if (!rc) rc = emit(P, GE(GE_LIT, cp));
        if (rc) return rc;
    }
    P->i++;
    return 0;
}

static int range_cmp(const void *a, const void *b) { return u32_cmp(a, b); }

/* P->tmp's (lo, hi) pairs → a new class (sorted, merged, complemented when neg); its id */
static int64_t class_add(parser_t *P, int neg) {
    uint32_t *r = P->tmp.v, n = (uint32_t)P->tmp.n / 2, m = 0, id = (uint32_t)P->cls_off.n;
    qsort(r, n, 2 * sizeof *r, range_cmp);
    for (uint32_t k = 0; k < n; k++) {
        if (m && r[2 * k] <= r[2 * (m - 1) + 1] + 1) {
            if (r[2 * k + 1] > r[2 * (m - 1) + 1]) r[2 * (m - 1) + 1] = r[2 * k + 1];
        } else {
            r[2 * m] = r[2 * k];
            r[2 * m + 1] = r[2 * k + 1];
            m++;
        }
    }
    if (u32vec_push(&P->cls_off, (uint32_t)(P->rng.n / 2))) return TERN_ENOMEM;
    if (!neg) return u32vec_append(&P->rng, r, 2 * (size_t)m) ? (int64_t)TERN_ENOMEM : (int64_t)id;
    uint32_t next = 0;
    for (uint32_t k = 0; k < m; k++) {
        if (r[2 * k] > next && (u32vec_push(&P->rng, next) || u32vec_push(&P->rng, r[2 * k] - 1))) return TERN_ENOMEM;
        next = r[2 * k + 1] + 1;
    }
    if (next <= 0x10FFFF && (u32vec_push(&P->rng, next) || u32vec_push(&P->rng, 0x10FFFF))) return TERN_ENOMEM;
    return id;
}

static int parse_class(parser_t *P) {
    size_t at = P->i++;
    int neg = peek(P, 0) == '^';
    P->i += (size_t)neg;
    P->tmp.n = 0;
    for (int c; (c = peek(P, 0)) != ']'; ) {
        if (c < 0 || c == '\n' || c == '\r') return perr(P, at, "unterminated character class");
        uint32_t lo, hi;
        int rc = parse_char(P, &lo);
        if (rc) return rc;
        hi = lo;
        int d = peek(P, 1);
        if (peek(P, 0) == '-' && d >= 0 && d != ']' && d != '\n' && d != '\r') {
            size_t rat = P->i++;
            if ((rc = parse_char(P, &hi))) return rc;
            if (hi < lo) return perr(P, rat, "empty range in character class (U+%X > U+%X)", lo, hi);
        }
        if (u32vec_push(&P->tmp, lo) || u32vec_push(&P->tmp, hi)) return TERN_ENOMEM;
    }
    P->i++;
    if (!P->tmp.n) return perr(P, at, "empty character class");
    int64_t id = class_add(P, neg);
    return id < 0 ? (int)id : emit(P, GE(GE_CLS, id));
}

static int parse_any(parser_t *P) {
    P->i++;
    if (P->any_cls == NONE) {
        P->tmp.n = 0;
        if (u32vec_push(&P->tmp, 0) || u32vec_push(&P->tmp, 0x10FFFF)) return TERN_ENOMEM;
        int64_t id = class_add(P, 0);
        if (id < 0) return (int)id;
        P->any_cls = (uint32_t)id;
    }
    return emit(P, GE(GE_CLS, P->any_cls));
}

/* a repetition bound: decimal, at most GEN_MAX_REPEAT */
static int parse_bound(parser_t *P, size_t at, uint32_t *v) {
    skip_ws(P);
    if (peek(P, 0) < '0' || peek(P, 0) > '9') return perr(P, P->i, "expected a number in '{...}'");
    for (*v = 0; peek(P, 0) >= '0' && peek(P, 0) <= '9'; P->i++) {
        *v = *v * 10 + (uint32_t)(peek(P, 0) - '0');
        if (*v > GEN_MAX_REPEAT) return perr(P, at, "repetition bound above %d", GEN_MAX_REPEAT);
    }
    skip_ws(P);
    return 0;
}

static int parse_braces(parser_t *P, uint32_t *lo, uint32_t *hi) {
    size_t at = P->i++;
    int rc = parse_bound(P, at, lo);
    if (rc) return rc;
    *hi = *lo;
    if (peek(P, 0) == ',') {
        P->i++;
        skip_ws(P);
        *hi = NONE;
        if (peek(P, 0) != '}' && (rc = parse_bound(P, at, hi))) return rc;
    }
    if (peek(P, 0) != '}') return perr(P, at, "unterminated repetition '{'");
    P->i++;
    if (*hi < *lo) return perr(P, at, "repetition {%u,%u}: the minimum is above the maximum", *lo, *hi);
    return 0;
}

/* applies the postfix operator at the cursor to the item at P->seq[last ..]: X{m,n} becomes m
 * copies of X and then rules r ::= X r | "" (n unbounded) or a chain of n - m nested optionals */
static int parse_repeat(parser_t *P, size_t last, uint32_t owner) {
    size_t at = P->i;
    uint32_t lo = 0, hi = NONE;
    int c = peek(P, 0), rc = 0;
    if (c == '{') {
        if ((rc = parse_braces(P, &lo, &hi))) return rc;
    } else {
        P->i++;
        lo = c == '+';
        hi = c == '?' ? 1 : NONE;
    }
    size_t k = P->seq.n - last;
    P->tmp.n = 0;
    if (u32vec_append(&P->tmp, P->seq.v + last, k)) return TERN_ENOMEM;
    P->seq.n = last;
    if ((uint64_t)lo * k + last > GEN_MAX_ELEMS)
        return perr(P, at, "grammar expands to more than %u elements", GEN_MAX_ELEMS);
    for (uint32_t j = 0; j < lo; j++)
        if (u32vec_append(&P->seq, P->tmp.v, k)) return TERN_ENOMEM;
    uint32_t prev = NONE, count = hi == NONE ? 1 : hi - lo;
    for (uint32_t j = 0; j < count && k; j++) {
        int64_t r = rule_add(P, 0, 0, owner, at);
        if (r < 0) return (int)r;
        uint32_t tail[3] = {GE(GE_REF, hi == NONE ? (uint32_t)r : prev), GE(GE_ALT, 0), GE(GE_END, 0)};
        int skip = hi != NONE && prev == NONE;   /* the innermost optional: X | "" */
        if ((rc = body_set(P, (uint32_t)r, P->tmp.v, k, tail + skip, 3 - (size_t)skip))) return rc;
        prev = (uint32_t)r;
    }
    return prev == NONE ? 0 : emit(P, GE(GE_REF, prev));
}

/* the cursor is at `name ::=` (a new rule begins) */
static int rule_starts_here(const parser_t *P) {
    parser_t q = *P;
    while (is_name(peek(&q, 0))) q.i++;
    skip_ws(&q);
    return peek(&q, 0) == ':' && peek(&q, 1) == ':' && peek(&q, 2) == '=';
}

static int parse_alts(parser_t *P, uint32_t r, uint32_t owner);

static int parse_group(parser_t *P, uint32_t owner) {
    size_t at = P->i++;
    if (++P->depth > GEN_MAX_NEST) return perr(P, at, "groups nested deeper than %d", GEN_MAX_NEST);
    int64_t r = rule_add(P, 0, 0, owner, at);
    if (r < 0) return (int)r;
    int rc = parse_alts(P, (uint32_t)r, owner);
    if (rc) return rc;
    P->depth--;
    if (peek(P, 0) != ')') return perr(P, at, "unclosed '('");
    P->i++;
    return emit(P, GE(GE_REF, r));
}

static int parse_seq(parser_t *P, uint32_t owner) {
    size_t last = NONE;
    for (;;) {
        skip_ws(P);
        int c = peek(P, 0), rc;
        size_t start = P->seq.n;
        char buf[16];
        if (c < 0 || c == '|' || c == ')') return 0;
        if (c == '"') rc = parse_literal(P);
        else if (c == '[') rc = parse_class(P);
        else if (c == '.') rc = parse_any(P);
        else if (c == '(') rc = parse_group(P, owner);
        else if (is_name(c)) {
            if (rule_starts_here(P)) return 0;
            size_t at = P->i;
            while (is_name(peek(P, 0))) P->i++;
            int64_t r = rule_named(P, at, P->i - at);
            rc = r < 0 ? (int)r : emit(P, GE(GE_REF, r));
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (last == NONE) return perr(P, P->i, "'%c' must follow something to repeat", c);
            rc = parse_repeat(P, last, owner);
            start = last;
        } else return perr(P, P->i, "unexpected %s", char_desc(P, buf));
        if (rc) return rc;
        last = start;
    }
}

/* alternatives up to the end of the rule or group, stored as rule r's body */
static int parse_alts(parser_t *P, uint32_t r, uint32_t owner) {
    size_t mark = P->seq.n;
    int rc;
    for (;;) {
        if ((rc = parse_seq(P, owner))) return rc;
        if (peek(P, 0) != '|') break;
        P->i++;
        if ((rc = emit(P, GE(GE_ALT, 0)))) return rc;
    }
    uint32_t end = GE(GE_END, 0);
    if ((rc = body_set(P, r, P->seq.v + mark, P->seq.n - mark, &end, 1))) return rc;
    P->seq.n = mark;
    return 0;
}

static int parse_rules(parser_t *P) {
    for (;;) {
        skip_ws(P);
        int c = peek(P, 0);
        char buf[16];
        if (c < 0) return 0;
        if (c == ')') return perr(P, P->i, "unmatched ')'");
        if (!is_name(c)) return perr(P, P->i, "expected a rule name, found %s", char_desc(P, buf));
        size_t at = P->i;
        while (is_name(peek(P, 0))) P->i++;
        size_t n = P->i - at;
        skip_ws(P);
        if (peek(P, 0) != ':' || peek(P, 1) != ':' || peek(P, 2) != '=')
            return perr(P, P->i, "expected '::=' after rule name '%.*s'", (int)(n < 64 ? n : 64), P->s + at);
        P->i += 3;
        int64_t r = rule_named(P, at, n);
        if (r < 0) return (int)r;
        prule_t *pr = &P->rules[r];
        if (pr->def_at != NONE) {
            int line, col;
            line_col(P->s, pr->def_at, &line, &col);
            return perr(P, at, "rule '%.*s' is defined twice (first at line %d)", (int)(n < 64 ? n : 64), P->s + at, line);
        }
        pr->def_at = (uint32_t)at;
        int rc = parse_alts(P, (uint32_t)r, (uint32_t)r);
        if (rc) return rc;
    }
}

/* ---- checks and tables after parsing ------------------------------------------------------- */

static int left_rec_err(parser_t *P, uint32_t r) {
    const prule_t *o = &P->rules[P->rules[r].owner];
    int n = (int)(o->name_len < 64 ? o->name_len : 64);
    return perr(P, o->def_at, "rule '%.*s' is left-recursive%s: it can reach itself before reading a character", n,
                P->s + o->name, P->rules[r].name_len ? "" : " (through a group or repetition in it)");
}

/* alternatives of every rule (g->alt_off, g->alts) from the bodies */
static int build_alts(grammar_t *g) {
    uint32_t n_alts = 0;
    for (uint32_t i = 0; i < g->n_elem; i++) n_alts += GE_ENDS(g->elem[i]);
    g->alt_off = malloc(((size_t)g->n_rules + 1) * sizeof *g->alt_off);
    g->alts = malloc(((size_t)n_alts + 1) * sizeof *g->alts);
    if (!g->alt_off || !g->alts) return TERN_ENOMEM;
    return 0;
}

static void fill_alts(grammar_t *g, const prule_t *rules) {
    uint32_t k = 0;
    for (uint32_t r = 0; r < g->n_rules; r++) {
        g->alt_off[r] = k;
        uint32_t i = rules[r].body;
        g->alts[k++] = i;
        for (; GE_T(g->elem[i]) != GE_END; i++)
            if (GE_T(g->elem[i]) == GE_ALT) g->alts[k++] = i + 1;
    }
    g->alt_off[g->n_rules] = k;
}

/* nullable[r]: rule r can match the empty text (a worklist over alternatives' pending refs) */
static int find_nullable(const grammar_t *g, uint8_t *nullable) {
    uint32_t n_alts = g->alt_off[g->n_rules], *cnt = calloc(n_alts + 1, sizeof *cnt);
    uint32_t *alt_rule = malloc((n_alts + 1) * sizeof *alt_rule), *occ_off = calloc(g->n_rules + 2, sizeof *occ_off);
    u32vec_t occ = {0}, queue = {0};
    int rc = TERN_ENOMEM;
    if (!cnt || !alt_rule || !occ_off) goto out;
    for (uint32_t r = 0; r < g->n_rules; r++)
        for (uint32_t a = g->alt_off[r]; a < g->alt_off[r + 1]; a++) {
            alt_rule[a] = r;
            for (uint32_t i = g->alts[a]; !GE_ENDS(g->elem[i]); i++)
                if (GE_T(g->elem[i]) == GE_REF) cnt[a]++;
                else { cnt[a] = NONE; break; }
            for (uint32_t i = g->alts[a]; cnt[a] != NONE && !GE_ENDS(g->elem[i]); i++) occ_off[GE_V(g->elem[i]) + 2]++;
        }
    for (uint32_t r = 0; r < g->n_rules; r++) occ_off[r + 2] += occ_off[r + 1];
    if (u32vec_reserve(&occ, occ_off[g->n_rules + 1] + 1) || u32vec_reserve(&queue, g->n_rules)) goto out;
    for (uint32_t a = 0; a < n_alts; a++)
        for (uint32_t i = g->alts[a]; cnt[a] != NONE && !GE_ENDS(g->elem[i]); i++)
            occ.v[occ_off[GE_V(g->elem[i]) + 1]++] = a;
    for (uint32_t a = 0; a < n_alts; a++)
        if (!cnt[a] && !nullable[alt_rule[a]]) { nullable[alt_rule[a]] = 1; queue.v[queue.n++] = alt_rule[a]; }
    while (queue.n) {
        uint32_t r = queue.v[--queue.n];
        for (uint32_t k = occ_off[r]; k < occ_off[r + 1]; k++) {
            uint32_t a = occ.v[k];
            if (--cnt[a] == 0 && !nullable[alt_rule[a]]) { nullable[alt_rule[a]] = 1; queue.v[queue.n++] = alt_rule[a]; }
        }
    }
    rc = 0;
out:
    free(cnt);
    free(alt_rule);
    free(occ_off);
    free(occ.v);
    free(queue.v);
    return rc;
}

/* refuses a rule that can reach itself without consuming a character (the matcher's expansion
 * would never end): a cycle in the graph r → s where s starts an alternative of r after a prefix
 * of nullable rules. Iterative depth-first search, so deep chains cannot overflow the stack. */
static int check_left_recursion(parser_t *P, const grammar_t *g) {
    uint8_t *nullable = calloc(g->n_rules + 1, 1), *color = calloc(g->n_rules + 1, 1);
    uint32_t *eoff = calloc(g->n_rules + 2, sizeof *eoff), *it = malloc((g->n_rules + 1) * sizeof *it);
    u32vec_t edges = {0}, stack = {0};
    int rc = TERN_ENOMEM;
    if (!nullable || !color || !eoff || !it || find_nullable(g, nullable)) goto out;
    for (uint32_t r = 0; r < g->n_rules; r++) {
        eoff[r] = (uint32_t)edges.n;
        for (uint32_t a = g->alt_off[r]; a < g->alt_off[r + 1]; a++)
            for (uint32_t i = g->alts[a]; GE_T(g->elem[i]) == GE_REF; i++) {
                if (u32vec_push(&edges, GE_V(g->elem[i]))) goto out;
                if (!nullable[GE_V(g->elem[i])]) break;
            }
    }
    eoff[g->n_rules] = (uint32_t)edges.n;
    rc = 0;
    for (uint32_t s = 0; s < g->n_rules && !rc; s++) {
        if (color[s]) continue;
        color[s] = 1;
        it[s] = eoff[s];
        stack.n = 0;
        if (u32vec_push(&stack, s)) { rc = TERN_ENOMEM; break; }
        while (stack.n && !rc) {
            uint32_t r = stack.v[stack.n - 1];
            if (it[r] == eoff[r + 1]) { color[r] = 2; stack.n--; continue; }
            uint32_t t = edges.v[it[r]++];
            if (color[t] == 1) rc = left_rec_err(P, t);
            else if (!color[t]) {
                color[t] = 1;
                it[t] = eoff[t];
                if (u32vec_push(&stack, t)) rc = TERN_ENOMEM;
            }
        }
    }
out:
    free(nullable);
    free(color);
    free(eoff);
    free(it);
    free(edges.v);
    free(stack.v);
    return rc;
}

static int build_classes(parser_t *P, grammar_t *g) {
    g->n_cls = (uint32_t)P->cls_off.n;
    if (u32vec_push(&P->cls_off, (uint32_t)(P->rng.n / 2))) return TERN_ENOMEM;
    g->cls_off = P->cls_off.v;
    g->cls_rng = P->rng.v;
    P->cls_off.v = P->rng.v = NULL;
    g->cls_ascii = calloc(2 * (size_t)g->n_cls + 1, sizeof *g->cls_ascii);
    if (!g->cls_ascii) return TERN_ENOMEM;
    for (uint32_t c = 0; c < g->n_cls; c++)
        for (uint32_t cp = 0; cp < 128; cp++)
            if (cls_hits(g, c, cp, cp)) g->cls_ascii[2 * c + (cp >> 6)] |= 1ull << (cp & 63);
    return 0;
}

/* the rule tables from a parsed text: every rule defined, root present, no left recursion, the
 * start state within GRAMMAR_MAX_STACKS */
static int finish(parser_t *P, grammar_t *g, const char *root) {
    for (uint32_t r = 0; r < P->n_rules; r++)
        if (P->rules[r].body == NONE)
            return perr(P, P->rules[r].ref_at, "undefined rule '%.*s'", (int)(P->rules[r].name_len < 64 ? P->rules[r].name_len : 64),
                        P->s + P->rules[r].name);
    size_t rn = strlen(root);
    uint32_t mask = 2 * GRAMMAR_MAX_RULES - 1, i = name_hash(root, rn) & mask;
    g->root = NONE;
    for (; P->names[i]; i = (i + 1) & mask) {
        const prule_t *pr = &P->rules[P->names[i] - 1];
        if (pr->name_len == rn && !memcmp(P->s + pr->name, root, rn)) g->root = P->names[i] - 1;
    }
    if (g->root == NONE) return err_set(P->err, P->errlen, TERN_EINVAL, "grammar has no rule '%.64s' (the start rule)", root);
    g->n_rules = P->n_rules;
    g->n_elem = (uint32_t)P->body.n;
    g->elem = P->body.v;
    P->body.v = NULL;
    int rc = build_alts(g);
    if (rc) return rc;
    fill_alts(g, P->rules);
    if ((rc = check_left_recursion(P, g)) || (rc = build_classes(P, g))) return rc;
    gss_t s;
    u32vec_t out = {0};
    rc = gss_init(&s, 256);
    if (!rc) rc = gss_start(g, &s, g->root, &out);
    gss_free(&s);
    free(out.v);
    if (rc == ADV_LIMIT)
        return err_set(P->err, P->errlen, TERN_EINVAL, "grammar needs more than GRAMMAR_MAX_STACKS (%d) parse stacks at its start",
                       GRAMMAR_MAX_STACKS);
    return rc;
}

/* the first malformed UTF-8 sequence in s[n], or n */
static size_t utf8_check(const char *s, size_t n) {
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        int k = utf8_decode((const uint8_t *)s + i, n - i, &cp);
        if (!k) return i;
        i += (size_t)k;
    }
    return n;
}

grammar_t *grammar_parse(const char *text, size_t len, const char *root, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (len > GRAMMAR_MAX_TEXT) {
        err_set(err, errlen, TERN_EINVAL, "grammar is longer than GRAMMAR_MAX_TEXT (%d bytes)", GRAMMAR_MAX_TEXT);
        return NULL;
    }
    parser_t P = {.s = text ? text : "", .len = text ? len : 0, .err = err, .errlen = errlen, .any_cls = NONE};
    grammar_t *g = calloc(1, sizeof *g);
    P.names = calloc(2 * GRAMMAR_MAX_RULES, sizeof *P.names);
    /* seq and tmp are never NULL: an empty body or item is seq.v + mark with nothing after it */
    int rc = !g || !P.names || u32vec_reserve(&P.seq, 64) || u32vec_reserve(&P.tmp, 64) ? TERN_ENOMEM : 0;
    size_t bad = utf8_check(P.s, P.len);
    if (!rc && bad < P.len) rc = perr(&P, bad, "invalid UTF-8 (byte 0x%02X)", (uint8_t)P.s[bad]);
    if (!rc) rc = parse_rules(&P);
    if (!rc) rc = finish(&P, g, root ? root : "root");
    if (rc == TERN_ENOMEM) err_set(err, errlen, rc, "out of memory parsing the grammar");
    free(P.rules);
    free(P.names);
    free(P.body.v);
    free(P.seq.v);
    free(P.tmp.v);
    free(P.rng.v);
    free(P.cls_off.v);
    if (rc) grammar_destroy(&g);
    return g;
}

/* ---- vocabulary and its prefix tree -------------------------------------------------------- */

/* The trie is stored in preorder without its root: node i has byte tbyte[i] at depth tdepth[i]
 * (1 = a piece's first byte), its subtree is [i, tend[i]), and the tokens whose piece ends at it
 * are ttok[ttok_off[i] .. ttok_off[i+1]). End-of-generation ids are not in the tree. */
struct grammar_vocab {
    int n;
    char *blob;
    size_t *poff;           /* (n + 1) token i's piece: blob[poff[i] .. poff[i+1]) */
    uint8_t *is_eog;        /* (n) */
    int32_t *eog;           /* (n_eog) distinct end-of-generation ids */
    int n_eog;
    uint32_t nn, max_depth;
    uint8_t *tbyte;
    uint32_t *tdepth, *tend, *ttok_off;
    int32_t *ttok;
};

typedef struct vpiece { const uint8_t *p; uint32_t len; int32_t id; } vpiece_t;

static int vpiece_cmp(const void *a, const void *b) {
    const vpiece_t *x = a, *y = b;
    uint32_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* builds the preorder trie from pieces sorted bytewise (a piece's nodes follow the longest
 * prefix it shares with the previous one) */
static int vocab_trie(grammar_vocab_t *v, vpiece_t *e, uint32_t ne, size_t total) {
    v->tbyte = malloc(total + 1);
    v->tdepth = malloc((total + 1) * sizeof *v->tdepth);
    v->tend = malloc((total + 1) * sizeof *v->tend);
    v->ttok_off = calloc(total + 2, sizeof *v->ttok_off);
    v->ttok = malloc(((size_t)ne + 1) * sizeof *v->ttok);
    uint32_t *cur = malloc(((size_t)v->max_depth + 1) * sizeof *cur), *attach = malloc(((size_t)ne + 1) * sizeof *attach);
    int rc = TERN_ENOMEM;
    if (!v->tbyte || !v->tdepth || !v->tend || !v->ttok_off || !v->ttok || !cur || !attach) goto out;
    uint32_t n = 0;
    for (uint32_t k = 0; k < ne; k++) {
        uint32_t lcp = 0;
        if (k)
            while (lcp < e[k].len && lcp < e[k - 1].len && e[k].p[lcp] == e[k - 1].p[lcp]) lcp++;
        for (uint32_t d = lcp; d < e[k].len; d++) {
            v->tbyte[n] = e[k].p[d];
            v->tdepth[n] = d + 1;
            cur[d + 1] = n++;
        }
        attach[k] = cur[e[k].len];
        v->ttok_off[attach[k] + 1]++;
    }
    v->nn = n;
    for (uint32_t i = 0; i < n; i++) v->ttok_off[i + 1] += v->ttok_off[i];
    for (uint32_t k = 0; k < ne; k++) v->ttok[k] = e[k].id;   /* attach[] is nondecreasing */
    uint32_t sp = 0;   /* open nodes, by depth: cur[1..sp] */
    for (uint32_t i = 0; i < n; i++) {
        while (sp && v->tdepth[cur[sp]] >= v->tdepth[i]) v->tend[cur[sp--]] = i;
        cur[++sp] = i;
    }
    while (sp) v->tend[cur[sp--]] = n;
    rc = 0;
out:
    free(cur);
    free(attach);
    return rc;
}

grammar_vocab_t *grammar_vocab_new(int n_vocab, const char *const *pieces, const int *len, const int32_t *eog,
                                   int n_eog) {
    TERN_ASSERT(n_vocab >= 0 && n_eog >= 0 && (pieces || !n_vocab) && (len || !n_vocab) && (eog || !n_eog));
    grammar_vocab_t *v = calloc(1, sizeof *v);
    vpiece_t *e = NULL;
    if (!v) return NULL;
    v->n = n_vocab;
    v->poff = malloc(((size_t)n_vocab + 1) * sizeof *v->poff);
    v->is_eog = calloc((size_t)n_vocab + 1, 1);
    v->eog = malloc(((size_t)n_eog + 1) * sizeof *v->eog);
    if (!v->poff || !v->is_eog || !v->eog) goto fail;
    for (int k = 0; k < n_eog; k++) {
        TERN_ASSERT(eog[k] >= 0 && eog[k] < n_vocab);
        if (!v->is_eog[eog[k]]) v->eog[v->n_eog++] = eog[k];
        v->is_eog[eog[k]] = 1;
    }
    size_t total = 0;
    uint32_t ne = 0;
    for (int t = 0; t < n_vocab; t++) {
        v->poff[t] = total;
        TERN_ASSERT(len[t] >= 0);
        if (pieces[t] && len[t] > 0) total += (size_t)len[t];
    }
    v->poff[n_vocab] = total;
    v->blob = malloc(total + 1);
    e = malloc(((size_t)n_vocab + 1) * sizeof *e);
    if (!v->blob || !e) goto fail;
    for (int t = 0; t < n_vocab; t++) {
        uint32_t l = (uint32_t)(v->poff[t + 1] - v->poff[t]);
        if (l) memcpy(v->blob + v->poff[t], pieces[t], l);
        if (l && !v->is_eog[t]) e[ne++] = (vpiece_t){(const uint8_t *)v->blob + v->poff[t], l, t};
        if (l > v->max_depth) v->max_depth = l;
    }
    qsort(e, ne, sizeof *e, vpiece_cmp);
    if (vocab_trie(v, e, ne, total)) goto fail;
    free(e);
    return v;
fail:
    free(e);
    grammar_vocab_destroy(&v);
    return NULL;
}

void grammar_vocab_destroy(grammar_vocab_t **vp) {
    grammar_vocab_t *v = vp ? *vp : NULL;
    if (!v) return;
    free(v->blob);
    free(v->poff);
    free(v->is_eog);
    free(v->eog);
    free(v->tbyte);
    free(v->tdepth);
    free(v->tend);
    free(v->ttok_off);
    free(v->ttok);
    free(v);
    *vp = NULL;
}

int grammar_vocab_n(const grammar_vocab_t *v) { return v->n; }

const char *grammar_vocab_piece(const grammar_vocab_t *v, int32_t tok, size_t *len) {
    *len = 0;
    if (tok < 0 || tok >= v->n || v->is_eog[tok]) return NULL;
    *len = v->poff[tok + 1] - v->poff[tok];
    return v->blob + v->poff[tok];
}

/* ---- matcher state ------------------------------------------------------------------------- */

struct grammar_state {
    const grammar_t *g;
    gss_t gss;
    u32vec_t stk, tmp, save;   /* the live stacks (frame ids, sorted), the next set, a roll-back copy */
    uint32_t part;             /* partial code point (PART), 0: none */
    uint32_t gc_at;            /* frame count that triggers the next compaction */
    int finished;              /* an end-of-generation token was accepted */
};

grammar_state_t *grammar_state_new(const grammar_t *g) {
    grammar_state_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->g = g;
    s->gc_at = 4096;
    if (gss_init(&s->gss, 256) || gss_start(g, &s->gss, g->root, &s->stk)) grammar_state_destroy(&s);
    return s;
}

grammar_state_t *grammar_state_clone(const grammar_state_t *src) {
    grammar_state_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    *s = (grammar_state_t){.g = src->g, .part = src->part, .gc_at = src->gc_at, .finished = src->finished};
    if (gss_copy(&s->gss, &src->gss) || u32vec_append(&s->stk, src->stk.v, src->stk.n)) grammar_state_destroy(&s);
    return s;
}

void grammar_state_destroy(grammar_state_t **sp) {
    grammar_state_t *s = sp ? *sp : NULL;
    if (!s) return;
    gss_free(&s->gss);
    free(s->stk.v);
    free(s->tmp.v);
    free(s->save.v);
    free(s);
    *sp = NULL;
}

/* drops frames no live stack uses once there are twice as many as after the last compaction */
static void state_gc(grammar_state_t *s) {
    if (s->gss.n < s->gc_at) return;
    gss_mark_begin(&s->gss);
    gss_mark(&s->gss, s->stk.v, s->stk.n);
    if (gss_compact(&s->gss)) return;
    for (size_t i = 0; i < s->stk.n; i++) s->stk.v[i] = s->gss.work.v[s->stk.v[i]];
    s->gc_at = 2 * s->gss.n + 4096;
}

int grammar_state_accept_bytes(grammar_state_t *s, const char *bytes, size_t n) {
    if (s->finished) return TERN_EINVAL;
    if (!n) return 0;
    s->save.n = 0;
    if (u32vec_append(&s->save, s->stk.v, s->stk.n)) return TERN_ENOMEM;
    uint32_t part0 = s->part;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        int st = step_byte(s->g, &s->gss, s->stk.v, s->stk.n, &s->part, (uint8_t)bytes[i], &s->tmp);
        if (st == STEP_FULL) {
            u32vec_t t = s->stk;
            s->stk = s->tmp;
            s->tmp = t;
        } else if (st != STEP_PARTIAL) rc = st == STEP_REJECT ? TERN_EINVAL : st;
    }
    if (rc) {   /* roll back: save holds the stacks as they were */
        u32vec_t t = s->stk;
        s->stk = s->save;
        s->save = t;
        s->part = part0;
    }
    state_gc(s);
    return rc;
}

int grammar_state_accept_token(grammar_state_t *s, const grammar_vocab_t *v, int32_t tok) {
    if (tok < 0 || tok >= v->n || s->finished) return TERN_EINVAL;
    if (v->is_eog[tok]) {
        if (!grammar_state_can_end(s)) return TERN_EINVAL;
        s->finished = 1;
        return 0;
    }
    size_t n = v->poff[tok + 1] - v->poff[tok];
    return n ? grammar_state_accept_bytes(s, v->blob + v->poff[tok], n) : TERN_EINVAL;
}

int grammar_state_can_end(const grammar_state_t *s) {
    return s->finished || (!s->part && s->stk.n && s->stk.v[0] == 0);
}

int grammar_state_done(const grammar_state_t *s) {
    return s->finished || (!s->part && s->stk.n == 1 && s->stk.v[0] == 0);
}

/* ---- the mask ------------------------------------------------------------------------------ */

/* One call's memo: matcher states met in the walk (stack sets with a partial code point) are
 * interned as ids, and transitions (id, byte) → id (or -1: rejected) are remembered. Everything
 * is owned by the call, so masks of different states can run on different threads. */
typedef struct memo {
    const grammar_t *g;
    gss_t gss;
    u32vec_t data, off;        /* state id → data[off[id]..]: part, n, frames[n] */
    uint32_t *sht, smask;      /* state hash: id + 1, 0 free */
    uint64_t *tkey;            /* transition hash: (id << 8 | byte) + 1, 0 free */
    int32_t *tval;
    uint32_t tmask, tn;
    u32vec_t out, tmp;
} memo_t;

#define MEMO_REJECT (-1)

static void memo_free(memo_t *m) {
    gss_free(&m->gss);
    free(m->data.v);
    free(m->off.v);
    free(m->sht);
    free(m->tkey);
    free(m->tval);
    free(m->out.v);
    free(m->tmp.v);
}

static int memo_tables(memo_t *m, uint32_t sslots, uint32_t tslots) {
    free(m->sht);
    free(m->tkey);
    free(m->tval);
    m->sht = calloc(sslots, sizeof *m->sht);
    m->tkey = calloc(tslots, sizeof *m->tkey);
    m->tval = malloc(tslots * sizeof *m->tval);
    m->smask = sslots - 1;
    m->tmask = tslots - 1;
    m->tn = 0;
    m->data.n = m->off.n = 0;
    return m->sht && m->tkey && m->tval ? 0 : TERN_ENOMEM;
}

static uint32_t memo_slot(const memo_t *m, uint32_t part, const uint32_t *ids, uint32_t n) {
    uint32_t i = hash_u32s(ids, n, part) & m->smask;
    for (;; i = (i + 1) & m->smask) {
        uint32_t id = m->sht[i];
        if (!id) return i;
        const uint32_t *d = m->data.v + m->off.v[id - 1];
        if (d[0] == part && d[1] == n && !memcmp(d + 2, ids, n * sizeof *ids)) return i;
    }
}

/* the id of state (part, ids[n]) (ids must not point into m->data); or TERN_ENOMEM */
static int64_t memo_intern(memo_t *m, uint32_t part, const uint32_t *ids, uint32_t n) {
    uint32_t i = memo_slot(m, part, ids, n);
    if (m->sht[i]) return m->sht[i] - 1;
    uint32_t id = (uint32_t)m->off.n;
    if (u32vec_push(&m->off, (uint32_t)m->data.n) || u32vec_push(&m->data, part) || u32vec_push(&m->data, n) ||
        u32vec_append(&m->data, ids, n))
        return TERN_ENOMEM;
    m->sht[i] = id + 1;
    if (2 * m->off.n > m->smask) {   /* grow: rehash every state */
        uint32_t *old = m->sht, slots = 2 * (m->smask + 1);
        m->sht = calloc(slots, sizeof *m->sht);
        if (!m->sht) { m->sht = old; return TERN_ENOMEM; }
        m->smask = slots - 1;
        free(old);
        for (uint32_t k = 0; k < m->off.n; k++) {
            const uint32_t *d = m->data.v + m->off.v[k];
            m->sht[memo_slot(m, d[0], d + 2, d[1])] = k + 1;
        }
    }
    return id;
}

static int memo_trans_put(memo_t *m, uint64_t key, int32_t val) {
    if (2 * (m->tn + 1) > m->tmask) {
        uint32_t slots = 2 * (m->tmask + 1), mask = slots - 1;
        uint64_t *k2 = calloc(slots, sizeof *k2);
        int32_t *v2 = malloc(slots * sizeof *v2);
        if (!k2 || !v2) { free(k2); free(v2); return TERN_ENOMEM; }
        for (uint32_t i = 0; i <= m->tmask; i++) {
            if (!m->tkey[i]) continue;
            uint32_t j = mix64(m->tkey[i]) & mask;
            while (k2[j]) j = (j + 1) & mask;
            k2[j] = m->tkey[i];
            v2[j] = m->tval[i];
        }
        free(m->tkey);
        free(m->tval);
        m->tkey = k2;
        m->tval = v2;
        m->tmask = mask;
    }
    uint32_t j = mix64(key) & m->tmask;
    while (m->tkey[j]) j = (j + 1) & m->tmask;
    m->tkey[j] = key;
    m->tval[j] = val;
    m->tn++;
    return 0;
}

/* Past the budget, keeps only the states on the walk's path (path[0..d)), renumbered. */
static int memo_flush(memo_t *m, uint32_t *path, uint32_t d) {
    m->tmp.n = 0;
    for (uint32_t k = 0; k < d; k++) {
        const uint32_t *s = m->data.v + m->off.v[path[k]];
        if (u32vec_append(&m->tmp, s, 2 + (size_t)s[1])) return TERN_ENOMEM;
    }
    gss_mark_begin(&m->gss);
    for (size_t at = 0; at < m->tmp.n; at += 2 + m->tmp.v[at + 1]) gss_mark(&m->gss, m->tmp.v + at + 2, m->tmp.v[at + 1]);
    if (gss_compact(&m->gss) || memo_tables(m, 1024, 4096)) return TERN_ENOMEM;
    size_t at = 0;
    for (uint32_t k = 0; k < d; k++, at += 2 + m->tmp.v[at + 1]) {
        uint32_t *s = m->tmp.v + at;
        for (uint32_t j = 0; j < s[1]; j++) s[2 + j] = m->gss.work.v[s[2 + j]];
        int64_t id = memo_intern(m, s[0], s + 2, s[1]);
        if (id < 0) return (int)id;
        path[k] = (uint32_t)id;
    }
    return 0;
}

/* the state after byte b from state path[d-1]: an id, MEMO_REJECT or TERN_ENOMEM */
static int64_t memo_next(memo_t *m, uint32_t *path, uint32_t d, uint8_t b) {
    uint64_t key = ((uint64_t)path[d - 1] << 8 | b) + 1;
    for (uint32_t j = mix64(key) & m->tmask; m->tkey[j]; j = (j + 1) & m->tmask)
        if (m->tkey[j] == key) return m->tval[j];
    if (m->gss.n > MEMO_MAX_FRAMES || m->data.n > MEMO_MAX_DATA || m->tn > MEMO_MAX_TRANS) {
        int rc = memo_flush(m, path, d);
        if (rc) return rc;
        key = ((uint64_t)path[d - 1] << 8 | b) + 1;
    }
    if (m->gss.steps > MASK_MAX_WORK) return TERN_ENOTSUP;
    const uint32_t *s = m->data.v + m->off.v[path[d - 1]];
    uint32_t part = s[0], n = s[1];
    int st = step_byte(m->g, &m->gss, s + 2, n, &part, b, &m->out);
    int64_t id = MEMO_REJECT;
    if (st < 0) return st;
    if (st == STEP_PARTIAL) {
        m->tmp.n = 0;
        if (u32vec_append(&m->tmp, s + 2, n)) return TERN_ENOMEM;
        id = memo_intern(m, part, m->tmp.v, n);
    } else if (st == STEP_FULL) id = memo_intern(m, 0, m->out.v, (uint32_t)m->out.n);
    if (id < 0 && id != MEMO_REJECT) return id;
    return memo_trans_put(m, key, (int32_t)id) ? TERN_ENOMEM : id;
}

/* walks the prefix tree in preorder; a rejected node skips its subtree */
static int mask_walk(memo_t *m, const grammar_vocab_t *v, uint32_t *path, uint8_t *mask) {
    int count = 0;
    for (uint32_t i = 0; i < v->nn;) {
        uint32_t d = v->tdepth[i];
        int64_t id = memo_next(m, path, d, v->tbyte[i]);
        if (id == MEMO_REJECT) { i = v->tend[i]; continue; }
        if (id < 0) return (int)id;
        path[d] = (uint32_t)id;
        for (uint32_t k = v->ttok_off[i]; k < v->ttok_off[i + 1]; k++) {
            int32_t t = v->ttok[k];
            mask[t >> 3] |= (uint8_t)(1u << (t & 7));
            count++;
        }
        i++;
    }
    return count;
}

const char *grammar_mask_why(int n) {
    return n == TERN_ENOTSUP ? "the grammar is too ambiguous: the next token's mask is past the matcher's work budget"
           : n < 0           ? "out of memory for the grammar's token mask"
                             : "no token of the vocabulary can continue the grammar here";
}

int grammar_state_mask(const grammar_state_t *s, const grammar_vocab_t *v, uint8_t *mask) {
    memset(mask, 0, ((size_t)v->n + 7) / 8);
    if (s->finished) return 0;
    int count = 0;
    if (grammar_state_can_end(s))
        for (int k = 0; k < v->n_eog; k++, count++) mask[v->eog[k] >> 3] |= (uint8_t)(1u << (v->eog[k] & 7));
    if (!v->nn) return count;
    memo_t m = {.g = s->g};
    uint32_t *path = malloc(((size_t)v->max_depth + 1) * sizeof *path);
    int rc = !path || gss_copy(&m.gss, &s->gss) || memo_tables(&m, 1024, 4096) ? TERN_ENOMEM : 0;
    int64_t root = rc ? rc : memo_intern(&m, s->part, s->stk.v, (uint32_t)s->stk.n);
    if (root >= 0) {
        path[0] = (uint32_t)root;
        rc = mask_walk(&m, v, path, mask);
    } else rc = (int)root;
    memo_free(&m);
    free(path);
    if (rc < 0) {
        memset(mask, 0, ((size_t)v->n + 7) / 8);
        return rc;
    }
    return count + rc;
}

/* ---- the JSON grammar ---------------------------------------------------------------------- */

const char grammar_json_object_gbnf[] =
    "# a JSON object (RFC 8259) with whitespace bounded: one space, or a newline and up to 20\n"
    "# spaces or tabs of indentation, between tokens\n"
    "root   ::= object\n"
    "value  ::= object | array | string | number | \"true\" | \"false\" | \"null\"\n"
    "object ::= \"{\" ws ( member ( \",\" ws member )* )? \"}\"\n"
    "member ::= string ws \":\" ws value ws\n"
    "array  ::= \"[\" ws ( value ws ( \",\" ws value ws )* )? \"]\"\n"
    "string ::= \"\\\"\" char* \"\\\"\"\n"
    "char   ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4} )\n"
    "number ::= \"-\"? ( \"0\" | [1-9] [0-9]{0,15} ) ( \".\" [0-9]+ )? ( [eE] [-+]? [0-9]{1,4} )?\n"
    "ws     ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";
