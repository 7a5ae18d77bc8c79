/* worker_cli: `tern worker` — flags for worker_loop_run. */
#include "core/err.h"
#include "core/log.h"
#include "core/opt.h"
#include "proto/curve.h"
#include "worker/worker_loop.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* CURVE from --keys DIR: own pair DIR/NAME.key; clients let in: every DIR/ *.pub */
static int keys_load(const char *dir, const char *name, tp_curve_t *cv, char (**allowed)[TP_KEY_Z85], char *err,
                     size_t errlen) {
    char path[1024], tmp[512];
    memset(cv, 0, sizeof *cv);
    if (!name) return err_set(err, errlen, TERN_EINVAL, "--keys needs --name NAME (the key pair is DIR/NAME.key)");
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = curve_load_identity(path, cv, tmp, sizeof tmp);
    if (rc < 0) return err_set(err, errlen, rc, "key pair %s.key: %s (tern keygen -o %s)", path, tmp, path);
    if ((rc = curve_read_dir(dir, allowed, &cv->n_allowed, tmp, sizeof tmp)) < 0)
        return err_set(err, errlen, rc, "--keys %s: %s", dir, tmp);
    cv->allowed = (const char (*)[TP_KEY_Z85])*allowed;
    return 0;
}

int worker_cli(int argc, char **argv) {
    log_set_role("W");
    worker_cfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    const char *listen = "tcp://0.0.0.0:7101";
    uint64_t memory = 0;
    int idle = 0;
    opt_t opts[] = {
        {NULL, "--listen", OPT_STR, &listen, "ENDPOINT", "where to listen: tcp://HOST:PORT (PORT * = any) or ipc://PATH", 0, 0},
        {"-m", "--model", OPT_STR, &cfg.model, "FILE", "this node's copy of the model GGUF", 0, 0},
        {"-t", "--threads", OPT_INT, &cfg.threads, "N", "threads (0: all cores)", 0, 1024},
        {NULL, "--memory", OPT_SIZE, &memory, "SIZE", "memory this worker may use, e.g. 12GiB (0: all)", 0, 0},
        {NULL, "--name", OPT_STR, &cfg.name, "NAME", "node name in logs and errors (default host:port)", 0, 0},
        {NULL, "--keys", OPT_STR, &cfg.keys_dir, "DIR", "CURVE on: own key pair DIR/NAME.key; lets in the holders of DIR/*.pub", 0, 0},
        {NULL, "--idle-exit", OPT_INT, &idle, "MS", "exit after this long without messages (0: never)", 0, 86400000},
        OPT_END,
    };
    char err[512], *pos[2];
    int npos, rc = opt_parse(opts, argc, argv, pos, 0, &npos, err, sizeof err);
    if (rc == 1) {
        opt_help(stdout, "tern worker --listen tcp://HOST:PORT -m MODEL [-t N] [--memory SIZE]", opts);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "tern worker: %s\n", err);
        return 1;
    }
    cfg.listen = listen;
    cfg.memory = memory;
    cfg.idle_exit_ms = idle;
    tp_curve_t cv;
    char (*allowed)[TP_KEY_Z85] = NULL;
    if (cfg.keys_dir) {
        if (keys_load(cfg.keys_dir, cfg.name, &cv, &allowed, err, sizeof err) < 0) {
            fprintf(stderr, "tern worker: %s\n", err);
            return 1;
        }
        cfg.curve = &cv;
        log_i("CURVE on: %d client key%s let in from %s", cv.n_allowed, cv.n_allowed == 1 ? "" : "s", cfg.keys_dir);
    }
    rc = worker_loop_run(&cfg, err, sizeof err);
    free(allowed);
    if (rc < 0) {
        fprintf(stderr, "tern worker: %s\n", err);
        return 1;
    }
    return 0;
}
