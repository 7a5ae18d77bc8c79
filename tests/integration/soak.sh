#!/usr/bin/env bash
# Soak: SOAK_REQUESTS requests (default 200) through `tern serve --cluster` over 2 workers + a
# standby, 8 in flight at a time, while one worker is restarted SOAK_RESTARTS times (default 2:
# kill -9, then started again at the same endpoint; once at once, once after the coordinator
# noticed the loss). Every request must either complete with the greedy text a single-process
# server gives for that prompt, or get a clear error (HTTP status + JSON message); none may hang
# (curl --max-time) or come back wrong. Prints: faults injected, completed, failed with an
# error, lost (must be 0). Every process is killed on exit.
source "$(dirname "$0")/lib.bash"
NREQ=${SOAK_REQUESTS:-200}
NRESTART=${SOAK_RESTARTS:-2}
PAR=8

soak_worker() {   # name listen -> sets EP, WPID; exits when the worker does not start
  start_worker "$1" "$2" -m "$M" -t 1 || die "worker $1 did not start: $(cat "$tmp/$1.log")"
}
SP=""
soak_serve() {   # name args... -> SP, URL (log: $tmp/NAME.log); exits when it does not start
  local name=$1
  shift
  start_serve "$name" -m "$M" -t 1 -c 256 -np 4 "$@" || die "serve did not start: $(tail -3 "$tmp/$name.log")"
  SP=$SPID
  wait_health "$URL"
}
prompt() { echo "Request $(( $1 % 10 )) of the soak: the quick brown fox"; }
# req I DIR: one completion, body in DIR/I.json, HTTP code in DIR/I.code (000 = no answer)
req() {
  curl -s --max-time 30 -o "$2/$1.json" -w '%{http_code}' -H 'Content-Type: application/json' \
    -d "{\"prompt\":\"$(prompt "$1")\",\"max_tokens\":6,\"temperature\":0}" "$URL/v1/completions" >"$2/$1.code" 2>/dev/null
}

M="$tmp/m.gguf"
make_model "$M" --arch bitnet-b1.58 --preset tiny --layers 4 --type i2_s --seed 5

# reference: one process, each of the 10 prompts
soak_serve ref
mkdir -p "$tmp/ref"
for i in $(seq 0 9); do req "$i" "$tmp/ref"; done
for i in $(seq 0 9); do
  [ "$(cat "$tmp/ref/$i.code")" = 200 ] || die "reference request $i failed: $(cat "$tmp/ref/$i.json")"
  jq -r '.choices[0].text' "$tmp/ref/$i.json" >"$tmp/ref/$i.txt"
done
kill -9 $SP

soak_worker w1 "$LOOPBACK_ANY"; W1=$EP
soak_worker w2 "$LOOPBACK_ANY"; W2=$EP P2=$WPID
soak_worker w3 "$LOOPBACK_ANY"; W3=$EP
cat >"$tmp/c.yaml" <<YAML
model: $M
workers:
  - { name: w1, endpoint: "$W1" }
  - { name: w2, endpoint: "$W2" }
  - { name: w3, endpoint: "$W3", standby: true }
YAML
soak_serve serve --cluster "$tmp/c.yaml"

# the requests, PAR at a time; w2 is killed (-9) at evenly spaced batches. Odd faults: started
# again at the same endpoint one batch later (before the heartbeat timeout: the new process
# must say it holds no layers); even faults: started again only once the coordinator logged
# the loss (the standby w3 takes its place meanwhile)
nb=$(( (NREQ + PAR - 1) / PAR ))
faults=0 pending=0
mkdir -p "$tmp/r"
restart_w2() { soak_worker w2 "$W2"; P2=$WPID; pending=0; echo "# w2 started again at $W2"; }
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
  wait_line "$tmp/serve.log" "w2 .*lost" 10
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
wait_exit $SP 5 && ok "serve stopped on SIGTERM" || bad "serve still running 5 s after SIGTERM"

finish 8
