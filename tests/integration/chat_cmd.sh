#!/usr/bin/env bash
# `tern chat` commands and prompt cache, driven over stdin on a tiny generated model, each checked
# against the same conversation typed without the command (or in a fresh process): /save in one
# process then /load (and --chat-file) in another and a new turn == the conversation typed in one
# process (greedy and seeded); /regen gives the reply again at temp 0; /clear then a question ==
# a fresh process's first answer (greedy and seeded), the system message's tokens reused;
# the same after context shifts; /undo; /read FILE == the same text typed on continued lines (a trailing backslash); //text
# sends /text; unknown commands and bad files (missing, not JSON, wrong shape, too large) are one
# line each and the chat goes on; --prompt-cache: the second start reuses the saved tokens and
# answers as a start without it, -ro leaves the file, a corrupt file is one line; over two
# workers the cache file of one process and /load + /regen give one process's replies.
source "$(dirname "$0")/lib.bash"
M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 11
SYS="You are a helpful assistant who answers in few words."
Q1="Hello there"
Q2="What is two plus two?"
# The random model's replies hold bytes that are not UTF-8 (byte tokens, cut inside a character),
# which JSON cannot carry (/save writes them as U+FFFD): where a saved conversation is read back,
# a grammar keeps the replies to ASCII letters.
G=(--grammar 'root ::= [a-z ]+')

# chat NAME INPUT ARGS...: INPUT on stdin of `tern chat` (-n 10, 2 threads, -v); stdout to
# $tmp/NAME.out, stderr to $tmp/NAME.log; returns tern's status
chat() {
  local name=$1 input=$2
  shift 2
  printf '%s' "$input" | (cd "$tmp" && timeout 60 "$TERN" chat -m "$M" -n 10 -t 2 -v "$@") >"$tmp/$name.out" 2>"$tmp/$name.log"
}
# py EXPR-SCRIPT ARGS...: runs a python check over files of $tmp (0: holds)
py() { local s=$1; shift; (cd "$tmp" && python3 -c "$s" "$@"); }
# errs NAME: the log's lines that are not debug or info lines
errs() { grep -v -E '^[0-9]+:C [0-9:.]+ [DI] |^local \[' "$tmp/$1.log"; }

i=0
for samp in "--temp 0" "--temp 0.8 -s 3"; do
  # ---- /save in one process, /load in another, one more turn == both turns typed in one ----
  chat ref$i "$Q1"$'\n'"$Q2"$'\n/save ref'$i$'.json\n' $samp "${G[@]}" -sys "$SYS" || bad "reference chat failed: $(errs ref$i)"
  chat a$i "$Q1"$'\n/save a'$i$'.json\n' $samp "${G[@]}" -sys "$SYS" || bad "chat + /save failed: $(errs a$i)"
  chat b$i $'/load a'$i$'.json\n'"$Q2"$'\n/save b'$i$'.json\n' $samp "${G[@]}" || bad "chat /load failed: $(errs b$i)"
  # ref: "> R1\n> R2\n> > \n"; a: "> R1\n> > \n"; b: "> > R2\n> > \n" (the command prompts print nothing more)
  py 'import sys
ref, a, b = (open(f % sys.argv[1], "rb").read() for f in ("ref%s.out", "a%s.out", "b%s.out"))
end = b"> > \n"
sys.exit(0 if a.endswith(end) and b.startswith(b"> ") and ref == a[:-len(end)] + b[2:] and len(ref) > 12 else 1)' $i \
    && cmp -s "$tmp/ref$i.json" "$tmp/b$i.json" \
    && ok "/save, /load in a fresh process, a new turn == the conversation typed in one process ($samp)" \
    || bad "/save + /load differs from one process ($samp): $(errs b$i)"
  grep -q "tern chat: 3 messages loaded from a$i.json" "$tmp/b$i.log" && ok "/load says what it loaded" || bad "/load: $(errs b$i)"
  chat c$i "$Q2"$'\n/save c'$i$'.json\n' $samp "${G[@]}" --chat-file a$i.json || bad "chat --chat-file failed: $(errs c$i)"
  cmp -s "$tmp/ref$i.json" "$tmp/c$i.json" && ok "--chat-file FILE == /load FILE ($samp)" || bad "--chat-file differs ($samp)"

  # ---- /clear then a question == a fresh process's first answer ----
  chat fresh$i "$Q2"$'\n' $samp -sys "$SYS" || bad "fresh chat failed"
  chat clear$i "$Q1"$'\n'"$Q2"$'\n/clear\n'"$Q2"$'\n' $samp -sys "$SYS" || bad "chat /clear failed: $(errs clear$i)"
  reused=$(grep -o '[0-9]* reused from the cache' "$tmp/clear$i.log" | tail -1 | cut -d' ' -f1)
  n_tok=$(grep -o 'chat: [0-9]* tokens in the conversation' "$tmp/fresh$i.log" | head -1 | cut -d' ' -f2)
  py 'import sys
f, c = (open(x % sys.argv[1], "rb").read() for x in ("fresh%s.out", "clear%s.out"))
sys.exit(0 if c.endswith(b"> " + f) and len(f) > 6 else 1)' $i && [ "${reused:-0}" -gt 10 ] \
    && ok "/clear then the question == a fresh process's first answer, $reused of its $n_tok tokens from the cache ($samp)" \
    || bad "/clear differs from a fresh process ($samp, reused '$reused'): $(errs clear$i)"
  i=$((i + 1))
done

# ---- after context shifts (-c 64): /clear then a question == a fresh process's first answer ----
CS=(--temp 0 -n 30 -c 64 --context-shift -sys "Be terse.")
chat csfresh "$Q2"$'\n' "${CS[@]}"
chat csclear "$Q1"$'\n'"$Q2"$'\nTell me more\n/clear\n'"$Q2"$'\n' "${CS[@]}"
py 'import sys
f, c = (open(x, "rb").read() for x in ("csfresh.out", "csclear.out"))
sys.exit(0 if c.endswith(b"> " + f) and len(f) > 6 else 1)' && grep -q "context is full" "$tmp/csclear.log" \
  && ok "/clear after $(grep -c 'context is full' "$tmp/csclear.log") context shifts == a fresh process's first answer" \
  || bad "/clear after context shifts: $(errs csclear)"

# ---- /regen at temp 0: the same reply again; the conversation keeps one of them ----
chat regen "$Q1"$'\n/regen\n/save regen.json\n' --temp 0 -sys "$SYS"
chat one "$Q1"$'\n/save one.json\n' --temp 0 -sys "$SYS"
py 'import sys
o = open("regen.out", "rb").read()
r = open("one.out", "rb").read()   # "> R1\n> > \n"
r1 = r[2:-len(b"> > \n")]
sys.exit(0 if o == b"> " + r1 + b"> " + r1 + b"> > \n" and len(r1) > 4 else 1)' && cmp -s "$tmp/regen.json" "$tmp/one.json" \
  && ok "/regen at temp 0 gives the reply again, which replaces the first" || bad "/regen: $(od -c "$tmp/regen.out" | head -4)"
chat regen0 $'/regen\n' --temp 0 -sys "$SYS"
grep -q "/regen: no message of yours to answer" "$tmp/regen0.log" && ok "/regen with nothing to answer: one line" || bad "/regen on nothing: $(errs regen0)"

if grep -q $'\xef\xbf\xbd' "$tmp/one.json"; then
  grep -q "bytes that are not UTF-8 written as U+FFFD" "$tmp/one.log" && ok "/save says which bytes JSON could not hold" \
    || bad "/save wrote U+FFFD silently: $(errs one)"
fi

# ---- /undo: the last exchange goes, the next turn is as if it never was ----
chat undo "$Q1"$'\n'"$Q1"$'\n/undo\n'"$Q2"$'\n/save undo.json\n' --temp 0 "${G[@]}" -sys "$SYS"
cmp -s "$tmp/undo.json" "$tmp/ref0.json" && grep -q "dropped the last 2 messages" "$tmp/undo.log" \
  && ok "/undo drops the last exchange: the conversation == one typed without it" || bad "/undo: $(errs undo)"

# ---- /read FILE == the same text typed (multi-line with a trailing backslash); //text ----
printf 'Tell me\nabout two plus two\n' >"$tmp/q.txt"
chat read $'/read q.txt\n/save read.json\n' --temp 0 -sys "$SYS"
chat typed $'Tell me\\\nabout two plus two\n/save typed.json\n' --temp 0 -sys "$SYS"
cmp -s "$tmp/read.out" "$tmp/typed.out" && cmp -s "$tmp/read.json" "$tmp/typed.json" \
  && py 'import json, sys; m = json.load(open("typed.json"))["messages"]; sys.exit(0 if m[1]["content"] == "Tell me\nabout two plus two" else 1)' \
  && ok "/read FILE == its text typed over two lines joined by a trailing backslash" || bad "/read vs typed: $(errs read)"
chat slash $'//etc/hosts is a file\n/save slash.json\n' --temp 0
py 'import json, sys; m = json.load(open("slash.json"))["messages"]; sys.exit(0 if m[0]["content"] == "/etc/hosts is a file" and len(m) == 2 else 1)' \
  && ok "//text sends /text" || bad "//text: $(cat "$tmp/slash.json")"

# ---- bad commands and files: one line each, the chat goes on as if they were not there ----
printf 'not json' >"$tmp/bad1.json"
printf '{"messages": {"role": "user"}}' >"$tmp/bad2.json"
printf '{"messages": [{"role": "tool", "content": "x"}]}' >"$tmp/bad3.json"
printf '{"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "y"}]}' >"$tmp/bad4.json"
printf '{"messages": [{"role": "user", "content": 42}]}' >"$tmp/bad5.json"
printf '[1, 2, 3]' >"$tmp/bad6.json"
python3 -c 'import sys; open(sys.argv[1], "w").write("{\"messages\": [" + "[" * 5000 + "]" * 5000 + "]}")' "$tmp/deep.json"
truncate -s 17M "$tmp/huge.json"
truncate -s 2M "$tmp/huge.txt"
: >"$tmp/empty.txt"
printf 'a\0b' >"$tmp/nul.txt"
cmds=$'/load nope.json\n/load bad1.json\n/load bad2.json\n/load bad3.json\n/load bad4.json\n/load bad5.json\n'
cmds+=$'/load bad6.json\n/load deep.json\n/load huge.json\n/read nope.txt\n/read huge.txt\n/read empty.txt\n/read nul.txt\n'
cmds+=$'/save nodir/x.json\n/frobnicate\n/load\n/clear now\n/undo\n'
n_cmds=$(printf '%s' "$cmds" | grep -c .)
chat bad "$cmds$Q1"$'\n/save bad.json\n' --temp 0 -sys "$SYS"; rc=$?
n_err=$(errs bad | grep -v -c 'messages saved to')
cmp -s "$tmp/bad.json" "$tmp/one.json" && [ $rc -eq 0 ] && [ "$n_err" -eq "$n_cmds" ] \
  && ok "$n_cmds bad commands and files: one line each, then the chat goes on unchanged" \
  || bad "bad commands (rc $rc, $n_err lines for $n_cmds): $(errs bad)"
for pat in "cannot open conversation file 'nope.json'" "bad1.json: not JSON" "bad2.json: not a conversation" \
  "bad3.json: message 1: a role other than" "bad4.json: message 2: a system message after the first" \
  "bad5.json: message 1: 'content' is not" "bad6.json: not a conversation" "deep.json: not JSON" "huge.json' is too large" \
  "cannot open /read file 'nope.txt'" "huge.txt' is too large" "'empty.txt' is empty" "'nul.txt' holds a NUL byte" \
  "/save: cannot write nodir/x.json" "unknown command /frobnicate" "usage: /load FILE" "/clear takes no argument" \
  "/undo: nothing to undo"; do
  grep -qF -- "$pat" "$tmp/bad.log" || bad "no line with '$pat'"
done
out=$(cd "$tmp" && printf '%s\n' "$Q1" | timeout 60 "$TERN" chat -m "$M" -n 4 --chat-file bad3.json 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] && [ "$(printf '%s\n' "$out" | grep -c .)" -eq 1 ] && ok "--chat-file with a bad file: $out" || bad "--chat-file bad (rc $rc): $out"
out=$("$TERN" chat -m "$M" -sys x --chat-file a0.json 2>&1 </dev/null); rc=$?
[ $rc -eq 1 ] && grep -q -- "-sys or --chat-file" <<<"$out" && ok "-sys with --chat-file: $out" || bad "-sys + --chat-file: rc $rc: $out"
"$TERN" chat --help | grep -q "/regen" && ok "chat --help lists the commands" || bad "chat --help has no commands"

# ---- --prompt-cache: the second start reuses the saved tokens, replies as without it ----
chat nopc "$Q1"$'\n'"$Q2"$'\n' --temp 0 -sys "$SYS"
chat pc1 "$Q1"$'\n' --temp 0 -sys "$SYS" --prompt-cache pc.bin
chat pc2 "$Q1"$'\n'"$Q2"$'\n' --temp 0 -sys "$SYS" --prompt-cache pc.bin; rc=$?
line=$(grep -o 'prompt cache: [0-9]* of the [0-9]* restored tokens reused' "$tmp/pc2.log")
n_re=$(cut -d' ' -f3 <<<"$line")
grep -q "prompt cache pc.bin does not exist yet" "$tmp/pc1.log" && grep -q "prompt cache: [0-9]* tokens saved to pc.bin" "$tmp/pc1.log" \
  && ok "--prompt-cache: made at the first exit: $(grep -o 'prompt cache: [0-9]* tokens saved.*' "$tmp/pc1.log")" || bad "--prompt-cache first start: $(cat "$tmp/pc1.log")"
[ $rc -eq 0 ] && [ "${n_re:-0}" -gt 20 ] && cmp -s "$tmp/pc2.out" "$tmp/nopc.out" \
  && ok "--prompt-cache: the second start says '$line' and replies as without the cache" \
  || bad "--prompt-cache second start (rc $rc, '$line'): $(errs pc2)"
cp "$tmp/pc.bin" "$tmp/pc.keep"
chat pc3 "$Q2"$'\n' --temp 0 -sys "$SYS" --prompt-cache pc.bin --prompt-cache-ro
cmp -s "$tmp/pc.bin" "$tmp/pc.keep" && ! grep -q "tokens saved" "$tmp/pc3.log" && cmp -s "$tmp/pc3.out" "$tmp/fresh0.out" \
  && ok "--prompt-cache-ro: the file is only read ($(grep -o '[0-9]* of the [0-9]* restored tokens reused' "$tmp/pc3.log"))" \
  || bad "--prompt-cache-ro: $(errs pc3)"
printf 'TERNKV\r\ngarbage' >"$tmp/bad.bin"
out=$(cd "$tmp" && printf '%s\n' "$Q1" | timeout 60 "$TERN" chat -m "$M" -n 4 --prompt-cache bad.bin 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] && [ "$(printf '%s\n' "$out" | grep -c .)" -eq 1 ] && ok "--prompt-cache with a corrupt file: $out" || bad "corrupt cache (rc $rc): $out"

# ---- over two workers: one process's cache file, /load and /regen == one process ----
start_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w1 not ready: $(cat "$tmp/w1.log")"
E1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w2 not ready: $(cat "$tmp/w2.log")"
E2=$EP
in=$'/load a0.json\n'"$Q2"$'\n/regen\n/save w.json\n'
cp "$tmp/pc.keep" "$tmp/pcw.bin"
chat one_w "$in" --temp 0 --prompt-cache pc.keep --prompt-cache-ro
chat two_w "$in" --temp 0 --prompt-cache pcw.bin --workers "$E1,$E2"; rc=$?
l1=$(grep -o 'prompt cache: [0-9]* of.*' "$tmp/one_w.log"); l2=$(grep -o 'prompt cache: [0-9]* of.*' "$tmp/two_w.log")
[ $rc -eq 0 ] && [ -n "$l2" ] && [ "$l1" = "$l2" ] && cmp -s "$tmp/one_w.out" "$tmp/two_w.out" && grep -q "tokens saved to pcw.bin" "$tmp/two_w.log" \
  && ok "2 workers: one process's cache file ('$l2'), /load, /regen == one process" || bad "2 workers (rc $rc, '$l1' vs '$l2'): $(errs two_w)"
finish 20
