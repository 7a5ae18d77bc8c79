/* embed: token embedding lookup on the coordinator — rows of token_embd.weight (any stored
 * type) dequantised to f32. The file is mmap'd, so only the rows of tokens actually used are
 * paged in (with --no-mmap the table is read into memory at embed_init). */
#ifndef TERN_EMBED_H
#define TERN_EMBED_H
#include <stdint.h>
#include "core/gguf.h"

typedef struct embed {
    const gguf_tensor_t *t;   /* token_embd.weight, (n_vocab, n_embd) */
    int n_vocab, n_embd;
} embed_t;

int embed_init(embed_t *e, const gguf_t *g, char *err, size_t errlen);
/* h (n, n_embd) = rows ids[0..n); ids must be in [0, n_vocab) (checked: returns <0) */
int embed_lookup(const embed_t *e, const int32_t *ids, int n, float *h);

#endif
