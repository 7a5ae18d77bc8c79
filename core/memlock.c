/* memlock: see memlock.h. Ranges are merged before locking so a page shared by two buffers is
 * locked and counted once, and the count equals what the kernel reports (VmLck). */
#include "core/memlock.h"
#include "core/err.h"
#include "core/log.h"
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

static atomic_flag g_warned = ATOMIC_FLAG_INIT;

void memlock_init(memlock_t *m) { memset(m, 0, sizeof *m); }

int memlock_add(memlock_t *m, const void *p, size_t n) {
    if (!p || !n) return 0;
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 64;
        memlock_range_t *r = realloc(m->r, (size_t)cap * sizeof *r);
        if (!r) return TERN_ENOMEM;
        m->r = r, m->cap = cap;
    }
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), a = (size_t)p;
    m->r[m->n++] = (memlock_range_t){a / pg * pg, (a + n + pg - 1) / pg * pg};
    return 0;
}

static int cmp_range(const void *x, const void *y) {
    const memlock_range_t *a = x, *b = y;
    return a->a < b->a ? -1 : a->a > b->a;
}

/* sorts and merges overlapping or touching ranges in place */
static void merge(memlock_t *m) {
    if (!m->n) return;
    qsort(m->r, (size_t)m->n, sizeof *m->r, cmp_range);
    int k = 0;
    for (int i = 1; i < m->n; i++) {
        if (m->r[i].a <= m->r[k].b) {
            if (m->r[i].b > m->r[k].b) m->r[k].b = m->r[i].b;
        } else {
            m->r[++k] = m->r[i];
        }
    }
    m->n = k + 1;
}

const char *memlock_size(char *buf, size_t cap, size_t bytes) {
    if (bytes >= (1u << 30)) snprintf(buf, cap, "%.2f GiB", (double)bytes / (1u << 30));
    else snprintf(buf, cap, "%.1f MiB", (double)bytes / (1u << 20));
    return buf;
}

static void warn_once(const memlock_t *m, const char *who, int e) {
    if (atomic_flag_test_and_set(&g_warned)) return;
    struct rlimit rl;
    char lim[48] = "unknown", a[32], b[32];
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
        if (rl.rlim_cur == RLIM_INFINITY) snprintf(lim, sizeof lim, "unlimited");
        else memlock_size(lim, sizeof lim, (size_t)rl.rlim_cur);
    }
    log_w("--mlock: could not lock %s of %s (%s): %s (RLIMIT_MEMLOCK %s); raise the limit: `ulimit -l unlimited`, "
          "LimitMEMLOCK=infinity (systemd), --ulimit memlock=-1 (docker); running with those pages unlocked",
          memlock_size(a, sizeof a, m->failed), memlock_size(b, sizeof b, m->failed + m->locked), who ? who : "weights",
          strerror(e), lim);
}

size_t memlock_apply(memlock_t *m, const char *who) {
    merge(m);
    int e = 0, k = 0;
    for (int i = 0; i < m->n; i++) {
        size_t n = m->r[i].b - m->r[i].a;
        if (mlock((void *)m->r[i].a, n) == 0) {
            m->locked += n;
            m->r[k++] = m->r[i];   /* keep only what is locked: memlock_free unlocks exactly that */
        } else {
            m->failed += n;
            e = errno;
        }
    }
    m->n = k;
    if (m->failed) warn_once(m, who, e);
    return m->locked;
}

void memlock_free(memlock_t *m) {
    for (int i = 0; i < m->n; i++) munlock((void *)m->r[i].a, m->r[i].b - m->r[i].a);
    free(m->r);
    memset(m, 0, sizeof *m);
}
