/* gguf: GGUF v2/v3 reader and streaming writer (see gguf.h).
 * The reader walks the file with a bounds-checked cursor: every count, length, type, shape and
 * offset is checked against the bytes really present before a pointer into the map is formed,
 * and nothing is allocated beyond what the file size could describe. Errors are one line,
 * `FILE: field: problem (value)`. Not here: what keys mean (core/model_spec), tensor maths. */
#define _GNU_SOURCE
#include "core/gguf.h"
#include "core/err.h"
#include "core/types.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian GGUF with memcpy: port it before building big-endian"
#endif

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGN 32
#define GGUF_MAX_NAME 64        /* ggml's GGML_MAX_NAME: names are at most 63 bytes */
#define GGUF_MAX_KEY 65535      /* the spec: keys are at most 2^16-1 bytes */
#define GGUF_MAX_ALIGN (1u << 30)
#define GGUF_KV_MIN 14          /* key length u64 + 1 key byte + type u32 + the smallest value (1 byte) */
#define GGUF_TI_MIN 33          /* name length u64 + 1 name byte + ndim u32 + one dim u64 + type u32 + offset u64 */
#define GGUF_MAX_COUNT 0x7fffffffu

/* bytes of one scalar of each value type (0: variable) */
static const size_t g_vsize[GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
static const char *g_vname[GGUF_VTYPE_COUNT] = {"u8",  "i8",  "u16", "i16", "u32", "i32", "f32",
                                                "bool", "str", "arr", "u64", "i64", "f64"};

/* the public struct first, so a gguf_t * is a gguf_impl_t * */
typedef struct gguf_impl {
    gguf_t g;
    uint32_t *kv_sorted;   /* kv indices sorted by key (lookups, duplicate check) */
    uint32_t *t_sorted;    /* tensor indices sorted by name */
    int own_map;           /* 1: munmap + close on gguf_close */
    /* GGUF_NO_MMAP: g.map is an anonymous PROT_NONE reservation of the file's size; the header
     * and each tensor asked for (gguf_tensor_load) are pread into their place in it, so every
     * pointer and offset means what it means with a mapping, and a byte never read cannot be
     * read by mistake (it faults instead of reading zeros) */
    int no_mmap;
    pthread_mutex_t mu;    /* no_mmap: loads of one file from several threads */
    size_t hdr_loaded;     /* no_mmap: bytes [0, hdr_loaded) are in */
    uint32_t *t_loaded;    /* no_mmap: (n_tensors,) loads of tensor i not yet released */
    _Atomic uint64_t bytes_read;
} gguf_impl_t;

/* ---- reader -------------------------------------------------------------- */

typedef struct cur {
    const uint8_t *p;
    size_t size, pos;
    const char *name;
    char *err;
    size_t errlen;
    gguf_impl_t *nm;       /* GGUF_NO_MMAP: read the header in as the cursor walks it */
} cur_t;

static size_t cur_left(const cur_t *c) { return c->size - c->pos; }

static int nm_header(gguf_impl_t *im, size_t end, char *err, size_t errlen);

/* bytes [pos, pos + n) are in the file (checked) and readable; n <= cur_left */
static int cur_fill(cur_t *c, uint64_t n) {
    return c->nm ? nm_header(c->nm, c->pos + (size_t)n, c->err, c->errlen) : 0;
}

static int cur_need(cur_t *c, uint64_t n, const char *field) {
    if (n > cur_left(c))
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: truncated (needs %" PRIu64 " bytes at offset %zu, "
                       "file is %zu bytes)", c->name, field, n, c->pos, c->size);
    return cur_fill(c, n);
}

static int rd_u32(cur_t *c, uint32_t *v, const char *field) {
    int rc = cur_need(c, 4, field);
    if (rc < 0) return rc;
    memcpy(v, c->p + c->pos, 4);
    c->pos += 4;
    return 0;
}

static int rd_u64(cur_t *c, uint64_t *v, const char *field) {
    int rc = cur_need(c, 8, field);
    if (rc < 0) return rc;
    memcpy(v, c->p + c->pos, 8);
    c->pos += 8;
    return 0;
}

/* a length-prefixed string whose bytes lie inside the file */
static int rd_str(cur_t *c, gguf_str_t *s, const char *field) {
    uint64_t len;
    int rc = rd_u64(c, &len, field);
    if (rc < 0) return rc;
    if (len > cur_left(c))
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: string length past end of file (%" PRIu64 ")",
                       c->name, field, len);
    if ((rc = cur_fill(c, len)) < 0) return rc;
    s->len = len;
    s->ptr = (const char *)c->p + c->pos;
    c->pos += (size_t)len;
    return 0;
}

/* a name or key: non-empty, no NUL inside, at most `max` bytes; returns a malloc'd copy */
static int rd_name(cur_t *c, char **out, uint64_t max, const char *field) {
    gguf_str_t s;
    int rc = rd_str(c, &s, field);
    if (rc < 0) return rc;
    if (s.len == 0) return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: empty (0)", c->name, field);
    if (s.len > max)
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: too long (%" PRIu64 " bytes, at most %" PRIu64 ")",
                       c->name, field, s.len, max);
    if (memchr(s.ptr, 0, (size_t)s.len))
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: contains a NUL byte (%.*s)", c->name, field,
                       (int)strnlen(s.ptr, (size_t)s.len), s.ptr);
    *out = malloc((size_t)s.len + 1);
    if (!*out) return err_set(c->err, c->errlen, TERN_ENOMEM, "%s: %s: out of memory", c->name, field);
    memcpy(*out, s.ptr, (size_t)s.len);
    (*out)[s.len] = 0;
    return 0;
}

static void kv_widen(gguf_kv_t *kv, const uint8_t *p) {
    uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; float f32;
    switch (kv->type) {
    case GGUF_U8: case GGUF_BOOL: memcpy(&u8, p, 1); kv->v.u = u8; break;
    case GGUF_I8: memcpy(&i8, p, 1); kv->v.i = i8; break;
    case GGUF_U16: memcpy(&u16, p, 2); kv->v.u = u16; break;
    case GGUF_I16: memcpy(&i16, p, 2); kv->v.i = i16; break;
    case GGUF_U32: memcpy(&u32, p, 4); kv->v.u = u32; break;
    case GGUF_I32: memcpy(&i32, p, 4); kv->v.i = i32; break;
    case GGUF_F32: memcpy(&f32, p, 4); kv->v.f = f32; break;
    case GGUF_U64: memcpy(&kv->v.u, p, 8); break;
    case GGUF_I64: memcpy(&kv->v.i, p, 8); break;
    case GGUF_F64: memcpy(&kv->v.f, p, 8); break;
    default: break;
    }
}

/* array value: element type, count, elements (strings walked one by one and indexed) */
static int parse_arr(cur_t *c, gguf_kv_t *kv) {
    uint32_t et;
    uint64_t n;
    int rc;
    if ((rc = rd_u32(c, &et, kv->key)) < 0 || (rc = rd_u64(c, &n, kv->key)) < 0) return rc;
    if (et >= GGUF_VTYPE_COUNT)
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: unknown array element type (%u)", c->name, kv->key, et);
    if (et == GGUF_ARR)
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: nested arrays are not supported (%" PRIu64 " elements)",
                       c->name, kv->key, n);
    kv->arr_type = (int)et;
    kv->arr_n = n;
    kv->data = c->p + c->pos;
    if (et != GGUF_STR) {
        if (n > cur_left(c) / g_vsize[et])
            return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: array data past end of file (%" PRIu64
                           " elements of %s)", c->name, kv->key, n, g_vname[et]);
        if ((rc = cur_fill(c, n * g_vsize[et])) < 0) return rc;
        c->pos += (size_t)n * g_vsize[et];
        return 0;
    }
    if (n > cur_left(c) / 8)
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: array data past end of file (%" PRIu64 " strings)",
                       c->name, kv->key, n);
    kv->arr_off = malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
    if (!kv->arr_off) return err_set(c->err, c->errlen, TERN_ENOMEM, "%s: %s: out of memory", c->name, kv->key);
    size_t base = c->pos;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str_t s;
        kv->arr_off[i] = c->pos - base;
        if ((rc = rd_str(c, &s, kv->key)) < 0) return rc;
    }
    return 0;
}

static int parse_kv(cur_t *c, gguf_kv_t *kv, uint64_t idx) {
    char field[48];
    uint32_t type;
    int rc;
    snprintf(field, sizeof field, "kv[%" PRIu64 "] key", idx);
    if ((rc = rd_name(c, &kv->key, GGUF_MAX_KEY, field)) < 0) return rc;
    if ((rc = rd_u32(c, &type, kv->key)) < 0) return rc;
    if (type >= GGUF_VTYPE_COUNT)
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: unknown value type (%u)", c->name, kv->key, type);
    kv->type = (int)type;
    if (type == GGUF_ARR) return parse_arr(c, kv);
    kv->data = c->p + c->pos;
    if (type == GGUF_STR) return rd_str(c, &kv->v.s, kv->key);
    if ((rc = cur_need(c, g_vsize[type], kv->key)) < 0) return rc;
    kv_widen(kv, c->p + c->pos);
    c->pos += g_vsize[type];
    return 0;
}

/* one tensor info: name, shape, type, offset; the shape is checked for overflow and block size */
static int parse_tensor(cur_t *c, gguf_tensor_t *t, uint64_t idx) {
    char field[48];
    uint32_t ndim, type;
    uint64_t dim, off;
    int rc;
    snprintf(field, sizeof field, "tensor[%" PRIu64 "] name", idx);
    if ((rc = rd_name(c, &t->name, GGUF_MAX_NAME - 1, field)) < 0) return rc;
    if ((rc = rd_u32(c, &ndim, t->name)) < 0) return rc;
    if (ndim < 1 || ndim > 4)
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: ndim out of range 1..4 (%u)", c->name, t->name, ndim);
    t->ndim = (int)ndim;
    uint64_t nel = 1;
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < ndim; d++) {
        if ((rc = rd_u64(c, &dim, t->name)) < 0) return rc;
        if (dim == 0 || dim > (uint64_t)INT64_MAX)
            return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: dim %u out of range (%" PRIu64 ")", c->name,
                           t->name, d, dim);
        if (__builtin_mul_overflow(nel, dim, &nel) || nel > (uint64_t)INT64_MAX)
            return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: element count overflows at dim %u (%" PRIu64 ")",
                           c->name, t->name, d, dim);
        t->ne[d] = (int64_t)dim;
    }
    if ((rc = rd_u32(c, &type, t->name)) < 0 || (rc = rd_u64(c, &off, t->name)) < 0) return rc;
    const type_traits_t *tr = type_traits((int)type);
    if (!tr)
        return err_set(c->err, c->errlen, TERN_ENOTSUP, "%s: %s: unknown or unsupported tensor type (%u)", c->name,
                       t->name, type);
    t->type = (int)type;
    t->offset = off;
    if (t->ne[0] % tr->blck)
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: row length is not a multiple of %s's block size %d "
                       "(%" PRId64 ")", c->name, t->name, tr->name, tr->blck, t->ne[0]);
    uint64_t bytes;
    if (__builtin_mul_overflow(nel / (uint64_t)tr->blck, (uint64_t)tr->bytes, &bytes) ||
        bytes > c->size)
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: data past end of file (%" PRIu64 " elements of %s)",
                       c->name, t->name, nel, tr->name);
    t->nbytes = type_tensor_bytes(t->type, t->ne[0], t->ne[1] * t->ne[2] * t->ne[3]);
    return 0;
}

static uint64_t tern_pad_u64(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }
static int cmp_u64(uint64_t a, uint64_t b) { return a < b ? -1 : a > b; }
static int cmp_key(const void *a, const void *b, void *ctx) {
    const gguf_kv_t *kv = ctx;
    return strcmp(kv[*(const uint32_t *)a].key, kv[*(const uint32_t *)b].key);
}
static int cmp_tname(const void *a, const void *b, void *ctx) {
    const gguf_tensor_t *t = ctx;
    return strcmp(t[*(const uint32_t *)a].name, t[*(const uint32_t *)b].name);
}
static int cmp_toff(const void *a, const void *b, void *ctx) {
    const gguf_tensor_t *t = ctx;
    return cmp_u64(t[*(const uint32_t *)a].offset, t[*(const uint32_t *)b].offset);
}

static uint32_t *index_new(uint64_t n) {
    uint32_t *ix = malloc((size_t)(n ? n : 1) * sizeof *ix);
    if (ix)
        for (uint64_t i = 0; i < n; i++) ix[i] = (uint32_t)i;
    return ix;
}

static int check_alignment(gguf_impl_t *im, cur_t *c) {
    gguf_t *g = &im->g;
    g->alignment = GGUF_DEFAULT_ALIGN;
    const gguf_kv_t *kv = gguf_find(g, "general.alignment");
    if (!kv) return 0;
    int64_t a;
    if (gguf_get_i64(g, "general.alignment", &a) < 0)
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: general.alignment: not an integer (type %s)", c->name,
                       kv->type >= 0 && kv->type < GGUF_VTYPE_COUNT ? g_vname[kv->type] : "?");
    if (a <= 0 || a > GGUF_MAX_ALIGN || (a & (a - 1)))
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: general.alignment: not a power of two in 1..2^30 (%" PRId64
                       ")", c->name, a);
    g->alignment = (size_t)a;
    return 0;
}

/* offsets aligned, data inside the file, no two tensors overlapping */
static int check_placement(gguf_impl_t *im, cur_t *c) {
    gguf_t *g = &im->g;
    size_t data_size = g->size - g->data_offset;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor_t *t = &g->tensors[i];
        if (t->offset % g->alignment)
            return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: offset not aligned to %zu (%" PRIu64 ")", c->name,
                           t->name, g->alignment, t->offset);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: data past end of file (offset %" PRIu64 " + %zu "
                           "bytes, data section is %zu bytes)", c->name, t->name, t->offset, t->nbytes, data_size);
        t->data = g->map + g->data_offset + t->offset;
    }
    uint32_t *ix = index_new(g->n_tensors);
    if (!ix) return err_set(c->err, c->errlen, TERN_ENOMEM, "%s: tensors: out of memory", c->name);
    qsort_r(ix, (size_t)g->n_tensors, sizeof *ix, cmp_toff, g->tensors);
    int rc = 0;
    for (uint64_t i = 1; i < g->n_tensors && !rc; i++) {
        const gguf_tensor_t *a = &g->tensors[ix[i - 1]], *b = &g->tensors[ix[i]];
        if (b->offset < a->offset + a->nbytes)
            rc = err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: data overlaps tensor %s (offset %" PRIu64 ")",
                         c->name, b->name, a->name, b->offset);
    }
    free(ix);
    return rc;
}

static int check_unique(gguf_impl_t *im, cur_t *c) {
    gguf_t *g = &im->g;
    im->kv_sorted = index_new(g->n_kv);
    im->t_sorted = index_new(g->n_tensors);
    if (!im->kv_sorted || !im->t_sorted) return err_set(c->err, c->errlen, TERN_ENOMEM, "%s: index: out of memory", c->name);
    qsort_r(im->kv_sorted, (size_t)g->n_kv, sizeof(uint32_t), cmp_key, g->kv);
    qsort_r(im->t_sorted, (size_t)g->n_tensors, sizeof(uint32_t), cmp_tname, g->tensors);
    for (uint64_t i = 1; i < g->n_kv; i++)
        if (!strcmp(g->kv[im->kv_sorted[i]].key, g->kv[im->kv_sorted[i - 1]].key))
            return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: duplicate key (kv[%u])", c->name,
                           g->kv[im->kv_sorted[i]].key, im->kv_sorted[i]);
    for (uint64_t i = 1; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[im->t_sorted[i]].name, g->tensors[im->t_sorted[i - 1]].name))
            return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: %s: duplicate tensor name (tensor[%u])", c->name,
                           g->tensors[im->t_sorted[i]].name, im->t_sorted[i]);
    return 0;
}

static int parse_header(gguf_impl_t *im, cur_t *c) {
    gguf_t *g = &im->g;
    uint32_t magic;
    int rc;
    if (c->size < 4) return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: magic: file too short (%zu bytes)", c->name, c->size);
    rd_u32(c, &magic, "magic");
    if (magic != GGUF_MAGIC)
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: magic: not a GGUF file (0x%08x)", c->name, magic);
    if ((rc = rd_u32(c, &g->version, "version")) < 0) return rc;
    if (g->version != 2 && g->version != 3) {
        uint32_t sw = __builtin_bswap32(g->version);
        if (sw >= 1 && sw <= 3)
            return err_set(c->err, c->errlen, TERN_ENOTSUP, "%s: version: big-endian GGUF is not supported (0x%08x)",
                           c->name, g->version);
        return err_set(c->err, c->errlen, TERN_ENOTSUP, "%s: version: unsupported, tern reads v2 and v3 (%u)", c->name,
                       g->version);
    }
    if ((rc = rd_u64(c, &g->n_tensors, "n_tensors")) < 0 || (rc = rd_u64(c, &g->n_kv, "n_kv")) < 0) return rc;
    /* each kv and tensor info takes a minimum number of bytes: refuse counts the file cannot hold
     * before allocating anything for them */
    size_t left = cur_left(c);
    if (g->n_kv > GGUF_MAX_COUNT || g->n_kv > left / GGUF_KV_MIN)
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: n_kv: too large for the file size (%" PRIu64 ")", c->name,
                       g->n_kv);
    left -= (size_t)g->n_kv * GGUF_KV_MIN;
    if (g->n_tensors > GGUF_MAX_COUNT || g->n_tensors > left / GGUF_TI_MIN)
        return err_set(c->err, c->errlen, TERN_EFORMAT, "%s: n_tensors: too large for the file size (%" PRIu64 ")",
                       c->name, g->n_tensors);
    return 0;
}

static int parse(gguf_impl_t *im, char *err, size_t errlen) {
    gguf_t *g = &im->g;
    cur_t c = {g->map, g->size, 0, g->path, err, errlen, im->no_mmap ? im : NULL};
    int rc;
    if ((rc = parse_header(im, &c)) < 0) return rc;
    g->kv = calloc((size_t)(g->n_kv ? g->n_kv : 1), sizeof *g->kv);
    g->tensors = calloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof *g->tensors);
    if (!g->kv || !g->tensors) return err_set(err, errlen, TERN_ENOMEM, "%s: header: out of memory", g->path);
    if (im->no_mmap && !(im->t_loaded = calloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof *im->t_loaded)))
        return err_set(err, errlen, TERN_ENOMEM, "%s: header: out of memory", g->path);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if ((rc = parse_kv(&c, &g->kv[i], i)) < 0) return rc;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if ((rc = parse_tensor(&c, &g->tensors[i], i)) < 0) return rc;
    if ((rc = check_unique(im, &c)) < 0 || (rc = check_alignment(im, &c)) < 0) return rc;
    size_t a = g->alignment, end = c.pos;
    g->data_offset = end % a ? end + (a - end % a) : end;
    if (g->data_offset > g->size) {
        if (g->n_tensors)
            return err_set(err, errlen, TERN_EFORMAT, "%s: data section: starts past end of file (offset %zu)", g->path,
                           g->data_offset);
        g->data_offset = g->size;
    }
    return check_placement(im, &c);
}

static void gguf_free_parts(gguf_impl_t *im) {
    gguf_t *g = &im->g;
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) {
            free(g->kv[i].key);
            free(g->kv[i].arr_off);
        }
    if (g->tensors)
        for (uint64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    free(im->kv_sorted);
    free(im->t_sorted);
    if (im->own_map) {
        if (g->map) munmap((void *)g->map, g->size);
        if (g->fd >= 0) close(g->fd);
    }
    if (im->no_mmap) pthread_mutex_destroy(&im->mu);
    free(im->t_loaded);
    free(g->path);
    free(im);
}

/* keys and names quoted from a hostile file may hold control bytes: keep the error one line */
static void err_one_line(char *err, size_t errlen) {
    for (size_t i = 0; err && i < errlen && err[i]; i++)
        if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f) err[i] = '?';
}

static int gguf_finish_open(gguf_impl_t *im, gguf_t **out, char *err, size_t errlen) {
    int rc = parse(im, err, errlen);
    if (rc < 0) {
        err_one_line(err, errlen);
        gguf_free_parts(im);
        return rc;
    }
    *out = &im->g;
    return 0;
}

static gguf_impl_t *gguf_impl_new(const char *name) {
    gguf_impl_t *im = calloc(1, sizeof *im);
    if (!im) return NULL;
    im->g.fd = -1;
    im->g.path = strdup(name ? name : "(memory)");
    if (!im->g.path) { free(im); return NULL; }
    return im;
}

int gguf_open_mem(gguf_t **out, const void *buf, size_t size, const char *name, char *err, size_t errlen) {
    *out = NULL;
    gguf_impl_t *im = gguf_impl_new(name);
    if (!im) return err_set(err, errlen, TERN_ENOMEM, "%s: open: out of memory", name ? name : "(memory)");
    im->g.map = buf;
    im->g.size = buf ? size : 0;
    return gguf_finish_open(im, out, err, errlen);
}

/* ---- GGUF_NO_MMAP: reads into an anonymous reservation ----------------------- */

/* Makes [off, off + len) of the reservation writable and preads exactly those bytes of the
 * file into it (neighbours sharing a page stay unread). Caller holds im->mu. */
static int nm_read(gguf_impl_t *im, size_t off, size_t len, const char *what, char *err, size_t errlen) {
    gguf_t *g = &im->g;
    if (!len) return 0;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), a = off / pg * pg, b = (off + len + pg - 1) / pg * pg;
    if (b > g->size) b = g->size;   /* the reservation's last page is whole anyway */
    if (mprotect((uint8_t *)g->map + a, b - a, PROT_READ | PROT_WRITE) < 0)
        return err_set(err, errlen, TERN_ENOMEM, "%s: %s: cannot make %zu bytes readable: %s", g->path, what, b - a,
                       strerror(errno));
    for (size_t done = 0; done < len;) {
        ssize_t r = pread(g->fd, (uint8_t *)g->map + off + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            return err_set(err, errlen, TERN_EIO, "%s: %s: read at offset %zu: %s", g->path, what, off + done,
                           r < 0 ? strerror(errno) : "unexpected end of file (was it truncated?)");
        done += (size_t)r;
    }
    atomic_fetch_add(&im->bytes_read, len);
    return 0;
}

/* the header so far is [0, hdr_loaded); reads on in 256 KiB steps (never past the file) */
static int nm_header(gguf_impl_t *im, size_t end, char *err, size_t errlen) {
    if (end <= im->hdr_loaded) return 0;
    size_t want = (end + (256u << 10) - 1) & ~(size_t)((256u << 10) - 1);
    if (want > im->g.size) want = im->g.size;
    pthread_mutex_lock(&im->mu);
    int rc = nm_read(im, im->hdr_loaded, want - im->hdr_loaded, "header", err, errlen);
    if (rc == 0) im->hdr_loaded = want;
    pthread_mutex_unlock(&im->mu);
    return rc;
}

int gguf_tensor_load(const gguf_t *g, const gguf_tensor_t *t, char *err, size_t errlen) {
    gguf_impl_t *im = (gguf_impl_t *)g;   /* the load state is the reader's, not the caller's */
    if (!im->no_mmap) return 0;
    TERN_ASSERT(t >= g->tensors && t < g->tensors + g->n_tensors);
    size_t i = (size_t)(t - g->tensors);
    pthread_mutex_lock(&im->mu);
    int rc = 0;
    if (im->t_loaded[i] || (rc = nm_read(im, g->data_offset + t->offset, t->nbytes, t->name, err, errlen)) == 0)
        im->t_loaded[i]++;
    pthread_mutex_unlock(&im->mu);
    return rc;
}

void gguf_tensor_release(const gguf_t *g, const gguf_tensor_t *t) {
    gguf_impl_t *im = (gguf_impl_t *)g;
    if (!im->no_mmap) return;
    size_t i = (size_t)(t - g->tensors);
    pthread_mutex_lock(&im->mu);
    if (im->t_loaded[i] && --im->t_loaded[i] == 0) {
        /* only the pages wholly inside the tensor: an edge page may hold a neighbour's bytes */
        size_t pg = (size_t)sysconf(_SC_PAGESIZE), off = g->data_offset + t->offset;
        size_t a = (off + pg - 1) / pg * pg, b = (off + t->nbytes) / pg * pg;
        if (b > a) {
            madvise((uint8_t *)g->map + a, b - a, MADV_DONTNEED);
            mprotect((uint8_t *)g->map + a, b - a, PROT_NONE);
        }
    }
    pthread_mutex_unlock(&im->mu);
}

int gguf_mapped(const gguf_t *g) { return !((const gguf_impl_t *)g)->no_mmap; }

uint64_t gguf_bytes_read(const gguf_t *g) { return atomic_load(&((gguf_impl_t *)g)->bytes_read); }

int gguf_read(const gguf_t *g, uint64_t off, void *buf, size_t len, char *err, size_t errlen) {
    if (off > g->size || len > g->size - off)
        return err_set(err, errlen, TERN_EINVAL, "%s: bytes [%" PRIu64 ", +%zu) are outside the file", g->path, off, len);
    if (!((const gguf_impl_t *)g)->no_mmap) {
        memcpy(buf, g->map + off, len);
        return 0;
    }
    for (size_t done = 0; done < len;) {
        ssize_t r = pread(g->fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            return err_set(err, errlen, TERN_EIO, "%s: read at offset %" PRIu64 ": %s", g->path, off + done,
                           r < 0 ? strerror(errno) : "unexpected end of file");
        done += (size_t)r;
    }
    return 0;
}

int gguf_open(gguf_t **out, const char *path, char *err, size_t errlen) {
    return gguf_open_ex(out, path, 0, err, errlen);
}

int gguf_open_ex(gguf_t **out, const char *path, int flags, char *err, size_t errlen) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, errlen, errno == ENOENT ? TERN_ENOTFOUND : TERN_EIO, "%s: open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return err_set(err, errlen, TERN_EIO, "%s: stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(err, errlen, TERN_EIO, "%s: open: not a regular file (mode 0%o)", path, (unsigned)st.st_mode);
    }
    if (st.st_size < 8) {
        close(fd);
        return err_set(err, errlen, TERN_EFORMAT, "%s: magic: file too short for a GGUF header (%lld bytes)", path,
                       (long long)st.st_size);
    }
    int nm = (flags & GGUF_NO_MMAP) != 0;
    /* no-mmap: address space only (PROT_NONE, no commit); pages become memory as they are read */
    void *map = nm ? mmap(NULL, (size_t)st.st_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
                   : mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        int e = errno;
        close(fd);
        return err_set(err, errlen, TERN_EIO, "%s: mmap: %s (%lld bytes)", path, strerror(e), (long long)st.st_size);
    }
    gguf_impl_t *im = gguf_impl_new(path);
    if (!im) {
        munmap(map, (size_t)st.st_size);
        close(fd);
        return err_set(err, errlen, TERN_ENOMEM, "%s: open: out of memory", path);
    }
    im->own_map = 1;
    im->no_mmap = nm;
    if (nm) pthread_mutex_init(&im->mu, NULL);
    im->g.fd = fd;
    im->g.map = map;
    im->g.size = (size_t)st.st_size;
    return gguf_finish_open(im, out, err, errlen);
}

void gguf_close(gguf_t **g) {
    if (!g || !*g) return;
    gguf_free_parts((gguf_impl_t *)*g);
    *g = NULL;
}

/* ---- lookups -------------------------------------------------------------- */

const gguf_kv_t *gguf_find(const gguf_t *g, const char *key) {
    if (!g || !key) return NULL;
    const gguf_impl_t *im = (const gguf_impl_t *)g;
    if (!im->kv_sorted) return NULL;
    size_t lo = 0, hi = (size_t)g->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const gguf_kv_t *kv = &g->kv[im->kv_sorted[mid]];
        int c = strcmp(kv->key, key);
        if (c == 0) return kv;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const gguf_tensor_t *gguf_find_tensor(const gguf_t *g, const char *name) {
    if (!g || !name) return NULL;
    const gguf_impl_t *im = (const gguf_impl_t *)g;
    if (!im->t_sorted) return NULL;
    size_t lo = 0, hi = (size_t)g->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const gguf_tensor_t *t = &g->tensors[im->t_sorted[mid]];
        int c = strcmp(t->name, name);
        if (c == 0) return t;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

int gguf_get_i64(const gguf_t *g, const char *key, int64_t *out) {
    const gguf_kv_t *kv = gguf_find(g, key);
    if (!kv) return TERN_ENOTFOUND;
    switch (kv->type) {
    case GGUF_U8: case GGUF_U16: case GGUF_U32: *out = (int64_t)kv->v.u; return 0;
    case GGUF_U64:
        if (kv->v.u > (uint64_t)INT64_MAX) return TERN_EFORMAT;
        *out = (int64_t)kv->v.u;
        return 0;
    case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64: *out = kv->v.i; return 0;
    default: return TERN_EFORMAT;
    }
}

int gguf_get_f32(const gguf_t *g, const char *key, float *out) {
    const gguf_kv_t *kv = gguf_find(g, key);
    if (!kv) return TERN_ENOTFOUND;
    if (kv->type != GGUF_F32 && kv->type != GGUF_F64) return TERN_EFORMAT;
    *out = (float)kv->v.f;
    return 0;
}

int gguf_get_bool(const gguf_t *g, const char *key, int *out) {
    const gguf_kv_t *kv = gguf_find(g, key);
    if (!kv) return TERN_ENOTFOUND;
    if (kv->type != GGUF_BOOL) return TERN_EFORMAT;
    *out = kv->v.u != 0;
    return 0;
}

int gguf_get_str(const gguf_t *g, const char *key, char *buf, size_t cap) {
    const gguf_kv_t *kv = gguf_find(g, key);
    if (!kv) return TERN_ENOTFOUND;
    if (kv->type != GGUF_STR) return TERN_EFORMAT;
    if (cap) {
        size_t n = kv->v.s.len < cap - 1 ? (size_t)kv->v.s.len : cap - 1;
        memcpy(buf, kv->v.s.ptr, n);
        buf[n] = 0;
    }
    return 0;
}

gguf_str_t gguf_arr_str(const gguf_kv_t *kv, uint64_t i) {
    gguf_str_t s = {0, NULL};
    if (!kv || kv->type != GGUF_ARR || kv->arr_type != GGUF_STR || i >= kv->arr_n || !kv->arr_off) return s;
    const uint8_t *p = (const uint8_t *)kv->data + kv->arr_off[i];
    memcpy(&s.len, p, 8);
    s.ptr = (const char *)p + 8;
    return s;
}

/* ---- writer --------------------------------------------------------------- */

typedef struct wkv {
    char *key;
    int type;
    uint8_t *val;          /* the value as stored in the file (arrays: elem type, count, elements) */
    size_t len;
} wkv_t;

typedef struct wtensor {
    char *name;
    int type, ndim;
    int64_t ne[4];
    uint64_t offset;       /* in the data section, before alignment is known: fixed in begin */
    size_t nbytes;
} wtensor_t;

struct gguf_writer {
    wkv_t *kv;
    size_t n_kv, cap_kv;
    wtensor_t *t;
    size_t n_t, cap_t;
    int oom;               /* a setter could not allocate: begin fails */
    int begun, finished, failed;
    char *path, *tmp;
    FILE *f;
    char *fbuf;
    size_t alignment;
    size_t cur;            /* tensor being written */
    size_t cur_done;       /* its bytes written so far */
};

gguf_writer_t *gguf_writer_new(void) {
    gguf_writer_t *w = calloc(1, sizeof *w);
    if (w) w->alignment = GGUF_DEFAULT_ALIGN;
    return w;
}

void gguf_writer_destroy(gguf_writer_t **pw) {
    if (!pw || !*pw) return;
    gguf_writer_t *w = *pw;
    if (w->f) {
        fclose(w->f);
        if (w->tmp) unlink(w->tmp);
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w->path);
    free(w->tmp);
    free(w->fbuf);
    free(w);
    *pw = NULL;
}

/* stores (key, type, val[len]) taking ownership of val; replaces an existing key */
static void w_put(gguf_writer_t *w, const char *key, int type, uint8_t *val, size_t len) {
    TERN_ASSERT(w && key && !w->begun);
    TERN_ASSERT(key[0] && strlen(key) <= GGUF_MAX_KEY);   /* the reader refuses anything else */
    if (!val && len) { w->oom = 1; return; }
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) {
            free(w->kv[i].val);
            w->kv[i].type = type;
            w->kv[i].val = val;
            w->kv[i].len = len;
            return;
        }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 32;
        wkv_t *nk = realloc(w->kv, cap * sizeof *nk);
        if (!nk) { w->oom = 1; free(val); return; }
        w->kv = nk;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) { w->oom = 1; free(val); return; }
    w->kv[w->n_kv++] = (wkv_t){k, type, val, len};
}

static void w_scalar(gguf_writer_t *w, const char *key, int type, const void *v) {
    size_t n = g_vsize[type];
    uint8_t *b = malloc(n);
    if (b) memcpy(b, v, n);
    w_put(w, key, type, b, n);
}

void gguf_writer_set_u32(gguf_writer_t *w, const char *key, uint32_t v) { w_scalar(w, key, GGUF_U32, &v); }
void gguf_writer_set_i32(gguf_writer_t *w, const char *key, int32_t v) { w_scalar(w, key, GGUF_I32, &v); }
void gguf_writer_set_u64(gguf_writer_t *w, const char *key, uint64_t v) { w_scalar(w, key, GGUF_U64, &v); }
void gguf_writer_set_f32(gguf_writer_t *w, const char *key, float v) { w_scalar(w, key, GGUF_F32, &v); }
void gguf_writer_set_bool(gguf_writer_t *w, const char *key, int v) {
    uint8_t b = v != 0;
    w_scalar(w, key, GGUF_BOOL, &b);
}

void gguf_writer_set_str(gguf_writer_t *w, const char *key, const char *v) {
    uint64_t n = strlen(v);
    uint8_t *b = malloc(8 + (size_t)n);
    if (b) {
        memcpy(b, &n, 8);
        memcpy(b + 8, v, (size_t)n);
    }
    w_put(w, key, GGUF_STR, b, 8 + (size_t)n);
}

void gguf_writer_set_arr_strn(gguf_writer_t *w, const char *key, const char *const *s, const uint64_t *len, uint64_t n) {
    size_t total = 12;
    for (uint64_t i = 0; i < n; i++) total += 8 + (size_t)len[i];
    uint8_t *b = malloc(total);
    if (b) {
        uint32_t et = GGUF_STR;
        size_t p = 12;
        memcpy(b, &et, 4);
        memcpy(b + 4, &n, 8);
        for (uint64_t i = 0; i < n; i++) {
            memcpy(b + p, &len[i], 8);
            if (len[i]) memcpy(b + p + 8, s[i], (size_t)len[i]);
            p += 8 + (size_t)len[i];
        }
    }
    w_put(w, key, GGUF_ARR, b, total);
}

void gguf_writer_set_arr(gguf_writer_t *w, const char *key, int elem_type, const void *data, uint64_t n) {
    TERN_ASSERT(elem_type >= 0 && elem_type < GGUF_VTYPE_COUNT && elem_type != GGUF_ARR);
    if (elem_type == GGUF_STR) {
        const char *const *s = data;
        uint64_t *len = malloc((size_t)(n ? n : 1) * sizeof *len);
        if (!len) { w->oom = 1; return; }
        for (uint64_t i = 0; i < n; i++) len[i] = strlen(s[i]);
        gguf_writer_set_arr_strn(w, key, s, len, n);
        free(len);
        return;
    }
    size_t total = 12 + (size_t)n * g_vsize[elem_type];
    uint8_t *b = malloc(total);
    if (b) {
        uint32_t et = (uint32_t)elem_type;
        memcpy(b, &et, 4);
        memcpy(b + 4, &n, 8);
        if (n) memcpy(b + 12, data, total - 12);
    }
    w_put(w, key, GGUF_ARR, b, total);
}

/* the bytes of a kv's value as stored in the file it came from */
static void kv_span(const gguf_kv_t *kv, const uint8_t **start, size_t *len) {
    const uint8_t *d = kv->data;
    if (kv->type == GGUF_STR) { *start = d; *len = 8 + (size_t)kv->v.s.len; return; }
    if (kv->type != GGUF_ARR) { *start = d; *len = g_vsize[kv->type]; return; }
    *start = d - 12;
    if (kv->arr_type != GGUF_STR) { *len = 12 + (size_t)kv->arr_n * g_vsize[kv->arr_type]; return; }
    size_t end = 0;
    if (kv->arr_n) {
        gguf_str_t last = gguf_arr_str(kv, kv->arr_n - 1);
        end = (size_t)((const uint8_t *)last.ptr - d) + (size_t)last.len;
    }
    *len = 12 + end;
}

void gguf_writer_copy_kv(gguf_writer_t *w, const gguf_t *g, const char *prefix) {
    size_t pl = prefix ? strlen(prefix) : 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv_t *kv = &g->kv[i];
        if (pl && strncmp(kv->key, prefix, pl)) continue;
        const uint8_t *s;
        size_t n;
        kv_span(kv, &s, &n);
        uint8_t *b = malloc(n);
        if (b) memcpy(b, s, n);
        w_put(w, kv->key, kv->type, b, n);
    }
}

int gguf_writer_add_tensor(gguf_writer_t *w, const char *name, int type, int ndim, const int64_t *ne) {
    TERN_ASSERT(w && !w->begun);
    const type_traits_t *tr = type_traits(type);
    size_t nl = name ? strlen(name) : 0;
    if (!tr || nl == 0 || nl >= GGUF_MAX_NAME || ndim < 1 || ndim > 4) return TERN_EINVAL;
    wtensor_t t = {0};
    int64_t rows = 1;
    for (int d = 0; d < 4; d++) {
        t.ne[d] = d < ndim ? ne[d] : 1;
        if (t.ne[d] < 1) return TERN_EINVAL;
        if (d > 0 && __builtin_mul_overflow(rows, t.ne[d], &rows)) return TERN_EINVAL;
    }
    t.nbytes = type_tensor_bytes(type, t.ne[0], rows);
    if (!t.nbytes) return TERN_EINVAL;
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return TERN_EINVAL;
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 64;
        wtensor_t *nt = realloc(w->t, cap * sizeof *nt);
        if (!nt) return TERN_ENOMEM;
        w->t = nt;
        w->cap_t = cap;
    }
    if (!(t.name = strdup(name))) return TERN_ENOMEM;
    t.type = type;
    t.ndim = ndim;
    w->t[w->n_t] = t;
    return (int)w->n_t++;
}

static int w_out(gguf_writer_t *w, const void *p, size_t n, char *err, size_t errlen) {
    if (n && fwrite(p, 1, n, w->f) != n) {
        w->failed = 1;
        return err_set(err, errlen, TERN_EIO, "%s: write: %s", w->tmp, strerror(errno));
    }
    return 0;
}

static int w_pad(gguf_writer_t *w, uint64_t pos, char *err, size_t errlen) {
    static const uint8_t zeros[GGUF_DEFAULT_ALIGN * 2];
    size_t pad = (size_t)((w->alignment - pos % w->alignment) % w->alignment);
    while (pad) {
        size_t n = pad < sizeof zeros ? pad : sizeof zeros;
        int rc = w_out(w, zeros, n, err, errlen);
        if (rc < 0) return rc;
        pad -= n;
    }
    return 0;
}

static int w_str(gguf_writer_t *w, const char *s, char *err, size_t errlen) {
    uint64_t n = strlen(s);
    int rc = w_out(w, &n, 8, err, errlen);
    return rc < 0 ? rc : w_out(w, s, (size_t)n, err, errlen);
}

/* alignment from a general.alignment the caller set or copied (must be a power of two) */
static int w_alignment(gguf_writer_t *w, char *err, size_t errlen) {
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment")) continue;
        uint64_t a = 0;
        int t = w->kv[i].type;
        if (t == GGUF_ARR || t == GGUF_STR || t == GGUF_F32 || t == GGUF_F64 || t == GGUF_BOOL || w->kv[i].len > 8)
            return err_set(err, errlen, TERN_EINVAL, "%s: general.alignment: not an integer", w->path);
        memcpy(&a, w->kv[i].val, w->kv[i].len);
        if (!a || a > GGUF_MAX_ALIGN || (a & (a - 1)))
            return err_set(err, errlen, TERN_EINVAL, "%s: general.alignment: not a power of two (%" PRIu64 ")", w->path, a);
        w->alignment = (size_t)a;
    }
    return 0;
}

int gguf_writer_begin(gguf_writer_t *w, const char *path, char *err, size_t errlen) {
    TERN_ASSERT(w && path && !w->begun);
    int rc;
    if (w->oom) return err_set(err, errlen, TERN_ENOMEM, "%s: metadata: out of memory", path);
    w->path = strdup(path);
    w->tmp = malloc(strlen(path) + 5);
    w->fbuf = malloc(1 << 20);
    if (!w->path || !w->tmp || !w->fbuf) return err_set(err, errlen, TERN_ENOMEM, "%s: out of memory", path);
    sprintf(w->tmp, "%s.tmp", path);
    if ((rc = w_alignment(w, err, errlen)) < 0) return rc;
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        off += tern_pad_u64(w->t[i].nbytes, w->alignment);
    }
    w->f = fopen(w->tmp, "wb");
    if (!w->f) return err_set(err, errlen, TERN_EIO, "%s: create: %s", w->tmp, strerror(errno));
    setvbuf(w->f, w->fbuf, _IOFBF, 1 << 20);
    w->begun = 1;
    uint32_t hdr[2] = {GGUF_MAGIC, 3};
    uint64_t counts[2] = {w->n_t, w->n_kv};
    if ((rc = w_out(w, hdr, 8, err, errlen)) < 0 || (rc = w_out(w, counts, 16, err, errlen)) < 0) return rc;
    for (size_t i = 0; i < w->n_kv; i++) {
        uint32_t t = (uint32_t)w->kv[i].type;
        if ((rc = w_str(w, w->kv[i].key, err, errlen)) < 0 || (rc = w_out(w, &t, 4, err, errlen)) < 0 ||
            (rc = w_out(w, w->kv[i].val, w->kv[i].len, err, errlen)) < 0)
            return rc;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor_t *t = &w->t[i];
        uint32_t nd = (uint32_t)t->ndim, ty = (uint32_t)t->type;
        if ((rc = w_str(w, t->name, err, errlen)) < 0 || (rc = w_out(w, &nd, 4, err, errlen)) < 0) return rc;
        for (int d = 0; d < t->ndim; d++) {
            uint64_t ne = (uint64_t)t->ne[d];
            if ((rc = w_out(w, &ne, 8, err, errlen)) < 0) return rc;
        }
        if ((rc = w_out(w, &ty, 4, err, errlen)) < 0 || (rc = w_out(w, &t->offset, 8, err, errlen)) < 0) return rc;
    }
    long pos = ftell(w->f);
    if (pos < 0) return err_set(err, errlen, TERN_EIO, "%s: ftell: %s", w->tmp, strerror(errno));
    return w_pad(w, (uint64_t)pos, err, errlen);
}

int gguf_writer_write(gguf_writer_t *w, const void *data, size_t n, char *err, size_t errlen) {
    TERN_ASSERT(w && w->begun && !w->finished);
    const uint8_t *p = data;
    int rc;
    if (w->failed) return err_set(err, errlen, TERN_EIO, "%s: an earlier write failed", w->tmp);
    while (n) {
        if (w->cur >= w->n_t)
            return err_set(err, errlen, TERN_EINVAL, "%s: %zu bytes written past the last tensor", w->tmp, n);
        const wtensor_t *t = &w->t[w->cur];
        size_t k = t->nbytes - w->cur_done < n ? t->nbytes - w->cur_done : n;
        if ((rc = w_out(w, p, k, err, errlen)) < 0) return rc;
        p += k;
        n -= k;
        w->cur_done += k;
        if (w->cur_done == t->nbytes) {
            if ((rc = w_pad(w, t->nbytes, err, errlen)) < 0) return rc;
            w->cur++;
            w->cur_done = 0;
        }
    }
    return 0;
}

int gguf_writer_finish(gguf_writer_t *w, char *err, size_t errlen) {
    TERN_ASSERT(w && w->begun && !w->finished);
    if (w->failed) return err_set(err, errlen, TERN_EIO, "%s: an earlier write failed", w->tmp);
    if (w->cur < w->n_t)
        return err_set(err, errlen, TERN_EINVAL, "%s: %s: tensor data incomplete (%zu of %zu bytes)", w->tmp,
                       w->t[w->cur].name, w->cur_done, w->t[w->cur].nbytes);
    FILE *f = w->f;
    w->f = NULL;
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) { bad = 1; e = errno; }
    if (bad) {
        unlink(w->tmp);
        return err_set(err, errlen, TERN_EIO, "%s: write: %s", w->tmp, strerror(e));
    }
    if (rename(w->tmp, w->path) != 0) {
        e = errno;
        unlink(w->tmp);
        return err_set(err, errlen, TERN_EIO, "%s: rename to %s: %s", w->tmp, w->path, strerror(e));
    }
    w->finished = 1;
    return 0;
}
