/* server_slots: llama-server's POST /slots/{id}?action=save|restore|erase — a slot's cached
 * tokens and their keys and values to and from files in --slot-save-path (kvfile.h). The HTTP
 * thread checks the request and hands the engine thread a slot_job (one at a time); the engine
 * runs it between steps (sched_slot_*: steps in flight are waited for first) and wakes it.
 * Not here: the file format (kvfile.c), moving rows (pipeline kv_read / kv_write). */
#include "coordinator/server_int.h"
#include "core/err.h"
#include "core/log.h"
#include "core/progress.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SLOT_SAVE = 0, SLOT_RESTORE = 1, SLOT_ERASE = 2 };

/* a plain file name inside the save directory: no separators, no "..", no hidden or control names */
static int filename_ok(const char *f) {
    size_t n = strlen(f);
    if (!n || n > 200 || f[0] == '.' || strstr(f, "..")) return 0;
    for (size_t i = 0; i < n; i++)
        if (f[i] == '/' || f[i] == '\\' || (unsigned char)f[i] < 0x20 || f[i] == 0x7f) return 0;
    return 1;
}

static enum MHD_Result bad(struct MHD_Connection *c, int status, const char *code, const char *param, const char *msg) {
    server_err_t e;
    server_err_set(&e, status, status == 501 ? "not_supported_error" : status >= 500 ? "unavailable_error"
                                                                                     : "invalid_request_error",
                   code, param, "%s", msg);
    return server_reply_err(c, &e);
}

/* the "filename" of a save / restore body, checked; NULL with the reply made in *res */
static char *body_filename(struct MHD_Connection *c, const char *body, size_t len, enum MHD_Result *res) {
    json_error_t je;
    json_t *root = body && len ? json_loadb(body, len, 0, &je) : NULL;
    const char *f = json_string_value(json_object_get(root, "filename"));
    char *out = NULL;
    if (!root) *res = bad(c, 400, "invalid_json", NULL, "the body is not JSON: {\"filename\": \"NAME\"}");
    else if (!f) *res = bad(c, 400, "invalid_value", "filename", "\"filename\" (a string) is missing");
    else if (!filename_ok(f))
        *res = bad(c, 400, "invalid_value", "filename", "\"filename\" must be a plain file name (no '/', no '..')");
    else if (!(out = strdup(f))) *res = server_reply_json(c, 500, NULL);
    json_decref(root);
    return out;
}

enum MHD_Result server_slots_action(struct server *s, struct MHD_Connection *c, const char *id, const char *body,
                                    size_t len) {
    if (!s->cfg.slot_save_path)
        return bad(c, 501, "not_supported", NULL, "this server does not support slot actions: start it with "
                                                  "--slot-save-path DIR");
    char *end;
    long slot = strtol(id, &end, 10);
    if (!*id || *end || id[0] == '-' || id[0] == '+' || slot >= s->m->sched.n_seq)
        return bad(c, 400, "invalid_value", "id_slot", "no such slot");
    const char *a = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "action");
    int action = !a ? -1 : !strcmp(a, "save") ? SLOT_SAVE : !strcmp(a, "restore") ? SLOT_RESTORE
                                                          : !strcmp(a, "erase")   ? SLOT_ERASE : -1;
    if (action < 0) return bad(c, 400, "invalid_value", "action", "action must be save, restore or erase");
    slot_job_t sj;
    memset(&sj, 0, sizeof sj);
    sj.action = action, sj.slot = (int)slot;
    char *fname = NULL;
    enum MHD_Result res = MHD_NO;
    if (action != SLOT_ERASE) {
        if (!(fname = body_filename(c, body, len, &res))) return res;
        snprintf(sj.path, sizeof sj.path, "%s/%s", s->cfg.slot_save_path, fname);
    }
    pthread_cond_init(&sj.cv, NULL);
    pthread_mutex_lock(&s->mu);
    int busy = s->slot_job != NULL || s->draining || s->stop_engine;   /* the engine may be gone */
    if (!busy) {
        s->slot_job = &sj;
        pthread_cond_signal(&s->engine_cv);
        while (!sj.done) pthread_cond_wait(&sj.cv, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&sj.cv);
    if (busy) res = bad(c, 503, "busy", NULL, "another slot action is running, or the server is stopping");
    else if (sj.rc < 0)
        res = bad(c, sj.status, sj.status == 404 ? "not_found" : sj.status == 409 ? "slot_busy"
                                : sj.status == 400 ? "invalid_file" : "slot_action_failed", NULL, sj.err);
    else if (action == SLOT_ERASE)
        res = server_reply_json(c, 200, json_pack("{s:i, s:i}", "id_slot", sj.slot, "n_erased", sj.n));
    else
        res = server_reply_json(c, 200, json_pack("{s:i, s:s, s:i, s:I, s:{s:f}}", "id_slot", sj.slot, "filename", fname,
                                                  action == SLOT_SAVE ? "n_saved" : "n_restored", sj.n,
                                                  action == SLOT_SAVE ? "n_written" : "n_read", (json_int_t)sj.bytes,
                                                  "timings", action == SLOT_SAVE ? "save_ms" : "restore_ms", sj.ms));
    free(fname);
    return res;
}

void server_slots_run(struct server *s, slot_job_t *sj) {
    sched_t *sc = &s->m->sched;
    double t0 = time_now();
    int rc;
    if (sc->seqs[sj->slot].active) {
        rc = err_set(sj->err, sizeof sj->err, TERN_EINVAL, "slot %d is busy with a request", sj->slot);
        sj->status = 409;
    } else if (sj->action == SLOT_ERASE) {
        rc = sj->n = sched_slot_erase(sc, sj->slot);
    } else {
        uint64_t bytes = 0;
        rc = sj->action == SLOT_SAVE ? sched_slot_save(sc, sj->slot, sj->path, &sj->n, &bytes, sj->err, sizeof sj->err)
                                     : sched_slot_restore(sc, sj->slot, sj->path, &sj->n, &bytes, sj->err, sizeof sj->err);
        sj->bytes = bytes;
        /* the file's own trouble is the client's (400: another model, corrupt), a missing one 404 */
        sj->status = rc == TERN_ENOTFOUND ? 404 : rc == TERN_EINVAL || rc == TERN_EFORMAT ? 400 : 500;
    }
    sj->ms = (time_now() - t0) * 1e3;
    sj->rc = rc;
    if (rc < 0) {   /* the client gets the file name it gave, not the server's directory */
        const char *dir = s->cfg.slot_save_path;
        size_t dl = strlen(dir);
        char *p;
        while ((p = strstr(sj->err, dir)) && p[dl] == '/') memmove(p, p + dl + 1, strlen(p + dl + 1) + 1);
        log_w("serve: slot %d: %s", sj->slot, sj->err);
    } else {
        log_i("serve: slot %d %s: %d tokens", sj->slot, sj->action == SLOT_SAVE ? "saved" : sj->action == SLOT_RESTORE
                                                                                       ? "restored" : "erased", sj->n);
    }
}
