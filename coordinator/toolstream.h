/* toolstream: the generated text of a tools reply read chunk by chunk into its message — content
 * and tool calls (name, model's id, arguments as a JSON text) — so that a stream can send the
 * content as it comes, a call once its name is read and its arguments as they are generated
 * (OpenAI's streamed tool_calls deltas). The same reader over the whole text gives the plain
 * reply, so the streamed deltas always add up to it, whatever the chunks. Formats (toolfmt.h):
 *   generic  {"tool_call": CALL} / {"tool_calls": [CALL, ...]} / {"response": "..."} (the reply)
 *   hermes   <tool_call> CALL </tool_call>, any number, text around them
 *   llama3   CALL opening the reply (after <|python_tag|>), text after it
 *   mistral  [TOOL_CALLS] [CALL, ...] (or the reply opening with "[{"), text around
 * CALL is {"name": N, "arguments": {...}} (llama3: "parameters"; mistral: "id" too). A call
 * counts once its name is read (mistral: its id too, which follows the arguments): from then on
 * it stays, even when the text breaks off or turns bad (its arguments are then what came, as
 * OpenAI's are when cut short); text that breaks before that is content, as it came. Arguments
 * are the model's JSON text with the whitespace outside strings left out. Whitespace before a
 * call, and at either end of content around calls, is left out of it; a reply with no call is
 * its text as it came. Not here: JSON of the reply (server_tools.c). */
#ifndef TERN_TOOLSTREAM_H
#define TERN_TOOLSTREAM_H
#include "coordinator/toolfmt.h"
#include "core/strbuf.h"
#include <stddef.h>

typedef struct toolstream_call {
    char name[65];
    char id[257];              /* the model's id (mistral), "" when none */
    strbuf_t args;             /* the arguments' JSON text so far */
    int committed;             /* the call is part of the reply (its name, and id, are read) */
    int hdr_sent;              /* streaming: the call's first delta is out */
    size_t sent;               /* streaming: bytes of args out */
    int has_args;
} toolstream_call_t;

typedef struct toolstream {
    int fmt;                   /* TOOLFMT_* */
    strbuf_t text;             /* all the text fed */
    size_t pos;                /* text before it is decided */
    int st, cont;              /* the reader's state; where a call's end leads */
    int key;                   /* the call key whose value comes next */
    int adepth, astr, aesc;    /* inside a call's arguments object */
    size_t open_at;            /* where the calls being read began (their text, if they fail) */
    int commits;               /* calls committed since open_at */
    int final, incomplete;     /* finished; a call was cut short */
    int response;              /* generic: the reply was {"response": ...} */
    int drop_ws;               /* whitespace right after calls is not content */
    strbuf_t content, pend;    /* content so far; whitespace that may still precede a call */
    size_t content_sent;       /* streaming: bytes of content out */
    toolstream_call_t calls[TOOLFMT_MAX_CALLS];
    int n_calls;               /* records in calls (the last one may not be committed yet) */
    int n_committed;
    size_t content_before;     /* bytes of content before the first call (set when it commits) */
} toolstream_t;

void toolstream_init(toolstream_t *s, int fmt);
void toolstream_free(toolstream_t *s);
/* Reads the next n bytes of generated text (untrusted; any bytes). 0, or -1 on out of memory. */
int toolstream_feed(toolstream_t *s, const char *p, size_t n);
/* The text is complete: what was held back is decided. 0 or -1 (OOM). */
int toolstream_finish(toolstream_t *s);
/* bytes of b from `from` that can be sent now: all once finished, else up to the last whole
 * UTF-8 character (a delta must not split one) */
size_t toolstream_ready(const toolstream_t *s, const strbuf_t *b, size_t from);

#endif
