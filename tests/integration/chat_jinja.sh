#!/usr/bin/env bash
# --jinja / --chat-template / --chat-template-file on `tern chat` and `tern serve` with generated
# models: the real templates of tests/data/jinja (BitNet b1.58 2B-4T's, Llama 3's) rendered by the
# interpreter give the prompt of the family formatter (same conversation token counts, same greedy
# replies); the model's own template in the GGUF (Llama 3 vocabulary with a tokenizer_config.json,
# when $HOME/.cache/tern/llama3 has it); clear one-line errors: --jinja without a template, a
# template that does not parse (line:col), one that refuses the conversation (raise_exception:
# HTTP 400 with its message), a text tern cannot match without --jinja; `tern info` describes the
# GGUF's template.
source "$(dirname "$0")/lib.bash"
src=${TERN_SRC:?TERN_SRC not set}
data=$src/tests/data/jinja
M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 11
chat_in=$'Hello there\nWhat is two plus two?\n'

# chat_run NAME ARGS...: two turns over a pipe, greedy; stdout to $tmp/NAME.out, the debug log's
# "tokens in the conversation" lines to $tmp/NAME.tok; returns tern's status
chat_run() {
  local name=$1 rc
  shift
  printf '%s' "$chat_in" | timeout 60 "$TERN" chat -m "$M" --temp 0 -n 12 -t 2 -v "$@" >"$tmp/$name.out" 2>"$tmp/$name.log"
  rc=$?
  grep -o 'chat: [0-9]* tokens in the conversation.*' "$tmp/$name.log" >"$tmp/$name.tok"
  return $rc
}
same() {   # same A B WHAT
  if cmp -s "$tmp/$1.out" "$tmp/$2.out" && cmp -s "$tmp/$1.tok" "$tmp/$2.tok" && [ -s "$tmp/$1.tok" ]; then
    ok "$3 ($(tr '\n' ' ' <"$tmp/$1.tok"))"
  else
    bad "$3: $(cat "$tmp/$1.tok" "$tmp/$2.tok" | tr '\n' ' ')"
  fi
}

chat_run family_bitnet || bad "chat (bitnet family) failed: $(tail -2 "$tmp/family_bitnet.log")"
chat_run jinja_bitnet --jinja --chat-template-file "$data/bitnet-b1.58-2B-4T.jinja" \
  || bad "chat --jinja failed: $(tail -2 "$tmp/jinja_bitnet.log")"
grep -q 'template jinja' "$tmp/jinja_bitnet.log" && ok "chat -v names the jinja template" || bad "chat -v: no 'template jinja'"
same family_bitnet jinja_bitnet "chat: 2B-4T's template through --jinja == the bitnet formatter"
chat_run family_llama3 --chat-template llama3 || bad "chat --chat-template llama3 failed"
chat_run jinja_llama3 --jinja --chat-template-file "$data/llama3-8b-instruct.jinja" || bad "chat --jinja llama3 failed"
same family_llama3 jinja_llama3 "chat: Llama 3's template through --jinja == the llama3 formatter"
chat_run text_llama3 --chat-template "$(cat "$data/llama3-8b-instruct.jinja")"   # a text, no --jinja: matched to llama3
same family_llama3 text_llama3 "chat: --chat-template TEXT without --jinja is matched to its family"

# errors: one line, non-zero status
expect_fail() {   # expect_fail WHAT PATTERN ARGS...
  local what=$1 pat=$2 out rc
  shift 2
  out=$(printf 'Hi\n' | timeout 60 "$TERN" chat -m "$M" -n 2 -t 2 "$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 0 ] && grep -q -- "$pat" <<<"$out"; then ok "$what: $(tail -1 <<<"$out")"
  else bad "$what: rc $rc: $out"; fi
}
expect_fail "chat --jinja, model without a template" "no chat template" --jinja
expect_fail "chat --jinja, template that does not parse" "line 1:" --jinja --chat-template '{% for m in messages %}{{ m.content }'
expect_fail "chat --jinja, template that refuses" "System role not supported" --jinja \
  --chat-template-file "$data/gemma-7b-it.jinja" -sys "be brief"
expect_fail "chat --chat-template-file missing" "cannot open" --jinja --chat-template-file "$tmp/nope.jinja"
expect_fail "chat unknown template text without --jinja" "use --jinja" --chat-template '{{ nothing known }}'

# the model's own template, from the GGUF (Llama 3 vocabulary + a tokenizer_config.json)
l3=$HOME/.cache/tern/llama3/tokenizer.json
if [ -r "$l3" ]; then
  mkdir -p "$tmp/l3"
  ln -s "$l3" "$tmp/l3/tokenizer.json"
  python3 - "$data/llama3-8b-instruct.jinja" "$tmp/l3/tokenizer_config.json" <<'PY'
import json, sys
t = open(sys.argv[1], encoding="utf-8").read()
json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": t}, open(sys.argv[2], "w"))
PY
  make_model "$tmp/l3.gguf" --preset tiny --arch llama --type tq2_0 --vocab "$tmp/l3/tokenizer.json" --seed 5
  M="$tmp/l3.gguf"
  chat_run l3_family || bad "chat (llama 3 vocabulary) failed: $(tail -2 "$tmp/l3_family.log")"
  chat_run l3_jinja --jinja || bad "chat --jinja (model's template) failed: $(tail -2 "$tmp/l3_jinja.log")"
  grep -q 'template llama3' "$tmp/l3_family.log" && ok "the GGUF's template is detected as llama3 without --jinja" \
    || bad "family of the GGUF's template: $(grep 'chat: template' "$tmp/l3_family.log")"
  same l3_family l3_jinja "chat --jinja renders the GGUF's own template == llama3 formatter (BOS once)"
  info=$("$TERN" info "$M" 2>&1 | grep '^chat template:')
  grep -q 'formatted as llama3; --jinja: renders it' <<<"$info" && ok "info: $info" || bad "info chat template line: '$info'"
  M="$tmp/tiny.gguf"
else
  echo "skipped: the model's own template (no $l3)"
fi

# serve: the same prompt as the formatter; a refused conversation is a 400 naming the reason
req='{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello"}],"max_tokens":8,"temperature":0}'
start_serve s1 -m "$M" -t 2 -c 1024 || die "serve did not start: $(cat "$tmp/s1.log")"
wait_health "$URL" 30 || die "serve not healthy: $(tail -5 "$tmp/s1.log")"
r1=$(curl -s --max-time 60 "$URL/v1/chat/completions" -d "$req")
start_serve s2 -m "$M" -t 2 -c 1024 --jinja --chat-template-file "$data/bitnet-b1.58-2B-4T.jinja" \
  || die "serve --jinja did not start: $(cat "$tmp/s2.log")"
wait_health "$URL" 30 || die "serve --jinja not healthy: $(tail -5 "$tmp/s2.log")"
r2=$(curl -s --max-time 60 "$URL/v1/chat/completions" -d "$req")
c1=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["choices"][0]["message"]["content"], d["usage"]["prompt_tokens"])' "$r1" 2>/dev/null)
c2=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["choices"][0]["message"]["content"], d["usage"]["prompt_tokens"])' "$r2" 2>/dev/null)
[ -n "$c1" ] && [ "$c1" = "$c2" ] && ok "serve --jinja: the same reply and prompt tokens as the formatter" \
  || bad "serve --jinja vs formatter: '$r1' vs '$r2'"
grep -q 'chat template jinja' "$tmp/s2.log" && ok "serve logs the chat template" || bad "serve log: no 'chat template jinja'"
start_serve s3 -m "$M" -t 2 -c 1024 --jinja --chat-template-file "$data/gemma-7b-it.jinja" \
  || die "serve gemma did not start: $(cat "$tmp/s3.log")"
wait_health "$URL" 30 || die "serve gemma not healthy: $(tail -5 "$tmp/s3.log")"
code=$(curl -s -o "$tmp/r3.json" -w '%{http_code}' --max-time 60 "$URL/v1/chat/completions" -d "$req")
[ "$code" = 400 ] && grep -q "System role not supported" "$tmp/r3.json" \
  && ok "serve: a template's raise_exception is a 400: $(cat "$tmp/r3.json")" || bad "serve refused: $code $(cat "$tmp/r3.json")"
code=$(curl -s -o "$tmp/r4.json" -w '%{http_code}' --max-time 60 "$URL/v1/chat/completions" \
  -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}')
[ "$code" = 200 ] && ok "serve: the same server answers a conversation the template accepts" || bad "serve gemma ok case: $code"
out=$(timeout 30 "$TERN" serve -m "$M" --port 0 --jinja 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "no chat template" <<<"$out" && ok "serve --jinja without a template: $(grep -m1 "no chat template" <<<"$out")" \
  || bad "serve --jinja without template: rc $rc: $out"
finish 20
