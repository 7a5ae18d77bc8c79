/* server_req: the HTTP API's request bodies — parses and validates the JSON of
 * /v1/completions, /v1/chat/completions, /v1/embeddings, /tokenize, /detokenize and llama.cpp's
 * /completion and /apply-template into a plain struct, and
 * writes OpenAI-shaped error bodies. Untrusted input: every field is type- and range-checked,
 * unknown fields are ignored. Not here: tokenization or anything else that needs the model. */
#ifndef TERN_SERVER_REQ_H
#define TERN_SERVER_REQ_H
#include <stddef.h>
#include <stdint.h>
#include "coordinator/infill.h"
#include "coordinator/tokenizer.h"
#include "worker/sampler.h"

enum server_req_kind {
    SERVER_REQ_COMPLETION = 0,
    SERVER_REQ_CHAT = 1,
    SERVER_REQ_TOKENIZE = 2,
    SERVER_REQ_DETOKENIZE = 3,
    SERVER_REQ_EMBEDDINGS = 4,
    SERVER_REQ_NATIVE = 5,      /* llama.cpp's POST /completion (server_native.c) */
    SERVER_REQ_TEMPLATE = 6,    /* llama.cpp's POST /apply-template: messages only */
    SERVER_REQ_INFILL = 7,      /* llama.cpp's POST /infill: /completion's fields and the FIM inputs */
};

#define SERVER_MAX_STOP 16          /* stop strings per request */
#define SERVER_MAX_STOP_LEN 256     /* bytes per stop string */
#define SERVER_MAX_MSGS 4096        /* chat messages per request */
#define SERVER_MAX_CHOICES 16       /* choices per request: prompts x n */
#define SERVER_BUDGET_DEFAULT (-2)   /* reasoning_budget not given */
#define SERVER_KEEP_DEFAULT (-2)    /* server_req_t.n_keep when the request gives none */
#define SERVER_MAX_EXTRA 4096       /* /infill's input_extra chunks per request */

/* the API a request came in by: its reply's and errors' shapes (server_anthropic.c,
 * server_responses.c: OpenAI's Responses API) */
enum server_api { SERVER_API_OPENAI = 0, SERVER_API_ANTHROPIC = 1, SERVER_API_RESPONSES = 2 };

/* tool_choice (server_tools.c); NONE also when the request has no tools */
enum server_tools_mode { SERVER_TOOLS_NONE = 0, SERVER_TOOLS_AUTO = 1, SERVER_TOOLS_REQUIRED = 2, SERVER_TOOLS_NAMED = 3 };

/* a completions prompt after the first (a request may carry several: "prompt": [p0, p1, ...]) */
typedef struct server_prompt {
    char *text;              /* or NULL: */
    int32_t *ids;
    int n_ids;
} server_prompt_t;

typedef struct server_req {
    int kind;
    int api;                 /* SERVER_API_*: set by the route, not parsed */
    void *resp_echo;         /* SERVER_API_RESPONSES: the request's fields its Response repeats
                              * (json_t *, owned; the first job takes it) */
    char *prompt;            /* completion: text prompt; tokenize: content (owned), or NULL */
    int32_t *ids;            /* completion prompt given as token ids / detokenize tokens (owned) */
    int n_ids;
    server_prompt_t *more;   /* completions: the prompts after the first (owned), n_more of them */
    int n_more;
    int n;                   /* choices per prompt (OpenAI's n; seeds differ between them) */
    chat_msg_t *msgs;        /* chat: role and content strings owned */
    char **tool_ids;         /* (n_msgs,) or NULL: a "tool" message's tool_call_id (owned), else NULL */
    int n_msgs;
    void **msg_extra;        /* (n_msgs,) or NULL: json_t * fields a Jinja template sees over message
                              * i (an assistant's structured tool_calls and own content, a tool
                              * message's tool_call_id and name; owned references), else NULL */
    int reasoning_format;    /* chat: REASONING_* (reasoning.h) of "reasoning_format"; -1: the server's */
    int reasoning_budget;    /* chat: "reasoning_budget" (-1 free, 0 no thinking, N > 0 tokens);
                              * SERVER_BUDGET_DEFAULT: the server's --reasoning-budget */
    void *tmpl_kwargs;       /* chat, apply-template: "chat_template_kwargs" (json_t * object, owned;
                              * NULL: none), variables for a Jinja template; server_gen_kwargs adds
                              * the server's enable_thinking under them */
    int tools;               /* SERVER_TOOLS_*: the reply is a tool call / response object */
    int tool_fmt;            /* TOOLFMT_* (toolfmt.h) the tools take: the server template's native
                              * format (server_req_parse_fmt), else generic */
    void *tools_json;        /* native formats: the request's "tools" (json_t *, owned) for the
                              * template; NULL with the generic format (a system message lists them) */
    int max_tokens;          /* -1: not given */
    sampler_params_t sp;     /* the caller's defaults overlaid with the request's fields */
    char *stop[SERVER_MAX_STOP];
    int n_stop;
    int stream, include_usage;
    int ignore_eos;          /* llama.cpp's: keep generating past end-of-generation tokens */
    char **dry_breakers;     /* llama.cpp's dry_sequence_breakers (owned; NULL: not given, sp's
                              * breakers stay — the server's); tokenized when the job starts */
    int n_dry_breakers;
    int seed_set;            /* the request chose its seed */
    int logprobs;            /* the reply carries the sampled tokens' log-probabilities (sp.logprobs
                              * is set to match): completions' "logprobs": 0..5, chat's "logprobs": true */
    int top_logprobs;        /* alternatives asked per token (completions' logprobs N, chat's
                              * top_logprobs); sp.top_logprobs is set to match */
    int cache_prompt;        /* llama.cpp's: 0 = feed this prompt whole even when a slot has its
                              * beginning cached (default 1) */
    int n_keep;              /* llama.cpp's: with the server's --context-shift, prompt tokens a shift
                             * keeps after the BOS (-1: the whole prompt; SERVER_KEEP_DEFAULT: not
                             * given, the server's --keep) */
    int echo;                /* completions: the reply starts with the prompt (and with logprobs, the
                              * prompt tokens' own, the first null); max_tokens may then be 0 */
    int add_special, parse_special, with_pieces;   /* tokenize */
    char *grammar;           /* GBNF the output must follow (owned; checked: it parses), from
                              * "grammar" (llama.cpp's), "json_schema" (llama.cpp's) or OpenAI's
                              * "response_format" (json_object, json_schema); NULL: free text */
    char *grammar_trigger;   /* non-NULL: the grammar is lazy (free text until this text; owned) —
                              * a native tool format's "auto" (server_tools.c) */
    /* embeddings: "input" (or llama.cpp's "content") in prompt / ids / more as a completions
     * prompt list */
    int base64;              /* "encoding_format": "base64" (little-endian f32 bytes) */
    int dimensions;          /* -1: not given (the server refuses any other than n_embd) */
    /* native (/completion): a mixed prompt [12, "text", 34] as its parts in order (owned;
     * tokenized by server_native.c into ids), llama.cpp's n_probs (-> logprobs, top_logprobs),
     * return_tokens and id_slot (-1: any) */
    server_prompt_t *parts;
    int n_parts;
    int return_tokens, id_slot;
    /* infill (/infill): the text before and after the gap (owned) and input_extra's files
     * (owned); its optional "prompt" (text that continues the prefix) is in prompt */
    char *input_prefix, *input_suffix;
    infill_chunk_t *extra;
    int n_extra;
} server_req_t;

/* a client error: HTTP status, OpenAI error type and code, offending parameter, message */
typedef struct server_err {
    int status;
    const char *type;        /* "invalid_request_error", "authentication_error", ... */
    const char *code;        /* "invalid_json", "invalid_value", ... or NULL */
    char param[48];          /* "" when none */
    char msg[256];
} server_err_t;

int server_err_set(server_err_t *e, int status, const char *type, const char *code, const char *param,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#define SERVER_MAX_DRY_BREAKERS 64

/* Parses body[0..len) as a request of `kind` over the defaults in *def. Returns 0, or <0 with
 * e filled (status 400). On success the caller frees r with server_req_free. */
int server_req_parse(server_req_t *r, int kind, const char *body, size_t len, const sampler_params_t *def,
                     server_err_t *e);
/* server_req_parse for a server whose chat template calls tools in tool_fmt (TOOLFMT_*,
 * chat_tool_format): a chat request's tools then take that format (server_tools.c) */
int server_req_parse_fmt(server_req_t *r, int kind, const char *body, size_t len, const sampler_params_t *def,
                         int tool_fmt, server_err_t *e);
void server_req_free(server_req_t *r);

/* {"error":{"message","type","param","code"}} as a malloc'd NUL-terminated string (NULL: OOM) */
char *server_err_json(const server_err_t *e);
/* s[0..n) as a jansson string (json_t *), invalid UTF-8 bytes replaced by U+FFFD; NULL: OOM */
void *server_json_text(const char *s, size_t n);
/* the characters server_json_text(s, n) holds: valid ones, and one U+FFFD per bad stretch */
size_t server_text_chars(const char *s, size_t n);
/* 1 when s[0..n) is valid UTF-8 */
int server_text_valid(const char *s, size_t n);

#endif
