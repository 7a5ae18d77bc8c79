#!/usr/bin/env bash
# Prompt lookup decoding (--lookup N): greedy `tern run` of N tokens without drafts and with up to
# 2, 4 and 8, then sampled (--temp 0.8 -s 7: the same text as without drafts, fewer drafts taken
# the flatter the distribution) without drafts and with up to 4, on the given model (default
# small: no copying in its random text, so this shows what checking drafts costs when few are
# taken) and on the tiny preset (whose greedy text cycles: most drafts taken); generated
# tokens/s of each, its ratio to no drafts at the same --temp, and the share of
# drafts the model took, and the tokens a step delivered (on a memory-bound model a step of a few
# tokens costs about one: that is the speed-up to expect; the tiny model's steps are too short to
# time). Real text that copies from its context (code edits, summaries, RAG answers) sits in
# between.    bench/lookup.sh [MODEL|small|2b4t]   env: TERN_BIN, N (128), THREADS
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
bench_tern "lookup"
name="${1:-small}"
N="${N:-128}" THREADS="${THREADS:-$(nproc)}"
bench_model lookup "$name" "$cache"
tiny=$(mktemp -d)
trap 'rm -rf "$tiny"' EXIT
"$TERN" mkmodel --preset tiny --arch bitnet-b1.58 --type i2_s --seed 11 -o "$tiny/tiny.gguf" >/dev/null 2>&1
# "ms tokens taken drafted" of one run (its stderr summary): MODEL K TEMP
one() {
  "$TERN" run -m "$1" -p "The quick brown fox" -n "$N" --temp "$3" -s 7 -t "$THREADS" --no-display-prompt --lookup "$2" 2>&1 >/dev/null |
    awk '/^eval/ { ms = $3; n = $6 } /^drafts/ { t = $3; d = $5 } END { printf "%s %s %s %s\n", ms, n, t + 0, d + 0 }'
}
for m in "$model" "$tiny/tiny.gguf"; do
  echo "model $m, $THREADS threads, $N tokens (the better of two runs; vs none: against the same --temp)"
  echo "| --temp | --lookup | tokens/s | vs none | drafts taken | tokens a step |"
  echo "|---:|---:|---:|---:|---:|---:|"
  for tk in "0 0" "0 2" "0 4" "0 8" "0.8 0" "0.8 4"; do
    t=${tk% *} k=${tk#* }
    [ "$k" = 0 ] && base=""
    a=$(one "$m" $k $t); b=$(one "$m" $k $t)
    python3 - "$k" "$a" "$b" "${base:-}" "$t" <<'PY'
import sys
k, t = sys.argv[1], sys.argv[5]
runs = [tuple(map(float, x.split())) for x in sys.argv[2:4]]
ms, n, taken, drafted = min(runs, key=lambda r: r[0] / max(r[1], 1))
ts = 1000 * n / ms
base = float(sys.argv[4]) if sys.argv[4] else ts
share = f"{100 * taken / drafted:.0f}% of {drafted:.0f}" if drafted else "-"
steps = max(n - taken, 1)   # each step gives its token and the drafts it took
print(f"| {t} | {k} | {ts:.1f} | {ts / base:.2f} | {share} | {n / steps:.2f} |")
print(ts, file=sys.stderr)
PY
    [ -z "$base" ] && base=$(python3 - "$a" "$b" <<'PY'
import sys
runs = [tuple(map(float, x.split())) for x in sys.argv[1:3]]
print(max(1000 * r[1] / r[0] for r in runs))
PY
)
  done 2>/dev/null
  echo
done
