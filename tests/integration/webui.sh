#!/usr/bin/env bash
# `tern serve`'s llama-server extras on a tiny generated model: the web UI page at / (byte
# identical to coordinator/webui/index.html, text/html, ETag → 304, HEAD, no key needed), its
# script valid JS (node --check) and working (webui_page.mjs: the SSE parser fed streams cut
# anywhere, streamChat == the plain reply, and the page itself over a stub DOM: send, stop, new
# chat, the key, localStorage, no innerHTML), /props values == the flags given (-c, -np, --temp,
# --top-k, --top-p, --min-p, -a, -m), /slots (idle; a busy slot with the stream's id and growing
# n_decoded while a long stream runs, idle once its client left; idle at once after a finished
# stream, with its tokens counted and cached; a repeated prompt's cached tokens), the key on
# /props and /slots, --no-slots (501) and --no-webui (404). Servers are always killed on exit;
# every curl has --max-time. Without node the script's checks are skipped (said so).
source "$(dirname "$0")/lib.bash"   # its cleanup: SIGTERM to servers, SIGKILL after 5 s
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${TERN_SRC:-$(cd "$HERE/../.." && pwd)}
PAGE="$SRC/coordinator/webui/index.html"
C() { curl -s --max-time 30 "$@"; }

cat >"$tmp/check.py" <<'PY'
# JSON checks for webui.sh: each mode prints what the shell compares, or exits 1 with why
import json, sys
mode, path = sys.argv[1], sys.argv[2]
raw = open(path, "rb").read()
def die(msg): sys.stderr.write(f"{mode}: {msg}\n{raw[:800]!r}\n"); sys.exit(1)
if mode == "get":      # get FILE KEY...: a value by path
    v = json.loads(raw)
    for k in sys.argv[3:]: v = v[int(k)] if isinstance(v, list) else v[k]
    print(json.dumps(v) if not isinstance(v, str) else v)
elif mode == "script":  # the page's one inline <script>, as a .js file's text
    t = raw.decode("utf-8")
    a, b = t.find("<script>"), t.find("</script>")
    if a < 0 or b < a or t.count("<script") != 1: die("not exactly one inline <script>")
    if "src=" in t[a - 20:a + 8] or "http://" in t or "https://" in t: die("an external reference in the page")
    sys.stdout.write(t[a + 8:b])
elif mode == "props":   # props FILE N_CTX SLOTS TEMP TOP_K TOP_P MIN_P ALIAS PATH
    o = json.loads(raw)
    n_ctx, slots, temp, top_k, top_p, min_p, alias, mpath = sys.argv[3:11]
    d = o["default_generation_settings"]; p = d["params"]
    want = {"n_ctx": (d["n_ctx"], int(n_ctx)), "total_slots": (o["total_slots"], int(slots)),
            "temperature": (p["temperature"], float(temp)), "top_k": (p["top_k"], int(top_k)),
            "top_p": (p["top_p"], float(top_p)), "min_p": (p["min_p"], float(min_p)),
            "model_alias": (o["model_alias"], alias), "model_path": (o["model_path"], mpath),
            "is_processing": (d["is_processing"], False), "id_task": (d["id_task"], -1)}
    for k, (got, w) in want.items():
        if got != w: die(f"{k} {got!r}, want {w!r}")
    for k in ("chat_template", "build_info", "bos_token", "eos_token"):
        if not isinstance(o.get(k), str): die(f"no string {k}")
    for k in ("repeat_penalty", "repeat_last_n", "seed", "n_predict", "presence_penalty", "frequency_penalty"):
        if k not in p: die(f"no params.{k}")
    if not o["build_info"].startswith("tern "): die("build_info")
    if o["endpoint_slots"] is not True or o["webui"] is not True or o["endpoint_metrics"] is not True: die("endpoint flags")
elif mode == "slots":   # slots FILE N N_CTX: the array's shape; prints "busy-count"
    a = json.loads(raw)
    n, n_ctx = int(sys.argv[3]), int(sys.argv[4])
    if not isinstance(a, list) or len(a) != n: die(f"not {n} slots")
    for i, s in enumerate(a):
        if s["id"] != i or s["n_ctx"] != n_ctx: die(f"slot {i}: id/n_ctx")
        if not isinstance(s["is_processing"], bool) or not isinstance(s["params"], dict) or "n_decoded" not in s["next_token"]: die(f"slot {i} shape")
        if s["is_processing"] != (s["id_task"] >= 0) or s["is_processing"] != (s["request_id"] is not None): die(f"slot {i}: id_task/request_id vs is_processing")
        for k in ("n_prompt_tokens", "n_prompt_tokens_cached", "n_prompt_tokens_processed", "n_cache_tokens"):
            if not isinstance(s[k], int) or s[k] < 0: die(f"slot {i}: {k}")
    print(sum(s["is_processing"] for s in a))
elif mode == "busy":    # busy FILE ID: the busy slot serving request ID; prints "n_decoded n_remain"
    a = [s for s in json.loads(raw) if s["request_id"] == sys.argv[3]]
    if len(a) != 1: die(f"no slot serves {sys.argv[3]}")
    s = a[0]
    if not s["is_processing"] or s["params"]["stream"] is not True or s["params"]["max_tokens"] != int(sys.argv[4]): die("busy slot fields")
    print(s["next_token"]["n_decoded"], s["next_token"]["n_remain"])
elif mode == "first_id":   # first_id SSE_FILE: the id of the stream's first chunk
    for e in raw.decode().split("\n\n"):
        if e.startswith("data: {"): print(json.loads(e[6:])["id"]); break
elif mode == "usage":   # usage SSE_OR_JSON_FILE: "prompt completion cached"
    t = raw.decode()
    o = json.loads([e[6:] for e in t.split("\n\n") if e.startswith("data: {")][-1]) if t.startswith("data:") else json.loads(t)
    u = o["usage"]
    print(u["prompt_tokens"], u["completion_tokens"], u["prompt_tokens_details"]["cached_tokens"])
elif mode == "idle_with":  # idle_with FILE PROMPT COMPLETION CACHED: an idle slot that served that request
    a = json.loads(raw)
    p, c, k = map(int, sys.argv[3:6])
    m = [s for s in a if not s["is_processing"] and s["n_prompt_tokens"] == p and s["next_token"]["n_decoded"] == c
         and s["n_prompt_tokens_cached"] == k and s["n_prompt_tokens_processed"] == p - k]
    if len(m) != 1: die(f"no idle slot with prompt {p}, decoded {c}, cached {k}")
    print(m[0]["n_cache_tokens"])
elif mode == "content":  # content FILE: a chat reply's text
    sys.stdout.write(json.loads(raw)["choices"][0]["message"]["content"])
PY
J() { python3 "$tmp/check.py" "$@"; }
# plain OUT [curl args]: the text of the chat reply webui_page.mjs streams (same request, not streamed)
plain() {
  local out=$1
  shift
  C "$@" -H 'Content-Type: application/json' "$URL/v1/chat/completions" \
    -d '{"messages":[{"role":"user","content":"Say hi"}],"max_tokens":24,"temperature":0,"ignore_eos":true}' >"$out.json"
  J content "$out.json" >"$out"
}

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 5
HAVE_NODE=1
command -v node >/dev/null 2>&1 || { HAVE_NODE=0; echo "(node not found: the page's script is not run)"; }

# start NAME ARGS...: tern serve on a free port, healthy; sets URL and SPID
start() {
  local name=$1
  shift
  start_serve "$name" -m "$M" -t 2 "$@" || die "server $name did not start: $(cat "$tmp/$name.log")"
  wait_health "$URL" 30 || die "server $name never became healthy: $(cat "$tmp/$name.log")"
}

# ==== server A: the page, /props, /slots ======================================================
start A -np 2 -c 16384 --temp 0.55 --top-k 7 --top-p 0.85 --min-p 0.02 -a webui-model --metrics
c=$(C -D "$tmp/page.hdr" -o "$tmp/page.html" -w '%{http_code}' "$URL/")
if [ "$c" = 200 ] && cmp -s "$tmp/page.html" "$PAGE" && grep -qi '^Content-Type: text/html; charset=utf-8' "$tmp/page.hdr"; then
  ok "GET /: 200, text/html, byte-identical to coordinator/webui/index.html ($(stat -c %s "$PAGE") bytes)"
else bad "GET /: $c $(head -c 300 "$tmp/page.hdr") (cmp: $(cmp "$tmp/page.html" "$PAGE" 2>&1))"; fi
etag=$(sed -n 's/^ETag: *\(.*\)\r$/\1/Ip' "$tmp/page.hdr")
grep -qi '^Cache-Control: no-cache' "$tmp/page.hdr" && grep -qi "^Content-Security-Policy: default-src 'none'" "$tmp/page.hdr" \
  && [ -n "$etag" ] && ok "GET /: ETag $etag, Cache-Control: no-cache, a CSP that allows no other origin" || bad "page headers: $(cat "$tmp/page.hdr")"
c=$(C -o "$tmp/page304" -w '%{http_code}' -H "If-None-Match: $etag" "$URL/")
[ "$c" = 304 ] && [ ! -s "$tmp/page304" ] && ok "GET / with If-None-Match: the ETag: 304, no body" || bad "If-None-Match: $c"
c=$(C -o /dev/null -w '%{http_code}' -H 'If-None-Match: "other"' "$URL/index.html")
[ "$c" = 200 ] && ok "GET /index.html with another ETag: 200" || bad "/index.html: $c"
c=$(C -I -o "$tmp/head.hdr" -w '%{http_code}' "$URL/")
[ "$c" = 200 ] && grep -qi "^Content-Length: $(stat -c %s "$PAGE")" "$tmp/head.hdr" && ok "HEAD /: 200 with the page's length" || bad "HEAD /: $c"
J script "$tmp/page.html" >"$tmp/page.js" && ok "the page has one inline <script> and no external reference" || bad "the page's script"
if [ $HAVE_NODE = 1 ]; then
  node --check "$tmp/page.js" 2>"$tmp/check.err" && ok "node --check: the page's script is valid JS" || bad "node --check: $(cat "$tmp/check.err")"
fi

C "$URL/props" >"$tmp/props.json"
J props "$tmp/props.json" 16384 2 0.55 7 0.85 0.02 webui-model "$M" \
  && ok "/props: n_ctx, total_slots, temperature, top_k, top_p, min_p, model_alias, model_path as given; template, tokens, build_info" \
  || bad "/props"

C "$URL/slots" >"$tmp/slots0.json"
[ "$(J slots "$tmp/slots0.json" 2 16384)" = 0 ] && ok "/slots: 2 idle slots (id_task -1, request_id null), n_ctx 16384" || bad "/slots idle: $(cat "$tmp/slots0.json")"

# a long stream: a busy slot while it runs; the client leaves and the slot goes idle
N=15000
curl -s -N --max-time 60 -H 'Content-Type: application/json' "$URL/v1/chat/completions" \
  -d "{\"messages\":[{\"role\":\"user\",\"content\":\"Count\"}],\"max_tokens\":$N,\"ignore_eos\":true,\"temperature\":0,\"stream\":true}" >"$tmp/long.sse" &
lpid=$!
for _ in $(seq 1 400); do grep -q '"content":"[^"]' "$tmp/long.sse" && break; sleep 0.01; done
C "$URL/slots" >"$tmp/slots1.json"
C "$URL/metrics" >/dev/null; sleep 0.2
C "$URL/slots" >"$tmp/slots2.json"
id=$(J first_id "$tmp/long.sse")
b1=$(J busy "$tmp/slots1.json" "$id" $N) b2=$(J busy "$tmp/slots2.json" "$id" $N)
if [ "$(J slots "$tmp/slots1.json" 2 16384)" = 1 ] && [ -n "$b1" ] && [ -n "$b2" ] && [ "${b2% *}" -gt "${b1% *}" ] \
   && [ "${b1#* }" = $((N - ${b1% *})) ]; then
  ok "/slots while a stream runs: one busy slot with the stream's id ($id), stream, max_tokens; n_decoded ${b1% *} -> ${b2% *}, n_remain = max_tokens - n_decoded"
else bad "/slots while streaming: $b1 / $b2 $(head -c 600 "$tmp/slots1.json")"; fi
kill "$lpid" 2>/dev/null; wait "$lpid" 2>/dev/null
busy=1
for _ in $(seq 1 100); do busy=$(C "$URL/slots" | tee "$tmp/slots3.json" | J slots /dev/stdin 2 16384); [ "$busy" = 0 ] && break; sleep 0.1; done
[ "$busy" = 0 ] && ok "/slots after the client left mid-stream: idle again" || bad "/slots after the client left: $(head -c 400 "$tmp/slots3.json")"

# a finished stream: idle at once, its tokens counted and cached
C -N -H 'Content-Type: application/json' "$URL/v1/chat/completions" \
  -d '{"messages":[{"role":"user","content":"Count"}],"max_tokens":300,"ignore_eos":true,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}' >"$tmp/done.sse"
C "$URL/slots" >"$tmp/slots4.json"
read -r pt ct ck <<<"$(J usage "$tmp/done.sse")"
if [ "$(J slots "$tmp/slots4.json" 2 16384)" = 0 ] && cache=$(J idle_with "$tmp/slots4.json" "$pt" "$ct" "$ck") \
   && [ "$cache" = $((pt + ct - 1)) ]; then
  ok "/slots right after a stream: idle, n_decoded == usage ($ct), its cache holds prompt + generated - 1 = $cache tokens"
else bad "/slots after the stream: usage $pt $ct $ck, cache ${cache:-?}: $(head -c 600 "$tmp/slots4.json")"; fi

# the prefix cache: a prompt that repeats the last one starts after the cached part
CH='{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Say hi"}],"max_tokens":24,"temperature":0,"ignore_eos":true}'
C -H 'Content-Type: application/json' "$URL/v1/chat/completions" -d "$CH" >"$tmp/ch1.json"
C -H 'Content-Type: application/json' "$URL/v1/chat/completions" -d "$CH" >"$tmp/ch2.json"
read -r pt ct ck <<<"$(J usage "$tmp/ch2.json")"
C "$URL/slots" >"$tmp/slots5.json"
if [ "${ck:-0}" -gt 0 ] && J idle_with "$tmp/slots5.json" "$pt" "$ct" "$ck" >/dev/null; then
  ok "/slots after a repeated prompt: n_prompt_tokens_cached $ck == usage's cached_tokens, n_prompt_tokens_processed = $pt - $ck"
else bad "/slots cached prompt: usage $pt $ct $ck $(head -c 600 "$tmp/slots5.json")"; fi

if [ $HAVE_NODE = 1 ]; then
  plain "$tmp/plain.txt"
  timeout 60 node "$HERE/webui_page.mjs" "$tmp/page.html" "$URL" - "$tmp/plain.txt" webui-model >"$tmp/node_a.out" 2>&1
  rc=$?
  pass=$((pass + $(grep -c '^ok ' "$tmp/node_a.out"))); fail=$((fail + $(grep -c '^FAIL' "$tmp/node_a.out")))
  grep -E '^(ok|FAIL)' "$tmp/node_a.out" | sed 's/^/  node: /'
  [ $rc = 0 ] || bad "webui_page.mjs exited $rc: $(tail -5 "$tmp/node_a.out")"
fi
kill -TERM "$SPID"

# ==== server B: --api-key, --no-slots ============================================================
start B -np 1 -c 16384 --api-key s3cret --no-slots
K=(-H 'Authorization: Bearer s3cret')
c=$(C -o "$tmp/pageb.html" -w '%{http_code}' "$URL/")
[ "$c" = 200 ] && cmp -s "$tmp/pageb.html" "$PAGE" && ok "--api-key: GET / serves the page without a key (it asks for the key)" || bad "page with --api-key: $c"
for p in /props /slots; do
  c=$(C -o "$tmp/e.json" -w '%{http_code}' "$URL$p")
  [ "$c" = 401 ] && [ "$(J get "$tmp/e.json" error type)" = authentication_error ] && ok "--api-key: $p without the key: 401" || bad "$p without key: $c"
done
c=$(C -o "$tmp/pb.json" -w '%{http_code}' "${K[@]}" "$URL/props")
[ "$c" = 200 ] && [ "$(J get "$tmp/pb.json" endpoint_slots)" = false ] && [ "$(J get "$tmp/pb.json" total_slots)" = 1 ] \
  && ok "/props with the key: 200, endpoint_slots false, total_slots 1" || bad "/props with key: $c $(cat "$tmp/pb.json")"
c=$(C -o "$tmp/sb.json" -w '%{http_code}' "${K[@]}" "$URL/slots")
[ "$c" = 501 ] && [ "$(J get "$tmp/sb.json" error type)" = not_supported_error ] && ok "--no-slots: /slots 501 not_supported_error" || bad "--no-slots: $c $(cat "$tmp/sb.json")"
if [ $HAVE_NODE = 1 ]; then
  plain "$tmp/plainb.txt" "${K[@]}"
  timeout 60 node "$HERE/webui_page.mjs" "$tmp/page.html" "$URL" s3cret "$tmp/plainb.txt" tiny.gguf >"$tmp/node_b.out" 2>&1
  rc=$?
  grep -E '^(ok|FAIL)' "$tmp/node_b.out" | grep -E 'against the server|modelName|stop button|page' | sed 's/^/  node (key): /'
  pass=$((pass + $(grep -c '^ok ' "$tmp/node_b.out"))); fail=$((fail + $(grep -c '^FAIL' "$tmp/node_b.out")))
  grep '^FAIL' "$tmp/node_b.out" | sed 's/^/  node (key): /'
  [ $rc = 0 ] || bad "webui_page.mjs (key) exited $rc: $(tail -5 "$tmp/node_b.out")"
fi
kill -TERM "$SPID"

# ==== server C: --no-webui ========================================================================
start C -np 1 -c 256 --no-webui
c=$(C -o "$tmp/nw.json" -w '%{http_code}' "$URL/")
[ "$c" = 404 ] && [ "$(J get "$tmp/nw.json" error code)" = not_found ] && ok "--no-webui: GET / 404" || bad "--no-webui: $c"
c=$(C -o /dev/null -w '%{http_code}' "$URL/slots")
[ "$c" = 200 ] && ok "without --api-key: /slots needs no key" || bad "/slots open: $c"

for f in "$tmp"/*.log; do
  grep -q -E 'Sanitizer|runtime error' "$f" && bad "sanitizer report in $(basename "$f"): $(grep -A6 -E 'Sanitizer|runtime error' "$f" | head -20)"
done
finish 30
