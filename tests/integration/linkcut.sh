#!/usr/bin/env bash
# Link faults in the home-lab simulation (deploy/netns/homelab.sh, profile none): workers in
# their own network namespaces, the coordinator in another. (1) The cable of a stage worker is
# cut (its veth on the switch set down) in the middle of a generation: the loss is detected (the
# time is printed), the standby takes its place and the tokens equal one process; link up: the
# worker rejoins and the next run through it equals one process. (2) A stage worker is frozen
# (SIGSTOP) mid-generation with a spare in the list: detected, same tokens; SIGCONT: it rejoins.
# Skips (passes with a message) where namespaces cannot be made. Everything is removed on exit.
source "$(dirname "$0")/lib.bash"
src="${TERN_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}"
# shellcheck source=../../deploy/netns/homelab.sh
. "$src/deploy/netns/homelab.sh"
TAG="hl$$"
on_exit() {   # the namespaces and what runs in them go first, then lib.bash's cleanup
  for p in "${HL_PIDS[@]}"; do kill -CONT "$p" 2>/dev/null; done
  hl_down "$TAG"
  cleanup
}
trap on_exit EXIT

hl_gc >/dev/null 2>&1
if ! hl_up "$TAG" 3 none 2>"$tmp/up.err"; then
  echo "SKIP: cannot create network namespaces here: $(cat "$tmp/up.err")"
  exit 0
fi

M="$tmp/s.gguf"   # big enough that a generation takes a few seconds
make_model "$M" --preset small --layers 6 --n-vocab 512 -s 42
N=500
args=(run -m "$M" --no-display-prompt --summary=0 -t 1 -c 1024 -p "Hello world" -n "$N" --temp 0)
ref=$(timeout 60 "$TERN" "${args[@]}" 2>"$tmp/ref.log")
[ ${#ref} -gt 100 ] || die "reference run printed too little: $(tail -3 "$tmp/ref.log")"

declare -A WP EP
ns_worker() {   # name: in its namespace, on its address :7101; sets WP[name], EP[name]
  local w=$1
  : >"$tmp/$w.log"
  hl_spawn "$w" "$tmp/$w.log" "$TERN" worker --listen "tcp://$(hl_addr "$w"):7101" -m "$M" -t 1 --name "$w"
  WP[$w]=$HL_LAST
  EP[$w]="tcp://$(hl_addr "$w"):7101"
  wait_line "$tmp/$w.log" '^ready' 10 || die "worker $w did not start: $(cat "$tmp/$w.log")"
}
for w in w1 w2 w3; do ns_worker $w; done
crun() { timeout 60 ip netns exec "$TAG-c" "$TERN" "${args[@]}" "$@"; }

# ---- 1. cut w2's cable mid-generation; w3 is the standby ----------------------------------
cat >"$tmp/c.yaml" <<YAML
model: $M
workers:
  - { name: w1, endpoint: "${EP[w1]}" }
  - { name: w2, endpoint: "${EP[w2]}" }
  - { name: w3, endpoint: "${EP[w3]}", standby: true }
YAML
crun --cluster "$tmp/c.yaml" >"$tmp/cut.out" 2>"$tmp/cut.log" &
R=$!
wait_bytes "$tmp/cut.out" 100 || bad "cluster run printed nothing"
t0=$(now)
ip -n "$TAG-sw" link set "p-w2" down
if wait_line "$tmp/cut.log" "w2 .*lost" 10; then
  dt=$(since "$t0")
  ok "link to w2 cut: detected after $dt s: $(grep -o 'worker w2 .*lost.*' "$tmp/cut.log" | head -1)"
  awk -v d="$dt" 'BEGIN { exit !(d < 8) }' || bad "detection took $dt s (heartbeat timeout 3 s)"
else bad "cut link not detected within 10 s"; fi
wait $R; rc=$?
[ $rc -eq 0 ] && [ "$(cat "$tmp/cut.out")" == "$ref" ] && ok "standby w3 took over: same $N tokens as one process" \
  || bad "after the cut: rc $rc, output differs: $(tail -3 "$tmp/cut.log")"
grep -q "standby worker w3 replaces w2" "$tmp/cut.log" || bad "standby not promoted: $(grep -i 'standby\|recover' "$tmp/cut.log" | head -3)"

# link up: w2 (never restarted) serves again
ip -n "$TAG-sw" link set "p-w2" up
t0=$(now)
got=$(crun --workers "${EP[w1]},${EP[w2]}" 2>"$tmp/up.log"); rc=$?
[ $rc -eq 0 ] && [ "$got" == "$ref" ] && ok "link up: w2 rejoined, next run through it equals one process ($(since "$t0") s)" \
  || bad "after link up: rc $rc: $(tail -3 "$tmp/up.log")"

# ---- 2. freeze w2 (SIGSTOP) mid-generation in a 3-stage pipeline --------------------------
cat >"$tmp/all.yaml" <<YAML
model: $M
workers:
  - { name: w1, endpoint: "${EP[w1]}" }
  - { name: w2, endpoint: "${EP[w2]}" }
  - { name: w3, endpoint: "${EP[w3]}" }
YAML
grep -v "w3" "$tmp/all.yaml" >"$tmp/two.yaml"
crun --cluster "$tmp/all.yaml" >"$tmp/stop.out" 2>"$tmp/stop.log" &
R=$!
wait_bytes "$tmp/stop.out" 100 || bad "cluster run printed nothing"
t0=$(now)
kill -STOP "${WP[w2]}"
if wait_line "$tmp/stop.log" "w2 .*lost" 10; then
  dt=$(since "$t0")
  ok "SIGSTOP w2: detected after $dt s"
  awk -v d="$dt" 'BEGIN { exit !(d < 8) }' || bad "detection took $dt s"
else bad "SIGSTOP w2 not detected within 10 s"; fi
wait $R; rc=$?
[ $rc -eq 0 ] && [ "$(cat "$tmp/stop.out")" == "$ref" ] && ok "without the frozen w2: same $N tokens as one process" \
  || bad "after SIGSTOP: rc $rc: $(tail -3 "$tmp/stop.log")"
kill -CONT "${WP[w2]}"
t0=$(now)
got=$(crun --cluster "$tmp/two.yaml" 2>"$tmp/cont.log"); rc=$?
[ $rc -eq 0 ] && [ "$got" == "$ref" ] && ok "SIGCONT: w2 rejoined, next run through it equals one process ($(since "$t0") s)" \
  || bad "after SIGCONT: rc $rc: $(tail -3 "$tmp/cont.log")"

finish 6
