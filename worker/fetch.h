/* fetch: a worker without its own copy of the model gets the bytes it needs from the
 * coordinator, once. The file is rebuilt sparse in a cache folder as DIR/<hash>.gguf (its full
 * size, holes where nothing was fetched) with a DIR/<hash>.have list of the byte ranges
 * present; a later shard of the same model fetches only what is missing. The header comes
 * first (so the tensor table can be read), then the tensors of the layers asked for (and the
 * output norm + lm head for the last stage). Not here: the coordinator's side (cluster_client). */
#ifndef TERN_FETCH_H
#define TERN_FETCH_H
#include <stddef.h>
#include <stdint.h>
#include "core/gguf.h"
#include "proto/transport.h"

#define FETCH_CHUNK (8u << 20)   /* bytes per WeightRequest */

typedef struct fetch_req {
    tp_conn_t *c;              /* the link the coordinator talks to us on */
    const tp_peer_t *to;       /* the coordinator on it */
    const char *cache_dir;
    const char *name;          /* this worker, for logs */
    const Tern__ModelId *model;
    int first, last, is_last;
    uint64_t fetched;          /* out: bytes that came over the network */
    int gguf_flags;            /* how the cache file is opened at the end (GGUF_NO_MMAP: --no-mmap) */
} fetch_req_t;

/* Makes sure the cache file holds everything the shard needs, then opens it (*out). Messages
 * other than WeightChunk that arrive meanwhile are answered (heartbeats) or dropped. 0 or <0. */
int fetch_shard(fetch_req_t *r, gguf_t **out, char *err, size_t errlen);

#endif
