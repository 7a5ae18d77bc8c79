#!/usr/bin/env bash
# OpenAI's sampling extras end to end on a tiny generated model: a logit bias of +100 makes greedy
# decoding repeat that token (`tern run -l`, and the server's logit_bias, both spellings); -100 on
# the greedy token changes the text; frequency and presence penalties change a greedy run and a
# penalised sampled run gives the same text over two workers as in one process (the params cross
# the wire). llama.cpp's other samplers (typical, top-n-sigma, XTC, dynamic temperature, mirostat,
# DRY) each change the sampled text and give the same text over two workers as in one process;
# `--lookup 4` with DRY / XTC / mirostat gives the text without it. Bad values (CLI and HTTP) are
# one clear error, never ignored.
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

# ---- llama.cpp's other samplers -----------------------------------------------------------------
plain=$(run -n 24 --temp 1 -s 11)
rep=(-p "one two three one two three one two three one two three one two")
for spec in "--typical 0.6" "--top-nsigma 0.5" "--xtc-probability 0.7 --xtc-threshold 0.002" \
            "--dynatemp-range 0.9 --dynatemp-exp 0.5" "--mirostat 1 --mirostat-ent 3" \
            "--mirostat 2 --mirostat-ent 3 --mirostat-lr 0.3" \
            "--dry-multiplier 2 --dry-base 1.75 --dry-allowed-length 1 --dry-penalty-last-n 64"; do
  read -r -a X <<<"$spec"
  if [[ $spec == --dry* ]]; then
    base_t=$(run "${rep[@]}" -n 24 --temp 0); a=$(run "${rep[@]}" -n 24 --temp 0 "${X[@]}")
    b=$(run "${rep[@]}" -n 24 --temp 0 "${X[@]}" --workers "$E1,$E2")
    l=$(run "${rep[@]}" -n 24 --temp 0 "${X[@]}" --lookup 4)
  else
    base_t=$plain; a=$(run -n 24 --temp 1 -s 11 "${X[@]}"); b=$(run -n 24 --temp 1 -s 11 "${X[@]}" --workers "$E1,$E2")
    l=$(run -n 24 --temp 1 -s 11 "${X[@]}" --lookup 4)
  fi
  [ -n "$a" ] && [ "$a" != "$base_t" ] && ok "$spec changes the text" || bad "$spec: the same text as without ('$a')"
  [ -n "$a" ] && [ "$a" == "$b" ] && ok "$spec over 2 workers == one process" \
    || bad "$spec over workers: '$b' vs '$a' ($(tail -2 "$tmp/run.log"))"
  [ "$l" == "$a" ] && ok "$spec with --lookup 4 == without" || bad "$spec --lookup 4: '$l' vs '$a'"
done
DX=(-n 32 --temp 1 -s 5 --dry-multiplier 1.5 --dry-allowed-length 1 --xtc-probability 0.5 --xtc-threshold 0.002 \
    --dry-sequence-breaker "," --dry-sequence-breaker " two")
a=$(run "${rep[@]}" "${DX[@]}"); b=$(run "${rep[@]}" "${DX[@]}" --lookup 4)
c=$(run "${rep[@]}" "${DX[@]}" --workers "$E1,$E2" --lookup 4)
[ -n "$a" ] && [ "$a" == "$b" ] && [ "$a" == "$c" ] && ok "DRY + XTC with breakers: --lookup 4 (and over workers) == without" \
  || bad "DRY + XTC --lookup 4: '$b' / workers '$c' vs '$a'"
grep -q "Refuse\|protocol" "$tmp/w1.log" && bad "worker w1 refused something: $(grep -m1 'Refuse\|protocol' "$tmp/w1.log")"

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

LS='"typical_p":0.6,"top_n_sigma":2,"xtc_probability":0.5,"xtc_threshold":0.002,"dynatemp_range":0.3,"dry_multiplier":0.8,"dry_sequence_breakers":["\\n",","]'
for ep in completions chat/completions; do
  if [ "$ep" = completions ]; then body='"prompt":"Once upon a time"'; else body='"messages":[{"role":"user","content":"hi"}]'; fi
  C "$URL/v1/$ep" -d "{$body,\"max_tokens\":12,\"temperature\":1,\"seed\":3,$LS}" >"$tmp/l1.json"
  C "$URL/v1/$ep" -d "{$body,\"max_tokens\":12,\"temperature\":1,\"seed\":3,$LS}" >"$tmp/l2.json"
  grep -q '"choices"' "$tmp/l1.json" && cmp -s <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["choices"][0]; print(c.get("text") or c["message"]["content"])' "$tmp/l1.json") \
      <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["choices"][0]; print(c.get("text") or c["message"]["content"])' "$tmp/l2.json") \
    && ok "serve /v1/$ep with llama.cpp's samplers: a reply, the same for the same seed" || bad "serve $ep samplers: $(head -c 300 "$tmp/l1.json")"
  C "$URL/v1/$ep" -d "{$body,\"mirostat\":2,\"mirostat_tau\":4,\"max_tokens\":8}" >"$tmp/l3.json"
  grep -q '"choices"' "$tmp/l3.json" && ok "serve /v1/$ep mirostat 2" || bad "serve $ep mirostat: $(head -c 300 "$tmp/l3.json")"
  for b in '"mirostat":3' '"typical_p":2' '"dry_sequence_breakers":[]' '"xtc_threshold":-1'; do
    c=$(C -o "$tmp/e.json" -w '%{http_code}' "$URL/v1/$ep" -d "{$body,$b}")
    [ "$c" = 400 ] && ok "serve $ep {$b}: 400" || bad "serve $ep {$b}: $c $(cat "$tmp/e.json")"
  done
done
C "$URL/props" >"$tmp/props.json"
grep -q '"dry_multiplier"' "$tmp/props.json" && grep -q '"mirostat_tau"' "$tmp/props.json" && ok "/props lists the samplers' defaults" \
  || bad "/props: $(head -c 400 "$tmp/props.json")"

# ---- bad flags -----------------------------------------------------------------------------------
for bf in "--mirostat 3" "--typical 2" "--xtc-probability -1" "--dry-penalty-last-n -5" "--top-nsigma x"; do
  read -r -a X <<<"$bf"
  T run -m "$M" -p x -n 1 "${X[@]}" >/dev/null 2>"$tmp/err.txt"; rc=$?
  [ $rc -ne 0 ] && [ "$(grep -c . "$tmp/err.txt")" -eq 1 ] && grep -q -- "${X[0]}" "$tmp/err.txt" \
    && ok "$bf refused: $(cat "$tmp/err.txt")" || bad "$bf (rc $rc): $(cat "$tmp/err.txt")"
done
for bad_l in "12x" "12+500" "abc" "12+1,"; do
  T run -m "$M" -p x -n 1 -l "$bad_l" >/dev/null 2>"$tmp/err.txt"; rc=$?
  [ $rc -ne 0 ] && [ "$(grep -c . "$tmp/err.txt")" -eq 1 ] && grep -q "logit-bias" "$tmp/err.txt" \
    && ok "-l '$bad_l' refused: $(cat "$tmp/err.txt")" || bad "-l '$bad_l' (rc $rc): $(cat "$tmp/err.txt")"
done
T run -m "$M" -p x -n 1 -l "999999+1" >/dev/null 2>"$tmp/err.txt"; rc=$?
[ $rc -ne 0 ] && grep -q "outside the vocabulary" "$tmp/err.txt" && ok "-l with a token outside the vocabulary refused" \
  || bad "-l 999999+1 (rc $rc): $(cat "$tmp/err.txt")"

finish 30
