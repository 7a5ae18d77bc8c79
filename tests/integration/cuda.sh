#!/usr/bin/env bash
# CUDA stage end to end. Always: without a GPU (or in a CPU-only build) `tern worker --device
# cuda` and `tern run -ngl N` fail at once with one line naming why. With a GPU: greedy tokens of
# -ngl 1 (GPU + CPU stage), -ngl 99 (all on the GPU) and of a mixed cluster (a CUDA worker and a
# CPU worker) equal those of one CPU process. Every process is killed on exit.
set -u
TERN="${TERN_BIN:?TERN_BIN not set}"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
pass=0 fail=0
ok() { pass=$((pass+1)); echo "ok   - $*"; }
bad() { fail=$((fail+1)); echo "FAIL - $*"; }

M="$tmp/m.gguf"
"$TERN" mkmodel --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s --seed 5 -o "$M" >/dev/null 2>&1 || { echo "mkmodel failed"; exit 1; }
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
  start() {   # name device -> EP
    "$TERN" worker --listen 'tcp://127.0.0.1:*' -m "$M" -t 1 --name "$1" --device "$2" >"$tmp/$1.out" 2>"$tmp/$1.log" &
    pids+=($!)
    for _ in $(seq 1 400); do grep -q '^ready ' "$tmp/$1.out" 2>/dev/null && break; sleep 0.05; done
    EP=$(sed -n 's/^ready //p' "$tmp/$1.out" | head -1)
  }
  EP=""; start gpu cuda; WG=$EP
  EP=""; start cpu cpu; WC=$EP
  if [ -z "$WG" ] || [ -z "$WC" ]; then bad "workers did not start: $(cat "$tmp"/*.log | tail -3)"; else
    for ws in "$WG,$WC" "$WC,$WG" "$WG"; do
      got=$(run --workers "$ws")
      [ "$got" == "$ref" ] && ok "cluster [$ws] == one CPU process" || bad "cluster [$ws]: '$got' != '$ref'"
    done
  fi
fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
