#!/usr/bin/env bash
# gpu-bundle.sh OUT [BUILD]: tern and test_cuda from BUILD (default build/) with the shared
# libraries they load (ldd, minus glibc and libstdc++/libgcc, which every x86-64 Linux has), and a
# wrapper OUT/tern that sets LD_LIBRARY_PATH — for a GPU host that has the NVIDIA driver but not
# this project's Debian packages (a lent test machine; a GPU box where installing is not wanted).
# Then, on that host: OUT/gpu-check.sh runs the GPU tests, the GPU integration test, the kernel
# benchmarks and greedy GPU-vs-CPU checks on generated real-shape models.
set -eu
out=${1:?usage: deploy/gpu-bundle.sh OUT [BUILD]}
here=$(cd "$(dirname "$0")/.." && pwd)
build=${2:-$here/build}
for b in tern test_cuda; do [ -x "$build/$b" ] || { echo "gpu-bundle: no $build/$b (build first)" >&2; exit 1; }; done
grep -q "^CMAKE_CUDA_COMPILER:.*nvcc" "$build/CMakeCache.txt" 2>/dev/null \
  || echo "gpu-bundle: warning: $build was not configured with nvcc; its tern says 'built without CUDA'" >&2
mkdir -p "$out/bin" "$out/lib"
cp "$build/tern" "$build/test_cuda" "$out/bin/"
strip "$out/bin/tern" "$out/bin/test_cuda" 2>/dev/null || true
for b in tern test_cuda; do ldd "$build/$b" | awk '$3 ~ /^\// {print $3}'; done | sort -u \
  | grep -vE '/(libc|libm|libpthread|libresolv|libdl|librt|libgcc_s|libstdc\+\+)\.so' | xargs -r -I{} cp -L {} "$out/lib/"
cat >"$out/tern" <<'W'
#!/bin/sh
D=$(cd "$(dirname "$0")" && pwd)
LD_LIBRARY_PATH="$D/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$D/bin/tern" "$@"
W
cp "$here/deploy/gpu-check.sh" "$out/"
mkdir -p "$out/tests/integration"
cp "$here/tests/integration/cuda.sh" "$here/tests/integration/lib.bash" "$out/tests/integration/"
chmod +x "$out/tern" "$out/gpu-check.sh"
echo "gpu-bundle: $out ($(du -sh "$out" | cut -f1)); on the GPU host: $out/gpu-check.sh [quick|full]"
