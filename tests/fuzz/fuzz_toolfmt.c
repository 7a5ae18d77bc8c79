/* fuzz_toolfmt: arbitrary model output through the native tool-call parsers (toolfmt_parse) and
 * the server's reply built from them (server_tools_reply, plain and streamed). The first byte
 * picks the format (TOOLFMT_*, generic included), the rest is the generated text. Checked: the
 * calls that come back are well-formed (a valid name, an object of arguments), the content is
 * no longer than the text, and the reply is a message with a finish reason. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "coordinator/server_tools.h"
#include "coordinator/toolfmt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int fmt = data[0] % 4;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    char *content = NULL;
    size_t cl = 0;
    json_t *calls = toolfmt_parse(fmt, text, n, &content, &cl), *c;
    if (cl > n || (content == NULL) != (cl == 0) || (content && content[cl] != 0)) abort();   /* may hold NULs */
    if (calls && (!json_is_array(calls) || json_array_size(calls) < 1 || json_array_size(calls) > TOOLFMT_MAX_CALLS))
        abort();
    size_t i;
    json_array_foreach(calls, i, c) {
        json_t *nm = json_object_get(c, "name");
        if (!json_is_string(nm) || !server_tools_name_ok(json_string_value(nm), json_string_length(nm)) ||
            !json_is_object(json_object_get(c, "arguments")))
            abort();
    }
    json_decref(calls);
    free(content);
    for (int delta = 0; delta < 2; delta++) {
        const char *fin = NULL;
        json_t *m = server_tools_reply(fmt, text, n, "call_x", delta, "length", &fin);
        if (!m || !fin || (!delta && !json_is_string(json_object_get(m, "role")))) abort();
        json_decref(m);
    }
    return 0;
}
