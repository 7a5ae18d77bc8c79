#!/usr/bin/env bash
# The home-lab simulation (deploy/netns/homelab.sh) on the tiny model: 2 workers in their own
# network namespaces behind the 1 GbE profile (tbf 1 Gbit/s + tern-delay-relay 0.1 ms each way),
# the coordinator in a third. The tokens equal one process, and the shaping is in effect: the
# measured round trip is at least the configured RTT and a 1 MiB message takes at least its
# serialization time at 1 Gbit/s. Skips (passes with a message) where namespaces cannot be made.
source "$(dirname "$0")/lib.bash"
src="${TERN_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}"
# shellcheck source=../../deploy/netns/homelab.sh
. "$src/deploy/netns/homelab.sh"
TAG="hl$$"
on_exit() { hl_down "$TAG"; cleanup; }   # the namespaces first, then lib.bash's cleanup
trap on_exit EXIT

hl_gc >/dev/null 2>&1
if ! hl_up "$TAG" 2 lan 2>"$tmp/up.err"; then
  echo "SKIP: cannot create network namespaces here: $(cat "$tmp/up.err")"
  exit 0
fi
echo "homelab $TAG: profile lan ($HL_RATE, RTT $HL_RTT_US us: tbf + tern-delay-relay)"

M="$tmp/m.gguf"
make_model "$M" --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s --seed 11

# workers listen on their namespace's address :7101; a relay in front of each on :7100
eps=()
for w in w1 w2; do
  a=$(hl_addr $w)
  hl_relay $w 7100 7101 || { bad "relay in $w"; exit 1; }
  hl_spawn $w "$tmp/$w.log" "$TERN" worker --listen "tcp://$a:7101" -m "$M" -t 1 --name "$w"
  eps+=("tcp://$a:7100")
done
for w in w1 w2; do wait_line "$tmp/$w.log" '^ready' 10; done

# shaping in effect: a hop echo in w1 behind its own relay, measured from the coordinator's namespace
a1=$(hl_addr w1)
hl_relay w1 7200 7201 || { bad "hop relay"; exit 1; }
hl_spawn w1 "$tmp/echo.log" "$TERN" bench --hop --hop-listen "tcp://$a1:7201" --idle-ms 20000
hop() { timeout 30 ip netns exec "$TAG-c" "$TERN" bench --hop --hop-connect "tcp://$a1:7200" -o json "$@" 2>>"$tmp/hop.err"; }
j=$(hop --hop-size 2 -r 50 --warmup 5)
rt=$(echo "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin)["roundtrip_us"]["median"])' 2>/dev/null)
if [ -n "$rt" ] && python3 -c "import sys; sys.exit(0 if $rt >= $HL_RTT_US else 1)"; then
  ok "round trip ${rt} us >= configured ${HL_RTT_US} us"
else
  bad "round trip '${rt}' us < configured ${HL_RTT_US} us: $j $(cat "$tmp/hop.err")"
fi
# a fresh echo for the big messages (the first one stopped at the client's Shutdown)
hl_spawn w1 "$tmp/echo2.log" "$TERN" bench --hop --hop-listen "tcp://$a1:7201" --idle-ms 20000
sleep 0.2
j=$(hop --hop-size 262144 -r 8 --warmup 2)
ow=$(echo "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin)["oneway_us"]["median"])' 2>/dev/null)
want=$(python3 -c "print(round((1048576 - 3028) * 8 / ($HL_MBIT * 1e6) * 1e6))")
if [ -n "$ow" ] && python3 -c "import sys; sys.exit(0 if $ow >= $want else 1)"; then
  ok "1 MiB one way ${ow} us >= ${want} us (1 Gbit/s serialization)"
else
  bad "1 MiB one way '${ow}' us < ${want} us: shaping not in effect? $j $(cat "$tmp/hop.err")"
fi

# the cluster through the namespaces equals one process
args=(run -m "$M" --no-display-prompt --summary=0 -p "Hello world, this is tern" -n 16 --temp 0)
ref=$(timeout 60 "$TERN" "${args[@]}" 2>>"$tmp/run.log")
list=$(IFS=,; echo "${eps[*]}")
got=$(timeout 60 ip netns exec "$TAG-c" "$TERN" "${args[@]}" --workers "$list" 2>>"$tmp/run.log")
if [ -n "$ref" ] && [ "$got" == "$ref" ]; then ok "2 workers over the lan profile == one process"
else bad "through netns: '$got' != '$ref'"; fi
# tern bench over the cluster, 4 sequences admitted in staggered groups (sampling params must go
# with each sequence's first step, not the first step after admission)
out=$(timeout 60 ip netns exec "$TAG-c" "$TERN" bench -m "$M" -p 0 -n 8 -r 1 -np 4 -o json --workers "$list" 2>&1)
if echo "$out" | grep -q '"n_parallel": 4'; then ok "bench -np 4 through 2 namespaced workers"
else bad "bench -np 4 through the namespaces: $(echo "$out" | tail -3)"; fi

finish 5 "$tmp"/*.log "$tmp"/*.err
