/* numa: see numa.h. hwloc does the topology (real, or HWLOC_SYNTHETIC in tests) and the
 * binding calls; this file only decides which node and which CPUs. */
#include "core/numa.h"
#include "core/err.h"
#include "core/log.h"
#if !__has_include(<hwloc.h>) || !__has_include(<hwloc/autogen/config.h>)   /* kernel-only cross builds (TERN_NEON_TESTS_ONLY) have no hwloc; Debian cross gcc still sees the host /usr/include/hwloc.h, not its arch config */
int numa_plan(numa_plan_t *out, const char *spec, const char *bound_cpus, int local_rank, char *err, size_t errlen) {
    (void)out, (void)spec, (void)bound_cpus, (void)local_rank;
    return err_set(err, errlen, TERN_ENOTSUP, "--numa: built without hwloc");
}
int numa_bind(numa_plan_t *out, const char *spec, int local_rank, char *err, size_t errlen) {
    return numa_plan(out, spec, NULL, local_rank, err, errlen);
}
int numa_balancing(void) { return -1; }
#else
#include <errno.h>
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fills cpus/nodes with the plan for spec on topology t; `bound` is the current binding. */
static int plan_in(hwloc_topology_t t, const char *spec, hwloc_const_bitmap_t bound, int local_rank,
                   numa_plan_t *out, hwloc_bitmap_t cpus, hwloc_bitmap_t nodes, char *err, size_t errlen) {
    int n = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
    hwloc_const_bitmap_t all = hwloc_topology_get_topology_cpuset(t);
    if (n < 1) return err_set(err, errlen, TERN_ENOTSUP, "--numa: hwloc sees no NUMA node on this machine");
    memset(out, 0, sizeof *out);
    out->n_nodes = n;
    out->node = -1;
    int restricted = !hwloc_bitmap_iszero(bound) && !hwloc_bitmap_isincluded(all, bound);
    if (!strcmp(spec, "auto")) {
        if (restricted) {   /* the launcher (or taskset) chose: the node holding most of those CPUs */
            int best = -1, most = 0;
            for (int i = 0; i < n; i++) {
                hwloc_obj_t o = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, (unsigned)i);
                hwloc_bitmap_and(cpus, o->cpuset, bound);
                int k = hwloc_bitmap_weight(cpus);
                if (k > most) { most = k; best = i; }
            }
            if (best >= 0) { out->node = best; out->from_launcher = 1; }
        }
        if (out->node < 0) out->node = local_rank > 0 ? local_rank % n : 0;
    } else {
        char *end;
        long v = strtol(spec, &end, 10);
        if (!*spec || *end || v < 0)
            return err_set(err, errlen, TERN_EINVAL, "--numa %s: expected auto or a node number", spec);
        if (v >= n)
            return n == 1 ? err_set(err, errlen, TERN_EINVAL, "--numa %s: this machine has 1 NUMA node (0)", spec)
                          : err_set(err, errlen, TERN_EINVAL, "--numa %s: this machine has %d NUMA nodes (0-%d)", spec, n,
                                    n - 1);
        out->node = (int)v;
    }
    hwloc_obj_t o = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, (unsigned)out->node);
    hwloc_bitmap_copy(nodes, o->nodeset);
    hwloc_bitmap_copy(cpus, o->cpuset);
    if (out->from_launcher) hwloc_bitmap_and(cpus, o->cpuset, bound);   /* never widen mpirun's binding */
    else if (restricted && !hwloc_bitmap_intersects(o->cpuset, bound))
        log_w("--numa %s: node %d lies outside this process's CPU binding; binding to node %d as asked", spec,
              out->node, out->node);
    out->n_pus = hwloc_bitmap_weight(cpus);
    out->n_cores = hwloc_get_nbobjs_inside_cpuset_by_type(t, cpus, HWLOC_OBJ_CORE);
    if (out->n_cores <= 0) out->n_cores = out->n_pus;
    hwloc_bitmap_list_snprintf(out->cpus, sizeof out->cpus, cpus);
    return 0;
}

/* The plan on a loaded topology; bound_cpus NULL = ask for the process's binding. */
static int plan_run(hwloc_topology_t t, numa_plan_t *out, const char *spec, const char *bound_cpus, int local_rank,
                    hwloc_bitmap_t cpus, hwloc_bitmap_t nodes, char *err, size_t errlen) {
    hwloc_bitmap_t bound = hwloc_bitmap_alloc();
    if (!bound) return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    int rc = 0;
    if (bound_cpus) {
        if (hwloc_bitmap_list_sscanf(bound, bound_cpus) < 0)
            rc = err_set(err, errlen, TERN_EINVAL, "bad CPU list '%s'", bound_cpus);
    } else if (hwloc_get_cpubind(t, bound, HWLOC_CPUBIND_PROCESS) < 0) {
        hwloc_bitmap_zero(bound);   /* unknown: treat as unbound */
    }
    if (!rc) rc = plan_in(t, spec ? spec : "auto", bound, local_rank, out, cpus, nodes, err, errlen);
    hwloc_bitmap_free(bound);
    return rc;
}

typedef struct topo {
    hwloc_topology_t t;
    hwloc_bitmap_t cpus, nodes;
} topo_t;

static void topo_free(topo_t *x) {
    if (x->cpus) hwloc_bitmap_free(x->cpus);
    if (x->nodes) hwloc_bitmap_free(x->nodes);
    if (x->t) hwloc_topology_destroy(x->t);
}

static int topo_load(topo_t *x, char *err, size_t errlen) {
    memset(x, 0, sizeof *x);
    if (hwloc_topology_init(&x->t) < 0) return err_set(err, errlen, TERN_ENOMEM, "hwloc: cannot start");
    if (hwloc_topology_load(x->t) < 0) {
        hwloc_topology_destroy(x->t);
        x->t = NULL;
        return err_set(err, errlen, TERN_EIO, "hwloc: cannot read this machine's topology");
    }
    x->cpus = hwloc_bitmap_alloc();
    x->nodes = hwloc_bitmap_alloc();
    if (!x->cpus || !x->nodes) {
        topo_free(x);
        return err_set(err, errlen, TERN_ENOMEM, "out of memory");
    }
    return 0;
}

int numa_plan(numa_plan_t *out, const char *spec, const char *bound_cpus, int local_rank, char *err, size_t errlen) {
    topo_t x;
    int rc = topo_load(&x, err, errlen);
    if (rc < 0) return rc;
    rc = plan_run(x.t, out, spec, bound_cpus, local_rank, x.cpus, x.nodes, err, errlen);
    topo_free(&x);
    return rc;
}

int numa_balancing(void) {
    FILE *f = fopen("/proc/sys/kernel/numa_balancing", "r");
    if (!f) return -1;
    int v = -1;
    if (fscanf(f, "%d", &v) != 1) v = -1;
    fclose(f);
    return v < 0 ? -1 : v != 0;
}

int numa_bind(numa_plan_t *out, const char *spec, int local_rank, char *err, size_t errlen) {
    topo_t x;
    int rc = topo_load(&x, err, errlen);
    if (rc < 0) return rc;
    if ((rc = plan_run(x.t, out, spec, NULL, local_rank, x.cpus, x.nodes, err, errlen)) < 0) goto done;
    if (hwloc_set_cpubind(x.t, x.cpus, HWLOC_CPUBIND_PROCESS) < 0) {
        rc = err_set(err, errlen, TERN_EIO, "--numa: cannot bind to CPUs %s of node %d: %s", out->cpus, out->node,
                     strerror(errno));
        goto done;
    }
    /* BIND puts every new page on the node; kernels or containers without mbind get first
     * touch, which lands pages there too, since every thread now runs on the node */
    out->membind = hwloc_set_membind(x.t, x.nodes, HWLOC_MEMBIND_BIND,
                                     HWLOC_MEMBIND_PROCESS | HWLOC_MEMBIND_BYNODESET) == 0;
    if (!out->membind)
        hwloc_set_membind(x.t, x.nodes, HWLOC_MEMBIND_FIRSTTOUCH, HWLOC_MEMBIND_PROCESS | HWLOC_MEMBIND_BYNODESET);
    log_i("numa: node %d of %d, CPUs %s (%d cores%s), memory %s", out->node, out->n_nodes, out->cpus, out->n_cores,
          out->from_launcher ? ", binding from the launcher" : "",
          out->membind ? "bound to the node" : "by first touch (the kernel refused mbind)");
    if (numa_balancing() == 1)
        log_w("numa: /proc/sys/kernel/numa_balancing is 1: the kernel may migrate this worker's pages off node %d; "
              "turn it off for steady bandwidth (sysctl kernel.numa_balancing=0)", out->node);
done:
    topo_free(&x);
    return rc;
}
#endif
