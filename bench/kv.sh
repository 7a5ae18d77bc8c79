#!/usr/bin/env bash
# KV cache element types at depth: tg with the cache already holding D tokens (tern bench -d,
# llama-bench's depth), f16 against q8_0 (and f32), on a real shape, the same threads, the runs
# interleaved type by type so a noisy host hits both alike; prints each row with its roofline
# (weights + the KV cache read per token) and the q8_0 / f16 speed ratio at each depth, plus the
# cache's bytes per position. Not here: GPU (the CUDA stage keeps f16/f32 caches).
#   bench/kv.sh [MODEL|small|2b4t] [extra tern bench flags...]
#   env: TERN_BIN, TERN_CACHE, D (depths, default 0,1024,4000), N (default 64), THREADS, REPS, TYPES
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
bench_tern "kv"
name="${1:-small}"
[ $# -gt 0 ] && shift
D="${D:-0,1024,4000}" N="${N:-64}" THREADS="${THREADS:-$(nproc)}" REPS="${REPS:-3}" TYPES="${TYPES:-f16 q8_0}"
bench_model kv "$name" "$cache"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for round in 1 2; do
  for t in $TYPES; do
    "$TERN" bench -m "$model" -p 0 -n "$N" -d "$D" -t "$THREADS" -r "$REPS" --kv-type "$t" -o json "$@" 2>/dev/null |
      python3 -c 'import json,sys; [print(sys.argv[1], r["n_depth"], r["avg_ts"], r["roofline_ts"], sep="\t") for r in json.load(sys.stdin)]' "$t" >>"$out"
  done
done
python3 - "$out" "$D" <<'PY'
import sys, collections
rows = collections.defaultdict(list)
roof = {}
for line in open(sys.argv[1]):
    t, d, ts, rf = line.split("\t")
    rows[(t, int(d))].append(float(ts))
    roof[(t, int(d))] = float(rf)
best = {k: max(v) for k, v in rows.items()}   # the better of the two rounds
types = sorted({t for t, _ in best}, key=lambda t: ["f16", "q8_0", "f32"].index(t) if t in ("f16", "q8_0", "f32") else 9)
print("| depth | " + " | ".join(f"{t} t/s (% roofline)" for t in types) + " | q8_0 / f16 |")
print("|---:|" + "---:|" * len(types) + "---:|")
for d in sorted({d for _, d in best}):
    cells = [f"{best[(t, d)]:.1f} ({100 * best[(t, d)] / roof[(t, d)]:.0f}%)" if (t, d) in best and roof[(t, d)] else "-" for t in types]
    r = f"{best[('q8_0', d)] / best[('f16', d)]:.2f}" if ('q8_0', d) in best and ('f16', d) in best else "-"
    print(f"| {d} | " + " | ".join(cells) + f" | {r} |")
PY
