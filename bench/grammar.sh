#!/usr/bin/env bash
# What a grammar costs per generated token: greedy `tern run` of N tokens free, then held to a
# GBNF that keeps the generation inside a string (the worst case for the mask: nearly every token
# of the vocabulary is allowed and the prefix tree is walked almost whole), then to a JSON Schema
# of two strings; the same model, threads and prompt, each twice, the better kept. Prints tokens/s of
# each and the ratio to free text, and the mask time per token that the difference implies.
#   bench/grammar.sh [MODEL|small|2b4t]      env: TERN_BIN, TERN_CACHE, N (default 128), THREADS
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/bench/lib.sh"
bench_tern "grammar"
name="${1:-small}"
N="${N:-128}" THREADS="${THREADS:-$(nproc)}"
bench_model grammar "$name" "$cache"
OPEN='root ::= "\"" [^"]* "\""'
# eval tokens/s of one run (stderr's summary line: "eval = X ms / N tokens (R tokens/s)")
rate() {
  "$TERN" run -m "$model" -p "Write a long story:" -n "$N" --temp 0 -t "$THREADS" --no-display-prompt "$@" 2>&1 >/dev/null |
    sed -n 's/^eval *= *\([0-9.]*\) ms \/ *\([0-9]*\) tokens.*/\1 \2/p' | tail -1
}
best() {   # best KIND ARGS...: the better of two runs, "ms tokens"
  local a b
  a=$(rate "$@"); b=$(rate "$@")
  python3 -c 'import sys; r=[tuple(map(float, x.split())) for x in sys.argv[1:] if x.strip()]; print(*min(r, key=lambda t: t[0] / max(t[1], 1)))' "$a" "$b"
}
free=$(best)
open=$(best --grammar "$OPEN")
json=$(best -j '{"type":"object","properties":{"title":{"type":"string","maxLength":20},"story":{"type":"string"}},"required":["title","story"]}')
python3 - "$free" "$open" "$json" "$model" "$THREADS" <<'PY'
import sys
rows = [("free text", sys.argv[1]), ("inside a string (worst case)", sys.argv[2]), ("JSON Schema {title, story}", sys.argv[3])]
ms0, n0 = map(float, sys.argv[1].split())
per0 = ms0 / n0
print(f"model {sys.argv[4]}, {sys.argv[5]} threads, greedy")
print("| output | tokens | tokens/s | vs free | mask + matcher ms / token |")
print("|---|---:|---:|---:|---:|")
for name, v in rows:
    ms, n = map(float, v.split())
    per = ms / n
    print(f"| {name} | {n:.0f} | {1000 / per:.1f} | {per0 / per:.2f} | {per - per0:+.2f} |")
PY
