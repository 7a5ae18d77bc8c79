#!/usr/bin/env bash
# Native tool-call formats on `tern serve --jinja --chat-template-file T` (llama.cpp's
# common/chat.cpp behaviour) on a tiny generated model, for Qwen 2.5's template (Hermes 2 Pro
# format), Llama 3.1's (Llama 3.x JSON) and Mistral Small 3.1's ([TOOL_CALLS]): the startup log
# names the format; tool_choice "required" at temperature 1 over several seeds gives
# finish_reason tool_calls and calls whose name and arguments follow the tool's schema (checked
# here in Python); a named choice; parallel calls (Hermes); "auto" is well-formed either way; a
# conversation with a tool call and its result; the streamed reply == the plain one; /apply-template
# renders structured tool calls as jinja2 does; Anthropic's /v1/messages gets tool_use blocks; and
# over two workers the replies == one process; Mistral's [TOOL_CALLS] as a control token after
# some text (content, then the calls). ("auto"'s lazy grammar is not forced here: a random
# model never writes the trigger; test_sched's test_lazy_grammars checks it.)
source "$(dirname "$0")/lib.bash"
src=${TERN_SRC:?TERN_SRC not set}
data=$src/tests/data/jinja
python3 -c 'import jinja2' 2>/dev/null || { echo "skipped: python3 with jinja2 not found"; exit 0; }

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 11

cat >"$tmp/check.py" <<'PY'
import json, sys
import httpcheck
URL, FMT, TMPL = sys.argv[1], sys.argv[2], sys.argv[3]
OUT = sys.argv[4]                  # the replies, written for the cluster comparison
LABEL = sys.argv[5] if len(sys.argv) > 5 else FMT
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
           "unit": {"enum": ["c", "f"]}}, "required": ["city", "unit"]}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "parameters": ADD}}]
MSGS = [{"role": "user", "content": "What is the weather in Paris?"}]
replies = {}

def post(path, body):
    return httpcheck.post(URL, path, body, timeout=60)

def say(good, what):
    httpcheck.say(good, LABEL + ": " + what)

def args_ok(name, args):   # the schemas above, checked by hand
    if name == "get_weather":
        return set(args) == {"city", "unit"} and isinstance(args["city"], str) and len(args["city"]) <= 12 \
            and args["unit"] in ("c", "f")
    return name == "add" and set(args) == {"a", "b"} and all(type(args[k]) is int for k in "ab")

def calls_of(msg):
    tc = msg["tool_calls"]
    assert msg["content"] is None and len(tc) >= 1
    for c in tc:
        assert c["type"] == "function" and isinstance(c["id"], str) and c["id"]
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in tc]

def check(what, body, names, most=1):
    st, txt = post("/v1/chat/completions", body)
    replies[what] = txt and json.loads(txt).get("choices") if st == 200 else st
    try:
        ch = json.loads(txt)["choices"][0]
        calls = calls_of(ch["message"])
        good = st == 200 and ch["finish_reason"] == "tool_calls" and 1 <= len(calls) <= most and \
            all(n in names and args_ok(n, a) for n, a in calls)
        say(good, f"{what}: {calls}")
    except Exception as e:
        say(False, f"{what}: {st} {txt[:300]} ({e!r})")

base = {"messages": MSGS, "tools": TOOLS, "max_tokens": 400, "temperature": 1}
for seed in range(1, 7):
    check(f"required, seed {seed}", dict(base, tool_choice="required", seed=seed), {"get_weather", "add"})
for seed, nm in ((5, "add"), (6, "get_weather")):
    check(f"named {nm}, seed {seed}", dict(base, seed=seed, tool_choice={"type": "function", "function": {"name": nm}}), {nm})
if FMT == "hermes":
    for seed in (1, 2):
        check(f"parallel, seed {seed}", dict(base, seed=seed, tool_choice="required", parallel_tool_calls=True),
              {"get_weather", "add"}, 8)

for seed in (7, 8):   # auto: free text; a call or content, well-formed either way
    st, txt = post("/v1/chat/completions", dict(base, seed=seed, max_tokens=24, tool_choice="auto"))
    try:
        ch = json.loads(txt)["choices"][0]
        m = ch["message"]
        good = (ch["finish_reason"] == "tool_calls" and all(args_ok(*c) for c in calls_of(m))) if m.get("tool_calls") \
            else isinstance(m["content"], str) and ch["finish_reason"] in ("stop", "length")
        say(st == 200 and good, f"auto, seed {seed}: {json.dumps(m)[:100]}")
    except Exception as e:
        say(False, f"auto seed {seed}: {st} {txt[:300]} ({e!r})")

# a conversation with a call and its result (Mistral's templates want 9-character ids)
cid = "abc123def"
conv = MSGS + [{"role": "assistant", "content": None, "tool_calls": [{"id": cid, "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"c\"}"}}]},
               {"role": "tool", "tool_call_id": cid, "name": "get_weather", "content": "18 C, sunny"}]
st, txt = post("/v1/chat/completions", dict(base, messages=conv, seed=3, max_tokens=16, tool_choice="auto"))
say(st == 200, f"a conversation with tool_calls and a tool result: {st} {txt[:200] if st != 200 else ''}")

# /apply-template: the structured call rendered as jinja2 renders it (arguments as an object)
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.ext import loopcontrols
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False, separators=None, sort_keys=False: \
    json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
def raise_exception(m): raise ValueError(m)
env.globals["raise_exception"] = raise_exception
import datetime
env.globals["strftime_now"] = lambda f: datetime.datetime.now(datetime.timezone.utc).strftime(f)
pyconv = json.loads(json.dumps(conv))
pyconv[1]["tool_calls"][0]["function"]["arguments"] = {"city": "Paris", "unit": "c"}
want = env.from_string(open(TMPL, encoding="utf-8").read()).render(
    messages=pyconv, add_generation_prompt=True, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", tools=None)
want = want[len("<|begin_of_text|>"):] if want.startswith("<|begin_of_text|>") else want
st, txt = post("/apply-template", {"messages": conv})
try:
    got = json.loads(txt)["prompt"]
    say(st == 200 and got == want and "Paris" in got, "/apply-template == jinja2 with a structured tool call")
except Exception as e:
    say(False, f"/apply-template: {st} {txt[:300]} ({e!r})")

# streamed == plain, over a few seeds: OpenAI's deltas (a call's first with its id and name, then
# pieces of its arguments) put together; the arguments come in more than one piece in some stream
# (how the text is chunked is timing's; Mistral's id follows the arguments: its call goes out
# whole once the id is read)
most = 0
for seed in (11, 12, 13, 14):
    body = dict(base, seed=seed, tool_choice="required")
    st, txt = post("/v1/chat/completions", body)
    plain = json.loads(txt)["choices"][0] if st == 200 else None
    st2, stxt = post("/v1/chat/completions", dict(body, stream=True))
    try:
        calls, fin, content, done, nargs = None, None, None, False, 0
        for line in stxt.split("\n"):
            if not line.startswith("data: "): continue
            if line[6:] == "[DONE]": done = True; continue
            for c in json.loads(line[6:])["choices"]:
                dl = c["delta"]
                if dl.get("content"): content = (content or "") + dl["content"]
                for t in dl.get("tool_calls") or []:
                    calls = calls or []
                    if "id" in t:
                        assert t["index"] == len(calls) and t["type"] == "function"
                        calls.append({"index": t["index"], "id": t["id"], "function": dict(t["function"])})
                    else:
                        calls[t["index"]]["function"]["arguments"] += t["function"]["arguments"]
                    nargs += bool(t["function"]["arguments"])
                fin = c["finish_reason"] or fin
        pc = plain["message"]["tool_calls"]
        good = done and content is None and fin == plain["finish_reason"] == "tool_calls" and len(calls) == len(pc) and \
            all(a["function"] == b["function"] and a["id"] and a["index"] == i
                for i, (a, b) in enumerate(zip(calls, pc)))
        most = max(most, nargs)
        say(good, f"seed {seed}: streamed == plain ({nargs} arguments deltas): {json.dumps(calls)[:160]}")
    except Exception as e:
        say(False, f"stream: {st2} {stxt[:400]} ({e!r})")
say(most > 1 or FMT == "mistral", f"a call's arguments streamed in pieces as generated (most deltas in one stream: {most})")

# Anthropic's Messages API on the same template: tool_choice "any" gives tool_use blocks
st, txt = post("/v1/messages", {"model": "m", "max_tokens": 400, "temperature": 1, "seed": 4, "messages": MSGS,
                                "tools": [{"name": t["function"]["name"], "input_schema": t["function"]["parameters"]}
                                          for t in TOOLS], "tool_choice": {"type": "any"}})
try:
    o = json.loads(txt)
    uses = [b for b in o["content"] if b["type"] == "tool_use"]
    say(st == 200 and o["stop_reason"] == "tool_use" and len(uses) >= 1 and all(args_ok(b["name"], b["input"]) for b in uses),
        f"/v1/messages tool_choice any: {[(b['name'], b['input']) for b in uses]}")
except Exception as e:
    say(False, f"/v1/messages: {st} {txt[:300]} ({e!r})")

st, txt = post("/v1/chat/completions", dict(base, tool_choice="required", grammar="root ::= \"a\""))
say(st == 400 and json.loads(txt)["error"]["param"] == "grammar", f"400 for tools + grammar: {st}")
json.dump(replies, open(OUT, "w"), sort_keys=True)
PY

run_checks() {   # run_checks URL FMT TEMPLATE OUT [LABEL]
  count_checks < <(timeout 120 python3 "$tmp/check.py" "$@" 2>&1)
}

# one serve per format: NAME TEMPLATE FORMAT
for spec in "qwen:qwen2.5-instruct:hermes" "llama:llama3.1:llama3" "mistral:mistral-small-3.1-24b-instruct-2503:mistral"; do
  IFS=: read -r name file fmt <<<"$spec"
  serve_ready "s_$name" -m "$M" -t 2 -c 4096 --jinja --chat-template-file "$data/$file.jinja"
  grep -q "tool calls in the $fmt format" "$tmp/s_$name.log" && ok "$fmt: the startup log names the format" \
    || bad "$fmt: startup log: $(grep 'chat template' "$tmp/s_$name.log")"
  run_checks "$URL" "$fmt" "$data/$file.jinja" "$tmp/one_$name.json"
  kill -TERM "$SPID"; wait_exit "$SPID" 10
done

# Mistral Nemo's [TOOL_CALLS] as a control token (mkmodel --control): it renders no text, yet the
# reply's reader must see it wherever it comes — content first, then the marker and the calls
# (llama.cpp's preserved tokens). A logit bias on it at temperature 1 makes the model write some
# text, then the marker; the lazy grammar takes over from the token. Plain and streamed agree.
MC="$tmp/ctl.gguf"
make_model "$MC" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 11 --control '[TOOL_CALLS]'
serve_ready s_ctl -m "$MC" -t 2 -c 4096 --jinja --chat-template-file "$data/mistral-small-3.1-24b-instruct-2503.jinja"
count_checks < <(timeout 120 python3 - "$URL" 2>&1 <<'PY'
import json, sys
import httpcheck
URL = sys.argv[1]
def post(path, body): return httpcheck.post(URL, path, body, timeout=60)
def say(good, what): httpcheck.say(good, "mistral control token: " + what)
st, t = post("/tokenize", {"content": "[TOOL_CALLS]"})
toks = json.loads(t)["tokens"]
say(len(toks) == 1, "[TOOL_CALLS] is one token: %s" % toks)
W = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}
base = {"messages": [{"role": "user", "content": "weather in Paris?"}], "tool_choice": "auto", "temperature": 1,
        "max_tokens": 200, "logit_bias": [[toks[0], 2]],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": W}}]}
both = 0
for seed in range(1, 7):
    st, t = post("/v1/chat/completions", dict(base, seed=seed))
    ch = json.loads(t)["choices"][0]
    m = ch["message"]
    calls = m.get("tool_calls") or []
    good = len(calls) >= 1 and all(c["function"]["name"] == "get_weather" and set(json.loads(c["function"]["arguments"])) == {"city"}
                                   for c in calls)
    if calls and m["content"]:
        both += 1
        good = good and ch["finish_reason"] == "tool_calls" and "[TOOL_CALLS]" not in m["content"]
    st2, stxt = post("/v1/chat/completions", dict(base, seed=seed, stream=True))
    content, scalls, fin = None, [], None
    for line in stxt.split("\n"):
        if not line.startswith("data: ") or line == "data: [DONE]": continue
        for c in json.loads(line[6:])["choices"]:
            d = c["delta"]
            if d.get("content"): content = (content or "") + d["content"]
            for tc in d.get("tool_calls") or []:
                if "id" in tc: scalls.append({"id": tc["id"], "function": dict(tc["function"])})
                else: scalls[tc["index"]]["function"]["arguments"] += tc["function"]["arguments"]
            fin = c["finish_reason"] or fin
    same = content == m["content"] and fin == ch["finish_reason"] and \
        [(c["id"], c["function"]) for c in scalls] == [(c["id"], c["function"]) for c in calls]
    say(good and same, "seed %d: content %r then %d call(s); stream == plain" % (seed, (m["content"] or "")[:30], len(calls)))
say(both >= 2, "replies with content before the calls: %d of 6" % both)
PY
)
kill -TERM "$SPID"; wait_exit "$SPID" 10

# over two workers: the same replies as one process (Hermes)
start_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w1 not ready: $(cat "$tmp/w1.log")"
E1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker w2 not ready: $(cat "$tmp/w2.log")"
E2=$EP
serve_ready s_cluster -m "$M" -t 2 -c 4096 --workers "$E1,$E2" --jinja --chat-template-file "$data/qwen2.5-instruct.jinja"
run_checks "$URL" hermes "$data/qwen2.5-instruct.jinja" "$tmp/two_qwen.json" "hermes over 2 workers"
python3 - "$tmp/one_qwen.json" "$tmp/two_qwen.json" <<'PY' && ok "hermes: the replies over 2 workers == one process" \
  || bad "hermes: the replies over 2 workers differ from one process"
import json, sys
def strip(replies):   # each request's choices without the call ids (they name the request)
    for choices in replies.values():
        for c in choices if isinstance(choices, list) else []:
            for t in c["message"].get("tool_calls") or []:
                t.pop("id", None)
    return replies
a, b = strip(json.load(open(sys.argv[1]))), strip(json.load(open(sys.argv[2])))
sys.exit(0 if a == b and len(a) >= 8 else 1)
PY
finish 20
