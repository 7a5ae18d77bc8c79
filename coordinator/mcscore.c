/* mcscore: the task files of llama-perplexity's --hellaswag, --winogrande and --multiple-choice,
 * llama.cpp's task picks and scoring rules (see mcscore.h). Pure functions on bytes and numbers:
 * no model here, so the parsers can be fuzzed and the arithmetic tested on its own. */
#include "coordinator/mcscore.h"
#include "core/err.h"
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the task set ------------------------------------------------------------------------- */

static void mc_task_free(mc_task_t *t) {
    free(t->ctx);
    free(t->ctx2);
    for (int i = 0; t->choice && i < t->n_choice; i++) free(t->choice[i]);
    free(t->choice);
    free(t->label);
    memset(t, 0, sizeof *t);
}

void mc_set_free(mc_set_t *s) {
    for (int i = 0; s->t && i < s->n; i++) mc_task_free(&s->t[i]);
    free(s->t);
    memset(s, 0, sizeof *s);
}

static char *dupn(const char *p, size_t n) {
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = 0;
    }
    return s;
}

/* a task with room for n choices; 0 or TERN_ENOMEM */
static int mc_task_alloc(mc_task_t *t, int n, int labels) {
    memset(t, 0, sizeof *t);
    t->choice = calloc((size_t)n, sizeof *t->choice);
    t->label = labels ? calloc((size_t)n, 1) : NULL;
    t->gold = -1;
    return t->choice && (!labels || t->label) ? 0 : TERN_ENOMEM;
}

/* Keeps the tasks of s named by pick[0..k) (indices into s->t, each once), in that order, and frees
 * the others. 0 or TERN_ENOMEM (s unchanged then). */
static int mc_set_keep(mc_set_t *s, const uint32_t *pick, int k) {
    mc_task_t *kept = malloc((size_t)(k ? k : 1) * sizeof *kept);
    if (!kept) return TERN_ENOMEM;
    for (int i = 0; i < k; i++) {
        kept[i] = s->t[pick[i]];
        memset(&s->t[pick[i]], 0, sizeof s->t[pick[i]]);
    }
    for (int i = 0; i < s->n; i++) mc_task_free(&s->t[i]);
    free(s->t);
    s->t = kept;
    s->n = k;
    return 0;
}

/* ---- std::mt19937 and llama.cpp's picks --------------------------------------------------- */

void mc_rng_seed(mc_rng_t *r, uint32_t seed) {
    r->mt[0] = seed;
    for (int i = 1; i < 624; i++) r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->i = 624;
}

uint32_t mc_rng_next(mc_rng_t *r) {
    if (r->i >= 624) {
        for (int k = 0; k < 624; k++) {
            uint32_t y = (r->mt[k] & 0x80000000u) | (r->mt[(k + 1) % 624] & 0x7fffffffu);
            r->mt[k] = r->mt[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1) ? 0x9908b0dfu : 0);
        }
        r->i = 0;
    }
    uint32_t y = r->mt[r->i++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}

uint32_t mc_rng_below(mc_rng_t *r, uint32_t n) {
    uint64_t prod = (uint64_t)mc_rng_next(r) * n;
    uint32_t low = (uint32_t)prod;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {   /* ends: each draw passes with probability > 1/2 */
            prod = (uint64_t)mc_rng_next(r) * n;
            low = (uint32_t)prod;
        }
    }
    return (uint32_t)(prod >> 32);
}

uint32_t mc_rng_pick_float(mc_rng_t *r, uint32_t n) {
    const float scale = 1.0f / (1.0f + 4294967295.0f);
    float x = scale * (float)mc_rng_next(r);
    x = x * (float)n;
    uint32_t j = (uint32_t)x;
    return j < n ? j : n - 1;
}

/* k of n indices as llama.cpp's winogrande and multiple-choice pick them (swap with the last) */
static uint32_t *pick_float(uint32_t n, uint32_t k) {
    uint32_t *aux = malloc((size_t)n * sizeof *aux), *out = malloc((size_t)(k ? k : 1) * sizeof *out);
    if (!aux || !out) { free(aux); free(out); return NULL; }
    for (uint32_t i = 0; i < n; i++) aux[i] = i;
    mc_rng_t r;
    mc_rng_seed(&r, 1);
    for (uint32_t i = 0, size = n; i < k; i++) {
        uint32_t j = mc_rng_pick_float(&r, size);
        out[i] = aux[j];
        aux[j] = aux[--size];
    }
    free(aux);
    return out;
}

/* ---- text files --------------------------------------------------------------------------- */

typedef struct span {
    const char *p;
    size_t n;
} span_t;

/* The lines of buf as std::getline gives them (no empty last line after a final '\n'), each
 * without a trailing '\r'. *count of them (malloc'd array) or NULL when out of memory. */
static span_t *split_lines(const char *buf, size_t len, size_t *count) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) n += buf[i] == '\n';
    if (len && buf[len - 1] != '\n') n++;
    span_t *l = malloc((n ? n : 1) * sizeof *l);
    if (!l) return NULL;
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= len && k < n; i++) {
        if (i == len || buf[i] == '\n') {
            size_t e = i;
            if (e > start && buf[e - 1] == '\r') e--;
            l[k++] = (span_t){buf + start, e - start};
            start = i + 1;
        }
    }
    *count = n;
    return l;
}

static span_t trim(span_t s) {
    while (s.n && isspace((unsigned char)s.p[0])) s.p++, s.n--;
    while (s.n && isspace((unsigned char)s.p[s.n - 1])) s.n--;
    return s;
}

/* a small non-negative decimal (trimmed); -1 when it is not one */
static int small_int(span_t s) {
    s = trim(s);
    if (!s.n || s.n > 6) return -1;
    int v = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (!isdigit((unsigned char)s.p[i])) return -1;
        v = v * 10 + (s.p[i] - '0');
    }
    return v;
}

/* how a bad value is quoted in an error: at most 40 bytes */
#define SHOW(s) (int)((s).n < 40 ? (s).n : 40), (s).p

/* tree (n + 1,) over n slots all present: tree[i] counts the slots (i - lowbit(i), i] */
static void fenwick_ones(uint32_t *tree, size_t n) {
    for (size_t i = 1; i <= n; i++) tree[i] = (uint32_t)(i & (~i + 1));
}

/* removes and returns the j-th (0-based) slot still present */
static uint32_t fenwick_take(uint32_t *tree, size_t n, uint32_t j) {
    size_t pos = 0, step = 1;
    while (step * 2 <= n) step *= 2;
    for (; step; step /= 2)   /* the last pos whose prefix count is <= j */
        if (pos + step <= n && tree[pos + step] <= j) pos += step, j -= tree[pos];
    for (size_t i = pos + 1; i <= n; i += i & (~i + 1)) tree[i]--;
    return (uint32_t)pos;
}

int mc_parse_hellaswag(const char *buf, size_t len, int n_pick, mc_set_t *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    out->kind = MC_HELLASWAG;
    size_t nl = 0;
    span_t *l = split_lines(buf, len, &nl);
    if (!l) return err_set(err, errlen, TERN_ENOMEM, "out of memory for the lines of the task file");
    int rc = 0;
    size_t n_task = nl / 6;
    if (nl % 6)
        rc = err_set(err, errlen, TERN_EFORMAT,
                     "%zu lines, not 6 a task: the task from line %zu has %zu of its 6 lines (context, gold "
                     "ending index, 4 endings)", nl, nl - nl % 6 + 1, nl % 6);
    else if (n_task == 0)
        rc = err_set(err, errlen, TERN_EFORMAT, "no tasks (6 lines each: context, gold ending index, 4 endings)");
    else if (n_task > MC_MAX_TASKS)
        rc = err_set(err, errlen, TERN_EFORMAT, "%zu tasks: at most %d", n_task, MC_MAX_TASKS);
    for (size_t i = 0; rc == 0 && i < n_task; i++) {
        int g = small_int(l[6 * i + 1]);
        if (g < 0 || g > 3)
            rc = err_set(err, errlen, TERN_EFORMAT, "line %zu: the gold ending index '%.*s' is not 0, 1, 2 or 3",
                         6 * i + 2, SHOW(l[6 * i + 1]));
    }
    /* llama.cpp: always shuffled (mt19937(1), a uniform pick among the tasks left, erased from
     * the list): the j-th task left is found in a Fenwick tree, O(log n) rather than a move */
    size_t k = n_pick <= 0 || (size_t)n_pick > n_task ? n_task : (size_t)n_pick;
    uint32_t *left = rc == 0 ? malloc((n_task + 1) * sizeof *left) : NULL;
    if (rc == 0 && (!left || !(out->t = calloc(k, sizeof *out->t))))
        rc = err_set(err, errlen, TERN_ENOMEM, "out of memory for %zu tasks", n_task);
    if (rc == 0) {
        fenwick_ones(left, n_task);
        mc_rng_t r;
        mc_rng_seed(&r, 1);
        size_t n_left = n_task;
        for (size_t i = 0; rc == 0 && i < k; i++) {
            uint32_t idx = fenwick_take(left, n_task, mc_rng_below(&r, (uint32_t)n_left));
            n_left--;
            mc_task_t *t = &out->t[i];
            const span_t *tl = l + 6 * (size_t)idx;
            out->n = (int)i + 1;
            if (mc_task_alloc(t, 4, 0) < 0 || !(t->ctx = dupn(tl[0].p, tl[0].n))) {
                rc = err_set(err, errlen, TERN_ENOMEM, "out of memory for the tasks");
                break;
            }
            t->n_choice = 4;
            t->gold = small_int(tl[1]);
            t->where = 6 * (long)idx + 1;
            for (int e = 0; e < 4; e++)
                if (!(t->choice[e] = dupn(tl[2 + e].p, tl[2 + e].n)))
                    rc = err_set(err, errlen, TERN_ENOMEM, "out of memory for the tasks");
        }
    }
    free(left);
    free(l);
    out->n_file = (int)n_task;
    if (rc < 0) mc_set_free(out);
    return rc;
}

/* a CSV field: without its enclosing double quotes, "" read as " */
static char *csv_field(span_t f) {
    f = trim(f);
    int quoted = f.n >= 2 && f.p[0] == '"' && f.p[f.n - 1] == '"';
    if (quoted) f.p++, f.n -= 2;
    char *s = malloc(f.n + 1);
    if (!s) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < f.n; i++) {
        s[k++] = f.p[i];
        if (quoted && f.p[i] == '"' && i + 1 < f.n && f.p[i + 1] == '"') i++;
    }
    s[k] = 0;
    return s;
}

/* One winogrande line into t: 0, 1 when it is a header (first line, answer not a number), or <0 */
static int wg_line(span_t line, long ln, int first, mc_task_t *t, char *err, size_t errlen) {
    size_t comma[4];
    int nc = 0, quote = 0;
    for (size_t i = 0; i < line.n && nc < 4; i++) {
        if (line.p[i] == '"') quote = !quote;
        else if (line.p[i] == ',' && !quote) comma[nc++] = i;
    }
    if (nc < 4)
        return err_set(err, errlen, TERN_EFORMAT,
                       "line %ld: not 5 comma-separated fields (index,sentence,option1,option2,answer)", ln);
    span_t f[5];
    f[0] = (span_t){line.p, comma[0]};
    for (int i = 1; i < 4; i++) f[i] = (span_t){line.p + comma[i - 1] + 1, comma[i] - comma[i - 1] - 1};
    f[4] = (span_t){line.p + comma[3] + 1, line.n - comma[3] - 1};
    int ans = small_int(f[4]);
    if (ans < 0 && first) return 1;
    if (ans != 1 && ans != 2)
        return err_set(err, errlen, TERN_EFORMAT, "line %ld: the answer '%.*s' is not 1 or 2", ln, SHOW(trim(f[4])));
    char *sent = csv_field(f[1]);
    if (!sent || mc_task_alloc(t, 2, 0) < 0) {
        free(sent);
        return err_set(err, errlen, TERN_ENOMEM, "out of memory for the tasks");
    }
    char *us = strchr(sent, '_');
    if (!us) {
        free(sent);
        return err_set(err, errlen, TERN_EFORMAT, "line %ld: no '_' in the sentence to put the options in", ln);
    }
    t->ctx = dupn(sent, (size_t)(us - sent));
    t->ctx2 = dupn(us + 1, strlen(us + 1));
    free(sent);
    t->n_choice = 2;
    t->choice[0] = csv_field(f[2]);
    t->choice[1] = csv_field(f[3]);
    t->gold = ans - 1;
    t->where = ln;
    if (!t->ctx || !t->ctx2 || !t->choice[0] || !t->choice[1])
        return err_set(err, errlen, TERN_ENOMEM, "out of memory for the tasks");
    return 0;
}

int mc_parse_winogrande(const char *buf, size_t len, int n_pick, mc_set_t *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    out->kind = MC_WINOGRANDE;
    size_t nl = 0;
    span_t *l = split_lines(buf, len, &nl);
    if (!l) return err_set(err, errlen, TERN_ENOMEM, "out of memory for the lines of the task file");
    int rc = 0, cap = 0, seen = 0;
    for (size_t i = 0; rc == 0 && i < nl; i++) {
        if (!trim(l[i]).n) continue;
        if (out->n == MC_MAX_TASKS) { rc = err_set(err, errlen, TERN_EFORMAT, "more than %d tasks", MC_MAX_TASKS); break; }
        if (out->n == cap) {
            int nc = cap ? 2 * cap : 64;
            mc_task_t *nt = realloc(out->t, (size_t)nc * sizeof *nt);
            if (!nt) { rc = err_set(err, errlen, TERN_ENOMEM, "out of memory for the tasks"); break; }
            out->t = nt, cap = nc;
        }
        mc_task_t *t = &out->t[out->n];
        memset(t, 0, sizeof *t);
        rc = wg_line(l[i], (long)i + 1, !seen, t, err, errlen);
        seen = 1;
        if (rc == 0) out->n++;
        else if (rc == 1) rc = 0;   /* the header */
        else mc_task_free(t);
    }
    free(l);
    if (rc == 0 && out->n == 0)
        rc = err_set(err, errlen, TERN_EFORMAT, "no tasks (index,sentence,option1,option2,answer lines)");
    out->n_file = out->n;
    if (rc == 0 && n_pick > 0 && n_pick < out->n) {
        uint32_t *pick = pick_float((uint32_t)out->n, (uint32_t)n_pick);
        if (!pick || mc_set_keep(out, pick, n_pick) < 0) rc = err_set(err, errlen, TERN_ENOMEM, "out of memory");
        free(pick);
    }
    if (rc < 0) mc_set_free(out);
    return rc;
}

/* ---- the binary multiple-choice file ------------------------------------------------------ */

typedef struct rd {
    const uint8_t *b;
    size_t len, off;
} rd_t;

static int rd_u32(rd_t *r, uint32_t *v) {
    if (r->len - r->off < 4) return -1;
    memcpy(v, r->b + r->off, 4);   /* little-endian hosts, like llama.cpp's files */
    r->off += 4;
    return 0;
}

/* a u32-length string; 0, -1 when cut short, TERN_ENOMEM */
static int rd_str(rd_t *r, char **s) {
    uint32_t n;
    if (rd_u32(r, &n) < 0 || r->len - r->off < n) return -1;
    if (s && !(*s = dupn((const char *)r->b + r->off, n))) return TERN_ENOMEM;
    r->off += n;
    return 0;
}

/* One task at r's offset (task number i, 1-based, for the errors) into t */
static int mc_read_task(rd_t *r, uint32_t i, mc_task_t *t, char *err, size_t errlen) {
    long at = (long)r->off;
    char *q = NULL;
    int rc = rd_str(r, &q);
    if (rc == TERN_ENOMEM) return err_set(err, errlen, rc, "out of memory for the tasks");
    if (rc < 0) return err_set(err, errlen, TERN_EFORMAT, "task %u (byte %ld): truncated in its question", i, at);
    for (int set = 0; rc == 0 && set < 2; set++) {   /* mc1 (one right answer) is scored; mc2 is read past */
        uint32_t n = 0;
        if (rd_u32(r, &n) < 0) rc = err_set(err, errlen, TERN_EFORMAT, "task %u (byte %ld): truncated", i, at);
        else if (n > MC_MAX_CHOICES)
            rc = err_set(err, errlen, TERN_EFORMAT, "task %u (byte %ld): %u answers (at most %d)", i, at, n,
                         MC_MAX_CHOICES);
        else if (set == 0 && n == 0) rc = err_set(err, errlen, TERN_EFORMAT, "task %u (byte %ld): no answers", i, at);
        else if (set == 0 && mc_task_alloc(t, (int)n, 1) < 0) rc = err_set(err, errlen, TERN_ENOMEM, "out of memory");
        if (rc < 0) break;
        if (set == 0) t->n_choice = (int)n, t->ctx = q, q = NULL, t->where = at;
        for (uint32_t a = 0; rc == 0 && a < n; a++) {
            int s = rd_str(r, set == 0 ? &t->choice[a] : NULL);
            if (s == TERN_ENOMEM) rc = err_set(err, errlen, s, "out of memory");
            else if (s < 0) rc = err_set(err, errlen, TERN_EFORMAT, "task %u (byte %ld): truncated in its answers", i, at);
            else if (set == 0 && !t->choice[a][0])
                rc = err_set(err, errlen, TERN_EFORMAT, "task %u (byte %ld): answer %u is empty", i, at, a + 1);
        }
        for (uint32_t a = 0; rc == 0 && a < n; a++) {
            uint32_t v;
            if (rd_u32(r, &v) < 0) rc = err_set(err, errlen, TERN_EFORMAT, "task %u (byte %ld): truncated in its labels", i, at);
            else if (set == 0) t->label[a] = v == 1;
        }
    }
    free(q);
    if (rc == 0 && !t->ctx[0]) rc = err_set(err, errlen, TERN_EFORMAT, "task %u (byte %ld): the question is empty", i, at);
    return rc;
}

int mc_parse_multi(const uint8_t *buf, size_t len, int n_pick, mc_set_t *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    out->kind = MC_MULTI;
    rd_t r = {buf, len, 0};
    uint32_t n_task;
    if (rd_u32(&r, &n_task) < 0 || n_task == 0) return err_set(err, errlen, TERN_EFORMAT, "no tasks");
    if (n_task > MC_MAX_TASKS) return err_set(err, errlen, TERN_EFORMAT, "%u tasks: at most %d", n_task, MC_MAX_TASKS);
    if ((len - 4) / 4 < n_task)
        return err_set(err, errlen, TERN_EFORMAT, "truncated: %u tasks, but no room for their %u offsets", n_task, n_task);
    int all = n_pick <= 0 || (uint32_t)n_pick >= n_task;
    uint32_t k = all ? n_task : (uint32_t)n_pick, *pick = all ? NULL : pick_float(n_task, k);
    int rc = 0;
    if ((!all && !pick) || !(out->t = calloc(k, sizeof *out->t))) rc = err_set(err, errlen, TERN_ENOMEM, "out of memory");
    r.off = 4 + 4 * (size_t)n_task;   /* all: read in order, as llama.cpp does; else at each pick's offset */
    for (uint32_t i = 0; rc == 0 && i < k; i++) {
        uint32_t idx = all ? i : pick[i];
        if (!all) {
            uint32_t pos;
            memcpy(&pos, buf + 4 + 4 * (size_t)idx, 4);
            if (pos < 4 + 4 * (size_t)n_task || pos >= len) {
                rc = err_set(err, errlen, TERN_EFORMAT, "task %u: its offset %u is outside the tasks (%zu bytes)",
                             idx + 1, pos, len);
                break;
            }
            r.off = pos;
        }
        out->n = (int)i + 1;
        rc = mc_read_task(&r, idx + 1, &out->t[i], err, errlen);
    }
    free(pick);
    out->n_file = (int)n_task;
    if (rc < 0) mc_set_free(out);
    return rc;
}

/* ---- scoring ------------------------------------------------------------------------------ */

int mc_ranges(int kind, int n, const int32_t *const *seq, const int *len, const int *n_base, int *lo, int *hi) {
    int min_len = len[0];
    for (int s = 1; s < n; s++) min_len = len[s] < min_len ? len[s] : min_len;
    if (n < 1 || min_len < 2) return TERN_EINVAL;
    int cp = 0;
    while (cp < min_len) {
        int same = 1;
        for (int s = 1; s < n && same; s++) same = seq[s][cp] == seq[0][cp];
        if (!same) break;
        cp++;
    }
    if (cp > min_len - 1) cp = min_len - 1;   /* identical choices: still one token each */
    if (cp < 1) cp = 1;                       /* token 0 has no logits before it */
    int skip = kind == MC_WINOGRANDE && n == 2 && len[0] - cp > 3 && len[1] - cp > 3;
    for (int s = 0; s < n; s++) {
        int base = skip ? n_base[s] : cp;
        if (base > len[s] - 1) base = len[s] - 1;
        if (base < 1) base = 1;
        lo[s] = base;
        hi[s] = len[s];
        if (kind == MC_WINOGRANDE && len[s] - base > 1) hi[s]--;   /* not the sentence's last token */
    }
    return 0;
}

int mc_pick(int kind, const double *score, int n) {
    if (kind == MC_WINOGRANDE && n == 2) return score[0] > score[1] ? 0 : 1;
    int best = 0;
    for (int s = 1; s < n; s++)
        if (score[s] > score[best]) best = s;
    return best;
}

int mc_correct(const mc_task_t *t, int pick) {
    if (pick < 0 || pick >= t->n_choice) return 0;
    return t->label ? t->label[pick] == 1 : pick == t->gold;
}

void mc_wilson(int correct, int n, double *lo, double *hi) {
    const double za = 1.95996398454;
    double f = (double)correct / n, z = za * za / n;
    double cnf = z * sqrt(n * (4.0 * f * (1 - f) + z)) / (za + za);
    *lo = (f + z * 0.5 - cnf) / (1.0 + z);
    *hi = (f + z * 0.5 + cnf) / (1.0 + z);
}
