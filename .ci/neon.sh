#!/usr/bin/env bash
# NEON kernels: cross-build the kernels, test_kernels (matmuls), test_kquant (K-quant lm heads) and
# test_ops (norm, softmax, gates, attention over f32/f16/q8_0 caches, f16 rows) for aarch64 and
# run them under qemu-user,
# once as a CPU with dotprod (sdot path) and once without (widening-multiply path). No aarch64
# libcmocka exists on the build host, so the tests take a small cmocka stand-in selected by
# -DTERN_CMOCKA_SHIM (tests/unit/cmocka_or_shim.h: same assertions, same output shape).
set -euo pipefail
cd "$(dirname "$0")/.."
b=${TERN_NEON_BUILD:-build-neon}
cmake -S . -B "$b" -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-toolchain.cmake -DTERN_NEON_TESTS_ONLY=ON \
  -DTERN_WERROR=ON -DCMAKE_C_FLAGS="-DTERN_CMOCKA_SHIM" >/dev/null
cmake --build "$b" -j2 --target test_kernels test_ops test_kquant
run() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$@"; }
echo "--- neon with dotprod (qemu -cpu max)"
QEMU_CPU=max run "$b/test_kernels"
QEMU_CPU=max run "$b/test_ops"
QEMU_CPU=max run "$b/test_kquant"
echo "--- neon without dotprod (qemu -cpu cortex-a57)"
QEMU_CPU=cortex-a57 run "$b/test_kernels"
QEMU_CPU=cortex-a57 run "$b/test_ops"
QEMU_CPU=cortex-a57 run "$b/test_kquant"
