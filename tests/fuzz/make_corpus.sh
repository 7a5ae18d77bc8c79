#!/usr/bin/env bash
# make_corpus.sh TERN_BIN OUT_DIR: a small seed corpus for fuzz_gguf — tiny 1-layer models of
# every ternary type and head type written by `tern mkmodel` (vocabulary shrunk to keep the
# files small; K-quant heads and embeddings too), plus a few hand-made edge cases (empty file, header only, no tensors).
set -euo pipefail
tern=${1:?usage: make_corpus.sh TERN_BIN OUT_DIR}
out=${2:?usage: make_corpus.sh TERN_BIN OUT_DIR}
mkdir -p "$out"
export TERN_PROGRESS=0
[ -n "${TERN_CORPUS_NO_MODELS:-}" ] || for t in i2_s tq2_0 tq1_0; do
  for h in f16 q8_0; do
    "$tern" mkmodel --preset tiny --layers 1 --n-vocab 260 --untied --type "$t" --head "$h" -s 1 \
      -o "$out/tiny_${t}_${h}.gguf" 2>/dev/null
  done
done
[ -n "${TERN_CORPUS_NO_MODELS:-}" ] || "$tern" mkmodel --arch llama --preset tiny --layers 1 --n-vocab 260 -o "$out/tiny_llama.gguf" 2>/dev/null
# llama-quantize's shapes: Q4_K embeddings + Q6_K head, and a tied Q6_K token_embd
[ -n "${TERN_CORPUS_NO_MODELS:-}" ] || "$tern" mkmodel --preset tiny --layers 1 --n-vocab 260 --type tq1_0 \
  --head-type q6_k --embd-type q4_k -s 1 -o "$out/tiny_tq1_0_q6k_q4k.gguf" 2>/dev/null
[ -n "${TERN_CORPUS_NO_MODELS:-}" ] || "$tern" mkmodel --preset tiny --layers 1 --n-vocab 260 --type tq2_0 \
  --head-type q6_k -s 1 -o "$out/tiny_tq2_0_tied_q6k.gguf" 2>/dev/null
# the header (kv + tensor infos) of one model alone: small, so the fuzzer runs fast on it
[ -n "${TERN_CORPUS_NO_MODELS:-}" ] || head -c 8192 "$out/tiny_llama.gguf" > "$out/header_only.gguf"
# edge cases: magic only, header with no kv and no tensors, a single u32 kv
printf 'GGUF' > "$out/magic_only.gguf"
printf 'GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00' > "$out/empty_v3.gguf"
printf 'GGUF\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00k\x04\x00\x00\x00\x07\x00\x00\x00' > "$out/one_kv_v2.gguf"
ls "$out" | wc -l
