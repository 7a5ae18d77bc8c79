/* mpi_launch: see mpi_launch.h. The exit policy is an atexit handler, so every way out of
 * main (a subcommand returning an error included) either finalizes or aborts the job. */
#include "proto/mpi_launch.h"
#include "core/err.h"
#include "core/log.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef TERN_HAVE_MPI
#include "proto/mpi.h"
#include <mpi.h>
#endif

static int g_clean;

static int env_int(const char *name, int dflt) {
    const char *s = getenv(name);
    if (!s || !*s) return dflt;
    char *end;
    long v = strtol(s, &end, 10);
    return *end || v < 0 || v > 1 << 30 ? dflt : (int)v;
}

void mpi_env_read(mpi_env_t *e) {
    memset(e, 0, sizeof *e);
    e->rank = -1;
    e->local_rank = -1;
    e->how = "none";
    if (getenv("OMPI_COMM_WORLD_SIZE")) {
        e->how = "Open MPI";
        e->rank = env_int("OMPI_COMM_WORLD_RANK", -1);
        e->size = env_int("OMPI_COMM_WORLD_SIZE", 0);
        e->local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", -1);
    } else if (getenv("PMIX_RANK")) {
        e->how = "PMIx";
        e->rank = env_int("PMIX_RANK", -1);
        e->size = env_int("PMIX_SIZE", env_int("SLURM_NTASKS", 0));
        e->local_rank = env_int("PMIX_LOCAL_RANK", env_int("SLURM_LOCALID", -1));
    } else if (getenv("PMI_RANK") || getenv("PMI_SIZE")) {
        e->how = "PMI";
        e->rank = env_int("PMI_RANK", -1);
        e->size = env_int("PMI_SIZE", 0);
        e->local_rank = env_int("MPI_LOCALRANKID", -1);
    }
    e->launched = strcmp(e->how, "none") != 0;
}

int mpi_launch_check(const char *cmd, int mpi_flag, char *err, size_t errlen) {
    mpi_env_t e;
    mpi_env_read(&e);
#ifndef TERN_HAVE_MPI
    if (mpi_flag)
        return err_set(err, errlen, TERN_ENOTSUP, "--mpi: this tern was built without MPI (install libopenmpi-dev and "
                       "rebuild), or use ZeroMQ workers with --workers/--cluster");
#endif
    if (mpi_flag && !e.launched)
        return err_set(err, errlen, TERN_EINVAL,
                       "--mpi: this process was not started by mpirun. Start the job with mpirun, e.g. `mpirun -np 1 "
                       "tern run -m M --mpi -p TEXT : -np 2 tern worker --mpi -m M` or `mpirun -np 3 tern run -m M "
                       "--mpi -p TEXT` (README: MPI), or drop --mpi to run tern %s in one process", cmd);
    if (!mpi_flag && e.launched && e.size > 1)
        return err_set(err, errlen, TERN_EINVAL,
                       "tern %s is rank %d of %d started by mpirun but has no --mpi, so every rank would run on its "
                       "own: add --mpi to each tern command on the mpirun line (`mpirun -np 1 tern %s ... --mpi : -np "
                       "%d tern worker --mpi`), or run tern without mpirun", cmd, e.rank, e.size,
                       strcmp(cmd, "worker") ? cmd : "run", e.size - 1);
    return 0;
}

void mpi_launch_clean(void) { g_clean = 1; }

#ifdef TERN_HAVE_MPI
static void on_exit_mpi(void) {
    if (!tp_mpi_active()) return;
    fflush(stdout);
    fflush(stderr);
    if (g_clean) tp_mpi_finalize();
    else tp_mpi_abort(1);   /* this rank failed: stop the job rather than leave the others waiting */
}

int mpi_launch_start(const char *model, char *model_out, size_t cap, int *rank, int *size, char *err,
                     size_t errlen) {
    static int started;
    static char path[4096];   /* rank 0's model path, once broadcast */
    int r, n, rc = tp_mpi_init(&r, &n, err, errlen);
    if (rc < 0) return rc;
    if (started) goto out;    /* later calls: the collective part ran already */
    started = 1;
    atexit(on_exit_mpi);
    char role[16];
    if (r == 0) snprintf(role, sizeof role, "C");
    else snprintf(role, sizeof role, "W%d", r);
    log_set_role(role);
    /* rank 0's model path, so that `tern worker --mpi` needs no -m on a shared file system */
    if (r == 0 && model) {
        if (!realpath(model, path)) snprintf(path, sizeof path, "%s", model);
    }
    if ((rc = MPI_Bcast(path, (int)sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD)) != MPI_SUCCESS)
        return err_set(err, errlen, TERN_EIO, "MPI_Bcast of the model path failed (%d)", rc);
    path[sizeof path - 1] = 0;
out:
    if (model_out && cap) snprintf(model_out, cap, "%s", path);
    if (rank) *rank = r;
    if (size) *size = n;
    return 0;
}
#else
int mpi_launch_start(const char *model, char *model_out, size_t cap, int *rank, int *size, char *err,
                     size_t errlen) {
    (void)model, (void)model_out, (void)cap, (void)rank, (void)size;
    return err_set(err, errlen, TERN_ENOTSUP, "this tern was built without MPI");
}
#endif
