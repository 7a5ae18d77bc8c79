/* types: the table behind types.h. */
#include "core/types.h"
#include <strings.h>

static const type_traits_t g_traits[TT_COUNT] = {
    [TT_F32] = {"f32", 1, 4, 0},
    [TT_F16] = {"f16", 1, 2, 0},
    [TT_Q4_0] = {"q4_0", 32, 18, 0},
    [TT_Q5_0] = {"q5_0", 32, 22, 0},
    [TT_Q8_0] = {"q8_0", QK8_0, 34, 0},
    [TT_Q4_K] = {"q4_k", QK_K, 144, 0},
    [TT_Q5_K] = {"q5_k", QK_K, 176, 0},
    [TT_Q6_K] = {"q6_k", QK_K, 210, 0},
    [TT_BF16] = {"bf16", 1, 2, 0},
    [TT_TQ1_0] = {"tq1_0", QK_K, 54, 1},
    [TT_TQ2_0] = {"tq2_0", QK_K, 66, 1},
    [TT_I2_S] = {"i2_s", QK_I2_S, 32, 1},
};

const type_traits_t *type_traits(int type) {
    if (type < 0 || type >= TT_COUNT || !g_traits[type].name) return 0;
    return &g_traits[type];
}

const char *type_name(int type) {
    const type_traits_t *t = type_traits(type);
    return t ? t->name : "?";
}

int type_from_name(const char *name) {
    for (int i = 0; i < TT_COUNT; i++)
        if (g_traits[i].name && strcasecmp(g_traits[i].name, name) == 0) return i;
    return -1;
}

size_t type_row_bytes(int type, int64_t cols) {
    const type_traits_t *t = type_traits(type);
    if (!t || type == TT_I2_S || cols <= 0 || cols % t->blck) return 0;
    return (size_t)(cols / t->blck) * t->bytes;
}

size_t type_tensor_bytes(int type, int64_t cols, int64_t rows) {
    const type_traits_t *t = type_traits(type);
    if (!t || cols <= 0 || rows <= 0 || cols % t->blck) return 0;
    if (type == TT_I2_S) return (size_t)(cols / QK_I2_S) * (size_t)rows * 32 + I2_S_TAIL;
    return (size_t)(cols / t->blck) * t->bytes * (size_t)rows;
}
