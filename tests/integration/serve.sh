#!/usr/bin/env bash
# `tern serve` end to end on a tiny generated model, with curl on 127.0.0.1 (free ports):
# /health, /v1/models, completions and chat (plain and streamed as SSE, with usage), greedy
# output equal to `tern run --temp 0`, logprobs (OpenAI shapes, streamed == plain, over workers), echo
# with the prompt's own logprobs (== each prefix's alternatives, over workers too), the prefix
# cache (repeats, continuations, chat turns: same text as without it, also over workers), seeded sampling repeatable, 4 parallel requests with
# -np 4 equal to their single outputs, stop strings (plain and streamed), /tokenize +
# /detokenize, several choices (prompt lists, n; streamed too: per index == plain), errors (bad JSON, unknown route, wrong method, n=17, prompt too long, body too
# large), --api-key, CORS (the header, preflights), --timeout (plain and streamed), --max-queue (503 + Retry-After), a client
# that leaves mid-stream (one choice or n=2) frees its slots, /metrics, graceful SIGTERM, and the same API over two
# workers (--workers). Servers are always killed on exit; every curl has --max-time.
source "$(dirname "$0")/lib.bash"   # its cleanup: SIGTERM to servers and workers, SIGKILL after 5 s
C() { curl -s --max-time 60 -H 'Content-Type: application/json' "$@"; }
# code URL_PATH BODY_FILE_OR_EMPTY OUT [curl args]: prints the HTTP status
code() { local p=$1 out=$2; shift 2; C -o "$out" -w '%{http_code}' "$@" "$URL$p"; }

cat >"$tmp/check.py" <<'PY'
# JSON checks for serve.sh: each mode validates a reply's shape and prints what the shell compares
import json, sys
mode, path = sys.argv[1], sys.argv[2]
raw = open(path, "rb").read()
def die(msg):
    sys.stderr.write(f"{mode} {path}: {msg}\n{raw[:600]!r}\n"); sys.exit(1)
def out(text):
    sys.stdout.buffer.write(text.encode("utf-8"))
if mode == "completion" or mode == "chat":
    o = json.loads(raw)
    want = "text_completion" if mode == "completion" else "chat.completion"
    if o.get("object") != want: die(f"object {o.get('object')!r}, want {want}")
    for k in ("id", "created", "model", "choices", "usage", "timings"):
        if k not in o: die(f"no '{k}'")
    c = o["choices"][0]
    if c.get("finish_reason") not in ("stop", "length"): die(f"finish_reason {c.get('finish_reason')!r}")
    u = o["usage"]
    if u["total_tokens"] != u["prompt_tokens"] + u["completion_tokens"] or u["prompt_tokens"] < 1: die("usage")
    if len(sys.argv) > 3 and u["completion_tokens"] > int(sys.argv[3]): die("more tokens than max_tokens")
    if mode == "chat":
        if c["message"]["role"] != "assistant": die("role")
        out(c["message"]["content"])
    else:
        out(c["text"])
elif mode == "finish":
    print(json.loads(raw)["choices"][0]["finish_reason"])
elif mode == "sse":   # sse FILE [usage]: every event parses, [DONE] last, text concatenated
    text = raw.decode("utf-8")
    if not text.endswith("data: [DONE]\n\n"): die("does not end with data: [DONE]")
    events = [e for e in text.split("\n\n") if e]
    chunks = []
    for e in events[:-1]:
        if not e.startswith("data: "): die(f"event without data: {e[:80]!r}")
        chunks.append(json.loads(e[6:]))
    if not chunks: die("no chunks")
    chat = chunks[0].get("object") == "chat.completion.chunk"
    if chat and chunks[0]["choices"][0]["delta"].get("role") != "assistant": die("first chat delta has no role")
    usage = len(sys.argv) > 3
    body = chunks[:-1] if usage else chunks
    if usage:
        u = chunks[-1].get("usage")
        if chunks[-1]["choices"] != [] or not u or u["total_tokens"] != u["prompt_tokens"] + u["completion_tokens"]:
            die("no usage chunk at the end")
    if body[-1]["choices"][0]["finish_reason"] not in ("stop", "length"): die("last chunk has no finish_reason")
    if any(c["choices"][0]["finish_reason"] is not None for c in body[:-1]): die("finish_reason before the end")
    s = ""
    for c in body:
        ch = c["choices"][0]
        s += (ch["delta"].get("content") or "") if chat else ch["text"]
    out(s)
elif mode == "error":   # error FILE TYPE [CODE]
    e = json.loads(raw).get("error")
    if not isinstance(e, dict) or not isinstance(e.get("message"), str) or not e["message"]: die("no error.message")
    if e.get("type") != sys.argv[3]: die(f"type {e.get('type')!r}, want {sys.argv[3]}")
    if len(sys.argv) > 4 and e.get("code") != sys.argv[4]: die(f"code {e.get('code')!r}, want {sys.argv[4]}")
elif mode == "run":     # tern run's stdout: drop its final newline, decode as the server does
    if raw.endswith(b"\n"): raw = raw[:-1]
    out(raw.decode("utf-8", "replace"))
elif mode == "stop":    # a short ASCII piece of the text to use as a stop string, and the text before it
    t = raw.decode("utf-8")
    for i in range(2, len(t) - 2):
        s = t[i:i + 2]
        if s.isascii() and s.strip() == s and s.isprintable():
            json.dump({"stop": s, "want": t[:t.find(s)]}, sys.stdout); sys.exit(0)
    die("no ASCII piece in the text")
elif mode in ("lp", "nolp"):   # lp FILE [N_VOCAB]: a reply's or a stream's logprobs, checked, as one JSON
    # (N_VOCAB: greedy, so each token is the likeliest: logprob >= -ln(N_VOCAB), and it is the first
    # alternative); nolp FILE: none anywhere. $LPN: the alternatives asked per token (each
    # position must have exactly that many, best first, <= 0; completions: 0 = top_logprobs null)
    import math, os
    lpn = int(os.environ.get("LPN", "-1"))
    tops = []
    def check_alts(alts, where):   # [(token, logprob)] of one position
        if lpn >= 0 and len(alts) != lpn: die(f"{where}: {len(alts)} alternatives, asked for {lpn}: {alts!r}")
        for t, v in alts:
            if not isinstance(v, float) or not math.isfinite(v) or v > 1e-6: die(f"{where}: alternative {t!r} logprob {v!r}")
        if any(b[1] > a[1] for a, b in zip(alts, alts[1:])): die(f"{where}: alternatives not sorted: {alts!r}")
        tops.append([list(a) for a in alts])
    sse = raw.startswith(b"data: ")
    if sse:
        chunks = [json.loads(e[6:]) for e in raw.decode("utf-8").split("\n\n") if e.startswith("data: {")]
        choices = [c["choices"][0] for c in chunks if c.get("choices")]
        usage = None
    else:
        o = json.loads(raw)
        choices, usage = o["choices"], o["usage"]
    if any("logprobs" not in c for c in choices): die("a choice without 'logprobs'")
    if mode == "nolp":
        if any(c["logprobs"] is not None for c in choices): die("logprobs present but not asked for")
        sys.exit(0)
    chat = "message" in choices[0] or "delta" in choices[0]
    text = "".join((c.get("message") or c.get("delta") or {}).get("content") or "" if chat else c["text"] for c in choices)
    toks, lps, offs, raws = [], [], [], []
    for c in choices:
        lp = c["logprobs"]
        if lp is None: continue
        if chat:
            if set(lp) != {"content"} or not isinstance(lp["content"], list): die(f"chat logprobs {lp!r}")
            for t in lp["content"]:
                if set(t) != {"token", "logprob", "bytes", "top_logprobs"} or not isinstance(t["top_logprobs"], list):
                    die(f"entry {t!r}")
                for a in t["top_logprobs"]:
                    if set(a) != {"token", "logprob", "bytes"}: die(f"alternative {a!r}")
                    if a["token"] != bytes(a["bytes"]).decode("utf-8", "replace"): die(f"alternative {a!r}: token is not its bytes")
                check_alts([(a["token"], a["logprob"]) for a in t["top_logprobs"]], f"token {len(toks)}")
                b = bytes(t["bytes"])
                if t["token"] != b.decode("utf-8", "replace"): die(f"token {t['token']!r} is not its bytes {b!r}")
                toks.append(t["token"]); lps.append(t["logprob"]); raws.append(b)
        else:
            if set(lp) != {"tokens", "token_logprobs", "top_logprobs", "text_offset"}:
                die(f"completion logprobs keys {sorted(lp)}")
            if not len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]): die("lengths differ")
            if lp["top_logprobs"] is None:
                if lpn > 0: die(f"top_logprobs null, asked for {lpn}")
            else:
                if lpn == 0 or len(lp["top_logprobs"]) != len(lp["tokens"]): die(f"top_logprobs {lp['top_logprobs']!r}")
                for k, d in enumerate(lp["top_logprobs"]):
                    if not isinstance(d, dict): die(f"top_logprobs entry {d!r}")
                    check_alts(list(d.items()), f"token {len(toks) + k}")
            toks += lp["tokens"]; lps += lp["token_logprobs"]; offs += lp["text_offset"]
    if not toks: die("no tokens in logprobs")
    for v in lps:
        if not isinstance(v, float) or not math.isfinite(v) or v > 1e-6: die(f"logprob {v!r} is not a finite value <= 0")
        if len(sys.argv) > 3 and v < -math.log(int(sys.argv[3])) - 1e-4: die(f"greedy token with logprob {v} < -ln(V)")
    if len(sys.argv) > 3:   # greedy: the sampled token is the first alternative, same logprob
        for k, (t, v, alts) in enumerate(zip(toks, lps, tops)):
            if alts and (alts[0][0] != t or abs(alts[0][1] - v) > 1e-6):
                die(f"greedy token {k} {t!r} ({v}) is not the first alternative {alts[0]!r}")
    if usage is not None and len(toks) > usage["completion_tokens"]: die("more logprobs than completion tokens")
    if usage is not None and choices[0]["finish_reason"] == "length" and len(toks) != usage["completion_tokens"]:
        die(f"{len(toks)} logprobs for {usage['completion_tokens']} tokens")
    if chat:   # the tokens' bytes make the text (nothing was cut: no stop strings in chat here)
        if b"".join(raws).decode("utf-8", "replace") != text: die(f"bytes {b''.join(raws)!r} vs text {text!r}")
    else:      # text_offset: where each token's text starts, in characters
        if offs[0] != 0 or any(b < a for a, b in zip(offs, offs[1:])) or offs[-1] > len(text): die(f"text_offset {offs}")
        for t, at in zip(toks, offs):
            if not t.startswith("bytes:") and at + len(t) <= len(text) and text[at:at + len(t)] != t:
                die(f"token {t!r} is not the text at {at}: {text[at:at + len(t)]!r}")
    if tops and len(tops) != len(toks): die(f"{len(tops)} alternative lists for {len(toks)} tokens")
    json.dump({"tokens": toks, "logprobs": lps, "text_offset": offs, "text": text, "tops": tops}, sys.stdout)
elif mode == "lpeq":    # lpeq A B: two lp outputs hold the same tokens and (to 1e-4) logprobs, and the
    # same alternatives as far as both have them
    a, b = json.loads(raw), json.load(open(sys.argv[3]))
    if a["tokens"] != b["tokens"] or a["text_offset"] != b["text_offset"] or a["text"] != b["text"]:
        die(f"tokens {a['tokens']} vs {b['tokens']}")
    d = max(abs(x - y) for x, y in zip(a["logprobs"], b["logprobs"]))
    if d > 1e-4: die(f"logprobs differ by {d}: {a['logprobs']} vs {b['logprobs']}")
    for k, (x, y) in enumerate(zip(a["tops"], b["tops"])):
        m = min(len(x), len(y))
        if [t for t, _ in x[:m]] != [t for t, _ in y[:m]] or any(abs(p[1] - q[1]) > 1e-4 for p, q in zip(x[:m], y[:m])):
            die(f"token {k}: alternatives {x[:m]!r} vs {y[:m]!r}")
elif mode == "get":     # get FILE KEY...: a value by path
    v = json.loads(raw)
    for k in sys.argv[3:]: v = v[int(k)] if isinstance(v, list) else v[k]
    print(json.dumps(v) if not isinstance(v, str) else v)
PY
J() { python3 "$tmp/check.py" "$@"; }

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 5

# start NAME ARGS...: tern serve on a free port; sets URL and SPID; a 503 from /health while it
# loads must be an OpenAI error
start() {
  local name=$1 i c
  shift
  start_serve "$name" -m "$M" -t 2 "$@" || die "server $name did not start: $(cat "$tmp/$name.log")"
  for i in $(seq 1 600); do
    c=$(curl -s -o "$tmp/health.json" -w '%{http_code}' --max-time 5 "$URL/health")
    [ "$c" = 200 ] && return 0
    if [ "$c" = 503 ]; then
      J error "$tmp/health.json" unavailable_error && ok "/health while loading: 503 with an OpenAI error" \
        || bad "/health 503 body"
    fi
    sleep 0.1
  done
  die "server $name never became healthy: $(cat "$tmp/$name.log")"
}

# ==== server A: 4 slots, small context, metrics, small body limit ===========================
start A -np 4 -c 128 --metrics --max-body 16384
A_URL=$URL A_PID=$SPID

[ "$(C "$URL/health")" = '{"status":"ok"}' ] && ok "/health: 200 {\"status\":\"ok\"}" || bad "/health body"
C "$URL/v1/models" >"$tmp/models.json"
[ "$(J get "$tmp/models.json" data 0 id)" = "tiny.gguf" ] && [ "$(J get "$tmp/models.json" object)" = list ] \
  && ok "/v1/models lists tiny.gguf" || bad "/v1/models: $(cat "$tmp/models.json")"

# ---- greedy completion == tern run ---------------------------------------------------------
P="The quick brown fox"
timeout 120 "$TERN" run -m "$M" -t 2 --temp 0 --no-display-prompt --summary=0 -p "$P" -n 16 >"$tmp/run.raw" 2>/dev/null
J run "$tmp/run.raw" >"$tmp/run.txt"
c=$(code /v1/completions "$tmp/c1.json" -d "{\"model\":\"x\",\"prompt\":\"$P\",\"max_tokens\":16,\"temperature\":0}")
if [ "$c" = 200 ] && J completion "$tmp/c1.json" 16 >"$tmp/c1.txt"; then
  ok "completion: 200, text_completion with usage and timings"
  [ -s "$tmp/c1.txt" ] && cmp -s "$tmp/c1.txt" "$tmp/run.txt" && ok "completion at temperature 0 == tern run --temp 0" \
    || bad "completion '$(cat "$tmp/c1.txt")' vs tern run '$(cat "$tmp/run.txt")'"
else bad "completion ($c): $(cat "$tmp/c1.json")"; fi

# ---- streamed completion: same text, SSE shape, usage --------------------------------------
C -N "$URL/v1/completions" -d "{\"prompt\":\"$P\",\"max_tokens\":16,\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" >"$tmp/s1.sse"
if J sse "$tmp/s1.sse" usage >"$tmp/s1.txt"; then
  ok "streamed completion: data: chunks, finish_reason, usage chunk, [DONE]"
  cmp -s "$tmp/s1.txt" "$tmp/c1.txt" && ok "streamed text == plain text" || bad "stream '$(cat "$tmp/s1.txt")' vs '$(cat "$tmp/c1.txt")'"
else bad "streamed completion shape"; fi

# ---- chat, plain and streamed --------------------------------------------------------------
CHAT='"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Say hi"}],"max_tokens":12,"temperature":0'
c=$(code /v1/chat/completions "$tmp/ch.json" -d "{$CHAT}")
if [ "$c" = 200 ] && J chat "$tmp/ch.json" 12 >"$tmp/ch.txt"; then
  ok "chat: 200, chat.completion with an assistant message"
  C -N "$URL/v1/chat/completions" -d "{$CHAT,\"stream\":true}" >"$tmp/chs.sse"
  J sse "$tmp/chs.sse" >"$tmp/chs.txt" && cmp -s "$tmp/chs.txt" "$tmp/ch.txt" \
    && ok "streamed chat: role first, same content as plain" || bad "streamed chat: '$(cat "$tmp/chs.txt")' vs '$(cat "$tmp/ch.txt")'"
else bad "chat ($c): $(cat "$tmp/ch.json")"; fi

# ---- logprobs: OpenAI's shapes, plain == streamed, absent unless asked ---------------------------
V=$(C "$URL/detokenize" -d '{"tokens":[99999999]}' | sed -n 's/.*vocabulary (\([0-9]*\) tokens).*/\1/p')
LPC="\"prompt\":\"$P\",\"max_tokens\":16,\"temperature\":0"
c=$(code /v1/completions "$tmp/lp1.json" -d "{$LPC,\"logprobs\":2}")
if [ "$c" = 200 ] && J completion "$tmp/lp1.json" >"$tmp/lp1.txt" && LPN=2 J lp "$tmp/lp1.json" "${V:-1}" >"$tmp/lp1.lp"; then
  ok "completion with logprobs 2: tokens, token_logprobs <= -ln($V) (greedy) == the first of 2 sorted top_logprobs, text_offset"
  cmp -s "$tmp/lp1.txt" "$tmp/c1.txt" && ok "asking for logprobs does not change the text" \
    || bad "text with logprobs '$(cat "$tmp/lp1.txt")' vs without '$(cat "$tmp/c1.txt")'"
  C -N "$URL/v1/completions" -d "{$LPC,\"logprobs\":2,\"stream\":true}" >"$tmp/lp1.sse"
  LPN=2 J lp "$tmp/lp1.sse" >"$tmp/lp1s.lp" && J lpeq "$tmp/lp1s.lp" "$tmp/lp1.lp" \
    && ok "streamed completion: the chunks' logprobs and alternatives == the plain reply's" || bad "streamed completion logprobs"
  C -N "$URL/v1/completions" -d "{$LPC,\"logprobs\":0,\"stream\":true}" >"$tmp/lp0.sse"
  LPN=0 J lp "$tmp/lp0.sse" >"$tmp/lp0s.lp" && J lpeq "$tmp/lp0s.lp" "$tmp/lp1.lp" \
    && ok "streamed completion, logprobs 0: same logprobs, top_logprobs null" || bad "streamed completion logprobs 0"
  # sampling with top_k 1 at temperature 1.5 takes the same tokens; their logprob is still the
  # temperature-1 log-softmax over the whole vocabulary (not the 1-token distribution: 0)
  C "$URL/v1/completions" -d "{\"prompt\":\"$P\",\"max_tokens\":16,\"temperature\":1.5,\"top_k\":1,\"logprobs\":1}" >"$tmp/lpk.json"
  LPN=1 J lp "$tmp/lpk.json" >"$tmp/lpk.lp" && J lpeq "$tmp/lpk.lp" "$tmp/lp1.lp" \
    && ok "top_k 1 at temperature 1.5: same tokens, logprobs and first alternative as greedy" || bad "top_k 1 logprobs: $(cat "$tmp/lpk.json")"
else bad "completion with logprobs ($c): $(cat "$tmp/lp1.json")"; fi
J nolp "$tmp/c1.json" && J nolp "$tmp/s1.sse" && J nolp "$tmp/ch.json" && J nolp "$tmp/chs.sse" \
  && ok "no logprobs asked: \"logprobs\": null in replies and chunks" || bad "logprobs present when not asked"
c=$(code /v1/chat/completions "$tmp/lpch.json" -d "{$CHAT,\"logprobs\":true,\"top_logprobs\":3}")
if [ "$c" = 200 ] && J chat "$tmp/lpch.json" >"$tmp/lpch.txt" && LPN=3 J lp "$tmp/lpch.json" "${V:-1}" >"$tmp/lpch.lp"; then
  ok "chat with logprobs: content entries {token, logprob, bytes, top_logprobs: 3 sorted [{token, logprob, bytes}]}, bytes make the text"
  C -N "$URL/v1/chat/completions" -d "{$CHAT,\"logprobs\":true,\"top_logprobs\":3,\"stream\":true}" >"$tmp/lpch.sse"
  LPN=3 J lp "$tmp/lpch.sse" >"$tmp/lpchs.lp" && J lpeq "$tmp/lpchs.lp" "$tmp/lpch.lp" \
    && ok "streamed chat: the chunks' logprobs and alternatives == the plain reply's" || bad "streamed chat logprobs"
  C -N "$URL/v1/chat/completions" -d "{$CHAT,\"logprobs\":true,\"stream\":true}" >"$tmp/lpch0.sse"
  LPN=0 J lp "$tmp/lpch0.sse" >/dev/null && ok "streamed chat without top_logprobs: top_logprobs []" \
    || bad "streamed chat top_logprobs 0"
else bad "chat with logprobs ($c): $(cat "$tmp/lpch.json")"; fi
SEEDLP="\"prompt\":\"$P\",\"max_tokens\":12,\"temperature\":1.0,\"seed\":3,\"logprobs\":1"
C "$URL/v1/completions" -d "{$SEEDLP}" >"$tmp/lps.json"
C -N "$URL/v1/completions" -d "{$SEEDLP,\"stream\":true}" >"$tmp/lps.sse"
J lp "$tmp/lps.json" >"$tmp/lps.lp" && J lp "$tmp/lps.sse" >"$tmp/lpss.lp" && J lpeq "$tmp/lpss.lp" "$tmp/lps.lp" \
  && ok "seeded sampling at temperature 1: logprobs <= 0, streamed == plain" || bad "seeded logprobs: $(cat "$tmp/lps.json")"
LPW="{\"prompt\":\"Once upon a time\",\"max_tokens\":8,\"temperature\":0,\"ignore_eos\":true,\"logprobs\":4}"
C "$URL/v1/completions" -d "$LPW" >"$tmp/lpw_a.json"   # compared with the same request over workers (server D)
lperr() {   # lperr WHAT PARAM PATH BODY: a 400 invalid_value naming PARAM
  local c
  c=$(code "$3" "$tmp/lperr.json" -d "$4")
  if [ "$c" = 400 ] && J error "$tmp/lperr.json" invalid_request_error invalid_value \
     && [ "$(J get "$tmp/lperr.json" error param)" = "$2" ]; then ok "$1: 400 naming '$2'"
  else bad "$1: $c $(cat "$tmp/lperr.json")"; fi
}
lperr "completion logprobs 6" logprobs /v1/completions '{"prompt":"a","logprobs":6}'
lperr "completion logprobs true" logprobs /v1/completions '{"prompt":"a","logprobs":true}'
lperr "chat top_logprobs 21" top_logprobs /v1/chat/completions '{"messages":[{"role":"user","content":"a"}],"logprobs":true,"top_logprobs":21}'
lperr "chat top_logprobs without logprobs" top_logprobs /v1/chat/completions '{"messages":[{"role":"user","content":"a"}],"top_logprobs":2}'

# ---- echo: the prompt back, with its tokens' own log-probabilities (teacher forced) -------------
cat >"$tmp/tern_http.py" <<'PY'
# tern_http: what the request scripts below share
import json, sys, urllib.request, urllib.error
def post_raw(url, path, body, timeout=120):
    """(HTTP status, body text) of a JSON POST"""
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r: return r.status, r.read().decode()
    except urllib.error.HTTPError as e: return e.code, e.read().decode()
def post(url, path, body):
    """the JSON reply of a POST that must succeed"""
    st, b = post_raw(url, path, body)
    if st != 200: die(f"{path} {body} -> {st} {b}")
    return json.loads(b)
def die(m): print(m); sys.exit(1)
PY
cat >"$tmp/echo.py" <<'PY'
# echo.py URL PROMPT OUT: completions with "echo" checked against plain completions of the same ids
import json, math, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tern_http import post_raw, die
url, P, out = sys.argv[1], sys.argv[2], sys.argv[3]
def post(path, body): return post_raw(url, path, body)
def comp(**kw):
    st, b = post("/v1/completions", kw)
    if st != 200: die(f"{kw} -> {st} {b}")
    return json.loads(b)
ids = json.loads(post("/tokenize", {"content": P, "add_special": True})[1])["tokens"]
n = len(ids)
if n < 3: die(f"prompt of {n} tokens")
E = comp(prompt=ids, max_tokens=0, echo=True, logprobs=3)
c = E["choices"][0]; lp = c["logprobs"]
if c["text"] != P: die(f"echo text {c['text']!r} != {P!r}")
if c["finish_reason"] != "length" or E["usage"]["completion_tokens"] != 0 or E["usage"]["prompt_tokens"] != n:
    die(f"max_tokens 0: {c['finish_reason']} {E['usage']}")
if len(lp["tokens"]) != n or len(lp["token_logprobs"]) != n or len(lp["top_logprobs"]) != n: die("not one entry per prompt token")
if lp["token_logprobs"][0] is not None or lp["top_logprobs"][0] is not None: die("the first prompt token has a logprob")
offs = lp["text_offset"]
if offs[0] != 0 or any(b < a for a, b in zip(offs, offs[1:])): die(f"text_offset {offs}")
for k in range(1, n):   # each position == the alternatives a plain completion of ids[:k] reports
    x, d = lp["token_logprobs"][k], lp["top_logprobs"][k]
    if not (math.isfinite(x) and x <= 0) or not 1 <= len(d) <= 3 or max(d.values()) < x - 1e-5: die(f"position {k}: {x} {d}")
    g = comp(prompt=ids[:k], max_tokens=1, temperature=0, logprobs=3, repeat_penalty=1)   # ignore_eos would renormalise without the EOG tokens
    gd = g["choices"][0]["logprobs"]["top_logprobs"][0]
    if set(gd) != set(d) or any(abs(gd[t] - d[t]) > 1e-4 for t in d): die(f"position {k}: echo {d} vs completion {gd}")
    t = lp["tokens"][k]
    if t in d and abs(d[t] - x) > 1e-4: die(f"position {k}: {t!r} logprob {x} vs its alternative {d[t]}")
# echo with generation == the prompt, then a plain completion's text and logprobs
G = comp(prompt=ids, max_tokens=6, temperature=0, logprobs=1, ignore_eos=True)["choices"][0]
E2 = comp(prompt=ids, max_tokens=6, temperature=0, logprobs=1, ignore_eos=True, echo=True)["choices"][0]
l2, gl = E2["logprobs"], G["logprobs"]
if E2["text"] != P + G["text"]: die(f"echo + generation {E2['text']!r} != {P + G['text']!r}")
if l2["tokens"][n:] != gl["tokens"] or l2["token_logprobs"][n:] != gl["token_logprobs"]: die("generated part differs")
if l2["text_offset"][n:] != [o + len(P) for o in gl["text_offset"]]: die(f"offsets {l2['text_offset'][n:]} vs {gl['text_offset']}")
if l2["token_logprobs"][1:n] != lp["token_logprobs"][1:n]: die("prompt part differs from max_tokens 0")
# streamed: the prompt's chunk first, the same text and logprobs in all
st, b = post("/v1/completions", {"prompt": ids, "max_tokens": 6, "temperature": 0, "logprobs": 1, "ignore_eos": True,
                                 "echo": True, "stream": True})
chunks = [json.loads(l[6:]) for l in b.splitlines() if l.startswith("data: ") and l != "data: [DONE]"]
text = "".join(ch["choices"][0]["text"] for ch in chunks if ch.get("choices"))
if chunks[0]["choices"][0]["text"] != P: die(f"first streamed chunk {chunks[0]}")
stoks, slps = [], []
for ch in chunks:
    l = ch["choices"][0]["logprobs"] if ch.get("choices") else None
    if l: stoks += l["tokens"]; slps += l["token_logprobs"]
if text != E2["text"] or stoks != l2["tokens"] or slps != l2["token_logprobs"]: die("streamed echo differs from plain")
# without logprobs: just the text
E3 = comp(prompt=P, max_tokens=6, temperature=0, ignore_eos=True, echo=True)["choices"][0]
if E3["text"] != E2["text"] or E3["logprobs"] is not None: die(f"echo without logprobs: {E3}")
json.dump(lp, open(out, "w"))
print(f"{n} prompt tokens")
PY
if out=$(python3 "$tmp/echo.py" "$URL" "$P" "$tmp/echo_a.json" 2>&1); then
  ok "echo: the prompt's tokens scored (first null) == each prefix's own alternatives; + generation == plain; streamed == plain; max_tokens 0 ($out)"
else bad "echo: $out"; fi
lperr "max_tokens 0 without echo" max_tokens /v1/completions '{"prompt":"a","max_tokens":0}'
lperr "echo not a bool" echo /v1/completions '{"prompt":"a","echo":1}'

# ---- stop strings ----------------------------------------------------------------------------
C "$URL/v1/completions" -d "{\"prompt\":\"$P\",\"max_tokens\":32,\"temperature\":0,\"ignore_eos\":true}" >"$tmp/long.json"
if J completion "$tmp/long.json" >"$tmp/long.txt" && J stop "$tmp/long.txt" >"$tmp/stop.json"; then
  stop=$(J get "$tmp/stop.json" stop)
  python3 -c 'import json,sys; sys.stdout.buffer.write(json.load(open(sys.argv[1]))["want"].encode())' "$tmp/stop.json" >"$tmp/stop.want"
  body=$(python3 -c 'import json,sys; print(json.dumps({"prompt":sys.argv[1],"max_tokens":32,"temperature":0,"ignore_eos":True,"stop":["@@never@@",sys.argv[2]]}))' "$P" "$stop")
  C "$URL/v1/completions" -d "$body" >"$tmp/stop1.json"
  J completion "$tmp/stop1.json" >"$tmp/stop1.txt"
  if cmp -s "$tmp/stop1.txt" "$tmp/stop.want" && [ "$(J finish "$tmp/stop1.json")" = stop ]; then
    ok "stop string '$stop': text cut before it, finish_reason stop"
  else bad "stop '$stop': got '$(cat "$tmp/stop1.txt")' want '$(cat "$tmp/stop.want")'"; fi
  C -N "$URL/v1/completions" -d "${body%\}},\"stream\":true}" >"$tmp/stop2.sse"
  J sse "$tmp/stop2.sse" >"$tmp/stop2.txt" && cmp -s "$tmp/stop2.txt" "$tmp/stop.want" \
    && ok "streamed stop string: no part of it was sent" || bad "streamed stop: '$(cat "$tmp/stop2.txt")'"
  C "$URL/v1/completions" -d "${body%\}},\"logprobs\":1}" >"$tmp/stop3.json"
  C -N "$URL/v1/completions" -d "${body%\}},\"logprobs\":1,\"stream\":true}" >"$tmp/stop3.sse"
  J completion "$tmp/stop3.json" >"$tmp/stop3.txt" && cmp -s "$tmp/stop3.txt" "$tmp/stop.want" \
    && J lp "$tmp/stop3.json" >"$tmp/stop3.lp" && J lp "$tmp/stop3.sse" >"$tmp/stop3s.lp" && J lpeq "$tmp/stop3s.lp" "$tmp/stop3.lp" \
    && ok "stop string with logprobs: the tokens up to the cut, streamed == plain" || bad "stop with logprobs: $(cat "$tmp/stop3.json")"
else bad "stop setup: $(cat "$tmp/long.json")"; fi

# ---- sampling with a seed is repeatable ----------------------------------------------------------
SEEDED="{\"prompt\":\"$P\",\"max_tokens\":16,\"temperature\":1.0,\"top_k\":50,\"top_p\":0.95,\"min_p\":0.01,\"repeat_penalty\":1.1,\"seed\":7}"
C "$URL/v1/completions" -d "$SEEDED" >"$tmp/seed1.json"
C "$URL/v1/completions" -d "$SEEDED" >"$tmp/seed2.json"
J completion "$tmp/seed1.json" >"$tmp/seed1.txt" && J completion "$tmp/seed2.json" >"$tmp/seed2.txt" \
  && cmp -s "$tmp/seed1.txt" "$tmp/seed2.txt" && ok "temperature 1 with seed 7 twice: same text" \
  || bad "seeded sampling differs: '$(cat "$tmp/seed1.txt")' vs '$(cat "$tmp/seed2.txt")'"

# ---- tokenize / detokenize ---------------------------------------------------------------------
C "$URL/tokenize" -d '{"content":"hello world"}' >"$tmp/tok.json"
toks=$(J get "$tmp/tok.json" tokens)
C "$URL/detokenize" -d "{\"tokens\":$toks}" >"$tmp/detok.json"
[ "$(J get "$tmp/detok.json" content)" = "hello world" ] && ok "/tokenize then /detokenize round trip ($toks)" \
  || bad "tokenize round trip: $toks -> $(cat "$tmp/detok.json")"
C "$URL/tokenize" -d '{"content":"hello","with_pieces":true}' >"$tmp/tokp.json"
J get "$tmp/tokp.json" tokens 0 id >/dev/null 2>&1 && ok "/tokenize with_pieces" || bad "with_pieces: $(cat "$tmp/tokp.json")"

# ---- errors ----------------------------------------------------------------------------------
e() {   # e WHAT STATUS TYPE CODE PATH [curl args]
  local what=$1 want=$2 type=$3 ecode=$4 p=$5
  shift 5
  local c
  c=$(code "$p" "$tmp/err.json" "$@")
  if [ "$c" = "$want" ] && J error "$tmp/err.json" "$type" $ecode; then ok "$what: $want $type"
  else bad "$what: got $c $(head -c 300 "$tmp/err.json")"; fi
}
e "bad JSON" 400 invalid_request_error invalid_json /v1/completions -d '{"prompt": "a",'
e "unknown route" 404 invalid_request_error not_found /v1/nope
e "GET on a POST route" 405 invalid_request_error method_not_allowed /v1/completions
e "n=17" 400 invalid_request_error invalid_value /v1/completions -d '{"prompt":"a","n":17}'
e "max_tokens 0" 400 invalid_request_error invalid_value /v1/completions -d '{"prompt":"a","max_tokens":0}'
e "temperature as a string" 400 invalid_request_error invalid_value /v1/chat/completions \
  -d '{"messages":[{"role":"user","content":"a"}],"temperature":"hot"}'
e "no messages" 400 invalid_request_error invalid_value /v1/chat/completions -d '{"prompt":"a"}'
long=$(python3 -c 'print(" ".join(["word"] * 400))')
e "prompt longer than -c" 400 invalid_request_error context_length_exceeded /v1/completions \
  -d "{\"prompt\":\"$long\",\"max_tokens\":4}"
e "token id outside the vocabulary" 400 invalid_request_error invalid_value /v1/completions -d '{"prompt":[1,99999999]}'
python3 -c 'import json; print(json.dumps({"prompt": "x" * 40000}))' >"$tmp/big.json"
e "body over --max-body" 413 invalid_request_error request_too_large /v1/completions --data-binary "@$tmp/big.json"
c=$(code /health "$tmp/h2.json")
[ "$c" = 200 ] && ok "server still healthy after the errors" || bad "health after errors: $c"

# ---- 4 parallel requests == their single outputs ---------------------------------------------
PROMPTS=("Once upon a time" "In a hole in the ground" "It was a bright cold day" "Call me Ishmael")
for i in 0 1 2 3; do
  C "$URL/v1/completions" -d "{\"prompt\":\"${PROMPTS[$i]}\",\"max_tokens\":24,\"temperature\":0,\"ignore_eos\":true}" >"$tmp/single$i.json"
  J completion "$tmp/single$i.json" >"$tmp/single$i.txt" || bad "single request $i"
done
cpids=()
for i in 0 1 2 3; do
  if [ $((i % 2)) = 0 ]; then
    C "$URL/v1/completions" -d "{\"prompt\":\"${PROMPTS[$i]}\",\"max_tokens\":24,\"temperature\":0,\"ignore_eos\":true}" >"$tmp/par$i.json" &
  else
    C -N "$URL/v1/completions" -d "{\"prompt\":\"${PROMPTS[$i]}\",\"max_tokens\":24,\"temperature\":0,\"ignore_eos\":true,\"stream\":true}" >"$tmp/par$i.sse" &
  fi
  cpids+=($!)
done
wait "${cpids[@]}"
same=0
for i in 0 1 2 3; do
  if [ $((i % 2)) = 0 ]; then J completion "$tmp/par$i.json" >"$tmp/par$i.txt"; else J sse "$tmp/par$i.sse" >"$tmp/par$i.txt"; fi
  if [ -s "$tmp/par$i.txt" ] && cmp -s "$tmp/par$i.txt" "$tmp/single$i.txt"; then same=$((same+1))
  else echo "  parallel $i: '$(cat "$tmp/par$i.txt")' vs single '$(cat "$tmp/single$i.txt")'"; fi
done
[ $same = 4 ] && ok "4 parallel requests (-np 4, 2 streamed) == their single greedy outputs" || bad "parallel outputs differ ($same/4 same)"

# ---- prefix cache: a prompt that begins with a slot's cached tokens starts after them ----------
cat >"$tmp/cache.py" <<'PY'
# cache.py URL: prompt caching changes what is fed, never what comes out
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tern_http
from tern_http import die
url = sys.argv[1]
def post(path, body): return tern_http.post(url, path, body)
def comp(**kw): return post("/v1/completions", dict(kw, temperature=0, ignore_eos=True))
P = "The lighthouse keeper climbed the stairs every evening to light the lamp for the ships"
a = comp(prompt=P, max_tokens=12, cache_prompt=False)
b = comp(prompt=P, max_tokens=12)
c = comp(prompt=P, max_tokens=12)
n = a["usage"]["prompt_tokens"]
if a["usage"]["prompt_tokens_details"]["cached_tokens"] != 0: die(f"cache_prompt false used the cache: {a['usage']}")
if c["usage"]["prompt_tokens_details"]["cached_tokens"] != n - 1 or c["timings"]["prompt_n"] != 1 or c["timings"]["cache_n"] != n - 1:
    die(f"the same prompt again: {c['usage']} {c['timings']}")
if not (a["choices"][0]["text"] == b["choices"][0]["text"] == c["choices"][0]["text"]): die("texts differ with the cache")
# the prompt and what it generated, then more: the slot holds most of it
P2 = P + a["choices"][0]["text"] + " and then"
d = comp(prompt=P2, max_tokens=10)
e = comp(prompt=P2, max_tokens=10, cache_prompt=False)
if d["usage"]["prompt_tokens_details"]["cached_tokens"] < n - 1: die(f"continuation: {d['usage']}")
if d["choices"][0]["text"] != e["choices"][0]["text"]: die("continuation text differs with the cache")
# a two-turn chat: the second turn resends the first and its reply
m1 = [{"role": "user", "content": "Name three colours of the sea."}]
r1 = post("/v1/chat/completions", {"messages": m1, "max_tokens": 10, "temperature": 0})
m2 = m1 + [{"role": "assistant", "content": r1["choices"][0]["message"]["content"]}, {"role": "user", "content": "And of the sky?"}]
r2 = post("/v1/chat/completions", {"messages": m2, "max_tokens": 10, "temperature": 0})
r3 = post("/v1/chat/completions", {"messages": m2, "max_tokens": 10, "temperature": 0, "cache_prompt": False})
if r2["usage"]["prompt_tokens_details"]["cached_tokens"] < 10: die(f"second chat turn: {r2['usage']}")
if r2["choices"][0]["message"]["content"] != r3["choices"][0]["message"]["content"]: die("second turn differs with the cache")
print(f"{c['usage']['prompt_tokens_details']['cached_tokens']} of {n} cached on a repeat, "
      f"{d['usage']['prompt_tokens_details']['cached_tokens']} of {d['usage']['prompt_tokens']} on a continuation, "
      f"{r2['usage']['prompt_tokens_details']['cached_tokens']} of {r2['usage']['prompt_tokens']} on a second chat turn")
PY
if out=$(python3 "$tmp/cache.py" "$URL" 2>&1); then ok "prefix cache: same texts as without it ($out)"
else bad "prefix cache: $out"; fi
lperr "cache_prompt not a bool" cache_prompt /v1/completions '{"prompt":"a","cache_prompt":"no"}'

# ---- several choices in one request: prompts x n, side by side in the slots ------------------
cat >"$tmp/multi.py" <<'PY'
# multi.py URL: a list of prompts and n > 1 give the choices one request per choice would
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tern_http
from tern_http import die
url = sys.argv[1]
def post(path, body): return tern_http.post(url, path, body)
prompts = ["Once upon a time", "The cat sat", "In the beginning", "Far away"]
base = dict(max_tokens=10, temperature=0, ignore_eos=True)
single = [post("/v1/completions", dict(base, prompt=p))["choices"][0]["text"] for p in prompts]
m = post("/v1/completions", dict(base, prompt=prompts, logprobs=1))
ch = m["choices"]
if [c["index"] for c in ch] != [0, 1, 2, 3] or [c["text"] for c in ch] != single: die(f"4 prompts: {[c['text'] for c in ch]} vs {single}")
if any(c["logprobs"] is None or len(c["logprobs"]["tokens"]) != 10 for c in ch): die("logprobs per choice")
u = m["usage"]
if u["completion_tokens"] != 40 or u["total_tokens"] != u["prompt_tokens"] + 40: die(f"usage {u}")
g = post("/v1/completions", dict(base, prompt=prompts[0], n=3))["choices"]
if [c["text"] for c in g] != [single[0]] * 3: die("greedy n=3 are not 3 copies")
samp = dict(prompt=prompts[1], max_tokens=12, temperature=1.0, seed=11, ignore_eos=True, n=4)
s1 = [c["text"] for c in post("/v1/completions", samp)["choices"]]
s2 = [c["text"] for c in post("/v1/completions", samp)["choices"]]
if s1 != s2: die("seeded n=4 not repeatable")
if len(set(s1)) < 2: die(f"n=4 sampled 4 copies: {s1}")
one = post("/v1/completions", dict(samp, n=1))["choices"][0]["text"]
if one != s1[0]: die("choice 0 of n=4 != the n=1 request with the same seed")
c2 = post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2, "max_tokens": 6,
                                    "temperature": 0})["choices"]
if len(c2) != 2 or c2[0]["message"] != c2[1]["message"]: die(f"chat n=2: {c2}")
mix = post("/v1/completions", dict(base, prompt=prompts[:2], n=2))["choices"]
if [c["text"] for c in mix] != [single[0], single[0], single[1], single[1]]: die("2 prompts x n=2 order")
print(f"{len(set(s1))} different texts of 4 sampled")
PY
if out=$(python3 "$tmp/multi.py" "$URL" 2>&1); then ok "4 prompts in one request == 4 requests; n=3 greedy copies; seeded n=4 repeatable, choice 0 == n=1 ($out); chat n=2; prompts x n in order"
else bad "several choices: $out"; fi
# ---- several choices streamed: one SSE stream, chunks by choice index, == the plain reply -----
cat >"$tmp/multi_sse.py" <<'PY'
# multi_sse.py URL: "stream": true with n > 1 or a list of prompts gives, per choice index, the
# text and finish_reason of the same request not streamed, and one usage chunk over all choices
import json, os, re, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tern_http
from tern_http import die
url = sys.argv[1]
def post(path, body): return tern_http.post(url, path, body)
def norm(t):   # the stream sanitizes each chunk: a bad UTF-8 stretch cut by a chunk gives 2 U+FFFD, not 1
    return re.sub("\ufffd+", "\ufffd", t)
def stream(path, body, k):
    """per index: (text, finish_reason, first delta); the usage chunk; checks the shape"""
    st, raw = tern_http.post_raw(url, path, dict(body, stream=True, stream_options={"include_usage": True}))
    if st != 200: die(f"{body} streamed -> {st} {raw[:300]}")
    if not raw.endswith("data: [DONE]\n\n"): die(f"does not end with [DONE]: {raw[-200:]!r}")
    events = [e for e in raw.split("\n\n") if e]
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    usage = chunks.pop()
    if usage["choices"] != [] or not usage.get("usage"): die(f"last chunk before [DONE] is not the usage chunk: {usage}")
    chat = path.endswith("chat/completions")
    text, fin, first = {}, {}, {}
    for ch in chunks:
        if ch["id"] != usage["id"] or len(ch["choices"]) != 1: die(f"chunk {ch}: one id a stream, one choice a chunk")
        c = ch["choices"][0]
        i = c["index"]
        if i in fin: die(f"index {i}: a chunk after its finish_reason {fin[i]}")
        if i not in first: first[i] = c.get("delta")
        text[i] = text.get(i, "") + ((c["delta"].get("content") or "") if chat else c["text"])
        if c["finish_reason"] is not None: fin[i] = c["finish_reason"]
    if sorted(text) != list(range(k)) or sorted(fin) != list(range(k)): die(f"indices {sorted(text)}, finished {sorted(fin)}, want 0..{k - 1}")
    return text, fin, first, usage["usage"]
def same(path, body, k):
    """the streamed request == the plain one, index by index; returns the plain choices"""
    p = post(path, body)
    ch = p["choices"]
    text, fin, first, u = stream(path, body, k)
    chat = path.endswith("chat/completions")
    for i in range(k):
        want = ch[i]["message"]["content"] if chat else ch[i]["text"]
        if ch[i]["index"] != i or norm(text[i]) != norm(want) or fin[i] != ch[i]["finish_reason"]:
            die(f"{body}: index {i} streamed {text[i]!r} ({fin[i]}) vs plain {want!r} ({ch[i]['finish_reason']})")
        if chat and first[i] != {"role": "assistant", "content": ""}: die(f"index {i}: first delta {first[i]}, not the role")
    pu = p["usage"]
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        if u[key] != pu[key]: die(f"{body}: usage chunk {u} vs plain {pu}")
    return ch
P = "The quick brown fox"
seeded = dict(prompt=P, n=3, max_tokens=12, temperature=1.0, seed=5, ignore_eos=True)
ch = same("/v1/completions", seeded, 3)
if len({c["text"] for c in ch}) < 2: die(f"n=3 sampled copies: {[c['text'] for c in ch]}")
# a stop string from choice 1's text: per choice, the text cut before it (stream == plain)
t = ch[1]["text"]
stop = next((t[i:i + 2] for i in range(1, len(t) - 2) if t[i:i + 2].isascii() and t[i:i + 2].strip() == t[i:i + 2]
             and t[i:i + 2].isprintable()), None)
if stop is None: die(f"no ASCII piece in {t!r}")
sc = same("/v1/completions", dict(seeded, stop=[stop]), 3)
if sc[1]["finish_reason"] != "stop" or not t.startswith(sc[1]["text"]): die(f"stop {stop!r}: {sc[1]}")
mix = same("/v1/completions", dict(prompt=["Once upon a time", "The cat sat"], n=2, max_tokens=8, temperature=0.9,
                                   seed=9, ignore_eos=True), 4)
if mix[0]["text"] == mix[2]["text"]: die("2 prompts x n=2: index 2 is not the second prompt's")
same("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2, "max_tokens": 6,
                              "temperature": 1.0, "seed": 3}, 2)
print(f"stop {stop!r}; usage chunk == plain usage")
PY
if out=$(python3 "$tmp/multi_sse.py" "$URL" 2>&1); then
  ok "streamed n=3 (seeded, with and without a stop string), 2 prompts x n=2 and chat n=2 (role first per index): per index == the plain reply, one usage chunk, [DONE] ($out)"
else bad "several choices streamed: $out"; fi
r0=$(C "$URL/metrics" | awk '$1=="tern_requests_total"{print $2}')
C "$URL/v1/completions" -d '{"prompt":["a","b","c"],"n":2,"max_tokens":2}' >/dev/null
r1=$(C "$URL/metrics" | awk '$1=="tern_requests_total"{print $2}')
[ -n "$r0" ] && [ "$r1" = $((r0 + 1)) ] && ok "/metrics: a request of 6 choices counts once" || bad "requests_total $r0 -> $r1 for one request"

# ---- metrics ---------------------------------------------------------------------------------
C "$URL/metrics" >"$tmp/metrics.txt"
req=$(awk '$1=="tern_requests_total"{print $2}' "$tmp/metrics.txt")
gen=$(awk '$1=="tern_tokens_predicted_total"{print $2}' "$tmp/metrics.txt")
ttft=$(awk '$1=="tern_time_to_first_token_seconds_count"{print $2}' "$tmp/metrics.txt")
if [ "${req:-0}" -ge 12 ] && [ "${gen:-0}" -gt 0 ] && [ "${ttft:-0}" -ge 12 ] \
   && grep -q '^tern_inter_token_latency_seconds_bucket{le="+Inf"}' "$tmp/metrics.txt" \
   && grep -q '^# TYPE tern_kv_cache_usage_ratio gauge' "$tmp/metrics.txt"; then
  ok "/metrics: $req requests, $gen tokens, TTFT and inter-token histograms"
else bad "/metrics: requests=$req generated=$gen ttft=$ttft"; fi

# ---- graceful SIGTERM: the in-flight stream finishes, the server exits 0 ----------------------
C -N "$URL/v1/chat/completions" -d '{"messages":[{"role":"user","content":"go"}],"max_tokens":60,"ignore_eos":true,"stream":true}' >"$tmp/grace.sse" &
cpid=$!
for i in $(seq 1 100); do [ -s "$tmp/grace.sse" ] && break; sleep 0.05; done
kill -TERM "$A_PID"
rcs=1
if wait_exit "$A_PID" 30; then wait "$A_PID"; rcs=$?; fi
wait "$cpid"
if [ "$rcs" = 0 ] && J sse "$tmp/grace.sse" >/dev/null; then ok "SIGTERM: in-flight stream completed, exit 0"
else bad "SIGTERM: exit $rcs, stream $(tail -c 200 "$tmp/grace.sse")"; fi
c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$A_URL/health")
[ "$c" = 000 ] && ok "after shutdown the port is closed" || bad "after shutdown /health answered $c"

# ==== server B: --api-key-file, --timeout ======================================================
printf 's3cret\n' >"$tmp/key"
start B -np 2 -c 16384 --api-key-file "$tmp/key" --timeout 1
B_PID=$SPID
e "no API key" 401 authentication_error invalid_api_key /v1/models
e "wrong API key" 401 authentication_error invalid_api_key /v1/models -H 'Authorization: Bearer nope'
c=$(code /v1/models "$tmp/m2.json" -H 'Authorization: Bearer s3cret')
[ "$c" = 200 ] && ok "right API key: 200" || bad "right API key: $c"
c=$(code /health "$tmp/h3.json")
[ "$c" = 200 ] && ok "/health needs no key" || bad "/health with --api-key: $c"
# CORS (default origin *): every reply says so; a browser's preflight needs no key
curl -s -D "$tmp/hdr.txt" -o /dev/null --max-time 10 -H 'Authorization: Bearer s3cret' "$URL/v1/models"
grep -qi '^Access-Control-Allow-Origin: \*' "$tmp/hdr.txt" && ok "replies carry Access-Control-Allow-Origin: *" \
  || bad "no CORS header: $(cat "$tmp/hdr.txt")"
c=$(curl -s -D "$tmp/pf.txt" -o /dev/null -w '%{http_code}' --max-time 10 -X OPTIONS -H 'Origin: http://x.example' \
  -H 'Access-Control-Request-Method: POST' "$URL/v1/chat/completions")
[ "$c" = 204 ] && grep -qi '^Access-Control-Allow-Headers:.*Authorization' "$tmp/pf.txt" \
  && grep -qi '^Access-Control-Allow-Methods:.*POST' "$tmp/pf.txt" && ok "OPTIONS preflight: 204 with the methods and headers, no key needed" \
  || bad "preflight: $c $(cat "$tmp/pf.txt")"
e "request past --timeout" 504 timeout_error timeout /v1/completions -H 'Authorization: Bearer s3cret' \
  -d '{"prompt":"a","max_tokens":16000,"ignore_eos":true}'

C -N "$URL/v1/completions" -H 'Authorization: Bearer s3cret' \
  -d '{"prompt":"a","max_tokens":16000,"ignore_eos":true,"stream":true}' >"$tmp/tmo.sse"
grep -q '^data: {"error":{.*"timeout_error"' "$tmp/tmo.sse" && tail -c 14 "$tmp/tmo.sse" | grep -q 'data: \[DONE\]' \
  && ok "streamed request past --timeout: error event, then [DONE]" || bad "streamed timeout: $(tail -c 300 "$tmp/tmo.sse")"
C -N "$URL/v1/completions" -H 'Authorization: Bearer s3cret' \
  -d '{"prompt":"a","n":2,"max_tokens":16000,"ignore_eos":true,"stream":true}' >"$tmp/tmo2.sse"
grep -q '"index":1,' "$tmp/tmo2.sse" && [ "$(grep -c '^data: {"error":{.*"timeout_error"' "$tmp/tmo2.sse")" = 1 ] \
  && tail -c 14 "$tmp/tmo2.sse" | grep -q 'data: \[DONE\]' \
  && ok "streamed n=2 past --timeout: both choices' chunks, one error event, then [DONE]" || bad "streamed n=2 timeout: $(tail -c 300 "$tmp/tmo2.sse")"
e "/metrics without --metrics" 404 invalid_request_error not_found /metrics -H 'Authorization: Bearer s3cret'

# ==== server C: two slots, no queue; a client that leaves mid-stream frees its slots ==============
start C -np 2 -c 16384 --metrics --max-queue 0 --cors-origin none
C_PID=$SPID
c=$(curl -s -D "$tmp/hdr2.txt" -o /dev/null -w '%{http_code}' --max-time 10 -X OPTIONS "$URL/v1/completions")
[ "$c" = 405 ] && ! grep -qi '^Access-Control' "$tmp/hdr2.txt" && ok "--cors-origin none: no CORS header, no preflight ($c)" \
  || bad "--cors-origin none: $c $(cat "$tmp/hdr2.txt")"
# gone BODY: streams BODY for 1.5 s, then leaves; c0: tern_requests_cancelled_total before
gone() {
  c0=$(C "$URL/metrics" | awk '$1=="tern_requests_cancelled_total"{print $2}')
  curl -s -N --max-time 1.5 -H 'Content-Type: application/json' "$URL/v1/completions" -d "$1" >"$tmp/gone.sse" &
  gpid=$!
  for i in $(seq 1 100); do grep -q '^data: {' "$tmp/gone.sse" && break; sleep 0.02; done
}
# freed WHAT: after the client left, the next request of 2 choices gets both slots (503 until
# then), tern_requests_cancelled_total grew by 1 (a request counts once) and nothing runs
freed() {
  wait "$gpid"
  grep -q '^data: {' "$tmp/gone.sse" || bad "$1: the stream to be dropped sent nothing in 1.5 s"
  local t0 c cancelled running
  t0=$(date +%s)
  for i in $(seq 1 50); do   # the slots free within a step or two of the client leaving (503 until then)
    c=$(curl -s --max-time 30 -o "$tmp/after.json" -w '%{http_code}' -H 'Content-Type: application/json' \
      "$URL/v1/completions" -d '{"prompt":"b","n":2,"max_tokens":4,"temperature":0}')
    [ "$c" = 503 ] || break
    sleep 0.1
  done
  cancelled=$(C "$URL/metrics" | awk '$1=="tern_requests_cancelled_total"{print $2}')
  running=$(C "$URL/metrics" | awk '$1=="tern_requests_processing"{print $2}')
  if [ "$c" = 200 ] && [ "${cancelled:-0}" = $((${c0:-0} + 1)) ] && [ "${running:-1}" = 0 ]; then
    ok "$1: every sequence cancelled, the next request got the slots ($(( $(date +%s) - t0 )) s)"
  else bad "$1: status $c, cancelled $c0 -> $cancelled, running=$running"; fi
}
gone '{"prompt":"a","n":2,"max_tokens":16000,"ignore_eos":true,"stream":true}'
c=$(C -D "$tmp/busy.hdr" -o "$tmp/busy.json" -w '%{http_code}' "$URL/v1/completions" -d '{"prompt":"b","max_tokens":2}')
if [ "$c" = 503 ] && J error "$tmp/busy.json" unavailable_error server_busy && grep -qi '^Retry-After:' "$tmp/busy.hdr"; then
  ok "slots busy and --max-queue 0: 503 with Retry-After"
else bad "busy server: $c $(cat "$tmp/busy.json")"; fi
grep -q '"index":1,' "$tmp/gone.sse" || bad "streamed n=2: no chunk of choice 1"
freed "client gone mid-stream of n=2"
c=$(code /v1/completions "$tmp/busy2.json" -d '{"prompt":"b","n":3,"max_tokens":2,"stream":true}')
[ "$c" = 503 ] && J error "$tmp/busy2.json" unavailable_error server_busy \
  && ok "streamed n=3 on 2 slots and no queue: 503 before any stream" || bad "streamed n=3 busy: $c $(cat "$tmp/busy2.json")"
gone '{"prompt":"a","max_tokens":16000,"ignore_eos":true,"stream":true}'
freed "client gone mid-stream of one choice"

# ==== server D: the same API over 2 workers (ZeroMQ on loopback) ================================
spawn_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1
spawn_worker w2 "$LOOPBACK_ANY" -m "$M" -t 1
W1=$(endpoint w1) W2=$(endpoint w2)
if [ -n "$W1" ] && [ -n "$W2" ]; then
  start D -np 2 --workers "$W1,$W2" --metrics
  cpids=()
  for i in 0 1; do
    C "$URL/v1/completions" -d "{\"prompt\":\"${PROMPTS[$i]}\",\"max_tokens\":24,\"temperature\":0,\"ignore_eos\":true}" >"$tmp/cl$i.json" &
    cpids+=($!)
  done
  wait "${cpids[@]}"
  same=0
  for i in 0 1; do
    J completion "$tmp/cl$i.json" >"$tmp/cl$i.txt" && cmp -s "$tmp/cl$i.txt" "$tmp/single$i.txt" && same=$((same+1))
  done
  [ $same = 2 ] && ok "--workers: 2 parallel requests through 2 workers == one process" \
    || bad "--workers outputs differ: '$(cat "$tmp/cl0.txt")' vs '$(cat "$tmp/single0.txt")'"
  C "$URL/v1/completions" -d "$LPW" >"$tmp/lpw_d.json"
  LPN=4 J lp "$tmp/lpw_d.json" "${V:-1}" >"$tmp/lpw_d.lp" && LPN=4 J lp "$tmp/lpw_a.json" "${V:-1}" >"$tmp/lpw_a.lp" \
    && J lpeq "$tmp/lpw_d.lp" "$tmp/lpw_a.lp" \
    && ok "--workers: logprobs and 4 alternatives come back from the last stage, == one process" || bad "--workers logprobs: $(cat "$tmp/lpw_d.json")"
  if python3 "$tmp/echo.py" "$URL" "$P" "$tmp/echo_d.json" >/dev/null 2>"$tmp/echo_d.err" \
     && python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))' "$tmp/echo_d.json" "$tmp/echo_a.json"; then
    ok "--workers: echo's prompt logprobs come back from the last stage, == one process"
  else bad "--workers echo: $(cat "$tmp/echo_d.err")"; fi
  if out=$(python3 "$tmp/cache.py" "$URL" 2>&1); then ok "--workers: prefix cache in the workers' KV caches, same texts ($out)"
  else bad "--workers prefix cache: $out"; fi
  C "$URL/metrics" >"$tmp/metrics_d.txt"
  [ "$(grep -c '^tern_worker_up{worker="w[01]"} 1$' "$tmp/metrics_d.txt")" = 2 ] \
    && grep -q '^tern_worker_rtt_seconds{worker="w0"} [0-9.]*$' "$tmp/metrics_d.txt" \
    && ok "/metrics: per-worker up and heartbeat RTT" || bad "/metrics per worker: $(grep tern_worker "$tmp/metrics_d.txt")"
  kill -TERM "$SPID"; wait "$SPID"; rc=$?
  [ $rc = 0 ] && ok "server D: exit 0 on SIGTERM" || bad "server D: exit $rc on SIGTERM"
else bad "workers did not start: $(cat "$tmp"/w1.log "$tmp"/w2.log)"; fi

# ---- every server stops cleanly on SIGTERM, with nothing from a sanitizer in its log ------------
for name in B C; do
  pid=$([ $name = B ] && echo "$B_PID" || echo "$C_PID")
  kill -TERM "$pid"
  wait_exit "$pid" 30
  wait "$pid"; rc=$?
  [ $rc = 0 ] && ok "server $name: exit 0 on SIGTERM" || bad "server $name: exit $rc on SIGTERM"
done
if grep -l -E 'Sanitizer|runtime error|data race' "$tmp"/[ABCD].log >/dev/null 2>&1; then
  bad "sanitizer reports: $(grep -h -A8 -E 'Sanitizer|runtime error|data race' "$tmp"/[ABCD].log | head -40)"
fi

finish
