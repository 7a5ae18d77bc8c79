/* cli_chat: `tern chat` — interactive turns on stdin/stdout with the model's chat template.
 * Each turn formats the whole conversation (chat_apply), tokenizes it and feeds only the tokens
 * after the longest prefix already in the KV cache (earlier turns are kept, not re-fed;
 * --no-cache re-feeds everything, for comparison). It drives the pipeline directly on slot 0,
 * since the scheduler starts every sequence afresh. With --grammar / -j every reply is a sentence
 * of the grammar (each starts it afresh, as llama.cpp's CLI does). With --context-shift a full
 * context keeps its first tokens (the system message, or --keep) and drops the older half of the
 * rest (llama.cpp's rule), and the conversation goes on; without, the reply is cut there.
 * Ctrl-C stops the current reply; Ctrl-C at the prompt, /exit or EOF quits.
 * Commands at the prompt (llama-cli's conversation mode; /help lists them): /clear, /regen, /undo,
 * /read FILE, /save FILE and /load FILE (an OpenAI-style {"messages": [...]} file, chatfile.h);
 * each changes the message list only — the next turn's prefix match decides what is fed again.
 * --prompt-cache FILE: slot 0's keys and values come from FILE at start and go back at exit
 * (sched_slot_restore / sched_slot_save, as tern run's), so a long system message or a loaded
 * conversation is not evaluated again on every start.
 * Reasoning models (--reasoning-format, as serve's; auto: when the template writes <think>): the
 * thinking streams dimmed on a terminal, between [thinking] and [/thinking] lines otherwise (or not
 * at all with --no-show-thinking), and only the answer joins the conversation, as llama.cpp's
 * templates drop earlier turns' thinking; the cache match re-feeds from where they differ. */
#define _GNU_SOURCE   /* ppoll */
#include "coordinator/chatfile.h"
#include "coordinator/cli_common.h"
#include "coordinator/engine.h"
#include "coordinator/reasoning.h"
#include "core/err.h"
#include "core/log.h"
#include "core/strbuf.h"
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}

typedef struct chat {
    tern_model *m;
    int32_t *fed;          /* (n_ctx,) tokens whose keys/values are in the cache, by position */
    int n_fed;
    int32_t *ids;          /* (cap_ids,) tokens of the formatted conversation */
    int cap_ids;
    int shift;             /* --context-shift */
    int keep_req;          /* --keep: tokens after the BOS a shift keeps; -1: the system message */
    int keep;              /* what a shift keeps (resolved on the first turn; -1 before) */
    int n_drop;            /* conversation tokens dropped by shifts: the cache holds the conversation's
                            * [0, keep) then [keep + n_drop, ...) (fed[p] = token p, or p + n_drop
                            * from keep on) */
    step_shift_t sh;       /* the shift the next step carries */
    step_t st;             /* one micro-batch of slot 0 */
    float *h;              /* (n_batch, n_embd) */
    int32_t out_tok;
    float out_lp;
    int n_batch;
    sampler_params_t sp;
    chat_msg_t *msgs;      /* (cap_msgs,) roles are literals, contents owned */
    char **think;          /* (cap_msgs,) assistant message i's thinking (owned) or NULL, kept apart
                            * from its answer: a template sees it as reasoning_content, /save writes
                            * it; NULL past n_msgs */
    int n_msgs, cap_msgs;
    grammar_t *grammar;    /* NULL: replies are free text */
    const grammar_vocab_t *gvocab;   /* the model's (engine_grammar_vocab), not owned */
    grammar_state_t *gs;   /* the current reply's position in the grammar; refers to grammar */
    uint8_t *mask;         /* ((n_vocab + 7) / 8) tokens the next sample may take, bit t = token t */
    const uint8_t *allow[1];   /* per slot, for step_t.allow: slot 0's is mask */
    int reused;            /* the last prompt's tokens taken from the cache (not fed) */
    int n_restored;        /* --prompt-cache: tokens restored at start (0: none); -1 once reported */
    unsigned n_regen;      /* /regen so far: each one's draw is seeded apart */
    int n_predict, no_cache;
    void *kwargs;          /* json_t * object: the Jinja template's variables (enable_thinking, ...) */
    int reason;            /* replies' <think>...</think> is shown apart and not kept */
    int show_think;        /* with reason: stream the thinking (marked) */
    int think_open;        /* the last prompt ended inside <think> */
    int budget;            /* --reasoning-budget: > 0: the thinking's tokens, then </think> is forced */
    int32_t force[16];     /* the tokens the next samples must be (the end marker), force[0] next */
    int n_force;
    char err[512];
} chat_t;

static void chat_free(chat_t *c) {
    free(c->fed);
    free(c->ids);
    free(c->st.tokens);
    free(c->st.seq);
    free(c->st.pos);
    free(c->st.sample);
    free(c->h);
    chatfile_msgs_free(c->msgs, c->n_msgs);
    chatfile_think_free(c->think, c->n_msgs);
    grammar_state_destroy(&c->gs);
    grammar_destroy(&c->grammar);   /* after its state */
    free(c->mask);
    json_decref(c->kwargs);
}

static int chat_init(chat_t *c, tern_model *m, const sampler_params_t *sp, int shift, int keep, int n_predict,
                     int no_cache) {
    memset(c, 0, sizeof *c);
    c->m = m;
    c->n_predict = n_predict;
    c->no_cache = no_cache;
    c->sp = *sp;
    c->n_batch = m->sched.n_batch;
    c->shift = shift;
    c->keep_req = keep;
    c->keep = -1;
    int nb = c->n_batch;
    c->fed = malloc((size_t)m->n_ctx * sizeof(int32_t));
    c->cap_ids = m->n_ctx + 8;
    c->ids = malloc((size_t)c->cap_ids * sizeof(int32_t));
    c->st.tokens = malloc((size_t)nb * sizeof(int32_t));
    c->st.seq = calloc((size_t)nb, sizeof(int));
    c->st.pos = malloc((size_t)nb * sizeof(int));
    c->st.sample = malloc((size_t)nb);
    c->h = malloc((size_t)nb * (size_t)m->pl->n_embd * sizeof(float));
    c->st.out_tok = &c->out_tok;
    c->st.out_lp = &c->out_lp;
    if (!c->fed || !c->ids || !c->st.tokens || !c->st.seq || !c->st.pos || !c->st.sample || !c->h) return TERN_ENOMEM;
    return 0;
}

/* The next sample is c->force[0] (the reasoning budget's end marker): the mask admits it alone —
 * under a grammar only when the grammar lets it through, else the forcing is dropped (the grammar
 * wins), as the server's scheduler does (sched_force). 0 or TERN_ENOMEM. */
static int chat_force_mask(chat_t *c) {
    size_t bytes = ((size_t)c->m->pl->n_vocab + 7) / 8;
    int32_t t = c->force[0];
    if (c->grammar && !(c->mask[t >> 3] >> (t & 7) & 1)) { c->n_force = 0; return 0; }
    if (!c->mask && !(c->mask = malloc(bytes))) return err_set(c->err, sizeof c->err, TERN_ENOMEM, "out of memory");
    memset(c->mask, 0, bytes);
    c->mask[t >> 3] = (uint8_t)(1u << (t & 7));
    c->allow[0] = c->mask;
    c->st.allow = c->allow;
    return 0;
}

/* token tok's text p[0..n) against the reasoning budget: once spent, the rest of the end marker
 * is queued to be forced (c->force) */
static void chat_budget(chat_t *c, reasoning_budget_t *rb, const char *p, size_t n) {
    int k = reasoning_budget_feed(rb, p, n);
    if (k < 0) return;
    const char *mark = reasoning_close_marker() + k;
    int nt = tokenizer_encode(c->m->tok, mark, strlen(mark), 0, 1, c->force, (int)(sizeof c->force / sizeof c->force[0]));
    c->n_force = nt > 0 && nt <= (int)(sizeof c->force / sizeof c->force[0]) ? nt : 0;
}

/* The mask of what the grammar lets the next sample take, into c->mask, and the step carries it
 * (without a grammar: nothing to do, no mask; a forced token's mask: chat_force_mask). 0, or <0 with c->err set: TERN_EINVAL when no
 * token of the vocabulary may come next (a dead end), TERN_ENOMEM. */
static int chat_constrain(chat_t *c) {
    c->st.allow = NULL;
    if (c->grammar) {
        int n = grammar_state_mask(c->gs, c->gvocab, c->mask);
        if (n <= 0) return err_set(c->err, sizeof c->err, n < 0 ? n : TERN_EINVAL, "%s", grammar_mask_why(n));
        c->st.allow = c->allow;
    }
    return c->n_force ? chat_force_mask(c) : 0;
}

/* Compiles the grammar (GBNF text) that every reply follows and checks that a reply can begin
 * it. 0, or <0 with c->err set. */
static int chat_grammar_init(chat_t *c, const char *gbnf) {
    char why[200];
    if (!(c->grammar = grammar_parse(gbnf, strlen(gbnf), NULL, why, sizeof why)))
        return err_set(c->err, sizeof c->err, TERN_EINVAL, "--grammar: %s", why);
    if (!(c->gvocab = engine_grammar_vocab(c->m)) || !(c->gs = grammar_state_new(c->grammar)) ||
        !(c->mask = malloc(((size_t)c->m->pl->n_vocab + 7) / 8)))
        return err_set(c->err, sizeof c->err, TERN_ENOMEM, "grammar: out of memory");
    if (grammar_vocab_n(c->gvocab) != c->m->pl->n_vocab)
        return err_set(c->err, sizeof c->err, TERN_EINVAL, "grammar: the tokenizer has %d tokens but the model %d",
                       grammar_vocab_n(c->gvocab), c->m->pl->n_vocab);
    c->allow[0] = c->mask;
    if (grammar_state_done(c->gs)) return err_set(c->err, sizeof c->err, TERN_EINVAL, "grammar: it accepts only the empty text");
    int n = grammar_state_mask(c->gs, c->gvocab, c->mask);
    if (n < 0) return err_set(c->err, sizeof c->err, n, "grammar: %s", grammar_mask_why(n));
    if (n == 0) return err_set(c->err, sizeof c->err, TERN_EINVAL, "grammar: no token of the vocabulary can begin it");
    return 0;
}

/* takes ownership of content and think (malloc'd; think NULL: none) */
static int chat_push_think(chat_t *c, const char *role, char *content, char *think) {
    if (c->n_msgs == c->cap_msgs) {
        int cap = c->cap_msgs ? c->cap_msgs * 2 : 8;
        chat_msg_t *p = realloc(c->msgs, (size_t)cap * sizeof *p);
        if (p) c->msgs = p;
        char **t = p ? realloc(c->think, (size_t)cap * sizeof *t) : NULL;
        if (!t) { free(content); free(think); return TERN_ENOMEM; }
        c->think = t;
        for (int i = c->cap_msgs; i < cap; i++) t[i] = NULL;
        c->cap_msgs = cap;
    }
    c->msgs[c->n_msgs].role = role;
    c->think[c->n_msgs] = think;
    c->msgs[c->n_msgs++].content = content;
    return 0;
}

static int chat_push(chat_t *c, const char *role, char *content) { return chat_push_think(c, role, content, NULL); }

/* drops the messages from n on */
static void chat_truncate(chat_t *c, int n) {
    while (c->n_msgs > n) {
        free((char *)c->msgs[--c->n_msgs].content);
        free(c->think[c->n_msgs]);
        c->think[c->n_msgs] = NULL;
    }
}

/* The conversation is about to change other than by a new message at its end (a command): after a
 * context shift the cache's positions from keep on stand for the old conversation's tokens
 * n_drop further on, which a changed one need not have there, so only the kept ones stay
 * usable; what a shift keeps is resolved again. */
static void chat_forget_shift(chat_t *c) {
    if (c->n_drop) {
        if (c->n_fed > c->keep) c->n_fed = c->keep;
        c->n_drop = 0;
    }
    c->keep = -1;
}

static int chat_last_is(const chat_t *c, const char *role) {
    return c->n_msgs > 0 && !strcmp(c->msgs[c->n_msgs - 1].role, role);
}

/* The context is full (n_fed == n_ctx): the next step carries a shift that keeps the first keep
 * positions and drops half of the rest; fed[] and n_drop follow. */
static void chat_shift(chat_t *c) {
    int keep = c->keep, n_past = c->n_fed, discard = (n_past - keep) / 2;
    memmove(c->fed + keep, c->fed + keep + discard, (size_t)(n_past - keep - discard) * sizeof(int32_t));
    c->n_fed -= discard;
    c->n_drop += discard;
    c->sh.seq = 0, c->sh.keep = keep, c->sh.discard = discard, c->sh.n_past = n_past;
    c->st.shift = &c->sh;
    c->st.n_shift = 1;
    log_d("chat: the context is full (%d tokens): kept the first %d, dropped the next %d (%d dropped so far)", n_past,
          keep, discard, c->n_drop);
}

/* Feeds toks[0..n) at positions n_fed.. in micro-batches and samples after the last one (with
 * --context-shift, shifting whenever the context is full). Returns the sampled token,
 * TERN_ECANCEL when Ctrl-C came between micro-batches (the fed part stays valid), or another <0
 * with c->err set. */
static int chat_feed(chat_t *c, const int32_t *toks, int n) {
    pipeline_t *pl = c->m->pl;
    for (int done = 0; done < n;) {
        if (g_interrupted) return TERN_ECANCEL;
        c->st.shift = NULL;
        c->st.n_shift = 0;
        if (c->n_fed >= c->m->n_ctx) {
            if (!c->shift || c->keep < 0) return err_set(c->err, sizeof c->err, TERN_EINVAL, "the context is full");
            chat_shift(c);
        }
        int k = n - done < c->n_batch ? n - done : c->n_batch;
        if (k > c->m->n_ctx - c->n_fed) k = c->m->n_ctx - c->n_fed;
        for (int i = 0; i < k; i++) {
            c->st.tokens[i] = toks[done + i];
            c->st.seq[i] = 0;
            c->st.pos[i] = c->n_fed + i;
            c->st.sample[i] = (uint8_t)(done + i == n - 1);
        }
        c->st.n = k;
        if (embed_lookup(&c->m->emb, c->st.tokens, k, c->h) < 0)
            return err_set(c->err, sizeof c->err, TERN_EINVAL, "token id outside the vocabulary");
        c->st.h = c->h;
        int rc = pl->ops->submit(pl, &c->st);
        step_t *s = rc < 0 ? NULL : pl->ops->wait(pl, -1);
        if (!s || s->rc < 0)
            return err_set(c->err, sizeof c->err, s ? s->rc : TERN_EPEER, "%s", s ? s->err : "pipeline: step not accepted");
        memcpy(c->fed + c->n_fed, toks + done, (size_t)k * sizeof(int32_t));
        c->n_fed += k;
        done += k;
        if (done == n) {
            if (s->n_out != 1) return err_set(c->err, sizeof c->err, TERN_EPROTO, "pipeline returned no token");
            return s->out_tok[0];
        }
    }
    return err_set(c->err, sizeof c->err, TERN_EINVAL, "nothing to feed");
}

/* the messages' thinking as the template's per-message variables: {"reasoning_content": ...} for
 * each assistant message that has one (a new array; NULL: none, or out of memory — the template
 * then sees the answers alone) */
static void **chat_think_vars(const chat_t *c, int n_msgs) {
    void **x = NULL;
    for (int i = 0; c->think && i < n_msgs; i++) {
        if (!c->think[i]) continue;
        if (!x && !(x = calloc((size_t)n_msgs, sizeof *x))) return NULL;
        x[i] = json_pack("{s:o}", "reasoning_content", json_string_nocheck(c->think[i]));   /* the bytes as they came */
    }
    return x;
}

/* The first n_msgs messages formatted and tokenized into *ids (grown as needed, capacity *cap);
 * *open (NULL: not wanted): the text leaves the model inside <think>. Returns the token count or
 * <0 with c->err set. */
static int chat_tokens(chat_t *c, int n_msgs, int32_t **ids, int *cap, int *open) {
    tern_model *m = c->m;
    void **x = chat_think_vars(c, n_msgs);
    int need = chat_apply_vars(m->tok, c->msgs, n_msgs, NULL, x, NULL, c->kwargs, 1, NULL, 0);
    char *buf = need >= 0 ? malloc((size_t)need + 1) : NULL;
    if (buf) chat_apply_vars(m->tok, c->msgs, n_msgs, NULL, x, NULL, c->kwargs, 1, buf, need + 1);
    for (int i = 0; x && i < n_msgs; i++) json_decref(x[i]);
    free(x);
    if (need < 0) return err_set(c->err, sizeof c->err, need, "%s", *chat_error() ? chat_error() : "the model's chat template cannot be applied");
    if (!buf) return err_set(c->err, sizeof c->err, TERN_ENOMEM, "out of memory");
    if (open) *open = reasoning_prompt_open(buf, (size_t)need);
    int n = tokenizer_encode(m->tok, buf, (size_t)need, tokenizer_add_bos(m->tok), 1, *ids, *cap);
    if (n > *cap) {   /* a conversation past the context (shifted): room for all of it */
        int32_t *p = realloc(*ids, ((size_t)n + 8) * sizeof(int32_t));
        if (p) {
            *ids = p;
            *cap = n + 8;
            n = tokenizer_encode(m->tok, buf, (size_t)need, tokenizer_add_bos(m->tok), 1, *ids, *cap);
        } else {
            n = TERN_ENOMEM;
        }
    }
    free(buf);
    if (n < 0) return err_set(c->err, sizeof c->err, n, "cannot tokenize the conversation");
    return n;
}

/* What a context shift keeps (c->keep, once): --keep N is the BOS and N tokens; -1 is the system
 * message (the tokens the conversation shares with it formatted alone), or the BOS without one
 * (or when it cannot be formatted alone); at most n_ctx - 4, so a shift always drops something.
 * ids[0..n): the conversation. */
static void chat_keep(chat_t *c, const int32_t *ids, int n) {
    int bos = tokenizer_add_bos(c->m->tok) ? 1 : 0, k = c->keep_req >= 0 ? c->keep_req + bos : bos;
    if (c->keep_req < 0 && c->n_msgs > 0 && !strcmp(c->msgs[0].role, "system")) {
        int cap = 64;
        int32_t *sys = malloc((size_t)cap * sizeof *sys);
        int ns = sys ? chat_tokens(c, 1, &sys, &cap, NULL) : -1;
        for (k = 0; k < ns && k < n && sys[k] == ids[k];) k++;
        if (ns < 0) k = bos;
        free(sys);
    }
    if (k > c->m->n_ctx - 4) k = c->m->n_ctx - 4;
    c->keep = k > 0 ? k : 0;
    log_d("chat: a context shift keeps the first %d tokens", c->keep);
}

/* Formats the conversation and feeds what is not yet in the cache (everything when no_cache);
 * the reply's sampler is seeded with the -s seed + seed_off. Returns the first sampled token or
 * <0 (c->err set). */
static int chat_prompt(chat_t *c, int no_cache, uint64_t seed_off) {
    tern_model *m = c->m;
    int n = chat_tokens(c, c->n_msgs, &c->ids, &c->cap_ids, &c->think_open), rc;
    if (n < 0) return n;
    if (c->shift && c->keep < 0) chat_keep(c, c->ids, n);
    if (!c->shift && n >= m->n_ctx)
        return err_set(c->err, sizeof c->err, TERN_EINVAL,
                       "the conversation has %d tokens but the context holds %d (raise -c)", n, m->n_ctx);
    /* the cache's positions that hold the conversation's tokens: fed[p] is token p before keep,
     * token p + n_drop from there (what shifts left of it) */
    int k = 0, drop = no_cache ? 0 : c->n_drop;
#define AT(p) ((p) < c->keep ? (p) : (p) + drop)
    if (!no_cache)
        while (k < c->n_fed && AT(k) < n && c->fed[k] == c->ids[AT(k)]) k++;
    if (k > 0 && AT(k) >= n) k--;   /* re-feed the last token: its logits are needed to sample */
    int from = AT(k);
    if (k < c->keep) drop = 0;   /* fed again from k: nothing dropped yet */
#undef AT
    if (c->shift && n - from >= m->n_ctx - c->keep) {
        /* What is not in the cache does not fit after the kept tokens (a reply formatted again may
         * tokenize differently from how it was generated, so the match can stop inside it): the
         * kept tokens and the conversation's last n_ctx - keep - 1 go in, as a shift would have
         * left them. ids is rebuilt every turn, so it is rearranged in place. */
        int tail = m->n_ctx - c->keep - 1;
        if (k > c->keep) k = c->keep;
        memmove(c->ids + c->keep, c->ids + n - tail, (size_t)tail * sizeof(int32_t));
        drop = n - tail - c->keep;
        from = k;
        n = c->keep + tail;
        log_d("chat: the conversation does not fit after the %d kept tokens: its last %d go in", c->keep, tail);
    }
    c->n_fed = k;
    c->n_drop = drop;
    sampler_params_t sp = c->sp;
    sp.seed += seed_off;
    rc = m->pl->ops->seq_start(m->pl, 0, &sp);
    if (rc < 0) return err_set(c->err, sizeof c->err, rc, "cannot start the sequence");
    if (c->grammar) {   /* each reply is a sentence of its own */
        grammar_state_destroy(&c->gs);
        if (!(c->gs = grammar_state_new(c->grammar))) return err_set(c->err, sizeof c->err, TERN_ENOMEM, "out of memory");
        if ((rc = chat_constrain(c)) < 0) return rc;
    }
    c->reused = k;
    log_d("chat: %d tokens in the conversation, %d reused from the cache%s", n, k, drop ? " (after a shift)" : "");
    return chat_feed(c, c->ids + from, n - from);
}

/* How the thinking looks on stdout: dim on a terminal, else between marker lines */
static void think_mark(int on) {
    if (isatty(1)) fputs(on ? "\033[2m" : "\033[0m\n", stdout);
    else fputs(on ? "[thinking]\n" : "\n[/thinking]\n", stdout);
}

/* The reply so far (text[0..n), final: all of it) split into thinking and answer (*out); what is
 * new of each since the last call (*rsent, *csent bytes sent) goes to stdout, the thinking marked
 * (*in: the thinking's mark is open). */
static void chat_show_split(chat_t *c, const char *text, size_t n, int final, size_t *scan, size_t *rsent,
                            size_t *csent, int *in, reasoning_split_t *out) {
    reasoning_split_t rs;
    reasoning_split(text, n, c->think_open, final, scan, &rs);
    *out = rs;
    if (c->show_think && rs.r1 - rs.r0 > *rsent) {
        if (!*in) {
            think_mark(1);
            *in = 1;
        }
        fwrite(text + rs.r0 + *rsent, 1, rs.r1 - rs.r0 - *rsent, stdout);
        *rsent = rs.r1 - rs.r0;
    }
    if (*in && (rs.c1 > rs.c0 || final)) {
        think_mark(0);
        *in = 0;
    }
    if (rs.c1 - rs.c0 > *csent) {
        fwrite(text + rs.c0 + *csent, 1, rs.c1 - rs.c0 - *csent, stdout);
        *csent = rs.c1 - rs.c0;
    }
    fflush(stdout);
}

/* Generates the reply after tok (the first sampled token), streaming it to stdout, and
 * appends it to the conversation (with c->reason, the answer after the thinking alone). With a
 * grammar the reply ends once the grammar is complete (the last token is not fed: the next turn's
 * prefix match feeds it), or with a note on stderr where it comes to a dead end. 0, or <0 with
 * c->err set. */
static int chat_reply(chat_t *c, int tok, int n_predict) {
    tern_model *m = c->m;
    detok_t dt;
    detok_init(&dt, m->tok, 0);   /* the reply is a message of its own: SPM's leading space goes */
    strbuf_t reply = {0};
    char piece[256];
    int rc = 0, in_think = 0;
    size_t scan = 0, rsent = 0, csent = 0;
    reasoning_split_t rs;
    reasoning_budget_t rb;
    reasoning_budget_init(&rb, c->budget, c->think_open);
    c->n_force = 0;
    for (int i = 0; n_predict < 0 || i < n_predict; i++) {
        if (g_interrupted || tokenizer_is_eog(m->tok, tok)) break;
        if (c->n_force && tok == c->force[0]) memmove(c->force, c->force + 1, (size_t)--c->n_force * sizeof c->force[0]);
        else c->n_force = 0;   /* the forced token came, or the forcing was dropped */
        if (c->grammar && grammar_state_accept_token(c->gs, c->gvocab, tok) < 0) {   /* the mask let it through */
            rc = err_set(c->err, sizeof c->err, TERN_EINVAL, "the grammar refused token %d that its mask let through", tok);
            break;
        }
        int np = detok_feed(&dt, tok, piece, sizeof piece);
        if (c->budget > 0) chat_budget(c, &rb, piece, np > 0 ? (size_t)np : 0);
        if (np > 0) {
            if (strbuf_add(&reply, piece, (size_t)np) < 0) { rc = TERN_ENOMEM; break; }
            if (c->reason) {
                chat_show_split(c, reply.p, reply.n, 0, &scan, &rsent, &csent, &in_think, &rs);
            } else {
                fwrite(piece, 1, (size_t)np, stdout);
                fflush(stdout);
            }
        }
        if (c->grammar && grammar_state_done(c->gs)) break;   /* the reply is a whole sentence */
        if (c->n_fed >= m->n_ctx && !c->shift) {   /* with --context-shift, chat_feed shifts */
            fprintf(stderr, "\ntern chat: the context is full (%d tokens); the reply is cut here\n", m->n_ctx);
            break;
        }
        if (n_predict >= 0 && i + 1 == n_predict) break;   /* no need to compute a token we will not show */
        if (chat_constrain(c) < 0) {
            fprintf(stderr, "\ntern chat: %s; the reply ends here\n", c->err);
            break;
        }
        int32_t t = tok;
        tok = chat_feed(c, &t, 1);
        if (tok == TERN_ECANCEL) break;
        if (tok < 0) { rc = tok; break; }
    }
    int np = detok_flush(&dt, piece, sizeof piece);
    if (np > 0 && strbuf_add(&reply, piece, (size_t)np) < 0) rc = TERN_ENOMEM;
    else if (np > 0 && !c->reason) fwrite(piece, 1, (size_t)np, stdout);
    rs = (reasoning_split_t){0, 0, 0, reply.n};
    if (c->reason && rc != TERN_ENOMEM)
        chat_show_split(c, reply.p ? reply.p : "", reply.n, 1, &scan, &rsent, &csent, &in_think, &rs);
    fputc('\n', stdout);
    fflush(stdout);
    if (rc == TERN_ENOMEM) err_set(c->err, sizeof c->err, rc, "out of memory");
    if (rc < 0) { free(reply.p); return rc; }
    if (!reply.p && strbuf_add(&reply, "", 0) < 0) return err_set(c->err, sizeof c->err, TERN_ENOMEM, "out of memory");
    char *think = NULL;   /* the thinking, kept apart from the answer (reasoning_content) */
    if (rs.r1 > rs.r0 && !(think = strndup(reply.p + rs.r0, rs.r1 - rs.r0))) {
        free(reply.p);
        return err_set(c->err, sizeof c->err, TERN_ENOMEM, "out of memory");
    }
    if (rs.c0 > 0) {   /* the answer alone is the message's content */
        memmove(reply.p, reply.p + rs.c0, rs.c1 - rs.c0);
        reply.p[rs.c1 - rs.c0] = 0;
    }
    return chat_push_think(c, "assistant", reply.p, think);
}

/* Waits until fd 0 is readable; <0 when Ctrl-C came, even just before the wait: SIGINT stays
 * blocked between the flag check and ppoll, which unblocks it atomically. */
static int wait_input(void) {
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = 0;
    if (g_interrupted) rc = -1;
    else {
        struct pollfd pfd = {0, POLLIN, 0};
        int r = ppoll(&pfd, 1, NULL, &old);
        if (r < 0 && errno == EINTR && g_interrupted) rc = -1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* Reads one line from fd 0 without stdio (so that SIGINT interrupts the read). Returns a
 * malloc'd line without the newline, or NULL on EOF (*intr = 0) or Ctrl-C (*intr = 1). */
static char *read_line(int *intr) {
    static char buf[4096];
    static size_t len, off;
    strbuf_t line = {0};
    *intr = 0;
    for (;;) {
        if (off == len) {
            if (wait_input() < 0) { *intr = 1; free(line.p); return NULL; }
            ssize_t r = read(0, buf, sizeof buf);
            if (r < 0 && errno == EINTR && g_interrupted) { *intr = 1; free(line.p); return NULL; }
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {   /* EOF: a last line without a newline still counts */
                if (line.p) return line.p;
                return NULL;
            }
            len = (size_t)r;
            off = 0;
        }
        char *nl = memchr(buf + off, '\n', len - off);
        size_t k = nl ? (size_t)(nl - (buf + off)) : len - off;
        if (strbuf_add(&line, buf + off, k) < 0) { free(line.p); return NULL; }
        off += k;
        if (nl) {
            off++;
            if (line.n && line.p[line.n - 1] == '\r') line.p[--line.n] = 0;
            return line.p;
        }
    }
}

/* --prompt-cache at start: slot 0 takes FILE's tokens and rows when FILE exists (tern run's
 * machinery: sched_slot_restore), and they are what the cache holds (fed), so the first turn feeds
 * only what comes after the beginning the conversation shares with them. 0 (also without a file:
 * it is made at exit), or <0 with c->err (another model, corrupt, too long for -c). */
static int chat_cache_load(chat_t *c, const char *path) {
    sched_t *s = &c->m->sched;
    char why[400];
    int n = 0, rc = sched_slot_restore(s, 0, path, &n, NULL, why, sizeof why);
    if (rc == TERN_ENOTFOUND) {
        log_i("prompt cache %s does not exist yet", path);
        return 0;
    }
    if (rc < 0) return err_set(c->err, sizeof c->err, rc, "--prompt-cache %s", why);
    memcpy(c->fed, s->seqs[0].toks, (size_t)n * sizeof(int32_t));
    c->n_fed = c->n_restored = n;
    log_i("prompt cache: %d tokens restored from %s", n, path);
    return 0;
}

/* --prompt-cache at exit: what the cache holds as a fresh prefill would compute it (after a
 * context shift only the kept tokens) goes to FILE through slot 0 (sched_slot_save). 0 (also with
 * nothing to save) or <0 with c->err. */
static int chat_cache_save(chat_t *c, const char *path) {
    int n = c->n_drop && c->keep < c->n_fed ? c->keep : c->n_fed, saved = 0;
    if (n < 1) {
        log_i("prompt cache: nothing to save to %s", path);
        return 0;
    }
    char why[400];
    int rc = sched_slot_adopt(&c->m->sched, 0, c->fed, n);
    if (rc == 0) rc = sched_slot_save(&c->m->sched, 0, path, &saved, NULL, why, sizeof why);
    else snprintf(why, sizeof why, "%d tokens do not fit the slot", n);
    if (rc < 0) return err_set(c->err, sizeof c->err, rc, "--prompt-cache: cannot save: %s", why);
    log_i("prompt cache: %d tokens saved to %s", saved, path);
    return 0;
}

/* A line, and while it ends with a backslash the next ones too (llama-cli's multi-line input: the
 * backslash becomes a newline). NULL on EOF before any line or on Ctrl-C (*intr = 1), as
 * read_line; EOF after a backslash ends the text there. */
static char *read_input(int *intr) {
    char *text = read_line(intr);
    size_t n = text ? strlen(text) : 0;
    while (text && n && text[n - 1] == '\\') {
        char *more = read_line(intr);
        if (!more) {
            if (*intr) { free(text); return NULL; }
            text[--n] = 0;
            break;
        }
        size_t k = strlen(more);
        char *p = realloc(text, n + k + 1);
        if (!p) { free(more); free(text); return NULL; }
        text = p;
        text[n - 1] = '\n';
        memcpy(text + n, more, k + 1);
        n += k;
        free(more);
    }
    return text;
}

/* Answers the conversation, whose last message is the user's: the reply streams to stdout and
 * joins the conversation. Its draw is seeded with the -s seed + the replies before it (so a
 * conversation continued in another process, or started again after /clear, draws alike) + salt.
 * 0: answered (a reply stopped by Ctrl-C included); 1: the prompt did not go in (Ctrl-C, or an
 * error told on stderr when stdin is a terminal) and the conversation is as it was; <0: fatal
 * (c->err). */
static int chat_answer(chat_t *c, uint64_t salt) {
    uint64_t n_replies = 0;
    for (int i = 0; i < c->n_msgs; i++) n_replies += !strcmp(c->msgs[i].role, "assistant");
    int tok = chat_prompt(c, c->no_cache, n_replies + salt);
    if (tok == TERN_ECANCEL) {   /* Ctrl-C during the prompt: back to the prompt */
        fputc('\n', stdout);
        g_interrupted = 0;
        return 1;
    }
    if (tok < 0) {   /* a message that does not fit: interactively one may go on */
        if (!isatty(0)) return tok;
        fprintf(stderr, "tern chat: %s\n", c->err);
        return 1;
    }
    if (c->n_restored > 0) {
        log_i("prompt cache: %d of the %d restored tokens reused", c->reused, c->n_restored);
        c->n_restored = -1;
    }
    int rc = chat_reply(c, tok, c->n_predict);
    g_interrupted = 0;   /* a Ctrl-C that stopped the reply does not also quit */
    return rc < 0 ? rc : 0;
}

/* text as the user's next message (taken) and its answer; 0 or <0 (fatal) */
static int chat_say(chat_t *c, char *text) {
    int rc = chat_push(c, "user", text);
    if (rc < 0) return err_set(c->err, sizeof c->err, rc, "out of memory");
    rc = chat_answer(c, 0);
    if (rc == 1) chat_truncate(c, c->n_msgs - 1);   /* the message that did not go in is dropped */
    return rc < 0 ? rc : 0;
}

/* Replaces the conversation with FILE's (/load, --chat-file). 0, or <0 with c->err set and the
 * conversation as it was. */
static int chat_load(chat_t *c, const char *path) {
    size_t len;
    char why[400];
    char *text = cli_read_file_n(path, "conversation file", CHATFILE_MAX_BYTES, &len, why, sizeof why);
    if (!text) return err_set(c->err, sizeof c->err, TERN_EIO, "%s", why);
    chat_msg_t *msgs;
    char **think;
    int n, rc = chatfile_parse_ex(text, len, &msgs, &think, &n, why, sizeof why);
    free(text);
    if (rc < 0) return err_set(c->err, sizeof c->err, rc, "%s: %s", path, why);
    chatfile_msgs_free(c->msgs, c->n_msgs);
    chatfile_think_free(c->think, c->n_msgs);
    c->msgs = msgs;
    c->think = think;
    c->n_msgs = c->cap_msgs = n;
    if (!n) c->cap_msgs = 1;   /* chatfile_parse allocates room for one at least */
    chat_forget_shift(c);
    return 0;
}

static const char chat_help[] =
    "/help          this list\n"
    "/exit          quit (so do EOF and Ctrl-C at the prompt)\n"
    "/clear         forget the conversation but the system message\n"
    "/regen         drop the last reply and generate it again (at --temp 0 the same reply)\n"
    "/undo          drop the last exchange: your last message and its reply\n"
    "/read FILE     send FILE's text as your message (its last newline dropped)\n"
    "/save FILE     write the conversation, system message included, as JSON {\"messages\": [...]}\n"
    "/load FILE     replace the conversation with FILE's (as /save writes it)\n"
    "A line ending in \\ goes on on the next line; //text sends /text.\n";

/* /regen: the last reply (if the conversation ends with one) is set aside and the user's message
 * answered again; it comes back when no new one could be made. 0 or <0 (fatal). */
static int chat_regen(chat_t *c) {
    char *old = NULL, *old_think = NULL;
    if (chat_last_is(c, "assistant")) {
        old = (char *)c->msgs[--c->n_msgs].content;
        old_think = c->think[c->n_msgs];
        c->think[c->n_msgs] = NULL;
    }
    if (!chat_last_is(c, "user")) {
        fprintf(stderr, "tern chat: /regen: no message of yours to answer\n");
        if (old) c->think[c->n_msgs] = old_think, c->msgs[c->n_msgs++].content = old;
        return 0;
    }
    /* at --temp > 0 each /regen draws anew: its seed is set apart from every other reply's */
    int rc = chat_answer(c, (uint64_t)++c->n_regen * 0x9E3779B97F4A7C15ull);
    if (rc == 1 && old) {
        c->msgs[c->n_msgs].role = "assistant";
        c->think[c->n_msgs] = old_think;
        c->msgs[c->n_msgs++].content = old;
        old = old_think = NULL;
    }
    free(old);
    free(old_think);
    return rc < 0 ? rc : 0;
}

/* /read FILE: the file's text (at most 1 MiB, without NUL bytes; one final newline dropped, as a
 * typed line has none) as the user's message. 0 or <0 (fatal). */
static int chat_read(chat_t *c, const char *path) {
    size_t len;
    char why[400];
    char *text = cli_read_file_n(path, "/read file", 1L << 20, &len, why, sizeof why);
    if (!text) { fprintf(stderr, "tern chat: %s\n", why); return 0; }
    if (len && text[len - 1] == '\n') text[--len] = 0;
    if (len && text[len - 1] == '\r') text[--len] = 0;
    const char *bad = strlen(text) != len ? "holds a NUL byte (not text)" : !len ? "is empty" : NULL;
    if (bad) {
        fprintf(stderr, "tern chat: /read: '%s' %s\n", path, bad);
        free(text);
        return 0;
    }
    return chat_say(c, text);
}

/* Runs the command in line ("/name [ARG]"). 1: quit; 0: back to the prompt; <0: fatal. */
static int chat_command(chat_t *c, char *line) {
    char *arg = line + 1;
    while (*arg && !isspace((unsigned char)*arg)) arg++;
    size_t nlen = (size_t)(arg - line);
    while (isspace((unsigned char)*arg)) arg++;
    for (char *e = arg + strlen(arg); e > arg && isspace((unsigned char)e[-1]);) *--e = 0;
#define IS(name) (nlen == sizeof name - 1 && !memcmp(line, name, nlen))
    int takes_file = IS("/read") || IS("/save") || IS("/load");
    if (!IS("/help") && !IS("/exit") && !IS("/clear") && !IS("/regen") && !IS("/undo") && !takes_file) {
        fprintf(stderr, "tern chat: unknown command %.*s (/help lists them; //text sends /text)\n", (int)(nlen < 64 ? nlen : 64), line);
        return 0;
    }
    if (takes_file && !*arg) { fprintf(stderr, "tern chat: usage: %.*s FILE\n", (int)nlen, line); return 0; }
    if (!takes_file && *arg) { fprintf(stderr, "tern chat: %.*s takes no argument\n", (int)nlen, line); return 0; }
    int sys = c->n_msgs > 0 && !strcmp(c->msgs[0].role, "system");
    if (IS("/exit")) return 1;
    if (IS("/clear") || IS("/undo") || IS("/regen")) chat_forget_shift(c);
    if (IS("/help")) fputs(chat_help, stdout);
    if (IS("/clear")) {
        chat_truncate(c, sys);
        fprintf(stderr, "tern chat: the conversation is cleared%s\n", sys ? " (the system message kept)" : "");
    }
    if (IS("/undo")) {
        int n = c->n_msgs - chat_last_is(c, "assistant");
        if (n > sys && !strcmp(c->msgs[n - 1].role, "user")) n--;
        if (n == c->n_msgs) fprintf(stderr, "tern chat: /undo: nothing to undo\n");
        else fprintf(stderr, "tern chat: dropped the last %d message%s\n", c->n_msgs - n, c->n_msgs - n > 1 ? "s" : "");
        chat_truncate(c, n);
    }
    if (IS("/save")) {
        int n_bad;
        if (chatfile_save_ex(arg, c->msgs, c->think, c->n_msgs, &n_bad, c->err, sizeof c->err) < 0) fprintf(stderr, "tern chat: /save: %s\n", c->err);
        else if (n_bad) fprintf(stderr, "tern chat: %d messages saved to %s; %d bytes that are not UTF-8 written as U+FFFD (a /load of it differs there)\n", c->n_msgs, arg, n_bad);
        else fprintf(stderr, "tern chat: %d messages saved to %s\n", c->n_msgs, arg);
    }
    if (IS("/load")) {
        if (chat_load(c, arg) < 0) fprintf(stderr, "tern chat: /load: %s\n", c->err);
        else fprintf(stderr, "tern chat: %d messages loaded from %s%s\n", c->n_msgs, arg,
                     chat_last_is(c, "user") ? " (the last is yours: /regen answers it)" : "");
    }
    if (IS("/regen")) return chat_regen(c);
    if (IS("/read")) return chat_read(c, arg);
#undef IS
    return 0;
}

static int chat_loop(chat_t *c) {
    for (;;) {
        fputs("> ", stdout);
        fflush(stdout);
        int intr, rc;
        char *line = read_input(&intr);
        if (!line) { fputc('\n', stdout); return 0; }   /* EOF or Ctrl-C at the prompt */
        if (!line[0]) { free(line); continue; }
        if (line[0] == '/' && line[1] != '/') {
            rc = chat_command(c, line);
            free(line);
            if (rc) return rc > 0 ? 0 : rc;
            continue;
        }
        if (line[0] == '/') memmove(line, line + 1, strlen(line));   /* "//text": the message "/text" */
        if ((rc = chat_say(c, line)) < 0) return rc;
    }
}

int cli_chat(int argc, char **argv) {
    log_set_role("C");
    cli_model_opts_t mo;
    cli_model_opts_default(&mo);
    const char *sys = NULL, *chat_file = NULL, *pcache = NULL;
    int n_predict = -1, no_cache = 0, pcache_ro = 0, no_show_think = 0;
    mo.s.n_keep = -1;   /* a shift keeps the system message */
    opt_t opts[96] = {
        {"-sys", "--system-prompt", OPT_STR, &sys, "TEXT", "system message at the start of the conversation", 0, 0},
        {"-n", "--n-predict", OPT_INT, &n_predict, "N", "most tokens per reply (-1: until the end of turn)", -1, 1 << 20},
        {NULL, "--no-cache", OPT_FLAG, &no_cache, NULL, "re-feed the whole conversation every turn", 0, 0},
        {NULL, "--chat-file", OPT_STR, &chat_file, "FILE", "start from the conversation in FILE (as /load FILE; instead of -sys)", 0, 0},
        {NULL, "--prompt-cache", OPT_STR, &pcache, "FILE", "start with the keys and values FILE holds (same model; the first turn feeds only what comes after the beginning it shares with the conversation), and save the cache to FILE at exit", 0, 0},
        {NULL, "--prompt-cache-ro", OPT_FLAG, &pcache_ro, NULL, "with --prompt-cache: only read FILE", 0, 0},
        {NULL, "--no-show-thinking", OPT_FLAG, &no_show_think, NULL, "with --reasoning-format: do not print the thinking (by default dim on a terminal, else between [thinking] and [/thinking] lines)", 0, 0},
    };
    int cap = (int)(sizeof opts / sizeof opts[0]);
    int n_opts = cli_reasoning_opts(&mo, opts, cli_chat_template_opts(&mo, opts, cli_model_opts_table(&mo, opts, cap, 1), cap), cap);
    for (int i = 0; i < n_opts; i++)
        if (opts[i].lng && !strcmp(opts[i].lng, "--keep"))
            opts[i].help = "with --context-shift: tokens kept at the start of the conversation after the BOS (-1: the system message)";
    char err[512], *pos[1];
    int npos, rc = opt_parse(opts, argc, argv, pos, 0, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern chat -m MODEL [-sys SYSTEM | --chat-file FILE] [options]", opts);
        fputs("\ncommands at the prompt:\n", stdout);
        fputs(chat_help, stdout);
        return 0;
    }
    if (rc < 0 || (rc = cli_model_opts_check(&mo, err, sizeof err)) < 0) {
        fprintf(stderr, "tern chat: %s\n", err);
        return 1;
    }
    int rfmt = reasoning_format_parse(mo.reasoning_format);
    if (rfmt < 0) {
        fprintf(stderr, "tern chat: --reasoning-format %s: expected none, deepseek, deepseek-legacy or auto\n", mo.reasoning_format);
        return 1;
    }
    void *kwargs;
    if (cli_chat_kwargs(&mo, &kwargs, err, sizeof err) < 0) {
        fprintf(stderr, "tern chat: %s\n", err);
        return 1;
    }
    json_decref(kwargs);   /* checked before the model loads; made again for the chat below */
    if (mo.p.lookup || mo.p.draft_model) {   /* chat drives the pipeline itself, not the scheduler that drafts */
        fprintf(stderr, "tern chat: --lookup and -md are for tern run and tern serve\n");
        return 1;
    }
    if (no_cache && mo.p.context_shift) {   /* a shifted cache is what it is: nothing to compare with */
        fprintf(stderr, "tern chat: use --no-cache or --context-shift, not both\n");
        return 1;
    }
    const char *clash = no_cache && pcache ? "--no-cache or --prompt-cache" : sys && chat_file ? "-sys or --chat-file"
                        : pcache_ro && !pcache ? "--prompt-cache-ro with --prompt-cache" : NULL;
    if (clash) {
        fprintf(stderr, "tern chat: use %s%s\n", clash, pcache_ro && !pcache ? "" : ", not both");
        return 1;
    }
    mo.p.n_seq = 1;
    /* the model's worker threads start with SIGINT blocked, so Ctrl-C always reaches this
     * thread (and interrupts its ppoll); unblocked again once the model is loaded */
    sigset_t sigint, oldmask;
    sigemptyset(&sigint);
    sigaddset(&sigint, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigint, &oldmask);
    tern_model *m;
    rc = tern_load(&m, &mo.p, err, sizeof err);
    if (rc < 0) {
        pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
        fprintf(stderr, "tern chat: %s\n", err);
        return 1;
    }
    if ((rc = cli_chat_template_apply(m, &mo, err, sizeof err)) < 0) {
        pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
        fprintf(stderr, "tern chat: %s\n", err);
        tern_model_free(&m);
        return 1;
    }
    sampler_params_t sp;
    engine_sampler_params(&mo.s, &sp);
    if (sampler_params_dry(&sp) && engine_dry_breakers(m, mo.s.dry_breakers, mo.s.n_dry_breakers, &sp, err, sizeof err) < 0) {
        pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
        fprintf(stderr, "tern chat: %s\n", err);
        tern_model_free(&m);
        return 1;
    }
    chat_t c;
    rc = chat_init(&c, m, &sp, mo.p.context_shift, mo.s.n_keep, n_predict, no_cache);
    if (rc == 0) rc = cli_chat_kwargs(&mo, &c.kwargs, err, sizeof err);
    c.reason = rfmt == REASONING_DEEPSEEK || rfmt == REASONING_DEEPSEEK_LEGACY ||   /* legacy: as deepseek here */
               (rfmt == REASONING_AUTO && chat_template_thinks(m->tok));
    c.show_think = !no_show_think;
    c.budget = mo.reasoning_budget;
    if (rc == 0 && sys) {
        char *s = strdup(sys);
        rc = s ? chat_push(&c, "system", s) : TERN_ENOMEM;
    }
    if (rc < 0) err_set(c.err, sizeof c.err, rc, "out of memory");
    else if (mo.s.grammar) rc = chat_grammar_init(&c, mo.s.grammar);
    if (rc == 0 && chat_file) {
        char why[sizeof c.err];
        if ((rc = chat_load(&c, chat_file)) == 0) log_i("chat: %d messages from %s", c.n_msgs, chat_file);
        else memcpy(why, c.err, sizeof why), err_set(c.err, sizeof c.err, rc, "--chat-file: %s", why);
    }
    if (rc == 0 && pcache) rc = chat_cache_load(&c, pcache);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;   /* no SA_RESTART: Ctrl-C must interrupt read() at the prompt */
    sigaction(SIGINT, &sa, &old);
    pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
    if (rc == 0) {
        log_d("chat: template %s, context %d", chat_template_name(m->tok), m->n_ctx);
        rc = chat_loop(&c);
        if (rc == 0 && pcache && !pcache_ro) rc = chat_cache_save(&c, pcache);
    }
    sigaction(SIGINT, &old, NULL);
    if (rc < 0) fprintf(stderr, "tern chat: %s\n", c.err);
    chat_free(&c);
    tern_model_free(&m);
    return rc < 0 ? 1 : 0;
}
