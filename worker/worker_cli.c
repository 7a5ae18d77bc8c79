/* worker_cli: `tern worker` — flags for worker_loop_run. */
#include "core/err.h"
#include "core/log.h"
#include "core/opt.h"
#include "worker/worker_loop.h"
#include <stdio.h>
#include <string.h>

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
    if (worker_loop_run(&cfg, err, sizeof err) < 0) {
        fprintf(stderr, "tern worker: %s\n", err);
        return 1;
    }
    return 0;
}
