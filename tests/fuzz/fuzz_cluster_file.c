/* fuzz_cluster_file: libFuzzer target for the YAML cluster file parser.
 * Any input must give either a valid cluster (whose invariants are checked here) or a
 * one-line error starting with the file name; never a crash, leak or hang. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "coordinator/cluster_file.h"
#include "core/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cluster_t c;
    char err[512];
    err[0] = 0;
    int rc = cluster_file_parse(&c, (const char *)data, size, "fuzz.yaml", err, sizeof err);
    if (rc) {
        if (strncmp(err, "fuzz.yaml", 9) || strchr(err, '\n')) abort();
        if (c.workers || c.n_workers) abort();
        return 0;
    }
    if (c.n_workers < 1 || c.n_workers > CLUSTER_MAX_WORKERS || !c.listen || !c.http) abort();
    int active = 0;
    for (int i = 0; i < c.n_workers; i++) {
        const cluster_worker_t *w = &c.workers[i];
        if (!w->name || (!w->endpoint && c.transport == CLUSTER_TRANSPORT_ZMQ)) abort();
        if (w->endpoint && cluster_check_endpoint(w->endpoint, err, sizeof err)) abort();
        if ((w->first < 0) != (w->last < 0) || w->first > w->last) abort();
        if (w->standby && w->first >= 0) abort();
        if (cluster_find_worker(&c, w->name) != i) abort();   /* names unique */
        active += !w->standby;
    }
    if (!active || c.heartbeat_timeout_ms <= c.heartbeat_interval_ms) abort();
    cluster_free(&c);
    return 0;
}
