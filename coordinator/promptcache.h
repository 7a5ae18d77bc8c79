/* promptcache: prompts' keys and values kept in host RAM (llama-server's --cache-ram): entries of
 * {tokens, rows of every layer}, at most `limit` bytes in all, the least recently used evicted
 * first. The scheduler puts a slot's cache here before another request overwrites it and writes
 * the entry that begins a new prompt best back into a slot (sched_set_ram_cache). Not here: moving
 * rows in and out of the stages (pipeline kv_read / kv_write), choosing slots (sched.c). Not
 * thread-safe: the engine thread owns it (others read copies of the counters). */
#ifndef TERN_PROMPTCACHE_H
#define TERN_PROMPTCACHE_H
#include <stddef.h>
#include <stdint.h>

typedef struct promptcache_entry {
    int32_t *toks;          /* (n,) owned */
    int n;
    uint8_t *kv;            /* (n_layer, 2, n, row) bytes as kv_read gives them; owned */
    size_t kv_bytes;
    unsigned long last_use; /* LRU stamp */
} promptcache_entry_t;

typedef struct promptcache {
    size_t limit;           /* bytes the entries may hold (tokens and rows); SIZE_MAX: no limit */
    size_t bytes;           /* what they hold */
    promptcache_entry_t *e;
    int n, cap;
    unsigned long clock;
    unsigned long long n_saved, n_evicted, n_hits, n_restored_tok;
} promptcache_t;

void promptcache_init(promptcache_t *pc, size_t limit);
void promptcache_free(promptcache_t *pc);
/* Bytes an entry of n tokens with kv_bytes of rows counts against the limit. */
size_t promptcache_entry_bytes(int n, size_t kv_bytes);
/* Would toks[0..n) add anything? 0 when an entry already holds them (its tokens begin with them)
 * or when such an entry could never fit the limit. */
int promptcache_wants(const promptcache_t *pc, const int32_t *toks, int n, size_t kv_bytes);
/* Stores toks[0..n) (copied) with their rows *kv (kv_bytes; taken: *kv is nulled, freed here on
 * failure): entries whose tokens are a beginning of these are dropped (this one holds more), then
 * the least recently used ones until it fits. 0, or TERN_EINVAL (promptcache_wants says no: *kv
 * freed) / TERN_ENOMEM. */
int promptcache_put(promptcache_t *pc, const int32_t *toks, int n, uint8_t **kv, size_t kv_bytes);
/* The entry sharing the longest beginning with prompt[0..n), at most `cap` tokens of it (the most
 * recently used among equals); its index, or -1 when none shares any. *k: the shared length. */
int promptcache_find(const promptcache_t *pc, const int32_t *prompt, int n, int cap, int *k);
/* Marks entry i used now (a hit of k tokens: counted in n_hits / n_restored_tok). */
void promptcache_hit(promptcache_t *pc, int i, int k);

#endif
