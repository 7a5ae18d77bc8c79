#!/usr/bin/env bash
# Prompt lookup decoding (--lookup N) and speculative decoding with a draft model (-md) end to end
# on a tiny generated model whose greedy text falls into cycles (so drafts are taken): `tern run`
# prints the same text with N = 1, 4, 16 as without, takes some drafts (its summary says how
# many); with the model itself as draft every draft is taken, with another model of the same
# vocabulary few, the text is plain greedy's either way, also over two workers; a draft model of
# another vocabulary is refused; `tern serve --lookup` answers greedy requests (plain and
# streamed, two at once) as without it. Sampled (`--temp 0.8 -s 7`, also with --top-k 2 so that
# drafts are taken, and with a repeat penalty): --lookup and -md print plain decoding's text for
# that seed, in one process and over two workers, and the server's seeded request is the same
# with --lookup. An out-of-range N is refused.
source "$(dirname "$0")/lib.bash"
T() { timeout 120 "$TERN" "$@"; }
C() { curl -s --max-time 60 -H 'Content-Type: application/json' "$@"; }

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 11
run() { T run -m "$M" --no-display-prompt -p "The quick brown fox" -n 160 --temp 0 -t 2 "$@" 2>>"$tmp/run.log"; }
run --summary=0 >"$tmp/plain.txt"
for k in 1 4 16; do
  T run -m "$M" --no-display-prompt -p "The quick brown fox" -n 160 --temp 0 -t 2 --lookup $k >"$tmp/l$k.txt" 2>"$tmp/l$k.err"
  cmp -s "$tmp/plain.txt" "$tmp/l$k.txt" && ok "run --lookup $k == plain greedy" || bad "run --lookup $k differs"
done
taken=$(sed -n 's/^drafts *= *\([0-9]*\) of \([0-9]*\).*/\1 \2/p' "$tmp/l4.err")
[ -n "$taken" ] && [ "${taken% *}" -gt 0 ] && ok "run --lookup 4 took drafts: $taken (taken, checked)" \
  || bad "run --lookup 4 took no drafts: '$(cat "$tmp/l4.err")'"

# ---- a draft model (-md): the same model takes every draft; another one (same vocabulary, other
# weights, llama architecture) takes few; the text is plain greedy's either way
make_model "$tmp/other.gguf" --preset tiny --arch llama --type tq2_0 --seed 12 --vocab "$M"
for md in "$M" "$tmp/other.gguf"; do
  T run -m "$M" --no-display-prompt -p "The quick brown fox" -n 160 --temp 0 -t 2 -md "$md" --draft 6 >"$tmp/md.txt" 2>"$tmp/md.err"
  d=$(sed -n 's/^drafts *= *\([0-9]*\) of \([0-9]*\).*/\1 \2/p' "$tmp/md.err")
  cmp -s "$tmp/plain.txt" "$tmp/md.txt" && [ -n "$d" ] && ok "run -md $(basename "$md") == plain greedy (drafts taken, checked: $d)" \
    || bad "run -md $(basename "$md"): differs or no drafts ($(tail -2 "$tmp/md.err"))"
  [ "$md" = "$M" ] && { [ "${d% *}" = "${d#* }" ] && ok "the same model as draft: every draft taken" || bad "self-draft took $d"; }
done

# ---- sampled: the draw of a position is keyed on (seed, position), so checking drafts draws what
# plain decoding draws there; "S ARGS" names a case, S a sampling setting
srun() { T run -m "$M" --no-display-prompt -p "The quick brown fox" -n 160 -t 2 --temp 0.8 -s 7 "$@"; }
drafts() { sed -n 's/^drafts *= *\([0-9]*\) of \([0-9]*\).*/\1 \2/p' "$1"; }
S0=""; S1="--top-k 2"; S2="--top-k 2 --repeat-penalty 1.3 --repeat-last-n 16"
for i in 0 1 2; do
  eval "s=\$S$i"
  srun $s --summary=0 >"$tmp/sp$i.txt" 2>>"$tmp/run.log"
  for spec in "--lookup 4" "-md $M --draft 6" "-md $tmp/other.gguf --draft 4"; do
    srun $s $spec >"$tmp/ss.txt" 2>"$tmp/ss.err"
    d=$(drafts "$tmp/ss.err")
    name="run --temp 0.8 -s 7${s:+ $s} ${spec/$tmp\//}"
    if cmp -s "$tmp/sp$i.txt" "$tmp/ss.txt" && [ -n "$d" ]; then ok "$name == plain sampled (drafts taken, checked: $d)"
    else bad "$name differs or no drafts ($(tail -2 "$tmp/ss.err"))"; fi
    [ "$i" -ge 1 ] && [ "$spec" = "--lookup 4" ] && { [ "${d% *}" -gt 0 ] 2>/dev/null && ok "  ... drafts taken: $d" || bad "$name took no drafts: '$d'"; }
  done
done
cmp -s "$tmp/plain.txt" "$tmp/sp0.txt" && bad "--temp 0.8 printed greedy's text" || ok "--temp 0.8 -s 7 is not greedy's text"
srun -s 8 --summary=0 >"$tmp/s8.txt" 2>>"$tmp/run.log"
cmp -s "$tmp/s8.txt" "$tmp/sp0.txt" && bad "seeds 7 and 8 printed the same text" || ok "-s 8 differs from -s 7"
make_model "$tmp/othervocab.gguf" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 12
T run -m "$M" -p x -n 1 -md "$tmp/othervocab.gguf" >/dev/null 2>"$tmp/err.txt"; rc=$?
[ $rc -ne 0 ] && [ "$(grep -c . "$tmp/err.txt")" -eq 1 ] && grep -q "not the same vocabulary" "$tmp/err.txt" \
  && ok "a draft model with another vocabulary refused: $(cat "$tmp/err.txt")" || bad "-md other vocab (rc $rc): $(cat "$tmp/err.txt")"

start_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w1 not ready: $(cat "$tmp/w1.log")"
E1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w2 not ready: $(cat "$tmp/w2.log")"
E2=$EP
run --summary=0 --lookup 8 --workers "$E1,$E2" >"$tmp/cl.txt"
cmp -s "$tmp/plain.txt" "$tmp/cl.txt" && ok "run --lookup 8 over 2 workers == plain greedy" || bad "run --lookup 8 over workers differs"
run --summary=0 -md "$tmp/other.gguf" --workers "$E1,$E2" >"$tmp/cl2.txt"
cmp -s "$tmp/plain.txt" "$tmp/cl2.txt" && ok "run -md over 2 workers (the draft model here) == plain greedy" || bad "run -md over workers differs"
for i in 0 2; do
  eval "s=\$S$i"
  srun $s --summary=0 --workers "$E1,$E2" >"$tmp/cs.txt" 2>>"$tmp/run.log"
  cmp -s "$tmp/sp$i.txt" "$tmp/cs.txt" && ok "run --temp 0.8 -s 7${s:+ $s} over 2 workers == one process" || bad "sampled over workers differs${s:+ ($s)}"
  for spec in "--lookup 4" "-md $M --draft 6"; do
    srun $s $spec --summary=0 --workers "$E1,$E2" >"$tmp/cs.txt" 2>>"$tmp/run.log"
    cmp -s "$tmp/sp$i.txt" "$tmp/cs.txt" && ok "run --temp 0.8 -s 7${s:+ $s} ${spec/$tmp\//} over 2 workers == plain sampled" \
      || bad "run --temp 0.8 -s 7${s:+ $s} ${spec/$tmp\//} over 2 workers differs"
  done
done

start_serve s0 -m "$M" -t 2 -np 2 || die "serve did not start: $(cat "$tmp/s0.log")"
wait_health "$URL" 30 || die "serve not healthy"
U0=$URL
start_serve s1 -m "$M" -t 2 -np 2 --lookup 6 --metrics || die "serve --lookup did not start: $(cat "$tmp/s1.log")"
wait_health "$URL" 30 || die "serve --lookup not healthy"
U1=$URL
text() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["choices"][0]["text"], end="")' "$1"; }
B='{"prompt":"The quick brown fox","max_tokens":120,"temperature":0}'
C "$U0/v1/completions" -d "$B" >"$tmp/a.json"
C "$U1/v1/completions" -d "$B" >"$tmp/b1.json" & p1=$!
C "$U1/v1/completions" -d '{"prompt":"Once upon","max_tokens":120,"temperature":0}' >"$tmp/b2.json" & p2=$!
wait $p1 $p2
C "$U0/v1/completions" -d '{"prompt":"Once upon","max_tokens":120,"temperature":0}' >"$tmp/a2.json"
[ -n "$(text "$tmp/a.json")" ] && [ "$(text "$tmp/a.json")" == "$(text "$tmp/b1.json")" ] && [ "$(text "$tmp/a2.json")" == "$(text "$tmp/b2.json")" ] \
  && ok "serve --lookup 6: two greedy requests at once == without lookup" || bad "serve --lookup: $(head -c 200 "$tmp/b1.json")"
C -N "$U1/v1/completions" -d "${B%\}},\"stream\":true}" >"$tmp/s.sse"
st=$(python3 - "$tmp/s.sse" <<'PY'
import json, sys
out = []
for e in open(sys.argv[1], encoding="utf-8").read().split("\n\n"):
    if e.startswith("data: ") and e != "data: [DONE]":
        out.append(json.loads(e[6:])["choices"][0].get("text") or "")
sys.stdout.write("".join(out))
PY
)
[ "$st" == "$(text "$tmp/a.json")" ] && ok "serve --lookup 6 streamed == plain" || bad "serve --lookup streamed: '$st'"
B2='{"prompt":"The quick brown fox","max_tokens":120,"temperature":0.8,"top_k":2,"repeat_penalty":1.2,"seed":7}'
C "$U0/v1/completions" -d "$B2" >"$tmp/sa.json"
C "$U1/v1/completions" -d "$B2" >"$tmp/sb.json"
[ -n "$(text "$tmp/sa.json")" ] && [ "$(text "$tmp/sa.json")" == "$(text "$tmp/sb.json")" ] \
  && ok "serve --lookup 6: a seeded sampled request (temperature 0.8, penalty) == without lookup" || bad "serve --lookup sampled: $(head -c 200 "$tmp/sb.json")"
met=$(C "$U1/metrics" | awk '$1=="tern_lookup_draft_tokens_total"{d=$2} $1=="tern_lookup_draft_tokens_taken_total"{t=$2} END{print d+0, t+0}')
[ "${met#* }" -gt 0 ] && [ "${met% *}" -ge "${met#* }" ] && ok "/metrics: draft tokens checked, taken: $met" || bad "/metrics lookup: '$met'"

printf 'Hi\n' | T chat -m "$M" -n 4 --lookup 4 >/dev/null 2>"$tmp/err.txt"; rc=$?
[ $rc -ne 0 ] && grep -q "are for tern run" "$tmp/err.txt" && ok "chat --lookup refused (not silently ignored)" || bad "chat --lookup (rc $rc): $(cat "$tmp/err.txt")"
T run -m "$M" -p x -n 1 --lookup 17 >/dev/null 2>"$tmp/err.txt"; rc=$?
[ $rc -ne 0 ] && grep -q "lookup" "$tmp/err.txt" && ok "--lookup 17 refused: $(cat "$tmp/err.txt")" || bad "--lookup 17 (rc $rc): $(cat "$tmp/err.txt")"

finish 30
