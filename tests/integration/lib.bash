# lib.bash: the preamble and helpers shared by tests/integration/*.sh (sourced, never run: its
# name does not end in .sh, so CMake makes no test of it). Sourcing it sets -u, TERN (from
# $TERN_BIN), a fresh temp dir $tmp, the pids array, the pass/fail counters, PYTHONPATH (for
# httpcheck.py, the Python checkers' helpers beside it), and traps: on any exit (an early
# `exit 1`, INT and TERM included) cleanup stops every pid in pids and removes $tmp.
# A script with more to undo traps its own function, which calls cleanup last.
set -u
TERN="${TERN_BIN:?TERN_BIN not set}"
tmp=$(mktemp -d)
pids=()
pass=0 fail=0
LOOPBACK_ANY='tcp://127.0.0.1:*'   # a --listen on loopback, any free port
# the Python checkers import httpcheck.py from this folder (without writing __pycache__ into it)
PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH PYTHONDONTWRITEBYTECODE=1

# cleanup: SIGCONT then SIGTERM to every pid in pids, SIGKILL to those still running 5 s later;
# waits for all children; removes $tmp (keeps it and says so when TERN_KEEP_TMP is set)
cleanup() {
  local p alive
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 1 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ -n "${TERN_KEEP_TMP:-}" ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# ok TEXT: counts a passed check and prints "ok   - TEXT"
ok() { pass=$((pass+1)); echo "ok   - $*"; }
# bad TEXT: counts a failed check and prints "FAIL - TEXT"
bad() { fail=$((fail+1)); echo "FAIL - $*"; }
# die TEXT: prints TEXT and exits 1 (cleanup still runs)
die() { echo "$*"; exit 1; }
# count_checks: reads a checker's output on stdin: "ok   TEXT" counts as ok TEXT, "FAIL TEXT" as
# bad TEXT (httpcheck.say writes them), other lines are echoed. Feed it with < <(...), not a
# pipe, so that the counts stay in this shell.
count_checks() {
  local line
  while IFS= read -r line; do
    case "$line" in
      "ok   "*) ok "${line#ok   }" ;;
      "FAIL "*) bad "${line#FAIL }" ;;
      *) echo "$line" ;;
    esac
  done
}

# finish [LINES [FILE...]]: if a check failed and LINES is given, prints "--- logs" and the last
# LINES lines of each FILE (default $tmp/*.log); then "N passed, M failed"; returns 1 if a check
# failed, so it is the script's last command
finish() {
  if [ $fail -ne 0 ] && [ $# -gt 0 ]; then
    local n=$1
    shift
    [ $# -gt 0 ] || set -- "$tmp"/*.log
    echo "--- logs"
    tail -n "$n" "$@" 2>/dev/null
  fi
  echo "$pass passed, $fail failed"
  [ $fail -eq 0 ]
}

# make_model OUT ARGS...: `tern mkmodel ARGS... -o OUT` (at most 120 s); exits 1 with its
# messages when it fails
make_model() {
  local out=$1
  shift
  TERN_PROGRESS=0 timeout 120 "$TERN" mkmodel "$@" -o "$out" >/dev/null 2>"$tmp/mk.log" \
    || die "mkmodel failed: $(cat "$tmp/mk.log")"
}

# now: the time in seconds, with nanoseconds (for since)
now() { date +%s.%N; }
# since T0: the seconds from T0 (a `now`) to now, with 2 decimals
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# wait_bytes FILE N: waits until FILE has at least N bytes (at most 30 s); returns 1 if it never did
wait_bytes() { for _ in $(seq 1 600); do [ "$(stat -c %s "$1" 2>/dev/null || echo 0)" -ge "$2" ] && return 0; sleep 0.05; done; return 1; }
# wait_line FILE REGEX [SECONDS]: waits until FILE has a line matching REGEX (at most SECONDS,
# default 20); returns 1 if it never did
wait_line() { local n=$(( ${3:-20} * 20 )); for _ in $(seq 1 $n); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; return 1; }
# wait_exit PID SECONDS: waits until process PID has ended (at most SECONDS); returns 1 if it still runs
wait_exit() {
  local n=$(( $2 * 20 ))
  for _ in $(seq 1 $n); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
  ! kill -0 "$1" 2>/dev/null
}

# spawn_worker NAME LISTEN ARGS...: starts `tern worker --listen LISTEN --name NAME ARGS...` in
# the background (stdout to $tmp/NAME.out, emptied first; stderr appended to $tmp/NAME.log) and
# adds it to pids; sets WPID. Call it in this shell, not in $(...), so cleanup knows the pid.
spawn_worker() {
  local name=$1 listen=$2
  shift 2
  : >"$tmp/$name.out"
  "$TERN" worker --listen "$listen" --name "$name" "$@" >"$tmp/$name.out" 2>>"$tmp/$name.log" &
  WPID=$!
  pids+=("$WPID")
}
# endpoint NAME [SECONDS]: waits (at most SECONDS, default 10) for worker NAME's "ready ENDPOINT"
# line; prints ENDPOINT (nothing if it did not come)
endpoint() {
  wait_line "$tmp/$1.out" '^ready ' "${2:-10}"
  sed -n 's/^ready //p' "$tmp/$1.out" | head -1
}
# start_worker NAME LISTEN ARGS...: spawn_worker, then waits for it to be ready; sets WPID and
# EP (empty if it was not ready in 10 s, and then returns 1)
start_worker() {
  spawn_worker "$@"
  EP=$(endpoint "$1")
  [ -n "$EP" ]
}

# serve_port LOG [PID]: waits (at most 30 s; less if process PID ends) for "listening on
# http://127.0.0.1:PORT" (or https://) in LOG; prints PORT (nothing if it did not come)
serve_port() {
  local port=""
  for _ in $(seq 1 300); do
    port=$(grep -o 'listening on https\?://127.0.0.1:[0-9]*' "$1" 2>/dev/null | head -1 | sed 's/.*://')
    [ -n "$port" ] && break
    if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "$port"
}
# wait_health URL [SECONDS [CURL_ARGS...]]: waits until URL/health answers 200 (at most SECONDS,
# default 10; CURL_ARGS e.g. --cacert FILE for https); returns 1 if it never did
wait_health() {
  local url=$1 n=$(( ${2:-10} * 10 ))
  shift $(( $# < 2 ? $# : 2 ))
  for _ in $(seq 1 $n); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url/health")" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}
# start_serve NAME ARGS...: starts `tern serve --host 127.0.0.1 --port 0 ARGS...` in the
# background (stderr to $tmp/NAME.log) and adds it to pids; sets SPID and URL (https:// when
# it serves TLS); returns 1 if it was not listening within 30 s (it does not wait for /health:
# see wait_health)
start_serve() {
  local name=$1 port
  shift
  "$TERN" serve --host 127.0.0.1 --port 0 "$@" 2>"$tmp/$name.log" &
  SPID=$!
  pids+=("$SPID")
  port=$(serve_port "$tmp/$name.log" "$SPID")
  URL="http://127.0.0.1:$port"
  grep -q 'listening on https://' "$tmp/$name.log" && URL="https://127.0.0.1:$port"
  [ -n "$port" ]
}
# serve_ready NAME ARGS...: start_serve NAME ARGS..., then wait_health (at most 30 s); exits 1
# with NAME's log when either fails; sets SPID and URL
serve_ready() {
  start_serve "$@" || die "serve $1 did not start: $(cat "$tmp/$1.log")"
  wait_health "$URL" 30 || die "serve $1 not healthy: $(tail -5 "$tmp/$1.log")"
}
