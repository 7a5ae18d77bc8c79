/* server_tools: OpenAI tool calling on /v1/chat/completions. In llama.cpp's "generic" format:
 * The request's "tools" / "tool_choice" become a system message that lists the tools and a JSON
 * Schema (→ GBNF) that holds the reply to one JSON object: {"tool_call": {"name", "arguments"}}
 * or, with "auto", {"response": "..."}; the generated text is parsed back into OpenAI's message
 * (tool_calls or content). With parallel_tool_calls (default false, as llama.cpp's) the reply is
 * {"tool_calls": [CALL, ...]} (1..8 calls). Not here: argument validation beyond what the
 * grammar enforces. With a --jinja template whose native format toolfmt.c knows (Hermes 2 Pro /
 * Qwen 2.5, Llama 3.x, Mistral Nemo; r->tool_fmt) the template gets the tools and structured
 * calls, "required" / a named choice hold the reply to that format's grammar, "auto" is free text
 * (held to the grammar from the format's marker on: r->grammar_trigger). Every format's reply is
 * read back by toolstream.h, whole (the plain reply) or chunk by chunk (OpenAI's streamed
 * deltas, which add up to the plain reply). */
#ifndef TERN_SERVER_TOOLS_H
#define TERN_SERVER_TOOLS_H
#include "coordinator/server_req.h"

#define SERVER_MAX_TOOLS 64          /* tools per request */
#define SERVER_MAX_TOOL_CALLS 16     /* tool_calls of one assistant message */
#define SERVER_MAX_PARALLEL 8        /* calls in one reply with parallel_tool_calls */
#define SERVER_MAX_TOOL_TEXT 8192    /* bytes of a tool's description / a tool_call_id (256) */

/* Parses "tools", "tool_choice" and "parallel_tool_calls" of a chat request (root: json_t *)
 * into r: r->tools, r->grammar (the reply's constraint) and a system message in r->msgs listing
 * the tools — or, in a native format (r->tool_fmt), r->tools_json for the template, the format's
 * grammar and r->grammar_trigger. Call after the messages and the generation fields. 0, or <0
 * with e (400 naming the field). */
int server_tools_parse(server_req_t *r, void *root, server_err_t *e);

/* An assistant message's "tool_calls" (json_t *, an array) rendered after *content as the JSON
 * the model would have produced ({"tool_call": ...} for one, {"tool_calls": [...]} for several);
 * *content is replaced (malloc'd). 0 or <0. */
int server_tools_render_calls(void *calls, char **content, server_err_t *e);

/* 1 when s is a valid function name: [a-zA-Z0-9_-]{1,64} */
int server_tools_name_ok(const char *s, size_t n);

/* An assistant message's (msg: json_t *) or, content NULL, a tool message's fields for a Jinja
 * template in *extra (a json_t * object the caller drops): {"content": its own content or null,
 * "tool_calls": [{"id"?, "type": "function", "function": {"name", "arguments": an object, as
 * llama.cpp passes them}}]} / {"name"?}. Calls that do not validate are left out (the caller
 * refuses them with server_tools_render_calls). 0 or <0 (OOM). */
int server_tools_msg_extra(void *msg, const char *content, void **extra, server_err_t *e);

/* The reply for generated text[0..n) of a tools request in format fmt (TOOLFMT_*), read by
 * toolstream.h: a json_t * message ({"role", "content", "tool_calls"}) or, with delta, the
 * whole reply as one streamed delta ({"content"} and/or {"tool_calls": [{"index": 0, ...}]});
 * call_id names the calls (a Mistral call keeps the model's id). *finish: "tool_calls",
 * "stop" (generic {"response"}), or fallback (the job's own reason) when the text holds no call
 * (it is then the content, as it came) or the last call was cut short. NULL: OOM. */
void *server_tools_reply(int fmt, const char *text, size_t n, const char *call_id, int delta, const char *fallback,
                         const char **finish);

struct toolstream;
/* The message of a finished reader (toolstream_finish'ed) as server_tools_reply's. NULL: OOM. */
void *server_tools_message(struct toolstream *s, const char *call_id, const char *fallback, const char **finish);
/* a finished reader's finish reason: "tool_calls" (its calls complete), "stop" (generic
 * {"response"}), else fallback */
const char *server_tools_finish(const struct toolstream *s, const char *fallback);
/* OpenAI's streamed delta of what reader s has decided since the last call: {"content": the
 * next text, "tool_calls": [{"index", "id", "type", "function": {"name", "arguments": ""...}}
 * for a call's first delta, {"index", "function": {"arguments": the next piece}} after]}; {}
 * when nothing is new. The deltas add up to server_tools_message's content and calls. NULL: OOM. */
void *server_tools_delta(struct toolstream *s, const char *call_id);

#endif
