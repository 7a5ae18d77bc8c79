#!/usr/bin/env bash
# llama.cpp's own server API on tern serve (one server, -np 2, --api-key, --metrics, a tiny
# generated model): POST /completion at temperature 0 gives /v1/completions' text and token
# counts; its stream (no [DONE]) concatenates to the plain reply's content and ends with a
# stop: true chunk with the summary and timings; n_probs' completion_probabilities equal the
# OpenAI route's logprobs (sampled and alternatives), streamed too; return_tokens detokenize to
# the content; a repeated prompt on id_slot reports tokens_cached (none with cache_prompt false);
# a stop word gives stop_type "word", stopping_word and the text before it; logit_bias false
# bans a token; a mixed prompt [ids, "text"] counts both; /apply-template's prompt, sent to
# /completion, gives the chat route's prompt tokens and reply; bad fields are 400s in llama.cpp's
# error shape naming the field; no key is a 401; /metrics counts the requests.
source "$(dirname "$0")/lib.bash"

M="$tmp/m.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 5
start_serve s -m "$M" -t 2 -np 2 -c 512 --metrics --api-key k3y || die "serve did not start: $(cat "$tmp/s.log")"
wait_health "$URL" 30 || die "serve not healthy: $(tail -5 "$tmp/s.log")"

python3 - "$URL" <<'PY' >"$tmp/py.out" 2>&1
import json, sys, urllib.request, urllib.error
URL = sys.argv[1]
H = {"Content-Type": "application/json", "Authorization": "Bearer k3y"}

def post(path, body, key=True, raw=False):
    h = dict(H) if key else {"Content-Type": "application/json"}
    req = urllib.request.Request(URL + path, json.dumps(body).encode(), h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            data = r.read().decode()
            return r.status, (data if raw else json.loads(data)), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode()), ""

def check(cond, msg):
    print(("ok   - " if cond else "FAIL - ") + msg)

P = "The quick brown fox jumps over the lazy dog. Once upon a time"
N = 24
st, a, _ = post("/completion", {"prompt": P, "n_predict": N, "temperature": 0, "return_tokens": True})
st2, o, _ = post("/v1/completions", {"prompt": P, "max_tokens": N, "temperature": 0})
ref = o["choices"][0]["text"]
check(st == 200 and a["content"] == ref and a["stop"] is True and a["tokens_predicted"] == o["usage"]["completion_tokens"]
      and a["tokens_evaluated"] == o["usage"]["prompt_tokens"] and a["stop_type"] in ("eos", "limit")
      and (a["stop_type"] == "limit") == (a["tokens_predicted"] == N),
      f"/completion == /v1/completions at temperature 0 ({a.get('tokens_predicted')} tokens, stop_type {a.get('stop_type')}): {ref!r}")
t = a.get("timings", {})
keys = ["prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second", "predicted_n", "predicted_ms",
        "predicted_per_token_ms", "predicted_per_second"]
gs = a.get("generation_settings", {})
check(all(k in t for k in keys) and t["predicted_n"] == a["tokens_predicted"] and gs.get("temperature") == 0
      and gs.get("n_predict") == N and a["model"] and a["id_slot"] in (0, 1) and isinstance(a["prompt"], str)
      and P in a["prompt"] and a["has_new_line"] == ("\n" in ref) and a["truncated"] is False and a["stopping_word"] == "",
      f"summary fields: timings {sorted(t)}, generation_settings n_predict {gs.get('n_predict')}, id_slot {a.get('id_slot')}")
toks = a.get("tokens", [])
_, d, _ = post("/detokenize", {"tokens": toks})
check(len(toks) == a["tokens_predicted"] and (a["stop_type"] != "limit" or d["content"] == ref),
      f"return_tokens: {len(toks)} ids that detokenize to the content")

# streaming
st, body, ctype = post("/completion", {"prompt": P, "n_predict": N, "temperature": 0, "stream": True}, raw=True)
events = [l[6:] for l in body.split("\n") if l.startswith("data: ")]
chunks = [json.loads(e) for e in events if e != "[DONE]"]
last = chunks[-1] if chunks else {}
check(st == 200 and "text/event-stream" in ctype and "[DONE]" not in events and len(chunks) >= 2
      and "".join(c["content"] for c in chunks) == ref and all(c["stop"] is False for c in chunks[:-1])
      and last.get("stop") is True and all(k in last.get("timings", {}) for k in keys)
      and last.get("stop_type") == a["stop_type"] and last.get("tokens_predicted") == a["tokens_predicted"],
      f"stream: {len(chunks)} chunks concatenate to the content, the last stop: true with timings, no [DONE]")

# n_probs vs the OpenAI route's logprobs
st, p, _ = post("/completion", {"prompt": P, "n_predict": 8, "temperature": 0, "n_probs": 3})
_, ol, _ = post("/v1/completions", {"prompt": P, "max_tokens": 8, "temperature": 0, "logprobs": 3})
lp = ol["choices"][0]["logprobs"]
cp = p.get("completion_probabilities", [])
good = st == 200 and len(cp) == len(lp["token_logprobs"]) == p["tokens_predicted"]
def oai(e):   # the OpenAI route's name of an entry's token: its text, or "bytes:\\xNN..." when not UTF-8
    try: return bytes(e["bytes"]).decode()
    except UnicodeDecodeError: return "bytes:" + "".join("\\x%02x" % c for c in e["bytes"])
for i, e in enumerate(cp if good else []):
    good &= oai(e) == lp["tokens"][i] and abs(e["logprob"] - lp["token_logprobs"][i]) < 1e-5 and len(e["top_logprobs"]) == 3
    alt = {oai(x): x["logprob"] for x in reversed(e["top_logprobs"])}   # the first of a repeated text wins, as OpenAI's
    good &= all(k in alt and abs(alt[k] - v) < 1e-5 for k, v in lp["top_logprobs"][i].items())
    good &= all(isinstance(x["id"], int) and isinstance(x["bytes"], list) for x in e["top_logprobs"])
check(good, f"n_probs 3: {len(cp)} completion_probabilities == the OpenAI route's logprobs and top_logprobs")
st, body, _ = post("/completion", {"prompt": P, "n_predict": 8, "temperature": 0, "n_probs": 3, "stream": True}, raw=True)
sc = [json.loads(l[6:]) for l in body.split("\n") if l.startswith("data: ")]
scp = [e for c in sc for e in c.get("completion_probabilities", [])]
check(scp == cp, f"streamed n_probs: the same {len(scp)} entries across the chunks")

# prompt cache on a slot
Q = "In a hole in the ground there lived a hobbit. Not a nasty, dirty, wet hole, filled with the ends of worms"
_, c1, _ = post("/completion", {"prompt": Q, "n_predict": 4, "temperature": 0, "id_slot": 0, "cache_prompt": True})
_, c2, _ = post("/completion", {"prompt": Q, "n_predict": 4, "temperature": 0, "id_slot": 0, "cache_prompt": True})
_, c3, _ = post("/completion", {"prompt": Q, "n_predict": 4, "temperature": 0, "cache_prompt": False})
check(c1["tokens_cached"] <= 1 and c2["tokens_cached"] >= c2["tokens_evaluated"] - 1 and c2["tokens_cached"] > 0
      and c2["timings"]["prompt_n"] == c2["tokens_evaluated"] - c2["tokens_cached"] and c3["tokens_cached"] == 0
      and c1["content"] == c2["content"] == c3["content"],
      f"cache_prompt: a repeat has tokens_cached {c2['tokens_cached']} of {c2['tokens_evaluated']} (first {c1['tokens_cached']}, cache_prompt false {c3['tokens_cached']})")

# stop word: a piece from the middle of the greedy text
word = next((ref[i:i + 3] for i in range(4, len(ref) - 3) if ref[i:i + 3].strip() == ref[i:i + 3]), None)
if word:
    _, w, _ = post("/completion", {"prompt": P, "n_predict": N, "temperature": 0, "stop": ["@@never@@", word]})
    check(w["stop_type"] == "word" and w["stopping_word"] == word and w["content"] == ref[:ref.index(word)],
          f"stop {word!r}: stop_type word, stopping_word, the text before it ({w['content']!r})")
else:
    check(False, f"no stop word to try in {ref!r}")

# logit_bias false bans the greedy first token
first = toks[0] if toks else 0
_, b, _ = post("/completion", {"prompt": P, "n_predict": 2, "temperature": 0, "return_tokens": True, "logit_bias": [[first, False]]})
check(b.get("tokens") and b["tokens"][0] != first and first not in b["tokens"], f"logit_bias [[{first}, false]] bans it: {b.get('tokens')}")

# mixed prompt: ids then text
_, ta, _ = post("/tokenize", {"content": "Once upon", "add_special": True})
_, tb, _ = post("/tokenize", {"content": " a time", "add_special": False})
_, mx, _ = post("/completion", {"prompt": ta["tokens"] + [" a time"], "n_predict": 2, "temperature": 0})
check(mx.get("tokens_evaluated") == len(ta["tokens"]) + len(tb["tokens"]), f"mixed prompt [ids, text]: {mx.get('tokens_evaluated')} tokens")

# /apply-template vs the chat route
msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}]
st, at, _ = post("/apply-template", {"messages": msgs})
_, ch, _ = post("/v1/chat/completions", {"messages": msgs, "max_tokens": 6, "temperature": 0})
_, ac, _ = post("/completion", {"prompt": at.get("prompt", ""), "n_predict": 6, "temperature": 0})
check(st == 200 and isinstance(at.get("prompt"), str) and "Name a color." in at["prompt"]
      and ac["tokens_evaluated"] == ch["usage"]["prompt_tokens"] and ac["content"] == ch["choices"][0]["message"]["content"],
      f"/apply-template's prompt: {ac['tokens_evaluated']} tokens and the chat route's reply {ac['content']!r}")

# errors: llama.cpp's shape, naming the field
for body, param in [({"prompt": P, "n_probs": 99}, "n_probs"), ({"prompt": P, "id_slot": 7}, "id_slot"),
                    ({"prompt": P, "n_predict": "x"}, "n_predict"), ({"n_predict": 3}, "prompt"),
                    ({"prompt": P, "logit_bias": [[1, "no"]]}, "logit_bias")]:
    st, e, _ = post("/completion", body)
    err = e.get("error", {})
    check(st == 400 and err.get("code") == 400 and err.get("param") == param and err.get("type") == "invalid_request_error"
          and err.get("message"), f"{json.dumps(body)[:60]} -> 400 naming {param}: {err.get('message')}")
st, e, _ = post("/apply-template", {"messages": "hi"})
check(st == 400 and e["error"]["param"] == "messages", "/apply-template without messages -> 400")
st, e, _ = post("/completion", {"prompt": P}, key=False)
st2, _, _ = post("/apply-template", {"messages": msgs}, key=False)
check(st == 401 and st2 == 401, "no API key: 401 on /completion and /apply-template")

def total():
    m = urllib.request.urlopen(urllib.request.Request(URL + "/metrics", headers=H), timeout=10).read().decode()
    return next(float(l.split()[1]) for l in m.splitlines() if l.startswith("tern_requests_total "))
n0 = total()
post("/completion", {"prompt": P, "n_predict": 2})
post("/completion", {"prompt": P, "n_predict": 2, "stream": True}, raw=True)
n1 = total()
check(n1 - n0 == 2, f"/metrics counts /completion requests, streamed or not: tern_requests_total {n0:g} -> {n1:g}")
PY
rc=$?
cat "$tmp/py.out"
pass=$((pass + $(grep -c '^ok   - ' "$tmp/py.out")))
fail=$((fail + $(grep -c '^FAIL - ' "$tmp/py.out")))
[ $rc = 0 ] || bad "the checks' script failed (rc $rc)"
finish 20
