/* types: tensor element types with ggml's type ids (GGUF files store these ids),
 * their block sizes and byte sizes. Only the types tern reads are listed; others are
 * refused by name. I2_S is bitnet.cpp's: not blocked per row — a whole tensor of
 * rows×cols trits is one stream of 128-trit blocks followed by a 32-byte tail whose
 * first 4 bytes are the f32 scale (see DESIGN.md). */
#ifndef TERN_TYPES_H
#define TERN_TYPES_H
#include <stddef.h>
#include <stdint.h>

enum tensor_type {
    TT_F32 = 0,
    TT_F16 = 1,
    TT_Q4_0 = 2,
    TT_Q5_0 = 6,
    TT_Q8_0 = 8,
    TT_Q4_K = 12,
    TT_Q5_K = 13,
    TT_Q6_K = 14,
    TT_BF16 = 30,
    TT_TQ1_0 = 34,
    TT_TQ2_0 = 35,
    TT_I2_S = 36,
    TT_COUNT = 37
};

#define QK8_0 32     /* Q8_0: {f16 d; int8 q[32]}            = 34 bytes / 32 */
                     /* Q4_0: {f16 d; u8 qs[16]}             = 18 bytes / 32 */
                     /* Q5_0: {f16 d; u8 qh[4]; u8 qs[16]}   = 22 bytes / 32 */
#define QK_K 256     /* TQ1_0: {u8 qs[48]; u8 qh[4]; f16 d}  = 54 bytes / 256 */
                     /* TQ2_0: {u8 qs[64]; f16 d}            = 66 bytes / 256 */
                     /* Q4_K: {f16 d, dmin; u8 scales[12]; u8 qs[128]}           = 144 / 256 */
                     /* Q5_K: {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} = 176 / 256 */
                     /* Q6_K: {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}      = 210 / 256 */
                     /* (byte meanings: kernels/kquant.h) */
#define QK_I2_S 128  /* I2_S: 32 bytes / 128, + 32-byte tail per tensor */
#define I2_S_TAIL 32

typedef struct type_traits {
    const char *name;    /* "f32", "tq2_0", "i2_s", ... (lower case, as tern's flags spell them) */
    int blck;            /* elements per block (row length must be a multiple) */
    size_t bytes;        /* bytes per block */
    int ternary;         /* 1 for TQ1_0, TQ2_0, I2_S */
} type_traits_t;

/* NULL for ids tern does not know. */
const type_traits_t *type_traits(int type);
const char *type_name(int type);                   /* "?" when unknown */
int type_from_name(const char *name);              /* -1 when unknown; case-insensitive */
/* Bytes of a tensor of `rows` rows of `cols` elements; 0 if cols is not a multiple of
 * the block size or the type is unknown. I2_S adds its 32-byte tail once per tensor. */
size_t type_tensor_bytes(int type, int64_t cols, int64_t rows);
/* Bytes of one row, or 0 when rows are not separately addressable (I2_S). */
size_t type_row_bytes(int type, int64_t cols);

#endif
