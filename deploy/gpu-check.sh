#!/usr/bin/env bash
# gpu-check.sh [quick|full]: run from a bundle made by deploy/gpu-bundle.sh, on a host with a GPU.
# quick: test_cuda (every kernel against the CPU, tiny models), tests/integration/cuda.sh (-ngl,
# mixed clusters, placement), greedy GPU-vs-CPU on generated falcon3-1b (SiLU, 256-wide heads)
# and 2b4t (also with prefill on the tensor cores, TERN_CUDA_MMA=1). full: also `tern bench --cuda`
# (GEMV, dp4a vs mma GEMM), `tern bench -ngl 99` on those and llama3-8b (with the
# stage's phase timing), llama3-8b greedy GPU-vs-CPU and compute-sanitizer memcheck. Logs go to
# $OUT (or /tmp/gpu-check); one summary line per step on stdout. Exit status 1 if a check failed.
set -u
D=$(cd "$(dirname "$0")" && pwd)
O=${OUT:-/tmp/gpu-check}
mode=${1:-quick}
mkdir -p "$O"
export TERN_BIN="$D/tern" TERN_PROGRESS=0
fails=0
T() { echo "=== $1 ($(date +%T))"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
T test_cuda
timeout 300 env LD_LIBRARY_PATH="$D/lib" "$D/bin/test_cuda" >"$O/test_cuda.txt" 2>&1 || fails=$((fails + 1))
grep -E "PASSED|FAILED|skipped: no CUDA|Failure|differ" "$O/test_cuda.txt" | sort | uniq -c | head -8
T integ_cuda
(cd "$D" && timeout 300 bash tests/integration/cuda.sh) >"$O/integ_cuda.txt" 2>&1 || fails=$((fails + 1))
grep -E "FAIL|passed" "$O/integ_cuda.txt"
if grep -q "^no GPU" "$O/test_cuda.txt"; then
  echo "no CUDA device here ($(grep "^no GPU" "$O/test_cuda.txt" | sed 's/^no GPU: //; s/ — .*//')): the GPU checks were skipped"
  T "done: $fails failed"
  [ $fails -eq 0 ]
  exit
fi
P="Once upon a time in a land far away, there lived"
eq() {   # MODEL N GPUFLAGS: greedy text of the GPU run == the CPU run
  local d a
  for d in cpu gpu; do
    a=""; [ $d = gpu ] && a="$3"
    timeout 300 "$D/tern" run -m "$1" -p "$P" -n "$2" --temp 0 $a --no-display-prompt --summary=0 >"$O/r_$d.txt" 2>"$O/r_$d.err" \
      || echo "run $d failed: $(tail -1 "$O/r_$d.err")"
  done
  if [ -s "$O/r_cpu.txt" ] && cmp -s "$O/r_cpu.txt" "$O/r_gpu.txt"; then echo "ok   - $(basename "$1") greedy $2 tokens [$3] == CPU"
  else echo "FAIL - $(basename "$1") [$3]: $(cmp "$O/r_cpu.txt" "$O/r_gpu.txt" 2>&1)"; fails=$((fails + 1)); fi
}
mk() { [ -s "$2" ] || "$D/tern" mkmodel "${@:3}" -o "$2" >/dev/null 2>"$O/mk.err" || { echo "mkmodel $1 failed: $(tail -1 "$O/mk.err")"; return 1; }; }
bn() { TERN_CUDA_TIMING=1 timeout 300 "$D/tern" bench -m "$1" -ngl 99 -p 512 -n 128 -np 1,4,8 -r 3 >"$O/b.txt" 2>&1; \
       grep -E "cuda stage|^\| [bl]" "$O/b.txt" | sed 's/^.* I cuda/cuda/'; cat "$O/b.txt" >>"$O/bench_models.txt"; }
T falcon3-1b
mk falcon3-1b /tmp/gc-f1.gguf --preset falcon3-1b --type tq2_0 --head q8_0 && eq /tmp/gc-f1.gguf 64 "-ngl 99"
T 2b4t
mk 2b4t /tmp/gc-2b.gguf --preset 2b4t && eq /tmp/gc-2b.gguf 64 "-ngl 99"
T "2b4t, prefill on the tensor cores and sampling on the device (TERN_CUDA_MMA=1 TERN_CUDA_SAMPLE=1)"
TERN_CUDA_MMA=1 TERN_CUDA_SAMPLE=1 eq /tmp/gc-2b.gguf 64 "-ngl 99"
if [ "$mode" = full ]; then
  T bench_cuda; timeout 300 "$D/tern" bench --cuda -r 3 >"$O/bench_cuda.txt" 2>&1
  grep -E "device:|one 2B|lm head|GEMV.*by size|decode products|TOPS" "$O/bench_cuda.txt"
  T bench_models; bn /tmp/gc-2b.gguf; bn /tmp/gc-f1.gguf
  T "bench 2b4t, TERN_CUDA_MMA=1 TERN_CUDA_SAMPLE=1"; TERN_CUDA_MMA=1 TERN_CUDA_SAMPLE=1 bn /tmp/gc-2b.gguf
  T llama3-8b
  if mk llama3-8b /tmp/gc-l8.gguf --preset llama3-8b --type tq1_0; then eq /tmp/gc-l8.gguf 48 "-ngl 99"; bn /tmp/gc-l8.gguf; fi
  T memcheck
  timeout 300 compute-sanitizer --tool memcheck env LD_LIBRARY_PATH="$D/lib" "$D/bin/test_cuda" >"$O/memcheck.txt" 2>&1
  grep -E "ERROR SUMMARY" "$O/memcheck.txt" || echo "(compute-sanitizer did not run)"
fi
T "done: $fails failed"
[ $fails -eq 0 ]
