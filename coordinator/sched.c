/* sched: see sched.h. Decode tokens go first in a step so a long prompt never starves running
 * sequences; prompts fill what is left of n_batch, capped at prefill_chunk while anything decodes,
 * oldest admission first. */
#define _GNU_SOURCE   /* memmem */
#include "coordinator/sched.h"
#include "coordinator/toks.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "core/progress.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void step_free(step_t *st) {
    free(st->tokens);
    free(st->seq);
    free(st->pos);
    free(st->sample);
    free(st->out_tok);
    free(st->out_lp);
    free(st->out_top);
    free(st->out_top_lp);
    free(st->out_target_lp);
    free(st->out_target_top);
    free(st->out_target_top_lp);
    tern_free(st->out_embd);
    tern_free(st->h);
}

static int step_alloc(step_t *st, int cap, int n_embd) {   /* samples: at most one a token */
    memset(st, 0, sizeof *st);
    st->tokens = calloc((size_t)cap, sizeof(int32_t));
    st->seq = calloc((size_t)cap, sizeof(int));
    st->pos = calloc((size_t)cap, sizeof(int));
    st->sample = calloc((size_t)cap, 1);
    st->out_tok = calloc((size_t)cap, sizeof(int32_t));
    st->out_lp = calloc((size_t)cap, sizeof(float));
    st->out_top = calloc((size_t)cap * SAMPLER_TOP_MAX, sizeof(int32_t));
    st->out_top_lp = calloc((size_t)cap * SAMPLER_TOP_MAX, sizeof(float));
    st->out_target_lp = calloc((size_t)cap, sizeof(double));
    st->out_target_top = calloc((size_t)cap * SAMPLER_TOP_MAX, sizeof(int32_t));
    st->out_target_top_lp = calloc((size_t)cap * SAMPLER_TOP_MAX, sizeof(float));
    st->h = tern_alloc((size_t)cap * (size_t)n_embd * sizeof(float));
    return st->tokens && st->seq && st->pos && st->sample && st->out_tok && st->out_lp && st->out_top &&
                   st->out_top_lp && st->out_target_lp && st->out_target_top && st->out_target_top_lp && st->h
               ? 0
               : TERN_ENOMEM;
}

int sched_init(sched_t *s, pipeline_t *pl, const embed_t *emb, int n_seq, int n_ctx, int n_batch, char *err,
               size_t errlen) {
    memset(s, 0, sizeof *s);
    s->pl = pl;
    s->emb = emb;
    s->n_seq = n_seq;
    s->n_ctx = n_ctx;
    s->n_batch = n_batch;
    s->prefill_chunk = SCHED_PREFILL_CHUNK;
    s->kv_copy = 1;
    s->slot_sim = SCHED_SLOT_SIM_DEFAULT;
    s->max_inflight = pl->max_inflight < 1 ? 1 : pl->max_inflight > SCHED_MAX_INFLIGHT ? SCHED_MAX_INFLIGHT : pl->max_inflight;
    int cap = n_batch + n_seq;
    s->seqs = calloc((size_t)n_seq, sizeof(sched_seq_t));
    s->order = calloc((size_t)n_seq, sizeof(int));
    int rc = s->seqs && s->order ? 0 : TERN_ENOMEM;
    for (int i = 0; i < s->max_inflight && !rc; i++) {
        rc = step_alloc(&s->steps[i], cap, pl->n_embd);
        if (!rc && !(s->sids[i] = calloc((size_t)cap, sizeof(int)))) rc = TERN_ENOMEM;
        if (!rc && !(s->tgt[i] = calloc((size_t)cap, sizeof(int32_t)))) rc = TERN_ENOMEM;
        if (!rc && !(s->emf[i] = calloc((size_t)cap, 1))) rc = TERN_ENOMEM;
        if (!rc && !(s->shifts[i] = calloc((size_t)n_seq, sizeof(step_shift_t)))) rc = TERN_ENOMEM;
        if (!rc && !(s->copies[i] = calloc((size_t)n_seq, sizeof(step_copy_t)))) rc = TERN_ENOMEM;
    }
    for (int i = 0; i < n_seq && !rc; i++) {
        s->seqs[i].slot = i;
        s->seqs[i].copy_src = -1;
        if (!(s->seqs[i].toks = malloc(((size_t)n_ctx + 1) * sizeof(int32_t)))) rc = TERN_ENOMEM;
    }
    if (rc) {
        sched_free(s);
        return err_set(err, errlen, TERN_ENOMEM, "scheduler: out of memory");
    }
    return 0;
}

static void drop_grammar(sched_seq_t *q) {
    q->trigger[0] = 0;
    q->trigger_tok = -1;
    q->triggered = 0;
    q->n_tail = 0;
    grammar_state_destroy(&q->gram);
    grammar_state_destroy(&q->gram0);
    grammar_destroy(&q->grammar);   /* after its states */
    q->gvocab = NULL;
}

void sched_free(sched_t *s) {
    if (s->seqs)
        for (int i = 0; i < s->n_seq; i++) {
            free(s->seqs[i].toks);
            drop_grammar(&s->seqs[i]);
            free(s->seqs[i].allow);
            free(s->seqs[i].embd);
        }
    free((void *)s->allow);
    if (s->ram) promptcache_free(s->ram);
    free(s->ram);
    free(s->seqs);
    free(s->order);
    for (int i = 0; i < SCHED_MAX_INFLIGHT; i++) {
        step_free(&s->steps[i]);
        free(s->sids[i]);
        free(s->tgt[i]);
        free(s->emf[i]);
        free(s->shifts[i]);
        free(s->copies[i]);
    }
    memset(s, 0, sizeof *s);
}

int sched_set_prefill_chunk(sched_t *s, int n) {
    if (n < 0) return TERN_EINVAL;
    s->prefill_chunk = n;
    return 0;
}

void sched_set_prefix_cache(sched_t *s, int on) { s->prefix_cache = on != 0; }

void sched_set_context_shift(sched_t *s, int on) { s->ctx_shift = on != 0; }

void sched_set_kv_copy(sched_t *s, int on) { s->kv_copy = on != 0; }

int sched_set_slot_similarity(sched_t *s, double f) {
    if (!(f >= 0 && f <= 1)) return TERN_EINVAL;
    s->slot_sim = f;
    return 0;
}

/* a step's drafts of a sequence are what the last stage takes back from its history at once */
_Static_assert(SCHED_LOOKUP_MAX <= SAMPLER_DROP_MAX, "drafts a step must fit what a sampler can drop");

int sched_set_lookup(sched_t *s, int n) {
    if (n < 0 || n > SCHED_LOOKUP_MAX) return TERN_EINVAL;
    s->lookup = n;
    return 0;
}

/* Up to k draft tokens for q (all its tokens fed but the last): what followed the latest earlier
 * occurrence of its last g tokens, for g = 3, 2 (the longest that occurs). Returns how many. */
static int lookup_draft(const sched_seq_t *q, int k, int32_t *out) {
    const int32_t *t = q->toks;
    int n = q->n_toks;
    for (int g = 3; g >= 2; g--) {   /* a one-token match predicts little: no drafts from it */
        if (n < g + 1) continue;
        for (int at = n - g - 1; at >= 0; at--) {   /* t[at..at+g) == t[n-g..n), the latest first */
            if (memcmp(t + at, t + n - g, (size_t)g * sizeof *t) != 0) continue;
            int m = 0;
            for (int p = at + g; p < n && m < k; p++) out[m++] = t[p];
            return m;
        }
    }
    return 0;
}

/* the drafts q may send in a step with budget tokens left: 0 unless lookup is on and q is at its
 * last token. Any sampling: each row is sampled as plain decoding samples that position (the
 * draw is keyed on it, the last stage's history for a row ends at its own token), so a kept
 * draft is the token plain decoding draws there. Not under a grammar (its mask is one per slot
 * and step) nor for a scored prompt, nor under mirostat (stateful: a refused draft's sample
 * would have moved mu). */
static int lookup_room(const sched_t *s, const sched_seq_t *q, int budget) {
    if (!s->lookup || q->gram || q->n_force || q->score_cb || q->n_fed != q->n_toks) return 0;
    if (q->sp.mirostat) return 0;   /* its mu moves with every sample, refused drafts' too */
    int k = s->lookup;
    if (k > budget) k = budget;
    if (k > q->max_gen - q->n_gen - 1) k = q->max_gen - q->n_gen - 1;   /* no draft past the last token */
    if (k > s->n_ctx - q->n_toks - 1) k = s->n_ctx - q->n_toks - 1;
    return k > 0 ? k : 0;
}

void sched_set_drafter(sched_t *s, int (*fn)(void *user, int slot, const int32_t *toks, int n, int k, int32_t *out),
                       void *user) {
    s->draft_fn = fn;
    s->draft_user = user;
}

/* appends q's drafts to st (after q's last token, packed with its sample): each samples */
static int pack_drafts(sched_t *s, step_t *st, int *sid, int32_t *tgt, sched_seq_t *q, int budget) {
    int32_t d[SCHED_LOOKUP_MAX];
    int room = lookup_room(s, q, budget);
    int k = !room ? 0 : s->draft_fn ? s->draft_fn(s->draft_user, q->slot, q->toks, q->n_toks, room, d) : lookup_draft(q, room, d);
    if (k > room) k = room;
    if (k < 0) k = 0;
    for (int j = 0; j < k; j++) {
        int i = st->n++;
        st->tokens[i] = d[j];
        st->seq[i] = q->slot;
        st->pos[i] = q->n_fed + j;   /* after the last token (pack counted it fed) */
        st->sample[i] = 1;
        tgt[i] = -1;
        sid[i] = q->id;
    }
    s->n_drafted += k;
    return k;
}

/* tokens at the start of prompt[0..n) whose keys and values slot q already holds (at most n - 1:
 * the last prompt token is fed, it samples) */
static int cached_prefix(const sched_seq_t *q, const int32_t *prompt, int n) {
    if (!q->kv_ok) return 0;
    int lim = q->n_fed < n - 1 ? q->n_fed : n - 1;
    if (lim > q->kv_exact) lim = q->kv_exact;   /* past a shift's keep: not what a prefill computes */
    return toks_common(q->toks, prompt, lim);
}

/* the beginning of q's tokens a KV copy may take from its slot now: what it fed (in steps already
 * submitted, which every stage runs before a later step's copies), up to a shift's keep; nothing
 * while its own copy is pending (its rows are not there yet) */
static int copy_held(const sched_seq_t *q) {
    if (!q->kv_ok || q->copy_src >= 0) return 0;
    return q->n_fed < q->kv_exact ? q->n_fed : q->kv_exact;
}

/* and what it will hold once a busy sequence's prompt is fed (a copy from it waits for that) */
static int copy_will_hold(const sched_seq_t *q) {
    int h = copy_held(q);
    if (!q->active || !q->kv_ok || q->copy_src >= 0 || q->n_prefill <= h) return h;
    return q->n_prefill < q->kv_exact ? q->n_prefill : q->kv_exact;
}

/* the slot other than dst whose cache holds or will hold the longest beginning of prompt[0..n)
 * (at most n - 1: the last prompt token is fed, it samples), SCHED_COPY_MIN tokens longer than
 * `than` (dst's own); -1 when none. *k: its length. */
static int copy_source(const sched_t *s, int dst, const int32_t *prompt, int n, int than, int *k) {
    int best = -1;
    *k = than;
    for (int j = 0; j < s->n_seq; j++) {
        if (j == dst) continue;
        int lim = copy_will_hold(&s->seqs[j]);
        int c = toks_common(s->seqs[j].toks, prompt, lim < n - 1 ? lim : n - 1);
        if (c >= than + SCHED_COPY_MIN && c > *k) best = j, *k = c;
    }
    return best;
}

/* The idle slot a prompt goes to (llama-server's get_available_slot; only `slot` when >= 0): with
 * use, the one whose cache holds the longest beginning of it when that is more than slot_sim of
 * the prompt; else the least recently used (admitted or released longest ago; never used first),
 * so that a prompt sharing little with a slot (its BOS, a chat template's start) leaves that
 * conversation's cache alone while an older or empty slot is free (a KV copy may still take the
 * shared part from it). -1 when none is idle. *k: what the slot's own cache gives (0 without use). */
static int pick_slot(const sched_t *s, int slot, int use, const int32_t *prompt, int n, int *k) {
    int best = -1, lru = -1, lru_k = 0;
    *k = 0;
    for (int i = 0; i < s->n_seq; i++) {
        const sched_seq_t *q = &s->seqs[i];
        if (q->active || (slot >= 0 && i != slot)) continue;
        int c = use ? cached_prefix(q, prompt, n) : 0;
        if (lru < 0 || q->last_use < s->seqs[lru].last_use) lru = i, lru_k = c;
        if (s->slot_sim <= 0 || c <= 0 || (double)c <= s->slot_sim * n) continue;   /* 0: similarity off */
        if (c > *k || (c == *k && q->last_use < s->seqs[best].last_use)) best = i, *k = c;
    }
    if (best < 0) *k = lru_k;
    return best >= 0 ? best : lru;
}

int sched_add(sched_t *s, const int32_t *prompt, int n, int max_gen, const sampler_params_t *sp, sched_cb cb,
              void *user) {
    return sched_add_at(s, -1, 1, prompt, n, max_gen, sp, cb, user);
}

int sched_add_at(sched_t *s, int slot, int cache, const int32_t *prompt, int n, int max_gen,
                 const sampler_params_t *sp, sched_cb cb, void *user) {
    if (n < 1 || n >= s->n_ctx || slot < -1 || slot >= s->n_seq) return TERN_EINVAL;
    if (slot >= 0 && s->seqs[slot].active) return TERN_ENOMEM;
    for (int i = 0; i < n; i++)
        if (prompt[i] < 0 || prompt[i] >= s->pl->n_vocab) return TERN_EINVAL;
    int use = cache && s->prefix_cache && !sampler_params_use_history(sp);
    int best_k, best = pick_slot(s, slot, use, prompt, n, &best_k);
    int src_k = 0, src = best >= 0 && use && s->kv_copy ? copy_source(s, best, prompt, n, best_k, &src_k) : -1;
    int n_ram = 0;   /* the RAM cache may save the slot's tokens and restore better ones (sched_slot.c) */
    if (best >= 0 && s->ram && sched_ram_admit(s, best, prompt, n, use, best_k, src >= 0 ? src_k : 0, &n_ram) > 0) {
        best_k = use ? cached_prefix(&s->seqs[best], prompt, n) : 0;   /* the slots changed while it waited */
        src_k = 0;
        src = use && s->kv_copy ? copy_source(s, best, prompt, n, best_k, &src_k) : -1;
    }
    for (int i = best < 0 ? s->n_seq : best; i < s->n_seq; i++) {
        sched_seq_t *q = &s->seqs[i];
        if (q->active) continue;
        int rc = s->pl->ops->seq_start(s->pl, i, sp);
        if (rc < 0) return rc;
        q->active = 1;
        q->waiting = 0;
        q->id = s->next_id++;
        drop_grammar(q);
        q->n_force = q->force_new = 0;
        if (s->allow) s->allow[i] = NULL;
        memcpy(q->toks, prompt, (size_t)n * sizeof(int32_t));
        q->n_prompt = q->n_toks = q->n_prefill = n;
        q->n_fed = q->n_cached = best_k > 0 ? best_k : 0;   /* the cached part is not fed again */
        q->copy_own = q->n_fed;
        q->copy_src = src;   /* or copied from another slot (build makes the copy) */
        q->copy_n = src_k;
        q->n_ram = n_ram;
        if (src >= 0) {
            q->n_fed = q->n_cached = src_k;
            log_d("sequence %d: its first %d tokens come from slot %d's cache (a KV copy)", q->id, src_k, src);
        }
        q->kv_ok = 1;
        q->kv_exact = s->n_ctx + 1;
        q->n_keep = 0;
        q->n_shifted = 0;
        q->last_use = ++s->use_clock;
        s->n_cached_tok += q->n_cached;
        q->max_gen = max_gen;
        q->n_gen = 0;
        q->finish = SCHED_RUNNING;
        q->sp = *sp;
        q->cb = cb;
        q->user = user;
        q->score_cb = NULL;
        q->embd_cb = NULL;
        q->n_scored = 1;
        q->t_start = time_now();
        q->t_first = 0;
        return q->id;
    }
    return TERN_ENOMEM;
}

static void finish(sched_t *s, sched_seq_t *q, int why) {
    if (q->copy_src >= 0) q->n_fed = q->copy_own;   /* its copy never came: the slot holds its own cache */
    q->last_use = ++s->use_clock;   /* released now: llama-server's t_last_used, for the LRU pick */
    q->copy_src = -1;
    q->finish = why;
    q->active = 0;
    q->waiting = 0;
    drop_grammar(q);
    if (q->cb) q->cb(q->user, q->id, -1, 0, NULL, why);
}

/* the slot of active sequence id, or -1 */
static int find_active(const sched_t *s, int id) {
    for (int i = 0; i < s->n_seq; i++)
        if (s->seqs[i].active && s->seqs[i].id == id) return i;
    return -1;
}

/* active sequence id that has fed nothing yet (its cached beginning aside), or NULL */
static sched_seq_t *not_started(sched_t *s, int id) {
    int i = find_active(s, id);
    return i >= 0 && s->seqs[i].n_fed == s->seqs[i].n_cached && !s->seqs[i].n_shifted ? &s->seqs[i] : NULL;
}

int sched_feed_whole(sched_t *s, int id) {
    sched_seq_t *q = not_started(s, id);
    if (!q) return TERN_EINVAL;
    s->n_cached_tok -= q->n_cached;
    if (q->n_ram && s->ram) {   /* a restore it does not use is no hit */
        s->ram->n_hits--;
        s->ram->n_restored_tok -= (unsigned long long)q->n_ram;
    }
    q->n_ram = 0;
    q->n_fed = q->n_cached = 0;
    q->copy_src = -1;   /* nothing copied either */
    return 0;
}

int sched_set_keep(sched_t *s, int id, int n_keep) {
    int i = find_active(s, id);
    if (i < 0 || s->seqs[i].n_shifted || n_keep < -1) return TERN_EINVAL;
    sched_seq_t *q = &s->seqs[i];
    int k = n_keep < 0 || n_keep > q->n_prompt ? q->n_prompt : n_keep;
    if (k > s->n_ctx - 4) k = s->n_ctx - 4;   /* a shift drops at least (n_ctx - keep) / 2 = 2 */
    q->n_keep = k > 0 ? k : 0;
    return 0;
}

int sched_score_prompt(sched_t *s, int id, sched_score_cb cb) {
    int rc = sched_feed_whole(s, id);   /* every prompt position is scored: feed them all */
    if (rc == 0) not_started(s, id)->score_cb = cb;
    return rc;
}

int sched_embed(sched_t *s, int id, int pool, int norm, sched_embd_cb cb) {
    sched_seq_t *q = not_started(s, id);
    if (!q || q->max_gen != 0 || !cb || pool < SCHED_POOL_NONE || pool > SCHED_POOL_LAST) return TERN_EINVAL;
    size_t E = (size_t)s->pl->n_embd, need = (pool == SCHED_POOL_NONE ? (size_t)q->n_prompt : 1) * E;
    size_t room = (size_t)(s->n_batch + s->n_seq) * E;   /* a step's rows (step_alloc's cap) */
    for (int i = 0; i < s->max_inflight; i++)
        if (!s->steps[i].out_embd && !(s->steps[i].out_embd = tern_alloc(room * sizeof(float)))) return TERN_ENOMEM;
    if (q->embd_cap < need) {
        float *e = realloc(q->embd, need * sizeof(float));
        if (!e) return TERN_ENOMEM;
        q->embd = e, q->embd_cap = need;
    }
    sched_feed_whole(s, id);   /* every prompt row is wanted */
    q->embd_cb = cb, q->embd_pool = pool, q->embd_norm = norm;
    return 0;
}

int sched_pool_parse(const char *name) {
    static const char *const names[] = {"none", "mean", "cls", "last"};
    for (int i = 0; name && i < 4; i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}

void sched_embd_normalize(float *v, int n, int norm) {
    double sum = 0;
    if (norm < 0) sum = 1;
    else if (norm == 0) {
        for (int i = 0; i < n; i++) sum = fabs(v[i]) > sum ? fabs(v[i]) : sum;
        sum /= 32760.0;
    } else if (norm == 2) {
        for (int i = 0; i < n; i++) sum += (double)v[i] * v[i];
        sum = sqrt(sum);
    } else {
        for (int i = 0; i < n; i++) sum += pow(fabs(v[i]), norm);
        sum = pow(sum, 1.0 / norm);
    }
    const float k = sum > 0 ? (float)(1.0 / sum) : 0.0f;
    for (int i = 0; i < n; i++) v[i] *= k;
}

/* a lazy grammar still waiting: token tok's text after q->tail. When the trigger has come, gram
 * takes the text from its first byte on (q->triggered); else the tail keeps the last bytes where
 * a trigger may begin. 0, or -1 when the grammar refuses the text from the trigger on. */
static int lazy_feed(sched_seq_t *q, int32_t tok) {
    size_t n, tl = strlen(q->trigger), nt = (size_t)q->n_tail;
    if (tok == q->trigger_tok) {   /* the trigger as a token: its text never shows, the grammar takes it here */
        q->triggered = 1;
        return grammar_state_accept_bytes(q->gram, q->trigger, tl) < 0 ? -1 : 0;
    }
    const char *p = grammar_vocab_piece(q->gvocab, tok, &n);
    if (!p) return 0;
    size_t at = nt + n;   /* where the trigger begins in tail + piece; none: at = nt + n */
    for (size_t k = 0; k < nt && at == nt + n; k++)   /* begins in the tail, ends in the piece */
        if (nt - k + n >= tl && !memcmp(q->tail + k, q->trigger, nt - k) && !memcmp(p, q->trigger + nt - k, tl - (nt - k)))
            at = k;
    const char *in = at == nt + n ? memmem(p, n, q->trigger, tl) : NULL;
    if (in) at = nt + (size_t)(in - p);
    if (at < nt + n) {
        q->triggered = 1;
        if (at < nt && grammar_state_accept_bytes(q->gram, q->tail + at, nt - at) < 0) return -1;
        size_t from = at < nt ? 0 : at - nt;
        return grammar_state_accept_bytes(q->gram, p + from, n - from) < 0 ? -1 : 0;
    }
    size_t keep = tl - 1;   /* the last tl - 1 bytes of tail + piece */
    if (n >= keep) {
        memcpy(q->tail, p + n - keep, keep);
    } else {
        size_t old = nt + n > keep ? keep - n : nt;
        memmove(q->tail, q->tail + nt - old, old);
        memcpy(q->tail + old, p, n);
        keep = old + n;
    }
    q->n_tail = (int)keep;
    return 0;
}

/* gram consumes the tokens generated since it last looked (toks[gram_n..upto)), then its mask
 * for the next sample goes to q->allow. Returns 0, or the finish the sequence has come to:
 * SCHED_STOP when the grammar is complete, SCHED_ERROR (s->err says why) when it refused a token
 * or nothing can follow. */
static int grammar_follow(sched_t *s, sched_seq_t *q, int upto) {
    for (; q->gram_n < upto; q->gram_n++) {
        int lazy = q->trigger[0] && !q->triggered;
        if (lazy ? lazy_feed(q, q->toks[q->gram_n]) < 0
                 : grammar_state_accept_token(q->gram, q->gvocab, q->toks[q->gram_n]) < 0) {
            s->err_code = TERN_EINVAL;
            snprintf(s->err, sizeof s->err, "sequence %d: the grammar does not accept %s %d at position %d", q->id,
                     lazy ? "the text from its trigger in token" : "token", q->toks[q->gram_n], q->gram_n);
            log_d("%s", s->err);   /* the caller reports it */
            return SCHED_ERROR;
        }
    }
    if (q->trigger[0] && s->allow) s->allow[q->slot] = q->triggered ? q->allow : NULL;   /* free until the trigger */
    if (q->trigger[0] && !q->triggered) return 0;
    if (grammar_state_done(q->gram)) return SCHED_STOP;
    int n = grammar_state_mask(q->gram, q->gvocab, q->allow);
    if (n > 0) return 0;
    s->err_code = n < 0 ? n : TERN_EINVAL;
    snprintf(s->err, sizeof s->err, "sequence %d: %s", q->id, grammar_mask_why(n));
    log_d("%s", s->err);
    return SCHED_ERROR;
}

int sched_fail(sched_t *s, int id, int code, const char *why) {
    sched_seq_t *q = not_started(s, id);
    if (!q) return TERN_EINVAL;
    s->err_code = code;
    snprintf(s->err, sizeof s->err, "%s", why);
    finish(s, q, SCHED_ERROR);
    return code;
}

int sched_set_grammar(sched_t *s, int id, grammar_t **gp, const grammar_vocab_t *v, char *err, size_t errlen) {
    grammar_t *g = *gp;
    *gp = NULL;
    sched_seq_t *q = not_started(s, id);
    if (!q || !g || grammar_vocab_n(v) != s->pl->n_vocab) {
        grammar_destroy(&g);
        return err_set(err, errlen, TERN_EINVAL, "grammar: no such sequence, or it has started");
    }
    if (!s->allow) s->allow = calloc((size_t)s->n_seq, sizeof *s->allow);
    if (!q->allow) q->allow = malloc(((size_t)s->pl->n_vocab + 7) / 8);
    q->grammar = g;
    q->gram = grammar_state_new(g);
    q->gram0 = grammar_state_new(g);
    q->gvocab = v;
    q->gram_n = q->n_prompt;
    int rc = !s->allow || !q->allow || !q->gram || !q->gram0 ? TERN_ENOMEM : 0, gf = 0;
    if (rc) snprintf(s->err, sizeof s->err, "grammar: out of memory");
    else if ((gf = grammar_follow(s, q, q->gram_n)) == SCHED_STOP)   /* it takes only the empty text */
        rc = TERN_EINVAL, snprintf(s->err, sizeof s->err, "grammar: it accepts only the empty text");
    else if (gf)
        rc = s->err_code;
    if (rc) {   /* the sequence ends here, as a failed one */
        s->err_code = rc;
        err_set(err, errlen, rc, "%s", s->err);
        finish(s, q, SCHED_ERROR);
        return rc;
    }
    s->allow[q->slot] = q->allow;
    return 0;
}

int sched_grammar_trigger(sched_t *s, int id, const char *trigger) {
    sched_seq_t *q = not_started(s, id);
    size_t n = trigger ? strlen(trigger) : 0;
    if (!q || !q->gram || n == 0 || n > SCHED_TRIGGER_MAX) return TERN_EINVAL;
    memcpy(q->trigger, trigger, n + 1);
    q->triggered = 0;
    q->n_tail = 0;
    q->trigger_tok = -1;
    s->allow[q->slot] = NULL;   /* free text: no mask until the trigger */
    return 0;
}

int sched_grammar_trigger_token(sched_t *s, int id, int32_t tok) {
    sched_seq_t *q = not_started(s, id);
    if (!q || !q->gram || !q->trigger[0] || tok < 0 || tok >= s->pl->n_vocab) return TERN_EINVAL;
    q->trigger_tok = tok;
    return 0;
}

int sched_force(sched_t *s, int id, const int32_t *toks, int n) {
    int i = find_active(s, id);
    if (i < 0 || n < 1 || n > SCHED_FORCE_MAX) return TERN_EINVAL;
    for (int k = 0; k < n; k++)
        if (toks[k] < 0 || toks[k] >= s->pl->n_vocab) return TERN_EINVAL;
    sched_seq_t *q = &s->seqs[i];
    if (!s->allow) s->allow = calloc((size_t)s->n_seq, sizeof *s->allow);
    if (!q->allow) q->allow = malloc(((size_t)s->pl->n_vocab + 7) / 8);
    if (!s->allow || !q->allow) return TERN_ENOMEM;
    memcpy(q->force, toks, (size_t)n * sizeof *toks);
    q->n_force = n;
    q->force_new = 1;
    return 0;
}

int sched_cached(const sched_t *s, int id) {
    int i = find_active(s, id);
    return i >= 0 ? s->seqs[i].n_cached : 0;
}

void sched_cancel(sched_t *s, int id) {
    int i = find_active(s, id);
    if (i >= 0) finish(s, &s->seqs[i], SCHED_CANCEL);
}

int sched_active(const sched_t *s) {
    int n = 0;
    for (int i = 0; i < s->n_seq; i++) n += s->seqs[i].active;
    return n;
}

/* packs tokens [n_fed, n_fed+k) of q into step st (with their teacher-forced targets in tgt
 * when q's prompt is scored); its last known token, when it samples (or for a sequence that
 * samples nothing, max_gen 0), makes q wait. Returns how many targets it set. */
static int pack(step_t *st, int *sid, int32_t *tgt, sched_seq_t *q, int k, int sample_last) {
    int nt = 0;
    for (int j = 0; j < k; j++) {
        int i = st->n++, p = q->n_fed + j;
        st->tokens[i] = q->toks[p];
        st->seq[i] = q->slot;
        st->pos[i] = p;
        st->sample[i] = (uint8_t)(sample_last && j == k - 1);
        tgt[i] = q->score_cb && p + 1 < q->n_prompt ? q->toks[p + 1] : -1;
        nt += tgt[i] >= 0;
        sid[i] = q->id;
    }
    q->n_fed += k;
    if ((sample_last || q->max_gen == 0) && q->n_fed >= q->n_toks) q->waiting = 1;
    return nt;
}

/* where index i of a text lands once [keep, keep + discard) is dropped */
static int shifted(int i, int keep, int discard) { return i <= keep ? i : i - discard > keep ? i - discard : keep; }

/* q may shift its context (sched_set_context_shift; never a scored prompt) */
static int can_shift(const sched_t *s, const sched_seq_t *q) { return s->ctx_shift && !q->score_cb; }

/* some token of q is in a step in flight */
static int in_flight(const sched_t *s, const sched_seq_t *q) {
    for (int k = 0; k < s->inflight; k++) {
        int j = (s->first + k) % s->max_inflight;
        const step_t *st = &s->steps[j];
        for (int i = 0; i < st->n; i++)
            if (st->seq[i] == q->slot && s->sids[j][i] == q->id) return 1;
    }
    return 0;
}

/* Context shift of q, whose stages hold toks[0..n_fed): drops toks[keep, keep + discard),
 * discard = (n_fed - keep) / 2, and moves every count past them down; *out is the shift for the
 * stages (n_past = n_fed). */
static void shift_text(sched_t *s, sched_seq_t *q, step_shift_t *out) {
    int keep = q->n_keep, n_past = q->n_fed, discard = (n_past - keep) / 2;
    TERN_ASSERT(discard > 0 && keep + discard <= n_past && q->n_toks <= s->n_ctx + 1);
    memmove(q->toks + keep, q->toks + keep + discard, (size_t)(q->n_toks - keep - discard) * sizeof *q->toks);
    q->n_toks -= discard;
    q->n_fed -= discard;
    q->n_prompt = shifted(q->n_prompt, keep, discard);
    q->n_prefill = shifted(q->n_prefill, keep, discard);
    q->gram_n = shifted(q->gram_n, keep, discard);   /* the grammar state itself follows the text made */
    if (q->kv_exact > keep) q->kv_exact = keep;
    q->n_shifted++;
    s->n_ctx_shifts++;
    out->seq = q->slot, out->keep = keep, out->discard = discard, out->n_past = n_past;
    log_d("sequence %d: context shift %d: kept %d tokens, dropped %d, goes on at position %d", q->id, q->n_shifted,
          keep, discard, n_past - discard);
}

/* slots whose prompt can take a chunk now, oldest admission (smallest id) first; returns count */
static int prompt_order(sched_t *s) {
    int n = 0;
    for (int i = 0; i < s->n_seq; i++) {
        const sched_seq_t *q = &s->seqs[i];
        if (!q->active || q->waiting || q->n_fed >= q->n_prefill || q->copy_src >= 0) continue;
        int j = n++;
        for (; j > 0 && s->seqs[s->order[j - 1]].id > q->id; j--) s->order[j] = s->order[j - 1];
        s->order[j] = i;
    }
    return n;
}

/* Pending KV copies into cp (the step's, applied before its tokens), before anything is packed: a
 * source slot that has fed the tokens is copied now; one whose tokens changed (its sequence ended,
 * another took the slot, a shift) gives what it still holds or will hold, and when that is not
 * SCHED_COPY_MIN more than the sequence's own cache the copy is called off. A slot copied into in
 * this step is no source before the next one. Returns the copies. */
static int resolve_copies(sched_t *s, step_copy_t *cp) {
    int n = 0;
    for (int i = 0; i < s->n_seq; i++) {
        sched_seq_t *q = &s->seqs[i];
        if (!q->active || q->copy_src < 0) continue;
        const sched_seq_t *src = &s->seqs[q->copy_src];
        int busy = 0;
        for (int c = 0; c < n; c++) busy |= cp[c].dst_slot == q->copy_src;
        if (busy) continue;
        int held = copy_held(src), will = copy_will_hold(src);
        int now = toks_common(src->toks, q->toks, held < q->copy_n ? held : q->copy_n);
        int later = toks_common(src->toks, q->toks, will < q->copy_n ? will : q->copy_n);
        if (later < q->copy_n) {   /* less than it was to give */
            int k = later >= q->copy_own + SCHED_COPY_MIN ? later : q->copy_own;
            log_d("sequence %d: slot %d no longer holds its first %d tokens: %s %d", q->id, q->copy_src, q->copy_n,
                  k == later ? "copies" : "starts from its own cache at", k);
            s->n_cached_tok += k - q->n_cached;
            q->n_fed = q->n_cached = q->copy_n = k;
            if (k == q->copy_own) { q->copy_src = -1; continue; }
        }
        if (now < q->copy_n) continue;   /* its tokens are still to be fed */
        cp[n++] = (step_copy_t){q->copy_src, q->slot, q->copy_n};
        q->copy_src = -1;
        s->n_copies++;
        s->n_copied_tok += q->copy_n;
    }
    return n;
}

/* builds the next step from sequences with work that is not waiting on an in-flight token:
 * decode tokens first (with the context shift of one whose next position is n_ctx, into sh),
 * then prompt chunks (oldest first) up to n_batch, or up to prefill_chunk while some sequence
 * decodes; the pending KV copies that can be made go first (into cp). Returns tokens packed. */
static int build(sched_t *s, step_t *st, int *sid, int32_t *tgt, step_shift_t *sh, step_copy_t *cp, int *has_prompt) {
    st->n = 0;
    st->target = NULL;
    st->n_copy = resolve_copies(s, cp);   /* even with copies off now: those admitted before wait for theirs */
    st->copy = st->n_copy ? cp : NULL;
    int n_sh = 0;
    *has_prompt = 0;
    int n_tgt = 0;
    int budget = s->n_batch, decoding = 0;
    for (int i = 0; i < s->n_seq; i++) decoding |= s->seqs[i].active && s->seqs[i].n_fed >= s->seqs[i].n_prefill;
    /* With several stages, steps are pipelined: spread the running sequences over
     * max_inflight steps (each takes at most its share), so every stage has work. When n_batch
     * cannot hold every decoder, the scan resumes after the last one packed (no slot starves). */
    int active = sched_active(s), share = (active + s->max_inflight - 1) / s->max_inflight, n_dec = 0, c = 0;
    for (; c < s->n_seq && n_dec < share && budget > 0; c++) {
        sched_seq_t *q = &s->seqs[(s->dec_next + c) % s->n_seq];
        if (q->active && !q->waiting && q->n_fed >= q->n_prefill && q->n_fed < q->n_toks) {
            if (q->n_fed >= s->n_ctx) {   /* its next position is past the context */
                if (!can_shift(s, q)) { finish(s, q, SCHED_CTX); continue; }
                if (in_flight(s, q)) continue;   /* the stages must hold all it fed */
                shift_text(s, q, &sh[n_sh++]);
            }
            n_tgt += pack(st, sid, tgt, q, 1, 1);
            budget--;
            n_dec++;
            budget -= pack_drafts(s, st, sid, tgt, q, budget - (active - n_dec));   /* the others' tokens first */
        }
    }
    s->dec_next = budget > 0 ? 0 : (s->dec_next + c) % s->n_seq;
    if (decoding && s->prefill_chunk > 0 && budget > s->prefill_chunk) budget = s->prefill_chunk;
    if (budget < 1) budget = 1;   /* decode filled n_batch: the oldest prompt still advances */
    int n_p = prompt_order(s);
    for (int o = 0; o < n_p && budget > 0; o++) {
        sched_seq_t *q = &s->seqs[s->order[o]];
        int k = q->n_prefill - q->n_fed < budget ? q->n_prefill - q->n_fed : budget;
        n_tgt += pack(st, sid, tgt, q, k, q->n_fed + k == q->n_prefill && q->max_gen > 0);
        budget -= k;
        *has_prompt = 1;
    }
    if (n_tgt) st->target = tgt;   /* no targets on the wire for steps that score nothing */
    st->n_shift = n_sh;
    st->shift = n_sh ? sh : NULL;
    return st->n;
}

static int fail_all(sched_t *s, int rc, const char *why) {
    snprintf(s->err, sizeof s->err, "%s", why);
    s->err_code = rc;
    for (int i = 0; i < s->n_seq; i++) s->seqs[i].kv_ok = 0;   /* what the stages hold is unknown */
    for (int i = 0; i < s->n_seq; i++)
        if (s->seqs[i].active) finish(s, &s->seqs[i], SCHED_ERROR);
    return rc;
}

/* delivers the prompt scores of a finished step (in token order), then ends the sequences that
 * sample nothing once their last prompt token is through */
static void deliver_scores(sched_t *s, step_t *st, const int *sid) {
    for (int i = 0, k = 0; st->target && i < st->n && k < st->n_scored; i++) {
        if (st->target[i] < 0) continue;
        sched_seq_t *q = &s->seqs[st->seq[i]];
        int kk = k++;
        if (!q->active || q->id != sid[i] || !q->score_cb || st->pos[i] + 1 != q->n_scored) continue;   /* replayed */
        sched_top_t top = {0, NULL, NULL};
        if (st->n_target_top > 0) {
            top.n = q->sp.logprobs && q->sp.top_logprobs < st->n_target_top ? q->sp.top_logprobs : st->n_target_top;
            top.ids = st->out_target_top + (size_t)kk * (size_t)st->n_target_top;
            top.lp = st->out_target_top_lp + (size_t)kk * (size_t)st->n_target_top;
            while (top.n > 0 && top.ids[top.n - 1] < 0) top.n--;
        }
        q->score_cb(q->user, q->id, q->n_scored++, st->target[i], (float)st->out_target_lp[kk], top.n > 0 ? &top : NULL);
    }
    for (int i = 0; i < st->n; i++) {
        sched_seq_t *q = &s->seqs[st->seq[i]];
        if (q->active && q->id == sid[i] && q->max_gen == 0 && st->pos[i] == q->n_toks - 1) finish(s, q, SCHED_LENGTH);
    }
}

/* the embedding rows of a finished step into their sequences' pools (in token order); a sequence
 * whose last prompt row came gets its vector (deliver_scores then ends it) */
static void deliver_embd(sched_t *s, step_t *st, const int *sid) {
    const size_t E = (size_t)s->pl->n_embd;
    for (int i = 0, k = 0; st->embd && i < st->n && k < st->n_embd_out; i++) {
        if (!st->embd[i]) continue;
        const float *row = st->out_embd + (size_t)k++ * E;
        sched_seq_t *q = &s->seqs[st->seq[i]];
        int p = st->pos[i], last = p == q->n_prompt - 1, pool = q->embd_pool;
        if (!q->active || q->id != sid[i] || !q->embd_cb) continue;
        if (pool == SCHED_POOL_NONE) memcpy(q->embd + (size_t)p * E, row, E * sizeof(float));
        else if (pool == SCHED_POOL_MEAN && p > 0) for (size_t e = 0; e < E; e++) q->embd[e] += row[e];
        else if (p == 0 || (pool == SCHED_POOL_LAST && last)) memcpy(q->embd, row, E * sizeof(float));
        if (!last) continue;
        int rows = pool == SCHED_POOL_NONE ? q->n_prompt : 1;
        for (size_t e = 0; pool == SCHED_POOL_MEAN && e < E; e++) q->embd[e] /= (float)q->n_prompt;
        for (int r = 0; r < rows; r++) sched_embd_normalize(q->embd + (size_t)r * E, (int)E, q->embd_norm);
        q->embd_cb(q->user, q->id, q->embd, rows, (int)E);
    }
}

/* the step's embedding flags: every token of a sequence that asked for them */
static void mark_embd(const sched_t *s, step_t *st, uint8_t *emf) {
    int n = 0;
    for (int i = 0; i < st->n; i++) n += (emf[i] = s->seqs[st->seq[i]].embd_cb != NULL);
    st->embd = n ? emf : NULL;
}

/* the forced token tok came (sched_force): the next one is due; any other token (the forcing
 * was dropped meanwhile) ends it */
static void force_done(sched_t *s, sched_seq_t *q, int32_t tok) {
    if (!q->n_force) return;
    if (tok == q->force[0]) memmove(q->force, q->force + 1, (size_t)--q->n_force * sizeof q->force[0]);
    else q->n_force = 0;
    if (!q->n_force && !q->gram) s->allow[q->slot] = NULL;   /* free sampling again */
}

/* delivers the sampled tokens of a finished step (in order of its sampling tokens) */
static void deliver(sched_t *s, step_t *st, const int *sid) {
    deliver_embd(s, st, sid);
    deliver_scores(s, st, sid);
    int j = 0;
    for (int i = 0; i < st->n && j < st->n_out; i++) {
        if (!st->sample[i]) continue;
        sched_seq_t *q = &s->seqs[st->seq[i]];
        int32_t tok = st->out_tok[j];
        float lp = st->out_lp[j];
        sched_top_t top = {0, NULL, NULL};
        if (st->n_top > 0) {   /* this sequence's own count: rows are padded to the step's most */
            int nt = q->sp.logprobs ? q->sp.top_logprobs : 0;
            top.n = nt < st->n_top ? nt : st->n_top;
            top.ids = st->out_top + (size_t)j * (size_t)st->n_top;
            top.lp = st->out_top_lp + (size_t)j * (size_t)st->n_top;
            while (top.n > 0 && top.ids[top.n - 1] < 0) top.n--;
        }
        j++;
        if (!q->active || q->id != sid[i]) continue;   /* cancelled meanwhile */
        if (st->pos[i] >= q->n_toks || st->tokens[i] != q->toks[st->pos[i]]) continue;   /* a draft the model did not take */
        if (q->force_new) continue;   /* drafts sampled before a forcing: refused, as if not taken */
        if (i > 0 && st->seq[i - 1] == st->seq[i] && st->sample[i - 1] && st->pos[i] >= q->n_fed) {   /* one it took */
            q->n_fed = st->pos[i] + 1;
            s->n_draft_ok++;
        }
        if (st->pos[i] + 1 < q->n_toks) continue;   /* known already: never delivered twice */
        q->waiting = 0;
        if (!q->t_first) q->t_first = time_now();
        q->toks[q->n_toks++] = tok;
        q->n_gen++;
        force_done(s, q, tok);
        int stop = q->cb ? q->cb(q->user, q->id, tok, lp, top.n > 0 ? &top : NULL, SCHED_RUNNING) : 0;
        int gf = !stop && q->gram ? grammar_follow(s, q, q->n_toks) : 0;
        if (stop) finish(s, q, SCHED_STOP);
        else if (gf) finish(s, q, gf);
        else if (q->n_gen >= q->max_gen) finish(s, q, SCHED_LENGTH);
        else if (q->n_toks >= s->n_ctx && !can_shift(s, q)) finish(s, q, SCHED_CTX);   /* else it shifts */
    }
}

/* The pipeline lost its state and rebuilt itself: forget the steps in flight and feed every
 * active sequence again, as one prompt of all its known tokens: a draw is keyed on its position
 * and the last stage's history (the penalties') is made of the tokens fed, so the next sample is
 * the one the sequence would have drawn without the failure. Not under mirostat: its mu (the
 * last stage's state, moved by each sample's surprise) starts again at 2·tau, so the tokens after
 * the recovery may differ from an uninterrupted run's (logged). */
static void replay_all(sched_t *s) {
    s->inflight = 0;
    s->first = 0;
    s->n_recoveries++;
    for (int i = 0; i < s->n_seq; i++) {
        sched_seq_t *q = &s->seqs[i];
        q->kv_ok = 0;   /* the rebuilt stages hold no keys and values */
        if (!q->active) continue;
        q->kv_ok = 1;   /* it is fed again from position 0 */
        q->n_cached = 0;
        q->copy_src = -1;
        s->pl->ops->seq_start(s->pl, q->slot, &q->sp);
        if (q->n_toks > s->n_ctx) {   /* its shift was due: made on the text alone (the cache is empty) */
            step_shift_t sh;
            q->n_fed = s->n_ctx;
            shift_text(s, q, &sh);
        }
        q->kv_exact = s->n_ctx + 1;   /* a prefill of the (shifted) text */
        if (q->gram && !q->n_shifted) {   /* the grammar walks the generated tokens again before the next sample */
            grammar_state_t *g = grammar_state_clone(q->gram0);
            if (g) {
                grammar_state_destroy(&q->gram);
                q->gram = g;
                q->gram_n = q->n_prompt;
                q->triggered = 0;   /* a lazy one waits for its trigger again */
                q->n_tail = 0;
            }
            int gf = grammar_follow(s, q, q->gram_n);   /* the mask of its start */
            if (gf) { finish(s, q, gf); continue; }
        }
        q->n_fed = 0;
        q->waiting = 0;
        q->n_prefill = q->n_toks;
        log_i("sequence %d: replaying %d tokens (%d generated so far)", q->id, q->n_toks, q->n_gen);
        if (q->sp.mirostat && q->n_gen)
            log_w("sequence %d: mirostat starts again from mu = 2·tau after the recovery: its next tokens may "
                  "differ from an uninterrupted run's", q->id);
    }
}

/* q's next sample is force[0]: its mask admits that token alone — under a grammar only when the
 * grammar's mask (in q->allow, or none while a lazy one waits) lets it through, else the forcing
 * is dropped */
static void force_mask(sched_t *s, sched_seq_t *q) {
    int32_t t = q->force[0];
    const uint8_t *g = q->gram ? s->allow[q->slot] : NULL;   /* else it holds the last forced token's */
    if (g && !(g[t >> 3] >> (t & 7) & 1)) {
        log_d("sequence %d: the grammar refuses forced token %d: no more forcing", q->id, t);
        q->n_force = q->force_new = 0;
        return;
    }
    q->force_new = 0;
    memset(q->allow, 0, ((size_t)s->pl->n_vocab + 7) / 8);
    q->allow[t >> 3] = (uint8_t)(1u << (t & 7));
    s->allow[q->slot] = q->allow;
}

/* the step's constrained samples: a replayed one first brings its grammar to its position; a
 * forced one (sched_force) gets its token's mask */
static void constrain(sched_t *s, step_t *st) {
    st->allow = NULL;
    for (int i = 0; s->allow && i < st->n; i++) {
        sched_seq_t *q = &s->seqs[st->seq[i]];
        if (!st->sample[i] || (!q->gram && !q->n_force)) continue;
        int gf = q->gram && q->gram_n < st->pos[i] + 1 ? grammar_follow(s, q, st->pos[i] + 1) : 0;
        if (gf) { finish(s, q, gf); continue; }   /* its sample will find it gone */
        if (q->n_force && st->pos[i] + 1 == q->n_toks) force_mask(s, q);
        st->allow = s->allow;
    }
}

/* a submit or a step failed: let the pipeline recover (then replay), else fail everything */
static int recover_or_fail(sched_t *s, int rc, const char *why) {
    char err[256];
    if (s->pl->ops->recover && sched_active(s) > 0) {
        int r = s->pl->ops->recover(s->pl, why, err, sizeof err);
        if (r == 0) {
            replay_all(s);
            return sched_active(s);
        }
        rc = r;
        why = err;
    }
    return fail_all(s, rc, why);
}

int sched_step(sched_t *s) {
    while (s->inflight < s->max_inflight && !s->hold) {
        int k = (s->first + s->inflight) % s->max_inflight, has_prompt;
        step_t *st = &s->steps[k];
        if (!build(s, st, s->sids[k], s->tgt[k], s->shifts[k], s->copies[k], &has_prompt)) break;
        if (embed_lookup(s->emb, st->tokens, st->n, st->h) < 0) return fail_all(s, TERN_EINVAL, "token id outside the vocabulary");
        st->id = (uint64_t)s->steps_run++;
        constrain(s, st);
        mark_embd(s, st, s->emf[k]);
        s->has_prompt[k] = has_prompt;   /* for the prefill/decode timing split */
        st->err[0] = 0;
        int rc = s->pl->ops->submit(s->pl, st);
        if (rc < 0) return recover_or_fail(s, rc, st->err[0] ? st->err : "pipeline: step was not accepted");
        s->inflight++;
    }
    if (!s->inflight) return sched_active(s);
    step_t *want = &s->steps[s->first];
    int had_prompt = s->has_prompt[s->first];
    double t0 = time_now();
    step_t *done = s->pl->ops->wait(s->pl, -1);
    if (!done || done != want) return fail_all(s, TERN_EPEER, done ? "pipeline: steps finished out of order" : "pipeline: no answer");
    s->first = (s->first + 1) % s->max_inflight;
    s->inflight--;
    if (done->rc < 0) return recover_or_fail(s, done->rc, done->err);
    double dt = time_now() - t0;
    if (had_prompt) { s->t_prefill += dt; s->n_prefill_tok += done->n; }
    else { s->t_decode += dt; s->n_decode_tok += done->n; }
    deliver(s, done, s->sids[(s->first + s->max_inflight - 1) % s->max_inflight]);
    return sched_active(s);
}
