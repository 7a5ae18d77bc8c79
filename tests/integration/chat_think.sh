#!/usr/bin/env bash
# `tern chat` with a reasoning model's template (tests/data/jinja/qwen3.jinja, --jinja) on a tiny
# generated model whose replies a grammar makes "<think>T</think>A": the thinking is shown between
# [thinking] and [/thinking] lines (stdout is not a terminal) and the answer after it; /save holds
# the answers with their thinking apart (reasoning_content), and a template that shows past
# turns' reasoning_content gets it (running, and after /load); the second turn's prompt has the
# token count of python jinja2's rendering of the saved conversation (Qwen3's drops the earlier
# thinking), and its reply is the one a fresh process gives
# from the saved first turn and the one --no-cache gives (the cache re-fed where the history
# differs from what was generated); --reasoning-format none keeps "<think>T</think>A" as the
# message; --reasoning-budget 0 and --chat-template-kwargs '{"enable_thinking":false}' render
# enable_thinking false (jinja2's token count); --reasoning-budget 5 forces </think> after 5
# thinking tokens; --no-show-thinking hides it; bad flags are one line.
source "$(dirname "$0")/lib.bash"
src=${TERN_SRC:?TERN_SRC not set}
T=$src/tests/data/jinja/qwen3.jinja
M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 11
Q1="Hello there"
Q2="What is two plus two?"
# bounded parts, so that a reply is a whole sentence well within -n
ARGS=(--jinja --chat-template-file "$T" --temp 0 -n 80 --grammar 'root ::= "<think>" [a-z ]{1,12} "</think>" [a-z]{1,10}')

# chat NAME INPUT ARGS...: INPUT on stdin; stdout to $tmp/NAME.out, stderr to $tmp/NAME.log, the
# debug log's conversation token counts to $tmp/NAME.tok; returns tern's status
chat() {
  local name=$1 input=$2 rc
  shift 2
  printf '%s' "$input" | (cd "$tmp" && timeout 60 "$TERN" chat -m "$M" -t 2 -v "${ARGS[@]}" "$@") >"$tmp/$name.out" 2>"$tmp/$name.log"
  rc=$?
  grep -o 'chat: [0-9]* tokens in the conversation' "$tmp/$name.log" | grep -o '[0-9]*' >"$tmp/$name.tok"
  return $rc
}
errs() { grep -v -E '^[0-9]+:C [0-9:.]+ [DI] ' "$tmp/$1.log"; }
# py SCRIPT ARGS...: a python check in $tmp (0: holds; what it prints explains a failure)
py() { local s=$1; shift; (cd "$tmp" && python3 -c "$s" "$@"); }
# the (thinking, answer) pairs shown on stdout
SHOWN='import json,re,sys
def shown(f): return re.findall(r"\[thinking\]\n(.*?)\n\[/thinking\]\n(.*?)\n", open(f).read(), re.S)
'
# render FILE N ENABLE: the token count of jinja2's rendering of FILE's first N messages with the
# generation prompt (enable_thinking ENABLE: True or False)
render() {
  py 'import json,sys,jinja2
msgs=json.load(open(sys.argv[1]))["messages"][:int(sys.argv[2])]
env=jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
def rx(m): raise Exception(m)
env.globals["raise_exception"]=rx
t=env.from_string(open(sys.argv[3]).read())
open("render.txt","w").write(t.render(messages=msgs, add_generation_prompt=True, enable_thinking=sys.argv[4]=="True",
    bos_token="", eos_token=""))' "$1" "$2" "$T" "$3" || return 1
  "$TERN" tokenize -m "$M" -f "$tmp/render.txt" --ids | python3 -c 'import sys,json; print(len(json.loads(sys.stdin.read())))'
}
have_jinja2=1
python3 -c 'import jinja2' 2>/dev/null || { have_jinja2=0; echo "note: python3 has no jinja2: the rendering checks are skipped"; }

# ---- splitting on (auto: the template writes <think>) ----
chat think "$Q1"$'\n/save t1.json\n'"$Q2"$'\n/save t2.json\n' || bad "chat failed: $(errs think)"
if py "$SHOWN"'
s=shown("think.out"); m=json.load(open("t2.json"))["messages"]
assert len(s)==2 and all(t and a for t,a in s), s
assert [x["content"] for x in m if x["role"]=="assistant"]==[a for t,a in s], (m, s)
assert [x.get("reasoning_content") for x in m if x["role"]=="assistant"]==[t for t,a in s], (m, s)
assert all("<think>" not in x["content"] and ("reasoning_content" not in x or x["role"]=="assistant") for x in m), m'; then
  ok "thinking shown between [thinking] lines, /save holds the answers with their thinking apart ($(tr '\n' '|' <"$tmp/think.out" | cut -c1-80))"
else
  bad "thinking display / saved answers: $(cat "$tmp/think.out")"
fi
grep -q $'\e' "$tmp/think.out" && bad "escape codes written to a pipe" || ok "no escape codes on a pipe"
if [ $have_jinja2 = 1 ]; then
  n1=$(render "$tmp/t1.json" 1 True) n2=$(render "$tmp/t2.json" 3 True)
  [ "$(tr '\n' ' ' <"$tmp/think.tok")" = "$n1 $n2 " ] \
    && ok "turn prompts == jinja2's rendering of the saved conversation without the thinking ($n1, $n2 tokens)" \
    || bad "turn prompt token counts $(tr '\n' ' ' <"$tmp/think.tok") vs jinja2's $n1 $n2"
fi
chat fresh $'/load t1.json\n'"$Q2"$'\n' || bad "chat /load failed: $(errs fresh)"
chat nocache "$Q1"$'\n'"$Q2"$'\n' --no-cache || bad "chat --no-cache failed: $(errs nocache)"
if py "$SHOWN"'assert shown("think.out")[1]==shown("fresh.out")[0]==shown("nocache.out")[1], (shown("think.out"), shown("fresh.out"), shown("nocache.out"))'; then
  ok "second reply == a fresh process's from the saved first turn == --no-cache's (the cache re-fed past the dropped thinking)"
else
  bad "second reply differs: $(cat "$tmp/think.out" "$tmp/fresh.out" "$tmp/nocache.out")"
fi
# the first turn's prompt stays in the cache; its reply's tokens (from <think> on) are fed again
reused=$(grep -o '[0-9]* reused from the cache' "$tmp/think.log" | grep -o '^[0-9]*' | tr '\n' ' ')
[ "$reused" = "0 $(head -1 "$tmp/think.tok") " ] \
  && ok "the second turn reuses the first turn's prompt from the cache ($reused)" || bad "cache reuse: $reused"


# ---- a template that shows past turns' reasoning_content: the kept thinking reaches it, from
# the running conversation and from a /load of the saved one ----
cat >"$tmp/rc.jinja" <<'J'
{%- for m in messages -%}
<|{{ m.role }}|>{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}
{% endfor -%}
{%- if add_generation_prompt %}<|assistant|>{% endif -%}
J
chat rc "$Q1"$'\n/save r1.json\n'"$Q2"$'\n' --chat-template-file "$tmp/rc.jinja" || bad "chat (reasoning template) failed: $(errs rc)"
chat rcload $'/load r1.json\n'"$Q2"$'\n' --chat-template-file "$tmp/rc.jinja" || bad "chat /load (reasoning template) failed: $(errs rcload)"
if [ $have_jinja2 = 1 ] && py 'import json,sys,jinja2,subprocess
t=jinja2.Environment().from_string(open("rc.jinja").read())
m=json.load(open("r1.json"))["messages"]+[{"role":"user","content":sys.argv[1]}]
assert m[1].get("reasoning_content"), m
def ntok(msgs):
    open("rc.txt","w").write(t.render(messages=msgs, add_generation_prompt=True))
    return len(json.loads(subprocess.run([sys.argv[2],"tokenize","-m",sys.argv[3],"-f","rc.txt","--ids"],capture_output=True,text=True).stdout))
want=ntok(m)
bare=ntok([{k:v for k,v in x.items() if k!="reasoning_content"} for x in m])
got=open("rc.tok").read().split(); gl=open("rcload.tok").read().split()
assert want!=bare and got[1]==str(want) and gl[0]==str(want), (got, gl, want, bare)
print(want, bare)' "$Q2" "$TERN" "$M" >"$tmp/rc.py" 2>&1; then
  ok "a template that shows reasoning_content gets the kept thinking, running and after /load: $(cat "$tmp/rc.py") tokens"
elif [ $have_jinja2 = 1 ]; then
  bad "reasoning_content in the history: $(cat "$tmp/rc.py")"
fi

# ---- --no-show-thinking: the same answers, no thinking ----
chat hidden "$Q1"$'\n'"$Q2"$'\n' --no-show-thinking || bad "chat --no-show-thinking failed: $(errs hidden)"
if py "$SHOWN"'import re
assert "thinking" not in open("hidden.out").read()
assert [a for t,a in shown("think.out")]==re.findall(r"> (\w+)\n", open("hidden.out").read()), open("hidden.out").read()'; then
  ok "--no-show-thinking: the answers alone"
else
  bad "--no-show-thinking: $(cat "$tmp/hidden.out")"
fi

# ---- --reasoning-format none: the whole text is the message ----
chat none "$Q1"$'\n/save n1.json\n' --reasoning-format none || bad "chat --reasoning-format none failed: $(errs none)"
if py "$SHOWN"'import json
t,a=shown("think.out")[0]
m=json.load(open("n1.json"))["messages"]
assert m[1]["content"]=="<think>"+t+"</think>"+a, (m, t, a)
assert "[thinking]" not in open("none.out").read()'; then
  ok "--reasoning-format none: the message is the whole '<think>T</think>A'"
else
  bad "--reasoning-format none: $(cat "$tmp/none.out" "$tmp/n1.json")"
fi

# ---- no thinking: --reasoning-budget 0, or enable_thinking false in the kwargs ----
chat nothink "$Q1"$'\n/save z1.json\n' --reasoning-budget 0 || bad "chat --reasoning-budget 0 failed: $(errs nothink)"
chat kwargs "$Q1"$'\n/save k1.json\n' --chat-template-kwargs '{"enable_thinking":false}' || bad "chat --chat-template-kwargs failed: $(errs kwargs)"
if [ $have_jinja2 = 1 ]; then
  n0=$(render "$tmp/z1.json" 1 False)
  [ "$(cat "$tmp/nothink.tok")" = "$n0" ] && [ "$n0" != "$n1" ] \
    && ok "--reasoning-budget 0: jinja2's enable_thinking=false prompt ($n0 tokens, $n1 with thinking)" \
    || bad "--reasoning-budget 0: $(cat "$tmp/nothink.tok") tokens vs jinja2's $n0 (thinking: $n1)"
fi
cmp -s "$tmp/nothink.out" "$tmp/kwargs.out" && cmp -s "$tmp/nothink.tok" "$tmp/kwargs.tok" \
  && ok "--chat-template-kwargs enable_thinking false == --reasoning-budget 0" \
  || bad "kwargs vs budget 0: $(cat "$tmp/nothink.out" "$tmp/kwargs.out")"

# ---- --reasoning-budget 5: a grammar lets the thinking run on ([a-z ]* until "</think>"; greedy,
# it never closes within -n), so "</think>" must be forced after 5 thinking tokens: the thinking
# shown is the free run's beginning, and an answer follows ----
ARGS0=("${ARGS[@]}")
ARGS=(--jinja --chat-template-file "$T" --temp 0 -n 80 --grammar 'root ::= "<think>" [a-z ]* "</think>" [a-z]{1,10}')
chat free "$Q1"$'\n' --reasoning-format none || bad "chat (free thinking) failed: $(errs free)"
chat bud "$Q1"$'\n' --reasoning-budget 5 || bad "chat --reasoning-budget 5 failed: $(errs bud)"
ARGS=("${ARGS0[@]}")
if py "$SHOWN"'
free = open("free.out").read().split("> ", 1)[1]
assert free.startswith("<think>") and "</think>" not in free, free
t, a = shown("bud.out")[0]
assert t and free[7:].startswith(t) and len(t) < len(free.strip()) - 7 and a, (t, a, free)
print(t, "|", a)' >"$tmp/bud.py" 2>&1; then
  ok "--reasoning-budget 5: the thinking is cut to the free run's first tokens, then an answer: $(cat "$tmp/bud.py")"
else
  bad "--reasoning-budget 5: $(cat "$tmp/bud.py")"
fi

# ---- a template without <think> (the family formatter): nothing split ----
printf '%s\n' "$Q1" | timeout 60 "$TERN" chat -m "$M" -t 2 --temp 0 -n 80 "${ARGS[@]:3}" >"$tmp/plain.out" 2>"$tmp/plain.log"
grep -q '^> <think>' "$tmp/plain.out" && ! grep -q '\[thinking\]' "$tmp/plain.out" \
  && ok "auto without <think> in the template: the reply as it came" || bad "auto, plain template: $(cat "$tmp/plain.out")"

# ---- bad flags: one line, non-zero status ----
expect_fail() {   # expect_fail WHAT PATTERN ARGS...
  local what=$1 pat=$2 out rc
  shift 2
  out=$(printf 'Hi\n' | timeout 60 "$TERN" chat -m "$M" -n 2 -t 2 "$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 0 ] && [ "$(wc -l <<<"$out")" = 1 ] && grep -q -- "$pat" <<<"$out"; then ok "$what: $out"
  else bad "$what: rc $rc: $out"; fi
}
expect_fail "--reasoning-format bogus" "expected none, deepseek, deepseek-legacy or auto" --reasoning-format bogus
expect_fail "--chat-template-kwargs not an object" "not a JSON object" --chat-template-kwargs '[1]'
expect_fail "--chat-template-kwargs not JSON" "--chat-template-kwargs" --chat-template-kwargs '{'
expect_fail "--chat-template-kwargs enable_thinking not a bool" "true or false" --chat-template-kwargs '{"enable_thinking":1}'
expect_fail "--reasoning-budget -2" "reasoning-budget" --reasoning-budget -2
finish 20
