/* safetensors: mmap + validation of .safetensors files and sharded checkpoint directories.
 * Layout: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape,
 * data_offsets: [begin, end]}, "__metadata__": {...}}, then the data (offsets relative to it).
 * Not here: conversion of values beyond reading floats as f32. */
#define _GNU_SOURCE
#include "tools/safetensors.h"
#include "core/err.h"
#include "core/half.h"
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (256u << 20)   /* real headers are < 1 MiB; refuse absurd ones early */

static const struct { const char *name; size_t size; int fl; } g_dt[ST_DTYPE_COUNT] = {
    [ST_F64] = {"F64", 8, 1}, [ST_F32] = {"F32", 4, 1}, [ST_F16] = {"F16", 2, 1}, [ST_BF16] = {"BF16", 2, 1},
    [ST_I64] = {"I64", 8, 0}, [ST_I32] = {"I32", 4, 0}, [ST_I16] = {"I16", 2, 0}, [ST_I8] = {"I8", 1, 0},
    [ST_U8] = {"U8", 1, 0}, [ST_BOOL] = {"BOOL", 1, 0},
};

size_t st_dtype_size(int d) { return d >= 0 && d < ST_DTYPE_COUNT ? g_dt[d].size : 0; }
const char *st_dtype_name(int d) { return d >= 0 && d < ST_DTYPE_COUNT ? g_dt[d].name : "?"; }
int st_dtype_float(int d) { return d >= 0 && d < ST_DTYPE_COUNT && g_dt[d].fl; }

static int dtype_from_name(const char *s) {
    for (int d = 0; d < ST_DTYPE_COUNT; d++)
        if (!strcmp(s, g_dt[d].name)) return d;
    return -1;
}

void st_read_f32(const st_tensor_t *t, int64_t off, int64_t n, float *y) {
    TERN_ASSERT(off >= 0 && n >= 0 && off + n <= t->nelem && st_dtype_float(t->dtype));
    const uint8_t *p = t->data + (size_t)off * g_dt[t->dtype].size;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        float f;
        double d;
        switch (t->dtype) {
        case ST_F32: memcpy(&f, p + 4 * i, 4); y[i] = f; break;
        case ST_F16: memcpy(&h, p + 2 * i, 2); y[i] = f16_to_f32(h); break;
        case ST_BF16: memcpy(&h, p + 2 * i, 2); y[i] = bf16_to_f32(h); break;
        default: memcpy(&d, p + 8 * i, 8); y[i] = (float)d; break;
        }
    }
}

/* ---- one file --------------------------------------------------------------------- */

static int by_offset(const void *a, const void *b) {
    const st_tensor_t *x = a, *y = b;
    return x->data < y->data ? -1 : x->data > y->data ? 1 : (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

/* one header entry → *t; 0 or <0 with err naming the tensor */
static int parse_entry(st_file_t *f, const char *key, json_t *v, st_tensor_t *t, char *err, size_t errlen) {
    const char *p = f->path;
    size_t avail = f->size - f->data_off;
    if (!json_is_object(v)) return err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%.80s': entry is not an object", p, key);
    const char *ds = json_string_value(json_object_get(v, "dtype"));
    json_t *shape = json_object_get(v, "shape"), *offs = json_object_get(v, "data_offsets");
    if (!ds || !json_is_array(shape) || !json_is_array(offs))
        return err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%.80s': missing dtype, shape or data_offsets", p, key);
    if ((t->dtype = dtype_from_name(ds)) < 0)
        return err_set(err, errlen, TERN_ENOTSUP, "%s: tensor '%.80s': unknown dtype '%.16s'", p, key, ds);
    if (json_array_size(shape) > ST_MAX_DIMS)
        return err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%.80s': %zu dimensions (max %d)", p, key,
                       json_array_size(shape), ST_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    t->nelem = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        json_int_t n = json_is_integer(d) ? json_integer_value(d) : -1;
        if (n < 0 || (n > 0 && t->nelem > (int64_t)(avail / (size_t)n)))
            return err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%.80s': shape[%d] is invalid or larger than the file",
                           p, key, i);
        t->shape[i] = n;
        t->nelem *= n;
    }
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (json_array_size(offs) != 2 || !json_is_integer(b) || !json_is_integer(e))
        return err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%.80s': data_offsets is not [begin, end]", p, key);
    json_int_t bo = json_integer_value(b), eo = json_integer_value(e);
    if (bo < 0 || eo < bo || (uint64_t)eo > avail)
        return err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%.80s': data_offsets [%lld, %lld] outside the %zu data bytes",
                       p, key, (long long)bo, (long long)eo, avail);
    if ((uint64_t)t->nelem * g_dt[t->dtype].size != (uint64_t)(eo - bo))
        return err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%.80s': %s x %lld elements need %llu bytes, data_offsets "
                       "give %lld", p, key, ds, (long long)t->nelem,
                       (unsigned long long)t->nelem * g_dt[t->dtype].size, (long long)(eo - bo));
    t->nbytes = (size_t)(eo - bo);
    t->data = f->map + f->data_off + bo;
    t->file = f;
    if (!(t->name = strdup(key))) return err_set(err, errlen, TERN_ENOMEM, "%s: out of memory", p);
    return 0;
}

static int parse_header(st_file_t *f, char *err, size_t errlen) {
    const char *p = f->path;
    if (f->size < 8) return err_set(err, errlen, TERN_EFORMAT, "%s: %zu bytes: too short for a safetensors header", p, f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | f->map[i];
    if (n > f->size - 8)
        return err_set(err, errlen, TERN_EFORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)", p,
                       (unsigned long long)n, f->size);
    if (n < 2 || n > ST_MAX_HEADER)
        return err_set(err, errlen, TERN_EFORMAT, "%s: header length %llu is not plausible", p, (unsigned long long)n);
    f->data_off = 8 + (size_t)n;
    json_error_t je;
    json_t *root = json_loadb((const char *)f->map + 8, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root) return err_set(err, errlen, TERN_EFORMAT, "%s: header JSON: %s (offset %d)", p, je.text, je.position);
    int rc = 0;
    if (!json_is_object(root)) { rc = err_set(err, errlen, TERN_EFORMAT, "%s: header is not a JSON object", p); goto done; }
    f->t = calloc(json_object_size(root) + 1, sizeof *f->t);
    if (!f->t) { rc = err_set(err, errlen, TERN_ENOMEM, "%s: out of memory", p); goto done; }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) continue;
        if ((rc = parse_entry(f, key, v, &f->t[f->n], err, errlen)) < 0) goto done;
        f->n++;
    }
    qsort(f->t, (size_t)f->n, sizeof *f->t, by_offset);
    const st_tensor_t *last = NULL;   /* the non-empty tensor that ends last so far */
    for (int i = 0; i < f->n; i++) {
        const st_tensor_t *t = &f->t[i];
        if (!t->nbytes) continue;
        if (last && t->data < last->data + last->nbytes) {
            rc = err_set(err, errlen, TERN_EFORMAT, "%s: tensors '%.80s' and '%.80s' overlap in the data section", p,
                         last->name, t->name);
            goto done;
        }
        last = t;
    }
done:
    json_decref(root);
    return rc;
}

void st_close(st_file_t **pf) {
    st_file_t *f = pf ? *pf : NULL;
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    free(f->t);
    if (f->fd >= 0) {
        if (f->map && f->size) munmap((void *)f->map, f->size);
        close(f->fd);
    }
    free(f->path);
    free(f);
    *pf = NULL;
}

static int open_common(st_file_t **out, st_file_t *f, char *err, size_t errlen) {
    int rc = parse_header(f, err, errlen);
    if (rc < 0) st_close(&f);
    *out = f;
    return rc;
}

int st_open_mem(st_file_t **out, const void *buf, size_t size, const char *name, char *err, size_t errlen) {
    *out = NULL;
    st_file_t *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(name ? name : "<memory>"))) {
        free(f);
        return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    }
    f->fd = -1;
    f->map = buf;
    f->size = size;
    return open_common(out, f, err, errlen);
}

int st_open(st_file_t **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    st_file_t *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    }
    struct stat sb;
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0 || fstat(f->fd, &sb) < 0) {
        int rc = err_set(err, errlen, TERN_EIO, "%s: cannot open: %s", path, strerror(errno));
        st_close(&f);
        return rc;
    }
    f->size = (size_t)sb.st_size;
    if (f->size >= 8) {
        void *m = mmap(NULL, f->size, PROT_READ, MAP_SHARED, f->fd, 0);
        if (m == MAP_FAILED) {
            int rc = err_set(err, errlen, TERN_EIO, "%s: mmap: %s", path, strerror(errno));
            f->size = 0;
            st_close(&f);
            return rc;
        }
        f->map = m;
    }
    return open_common(out, f, err, errlen);
}

const st_tensor_t *st_file_find(const st_file_t *f, const char *name) {
    for (int i = 0; f && i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

/* ---- a checkpoint directory ------------------------------------------------------- */

void st_set_close(st_set_t **ps) {
    st_set_t *s = ps ? *ps : NULL;
    if (!s) return;
    for (int i = 0; i < s->nfiles; i++) st_close(&s->files[i]);
    free(s->files);
    free(s->t);
    free(s);
    *ps = NULL;
}

static int set_add_file(st_set_t *s, const char *dir, const char *name, char *err, size_t errlen) {
    char path[4096];
    if (strchr(name, '/') || name[0] == '.' || !name[0])
        return err_set(err, errlen, TERN_EFORMAT, "%s: shard name '%.80s' is not a plain file name", dir, name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    st_file_t **nf = realloc(s->files, (size_t)(s->nfiles + 1) * sizeof *nf);
    if (!nf) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    s->files = nf;
    int rc = st_open(&s->files[s->nfiles], path, err, errlen);
    if (rc == 0) s->nfiles++;
    return rc;
}

static int has_file(const st_set_t *s, const char *dir, const char *name) {
    size_t dl = strlen(dir);
    for (int i = 0; i < s->nfiles; i++)
        if (!strcmp(s->files[i]->path + dl + 1, name)) return 1;
    return 0;
}

/* shards named by the index's weight_map; each named tensor must be in its shard */
static int set_from_index(st_set_t *s, const char *dir, const char *index, char *err, size_t errlen) {
    json_error_t je;
    json_t *root = json_load_file(index, 0, &je), *wm;
    int rc = 0;
    if (!root) return err_set(err, errlen, TERN_EFORMAT, "%s:%d: %s", index, je.line, je.text);
    if (!json_is_object(wm = json_object_get(root, "weight_map")) || !json_object_size(wm)) {
        rc = err_set(err, errlen, TERN_EFORMAT, "%s: no weight_map object", index);
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        const char *fn = json_string_value(v);
        if (!fn) { rc = err_set(err, errlen, TERN_EFORMAT, "%s: weight_map['%.80s'] is not a file name", index, key); goto done; }
        if (!has_file(s, dir, fn) && (rc = set_add_file(s, dir, fn, err, errlen)) < 0) goto done;
    }
    json_object_foreach(wm, key, v) {
        size_t dl = strlen(dir);
        const st_file_t *f = NULL;
        for (int i = 0; i < s->nfiles && !f; i++)
            if (!strcmp(s->files[i]->path + dl + 1, json_string_value(v))) f = s->files[i];
        if (!st_file_find(f, key)) {
            rc = err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%.80s' should be in %s but is not", index, key,
                         json_string_value(v));
            goto done;
        }
    }
done:
    json_decref(root);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int set_from_glob(st_set_t *s, const char *dir, char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (!d) return err_set(err, errlen, TERN_ENOTFOUND, "%s: cannot open directory: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l <= 12 || e->d_name[0] == '.' || strcmp(e->d_name + l - 12, ".safetensors")) continue;
        char **nn = realloc(names, (size_t)(n + 1) * sizeof *nn);
        if (!nn || !(nn[n] = strdup(e->d_name))) { names = nn ? nn : names; rc = TERN_ENOMEM; break; }
        names = nn;
        n++;
    }
    closedir(d);
    if (rc == 0 && n == 0) rc = err_set(err, errlen, TERN_ENOTFOUND, "%s: no *.safetensors files", dir);
    else if (rc < 0) err_set(err, errlen, rc, "out of memory");
    if (rc == 0) qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; rc == 0 && i < n; i++) rc = set_add_file(s, dir, names[i], err, errlen);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

static int by_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor_t *const *)a)->name, (*(const st_tensor_t *const *)b)->name);
}

int st_set_open(st_set_t **out, const char *dir, char *err, size_t errlen) {
    *out = NULL;
    st_set_t *s = calloc(1, sizeof *s);
    if (!s) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    char path[4096];
    int rc;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) == 0) {
        rc = set_from_index(s, dir, path, err, errlen);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc = access(path, F_OK) == 0 ? set_add_file(s, dir, "model.safetensors", err, errlen)
                                     : set_from_glob(s, dir, err, errlen);
    }
    for (int i = 0; rc == 0 && i < s->nfiles; i++) s->n += s->files[i]->n;
    if (rc == 0 && !(s->t = malloc((size_t)(s->n + 1) * sizeof *s->t))) rc = err_set(err, errlen, TERN_ENOMEM, "out of memory");
    if (rc == 0) {
        int k = 0;
        for (int i = 0; i < s->nfiles; i++)
            for (int j = 0; j < s->files[i]->n; j++) s->t[k++] = &s->files[i]->t[j];
        qsort(s->t, (size_t)s->n, sizeof *s->t, by_name);
        for (int i = 1; i < s->n && rc == 0; i++)
            if (!strcmp(s->t[i]->name, s->t[i - 1]->name))
                rc = err_set(err, errlen, TERN_EFORMAT, "%s: tensor '%.80s' is in both %s and %s", dir, s->t[i]->name,
                             s->t[i - 1]->file->path, s->t[i]->file->path);
    }
    if (rc < 0) st_set_close(&s);
    *out = s;
    return rc;
}

const st_tensor_t *st_set_find(const st_set_t *s, const char *name) {
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(s->t[mid]->name, name);
        if (!c) return s->t[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}
