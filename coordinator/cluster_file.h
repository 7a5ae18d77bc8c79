/* cluster_file: the cluster description (YAML, libyaml event API) or a `--workers` list,
 * validated into a cluster_t. Every error is one line naming file, line and key, e.g.
 * `cluster.yaml:7: workers[1].memory: expected a size like 12GiB, got 'lots'`.
 * Strict: unknown/duplicate keys, wrong types, anchors/aliases/tags and multiple documents
 * are refused. Not here: layer placement (placement.h), connecting, reading keys. */
#ifndef TERN_CLUSTER_FILE_H
#define TERN_CLUSTER_FILE_H
#include <stddef.h>
#include <stdint.h>

#define CLUSTER_MAX_WORKERS 256
#define CLUSTER_MAX_LAYER 65535        /* pinned layer indices are in [0, this] */
#define CLUSTER_MAX_THREADS 1024
#define CLUSTER_MIN_MEMORY (1ull << 20) /* 1 MiB */
#define CLUSTER_MAX_MEMORY (1ull << 50) /* 1 PiB */
#define CLUSTER_MAX_FILE (1u << 20)     /* cluster_file_load refuses bigger files */

enum cluster_transport { CLUSTER_TRANSPORT_ZMQ = 0, CLUSTER_TRANSPORT_MPI = 1 };

typedef struct cluster_worker {
    char *name;         /* unique; "w<i>" when the file gives none */
    char *endpoint;     /* unique "tcp://host:port" or "ipc://path"; NULL only with mpi */
    int threads;        /* 0 = the worker decides */
    uint64_t memory;    /* bytes the worker may use; 0 = not given (unlimited / ask the worker) */
    int first, last;    /* pinned layers [first, last]; both -1 = not pinned */
    int standby;        /* 1: holds no layers until a worker fails */
    int line;           /* 1-based line of the entry in the file; 0 when from --workers */
    int layers_line;    /* line of `layers:`; 0 when not pinned */
    int memory_line;    /* line of `memory:`; 0 when not given */
} cluster_worker_t;

typedef struct cluster {
    char *name;                   /* file name used in messages ("--workers" for lists) */
    char *model;                  /* NULL when the file gives none (then -m decides) */
    int transport;                /* enum cluster_transport */
    char *listen;                 /* coordinator.listen, default "tcp://0.0.0.0:7100" */
    char *http;                   /* coordinator.http "host:port", default "127.0.0.1:8080" */
    int curve;                    /* security.curve, default 0 */
    char *keys;                   /* security.keys directory, NULL when not given */
    int heartbeat_interval_ms;    /* default 500, [10, 60000] */
    int heartbeat_timeout_ms;     /* default 3000, > interval, <= 600000 */
    cluster_worker_t *workers;    /* n_workers entries, file order = pipeline order */
    int n_workers;
    int quiet;                    /* not from a file: the embedded engine (cluster_embedded.h) logs
                                   * its start-up (hello, placement, shards) at debug level */
} cluster_t;

/* Zeroes c and sets the defaults above (no workers, no strings that need freeing except
 * listen/http). Returns 0 or TERN_ENOMEM. cluster_free undoes it. */
int cluster_init(cluster_t *c);
/* Frees everything c owns and zeroes it; safe on a zeroed or already freed struct. */
void cluster_free(cluster_t *c);

/* Parses and validates buf[0..len) (need not be NUL-terminated); name is used in messages.
 * On success c holds the cluster (caller frees with cluster_free). On error returns a
 * negative TERN_E* code (TERN_EFORMAT for bad content) with "name:line: key: reason" in err
 * and c left zeroed. */
int cluster_file_parse(cluster_t *c, const char *buf, size_t len, const char *name, char *err,
                       size_t errlen);
/* Reads path (at most CLUSTER_MAX_FILE bytes) and parses it as above; TERN_EIO when unreadable. */
int cluster_file_load(cluster_t *c, const char *path, char *err, size_t errlen);

/* The `--workers` quick start: csv = "tcp://a:7101,tcp://b:7101" (spaces around commas ok),
 * workers named w0, w1, ... in order; everything else at its default. Errors name the item:
 * "--workers: item 2 'foo': ...". Same ownership as cluster_file_parse. */
int cluster_from_workers_list(cluster_t *c, const char *csv, char *err, size_t errlen);

/* Index of the worker called name, or -1. */
int cluster_find_worker(const cluster_t *c, const char *name);
/* Checks an endpoint: "tcp://host:port" (host non-empty, may be [v6]; port 1..65535) or
 * "ipc://path" (non-empty). Returns 0 or TERN_EINVAL with the reason (no prefix) in err. */
int cluster_check_endpoint(const char *ep, char *err, size_t errlen);

#endif
