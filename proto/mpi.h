/* mpi: process-wide MPI state for the mpi:// transport backend (mpi.c): start-up, the rank and
 * size of MPI_COMM_WORLD, a clean finalize and a job-wide abort. Only built when CMake finds
 * MPI (TERN_HAVE_MPI). Not here: sending and receiving (through transport.h with mpi://
 * endpoints), deciding roles from the launcher's environment (coordinator/mpi_launch.c). */
#ifndef TERN_PROTO_MPI_H
#define TERN_PROTO_MPI_H
#include <stddef.h>

/* Initialises MPI (MPI_Init_thread, MPI_THREAD_MULTIPLE requested) unless already done, and
 * the transport's private communicators. Collective: every rank of the job must call it at
 * start-up, in the same order relative to other collectives. Idempotent. rank/size may be
 * NULL. When this call starts MPI it also arranges MPI_Finalize at exit. Returns 0 or
 * TERN_EIO with the reason in err. */
int tp_mpi_init(int *rank, int *size, char *err, size_t errlen);
/* 1 between a successful tp_mpi_init and tp_mpi_finalize. */
int tp_mpi_active(void);
/* Rank and size of MPI_COMM_WORLD (-1 / 0 when not active). */
int tp_mpi_rank(void);
int tp_mpi_size(void);
/* Frees the communicators and calls MPI_Finalize. Every mpi:// conn must be closed first.
 * Safe to call twice or when never initialised. */
void tp_mpi_finalize(void);
/* Stops the whole job (MPI_Abort on MPI_COMM_WORLD) with exit code `code`; returns only when
 * MPI is not active. */
void tp_mpi_abort(int code);

#endif
