/* cluster_mpi: tern under mpirun. Rank 0 is the coordinator and every other rank a worker,
 * whether mpirun started `tern worker --mpi` there (MPMD) or the same `tern run --mpi` (SPMD:
 * those ranks turn into workers here). The workers are ranks 1..N in order, or the entries of
 * a cluster file with `transport: mpi` (an entry without endpoint is the next rank). Not here:
 * the transport (proto/mpi.c), the launcher's environment and exit policy (proto/mpi_launch.c). */
#ifndef TERN_CLUSTER_MPI_H
#define TERN_CLUSTER_MPI_H
#include "coordinator/pipeline.h"
#include "core/gguf.h"
#include "tern.h"
#include "worker/stage.h"

/* For the coordinator subcommands after their flags are parsed: checks p->mpi against the
 * launcher (the advice for --mpi without mpirun and mpirun without --mpi) and, with --mpi,
 * starts MPI. On ranks > 0 it runs the worker loop with p's model and threads and exits the
 * process (SPMD). Returns 0 (rank 0, or no MPI) or <0 with err. */
int cluster_mpi_start(const tern_params *p, char *err, size_t errlen);

/* The cluster pipeline over the MPI ranks (see above); cluster_file may be NULL. Destroying it
 * sends Shutdown to every worker rank, so the job ends cleanly. Errors as
 * cluster_pipeline_new; a worker's own error (e.g. a model mismatch) is quoted. */
int cluster_pipeline_new_mpi(pipeline_t **out, const gguf_t *g, const char *model_path, const char *cluster_file,
                             const stage_cfg_t *cfg, char *err, size_t errlen);

#endif
