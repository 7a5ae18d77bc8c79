#!/usr/bin/env bash
# The README's first command: install dependencies, build tern, make a synthetic model of a real
# architecture (BitNet b1.58, Llama-3 vocabulary when available) and generate text from it on a
# local cluster of two worker processes on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
mkdir -p models
CACHE="${TERN_CACHE:-$HOME/.cache/tern}"
MODEL=models/small-i2_s.gguf
if [ ! -s "$MODEL" ]; then
  vocab=()
  [ -s "$CACHE/llama3/tokenizer.json" ] && vocab=(--vocab "$CACHE/llama3/tokenizer.json")
  ./build/tern mkmodel --arch bitnet-b1.58 --preset small --type i2_s "${vocab[@]}" --seed 1 -o "$MODEL"
fi
./build/tern info "$MODEL" --no-tensors
bash deploy/local-cluster.sh -m "$MODEL" -w 2 -t 1 -- -p "The ternary cluster says" -n 32 --temp 0.7 -s 42
