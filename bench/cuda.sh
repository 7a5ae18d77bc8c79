#!/usr/bin/env bash
# GPU benchmark (needs a CUDA build and a device): `tern bench --cuda` — the device's measured
# read bandwidth, the W2A8 GEMV on the 2B-4T shapes and on a tall 128256x2560 matrix, a 30-layer
# decode set of the stage's fused products (direct launches / one CUDA graph, with and without
# programmatic dependent launch), the lm head — then `tern bench -ngl 99` (pp512, tg128 with 1, 4
# and 8 sequences) on generated 2b4t, falcon3-1b and llama3-8b models, with the stage's per-phase
# timing (TERN_CUDA_TIMING=1). Prints "no CUDA device" and exits 0 when there is none.
#   bench/cuda.sh [extra tern bench flags...]       env: TERN_BIN, TERN_CACHE, REPS, MODELS
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
bench_tern "cuda"
REPS="${REPS:-3}" MODELS="${MODELS:-2b4t falcon3-1b llama3-8b}"
if ! out=$("$TERN" bench --cuda -r "$REPS" 2>&1); then
  echo "cuda: $out" | tail -1
  exit 0
fi
echo "$out"
for name in $MODELS; do
  mk=()
  case "$name" in
    2b4t) bench_model cuda 2b4t "$cache" ;;
    falcon3-1b) model="$cache/models/falcon3-1b-tq2_0.gguf" mk=(--preset falcon3-1b --type tq2_0 --head q8_0) ;;
    llama3-8b) model="$cache/models/llama3-8b-tq1_0.gguf" mk=(--preset llama3-8b --type tq1_0) ;;
    *) model="$name"; [ -s "$model" ] || { echo "cuda: no model $model" >&2; exit 1; } ;;
  esac
  if [ ! -s "$model" ]; then
    mkdir -p "$cache/models"
    echo "cuda: making $model" >&2
    TERN_PROGRESS=0 "$TERN" mkmodel "${mk[@]}" -o "$model" >/dev/null
  fi
  echo
  echo "### $name on the GPU"
  echo
  TERN_CUDA_TIMING=1 "$TERN" bench -m "$model" -ngl 99 -p 512 -n 128 -np 1,4,8 -r "$REPS" "$@" 2>&1 \
    | sed -n 's/^.* I \(cuda stage.*\)/\1/p; /^|/p; /^roofline/p'
done
