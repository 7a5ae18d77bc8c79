/* cluster_client: placeholder until the transport lands (see cluster_client.h). */
#include "coordinator/cluster_client.h"
#include "core/err.h"

int cluster_pipeline_new(pipeline_t **out, const gguf_t *g, const char *model_path, const char *cluster_file,
                         const char *workers_csv, const stage_cfg_t *cfg, int threads, char *err, size_t errlen) {
    (void)g; (void)model_path; (void)cluster_file; (void)workers_csv; (void)cfg; (void)threads;
    *out = 0;
    return err_set(err, errlen, TERN_ENOTSUP, "cluster mode is not available in this build yet");
}
