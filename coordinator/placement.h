/* placement: which contiguous layer range each worker holds. Minimises the slowest stage's
 * time (bytes read per token / measured bandwidth) under each worker's memory budget, with
 * pinned ranges kept; among plans with that bottleneck it picks the most even one (least sum
 * of squared stage times). Exact (DP over contiguous partitions) and deterministic.
 * Not here: measuring bandwidth, sizing layers from a model, talking to workers. */
#ifndef TERN_PLACEMENT_H
#define TERN_PLACEMENT_H
#include <stddef.h>
#include <stdint.h>

#define PLACEMENT_MAX_WORKERS 256
#define PLACEMENT_MAX_LAYERS 1024
#define PLACEMENT_MAX_BYTES (1ull << 50)   /* per layer, head and budget */

typedef struct placement_worker {
    const char *name;   /* for messages; NULL → "worker <i>" */
    uint64_t memory;    /* budget in bytes; 0 = unlimited / unknown */
    double speed;       /* measured GB/s (1e9 B/s); <= 0 = unknown: counts as the slowest known
                           speed, or 1 when none is known */
    int first, last;    /* pinned range [first, last]; first = -1: not pinned */
    int standby;        /* 1: gets no layers (until placement_replan_without promotes it) */
    int gone;           /* 1: failed; never placed, never promoted */
} placement_worker_t;

typedef struct placement_in {
    int n_layers;                  /* 1 .. PLACEMENT_MAX_LAYERS */
    const uint64_t *layer_mem;     /* (n_layers,) bytes resident per layer: weights + KV cache
                                      for ctx × max sequences */
    const uint64_t *layer_read;    /* (n_layers,) bytes read per token per layer (time);
                                      NULL = layer_mem */
    uint64_t head_mem;             /* lm head + output norm, on the stage with the last layer */
    uint64_t head_read;            /* its bytes read per token; 0 = head_mem */
    const placement_worker_t *workers;   /* file order = pipeline order */
    int n_workers;                 /* 1 .. PLACEMENT_MAX_WORKERS */
} placement_in_t;

typedef struct placement_out {
    int n_workers;                          /* == in->n_workers */
    int first[PLACEMENT_MAX_WORKERS];       /* per input worker: its range, or -1/-1 for none */
    int last[PLACEMENT_MAX_WORKERS];
    uint64_t mem[PLACEMENT_MAX_WORKERS];    /* bytes it will hold (layers + head) */
    double time_s[PLACEMENT_MAX_WORKERS];   /* its stage's seconds per token */
    int n_stages;                           /* workers holding layers */
    int stage[PLACEMENT_MAX_WORKERS];       /* stage[s]: worker index of stage s, layers ascending */
    double bottleneck_s;                    /* max of time_s */
} placement_out_t;

/* Plans in (workers neither standby nor gone, in array order). Workers without a pin may get
 * no layers when that lowers the bottleneck or when there are more workers than layers.
 * Returns 0, or TERN_EINVAL (bad input: sizes, pins outside the model, pins out of file
 * order / overlapping / leaving layers nobody can hold) or TERN_ENOMEM (memory budgets too
 * small), with a one-line reason in err. */
int placement_plan(const placement_in_t *in, placement_out_t *out, char *err, size_t errlen);

/* Plans again after worker `lost` failed (its `gone` flag is taken as set). With use_standby,
 * the first standby that is not gone takes lost's place in the pipeline (unpinned) and
 * *promoted gets its index; otherwise *promoted = -1 (promoted may be NULL). Other pins stay.
 * Same errors as placement_plan. */
int placement_replan_without(const placement_in_t *in, int lost, int use_standby, placement_out_t *out,
                             int *promoted, char *err, size_t errlen);

/* "pc1 [0,19] 1.2 GiB 21.0 ms | pc2 [20,29] ..." into buf (always NUL-terminated). */
void placement_format(const placement_in_t *in, const placement_out_t *out, char *buf, size_t cap);

#endif
