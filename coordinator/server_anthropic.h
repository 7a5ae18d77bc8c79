/* server_anthropic: Anthropic's Messages API (POST /v1/messages, /v1/messages/count_tokens) as
 * llama-server offers it. A request is checked in Anthropic's terms (each error names its field)
 * and rewritten as the chat-completions request it means — system, messages with tool_use /
 * tool_result blocks, stop_sequences, tools, tool_choice — so it runs on the same template,
 * jobs, sampling, stop strings and tool grammar; replies, SSE events and errors are written in
 * Anthropic's shapes. A reasoning model's <think>...</think> (reasoning.h)
 * comes back as a thinking block (thinking_delta events), unsigned. Not here: images, documents,
 * the request's thinking budget, server tools, prompt caching. */
#ifndef TERN_SERVER_ANTHROPIC_H
#define TERN_SERVER_ANTHROPIC_H
#include "coordinator/server_req.h"

/* Parses body[0..len) — a Messages request, or with count a count_tokens one (no max_tokens) —
 * into r as a chat request (r->api = SERVER_API_ANTHROPIC) over the defaults in *def, its tools
 * in tool_fmt (TOOLFMT_*: the server template's, server_req_parse_fmt). 0, or <0 with e (400
 * naming the field). On success the caller frees r with server_req_free. */
int server_anthropic_parse(server_req_t *r, int count, const char *body, size_t len, const sampler_params_t *def,
                           int tool_fmt, server_err_t *e);

/* {"type":"error","error":{"type","message"}} for e (the type from its HTTP status), malloc'd;
 * NULL: out of memory */
char *server_anthropic_err_json(const server_err_t *e);

/* The error shape of the replies made on this thread from now on: 1 Anthropic's, 0 OpenAI's
 * (the default). The router sets it per request (one thread a connection). */
void server_anthropic_style(int on);
/* e's body in this thread's error shape (malloc'd; NULL: out of memory) */
char *server_err_body(const server_err_t *e);

#endif
