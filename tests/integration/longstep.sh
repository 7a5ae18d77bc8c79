#!/usr/bin/env bash
# A step that runs longer than the heartbeat timeout (a long prompt chunk on a big model) must
# not get a worker declared lost: workers answer heartbeats between blocks of a step. Here the
# heartbeat timeout is 1 s and every block is slowed by 250 ms (TERN_TEST_BLOCK_DELAY_MS, a test
# hook), so a step through several layers takes well over a second while no block does; the run
# must finish without a recovery and give the tokens of one process.
[ "${KEEP:-0}" = 1 ] && TERN_KEEP_TMP=1   # the old name of lib.bash's TERN_KEEP_TMP
source "$(dirname "$0")/lib.bash"
M="$tmp/m.gguf"
make_model "$M" --preset small --layers 8 --n-vocab 600
# the workers (only they) get the test hook that slows every block by 250 ms
TERN_TEST_BLOCK_DELAY_MS=250 start_worker a "$LOOPBACK_ANY" -m "$M" -t 1; A=$EP
TERN_TEST_BLOCK_DELAY_MS=250 start_worker b "$LOOPBACK_ANY" -m "$M" -t 1; B=$EP
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
finish
