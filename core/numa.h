/* numa: one worker per NUMA node (socket) — choose a node from `--numa auto|N`, the launcher's
 * binding (mpirun --map-by ppr:1:socket --bind-to socket) and the local rank, then bind this
 * process's threads to that node's cores and its memory to that node (hwloc membind; where
 * the kernel refuses, first touch from threads that already run there). Threads created after
 * numa_bind inherit the binding, so call it before tpool_new. Not here: deciding how many
 * workers a host runs (the mpirun line does) or placement (coordinator/placement.c). */
#ifndef TERN_NUMA_H
#define TERN_NUMA_H
#include <stddef.h>

typedef struct numa_plan {
    int node;             /* chosen NUMA node (logical index, 0-based) */
    int n_nodes;          /* NUMA nodes in the topology */
    int n_cores, n_pus;   /* cores / hardware threads the process is bound to */
    int from_launcher;    /* 1: the CPUs come from an existing binding (mpirun), kept as is */
    int membind;          /* after numa_bind: 1 = memory bound to the node, 0 = first touch */
    char cpus[256];       /* the CPU list ("0-15,32-47"), as hwloc prints it */
} numa_plan_t;

/* Plans the binding without applying it. spec: "auto" or a node number. bound_cpus: the
 * current binding as a CPU list ("2-3"), or NULL to ask the system. local_rank: this rank's
 * index on its host (-1 unknown): `auto` without a narrower binding picks node
 * local_rank % n_nodes. The topology is the machine's, or HWLOC_SYNTHETIC's when set (tests).
 * Returns 0 or TERN_EINVAL ("--numa 3: this machine has 2 NUMA nodes (0-1)") with err. */
int numa_plan(numa_plan_t *out, const char *spec, const char *bound_cpus, int local_rank, char *err, size_t errlen);
/* numa_plan on the real binding, then binds CPUs and memory; warns (log) when
 * /proc/sys/kernel/numa_balancing is on. 0 or <0 with err (TERN_EIO when the CPU binding fails). */
int numa_bind(numa_plan_t *out, const char *spec, int local_rank, char *err, size_t errlen);
/* 1 when the kernel's automatic NUMA balancing is on (it migrates pages behind a binding),
 * 0 when off, -1 when unknown. */
int numa_balancing(void);

#endif
