/* test_responses: OpenAI's Responses API (server_responses.c) without a model — a create request
 * into the chat request it means (input as a string and as items: messages of each role with
 * string or part contents, function_call / function_call_output / reasoning items, instructions,
 * tools and each tool_choice, text.format, reasoning.effort, max_output_tokens, sampling) and the
 * fields a Response repeats; bad bodies as 400s naming the field in this API's terms; and a
 * finished job's Response (message, incomplete, function_call, reasoning items, usage) and its
 * stream: the events in order with consecutive sequence numbers, adding up to the plain reply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "coordinator/server_int.h"
#include "coordinator/server_responses.h"
#include "coordinator/toolstream.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* bodies are written with ' for " to stay readable */
static char *dq(const char *q) {
    char *b = strdup(q);
    for (char *p = b; *p; p++)
        if (*p == '\'') *p = '"';
    return b;
}

static int rparse(server_req_t *r, const char *q, server_err_t *e) {
    sampler_params_t sp;
    sampler_params_default(&sp);
    sp.temp = 0.8f;
    char *b = dq(q);
    memset(e, 0, sizeof *e);
    int rc = server_responses_parse(r, b, strlen(b), &sp, 0, e);
    free(b);
    return rc;
}

/* expects a 400 whose param is param (NULL: any) and whose message holds text */
static void rbad(const char *q, const char *param, const char *text) {
    server_req_t r;
    server_err_t e;
    if (rparse(&r, q, &e) >= 0) {
        server_req_free(&r);
        fail_msg("accepted a bad request: %s", q);
    }
    if (e.status != 400) fail_msg("status %d (want 400) for %s", e.status, q);
    if (param && strcmp(e.param, param) != 0) fail_msg("param '%s' (want '%s') for %s: %s", e.param, param, q, e.msg);
    if (text && !strstr(e.msg, text)) fail_msg("message '%s' lacks '%s' for %s", e.msg, text, q);
}

/* field key of r's echo, as compact JSON (static buffer) */
static const char *echo_field(const server_req_t *r, const char *key) {
    static char buf[512];
    char *t = json_dumps(json_object_get(r->resp_echo, key), JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    snprintf(buf, sizeof buf, "%s", t ? t : "(none)");
    free(t);
    return buf;
}

#define TOOL "{'type':'function','name':'f','description':'adds','parameters':{'type':'object','properties':" \
             "{'x':{'type':'integer'}},'required':['x']}}"

static void test_request(void **state) {
    (void)state;
    server_req_t r;
    server_err_t e;
    /* a string input under instructions; sampling carried; the echo */
    assert_int_equal(rparse(&r, "{'model':'m','input':'hi','instructions':'Be brief.','max_output_tokens':7,'temperature':0.5,"
                                "'top_p':0.9,'stream':true,'metadata':{'k':'v'},'user':'u','store':false,'include':[]}", &e), 0);
    assert_int_equal(r.api, SERVER_API_RESPONSES);
    assert_int_equal(r.kind, SERVER_REQ_CHAT);
    assert_int_equal(r.max_tokens, 7);
    assert_true(r.sp.temp == 0.5f && r.sp.top_p == 0.9f && r.stream == 1);
    assert_int_equal(r.n_msgs, 2);
    assert_string_equal(r.msgs[0].role, "system");
    assert_string_equal(r.msgs[0].content, "Be brief.");
    assert_string_equal(r.msgs[1].role, "user");
    assert_string_equal(r.msgs[1].content, "hi");
    assert_int_equal(r.tools, SERVER_TOOLS_NONE);
    assert_null(r.grammar);
    assert_string_equal(echo_field(&r, "instructions"), "\"Be brief.\"");
    assert_string_equal(echo_field(&r, "max_output_tokens"), "7");
    assert_string_equal(echo_field(&r, "temperature"), "0.5");
    assert_string_equal(echo_field(&r, "metadata"), "{\"k\":\"v\"}");
    assert_string_equal(echo_field(&r, "user"), "\"u\"");
    assert_string_equal(echo_field(&r, "tools"), "[]");
    assert_string_equal(echo_field(&r, "tool_choice"), "\"auto\"");
    assert_string_equal(echo_field(&r, "text"), "{\"format\":{\"type\":\"text\"}}");
    assert_string_equal(echo_field(&r, "parallel_tool_calls"), "false");
    server_req_free(&r);
    /* defaults: no max_tokens; the server's temperature echoed as written */
    assert_int_equal(rparse(&r, "{'input':'hi'}", &e), 0);
    assert_int_equal(r.max_tokens, -1);
    assert_true(json_real_value(json_object_get(r.resp_echo, "temperature")) == 0.8);   /* not 0.800000011920929 */
    assert_string_equal(echo_field(&r, "instructions"), "null");
    server_req_free(&r);
    /* items: roles (developer → system), parts joined, a message's type optional; a reasoning
     * item's text goes to the assistant turn after it; function_call items join that turn as
     * its calls (rendered as the generic format writes them); function_call_output → tool */
    assert_int_equal(rparse(&r, "{'input':["
                                "{'role':'developer','content':'Rules.'},"
                                "{'type':'message','role':'user','content':[{'type':'input_text','text':'Weather '},"
                                "{'type':'input_text','text':'in Paris?'}]},"
                                "{'type':'reasoning','id':'rs_1','summary':[],'content':[{'type':'reasoning_text','text':'hm'}]},"
                                "{'type':'message','role':'assistant','content':[{'type':'output_text','text':'Let me see.',"
                                "'annotations':[]}]},"
                                "{'type':'function_call','id':'fc_1','call_id':'call_1','name':'f','arguments':'{\\'x\\':1}'},"
                                "{'type':'function_call_output','call_id':'call_1','output':'42'},"
                                "{'type':'function_call','call_id':'call_2','name':'f','arguments':'{}'},"
                                "{'type':'function_call_output','call_id':'call_2','output':[{'type':'input_text','text':'7'}]},"
                                "{'role':'user','content':'thanks'}]}", &e), 0);
    assert_int_equal(r.n_msgs, 7);
    static const char *const roles[] = {"system", "user", "assistant", "tool", "assistant", "tool", "user"};
    for (int i = 0; i < 7; i++) assert_string_equal(r.msgs[i].role, roles[i]);
    assert_string_equal(r.msgs[0].content, "Rules.");
    assert_string_equal(r.msgs[1].content, "Weather in Paris?");
    assert_string_equal(r.msgs[2].content, "Let me see.\n{\"tool_call\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}");
    assert_string_equal(json_string_value(json_object_get(r.msg_extra[2], "reasoning_content")), "hm");
    assert_string_equal(r.tool_ids[3], "call_1");
    assert_string_equal(r.msgs[3].content, "42");
    assert_string_equal(r.msgs[4].content, "{\"tool_call\":{\"name\":\"f\",\"arguments\":{}}}");
    assert_string_equal(r.tool_ids[5], "call_2");
    assert_string_equal(r.msgs[5].content, "7");
    assert_string_equal(r.msgs[6].content, "thanks");
    server_req_free(&r);
    /* tools and each tool_choice; the echo shows the tool with strict */
    static const struct { const char *choice; int mode; } ch[] = {
        {"", SERVER_TOOLS_AUTO}, {",'tool_choice':'auto'", SERVER_TOOLS_AUTO},
        {",'tool_choice':'required'", SERVER_TOOLS_REQUIRED},
        {",'tool_choice':{'type':'function','name':'f'}", SERVER_TOOLS_NAMED},
        {",'tool_choice':'none'", SERVER_TOOLS_NONE},
    };
    for (size_t i = 0; i < sizeof ch / sizeof ch[0]; i++) {
        char q[1024];
        snprintf(q, sizeof q, "{'input':'hi','tools':[" TOOL "]%s,'parallel_tool_calls':true}", ch[i].choice);
        assert_int_equal(rparse(&r, q, &e), 0);
        assert_int_equal(r.tools, ch[i].mode);
        assert_true((r.grammar != NULL) == (ch[i].mode != SERVER_TOOLS_NONE));
        if (ch[i].mode != SERVER_TOOLS_NONE) assert_non_null(strstr(r.msgs[0].content, "- f: adds"));
        assert_non_null(strstr(echo_field(&r, "tools"), "\"name\":\"f\""));
        assert_non_null(strstr(echo_field(&r, "tools"), "\"strict\":true"));
        assert_string_equal(echo_field(&r, "parallel_tool_calls"), "true");
        if (i == 3) assert_string_equal(echo_field(&r, "tool_choice"), "{\"name\":\"f\",\"type\":\"function\"}");
        server_req_free(&r);
    }
    /* text.format: json_schema and json_object hold the reply to a grammar; text does not */
    static const struct { const char *fmt; int grammar; } tf[] = {
        {"{'type':'text'}", 0},
        {"{'type':'json_object'}", 1},
        {"{'type':'json_schema','name':'c','strict':true,'schema':{'type':'object','properties':{'ok':{'type':'boolean'}},"
         "'required':['ok']}}", 1},
    };
    for (size_t i = 0; i < sizeof tf / sizeof tf[0]; i++) {
        char q[1024];
        snprintf(q, sizeof q, "{'input':'hi','text':{'format':%s}}", tf[i].fmt);
        assert_int_equal(rparse(&r, q, &e), 0);
        assert_int_equal(r.grammar != NULL, tf[i].grammar);
        if (i == 2) assert_non_null(strstr(r.grammar, "true"));
        server_req_free(&r);
    }
    /* reasoning.effort: minimal / none turn the thinking off, low..high on */
    assert_int_equal(rparse(&r, "{'input':'hi','reasoning':{'effort':'minimal'}}", &e), 0);
    assert_int_equal(r.reasoning_budget, 0);
    assert_true(json_is_false(json_object_get(r.tmpl_kwargs, "enable_thinking")));
    assert_string_equal(echo_field(&r, "reasoning"), "{\"effort\":\"minimal\",\"summary\":null}");
    server_req_free(&r);
    assert_int_equal(rparse(&r, "{'input':'hi','reasoning':{'effort':'high'},'chat_template_kwargs':{'x':1}}", &e), 0);
    assert_int_equal(r.reasoning_budget, SERVER_BUDGET_DEFAULT);
    assert_true(json_is_true(json_object_get(r.tmpl_kwargs, "enable_thinking")));
    assert_non_null(json_object_get(r.tmpl_kwargs, "x"));
    server_req_free(&r);
    assert_int_equal(rparse(&r, "{'input':'hi','reasoning':{'summary':'auto'}}", &e), 0);
    assert_null(r.tmpl_kwargs);
    server_req_free(&r);
}

static void test_bad(void **state) {
    (void)state;
    rbad("{}", "input", "required");
    rbad("{'input':[]}", "input", "required");
    rbad("{'input':3}", "input", "string or an array");
    rbad("{'input':'x','instructions':3}", "instructions", NULL);
    rbad("{'input':[1]}", "input[0]", NULL);
    rbad("{'input':[{'role':'tool','content':'x'}]}", "input[0]", "role");
    rbad("{'input':[{'role':'user'}]}", "input[0].content", NULL);
    rbad("{'input':[{'role':'user','content':[{'type':'input_image','image_url':'x'}]}]}", "input[0].content", "not supported");
    rbad("{'input':[{'role':'user','content':[{'type':'input_text'}]}]}", "input[0].content", "[0]");
    rbad("{'input':[{'type':'function_call','name':'f','arguments':'{}'}]}", "input[0]", "call_id");
    rbad("{'input':[{'type':'function_call','call_id':'c','name':'f','arguments':{}}]}", "input[0]", "arguments");
    rbad("{'input':[{'type':'function_call_output','output':'x'}]}", "input[0]", "call_id");
    rbad("{'input':[{'type':'function_call_output','call_id':'c','output':3}]}", "input[0].output", NULL);
    rbad("{'input':[{'type':'item_reference','id':'msg_1'}]}", "input[0]", "stateless");
    rbad("{'input':[{'type':'web_search_call','id':'ws_1'}]}", "input[0]", "not supported");
    rbad("{'input':'x','previous_response_id':'resp_1'}", "previous_response_id", "stateless");
    rbad("{'input':'x','conversation':'conv_1'}", "conversation", "stateless");
    rbad("{'input':'x','background':true}", "background", NULL);
    rbad("{'input':'x','prompt':{'id':'p'}}", "prompt", NULL);
    rbad("{'input':'x','metadata':3}", "metadata", NULL);
    rbad("{'input':'x','truncation':'sometimes'}", "truncation", NULL);
    rbad("{'input':'x','model':3}", "model", NULL);
    rbad("{'input':'x','max_output_tokens':0}", "max_output_tokens", "positive");
    rbad("{'input':'x','max_output_tokens':'9'}", "max_output_tokens", "positive");
    rbad("{'input':'x','temperature':'hot'}", "temperature", NULL);
    rbad("{'input':'x','stream':1}", "stream", NULL);
    rbad("{'input':'x','tools':{}}", "tools", NULL);
    rbad("{'input':'x','tools':[{'type':'web_search_preview'}]}", "tools[0]", "built-in");
    rbad("{'input':'x','tools':[{'type':'function','name':'a b'}]}", "tools[0]", "tools[0].name");
    rbad("{'input':'x','tools':[{'type':'function','name':'f','parameters':3}]}", "tools[0]", "tools[0].parameters");
    rbad("{'input':'x','tools':[{'type':'function','name':'f','strict':'yes'}]}", "tools[0]", "strict");
    rbad("{'input':'x','tools':[" TOOL "],'tool_choice':'sometimes'}", "tool_choice", NULL);
    rbad("{'input':'x','tools':[" TOOL "],'tool_choice':{'type':'file_search'}}", "tool_choice", "built-in");
    rbad("{'input':'x','tools':[" TOOL "],'tool_choice':{'type':'function','name':'g'}}", "tool_choice", "'g'");
    rbad("{'input':'x','tool_choice':'required'}", "tool_choice", NULL);
    rbad("{'input':'x','tools':[" TOOL "],'tool_choice':'required','text':{'format':{'type':'json_object'}}}", "text.format",
         "'text.format' cannot be used with 'tools'");
    rbad("{'input':'x','text':3}", "text", NULL);
    rbad("{'input':'x','text':{'format':{'type':'xml'}}}", "text.format", "xml");
    rbad("{'input':'x','text':{'format':{'type':'json_schema','name':'c'}}}", "text.format", "schema");
    rbad("{'input':'x','text':{'format':{'type':'json_schema','name':'c','schema':{'type':'string','pattern':'a+'}}}}",
         "text.format", "text.format");
    rbad("{'input':'x','reasoning':{'effort':'max'}}", "reasoning", "effort");
    rbad("{'input':'x','reasoning':'high'}", "reasoning", NULL);
    rbad("[1]", NULL, "JSON object");
    rbad("{nope", NULL, "not valid JSON");
}

/* ---- replies ------------------------------------------------------------------------------ */

/* a finished job of text (tools: a tools reply, 1 in the generic format, 2 in hermes'; reason: its
 * thinking apart) */
static void job_set(job_t *j, char *text, int tools, int reason, int finish) {
    int fmt = tools > 1 ? tools - 1 : 0;   /* tools 2: the hermes format */
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "resp_abc");
    j->api = SERVER_API_RESPONSES;
    j->kind = SERVER_REQ_CHAT;
    j->out = text, j->out_len = strlen(text), j->n_ids = 7, j->n_gen = 5, j->n_cached = 2;
    j->finish = finish, j->state = JOB_DONE, j->tools = tools != 0, j->tool_fmt = fmt, j->reason = reason;
    j->rcount.left = SERVER_THINK_COUNT - 3;   /* the engine counted 3 thinking tokens */
    j->resp_echo = json_pack("{s:n, s:[]}", "instructions", "tools");
}

static void job_clear(job_t *j) {
    server_responses_job_free(j);
    free(j->sse);
    free(j->racc);
    if (j->ts) toolstream_free(j->ts);
    free(j->ts);
}

/* j's Response (compact, keys sorted; malloc'd) */
static char *reply_of(struct server *srv, job_t *j) {
    json_t *o = server_responses_reply(srv, j);
    char *t = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    assert_non_null(t);
    return t;
}

/* j's stream (all at once: j is done), checked event by event: "event: T" names data's type,
 * sequence numbers count from 0, and the types are want's in order; returns the last event's
 * response (compact, keys sorted; malloc'd) */
static char *stream_of(struct server *srv, job_t *j, const char *const *want) {
    assert_int_equal(server_responses_sse(srv, j), 0);
    assert_int_equal(j->sse_phase, 2);
    assert_non_null(j->sse);
    char *p = j->sse, *last = NULL;
    int k = 0;
    while (*p) {
        char *nl = strchr(p, '\n'), *end = strstr(p, "\n\n");
        assert_true(nl && end && !strncmp(p, "event: ", 7) && !strncmp(nl + 1, "data: ", 6));
        *end = 0;
        json_t *d = json_loads(nl + 7, 0, NULL);
        assert_non_null(d);
        if (!want[k]) fail_msg("more events than expected: %s", p);
        if (strncmp(p + 7, want[k], strlen(want[k])) || p[7 + strlen(want[k])] != '\n' ||
            strcmp(json_string_value(json_object_get(d, "type")), want[k]))
            fail_msg("event %d: %.60s, want %s", k, p, want[k]);
        assert_int_equal(json_integer_value(json_object_get(d, "sequence_number")), k);
        if (json_object_get(d, "response")) {
            free(last);
            last = json_dumps(json_object_get(d, "response"), JSON_COMPACT | JSON_SORT_KEYS);
        }
        json_decref(d);
        k++;
        p = end + 2;
    }
    if (want[k]) fail_msg("event %s missing", want[k]);
    assert_int_equal(server_responses_sse(srv, j), 0);   /* done: nothing more */
    return last;
}

#define ITEM_OPEN "response.output_item.added", "response.content_part.added"
#define ITEM_DONE(kind) kind, "response.content_part.done", "response.output_item.done"

static void test_reply(void **state) {
    (void)state;
    struct server *srv = calloc(1, sizeof *srv);
    assert_non_null(srv);
    snprintf(srv->model_id, sizeof srv->model_id, "tiny");
    job_t j;
    char text[256];
    static const struct {
        const char *text;
        int tools, reason, finish;
        const char *want;          /* in the plain reply */
        const char *const ev[24];  /* the stream's events */
    } cases[] = {
        {"Hello", 0, 0, SCHED_STOP,
         "\"output\":[{\"content\":[{\"annotations\":[],\"logprobs\":[],\"text\":\"Hello\",\"type\":\"output_text\"}],"
         "\"id\":\"msg_abc00\",\"role\":\"assistant\",\"status\":\"completed\",\"type\":\"message\"}]",
         {"response.created", "response.in_progress", ITEM_OPEN, "response.output_text.delta",
          ITEM_DONE("response.output_text.done"), "response.completed", NULL}},
        {"Hel", 0, 0, SCHED_LENGTH, "\"incomplete_details\":{\"reason\":\"max_output_tokens\"}",
         {"response.created", "response.in_progress", ITEM_OPEN, "response.output_text.delta",
          ITEM_DONE("response.output_text.done"), "response.incomplete", NULL}},
        {"", 0, 0, SCHED_STOP, "\"text\":\"\",\"type\":\"output_text\"}],\"id\":\"msg_abc00\"",
         {"response.created", "response.in_progress", ITEM_OPEN, ITEM_DONE("response.output_text.done"), "response.completed",
          NULL}},
        {"{\"tool_call\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}", 1, 0, SCHED_STOP,
         "\"output\":[{\"arguments\":\"{\\\"x\\\":1}\",\"call_id\":\"call_abc00\",\"id\":\"fc_abc00\",\"name\":\"f\","
         "\"status\":\"completed\",\"type\":\"function_call\"}]",
         {"response.created", "response.in_progress", "response.output_item.added", "response.function_call_arguments.delta",
          "response.function_call_arguments.done", "response.output_item.done", "response.completed", NULL}},
        {"{\"response\":\"hi\"}", 1, 0, SCHED_STOP, "\"text\":\"hi\",\"type\":\"output_text\"",
         {"response.created", "response.in_progress", ITEM_OPEN, "response.output_text.delta",
          ITEM_DONE("response.output_text.done"), "response.completed", NULL}},
        /* parallel calls: an item each, in order */
        {"{\"tool_calls\":[{\"name\":\"f\",\"arguments\":{\"x\":1}},{\"name\":\"g\",\"arguments\":{}}]}", 1, 0, SCHED_STOP,
         "\"call_id\":\"call_abc00\",\"id\":\"fc_abc00\",\"name\":\"f\",\"status\":\"completed\",\"type\":\"function_call\"},"
         "{\"arguments\":\"{}\",\"call_id\":\"call_abc01\",\"id\":\"fc_abc01\",\"name\":\"g\"",
         {"response.created", "response.in_progress", "response.output_item.added", "response.function_call_arguments.delta",
          "response.function_call_arguments.done", "response.output_item.done", "response.output_item.added",
          "response.function_call_arguments.delta", "response.function_call_arguments.done", "response.output_item.done",
          "response.completed", NULL}},
        /* hermes: text before the call, the call, text after it (a message item of its own) */
        {"Let me see. <tool_call>{\"name\":\"f\",\"arguments\":{\"x\":2}}</tool_call> Done.", 2, 0, SCHED_STOP,
         "\"text\":\"Let me see.\",\"type\":\"output_text\"}],\"id\":\"msg_abc00\"",
         {"response.created", "response.in_progress", ITEM_OPEN, "response.output_text.delta",
          ITEM_DONE("response.output_text.done"), "response.output_item.added", "response.function_call_arguments.delta",
          "response.function_call_arguments.done", "response.output_item.done", ITEM_OPEN, "response.output_text.delta",
          ITEM_DONE("response.output_text.done"), "response.completed", NULL}},
        {"<think>hm</think>Hello", 0, 1, SCHED_STOP,
         "\"output\":[{\"content\":[{\"text\":\"hm\",\"type\":\"reasoning_text\"}],\"id\":\"rs_abc00\",\"status\":\"completed\","
         "\"summary\":[],\"type\":\"reasoning\"},{\"content\":[{\"annotations\":[],\"logprobs\":[],\"text\":\"Hello\","
         "\"type\":\"output_text\"}],\"id\":\"msg_abc01\"",
         {"response.created", "response.in_progress", ITEM_OPEN, "response.reasoning_text.delta",
          ITEM_DONE("response.reasoning_text.done"), ITEM_OPEN, "response.output_text.delta",
          ITEM_DONE("response.output_text.done"), "response.completed", NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(text, sizeof text, "%s", cases[i].text);
        job_set(&j, text, cases[i].tools, cases[i].reason, cases[i].finish);
        char *plain = reply_of(srv, &j);
        if (!strstr(plain, cases[i].want)) fail_msg("case %zu: %s lacks %s", i, plain, cases[i].want);
        assert_non_null(strstr(plain, "\"id\":\"resp_abc\""));
        assert_non_null(strstr(plain, "\"object\":\"response\""));
        const char *status = cases[i].finish == SCHED_LENGTH ? "\"status\":\"incomplete\"" : "\"status\":\"completed\"";
        assert_non_null(strstr(plain, status));
        char usage[256];
        snprintf(usage, sizeof usage, "\"usage\":{\"input_tokens\":7,\"input_tokens_details\":{\"cached_tokens\":2},"
                 "\"output_tokens\":5,\"output_tokens_details\":{\"reasoning_tokens\":%d},\"total_tokens\":12}",
                 cases[i].reason ? 3 : 0);
        if (!strstr(plain, usage)) fail_msg("case %zu: %s lacks %s", i, plain, usage);
        assert_non_null(strstr(plain, "\"instructions\":null"));   /* the echo */
        job_clear(&j);
        snprintf(text, sizeof text, "%s", cases[i].text);
        job_set(&j, text, cases[i].tools, cases[i].reason, cases[i].finish);
        char *last = stream_of(srv, &j, cases[i].ev);
        assert_non_null(last);
        if (strcmp(last, plain)) fail_msg("case %zu: the stream's last response\n%s\n!= the plain reply\n%s", i, last, plain);
        free(last);
        free(plain);
        job_clear(&j);
    }
    /* a failed job: the caller ends the stream, with an error event */
    snprintf(text, sizeof text, "x");
    job_set(&j, text, 0, 0, SCHED_ERROR);
    assert_int_equal(server_responses_sse(srv, &j), 1);
    server_err_t e;
    server_err_set(&e, 500, "server_error", NULL, NULL, "boom");
    server_responses_sse_end(&j, &e);
    assert_non_null(strstr(j.sse, "event: error\ndata: {\"type\":\"error\",\"sequence_number\":0,\"code\":\"server_error\","
                                  "\"message\":\"boom\",\"param\":null}"));
    job_clear(&j);
    free(srv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
