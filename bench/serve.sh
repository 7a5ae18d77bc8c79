#!/usr/bin/env bash
# HTTP serving benchmark (issue 7): aggregate generated tokens/s and p50/p99 inter-token latency
# (gaps between streamed SSE chunks as the client sees them) and p50/p99 time to first token
# (request sent to first text chunk: what chunked prefill trades for short gaps) with 1, 4, 16
# concurrent streams, in one process and on a 2-worker cluster (--workers on loopback); states
# the batched-decode factor (aggregate at the largest concurrency / at 1). Greedy, ignore_eos,
# N tokens per stream, different prompts. Not part of ctest. Numbers from a shared machine are noisy.
#   bench/serve.sh     env: MODEL (2b4t | small | FILE.gguf), TERN_BIN, TERN_CACHE, N (tokens per
#                      stream, 32), PAR (1,4,16), THREADS (per process, 2), MODES ("single cluster")
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
bench_tern "serve bench"
MODEL="${MODEL:-2b4t}" N="${N:-32}" PAR="${PAR:-1,4,16}" THREADS="${THREADS:-2}" MODES="${MODES:-single cluster}"
bench_model "serve bench" "$MODEL" "$cache"
maxpar=$(echo "$PAR" | tr ',' '\n' | sort -n | tail -1)

tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/load.py" <<'PY'
# load.py URL PAR N: PAR streams at once; prints tokens, wall seconds, tokens/s, p50 and p99 gaps,
# p50 and p99 time to first token (ms)
import json, sys, threading, time, urllib.request
url, par, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()
gaps, toks, errs, ttft = [], [0] * par, [], []
lock, start = threading.Lock(), threading.Barrier(par)
def one(k):
    body = json.dumps({"prompt": f"Stream {k}: {words[k % 16]} {words[(3 * k) % 16]}", "max_tokens": n,
                       "temperature": 0, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    start.wait()
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            last, mine = None, []
            for line in r:
                if not line.startswith(b"data: {"): continue
                c = json.loads(line[6:])
                if c.get("usage"): toks[k] = c["usage"]["completion_tokens"]
                if c["choices"] and c["choices"][0]["text"]:
                    now = time.perf_counter()
                    if last is not None: mine.append(now - last)
                    else:
                        with lock: ttft.append(now - t0)
                    last = now
            with lock: gaps.extend(mine)
    except Exception as e:
        errs.append(f"{type(e).__name__}: {e}")
th = [threading.Thread(target=one, args=(k,)) for k in range(par)]
t0 = time.perf_counter()
for t in th: t.start()
for t in th: t.join()
wall = time.perf_counter() - t0
if errs: sys.stderr.write(f"errors: {errs[:3]}\n"); sys.exit(1)
gaps.sort()
ttft.sort()
q = lambda a, p: 1000 * a[min(len(a) - 1, int(p * len(a)))] if a else float("nan")
print(f"{sum(toks)} {wall:.2f} {sum(toks) / wall:.2f} {q(gaps, 0.50):.1f} {q(gaps, 0.99):.1f} {q(ttft, 0.50):.1f} {q(ttft, 0.99):.1f}")
PY

# serve NAME ARGS...: tern serve on a free port, waits until healthy; sets URL and SPID
serve() {
  local name=$1 port=""
  shift
  "$TERN" serve -m "$model" --host 127.0.0.1 --port 0 -np "$maxpar" -c 256 "$@" 2>"$tmp/$name.log" &
  SPID=$!
  pids+=("$SPID")
  for _ in $(seq 1 600); do
    port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$tmp/$name.log" | head -1 | sed 's/.*://')
    [ -n "$port" ] && break
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.2
  done
  [ -n "$port" ] || { echo "serve bench: server $name did not start: $(tail -5 "$tmp/$name.log")" >&2; exit 1; }
  URL="http://127.0.0.1:$port"
  for _ in $(seq 1 1800); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/health")" = 200 ] && return 0
    sleep 0.2
  done
  echo "serve bench: server $name never became healthy" >&2; exit 1
}
worker() {   # NAME: a worker on a free loopback port; prints its endpoint once ready
  "$TERN" worker --listen 'tcp://127.0.0.1:*' -m "$model" -t "$THREADS" --name "$1" >"$tmp/$1.out" 2>"$tmp/$1.log" &
  pids+=($!)
}
endpoint() {
  for _ in $(seq 1 1800); do grep -q '^ready ' "$tmp/$1.out" 2>/dev/null && break; sleep 0.2; done
  sed -n 's/^ready //p' "$tmp/$1.out" | head -1
}

echo "# tern serve bench: $(basename "$model"), $N tokens per stream, greedy, $(nproc) cores, $THREADS threads per process"
printf '%-8s %4s %8s %8s %10s %9s %9s %10s %10s\n' mode par tokens wall_s agg_tok/s itl_p50ms itl_p99ms ttft_p50ms ttft_p99ms
for mode in $MODES; do
  if [ "$mode" = cluster ]; then
    worker w1; worker w2
    W1=$(endpoint w1) W2=$(endpoint w2)
    [ -n "$W1" ] && [ -n "$W2" ] || { echo "serve bench: workers did not start: $(tail -3 "$tmp"/w1.log "$tmp"/w2.log)" >&2; exit 1; }
    serve cluster --workers "$W1,$W2"
  else
    serve single -t "$THREADS"
  fi
  python3 "$tmp/load.py" "$URL" 1 4 >/dev/null || exit 1      # warm-up
  first=""
  for p in $(echo "$PAR" | tr ',' ' '); do
    read -r tok wall agg p50 p99 t50 t99 < <(python3 "$tmp/load.py" "$URL" "$p" "$N") || { echo "serve bench: $mode x$p failed" >&2; exit 1; }
    printf '%-8s %4s %8s %8s %10s %9s %9s %10s %10s\n' "$mode" "$p" "$tok" "$wall" "$agg" "$p50" "$p99" "$t50" "$t99"
    [ -z "$first" ] && first=$agg
    last=$agg
  done
  python3 -c "print(f'# $mode: batched-decode factor (aggregate at x$maxpar / at x1) = {$last / $first:.2f}')"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  pids=()
done
