/* fuzz_jinja: arbitrary bytes as a chat template through jinja_parse and, when it parses,
 * jinja_render over a small conversation (messages with tool calls, tools, bos/eos, a
 * namespace-friendly set of values) under tight limits. A refusal must come with a message; a
 * rendering must be NUL-terminated and within max_output; nothing may hang (the step limit) or
 * grow without bound (the output and allocation limits). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "coordinator/jinja.h"

static json_t *vars;

static void setup(void) {
    json_error_t je;
    vars = json_loads(
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \" Hi é 中 \"},"
        " {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"call_1\", \"type\": \"function\","
        " \"function\": {\"name\": \"f\", \"arguments\": {\"x\": 1.5, \"y\": [true, null]}}}]},"
        " {\"role\": \"tool\", \"tool_call_id\": \"call_1\", \"content\": \"42\"}],"
        " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\"}}}],"
        " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"n\": -7, \"f\": 0.25}",
        0, &je);
    if (!vars) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!vars) setup();
    jinja_opts_t o;
    jinja_opts_default(&o);
    o.max_output = 1 << 16;
    o.max_alloc = 1 << 22;
    o.max_steps = 200000;
    o.max_depth = 48;
    o.now = 0;
    o.trim_blocks = size > 0 && (data[0] & 1);
    o.lstrip_blocks = size > 0 && (data[0] & 2);
    char err[256];
    jinja_t *t = jinja_parse((const char *)data, size, &o, err, sizeof err);
    if (!t) {
        if (!err[0] || !memchr(err, 0, sizeof err)) abort();
        return 0;
    }
    size_t len = 0;
    char *out = jinja_render(t, vars, &len, NULL, err, sizeof err);
    if (out) {
        if (len > o.max_output || out[len] != 0) abort();
        free(out);
    } else if (!memchr(err, 0, sizeof err)) {
        abort();
    }
    jinja_destroy(&t);
    return 0;
}
