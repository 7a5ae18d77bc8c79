/* sp_vocab: a SentencePiece tokenizer.model (protobuf ModelProto, parsed with protobuf-c from
 * tools/sp_model.proto) written as llama.cpp's "llama" vocabulary: tokens, scores, token types,
 * special ids, add_bos/add_eos/add_space_prefix and the chat template from the
 * tokenizer_config.json beside it. Not here: tokenizing (coordinator/tokenizer.c). */
#ifndef TERN_SP_VOCAB_H
#define TERN_SP_VOCAB_H
#include "core/gguf.h"

/* Writes tokenizer.ggml.* from MODEL_PATH. The token list is padded with "[PADi]" (type unused)
 * up to n_vocab_min (the model's embedding rows) as llama.cpp does. config_json (may be NULL):
 * config.json, whose bos_token_id / eos_token_id are used when tokenizer_config.json names no
 * such token. *n_vocab receives the token count. 0 or <0 with a one-line reason. */
int sp_vocab_import(gguf_writer_t *w, const char *model_path, int n_vocab_min, const char *config_json,
                    int *n_vocab, char *err, size_t errlen);

#endif
