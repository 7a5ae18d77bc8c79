/* cli_run: `tern run` — generate text from a prompt and stream it to stdout as it is made;
 * a timing summary goes to stderr. Local by default; --cluster/--workers run the same
 * generation on a cluster of workers. --prompt-cache FILE (llama-cli's): the slot's keys and
 * values come from FILE when it holds a beginning of the prompt, and go back to it afterwards. */
#include "coordinator/cli_common.h"
#include "coordinator/engine.h"
#include "core/err.h"
#include "core/log.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int print_piece(void *user, const char *piece, size_t len, int32_t token) {
    (void)user;
    (void)token;
    if (len) {
        fwrite(piece, 1, len, stdout);
        fflush(stdout);
    }
    return 0;
}

/* --prompt-cache: slot 0 takes FILE's tokens and rows when FILE exists (*n: how many), and the
 * prefix cache lets the prompt start after what it shares with them. 0 (also without a file: it
 * is made after the run) or <0 with a one-line err (another model, corrupt, too long). */
static int prompt_cache_load(tern_model *m, const char *path, int *n, char *err, size_t errlen) {
    sched_set_prefix_cache(&m->sched, 1);
    int rc = sched_slot_restore(&m->sched, 0, path, n, NULL, err, errlen);
    if (rc == TERN_ENOTFOUND) {
        log_i("prompt cache %s does not exist yet", path);
        return 0;
    }
    if (rc == 0) log_i("prompt cache: %d tokens restored from %s", *n, path);
    return rc;
}

int cli_run(int argc, char **argv) {
    log_set_role("C");
    cli_model_opts_t mo;
    cli_model_opts_default(&mo);
    const char *prompt = NULL, *file = NULL, *pcache = NULL;
    int n_predict = 128, no_display = 0, summary = 1, pcache_ro = 0;
    opt_t opts[96] = {
        {"-p", "--prompt", OPT_STR, &prompt, "TEXT", "prompt", 0, 0},
        {"-f", "--file", OPT_STR, &file, "FILE", "read the prompt from a file", 0, 0},
        {"-n", "--n-predict", OPT_INT, &n_predict, "N", "tokens to generate", 0, 1 << 20},
        {NULL, "--no-display-prompt", OPT_FLAG, &no_display, NULL, "do not echo the prompt", 0, 0},
        {NULL, "--summary", OPT_FLAG, &summary, NULL, "timing summary on stderr (--summary=0 to hide)", 0, 0},
        {NULL, "--prompt-cache", OPT_STR, &pcache, "FILE", "start after the beginning of the prompt whose keys and values FILE holds (same model), and save the slot to FILE afterwards", 0, 0},
        {NULL, "--prompt-cache-ro", OPT_FLAG, &pcache_ro, NULL, "with --prompt-cache: only read FILE", 0, 0},
    };
    cli_model_opts_table(&mo, opts, (int)(sizeof opts / sizeof opts[0]), 1);
    char err[512], *pos[4];
    int npos, rc = opt_parse(opts, argc, argv, pos, 0, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern run -m MODEL (-p PROMPT | -f FILE) [-n N] [options]", opts);
        return 0;
    }
    if (rc < 0 || (rc = cli_model_opts_check(&mo, err, sizeof err)) < 0) {
        fprintf(stderr, "tern run: %s\n", err);
        return 1;
    }
    if (prompt && file) { fprintf(stderr, "tern run: use -p or -f, not both\n"); return 1; }
    char *text = NULL;
    if (file && !(text = cli_read_file(file, "prompt file", 64L << 20, err, sizeof err))) { fprintf(stderr, "tern run: %s\n", err); return 1; }
    const char *ptext = text ? text : prompt ? prompt : "";
    tern_model *m;
    if (tern_load(&m, &mo.p, err, sizeof err) < 0) {
        fprintf(stderr, "tern run: %s\n", err);
        free(text);
        return 1;
    }
    int n_restored = 0;
    if (pcache && (rc = prompt_cache_load(m, pcache, &n_restored, err, sizeof err)) < 0) {
        fprintf(stderr, "tern run: --prompt-cache %s\n", err);
        tern_model_free(&m);
        free(text);
        return 1;
    }
    if (!no_display) { fputs(ptext, stdout); fflush(stdout); }
    tern_stats st = {0};
    rc = tern_generate(m, ptext, n_predict, &mo.s, print_piece, NULL, &st);
    fputc('\n', stdout);
    fflush(stdout);
    if (rc < 0) fprintf(stderr, "tern run: %s\n", tern_last_error(m));
    int n_saved = 0, src = 0, slot = 0;
    for (int i = 1; i < m->sched.n_seq; i++)   /* the run's slot: the one used last (-np > 1) */
        if (m->sched.seqs[i].last_use > m->sched.seqs[slot].last_use) slot = i;
    if (rc >= 0 && pcache && !pcache_ro &&
        (src = sched_slot_save(&m->sched, slot, pcache, &n_saved, NULL, err, sizeof err)) < 0)
        fprintf(stderr, "tern run: --prompt-cache: cannot save: %s\n", err);
    if (rc >= 0 && summary) {
        int fed = st.n_prompt - st.n_cached;
        fprintf(stderr, "\nload time    = %9.2f ms\n", st.t_load * 1e3);
        if (pcache)
            fprintf(stderr, "prompt cache = %d tokens restored, %d of them reused, %d saved\n", n_restored, st.n_cached,
                    n_saved);
        fprintf(stderr, "prompt eval  = %9.2f ms / %5d tokens (%8.2f tokens/s)\n", st.t_prompt * 1e3, fed,
                st.t_prompt > 0 ? fed / st.t_prompt : 0);
        fprintf(stderr, "eval         = %9.2f ms / %5d tokens (%8.2f tokens/s)\n", st.t_gen * 1e3, st.n_gen,
                st.t_gen > 0 ? st.n_gen / st.t_gen : 0);
        if (st.n_ctx_shifts) fprintf(stderr, "ctx shifts   = %9d\n", st.n_ctx_shifts);
        if (st.n_drafted)
            fprintf(stderr, "drafts       = %ld of %ld draft tokens taken (%.0f%%)\n", st.n_draft_ok, st.n_drafted,
                    100.0 * (double)st.n_draft_ok / (double)st.n_drafted);
    }
    tern_model_free(&m);
    free(text);
    return rc < 0 || src < 0 ? 1 : 0;
}
