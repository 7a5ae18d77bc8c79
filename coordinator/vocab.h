/* vocab: tokenizer metadata written into a GGUF being made — imported from a Hugging Face
 * tokenizer.json (+ tokenizer_config.json beside it) in the form llama.cpp's converter writes,
 * copied from another GGUF, or generated (a byte-level BPE vocabulary of a given size) for
 * synthetic models. Not here: tokenizing (tokenizer.c). */
#ifndef TERN_VOCAB_H
#define TERN_VOCAB_H
#include <stdint.h>
#include "core/gguf.h"

/* tokenizer.ggml.* (+ tokenizer.chat_template) from a tokenizer.json. *n_vocab receives the
 * number of tokens. 0 or <0 with a reason in err. */
int vocab_import_hf(gguf_writer_t *w, const char *tokenizer_json, int *n_vocab, char *err, size_t errlen);
/* copies tokenizer.* keys of a GGUF file; *n_vocab receives the token count */
int vocab_copy_gguf(gguf_writer_t *w, const char *gguf_path, int *n_vocab, char *err, size_t errlen);
/* a deterministic byte-level BPE vocabulary of exactly n_vocab tokens (n_vocab >= 260):
 * 256 byte tokens, merges learned from a small built-in English text, special tokens
 * <|begin_of_text|>, <|end_of_text|>, <|eot_id|>, then <|reserved_N|> padding if needed. */
int vocab_generate(gguf_writer_t *w, int n_vocab, uint64_t seed, char *err, size_t errlen);
/* vocab_generate, and with fim the six fill-in-the-middle specials of Qwen2.5-Coder after them
 * (<|fim_prefix|> <|fim_suffix|> <|fim_middle|> <|fim_pad|> <|repo_name|> <|file_sep|>) with
 * their tokenizer.ggml.fim_*_token_id keys (n_vocab >= 266) */
int vocab_generate_ex(gguf_writer_t *w, int n_vocab, uint64_t seed, int fim, char *err, size_t errlen);
/* vocab_generate_ex, and with control (non-NULL: 1..64 bytes) that text as a control token after
 * the other specials (n_vocab one more at least) — a model with a marker that renders no text, such as Mistral Nemo's
 * [TOOL_CALLS] (tern mkmodel --control) */
int vocab_generate_control(gguf_writer_t *w, int n_vocab, uint64_t seed, int fim, const char *control, char *err,
                           size_t errlen);

#endif
