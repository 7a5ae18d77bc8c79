/* grammar: constrained generation — llama.cpp's GBNF grammars, a matcher that follows the text
 * generated so far, and the set of tokens that may come next as a bitmap (the last stage masks
 * the others out of the logits before it samples: the draw is from the model's distribution
 * restricted to what the grammar accepts).
 * Works on Unicode code points (UTF-8 in, a token may end inside a code point). Not here: JSON
 * Schema (json_schema.c turns a schema into GBNF), where the mask goes (sched, stage). */
#ifndef TERN_GRAMMAR_H
#define TERN_GRAMMAR_H
#include <stddef.h>
#include <stdint.h>

/* A compiled grammar: immutable after grammar_parse, shareable across threads and sequences. */
typedef struct grammar grammar_t;
/* The vocabulary as the matcher sees it: each token's bytes (its detokenized piece), a prefix
 * tree of them, and the end-of-generation ids. Immutable after grammar_vocab_new. */
typedef struct grammar_vocab grammar_vocab_t;
/* One sequence's position in a grammar: the parse stacks and a partial UTF-8 code point. It
 * refers to its grammar: destroy the states before the grammar. */
typedef struct grammar_state grammar_state_t;

/* Limits on untrusted grammars (HTTP requests): text size, rules, parse stacks alive at once. A
 * grammar that would need more is refused with an error naming the limit. GRAMMAR_MAX_RULES
 * counts the named rules; groups and repetitions generate more (at most 65536 rules and 4M
 * elements in all, repetition bounds at most 1000). A code point after which more than
 * GRAMMAR_MAX_STACKS stacks would be alive is treated as not allowed there (accept refuses it,
 * the mask leaves it out); a grammar whose start already needs more is refused by grammar_parse. */
#define GRAMMAR_MAX_TEXT (1 << 20)
#define GRAMMAR_MAX_RULES 4096
#define GRAMMAR_MAX_STACKS 4096

/* Parses GBNF text (llama.cpp's grammar syntax: `name ::= alternatives`, "literals" with \n \t
 * \r \\ \" \xHH \uHHHH \UHHHHHHHH escapes, [character classes] with ranges and ^, rule
 * references, ( groups ), the operators * + ? {m} {m,} {m,n}, `.` any character, # comments)
 * whose start rule is `root` (NULL: "root"). NULL on error with a one-line reason naming the
 * line and column (undefined rule, left recursion, bad escape, unterminated literal, limits). */
grammar_t *grammar_parse(const char *text, size_t len, const char *root, char *err, size_t errlen);
void grammar_destroy(grammar_t **g);

/* GBNF for any JSON value (llama.cpp's json.gbnf language: objects, arrays, strings with
 * escapes, numbers, true/false/null; whitespace bounded so a generation cannot spin on it),
 * for OpenAI's response_format {"type": "json_object"} (whose root is an object: rule "root"). */
extern const char grammar_json_object_gbnf[];

/* pieces[i] / len[i]: the bytes token i produces when detokenized (NULL or len 0: never allowed,
 * e.g. control tokens); eog: the end-of-generation ids (allowed only where the grammar may end).
 * Copies what it needs. NULL on out of memory. */
grammar_vocab_t *grammar_vocab_new(int n_vocab, const char *const *pieces, const int *len, const int32_t *eog,
                                   int n_eog);
void grammar_vocab_destroy(grammar_vocab_t **v);
int grammar_vocab_n(const grammar_vocab_t *v);
/* token tok's bytes (*len of them; NULL and 0 for an end-of-generation id or one out of range) */
const char *grammar_vocab_piece(const grammar_vocab_t *v, int32_t tok, size_t *len);

/* The start of the grammar (nothing generated yet). NULL on out of memory. */
grammar_state_t *grammar_state_new(const grammar_t *g);
grammar_state_t *grammar_state_clone(const grammar_state_t *s);
void grammar_state_destroy(grammar_state_t **s);
/* Advances over bytes of generated text. 0, or TERN_EINVAL when the grammar does not accept them
 * here or they are not well-formed UTF-8 (the state is then unchanged), or TERN_ENOMEM. */
int grammar_state_accept_bytes(grammar_state_t *s, const char *bytes, size_t n);
/* Advances over token tok of v: its piece, or for an end-of-generation id the end (accepted
 * only where the grammar may end; the state is then finished). 0 or TERN_EINVAL (unchanged). */
int grammar_state_accept_token(grammar_state_t *s, const grammar_vocab_t *v, int32_t tok);
int grammar_state_can_end(const grammar_state_t *s);   /* the text so far is a whole sentence */
int grammar_state_done(const grammar_state_t *s);      /* nothing but the end may follow */
/* mask ((n_vocab + 7) / 8 bytes): bit t (mask[t >> 3] >> (t & 7) & 1) set iff token t may come
 * next (iff grammar_state_accept_token would accept it). Returns how many may (0: none — a dead
 * end the caller must end the sequence on), TERN_ENOMEM, or TERN_ENOTSUP: the grammar is too
 * ambiguous here — the mask would cost more than its work budget (about 50 ms; a JSON Schema
 * needs ~0.5 % of it); the mask is then all zero. Cost grows with the tokens the
 * grammar lets through (a prefix tree is walked, whole subtrees are skipped where the grammar
 * rejects their common beginning; transitions are memoised within the call). Scratch is
 * allocated per call (a few buffers, not per token), so masks of different states may run on
 * different threads at once with one vocab. */
int grammar_state_mask(const grammar_state_t *s, const grammar_vocab_t *v, uint8_t *mask);
/* why a grammar_state_mask result n <= 0 leaves nothing to sample, for messages */
const char *grammar_mask_why(int n);

#endif
