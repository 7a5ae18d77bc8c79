/* tokenizer: text ↔ token ids from GGUF tokenizer metadata — byte-level BPE (gpt2 family with
 * the pre-tokenizer regexes of the common `pre` types, via PCRE2) and SentencePiece (llama
 * model: scores, byte fallback, ▁). Special tokens in text are parsed when allowed. Immutable
 * after load, so one tokenizer serves many threads. */
#ifndef TERN_TOKENIZER_H
#define TERN_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>
#include "core/gguf.h"

typedef struct tokenizer tokenizer_t;

int tokenizer_load(tokenizer_t **out, const gguf_t *g, char *err, size_t errlen);
void tokenizer_destroy(tokenizer_t **t);

int tokenizer_n_vocab(const tokenizer_t *t);
int tokenizer_bos(const tokenizer_t *t);     /* -1 when none */
int tokenizer_eos(const tokenizer_t *t);
int tokenizer_eot(const tokenizer_t *t);     /* <|eot_id|> / <|im_end|>, or -1 */
int tokenizer_add_bos(const tokenizer_t *t); /* tokenizer.ggml.add_bos_token (default per model type) */
int tokenizer_is_eog(const tokenizer_t *t, int id);  /* end of generation: eos, eot, ... */

/* Fill-in-the-middle tokens (llama.cpp's llama_vocab_fim_*): from tokenizer.ggml.fim_*_token_id
 * (older files: prefix/suffix/middle_token_id), else found by their text as llama.cpp does
 * (<|fim_prefix|>, <fim-prefix>, <PRE>, ...; tokenizer_fim_names). Such a token is a control
 * token whatever the file says; FIM_PAD, FIM_REP and FIM_SEP also end generation. */
enum tokenizer_fim {
    TOKENIZER_FIM_PRE = 0, TOKENIZER_FIM_SUF = 1, TOKENIZER_FIM_MID = 2,
    TOKENIZER_FIM_PAD = 3, TOKENIZER_FIM_REP = 4, TOKENIZER_FIM_SEP = 5, TOKENIZER_FIM_N = 6
};
int tokenizer_fim(const tokenizer_t *t, int which);   /* the id, or -1 when the model has none */
/* the GGUF key of FIM token `which` ("tokenizer.ggml.fim_pre_token_id", ...) */
const char *tokenizer_fim_key(int which);
/* the texts FIM token `which` is known by, NULL-terminated, in llama.cpp's order of preference */
const char *const *tokenizer_fim_names(int which);

/* Tokenizes text[0..len). add_bos: prepend BOS when the vocab has one (caller decides, usually
 * tokenizer_add_bos()). parse_special: recognise <|...|> control tokens in text.
 * Writes at most cap ids; returns the total count needed (may exceed cap) or <0 on error. */
int tokenizer_encode(const tokenizer_t *t, const char *text, size_t len, int add_bos, int parse_special,
                     int32_t *ids, int cap);
/* The bytes of one token as they contribute to the text (byte tokens decoded, ▁ → space,
 * byte-level BPE unicode mapped back to bytes). Control tokens give "" unless render_special.
 * Returns the byte count (may exceed cap: then nothing useful was written) or <0 for a bad id. */
int tokenizer_piece(const tokenizer_t *t, int id, int render_special, char *buf, int cap);
/* The raw vocabulary string of a token (as stored), NUL-terminated copy; for `tern tokenize`. */
int tokenizer_token_text(const tokenizer_t *t, int id, char *buf, int cap);
int tokenizer_find(const tokenizer_t *t, const char *token_text);   /* id or -1 */
/* the longest piece in bytes: detok_feed never truncates when cap >= this + 8 */
int tokenizer_max_piece(const tokenizer_t *t);

/* Whole-sequence decode (handles SPM's leading-space rule). Returns bytes needed. */
int tokenizer_decode(const tokenizer_t *t, const int32_t *ids, int n, int render_special, char *buf, int cap);

/* Incremental detokenizer for streaming: feed ids, get out only complete UTF-8 characters;
 * bytes of a split character are held until it completes (flush at the end). */
typedef struct detok {
    const tokenizer_t *t;
    char pending[8];
    int npending;
    int first;          /* SPM leading-space rule: 2 at the start (a BOS may come first), 1 strip the next piece, 0 done */
    int render_special;
    int preserve;       /* -1, or a control token rendered as its text all the same (detok_preserve) */
} detok_t;
void detok_init(detok_t *d, const tokenizer_t *t, int render_special);
/* After detok_init: control token id (or -1: none) shows as its text (llama.cpp's preserved
 * tokens): a tool-call marker that is a control token, such as Mistral Nemo's [TOOL_CALLS], must
 * reach the reply's parser, which finds the calls after it wherever it stands in the text. */
void detok_preserve(detok_t *d, int id);
/* After detok_init: the text continues one already started (a generation after its prompt), so
 * SPM's leading-space rule does not apply — "is" + "▁Paris" reads "is Paris", not "isParis". */
void detok_continue(detok_t *d);
/* appends the printable bytes for token id to out (cap); returns bytes written (<= cap) */
int detok_feed(detok_t *d, int id, char *out, int cap);
int detok_flush(detok_t *d, char *out, int cap);

/* chat templates: formats messages with the model's template (tokenizer.chat_template matched
 * to a known family: llama3, bitnet (2B-4T "User: ...<|eot_id|>Assistant: "), falcon3, chatml,
 * llama2) and appends the assistant prefix. Returns bytes needed or <0 when unknown.
 * After chat_template_set(..., jinja = 1) the template itself is rendered (coordinator/jinja.h)
 * with messages, add_generation_prompt, bos_token, eos_token and tools = none (chat_apply_tools
 * passes the request's tools and structured tool calls); a leading BOS
 * text is dropped when the tokenizer adds BOS itself (as llama.cpp does). A template that
 * refuses the conversation (raise_exception) gives TERN_EINVAL, one that fails otherwise
 * TERN_EFORMAT; chat_error() then holds the one-line reason (per thread). */
typedef struct chat_msg { const char *role; const char *content; } chat_msg_t;
int chat_apply(const tokenizer_t *t, const chat_msg_t *msgs, int n, char *out, int cap);
/* chat_apply with a "tool" message's tool_call_id (tool_call_ids[i], or NULL: none; the array
 * may be NULL) for Jinja templates, and add_generation_prompt (the family formats always add it) */
int chat_apply_ex(const tokenizer_t *t, const chat_msg_t *msgs, int n, const char *const *tool_call_ids,
                  int add_generation_prompt, char *out, int cap);
/* chat_apply_ex for a Jinja template with the tool fields HF's apply_chat_template passes:
 * tools (json_t *: the request's OpenAI array, or NULL: none) and extra[i] (json_t * object or
 * NULL; extra may be NULL) merged over message i — an assistant's structured "tool_calls"
 * (arguments an object) and its own "content", a tool message's "tool_call_id" and "name".
 * Without --jinja the same as chat_apply_ex (extra and tools unused). */
int chat_apply_tools(const tokenizer_t *t, const chat_msg_t *msgs, int n, const char *const *tool_call_ids,
                     void *const *extra, void *tools, int add_generation_prompt, char *out, int cap);
/* chat_apply_tools with kwargs (json_t * object, or NULL): more variables for a Jinja template,
 * set over the others (llama.cpp's chat_template_kwargs, e.g. {"enable_thinking": false}) */
int chat_apply_vars(const tokenizer_t *t, const chat_msg_t *msgs, int n, const char *const *tool_call_ids,
                    void *const *extra, void *tools, void *kwargs, int add_generation_prompt, char *out, int cap);
/* 1 when the template in use (the Jinja one, else the model's tokenizer.chat_template) writes
 * "<think>": a reasoning model's, whose output --reasoning-format auto splits */
int chat_template_thinks(const tokenizer_t *t);
/* the template's native tool-call format (TOOLFMT_*, coordinator/toolfmt.h): detected from the
 * Jinja template's source as llama.cpp does; TOOLFMT_GENERIC without --jinja */
int chat_tool_format(const tokenizer_t *t);
const char *chat_error(void);
/* "jinja" when the template is rendered, else the family's name */
const char *chat_template_name(const tokenizer_t *t);
/* Chooses the formatter, once, after tokenizer_load and before any chat_apply (llama.cpp's
 * --chat-template / --chat-template-file / --jinja). spec: NULL or "" for the model's
 * tokenizer.chat_template, a family name (llama3, bitnet, falcon3, chatml, llama2, llama2-sys,
 * phi3: that formatter, even with jinja) or a template text. jinja: render the text with the
 * interpreter; without it a text is matched to a family as the model's own is. 0, or <0 with err:
 * jinja but the model has no template, a template that does not parse (line:col). */
int chat_template_set(tokenizer_t *t, const char *spec, int jinja, char *err, size_t errlen);
/* For `tern info`: what becomes of a template text, one line into out (n bytes): the family it
 * is matched to (or none) and whether --jinja can render it (it parses, or the error) */
void chat_template_describe(const char *tmpl, char *out, size_t n);
/* 1 when the template renders a message of role "tool" as its own turn (else: as a user's) */
int chat_has_tool_role(const tokenizer_t *t);

#endif
