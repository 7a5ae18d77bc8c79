/* model_id: a fast identity of a model file — its size and a 64-bit FNV-1a hash of the first
 * 4 MiB (header, metadata, tensor table), 64 samples of 64 KiB spread over the file and the last
 * 1 MiB. Reads ~9 MiB whatever the file size, so a 100 GB model is identified in milliseconds;
 * it tells different files apart, it is not a cryptographic checksum. */
#ifndef TERN_MODEL_ID_H
#define TERN_MODEL_ID_H
#include <stddef.h>
#include <stdint.h>

#define MODEL_ID_HASH_LEN 24   /* "fnv64:" + 16 hex + NUL, rounded */

int model_id_compute(const char *path, uint64_t *size, char hash[MODEL_ID_HASH_LEN], char *err, size_t errlen);

#endif
