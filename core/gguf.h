/* gguf: GGUF v3 reader (mmap, validated before any pointer is formed) and a streaming
 * writer (header first, then tensor data in order, so models larger than memory can be
 * written; output goes to PATH.tmp and is renamed on gguf_writer_finish).
 * Not here: what keys mean for a model (core/model_spec), tensor maths (kernels/). */
#ifndef TERN_GGUF_H
#define TERN_GGUF_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* metadata value types, as numbered by the GGUF spec */
enum gguf_vtype {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
    GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STR = 8, GGUF_ARR = 9, GGUF_U64 = 10, GGUF_I64 = 11,
    GGUF_F64 = 12, GGUF_VTYPE_COUNT = 13
};

/* A string inside the mapped file: NOT NUL-terminated. */
typedef struct gguf_str { uint64_t len; const char *ptr; } gguf_str_t;

typedef struct gguf_kv {
    char *key;             /* NUL-terminated copy */
    int type;              /* enum gguf_vtype */
    int arr_type;          /* element type when type == GGUF_ARR */
    uint64_t arr_n;        /* element count when type == GGUF_ARR */
    const void *data;      /* scalar: points at the value in the map; ARR: at the first element.
                              ARR of STR: use gguf_arr_str(); strings are length-prefixed in place */
    union { uint64_t u; int64_t i; double f; gguf_str_t s; } v; /* scalar value, widened */
    uint64_t *arr_off;     /* ARR of STR: byte offset of element i from data (reader-owned) */
} gguf_kv_t;

typedef struct gguf_tensor {
    char *name;            /* NUL-terminated copy */
    int type;              /* enum tensor_type (core/types.h) */
    int ndim;              /* 1..4 */
    int64_t ne[4];         /* ne[0] = elements per row (cols), ne[1] = rows, unused dims = 1 */
    uint64_t offset;       /* from the start of the data section */
    size_t nbytes;         /* type_tensor_bytes(type, ne[0], ne[1]*ne[2]*ne[3]) */
    const void *data;      /* into the map; aligned to the file's alignment. GGUF_NO_MMAP: read
                              only after gguf_tensor_load */
} gguf_tensor_t;

typedef struct gguf {
    char *path;
    int fd;
    const uint8_t *map;    /* whole file, PROT_READ, MAP_SHARED; GGUF_NO_MMAP: the file's size of
                              owned memory holding the header and the tensors loaded so far */
    size_t size;
    uint32_t version;      /* 2 or 3 accepted */
    uint64_t n_kv, n_tensors;
    gguf_kv_t *kv;
    gguf_tensor_t *tensors;
    size_t alignment;      /* general.alignment or 32 */
    size_t data_offset;    /* file offset of the data section */
} gguf_t;

/* Opens and validates PATH. On failure returns a negative TERN_E* code, *out = NULL and a
 * one-line reason naming the file, the field and the value in err. Never reads outside the
 * file and never allocates more than the file could describe. */
int gguf_open(gguf_t **out, const char *path, char *err, size_t errlen);
enum gguf_open_flags {
    GGUF_NO_MMAP = 1,      /* --no-mmap: pread the header now and each tensor when it is loaded */
};
int gguf_open_ex(gguf_t **out, const char *path, int flags, char *err, size_t errlen);
/* Makes t->data readable: GGUF_NO_MMAP reads t's bytes (only those) from the file into owned
 * memory, once; a mapped file needs nothing. Thread-safe. 0, or TERN_EIO with err. */
int gguf_tensor_load(const gguf_t *g, const gguf_tensor_t *t, char *err, size_t errlen);
/* Undoes one gguf_tensor_load: with GGUF_NO_MMAP the memory goes back once no load holds it */
void gguf_tensor_release(const gguf_t *g, const gguf_tensor_t *t);
/* 1 for a mapped file (gguf_open, gguf_open_mem), 0 under GGUF_NO_MMAP */
int gguf_mapped(const gguf_t *g);
/* bytes read from the file by GGUF_NO_MMAP so far, header included (tests: a shard reads only its own) */
uint64_t gguf_bytes_read(const gguf_t *g);
/* copies file bytes [off, off + len) into buf, mapped or not (serving --fetch-weights). 0 or <0 */
int gguf_read(const gguf_t *g, uint64_t off, void *buf, size_t len, char *err, size_t errlen);
/* Same checks on a buffer (used by the fuzzer); the buffer must outlive the gguf_t. */
int gguf_open_mem(gguf_t **out, const void *buf, size_t size, const char *name, char *err, size_t errlen);
void gguf_close(gguf_t **g);

/* lookups: NULL / -1 / default when missing. Typed getters accept any integer type for
 * integers (range-checked) and F32/F64 for floats. */
const gguf_kv_t *gguf_find(const gguf_t *g, const char *key);
int gguf_get_i64(const gguf_t *g, const char *key, int64_t *out);   /* 0 ok, <0 missing/wrong type */
int gguf_get_f32(const gguf_t *g, const char *key, float *out);
int gguf_get_bool(const gguf_t *g, const char *key, int *out);
/* string value copied into buf (truncated, NUL-terminated); 0 ok */
int gguf_get_str(const gguf_t *g, const char *key, char *buf, size_t cap);
/* element i of an array of strings (bounds-checked; the array was validated at open) */
gguf_str_t gguf_arr_str(const gguf_kv_t *kv, uint64_t i);
const gguf_tensor_t *gguf_find_tensor(const gguf_t *g, const char *name);

/* ---- writer ------------------------------------------------------------- */
typedef struct gguf_writer gguf_writer_t;

gguf_writer_t *gguf_writer_new(void);
void gguf_writer_destroy(gguf_writer_t **w);   /* removes PATH.tmp if not finished */
/* metadata (copied); a key set twice keeps the last value */
void gguf_writer_set_u32(gguf_writer_t *w, const char *key, uint32_t v);
void gguf_writer_set_i32(gguf_writer_t *w, const char *key, int32_t v);
void gguf_writer_set_u64(gguf_writer_t *w, const char *key, uint64_t v);
void gguf_writer_set_f32(gguf_writer_t *w, const char *key, float v);
void gguf_writer_set_bool(gguf_writer_t *w, const char *key, int v);
void gguf_writer_set_str(gguf_writer_t *w, const char *key, const char *v);
/* arrays: elements copied; for GGUF_STR, `data` is `const char *const *` (NUL-terminated) */
void gguf_writer_set_arr(gguf_writer_t *w, const char *key, int elem_type, const void *data, uint64_t n);
/* arrays of strings with explicit lengths (strings may contain NUL bytes) */
void gguf_writer_set_arr_strn(gguf_writer_t *w, const char *key, const char *const *s, const uint64_t *len, uint64_t n);
/* copies every kv of g (optionally only keys starting with prefix, NULL = all) */
void gguf_writer_copy_kv(gguf_writer_t *w, const gguf_t *g, const char *prefix);
/* tensor infos, in data order; ne as in gguf_tensor_t. Returns the index or <0. */
int gguf_writer_add_tensor(gguf_writer_t *w, const char *name, int type, int ndim, const int64_t *ne);
/* writes header + kv + tensor infos to PATH.tmp; then write each tensor's bytes in order */
int gguf_writer_begin(gguf_writer_t *w, const char *path, char *err, size_t errlen);
/* appends bytes of the current tensor (may be called several times per tensor; when the
 * tensor's nbytes are complete, padding is written and the next tensor begins) */
int gguf_writer_write(gguf_writer_t *w, const void *data, size_t n, char *err, size_t errlen);
/* checks all tensors were written, fsyncs, renames PATH.tmp → PATH */
int gguf_writer_finish(gguf_writer_t *w, char *err, size_t errlen);

#endif
