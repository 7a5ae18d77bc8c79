/* fuzz_toolfmt: arbitrary model output through the native tool-call parsers (toolfmt_parse) and
 * the server's reply built from them (server_tools_reply, plain and streamed). The first byte
 * picks the format (TOOLFMT_*, generic included), the rest is the generated text. Checked: the
 * calls that come back are well-formed (a valid name, an object of arguments), the content is
 * no longer than the text, and the reply is a message with a finish reason. The text is also
 * read in chunks (sizes drawn from the text itself) through toolstream, as a stream sends it:
 * the reader's message equals the plain reply, and for ASCII text (no UTF-8 to split) so do
 * the streamed deltas put together. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "coordinator/server_tools.h"
#include "coordinator/toolfmt.h"
#include "coordinator/toolstream.h"
#include "core/strbuf.h"

/* d's pieces added to content / the calls' arguments, as a client does; -1 when out of order */
static int merge(json_t *d, strbuf_t *content, strbuf_t *args, int *ncalls) {
    json_t *v = json_object_get(d, "content"), *c;
    size_t i;
    if (v) strbuf_add(content, json_string_value(v), json_string_length(v));
    json_array_foreach(json_object_get(d, "tool_calls"), i, c) {
        json_int_t k = json_integer_value(json_object_get(c, "index"));
        json_t *a = json_object_get(json_object_get(c, "function"), "arguments");
        if (json_object_get(c, "id") ? k != *ncalls : k < 0 || k >= *ncalls) return -1;
        if (json_object_get(c, "id")) ++*ncalls;
        strbuf_add(&args[k], json_string_value(a), json_string_length(a));
    }
    return 0;
}

/* text[0..n) streamed in chunks == the plain reply */
static void streamed(int fmt, const char *text, size_t n) {
    const char *fin = NULL, *fin2 = NULL;
    json_t *plain = server_tools_reply(fmt, text, n, "call_x", 0, "length", &fin);
    toolstream_t s;
    toolstream_init(&s, fmt);
    strbuf_t content = {0}, args[TOOLFMT_MAX_CALLS];
    memset(args, 0, sizeof args);
    int ncalls = 0, ascii = 1;
    for (size_t i = 0; i < n; i++) ascii &= (unsigned char)text[i] < 0x80;
    for (size_t at = 0, k; at <= n; at += k) {
        k = at < n ? 1 + (unsigned char)text[at] % 7 : 1;
        if (k > n - at) k = n - at;
        if ((at < n ? toolstream_feed(&s, text + at, k) : toolstream_finish(&s)) < 0) abort();
        json_t *d = server_tools_delta(&s, "call_x");
        if (!d || merge(d, &content, args, &ncalls) < 0) abort();
        json_decref(d);
        if (at == n) break;
    }
    json_t *m = server_tools_message(&s, "call_x", "length", &fin2);
    if (!plain || !m || !json_equal(m, plain) || strcmp(fin, fin2)) abort();
    json_t *calls = json_object_get(plain, "tool_calls"), *pc = json_object_get(plain, "content");
    if (ascii) {
        const char *want = json_is_string(pc) ? json_string_value(pc) : "";   /* may hold NULs */
        if (json_string_length(pc) != content.n || memcmp(want, content.p ? content.p : "", content.n)) abort();
        if ((int)json_array_size(calls) != ncalls) abort();
        for (int k = 0; k < ncalls; k++) {
            json_t *a = json_object_get(json_object_get(json_array_get(calls, k), "function"), "arguments");
            if (json_string_length(a) != args[k].n || memcmp(json_string_value(a), args[k].p ? args[k].p : "", args[k].n))
                abort();
        }
    }
    for (int k = 0; k < TOOLFMT_MAX_CALLS; k++) strbuf_free(&args[k]);
    strbuf_free(&content);
    toolstream_free(&s);
    json_decref(m);
    json_decref(plain);
}

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
    streamed(fmt, text, n);
    return 0;
}
