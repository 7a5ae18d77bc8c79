/* embed: see embed.h. */
#include "coordinator/embed.h"
#include "core/err.h"
#include "kernels/quant.h"

int embed_init(embed_t *e, const gguf_t *g, char *err, size_t errlen) {
    e->t = gguf_find_tensor(g, "token_embd.weight");
    if (!e->t) return err_set(err, errlen, TERN_ENOTFOUND, "%s: missing tensor 'token_embd.weight'", g->path);
    if (e->t->ndim != 2) return err_set(err, errlen, TERN_EFORMAT, "%s: token_embd.weight must be 2-D", g->path);
    e->n_embd = (int)e->t->ne[0];
    e->n_vocab = (int)e->t->ne[1];
    return gguf_tensor_load(g, e->t, err, errlen);   /* --no-mmap: the whole table, read once */
}

int embed_lookup(const embed_t *e, const int32_t *ids, int n, float *h) {
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= e->n_vocab) return TERN_EINVAL;
        dequant_rows(e->t->type, e->t->data, e->n_vocab, e->n_embd, ids[i], 1, h + (int64_t)i * e->n_embd);
    }
    return 0;
}
