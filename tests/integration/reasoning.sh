#!/usr/bin/env bash
# Reasoning models' thinking (--reasoning-format, --reasoning-budget, reasoning_format and
# chat_template_kwargs per request) on a generated model served with --jinja and a Qwen3-style
# template (tests/data/jinja/qwen3.jinja): a grammar makes the model write
# "<think>...</think>..." and the reply's reasoning_content / content are checked against a
# Python split of the same request's text with reasoning_format "none"; the stream's deltas add
# up to the plain reply (reasoning first); an unclosed thinking at max_tokens is all reasoning;
# --reasoning-format none leaves the text in content; a template that opens <think> itself
# (DeepSeek-R1's) starts the reply inside the thinking; /apply-template with enable_thinking
# true / false / --reasoning-budget 0 and a history with reasoning_content == Python jinja2's
# rendering (and --chat-template-kwargs under a request's own); bad fields and flags are refused.
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
import json, re, sys, urllib.request, urllib.error
auto, none, budget, opn, data, kwsrv = sys.argv[1:7]
sys.path.insert(0, data)
import render   # tests/data/jinja/render.py: jinja2 set up as Hugging Face's
env = render.env()
tmpl = env.from_string(open(data + "/qwen3.jinja", encoding="utf-8", newline="").read())
res = {"ok": [], "bad": []}
def check(cond, what):
    res["ok" if cond else "bad"].append(what)

def post(url, path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()

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
if [ -s "$tmp/py.out" ]; then
  while IFS= read -r line; do ok "$line"; done < <(python3 -c 'import json,sys; [print(x) for x in json.load(open(sys.argv[1]))["ok"]]' "$tmp/py.out")
  while IFS= read -r line; do bad "$line"; done < <(python3 -c 'import json,sys; [print(x) for x in json.load(open(sys.argv[1]))["bad"]]' "$tmp/py.out")
else
  bad "the python checks failed: $(tail -5 "$tmp/py.log")"
fi
finish 20
