/* jinja: a Jinja2 subset for chat templates — lexer (whitespace control, trim/lstrip blocks),
 * recursive-descent parser into an AST, and a tree-walking renderer over jansson values with
 * Python's output rules (str(), repr of lists and dicts, float repr, HF's tojson).
 * Statements: if/elif/else, for (loop.*, `k, v` targets, `if` filter, else), set (names, tuples,
 * ns.attr, block set), macro, call, break/continue, raw, generation. Expressions: literals,
 * lists, dicts, tuples, attributes, subscripts, slices, calls, filters, tests, arithmetic, `~`,
 * comparisons, in, and/or/not, conditionals. Not here: extends/block/include/import, filter
 * blocks, macro varargs/kwargs, recursive loops, autoescape. A parsed template is read-only while it
 * renders, so threads may share one (its literals' jansson refcounts are atomic). */
#define _GNU_SOURCE   /* memmem */
#include "coordinator/jinja.h"
#include "core/strbuf.h"
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- arena: every token and node of a template, freed at once ---------------------------- */

typedef struct chunk { struct chunk *next; size_t used, cap; max_align_t data[]; } chunk_t;

static void *arena_alloc(chunk_t **a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!*a || (*a)->used + n > (*a)->cap) {
        size_t cap = n > 65536 ? n : 65536;
        chunk_t *c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = *a; c->used = 0; c->cap = cap;
        *a = c;
    }
    void *p = (char *)(*a)->data + (*a)->used;
    (*a)->used += n;
    memset(p, 0, n);
    return p;
}

static void arena_free(chunk_t **a) {
    while (*a) { chunk_t *n = (*a)->next; free(*a); *a = n; }
}

/* ---- tokens ------------------------------------------------------------------------------ */

enum tok_kind { T_EOF, T_TEXT, T_VBEG, T_VEND, T_BBEG, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP };

typedef struct tok {
    int k, line, col;
    char *s; size_t n;     /* text, name, string (unescaped), operator */
    long long i; double f;
} tok_t;

struct jinja {
    jinja_opts_t o;
    chunk_t *arena;
    struct node *root;
};

typedef struct lexer {
    jinja_t *t;
    const char *src; size_t len, pos;
    int line, col;         /* at pos */
    tok_t *toks; int n, cap;
    char *err; size_t errlen;
} lexer_t;

static int lex_fail(lexer_t *L, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int lex_fail(lexer_t *L, int line, int col, const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (L->err && L->errlen) snprintf(L->err, L->errlen, "line %d:%d: %s", line, col, msg);
    return -1;
}

static void lex_advance(lexer_t *L, size_t n) {
    for (size_t i = 0; i < n && L->pos < L->len; i++, L->pos++) {
        if (L->src[L->pos] == '\n') { L->line++; L->col = 1; }
        else if (((unsigned char)L->src[L->pos] & 0xC0) != 0x80) L->col++;
    }
}

static tok_t *lex_push(lexer_t *L, int k, int line, int col) {
    if (L->n == L->cap) {
        int cap = L->cap ? L->cap * 2 : 256;
        tok_t *p = realloc(L->toks, (size_t)cap * sizeof *p);
        if (!p) return NULL;
        L->toks = p; L->cap = cap;
    }
    tok_t *t = &L->toks[L->n++];
    memset(t, 0, sizeof *t);
    t->k = k; t->line = line; t->col = col;
    return t;
}

static char *arena_strndup(jinja_t *t, const char *s, size_t n) {
    char *p = arena_alloc(&t->arena, n + 1);
    if (p) { memcpy(p, s, n); p[n] = 0; }
    return p;
}

static int is_ws(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static void utf8_put(strbuf_t *b, unsigned cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xC0 | cp >> 6); u[1] = (char)(0x80 | (cp & 63)); n = 2; }
    else if (cp < 0x10000) { u[0] = (char)(0xE0 | cp >> 12); u[1] = (char)(0x80 | (cp >> 6 & 63)); u[2] = (char)(0x80 | (cp & 63)); n = 3; }
    else { u[0] = (char)(0xF0 | cp >> 18); u[1] = (char)(0x80 | (cp >> 12 & 63)); u[2] = (char)(0x80 | (cp >> 6 & 63)); u[3] = (char)(0x80 | (cp & 63)); n = 4; }
    strbuf_add(b, u, n);
}

/* a string literal at L->pos (quote q): Python's unicode-escape rules */
static int lex_string(lexer_t *L) {
    int line = L->line, col = L->col;
    const char *s = L->src;
    char q = s[L->pos];
    size_t i = L->pos + 1;
    strbuf_t b = {0};
    while (i < L->len && s[i] != q) {
        if (s[i] != '\\' || i + 1 >= L->len) { strbuf_add(&b, s + i, 1); i++; continue; }
        char c = s[i + 1];
        if (c == '\n') { i += 2; continue; }   /* a line continuation */
        const char *simple = strchr("ntr\\'\"abfv0", c);
        if (c && simple && c != '0') {
            static const char from[] = "ntr\\'\"abfv", to[] = "\n\t\r\\'\"\a\b\f\v";
            strbuf_add(&b, &to[strchr(from, c) - from], 1);
            i += 2;
        } else if (c >= '0' && c <= '7') {
            unsigned v = 0; int k = 0;
            for (i++; k < 3 && i < L->len && s[i] >= '0' && s[i] <= '7'; k++, i++) v = v * 8 + (unsigned)(s[i] - '0');
            utf8_put(&b, v);
        } else if (c == 'x' || c == 'u' || c == 'U') {
            int nd = c == 'x' ? 2 : c == 'u' ? 4 : 8;
            unsigned v = 0;
            for (int k = 0; k < nd; k++) {
                char h = i + 2 + (size_t)k < L->len ? s[i + 2 + k] : 0;
                if (!isxdigit((unsigned char)h)) { free(b.p); return lex_fail(L, line, col, "bad \\%c escape in a string", c); }
                v = v * 16 + (unsigned)(isdigit((unsigned char)h) ? h - '0' : (tolower((unsigned char)h) - 'a' + 10));
            }
            if (v > 0x10FFFF) { free(b.p); return lex_fail(L, line, col, "bad \\%c escape in a string", c); }
            utf8_put(&b, v);
            i += 2 + (size_t)nd;
        } else {   /* unknown escape: kept as written */
            strbuf_add(&b, s + i, 2);
            i += 2;
        }
    }
    if (i >= L->len) { free(b.p); return lex_fail(L, line, col, "unterminated string"); }
    tok_t *t = lex_push(L, T_STR, line, col);
    if (!t || b.err || !(t->s = arena_strndup(L->t, b.p ? b.p : "", b.n))) { free(b.p); return lex_fail(L, line, col, "out of memory"); }
    t->n = b.n;
    free(b.p);
    lex_advance(L, i + 1 - L->pos);
    return 0;
}

static int lex_number(lexer_t *L) {
    int line = L->line, col = L->col;
    const char *s = L->src;
    size_t i = L->pos;
    char buf[64]; size_t n = 0;
    int is_float = 0;
    while (i < L->len && (isdigit((unsigned char)s[i]) || s[i] == '_')) { if (s[i] != '_' && n < 63) buf[n++] = s[i]; i++; }
    if (i + 1 < L->len && s[i] == '.' && isdigit((unsigned char)s[i + 1])) {
        is_float = 1;
        if (n < 63) buf[n++] = s[i];
        for (i++; i < L->len && (isdigit((unsigned char)s[i]) || s[i] == '_'); i++) if (s[i] != '_' && n < 63) buf[n++] = s[i];
    }
    if (i < L->len && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (j < L->len && (s[j] == '+' || s[j] == '-')) j++;
        if (j < L->len && isdigit((unsigned char)s[j])) {
            is_float = 1;
            for (; i < j; i++) if (n < 63) buf[n++] = s[i];
            for (; i < L->len && isdigit((unsigned char)s[i]); i++) if (n < 63) buf[n++] = s[i];
        }
    }
    buf[n] = 0;
    tok_t *t = lex_push(L, is_float ? T_FLOAT : T_INT, line, col);
    if (!t) return lex_fail(L, line, col, "out of memory");
    if (is_float) t->f = strtod(buf, NULL);
    else {
        t->i = strtoll(buf, NULL, 10);
        if (n > 18) { t->k = T_FLOAT; t->f = strtod(buf, NULL); }   /* beyond int64: as Python would not, but bounded */
    }
    lex_advance(L, i - L->pos);
    return 0;
}

static const char *const OPS[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "|", ".", ",", ":",
                                  "(", ")", "[", "]", "{", "}", "=", "<", ">", NULL};

/* the tokens of one tag up to its end delimiter (end = "}}", "%}"); *strip_after: '-' or '+' or 0 */
static int lex_tag(lexer_t *L, const char *end, int end_kind, int *strip_after) {
    int depth = 0;
    for (;;) {
        while (L->pos < L->len && is_ws(L->src[L->pos])) lex_advance(L, 1);
        if (L->pos >= L->len) return lex_fail(L, L->line, L->col, "unexpected end of template: missing '%s'", end);
        const char *p = L->src + L->pos;
        size_t left = L->len - L->pos;
        if (depth == 0) {
            int sign = (*p == '-' || *p == '+') && left >= 3 && !memcmp(p + 1, end, 2) ? *p : 0;
            if (sign || (left >= 2 && !memcmp(p, end, 2))) {
                if (!lex_push(L, end_kind, L->line, L->col)) return lex_fail(L, L->line, L->col, "out of memory");
                lex_advance(L, sign ? 3 : 2);
                *strip_after = sign;
                return 0;
            }
        }
        int c = (unsigned char)*p;
        if (c == '"' || c == '\'') { if (lex_string(L) < 0) return -1; continue; }
        if (isdigit(c)) { if (lex_number(L) < 0) return -1; continue; }
        if (isalpha(c) || c == '_') {
            size_t n = 1;
            while (n < left && (isalnum((unsigned char)p[n]) || p[n] == '_')) n++;
            tok_t *t = lex_push(L, T_NAME, L->line, L->col);
            if (!t || !(t->s = arena_strndup(L->t, p, n))) return lex_fail(L, L->line, L->col, "out of memory");
            t->n = n;
            lex_advance(L, n);
            continue;
        }
        int k;
        for (k = 0; OPS[k]; k++)
            if (left >= strlen(OPS[k]) && !memcmp(p, OPS[k], strlen(OPS[k]))) break;
        if (!OPS[k]) return lex_fail(L, L->line, L->col, "unexpected character '%c'", isprint(c) ? c : '?');
        if (*p == '(' || *p == '[' || *p == '{') depth++;
        if ((*p == ')' || *p == ']' || *p == '}') && depth > 0) depth--;
        tok_t *t = lex_push(L, T_OP, L->line, L->col);
        if (!t) return lex_fail(L, L->line, L->col, "out of memory");
        t->s = (char *)OPS[k];
        t->n = strlen(OPS[k]);
        lex_advance(L, t->n);
    }
}

static int push_text(lexer_t *L, const char *s, size_t n, int line, int col) {
    if (!n) return 0;
    tok_t *t = lex_push(L, T_TEXT, line, col);
    if (!t || !(t->s = arena_strndup(L->t, s, n))) return lex_fail(L, line, col, "out of memory");
    t->n = n;
    return 0;
}

/* after "{% raw %}": the text up to "{% endraw %}" as is */
static int lex_raw(lexer_t *L, int *strip_after) {
    int line = L->line, col = L->col;
    for (size_t i = L->pos; i + 1 < L->len; i++) {
        if (L->src[i] != '{' || L->src[i + 1] != '%') continue;
        size_t j = i + 2;
        int minus_before = j < L->len && L->src[j] == '-';
        if (j < L->len && (L->src[j] == '-' || L->src[j] == '+')) j++;
        while (j < L->len && is_ws(L->src[j])) j++;
        if (L->len - j < 6 || memcmp(L->src + j, "endraw", 6) != 0) continue;
        j += 6;
        while (j < L->len && is_ws(L->src[j])) j++;
        int sign = j < L->len && (L->src[j] == '-' || L->src[j] == '+') ? L->src[j] : 0;
        if (sign) j++;
        if (L->len - j < 2 || memcmp(L->src + j, "%}", 2) != 0) continue;
        size_t n = i - L->pos;
        if (minus_before) while (n && is_ws(L->src[L->pos + n - 1])) n--;
        if (push_text(L, L->src + L->pos, n, line, col) < 0) return -1;
        lex_advance(L, j + 2 - L->pos);
        *strip_after = sign;
        return 0;
    }
    return lex_fail(L, line, col, "missing {%% endraw %%}");
}

/* whole template → tokens, with Jinja's whitespace rules applied to the text tokens */
static int lex(lexer_t *L) {
    int line_starting = 1;
    while (L->pos < L->len) {
        const char *s = L->src + L->pos;
        size_t left = L->len - L->pos, i;
        int kind = 0;   /* '{', '%', '#' */
        for (i = 0; i + 1 < left; i++)
            if (s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#')) { kind = s[i + 1]; break; }
        if (!kind) return push_text(L, s, left, L->line, L->col);
        size_t n = i;
        char sign = i + 2 < left && (s[i + 2] == '-' || s[i + 2] == '+') ? s[i + 2] : 0;
        if (sign == '-') {
            while (n && is_ws(s[n - 1])) n--;
        } else if (sign != '+' && L->t->o.lstrip_blocks && kind != '{') {
            size_t l = n;
            while (l && s[l - 1] != '\n') l--;
            int only_ws = l < n;
            for (size_t k = l; k < n; k++) if (!is_ws(s[k])) only_ws = 0;
            if ((l > 0 || line_starting) && only_ws) n = l;
        }
        if (push_text(L, s, n, L->line, L->col) < 0) return -1;
        lex_advance(L, i);
        int tline = L->line, tcol = L->col;
        lex_advance(L, sign ? 3 : 2);
        int after = 0;
        if (kind == '#') {
            const char *e = NULL;
            for (size_t k = L->pos; k + 1 < L->len; k++)
                if (L->src[k] == '#' && L->src[k + 1] == '}') { e = L->src + k; break; }
            if (!e) return lex_fail(L, tline, tcol, "unterminated comment");
            size_t k = (size_t)(e - L->src);
            if (k > L->pos && (L->src[k - 1] == '-' || L->src[k - 1] == '+')) after = L->src[k - 1];
            lex_advance(L, k + 2 - L->pos);
        } else {
            int first = L->n;
            if (!lex_push(L, kind == '{' ? T_VBEG : T_BBEG, tline, tcol)) return lex_fail(L, tline, tcol, "out of memory");
            if (lex_tag(L, kind == '{' ? "}}" : "%}", kind == '{' ? T_VEND : T_BEND, &after) < 0) return -1;
            tok_t *tk = &L->toks[first + 1];
            if (kind == '%' && L->n == first + 3 && tk->k == T_NAME && !strcmp(tk->s, "raw")) {
                L->n = first;   /* the raw tag itself leaves no tokens */
                if (after == '-') while (L->pos < L->len && is_ws(L->src[L->pos])) lex_advance(L, 1);
                else if (after != '+' && L->t->o.trim_blocks && L->pos < L->len && L->src[L->pos] == '\n') lex_advance(L, 1);
                if (lex_raw(L, &after) < 0) return -1;
            }
        }
        line_starting = 0;
        if (after == '-') {
            while (L->pos < L->len && is_ws(L->src[L->pos])) { line_starting = L->src[L->pos] == '\n'; lex_advance(L, 1); }
        } else if (after != '+' && kind != '{' && L->t->o.trim_blocks && L->pos < L->len && L->src[L->pos] == '\n') {
            lex_advance(L, 1);
            line_starting = 1;
        }
    }
    return 0;
}

/* ---- AST --------------------------------------------------------------------------------- */

enum node_kind {
    /* statements */
    N_LIST, N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_CALLBLOCK, N_BREAK, N_CONTINUE,
    /* expressions */
    E_LIT, E_NAME, E_LISTLIT, E_DICT, E_ATTR, E_INDEX, E_SLICE, E_CALL, E_FILTER, E_TEST, E_BIN, E_CMP,
    E_NOT, E_NEG, E_AND, E_OR, E_COND,
};

typedef struct node {
    int k, line, col;
    int op;                /* E_BIN / E_CMP operator; E_TEST: negated; N_FOR: has targets 2 */
    const char *s, *s2;    /* name, text, attribute, filter/test name, target names */
    size_t n_s;            /* N_TEXT: bytes of s */
    json_t *lit;           /* E_LIT */
    struct node *a, *b, *c, *d;
    struct node **v; int n;           /* children: statements, list items, call args */
    const char **kw;                  /* (n,) keyword name of each arg, NULL: positional */
} node_t;

typedef struct parser {
    jinja_t *t;
    tok_t *toks; int n, pos;
    int depth;
    char *err; size_t errlen;
    json_t **lits; int n_lits, cap_lits;   /* literals to free with the template */
} parser_t;

static int pfail(parser_t *P, const tok_t *t, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int pfail(parser_t *P, const tok_t *t, const char *fmt, ...) {
    if (P->err && P->errlen && !P->err[0]) {
        char msg[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(P->err, P->errlen, "line %d:%d: %s", t->line, t->col, msg);
    }
    return -1;
}

static tok_t *peek(parser_t *P) { return &P->toks[P->pos]; }
static tok_t *next(parser_t *P) { tok_t *t = &P->toks[P->pos]; if (t->k != T_EOF) P->pos++; return t; }
static int is_op(const tok_t *t, const char *op) { return t->k == T_OP && !strcmp(t->s, op); }
static int is_name(const tok_t *t, const char *name) { return t->k == T_NAME && !strcmp(t->s, name); }
static int accept_op(parser_t *P, const char *op) { if (is_op(peek(P), op)) { P->pos++; return 1; } return 0; }
static int accept_name(parser_t *P, const char *nm) { if (is_name(peek(P), nm)) { P->pos++; return 1; } return 0; }

static const char *tok_desc(const tok_t *t) {
    switch (t->k) {
    case T_EOF: return "end of template";
    case T_VEND: return "'}}'";
    case T_BEND: return "'%}'";
    case T_NAME: case T_OP: return t->s;
    case T_STR: return "a string";
    default: return "a number";
    }
}

static int expect_op(parser_t *P, const char *op) {
    if (accept_op(P, op)) return 0;
    return pfail(P, peek(P), "expected '%s', got %s", op, tok_desc(peek(P)));
}

static node_t *mk(parser_t *P, int k, const tok_t *at) {
    node_t *n = arena_alloc(&P->t->arena, sizeof *n);
    if (!n) { pfail(P, at, "out of memory"); return NULL; }
    n->k = k; n->line = at->line; n->col = at->col;
    return n;
}

/* appends c to n's children (kw: its keyword or NULL) */
static int add_child(parser_t *P, node_t *n, node_t *c, const char *kw) {
    if ((n->n & (n->n - 1)) == 0) {   /* capacity doubles at powers of two */
        int cap = n->n ? n->n * 2 : 1;
        node_t **v = arena_alloc(&P->t->arena, (size_t)cap * sizeof *v);
        const char **k = arena_alloc(&P->t->arena, (size_t)cap * sizeof *k);
        if (!v || !k) return pfail(P, peek(P), "out of memory");
        if (n->n) { memcpy(v, n->v, (size_t)n->n * sizeof *v); memcpy(k, n->kw, (size_t)n->n * sizeof *k); }
        n->v = v; n->kw = k;
    }
    n->kw[n->n] = kw;
    n->v[n->n++] = c;
    return 0;
}

static node_t *lit_node(parser_t *P, const tok_t *at, json_t *j) {
    node_t *n = j ? mk(P, E_LIT, at) : NULL;
    if (!j) { pfail(P, at, "out of memory"); return NULL; }
    if (P->n_lits == P->cap_lits) {
        int cap = P->cap_lits ? P->cap_lits * 2 : 64;
        json_t **l = realloc(P->lits, (size_t)cap * sizeof *l);
        if (!l) { json_decref(j); pfail(P, at, "out of memory"); return NULL; }
        P->lits = l; P->cap_lits = cap;
    }
    P->lits[P->n_lits++] = j;
    if (n) n->lit = j;
    return n;
}

static node_t *parse_expr(parser_t *P);
static node_t *parse_unary(parser_t *P, int with_filter);

#define DEPTH_IN(P, at) do { if (++(P)->depth > (P)->t->o.max_depth) { pfail(P, at, "nested too deeply"); return NULL; } } while (0)

/* call arguments after '(' up to ')' into n's children */
static int parse_args(parser_t *P, node_t *n) {
    while (!accept_op(P, ")")) {
        if (n->n && expect_op(P, ",") < 0) return -1;
        if (accept_op(P, ")")) break;   /* trailing comma */
        const char *kw = NULL;
        if (peek(P)->k == T_NAME && is_op(&P->toks[P->pos + 1], "=")) { kw = next(P)->s; P->pos++; }
        node_t *e = parse_expr(P);
        if (!e || add_child(P, n, e, kw) < 0) return -1;
    }
    return 0;
}

/* [a], [a:b:c] after '[' */
static node_t *parse_subscript(parser_t *P, node_t *obj, const tok_t *at) {
    node_t *ix[3] = {NULL, NULL, NULL};
    int part = 0;
    for (;;) {
        if (is_op(peek(P), ":")) {
            if (++part > 2) { pfail(P, peek(P), "a slice has at most 3 parts"); return NULL; }
            P->pos++;
            continue;
        }
        if (is_op(peek(P), "]")) break;
        if (ix[part]) { pfail(P, peek(P), "expected ']' or ':'"); return NULL; }
        if (!(ix[part] = parse_expr(P))) return NULL;
    }
    P->pos++;
    node_t *n = mk(P, part ? E_SLICE : E_INDEX, at);
    if (!n) return NULL;
    if (!part && !ix[0]) { pfail(P, at, "empty subscript"); return NULL; }
    n->a = obj; n->b = ix[0]; n->c = ix[1]; n->d = ix[2];
    return n;
}

static node_t *parse_postfix(parser_t *P, node_t *e) {
    for (;;) {
        tok_t *t = peek(P);
        if (is_op(t, ".")) {
            P->pos++;
            tok_t *nm = next(P);
            node_t *n = mk(P, E_ATTR, t);
            if (!n) return NULL;
            if (nm->k == T_NAME) n->s = nm->s;
            else if (nm->k == T_INT) { n->k = E_INDEX; if (!(n->b = lit_node(P, nm, json_integer(nm->i)))) return NULL; }
            else { pfail(P, nm, "expected an attribute name after '.'"); return NULL; }
            n->a = e;
            e = n;
        } else if (is_op(t, "[")) {
            P->pos++;
            if (!(e = parse_subscript(P, e, t))) return NULL;
        } else if (is_op(t, "(")) {
            P->pos++;
            node_t *n = mk(P, E_CALL, t);
            if (!n) return NULL;
            n->a = e;
            if (parse_args(P, n) < 0) return NULL;
            e = n;
        } else {
            return e;
        }
    }
}

static node_t *parse_primary(parser_t *P) {
    tok_t *t = next(P);
    node_t *n;
    switch (t->k) {
    case T_STR: {
        strbuf_t b = {0};
        strbuf_add(&b, t->s, t->n);
        while (peek(P)->k == T_STR) { tok_t *u = next(P); strbuf_add(&b, u->s, u->n); }   /* "a" "b" */
        n = b.err ? NULL : lit_node(P, t, json_stringn_nocheck(b.p ? b.p : "", b.n));
        free(b.p);
        return n;
    }
    case T_INT: return lit_node(P, t, json_integer(t->i));
    case T_FLOAT: return lit_node(P, t, json_real(t->f));
    case T_NAME:
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True")) return lit_node(P, t, json_true());
        if (!strcmp(t->s, "false") || !strcmp(t->s, "False")) return lit_node(P, t, json_false());
        if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) return lit_node(P, t, json_null());
        if ((n = mk(P, E_NAME, t))) n->s = t->s;
        return n;
    case T_OP:
        if (!strcmp(t->s, "(")) {
            node_t *e = NULL, *tup = NULL;
            if (accept_op(P, ")")) return mk(P, E_LISTLIT, t);   /* () */
            for (;;) {
                node_t *x = parse_expr(P);
                if (!x) return NULL;
                if (!e && !tup && !is_op(peek(P), ",")) { e = x; break; }
                if (!tup && !(tup = mk(P, E_LISTLIT, t))) return NULL;
                if (add_child(P, tup, x, NULL) < 0) return NULL;
                if (!accept_op(P, ",") || is_op(peek(P), ")")) break;
            }
            if (expect_op(P, ")") < 0) return NULL;
            return tup ? tup : e;
        }
        if (!strcmp(t->s, "[")) {
            if (!(n = mk(P, E_LISTLIT, t))) return NULL;
            while (!accept_op(P, "]")) {
                if (n->n && expect_op(P, ",") < 0) return NULL;
                if (accept_op(P, "]")) break;
                node_t *x = parse_expr(P);
                if (!x || add_child(P, n, x, NULL) < 0) return NULL;
            }
            return n;
        }
        if (!strcmp(t->s, "{")) {
            if (!(n = mk(P, E_DICT, t))) return NULL;
            while (!accept_op(P, "}")) {
                if (n->n && expect_op(P, ",") < 0) return NULL;
                if (accept_op(P, "}")) break;
                node_t *k = parse_expr(P);
                if (!k || expect_op(P, ":") < 0) return NULL;
                node_t *v = parse_expr(P);
                if (!v || add_child(P, n, k, NULL) < 0 || add_child(P, n, v, NULL) < 0) return NULL;
            }
            return n;
        }
        /* fall through */
    default:
        pfail(P, t, "unexpected %s", tok_desc(t));
        return NULL;
    }
}

/* name [ '(' args ')' ] after '|' or 'is'; a test also takes one bare argument (`divisibleby 3`) */
static node_t *parse_filter_or_test(parser_t *P, int kind, node_t *obj, const tok_t *at) {
    node_t *n = mk(P, kind, at);
    if (!n) return NULL;
    n->a = obj;
    if (kind == E_TEST && accept_name(P, "not")) n->op = 1;
    tok_t *nm = next(P);
    if (nm->k != T_NAME) {
        if (kind == E_TEST && nm->k == T_OP && (!strcmp(nm->s, "==") || !strcmp(nm->s, "!=") || !strcmp(nm->s, "<") ||
                                                !strcmp(nm->s, ">") || !strcmp(nm->s, "<=") || !strcmp(nm->s, ">="))) {
            n->s = nm->s;
        } else {
            pfail(P, nm, "expected a %s name", kind == E_FILTER ? "filter" : "test");
            return NULL;
        }
    } else {
        n->s = nm->s;
        while (kind == E_FILTER && accept_op(P, ".")) {   /* dotted filter names: keep the last part */
            tok_t *x = next(P);
            if (x->k != T_NAME) { pfail(P, x, "expected a filter name"); return NULL; }
            n->s = x->s;
        }
    }
    if (accept_op(P, "(")) {
        if (parse_args(P, n) < 0) return NULL;
    } else if (kind == E_TEST) {
        tok_t *x = peek(P);
        int starts = x->k == T_STR || x->k == T_INT || x->k == T_FLOAT || is_op(x, "[") || is_op(x, "{") ||
                     is_op(x, "(") || is_op(x, "-") ||
                     (x->k == T_NAME && strcmp(x->s, "else") && strcmp(x->s, "or") && strcmp(x->s, "and") &&
                      strcmp(x->s, "if") && strcmp(x->s, "is") && strcmp(x->s, "in") && strcmp(x->s, "not"));
        if (starts) {
            node_t *arg = parse_unary(P, 0);
            if (!arg || add_child(P, n, arg, NULL) < 0) return NULL;
        }
    }
    return n;
}

static node_t *parse_unary(parser_t *P, int with_filter) {
    tok_t *t = peek(P);
    node_t *e;
    DEPTH_IN(P, t);
    if (is_op(t, "-") || is_op(t, "+")) {
        P->pos++;
        node_t *x = parse_unary(P, 0);
        if (!x || !(e = mk(P, E_NEG, t))) return NULL;
        e->a = x;
        e->op = t->s[0];
    } else if (!(e = parse_primary(P))) {
        return NULL;
    }
    if (!(e = parse_postfix(P, e))) return NULL;
    while (with_filter) {
        tok_t *x = peek(P);
        if (is_op(x, "|")) { P->pos++; e = parse_filter_or_test(P, E_FILTER, e, x); }
        else if (is_name(x, "is")) { P->pos++; e = parse_filter_or_test(P, E_TEST, e, x); }
        else if (is_op(x, "(")) e = parse_postfix(P, e);
        else break;
        if (!e) return NULL;
        if (!(e = parse_postfix(P, e))) return NULL;
    }
    P->depth--;
    return e;
}

enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW, OP_CONCAT,
       OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN };

static node_t *bin(parser_t *P, int op, node_t *a, node_t *b, const tok_t *at) {
    node_t *n = a && b ? mk(P, E_BIN, at) : NULL;
    if (n) { n->op = op; n->a = a; n->b = b; }
    return n;
}

static node_t *parse_pow(parser_t *P) {
    node_t *e = parse_unary(P, 1);
    while (e && is_op(peek(P), "**")) { tok_t *t = next(P); e = bin(P, OP_POW, e, parse_unary(P, 1), t); }
    return e;
}
static node_t *parse_mul(parser_t *P) {
    node_t *e = parse_pow(P);
    for (;;) {
        tok_t *t = peek(P);
        int op = is_op(t, "*") ? OP_MUL : is_op(t, "/") ? OP_DIV : is_op(t, "//") ? OP_FLOORDIV : is_op(t, "%") ? OP_MOD : 0;
        if (!e || !op) return e;
        P->pos++;
        e = bin(P, op, e, parse_pow(P), t);
    }
}
static node_t *parse_concat(parser_t *P) {
    node_t *e = parse_mul(P);
    while (e && is_op(peek(P), "~")) { tok_t *t = next(P); e = bin(P, OP_CONCAT, e, parse_mul(P), t); }
    return e;
}
static node_t *parse_add(parser_t *P) {
    node_t *e = parse_concat(P);
    for (;;) {
        tok_t *t = peek(P);
        int op = is_op(t, "+") ? OP_ADD : is_op(t, "-") ? OP_SUB : 0;
        if (!e || !op) return e;
        P->pos++;
        e = bin(P, op, e, parse_concat(P), t);
    }
}
/* a == b < c: chained, as Python (every pair must hold) */
static node_t *parse_compare(parser_t *P) {
    node_t *e = parse_add(P), *chain = NULL;
    for (;;) {
        tok_t *t = peek(P);
        int op = is_op(t, "==") ? OP_EQ : is_op(t, "!=") ? OP_NE : is_op(t, "<") ? OP_LT : is_op(t, "<=") ? OP_LE
               : is_op(t, ">") ? OP_GT : is_op(t, ">=") ? OP_GE : is_name(t, "in") ? OP_IN : 0;
        if (!op && is_name(t, "not") && is_name(&P->toks[P->pos + 1], "in")) { op = OP_NOTIN; P->pos++; }
        if (!e || !op) return chain ? chain : e;
        P->pos++;
        node_t *r = parse_add(P);
        if (!r) return NULL;
        if (!chain) { if (!(chain = mk(P, E_CMP, t)) || add_child(P, chain, e, NULL) < 0) return NULL; }
        node_t *opn = mk(P, E_LIT, t);   /* the operator rides on a placeholder before each operand */
        if (!opn) return NULL;
        opn->op = op;
        if (add_child(P, chain, opn, NULL) < 0 || add_child(P, chain, r, NULL) < 0) return NULL;
    }
}
static node_t *parse_not(parser_t *P) {
    tok_t *t = peek(P);
    if (is_name(t, "not")) {
        P->pos++;
        DEPTH_IN(P, t);
        node_t *x = parse_not(P), *n = x ? mk(P, E_NOT, t) : NULL;
        P->depth--;
        if (n) n->a = x;
        return n;
    }
    return parse_compare(P);
}
static node_t *parse_and(parser_t *P) {
    node_t *e = parse_not(P);
    while (e && is_name(peek(P), "and")) {
        tok_t *t = next(P);
        node_t *r = parse_not(P), *n = r ? mk(P, E_AND, t) : NULL;
        if (!n) return NULL;
        n->a = e; n->b = r; e = n;
    }
    return e;
}
static node_t *parse_or(parser_t *P) {
    node_t *e = parse_and(P);
    while (e && is_name(peek(P), "or")) {
        tok_t *t = next(P);
        node_t *r = parse_and(P), *n = r ? mk(P, E_OR, t) : NULL;
        if (!n) return NULL;
        n->a = e; n->b = r; e = n;
    }
    return e;
}
static node_t *parse_expr(parser_t *P) {
    tok_t *at = peek(P);
    DEPTH_IN(P, at);
    node_t *e = parse_or(P);
    while (e && is_name(peek(P), "if")) {
        tok_t *t = next(P);
        node_t *c = parse_or(P), *n = c ? mk(P, E_COND, t) : NULL;
        if (!n) return NULL;
        n->a = c; n->b = e;
        if (accept_name(P, "else") && !(n->c = parse_expr(P))) return NULL;
        e = n;
    }
    P->depth--;
    return e;
}

/* a, b = ... (a tuple without brackets) as in `{% set x = 1, 2 %}` */
static node_t *parse_tuple_expr(parser_t *P) {
    tok_t *at = peek(P);
    node_t *e = parse_expr(P);
    if (!e || !is_op(peek(P), ",")) return e;
    node_t *tup = mk(P, E_LISTLIT, at);
    if (!tup || add_child(P, tup, e, NULL) < 0) return NULL;
    while (accept_op(P, ",")) {
        if (peek(P)->k == T_BEND) break;
        node_t *x = parse_expr(P);
        if (!x || add_child(P, tup, x, NULL) < 0) return NULL;
    }
    return tup;
}

/* ---- statements ---------------------------------------------------------------------------- */

static node_t *parse_body(parser_t *P, const char *const *stops, const char **stopped);

static int expect_bend(parser_t *P) {
    if (peek(P)->k == T_BEND) { P->pos++; return 0; }
    return pfail(P, peek(P), "expected '%%}', got %s", tok_desc(peek(P)));
}

/* comma-separated target names into n->s (and s2, and further in v as E_NAME) */
static int parse_targets(parser_t *P, node_t *n) {
    int k = 0;
    do {
        tok_t *t = next(P);
        if (t->k != T_NAME) return pfail(P, t, "expected a variable name");
        if (k == 0) n->s = t->s;
        node_t *nm = mk(P, E_NAME, t);
        if (!nm) return -1;
        nm->s = t->s;
        if (add_child(P, n, nm, NULL) < 0) return -1;
        k++;
    } while (accept_op(P, ","));
    n->op = k;
    return 0;
}

static node_t *parse_if(parser_t *P, const tok_t *at) {
    static const char *const stops[] = {"elif", "else", "endif", NULL};
    node_t *n = mk(P, N_IF, at);
    const char *stop;
    if (!n || !(n->a = parse_expr(P)) || expect_bend(P) < 0 || !(n->c = parse_body(P, stops, &stop))) return NULL;
    if (!strcmp(stop, "elif")) {
        n->d = parse_if(P, &P->toks[P->pos - 1]);
        return n->d ? n : NULL;
    }
    if (!strcmp(stop, "else")) {
        static const char *const end[] = {"endif", NULL};
        if (expect_bend(P) < 0 || !(n->d = parse_body(P, end, &stop))) return NULL;
    }
    return expect_bend(P) < 0 ? NULL : n;
}

static node_t *parse_for(parser_t *P, const tok_t *at) {
    static const char *const stops[] = {"else", "endfor", NULL}, *const end[] = {"endfor", NULL};
    node_t *n = mk(P, N_FOR, at);
    const char *stop;
    if (!n || parse_targets(P, n) < 0) return NULL;
    if (!accept_name(P, "in")) { pfail(P, peek(P), "expected 'in' in a for loop"); return NULL; }
    if (!(n->a = parse_or(P))) return NULL;   /* not parse_expr: its `if` is the loop's filter */
    if (accept_name(P, "if") && !(n->b = parse_expr(P))) return NULL;
    accept_name(P, "recursive");
    if (expect_bend(P) < 0 || !(n->c = parse_body(P, stops, &stop))) return NULL;
    if (!strcmp(stop, "else") && (expect_bend(P) < 0 || !(n->d = parse_body(P, end, &stop)))) return NULL;
    return expect_bend(P) < 0 ? NULL : n;
}

static node_t *parse_set(parser_t *P, const tok_t *at) {
    node_t *n = mk(P, N_SET, at);
    if (!n) return NULL;
    tok_t *t = peek(P);
    if (t->k == T_NAME && is_op(&P->toks[P->pos + 1], ".")) {   /* ns.attr = ... */
        n->s = t->s;
        P->pos += 2;
        tok_t *a = next(P);
        if (a->k != T_NAME) { pfail(P, a, "expected an attribute name"); return NULL; }
        n->s2 = a->s;
    } else if (parse_targets(P, n) < 0) {
        return NULL;
    }
    if (!accept_op(P, "=")) {   /* {% set x %}...{% endset %} */
        static const char *const end[] = {"endset", NULL};
        const char *stop;
        if (n->s2 || n->op != 1) { pfail(P, peek(P), "expected '='"); return NULL; }
        n->k = N_SETBLOCK;
        if (expect_bend(P) < 0 || !(n->c = parse_body(P, end, &stop)) || expect_bend(P) < 0) return NULL;
        return n;
    }
    if (!(n->a = parse_tuple_expr(P)) || expect_bend(P) < 0) return NULL;
    return n;
}

/* macro name(a, b=default): params are E_NAME children with their default in ->a */
static node_t *parse_macro(parser_t *P, const tok_t *at) {
    static const char *const end[] = {"endmacro", NULL};
    node_t *n = mk(P, N_MACRO, at);
    tok_t *nm = next(P);
    const char *stop;
    if (!n) return NULL;
    if (nm->k != T_NAME) { pfail(P, nm, "expected a macro name"); return NULL; }
    n->s = nm->s;
    if (expect_op(P, "(") < 0) return NULL;
    while (!accept_op(P, ")")) {
        if (n->n && expect_op(P, ",") < 0) return NULL;
        tok_t *p = next(P);
        if (p->k != T_NAME) { pfail(P, p, "expected a parameter name"); return NULL; }
        node_t *pn = mk(P, E_NAME, p);
        if (!pn) return NULL;
        pn->s = p->s;
        if (accept_op(P, "=") && !(pn->a = parse_expr(P))) return NULL;
        if (add_child(P, n, pn, NULL) < 0) return NULL;
    }
    if (expect_bend(P) < 0 || !(n->c = parse_body(P, end, &stop))) return NULL;
    accept_name(P, n->s);
    return expect_bend(P) < 0 ? NULL : n;
}

static node_t *parse_stmt(parser_t *P, const tok_t *at) {
    tok_t *t = next(P);
    if (t->k != T_NAME) { pfail(P, t, "expected a statement name"); return NULL; }
    const char *s = t->s;
    if (!strcmp(s, "if")) return parse_if(P, t);
    if (!strcmp(s, "for")) return parse_for(P, t);
    if (!strcmp(s, "set")) return parse_set(P, t);
    if (!strcmp(s, "macro")) return parse_macro(P, t);
    if (!strcmp(s, "break") || !strcmp(s, "continue")) {
        node_t *n = mk(P, s[0] == 'b' ? N_BREAK : N_CONTINUE, t);
        return n && expect_bend(P) == 0 ? n : NULL;
    }
    if (!strcmp(s, "call")) {
        static const char *const end[] = {"endcall", NULL};
        node_t *n = mk(P, N_CALLBLOCK, t);
        const char *stop;
        if (!n || !(n->a = parse_expr(P))) return NULL;
        if (n->a->k != E_CALL) { pfail(P, t, "{%% call %%} needs a macro call"); return NULL; }
        if (expect_bend(P) < 0 || !(n->c = parse_body(P, end, &stop)) || expect_bend(P) < 0) return NULL;
        return n;
    }
    if (!strcmp(s, "generation")) {   /* HF's assistant-mask marker: renders its body */
        static const char *const end[] = {"endgeneration", NULL};
        const char *stop;
        node_t *b;
        if (expect_bend(P) < 0 || !(b = parse_body(P, end, &stop)) || expect_bend(P) < 0) return NULL;
        return b;
    }
    (void)at;
    pfail(P, t, "unknown statement '%s'", s);
    return NULL;
}

/* statements until one of stops (its name consumed, its '%}' not: *stopped names it) or, when
 * stops is NULL, the end of the template */
static node_t *parse_body(parser_t *P, const char *const *stops, const char **stopped) {
    tok_t *at = peek(P);
    DEPTH_IN(P, at);
    node_t *list = mk(P, N_LIST, at);
    if (!list) return NULL;
    for (;;) {
        tok_t *t = next(P);
        node_t *n = NULL;
        if (t->k == T_EOF) {
            if (!stops) break;
            int last = 0;
            while (stops[last + 1]) last++;
            pfail(P, t, "unexpected end of template: expected {%% %s %%} (the block opened at line %d)", stops[last], at->line);
            return NULL;
        }
        if (t->k == T_TEXT) {
            if (!(n = mk(P, N_TEXT, t))) return NULL;
            n->s = t->s; n->n_s = t->n;
        } else if (t->k == T_VBEG) {
            if (!(n = mk(P, N_OUT, t)) || !(n->a = parse_expr(P))) return NULL;
            if (peek(P)->k != T_VEND) { pfail(P, peek(P), "expected '}}', got %s", tok_desc(peek(P))); return NULL; }
            P->pos++;
        } else if (t->k == T_BBEG) {
            tok_t *nm = peek(P);
            for (int k = 0; stops && stops[k] && nm->k == T_NAME; k++)
                if (!strcmp(nm->s, stops[k])) { P->pos++; *stopped = stops[k]; P->depth--; return list; }
            if (nm->k == T_NAME && (!strncmp(nm->s, "end", 3) || !strcmp(nm->s, "else") || !strcmp(nm->s, "elif"))) {
                pfail(P, nm, "unexpected {%% %s %%}%s%s", nm->s, stops ? ": expected " : "", stops ? stops[0] : "");
                return NULL;
            }
            if (!(n = parse_stmt(P, t))) return NULL;
        } else {
            pfail(P, t, "unexpected %s", tok_desc(t));
            return NULL;
        }
        if (add_child(P, list, n, NULL) < 0) return NULL;
    }
    P->depth--;
    return list;
}

void jinja_opts_default(jinja_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->trim_blocks = 1;
    o->lstrip_blocks = 1;
    o->max_output = 16u << 20;
    o->max_alloc = 256u << 20;
    o->max_steps = 10 * 1000 * 1000;
    o->max_depth = 64;
    o->now = -1;
}

/* the literals live in one JSON array hung on a node so that destroy finds them */
jinja_t *jinja_parse(const char *src, size_t len, const jinja_opts_t *opts, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    jinja_t *t = calloc(1, sizeof *t);
    if (!t) { if (err && errlen) snprintf(err, errlen, "out of memory"); return NULL; }
    if (opts) t->o = *opts; else jinja_opts_default(&t->o);
    if (t->o.max_depth <= 0) t->o.max_depth = 64;
    /* newlines normalised to \n, one trailing newline dropped (keep_trailing_newline off) */
    char *s = malloc(len + 1);
    size_t n = 0;
    if (!s) { free(t); if (err && errlen) snprintf(err, errlen, "out of memory"); return NULL; }
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') { s[n++] = '\n'; if (i + 1 < len && src[i + 1] == '\n') i++; }
        else s[n++] = src[i];
    }
    if (!t->o.keep_trailing_newline && n && s[n - 1] == '\n') n--;
    lexer_t L = {t, s, n, 0, 1, 1, NULL, 0, 0, err, errlen};
    int rc = lex(&L);
    if (rc == 0 && !lex_push(&L, T_EOF, L.line, L.col)) rc = lex_fail(&L, L.line, L.col, "out of memory");
    free(s);
    parser_t P = {t, L.toks, L.n, 0, 0, err, errlen, NULL, 0, 0};
    const char *stopped = NULL;
    if (rc == 0) t->root = parse_body(&P, NULL, &stopped);
    free(L.toks);
    json_t *keep = json_array();
    for (int i = 0; i < P.n_lits; i++) {
        if (keep) json_array_append(keep, P.lits[i]);
        json_decref(P.lits[i]);
    }
    free(P.lits);
    node_t *holder = t->root ? arena_alloc(&t->arena, sizeof *holder) : NULL;
    if (!t->root || !keep || !holder) {
        if (t->root && err && errlen) snprintf(err, errlen, "out of memory");
        json_decref(keep);
        arena_free(&t->arena);
        free(t);
        return NULL;
    }
    holder->lit = keep;
    t->root->d = holder;   /* N_LIST has no use for d */
    return t;
}

void jinja_destroy(jinja_t **p) {
    if (!p || !*p) return;
    jinja_t *t = *p;
    if (t->root && t->root->d) json_decref(t->root->d->lit);
    arena_free(&t->arena);
    free(t);
    *p = NULL;
}

/* ---- values ------------------------------------------------------------------------------ */

enum val_kind { V_UNDEF, V_JSON, V_MACRO, V_BUILTIN, V_METHOD, V_LOOP };
enum builtin { B_RANGE = 1, B_RAISE, B_NAMESPACE, B_STRFTIME, B_DICT };

struct frame;
typedef struct val {
    int k;
    json_t *j;             /* V_JSON: the value (one reference held); V_METHOD: the object */
    const node_t *m;       /* V_MACRO: the macro (or a call block's body as caller) */
    struct frame *env;     /* V_MACRO: the frame its body sees above its own */
    const char *name;      /* V_UNDEF: what was looked up; V_METHOD: the method */
    int id;                /* V_BUILTIN */
    struct loop *loop;     /* V_LOOP */
} val_t;

typedef struct loop { long index0, length; json_t *items; } loop_t;

typedef struct frame {
    struct frame *up;
    const char **names; val_t *vals; int n, cap;
} frame_t;

typedef struct ctx {
    const jinja_t *t;
    strbuf_t *out;
    long steps;
    int depth;
    size_t built;
    char *err; size_t errlen;
    int failed;
    int brk;               /* 1: break, 2: continue pending */
    int raised;            /* the failure is raise_exception's */
    frame_t *root;
    json_t *namespaces;    /* array of the namespace objects (only these take ns.attr = ...) */
    const node_t *caller;  /* innermost {% call %} body, for caller() */
} ctx_t;

static int fail(ctx_t *c, const node_t *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(ctx_t *c, const node_t *at, const char *fmt, ...) {
    if (!c->failed) {
        char msg[240];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (c->err && c->errlen) {
            if (at) snprintf(c->err, c->errlen, "line %d: %s", at->line, msg);
            else snprintf(c->err, c->errlen, "%s", msg);
        }
        c->failed = 1;
    }
    return -1;
}

static void vfree(val_t *v) {
    if (v->j) json_decref(v->j);
    memset(v, 0, sizeof *v);
}
static val_t vjson(json_t *j) { val_t v = {0}; v.k = V_JSON; v.j = j; return v; }   /* takes j */
static val_t vundef(const char *name) { val_t v = {0}; v.name = name; return v; }
static val_t vcopy(const val_t *v) { val_t r = *v; if (r.j) json_incref(r.j); return r; }

static int is_num(const json_t *j) { return json_is_integer(j) || json_is_real(j) || json_is_boolean(j); }
static double num(const json_t *j) {
    return json_is_integer(j) ? (double)json_integer_value(j) : json_is_real(j) ? json_real_value(j) : json_is_true(j);
}
static int is_int(const json_t *j) { return json_is_integer(j) || json_is_boolean(j); }
static long long ival(const json_t *j) { return json_is_integer(j) ? json_integer_value(j) : json_is_true(j); }

/* counts bytes built against max_alloc and max_output; NULL (and c failed) when over */
static json_t *mkstr(ctx_t *c, const node_t *at, const char *s, size_t n) {
    c->built += n;
    if (n > c->t->o.max_output) { fail(c, at, "a string longer than %zu bytes", c->t->o.max_output); return NULL; }
    if (c->built > c->t->o.max_alloc) { fail(c, at, "the template built more than %zu bytes", c->t->o.max_alloc); return NULL; }
    json_t *j = json_stringn_nocheck(s, n);
    if (!j) fail(c, at, "out of memory");
    return j;
}
static json_t *sb_str(ctx_t *c, const node_t *at, strbuf_t *b) {
    if (b->err) { free(b->p); fail(c, at, "out of memory"); return NULL; }
    json_t *j = mkstr(c, at, b->p ? b->p : "", b->n);
    free(b->p);
    memset(b, 0, sizeof *b);
    return j;
}

static int truthy(const val_t *v) {
    if (v->k == V_UNDEF) return 0;
    if (v->k != V_JSON) return 1;
    const json_t *j = v->j;
    switch (json_typeof(j)) {
    case JSON_NULL: case JSON_FALSE: return 0;
    case JSON_TRUE: return 1;
    case JSON_INTEGER: return json_integer_value(j) != 0;
    case JSON_REAL: return json_real_value(j) != 0;
    case JSON_STRING: return json_string_length(j) > 0;
    case JSON_ARRAY: return json_array_size(j) > 0;
    case JSON_OBJECT: return json_object_size(j) > 0;
    }
    return 0;
}

/* Python's repr of a float: the shortest digits that read back, Python's exponent rules */
static void put_float(strbuf_t *b, double d) {
    if (isnan(d)) { strbuf_puts(b, "nan"); return; }
    if (isinf(d)) { strbuf_puts(b, d < 0 ? "-inf" : "inf"); return; }
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, d);
        if (strtod(tmp, NULL) == d) break;
    }
    /* tmp = [-]D.DDDDe[+-]XX → digits and exponent */
    char digits[24]; int nd = 0, neg = tmp[0] == '-';
    const char *p = tmp + neg;
    for (; *p && *p != 'e'; p++) if (isdigit((unsigned char)*p)) digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int e = atoi(p + 1);
    if (neg) strbuf_add(b, "-", 1);
    if (e < -4 || e >= 16) {
        strbuf_add(b, digits, 1);
        if (nd > 1) { strbuf_add(b, ".", 1); strbuf_add(b, digits + 1, (size_t)nd - 1); }
        strbuf_printf(b, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    } else if (e < 0) {
        strbuf_puts(b, "0.");
        for (int k = 0; k < -e - 1; k++) strbuf_add(b, "0", 1);
        strbuf_add(b, digits, (size_t)nd);
    } else {
        for (int k = 0; k <= e; k++) strbuf_add(b, k < nd ? &digits[k] : "0", 1);
        strbuf_add(b, ".", 1);
        if (nd > e + 1) strbuf_add(b, digits + e + 1, (size_t)(nd - e - 1));
        else strbuf_add(b, "0", 1);
    }
}

static void put_repr_str(strbuf_t *b, const char *s, size_t n) {
    char q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
    strbuf_add(b, &q, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\\' || ch == (unsigned char)q) { strbuf_add(b, "\\", 1); strbuf_add(b, s + i, 1); }
        else if (ch == '\n') strbuf_puts(b, "\\n");
        else if (ch == '\r') strbuf_puts(b, "\\r");
        else if (ch == '\t') strbuf_puts(b, "\\t");
        else if (ch < 0x20 || ch == 0x7f) strbuf_printf(b, "\\x%02x", ch);
        else strbuf_add(b, s + i, 1);
    }
    strbuf_add(b, &q, 1);
}

/* str(x) (top) or repr(x) inside containers, as Python prints them */
static void put_py(strbuf_t *b, const json_t *j, int repr) {
    switch (json_typeof(j)) {
    case JSON_NULL: strbuf_puts(b, "None"); break;
    case JSON_TRUE: strbuf_puts(b, "True"); break;
    case JSON_FALSE: strbuf_puts(b, "False"); break;
    case JSON_INTEGER: strbuf_printf(b, "%lld", (long long)json_integer_value(j)); break;
    case JSON_REAL: put_float(b, json_real_value(j)); break;
    case JSON_STRING:
        if (repr) put_repr_str(b, json_string_value(j), json_string_length(j));
        else strbuf_add(b, json_string_value(j), json_string_length(j));
        break;
    case JSON_ARRAY: {
        strbuf_add(b, "[", 1);
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (i) strbuf_puts(b, ", ");
            put_py(b, json_array_get(j, i), 1);
        }
        strbuf_add(b, "]", 1);
        break;
    }
    case JSON_OBJECT: {
        const char *k; json_t *v; int first = 1;
        strbuf_add(b, "{", 1);
        json_object_foreach((json_t *)j, k, v) {
            if (!first) strbuf_puts(b, ", ");
            first = 0;
            put_repr_str(b, k, strlen(k));
            strbuf_puts(b, ": ");
            put_py(b, v, 1);
        }
        strbuf_add(b, "}", 1);
        break;
    }
    }
}

static void put_json_str(strbuf_t *b, const char *s, size_t n) {
    strbuf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"') strbuf_puts(b, "\\\"");
        else if (ch == '\\') strbuf_puts(b, "\\\\");
        else if (ch == '\n') strbuf_puts(b, "\\n");
        else if (ch == '\r') strbuf_puts(b, "\\r");
        else if (ch == '\t') strbuf_puts(b, "\\t");
        else if (ch == '\b') strbuf_puts(b, "\\b");
        else if (ch == '\f') strbuf_puts(b, "\\f");
        else if (ch < 0x20) strbuf_printf(b, "\\u%04x", ch);
        else strbuf_add(b, s + i, 1);
    }
    strbuf_add(b, "\"", 1);
}

static int cmp_keys(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* json.dumps(x, ensure_ascii=False, indent=indent (<0: none), sort_keys) — HF's tojson */
static void put_json(strbuf_t *b, const json_t *j, int indent, int level, int sort_keys) {
    switch (json_typeof(j)) {
    case JSON_NULL: strbuf_puts(b, "null"); return;
    case JSON_TRUE: strbuf_puts(b, "true"); return;
    case JSON_FALSE: strbuf_puts(b, "false"); return;
    case JSON_INTEGER: strbuf_printf(b, "%lld", (long long)json_integer_value(j)); return;
    case JSON_REAL: {
        double d = json_real_value(j);
        if (isnan(d)) strbuf_puts(b, "NaN");
        else if (isinf(d)) strbuf_puts(b, d < 0 ? "-Infinity" : "Infinity");
        else put_float(b, d);
        return;
    }
    case JSON_STRING: put_json_str(b, json_string_value(j), json_string_length(j)); return;
    default: break;
    }
    int arr = json_is_array(j);
    size_t n = arr ? json_array_size(j) : json_object_size(j);
    strbuf_add(b, arr ? "[" : "{", 1);
    if (n) {
        const char **keys = NULL;
        if (!arr) {
            keys = malloc(n * sizeof *keys);
            if (!keys) { b->err = STRBUF_NOMEM; return; }
            size_t k = 0; const char *key; json_t *v;
            json_object_foreach((json_t *)j, key, v) keys[k++] = key;
            if (sort_keys) qsort(keys, n, sizeof *keys, cmp_keys);
        }
        for (size_t i = 0; i < n; i++) {
            if (i) strbuf_add(b, ",", 1);
            if (indent >= 0) {
                strbuf_add(b, "\n", 1);
                for (int s = 0; s < indent * (level + 1); s++) strbuf_add(b, " ", 1);
            } else if (i) {
                strbuf_add(b, " ", 1);
            }
            if (arr) {
                put_json(b, json_array_get(j, i), indent, level + 1, sort_keys);
            } else {
                put_json_str(b, keys[i], strlen(keys[i]));
                strbuf_puts(b, ": ");
                put_json(b, json_object_get(j, keys[i]), indent, level + 1, sort_keys);
            }
        }
        free(keys);
        if (indent >= 0) {
            strbuf_add(b, "\n", 1);
            for (int s = 0; s < indent * level; s++) strbuf_add(b, " ", 1);
        }
    }
    strbuf_add(b, arr ? "]" : "}", 1);
}

static const char *type_name(const val_t *v) {
    if (v->k == V_UNDEF) return "undefined";
    if (v->k == V_MACRO) return "macro";
    if (v->k == V_BUILTIN || v->k == V_METHOD) return "function";
    if (v->k == V_LOOP) return "loop";
    switch (json_typeof(v->j)) {
    case JSON_NULL: return "NoneType";
    case JSON_TRUE: case JSON_FALSE: return "bool";
    case JSON_INTEGER: return "int";
    case JSON_REAL: return "float";
    case JSON_STRING: return "str";
    case JSON_ARRAY: return "list";
    default: return "dict";
    }
}

/* str(v) into b; 0, or <0 for values Python could print but this does not (macros, loops) */
static int put_str(ctx_t *c, const node_t *at, strbuf_t *b, const val_t *v) {
    if (v->k == V_UNDEF) return 0;
    if (v->k != V_JSON) return fail(c, at, "cannot print a %s", type_name(v));
    put_py(b, v->j, 0);
    return 0;
}

/* ---- UTF-8 helpers ------------------------------------------------------------------------ */

static size_t u8_count(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}
/* byte offset of code point index ci */
static size_t u8_off(const char *s, size_t n, size_t ci) {
    size_t i = 0, k = 0;
    for (; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) { if (k == ci) return i; k++; }
    }
    return n;
}
static unsigned u8_at(const char *s, size_t n, size_t *len) {
    unsigned char c = (unsigned char)s[0];
    int k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if ((size_t)k > n) k = 1;
    unsigned cp = k == 1 ? c : c & (0x3F >> (k - 1));
    for (int i = 1; i < k; i++) cp = cp << 6 | ((unsigned char)s[i] & 0x3F);
    *len = (size_t)k;
    return cp;
}
/* Python's str.isspace */
static int py_space(unsigned cp) {
    return (cp >= 9 && cp <= 13) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}
/* strip: which = 1 left, 2 right, 3 both; chars NULL: white space */
static void py_strip(const char *s, size_t n, const char *chars, size_t nc, int which, size_t *from, size_t *to) {
    size_t a = 0, z = n, l;
    #define IN_SET(p, rem) (chars ? memmem(chars, nc, p, l) != NULL : py_space(u8_at(p, rem, &l)))
    while (which & 1 && a < z) {
        u8_at(s + a, z - a, &l);
        if (!(chars ? memmem(chars, nc, s + a, l) != NULL : py_space(u8_at(s + a, z - a, &l)))) break;
        a += l;
    }
    while (which & 2 && z > a) {
        size_t b = z - 1;
        while (b > a && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
        u8_at(s + b, z - b, &l);
        if (!(chars ? memmem(chars, nc, s + b, l) != NULL : py_space(u8_at(s + b, z - b, &l)))) break;
        z = b;
    }
    #undef IN_SET
    *from = a; *to = z;
}

/* ---- frames -------------------------------------------------------------------------------- */

static val_t *frame_find(frame_t *f, const char *name) {
    for (; f; f = f->up)
        for (int i = f->n - 1; i >= 0; i--)
            if (!strcmp(f->names[i], name)) return &f->vals[i];
    return NULL;
}

/* binds name in f (takes v) */
static int frame_set(ctx_t *c, const node_t *at, frame_t *f, const char *name, val_t v) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) { vfree(&f->vals[i]); f->vals[i] = v; return 0; }
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 8;
        const char **nn = realloc(f->names, (size_t)cap * sizeof *nn);
        if (nn) f->names = nn;
        val_t *vv = nn ? realloc(f->vals, (size_t)cap * sizeof *vv) : NULL;
        if (!vv) { vfree(&v); return fail(c, at, "out of memory"); }
        f->vals = vv; f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n++] = v;
    return 0;
}

static void frame_free(frame_t *f) {
    for (int i = 0; i < f->n; i++) vfree(&f->vals[i]);
    free(f->names);
    free(f->vals);
    memset(f, 0, sizeof *f);
}

/* ---- evaluation ---------------------------------------------------------------------------- */

static int eval(ctx_t *c, frame_t *f, const node_t *e, val_t *out);
static int exec(ctx_t *c, frame_t *f, const node_t *s);

static int step(ctx_t *c, const node_t *at) {
    if (c->failed) return -1;
    if (++c->steps > c->t->o.max_steps) return fail(c, at, "the template ran more than %ld steps", c->t->o.max_steps);
    return 0;
}

/* v as a JSON value for storing in a list, dict or namespace (undefined → null) */
static json_t *to_json(ctx_t *c, const node_t *at, val_t *v) {
    if (v->k == V_JSON) { json_t *j = v->j; v->j = NULL; return j; }
    if (v->k == V_UNDEF) return json_null();
    fail(c, at, "a %s cannot be stored in a list, dict or namespace", type_name(v));
    return NULL;
}

static int eq(const json_t *a, const json_t *b) {
    if (is_num(a) && is_num(b)) return num(a) == num(b);
    return json_equal((json_t *)a, (json_t *)b);
}
static int val_eq(const val_t *a, const val_t *b) {
    if (a->k == V_UNDEF || b->k == V_UNDEF) return a->k == b->k;
    if (a->k != V_JSON || b->k != V_JSON) return a->m == b->m && a->id == b->id && a->k == b->k;
    return eq(a->j, b->j);
}

/* Python's ordering for numbers, strings and lists: <0, 0, >0; *ok = 0 when not comparable */
static int order(const json_t *a, const json_t *b, int *ok) {
    *ok = 1;
    if (is_num(a) && is_num(b)) { double x = num(a), y = num(b); return x < y ? -1 : x > y; }
    if (json_is_string(a) && json_is_string(b)) {
        size_t na = json_string_length(a), nb = json_string_length(b);
        int r = memcmp(json_string_value(a), json_string_value(b), na < nb ? na : nb);
        return r ? r : na < nb ? -1 : na > nb;
    }
    if (json_is_array(a) && json_is_array(b)) {
        size_t na = json_array_size(a), nb = json_array_size(b);
        for (size_t i = 0; i < na && i < nb; i++) {
            json_t *x = json_array_get(a, i), *y = json_array_get(b, i);
            if (eq(x, y)) continue;
            return order(x, y, ok);
        }
        return na < nb ? -1 : na > nb;
    }
    *ok = 0;
    return 0;
}

/* x in container */
static int contains(ctx_t *c, const node_t *at, const val_t *x, const val_t *in, int *res) {
    if (in->k == V_UNDEF) { *res = 0; return 0; }   /* Jinja's Undefined iterates as empty */
    if (in->k != V_JSON) return fail(c, at, "argument of type '%s' is not iterable", type_name(in));
    const json_t *j = in->j;
    if (json_is_string(j)) {
        if (x->k != V_JSON || !json_is_string(x->j))
            return fail(c, at, "'in <string>' requires string as left operand, not %s", type_name(x));
        *res = memmem(json_string_value(j), json_string_length(j), json_string_value(x->j), json_string_length(x->j)) != NULL ||
               json_string_length(x->j) == 0;
        return 0;
    }
    if (json_is_array(j)) {
        *res = 0;
        for (size_t i = 0; i < json_array_size(j) && !*res; i++) *res = x->k == V_JSON && eq(x->j, json_array_get(j, i));
        return 0;
    }
    if (json_is_object(j)) {
        *res = x->k == V_JSON && json_is_string(x->j) && json_object_get(j, json_string_value(x->j)) != NULL;
        return 0;
    }
    return fail(c, at, "argument of type '%s' is not iterable", type_name(in));
}

static int arith(ctx_t *c, const node_t *at, int op, val_t *a, val_t *b, val_t *out) {
    if (op == OP_CONCAT) {
        strbuf_t s = {0};
        if (put_str(c, at, &s, a) < 0 || put_str(c, at, &s, b) < 0) { free(s.p); return -1; }
        json_t *j = sb_str(c, at, &s);
        if (!j) return -1;
        *out = vjson(j);
        return 0;
    }
    if (a->k == V_UNDEF || b->k == V_UNDEF) {
        const val_t *u = a->k == V_UNDEF ? a : b;
        return fail(c, at, "'%s' is undefined", u->name ? u->name : "value");
    }
    if (a->k != V_JSON || b->k != V_JSON) return fail(c, at, "unsupported operand types: %s and %s", type_name(a), type_name(b));
    json_t *x = a->j, *y = b->j, *r = NULL;
    if (op == OP_ADD && json_is_string(x) && json_is_string(y)) {
        strbuf_t s = {0};
        strbuf_add(&s, json_string_value(x), json_string_length(x));
        strbuf_add(&s, json_string_value(y), json_string_length(y));
        if (!(r = sb_str(c, at, &s))) return -1;
    } else if (op == OP_ADD && json_is_array(x) && json_is_array(y)) {
        if (json_array_size(x) + json_array_size(y) > 1000000) return fail(c, at, "a list longer than 1000000 items");
        r = json_array();
        if (!r || json_array_extend(r, x) || json_array_extend(r, y)) { json_decref(r); return fail(c, at, "out of memory"); }
        c->built += 8 * json_array_size(r);
    } else if (op == OP_MUL && (json_is_string(x) || json_is_array(x) || json_is_string(y) || json_is_array(y))) {
        json_t *seq = json_is_string(x) || json_is_array(x) ? x : y, *k = seq == x ? y : x;
        if (!is_int(k)) return fail(c, at, "can't multiply sequence by non-int of type '%s'", type_name(seq == x ? b : a));
        long long times = ival(k);
        if (times < 0) times = 0;
        size_t unit = json_is_string(seq) ? json_string_length(seq) : json_array_size(seq) * 8;
        if (!unit) times = 0; /* '' * 10**9 is '' — without a billion empty appends */
        if (unit && (unsigned long long)times > c->t->o.max_output / unit) return fail(c, at, "a sequence repeated beyond the output limit");
        if (json_is_string(seq)) {
            strbuf_t s = {0};
            for (long long i = 0; i < times; i++) strbuf_add(&s, json_string_value(seq), json_string_length(seq));
            if (!(r = sb_str(c, at, &s))) return -1;
        } else {
            r = json_array();
            for (long long i = 0; r && i < times; i++)
                if (json_array_extend(r, seq)) { json_decref(r); r = NULL; }
            if (!r) return fail(c, at, "out of memory");
        }
    } else if (is_num(x) && is_num(y)) {
        int ints = is_int(x) && is_int(y);
        long long i = ival(x), j = ival(y), ri = 0;
        double d = num(x), e = num(y);
        switch (op) {
        case OP_ADD: if (ints && !__builtin_add_overflow(i, j, &ri)) r = json_integer(ri); else r = json_real(d + e); break;
        case OP_SUB: if (ints && !__builtin_sub_overflow(i, j, &ri)) r = json_integer(ri); else r = json_real(d - e); break;
        case OP_MUL: if (ints && !__builtin_mul_overflow(i, j, &ri)) r = json_integer(ri); else r = json_real(d * e); break;
        case OP_DIV:
            if (e == 0) return fail(c, at, "division by zero");
            r = json_real(d / e);
            break;
        case OP_FLOORDIV: case OP_MOD:
            if (e == 0) return fail(c, at, "%s by zero", op == OP_MOD ? "modulo" : "division");
            if (ints && !(i == INT64_MIN && j == -1)) {
                long long q = i / j, m = i % j;
                if (m && ((m < 0) != (j < 0))) { q--; m += j; }
                r = json_integer(op == OP_MOD ? m : q);
            } else {
                double q = floor(d / e), m = fmod(d, e);
                if (m && ((m < 0) != (e < 0))) m += e;
                r = json_real(op == OP_MOD ? m : q);
            }
            break;
        case OP_POW:
            if (ints && j >= 0) {
                long long acc = 1;
                int over = 0;
                for (long long k = 0; k < j && !over; k++) over = __builtin_mul_overflow(acc, i, &acc);
                if (j > 64 && (i > 1 || i < -1)) over = 1;
                r = over ? json_real(pow(d, e)) : json_integer(acc);
            } else {
                r = json_real(pow(d, e));
            }
            break;
        default: return fail(c, at, "bad operator");
        }
    } else {
        static const char *const names[] = {"", "+", "-", "*", "/", "//", "%", "**"};
        return fail(c, at, "unsupported operand types for %s: '%s' and '%s'", names[op], type_name(a), type_name(b));
    }
    if (!r) return fail(c, at, json_is_real(x) || json_is_real(y) || op == OP_DIV || op == OP_POW
                               ? "a float result that is not finite" : "out of memory");
    *out = vjson(r);
    return 0;
}

/* ---- attribute and item access -------------------------------------------------------------- */

static const char *const STR_METHODS[] = {"strip", "lstrip", "rstrip", "split", "startswith", "endswith", "upper", "lower",
                                          "replace", "title", "capitalize", "format", "find", "count", "join", "splitlines",
                                          "isdigit", "isalpha", "isspace", NULL};
static const char *const DICT_METHODS[] = {"get", "items", "keys", "values", NULL};

static int in_list(const char *const *l, const char *s) {
    for (; *l; l++) if (!strcmp(*l, s)) return 1;
    return 0;
}

static int loop_attr(ctx_t *c, const node_t *at, const loop_t *L, const char *name, val_t *out) {
    long i = L->index0, n = L->length;
    json_t *r = NULL;
    if (!strcmp(name, "index")) r = json_integer(i + 1);
    else if (!strcmp(name, "index0")) r = json_integer(i);
    else if (!strcmp(name, "revindex")) r = json_integer(n - i);
    else if (!strcmp(name, "revindex0")) r = json_integer(n - i - 1);
    else if (!strcmp(name, "first")) r = json_boolean(i == 0);
    else if (!strcmp(name, "last")) r = json_boolean(i == n - 1);
    else if (!strcmp(name, "length")) r = json_integer(n);
    else if (!strcmp(name, "depth")) r = json_integer(1);
    else if (!strcmp(name, "depth0")) r = json_integer(0);
    else if (!strcmp(name, "cycle")) {   /* loop.cycle(a, b, ...): a method bound to this loop */
        val_t m = {0};
        m.k = V_METHOD; m.name = "cycle"; m.loop = (loop_t *)L;
        *out = m;
        return 0;
    }
    else if (!strcmp(name, "previtem") || !strcmp(name, "nextitem")) {
        long k = name[0] == 'p' ? i - 1 : i + 1;
        if (k < 0 || k >= n) { *out = vundef(name); return 0; }
        r = json_incref(json_array_get(L->items, (size_t)k));
    } else {
        *out = vundef(name);
        return 0;
    }
    if (!r) return fail(c, at, "out of memory");
    *out = vjson(r);
    return 0;
}

/* obj.name (attr: 1) or obj[key] (attr: 0), Jinja's order: attribute first for '.', item first for [] */
static int get_member(ctx_t *c, const node_t *at, const val_t *obj, const char *name, int attr, val_t *out) {
    if (obj->k == V_UNDEF) return fail(c, at, "'%s' is undefined", obj->name ? obj->name : "value");
    if (obj->k == V_LOOP) return loop_attr(c, at, obj->loop, name, out);
    if (obj->k != V_JSON) { *out = vundef(name); return 0; }
    json_t *j = obj->j;
    const char *const *methods = json_is_string(j) ? STR_METHODS : json_is_object(j) ? DICT_METHODS : NULL;
    int is_method = methods && in_list(methods, name);
    json_t *item = json_is_object(j) ? json_object_get(j, name) : NULL;
    if (item && !(attr && is_method)) { *out = vjson(json_incref(item)); return 0; }
    if (is_method) {
        val_t m = {0};
        m.k = V_METHOD; m.j = json_incref(j); m.name = name;
        *out = m;
        return 0;
    }
    *out = vundef(name);
    return 0;
}

/* Python's slice.indices(n) and the selected positions' count */
static long slice_idx(long n, const json_t *a, const json_t *b, const json_t *s, long *start, long *stop, long *st) {
    long step = s ? (long)ival(s) : 1;
    if (step == 0) return -1;
    long lo = step < 0 ? -1 : 0, hi = step < 0 ? n - 1 : n;
    long x = a ? (long)ival(a) : (step < 0 ? hi : lo), y = b ? (long)ival(b) : (step < 0 ? lo : hi);
    if (a) { if (x < 0) { x += n; if (x < lo) x = lo; } else if (x > hi) x = hi; }
    if (b) { if (y < 0) { y += n; if (y < lo) y = lo; } else if (y > hi) y = hi; }
    *start = x; *stop = y; *st = step;
    long cnt = step > 0 ? (y > x ? (y - x + step - 1) / step : 0) : (x > y ? (x - y - step - 1) / -step : 0);
    return cnt;
}

static int do_slice(ctx_t *c, const node_t *at, const val_t *obj, val_t *ix, val_t *out) {
    for (int k = 0; k < 3; k++)
        if (ix[k].k == V_JSON && !json_is_null(ix[k].j) && !is_int(ix[k].j)) return fail(c, at, "slice indices must be integers or None");
    const json_t *a = ix[0].k == V_JSON && !json_is_null(ix[0].j) ? ix[0].j : NULL;
    const json_t *b = ix[1].k == V_JSON && !json_is_null(ix[1].j) ? ix[1].j : NULL;
    const json_t *s = ix[2].k == V_JSON && !json_is_null(ix[2].j) ? ix[2].j : NULL;
    if (obj->k != V_JSON || (!json_is_string(obj->j) && !json_is_array(obj->j)))
        return fail(c, at, "cannot slice a %s", type_name(obj));
    long x, y, st;
    if (json_is_array(obj->j)) {
        long cnt = slice_idx((long)json_array_size(obj->j), a, b, s, &x, &y, &st);
        if (cnt < 0) return fail(c, at, "slice step cannot be zero");
        json_t *r = json_array();
        for (long k = 0; r && k < cnt; k++)
            if (json_array_append(r, json_array_get(obj->j, (size_t)(x + k * st)))) { json_decref(r); r = NULL; }
        if (!r) return fail(c, at, "out of memory");
        *out = vjson(r);
        return 0;
    }
    const char *str = json_string_value(obj->j);
    size_t nb = json_string_length(obj->j);
    long n = (long)u8_count(str, nb);
    long cnt = slice_idx(n, a, b, s, &x, &y, &st);
    if (cnt < 0) return fail(c, at, "slice step cannot be zero");
    strbuf_t r = {0};
    if (st == 1) {
        size_t from = u8_off(str, nb, (size_t)x);
        strbuf_add(&r, str + from, u8_off(str, nb, (size_t)(x + cnt)) - from);
    } else {
        for (long k = 0; k < cnt; k++) {
            size_t o = u8_off(str, nb, (size_t)(x + k * st)), l;
            u8_at(str + o, nb - o, &l);
            strbuf_add(&r, str + o, l);
        }
    }
    json_t *j = sb_str(c, at, &r);
    if (!j) return -1;
    *out = vjson(j);
    return 0;
}

static int get_index(ctx_t *c, const node_t *at, const val_t *obj, const val_t *key, val_t *out) {
    if (obj->k == V_UNDEF) return fail(c, at, "'%s' is undefined", obj->name ? obj->name : "value");
    if (key->k != V_JSON) { *out = vundef(NULL); return 0; }
    if (json_is_string(key->j)) return get_member(c, at, obj, json_string_value(key->j), 0, out);
    if (obj->k == V_JSON && is_int(key->j) && (json_is_array(obj->j) || json_is_string(obj->j))) {
        long long i = ival(key->j);
        if (json_is_array(obj->j)) {
            long long n = (long long)json_array_size(obj->j);
            if (i < 0) i += n;
            if (i < 0 || i >= n) { *out = vundef("item"); return 0; }
            *out = vjson(json_incref(json_array_get(obj->j, (size_t)i)));
            return 0;
        }
        const char *s = json_string_value(obj->j);
        size_t nb = json_string_length(obj->j);
        long long n = (long long)u8_count(s, nb);
        if (i < 0) i += n;
        if (i < 0 || i >= n) { *out = vundef("item"); return 0; }
        size_t o = u8_off(s, nb, (size_t)i), l;
        u8_at(s + o, nb - o, &l);
        json_t *j = mkstr(c, at, s + o, l);
        if (!j) return -1;
        *out = vjson(j);
        return 0;
    }
    *out = vundef("item");
    return 0;
}

/* ---- iteration ------------------------------------------------------------------------------- */

/* the items a for loop (or a filter) walks, as a new JSON array: list items, dict keys,
 * string characters; undefined: none */
static json_t *iter_items(ctx_t *c, const node_t *at, const val_t *v) {
    if (v->k == V_UNDEF) return json_array();
    if (v->k != V_JSON) { fail(c, at, "'%s' object is not iterable", type_name(v)); return NULL; }
    json_t *j = v->j, *r;
    if (json_is_array(j)) return json_incref(j);
    if (!(r = json_array())) { fail(c, at, "out of memory"); return NULL; }
    if (json_is_object(j)) {
        const char *k; json_t *x;
        json_object_foreach(j, k, x) if (json_array_append_new(r, json_string(k))) { json_decref(r); r = NULL; break; }
    } else if (json_is_string(j)) {
        const char *s = json_string_value(j);
        size_t n = json_string_length(j), l;
        for (size_t i = 0; r && i < n; i += l) {
            u8_at(s + i, n - i, &l);
            if (json_array_append_new(r, json_stringn_nocheck(s + i, l))) { json_decref(r); r = NULL; }
        }
    } else {
        json_decref(r);
        fail(c, at, "'%s' object is not iterable", type_name(v));
        return NULL;
    }
    if (!r) fail(c, at, "out of memory");
    return r;
}

/* ---- calls: arguments --------------------------------------------------------------------- */

typedef struct args {
    val_t v[16]; const char *kw[16]; int n;
} args_t;

static void args_free(args_t *a) { for (int i = 0; i < a->n; i++) vfree(&a->v[i]); a->n = 0; }

/* evaluates n's children from `from` on */
static int eval_args(ctx_t *c, frame_t *f, const node_t *n, int from, args_t *a) {
    a->n = 0;
    for (int i = from; i < n->n; i++) {
        if (a->n == 16) return fail(c, n, "too many arguments");
        if (eval(c, f, n->v[i], &a->v[a->n]) < 0) return -1;
        a->kw[a->n++] = n->kw[i];
    }
    return 0;
}

/* positional argument pos or keyword name; NULL when absent */
static val_t *arg(args_t *a, int pos, const char *name) {
    int p = 0;
    for (int i = 0; i < a->n; i++) {
        if (a->kw[i]) { if (name && !strcmp(a->kw[i], name)) return &a->v[i]; }
        else if (p++ == pos) return &a->v[i];
    }
    return NULL;
}
static const char *arg_str(args_t *a, int pos, const char *name) {
    val_t *v = arg(a, pos, name);
    return v && v->k == V_JSON && json_is_string(v->j) ? json_string_value(v->j) : NULL;
}
static size_t arg_len(args_t *a, int pos, const char *name) {
    val_t *v = arg(a, pos, name);
    return v && v->k == V_JSON && json_is_string(v->j) ? json_string_length(v->j) : 0;
}

static int need_str(ctx_t *c, const node_t *at, const val_t *v, const char *what) {
    if (v->k == V_JSON && json_is_string(v->j)) return 0;
    return fail(c, at, "%s expects a string, got %s", what, type_name(v));
}

/* ---- string methods -------------------------------------------------------------------------- */

/* Unicode simple case mapping for ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic (the
 * alphabets chat text mostly uses); other code points are left as they are. is_cased: a letter
 * with case (for str.title's word boundaries). */
static unsigned cp_upper(unsigned c) {
    if (c < 0x80) return c >= 'a' && c <= 'z' ? c - 32 : c;
    if ((c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
    if (c == 0xFF) return 0x178;
    if (c == 0xB5) return 0x39C;
    if (c >= 0x100 && c <= 0x17F) {
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return c % 2 == 0 ? c - 1 : c;
        if (c == 0x131) return 'I';
        if (c == 0x17F) return 'S';
        if (c == 0x138 || c == 0x149) return c;
        return c % 2 == 1 ? c - 1 : c;
    }
    if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
    if (c == 0x3C2) return 0x3A3;
    if (c >= 0x3AC && c <= 0x3CE) {
        static const unsigned short from[] = {0x3AC, 0x3AD, 0x3AE, 0x3AF, 0x3CA, 0x3CB, 0x3CC, 0x3CD, 0x3CE};
        static const unsigned short to[] = {0x386, 0x388, 0x389, 0x38A, 0x3AA, 0x3AB, 0x38C, 0x38E, 0x38F};
        for (int k = 0; k < 9; k++) if (c == from[k]) return to[k];
    }
    if (c >= 0x430 && c <= 0x44F) return c - 32;
    if (c >= 0x450 && c <= 0x45F) return c - 80;
    return c;
}
static unsigned cp_lower(unsigned c) {
    if (c < 0x80) return c >= 'A' && c <= 'Z' ? c + 32 : c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if (c == 0x178) return 0xFF;
    if (c >= 0x100 && c <= 0x17F) {
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return c % 2 == 1 ? c + 1 : c;
        if (c == 0x130) return 'i';   /* Python: "i̇" (i + U+0307); rare enough to simplify */
        if (c == 0x138 || c == 0x149 || c == 0x131 || c == 0x17F) return c;
        return c % 2 == 0 ? c + 1 : c;
    }
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
    if (c >= 0x386 && c <= 0x38F) {
        static const unsigned short from[] = {0x386, 0x388, 0x389, 0x38A, 0x38C, 0x38E, 0x38F};
        static const unsigned short to[] = {0x3AC, 0x3AD, 0x3AE, 0x3AF, 0x3CC, 0x3CD, 0x3CE};
        for (int k = 0; k < 7; k++) if (c == from[k]) return to[k];
    }
    if (c == 0x3AA || c == 0x3AB) return c + 32;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    return c;
}
static int is_cased(unsigned c) {
    return cp_upper(c) != c || cp_lower(c) != c || c == 0xDF || c == 0xAA || c == 0xBA || c == 0x138 || c == 0x149;
}

/* case of s[0..n) into b: 1 upper, 2 lower, 3 str.title, 4 capitalize, 5 Jinja's |title */
static void put_case(strbuf_t *b, const char *s, size_t n, int mode) {
    int start = 1;
    for (size_t i = 0, l; i < n; i += l) {
        unsigned c = u8_at(s + i, n - i, &l), r;
        if (l > 1 && (unsigned char)s[i] < 0xC2) { strbuf_add(b, s + i, 1); l = 1; continue; }   /* not UTF-8: as is */
        int up = mode == 1 || ((mode == 3 || mode == 5) && start) || (mode == 4 && i == 0);
        if (c == 0xDF && up) { strbuf_puts(b, mode == 1 ? "SS" : "Ss"); start = 0; continue; }   /* ß */
        r = up ? cp_upper(c) : cp_lower(c);
        if (r == c) strbuf_add(b, s + i, l);
        else utf8_put(b, r);
        if (mode == 3) start = !is_cased(c);
        else if (mode == 5) start = c == '-' || py_space(c) || c == '(' || c == '{' || c == '[' || c == '<';
    }
}

static int str_case(ctx_t *c, const node_t *at, const json_t *s, int mode, val_t *out) {
    strbuf_t b = {0};
    put_case(&b, json_string_value(s), json_string_length(s), mode);
    json_t *j = sb_str(c, at, &b);
    if (!j) return -1;
    *out = vjson(j);
    return 0;
}

static int str_replace(ctx_t *c, const node_t *at, const json_t *s, const char *old, size_t no, const char *rep, size_t nr,
                       long long count, val_t *out) {
    const char *p = json_string_value(s);
    size_t n = json_string_length(s), i = 0;
    strbuf_t b = {0};
    long long done = 0;
    if (!no) {   /* Python inserts rep between every character */
        for (size_t l; i <= n && (count < 0 || done < count); i += l, done++) {
            strbuf_add(&b, rep, nr);
            if (i == n) { i++; break; }
            u8_at(p + i, n - i, &l);
            strbuf_add(&b, p + i, l);
            if (b.n > c->t->o.max_output) break;
        }
        if (i < n) strbuf_add(&b, p + i, n - i);
    } else {
        while (i < n) {
            const char *hit = (count < 0 || done < count) ? memmem(p + i, n - i, old, no) : NULL;
            if (!hit) { strbuf_add(&b, p + i, n - i); break; }
            strbuf_add(&b, p + i, (size_t)(hit - (p + i)));
            strbuf_add(&b, rep, nr);
            i = (size_t)(hit - p) + no;
            done++;
            if (b.n > c->t->o.max_output) break;
        }
    }
    json_t *j = sb_str(c, at, &b);
    if (!j) return -1;
    *out = vjson(j);
    return 0;
}

static int str_split(ctx_t *c, const node_t *at, const json_t *s, const char *sep, size_t ns, long long maxsplit, val_t *out) {
    const char *p = json_string_value(s);
    size_t n = json_string_length(s), i = 0, l;
    json_t *r = json_array();
    long long done = 0;
    if (!r) return fail(c, at, "out of memory");
    if (!sep) {   /* runs of white space, none at the ends */
        for (;;) {
            while (i < n && py_space(u8_at(p + i, n - i, &l))) i += l;
            if (i >= n) break;
            size_t st = i;
            if (maxsplit >= 0 && done >= maxsplit) {
                size_t a, z;
                py_strip(p + st, n - st, NULL, 0, 2, &a, &z);
                json_array_append_new(r, json_stringn_nocheck(p + st, z));
                break;
            }
            while (i < n && !py_space(u8_at(p + i, n - i, &l))) i += l;
            json_array_append_new(r, json_stringn_nocheck(p + st, i - st));
            done++;
        }
    } else {
        if (!ns) { json_decref(r); return fail(c, at, "empty separator"); }
        for (;;) {
            const char *hit = (maxsplit < 0 || done < maxsplit) ? memmem(p + i, n - i, sep, ns) : NULL;
            if (!hit) { json_array_append_new(r, json_stringn_nocheck(p + i, n - i)); break; }
            json_array_append_new(r, json_stringn_nocheck(p + i, (size_t)(hit - (p + i))));
            i = (size_t)(hit - p) + ns;
            done++;
        }
    }
    c->built += n + 16 * json_array_size(r);
    *out = vjson(r);
    return 0;
}

static int affix(const json_t *s, const json_t *x, int end) {
    if (!json_is_string(x)) return 0;
    size_t n = json_string_length(s), k = json_string_length(x);
    return k <= n && !memcmp(json_string_value(s) + (end ? n - k : 0), json_string_value(x), k);
}

static int str_method(ctx_t *c, const node_t *at, const json_t *s, const char *m, args_t *a, val_t *out) {
    const char *p = json_string_value(s);
    size_t n = json_string_length(s);
    if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        val_t *ch = arg(a, 0, "chars");
        if (ch && ch->k == V_JSON && !json_is_null(ch->j) && need_str(c, at, ch, m) < 0) return -1;
        const char *chars = ch && ch->k == V_JSON && json_is_string(ch->j) ? json_string_value(ch->j) : NULL;
        size_t from, to;
        py_strip(p, n, chars, chars ? json_string_length(ch->j) : 0, m[0] == 'l' ? 1 : m[0] == 'r' ? 2 : 3, &from, &to);
        json_t *j = mkstr(c, at, p + from, to - from);
        if (!j) return -1;
        *out = vjson(j);
        return 0;
    }
    if (!strcmp(m, "upper")) return str_case(c, at, s, 1, out);
    if (!strcmp(m, "lower")) return str_case(c, at, s, 2, out);
    if (!strcmp(m, "title")) return str_case(c, at, s, 3, out);
    if (!strcmp(m, "capitalize")) return str_case(c, at, s, 4, out);
    if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
        val_t *x = arg(a, 0, NULL);
        if (!x || x->k != V_JSON) return fail(c, at, "%s needs an argument", m);
        int r = 0;
        if (json_is_array(x->j)) { for (size_t i = 0; i < json_array_size(x->j); i++) r |= affix(s, json_array_get(x->j, i), m[0] == 'e'); }
        else if (need_str(c, at, x, m) < 0) return -1;
        else r = affix(s, x->j, m[0] == 'e');
        *out = vjson(json_boolean(r));
        return 0;
    }
    if (!strcmp(m, "replace")) {
        const char *o = arg_str(a, 0, NULL), *r = arg_str(a, 1, NULL);
        val_t *cnt = arg(a, 2, "count");
        if (!o || !r) return fail(c, at, "replace expects two strings");
        return str_replace(c, at, s, o, arg_len(a, 0, NULL), r, arg_len(a, 1, NULL),
                           cnt && cnt->k == V_JSON && is_int(cnt->j) ? ival(cnt->j) : -1, out);
    }
    if (!strcmp(m, "split")) {
        val_t *sep = arg(a, 0, "sep"), *mx = arg(a, 1, "maxsplit");
        if (sep && sep->k == V_JSON && !json_is_null(sep->j) && need_str(c, at, sep, "split") < 0) return -1;
        const char *sp = sep && sep->k == V_JSON && json_is_string(sep->j) ? json_string_value(sep->j) : NULL;
        return str_split(c, at, s, sp, sp ? json_string_length(sep->j) : 0, mx && mx->k == V_JSON && is_int(mx->j) ? ival(mx->j) : -1, out);
    }
    if (!strcmp(m, "splitlines")) {
        json_t *r = json_array();
        size_t i = 0;
        while (r && i < n) {
            size_t e = i;
            while (e < n && p[e] != '\n' && p[e] != '\r') e++;
            json_array_append_new(r, json_stringn_nocheck(p + i, e - i));
            if (e < n && p[e] == '\r' && e + 1 < n && p[e + 1] == '\n') e++;
            i = e + 1;
        }
        if (!r) return fail(c, at, "out of memory");
        *out = vjson(r);
        return 0;
    }
    if (!strcmp(m, "find") || !strcmp(m, "count")) {
        const char *x = arg_str(a, 0, NULL);
        size_t nx = arg_len(a, 0, NULL);
        if (!x) return fail(c, at, "%s expects a string", m);
        if (m[0] == 'f') {
            const char *h = nx ? memmem(p, n, x, nx) : p;
            *out = vjson(json_integer(h ? (long long)u8_count(p, (size_t)(h - p)) : -1));
        } else {
            long long k = 0;
            if (!nx) k = (long long)u8_count(p, n) + 1;
            else for (const char *h = p; (h = memmem(h, n - (size_t)(h - p), x, nx)); h += nx) k++;
            *out = vjson(json_integer(k));
        }
        return 0;
    }
    if (!strcmp(m, "isdigit") || !strcmp(m, "isalpha") || !strcmp(m, "isspace")) {
        int r = n > 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)p[i];
            r &= m[2] == 'd' ? isdigit(ch) != 0 : m[2] == 'a' ? isalpha(ch) != 0 : is_ws(ch);
        }
        *out = vjson(json_boolean(r));
        return 0;
    }
    if (!strcmp(m, "join")) {
        val_t *x = arg(a, 0, NULL);
        json_t *items = x ? iter_items(c, at, x) : NULL;
        if (!items) return x ? -1 : fail(c, at, "join needs an argument");
        strbuf_t b = {0};
        for (size_t i = 0; i < json_array_size(items); i++) {
            json_t *e = json_array_get(items, i);
            if (i) strbuf_add(&b, p, n);
            if (!json_is_string(e)) { json_decref(items); free(b.p); return fail(c, at, "sequence item %zu: expected str", i); }
            strbuf_add(&b, json_string_value(e), json_string_length(e));
        }
        json_decref(items);
        json_t *j = sb_str(c, at, &b);
        if (!j) return -1;
        *out = vjson(j);
        return 0;
    }
    if (!strcmp(m, "format")) {   /* "{}" and "{0}" placeholders with str() of the arguments */
        strbuf_t b = {0};
        int auto_i = 0;
        for (size_t i = 0; i < n; i++) {
            if (p[i] == '{' && i + 1 < n && p[i + 1] == '{') { strbuf_add(&b, "{", 1); i++; continue; }
            if (p[i] == '}' && i + 1 < n && p[i + 1] == '}') { strbuf_add(&b, "}", 1); i++; continue; }
            if (p[i] != '{') { strbuf_add(&b, p + i, 1); continue; }
            size_t e = i + 1;
            while (e < n && isdigit((unsigned char)p[e])) e++;
            if (e >= n || p[e] != '}') { free(b.p); return fail(c, at, "format: only {} and {N} placeholders are supported"); }
            int k = e > i + 1 ? atoi(p + i + 1) : auto_i++;
            val_t *v = arg(a, k, NULL);
            if (!v) { free(b.p); return fail(c, at, "format: no argument %d", k); }
            if (put_str(c, at, &b, v) < 0) { free(b.p); return -1; }
            i = e;
        }
        json_t *j = sb_str(c, at, &b);
        if (!j) return -1;
        *out = vjson(j);
        return 0;
    }
    return fail(c, at, "str has no method '%s'", m);
}

static int dict_method(ctx_t *c, const node_t *at, json_t *d, const char *m, args_t *a, val_t *out) {
    if (!strcmp(m, "get")) {
        const char *k = arg_str(a, 0, NULL);
        json_t *v = k ? json_object_get(d, k) : NULL;
        val_t *def = arg(a, 1, NULL);
        if (v) *out = vjson(json_incref(v));
        else if (def) *out = vcopy(def);
        else *out = vjson(json_null());
        return 0;
    }
    json_t *r = json_array();
    const char *k; json_t *v;
    json_object_foreach(d, k, v) {
        json_t *e = !strcmp(m, "keys") ? json_string(k) : !strcmp(m, "values") ? json_incref(v)
                    : json_pack("[sO]", k, v);
        if (!r || json_array_append_new(r, e)) { json_decref(r); return fail(c, at, "out of memory"); }
    }
    if (!r) return fail(c, at, "out of memory");
    *out = vjson(r);
    return 0;
}

/* ---- filters --------------------------------------------------------------------------------- */

static int apply_filter(ctx_t *c, frame_t *f, const node_t *at, const char *name, val_t *x, args_t *a, val_t *out);
static int apply_test(ctx_t *c, const node_t *at, const char *name, const val_t *x, args_t *a, int *res);

static int length_of(ctx_t *c, const node_t *at, const val_t *x, long long *n) {
    if (x->k == V_UNDEF) { *n = 0; return 0; }
    if (x->k == V_JSON && json_is_string(x->j)) { *n = (long long)u8_count(json_string_value(x->j), json_string_length(x->j)); return 0; }
    if (x->k == V_JSON && json_is_array(x->j)) { *n = (long long)json_array_size(x->j); return 0; }
    if (x->k == V_JSON && json_is_object(x->j)) { *n = (long long)json_object_size(x->j); return 0; }
    return fail(c, at, "object of type '%s' has no len()", type_name(x));
}

/* item.attr.sub (dotted) of a JSON value; NULL when absent */
static json_t *dotted(json_t *j, const char *path) {
    char part[128];
    while (j && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof part) return NULL;
        memcpy(part, path, n); part[n] = 0;
        if (json_is_object(j)) j = json_object_get(j, part);
        else if (json_is_array(j) && isdigit((unsigned char)part[0])) j = json_array_get(j, (size_t)atol(part));
        else j = NULL;
        path += n + (path[n] == '.');
    }
    return j;
}


static int filter_select(ctx_t *c, const node_t *at, const char *name, val_t *x, args_t *a, val_t *out) {
    int by_attr = !strcmp(name, "selectattr") || !strcmp(name, "rejectattr");
    int keep_if = !strcmp(name, "select") || !strcmp(name, "selectattr");
    json_t *items = iter_items(c, at, x), *r = json_array();
    const char *attr = by_attr ? arg_str(a, 0, NULL) : NULL;
    int first_test = by_attr ? 1 : 0;
    const char *test = arg_str(a, first_test, NULL);
    if (!items || !r || (by_attr && !attr)) {
        json_decref(items); json_decref(r);
        return c->failed ? -1 : fail(c, at, "%s needs an attribute name", name);
    }
    args_t ta = {0};
    for (int i = first_test + 1; i < a->n; i++) { ta.v[ta.n] = vcopy(&a->v[i]); ta.kw[ta.n++] = a->kw[i]; }
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *it = json_array_get(items, i), *v = by_attr ? dotted(it, attr) : it;
        val_t tv = v ? vjson(json_incref(v)) : vundef(attr);
        int res;
        if (test) {
            if (apply_test(c, at, test, &tv, &ta, &res) < 0) { vfree(&tv); args_free(&ta); json_decref(items); json_decref(r); return -1; }
        } else {
            res = truthy(&tv);
        }
        vfree(&tv);
        if (res == keep_if) json_array_append(r, it);
    }
    args_free(&ta);
    json_decref(items);
    *out = vjson(r);
    return 0;
}

static int filter_map(ctx_t *c, frame_t *f, const node_t *at, val_t *x, args_t *a, val_t *out) {
    json_t *items = iter_items(c, at, x), *r = json_array();
    if (!items || !r) { json_decref(items); json_decref(r); return c->failed ? -1 : fail(c, at, "out of memory"); }
    const char *attr = arg_str(a, -1, "attribute");
    val_t *def = arg(a, -1, "default");
    const char *fname = attr ? NULL : arg_str(a, 0, NULL);
    if (!attr && !fname) { json_decref(items); json_decref(r); return fail(c, at, "map needs a filter name or attribute="); }
    args_t fa = {0};
    for (int i = 1; !attr && i < a->n; i++) { fa.v[fa.n] = vcopy(&a->v[i]); fa.kw[fa.n++] = a->kw[i]; }
    int rc = 0;
    for (size_t i = 0; i < json_array_size(items) && rc == 0; i++) {
        json_t *it = json_array_get(items, i);
        val_t res = {0};
        if (attr) {
            json_t *v = dotted(it, attr);
            res = v ? vjson(json_incref(v)) : def ? vcopy(def) : vundef(attr);
        } else {
            val_t iv = vjson(json_incref(it));
            rc = apply_filter(c, f, at, fname, &iv, &fa, &res);
            vfree(&iv);
        }
        json_t *j = rc == 0 ? to_json(c, at, &res) : NULL;
        vfree(&res);
        if (!j || json_array_append_new(r, j)) rc = -1;
    }
    args_free(&fa);
    json_decref(items);
    if (rc < 0) { json_decref(r); return c->failed ? -1 : fail(c, at, "out of memory"); }
    *out = vjson(r);
    return 0;
}

static int filter_join(ctx_t *c, const node_t *at, val_t *x, args_t *a, val_t *out) {
    json_t *items = iter_items(c, at, x);
    if (!items) return -1;
    const char *sep = arg_str(a, 0, "d");
    size_t ns = arg_len(a, 0, "d");
    const char *attr = arg_str(a, 1, "attribute");
    strbuf_t b = {0};
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *e = json_array_get(items, i);
        if (attr) e = dotted(e, attr);
        if (i && sep) strbuf_add(&b, sep, ns);
        if (e) put_py(&b, e, 0);
        if (b.n > c->t->o.max_output) break;
    }
    json_decref(items);
    json_t *j = sb_str(c, at, &b);
    if (!j) return -1;
    *out = vjson(j);
    return 0;
}

static int filter_indent(ctx_t *c, const node_t *at, val_t *x, args_t *a, val_t *out) {
    if (need_str(c, at, x, "indent") < 0) return -1;
    val_t *w = arg(a, 0, "width"), *first = arg(a, 1, "first"), *blank = arg(a, 2, "blank");
    strbuf_t pad = {0};
    if (w && w->k == V_JSON && json_is_string(w->j)) strbuf_add(&pad, json_string_value(w->j), json_string_length(w->j));
    else for (long long k = 0, n = w && w->k == V_JSON && is_int(w->j) ? ival(w->j) : 4; k < n && k < 1000; k++) strbuf_add(&pad, " ", 1);
    const char *s = json_string_value(x->j);
    size_t n = json_string_length(x->j), i = 0;
    strbuf_t b = {0};
    int line0 = 1;
    while (i <= n) {
        size_t e = i;
        while (e < n && s[e] != '\n') e++;
        int empty = e == i;
        if ((!line0 || (first && truthy(first))) && (!empty || (blank && truthy(blank))) && pad.p) strbuf_add(&b, pad.p, pad.n);
        strbuf_add(&b, s + i, e - i);
        if (e < n) strbuf_add(&b, "\n", 1);
        line0 = 0;
        i = e + 1;
        if (e >= n) break;
    }
    free(pad.p);
    json_t *j = sb_str(c, at, &b);
    if (!j) return -1;
    *out = vjson(j);
    return 0;
}

static int apply_filter(ctx_t *c, frame_t *f, const node_t *at, const char *name, val_t *x, args_t *a, val_t *out) {
    json_t *j = x->k == V_JSON ? x->j : NULL;
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        val_t *def = arg(a, 0, "default_value"), *boolean = arg(a, 1, "boolean");
        int use_def = x->k == V_UNDEF || (boolean && truthy(boolean) && !truthy(x));
        *out = use_def ? (def ? vcopy(def) : vjson(json_string(""))) : vcopy(x);
        return 0;
    }
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        long long n = 0;
        if (length_of(c, at, x, &n) < 0) return -1;
        *out = vjson(json_integer(n));
        return 0;
    }
    if (!strcmp(name, "tojson")) {
        val_t *ind = arg(a, 0, "indent"), *sk = arg(a, -1, "sort_keys");
        if (x->k == V_UNDEF) return fail(c, at, "Object of type Undefined is not JSON serializable");
        if (!j) return fail(c, at, "Object of type %s is not JSON serializable", type_name(x));
        strbuf_t b = {0};
        put_json(&b, j, ind && ind->k == V_JSON && is_int(ind->j) ? (int)(ival(ind->j) < 0 ? 0 : ival(ind->j) > 64 ? 64 : ival(ind->j)) : -1,
                 0, sk && truthy(sk));
        json_t *r = sb_str(c, at, &b);
        if (!r) return -1;
        *out = vjson(r);
        return 0;
    }
    if (!strcmp(name, "string")) {
        strbuf_t b = {0};
        if (put_str(c, at, &b, x) < 0) { free(b.p); return -1; }
        json_t *r = sb_str(c, at, &b);
        if (!r) return -1;
        *out = vjson(r);
        return 0;
    }
    if (!strcmp(name, "safe") || !strcmp(name, "list") || !strcmp(name, "items") || !strcmp(name, "unique") ||
        !strcmp(name, "reverse") || !strcmp(name, "sort") || !strcmp(name, "first") || !strcmp(name, "last")) {
        if (!strcmp(name, "safe")) { *out = vcopy(x); return 0; }
        if (!strcmp(name, "items")) {
            if (x->k == V_UNDEF) { *out = vjson(json_array()); return 0; }
            if (!j || !json_is_object(j)) return fail(c, at, "items expects a mapping, got %s", type_name(x));
            return dict_method(c, at, j, "items", a, out);
        }
        if (j && json_is_string(j) && !strcmp(name, "reverse")) {
            args_t none = {0};
            (void)none;
            json_t *ch = iter_items(c, at, x);
            if (!ch) return -1;
            strbuf_t b = {0};
            for (size_t i = json_array_size(ch); i-- > 0;) strbuf_add(&b, json_string_value(json_array_get(ch, i)), json_string_length(json_array_get(ch, i)));
            json_decref(ch);
            json_t *r = sb_str(c, at, &b);
            if (!r) return -1;
            *out = vjson(r);
            return 0;
        }
        json_t *items = iter_items(c, at, x);
        if (!items) return -1;
        if (!strcmp(name, "first") || !strcmp(name, "last")) {
            size_t n = json_array_size(items);
            json_t *e = n ? json_array_get(items, name[0] == 'f' ? 0 : n - 1) : NULL;
            *out = e ? vjson(json_incref(e)) : vundef(name);
            json_decref(items);
            return 0;
        }
        json_t *r = json_array();
        if (!r) { json_decref(items); return fail(c, at, "out of memory"); }
        size_t n = json_array_size(items);
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(items, !strcmp(name, "reverse") ? n - 1 - i : i);
            int dup = 0;
            for (size_t k = 0; !strcmp(name, "unique") && k < json_array_size(r) && !dup; k++) dup = eq(json_array_get(r, k), e);
            if (!dup) json_array_append(r, e);
        }
        json_decref(items);
        if (!strcmp(name, "sort")) {
            const char *attr = arg_str(a, -1, "attribute");
            val_t *rev = arg(a, 0, "reverse");
            size_t m = json_array_size(r);
            json_t **v = malloc((m ? m : 1) * sizeof *v), **key = malloc((m ? m : 1) * 2 * sizeof *key);
            if (!v || !key) { free(v); free(key); json_decref(r); return fail(c, at, "out of memory"); }
            for (size_t i = 0; i < m; i++) v[i] = json_array_get(r, i);
            /* sort pairs (key, item) by key with a stable insertion sort: lists in templates are short */
            for (size_t i = 0; i < m; i++) { key[2 * i] = attr ? dotted(v[i], attr) : v[i]; key[2 * i + 1] = v[i]; }
            int sort_ok = 1;
            for (size_t i = 1; i < m; i++)
                for (size_t k = i; k > 0; k--) {
                    int ok = 0;
                    int s = key[2 * k - 2] && key[2 * k] ? order(key[2 * k - 2], key[2 * k], &ok) : 0;
                    if (!ok) { sort_ok = 0; break; }
                    if (rev && truthy(rev) ? s >= 0 : s <= 0) break;
                    json_t *t0 = key[2 * k - 2], *t1 = key[2 * k - 1];
                    key[2 * k - 2] = key[2 * k]; key[2 * k - 1] = key[2 * k + 1];
                    key[2 * k] = t0; key[2 * k + 1] = t1;
                }
            json_t *s = json_array();
            for (size_t i = 0; s && i < m; i++) json_array_append(s, key[2 * i + 1]);
            free(v); free(key);
            json_decref(r);
            if (!s) return fail(c, at, "out of memory");
            if (!sort_ok) { json_decref(s); return fail(c, at, "sort: items that cannot be compared"); }
            r = s;
        }
        *out = vjson(r);
        return 0;
    }
    if (!strcmp(name, "dictsort")) {   /* (key, value) pairs by key, case-insensitive as Jinja's default */
        if (!j || !json_is_object(j)) return fail(c, at, "dictsort expects a mapping, got %s", type_name(x));
        val_t pairs = {0};
        if (dict_method(c, at, j, "items", a, &pairs) < 0) return -1;
        size_t m = json_array_size(pairs.j);
        for (size_t i = 1; i < m; i++)   /* insertion sort: stable, short lists */
            for (size_t k = i; k > 0; k--) {
                json_t *p0 = json_array_get(pairs.j, k - 1), *p1 = json_array_get(pairs.j, k);
                if (strcasecmp(json_string_value(json_array_get(p0, 0)), json_string_value(json_array_get(p1, 0))) <= 0) break;
                json_incref(p0);
                json_array_set(pairs.j, k - 1, p1);
                json_array_set_new(pairs.j, k, p0);
            }
        *out = pairs;
        return 0;
    }
    if (!strcmp(name, "join")) return filter_join(c, at, x, a, out);
    if (!strcmp(name, "map")) return filter_map(c, f, at, x, a, out);
    if (!strcmp(name, "select") || !strcmp(name, "reject") || !strcmp(name, "selectattr") || !strcmp(name, "rejectattr"))
        return filter_select(c, at, name, x, a, out);
    if (!strcmp(name, "int") || !strcmp(name, "float")) {
        val_t *def = arg(a, 0, "default");
        if (x->k == V_UNDEF) return fail(c, at, "'%s' is undefined", x->name ? x->name : "value");
        double d = 0;
        int ok = 0;
        if (j && is_num(j)) { d = num(j); ok = 1; }
        else if (j && json_is_string(j)) {
            char *end;
            const char *s = json_string_value(j);
            while (is_ws(*s)) s++;
            d = name[0] == 'i' ? (double)strtoll(s, &end, 10) : strtod(s, &end);
            while (is_ws(*end)) end++;
            ok = end != s && !*end;
            if (!ok && name[0] == 'i') { d = strtod(s, &end); while (is_ws(*end)) end++; ok = end != s && !*end; }
        }
        if (!ok) { *out = def ? vcopy(def) : vjson(name[0] == 'i' ? json_integer(0) : json_real(0)); return 0; }
        if (name[0] == 'i' && j && json_is_integer(j)) { *out = vjson(json_incref(j)); return 0; }
        if (name[0] == 'i' && (d >= 9.2e18 || d <= -9.2e18 || d != d)) return fail(c, at, "int: out of range");
        *out = vjson(name[0] == 'i' ? json_integer((long long)d) : json_real(d));
        return 0;
    }
    if (!strcmp(name, "abs")) {
        if (!j || !is_num(j)) return fail(c, at, "bad operand type for abs(): '%s'", type_name(x));
        *out = vjson(json_is_real(j) ? json_real(fabs(json_real_value(j))) : json_integer(llabs(ival(j) == INT64_MIN ? 0 : ival(j))));
        return 0;
    }
    if (!strcmp(name, "round")) {
        if (!j || !is_num(j)) return fail(c, at, "round expects a number");
        val_t *pr = arg(a, 0, "precision");
        double p = pow(10, pr && pr->k == V_JSON && is_int(pr->j) ? (double)ival(pr->j) : 0);
        *out = vjson(json_real(round(num(j) * p) / p));
        return 0;
    }
    if (!strcmp(name, "indent")) return filter_indent(c, at, x, a, out);
    /* string filters */
    if (!strcmp(name, "trim") || !strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "title") ||
        !strcmp(name, "capitalize") || !strcmp(name, "replace") || !strcmp(name, "escape") || !strcmp(name, "e")) {
        json_t *s = j && json_is_string(j) ? json_incref(j) : NULL;
        if (!s) {   /* Jinja's string filters take str() of anything */
            strbuf_t b = {0};
            if (put_str(c, at, &b, x) < 0) { free(b.p); return -1; }
            if (!(s = sb_str(c, at, &b))) return -1;
        }
        int rc;
        if (!strcmp(name, "trim")) rc = str_method(c, at, s, "strip", a, out);
        else if (!strcmp(name, "replace")) rc = str_method(c, at, s, "replace", a, out);
        else if (name[0] == 'e') {
            strbuf_t b = {0};
            const char *p = json_string_value(s);
            for (size_t i = 0; i < json_string_length(s); i++) {
                switch (p[i]) {
                case '&': strbuf_puts(&b, "&amp;"); break;
                case '<': strbuf_puts(&b, "&lt;"); break;
                case '>': strbuf_puts(&b, "&gt;"); break;
                case '"': strbuf_puts(&b, "&#34;"); break;
                case '\'': strbuf_puts(&b, "&#39;"); break;
                default: strbuf_add(&b, p + i, 1);
                }
            }
            json_t *r = sb_str(c, at, &b);
            rc = r ? 0 : -1;
            if (r) *out = vjson(r);
        } else {
            rc = str_case(c, at, s, name[0] == 'u' ? 1 : name[0] == 'l' ? 2 : name[0] == 't' ? 5 : 4, out);
        }
        json_decref(s);
        return rc;
    }
    return fail(c, at, "no filter named '%s'", name);
}

/* ---- tests ------------------------------------------------------------------------------------- */

static int apply_test(ctx_t *c, const node_t *at, const char *name, const val_t *x, args_t *a, int *res) {
    const json_t *j = x->k == V_JSON ? x->j : NULL;
    val_t *y = arg(a, 0, NULL);
    if (!strcmp(name, "defined")) *res = x->k != V_UNDEF;
    else if (!strcmp(name, "undefined")) *res = x->k == V_UNDEF;
    else if (!strcmp(name, "none")) *res = j && json_is_null(j);
    else if (!strcmp(name, "boolean")) *res = j && json_is_boolean(j);
    else if (!strcmp(name, "true")) *res = j && json_is_true(j);
    else if (!strcmp(name, "false")) *res = j && json_is_false(j);
    else if (!strcmp(name, "integer")) *res = j && json_is_integer(j);
    else if (!strcmp(name, "float")) *res = j && json_is_real(j);
    else if (!strcmp(name, "number")) *res = j && is_num(j);
    else if (!strcmp(name, "string")) *res = j && json_is_string(j);
    else if (!strcmp(name, "mapping")) *res = j && json_is_object(j);
    else if (!strcmp(name, "iterable")) *res = j && (json_is_string(j) || json_is_array(j) || json_is_object(j));
    else if (!strcmp(name, "sequence")) *res = j && (json_is_string(j) || json_is_array(j) || json_is_object(j));
    else if (!strcmp(name, "callable")) *res = x->k == V_MACRO || x->k == V_BUILTIN || x->k == V_METHOD;
    else if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        *res = j && json_is_string(j);
        for (const char *p = *res ? json_string_value(j) : ""; *p; p++)
            if (name[0] == 'l' ? isupper((unsigned char)*p) : islower((unsigned char)*p)) *res = 0;
    } else if (!strcmp(name, "odd") || !strcmp(name, "even") || !strcmp(name, "divisibleby")) {
        if (!j || !is_num(j)) return fail(c, at, "test '%s' expects a number", name);
        double d = name[0] == 'd' ? (y && y->k == V_JSON && is_num(y->j) ? num(y->j) : 0) : 2;
        if (!d) return fail(c, at, "divisibleby needs a non-zero number");
        double m = is_int(j) && d == (double)(long long)d ? (double)(ival(j) % (long long)d) : fmod(num(j), d);
        if (m && ((m < 0) != (d < 0))) m += d;   /* Python's modulo */
        *res = name[0] == 'o' ? m == 1 : m == 0;
    } else if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "==") || !strcmp(name, "sameas")) {
        *res = y && val_eq(x, y);
    } else if (!strcmp(name, "ne") || !strcmp(name, "!=")) {
        *res = !(y && val_eq(x, y));
    } else if (!strcmp(name, "lt") || !strcmp(name, "<") || !strcmp(name, "le") || !strcmp(name, "<=") || !strcmp(name, "gt") ||
               !strcmp(name, ">") || !strcmp(name, "ge") || !strcmp(name, ">=")) {
        int ok = 0, r = y && j && y->k == V_JSON ? order(j, y->j, &ok) : 0;
        if (!ok) return fail(c, at, "test '%s': values that cannot be compared", name);
        *res = name[0] == 'l' || name[0] == '<' ? (name[1] == 'e' || name[1] == '=' ? r <= 0 : r < 0)
                                                : (name[1] == 'e' || name[1] == '=' ? r >= 0 : r > 0);
    } else if (!strcmp(name, "in")) {
        if (!y) return fail(c, at, "test 'in' needs an argument");
        return contains(c, at, x, y, res);
    } else {
        return fail(c, at, "no test named '%s'", name);
    }
    return 0;
}

/* ---- calls ----------------------------------------------------------------------------------------- */

static int render_body(ctx_t *c, frame_t *f, const node_t *body, strbuf_t *into);

static int call_macro(ctx_t *c, const node_t *at, const val_t *fn, args_t *a, const node_t *caller_body, frame_t *caller_env, val_t *out) {
    const node_t *m = fn->m;
    if (++c->depth > c->t->o.max_depth) return fail(c, at, "macro calls nested too deeply");
    frame_t fr = {fn->env ? fn->env : c->root, NULL, NULL, 0, 0};
    int rc = 0, pos = 0;
    if (m->k == N_MACRO) {
        for (int i = 0; i < a->n && rc == 0; i++) {
            if (a->kw[i]) continue;
            if (pos >= m->n) rc = fail(c, at, "macro '%s' takes not more than %d argument(s)", m->s, m->n);
            else rc = frame_set(c, at, &fr, m->v[pos++]->s, vcopy(&a->v[i]));
        }
        for (int p = pos; p < m->n && rc == 0; p++) {
            const node_t *pn = m->v[p];
            val_t *kv = NULL;
            for (int i = 0; i < a->n; i++) if (a->kw[i] && !strcmp(a->kw[i], pn->s)) kv = &a->v[i];
            val_t v = vundef(pn->s);
            if (kv) v = vcopy(kv);
            else if (pn->a && (rc = eval(c, &fr, pn->a, &v)) < 0) break;
            rc = frame_set(c, at, &fr, pn->s, v);
        }
        if (rc == 0 && caller_body) {
            val_t cv = {0};
            cv.k = V_MACRO; cv.m = caller_body; cv.env = caller_env;
            rc = frame_set(c, at, &fr, "caller", cv);
        }
    }
    strbuf_t b = {0};
    if (rc == 0) rc = render_body(c, &fr, m->k == N_MACRO ? m->c : m, &b);
    frame_free(&fr);
    c->depth--;
    if (rc < 0) { free(b.p); return -1; }
    json_t *j = sb_str(c, at, &b);
    if (!j) return -1;
    *out = vjson(j);
    return 0;
}

static int call_builtin(ctx_t *c, const node_t *at, int id, args_t *a, val_t *out) {
    if (id == B_RAISE) {
        const char *msg = arg_str(a, 0, NULL);
        if (!c->failed && c->err && c->errlen) snprintf(c->err, c->errlen, "%s", msg ? msg : "raise_exception");
        if (!c->failed) c->raised = 1;
        c->failed = 1;
        return -1;
    }
    if (id == B_RANGE) {
        long long v[3] = {0, 0, 1};
        int np = 0;
        for (int i = 0; i < a->n; i++) {
            if (a->kw[i] || np == 3 || a->v[i].k != V_JSON || !is_int(a->v[i].j)) return fail(c, at, "range expects 1 to 3 integers");
            v[np++] = ival(a->v[i].j);
        }
        if (!np) return fail(c, at, "range expects 1 to 3 integers");
        long long start = np == 1 ? 0 : v[0], stop = np == 1 ? v[0] : v[1], st = np == 3 ? v[2] : 1;
        if (!st) return fail(c, at, "range() arg 3 must not be zero");
        json_t *r = json_array();
        long long cnt = 0;
        for (long long i = start; r && (st > 0 ? i < stop : i > stop); i += st) {
            if (++cnt > 100000) { json_decref(r); return fail(c, at, "range longer than 100000"); }
            if (json_array_append_new(r, json_integer(i))) { json_decref(r); r = NULL; }
            if ((st > 0 && i > INT64_MAX - st) || (st < 0 && i < INT64_MIN - st)) break;
        }
        if (!r) return fail(c, at, "out of memory");
        c->built += 16 * (size_t)cnt;
        *out = vjson(r);
        return 0;
    }
    if (id == B_NAMESPACE || id == B_DICT) {
        json_t *o = json_object();
        if (!o) return fail(c, at, "out of memory");
        for (int i = 0; i < a->n; i++) {
            if (!a->kw[i]) {   /* a dict argument's items */
                if (a->v[i].k == V_JSON && json_is_object(a->v[i].j)) { json_object_update(o, a->v[i].j); continue; }
                json_decref(o);
                return fail(c, at, "%s takes keyword arguments", id == B_DICT ? "dict" : "namespace");
            }
            val_t v = vcopy(&a->v[i]);
            json_t *j = to_json(c, at, &v);
            vfree(&v);
            if (!j || json_object_set_new(o, a->kw[i], j)) { json_decref(o); return c->failed ? -1 : fail(c, at, "out of memory"); }
        }
        if (id == B_NAMESPACE && json_array_append(c->namespaces, o)) { json_decref(o); return fail(c, at, "out of memory"); }
        *out = vjson(o);
        return 0;
    }
    if (id == B_STRFTIME) {
        const char *fmt = arg_str(a, 0, NULL);
        if (!fmt) return fail(c, at, "strftime_now expects a format string");
        time_t now = c->t->o.now >= 0 ? (time_t)c->t->o.now : time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        char buf[256];
        size_t n = strftime(buf, sizeof buf, fmt, &tm);
        json_t *j = mkstr(c, at, buf, n);
        if (!j) return -1;
        *out = vjson(j);
        return 0;
    }
    return fail(c, at, "bad builtin");
}

static int call_value(ctx_t *c, const node_t *at, const val_t *fn, args_t *a, val_t *out) {
    switch (fn->k) {
    case V_MACRO: return call_macro(c, at, fn, a, NULL, NULL, out);
    case V_BUILTIN: return call_builtin(c, at, fn->id, a, out);
    case V_METHOD:
        if (fn->loop) {   /* loop.cycle */
            if (!a->n) return fail(c, at, "loop.cycle needs at least one value");
            *out = vcopy(&a->v[fn->loop->index0 % a->n]);
            return 0;
        }
        if (json_is_string(fn->j)) return str_method(c, at, fn->j, fn->name, a, out);
        return dict_method(c, at, fn->j, fn->name, a, out);
    case V_UNDEF: return fail(c, at, "'%s' is undefined", fn->name ? fn->name : "value");
    default: return fail(c, at, "'%s' object is not callable", type_name(fn));
    }
}

/* ---- expressions ----------------------------------------------------------------------------- */

static int lookup(ctx_t *c, frame_t *f, const node_t *e, val_t *out) {
    val_t *v = frame_find(f, e->s);
    if (v) { *out = vcopy(v); return 0; }
    static const struct { const char *name; int id; } builtins[] = {
        {"range", B_RANGE}, {"raise_exception", B_RAISE}, {"namespace", B_NAMESPACE}, {"strftime_now", B_STRFTIME}, {"dict", B_DICT},
    };
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        if (!strcmp(e->s, builtins[i].name)) { val_t b = {0}; b.k = V_BUILTIN; b.id = builtins[i].id; *out = b; return 0; }
    *out = vundef(e->s);
    (void)c;
    return 0;
}

static int eval_cmp(ctx_t *c, frame_t *f, const node_t *e, val_t *out) {
    val_t l = {0};
    if (eval(c, f, e->v[0], &l) < 0) return -1;
    int res = 1;
    for (int i = 1; i + 1 < e->n && res; i += 2) {
        int op = e->v[i]->op;
        val_t r = {0};
        if (eval(c, f, e->v[i + 1], &r) < 0) { vfree(&l); return -1; }
        if (op == OP_EQ) res = val_eq(&l, &r);
        else if (op == OP_NE) res = !val_eq(&l, &r);
        else if (op == OP_IN || op == OP_NOTIN) {
            if (contains(c, e, &l, &r, &res) < 0) { vfree(&l); vfree(&r); return -1; }
            if (op == OP_NOTIN) res = !res;
        } else {
            int ok = 0, o = l.k == V_JSON && r.k == V_JSON ? order(l.j, r.j, &ok) : 0;
            if (!ok) {
                fail(c, e, "'%s' not supported between instances of '%s' and '%s'",
                     op == OP_LT ? "<" : op == OP_LE ? "<=" : op == OP_GT ? ">" : ">=", type_name(&l), type_name(&r));
                vfree(&l); vfree(&r);
                return -1;
            }
            res = op == OP_LT ? o < 0 : op == OP_LE ? o <= 0 : op == OP_GT ? o > 0 : o >= 0;
        }
        vfree(&l);
        l = r;
    }
    vfree(&l);
    *out = vjson(json_boolean(res));
    return 0;
}

static int eval(ctx_t *c, frame_t *f, const node_t *e, val_t *out) {
    *out = vundef(NULL);
    if (step(c, e) < 0) return -1;
    val_t a = {0}, b = {0};
    int rc = 0;
    switch (e->k) {
    case E_LIT: *out = vjson(json_incref(e->lit)); return 0;
    case E_NAME: return lookup(c, f, e, out);
    case E_LISTLIT: case E_DICT: {
        json_t *r = e->k == E_DICT ? json_object() : json_array();
        if (!r) return fail(c, e, "out of memory");
        for (int i = 0; i < e->n && rc == 0; i += e->k == E_DICT ? 2 : 1) {
            val_t k = {0}, v = {0};
            if (e->k == E_DICT) {
                if ((rc = eval(c, f, e->v[i], &k)) < 0) break;
                if (k.k != V_JSON || !json_is_string(k.j)) { vfree(&k); rc = fail(c, e, "dict keys must be strings here"); break; }
                if ((rc = eval(c, f, e->v[i + 1], &v)) == 0) {
                    json_t *j = to_json(c, e, &v);
                    rc = j && json_object_set_new(r, json_string_value(k.j), j) == 0 ? 0 : c->failed ? -1 : fail(c, e, "out of memory");
                }
                vfree(&k);
            } else if ((rc = eval(c, f, e->v[i], &v)) == 0) {
                json_t *j = to_json(c, e, &v);
                rc = j && json_array_append_new(r, j) == 0 ? 0 : c->failed ? -1 : fail(c, e, "out of memory");
            }
            vfree(&v);
        }
        if (rc < 0) { json_decref(r); return -1; }
        *out = vjson(r);
        return 0;
    }
    case E_ATTR:
        if (eval(c, f, e->a, &a) < 0) return -1;
        rc = get_member(c, e, &a, e->s, 1, out);
        break;
    case E_INDEX:
        if (eval(c, f, e->a, &a) < 0 || eval(c, f, e->b, &b) < 0) { rc = -1; break; }
        rc = get_index(c, e, &a, &b, out);
        break;
    case E_SLICE: {
        val_t ix[3] = {{0}, {0}, {0}};
        const node_t *parts[3] = {e->b, e->c, e->d};
        if (eval(c, f, e->a, &a) < 0) return -1;
        for (int k = 0; k < 3 && rc == 0; k++) if (parts[k]) rc = eval(c, f, parts[k], &ix[k]);
        if (rc == 0) rc = do_slice(c, e, &a, ix, out);
        for (int k = 0; k < 3; k++) vfree(&ix[k]);
        break;
    }
    case E_CALL: {
        args_t args = {0};
        if (eval(c, f, e->a, &a) < 0) return -1;
        if ((rc = eval_args(c, f, e, 0, &args)) == 0) rc = call_value(c, e, &a, &args, out);
        args_free(&args);
        break;
    }
    case E_FILTER: {
        args_t args = {0};
        if (eval(c, f, e->a, &a) < 0) return -1;
        if ((rc = eval_args(c, f, e, 0, &args)) == 0) rc = apply_filter(c, f, e, e->s, &a, &args, out);
        args_free(&args);
        break;
    }
    case E_TEST: {
        args_t args = {0};
        int res = 0;
        if (eval(c, f, e->a, &a) < 0) return -1;
        if ((rc = eval_args(c, f, e, 0, &args)) == 0) rc = apply_test(c, e, e->s, &a, &args, &res);
        args_free(&args);
        if (rc == 0) *out = vjson(json_boolean(e->op ? !res : res));
        break;
    }
    case E_BIN:
        if (eval(c, f, e->a, &a) < 0 || eval(c, f, e->b, &b) < 0) { rc = -1; break; }
        rc = arith(c, e, e->op, &a, &b, out);
        break;
    case E_CMP: return eval_cmp(c, f, e, out);
    case E_NOT:
        if (eval(c, f, e->a, &a) < 0) return -1;
        *out = vjson(json_boolean(!truthy(&a)));
        break;
    case E_NEG:
        if (eval(c, f, e->a, &a) < 0) return -1;
        if (a.k != V_JSON || !is_num(a.j)) { rc = fail(c, e, "bad operand type for unary %c: '%s'", e->op, type_name(&a)); break; }
        if (e->op == '+') *out = vjson(json_incref(a.j));
        else *out = vjson(json_is_real(a.j) ? json_real(-json_real_value(a.j)) : json_integer(ival(a.j) == INT64_MIN ? 0 : -ival(a.j)));
        break;
    case E_AND: case E_OR:
        if (eval(c, f, e->a, &a) < 0) return -1;
        if (truthy(&a) == (e->k == E_OR)) { *out = a; return 0; }
        vfree(&a);
        return eval(c, f, e->b, out);
    case E_COND:
        if (eval(c, f, e->a, &a) < 0) return -1;
        if (truthy(&a)) rc = eval(c, f, e->b, out);
        else if (e->c) rc = eval(c, f, e->c, out);
        break;
    default:
        rc = fail(c, e, "bad expression");
    }
    vfree(&a);
    vfree(&b);
    return rc;
}

/* ---- statements ------------------------------------------------------------------------------ */

static int emit(ctx_t *c, const node_t *at, const char *s, size_t n) {
    if (c->out->n + n > c->t->o.max_output) return fail(c, at, "the output is longer than %zu bytes", c->t->o.max_output);
    c->built += n;
    if (c->built > c->t->o.max_alloc) return fail(c, at, "the template built more than %zu bytes", c->t->o.max_alloc);
    strbuf_add(c->out, s, n);
    return c->out->err ? fail(c, at, "out of memory") : 0;
}

/* binds the targets of a for or set (n's E_NAME children) to v (taken) */
static int bind_targets(ctx_t *c, frame_t *f, const node_t *n, val_t v) {
    if (n->op == 1) return frame_set(c, n, f, n->v[0]->s, v);
    json_t *items = v.k == V_JSON && (json_is_array(v.j) || json_is_string(v.j) || json_is_object(v.j)) ? iter_items(c, n, &v) : NULL;
    vfree(&v);
    if (!items) return c->failed ? -1 : fail(c, n, "cannot unpack a non-sequence");
    if ((int)json_array_size(items) != n->op) {
        json_decref(items);
        return fail(c, n, "cannot unpack %zu values into %d names", json_array_size(items), n->op);
    }
    int rc = 0;
    for (int i = 0; i < n->op && rc == 0; i++) rc = frame_set(c, n, f, n->v[i]->s, vjson(json_incref(json_array_get(items, (size_t)i))));
    json_decref(items);
    return rc;
}

static int exec_for(ctx_t *c, frame_t *f, const node_t *s) {
    val_t it = {0};
    if (eval(c, f, s->a, &it) < 0) return -1;
    json_t *all = iter_items(c, s, &it);
    vfree(&it);
    if (!all) return -1;
    json_t *items = all;
    int rc = 0;
    if (s->b) {   /* `for x in xs if cond`: filtered first, so loop.length counts what is walked */
        if (!(items = json_array())) { json_decref(all); return fail(c, s, "out of memory"); }
        for (size_t i = 0; i < json_array_size(all) && rc == 0; i++) {
            frame_t fr = {f, NULL, NULL, 0, 0};
            val_t cond = {0};
            rc = bind_targets(c, &fr, s, vjson(json_incref(json_array_get(all, i))));
            if (rc == 0) rc = eval(c, &fr, s->b, &cond);
            if (rc == 0 && truthy(&cond)) json_array_append(items, json_array_get(all, i));
            vfree(&cond);
            frame_free(&fr);
        }
        json_decref(all);
    }
    loop_t L = {0, (long)json_array_size(items), items};
    for (size_t i = 0; i < json_array_size(items) && rc == 0; i++) {
        frame_t fr = {f, NULL, NULL, 0, 0};
        val_t lv = {0};
        lv.k = V_LOOP; lv.loop = &L;
        L.index0 = (long)i;
        rc = frame_set(c, s, &fr, "loop", lv);
        if (rc == 0) rc = bind_targets(c, &fr, s, vjson(json_incref(json_array_get(items, i))));
        if (rc == 0) rc = exec(c, &fr, s->c);
        frame_free(&fr);
        if (c->brk == 1) { c->brk = 0; break; }
        c->brk = 0;
        if (rc == 0) rc = step(c, s);
    }
    if (rc == 0 && json_array_size(items) == 0 && s->d) rc = exec(c, f, s->d);
    json_decref(items);
    return rc;
}

static int exec_set(ctx_t *c, frame_t *f, const node_t *s) {
    val_t v = {0};
    if (s->k == N_SETBLOCK) {
        strbuf_t b = {0};
        if (render_body(c, f, s->c, &b) < 0) { free(b.p); return -1; }
        json_t *j = sb_str(c, s, &b);
        if (!j) return -1;
        return frame_set(c, s, f, s->s, vjson(j));
    }
    if (eval(c, f, s->a, &v) < 0) return -1;
    if (!s->s2) return bind_targets(c, f, s, v);
    val_t *ns = frame_find(f, s->s);
    int is_ns = 0;
    for (size_t i = 0; ns && ns->k == V_JSON && i < json_array_size(c->namespaces); i++) is_ns |= json_array_get(c->namespaces, i) == ns->j;
    if (!is_ns) { vfree(&v); return fail(c, s, "cannot assign attribute on non-namespace object '%s'", s->s); }
    json_t *j = to_json(c, s, &v);
    vfree(&v);
    if (!j) return -1;
    if (json_object_set_new(ns->j, s->s2, j)) return fail(c, s, "out of memory");
    return 0;
}

static int exec(ctx_t *c, frame_t *f, const node_t *s) {
    if (step(c, s) < 0) return -1;
    switch (s->k) {
    case N_LIST:
        if (++c->depth > c->t->o.max_depth + 64) return fail(c, s, "nested too deeply");
        for (int i = 0; i < s->n && !c->brk; i++)
            if (exec(c, f, s->v[i]) < 0) { c->depth--; return -1; }
        c->depth--;
        return 0;
    case N_TEXT: return emit(c, s, s->s, s->n_s);
    case N_OUT: {
        val_t v = {0};
        if (eval(c, f, s->a, &v) < 0) return -1;
        strbuf_t b = {0};
        int rc = put_str(c, s, &b, &v);
        vfree(&v);
        if (rc == 0 && b.err) rc = fail(c, s, "out of memory");
        if (rc == 0) rc = emit(c, s, b.p ? b.p : "", b.n);
        free(b.p);
        return rc;
    }
    case N_IF: {
        val_t v = {0};
        if (eval(c, f, s->a, &v) < 0) return -1;
        int t = truthy(&v);
        vfree(&v);
        if (t) return exec(c, f, s->c);
        return s->d ? exec(c, f, s->d) : 0;
    }
    case N_FOR: return exec_for(c, f, s);
    case N_SET: case N_SETBLOCK: return exec_set(c, f, s);
    case N_MACRO: {
        val_t m = {0};
        m.k = V_MACRO; m.m = s;
        return frame_set(c, s, f, s->s, m);
    }
    case N_CALLBLOCK: {
        const node_t *call = s->a;
        val_t fn = {0}, out = {0};
        args_t args = {0};
        int rc = eval(c, f, call->a, &fn);
        if (rc == 0 && fn.k != V_MACRO) rc = fail(c, s, "{%% call %%} needs a macro");
        if (rc == 0) rc = eval_args(c, f, call, 0, &args);
        if (rc == 0) rc = call_macro(c, s, &fn, &args, s->c, f, &out);
        args_free(&args);
        vfree(&fn);
        if (rc == 0) rc = emit(c, s, json_string_value(out.j), json_string_length(out.j));
        vfree(&out);
        return rc;
    }
    case N_BREAK: c->brk = 1; return 0;
    case N_CONTINUE: c->brk = 2; return 0;
    default: return fail(c, s, "bad statement");
    }
}

static int render_body(ctx_t *c, frame_t *f, const node_t *body, strbuf_t *into) {
    strbuf_t *saved = c->out;
    int brk = c->brk;
    c->out = into;
    c->brk = 0;
    int rc = exec(c, f, body);
    c->out = saved;
    c->brk = brk;
    return rc;
}

char *jinja_render(const jinja_t *t, const json_t *vars, size_t *len, int *raised, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (raised) *raised = 0;
    if (!t || (vars && !json_is_object(vars))) { if (err && errlen) snprintf(err, errlen, "bad arguments"); return NULL; }
    strbuf_t out = {0};
    frame_t root = {0};
    ctx_t c = {0};
    c.t = t; c.out = &out; c.err = err; c.errlen = errlen; c.root = &root;
    c.namespaces = json_array();
    int rc = c.namespaces ? 0 : fail(&c, NULL, "out of memory");
    const char *k; json_t *v;
    if (vars) json_object_foreach((json_t *)vars, k, v) if (rc == 0) rc = frame_set(&c, NULL, &root, k, vjson(json_incref(v)));
    if (rc == 0) rc = exec(&c, &root, t->root);
    frame_free(&root);
    json_decref(c.namespaces);
    if (rc == 0 && out.err) rc = fail(&c, NULL, "out of memory");
    if (rc < 0) { free(out.p); if (raised) *raised = c.raised; return NULL; }
    if (!out.p && !(out.p = calloc(1, 1))) { if (err && errlen) snprintf(err, errlen, "out of memory"); return NULL; }
    if (len) *len = out.n;
    return out.p;
}
