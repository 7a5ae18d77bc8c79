/* reasoning: splits a reasoning model's output into its thinking and its answer, as
 * llama-server's --reasoning-format deepseek does: "<think>THINKING</think>ANSWER" (or, when the
 * prompt already opened <think>, "THINKING</think>ANSWER") gives reasoning_content = THINKING
 * and content = ANSWER; thinking that never closes is all reasoning. The same function serves a
 * whole text and a growing one (streaming): what a later byte could still change is held back,
 * so the streamed pieces add up to the whole text's split. Not here: other tag pairs, tool calls
 * inside the thinking, a budget that cuts the thinking short. */
#ifndef TERN_REASONING_H
#define TERN_REASONING_H
#include <stddef.h>

/* --reasoning-format / the request's "reasoning_format" */
enum reasoning_format {
    REASONING_NONE = 0,       /* the text stays in content */
    REASONING_DEEPSEEK = 1,   /* <think>...</think> becomes reasoning_content */
    REASONING_AUTO = 2,       /* deepseek when the chat template writes <think>, else none */
};

/* "none", "deepseek", "auto" -> REASONING_*; -1 for anything else */
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

/* 1 when a rendered prompt leaves the model inside the thinking: it ends with "<think>" and
 * optional white space (Qwen3's and DeepSeek-R1's generation prompts) */
int reasoning_prompt_open(const char *prompt, size_t n);

#endif
