/* fuzz_gguf: libFuzzer target for the GGUF reader. Every input either opens (then every tensor
 * must lie inside the buffer and every lookup must be safe) or fails with a one-line error
 * naming the file. Built with -DTERN_FUZZ=ON (clang); run by tests/fuzz/run.sh. */
#include "core/gguf.h"
#include "core/model_spec.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_t *g = NULL;
    char err[512];
    err[0] = 0;
    if (gguf_open_mem(&g, data, size, "fuzz.gguf", err, sizeof err) < 0) {
        if (g || strncmp(err, "fuzz.gguf: ", 11) || strchr(err, '\n')) abort();
        return 0;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor_t *t = &g->tensors[i];
        const uint8_t *p = t->data;
        if (p < data || p + t->nbytes > data + size || t->nbytes == 0) abort();
        if (gguf_find_tensor(g, t->name) != t) abort();   /* names are unique */
        volatile uint8_t sink = t->nbytes ? p[t->nbytes - 1] : 0;  /* ASan checks the last byte */
        (void)sink;
    }
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv_t *kv = &g->kv[i];
        if (gguf_find(g, kv->key) != kv) abort();
        if (kv->type == GGUF_ARR && kv->arr_type == GGUF_STR && kv->arr_n) {
            gguf_str_t s = gguf_arr_str(kv, kv->arr_n - 1);
            if (s.len) { volatile char c = s.ptr[s.len - 1]; (void)c; }
        }
    }
    int64_t v;
    float f;
    char buf[64];
    gguf_get_i64(g, "general.alignment", &v);
    gguf_get_f32(g, "llama.rope.freq_base", &f);
    gguf_get_str(g, "general.architecture", buf, sizeof buf);
    hparams_t hp;
    hparams_from_gguf(&hp, g, err, sizeof err);
    gguf_close(&g);
    return 0;
}
