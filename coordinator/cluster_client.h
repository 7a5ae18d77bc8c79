/* cluster_client: a pipeline whose stages are worker processes reached through a transport
 * (ZeroMQ tcp/ipc): connects, checks each worker's hello, places layers, sends shards, then
 * forwards steps to the first stage and collects sampled tokens from the last. */
#ifndef TERN_CLUSTER_CLIENT_H
#define TERN_CLUSTER_CLIENT_H
#include "coordinator/pipeline.h"
#include "core/gguf.h"
#include "coordinator/cluster_file.h"
#include "worker/stage.h"

/* cluster_file or workers_csv (one of them). cfg gives ctx, sequences, batch, kv and head types. */
int cluster_pipeline_new(pipeline_t **out, const gguf_t *g, const char *model_path, const char *cluster_file,
                         const char *workers_csv, const stage_cfg_t *cfg, int threads, char *err, size_t errlen);
/* The same on a cluster already built (any transport; cluster_mpi.c makes one of MPI ranks).
 * Takes *cl: it belongs to the pipeline afterwards (freed with it, or here on error) and is
 * left zeroed. */
int cluster_pipeline_start(pipeline_t **out, const gguf_t *g, const char *model_path, cluster_t *cl,
                           const stage_cfg_t *cfg, char *err, size_t errlen);

#endif
