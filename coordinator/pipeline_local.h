/* pipeline_local: stages in this process, called in order on the caller's thread. */
#ifndef TERN_PIPELINE_LOCAL_H
#define TERN_PIPELINE_LOCAL_H
#include "coordinator/pipeline.h"
#include "core/gguf.h"
#include "core/tpool.h"
#include "worker/stage.h"

/* splits the model into `n_stages` equal layer ranges (1 = whole model) with cfg's limits;
 * cfg->first/last/has_head are set per stage. tp shared by all stages (may be NULL). */
int pipeline_local_new(pipeline_t **out, const gguf_t *g, const stage_cfg_t *cfg, int n_stages, tpool_t *tp,
                       char *err, size_t errlen);
/* the same with the first n_gpu_layers layers as one CUDA stage (device STAGE_DEV_CUDA) ahead of
 * the CPU stages, which split the remaining layers n_stages ways; n_gpu_layers >= n_layer puts the
 * whole model and the head on the GPU. n_gpu_layers 0 is pipeline_local_new. */
int pipeline_local_new_gpu(pipeline_t **out, const gguf_t *g, const stage_cfg_t *cfg, int n_stages, int n_gpu_layers,
                           tpool_t *tp, char *err, size_t errlen);

#endif
