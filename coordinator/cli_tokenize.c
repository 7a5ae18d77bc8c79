/* cli_tokenize: `tern tokenize` (text → `id -> 'piece'` lines like llama.cpp's llama-tokenize,
 * or `[1, 2, 3]` with --ids) and `tern detokenize` (ids → text). Both read only the tokenizer
 * metadata of the GGUF, so a vocab-only file works as well as a model. */
#include "coordinator/tokenizer.h"
#include "core/err.h"
#include "core/gguf.h"
#include "core/opt.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int open_tokenizer(const char *cmd, const char *model, gguf_t **g, tokenizer_t **t) {
    char err[512];
    if (!model) { fprintf(stderr, "tern %s: -m FILE is required (a model or vocab GGUF)\n", cmd); return 1; }
    if (gguf_open(g, model, err, sizeof err) < 0) { fprintf(stderr, "tern %s: %s\n", cmd, err); return 1; }
    if (tokenizer_load(t, *g, err, sizeof err) < 0) {
        fprintf(stderr, "tern %s: %s: %s\n", cmd, model, err);
        gguf_close(g);
        return 1;
    }
    return 0;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    for (size_t r; b && (r = fread(b + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) { free(b); b = NULL; }
            b = nb;
        }
    }
    fclose(f);
    *len = n;
    return b;
}

/* prints a piece; bytes that are not valid UTF-8 (half a character) are shown as \xNN */
static void print_piece(const char *p, int n) {
    for (int i = 0; i < n;) {
        unsigned char c = (unsigned char)p[i];
        int l = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
        int ok = l > 0 && i + l <= n;
        for (int k = 1; ok && k < l; k++) ok = ((unsigned char)p[i + k] & 0xC0) == 0x80;
        if (ok) { fwrite(p + i, 1, (size_t)l, stdout); i += l; }
        else { printf("\\x%02x", c); i++; }
    }
}

int cli_tokenize(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *file = NULL;
    int ids_only = 0, no_bos = 0, no_parse = 0;
    const opt_t opts[] = {
        {"-m", "--model", OPT_STR, &model, "FILE", "model or vocab-only GGUF", 0, 0},
        {"-p", "--prompt", OPT_STR, &prompt, "TEXT", "text to tokenize", 0, 0},
        {"-f", "--file", OPT_STR, &file, "FILE", "read the text from FILE", 0, 0},
        {NULL, "--ids", OPT_FLAG, &ids_only, NULL, "print only the ids, as [1, 2, 3]", 0, 0},
        {NULL, "--no-bos", OPT_FLAG, &no_bos, NULL, "do not prepend BOS", 0, 0},
        {NULL, "--no-parse-special", OPT_FLAG, &no_parse, NULL, "treat <|...|> in the text as plain text", 0, 0},
        OPT_END};
    char err[512], *pos[1];
    int npos = 0, rc = opt_parse(opts, argc, argv, pos, 1, &npos, err, sizeof err);
    const char *usage = "tern tokenize -m FILE (-p TEXT | -f FILE) [--ids] [--no-bos] [--no-parse-special]";
    if (rc == 1) { opt_help(stdout, usage, opts); return 0; }
    if (rc < 0) { fprintf(stderr, "tern tokenize: %s\n", err); return 1; }
    if (npos == 1 && !prompt && !file) prompt = pos[0];
    if (!!prompt + !!file != 1) { fprintf(stderr, "tern tokenize: give exactly one of -p TEXT or -f FILE\n%s\n", usage); return 1; }
    size_t len = 0;
    char *text = NULL;
    if (file && !(text = slurp(file, &len))) {
        fprintf(stderr, "tern tokenize: cannot read %s: %s\n", file, strerror(errno));
        return 1;
    }
    gguf_t *g = NULL;
    tokenizer_t *t = NULL;
    if (open_tokenizer("tokenize", model, &g, &t)) { free(text); return 1; }
    const char *src = text ? text : prompt;
    if (!text) len = strlen(prompt);
    int add_bos = !no_bos && tokenizer_add_bos(t);
    int n = tokenizer_encode(t, src, len, add_bos, !no_parse, NULL, 0);
    int32_t *ids = n >= 0 ? malloc(((size_t)n + 1) * sizeof *ids) : NULL;
    if (n < 0 || !ids || tokenizer_encode(t, src, len, add_bos, !no_parse, ids, n) != n) {
        fprintf(stderr, "tern tokenize: tokenization failed (%s)\n", tern_strerror(n < 0 ? n : TERN_ENOMEM));
        rc = 1;
    } else if (ids_only) {
        printf("[");
        for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
        printf("]\n");
    } else {
        int cap = tokenizer_max_piece(t) + 1;
        char *piece = malloc((size_t)cap);
        for (int i = 0; piece && i < n; i++) {
            int m = tokenizer_piece(t, ids[i], 1, piece, cap);
            printf("%6d -> '", ids[i]);
            print_piece(piece, m < 0 ? 0 : m);
            printf("'\n");
        }
        free(piece);
    }
    free(ids);
    free(text);
    tokenizer_destroy(&t);
    gguf_close(&g);
    return rc;
}

int cli_detokenize(int argc, char **argv) {
    const char *model = NULL;
    int no_special = 0;
    const opt_t opts[] = {
        {"-m", "--model", OPT_STR, &model, "FILE", "model or vocab-only GGUF", 0, 0},
        {NULL, "--no-special", OPT_FLAG, &no_special, NULL, "leave control tokens out of the text", 0, 0},
        OPT_END};
    enum { MAXPOS = 4096 };
    char err[512], **pos = malloc(MAXPOS * sizeof *pos);
    int npos = 0, rc = pos ? opt_parse(opts, argc, argv, pos, MAXPOS, &npos, err, sizeof err) : TERN_ENOMEM;
    const char *usage = "tern detokenize -m FILE ID... (ids separated by spaces or commas, [] allowed)";
    if (rc == 1) { opt_help(stdout, usage, opts); free(pos); return 0; }
    if (rc < 0) { fprintf(stderr, "tern detokenize: %s\n", pos ? err : "out of memory"); free(pos); return 1; }
    gguf_t *g = NULL;
    tokenizer_t *t = NULL;
    if (open_tokenizer("detokenize", model, &g, &t)) { free(pos); return 1; }
    int cap = 256, n = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    rc = ids ? 0 : 1;
    for (int a = 0; a < npos && !rc; a++) {
        for (const char *p = pos[a]; *p && !rc;) {
            if (*p == '[' || *p == ']' || *p == ',' || *p == ' ') { p++; continue; }
            char *e;
            errno = 0;
            long v = strtol(p, &e, 10);
            if (e == p || errno || v < 0 || v >= tokenizer_n_vocab(t)) {
                fprintf(stderr, "tern detokenize: '%s' is not a token id (0..%d)\n", pos[a], tokenizer_n_vocab(t) - 1);
                rc = 1;
                break;
            }
            if (n == cap) {
                int32_t *ni = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
                if (!ni) { rc = 1; break; }
                ids = ni;
            }
            ids[n++] = (int32_t)v;
            p = e;
        }
    }
    if (!rc) {
        int m = tokenizer_decode(t, ids, n, !no_special, NULL, 0);
        char *out = m >= 0 ? malloc((size_t)m + 1) : NULL;
        if (!out || tokenizer_decode(t, ids, n, !no_special, out, m + 1) != m) {
            fprintf(stderr, "tern detokenize: decoding failed\n");
            rc = 1;
        } else {
            fwrite(out, 1, (size_t)m, stdout);
            printf("\n");
        }
        free(out);
    }
    free(ids);
    free(pos);
    tokenizer_destroy(&t);
    gguf_close(&g);
    return rc;
}
