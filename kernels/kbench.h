/* kbench: `tern bench --kernels` — memory read bandwidth, each ternary kernel's effective
 * bandwidth on real shapes (weights ≫ L3), int8 GEMM throughput next to the VNNI peak, and the
 * batched-decode ratio. Prints a table, or one JSON object per row with -o json. */
#ifndef TERN_KBENCH_H
#define TERN_KBENCH_H

/* argv[0] is the subcommand name; flags: -t N, -o table|json, --quick, --mem MiB. Returns 0. */
int kbench_main(int argc, char **argv);

#endif
