#!/usr/bin/env bash
# Starts N tern workers on loopback (ephemeral ports), runs a coordinator against them with the
# given `tern run` arguments, and stops the workers when it ends (also on Ctrl-C).
#   deploy/local-cluster.sh -m MODEL [-w N] [-t THREADS_PER_WORKER] [--tern PATH] -- [tern run args]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
TERN="${TERN_BIN:-$here/build/tern}"
MODEL="" N=2 T=1
while [ $# -gt 0 ]; do
  case "$1" in
    -m) MODEL="$2"; shift 2 ;;
    -w) N="$2"; shift 2 ;;
    -t) T="$2"; shift 2 ;;
    --tern) TERN="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "local-cluster: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ -n "$MODEL" ] || { echo "local-cluster: -m MODEL is required" >&2; exit 2; }
[ -x "$TERN" ] || { echo "local-cluster: tern binary not found at $TERN (build first)" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

eps=()
for i in $(seq 1 "$N"); do
  "$TERN" worker --listen 'tcp://127.0.0.1:*' -m "$MODEL" -t "$T" --name "w$i" >"$tmp/w$i.out" 2>"$tmp/w$i.log" &
  pids+=($!)
done
for i in $(seq 1 "$N"); do
  for _ in $(seq 1 300); do
    if grep -q '^ready ' "$tmp/w$i.out" 2>/dev/null; then break; fi
    if ! kill -0 "${pids[$((i-1))]}" 2>/dev/null; then cat "$tmp/w$i.log" >&2; echo "local-cluster: worker w$i died" >&2; exit 1; fi
    sleep 0.1
  done
  ep=$(sed -n 's/^ready //p' "$tmp/w$i.out" | head -1)
  [ -n "$ep" ] || { cat "$tmp/w$i.log" >&2; echo "local-cluster: worker w$i did not start" >&2; exit 1; }
  eps+=("$ep")
done
list=$(IFS=,; echo "${eps[*]}")
echo "local-cluster: $N workers at $list" >&2
"$TERN" run -m "$MODEL" --workers "$list" "$@"
