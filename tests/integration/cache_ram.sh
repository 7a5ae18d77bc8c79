#!/usr/bin/env bash
# The RAM prompt cache (tern serve --cache-ram, llama-server's), end to end on a tiny generated
# model with one slot (-np 1), so that every request overwrites the slot's cache: conversation A,
# then B (another prompt), then A's next turn — greedy completions, seeded sampled ones (temp 0.8)
# and chat turns. With the cache, A's next turn reports about A's first prompt as cached
# (usage.prompt_tokens_details.cached_tokens == timings.cache_n) where a server without it reports
# next to nothing, and every text is the server without the cache's; /metrics counts the hits and
# the tokens they restored, /props shows the cache; over 2 workers the texts and cached counts
# are one process's. LRU: with --cache-ram 1 (room for two of three conversations) a hit makes an
# entry recent, so the third save evicts the other one (B), not it (A).
source "$(dirname "$0")/lib.bash"
C() { curl -s --max-time 60 -H 'Content-Type: application/json' "$@"; }

M="$tmp/m.gguf"
make_model "$M" --preset tiny --layers 6 --arch bitnet-b1.58 --type i2_s --seed 11
M12="$tmp/m12.gguf"   # LRU: deeper, so that a short conversation's entry is ~0.4 MiB
make_model "$M12" --preset tiny --layers 12 --arch bitnet-b1.58 --type i2_s --seed 11

cat >"$tmp/conv.py" <<'PY'
# conv.py URL OUT: three conversations on one slot, each A / B / A's next turn; OUT gets per
# request [prompt_tokens, cached_tokens, cache_n, text]
import json, sys, urllib.request
url, out = sys.argv[1], sys.argv[2]
def post(path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))
rows = []
def rec(o, text):
    u = o["usage"]
    rows.append([u["prompt_tokens"], u["prompt_tokens_details"]["cached_tokens"], o["timings"]["cache_n"], text])
    return text
def comp(prompt, **kw):
    o = post("/v1/completions", dict(prompt=prompt, max_tokens=16, **kw))
    return rec(o, o["choices"][0]["text"])
def chat(msgs, **kw):
    o = post("/v1/chat/completions", dict(messages=msgs, max_tokens=16, **kw))
    return rec(o, o["choices"][0]["message"]["content"])
PA = "You are a careful assistant. Conversation A is about ships: the harbour was busy at dawn, gulls circled over the masts and ropes."
PB = "Something else entirely: list three prime numbers and one colour."
for kw in (dict(temperature=0), dict(temperature=0.8, seed=5)):
    a1 = comp(PA, **kw)
    comp(PB, **kw)
    comp(PA + a1.replace("\0", "") + " Go on, tell me more about the ships.", **kw)   # (JSON takes no NUL)
Q = [{"role": "user", "content": PA + " What happened next?"}]
r1 = chat(Q, temperature=0)
chat([{"role": "user", "content": PB}], temperature=0)
chat(Q + [{"role": "assistant", "content": r1.replace("\0", "")}, {"role": "user", "content": "And after that?"}], temperature=0)
json.dump(rows, open(out, "w"))
PY

# conv NAME ARGS...: a server (-np 1) with ARGS runs conv.py into $tmp/NAME.json; /metrics into
# $tmp/NAME.metrics, /props into $tmp/NAME.props
conv() {
  local name=$1
  shift
  start_serve "$name" -m "$M" -t 2 -np 1 --metrics "$@" || die "serve $name did not start: $(cat "$tmp/$name.log")"
  wait_health "$URL" 30 || die "$name not healthy: $(tail -3 "$tmp/$name.log")"
  python3 "$tmp/conv.py" "$URL" "$tmp/$name.json" 2>"$tmp/$name.err" || bad "$name: $(tail -3 "$tmp/$name.err")"
  C "$URL/metrics" >"$tmp/$name.metrics"
  C "$URL/props" >"$tmp/$name.props"
  kill "$SPID"
  wait "$SPID" 2>/dev/null
}
met() { sed -n "s/^tern_$2 //p" "$tmp/$1.metrics"; }

conv ref
conv ram --cache-ram 64
# check.py REF RAM: texts equal; the 3rd request of each conversation (index 2, 5, 8) reports its
# conversation's first prompt (-2 for a token the next turn's text may merge) as cached in RAM,
# the reference (a shared chat template's start aside) next to nothing; prints the cached counts
cat >"$tmp/check.py" <<'PY'
import json, sys
ref, ram = (json.load(open(f)) for f in sys.argv[1:3])
def die(m): print(m); sys.exit(1)
if [r[3] for r in ref] != [r[3] for r in ram]: die(f"texts differ: {[r[3] for r in ref]} vs {[r[3] for r in ram]}")
for r in ram:
    if r[1] != r[2]: die(f"cached_tokens {r[1]} != timings.cache_n {r[2]}")
for i in (2, 5, 8):
    first = ram[i - 2][0]
    if ram[i][1] < first - 2: die(f"request {i}: {ram[i][1]} cached, the first turn had {first} prompt tokens")
    if ref[i][1] + 20 > ram[i][1]: die(f"request {i}: the reference cached {ref[i][1]}")
print(" ".join(f"{ram[i][1]}/{ram[i][0]}" for i in (2, 5, 8)), "cached vs", " ".join(str(ref[i][1]) for i in (2, 5, 8)))
PY
if out=$(python3 "$tmp/check.py" "$tmp/ref.json" "$tmp/ram.json"); then
  ok "A's next turn (greedy, seeded temp 0.8, chat) starts after A's first turn restored from RAM ($out without the cache), the same texts"
else bad "cache vs none: $out"; fi
# the hits: at least those three (a conversation's first prompt may also come back from RAM)
read -r lo hi <<<"$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sum(r[i][1] for i in (2,5,8)), sum(x[1] for x in r))' "$tmp/ram.json")"
h=$(met ram prompt_cache_hits_total) n=$(met ram prompt_cache_restored_tokens_total)
[ "$h" -ge 3 ] && [ "$n" -ge "$lo" ] && [ "$n" -le "$hi" ] \
  && [ "$(met ram prompt_cache_entries)" -ge 1 ] && [ "$(met ram prompt_cache_bytes)" -gt 0 ] \
  && [ "$(met ram prompt_cache_saves_total)" -ge 2 ] \
  && [ "$(met ram prompt_cache_limit_bytes)" = 67108864 ] && [ "$(met ref prompt_cache_limit_bytes)" = 0 ] \
  && [ "$(met ref prompt_cache_hits_total)" = 0 ] \
  && ok "/metrics: $h hits, $n tokens restored, $(met ram prompt_cache_entries) entries of $(met ram prompt_cache_bytes) bytes" \
  || bad "metrics: $(grep '^tern_prompt_cache' "$tmp/ram.metrics")"
python3 -c 'import json,sys; o=json.load(open(sys.argv[1]))["prompt_cache"]; sys.exit(not (o["limit_mib"] == 64 and o["entries"] == int(sys.argv[2])))' \
  "$tmp/ram.props" "$(met ram prompt_cache_entries)" && ok "/props: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompt_cache"])' "$tmp/ram.props")" \
  || bad "/props: $(cat "$tmp/ram.props")"
grep -q 'prompt cache: saved slot 0' "$tmp/ram.log" && grep -q 'restored into slot 0' "$tmp/ram.log" \
  && ok "logged: $(grep -m1 'restored into' "$tmp/ram.log" | cut -d' ' -f4-)" || bad "log: $(grep 'prompt cache' "$tmp/ram.log")"

# ---- --cache-ram -1: no limit (llama-server's meaning; 0 is off) -------------------------------
conv unl --cache-ram -1
if out=$(python3 "$tmp/check.py" "$tmp/ref.json" "$tmp/unl.json"); then
  python3 -c 'import json,sys; o=json.load(open(sys.argv[1]))["prompt_cache"]; sys.exit(not (o["limit_mib"] == -1 and o["entries"] >= 2 and o["bytes"] > 0))' \
    "$tmp/unl.props" && [ "$(met unl prompt_cache_limit_bytes)" = -1 ] && [ "$(met unl prompt_cache_evictions_total)" = 0 ] \
    && [ "$(met unl prompt_cache_hits_total)" -ge 3 ] && grep -q 'without a size limit' "$tmp/unl.log" \
    && ok "--cache-ram -1: no limit ($out; /props $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompt_cache"])' "$tmp/unl.props"))" \
    || bad "--cache-ram -1: $(grep '^tern_prompt_cache' "$tmp/unl.metrics") $(cat "$tmp/unl.props")"
else bad "--cache-ram -1: $out"; fi

# ---- over 2 workers --------------------------------------------------------------------------
spawn_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1
spawn_worker w2 "$LOOPBACK_ANY" -m "$M" -t 1
W1=$(endpoint w1) W2=$(endpoint w2)
[ -n "$W1" ] && [ -n "$W2" ] || die "workers did not start: $(cat "$tmp"/w1.log "$tmp"/w2.log)"
conv wk --cache-ram 64 --workers "$W1,$W2"
python3 -c 'import json,sys; a,b=(json.load(open(f)) for f in sys.argv[1:3]); sys.exit(a != b)' "$tmp/ram.json" "$tmp/wk.json" \
  && [ "$(met wk prompt_cache_hits_total)" = "$h" ] && [ "$(met wk prompt_cache_restored_tokens_total)" = "$n" ] \
  && ok "2 workers: the same texts and cached counts as one process, $h hits" || bad "2 workers differ: $(cat "$tmp/wk.json") vs $(cat "$tmp/ram.json")"

# ---- while another slot generates: saves and restores wait for the steps in flight --------------
# (2 workers with slow steps, so that steps of the long request are in flight at the admissions;
# that it still runs when the conversations end is reported, not required: timing)
TERN_TEST_BLOCK_DELAY_MS=3 spawn_worker w3 "$LOOPBACK_ANY" -m "$M" -t 1
TERN_TEST_BLOCK_DELAY_MS=3 spawn_worker w4 "$LOOPBACK_ANY" -m "$M" -t 1
W3=$(endpoint w3) W4=$(endpoint w4)
[ -n "$W3" ] && [ -n "$W4" ] || die "workers w3, w4 did not start: $(cat "$tmp"/w3.log "$tmp"/w4.log)"
start_serve busy -m "$M" -t 2 -np 2 --metrics --cache-ram 64 --workers "$W3,$W4" || die "serve busy did not start: $(cat "$tmp/busy.log")"
wait_health "$URL" 30 || die "busy not healthy"
LONGREQ='"prompt":"Zebras run across the plain","max_tokens":400,"temperature":0,"ignore_eos":true'
C "$URL/v1/completions" -d "{$LONGREQ}" >"$tmp/long.json" &
LP=$!
for _ in $(seq 1 100); do   # until it holds slot 0, so that the conversations share slot 1
  C "$URL/slots" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)[0]["is_processing"] else 1)' && break
  sleep 0.05
done
python3 "$tmp/conv.py" "$URL" "$tmp/busy.json" 2>"$tmp/busy.err" || bad "busy: $(tail -3 "$tmp/busy.err")"
still=$(C "$URL/slots" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["is_processing"])')
wait $LP
C "$URL/v1/completions" -d "{$LONGREQ,\"cache_prompt\":false}" >"$tmp/long_ref.json"
C "$URL/metrics" >"$tmp/busy.metrics"
kill "$SPID"
wait "$SPID" 2>/dev/null
python3 -c 'import json,sys; a,b=(json.load(open(f)) for f in sys.argv[1:3]); sys.exit(a != b)' "$tmp/ram.json" "$tmp/busy.json" \
  && python3 -c 'import json,sys; a,b=(json.load(open(f))["choices"][0]["text"] for f in sys.argv[1:3]); sys.exit(a != b or not a)' "$tmp/long.json" "$tmp/long_ref.json" \
  && [ "$(met busy prompt_cache_hits_total)" = "$h" ] \
  && ok "beside a 400-token request on the other slot (2 workers, slow steps; still running at the end: $still): the same texts and cached counts, $h hits; its text is its own alone" \
  || bad "beside a long request (still running after: $still): $(cat "$tmp/busy.json") $(grep '^tern_prompt_cache' "$tmp/busy.metrics")"

# ---- LRU under a tiny limit ----------------------------------------------------------------
cat >"$tmp/lru.py" <<'PY'
# lru.py URL OUT: A, B, C, A, B, C (greedy); OUT gets [prompt_tokens, cached_tokens, text] each
import json, sys, urllib.request
url, out = sys.argv[1], sys.argv[2]
P = ["Conversation one: the old lighthouse keeper climbed the stairs every evening to light the lamp for the boats.",
     "Conversation two: a recipe for bread needs flour, water, salt and yeast, then time and a hot oven to bake.",
     "Conversation three: the mountain trail wound past lakes and pines before it reached the snowy summit ridge."]
rows = []
for p in P + P:
    req = urllib.request.Request(url + "/v1/completions", json.dumps({"prompt": p, "max_tokens": 16, "temperature": 0}).encode(),
                                 {"Content-Type": "application/json"})
    o = json.load(urllib.request.urlopen(req, timeout=60))
    rows.append([o["usage"]["prompt_tokens"], o["usage"]["prompt_tokens_details"]["cached_tokens"], o["choices"][0]["text"]])
json.dump(rows, open(out, "w"))
PY
lru() {
  start_serve "$1" -m "$M12" -t 2 -np 1 --metrics "${@:2}" || die "serve $1 did not start: $(cat "$tmp/$1.log")"
  wait_health "$URL" 30 || die "$1 not healthy"
  python3 "$tmp/lru.py" "$URL" "$tmp/$1.json" 2>"$tmp/$1.err" || bad "$1: $(tail -3 "$tmp/$1.err")"
  C "$URL/metrics" >"$tmp/$1.metrics"
  kill "$SPID"
  wait "$SPID" 2>/dev/null
}
lru lref
lru lram --cache-ram 1
# one conversation's entry is ~0.4 MiB (12 layers x 2 x 128 f16 values x ~70 tokens): two fit in
# 1 MiB, three do not. A again: a hit (A becomes recent), C's save evicts B; B again: no entry;
# C again: a hit (B's save then evicts A).
cat >"$tmp/lcheck.py" <<'PY'
import json, sys
ref, ram = (json.load(open(f)) for f in sys.argv[1:3])
def die(m): print(m); sys.exit(1)
if [r[2] for r in ref] != [r[2] for r in ram]: die("texts differ from the server without the cache")
a, b, c = ram[3][1], ram[4][1], ram[5][1]
if a != ram[3][0] - 1 or c != ram[5][0] - 1: die(f"A again {a}/{ram[3][0]}, C again {c}/{ram[5][0]} cached: not hits")
if b != ref[4][1]: die(f"B again: {b} cached (the reference {ref[4][1]}): B was not the one evicted")
print(f"A again {a}/{ram[3][0]} cached, B again {b}, C again {c}/{ram[5][0]}")
PY
if out=$(python3 "$tmp/lcheck.py" "$tmp/lref.json" "$tmp/lram.json"); then
  [ "$(met lram prompt_cache_evictions_total)" = 2 ] && [ "$(met lram prompt_cache_hits_total)" = 2 ] \
    && [ "$(met lram prompt_cache_entries)" = 2 ] && [ "$(met lram prompt_cache_bytes)" -le 1048576 ] \
    && ok "--cache-ram 1: LRU eviction ($out; 2 evictions, $(met lram prompt_cache_entries) entries of $(met lram prompt_cache_bytes) bytes), the same texts" \
    || bad "LRU metrics: $(grep '^tern_prompt_cache' "$tmp/lram.metrics")"
else bad "LRU: $out $(grep 'prompt cache' "$tmp/lram.log")"; fi

# ---- requests that feed their prompt whole do not restore ------------------------------------
# A, B (A saved to RAM), then A with cache_prompt false and B echo-scored (max_tokens 0 + echo +
# logprobs): each would have been a hit, but the prompt is fed whole, so nothing is restored and
# the hit counter stays; A (cache_prompt true) afterwards is one. (A restore the request then
# does not use is taken back out of the counter, so the log's restores are what show none came.)
cat >"$tmp/nocache.py" <<'PY'
# nocache.py URL: prints the hit counter after each request, then "same" / "differ" for A's texts
import json, re, sys, urllib.request
url = sys.argv[1]
def post(body):
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))
def hits():
    m = urllib.request.urlopen(url + "/metrics", timeout=60).read().decode()
    return int(re.search(r"^tern_prompt_cache_hits_total (\d+)", m, re.M).group(1))
PA = "Conversation A: the harbour was busy at dawn, gulls circled over the masts, ropes and the fishing boats."
PB = "Conversation B: a recipe for bread needs flour, water, salt and yeast, then time and a hot oven to bake."
a1 = post(dict(prompt=PA, max_tokens=16, temperature=0))["choices"][0]["text"]
post(dict(prompt=PB, max_tokens=16, temperature=0))
h = [hits()]
a2 = post(dict(prompt=PA, max_tokens=16, temperature=0, cache_prompt=False))
h.append(hits())
post(dict(prompt=PB, max_tokens=0, echo=True, logprobs=1, temperature=0))
h.append(hits())
post(dict(prompt=PA, max_tokens=16, temperature=0))
h.append(hits())
print(*h, a2["timings"]["cache_n"], "same" if a2["choices"][0]["text"] == a1 else "differ")
PY
start_serve nocache -m "$M" -t 2 -np 1 --metrics --cache-ram 64 || die "serve nocache did not start: $(cat "$tmp/nocache.log")"
wait_health "$URL" 30 || die "nocache not healthy"
out=$(python3 "$tmp/nocache.py" "$URL" 2>&1)
kill "$SPID"
wait "$SPID" 2>/dev/null
[ "$out" = "0 0 0 1 0 same" ] && [ "$(grep -c 'restored into' "$tmp/nocache.log")" = 1 ] \
  && ok "cache_prompt false and an echo-scored prompt restore nothing (hits after each: ${out% * *}), A's text unchanged; A afterwards is a hit" \
  || bad "cache_prompt false / echo-scored (hits after B, A nocache, B echo, A; A nocache's cache_n; text): $out $(grep 'prompt cache' "$tmp/nocache.log")"

# ---- bad values ------------------------------------------------------------------------------
"$TERN" serve -m "$M" --cache-ram -2 >/dev/null 2>"$tmp/bad.err"; rc=$?
[ $rc = 1 ] && grep -q -- '--cache-ram' "$tmp/bad.err" && ok "--cache-ram -2 refused: $(head -1 "$tmp/bad.err")" || bad "--cache-ram -2 (rc $rc): $(cat "$tmp/bad.err")"
finish 30
