#!/usr/bin/env bash
# The official OpenAI Node client (npm openai@4, installed by deploy/install-deps.sh into
# ${TERN_CACHE:-~/.cache/tern}/node) against `tern serve` on a tiny model and a free port:
# completions, chat and streaming give the texts of `tern run` (greedy and seeded), logprobs, the Responses API, embeddings
# (base64 by default, == float), errors
# surface as APIError with the right status (openai_client.mjs does the checks).
# Skips (passes with a message) when node or the package is missing. The server is always killed.
source "$(dirname "$0")/lib.bash"   # its cleanup: SIGTERM to the server, SIGKILL after 5 s
HERE=$(cd "$(dirname "$0")" && pwd)
NODE_DIR="${TERN_CACHE:-$HOME/.cache/tern}/node"
if ! command -v node >/dev/null 2>&1; then echo "SKIP: node not found (apt install nodejs)"; exit 0; fi
if [ ! -f "$NODE_DIR/node_modules/openai/package.json" ]; then
  echo "SKIP: the openai npm package is not in $NODE_DIR (run deploy/install-deps.sh)"; exit 0
fi

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 5

# the reference texts: tern run's stdout without its final newline, decoded as the server does
P="The quick brown fox" N=16 SEED=11 STEMP=0.9
ref() { timeout 120 "$TERN" run -m "$M" -t 2 --no-display-prompt --summary=0 -p "$P" -n $N "$@" 2>"$tmp/run.log"; }
ref --temp 0 >"$tmp/greedy.raw" || die "tern run failed: $(cat "$tmp/run.log")"
ref --temp $STEMP -s $SEED --top-k 40 --top-p 0.95 --min-p 0.05 >"$tmp/seeded.raw" \
  || die "tern run (seeded) failed: $(cat "$tmp/run.log")"
python3 - "$tmp" "$P" $N $SEED $STEMP >"$tmp/expect.json" <<'PY'
import json, sys
d, p, n, seed, temp = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
def text(name):
    raw = open(f"{d}/{name}.raw", "rb").read()
    return (raw[:-1] if raw.endswith(b"\n") else raw).decode("utf-8", "replace")
json.dump({"model": "tiny.gguf", "prompt": p, "n": n, "greedy": text("greedy"), "seed": seed,
           "seeded_temp": temp, "seeded": text("seeded"), "long_prompt": " ".join(["word"] * 1500)}, sys.stdout)
PY
[ -s "$tmp/expect.json" ] || die "could not write the expectations"

KEY=tern-test-key
start_serve serve -m "$M" -t 2 -np 2 -c 1024 --api-key "$KEY" --embeddings || die "server did not start: $(cat "$tmp/serve.log")"
wait_health "$URL" 60

timeout 120 node "$HERE/openai_client.mjs" "$NODE_DIR" "$URL" "$KEY" "$tmp/expect.json"
rc=$?
[ $rc = 124 ] && echo "FAIL - the client run did not finish in 120 s"
kill -TERM "$SPID"
wait_exit "$SPID" 30
wait "$SPID"; src=$?
[ $src = 0 ] || { echo "FAIL - the server exited $src on SIGTERM"; rc=1; }
if grep -q -E 'Sanitizer|runtime error' "$tmp/serve.log"; then
  echo "FAIL - sanitizer reports: $(grep -A8 -E 'Sanitizer|runtime error' "$tmp/serve.log" | head -30)"; rc=1
fi
exit $rc
