#!/usr/bin/env bash
# `tern serve --ssl-key-file --ssl-cert-file` (HTTPS, as llama-server's flags) on a tiny generated
# model, with a self-signed certificate made by openssl: the log says https://, curl --cacert gets
# /health, and without the CA curl refuses the certificate (so it is TLS, with that certificate);
# a greedy chat reply over HTTPS == the same request over plain HTTP to a second server, a
# streamed reply arrives whole (== the plain text), --api-key (401 without, 200 with), the web UI
# page, /metrics, Python's urllib with the CA, the OpenAI Node client with NODE_EXTRA_CA_CERTS
# (when installed); plain HTTP to the HTTPS port fails and the server goes on serving; an
# encrypted key with its password from TERN_ARG_SSL_KEY_PASSWORD; SIGTERM ends it with 0. Errors,
# each one line and exit 1 before any model loads: one flag alone, a missing file, the files
# swapped, a non-PEM file, a key that does not match the certificate, an encrypted key without or
# with a wrong password. Skips (passes with a message) without openssl. Servers are always killed
# on exit; every curl has --max-time.
source "$(dirname "$0")/lib.bash"   # its cleanup: SIGTERM to servers, SIGKILL after 5 s
if ! command -v openssl >/dev/null 2>&1; then echo "SKIP: openssl not found (apt install openssl)"; exit 0; fi
NODE_DIR="${TERN_CACHE:-$HOME/.cache/tern}/node"
KEY=tern-tls-key
C() { curl -s --max-time 60 -H 'Content-Type: application/json' -H "Authorization: Bearer $KEY" "$@"; }

# a self-signed certificate for 127.0.0.1 (EC: quick to make), a second key that does not match
# it, and the first key encrypted with a password
cd "$tmp" || die "no temp dir"
mkcert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout "$1" -out "$2" 2>"$tmp/openssl.log"
}
mkcert key.pem cert.pem && mkcert other_key.pem other_cert.pem \
  && openssl pkey -in key.pem -aes256 -passout pass:s3cret -out enc_key.pem 2>>"$tmp/openssl.log" \
  || die "openssl failed: $(cat "$tmp/openssl.log")"
printf 'not a certificate\n' >junk.pem

M="$tmp/tiny.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --type i2_s --seed 5

# ---- errors: one line on stderr naming the problem, exit 1, before the model loads
# fails WANT ARGS...: `tern serve -m MODEL ARGS...` must exit 1 with one "tern serve:" line that
# contains WANT (a fixed string), never having listened (the model loads after that)
fails() {
  local want=$1
  shift
  timeout 30 "$TERN" serve -m "$M" --host 127.0.0.1 --port 0 "$@" >"$tmp/err.out" 2>"$tmp/err.log"
  local rc=$? lines
  lines=$(grep -c -E '^tern serve:| W ' "$tmp/err.log")   # no warning repeats the error
  if [ $rc = 1 ] && [ "$lines" = 1 ] && grep -q '^tern serve:' "$tmp/err.log" && grep -qF -- "$want" "$tmp/err.log" && ! grep -q -E 'listening on|Sanitizer|runtime error' "$tmp/err.log"; then
    ok "error: $(grep '^tern serve:' "$tmp/err.log")"
  else
    bad "$* → exit $rc, $lines error lines, want '$want': $(cat "$tmp/err.log")"
  fi
}
fails "HTTPS needs both --ssl-key-file and --ssl-cert-file (--ssl-key-file alone)" --ssl-key-file key.pem
fails "HTTPS needs both --ssl-key-file and --ssl-cert-file (--ssl-cert-file alone)" --ssl-cert-file cert.pem
fails "--ssl-key-file $tmp/nokey.pem: No such file or directory" --ssl-key-file "$tmp/nokey.pem" --ssl-cert-file cert.pem
fails "--ssl-cert-file $tmp/nocert.pem: No such file or directory" --ssl-key-file key.pem --ssl-cert-file "$tmp/nocert.pem"
fails "--ssl-key-file cert.pem: a certificate, not a private key" --ssl-key-file cert.pem --ssl-cert-file key.pem
fails "--ssl-cert-file junk.pem: no PEM certificate in it" --ssl-key-file key.pem --ssl-cert-file junk.pem
fails "--ssl-key-file enc_key.pem: the key is encrypted: give its password with --ssl-key-password" \
  --ssl-key-file enc_key.pem --ssl-cert-file cert.pem
fails "--ssl-key-password without --ssl-key-file" --ssl-key-password x
# GnuTLS's own reasons (their wording is GnuTLS's): the line names both files
fails "--ssl-key-file other_key.pem, --ssl-cert-file cert.pem: " --ssl-key-file other_key.pem --ssl-cert-file cert.pem
grep -qi "match" "$tmp/err.log" && ok "a mismatched key: GnuTLS says so" || bad "mismatch reason: $(cat "$tmp/err.log")"
fails "--ssl-key-file enc_key.pem, --ssl-cert-file cert.pem: " --ssl-key-file enc_key.pem --ssl-cert-file cert.pem \
  --ssl-key-password wrong

# ---- one server over HTTPS, one over plain HTTP, same model and flags
common=(-m "$M" -t 2 -np 2 -c 512 --api-key "$KEY" --metrics)
start_serve https "${common[@]}" --ssl-key-file key.pem --ssl-cert-file cert.pem || die "the HTTPS server did not start: $(cat "$tmp/https.log")"
S_TLS=$SPID TLS=$URL
start_serve http "${common[@]}" || die "the HTTP server did not start: $(cat "$tmp/http.log")"
S_HTTP=$SPID PLAIN=$URL
case $TLS in https://127.0.0.1:*) ok "log: listening on $TLS" ;; *) bad "the log says $TLS, not https://" ;; esac
case $PLAIN in http://127.0.0.1:*) ok "without the flags: listening on $PLAIN" ;; *) bad "plain server at $PLAIN" ;; esac
grep -q "ready on https://127.0.0.1:" "$tmp/https.log" || wait_line "$tmp/https.log" "ready on https://" 30
wait_health "$TLS" 30 --cacert cert.pem || die "/health over HTTPS never answered 200: $(tail -5 "$tmp/https.log")"
wait_health "$PLAIN" 30 || die "/health over HTTP never answered 200"

[ "$(curl -s --max-time 10 --cacert cert.pem "$TLS/health")" = '{"status":"ok"}' ] && ok "/health over HTTPS" \
  || bad "/health over HTTPS"
[ "$(curl -s --max-time 10 --cacert cert.pem -o /dev/null -w '%{scheme} %{ssl_verify_result}' "$TLS/health")" = "HTTPS 0" ] \
  && ok "curl verified the certificate" || bad "curl's scheme/verify result"
curl -s --max-time 10 -o /dev/null "$TLS/health"; rc=$?
[ $rc = 60 ] && ok "without the CA curl refuses the self-signed certificate (60)" || bad "curl without the CA: exit $rc"

# greedy chat over HTTPS == over HTTP
req='{"messages":[{"role":"user","content":"Tell me about the fox"}],"max_tokens":24,"temperature":0}'
C --cacert cert.pem -o tls_chat.json -d "$req" "$TLS/v1/chat/completions"
C -o http_chat.json -d "$req" "$PLAIN/v1/chat/completions"
content() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["choices"][0]["message"]["content"], end="")' "$1"; }
a=$(content tls_chat.json) b=$(content http_chat.json)
if [ -n "$b" ] && [ "$a" = "$b" ]; then ok "chat at temp 0 over HTTPS == over HTTP (${#a} chars)"
else bad "chat over HTTPS '$a' != over HTTP '$b' ($(head -c 300 tls_chat.json))"; fi

# streamed over HTTPS: every event parses, [DONE] last, the deltas make the plain text
sreq='{"messages":[{"role":"user","content":"Tell me about the fox"}],"max_tokens":24,"temperature":0,"stream":true}'
C --cacert cert.pem -N -o tls_sse.txt -d "$sreq" "$TLS/v1/chat/completions"
s=$(python3 - tls_sse.txt <<'PY'
import json, sys
t = open(sys.argv[1], encoding="utf-8").read()
if not t.endswith("data: [DONE]\n\n"): sys.exit("no [DONE] at the end")
ev = [e for e in t.split("\n\n") if e][:-1]
print("".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in ev), end="")
PY
)
[ -n "$s" ] && [ "$s" = "$b" ] && ok "a streamed reply over HTTPS arrives whole (== the plain text)" \
  || bad "stream over HTTPS '$s' != '$b': $(head -c 300 tls_sse.txt)"

# the key, the page, /metrics
code=$(curl -s --max-time 10 --cacert cert.pem -o /dev/null -w '%{http_code}' "$TLS/v1/models")
[ "$code" = 401 ] && ok "no key over HTTPS: 401" || bad "no key over HTTPS: $code"
code=$(C --cacert cert.pem -o models.json -w '%{http_code}' "$TLS/v1/models")
[ "$code" = 200 ] && grep -q '"tiny.gguf"' models.json && ok "the key over HTTPS: 200 /v1/models" || bad "/v1/models: $code"
code=$(curl -s --max-time 10 --cacert cert.pem -o page.html -w '%{http_code} %{content_type}' "$TLS/")
case $code in "200 text/html"*) grep -q '<script>' page.html && ok "the web UI page over HTTPS" || bad "page body" ;; *) bad "GET /: $code" ;; esac
C --cacert cert.pem -o metrics.txt "$TLS/metrics"
grep -q '^tern_' metrics.txt && ok "/metrics over HTTPS" || bad "/metrics: $(head -c 200 metrics.txt)"

# Python's urllib with the CA
py=$(python3 - "$TLS" cert.pem "$KEY" <<'PY' 2>&1
import json, ssl, sys, urllib.request
url, ca, key = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)
r = urllib.request.Request(url + "/v1/models", headers={"Authorization": "Bearer " + key})
with urllib.request.urlopen(r, context=ctx, timeout=30) as f:
    print(json.load(f)["data"][0]["id"], end="")
PY
)
[ "$py" = tiny.gguf ] && ok "python urllib + ssl with the CA" || bad "python urllib: $py"

# the OpenAI Node client trusting the CA through NODE_EXTRA_CA_CERTS
if command -v node >/dev/null 2>&1 && [ -f "$NODE_DIR/node_modules/openai/package.json" ]; then
  cat >client.mjs <<'JS'
import { createRequire } from 'node:module';
import { join } from 'node:path';
const [nodeDir, baseURL, apiKey] = process.argv.slice(2);
const OpenAI = createRequire(join(nodeDir, 'package.json'))('openai');
const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey, maxRetries: 0, timeout: 60000 });
const r = await client.chat.completions.create({ model: 'tiny.gguf', max_tokens: 24, temperature: 0,
  messages: [{ role: 'user', content: 'Tell me about the fox' }] });
process.stdout.write(r.choices[0].message.content);
JS
  js=$(NODE_EXTRA_CA_CERTS="$tmp/cert.pem" timeout 60 node client.mjs "$NODE_DIR" "$TLS" "$KEY" 2>&1)
  [ "$js" = "$b" ] && ok "the OpenAI Node client over HTTPS == curl over HTTP" || bad "node client: '$js' != '$b'"
else
  echo "skip - the OpenAI Node client (node or the npm package missing)"
fi

# plain HTTP to the HTTPS port fails (no HTTP reply), and the server goes on
code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://${TLS#https://}/health"); rc=$?
[ $rc != 0 ] && [ "$code" = 000 ] && ok "plain HTTP to the HTTPS port gets no reply (curl exit $rc)" \
  || bad "plain HTTP to the HTTPS port: exit $rc, status $code"
[ "$(curl -s --max-time 10 --cacert cert.pem "$TLS/health")" = '{"status":"ok"}' ] && kill -0 "$S_TLS" \
  && ok "the HTTPS server serves on after it" || bad "the HTTPS server after a plain HTTP client"

# SIGTERM: both stop cleanly
for p in "$S_TLS" "$S_HTTP"; do
  kill -TERM "$p"
  wait_exit "$p" 30
  wait "$p"; rc=$?
  [ $rc = 0 ] && ok "SIGTERM: exit 0" || bad "SIGTERM: exit $rc"
done

# an encrypted key, its password from the environment (kept out of ps)
TERN_ARG_SSL_KEY_PASSWORD=s3cret start_serve enc -m "$M" -t 1 -np 1 -c 256 --ssl-key-file enc_key.pem \
  --ssl-cert-file cert.pem || bad "the server with an encrypted key did not start: $(cat "$tmp/enc.log")"
if wait_health "$URL" 30 --cacert cert.pem; then ok "an encrypted key with TERN_ARG_SSL_KEY_PASSWORD serves HTTPS"
else bad "encrypted key: /health never answered: $(tail -3 "$tmp/enc.log")"; fi

if grep -q -E 'Sanitizer|runtime error' "$tmp"/*.log; then
  bad "sanitizer reports: $(grep -A8 -E 'Sanitizer|runtime error' "$tmp"/*.log | head -30)"
fi
finish 20
