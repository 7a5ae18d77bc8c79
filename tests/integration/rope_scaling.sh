#!/usr/bin/env bash
# RoPE scaling (context extension) with real processes on loopback: models with YaRN keys and with
# llama3 frequency factors (rope_freqs.weight) give the same greedy tokens in one process, through
# 2 ZeroMQ workers reading their own copy, and through workers that fetch their layers (and the
# factors) from the coordinator; a CLI override (--rope-scaling, --rope-scale, --yarn-*) changes the
# tokens, and the same override over the cluster (LoadShard.rope) gives the one-process tokens;
# tern info prints the scaling; bad flags and a corrupt scaling key fail with a one-line error.
# Saved KV caches record the RoPE their keys were rotated with: a slot saved by a server with
# --rope-freq-base restores into one with the same flag (the next request starts after it, with a
# fresh request's text) and is refused with 400 and a one-line message naming freq_base by one with
# another (or none); tern run --prompt-cache likewise restores or fails in one line. tern info on a
# saved file prints its header (RoPE record: yarn's fields, frequency factors); a truncated one
# fails in one line.
source "$(dirname "$0")/lib.bash"

Y="$tmp/yarn.gguf"
make_model "$Y" --arch llama --preset tiny --layers 3 --type tq2_0 --seed 21 --rope-scaling yarn --rope-scale 4 \
  --yarn-orig-ctx 16
L3="$tmp/l3.gguf"
make_model "$L3" --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s --seed 22 --rope-freqs 8 --yarn-orig-ctx 64
P="$tmp/plain.gguf"
make_model "$P" --arch llama --preset tiny --layers 3 --type tq2_0 --seed 21

info=$("$TERN" info "$Y" 2>&1)
echo "$info" | grep -q "^rope scaling:  yarn factor 4, orig ctx 16" && ok "info: $(echo "$info" | grep '^rope scaling')" \
  || bad "info of a yarn model: $info"
info=$("$TERN" info "$L3" 2>&1)
echo "$info" | grep -q "^rope scaling:  none, frequency factors rope_freqs.weight (32)" && ok "info: llama3 factors" \
  || bad "info of a llama3 model: $(echo "$info" | grep rope)"

run() { local m=$1; shift; timeout 120 "$TERN" run -m "$m" --no-display-prompt --summary=0 \
  -p "Hello world, this is tern with a longer prompt" -n 24 --temp 0 "$@" 2>>"$tmp/run.log"; }

for m in "$Y" "$L3"; do
  start_worker "a$(basename "$m" .gguf)" "$LOOPBACK_ANY" -m "$m" -t 1; A=$EP
  start_worker "b$(basename "$m" .gguf)" "$LOOPBACK_ANY" -m "$m" -t 2; B=$EP
  [ -n "$A" ] && [ -n "$B" ] || { cat "$tmp"/*.log; die "workers did not start"; }
  name=$(basename "$m")
  ref=$(run "$m" -t 2)
  [ -n "$ref" ] || bad "$name: one process printed nothing"
  got=$(run "$m" --workers "$A,$B")
  [ "$got" == "$ref" ] && ok "$name: 2 workers == one process" || bad "$name: 2 workers '$got' != '$ref'"
  got=$(run "$m" --stages 2 -t 1)
  [ "$got" == "$ref" ] && ok "$name: 2 in-process stages == one process" || bad "$name: --stages 2 '$got' != '$ref'"
  # overrides: they change the tokens, and a cluster given the same flags follows them
  for ov in "--rope-scaling none" "--rope-scale 16 --yarn-orig-ctx 32" "--rope-scaling yarn --rope-scale 8 --yarn-attn-factor 1.4" \
            "--rope-freq-base 10000 --yarn-ext-factor 0.5 --yarn-beta-fast 16 --yarn-beta-slow 2"; do
    one=$(run "$m" -t 2 $ov)
    if [ "$m" == "$L3" ] && [ "$ov" == "--rope-scaling none" ]; then   # no scaling type to turn off: the factors stay
      [ "$one" == "$ref" ] && ok "$name: '$ov' keeps the frequency factors" || bad "$name: '$ov' changed the tokens"
    else
      [ -n "$one" ] && [ "$one" != "$ref" ] && ok "$name: '$ov' changes the tokens" || bad "$name: '$ov' gave '$one' (plain '$ref')"
    fi
    got=$(run "$m" --workers "$A,$B" $ov)
    [ "$got" == "$one" ] && ok "$name: '$ov' on 2 workers == one process" || bad "$name: '$ov' on 2 workers '$got' != '$one'"
  done
done

# the plain model's file with the yarn model's flags == the yarn model (same weights and seed)
ref=$(run "$Y" -t 2)
got=$(run "$P" -t 2 --rope-scaling yarn --rope-scale 4 --yarn-orig-ctx 16)
[ "$got" == "$ref" ] && ok "plain file + yarn flags == the yarn file" || bad "plain + flags '$got' != yarn file '$ref'"

# workers without the model fetch the layers and the frequency factors from the coordinator
start_worker f1 "$LOOPBACK_ANY" --fetch-weights --cache-dir "$tmp/cache-f1" -t 1; F1=$EP
start_worker f2 "$LOOPBACK_ANY" --fetch-weights --cache-dir "$tmp/cache-f2" -t 1; F2=$EP
ref=$(run "$L3" -t 2)
got=$(run "$L3" --workers "$F1,$F2")
[ "$got" == "$ref" ] && ok "--fetch-weights workers (rope_freqs fetched) == one process" || bad "fetch: '$got' != '$ref'"

# errors: one line naming the problem, quickly
for args in "--rope-scaling longrope" "--rope-scale -2" "--yarn-ext-factor 2000" "--rope-freq-base nan" "--yarn-beta-fast -1"; do
  out=$(timeout 30 "$TERN" run -m "$Y" -p hi -n 2 $args 2>&1); rc=$?
  first=${args%% *}
  [ $rc -ne 0 ] && echo "$out" | grep -q -- "$first" && ok "$args: $(echo "$out" | tail -1)" || bad "$args (rc $rc): $out"
done
"$TERN" mkmodel --arch llama --preset tiny --layers 1 --type tq2_0 -o "$tmp/bad.gguf" >/dev/null 2>&1
python3 - "$tmp/bad.gguf" <<'PY' || die "python3 failed"
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
i = b.find(b'llama.rope.freq_base')          # key, then u32 type 6 (f32), then the value
assert i > 0
v = i + len(b'llama.rope.freq_base') + 4
b[v:v + 4] = bytes([0x00, 0x00, 0xc0, 0x7f])  # NaN
open(p, 'wb').write(b)
PY
out=$(timeout 30 "$TERN" run -m "$tmp/bad.gguf" -p hi -n 2 2>&1); rc=$?
[ $rc -ne 0 ] && [ "$(echo "$out" | grep -ac .)" -le 2 ] && echo "$out" | grep -aq "freq_base nan" && ok "corrupt freq_base: $(echo "$out" | tail -1)" \
  || bad "corrupt freq_base (rc $rc): $out"

# ---- saved caches (slot save / restore, --prompt-cache) record the RoPE -------------------------
mkdir -p "$tmp/slots"
LONG="The quick brown fox jumps over the lazy dog, and the lazy dog sleeps in the warm sun all day."
C() { curl -s --max-time 60 -H 'Content-Type: application/json' "$@"; }
# comp PROMPT [EXTRA_JSON]: a greedy completion of 12 tokens; prints "cached_tokens<TAB>text"
comp() {
  C "$URL/v1/completions" -d "{\"prompt\":\"$1\",\"max_tokens\":12,\"temperature\":0${2:-}}" \
    | python3 -c 'import json,sys; o=json.load(sys.stdin); print(o["usage"]["prompt_tokens_details"]["cached_tokens"], json.dumps(o["choices"][0]["text"]), sep="\t")'
}
# act ID ACTION BODY: POST /slots/ID?action=ACTION; the reply in $tmp/r.json, prints the status
act() { C -o "$tmp/r.json" -w '%{http_code}' -X POST "$URL/slots/$1?action=$2" -d "$3"; }
msg() { python3 -c "import json; print(json.load(open('$tmp/r.json'))['error']['message'])" 2>/dev/null; }
# serve NAME FLAGS...: a server of the plain model with one slot and FLAGS (replacing the last one)
serve() {
  [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null
  local name=$1; shift
  start_serve "$name" -m "$P" -t 2 -np 1 --slot-save-path "$tmp/slots" "$@" || die "serve $name did not start: $(cat "$tmp/$name.log")"
  wait_health "$URL" 30 || die "$name not healthy: $(cat "$tmp/$name.log")"
}
serve sa --rope-freq-base 20000
comp "$LONG" >/dev/null
st=$(act 0 save '{"filename":"fb.bin"}')
[ "$st" = 200 ] || bad "save under --rope-freq-base 20000: $st $(cat "$tmp/r.json")"
# tern info FILE.kv: the saved slot's header, its RoPE record included
n_saved=$(python3 -c "import json; print(json.load(open('$tmp/r.json'))['n_saved'])" 2>/dev/null)
out=$("$TERN" info "$tmp/slots/fb.bin" 2>&1); rc=$?
[ $rc = 0 ] && grep -q "^file: .* (tern KV cache file v2, $(stat -c %s "$tmp/slots/fb.bin") bytes" <<<"$out" \
  && grep -q "^model: *the file of $(stat -c %s "$P") bytes with hash " <<<"$out" \
  && grep -q "^kv cache: *f16, layers 3, embd [0-9]*, vocab [0-9]*, kv dim [0-9]* ([0-9]*-byte rows)" <<<"$out" \
  && grep -q "^tokens: *${n_saved:-?} (" <<<"$out" \
  && grep -q "^rope: *scaling none, freq_base 20000, freq_scale 1, ext_factor 0, attn_factor 1, frequency factors none$" <<<"$out" \
  && ok "info of a slot saved with --rope-freq-base 20000 ($n_saved tokens): $(grep '^rope' <<<"$out")" \
  || bad "info of the saved slot (rc $rc, n_saved ${n_saved:-?}): $out"
head -c 400 "$tmp/slots/fb.bin" >"$tmp/trunc.kv"
out=$("$TERN" info "$tmp/trunc.kv" 2>&1); rc=$?
[ $rc = 1 ] && [ "$(grep -c . <<<"$out")" = 1 ] && grep -q "^tern info: .*trunc.kv: .*(truncated?)" <<<"$out" \
  && ok "info of a truncated KV file: one line, exit 1 ($out)" || bad "info of a truncated KV file (rc $rc): $out"
serve sb --rope-freq-base 20000
ref=$(comp "$LONG Then" ',"cache_prompt":false' | cut -f2)
st=$(act 0 restore '{"filename":"fb.bin"}')
got=$(comp "$LONG Then")
[ "$st" = 200 ] && [ "$(cut -f1 <<<"$got")" -gt 10 ] && [ "$(cut -f2 <<<"$got")" = "$ref" ] \
  && ok "a slot saved with --rope-freq-base 20000 restores into a server with the same flag ($(cut -f1 <<<"$got") cached tokens, a fresh request's text)" \
  || bad "same flag: restore $st $(cat "$tmp/r.json"), then $got (fresh $ref)"
for fl in "--rope-freq-base 30000|this model runs 30000" "|this model runs 500000"; do
  IFS='|' read -r flags want <<<"$fl"
  serve "sc${flags:+x}" $flags
  st=$(act 0 restore '{"filename":"fb.bin"}'); m=$(msg)
  [ "$st" = 400 ] && grep -q "saved with RoPE freq_base 20000, $want" <<<"$m" && [ "$(wc -l <<<"$m")" = 1 ] \
    && ok "restore under '${flags:-no flag}': 400 ($m)" || bad "restore under '${flags:-no flag}': $st $(cat "$tmp/r.json")"
done
kill "$SPID"
run "$P" -t 2 --rope-freq-base 20000 --prompt-cache "$tmp/pc.bin" >/dev/null
# a --prompt-cache file of the yarn model and of the llama3-factors one: yarn's fields, factors applied
run "$Y" -t 2 --prompt-cache "$tmp/y.kv" >/dev/null
run "$L3" -t 2 --prompt-cache "$tmp/l3.kv" >/dev/null
"$TERN" info "$tmp/y.kv" 2>&1 | grep -q "^rope: *scaling yarn, freq_base [0-9.]*, freq_scale 0.25, ext_factor 1, attn_factor 1, orig ctx 16, beta fast 32 slow 1, frequency factors none$" \
  && ok "info of a yarn model's prompt cache: $("$TERN" info "$tmp/y.kv" | grep '^rope')" || bad "info y.kv: $("$TERN" info "$tmp/y.kv" 2>&1)"
"$TERN" info "$tmp/l3.kv" 2>&1 | grep -q "^rope: *scaling none, .*, frequency factors applied (rope_freqs.weight [0-9a-f]\{16\})$" \
  && ok "info of a llama3-factors model's prompt cache: factors applied" || bad "info l3.kv: $("$TERN" info "$tmp/l3.kv" 2>&1)"
out=$(timeout 60 "$TERN" run -m "$P" --no-display-prompt -p "Hello" -n 4 -t 2 --rope-freq-base 20000 --prompt-cache "$tmp/pc.bin" 2>&1 >/dev/null); rc=$?
[ $rc = 0 ] && grep -q "tokens restored from" <<<"$out" && ok "--prompt-cache saved with --rope-freq-base 20000 restores under it" \
  || bad "--prompt-cache, same flag (rc $rc): $out"
cp "$tmp/pc.bin" "$tmp/pc.keep"
timeout 60 "$TERN" run -m "$P" --no-display-prompt -p "Hello" -n 4 -t 2 --rope-freq-base 30000 --prompt-cache "$tmp/pc.bin" \
  >/dev/null 2>"$tmp/pc.err"; rc=$?
err=$(grep -v '^[0-9]*:[A-Z0-9]* ' "$tmp/pc.err")
[ $rc = 1 ] && [ "$(wc -l <<<"$err")" = 1 ] && grep -q "freq_base 20000, this model runs 30000" <<<"$err" \
  && cmp -s "$tmp/pc.bin" "$tmp/pc.keep" && ok "--prompt-cache under --rope-freq-base 30000: refused in one line, the file kept ($err)" \
  || bad "--prompt-cache, other flag (rc $rc): $(cat "$tmp/pc.err")"

finish 34
