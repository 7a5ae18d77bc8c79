/* hash: the two non-cryptographic mixers tern uses — FNV-1a over bytes (model identities, the
 * tokenizer's token map, the generated vocabulary) and MurmurHash3's 64-bit finaliser (seeded
 * tie-breaks, step-id bases). Values are part of formats (model hashes, cached weights): they
 * must not change. Not here: cryptography (CURVE is libzmq's). */
#ifndef TERN_HASH_H
#define TERN_HASH_H
#include <stddef.h>
#include <stdint.h>

#define HASH_FNV_OFFSET 0xcbf29ce484222325ull   /* FNV-1a 64-bit offset basis */

/* FNV-1a 64 of p[0..n), continuing from h (HASH_FNV_OFFSET to start) */
static inline uint64_t hash_fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* MurmurHash3's fmix64: every input bit moves every output bit */
static inline uint64_t hash_mix64(uint64_t x) {
    x ^= x >> 33, x *= 0xff51afd7ed558ccdull, x ^= x >> 33, x *= 0xc4ceb9fe1a85ec53ull, x ^= x >> 33;
    return x;
}

#endif
