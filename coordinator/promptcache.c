/* promptcache: prompts' keys and values in host RAM, LRU under a byte limit (promptcache.h).
 * Entries are few (a limit of a GiB holds tens of long prompts), so lookups scan them all. */
#include "coordinator/promptcache.h"
#include "coordinator/toks.h"
#include "core/err.h"
#include <stdlib.h>
#include <string.h>

void promptcache_init(promptcache_t *pc, size_t limit) {
    memset(pc, 0, sizeof *pc);
    pc->limit = limit;
}

static void entry_free(promptcache_entry_t *e) {
    free(e->toks);
    free(e->kv);
    e->toks = NULL, e->kv = NULL;
}

void promptcache_free(promptcache_t *pc) {
    for (int i = 0; i < pc->n; i++) entry_free(&pc->e[i]);
    free(pc->e);
    pc->e = NULL;
    pc->n = pc->cap = 0;
    pc->bytes = 0;
}

size_t promptcache_entry_bytes(int n, size_t kv_bytes) { return kv_bytes + (size_t)n * sizeof(int32_t); }

static void drop(promptcache_t *pc, int i) {
    pc->bytes -= promptcache_entry_bytes(pc->e[i].n, pc->e[i].kv_bytes);
    entry_free(&pc->e[i]);
    pc->e[i] = pc->e[--pc->n];
}

/* does a begin with b[0..nb)? */
static int begins(const int32_t *a, int na, const int32_t *b, int nb) {
    return na >= nb && memcmp(a, b, (size_t)nb * sizeof(int32_t)) == 0;
}

int promptcache_wants(const promptcache_t *pc, const int32_t *toks, int n, size_t kv_bytes) {
    if (n < 1 || promptcache_entry_bytes(n, kv_bytes) > pc->limit) return 0;
    for (int i = 0; i < pc->n; i++)
        if (begins(pc->e[i].toks, pc->e[i].n, toks, n)) return 0;
    return 1;
}

int promptcache_put(promptcache_t *pc, const int32_t *toks, int n, uint8_t **kv, size_t kv_bytes) {
    if (!promptcache_wants(pc, toks, n, kv_bytes)) {
        free(*kv);
        *kv = NULL;
        return TERN_EINVAL;
    }
    size_t need = promptcache_entry_bytes(n, kv_bytes);
    for (int i = pc->n - 1; i >= 0; i--)   /* entries this one extends hold nothing more */
        if (begins(toks, n, pc->e[i].toks, pc->e[i].n)) drop(pc, i);
    while (pc->n > 0 && need > pc->limit - pc->bytes) {   /* bytes <= limit: no wrap, SIZE_MAX too */
        int old = 0;
        for (int i = 1; i < pc->n; i++)
            if (pc->e[i].last_use < pc->e[old].last_use) old = i;
        drop(pc, old);
        pc->n_evicted++;
    }
    int32_t *t = malloc((size_t)n * sizeof(int32_t));
    if (t && pc->n == pc->cap) {
        int cap = pc->cap ? pc->cap * 2 : 8;
        promptcache_entry_t *e = realloc(pc->e, (size_t)cap * sizeof *e);
        if (e) pc->e = e, pc->cap = cap;
    }
    if (!t || pc->n == pc->cap) {
        free(t);
        free(*kv);
        *kv = NULL;
        return TERN_ENOMEM;
    }
    memcpy(t, toks, (size_t)n * sizeof(int32_t));
    pc->e[pc->n++] = (promptcache_entry_t){t, n, *kv, kv_bytes, ++pc->clock};
    *kv = NULL;
    pc->bytes += need;
    pc->n_saved++;
    return 0;
}

int promptcache_find(const promptcache_t *pc, const int32_t *prompt, int n, int cap, int *k) {
    int best = -1;
    *k = 0;
    if (cap > n) cap = n;
    for (int i = 0; i < pc->n; i++) {
        const promptcache_entry_t *e = &pc->e[i];
        int c = toks_common(e->toks, prompt, e->n < cap ? e->n : cap);
        if (c > 0 && (c > *k || (c == *k && e->last_use > pc->e[best].last_use))) best = i, *k = c;
    }
    return best;
}

void promptcache_hit(promptcache_t *pc, int i, int k) {
    pc->e[i].last_use = ++pc->clock;
    pc->n_hits++;
    pc->n_restored_tok += (unsigned long long)k;
}
