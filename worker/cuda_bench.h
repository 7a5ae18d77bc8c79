/* cuda_bench: `tern bench --cuda` — the GPU's measured device-memory read bandwidth, the W2A8
 * GEMV's effective bandwidth on the 2B-4T shapes (target >= 70% of the measured figure), the
 * dp4a GEMM's int8 throughput at prefill batch sizes, the GEMV on a tall matrix (its streaming
 * rate), a 30-layer decode set of the stage's fused products (direct / CUDA graph, PDL off / on),
 * and the lm head GEMV (F16, Q8_0). Random
 * weights: no model needed. tg/pp of a model on the GPU: `tern bench -m M -ngl 99`. */
#ifndef TERN_CUDA_BENCH_H
#define TERN_CUDA_BENCH_H
#include <stddef.h>

/* argv[0] is the subcommand name; flags: --cuda (skipped), -r N repetitions, --quick. 0 or 1. */
int cuda_bench_main(int argc, char **argv);
/* GPU 0's device-memory read bandwidth in GB/s over `bytes` (best of reps); <= 0 when there is
 * no CUDA build or device (the model bench's roofline for -ngl >= layers) */
double cuda_bench_read_gbps(size_t bytes, int reps);

#endif
