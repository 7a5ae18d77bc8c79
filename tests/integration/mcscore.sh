#!/usr/bin/env bash
# `tern perplexity --hellaswag | --winogrande | --multiple-choice` (llama-perplexity's benchmark
# scoring) on a generated model and generated task files (a python generator here, words the
# byte-level vocab spells). The reference is independent of the scoring code: each choice is
# tokenized with `tern tokenize`, its per-token log-probs come from `tern serve`'s
# /v1/completions (echo + logprobs, max_tokens 0), and python applies llama.cpp's rules (common
# prefix, winogrande's partial scoring, mean log-prob, the pick) and llama.cpp's task picks
# (mt19937 seeded with 1, written again here); every task's scores and pick (-v lines) and the
# printed accuracy must agree. Through 2 workers the output is one process's, line for line. A
# task's common prefix copied between its choices' slots gives every score of --no-kv-copy. Without
# -c the context fits the longest task (one far past 512 tokens scores as with a larger -c); a
# given -c too small, and bad task files, give one error line naming the task, exit 1.
source "$(dirname "$0")/lib.bash"
T() { timeout 120 "$TERN" "$@"; }

M="$tmp/m.gguf"
make_model "$M" --preset tiny --arch bitnet-b1.58 --layers 2 --type i2_s --seed 7
HS="$tmp/hs.txt" WG="$tmp/wg.csv" MC="$tmp/mc.bin"
python3 - "$HS" "$WG" "$MC" <<'PY' || die "generator failed"
import random, struct, sys
r = random.Random(11)
W = "the cat sat on mat dog ran after ball in park a red blue green house tree car went home fast slow".split()
def s(lo, hi): return " ".join(r.choice(W) for _ in range(r.randint(lo, hi)))
with open(sys.argv[1], "w") as f:                     # hellaswag: 6 lines a task
    for t in range(14):
        f.write("Walk: " + s(3, 14) + "\n%d\n" % r.randint(0, 3))
        for e in range(4): f.write(s(1, 9) + "\n")
with open(sys.argv[2], "w") as f:                     # winogrande: a header, one quoted sentence
    f.write("index,sentence,option1,option2,answer\n")
    for t in range(16):
        sent = s(2, 6) + " _ " + s(0, 8) + "."
        o1, o2 = r.choice(W), r.choice(W) + " " + r.choice(W)
        if t == 3: sent = '"' + s(1, 3) + ', so _ ' + s(1, 5) + '."'
        if t % 4 == 1: sent, (o1, o2) = s(2, 6) + " _.", r.sample(["a", "in", "on"], 2)   # short tails
        f.write("%d,%s,%s,%s,%d\n" % (t, sent, o1, o2, r.randint(1, 2)))
def bstr(x): b = x.encode(); return struct.pack("<I", len(b)) + b
def answers(n, right):
    return struct.pack("<I", n) + b"".join(bstr(s(1, 5)) for _ in range(n)) + struct.pack("<%di" % n, *[int(i in right) for i in range(n)])
tasks = []
for t in range(9):                                    # multiple choice: 2-5 answers, mc2 read past
    n = r.randint(2, 5)
    tasks.append(bstr("Question: " + s(2, 8) + "?") + answers(n, {r.randrange(n)}) + answers(2, {0, 1}))
head = 4 + 4 * len(tasks)
pos = [head + sum(len(x) for x in tasks[:i]) for i in range(len(tasks))]
open(sys.argv[3], "wb").write(struct.pack("<I", len(tasks)) + struct.pack("<%dI" % len(tasks), *pos) + b"".join(tasks))
PY

# ---- tern's scores ----------------------------------------------------------------------------
run() {   # NAME ARGS...: stdout to $tmp/NAME.out, stderr to $tmp/NAME.log
  local name=$1; shift
  T perplexity -m "$M" -t 2 -v "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" || bad "$name: exit $? $(grep -v ' D ' "$tmp/$name.log" | tail -1)"
}
run hs -f "$HS" --hellaswag
run hs5 -f "$HS" --hellaswag --hellaswag-tasks 5
run wg -f "$WG" --winogrande
run wg6 -f "$WG" --winogrande --winogrande-tasks 6 -b 16
run mc -f "$MC" --multiple-choice
run mc4 -f "$MC" --multiple-choice --multiple-choice-tasks 4 -np 5

# ---- the reference ------------------------------------------------------------------------------
start_serve srv -m "$M" -t 2 || die "server did not start: $(cat "$tmp/srv.log")"
wait_health "$URL" 20 || die "server not healthy: $(tail -3 "$tmp/srv.log")"
if python3 - "$TERN" "$M" "$URL" "$tmp" "$HS" "$WG" "$MC" <<'PY'
import json, math, re, struct, subprocess, sys, urllib.request
tern, model, url, tmp, HS, WG, MC = sys.argv[1:]
fails = []
wg_branch = [0, 0]   # winogrande tasks scored after the prefix, after the option

def tokenize(text):
    out = subprocess.run([tern, "tokenize", "-m", model, "-p", text, "--ids", "--no-parse-special"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])
lp_cache = {}
def logprobs(ids):   # token_logprobs of ids (the first is null)
    k = tuple(ids)
    if k not in lp_cache:
        req = urllib.request.Request(url + "/v1/completions", data=json.dumps(
            {"prompt": ids, "max_tokens": 0, "echo": True, "logprobs": 1, "cache_prompt": False}).encode(),
            headers={"Content-Type": "application/json"})
        lp_cache[k] = json.load(urllib.request.urlopen(req, timeout=60))["choices"][0]["logprobs"]["token_logprobs"]
    return lp_cache[k]

# std::mt19937(1) and libstdc++'s uniform_int_distribution; llama.cpp's float pick
class MT:
    def __init__(s, seed):
        s.mt = [seed & 0xffffffff]
        for i in range(1, 624): s.mt.append((1812433253 * (s.mt[-1] ^ (s.mt[-1] >> 30)) + i) & 0xffffffff)
        s.i = 624
    def __call__(s):
        if s.i >= 624:
            for k in range(624):
                y = (s.mt[k] & 0x80000000) | (s.mt[(k + 1) % 624] & 0x7fffffff)
                s.mt[k] = s.mt[(k + 397) % 624] ^ (y >> 1) ^ (0x9908b0df if y & 1 else 0)
            s.i = 0
        y = s.mt[s.i]; s.i += 1
        y ^= y >> 11; y ^= (y << 7) & 0x9d2c5680; y ^= (y << 15) & 0xefc60000
        return y ^ (y >> 18)
def below(g, n):
    p = g() * n
    if p & 0xffffffff < n:
        th = (2**32 - n) % n
        while p & 0xffffffff < th: p = g() * n
    return p >> 32
f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
def pick_float(n, k):
    g, aux, out = MT(1), list(range(n)), []
    for _ in range(k):
        j = min(int(f32(f32(f32(2.0**-32) * f32(g())) * f32(len(aux)))), len(aux) - 1)
        out.append(aux[j]); aux[j] = aux[-1]; aux.pop()
    return out
assert MT(1)() == 1791095845, "mt19937 reimplementation"

def common_prefix(seqs):
    n = 0
    while n < min(map(len, seqs)) and all(s[n] == seqs[0][n] for s in seqs): n += 1
    return n
def mean_lp(ids, lo, hi):
    lp = logprobs(ids)
    return sum(lp[i] for i in range(lo, hi)) / (hi - lo)

# tasks as (where, choices' token lists, ranges, right-answer test)
def hs_task(lines, i):
    ctx, gold = lines[6 * i], int(lines[6 * i + 1])
    seqs = [tokenize(ctx + " " + e) for e in lines[6 * i + 2: 6 * i + 6]]
    cp = common_prefix(seqs)
    return 6 * i + 1, seqs, [(cp, len(q)) for q in seqs], lambda p: p == gold
def wg_task(line, ln):
    f = next(iter(__import__("csv").reader([line])))
    sent, opts, ans = f[1], f[2:4], int(f[4])
    a, b = sent.split("_", 1)
    seqs = [tokenize(a + o + b) for o in opts]
    nb = [len(tokenize(a + o)) for o in opts]
    cp = common_prefix(seqs)
    skip = len(seqs[0]) - cp > 3 and len(seqs[1]) - cp > 3
    wg_branch[skip] += 1
    rng = []
    for q, n in zip(seqs, nb):
        base = n if skip else cp
        rng.append((base, len(q) - (1 if len(q) - base > 1 else 0)))
    return ln, seqs, rng, lambda p: p == ans - 1
def mc_task(d, off):
    def rs(o):
        n, = struct.unpack_from("<I", d, o); return d[o + 4: o + 4 + n].decode(), o + 4 + n
    q, o = rs(off)
    n, = struct.unpack_from("<I", d, o); o += 4
    ans = []
    for _ in range(n): a, o = rs(o); ans.append(a)
    labels = struct.unpack_from("<%di" % n, d, o)
    seqs = [tokenize(q + " " + a) for a in ans]
    cp = common_prefix(seqs)
    return off, seqs, [(cp, len(s)) for s in seqs], lambda p: labels[p] == 1

def check(name, tasks, kind):
    """tasks: in the order llama.cpp scores them; tern's -v lines and final line must agree"""
    log = open("%s/%s.log" % (tmp, name)).read()
    got = re.findall(r"mcscore: task (\d+) \((?:line|byte) (\d+)\): pick (\d+) (right|wrong), scores ([-0-9. ]+)", log)
    if len(got) != len(tasks): fails.append("%s: %d task lines, expected %d" % (name, len(got), len(tasks))); return
    right, dmax = 0, 0.0
    for (k, where, pick, rw, sc), (w, seqs, rng, ok) in zip(got, tasks):
        ref = [mean_lp(q, lo, hi) for q, (lo, hi) in zip(seqs, rng)]
        mine = list(map(float, sc.split()))
        if int(where) != w: fails.append("%s task %s: at %s, expected %d (the pick order)" % (name, k, where, w)); continue
        if len(mine) != len(ref) or max(abs(x - y) for x, y in zip(mine, ref)) > 1e-5:
            fails.append("%s task %s: scores %s, reference %s" % (name, k, mine, ref)); continue
        dmax = max([dmax] + [abs(x - y) for x, y in zip(mine, ref)])
        p = (0 if ref[0] > ref[1] else 1) if kind == "wg" else ref.index(max(ref))
        near = sorted(ref)[-1] - sorted(ref)[-2] < 1e-5
        if int(pick) != p and not near: fails.append("%s task %s: pick %s, reference %d" % (name, k, pick, p))
        right += ok(int(pick))
        if (rw == "right") != ok(int(pick)): fails.append("%s task %s: says %s" % (name, k, rw))
    out = open("%s/%s.out" % (tmp, name)).read()
    acc = 100.0 * right / len(tasks)
    want = {"hs": "Final HellaSwag acc_norm (%d tasks): %.4f%%" % (len(tasks), acc),
            "wg": "Final Winogrande score(%d tasks): %.4f +/- " % (len(tasks), acc),
            "mc": "Final result: %.4f +/- " % acc}[kind]
    if want not in out: fails.append("%s: no '%s' in the output: %s" % (name, want, out.strip().splitlines()[-2:]))
    last = [l for l in out.splitlines() if re.match(r"^%d\t" % len(tasks), l)]
    if not last or abs(float(last[-1].split("\t")[1].rstrip("%")) - acc) > 6e-5:   # printed with 4 decimals at least
        fails.append("%s: last running line %s, accuracy %.4f" % (name, last, acc))
    print("ok   - %s: %d tasks, accuracy %.4f%%, picks as the reference's, scores within %.1e" % (name, len(tasks), acc, dmax))

lines = open(HS).read().split("\n")[:-1]
g, left, order = MT(1), list(range(len(lines) // 6)), []
while left: order.append(left.pop(below(g, len(left))))
check("hs", [hs_task(lines, i) for i in order], "hs")
check("hs5", [hs_task(lines, i) for i in order[:5]], "hs")
wl = open(WG).read().split("\n")[1:-1]
wg = [wg_task(l, i + 2) for i, l in enumerate(wl)]
check("wg", wg, "wg")
if not all(wg_branch): fails.append("winogrande: the generated tasks take only one scoring branch %s" % wg_branch)
check("wg6", [wg[i] for i in pick_float(len(wg), 6)], "wg")
d = open(MC, "rb").read()
n, = struct.unpack_from("<I", d, 0); pos = struct.unpack_from("<%dI" % n, d, 4)
check("mc", [mc_task(d, pos[i]) for i in range(n)], "mc")
check("mc4", [mc_task(d, pos[i]) for i in pick_float(n, 4)], "mc")
for f in fails: print("FAIL - " + f)
sys.exit(1 if fails else 0)
PY
then ok "reference: every task's scores and pick, and the accuracy"; else bad "reference comparison (above)"; fi

# ---- 2 workers: one process's output --------------------------------------------------------
start_worker w1 "$LOOPBACK_ANY" -m "$M" -t 1; W1=$EP
start_worker w2 "$LOOPBACK_ANY" -m "$M" -t 1; W2=$EP
[ -n "$W1" ] && [ -n "$W2" ] || die "workers did not start: $(cat "$tmp"/w*.log)"
for c in "hs -f $HS --hellaswag" "wg -f $WG --winogrande" "mc4 -f $MC --multiple-choice --multiple-choice-tasks 4 -np 5"; do
  set -- $c; name=$1; shift
  T perplexity -m "$M" "$@" --workers "$W1,$W2" >"$tmp/$name.clu" 2>"$tmp/$name.clu.log"
  cmp -s "$tmp/$name.out" "$tmp/$name.clu" && ok "$name through 2 workers == one process ($(grep -c . "$tmp/$name.clu") lines)" \
    || bad "$name through 2 workers differs: $(diff "$tmp/$name.out" "$tmp/$name.clu" | head -4) $(tail -1 "$tmp/$name.clu.log")"
done

# ---- a task's common prefix copied between its choices' slots == fed in every slot -----------------
sc() { grep -o 'mcscore: task .*' "$1"; }
for c in "hs -f $HS --hellaswag" "wg6 -f $WG --winogrande --winogrande-tasks 6 -b 16" "mc -f $MC --multiple-choice"; do
  set -- $c; name=$1; shift
  run "$name.nc" "$@" --no-kv-copy
  copied=$(sed -n 's/.* \([0-9]*\) prompt positions copied.*/\1/p' "$tmp/$name.log")
  nc=$(sed -n 's/.* \([0-9]*\) prompt positions copied.*/\1/p' "$tmp/$name.nc.log")
  cmp -s "$tmp/$name.out" "$tmp/$name.nc.out" && [ "$(sc "$tmp/$name.log")" = "$(sc "$tmp/$name.nc.log")" ] \
    && [ "$nc" = 0 ] && { [ "$name" = wg6 ] || [ "${copied:-0}" -gt 0 ]; } \
    && ok "$name: ${copied:-0} positions of common prefixes copied, not fed: every score as with --no-kv-copy" \
    || bad "$name: with copies (${copied:-?}) vs --no-kv-copy: $(diff <(sc "$tmp/$name.log") <(sc "$tmp/$name.nc.log") | head -4)"
done

# ---- -c: left out, it fits the longest task; a given one too small is refused before the load -----
python3 - "$tmp/hs_long.txt" <<'PY'
import random, sys
r = random.Random(5)
W = "the cat sat on mat dog ran after ball in park a red blue green house tree car went home fast slow".split()
s = lambda n: " ".join(r.choice(W) for _ in range(n))
with open(sys.argv[1], "w") as f:   # 3 tasks, the second one's context far past llama.cpp's usual 512
    for n in (8, 400, 12):
        f.write("Walk: " + s(n) + "\n%d\n" % r.randint(0, 3) + "".join(s(r.randint(2, 6)) + "\n" for _ in range(4)))
PY
run hsl -f "$tmp/hs_long.txt" --hellaswag
need=$(sed -n 's/.*perplexity: -c \([0-9]*\), what the longest task needs.*/\1/p' "$tmp/hsl.log")
if [ -n "$need" ] && [ "$need" -gt 512 ] && grep -q "Final HellaSwag acc_norm (3 tasks)" "$tmp/hsl.out"; then
  run hslc -f "$tmp/hs_long.txt" --hellaswag -c $((need + 100))
  [ "$(sc "$tmp/hsl.log")" = "$(sc "$tmp/hslc.log")" ] && [ "$(sc "$tmp/hsl.log" | wc -l)" = 3 ] \
    && ok "no -c: sized to the longest task ($need positions), every score as with -c $((need + 100))" \
    || bad "auto -c $need vs -c $((need + 100)): $(diff <(sc "$tmp/hsl.log") <(sc "$tmp/hslc.log") | head -4)"
else bad "no -c with a long task: -c '$need', $(tail -2 "$tmp/hsl.out") $(grep -v ' D ' "$tmp/hsl.log" | tail -2)"; fi
T perplexity -m "$M" -t 2 -f "$tmp/hs_long.txt" --hellaswag -c 0 >"$tmp/hsl0.out" 2>/dev/null
cmp -s "$tmp/hsl.out" "$tmp/hsl0.out" && ok "-c 0 for a benchmark: the same as no -c" || bad "-c 0: $(tail -1 "$tmp/hsl0.out")"

# ---- bad task files: one line naming the line, exit 1 ----------------------------------------
expect_err() {   # description, expected text, then the command's arguments
  local what=$1 want=$2 err rc
  shift 2
  T perplexity -m "$M" "$@" </dev/null >/dev/null 2>"$tmp/e.txt"; rc=$?
  err=$(grep -v -e '^[A-Za-z-]*: [0-9]* of the file' "$tmp/e.txt" | grep -v ' [IDW] ')
  local lines; lines=$(printf '%s\n' "$err" | grep -c .)
  if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && [[ "$err" == *"$want"* ]]; then ok "$what: $err"
  else bad "$what: rc $rc, $lines lines: $err"; fi
}
head -n 17 "$HS" >"$tmp/hs_cut.txt"
sed '8s/.*/7/' "$HS" >"$tmp/hs_gold.txt"
sed '4s/_/-/' "$WG" >"$tmp/wg_nous.csv"
sed '6s/,[12]$/,3/' "$WG" >"$tmp/wg_ans.csv"
sed '7s/^\([0-9]*\),.*/\1,only two/' "$WG" >"$tmp/wg_cols.csv"
head -c 100 "$MC" >"$tmp/mc_cut.bin"
python3 -c "import struct,sys; d=bytearray(open(sys.argv[1],'rb').read()); struct.pack_into('<I', d, 0, 1 << 30); open(sys.argv[2],'wb').write(d)" "$MC" "$tmp/mc_big.bin"
python3 -c "
import struct,sys; d=bytearray(open(sys.argv[1],'rb').read()); p,=struct.unpack_from('<I',d,4); q,=struct.unpack_from('<I',d,p)
struct.pack_into('<I', d, p + 4 + q, 5000); open(sys.argv[2],'wb').write(d)" "$MC" "$tmp/mc_many.bin"
expect_err "hellaswag cut in a task" "line 13 has 5 of its 6" -f "$tmp/hs_cut.txt" --hellaswag
expect_err "hellaswag gold index 7" "line 8: the gold ending index '7'" -f "$tmp/hs_gold.txt" --hellaswag
expect_err "winogrande without _" "line 4: no '_'" -f "$tmp/wg_nous.csv" --winogrande
expect_err "winogrande answer 3" "line 6: the answer '3'" -f "$tmp/wg_ans.csv" --winogrande
expect_err "winogrande short line" "line 7: not 5 comma-separated" -f "$tmp/wg_cols.csv" --winogrande
expect_err "multiple choice cut short" "truncated" -f "$tmp/mc_cut.bin" --multiple-choice
expect_err "multiple choice, 2^30 tasks" "tasks: at most" -f "$tmp/mc_big.bin" --multiple-choice
expect_err "multiple choice, 5000 answers" "task 1 (byte 40): 5000 answers" -f "$tmp/mc_many.bin" --multiple-choice
expect_err "a task longer than -c" "raise -c" -f "$HS" --hellaswag -c 8
expect_err "a long task and -c 512" "a choice needs $need positions, the context is 512" -f "$tmp/hs_long.txt" --hellaswag -c 512
expect_err "empty task file" "no tasks" -f /dev/null --winogrande
expect_err "two benchmarks at once" "one at a time" -f "$HS" --hellaswag --winogrande
finish 20
