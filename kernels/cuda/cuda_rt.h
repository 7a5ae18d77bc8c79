/* cuda_rt: the few CUDA runtime services the GPU stage needs — device probe, device memory,
 * copies, a synchronising error check, and a device read-bandwidth probe for benches. Plain C
 * API (implemented in cuda_rt.cu) so the orchestration stays in C. Kernels queue on the
 * default stream; errors of queued kernels surface at the next cuda_rt_sync / copy.
 * Not here: kernels (cuda_tmat, cuda_ops, cuda_fmat). */
#ifndef TERN_CUDA_RT_H
#define TERN_CUDA_RT_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/* number of usable devices; 0 when none or the driver is missing (the runtime's reason in err) */
int cuda_rt_device_count(char *err, size_t errlen);
/* selects device `dev`; name (cap) gets its name, *mem its memory in bytes. 0 or <0 with err. */
int cuda_rt_open(int dev, char *name, size_t cap, size_t *mem, char *err, size_t errlen);
void *cuda_rt_alloc(size_t bytes);   /* NULL on failure */
void cuda_rt_free(void *p);          /* NULL ok */
int cuda_rt_h2d(void *dst, const void *src, size_t n, char *err, size_t errlen);
int cuda_rt_d2h(void *dst, const void *src, size_t n, char *err, size_t errlen);
/* device to device, queued on the default stream (after the kernels before it) */
int cuda_rt_d2d(void *dst, const void *src, size_t n, char *err, size_t errlen);
int cuda_rt_memset(void *p, int v, size_t n, char *err, size_t errlen);
/* waits for every queued kernel; 0, or <0 with the first launch/run error in err */
int cuda_rt_sync(char *err, size_t errlen);
/* CUDA graphs: kernels queued between capture_begin and capture_end are recorded, not run, and
 * replayed by graph_launch (one launch instead of hundreds: decode is launch-bound otherwise).
 * No copies or syncs while capturing. capture_end returns NULL when capture failed (the
 * recorded kernels then never ran: run them directly). */
typedef struct cuda_rt_graph cuda_rt_graph_t;
int cuda_rt_capture_begin(void);
cuda_rt_graph_t *cuda_rt_capture_end(void);
int cuda_rt_graph_launch(cuda_rt_graph_t *g);   /* 0 or <0 */
void cuda_rt_graph_free(cuda_rt_graph_t *g);    /* NULL ok */
/* device memory read bandwidth in GB/s: a read kernel over `bytes` bytes, best of reps; <0 on error */
double cuda_rt_read_gbps(size_t bytes, int reps);

#ifdef __cplusplus
}
#endif
#endif
