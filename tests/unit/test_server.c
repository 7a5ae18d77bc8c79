/* test_server: the HTTP server's model-free parts — request JSON parsing and validation for
 * every route (types, ranges, prompt shapes, messages, n (streamed too), stop, logprobs, tools / tool_choice and the tool reply parsed back), the OpenAI error body, the
 * Anthropic Messages bodies (blocks, system forms, tool_use / tool_result, tools, bad bodies) and its
 * error body, the stop-string matcher (held-back text, which stop string was found, stops split across pieces, a randomized check against
 * a plain search over the whole text), the Prometheus rendering and UTF-8 sanitizing and
 * character counting; the /slots and /props slot object, and a server without a model over a
 * socket: the web UI page (== the source file, headers, 304, HEAD), the key (not on the page,
 * on /props and /slots), --no-webui (404), --no-slots (501), /props and /slots 503 while loading,
 * /v1/messages' x-api-key and its errors in Anthropic's shape; a Messages reply and stream built from a job. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "coordinator/toolstream.h"
#include "coordinator/server_anthropic.h"
#include "coordinator/server_int.h"
#include "coordinator/server_metrics.h"
#include "coordinator/server_req.h"
#include "coordinator/grammar.h"
#include "coordinator/server_stop.h"
#include "coordinator/server_tools.h"
#include "coordinator/webui.h"
#include "core/err.h"
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static sampler_params_t defaults(void) {
    sampler_params_t sp;
    sampler_params_default(&sp);
    sp.temp = 0.8f;
    sp.top_k = 40;
    sp.seed = 1234;
    return sp;
}

/* parses body as kind; returns the parse result, e filled on failure */
static int parse(server_req_t *r, int kind, const char *body, server_err_t *e) {
    sampler_params_t sp = defaults();
    memset(e, 0, sizeof *e);
    return server_req_parse(r, kind, body, strlen(body), &sp, e);
}

/* expects a 400 naming param (NULL: any) */
static void expect_bad(int kind, const char *body, const char *param, const char *code) {
    server_req_t r;
    server_err_t e;
    int rc = parse(&r, kind, body, &e);
    if (rc >= 0) {
        server_req_free(&r);
        fail_msg("accepted a bad request: %s", body);
    }
    if (e.status != 400) fail_msg("status %d (want 400) for %s", e.status, body);
    if (param && strcmp(e.param, param) != 0) fail_msg("param '%s' (want '%s') for %s: %s", e.param, param, body, e.msg);
    if (code && (!e.code || strcmp(e.code, code) != 0))
        fail_msg("code '%s' (want '%s') for %s", e.code ? e.code : "(null)", code, body);
    assert_true(e.msg[0] != 0);
}

/* expects a 400 naming bad[i][1] for each body head + bad[i][0] + "}" */
static void expect_bad_fields(int kind, const char *head, const char *const (*bad)[2], size_t n) {
    char body[1024];
    for (size_t i = 0; i < n; i++) {
        int len = snprintf(body, sizeof body, "%s%s}", head, bad[i][0]);
        assert_true(len > 0 && (size_t)len < sizeof body);
        expect_bad(kind, body, bad[i][1], NULL);
    }
}

/* buf = head, n items (item: a printf format given the index i, which it may leave out) ","
 * apart, tail: a list one past a limit */
static void list_body(char *buf, size_t cap, const char *head, const char *item, int n, const char *tail) {
    size_t at = (size_t)snprintf(buf, cap, "%s", head);
    for (int i = 0; i < n && at < cap; i++) {
        if (i) at += (size_t)snprintf(buf + at, cap - at, ",");
        if (at < cap) at += (size_t)snprintf(buf + at, cap - at, item, i);
    }
    if (at < cap) at += (size_t)snprintf(buf + at, cap - at, "%s", tail);
    assert_true(at < cap);
}

/* tools / tool_choice: the grammar and system message are set; each error names its field;
 * assistant tool_calls and tool messages are rendered into the conversation */
static void test_tools_fields(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
#define TOOL(n) "{\"type\":\"function\",\"function\":{\"name\":\"" n "\",\"parameters\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"integer\"}},\"required\":[\"x\"]}}}"
#define U "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
    assert_int_equal(parse(&r, SERVER_REQ_CHAT, "{" U ",\"tools\":[" TOOL("f") "," TOOL("g") "]}", &e), 0);
    assert_int_equal(r.tools, SERVER_TOOLS_AUTO);
    assert_non_null(r.grammar);
    assert_non_null(strstr(r.grammar, "response"));
    assert_int_equal(r.n_msgs, 2);   /* the tools' system message in front */
    assert_string_equal(r.msgs[0].role, "system");
    assert_non_null(strstr(r.msgs[0].content, "- g"));
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                                                "{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[" TOOL("f") "],"
                                                "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
                                                "\"parallel_tool_calls\":false}", &e), 0);
    assert_int_equal(r.tools, SERVER_TOOLS_NAMED);
    assert_int_equal(r.n_msgs, 2);   /* merged into the system message */
    assert_true(strncmp(r.msgs[0].content, "Be brief.\n\n", 11) == 0);
    assert_null(strstr(r.grammar, "response"));
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_CHAT, "{" U ",\"tools\":[" TOOL("f") "],\"tool_choice\":\"none\"}", &e), 0);
    assert_int_equal(r.tools, SERVER_TOOLS_NONE);
    assert_null(r.grammar);
    assert_int_equal(r.n_msgs, 1);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_CHAT, "{" U ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a-b_9\"}}],"
                                                "\"tool_choice\":\"required\"}", &e), 0);   /* no parameters: any object */
    assert_int_equal(r.tools, SERVER_TOOLS_REQUIRED);
    server_req_free(&r);
    /* a conversation: an assistant call (content null) and its result */
    assert_int_equal(parse(&r, SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
                                                "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
                                                "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}}]},"
                                                "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"2\"}]}", &e), 0);
    assert_string_equal(r.msgs[1].content, "{\"tool_call\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}");
    assert_string_equal(r.msgs[2].role, "tool");
    assert_string_equal(r.tool_ids[2], "c1");
    assert_string_equal(r.msgs[2].content, "2");
    server_req_free(&r);
    /* several calls of one message: the parallel form, after the message's own text */
    assert_int_equal(parse(&r, SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
                                                "{\"role\":\"assistant\",\"content\":\"ok\",\"tool_calls\":["
                                                "{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},"
                                                "{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"[1]\"}}]}]}", &e), 0);
    assert_string_equal(r.msgs[1].content, "ok\n{\"tool_calls\":[{\"name\":\"f\",\"arguments\":{}},{\"name\":\"g\",\"arguments\":[1]}]}");
    server_req_free(&r);
    const char *P = "tools[0].function.parameters";
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":{}}", "tools", NULL);
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":[5]}", "tools[0]", NULL);
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]}", "tools[0]", NULL);
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"\"}}]}", "tools[0]", NULL);
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
               "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}]}", "tools[0]", NULL);   /* 65 */
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":[]}}]}", "tools[0]", NULL);
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":7}}]}", "tools[0]", NULL);
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
               "{\"type\":\"string\",\"pattern\":\"a\"}}}]}", P, NULL);
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":[" TOOL("f") "," TOOL("f") "]}", "tools[1]", NULL);
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":[" TOOL("f") "],\"tool_choice\":\"sometimes\"}", "tool_choice", NULL);
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":[" TOOL("f") "],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}}", "tool_choice", NULL);
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tool_choice\":\"required\"}", "tool_choice", NULL);
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":[" TOOL("f") "],\"parallel_tool_calls\":1}", "parallel_tool_calls", NULL);
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":[" TOOL("f") "],\"response_format\":{\"type\":\"json_object\"}}", "response_format", NULL);
    expect_bad(SERVER_REQ_CHAT, "{" U ",\"tools\":[" TOOL("f") "],\"grammar\":\"root ::= \\\"a\\\"\"}", "grammar", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"c\",\"content\":null}]}", "messages", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", "messages", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[]}]}", "messages", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"name\":\"a b\"}}]}]}", "messages", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":{}}]}", "messages", NULL);
    char big[8192];   /* 65 tools */
    list_body(big, sizeof big, "{" U ",\"tools\":[", "{\"type\":\"function\",\"function\":{\"name\":\"t%d\"}}", 65, "]}");
    expect_bad(SERVER_REQ_CHAT, big, "tools", NULL);
#undef TOOL
#undef U
}

/* the generated text parsed back: a call, a response, a text cut short */
static void test_tools_reply(void **state) {
    (void)state;
    const char *fin;
    const char *call = "{\"tool_call\": {\"name\": \"f\", \"arguments\": {\"x\": 1}}}";
    json_t *m = server_tools_reply(0, call, strlen(call), "call_1", 0, "stop", &fin);
    assert_string_equal(fin, "tool_calls");
    assert_true(json_is_null(json_object_get(m, "content")));
    json_t *c = json_array_get(json_object_get(m, "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "id")), "call_1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(c, "function"), "arguments")), "{\"x\":1}");
    json_decref(m);
    m = server_tools_reply(0, call, strlen(call), "call_1", 1, "stop", &fin);   /* a streamed delta */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(m, "tool_calls"), 0), "index")), 0);
    assert_null(json_object_get(m, "role"));
    json_decref(m);
    m = server_tools_reply(0, "{\"response\":\"hi\"}", 17, "c", 0, "length", &fin);
    assert_string_equal(fin, "stop");
    assert_string_equal(json_string_value(json_object_get(m, "content")), "hi");
    json_decref(m);
    m = server_tools_reply(0, "{\"tool_call\":{\"na", 17, "c", 0, "length", &fin);
    assert_string_equal(fin, "length");
    assert_string_equal(json_string_value(json_object_get(m, "content")), "{\"tool_call\":{\"na");
    json_decref(m);
}

static void test_completion_fields(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    const char *body = "{\"model\":\"x\",\"prompt\":\"Hello\",\"max_tokens\":7,\"temperature\":0.5,\"top_p\":0.9,"
                       "\"top_k\":5,\"min_p\":0.1,\"repeat_penalty\":1.1,\"seed\":42,\"stream\":true,"
                       "\"stream_options\":{\"include_usage\":true},\"stop\":[\"\\n\",\"END\"],\"n\":1,\"ignore_eos\":true,"
                       "\"some_unknown_field\":{\"deep\":[1,2,3]}}";
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, body, &e), 0);
    assert_string_equal(r.prompt, "Hello");
    assert_null(r.ids);
    assert_int_equal(r.max_tokens, 7);
    assert_float_equal(r.sp.temp, 0.5f, 1e-6);
    assert_float_equal(r.sp.top_p, 0.9f, 1e-6);
    assert_int_equal(r.sp.top_k, 5);
    assert_float_equal(r.sp.min_p, 0.1f, 1e-6);
    assert_float_equal(r.sp.repeat_penalty, 1.1f, 1e-6);
    assert_int_equal(r.sp.seed, 42);
    assert_int_equal(r.seed_set, 1);
    assert_int_equal(r.stream, 1);
    assert_int_equal(r.include_usage, 1);
    assert_int_equal(r.ignore_eos, 1);
    assert_int_equal(r.n_stop, 2);
    assert_string_equal(r.stop[0], "\n");
    assert_string_equal(r.stop[1], "END");
    server_req_free(&r);
}

static void test_defaults_kept(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"seed\":-1,\"stop\":null}", &e), 0);
    sampler_params_t d = defaults();
    assert_int_equal(r.max_tokens, -1);
    assert_float_equal(r.sp.temp, d.temp, 0);
    assert_int_equal(r.sp.top_k, d.top_k);
    assert_int_equal(r.sp.seed, d.seed);   /* -1: the server's choice */
    assert_int_equal(r.seed_set, 0);
    assert_int_equal(r.stream, 0);
    assert_int_equal(r.n_stop, 0);
    server_req_free(&r);
    /* max_completion_tokens is the newer name; a single stop string; an empty stop is ignored */
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION,
                           "{\"prompt\":\"a\",\"max_completion_tokens\":3,\"stop\":\"x\",\"temperature\":0}", &e), 0);
    assert_int_equal(r.max_tokens, 3);
    assert_int_equal(r.n_stop, 1);
    assert_float_equal(r.sp.temp, 0, 0);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"stop\":[\"\",\"y\"]}", &e), 0);
    assert_int_equal(r.n_stop, 1);
    assert_string_equal(r.stop[0], "y");
    server_req_free(&r);
}

static void test_prompt_shapes(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":[1,2,300]}", &e), 0);
    assert_int_equal(r.n_ids, 3);
    assert_int_equal(r.ids[2], 300);
    assert_null(r.prompt);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":[\"only one\"]}", &e), 0);
    assert_string_equal(r.prompt, "only one");
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":[[5,6]]}", &e), 0);
    assert_int_equal(r.n_ids, 2);
    assert_int_equal(r.ids[0], 5);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":\"\"}", &e), 0);   /* BOS only */
    assert_string_equal(r.prompt, "");
    server_req_free(&r);
    expect_bad(SERVER_REQ_COMPLETION, "{}", "prompt", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":null}", "prompt", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":12}", "prompt", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":[]}", "prompt", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":[1,-2]}", "prompt", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":[1,2.5]}", "prompt", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":[1,\"a\"]}", "prompt", NULL);
    /* several prompts: the first in prompt/ids, the rest in more[] */
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":[\"a\",[7,8,9],\"c\"],\"n\":2}", &e), 0);
    assert_string_equal(r.prompt, "a");
    assert_int_equal(r.n_more, 2);
    assert_int_equal(r.more[0].n_ids, 3);
    assert_int_equal(r.more[0].ids[2], 9);
    assert_null(r.more[0].text);
    assert_string_equal(r.more[1].text, "c");
    assert_int_equal(r.n, 2);
    server_req_free(&r);
    /* several choices may stream (one stream, chunks by choice index), usage included */
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION,
                           "{\"prompt\":[\"a\",\"b\"],\"n\":2,\"stream\":true,\"stream_options\":{\"include_usage\":true}}", &e),
                     0);
    assert_int_equal(r.n * (1 + r.n_more), 4);
    assert_int_equal(r.stream, 1);
    assert_int_equal(r.include_usage, 1);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":3,\"stream\":true}", &e),
                     0);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.stream, 1);
    server_req_free(&r);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":[\"a\",5]}", "prompt", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":[\"a\",[]]}", "prompt", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]}", "prompt", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":[\"a\",\"b\",\"c\"],\"n\":6}", "n", NULL);   /* 18 choices */
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":[1,99999999999]}", "prompt", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\\u0000b\"}", NULL, NULL);
}

/* /v1/embeddings bodies: input as a string, ids, strings, or lists of ids (the rest in more[]),
 * llama.cpp's "content" for it, encoding_format float | base64, dimensions; each bad field is a
 * 400 naming it */
static void test_embd_bodies(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    assert_int_equal(parse(&r, SERVER_REQ_EMBEDDINGS, "{\"input\":\"hello\"}", &e), 0);
    assert_string_equal(r.prompt, "hello");
    assert_int_equal(r.base64, 0);
    assert_int_equal(r.dimensions, -1);
    assert_int_equal(r.n * (1 + r.n_more), 1);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_EMBEDDINGS, "{\"input\":[4,5,6],\"encoding_format\":\"base64\",\"dimensions\":256}", &e), 0);
    assert_int_equal(r.n_ids, 3);
    assert_int_equal(r.base64, 1);
    assert_int_equal(r.dimensions, 256);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_EMBEDDINGS, "{\"input\":[\"a\",[7,8],\"c\"],\"encoding_format\":\"float\"}", &e), 0);
    assert_string_equal(r.prompt, "a");
    assert_int_equal(r.n_more, 2);
    assert_int_equal(r.more[0].n_ids, 2);
    assert_string_equal(r.more[1].text, "c");
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_EMBEDDINGS, "{\"content\":[[1],[2]]}", &e), 0);
    assert_int_equal(r.n_ids, 1);
    assert_int_equal(r.n_more, 1);
    server_req_free(&r);
    expect_bad(SERVER_REQ_EMBEDDINGS, "{}", "input", NULL);
    expect_bad(SERVER_REQ_EMBEDDINGS, "{\"input\":7}", "input", NULL);
    expect_bad(SERVER_REQ_EMBEDDINGS, "{\"input\":[]}", "input", NULL);
    expect_bad(SERVER_REQ_EMBEDDINGS, "{\"input\":[\"a\",{}]}", "input", NULL);
    expect_bad(SERVER_REQ_EMBEDDINGS, "{\"input\":[1,-1]}", "input", NULL);
    expect_bad(SERVER_REQ_EMBEDDINGS, "{\"input\":\"a\",\"encoding_format\":\"int8\"}", "encoding_format", NULL);
    expect_bad(SERVER_REQ_EMBEDDINGS, "{\"input\":\"a\",\"encoding_format\":5}", "encoding_format", NULL);
    expect_bad(SERVER_REQ_EMBEDDINGS, "{\"input\":\"a\",\"dimensions\":0}", "dimensions", NULL);
    expect_bad(SERVER_REQ_EMBEDDINGS, "{\"input\":\"a\",\"dimensions\":\"x\"}", "dimensions", NULL);
    expect_bad(SERVER_REQ_EMBEDDINGS, "{\"input\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]}", "input", NULL);
    expect_bad(SERVER_REQ_EMBEDDINGS, "[1]", NULL, NULL);
}

static void test_chat_messages(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    const char *body = "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi \"},{\"type\":\"text\",\"text\":\"there\"}]},"
                       "{\"role\":\"assistant\",\"content\":null}],\"max_tokens\":4}";
    assert_int_equal(parse(&r, SERVER_REQ_CHAT, body, &e), 0);
    assert_int_equal(r.n_msgs, 3);
    assert_string_equal(r.msgs[0].role, "system");
    assert_string_equal(r.msgs[0].content, "Be brief.");
    assert_string_equal(r.msgs[1].content, "Hi there");
    assert_string_equal(r.msgs[2].role, "assistant");
    assert_string_equal(r.msgs[2].content, "");
    assert_int_equal(r.max_tokens, 4);
    server_req_free(&r);
    expect_bad(SERVER_REQ_CHAT, "{\"prompt\":\"x\"}", "messages", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[]}", "messages", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":{}}", "messages", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[\"hi\"]}", "messages", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"content\":\"hi\"}]}", "messages", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages", NULL);
    expect_bad(SERVER_REQ_CHAT,
               "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]}",
               "messages", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":7}]}", "messages", NULL);
}

static void test_bad_values(void **state) {
    (void)state;
    static const char *const bad[][2] = {
        {"\"n\":17", "n"},
        {"\"n\":0", "n"},
        {"\"n\":\"1\"", "n"},
        {"\"temperature\":\"hot\"", "temperature"},
        {"\"temperature\":-1", "temperature"},
        {"\"top_p\":1.5", "top_p"},
        {"\"min_p\":-0.1", "min_p"},
        {"\"top_k\":-3", "top_k"},
        {"\"top_k\":2.5", "top_k"},
        {"\"repeat_penalty\":0", "repeat_penalty"},
        {"\"max_tokens\":0", "max_tokens"},
        {"\"max_tokens\":-5", "max_tokens"},
        {"\"max_tokens\":1.5", "max_tokens"},
        {"\"max_tokens\":true", "max_tokens"},
        {"\"seed\":\"x\"", "seed"},
        {"\"stream\":\"yes\"", "stream"},
        {"\"stream_options\":3", "stream_options"},
        {"\"stop\":7", "stop"},
        {"\"stop\":[\"x\",1]", "stop"},
    };
    expect_bad_fields(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",", bad, sizeof bad / sizeof bad[0]);
    char big[4096];
    list_body(big, sizeof big, "{\"prompt\":\"a\",\"stop\":[", "\"s%d\"", SERVER_MAX_STOP + 1, "]}");
    expect_bad(SERVER_REQ_COMPLETION, big, "stop", NULL);
}

/* OpenAI's penalties and logit_bias (object and llama.cpp's pair list), and the structured-output
 * fields: "grammar" (GBNF, checked), "json_schema", response_format json_object / json_schema /
 * text; the bad ones are 400s naming their field */
static void test_sampling_extras(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION,
                           "{\"prompt\":\"a\",\"frequency_penalty\":0.5,\"presence_penalty\":-1.25,"
                           "\"logit_bias\":{\"15\":-100,\"7\":2.5}}", &e), 0);
    assert_true(r.sp.freq_penalty == 0.5f && r.sp.presence_penalty == -1.25f);
    assert_int_equal(r.sp.n_bias, 2);
    assert_true(r.sp.bias_id[0] == 15 && r.sp.bias[0] == -100.0f && r.sp.bias_id[1] == 7 && r.sp.bias[1] == 2.5f);
    assert_null(r.grammar);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"logit_bias\":[[3,1],[4,-2]]}", &e), 0);
    assert_true(r.sp.n_bias == 2 && r.sp.bias_id[1] == 4 && r.sp.bias[1] == -2.0f);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"grammar\":\"root ::= [a-z]+\"}", &e), 0);
    assert_string_equal(r.grammar, "root ::= [a-z]+");
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"grammar\":\"\"}", &e), 0);
    assert_null(r.grammar);   /* "": free text */
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                                "\"response_format\":{\"type\":\"json_object\"}}", &e), 0);
    assert_non_null(r.grammar);
    assert_string_equal(r.grammar, grammar_json_object_gbnf);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                                "\"response_format\":{\"type\":\"text\"}}", &e), 0);
    assert_null(r.grammar);
    server_req_free(&r);
    const char *schema = "{\"prompt\":\"a\",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\","
                         "\"schema\":{\"type\":\"object\",\"properties\":{\"k\":{\"enum\":[1,2]}},\"required\":[\"k\"]}}}}";
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, schema, &e), 0);
    assert_non_null(r.grammar);
    char gerr[256];
    grammar_t *g = grammar_parse(r.grammar, strlen(r.grammar), NULL, gerr, sizeof gerr);
    assert_non_null(g);
    grammar_state_t *st = grammar_state_new(g);
    assert_int_equal(grammar_state_accept_bytes(st, "{\"k\":2}", 7), 0);
    assert_true(grammar_state_done(st));
    grammar_state_destroy(&st);
    grammar_destroy(&g);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"json_schema\":{\"type\":\"boolean\"}}", &e), 0);
    assert_non_null(r.grammar);
    server_req_free(&r);
    static const char *const bad[][2] = {
        {"\"frequency_penalty\":\"x\"", "frequency_penalty"},
        {"\"presence_penalty\":1000", "presence_penalty"},
        {"\"logit_bias\":{\"x\":1}", "logit_bias"},
        {"\"logit_bias\":{\"-3\":1}", "logit_bias"},
        {"\"logit_bias\":{\"3\":101}", "logit_bias"},
        {"\"logit_bias\":{\"3\":\"1\"}", "logit_bias"},
        {"\"logit_bias\":[[3]]", "logit_bias"},
        {"\"logit_bias\":5", "logit_bias"},
        {"\"grammar\":\"root ::= undefined-rule\"", "grammar"},
        {"\"grammar\":\"root ::= root \\\"a\\\"\"", "grammar"},
        {"\"grammar\":[1]", "grammar"},
        {"\"json_schema\":{\"type\":\"string\",\"pattern\":\"x\"}", "json_schema"},
        {"\"json_schema\":7", "json_schema"},
        {"\"response_format\":{\"type\":\"yaml\"}", "response_format"},
        {"\"response_format\":\"json_object\"", "response_format"},
        {"\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{}}", "response_format"},
        {"\"grammar\":\"root ::= \\\"a\\\"\",\"response_format\":{\"type\":\"json_object\"}", "grammar"},
    };
    expect_bad_fields(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",", bad, sizeof bad / sizeof bad[0]);
    char big[8192];
    list_body(big, sizeof big, "{\"prompt\":\"a\",\"logit_bias\":{", "\"%d\":1", SAMPLER_BIAS_MAX + 1, "}}");
    expect_bad(SERVER_REQ_COMPLETION, big, "logit_bias", NULL);
}

/* llama.cpp's other samplers under its names, on both endpoints: the values land in sp (top_n_sigma
 * -1: off, a DRY window past the history: clamped), dry_sequence_breakers kept as strings; out of
 * range, wrong types and bad breaker lists are 400s naming their field; none given: defaults kept */
static void test_llama_samplers(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    static const char *const bodies[] = {
        "{\"prompt\":\"a\",", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"};
    static const int kinds[] = {SERVER_REQ_COMPLETION, SERVER_REQ_CHAT};
    char body[1024];
    for (int k = 0; k < 2; k++) {
        snprintf(body, sizeof body, "%s\"typical_p\":0.9,\"top_n_sigma\":1.5,\"xtc_probability\":0.25,"
                 "\"xtc_threshold\":0.2,\"dynatemp_range\":0.5,\"dynatemp_exponent\":2,\"mirostat\":2,"
                 "\"mirostat_tau\":4,\"mirostat_eta\":0.2,\"dry_multiplier\":0.8,\"dry_base\":1.5,"
                 "\"dry_allowed_length\":3,\"dry_penalty_last_n\":100000,\"dry_sequence_breakers\":[\"\\n\",\"##\"]}",
                 bodies[k]);
        assert_int_equal(parse(&r, kinds[k], body, &e), 0);
        assert_true(r.sp.typical_p == 0.9f && r.sp.top_n_sigma == 1.5f && r.sp.xtc_probability == 0.25f);
        assert_true(r.sp.xtc_threshold == 0.2f && r.sp.dynatemp_range == 0.5f && r.sp.dynatemp_exponent == 2.0f);
        assert_true(r.sp.mirostat == 2 && r.sp.mirostat_tau == 4.0f && r.sp.mirostat_eta == 0.2f);
        assert_true(r.sp.dry_multiplier == 0.8f && r.sp.dry_base == 1.5f && r.sp.dry_allowed_length == 3);
        assert_int_equal(r.sp.dry_penalty_last_n, SAMPLER_DRY_MAX);
        assert_int_equal(r.n_dry_breakers, 2);
        assert_string_equal(r.dry_breakers[0], "\n");
        assert_string_equal(r.dry_breakers[1], "##");
        server_req_free(&r);
        snprintf(body, sizeof body, "%s\"top_n_sigma\":-1}", bodies[k]);
        assert_int_equal(parse(&r, kinds[k], body, &e), 0);
        assert_true(r.sp.top_n_sigma == 0.0f);
        sampler_params_t d;
        sampler_params_default(&d);   /* not given: the defaults, all off */
        assert_true(r.sp.typical_p == d.typical_p && r.sp.mirostat == 0 && r.sp.dry_multiplier == 0.0f &&
                    r.sp.xtc_probability == 0.0f && r.sp.dynatemp_range == 0.0f && r.sp.dry_penalty_last_n == -1);
        assert_null(r.dry_breakers);
        server_req_free(&r);
        static const char *const bad[][2] = {
            {"\"typical_p\":1.5", "typical_p"}, {"\"typical_p\":\"x\"", "typical_p"},
            {"\"top_n_sigma\":-2", "top_n_sigma"}, {"\"xtc_probability\":2", "xtc_probability"},
            {"\"xtc_threshold\":-0.1", "xtc_threshold"}, {"\"dynatemp_range\":-1", "dynatemp_range"},
            {"\"dynatemp_exponent\":1000", "dynatemp_exponent"}, {"\"mirostat\":3", "mirostat"},
            {"\"mirostat\":1.5", "mirostat"}, {"\"mirostat_tau\":-1", "mirostat_tau"},
            {"\"mirostat_eta\":true", "mirostat_eta"}, {"\"dry_multiplier\":-0.5", "dry_multiplier"},
            {"\"dry_base\":1e9", "dry_base"}, {"\"dry_allowed_length\":-1", "dry_allowed_length"},
            {"\"dry_penalty_last_n\":-2", "dry_penalty_last_n"}, {"\"dry_sequence_breakers\":[]", "dry_sequence_breakers"},
            {"\"dry_sequence_breakers\":\"\\n\"", "dry_sequence_breakers"},
            {"\"dry_sequence_breakers\":[\"a\",3]", "dry_sequence_breakers"},
        };
        expect_bad_fields(kinds[k], bodies[k], bad, sizeof bad / sizeof bad[0]);
    }
    char big[2048];
    list_body(big, sizeof big, "{\"prompt\":\"a\",\"dry_sequence_breakers\":[", "\"x\"", SERVER_MAX_DRY_BREAKERS + 1, "]}");
    expect_bad(SERVER_REQ_COMPLETION, big, "dry_sequence_breakers", NULL);
}

static void test_bad_json(void **state) {
    (void)state;
    expect_bad(SERVER_REQ_COMPLETION, "", NULL, "invalid_json");
    expect_bad(SERVER_REQ_COMPLETION, "{", NULL, "invalid_json");
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\"} trailing", NULL, "invalid_json");
    expect_bad(SERVER_REQ_COMPLETION, "{'prompt':'a'}", NULL, "invalid_json");
    expect_bad(SERVER_REQ_CHAT, "[1,2]", NULL, "invalid_value");
    expect_bad(SERVER_REQ_CHAT, "\"just a string\"", NULL, NULL);   /* jansson: top level must be a container */
    /* bytes that are not UTF-8 inside a string */
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"\xff\xfe\"}", NULL, "invalid_json");
}

static void test_tokenize_bodies(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    assert_int_equal(parse(&r, SERVER_REQ_TOKENIZE, "{\"content\":\"hi\",\"add_special\":true,\"with_pieces\":true}", &e), 0);
    assert_string_equal(r.prompt, "hi");
    assert_int_equal(r.add_special, 1);
    assert_int_equal(r.with_pieces, 1);
    assert_int_equal(r.parse_special, 1);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_DETOKENIZE, "{\"tokens\":[]}", &e), 0);
    assert_int_equal(r.n_ids, 0);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_DETOKENIZE, "{\"tokens\":[9,8]}", &e), 0);
    assert_int_equal(r.n_ids, 2);
    assert_int_equal(r.ids[1], 8);
    server_req_free(&r);
    expect_bad(SERVER_REQ_TOKENIZE, "{}", "content", NULL);
    expect_bad(SERVER_REQ_TOKENIZE, "{\"content\":1}", "content", NULL);
    expect_bad(SERVER_REQ_TOKENIZE, "{\"content\":\"a\",\"add_special\":1}", "add_special", NULL);
    expect_bad(SERVER_REQ_DETOKENIZE, "{\"tokens\":\"1 2\"}", "tokens", NULL);
    expect_bad(SERVER_REQ_DETOKENIZE, "{\"tokens\":[1,-1]}", "tokens", NULL);
}

static void test_error_json(void **state) {
    (void)state;
    server_err_t e;
    server_err_set(&e, 400, "invalid_request_error", "invalid_value", "top_p", "'top_p' must be in [%d, %d]", 0, 1);
    char *txt = server_err_json(&e);
    assert_non_null(txt);
    json_t *o = json_loads(txt, 0, NULL);
    assert_non_null(o);
    json_t *err = json_object_get(o, "error");
    assert_true(json_is_object(err));
    assert_string_equal(json_string_value(json_object_get(err, "message")), "'top_p' must be in [0, 1]");
    assert_string_equal(json_string_value(json_object_get(err, "type")), "invalid_request_error");
    assert_string_equal(json_string_value(json_object_get(err, "param")), "top_p");
    assert_string_equal(json_string_value(json_object_get(err, "code")), "invalid_value");
    json_decref(o);
    free(txt);
    server_err_set(&e, 401, "authentication_error", NULL, NULL, "no key");
    txt = server_err_json(&e);
    o = json_loads(txt, 0, NULL);
    assert_true(json_is_null(json_object_get(json_object_get(o, "error"), "param")));
    assert_true(json_is_null(json_object_get(json_object_get(o, "error"), "code")));
    json_decref(o);
    free(txt);
}

/* ---- stop strings ---------------------------------------------------------------------- */

typedef struct feed_out {
    char buf[4096];
    size_t len;
} feed_out_t;

static int feed(server_stop_t *s, feed_out_t *o, const char *piece) {
    const char *p;
    size_t n;
    int rc = server_stop_feed(s, piece, strlen(piece), &p, &n);
    assert_true(rc >= 0);
    assert_true(o->len + n < sizeof o->buf);
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    o->buf[o->len] = 0;
    return rc;
}

static void flush(server_stop_t *s, feed_out_t *o) {
    const char *p;
    size_t n;
    server_stop_flush(s, &p, &n);
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    o->buf[o->len] = 0;
}

static void test_stop_split(void **state) {
    (void)state;
    char *stops[] = {"lo w", "XYZ"};
    server_stop_t s;
    feed_out_t o = {{0}, 0};
    server_stop_init(&s, stops, 2);
    assert_int_equal(feed(&s, &o, "Hel"), 0);
    assert_string_equal(o.buf, "He");        /* the final "l" could start "lo w": held */
    assert_int_equal(feed(&s, &o, "lo "), 0);
    assert_string_equal(o.buf, "Hel");       /* "lo " is a prefix of "lo w": held back */
    assert_int_equal(feed(&s, &o, "world"), 1);
    assert_string_equal(o.buf, "Hel");       /* stop found: nothing of it is released */
    flush(&s, &o);
    assert_string_equal(o.buf, "Hel");
    server_stop_free(&s);

    server_stop_init(&s, stops, 2);
    memset(&o, 0, sizeof o);
    assert_int_equal(feed(&s, &o, "ab X"), 0);
    assert_string_equal(o.buf, "ab ");
    assert_int_equal(feed(&s, &o, "Yq"), 0);  /* "XYq" is not "XYZ": released */
    assert_string_equal(o.buf, "ab XYq");
    assert_int_equal(feed(&s, &o, "XY"), 0);
    flush(&s, &o);                           /* generation ended: the held "XY" is text */
    assert_string_equal(o.buf, "ab XYqXY");
    server_stop_free(&s);

    /* no stop strings: everything at once; a stop at the very start gives nothing */
    server_stop_init(&s, NULL, 0);
    memset(&o, 0, sizeof o);
    assert_int_equal(feed(&s, &o, "lo w"), 0);
    assert_string_equal(o.buf, "lo w");
    server_stop_free(&s);
    server_stop_init(&s, stops, 2);
    memset(&o, 0, sizeof o);
    assert_int_equal(feed(&s, &o, "XYZ and more"), 1);
    assert_int_equal(o.len, 0);
    server_stop_free(&s);
}

static void test_stop_earliest(void **state) {
    (void)state;
    char *stops[] = {"cd", "bcdef"};
    server_stop_t s;
    feed_out_t o = {{0}, 0};
    server_stop_init(&s, stops, 2);
    assert_int_equal(feed(&s, &o, "abcdefg"), 1);
    assert_string_equal(o.buf, "a");   /* "bcdef" starts before "cd" */
    server_stop_free(&s);
}

/* llama.cpp's "samplers" on all three endpoints: an array of names (its aliases too) or a string
 * of letters (names with ';' too) sets the order; the default order as 0; not given, the
 * server's order stays; unknown names and letters skipped (llama-server's leniency); wrong
 * types, none known, too many: 400s naming 'samplers' */
static void test_sampler_order(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    static const char *const bodies[] = {"{\"prompt\":\"a\",", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],",
                                         "{\"prompt\":\"a\","};
    static const int kinds[] = {SERVER_REQ_COMPLETION, SERVER_REQ_CHAT, SERVER_REQ_NATIVE};
    static const char *const good[][2] = {
        {"[\"top_k\",\"temperature\"]", "kt"},  {"[\"temp\",\"top-k\",\"nucleus\",\"typical\"]", "tkpy"},
        {"\"xkt\"", "xkt"},                        {"\"min_p;temperature\"", "mt"},
        {"[\"dry\",\"dry\"]", "dd"},
        {"[\"penalties\",\"dry\",\"top_n_sigma\",\"top_k\",\"typ_p\",\"top_p\",\"min_p\",\"xtc\",\"temperature\"]",
         SAMPLER_ORDER_DEFAULT},
        {"null", SAMPLER_ORDER_DEFAULT},
        /* lenient as llama-server: unknown names and letters skipped (a warning), any case */
        {"[\"top_k\",\"foo\"]", "k"},          {"\"kz\"", "k"},
        {"[\"top k\",\"temperature\"]", "t"}, {"[\"top_k;temperature\",\"min_p\",\"infill\"]", "m"},
        {"[\"TOP_K\",\"Temp\"]", "kt"},      {"\"top_k;foo\"", "k"},
    };
    static const char *const bad[][2] = {
        {"[\"top_k\",3]", "entry 1"}, {"\"zq\"", "no known sampler"},
        {"{}", "array"}, {"[]", "is empty"}, {"\"\"", "no sampler"}, {"[\"infill\"]", "no known sampler"},
        {"[\"top k\"]", "no known sampler"}, {"[\"top_k;temperature\"]", "no known sampler"}, {"\";foo\"", "no known"},
        {"\"kkkkkkkkkkkkkkkkk\"", "more than 16"},
        {"[\"k\",\"k\",\"k\",\"k\",\"k\",\"k\",\"k\",\"k\",\"k\",\"k\",\"k\",\"k\",\"k\",\"k\",\"k\",\"k\",\"k\"]", "at most 16"},
    };
    char body[1024], l[SAMPLER_ORDER_MAX + 1];
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
            snprintf(body, sizeof body, "%s\"samplers\":%s}", bodies[k], good[i][0]);
            if (parse(&r, kinds[k], body, &e) < 0) fail_msg("%s: %s", body, e.msg);
            sampler_order_letters(&r.sp, l);
            if (strcmp(l, good[i][1])) fail_msg("%s: order %s, want %s", body, l, good[i][1]);
            assert_int_equal(r.sp.n_order == 0, !strcmp(good[i][1], SAMPLER_ORDER_DEFAULT));
            server_req_free(&r);
        }
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            snprintf(body, sizeof body, "%s\"samplers\":%s}", bodies[k], bad[i][0]);
            expect_bad(kinds[k], body, "samplers", NULL);
            parse(&r, kinds[k], body, &e);
            if (!strstr(e.msg, bad[i][1])) fail_msg("%s: '%s' lacks '%s'", body, e.msg, bad[i][1]);
        }
    }
    /* not given: the server's own order stays */
    sampler_params_t def = defaults();
    assert_int_equal(sampler_order_parse(&def, "tk", 1, NULL, 0), 0);
    snprintf(body, sizeof body, "%s\"max_tokens\":3}", bodies[0]);
    memset(&e, 0, sizeof e);
    assert_int_equal(server_req_parse(&r, SERVER_REQ_COMPLETION, body, strlen(body), &def, &e), 0);
    sampler_order_letters(&r.sp, l);
    assert_string_equal(l, "tk");
    server_req_free(&r);
}

/* llama.cpp's /completion body: every field it shares with /v1/completions lands where that
 * route's does; its own (n_predict, n_probs, mixed prompt, logit_bias pairs and false,
 * return_tokens, id_slot, samplers: the chain's order) are checked; each bad value is a 400 naming
 * its field */
static void test_native_fields(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    const char *body = "{\"prompt\":\"Hi\",\"n_predict\":9,\"temperature\":0.3,\"top_k\":7,\"top_p\":0.8,\"min_p\":0.2,"
                       "\"typical_p\":0.9,\"repeat_penalty\":1.2,\"repeat_last_n\":32,\"presence_penalty\":0.5,"
                       "\"frequency_penalty\":0.25,\"dry_multiplier\":0.8,\"xtc_probability\":0.5,\"mirostat\":2,"
                       "\"seed\":77,\"stop\":[\"\\n\\n\",\"###\"],\"stream\":true,\"cache_prompt\":false,\"n_keep\":4,"
                       "\"ignore_eos\":true,\"logit_bias\":[[15,1.5],[16,false]],\"n_probs\":3,\"id_slot\":1,"
                       "\"return_tokens\":true,\"samplers\":[\"top_k\",\"temperature\"],\"grammar\":\"root ::= \\\"a\\\"\"}";
    assert_int_equal(parse(&r, SERVER_REQ_NATIVE, body, &e), 0);
    assert_string_equal(r.prompt, "Hi");
    assert_int_equal(r.max_tokens, 9);
    assert_true(r.sp.n_order == 2 && r.sp.order[0] == 'k' && r.sp.order[1] == 't');   /* the order taken */
    assert_float_equal(r.sp.temp, 0.3f, 1e-6);
    assert_int_equal(r.sp.top_k, 7);
    assert_float_equal(r.sp.top_p, 0.8f, 1e-6);
    assert_float_equal(r.sp.min_p, 0.2f, 1e-6);
    assert_float_equal(r.sp.typical_p, 0.9f, 1e-6);
    assert_float_equal(r.sp.repeat_penalty, 1.2f, 1e-6);
    assert_int_equal(r.sp.repeat_last_n, 32);
    assert_float_equal(r.sp.presence_penalty, 0.5f, 1e-6);
    assert_float_equal(r.sp.freq_penalty, 0.25f, 1e-6);
    assert_float_equal(r.sp.dry_multiplier, 0.8f, 1e-6);
    assert_float_equal(r.sp.xtc_probability, 0.5f, 1e-6);
    assert_int_equal(r.sp.mirostat, 2);
    assert_int_equal(r.sp.seed, 77);
    assert_int_equal(r.n_stop, 2);
    assert_string_equal(r.stop[1], "###");
    assert_int_equal(r.stream, 1);
    assert_int_equal(r.cache_prompt, 0);
    assert_int_equal(r.n_keep, 4);
    assert_int_equal(r.ignore_eos, 1);
    assert_int_equal(r.sp.n_bias, 2);
    assert_int_equal(r.sp.bias_id[0], 15);
    assert_float_equal(r.sp.bias[0], 1.5f, 1e-6);
    assert_int_equal(r.sp.bias_id[1], 16);
    assert_true(r.sp.bias[1] < -1e29f);   /* false: banned */
    assert_int_equal(r.logprobs, 1);
    assert_int_equal(r.top_logprobs, 3);
    assert_int_equal(r.sp.logprobs, 1);
    assert_int_equal(r.sp.top_logprobs, 3);
    assert_int_equal(r.id_slot, 1);
    assert_int_equal(r.return_tokens, 1);
    assert_non_null(r.grammar);
    server_req_free(&r);

    /* defaults: n_predict -1, no probabilities, any slot, no tokens */
    assert_int_equal(parse(&r, SERVER_REQ_NATIVE, "{\"prompt\":\"x\",\"n_probs\":0}", &e), 0);
    assert_int_equal(r.max_tokens, -1);
    assert_int_equal(r.logprobs, 0);
    assert_int_equal(r.id_slot, -1);
    assert_int_equal(r.return_tokens, 0);
    assert_int_equal(r.cache_prompt, 1);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_NATIVE, "{\"prompt\":\"x\",\"n_predict\":-1,\"samplers\":\"kt\"}", &e), 0);
    assert_int_equal(r.max_tokens, -1);
    assert_true(r.sp.n_order == 2 && r.sp.order[0] == 'k' && r.sp.order[1] == 't');
    server_req_free(&r);

    /* prompt shapes: ids; a mixed list in order (runs of ids kept together); several prompts */
    assert_int_equal(parse(&r, SERVER_REQ_NATIVE, "{\"prompt\":[1,2,3]}", &e), 0);
    assert_int_equal(r.n_ids, 3);
    assert_int_equal(r.n_parts, 0);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_NATIVE, "{\"prompt\":[5,6,\"mid\",7,\"end\"]}", &e), 0);
    assert_null(r.ids);
    assert_int_equal(r.n_parts, 4);
    assert_int_equal(r.parts[0].n_ids, 2);
    assert_int_equal(r.parts[0].ids[1], 6);
    assert_string_equal(r.parts[1].text, "mid");
    assert_int_equal(r.parts[2].n_ids, 1);
    assert_int_equal(r.parts[2].ids[0], 7);
    assert_string_equal(r.parts[3].text, "end");
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_NATIVE, "{\"prompt\":[\"a\",\"b\"]}", &e), 0);
    assert_string_equal(r.prompt, "a");
    assert_int_equal(r.n_more, 1);
    server_req_free(&r);
    /* OpenAI's "logprobs" is not /completion's: ignored there */
    assert_int_equal(parse(&r, SERVER_REQ_NATIVE, "{\"prompt\":\"x\",\"logprobs\":3}", &e), 0);
    assert_int_equal(r.logprobs, 0);
    server_req_free(&r);

    expect_bad(SERVER_REQ_NATIVE, "{\"n_predict\":3}", "prompt", NULL);
    expect_bad(SERVER_REQ_NATIVE, "{\"prompt\":[1,\"a\",-2]}", "prompt", NULL);
    expect_bad(SERVER_REQ_NATIVE, "{\"prompt\":[1,\"a\",{}]}", "prompt", NULL);
    static const char *const bad_native[][2] = {
        {"\"n_predict\":0", "n_predict"},
        {"\"n_predict\":-2", "n_predict"},
        {"\"n_predict\":\"5\"", "n_predict"},
        {"\"n_probs\":-1", "n_probs"},
        {"\"n_probs\":21", "n_probs"},
        {"\"n_probs\":1.5", "n_probs"},
        {"\"id_slot\":-2", "id_slot"},
        {"\"id_slot\":\"0\"", "id_slot"},
        {"\"return_tokens\":1", "return_tokens"},
        {"\"samplers\":[1]", "samplers"},
        {"\"samplers\":{}", "samplers"},
        {"\"logit_bias\":[[1,true]]", "logit_bias"},
        {"\"logit_bias\":[[1]]", "logit_bias"},
        {"\"logit_bias\":[[-1,2]]", "logit_bias"},
        {"\"temperature\":-1", "temperature"},
        {"\"top_k\":1.5", "top_k"},
        {"\"top_p\":2", "top_p"},
        {"\"min_p\":-0.1", "min_p"},
        {"\"typical_p\":1.5", "typical_p"},
        {"\"repeat_penalty\":0", "repeat_penalty"},
        {"\"repeat_last_n\":-1", "repeat_last_n"},
        {"\"presence_penalty\":\"a\"", "presence_penalty"},
        {"\"frequency_penalty\":101", "frequency_penalty"},
        {"\"mirostat\":3", "mirostat"},
        {"\"seed\":\"1\"", "seed"},
        {"\"stop\":[1]", "stop"},
        {"\"stream\":\"yes\"", "stream"},
        {"\"cache_prompt\":0", "cache_prompt"},
        {"\"n_keep\":-3", "n_keep"},
        {"\"ignore_eos\":1", "ignore_eos"},
        {"\"grammar\":\"root ::= (\"", "grammar"},
    };
    expect_bad_fields(SERVER_REQ_NATIVE, "{\"prompt\":\"x\",", bad_native, sizeof bad_native / sizeof bad_native[0]);
    expect_bad(SERVER_REQ_NATIVE, "{\"prompt\":\"x\",\"json_schema\":3}", "json_schema", NULL);

    /* /apply-template: messages only */
    assert_int_equal(parse(&r, SERVER_REQ_TEMPLATE, "{\"messages\":[{\"role\":\"user\",\"content\":\"hey\"}]}", &e), 0);
    assert_int_equal(r.n_msgs, 1);
    assert_string_equal(r.msgs[0].content, "hey");
    server_req_free(&r);
    expect_bad(SERVER_REQ_TEMPLATE, "{\"messages\":[]}", "messages", NULL);
    expect_bad(SERVER_REQ_TEMPLATE, "{\"prompt\":\"x\"}", "messages", NULL);
}

/* the stop matcher says which stop string ended the text (/completion's stopping_word) */
static void test_stop_which(void **state) {
    (void)state;
    char *stops[] = {"zz", "cd", "bcdef"};
    server_stop_t s;
    feed_out_t o = {{0}, 0};
    server_stop_init(&s, stops, 3);
    assert_int_equal(feed(&s, &o, "abcdefg"), 1);
    assert_int_equal(s.which, 2);   /* "bcdef" starts first */
    server_stop_free(&s);
    server_stop_init(&s, stops, 3);
    assert_int_equal(feed(&s, &o, "xxc"), 0);
    assert_int_equal(feed(&s, &o, "dzz"), 1);
    assert_int_equal(s.which, 1);
    server_stop_free(&s);
    char *stops2[] = {"cd", "bc", "zz"};   /* the earliest in the text, whatever the list's order */
    const char *out;
    size_t n;
    server_stop_init(&s, stops2, 3);
    assert_int_equal(server_stop_feed(&s, "ab", 2, &out, &n), 0);
    assert_int_equal(server_stop_feed(&s, "cde", 3, &out, &n), 1);
    assert_int_equal(s.which, 1);
    assert_int_equal(s.len, 1);
    server_stop_free(&s);
}

static uint64_t rng_next(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* random text over a tiny alphabet, random piece sizes and stops. Generation ends at the
 * first piece after which some stop string occurs; the released text must then be the text
 * cut at the earliest start of a stop string found so far, and until then nothing longer
 * than a stop string may be held back */
static void test_stop_random(void **state) {
    (void)state;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int iter = 0; iter < 3000; iter++) {
        char text[200], st[3][6], *stops[3];
        int tn = 1 + (int)(rng_next(&x) % 150), ns = (int)(rng_next(&x) % 4), maxl = 0;
        if (ns > 3) ns = 3;
        for (int i = 0; i < tn; i++) text[i] = "abc"[rng_next(&x) % 3];
        text[tn] = 0;
        for (int i = 0; i < ns; i++) {
            int l = 1 + (int)(rng_next(&x) % 5);
            for (int k = 0; k < l; k++) st[i][k] = "abc"[rng_next(&x) % 3];
            st[i][l] = 0;
            stops[i] = st[i];
            if (l > maxl) maxl = l;
        }
        server_stop_t s;
        feed_out_t o = {{0}, 0};
        server_stop_init(&s, stops, ns);
        int at = 0, hit = 0;
        size_t want = (size_t)tn;
        while (at < tn && !hit) {
            int k = 1 + (int)(rng_next(&x) % 6);
            if (k > tn - at) k = tn - at;
            char piece[8];
            memcpy(piece, text + at, (size_t)k);
            piece[k] = 0;
            hit = feed(&s, &o, piece);
            at += k;
            for (int i = 0; i < ns; i++) {   /* reference: plain search of the text so far */
                char saved = text[at];
                text[at] = 0;
                char *p = strstr(text, stops[i]);
                text[at] = saved;
                if (p && (size_t)(p - text) < want) want = (size_t)(p - text);
            }
            if (hit != (want < (size_t)tn)) fail_msg("iter %d: hit %d after %d bytes, reference %zu", iter, hit, at, want);
            if (!hit && maxl > 0 && (size_t)at - o.len > (size_t)(maxl - 1))
                fail_msg("held %zu bytes with stops of at most %d (iter %d)", (size_t)at - o.len, maxl, iter);
            if (memcmp(o.buf, text, o.len) != 0) fail_msg("released text is not a prefix (iter %d)", iter);
        }
        if (!hit) flush(&s, &o);
        if (o.len != want || memcmp(o.buf, text, want) != 0) {
            for (int q = 0; q < ns; q++) print_message("stop[%d]=%s\n", q, stops[q]);
            fail_msg("iter %d: text '%s', released '%s' (%zu bytes), want %zu bytes", iter, text, o.buf, o.len, want);
        }
        server_stop_free(&s);
    }
}

/* ---- metrics ----------------------------------------------------------------------------- */

static double metric_value(const char *txt, const char *name) {
    char pat[160];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *p = strstr(txt, pat);
    if (!p) fail_msg("metric '%s' missing from:\n%s", name, txt);
    return strtod(p + strlen(pat), NULL);
}

static void test_metrics_render(void **state) {
    (void)state;
    server_metrics_t m;
    server_metrics_init(&m, 4);
    m.requests_total = 3;
    m.gen_tokens = 50;
    m.gen_seconds = 2;
    m.running = 2;
    m.waiting = 1;
    server_hist_observe(&m.ttft, 0.003);
    server_hist_observe(&m.ttft, 0.2);
    server_hist_observe(&m.ttft, 100);   /* beyond the last bound: only +Inf */
    char *txt = server_metrics_render(&m);
    assert_non_null(txt);
    assert_float_equal(metric_value(txt, "tern_requests_total"), 3, 0);
    assert_float_equal(metric_value(txt, "tern_requests_processing"), 2, 0);
    assert_float_equal(metric_value(txt, "tern_requests_deferred"), 1, 0);
    assert_float_equal(metric_value(txt, "tern_slots"), 4, 0);
    assert_float_equal(metric_value(txt, "tern_predicted_tokens_seconds"), 25, 1e-9);
    assert_float_equal(metric_value(txt, "tern_time_to_first_token_seconds_bucket{le=\"0.001\"}"), 0, 0);
    assert_float_equal(metric_value(txt, "tern_time_to_first_token_seconds_bucket{le=\"0.005\"}"), 1, 0);
    assert_float_equal(metric_value(txt, "tern_time_to_first_token_seconds_bucket{le=\"0.25\"}"), 2, 0);
    assert_float_equal(metric_value(txt, "tern_time_to_first_token_seconds_bucket{le=\"30\"}"), 2, 0);
    assert_float_equal(metric_value(txt, "tern_time_to_first_token_seconds_bucket{le=\"+Inf\"}"), 3, 0);
    assert_float_equal(metric_value(txt, "tern_time_to_first_token_seconds_count"), 3, 0);
    assert_float_equal(metric_value(txt, "tern_time_to_first_token_seconds_sum"), 100.203, 1e-9);
    assert_non_null(strstr(txt, "# TYPE tern_time_to_first_token_seconds histogram\n"));
    assert_non_null(strstr(txt, "# TYPE tern_tokens_predicted_total counter\n"));
    /* every line is a comment or "name value" */
    for (const char *l = txt; *l;) {
        const char *e = strchr(l, '\n');
        assert_non_null(e);
        if (*l != '#') {
            const char *sp = memchr(l, ' ', (size_t)(e - l));
            assert_non_null(sp);
            char *end;
            strtod(sp + 1, &end);
            if (end != e) fail_msg("bad sample line: %.*s", (int)(e - l), l);
        }
        l = e + 1;
    }
    free(txt);
    server_metrics_free(&m);
}

static void test_json_text(void **state) {
    (void)state;
    json_t *s = server_json_text("ok \xc3\xa9", 5);
    assert_string_equal(json_string_value(s), "ok \xc3\xa9");
    json_decref(s);
    s = server_json_text("a\xff" "b\xc3", 4);   /* a stray byte and a cut character */
    assert_string_equal(json_string_value(s), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
    json_decref(s);
    s = server_json_text("\xe2\x82x\xf0\x9f\x98", 6);   /* a cut character is one U+FFFD */
    assert_string_equal(json_string_value(s), "\xEF\xBF\xBDx\xEF\xBF\xBD");
    json_decref(s);
    s = server_json_text("\xed\xa0\x80x", 4);   /* a surrogate half is not UTF-8 */
    assert_string_equal(json_string_value(s), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDx");
    json_decref(s);
}

/* echo: completions only (chat ignores the field), a bool; max_tokens 0 only with it; cache_prompt
 * on unless the request turns it off */
static void test_echo_field(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"echo\":true,\"max_tokens\":0}", &e), 0);
    assert_int_equal(r.echo, 1);
    assert_int_equal(r.max_tokens, 0);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"echo\":false}", &e), 0);
    assert_int_equal(r.echo, 0);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":\"a\"}", &e), 0);
    assert_int_equal(r.echo, 0);
    assert_int_equal(r.max_tokens, -1);
    assert_int_equal(r.cache_prompt, 1);   /* llama.cpp's default */
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"cache_prompt\":false}", &e), 0);
    assert_int_equal(r.cache_prompt, 0);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"echo\":true}", &e), 0);
    assert_int_equal(r.echo, 0);
    server_req_free(&r);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"echo\":\"yes\"}", "echo", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":0}", "max_tokens", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"echo\":false,\"max_tokens\":0}", "max_tokens", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"echo\":true,\"max_tokens\":0}",
               "max_tokens", NULL);
}

/* n_keep (llama.cpp's): not given is the server's default; -1 (the whole prompt) or a count;
 * anything else is refused naming the field */
static void test_n_keep_field(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":\"a\"}", &e), 0);
    assert_int_equal(r.n_keep, SERVER_KEEP_DEFAULT);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"n_keep\":-1}", &e), 0);
    assert_int_equal(r.n_keep, -1);
    server_req_free(&r);
    assert_int_equal(parse(&r, SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"n_keep\":12}", &e), 0);
    assert_int_equal(r.n_keep, 12);
    server_req_free(&r);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"n_keep\":-2}", "n_keep", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"n_keep\":\"all\"}", "n_keep", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"n_keep\":1.5}", "n_keep", NULL);
}

/* logprobs: completions' integer 0..5, chat's bool + top_logprobs 0..20; sp.logprobs follows
 * the request only (a default that says 1 does not leak into requests that did not ask) */
static void test_logprobs_fields(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    sampler_params_t on = defaults();
    on.logprobs = 1;
    static const struct { int kind; const char *body; int lp, top; } ok[] = {
        {SERVER_REQ_COMPLETION, "{\"prompt\":\"a\"}", 0, 0},
        {SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":null}", 0, 0},
        {SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":0}", 1, 0},
        {SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":5}", 1, 5},
        {SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":2.0}", 1, 2},
        {SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}", 0, 0},
        {SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":false}", 0, 0},
        {SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":true}", 1, 0},
        {SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":true,\"top_logprobs\":20}", 1, 20},
        {SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":false,\"top_logprobs\":0}", 0, 0},
        {SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"top_logprobs\":null}", 0, 0},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        for (int d = 0; d < 2; d++) {
            sampler_params_t def = defaults();
            memset(&e, 0, sizeof e);
            int rc = server_req_parse(&r, ok[i].kind, ok[i].body, strlen(ok[i].body), d ? &on : &def, &e);
            if (rc < 0) fail_msg("refused %s: %s", ok[i].body, e.msg);
            if (r.logprobs != ok[i].lp || r.sp.logprobs != ok[i].lp || r.top_logprobs != ok[i].top)
                fail_msg("%s (default logprobs %d): logprobs %d sp.logprobs %d top %d, want %d %d %d", ok[i].body, d,
                         r.logprobs, r.sp.logprobs, r.top_logprobs, ok[i].lp, ok[i].lp, ok[i].top);
            server_req_free(&r);
        }
    }
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":6}", "logprobs", "invalid_value");
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":-1}", "logprobs", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":true}", "logprobs", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":1.5}", "logprobs", NULL);
    expect_bad(SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":\"2\"}", "logprobs", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":1}", "logprobs", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":true,\"top_logprobs\":21}",
               "top_logprobs", "invalid_value");
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":true,\"top_logprobs\":-1}",
               "top_logprobs", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":true,\"top_logprobs\":\"3\"}",
               "top_logprobs", NULL);
    expect_bad(SERVER_REQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"top_logprobs\":3}", "top_logprobs", NULL);
    /* the error body names the field */
    assert_true(parse(&r, SERVER_REQ_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":9}", &e) < 0);
    char *js = server_err_json(&e);
    assert_non_null(js);
    if (!strstr(js, "\"param\":\"logprobs\"") || !strstr(js, "\"type\":\"invalid_request_error\""))
        fail_msg("error body %s", js);
    free(js);
}

/* text_offset counts characters as the reply's text shows them: server_text_chars must equal
 * the code points of server_json_text, and server_text_valid jansson's own UTF-8 check */
static void test_text_chars(void **state) {
    (void)state;
    assert_int_equal(server_text_chars("abc", 3), 3);
    assert_int_equal(server_text_chars("\xc3\xa9t\xc3\xa9", 5), 3);
    assert_int_equal(server_text_chars("a\xf0\x9f\x98\x80" "b", 6), 3);
    assert_int_equal(server_text_chars("\xe2\x82", 2), 1);      /* a cut character: one U+FFFD */
    assert_int_equal(server_text_chars("\x8e\x8e", 2), 2);      /* stray continuation bytes: one each */
    assert_int_equal(server_text_chars("", 0), 0);
    assert_true(server_text_valid("\xc3\xa9", 2));
    assert_false(server_text_valid("\xc3", 1));
    uint64_t x = 77;
    for (int t = 0; t < 3000; t++) {
        unsigned char b[12];
        size_t n = (size_t)(t % 12);
        for (size_t i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            unsigned v = (unsigned)(x >> 56);
            b[i] = (unsigned char)(v < 96 ? 0x41 + v % 26 : v < 160 ? 0x80 + v % 64 : v < 220 ? 0xC2 + v % 50 : v);
        }
        json_t *j = server_json_text((const char *)b, n);
        assert_non_null(j);
        const char *o = json_string_value(j);
        size_t cps = 0;
        for (size_t i = 0; i < json_string_length(j); i++) cps += ((unsigned char)o[i] & 0xC0) != 0x80;
        if (server_text_chars((const char *)b, n) != cps)
            fail_msg("string %d: server_text_chars %zu, code points in the sanitized text %zu", t,
                     server_text_chars((const char *)b, n), cps);
        json_decref(j);
        json_t *raw = json_stringn((const char *)b, n);   /* NULL: jansson finds it invalid */
        assert_int_equal(server_text_valid((const char *)b, n), raw != NULL);
        json_decref(raw);
    }
}

/* the slot object of /slots (and /props' default_generation_settings): idle and busy; the
 * sampler order under llama.cpp's names */
static void test_slot_json(void **state) {
    (void)state;
    server_slot_t sl;
    memset(&sl, 0, sizeof sl);
    sl.id_task = -1;
    sampler_params_t sp = defaults();
    sp.temp = 0.8f;
    sp.top_p = 0.9f;
    sp.min_p = 0.05f;
    sp.logprobs = 1;
    sp.top_logprobs = 3;
    server_info_slot_params(&sl, &sp);
    json_t *o = server_info_slot_json(&sl, 1, 512, 0, 1, "llama3");
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(o, "id")), 1);
    assert_int_equal(json_integer_value(json_object_get(o, "id_task")), -1);
    assert_true(json_is_null(json_object_get(o, "request_id")));
    assert_int_equal(json_integer_value(json_object_get(o, "n_ctx")), 512);
    assert_true(json_is_false(json_object_get(o, "is_processing")));
    assert_true(json_is_false(json_object_get(o, "speculative")));
    json_t *p = json_object_get(o, "params"), *nt = json_object_get(o, "next_token");
    assert_true(json_real_value(json_object_get(p, "temperature")) == 0.8);   /* 0.8f shows as 0.8 */
    assert_true(json_real_value(json_object_get(p, "top_p")) == 0.9);
    assert_true(json_real_value(json_object_get(p, "min_p")) == 0.05);
    assert_int_equal(json_integer_value(json_object_get(p, "top_k")), 40);
    assert_int_equal(json_integer_value(json_object_get(p, "seed")), 4294967295LL);   /* drawn per request */
    assert_int_equal(json_integer_value(json_object_get(p, "n_predict")), -1);
    assert_int_equal(json_integer_value(json_object_get(p, "n_probs")), 3);
    assert_string_equal(json_string_value(json_object_get(p, "chat_format")), "llama3");
    for (const char *k = "repeat_penalty\0repeat_last_n\0presence_penalty\0frequency_penalty\0max_tokens\0stream\0"
                         "typical_p\0top_n_sigma\0xtc_probability\0xtc_threshold\0dynatemp_range\0dynatemp_exponent\0"
                         "mirostat\0mirostat_tau\0mirostat_eta\0dry_multiplier\0dry_base\0dry_allowed_length\0"
                         "dry_penalty_last_n\0"; *k; k += strlen(k) + 1)
        if (!json_object_get(p, k)) fail_msg("no params.%s", k);
    assert_true(json_real_value(json_object_get(p, "typical_p")) == 1.0);
    assert_true(json_real_value(json_object_get(p, "top_n_sigma")) == -1.0);   /* llama.cpp's "off" */
    assert_int_equal(json_integer_value(json_object_get(p, "dry_penalty_last_n")), -1);
    assert_true(json_is_false(json_object_get(nt, "has_next_token")));
    assert_int_equal(json_integer_value(json_object_get(nt, "n_remain")), -1);
    json_t *sm = json_object_get(p, "samplers");   /* the order under llama.cpp's names */
    static const char *const dflt[] = {"penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"};
    assert_int_equal(json_array_size(sm), 9);
    for (size_t i = 0; i < 9; i++) assert_string_equal(json_string_value(json_array_get(sm, i)), dflt[i]);
    json_decref(o);
    assert_int_equal(sampler_order_parse(&sp, "xtc;temperature;top_k", 0, NULL, 0), 0);
    server_info_slot_params(&sl, &sp);
    o = server_info_slot_json(&sl, 1, 512, 0, 1, "llama3");
    sm = json_object_get(json_object_get(o, "params"), "samplers");
    assert_int_equal(json_array_size(sm), 3);
    assert_string_equal(json_string_value(json_array_get(sm, 0)), "xtc");
    assert_string_equal(json_string_value(json_array_get(sm, 2)), "top_k");
    json_decref(o);
    /* busy: its request, progress and cache */
    sl.active = 1;
    sl.id_task = 7;
    snprintf(sl.request_id, sizeof sl.request_id, "chatcmpl-x");
    sl.stream = 1;
    sl.n_prompt = 20;
    sl.n_prompt_cached = 12;
    sl.n_prompt_processed = 8;
    sl.n_decoded = 5;
    sl.max_gen = 64;
    sl.n_cache = 25;
    o = server_info_slot_json(&sl, 0, 512, 1, 0, "llama3");
    p = json_object_get(o, "params");
    nt = json_object_get(o, "next_token");
    assert_string_equal(json_string_value(json_object_get(o, "request_id")), "chatcmpl-x");
    assert_int_equal(json_integer_value(json_object_get(o, "id_task")), 7);
    assert_true(json_is_true(json_object_get(o, "is_processing")));
    assert_true(json_is_true(json_object_get(o, "speculative")));
    assert_int_equal(json_integer_value(json_object_get(o, "n_prompt_tokens")), 20);
    assert_int_equal(json_integer_value(json_object_get(o, "n_prompt_tokens_cached")), 12);
    assert_int_equal(json_integer_value(json_object_get(o, "n_prompt_tokens_processed")), 8);
    assert_int_equal(json_integer_value(json_object_get(o, "n_cache_tokens")), 25);
    assert_int_equal(json_integer_value(json_object_get(p, "seed")), 1234);
    assert_int_equal(json_integer_value(json_object_get(p, "max_tokens")), 64);
    assert_true(json_is_true(json_object_get(p, "stream")));
    assert_true(json_is_true(json_object_get(nt, "has_next_token")));
    assert_int_equal(json_integer_value(json_object_get(nt, "n_decoded")), 5);
    assert_int_equal(json_integer_value(json_object_get(nt, "n_remain")), 59);
    json_decref(o);
}

/* ---- a server without a model, over a socket ---- */

typedef struct http_reply {
    int status;
    char head[4096];    /* status line and headers */
    char *body;         /* malloc'd, NUL-terminated */
    size_t len;
} http_reply_t;

/* METHOD path on 127.0.0.1:port with extra header lines (each ending \r\n), read to the end */
static void http_do(int port, const char *method, const char *path, const char *extra, http_reply_t *r) {
    memset(r, 0, sizeof *r);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[1024];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n", method, path, extra);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    for (ssize_t k; (k = read(fd, buf + len, cap - len)) > 0;) {
        len += (size_t)k;
        if (len == cap) { cap *= 2; buf = realloc(buf, cap + 1); }
    }
    close(fd);
    buf[len] = 0;
    char *end = strstr(buf, "\r\n\r\n");
    if (!end) fail_msg("no header end in: %.200s", buf);
    snprintf(r->head, sizeof r->head, "%.*s", (int)(end - buf), buf);
    r->status = atoi(buf + 9);
    r->len = len - (size_t)(end + 4 - buf);
    r->body = malloc(r->len + 1);
    memcpy(r->body, end + 4, r->len);
    r->body[r->len] = 0;
    free(buf);
}

/* the value of header name in r (case-insensitive name), or "" */
static const char *http_header(const http_reply_t *r, const char *name, char *out, size_t cap) {
    out[0] = 0;
    for (const char *l = strstr(r->head, "\r\n"); l; l = strstr(l + 2, "\r\n"))
        if (!strncasecmp(l + 2, name, strlen(name)) && l[2 + strlen(name)] == ':') {
            const char *v = l + 3 + strlen(name), *e = strstr(v, "\r\n");
            while (*v == ' ') v++;
            snprintf(out, cap, "%.*s", (int)(e ? e - v : (long)strlen(v)), v);
            break;
        }
    return out;
}

/* status and error type of METHOD path (key: a Bearer key or NULL) */
static void expect_status(int port, const char *path, const char *key, int status, const char *type) {
    char extra[256] = "";
    if (key) snprintf(extra, sizeof extra, "Authorization: Bearer %s\r\n", key);
    http_reply_t r;
    http_do(port, "GET", path, extra, &r);
    if (r.status != status) fail_msg("GET %s: %d, want %d: %s", path, r.status, status, r.body);
    if (type) {
        json_t *o = json_loads(r.body, 0, NULL);
        const char *t = json_string_value(json_object_get(json_object_get(o, "error"), "type"));
        if (!t || strcmp(t, type) != 0) fail_msg("GET %s: error type %s, want %s", path, t ? t : "(none)", type);
        json_decref(o);
    }
    free(r.body);
}

static server_t *start_server(int no_webui, int no_slots, const char *key) {
    server_cfg_t cfg;
    server_cfg_default(&cfg);
    cfg.port = 0;
    cfg.no_webui = no_webui;
    cfg.no_slots = no_slots;
    cfg.api_key = key;
    server_t *s = NULL;
    char err[256];
    if (server_start(&s, &cfg, err, sizeof err) < 0) fail_msg("server_start: %s", err);
    return s;
}

/* server_start's refusals: TLS with half its files, a key and certificate GnuTLS cannot read
 * (TERN_EINVAL, its reason in err), and a port in use (TERN_EIO, the port and the reason) */
static void test_start_errors(void **state) {
    (void)state;
    server_cfg_t cfg;
    server_cfg_default(&cfg);
    cfg.port = 0;
    server_t *s = NULL, *t = NULL;
    char err[256] = "";
    cfg.tls_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    assert_int_equal(server_start(&s, &cfg, err, sizeof err), TERN_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err, "both a key and a certificate"));
    cfg.tls_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    err[0] = 0;
    assert_int_equal(server_start(&s, &cfg, err, sizeof err), TERN_EINVAL);
    assert_null(s);
    if (!err[0] || strchr(err, '\n')) fail_msg("no one-line reason: '%s'", err);
    cfg.tls_key = cfg.tls_cert = NULL;
    assert_int_equal(server_start(&s, &cfg, err, sizeof err), 0);
    cfg.port = server_port(s);
    assert_int_equal(server_start(&t, &cfg, err, sizeof err), TERN_EIO);
    assert_null(t);
    char want[64];
    snprintf(want, sizeof want, "cannot listen on 127.0.0.1:%d: ", cfg.port);
    if (strncmp(err, want, strlen(want)) || strstr(err, "port 0")) fail_msg("port in use: '%s'", err);
    server_destroy(&s);
}

/* a request whose answer must be status with Anthropic's error body of type type */
static void expect_anth(int port, const char *method, const char *path, const char *extra, int status, const char *type) {
    http_reply_t r;
    http_do(port, method, path, extra, &r);
    if (r.status != status) fail_msg("%s %s: %d, want %d: %s", method, path, r.status, status, r.body);
    json_t *o = json_loads(r.body, 0, NULL);
    const char *top = json_string_value(json_object_get(o, "type"));
    const char *t = json_string_value(json_object_get(json_object_get(o, "error"), "type"));
    if (!top || strcmp(top, "error") || !t || strcmp(t, type))
        fail_msg("%s %s: not Anthropic's error of type %s: %s", method, path, type, r.body);
    json_decref(o);
    free(r.body);
}
static void test_routes(void **state) {
    (void)state;
    /* the embedded page is the source file, byte for byte */
    const char *src = getenv("TERN_SRC");
    if (src) {
        char path[1024];
        snprintf(path, sizeof path, "%s/coordinator/webui/index.html", src);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        char *txt = malloc(webui_index_html_len + 2);
        size_t n = fread(txt, 1, webui_index_html_len + 1, f);
        fclose(f);
        assert_int_equal(n, webui_index_html_len);
        assert_memory_equal(txt, webui_index_html, n);
        free(txt);
    }
    server_t *s = start_server(0, 0, "k3y");
    int port = server_port(s);
    http_reply_t r;
    char v[256];
    http_do(port, "GET", "/", "", &r);   /* no key needed: the page asks for it */
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, webui_index_html_len);
    assert_memory_equal(r.body, webui_index_html, r.len);
    assert_string_equal(http_header(&r, "Content-Type", v, sizeof v), "text/html; charset=utf-8");
    assert_string_equal(http_header(&r, "ETag", v, sizeof v), webui_index_html_etag);
    assert_string_equal(http_header(&r, "Cache-Control", v, sizeof v), "no-cache");
    assert_non_null(strstr(http_header(&r, "Content-Security-Policy", v, sizeof v), "connect-src 'self'"));
    free(r.body);
    char inm[128];
    snprintf(inm, sizeof inm, "If-None-Match: %s\r\n", webui_index_html_etag);
    http_do(port, "GET", "/index.html", inm, &r);
    assert_int_equal(r.status, 304);
    assert_int_equal(r.len, 0);
    free(r.body);
    http_do(port, "HEAD", "/", "", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    assert_int_equal(atoi(http_header(&r, "Content-Length", v, sizeof v)), (int)webui_index_html_len);
    free(r.body);
    http_do(port, "POST", "/", "Content-Length: 0\r\n", &r);
    assert_int_equal(r.status, 405);
    free(r.body);
    expect_status(port, "/props", NULL, 401, "authentication_error");
    expect_status(port, "/slots", "nope", 401, "authentication_error");
    expect_status(port, "/props", "k3y", 503, "unavailable_error");   /* no model yet */
    expect_status(port, "/slots", "k3y", 503, "unavailable_error");
    expect_status(port, "/health", NULL, 503, "unavailable_error");
    expect_status(port, "/completion", NULL, 401, "authentication_error");   /* llama.cpp's own routes: keyed too */
    expect_status(port, "/apply-template", "nope", 401, "authentication_error");
    expect_status(port, "/completion", "k3y", 405, "invalid_request_error");   /* POST only */
    /* Anthropic's routes: x-api-key (or Bearer), errors in its shape; the key header works elsewhere too */
    expect_anth(port, "POST", "/v1/messages", "Content-Length: 0\r\n", 401, "authentication_error");
    expect_anth(port, "POST", "/v1/messages/count_tokens", "x-api-key: nope\r\nContent-Length: 0\r\n", 401,
                "authentication_error");
    expect_anth(port, "POST", "/v1/messages", "x-api-key: k3y\r\nContent-Length: 0\r\n", 503, "overloaded_error");
    expect_anth(port, "POST", "/v1/messages", "Authorization: Bearer k3y\r\nContent-Length: 0\r\n", 503, "overloaded_error");
    expect_anth(port, "GET", "/v1/messages", "x-api-key: k3y\r\n", 405, "invalid_request_error");
    http_do(port, "GET", "/props", "x-api-key: k3y\r\n", &r);
    assert_int_equal(r.status, 503);   /* past the key: loading */
    assert_null(strstr(r.body, "\"type\":\"error\""));   /* OpenAI's shape off those routes */
    free(r.body);
    server_destroy(&s);

    s = start_server(1, 1, NULL);
    port = server_port(s);
    expect_status(port, "/", NULL, 404, "invalid_request_error");
    expect_status(port, "/index.html", NULL, 404, "invalid_request_error");
    expect_status(port, "/slots", NULL, 501, "not_supported_error");   /* whether or not a model is loaded */
    expect_status(port, "/props", NULL, 503, "unavailable_error");
    expect_status(port, "/nope", NULL, 404, "invalid_request_error");
    server_destroy(&s);
}

/* ---- Anthropic's Messages API (server_anthropic.c) --------------------------------------
 * bodies are written with ' for " (anth_json) to stay readable */
static char *anth_json(const char *q) {
    char *b = strdup(q);
    for (char *p = b; *p; p++)
        if (*p == '\'') *p = '"';
    return b;
}

/* parses q (a Messages body, or with count a count_tokens one); the parse result */
static int anth_parse(server_req_t *r, int count, const char *q, server_err_t *e) {
    sampler_params_t sp = defaults();
    char *b = anth_json(q);
    memset(e, 0, sizeof *e);
    int rc = server_anthropic_parse(r, count, b, strlen(b), &sp, 0, e);
    free(b);
    return rc;
}

/* expects a 400 whose param is param (NULL: any) and whose message holds text */
static void anth_bad(int count, const char *q, const char *param, const char *text) {
    server_req_t r;
    server_err_t e;
    if (anth_parse(&r, count, q, &e) >= 0) {
        server_req_free(&r);
        fail_msg("accepted a bad request: %s", q);
    }
    if (e.status != 400) fail_msg("status %d (want 400) for %s", e.status, q);
    if (param && strcmp(e.param, param) != 0) fail_msg("param '%s' (want '%s') for %s: %s", e.param, param, q, e.msg);
    if (text && !strstr(e.msg, text)) fail_msg("message '%s' lacks '%s' for %s", e.msg, text, q);
}

static void test_anthropic_fields(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    /* strings: system in front; sampling, stop_sequences and stream carried over; metadata ignored */
    assert_int_equal(anth_parse(&r, 0, "{'model':'m','max_tokens':7,'system':'Be brief.','temperature':0.5,'top_p':0.9,"
                                       "'top_k':3,'stream':true,'stop_sequences':['END','\\n\\n'],'metadata':{'user_id':'u'},"
                                       "'messages':[{'role':'user','content':'hi'},{'role':'assistant','content':'yo'}]}", &e), 0);
    assert_int_equal(r.api, SERVER_API_ANTHROPIC);
    assert_int_equal(r.kind, SERVER_REQ_CHAT);
    assert_int_equal(r.max_tokens, 7);
    assert_int_equal(r.n_msgs, 3);
    assert_string_equal(r.msgs[0].role, "system");
    assert_string_equal(r.msgs[0].content, "Be brief.");
    assert_string_equal(r.msgs[1].role, "user");
    assert_string_equal(r.msgs[2].role, "assistant");
    assert_string_equal(r.msgs[2].content, "yo");
    assert_true(r.sp.temp == 0.5f && r.sp.top_p == 0.9f && r.sp.top_k == 3 && r.stream == 1);
    assert_int_equal(r.n_stop, 2);
    assert_string_equal(r.stop[1], "\n\n");
    assert_int_equal(r.tools, SERVER_TOOLS_NONE);
    server_req_free(&r);
    /* blocks: system text blocks joined; a user's tool_result first (a tool message), then its text;
     * an assistant's tool_use rendered as the call the model would write; thinking dropped */
    assert_int_equal(anth_parse(&r, 0, "{'max_tokens':5,'system':[{'type':'text','text':'A. '},{'type':'text','text':'B.',"
                                       "'cache_control':{'type':'ephemeral'}}],'messages':["
                                       "{'role':'user','content':[{'type':'text','text':'x'},{'type':'text','text':'y'}]},"
                                       "{'role':'assistant','content':[{'type':'thinking','thinking':'hm'},{'type':'text','text':'Let me see.'},"
                                       "{'type':'tool_use','id':'toolu_1','name':'f','input':{'x':1}}]},"
                                       "{'role':'user','content':[{'type':'tool_result','tool_use_id':'toolu_1','content':"
                                       "[{'type':'text','text':'4'},{'type':'text','text':'2'}]},{'type':'text','text':'thanks'}]},"
                                       "{'role':'user','content':[{'type':'tool_result','tool_use_id':'toolu_2','content':'ok'}]}]}", &e), 0);
    assert_int_equal(r.n_msgs, 6);
    assert_string_equal(r.msgs[0].content, "A. B.");
    assert_string_equal(r.msgs[1].content, "xy");
    assert_string_equal(r.msgs[2].role, "assistant");
    assert_string_equal(r.msgs[2].content, "Let me see.\n{\"tool_call\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}");
    assert_string_equal(r.msgs[3].role, "tool");
    assert_string_equal(r.tool_ids[3], "toolu_1");
    assert_string_equal(r.msgs[3].content, "42");
    assert_string_equal(r.msgs[4].role, "user");
    assert_string_equal(r.msgs[4].content, "thanks");
    assert_string_equal(r.msgs[5].role, "tool");   /* only a tool result: no empty user message */
    assert_string_equal(r.msgs[5].content, "ok");
    server_req_free(&r);
    /* tools and each tool_choice */
#define ATOOL "{'name':'f','description':'adds','input_schema':{'type':'object','properties':{'x':{'type':'integer'}},'required':['x']}}"
#define AMSG "'messages':[{'role':'user','content':'hi'}]"
    static const struct { const char *choice; int mode; } ch[] = {
        {"", SERVER_TOOLS_AUTO}, {",'tool_choice':{'type':'auto'}", SERVER_TOOLS_AUTO},
        {",'tool_choice':{'type':'any'}", SERVER_TOOLS_REQUIRED},
        {",'tool_choice':{'type':'tool','name':'f','disable_parallel_tool_use':true}", SERVER_TOOLS_NAMED},
        {",'tool_choice':{'type':'none'}", SERVER_TOOLS_NONE},
    };
    for (size_t i = 0; i < sizeof ch / sizeof ch[0]; i++) {
        char q[1024];
        snprintf(q, sizeof q, "{'max_tokens':5,'tools':[" ATOOL "]%s," AMSG "}", ch[i].choice);
        assert_int_equal(anth_parse(&r, 0, q, &e), 0);
        assert_int_equal(r.tools, ch[i].mode);
        assert_true((r.grammar != NULL) == (ch[i].mode != SERVER_TOOLS_NONE));
        if (ch[i].mode != SERVER_TOOLS_NONE) assert_non_null(strstr(r.msgs[0].content, "- f: adds"));
        server_req_free(&r);
    }
    /* count_tokens: no max_tokens needed; sampling fields ignored */
    assert_int_equal(anth_parse(&r, 1, "{'model':'m','temperature':'hot'," AMSG "}", &e), 0);
    assert_int_equal(r.max_tokens, -1);
    assert_int_equal(r.n_msgs, 1);
    server_req_free(&r);
}

static void test_anthropic_bad(void **state) {
    (void)state;
    server_err_t e;
    anth_bad(0, "{" AMSG "}", "max_tokens", "'max_tokens' is required");
    anth_bad(0, "{'max_tokens':0," AMSG "}", "max_tokens", "positive");
    anth_bad(0, "{'max_tokens':1.5," AMSG "}", "max_tokens", "positive");
    anth_bad(0, "{'max_tokens':5}", "messages", "non-empty");
    anth_bad(0, "{'max_tokens':5,'messages':[]}", "messages", "non-empty");
    anth_bad(1, "{'system':'x'}", "messages", "non-empty");
    anth_bad(0, "{'max_tokens':5,'model':3," AMSG "}", "model", NULL);
    anth_bad(0, "{'max_tokens':5,'messages':[{'role':'system','content':'x'}]}", "messages[0]", "role");
    anth_bad(0, "{'max_tokens':5,'messages':[{'role':'user','content':3}]}", "messages[0]", "content");
    anth_bad(0, "{'max_tokens':5,'messages':[{'role':'user','content':[{'type':'image','source':{'type':'base64',"
                "'media_type':'image/png','data':'AA=='}}]}]}", "messages[0].content[0]", "not supported");
    anth_bad(0, "{'max_tokens':5,'messages':[{'role':'user','content':[{'type':'tool_use','id':'t','name':'f',"
                "'input':{}}]}]}", "messages[0].content[0]", "tool_result");
    anth_bad(0, "{'max_tokens':5,'messages':[{'role':'assistant','content':[{'type':'tool_result','tool_use_id':'t'}]}]}",
             "messages[0].content[0]", "tool_use");
    anth_bad(0, "{'max_tokens':5,'messages':[{'role':'user','content':[{'type':'tool_result','content':'x'}]}]}",
             "messages[0].content[0]", "tool_use_id");
    anth_bad(0, "{'max_tokens':5,'messages':[{'role':'user','content':[{'type':'tool_result','tool_use_id':'t',"
                "'content':[{'type':'image'}]}]}]}", "messages[0].content[0].content", "image");
    anth_bad(0, "{'max_tokens':5,'messages':[{'role':'assistant','content':[{'type':'tool_use','id':'t','name':'f',"
                "'input':[1]}]}]}", "messages[0].content[0]", "input");
    anth_bad(0, "{'max_tokens':5,'system':3," AMSG "}", "system", "text blocks");
    anth_bad(0, "{'max_tokens':5,'system':[{'type':'text'}]," AMSG "}", "system", "text block");
    anth_bad(0, "{'max_tokens':5,'stop_sequences':'END'," AMSG "}", "stop_sequences", NULL);
    anth_bad(0, "{'max_tokens':5,'stop_sequences':['a',2]," AMSG "}", "stop_sequences", "[1]");
    anth_bad(0, "{'max_tokens':5,'temperature':'hot'," AMSG "}", "temperature", NULL);
    anth_bad(0, "{'max_tokens':5,'top_k':-1," AMSG "}", "top_k", NULL);
    anth_bad(0, "{'max_tokens':5,'stream':1," AMSG "}", "stream", NULL);
    anth_bad(0, "{'max_tokens':5,'tools':{}," AMSG "}", "tools", NULL);
    anth_bad(0, "{'max_tokens':5,'tools':[{'name':'f'}]," AMSG "}", "tools[0]", "input_schema");
    anth_bad(0, "{'max_tokens':5,'tools':[{'input_schema':{}}]," AMSG "}", "tools[0]", "name");
    anth_bad(0, "{'max_tokens':5,'tools':[{'type':'web_search_20250305','name':'web_search'}]," AMSG "}", "tools[0]",
             "not supported");
    anth_bad(0, "{'max_tokens':5,'tools':[" ATOOL "],'tool_choice':'auto'," AMSG "}", "tool_choice", NULL);
    anth_bad(0, "{'max_tokens':5,'tools':[" ATOOL "],'tool_choice':{'type':'sometimes'}," AMSG "}", "tool_choice", "sometimes");
    anth_bad(0, "{'max_tokens':5,'tools':[" ATOOL "],'tool_choice':{'type':'tool'}," AMSG "}", "tool_choice", "name");
    anth_bad(0, "{'max_tokens':5,'tools':[" ATOOL "],'tool_choice':{'type':'tool','name':'g'}," AMSG "}", "tool_choice", "'g'");
    anth_bad(0, "{'max_tokens':5,'tool_choice':{'type':'any'}," AMSG "}", "tool_choice", NULL);   /* any needs tools */
    anth_bad(0, "[1]", NULL, "JSON object");
    anth_bad(0, "{nope", NULL, "not valid JSON");
    /* the error body: Anthropic's shape, its type from the status */
    static const struct { int status; const char *type; } et[] = {
        {400, "invalid_request_error"}, {401, "authentication_error"}, {404, "not_found_error"},
        {413, "request_too_large"}, {500, "api_error"}, {503, "overloaded_error"},
    };
    for (size_t i = 0; i < sizeof et / sizeof et[0]; i++) {
        server_err_set(&e, et[i].status, "x", NULL, "p", "why %d", et[i].status);
        char *txt = server_anthropic_err_json(&e), want[160];
        snprintf(want, sizeof want, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"why %d\"}}", et[i].type,
                 et[i].status);
        assert_string_equal(txt, want);
        free(txt);
    }
    /* the thread's style picks the shape */
    server_err_set(&e, 400, "invalid_request_error", "invalid_value", "p", "bad");
    server_anthropic_style(1);
    char *a = server_err_body(&e);
    server_anthropic_style(0);
    char *o = server_err_body(&e);
    assert_non_null(strstr(a, "\"type\":\"error\""));
    assert_null(strstr(o, "\"type\":\"error\""));
    free(a);
    free(o);
#undef ATOOL
#undef AMSG
}

/* OpenAI's usage over n choices a prompt: each prompt's tokens once, its cached tokens the fewest
 * among its choices (a choice that copied the prompt from a sibling found no cache), summed over
 * prompts; completion tokens over every choice */
static void test_usage_choices(void **state) {
    (void)state;
    job_t j[6], *jp[6];
    memset(j, 0, sizeof j);
    static const int ids[6] = {40, 40, 40, 25, 25, 25}, cached[6] = {12, 39, 39, 30, 8, 24}, gen[6] = {5, 6, 7, 1, 2, 3};
    for (int i = 0; i < 6; i++) j[i].n_ids = ids[i], j[i].n_cached = cached[i], j[i].n_gen = gen[i], jp[i] = &j[i];
    static const struct { int k, n; const char *want; } cases[] = {
        {1, 1, "{\"completion_tokens\":5,\"prompt_tokens\":40,\"prompt_tokens_details\":{\"cached_tokens\":12},\"total_tokens\":45}"},
        /* n=3: the prompt once, the first choice's 12 cached, not 12 + 39 + 39 */
        {3, 3, "{\"completion_tokens\":18,\"prompt_tokens\":40,\"prompt_tokens_details\":{\"cached_tokens\":12},\"total_tokens\":58}"},
        /* two prompts of 3 choices: 40 + 25 prompt tokens, 12 + 8 cached (the second's least is its second choice's) */
        {6, 3, "{\"completion_tokens\":24,\"prompt_tokens\":65,\"prompt_tokens_details\":{\"cached_tokens\":20},\"total_tokens\":89}"},
        /* six prompts of one choice each: all summed */
        {6, 1, "{\"completion_tokens\":24,\"prompt_tokens\":195,\"prompt_tokens_details\":{\"cached_tokens\":152},\"total_tokens\":219}"},
        /* three prompts of 2 choices (jobs 0-1, 2-3, 4-5): 40 + 40 + 25, the least of each pair 12 + 30 + 8 */
        {6, 2, "{\"completion_tokens\":24,\"prompt_tokens\":105,\"prompt_tokens_details\":{\"cached_tokens\":50},\"total_tokens\":129}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *u = server_gen_usage(jp, cases[i].k, cases[i].n);
        char *t = u ? json_dumps(u, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(u);
        assert_non_null(t);
        if (strcmp(t, cases[i].want)) fail_msg("k %d n %d: %s, want %s", cases[i].k, cases[i].n, t, cases[i].want);
        free(t);
    }
}

/* a finished job's Messages reply (compact, keys sorted) */
static char *anth_reply(struct server *srv, job_t *j) {
    json_t *o = server_anthropic_reply(srv, j);
    char *txt = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    assert_non_null(txt);
    return txt;
}

/* the reply and the stream of a finished job: content blocks, stop_reason from how it ended,
 * usage, and the events in the documented order */
static void test_anthropic_reply(void **state) {
    (void)state;
    struct server *srv = calloc(1, sizeof *srv);
    assert_non_null(srv);
    snprintf(srv->model_id, sizeof srv->model_id, "tiny");
    job_t j;
    memset(&j, 0, sizeof j);
    char text[128], stop0[] = "END";
    snprintf(j.id, sizeof j.id, "msg_abc");
    snprintf(text, sizeof text, "Hello");
    j.out = text, j.out_len = 5, j.n_ids = 7, j.n_gen = 3, j.finish = SCHED_STOP, j.state = JOB_DONE;
    char *t = anth_reply(srv, &j);
    assert_string_equal(t, "{\"content\":[{\"text\":\"Hello\",\"type\":\"text\"}],\"id\":\"msg_abc\",\"model\":\"tiny\","
                           "\"role\":\"assistant\",\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"type\":\"message\","
                           "\"usage\":{\"input_tokens\":7,\"output_tokens\":3}}");
    free(t);
    j.finish = SCHED_LENGTH;
    t = anth_reply(srv, &j);
    assert_non_null(strstr(t, "\"stop_reason\":\"max_tokens\",\"stop_sequence\":null"));
    free(t);
    j.finish = SCHED_STOP, j.stop[0] = stop0, j.n_stop = 1, j.st.hit = 1, j.st.which = 0;
    t = anth_reply(srv, &j);
    assert_non_null(strstr(t, "\"stop_reason\":\"stop_sequence\",\"stop_sequence\":\"END\""));
    free(t);
    j.stop[0] = NULL, j.n_stop = 0, j.st.hit = 0;
    /* tools: a call → a tool_use block; {"response"} → text, end_turn */
    j.tools = 1;
    j.out_len = (size_t)snprintf(text, sizeof text, "{\"tool_call\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}");
    t = anth_reply(srv, &j);
    assert_non_null(strstr(t, "\"content\":[{\"id\":\"toolu_abc00\",\"input\":{\"x\":1},\"name\":\"f\",\"type\":\"tool_use\"}]"));
    assert_non_null(strstr(t, "\"stop_reason\":\"tool_use\""));
    free(t);
    j.out_len = (size_t)snprintf(text, sizeof text, "{\"response\":\"hi\"}");
    t = anth_reply(srv, &j);
    assert_non_null(strstr(t, "\"content\":[{\"text\":\"hi\",\"type\":\"text\"}]"));
    assert_non_null(strstr(t, "\"stop_reason\":\"end_turn\""));
    free(t);
    /* the stream of a job done at once: every event, in order, each data's type its event's name */
    static const char *const plain[] = {"message_start", "content_block_start", "ping", "content_block_delta",
                                        "content_block_stop", "message_delta", "message_stop", NULL};
    static const char *const tools[] = {"message_start", "ping", "content_block_start", "content_block_delta",
                                        "content_block_stop", "message_delta", "message_stop", NULL};
    for (int tl = 0; tl < 2; tl++) {
        j.tools = tl, j.sse_phase = 0, j.sse = NULL, j.sse_len = j.sse_cap = 0;
        j.out_len = (size_t)snprintf(text, sizeof text, tl ? "{\"tool_call\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}" : "Hi");
        assert_int_equal(server_anthropic_sse(srv, &j), 0);
        assert_int_equal(j.sse_phase, 2);
        assert_int_equal(j.out_len, tl ? j.out_len : 0);
        const char *p = j.sse, *const *want = tl ? tools : plain;
        for (int k = 0; want[k]; k++) {
            char ev[96];
            snprintf(ev, sizeof ev, "event: %s\ndata: {\"type\":\"%s\"", want[k], want[k]);
            const char *at = strstr(p, ev);
            if (!at) fail_msg("event %s missing or out of order in:\n%s", want[k], j.sse);
            p = at + 1;
        }
        assert_non_null(strstr(j.sse, tl ? "\"partial_json\":\"{\\\"x\\\":1}\"" : "\"text_delta\",\"text\":\"Hi\""));
        assert_non_null(strstr(j.sse, tl ? "{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}"
                                         : "{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}"));
        assert_int_equal(server_anthropic_sse(srv, &j), 0);   /* done: nothing more */
        free(j.sse);
        if (j.ts) toolstream_free(j.ts);   /* the stream's reader (the server's job_free does this) */
        free(j.ts);
        j.ts = NULL;
    }
    j.sse = NULL, j.sse_len = j.sse_cap = 0, j.sse_phase = 0, j.finish = SCHED_ERROR;
    assert_int_equal(server_anthropic_sse(srv, &j), 1);   /* failed: the caller ends the stream */
    free(j.sse);
    free(srv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_completion_fields), cmocka_unit_test(test_defaults_kept),
        cmocka_unit_test(test_prompt_shapes),     cmocka_unit_test(test_chat_messages),
        cmocka_unit_test(test_bad_values), cmocka_unit_test(test_sampling_extras),        cmocka_unit_test(test_llama_samplers),
        cmocka_unit_test(test_sampler_order),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_tokenize_bodies),   cmocka_unit_test(test_error_json),
        cmocka_unit_test(test_stop_split),        cmocka_unit_test(test_stop_earliest),
        cmocka_unit_test(test_stop_random),       cmocka_unit_test(test_metrics_render),
        cmocka_unit_test(test_json_text),         cmocka_unit_test(test_logprobs_fields),
        cmocka_unit_test(test_echo_field),
        cmocka_unit_test(test_n_keep_field),        cmocka_unit_test(test_tools_fields),
        cmocka_unit_test(test_tools_reply),       cmocka_unit_test(test_anthropic_fields),
        cmocka_unit_test(test_anthropic_bad),
        cmocka_unit_test(test_usage_choices),
        cmocka_unit_test(test_anthropic_reply),
        cmocka_unit_test(test_text_chars),        cmocka_unit_test(test_embd_bodies),
        cmocka_unit_test(test_slot_json),         cmocka_unit_test(test_routes),
        cmocka_unit_test(test_native_fields),     cmocka_unit_test(test_stop_which),
        cmocka_unit_test(test_start_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
