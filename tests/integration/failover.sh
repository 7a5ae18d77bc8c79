#!/usr/bin/env bash
# Cluster faults with real processes on loopback: a worker killed (-9) in the middle of a
# generation — greedy, and seeded with a repetition penalty through a standby — and the output
# still equals one process; a frozen worker (SIGSTOP) is noticed within ~3 s (the time is
# printed) and the generation still completes right; when the workers left cannot hold the
# model (tern worker --memory), `tern run` fails quickly with a clear error and `tern serve`
# answers 503 with the reason while /health keeps answering; the worker restarted at the same
# endpoint rejoins and the next request succeeds; an idle worker exits promptly on SIGTERM.
# Every process is killed on exit.
source "$(dirname "$0")/lib.bash"

fo_worker() {   # name listen [args...] -> sets EP, WPID; exits when the worker does not start
  local name=$1 listen=$2
  shift 2
  start_worker "$name" "$listen" -m "$M" -t 1 "$@" || die "worker $name did not start: $(cat "$tmp/$name.log")"
}

M="$tmp/s.gguf"   # big enough that a long generation takes a few seconds
make_model "$M" --preset small --layers 6 --n-vocab 512 -s 42
P="Hello world"
N=700
run() { timeout 60 "$TERN" run -m "$M" --no-display-prompt --summary=0 -t 1 -c 1024 -p "$P" -n $N "$@"; }
GREEDY="--temp 0"
SEEDED="--temp 0.8 -s 7 --top-k 40 --repeat-penalty 1.2"
ref_g=$(run $GREEDY 2>"$tmp/ref.log")
ref_s=$(run $SEEDED 2>>"$tmp/ref.log")
[ ${#ref_g} -gt 200 ] && [ ${#ref_s} -gt 200 ] || { echo "reference runs printed too little"; cat "$tmp/ref.log"; exit 1; }

fo_worker w1 "$LOOPBACK_ANY"; W1=$EP P1=$WPID
fo_worker w2 "$LOOPBACK_ANY"; W2=$EP P2=$WPID
fo_worker w3 "$LOOPBACK_ANY"; W3=$EP P3=$WPID
fo_worker w4 "$LOOPBACK_ANY"; W4=$EP P4=$WPID

# ---- 1. kill -9 the middle worker of three in a greedy generation --------------------------
run $GREEDY --workers "$W1,$W2,$W3" >"$tmp/g.out" 2>"$tmp/g.log" &
R=$!
wait_bytes "$tmp/g.out" 100 || bad "greedy cluster run printed nothing"
t0=$(now)
kill -9 $P2
wait $R; rc=$?
got=$(cat "$tmp/g.out")
if [ $rc -eq 0 ] && [ "$got" == "$ref_g" ]; then ok "kill -9 w2 mid-generation (greedy, 3 workers): same $N tokens as one process ($(since $t0) s after the kill)"
else bad "kill -9 w2 (greedy): rc $rc, output differs: $(tail -5 "$tmp/g.log")"; fi
grep -q "w1 .*lost" "$tmp/g.log" && grep -q "recovered" "$tmp/g.log" && ok "coordinator logged the loss and the recovery" \
  || bad "no loss/recovery in the log: $(tail -5 "$tmp/g.log")"

# ---- 2. seeded + repetition penalty, through a standby: kill -9 the last stage -------------
cat >"$tmp/sb.yaml" <<YAML
model: $M
workers:
  - { name: w1, endpoint: "$W1" }
  - { name: w3, endpoint: "$W3" }
  - { name: w4, endpoint: "$W4", standby: true }
YAML
run $SEEDED --cluster "$tmp/sb.yaml" >"$tmp/s.out" 2>"$tmp/s.log" &
R=$!
wait_bytes "$tmp/s.out" 100 || bad "seeded cluster run printed nothing"
kill -9 $P3
wait $R; rc=$?
got=$(cat "$tmp/s.out")
if [ $rc -eq 0 ] && [ "$got" == "$ref_s" ]; then ok "kill -9 the last stage (seeded, penalty): standby took over, same tokens as one process"
else bad "kill -9 w3 (seeded): rc $rc, output differs: $(tail -5 "$tmp/s.log")"; fi
grep -q "standby worker w4 replaces w3" "$tmp/s.log" && ok "standby w4 promoted" || bad "standby not promoted: $(grep -i standby "$tmp/s.log")"
grep -q "replay sampled token" "$tmp/s.log" && bad "replay diverged: $(grep 'replay sampled' "$tmp/s.log" | head -2)"

# ---- 3. SIGSTOP a worker: detection time; the generation still completes right --------------
fo_worker w2 "$W2"; P2=$WPID   # back at the same endpoint
run $GREEDY --workers "$W1,$W2,$W4" >"$tmp/f.out" 2>"$tmp/f.log" &
R=$!
wait_bytes "$tmp/f.out" 100 || bad "cluster run printed nothing"
t0=$(now)
kill -STOP $P4
if wait_line "$tmp/f.log" "w2 .*lost\|w4 .*lost\|lost:" 10; then
  dt=$(since $t0)
  ok "SIGSTOP w4 detected after $dt s: $(grep -o 'worker .*lost.*' "$tmp/f.log" | head -1)"
  awk -v d="$dt" 'BEGIN { exit !(d < 6) }' || bad "detection took $dt s (heartbeat timeout 3 s)"
else bad "SIGSTOP w4 not detected within 10 s"; fi
wait $R; rc=$?
[ $rc -eq 0 ] && [ "$(cat "$tmp/f.out")" == "$ref_g" ] && ok "generation completed right without the frozen worker" \
  || bad "after SIGSTOP: rc $rc: $(tail -3 "$tmp/f.log")"
kill -CONT $P4

# ---- 4. the rest cannot hold the model: quick clear error; 503 from serve; rejoin ----------
# the model needs ~30 MiB (6 layers of 2.8 MiB + 2 MiB KV cache each, 1 MiB head): 3 x 12 MiB hold it, 2 do not
MEM=12MiB
fo_worker m1 "$LOOPBACK_ANY" --memory $MEM; M1=$EP
fo_worker m2 "$LOOPBACK_ANY" --memory $MEM; M2=$EP PM2=$WPID
fo_worker m3 "$LOOPBACK_ANY" --memory $MEM; M3=$EP
run $GREEDY --workers "$M1,$M2,$M3" >"$tmp/m.out" 2>"$tmp/m2.log" &
R=$!
wait_bytes "$tmp/m.out" 100 || bad "memory-limited cluster run printed nothing"
t0=$(now)
kill -9 $PM2
wait $R; rc=$?
dt=$(since $t0)
msg=$(grep -i "no longer fits" "$tmp/m2.log" | tail -1)
[ $rc -ne 0 ] && [ -n "$msg" ] && ok "2 x $MEM cannot hold it: failed after $dt s: ${msg##* E }" \
  || bad "expected a clear 'no longer fits' error (rc $rc): $(tail -3 "$tmp/m2.log")"
awk -v d="$dt" 'BEGIN { exit !(d < 8) }' || bad "the error took $dt s"

# serve over the same three: a request works, then m2 dies: 503 with the reason, /health answers
fo_worker m2 "$M2" --memory $MEM; PM2=$WPID
start_serve serve -m "$M" -t 1 -c 1024 -np 1 --workers "$M1,$M2,$M3"
SP=$SPID
wait_health "$URL"
req() { curl -s --max-time 30 -o "$tmp/r.json" -w '%{http_code}' -H 'Content-Type: application/json' \
        -d '{"prompt":"Hello","max_tokens":8,"temperature":0}' "$URL/v1/completions"; }
c=$(req); [ "$c" = 200 ] && ok "serve over 3 workers: 200" || bad "serve first request: $c $(cat "$tmp/r.json")"
kill -9 $PM2
t0=$(now)
c=$(req)
dt=$(since $t0)
if [ "$c" = 503 ] && grep -q "no longer fits" "$tmp/r.json"; then ok "worker lost, model too big for the rest: 503 after $dt s: $(cut -c1-160 "$tmp/r.json")"
else bad "expected 503 with the reason, got $c: $(cat "$tmp/r.json")"; fi
c=$(curl -s --max-time 5 -o "$tmp/h.json" -w '%{http_code}' "$URL/health")
[ "$c" = 503 ] && grep -q '"unavailable"' "$tmp/h.json" && grep -q '"up":false' "$tmp/h.json" \
  && ok "/health answers 503 with the cluster state: $(cut -c1-200 "$tmp/h.json")" || bad "/health: $c $(cat "$tmp/h.json")"
c=$(req); [ "$c" = 503 ] && ok "next request while it is down: 503 again" || bad "second request while down: $c"
fo_worker m2 "$M2" --memory $MEM; PM2=$WPID
t0=$(now)
c=$(req)
[ "$c" = 200 ] && ok "worker restarted at $M2 rejoined: next request 200 ($(since $t0) s)" || bad "after restart: $c $(cat "$tmp/r.json"); $(tail -3 "$tmp/serve.log")"
c=$(curl -s --max-time 5 -o "$tmp/h.json" -w '%{http_code}' "$URL/health")
[ "$c" = 200 ] && grep -q '"ok"' "$tmp/h.json" && ok "/health ok again" || bad "/health after rejoin: $c $(cat "$tmp/h.json")"
kill -TERM $SP
wait_exit $SP 5 && ok "serve stopped on SIGTERM" || bad "serve still running 5 s after SIGTERM"

# ---- 5. a worker whose coordinator is gone frees its layers; an idle worker stops at once --
grep -q "silent for .*freeing layers" "$tmp/w1.log" && ok "worker w1 freed its layers when the coordinator went silent" \
  || bad "w1 did not free its layers: $(tail -2 "$tmp/w1.log")"
kill -TERM $P1
t0=$(now)
wait_exit $P1 2 && ok "idle worker exited $(since $t0) s after SIGTERM" || bad "idle worker still running 2 s after SIGTERM"

finish 8
