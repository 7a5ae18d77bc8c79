#!/usr/bin/env bash
# Every mkmodel preset, at its real width (one layer, a small generated vocabulary so the files
# stay small), for each ternary type it supports: written, read back by `tern info` with the
# preset's hyper-parameters, and the file size equal to the header plus the tensor bytes the
# type formulas give.
source "$(dirname "$0")/lib.bash"
check() { if [ "$1" = 0 ]; then pass=$((pass+1)); else bad "$2"; fi; }   # status text: a quiet ok, or bad TEXT
# preset: embd ff heads/kv
declare -A shape=(
  [2b4t]="2560 6912 20/5" [large]="1536 4096 16/16" [falcon3-1b]="2048 8192 8/4" [falcon3-7b]="3072 23040 12/4"
  [llama3-8b]="4096 14336 32/8" [7b]="4096 11008 32/32" [13b]="5120 13824 40/40" [30b]="6656 17920 52/52"
  [70b]="8192 28672 64/8" [100b]="8192 45568 64/8" [small]="1024 2816 8/4" [tiny]="256 768 4/2")
for p in "${!shape[@]}"; do
  read -r e f h <<<"${shape[$p]}"
  types="i2_s"
  case $p in tiny|2b4t|falcon3-1b) types="i2_s tq2_0 tq1_0" ;; esac
  # small's ff (2816) is not a multiple of 256: TQ types are refused there, with a message
  for t in $types; do
    out="$tmp/$p-$t.gguf"
    if ! TERN_PROGRESS=0 "$TERN" mkmodel --preset "$p" --type "$t" --layers 1 --n-vocab 1024 -o "$out" >/dev/null 2>"$tmp/err"; then
      check 1 "mkmodel $p $t: $(tail -1 "$tmp/err")"; continue
    fi
    info=$("$TERN" info "$out" 2>&1)
    echo "$info" | grep -q "embd $e, ff $f, heads $h" ; check $? "$p $t: info shape ($(echo "$info" | grep hparams))"
    # bytes: file size = data offset + sum of (aligned) tensor bytes; info prints the total
    total=$(echo "$info" | sed -n 's/^totals:.*tensor data \([0-9][0-9]*\) bytes.*/\1/p' | head -1)
    size=$(stat -c %s "$out")
    [ -n "$total" ] && [ "$total" -le "$size" ] && [ $((size - total)) -lt $((1<<20)) ]
    check $? "$p $t: tensor bytes $total vs file size $size"
    rm -f "$out"
  done
done
finish
