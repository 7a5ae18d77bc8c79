/* cuda_pick: the sampler's first steps on the GPU, so that a sampled row's logits (n_vocab
 * floats: 513 KB at 128k) need not cross to the host — the repetition penalty, then either the
 * greedy argmax (worker/sampler.c's rule: the first index of the largest logit, NaNs skipped, 0
 * when logits[0] is NaN) or the k best logits sorted (higher logit first, ties by lower id, as
 * the sampler's top-k), for the host to draw from (sampler_sample_cands). Plain C types: the
 * stage includes this header in every build. */
#ifndef TERN_CUDA_PICK_H
#define TERN_CUDA_PICK_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

#define CUDA_PICK_MAX 64   /* the most candidates a row can ask for */

enum cuda_pick_mode {
    CUDA_PICK_LOGITS = 0,  /* nothing on the device: the row's logits go to the host */
    CUDA_PICK_ARGMAX = 1,  /* greedy */
    CUDA_PICK_TOP = 2      /* the k best */
};

/* what to do with one row of logits */
typedef struct cuda_pick_req {
    int mode;
    int k;                 /* CUDA_PICK_TOP: 1..CUDA_PICK_MAX (and < n_vocab) */
    float penalty;         /* applied first, to the distinct ids pen[pen_off .. pen_off + pen_n): */
    int pen_off, pen_n;    /*   x = x > 0 ? x / penalty : x · penalty (1: none) */
} cuda_pick_req_t;

/* what came of it: n = 1 (argmax: id[0]), k (top: id/logit best first, logits after the
 * penalty), or -1: the row holds a NaN, so no order is defined — the caller takes the row's
 * logits (the penalty applied) and samples them on the host as the CPU would */
typedef struct cuda_pick_res {
    int32_t n;
    int32_t id[CUDA_PICK_MAX];
    float logit[CUDA_PICK_MAX];
} cuda_pick_res_t;

/* For rows j < m of logits (m, n_vocab), device pointers all: req[j] (device), pen (device ids),
 * res[j] (device). Rows with mode CUDA_PICK_LOGITS are left untouched and their res unwritten;
 * the others are modified in place by the penalty. One block per row; default stream. */
void cuda_pick(float *logits, int m, int64_t n_vocab, const cuda_pick_req_t *req, const int32_t *pen,
               cuda_pick_res_t *res);

#ifdef __cplusplus
}
#endif
#endif
