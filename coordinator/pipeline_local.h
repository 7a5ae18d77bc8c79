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

#endif
