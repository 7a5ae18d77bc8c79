#!/usr/bin/env bash
# CURVE on every cluster link, with real processes on loopback: `tern keygen` writes the key
# pairs; a cluster file with security: {curve: true, keys: DIR} generates the same tokens as one
# process (greedy and seeded) through two workers started with --keys DIR; a worker whose key
# is not the one the coordinator has, a worker that does not know the coordinator's key, and a
# coordinator with a stranger's key are all refused with a clear message (and the refusal is
# logged by the worker). Every process is killed on exit.
source "$(dirname "$0")/lib.bash"

curve_worker() {   # name keydir -> sets EP; exits when the worker does not start
  start_worker "$1" "$LOOPBACK_ANY" -m "$M" -t 1 --keys "$2" || die "worker $1 did not start: $(cat "$tmp/$1.log")"
}
cluster() {   # file keydir name=endpoint...
  local f=$1 keys=$2
  shift 2
  { echo "model: $M"; echo "security: { curve: true, keys: \"$keys\" }"; echo "workers:"
    for nv in "$@"; do echo "  - { name: ${nv%%=*}, endpoint: \"${nv#*=}\" }"; done; } >"$f"
}

M="$tmp/m.gguf"
make_model "$M" --arch bitnet-b1.58 --preset tiny --layers 3 --type i2_s --seed 11
K="$tmp/keys"
mkdir -p "$K"
for n in coordinator w1 w2; do
  "$TERN" keygen -o "$K/$n" >"$tmp/keygen.out" 2>&1 || { bad "keygen $n: $(cat "$tmp/keygen.out")"; }
done
[ -s "$K/w1.pub" ] && [ "$(stat -c %a "$K/w1.key")" = 600 ] && ok "tern keygen wrote key pairs (secret keys mode 0600)" || bad "keygen files"

curve_worker w1 "$K"; W1=$EP
curve_worker w2 "$K"; W2=$EP
run() { timeout 60 "$TERN" run -m "$M" --no-display-prompt --summary=0 -t 1 -p "Hello world, this is tern" -n 24 "$@"; }

cluster "$tmp/c.yaml" "$K" "w1=$W1" "w2=$W2"
for samp in "--temp 0" "--temp 0.9 -s 7 --top-k 20"; do
  ref=$(run $samp 2>/dev/null)
  got=$(run $samp --cluster "$tmp/c.yaml" 2>"$tmp/run.log")
  [ -n "$ref" ] && [ "$got" == "$ref" ] && ok "CURVE cluster of 2 == one process ($samp)" || bad "CURVE cluster ($samp): '$got' != '$ref': $(tail -3 "$tmp/run.log")"
done
grep -q "CURVE on" "$tmp/run.log" && ok "coordinator reports CURVE on" || bad "no 'CURVE on' in the coordinator log"

# a worker with a key pair the coordinator does not have (KEYS/w3.pub is another key)
K2="$tmp/keys2"
mkdir -p "$K2"
"$TERN" keygen -o "$K2/w3" >/dev/null 2>&1
cp "$K/coordinator.pub" "$K2/"
curve_worker w3 "$K2"; W3=$EP
cluster "$tmp/nokey.yaml" "$K" "w1=$W1" "w3=$W3"
out=$(run --temp 0 --cluster "$tmp/nokey.yaml" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "no public key for worker w3" && ok "worker without a key in KEYS: $(echo "$out" | tail -1)" \
  || bad "worker without a key (rc $rc): $out"
"$TERN" keygen -o "$K/w3" >/dev/null 2>&1   # a w3.pub that is not the worker's
t0=$(date +%s)
out=$(run --temp 0 --cluster "$tmp/nokey.yaml" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "no CURVE handshake" && ok "worker with an unknown key refused in $(( $(date +%s) - t0 )) s: $(echo "$out" | tail -1)" \
  || bad "worker with an unknown key (rc $rc): $out"

# a worker that does not let the coordinator in (coordinator.pub not in its --keys)
K3="$tmp/keys3"
mkdir -p "$K3"
"$TERN" keygen -o "$K3/w5" >/dev/null 2>&1
curve_worker w5 "$K3"; W5=$EP
cp "$K3/w5.pub" "$K/"
cluster "$tmp/w5.yaml" "$K" "w1=$W1" "w5=$W5"
out=$(run --temp 0 --cluster "$tmp/w5.yaml" 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -qi "refused our CURVE key" && ok "worker refuses an unknown coordinator: $(echo "$out" | tail -1)" \
  || bad "unknown coordinator (rc $rc): $out"
grep -qi "refus\|denied" "$tmp/w5.log" && ok "w5 logged the refusal: $(grep -i 'refus\|denied' "$tmp/w5.log" | head -1 | cut -c1-160)" || bad "w5 did not log the refusal: $(cat "$tmp/w5.log")"

# a stranger coordinator (own key pair, knows the workers' public keys) gets no Forward run on w1
K4="$tmp/keys4"
mkdir -p "$K4"
"$TERN" keygen -o "$K4/coordinator" >/dev/null 2>&1
cp "$K/w1.pub" "$K/w2.pub" "$K4/"
cluster "$tmp/rogue.yaml" "$K4" "w1=$W1" "w2=$W2"
out=$(run --temp 0 --cluster "$tmp/rogue.yaml" 2>&1); rc=$?
[ $rc -ne 0 ] && ok "stranger coordinator refused: $(echo "$out" | tail -1)" || bad "stranger coordinator was let in: $out"
grep -q "loaded layers" "$tmp/w1.log" && [ "$(grep -c 'loaded layers' "$tmp/w1.log")" -le 2 ] && ok "w1 loaded nothing for the stranger" \
  || bad "w1 log: $(grep 'loaded' "$tmp/w1.log")"
# plaintext to a CURVE worker does not get through either
out=$(run --temp 0 --workers "$W1" 2>&1); rc=$?
[ $rc -ne 0 ] && ok "plaintext coordinator cannot use a CURVE worker: $(echo "$out" | tail -1)" || bad "plaintext got through: $out"
# and the legitimate cluster still works after all that
got=$(run --temp 0 --cluster "$tmp/c.yaml" 2>/dev/null); ref=$(run --temp 0 2>/dev/null)
[ "$got" == "$ref" ] && ok "CURVE cluster still serves" || bad "after refusals: '$got' != '$ref'"

finish 6
