#!/usr/bin/env bash
# Prefix-cache benchmark: a multi-turn chat against `tern serve` (each turn resends the whole
# conversation, as OpenAI clients do), once with the prefix cache and once with
# "cache_prompt": false, same greedy replies. Prints per turn the prompt tokens, how many came
# from the slot's cache, the prompt time (the server's timings.prompt_ms, i.e. time to first
# token) both ways and their ratio, then the totals; and checks the replies are the same both
# ways. Not part of ctest. Numbers from a shared machine are noisy.
#   bench/prompt_cache.sh   env: MODEL (2b4t | small | FILE.gguf), TERN_BIN, TERN_CACHE, TURNS (6),
#                           N (tokens per reply, 24), THREADS (2), CTX (2048)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
bench_tern "prompt cache bench"
MODEL="${MODEL:-2b4t}" TURNS="${TURNS:-6}" N="${N:-24}" THREADS="${THREADS:-2}" CTX="${CTX:-2048}"
bench_model "prompt cache bench" "$MODEL" "$cache"

tmp=$(mktemp -d)
spid=""
cleanup() { [ -n "$spid" ] && kill -TERM "$spid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

"$TERN" serve -m "$model" --host 127.0.0.1 --port 0 -t "$THREADS" -c "$CTX" -np 2 2>"$tmp/serve.log" &
spid=$!
port=""
for _ in $(seq 1 600); do
  port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$tmp/serve.log" | head -1 | sed 's/.*://')
  [ -n "$port" ] && curl -s --max-time 5 "http://127.0.0.1:$port/health" | grep -q ok && break
  kill -0 "$spid" 2>/dev/null || { echo "prompt cache bench: serve died: $(tail -3 "$tmp/serve.log")" >&2; exit 1; }
  sleep 0.2
done
[ -n "$port" ] || { echo "prompt cache bench: serve did not start" >&2; exit 1; }

python3 - "http://127.0.0.1:$port" "$TURNS" "$N" "$model" <<'PY'
import json, sys, urllib.request
url, turns, n, model = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
questions = ["Tell me about lighthouses.", "Who kept them?", "How were the lamps lit?", "What fuel did they burn?",
             "Are any still manned today?", "Which is the oldest?", "How tall is it?", "Can visitors climb it?"]
def chat(msgs, cache):
    body = {"messages": msgs, "max_tokens": n, "temperature": 0, "ignore_eos": True, "cache_prompt": cache}
    req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r: return json.loads(r.read())
msgs, rows, same = [], [], True
for t in range(turns):
    msgs.append({"role": "user", "content": questions[t % len(questions)]})
    warm = chat(msgs, True)    # first: the cache holds the previous turn (prompt and reply), not this prompt
    cold = chat(msgs, False)
    a, b = cold["choices"][0]["message"]["content"], warm["choices"][0]["message"]["content"]
    same &= a == b
    rows.append((t + 1, warm["usage"]["prompt_tokens"], warm["timings"]["cache_n"], cold["timings"]["prompt_ms"],
                 warm["timings"]["prompt_ms"]))
    msgs.append({"role": "assistant", "content": b})
print(f"prefix cache, {model.split('/')[-1]}, {turns} chat turns of {n} tokens each")
print("| turn | prompt tokens | cached | prompt ms, fed whole | prompt ms, cached | ratio |")
print("|---:|---:|---:|---:|---:|---:|")
for t, p, c, cold, warm in rows:
    print(f"| {t} | {p} | {c} | {cold:.0f} | {warm:.0f} | {cold / warm if warm > 0 else 0:.1f}x |")
tc, tw = sum(r[3] for r in rows), sum(r[4] for r in rows)
print(f"total prompt time: {tc:.0f} ms fed whole, {tw:.0f} ms with the cache ({tc / tw if tw > 0 else 0:.1f}x); "
      f"replies {'identical' if same else 'DIFFER'} both ways")
sys.exit(0 if same else 1)
PY
