/* sched_slot: a scheduler slot's cached tokens to and from a file (sched.h, "slot save /
 * restore") — the rows move through the pipeline's kv_read / kv_write, the file is kvfile.c's.
 * Kept apart from sched.c: nothing here runs in the token loop. */
#include "coordinator/sched.h"
#include "core/err.h"
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
