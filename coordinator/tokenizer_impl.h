/* tokenizer_impl: the tokenizer's internal state, shared by tokenizer.c (encode/decode) and
 * chat.c (templates). Not a public API: other modules use coordinator/tokenizer.h. */
#ifndef TERN_TOKENIZER_IMPL_H
#define TERN_TOKENIZER_IMPL_H
#include <stddef.h>
#include <stdint.h>
#include "core/gguf.h"

enum tok_type { TOK_SPM = 1, TOK_BPE = 2 };
/* tokenizer.ggml.token_type values, as llama.cpp numbers them */
enum tok_ttype {
    TOK_TYPE_UNDEFINED = 0, TOK_TYPE_NORMAL = 1, TOK_TYPE_UNKNOWN = 2, TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4, TOK_TYPE_UNUSED = 5, TOK_TYPE_BYTE = 6
};
enum tok_attr { TOK_ATTR_LSTRIP = 1, TOK_ATTR_RSTRIP = 2 };
enum tok_pre {
    TOK_PRE_DEFAULT, TOK_PRE_LLAMA3, TOK_PRE_GPT2, TOK_PRE_FALCON, TOK_PRE_DEEPSEEK_CODER,
    TOK_PRE_STARCODER, TOK_PRE_QWEN2
};
enum chat_family {
    CHAT_NONE, CHAT_LLAMA3, CHAT_BITNET, CHAT_FALCON3, CHAT_CHATML, CHAT_LLAMA2, CHAT_LLAMA2_SYS, CHAT_PHI3
};

typedef struct tok_bchar { char utf8[4]; uint8_t len; int32_t id; } tok_bchar_t;  /* byte → byte-level char */
typedef struct tok_merge { uint64_t key; int32_t rank, res; } tok_merge_t;         /* (a,b) → rank, a+b */

struct tokenizer {
    int type, pre;
    char pre_name[64];
    int n_vocab, n_merges;
    char *arena;            /* token texts, each NUL-terminated */
    uint32_t *tok_off, *tok_len;
    float *score;           /* (n_vocab,) SPM merge priority */
    uint8_t *ttype;         /* (n_vocab,) enum tok_ttype */
    uint8_t *attr;          /* (n_vocab,) enum tok_attr bits */
    char *pieces;           /* decoded bytes per token */
    uint32_t *piece_off, *piece_len;
    int max_piece;
    int32_t *htab; uint32_t hmask;      /* open addressing: text → id */
    tok_merge_t *mtab; uint32_t mmask;  /* open addressing: pair → merge */
    void *re[8]; int n_re;              /* pcre2_code *, applied in order */
    int byte_tok[256];                  /* SPM <0xNN> (or 1-char) token per byte, -1 */
    tok_bchar_t bchar[256];             /* BPE byte-level character per byte */
    int bos, eos, eot, unk, pad;
    int add_bos, add_eos, add_space_prefix, ignore_merges;
    int spm_cut;                        /* SPM: words can be merged one at a time */
    int eog[16]; int n_eog;
    int fim[6];                         /* enum tokenizer_fim: ids, -1 when none */
    int *special; int n_special;        /* control/user-defined/unknown ids, longest text first */
    char *chat_template; int chat_family;
    struct jinja *jinja;                /* chat_template_set(jinja): render with it, not the family */
    int tool_fmt;                       /* TOOLFMT_* of the jinja template's source (toolfmt.h) */
    int thinks;                         /* the template in use writes <think> (a reasoning model's) */
};

/* chat.c: picks the chat family from tokenizer.chat_template / general.architecture */
int chat_init(struct tokenizer *t, const gguf_t *g, char *err, size_t errlen);
/* chat.c: frees what chat_init and chat_template_set hold */
void chat_free(struct tokenizer *t);

#endif
