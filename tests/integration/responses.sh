#!/usr/bin/env bash
# OpenAI's Responses API on `tern serve` (POST /v1/responses) on a tiny generated model: at
# temperature 0 the text and token counts of /v1/chat/completions for the same conversation
# (instructions, input as a string, as messages, as input_text parts), status incomplete with
# incomplete_details at max_output_tokens, usage; the stream's events in the documented order
# with consecutive sequence numbers, its text deltas == the plain text, its response.incomplete
# == the plain reply; tool_choice required / named: a function_call item whose arguments parse
# and follow the parameters schema, streamed as function_call_arguments deltas == the plain
# item; the call and a function_call_output sent back as input items run the next turn;
# text.format json_schema / json_object give JSON that parses (and matches); 400s in OpenAI's
# error shape naming the field (previous_response_id: stateless), 401 without the key; and with
# --jinja and a Qwen3 template, a thinking reply as a reasoning item before the message
# (== chat's reasoning_content / content, streamed as reasoning_text deltas, reasoning_tokens
# counted), function tools in the template's native format, reasoning.effort minimal.
source "$(dirname "$0")/lib.bash"
src=${TERN_SRC:?TERN_SRC not set}

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 11
serve_ready s1 -m "$M" -t 2 -c 4096 --api-key sekret
U1=$URL
serve_ready s2 -m "$M" -t 2 -c 4096 --jinja --chat-template-file "$src/tests/data/jinja/qwen3.jinja"
U2=$URL

cat >"$tmp/responses.py" <<'PY'
import json, sys, urllib.request
import httpcheck
from httpcheck import say, check, events
URL, URL2 = sys.argv[1], sys.argv[2]
KEY = {"Authorization": "Bearer sekret"}

def post(path, body, headers=KEY, raw=False, url=URL):
    return httpcheck.post(url, path, body, headers, raw)

def order_ok(evs):
    """created, in_progress, then items one at a time: output_item.added (index k), its parts and
    deltas naming index k, output_item.done (k); a last response.completed / incomplete; every
    data's type its event's name, sequence numbers 0, 1, 2, ..."""
    names = [n for n, _ in evs]
    if names[:2] != ["response.created", "response.in_progress"] or names[-1] not in ("response.completed", "response.incomplete"):
        return False
    if any(d["type"] != n or d["sequence_number"] != i for i, (n, d) in enumerate(evs)):
        return False
    index, open_ = 0, False
    for n, d in evs[2:-1]:
        if n == "response.output_item.added" and not open_ and d["output_index"] == index: open_ = True
        elif n == "response.output_item.done" and open_ and d["output_index"] == index: open_, index = False, index + 1
        elif open_ and d.get("output_index") == index and n != "response.output_item.added": pass
        else: return False
    return not open_ and len(evs[-1][1]["response"]["output"]) == index

def strip_ids(resp):   # what two requests' Responses share: not ids, times nor the prompt cache's hits
    r = json.loads(json.dumps(resp))
    for k in ("id", "created_at"):
        r.pop(k, None)
    r["usage"]["input_tokens_details"].pop("cached_tokens", None)
    for it in r["output"]:
        it.pop("id", None)
        it.pop("call_id", None)
    return r

def streamed(body, url=URL, headers=KEY):
    st, txt = post("/v1/responses", dict(body, stream=True), url=url, headers=headers)
    assert st == 200, (st, txt[:300])
    return events(txt)

INS = "You are terse."
CONV = [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "input_text", "text": "Again, "}, {"type": "input_text", "text": "please."}]}]
OAI = [{"role": "system", "content": INS}, {"role": "user", "content": "Say hello."},
       {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again, please."}]
base = {"model": "tern", "max_output_tokens": 24, "temperature": 0, "instructions": INS, "input": CONV}

st, txt = post("/v1/responses", base)
resp = json.loads(txt) if st == 200 else {}
msg = resp.get("output", [{}])[-1] if resp.get("output") else {}
text = msg.get("content", [{}])[0].get("text", "") if msg.get("content") else ""

def plain():
    u = resp["usage"]
    ok = (st == 200 and resp["object"] == "response" and resp["id"].startswith("resp_") and len(resp["output"]) == 1 and
          msg["type"] == "message" and msg["role"] == "assistant" and msg["id"].startswith("msg_") and
          msg["content"][0]["type"] == "output_text" and msg["content"][0]["annotations"] == [] and
          resp["status"] == "incomplete" and msg["status"] == "incomplete" and
          resp["incomplete_details"] == {"reason": "max_output_tokens"} and resp["error"] is None and
          u["output_tokens"] == 24 and u["input_tokens"] > 0 and u["total_tokens"] == u["input_tokens"] + 24 and
          u["output_tokens_details"]["reasoning_tokens"] == 0 and "cached_tokens" in u["input_tokens_details"] and
          resp["instructions"] == INS and resp["max_output_tokens"] == 24 and resp["temperature"] == 0 and
          resp["tools"] == [] and resp["tool_choice"] == "auto" and resp["text"] == {"format": {"type": "text"}})
    return ok, txt[:600]
check("plain reply: one message item, status incomplete at max_output_tokens, usage, the request echoed", plain)

def same_as_chat():
    s2, t2 = post("/v1/chat/completions", {"max_tokens": 24, "temperature": 0, "messages": OAI})
    o = json.loads(t2)
    c = o["choices"][0]
    return (s2 == 200 and c["message"]["content"] == text and c["finish_reason"] == "length" and
            o["usage"]["prompt_tokens"] == resp["usage"]["input_tokens"] and
            o["usage"]["completion_tokens"] == resp["usage"]["output_tokens"]), f"{text!r} vs {t2[:300]}"
check("same text and token counts as /v1/chat/completions", same_as_chat)

def input_forms():
    one = [{"role": "user", "content": "Again, please."}]
    a = json.loads(post("/v1/responses", dict(base, input="Again, please.", instructions=None))[1])
    b = json.loads(post("/v1/responses", dict(base, input=one, instructions=None))[1])
    c = json.loads(post("/v1/responses", dict(base, instructions=None, input=[{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "Again, please."}]}]))[1])
    d = json.loads(post("/v1/responses", dict(base, instructions=None, input=[{"role": "developer", "content": INS}] + CONV))[1])
    t = lambda r: r["output"][0]["content"][0]["text"]
    return t(a) == t(b) == t(c) and t(d) == text, f"{t(a)!r} {t(b)!r} {t(c)!r} / {t(d)!r} vs {text!r}"
check("input as a string == as a message == as input_text parts; a developer message == instructions", input_forms)

def stream():
    evs = streamed(base)
    deltas = [d["delta"] for n, d in evs if n == "response.output_text.delta"]
    last = evs[-1][1]["response"]
    done = [d for n, d in evs if n == "response.output_text.done"]
    good = (order_ok(evs) and evs[0][1]["response"]["status"] == "in_progress" and evs[0][1]["response"]["output"] == [] and
            "".join(deltas) == text and done[0]["text"] == text and
            evs[-1][0] == "response.incomplete" and strip_ids(last) == strip_ids(resp))
    return good, f"{[n for n, _ in evs][:12]} / {json.dumps(last)[:400]}"
check("stream: documented event order, sequence numbers, text deltas == the plain text, the last response == the plain one", stream)

def completed():   # a stop: a grammar that ends the reply early
    b = dict(base, grammar='root ::= "Hi there."')
    s2, t2 = post("/v1/responses", b)
    o = json.loads(t2)
    evs = streamed(b)
    return (s2 == 200 and o["status"] == "completed" and o["incomplete_details"] is None and
            o["output"][0]["status"] == "completed" and o["output"][0]["content"][0]["text"] == "Hi there." and
            evs[-1][0] == "response.completed" and strip_ids(evs[-1][1]["response"]) == strip_ids(o)), t2[:400]
check("a reply that ends: status completed (plain and streamed)", completed)

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
           "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"]}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather of a city", "parameters": WEATHER},
         {"type": "function", "name": "add", "parameters": ADD, "strict": True}]
tbase = {"max_output_tokens": 1000, "temperature": 1, "tools": TOOLS, "input": "What is the weather in Paris?"}

def args_ok(name, a):
    if name == "get_weather":
        return set(a) == {"city", "unit"} and isinstance(a["city"], str) and len(a["city"]) <= 12 and a["unit"] in ("c", "f")
    return set(a) == {"a", "b"} and all(type(a[k]) is int for k in "ab")

pieces, calls = [], []

def tool_call(seed, choice, names, url=URL, headers=KEY):
    def run():
        body = dict(tbase, seed=seed, tool_choice=choice)
        s2, t2 = post("/v1/responses", body, url=url, headers=headers)
        o = json.loads(t2)
        fc = [it for it in o["output"] if it["type"] == "function_call"]
        c = fc[0] if fc else {}
        good = (s2 == 200 and o["status"] == "completed" and len(fc) == 1 and c["id"].startswith("fc_") and
                c["call_id"].startswith("call_") and c["status"] == "completed" and c["name"] in names and
                args_ok(c["name"], json.loads(c["arguments"])))
        evs = streamed(body, url=url, headers=headers)
        added = [d["item"] for n, d in evs if n == "response.output_item.added" and d["item"]["type"] == "function_call"]
        parts = [d["delta"] for n, d in evs if n == "response.function_call_arguments.delta"]
        done = [d["arguments"] for n, d in evs if n == "response.function_call_arguments.done"]
        pieces.append(len(parts))
        good = good and order_ok(evs) and added and added[0]["arguments"] == "" and added[0]["name"] == c["name"] and \
            "".join(parts) == c["arguments"] and done == [c["arguments"]] and \
            strip_ids(evs[-1][1]["response"]) == strip_ids(o)
        calls.append(c)
        return good, f"{t2[:400]} / {[n for n, _ in evs][-6:]}"
    return run

for seed in (1, 2, 3):
    check(f"tool_choice required, seed {seed}: a function_call item with arguments that parse and match, streamed the same",
          tool_call(seed, "required", {"get_weather", "add"}))
check("tool_choice {type: function, name: add}, seed 5", tool_call(5, {"type": "function", "name": "add"}, {"add"}))
check("arguments streamed in pieces as generated (in some stream)", lambda: (max(pieces) > 1, f"{pieces}"))

def tools_none():
    s2, t2 = post("/v1/responses", dict(tbase, max_output_tokens=8, tool_choice="none", seed=1))
    o = json.loads(t2)
    return s2 == 200 and [it["type"] for it in o["output"]] == ["message"] and o["tools"][0]["name"] == "get_weather", t2[:300]
check("tool_choice none: a message", tools_none)

def round_trip():   # the call and its output go back as input items; the next turn runs
    c = calls[0]
    conv = [{"role": "user", "content": "What is the weather in Paris?"},
            {"type": "function_call", "id": c["id"], "call_id": c["call_id"], "name": c["name"], "arguments": c["arguments"]},
            {"type": "function_call_output", "call_id": c["call_id"], "output": "21 degrees, sunny"}]
    body = {"max_output_tokens": 8, "temperature": 0, "tools": TOOLS, "tool_choice": "none", "input": conv}
    s2, t2 = post("/v1/responses", body)
    s3, t3 = post("/v1/responses", dict(body, input=conv[:1]))
    o, short = json.loads(t2), json.loads(t3)
    oai = [{"role": "user", "content": conv[0]["content"]},
           {"role": "assistant", "content": None, "tool_calls": [{"id": c["call_id"], "type": "function",
            "function": {"name": c["name"], "arguments": c["arguments"]}}]},
           {"role": "tool", "tool_call_id": c["call_id"], "content": "21 degrees, sunny"}]
    s4, t4 = post("/v1/chat/completions", {"max_tokens": 8, "temperature": 0, "tool_choice": "none", "messages": oai,
                                           "tools": [{"type": "function", "function": {k: t[k] for k in ("name", "parameters")}}
                                                     for t in TOOLS]})
    ch = json.loads(t4)
    return (s2 == 200 and o["output"][0]["type"] == "message" and
            o["usage"]["input_tokens"] > short["usage"]["input_tokens"] + 10 and
            o["output"][0]["content"][0]["text"] == ch["choices"][0]["message"]["content"] and
            o["usage"]["input_tokens"] == ch["usage"]["prompt_tokens"]), f"{t2[:300]} / {t4[:300]}"
check("a function_call and its function_call_output as input: the next turn runs, == chat with tool_calls + tool", round_trip)

def structured():
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "green", "blue"]}},
              "required": ["ok", "color"]}
    body = {"input": "JSON please", "max_output_tokens": 64, "temperature": 1, "seed": 3,
            "text": {"format": {"type": "json_schema", "name": "c", "schema": schema, "strict": True}}}
    s2, t2 = post("/v1/responses", body)
    o = json.loads(t2)
    v = json.loads(o["output"][0]["content"][0]["text"])
    s3, t3 = post("/v1/responses", dict(body, text={"format": {"type": "json_object"}}))
    w = json.loads(json.loads(t3)["output"][0]["content"][0]["text"])
    return (s2 == 200 and o["status"] == "completed" and isinstance(v["ok"], bool) and v["color"] in ("red", "green", "blue")
            and o["text"]["format"]["type"] == "json_schema" and s3 == 200 and isinstance(w, dict)), f"{t2[:300]} / {t3[:300]}"
check("text.format json_schema: the text parses and matches; json_object: a JSON object", structured)

def bad(what, body, param, text, status=400, headers=KEY):
    def run():
        s2, t2 = post("/v1/responses", body, headers, raw=isinstance(body, bytes))
        e = json.loads(t2)["error"]
        good = (s2 == status and set(e) == {"message", "type", "param", "code"} and
                e["type"] == ("invalid_request_error" if status == 400 else "authentication_error") and
                e["param"] == param and text in e["message"])
        return good, f"{s2} {t2[:300]}"
    check(f"{status} {what}", run)

bad("no input", {"model": "tern"}, "input", "'input' is required")
bad("input a number", {"input": 3}, "input", "string or an array")
bad("previous_response_id", {"input": "x", "previous_response_id": "resp_1"}, "previous_response_id", "stateless")
bad("an item_reference", {"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "stateless")
bad("an image part", {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]},
    "input[0].content", "not supported")
bad("a built-in tool", {"input": "x", "tools": [{"type": "web_search_preview"}]}, "tools[0]", "built-in")
bad("a tool without a good name", {"input": "x", "tools": [{"type": "function", "name": "a b"}]}, "tools[0]", "tools[0].name")
bad("tool_choice names no tool", {"input": "x", "tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}},
    "tool_choice", "nope")
bad("max_output_tokens 0", {"input": "x", "max_output_tokens": 0}, "max_output_tokens", "positive")
bad("text.format unknown", {"input": "x", "text": {"format": {"type": "xml"}}}, "text.format", "xml")
bad("text.format with tools", {"input": "x", "tools": TOOLS, "tool_choice": "required",
                               "text": {"format": {"type": "json_object"}}}, "text.format", "cannot be used with 'tools'")
bad("temperature a string", {"input": "x", "temperature": "hot"}, "temperature", "temperature")
bad("invalid JSON", b"{nope", None, "JSON")
bad("no key", {"input": "x"}, None, "API key", 401, headers={})

def alias_cors():   # /responses as /v1/responses; a browser's preflight of it (no key in a preflight)
    s2, t2 = post("/responses", dict(base))
    req = urllib.request.Request(URL + "/v1/responses", method="OPTIONS",
                                 headers={"Origin": "http://x", "Access-Control-Request-Method": "POST"})
    with urllib.request.urlopen(req, timeout=30) as r:
        pre = (r.status, r.headers.get("Access-Control-Allow-Origin"), r.headers.get("Access-Control-Allow-Methods"))
    return (s2 == 200 and json.loads(t2)["output"][0]["content"][0]["text"] == text and pre[0] == 204 and pre[1] == "*"
            and "POST" in pre[2]), f"{s2} {t2[:200]} / {pre}"
check("/responses == /v1/responses; OPTIONS preflight 204 with CORS headers", alias_cors)

def think():   # Qwen3's template: a grammar makes the model think; the reasoning item == chat's reasoning_content
    g = 'root ::= "<think>" [a-z ]{5,20} "</think>" [a-z ]{5,20}'
    body = {"input": "think, then answer", "temperature": 0, "max_output_tokens": 80, "grammar": g}
    s2, t2 = post("/v1/responses", body, url=URL2, headers={})
    o = json.loads(t2)
    s3, t3 = post("/v1/chat/completions", {"messages": [{"role": "user", "content": "think, then answer"}], "temperature": 0,
                                           "max_tokens": 80, "grammar": g}, url=URL2, headers={})
    m = json.loads(t3)["choices"][0]["message"]
    out = o["output"]
    good = (s2 == 200 and [it["type"] for it in out] == ["reasoning", "message"] and out[0]["id"].startswith("rs_") and
            out[0]["summary"] == [] and out[0]["content"] == [{"type": "reasoning_text", "text": m["reasoning_content"]}] and
            out[1]["content"][0]["text"] == m["content"] and
            0 < o["usage"]["output_tokens_details"]["reasoning_tokens"] < o["usage"]["output_tokens"])
    evs = streamed(body, url=URL2, headers={})
    rd = "".join(d["delta"] for n, d in evs if n == "response.reasoning_text.delta")
    td = "".join(d["delta"] for n, d in evs if n == "response.output_text.delta")
    good = good and order_ok(evs) and rd == m["reasoning_content"] and td == m["content"] and \
        strip_ids(evs[-1][1]["response"]) == strip_ids(o)
    return good, f"{t2[:500]} / {m}"
check("--jinja Qwen3: thinking as a reasoning item (== chat's reasoning_content), streamed as reasoning_text deltas", think)

def effort():   # minimal: the template's empty thinking block in the prompt; high: none
    lo = json.loads(post("/v1/responses", {"input": "hi", "max_output_tokens": 1, "reasoning": {"effort": "minimal"}},
                         url=URL2, headers={})[1])
    hi = json.loads(post("/v1/responses", {"input": "hi", "max_output_tokens": 1, "reasoning": {"effort": "high"}},
                         url=URL2, headers={})[1])
    return (lo["usage"]["input_tokens"] > hi["usage"]["input_tokens"] and lo["reasoning"]["effort"] == "minimal"), \
        f"{lo['usage']} / {hi['usage']}"
check("reasoning.effort minimal turns the template's thinking off", effort)

check("--jinja Qwen3 (native tool format): tool_choice required, seed 2",
      tool_call(2, "required", {"get_weather", "add"}, url=URL2, headers={}))

def native_round_trip():
    c = calls[-1]
    conv = [{"role": "user", "content": "What is the weather in Paris?"},
            {"type": "function_call", "call_id": c["call_id"], "name": c["name"], "arguments": c["arguments"]},
            {"type": "function_call_output", "call_id": c["call_id"], "output": "21 degrees"}]
    s2, t2 = post("/v1/responses", {"max_output_tokens": 4, "temperature": 0, "tools": TOOLS, "tool_choice": "none",
                                    "input": conv}, url=URL2, headers={})
    return s2 == 200 and json.loads(t2)["output"][-1]["type"] == "message", t2[:300]
check("--jinja Qwen3: a function_call and its output as input render through the template", native_round_trip)
PY
count_checks < <(timeout 400 python3 "$tmp/responses.py" "$U1" "$U2" 2>&1)
for u in "$U1" "$U2"; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$u/health")" = 200 ] && ok "serve $u healthy after all" \
    || bad "serve $u unhealthy after the Responses requests"
done
if grep -q -E 'Sanitizer|runtime error' "$tmp"/s1.log "$tmp"/s2.log; then
  bad "sanitizer reports: $(grep -h -A8 -E 'Sanitizer|runtime error' "$tmp"/s1.log "$tmp"/s2.log | head -30)"
fi
finish 20
