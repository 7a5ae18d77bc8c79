#!/usr/bin/env bash
# RoPE scaling (context extension) with real processes on loopback: models with YaRN keys and with
# llama3 frequency factors (rope_freqs.weight) give the same greedy tokens in one process, through
# 2 ZeroMQ workers reading their own copy, and through workers that fetch their layers (and the
# factors) from the coordinator; a CLI override (--rope-scaling, --rope-scale, --yarn-*) changes the
# tokens, and the same override over the cluster (LoadShard.rope) gives the one-process tokens;
# tern info prints the scaling; bad flags and a corrupt scaling key fail with a one-line error.
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

finish 34
