/* cuda_stage: a shard's layers (and head) run on a CUDA GPU — the GPU twin of forward.c. At
 * init every ternary linear is repacked into the gpack layout and uploaded once, with the norms,
 * the lm head as stored (F32/F16/BF16/Q8_0), a RoPE cos/sin table made on the host by
 * ops_rope_table (scaling and frequency factors included), a device KV cache and activations sized for n_max tokens. A step moves only the
 * hidden states (n, n_embd) in and out, and for the rows to sample either their logits or, when
 * the caller asks (cuda_stage_forward_pick), what the device made of them: the greedy token or
 * the k best candidates (kernels/cuda/cuda_pick.h), for the host's sampler to finish. Built in
 * every configuration: without TERN_HAVE_CUDA every entry point reports "tern was built without
 * CUDA". Not here: the sampler's draw, validation of steps (stage.c). */
#ifndef TERN_CUDA_STAGE_H
#define TERN_CUDA_STAGE_H
#include <stddef.h>
#include "kernels/cuda/cuda_pick.h"
#include "worker/kv_cache.h"
#include "worker/shard.h"

typedef struct cuda_stage cuda_stage_t;

/* 0 when a CUDA device can be used (name, cap: its name; may be NULL), else <0 with a one-line
 * reason: "tern was built without CUDA" or "no CUDA device found". */
int cuda_stage_probe(char *name, size_t cap, char *err, size_t errlen);
/* Uploads shard s (which must outlive the stage) to device 0. Linears must be ternary with one
 * scale per tensor (I2_S, or TQ1_0/TQ2_0 with equal block scales). 0 or <0 with err. */
int cuda_stage_new(cuda_stage_t **out, const shard_t *s, int n_ctx, int n_seq, int n_max, int n_logits_max,
                   int kv_type, char *err, size_t errlen);
void cuda_stage_destroy(cuda_stage_t **p);
/* h (n, n_embd) host, in place through the shard's layers (in chunks of n_max), with seq/pos as
 * forward_layers; then, when m > 0 (head stages only), logits (m, n_vocab) host = head(out_norm(h
 * row rows[j])). 0 or <0 on a device error (err). */
int cuda_stage_forward(cuda_stage_t *c, float *h, int n, const int *seq, const int *pos, int m, const int *rows,
                       float *logits, char *err, size_t errlen);
/* cuda_stage_forward, and for rows j with pick[j].mode != CUDA_PICK_LOGITS (pick may be NULL:
 * none) cuda_pick on the device instead of sending the row's logits: pen (n_pen ids, host) holds
 * the rows' penalty ids; res[j] (host) gets the outcome (n = 0 for CUDA_PICK_LOGITS rows; n = -1:
 * logits row j came back, the penalty applied). m <= n_logits_max when pick is given. */
int cuda_stage_forward_pick(cuda_stage_t *c, float *h, int n, const int *seq, const int *pos, int m, const int *rows,
                            float *logits, const cuda_pick_req_t *pick, const int32_t *pen, int n_pen,
                            cuda_pick_res_t *res, char *err, size_t errlen);
/* The context shift sh (checked by the caller: kv_shift_check) in every layer of the device KV
 * cache, as forward_shift does on the host: keys re-rotated by -discard (ops_rope_shift_table at
 * +discard, sine negated by the kernel: the rotation alone, without YaRN's magnitude the keys
 * already carry), values moved. 0 or <0 on a device error (err). */
int cuda_stage_shift(cuda_stage_t *c, const kv_shift_t *sh, char *err, size_t errlen);
/* The copy cp (checked by the caller: kv_copy_check) in every layer of the device KV cache, as
 * kv_cache_copy does on the host: slot src's rows [0, n) of keys and values onto slot dst's, device
 * to device. 0 or <0 on a device error (err). */
int cuda_stage_copy(cuda_stage_t *c, const kv_copy_t *cp, char *err, size_t errlen);
/* stage_kv_io on the device cache: slot seq's rows [0, n) of every layer, buf (nl, 2, n, row) host
 * bytes (each layer's keys, then its values), copied out (write 0) or in (write 1) with cudaMemcpy.
 * The caller checked seq and n. 0 or <0 on a device error (err). */
int cuda_stage_kv_io(cuda_stage_t *c, int seq, int n, uint8_t *buf, int write, char *err, size_t errlen);
/* 1 when cuda_stage_forward_pick may be asked to pick (the stage has the head, and
 * TERN_CUDA_SAMPLE=1 was set when it was made: opt-in until the picks have run on a GPU) */
int cuda_stage_picks(const cuda_stage_t *c);
size_t cuda_stage_device_bytes(const cuda_stage_t *c);   /* device memory held */
/* GPU 0 for a worker's Hello: its name (cap), memory in bytes and measured read bandwidth in
 * GB/s (a 256 MiB probe). 0 or <0 with the probe's one-line reason. */
int cuda_stage_device_info(char *name, size_t cap, size_t *mem, double *gbps, char *err, size_t errlen);

#endif
