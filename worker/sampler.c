/* sampler: candidates are (id, logit) pairs; each filter narrows them, then a draw keyed on
 * (seed, position) — no generator state, so a draft's check, a replay and plain decoding draw
 * the same number for a position (XTC's coin too, from its own stream). Ties in greedy pick the
 * lowest id. Mirostat is the exception: its mu moves with each sample.
 * With only llama.cpp's classic filters on (top-k, top-p, min-p) the fast path below runs; any of
 * typical, top-n-sigma, XTC, dynamic temperature or mirostat takes the general chain (sample_ext).
 * Without top-k the candidates are ordered lazily: a sorted prefix grows (quickselect + sort of
 * the new part) only as far as top-p / min-p / the draw look. An order of the user's own
 * (llama.cpp's --samplers) runs the samplers one by one as it lists them (sample_order); the
 * default order never goes there, so its tokens stay what they were. */
#include "worker/sampler.h"
#include "core/err.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void sampler_params_default(sampler_params_t *p) {
    memset(p, 0, sizeof *p);
    p->temp = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->seed = 0xC0FFEE;
    p->typical_p = 1.0f;
    p->xtc_threshold = 0.1f;
    p->dynatemp_exponent = 1.0f;
    p->mirostat_tau = 5.0f;
    p->mirostat_eta = 0.1f;
    p->dry_base = 1.75f;
    p->dry_allowed_length = 2;
    p->dry_penalty_last_n = -1;
}

/* ---- the chain's order ---------------------------------------------------------------------- */

/* llama.cpp's names (common/sampling.cpp) and the aliases its --samplers takes */
static const struct { const char *name; char letter; } order_names[] = {
    {"penalties", 'e'}, {"dry", 'd'}, {"top_n_sigma", 's'}, {"top_k", 'k'}, {"typ_p", 'y'},
    {"top_p", 'p'}, {"min_p", 'm'}, {"xtc", 'x'}, {"temperature", 't'},
    {"top-n-sigma", 's'}, {"top-k", 'k'}, {"typical-p", 'y'}, {"typical", 'y'}, {"typ-p", 'y'},
    {"typ", 'y'}, {"top-p", 'p'}, {"nucleus", 'p'}, {"min-p", 'm'}, {"temp", 't'},
};
#define ORDER_KNOWN "penalties, dry, top_n_sigma, top_k, typ_p, top_p, min_p, xtc, temperature"

/* fold: any case (llama-server lowercases a request's names before matching) */
static int order_letter_of(const char *name, size_t len, int fold) {
    for (size_t i = 0; i < sizeof order_names / sizeof order_names[0]; i++)
        if (strlen(order_names[i].name) == len &&
            !(fold ? strncasecmp(order_names[i].name, name, len) : memcmp(order_names[i].name, name, len)))
            return order_names[i].letter;
    return 0;
}

int sampler_order_letter(const char *name, size_t len) { return order_letter_of(name, len, 0); }

const char *sampler_order_name(int letter) {
    for (size_t i = 0; i < 9; i++)   /* the canonical names lead the table */
        if (order_names[i].letter == letter) return order_names[i].name;
    return NULL;
}

static int order_letter_ok(int c) { return c && strchr(SAMPLER_ORDER_DEFAULT, c) != NULL; }

/* llama.cpp's samplers tern does not have: a clearer word than "unknown" */
static int order_lacking(const char *name, size_t len) {
    return (len == 6 && !memcmp(name, "infill", 6)) || (len == 10 && (!memcmp(name, "adaptive_p", 10) ||
                                                                      !memcmp(name, "adaptive-p", 10)));
}

/* letters[0..n) into p: the default order becomes 0 */
static void order_set(sampler_params_t *p, const char *letters, int n) {
    int dflt = n == (int)strlen(SAMPLER_ORDER_DEFAULT) && !memcmp(letters, SAMPLER_ORDER_DEFAULT, (size_t)n);
    p->n_order = dflt ? 0 : n;
    memset(p->order, 0, sizeof p->order);
    if (!dflt) memcpy(p->order, letters, (size_t)n);
}

/* lenient: name (len bytes) joins the skipped list in err ("'foo', 'bar'"; cut short when full) */
static void order_skip(char *err, size_t errlen, int n_skipped, const char *name, size_t len) {
    if (!err || !errlen) return;
    if (!n_skipped) err[0] = 0;
    size_t at = strlen(err);
    if (at + 1 >= errlen) return;
    snprintf(err + at, errlen - at, "%s'%.*s'", n_skipped ? ", " : "", (int)(len > 40 ? 40 : len), name);
}

/* the next sampler of text at *t: its letter, 0 at the end, -1 unknown (its bytes in *name,
 * *len) or -2 one tern lacks; *t moves past it and its separator */
static int order_next(const char **t, int letters, int fold, const char **name, size_t *len) {
    for (;;) {
        const char *a = *t;
        if (!*a) return 0;
        if (letters) {
            *name = a, *len = 1, (*t)++;
            return order_letter_ok((unsigned char)*a) ? (unsigned char)*a : -1;
        }
        while (*a == ' ') a++;   /* a name between separators, spaces around it dropped */
        const char *e = a;
        while (*e && *e != ';' && *e != ',') e++;
        size_t n = (size_t)(e - a);
        while (n && a[n - 1] == ' ') n--;
        *t = *e ? e + 1 : e;
        if (!n) continue;   /* "a;;b", a trailing ';' */
        *name = a, *len = n;
        if (order_lacking(a, n)) return -2;
        int l = order_letter_of(a, n, fold);
        return l ? l : -1;
    }
}

int sampler_order_parse(sampler_params_t *p, const char *text, int flags, char *err, size_t errlen) {
    char out[SAMPLER_ORDER_MAX];
    int n = 0, skipped = 0, l, letters = flags & SAMPLER_ORDER_LETTERS, lenient = flags & SAMPLER_ORDER_LENIENT;
    const char *t = text ? text : "", *a = t;
    size_t len = 0;
    while ((l = order_next(&t, letters, lenient, &a, &len)) != 0) {
        if (l < 0 && lenient) {
            order_skip(err, errlen, skipped++, a, len);
            continue;
        }
        if (l < 0 && letters)
            return err_set(err, errlen, TERN_EINVAL, "unknown sampler letter '%c' in '%.40s' (letters: %s)",
                           *a >= 0x20 && *a < 0x7f ? *a : '?', text, SAMPLER_ORDER_DEFAULT);
        if (l == -2)
            return err_set(err, errlen, TERN_EINVAL, "sampler '%.*s' is not supported by tern (known: " ORDER_KNOWN ")",
                           (int)len, a);
        if (l < 0)
            return err_set(err, errlen, TERN_EINVAL, "unknown sampler '%.*s' (known: " ORDER_KNOWN ")",
                           (int)(len > 40 ? 40 : len), a);
        if (n == SAMPLER_ORDER_MAX)
            return err_set(err, errlen, TERN_EINVAL, "more than %d samplers in '%.40s'", SAMPLER_ORDER_MAX, text);
        out[n++] = (char)l;
    }
    if (!n && skipped)
        return err_set(err, errlen, TERN_EINVAL, "no known sampler among %d given (known: " ORDER_KNOWN ")", skipped);
    if (!n) return err_set(err, errlen, TERN_EINVAL, "no sampler named (e.g. %s)", letters ? "kt" : "top_k;temperature");
    order_set(p, out, n);
    if (!skipped && err && errlen) err[0] = 0;
    return skipped;
}

void sampler_order_letters(const sampler_params_t *p, char *out) {
    int n = p->n_order > 0 && p->n_order <= SAMPLER_ORDER_MAX ? p->n_order : 0;
    if (!n) { strcpy(out, SAMPLER_ORDER_DEFAULT); return; }
    memcpy(out, p->order, (size_t)n);
    out[n] = 0;
}

/* the order runs sampler letter c (every one does in the default order) */
static int order_has(const sampler_params_t *p, int c) {
    return p->n_order <= 0 || memchr(p->order, c, (size_t)(p->n_order < SAMPLER_ORDER_MAX ? p->n_order : SAMPLER_ORDER_MAX));
}

/* splitmix64's finaliser: a bijection of 64 bits that mixes every input bit into every output bit */
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double sampler_uniform_stream(uint64_t seed, int pos, uint32_t stream) {
    /* the seed mixed first, so that seeds a multiple of the increment apart are unrelated; a
     * stream moves the start by an odd constant far from any position's multiple */
    uint64_t z = mix64(mix64(seed) + (uint64_t)stream * 0xd1b54a32d192ed03ULL +
                       ((uint64_t)(uint32_t)pos + 1) * 0x9e3779b97f4a7c15ULL);
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

double sampler_uniform(uint64_t seed, int pos) { return sampler_uniform_stream(seed, pos, 0); }

/* the draw of the current sample (its position: s->pos) */
static double rng_uniform(const sampler_t *s) { return sampler_uniform(s->p.seed, s->pos); }

/* dry_head_cmp's sampler (C11's qsort has no context argument) */
static _Thread_local const sampler_t *t_sort_s;

static int dry_head_cmp(const void *a, const void *b) {
    const sampler_t *s = t_sort_s;
    int x = *(const uint16_t *)a, y = *(const uint16_t *)b;
    int32_t hx = s->p.dry_tok[s->dry_off[x]], hy = s->p.dry_tok[s->dry_off[y]];
    if (hx != hy) return hx < hy ? -1 : 1;
    return x - y;
}

/* offsets of the breakers and their order by head token; a list whose lengths do not add up
 * (transport.c refuses those) is dropped whole */
static void dry_index(sampler_t *s) {
    sampler_params_t *p = &s->p;
    int n = p->n_dry_seq, off = 0;
    if (n < 0 || n > SAMPLER_DRY_SEQ_MAX) n = 0;
    for (int k = 0; k < n; k++) {
        int len = p->dry_seq_len[k];
        if (len < 1 || len > 1 + SAMPLER_DRY_TAIL_MAX || off + len > SAMPLER_DRY_TOK_MAX) { n = 0; break; }
        s->dry_off[k] = off;
        s->dry_by_head[k] = (uint16_t)k;
        off += len;
    }
    p->n_dry_seq = n;
    t_sort_s = s;
    qsort(s->dry_by_head, (size_t)n, sizeof *s->dry_by_head, dry_head_cmp);
    t_sort_s = NULL;
}

void sampler_init(sampler_t *s, const sampler_params_t *p) {
    memset(s, 0, sizeof *s);
    s->p = *p;
    if (s->p.repeat_last_n > SAMPLER_HIST_MAX) s->p.repeat_last_n = SAMPLER_HIST_MAX;
    if (s->p.repeat_last_n < 0) s->p.repeat_last_n = 0;
    if (s->p.top_logprobs > SAMPLER_TOP_MAX) s->p.top_logprobs = SAMPLER_TOP_MAX;
    if (s->p.top_logprobs < 0 || !s->p.logprobs) s->p.top_logprobs = 0;
    if (s->p.n_bias < 0) s->p.n_bias = 0;
    if (s->p.n_bias > SAMPLER_BIAS_MAX) s->p.n_bias = SAMPLER_BIAS_MAX;
    if (s->p.dry_penalty_last_n > SAMPLER_DRY_MAX) s->p.dry_penalty_last_n = SAMPLER_DRY_MAX;
    if (s->p.dry_penalty_last_n < -1) s->p.dry_penalty_last_n = 0;
    if (s->p.mirostat < 0 || s->p.mirostat > 2) s->p.mirostat = 0;
    s->mu = 2.0f * s->p.mirostat_tau;
    dry_index(s);
    /* an order with anything but known letters (transport.c refuses those) is dropped whole */
    char ord[SAMPLER_ORDER_MAX];
    int n = s->p.n_order > 0 && s->p.n_order <= SAMPLER_ORDER_MAX ? s->p.n_order : 0;
    for (int k = 0; k < n; k++)
        if (!order_letter_ok(ord[k] = (char)s->p.order[k])) n = 0;
    order_set(&s->p, ord, n);
    while (s->n_lead < s->p.n_order && (s->p.order[s->n_lead] == 'e' || s->p.order[s->n_lead] == 'd')) s->n_lead++;
}

void sampler_seek(sampler_t *s, int pos) { s->pos = pos; }

void sampler_drop(sampler_t *s, int n) {
    if (n > s->nhist) n = s->nhist;
    if (n <= 0) return;
    s->nhist -= n;
    s->hpos = (s->hpos - n + SAMPLER_RING) % SAMPLER_RING;
}

void sampler_accept(sampler_t *s, int token) {
    s->hist[s->hpos] = token;
    s->hpos = (s->hpos + 1) % SAMPLER_RING;
    if (s->nhist < SAMPLER_RING) s->nhist++;
}

typedef struct cand { float logit; int id; } cand_t;

/* candidates and a second array as long (typical's order), an id-indexed row (an order's
 * penalties and DRY past its start: order_penalise), then DRY's scratch: 4 ints a token */
unsigned long sampler_work_bytes(int n_vocab) {
    unsigned long v = (unsigned long)(n_vocab > 0 ? n_vocab : 0) * (2 * sizeof(cand_t) + sizeof(float));
    unsigned long d = (unsigned long)SAMPLER_DRY_MAX * 4 * sizeof(int32_t);
    return v + d + 64;
}

static int cand_cmp(const void *a, const void *b) {
    const cand_t *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

#define PEN_SET 2048   /* power of two >= 2 * SAMPLER_HIST_MAX: open addressing stays sparse */

int sampler_params_dry(const sampler_params_t *p) {
    return p->dry_multiplier != 0.0f && p->dry_base >= 1.0f && p->dry_penalty_last_n != 0 && !p->mirostat && order_has(p, 'd');
}

/* the repetition, frequency or presence penalty is on */
static int rep_on(const sampler_params_t *p) {
    return p->repeat_last_n > 0 && (p->repeat_penalty != 1.0f || p->freq_penalty != 0.0f || p->presence_penalty != 0.0f) &&
           order_has(p, 'e');
}

int sampler_params_use_history(const sampler_params_t *p) { return rep_on(p) || sampler_params_dry(p); }

static int typical_on(const sampler_params_t *p) { return p->typical_p > 0.0f && p->typical_p < 1.0f; }
static int xtc_on(const sampler_params_t *p) { return p->xtc_probability > 0.0f && p->xtc_threshold <= 0.5f; }

/* a filter the fast path (draw_cands) lacks is on */
static int ext_on(const sampler_params_t *p) {
    return p->mirostat || typical_on(p) || p->top_n_sigma > 0.0f || xtc_on(p) || p->dynatemp_range > 0.0f;
}

int sampler_params_host_only(const sampler_params_t *p) {
    return p->n_bias || p->freq_penalty != 0.0f || p->presence_penalty != 0.0f || sampler_params_dry(p) || ext_on(p) ||
           p->n_order > 0;
}

/* the distinct tokens of the last repeat_last_n (most recent first) and, when counts is not NULL,
 * how often each occurs there; a set of the ids seen so far (open addressing, on the stack) keeps
 * it O(n). Returns their number. */
static int window_ids(const sampler_t *s, int n_vocab, int32_t *ids, int *counts) {
    int n = s->nhist < s->p.repeat_last_n ? s->nhist : s->p.repeat_last_n, k = 0;
    int32_t set[PEN_SET];
    int16_t at[PEN_SET];   /* the set slot's index in ids */
    memset(set, 0xff, sizeof set);   /* -1: empty */
    for (int i = 0; i < n; i++) {
        int id = s->hist[(s->hpos - 1 - i + SAMPLER_RING) % SAMPLER_RING];
        if (id < 0 || id >= n_vocab) continue;
        uint32_t h = ((uint32_t)id * 2654435761u) & (PEN_SET - 1);
        while (set[h] >= 0 && set[h] != id) h = (h + 1) & (PEN_SET - 1);
        if (set[h] == id) {
            if (counts) counts[at[h]]++;
            continue;
        }
        set[h] = id;
        at[h] = (int16_t)k;
        if (counts) counts[k] = 1;
        ids[k++] = id;
    }
    return k;
}

/* each distinct token of the last repeat_last_n is penalised once (llama.cpp) */
int sampler_penalty_ids(const sampler_t *s, int n_vocab, int32_t *ids) {
    return s->p.repeat_penalty == 1.0f ? 0 : window_ids(s, n_vocab, ids, NULL);
}

/* the first of the breakers whose head is token (dry_by_head order), or n_dry_seq when none */
static int dry_first(const sampler_t *s, int32_t token) {
    int lo = 0, hi = s->p.n_dry_seq;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (s->p.dry_tok[s->dry_off[s->dry_by_head[mid]]] < token) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static int dry_head_at(const sampler_t *s, int j) { return s->p.dry_tok[s->dry_off[s->dry_by_head[j]]]; }

/* the longest breaker with head t[i] whose tail is t[i-1], t[i-2], ... (t: the history, most
 * recent first); -1 when none. Its tail length. */
static int dry_match(const sampler_t *s, const int32_t *t, int i) {
    int longest = -1;
    for (int j = dry_first(s, t[i]); j < s->p.n_dry_seq && dry_head_at(s, j) == t[i]; j++) {
        int k = s->dry_by_head[j], tail = s->p.dry_seq_len[k] - 1;
        const int32_t *seq = s->p.dry_tok + s->dry_off[k] + 1;
        if (tail <= longest || tail > i) continue;
        int ok = 1;
        for (int o = 0; o < tail && ok; o++) ok = seq[o] == t[i - o - 1];
        if (ok) longest = tail;
    }
    return longest;
}

static int dry_single_breaker(const sampler_t *s, int32_t token) {
    for (int j = dry_first(s, token); j < s->p.n_dry_seq && dry_head_at(s, j) == token; j++)
        if (s->p.dry_seq_len[s->dry_by_head[j]] == 1) return 1;
    return 0;
}

typedef struct dry_rep { int32_t token; int len; } dry_rep_t;

static int dry_rep_cmp(const void *a, const void *b) {
    const dry_rep_t *x = a, *y = b;
    return x->token != y->token ? (x->token < y->token ? -1 : 1) : 0;
}

/* llama.cpp's DRY (from koboldcpp): the restart limit from the latest breaker, then the reverse
 * Z-algorithm over the last L tokens gives, for each earlier token, how long a suffix of the
 * history ends right before it; the token after such a repeat (>= allowed_length) is penalised
 * multiplier · base^(len - allowed_length), once, by its longest repeat. Single-token breakers are
 * never penalised. */
void sampler_dry_apply(const sampler_t *s, float *logits, int n_vocab, void *work) {
    const sampler_params_t *p = &s->p;
    if (!sampler_params_dry(p)) return;
    int win = p->dry_penalty_last_n < 0 || p->dry_penalty_last_n > SAMPLER_DRY_MAX ? SAMPLER_DRY_MAX : p->dry_penalty_last_n;
    int L = s->nhist < win ? s->nhist : win, allowed = p->dry_allowed_length;
    if (L <= allowed) return;
    int32_t *t = work;                /* t[i]: the token i back from the latest (llama.cpp's rat(i)) */
    int *rc = (int *)(t + L);         /* repeat counts, indexed as llama.cpp's dry_repeat_count */
    dry_rep_t *rep = (dry_rep_t *)(rc + L);
    for (int i = 0; i < L; i++) t[i] = s->hist[(s->hpos - 1 - i + 2 * SAMPLER_RING) % SAMPLER_RING], rc[i] = 0;
    int limit = L;
    for (int i = 0; i < L; i++) {
        int m = dry_match(s, t, i);
        if (m >= 0) { limit = i - m; break; }
    }
    if (limit < allowed) return;
    int last = L - 1, lt = 0, rt = 0;
    for (int k = 1; k < L; k++) {
        if (k > rt) {
            int n = 0;
            while (n + k < L && t[n] == t[n + k]) n++;
            rc[last - k] = n < limit ? n : limit;
            if (n > 0) lt = k, rt = k + n - 1;
        } else {
            int pr = k - lt, right = rt - k + 1;
            if (rc[last - pr] < right) {
                rc[last - k] = rc[last - pr] < limit ? rc[last - pr] : limit;
            } else {
                int i = rt + 1;
                while (i < L && t[i] == t[i - k]) i++;
                rc[last - k] = i - k < limit ? i - k : limit;
                lt = k, rt = i - 1;
            }
        }
    }
    int nrep = 0;
    for (int i = 0; i < L - 1; i++)
        if (rc[i] >= allowed) rep[nrep++] = (dry_rep_t){t[L - 2 - i], rc[i]};
    qsort(rep, (size_t)nrep, sizeof *rep, dry_rep_cmp);
    int max_exp = p->dry_base > 1.000001f ? (int)(88.7228391f / logf(p->dry_base)) : 0;   /* no overflow */
    for (int i = 0; i < nrep;) {
        int j = i, len = 0;
        for (; j < nrep && rep[j].token == rep[i].token; j++) len = rep[j].len > len ? rep[j].len : len;
        int32_t id = rep[i].token;
        if (id >= 0 && id < n_vocab && !dry_single_breaker(s, id)) {
            int e = len - allowed;
            if (max_exp > 0 && e > max_exp) e = max_exp;
            logits[id] -= (float)((double)p->dry_multiplier * pow((double)p->dry_base, e));
        }
        i = j;
    }
}

/* llama.cpp's penalties sampler: per distinct token of the window, the repetition penalty
 * once, then count · frequency + presence subtracted */
static void apply_rep(const sampler_t *s, float *logits, int n_vocab) {
    if (!rep_on(&s->p)) return;
    int32_t ids[SAMPLER_HIST_MAX];
    int counts[SAMPLER_HIST_MAX];
    int n = window_ids(s, n_vocab, ids, counts);
    float pen = s->p.repeat_penalty, fp = s->p.freq_penalty, pp = s->p.presence_penalty;
    for (int i = 0; i < n; i++) {
        float *l = &logits[ids[i]];
        if (pen != 1.0f) *l = *l > 0 ? *l / pen : *l * pen;
        *l -= (float)counts[i] * fp + pp;
    }
}

/* llama.cpp's logit bias, then its penalties sampler, then DRY — with an order, the penalties
 * and DRY that lead it, as it lists them. Mirostat's chain has the logit bias only. */
static void apply_penalty(sampler_t *s, float *logits, int n_vocab, void *work) {
    for (int i = 0; i < s->p.n_bias; i++)
        if (s->p.bias_id[i] >= 0 && s->p.bias_id[i] < n_vocab) logits[s->p.bias_id[i]] += s->p.bias[i];
    if (s->p.mirostat) return;
    if (!s->p.n_order) {
        apply_rep(s, logits, n_vocab);
        sampler_dry_apply(s, logits, n_vocab, work);
        return;
    }
    for (int k = 0; k < s->n_lead; k++)
        if (s->p.order[k] == 'e') apply_rep(s, logits, n_vocab);
        else sampler_dry_apply(s, logits, n_vocab, work);
}

/* the first index of the largest logit (0 when none compares larger than logits[0], NaNs
 * included): the max in 8 independent lanes — no load-compare chain through the running pick,
 * a 128k-entry vocabulary takes ~4x less time — then the first index holding it */
static int argmax(const float *x, int n) {
    float m[8];
    for (int k = 0; k < 8; k++) m[k] = x[0];
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) m[k] = x[i + k] > m[k] ? x[i + k] : m[k];
    for (; i < n; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
    float mx = m[0];
    for (int k = 1; k < 8; k++) mx = m[k] > mx ? m[k] : mx;
    if (!(mx > x[0])) return 0;
    for (i = 1; i < n; i++)
        if (x[i] == mx) return i;
    return 0;
}

/* the log-softmax normaliser, split as (max, log sum exp(x - max)) so that
 * logprob(id) = (logits[id] - mx) - lse is the same number whoever asks */
static void log_norm(const float *logits, int n, float *mx_out, double *lse) {
    float mx = logits[0];
    for (int i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)(logits[i] - mx));
    *mx_out = mx;
    *lse = log(sum);
}

static float logprob_at(const float *logits, float mx, double lse, int id) {
    return (float)((double)(logits[id] - mx) - lse);
}

/* a is worse than b: lower logit, or equal logit and higher id */
static int worse(const cand_t *a, const cand_t *b) { return a->logit < b->logit || (a->logit == b->logit && a->id > b->id); }

static void heap_down(cand_t *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(&h[l], &h[m])) m = l;
        if (r < n && worse(&h[r], &h[m])) m = r;
        if (m == i) return;
        cand_t t = h[i]; h[i] = h[m]; h[m] = t;
        i = m;
    }
}

/* the k best candidates of logits, sorted best first: O(n log k) with a min-heap */
static int top_k_select(const float *logits, int n_vocab, int k, cand_t *c) {
    if (k <= 0 || k > n_vocab) k = n_vocab;
    for (int i = 0; i < k; i++) { c[i].logit = logits[i]; c[i].id = i; }
    for (int i = k / 2 - 1; i >= 0; i--) heap_down(c, k, i);
    for (int i = k; i < n_vocab; i++) {
        cand_t x = {logits[i], i};
        if (worse(&c[0], &x)) { c[0] = x; heap_down(c, k, 0); }
    }
    qsort(c, (size_t)k, sizeof *c, cand_cmp);
    return k;
}

/* Lazily sorted candidates: c[0..m) holds the m best, sorted best first; c[m..n) the rest in
 * any order. */
typedef struct lazy { cand_t *c; int n, m; } lazy_t;

static void cswap(cand_t *a, cand_t *b) { cand_t t = *a; *a = *b; *b = t; }

/* moves the k best of c[lo..hi) to c[lo..lo+k) (in any order): quickselect, median of three */
static void select_best(cand_t *c, int lo, int hi, int k) {
    int target = lo + k;   /* c[lo..target) must end up better than c[target..hi) */
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (worse(&c[mid], &c[lo])) cswap(&c[mid], &c[lo]);
        if (worse(&c[hi - 1], &c[lo])) cswap(&c[hi - 1], &c[lo]);
        if (worse(&c[hi - 1], &c[mid])) cswap(&c[hi - 1], &c[mid]);
        cand_t piv = c[mid];   /* c[lo] >= piv >= c[hi-1] */
        int i = lo, j = hi - 1;
        while (i <= j) {   /* Hoare partition: better than piv to the left */
            while (worse(&piv, &c[i])) i++;
            while (worse(&c[j], &piv)) j--;
            if (i <= j) { cswap(&c[i], &c[j]); i++; j--; }
        }
        /* c[lo..j] >= piv, c[i..hi) <= piv, c(j..i) == piv */
        if (target == j + 1 || target == i) return;
        if (target <= j) hi = j + 1;
        else if (target > i) lo = i;
        else return;
    }
}

/* makes c[0..want) sorted (want clamped to n); grows at least geometrically */
static void lazy_grow(lazy_t *z, int want) {
    if (want <= z->m) return;
    int to = z->m * 2 > want ? z->m * 2 : want;
    if (to < 64) to = 64;
    if (to > z->n) to = z->n;
    if (to < z->n) select_best(z->c, z->m, z->n, to - z->m);
    qsort(z->c + z->m, (size_t)(to - z->m), sizeof *z->c, cand_cmp);
    z->m = to;
}

static void top_alternatives(const float *logits, int n_vocab, int k, float mx, double lse, int32_t *ids, float *lp) {
    cand_t h[SAMPLER_TOP_MAX];   /* 1 <= k <= SAMPLER_TOP_MAX (sampler_init clamps it) */
    k = top_k_select(logits, n_vocab, k, h);
    for (int i = 0; i < k; i++) {
        if (ids) ids[i] = h[i].id;
        if (lp) lp[i] = logprob_at(logits, mx, lse, h[i].id);
    }
}

int sampler_top(const float *logits, int n_vocab, int k, int32_t *ids, float *lp) {
    if (k > SAMPLER_TOP_MAX) k = SAMPLER_TOP_MAX;
    if (k > n_vocab) k = n_vocab;
    if (k <= 0) return 0;
    float mx;
    double lse;
    log_norm(logits, n_vocab, &mx, &lse);
    top_alternatives(logits, n_vocab, k, mx, lse, ids, lp);
    return k;
}

int sampler_sample(sampler_t *s, float *logits, int n_vocab, void *work, float *logprob) {
    return sampler_sample_top(s, logits, n_vocab, work, logprob, NULL, NULL, NULL);
}

/* the draw from candidates c (z: c[0..z->m) sorted best first) narrowed to n by top-k: top-p,
 * min-p (at temperature 1), the temperature, a draw. logits: the whole row, read only when the
 * candidates are every token and the draw's sum passes the sorted prefix. */
static int draw_cands(sampler_t *s, lazy_t *z, int n, double sum, const float *logits) {
    cand_t *c = z->c;
    double mx = c[0].logit;
    if (s->p.top_p < 1.0f) {
        double acc = 0;
        for (int i = 0; i < n; i++) {
            if (i >= z->m) lazy_grow(z, i + 1);
            acc += exp((double)c[i].logit - mx) / sum;
            if (acc >= s->p.top_p) { n = i + 1; break; }
        }
    }
    if (s->p.min_p > 0) {
        double thr = log((double)s->p.min_p);
        int keep = 1;
        for (;;) {
            if (keep >= n) break;
            if (keep >= z->m) lazy_grow(z, keep + 1);
            if (!((double)c[keep].logit - mx >= thr)) break;
            keep++;
        }
        n = keep;
    }
    double inv_t = 1.0 / s->p.temp;
    sum = 0;
    if (n <= z->m)
        for (int i = 0; i < n; i++) sum += exp(((double)c[i].logit - mx) * inv_t);
    else   /* the whole vocabulary, unsorted past z->m: the sum in any order */
        for (int i = 0; i < n; i++) sum += exp(((double)logits[i] - mx) * inv_t);
    double r = rng_uniform(s) * sum, acc = 0;
    int last = 0;   /* where r rounds past the sum: the last candidate of nonzero weight (never a
                     * token a grammar's mask set to -inf) */
    for (int i = 0; i < n; i++) {
        if (i >= z->m) lazy_grow(z, i + 1);
        double w = exp(((double)c[i].logit - mx) * inv_t);
        acc += w;
        if (w > 0) last = i;
        if (r < acc) return c[i].id;
    }
    return c[last].id;
}

/* Σ exp(logit − best) over the n sorted top-k candidates */
static double cands_sum(const cand_t *c, int n) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)c[i].logit - c[0].logit);
    return sum;
}

/* ---- the general chain (sample_ext): c[0..n) candidates, z lazily sorted over them ---- */

/* Σ exp(l − mx) over c[0..n) in any order (the softmax's normaliser) */
static double cand_expsum(const cand_t *c, int n, double mx, double inv_t) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp(((double)c[i].logit - mx) * inv_t);
    return sum;
}

static float cand_max(const cand_t *c, int n) {
    float mx = c[0].logit;
    for (int i = 1; i < n; i++) mx = c[i].logit > mx ? c[i].logit : mx;
    return mx;
}

/* llama.cpp's top-n-sigma: logits below max − n·σ (σ over the finite ones) leave. Returns the
 * new count (c compacted, order kept). */
static int filter_top_n_sigma(cand_t *c, int n, float nsig) {
    if (nsig <= 0.0f || n <= 1) return n;
    float mx = c[0].logit, sum = 0;
    int cnt = 0;
    for (int i = 0; i < n; i++)
        if (c[i].logit != -INFINITY) { mx = c[i].logit > mx ? c[i].logit : mx; sum += c[i].logit; cnt++; }
    float mean = cnt ? sum / (float)cnt : 0, acc = 0;
    for (int i = 0; i < n; i++)
        if (c[i].logit != -INFINITY) acc += (float)pow((double)(c[i].logit - mean), 2);
    float sd = cnt ? sqrtf(acc / (float)cnt) : 0, thr = mx - nsig * sd;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!(c[i].logit < thr)) c[k++] = c[i];
    return k;
}

typedef struct typ { float score; int i; } typ_t;

static int typ_cmp(const void *a, const void *b) {
    const typ_t *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? -1 : 1;
    return x->i - y->i;
}

/* llama.cpp's locally typical sampling: ordered by |−log p − H| (H the entropy; equal scores by
 * place in c), the smallest set whose mass passes typ. c[0..n) in any order (the default chain
 * sorts them, an order gives them in id order); tmp (n,) scratch. Returns the new count, c in
 * typical order (the next filter sorts again). */
static int filter_typical(cand_t *c, int n, float typ, cand_t *tmp) {
    double mx = cand_max(c, n), sum = cand_expsum(c, n, mx, 1.0);   /* c[0]'s when it leads */
    float ent = 0;
    for (int i = 0; i < n; i++) {
        float p = (float)(exp((double)c[i].logit - mx) / sum);
        if (p > 0) ent += -p * logf(p);
    }
    typ_t *t = (typ_t *)tmp;   /* same size as cand_t */
    for (int i = 0; i < n; i++) {
        float p = (float)(exp((double)c[i].logit - mx) / sum);
        t[i] = (typ_t){fabsf(-logf(p) - ent), i};
    }
    qsort(t, (size_t)n, sizeof *t, typ_cmp);
    float cum = 0;
    int keep = n;
    for (int i = 0; i < n; i++) {
        cum += (float)(exp((double)c[t[i].i].logit - mx) / sum);
        if (cum > typ) { keep = i + 1; break; }
    }
    for (int i = 0; i < keep; i++) tmp[i] = c[t[i].i];   /* t[i] is read before tmp[i] is written */
    memcpy(c, tmp, (size_t)keep * sizeof *c);
    return keep;
}

/* llama.cpp's XTC: when its coin (own stream, keyed on the position) falls under xtc_probability,
 * the candidates of probability >= threshold but the last of them leave (z sorted as needed) */
static int filter_xtc(const sampler_t *s, lazy_t *z, int n) {
    if (!xtc_on(&s->p) || n < 2) return 0;
    if ((float)sampler_uniform_stream(s->p.seed, s->pos, SAMPLER_STREAM_XTC) > s->p.xtc_probability) return 0;
    lazy_grow(z, 1);
    cand_t *c = z->c;
    double mx = c[0].logit, sum = cand_expsum(c, n, mx, 1.0);
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (i >= z->m) lazy_grow(z, i + 1);
        if ((float)(exp((double)c[i].logit - mx) / sum) >= s->p.xtc_threshold) last = i;
        else break;
    }
    return last;   /* the caller drops c[0..last) */
}

/* the temperature of this sample: temp, or llama.cpp's dynamic temperature — temp ± range by the
 * normalised entropy of the candidates to the power exponent */
static double dyn_temp(const sampler_params_t *p, const cand_t *c, int n) {
    if (p->dynatemp_range <= 0.0f) return p->temp;
    if (n <= 1) return 1.0;   /* one candidate: llama.cpp leaves the logits as they are */
    float lo = p->temp - p->dynatemp_range > 0 ? p->temp - p->dynatemp_range : 0.0f, hi = p->temp + p->dynatemp_range;
    float max_ent = -logf(1.0f / (float)n), ent = 0;
    double mx = cand_max(c, n), sum = cand_expsum(c, n, mx, 1.0);
    for (int i = 0; i < n; i++) {
        float q = (float)(exp((double)c[i].logit - mx) / sum);
        if (q > 0.0f) ent -= q * logf(q);
    }
    return lo + (hi - lo) * powf(ent / max_ent, p->dynatemp_exponent);
}

/* the seeded draw over c[0..n) (lazily sorted in z) at temperature t (<= 0: the best) */
static int draw_at(const sampler_t *s, lazy_t *z, int n, double t, float *p_pick) {
    lazy_grow(z, 1);
    cand_t *c = z->c;
    double mx = c[0].logit;
    if (!(t > 0)) { if (p_pick) *p_pick = 1.0f; return c[0].id; }
    double inv_t = 1.0 / t, sum = cand_expsum(c, n, mx, inv_t), r = rng_uniform(s) * sum, acc = 0;
    int last = 0;
    for (int i = 0; i < n; i++) {
        if (i >= z->m) lazy_grow(z, i + 1);
        double w = exp(((double)c[i].logit - mx) * inv_t);
        acc += w;
        if (w > 0) last = i;
        if (r < acc) { last = i; break; }
    }
    if (p_pick) *p_pick = (float)(exp(((double)c[last].logit - mx) * inv_t) / sum);
    return c[last].id;
}

/* llama.cpp's mirostat v1 (m = 100) / v2 after the temperature; mu moves by eta · (surprise − tau) */
static int mirostat_pick(sampler_t *s, lazy_t *z, int n, int n_vocab) {
    const sampler_params_t *p = &s->p;
    cand_t *c = z->c;
    for (int i = 0; i < n; i++) c[i].logit = c[i].logit / p->temp;
    lazy_grow(z, 1);
    double mx = c[0].logit, sum = cand_expsum(c, n, mx, 1.0);
#define MS_P(i) ((float)(exp((double)c[i].logit - mx) / sum))
    int k;
    if (p->mirostat == 1) {
        lazy_grow(z, 100);
        float st = 0, tt = 0;
        for (int i = 0; i < 99 && i < n - 1; i++) {
            float ti = logf((float)(i + 2) / (float)(i + 1)), bi = logf(MS_P(i) / MS_P(i + 1));
            st += ti * bi;
            tt += ti * ti;
        }
        float sh = st / tt, eps = sh - 1;
        float kf = powf((eps * powf(2, s->mu)) / (1 - powf((float)n_vocab, -eps)), 1 / sh);
        k = kf >= (float)n ? n : kf >= 1.0f ? (int)kf : 1;   /* NaN: 1 */
    } else {
        for (k = 0; k < n; k++) {
            if (k >= z->m) lazy_grow(z, k + 1);
            if (-log2f(MS_P(k)) > s->mu) break;
        }
        if (k == 0) k = 1;
    }
#undef MS_P
    lazy_grow(z, k);
    float pk;
    int id = draw_at(s, z, k, 1.0, &pk);
    s->mu -= p->mirostat_eta * (-log2f(pk) - p->mirostat_tau);
    return id;
}

/* llama.cpp's default chain for temp > 0 past the penalties: top-n-sigma, top-k, typical, top-p,
 * min-p, XTC, the (dynamic) temperature, the draw; or mirostat. work: 2 · n_vocab candidates. */
static int sample_ext(sampler_t *s, const float *logits, int n_vocab, void *work) {
    const sampler_params_t *p = &s->p;
    cand_t *c = work, *tmp = c + n_vocab;
    for (int i = 0; i < n_vocab; i++) { c[i].logit = logits[i]; c[i].id = i; }
    lazy_t z = {c, n_vocab, 0};
    if (p->mirostat) return mirostat_pick(s, &z, n_vocab, n_vocab);
    int n = filter_top_n_sigma(c, n_vocab, p->top_n_sigma);
    z.n = n;
    if (p->top_k > 0 && p->top_k < n) { lazy_grow(&z, p->top_k); n = z.n = p->top_k; }
    if (typical_on(p) && n > 1) {
        lazy_grow(&z, 1);
        n = filter_typical(c, n, p->typical_p, tmp);
        z = (lazy_t){c, n, 0};
    }
    lazy_grow(&z, 1);
    double mx = c[0].logit;
    if (p->top_p < 1.0f) {
        double sum = cand_expsum(c, n, mx, 1.0), acc = 0;
        for (int i = 0; i < n; i++) {
            if (i >= z.m) lazy_grow(&z, i + 1);
            acc += exp((double)c[i].logit - mx) / sum;
            if (acc >= p->top_p) { n = z.n = i + 1; break; }
        }
    }
    if (p->min_p > 0) {
        double thr = log((double)p->min_p);
        int keep = 1;
        for (; keep < n; keep++) {
            if (keep >= z.m) lazy_grow(&z, keep + 1);
            if (!((double)c[keep].logit - mx >= thr)) break;
        }
        n = z.n = keep;
    }
    int drop = filter_xtc(s, &z, n);
    if (drop > 0) {   /* the sorted prefix moves along with the candidates */
        z.c += drop;
        z.n = n -= drop;
        z.m -= drop;
    }
    return draw_at(s, &z, n, dyn_temp(p, z.c, n), NULL);
}

/* ---- an order of the user's own (sample_order): z over the candidates, one sampler at a time ---- */

/* the order's scratch past the candidates and typical's array: an id-indexed row, DRY's work */
static float *order_row(void *work, int n_vocab) { return (float *)((cand_t *)work + 2 * (size_t)n_vocab); }
static void *order_dry_work(void *work, int n_vocab) { return order_row(work, n_vocab) + n_vocab; }

/* the penalties ('e') or DRY ('d') on the candidates' logits as they stand (llama.cpp applies
 * them to whatever the samplers before left): through row, the candidates written at their ids */
static void order_penalise(const sampler_t *s, int which, lazy_t *z, float *row, int n_vocab, void *dry_work) {
    if (which == 'e' ? !rep_on(&s->p) : !sampler_params_dry(&s->p)) return;
    memset(row, 0, (size_t)n_vocab * sizeof *row);
    for (int i = 0; i < z->n; i++) row[z->c[i].id] = z->c[i].logit;
    if (which == 'e') apply_rep(s, row, n_vocab);
    else sampler_dry_apply(s, row, n_vocab, dry_work);
    for (int i = 0; i < z->n; i++) z->c[i].logit = row[z->c[i].id];
    z->m = 0;   /* sorted no more */
}

/* top-p over z at its logits as they stand (the candidates' softmax) */
static void order_top_p(lazy_t *z, float top_p) {
    if (!(top_p < 1.0f)) return;
    lazy_grow(z, 1);
    cand_t *c = z->c;
    double mx = c[0].logit, sum = cand_expsum(c, z->n, mx, 1.0), acc = 0;
    for (int i = 0; i < z->n; i++) {
        if (i >= z->m) lazy_grow(z, i + 1);
        acc += exp((double)c[i].logit - mx) / sum;
        if (acc >= top_p) { z->n = i + 1; break; }
    }
}

/* min-p over z: those within log(min_p) of the best */
static void order_min_p(lazy_t *z, float min_p) {
    if (!(min_p > 0)) return;
    lazy_grow(z, 1);
    cand_t *c = z->c;
    double mx = c[0].logit, thr = log((double)min_p);
    int keep = 1;
    for (; keep < z->n; keep++) {
        if (keep >= z->m) lazy_grow(z, keep + 1);
        if (!((double)c[keep].logit - mx >= thr)) break;
    }
    z->n = keep;
}

/* z's candidates copied into by_id (n_vocab long) in the order of their ids: the sums of
 * top-n-sigma, typical and the dynamic temperature then come out the same whatever order the
 * samplers before left (O(n_vocab), no sort) */
static void order_by_id(const lazy_t *z, cand_t *by_id, int n_vocab) {
    for (int i = 0; i < n_vocab; i++) by_id[i].id = -1;
    for (int i = 0; i < z->n; i++) by_id[z->c[i].id] = z->c[i];
    int k = 0;
    for (int i = 0; i < n_vocab; i++)
        if (by_id[i].id >= 0) by_id[k++] = by_id[i];
}

/* top-n-sigma over z (its statistics over the candidates in id order) */
static void order_top_n_sigma(lazy_t *z, float nsig, cand_t *tmp, int n_vocab) {
    if (!(nsig > 0.0f) || z->n <= 1) return;
    order_by_id(z, tmp, n_vocab);
    int n = filter_top_n_sigma(tmp, z->n, nsig);
    memcpy(z->c, tmp, (size_t)n * sizeof *tmp);
    *z = (lazy_t){z->c, n, 0};
}

/* the (dynamic) temperature divides the logits (llama.cpp's temp-ext), so the samplers after it
 * see them scaled */
static void order_temp(const sampler_params_t *p, lazy_t *z, cand_t *tmp, int n_vocab) {
    if (p->dynatemp_range > 0.0f) order_by_id(z, tmp, n_vocab);
    float t = (float)dyn_temp(p, p->dynatemp_range > 0.0f ? tmp : z->c, z->n);
    if (t == 1.0f) return;
    for (int i = 0; i < z->n; i++) z->c[i].logit /= t;
    z->m = 0;   /* a tie the rounding made must be ordered by id again */
}

/* One of sampler_sample's draws for an order (temp > 0, no mirostat): after the penalties and
 * DRY that lead it (apply_penalty ran them on logits), the rest of its samplers in turn on the
 * candidates, then the draw at temperature 1 (the temperature, where the order has it, scaled
 * the logits). logits is only read. work: sampler_work_bytes(n_vocab). */
static int sample_order(sampler_t *s, const float *logits, int n_vocab, void *work) {
    const sampler_params_t *p = &s->p;
    cand_t *c = work, *tmp = c + n_vocab;
    for (int i = 0; i < n_vocab; i++) { c[i].logit = logits[i]; c[i].id = i; }
    lazy_t z = {c, n_vocab, 0};
    for (int k = s->n_lead; k < p->n_order; k++) {
        switch (p->order[k]) {
        case 'e': case 'd':
            order_penalise(s, p->order[k], &z, order_row(work, n_vocab), n_vocab, order_dry_work(work, n_vocab));
            break;
        case 's': order_top_n_sigma(&z, p->top_n_sigma, tmp, n_vocab); break;
        case 'k':
            if (p->top_k > 0 && p->top_k < z.n) { lazy_grow(&z, p->top_k); z.n = z.m = p->top_k; }
            break;
        case 'y':
            if (typical_on(p) && z.n > 1) {   /* in id order: its entropy's float sum comes out the
                                               * same whatever order the samplers before left */
                order_by_id(&z, tmp, n_vocab);
                memcpy(z.c, tmp, (size_t)z.n * sizeof *tmp);
                z = (lazy_t){z.c, filter_typical(z.c, z.n, p->typical_p, tmp), 0};
            }
            break;
        case 'p': order_top_p(&z, p->top_p); break;
        case 'm': order_min_p(&z, p->min_p); break;
        case 'x': {
            int drop = filter_xtc(s, &z, z.n);
            if (drop > 0) { z.c += drop; z.n -= drop; z.m = z.m > drop ? z.m - drop : 0; }
            break;
        }
        case 't': order_temp(p, &z, tmp, n_vocab); break;
        }
    }
    return draw_at(s, &z, z.n, 1.0, NULL);
}

/* greedy with an order: the best token after the penalties and DRY it holds past its start (those
 * at its start acted on logits already), on a copy (logits stays what the logprobs read) */
static int argmax_order(sampler_t *s, const float *logits, int n_vocab, void *work) {
    int more = 0;
    for (int k = s->n_lead; k < s->p.n_order; k++) more |= s->p.order[k] == 'e' || s->p.order[k] == 'd';
    if (!more || s->p.mirostat) return argmax(logits, n_vocab);
    float *row = order_row(work, n_vocab);
    memcpy(row, logits, (size_t)n_vocab * sizeof *row);
    for (int k = s->n_lead; k < s->p.n_order; k++)
        if (s->p.order[k] == 'e') apply_rep(s, row, n_vocab);
        else if (s->p.order[k] == 'd') sampler_dry_apply(s, row, n_vocab, order_dry_work(work, n_vocab));
    return argmax(row, n_vocab);
}

/* llama.cpp's default chain: penalties, top-k, top-p, min-p (all at temperature 1), then the
 * temperature, then a draw. penalised: the caller applied the penalty already. */
static int sample_impl(sampler_t *s, float *logits, int n_vocab, void *work, float *logprob, int32_t *top_ids,
                       float *top_lp, int *n_top, int penalised) {
    if (!penalised) apply_penalty(s, logits, n_vocab, work);
    float lmx = 0;
    double lse = 0;
    int want_lp = s->p.logprobs && (logprob || top_ids || top_lp);
    if (want_lp) log_norm(logits, n_vocab, &lmx, &lse);
    int ntop = s->p.logprobs && s->p.top_logprobs > 0 ? s->p.top_logprobs : 0;
    if (ntop > n_vocab) ntop = n_vocab;
    if (ntop && (top_ids || top_lp)) top_alternatives(logits, n_vocab, ntop, lmx, lse, top_ids, top_lp);
    if (n_top) *n_top = ntop;
    int pick;
    if (s->p.temp <= 0) {
        pick = s->p.n_order ? argmax_order(s, logits, n_vocab, work) : argmax(logits, n_vocab);
    } else if (s->p.n_order && !s->p.mirostat) {
        pick = sample_order(s, logits, n_vocab, work);
    } else {
        cand_t *c = work;
        lazy_t z = {c, n_vocab, 0};
        int n;
        double sum;
        if (ext_on(&s->p)) {
            pick = sample_ext(s, logits, n_vocab, work);
        } else if (s->p.top_k > 0 && s->p.top_k < n_vocab) {
            n = top_k_select(logits, n_vocab, s->p.top_k, c);
            z.n = z.m = n;
            sum = cands_sum(c, n);
            pick = draw_cands(s, &z, n, sum, logits);
        } else {   /* every token: sorted only as far as needed */
            n = n_vocab;
            for (int i = 0; i < n; i++) { c[i].logit = logits[i]; c[i].id = i; }
            lazy_grow(&z, 1);
            sum = 0;
            for (int i = 0; i < n; i++) sum += exp((double)logits[i] - c[0].logit);
            pick = draw_cands(s, &z, n, sum, logits);
        }
    }
    if (logprob) *logprob = s->p.logprobs ? logprob_at(logits, lmx, lse, pick) : 0.0f;
    s->pos++;
    return pick;
}

int sampler_sample_top(sampler_t *s, float *logits, int n_vocab, void *work, float *logprob, int32_t *top_ids,
                       float *top_lp, int *n_top) {
    return sample_impl(s, logits, n_vocab, work, logprob, top_ids, top_lp, n_top, 0);
}

int sampler_sample_penalised(sampler_t *s, float *logits, int n_vocab, void *work) {
    return sample_impl(s, logits, n_vocab, work, NULL, NULL, NULL, NULL, 1);
}

int sampler_sample_cands(sampler_t *s, const int32_t *ids, const float *logits, int n, void *work) {
    cand_t *c = work;
    for (int i = 0; i < n; i++) { c[i].logit = logits[i]; c[i].id = ids[i]; }
    lazy_t z = {c, n, n};
    int pick = draw_cands(s, &z, n, cands_sum(c, n), NULL);
    s->pos++;
    return pick;
}
