#!/usr/bin/env bash
# Cluster benchmark (issue 11, "Fast"): one process vs the model split over 1..3 worker processes
# on loopback — decode tokens/s of one sequence (target: 2 stages >= 90% of one process) and the
# aggregate with 1, 2, 4, 8 concurrent sequences (table + PNG via bench/plot.gp); the per-hop
# transport cost (target: < 100 us one way for a 2560-wide state); the same through the netns
# home lab (deploy/netns/homelab.sh: profiles none, lan = 1 GbE, wifi) with the per-token network
# cost against the physics. Not part of ctest. Numbers from a shared machine are noisy.
#   bench/cluster.sh        env: MODEL (small | 2b4t | FILE.gguf), TERN_BIN, TERN_CACHE, N (tg
#                           tokens), REPS, THREADS (per process), PAR, STAGES, PROFILES,
#                           NETNS_STAGES, NETNS=0 (skip), AB (A/B rounds), OUT (output dir)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
bench_tern "cluster"
MODEL="${MODEL:-small}" N="${N:-128}" REPS="${REPS:-3}" THREADS="${THREADS:-1}" PAR="${PAR:-1,2,4,8}"
STAGES="${STAGES:-1 2 3}" AB="${AB:-5}" PROFILES="${PROFILES:-none lan wifi}" NETNS_STAGES="${NETNS_STAGES:-2 3}" NETNS="${NETNS:-1}"
bench_model "cluster" "$MODEL" "$cache"
name=$(basename "$model" .gguf)
OUT="${OUT:-$cache/bench/cluster-$name}"
mkdir -p "$OUT"
rm -f "$OUT"/*.json
n_embd=$("$TERN" info "$model" 2>/dev/null | sed -n 's/.*embd \([0-9]*\),.*/\1/p' | head -1)
[ -n "$n_embd" ] || { echo "cluster: cannot read the hidden width of $model (tern info)" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
. "$here/deploy/netns/homelab.sh"
TAG="hl$$"
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; hl_down "$TAG"; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 1' INT TERM
say() { echo "cluster: $*" >&2; }

maxof() { local m=0 x; for x in "$@"; do [ "$x" -gt "$m" ] && m=$x; done; echo "$m"; }
# bench_json OUTFILE [PREFIX...] -- [tern bench args]: tg rows for every --parallel value
bench_json() {
  local out=$1; shift
  local pre=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do pre+=("$1"); shift; done
  shift
  if ! timeout 900 "${pre[@]}" "$TERN" bench -m "$model" -p 0 -n "$N" -t "$THREADS" -r "$REPS" --parallel "$PAR" \
        -o json "$@" >"$out" 2>>"$tmp/bench.log"; then
    say "bench failed ($*): $(tail -1 "$tmp/bench.log")"
    rm -f "$out"
    return 1
  fi
}

# ---- one process ------------------------------------------------------------------------------
say "model $model (hidden $n_embd), $THREADS thread(s) per process, tg$N x $REPS, parallel $PAR"
bench_json "$OUT/single.json" -- || exit 1

# ---- loopback workers -------------------------------------------------------------------------
EP=""
start_worker() {   # name -> EP (loopback, ephemeral port)
  "$TERN" worker --listen 'tcp://127.0.0.1:*' -m "$model" -t "$THREADS" --name "$1" >"$tmp/$1.out" 2>"$tmp/$1.log" &
  pids+=($!)
  for _ in $(seq 1 600); do grep -q '^ready ' "$tmp/$1.out" 2>/dev/null && break; sleep 0.05; done
  EP=$(sed -n 's/^ready //p' "$tmp/$1.out" | head -1)
}
eps=()
for i in $(seq 1 "$(maxof $STAGES)"); do
  start_worker "w$i"
  [ -n "$EP" ] || { say "worker w$i did not start: $(tail -2 "$tmp/w$i.log")"; exit 1; }
  eps+=("$EP")
done
for s in $STAGES; do
  list=$(IFS=,; echo "${eps[*]:0:$s}")
  say "loopback, $s stage(s): $list"
  bench_json "$OUT/loop-s$s.json" -- --workers "$list"
done
# the 90% target, A/B: one process and 2 workers alternate (one sequence), so both see the same
# load from whatever else runs on the machine
if [ ${#eps[@]} -ge 2 ]; then
  for i in $(seq 1 "$AB"); do
    say "A/B round $i/$AB: one process vs 2 workers"
    PAR=1 REPS=1 bench_json "$OUT/ab-single-$i.json" --
    PAR=1 REPS=1 bench_json "$OUT/ab-split-$i.json" -- --workers "${eps[0]},${eps[1]}"
  done
fi
for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
wait 2>/dev/null
pids=()

# ---- per-hop cost on loopback -----------------------------------------------------------------
"$TERN" bench --hop --hop-size 2560 -o json >"$OUT/hop-2560.json" 2>>"$tmp/bench.log" || say "hop bench failed"
[ "$n_embd" != 2560 ] && { "$TERN" bench --hop --hop-size "$n_embd" -o json >"$OUT/hop-$n_embd.json" 2>>"$tmp/bench.log" || true; }

# ---- netns home lab ---------------------------------------------------------------------------
netns_note=""
if [ "$NETNS" = 1 ]; then
  hl_gc >/dev/null 2>&1
  nmax=$(maxof $NETNS_STAGES)
  for prof in $PROFILES; do
    if ! hl_up "$TAG" "$nmax" "$prof" 2>"$tmp/up.err"; then
      netns_note="netns skipped: $(cat "$tmp/up.err")"
      say "$netns_note"
      break
    fi
    say "netns profile $prof: ${HL_RATE:-unshaped}, RTT $HL_RTT_US us (tbf + tern-delay-relay)"
    nseps=()
    okns=1
    for i in $(seq 1 "$nmax"); do
      a=$(hl_addr "w$i")
      hl_relay "w$i" 7100 7101 || { okns=0; break; }
      hl_spawn "w$i" "$tmp/ns-w$i.log" "$TERN" worker --listen "tcp://$a:7101" -m "$model" -t "$THREADS" --name "w$i"
      nseps+=("tcp://$a:7100")
    done
    for i in $(seq 1 "$nmax"); do
      for _ in $(seq 1 600); do grep -q '^ready' "$tmp/ns-w$i.log" 2>/dev/null && break; sleep 0.05; done
    done
    a1=$(hl_addr w1)
    if [ $okns = 1 ] && hl_relay w1 7200 7201; then
      for size in "$n_embd" 2; do   # the model's hidden state, and a bare round trip
        hl_spawn w1 "$tmp/echo.log" "$TERN" bench --hop --hop-listen "tcp://$a1:7201" --idle-ms 30000
        sleep 0.2
        reps=$([ "$prof" = wifi ] && echo 100 || echo 500)
        timeout 120 ip netns exec "$TAG-c" "$TERN" bench --hop --hop-connect "tcp://$a1:7200" --hop-size "$size" \
          -r "$reps" --warmup 20 -o json >"$OUT/nshop-$prof-$size.json" 2>>"$tmp/bench.log" || say "hop through $prof failed"
      done
    fi
    for s in $NETNS_STAGES; do
      [ $okns = 1 ] || break
      list=$(IFS=,; echo "${nseps[*]:0:$s}")
      say "netns $prof, $s stage(s): $list"
      bench_json "$OUT/ns-$prof-s$s.json" ip netns exec "$TAG-c" -- --workers "$list"
    done
    echo "{\"profile\": \"$prof\", \"mbit\": $HL_MBIT, \"rtt_us\": $HL_RTT_US}" >"$OUT/profile-$prof.json"
    hl_down "$TAG"
  done
fi

# ---- report -----------------------------------------------------------------------------------
cat >"$OUT/meta.json" <<EOF
{"model": "$model", "n_embd": $n_embd, "threads": $THREADS, "n": $N, "reps": $REPS, "nproc": $(nproc),
 "load": "$(cut -d' ' -f1-3 /proc/loadavg)", "stages": "$STAGES", "netns_stages": "$NETNS_STAGES",
 "profiles": "$PROFILES", "netns_note": "$netns_note"}
EOF
python3 - "$OUT" <<'PY'
import json, os, sys, glob
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    try:
        with open(p) as f: return json.load(f)
    except Exception: return None
meta = load("meta.json")
def rows(name):   # {parallel: (avg, sd)} of tg rows
    j = load(name) or []
    return {r["n_parallel"]: (r["avg_ts"], r["stddev_ts"]) for r in j if r.get("n_gen")}
single = rows("single.json")
stages = [int(s) for s in meta["stages"].split()]
loop = {s: rows(f"loop-s{s}.json") for s in stages}
pars = sorted(single)
base = single.get(1, (0, 0))[0]
print(f"## Cluster benchmark: {os.path.basename(meta['model'])} (hidden {meta['n_embd']}), "
      f"{meta['threads']} thread(s) per process, tg{meta['n']} x {meta['reps']} repetitions")
print(f"\nmachine: {meta['nproc']} cores, load average {meta['load']} at the end - a shared box: numbers are noisy\n")
print(f"one process, 1 sequence: **{base:.1f} t/s**")
s2 = loop.get(2, {}).get(1)
if s2 and base:
    r = s2[0] / base
    print(f"2 workers, 1 sequence: **{s2[0]:.1f} t/s** = **{100*r:.1f}%** of one process (sweep runs, minutes "
          f"apart; the A/B line below is the verdict)")
    print(f"per-token cost of the split: {1e3/s2[0] - 1e3/base:+.3f} ms (3 hops: coordinator -> w1 -> w2 -> coordinator)")
ab = []
for i in range(1, 100):
    a, b = rows(f"ab-single-{i}.json").get(1), rows(f"ab-split-{i}.json").get(1)
    if not a or not b: break
    ab.append((a[0], b[0]))
if ab:
    rs = sorted(b / a for a, b in ab)
    med = rs[len(rs) // 2]
    ba, bb = max(a for a, _ in ab), max(b for _, b in ab)
    print(f"A/B, {len(ab)} alternating rounds of tg{meta['n']}: 2 workers / one process = median **{100*med:.1f}%** "
          f"(range {100*rs[0]:.1f}-{100*rs[-1]:.1f}%); best of each: {bb:.1f} / {ba:.1f} t/s = {100*bb/ba:.1f}% "
          f"(target >= 90%: {'met' if med >= 0.9 else 'MISSED'} on the median)")
print("\n### Aggregate decode t/s by concurrent sequences (x = ratio to one process, 1 sequence)\n")
hdr = ["sequences", "one process"] + [f"{s} stage{'s' if s > 1 else ''}" for s in stages]
print("| " + " | ".join(hdr) + " |")
print("|" + "|".join(["---:"] * len(hdr)) + "|")
def cell(v):
    return f"{v[0]:.1f} ± {v[1]:.1f} ({v[0]/base:.2f}x)" if v and base else "-"
for p in pars:
    print(f"| {p} | " + " | ".join(cell(c.get(p)) for c in [single] + [loop[s] for s in stages]) + " |")
with open(os.path.join(out, "loop.dat"), "w") as f:
    f.write("seqs one_process " + " ".join(f"{s}_stage{'s' if s > 1 else ''}" for s in stages) + "\n")
    for p in pars:
        f.write(f"{p} " + " ".join(f"{c[p][0]:.3f}" if p in c else "?" for c in [single] + [loop[s] for s in stages]) + "\n")

print("\n### Per-hop transport cost (tern bench --hop: Forward + hidden state over loopback tcp)\n")
print("| hidden | bytes | one way median | p90 | p99 | round trip median | p90 | p99 |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for f in sorted(glob.glob(os.path.join(out, "hop-*.json"))):
    h = load(os.path.basename(f)); o, t = h["oneway_us"], h["roundtrip_us"]
    print(f"| {h['hidden']} | {h['bytes']} | {o['median']:.1f} us | {o['p90']:.1f} | {o['p99']:.1f} | "
          f"{t['median']:.1f} us | {t['p90']:.1f} | {t['p99']:.1f} |")
h = load("hop-2560.json")
if h:
    m = h["oneway_us"]["median"]
    print(f"\n2560-wide state, one way: median {m:.1f} us (target < 100 us: {'met' if m < 100 else 'MISSED'})")

profs = [p for p in meta["profiles"].split() if load(f"profile-{p}.json")]
if meta["netns_note"]:
    print(f"\n### netns home lab\n\n{meta['netns_note']}")
if profs:
    nst = [int(s) for s in meta["netns_stages"].split()]
    E = meta["n_embd"]
    print("\n### netns home lab (bandwidth: tbf on both ends of each veth; latency: tern-delay-relay, "
          "RTT/2 each way, in front of every worker; coordinator in its own namespace)\n")
    print("| profile | rate | RTT set | RTT measured (bare) | one way, hidden state | " +
          " | ".join(f"{s} stages, 1 seq" for s in nst) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(nst))
    ns = {}
    for p in profs:
        pr = load(f"profile-{p}.json")
        bare, hid = load(f"nshop-{p}-2.json"), load(f"nshop-{p}-{E}.json")
        ns[p] = {s: rows(f"ns-{p}-s{s}.json") for s in nst}
        print(f"| {p} | {pr['mbit'] or 'unshaped'}{' Mbit/s' if pr['mbit'] else ''} | {pr['rtt_us']} us | "
              f"{bare['roundtrip_us']['median']:.0f} us | " if bare else f"| {p} | - | - | - | ", end="")
        print(f"{hid['oneway_us']['median']:.0f} us | " if hid else "- | ", end="")
        print(" | ".join(f"{ns[p][s][1][0]:.1f} t/s" if 1 in ns[p][s] else "-" for s in nst) + " |")
    print("\nPer-token network cost added by a profile, against the physics "
          "(S stages: S hidden-state hops of " f"{4*E} bytes / bandwidth + (S+1) one-way delays of RTT/2; "
          "measured: 1/t/s of the profile - 1/t/s of profile none, i.e. the same namespaces and relays "
          "without shaping or delay)\n")
    print("'from hops' adds up the profile's extra one-way hop times (medians of tern bench --hop through the "
          "profile, minus profile none): S hidden-state hops + 1 bare return hop - robust to the machine's load, "
          "unlike the t/s columns.\n")
    print("| profile | stages | added, from t/s ms/token | added, from hops ms/token | physics ms/token | vs loopback (t/s) ms/token |")
    print("|---|---:|---:|---:|---:|---:|")
    def ow(p, size):
        h = load(f"nshop-{p}-{size}.json")
        return h["oneway_us"]["median"] / 1e3 if h else None
    for p in profs:
        pr = load(f"profile-{p}.json")
        for s in nst:
            v, z, l = ns[p][s].get(1), ns.get("none", {}).get(s, {}).get(1), loop.get(s, {}).get(1)
            phys = (s * 4 * E * 8 / (pr["mbit"] * 1e6) if pr["mbit"] else 0) * 1e3 + (s + 1) * pr["rtt_us"] / 2e3
            added = f"{1e3/v[0] - 1e3/z[0]:.3f}" if v and z else "-"
            vsl = f"{1e3/v[0] - 1e3/l[0]:+.3f}" if v and l else "-"
            hh, hb, zh, zb = ow(p, E), ow(p, 2), ow("none", E), ow("none", 2)
            fromhops = f"{s * (hh - zh) + (hb - zb):.3f}" if None not in (hh, hb, zh, zb) else "-"
            print(f"| {p} | {s} | {added} | {fromhops} | {phys:.3f} | {vsl} |")
    print("\n### Aggregate t/s through the profiles (concurrent sequences)\n")
    cols = [(p, s) for p in profs for s in nst]
    print("| sequences | " + " | ".join(f"{p} {s}st" for p, s in cols) + " |")
    print("|---:|" + "---:|" * len(cols))
    for q in pars:
        print(f"| {q} | " + " | ".join(f"{ns[p][s][q][0]:.1f}" if q in ns[p][s] else "-" for p, s in cols) + " |")
    with open(os.path.join(out, "ns.dat"), "w") as f:
        f.write("seqs " + " ".join(f"{p}_{s}_stages" for p, s in cols) + "\n")
        for q in pars:
            f.write(f"{q} " + " ".join(f"{ns[p][s][q][0]:.3f}" if q in ns[p][s] else "?" for p, s in cols) + "\n")
with open(os.path.join(out, "plotargs"), "w") as f:
    ncol = 2 + len(stages)
    nsdat = os.path.join(out, "ns.dat") if profs else ""
    nscol = 1 + len(profs) * len(meta["netns_stages"].split()) if profs else 0
    title = f"{os.path.basename(meta['model'])}, {meta['threads']} thread(s)/process, tg{meta['n']}"
    f.write(f"dat='{os.path.join(out, 'loop.dat')}'; ncol={ncol}; nsdat='{nsdat}'; nscol={nscol}; "
            f"single={base:.3f}; title='{title}'; out='{os.path.join(out, 'cluster.png')}'")
PY
if command -v gnuplot >/dev/null && [ -s "$OUT/plotargs" ]; then
  if gnuplot -e "$(cat "$OUT/plotargs")" "$here/bench/plot.gp" 2>"$tmp/gp.err"; then echo; echo "plot: $OUT/cluster.png"
  else echo; echo "plot failed: $(head -3 "$tmp/gp.err")"; fi
else
  echo; echo "plot: gnuplot not found (data in $OUT/loop.dat)"
fi
echo "raw JSON and data: $OUT"
