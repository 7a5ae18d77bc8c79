#!/usr/bin/env bash
# llama.cpp's memory flags on real processes: --no-mmap (tensors read with pread) gives the same
# greedy text as the mapped file, in one process and on a 2-worker cluster whose workers run
# --no-mmap --mlock (each logs the bytes it locked); -tb (prompt threads) against -t gives the
# same text whatever the split; the coordinator's --mlock and -tb reach workers started without
# their own (each logs the threads-batch it uses; a worker's own -tb wins); a draft model (-md)
# is read and locked under --no-mmap --mlock with the same text; out-of-range values are one-line
# errors.
source "$(dirname "$0")/lib.bash"

M="$tmp/m.gguf"
make_model "$M" --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s --seed 11

run() { timeout 120 "$TERN" run -m "$M" --no-display-prompt --summary=0 -p "Hello world, this is tern" -n 24 --temp 0 "$@" 2>>"$tmp/run.log"; }

ref=$(run -t 2)
[ -n "$ref" ] && ok "reference run" || bad "the reference run printed nothing"
got=$(run -t 2 --no-mmap)
[ "$got" == "$ref" ] && ok "--no-mmap == mmap" || bad "--no-mmap: '$got' != '$ref'"
TERN_PROGRESS=1 timeout 60 "$TERN" run -m "$M" -p hi -n 1 --no-mmap 2>&1 >/dev/null | grep -aq "reading layers: 100" \
  && ok "--no-mmap shows its progress" || bad "--no-mmap showed no progress line"
got=$(run -t 2 --no-mmap --mlock --stages 2)
[ "$got" == "$ref" ] && ok "--no-mmap --mlock, 2 in-process stages == mmap" || bad "--no-mmap --mlock --stages 2: '$got' != '$ref'"
grep -q -- "--mlock: locked .* (layers \[" "$tmp/run.log" && grep -q -- "--mlock: locked .* (token embeddings)" "$tmp/run.log" \
  && ok "--mlock logs what it locked" || bad "no --mlock line in the log: $(grep -i mlock "$tmp/run.log")"

# llama with rope_freqs.weight and a tied head: every tensor reader (embeddings on the coordinator,
# the RoPE factors, norms, the lm head) works on read bytes
L="$tmp/l.gguf"
make_model "$L" --arch llama --preset tiny --layers 3 --type tq2_0 --rope-freqs 8 --seed 3
lref=$(run -m "$L" -t 2)
got=$(run -m "$L" -t 2 --no-mmap --stages 3)
[ -n "$lref" ] && [ "$got" == "$lref" ] && ok "llama + rope_freqs, --no-mmap in 3 stages == mmap" || bad "llama --no-mmap: '$got' != '$lref'"

for t in "-tb 1 -t 2" "-tb 2 -t 1" "-tb 2 -t 2"; do
  got=$(run $t)
  [ "$got" == "$ref" ] && ok "$t == default" || bad "$t: '$got' != '$ref'"
done

start_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1 --no-mmap --mlock; W1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$M" -t 1 -tb 2 --no-mmap --mlock; W2=$EP
[ -n "$W1" ] && [ -n "$W2" ] || { echo "workers did not start"; cat "$tmp"/*.log; exit 1; }
got=$(run --workers "$W1,$W2")
[ "$got" == "$ref" ] && ok "2 workers --no-mmap --mlock == one process" || bad "cluster: '$got' != '$ref'"
for w in w1 w2; do
  line=$(grep -- "--mlock: locked" "$tmp/$w.log" | tail -1)
  [ -n "$line" ] && ok "$w: ${line##*I }" || bad "$w logged no locked bytes: $(tail -3 "$tmp/$w.log")"
done
# the coordinator's --mlock reaches workers started without it (LoadShard.mlock)
start_worker w3 "$LOOPBACK_ANY" -m "$M" -t 1; W3=$EP
got=$(run --workers "$W3" --mlock)
[ "$got" == "$ref" ] && grep -q -- "--mlock: locked" "$tmp/w3.log" && ok "--mlock passed on to a worker" \
  || bad "--mlock on the coordinator: '$got', worker log: $(tail -3 "$tmp/w3.log")"
# the coordinator's -tb reaches workers without their own (LoadShard.threads_batch); a worker's own -tb wins
got=$(run --workers "$W3" -tb 2)
line=$(grep "threads-batch" "$tmp/w3.log" | tail -1)
[ "$got" == "$ref" ] && [[ "$line" == *"threads-batch 2 (the coordinator's -tb)"* ]] && ok "-tb passed on to a worker: ${line##*I }" \
  || bad "-tb 2 on the coordinator: '$got', worker log: $(tail -3 "$tmp/w3.log")"
got=$(run --workers "$W1,$W2" -tb 3)
l1=$(grep "threads-batch" "$tmp/w1.log" | tail -1) l2=$(grep "threads-batch" "$tmp/w2.log" | tail -1)
[ "$got" == "$ref" ] && [[ "$l1" == *"threads-batch 3 (the coordinator's -tb)"* ]] \
  && [[ "$l2" == *"threads-batch 2 (this worker's -tb; the coordinator's is 3)"* ]] \
  && ok "-tb 3: w1 (none of its own) ${l1##*I }, w2 (-tb 2) ${l2##*I }" || bad "-tb 3 on 2 workers: '$got', w1: $l1, w2: $l2"
got=$(run --workers "$W3")
line=$(grep "threads-batch\|loaded layers" "$tmp/w3.log" | tail -1)
[ "$got" == "$ref" ] && [[ "$line" == *"loaded layers"* ]] && ok "no -tb anywhere: the worker's -t pool (no threads-batch line)" \
  || bad "no -tb after -tb 2: '$got', worker log: $(tail -3 "$tmp/w3.log")"

# the cluster file's `threads` sizes a worker's pool (LoadShard.threads); a worker's own -t wins
start_worker w4 "$LOOPBACK_ANY" -m "$M"; W4=$EP
ft=$(( $(nproc) + 1 ))   # not the all-cores pool it starts with
cat > "$tmp/threads.yaml" <<YAML
workers:
  - { name: w4, endpoint: "$W4", threads: $ft, layers: [0, 1] }
  - { name: w3, endpoint: "$W3", threads: $ft }
YAML
got=$(run --cluster "$tmp/threads.yaml")
l4=$(grep "threads $ft\|threads [0-9]* (" "$tmp/w4.log" | tail -1) l3=$(grep "(this worker's -t" "$tmp/w3.log" | tail -1)
[ "$got" == "$ref" ] && [[ "$l4" == *"threads $ft (the cluster file's)"* ]] \
  && [[ "$l3" == *"threads 1 (this worker's -t; the cluster file's is $ft)"* ]] \
  && ok "cluster file threads: w4 ${l4##*I }, w3 (-t 1) ${l3##*I }" || bad "cluster file threads: '$got', w4: $l4, w3: $l3"

# the draft model (-md) follows --no-mmap and --mlock like the model
D="$tmp/d.gguf"
make_model "$D" --arch llama --preset tiny --layers 2 --type tq2_0 --seed 12 --vocab "$M"
got=$(run -t 2 -md "$D")
[ "$got" == "$ref" ] && ok "-md: the greedy text" || bad "-md: '$got' != '$ref'"
got=$(run -t 2 -md "$D" --no-mmap --mlock)
line=$(grep "draft model" "$tmp/run.log" | tail -1)
[ "$got" == "$ref" ] && [[ "$line" == *"read into memory (--no-mmap)" ]] && grep -q -- "--mlock: locked .* (draft token embeddings)" "$tmp/run.log" \
  && ok "-md --no-mmap --mlock == -md: ${line##*I }, its embeddings locked" || bad "-md --no-mmap --mlock: '$got' != '$ref', log: $line"

# --fetch-weights workers keep their cache file unmapped; the coordinator serves chunks it reads
start_worker f1 "$LOOPBACK_ANY" --fetch-weights --cache-dir "$tmp/cache-f1" -t 1 --no-mmap; F1=$EP
start_worker f2 "$LOOPBACK_ANY" --fetch-weights --cache-dir "$tmp/cache-f2" -t 1 --no-mmap --mlock; F2=$EP
got=$(run --no-mmap --workers "$F1,$F2")
[ "$got" == "$ref" ] && ok "--fetch-weights --no-mmap workers, --no-mmap coordinator == one process" || bad "fetch: '$got' != '$ref'"

for bad_arg in "-tb -1" "-tb 2000"; do
  out=$(timeout 20 "$TERN" run -m "$M" -p hi -n 1 $bad_arg 2>&1); rc=$?
  [ $rc -ne 0 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && ok "run $bad_arg: $out" || bad "run $bad_arg (rc $rc): $out"
  out=$(timeout 20 "$TERN" worker --listen "$LOOPBACK_ANY" -m "$M" $bad_arg 2>&1); rc=$?
  [ $rc -ne 0 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && ok "worker $bad_arg: $out" || bad "worker $bad_arg (rc $rc): $out"
done
finish 30
