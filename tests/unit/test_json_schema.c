/* test_json_schema: JSON Schema → GBNF. Refusals name the JSON pointer and the keyword; the
 * output has the expected shape (primitives only when used, one rule per $ref target, literals
 * escaped); and — the point — each schema's grammar, compiled by the real grammar engine, accepts
 * valid documents (tern's layout) to the end and rejects invalid ones (wrong type, missing or
 * extra or out-of-order key, too many items, too long a string, ...), fed whole and byte by byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "coordinator/grammar.h"
#include "coordinator/json_schema.h"

/* ---- helpers ---- */

static char *conv(const char *schema, char *err, size_t errlen) {
    return json_schema_to_gbnf(schema, strlen(schema), err, errlen);
}

/* schema must be refused with an error containing both needles */
static void refused(const char *schema, const char *n1, const char *n2) {
    char err[512] = "";
    char *g = conv(schema, err, sizeof err);
    if (g) fail_msg("accepted %.200s:\n%s", schema, g);
    if (!strstr(err, n1) || (n2 && !strstr(err, n2))) fail_msg("%.200s: error '%s' lacks '%s' / '%s'", schema, err, n1, n2 ? n2 : "");
}

static grammar_t *compile(const char *schema) {
    char err[512] = "";
    char *g = conv(schema, err, sizeof err);
    if (!g) fail_msg("%.200s: refused: %s", schema, err);
    grammar_t *gr = grammar_parse(g, strlen(g), NULL, err, sizeof err);
    if (!gr) fail_msg("%.200s: grammar_parse: %s\n%s", schema, err, g);
    free(g);
    return gr;
}

/* 1 if the grammar takes text whole and may end there; fed at once and a byte at a time, which
 * must agree */
static int matches(const grammar_t *g, const char *text) {
    size_t n = strlen(text);
    grammar_state_t *s = grammar_state_new(g), *t = grammar_state_new(g);
    assert_non_null(s);
    assert_non_null(t);
    int whole = grammar_state_accept_bytes(s, text, n) == 0 && grammar_state_can_end(s);
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) ok = grammar_state_accept_bytes(t, text + i, 1) == 0;
    int bytes = ok && grammar_state_can_end(t);
    grammar_state_destroy(&s);
    grammar_state_destroy(&t);
    if (whole != bytes) fail_msg("'%s': whole %d, byte by byte %d", text, whole, bytes);
    return whole;
}

typedef struct accept_case {
    const char *schema;
    const char *const *good, *const *bad;
} accept_case_t;

static void run_cases(const accept_case_t *c, size_t n) {
    for (size_t i = 0; i < n; i++) {
        grammar_t *g = compile(c[i].schema);
        for (const char *const *t = c[i].good; *t; t++)
            if (!matches(g, *t)) fail_msg("schema %s\n  should accept: %s", c[i].schema, *t);
        for (const char *const *t = c[i].bad; *t; t++)
            if (matches(g, *t)) fail_msg("schema %s\n  should reject: %s", c[i].schema, *t);
        grammar_destroy(&g);
    }
}

#define TEXTS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NCASES(a) (sizeof(a) / sizeof(a[0]))

/* ---- acceptance through the grammar engine ---- */

static void test_objects(void **st) {
    const accept_case_t c[] = {
        {"{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"},"
         "\"email\":{\"type\":\"string\"}},\"required\":[\"name\"]}",
         TEXTS("{\"name\":\"a\"}", "{\"name\": \"a\", \"age\": 3}", "{\"name\":\"a\",\"email\":\"x\"}",
               "{\"name\":\"a\",\"age\":-1,\"email\":\"x@y\"}", "{\n  \"name\": \"Bob\",\n  \"age\": 42\n}",
               "{ \"name\" : \"a\" }"),
         TEXTS("{}", "{\"age\":3}", "{\"name\":\"a\",\"extra\":1}", "{\"age\":3,\"name\":\"a\"}", "{\"name\":1}",
               "{\"name\":\"a\",\"age\":1.5}", "{\"name\":\"a\",}", "{\"name\":\"a\" \"age\":1}",
               "{\"name\":\"a\",\"name\":\"b\"}", "{\"name\":\"a\"", "{  \"name\":\"a\"}")},
        /* optional properties before and after the first required one */
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"},"
         "\"c\":{\"type\":\"integer\"},\"d\":{\"type\":\"integer\"}},\"required\":[\"b\",\"d\"]}",
         TEXTS("{\"b\":1,\"d\":2}", "{\"a\":0,\"b\":1,\"d\":2}", "{\"a\":0,\"b\":1,\"c\":3,\"d\":2}",
               "{\"b\":1,\"c\":3,\"d\":2}"),
         TEXTS("{\"a\":1}", "{\"a\":1,\"b\":1}", "{\"b\":1}", "{,\"b\":1,\"d\":2}", "{\"d\":2,\"b\":1}",
               "{\"b\":1,\"d\":2,\"c\":3}")},
        /* all optional: any subset in order, commas right, the empty object */
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"},"
         "\"c\":{\"type\":\"boolean\"}}}",
         TEXTS("{}", "{ }", "{\"a\":1}", "{\"b\":\"x\"}", "{\"c\":true}", "{\"a\":1,\"c\":false}",
               "{\"b\":\"x\",\"c\":true}", "{\"a\":1,\"b\":\"x\",\"c\":true}", "{\"a\":1,\"b\":\"x\"}"),
         TEXTS("{\"c\":true,\"a\":1}", "{\"a\":1,}", "{,\"a\":1}", "{\"a\":1,\"a\":1}", "{\"d\":1}", "{\"a\":1 \"b\":\"x\"}",
               "{\"b\":1}")},
        /* nested objects */
        {"{\"type\":\"object\",\"properties\":{\"p\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"number\"},"
         "\"y\":{\"type\":\"number\"}},\"required\":[\"x\",\"y\"]},\"tag\":{\"type\":\"string\"}},\"required\":[\"p\"]}",
         TEXTS("{\"p\":{\"x\":1,\"y\":2.5e3}}", "{\"p\": {\"x\": -0.5, \"y\": 0}, \"tag\": \"t\"}",
               "{\n  \"p\": {\n    \"x\": 1,\n    \"y\": 2\n  }\n}"),
         TEXTS("{\"p\":{\"x\":1}}", "{\"p\":{\"y\":1,\"x\":2}}", "{\"p\":{}}", "{\"tag\":\"t\"}", "{\"p\":1}")},
        /* {"type":"object"} alone: any object */
        {"{\"type\":\"object\"}", TEXTS("{}", "{\"a\":1}", "{\"a\":{\"b\":[1,null]},\"c\":\"d\"}"),
         TEXTS("[]", "{\"a\"}", "{\"a\":1,}", "1")},
        /* an empty property list: only {} */
        {"{\"type\":\"object\",\"properties\":{}}", TEXTS("{}", "{ }"), TEXTS("{\"a\":1}")},
    };
    (void)st;
    run_cases(c, NCASES(c));
}

static void test_additional(void **st) {
    const accept_case_t c[] = {
        {"{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"}},\"required\":[\"id\"],"
         "\"additionalProperties\":{\"type\":\"string\"}}",
         TEXTS("{\"id\":1}", "{\"id\":1,\"x\":\"y\"}", "{\"id\":1, \"x\":\"y\", \"z\":\"w\"}"),
         TEXTS("{\"id\":1,\"x\":2}", "{\"x\":\"y\"}", "{\"x\":\"y\",\"id\":1}", "{\"id\":1,}")},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"additionalProperties\":true}",
         TEXTS("{}", "{\"a\":1}", "{\"a\":1,\"b\":[1,{\"c\":null}]}", "{\"b\":true}", "{\"b\":true,\"c\":\"d\"}"),
         TEXTS("{\"a\":1,}", "{,}", "{\"a\"}")},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"additionalProperties\":false}",
         TEXTS("{}", "{\"a\":1}"), TEXTS("{\"b\":1}", "{\"a\":1,\"b\":1}")},
        {"{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}",
         TEXTS("{}", "{\"x\":1}", "{\"x\":1,\"y\":2}"), TEXTS("{\"x\":\"1\"}", "{\"x\":1,}")},
    };
    (void)st;
    run_cases(c, NCASES(c));
}

static void test_arrays(void **st) {
    const accept_case_t c[] = {
        {"{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":3}",
         TEXTS("[1]", "[1,2,3]", "[ 1, 2 ]", "[\n  1,\n  2\n]"),
         TEXTS("[]", "[1,2,3,4]", "[\"a\"]", "[1,]", "[,1]", "[1 2]")},
        {"{\"type\":\"array\",\"items\":{\"type\":\"string\"}}", TEXTS("[]", "[\"a\",\"b\"]", "[ ]"),
         TEXTS("[1]", "[\"a\",]", "{}")},
        {"{\"type\":\"array\",\"items\":{\"type\":\"boolean\"},\"minItems\":2}", TEXTS("[true,false]", "[true,true,true,false]"),
         TEXTS("[]", "[true]")},
        {"{\"type\":\"array\",\"maxItems\":0}", TEXTS("[]"), TEXTS("[1]")},
        {"{\"type\":\"array\",\"items\":{\"type\":\"null\"},\"minItems\":2,\"maxItems\":2}", TEXTS("[null,null]"),
         TEXTS("[null]", "[null,null,null]")},
        /* tuples */
        {"{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}", TEXTS("[\"a\",1]", "[ \"a\", 1 ]"),
         TEXTS("[\"a\"]", "[1,\"a\"]", "[\"a\",1,2]", "[]")},
        {"{\"type\":\"array\",\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"}],\"items\":{\"type\":\"boolean\"},"
         "\"maxItems\":3}",
         TEXTS("[\"a\",1]", "[\"a\",1,true]"), TEXTS("[\"a\",1,true,false]", "[\"a\",1,2]")},
        {"{\"items\":[{\"const\":1}],\"additionalItems\":{\"type\":\"string\"}}", TEXTS("[1]", "[1,\"x\",\"y\"]"),
         TEXTS("[2]", "[1,2]")},
        /* arrays of objects */
        {"{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"k\":{\"type\":\"string\"}},\"required\":[\"k\"]},"
         "\"maxItems\":2}",
         TEXTS("[]", "[{\"k\":\"a\"}]", "[{\"k\":\"a\"}, {\"k\":\"b\"}]"), TEXTS("[{}]", "[{\"k\":\"a\"},{\"k\":\"b\"},{\"k\":\"c\"}]")},
    };
    (void)st;
    run_cases(c, NCASES(c));
}

static void test_enums(void **st) {
    const accept_case_t c[] = {
        {"{\"enum\":[\"a\\\"b\",\"back\\\\slash\",\"\xc3\xa9\xf0\x9f\x98\x80\",\"tab\\t\",null,42,{\"k\":[1]},\"\\u0001\"]}",
         TEXTS("\"a\\\"b\"", "\"back\\\\slash\"", "\"\xc3\xa9\xf0\x9f\x98\x80\"", "\"tab\\t\"", "null", "42", "{\"k\":[1]}",
               "\"\\u0001\""),
         TEXTS("\"a\"", "\"a\\\"b", "\"\xc3\xa9\"", "\"tab\t\"", "43", "\"null\"", "{\"k\":[2]}", "\"back\\slash\"")},
        {"{\"const\":\"x\\\"y\"}", TEXTS("\"x\\\"y\""), TEXTS("\"x\"", "\"x\\\"y\\\"\"")},
        /* reals as written, not as 17 digits */
        {"{\"enum\":[0.1,2.5,-1e-7,1.0]}", TEXTS("0.1", "2.5", "-1e-7", "1.0"), TEXTS("0.10000000000000001", "1")},
        {"{\"type\":\"string\",\"enum\":[\"red\",\"green\",1]}", TEXTS("\"red\"", "\"green\""), TEXTS("1", "\"blue\"")},
        {"{\"type\":\"object\",\"properties\":{\"color\":{\"enum\":[\"red\",\"green\"]},\"n\":{\"const\":3}},"
         "\"required\":[\"color\",\"n\"]}",
         TEXTS("{\"color\":\"red\",\"n\":3}", "{\"color\": \"green\", \"n\": 3}"),
         TEXTS("{\"color\":\"blue\",\"n\":3}", "{\"color\":\"red\",\"n\":4}")},
    };
    (void)st;
    run_cases(c, NCASES(c));
}

static void test_any_of_and_types(void **st) {
    const accept_case_t c[] = {
        {"{\"anyOf\":[{\"type\":\"string\",\"maxLength\":2},{\"type\":\"null\"}]}", TEXTS("\"ab\"", "null", "\"\""),
         TEXTS("\"abc\"", "1", "nul")},
        {"{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},"
         "\"required\":[\"a\"]}]}",
         TEXTS("1", "{\"a\":1}"), TEXTS("\"1\"", "{}")},
        {"{\"type\":[\"string\",\"null\"]}", TEXTS("\"x\"", "null"), TEXTS("1", "true")},
        {"{\"type\":[\"integer\",\"boolean\"]}", TEXTS("1", "false"), TEXTS("1.5", "null")},
        {"{\"allOf\":[{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},\"required\":[\"a\"]},"
         "{\"$ref\":\"#/$defs/b\"}],\"$defs\":{\"b\":{\"properties\":{\"b\":{\"type\":\"integer\"}},\"required\":[\"b\"]}}}",
         TEXTS("{\"a\":\"x\",\"b\":1}"), TEXTS("{\"a\":\"x\"}", "{\"b\":1}", "{\"b\":1,\"a\":\"x\"}")},
        {"{}", TEXTS("{\"a\":[1,2,{\"b\":null}],\"c\":\"d\"}", "1", "\"x\"", "true", "[]", "-0.5e-3", "null"),
         TEXTS("tru", "{,}", "[1,]", "01", "'a'")},
        {"true", TEXTS("[1]", "{}"), TEXTS("x")},
    };
    (void)st;
    run_cases(c, NCASES(c));
}

static void test_recursive_ref(void **st) {
    const accept_case_t c[] = {
        {"{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"value\":{\"type\":\"integer\"},"
         "\"children\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"value\"]}},"
         "\"$ref\":\"#/$defs/node\"}",
         TEXTS("{\"value\":1}", "{\"value\":1,\"children\":[]}",
               "{\"value\":1,\"children\":[{\"value\":2,\"children\":[{\"value\":3}]},{\"value\":4}]}"),
         TEXTS("{\"value\":1,\"children\":[{}]}", "{\"children\":[]}", "{\"value\":1,\"children\":[1]}")},
        /* "#" itself, and the draft-7 "definitions" */
        {"{\"type\":\"object\",\"properties\":{\"next\":{\"anyOf\":[{\"$ref\":\"#\"},{\"type\":\"null\"}]}},"
         "\"required\":[\"next\"]}",
         TEXTS("{\"next\":null}", "{\"next\":{\"next\":{\"next\":null}}}"), TEXTS("{\"next\":{}}", "{}")},
        {"{\"definitions\":{\"s\":{\"type\":\"string\"}},\"type\":\"array\",\"items\":{\"$ref\":\"#/definitions/s\"}}",
         TEXTS("[\"a\"]"), TEXTS("[1]")},
    };
    (void)st;
    run_cases(c, NCASES(c));
}

static void test_strings_and_numbers(void **st) {
    const accept_case_t c[] = {
        {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":4}",
         TEXTS("\"ab\"", "\"abcd\"", "\"a\\nb\"", "\"\xc3\xa9\xc3\xa9\"", "\"\\u00e9x\""),
         TEXTS("\"a\"", "\"abcde\"", "\"\"", "\"a\nb\"", "\"ab", "ab")},
        {"{\"type\":\"string\"}", TEXTS("\"\"", "\"a \\\" \\\\ \\/ \\b\\f\\n\\r\\t \\u12aB\"", "\"\xe2\x82\xac\""),
         TEXTS("\"\t\"", "\"\\x\"", "\"\\u12\"", "\"a\"\"")},
        {"{\"type\":\"integer\"}", TEXTS("0", "-5", "123", "-0"), TEXTS("1.5", "1e3", "\"1\"", "01", "+1", "")},
        {"{\"type\":\"number\"}", TEXTS("1.5", "-0.25", "1e3", "2E-7", "0", "7"), TEXTS(".5", "1.", "+1", "01", "1e", "--1")},
        {"{\"type\":\"boolean\"}", TEXTS("true", "false"), TEXTS("True", "1")},
        {"{\"type\":\"null\"}", TEXTS("null"), TEXTS("nil")},
    };
    (void)st;
    run_cases(c, NCASES(c));
}

/* ---- random valid documents: a random walk over the schema, in tern's layout ---- */

#include <jansson.h>

typedef struct walk {
    json_t *doc;
    uint64_t rng;
    char *out;
    size_t n, cap;
} walk_t;

static uint64_t walk_rand(walk_t *w) {   /* splitmix64 */
    uint64_t z = (w->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static int pick(walk_t *w, int n) { return (int)(walk_rand(w) % (uint64_t)n); }

static void put(walk_t *w, const char *s) {
    size_t k = strlen(s);
    if (w->n + k + 1 > w->cap) {
        w->cap = (w->n + k + 1) * 2;
        w->out = realloc(w->out, w->cap);
        assert_non_null(w->out);
    }
    memcpy(w->out + w->n, s, k + 1);
    w->n += k;
}

static void put_ws(walk_t *w) {
    static const char *const ws[] = {"", "", " ", "\n", "\n  ", "\n\t\t"};
    put(w, ws[pick(w, 6)]);
}

static void put_json(walk_t *w, const json_t *v) {
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(t);
    put(w, t);
    free(t);
}

static void gen(walk_t *w, json_t *s, int depth);

static void gen_string(walk_t *w, long lo, long hi) {
    static const char *const ch[] = {"a", "Z", "0", " ", "\\\"", "\\\\", "\\n", "\\u00e9", "\xc3\xa9", "\xf0\x9f\x98\x80", "/", "\\/"};
    long n = lo + pick(w, (int)((hi < 0 ? lo + 6 : hi) - lo + 1));
    put(w, "\"");
    for (long i = 0; i < n; i++) put(w, ch[pick(w, 12)]);
    put(w, "\"");
}

static void gen_number(walk_t *w, int integer) {
    static const char *const ints[] = {"0", "-0", "7", "-12", "123456789012345"};
    static const char *const frac[] = {".5", ".0001", "", "e3", "E-2", ".25e+10"};
    put(w, ints[pick(w, 5)]);
    if (!integer) put(w, frac[pick(w, 6)]);
}

static long num_kw(json_t *s, const char *k, long def) {
    json_t *v = json_object_get(s, k);
    return v ? (long)json_number_value(v) : def;
}

static void gen_object(walk_t *w, json_t *s, int depth) {
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    json_t *extra = json_object_get(s, "additionalProperties"), *v, *r;
    const char *k;
    size_t i;
    int n = 0;
    if (!props && !extra) extra = json_true();
    put(w, "{");
    put_ws(w);
    json_object_foreach(props, k, v) {
        int required = 0;
        json_array_foreach(req, i, r) required |= !strcmp(json_string_value(r), k);
        if (!required && (depth > 3 || pick(w, 2))) continue;
        if (n++) put(w, ","), put_ws(w);
        json_t *ks = json_string(k);
        put_json(w, ks);
        json_decref(ks);
        put_ws(w);
        put(w, ":");
        put_ws(w);
        gen(w, v, depth + 1);
        put_ws(w);
    }
    for (int x = extra && !json_is_false(extra) && depth < 3 ? pick(w, 3) : 0; x > 0; x--) {
        if (n++) put(w, ","), put_ws(w);
        gen_string(w, 0, 3);
        put_ws(w);
        put(w, ":");
        put_ws(w);
        gen(w, extra, depth + 1);
        put_ws(w);
    }
    put(w, "}");
}

static void gen_array(walk_t *w, json_t *s, int depth) {
    json_t *items = json_object_get(s, "items"), *tuple = json_object_get(s, "prefixItems"), *v;
    size_t i;
    if (json_is_array(items)) tuple = items, items = json_object_get(s, "additionalItems");
    long k = (long)json_array_size(tuple), lo = num_kw(s, "minItems", 0), hi = num_kw(s, "maxItems", -1);
    if (!items && !tuple) items = json_true();
    long more = lo > k ? lo - k : 0, top = hi < 0 ? more + 3 : hi - k;
    if (items && !json_is_false(items) && depth < 3) more += pick(w, (int)(top - more + 1));
    if (!items || json_is_false(items)) more = 0;
    put(w, "[");
    put_ws(w);
    json_array_foreach(tuple, i, v) {
        if (i) put(w, ","), put_ws(w);
        gen(w, v, depth + 1);
        put_ws(w);
    }
    for (long j = 0; j < more; j++) {
        if (j || k) put(w, ","), put_ws(w);
        gen(w, items, depth + 1);
        put_ws(w);
    }
    put(w, "]");
}

static json_t *walk_ref(walk_t *w, const char *ref) {
    json_t *t = w->doc;
    char seg[128];
    for (const char *p = ref + 1; t && *p == '/';) {
        size_t n = strcspn(p + 1, "/");
        snprintf(seg, sizeof seg, "%.*s", (int)n, p + 1);
        t = json_object_get(t, seg);
        p += n + 1;
    }
    assert_non_null(t);
    return t;
}

/* appends a random document s accepts (for the keywords the converter supports): a value with
 * no whitespace around it (containers put theirs after each key and value) */
static void gen(walk_t *w, json_t *s, int depth) {
    json_t *v, *t = json_object_get(s, "type");
    static const char *const any[] = {"string", "number", "integer", "boolean", "null", "object", "array"};
    const char *type = NULL;
    if ((v = json_object_get(s, "$ref"))) return gen(w, walk_ref(w, json_string_value(v)), depth);
    if ((v = json_object_get(s, "anyOf")) || (v = json_object_get(s, "oneOf"))) {
        /* deep in a recursive schema the last alternative is the way out (tests write it so) */
        size_t n = json_array_size(v);
        return gen(w, json_array_get(v, depth > 3 ? n - 1 : (size_t)pick(w, (int)n)), depth);
    }
    if ((v = json_object_get(s, "const"))) put_json(w, v);
    else if ((v = json_object_get(s, "enum"))) put_json(w, json_array_get(v, (size_t)pick(w, (int)json_array_size(v))));
    else {
        if (json_is_string(t)) type = json_string_value(t);
        else if (json_is_array(t)) type = json_string_value(json_array_get(t, (size_t)pick(w, (int)json_array_size(t))));
        else if (json_object_get(s, "properties") || json_object_get(s, "additionalProperties")) type = "object";
        else if (json_object_get(s, "items") || json_object_get(s, "prefixItems")) type = "array";
        else type = any[pick(w, depth > 2 ? 5 : 7)];
        if (!strcmp(type, "string")) gen_string(w, num_kw(s, "minLength", 0), num_kw(s, "maxLength", -1));
        else if (!strcmp(type, "number") || !strcmp(type, "integer")) gen_number(w, type[0] == 'i');
        else if (!strcmp(type, "boolean")) put(w, pick(w, 2) ? "true" : "false");
        else if (!strcmp(type, "null")) put(w, "null");
        else if (!strcmp(type, "object")) gen_object(w, s, depth);
        else gen_array(w, s, depth);
    }
}

static void test_random_documents(void **st) {
    const char *schemas[] = {
        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"},\"c\":{\"type\":\"string\"},"
        "\"d\":{\"type\":\"boolean\"},\"e\":{\"type\":\"null\"}},\"required\":[\"c\"]}",
        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":[\"string\",\"null\"]},"
        "\"c\":{\"type\":\"number\"},\"d\":{\"enum\":[\"x\",\"y\\\"\",3]}}}",
        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}},"
        "\"additionalProperties\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"maxItems\":2}}",
        "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"}},\"required\":[\"id\"],\"additionalProperties\":true}",
        "{\"type\":\"array\",\"items\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":3},\"minItems\":1,\"maxItems\":4}",
        "{\"type\":\"array\",\"prefixItems\":[{\"type\":\"boolean\"},{\"const\":\"k\"}],\"items\":{\"type\":\"number\"},\"maxItems\":5}",
        "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},\"kids\":{\"type\":\"array\","
        "\"items\":{\"$ref\":\"#/$defs/node\"}},\"next\":{\"anyOf\":[{\"$ref\":\"#/$defs/node\"},{\"type\":\"null\"}]}},"
        "\"required\":[\"v\"]}},\"$ref\":\"#/$defs/node\"}",
        "{}",
        "{\"type\":\"object\"}",
        "{\"anyOf\":[{\"type\":\"object\",\"properties\":{\"k\":{\"type\":\"string\",\"maxLength\":2}},\"required\":[\"k\"]},"
        "{\"type\":\"array\",\"items\":{\"type\":\"integer\"}},{\"type\":\"null\"}]}",
    };
    (void)st;
    for (size_t i = 0; i < NCASES(schemas); i++) {
        grammar_t *g = compile(schemas[i]);
        walk_t w = {.doc = json_loads(schemas[i], 0, NULL), .rng = 1234567 + i};
        assert_non_null(w.doc);
        for (int k = 0; k < 300; k++) {
            w.n = 0;
            put(&w, "");
            gen(&w, w.doc, 0);
            if (!matches(g, w.out)) fail_msg("schema %s\n  should accept: %s", schemas[i], w.out);
        }
        free(w.out);
        json_decref(w.doc);
        grammar_destroy(&g);
    }
}

/* ---- output shape ---- */

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++) n++;
    return n;
}

static void test_shape(void **st) {
    char err[256];
    (void)st;
    char *g = conv("{\"type\":\"integer\"}", err, sizeof err);
    assert_non_null(g);
    assert_non_null(strstr(g, "root ::= integer\n"));
    assert_null(strstr(g, "string ::="));   /* primitives only when used */
    assert_null(strstr(g, "value ::="));
    free(g);

    g = conv("{}", err, sizeof err);
    assert_non_null(g);
    assert_non_null(strstr(g, "value ::="));
    assert_non_null(strstr(g, "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n"));
    free(g);

    /* one rule per $ref target, however often referenced */
    g = conv("{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"l\":{\"$ref\":\"#/$defs/n\"},\"r\":{\"$ref\":\"#/$defs/n\"}}}},"
             "\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"}}",
             err, sizeof err);
    assert_non_null(g);
    assert_int_equal(count(g, "\nn ::="), 1);
    free(g);

    /* literals: quotes, backslashes, controls and non-ASCII escaped for GBNF */
    g = conv("{\"const\":\"a\\\"b\\\\c\xc3\xa9\xf0\x9f\x98\x80\"}", err, sizeof err);
    assert_non_null(g);
    assert_non_null(strstr(g, "root ::= \"\\\"a\\\\\\\"b\\\\\\\\c\\u00E9\\U0001F600\\\"\"\n"));
    free(g);

    /* annotations change nothing; format is not enforced */
    char *a = conv("{\"type\":\"string\"}", err, sizeof err);
    g = conv("{\"type\":\"string\",\"title\":\"t\",\"description\":\"d\",\"format\":\"email\",\"default\":\"x\","
             "\"examples\":[\"y\"],\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$id\":\"x\","
             "\"$comment\":\"c\",\"readOnly\":true,\"deprecated\":false}",
             err, sizeof err);
    assert_non_null(a);
    assert_non_null(g);
    assert_string_equal(a, g);
    free(a);
    free(g);

    /* required first, then optional: a linear chain, no duplicated alternatives */
    g = conv("{\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}},\"required\":[\"a\"]}", err, sizeof err);
    assert_non_null(g);
    assert_non_null(strstr(g, "root ::= \"{\" ws \"\\\"a\\\"\" ws \":\" ws integer ws ( \",\" ws \"\\\"b\\\"\" ws \":\" ws integer ws )? \"}\"\n"));
    free(g);

    /* bounded repetition, not expanded here */
    g = conv("{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":5},\"minItems\":2,\"maxItems\":4}", err, sizeof err);
    assert_non_null(g);
    assert_non_null(strstr(g, "char{0,5}"));
    assert_non_null(strstr(g, "){1,3}"));
    free(g);
}

/* ---- refusals ---- */

static void test_refusals(void **st) {
    (void)st;
    refused("{\"type\":\"string\",\"pattern\":\"a+\"}", "#: ", "'pattern'");
    refused("{\"properties\":{\"age\":{\"type\":\"integer\",\"minimum\":0}}}", "#/properties/age: ", "'minimum'");
    refused("{\"type\":\"number\",\"maximum\":1}", "#: ", "'maximum'");
    refused("{\"type\":\"number\",\"exclusiveMinimum\":1}", "#: ", "'exclusiveMinimum'");
    refused("{\"type\":\"number\",\"exclusiveMaximum\":1}", "#: ", "'exclusiveMaximum'");
    refused("{\"type\":\"number\",\"multipleOf\":2}", "#: ", "'multipleOf'");
    refused("{\"type\":\"array\",\"items\":{\"uniqueItems\":true}}", "#/items: ", "'uniqueItems'");
    refused("{\"type\":\"array\",\"contains\":{}}", "#: ", "'contains'");
    refused("{\"type\":\"object\",\"patternProperties\":{\"^a\":{}}}", "#: ", "'patternProperties'");
    refused("{\"type\":\"object\",\"propertyNames\":{}}", "#: ", "'propertyNames'");
    refused("{\"if\":{},\"then\":{}}", "#: ", "'if'");
    refused("{\"properties\":{\"x\":{\"not\":{}}}}", "#/properties/x: ", "'not'");
    refused("{\"dependentRequired\":{}}", "#: ", "'dependentRequired'");
    refused("{\"type\":\"object\",\"minProperties\":1}", "#: ", "'minProperties'");
    refused("{\"type\":\"object\",\"maxProperties\":1}", "#: ", "'maxProperties'");
    refused("{\"properties\":{\"a/b~c\":{\"pattern\":\"x\"}}}", "#/properties/a~1b~0c: ", "'pattern'");
    refused("{\"anyOf\":[{\"type\":\"string\"},{\"minimum\":1}]}", "#/anyOf/1: ", "'minimum'");
    refused("{\"prefixItems\":[{},{\"maximum\":1}]}", "#/prefixItems/1: ", "'maximum'");
    refused("{\"$defs\":{\"a\":{\"pattern\":\"x\"}},\"$ref\":\"#/$defs/a\"}", "#/$defs/a: ", "'pattern'");
    refused("{\"$ref\":\"http://example.com/s.json\"}", "#: ", "'$ref'");
    refused("{\"$ref\":\"other.json#/a\"}", "#: ", "'$ref'");
    refused("{\"$ref\":\"#/$defs/nope\"}", "#: ", "not found");
    refused("{\"type\":\"strnig\"}", "#: ", "unknown type 'strnig'");
    refused("{\"type\":[]}", "#: ", "'type'");
    refused("{\"type\":[\"string\",5]}", "#: ", "'type'");
    refused("42", "#: ", "must be an object or a boolean");
    refused("\"x\"", "#: ", "must be an object or a boolean");
    refused("false", "#: ", "accepts nothing");
    refused("{\"properties\":{\"a\":false}}", "#/properties/a: ", "accepts nothing");
    refused("[1,", "#: ", "invalid JSON");
    refused("", "#: ", "invalid JSON");
    refused("{\"a\":1,\"a\":2}", "#: ", "invalid JSON");
    refused("{\"anyOf\":[{\"$ref\":\"#\"},{\"type\":\"null\"}]}", "#: ", "left recursion");
    refused("{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/b\"},\"b\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}", "#/$defs/",
            "left recursion");
    refused("{\"allOf\":[{\"type\":\"string\"}]}", "#/allOf/0: ", "'allOf'");
    refused("{\"allOf\":[{\"properties\":{\"a\":{}}},{\"anyOf\":[{}]}]}", "#/allOf/1: ", "'anyOf'");
    refused("{\"allOf\":[{\"properties\":{\"a\":{\"type\":\"string\"}}},{\"properties\":{\"a\":{\"type\":\"integer\"}}}]}", "#/allOf/1: ",
            "property 'a'");
    refused("{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", "#: ", "'minItems'");
    refused("{\"type\":\"array\",\"minItems\":-1}", "#: ", "'minItems'");
    refused("{\"type\":\"array\",\"maxItems\":1.5}", "#: ", "'maxItems'");
    refused("{\"type\":\"string\",\"minLength\":3,\"maxLength\":2}", "#: ", "'minLength'");
    refused("{\"type\":\"string\",\"maxLength\":100000}", "#: ", "'maxLength'");
    refused("{\"prefixItems\":[{},{}],\"maxItems\":1}", "#: ", "'maxItems'");
    refused("{\"prefixItems\":[{}],\"minItems\":2}", "#: ", "'minItems'");
    refused("{\"enum\":[]}", "#: ", "'enum'");
    refused("{\"enum\":1}", "#: ", "'enum'");
    refused("{\"type\":\"string\",\"enum\":[1,2]}", "#: ", "'enum'");
    refused("{\"anyOf\":[]}", "#: ", "'anyOf'");
    refused("{\"oneOf\":{}}", "#: ", "'oneOf'");
    refused("{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "#: ", "'b'");
    refused("{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":\"a\"}", "#: ", "'required'");
    refused("{\"properties\":[]}", "#: ", "'properties'");
    refused("{\"$ref\":\"#/$defs/a\",\"type\":\"string\",\"$defs\":{\"a\":{}}}", "#: ", "'type'");
    refused("{\"anyOf\":[{}],\"properties\":{}}", "#: ", "'properties'");
}

/* hostile schemas end with a clear error, quickly */
static void test_limits(void **st) {
    (void)st;
    size_t cap = 2 << 20, n = 0;
    char *s = malloc(cap);
    assert_non_null(s);

    for (int i = 0; i < 100; i++) n += (size_t)snprintf(s + n, cap - n, "{\"items\":");   /* depth */
    n += (size_t)snprintf(s + n, cap - n, "{}");
    for (int i = 0; i < 100; i++) s[n++] = '}';
    s[n] = 0;
    refused(s, "#/items/items/", "deeper than");

    n = (size_t)snprintf(s, cap, "{\"enum\":[");   /* enum size */
    for (int i = 0; i < 2000; i++) n += (size_t)snprintf(s + n, cap - n, "%s%d", i ? "," : "", i);
    snprintf(s + n, cap - n, "]}");
    refused(s, "#: ", "'enum'");

    n = (size_t)snprintf(s, cap, "{\"const\":\"");   /* output size: each emoji 4 bytes in, 10 out */
    for (int i = 0; i < 120000; i++) n += (size_t)snprintf(s + n, cap - n, "\xf0\x9f\x98\x80");
    snprintf(s + n, cap - n, "\"}");
    refused(s, "#: ", "larger than");

    memset(s, ' ', (1 << 20) + 1);   /* input size */
    s[(1 << 20) + 1] = 0;
    refused(s, "#: ", "larger than");

    n = (size_t)snprintf(s, cap, "{\"properties\":{");   /* rule count */
    for (int i = 0; i < 1500; i++) n += (size_t)snprintf(s + n, cap - n, "%s\"p%d\":{\"type\":\"array\"}", i ? "," : "", i);
    snprintf(s + n, cap - n, "}}");
    refused(s, "#", "rules");

    n = (size_t)snprintf(s, cap, "{\"anyOf\":[true");   /* work: 120001 schemas in one list */
    for (int i = 0; i < 120000; i++) n += (size_t)snprintf(s + n, cap - n, ",{}");
    snprintf(s + n, cap - n, "]}");
    refused(s, "#", "too complex");

    /* allOf fan-out through $defs (8^8 paths): each part merges once */
    n = (size_t)snprintf(s, cap, "{\"$defs\":{\"a0\":{\"properties\":{\"x\":{\"type\":\"integer\"}}}");
    for (int i = 1; i <= 8; i++) {
        n += (size_t)snprintf(s + n, cap - n, ",\"a%d\":{\"allOf\":[", i);
        for (int j = 0; j < 8; j++) n += (size_t)snprintf(s + n, cap - n, "%s{\"$ref\":\"#/$defs/a%d\"}", j ? "," : "", i - 1);
        n += (size_t)snprintf(s + n, cap - n, "]}");
    }
    snprintf(s + n, cap - n, "},\"$ref\":\"#/$defs/a8\"}");
    grammar_t *g = compile(s);
    assert_true(matches(g, "{\"x\":1}"));
    assert_false(matches(g, "{\"x\":\"1\"}"));
    grammar_destroy(&g);

    /* a cycle of allOf parts is one merge */
    g = compile("{\"$defs\":{\"a\":{\"allOf\":[{\"$ref\":\"#/$defs/a\"},{\"properties\":{\"y\":{\"type\":\"null\"}}}]}},"
                "\"$ref\":\"#/$defs/a\"}");
    assert_true(matches(g, "{\"y\":null}"));
    assert_true(matches(g, "{}"));
    grammar_destroy(&g);
    free(s);
}

/* a big, legal schema converts and compiles */
static void test_big_ok(void **st) {
    (void)st;
    size_t cap = 1 << 20, n = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    n = (size_t)snprintf(s, cap, "{\"type\":\"object\",\"properties\":{");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(s + n, cap - n, "%s\"p%d\":{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"maxItems\":%d}",
                              i ? "," : "", i, i % 7 + 1);
    snprintf(s + n, cap - n, "}}");
    grammar_t *g = compile(s);
    assert_true(matches(g, "{\"p0\":[1],\"p5\":[1,2],\"p199\":[]}"));
    assert_false(matches(g, "{\"p0\":[1,2]}"));
    grammar_destroy(&g);
    free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objects),   cmocka_unit_test(test_additional),
        cmocka_unit_test(test_arrays),    cmocka_unit_test(test_enums),
        cmocka_unit_test(test_any_of_and_types), cmocka_unit_test(test_recursive_ref),
        cmocka_unit_test(test_strings_and_numbers), cmocka_unit_test(test_shape),
        cmocka_unit_test(test_refusals),  cmocka_unit_test(test_limits),
        cmocka_unit_test(test_big_ok),    cmocka_unit_test(test_random_documents),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    printf("%d passed, %d failed\n", (int)(sizeof tests / sizeof tests[0]) - failed, failed);
    return failed ? 1 : 0;
}
