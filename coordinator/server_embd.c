/* server_embd: the reply of /v1/embeddings (OpenAI's shape) — one "embedding" object per input,
 * in input order, as a float array or base64 of the little-endian f32 bytes, and the usage. The
 * inputs themselves run as jobs of server_gen.c (parsing, tokenizing, queueing, waiting), each an
 * embedding sequence of the scheduler (sched_embed). Not here: the pooling (sched.c). */
#include "coordinator/server_int.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* base64 (RFC 4648, padded) of p[0..n) as a jansson string; NULL on out of memory */
static json_t *b64_json(const unsigned char *p, size_t n) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc((n + 2) / 3 * 4 + 1), *w = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        *w++ = a[v >> 18 & 63];
        *w++ = a[v >> 12 & 63];
        *w++ = i + 1 < n ? a[v >> 6 & 63] : '=';
        *w++ = i + 2 < n ? a[v & 63] : '=';
    }
    *w = 0;
    json_t *s = json_stringn(o, (size_t)(w - o));
    free(o);
    return s;
}

/* the vector v[0..n) as the request asked: [floats] or base64 of its f32 bytes (little-endian
 * hosts: the bytes as they lie in memory, which is what OpenAI's clients decode) */
static json_t *vec_json(const float *v, int n, int b64) {
    if (b64) return b64_json((const unsigned char *)v, (size_t)n * sizeof(float));
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, json_real((double)v[i]));
    return a;
}

void *server_embd_reply(struct server *s, job_t *const *jobs, int k) {
    const int E = s->m->hp.n_embd;
    int pt = 0;
    json_t *data = json_array();
    for (int i = 0; i < k; i++) {
        pt += jobs[i]->n_ids;
        json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "embedding", "index", i, "embedding",
                                              vec_json(jobs[i]->embd, E, jobs[i]->embd_b64)));
    }
    return json_pack("{s:s, s:o, s:s, s:{s:i, s:i}}", "object", "list", "data", data, "model", s->model_id, "usage",
                     "prompt_tokens", pt, "total_tokens", pt);
}
