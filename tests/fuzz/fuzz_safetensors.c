/* fuzz_safetensors: libFuzzer target for the safetensors header parser (tools/safetensors.c).
 * Every input either opens — then every tensor lies inside the buffer, sizes equal dtype ×
 * shape, tensors do not overlap, and float tensors read back — or fails with one line naming
 * the file. Built with -DTERN_FUZZ=ON (clang). A useful seed: the 8-byte length + JSON header
 * of any small .safetensors file. */
#include "tools/safetensors.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file_t *f = NULL;
    char err[512];
    err[0] = 0;
    if (st_open_mem(&f, data, size, "fuzz.safetensors", err, sizeof err) < 0) {
        if (f || strncmp(err, "fuzz.safetensors: ", 18) || strchr(err, '\n')) abort();
        return 0;
    }
    const uint8_t *end_prev = NULL;
    for (int i = 0; i < f->n; i++) {
        const st_tensor_t *t = &f->t[i];
        if (t->data < data + f->data_off || t->data + t->nbytes > data + size) abort();
        if ((uint64_t)t->nelem * st_dtype_size(t->dtype) != t->nbytes) abort();
        if (t->nbytes && end_prev && t->data < end_prev) abort();   /* sorted, no overlap */
        if (t->nbytes) end_prev = t->data + t->nbytes;
        if (st_file_find(f, t->name) == NULL) abort();
        if (st_dtype_float(t->dtype) && t->nelem) {
            float y[4];
            int64_t n = t->nelem < 4 ? t->nelem : 4;
            st_read_f32(t, t->nelem - n, n, y);
        }
    }
    st_close(&f);
    return 0;
}
