/* json_schema: see json_schema.h. One recursive walk turns each schema node into a GBNF
 * expression; a $ref target becomes one named rule (so recursion is a rule reference, made once),
 * shared values (array items, property values) become rules, and the primitives (ws, string,
 * number, ...) are appended at the end when used. A value has no whitespace around it (the text
 * ends where the value does: the grammar is complete at the last `}`); a container puts `ws`
 * after its opening bracket and after each key and value (`"{" ws key ws ":" ws value ws ("," ws
 * ...)* "}"`), so no two `ws` ever meet. Not here: matching the text (grammar.c), pattern
 * or numeric bounds (refused), keeping extra keys distinct from the declared ones. */
#include "coordinator/json_schema.h"
#include "coordinator/grammar.h"
#include "core/strbuf.h"
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Choices (where JSON Schema leaves room or strict generation differs from validation):
 * - layout: properties in the schema's order; whitespace is `ws ::= | " " | "\n" [ \t]{0,20}`
 *   after "{", "[", ",", ":", keys and values inside containers (none before or after the
 *   whole value), so a generation cannot spin on blanks;
 * - additionalProperties absent = false (no extra keys, as OpenAI / llama.cpp strict output),
 *   true = any extra `"key": value`, a schema = extras of that schema, after the declared ones
 *   (their names are not kept apart from the declared names). {"type": "object"} with neither
 *   properties nor additionalProperties is any object;
 * - prefixItems (draft-7: items as an array) are all present, in order; items absent after a
 *   tuple = no more items (absent without a tuple = any values);
 * - enum / const are matched as their compact JSON text (so 1.0 is "1.0", not "1"); oneOf is
 *   anyOf (exclusiveness not enforced); format is not enforced (an annotation, like title);
 *   keywords this file does not know are ignored, as JSON Schema does; minLength / maxLength
 *   count JSON characters (an escape is one, a surrogate pair two); numbers have at most 16
 *   integer, 16 fraction and 3 exponent digits (bounded, like ws). */

/* Bounds on hostile schemas (they come from HTTP bodies). */
#define JS_MAX_DEPTH 64          /* nested schemas on one path, $ref hops included */
#define JS_MAX_STEPS 100000      /* schema nodes visited or merged, all together */
#define JS_MAX_RULES 1024        /* rules this file writes (the grammar adds its own for groups) */
#define JS_MAX_ENUM 1024         /* values of one enum */
#define JS_MAX_REPEAT 1000       /* minItems / maxItems / minLength / maxLength */
#define JS_MAX_TEXT GRAMMAR_MAX_TEXT
#define SB_INIT {.max = JS_MAX_TEXT - 1}   /* every text it builds is bounded as a grammar is */
#define JS_NAME_MAX 40           /* a rule name's stem, before a "-N" to make it unique */
#define JS_PTR_MAX 256           /* a JSON pointer in an error message (longer ones are cut) */
#define JS_NAME_SLOTS 4096       /* open-addressing set of rule names: > 2 * (rules + primitives) */

/* ---- the conversion context ---- */

enum js_prim {   /* shared rules, emitted once each when used */
    PRIM_WS = 1 << 0,
    PRIM_CHAR = 1 << 1,
    PRIM_STRING = 1 << 2,
    PRIM_INTEGRAL = 1 << 3,
    PRIM_INTEGER = 1 << 4,
    PRIM_NUMBER = 1 << 5,
    PRIM_BOOLEAN = 1 << 6,
    PRIM_NULL = 1 << 7,
    PRIM_VALUE = 1 << 8,
    PRIM_OBJECT = 1 << 9,
    PRIM_ARRAY = 1 << 10,
};

static const struct {
    unsigned bit, needs;
    const char *name, *body;
} js_prims[] = {
    {PRIM_WS, 0, "ws", "| \" \" | \"\\n\" [ \\t]{0,20}"},
    {PRIM_CHAR, 0, "char", "[^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4} )"},
    {PRIM_STRING, PRIM_CHAR, "string", "\"\\\"\" char* \"\\\"\""},
    {PRIM_INTEGRAL, 0, "integral", "\"-\"? ( \"0\" | [1-9] [0-9]{0,15} )"},
    {PRIM_INTEGER, PRIM_INTEGRAL, "integer", "integral"},
    {PRIM_NUMBER, PRIM_INTEGRAL, "number", "integral ( \".\" [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?"},
    {PRIM_BOOLEAN, 0, "boolean", "\"true\" | \"false\""},
    {PRIM_NULL, 0, "null", "\"null\""},
    {PRIM_VALUE, PRIM_OBJECT | PRIM_ARRAY | PRIM_STRING | PRIM_NUMBER | PRIM_BOOLEAN | PRIM_NULL, "value",
     "object | array | string | number | boolean | null"},
    {PRIM_OBJECT, PRIM_STRING | PRIM_VALUE | PRIM_WS, "object",
     "\"{\" ws ( string ws \":\" ws value ws ( \",\" ws string ws \":\" ws value ws )* )? \"}\""},
    {PRIM_ARRAY, PRIM_VALUE | PRIM_WS, "array", "\"[\" ws ( value ws ( \",\" ws value ws )* )? \"]\""},
};
#define JS_N_PRIMS (int)(sizeof js_prims / sizeof js_prims[0])

typedef struct memo {   /* a $ref target (or the root) and its rule */
    const json_t *node;
    char *name;
    int open_at;   /* js->open when its expansion began: equal again = recursion with no text between */
    int done;
} memo_t;

typedef struct js {
    json_t *doc;
    strbuf_t rules;
    unsigned prims;
    memo_t *memo;
    int n_memo, cap_memo;
    char *names[JS_NAME_SLOTS];   /* every rule name taken (hash set) */
    unsigned uniq;
    int n_rules, depth, open, steps;
    char *err;
    size_t errlen;
    int failed;
} js_t;

/* Records the first error as "<ptr>: <message>"; returns NULL so callers can `return fail(...)`. */
__attribute__((format(printf, 3, 4))) static char *fail(js_t *js, const char *ptr, const char *fmt, ...) {
    if (js->failed) return NULL;
    js->failed = 1;
    if (!js->err || !js->errlen) return NULL;
    int n = snprintf(js->err, js->errlen, "%s: ", ptr);
    if (n >= 0 && (size_t)n < js->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(js->err + n, js->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

/* strbuf_t → malloc'd string, or NULL (with the error recorded) when it overflowed */
static char *sb_take(js_t *js, strbuf_t *b, const char *ptr) {
    if (b->err) {
        free(b->p);
        b->p = NULL;
        return b->err == STRBUF_NOMEM ? fail(js, ptr, "out of memory")
                           : fail(js, ptr, "the grammar would be larger than %d bytes", JS_MAX_TEXT);
    }
    if (!b->p) strbuf_add(b, "", 0);
    if (b->err) return fail(js, ptr, "out of memory");
    return b->p;
}

static char *dup_or_fail(js_t *js, const char *s, const char *ptr) {
    char *d = strdup(s);
    return d ? d : fail(js, ptr, "out of memory");
}

/* child JSON pointer: ptr + "/" + key with ~ and / escaped (cut at JS_PTR_MAX: messages only) */
static void ptr_child(char *out, const char *ptr, const char *key) {
    size_t n = (size_t)snprintf(out, JS_PTR_MAX, "%s/", ptr);
    for (const char *k = key; *k && n + 3 < JS_PTR_MAX; k++) {
        if (*k == '~' || *k == '/') {
            out[n++] = '~';
            out[n++] = *k == '~' ? '0' : '1';
        } else {
            out[n++] = *k;
        }
    }
    if (n >= JS_PTR_MAX) n = JS_PTR_MAX - 1;
    out[n] = 0;
}

static void ptr_index(char *out, const char *ptr, const char *kw, size_t i) {
    snprintf(out, JS_PTR_MAX, "%s/%s/%zu", ptr, kw, i);
}

/* ---- rule names ---- */

static uint32_t name_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* 1 if taken; else takes it (a copy) and returns 0; -1 out of memory */
static int name_take(js_t *js, const char *name) {
    uint32_t i = name_hash(name) % JS_NAME_SLOTS;
    for (; js->names[i]; i = (i + 1) % JS_NAME_SLOTS)
        if (!strcmp(js->names[i], name)) return 1;
    return (js->names[i] = strdup(name)) ? 0 : -1;
}

/* A fresh rule name from hint: [a-zA-Z0-9-] only, cut to JS_NAME_MAX, "-N" added when taken.
 * Writes it into out (JS_NAME_MAX + 16 bytes). 0, or -1 (error recorded). */
static int name_new(js_t *js, const char *hint, char *out, const char *ptr) {
    if (js->n_rules >= JS_MAX_RULES) return fail(js, ptr, "the grammar would need more than %d rules", JS_MAX_RULES), -1;
    size_t n = 0;
    for (const char *h = hint; *h && n < JS_NAME_MAX; h++) {
        char c = *h;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        out[n++] = ok ? c : '-';
    }
    if (!n) out[n++] = 'r';
    out[n] = 0;
    for (int r; (r = name_take(js, out)) != 0;) {
        if (r < 0) return fail(js, ptr, "out of memory"), -1;
        snprintf(out + n, 16, "-%u", ++js->uniq);
    }
    return 0;
}

/* appends `name ::= body`; 0 or -1 (error recorded) */
static int rule_emit(js_t *js, const char *name, const char *body, const char *ptr) {
    js->n_rules++;
    strbuf_printf(&js->rules, "%s ::= %s\n", name, body);
    if (!js->rules.err) return 0;
    if (js->rules.err == STRBUF_NOMEM) fail(js, ptr, "out of memory");
    else fail(js, ptr, "the grammar would be larger than %d bytes", JS_MAX_TEXT);
    return -1;
}

/* expr as something that may be written twice: expr itself when it is one token, else a new
 * rule named from hint. Takes expr; returns a malloc'd string or NULL (error recorded). */
static char *as_rule(js_t *js, char *expr, const char *hint, const char *ptr) {
    if (!expr || !strchr(expr, ' ')) return expr;
    char name[JS_NAME_MAX + 16];
    int rc = name_new(js, hint, name, ptr);
    if (!rc) rc = rule_emit(js, name, expr, ptr);
    free(expr);
    return rc ? NULL : dup_or_fail(js, name, ptr);
}

static char *prim(js_t *js, unsigned bit, const char *ptr) {
    js->prims |= bit;
    for (int i = 0; i < JS_N_PRIMS; i++)
        if (js_prims[i].bit == bit) return dup_or_fail(js, js_prims[i].name, ptr);
    return NULL;
}

/* ---- literals ---- */

/* Appends s (n bytes of UTF-8) as a GBNF "literal": quotes and backslashes escaped, control
 * characters as \xHH, non-ASCII as \uHHHH / \UHHHHHHHH (the grammar reads code points). */
static int gbnf_lit(strbuf_t *b, const char *s, size_t n) {
    const uint8_t *u = (const uint8_t *)s;
    strbuf_add(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        uint8_t c = u[i];
        if (c < 0x80) {
            if (c == '"' || c == '\\') strbuf_printf(b, "\\%c", c);
            else if (c == '\n') strbuf_puts(b, "\\n");
            else if (c == '\r') strbuf_puts(b, "\\r");
            else if (c == '\t') strbuf_puts(b, "\\t");
            else if (c < 0x20 || c == 0x7f) strbuf_printf(b, "\\x%02X", c);
            else strbuf_add(b, (const char *)&c, 1);
            i++;
            continue;
        }
        int len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
        if (!len || i + (size_t)len > n) return -1;
        uint32_t cp = c & (0x7f >> len);
        for (int k = 1; k < len; k++) {
            if ((u[i + k] & 0xc0) != 0x80) return -1;
            cp = cp << 6 | (u[i + k] & 0x3f);
        }
        if (cp > 0xffff) strbuf_printf(b, "\\U%08X", (unsigned)cp);
        else strbuf_printf(b, "\\u%04X", (unsigned)cp);
        i += (size_t)len;
    }
    strbuf_add(b, "\"", 1);
    return 0;
}

/* v's compact JSON text with its reals as short as they round-trip (0.1, not jansson's
 * default 0.10000000000000001: the text a client wrote and a model would write) */
static char *json_text(const json_t *v) {
    for (int prec = 15; prec <= 17; prec++) {
        char *txt = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(prec));
        json_t *back = txt && prec < 17 ? json_loads(txt, JSON_DECODE_ANY, NULL) : NULL;
        int same = back && json_equal(back, v);
        json_decref(back);
        if (!txt || same || prec == 17) return txt;
        free(txt);
    }
    return NULL;
}

/* the compact JSON text of v as a GBNF literal, appended to b */
static int json_lit(js_t *js, strbuf_t *b, const json_t *v, const char *ptr) {
    char *txt = json_text(v);
    if (!txt) return fail(js, ptr, "out of memory"), -1;
    int rc = gbnf_lit(b, txt, strlen(txt));
    free(txt);
    if (rc) return fail(js, ptr, "a value is not valid UTF-8"), -1;
    return 0;
}

/* ---- keywords ---- */

static const char *const js_refused[] = {
    "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems",
    "contains", "minContains", "maxContains", "patternProperties", "propertyNames", "if", "then", "else", "not",
    "dependentRequired", "dependentSchemas", "dependencies", "minProperties", "maxProperties",
    "unevaluatedProperties", "unevaluatedItems", "$dynamicRef", "$recursiveRef",
};
/* keywords that constrain and are handled here ($defs / definitions only hold schemas) */
static const char *const js_handled[] = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "additionalItems",
    "minItems", "maxItems", "minLength", "maxLength", "enum", "const", "anyOf", "oneOf", "allOf", "$ref",
};

static int in_list(const char *k, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(k, list[i])) return 1;
    return 0;
}
#define IN(k, list) in_list((k), (list), sizeof(list) / sizeof(list[0]))

/* refuses the first unsupported keyword of node; 0 or -1 */
static int check_refused(js_t *js, const json_t *node, const char *ptr) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)node, k, v) {
        if (IN(k, js_refused)) return fail(js, ptr, "'%s' is not supported", k), -1;
    }
    return 0;
}

/* the first handled keyword of node other than except (NULL: none) */
static const char *other_keyword(const json_t *node, const char *except) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)node, k, v) {
        if (strcmp(k, except) && IN(k, js_handled)) return k;
    }
    return NULL;
}

/* a count keyword: absent → def; else a non-negative integer up to JS_MAX_REPEAT (2.0 is 2) */
static int get_count(js_t *js, const json_t *node, const char *kw, long def, long *out, const char *ptr) {
    json_t *v = json_object_get(node, kw);
    *out = def;
    if (!v) return 0;
    double d = json_is_integer(v) ? (double)json_integer_value(v) : json_is_real(v) ? json_real_value(v) : -1;
    if (!(d >= 0) || d != floor(d)) return fail(js, ptr, "'%s' must be a non-negative integer", kw), -1;
    if (d > JS_MAX_REPEAT) return fail(js, ptr, "'%s' above %d is not supported", kw, JS_MAX_REPEAT), -1;
    *out = (long)d;
    return 0;
}

/* appends the repetition operator for lo..hi (hi < 0: unbounded); lo == hi == 1 adds nothing */
static void rep_op(strbuf_t *b, long lo, long hi) {
    if (hi < 0) {
        if (lo == 0) strbuf_puts(b, "*");
        else if (lo == 1) strbuf_puts(b, "+");
        else strbuf_printf(b, "{%ld,}", lo);
    } else if (lo == hi) {
        if (lo != 1) strbuf_printf(b, "{%ld}", lo);
    } else if (lo == 0 && hi == 1) {
        strbuf_puts(b, "?");
    } else {
        strbuf_printf(b, "{%ld,%ld}", lo, hi);
    }
}

/* ---- the walk ---- */

enum js_type {
    T_STRING = 1 << 0,
    T_NUMBER = 1 << 1,
    T_INTEGER = 1 << 2,
    T_BOOLEAN = 1 << 3,
    T_NULL = 1 << 4,
    T_OBJECT = 1 << 5,
    T_ARRAY = 1 << 6,
};
static const char *const js_type_names[] = {"string", "number", "integer", "boolean", "null", "object", "array"};

static char *visit(js_t *js, json_t *node, const char *ptr, const char *hint);

static void hint_child(char *out, const char *hint, const char *key) {
    snprintf(out, JS_NAME_MAX + 1, "%s-%s", hint, key);
}

/* One rule per $ref target (and the root): a target met again refers to its rule; met again
 * before any "{" or "[" opened since it began, it would be left recursion (no text consumed). */
static char *ref_rule(js_t *js, json_t *target, const char *tptr, const char *fixed_name, const char *hint) {
    for (int i = 0; i < js->n_memo; i++) {
        if (js->memo[i].node != target) continue;
        if (!js->memo[i].done && js->memo[i].open_at == js->open)
            return fail(js, tptr, "'$ref' recursion that consumes no text (left recursion)");
        return dup_or_fail(js, js->memo[i].name, tptr);
    }
    if (js->n_memo == js->cap_memo) {
        int cap = js->cap_memo ? js->cap_memo * 2 : 8;
        memo_t *m = realloc(js->memo, (size_t)cap * sizeof *m);
        if (!m) return fail(js, tptr, "out of memory");
        js->memo = m;
        js->cap_memo = cap;
    }
    char name[JS_NAME_MAX + 16];
    if (fixed_name) snprintf(name, sizeof name, "%s", fixed_name);
    else if (name_new(js, hint, name, tptr)) return NULL;
    int idx = js->n_memo;
    memo_t *m = &js->memo[js->n_memo++];
    *m = (memo_t){.node = target, .name = strdup(name), .open_at = js->open};
    if (!m->name) return fail(js, tptr, "out of memory");
    char *expr = visit(js, target, tptr, name);
    if (!expr) return NULL;
    int rc = rule_emit(js, name, expr, tptr);
    free(expr);
    if (rc) return NULL;
    js->memo[idx].done = 1;
    return dup_or_fail(js, name, tptr);
}

/* a local JSON pointer ("#", "#/$defs/A", any "#/a/0/b" with ~0 ~1 and %XX) → node, or NULL */
static json_t *ref_resolve(js_t *js, const char *ref) {
    if (ref[0] != '#') return NULL;
    json_t *cur = js->doc;
    const char *p = ref + 1;
    if (*p && *p != '/') return NULL;
    while (cur && *p == '/') {
        char seg[256];
        size_t n = 0;
        for (p++; *p && *p != '/'; p++) {
            char c = *p;
            if (c == '~' && (p[1] == '0' || p[1] == '1')) c = *++p == '0' ? '~' : '/';
            else if (c == '%' && p[1] && p[2]) {
                char hex[3] = {p[1], p[2], 0}, *end;
                long x = strtol(hex, &end, 16);
                if (*end || x == 0) return NULL;
                c = (char)x;
                p += 2;
            }
            if (n + 1 >= sizeof seg) return NULL;
            seg[n++] = c;
        }
        seg[n] = 0;
        if (json_is_object(cur)) {
            cur = json_object_get(cur, seg);
        } else if (json_is_array(cur)) {
            char *end;
            unsigned long i = strtoul(seg, &end, 10);
            cur = (n && *end == 0 && seg[0] != '-') ? json_array_get(cur, i) : NULL;
        } else {
            cur = NULL;
        }
    }
    return cur;
}

static char *visit_ref(js_t *js, json_t *node, const char *ptr) {
    json_t *r = json_object_get(node, "$ref");
    const char *other = other_keyword(node, "$ref");
    if (other) return fail(js, ptr, "'$ref' together with '%s' is not supported", other);
    if (!json_is_string(r)) return fail(js, ptr, "'$ref' must be a string");
    const char *ref = json_string_value(r);
    if (ref[0] != '#') return fail(js, ptr, "'$ref' to '%.64s' is not supported (only local references #/...)", ref);
    json_t *target = ref_resolve(js, ref);
    if (!target) return fail(js, ptr, "'$ref' target '%.64s' is not found", ref);
    const char *last = strrchr(ref, '/');
    char tptr[JS_PTR_MAX];
    snprintf(tptr, sizeof tptr, "%s", ref);
    return ref_rule(js, target, tptr, target == js->doc ? "root" : NULL, last && last[1] ? last + 1 : "ref");
}

/* anyOf / oneOf (oneOf's exclusiveness is not enforced): ( a | b | ... ) */
static char *visit_any(js_t *js, json_t *node, const char *kw, const char *ptr, const char *hint) {
    json_t *alts = json_object_get(node, kw);
    const char *other = other_keyword(node, kw);
    if (other) return fail(js, ptr, "'%s' together with '%s' is not supported", kw, other);
    if (!json_is_array(alts) || !json_array_size(alts)) return fail(js, ptr, "'%s' must be a non-empty array", kw);
    strbuf_t b = SB_INIT;
    size_t i;
    json_t *alt;
    strbuf_puts(&b, "( ");
    json_array_foreach(alts, i, alt) {
        char cptr[JS_PTR_MAX], chint[JS_NAME_MAX + 1], num[24];
        ptr_index(cptr, ptr, kw, i);
        snprintf(num, sizeof num, "%zu", i);
        hint_child(chint, hint, num);
        char *e = visit(js, alt, cptr, chint);
        if (!e) break;
        strbuf_printf(&b, "%s", i ? " | " : "");
        strbuf_puts(&b, e);
        free(e);
    }
    strbuf_puts(&b, " )");
    if (js->failed) return free(b.p), NULL;
    return sb_take(js, &b, ptr);
}

/* enum / const: the JSON text of each value (of the schema's types, when it names some) */
static int type_matches(const json_t *v, unsigned types) {
    if (!types) return 1;
    switch (json_typeof(v)) {
    case JSON_STRING: return !!(types & T_STRING);
    case JSON_INTEGER: return !!(types & (T_INTEGER | T_NUMBER));
    case JSON_REAL: return !!(types & T_NUMBER) || ((types & T_INTEGER) && json_real_value(v) == floor(json_real_value(v)));
    case JSON_TRUE:
    case JSON_FALSE: return !!(types & T_BOOLEAN);
    case JSON_NULL: return !!(types & T_NULL);
    case JSON_OBJECT: return !!(types & T_OBJECT);
    case JSON_ARRAY: return !!(types & T_ARRAY);
    }
    return 0;
}

static char *visit_enum(js_t *js, json_t *node, unsigned types, const char *ptr) {
    json_t *c = json_object_get(node, "const"), *e = json_object_get(node, "enum");
    if (e && !json_is_array(e)) return fail(js, ptr, "'enum' must be an array");
    if (e && json_array_size(e) > JS_MAX_ENUM) return fail(js, ptr, "'enum' with more than %d values is not supported", JS_MAX_ENUM);
    strbuf_t b = SB_INIT;
    int n = 0;
    size_t i;
    json_t *v;
    if (c) {   /* const (and enum, if both: const when it is one of the enum's values) */
        int in_enum = !e;
        json_array_foreach(e, i, v) in_enum |= json_equal(v, c);
        if (in_enum && type_matches(c, types)) {
            n = 1;
            if (json_lit(js, &b, c, ptr)) return free(b.p), NULL;
        }
    } else {
        json_array_foreach(e, i, v) {
            if (!type_matches(v, types)) continue;
            if (n++) strbuf_puts(&b, " | ");
            if (json_lit(js, &b, v, ptr)) return free(b.p), NULL;
        }
    }
    if (!n) return free(b.p), fail(js, ptr, "no value satisfies '%s'", c ? "const" : "enum");
    char *lits = sb_take(js, &b, ptr);
    if (!lits) return NULL;
    strbuf_t w = SB_INIT;
    strbuf_printf(&w, n > 1 ? "( %s )" : "%s", lits);
    free(lits);
    return sb_take(js, &w, ptr);
}

/* ---- objects ---- */

typedef struct prop {
    const char *key;
    char *kv;   /* `"\"key\"" ws ":" ws value` */
    int required;
} prop_t;

static void props_free(prop_t *p, size_t n) {
    for (size_t i = 0; p && i < n; i++) free(p[i].kv);
    free(p);
}

/* `"\"key\"" ws ":" ws value` for one property; NULL on error (recorded) */
static char *prop_kv(js_t *js, const char *key, json_t *schema, const char *ptr, const char *hint) {
    char *val = as_rule(js, visit(js, schema, ptr, hint), hint, ptr);
    if (!val) return NULL;
    json_t *ks = json_string(key);
    strbuf_t b = SB_INIT;
    int rc = ks ? json_lit(js, &b, ks, ptr) : (fail(js, ptr, "out of memory"), -1);
    json_decref(ks);
    js->prims |= PRIM_WS;
    strbuf_printf(&b, " ws \":\" ws %s ws", val);
    free(val);
    if (rc) return free(b.p), NULL;
    return sb_take(js, &b, ptr);
}

/* the key-value text of each declared property, in the schema's order, and which are required */
static prop_t *object_props(js_t *js, json_t *node, const char *ptr, const char *hint, size_t *np) {
    json_t *props = json_object_get(node, "properties"), *req = json_object_get(node, "required"), *v;
    char pptr[JS_PTR_MAX], cptr[JS_PTR_MAX], chint[JS_NAME_MAX + 1];
    if (props && !json_is_object(props)) return fail(js, ptr, "'properties' must be an object"), NULL;
    if (req && !json_is_array(req)) return fail(js, ptr, "'required' must be an array of strings"), NULL;
    size_t n = json_object_size(props), i = 0, k;
    prop_t *p = calloc(n + 1, sizeof *p);
    if (!p) return fail(js, ptr, "out of memory"), NULL;
    const char *key;
    ptr_child(pptr, ptr, "properties");
    json_object_foreach(props, key, v) {
        ptr_child(cptr, pptr, key);
        hint_child(chint, hint, key);
        p[i].key = key;
        if (!(p[i++].kv = prop_kv(js, key, v, cptr, chint))) return props_free(p, n), NULL;
    }
    json_array_foreach(req, k, v) {
        if (!json_is_string(v)) return props_free(p, n), fail(js, ptr, "'required' must be an array of strings"), NULL;
        size_t j = 0;
        while (j < n && strcmp(p[j].key, json_string_value(v))) j++;
        if (j == n)
            return props_free(p, n),
                   fail(js, ptr, "required property '%.64s' is not in 'properties'", json_string_value(v)), NULL;
        p[j].required = 1;
    }
    *np = n;
    return p;
}

/* No property required: any subset in order. ( kv1 rest2 | kv2 rest3 | ... ) where
 * rest_j ::= ( "," ws kv_j )? rest_j+1 — linear in size, and the first key picks the branch. */
static int object_optional(js_t *js, strbuf_t *b, prop_t *p, size_t n, const char *hint, const char *ptr) {
    char (*rest)[JS_NAME_MAX + 16] = calloc(n + 1, sizeof *rest);
    if (!rest) return fail(js, ptr, "out of memory"), -1;
    int rc = 0;
    for (size_t j = n; j-- > 1 && !rc;) {   /* rest_j for j = n-1 .. 1 (0-based) */
        char h[JS_NAME_MAX + 1];
        hint_child(h, hint, "rest");
        rc = name_new(js, h, rest[j], ptr);
        strbuf_t r = SB_INIT;
        strbuf_printf(&r, "( \",\" ws %s )?", p[j].kv);
        if (j + 1 < n) strbuf_printf(&r, " %s", rest[j + 1]);
        char *body = rc ? (free(r.p), NULL) : sb_take(js, &r, ptr);
        rc = rc || !body || rule_emit(js, rest[j], body, ptr);
        free(body);
    }
    strbuf_puts(b, "( ");
    for (size_t i = 0; i < n && !rc; i++) {
        if (i) strbuf_puts(b, " | ");
        strbuf_puts(b, p[i].kv);
        if (i + 1 < n) strbuf_printf(b, " %s", rest[i + 1]);
    }
    strbuf_puts(b, " )");
    free(rest);
    return rc ? -1 : 0;
}

/* the declared properties: the first required one anchors the commas — optional ones before it
 * are `( kv "," ws )?`, after it `( "," ws kv )?`. Returns 1 if it wrote something that is always
 * there, 0 if what it wrote may be empty (or nothing), -1 on error. */
static int object_declared(js_t *js, strbuf_t *b, prop_t *p, size_t n, const char *hint, const char *ptr) {
    size_t r = 0;
    while (r < n && !p[r].required) r++;
    if (r == n) return n && object_optional(js, b, p, n, hint, ptr) ? -1 : 0;
    for (size_t i = 0; i < n; i++) {
        if (i < r) strbuf_printf(b, "( %s \",\" ws )? ", p[i].kv);
        else if (i == r) strbuf_puts(b, p[i].kv);
        else if (p[i].required) strbuf_printf(b, " \",\" ws %s", p[i].kv);
        else strbuf_printf(b, " ( \",\" ws %s )?", p[i].kv);
    }
    return 1;
}

/* additionalProperties: absent or false → none (NULL, *none = 1); true → any value; a schema →
 * that. Returns the rule for one extra `string ":" ws value`. */
static char *object_extra(js_t *js, json_t *node, const char *ptr, const char *hint, int *none) {
    json_t *a = json_object_get(node, "additionalProperties");
    *none = !a || json_is_false(a);
    if (*none) return NULL;
    char cptr[JS_PTR_MAX], chint[JS_NAME_MAX + 1];
    ptr_child(cptr, ptr, "additionalProperties");
    hint_child(chint, hint, "extra");
    char *val = visit(js, a, cptr, chint);
    if (!val) return NULL;
    strbuf_t b = SB_INIT;
    js->prims |= PRIM_STRING | PRIM_WS;
    strbuf_puts(&b, "string ws \":\" ws ");
    strbuf_puts(&b, val);
    strbuf_puts(&b, " ws");
    free(val);
    return as_rule(js, sb_take(js, &b, cptr), chint, cptr);
}

/* An object: declared properties, then extra ones. With neither "properties" nor
 * "additionalProperties" ({"type": "object"}) any object is accepted. */
static char *visit_object(js_t *js, json_t *node, const char *ptr, const char *hint) {
    if (!json_object_get(node, "properties") && !json_object_get(node, "additionalProperties") &&
        !json_object_get(node, "required"))
        return prim(js, PRIM_OBJECT, ptr);
    size_t n = 0;
    int none = 1;
    js->open++;
    prop_t *p = object_props(js, node, ptr, hint, &n);
    char *x = p ? object_extra(js, node, ptr, hint, &none) : NULL;
    js->open--;
    if (!p || (!none && !x)) return props_free(p, n), free(x), NULL;
    strbuf_t b = SB_INIT;
    js->prims |= PRIM_WS;
    strbuf_puts(&b, "\"{\" ws ");
    strbuf_t d = SB_INIT;
    int always = object_declared(js, &d, p, n, hint, ptr);
    props_free(p, n);
    char *dp = always < 0 ? (free(d.p), NULL) : sb_take(js, &d, ptr);
    if (!dp) return free(b.p), free(x), NULL;
    if (always) {
        strbuf_puts(&b, dp);
        if (x) strbuf_printf(&b, " ( \",\" ws %s )*", x);
    } else if (*dp && x) {
        strbuf_printf(&b, "( %s ( \",\" ws %s )* | %s ( \",\" ws %s )* )?", dp, x, x, x);
    } else if (*dp) {
        strbuf_printf(&b, "%s?", dp);
    } else if (x) {
        strbuf_printf(&b, "( %s ( \",\" ws %s )* )?", x, x);
    }
    strbuf_puts(&b, always || *dp || x ? " \"}\"" : "\"}\"");
    free(dp);
    free(x);
    return sb_take(js, &b, ptr);
}

/* ---- arrays ---- */

/* ` ( "," ws item )op` for lo..hi more items (nothing when hi == 0) */
static void rep_more(strbuf_t *b, const char *item, long lo, long hi) {
    if (hi == 0) return;
    strbuf_printf(b, " ( \",\" ws %s ws )", item);
    rep_op(b, lo, hi < 0 ? -1 : hi);
}

/* appends the tuple's items, comma-separated (each is written once: inline) */
static void array_tuple(js_t *js, strbuf_t *b, json_t *tuple, const char *kw, const char *ptr, const char *hint) {
    char cptr[JS_PTR_MAX], chint[JS_NAME_MAX + 1], num[24];
    for (size_t i = 0; i < json_array_size(tuple) && !js->failed; i++) {
        snprintf(num, sizeof num, "%zu", i);
        ptr_index(cptr, ptr, kw, i);
        hint_child(chint, hint, num);
        char *e = visit(js, json_array_get(tuple, i), cptr, chint);
        if (e) strbuf_printf(b, i ? " \",\" ws %s ws" : " %s ws", e);
        free(e);
    }
}

/* appends lo..hi (hi < 0: unbounded) items after k tuple items: after a tuple each one is
 * `"," ws item`; without one the first has no comma (and all may be absent when lo == 0) */
static void array_rest(strbuf_t *b, const char *item, long k, long lo, long hi) {
    if (hi == 0) return;
    long hi1 = hi < 0 ? -1 : hi - 1;
    if (k) {
        rep_more(b, item, lo, hi);
    } else if (lo == 0) {
        strbuf_printf(b, " ( %s ws", item);
        rep_more(b, item, 0, hi1);
        strbuf_puts(b, " )?");
    } else {
        strbuf_printf(b, " %s ws", item);
        rep_more(b, item, lo - 1, hi1);
    }
}

/* prefixItems (or a draft-7 `items` array) is the tuple, all present; items (additionalItems)
 * the rest: absent after a tuple → no more items, absent without one → any values. */
static char *visit_array(js_t *js, json_t *node, const char *ptr, const char *hint) {
    json_t *rest = json_object_get(node, "items"), *tuple = json_object_get(node, "prefixItems");
    const char *tuple_kw = "prefixItems", *rest_kw = "items";
    if (json_is_array(rest)) {
        if (tuple) return fail(js, ptr, "'items' as an array together with 'prefixItems' is not supported");
        tuple = rest, tuple_kw = "items";
        rest = json_object_get(node, "additionalItems"), rest_kw = "additionalItems";
    }
    if (tuple && !json_is_array(tuple)) return fail(js, ptr, "'prefixItems' must be an array");
    long lo, hi, k = (long)json_array_size(tuple);
    if (get_count(js, node, "minItems", 0, &lo, ptr) || get_count(js, node, "maxItems", -1, &hi, ptr)) return NULL;
    if (hi >= 0 && lo > hi) return fail(js, ptr, "'minItems' is greater than 'maxItems'");
    if (k > JS_MAX_REPEAT) return fail(js, ptr, "more than %d 'prefixItems' are not supported", JS_MAX_REPEAT);
    if (hi >= 0 && hi < k) return fail(js, ptr, "'maxItems' is smaller than the number of 'prefixItems'");
    if (!rest && !tuple) rest = json_true();
    if (json_is_false(rest)) rest = NULL;
    long rlo = lo > k ? lo - k : 0, rhi = !rest ? 0 : hi < 0 ? -1 : hi - k;
    if (!rest && rlo > 0) return fail(js, ptr, "'minItems' asks for more items than the schema allows");
    strbuf_t b = SB_INIT;
    char cptr[JS_PTR_MAX], chint[JS_NAME_MAX + 1], *item = NULL;
    js->prims |= PRIM_WS;
    strbuf_puts(&b, "\"[\" ws");
    js->open++;
    array_tuple(js, &b, tuple, tuple_kw, ptr, hint);
    if (!js->failed && rhi != 0) {
        ptr_child(cptr, ptr, rest_kw);
        hint_child(chint, hint, "item");
        item = as_rule(js, visit(js, rest, cptr, chint), chint, cptr);
    }
    js->open--;
    if (js->failed) return free(b.p), free(item), NULL;
    array_rest(&b, item, k, rlo, rhi);
    free(item);
    strbuf_puts(&b, " \"]\"");
    return sb_take(js, &b, ptr);
}

/* ---- strings and the type dispatch ---- */

static char *visit_string(js_t *js, json_t *node, const char *ptr) {
    long lo, hi;
    if (get_count(js, node, "minLength", 0, &lo, ptr) || get_count(js, node, "maxLength", -1, &hi, ptr)) return NULL;
    if (hi >= 0 && lo > hi) return fail(js, ptr, "'minLength' is greater than 'maxLength'");
    if (lo == 0 && hi < 0) return prim(js, PRIM_STRING, ptr);
    strbuf_t b = SB_INIT;
    js->prims |= PRIM_CHAR;
    if (hi == 0) {
        strbuf_puts(&b, "\"\\\"\\\"\"");
    } else {
        strbuf_puts(&b, "\"\\\"\" char");
        rep_op(&b, lo, hi);
        strbuf_puts(&b, " \"\\\"\"");
    }
    return sb_take(js, &b, ptr);
}

/* "type": absent → 0, else a mask of T_* (a name or a non-empty list of names) */
static int parse_types(js_t *js, const json_t *node, unsigned *types, const char *ptr) {
    json_t *t = json_object_get(node, "type"), *v;
    size_t i, n = json_is_array(t) ? json_array_size(t) : 1;
    *types = 0;
    if (!t) return 0;
    if (json_is_array(t) && !n) return fail(js, ptr, "'type' is an empty list"), -1;
    for (i = 0; i < n; i++) {
        v = json_is_array(t) ? json_array_get(t, i) : t;
        if (!json_is_string(v)) return fail(js, ptr, "'type' must be a string or a list of strings"), -1;
        size_t k = 0;
        while (k < 7 && strcmp(json_string_value(v), js_type_names[k])) k++;
        if (k == 7) return fail(js, ptr, "unknown type '%.32s'", json_string_value(v)), -1;
        *types |= 1u << k;
    }
    return 0;
}

/* no "type": the one that the keywords present are about (none: any value) */
static unsigned infer_types(const json_t *node) {
    static const char *const obj[] = {"properties", "required", "additionalProperties"};
    static const char *const arr[] = {"items", "prefixItems", "additionalItems", "minItems", "maxItems"};
    static const char *const str[] = {"minLength", "maxLength"};
    unsigned t = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)node, k, v) {
        t |= IN(k, obj) ? T_OBJECT : IN(k, arr) ? T_ARRAY : IN(k, str) ? T_STRING : 0;
    }
    return t;
}

static char *visit_typed(js_t *js, json_t *node, unsigned types, const char *ptr, const char *hint) {
    if (!types) return prim(js, PRIM_VALUE, ptr);
    if (types & T_NUMBER) types &= ~(unsigned)T_INTEGER;   /* integers are numbers */
    int many = (types & (types - 1)) != 0;
    strbuf_t b = SB_INIT;
    if (many) strbuf_puts(&b, "( ");
    for (unsigned bit = 1, n = 0; bit <= T_ARRAY && !js->failed; bit <<= 1) {
        if (!(types & bit)) continue;
        char *e = bit == T_STRING    ? visit_string(js, node, ptr)
                  : bit == T_NUMBER  ? prim(js, PRIM_NUMBER, ptr)
                  : bit == T_INTEGER ? prim(js, PRIM_INTEGER, ptr)
                  : bit == T_BOOLEAN ? prim(js, PRIM_BOOLEAN, ptr)
                  : bit == T_NULL    ? prim(js, PRIM_NULL, ptr)
                  : bit == T_OBJECT  ? visit_object(js, node, ptr, hint)
                                     : visit_array(js, node, ptr, hint);
        if (e) strbuf_printf(&b, "%s%s", n++ ? " | " : "", e);
        free(e);
    }
    if (many) strbuf_puts(&b, " )");
    if (js->failed) return free(b.p), NULL;
    return sb_take(js, &b, ptr);
}

/* ---- allOf: object schemas merged into one ---- */

typedef struct merge {
    json_t *props, *req, *addl;
    const json_t **seen;   /* parts merged so far: merging is idempotent, a part met again adds nothing */
    size_t n_seen, cap_seen;
} merge_t;

/* 1 if part was merged before, else records it; -1 out of memory */
static int merge_seen(merge_t *m, const json_t *part) {
    for (size_t i = 0; i < m->n_seen; i++)
        if (m->seen[i] == part) return 1;
    if (m->n_seen == m->cap_seen) {
        size_t cap = m->cap_seen ? 2 * m->cap_seen : 16;
        const json_t **p = realloc(m->seen, cap * sizeof *p);
        if (!p) return -1;
        m->seen = p;
        m->cap_seen = cap;
    }
    m->seen[m->n_seen++] = part;
    return 0;
}

static int merge_part(js_t *js, json_t *part, const char *ptr, merge_t *m);

static int merge_props(js_t *js, json_t *props, const char *ptr, merge_t *m) {
    const char *key;
    json_t *s;
    if (!json_is_object(props)) return fail(js, ptr, "'properties' must be an object"), -1;
    json_object_foreach(props, key, s) {
        json_t *old = json_object_get(m->props, key);
        if (old && old != s && !json_equal(old, s))
            return fail(js, ptr, "property '%.64s' differs between 'allOf' parts", key), -1;
        if (!old && json_object_set(m->props, key, s)) return fail(js, ptr, "out of memory"), -1;
    }
    return 0;
}

/* one keyword of an allOf part: object keywords merge, $ref and allOf are followed, others refused */
static int merge_key(js_t *js, const char *k, json_t *v, const char *ptr, merge_t *m) {
    char cptr[JS_PTR_MAX];
    size_t i;
    json_t *x;
    if (!strcmp(k, "$ref")) {
        json_t *t = json_is_string(v) ? ref_resolve(js, json_string_value(v)) : NULL;
        if (!t) return fail(js, ptr, "'$ref' target '%.64s' is not found or not local", json_string_value(v) ?: "?"), -1;
        return merge_part(js, t, json_string_value(v), m);
    }
    if (!strcmp(k, "allOf")) {
        if (!json_is_array(v) || !json_array_size(v)) return fail(js, ptr, "'allOf' must be a non-empty array"), -1;
        json_array_foreach(v, i, x) {
            ptr_index(cptr, ptr, "allOf", i);
            if (merge_part(js, x, cptr, m)) return -1;
        }
        return 0;
    }
    if (!strcmp(k, "type") && !(json_is_string(v) && !strcmp(json_string_value(v), "object")))
        return fail(js, ptr, "'allOf' is supported only for object schemas ('type' is not \"object\")"), -1;
    if (!strcmp(k, "properties")) return merge_props(js, v, ptr, m);
    if (!strcmp(k, "required")) {
        if (!json_is_array(v)) return fail(js, ptr, "'required' must be an array of strings"), -1;
        json_array_foreach(v, i, x) if (json_array_append(m->req, x)) return fail(js, ptr, "out of memory"), -1;
        return 0;
    }
    if (!strcmp(k, "additionalProperties")) {
        if (m->addl && !json_equal(m->addl, v))
            return fail(js, ptr, "'additionalProperties' differs between 'allOf' parts"), -1;
        m->addl = v;
        return 0;
    }
    if (strcmp(k, "type") && IN(k, js_handled))
        return fail(js, ptr, "'allOf' with '%s' in a part is not supported (only object schemas merge)", k), -1;
    return 0;
}

static int merge_part(js_t *js, json_t *part, const char *ptr, merge_t *m) {
    if (++js->steps > JS_MAX_STEPS) return fail(js, ptr, "the schema is too complex (over %d steps)", JS_MAX_STEPS), -1;
    if (js->depth >= JS_MAX_DEPTH) return fail(js, ptr, "the schema is nested deeper than %d", JS_MAX_DEPTH), -1;
    if (json_is_true(part)) return 0;
    if (!json_is_object(part)) return fail(js, ptr, "'allOf' is supported only for object schemas"), -1;
    if (check_refused(js, part, ptr)) return -1;
    int seen = merge_seen(m, part);
    if (seen) return seen < 0 ? (fail(js, ptr, "out of memory"), -1) : 0;
    const char *k;
    json_t *v;
    int rc = 0;
    js->depth++;
    json_object_foreach(part, k, v) {
        if ((rc = merge_key(js, k, v, ptr, m))) break;
    }
    js->depth--;
    return rc;
}

static char *visit_all(js_t *js, json_t *node, const char *ptr, const char *hint) {
    merge_t m = {.props = json_object(), .req = json_array()};
    json_t *o = json_object();
    char *e = NULL;
    if (!m.props || !m.req || !o) fail(js, ptr, "out of memory");
    else if (!merge_part(js, node, ptr, &m)) {
        if (json_object_set(o, "properties", m.props) || json_object_set(o, "required", m.req) ||
            (m.addl && json_object_set(o, "additionalProperties", m.addl)))
            fail(js, ptr, "out of memory");
        else
            e = visit_object(js, o, ptr, hint);
    }
    json_decref(m.props);
    json_decref(m.req);
    free(m.seen);
    json_decref(o);
    return e;
}

/* ---- one schema node ---- */

static char *visit_node(js_t *js, json_t *node, const char *ptr, const char *hint) {
    unsigned types;
    if (json_is_true(node)) return prim(js, PRIM_VALUE, ptr);
    if (json_is_false(node)) return fail(js, ptr, "the schema false accepts nothing");
    if (!json_is_object(node)) return fail(js, ptr, "a schema must be an object or a boolean");
    if (check_refused(js, node, ptr)) return NULL;
    if (json_object_get(node, "$ref")) return visit_ref(js, node, ptr);
    if (json_object_get(node, "allOf")) return visit_all(js, node, ptr, hint);
    if (json_object_get(node, "anyOf")) return visit_any(js, node, "anyOf", ptr, hint);
    if (json_object_get(node, "oneOf")) return visit_any(js, node, "oneOf", ptr, hint);
    if (parse_types(js, node, &types, ptr)) return NULL;
    if (json_object_get(node, "enum") || json_object_get(node, "const")) return visit_enum(js, node, types, ptr);
    return visit_typed(js, node, types ? types : infer_types(node), ptr, hint);
}

static char *visit(js_t *js, json_t *node, const char *ptr, const char *hint) {
    if (++js->steps > JS_MAX_STEPS) return fail(js, ptr, "the schema is too complex (over %d steps)", JS_MAX_STEPS);
    if (js->depth >= JS_MAX_DEPTH) return fail(js, ptr, "the schema is nested deeper than %d", JS_MAX_DEPTH);
    js->depth++;
    char *e = visit_node(js, node, ptr, hint);
    js->depth--;
    return e;
}

/* ---- entry ---- */

/* the used primitives and what they use, in table order */
static void prims_emit(js_t *js, strbuf_t *out) {
    unsigned used = js->prims;
    for (int again = 1; again;) {
        again = 0;
        for (int i = 0; i < JS_N_PRIMS; i++)
            if ((used & js_prims[i].bit) && (js_prims[i].needs & ~used)) used |= js_prims[i].needs, again = 1;
    }
    for (int i = 0; i < JS_N_PRIMS; i++)
        if (used & js_prims[i].bit) strbuf_printf(out, "%s ::= %s\n", js_prims[i].name, js_prims[i].body);
}

static void js_free(js_t *js) {
    for (int i = 0; i < JS_NAME_SLOTS; i++) free(js->names[i]);
    for (int i = 0; i < js->n_memo; i++) free(js->memo[i].name);
    free(js->memo);
    free(js->rules.p);
    json_decref(js->doc);
    free(js);
}

/* The text must compile: the matcher's own limits (repetitions expand to rules and copies, parse
 * stacks at the start) are simplest checked by compiling it once. Takes out; returns it or NULL. */
static char *compiles(char *out, char *err, size_t errlen) {
    char gerr[256];
    grammar_t *g = grammar_parse(out, strlen(out), "root", gerr, sizeof gerr);
    if (g) {
        grammar_destroy(&g);
        return out;
    }
    if (err && errlen) snprintf(err, errlen, "#: the schema needs a grammar beyond the matcher's limits (%s)", gerr);
    free(out);
    return NULL;
}

char *json_schema_to_gbnf(const char *schema, size_t len, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!schema || len > JS_MAX_TEXT) {
        if (err && errlen) snprintf(err, errlen, "#: the schema is missing or larger than %d bytes", JS_MAX_TEXT);
        return NULL;
    }
    json_error_t je;
    json_t *doc = json_loadb(schema, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        if (err && errlen) snprintf(err, errlen, "#: invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
        return NULL;
    }
    js_t *js = calloc(1, sizeof *js);
    if (!js) {
        json_decref(doc);
        if (err && errlen) snprintf(err, errlen, "#: out of memory");
        return NULL;
    }
    *js = (js_t){.doc = doc, .err = err, .errlen = errlen, .rules = SB_INIT};
    int rc = name_take(js, "root");
    for (int i = 0; i < JS_N_PRIMS && !rc; i++) rc = name_take(js, js_prims[i].name);
    char *root = rc ? fail(js, "#", "out of memory") : ref_rule(js, doc, "#", "root", "root");
    char *out = NULL;
    if (root && !js->failed) {
        strbuf_t o = SB_INIT;
        strbuf_add(&o, js->rules.p, js->rules.n);
        prims_emit(js, &o);
        out = sb_take(js, &o, "#");
    }
    free(root);
    js_free(js);
    return out ? compiles(out, err, errlen) : NULL;
}
