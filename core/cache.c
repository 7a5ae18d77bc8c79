/* cache: see cache.h. */
#include "core/cache.h"
#include <stdio.h>
#include <stdlib.h>

char *cache_path(char *buf, size_t cap, const char *rel) {
    const char *env = getenv("TERN_CACHE"), *home = getenv("HOME");
    if (env && *env) snprintf(buf, cap, "%s/%s", env, rel);
    else snprintf(buf, cap, "%s/.cache/tern/%s", home ? home : "/tmp", rel);
    return buf;
}
