#!/usr/bin/env bash
# MPI vs ZeroMQ benchmark (issue 6, "Bench"), all on one machine: the per-hop cost (tern bench
# --hop: one Forward + hidden state, echo in a second process; one way median/p90/p99) for a
# 10 KiB (2560 f32, one decode token) and a 640 KiB (64 x 2560 f32, a prefill batch) state over
# mpi://, zmq ipc:// and zmq tcp:// (loopback); and decode tokens/s with 1, 4, 8 concurrent
# sequences for one process vs 2 stages over zmq tcp (tern worker --listen) vs 2 stages over MPI
# (mpirun MPMD: tern bench --mpi : 2 x tern worker --mpi). Tables in bench/cluster.sh's format.
# Not part of ctest. Numbers from a shared machine are noisy.
#   bench/mpi.sh            env: MODEL (small | 2b4t | FILE.gguf), TERN_BIN, TERN_CACHE, N (tg
#                           tokens), REPS, THREADS (per process), PAR, HOP_REPS, MPIRUN_ARGS, OUT;
#                           TERN_MPI_IDLE_US (the MPI transport's longest idle sleep) goes to every rank
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
bench_tern "mpi"
command -v mpirun >/dev/null || { echo "mpi: no mpirun (apt install openmpi-bin)" >&2; exit 1; }
MODEL="${MODEL:-small}" N="${N:-64}" REPS="${REPS:-3}" THREADS="${THREADS:-1}" PAR="${PAR:-1,4,8}"
HOP_REPS="${HOP_REPS:-1000}"
# no binding: the ZeroMQ runs are not bound either; oversubscribe: 3 ranks on a 2-core box
MPIRUN_ARGS="${MPIRUN_ARGS:---oversubscribe --bind-to none}"
[ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
bench_model "mpi" "$MODEL" "$cache"
name=$(basename "$model" .gguf)
OUT="${OUT:-$cache/bench/mpi-$name}"
mkdir -p "$OUT"
rm -f "$OUT"/*.json

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 1' INT TERM
say() { echo "mpi: $*" >&2; }
# mpirun [MPIRUN_ARGS] APP1 : APP2 (word-split on purpose)
mpi_run() { timeout 900 mpirun $MPIRUN_ARGS "$@"; }

# wait_ready FILE: the endpoint of the first "ready EP" line (60 s at most)
wait_ready() {
  for _ in $(seq 1 1200); do grep -q '^ready ' "$1" 2>/dev/null && break; sleep 0.05; done
  sed -n 's/^ready //p' "$1" | head -1
}

# ---- per-hop cost: echo in a second process ---------------------------------------------------
# hop LINK SIZE TOKENS: writes $OUT/hop-LINK-BYTES.json
hop() {
  local link=$1 size=$2 tok=$3 bytes=$(($2 * $3 * 4)) reps=$HOP_REPS
  [ "$bytes" -gt 65536 ] && reps=$((HOP_REPS / 4))
  local args=(bench --hop --hop-size "$size" --hop-tokens "$tok" -r "$reps" --warmup 100 -o json)
  local out="$OUT/hop-$link-$bytes.json"
  say "hop over $link: $bytes bytes x $reps"
  if [ "$link" = mpi ]; then
    mpi_run -np 1 "$TERN" "${args[@]}" --hop-connect mpi://1 : \
            -np 1 "$TERN" bench --hop --hop-listen mpi://self --idle-ms 30000 >"$tmp/hop.out" 2>>"$tmp/bench.log"
    # rank 1's "ready" line comes out too: keep the JSON object only
    sed -n '/^{/,/}}$/p' "$tmp/hop.out" >"$out"
  else
    local ep=tcp://127.0.0.1:*
    [ "$link" = ipc ] && ep="ipc://$tmp/hop.sock"
    "$TERN" bench --hop --hop-listen "$ep" --idle-ms 30000 >"$tmp/echo.out" 2>>"$tmp/bench.log" &
    local pid=$!
    ep=$(wait_ready "$tmp/echo.out")
    [ -n "$ep" ] || { say "hop echo ($link) did not start: $(tail -1 "$tmp/bench.log")"; kill $pid 2>/dev/null; return 1; }
    timeout 300 "$TERN" "${args[@]}" --hop-connect "$ep" >"$out" 2>>"$tmp/bench.log"
    wait $pid 2>/dev/null   # it stops at the client's Shutdown
  fi
  [ -s "$out" ] || { say "hop over $link failed: $(tail -1 "$tmp/bench.log")"; rm -f "$out"; return 1; }
}
for link in mpi ipc tcp; do
  hop "$link" 2560 1
  hop "$link" 2560 64
done

# ---- decode throughput --------------------------------------------------------------------------
# bench_json OUTFILE -- [tern bench args] (plain), or bench_json OUTFILE mpi -- [args] (MPMD, 2 workers)
bench_json() {
  local out=$1 mode=$2; shift 2
  [ "$1" = -- ] && shift
  local args=(bench -m "$model" -p 0 -n "$N" -t "$THREADS" -r "$REPS" --parallel "$PAR" -o json)
  if [ "$mode" = mpi ]; then
    mpi_run -np 1 "$TERN" "${args[@]}" --mpi "$@" : -np 2 "$TERN" worker --mpi -m "$model" -t "$THREADS" \
      >"$out" 2>>"$tmp/bench.log"
  else
    timeout 900 "$TERN" "${args[@]}" "$@" >"$out" 2>>"$tmp/bench.log"
  fi
  local rc=$?
  if [ $rc != 0 ] || ! python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$out" 2>/dev/null; then
    say "bench failed ($mode $*): $(tail -1 "$tmp/bench.log")"
    rm -f "$out"
    return 1
  fi
}
say "model $model, $THREADS thread(s) per process, tg$N x $REPS, parallel $PAR"
say "one process"
bench_json "$OUT/single.json" plain --
eps=()
for i in 1 2; do
  "$TERN" worker --listen 'tcp://127.0.0.1:*' -m "$model" -t "$THREADS" --name "w$i" >"$tmp/w$i.out" 2>"$tmp/w$i.log" &
  pids+=($!)
done
for i in 1 2; do
  ep=$(wait_ready "$tmp/w$i.out")
  [ -n "$ep" ] || { say "worker w$i did not start: $(tail -2 "$tmp/w$i.log")"; exit 1; }
  eps+=("$ep")
done
say "2 stages over zmq tcp: ${eps[0]},${eps[1]}"
bench_json "$OUT/zmq-s2.json" plain -- --workers "${eps[0]},${eps[1]}"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
wait 2>/dev/null
pids=()
say "2 stages over mpi (mpirun $MPIRUN_ARGS)"
bench_json "$OUT/mpi-s2.json" mpi --

# ---- report -------------------------------------------------------------------------------------
cat >"$OUT/meta.json" <<EOF
{"model": "$model", "threads": $THREADS, "n": $N, "reps": $REPS, "nproc": $(nproc),
 "load": "$(cut -d' ' -f1-3 /proc/loadavg)", "mpirun": "$(mpirun --version 2>/dev/null | head -1)",
 "mpirun_args": "$MPIRUN_ARGS", "idle_us": "${TERN_MPI_IDLE_US:-1000 (default)}"}
EOF
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name)) as f: return json.load(f)
    except Exception: return None
meta = load("meta.json")
print(f"## MPI vs ZeroMQ on one machine: {os.path.basename(meta['model'])}, {meta['threads']} thread(s) per process, "
      f"tg{meta['n']} x {meta['reps']} repetitions")
print(f"\nmachine: {meta['nproc']} cores, load average {meta['load']} at the end - a shared box: numbers are noisy; "
      f"{meta['mpirun']}, mpirun {meta['mpirun_args']}, TERN_MPI_IDLE_US {meta['idle_us']}\n")
print("### Per-hop transport cost (tern bench --hop: Forward + hidden state, echo in a second process)\n")
print("| link | hidden | tokens | bytes | one way median | p90 | p99 | round trip median | p90 | p99 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
links = {"mpi": "mpi (Open MPI, 2 ranks)", "ipc": "zmq ipc", "tcp": "zmq tcp loopback"}
for size in (2560 * 4, 2560 * 64 * 4):
    for link in ("mpi", "ipc", "tcp"):
        h = load(f"hop-{link}-{size}.json")
        if not h:
            print(f"| {links[link]} | - | - | {size} | failed | | | | | |"); continue
        o, t = h["oneway_us"], h["roundtrip_us"]
        print(f"| {links[link]} | {h['hidden']} | {h['tokens']} | {h['bytes']} | {o['median']:.1f} us | {o['p90']:.1f} | "
              f"{o['p99']:.1f} | {t['median']:.1f} us | {t['p90']:.1f} | {t['p99']:.1f} |")
def rows(name):   # {parallel: (avg, sd)} of tg rows
    j = load(name) or []
    return {r["n_parallel"]: (r["avg_ts"], r["stddev_ts"]) for r in j if r.get("n_gen")}
single, zmq, mpi = rows("single.json"), rows("zmq-s2.json"), rows("mpi-s2.json")
base = single.get(1, (0, 0))[0]
print("\n### Aggregate decode t/s by concurrent sequences (x = ratio to one process, 1 sequence)\n")
hdr = ["sequences", "one process", "2 stages zmq tcp", "2 stages mpi"]
print("| " + " | ".join(hdr) + " |")
print("|" + "|".join(["---:"] * len(hdr)) + "|")
def cell(v):
    return f"{v[0]:.1f} ± {v[1]:.1f} ({v[0]/base:.2f}x)" if v and base else "-"
for p in sorted(set(single) | set(zmq) | set(mpi)):
    print(f"| {p} | " + " | ".join(cell(c.get(p)) for c in (single, zmq, mpi)) + " |")
if zmq.get(1) and mpi.get(1):
    print(f"\nper-token cost, 1 sequence, mpi vs zmq tcp: {1e3/mpi[1][0] - 1e3/zmq[1][0]:+.3f} ms "
          "(3 hops: coordinator -> w1 -> w2 -> coordinator)")
PY
echo "raw JSON: $OUT"
