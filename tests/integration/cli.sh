#!/usr/bin/env bash
# The CLI front ends on a tiny generated model: `tern run` is deterministic at temperature 0 and
# across thread counts; `tern chat` answers over piped stdin, keeps its cache across turns
# (same replies as re-feeding), honours /exit and EOF; `tern bench -o json` parses and has
# llama-bench's fields plus the roofline; `tern perplexity` prints a finite PPL > 1 in
# llama.cpp's format. Bad input (missing or broken model, prompt longer than the context, bad
# -n / -t, unknown flags) gives one error line and a non-zero exit, never a crash.
source "$(dirname "$0")/lib.bash"
T() { timeout 120 "$TERN" "$@"; }

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 5

# ---- run: determinism ----------------------------------------------------------------------
run() { T run -m "$M" --no-display-prompt --summary=0 -p "The quick brown fox" -n 24 --temp 0 "$@" 2>>"$tmp/run.log"; }
a=$(run -t 1); b=$(run -t 1); c=$(run -t 2)
[ -n "$a" ] || bad "run --temp 0 printed nothing ($(tail -1 "$tmp/run.log"))"
[ "$a" == "$b" ] && ok "run --temp 0 twice: same text" || bad "run --temp 0 twice differs: '$a' vs '$b'"
[ "$a" == "$c" ] && ok "run -t 1 == -t 2 (greedy)" || bad "run -t 1 vs -t 2: '$a' vs '$c'"
d=$(run -t 2 -b 16 -ub 3)
[ "$a" == "$d" ] && ok "run -b 16 -ub 3 == default batches (greedy)" || bad "run -ub 3: '$a' vs '$d'"

# ---- chat over piped stdin -----------------------------------------------------------------
chat_in=$'Hello there\nWhat is two plus two?\n'
out=$(printf '%s' "$chat_in" | T chat -m "$M" --temp 0 -n 16 -t 2 2>"$tmp/chat.err"); rc=$?
prompts=$(printf '%s' "$out" | grep -o '> ' | wc -l)
body=$(printf '%s' "$out" | tr -d '>\n ')
if [ $rc -eq 0 ] && [ "$prompts" -ge 3 ] && [ -n "$body" ]; then ok "chat: 2 turns over a pipe, exit 0 on EOF"
else bad "chat (rc $rc, $prompts prompts): out='$out' err='$(cat "$tmp/chat.err")'"; fi
out2=$(printf '%s' "$chat_in" | T chat -m "$M" --temp 0 -n 16 -t 2 --no-cache 2>/dev/null)
[ "$out" == "$out2" ] && ok "chat: replies with the kept cache == re-fed conversation" \
  || bad "chat cache vs --no-cache differ: '$out' vs '$out2'"
out3=$(printf 'Hi\n/exit\nnever answered\n' | T chat -m "$M" --temp 0 -n 4 2>/dev/null); rc=$?
n3=$(printf '%s' "$out3" | grep -o '> ' | wc -l)
[ $rc -eq 0 ] && [ "$n3" -eq 2 ] && ok "chat: /exit quits" || bad "chat /exit (rc $rc, $n3 prompts): '$out3'"
out4=$(printf 'Be brief\n' | T chat -m "$M" -sys "You are terse." --temp 0.8 -s 3 -n 8 2>&1); rc=$?
[ $rc -eq 0 ] && ok "chat: -sys and sampling flags" || bad "chat -sys (rc $rc): $out4"

# Ctrl-C during a reply stops the reply (a new prompt follows); Ctrl-C at the prompt exits 0
if python3 - "$TERN" "$M" <<'PY'
import os, select, signal, subprocess, sys, time
p = subprocess.Popen([sys.argv[1], "chat", "-m", sys.argv[2], "-c", "32768", "--temp", "0.8", "-s", "1", "-t", "1"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
buf = b""
def read_until(pred, timeout):
    global buf
    end = time.time() + timeout
    while not pred(buf) and time.time() < end:
        r, _, _ = select.select([p.stdout], [], [], 0.1)
        if r:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk: break
            buf += chunk
    return pred(buf)
try:
    p.stdin.write(b"Tell me a very long story\n"); p.stdin.flush()
    assert read_until(lambda b: len(b) > 64, 60), "no reply started"
    p.send_signal(signal.SIGINT)
    assert read_until(lambda b: b.count(b"> ") >= 2 and b.endswith(b"> "), 60), "no new prompt after Ctrl-C"
    assert p.poll() is None, "the first Ctrl-C ended the program"
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=30)
    assert rc == 0, f"exit code {rc}"
finally:
    if p.poll() is None: p.kill()
PY
then ok "chat: Ctrl-C stops the reply, Ctrl-C at the prompt exits"; else bad "chat Ctrl-C handling"; fi

# ---- bench -o json / md --------------------------------------------------------------------
T bench -m "$M" -p 16 -n 8 -t 1,2 -r 2 -o json --bw-size 64MiB >"$tmp/b.json" 2>"$tmp/b.err"; rc=$?
if [ $rc -eq 0 ] && python3 - "$tmp/b.json" <<'PY'
import json, math, sys
rows = json.load(open(sys.argv[1]))
assert isinstance(rows, list) and len(rows) == 4, f"expected 4 rows, got {len(rows)}"
need = ["model_type", "model_size", "model_n_params", "n_threads", "n_prompt", "n_gen", "avg_ts", "stddev_ts",
        "samples_ts", "backend", "test"]
for r in rows:
    for k in need: assert k in r, f"missing {k} in {r}"
    assert r["avg_ts"] > 0 and math.isfinite(r["avg_ts"]), r
    assert len(r["samples_ts"]) == 2, r
    assert abs(sum(r["samples_ts"]) / 2 - r["avg_ts"]) < 1e-3 * r["avg_ts"] + 1e-6, r
    assert r["model_size"] > 0 and r["model_n_params"] > 0
    if r["n_gen"]:
        assert r["test"] == "tg8" and r["n_prompt"] == 0, r
        for k in ["roofline_ts", "bw_gbps", "frac_roofline"]: assert k in r and r[k] > 0, (k, r)
    else:
        assert r["test"] == "pp16" and r["n_gen"] == 0, r
assert sorted(r["n_threads"] for r in rows) == [1, 1, 2, 2]
assert rows[0]["model_type"].startswith("bitnet-b1.58 ") and rows[0]["model_type"].endswith(" I2_S"), rows[0]
PY
then ok "bench -o json: 4 rows with llama-bench's fields and the roofline"
else bad "bench -o json (rc $rc): $(head -c 600 "$tmp/b.json") $(tail -2 "$tmp/b.err")"; fi
md=$(T bench -m "$M" -p 8 -n 4 -t 1 -r 1 --bw-size 16MiB 2>/dev/null); rc=$?
if [ $rc -eq 0 ] && echo "$md" | grep -q '^| model  *| *size | *params | backend  *| threads | *test | *t/s | roofline t/s | % roofline |$' \
   && echo "$md" | grep -q '| *pp8 |' && echo "$md" | grep -q '| *tg4 |' && echo "$md" | grep -q ' ± '; then
  ok "bench markdown table"
else bad "bench md (rc $rc): $md"; fi
# -d: tg with the cache filled first (one row a depth, named as llama-bench does); the roofline
# counts the cache read per token, so it falls with the depth
T bench -m "$M" -p 0 -n 4 -d 0,40 -t 1 -r 1 --bw-size 16MiB -o json --kv-type q8_0 >"$tmp/d.json" 2>"$tmp/d.err"; rc=$?
if [ $rc -eq 0 ] && python3 - "$tmp/d.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
assert [r["n_depth"] for r in rows] == [0, 40], rows
assert [r["test"] for r in rows] == ["tg4", "tg4 @ d40"], rows
assert all(r["type_kv"] == "q8_0" and r["avg_ts"] > 0 for r in rows), rows
assert rows[1]["roofline_ts"] < rows[0]["roofline_ts"], rows
PY
then ok "bench -d 0,40: a row a depth, the roofline counts the cache"
else bad "bench -d (rc $rc): $(head -c 600 "$tmp/d.json") $(tail -2 "$tmp/d.err")"; fi

# ---- perplexity ----------------------------------------------------------------------------
txt="$tmp/text.txt"
for i in $(seq 1 40); do echo "Line $i: the cat sat on the mat, and the dog ran after the ball in the park."; done >"$txt"
out=$(T perplexity -m "$M" -f "$txt" -c 32 -b 16 -t 2 2>"$tmp/ppl.err"); rc=$?
ppl=$(echo "$out" | sed -n 's/^Final estimate: PPL = \([0-9.]*\) +\/- \([0-9.]*\)$/\1/p')
if [ $rc -eq 0 ] && [ -n "$ppl" ] && echo "$out" | grep -q '^\[1\][0-9.]*,' \
   && python3 -c "import math,sys; p=float(sys.argv[1]); sys.exit(0 if math.isfinite(p) and p > 1 else 1)" "$ppl"; then
  ok "perplexity: Final estimate PPL = $ppl"
else bad "perplexity (rc $rc): '$out' $(tail -2 "$tmp/ppl.err")"; fi
out1=$(T perplexity -m "$M" -f "$txt" -c 32 -b 32 -t 1 2>/dev/null | grep '^Final')
out2=$(echo "$out" | grep '^Final')
[ -n "$out1" ] && [ "$out1" == "$out2" ] && ok "perplexity: same result for -b 16 -t 2 and -b 32 -t 1" \
  || bad "perplexity depends on -b/-t: '$out1' vs '$out2'"
# the same numbers whatever runs the layers: worker threads (2 stages, 1 or 4 micro-batches a chunk), or direct stage calls
for how in "--stages 2" "--stages 2 -b 8" "-ub 5" "direct"; do
  if [ "$how" == direct ]; then o=$(TERN_EMBEDDED=direct T perplexity -m "$M" -f "$txt" -c 32 -b 16 -t 2 2>&1 | grep '^Final')
  else o=$(T perplexity -m "$M" -f "$txt" -c 32 -t 2 $how 2>&1 | grep '^Final'); fi
  [ -n "$o" ] && [ "$o" == "$out2" ] && ok "perplexity over $how == one stage" || bad "perplexity over $how: '$o' vs '$out2'"
done

# ---- bad input: one line on stderr, non-zero exit, no crash --------------------------------
echo "not a gguf file" >"$tmp/broken.gguf"
long=$(for i in $(seq 1 200); do printf 'word%d ' "$i"; done)
short="$tmp/short.txt"; echo "too short" >"$short"
expect_err() {   # description, then the command's arguments
  local what=$1; shift
  local err rc
  err=$(T "$@" </dev/null 2>&1 >/dev/null); rc=$?
  local lines; lines=$(printf '%s\n' "$err" | grep -c .)
  if [ $rc -ne 0 ] && [ $rc -lt 124 ] && [ "$lines" -eq 1 ]; then ok "$what: $err"
  else bad "$what: rc $rc, $lines lines: $err"; fi
}
for cmd in chat bench perplexity; do
  extra=(); [ $cmd == perplexity ] && extra=(-f "$txt")
  expect_err "$cmd: missing model" $cmd -m "$tmp/nope.gguf" "${extra[@]}"
  expect_err "$cmd: broken model" $cmd -m "$tmp/broken.gguf" "${extra[@]}"
  expect_err "$cmd: unknown flag" $cmd -m "$M" --bogus "${extra[@]}"
  expect_err "$cmd: -t 0" $cmd -m "$M" -t 0 "${extra[@]}"
done
expect_err "run: prompt longer than the context" run -m "$M" -c 16 -p "$long" -n 4
expect_err "bench: prompt longer than the context" bench -m "$M" -c 16 -p 64 -n 4
expect_err "perplexity: text shorter than 2*n_ctx" perplexity -m "$M" -f "$short" -c 64
expect_err "perplexity: missing text file" perplexity -m "$M" -f "$tmp/nope.txt"
expect_err "run: -n negative" run -m "$M" -p hi -n -5
expect_err "chat: -n negative" chat -m "$M" -n -5
expect_err "bench: -n negative" bench -m "$M" -n -5
expect_err "bench: -n absurd" bench -m "$M" -n 999999999
expect_err "bench: -o bad" bench -m "$M" -o xml
expect_err "bench: -t 0 in a list" bench -m "$M" -t 1,0
expect_err "bench: -d with several sequences" bench -m "$M" -d 8 -np 2
expect_err "run: unknown --kv-type" run -m "$M" -p hi -n 2 --kv-type q4_k
err=$(printf '%s\n' "$long" | T chat -m "$M" -c 16 -n 4 2>&1 >/dev/null); rc=$?
[ $rc -ne 0 ] && [ $rc -lt 124 ] && [ "$(printf '%s\n' "$err" | grep -c .)" -eq 1 ] \
  && ok "chat: message longer than the context: $err" || bad "chat long message: rc $rc: $err"

finish
