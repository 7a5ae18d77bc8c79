/* cluster_embedded: the embedded default — `tern run|serve|chat|bench` without a cluster start
 * their workers as threads of this process (worker_thread_start on inproc:// endpoints) and
 * drive them with the very coordinator code a cluster uses (cluster_client.c): same messages,
 * same scheduler, same last-stage sampler. Layers are pinned: n_stages equal ranges, the first
 * n_gpu_layers as a CUDA worker ahead of them. Not here: the protocol, placement by speed. */
#ifndef TERN_CLUSTER_EMBEDDED_H
#define TERN_CLUSTER_EMBEDDED_H
#include "coordinator/pipeline.h"
#include "core/gguf.h"
#include "worker/stage.h"

/* cfg gives ctx, sequences, batch, kv and head types; each worker thread gets `threads`
 * threads of its own. The pipeline shows no cluster state (status/recover unset: the workers
 * cannot fail apart from this process); destroying it stops and joins the worker threads.
 * Errors: a worker's own (e.g. cannot load its layers), or as cluster_pipeline_start. */
int cluster_pipeline_new_embedded(pipeline_t **out, const gguf_t *g, const char *model_path, const stage_cfg_t *cfg,
                                  int n_stages, int n_gpu_layers, int threads, char *err, size_t errlen);

#endif
