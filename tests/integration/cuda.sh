#!/usr/bin/env bash
# CUDA stage end to end. Always: without a GPU (or in a CPU-only build) `tern worker --device
# cuda` and `tern run -ngl N` fail at once with one line naming why. With a GPU: greedy tokens of
# -ngl 1 (GPU + CPU stage), -ngl 99 (all on the GPU) and of a mixed cluster (a CUDA worker and a
# CPU worker), and seeded sampled tokens of -ngl 99, equal those of one CPU process. Every process is killed on exit.
source "$(dirname "$0")/lib.bash"

M="$tmp/m.gguf"
make_model "$M" --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s --seed 5
run() { timeout 120 "$TERN" run -m "$M" --no-display-prompt --summary=0 -p "Hello world, this is tern" -n 24 --temp 0 "$@" 2>>"$tmp/run.log"; }

out=$(timeout 20 "$TERN" worker --device cuda --listen 'tcp://127.0.0.1:*' -m "$M" --idle-exit 2000 2>&1 </dev/null | head -c 4000)
gpu=1
if echo "$out" | grep -qE "tern was built without CUDA|no CUDA device found"; then
  gpu=0
  [ "$(echo "$out" | grep -c .)" -eq 1 ] && ok "worker --device cuda without a GPU: $out" || bad "worker error is not one line: $out"
  out=$(timeout 20 "$TERN" run -m "$M" -p hi -n 2 -ngl 1 2>&1); rc=$?
  [ $rc -ne 0 ] && echo "$out" | grep -qE "tern was built without CUDA|no CUDA device found" \
    && ok "run -ngl 1 without a GPU: $(echo "$out" | tail -1)" || bad "run -ngl 1 without a GPU (rc $rc): $out"
fi
if [ $gpu -eq 0 ]; then
  echo "skipped: no CUDA device (the GPU checks of this script)"
else
  ref=$(run -t 2)
  [ -n "$ref" ] || bad "CPU run printed nothing"
  for ngl in 1 2 99; do
    got=$(run -ngl $ngl)
    [ "$got" == "$ref" ] && ok "-ngl $ngl == CPU" || bad "-ngl $ngl: '$got' != '$ref' ($(tail -1 "$tmp/run.log"))"
  done
  got=$(TERN_CUDA_SAMPLE=1 run -ngl 99)   # greedy argmax on the device
  [ "$got" == "$ref" ] && ok "-ngl 99, TERN_CUDA_SAMPLE=1 == CPU" || bad "-ngl 99 device argmax: '$got' != '$ref'"
  # a prompt of more than 8 tokens goes through the prefill GEMM: dp4a and (TERN_CUDA_MMA=1)
  # the int8 tensor cores both give the CPU's tokens
  long="The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun"
  refp=$(run -t 2 -p "$long")
  for mma in 0 1; do
    gotp=$(TERN_CUDA_MMA=$mma run -ngl 99 -p "$long")
    [ -n "$refp" ] && [ "$gotp" == "$refp" ] && ok "long prompt, TERN_CUDA_MMA=$mma, -ngl 99 == CPU" || bad "long prompt (mma $mma): '$gotp' != '$refp'"
  done
  # a q8_0 KV cache on the GPU == a q8_0 cache on the CPU
  ref8=$(run -t 2 --kv-type q8_0)
  got8=$(run -ngl 99 --kv-type q8_0)
  [ -n "$ref8" ] && [ "$got8" == "$ref8" ] && ok "--kv-type q8_0 -ngl 99 == CPU" || bad "q8_0 KV on the GPU: '$got8' != '$ref8'"
  # sampled, not greedy: the GPU picks the top-k candidates (after the penalty) and the host
  # draws; without top-k, or past what the GPU orders, the row's logits come back instead
  for sm in "--top-k 40 --repeat-penalty 1.3" "--top-k 0 --repeat-penalty 1.3" "--top-k 200"; do
    refs=$(run -t 2 --temp 0.8 -s 3 $sm)
    gots=$(TERN_CUDA_SAMPLE=1 run -ngl 99 --temp 0.8 -s 3 $sm)
    [ -n "$refs" ] && [ "$gots" == "$refs" ] && ok "sampled ($sm) -ngl 99 == CPU" || bad "sampled ($sm): '$gots' != '$refs'"
  done
  # llama architecture: SiLU gates (the spec's exp), normal RoPE, Q8_0 head; a longer run
  ML="$tmp/llama.gguf"
  make_model "$ML" --arch llama --preset tiny --layers 3 --type tq2_0 --head q8_0 --seed 9
  refl=$(M="$ML" run -t 2 -n 96)
  gotl=$(M="$ML" run -ngl 99 -n 96)
  [ -n "$refl" ] && [ "$gotl" == "$refl" ] && ok "llama (SiLU) -ngl 99 == CPU, 96 tokens" || bad "llama -ngl 99: '$gotl' != '$refl'"
  spawn_worker gpu "$LOOPBACK_ANY" -m "$M" -t 1 --device cuda; WG=$(endpoint gpu 20)
  spawn_worker cpu "$LOOPBACK_ANY" -m "$M" -t 1 --device cpu; WC=$(endpoint cpu 20)
  if [ -z "$WG" ] || [ -z "$WC" ]; then bad "workers did not start: $(cat "$tmp"/*.log | tail -3)"; else
    for ws in "$WG,$WC" "$WC,$WG" "$WG"; do
      got=$(run --workers "$ws")
      [ "$got" == "$ref" ] && ok "cluster [$ws] == one CPU process" || bad "cluster [$ws]: '$got' != '$ref'"
    done
    # placement sees the GPU: its Hello offers the GPU's memory and bandwidth, so it gets the
    # larger share of the layers (w0 = the GPU worker, first on the list)
    run --workers "$WG,$WC" -v -n 1 >/dev/null 2>"$tmp/place.log"
    grep -q "cuda: " "$tmp/place.log" && ok "the GPU worker announces itself as cuda" || bad "no 'cuda: ' in the coordinator's log"
    pl=$(grep -A1 "placement:" "$tmp/place.log" | tail -1)
    rng() { echo "$pl" | sed -n "s/.*$1 \\[\\([0-9]*\\),\\([0-9]*\\)\\].*/\\2 - \\1 + 1/p"; }
    ng=$(rng w0) nc=$(rng w1)   # layers of each (a worker left out of the plan has none)
    [ -n "$ng" ] && [ $((ng)) -ge $((${nc:-0})) ] && ok "placement gives the GPU worker more layers: $pl" \
      || bad "placement with a GPU worker: '$pl'"
  fi
fi
finish
