#!/usr/bin/env bash
# run.sh [SECONDS]: builds every libFuzzer target (tests/fuzz/fuzz_*.c) with clang
# (-DTERN_FUZZ=ON: address + undefined sanitizers) in build-fuzz/ and runs each for SECONDS
# (default 30): the GGUF reader from a generated seed corpus, the others from their own (plus the
# seeds in tests/fuzz/seeds/TARGET when there are some).
# Exits non-zero on a crash, a leak or a sanitizer report; the reproducer is left in build-fuzz/.
set -euo pipefail
secs=${1:-30}
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${TERN_FUZZ_BUILD:-$src/build-fuzz}
jobs=${TERN_FUZZ_JOBS:-2}
mkdir -p "$build"
CC=clang cmake -S "$src" -B "$build" -DTERN_FUZZ=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
targets=()
for f in "$src"/tests/fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done
if ! make -C "$build" -j"$jobs" "${targets[@]}" tern >"$build/fuzz_build.log" 2>&1; then
  tail -30 "$build/fuzz_build.log" >&2
  echo "run.sh: the fuzz targets do not build with clang (see $build/fuzz_build.log)" >&2
  exit 1
fi
corpus=$build/corpus_gguf
if [ ! -e "$corpus/tiny_i2_s_f16.gguf" ]; then
  ASAN_OPTIONS=detect_leaks=0 bash "$src/tests/fuzz/make_corpus.sh" "$build/tern" "$corpus" >/dev/null
fi
cd "$build"
rc=0
for t in "${targets[@]}"; do
  c="$build/corpus_${t#fuzz_}"
  mkdir -p "$c"
  [ -d "$src/tests/fuzz/seeds/${t#fuzz_}" ] && cp -n "$src/tests/fuzz/seeds/${t#fuzz_}"/* "$c"/ 2>/dev/null || true
  echo "--- $t for ${secs}s"
  if ! ./"$t" -max_total_time="$secs" -max_len=1048576 -rss_limit_mb=2048 -timeout=10 \
       -print_final_stats=1 "$c" >"$build/$t.log" 2>&1; then
    tail -40 "$build/$t.log"
    echo "run.sh: $t FAILED (reproducer in $build)"
    rc=1
  else
    grep -E "stat::number_of_executed_units|Done" "$build/$t.log" | tail -2
  fi
done
exit $rc
