#!/usr/bin/env bash
# Slot save / restore (llama-server's /slots/{id}?action=save|restore|erase) and llama-cli's
# --prompt-cache, end to end on a tiny generated model (6 layers). tern run --prompt-cache: the
# first run saves (its output unchanged); a second run whose prompt continues the first starts
# after the restored beginning (prompt eval counts only the rest) and prints the greedy text of a
# run without the cache; --prompt-cache-ro leaves the file as it was; stages called directly
# (pipeline_local) restore too; an f32 cache's file restores into an f16 cache (converted). A file
# saved by 2 workers is byte for byte one process's, and restores into one process and 3 workers
# (another split) with the same text (MPI ranks: mpi.sh).
# Truncated, bit-flipped, another model's and too-long files are refused in one line. tern serve:
# 501 without --slot-save-path; save -> erase -> restore (/slots shows the tokens) -> the next
# request reports cached_tokens and gives a fresh request's text, erase really forgets; path
# traversal, bad ids / actions, missing and corrupt files, no API key -> 4xx with one-line
# messages that do not show the server's directory; a busy slot -> 409 while an idle one saves
# between the busy one's steps (its reply completes).
source "$(dirname "$0")/lib.bash"
T() { timeout 60 "$TERN" "$@"; }
C() { curl -s --max-time 60 -H 'Content-Type: application/json' "$@"; }

M="$tmp/m.gguf" M2="$tmp/other.gguf"
make_model "$M" --preset tiny --layers 6 --arch bitnet-b1.58 --type i2_s --seed 11
make_model "$M2" --preset tiny --layers 6 --arch bitnet-b1.58 --type i2_s --seed 12
LONG="You are a helpful assistant. The quick brown fox jumps over the lazy dog, and the lazy dog sleeps in the warm sun all afternoon long."
MORE="$LONG Now tell me a story about them."
run() { T run -m "$M" --no-display-prompt -n 24 --temp 0 -t 2 "$@"; }
# pe FILE: the summary's prompt eval token count; reused FILE: "of them reused" count
pe() { sed -n 's|^prompt eval .*/ *\([0-9]*\) tokens.*|\1|p' "$1"; }
reused() { sed -n 's|^prompt cache = .* \([0-9]*\) of them reused.*|\1|p' "$1"; }
# one_line FILE TEXT: FILE (stderr) has exactly one line that is not a log line, and it holds TEXT
one_line() { [ "$(grep -cv '^[0-9]*:[A-Z0-9]* ' "$1")" = 1 ] && grep -q "$2" "$1"; }

# ---- tern run --prompt-cache ------------------------------------------------------------------
run -p "$LONG" --summary=0 >"$tmp/ref_long.txt" 2>>"$tmp/run.log" || die "plain run failed"
run -p "$MORE" >"$tmp/ref.txt" 2>"$tmp/ref.err" || die "plain run failed"
run -p "$LONG" --prompt-cache "$tmp/pc.bin" >"$tmp/first.txt" 2>"$tmp/first.err"; rc=$?
[ $rc = 0 ] && [ -s "$tmp/pc.bin" ] && cmp -s "$tmp/first.txt" "$tmp/ref_long.txt" \
  && grep -Eq '^prompt cache = 0 tokens restored, 0 of them reused, [1-9][0-9]* saved' "$tmp/first.err" \
  && ok "first run: saved $(grep -o '[0-9]* saved' "$tmp/first.err") to the new cache file, same text" \
  || bad "first --prompt-cache run (rc $rc): $(tail -3 "$tmp/first.err")"
cp "$tmp/pc.bin" "$tmp/pc.orig"
run -p "$MORE" --prompt-cache "$tmp/pc.bin" --prompt-cache-ro >"$tmp/c.txt" 2>"$tmp/c.err"; rc=$?
u=$(reused "$tmp/c.err"); p_ref=$(pe "$tmp/ref.err"); p_c=$(pe "$tmp/c.err")
[ $rc = 0 ] && cmp -s "$tmp/c.txt" "$tmp/ref.txt" && [ "${u:-0}" -gt 20 ] && [ "$p_c" = $((p_ref - u)) ] \
  && ok "second run (longer prompt): $u tokens restored instead of prefilled (prompt eval $p_c of $p_ref), the uncached text" \
  || bad "second run (rc $rc, reused ${u:-?}, eval ${p_c:-?} of ${p_ref:-?}): $(tail -4 "$tmp/c.err")"
cmp -s "$tmp/pc.bin" "$tmp/pc.orig" && ok "--prompt-cache-ro leaves the file as it was" || bad "--prompt-cache-ro changed the file"
run -p "$MORE" --prompt-cache "$tmp/pc.bin" >"$tmp/c2.txt" 2>"$tmp/c2.err"
run -p "$MORE" --prompt-cache "$tmp/pc.bin" >"$tmp/c3.txt" 2>"$tmp/c3.err"
u3=$(reused "$tmp/c3.err")
cmp -s "$tmp/c2.txt" "$tmp/ref.txt" && cmp -s "$tmp/c3.txt" "$tmp/ref.txt" && [ "${u3:-0}" -gt "$u" ] \
  && ok "the file is updated after a run: the same prompt again reuses $u3 tokens" || bad "update: reused ${u3:-?}: $(tail -3 "$tmp/c3.err")"

TERN_EMBEDDED=direct run -p "$MORE" --stages 2 --prompt-cache "$tmp/pc.orig" --prompt-cache-ro >"$tmp/d.txt" 2>"$tmp/d.err"
cmp -s "$tmp/d.txt" "$tmp/ref.txt" && [ "$(reused "$tmp/d.err")" = "$u" ] \
  && ok "stages called directly (TERN_EMBEDDED=direct, 2 stages): same text, $u reused" || bad "direct stages: $(tail -3 "$tmp/d.err")"
run -p "$LONG" --kv-type f32 --prompt-cache "$tmp/f32.bin" --summary=0 >/dev/null 2>>"$tmp/run.log"
run -p "$MORE" --prompt-cache "$tmp/f32.bin" --prompt-cache-ro >"$tmp/cv.txt" 2>"$tmp/cv.err"
# (not the f16 run's text: deeper layers' rows were computed attending over f32 values)
[ "$(stat -c %s "$tmp/f32.bin")" -gt "$(stat -c %s "$tmp/pc.orig")" ] && [ -s "$tmp/cv.txt" ] && [ "$(reused "$tmp/cv.err")" = "$u" ] \
  && ok "an f32 cache's file restores into an f16 cache (converted), $u tokens reused" || bad "f32 -> f16: $(tail -3 "$tmp/cv.err")"

# ---- another placement of the layers -----------------------------------------------------------
E=()
for w in w1 w2 w3 w4 w5; do
  start_worker $w "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker $w not ready: $(cat "$tmp/$w.log")"
  E+=("$EP")
done
run -p "$LONG" --prompt-cache "$tmp/cl.bin" --workers "${E[0]},${E[1]}" >"$tmp/cl.txt" 2>>"$tmp/run.log"
cmp -s "$tmp/cl.txt" "$tmp/ref_long.txt" && cmp -s "$tmp/cl.bin" "$tmp/pc.orig" \
  && ok "2 workers ($(grep -ho 'loaded layers \[[0-9, ]*\]' "$tmp/w1.log" "$tmp/w2.log" | tr '\n' ' ')) save byte for byte one process's file" \
  || bad "2-worker save differs from one process's"
run -p "$MORE" --prompt-cache "$tmp/cl.bin" --prompt-cache-ro >"$tmp/cl1.txt" 2>"$tmp/cl1.err"
cmp -s "$tmp/cl1.txt" "$tmp/ref.txt" && [ "$(reused "$tmp/cl1.err")" = "$u" ] \
  && ok "the 2-worker file restores into one process: same text, $u tokens reused" || bad "2 workers -> one process: $(tail -3 "$tmp/cl1.err")"
run -p "$MORE" --prompt-cache "$tmp/cl.bin" --prompt-cache-ro --workers "${E[2]},${E[3]},${E[4]}" >"$tmp/cl3.txt" 2>"$tmp/cl3.err"
cmp -s "$tmp/cl3.txt" "$tmp/ref.txt" && [ "$(reused "$tmp/cl3.err")" = "$u" ] \
  && ok "and into 3 workers ($(grep -ho 'loaded layers \[[0-9, ]*\]' "$tmp/w3.log" "$tmp/w4.log" "$tmp/w5.log" | tr '\n' ' ')): same text" \
  || bad "2 workers -> 3 workers: $(tail -3 "$tmp/cl3.err")"

# ---- bad files: one line each, nothing run --------------------------------------------------
head -c 3000 "$tmp/pc.orig" >"$tmp/trunc.bin"
python3 - "$tmp/pc.orig" "$tmp/flip.bin" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read()); b[len(b) // 2] ^= 0x10
open(sys.argv[2], "wb").write(b)
PY
for c in "trunc.bin|truncated" "flip.bin|checksum mismatch"; do
  f=${c%%|*} want=${c#*|}
  run -p "$MORE" --prompt-cache "$tmp/$f" >/dev/null 2>"$tmp/bad.err"; rc=$?
  [ $rc = 1 ] && one_line "$tmp/bad.err" "$want" && ok "$f refused: $(grep -v '^[0-9]*:' "$tmp/bad.err")" || bad "$f (rc $rc): $(cat "$tmp/bad.err")"
done
cp "$tmp/pc.orig" "$tmp/keep.bin"
T run -m "$M2" --no-display-prompt -n 4 -t 2 -p "$MORE" --prompt-cache "$tmp/keep.bin" >/dev/null 2>"$tmp/bad.err"; rc=$?
[ $rc = 1 ] && one_line "$tmp/bad.err" "saved with another model file" && cmp -s "$tmp/keep.bin" "$tmp/pc.orig" \
  && ok "another model's file refused (and kept)" || bad "another model (rc $rc): $(cat "$tmp/bad.err")"
run -c 40 -p "Hi" --prompt-cache "$tmp/keep.bin" >/dev/null 2>"$tmp/bad.err"; rc=$?
[ $rc = 1 ] && one_line "$tmp/bad.err" "do not fit a context of 40" && ok "a file longer than -c refused" || bad "-c 40 (rc $rc): $(cat "$tmp/bad.err")"

# ---- tern serve: /slots/{id}?action= ------------------------------------------------------------
start_serve s0 -m "$M" -t 2 || die "serve s0 did not start: $(cat "$tmp/s0.log")"
wait_health "$URL" 30 || die "s0 not healthy"
st=$(C -o "$tmp/r.json" -w '%{http_code}' "$URL/slots/0?action=save" -d '{"filename":"x.bin"}')
[ "$st" = 501 ] && grep -q "slot-save-path" "$tmp/r.json" && ok "without --slot-save-path: 501" || bad "no slot path: $st $(cat "$tmp/r.json")"
kill "$SPID"
mkdir -p "$tmp/slots"
start_serve s1 -m "$M" -t 2 -np 1 --slot-save-path "$tmp/slots" --api-key k1 || die "serve s1 did not start: $(cat "$tmp/s1.log")"
wait_health "$URL" 30 || die "s1 not healthy"
A=(-H 'Authorization: Bearer k1')
# comp PROMPT [EXTRA_JSON]: a greedy completion of 16 tokens; prints "cached_tokens<TAB>text"
comp() {
  C "${A[@]}" "$URL/v1/completions" -d "{\"prompt\":\"$1\",\"max_tokens\":16,\"temperature\":0${2:-}}" \
    | python3 -c 'import json,sys; o=json.load(sys.stdin); print(o["usage"]["prompt_tokens_details"]["cached_tokens"], json.dumps(o["choices"][0]["text"]), sep="\t")'
}
# act ID ACTION [BODY]: POST /slots/ID?action=ACTION; the reply in $tmp/r.json, prints the status
act() { C "${A[@]}" -o "$tmp/r.json" -w '%{http_code}' -X POST "$URL/slots/$1?action=$2" ${3:+-d "$3"}; }
j() { python3 -c "import json,sys; o=json.load(open('$tmp/r.json')); print($1)"; }
ref=$(comp "$MORE" ',"cache_prompt":false' | cut -f2)
comp "$LONG" >/dev/null
st=$(act 0 save '{"filename":"x.bin"}')
n_saved=$(j 'o["n_saved"]')
[ "$st" = 200 ] && [ "$(j 'o["id_slot"], o["filename"], o["n_written"], "save_ms" in o["timings"]')" = "0 x.bin $(stat -c %s "$tmp/slots/x.bin") True" ] \
  && [ "$n_saved" -gt 20 ] && ok "save: $(cat "$tmp/r.json")" || bad "save: $st $(cat "$tmp/r.json")"
st=$(act 0 erase)
[ "$st" = 200 ] && [ "$(j 'o["id_slot"], o["n_erased"]')" = "0 $n_saved" ] \
  && [ "$(C "${A[@]}" "$URL/slots" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["n_cache_tokens"])')" = 0 ] \
  && ok "erase: $(cat "$tmp/r.json"), /slots shows nothing cached" || bad "erase: $st $(cat "$tmp/r.json")"
st=$(act 0 restore '{"filename":"x.bin"}')
[ "$st" = 200 ] && [ "$(j 'o["id_slot"], o["filename"], o["n_restored"], o["n_read"], "restore_ms" in o["timings"]')" = "0 x.bin $n_saved $(stat -c %s "$tmp/slots/x.bin") True" ] \
  && [ "$(C "${A[@]}" "$URL/slots" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["n_cache_tokens"])')" = "$n_saved" ] \
  && ok "restore: $(cat "$tmp/r.json")" || bad "restore: $st $(cat "$tmp/r.json")"
got=$(comp "$MORE")
[ "$(cut -f1 <<<"$got")" -gt 20 ] && [ "$(cut -f2 <<<"$got")" = "$ref" ] \
  && ok "the next request starts after $(cut -f1 <<<"$got") restored tokens, with a fresh request's text" || bad "after restore: $got, fresh: $ref"
act 0 erase >/dev/null
got=$(comp "$MORE")
[ "$(cut -f1 <<<"$got")" = 0 ] && [ "$(cut -f2 <<<"$got")" = "$ref" ] && ok "after erase nothing is cached" || bad "after erase: $got"
# errors
cp "$tmp/trunc.bin" "$tmp/slots/corrupt.bin"
for c in "0|save|{\"filename\":\"../x.bin\"}|400|plain file name" "0|save|{\"filename\":\"a/b.bin\"}|400|plain file name" \
         "0|restore|{\"filename\":\"..\"}|400|plain file name" "0|save|{}|400|filename" "0|save|nojson|400|not JSON" \
         "1|save|{\"filename\":\"x.bin\"}|400|no such slot" "-1|erase||400|no such slot" "0|frob||400|save, restore or erase" \
         "0|restore|{\"filename\":\"nope.bin\"}|404|nope.bin" "0|restore|{\"filename\":\"corrupt.bin\"}|400|truncated"; do
  IFS='|' read -r id a body want msg <<<"$c"
  st=$(act "$id" "$a" "$body")
  m=$(j 'o["error"]["message"]')
  [ "$st" = "$want" ] && grep -q "$msg" <<<"$m" && [ "$(wc -l <<<"$m")" = 1 ] && ! grep -q "$tmp" <<<"$m" \
    && ok "/slots/$id?action=$a $body: $st ($m)" || bad "/slots/$id?action=$a $body: $st $(cat "$tmp/r.json")"
done
[ ! -e "$tmp/x.bin" ] || bad "a save escaped the slot directory"
st=$(C -o /dev/null -w '%{http_code}' -X POST "$URL/slots/0?action=erase")
[ "$st" = 401 ] && ok "no API key: 401" || bad "no API key: $st"
kill "$SPID"

# a busy slot: 409, while an idle one saves between the busy one's steps (slow steps: 10 ms a layer)
TERN_TEST_BLOCK_DELAY_MS=10 start_serve s2 -m "$M" -t 2 -np 2 --slot-save-path "$tmp/slots" || die "serve s2 did not start"
wait_health "$URL" 30 || die "s2 not healthy"
A=()
C "$URL/v1/completions" -d '{"prompt":"Zebras run","max_tokens":80,"temperature":0,"ignore_eos":true}' >"$tmp/busy.json" &
BP=$!   # slot 0 (both are free)
for _ in $(seq 1 100); do
  C "$URL/slots" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)[0]["is_processing"] else 1)' && break
  sleep 0.05
done
comp "$LONG" >/dev/null   # slot 1, the only free one: done while slot 0 still generates
st1=$(act 1 save '{"filename":"idle.bin"}')
st0=$(act 0 save '{"filename":"busy.bin"}'); m0=$(j 'o["error"]["message"]')
wait $BP
[ "$st0" = 409 ] && grep -q "busy" <<<"$m0" && ok "a busy slot: 409 ($m0)" || bad "busy slot: $st0 $m0"
[ "$st1" = 200 ] && [ -s "$tmp/slots/idle.bin" ] \
  && [ "$(python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); print(o["usage"]["completion_tokens"])' "$tmp/busy.json")" = 80 ] \
  && ok "an idle slot saves while another generates, whose reply completes" || bad "idle save during a request: $st1 $(cat "$tmp/busy.json")"
finish 20
