/* cli_mcscore: runs the tasks of `tern perplexity --hellaswag | --winogrande | --multiple-choice`
 * (mcscore.h) on the engine's pipeline, one process or a cluster alike: each choice is one
 * sequence in its own slot, fed from position 0 with the tokens to score as teacher-forced
 * targets, so the last stage sends back log p(token) only. The choices of a task, and the tasks
 * that fit beside them (slots and -b allowing), go in one step; several steps are kept in flight
 * so a pipeline of stages overlaps them. A task's common prefix (the tokens before the first
 * scored one, shared by all its choices) is fed once, in its first choice's slot, and copied into
 * the others' (step_t.copy), as llama.cpp evaluates it once; the scores are the same either way
 * (a position's keys and values depend only on the tokens up to it). */
#include "coordinator/cli_common.h"
#include "coordinator/engine.h"
#include "coordinator/mcscore.h"
#include "coordinator/tokenizer.h"
#include "coordinator/toks.h"
#include "core/alloc.h"
#include "core/err.h"
#include "core/log.h"
#include "core/progress.h"
#include "worker/stage.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MCS_INFLIGHT 8
#define MCS_COPY_MIN 4   /* shorter common prefixes are fed again (not worth a step boundary) */

typedef struct mcs_seq {   /* one choice, tokenized */
    int32_t *tok;
    int len, lo, hi;       /* tokens; scored tokens [lo, hi) (mc_ranges) */
} mcs_seq_t;

typedef struct mcs_step {
    step_t s;
    int32_t *tgt;          /* (n_batch,) s.target's buffer */
    step_copy_t *cp;       /* (n_slots,) s.copy's buffer */
    int n_tgt;             /* targets set: the log-probs that must come back */
} mcs_step_t;

typedef struct mcs {
    tern_model *m;
    mc_set_t *set;
    mcs_seq_t *seq;        /* (n_seq_total,) every task's choices, task after task */
    int *first;            /* (set->n + 1,) task i's choices are seq[first[i] .. first[i + 1]) */
    int *share;            /* (set->n,) task i's choices after the first copy their first share[i]
                            * positions from its slot (0: each is fed whole) */
    int n_slots, n_batch, kv_copy;
    /* producer: the next token to feed (task, choice, position) and the task's first slot */
    int pt, pc, pi, slot0;
    /* consumer: where the next returned log-prob belongs, and the running sums */
    int ct, cc, ci, n_done, n_correct, n_answers;
    double *sum;           /* (MC_MAX_CHOICES,) the current task's log-prob sums */
} mcs_t;

/* text's tokens (BOS first when the model adds one) into a malloc'd *out; count or <0 */
static int mcs_tokenize(const tokenizer_t *tok, const char *text, int32_t **out) {
    size_t len = strlen(text);
    if (len > (1u << 24)) return TERN_EINVAL;
    int cap = (int)len + 16;
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *ids = malloc((size_t)cap * sizeof *ids);
        if (!ids) return TERN_ENOMEM;
        int n = tokenizer_encode(tok, text, len, tokenizer_add_bos(tok), 0, ids, cap);
        if (n >= 0 && n <= cap) { *out = ids; return n; }
        free(ids);
        if (n < 0) return n;
        cap = n;
    }
    return TERN_EINVAL;
}

/* "a" "b" "c" joined into a malloc'd string (c may be NULL) */
static char *cat3(const char *a, const char *b, const char *c) {
    size_t na = strlen(a), nb = strlen(b), nc = c ? strlen(c) : 0;
    char *s = malloc(na + nb + nc + 1);
    if (s) {
        memcpy(s, a, na);
        memcpy(s + na, b, nb);
        memcpy(s + na + nb, c ? c : "", nc + 1);
    }
    return s;
}

/* how a task is named in errors: its line (text files) or byte offset */
static const char *mcs_where(const mc_set_t *set, const mc_task_t *t, char *buf, size_t n) {
    snprintf(buf, n, set->kind == MC_MULTI ? "byte %ld" : "line %ld", t->where);
    return buf;
}

/* Tokenizes task i's choices into q[0..n_choice) (tokens malloc'd, the caller frees them, also
 * on failure) as llama.cpp builds them (hellaswag and multi: context + " " + choice; winogrande:
 * the sentence with the option in place of '_') and sets the scored ranges. 0 or <0 with err. */
static int mcs_tokenize_task(const tokenizer_t *tok, const mc_set_t *set, int i, mcs_seq_t *q, char *err,
                             size_t errlen) {
    const mc_task_t *t = &set->t[i];
    const int32_t *toks[MC_MAX_CHOICES];
    int len[MC_MAX_CHOICES], base[2] = {0, 0}, lo[MC_MAX_CHOICES], hi[MC_MAX_CHOICES];
    char w[48];
    for (int s = 0; s < t->n_choice; s++) {
        int wg = set->kind == MC_WINOGRANDE;
        char *text = wg ? cat3(t->ctx, t->choice[s], t->ctx2) : cat3(t->ctx, " ", t->choice[s]);
        int n = text ? mcs_tokenize(tok, text, &q[s].tok) : TERN_ENOMEM;
        free(text);
        if (n >= 0 && wg) {   /* llama.cpp's n_base: the sentence up to and with the option */
            int32_t *b = NULL;
            char *head = cat3(t->ctx, t->choice[s], NULL);
            base[s] = head ? mcs_tokenize(tok, head, &b) : TERN_ENOMEM;
            free(head);
            free(b);
            if (base[s] < 0) n = base[s];
        }
        if (n < 0) return err_set(err, errlen, n, "task %d (%s): cannot tokenize it", i + 1, mcs_where(set, t, w, sizeof w));
        q[s].len = n;
        toks[s] = q[s].tok;
        len[s] = n;
    }
    if (mc_ranges(set->kind, t->n_choice, toks, len, base, lo, hi) < 0)
        return err_set(err, errlen, TERN_EINVAL, "task %d (%s): a choice has fewer than 2 tokens, nothing to score",
                       i + 1, mcs_where(set, t, w, sizeof w));
    for (int s = 0; s < t->n_choice; s++) q[s].lo = lo[s], q[s].hi = hi[s];
    return 0;
}

/* the context positions choices q[0..n) need: each is fed but its last token (a target only) */
static int mcs_need(const mcs_seq_t *q, int n) {
    int need = 0;
    for (int s = 0; s < n; s++) need = q[s].hi - 1 > need ? q[s].hi - 1 : need;
    return need;
}

/* the error of a task longer than the context n_ctx (the user's -c) */
static int mcs_too_long(const mc_set_t *set, int i, int need, int n_ctx, char *err, size_t errlen) {
    char w[48];
    return err_set(err, errlen, TERN_EINVAL,
                   "task %d (%s): a choice needs %d positions, the context is %d (raise -c, or leave it out: it then fits "
                   "the longest task)", i + 1, mcs_where(set, &set->t[i], w, sizeof w), need, n_ctx);
}

int mcscore_ctx_need(const tokenizer_t *tok, const mc_set_t *set, int n_ctx, char *err, size_t errlen) {
    mcs_seq_t q[MC_MAX_CHOICES];
    int most = 0, rc = 0;
    for (int i = 0; rc == 0 && i < set->n; i++) {
        int n = set->t[i].n_choice;
        memset(q, 0, (size_t)n * sizeof *q);
        rc = mcs_tokenize_task(tok, set, i, q, err, errlen);
        int need = rc == 0 ? mcs_need(q, n) : 0;
        for (int s = 0; s < n; s++) free(q[s].tok);
        if (rc == 0 && n_ctx > 0 && need > n_ctx) rc = mcs_too_long(set, i, need, n_ctx, err, errlen);
        if (need > most) most = need;
    }
    return rc < 0 ? rc : most;
}

/* Task i's choices tokenized into their sequences (mcs_tokenize_task), checked against the
 * context and the slots, and the common prefix a KV copy may carry. */
static int mcs_prepare_task(mcs_t *c, int i, char *err, size_t errlen) {
    const mc_task_t *t = &c->set->t[i];
    mcs_seq_t *q = c->seq + c->first[i];
    char w[48];
    int rc = mcs_tokenize_task(c->m->tok, c->set, i, q, err, errlen);
    if (rc < 0) return rc;
    int need = mcs_need(q, t->n_choice);
    if (need > c->m->n_ctx) return mcs_too_long(c->set, i, need, c->m->n_ctx, err, errlen);
    if (t->n_choice > c->n_slots)
        return err_set(err, errlen, TERN_EINVAL, "task %d (%s): %d choices, but %d sequence slots (raise -np)", i + 1,
                       mcs_where(c->set, t, w, sizeof w), t->n_choice, c->n_slots);
    /* the common prefix a copy may carry: positions before every choice's first scored token's
     * (those are fed in each slot: their log-probs come from there) */
    int share = c->kv_copy ? q[0].lo - 1 : 0;
    for (int s = 1; s < t->n_choice && share > 0; s++) {
        if (q[s].lo - 1 < share) share = q[s].lo - 1;
        share = toks_common(q[s].tok, q[0].tok, share);
    }
    c->share[i] = share >= MCS_COPY_MIN ? share : 0;
    return 0;
}

/* Fills step p with the next tokens (at most n_batch): each choice's tokens [0, hi - 1), the ones
 * before a scored token with it as their target — but for a choice after the first of a task with
 * a common prefix, [share, hi - 1) after a copy of the first choice's slot's first share positions
 * (in the step after the one that fed them: a step's copies go before its tokens). A task starts
 * in the same step only while its choices' slots are free in it; 0 tokens when all are fed. */
static int mcs_fill(mcs_t *c, mcs_step_t *p, char *err, size_t errlen) {
    step_t *s = &p->s;
    int k = 0, fed_share = 0;   /* this step holds some of the current task's shared prefix */
    p->n_tgt = 0;
    s->n_copy = 0;
    while (k < c->n_batch && c->pt < c->set->n) {
        const int nch = c->set->t[c->pt].n_choice, share = c->share[c->pt];
        if (c->pc == 0 && c->pi == 0 && c->slot0 + nch > c->n_slots) {
            if (k > 0) break;   /* its slots would collide with this step's tasks: the next step */
            c->slot0 = 0;
        }
        if (c->pc > 0 && c->pi == 0 && share > 0) {
            if (fed_share) break;   /* the prefix is in this step: its copies go in the next */
            p->cp[s->n_copy++] = (step_copy_t){c->slot0, c->slot0 + c->pc, share};
            c->pi = share;
        }
        if (c->pc == 0 && c->pi < share) fed_share = 1;
        const mcs_seq_t *q = &c->seq[c->first[c->pt] + c->pc];
        s->tokens[k] = q->tok[c->pi];
        s->seq[k] = c->slot0 + c->pc;
        s->pos[k] = c->pi;
        s->sample[k] = 0;
        int scored = c->pi + 1 >= q->lo && c->pi + 1 < q->hi;
        p->tgt[k] = scored ? q->tok[c->pi + 1] : -1;
        p->n_tgt += scored;
        k++;
        if (++c->pi == q->hi - 1) {
            c->pi = 0;
            if (++c->pc == nch) c->pc = 0, c->slot0 += nch, c->pt++;
        }
    }
    s->n = k;
    s->target = p->tgt;
    s->copy = s->n_copy ? p->cp : NULL;
    if (k && embed_lookup(&c->m->emb, s->tokens, k, s->h) < 0)
        return err_set(err, errlen, TERN_EINVAL, "token id outside the vocabulary");
    return k;
}

static void mcs_print_head(int kind) {
    if (kind == MC_HELLASWAG) printf("\ntask\tacc_norm\t95%% confidence interval\n");
    else if (kind == MC_MULTI) printf("\ntask\tacc_norm\n");
    else printf("\n");   /* winogrande: llama.cpp prints no head */
}

/* the current task's sums are complete: its scores, the pick, llama.cpp's running line */
static void mcs_task_done(mcs_t *c) {
    const mc_task_t *t = &c->set->t[c->ct];
    double score[MC_MAX_CHOICES];
    for (int s = 0; s < t->n_choice; s++) {
        const mcs_seq_t *q = &c->seq[c->first[c->ct] + s];
        score[s] = c->sum[s] / (q->hi - q->lo);
    }
    int pick = mc_pick(c->set->kind, score, t->n_choice), right = mc_correct(t, pick);
    c->n_done++, c->n_correct += right, c->n_answers += t->n_choice;
    if (log_get_level() >= LOG_D) {
        char line[1024];
        int o = snprintf(line, sizeof line, "mcscore: task %d (%s %ld): pick %d %s, scores", c->ct + 1,
                         c->set->kind == MC_MULTI ? "byte" : "line", t->where, pick, right ? "right" : "wrong");
        for (int s = 0; s < t->n_choice && o < (int)sizeof line - 32; s++)
            o += snprintf(line + o, sizeof line - o, " %.9f", score[s]);
        log_d("%s", line);
    }
    double f = (double)c->n_correct / c->n_done;
    if (c->set->kind == MC_HELLASWAG) {
        double lo, hi;
        mc_wilson(c->n_correct, c->n_done, &lo, &hi);
        printf("%d\t%3.8lf%%\t[%3.4lf%%, %3.4lf%%]\n", c->n_done, f * 100.0, lo * 100.0, hi * 100.0);
    } else if (c->set->kind == MC_WINOGRANDE) {
        printf("%d\t%.4lf\t%10.6f  %10.6f  %d  %d\n", c->n_done, 100.0 * f, score[0], score[1], pick + 1, t->gold + 1);
    } else {
        printf("%d\t%.8lf\n", c->n_done, 100.0 * f);
    }
    fflush(stdout);
}

/* a finished step's log-probs, in token order: into the current task's sums */
static int mcs_take(mcs_t *c, const mcs_step_t *p, char *err, size_t errlen) {
    if (p->s.n_scored != p->n_tgt)
        return err_set(err, errlen, TERN_EPROTO, "the pipeline returned %d log-probs, expected %d", p->s.n_scored, p->n_tgt);
    for (int i = 0; i < p->s.n_scored; i++) {
        const mc_task_t *t = &c->set->t[c->ct];
        const mcs_seq_t *q = &c->seq[c->first[c->ct] + c->cc];
        if (c->cc == 0 && c->ci == 0) memset(c->sum, 0, (size_t)t->n_choice * sizeof *c->sum);
        c->sum[c->cc] += p->s.out_target_lp[i];
        if (++c->ci < q->hi - q->lo) continue;
        c->ci = 0;
        if (++c->cc < t->n_choice) continue;
        c->cc = 0;
        mcs_task_done(c);
        c->ct++;
    }
    return 0;
}

static void mcs_final(const mcs_t *c) {
    int n = c->n_done;
    double p = (double)c->n_correct / n;
    printf("\n");
    if (c->set->kind == MC_HELLASWAG) {
        double lo, hi;
        mc_wilson(c->n_correct, n, &lo, &hi);
        printf("Final HellaSwag acc_norm (%d tasks): %.4lf%% [%.4lf%%, %.4lf%%]\n", n, 100 * p, 100 * lo, 100 * hi);
        return;
    }
    double sigma = n > 1 ? 100 * sqrt(p * (1 - p) / (n - 1)) : 0;
    if (c->set->kind == MC_WINOGRANDE) {
        printf("Final Winogrande score(%d tasks): %.4lf +/- %.4lf\n", n, 100 * p, sigma);
        return;
    }
    printf("Final result: %.4f +/- %.4f\n", 100 * p, sigma);
    double r = (double)n / c->n_answers;
    printf("Random chance: %.4f +/- %.4f\n", 100 * r, n > 1 ? 100 * sqrt(r * (1 - r) / (n - 1)) : 0);
}

static void mcs_steps_free(mcs_step_t *ps, int n) {
    for (int i = 0; i < n; i++) {
        cli_score_step_free(&ps[i].s);
        free(ps[i].tgt);
        free(ps[i].cp);
    }
}

static int mcs_steps_alloc(mcs_step_t *ps, int n, int nb, int n_slots, int n_embd) {
    int ok = 1;
    memset(ps, 0, (size_t)n * sizeof *ps);
    for (int i = 0; i < n; i++) {
        ps[i].tgt = malloc((size_t)nb * sizeof(int32_t));
        ps[i].cp = malloc((size_t)n_slots * sizeof(step_copy_t));
        ok = cli_score_step_alloc(&ps[i].s, nb, STAGE_SCORE_ROWS, n_embd) == 0 && ok && ps[i].tgt && ps[i].cp;
    }
    return ok ? 0 : TERN_ENOMEM;
}

/* the pipeline loop: fill and submit while steps are free, take the oldest back */
static int mcs_loop(mcs_t *c, char *err, size_t errlen) {
    pipeline_t *pl = c->m->pl;
    int inflight = pl->max_inflight < 1 ? 1 : pl->max_inflight > MCS_INFLIGHT ? MCS_INFLIGHT : pl->max_inflight;
    mcs_step_t ps[MCS_INFLIGHT];
    int rc = 0, head = 0, queued = 0;
    uint64_t id = 1;
    if (mcs_steps_alloc(ps, inflight, c->n_batch, c->n_slots, c->m->hp.n_embd) < 0)
        rc = err_set(err, errlen, TERN_ENOMEM, "out of memory for %d steps of %d tokens", inflight, c->n_batch);
    while (rc == 0) {
        while (rc == 0 && queued < inflight && c->pt < c->set->n) {
            mcs_step_t *p = &ps[(head + queued) % inflight];
            if ((rc = mcs_fill(c, p, err, errlen)) <= 0) break;
            rc = 0;
            p->s.id = id++;
            if ((rc = pl->ops->submit(pl, &p->s)) < 0) {
                rc = err_set(err, errlen, rc, "%s", p->s.err[0] ? p->s.err : "the pipeline refused a step");
                break;
            }
            queued++;
        }
        if (rc < 0 || !queued) break;
        mcs_step_t *p = &ps[head];
        step_t *got = pl->ops->wait(pl, -1);
        if (got != &p->s) { rc = err_set(err, errlen, TERN_EIO, "the pipeline lost a step"); break; }
        head = (head + 1) % inflight, queued--;
        if (got->rc < 0) { rc = err_set(err, errlen, got->rc, "%s", got->err); break; }
        rc = mcs_take(c, p, err, errlen);
    }
    while (queued-- > 0) pl->ops->wait(pl, -1);   /* after an error: collect what is still out */
    mcs_steps_free(ps, inflight);
    if (rc == 0 && c->ct != c->set->n) rc = err_set(err, errlen, TERN_EPROTO, "scored %d of %d tasks", c->ct, c->set->n);
    return rc;
}

int mcscore_run(tern_model *m, mc_set_t *set, int n_batch, int n_slots, int kv_copy, char *err, size_t errlen) {
    static const char *names[] = {"HellaSwag", "Winogrande", "multiple-choice"};
    mcs_t c = {.m = m, .set = set, .n_batch = n_batch, .n_slots = n_slots > 0 ? n_slots : 1, .kv_copy = kv_copy};
    int rc = 0, total = 0;
    if (!(c.first = malloc(((size_t)set->n + 1) * sizeof *c.first)) ||
        !(c.sum = calloc(MC_MAX_CHOICES, sizeof *c.sum)) || !(c.share = calloc((size_t)set->n + 1, sizeof *c.share)))
        rc = err_set(err, errlen, TERN_ENOMEM, "out of memory");
    for (int i = 0; rc == 0 && i <= set->n; i++) {
        c.first[i] = total;
        if (i < set->n) total += set->t[i].n_choice;
    }
    if (rc == 0 && !(c.seq = calloc((size_t)total, sizeof *c.seq))) rc = err_set(err, errlen, TERN_ENOMEM, "out of memory");
    const char *how = set->kind == MC_HELLASWAG ? " (llama.cpp's random order)"
                      : set->n < set->n_file   ? " (llama.cpp's random pick)"
                                               : "";
    fprintf(stderr, "%s: %d of the file's %d tasks%s, %d sequence slots, batch %d\n", names[set->kind], set->n,
            set->n_file, how, c.n_slots, n_batch);
    for (int i = 0; rc == 0 && i < set->n; i++) rc = mcs_prepare_task(&c, i, err, errlen);
    if (rc == 0) {
        mcs_print_head(set->kind);
        double t0 = time_now();
        rc = mcs_loop(&c, err, errlen);
        if (rc == 0) {
            mcs_final(&c);
            long shared = 0;
            for (int i = 0; i < set->n; i++) shared += (long)c.share[i] * (set->t[i].n_choice - 1);
            log_d("mcscore: %d tasks in %.2f s; %ld prompt positions copied, not fed", c.n_done, time_now() - t0,
                  shared);
        }
    }
    for (int i = 0; c.seq && i < total; i++) free(c.seq[i].tok);
    free(c.seq);
    free(c.first);
    free(c.share);
    free(c.sum);
    return rc;
}
