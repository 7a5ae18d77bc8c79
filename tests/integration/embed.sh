#!/usr/bin/env bash
# Embeddings end to end on a tiny generated model: `tern embed` (pooling mean / cls / last / none,
# --embd-normalize, the output formats) gives the same bits in one step and in chunks of 3 tokens,
# and through 2 real workers on loopback (--workers) as in one process; `tern serve --embeddings`
# answers /v1/embeddings (and /embeddings) in OpenAI's shape with the vectors of `tern embed`
# (float and base64, several inputs side by side, over 2 workers too), and refuses what it must:
# dimensions != n_embd, an input longer than the context, bad JSON, and any request when started
# without --embeddings (501 naming the flag). Every process is killed on exit.
source "$(dirname "$0")/lib.bash"
C() { curl -s --max-time 60 -H 'Content-Type: application/json' "$@"; }

M="$tmp/m.gguf"
make_model "$M" --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s --seed 11
start_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1; W1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$M" -t 1; W2=$EP
[ -n "$W1" ] && [ -n "$W2" ] || die "workers did not start: $(cat "$tmp"/*.log)"

P1="The quick brown fox jumps over the lazy dog, again and again, many times over"
P2="Hello world"
emb() { timeout 120 "$TERN" embed -m "$M" -p "$P1" -p "$P2" "$@" 2>>"$tmp/embed.log"; }

for pool in mean cls last none; do
  ref=$(emb --pooling $pool -t 2)
  rows=$(echo "$ref" | grep -c '^embedding ')
  [ $pool = none ] || [ "$rows" = 2 ] || bad "pooling $pool: $rows rows, want 2"
  got=$(emb --pooling $pool -b 3 -np 1)
  [ -n "$ref" ] && [ "$got" == "$ref" ] && ok "pooling $pool: chunks of 3 tokens == one step" || bad "pooling $pool: chunked differs"
  got=$(emb --pooling $pool --workers "$W1,$W2" -b 5)
  [ -n "$ref" ] && [ "$got" == "$ref" ] && ok "pooling $pool: 2 workers == one process, bit for bit" || bad "pooling $pool: cluster differs"
done
[ "$(emb --pooling none | wc -l)" -gt 10 ] && ok "pooling none: one row per token" || bad "pooling none rows"
ref=$(emb); got=$(TERN_EMBEDDED=direct emb --stages 2)
[ -n "$ref" ] && [ "$got" == "$ref" ] && ok "TERN_EMBEDDED=direct, 2 stages == the embedded workers" || bad "direct stages differ"

# formats and norms: json is OpenAI's list, array is [[...],...]; L2 norm 1 by default, taxicab 1
# with --embd-normalize 1, unnormalised rows differ
emb --embd-output-format json >"$tmp/e.json"
emb --embd-output-format array --embd-normalize 1 >"$tmp/e1.json"
emb --embd-output-format array --embd-normalize -1 >"$tmp/eraw.json"
python3 - "$tmp" <<'PY' && ok "json / array formats, L2 and taxicab norms" || bad "formats or norms"
import json, math, sys
d = sys.argv[1]
o = json.load(open(f"{d}/e.json"))
assert o["object"] == "list" and [x["index"] for x in o["data"]] == [0, 1], o.keys()
for x in o["data"]:
    assert x["object"] == "embedding" and len(x["embedding"]) == 256
    assert abs(math.sqrt(sum(v * v for v in x["embedding"])) - 1) < 1e-5
a1 = json.load(open(f"{d}/e1.json"))
assert len(a1) == 2 and all(abs(sum(abs(v) for v in r) - 1) < 1e-5 for r in a1)
raw = json.load(open(f"{d}/eraw.json"))
assert all(abs(math.sqrt(sum(v * v for v in r)) - 1) > 1e-3 for r in raw)
PY
out=$(timeout 60 "$TERN" embed -m "$M" -p "$(printf 'word %.0s' $(seq 1 600))" -c 64 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "longer than the context" && ok "text longer than the context: $(echo "$out" | tail -1)" \
  || bad "long text (rc $rc): $out"

# the server
cat >"$tmp/check.py" <<'PY'
# check.py REPLY CLI_ARRAY N [b64]: OpenAI's embeddings shape, N entries, the vectors of tern embed
import base64, json, struct, sys
o = json.load(open(sys.argv[1]))
ref = json.load(open(sys.argv[2]))
n, b64 = int(sys.argv[3]), len(sys.argv) > 4
assert o["object"] == "list" and isinstance(o["model"], str), o
assert len(o["data"]) == n
f32 = lambda v: struct.unpack("f", struct.pack("f", v))[0]
for i, x in enumerate(o["data"]):
    assert x["object"] == "embedding" and x["index"] == i
    v = list(struct.unpack(f"<{len(ref[0])}f", base64.b64decode(x["embedding"]))) if b64 else [f32(t) for t in x["embedding"]]
    assert v == [f32(t) for t in ref[i % len(ref)]], f"entry {i} differs"
u = o["usage"]
assert u["prompt_tokens"] == u["total_tokens"] > 0
PY
emb --embd-output-format array >"$tmp/ref.json"
for where in local cluster; do
  extra=(); [ $where = cluster ] && extra=(--workers "$W1,$W2")
  start_serve serve_$where -m "$M" -t 2 -np 2 -c 64 --embeddings "${extra[@]}" || die "server did not start: $(cat "$tmp/serve_$where.log")"
  wait_health "$URL" 60
  body=$(python3 -c 'import json,sys; print(json.dumps({"input": [sys.argv[1], sys.argv[2]]}))' "$P1" "$P2")
  C "$URL/v1/embeddings" -d "$body" >"$tmp/r.json"
  python3 "$tmp/check.py" "$tmp/r.json" "$tmp/ref.json" 2 && ok "$where: /v1/embeddings of 2 inputs == tern embed" \
    || bad "$where: reply $(head -c 300 "$tmp/r.json")"
  body=$(python3 -c 'import json,sys; print(json.dumps({"input": [sys.argv[1], sys.argv[2], sys.argv[1]], "encoding_format": "base64"}))' "$P1" "$P2")
  C "$URL/embeddings" -d "$body" >"$tmp/r.json"
  python3 "$tmp/check.py" "$tmp/r.json" "$tmp/ref.json" 3 b64 && ok "$where: /embeddings base64 of 3 inputs == tern embed" \
    || bad "$where: base64 reply $(head -c 300 "$tmp/r.json")"
  if [ $where = local ]; then
    ids=$(C "$URL/tokenize" -d "{\"content\":\"$P2\",\"add_special\":true}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
    C "$URL/v1/embeddings" -d "{\"input\":[$ids],\"dimensions\":256}" >"$tmp/r.json"
    python3 - "$tmp/r.json" "$tmp/ref.json" <<'PY' && ok "token ids as input == the text's vector" || bad "ids input: $(head -c 300 "$tmp/r.json")"
import json, struct, sys
o, ref = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
f32 = lambda v: struct.unpack("f", struct.pack("f", v))[0]
assert [f32(t) for t in o["data"][0]["embedding"]] == [f32(t) for t in ref[1]]
PY
    for req in '{"input":"a","dimensions":3}|400|dimensions' "{\"input\":\"$(printf 'word %.0s' $(seq 1 100))\"}|400|context" \
               '{"input":|400|JSON' '{"input":[1,99999]}|400|vocabulary'; do
      IFS='|' read -r b st word <<<"$req"
      got=$(C -o "$tmp/e.json" -w '%{http_code}' "$URL/v1/embeddings" -d "$b")
      [ "$got" = "$st" ] && grep -q "$word" "$tmp/e.json" && ok "error $st: $(head -c 140 "$tmp/e.json")" || bad "error for $b: $got $(cat "$tmp/e.json")"
    done
  fi
  kill -TERM "$SPID"; wait_exit "$SPID" 30 || bad "$where server did not stop"
done
start_serve serve_off -m "$M" -t 1 || die "server did not start"
wait_health "$URL" 60
got=$(C -o "$tmp/e.json" -w '%{http_code}' "$URL/v1/embeddings" -d '{"input":"a"}')
[ "$got" = 501 ] && grep -q -- "--embeddings" "$tmp/e.json" && ok "without --embeddings: 501, $(head -c 120 "$tmp/e.json")" || bad "without --embeddings: $got $(cat "$tmp/e.json")"
finish 30 "$tmp"/*.log
