/* fuzz_json_schema: arbitrary bytes as a JSON Schema. The converter must return a grammar or a
 * one-line reason that names a JSON pointer ("#..."); a grammar it returns must compile and its
 * start state must exist. Seeds: any JSON Schema documents (the schemas of test_json_schema.c). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "coordinator/grammar.h"
#include "coordinator/json_schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512];
    err[0] = 0;
    char *g = json_schema_to_gbnf((const char *)data, size, err, sizeof err);
    if (!g) {
        if (err[0] != '#' || !memchr(err, 0, sizeof err)) abort();
        return 0;
    }
    grammar_t *gr = grammar_parse(g, strlen(g), NULL, err, sizeof err);
    if (!gr) abort();
    grammar_state_t *s = grammar_state_new(gr);
    if (!s) abort();
    grammar_state_destroy(&s);
    grammar_destroy(&gr);
    free(g);
    return 0;
}
