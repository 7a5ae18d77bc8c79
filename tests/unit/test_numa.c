/* test_numa: `--numa auto|N` decisions on hwloc synthetic topologies (HWLOC_SYNTHETIC: 2 and 4
 * sockets, so the multi-socket path is tested on a one-socket machine) — node by local rank,
 * mpirun's --bind-to socket/core binding kept and never widened, explicit nodes, bad specs —
 * then a real numa_bind on this machine: the calls succeed, the reported node and CPU count
 * match what the kernel says afterwards. */
#define _GNU_SOURCE   /* sched_getaffinity, CPU_COUNT */
#include "core/err.h"
#include "core/numa.h"
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

static char g_err[256];
#define E g_err, sizeof g_err

/* plan with HWLOC_SYNTHETIC=topo; expects success */
static numa_plan_t plan(const char *topo, const char *spec, const char *bound, int local_rank) {
    numa_plan_t p;
    setenv("HWLOC_SYNTHETIC", topo, 1);
    int rc = numa_plan(&p, spec, bound, local_rank, E);
    unsetenv("HWLOC_SYNTHETIC");
    if (rc < 0) fail_msg("numa_plan(%s, %s, bound %s, rank %d): %s", topo, spec, bound ? bound : "-", local_rank, g_err);
    return p;
}

#define TWO "pack:2 [numa] core:2 pu:1"      /* node 0: CPUs 0-1, node 1: CPUs 2-3 */
#define FOUR "pack:4 [numa] core:2 pu:2"     /* node k: CPUs 4k..4k+3, two cores each */

static void test_auto_by_rank(void **st) {
    (void)st;
    numa_plan_t p = plan(TWO, "auto", "0-3", 0);
    assert_int_equal(p.n_nodes, 2);
    assert_int_equal(p.node, 0);
    assert_string_equal(p.cpus, "0-1");
    assert_int_equal(p.n_cores, 2);
    assert_int_equal(p.from_launcher, 0);
    p = plan(TWO, "auto", "0-3", 1);
    assert_int_equal(p.node, 1);
    assert_string_equal(p.cpus, "2-3");
    assert_int_equal(plan(TWO, "auto", "0-3", 3).node, 1);   /* 3 ranks on 2 sockets: wraps */
    assert_int_equal(plan(TWO, "auto", "0-3", -1).node, 0);  /* unknown rank */
    p = plan(FOUR, "auto", NULL, 2);   /* the synthetic topology binds nothing: unrestricted */
    assert_int_equal(p.n_nodes, 4);
    assert_int_equal(p.node, 2);
    assert_string_equal(p.cpus, "8-11");
    assert_int_equal(p.n_cores, 2);
    assert_int_equal(p.n_pus, 4);
}

/* mpirun --map-by ppr:1:socket --bind-to socket (or core): the node of the binding, CPUs kept */
static void test_auto_respects_launcher(void **st) {
    (void)st;
    numa_plan_t p = plan(TWO, "auto", "2-3", 0);   /* local rank says 0, binding says socket 1 */
    assert_int_equal(p.node, 1);
    assert_int_equal(p.from_launcher, 1);
    assert_string_equal(p.cpus, "2-3");
    p = plan(TWO, "auto", "3", 0);                  /* --bind-to core: not widened to the node */
    assert_int_equal(p.node, 1);
    assert_string_equal(p.cpus, "3");
    assert_int_equal(p.n_cores, 1);
    p = plan(FOUR, "auto", "5-7,8", 0);             /* spans two nodes: the one with most CPUs */
    assert_int_equal(p.node, 1);
    assert_string_equal(p.cpus, "5-7");
    assert_int_equal(p.from_launcher, 1);
}

static void test_explicit_node(void **st) {
    (void)st;
    numa_plan_t p = plan(TWO, "1", "0-3", 0);
    assert_int_equal(p.node, 1);
    assert_string_equal(p.cpus, "2-3");
    assert_int_equal(p.from_launcher, 0);
    p = plan(FOUR, "3", NULL, 0);
    assert_string_equal(p.cpus, "12-15");
    const char *bad[] = {"2", "x", "-1", "", "1x", "auto1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("HWLOC_SYNTHETIC", TWO, 1);
        int rc = numa_plan(&p, bad[i], "0-3", 0, E);
        unsetenv("HWLOC_SYNTHETIC");
        if (rc != TERN_EINVAL) fail_msg("--numa '%s' accepted (rc %d)", bad[i], rc);
        if (!strstr(g_err, "--numa")) fail_msg("error '%s' does not name --numa", g_err);
    }
    setenv("HWLOC_SYNTHETIC", TWO, 1);
    assert_int_equal(numa_plan(&p, "2", "0-3", 0, E), TERN_EINVAL);
    unsetenv("HWLOC_SYNTHETIC");
    assert_non_null(strstr(g_err, "2 NUMA nodes (0-1)"));
}

/* this machine: bind for real, then the kernel's view agrees with the plan */
static void test_bind_here(void **st) {
    (void)st;
    numa_plan_t p;
    if (numa_bind(&p, "auto", -1, E) < 0) fail_msg("numa_bind auto: %s", g_err);
    assert_true(p.n_nodes >= 1);
    assert_true(p.node >= 0 && p.node < p.n_nodes);
    assert_true(p.n_cores >= 1 && p.n_pus >= p.n_cores);
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    assert_int_equal(CPU_COUNT(&set), p.n_pus);
    printf("# bound to node %d of %d, CPUs %s, memory %s\n", p.node, p.n_nodes, p.cpus,
           p.membind ? "bound" : "first touch");
    numa_plan_t q;
    char spec[16];
    snprintf(spec, sizeof spec, "%d", p.node);
    if (numa_bind(&q, spec, -1, E) < 0) fail_msg("numa_bind %s: %s", spec, g_err);
    assert_int_equal(q.node, p.node);
    assert_string_equal(q.cpus, p.cpus);
    snprintf(spec, sizeof spec, "%d", p.n_nodes);
    assert_int_equal(numa_bind(&q, spec, -1, E), TERN_EINVAL);
    int b = numa_balancing();
    FILE *f = fopen("/proc/sys/kernel/numa_balancing", "r");
    if (f) {
        int v = -1;
        if (fscanf(f, "%d", &v) == 1) assert_int_equal(b, v != 0);
        fclose(f);
    } else {
        assert_int_equal(b, -1);
    }
}

int main(void) {
    unsetenv("HWLOC_SYNTHETIC");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auto_by_rank),
        cmocka_unit_test(test_auto_respects_launcher),
        cmocka_unit_test(test_explicit_node),
        cmocka_unit_test(test_bind_here),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    printf("%d passed, %d failed\n", (int)(sizeof tests / sizeof tests[0]) - failed, failed);
    return failed ? 1 : 0;
}
