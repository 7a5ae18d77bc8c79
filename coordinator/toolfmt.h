/* toolfmt: the tool-call formats of tool-trained chat templates, as llama.cpp's common/chat.cpp
 * uses them with --jinja: which format a template's source implies, the GBNF that holds a reply
 * to that format's calls, and the generated text parsed back into calls and content.
 *   hermes  (Hermes 2 Pro, Qwen 2.5): <tool_call>\n{"name": N, "arguments": {...}}\n</tool_call>
 *   llama3  (Llama 3.1 / 3.2 / 3.3):  {"name": N, "parameters": {...}} (a <|python_tag|> before it allowed)
 *   mistral (Mistral Nemo):           [TOOL_CALLS][{"name": N, "arguments": {...}, "id": "9 chars"}]
 *                                     (a reply opening with the array is read as calls too: in Nemo's
 *                                     vocabulary the marker is a control token, absent from the text
 *                                     unless the detokenizer preserves it, as serve's "auto" does)
 *   generic: anything else — server_tools.c's own JSON format (not parsed here).
 * Not here: the request's fields (server_tools.c), applying a lazy grammar (sched.c). */
#ifndef TERN_TOOLFMT_H
#define TERN_TOOLFMT_H
#include <stddef.h>

enum toolfmt { TOOLFMT_GENERIC = 0, TOOLFMT_HERMES = 1, TOOLFMT_LLAMA3 = 2, TOOLFMT_MISTRAL = 3 };

#define TOOLFMT_MAX_CALLS 16   /* calls one reply may hold (parsing stops there) */

/* the format a Jinja template's source text implies (llama.cpp's marker strings) */
int toolfmt_detect(const char *tmpl);
/* "generic", "hermes", "llama3", "mistral" ("generic" for any other value) */
const char *toolfmt_name(int fmt);

/* GBNF (malloc'd, start rule "root") holding a reply to one call of fmt — 1..max_calls with
 * max_calls > 1 where the format has several (hermes: blocks one per line; mistral: the array;
 * llama3: always one) — of any tool in calls (json_t *: an array of {"name", "params"} objects,
 * params a JSON Schema). NULL with a one-line reason in err (a schema the converter refuses,
 * or fmt generic). */
char *toolfmt_grammar(int fmt, void *calls, int max_calls, char *err, size_t errlen);

/* the text that starts a call of fmt in free text (llama.cpp's grammar trigger for "auto"):
 * "<tool_call>" (hermes), "[TOOL_CALLS]" (mistral); NULL where the call must open the reply
 * (llama3) or fmt has none (generic) */
const char *toolfmt_trigger(int fmt);

/* Parses generated text[0..n) (untrusted bytes) of format fmt. Returns the calls found as a
 * json_t * array of {"name": a valid function name, "arguments": an object, "id"?: mistral's
 * string}, and in *content / *content_len the text around them (malloc'd, NUL-terminated,
 * whitespace trimmed, NULL when empty; the model's bytes as they came, NULs and bad UTF-8 included). Without a well-formed call (or fmt generic): NULL, and
 * *content the whole text. Calls are all or nothing: one that does not parse (bad JSON, no
 * name, arguments not an object, more than TOOLFMT_MAX_CALLS) makes the whole text content.
 * *content NULL and NULL returned also on out of memory. */
void *toolfmt_parse(int fmt, const char *text, size_t n, char **content, size_t *content_len);

#endif
