/* fuzz_http_json: libFuzzer target for the HTTP API's untrusted input — request bodies of
 * every route through server_req_parse (the first byte picks the route, % 8; from 0x80 Anthropic's
 * /v1/messages, odd: count_tokens, through server_anthropic_parse; from 0x80 with bit 1 set
 * OpenAI's /v1/responses through server_responses_parse, whose parsed request then reads the body
 * as a finished job's text into a Response, plain and streamed: the stream's last response must
 * be the plain reply), the error body for
 * rejected ones (both shapes), the stop-string matcher fed the body in pieces with the request's own stop
 * strings, and UTF-8 sanitizing of arbitrary bytes. Grammars, JSON Schemas, response_format,
 * tools and logit biases come out of the parse ready for the engine (checked here). Seeds:
 * tests/fuzz/seeds/http_json. Must never crash, leak or read past the
 * input; a parsed request must satisfy the invariants the server relies on.
 *   cmake -DTERN_FUZZ=ON -DCMAKE_C_COMPILER=clang; ./fuzz_http_json -max_total_time=60 */
#include "coordinator/grammar.h"
#include "coordinator/server_anthropic.h"
#include "coordinator/server_int.h"
#include "coordinator/server_req.h"
#include "coordinator/server_responses.h"
#include "coordinator/server_stop.h"
#include "coordinator/server_tools.h"
#include "coordinator/toolstream.h"
#include <math.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_req(const server_req_t *r) {
    if (r->kind == SERVER_REQ_COMPLETION && !r->prompt && !r->ids) abort();
    if (r->kind == SERVER_REQ_CHAT && (r->n_msgs < 1 || !r->msgs)) abort();
    if (r->kind == SERVER_REQ_TOKENIZE && !r->prompt) abort();
    if (r->kind == SERVER_REQ_NATIVE && !r->prompt && !r->ids && r->n_parts < 2) abort();
    for (int i = 0; i < r->n_parts; i++)   /* a mixed prompt: strings and non-empty runs of ids */
        if (!r->parts[i].text == !r->parts[i].ids || (r->parts[i].ids && r->parts[i].n_ids < 1)) abort();
    if (r->kind == SERVER_REQ_NATIVE && (r->id_slot < -1 || r->top_logprobs > SAMPLER_TOP_MAX)) abort();
    if (r->kind == SERVER_REQ_TEMPLATE && (r->n_msgs < 1 || !r->msgs)) abort();
    if (r->kind == SERVER_REQ_INFILL && (!r->input_prefix || !r->input_suffix || r->ids || r->n_parts ||
                                         r->id_slot < -1 || r->n_extra < 0 || r->n_extra > SERVER_MAX_EXTRA))
        abort();
    for (int i = 0; i < r->n_extra; i++)   /* /infill's files: a text each, the name optional */
        if (!r->extra[i].text) abort();
    if (r->kind == SERVER_REQ_EMBEDDINGS && ((!r->prompt && !r->ids) || r->dimensions == 0 || r->dimensions < -1)) abort();
    for (int i = 0; i < r->n_more; i++)
        if (!r->more[i].text && (!r->more[i].ids || r->more[i].n_ids < 1)) abort();
    if (r->n_ids < 0 || r->n_stop < 0 || r->n_stop > SERVER_MAX_STOP) abort();
    for (int i = 0; i < r->n_ids; i++)
        if (r->ids[i] < 0) abort();
    for (int i = 0; i < r->n_stop; i++)
        if (!r->stop[i][0] || strlen(r->stop[i]) > SERVER_MAX_STOP_LEN) abort();
    for (int i = 0; i < r->n_msgs; i++)
        if (!r->msgs[i].role || !r->msgs[i].content) abort();
    if (r->max_tokens == 0 || r->max_tokens < -1) abort();
    if (r->sp.n_order < 0 || r->sp.n_order > SAMPLER_ORDER_MAX) abort();   /* "samplers": known letters only */
    for (int i = 0; i < r->sp.n_order; i++)
        if (!r->sp.order[i] || !strchr(SAMPLER_ORDER_DEFAULT, r->sp.order[i])) abort();
    /* the engine takes these as they are: a grammar that parses, biases in range, sane tools */
    if (r->grammar) {
        char err[256];
        grammar_t *g = grammar_parse(r->grammar, strlen(r->grammar), NULL, err, sizeof err);
        if (!g) abort();
        grammar_destroy(&g);
    }
    /* tools: a grammar, except "auto" in a native format (free text, parsed after) */
    if (r->tools != SERVER_TOOLS_NONE && ((!r->grammar && (r->tool_fmt == 0 || r->tools != SERVER_TOOLS_AUTO)) ||
                                          r->kind != SERVER_REQ_CHAT || (r->tool_fmt != 0) != (r->tools_json != NULL)))
        abort();
    if (r->grammar_trigger && (!r->grammar || r->tools != SERVER_TOOLS_AUTO || !*r->grammar_trigger))
        abort();
    if (r->sp.n_bias < 0 || r->sp.n_bias > SAMPLER_BIAS_MAX) abort();
    for (int i = 0; i < r->sp.n_bias; i++)
        if (r->sp.bias_id[i] < 0 || !(fabsf(r->sp.bias[i]) <= 100)) abort();
    if (!isfinite(r->sp.freq_penalty) || !isfinite(r->sp.presence_penalty)) abort();
}

/* the body, cut into pieces of 1..7 bytes, through a stop matcher with the request's stops */
static void run_stops(const server_req_t *r, const uint8_t *data, size_t size) {
    server_stop_t st;
    server_stop_init(&st, r->stop, r->n_stop);
    size_t at = 0, released = 0;
    int hit = 0;
    while (at < size && !hit) {
        size_t k = 1 + data[at] % 7;
        if (k > size - at) k = size - at;
        const char *out;
        size_t n;
        hit = server_stop_feed(&st, (const char *)data + at, k, &out, &n);
        if (hit < 0) break;
        if (memcmp(out, data + released, n) != 0) abort();   /* releases the input, in order */
        released += n;
        at += k;
    }
    if (!hit) {
        const char *out;
        size_t n;
        server_stop_flush(&st, &out, &n);
        released += n;
        if (released != size) abort();
    }
    server_stop_free(&st);
}

/* parsed Responses request r's finished job with text p[0..n) (reason: its thinking apart) */
static void resp_job(job_t *j, const server_req_t *r, char *p, size_t n, int reason) {
    memset(j, 0, sizeof *j);
    snprintf(j->id, sizeof j->id, "resp_f");
    j->api = SERVER_API_RESPONSES, j->kind = SERVER_REQ_CHAT, j->state = JOB_DONE;
    j->finish = n % 2 ? SCHED_STOP : SCHED_LENGTH;
    j->tools = r->tools != SERVER_TOOLS_NONE, j->tool_fmt = r->tool_fmt, j->reason = reason, j->think_open = reason > 1;
    j->out = p, j->out_len = n, j->n_gen = (int)n;
    j->resp_echo = json_deep_copy(r->resp_echo);
}

static void resp_job_free(job_t *j) {
    server_responses_job_free(j);
    free(j->sse);
    free(j->racc);
    if (j->ts) toolstream_free(j->ts);
    free(j->ts);
}

/* the body as generated text: the plain Response, and the stream (done at once) whose last
 * event's response must equal it */
static void run_reply(const server_req_t *r, const uint8_t *data, size_t size) {
    static struct server srv;   /* model_id only */
    job_t j;
    char *a = malloc(size + 1), *b = malloc(size + 1);
    if (!a || !b) abort();
    memcpy(a, data, size);
    memcpy(b, data, size);
    int reason = size ? data[size - 1] % 3 : 0;
    resp_job(&j, r, a, size, reason);
    json_t *plain = server_responses_reply(&srv, &j);
    char *pt = plain ? json_dumps(plain, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(plain);
    resp_job_free(&j);
    resp_job(&j, r, b, size, reason);
    if (server_responses_sse(&srv, &j) != 0 || j.sse_phase != 2 || !j.sse) abort();
    const char *last = strstr(j.sse, "event: response.completed\n");
    if (!last) last = strstr(j.sse, "event: response.incomplete\n");
    json_t *ev = last ? json_loads(strchr(last, '\n') + 7, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    char *st = ev ? json_dumps(json_object_get(ev, "response"), JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (!pt || !st || strcmp(pt, st)) abort();
    json_decref(ev);
    free(pt);
    free(st);
    resp_job_free(&j);
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int kind = data[0] % 8;   /* SERVER_REQ_COMPLETION .. SERVER_REQ_INFILL */
    server_req_t r;
    server_err_t e;
    memset(&e, 0, sizeof e);
    int fmt = (data[0] >> 3) & 3;   /* the tool format of the server's template (TOOLFMT_*) */
    int resp = data[0] >= 0x80 && (data[0] & 2), anth = data[0] >= 0x80 && !resp;
    int rc = resp ? server_responses_parse(&r, (const char *)data + 1, size - 1, NULL, fmt, &e)
             : anth ? server_anthropic_parse(&r, data[0] & 1, (const char *)data + 1, size - 1, NULL, fmt, &e)
                    : server_req_parse_fmt(&r, kind, (const char *)data + 1, size - 1, NULL, fmt, &e);
    if (rc == 0) {
        if (anth && (r.kind != SERVER_REQ_CHAT || r.api != SERVER_API_ANTHROPIC || (!(data[0] & 1) && r.max_tokens < 1)))
            abort();
        if (resp && (r.kind != SERVER_REQ_CHAT || r.api != SERVER_API_RESPONSES || !r.resp_echo || r.n != 1)) abort();
        check_req(&r);
        run_stops(&r, data + 1, size - 1);
        if (resp) run_reply(&r, data + 1, size - 1);
        server_req_free(&r);
    } else {
        if (e.status < 400 || !e.msg[0]) abort();
        free(server_err_json(&e));
        free(server_anthropic_err_json(&e));
    }
    json_t *t = server_json_text((const char *)data, size);
    if (!t) abort();
    json_decref(t);
    return 0;
}
