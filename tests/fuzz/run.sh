#!/usr/bin/env bash
# run.sh SECONDS: builds the libFuzzer targets with clang (-DTERN_FUZZ=ON) in build-fuzz/ and
# fuzzes the GGUF reader for SECONDS (default 60) from a generated seed corpus. Exits non-zero
# on a crash, a leak or a sanitizer report; the reproducer is left in build-fuzz/.
# If the full tree does not build with clang, fuzz_gguf is built from core/ alone (the reader
# needs nothing else) and the build failure is reported as a warning.
set -euo pipefail
secs=${1:-60}
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${TERN_FUZZ_BUILD:-$src/build-fuzz}
jobs=${TERN_FUZZ_JOBS:-2}
mkdir -p "$build"
CC=clang cmake -S "$src" -B "$build" -DTERN_FUZZ=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
if ! make -C "$build" -j"$jobs" fuzz_gguf >"$build/fuzz_build.log" 2>&1; then
  echo "run.sh: warning: the tree does not build with clang (see $build/fuzz_build.log);" \
       "building fuzz_gguf from core/ only" >&2
  clang -std=gnu11 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I"$src" -I"$src/include" -o "$build/fuzz_gguf" "$src/tests/fuzz/fuzz_gguf.c" "$src"/core/*.c -lm -pthread
fi
corpus=$build/corpus_gguf
if [ ! -e "$corpus/tiny_i2_s_f16.gguf" ]; then
  # model seeds from a tern binary: $TERN_BIN, else the instrumented one built here (leak
  # checking is irrelevant while seeding); without one, the hand-made seeds only
  tern=${TERN_BIN:-}
  if [ -z "$tern" ] && make -C "$build" -j"$jobs" tern >/dev/null 2>&1; then tern=$build/tern; fi
  if [ -n "$tern" ] && [ -x "$tern" ]; then
    ASAN_OPTIONS=detect_leaks=0 bash "$src/tests/fuzz/make_corpus.sh" "$tern" "$corpus" >/dev/null
  else
    echo "run.sh: no tern binary to make model seeds; fuzzing from the hand-made seeds only" >&2
    TERN_CORPUS_NO_MODELS=1 bash "$src/tests/fuzz/make_corpus.sh" - "$corpus" >/dev/null
  fi
fi
cd "$build"
exec ./fuzz_gguf -max_total_time="$secs" -max_len=1048576 -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 "$corpus"
