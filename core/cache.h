/* cache: where tern keeps what it fetched or made once — $TERN_CACHE, else ~/.cache/tern
 * (the folder deploy/install-deps.sh fills: llama3/tokenizer.json, node/, models/; workers add
 * weights/). Only builds paths; creates nothing. */
#ifndef TERN_CACHE_H
#define TERN_CACHE_H
#include <stddef.h>

/* buf = <cache dir>/rel (rel may be ""); returns buf */
char *cache_path(char *buf, size_t cap, const char *rel);

#endif
