#!/usr/bin/env bash
# The chat templates of tests/data/jinja rendered live by Python's jinja2 (render.py: Hugging
# Face's settings) and by tern's interpreter (test_jinja with TERN_JINJA_EXPECTED), byte for byte;
# and the kept expected.json is what render.py makes today (not stale). Skips, saying so, when
# python3 or its jinja2 module is missing (Debian: python3-jinja2, deploy/install-deps.sh).
source "$(dirname "$0")/lib.bash"
src=${TERN_SRC:?TERN_SRC not set}
build=${TERN_BUILD:?TERN_BUILD not set}
data=$src/tests/data/jinja
if ! python3 -c 'import jinja2' 2>/dev/null; then
  echo "skipped: python3 with jinja2 not found (apt-get install python3-jinja2)"
  exit 0
fi
python3 "$data/render.py" >"$tmp/expected.json" 2>"$tmp/render.log" || die "render.py failed: $(cat "$tmp/render.log")"
n=$(grep -c '"out"\|"raise"\|"error"' "$tmp/expected.json")
if TERN_SRC=$src TERN_JINJA_EXPECTED=$tmp/expected.json "$build/test_jinja" >"$tmp/test.log" 2>&1; then
  ok "tern == jinja2 $(python3 -c 'import jinja2; print(jinja2.__version__)') on $n renderings ($(grep -o 'comparison: .*' "$tmp/test.log"))"
else
  bad "tern differs from jinja2: $(grep -E 'MISMATCH|FAILED' "$tmp/test.log" | head -5)"
fi
cmp -s "$tmp/expected.json" "$data/expected.json" && ok "tests/data/jinja/expected.json is up to date" \
  || bad "tests/data/jinja/expected.json is stale: regenerate with python3 render.py > expected.json"
# the comparison can fail: one changed byte in jinja2's output is caught
sed 's/<|eot_id|>/<|eot_id|> /' "$tmp/expected.json" >"$tmp/broken.json"
TERN_SRC=$src TERN_JINJA_EXPECTED=$tmp/broken.json "$build/test_jinja" >"$tmp/broken.log" 2>&1 \
  && bad "a changed expected output went unnoticed" || ok "a changed expected output is caught ($(grep -c MISMATCH "$tmp/broken.log") mismatches)"
finish 20 "$tmp/test.log"
