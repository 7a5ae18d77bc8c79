#!/usr/bin/env bash
# A sampler chain of the user's own (llama.cpp's --samplers / --sampling-seq) end to end on a tiny
# generated model: the order changes the sampled text (temperature before min-p is not min-p
# before temperature), names and letters give the same text, a sampler left out does not run
# whatever its flag says, and each order over 2 workers (the order crosses the wire in
# SamplingParams) and with --lookup 4 gives one process's text. The server: the request field
# "samplers" (an array of names or a string of letters) on /completion, /v1/completions and
# /v1/chat/completions gives `tern run`'s text for the same order and seed; `serve --samplers`
# sets the default that /props shows; unknown names in a request are skipped with a warning (as
# llama-server does), none known left is a 400 naming the field; bad flags are one line.
source "$(dirname "$0")/lib.bash"
T() { timeout 120 "$TERN" "$@"; }
C() { curl -s --max-time 60 -H 'Content-Type: application/json' "$@"; }

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 21
P="Once upon a time"
run() { T run -m "$M" --no-display-prompt --summary=0 -p "$P" -t 2 "$@" 2>>"$tmp/run.log"; }
# tern run's stdout as the server's JSON text would decode it (final newline dropped)
utf8() { python3 -c 'import sys; r=sys.stdin.buffer.read(); r=r[:-1] if r.endswith(b"\n") else r; print(r.decode("utf-8","replace"), end="")'; }

S=(-n 24 --temp 2 -s 7 --min-p 0.2)
base=$(run "${S[@]}")
tm=$(run "${S[@]}" --samplers "temperature;min_p")
mt=$(run "${S[@]}" --samplers "min_p;temperature")
tm_l=$(run "${S[@]}" --sampling-seq tm)
[ -n "$tm" ] && [ "$tm" != "$mt" ] && ok "temperature;min_p and min_p;temperature give different texts" \
  || bad "order made no difference: '$tm' vs '$mt'"
[ "$tm" != "$base" ] && ok "--samplers temperature;min_p differs from the default chain" || bad "same as default: '$tm'"
[ "$tm" == "$tm_l" ] && ok "--sampling-seq tm == --samplers temperature;min_p" || bad "letters '$tm_l' vs names '$tm'"
dflt=$(run "${S[@]}" --samplers "penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature")
[ "$dflt" == "$base" ] && ok "the default order spelt out == no --samplers" || bad "spelt-out default '$dflt' vs '$base'"

# a sampler left out does not run: --min-p 0.9 and --top-k 1 change nothing when the order lacks them
a=$(run -n 24 --temp 1.5 -s 3 --samplers "typ_p;temperature" --typical 0.7)
b=$(run -n 24 --temp 1.5 -s 3 --samplers "typ_p;temperature" --typical 0.7 --min-p 0.9 --top-k 1)
c=$(run -n 24 --temp 1.5 -s 3 --samplers "top_k;typ_p;temperature" --typical 0.7 --min-p 0.9 --top-k 1)
[ -n "$a" ] && [ "$a" == "$b" ] && ok "--min-p / --top-k left out of the order do not run" || bad "left-out samplers acted: '$b' vs '$a'"
[ "$c" != "$a" ] && ok "--top-k 1 listed does run" || bad "top_k listed changed nothing: '$c'"

start_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w1 not ready: $(cat "$tmp/w1.log")"
E1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w2 not ready: $(cat "$tmp/w2.log")"
E2=$EP
rep=(-p "one two three one two three one two three one two three one two")
rep_base=$(T run -m "$M" --no-display-prompt --summary=0 "${rep[@]}" -t 2 "${S[@]}" 2>>"$tmp/run.log")
for spec in "--samplers temperature;min_p" "--sampling-seq xtkm --xtc-probability 0.7 --xtc-threshold 0.002" \
            "--samplers top_k;temperature;dry;penalties --dry-multiplier 2 --dry-allowed-length 1 --repeat-penalty 1.5"; do
  read -r -a X <<<"$spec"
  one=$(T run -m "$M" --no-display-prompt --summary=0 "${rep[@]}" -t 2 "${S[@]}" "${X[@]}" 2>>"$tmp/run.log")
  two=$(T run -m "$M" --no-display-prompt --summary=0 "${rep[@]}" -t 2 "${S[@]}" "${X[@]}" --workers "$E1,$E2" 2>>"$tmp/run.log")
  look=$(T run -m "$M" --no-display-prompt --summary=0 "${rep[@]}" -t 2 "${S[@]}" "${X[@]}" --lookup 4 2>>"$tmp/run.log")
  [ -n "$one" ] && [ "$one" != "$rep_base" ] && ok "$spec changes the text" || bad "$spec: the default chain's text '$one'"
  [ -n "$one" ] && [ "$one" == "$two" ] && ok "$spec over 2 workers == one process" \
    || bad "$spec over workers: '$two' vs '$one' ($(tail -2 "$tmp/run.log"))"
  [ "$look" == "$one" ] && ok "$spec with --lookup 4 == without" || bad "$spec --lookup 4: '$look' vs '$one'"
done
grep -q "Refuse\|protocol" "$tmp/w1.log" && bad "worker w1 refused something: $(grep -m1 'Refuse\|protocol' "$tmp/w1.log")"

# ---- the server ------------------------------------------------------------------------------
start_serve s1 -m "$M" -t 2 || die "serve did not start: $(cat "$tmp/s1.log")"
wait_health "$URL" 30 || die "serve not healthy: $(tail -5 "$tmp/s1.log")"
want=$(run "${S[@]}" --samplers "temperature;min_p" | utf8)
reply() {   # reply FILE: the text of a /completion, /v1/completions or chat reply
  python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); c=(o.get("choices") or [{}])[0]
print(o["content"] if "content" in o else c.get("text") if "text" in c else c["message"]["content"], end="")' "$1"
}
SJ='"temperature":2,"seed":7,"min_p":0.2'
C "$URL/completion" -d "{\"prompt\":\"$P\",\"n_predict\":24,$SJ,\"samplers\":[\"temperature\",\"min_p\"]}" >"$tmp/n1.json"
[ "$(reply "$tmp/n1.json")" == "$want" ] && ok "/completion samplers [temperature, min_p] == tern run --samplers" \
  || bad "/completion samplers: $(head -c 300 "$tmp/n1.json") vs '$want'"
C "$URL/v1/completions" -d "{\"prompt\":\"$P\",\"max_tokens\":24,$SJ,\"samplers\":\"tm\"}" >"$tmp/v1.json"
[ "$(reply "$tmp/v1.json")" == "$want" ] && ok "/v1/completions samplers \"tm\" == tern run --samplers" \
  || bad "/v1/completions samplers: $(head -c 300 "$tmp/v1.json") vs '$want'"
C "$URL/v1/completions" -d "{\"prompt\":\"$P\",\"max_tokens\":24,$SJ}" >"$tmp/v0.json"
[ "$(reply "$tmp/v0.json")" == "$(printf '%s\n' "$base" | utf8)" ] && ok "/v1/completions without samplers == the default chain" \
  || bad "/v1/completions default: $(head -c 300 "$tmp/v0.json")"
chat='"messages":[{"role":"user","content":"hi"}],"max_tokens":16'
C "$URL/v1/chat/completions" -d "{$chat,$SJ,\"samplers\":[\"temperature\",\"min_p\"]}" >"$tmp/c1.json"
C "$URL/v1/chat/completions" -d "{$chat,$SJ,\"samplers\":[\"min_p\",\"temperature\"]}" >"$tmp/c2.json"
C "$URL/v1/chat/completions" -d "{$chat,$SJ,\"samplers\":\"tm\"}" >"$tmp/c3.json"
grep -q '"choices"' "$tmp/c1.json" && [ "$(reply "$tmp/c1.json")" != "$(reply "$tmp/c2.json")" ] \
  && [ "$(reply "$tmp/c1.json")" == "$(reply "$tmp/c3.json")" ] \
  && ok "/v1/chat/completions: the order changes the reply, names == letters" || bad "chat samplers: $(head -c 300 "$tmp/c1.json")"
# lenient as llama-server: unknown names (and letters) are skipped with a warning naming them,
# names match in any case; nothing known left is still a 400
C "$URL/completion" -d "{\"prompt\":\"$P\",\"n_predict\":24,$SJ,\"samplers\":[\"TEMPERATURE\",\"foo_bar\",\"min_p\",\"infill\"]}" >"$tmp/n2.json"
[ "$(reply "$tmp/n2.json")" == "$want" ] && ok "/completion samplers [TEMPERATURE, foo_bar, min_p, infill] == [temperature, min_p]" \
  || bad "lenient samplers: $(head -c 300 "$tmp/n2.json") vs '$want'"
grep -q "skipped 2 unknown names: 'foo_bar', 'infill'" "$tmp/s1.log" && ok "the skipped names are logged as a warning" \
  || bad "no warning naming foo_bar: $(grep -i samplers "$tmp/s1.log" | tail -2)"
C "$URL/v1/completions" -d "{\"prompt\":\"$P\",\"max_tokens\":24,$SJ,\"samplers\":\"tzm\"}" >"$tmp/v2.json"
[ "$(reply "$tmp/v2.json")" == "$want" ] && ok "/v1/completions samplers \"tzm\" == \"tm\" (letter z skipped)" \
  || bad "lenient letters: $(head -c 300 "$tmp/v2.json") vs '$want'"
grep -q "skipped 1 unknown name: 'z'" "$tmp/s1.log" && ok "the skipped letter is logged" || bad "no warning naming z"
for b in '"samplers":["foo","b a r"]' '"samplers":"zq"' '"samplers":[]' '"samplers":{}' '"samplers":["infill"]' '"samplers":["top_k",5]'; do
  for ep in completion v1/completions v1/chat/completions; do
    if [ "$ep" = v1/chat/completions ]; then body=$chat; else body="\"prompt\":\"x\""; fi
    c=$(C -o "$tmp/e.json" -w '%{http_code}' "$URL/$ep" -d "{$body,$b}")
    [ "$c" = 400 ] && grep -q 'samplers' "$tmp/e.json" && ok "$ep {$b}: 400 naming samplers" || bad "$ep {$b}: $c $(cat "$tmp/e.json")"
  done
done
C "$URL/props" >"$tmp/props.json"
python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["default_generation_settings"]["params"]["samplers"]
sys.exit(p != ["penalties","dry","top_n_sigma","top_k","typ_p","top_p","min_p","xtc","temperature"])' "$tmp/props.json" \
  && ok "/props shows the default order" || bad "/props samplers: $(head -c 600 "$tmp/props.json")"

start_serve s2 -m "$M" -t 2 --samplers "temperature;min_p" --temp 2 --min-p 0.2 || die "serve s2 did not start: $(cat "$tmp/s2.log")"
wait_health "$URL" 30 || die "serve s2 not healthy: $(tail -5 "$tmp/s2.log")"
C "$URL/props" >"$tmp/props2.json"
python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["default_generation_settings"]["params"]["samplers"]
sys.exit(p != ["temperature","min_p"])' "$tmp/props2.json" && ok "serve --samplers: /props shows that order" \
  || bad "/props of serve --samplers: $(head -c 600 "$tmp/props2.json")"
C "$URL/v1/completions" -d "{\"prompt\":\"$P\",\"max_tokens\":24,\"seed\":7}" >"$tmp/d1.json"
[ "$(reply "$tmp/d1.json")" == "$want" ] && ok "serve --samplers is the requests' default order" \
  || bad "serve --samplers default: $(head -c 300 "$tmp/d1.json") vs '$want'"

# ---- bad flags -----------------------------------------------------------------------------------
for bf in "--samplers top_k;foo" "--sampling-seq kq" "--samplers infill" "--samplers ;"; do
  read -r -a X <<<"$bf"
  T run -m "$M" -p x -n 1 "${X[@]}" >/dev/null 2>"$tmp/err.txt"; rc=$?
  [ $rc -ne 0 ] && [ "$(grep -c . "$tmp/err.txt")" -eq 1 ] && grep -q -- "${X[0]}" "$tmp/err.txt" \
    && ok "$bf refused: $(cat "$tmp/err.txt")" || bad "$bf (rc $rc): $(cat "$tmp/err.txt")"
done
T run -m "$M" -p x -n 1 --samplers top_k --sampling-seq k >/dev/null 2>"$tmp/err.txt"; rc=$?
[ $rc -ne 0 ] && grep -q "not both" "$tmp/err.txt" && ok "--samplers with --sampling-seq refused" || bad "both (rc $rc): $(cat "$tmp/err.txt")"

finish 30
