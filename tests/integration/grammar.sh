#!/usr/bin/env bash
# Constrained generation end to end on a tiny generated model: `tern run --grammar` (greedy and
# sampled: the text is a sentence of the grammar), `-j` JSON Schemas (the text parses and matches
# the schema, for several seeds), the same seeded run over two workers (the masks cross the wire)
# token for token equal to one process, `tern chat` (every reply of a piped conversation is a
# sentence of the grammar / a JSON value of the schema; the kept cache == re-fed), and `tern serve` with "grammar", "json_schema" and
# OpenAI's response_format (json_object, json_schema; streamed == plain). Bad grammars and
# schemas (CLI flags and request fields) get one clear error line / HTTP 400 naming the problem.
source "$(dirname "$0")/lib.bash"
T() { timeout 120 "$TERN" "$@"; }
C() { curl -s --max-time 60 -H 'Content-Type: application/json' "$@"; }

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 11
run() { T run -m "$M" --no-display-prompt --summary=0 -p "Answer:" -t 2 "$@" 2>>"$tmp/run.log"; }

# ---- a closed grammar --------------------------------------------------------------------------
YN='root ::= ("yes" | "no") ("!" | "")'
for args in "--temp 0" "--temp 1 -s 1" "--temp 1.5 -s 2 --top-k 0" "--temp 1 -s 3 --repeat-penalty 1.3"; do
  # shellcheck disable=SC2086
  out=$(run -n 32 $args --grammar "$YN")
  [[ "$out" =~ ^(yes|no)\!?$ ]] && ok "run --grammar yes/no ($args): '$out'" || bad "run --grammar ($args): '$out' ($(tail -1 "$tmp/run.log"))"
done
printf '%s\n' 'root ::= item ("," item){2}' 'item ::= [a-c] [0-9]' >"$tmp/list.gbnf"
out=$(run -n 32 --temp 1 -s 5 --grammar-file "$tmp/list.gbnf")
[[ "$out" =~ ^[a-c][0-9],[a-c][0-9],[a-c][0-9]$ ]] && ok "run --grammar-file: '$out'" || bad "run --grammar-file: '$out'"

# ---- JSON Schema ---------------------------------------------------------------------------------
SCHEMA='{"type":"object","properties":{"ok":{"type":"boolean"},"color":{"enum":["red","green","blue"]},"tag":{"type":"string","maxLength":6},"n":{"type":"integer"},"xs":{"type":"array","items":{"type":"number"},"maxItems":3}},"required":["ok","color","tag"]}'
cat >"$tmp/check.py" <<'PY'
# check.py SCHEMA_FILE TEXT_FILE: the text is one JSON value that the test's schema accepts
import json, sys
text = open(sys.argv[2], encoding="utf-8").read()
try:
    o = json.loads(text)
except Exception as e:
    sys.exit(f"not JSON ({e}): {text!r}")
if not isinstance(o, dict): sys.exit(f"not an object: {text!r}")
if set(o) - {"ok", "color", "tag", "n", "xs"}: sys.exit(f"extra keys: {text!r}")
if not {"ok", "color", "tag"} <= set(o): sys.exit(f"missing keys: {text!r}")
if not isinstance(o["ok"], bool) or o["color"] not in ("red", "green", "blue"): sys.exit(f"types: {text!r}")
if not isinstance(o["tag"], str) or len(o["tag"]) > 6: sys.exit(f"tag: {text!r}")
if "n" in o and (not isinstance(o["n"], int) or isinstance(o["n"], bool)): sys.exit(f"n: {text!r}")
if "xs" in o and (not isinstance(o["xs"], list) or len(o["xs"]) > 3 or
                  any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in o["xs"])): sys.exit(f"xs: {text!r}")
print(json.dumps(o))
PY
printf '%s' "$SCHEMA" >"$tmp/schema.json"
for s in 1 2 3 4; do
  run -n 400 --temp 1 -s $s -j "$SCHEMA" >"$tmp/j$s.txt"
  txt=$(python3 "$tmp/check.py" "$tmp/schema.json" "$tmp/j$s.txt" 2>&1) && ok "run -j seed $s: $txt" || bad "run -j seed $s: $txt"
done
run -n 400 --temp 0 -jf "$tmp/schema.json" >"$tmp/jf.txt"
txt=$(python3 "$tmp/check.py" "$tmp/schema.json" "$tmp/jf.txt" 2>&1) && ok "run -jf (greedy): $txt" || bad "run -jf: $txt"

# ---- over two workers: the same tokens -------------------------------------------------------
start_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w1 not ready: $(cat "$tmp/w1.log")"
E1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w2 not ready: $(cat "$tmp/w2.log")"
E2=$EP
for s in 1 3; do
  run -n 400 --temp 1 -s $s -j "$SCHEMA" --workers "$E1,$E2" >"$tmp/c$s.txt"
  cmp -s "$tmp/j$s.txt" "$tmp/c$s.txt" && ok "run -j seed $s over 2 workers == one process" \
    || bad "run -j seed $s over workers: '$(cat "$tmp/c$s.txt")' vs '$(cat "$tmp/j$s.txt")' ($(tail -2 "$tmp/run.log"))"
done
out=$(run -n 32 --temp 1 -s 2 --top-k 0 --grammar "$YN" --workers "$E1,$E2")
[[ "$out" =~ ^(yes|no)\!?$ ]] && ok "run --grammar over 2 workers: '$out'" || bad "run --grammar over workers: '$out'"

# ---- bad grammars and schemas: one line, non-zero exit -------------------------------------
err_case() {   # err_case WHAT PATTERN ARGS...: tern exits non-zero with one stderr line matching PATTERN
  local what=$1 pat=$2 rc
  shift 2
  T "$@" >/dev/null 2>"$tmp/err.txt"; rc=$?
  local lines; lines=$(grep -c . "$tmp/err.txt")
  if [ $rc -ne 0 ] && [ $rc -lt 124 ] && [ "$lines" -eq 1 ] && grep -qi -- "$pat" "$tmp/err.txt"; then ok "$what: $(cat "$tmp/err.txt")"
  else bad "$what (rc $rc, $lines lines): $(cat "$tmp/err.txt")"; fi
}
err_case "undefined rule" "nowhere" run -m "$M" -p x --grammar 'root ::= nowhere'
err_case "left recursion" "recurs" run -m "$M" -p x --grammar 'root ::= root "a" | "b"'
err_case "unterminated literal" "line 1" run -m "$M" -p x --grammar 'root ::= "abc'
err_case "schema keyword" "pattern" run -m "$M" -p x -j '{"type":"string","pattern":"a+"}'
err_case "schema not JSON" "json" run -m "$M" -p x -j '{"type":'
err_case "two grammars" "one of" run -m "$M" -p x --grammar 'root ::= "a"' -j '{}'
err_case "missing grammar file" "cannot open" run -m "$M" -p x --grammar-file "$tmp/none.gbnf"
err_case "chat undefined rule" "nowhere" chat -m "$M" --grammar 'root ::= nowhere'
err_case "chat empty-only grammar" "empty text" chat -m "$M" --grammar 'root ::= ""'

# ---- tern chat: every reply follows the grammar from its start --------------------------------
chat() { printf 'Is it?\nAnd now?\n' | T chat -m "$M" -t 2 "$@" 2>>"$tmp/chat.log"; }
YND='root ::= ("yes" | "no") "."'
for args in "--temp 0" "--temp 1 -s 3"; do
  # shellcheck disable=SC2086
  out=$(chat $args --grammar "$YND"); rc=$?
  mapfile -t L <<<"$out"   # "> reply" per turn, then the last prompt "> " at EOF
  if [ $rc -eq 0 ] && [ ${#L[@]} -eq 3 ] && [[ "${L[0]}" =~ ^\>\ (yes|no)\.$ ]] && [[ "${L[1]}" =~ ^\>\ (yes|no)\.$ ]] \
    && [ "${L[2]}" = "> " ]; then ok "chat --grammar yes/no, 2 turns ($args): ${L[0]} ${L[1]}"
  else bad "chat --grammar ($args, rc $rc): '$out' ($(tail -2 "$tmp/chat.log"))"; fi
done
CSCHEMA='{"type":"object","properties":{"color":{"enum":["red","green","blue"]},"ok":{"type":"boolean"}},"required":["color","ok"]}'
cat >"$tmp/chat_json.py" <<'PY'
# chat_json.py OUT_FILE: the chat's output ("> " before each reply, a last "> " at EOF) holds two
# replies, each a JSON object with exactly color (red/green/blue) and ok (boolean)
import json, sys
out = open(sys.argv[1], encoding="utf-8").read()
if not out.startswith("> ") or not out.endswith("\n> \n"): sys.exit(f"prompts: {out!r}")
replies = out[2:-3].split("\n> ")
if len(replies) != 2: sys.exit(f"{len(replies)} replies: {out!r}")
for r in replies:
    try:
        o = json.loads(r)
    except Exception as e:
        sys.exit(f"not JSON ({e}): {r!r}")
    if not isinstance(o, dict) or set(o) != {"color", "ok"}: sys.exit(f"keys: {r!r}")
    if o["color"] not in ("red", "green", "blue") or not isinstance(o["ok"], bool): sys.exit(f"values: {r!r}")
print(" ".join(json.dumps(json.loads(r)) for r in replies))
PY
for args in "--temp 0" "--temp 1 -s 3" "--temp 1.5 -s 4 --top-k 0"; do
  # shellcheck disable=SC2086
  chat $args -j "$CSCHEMA" >"$tmp/cj.txt"; rc=$?
  txt=$(python3 "$tmp/chat_json.py" "$tmp/cj.txt" 2>&1) && [ $rc -eq 0 ] && ok "chat -j ($args): $txt" \
    || bad "chat -j ($args, rc $rc): $txt ($(tail -2 "$tmp/chat.log"))"
done
chat --temp 1 -s 3 --no-cache -j "$CSCHEMA" >"$tmp/cj2.txt"
chat --temp 1 -s 3 -j "$CSCHEMA" >"$tmp/cj.txt"
cmp -s "$tmp/cj.txt" "$tmp/cj2.txt" && ok "chat -j: replies with the kept cache == re-fed conversation" \
  || bad "chat -j cache vs --no-cache: '$(cat "$tmp/cj.txt")' vs '$(cat "$tmp/cj2.txt")'"
# Ctrl-C stops a reply the grammar holds open (1000 letters before it may end); the next prompt follows
if python3 - "$TERN" "$M" <<'PY'
import os, select, signal, subprocess, sys, time
p = subprocess.Popen([sys.argv[1], "chat", "-m", sys.argv[2], "-c", "4096", "--temp", "1", "-s", "1", "-t", "1",
                      "--grammar", "root ::= [a-z]{1000}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL)
buf = b""
def read_until(pred, timeout):
    global buf
    end = time.time() + timeout
    while not pred(buf) and time.time() < end:
        r, _, _ = select.select([p.stdout], [], [], 0.1)
        if r:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk: break
            buf += chunk
    return pred(buf)
try:
    p.stdin.write(b"Letters please\n"); p.stdin.flush()
    assert read_until(lambda b: len(b) > 32, 60), "no reply started"
    p.send_signal(signal.SIGINT)
    assert read_until(lambda b: b.count(b"> ") >= 2 and b.endswith(b"> "), 60), "no new prompt after Ctrl-C"
    reply = buf[2:buf.rindex(b"\n> ")]
    assert 0 < len(reply) < 1000 and reply.isalpha() and reply.islower(), reply
    p.stdin.close()
    assert p.wait(timeout=30) == 0, "exit code"
finally:
    if p.poll() is None: p.kill()
PY
then ok "chat --grammar: Ctrl-C stops the reply, EOF then exits 0"; else bad "chat --grammar Ctrl-C handling"; fi

# ---- a pathologically ambiguous grammar on a 128k vocabulary: refused at the mask's work budget,
# not ~100 ms of the engine thread a token (needs Llama-3's tokenizer.json, as install-deps leaves it)
L3="${TERN_CACHE:-$HOME/.cache/tern}/llama3/tokenizer.json"
if [ -s "$L3" ]; then
  make_model "$tmp/l3.gguf" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 3 --vocab "$L3"
  t0=$(now)
  T run -m "$tmp/l3.gguf" -p x -n 60 --temp 1 -s 1 --grammar 'root ::= (. | .. | ...){0,500}' >/dev/null 2>"$tmp/amb.txt"; rc=$?
  if [ $rc -ne 0 ] && grep -q "too ambiguous" "$tmp/amb.txt"; then ok "ambiguous grammar refused at the work budget in $(since "$t0") s"
  else bad "ambiguous grammar (rc $rc, $(since "$t0") s): $(tail -2 "$tmp/amb.txt")"; fi
  out=$(T run -m "$tmp/l3.gguf" --no-display-prompt --summary=0 -p x -n 400 --temp 1 -s 2 -j "$SCHEMA" 2>>"$tmp/run.log")
  printf '%s' "$out" >"$tmp/l3.txt"
  txt=$(python3 "$tmp/check.py" "$tmp/schema.json" "$tmp/l3.txt" 2>&1) && ok "-j on Llama-3's vocabulary: $txt" || bad "-j on Llama-3's vocabulary: $txt"
else
  echo "skip - no $L3: the 128k-vocabulary checks"
fi

# ---- tern serve --------------------------------------------------------------------------------
start_serve s1 -m "$M" -t 2 -np 2 --metrics || die "serve did not start: $(cat "$tmp/s1.log")"
wait_health "$URL" 30 || die "serve not healthy: $(tail -5 "$tmp/s1.log")"
field() { python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$@"; }
SCH_JSON=$(printf '%s' "$SCHEMA")
C "$URL/v1/chat/completions" -d "{\"messages\":[{\"role\":\"user\",\"content\":\"Give JSON\"}],\"max_tokens\":400,\"temperature\":1,\"seed\":4,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"t\",\"schema\":$SCH_JSON}}}" >"$tmp/r1.json"
field "$tmp/r1.json" 'o["choices"][0]["message"]["content"]' >"$tmp/r1.txt" 2>>"$tmp/run.log"
txt=$(python3 "$tmp/check.py" "$tmp/schema.json" "$tmp/r1.txt" 2>&1) && ok "serve response_format json_schema: $txt" \
  || bad "serve json_schema: $txt $(head -c 300 "$tmp/r1.json")"
[ "$(field "$tmp/r1.json" 'o["choices"][0]["finish_reason"]')" = stop ] && ok "serve json_schema: finish_reason stop" \
  || bad "serve json_schema finish_reason: $(head -c 300 "$tmp/r1.json")"
C "$URL/v1/completions" -d "{\"prompt\":\"Answer:\",\"max_tokens\":32,\"temperature\":1,\"seed\":9,\"grammar\":\"root ::= (\\\"yes\\\" | \\\"no\\\") (\\\"!\\\" | \\\"\\\")\"}" >"$tmp/r2.json"
t2=$(field "$tmp/r2.json" 'o["choices"][0]["text"]' 2>&1)
[[ "$t2" =~ ^(yes|no)\!?$ ]] && ok "serve grammar: '$t2'" || bad "serve grammar: $(head -c 300 "$tmp/r2.json")"
C -N "$URL/v1/completions" -d "{\"prompt\":\"Answer:\",\"max_tokens\":400,\"temperature\":1,\"seed\":5,\"json_schema\":$SCH_JSON,\"stream\":true}" >"$tmp/r3.sse"
C "$URL/v1/completions" -d "{\"prompt\":\"Answer:\",\"max_tokens\":400,\"temperature\":1,\"seed\":5,\"json_schema\":$SCH_JSON}" >"$tmp/r3.json"
python3 - "$tmp/r3.sse" >"$tmp/r3s.txt" <<'PY'
import json, sys
out = []
for e in open(sys.argv[1], encoding="utf-8").read().split("\n\n"):
    if e.startswith("data: ") and e != "data: [DONE]":
        for c in json.loads(e[6:])["choices"]:
            out.append(c.get("text") or "")
sys.stdout.write("".join(out))
PY
field "$tmp/r3.json" 'o["choices"][0]["text"]' >"$tmp/r3.txt"
printf '%s' "$(cat "$tmp/r3.txt")" >"$tmp/r3.txt"
if cmp -s "$tmp/r3s.txt" "$tmp/r3.txt" && python3 "$tmp/check.py" "$tmp/schema.json" "$tmp/r3.txt" >/dev/null 2>&1; then
  ok "serve json_schema streamed == plain, and valid"
else bad "serve json_schema stream: '$(cat "$tmp/r3s.txt")' vs '$(cat "$tmp/r3.txt")'"; fi
C "$URL/v1/chat/completions" -d '{"messages":[{"role":"user","content":"JSON please"}],"max_tokens":64,"temperature":0,"response_format":{"type":"json_object"}}' >"$tmp/r4.json"
python3 - "$tmp/r4.json" >"$tmp/r4.out" 2>&1 <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
c = o["choices"][0]
text = c["message"]["content"]
if c["finish_reason"] == "stop":
    v = json.loads(text)
    assert isinstance(v, dict), text
else:   # cut by max_tokens: an object's beginning
    assert c["finish_reason"] == "length" and text.lstrip().startswith("{"), (c["finish_reason"], text)
print(c["finish_reason"], text[:60])
PY
[ $? -eq 0 ] && ok "serve response_format json_object: $(cat "$tmp/r4.out")" || bad "serve json_object: $(cat "$tmp/r4.out")"
bad_req() {   # bad_req WHAT PARAM PATTERN BODY: HTTP 400 naming PARAM, message matching PATTERN
  local what=$1 param=$2 pat=$3 body=$4 c
  c=$(C -o "$tmp/e.json" -w '%{http_code}' "$URL/v1/completions" -d "$body")
  if [ "$c" = 400 ] && grep -q "\"param\": *\"$param\"" "$tmp/e.json" && grep -qi -- "$pat" "$tmp/e.json"; then ok "serve 400 $what"
  else bad "serve $what: $c $(cat "$tmp/e.json")"; fi
}
bad_req "undefined rule" grammar "nowhere" '{"prompt":"a","grammar":"root ::= nowhere"}'
bad_req "grammar not a string" grammar "string" '{"prompt":"a","grammar":5}'
bad_req "unsupported schema keyword" json_schema "minimum" '{"prompt":"a","json_schema":{"type":"integer","minimum":3}}'
bad_req "response_format type" response_format "xml" '{"prompt":"a","response_format":{"type":"xml"}}'
bad_req "json_schema without schema" response_format "schema" '{"prompt":"a","response_format":{"type":"json_schema"}}'
bad_req "two of them" grammar "one of" '{"prompt":"a","grammar":"root ::= \"a\"","json_schema":{}}'
g=$(C "$URL/metrics" | awk '$1=="tern_grammar_requests_total"{print $2}')
[ "${g:-0}" -ge 5 ] && ok "/metrics: $g requests held to a grammar" || bad "/metrics grammar_requests_total: '$g'"
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/health")" = 200 ] && ok "serve healthy after the bad requests" \
  || bad "serve unhealthy after bad requests"

finish 30
