#!/usr/bin/env bash
# Reasoning models' thinking (--reasoning-format, --reasoning-budget, reasoning_format and
# chat_template_kwargs per request) on a generated model served with --jinja and a Qwen3-style
# template (tests/data/jinja/qwen3.jinja): a grammar makes the model write
# "<think>...</think>..." and the reply's reasoning_content / content are checked against a
# Python split of the same request's text with reasoning_format "none"; the stream's deltas add
# up to the plain reply (reasoning first); an unclosed thinking at max_tokens is all reasoning;
# --reasoning-format none leaves the text in content; deepseek-legacy splits a plain reply but
# streams the thinking inline in content between <think> tags; a template that opens <think> itself
# (DeepSeek-R1's) starts the reply inside the thinking; /apply-template with enable_thinking
# true / false / --reasoning-budget 0 and a history with reasoning_content == Python jinja2's
# rendering (and --chat-template-kwargs under a request's own); bad fields and flags are refused;
# a reasoning budget (--reasoning-budget N, reasoning_budget) forces </think> after N thinking
# tokens, single process and over two workers.
source "$(dirname "$0")/lib.bash"
src=${TERN_SRC:?TERN_SRC not set}
data=$src/tests/data/jinja
if ! python3 -c 'import jinja2' 2>/dev/null; then
  echo "skipped: python3 with jinja2 not found (apt-get install python3-jinja2)"
  exit 0
fi
M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 11

start_serve s_auto -m "$M" -t 2 -c 2048 -np 2 --jinja --chat-template-file "$data/qwen3.jinja" \
  || die "serve did not start: $(tail -3 "$tmp/s_auto.log")"
U_AUTO=$URL
start_serve s_none -m "$M" -t 2 -c 2048 --jinja --chat-template-file "$data/qwen3.jinja" --reasoning-format none \
  || die "serve (none) did not start: $(tail -3 "$tmp/s_none.log")"
U_NONE=$URL
start_serve s_budget -m "$M" -t 2 -c 2048 --jinja --chat-template-file "$data/qwen3.jinja" --reasoning-budget 0 \
  || die "serve (budget 0) did not start: $(tail -3 "$tmp/s_budget.log")"
U_BUDGET=$URL
start_serve s_open -m "$M" -t 2 -c 2048 --jinja --chat-template-file "$data/deepseek-r1-distill-qwen-32b.jinja" \
  || die "serve (open) did not start: $(tail -3 "$tmp/s_open.log")"
U_OPEN=$URL
start_serve s_kw -m "$M" -t 2 -c 2048 --jinja --chat-template-file "$data/qwen3.jinja" \
  --chat-template-kwargs '{"enable_thinking": false, "extra": 1}' || die "serve (kwargs) did not start: $(tail -3 "$tmp/s_kw.log")"
U_KW=$URL
for u in "$U_AUTO" "$U_NONE" "$U_BUDGET" "$U_OPEN" "$U_KW"; do wait_health "$u" 60 || die "no /health at $u"; done
# /props: the reasoning settings each server was started with (llama-server's params.reasoning_format)
props() {   # props URL: "FORMAT BUDGET KWARGS" (KWARGS: the object as JSON, or - when not set)
  curl -s --max-time 30 "$1/props" | python3 -c 'import json,sys; o=json.load(sys.stdin); p=o["default_generation_settings"]["params"]
print(p["reasoning_format"], p["reasoning_budget"], json.dumps(o["chat_template_kwargs"], sort_keys=True) if "chat_template_kwargs" in o else "-", "chat_template" in o)'
}
got="$(props "$U_AUTO") | $(props "$U_NONE") | $(props "$U_BUDGET") | $(props "$U_KW")"
[ "$got" = 'auto -1 - True | none -1 - True | auto 0 - True | auto -1 {"enable_thinking": false, "extra": 1} True' ] \
  && ok "/props shows reasoning_format, reasoning_budget and chat_template_kwargs: $got" || bad "/props reasoning settings: $got"
for kw in '[1]' '{"enable_thinking": "no"}' '{'; do
  if timeout 30 "$TERN" serve --port 0 -m "$M" --chat-template-kwargs "$kw" >/dev/null 2>"$tmp/badkw.log"; then
    bad "--chat-template-kwargs $kw was accepted"
  elif grep -q -- 'tern serve: --chat-template-kwargs: ' "$tmp/badkw.log"; then
    ok "$(grep -- 'tern serve: --chat-template-kwargs: ' "$tmp/badkw.log")"
  else
    bad "--chat-template-kwargs $kw: no clear error: $(tail -2 "$tmp/badkw.log")"
  fi
done
"$TERN" serve --reasoning-format maybe -m "$M" >/dev/null 2>"$tmp/badflag.log" \
  && bad "--reasoning-format maybe was accepted" || ok "bad flag: $(tail -1 "$tmp/badflag.log")"

python3 - "$U_AUTO" "$U_NONE" "$U_BUDGET" "$U_OPEN" "$data" "$U_KW" >"$tmp/py.out" 2>"$tmp/py.log" <<'PY'
import json, re, sys
from httpcheck import post
auto, none, budget, opn, data, kwsrv = sys.argv[1:7]
sys.path.insert(0, data)
import render   # tests/data/jinja/render.py: jinja2 set up as Hugging Face's
env = render.env()
tmpl = env.from_string(open(data + "/qwen3.jinja", encoding="utf-8", newline="").read())
res = {"ok": [], "bad": []}
def check(cond, what):
    res["ok" if cond else "bad"].append(what)

def chat(url, extra, stream=False):
    body = {"messages": [{"role": "user", "content": "think, then answer"}], "temperature": 0, "max_tokens": 80}
    body.update(extra)
    if stream:
        body["stream"] = True
    st, txt = post(url, "/v1/chat/completions", body)
    assert st == 200, (st, txt)
    if not stream:
        return json.loads(txt)["choices"][0]
    r, c, order, fin = "", "", [], None
    for line in txt.split("\n"):
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        ch = json.loads(line[6:])["choices"]
        if not ch:
            continue
        d = ch[0]["delta"]
        if d.get("reasoning_content"):
            r += d["reasoning_content"]; order.append("r")
        if d.get("content"):
            c += d["content"]; order.append("c")
        fin = ch[0]["finish_reason"] or fin
    return {"message": {"reasoning_content": r, "content": c}, "order": order, "finish_reason": fin}

WS = " \t\n\r\f\v"
def ref_split(text, opened):   # llama.cpp's rule, written again
    if not opened:
        if not text.startswith("<think>"):
            return "", text
        text = text[7:]
    i = text.find("</think>")
    if i < 0:
        return text.strip(WS), ""
    return text[:i].strip(WS), text[i + 8:].lstrip(WS)

G = {"grammar": 'root ::= "<think>" [a-z ]{5,20} "</think>" [a-z ]{5,20}'}
plain = chat(auto, dict(G, reasoning_format="none"))["message"]["content"]
check(plain.startswith("<think>") and "</think>" in plain, "the grammar makes the model think: %r" % plain)
want_r, want_c = ref_split(plain, False)
got = chat(auto, G)
m = got["message"]
check(m.get("reasoning_content", "") == want_r and m["content"] == want_c,
      "auto split %r / %r == reference %r / %r" % (m.get("reasoning_content"), m["content"], want_r, want_c))
s = chat(auto, G, stream=True)
check(s["message"]["reasoning_content"] == m.get("reasoning_content", "") and s["message"]["content"] == m["content"],
      "stream == plain: %r / %r" % (s["message"]["reasoning_content"], s["message"]["content"]))
check("r" in s["order"] and s["order"] == sorted(s["order"], key=lambda x: x != "r"),
      "reasoning deltas come before content deltas: %s" % "".join(s["order"]))
check(s["finish_reason"] == got["finish_reason"], "same finish_reason %s" % got["finish_reason"])
n = chat(none, G)["message"]
check(n["content"] == plain and "reasoning_content" not in n, "--reasoning-format none: all in content")
d = chat(none, dict(G, reasoning_format="deepseek"))["message"]
check(d.get("reasoning_content") == want_r and d["content"] == want_c, "request reasoning_format deepseek over the server's none")
# an unclosed thinking cut by max_tokens: all reasoning, the stream too
U = {"grammar": 'root ::= "<think>" [a-z ]{40,60} "</think>" "x"', "max_tokens": 10}
ut = chat(auto, dict(U, reasoning_format="none"))["message"]["content"]
u = chat(auto, U)
us = chat(auto, U, stream=True)
check(u["finish_reason"] == "length" and u["message"]["content"] == "" and u["message"].get("reasoning_content") == ref_split(ut, False)[0],
      "unclosed at max_tokens: all reasoning %r" % u["message"].get("reasoning_content"))
check(us["message"]["reasoning_content"] == u["message"].get("reasoning_content") and us["message"]["content"] == "", "unclosed: stream == plain")
# deepseek-legacy (llama.cpp's): a plain reply as deepseek's; a stream keeps the thinking in the
# content, "<think>" THINKING "</think>" ANSWER (the split's trimming), and sends no reasoning_content
L = dict(G, reasoning_format="deepseek-legacy")
lg = chat(auto, L)
check(lg["message"].get("reasoning_content") == m.get("reasoning_content") and lg["message"]["content"] == m["content"],
      "deepseek-legacy plain == deepseek: %r / %r" % (lg["message"].get("reasoning_content"), lg["message"]["content"]))
ls = chat(auto, L, stream=True)
check(ls["message"]["content"] == "<think>" + want_r + "</think>" + want_c and ls["message"]["reasoning_content"] == ""
      and "r" not in ls["order"], "deepseek-legacy stream: the thinking inline in content %r" % ls["message"]["content"])
lu = chat(auto, dict(U, reasoning_format="deepseek-legacy"), stream=True)
check(lu["message"]["content"] == "<think>" + u["message"].get("reasoning_content", "") and lu["finish_reason"] == "length",
      "deepseek-legacy stream, unclosed at max_tokens: no close tag %r" % lu["message"]["content"])
E = {"grammar": 'root ::= "<think>" [ ]{0,3} "</think>" [a-z ]{5,20}', "reasoning_format": "deepseek-legacy"}
le = chat(auto, E, stream=True)["message"]
lep = chat(auto, E)["message"]
check(not le["content"].startswith("<think>") and le["content"] == lep["content"] and not lep.get("reasoning_content"),
      "deepseek-legacy stream, empty thinking: no tags %r" % le["content"])
# Anthropic's /v1/messages: a thinking block, then the text; streamed as thinking_delta then text_delta
def messages(url, extra, stream=False):
    body = {"model": "m", "max_tokens": 80, "temperature": 0, "messages": [{"role": "user", "content": "think, then answer"}]}
    body.update(extra)
    if stream:
        body["stream"] = True
    st, txt = post(url, "/v1/messages", body)
    assert st == 200, (st, txt)
    if not stream:
        return json.loads(txt)["content"]
    blocks, open_ = {}, set()
    for line in txt.split("\n"):
        if not line.startswith("data: "):
            continue
        ev = json.loads(line[6:])
        if ev["type"] == "content_block_start":
            blocks[ev["index"]] = dict(ev["content_block"]); open_.add(ev["index"])
        elif ev["type"] == "content_block_delta":
            d, b = ev["delta"], blocks[ev["index"]]
            assert ev["index"] in open_, "a delta outside its block"
            if d["type"] == "thinking_delta": b["thinking"] += d["thinking"]
            elif d["type"] == "text_delta": b["text"] += d["text"]
        elif ev["type"] == "content_block_stop":
            open_.discard(ev["index"])
    assert not open_, "blocks left open"
    return [blocks[i] for i in sorted(blocks)]
a = messages(auto, G)
check([b["type"] for b in a] == ["thinking", "text"] and a[0]["thinking"] == want_r and a[1]["text"] == want_c,
      "/v1/messages: thinking block %r, text %r" % (a[0].get("thinking"), a[-1].get("text")))
a_s = messages(auto, G, stream=True)
check([(b["type"], b.get("thinking", b.get("text"))) for b in a_s] == [(b["type"], b.get("thinking", b.get("text"))) for b in a],
      "/v1/messages stream == plain: %s" % [b["type"] for b in a_s])
an = messages(auto, dict(G, reasoning_format="none"))
check([b["type"] for b in an] == ["text"] and an[0]["text"] == plain, "/v1/messages reasoning_format none: one text block")
# a template that opens <think> in the generation prompt: the reply starts inside the thinking
st, pt = post(opn, "/apply-template", {"messages": [{"role": "user", "content": "hi"}]})
check(st == 200 and json.loads(pt)["prompt"].endswith("<think>\n"), "DeepSeek-R1's prompt ends with <think>")
O = {"grammar": 'root ::= [a-z ]{5,20} "</think>" [a-z ]{5,20}'}
ot = chat(opn, dict(O, reasoning_format="none"))["message"]["content"]
o = chat(opn, O)["message"]
os_ = chat(opn, O, stream=True)["message"]
wr, wc = ref_split(ot, True)
check(o.get("reasoning_content", "") == wr and o["content"] == wc and "</think>" in ot,
      "opened by the prompt: %r / %r from %r" % (o.get("reasoning_content"), o["content"], ot))
check(os_["reasoning_content"] == o.get("reasoning_content", "") and os_["content"] == o["content"], "opened: stream == plain")
ol = chat(opn, dict(O, reasoning_format="deepseek-legacy"), stream=True)["message"]
check(ol["content"] == "<think>" + wr + "</think>" + wc, "opened, deepseek-legacy stream: %r" % ol["content"])
# chat_template_kwargs and --reasoning-budget 0 against jinja2
msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
def jinja(msgs, **kw):
    return tmpl.render(messages=msgs, add_generation_prompt=True, bos_token="", eos_token="", tools=None, **kw)
def applied(url, body):
    st, t = post(url, "/apply-template", body)
    assert st == 200, (st, t)
    return json.loads(t)["prompt"]
for url, kw, et in ((auto, None, True), (auto, {"enable_thinking": False}, False), (auto, {"enable_thinking": True}, True),
                    (budget, None, False), (budget, {"enable_thinking": True}, True),
                    (kwsrv, None, False), (kwsrv, {"enable_thinking": True}, True)):
    body = {"messages": msgs}
    if kw is not None:
        body["chat_template_kwargs"] = kw
    got = applied(url, body)
    want = jinja(msgs, enable_thinking=et)
    check(got == want, "apply-template %s kwargs %s == jinja2 enable_thinking=%s" %
          ({budget: "--reasoning-budget 0", kwsrv: "--chat-template-kwargs", auto: ""}[url], kw, et))
check(jinja(msgs, enable_thinking=False) != jinja(msgs, enable_thinking=True), "enable_thinking changes the prompt")
hist = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "reasoning_content": "greet back"}]
check(applied(auto, {"messages": hist}) == jinja(hist, enable_thinking=True), "a history's reasoning_content reaches the template as jinja2's")
# errors
for body, what in (({"reasoning_format": "maybe"}, "reasoning_format"), ({"chat_template_kwargs": [1]}, "chat_template_kwargs"),
                   ({"chat_template_kwargs": {"enable_thinking": "no"}}, "enable_thinking")):
    b = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    b.update(body)
    st, t = post(auto, "/v1/chat/completions", b)
    check(st == 400 and "error" in json.loads(t), "bad %s: 400 %s" % (what, json.loads(t)["error"]["message"] if st == 400 else t))
print(json.dumps(res))
PY
report() {   # report OUT LOG: the python checks' ok / bad lines
  if [ -s "$1" ]; then
    while IFS= read -r line; do ok "$line"; done < <(python3 -c 'import json,sys; [print(x) for x in json.load(open(sys.argv[1]))["ok"]]' "$1")
    while IFS= read -r line; do bad "$line"; done < <(python3 -c 'import json,sys; [print(x) for x in json.load(open(sys.argv[1]))["bad"]]' "$1")
  else
    bad "the python checks failed: $(tail -5 "$2")"
  fi
}
report "$tmp/py.out" "$tmp/py.log"

# --reasoning-budget N > 0 / the request's reasoning_budget: a grammar lets the thinking run on
# ([a-z ]* until "</think>"; greedy, this model never closes it within max_tokens), so the budget
# must force "</think>": the thinking is the free run's first tokens (no more than N), an answer
# follows; the stream == the plain reply; a server started with --reasoning-budget 5 (shown in
# /props) does the same by default; over two workers the replies == one process; Anthropic's
# thinking (enabled with budget_tokens, disabled) maps to the budget and enable_thinking.
start_serve s_bud5 -m "$M" -t 2 -c 2048 --jinja --chat-template-file "$data/qwen3.jinja" --reasoning-budget 5 \
  || die "serve (budget 5) did not start: $(tail -3 "$tmp/s_bud5.log")"
U_BUD5=$URL
start_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w1 not ready: $(cat "$tmp/w1.log")"
E1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w2 not ready: $(cat "$tmp/w2.log")"
E2=$EP
start_serve s_bcl -m "$M" -t 2 -c 2048 --workers "$E1,$E2" --jinja --chat-template-file "$data/qwen3.jinja" \
  --reasoning-budget 5 || die "serve over workers did not start: $(tail -3 "$tmp/s_bcl.log")"
U_BCL=$URL
for u in "$U_BUD5" "$U_BCL"; do wait_health "$u" 60 || die "no /health at $u"; done
got="$(props "$U_BUD5")"
[ "$got" = 'auto 5 - True' ] && ok "/props shows --reasoning-budget 5: $got" || bad "/props with --reasoning-budget 5: $got"
"$TERN" serve --reasoning-budget -2 -m "$M" >/dev/null 2>"$tmp/badbud.log" \
  && bad "--reasoning-budget -2 was accepted" || ok "bad flag: $(tail -1 "$tmp/badbud.log")"

python3 - "$U_AUTO" "$U_BUD5" "$U_BCL" >"$tmp/pyb.out" 2>"$tmp/pyb.log" <<'PY'
import json, sys
from httpcheck import post
auto, bud5, bcl = sys.argv[1:4]
res = {"ok": [], "bad": []}
def check(cond, what):
    res["ok" if cond else "bad"].append(what)
def chat(url, extra, stream=False):
    body = {"messages": [{"role": "user", "content": "think, then answer"}], "temperature": 0, "max_tokens": 120,
            "grammar": 'root ::= "<think>" [a-z ]* "</think>" [a-z ]{5,20}'}
    body.update(extra, stream=stream)
    st, txt = post(url, "/v1/chat/completions", body)
    assert st == 200, (st, txt)
    if not stream:
        return json.loads(txt)["choices"][0]
    r, c, fin = "", "", None
    for line in txt.split("\n"):
        if line.startswith("data: ") and line != "data: [DONE]":
            for ch in json.loads(line[6:])["choices"]:
                r += ch["delta"].get("reasoning_content") or ""
                c += ch["delta"].get("content") or ""
                fin = ch["finish_reason"] or fin
    return {"message": {"reasoning_content": r, "content": c}, "finish_reason": fin}
def ntok(url, text):
    st, t = post(url, "/tokenize", {"content": text})
    return len(json.loads(t)["tokens"])
free = chat(auto, {"reasoning_format": "none"})
ft = free["message"]["content"]
check(ft.startswith("<think>") and "</think>" not in ft and free["finish_reason"] == "length",
      "greedy, the thinking runs to max_tokens without a budget: %r" % ft[:60])
free_r = ft[len("<think>"):].strip()
N = 5
check(ntok(auto, free_r) > N, "the free thinking is longer than %d tokens (%d)" % (N, ntok(auto, free_r)))
for what, url, extra in (("request reasoning_budget 5", auto, {"reasoning_budget": N}), ("--reasoning-budget 5", bud5, {}),
                         ("--reasoning-budget 5 over 2 workers", bcl, {})):
    b = chat(url, extra)
    m = b["message"]
    r = m.get("reasoning_content", "")
    check(r and free_r.startswith(r) and ntok(auto, r) <= N and len(m["content"]) >= 5 and b["finish_reason"] == "stop",
          "%s: thinking %r (%d tokens, the free run's first) then the answer %r" % (what, r, ntok(auto, r), m["content"]))
    s = chat(url, extra, stream=True)
    check(s["message"]["reasoning_content"] == r and s["message"]["content"] == m["content"] and s["finish_reason"] == "stop",
          "%s: stream == plain" % what)
raw = chat(auto, {"reasoning_budget": N, "reasoning_format": "none"})["message"]["content"]
check(raw.startswith("<think>" + chat(auto, {"reasoning_budget": N})["message"]["reasoning_content"] + "</think>"),
      "the forced </think> is in the text: %r" % raw)
one = chat(auto, {"reasoning_budget": 1})["message"]
check(ntok(auto, one.get("reasoning_content", "")) <= 1 and one["content"], "reasoning_budget 1: %r / %r" % (one.get("reasoning_content"), one["content"]))
unb = chat(bud5, {"reasoning_budget": -1, "reasoning_format": "none"})["message"]["content"]
check(unb == ft, "a request's reasoning_budget -1 over --reasoning-budget 5: free again")
# Anthropic's thinking: enabled with budget_tokens N is reasoning_budget N (a thinking block of the
# same text, then the answer); disabled renders enable_thinking false (over chat_template_kwargs)
def messages(url, extra):
    body = {"model": "m", "max_tokens": 120, "temperature": 0, "messages": [{"role": "user", "content": "think, then answer"}],
            "grammar": 'root ::= "<think>" [a-z ]* "</think>" [a-z ]{5,20}'}
    body.update(extra)
    st, t = post(url, "/v1/messages", body)
    assert st == 200, (st, t)
    return json.loads(t)["content"]
want_r = chat(auto, {"reasoning_budget": N})["message"]
am = messages(auto, {"thinking": {"type": "enabled", "budget_tokens": N}})
check([b["type"] for b in am] == ["thinking", "text"] and am[0]["thinking"] == want_r["reasoning_content"] and
      am[1]["text"] == want_r["content"], "/v1/messages thinking budget_tokens %d: %r / %r" % (N, am[0].get("thinking"), am[-1].get("text")))
def count(body):
    b = {"messages": [{"role": "user", "content": "hi"}]}
    b.update(body)
    st, t = post(auto, "/v1/messages/count_tokens", b)
    return json.loads(t)["input_tokens"] if st == 200 else (st, t)
off, on = count({"chat_template_kwargs": {"enable_thinking": False}}), count({})
d1 = count({"thinking": {"type": "disabled"}})
d2 = count({"thinking": {"type": "disabled"}, "chat_template_kwargs": {"enable_thinking": True}})
e1 = count({"thinking": {"type": "enabled", "budget_tokens": 5000}, "chat_template_kwargs": {"enable_thinking": False}})
check(off != on and d1 == d2 == off and e1 == on, "thinking disabled / enabled render enable_thinking false / true: %s" % [off, on, d1, d2, e1])
for v in (-2, "5", 1.5, True):
    st, t = post(auto, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "reasoning_budget": v})
    check(st == 400 and json.loads(t)["error"].get("param") == "reasoning_budget",
          "bad reasoning_budget %r: 400 %s" % (v, json.loads(t)["error"]["message"] if st == 400 else t))
print(json.dumps(res))
PY
report "$tmp/pyb.out" "$tmp/pyb.log"
finish 20
