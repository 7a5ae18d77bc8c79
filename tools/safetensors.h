/* safetensors: a validating reader for Hugging Face .safetensors files (one file, or a sharded
 * checkpoint directory with model.safetensors.index.json). The file is mmap'd read-only and
 * every header field (length, dtype, shape, offsets, overlaps) is checked against the file
 * before a tensor pointer is formed. Not here: what the tensors mean (tools/convert.c). */
#ifndef TERN_SAFETENSORS_H
#define TERN_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

enum st_dtype { ST_F64, ST_F32, ST_F16, ST_BF16, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL, ST_DTYPE_COUNT };

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    char *name;              /* NUL-terminated copy */
    int dtype;               /* enum st_dtype */
    int ndim;                /* 0..ST_MAX_DIMS (0: a scalar) */
    int64_t shape[ST_MAX_DIMS];
    int64_t nelem;           /* product of shape (1 for a scalar) */
    size_t nbytes;           /* data_offsets[1] - data_offsets[0] = nelem * dtype size */
    const uint8_t *data;     /* into the map */
    const struct st_file *file;
} st_tensor_t;

typedef struct st_file {
    char *path;
    int fd;                  /* -1 for st_open_mem */
    const uint8_t *map;
    size_t size;
    size_t data_off;         /* 8 + header length */
    int n;                   /* tensors, sorted by data offset */
    st_tensor_t *t;
} st_file_t;

/* Opens and validates PATH. On failure: a negative TERN_E* code, *out = NULL, and one line in
 * err naming the file and the tensor or field at fault. */
int st_open(st_file_t **out, const char *path, char *err, size_t errlen);
/* the same on a buffer that must outlive the result (fuzzer, tests) */
int st_open_mem(st_file_t **out, const void *buf, size_t size, const char *name, char *err, size_t errlen);
void st_close(st_file_t **f);
const st_tensor_t *st_file_find(const st_file_t *f, const char *name);

size_t st_dtype_size(int dtype);
const char *st_dtype_name(int dtype);           /* "BF16", ... */
int st_dtype_float(int dtype);                  /* 1 for F32, F16, BF16, F64 */
/* elements [off, off+n) of a float tensor as f32 (bounds are the caller's: TERN_ASSERT) */
void st_read_f32(const st_tensor_t *t, int64_t off, int64_t n, float *y);

/* A checkpoint directory: model.safetensors, or the shards named by
 * model.safetensors.index.json (every shard it names must exist and hold what the map says),
 * or else every *.safetensors file in the directory. Tensor names must be unique. */
typedef struct st_set {
    int nfiles;
    st_file_t **files;
    int n;                   /* all tensors of all files */
    const st_tensor_t **t;   /* sorted by name */
} st_set_t;

int st_set_open(st_set_t **out, const char *dir, char *err, size_t errlen);
void st_set_close(st_set_t **s);
const st_tensor_t *st_set_find(const st_set_t *s, const char *name);

#endif
