#!/usr/bin/env bash
# OpenAI's sampling extras end to end on a tiny generated model: a logit bias of +100 makes greedy
# decoding repeat that token (`tern run -l`, and the server's logit_bias, both spellings); -100 on
# the greedy token changes the text; frequency and presence penalties change a greedy run and a
# penalised sampled run gives the same text over two workers as in one process (the params cross
# the wire). Bad values (CLI and HTTP) are one clear error, never ignored.
source "$(dirname "$0")/lib.bash"
T() { timeout 120 "$TERN" "$@"; }
C() { curl -s --max-time 60 -H 'Content-Type: application/json' "$@"; }

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 21
run() { T run -m "$M" --no-display-prompt --summary=0 -p "Once upon a time" -t 2 "$@" 2>>"$tmp/run.log"; }
ids() { T tokenize -m "$M" -p "$1" --ids --no-bos 2>>"$tmp/run.log" | tr -d "[] " ; }

# ---- logit bias ----------------------------------------------------------------------------
base=$(run -n 12 --temp 0)
tok=$(ids " the" | cut -d, -f1)
[ -n "$tok" ] || die "tokenize gave nothing: $(tail -2 "$tmp/run.log")"
piece=$(T detokenize -m "$M" "$tok" 2>/dev/null || true)
out=$(run -n 6 --temp 0 -l "$tok+100")
want=""; for _ in 1 2 3 4 5 6; do want+=$piece; done
[ -n "$piece" ] && [ "$out" == "$want" ] && ok "run -l $tok+100: the token six times ('$out')" \
  || bad "run -l $tok+100: '$out', want '$want' (piece '$piece')"
first=$(T run -m "$M" --no-display-prompt --summary=0 -p "Once upon a time" -t 2 -n 1 --temp 0 2>/dev/null)
ftok=$(ids "$first" | cut -d, -f1)
out=$(run -n 12 --temp 0 -l "$ftok-100")
[ "$out" != "$base" ] && [ "${out:0:${#first}}" != "$first" ] && ok "run -l $ftok-100: the greedy first token is gone" \
  || bad "run -l $ftok-100: '$out' vs '$base' (first '$first')"

# ---- penalties ---------------------------------------------------------------------------------
fp=$(run -n 24 --temp 0 --frequency-penalty 3)
pp=$(run -n 24 --temp 0 --presence-penalty 3)
base24=$(run -n 24 --temp 0)
[ "$fp" != "$base24" ] && ok "--frequency-penalty 3 changes the greedy text" || bad "--frequency-penalty: same text '$fp'"
[ "$pp" != "$base24" ] && ok "--presence-penalty 3 changes the greedy text" || bad "--presence-penalty: same text '$pp'"
start_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w1 not ready: $(cat "$tmp/w1.log")"
E1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w2 not ready: $(cat "$tmp/w2.log")"
E2=$EP
SP=(-n 24 --temp 1 -s 7 --frequency-penalty 0.7 --presence-penalty 0.4 -l "$tok+3,$ftok-2")
a=$(run "${SP[@]}")
b=$(run "${SP[@]}" --workers "$E1,$E2")
[ -n "$a" ] && [ "$a" == "$b" ] && ok "penalised, biased sampling over 2 workers == one process" \
  || bad "over workers: '$b' vs '$a' ($(tail -2 "$tmp/run.log"))"

# ---- the server ------------------------------------------------------------------------------
start_serve s1 -m "$M" -t 2 || die "serve did not start: $(cat "$tmp/s1.log")"
wait_health "$URL" 30 || die "serve not healthy: $(tail -5 "$tmp/s1.log")"
text() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["choices"][0]["text"], end="")' "$1"; }
C "$URL/v1/completions" -d "{\"prompt\":\"Once upon a time\",\"max_tokens\":6,\"temperature\":0,\"logit_bias\":{\"$tok\":100}}" >"$tmp/r1.json"
[ "$(text "$tmp/r1.json")" == "$want" ] && ok "serve logit_bias {\"$tok\": 100}" || bad "serve logit_bias: $(cat "$tmp/r1.json")"
C "$URL/v1/completions" -d "{\"prompt\":\"Once upon a time\",\"max_tokens\":6,\"temperature\":0,\"logit_bias\":[[$tok,100]]}" >"$tmp/r2.json"
[ "$(text "$tmp/r2.json")" == "$want" ] && ok "serve logit_bias [[$tok, 100]]" || bad "serve logit_bias pairs: $(cat "$tmp/r2.json")"
for pen in frequency_penalty presence_penalty; do   # (the texts are random bytes: compared as the server gives them)
  C "$URL/v1/completions" -d "{\"prompt\":\"Once upon a time\",\"max_tokens\":24,\"temperature\":0}" >"$tmp/r0.json"
  C "$URL/v1/completions" -d "{\"prompt\":\"Once upon a time\",\"max_tokens\":24,\"temperature\":0,\"$pen\":3}" >"$tmp/r3.json"
  [ "$(text "$tmp/r3.json")" != "$(text "$tmp/r0.json")" ] && ok "serve $pen 3 changes the greedy text" \
    || bad "serve $pen: same text $(head -c 300 "$tmp/r3.json")"
done
c=$(C -o "$tmp/e.json" -w '%{http_code}' "$URL/v1/completions" -d '{"prompt":"a","logit_bias":{"99999999":5}}')
[ "$c" = 400 ] && grep -q 'outside the vocabulary' "$tmp/e.json" && ok "serve: logit_bias token outside the vocabulary is a 400" \
  || bad "serve logit_bias out of range: $c $(cat "$tmp/e.json")"

# ---- bad flags -----------------------------------------------------------------------------------
for bad_l in "12x" "12+500" "abc" "12+1,"; do
  T run -m "$M" -p x -n 1 -l "$bad_l" >/dev/null 2>"$tmp/err.txt"; rc=$?
  [ $rc -ne 0 ] && [ "$(grep -c . "$tmp/err.txt")" -eq 1 ] && grep -q "logit-bias" "$tmp/err.txt" \
    && ok "-l '$bad_l' refused: $(cat "$tmp/err.txt")" || bad "-l '$bad_l' (rc $rc): $(cat "$tmp/err.txt")"
done
T run -m "$M" -p x -n 1 -l "999999+1" >/dev/null 2>"$tmp/err.txt"; rc=$?
[ $rc -ne 0 ] && grep -q "outside the vocabulary" "$tmp/err.txt" && ok "-l with a token outside the vocabulary refused" \
  || bad "-l 999999+1 (rc $rc): $(cat "$tmp/err.txt")"

finish 30
