#!/usr/bin/env bash
# Kernel benchmarks (tern bench --kernels): read bandwidth, GEMV GB/s per kernel on BitNet-2B
# shapes, the lm head GEMV (f16, q8_0, q6_k, q4_k on the 128256 x 2560 head), GEMM GOPS vs the
# VNNI peak, batched-decode ratio. Extra args pass through
# (-t N, -o json, --quick, --mem MiB). Set TERN_BIN to pick the binary; TERN_ISA to force an ISA.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${TERN_BIN:-$here/build/tern}"
if [ ! -x "$bin" ]; then
  echo "kernels.sh: $bin not found; build first (cmake -S . -B build && cmake --build build -j)" >&2
  exit 1
fi
exec "$bin" bench --kernels "$@"
