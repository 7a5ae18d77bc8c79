#!/usr/bin/env bash
# Context shift (--context-shift, --keep) end to end on a tiny generated model with a 64-token
# context: `tern run -n 200` makes its 200 tokens (the shifts counted in its summary), the text
# before the first shift being the plain run's, which ends at the context; the same over two
# workers gives the same text as one process (greedy and seeded); `tern serve --context-shift`
# answers max_tokens past the context (finish_reason "length", request n_keep honoured, the
# shifts counted in /metrics), without the flag the reply stops at the context; `tern chat`
# goes on past a full context, keeping its system message; bad values are refused in one line.
# The shifts themselves are applied by the stages: the text after the first shift is only
# right (and the cluster only equal to one process for that reason) with the stage side.
source "$(dirname "$0")/lib.bash"
T() { timeout 60 "$TERN" "$@"; }
C() { curl -s --max-time 60 -H 'Content-Type: application/json' "$@"; }

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 11
P="The quick brown fox"
run() { T run -m "$M" --no-display-prompt -p "$P" -c 64 -n 200 -t 2 "$@"; }

# ---- tern run ----------------------------------------------------------------------------------
run --temp 0 --summary=0 >"$tmp/plain.txt" 2>"$tmp/plain.err" || bad "plain run failed: $(cat "$tmp/plain.err")"
run --temp 0 --context-shift >"$tmp/cs.txt" 2>"$tmp/cs.err"; rc=$?
eval_n=$(sed -n 's|^eval .*/ *\([0-9]*\) tokens.*|\1|p' "$tmp/cs.err")
shifts=$(sed -n 's/^ctx shifts *= *\([0-9]*\).*/\1/p' "$tmp/cs.err")
# the summary's eval counts the decode steps: every token but the first (the prompt step's)
[ $rc -eq 0 ] && [ "$eval_n" = 199 ] && [ "${shifts:-0}" -ge 4 ] \
  && ok "run --context-shift -c 64 -n 200: 200 tokens, $shifts shifts" || bad "run --context-shift (rc $rc): $(tail -4 "$tmp/cs.err")"
python3 - "$tmp/plain.txt" "$tmp/cs.txt" <<'PY' && ok "the text before the first shift is the plain run's (which stops at the context)" || bad "shifted run does not begin with the plain run's text"
import sys
a, b = (open(p, "rb").read() for p in sys.argv[1:])
a = a.rstrip(b"\n")
sys.exit(0 if len(b) > len(a) + 20 and b.startswith(a) else 1)
PY
run --temp 0 --context-shift --keep -1 --summary=0 -v >"$tmp/k.txt" 2>"$tmp/k.err"
grep -q "context shift 1: kept 13 tokens, dropped 25" "$tmp/k.err" \
  && ok "--keep -1 keeps the whole prompt (13 tokens): $(grep -m1 -o 'context shift 1:.*' "$tmp/k.err")" \
  || bad "--keep -1: $(grep -m1 'context shift' "$tmp/k.err")"
run --temp 0 --context-shift --keep 3 --summary=0 -v >/dev/null 2>"$tmp/k3.err"
grep -q "context shift 1: kept 4 tokens, dropped 30" "$tmp/k3.err" \
  && ok "--keep 3 keeps the BOS and 3 tokens, drops (64 - 4) / 2" || bad "--keep 3: $(grep -m1 'context shift' "$tmp/k3.err")"

run --temp 0 --context-shift --lookup 4 --summary=0 >"$tmp/lk.txt" 2>>"$tmp/run.log"
cmp -s "$tmp/cs.txt" "$tmp/lk.txt" && ok "--lookup 4 with --context-shift: the same text" || bad "--lookup with --context-shift differs"

# ---- the same over two workers ----------------------------------------------------------------
start_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w1 not ready: $(cat "$tmp/w1.log")"
E1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w2 not ready: $(cat "$tmp/w2.log")"
E2=$EP
for samp in "--temp 0" "--temp 0.8 -s 3 --keep 2"; do
  run $samp --context-shift --summary=0 >"$tmp/one.txt" 2>>"$tmp/run.log"
  run $samp --context-shift --summary=0 --workers "$E1,$E2" >"$tmp/two.txt" 2>>"$tmp/run.log"
  [ -s "$tmp/one.txt" ] && cmp -s "$tmp/one.txt" "$tmp/two.txt" \
    && ok "2 workers == one process past the context ($samp)" || bad "2 workers differ from one process ($samp)"
done

# ---- a worker lost after shifts: the sequence is replayed from its shifted text and completes
# (its tokens after the recovery differ from an undisturbed run's: the replay's cache is a fresh
# prefill of the shifted text, the undisturbed one's holds keys computed before the shift)
MS="$tmp/s.gguf"   # big enough that a long generation takes a few seconds
make_model "$MS" --preset small --layers 6 --n-vocab 512 -s 42
srun() { T run -m "$MS" --no-display-prompt --summary=0 -t 1 -c 128 -p "Hello world" -n 1500 --temp 0 --ignore-eos --context-shift "$@"; }
srun >"$tmp/sref.txt" 2>>"$tmp/run.log"
start_worker f1 "$LOOPBACK_ANY" -m "$MS" -t 1 || die "worker f1 not ready"
start_worker f2 "$LOOPBACK_ANY" -m "$MS" -t 1 || die "worker f2 not ready"
F2=$WPID E2b=$EP
start_worker f3 "$LOOPBACK_ANY" -m "$MS" -t 1 || die "worker f3 not ready"
: >"$tmp/f.log"
srun --workers "$(sed -n 's/^ready //p' "$tmp/f1.out"),$E2b,$EP" -v --summary=1 >"$tmp/f.txt" 2>"$tmp/f.log" &
R=$!
for _ in $(seq 1 200); do grep -q "context shift 2:" "$tmp/f.log" && break; sleep 0.05; done
kill -9 $F2
wait $R; rc=$?
head -c 200 "$tmp/sref.txt" >"$tmp/sref.head"
head -c 200 "$tmp/f.txt" >"$tmp/f.head"
if [ $rc -eq 0 ] && grep -q "recovered" "$tmp/f.log" && grep -q "context shift 2:" "$tmp/f.log" && cmp -s "$tmp/sref.head" "$tmp/f.head" \
  && grep -Eq '^eval .* / *1499 tokens' "$tmp/f.log"; then   # the 1500th: the prompt step's
  ok "a worker killed after 2 shifts: recovered, the shifted text replayed, all 1500 tokens generated (--ignore-eos)"
else bad "kill after shifts (rc $rc): $(grep -v ' D ' "$tmp/f.log" | tail -4)"; fi

# ---- tern serve ---------------------------------------------------------------------------------
start_serve s1 -m "$M" -t 2 -c 64 -np 2 --context-shift --metrics || die "serve did not start: $(cat "$tmp/s1.log")"
wait_health "$URL" 30 || die "serve not healthy: $(cat "$tmp/s1.log")"
U1=$URL
start_serve s0 -m "$M" -t 2 -c 64 -np 1 || die "serve (no shift) did not start: $(cat "$tmp/s0.log")"
wait_health "$URL" 30 || die "serve (no shift) not healthy"
U0=$URL
usage() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["usage"]["completion_tokens"], d["choices"][0]["finish_reason"])' "$1" 2>/dev/null; }
C "$U1/v1/completions" -d "{\"prompt\":\"$P\",\"max_tokens\":150,\"temperature\":0}" >"$tmp/a.json" &
p1=$!
C "$U1/v1/chat/completions" -d '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":120,"temperature":0,"n_keep":-1}' >"$tmp/b.json" &
p2=$!
wait $p1 $p2
[ "$(usage "$tmp/a.json")" = "150 length" ] && ok "serve --context-shift -c 64: completion of 150 tokens, finish_reason length" \
  || bad "serve completion: $(head -c 300 "$tmp/a.json")"
[ "$(usage "$tmp/b.json")" = "120 length" ] && ok "serve --context-shift: chat of 120 tokens with n_keep -1 (beside it)" \
  || bad "serve chat: $(head -c 300 "$tmp/b.json")"
n=$(C "$U1/metrics" | awk '$1=="tern_context_shifts_total"{print $2}')
[ "${n:-0}" -ge 4 ] && ok "/metrics: tern_context_shifts_total $n" || bad "/metrics context shifts: '$n'"
C "$U0/v1/completions" -d "{\"prompt\":\"$P\",\"max_tokens\":150,\"temperature\":0}" >"$tmp/c.json"
[ "$(usage "$tmp/c.json")" = "51 length" ] && ok "serve without --context-shift stops at the context (51 tokens)" \
  || bad "serve without shift: $(head -c 300 "$tmp/c.json")"
code=$(C -o "$tmp/e.json" -w '%{http_code}' "$U1/v1/completions" -d "{\"prompt\":\"$P\",\"max_tokens\":4,\"n_keep\":-3}")
[ "$code" = 400 ] && grep -q n_keep "$tmp/e.json" && ok "n_keep -3 refused (400)" || bad "n_keep -3: $code $(cat "$tmp/e.json")"

# ---- tern chat ----------------------------------------------------------------------------------
chat_in=$'Hello there\nWhat is two plus two?\nTell me more\nAnd again\n'
out=$(printf '%s' "$chat_in" | T chat -m "$M" --temp 0 -n 40 -t 2 -c 64 -sys "You are terse." --context-shift -v 2>"$tmp/chat.err"); rc=$?
prompts=$(printf '%s' "$out" | grep -o '> ' | wc -l)
if [ $rc -eq 0 ] && [ "$prompts" -ge 5 ] && grep -q "chat: the context is full" "$tmp/chat.err" \
  && grep -q "a context shift keeps the first 13 tokens" "$tmp/chat.err" && ! grep -q "reply is cut" "$tmp/chat.err"; then
  ok "chat --context-shift: 4 turns of 40 tokens in a context of 64, the system message kept"
else bad "chat --context-shift (rc $rc, $prompts prompts): $(grep -v ' D ' "$tmp/chat.err" | tail -3)"; fi
out=$(printf '%s' "$chat_in" | T chat -m "$M" --temp 0 -n 40 -t 2 -c 64 -sys "You are terse." 2>&1 >/dev/null)
printf '%s' "$out" | grep -q "context" && ok "chat without --context-shift stops at the context: $(printf '%s' "$out" | grep -m1 context)" \
  || bad "chat without shift: '$out'"

# ---- bad values ---------------------------------------------------------------------------------
expect_err() {
  local what=$1 err rc lines
  shift
  err=$(T "$@" 2>&1 >/dev/null </dev/null); rc=$?
  lines=$(printf '%s\n' "$err" | grep -c .)
  [ $rc -ne 0 ] && [ $rc -lt 124 ] && [ "$lines" -eq 1 ] && ok "$what: $err" || bad "$what: rc $rc: $err"
}
expect_err "run --keep -2" run -m "$M" -p hi -n 2 --context-shift --keep -2
expect_err "run --keep not a number" run -m "$M" -p hi -n 2 --keep many
expect_err "chat --no-cache with --context-shift" chat -m "$M" --no-cache --context-shift
long=$(for i in $(seq 1 40); do printf 'word%d ' "$i"; done)
expect_err "run: a prompt longer than the context is still refused" run -m "$M" -c 16 -p "$long" -n 4 --context-shift

finish 30
