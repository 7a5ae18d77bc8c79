#!/usr/bin/env bash
# OpenAI tool calling on `tern serve` (llama.cpp's generic format) on a tiny generated model:
# tool_choice "required" with two tools at temperature 1 over several seeds (finish_reason
# tool_calls, a known name, arguments that parse and match that tool's schema), a named
# tool_choice (always that tool), "auto" (a call or content, well-formed either way), "none"
# (plain content), a conversation with an assistant tool_calls message and a tool result, the
# streamed reply == the plain one, and HTTP 400s naming the bad field.
source "$(dirname "$0")/lib.bash"

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 11
serve_ready s1 -m "$M" -t 2 -c 4096

# the checks run in one Python script (HTTP through httpcheck.py); its "ok"/"FAIL" lines are counted here
cat >"$tmp/tools.py" <<'PY'
import json, sys
import httpcheck
from httpcheck import say
URL = sys.argv[1]
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
           "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"]}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "parameters": ADD}}]
MSGS = [{"role": "user", "content": "What is the weather in Paris?"}]

def post(body, stream=False):
    return httpcheck.post(URL, "/v1/chat/completions", body, timeout=60)

def args_ok(name, args):
    if name == "get_weather":
        return set(args) == {"city", "unit"} and isinstance(args["city"], str) and len(args["city"]) <= 12 \
            and args["unit"] in ("c", "f")
    return set(args) == {"a", "b"} and all(type(args[k]) is int for k in "ab")

def call_of(msg):   # (name, args) of a message's one tool call, or raises
    tc = msg["tool_calls"]
    assert msg["content"] is None and len(tc) == 1 and tc[0]["type"] == "function" and tc[0]["id"].startswith("call_")
    return tc[0]["function"]["name"], json.loads(tc[0]["function"]["arguments"])

def check_call(what, body, names):
    st, txt = post(body)
    try:
        o = json.loads(txt)
        ch = o["choices"][0]
        name, args = call_of(ch["message"])
        good = st == 200 and ch["finish_reason"] == "tool_calls" and name in names and args_ok(name, args)
        say(good, f"{what}: {name} {json.dumps(args)}")
    except Exception as e:
        say(False, f"{what}: {st} {txt[:300]} ({e!r})")

base = {"messages": MSGS, "tools": TOOLS, "max_tokens": 1000, "temperature": 1}
for seed in range(1, 9):
    check_call(f"required, seed {seed}", dict(base, tool_choice="required", seed=seed), {"get_weather", "add"})
for seed, nm in ((5, "add"), (6, "add"), (5, "get_weather"), (6, "get_weather")):
    check_call(f"named {nm}, seed {seed}", dict(base, seed=seed, tool_choice={"type": "function", "function": {"name": nm}}), {nm})

for seed in (1, 2, 3):   # parallel_tool_calls: 1..8 calls of the given tools, ids distinct
    st, txt = post(dict(base, seed=seed, tool_choice="required", parallel_tool_calls=True))
    try:
        ch = json.loads(txt)["choices"][0]
        tc = ch["message"]["tool_calls"]
        calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in tc]
        good = (st == 200 and ch["finish_reason"] == "tool_calls" and 1 <= len(tc) <= 8 and
                len({c["id"] for c in tc}) == len(tc) and all(n in ("get_weather", "add") and args_ok(n, a) for n, a in calls))
        say(good, f"parallel, seed {seed}: {len(tc)} call(s) {[n for n, _ in calls]}")
    except Exception as e:
        say(False, f"parallel seed {seed}: {st} {txt[:300]} ({e!r})")

for seed in (7, 8, 9):   # auto: a call or a response, whichever came must be well-formed
    st, txt = post(dict(base, seed=seed, tool_choice="auto"))
    try:
        ch = json.loads(txt)["choices"][0]
        m = ch["message"]
        if m.get("tool_calls"):
            name, args = call_of(m)
            good = ch["finish_reason"] == "tool_calls" and args_ok(name, args)
        else:
            good = isinstance(m["content"], str) and ch["finish_reason"] in ("stop", "length")
        say(st == 200 and good, f"auto, seed {seed}: {json.dumps(m)[:120]}")
    except Exception as e:
        say(False, f"auto seed {seed}: {st} {txt[:300]} ({e!r})")

st, txt = post(dict(base, seed=1, max_tokens=16, tool_choice="none"))
try:
    ch = json.loads(txt)["choices"][0]
    say(st == 200 and isinstance(ch["message"]["content"], str) and not ch["message"].get("tool_calls")
        and ch["finish_reason"] in ("stop", "length"), "none: plain content")
except Exception as e:
    say(False, f"none: {st} {txt[:300]} ({e!r})")

conv = MSGS + [{"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"c\"}"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}]
st, txt = post(dict(base, messages=conv, seed=3, tool_choice="auto"))
say(st == 200, f"a conversation with tool_calls and a tool result: {st} {txt[:100] if st != 200 else ''}")

# streamed == plain: the assembled message of the stream (OpenAI's deltas: a call's first with
# its id and name, then pieces of its arguments) equals the plain reply's, over a few seeds; the
# arguments come in more than one piece in some stream (how the text is chunked is timing's)
most = 0
for seed in (11, 12, 13):
    body = dict(base, seed=seed, tool_choice="required", stream=False)
    st, txt = post(body)
    plain = json.loads(txt)["choices"][0] if st == 200 else None
    st2, stxt = post(dict(body, stream=True, stream_options={"include_usage": True}))
    try:
        role, content, calls, fin, done, usage, nargs = None, None, None, None, False, None, 0
        for line in stxt.split("\n"):
            if not line.startswith("data: "): continue
            d = line[6:]
            if d == "[DONE]": done = True; continue
            o = json.loads(d)
            if o.get("usage"): usage = o["usage"]
            for c in o["choices"]:
                dl = c["delta"]
                role = dl.get("role", role)
                if "content" in dl and dl["content"]: content = (content or "") + dl["content"]
                for t in dl.get("tool_calls") or []:
                    calls = calls or []
                    if "id" in t:
                        assert t["index"] == len(calls) and t["type"] == "function"
                        calls.append({"index": t["index"], "id": t["id"], "function": dict(t["function"])})
                    else:
                        calls[t["index"]]["function"]["arguments"] += t["function"]["arguments"]
                    nargs += bool(t["function"]["arguments"])
                fin = c["finish_reason"] or fin
        pc = plain["message"]["tool_calls"][0]
        good = (done and usage and role == "assistant" and content is None and fin == plain["finish_reason"] == "tool_calls"
                and len(calls) == 1 and calls[0]["index"] == 0 and calls[0]["function"] == pc["function"]
                and calls[0]["id"].startswith("call_"))
        most = max(most, nargs)
        say(good, f"seed {seed}: streamed == plain ({nargs} arguments deltas): {json.dumps(calls)[:160]}")
    except Exception as e:
        say(False, f"stream: {st2} {stxt[:400]} ({e!r})")
say(most > 1, f"a call's arguments streamed in pieces as generated (most deltas in one stream: {most})")

# n = 2: each choice parsed on its own
st, txt = post(dict(base, seed=12, n=2, tool_choice="required"))
try:
    chs = json.loads(txt)["choices"]
    good = len(chs) == 2 and all(args_ok(*call_of(c["message"])) for c in chs)
    ids = [c["message"]["tool_calls"][0]["id"] for c in chs]
    say(good and ids[0] != ids[1], f"n=2: two calls, ids {ids}")
except Exception as e:
    say(False, f"n=2: {st} {txt[:300]} ({e!r})")

def bad(what, param, body):
    st, txt = post(body)
    try:
        p = json.loads(txt)["error"]["param"]
    except Exception:
        p = None
    say(st == 400 and p == param, f"400 {what} (param {p})" + ("" if st == 400 and p == param else f": {st} {txt[:200]}"))

bad("unknown tool in tool_choice", "tool_choice", dict(base, tool_choice={"type": "function", "function": {"name": "nope"}}))
bad("bad tool name", "tools[0]", dict(base, tools=[{"type": "function", "function": {"name": "bad name!"}}]))
bad("duplicate names", "tools[1]", dict(base, tools=[TOOLS[1], TOOLS[1]]))
bad("tools + response_format", "response_format", dict(base, response_format={"type": "json_object"}))
bad("unsupported 'pattern'", "tools[1].function.parameters",
    dict(base, tools=[TOOLS[0], {"type": "function", "function": {"name": "f", "parameters":
         {"type": "object", "properties": {"s": {"type": "string", "pattern": "^a"}}}}}]))
bad("tool message without tool_call_id", "messages", dict(base, messages=MSGS + [{"role": "tool", "content": "x"}]))
bad("tool_choice required without tools", "tool_choice", {"messages": MSGS, "tool_choice": "required"})
PY
count_checks < <(timeout 90 python3 "$tmp/tools.py" "$URL" 2>&1)
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/health")" = 200 ] && ok "serve healthy after all" \
  || bad "serve unhealthy after the tool requests"
finish 20
