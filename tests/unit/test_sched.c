/* test_sched: the scheduler against a fake pipeline (a deterministic "model": the next token is a
 * hash of the slot's whole history, plus a draw keyed on (seed, position) when temp > 0, as the
 * sampler's) that checks every step's
 * positions and records its composition — chunked prefill (the cap while decoders run, the full
 * batch when none do, decode tokens in every step, oldest prompt first, no starvation), outputs
 * equal to solo runs and to the model itself, pipelined steps, replay after recovery, and
 * context shifts (each applied to the fake's cache as the stages apply them), and KV copies between
 * slots (a prompt evaluated once for several sequences), and the RAM prompt cache (rows read out of
 * a slot before another prompt takes it, written back for the prompt that begins with them), and
 * forced tokens (sched_force: a reasoning budget's end marker). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "coordinator/sched.h"
#include "core/err.h"
#include "core/log.h"
#include "core/types.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V 97        /* vocabulary */
#define E 4         /* embedding width */
#define SLOTS 8
#define MAXTOK 256  /* per sequence */

/* ---- the fake model ---- */

/* g_markov: the next token depends on the last one only, so greedy text falls into cycles that
 * prompt lookup can predict (test_lookup) */
static int g_markov;
static uint64_t hist_next(uint64_t h, int32_t tok) {
    if (g_markov) return ((uint64_t)(tok + 1) * 0x9e3779b97f4a7c15ull) ^ 0x5bd1e995ull;
    return (h ^ (uint64_t)(tok + 1)) * 1099511628211ull;
}
static const uint64_t HIST0 = 1469598103934665603ull;
/* the token at position pos after history h: the model's pick, from which a sampled sequence
 * departs at about one position in four (the sampler's draw for (seed, pos) decides), so sampled
 * text still cycles where greedy text does and prompt lookup finds drafts in it */
static int32_t model_sample(uint64_t h, const sampler_params_t *sp, int pos) {
    uint64_t x = h >> 7;
    double u = sp->temp > 0 ? sampler_uniform(sp->seed, pos) : 1.0;
    if (u < 0.25) x += 1 + (uint64_t)(u * 4.0 * (V - 1));
    return (int32_t)(x % V);
}

/* the fake model's log p(t | history h): a function of both, so a score for the wrong position
 * or token shows */
static double model_lp(uint64_t h, int32_t t) { return -(double)(hist_next(h, t) % 1000) / 100.0 - 0.001; }

/* the tokens the model generates for prompt alone (the spec the scheduler must reproduce) */
static int model_generate(const int32_t *prompt, int n, int max_gen, const sampler_params_t *sp, int32_t *out) {
    uint64_t h = HIST0;
    for (int i = 0; i < n; i++) h = hist_next(h, prompt[i]);
    for (int g = 0; g < max_gen; g++) {
        out[g] = model_sample(h, sp, n + g);
        h = hist_next(h, out[g]);
    }
    return max_gen;
}

/* ---- the fake pipeline ---- */

typedef struct fake {
    pipeline_t base;                 /* first: the scheduler sees a pipeline_t * */
    uint64_t hist[SLOTS];
    uint64_t hist_at[SLOTS][MAXTOK + 1];   /* the slot's "KV cache": history hash after positions 0..p */
    int32_t kvtok[SLOTS][MAXTOK];    /* the token at each position of the cache */
    int n_ctx;                       /* the scheduler's context: no position at or past it */
    int n_shift[SLOTS];              /* context shifts applied to each slot (kept across seq_start) */
    step_shift_t last_shift[SLOTS];
    int kv_len[SLOTS];               /* positions it holds (kept across seq_start, gone on recover) */
    int cache_ok;                    /* a started sequence may begin at any position <= kv_len */
    sampler_params_t sp[SLOTS];
    int npos[SLOTS], sampled[SLOTS];
    int plen[SLOTS], rank[SLOTS];    /* set by the test after sched_add: prompt length, admission rank */
    int last_started;
    step_t *queue[SCHED_MAX_INFLIGHT];
    int nq, n_submit, n_recover;
    int fail_at[4], n_fail;          /* submit indices whose wait reports a failure (once each) */
    int check;                       /* check step composition against the expected packing */
    int rewind_ok;                   /* a slot may be fed again from an earlier position (drafts) */
    int n_batch, chunk;              /* what the scheduler was configured with */
    int n_live, pending;             /* kept by the test: decoders that got a token and run, prompt tokens left */
    int max_prompt_step_live;        /* largest prompt part of a step while something decoded */
    int n_steps_live_prompt;         /* steps with prompt tokens while something decoded */
    int n_masked;                    /* samples drawn under a grammar's mask */
    int n_copies, n_fed;             /* KV copies applied, tokens fed (all steps) */
    int bad;                         /* contract violations (first one in why) */
    char why[256];
} fake_t;

static void fake_bad(fake_t *f, const char *fmt, ...) {
    if (f->bad++) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->why, sizeof f->why, fmt, ap);
    va_end(ap);
}

static int fake_seq_start(pipeline_t *p, int slot, const sampler_params_t *sp) {
    fake_t *f = (fake_t *)p;
    if (slot < 0 || slot >= SLOTS) return TERN_EINVAL;
    f->hist[slot] = HIST0;
    f->hist_at[slot][0] = HIST0;
    f->sp[slot] = *sp;
    f->npos[slot] = f->cache_ok ? -1 : 0;   /* -1: the first token may come at any cached position */
    f->sampled[slot] = 0;
    f->last_started = slot;
    return 0;
}

/* the composition the scheduler promises for a step built with n_live decoders (one step in
 * flight, so none waits): all decoders (n_batch allowing), then min(cap, what is left) prompt
 * tokens with a floor of one, oldest prompt first */
static void fake_check(fake_t *f, const step_t *s, int n_dec, int n_prompt) {
    int want_dec = f->n_live < f->n_batch ? f->n_live : f->n_batch;
    int budget = f->n_batch - want_dec;
    if (f->n_live > 0 && f->chunk > 0 && budget > f->chunk) budget = f->chunk;
    if (budget < 1) budget = 1;
    int want_prompt = f->pending < budget ? f->pending : budget;
    if (n_dec != want_dec)
        fake_bad(f, "step %d: %d decode tokens, want %d (live decoders %d, n_batch %d)", f->n_submit, n_dec, want_dec,
                 f->n_live, f->n_batch);
    if (n_prompt != want_prompt)
        fake_bad(f, "step %d: %d prompt tokens, want %d (live %d, pending %d, n_batch %d, chunk %d)", f->n_submit,
                 n_prompt, want_prompt, f->n_live, f->pending, f->n_batch, f->chunk);
    /* oldest first: prompt parts in rising admission rank, the first being the oldest pending
     * one, and each but the last finishing its prompt in this step */
    int prev = -1, oldest = 1 << 30;
    for (int sl = 0; sl < SLOTS; sl++)
        if (f->plen[sl] && !f->sampled[sl] && f->npos[sl] < f->plen[sl] && f->rank[sl] < oldest) oldest = f->rank[sl];
    for (int i = 0; i < s->n; i++) {
        int sl = s->seq[i];
        if (f->sampled[sl] || (i > 0 && s->seq[i - 1] == sl)) continue;
        if (prev < 0 && f->rank[sl] != oldest)
            fake_bad(f, "step %d: prompt of rank %d goes first, rank %d is older", f->n_submit, f->rank[sl], oldest);
        if (prev >= 0 && f->rank[sl] <= prev) fake_bad(f, "step %d: prompt of rank %d after rank %d", f->n_submit, f->rank[sl], prev);
        if (prev >= 0 && !s->sample[i - 1])
            fake_bad(f, "step %d: prompt of rank %d starts before rank %d is done", f->n_submit, f->rank[sl], prev);
        prev = f->rank[sl];
    }
}

/* a step's context shifts, checked (the pipeline.h contract; the slot holds all it was fed and
 * has nothing in flight; the step carries the slot's next token, at n_past - discard) and applied
 * as the stages apply them: the cache drops [keep, keep + discard) and moves the rest down. The
 * fake model's next token is a hash of the cache's tokens, so a shifted cache gives what a fresh
 * prefill of the shifted text would (a real model's moved keys differ in the last digits). */
static void fake_shift(fake_t *f, const step_t *s) {
    for (int k = 0; k < s->n_shift; k++) {
        const step_shift_t *x = &s->shift[k];
        int sl = x->seq, carried = 0;
        if (sl < 0 || sl >= SLOTS || x->keep < 0 || x->discard < 1 || x->keep + x->discard > x->n_past ||
            x->n_past > f->n_ctx) {
            fake_bad(f, "step %d: bad shift {%d, %d, %d, %d}", f->n_submit, sl, x->keep, x->discard, x->n_past);
            continue;
        }
        if (x->n_past != f->npos[sl])
            fake_bad(f, "step %d: shift of slot %d from n_past %d, but it holds %d", f->n_submit, sl, x->n_past, f->npos[sl]);
        for (int q = 0; q < f->nq; q++)
            for (int i = 0; i < f->queue[q]->n; i++)
                if (f->queue[q]->seq[i] == sl) carried = -1;
        if (carried < 0) fake_bad(f, "step %d: shift of slot %d while its tokens are in flight", f->n_submit, sl);
        for (int i = 0; i < s->n; i++)
            if (s->seq[i] == sl) { carried = s->pos[i] == x->n_past - x->discard; break; }
        if (carried != 1) fake_bad(f, "step %d: shift of slot %d without its next token at %d", f->n_submit, sl, x->n_past - x->discard);
        int n_left = x->n_past - x->discard;
        memmove(f->kvtok[sl] + x->keep, f->kvtok[sl] + x->keep + x->discard,
                (size_t)(x->n_past - x->keep - x->discard) * sizeof(int32_t));
        for (int p = x->keep; p < n_left; p++) f->hist_at[sl][p + 1] = hist_next(f->hist_at[sl][p], f->kvtok[sl][p]);
        f->npos[sl] = f->kv_len[sl] = n_left;
        f->hist[sl] = f->hist_at[sl][n_left];
        f->n_shift[sl]++;
        f->last_shift[sl] = *x;
    }
}

/* a step's KV copies, checked (the pipeline.h contract; the source slot holds the rows from steps
 * before this one, no slot copied into twice nor both copied into and from) and applied as the
 * stages apply them, before the shifts and tokens: dst's cache becomes src's first n positions,
 * and its next token must come at n */
static void fake_copy(fake_t *f, const step_t *s) {
    for (int k = 0; k < s->n_copy; k++) {
        const step_copy_t *x = &s->copy[k];
        int a = x->src_slot, b = x->dst_slot;
        if (a < 0 || a >= SLOTS || b < 0 || b >= SLOTS || a == b || x->n < 1 || x->n > f->n_ctx) {
            fake_bad(f, "step %d: bad copy {%d, %d, %d}", f->n_submit, a, b, x->n);
            continue;
        }
        if (x->n > f->kv_len[a]) fake_bad(f, "step %d: copy of %d positions of slot %d, which holds %d", f->n_submit, x->n, a, f->kv_len[a]);
        for (int j = 0; j < s->n_copy; j++)
            if ((j < k && s->copy[j].dst_slot == b) || s->copy[j].dst_slot == a)
                fake_bad(f, "step %d: copy %d's slots are copied into twice or both ways", f->n_submit, k);
        memcpy(f->kvtok[b], f->kvtok[a], (size_t)x->n * sizeof(int32_t));
        memcpy(f->hist_at[b], f->hist_at[a], ((size_t)x->n + 1) * sizeof(uint64_t));
        f->kv_len[b] = f->npos[b] = x->n;
        f->n_copies++;
    }
}

/* runs the step at submit (steps complete in order, so this is what a real pipeline computes) */
static int fake_submit(pipeline_t *p, step_t *s) {
    fake_t *f = (fake_t *)p;
    if (f->nq >= p->max_inflight) {
        fake_bad(f, "submit with %d steps in flight (max %d)", f->nq, p->max_inflight);
        return TERN_EINVAL;
    }
    fake_copy(f, s);
    fake_shift(f, s);
    f->n_fed += s->n;
    int n_dec = 0, n_prompt = 0;
    for (int i = 0; i < s->n; i++) {
        int sl = s->seq[i];
        if (s->h[(size_t)i * E] != (float)s->tokens[i]) fake_bad(f, "step %d token %d: wrong embedding", f->n_submit, i);
        if (f->sampled[sl]) n_dec++;
        else n_prompt++;
    }
    if (f->check) fake_check(f, s, n_dec, n_prompt);
    if (f->n_live > 0 && n_prompt > 0) {
        f->n_steps_live_prompt++;
        if (n_prompt > f->max_prompt_step_live) f->max_prompt_step_live = n_prompt;
    }
    s->n_out = 0;
    s->n_scored = 0;
    s->n_target_top = 0;
    for (int i = 0; s->target && i < s->n; i++)   /* 2 alternatives when any scored sequence asks */
        if (s->target[i] >= 0 && f->sp[s->seq[i]].logprobs && f->sp[s->seq[i]].top_logprobs) s->n_target_top = 2;
    for (int i = 0; i < s->n; i++) {
        int sl = s->seq[i];
        if (f->npos[sl] == -1 && s->pos[i] <= f->kv_len[sl]) f->npos[sl] = s->pos[i];   /* starts on the cache */
        if (f->rewind_ok && s->pos[i] >= 0 && s->pos[i] < f->npos[sl] && (i == 0 || s->seq[i - 1] != sl))
            f->npos[sl] = s->pos[i];   /* refused drafts: their positions are fed again */
        if (s->pos[i] != f->npos[sl])
            fake_bad(f, "step %d: slot %d fed position %d, expected %d", f->n_submit, sl, s->pos[i], f->npos[sl]);
        if (s->pos[i] >= f->n_ctx) fake_bad(f, "step %d: slot %d fed position %d, past the context %d", f->n_submit, sl, s->pos[i], f->n_ctx);
        if (s->pos[i] < 0 || s->pos[i] >= MAXTOK) continue;
        f->npos[sl] = s->pos[i] + 1;
        f->kvtok[sl][s->pos[i]] = s->tokens[i];
        f->hist[sl] = hist_next(f->hist_at[sl][s->pos[i]], s->tokens[i]);
        f->hist_at[sl][s->pos[i] + 1] = f->hist[sl];
        f->kv_len[sl] = s->pos[i] + 1;
        if (s->target && s->target[i] >= 0) {   /* teacher forcing: log p(target | history so far) */
            int k = s->n_scored++;
            s->out_target_lp[k] = model_lp(f->hist[sl], s->target[i]);
            for (int t = 0; t < s->n_target_top; t++) {
                s->out_target_top[k * s->n_target_top + t] = f->sp[sl].top_logprobs ? (s->target[i] + t) % V : -1;
                s->out_target_top_lp[k * s->n_target_top + t] = (float)-t;
            }
        }
        if (!f->sampled[sl]) f->pending--;
        if (!s->sample[i]) continue;
        f->sampled[sl] = 1;
        int32_t t = model_sample(f->hist[sl], &f->sp[sl], s->pos[i] + 1);
        const uint8_t *m = s->allow ? s->allow[sl] : NULL;
        if (m) {   /* a grammar's mask: the first allowed token from the model's pick on */
            int k = 0;
            while (k < V && !(m[(t + k) % V >> 3] >> ((t + k) % V & 7) & 1)) k++;
            if (k == V) fake_bad(f, "step %d: slot %d's mask allows nothing", f->n_submit, sl);
            t = (t + k) % V;
            f->n_masked++;
        }
        s->out_tok[s->n_out] = t;
        s->out_lp[s->n_out++] = -1.0f;
    }
    s->rc = 0;
    for (int k = 0; k < f->n_fail; k++)
        if (f->fail_at[k] == f->n_submit) {
            s->rc = TERN_EPEER;
            snprintf(s->err, sizeof s->err, "fake: stage lost at step %d", f->n_submit);
            f->fail_at[k] = -1;
        }
    f->n_submit++;
    f->queue[f->nq++] = s;
    return 0;
}

static step_t *fake_wait(pipeline_t *p, int timeout_ms) {
    (void)timeout_ms;
    fake_t *f = (fake_t *)p;
    if (!f->nq) return NULL;
    step_t *s = f->queue[0];
    memmove(f->queue, f->queue + 1, (size_t)(--f->nq) * sizeof f->queue[0]);
    return s;
}

static int fake_recover(pipeline_t *p, const char *why, char *err, size_t errlen) {
    (void)why;
    (void)err;
    (void)errlen;
    fake_t *f = (fake_t *)p;
    f->nq = 0;
    f->n_recover++;
    for (int sl = 0; sl < SLOTS; sl++) f->npos[sl] = -1000, f->kv_len[sl] = 0;   /* state gone: must seq_start again */
    return 0;
}

static void fake_destroy(pipeline_t *p) { (void)p; }

static const pipeline_ops_t fake_ops = {fake_seq_start, fake_submit, fake_wait, fake_destroy, fake_recover, NULL, NULL, NULL};

/* ---- harness ---- */

static float emb_table[V * E];
static gguf_tensor_t emb_tensor;
static embed_t emb;

static int setup(void **state) {
    (void)state;
    for (int t = 0; t < V; t++)
        for (int j = 0; j < E; j++) emb_table[t * E + j] = (float)t + 0.25f * (float)j;
    emb_tensor.type = TT_F32;
    emb_tensor.ndim = 2;
    emb_tensor.ne[0] = E;
    emb_tensor.ne[1] = V;
    emb_tensor.ne[2] = emb_tensor.ne[3] = 1;
    emb_tensor.data = emb_table;
    emb.t = &emb_tensor;
    emb.n_vocab = V;
    emb.n_embd = E;
    return 0;
}

typedef struct seqrun {
    int32_t prompt[MAXTOK];
    int n_prompt, max_gen;
    sampler_params_t sp;
    int32_t out[MAXTOK];
    int n_out, finish, id, slot;
    int first_step, last_step, finish_step;   /* steps run when its first / latest token, its end arrived */
    fake_t *f;
    sched_t *sc;
} seqrun_t;

static int on_token(void *user, int id, int32_t token, float logprob, const sched_top_t *top, int finish) {
    (void)logprob;
    (void)top;
    seqrun_t *r = user;
    assert_int_equal(id, r->id);
    if (finish) {
        r->finish = finish;
        r->finish_step = r->sc->steps_run;
        if (r->n_out > 0) r->f->n_live--;
        return 0;
    }
    assert_true(r->n_out < MAXTOK);
    if (r->n_out == 0) {
        r->first_step = r->sc->steps_run;
        r->f->n_live++;
    }
    r->last_step = r->sc->steps_run;
    r->out[r->n_out++] = token;
    return 0;
}

static void fake_init(fake_t *f, int max_inflight) {
    memset(f, 0, sizeof *f);
    f->base.ops = &fake_ops;
    f->base.max_inflight = max_inflight;
    f->base.n_embd = E;
    f->base.n_vocab = V;
}

static void sched_open_ctx(sched_t *sc, fake_t *f, int n_seq, int n_batch, int chunk, int n_ctx) {
    char err[256] = "";
    int rc = sched_init(sc, &f->base, &emb, n_seq, n_ctx, n_batch, err, sizeof err);
    if (rc < 0) fail_msg("sched_init: %s", err);
    assert_int_equal(sched_set_prefill_chunk(sc, chunk), 0);
    f->n_batch = n_batch;
    f->chunk = chunk;
    f->n_ctx = n_ctx;
}

static void sched_open(sched_t *sc, fake_t *f, int n_seq, int n_batch, int chunk) {
    sched_open_ctx(sc, f, n_seq, n_batch, chunk, MAXTOK);
}

static void seq_make(seqrun_t *r, int n_prompt, int max_gen, int salt, float temp) {
    memset(r, 0, sizeof *r);
    r->n_prompt = n_prompt;
    r->max_gen = max_gen;
    for (int i = 0; i < n_prompt; i++) r->prompt[i] = (int32_t)((i * 31 + salt * 17 + 5) % V);
    sampler_params_default(&r->sp);
    r->sp.temp = temp;
    r->sp.seed = 1000u + (unsigned)salt;
}

static void admit(sched_t *sc, fake_t *f, seqrun_t *r, int rank) {
    r->f = f;
    r->sc = sc;
    r->id = sched_add(sc, r->prompt, r->n_prompt, r->max_gen, &r->sp, on_token, r);
    if (r->id < 0) fail_msg("sched_add: %s", tern_strerror(r->id));
    r->slot = f->last_started;
    f->plen[r->slot] = r->n_prompt;
    f->rank[r->slot] = rank;
    f->pending += r->n_prompt;
}

static int step(sched_t *sc, fake_t *f) {
    int rc = sched_step(sc);
    if (rc < 0) fail_msg("sched_step: %s", sc->err);
    if (f->bad) fail_msg("fake pipeline: %d violations; first: %s", f->bad, f->why);
    return rc;
}

/* the run alone: a fresh one-slot scheduler; also equal to the model's own generation */
static void expect_solo(const seqrun_t *r) {
    fake_t f;
    sched_t sc;
    seqrun_t solo = *r;
    fake_init(&f, 1);
    sched_open(&sc, &f, 1, 64, SCHED_PREFILL_CHUNK);
    solo.n_out = 0;
    admit(&sc, &f, &solo, 0);
    while (step(&sc, &f) > 0) {}
    sched_free(&sc);
    int32_t want[MAXTOK];
    model_generate(r->prompt, r->n_prompt, r->max_gen, &r->sp, want);
    assert_int_equal(solo.n_out, r->max_gen);
    assert_memory_equal(solo.out, want, (size_t)r->max_gen * sizeof(int32_t));
    if (r->n_out != r->max_gen) fail_msg("sequence %d: %d tokens, want %d", r->id, r->n_out, r->max_gen);
    for (int g = 0; g < r->max_gen; g++)
        if (r->out[g] != want[g])
            fail_msg("sequence %d (prompt %d tokens): token %d is %d batched, %d alone", r->id, r->n_prompt, g, r->out[g],
                     want[g]);
    assert_int_equal(r->finish, SCHED_LENGTH);
}

/* ---- grammars: the fake's tokens as text ---- */

#define EOG (V - 1)
static char g_piece[V][4];
static const grammar_vocab_t *g_gv;

/* tokens 0-9 digits, 10-35 letters, then punctuation and two-character pieces, the last EOG */
static const grammar_vocab_t *test_vocab(void) {
    if (g_gv) return g_gv;
    const char *alpha = "0123456789abc[], \"";
    const char *pieces[V];
    int len[V];
    for (int t = 0; t < V; t++) {
        if (t < 10) g_piece[t][0] = (char)('0' + t);
        else if (t < 36) g_piece[t][0] = (char)('a' + t - 10);
        else if (t < 41) g_piece[t][0] = "[], \""[t - 36];
        else g_piece[t][0] = alpha[(t * 7) % 18], g_piece[t][1] = alpha[(t * 11 + 3) % 18];
        pieces[t] = t == EOG ? NULL : g_piece[t];
        len[t] = t == EOG ? 0 : (int)strlen(g_piece[t]);
    }
    int32_t eog = EOG;
    g_gv = grammar_vocab_new(V, pieces, len, &eog, 1);
    assert_non_null(g_gv);
    return g_gv;
}

static grammar_t *parse_gbnf(const char *text) {
    char err[256];
    grammar_t *g = grammar_parse(text, strlen(text), NULL, err, sizeof err);
    if (!g) fail_msg("grammar: %s", err);
    return g;
}

/* the model's generation under grammar g, as the scheduler must deliver it: each sample the first
 * allowed token from the model's pick on, the end at EOG (the callback stops) or where the
 * grammar is complete (SCHED_STOP), else max_gen (SCHED_LENGTH) */
static int model_generate_gram(const int32_t *prompt, int n, int max_gen, const sampler_params_t *sp,
                               const grammar_t *g, int32_t *out, int *finish) {
    const grammar_vocab_t *gv = test_vocab();
    grammar_state_t *gs = grammar_state_new(g);
    uint8_t mask[(V + 7) / 8];
    uint64_t h = HIST0;
    for (int i = 0; i < n; i++) h = hist_next(h, prompt[i]);
    int k = 0;
    *finish = SCHED_LENGTH;
    while (k < max_gen) {
        assert_true(grammar_state_mask(gs, gv, mask) > 0);
        int32_t t = model_sample(h, sp, n + k);
        while (!(mask[t >> 3] >> (t & 7) & 1)) t = (t + 1) % V;
        out[k++] = t;
        h = hist_next(h, t);
        if (t == EOG) { *finish = SCHED_STOP; break; }
        assert_int_equal(grammar_state_accept_token(gs, gv, t), 0);
        if (grammar_state_done(gs)) { *finish = SCHED_STOP; break; }
    }
    grammar_state_destroy(&gs);
    return k;
}

static int on_token_gram(void *user, int id, int32_t token, float logprob, const sched_top_t *top, int finish) {
    on_token(user, id, token, logprob, top, finish);
    return !finish && token == EOG;
}

/* prompt scores as a sched_score_cb collects them */
typedef struct scorerun {
    seqrun_t r;
    double lp[MAXTOK];
    int n_calls, bad_order, bad_token, top_n[MAXTOK];
} scorerun_t;

static void on_score(void *user, int id, int pos, int32_t token, float logprob, const sched_top_t *top) {
    scorerun_t *c = user;
    assert_int_equal(id, c->r.id);
    if (pos != c->n_calls + 1) c->bad_order++;
    if (pos < 1 || pos >= c->r.n_prompt) { c->bad_order++; return; }
    if (token != c->r.prompt[pos]) c->bad_token++;
    c->lp[pos] = logprob;
    c->top_n[pos] = top ? top->n : 0;
    if (top) assert_int_equal(top->ids[0], token);
    c->n_calls++;
}

static int on_token_scored(void *user, int id, int32_t token, float logprob, const sched_top_t *top, int finish) {
    return on_token(&((scorerun_t *)user)->r, id, token, logprob, top, finish);
}

/* every prompt position 1..n-1 scored once, in order, with the model's own log p */
static void expect_scores(const scorerun_t *c) {
    assert_int_equal(c->bad_order, 0);
    assert_int_equal(c->bad_token, 0);
    assert_int_equal(c->n_calls, c->r.n_prompt - 1);
    uint64_t h = HIST0;
    for (int pos = 1; pos < c->r.n_prompt; pos++) {
        h = hist_next(h, c->r.prompt[pos - 1]);
        assert_true(fabs(c->lp[pos] - model_lp(h, c->r.prompt[pos])) < 1e-5);
    }
}

/* ---- tests ---- */

static void test_set_prefill_chunk(void **state) {
    (void)state;
    fake_t f;
    sched_t sc;
    fake_init(&f, 1);
    char err[256];
    assert_int_equal(sched_init(&sc, &f.base, &emb, 2, 32, 16, err, sizeof err), 0);
    assert_int_equal(sc.prefill_chunk, SCHED_PREFILL_CHUNK);
    assert_true(SCHED_PREFILL_CHUNK > 0);
    assert_int_equal(sched_set_prefill_chunk(&sc, -1), TERN_EINVAL);
    assert_int_equal(sc.prefill_chunk, SCHED_PREFILL_CHUNK);
    assert_int_equal(sched_set_prefill_chunk(&sc, 0), 0);
    assert_int_equal(sc.prefill_chunk, 0);
    sched_free(&sc);
}

/* one sequence alone prefills at n_batch; prompts arriving while it decodes take at most chunk
 * tokens per step, oldest first (a late one admitted into the first sequence's freed slot 0
 * waits for older ones in higher slots), every decoder in every step; all match solo runs */
static void run_arrivals(int n_batch, int chunk) {
    fake_t f;
    sched_t sc;
    seqrun_t r[7];
    const int plen[7] = {50, 7, 40, 23, 64, 3, 9};
    fake_init(&f, 1);
    sched_open(&sc, &f, 6, n_batch, chunk);
    f.check = 1;
    for (int i = 0; i < 7; i++) seq_make(&r[i], plen[i], i ? 12 + 3 * i : 6, i, i % 2 ? 0.8f : 0.0f);
    admit(&sc, &f, &r[0], 0);
    int steps_alone = 0;
    while (r[0].n_out < 3) {
        step(&sc, &f);
        steps_alone++;
    }
    /* prefill alone at full batch: ceil(50 / n_batch) prompt steps, then 2 decode steps */
    assert_int_equal(steps_alone, (plen[0] + n_batch - 1) / n_batch + 2);
    for (int i = 1; i < 6; i++) admit(&sc, &f, &r[i], i);
    int guard = 0, late = 0;
    while (step(&sc, &f) > 0 || !late) {
        assert_true(++guard < 10000);
        if (r[0].finish && !late) {
            if (chunk > 0 && chunk < n_batch - 1) assert_true(f.pending > 0);   /* older prompts still wait */
            admit(&sc, &f, &r[6], 6);
            assert_int_equal(r[6].slot, r[0].slot);
            late = 1;
        }
    }
    if (chunk > 0 && chunk < n_batch - 1) {
        assert_true(f.n_steps_live_prompt > 0);
        assert_true(f.max_prompt_step_live <= chunk);
    }
    assert_int_equal(f.pending, 0);
    for (int i = 0; i < 7; i++) expect_solo(&r[i]);
    /* oldest first: prompts finish in admission order */
    for (int i = 2; i < 7; i++)
        if (r[i].first_step < r[i - 1].first_step)
            fail_msg("prompt %d got its first token at step %d, before prompt %d (step %d)", i, r[i].first_step, i - 1,
                     r[i - 1].first_step);
    sched_free(&sc);
}

static void test_chunk_cap(void **state) {
    (void)state;
    run_arrivals(32, 8);
    run_arrivals(64, 16);
    run_arrivals(16, 5);
}

static void test_chunk_off(void **state) {   /* 0: prompts fill what decode leaves of n_batch */
    (void)state;
    run_arrivals(32, 0);
    run_arrivals(20, 64);
}

/* decode tokens fill n_batch: a waiting prompt still advances (one token a step) and gets its
 * tokens while the decoders run; decoders beyond n_batch take turns */
static void test_no_starvation(void **state) {
    (void)state;
    fake_t f;
    sched_t sc;
    seqrun_t r[7];
    fake_init(&f, 1);
    sched_open(&sc, &f, 7, 4, 8);
    f.check = 1;
    for (int i = 0; i < 6; i++) seq_make(&r[i], 2 + i, 80, 10 + i, 0.0f);
    seq_make(&r[6], 30, 5, 99, 0.5f);
    for (int i = 0; i < 6; i++) admit(&sc, &f, &r[i], i);
    while (f.n_live < 6) step(&sc, &f);
    admit(&sc, &f, &r[6], 6);
    int guard = 0;
    while (step(&sc, &f) > 0) {
        assert_true(++guard < 10000);
        for (int i = 0; i < 6; i++)   /* 6 decoders, 4 a step: none is left out twice in a row */
            if (!r[i].finish && sc.steps_run - r[i].last_step > 2)
                fail_msg("decoder %d: no token for %d steps (a slot starves)", i, sc.steps_run - r[i].last_step);
    }
    for (int i = 0; i < 6; i++)
        if (r[6].finish_step >= r[i].finish_step)
            fail_msg("late prompt finished at step %d, after decoder %d (step %d): starved", r[6].finish_step, i,
                     r[i].finish_step);
    for (int i = 0; i < 7; i++) expect_solo(&r[i]);
    sched_free(&sc);
}

/* several steps in flight (a pipeline of stages): same outputs, cap still honoured */
static void test_pipelined(void **state) {
    (void)state;
    for (int inflight = 2; inflight <= 4; inflight++) {
        fake_t f;
        sched_t sc;
        seqrun_t r[8];
        fake_init(&f, inflight);
        sched_open(&sc, &f, 8, 24, 6);
        for (int i = 0; i < 8; i++) seq_make(&r[i], 5 + 9 * i, 20, 40 + i, i % 3 ? 0.0f : 0.9f);
        for (int i = 0; i < 3; i++) admit(&sc, &f, &r[i], i);
        while (f.n_live < 2) step(&sc, &f);
        for (int i = 3; i < 8; i++) admit(&sc, &f, &r[i], i);
        int guard = 0;
        while (step(&sc, &f) > 0) assert_true(++guard < 10000);
        assert_true(f.n_steps_live_prompt > 0);
        if (f.max_prompt_step_live > 6) fail_msg("%d in flight: %d prompt tokens in a step while decoding (cap 6)", inflight,
                                                 f.max_prompt_step_live);
        for (int i = 0; i < 8; i++) expect_solo(&r[i]);
        sched_free(&sc);
    }
}

/* the pipeline fails mid-prefill and mid-decode; after each recovery every sequence is replayed
 * as one prompt of its known tokens (greedy, sampled, penalised: the draws are keyed on the
 * position) and the client sees each token once, the same as without the failures */
static void test_recovery_replay(void **state) {
    (void)state;
    for (int inflight = 1; inflight <= 2; inflight++) {
        fake_t f;
        sched_t sc;
        seqrun_t r[5];
        fake_init(&f, inflight);
        sched_open(&sc, &f, 5, 16, 4);
        f.fail_at[0] = 3;
        f.fail_at[1] = 25;
        f.fail_at[2] = 40;
        f.n_fail = 3;
        for (int i = 0; i < 5; i++) seq_make(&r[i], 6 + 11 * i, 24, 70 + i, i % 2 ? 0.7f : 0.0f);
        r[3].sp.repeat_penalty = 1.2f;   /* greedy, but history-dependent */
        admit(&sc, &f, &r[0], 0);
        admit(&sc, &f, &r[1], 1);
        while (r[0].n_out < 2) step(&sc, &f);
        for (int i = 2; i < 5; i++) admit(&sc, &f, &r[i], i);
        int guard = 0;
        while (step(&sc, &f) > 0) assert_true(++guard < 10000);
        assert_int_equal(sc.n_recoveries, 3);
        assert_int_equal(f.n_recover, 3);
        for (int i = 0; i < 5; i++) expect_solo(&r[i]);
        sched_free(&sc);
    }
}

/* Grammars (sched_set_grammar): sequences under two grammars (greedy, sampled, one whose
 * sampling reads its history) beside a free one, with steps in flight and pipeline failures
 * mid-way (replays walk the grammar again: the replayed samples need their own masks): each gets
 * exactly the model's constrained generation and end (EOG where the grammar may end, complete
 * grammar, or length); the free one stays free; a grammar no token can begin is refused and ends
 * its sequence. */
static void test_grammars(void **state) {
    (void)state;
    const char *t1 = "root ::= \"[\" item (\",\" item)* \"]\"\nitem ::= [a-c] [0-9]*\n";
    const char *t2 = "root ::= [0-9]+ | \"ab\" [ ]? \"c\"\n";
    grammar_t *g1 = parse_gbnf(t1), *g2 = parse_gbnf(t2);
    const grammar_t *gs_of[5] = {g1, g1, g2, g1, NULL};
    const char *text_of[5] = {t1, t1, t2, t1, NULL};
    for (int inflight = 1; inflight <= 2; inflight++) {
        fake_t f;
        sched_t sc;
        seqrun_t r[5];
        fake_init(&f, inflight);
        sched_open(&sc, &f, 5, 16, 4);
        f.fail_at[0] = 4;
        f.fail_at[1] = 21;
        f.n_fail = 2;
        for (int i = 0; i < 5; i++) seq_make(&r[i], 5 + 7 * i, 30, 90 + i, i == 1 || i == 2 ? 0.8f : 0.0f);
        r[3].sp.repeat_penalty = 1.2f;
        for (int i = 0; i < 5; i++) {
            r[i].f = &f;
            r[i].sc = &sc;
            r[i].id = sched_add(&sc, r[i].prompt, r[i].n_prompt, r[i].max_gen, &r[i].sp, on_token_gram, &r[i]);
            assert_true(r[i].id >= 0);
            r[i].slot = f.last_started;
            char err[256];
            grammar_t *gi = text_of[i] ? parse_gbnf(text_of[i]) : NULL;   /* the scheduler takes it */
            if (gi) assert_int_equal(sched_set_grammar(&sc, r[i].id, &gi, test_vocab(), err, sizeof err), 0);
            assert_null(gi);
        }
        int guard = 0;
        while (sched_step(&sc) > 0) assert_true(++guard < 10000);
        if (f.bad) fail_msg("fake pipeline: %s", f.why);
        assert_int_equal(sc.n_recoveries, 2);
        assert_true(f.n_masked > 0);
        for (int i = 0; i < 5; i++) {
            int32_t want[MAXTOK];
            int fin, n;
            if (gs_of[i]) n = model_generate_gram(r[i].prompt, r[i].n_prompt, r[i].max_gen, &r[i].sp, gs_of[i], want, &fin);
            else n = model_generate(r[i].prompt, r[i].n_prompt, r[i].max_gen, &r[i].sp, want), fin = SCHED_LENGTH;
            if (r[i].n_out != n || memcmp(r[i].out, want, (size_t)n * sizeof(int32_t)) || r[i].finish != fin)
                fail_msg("sequence %d (inflight %d): %d tokens, finish %d; want %d, finish %d", i, inflight, r[i].n_out,
                         r[i].finish, n, fin);
        }
        /* a grammar that no token begins: refused, and the sequence is over */
        seqrun_t z;
        seq_make(&z, 3, 4, 7, 0.0f);
        z.f = &f, z.sc = &sc;
        z.id = sched_add(&sc, z.prompt, z.n_prompt, z.max_gen, &z.sp, on_token_gram, &z);
        assert_true(z.id >= 0);
        grammar_t *gz = parse_gbnf("root ::= \"~\"\n");
        char err[256];
        assert_true(sched_set_grammar(&sc, z.id, &gz, test_vocab(), err, sizeof err) < 0);
        assert_null(gz);
        assert_non_null(strstr(err, "grammar"));
        assert_int_equal(z.finish, SCHED_ERROR);
        assert_int_equal(sched_active(&sc), 0);
        sched_free(&sc);
    }
    grammar_destroy(&g1);
    grammar_destroy(&g2);
}

/* the model's generation under a lazy grammar g (sched_grammar_trigger), written plainly: free
 * samples until the whole generated text holds trigger, then g takes the text from the
 * trigger's first byte on (refused: SCHED_ERROR) and each later sample is the first allowed token
 * from the model's pick on; ends as model_generate_gram. *fired: the trigger came. */
static int model_generate_lazy(const int32_t *prompt, int n, int max_gen, const sampler_params_t *sp,
                               const grammar_t *g, const char *trigger, int32_t ttok, int32_t *out, int *finish,
                               int *fired) {
    const grammar_vocab_t *gv = test_vocab();
    grammar_state_t *gs = NULL;
    uint8_t mask[(V + 7) / 8];
    char text[4 * MAXTOK + 1] = "";
    size_t tn = 0;
    uint64_t h = HIST0;
    for (int i = 0; i < n; i++) h = hist_next(h, prompt[i]);
    int k = 0;
    *finish = SCHED_LENGTH;
    *fired = 0;
    while (k < max_gen) {
        int32_t t = model_sample(h, sp, n + k);
        if (gs) {
            assert_true(grammar_state_mask(gs, gv, mask) > 0);
            while (!(mask[t >> 3] >> (t & 7) & 1)) t = (t + 1) % V;
        }
        out[k++] = t;
        h = hist_next(h, t);
        if (t == EOG) { *finish = SCHED_STOP; break; }
        if (gs) {
            assert_int_equal(grammar_state_accept_token(gs, gv, t), 0);
        } else if (t == ttok) {   /* the trigger token: the grammar takes the trigger's text instead */
            *fired = 1;
            gs = grammar_state_new(g);
            if (grammar_state_accept_bytes(gs, trigger, strlen(trigger)) < 0) { *finish = SCHED_ERROR; break; }
        } else {
            memcpy(text + tn, g_piece[t], strlen(g_piece[t]));
            tn += strlen(g_piece[t]);
            text[tn] = 0;
            const char *at = strstr(text, trigger);
            if (!at) continue;
            *fired = 1;
            gs = grammar_state_new(g);
            if (grammar_state_accept_bytes(gs, at, strlen(at)) < 0) { *finish = SCHED_ERROR; break; }
        }
        if (grammar_state_done(gs)) { *finish = SCHED_STOP; break; }
    }
    grammar_state_destroy(&gs);
    return k;
}

/* Lazy grammars (sched_grammar_trigger, llama.cpp's triggers): sequences whose text is free until
 * a trigger (one byte, and two bytes that may straddle tokens) and held to the grammar from its
 * first byte on, beside a free sequence, with pipeline failures mid-way
 * (replays wait for the trigger again): each gets exactly model_generate_lazy's tokens and end —
 * some never see the trigger, some finish the grammar, some are refused by it right at the
 * trigger. Bad triggers are refused. */
static void test_lazy_grammars(void **state) {
    (void)state;
    const char *gt = "root ::= \"b\" [0-9a-c ]* \"]\"\n";
    const char *trig[3] = {"b", "1b", "a"};
    grammar_t *g = parse_gbnf(gt);
    int fired = 0, done = 0, refused = 0;
    for (int inflight = 1; inflight <= 2; inflight++)
        for (int round = 0; round < 4; round++) {
            enum { NS = 7 };
            fake_t f;
            sched_t sc;
            seqrun_t r[NS];
            fake_init(&f, inflight);
            sched_open(&sc, &f, NS, 16, 4);
            f.fail_at[0] = 5 + round;
            f.n_fail = 1;
            for (int i = 0; i < NS; i++) {
                seq_make(&r[i], 4 + 3 * i, 40, 300 + 17 * round + i, i % 2 ? 0.9f : 0.0f);
                r[i].f = &f;
                r[i].sc = &sc;
                r[i].id = sched_add(&sc, r[i].prompt, r[i].n_prompt, r[i].max_gen, &r[i].sp, on_token_gram, &r[i]);
                assert_true(r[i].id >= 0);
                r[i].slot = f.last_started;
                if (i == NS - 1) continue;   /* free */
                char err[256];
                grammar_t *gi = parse_gbnf(gt);
                assert_int_equal(sched_set_grammar(&sc, r[i].id, &gi, test_vocab(), err, sizeof err), 0);
                if (i < 3 * 2) assert_int_equal(sched_grammar_trigger(&sc, r[i].id, trig[i % 3]), 0);
            }
            int guard = 0;
            while (sched_step(&sc) > 0) assert_true(++guard < 10000);
            if (f.bad) fail_msg("fake pipeline: %s", f.why);
            for (int i = 0; i < NS; i++) {
                int32_t want[MAXTOK];
                int fin, n, fi = 0;
                /* the free one: a trigger no piece holds (free samples, the end at EOG) */
                n = model_generate_lazy(r[i].prompt, r[i].n_prompt, r[i].max_gen, &r[i].sp, g, i < 6 ? trig[i % 3] : "~",
                                        -1, want, &fin, &fi);
                if (r[i].n_out != n || memcmp(r[i].out, want, (size_t)n * sizeof(int32_t)) || r[i].finish != fin)
                    fail_msg("round %d sequence %d (inflight %d): %d tokens, finish %d; want %d, finish %d", round, i,
                             inflight, r[i].n_out, r[i].finish, n, fin);
                fired += fi;
                done += fi && fin == SCHED_STOP;
                refused += fin == SCHED_ERROR;
            }
            /* a trigger needs a grammar; empty or too long ones are refused */
            seqrun_t z;
            seq_make(&z, 3, 4, 7, 0.0f);
            z.f = &f, z.sc = &sc;
            z.id = sched_add(&sc, z.prompt, z.n_prompt, z.max_gen, &z.sp, on_token_gram, &z);
            assert_int_equal(sched_grammar_trigger(&sc, z.id, "b"), TERN_EINVAL);
            char err[256], big[SCHED_TRIGGER_MAX + 2];
            memset(big, 'b', sizeof big - 1);
            big[sizeof big - 1] = 0;
            grammar_t *gz = parse_gbnf(gt);
            assert_int_equal(sched_set_grammar(&sc, z.id, &gz, test_vocab(), err, sizeof err), 0);
            assert_int_equal(sched_grammar_trigger(&sc, z.id, ""), TERN_EINVAL);
            assert_int_equal(sched_grammar_trigger(&sc, z.id, big), TERN_EINVAL);
            sched_cancel(&sc, z.id);
            sched_free(&sc);
        }
    printf("lazy grammars: %d triggered, %d of them finished the grammar, %d refused at the trigger\n", fired, done,
           refused);
    assert_true(fired > 0 && done > 0);
    grammar_destroy(&g);
}

/* A trigger token (sched_grammar_trigger_token, for a control-token marker): when it is sampled,
 * the grammar takes the trigger's text and holds the rest, as model_generate_lazy does (the text
 * trigger still fires where the text spells it). With pipeline failures mid-way (replays
 * wait for the token again). A token trigger needs a text one and a token of the vocabulary. */
static void test_lazy_grammar_token(void **state) {
    (void)state;
    const char *gt = "root ::= \"c0c0c\" [0-9a-c ]* \"]\"\n";
    grammar_t *g = parse_gbnf(gt);
    int fired = 0, done = 0;
    for (int round = 0; round < 6; round++) {
        enum { NS = 6 };
        fake_t f;
        sched_t sc;
        seqrun_t r[NS];
        fake_init(&f, 1 + round % 2);
        sched_open(&sc, &f, NS, 16, 4);
        f.fail_at[0] = 4 + round;
        f.n_fail = 1;
        for (int i = 0; i < NS; i++) {
            seq_make(&r[i], 4 + 3 * i, 40, 900 + 13 * round + i, i % 2 ? 0.9f : 0.0f);
            r[i].f = &f;
            r[i].sc = &sc;
            r[i].id = sched_add(&sc, r[i].prompt, r[i].n_prompt, r[i].max_gen, &r[i].sp, on_token_gram, &r[i]);
            assert_true(r[i].id >= 0);
            r[i].slot = f.last_started;
            char err[256];
            grammar_t *gi = parse_gbnf(gt);
            assert_int_equal(sched_set_grammar(&sc, r[i].id, &gi, test_vocab(), err, sizeof err), 0);
            assert_int_equal(sched_grammar_trigger(&sc, r[i].id, "c0c0c"), 0);
            if (i < NS - 1) assert_int_equal(sched_grammar_trigger_token(&sc, r[i].id, 10 + 7 * i + round), 0);
        }
        int guard = 0;
        while (sched_step(&sc) > 0) assert_true(++guard < 10000);
        if (f.bad) fail_msg("fake pipeline: %s", f.why);
        for (int i = 0; i < NS; i++) {
            int32_t want[MAXTOK];
            int fin, n, fi = 0;
            n = model_generate_lazy(r[i].prompt, r[i].n_prompt, r[i].max_gen, &r[i].sp, g, "c0c0c",
                                    i < NS - 1 ? 10 + 7 * i + round : -1, want, &fin, &fi);
            if (r[i].n_out != n || memcmp(r[i].out, want, (size_t)n * sizeof(int32_t)) || r[i].finish != fin)
                fail_msg("round %d sequence %d: %d tokens, finish %d; want %d, finish %d", round, i, r[i].n_out,
                         r[i].finish, n, fin);
            fired += fi;
            done += fi && fin == SCHED_STOP;
        }
        /* refused: no text trigger yet, a token outside the vocabulary */
        seqrun_t z;
        seq_make(&z, 3, 4, 7, 0.0f);
        z.f = &f, z.sc = &sc;
        z.id = sched_add(&sc, z.prompt, z.n_prompt, z.max_gen, &z.sp, on_token_gram, &z);
        char err[256];
        grammar_t *gz = parse_gbnf(gt);
        assert_int_equal(sched_set_grammar(&sc, z.id, &gz, test_vocab(), err, sizeof err), 0);
        assert_int_equal(sched_grammar_trigger_token(&sc, z.id, 5), TERN_EINVAL);
        assert_int_equal(sched_grammar_trigger(&sc, z.id, "c0c0c"), 0);
        assert_int_equal(sched_grammar_trigger_token(&sc, z.id, V), TERN_EINVAL);
        assert_int_equal(sched_grammar_trigger_token(&sc, z.id, -1), TERN_EINVAL);
        sched_cancel(&sc, z.id);
        sched_free(&sc);
    }
    printf("lazy grammar, trigger token: %d triggered, %d of them finished the grammar\n", fired, done);
    assert_true(fired > 0 && done > 0);
    grammar_destroy(&g);
}

/* ---- forced tokens (sched_force) ---- */

typedef struct forcerun {
    seqrun_t r;              /* first: the callbacks see a seqrun_t * */
    int at, n;               /* after `at` tokens, the next n are forced to toks */
    int32_t toks[SCHED_FORCE_MAX];
    int rc;                  /* sched_force's answer */
    int gram;                /* under a grammar: EOG ends it */
} forcerun_t;

static int on_token_force(void *user, int id, int32_t token, float logprob, const sched_top_t *top, int finish) {
    forcerun_t *x = user;
    int stop = (x->gram ? on_token_gram : on_token)(user, id, token, logprob, top, finish);
    if (!finish && x->r.n_out == x->at) x->rc = sched_force(x->r.sc, id, x->toks, x->n);
    return stop;
}

/* Forced tokens: a sequence's tokens are its own generation up to the forcing, then the forced
 * ones, then its own generation after them (the model sees them as its history) — greedy and
 * sampled, several at once, pipelined, with lookup drafts on (none while forcing), and with a
 * pipeline failure mid-way (the replay keeps what is left to force). Under a grammar, a forced
 * token it refuses drops the forcing: the text is the grammar's. Bad calls are refused. */
static void test_force(void **state) {
    (void)state;
    for (int round = 0; round < 4; round++) {
        enum { NS = 5 };
        fake_t f;
        sched_t sc;
        forcerun_t x[NS];
        fake_init(&f, 1 + round % 2);
        f.rewind_ok = 1;
        sched_open(&sc, &f, NS, 32, 8);
        assert_int_equal(sched_set_lookup(&sc, 3), 0);
        if (round >= 2) { f.fail_at[0] = 6 + round; f.n_fail = 1; }
        for (int i = 0; i < NS; i++) {
            memset(&x[i], 0, sizeof x[i]);
            seq_make(&x[i].r, 3 + 2 * i, 30, 300 + 11 * round + i, i % 2 ? 0.8f : 0.0f);
            x[i].at = 2 + (i + round) % 5;
            x[i].n = 1 + (i * 3 + round) % SCHED_FORCE_MAX;
            for (int k = 0; k < x[i].n; k++) x[i].toks[k] = (int32_t)((10 + 7 * k + i) % (V - 1));
            x[i].r.f = &f;
            x[i].r.sc = &sc;
            x[i].r.id = sched_add(&sc, x[i].r.prompt, x[i].r.n_prompt, x[i].r.max_gen, &x[i].r.sp, on_token_force, &x[i]);
            assert_true(x[i].r.id >= 0);
            if (i == NS - 1) {   /* digits only: the forced letters are refused */
                char err[256];
                x[i].gram = 1;
                grammar_t *g = parse_gbnf("root ::= [0-9]+ \"]\"\n");
                assert_int_equal(sched_set_grammar(&sc, x[i].r.id, &g, test_vocab(), err, sizeof err), 0);
            }
        }
        int guard = 0;
        while (sched_step(&sc) > 0) assert_true(++guard < 10000);
        if (f.bad) fail_msg("fake pipeline: %s", f.why);
        for (int i = 0; i < NS; i++) {
            int32_t want[MAXTOK];
            int n = x[i].r.max_gen, fin = SCHED_LENGTH;
            assert_int_equal(x[i].rc, 0);
            if (i == NS - 1) {
                grammar_t *g = parse_gbnf("root ::= [0-9]+ \"]\"\n");
                n = model_generate_gram(x[i].r.prompt, x[i].r.n_prompt, n, &x[i].r.sp, g, want, &fin);
                grammar_destroy(&g);
            } else {   /* the model's text with the forced tokens in its history */
                uint64_t h = HIST0;
                for (int k = 0; k < x[i].r.n_prompt; k++) h = hist_next(h, x[i].r.prompt[k]);
                for (int g = 0; g < n; g++) {
                    int fk = g - x[i].at;
                    want[g] = fk >= 0 && fk < x[i].n ? x[i].toks[fk] : model_sample(h, &x[i].r.sp, x[i].r.n_prompt + g);
                    h = hist_next(h, want[g]);
                }
            }
            if (x[i].r.n_out != n || memcmp(x[i].r.out, want, (size_t)n * sizeof(int32_t)) || x[i].r.finish != fin)
                fail_msg("round %d sequence %d: %d tokens, finish %d; want %d, finish %d", round, i, x[i].r.n_out,
                         x[i].r.finish, n, fin);
        }
        /* refused: no such sequence, a bad count or token */
        int32_t t[SCHED_FORCE_MAX + 1] = {0};
        seqrun_t z;
        seq_make(&z, 3, 4, 7, 0.0f);
        admit(&sc, &f, &z, 0);
        assert_int_equal(sched_force(&sc, z.id + 100, t, 1), TERN_EINVAL);
        assert_int_equal(sched_force(&sc, z.id, t, 0), TERN_EINVAL);
        assert_int_equal(sched_force(&sc, z.id, t, SCHED_FORCE_MAX + 1), TERN_EINVAL);
        t[0] = V;
        assert_int_equal(sched_force(&sc, z.id, t, 1), TERN_EINVAL);
        t[0] = -1;
        assert_int_equal(sched_force(&sc, z.id, t, 1), TERN_EINVAL);
        sched_cancel(&sc, z.id);
        sched_free(&sc);
    }
}

/* a drafter for test_lookup: the model's own continuation of toks (greedy, or the slot's sampling
 * params when sp[slot] is set: then it is the sampled text), the wrong token from the
 * (calls % 3 + 1)-th on every other call */
typedef struct oracle {
    int calls;
    const sampler_params_t *sp[SLOTS];
} oracle_t;
static int oracle_draft(void *user, int slot, const int32_t *toks, int n, int k, int32_t *out) {
    oracle_t *o = user;
    sampler_params_t greedy;
    sampler_params_default(&greedy);
    greedy.temp = 0;
    const sampler_params_t *sp = o->sp[slot] ? o->sp[slot] : &greedy;
    uint64_t h = HIST0;
    for (int i = 0; i < n; i++) h = hist_next(h, toks[i]);
    int bad_from = o->calls++ % 2 ? o->calls % 3 + 1 : k;
    for (int i = 0; i < k; i++) {
        out[i] = model_sample(h, sp, n + i);
        if (i >= bad_from) out[i] = (out[i] + 1) % V;
        h = hist_next(h, out[i]);
    }
    return k;
}

/* runs r[0..n) (admitted) to the end, then checks each against plain decoding: a fresh scheduler
 * without drafts, and the model's own tokens for its seed */
static void run_expect_solo(sched_t *sc, fake_t *f, seqrun_t *r, int n) {
    int guard = 0;
    while (step(sc, f) > 0) assert_true(++guard < 10000);
    for (int i = 0; i < n; i++) expect_solo(&r[i]);
}

/* Prompt lookup decoding (sched_set_lookup): sequences on a model whose text cycles get drafts,
 * most taken, some refused; every sequence's tokens equal plain decoding's with the same seed —
 * greedy, sampled, with a repeat penalty and with logprobs, 1 and 2 steps in flight, a pipeline
 * failure mid-way (replays send no drafts); drafts never pass max_gen. The same with a drafter
 * (sched_set_drafter) that is right, then wrong, by turns. */
static void test_lookup(void **state) {
    (void)state;
    g_markov = 1;
    for (int inflight = 1; inflight <= 2; inflight++)
        for (int k = 1; k <= SCHED_LOOKUP_MAX; k += 7) {
            fake_t f;
            sched_t sc;
            seqrun_t r[4];
            fake_init(&f, inflight);
            f.rewind_ok = 1;
            sched_open(&sc, &f, 4, 32, 8);
            assert_int_equal(sched_set_lookup(&sc, k), 0);
            f.fail_at[0] = 9;
            f.n_fail = 1;
            for (int i = 0; i < 4; i++) seq_make(&r[i], 4 + 5 * i, 40 + 7 * i, 30 + i, i == 2 ? 0.7f : 0.0f);
            r[3].sp.repeat_penalty = 1.3f;
            r[1].sp.logprobs = 1, r[1].sp.top_logprobs = 2;
            for (int i = 0; i < 4; i++) admit(&sc, &f, &r[i], i);
            run_expect_solo(&sc, &f, r, 4);
            assert_true(sc.n_drafted > 0 && sc.n_draft_ok > 0 && sc.n_draft_ok < sc.n_drafted);
            assert_int_equal(sc.n_recoveries, 1);
            sched_free(&sc);
        }
    g_markov = 0;
    /* a drafter (sched_set_drafter): right, then wrong after a few, by turns; the hash model's
     * text never repeats, so every draft taken is the drafter's */
    for (int inflight = 1; inflight <= 2; inflight++) {
        fake_t f;
        sched_t sc;
        seqrun_t r[3];
        oracle_t o = {0};
        fake_init(&f, inflight);
        f.rewind_ok = 1;
        sched_open(&sc, &f, 3, 32, 8);
        assert_int_equal(sched_set_lookup(&sc, 5), 0);
        sched_set_drafter(&sc, oracle_draft, &o);
        for (int i = 0; i < 3; i++) seq_make(&r[i], 3 + 4 * i, 30, 50 + i, 0.0f);
        for (int i = 0; i < 3; i++) admit(&sc, &f, &r[i], i);
        run_expect_solo(&sc, &f, r, 3);
        assert_true(o.calls > 0 && sc.n_draft_ok > 0 && sc.n_draft_ok < sc.n_drafted);
        sched_free(&sc);
    }
    sched_t sc;
    fake_t f;
    fake_init(&f, 1);
    sched_open(&sc, &f, 1, 16, 8);
    assert_int_equal(sched_set_lookup(&sc, SCHED_LOOKUP_MAX + 1), TERN_EINVAL);
    assert_int_equal(sched_set_lookup(&sc, -1), TERN_EINVAL);
    sched_free(&sc);
}

/* Drafts for sampled sequences only (temperature 0.8 with top-p, a repeat penalty, frequency and
 * presence penalties, logprobs): with lookup (k = 1, 4, 16) and with a drafter proposing the
 * sampled text (wrong by turns), 1 and 2 steps in flight, and pipeline failures mid-generation,
 * each sequence's tokens are exactly plain decoding's with the same seed — drafts are sent, some
 * taken, some refused. A scheduler that kept drafts from sampled sequences at other positions or
 * past a refusal would part from the spec at once (the stage's side: test_forward's
 * test_drafts_sampled). */
static void test_lookup_sampled(void **state) {
    (void)state;
    for (int use_drafter = 0; use_drafter <= 1; use_drafter++)
        for (int inflight = 1; inflight <= 2; inflight++)
            for (int k = 1; k <= SCHED_LOOKUP_MAX; k = k * 4) {
                g_markov = !use_drafter;
                fake_t f;
                sched_t sc;
                seqrun_t r[4];
                oracle_t o = {0};
                fake_init(&f, inflight);
                f.rewind_ok = 1;
                sched_open(&sc, &f, 4, 32, 8);
                assert_int_equal(sched_set_lookup(&sc, k), 0);
                if (use_drafter) sched_set_drafter(&sc, oracle_draft, &o);
                f.fail_at[0] = 8, f.fail_at[1] = 15;   /* after the prompts (two steps at most), before the end (19+) */
                f.n_fail = 2;
                for (int i = 0; i < 4; i++) {
                    seq_make(&r[i], 4 + 5 * i, 45 + 6 * i, 60 + i, 0.8f);
                    r[i].sp.top_k = 40, r[i].sp.top_p = 0.9f;
                }
                r[1].sp.repeat_penalty = 1.2f, r[1].sp.repeat_last_n = 16;
                r[2].sp.freq_penalty = 0.3f, r[2].sp.presence_penalty = 0.2f;
                r[3].sp.logprobs = 1, r[3].sp.top_logprobs = 3, r[3].sp.temp = 1.1f;
                for (int i = 0; i < 4; i++) {
                    admit(&sc, &f, &r[i], i);
                    o.sp[r[i].slot] = &r[i].sp;
                }
                run_expect_solo(&sc, &f, r, 4);
                if (!(sc.n_drafted > 0 && sc.n_draft_ok > 0 && sc.n_draft_ok < sc.n_drafted))
                    fail_msg("drafter %d, %d in flight, k %d: %ld of %ld drafts taken", use_drafter, inflight, k,
                             sc.n_draft_ok, sc.n_drafted);
                assert_int_equal(sc.n_recoveries, 2);
                sched_free(&sc);
            }
    g_markov = 0;
}

/* Mirostat's mu moves with every sample, a refused draft's too: its sequences get no drafts (from
 * lookup or a drafter), the others beside them still do, and every sequence's tokens are plain
 * decoding's */
static void test_lookup_mirostat(void **state) {
    (void)state;
    for (int use_drafter = 0; use_drafter <= 1; use_drafter++) {
        g_markov = !use_drafter;
        fake_t f;
        sched_t sc;
        seqrun_t r[4];
        oracle_t o = {0};
        fake_init(&f, 1);
        f.rewind_ok = 1;
        sched_open(&sc, &f, 4, 32, 8);
        assert_int_equal(sched_set_lookup(&sc, 4), 0);
        if (use_drafter) sched_set_drafter(&sc, oracle_draft, &o);
        for (int i = 0; i < 4; i++) {
            seq_make(&r[i], 4 + 5 * i, 45 + 6 * i, 60 + i, 0.8f);
            r[i].sp.mirostat = 2;
        }
        for (int i = 0; i < 4; i++) {
            admit(&sc, &f, &r[i], i);
            o.sp[r[i].slot] = &r[i].sp;
        }
        run_expect_solo(&sc, &f, r, 4);
        if (sc.n_drafted != 0) fail_msg("drafter %d: %ld drafts for mirostat sequences", use_drafter, sc.n_drafted);
        sched_free(&sc);
    }
    g_markov = 0;
}

/* Prompt scoring (echo / prompt logprobs): a scored prompt that generates nothing (max_gen 0)
 * and one that generates, beside ordinary sequences, in chunks, with steps in flight and a
 * pipeline failure mid-way: each prompt position is scored once, in order, with the right
 * token and log p; alternatives pass through when asked; max_gen 0 ends with no token; the
 * other sequences still equal their solo runs; sched_score_prompt after the start is refused. */
static void test_score_prompt(void **state) {
    (void)state;
    for (int inflight = 1; inflight <= 3; inflight++) {
        fake_t f;
        sched_t sc;
        seqrun_t r[2];
        scorerun_t c[2];
        fake_init(&f, inflight);
        sched_open(&sc, &f, 4, 12, 5);
        if (inflight == 2) f.fail_at[0] = 4, f.n_fail = 1;
        seq_make(&r[0], 9, 15, 3, 0.0f);
        seq_make(&r[1], 7, 12, 4, 0.8f);
        memset(c, 0, sizeof c);
        seq_make(&c[0].r, 40, 0, 5, 0.0f);
        seq_make(&c[1].r, 23, 6, 6, 0.0f);
        c[1].r.sp.logprobs = 1, c[1].r.sp.top_logprobs = 3;
        admit(&sc, &f, &r[0], 0);
        while (r[0].n_out < 1) step(&sc, &f);
        for (int k = 0; k < 2; k++) {
            c[k].r.f = &f, c[k].r.sc = &sc;
            c[k].r.id = sched_add(&sc, c[k].r.prompt, c[k].r.n_prompt, c[k].r.max_gen, &c[k].r.sp, on_token_scored, &c[k]);
            assert_true(c[k].r.id >= 0);
            c[k].r.slot = f.last_started;
            assert_int_equal(sched_score_prompt(&sc, c[k].r.id, on_score), 0);
        }
        admit(&sc, &f, &r[1], 3);
        int guard = 0;
        while (step(&sc, &f) > 0) assert_true(++guard < 10000);
        for (int k = 0; k < 2; k++) expect_scores(&c[k]);
        assert_int_equal(c[0].r.n_out, 0);
        assert_int_equal(c[0].r.finish, SCHED_LENGTH);
        assert_int_equal(c[1].r.n_out, 6);
        for (int pos = 1; pos < c[1].r.n_prompt; pos++) assert_int_equal(c[1].top_n[pos], 2);   /* the fake's 2 */
        for (int pos = 1; pos < c[0].r.n_prompt; pos++) assert_int_equal(c[0].top_n[pos], 0);
        expect_solo(&r[0]);
        expect_solo(&r[1]);
        if (inflight == 2) assert_int_equal(sc.n_recoveries, 1);
        /* too late: the sequence has started */
        seqrun_t late;
        seq_make(&late, 30, 2, 9, 0.0f);
        admit(&sc, &f, &late, 9);
        step(&sc, &f);
        assert_int_equal(sched_score_prompt(&sc, late.id, on_score), TERN_EINVAL);
        assert_int_equal(sched_score_prompt(&sc, 12345, on_score), TERN_EINVAL);
        while (step(&sc, &f) > 0) {}
        sched_free(&sc);
    }
}

/* runs r alone to its end in sc (a scheduler that may hold caches from earlier sequences) */
static void run_one(sched_t *sc, fake_t *f, seqrun_t *r) {
    admit(sc, f, r, 0);
    int guard = 0;
    while (step(sc, f) > 0) assert_true(++guard < 10000);
}

/* a 3-slot scheduler with the prefix cache on over a fake whose slots keep their caches */
static void open_cached(sched_t *sc, fake_t *f) {
    fake_init(f, 1);
    f->cache_ok = 1;
    sched_open(sc, f, 3, 8, 4);
    sched_set_prefix_cache(sc, 1);
}

/* sched_add_at (llama-server's id_slot): the prompt runs in the named slot even when another
 * slot holds its beginning (which is copied over: the whole prompt but its last token; on the
 * repeat the slot's own cache holds as much) and gives the same tokens; a busy slot is TERN_ENOMEM (the server's queue waits),
 * no such slot TERN_EINVAL. */
static void test_add_at(void **state) {
    (void)state;
    fake_t f;
    sched_t sc;
    open_cached(&sc, &f);
    seqrun_t a, p[2];
    seq_make(&a, 20, 6, 1, 0.0f);
    run_one(&sc, &f, &a);
    int want = (a.slot + 1) % 3;
    for (int k = 0; k < 2; k++) {
        seqrun_t *r = &p[k];
        seq_make(r, 20, 6, 1, 0.0f);
        r->f = &f, r->sc = &sc;
        r->id = sched_add_at(&sc, want, 1, r->prompt, 20, 6, &r->sp, on_token, r);
        assert_true(r->id >= 0);
        r->slot = f.last_started;
        assert_int_equal(r->slot, want);
        assert_int_equal(sc.seqs[want].n_cached, 19);   /* first copied from a's slot, then its own */
        f.plen[r->slot] = 20;
        f.rank[r->slot] = 0;
        f.pending += 20;   /* as admit() counts a prompt */
        if (k == 0) {   /* while it runs: its slot is busy, the others free */
            assert_int_equal(sched_add_at(&sc, want, 1, r->prompt, 20, 6, &r->sp, on_token, r), TERN_ENOMEM);
        }
        while (step(&sc, &f) > 0) {}
        assert_memory_equal(r->out, a.out, 6 * sizeof(int32_t));
        expect_solo(r);
    }
    assert_int_equal(sched_add_at(&sc, 3, 1, a.prompt, 20, 6, &a.sp, on_token, &a), TERN_EINVAL);
    assert_int_equal(sched_add_at(&sc, -2, 1, a.prompt, 20, 6, &a.sp, on_token, &a), TERN_EINVAL);
    sched_free(&sc);
}

/* Prefix cache: a prompt that begins with what a slot already holds (an earlier prompt and the
 * tokens generated after it) starts after that part, in that slot, and generates exactly what it
 * would from scratch; an unrelated prompt takes another slot (the oldest), keeping the cache; no
 * reuse with a repeat penalty, nor for a scored prompt or one fed whole on request
 * (sched_feed_whole); a pipeline recovery empties every cache. */
static void test_prefix_cache(void **state) {
    (void)state;
    for (int inflight = 1; inflight <= 2; inflight++) {
        fake_t f;
        sched_t sc;
        fake_init(&f, inflight);
        f.cache_ok = 1;
        sched_open(&sc, &f, 3, 8, 4);
        sched_set_prefix_cache(&sc, 1);
        seqrun_t a, b, c, d, e;
        seq_make(&a, 20, 6, 1, 0.0f);
        run_one(&sc, &f, &a);
        expect_solo(&a);
        assert_int_equal(sc.seqs[a.slot].n_cached, 0);
        /* a's prompt + 3 of its tokens + 2 others: 23 tokens cached (a fed 20 + 5) */
        seq_make(&b, 25, 5, 2, 0.7f);
        memcpy(b.prompt, a.prompt, 20 * sizeof(int32_t));
        memcpy(b.prompt + 20, a.out, 3 * sizeof(int32_t));
        b.prompt[23] = (a.out[3] + 1) % V;
        b.prompt[24] = 7;
        run_one(&sc, &f, &b);
        assert_int_equal(b.slot, a.slot);
        assert_int_equal(sc.seqs[b.slot].n_cached, 23);
        expect_solo(&b);
        /* an unrelated prompt: another slot (the cache of a/b stays) */
        seq_make(&c, 12, 4, 3, 0.0f);
        run_one(&sc, &f, &c);
        assert_int_not_equal(c.slot, a.slot);
        assert_int_equal(sc.seqs[c.slot].n_cached, 0);
        expect_solo(&c);
        /* a's prompt again: all but its last token come from b's slot */
        seq_make(&d, 20, 6, 1, 0.0f);
        run_one(&sc, &f, &d);
        assert_int_equal(d.slot, a.slot);
        assert_int_equal(sc.seqs[d.slot].n_cached, 19);
        assert_memory_equal(d.out, a.out, 6 * sizeof(int32_t));
        expect_solo(&d);
        /* a repeat penalty reads the history: fed whole */
        seq_make(&e, 20, 4, 1, 0.0f);
        e.sp.repeat_penalty = 1.3f;
        run_one(&sc, &f, &e);
        assert_int_equal(sc.seqs[e.slot].n_cached, 0);
        expect_solo(&e);
        /* a request that turns the cache off: fed whole from position 0, same tokens */
        seqrun_t w;
        seq_make(&w, 20, 4, 1, 0.0f);
        w.f = &f, w.sc = &sc;
        w.id = sched_add(&sc, w.prompt, 20, 4, &w.sp, on_token, &w);
        assert_true(w.id >= 0);
        w.slot = f.last_started;
        assert_true(sc.seqs[w.slot].n_cached > 0);
        assert_int_equal(sched_feed_whole(&sc, w.id), 0);
        assert_int_equal(sc.seqs[w.slot].n_cached, 0);
        step(&sc, &f);
        assert_int_equal(sched_feed_whole(&sc, w.id), TERN_EINVAL);   /* it has started */
        while (step(&sc, &f) > 0) {}
        expect_solo(&w);
        /* a scored prompt is fed whole: every position gets its log p */
        scorerun_t g;
        memset(&g, 0, sizeof g);
        seq_make(&g.r, 20, 2, 1, 0.0f);
        g.r.f = &f, g.r.sc = &sc;
        g.r.id = sched_add(&sc, g.r.prompt, 20, 2, &g.r.sp, on_token_scored, &g);
        assert_true(g.r.id >= 0);
        g.r.slot = f.last_started;
        assert_true(sc.seqs[g.r.slot].n_cached > 0);   /* taken at admission... */
        assert_int_equal(sched_score_prompt(&sc, g.r.id, on_score), 0);
        assert_int_equal(sc.seqs[g.r.slot].n_cached, 0);   /* ...and given back for scoring */
        while (step(&sc, &f) > 0) {}
        expect_scores(&g);
        /* a failed step: the pipeline rebuilds itself, every cache is gone */
        f.fail_at[0] = f.n_submit + 1, f.n_fail = 1;
        seqrun_t h2;
        seq_make(&h2, 20, 5, 1, 0.0f);
        run_one(&sc, &f, &h2);
        assert_int_equal(sc.n_recoveries, 1);
        expect_solo(&h2);
        seqrun_t k2;
        seq_make(&k2, 12, 3, 3, 0.0f);   /* c's prompt: its slot's cache went with the recovery */
        run_one(&sc, &f, &k2);
        assert_int_equal(sc.seqs[k2.slot].n_cached, 0);
        expect_solo(&k2);
        sched_free(&sc);
    }
}

/* r: n tokens of prompt `salt`, its first k taken from `from`, run alone: it must land in `slot`
 * with `cached` tokens from that slot's cache, and give its own tokens */
static void pick_run(sched_t *sc, fake_t *f, seqrun_t *r, int n, int salt, const int32_t *from, int k, int slot,
                     int cached) {
    seq_make(r, n, 4, salt, 0.0f);
    if (k) memcpy(r->prompt, from, (size_t)k * sizeof(int32_t));
    run_one(sc, f, r);
    assert_int_equal(r->slot, slot);
    assert_int_equal(sc->seqs[slot].n_cached, cached);
    expect_solo(r);
}

/* Which idle slot a prompt takes (llama-server's get_available_slot): one whose cache holds more
 * than the similarity threshold (0.1) of the prompt takes it, the longest such; otherwise the
 * least recently used idle slot — by release, not admission — so a prompt sharing only its first
 * token with a conversation's slot leaves it alone while an empty one waits; a higher threshold
 * sends a small overlap to the LRU slot; 0 turns similarity off (always LRU); bad thresholds are
 * refused. The tokens are each prompt's own wherever it runs. */
static void test_slot_pick(void **state) {
    (void)state;
    fake_t f;
    sched_t sc;
    open_cached(&sc, &f);
    sched_set_kv_copy(&sc, 0);   /* each slot's own cache only: the pick alone decides n_cached */
    assert_true(sc.slot_sim == SCHED_SLOT_SIM_DEFAULT);
    seqrun_t a, b, c, x, y, z, w, e, g, g2, g3;
    pick_run(&sc, &f, &a, 20, 1, NULL, 0, 0, 0);
    pick_run(&sc, &f, &b, 20, 2, NULL, 0, 1, 0);   /* never used before: older than a's */
    /* c shares a's first token only (1 of 20): the empty slot, not a's conversation */
    pick_run(&sc, &f, &c, 20, 3, a.prompt, 1, 2, 0);
    /* x (long) into slot 0 (a's: released first), y (short) into slot 1; y ends first */
    seq_make(&x, 20, 24, 4, 0.0f);
    seq_make(&y, 20, 2, 5, 0.0f);
    admit(&sc, &f, &x, 0);
    admit(&sc, &f, &y, 1);
    assert_int_equal(x.slot, 0);
    assert_int_equal(y.slot, 1);
    while (step(&sc, &f) > 0) {}
    expect_solo(&x);
    expect_solo(&y);
    /* z: slot 2 (c's release is the oldest); then w: slot 1, y's — admitted after x, released before */
    pick_run(&sc, &f, &z, 20, 6, NULL, 0, 2, 0);
    pick_run(&sc, &f, &w, 20, 7, NULL, 0, 1, 0);
    /* z's next turn (its prompt, 3 of its tokens, 3 more): z's slot, though slot 0 is the LRU one */
    int32_t turn[23];
    memcpy(turn, z.prompt, 20 * sizeof(int32_t));
    memcpy(turn + 20, z.out, 3 * sizeof(int32_t));
    pick_run(&sc, &f, &e, 26, 8, turn, 23, 2, 23);
    /* 3 of 20 tokens (0.15) shared with w's slot: more than 0.1, so there (slot 0 is the LRU) */
    pick_run(&sc, &f, &g, 20, 9, w.prompt, 3, 1, 3);
    /* under 0.5 the same overlap (now with e's slot) is too little: the LRU slot 0 */
    assert_int_equal(sched_set_slot_similarity(&sc, 0.5), 0);
    pick_run(&sc, &f, &g2, 20, 10, e.prompt, 3, 0, 0);
    /* 0: no similarity at all, g2's own next turn goes to the LRU slot (2, e's), starting after
     * what that slot's own cache shares with it (e's first 3) */
    assert_int_equal(sched_set_slot_similarity(&sc, 0), 0);
    pick_run(&sc, &f, &g3, 22, 11, g2.prompt, 20, 2, 3);
    assert_int_equal(sched_set_slot_similarity(&sc, -0.1), TERN_EINVAL);
    assert_int_equal(sched_set_slot_similarity(&sc, 1.5), TERN_EINVAL);
    assert_int_equal(sched_set_slot_similarity(&sc, NAN), TERN_EINVAL);
    assert_true(sc.slot_sim == 0);
    sched_free(&sc);
}

/* ---- the RAM prompt cache (sched_set_ram_cache) ---- */

/* the fake's rows as a one-layer model of 8-byte rows: keys = each position's token, values = the
 * history hash after it; read and written only while no step is in flight (pipeline.h) */
static int fake_kv_read(pipeline_t *p, int slot, int n, int kv_type, size_t row, uint8_t *buf, char *err, size_t errlen) {
    fake_t *f = (fake_t *)p;
    (void)kv_type, (void)err, (void)errlen;
    if (f->nq) fake_bad(f, "kv_read of slot %d with %d steps in flight", slot, f->nq);
    if (row != 8 || n < 1 || n > f->kv_len[slot]) fake_bad(f, "kv_read of %d rows of slot %d, which holds %d", n, slot, f->kv_len[slot]);
    for (int i = 0; i < n && i < MAXTOK; i++) {
        uint64_t t = (uint64_t)f->kvtok[slot][i];
        memcpy(buf + (size_t)i * 8, &t, 8);
        memcpy(buf + ((size_t)n + (size_t)i) * 8, &f->hist_at[slot][i + 1], 8);
    }
    return 0;
}

static int fake_kv_write(pipeline_t *p, int slot, int n, int kv_type, size_t row, const uint8_t *buf, char *err,
                         size_t errlen) {
    fake_t *f = (fake_t *)p;
    (void)kv_type, (void)err, (void)errlen;
    if (f->nq) fake_bad(f, "kv_write into slot %d with %d steps in flight", slot, f->nq);
    if (row != 8 || n < 1 || n > MAXTOK) fake_bad(f, "kv_write of %d rows", n);
    f->hist_at[slot][0] = HIST0;
    for (int i = 0; i < n && i < MAXTOK; i++) {
        uint64_t t;
        memcpy(&t, buf + (size_t)i * 8, 8);
        f->kvtok[slot][i] = (int32_t)t;
        memcpy(&f->hist_at[slot][i + 1], buf + ((size_t)n + (size_t)i) * 8, 8);
    }
    f->kv_len[slot] = n;
    return 0;
}

static const pipeline_ops_t fake_ops_kv = {fake_seq_start, fake_submit, fake_wait, fake_destroy, fake_recover, NULL,
                                           fake_kv_read, fake_kv_write};

/* r admitted, then steps until it ends (others may go on) */
static void run_until_done(sched_t *sc, fake_t *f, seqrun_t *r) {
    admit(sc, f, r, 0);
    while (!r->finish) step(sc, f);
}

/* One free slot beside a long sequence (steps of it in flight at every admission): A, then B
 * overwrites A's cache (saved to RAM first), then A's next turn gets A's rows back from RAM and
 * starts after them; outputs are the model's own (the long one's too); a request that then feeds
 * its prompt whole gives its hit back; a prompt sharing too little is not restored; without
 * kv_read / kv_write the cache cannot be turned on. */
static void test_ram_cache(void **state) {
    (void)state;
    for (int inflight = 1; inflight <= 2; inflight++) {
        fake_t f;
        sched_t sc;
        fake_init(&f, inflight);
        f.cache_ok = 1;
        sched_open(&sc, &f, 2, 8, 4);
        sched_set_prefix_cache(&sc, 1);
        assert_int_equal(sched_set_ram_cache(&sc, 1 << 20), TERN_ENOTSUP);   /* no model identity, no kv ops */
        kvfile_model_t m;
        memset(&m, 0, sizeof m);
        m.size = 1, m.n_layer = 1, m.row = 8;
        sched_set_model(&sc, &m);
        assert_int_equal(sched_set_ram_cache(&sc, 1 << 20), TERN_ENOTSUP);
        f.base.ops = &fake_ops_kv;
        assert_int_equal(sched_set_ram_cache(&sc, 1 << 20), 0);
        seqrun_t L, a, b, a2, b2, c;
        seq_make(&L, 10, 150, 9, 0.0f);
        admit(&sc, &f, &L, 0);
        for (int i = 0; i < 4; i++) step(&sc, &f);
        seq_make(&a, 30, 6, 1, 0.6f);
        run_until_done(&sc, &f, &a);
        expect_solo(&a);
        seq_make(&b, 30, 6, 2, 0.0f);
        run_until_done(&sc, &f, &b);
        assert_int_equal(b.slot, a.slot);
        assert_int_equal(sc.ram->n, 1);   /* a's 35 fed tokens */
        assert_int_equal(sc.ram->e[0].n, 35);
        expect_solo(&b);
        /* a's next turn: its prompt, 4 of its tokens, then another */
        seq_make(&a2, 36, 5, 1, 0.6f);
        memcpy(a2.prompt, a.prompt, 30 * sizeof(int32_t));
        memcpy(a2.prompt + 30, a.out, 4 * sizeof(int32_t));
        a2.prompt[34] = (a.out[4] + 1) % V;
        a2.prompt[35] = 3;
        run_until_done(&sc, &f, &a2);
        assert_int_equal(a2.slot, a.slot);
        assert_int_equal(sc.seqs[a2.slot].n_ram, 34);
        assert_int_equal(sc.seqs[a2.slot].n_cached, 34);
        assert_int_equal(sc.ram->n_hits, 1);
        assert_int_equal(sc.ram->n_restored_tok, 34);
        assert_int_equal(sc.ram->n, 2);   /* b saved too */
        expect_solo(&a2);
        /* b again, but fed whole: restored at admission, the hit given back */
        seq_make(&b2, 30, 4, 2, 0.0f);
        b2.f = &f, b2.sc = &sc;
        b2.id = sched_add(&sc, b2.prompt, 30, 4, &b2.sp, on_token, &b2);
        assert_true(b2.id >= 0);
        b2.slot = f.last_started;
        assert_int_equal(sc.seqs[b2.slot].n_cached, 29);
        assert_int_equal(sc.ram->n_hits, 2);
        assert_int_equal(sched_feed_whole(&sc, b2.id), 0);
        assert_int_equal(sc.ram->n_hits, 1);
        assert_int_equal(sc.ram->n_restored_tok, 34);
        while (!b2.finish) step(&sc, &f);
        expect_solo(&b2);
        /* a prompt sharing 3 tokens with an entry: not worth a restore */
        seq_make(&c, 20, 3, 7, 0.0f);
        memcpy(c.prompt, a.prompt, 3 * sizeof(int32_t));
        run_until_done(&sc, &f, &c);
        assert_int_equal(sc.ram->n_hits, 1);
        expect_solo(&c);
        assert_int_equal(L.finish, 0);   /* it ran beside all of them */
        while (step(&sc, &f) > 0) {}
        expect_solo(&L);
        assert_int_equal(sched_set_ram_cache(&sc, 0), 0);
        assert_null(sc.ram);
        sched_free(&sc);
    }
}

/* KV copies: the n choices of one request (one prompt, a seed each, admitted together) evaluate the
 * prompt once — the others copy all but its last token from the first's slot once it has fed them
 * — and each makes what it makes alone (and what it makes with copies off); a prompt that shares a
 * beginning with a busy slot's copies it from there; a copy whose source ends before feeding the
 * tokens is called off (the prompt is fed from its own cache); a pipeline recovery replays them
 * all with the same tokens; none under a repeat penalty. */
static void test_kv_copy(void **state) {
    (void)state;
    for (int inflight = 1; inflight <= 2; inflight++)
        for (int on = 0; on <= 1; on++) {
            fake_t f;
            sched_t sc;
            fake_init(&f, inflight);
            f.cache_ok = 1;
            sched_open(&sc, &f, 4, 8, 4);
            sched_set_prefix_cache(&sc, 1);
            sched_set_kv_copy(&sc, on);
            seqrun_t ch[3];
            for (int c = 0; c < 3; c++) {
                seq_make(&ch[c], 30, 6, 1, 0.8f);
                ch[c].sp.seed = 77 + 1000u * (unsigned)c;   /* n samples, not n copies */
                admit(&sc, &f, &ch[c], c);
            }
            int guard = 0;
            while (step(&sc, &f) > 0) assert_true(++guard < 10000);
            for (int c = 0; c < 3; c++) expect_solo(&ch[c]);
            assert_int_not_equal(memcmp(ch[0].out, ch[1].out, 6 * sizeof(int32_t)), 0);
            assert_int_equal(f.n_copies, on ? 2 : 0);
            assert_int_equal(sc.n_copied_tok, on ? 58 : 0);
            assert_int_equal(sc.n_cached_tok, on ? 58 : 0);
            assert_int_equal(f.n_fed, 3 * 30 + 3 * 5 - (on ? 58 : 0));   /* prompts, then 5 decode tokens each */

            /* a prompt sharing 16 tokens with a busy slot's, mid-prefill: copied once fed */
            seqrun_t a, b;
            seq_make(&a, 40, 4, 2, 0.0f);
            admit(&sc, &f, &a, 3);
            step(&sc, &f);   /* a has fed its first chunk (8) at most */
            seq_make(&b, 24, 4, 3, 0.5f);
            memcpy(b.prompt, a.prompt, 16 * sizeof(int32_t));
            admit(&sc, &f, &b, 4);
            assert_int_equal(sc.seqs[b.slot].n_cached, on ? 16 : 0);
            guard = 0;
            while (step(&sc, &f) > 0) assert_true(++guard < 10000);
            expect_solo(&a);
            expect_solo(&b);
            assert_int_equal(f.n_copies, on ? 3 : 0);

            /* its source gone before it fed them: fed from its own cache (nothing here) */
            seqrun_t c2, d;
            seq_make(&c2, 30, 3, 4, 0.0f);
            admit(&sc, &f, &c2, 5);
            seq_make(&d, 30, 3, 4, 0.3f);
            admit(&sc, &f, &d, 6);
            assert_int_equal(sc.seqs[d.slot].n_cached, on ? 29 : 0);
            sched_cancel(&sc, c2.id);
            guard = 0;
            while (step(&sc, &f) > 0) assert_true(++guard < 10000);
            expect_solo(&d);
            assert_int_equal(f.n_copies, on ? 3 : 0);
            assert_int_equal(sc.seqs[d.slot].n_cached, 0);

            /* a failed step while the copies are pending or just made: replayed, the same tokens */
            seqrun_t rc[3];
            f.fail_at[0] = f.n_submit + 1, f.n_fail = 1;
            for (int c = 0; c < 3; c++) {
                seq_make(&rc[c], 26, 4, 6, 0.6f);
                rc[c].sp.seed = 5 + (unsigned)c;
                admit(&sc, &f, &rc[c], 10 + c);
            }
            guard = 0;
            while (step(&sc, &f) > 0) assert_true(++guard < 10000);
            assert_int_equal(sc.n_recoveries, 1);
            for (int c = 0; c < 3; c++) expect_solo(&rc[c]);

            /* a repeat penalty reads the history: no copy */
            seqrun_t e1, e2;
            seq_make(&e1, 30, 3, 5, 0.0f);
            seq_make(&e2, 30, 3, 5, 0.0f);
            e2.sp.repeat_penalty = 1.2f;
            admit(&sc, &f, &e1, 7);
            admit(&sc, &f, &e2, 8);
            assert_int_equal(sc.seqs[e2.slot].n_cached, 0);
            while (step(&sc, &f) > 0) {}
            expect_solo(&e2);
            sched_free(&sc);
        }
}

/* ---- context shifts ---- */

/* sched_set_keep's rule: -1 or more than the prompt is the prompt, at most n_ctx - 4, at least 0 */
static int keep_of(int keep, int n_prompt, int n_ctx) {
    int k = keep < 0 || keep > n_prompt ? n_prompt : keep;
    if (k > n_ctx - 4) k = n_ctx - 4;
    return k > 0 ? k : 0;
}

/* The model's generation with context shifts (the spec): a sample is the model's on the tokens
 * the context holds; when the next token to feed would go to position n_ctx, the text drops
 * (n_ctx - keep) / 2 tokens after the first keep. Under grammar g when not NULL (as
 * model_generate_gram: the first allowed token from the model's pick on, EOG or a complete grammar
 * ends it). Returns the tokens made; *finish, *n_shift: how it ended, the shifts made. */
static int model_generate_shift(const int32_t *prompt, int n, int max_gen, const sampler_params_t *sp, int n_ctx,
                                int keep, const grammar_t *g, int32_t *out, int *finish, int *n_shift) {
    int32_t t[MAXTOK + 1];
    memcpy(t, prompt, (size_t)n * sizeof *t);
    int nt = n, k = 0;
    grammar_state_t *gs = g ? grammar_state_new(g) : NULL;
    uint8_t mask[(V + 7) / 8];
    *finish = SCHED_LENGTH;
    *n_shift = 0;
    while (k < max_gen) {
        if (nt - 1 >= n_ctx) {   /* t[nt - 1] would go to position n_ctx */
            int d = (n_ctx - keep) / 2;
            memmove(t + keep, t + keep + d, (size_t)(nt - keep - d) * sizeof *t);
            nt -= d;
            (*n_shift)++;
        }
        uint64_t h = HIST0;
        for (int i = 0; i < nt; i++) h = hist_next(h, t[i]);
        int32_t tok = model_sample(h, sp, nt);   /* it goes to position nt */
        if (gs) {
            assert_true(grammar_state_mask(gs, test_vocab(), mask) > 0);
            while (!(mask[tok >> 3] >> (tok & 7) & 1)) tok = (tok + 1) % V;
        }
        out[k++] = t[nt++] = tok;
        if (!gs) continue;
        if (tok == EOG) { *finish = SCHED_STOP; break; }
        assert_int_equal(grammar_state_accept_token(gs, test_vocab(), tok), 0);
        if (grammar_state_done(gs)) { *finish = SCHED_STOP; break; }
    }
    grammar_state_destroy(&gs);
    return k;
}

/* r (run in a scheduler of context n_ctx with context shift, keep asked) got the spec's tokens and
 * end, and its slot the spec's shifts, each {keep, (n_ctx - keep) / 2, n_ctx}, all in steps unless
 * a recovery came (a replay shifts the text alone when the shift was due); returns the shifts */
static int expect_shifted(const seqrun_t *r, const fake_t *f, int n_ctx, int keep_asked, const grammar_t *g) {
    int32_t want[MAXTOK];
    int fin, n_shift, keep = keep_of(keep_asked, r->n_prompt, n_ctx);
    int n = model_generate_shift(r->prompt, r->n_prompt, r->max_gen, &r->sp, n_ctx, keep, g, want, &fin, &n_shift);
    if (r->n_out != n || memcmp(r->out, want, (size_t)n * sizeof(int32_t)) || r->finish != fin)
        fail_msg("sequence %d (prompt %d, keep %d): %d tokens, finish %d; want %d, finish %d%s", r->id, r->n_prompt, keep,
                 r->n_out, r->finish, n, fin, r->n_out == n ? " (other tokens)" : "");
    int n_seen = f->n_shift[r->slot], n_sched = r->sc->seqs[r->slot].n_shifted;
    if (n_sched != n_shift || n_seen > n_shift || (!r->sc->n_recoveries && n_seen != n_shift))   /* a replay may */
        fail_msg("sequence %d: %d shifts, %d of them in steps; want %d", r->id, n_sched, n_seen, n_shift);   /* shift alone */
    if (n_seen) {
        const step_shift_t *x = &f->last_shift[r->slot];
        assert_int_equal(x->keep, keep);
        assert_int_equal(x->discard, (n_ctx - keep) / 2);
        assert_int_equal(x->n_past, n_ctx);
    }
    return n_shift;
}

/* admits r and asks keep of it */
static void admit_keep(sched_t *sc, fake_t *f, seqrun_t *r, int rank, int keep) {
    admit(sc, f, r, rank);
    assert_int_equal(sched_set_keep(sc, r->id, keep), 0);
}

/* Context shift (sched_set_context_shift): sequences with several n_keep (the whole prompt, 0, a
 * few tokens, more than the prompt: clamped), greedy and sampled, run far past a context of 24 —
 * with 1 to 3 steps in flight. Each gets exactly the spec's tokens (max_gen of them, SCHED_LENGTH)
 * and the spec's shifts, each {keep, (n_ctx - keep) / 2, n_past n_ctx}, carried by the step that
 * feeds the slot's next token at n_past - discard, never while a token of the slot is in flight
 * (waiting on its sample), never a position at or past n_ctx (fake_shift, fake_submit). */
static void test_context_shift(void **state) {
    (void)state;
    const int n_ctx = 24, keeps[4] = {-1, 0, 3, 100}, plen[4] = {10, 5, 8, 20}, gen[4] = {60, 37, 45, 50};
    for (int inflight = 1; inflight <= 3; inflight++) {
        fake_t f;
        sched_t sc;
        seqrun_t r[4];
        fake_init(&f, inflight);
        sched_open_ctx(&sc, &f, 4, 16, 4, n_ctx);
        sched_set_context_shift(&sc, 1);
        for (int i = 0; i < 4; i++) seq_make(&r[i], plen[i], gen[i], 20 + i, i % 2 ? 0.8f : 0.0f);
        for (int i = 0; i < 4; i++) admit_keep(&sc, &f, &r[i], i, keeps[i]);
        int guard = 0;
        while (step(&sc, &f) > 0) assert_true(++guard < 10000);
        long total = 0;
        for (int i = 0; i < 4; i++) {
            int ns = expect_shifted(&r[i], &f, n_ctx, keeps[i], NULL);
            assert_true(ns >= 2);   /* it ran well past the context */
            assert_int_equal(r[i].n_out, gen[i]);
            total += ns;
        }
        assert_int_equal(sc.n_ctx_shifts, total);
        sched_free(&sc);
    }
    /* sched_set_keep: no such sequence, a bad count */
    fake_t f;
    sched_t sc;
    seqrun_t r;
    fake_init(&f, 1);
    sched_open_ctx(&sc, &f, 1, 16, 4, n_ctx);
    seq_make(&r, 5, 3, 1, 0.0f);
    admit(&sc, &f, &r, 0);
    assert_int_equal(sched_set_keep(&sc, r.id + 1, 0), TERN_EINVAL);
    assert_int_equal(sched_set_keep(&sc, r.id, -2), TERN_EINVAL);
    while (step(&sc, &f) > 0) {}
    sched_free(&sc);
}

/* Without sched_set_context_shift a sequence ends where its context is full (SCHED_CTX, after
 * n_ctx - n_prompt tokens, the model's own), with no shift in any step; with it, a scored prompt
 * still ends there (its scores all delivered) while a plain one beside it goes on. */
static void test_context_shift_off(void **state) {
    (void)state;
    const int n_ctx = 24;
    for (int on = 0; on <= 1; on++) {
        fake_t f;
        sched_t sc;
        seqrun_t r;
        scorerun_t c;
        fake_init(&f, 2);
        sched_open_ctx(&sc, &f, 2, 16, 4, n_ctx);
        sched_set_context_shift(&sc, on);
        seq_make(&r, 10, 60, 3, 0.0f);
        admit_keep(&sc, &f, &r, 0, 2);
        memset(&c, 0, sizeof c);
        seq_make(&c.r, 12, 40, 4, 0.0f);
        c.r.f = &f, c.r.sc = &sc;
        c.r.id = sched_add(&sc, c.r.prompt, c.r.n_prompt, c.r.max_gen, &c.r.sp, on_token_scored, &c);
        assert_true(c.r.id >= 0);
        c.r.slot = f.last_started;
        assert_int_equal(sched_score_prompt(&sc, c.r.id, on_score), 0);
        int guard = 0;
        while (step(&sc, &f) > 0) assert_true(++guard < 10000);
        expect_scores(&c);
        int32_t want[MAXTOK];
        model_generate(c.r.prompt, c.r.n_prompt, n_ctx - c.r.n_prompt, &c.r.sp, want);
        assert_int_equal(c.r.finish, SCHED_CTX);
        assert_int_equal(c.r.n_out, n_ctx - c.r.n_prompt);
        assert_memory_equal(c.r.out, want, (size_t)c.r.n_out * sizeof(int32_t));
        assert_int_equal(f.n_shift[c.r.slot], 0);
        if (on) {
            assert_true(expect_shifted(&r, &f, n_ctx, 2, NULL) > 0);
            assert_int_equal(sc.n_ctx_shifts, f.n_shift[r.slot]);
        } else {
            model_generate(r.prompt, r.n_prompt, n_ctx - r.n_prompt, &r.sp, want);
            assert_int_equal(r.finish, SCHED_CTX);
            assert_int_equal(r.n_out, n_ctx - r.n_prompt);
            assert_memory_equal(r.out, want, (size_t)r.n_out * sizeof(int32_t));
            assert_int_equal(f.n_shift[r.slot], 0);
            assert_int_equal(sc.n_ctx_shifts, 0);
        }
        sched_free(&sc);
    }
}

/* Context shifts and pipeline recoveries (before, between and after shifts, 1 and 2 steps in
 * flight): greedy sequences (one with a repeat penalty; one under a grammar that never ends — no
 * token spells its "~" —, whose state a replay of shifted text keeps) and a sampled one (its
 * draws keyed on the position) get exactly the spec's tokens — a replay feeds the (shifted) text
 * from position 0, as one prompt, and the fake's cache is exact. */
static void test_context_shift_replay(void **state) {
    (void)state;
    const int n_ctx = 20;
    grammar_t *g = parse_gbnf("root ::= [0-9a-c]* \"~\"\n");
    for (int inflight = 1; inflight <= 2; inflight++) {
        fake_t f;
        sched_t sc;
        seqrun_t r[4];
        fake_init(&f, inflight);
        sched_open_ctx(&sc, &f, 4, 16, 4, n_ctx);
        sched_set_context_shift(&sc, 1);
        f.fail_at[0] = 6, f.fail_at[1] = 30, f.fail_at[2] = 47, f.fail_at[3] = 71;
        f.n_fail = 4;
        for (int i = 0; i < 4; i++) seq_make(&r[i], 6 + 3 * i, 55, 60 + i, i == 3 ? 0.9f : 0.0f);
        r[1].sp.repeat_penalty = 1.2f;
        for (int i = 0; i < 4; i++) {
            r[i].f = &f, r[i].sc = &sc;
            r[i].id = sched_add(&sc, r[i].prompt, r[i].n_prompt, r[i].max_gen, &r[i].sp, i == 2 ? on_token_gram : on_token, &r[i]);
            assert_true(r[i].id >= 0);
            r[i].slot = f.last_started;
            assert_int_equal(sched_set_keep(&sc, r[i].id, i == 0 ? -1 : 4), 0);
            char err[256];
            grammar_t *gi = i == 2 ? parse_gbnf("root ::= [0-9a-c]* \"~\"\n") : NULL;
            if (gi) assert_int_equal(sched_set_grammar(&sc, r[i].id, &gi, test_vocab(), err, sizeof err), 0);
        }
        int guard = 0, shifted_replays = 0, rec = 0;
        while (sched_step(&sc) > 0) {
            assert_true(++guard < 10000);
            for (int i = 0; rec < sc.n_recoveries && i < 4; i++) shifted_replays += sc.seqs[r[i].slot].n_shifted > 0;
            rec = sc.n_recoveries;
        }
        if (f.bad) fail_msg("fake pipeline: %s", f.why);
        assert_int_equal(sc.n_recoveries, 4);
        assert_true(shifted_replays >= 4);   /* shifted texts were replayed */
        for (int i = 0; i < 4; i++) {
            int ns = expect_shifted(&r[i], &f, n_ctx, i == 0 ? -1 : 4, i == 2 ? g : NULL);
            if (ns < 1) fail_msg("sequence %d: no shift (%d tokens, finish %d)", i, r[i].n_out, r[i].finish);
        }
        assert_true(f.n_shift[r[3].slot] > 0);
        sched_free(&sc);
    }
    grammar_destroy(&g);
    /* steps of 2 tokens for 3 decoders: a sequence whose shift is due may wait a step, and a
     * failure then finds it at n_ctx + 1 tokens (the replay shifts its text alone); a failure at
     * every step in turn */
    for (int at = 10; at < 60; at++) {
        fake_t f;
        sched_t sc;
        seqrun_t r[3];
        fake_init(&f, 1 + at % 2);
        sched_open_ctx(&sc, &f, 3, 2, 2, n_ctx);
        sched_set_context_shift(&sc, 1);
        f.fail_at[0] = at, f.n_fail = 1;
        for (int i = 0; i < 3; i++) seq_make(&r[i], 4 + i, 40, 80 + i, 0.0f);
        for (int i = 0; i < 3; i++) admit_keep(&sc, &f, &r[i], i, 2);
        int guard = 0;
        while (step(&sc, &f) > 0) assert_true(++guard < 10000);
        if (sc.n_recoveries != 1) fail_msg("failure at step %d of %d: %d recoveries", at, f.n_submit, sc.n_recoveries);
        for (int i = 0; i < 3; i++) assert_true(expect_shifted(&r[i], &f, n_ctx, 2, NULL) > 0);
        sched_free(&sc);
    }
}

/* Context shifts with prompt lookup (greedy, and sampled with a repeat penalty; a text that
 * cycles): the tokens are the spec's, drafts are taken, and none goes to a position at or past
 * n_ctx (fake_submit) nor crosses a shift (the spec shifts where plain decoding does) */
static void test_context_shift_lookup(void **state) {
    (void)state;
    g_markov = 1;
    const int n_ctx = 28;
    for (int inflight = 1; inflight <= 2; inflight++) {
        fake_t f;
        sched_t sc;
        seqrun_t r[4];
        fake_init(&f, inflight);
        f.rewind_ok = 1;
        sched_open_ctx(&sc, &f, 4, 32, 8, n_ctx);
        sched_set_context_shift(&sc, 1);
        assert_int_equal(sched_set_lookup(&sc, 6), 0);
        for (int i = 0; i < 4; i++) seq_make(&r[i], 5 + 4 * i, 90, 30 + i, i < 2 ? 0.0f : 0.8f);
        r[3].sp.repeat_penalty = 1.2f;
        for (int i = 0; i < 4; i++) admit_keep(&sc, &f, &r[i], i, i % 2 ? 0 : -1);
        int guard = 0;
        while (step(&sc, &f) > 0) assert_true(++guard < 10000);
        assert_true(sc.n_draft_ok > 0);
        for (int i = 0; i < 4; i++) assert_true(expect_shifted(&r[i], &f, n_ctx, i % 2 ? 0 : -1, NULL) > 0);
        sched_free(&sc);
    }
    g_markov = 0;
}

/* The prefix cache after a shift: the slot's cache holds the shifted text, but only its first
 * keep positions are what a prefill computes, so a prompt equal to a longer beginning of the
 * shifted text reuses those keep tokens alone (and generates the model's own tokens) */
static void test_context_shift_prefix_cache(void **state) {
    (void)state;
    const int n_ctx = 24;
    fake_t f;
    sched_t sc;
    fake_init(&f, 1);
    f.cache_ok = 1;
    sched_open_ctx(&sc, &f, 2, 8, 4, n_ctx);
    sched_set_prefix_cache(&sc, 1);
    sched_set_context_shift(&sc, 1);
    seqrun_t a, b;
    seq_make(&a, 10, 30, 1, 0.0f);
    admit_keep(&sc, &f, &a, 0, 6);
    while (step(&sc, &f) > 0) {}
    assert_true(expect_shifted(&a, &f, n_ctx, 6, NULL) > 0);
    const sched_seq_t *q = &sc.seqs[a.slot];
    assert_true(q->n_fed >= 16);
    seq_make(&b, 16, 4, 2, 0.0f);
    memcpy(b.prompt, q->toks, 16 * sizeof(int32_t));   /* the shifted text's beginning */
    run_one(&sc, &f, &b);
    assert_int_equal(b.slot, a.slot);
    assert_int_equal(sc.seqs[b.slot].n_cached, 6);
    expect_solo(&b);
    sched_free(&sc);
}


/* sched_fail: a sequence that cannot start ends as a failed one through its callback, the reason
 * in s->err; it refuses a sequence that has started or does not exist */
static void test_fail(void **state) {
    (void)state;
    fake_t f;
    sched_t sc;
    seqrun_t r[2];
    fake_init(&f, 1);
    sched_open(&sc, &f, 2, 16, 4);
    for (int i = 0; i < 2; i++) {
        seq_make(&r[i], 5, 4, 7 + i, 0.0f);
        r[i].f = &f;
        r[i].sc = &sc;
        r[i].id = sched_add(&sc, r[i].prompt, r[i].n_prompt, r[i].max_gen, &r[i].sp, on_token, &r[i]);
        assert_true(r[i].id >= 0);
    }
    assert_int_equal(sched_fail(&sc, r[0].id, TERN_ENOMEM, "why not"), TERN_ENOMEM);
    assert_int_equal(r[0].finish, SCHED_ERROR);
    assert_string_equal(sc.err, "why not");
    assert_int_equal(sc.err_code, TERN_ENOMEM);
    assert_int_equal(sched_fail(&sc, r[0].id, TERN_EINVAL, "again"), TERN_EINVAL);   /* ended */
    assert_int_equal(sched_active(&sc), 1);
    int guard = 0;
    while (sched_step(&sc) > 0) assert_true(++guard < 1000);
    assert_int_equal(r[1].finish, SCHED_LENGTH);   /* the other went on */
    assert_int_equal(r[1].n_out, 4);
    assert_int_equal(sched_fail(&sc, r[1].id, TERN_EINVAL, "late"), TERN_EINVAL);
    sched_free(&sc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_prefill_chunk), cmocka_unit_test(test_chunk_cap),
        cmocka_unit_test(test_chunk_off),         cmocka_unit_test(test_no_starvation),
        cmocka_unit_test(test_pipelined),         cmocka_unit_test(test_recovery_replay),
        cmocka_unit_test(test_score_prompt),
        cmocka_unit_test(test_prefix_cache),
        cmocka_unit_test(test_add_at),
        cmocka_unit_test(test_slot_pick),
        cmocka_unit_test(test_kv_copy),
        cmocka_unit_test(test_ram_cache),
        cmocka_unit_test(test_grammars),
        cmocka_unit_test(test_lazy_grammars),
        cmocka_unit_test(test_lazy_grammar_token),
        cmocka_unit_test(test_force),
        cmocka_unit_test(test_fail),
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_lookup_sampled),
        cmocka_unit_test(test_lookup_mirostat),
        cmocka_unit_test(test_context_shift),
        cmocka_unit_test(test_context_shift_off),
        cmocka_unit_test(test_context_shift_replay),
        cmocka_unit_test(test_context_shift_lookup),
        cmocka_unit_test(test_context_shift_prefix_cache),
    };
    log_set_level(LOG_W);   /* replays log one info line per sequence */
    return cmocka_run_group_tests(tests, setup, NULL);
}
