#!/usr/bin/env bash
# kquant: files shaped like llama-quantize's TQ1_0/TQ2_0 output (Q4_K token embeddings, Q6_K lm
# head; a tied model's shared token_embd in Q6_K) made with the real `tern mkmodel`, described by
# `tern info` with the formats' byte counts, run greedily in one process and through a 2-worker
# cluster (same tokens); `tern quantize` writes K-quant heads/embeddings and back; a K-quant
# tensor whose size does not match the file (truncated, or retyped) is refused with one line.
source "$(dirname "$0")/lib.bash"
export TERN_PROGRESS=0

M="$tmp/kq.gguf"
make_model "$M" --preset tiny --layers 3 --type tq1_0 --head-type q6_k --embd-type q4_k --seed 5
T="$tmp/tied.gguf"
make_model "$T" --preset tiny --layers 2 --type tq2_0 --head-type q6_k --seed 6

# tern info: types and the formats' byte counts (ggml-common.h: Q4_K 144 / Q6_K 210 bytes per 256)
"$TERN" info "$M" >"$tmp/info" 2>>"$tmp/run.log" || die "info failed"
grep -qE '^  token_embd.weight +q4_k +256 x 512 +73728$' "$tmp/info" && ok "info: token_embd q4_k, 73728 bytes" \
  || bad "info token_embd: $(grep token_embd "$tmp/info")"
grep -qE '^  output.weight +q6_k +256 x 512 +107520$' "$tmp/info" && ok "info: output q6_k, 107520 bytes" \
  || bad "info output: $(grep 'output.weight' "$tmp/info")"
"$TERN" info --no-tensors "$M" 2>>"$tmp/run.log" | grep -qE '^types: +f32 x[0-9]+ q4_k x1 q6_k x1 tq1_0 x21$' \
  && ok "info --no-tensors: types line" || bad "types line: $("$TERN" info --no-tensors "$M" 2>&1 | grep types)"
"$TERN" info "$T" >"$tmp/info2" 2>>"$tmp/run.log" || die "info (tied) failed"
grep -qE '^  token_embd.weight +q6_k ' "$tmp/info2" && grep -q "lm head tied" "$tmp/info2" && ! grep -q '^  output.weight' "$tmp/info2" \
  && ok "tied model: one q6_k token_embd is the head" || bad "tied: $(grep -E 'token_embd|lm head' "$tmp/info2")"

run() { timeout 120 "$TERN" run --no-display-prompt --summary=0 -p "Hello world, this is tern" -n 20 --temp 0 --ignore-eos "$@" 2>>"$tmp/run.log"; }

ref=$(run -m "$M" -t 1)
[ -n "$ref" ] && ok "q6_k head + q4_k embeddings: one process generates" || bad "one process printed nothing"
got=$(run -m "$M" -t 2)
[ "$got" == "$ref" ] && ok "2 threads == 1 thread" || bad "threads: '$got' != '$ref'"
got=$(TERN_ISA=ref run -m "$M" -t 2)
[ "$got" == "$ref" ] && ok "TERN_ISA=ref == the best ISA" || bad "ref ISA: '$got' != '$ref'"
tref=$(run -m "$T")
[ -n "$tref" ] && ok "tied q6_k head generates" || bad "tied model printed nothing"

start_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1; W1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$M" -t 2; W2=$EP
[ -n "$W1" ] && [ -n "$W2" ] || { echo "workers did not start"; cat "$tmp"/*.log; exit 1; }
got=$(run -m "$M" --workers "$W1,$W2")
[ "$got" == "$ref" ] && ok "2-worker cluster == one process" || bad "cluster: '$got' != '$ref'"
start_worker w3 "$LOOPBACK_ANY" -m "$T" -t 1; W3=$EP
start_worker w4 "$LOOPBACK_ANY" -m "$T" -t 1; W4=$EP
got=$(run -m "$T" --workers "$W3,$W4")
[ -n "$tref" ] && [ "$got" == "$tref" ] && ok "tied q6_k: 2-worker cluster == one process" || bad "tied cluster: '$got' != '$tref'"

# tern quantize: i2_s/f16 file → tq1_0 + q6_k head + q4_k embeddings, and back to f16
B="$tmp/base.gguf"
make_model "$B" --preset tiny --layers 2 --type i2_s --seed 8
timeout 120 "$TERN" quantize "$B" "$tmp/q.gguf" tq1_0 --head q6_k --embd q4_k 2>>"$tmp/run.log" || bad "quantize to k-quants failed"
"$TERN" info "$tmp/q.gguf" >"$tmp/qi" 2>&1
grep -qE '^  token_embd.weight +q4_k ' "$tmp/qi" && grep -qE '^  output.weight +q6_k ' "$tmp/qi" \
  && ok "quantize --head q6_k --embd q4_k" || bad "quantize: $(grep -E 'token_embd|output' "$tmp/qi")"
q1=$(run -m "$tmp/q.gguf")
[ -n "$q1" ] && ok "quantized file runs" || bad "quantized file printed nothing"
timeout 120 "$TERN" quantize "$tmp/q.gguf" "$tmp/back.gguf" tq1_0 --head f16 --embd f16 2>>"$tmp/run.log" || bad "quantize back failed"
"$TERN" info "$tmp/back.gguf" >"$tmp/bi" 2>&1
grep -qE '^  token_embd.weight +f16 ' "$tmp/bi" && grep -qE '^  output.weight +f16 ' "$tmp/bi" \
  && ok "quantize back to f16 (from q4_k/q6_k)" || bad "quantize back: $(grep -E 'token_embd|output' "$tmp/bi")"
out=$("$TERN" quantize "$B" "$tmp/x.gguf" tq1_0 --head q3_k 2>&1); rc=$?
[ $rc -ne 0 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "q3_k" && ok "unknown head type refused: $out" \
  || bad "--head q3_k (rc $rc): $out"
out=$("$TERN" mkmodel --preset tiny --embd-type q9 -o "$tmp/y.gguf" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q -- "--embd-type" && ok "mkmodel --embd-type q9 refused" || bad "mkmodel q9 (rc $rc): $out"

# corrupt sizes: a truncated q6_k head, and the q6_k head relabelled q8_0 (272 bytes per 256)
sz=$(stat -c %s "$M")
head -c $((sz - 100)) "$M" >"$tmp/cut.gguf"
out=$(timeout 30 "$TERN" run -m "$tmp/cut.gguf" -p hi -n 2 2>&1); rc=$?
[ $rc -ne 0 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "output.weight: data past end of file" \
  && ok "truncated q6_k head: $out" || bad "truncated (rc $rc): $out"
python3 - "$M" "$tmp/retype.gguf" <<'EOF'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
key = struct.pack("<Q", 13) + b"output.weight"
p = b.find(key) + len(key)
nd = struct.unpack_from("<I", b, p)[0]
p += 4 + 8 * nd
assert struct.unpack_from("<I", b, p)[0] == 14, "output.weight is not q6_k"
struct.pack_into("<I", b, p, 8)
open(sys.argv[2], "wb").write(b)
EOF
out=$(timeout 30 "$TERN" run -m "$tmp/retype.gguf" -p hi -n 2 2>&1); rc=$?
[ $rc -ne 0 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "output.weight" \
  && ok "q6_k head relabelled q8_0: $out" || bad "retyped (rc $rc): $out"
finish 20
