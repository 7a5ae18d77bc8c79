#!/usr/bin/env bash
# A step that runs longer than the heartbeat timeout (a long prompt chunk on a big model) must
# not get a worker declared lost: workers answer heartbeats between blocks of a step. Here the
# heartbeat timeout is 1 s and every block is slowed by 250 ms (TERN_TEST_BLOCK_DELAY_MS, a test
# hook), so a step through several layers takes well over a second while no block does; the run
# must finish without a recovery and give the tokens of one process.
set -u
TERN="${TERN_BIN:?TERN_BIN not set}"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; [ "${KEEP:-0}" = 1 ] && echo "kept $tmp" || rm -rf "$tmp"; }
trap cleanup EXIT
pass=0 fail=0
ok() { pass=$((pass+1)); echo "ok   - $*"; }
bad() { fail=$((fail+1)); echo "FAIL - $*"; }
M="$tmp/m.gguf"
TERN_PROGRESS=0 "$TERN" mkmodel --preset small --layers 8 --n-vocab 600 -o "$M" >/dev/null 2>&1 || { echo "mkmodel failed"; exit 1; }
EP=""
start_worker() {
  TERN_TEST_BLOCK_DELAY_MS=250 "$TERN" worker --listen 'tcp://127.0.0.1:*' -m "$M" -t 1 --name "$1" >"$tmp/$1.out" 2>"$tmp/$1.log" &
  pids+=($!)
  for _ in $(seq 1 200); do grep -q '^ready ' "$tmp/$1.out" 2>/dev/null && break; sleep 0.05; done
  EP=$(sed -n 's/^ready //p' "$tmp/$1.out" | head -1)
}
start_worker a; A=$EP; start_worker b; B=$EP
cat > "$tmp/c.yaml" <<YAML
heartbeat: { interval_ms: 100, timeout_ms: 1000 }
workers:
  - { name: a, endpoint: "$A" }
  - { name: b, endpoint: "$B" }
YAML
python3 -c "print(' '.join('word%d' % i for i in range(150)))" > "$tmp/p.txt"
args=(-m "$M" -f "$tmp/p.txt" -n 4 --temp 0 -b 1024 -c 4096 --no-display-prompt --summary=0)
ref=$(timeout 120 "$TERN" run "${args[@]}" -t 1 2>/dev/null)
t0=$(date +%s.%N)
got=$(timeout 120 "$TERN" run "${args[@]}" --cluster "$tmp/c.yaml" 2>"$tmp/coord.log")
t1=$(date +%s.%N)
[ -n "$ref" ] && [ "$got" == "$ref" ] && ok "long prompt through 2 workers == one process" || bad "output '$got' != '$ref'"
if grep -q "lost" "$tmp/coord.log"; then bad "a worker was declared lost during long steps: $(grep lost "$tmp/coord.log" | head -1)"
else ok "no worker declared lost (run took $(python3 -c "print(round($t1-$t0,2))") s, heartbeat timeout 1 s)"; fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
