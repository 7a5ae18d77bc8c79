#!/usr/bin/env bash
# KV copies between slots (llama.cpp's llama_memory_seq_cp), end to end on a tiny generated model
# (4 layers). A request with n=3 choices at temperature 0.9 with a seed evaluates its prompt once:
# the other two choices copy it from the first's slot (/metrics: 2 x (prompt - 1) tokens cached)
# and their texts are those of a server without the prompt cache (every choice prefills the prompt
# itself) and of three single-choice requests with the choices' seeds (choice i: seed + i x
# 0x9E3779B97F4A7C15, server_gen.c's rule). Two prompts sharing a long beginning in one request:
# the second copies that beginning from the first's busy slot (usage cached_tokens) and both texts
# are the uncached server's (llama-server's /completion: tokens_cached and timings.cache_n show
# it). Slot choice (--slot-prompt-similarity): a next turn takes its conversation's slot, an
# unrelated prompt the empty or least recently used one. The same over 2 workers (ZeroMQ): the
# texts of one process. Nothing
# here depends on timing: a request's choices are admitted together, so the copy source is busy.
source "$(dirname "$0")/lib.bash"

M="$tmp/m.gguf"
make_model "$M" --preset tiny --layers 4 --arch bitnet-b1.58 --type i2_s --seed 21

cat >"$tmp/q.py" <<'PY'
# q.py URL: the choices of an n=3 request, the three single requests with their seeds, two
# prompts with a shared beginning, and /metrics' cached prompt tokens, as one JSON object
import json, sys, urllib.request
url = sys.argv[1]
def post(path, body):
    r = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(r, timeout=120))
def metric(name):
    m = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    return int(float([l.split()[1] for l in m.splitlines() if l.startswith("tern_" + name + " ")][0]))
def cached_total(): return metric("prompt_tokens_cached_total")
P = "Once upon a time in a quiet village by the sea there lived an old fisherman and his three daughters, who"
SYS = ("You are a careful assistant. Answer briefly, name your sources, and never invent facts that you "
       "cannot check. The user asks about")
G = 0x9E3779B97F4A7C15
base = dict(max_tokens=16, temperature=0.9, ignore_eos=True)
out = {}
c0 = cached_total()
r = post("/v1/completions", dict(base, prompt=P, n=3, seed=42))
out["choices"] = [c["text"] for c in r["choices"]]
out["n_prompt"] = r["usage"]["prompt_tokens"]
out["choices_cached"] = cached_total() - c0
out["choices_copies"] = [metric("kv_copies_total"), metric("kv_copied_tokens_total")]
def signed(v): return v - (1 << 64) if v >= 1 << 63 else v
singles = [post("/v1/completions", dict(base, prompt=P, seed=signed((42 + i * G) % (1 << 64)))) for i in range(3)]
out["singles"] = [x["choices"][0]["text"] for x in singles]
# usage of n=3: the prompt once (a single request's prompt_tokens), completion tokens of all three;
# cached: none the first time (the siblings' copies are this request's own work), the prompt less
# its last token when the slots already hold it
r2 = post("/v1/completions", dict(base, prompt=P, n=3, seed=7))
out["usage3"] = [[x["prompt_tokens"], x["completion_tokens"], x["prompt_tokens_details"]["cached_tokens"]]
                 for x in (r["usage"], r2["usage"])]
out["single_pt"] = singles[0]["usage"]["prompt_tokens"]
r = post("/v1/completions", dict(base, temperature=0, prompt=[SYS + " the tides.", SYS + " old boats and nets."]))
out["shared"] = [c["text"] for c in r["choices"]]
out["shared_cached"] = r["usage"]["prompt_tokens_details"]["cached_tokens"]
# llama-server's /completion: one result a prompt, each with tokens_cached and timings
SYS2 = ("Speak plainly and slowly to a child who is seven years old, using short words, and end every answer "
        "with a question back to the child. Today the child wants to know about")
r = post("/completion", dict(prompt=[SYS2 + " the moon.", SYS2 + " trains and stations."], n_predict=12, temperature=0))
out["native"] = [x["content"] for x in r]
out["native_cached"] = [[x["tokens_cached"], x["timings"]["cache_n"], x["timings"]["prompt_n"]] for x in r]
print(json.dumps(out))
PY
# field JSON KEY: one value of q.py's output
field() { python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])[sys.argv[2]]))' "$1" "$2"; }

# serve NAME ARGS...: a server on a free port (4 slots, metrics), healthy; sets URL
serve() {
  local name=$1
  shift
  start_serve "$name" -m "$M" -t 2 -np 4 -c 256 --metrics "$@" || die "server $name did not start: $(cat "$tmp/$name.log")"
  wait_health "$URL" 60 || die "server $name never became healthy: $(tail -5 "$tmp/$name.log")"
}
# query NAME: q.py against $URL; prints its JSON (dies when it fails)
query() { timeout 300 python3 "$tmp/q.py" "$URL" 2>"$tmp/$1.py.log" || die "requests to $1 failed: $(tail -5 "$tmp/$1.py.log")"; }

serve plain --no-cache-prompt
R=$(query plain)
kill -TERM "$SPID"; wait_exit "$SPID" 20
serve copy
A=$(query copy)
kill -TERM "$SPID"; wait_exit "$SPID" 20

n=$(field "$A" n_prompt)
[ "$(field "$A" choices)" = "$(field "$R" choices)" ] \
  && ok "n=3 at temperature 0.9: the choices' texts with the copies == without the prompt cache" \
  || bad "n=3 with copies $(field "$A" choices) vs without $(field "$R" choices)"
[ "$(field "$A" choices)" = "$(field "$A" singles)" ] && [ "$(field "$R" choices)" = "$(field "$R" singles)" ] \
  && ok "and == three single requests with the choices' seeds" || bad "n=3 $(field "$A" choices) vs singles $(field "$A" singles)"
python3 -c 'import json,sys; c=json.loads(sys.argv[1]); sys.exit(len(set(c)) != 3)' "$(field "$A" choices)" \
  && ok "three different samples, not three copies" || bad "the choices repeat: $(field "$A" choices)"
[ "$(field "$A" choices_cached)" = $((2 * (n - 1))) ] && [ "$(field "$R" choices_cached)" = 0 ] \
  && [ "$(field "$A" choices_copies)" = "[2, $((2 * (n - 1)))]" ] && [ "$(field "$R" choices_copies)" = "[0, 0]" ] \
  && ok "the prompt ($n tokens) was evaluated once: 2 copies of $((n - 1)) tokens (/metrics), none without the cache" \
  || bad "cached prompt tokens: $(field "$A" choices_cached) (want $((2 * (n - 1)))), copies $(field "$A" choices_copies), without the cache $(field "$R" choices_cached) $(field "$R" choices_copies)"
u3=$(field "$A" usage3)
[ "$(field "$A" single_pt)" = "$n" ] && [ "$u3" = "[[$n, 48, 0], [$n, 48, $((n - 1))]]" ] \
  && [ "$(field "$R" usage3)" = "[[$n, 48, 0], [$n, 48, 0]]" ] \
  && ok "n=3 usage $u3: the prompt once, cached none, then the prompt less its last token (not 3 x)" \
  || bad "n=3 usage: $u3 (want [[$n, 48, 0], [$n, 48, $((n - 1))]]), without the cache $(field "$R" usage3), a single's prompt $(field "$A" single_pt)"
sc=$(field "$A" shared_cached)
[ "$(field "$A" shared)" = "$(field "$R" shared)" ] && [ "$sc" -ge 20 ] && [ "$(field "$R" shared_cached)" = 0 ] \
  && ok "two prompts with a shared beginning: $sc tokens copied from the busy slot, the uncached texts" \
  || bad "shared beginning: cached $sc, texts $(field "$A" shared) vs $(field "$R" shared)"
# /completion: the second result's tokens_cached and timings (cache_n + prompt_n = its prompt; the
# first may find its BOS in an idle slot's cache, nothing more)
python3 -c '
import json, sys
a, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
(t0, c0, p0), (t1, c1, p1) = a["native_cached"]
u = r["native_cached"]
ok = a["native"] == r["native"] and t0 == c0 < 4 and t1 == c1 >= 20 and c1 + p1 == u[1][2] \
    and all(x[0] == 0 for x in u)
print(f"{t1} tokens cached, timings cache_n {c1} prompt_n {p1} (the first: {t0}, {c0}, {p0}; uncached {u})"); sys.exit(not ok)' "$A" "$R" >"$tmp/native.txt" \
  && ok "/completion: $(cat "$tmp/native.txt"), the uncached texts" \
  || bad "/completion: $(cat "$tmp/native.txt") $(field "$A" native) vs $(field "$R" native)"

# ---- which slot a prompt takes (llama-server's --slot-prompt-similarity, default 0.1) ------------
# -np 3: A, B (unrelated), C (unrelated: the empty third slot, not A's or B's, though it shares
# their first tokens), A's next turn (A's slot, its prompt cached), D (unrelated: the least recently
# released slot, B's). With --slot-prompt-similarity 0: A again takes the LRU slot, and its
# beginning is copied over from A's old slot all the same.
cat >"$tmp/pick.py" <<'PY'
import json, sys, urllib.request
url = sys.argv[1]
def post(body):
    r = urllib.request.Request(url + "/completion", json.dumps(dict(body, n_predict=4, temperature=0)).encode(),
                               {"Content-Type": "application/json"})
    o = json.load(urllib.request.urlopen(r, timeout=60))
    return o["id_slot"], o["tokens_cached"], o["content"]
A = "The lighthouse keeper climbed the stairs every evening to light the lamp for the boats at sea."
B = "A recipe for bread needs flour, water, salt and yeast, then time and a hot oven to bake it."
C = "Mountain trails wind past lakes and pines before they reach the snowy summit ridge at dawn."
D = "Old trains and stations fill the museum hall where children climb into the driver's cab."
a = post(dict(prompt=A)); b = post(dict(prompt=B)); c = post(dict(prompt=C))
a2 = post(dict(prompt=A + a[2] + " and then the storm came"))
d = post(dict(prompt=D))
print(json.dumps([a[:2], b[:2], c[:2], a2[:2], d[:2]]))
PY
start_serve pick -m "$M" -t 2 -np 3 -c 256 || die "server pick did not start: $(cat "$tmp/pick.log")"
wait_health "$URL" 60 || die "server pick not healthy"
pk=$(timeout 120 python3 "$tmp/pick.py" "$URL" 2>&1)
kill -TERM "$SPID"; wait_exit "$SPID" 20
python3 -c '
import json, sys
(sa, _), (sb, _), (sc, cc), (sa2, ca2), (sd, _) = json.loads(sys.argv[1])
sys.exit(not (len({sa, sb, sc}) == 3 and cc < 4 and sa2 == sa and ca2 >= 15 and sd == sb))' "$pk" \
  && ok "slot pick: unrelated prompts take the empty then the least recently used slot, a next turn its own ([slot, cached] each: $pk)" \
  || bad "slot pick (A, B, C, A's next turn, D as [slot, cached]): $pk"
cat >"$tmp/pick0.py" <<'PY'
import json, sys, urllib.request
url = sys.argv[1]
def post(p):
    r = urllib.request.Request(url + "/completion", json.dumps(dict(prompt=p, n_predict=4, temperature=0)).encode(),
                               {"Content-Type": "application/json"})
    o = json.load(urllib.request.urlopen(r, timeout=60))
    return [o["id_slot"], o["tokens_cached"], o["content"]]
A = "The lighthouse keeper climbed the stairs every evening to light the lamp for the boats at sea."
print(json.dumps([post(A), post(A)]))
PY
start_serve pick0 -m "$M" -t 2 -np 3 -c 256 --slot-prompt-similarity 0 || die "server pick0 did not start: $(cat "$tmp/pick0.log")"
wait_health "$URL" 60 || die "server pick0 not healthy"
pk0=$(timeout 120 python3 "$tmp/pick0.py" "$URL" 2>&1)
kill -TERM "$SPID"; wait_exit "$SPID" 20
python3 -c '
import json, sys
(s1, c1, t1), (s2, c2, t2) = json.loads(sys.argv[1])
sys.exit(not (s1 != s2 and c2 >= 15 and t1 == t2))' "$pk0" \
  && ok "--slot-prompt-similarity 0: the same prompt again takes the LRU slot, its beginning copied over ($pk0)" \
  || bad "--slot-prompt-similarity 0: $pk0"
"$TERN" serve -m "$M" --slot-prompt-similarity 1.5 >/dev/null 2>"$tmp/sps.err"; rc=$?
[ $rc = 1 ] && [ "$(grep -c . "$tmp/sps.err")" = 1 ] && grep -q -- '--slot-prompt-similarity' "$tmp/sps.err" \
  && ok "--slot-prompt-similarity 1.5 refused: $(cat "$tmp/sps.err")" || bad "--slot-prompt-similarity 1.5 (rc $rc): $(cat "$tmp/sps.err")"

# ---- over 2 workers ---------------------------------------------------------------------------
E=()
for w in w1 w2; do
  start_worker $w "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker $w not ready: $(cat "$tmp/$w.log")"
  E+=("$EP")
done
serve workers --workers "${E[0]},${E[1]}"
W=$(query workers)
[ "$(field "$W" choices)" = "$(field "$A" choices)" ] && [ "$(field "$W" singles)" = "$(field "$A" singles)" ] \
  && [ "$(field "$W" choices_cached)" = $((2 * (n - 1))) ] \
  && ok "2 workers ($(grep -ho 'loaded layers \[[0-9, ]*\]' "$tmp/w1.log" "$tmp/w2.log" | tr '\n' ' ')): the choices copied, one process's texts" \
  || bad "2 workers: $(field "$W" choices) (cached $(field "$W" choices_cached)) vs $(field "$A" choices)"
[ "$(field "$W" shared)" = "$(field "$A" shared)" ] && [ "$(field "$W" shared_cached)" = "$sc" ] \
  && ok "2 workers: the shared beginning copied too, the same texts" \
  || bad "2 workers shared: $(field "$W" shared) (cached $(field "$W" shared_cached))"
finish 30
