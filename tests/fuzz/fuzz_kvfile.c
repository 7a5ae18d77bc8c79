/* fuzz_kvfile: libFuzzer target for the slot / prompt cache file reader (coordinator/kvfile.c).
 * Any input must either parse into a file whose counts match the input's size exactly (header,
 * RoPE record, tokens, rows, checksum) — then it is checked against a model made of its own header
 * (which must pass: same identity and RoPE, a context of its length) and converted to every other
 * cache type — or fail with a one-line error; never a crash, leak or hang. Seeds: tests/fuzz/seeds/kvfile
 * (tests/fuzz/seeds/kvfile/make.py). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "coordinator/kvfile.h"
#include "core/err.h"
#include "kernels/ops.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    kvfile_t f;
    char err[512];
    err[0] = 0;
    if (kvfile_parse(&f, buf, size, err, sizeof err) < 0) {   /* buf is freed */
        if (!err[0] || strchr(err, '\n') || f.data || f.toks) abort();
        return 0;
    }
    size_t rope = f.m.rope_old ? 0 : KVFILE_ROPE_BYTES;   /* version 1: no RoPE record */
    size_t head = 8 + 4 + 8 + MODEL_ID_HASH_LEN + 5 * 4 + 8 + rope + 4 + 4 * (size_t)f.n_tok + 8;
    if (f.n_tok < 1 || head + kvfile_kv_bytes(&f.m, f.n_tok) + 8 != size || f.kv != f.data + head) abort();
    kvfile_model_t want = f.m;
    want.rope_old = 0, want.rope_plain = 1;   /* a version-1 file restores into a plain-RoPE model */
    int rc = kvfile_check(&f, &want, f.n_tok, err, sizeof err);
    if (rc < 0 && (!err[0] || strchr(err, '\n'))) abort();
    if (rc < 0 && strstr(err, "RoPE")) abort();   /* its own record (or none, into plain RoPE) must match */
    for (int t = KV_F32; t <= KV_Q8_0 && rc == 0; t++) {   /* conversions (q8_0 only where it fits) */
        if (t == f.m.kv_type || (t == KV_Q8_0 && f.m.kv_dim % KV_Q8_0_BLOCK)) continue;
        want.kv_type = t, want.row = ops_kv_bytes(t, want.kv_dim);
        if (kvfile_check(&f, &want, f.n_tok, err, sizeof err) < 0) {
            if (!err[0] || strchr(err, '\n')) abort();
            break;
        }
        if (f.m.kv_type != t || f.len != kvfile_kv_bytes(&f.m, f.n_tok)) abort();
    }
    kvfile_free(&f);
    return 0;
}
