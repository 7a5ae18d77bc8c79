/* progress: see progress.h. TERN_PROGRESS=0 silences it, =1 forces the tty form. */
#include "core/progress.h"
#include "core/log.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

double time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void human(char *buf, size_t cap, double b) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) { b /= 1024; i++; }
    snprintf(buf, cap, "%.1f %s", b, u[i]);
}

void progress_init(progress_t *p, const char *what, uint64_t total) {
    const char *env = getenv("TERN_PROGRESS");
    p->what = what;
    p->total = total ? total : 1;
    p->done = 0;
    p->t0 = time_now();
    p->last_draw = 0;
    p->tty = env ? atoi(env) == 1 : isatty(2);
    p->active = !(env && atoi(env) == 0);
    p->last_decile = 0;
}

static void draw(progress_t *p, int final) {
    double t = time_now(), dt = t - p->t0;
    char d[32], tot[32], rate[32];
    human(d, sizeof d, (double)p->done);
    human(tot, sizeof tot, (double)p->total);
    human(rate, sizeof rate, dt > 0 ? (double)p->done / dt : 0);
    double frac = (double)p->done / (double)p->total;
    if (p->tty) {
        double eta = frac > 0 ? dt / frac - dt : 0;
        fprintf(stderr, "\r%s: %5.1f%% %s / %s  %s/s  eta %.0fs   %s", p->what, frac * 100, d, tot, rate,
                final ? 0 : eta, final ? "\n" : "");
        fflush(stderr);
    } else {
        log_i("%s: %.0f%% %s / %s (%s/s)", p->what, frac * 100, d, tot, rate);
    }
}

void progress_update(progress_t *p, uint64_t done) {
    if (!p->active) return;
    p->done = done > p->total ? p->total : done;
    if (p->tty) {
        double t = time_now();
        if (t - p->last_draw >= 0.1) { p->last_draw = t; draw(p, 0); }
    } else {
        int dec = (int)(p->done * 10 / p->total);
        if (dec > p->last_decile && dec < 10) { p->last_decile = dec; draw(p, 0); }
    }
}

void progress_add(progress_t *p, uint64_t delta) { progress_update(p, p->done + delta); }

void progress_done(progress_t *p) {
    if (!p->active) return;
    p->done = p->total;
    draw(p, 1);
    p->active = 0;
}
