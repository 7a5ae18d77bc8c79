#!/usr/bin/env bash
# Anthropic's Messages API on `tern serve` (POST /v1/messages, /v1/messages/count_tokens) on a
# tiny generated model: at temperature 0 the same text and token counts as /v1/chat/completions
# for the same conversation (system as a string and as text blocks), stop_reason max_tokens; the
# stream's events in the documented order, its text deltas == the plain text, message_delta
# with stop_reason and usage; stop_sequences (stop_reason stop_sequence, the sequence, the text
# cut before it); tool_choice tool / any (a tool_use block whose input follows the input_schema,
# streamed as input_json_delta pieces as generated, put together == the plain reply), none; a conversation with tool_use and
# tool_result blocks; count_tokens == usage.input_tokens; 400s in Anthropic's error shape naming
# the field (a malformed thinking too; a small budget_tokens is taken: tern is lenient there); and with --api-key, x-api-key (and Bearer) accepted, a missing or wrong key a 401.
source "$(dirname "$0")/lib.bash"

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 11
serve_ready s1 -m "$M" -t 2 -c 4096 --api-key sekret

cat >"$tmp/anthropic.py" <<'PY'
import json, sys
import httpcheck
from httpcheck import say, check, events
URL = sys.argv[1]
KEY = {"x-api-key": "sekret", "anthropic-version": "2023-06-01"}

def post(path, body, headers=KEY, raw=False):
    return httpcheck.post(URL, path, body, headers, raw)

def order_ok(evs):   # message_start, (block start, deltas, stop)*, message_delta, message_stop; pings anywhere
    names = [n for n, _ in evs if n != "ping"]
    if not names or names[0] != "message_start" or names[-2:] != ["message_delta", "message_stop"]:
        return False
    state, index = "out", 0
    for (n, d) in [(n, d) for n, d in evs if n != "ping"][1:-2]:
        if d.get("type") != n:
            return False
        if n == "content_block_start" and state == "out" and d["index"] == index: state = "in"
        elif n == "content_block_delta" and state == "in" and d["index"] == index: pass
        elif n == "content_block_stop" and state == "in" and d["index"] == index: state, index = "out", index + 1
        else: return False
    return state == "out"

SYS = "You are terse."
CONV = [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "Again, "}, {"type": "text", "text": "please."}]}]
OAI = [{"role": "system", "content": SYS}, {"role": "user", "content": "Say hello."},
       {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Again, please."}]
base = {"model": "tern", "max_tokens": 24, "temperature": 0, "system": SYS, "messages": CONV}

st, txt = post("/v1/messages", base)
msg = json.loads(txt) if st == 200 else {}
text = msg.get("content", [{}])[0].get("text", "") if msg.get("content") else ""
def plain():
    ok = (st == 200 and msg["type"] == "message" and msg["role"] == "assistant" and msg["id"].startswith("msg_")
          and len(msg["content"]) == 1 and msg["content"][0]["type"] == "text" and msg["stop_reason"] == "max_tokens"
          and msg["stop_sequence"] is None and msg["usage"]["output_tokens"] == 24 and msg["usage"]["input_tokens"] > 0)
    return ok, txt[:300]
check("plain reply: one text block, stop_reason max_tokens, usage", plain)

def same_as_chat():
    s2, t2 = post("/v1/chat/completions", {"max_tokens": 24, "temperature": 0, "messages": OAI},
                  {"Authorization": "Bearer sekret"})
    o = json.loads(t2)
    c = o["choices"][0]
    return (s2 == 200 and c["message"]["content"] == text and c["finish_reason"] == "length" and
            o["usage"]["prompt_tokens"] == msg["usage"]["input_tokens"] and
            o["usage"]["completion_tokens"] == msg["usage"]["output_tokens"]), f"{text!r} vs {t2[:300]}"
check("same text and token counts as /v1/chat/completions", same_as_chat)

def system_blocks():
    s2, t2 = post("/v1/messages", dict(base, system=[{"type": "text", "text": SYS}]))
    return s2 == 200 and json.loads(t2)["content"][0]["text"] == text, t2[:300]
check("system as text blocks == system as a string", system_blocks)

def stream():
    s2, t2 = post("/v1/messages", dict(base, stream=True))
    evs = events(t2)
    start = evs[0][1]["message"]
    deltas = [d["delta"] for n, d in evs if n == "content_block_delta"]
    md = [d for n, d in evs if n == "message_delta"][0]
    good = (s2 == 200 and order_ok(evs) and start["id"].startswith("msg_") and start["content"] == [] and
            start["usage"]["input_tokens"] == msg["usage"]["input_tokens"] and
            all(d["type"] == "text_delta" for d in deltas) and "".join(d["text"] for d in deltas) == text and
            md["delta"]["stop_reason"] == "max_tokens" and md["delta"]["stop_sequence"] is None and
            md["usage"]["output_tokens"] == msg["usage"]["output_tokens"])
    return good, t2[:600]
check("stream: documented event order, text deltas == the plain text, message_delta stop_reason + usage", stream)

def stop_seq():
    # a stop sequence from the middle of the greedy text: the reply is cut where it first occurs
    i = next(k for k in range(3, len(text) - 3) if text[k:k + 3].isascii() and text[k:k + 3].strip() == text[k:k + 3])
    seq = text[i:i + 3]
    s2, t2 = post("/v1/messages", dict(base, stop_sequences=[seq]))
    o = json.loads(t2)
    good = (s2 == 200 and o["stop_reason"] == "stop_sequence" and o["stop_sequence"] == seq and
            o["content"][0]["text"] == text[:text.find(seq)])
    s3, t3 = post("/v1/messages", dict(base, stop_sequences=[seq], stream=True))
    md = [d for n, d in events(t3) if n == "message_delta"][0]["delta"]
    good = good and md == {"stop_reason": "stop_sequence", "stop_sequence": seq}
    return good, f"{seq!r}: {t2[:300]} / {md}"
check("stop_sequences: stop_reason stop_sequence with the sequence (plain and streamed)", stop_seq)

def end_turn():   # an unmet stop sequence changes nothing
    s2, t2 = post("/v1/messages", dict(base, stop_sequences=["\u2603never"]))
    o = json.loads(t2)
    return s2 == 200 and o["stop_reason"] == "max_tokens" and o["stop_sequence"] is None and o["content"][0]["text"] == text, t2[:300]
check("an unmet stop sequence: max_tokens, the same text", end_turn)

def count():
    s2, t2 = post("/v1/messages/count_tokens", {"model": "tern", "system": SYS, "messages": CONV})
    return s2 == 200 and json.loads(t2) == {"input_tokens": msg["usage"]["input_tokens"]}, t2[:300]
check("count_tokens == usage.input_tokens", count)

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
           "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"]}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
TOOLS = [{"name": "get_weather", "description": "Weather of a city", "input_schema": WEATHER},
         {"name": "add", "input_schema": ADD}]
tbase = {"max_tokens": 1000, "temperature": 1, "tools": TOOLS,
         "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}

def args_ok(name, a):
    if name == "get_weather":
        return set(a) == {"city", "unit"} and isinstance(a["city"], str) and len(a["city"]) <= 12 and a["unit"] in ("c", "f")
    return set(a) == {"a", "b"} and all(type(a[k]) is int for k in "ab")

pieces = []   # input_json_delta events per streamed tool_use (how the text came in chunks is timing's)

def tool_use(seed, choice, names):
    def run():
        body = dict(tbase, seed=seed, tool_choice=choice)
        s2, t2 = post("/v1/messages", body)
        o = json.loads(t2)
        b = o["content"][-1]
        good = (s2 == 200 and o["stop_reason"] == "tool_use" and b["type"] == "tool_use" and b["id"].startswith("toolu_")
                and b["name"] in names and args_ok(b["name"], b["input"]))
        s3, t3 = post("/v1/messages", dict(body, stream=True))
        evs = events(t3)
        starts = [d["content_block"] for n, d in evs if n == "content_block_start"]
        parts = [d["delta"]["partial_json"] for n, d in evs if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"]
        md = [d for n, d in evs if n == "message_delta"][0]
        pieces.append(len(parts))
        good = good and order_ok(evs) and dict(starts[-1], id="") == {"type": "tool_use", "id": "", "name": b["name"], "input": {}} \
            and starts[-1]["id"].startswith("toolu_") \
            and json.loads("".join(parts)) == b["input"] and md["delta"]["stop_reason"] == "tool_use" \
            and md["usage"]["output_tokens"] == o["usage"]["output_tokens"]
        return good, f"{t2[:300]} / {t3[-600:]}"
    return run

for seed in (1, 2, 3):
    check(f"tool_choice tool get_weather, seed {seed}: tool_use block matching input_schema, streamed the same",
          tool_use(seed, {"type": "tool", "name": "get_weather"}, {"get_weather"}))
check("tool_choice tool add, seed 5", tool_use(5, {"type": "tool", "name": "add"}, {"add"}))
check("tool_choice any, seed 4", tool_use(4, {"type": "any"}, {"get_weather", "add"}))
check("a tool_use's input streamed in pieces as generated (in some stream)", lambda: (max(pieces) > 1, f"{pieces}"))

def tools_none():
    s2, t2 = post("/v1/messages", dict(tbase, max_tokens=8, tool_choice={"type": "none"}, seed=1))
    o = json.loads(t2)
    return s2 == 200 and [b["type"] for b in o["content"]] == ["text"] and o["stop_reason"] == "max_tokens", t2[:300]
check("tool_choice none: a text reply", tools_none)

def tool_conv():   # the assistant's tool_use and the user's tool_result go into the prompt
    conv = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                                              {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                                               "input": {"city": "Paris", "unit": "c"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01",
                                          "content": [{"type": "text", "text": "21 degrees, sunny"}]},
                                         {"type": "text", "text": "Thanks!"}]}]
    body = {"max_tokens": 8, "temperature": 0, "tools": TOOLS, "tool_choice": {"type": "none"}, "messages": conv}
    s2, t2 = post("/v1/messages", body)
    s3, t3 = post("/v1/messages/count_tokens", {"tools": TOOLS, "tool_choice": {"type": "none"}, "messages": conv[:1]})
    n_short = json.loads(t3)["input_tokens"]
    o = json.loads(t2)
    return s2 == 200 and o["usage"]["input_tokens"] > n_short + 10, f"{t2[:300]} / {t3}"
check("a conversation with tool_use and tool_result blocks", tool_conv)

def bad(what, body, field, status=400, path="/v1/messages", headers=KEY):
    def run():
        s2, t2 = post(path, body, headers, raw=isinstance(body, bytes))
        o = json.loads(t2)
        good = (s2 == status and o["type"] == "error" and set(o["error"]) == {"type", "message"} and
                o["error"]["type"] == ("invalid_request_error" if status == 400 else "authentication_error") and
                field in o["error"]["message"])
        return good, f"{s2} {t2[:300]}"
    check(f"{status} {what}", run)

M1 = [{"role": "user", "content": "hi"}]
bad("no max_tokens", {"messages": M1}, "max_tokens")
bad("max_tokens 0", {"max_tokens": 0, "messages": M1}, "max_tokens")
bad("no messages", {"max_tokens": 5}, "messages")
bad("role system in messages", {"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role")
bad("image block", {"max_tokens": 5, "messages": [{"role": "user", "content": [
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]}, "not supported")
bad("tool_use in a user message", {"max_tokens": 5, "messages": [{"role": "user", "content": [
    {"type": "tool_use", "id": "t", "name": "add", "input": {}}]}]}, "messages[0].content[0]")
bad("tool_result without tool_use_id", {"max_tokens": 5, "messages": [{"role": "user", "content": [
    {"type": "tool_result", "content": "x"}]}]}, "tool_use_id")
bad("system a number", {"max_tokens": 5, "system": 3, "messages": M1}, "system")
bad("tool without input_schema", {"max_tokens": 5, "tools": [{"name": "f"}], "messages": M1}, "input_schema")
bad("tool_choice unknown type", {"max_tokens": 5, "tools": TOOLS, "tool_choice": {"type": "sometimes"}, "messages": M1}, "tool_choice")
bad("tool_choice names no tool", {"max_tokens": 5, "tools": TOOLS, "tool_choice": {"type": "tool", "name": "nope"}, "messages": M1}, "nope")
bad("stop_sequences not strings", {"max_tokens": 5, "stop_sequences": [1], "messages": M1}, "stop_sequences")
bad("temperature a string", {"max_tokens": 5, "temperature": "hot", "messages": M1}, "temperature")
bad("thinking not an object", {"max_tokens": 5, "thinking": "yes", "messages": M1}, "thinking")
bad("thinking type unknown", {"max_tokens": 5, "thinking": {"type": "sometimes"}, "messages": M1}, "thinking")
bad("thinking enabled without budget_tokens", {"max_tokens": 5, "thinking": {"type": "enabled"}, "messages": M1}, "budget_tokens")
bad("thinking budget_tokens 0", {"max_tokens": 5, "thinking": {"type": "enabled", "budget_tokens": 0}, "messages": M1}, "budget_tokens")
bad("thinking budget_tokens a string", {"max_tokens": 5, "thinking": {"type": "enabled", "budget_tokens": "9"}, "messages": M1},
    "budget_tokens")
bad("count_tokens with a bad thinking", {"thinking": {"type": 1}, "messages": M1}, "thinking", path="/v1/messages/count_tokens")

def thinking_lenient():   # Anthropic wants budget_tokens >= 1024 and < max_tokens; tern takes any >= 1
    s2, t2 = post("/v1/messages", {"max_tokens": 3, "thinking": {"type": "enabled", "budget_tokens": 2}, "messages": M1})
    s3, t3 = post("/v1/messages", {"max_tokens": 3, "thinking": {"type": "disabled"}, "messages": M1})
    return s2 == 200 and s3 == 200, f"{s2} {t2[:200]} / {s3} {t3[:200]}"
check("thinking enabled with a small budget_tokens, and disabled: accepted", thinking_lenient)
bad("invalid JSON", b"{nope", "JSON", path="/v1/messages")
bad("count_tokens without messages", {"system": "x"}, "messages", path="/v1/messages/count_tokens")
bad("no key", {"max_tokens": 5, "messages": M1}, "API key", 401, headers={})
bad("wrong x-api-key", {"max_tokens": 5, "messages": M1}, "API key", 401, headers={"x-api-key": "nope"})

def bearer():
    s2, t2 = post("/v1/messages", {"max_tokens": 2, "messages": M1}, {"Authorization": "Bearer sekret"})
    return s2 == 200, t2[:200]
check("Bearer key accepted too", bearer)
PY
count_checks < <(timeout 240 python3 "$tmp/anthropic.py" "$URL" 2>&1)
[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/health")" = 200 ] && ok "serve healthy after all" \
  || bad "serve unhealthy after the Messages requests"
finish 20
