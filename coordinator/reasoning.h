/* reasoning: splits a reasoning model's output into its thinking and its answer, as
 * llama-server's --reasoning-format deepseek does: "<think>THINKING</think>ANSWER" (or, when the
 * prompt already opened <think>, "THINKING</think>ANSWER") gives reasoning_content = THINKING
 * and content = ANSWER; thinking that never closes is all reasoning. The same function serves a
 * whole text and a growing one (streaming): what a later byte could still change is held back,
 * so the streamed pieces add up to the whole text's split. A reasoning budget (reasoning_budget_*)
 * follows the generated tokens' text and says when the thinking has used its tokens, so that the
 * caller forces the end marker (sched_force). Not here: other tag pairs, tool calls inside the
 * thinking, the forcing itself. */
#ifndef TERN_REASONING_H
#define TERN_REASONING_H
#include <stddef.h>

/* --reasoning-format / the request's "reasoning_format" */
enum reasoning_format {
    REASONING_NONE = 0,       /* the text stays in content */
    REASONING_DEEPSEEK = 1,   /* <think>...</think> becomes reasoning_content */
    REASONING_AUTO = 2,       /* deepseek when the chat template writes <think>, else none */
    REASONING_DEEPSEEK_LEGACY = 3,   /* deepseek, but a stream leaves the thinking in content,
                                      * between <think> and </think> (llama.cpp's) */
};

/* "none", "deepseek", "auto", "deepseek-legacy" -> REASONING_*; -1 for anything else */
int reasoning_format_parse(const char *name);
/* REASONING_* -> its name as reasoning_format_parse takes it ("none" for anything else) */
const char *reasoning_format_name(int f);

/* where a split lies in the text: reasoning text[r0, r1), content text[c0, c1) (empty: a0 == a1) */
typedef struct reasoning_split {
    size_t r0, r1, c0, c1;
} reasoning_split_t;

/* Splits text[0..n). open: the prompt ended inside <think> (the output starts in the thinking).
 * final: no more text comes; else a partial end marker, a start that may yet become "<think>"
 * and whitespace that may end the thinking are left out, so that each later split's pieces
 * begin with the earlier ones'. The thinking is trimmed of white space at both ends, the answer
 * at its start; only the first "</think>" ends the thinking (a "<think>" inside it is text).
 * *scan (0 at first, kept between calls on the same growing text) bounds the marker search:
 * each call looks only at bytes it has not seen, so a stream costs O(n) in all. */
void reasoning_split(const char *text, size_t n, int open, int final, size_t *scan, reasoning_split_t *out);

/* 1 when text[0..n) has a thinking (as reasoning_split reads it) that its "</think>" closed */
int reasoning_closed(const char *text, size_t n, int open);

/* 1 when a rendered prompt leaves the model inside the thinking: it ends with "<think>" and
 * optional white space (Qwen3's and DeepSeek-R1's generation prompts) */
int reasoning_prompt_open(const char *prompt, size_t n);

/* the marker that ends the thinking: "</think>" */
const char *reasoning_close_marker(void);

/* --reasoning-budget N > 0 / the request's "reasoning_budget": the tokens the thinking may take */
typedef struct reasoning_budget {
    int left;                 /* thinking tokens still allowed */
    int state;                /* 0: the reply may still open <think>; 1: inside; 2: done (closed,
                               * spent or never opened) */
    char buf[16];             /* state 0: the reply's bytes so far (fewer than "<think>");
                               * state 1: the thinking's last bytes (fewer than "</think>") */
    size_t n_buf;
} reasoning_budget_t;

/* budget > 0 tokens; open: the prompt left the model inside <think> (reasoning_prompt_open) */
void reasoning_budget_init(reasoning_budget_t *b, int budget, int open);
/* One generated token's text p[0..n). A token counts against the budget when some of its bytes
 * come after "<think>" and the text up to its end holds no "</think>" yet. Returns -1, or — once the thinking has
 * taken its budget without closing — k >= 0: the caller forces the end marker's text from its
 * byte k on (k > 0 when the thinking already ends with the marker's first k bytes). Only the
 * first thinking counts, as in reasoning_split; after a -1 → k answer the budget is done. */
int reasoning_budget_feed(reasoning_budget_t *b, const char *p, size_t n);

#endif
