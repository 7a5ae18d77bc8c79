#!/usr/bin/env bash
# tern under mpirun (Open MPI) on one machine: 1 coordinator + 1, 2, 3 worker ranks, MPMD
# (`tern run --mpi : tern worker --mpi`) and SPMD (`mpirun -np N tern run --mpi`), generate
# exactly the tokens of one process (greedy and seeded); only the coordinator writes to stdout;
# `tern serve --mpi` answers HTTP and stops on SIGTERM; a worker that cannot load ends the job
# with its error, not a hang; `tern perplexity --mpi` gives one process's numbers (and `tern embed --mpi` its vectors); `tern run --prompt-cache` restores and saves through the ranks; --mpi without mpirun and mpirun without --mpi say what to do.
# Also runs test_mpi_transport on 3 ranks. Skips when mpirun is missing. Every job is bounded
# by timeout and killed on exit.
source "$(dirname "$0")/lib.bash"
if ! command -v mpirun >/dev/null 2>&1; then echo "mpirun not found: skipped (apt install openmpi-bin)"; exit 0; fi
if "$TERN" run --mpi -m /dev/null -p x 2>&1 | grep -q "built without MPI"; then echo "tern built without MPI: skipped"; exit 0; fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# no ptrace-based single copy (often refused in containers); quiet about missing fabrics
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_btl_base_warn_component_unused=0
# sanitizer builds: Open MPI's own allocations outlive MPI_Finalize by design
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
MPIRUN=(mpirun --oversubscribe --bind-to none)

M="$tmp/m.gguf"
make_model "$M" --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s --seed 11
M2="$tmp/m2.gguf"
make_model "$M2" --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s --seed 12

P="Hello world, this is tern"
GEN=(--no-display-prompt --summary=0 -p "$P" -n 16 -t 1)
run1() { timeout 120 "$TERN" run -m "$M" "${GEN[@]}" "$@" 2>>"$tmp/run.log"; }
# mpmd NWORKERS SAMPLING...: coordinator + N `tern worker --mpi`
mpmd() { local n=$1; shift; timeout 120 "${MPIRUN[@]}" -np 1 "$TERN" run -m "$M" --mpi "${GEN[@]}" "$@" : \
           -np "$n" "$TERN" worker --mpi -m "$M" -t 1 2>>"$tmp/mpi.log"; }
spmd() { local n=$1; shift; timeout 120 "${MPIRUN[@]}" -np "$n" "$TERN" run -m "$M" --mpi "${GEN[@]}" "$@" 2>>"$tmp/mpi.log"; }

# ---- the transport's own test on 3 ranks ---------------------------------------------------
UT="${TERN_BUILD:-$(dirname "$TERN")}/test_mpi_transport"
if [ -x "$UT" ]; then
  out=$(timeout 120 "${MPIRUN[@]}" -np 3 "$UT" 2>&1); rc=$?
  [ $rc -eq 0 ] && echo "$out" | grep -q "0 failed" && ok "test_mpi_transport on 3 ranks ($(echo "$out" | grep -o 'latency.*' | head -1))" \
    || bad "test_mpi_transport on 3 ranks (rc $rc): $(echo "$out" | tail -20)"
fi

# ---- tokens equal one process ----------------------------------------------------------------
for samp in "--temp 0" "--temp 0.9 -s 7 --top-k 20"; do
  ref=$(run1 $samp)
  [ -n "$ref" ] || bad "single-process run ($samp) printed nothing"
  for n in 1 2 3; do
    got=$(mpmd $n $samp)
    [ "$got" == "$ref" ] && ok "MPMD 1 + $n workers == one process ($samp)" || bad "MPMD 1 + $n ($samp): '$got' != '$ref'"
  done
  got=$(spmd 4 $samp)
  [ "$got" == "$ref" ] && ok "SPMD -np 4 == one process ($samp)" || bad "SPMD -np 4 ($samp): '$got' != '$ref'"
done
# perplexity under mpirun (SPMD, 3 ranks = 2 workers): one process's numbers
txt="$tmp/ppl.txt"
for i in $(seq 1 30); do echo "Line $i: the cat sat on the mat, and the dog ran after the ball."; done >"$txt"
pref=$(timeout 120 "$TERN" perplexity -m "$M" -f "$txt" -c 32 -b 8 -t 1 2>/dev/null | grep '^Final')
got=$(timeout 120 "${MPIRUN[@]}" -np 3 "$TERN" perplexity --mpi -m "$M" -f "$txt" -c 32 -b 8 -t 1 2>>"$tmp/mpi.log" | grep '^Final')
[ -n "$pref" ] && [ "$got" == "$pref" ] && ok "SPMD -np 3 perplexity == one process ($got)" || bad "SPMD perplexity: '$got' vs '$pref'"
# embeddings under mpirun (the last stage's rows travel as an extra MPI message): one process's bits
eref=$(timeout 120 "$TERN" embed -m "$M" -p "$P" -p "tern" -t 1 2>/dev/null)
got=$(timeout 120 "${MPIRUN[@]}" -np 3 "$TERN" embed --mpi -m "$M" -p "$P" -p "tern" -t 1 -b 4 2>>"$tmp/mpi.log")
[ -n "$eref" ] && [ "$got" == "$eref" ] && ok "SPMD -np 3 embed == one process" || bad "SPMD embed differs"
# --prompt-cache under mpirun: a file one process saved restores into 2 worker ranks (the rows go as
# KvWrite messages with raw frames), the text that of a run without it; saving from ranks gives
# one process's file byte for byte
P2="$P, and a longer prompt that goes on"
run1 --temp 0 --prompt-cache "$tmp/pc1.bin" >/dev/null
pref=$(run1 --temp 0 -p "$P2")
got=$(timeout 120 "${MPIRUN[@]}" -np 1 "$TERN" run -m "$M" --mpi "${GEN[@]}" --temp 0 -p "$P2" --summary=1 \
      --prompt-cache "$tmp/pc1.bin" --prompt-cache-ro : -np 2 "$TERN" worker --mpi -m "$M" -t 1 2>"$tmp/pcm.err")
mpmd 2 --temp 0 --prompt-cache "$tmp/pcm.bin" >/dev/null
[ -n "$pref" ] && [ "$got" == "$pref" ] && grep -Eq '^prompt cache = [0-9]+ tokens restored, [1-9][0-9]* of them reused' "$tmp/pcm.err" \
  && cmp -s "$tmp/pc1.bin" "$tmp/pcm.bin" \
  && ok "--prompt-cache: one process's file restores into MPMD 1 + 2 ranks (same text), and the ranks save the same file" \
  || bad "--prompt-cache under mpirun: '$got' vs '$pref': $(grep -v ' [DI] ' "$tmp/pcm.err" | tail -3)"
# workers without -m take the coordinator's model path; two sequences in micro-batches
ref=$(run1 --temp 0 -np 2 -b 4)
got=$(timeout 120 "${MPIRUN[@]}" -np 1 "$TERN" run -m "$M" --mpi "${GEN[@]}" --temp 0 -np 2 -b 4 : -np 2 "$TERN" worker --mpi -t 1 2>>"$tmp/mpi.log")
[ "$got" == "$ref" ] && ok "workers without -m, micro-batches of 4 == one process" || bad "workers without -m: '$got' != '$ref'"
# workers with no file of their own fetch their layers from rank 0 over MPI
got=$(timeout 120 "${MPIRUN[@]}" -np 1 "$TERN" run -m "$M" --mpi "${GEN[@]}" --temp 0 : -np 2 "$TERN" worker --mpi --fetch-weights --cache-dir "$tmp/wcache" -t 1 2>>"$tmp/mpi.log")
ref=$(run1 --temp 0)
[ "$got" == "$ref" ] && ls "$tmp/wcache"/*.gguf >/dev/null 2>&1 && ok "--fetch-weights over MPI == one process" || bad "--fetch-weights over MPI: '$got' != '$ref'"
# a cluster file with transport: mpi (workers without endpoints are the ranks in order)
cat >"$tmp/c.yaml" <<YAML
transport: mpi
workers:
  - { name: first }
  - { name: second, layers: [2, 2] }
YAML
ref=$(run1 --temp 0)
got=$(timeout 120 "${MPIRUN[@]}" -np 1 "$TERN" run -m "$M" --mpi --cluster "$tmp/c.yaml" "${GEN[@]}" --temp 0 : -np 2 "$TERN" worker --mpi -t 1 2>"$tmp/cf.log")
[ "$got" == "$ref" ] && grep -q "second" "$tmp/cf.log" && ok "cluster file with transport: mpi, pinned layers" || bad "cluster file mpi: '$got' != '$ref': $(tail -5 "$tmp/cf.log")"

# ---- serve over MPI: HTTP completion == tern run, SIGTERM ends the job ------------------------
"${MPIRUN[@]}" -np 1 "$TERN" serve -m "$M" --mpi --host 127.0.0.1 --port 0 -t 1 : -np 3 "$TERN" worker --mpi -m "$M" -t 1 \
  >"$tmp/serve.out" 2>"$tmp/serve.log" &
SP=$!; pids+=($SP)
port=$(serve_port "$tmp/serve.log")
if [ -n "$port" ]; then
  wait_health "http://127.0.0.1:$port"
  curl -s --max-time 60 -H 'Content-Type: application/json' "http://127.0.0.1:$port/v1/completions" \
    -d "{\"prompt\":\"$P\",\"max_tokens\":16,\"temperature\":0}" >"$tmp/c.json"
  run1 --temp 0 >"$tmp/run.raw"
  # tern run's stdout decoded as the server does (invalid UTF-8 -> U+FFFD), final newline dropped
  ref=$(python3 -c 'import sys; r=open(sys.argv[1],"rb").read(); r=r[:-1] if r.endswith(b"\n") else r; sys.stdout.buffer.write(r.decode("utf-8","replace").encode())' "$tmp/run.raw")
  got=$(python3 -c 'import json,sys; sys.stdout.buffer.write(json.load(open(sys.argv[1]))["choices"][0]["text"].encode())' "$tmp/c.json" 2>/dev/null)
  [ -n "$got" ] && [ "$got" == "$ref" ] && ok "serve --mpi + 3 workers: completion == tern run" \
    || bad "serve --mpi completion '$got' vs '$ref': $(cat "$tmp/c.json")"
  kill -TERM $SP
  if ! wait_exit $SP 15; then bad "serve --mpi still running 15 s after SIGTERM"; kill -KILL $SP; else ok "serve --mpi job ended on SIGTERM"; fi
  [ ! -s "$tmp/serve.out" ] || ! grep -q '^ready ' "$tmp/serve.out" && ok "workers wrote nothing to stdout" \
    || bad "worker output on stdout: $(head -3 "$tmp/serve.out")"
else
  bad "serve --mpi did not start: $(tail -20 "$tmp/serve.log")"
fi

# ---- failures end the job with the reason -------------------------------------------------------
t0=$(date +%s)
out=$(timeout 60 "${MPIRUN[@]}" -np 1 "$TERN" run -m "$M" --mpi "${GEN[@]}" : -np 2 "$TERN" worker --mpi -m "$M2" -t 1 2>&1); rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "$out" | grep -qi "mismatch" && ok "worker with another model: job stops with 'mismatch' (rc $rc)" \
  || bad "model mismatch (rc $rc): $(echo "$out" | tail -5)"
out=$(timeout 60 "${MPIRUN[@]}" -np 1 "$TERN" run -m "$M" --mpi "${GEN[@]}" : -np 2 "$TERN" worker --mpi -m "$tmp/none.gguf" -t 1 2>&1); rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "$out" | grep -q "none.gguf" && ok "worker without its model file: job stops naming the file (rc $rc)" \
  || bad "missing worker model (rc $rc): $(echo "$out" | tail -5)"
out=$(timeout 60 "${MPIRUN[@]}" -np 1 "$TERN" worker --mpi -m "$M" : -np 1 "$TERN" run -m "$M" --mpi "${GEN[@]}" 2>&1); rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "$out" | grep -q "rank 0 must be the coordinator" && ok "worker as rank 0: told to put the coordinator first" \
  || bad "worker as rank 0 (rc $rc): $(echo "$out" | tail -5)"
out=$(timeout 60 "${MPIRUN[@]}" -np 1 "$TERN" run -m "$M" --mpi "${GEN[@]}" 2>&1); rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "$out" | grep -q "only the coordinator" && ok "no worker ranks: clear error" || bad "no worker ranks (rc $rc): $(echo "$out" | tail -3)"
echo "failure cases took $(( $(date +%s) - t0 )) s"

# ---- advice: --mpi without mpirun, mpirun without --mpi --------------------------------------------
out=$(timeout 20 "$TERN" run -m "$M" --mpi -p hi -n 2 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "not started by mpirun" && ok "--mpi without mpirun: $(echo "$out" | tail -1 | cut -c1-100)..." || bad "--mpi without mpirun (rc $rc): $out"
out=$(timeout 20 "$TERN" worker --mpi -m "$M" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "not started by mpirun" && ok "worker --mpi without mpirun" || bad "worker --mpi without mpirun (rc $rc): $out"
out=$(timeout 60 "${MPIRUN[@]}" -np 2 "$TERN" run -m "$M" "${GEN[@]}" 2>&1); rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "$out" | grep -q "add --mpi" && ok "mpirun without --mpi: told to add --mpi" || bad "mpirun without --mpi (rc $rc): $(echo "$out" | tail -3)"
out=$(timeout 60 "${MPIRUN[@]}" -np 1 "$TERN" run -m "$M" "${GEN[@]}" : -np 1 "$TERN" worker -m "$M" 2>&1); rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "$out" | grep -q "add --mpi" && ok "MPMD without --mpi: told to add --mpi" || bad "MPMD without --mpi (rc $rc): $(echo "$out" | tail -3)"

# ---- NUMA: binding calls succeed and report the right node ---------------------------------------
out=$(timeout 60 "${MPIRUN[@]}" -np 1 "$TERN" run -m "$M" --mpi "${GEN[@]}" --temp 0 : -np 1 "$TERN" worker --mpi --numa auto -t 1 2>&1); rc=$?
[ $rc -eq 0 ] && echo "$out" | grep -q "numa: node 0 of" && ok "worker --numa auto under mpirun: $(echo "$out" | grep -o 'numa: node.*' | head -1 | cut -c1-90)" \
  || bad "--numa auto (rc $rc): $(echo "$out" | tail -5)"
# mpirun's own binding (--bind-to core) is detected and kept: one CPU, one thread
out=$(timeout 60 mpirun --oversubscribe --bind-to core -np 1 "$TERN" run -m "$M" --mpi "${GEN[@]}" --temp 0 : -np 1 "$TERN" worker --mpi --numa auto 2>&1); rc=$?
[ $rc -eq 0 ] && echo "$out" | grep -q "binding from the launcher" && echo "$out" | grep -q "(1 threads" \
  && ok "--numa auto keeps mpirun --bind-to core" || bad "--numa under --bind-to core (rc $rc): $(echo "$out" | grep -a numa)"

finish 30
