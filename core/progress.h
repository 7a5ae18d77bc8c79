/* progress: a progress line on stderr for long loads and writes. On a terminal it redraws one
 * line (bytes done, total, rate, ETA) at most 10 times a second; otherwise it logs one line
 * per 10% so logs stay readable. Not thread-safe: one owner updates it. */
#ifndef TERN_PROGRESS_H
#define TERN_PROGRESS_H
#include <stdint.h>

typedef struct progress {
    const char *what;        /* "loading model", "writing" */
    uint64_t total, done;
    double t0, last_draw;
    int tty, last_decile, active;
} progress_t;

void progress_init(progress_t *p, const char *what, uint64_t total);
void progress_update(progress_t *p, uint64_t done);
void progress_add(progress_t *p, uint64_t delta);
void progress_done(progress_t *p);   /* final line (tty: newline) */
double time_now(void);               /* monotonic seconds */

#endif
