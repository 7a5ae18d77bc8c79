/* sched_slot: a scheduler slot's cached tokens to and from a file (sched.h, "slot save /
 * restore") — the rows move through the pipeline's kv_read / kv_write, the file is kvfile.c's.
 * Also the RAM prompt cache's moves (sched_set_ram_cache), the same rows to and from memory.
 * Kept apart from sched.c: nothing here runs in the token loop. */
#include "coordinator/sched.h"
#include "core/err.h"
#include "core/log.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sched_set_model(sched_t *s, const kvfile_model_t *m) { s->kvm = *m; }

/* slot is a free slot of s and, once the steps in flight are through (nothing new is submitted
 * meanwhile: s->hold), the pipeline can move its rows; 0 or <0 with err */
static int slot_idle(sched_t *s, int slot, char *err, size_t errlen) {
    if (slot < 0 || slot >= s->n_seq)
        return err_set(err, errlen, TERN_EINVAL, "no slot %d (there are %d)", slot, s->n_seq);
    if (s->seqs[slot].active) return err_set(err, errlen, TERN_EINVAL, "slot %d is busy with a request", slot);
    if (!s->kvm.size) return err_set(err, errlen, TERN_EINVAL, "slot files: the model's identity is not known");
    if (!s->pl->ops->kv_read || !s->pl->ops->kv_write)
        return err_set(err, errlen, TERN_ENOTSUP, "this pipeline cannot move KV cache rows");
    int rc = 0;
    s->hold = 1;
    while (s->inflight && rc >= 0) rc = sched_step(s);
    s->hold = 0;
    return rc < 0 ? err_set(err, errlen, rc, "%s", s->err) : 0;
}

int sched_slot_save(sched_t *s, int slot, const char *path, int *n_saved, uint64_t *n_written, char *err,
                    size_t errlen) {
    int rc = slot_idle(s, slot, err, errlen);
    if (rc < 0) return rc;
    const sched_seq_t *q = &s->seqs[slot];
    int n = q->kv_ok ? q->n_fed : 0;
    if (n > q->kv_exact) n = q->kv_exact;   /* after a context shift: what a prefill of toks computes */
    if (n < 1) return err_set(err, errlen, TERN_EINVAL, "slot %d holds no cached tokens", slot);
    size_t bytes = kvfile_kv_bytes(&s->kvm, n);
    uint8_t *kv = malloc(bytes);
    if (!kv) return err_set(err, errlen, TERN_ENOMEM, "out of memory for %zu bytes of KV rows", bytes);
    rc = s->pl->ops->kv_read(s->pl, slot, n, s->kvm.kv_type, s->kvm.row, kv, err, errlen);
    if (rc >= 0) rc = kvfile_save(path, &s->kvm, q->toks, n, kv, n_written, err, errlen);
    free(kv);
    if (rc >= 0 && n_saved) *n_saved = n;
    return rc;
}

int sched_slot_restore(sched_t *s, int slot, const char *path, int *n_restored, uint64_t *n_read, char *err,
                       size_t errlen) {
    int rc = slot_idle(s, slot, err, errlen);
    if (rc < 0) return rc;
    kvfile_t f;
    char why[256];
    if ((rc = kvfile_load(&f, path, err, errlen)) < 0) return rc;
    size_t len = f.len;
    if ((rc = kvfile_check(&f, &s->kvm, s->n_ctx, why, sizeof why)) < 0) {
        kvfile_free(&f);
        return err_set(err, errlen, rc, "%s: %s", path, why);
    }
    sched_seq_t *q = &s->seqs[slot];
    q->kv_ok = 0;   /* until every stage took its rows */
    rc = s->pl->ops->kv_write(s->pl, slot, f.n_tok, s->kvm.kv_type, s->kvm.row, f.kv, err, errlen);
    if (rc >= 0) {
        memcpy(q->toks, f.toks, (size_t)f.n_tok * sizeof(int32_t));
        q->n_prompt = q->n_toks = q->n_prefill = q->n_fed = f.n_tok;
        q->n_cached = q->n_gen = q->n_shifted = 0;
        q->kv_ok = 1;
        q->kv_exact = s->n_ctx + 1;
        q->last_use = ++s->use_clock;
        if (n_restored) *n_restored = f.n_tok;
        if (n_read) *n_read = len;
    }
    kvfile_free(&f);
    return rc;
}

int sched_slot_adopt(sched_t *s, int slot, const int32_t *toks, int n) {
    if (slot < 0 || slot >= s->n_seq || s->seqs[slot].active || n < 0 || n > s->n_ctx) return TERN_EINVAL;
    sched_seq_t *q = &s->seqs[slot];
    memcpy(q->toks, toks, (size_t)n * sizeof(int32_t));
    q->n_prompt = q->n_toks = q->n_prefill = q->n_fed = n;
    q->n_cached = q->n_gen = q->n_shifted = 0;
    q->kv_ok = n > 0;
    q->kv_exact = s->n_ctx + 1;
    q->last_use = ++s->use_clock;
    return 0;
}

int sched_slot_erase(sched_t *s, int slot) {
    if (slot < 0 || slot >= s->n_seq || s->seqs[slot].active) return TERN_EINVAL;
    sched_seq_t *q = &s->seqs[slot];
    int n = q->kv_ok ? q->n_fed : 0;
    q->kv_ok = 0;
    return n;
}

int sched_set_ram_cache(sched_t *s, size_t limit) {
    if (s->ram) {
        promptcache_free(s->ram);
        free(s->ram);
        s->ram = NULL;
    }
    if (!limit) return 0;
    if (!s->pl->ops->kv_read || !s->pl->ops->kv_write || !s->kvm.size) return TERN_ENOTSUP;
    if (!(s->ram = malloc(sizeof *s->ram))) return TERN_ENOMEM;
    promptcache_init(s->ram, limit);
    return 0;
}

/* the tokens of idle slot q a fresh prefill computes the rows of (what a save may keep) */
static int slot_held(const sched_seq_t *q) {
    if (!q->kv_ok) return 0;
    return q->n_fed < q->kv_exact ? q->n_fed : q->kv_exact;
}

static double mib(size_t b) { return (double)b / (1024.0 * 1024.0); }

/* slot's first `held` tokens and their rows (the pipeline idle) into *toks / *kv (malloc'd), for
 * promptcache_put once a restore into the slot is done (the entry it restores may be evicted then).
 * Nothing (both NULL) when they could not be read: logged, only the entry is lost. */
static void ram_read(sched_t *s, int slot, int held, int32_t **toks, uint8_t **kv, size_t *bytes) {
    char err[256];
    *bytes = kvfile_kv_bytes(&s->kvm, held);
    *toks = malloc((size_t)held * sizeof(int32_t));
    *kv = malloc(*bytes);
    int rc = *toks && *kv ? 0 : TERN_ENOMEM;
    if (rc < 0) log_w("prompt cache: no memory for slot %d's %d tokens (%.1f MiB)", slot, held, mib(*bytes));
    else if ((rc = s->pl->ops->kv_read(s->pl, slot, held, s->kvm.kv_type, s->kvm.row, *kv, err, sizeof err)) < 0)
        log_w("prompt cache: slot %d's rows could not be read: %s", slot, err);
    if (rc < 0) {
        free(*toks), free(*kv);
        *toks = NULL, *kv = NULL;
        return;
    }
    memcpy(*toks, s->seqs[slot].toks, (size_t)held * sizeof(int32_t));
}

/* ram_read's toks / kv into the cache (taken) */
static void ram_put(sched_t *s, int slot, int32_t *toks, int held, uint8_t **kv, size_t bytes) {
    promptcache_t *pc = s->ram;
    unsigned long long ev = pc->n_evicted;
    int rc = promptcache_put(pc, toks, held, kv, bytes);
    free(toks);
    if (rc == TERN_ENOMEM) log_w("prompt cache: out of memory for slot %d's %d tokens", slot, held);
    if (rc < 0) return;   /* or an entry already holds them */
    log_i("prompt cache: saved slot %d's %d tokens (%.1f MiB; %d entries, %.1f of %.1f MiB%s)", slot, held, mib(bytes),
          pc->n, mib(pc->bytes), mib(pc->limit), pc->n_evicted > ev ? ", older ones evicted" : "");
}

/* entry i into slot (the pipeline idle): 1 when the slot then holds the entry's tokens, 0 when the
 * write failed (the slot then holds nothing) */
static int ram_restore(sched_t *s, int slot, int i) {
    const promptcache_entry_t *e = &s->ram->e[i];
    sched_seq_t *q = &s->seqs[slot];
    char err[256];
    q->kv_ok = 0;   /* until every stage took its rows */
    if (s->pl->ops->kv_write(s->pl, slot, e->n, s->kvm.kv_type, s->kvm.row, e->kv, err, sizeof err) < 0) {
        log_w("prompt cache: rows could not be written into slot %d: %s", slot, err);
        return 0;
    }
    memcpy(q->toks, e->toks, (size_t)e->n * sizeof(int32_t));
    q->n_prompt = q->n_toks = q->n_prefill = q->n_fed = e->n;
    q->kv_ok = 1;
    q->kv_exact = s->n_ctx + 1;
    return 1;
}

int sched_ram_admit(sched_t *s, int slot, const int32_t *prompt, int n, int use, int keep, int than, int *restored) {
    promptcache_t *pc = s->ram;
    *restored = 0;
    if (!pc || !s->prefix_cache) return 0;   /* without it no prompt starts on a cache */
    int held = slot_held(&s->seqs[slot]);
    int save = held >= SCHED_RAM_MIN && keep < held / 2 &&
               promptcache_wants(pc, s->seqs[slot].toks, held, kvfile_kv_bytes(&s->kvm, held));
    int k = 0, hit = use ? promptcache_find(pc, prompt, n, n - 1, &k) : -1;   /* the last token is fed */
    if (hit >= 0 && k < (keep > than ? keep : than) + SCHED_COPY_MIN) hit = -1;
    if (!save && hit < 0) return 0;
    int rc = 0;   /* kv_read / kv_write only while no step is in flight */
    s->hold = 1;
    while (s->inflight && rc >= 0) rc = sched_step(s);
    s->hold = 0;
    if (rc < 0) return 1;   /* the pipeline failed: every sequence has ended, s->err says why */
    held = slot_held(&s->seqs[slot]);   /* a recovery meanwhile forgets every slot's cache */
    int32_t *toks = NULL;
    uint8_t *kv = NULL;
    size_t bytes = 0;
    if (save && held >= SCHED_RAM_MIN) ram_read(s, slot, held, &toks, &kv, &bytes);
    if (hit >= 0 && ram_restore(s, slot, hit)) {
        promptcache_hit(pc, hit, k);
        *restored = k;
        log_i("prompt cache: %d tokens of a prompt of %d restored into slot %d (%d entries, %.1f MiB)", k, n, slot, pc->n,
              mib(pc->bytes));
    }
    if (toks) ram_put(s, slot, toks, held, &kv, bytes);
    return 1;
}
