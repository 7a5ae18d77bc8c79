#!/usr/bin/env bash
# homelab: a home-lab network on this machine for tests and benches. Network namespaces on one
# bridge: TAG-c (coordinator, 10.77.0.1) and TAG-w1..wN (workers, 10.77.0.1K), each joined by a
# veth pair shaped with tbf both ways; latency comes from tern-delay-relay (deploy/netns/
# delay_relay.c) in front of each service, holding bytes RTT/2 each way (no netem in this
# kernel). Traffic never leaves the machine; nothing in the root namespace changes.
#   homelab.sh up TAG N PROFILE | down TAG | gc | profiles      (needs root and iproute2)
# Sourced, it gives hl_up/hl_down/hl_exec/hl_relay/hl_addr for scripts (which trap hl_down).
# Profiles: lan (1 GbE: 1 Gbit/s, 0.2 ms RTT), wifi (200 Mbit/s, 3 ms RTT), none (bare veth).

# shellcheck disable=SC2034  # HL_* are read by the scripts that source this one
HL_NET=10.77.0
HL_PIDS=()

# hl_profile NAME -> sets HL_RATE (tc rate, "" = unshaped), HL_MBIT, HL_RTT_US; 1 if unknown
hl_profile() {
  case "$1" in
    lan)  HL_RATE=1gbit;   HL_MBIT=1000; HL_RTT_US=200 ;;
    wifi) HL_RATE=200mbit; HL_MBIT=200;  HL_RTT_US=3000 ;;
    none) HL_RATE="";      HL_MBIT=0;    HL_RTT_US=0 ;;
    *) echo "homelab: unknown profile '$1' (lan, wifi, none)" >&2; return 1 ;;
  esac
}

# hl_addr NODE -> its address (c -> .1, wK -> .(10+K))
hl_addr() {
  case "$1" in
    c) echo "$HL_NET.1" ;;
    w*) echo "$HL_NET.$((10 + ${1#w}))" ;;
  esac
}

# hl_relay_bin -> path of tern-delay-relay: next to $TERN_BIN, in $TERN_BUILD, or built now
hl_relay_bin() {
  local here d
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  for d in "${TERN_BUILD:-}" "$(dirname "${TERN_BIN:-/nonexistent/x}")"; do
    [ -n "$d" ] && [ -x "$d/tern-delay-relay" ] && { echo "$d/tern-delay-relay"; return 0; }
  done
  local out="${TMPDIR:-/tmp}/tern-delay-relay.$$"
  cc -O2 -o "$out" "$here/delay_relay.c" 2>/dev/null && { echo "$out"; return 0; }
  echo "homelab: no tern-delay-relay (build the tern-delay-relay target)" >&2
  return 1
}

# hl_up TAG N PROFILE: makes the namespaces, bridge, veths and shaping. 0, or 1 with a reason
# on stderr (everything made so far is removed).
hl_up() {
  local tag=$1 n=$2 prof=$3 node
  hl_profile "$prof" || return 1
  [ "$(id -u)" = 0 ] || { echo "homelab: needs root (network namespaces)" >&2; return 1; }
  command -v ip >/dev/null && command -v tc >/dev/null || { echo "homelab: needs ip and tc (iproute2)" >&2; return 1; }
  HL_TAG=$tag HL_N=$n HL_PROFILE=$prof
  if ! { ip netns add "$tag-sw" && ip -n "$tag-sw" link set lo up &&
         ip -n "$tag-sw" link add br0 type bridge && ip -n "$tag-sw" link set br0 up; } 2>"/tmp/hl-$tag.err"; then
    echo "homelab: cannot create the switch namespace: $(tail -1 "/tmp/hl-$tag.err")" >&2
    rm -f "/tmp/hl-$tag.err"; hl_down "$tag"; return 1
  fi
  for node in c $(seq -f 'w%g' 1 "$n"); do
    if ! hl_node "$tag" "$node" 2>"/tmp/hl-$tag.err"; then
      echo "homelab: cannot set up node $node: $(tail -1 "/tmp/hl-$tag.err")" >&2
      rm -f "/tmp/hl-$tag.err"; hl_down "$tag"; return 1
    fi
  done
  rm -f "/tmp/hl-$tag.err"
}

# one node: namespace, veth to the bridge, address, tbf on both ends (burst: two frames, so a
# message of several frames pays its serialization time)
hl_node() {
  local tag=$1 node=$2 ns="$1-$2"
  ip netns add "$ns" && ip -n "$ns" link set lo up &&
  ip link add eth0 netns "$ns" type veth peer name "p-$node" netns "$tag-sw" &&
  ip -n "$tag-sw" link set "p-$node" master br0 && ip -n "$tag-sw" link set "p-$node" up &&
  ip -n "$ns" addr add "$(hl_addr "$node")/24" dev eth0 && ip -n "$ns" link set eth0 up || return 1
  [ -z "$HL_RATE" ] && return 0
  tc -n "$ns" qdisc add dev eth0 root tbf rate "$HL_RATE" burst 3028 latency 200ms &&
  tc -n "$tag-sw" qdisc add dev "p-$node" root tbf rate "$HL_RATE" burst 3028 latency 200ms
}

# hl_exec NODE CMD... : runs CMD in the node's namespace (foreground)
hl_exec() { local node=$1; shift; ip netns exec "$HL_TAG-$node" "$@"; }

# hl_spawn NODE LOG CMD... : same in the background; its pid is kept for hl_down (and in HL_LAST)
hl_spawn() {
  local node=$1 log=$2; shift 2
  ip netns exec "$HL_TAG-$node" "$@" >"$log" 2>&1 &
  HL_LAST=$!
  HL_PIDS+=("$HL_LAST")
}

# hl_relay NODE PORT TARGET_PORT : a delaying relay in NODE from its address:PORT to
# address:TARGET_PORT, RTT/2 each way (profile none: still a relay, 0 us, for equal paths)
hl_relay() {
  local node=$1 port=$2 tport=$3 a bin
  a=$(hl_addr "$node")
  bin=${HL_RELAY:-$(hl_relay_bin)} || return 1
  HL_RELAY=$bin
  hl_spawn "$node" "/tmp/hl-$HL_TAG-relay-$node-$port.log" "$bin" "$a:$port" "$a:$tport" $((HL_RTT_US / 2))
  for _ in $(seq 1 100); do
    grep -q '^ready' "/tmp/hl-$HL_TAG-relay-$node-$port.log" 2>/dev/null && return 0
    kill -0 "$HL_LAST" 2>/dev/null || break
    sleep 0.02
  done
  echo "homelab: relay in $node did not start: $(cat "/tmp/hl-$HL_TAG-relay-$node-$port.log")" >&2
  return 1
}

# hl_down TAG : kills what hl_spawn started, removes the namespaces (and so the veths)
hl_down() {
  local tag=${1:-${HL_TAG:-}} p ns
  [ -n "$tag" ] || return 0
  for p in "${HL_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${HL_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  HL_PIDS=()
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$tag-(c|sw|w[0-9]+)$"); do
    # anything still running in there (started by hand) goes too
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -f /tmp/hl-"$tag"-relay-*.log
  [ -n "${HL_RELAY:-}" ] && [[ "$HL_RELAY" == */tern-delay-relay.$$ ]] && rm -f "$HL_RELAY"
  return 0
}

# hl_gc : removes namespaces left by runs that died (tag "hl<PID>" with the pid gone)
hl_gc() {
  local ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^hl[0-9]+-(c|sw|w[0-9]+)$'); do
    pid=${ns#hl}; pid=${pid%%-*}
    kill -0 "$pid" 2>/dev/null || { echo "homelab: removing stale $ns"; ip netns del "$ns"; }
  done
}

if [ "${BASH_SOURCE[0]}" == "$0" ]; then
  set -u
  case "${1:-}" in
    up) [ $# -eq 4 ] || { echo "usage: homelab.sh up TAG N lan|wifi|none" >&2; exit 2; }
        hl_up "$2" "$3" "$4" || exit 1
        echo "homelab: $2 up: coordinator ns $2-c at $(hl_addr c), workers $2-w1..w$3 at $(hl_addr w1).., profile $4" \
             "(${HL_RATE:-unshaped}, RTT ${HL_RTT_US} us via tern-delay-relay when you start one: hl_relay)" ;;
    down) [ $# -eq 2 ] || { echo "usage: homelab.sh down TAG" >&2; exit 2; }; hl_down "$2" ;;
    gc) hl_gc ;;
    profiles) for p in lan wifi none; do hl_profile $p; echo "$p: rate ${HL_RATE:-unshaped}, RTT ${HL_RTT_US} us"; done ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
fi
