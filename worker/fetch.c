/* fetch: see fetch.h. Ranges are merged and kept sorted; each request waits for its chunk (the
 * coordinator answers in order), so a lost coordinator surfaces as a timeout, not a hang. */
#include "worker/fetch.h"
#include "core/model_spec.h"
#include "core/err.h"
#include "core/log.h"
#include "core/progress.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FETCH_TIMEOUT_MS 30000
#define FETCH_MAX_RANGES 4096

typedef struct range { uint64_t b, e; } range_t;
typedef struct ranges { range_t r[FETCH_MAX_RANGES]; int n; } ranges_t;

static void ranges_add(ranges_t *s, uint64_t b, uint64_t e) {
    if (b >= e) return;
    range_t out[FETCH_MAX_RANGES];
    int n = 0, placed = 0;
    for (int i = 0; i < s->n; i++) {
        range_t x = s->r[i];
        if (x.e < b || x.b > e) {                     /* disjoint (not even touching) */
            if (!placed && x.b > e) { out[n++] = (range_t){b, e}; placed = 1; }
            if (n < FETCH_MAX_RANGES) out[n++] = x;
        } else {                                      /* overlap: absorb */
            b = x.b < b ? x.b : b;
            e = x.e > e ? x.e : e;
        }
    }
    if (!placed && n < FETCH_MAX_RANGES) out[n++] = (range_t){b, e};
    memcpy(s->r, out, (size_t)n * sizeof(range_t));
    s->n = n;
}

/* the parts of [b, e) not yet in s, appended to need */
static void ranges_missing(const ranges_t *s, uint64_t b, uint64_t e, ranges_t *need) {
    for (int i = 0; i < s->n && b < e; i++) {
        if (s->r[i].e <= b) continue;
        if (s->r[i].b >= e) break;
        if (s->r[i].b > b) ranges_add(need, b, s->r[i].b);
        b = s->r[i].e;
    }
    if (b < e) ranges_add(need, b, e);
}

static void have_load(const char *path, ranges_t *s) {
    s->n = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    unsigned long long b, len;
    while (fscanf(f, "%llu %llu", &b, &len) == 2) ranges_add(s, b, b + len);
    fclose(f);
}

static int have_save(const char *path, const ranges_t *s) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    for (int i = 0; i < s->n; i++)
        fprintf(f, "%llu %llu\n", (unsigned long long)s->r[i].b, (unsigned long long)(s->r[i].e - s->r[i].b));
    if (fclose(f) != 0) return -1;
    return rename(tmp, path);
}

/* asks for [off, off+len) and writes what comes back into fd */
static int get_range(fetch_req_t *r, int fd, uint64_t off, uint64_t len, tp_msg_t *rx, char *err, size_t errlen) {
    Tern__Msg m = TERN__MSG__INIT;
    Tern__WeightRequest q = TERN__WEIGHT_REQUEST__INIT;
    q.model = (Tern__ModelId *)r->model;
    q.offset = off;
    q.length = len;
    m.body_case = TERN__MSG__BODY_WEIGHT_REQUEST;
    m.weight_request = &q;
    int rc = tp_send(r->c, r->to, &m, NULL, 0, err, errlen);
    if (rc < 0) return rc;
    double deadline = time_now() + FETCH_TIMEOUT_MS / 1000.0;
    for (;;) {
        int left = (int)((deadline - time_now()) * 1000);
        if (left <= 0)
            return err_set(err, errlen, TERN_ETIMEOUT, "no weights from the coordinator within %d s", FETCH_TIMEOUT_MS / 1000);
        rc = tp_recv(r->c, rx, left, err, errlen);
        if (rc == TERN_ETIMEOUT) continue;
        if (rc < 0) return rc;
        int bc = rx->msg->body_case;
        if (bc == TERN__MSG__BODY_HEARTBEAT) {
            tp_answer_heartbeat(r->c, rx, err, errlen);
            continue;
        }
        if (bc == TERN__MSG__BODY_ERROR)
            return err_set(err, errlen, TERN_EPEER, "coordinator: %s", rx->msg->error->message ? rx->msg->error->message : "?");
        if (bc != TERN__MSG__BODY_WEIGHT_CHUNK) { log_w("%s: ignoring %s while fetching weights", r->name, tp_body_name(bc)); continue; }
        const Tern__WeightChunk *ch = rx->msg->weight_chunk;
        if (ch->offset != off || rx->tensor_bytes != len)
            return err_set(err, errlen, TERN_EPROTO, "coordinator sent bytes [%llu, +%zu), asked for [%llu, +%llu)",
                           (unsigned long long)ch->offset, rx->tensor_bytes, (unsigned long long)off,
                           (unsigned long long)len);
        const uint8_t *p = rx->tensor;
        for (size_t done = 0; done < len;) {
            ssize_t w = pwrite(fd, p + done, len - done, (off_t)(off + done));
            if (w <= 0) return err_set(err, errlen, TERN_EIO, "cannot write the weight cache: %s", strerror(errno));
            done += (size_t)w;
        }
        r->fetched += len;
        return 0;
    }
}

static int fetch_ranges(fetch_req_t *r, int fd, const ranges_t *need, ranges_t *have, const char *have_path,
                        tp_msg_t *rx, progress_t *pr, char *err, size_t errlen) {
    for (int i = 0; i < need->n; i++)
        for (uint64_t off = need->r[i].b; off < need->r[i].e; off += FETCH_CHUNK) {
            uint64_t len = need->r[i].e - off < FETCH_CHUNK ? need->r[i].e - off : FETCH_CHUNK;
            int rc = get_range(r, fd, off, len, rx, err, errlen);
            if (rc < 0) return rc;
            ranges_add(have, off, off + len);
            progress_add(pr, len);
        }
    return have_save(have_path, have) < 0 ? err_set(err, errlen, TERN_EIO, "cannot write %s", have_path) : 0;
}

/* the tensors a shard reads: its blocks, the RoPE frequency factors (every stage rotates), and
 * for the last stage the output norm and the lm head (output.weight, or token_embd.weight when
 * the model is tied) */
static int wanted(const gguf_tensor_t *t, int first, int last, int is_last, int tied) {
    int l;
    if (sscanf(t->name, "blk.%d.", &l) == 1) return l >= first && l <= last;
    if (!strcmp(t->name, ROPE_FREQS_NAME)) return 1;
    if (!is_last) return 0;
    return !strcmp(t->name, "output_norm.weight") || !strcmp(t->name, tied ? "token_embd.weight" : "output.weight");
}

static int mkdir_p(const char *dir) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') { *p = 0; if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1; *p = '/'; }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

int fetch_shard(fetch_req_t *r, gguf_t **out, char *err, size_t errlen) {
    *out = NULL;
    const char *hash = r->model->hash ? r->model->hash : "";
    if (!*hash || strchr(hash, '/') || r->model->size == 0)
        return err_set(err, errlen, TERN_EPROTO, "the coordinator sent no usable model identity");
    if (mkdir_p(r->cache_dir) != 0)
        return err_set(err, errlen, TERN_EIO, "cannot create the weight cache %s: %s", r->cache_dir, strerror(errno));
    char path[1024], have_path[1100];
    snprintf(path, sizeof path, "%s/%s.gguf", r->cache_dir, hash);
    snprintf(have_path, sizeof have_path, "%s.have", path);
    int fd = open(path, O_RDWR | O_CREAT, 0644);
    if (fd < 0) return err_set(err, errlen, TERN_EIO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || ((uint64_t)st.st_size != r->model->size && ftruncate(fd, (off_t)r->model->size) != 0)) {
        close(fd);
        return err_set(err, errlen, TERN_EIO, "cannot size %s to %llu bytes", path, (unsigned long long)r->model->size);
    }
    static ranges_t have, need;   /* large; fetches are sequential in a worker */
    have_load(have_path, &have);
    tp_msg_t rx;
    tp_msg_init(&rx);
    progress_t pr;
    progress_init(&pr, "fetching weights", r->model->size);
    /* 1. the header: fetched in growing pieces until the file parses */
    uint64_t head = 256u << 10;
    int rc = 0;
    gguf_t *g = NULL;
    for (;;) {
        if (head > r->model->size) head = r->model->size;
        need.n = 0;
        ranges_missing(&have, 0, head, &need);
        if ((rc = fetch_ranges(r, fd, &need, &have, have_path, &rx, &pr, err, errlen)) < 0) goto done;
        char perr[512];
        if (gguf_open(&g, path, perr, sizeof perr) == 0) {
            if (g->data_offset <= head) break;   /* the whole header and tensor table are real bytes */
            head = g->data_offset;
            gguf_close(&g);
            continue;
        }
        if (head >= r->model->size) { rc = err_set(err, errlen, TERN_EFORMAT, "fetched model: %s", perr); goto done; }
        head *= 4;
    }
    /* 2. the tensors of the shard (the data region must be complete for the header range to
     *    be trusted: the tensor table was validated against the full size above) */
    need.n = 0;
    int tied = gguf_find_tensor(g, "output.weight") == NULL;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor_t *t = &g->tensors[i];
        if (!wanted(t, r->first, r->last, r->is_last, tied)) continue;
        uint64_t b = (uint64_t)((const uint8_t *)t->data - g->map);
        ranges_missing(&have, b, b + t->nbytes, &need);
    }
    gguf_close(&g);
    if ((rc = fetch_ranges(r, fd, &need, &have, have_path, &rx, &pr, err, errlen)) < 0) goto done;
    progress_done(&pr);
    rc = gguf_open_ex(out, path, r->gguf_flags, err, errlen);
    log_i("%s: %.1f MiB of weights fetched from the coordinator, cached in %s", r->name, (double)r->fetched / 1048576,
          path);
done:
    tp_msg_free(&rx);
    close(fd);
    return rc;
}
