#!/usr/bin/env bash
# `tern perplexity --kl-divergence-base` / `--kl-divergence` (llama-perplexity's KLD) on generated
# models: the base file has llama.cpp's layout (checked by an independent reader here: header,
# tokens, rows that decode to distributions) and the same PPL as plain perplexity; the same model
# against its base gives KLD ~ 0 and Same top p = 100%; the same seed quantised as tq2_0 instead
# of i2_s gives KLD > 0; through 2 workers (the last stage returns whole logit rows) the base file
# and the statistics are byte for byte those of one process; a truncated, corrupt or foreign base
# file gives one error line and exit 1, never a crash.
source "$(dirname "$0")/lib.bash"
T() { timeout 120 "$TERN" "$@"; }

A="$tmp/a.gguf" B="$tmp/b.gguf" V="$tmp/v.gguf"
make_model "$A" --preset tiny --arch bitnet-b1.58 --layers 2 --type i2_s --seed 5
make_model "$B" --preset tiny --arch bitnet-b1.58 --layers 2 --type tq2_0 --seed 5
make_model "$V" --preset tiny --arch bitnet-b1.58 --layers 2 --type i2_s --seed 5 --n-vocab 600
txt="$tmp/text.txt"
for i in $(seq 1 30); do echo "Line $i: the cat sat on the mat, and the dog ran after the ball in the park."; done >"$txt"
base="$tmp/base.kld"

# ---- the base file --------------------------------------------------------------------------
plain=$(T perplexity -m "$A" -f "$txt" -c 32 -b 16 -t 2 2>"$tmp/plain.log" | grep '^Final')
out=$(T perplexity -m "$A" -f "$txt" -c 32 -b 16 -t 2 --kl-divergence-base "$base" 2>"$tmp/base.log"); rc=$?
fin=$(echo "$out" | grep '^Final')
[ $rc -eq 0 ] && [ -n "$plain" ] && [ "$fin" == "$plain" ] && ok "base run: same PPL as plain perplexity ($fin)" \
  || bad "base run (rc $rc): '$fin' vs '$plain'"
if python3 - "$base" <<'PY'
import math, struct, sys
d = open(sys.argv[1], "rb").read()
assert d[:8] == b"_logits_", "magic"
n_ctx, n_vocab, n_chunk = struct.unpack_from("<iii", d, 8)
assert n_ctx == 32 and n_chunk >= 2, (n_ctx, n_chunk)
toks = struct.unpack_from("<%di" % (n_ctx * n_chunk), d, 20)
assert all(0 <= t < n_vocab for t in toks)
nv = 2 * ((n_vocab + 1) // 2) + 4
rows = n_chunk * (n_ctx - 1 - n_ctx // 2)
off = 20 + 4 * n_ctx * n_chunk
assert len(d) == off + rows * nv * 2, ("size", len(d), off + rows * nv * 2)
for r in range(rows):
    scale, mn = struct.unpack_from("<ff", d, off + r * nv * 2)
    q = struct.unpack_from("<%dH" % n_vocab, d, off + r * nv * 2 + 8)
    assert 0 <= scale <= 16 / 65535 * 1.001 and mn <= 0, (r, scale, mn)
    s = sum(math.exp(scale * c + mn) for c in q if scale * c + mn > -16)
    assert abs(s - 1) < 2e-3, ("row", r, "sums to", s)
PY
then ok "base file: llama.cpp's layout, every row a distribution"; else bad "base file layout"; fi

# ---- KLD: the same model, a differently quantised one ----------------------------------------
field() { echo "$1" | sed -n "s/^$2 *: *\\([-0-9.]*\\).*/\\1/p" | head -1; }
same=$(T perplexity -m "$A" --kl-divergence-base "$base" --kl-divergence -t 2 2>"$tmp/same.log"); rc=$?
k=$(field "$same" "Mean    KLD"); mx=$(field "$same" "Maximum KLD"); top=$(field "$same" "Same top p")
if [ $rc -eq 0 ] && python3 -c "import sys; k,m,t=map(float,sys.argv[1:]); sys.exit(0 if abs(k)<5e-6 and m<1e-4 and t==100 else 1)" "$k" "$mx" "$top"; then
  ok "same model: mean KLD $k, max $mx, same top p $top%"
else bad "same model (rc $rc): KLD '$k' max '$mx' top '$top' $(tail -1 "$tmp/same.log")"; fi
for want in "Mean PPL(Q)" "Mean PPL(base)" "Mean PPL(Q)/PPL(base)" "Mean PPL(Q)-PPL(base)" "99.9%   KLD" "Median  KLD" \
            " 1.0%   KLD" "Minimum KLD" "RMS Δp" "Maximum Δp" "99.0%   Δp"; do
  echo "$same" | grep -qF "$want" || bad "no '$want' line in the statistics"
done
other=$(T perplexity -m "$B" --kl-divergence-base "$base" --kl-divergence -t 2 2>"$tmp/other.log"); rc=$?
k2=$(field "$other" "Mean    KLD"); r2=$(field "$other" "RMS Δp")
if [ $rc -eq 0 ] && python3 -c "import sys; k,r=map(float,sys.argv[1:]); sys.exit(0 if k>1e-5 and r>0 else 1)" "$k2" "$r2"; then
  ok "tq2_0 vs the i2_s base: mean KLD $k2 > 0, RMS Δp $r2%"
else bad "tq2_0 vs i2_s (rc $rc): KLD '$k2' RMS Δp '$r2' $(tail -1 "$tmp/other.log")"; fi

# ---- a cluster gives one process's numbers -------------------------------------------------
start_worker w1 "$LOOPBACK_ANY" -m "$A" -t 1; W1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$B" -t 1; W2=$EP
start_worker w3 "$LOOPBACK_ANY" -m "$B" -t 2; W3=$EP
[ -n "$W1" ] && [ -n "$W2" ] && [ -n "$W3" ] || die "workers did not start: $(cat "$tmp"/w*.log)"
T perplexity -m "$A" -f "$txt" -c 32 -b 16 --kl-divergence-base "$tmp/base_w.kld" --workers "$W1" >/dev/null 2>"$tmp/bw.log"
cmp -s "$base" "$tmp/base_w.kld" && ok "base file through a worker == one process's, byte for byte" \
  || bad "base file through a worker differs ($(tail -1 "$tmp/bw.log"))"
clu=$(T perplexity -m "$B" --kl-divergence-base "$base" --kl-divergence -b 8 --workers "$W2,$W3" 2>"$tmp/cw.log")
[ -n "$clu" ] && [ "$clu" == "$other" ] && ok "KLD through 2 workers == one process (every line)" \
  || bad "KLD through 2 workers differs: $(diff <(echo "$other") <(echo "$clu") | head -5) $(tail -1 "$tmp/cw.log")"

# ---- bad base files: one line, exit 1 --------------------------------------------------------
expect_err() {   # description, expected text, then the command's arguments
  local what=$1 want=$2 err rc
  shift 2
  T "$@" </dev/null >/dev/null 2>"$tmp/e.txt"; rc=$?
  err=$(grep -v '^perplexity: ' "$tmp/e.txt")
  local lines; lines=$(printf '%s\n' "$err" | grep -c .)
  if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && [[ "$err" == *"$want"* ]]; then ok "$what: $err"
  else bad "$what: rc $rc, $lines lines: $err"; fi
}
size=$(stat -c %s "$base")
head -c $((size / 2)) "$base" >"$tmp/trunc.kld"
head -c 30 "$base" >"$tmp/short.kld"
echo "not a base file" >"$tmp/junk.kld"
python3 - "$base" "$tmp" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
n_ctx, n_vocab, n_chunk = struct.unpack_from("<iii", d, 8)
row0 = 20 + 4 * n_ctx * n_chunk
bad = bytearray(d); struct.pack_into("<f", bad, row0 + (2 * ((n_vocab + 1) // 2) + 4) * 2 * 17, float("nan"))
open(sys.argv[2] + "/nanrow.kld", "wb").write(bad)
bad = bytearray(d); struct.pack_into("<i", bad, 24, n_vocab + 5)
open(sys.argv[2] + "/badtok.kld", "wb").write(bad)
PY
expect_err "truncated base file" "truncated" perplexity -m "$B" --kl-divergence-base "$tmp/trunc.kld" --kl-divergence
expect_err "base file cut in its tokens" "truncated" perplexity -m "$B" --kl-divergence-base "$tmp/short.kld" --kl-divergence
expect_err "not a base file" "_logits_" perplexity -m "$B" --kl-divergence-base "$tmp/junk.kld" --kl-divergence
expect_err "a NaN scale in chunk 2" "chunk 2" perplexity -m "$B" --kl-divergence-base "$tmp/nanrow.kld" --kl-divergence
expect_err "a token outside the vocabulary" "outside the vocabulary" perplexity -m "$B" --kl-divergence-base "$tmp/badtok.kld" --kl-divergence
expect_err "another vocabulary" "vocabulary of" perplexity -m "$V" --kl-divergence-base "$base" --kl-divergence
expect_err "missing base file" "cannot open" perplexity -m "$B" --kl-divergence-base "$tmp/nope.kld" --kl-divergence
expect_err "--kl-divergence alone" "needs --kl-divergence-base" perplexity -m "$B" --kl-divergence
finish 20
