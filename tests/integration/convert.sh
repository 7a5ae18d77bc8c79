#!/usr/bin/env bash
# convert: the real `tern` binary converts tiny synthetic Hugging Face checkpoints of every kind
# (bitnet-b1.58 relu², 1bitLLM-style bitnet with a SentencePiece tokenizer.model, llama, packed
# uint8 + weight_scale) written by `test_convert --make-hf`; `tern info` describes each result and
# `tern run --temp 0` generates from it, twice with the same output. Then `tern quantize` to
# tq2_0 with a q8_0 head runs too. The 2B-4T-like checkpoint uses the real Llama 3
# tokenizer.json when $HOME/.cache/tern/llama3 has it. Bad input: exit 1, one line on stderr.
set -euo pipefail
tern=${TERN_BIN:?TERN_BIN is not set (ctest sets it)}
gen=${TERN_BUILD:?TERN_BUILD is not set (ctest sets it)}/test_convert
[ -x "$gen" ] || { echo "FAIL: $gen is not built (make test_convert)" >&2; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/tern_convert_XXXXXX")
trap 'rm -rf "$dir"' EXIT
export TERN_PROGRESS=0
fail() { echo "FAIL: $*" >&2; exit 1; }
pass=0
llama3=$HOME/.cache/tern/llama3/tokenizer.json

run_twice() {  # model: generates 8 tokens twice at temperature 0; the outputs must agree
  local m=$1
  timeout 120 "$tern" run -m "$m" -p "hello the world" -n 8 --temp 0 >"$dir/out1" 2>"$dir/err" \
    || fail "run $m: $(tail -3 "$dir/err")"
  timeout 120 "$tern" run -m "$m" -p "hello the world" -n 8 --temp 0 >"$dir/out2" 2>>"$dir/err" \
    || fail "second run $m: $(tail -3 "$dir/err")"
  [ -s "$dir/out1" ] || fail "run $m printed nothing"
  cmp -s "$dir/out1" "$dir/out2" || fail "run $m: two greedy runs differ"
}

for spec in b158:i2_s:bitnet-b1.58 bitnet:tq2_0:bitnet llama:tq1_0:llama packed-b158:i2_s:bitnet-b1.58 \
            packed-llama:tq2_0:llama; do
  IFS=: read -r v type arch <<<"$spec"
  tok=()
  if [ "$v" = b158 ] && [ -r "$llama3" ]; then tok=("$llama3"); fi
  "$gen" --make-hf "$dir/hf-$v" "$v" "${tok[@]}" || fail "make-hf $v"
  m=$dir/$v.gguf
  "$tern" convert "$dir/hf-$v" -o "$m" --type "$type" 2>"$dir/err" || fail "convert $v: $(cat "$dir/err")"
  [ ! -e "$m.tmp" ] || fail "convert $v left $m.tmp"
  "$tern" info "$m" >"$dir/info" || fail "info $v"
  grep -q "^architecture:  $arch\$" "$dir/info" || fail "$v: $(grep architecture "$dir/info")"
  grep -Eq "^  blk\.0\.attn_q\.weight +$type " "$dir/info" || fail "$v: attn_q is not $type"
  run_twice "$m"
  pass=$((pass + 1))
done
[ -r "$llama3" ] && grep -q "^vocab: .*128256 tokens" <("$tern" info "$dir/b158.gguf") && echo "(b158 used the Llama 3 tokenizer)"

# quantize: i2_s → tq2_0 with a q8_0 head (the tied head becomes output.weight), and it runs
q=$dir/b158-tq2-q8.gguf
"$tern" quantize "$dir/b158.gguf" "$q" tq2_0 --head q8_0 2>"$dir/err" || fail "quantize: $(cat "$dir/err")"
"$tern" info "$q" >"$dir/info" || fail "info $q"
grep -Eq "^  output\.weight +q8_0 " "$dir/info" || fail "no q8_0 output.weight: $(grep output "$dir/info")"
grep -Eq "^  blk\.1\.ffn_down\.weight +tq2_0 " "$dir/info" || fail "ffn_down is not tq2_0"
run_twice "$q"
pass=$((pass + 1))

# bad input: one line on stderr, exit 1, no file left
one_line_fail() {  # expected-text command...
  local want=$1; shift
  if "$@" 2>"$dir/err" >/dev/null; then fail "accepted: $*"; fi
  [ "$(wc -l <"$dir/err")" -eq 1 ] && grep -q -- "$want" "$dir/err" || fail "$*: $(cat "$dir/err")"
}
one_line_fail "cannot open directory" "$tern" convert "$dir/nope" -o "$dir/x.gguf"
one_line_fail "is not i2_s, tq2_0, tq1_0 or f16" "$tern" convert "$dir/hf-llama" -o "$dir/x.gguf" --type q4_0
printf '\xff\xff\xff\xff\x00\x00\x00\x00{}' >"$dir/hf-llama/model.safetensors"
one_line_fail "runs past the end of the file" "$tern" convert "$dir/hf-llama" -o "$dir/x.gguf"
[ ! -e "$dir/x.gguf" ] && [ ! -e "$dir/x.gguf.tmp" ] || fail "a refused convert left a file"
one_line_fail "is not i2_s, tq2_0, tq1_0 or f16" "$tern" quantize "$dir/b158.gguf" "$dir/y.gguf" q4_k
one_line_fail "magic" "$tern" quantize "$dir/hf-llama/config.json" "$dir/y.gguf" i2_s
# disk full: a 256 KiB tmpfs cannot hold the output — one clear line, nothing left behind
# (needs root to mount; skipped with a message otherwise)
full="$dir/full"; mkdir -p "$full"
if mount -t tmpfs -o size=256k tmpfs "$full" 2>/dev/null; then
  "$gen" --make-hf "$dir/hf-df" llama >/dev/null 2>&1 || fail "make-hf for the disk-full test"
  if "$tern" convert "$dir/hf-df" -o "$full/x.gguf" --type f16 2>"$dir/err" >/dev/null; then
    umount "$full"; fail "convert onto a full disk succeeded"; fi
  left=$(ls -A "$full")
  umount "$full"
  [ "$(grep -c '^tern convert:' "$dir/err")" -eq 1 ] && grep '^tern convert:' "$dir/err" | grep -qi "space\|write" && [ -z "$left" ] \
    || fail "disk full: '$(cat "$dir/err")', left: '$left'"
  echo "disk full: $(grep '^tern convert:' "$dir/err")"
else
  echo "disk-full check skipped: cannot mount a tmpfs here"
fi
"$tern" convert --help | grep -q -- "--type" || fail "convert --help"
"$tern" quantize --help | grep -q -- "--head" || fail "quantize --help"
pass=$((pass + 1))
echo "$pass passed, 0 failed"
