#!/usr/bin/env bash
# Cluster over ZeroMQ with real processes on loopback: the tokens generated through 1, 2 and 3
# workers (any placement, any thread count) equal those of one process, greedy and seeded;
# perplexity through 2 and 3 workers equals one process's;
# bad clusters (unreachable worker, different model file, pinned layers out of range) fail with
# a clear error, quickly. Every process is killed on exit.
set -u
TERN="${TERN_BIN:?TERN_BIN not set}"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
pass=0 fail=0
ok() { pass=$((pass+1)); echo "ok   - $*"; }
bad() { fail=$((fail+1)); echo "FAIL - $*"; }

EP=""
start_worker() {   # name model threads -> sets EP (not in a subshell, so cleanup can kill it)
  local name=$1 model=$2 t=$3
  "$TERN" worker --listen 'tcp://127.0.0.1:*' -m "$model" -t "$t" --name "$name" >"$tmp/$name.out" 2>"$tmp/$name.log" &
  pids+=($!)
  for _ in $(seq 1 200); do
    grep -q '^ready ' "$tmp/$name.out" 2>/dev/null && break
    sleep 0.05
  done
  EP=$(sed -n 's/^ready //p' "$tmp/$name.out" | head -1)
}

M="$tmp/m.gguf"
"$TERN" mkmodel --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s --seed 11 -o "$M" >/dev/null 2>&1 || { echo "mkmodel failed"; exit 1; }
M2="$tmp/m2.gguf"
"$TERN" mkmodel --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s --seed 12 -o "$M2" >/dev/null 2>&1

start_worker w1 "$M" 1; W1=$EP; start_worker w2 "$M" 2; W2=$EP; start_worker w3 "$M" 1; W3=$EP
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
start_worker w4 "$M2" 1; W4=$EP
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
fetch_worker() {   # name -> sets EP
  "$TERN" worker --listen 'tcp://127.0.0.1:*' --fetch-weights --cache-dir "$tmp/cache-$1" -t 1 --name "$1" >"$tmp/$1.out" 2>"$tmp/$1.log" &
  pids+=($!)
  for _ in $(seq 1 200); do grep -q '^ready ' "$tmp/$1.out" 2>/dev/null && break; sleep 0.05; done
  EP=$(sed -n 's/^ready //p' "$tmp/$1.out" | head -1)
}
fetch_worker f1; F1=$EP; fetch_worker f2; F2=$EP
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

[ $fail -eq 0 ] || { echo "--- logs"; tail -n 20 "$tmp"/*.log; }
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
