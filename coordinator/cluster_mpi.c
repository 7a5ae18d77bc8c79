/* cluster_mpi: see cluster_mpi.h. The pipeline is cluster_client.c's, on mpi:// endpoints; this
 * file only builds the worker list from the ranks and ends the job when the pipeline goes. */
#include "coordinator/cluster_mpi.h"
#include "coordinator/cluster_client.h"
#include "coordinator/cluster_file.h"
#include "core/err.h"
#include "core/log.h"
#include "proto/mpi_launch.h"
#include "proto/transport.h"
#include "worker/worker_loop.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef TERN_HAVE_MPI
#include "proto/mpi.h"
#endif

/* SPMD: this rank's whole life is a worker's; the subcommand must not go on afterwards, so
 * this is one of the few places outside main that exits. */
static void spmd_worker(const tern_params *p, int rank) {
    char err[512], name[TP_NAME_MAX], host[40] = "worker";
    gethostname(host, sizeof host - 1);
    snprintf(name, sizeof name, "%s.rank%d", host, rank);
    dup2(2, 1);   /* only the coordinator writes to stdout */
    worker_cfg_t wc;
    memset(&wc, 0, sizeof wc);
    wc.listen = "mpi://self";
    wc.model = p->model;
    wc.name = name;
    wc.threads = p->n_threads;
    wc.threads_batch = p->n_threads_batch;
    wc.no_mmap = p->no_mmap;
    wc.mlock = p->mlock;
    int rc = worker_loop_run(&wc, err, sizeof err);
    if (rc == 0) mpi_launch_clean();
    else fprintf(stderr, "tern worker (rank %d): %s\n", rank, err);
    exit(rc == 0 ? 0 : 1);
}

int cluster_mpi_start(const tern_params *p, char *err, size_t errlen) {
    int rc = mpi_launch_check("run|serve|chat", p->mpi, err, errlen);
    if (rc < 0 || !p->mpi) return rc;
    if (p->workers)
        return err_set(err, errlen, TERN_EINVAL, "--mpi and --workers: under mpirun the workers are the other ranks");
    int rank = 0;
    if ((rc = mpi_launch_start(p->model, NULL, 0, &rank, NULL, err, errlen)) < 0) return rc;
    if (rank > 0) spmd_worker(p, rank);
    return 0;
}

#ifdef TERN_HAVE_MPI
static pipeline_ops_t g_ops;            /* the cluster's ops with destroy wrapped */
static void (*g_destroy)(pipeline_t *);

/* Shutdown to every worker rank (also ranks the placement left idle), then a clean exit. */
static void mpi_destroy(pipeline_t *pl) {
    g_destroy(pl);
    int n = tp_mpi_size();
    for (int r = 1; r < n; r++) {
        char ep[32], err[256];
        snprintf(ep, sizeof ep, "mpi://%d", r);
        if (tp_send_shutdown(ep, "the coordinator is done", 0, err, sizeof err) < 0)
            log_w("cannot stop rank %d: %s", r, err);
    }
    mpi_launch_clean();
}

/* workers of a `transport: mpi` cluster file: an entry without endpoint is the next rank */
static int from_file(cluster_t *cl, const char *path, int size, char *err, size_t errlen) {
    int rc = cluster_file_load(cl, path, err, errlen);
    if (rc < 0) return rc;
    if (cl->transport != CLUSTER_TRANSPORT_MPI)
        return err_set(err, errlen, TERN_EINVAL, "%s: --mpi needs `transport: mpi` (workers are ranks 1..N in file "
                       "order)", path);
    if (cl->n_workers > size - 1)
        return err_set(err, errlen, TERN_EINVAL, "%s lists %d workers but mpirun started %d worker rank%s", path,
                       cl->n_workers, size - 1, size == 2 ? "" : "s");
    for (int i = 0; i < cl->n_workers; i++) {
        if (cl->workers[i].endpoint) continue;
        char ep[32];
        snprintf(ep, sizeof ep, "mpi://%d", i + 1);
        if (!(cl->workers[i].endpoint = strdup(ep))) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    }
    return 0;
}

/* one worker per rank 1..size-1, named rankN */
static int from_ranks(cluster_t *cl, int size, char *err, size_t errlen) {
    if (cluster_init(cl) < 0 || !(cl->workers = calloc((size_t)(size - 1), sizeof *cl->workers)) ||
        !(cl->name = strdup("mpirun")))
        return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    for (int r = 1; r < size; r++) {
        cluster_worker_t *w = &cl->workers[cl->n_workers++];
        char s[32];
        snprintf(s, sizeof s, "rank%d", r);
        w->name = strdup(s);
        snprintf(s, sizeof s, "mpi://%d", r);
        w->endpoint = strdup(s);
        w->first = w->last = -1;
        if (!w->name || !w->endpoint) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    }
    return 0;
}

int cluster_pipeline_new_mpi(pipeline_t **out, const gguf_t *g, const char *model_path, const char *cluster_file,
                             const stage_cfg_t *cfg, char *err, size_t errlen) {
    *out = NULL;
    int rank = 0, size = 0, rc;
    if ((rc = mpi_launch_start(model_path, NULL, 0, &rank, &size, err, errlen)) < 0) return rc;
    if (rank != 0) return err_set(err, errlen, TERN_EINVAL, "--mpi: only rank 0 coordinates (this is rank %d)", rank);
    if (size < 2)
        return err_set(err, errlen, TERN_EINVAL, "mpirun started only the coordinator: add worker ranks, e.g. "
                       "`mpirun -np 1 tern run -m M --mpi -p TEXT : -np 2 tern worker --mpi` or `mpirun -np 3 tern "
                       "run -m M --mpi -p TEXT`");
    cluster_t cl;
    memset(&cl, 0, sizeof cl);
    rc = cluster_file ? from_file(&cl, cluster_file, size, err, errlen) : from_ranks(&cl, size, err, errlen);
    if (rc < 0) {
        cluster_free(&cl);
        return rc;
    }
    cl.transport = CLUSTER_TRANSPORT_MPI;
    log_i("mpirun: %d worker rank%s", cl.n_workers, cl.n_workers == 1 ? "" : "s");
    if ((rc = cluster_pipeline_start(out, g, model_path, &cl, cfg, err, errlen)) < 0) return rc;
    g_ops = *(*out)->ops;
    g_destroy = g_ops.destroy;
    g_ops.destroy = mpi_destroy;
    (*out)->ops = &g_ops;
    return 0;
}
#else
int cluster_pipeline_new_mpi(pipeline_t **out, const gguf_t *g, const char *model_path, const char *cluster_file,
                             const stage_cfg_t *cfg, char *err, size_t errlen) {
    (void)g, (void)model_path, (void)cluster_file, (void)cfg;
    *out = NULL;
    return err_set(err, errlen, TERN_ENOTSUP, "--mpi: this tern was built without MPI");
}
#endif
