#!/usr/bin/env bash
# `tern serve` under concurrent load, on a tiny generated model and free ports (python3 clients):
# 16 clients at once (different prompts; 8 greedy, 8 sampled with their own seeds; half streamed)
# each get exactly the text and token count they get alone, which equal `tern run` — with 16
# slots (-np 16) and with 4 slots and 12 requests queued. A client that reads its stream 1 byte
# per 100 ms through a tiny receive window does not hold up the others: they all finish while
# it is still reading, in about the time they take without it, and its own stream, read to the
# end, is complete. 24 mixed requests at once (echo with logprobs, several choices, streams,
# prompts sharing their beginning for the prefix cache) on 4 slots == each alone on 1 slot with
# the cache off. Servers are always killed on exit; every client socket has a timeout.
source "$(dirname "$0")/lib.bash"   # its cleanup: SIGTERM to the servers, SIGKILL after 5 s

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 5

# ---- the 16 requests and what `tern run` gives for each, alone ---------------------------------
N=96
PROMPTS=("Once upon a time" "In a hole in the ground" "It was a bright cold day" "Call me Ishmael"
  "The sky above the port" "All happy families" "It was the best of times" "Mother died today"
  "Somewhere in La Mancha" "A screaming comes across" "Happy families are all alike" "Far out in the uncharted"
  "The man in black fled" "I am an invisible man" "Riverrun past Eve" "Stately plump Buck Mulligan")
: >"$tmp/reqs.tsv"
for i in $(seq 0 15); do
  if [ $((i % 2)) = 0 ]; then temp=0 seed=-1; else temp=0.8 seed=$((100 + i)); fi
  timeout 60 "$TERN" run -m "$M" -t 1 --no-display-prompt --summary=0 -p "${PROMPTS[$i]}" -n $N \
    --temp $temp -s $seed --top-k 40 --top-p 0.95 --min-p 0.05 >"$tmp/ref$i.raw" 2>"$tmp/run.log" \
    || die "tern run $i failed: $(cat "$tmp/run.log")"
  printf '%s\t%s\t%s\t%s\n' "$i" "$temp" "$seed" "${PROMPTS[$i]}" >>"$tmp/reqs.tsv"
done

cat >"$tmp/load.py" <<'PY'
# load.py MODE URL DIR N: the client side of serve_concurrency.sh (stdlib only)
import json, socket, sys, threading, time
mode, url, d, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
host, port = url.split("//")[1].split(":")
port = int(port)

def reqs():
    out = []
    for line in open(f"{d}/reqs.tsv", encoding="utf-8"):
        i, temp, seed, prompt = line.rstrip("\n").split("\t")
        i = int(i)
        raw = open(f"{d}/ref{i}.raw", "rb").read()
        ref = (raw[:-1] if raw.endswith(b"\n") else raw).decode("utf-8", "replace")
        body = {"prompt": prompt, "max_tokens": n, "temperature": float(temp), "top_k": 40, "top_p": 0.95,
                "min_p": 0.05, "stream": i % 4 >= 2}
        if int(seed) >= 0: body["seed"] = int(seed)
        out.append((i, body, ref))
    return out

def post(body, rcvbuf=0, slow=None, timeout=60):
    """POSTs /v1/completions; returns (status, text, completion_tokens, finish_reason).
    slow: a threading.Event; while it is clear the reply is read 1 byte per 100 ms."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf: s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect((host, port))
    data = json.dumps(body).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
    buf = b""
    while True:
        if slow is not None and not slow.is_set():
            chunk = s.recv(1)
            time.sleep(0.1)
        else:
            chunk = s.recv(65536)
        if not chunk: break
        buf += chunk
    s.close()
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    if b"transfer-encoding: chunked" in head.lower():   # de-chunk
        out = b""
        while rest:
            ln, _, rest = rest.partition(b"\r\n")
            k = int(ln.split(b";")[0], 16)
            if k == 0: break
            out += rest[:k]
            rest = rest[k + 2:]
        rest = out
    if status != 200: return status, rest.decode("utf-8", "replace"), -1, None
    if not body.get("stream"):
        o = json.loads(rest)
        return status, o["choices"][0]["text"], o["usage"]["completion_tokens"], o["choices"][0]["finish_reason"]
    t = rest.decode("utf-8")
    if not t.endswith("data: [DONE]\n\n"): return -1, "stream does not end with [DONE]: " + t[-200:], -1, None
    text, fin, usage = "", None, -1
    for e in t.split("\n\n")[:-2]:
        c = json.loads(e[6:])
        if c.get("usage"): usage = c["usage"]["completion_tokens"]
        if c["choices"]:
            text += c["choices"][0]["text"]
            fin = c["choices"][0]["finish_reason"] or fin
    return status, text, usage, fin

def parallel(items, **kw):
    res, start = [None] * len(items), threading.Barrier(len(items))
    def one(k, body):
        start.wait()
        t0 = time.time()
        try: r = post(body, **kw)
        except Exception as e: r = (-1, f"{type(e).__name__}: {e}", -1, None)
        res[k] = r + (time.time() - t0, t0, time.time())
    th = [threading.Thread(target=one, args=(k, b)) for k, b in enumerate(items)]
    for t in th: t.start()
    for t in th: t.join()
    return res

rs = reqs()
if mode == "match":   # alone (one after the other), then all 16 at once: same texts and token counts
    bad = 0
    alone = []
    for i, body, ref in rs:
        b = dict(body, stream_options={"include_usage": True}) if body["stream"] else dict(body)
        st, text, ntok, fin = post(b)
        alone.append((st, text, ntok, fin))
        if st != 200 or text != ref:
            bad += 1; print(f"  alone {i}: status {st} text {text!r} vs tern run {ref!r}")
    got = parallel([dict(b, stream_options={"include_usage": True}) if b["stream"] else b for _, b, _ in rs])
    for (i, body, ref), a, g in zip(rs, alone, got):
        if g[:4] != a:
            bad += 1; print(f"  together {i} ({'stream' if body['stream'] else 'plain'}, temp {body['temperature']}): "
                            f"{g[:4]!r} vs alone {a!r}")
    # how many were in flight together at the busiest moment (the test only means something if many)
    peak = max(sum(1 for h in got if h[5] <= g[6] and g[6] <= h[6]) for g in got)
    print(f"RESULT {bad} {max(g[4] for g in got):.2f} {peak}")
elif mode == "slow":  # 8 normal clients, alone and then beside a slow reader
    normal = [b for _, b, _ in rs[:8]]
    base = parallel(normal)
    t_base = max(r[4] for r in base)
    slowbody = {"prompt": "a slow reader", "max_tokens": 400, "temperature": 0, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
    st0, ref0, n0, _ = post(slowbody)           # what it gets when read at full speed
    ev, slow_res, first = threading.Event(), [], time.time()
    def slow():
        try: slow_res.append(post(slowbody, rcvbuf=1024, slow=ev, timeout=120))
        except Exception as e: slow_res.append((-1, f"{type(e).__name__}: {e}", -1, None))
    th = threading.Thread(target=slow); th.start()
    time.sleep(1.0)                              # it holds its slot and its stream has started
    got = parallel(normal)
    t_with = max(r[4] for r in got)
    still = th.is_alive()
    ev.set(); th.join()
    same = sum(1 for a, g in zip(base, got) if a[:4] == g[:4] and a[0] == 200)
    s = slow_res[0]
    complete = s[0] == 200 and s[1] == ref0 and s[2] == n0 == 400
    print(f"RESULT {same} {int(still)} {int(complete)} {t_base:.2f} {t_with:.2f}")
    if not complete: print(f"  slow reader: {s[0]} {s[2]} tokens, {s[1][:200]!r} vs {ref0[:200]!r}")
PY

# start NAME ARGS...: tern serve on a free port; sets URL
start() {
  local name=$1
  shift
  start_serve "$name" -m "$M" -t 2 "$@" || die "server $name did not start: $(cat "$tmp/$name.log")"
  wait_health "$URL" 60 || die "server $name never became healthy: $(cat "$tmp/$name.log")"
}

for np in 16 4; do
  start "np$np" -np $np -c 512
  timeout 120 python3 "$tmp/load.py" match "$URL" "$tmp" $N >"$tmp/match$np.out" 2>&1
  read -r _ nbad secs peak < <(grep '^RESULT' "$tmp/match$np.out") || true
  if [ "${nbad:-x}" = 0 ] && [ "${peak:-0}" -ge 8 ]; then
    ok "-np $np: 16 clients at once (8 greedy, 8 seeded, 8 streamed; $peak in flight together) == alone == tern run (${secs}s)"
  else bad "-np $np: $(grep -v '^RESULT' "$tmp/match$np.out" | head -20)"; fi
done

start slow -np 4 -c 1024
timeout 200 python3 "$tmp/load.py" slow "$URL" "$tmp" $N >"$tmp/slow.out" 2>&1
read -r _ same still complete tb tw < <(grep '^RESULT' "$tmp/slow.out") || true
if [ "${same:-0}" = 8 ] && [ "${still:-0}" = 1 ]; then
  ok "slow reader (1 B/100 ms, 1 KiB window): 8 others finished while it was still reading, same texts"
else bad "slow reader: same=$same still_reading=$still $(cat "$tmp/slow.out" | head -20)"; fi
# generous: beside the slow reader the others take at most 5x (and 10 s) their time without it
if [ -n "${tw:-}" ] && python3 -c "import sys; sys.exit(0 if $tw <= max(10.0, 5 * $tb) else 1)"; then
  ok "the others took ${tw}s beside the slow reader (${tb}s without it)"
else bad "the others took ${tw:-?}s beside the slow reader, ${tb:-?}s without it"; fi
[ "${complete:-0}" = 1 ] && ok "the slow reader's own stream, read to the end: all 400 tokens, same text as at full speed" \
  || bad "slow reader's stream incomplete: $(grep -A2 'slow reader:' "$tmp/slow.out")"

# ---- everything at once: echo + logprobs, several choices, shared prompt beginnings (prefix
# cache), streams, on 4 slots == the same requests one by one on 1 slot with no cache ---------
cat >"$tmp/mixed.py" <<'PY'
# mixed.py REF_URL LOAD_URL: 24 mixed requests, alone on REF (cache off) and all at once on LOAD
import json, sys, threading, urllib.request
ref_url, load_url = sys.argv[1], sys.argv[2]
def post(url, body):
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        raw = r.read().decode()
    if not body.get("stream"): return [(c["index"], c["text"], c["logprobs"]) for c in json.loads(raw)["choices"]]
    chunks = [json.loads(l[6:]) for l in raw.splitlines() if l.startswith("data: {")]
    return [(0, "".join(c["choices"][0]["text"] for c in chunks if c["choices"]), None)]
stem = "The keeper of the northern light wrote in his log that the storm had passed and "
reqs = []
for k in range(24):
    tail = ["the sea was calm", "ships came home", "gulls returned", "the lamp was cleaned"][k % 4]
    b = {"prompt": stem + tail if k % 3 else f"Log {k}: " + tail, "max_tokens": 8 + k % 5, "ignore_eos": True,
         "temperature": 0 if k % 2 == 0 else 0.9, "seed": 50 + k}
    if k % 4 == 1: b.update(echo=True, logprobs=2)
    if k % 6 == 5: b.update(echo=True, logprobs=1, max_tokens=0)
    if k % 5 == 2: b.update(n=2)
    if k % 7 == 3: b["prompt"] = [b["prompt"], "Another line " + tail]
    if k % 8 == 6 and "n" not in b and not isinstance(b["prompt"], list): b["stream"] = True
    reqs.append(b)
want = [post(ref_url, dict(b, cache_prompt=False)) for b in reqs]
got = [None] * len(reqs)
def one(k): got[k] = post(load_url, reqs[k])
th = [threading.Thread(target=one, args=(k,)) for k in range(len(reqs))]
for t in th: t.start()
for t in th: t.join()
bad = [k for k in range(len(reqs)) if got[k] != want[k]]
for k in bad[:5]: print(f"  request {k} {json.dumps(reqs[k])[:160]}: {str(got[k])[:200]} vs {str(want[k])[:200]}")
print(f"RESULT {len(bad)} {sum(len(w) for w in want)}")
PY
start ref -np 1 -c 512 --no-cache-prompt
REF_URL=$URL
start load -np 4 -c 512
timeout 300 python3 "$tmp/mixed.py" "$REF_URL" "$URL" >"$tmp/mixed.out" 2>&1
read -r _ nbad nchoices < <(grep '^RESULT' "$tmp/mixed.out") || true
if [ "${nbad:-x}" = 0 ]; then
  ok "24 mixed requests at once on 4 slots (echo + logprobs, n=2, prompt lists, streams, shared beginnings; $nchoices choices) == one by one without the cache"
else bad "mixed load: $(head -20 "$tmp/mixed.out")"; fi

if grep -l -E 'Sanitizer|runtime error|data race' "$tmp"/*.log >/dev/null 2>&1; then
  bad "sanitizer reports: $(grep -h -A8 -E 'Sanitizer|runtime error|data race' "$tmp"/*.log | head -40)"
fi
finish
