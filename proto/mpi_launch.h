/* mpi_launch: how a tern process learns it was started by mpirun and what it should be — the
 * launcher's environment (Open MPI, PMIx, PMI), the one-line advice for `--mpi` without mpirun
 * and mpirun without `--mpi`, MPI start-up with log roles (C, W<rank>), and the exit policy:
 * a rank that ends cleanly finalizes, one that ends any other way takes the job down
 * (MPI_Abort) instead of leaving the others hanging. Lives in proto/ (not coordinator/) so that
 * `tern worker` can use it too. Not here: the transport itself (mpi.c), the cluster (cluster_mpi.c). */
#ifndef TERN_MPI_LAUNCH_H
#define TERN_MPI_LAUNCH_H
#include <stddef.h>

typedef struct mpi_env {
    int launched;        /* 1: started by an MPI launcher */
    int rank, size;      /* from the environment; -1 / 0 when unknown */
    int local_rank;      /* rank among the ranks on this host; -1 when unknown */
    const char *how;     /* "Open MPI", "PMIx", "PMI" or "none" */
} mpi_env_t;

/* Reads the launcher's variables (OMPI_COMM_WORLD_*, PMIX_RANK, PMI_RANK/PMI_SIZE) without
 * starting MPI. */
void mpi_env_read(mpi_env_t *e);
/* 0 when `tern CMD` may go on: --mpi given under a launcher, or neither. Otherwise
 * TERN_EINVAL with what to do instead in err: --mpi without mpirun, or mpirun (more than one
 * rank) without --mpi. TERN_ENOTSUP when --mpi is given to a build without MPI. */
int mpi_launch_check(const char *cmd, int mpi_flag, char *err, size_t errlen);
/* Starts MPI on every rank (collective), sets the log role ("C" on rank 0, "W<rank>" on the
 * others) and installs the exit policy. Rank 0 passes its model path in `model`; every rank
 * gets rank 0's path back in model_out (cap bytes; "" when rank 0 gave none), so workers
 * started without -m use the coordinator's file. Only the first call is collective; later ones
 * return the same results. Returns 0 or <0 with err. */
int mpi_launch_start(const char *model, char *model_out, size_t cap, int *rank, int *size, char *err,
                     size_t errlen);
/* Marks this rank's end as clean: at exit it calls MPI_Finalize instead of MPI_Abort. The
 * coordinator calls it after telling every worker to stop; a worker after its loop ended on
 * Shutdown. */
void mpi_launch_clean(void);

#endif
