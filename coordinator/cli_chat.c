/* cli_chat: `tern chat` — interactive turns on stdin/stdout with the model's chat template.
 * Each turn formats the whole conversation (chat_apply), tokenizes it and feeds only the tokens
 * after the longest prefix already in the KV cache (earlier turns are kept, not re-fed;
 * --no-cache re-feeds everything, for comparison). It drives the pipeline directly on slot 0,
 * since the scheduler starts every sequence afresh. With --grammar / -j every reply is a sentence
 * of the grammar (each starts it afresh, as llama.cpp's CLI does). With --context-shift a full
 * context keeps its first tokens (the system message, or --keep) and drops the older half of the
 * rest (llama.cpp's rule), and the conversation goes on; without, the reply is cut there.
 * Ctrl-C stops the current reply; Ctrl-C at the prompt, /exit or EOF quits. */
#define _GNU_SOURCE   /* ppoll */
#include "coordinator/cli_common.h"
#include "coordinator/engine.h"
#include "core/err.h"
#include "core/log.h"
#include "core/strbuf.h"
#include <errno.h>
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
    int n_msgs, cap_msgs;
    grammar_t *grammar;    /* NULL: replies are free text */
    const grammar_vocab_t *gvocab;   /* the model's (engine_grammar_vocab), not owned */
    grammar_state_t *gs;   /* the current reply's position in the grammar; refers to grammar */
    uint8_t *mask;         /* ((n_vocab + 7) / 8) tokens the next sample may take, bit t = token t */
    const uint8_t *allow[1];   /* per slot, for step_t.allow: slot 0's is mask */
    char err[256];
} chat_t;

static void chat_free(chat_t *c) {
    free(c->fed);
    free(c->ids);
    free(c->st.tokens);
    free(c->st.seq);
    free(c->st.pos);
    free(c->st.sample);
    free(c->h);
    for (int i = 0; i < c->n_msgs; i++) free((char *)c->msgs[i].content);
    free(c->msgs);
    grammar_state_destroy(&c->gs);
    grammar_destroy(&c->grammar);   /* after its state */
    free(c->mask);
}

static int chat_init(chat_t *c, tern_model *m, const sampler_params_t *sp, int shift, int keep) {
    memset(c, 0, sizeof *c);
    c->m = m;
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

/* The mask of what the grammar lets the next sample take, into c->mask, and the step carries it
 * (without a grammar: nothing to do, no mask). 0, or <0 with c->err set: TERN_EINVAL when no
 * token of the vocabulary may come next (a dead end), TERN_ENOMEM. */
static int chat_constrain(chat_t *c) {
    c->st.allow = NULL;
    if (!c->grammar) return 0;
    int n = grammar_state_mask(c->gs, c->gvocab, c->mask);
    if (n <= 0) return err_set(c->err, sizeof c->err, n < 0 ? n : TERN_EINVAL, "%s", grammar_mask_why(n));
    c->st.allow = c->allow;
    return 0;
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

/* takes ownership of content (malloc'd) */
static int chat_push(chat_t *c, const char *role, char *content) {
    if (c->n_msgs == c->cap_msgs) {
        int cap = c->cap_msgs ? c->cap_msgs * 2 : 8;
        chat_msg_t *p = realloc(c->msgs, (size_t)cap * sizeof *p);
        if (!p) { free(content); return TERN_ENOMEM; }
        c->msgs = p;
        c->cap_msgs = cap;
    }
    c->msgs[c->n_msgs].role = role;
    c->msgs[c->n_msgs++].content = content;
    return 0;
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

/* The first n_msgs messages formatted and tokenized into *ids (grown as needed, capacity *cap).
 * Returns the token count or <0 with c->err set. */
static int chat_tokens(chat_t *c, int n_msgs, int32_t **ids, int *cap) {
    tern_model *m = c->m;
    int need = chat_apply(m->tok, c->msgs, n_msgs, NULL, 0);
    if (need < 0) return err_set(c->err, sizeof c->err, need, "%s", *chat_error() ? chat_error() : "the model's chat template cannot be applied");
    char *buf = malloc((size_t)need + 1);
    if (!buf) return err_set(c->err, sizeof c->err, TERN_ENOMEM, "out of memory");
    chat_apply(m->tok, c->msgs, n_msgs, buf, need + 1);
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
        int ns = sys ? chat_tokens(c, 1, &sys, &cap) : -1;
        for (k = 0; k < ns && k < n && sys[k] == ids[k];) k++;
        if (ns < 0) k = bos;
        free(sys);
    }
    if (k > c->m->n_ctx - 4) k = c->m->n_ctx - 4;
    c->keep = k > 0 ? k : 0;
    log_d("chat: a context shift keeps the first %d tokens", c->keep);
}

/* Formats the conversation and feeds what is not yet in the cache (everything when no_cache).
 * Returns the first sampled token or <0 (c->err set). */
static int chat_prompt(chat_t *c, int no_cache, int turn) {
    tern_model *m = c->m;
    int n = chat_tokens(c, c->n_msgs, &c->ids, &c->cap_ids), rc;
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
    sp.seed += (uint64_t)turn;
    rc = m->pl->ops->seq_start(m->pl, 0, &sp);
    if (rc < 0) return err_set(c->err, sizeof c->err, rc, "cannot start the sequence");
    if (c->grammar) {   /* each reply is a sentence of its own */
        grammar_state_destroy(&c->gs);
        if (!(c->gs = grammar_state_new(c->grammar))) return err_set(c->err, sizeof c->err, TERN_ENOMEM, "out of memory");
        if ((rc = chat_constrain(c)) < 0) return rc;
    }
    log_d("chat: %d tokens in the conversation, %d reused from the cache%s", n, k, drop ? " (after a shift)" : "");
    return chat_feed(c, c->ids + from, n - from);
}

/* Generates the reply after tok (the first sampled token), streaming it to stdout, and
 * appends it to the conversation. With a grammar the reply ends once the grammar is complete
 * (the last token is not fed: the next turn's prefix match feeds it), or with a note on stderr
 * where it comes to a dead end. 0, or <0 with c->err set. */
static int chat_reply(chat_t *c, int tok, int n_predict) {
    tern_model *m = c->m;
    detok_t dt;
    detok_init(&dt, m->tok, 0);   /* the reply is a message of its own: SPM's leading space goes */
    strbuf_t reply = {0};
    char piece[256];
    int rc = 0;
    for (int i = 0; n_predict < 0 || i < n_predict; i++) {
        if (g_interrupted || tokenizer_is_eog(m->tok, tok)) break;
        if (c->grammar && grammar_state_accept_token(c->gs, c->gvocab, tok) < 0) {   /* the mask let it through */
            rc = err_set(c->err, sizeof c->err, TERN_EINVAL, "the grammar refused token %d that its mask let through", tok);
            break;
        }
        int np = detok_feed(&dt, tok, piece, sizeof piece);
        if (np > 0) {
            fwrite(piece, 1, (size_t)np, stdout);
            fflush(stdout);
            if (strbuf_add(&reply, piece, (size_t)np) < 0) { rc = TERN_ENOMEM; break; }
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
    if (np > 0) {
        fwrite(piece, 1, (size_t)np, stdout);
        if (strbuf_add(&reply, piece, (size_t)np) < 0) rc = TERN_ENOMEM;
    }
    fputc('\n', stdout);
    fflush(stdout);
    if (rc == TERN_ENOMEM) err_set(c->err, sizeof c->err, rc, "out of memory");
    if (rc < 0) { free(reply.p); return rc; }
    if (!reply.p && strbuf_add(&reply, "", 0) < 0) return err_set(c->err, sizeof c->err, TERN_ENOMEM, "out of memory");
    return chat_push(c, "assistant", reply.p);
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

static int chat_loop(chat_t *c, int n_predict, int no_cache) {
    for (int turn = 0;; turn++) {
        fputs("> ", stdout);
        fflush(stdout);
        int intr;
        char *line = read_line(&intr);
        if (!line) { fputc('\n', stdout); return 0; }   /* EOF or Ctrl-C at the prompt */
        if (!strcmp(line, "/exit")) { free(line); return 0; }
        if (!line[0]) { free(line); turn--; continue; }
        int rc = chat_push(c, "user", line);
        if (rc < 0) return err_set(c->err, sizeof c->err, rc, "out of memory");
        int tok = chat_prompt(c, no_cache, turn);
        if (tok == TERN_ECANCEL) {   /* Ctrl-C during the prompt: drop the message, back to the prompt */
            fputc('\n', stdout);
            c->n_msgs--;
            free((char *)c->msgs[c->n_msgs].content);
            g_interrupted = 0;
            continue;
        }
        if (tok < 0) {
            /* a message that does not fit is dropped; interactively one may go on */
            c->n_msgs--;
            free((char *)c->msgs[c->n_msgs].content);
            if (!isatty(0)) return tok;
            fprintf(stderr, "tern chat: %s\n", c->err);
            continue;
        }
        if ((rc = chat_reply(c, tok, n_predict)) < 0) return rc;
        g_interrupted = 0;   /* a Ctrl-C that stopped the reply does not also quit */
    }
}

int cli_chat(int argc, char **argv) {
    log_set_role("C");
    cli_model_opts_t mo;
    cli_model_opts_default(&mo);
    const char *sys = NULL;
    int n_predict = -1, no_cache = 0;
    mo.s.n_keep = -1;   /* a shift keeps the system message */
    opt_t opts[96] = {
        {"-sys", "--system-prompt", OPT_STR, &sys, "TEXT", "system message at the start of the conversation", 0, 0},
        {"-n", "--n-predict", OPT_INT, &n_predict, "N", "most tokens per reply (-1: until the end of turn)", -1, 1 << 20},
        {NULL, "--no-cache", OPT_FLAG, &no_cache, NULL, "re-feed the whole conversation every turn", 0, 0},
    };
    int n_opts = cli_chat_template_opts(&mo, opts, cli_model_opts_table(&mo, opts, (int)(sizeof opts / sizeof opts[0]), 1), (int)(sizeof opts / sizeof opts[0]));
    for (int i = 0; i < n_opts; i++)
        if (opts[i].lng && !strcmp(opts[i].lng, "--keep"))
            opts[i].help = "with --context-shift: tokens kept at the start of the conversation after the BOS (-1: the system message)";
    char err[512], *pos[1];
    int npos, rc = opt_parse(opts, argc, argv, pos, 0, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern chat -m MODEL [-sys SYSTEM] [options]   (/exit, EOF or Ctrl-C at the prompt quit)", opts);
        return 0;
    }
    if (rc < 0 || (rc = cli_model_opts_check(&mo, err, sizeof err)) < 0) {
        fprintf(stderr, "tern chat: %s\n", err);
        return 1;
    }
    if (mo.p.lookup || mo.p.draft_model) {   /* chat drives the pipeline itself, not the scheduler that drafts */
        fprintf(stderr, "tern chat: --lookup and -md are for tern run and tern serve\n");
        return 1;
    }
    if (no_cache && mo.p.context_shift) {   /* a shifted cache is what it is: nothing to compare with */
        fprintf(stderr, "tern chat: use --no-cache or --context-shift, not both\n");
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
    rc = chat_init(&c, m, &sp, mo.p.context_shift, mo.s.n_keep);
    if (rc == 0 && sys) {
        char *s = strdup(sys);
        rc = s ? chat_push(&c, "system", s) : TERN_ENOMEM;
    }
    if (rc < 0) err_set(c.err, sizeof c.err, rc, "out of memory");
    else if (mo.s.grammar) rc = chat_grammar_init(&c, mo.s.grammar);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;   /* no SA_RESTART: Ctrl-C must interrupt read() at the prompt */
    sigaction(SIGINT, &sa, &old);
    pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
    if (rc == 0) {
        log_d("chat: template %s, context %d", chat_template_name(m->tok), m->n_ctx);
        rc = chat_loop(&c, n_predict, no_cache);
    }
    sigaction(SIGINT, &old, NULL);
    if (rc < 0) fprintf(stderr, "tern chat: %s\n", c.err);
    chat_free(&c);
    tern_model_free(&m);
    return rc < 0 ? 1 : 0;
}
