/* infill: llama-server's fill-in-the-middle prompt (infill.h). The rules are format_infill's
 * in llama.cpp's tools/server, kept literally — including its quirks: the extra context goes
 * before the BOS, and the suffix's share of the batch shrinks by the prompt's length. */
#include "coordinator/infill.h"
#include "core/err.h"
#include <stdlib.h>
#include <string.h>

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

static int32_t *put(int32_t *o, const int32_t *v, int n) {
    if (n > 0) memcpy(o, v, (size_t)n * sizeof *v);
    return o + (n > 0 ? n : 0);
}

int infill_format(const infill_cfg_t *c, const int32_t *prefix, int n_prefix, const int32_t *suffix, int n_suffix,
                  const int32_t *prompt, int n_prompt, const int32_t *extra, int n_extra, int32_t *out) {
    /* one batch for the FIM part, prefix:suffix = 3:1; the rest of the context for the extra */
    int n_pre = imin(n_prefix, 3 * (c->n_batch / 4));
    int n_suf = imin(n_suffix, imax(0, c->n_batch / 4 - (2 + n_prompt)));
    int n_ext = imin(imax(0, c->n_ctx - c->n_batch - 2 * c->n_predict), n_extra);
    int32_t pre = c->pre, suf = c->suf, mid = c->mid, bos = c->bos;
    int32_t *o = put(out, extra + (n_extra - n_ext), n_ext);   /* the extra's last tokens */
    if (bos >= 0) *o++ = bos;
    for (int half = 0; half < 2; half++) {
        if (half == (c->spm ? 1 : 0)) {   /* FIM_PRE, the prefix's last tokens, the prompt */
            *o++ = pre;
            o = put(o, prefix + (n_prefix - n_pre), n_pre);
            o = put(o, prompt, n_prompt);
        } else {                          /* FIM_SUF, the suffix's first tokens */
            *o++ = suf;
            o = put(o, suffix, n_suf);
        }
    }
    *o++ = mid;
    return (int)(o - out);
}

int infill_tokenize(const tokenizer_t *tok, const char *text, size_t len, int parse_special, int32_t **out) {
    int cap = (int)(len < (1u << 24) ? len : 1u << 24) + 8;   /* a byte-level token covers >= 1 byte */
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    int n = ids ? tokenizer_encode(tok, text, len, 0, parse_special, ids, cap) : TERN_ENOMEM;
    if (n > cap) {   /* SPM's space prefix and byte fallback can add a few */
        free(ids);
        ids = malloc((size_t)n * sizeof *ids);
        n = ids ? tokenizer_encode(tok, text, len, 0, parse_special, ids, n) : TERN_ENOMEM;
    }
    if (n < 0) {
        free(ids);
        ids = NULL;
    }
    *out = ids;
    return n;
}

/* appends text's tokens (no special parsing) to *buf (*n of *cap); 0 or <0 */
static int append_text(const tokenizer_t *tok, const char *a, const char *b, int32_t **buf, int *n, int *cap) {
    size_t la = strlen(a), lb = b ? strlen(b) : 0;
    char *s = malloc(la + lb + 1);
    if (!s) return TERN_ENOMEM;
    memcpy(s, a, la);
    if (lb) memcpy(s + la, b, lb);
    s[la + lb] = 0;
    int32_t *ids;
    int k = infill_tokenize(tok, s, la + lb, 0, &ids);
    free(s);
    if (k < 0) return k;
    if (*n + k > *cap) {
        int nc = (*n + k) * 2;
        int32_t *g = realloc(*buf, (size_t)nc * sizeof *g);
        if (!g) { free(ids); return TERN_ENOMEM; }
        *buf = g;
        *cap = nc;
    }
    if (k > 0) memcpy(*buf + *n, ids, (size_t)k * sizeof *ids);
    *n += k;
    free(ids);
    return 0;
}

/* appends one id to *buf (*n of *cap); 0 or TERN_ENOMEM */
static int append_id(int32_t **buf, int *n, int *cap, int32_t id) {
    if (*n + 1 > *cap) {
        int nc = (*n + 1) * 2;
        int32_t *g = realloc(*buf, (size_t)nc * sizeof *g);
        if (!g) return TERN_ENOMEM;
        *buf = g;
        *cap = nc;
    }
    (*buf)[(*n)++] = id;
    return 0;
}

int infill_extra(const tokenizer_t *tok, const infill_cfg_t *c, const infill_chunk_t *chunks, int n, int32_t **out) {
    /* llama.cpp writes the chunk separator in bytes "to avoid confusing the AI"; it is this text */
    static const char snippet[] = "\n\n--- snippet ---\n\n";
    int32_t *buf = NULL;
    int len = 0, cap = 0, rc = 0;
    if (c->rep >= 0 && (rc = append_id(&buf, &len, &cap, c->rep)) == 0)
        rc = append_text(tok, "myproject\n", NULL, &buf, &len, &cap);   /* llama.cpp: "TODO: an input" */
    for (int i = 0; rc == 0 && i < n; i++) {
        if (c->sep >= 0) {
            rc = append_id(&buf, &len, &cap, c->sep);
            if (rc == 0) rc = append_text(tok, chunks[i].filename ? chunks[i].filename : "tmp", "\n", &buf, &len, &cap);
        } else {
            rc = append_text(tok, snippet, NULL, &buf, &len, &cap);
        }
        if (rc == 0) rc = append_text(tok, chunks[i].text ? chunks[i].text : "", NULL, &buf, &len, &cap);
    }
    if (rc == 0 && c->sep >= 0 && (rc = append_id(&buf, &len, &cap, c->sep)) == 0)
        rc = append_text(tok, "filename\n", NULL, &buf, &len, &cap);
    if (rc < 0) {
        free(buf);
        buf = NULL;
    }
    *out = buf;
    return rc < 0 ? rc : len;
}
