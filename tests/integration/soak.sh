#!/usr/bin/env bash
# Soak: SOAK_REQUESTS requests (default 200) through `tern serve --cluster` over 2 workers + a
# standby, 8 in flight at a time, while one worker is restarted SOAK_RESTARTS times (default 2:
# kill -9, then started again at the same endpoint; once at once, once after the coordinator
# noticed the loss). Every request must either complete with the greedy text a single-process
# server gives for that prompt, or get a clear error (HTTP status + JSON message); none may hang
# (curl --max-time) or come back wrong. Prints: faults injected, completed, failed with an
# error, lost (must be 0). Every process is killed on exit.
set -u
TERN="${TERN_BIN:?TERN_BIN not set}"
NREQ=${SOAK_REQUESTS:-200}
NRESTART=${SOAK_RESTARTS:-2}
PAR=8
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  [ -n "${TERN_KEEP_TMP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
pass=0 fail=0
ok() { pass=$((pass+1)); echo "ok   - $*"; }
bad() { fail=$((fail+1)); echo "FAIL - $*"; }

EP="" WPID=""
start_worker() {   # name listen -> sets EP, WPID (not in a subshell: cleanup kills it)
  local name=$1 listen=$2
  : >"$tmp/$name.out"
  "$TERN" worker --listen "$listen" -m "$M" -t 1 --name "$name" >"$tmp/$name.out" 2>>"$tmp/$name.log" &
  WPID=$!
  pids+=("$WPID")
  for _ in $(seq 1 200); do grep -q '^ready ' "$tmp/$name.out" 2>/dev/null && break; sleep 0.05; done
  EP=$(sed -n 's/^ready //p' "$tmp/$name.out" | head -1)
  [ -n "$EP" ] || { echo "worker $name did not start: $(cat "$tmp/$name.log")"; exit 1; }
}
SP="" URL=""
start_serve() {   # log args... -> SP, URL
  local log=$1
  shift
  "$TERN" serve -m "$M" --host 127.0.0.1 --port 0 -t 1 -c 256 -np 4 "$@" 2>"$log" &
  SP=$!
  pids+=("$SP")
  local port=""
  for _ in $(seq 1 300); do
    port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$log" | head -1 | sed 's/.*://')
    [ -n "$port" ] && break; sleep 0.1
  done
  [ -n "$port" ] || { echo "serve did not start: $(tail -3 "$log")"; exit 1; }
  URL="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/health")" = 200 ] && break; sleep 0.1; done
}
prompt() { echo "Request $(( $1 % 10 )) of the soak: the quick brown fox"; }
# req I DIR: one completion, body in DIR/I.json, HTTP code in DIR/I.code (000 = no answer)
req() {
  curl -s --max-time 30 -o "$2/$1.json" -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "{\"prompt\":\"$(prompt "$1")\",\"max_tokens\":6,\"temperature\":0}" "$URL/v1/completions" >"$2/$1.code" 2>/dev/null
}

M="$tmp/m.gguf"
"$TERN" mkmodel --arch bitnet-b1.58 --preset tiny --layers 4 --type i2_s --seed 5 -o "$M" >/dev/null 2>&1 || { echo "mkmodel failed"; exit 1; }

# reference: one process, each of the 10 prompts
start_serve "$tmp/ref.log"
mkdir -p "$tmp/ref"
for i in $(seq 0 9); do req "$i" "$tmp/ref"; done
for i in $(seq 0 9); do
  [ "$(cat "$tmp/ref/$i.code")" = 200 ] || { echo "reference request $i failed: $(cat "$tmp/ref/$i.json")"; exit 1; }
  jq -r '.choices[0].text' "$tmp/ref/$i.json" >"$tmp/ref/$i.txt"
done
kill -9 $SP

start_worker w1 'tcp://127.0.0.1:*'; W1=$EP
start_worker w2 'tcp://127.0.0.1:*'; W2=$EP P2=$WPID
start_worker w3 'tcp://127.0.0.1:*'; W3=$EP
cat >"$tmp/c.yaml" <<YAML
model: $M
workers:
  - { name: w1, endpoint: "$W1" }
  - { name: w2, endpoint: "$W2" }
  - { name: w3, endpoint: "$W3", standby: true }
YAML
start_serve "$tmp/serve.log" --cluster "$tmp/c.yaml"

# the requests, PAR at a time; w2 is killed (-9) at evenly spaced batches. Odd faults: started
# again at the same endpoint one batch later (before the heartbeat timeout: the new process
# must say it holds no layers); even faults: started again only once the coordinator logged
# the loss (the standby w3 takes its place meanwhile)
nb=$(( (NREQ + PAR - 1) / PAR ))
faults=0 pending=0
mkdir -p "$tmp/r"
restart_w2() { start_worker w2 "$W2"; P2=$WPID; pending=0; echo "# w2 started again at $W2"; }
t0=$(date +%s)
for b in $(seq 0 $((nb - 1))); do
  [ $pending = 1 ] && grep -q "w2 .*lost" "$tmp/serve.log" && restart_w2
  rp=()
  for k in $(seq 0 $((PAR - 1))); do
    i=$((b * PAR + k))
    [ $i -lt "$NREQ" ] || break
    req "$i" "$tmp/r" &
    rp+=($!)
  done
  for r in $(seq 1 "$NRESTART"); do
    kb=$(( r * nb / (NRESTART + 1) ))
    if [ "$b" -eq "$kb" ]; then
      sleep 0.05
      kill -9 $P2; faults=$((faults + 1))
      echo "# batch $b: kill -9 w2"
      [ $((r % 2)) = 0 ] && pending=1
    elif [ "$b" -eq $((kb + 1)) ] && [ $((r % 2)) = 1 ]; then
      restart_w2
    fi
  done
  wait "${rp[@]}"
done
if [ $pending = 1 ]; then
  for _ in $(seq 1 200); do grep -q "w2 .*lost" "$tmp/serve.log" && break; sleep 0.05; done
  restart_w2
fi
dt=$(( $(date +%s) - t0 ))

completed=0 failed=0 lost=0 wrong=0
for i in $(seq 0 $((NREQ - 1))); do
  c=$(cat "$tmp/r/$i.code" 2>/dev/null || echo 000)
  if [ "$c" = 200 ]; then
    if [ "$(jq -r '.choices[0].text' "$tmp/r/$i.json" 2>/dev/null)" == "$(cat "$tmp/ref/$((i % 10)).txt")" ]; then
      completed=$((completed + 1))
    else
      wrong=$((wrong + 1)); echo "# request $i: wrong text: $(cut -c1-200 "$tmp/r/$i.json")"
    fi
  elif [ "$c" != 000 ] && jq -e '.error.message | length > 0' "$tmp/r/$i.json" >/dev/null 2>&1; then
    failed=$((failed + 1)); echo "# request $i: HTTP $c: $(jq -r .error.message "$tmp/r/$i.json")"
  else
    lost=$((lost + 1)); echo "# request $i: lost (HTTP $c): $(cut -c1-200 "$tmp/r/$i.json" 2>/dev/null)"
  fi
done
echo "soak: $NREQ requests in $dt s: faults injected $faults, completed $completed, failed with an error $failed, lost $((lost + wrong)) (wrong text $wrong)"
[ $((lost + wrong)) -eq 0 ] && ok "no request lost or wrong" || bad "$lost lost, $wrong wrong"
[ "$faults" -eq "$NRESTART" ] || bad "expected $NRESTART faults, injected $faults"
[ $completed -gt 0 ] && ok "$completed of $NREQ completed with the single-process text" || bad "nothing completed"

# the cluster serves again after the restarts
mkdir -p "$tmp/after"
req 3 "$tmp/after"
if [ "$(cat "$tmp/after/3.code")" = 200 ] && [ "$(jq -r '.choices[0].text' "$tmp/after/3.json")" == "$(cat "$tmp/ref/3.txt")" ]; then
  ok "a request after the restarts completes right"
else bad "after the restarts: HTTP $(cat "$tmp/after/3.code"): $(cat "$tmp/after/3.json"); $(tail -3 "$tmp/serve.log")"; fi
kill -TERM $SP
for _ in $(seq 1 50); do kill -0 $SP 2>/dev/null || break; sleep 0.1; done
kill -0 $SP 2>/dev/null && bad "serve still running 5 s after SIGTERM" || ok "serve stopped on SIGTERM"

[ $fail -eq 0 ] || { echo "--- logs"; for f in "$tmp"/*.log; do echo "== $f"; tail -n 8 "$f"; done; }
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
