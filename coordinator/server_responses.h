/* server_responses: OpenAI's Responses API (POST /v1/responses), stateless. A request is checked
 * in the Responses API's terms (each error names its field: input[i], text.format, tools[i], ...)
 * and rewritten as the chat-completions request it means — instructions as a system message,
 * input messages, function_call items as an assistant's tool_calls, function_call_output items as
 * tool messages, text.format as response_format, max_output_tokens as max_tokens — so it runs on
 * the same template, jobs, sampling, tool grammar and structured output; the reply is a Response
 * object (reasoning, message and function_call output items) and the stream its documented
 * events (response.created ... response.completed), both built by one reader of the job so the
 * stream adds up to the plain reply. Not here: stored responses (previous_response_id,
 * conversation, background, GET/DELETE /v1/responses/{id}), built-in tools (web_search,
 * file_search, computer use, MCP, ...), images and files in input, logprobs. */
#ifndef TERN_SERVER_RESPONSES_H
#define TERN_SERVER_RESPONSES_H
#include "coordinator/server_req.h"

/* Parses body[0..len) — a Responses create request — into r as a chat request (r->api =
 * SERVER_API_RESPONSES, r->resp_echo the request's fields a Response repeats) over the defaults
 * in *def, its tools in tool_fmt (TOOLFMT_*: the server template's). 0, or <0 with e (400 naming
 * the field in the Responses API's terms). On success the caller frees r with server_req_free. */
int server_responses_parse(server_req_t *r, const char *body, size_t len, const sampler_params_t *def, int tool_fmt,
                           server_err_t *e);

#endif
