/* main: the `tern` binary — a table of subcommands. Each subcommand lives in its own module and
 * is linked weakly, so a build without one (or before it is written) says so clearly. Global
 * flags handled here before the subcommand: -v/--verbose, --log-format json. */
#include "core/log.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WEAK __attribute__((weak))
typedef int (*cmd_fn)(int argc, char **argv);

int cli_run(int, char **) WEAK;
int cli_chat(int, char **) WEAK;
int cli_serve(int, char **) WEAK;
int worker_cli(int, char **) WEAK;
int cli_bench(int, char **) WEAK;
int cli_perplexity(int, char **) WEAK;
int cli_embed(int, char **) WEAK;
int convert_main(int, char **) WEAK;
int quantize_main(int, char **) WEAK;
int mkmodel_main(int, char **) WEAK;
int cli_info(int, char **) WEAK;
int cli_keygen(int, char **) WEAK;
int cli_tokenize(int, char **) WEAK;
int cli_detokenize(int, char **) WEAK;

static const struct {
    const char *name;
    cmd_fn fn;
    const char *help;
} g_cmds[] = {
    {"run", cli_run, "generate text from a prompt (local, or --cluster/--workers)"},
    {"chat", cli_chat, "interactive chat with the model's template"},
    {"serve", cli_serve, "OpenAI-compatible HTTP server"},
    {"worker", worker_cli, "serve a shard of layers to a coordinator"},
    {"bench", cli_bench, "llama-bench style benchmark (--kernels: kernel roofline)"},
    {"perplexity", cli_perplexity, "perplexity of a text file"},
    {"embed", cli_embed, "embeddings of texts (pooled final hidden states)"},
    {"convert", convert_main, "Hugging Face safetensors -> GGUF"},
    {"quantize", quantize_main, "re-quantize a GGUF"},
    {"mkmodel", mkmodel_main, "write a synthetic model of a real shape"},
    {"info", cli_info, "describe a GGUF file"},
    {"keygen", cli_keygen, "write a CURVE key pair"},
    {"tokenize", cli_tokenize, "text -> tokens"},
    {"detokenize", cli_detokenize, "tokens -> text"},
};
#define NCMDS (int)(sizeof g_cmds / sizeof g_cmds[0])

static void usage(FILE *f) {
    fprintf(f, "usage: tern [-v] [--log-format text|json] COMMAND [options]\n\ncommands:\n");
    for (int i = 0; i < NCMDS; i++)
        fprintf(f, "  %-12s %s%s\n", g_cmds[i].name, g_cmds[i].help, g_cmds[i].fn ? "" : " (not in this build)");
    fprintf(f, "\n`tern COMMAND --help` lists a command's options.\n");
}

int main(int argc, char **argv) {
    int i = 1;
    const char *ll = getenv("TERN_LOG_FORMAT");
    if (ll && !strcmp(ll, "json")) log_set_json(1);
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) log_set_level(LOG_D);
        else if (!strcmp(argv[i], "--log-format") && i + 1 < argc) log_set_json(!strcmp(argv[++i], "json"));
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(stdout); return 0; }
        else if (!strcmp(argv[i], "--version")) { printf("tern 0.1.0\n"); return 0; }
        else { fprintf(stderr, "tern: unknown option '%s' (see tern --help)\n", argv[i]); return 2; }
    }
    if (i >= argc) { usage(stderr); return 2; }
    for (int c = 0; c < NCMDS; c++) {
        if (strcmp(argv[i], g_cmds[c].name)) continue;
        if (!g_cmds[c].fn) {
            fprintf(stderr, "tern: '%s' is not available in this build\n", argv[i]);
            return 2;
        }
        /* subcommand-level -v as well */
        for (int k = i + 1; k < argc; k++)
            if (!strcmp(argv[k], "-v") || !strcmp(argv[k], "--verbose")) log_set_level(LOG_D);
        return g_cmds[c].fn(argc - i, argv + i);
    }
    fprintf(stderr, "tern: unknown command '%s' (see tern --help)\n", argv[i]);
    return 2;
}
