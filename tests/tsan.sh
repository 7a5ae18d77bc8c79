#!/usr/bin/env bash
# ThreadSanitizer pass: builds build-tsan (TERN_SANITIZE=thread, no CUDA) and runs the unit tests
# and the multi-process tests whose outcome does not hang on timing (a sanitizer's slowdown
# trips heartbeats and long-step limits: failover, linkcut, longstep stay out; and Open MPI,
# whose internals TSan cannot judge: test_mpi_transport, integ_mpi) with the suppressions of
# tests/tsan.supp (libraries TSan cannot see into). Every process writes its
# reports to one folder; any report fails the pass, printed.
#   tests/tsan.sh [ctest -R regex for the integration tests]     env: TERN_TSAN_BUILD
set -euo pipefail
cd "$(dirname "$0")/.."
b=${TERN_TSAN_BUILD:-build-tsan}
sel=${1:-'^integ_(cli|cluster|context_shift|convert|curve|embed|grammar|infill|kld|kv_copy|lookup|mcscore|memflags|presets|reasoning|rope_scaling|sampler_order|sampling|serve|serve_concurrency|slot_cache|openai_client|cache_ram|chat_jinja|chat_cmd|chat_think|kquant|anthropic|responses|native_api|tls|tools|tools_native|webui)$'}
cmake -S . -B "$b" -DTERN_SANITIZE=thread -DTERN_CUDA=OFF -DTERN_WERROR=ON >/dev/null
cmake --build "$b" -j"$(nproc)" >/dev/null
logs=$(mktemp -d)
trap '[ "${TSAN_KEEP:-0}" = 1 ] || rm -rf "$logs"' EXIT
export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp log_path=$logs/tsan"
rc=0
ctest --test-dir "$b" --output-on-failure -j2 -L unit -E '^test_mpi_transport$' || rc=1
ctest --test-dir "$b" --output-on-failure -R "$sel" || rc=1
if compgen -G "$logs/tsan.*" >/dev/null; then
  cat "$logs"/tsan.* | head -400
  echo "ThreadSanitizer: $(cat "$logs"/tsan.* | grep -c '^WARNING: ThreadSanitizer') report(s), above"
  rc=1
else
  echo "ThreadSanitizer: no reports"
fi
exit $rc
