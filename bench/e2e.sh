#!/usr/bin/env bash
# End-to-end benchmark on a model of BitNet b1.58 2B-4T's shape (I2_S, synthetic weights):
# llama-bench's pp/tg tests with the F16 lm head as stored and with --head q8_0, each with the
# bandwidth roofline of tg. The model is made once into a cache dir (Llama-3 vocab when
# $TERN_CACHE/llama3/tokenizer.json exists), and the embedded engine (inproc://) against
# direct stage calls. Not here: comparisons with other engines.
#   bench/e2e.sh [extra tern bench flags...]      env: TERN_BIN, TERN_CACHE, P, N, THREADS, REPS
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
bench_tern "e2e"
P="${P:-512}" N="${N:-128}" THREADS="${THREADS:-1,2}" REPS="${REPS:-5}"
bench_model e2e 2b4t "$cache"
"$TERN" info "$model" 2>/dev/null | head -5 >&2 || true
for head in "" q8_0; do
  echo
  echo "### lm head: ${head:-f16 (as stored)}"
  echo
  hflag=(); [ -n "$head" ] && hflag=(--head "$head")
  "$TERN" bench -m "$model" -p "$P" -n "$N" -t "$THREADS" -r "$REPS" "${hflag[@]}" "$@"
done
# the embedded engine runs its worker threads over inproc://; what that transport costs per token,
# against calling the stages directly (TERN_EMBEDDED=direct), measured the same way
echo
echo "### transport cost: embedded (inproc://) vs direct stage calls, f16 head"
echo
for mode in embedded direct; do
  echo "mode: $mode"
  TERN_EMBEDDED=$([ "$mode" = direct ] && echo direct || echo "") \
    "$TERN" bench -m "$model" -p 0 -n "$N" -t "$THREADS" -r "$REPS" "$@" | grep '| *tg'
done
