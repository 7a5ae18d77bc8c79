#!/usr/bin/env bash
# llama-server's POST /infill and id_slot pinning on tern serve (a tiny generated model with
# mkmodel --fim, -b 64 and --max-tokens 32 so that the prefix, the suffix and the extra context
# are all cut): `tern info` lists the FIM tokens; at temperature 0 /infill gives exactly what
# /completion gives for the token ids a Python transcription of llama.cpp's format_infill builds
# from /tokenize's pieces (content, tokens, tokens_evaluated) — a short case, a long one with a
# prompt and input_extra (with and without filename), and --spm-infill's order; its stream
# concatenates to the plain reply; bad inputs are 400s naming the field; a model without FIM
# tokens answers 501 with llama.cpp's message. id_slot: a prompt cached on slot 0 sent with
# id_slot 1 runs on slot 1 (its beginning copied from slot 0), two concurrent requests pinned to slot 1 both
# run there, the second on the first's cache, while slot 0 stays as it was (/slots); /infill
# takes id_slot too. Two workers give one process's /infill replies.
source "$(dirname "$0")/lib.bash"

M="$tmp/fim.gguf"
N="$tmp/nofim.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 7 --fim
make_model "$N" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 7
info=$("$TERN" info "$M" 2>/dev/null | grep '^fim tokens:')
[[ "$info" == *"pre "*"<|fim_prefix|>"*"sep "*"<|file_sep|>"*"(/infill works)"* ]] && ok "tern info lists the FIM tokens: $info" \
  || bad "tern info's FIM line: '$info'"
[[ "$("$TERN" info "$N" 2>/dev/null | grep '^fim tokens:')" == *none* ]] && ok "tern info: no FIM tokens without --fim" \
  || bad "tern info without --fim: $("$TERN" info "$N" 2>&1 | grep fim)"

ARGS=(-t 2 -np 2 -c 512 -b 64 --max-tokens 32)
start_serve s -m "$M" "${ARGS[@]}" || die "serve did not start: $(cat "$tmp/s.log")"
wait_health "$URL" 30 || die "serve not healthy: $(tail -5 "$tmp/s.log")"
U1=$URL
start_serve spm -m "$M" "${ARGS[@]}" --spm-infill || die "serve --spm-infill did not start: $(cat "$tmp/spm.log")"
wait_health "$URL" 30 || die "serve --spm-infill not healthy"
U2=$URL
start_serve nofim -m "$N" -t 1 -np 1 -c 256 || die "serve (no FIM) did not start: $(cat "$tmp/nofim.log")"
wait_health "$URL" 30 || die "serve (no FIM) not healthy"
U3=$URL
E=()
for w in w1 w2; do
  start_worker $w "$LOOPBACK_ANY" -m "$M" -t 1 || die "worker $w not ready: $(cat "$tmp/$w.log")"
  E+=("$EP")
done
start_serve cl -m "$M" "${ARGS[@]}" --workers "${E[0]},${E[1]}" || die "serve --workers did not start: $(cat "$tmp/cl.log")"
wait_health "$URL" 30 || die "serve --workers not healthy: $(tail -5 "$tmp/cl.log")"
U4=$URL

timeout 300 python3 - "$U1" "$U2" "$U3" "$U4" <<'PY' >"$tmp/py.out" 2>&1
import json, sys, threading, urllib.request, urllib.error
U1, U2, U3, U4 = sys.argv[1:5]
N_BATCH, N_CTX, N_PREDICT = 64, 512, 32   # the servers' -b, -c, --max-tokens

def post(url, path, body, raw=False):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            data = r.read().decode()
            return r.status, (data if raw else json.loads(data))
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())

def get(url, path):
    with urllib.request.urlopen(url + path, timeout=30) as r:
        return json.loads(r.read().decode())

def check(cond, msg):
    print(("ok   - " if cond else "FAIL - ") + msg)

def tok(text, special=False):   # /tokenize without BOS
    return post(U1, "/tokenize", {"content": text, "add_special": False, "parse_special": special})[1]["tokens"]

FIM = {}
for k, t in [("pre", "<|fim_prefix|>"), ("suf", "<|fim_suffix|>"), ("mid", "<|fim_middle|>"), ("rep", "<|repo_name|>"),
             ("sep", "<|file_sep|>")]:
    ids = tok(t, True)
    assert len(ids) == 1, (t, ids)
    FIM[k] = ids[0]
with_bos = post(U1, "/tokenize", {"content": "a", "add_special": True})[1]["tokens"]
BOS = with_bos[0] if len(with_bos) == 2 else None

# llama.cpp's format_infill (tools/server), transcribed
def format_infill(prefix, suffix, extra, prompt, spm=False):
    extra_tokens = [FIM["rep"]] + tok("myproject\n")
    for ch in extra:
        extra_tokens += [FIM["sep"]] + tok(ch.get("filename", "tmp") + "\n") + tok(ch["text"])
    extra_tokens += [FIM["sep"]] + tok("filename\n")
    tp, ts, tq = tok(prefix), tok(suffix), tok(prompt, True)
    n_prefix_take = min(len(tp), 3 * (N_BATCH // 4))
    n_suffix_take = min(len(ts), max(0, (N_BATCH // 4) - (2 + len(tq))))
    n_extra_take = min(max(0, N_CTX - N_BATCH - 2 * N_PREDICT), len(extra_tokens))
    tp = [FIM["pre"]] + tp[len(tp) - n_prefix_take:] + tq
    ts = [FIM["suf"]] + ts[:n_suffix_take]
    inp, end = (ts, tp) if spm else (tp, ts)
    if BOS is not None:
        inp = [BOS] + inp
    inp = extra_tokens[len(extra_tokens) - n_extra_take:] + inp
    return inp + end + [FIM["mid"]], len(extra_tokens), n_extra_take

code = "".join(f"def f{i}(x):\n    return x * {i} + {i * i}\n\n" for i in range(40))
tail = "".join(f"print(f{i}(3))\n" for i in range(30))
big = "".join(f"# helper {i}: the {i}th of many lines that fill the repository context\n" for i in range(60))
cases = [
    ("short", {"input_prefix": "def add(a, b):\n    ", "input_suffix": "\n    return c\n"}),
    ("long + prompt + input_extra", {"input_prefix": code, "input_suffix": tail, "prompt": "    y = ",
                                     "input_extra": [{"filename": "util.py", "text": "import os\nimport sys\n"},
                                                     {"text": big}]}),
]
results = {}
for name, body in cases:
    ids, n_extra, n_extra_take = format_infill(body["input_prefix"], body["input_suffix"], body.get("input_extra", []),
                                               body.get("prompt", ""))
    req = dict(body, n_predict=24, temperature=0, return_tokens=True)
    st, a = post(U1, "/infill", req)
    _, c = post(U1, "/completion", {"prompt": ids, "n_predict": 24, "temperature": 0, "return_tokens": True})
    results[name] = a
    check(st == 200 and a["content"] == c["content"] and a["tokens"] == c["tokens"] and len(a["tokens"]) > 0
          and a["tokens_evaluated"] == len(ids) == c["tokens_evaluated"] and a["stop"] is True and "timings" in a,
          f"/infill {name}: == /completion of the {len(ids)} transcribed ids (extra {n_extra_take} of {n_extra} kept): "
          f"{a.get('content')!r}")
    if name != "short":
        check(n_extra_take < n_extra and len(tok(body["input_prefix"])) > 48,
              f"the long case cuts: prefix {len(tok(body['input_prefix']))} -> 48, extra {n_extra} -> {n_extra_take}")

body = dict(cases[1][1], n_predict=24, temperature=0)
ids, _, _ = format_infill(body["input_prefix"], body["input_suffix"], body["input_extra"], body["prompt"], spm=True)
st, a = post(U2, "/infill", dict(body, return_tokens=True))
_, c = post(U2, "/completion", {"prompt": ids, "n_predict": 24, "temperature": 0, "return_tokens": True})
check(st == 200 and a["tokens"] == c["tokens"] and a["tokens_evaluated"] == len(ids) and ids[0] != FIM["pre"],
      f"--spm-infill: suffix first, == /completion of the transcribed ids ({a['tokens_evaluated']} tokens)")

st, s = post(U1, "/infill", dict(body, stream=True), raw=True)
chunks = [json.loads(l[6:]) for l in s.split("\n") if l.startswith("data: ")]
check(st == 200 and len(chunks) >= 2 and "".join(x["content"] for x in chunks) == results["long + prompt + input_extra"]["content"]
      and chunks[-1]["stop"] is True and all(x["stop"] is False for x in chunks[:-1]),
      f"stream: {len(chunks)} chunks concatenate to the plain reply, the last stop: true")

for bad_body, param in [({"input_suffix": "x"}, "input_prefix"), ({"input_prefix": "x"}, "input_suffix"),
                        ({"input_prefix": "x", "input_suffix": "y", "input_extra": {"text": "z"}}, "input_extra"),
                        ({"input_prefix": "x", "input_suffix": "y", "input_extra": [{"filename": "a"}]}, "input_extra"),
                        ({"input_prefix": "x", "input_suffix": "y", "prompt": [1, 2]}, "prompt"),
                        ({"input_prefix": "x", "input_suffix": "y", "id_slot": 5}, "id_slot")]:
    st, e = post(U1, "/infill", bad_body)
    err = e.get("error", {})
    check(st == 400 and err.get("param") == param and err.get("type") == "invalid_request_error",
          f"{json.dumps(bad_body)[:70]} -> 400 naming {param}: {err.get('message')}")
st, e = post(U3, "/infill", {"input_prefix": "x", "input_suffix": "y"})
err = e.get("error", {})
check(st == 501 and err.get("type") == "not_supported_error"
      and err.get("message", "").startswith("Infill is not supported by this model: prefix token is missing."),
      f"a model without FIM tokens: {st} {err.get('message')!r}")

# id_slot: a prompt cached on slot 0, then pinned to slot 1 (the scheduler alone would pick slot 0)
Q = "Once upon a time, in a land of ternary weights, there lived a small model that could fill in the middle"
_, r0 = post(U1, "/completion", {"prompt": Q, "n_predict": 4, "temperature": 0, "id_slot": 0})
_, r1 = post(U1, "/completion", {"prompt": Q, "n_predict": 4, "temperature": 0, "id_slot": 1})
# (slot 1 holds nothing of it: the prompt's beginning is copied over from slot 0, a KV copy)
check(r0["id_slot"] == 0 and r1["id_slot"] == 1 and r0["tokens_cached"] == 0
      and r1["tokens_cached"] == r1["tokens_evaluated"] - 1 and r0["content"] == r1["content"],
      f"id_slot 1 runs on slot 1 though slot 0 holds the prompt, which it copies (tokens_cached {r1['tokens_cached']})")
slots0 = get(U1, "/slots")[0]
R = Q + " and the second story is about a slot"
res = [None, None]
def pinned(i):
    res[i] = post(U1, "/completion", {"prompt": R, "n_predict": 24, "temperature": 0, "id_slot": 1, "ignore_eos": True})[1]
th = [threading.Thread(target=pinned, args=(i,)) for i in range(2)]
for t in th: t.start()
for t in th: t.join()
slots = get(U1, "/slots")
first, second = sorted(res, key=lambda r: r["tokens_cached"])
check(all(r["id_slot"] == 1 for r in res) and second["tokens_cached"] >= second["tokens_evaluated"] - 1
      and first["tokens_cached"] < second["tokens_cached"] and first["content"] == second["content"]
      and slots[0]["n_prompt_tokens"] == slots0["n_prompt_tokens"] and slots[1]["n_prompt_tokens"] == second["tokens_evaluated"]
      and slots[1]["next_token"]["n_decoded"] == second["tokens_predicted"] == 24,
      f"two concurrent requests on id_slot 1: both ran there, one after the other (tokens_cached {first['tokens_cached']} "
      f"then {second['tokens_cached']} of {second['tokens_evaluated']}); /slots: slot 1 shows it, slot 0 untouched"
      + ("" if first["content"] == second["content"] else f" -- contents differ: {first['content']!r} {second['content']!r}")
      + f" (slot 0 prompt {slots0['n_prompt_tokens']} -> {slots[0]['n_prompt_tokens']}, slot 1 {slots[1]['n_prompt_tokens']}, "
      f"n_decoded {slots[1]['next_token']['n_decoded']})")
ib = {"input_prefix": "def mul(a, b):\n    ", "input_suffix": "\n    return m\n", "n_predict": 4, "temperature": 0, "id_slot": 1}
_, i1 = post(U1, "/infill", ib)
_, i2 = post(U1, "/infill", ib)
check(i1["id_slot"] == i2["id_slot"] == 1 and i2["tokens_cached"] > 0 and i1["content"] == i2["content"],
      f"/infill with id_slot 1: the repeat reuses the slot's cache (tokens_cached {i2['tokens_cached']} of {i2['tokens_evaluated']})")

# two workers == one process
for name, b in cases:
    st, w = post(U4, "/infill", dict(b, n_predict=24, temperature=0, return_tokens=True))
    one = results[name]
    check(st == 200 and w["tokens"] == one["tokens"] and w["content"] == one["content"]
          and w["tokens_evaluated"] == one["tokens_evaluated"], f"2 workers: /infill {name} == one process")
PY
rc=$?
cat "$tmp/py.out"
pass=$((pass + $(grep -c '^ok   - ' "$tmp/py.out")))
fail=$((fail + $(grep -c '^FAIL - ' "$tmp/py.out")))
[ $rc = 0 ] || bad "the checks' script failed (rc $rc)"
finish 20
