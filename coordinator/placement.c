/* placement: contiguous layer ranges over a pipeline of workers, by dynamic programming.
 * Pass 1 finds the least bottleneck T* = min over plans of max stage time; pass 2, among plans
 * whose every stage takes <= T*, the least sum of squared stage times (the most even one).
 * O(workers · layers²) each; ties go to the smallest boundary, so results are deterministic.
 * Checks that explain infeasible inputs run first, so errors name workers and layers. */
#include "coordinator/placement.h"
#include "core/err.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GIB(b) ((double)(b) / (1024.0 * 1024.0 * 1024.0))

/* one pipeline position: a worker and its pin (first = -1: none) */
typedef struct pos {
    int w, first, last;
    uint64_t budget;   /* 0 = unlimited */
    double bps;        /* bytes per second */
} pos_t;

typedef struct plan {
    const placement_in_t *in;
    const pos_t *pos;
    int np, L;
    uint64_t pm[PLACEMENT_MAX_LAYERS + 1];   /* prefix sums of layer_mem */
    uint64_t pr[PLACEMENT_MAX_LAYERS + 1];   /* prefix sums of layer_read */
    uint64_t head_read;
} plan_t;

static const char *wname(const placement_in_t *in, int w, char *buf, size_t cap) {
    if (in->workers[w].name) return in->workers[w].name;
    snprintf(buf, cap, "worker %d", w);
    return buf;
}

/* memory of layers [j, k) on one stage, with the head when it holds the last layer */
static uint64_t stage_mem(const plan_t *p, int j, int k) {
    if (k == j) return 0;
    return p->pm[k] - p->pm[j] + (k == p->L ? p->in->head_mem : 0);
}

/* seconds per token of layers [j, k) at position q, or -1 when they do not fit its memory */
static double stage_time(const plan_t *p, int q, int j, int k) {
    const pos_t *s = &p->pos[q];
    if (k == j) return 0;
    if (s->budget && stage_mem(p, j, k) > s->budget) return -1;
    return (double)(p->pr[k] - p->pr[j] + (k == p->L ? p->head_read : 0)) / s->bps;
}

/* [jlo, jhi] × [klo, khi] of the ranges position q may take */
static void stage_choices(const plan_t *p, int q, int *jlo, int *jhi, int *khi_max) {
    const pos_t *s = &p->pos[q];
    if (s->first >= 0) {
        *jlo = *jhi = s->first;
        *khi_max = s->last + 1;
    } else {
        *jlo = 0;
        *jhi = p->L;
        *khi_max = p->L;
    }
}

/* pass 1 (tmax < 0): f = least bottleneck; pass 2: f = least sum of squares with every stage
 * <= tmax; arg[q+1][k] = j of the best last stage. f and arg are (np+1) × (L+1). */
static void dp(const plan_t *p, double tmax, double *f, int *arg) {
    int L = p->L, W = L + 1;
    for (size_t i = 0; i < (size_t)(p->np + 1) * W; i++) f[i] = INFINITY, arg[i] = -1;
    f[0] = 0;
    for (int q = 0; q < p->np; q++) {
        const double *fq = f + (size_t)q * W;
        double *fn = f + (size_t)(q + 1) * W;
        int *an = arg + (size_t)(q + 1) * W;
        int jlo, jhi, kmax;
        stage_choices(p, q, &jlo, &jhi, &kmax);
        int pinned = p->pos[q].first >= 0;
        for (int j = jlo; j <= jhi; j++) {
            if (fq[j] == INFINITY) continue;
            for (int k = pinned ? kmax : j; k <= kmax; k++) {
                double t = stage_time(p, q, j, k);
                if (t < 0) break;   /* memory only grows with k */
                double v;
                if (tmax < 0) v = fq[j] > t ? fq[j] : t;
                else if (t > tmax * (1 + 1e-12)) break;   /* time only grows with k */
                else v = fq[j] + t * t;
                if (v < fn[k]) fn[k] = v, an[k] = j;
            }
        }
    }
}

/* writes the plan found by pass 2 into out */
static void emit(const plan_t *p, const int *arg, placement_out_t *out) {
    int L = p->L, W = L + 1, k = L, bounds[PLACEMENT_MAX_WORKERS + 1];
    memset(out, 0, sizeof *out);
    out->n_workers = p->in->n_workers;
    for (int i = 0; i < out->n_workers; i++) out->first[i] = out->last[i] = -1;
    bounds[p->np] = L;
    for (int q = p->np; q > 0; q--) {
        k = arg[(size_t)q * W + k];
        bounds[q - 1] = k;
    }
    TERN_ASSERT(bounds[0] == 0);
    for (int q = 0; q < p->np; q++) {
        int j = bounds[q], e = bounds[q + 1], w = p->pos[q].w;
        if (e == j) continue;
        out->first[w] = j;
        out->last[w] = e - 1;
        out->mem[w] = stage_mem(p, j, e);
        out->time_s[w] = stage_time(p, q, j, e);
        out->stage[out->n_stages++] = w;
        if (out->time_s[w] > out->bottleneck_s) out->bottleneck_s = out->time_s[w];
    }
}

/* ---- explaining infeasible inputs ---------------------------------------------------------- */

static int check_input(const placement_in_t *in, char *err, size_t errlen) {
    char nb[32];
    TERN_ASSERT(in);
    if (in->n_layers < 1 || in->n_layers > PLACEMENT_MAX_LAYERS)
        return err_set(err, errlen, TERN_EINVAL, "placement: %d layers (expected 1..%d)", in->n_layers, PLACEMENT_MAX_LAYERS);
    if (in->n_workers < 1 || in->n_workers > PLACEMENT_MAX_WORKERS || !in->workers)
        return err_set(err, errlen, TERN_EINVAL, "placement: %d workers (expected 1..%d)", in->n_workers, PLACEMENT_MAX_WORKERS);
    if (!in->layer_mem) return err_set(err, errlen, TERN_EINVAL, "placement: no layer sizes");
    if (in->head_mem > PLACEMENT_MAX_BYTES || in->head_read > PLACEMENT_MAX_BYTES)
        return err_set(err, errlen, TERN_EINVAL, "placement: head size out of range");
    for (int l = 0; l < in->n_layers; l++)
        if (in->layer_mem[l] > PLACEMENT_MAX_BYTES || (in->layer_read && in->layer_read[l] > PLACEMENT_MAX_BYTES))
            return err_set(err, errlen, TERN_EINVAL, "placement: layer %d size out of range", l);
    for (int i = 0; i < in->n_workers; i++) {
        const placement_worker_t *w = &in->workers[i];
        if (isnan(w->speed) || isinf(w->speed))
            return err_set(err, errlen, TERN_EINVAL, "placement: worker %s has speed %g", wname(in, i, nb, sizeof nb), w->speed);
        if (w->first >= 0 && w->standby)
            return err_set(err, errlen, TERN_EINVAL, "worker %s is a standby and cannot pin layers", wname(in, i, nb, sizeof nb));
        if (w->first >= 0 && w->last >= in->n_layers)
            return err_set(err, errlen, TERN_EINVAL, "worker %s pinned layers [%d,%d] but the model has %d layers (0..%d)",
                           wname(in, i, nb, sizeof nb), w->first, w->last, in->n_layers, in->n_layers - 1);
        if (w->first >= 0 && w->last < w->first)
            return err_set(err, errlen, TERN_EINVAL, "worker %s pinned layers [%d,%d]: first > last",
                           wname(in, i, nb, sizeof nb), w->first, w->last);
        if (w->first < -1) return err_set(err, errlen, TERN_EINVAL, "worker %s: bad pin %d", wname(in, i, nb, sizeof nb), w->first);
    }
    return 0;
}

/* pins in pipeline order must be disjoint and ascending */
static int check_pin_order(const plan_t *p, char *err, size_t errlen) {
    char a[32], b[32];
    int prev = -1;
    for (int q = 0; q < p->np; q++) {
        const pos_t *s = &p->pos[q];
        if (s->first < 0) continue;
        if (prev >= 0) {
            const pos_t *r = &p->pos[prev];
            if (s->first <= r->last && r->first <= s->last)
                return err_set(err, errlen, TERN_EINVAL, "worker %s pinned layers [%d,%d] overlap worker %s pinned [%d,%d]",
                               wname(p->in, s->w, a, sizeof a), s->first, s->last, wname(p->in, r->w, b, sizeof b), r->first, r->last);
            if (s->first < r->first)
                return err_set(err, errlen, TERN_EINVAL,
                               "worker %s pinned layers [%d,%d] comes after worker %s pinned [%d,%d] in the pipeline; "
                               "list workers in layer order", wname(p->in, s->w, a, sizeof a), s->first, s->last,
                               wname(p->in, r->w, b, sizeof b), r->first, r->last);
        }
        prev = q;
    }
    return 0;
}

/* total memory (when every budget is known) and each pin against its worker's budget */
static int check_memory(const plan_t *p, char *err, size_t errlen) {
    char a[32];
    uint64_t need = stage_mem(p, 0, p->L), offer = 0;
    int all_known = 1;
    for (int q = 0; q < p->np; q++) {
        if (!p->pos[q].budget) all_known = 0;
        offer += p->pos[q].budget;
    }
    if (all_known && need > offer)
        return err_set(err, errlen, TERN_ENOMEM, "model needs %.2f GiB for layers (with the lm head), workers offer %.2f GiB",
                       GIB(need), GIB(offer));
    for (int q = 0; q < p->np; q++) {
        const pos_t *s = &p->pos[q];
        if (s->first < 0 || !s->budget) continue;
        uint64_t m = stage_mem(p, s->first, s->last + 1);
        if (m > s->budget)
            return err_set(err, errlen, TERN_ENOMEM, "worker %s pinned layers [%d,%d] exceed its memory: they need %.2f GiB%s, it has %.2f GiB",
                           wname(p->in, s->w, a, sizeof a), s->first, s->last, GIB(m),
                           s->last + 1 == p->L ? " with the lm head" : "", GIB(s->budget));
    }
    return 0;
}

/* every run of unpinned layers needs unpinned workers between the pins around it */
static int check_gaps(const plan_t *p, char *err, size_t errlen) {
    char a[32], b[32];
    int next = 0, prev_q = -1;   /* next unassigned layer; position of the previous pin */
    for (int q = 0; q <= p->np; q++) {
        int at = q == p->np ? p->L : p->pos[q].first;   /* layer where this pin (or the end) starts */
        if (q < p->np && at < 0) continue;
        if (at > next) {
            int helpers = 0;
            uint64_t offer = 0;
            int known = 1;
            for (int r = prev_q + 1; r < q; r++) {
                helpers++;
                offer += p->pos[r].budget;
                known &= p->pos[r].budget != 0;
            }
            if (!helpers) {
                if (prev_q < 0)
                    return err_set(err, errlen, TERN_EINVAL, "layers [%d,%d] are not assigned: no unpinned worker before %s in the file",
                                   next, at - 1, wname(p->in, p->pos[q].w, a, sizeof a));
                if (q == p->np)
                    return err_set(err, errlen, TERN_EINVAL, "layers [%d,%d] are not assigned: no unpinned worker after %s in the file",
                                   next, at - 1, wname(p->in, p->pos[prev_q].w, a, sizeof a));
                return err_set(err, errlen, TERN_EINVAL, "layers [%d,%d] are not assigned: no unpinned worker between %s and %s in the file",
                               next, at - 1, wname(p->in, p->pos[prev_q].w, a, sizeof a), wname(p->in, p->pos[q].w, b, sizeof b));
            }
            uint64_t need = stage_mem(p, next, at);
            if (known && need > offer && !(next == 0 && at == p->L))
                return err_set(err, errlen, TERN_ENOMEM, "layers [%d,%d] need %.2f GiB, the %d unpinned worker(s) around them offer %.2f GiB",
                               next, at - 1, GIB(need), helpers, GIB(offer));
        }
        if (q < p->np) next = p->pos[q].last + 1, prev_q = q;
    }
    return 0;
}

/* ---- planning ---------------------------------------------------------------------------------- */

/* plans over positions pos[0..np) (np >= 1) */
static int plan_positions(const placement_in_t *in, pos_t *pos, int np, placement_out_t *out, char *err, size_t errlen) {
    plan_t *p = calloc(1, sizeof *p);
    if (!p) return err_set(err, errlen, TERN_ENOMEM, "placement: out of memory");
    p->in = in;
    p->pos = pos;
    p->np = np;
    p->L = in->n_layers;
    p->head_read = in->head_read ? in->head_read : in->head_mem;
    for (int l = 0; l < p->L; l++) {
        p->pm[l + 1] = p->pm[l] + in->layer_mem[l];
        p->pr[l + 1] = p->pr[l] + (in->layer_read ? in->layer_read[l] : in->layer_mem[l]);
    }
    int rc = check_pin_order(p, err, errlen);
    if (!rc) rc = check_memory(p, err, errlen);
    if (!rc) rc = check_gaps(p, err, errlen);
    size_t cells = (size_t)(np + 1) * (p->L + 1);
    double *f = rc ? NULL : malloc(cells * sizeof *f);
    int *arg = rc ? NULL : malloc(cells * sizeof *arg);
    if (!rc && (!f || !arg)) rc = err_set(err, errlen, TERN_ENOMEM, "placement: out of memory");
    if (!rc) {
        dp(p, -1, f, arg);
        double tstar = f[cells - 1];
        if (tstar == INFINITY) {
            uint64_t largest = 0, budget = 0;
            for (int l = 0; l < p->L; l++) largest = in->layer_mem[l] > largest ? in->layer_mem[l] : largest;
            for (int q = 0; q < np; q++) budget = pos[q].budget > budget ? pos[q].budget : budget;
            rc = err_set(err, errlen, TERN_ENOMEM,
                         "no contiguous split of the %d layers fits the workers' memory (model needs %.2f GiB, "
                         "largest layer %.2f GiB, lm head %.2f GiB, largest worker budget %.2f GiB)", p->L,
                         GIB(stage_mem(p, 0, p->L)), GIB(largest), GIB(in->head_mem), GIB(budget));
        } else {
            dp(p, tstar, f, arg);
            TERN_ASSERT(f[cells - 1] < INFINITY);
            emit(p, arg, out);
        }
    }
    free(f);
    free(arg);
    free(p);
    return rc;
}

/* fills pos with worker i's budget and speed (pin from the worker) */
static void fill_pos(const placement_in_t *in, double slowest, int i, pos_t *s) {
    const placement_worker_t *w = &in->workers[i];
    s->w = i;
    s->first = w->first >= 0 ? w->first : -1;
    s->last = w->first >= 0 ? w->last : -1;
    s->budget = w->memory;
    s->bps = (w->speed > 0 ? w->speed : slowest) * 1e9;
}

static double slowest_known(const placement_in_t *in) {
    double s = 0;
    for (int i = 0; i < in->n_workers; i++)
        if (in->workers[i].speed > 0 && (s == 0 || in->workers[i].speed < s)) s = in->workers[i].speed;
    return s > 0 ? s : 1.0;
}

/* positions for in, skipping `skip` and putting `subst` (unpinned) at skip's place */
static int build_positions(const placement_in_t *in, int skip, int subst, pos_t *pos) {
    double slow = slowest_known(in);
    int np = 0;
    for (int i = 0; i < in->n_workers; i++) {
        const placement_worker_t *w = &in->workers[i];
        if (i == skip) {
            if (subst >= 0) {
                fill_pos(in, slow, subst, &pos[np]);
                pos[np].first = pos[np].last = -1;
                np++;
            }
            continue;
        }
        if (w->standby || w->gone) continue;
        fill_pos(in, slow, i, &pos[np++]);
    }
    return np;
}

int placement_plan(const placement_in_t *in, placement_out_t *out, char *err, size_t errlen) {
    pos_t pos[PLACEMENT_MAX_WORKERS];
    int rc = check_input(in, err, errlen);
    if (rc) return rc;
    int np = build_positions(in, -1, -1, pos);
    if (!np) return err_set(err, errlen, TERN_EINVAL, "placement: no active worker (all are standby or gone)");
    return plan_positions(in, pos, np, out, err, errlen);
}

int placement_replan_without(const placement_in_t *in, int lost, int use_standby, placement_out_t *out, int *promoted,
                             char *err, size_t errlen) {
    pos_t pos[PLACEMENT_MAX_WORKERS];
    if (promoted) *promoted = -1;
    int rc = check_input(in, err, errlen);
    if (rc) return rc;
    if (lost < 0 || lost >= in->n_workers) return err_set(err, errlen, TERN_EINVAL, "placement: no worker %d", lost);
    int subst = -1;
    if (use_standby && !in->workers[lost].standby)
        for (int i = 0; i < in->n_workers && subst < 0; i++)
            if (i != lost && in->workers[i].standby && !in->workers[i].gone) subst = i;
    int np = build_positions(in, lost, subst, pos);
    if (!np) return err_set(err, errlen, TERN_EINVAL, "placement: no worker left to hold the layers");
    rc = plan_positions(in, pos, np, out, err, errlen);
    if (!rc && promoted) *promoted = subst;
    return rc;
}

void placement_format(const placement_in_t *in, const placement_out_t *out, char *buf, size_t cap) {
    char nb[32];
    size_t o = 0;
    if (!cap) return;
    buf[0] = 0;
    for (int s = 0; s < out->n_stages && o < cap; s++) {
        int w = out->stage[s];
        int n = snprintf(buf + o, cap - o, "%s%s [%d,%d] %.2f GiB %.1f ms", s ? " | " : "", wname(in, w, nb, sizeof nb),
                         out->first[w], out->last[w], GIB(out->mem[w]), out->time_s[w] * 1e3);
        if (n < 0) break;
        o += (size_t)n;
    }
}
