#!/usr/bin/env bash
# Cluster over ZeroMQ with real processes on loopback: the tokens generated through 1, 2 and 3
# workers (any placement, any thread count) equal those of one process, greedy and seeded;
# perplexity through 2 and 3 workers equals one process's;
# bad clusters (unreachable worker, different model file, pinned layers out of range) fail with
# a clear error, quickly. Every process is killed on exit.
source "$(dirname "$0")/lib.bash"

M="$tmp/m.gguf"
make_model "$M" --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s --seed 11
M2="$tmp/m2.gguf"
make_model "$M2" --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s --seed 12

start_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1; W1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$M" -t 2; W2=$EP
start_worker w3 "$LOOPBACK_ANY" -m "$M" -t 1; W3=$EP
[ -n "$W1" ] && [ -n "$W2" ] && [ -n "$W3" ] || { echo "workers did not start"; cat "$tmp"/*.log; exit 1; }

run() { timeout 120 "$TERN" run -m "$M" --no-display-prompt --summary=0 -p "Hello world, this is tern" -n 24 "$@" 2>>"$tmp/run.log"; }

for samp in "--temp 0" "--temp 0.9 -s 7 --top-k 20" "--temp 0.7 -s 3 --repeat-penalty 1.3"; do
  ref=$(run $samp -t 2)
  [ -n "$ref" ] || bad "single-process run ($samp) printed nothing"
  for ws in "$W1" "$W1,$W2" "$W1,$W2,$W3" "$W3,$W1"; do
    got=$(run $samp --workers "$ws")
    if [ "$got" == "$ref" ]; then ok "cluster [$ws] == one process ($samp)"; else bad "cluster [$ws] ($samp): '$got' != '$ref'"; fi
  done
done
# a q8_0 KV cache (LoadShard's kv_type) through 2 and 3 workers == one q8_0 process
ref=$(run --temp 0.8 -s 5 --kv-type q8_0 -t 2)
for ws in "$W1,$W2" "$W1,$W2,$W3"; do
  got=$(run --temp 0.8 -s 5 --kv-type q8_0 --workers "$ws")
  [ -n "$ref" ] && [ "$got" == "$ref" ] && ok "cluster [$ws] --kv-type q8_0 == one process" || bad "q8_0 KV on [$ws]: '$got' != '$ref'"
done
# several sequences through the cluster (batched steps) still equal one process
ref=$(run --temp 0 -np 2 -b 4)
got=$(run --temp 0 -np 2 -b 4 --workers "$W1,$W2")
[ "$got" == "$ref" ] && ok "micro-batches of 4 through 2 workers" || bad "micro-batches: '$got' != '$ref'"
# perplexity through 2 and 3 workers (teacher-forced targets; only log p(target) comes back,
# several micro-batches in flight) gives one process's numbers, digit for digit
txt="$tmp/ppl.txt"
for i in $(seq 1 30); do echo "Line $i: the cat sat on the mat, and the dog ran after the ball."; done >"$txt"
pref=$(timeout 120 "$TERN" perplexity -m "$M" -f "$txt" -c 32 -b 8 -t 2 2>/dev/null | grep '^Final')
for ws in "$W1,$W2" "$W3,$W1,$W2"; do
  got=$(timeout 120 "$TERN" perplexity -m "$M" -f "$txt" -c 32 -b 8 --workers "$ws" 2>>"$tmp/run.log" | grep '^Final')
  [ -n "$pref" ] && [ "$got" == "$pref" ] && ok "perplexity on [$ws] == one process ($got)" || bad "perplexity on [$ws]: '$got' vs '$pref'"
done

# errors: each must fail fast with a message naming the problem
t0=$(date +%s)
out=$(timeout 60 "$TERN" run -m "$M" -p hi -n 2 --workers tcp://127.0.0.1:1 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -qi "worker" && ok "unreachable worker: $(echo "$out" | tail -1)" || bad "unreachable worker (rc $rc): $out"
start_worker w4 "$LOOPBACK_ANY" -m "$M2" -t 1; W4=$EP
out=$(timeout 60 "$TERN" run -m "$M" -p hi -n 2 --workers "$W4" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -qi "mismatch" && ok "model mismatch: $(echo "$out" | tail -1)" || bad "model mismatch (rc $rc): $out"
cat > "$tmp/c.yaml" <<YAML
model: $M
workers:
  - { name: a, endpoint: "$W1", layers: [0, 7] }
YAML
out=$(timeout 60 "$TERN" run -m "$M" -p hi -n 2 --cluster "$tmp/c.yaml" 2>&1); rc=$?
[ $rc -ne 0 ] && ok "pinned layers beyond the model: $(echo "$out" | tail -1)" || bad "pinned layers beyond the model accepted"
cat > "$tmp/bad.yaml" <<YAML
workers:
  - { name: a, endpoint: "$W1", threads: many }
YAML
out=$(timeout 20 "$TERN" run -m "$M" -p hi -n 2 --cluster "$tmp/bad.yaml" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "bad.yaml:2" && ok "bad YAML: $(echo "$out" | tail -1)" || bad "bad YAML (rc $rc): $out"
echo "errors took $(( $(date +%s) - t0 )) s"
# the workers survived all of that and still serve
got=$(run --temp 0 --workers "$W1,$W2"); ref=$(run --temp 0)
[ "$got" == "$ref" ] && ok "workers still serve after errors" || bad "after errors: '$got' != '$ref'"

# --fetch-weights: workers with no model file get their layers from the coordinator, once
start_worker f1 "$LOOPBACK_ANY" --fetch-weights --cache-dir "$tmp/cache-f1" -t 1; F1=$EP
start_worker f2 "$LOOPBACK_ANY" --fetch-weights --cache-dir "$tmp/cache-f2" -t 1; F2=$EP
cat > "$tmp/fetch.yaml" <<YAML
workers:
  - { name: f1, endpoint: "$F1", layers: [0, 1] }
  - { name: f2, endpoint: "$F2", layers: [2, 2] }
YAML
ref=$(run --temp 0)
got=$(run --temp 0 --cluster "$tmp/fetch.yaml")
[ "$got" == "$ref" ] && ok "--fetch-weights cluster == one process" || bad "--fetch-weights: '$got' != '$ref'"
size=$(stat -c %s "$M")
have=$(awk '{s+=$2} END {print s+0}' "$tmp"/cache-f1/*.have 2>/dev/null)
[ -n "$have" ] && [ "$have" -gt 0 ] && [ "$have" -lt "$size" ] && ok "f1 cached $have of $size bytes" || bad "f1 cache: '$have' of $size"
got=$(run --temp 0 --cluster "$tmp/fetch.yaml")
[ "$got" == "$ref" ] && grep -q "0.0 MiB of weights fetched" "$tmp/f1.log" && ok "second run served from the cache" \
  || bad "second run: '$got' / $(grep fetched "$tmp/f1.log" | tail -1)"

finish 20
