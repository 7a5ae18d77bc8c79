/* worker_cli: `tern worker` — flags for worker_loop_run. */
#include "core/cache.h"
#include "core/err.h"
#include "core/log.h"
#include "core/numa.h"
#include "core/opt.h"
#include "proto/curve.h"
#include "proto/mpi_launch.h"
#include "worker/stage.h"
#include "worker/worker_loop.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    const char *device = "cpu";
    int mpi = 0;
    const char *numa = NULL;
    opt_t opts[] = {
        {NULL, "--listen", OPT_STR, &listen, "ENDPOINT", "where to listen: tcp://HOST:PORT (PORT * = any) or ipc://PATH", 0, 0},
        {"-m", "--model", OPT_STR, &cfg.model, "FILE", "this node's copy of the model GGUF", 0, 0},
        {"-t", "--threads", OPT_INT, &cfg.threads, "N", "threads (0: all cores)", 0, 1024},
        {"-tb", "--threads-batch", OPT_INT, &cfg.threads_batch, "N", "threads of steps with more than one token, prompts (0: as -t)", 0, 1024},
        {NULL, "--no-mmap", OPT_FLAG, &cfg.no_mmap, NULL, "read this shard's tensors into memory instead of mapping the file", 0, 0},
        {NULL, "--mlock", OPT_FLAG, &cfg.mlock, NULL, "keep this shard's weights in memory (no swapping, no eviction)", 0, 0},
        {NULL, "--memory", OPT_SIZE, &memory, "SIZE", "memory this worker may use, e.g. 12GiB (0: all)", 0, 0},
        {NULL, "--name", OPT_STR, &cfg.name, "NAME", "node name in logs and errors (default host:port)", 0, 0},
        {NULL, "--keys", OPT_STR, &cfg.keys_dir, "DIR", "CURVE on: own key pair DIR/NAME.key; lets in the holders of DIR/*.pub", 0, 0},
        {NULL, "--device", OPT_STR, &device, "DEV", "where this worker runs its layers: cpu | cuda (GPU 0)", 0, 0},
        {NULL, "--mpi", OPT_FLAG, &mpi, NULL, "started by mpirun: serve this rank (rank 0 is the coordinator; -m defaults to its model)", 0, 0},
        {NULL, "--numa", OPT_STR, &numa, "auto|N", "bind threads and memory to one NUMA node (auto: mpirun's binding, else local rank)", 0, 0},
        {NULL, "--fetch-weights", OPT_FLAG, &cfg.fetch, NULL, "no -m: get the layers from the coordinator once (cached by hash)", 0, 0},
        {NULL, "--cache-dir", OPT_STR, &cfg.cache_dir, "DIR", "where fetched weights are kept (default ~/.cache/tern/weights)", 0, 0},
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
    if (strcmp(device, "cpu") && strcmp(device, "cuda")) {
        fprintf(stderr, "tern worker: --device %s: expected cpu or cuda\n", device);
        return 1;
    }
    if (!strcmp(device, "cuda")) {   /* fail now, not at the first LoadShard */
        char gpu[256];
        if (cuda_stage_probe(gpu, sizeof gpu, err, sizeof err) < 0) {
            fprintf(stderr, "tern worker: %s\n", err);
            return 1;
        }
        log_i("device: %s", gpu);
        stage_default_device(STAGE_DEV_CUDA);
        cfg.cuda = 1;   /* its Hello announces the GPU's memory and bandwidth */
    }
    char mpath[4096], mname[TP_NAME_MAX];
    if (mpi_launch_check("worker", mpi, err, sizeof err) < 0) {
        fprintf(stderr, "tern worker: %s\n", err);
        return 1;
    }
    if (mpi) {
        int rank = 0;
        if (mpi_launch_start(NULL, mpath, sizeof mpath, &rank, NULL, err, sizeof err) < 0) {
            fprintf(stderr, "tern worker: %s\n", err);
            return 1;
        }
        if (rank == 0) {
            fprintf(stderr, "tern worker: rank 0 must be the coordinator: put `tern run|serve|chat -m M --mpi` first on the "
                            "mpirun line (mpirun -np 1 tern serve -m M --mpi : -np 3 tern worker --mpi)\n");
            return 1;
        }
        dup2(2, 1);   /* only the coordinator writes to stdout */
        listen = "mpi://self";
        /* no -m: rank 0's file when this host has it at the same path (else --fetch-weights) */
        if (!cfg.model && !cfg.fetch && mpath[0]) {
            if (access(mpath, R_OK) == 0) cfg.model = mpath;
            else log_w("rank 0's model %s is not readable here: give -m or --fetch-weights", mpath);
        }
        if (!cfg.name) {
            char host[40] = "worker";
            gethostname(host, sizeof host - 1);
            snprintf(mname, sizeof mname, "%s.rank%d", host, rank);
            cfg.name = mname;
        }
    }
    cfg.threads_given = cfg.threads > 0;
    if (numa) {
        mpi_env_t env;
        numa_plan_t np;
        mpi_env_read(&env);
        if (numa_bind(&np, numa, env.local_rank, err, sizeof err) < 0) {
            fprintf(stderr, "tern worker: %s\n", err);
            return 1;
        }
        if (!cfg.threads) cfg.threads = np.n_cores;
    }
    cfg.listen = listen;
    cfg.memory = memory;
    cfg.idle_exit_ms = idle;
    char cache[1024];
    if (cfg.fetch && !cfg.cache_dir) cfg.cache_dir = cache_path(cache, sizeof cache, "weights");
    if (cfg.fetch && cfg.model) {
        fprintf(stderr, "tern worker: --fetch-weights is for a worker without -m MODEL; give one of them\n");
        return 1;
    }
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
    if (rc == 0 && mpi) mpi_launch_clean();
    free(allowed);
    if (rc < 0) {
        fprintf(stderr, "tern worker: %s\n", err);
        return 1;
    }
    return 0;
}
