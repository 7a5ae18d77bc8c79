#!/usr/bin/env bash
# mkmodel_info: the real `tern` binary makes a tiny model of each ternary type and head type,
# `tern info` describes it, and every tensor's bytes in the table equal its format's formula
# (computed here from the shape); bad files and bad flags exit 1 with one line on stderr.
set -euo pipefail
tern=${TERN_BIN:?TERN_BIN is not set (ctest sets it)}
dir=$(mktemp -d "${TMPDIR:-/tmp}/tern_mkinfo_XXXXXX")
trap 'rm -rf "$dir"' EXIT
export TERN_PROGRESS=0
fail() { echo "FAIL: $*" >&2; exit 1; }
pass=0

# bytes of a tensor from type and shape (DESIGN.md / ggml-common.h)
formula() {  # type cols rows
  local n=$(( $2 * $3 ))
  case $1 in
    f32) echo $(( n * 4 )) ;; f16) echo $(( n * 2 )) ;; q8_0) echo $(( n / 32 * 34 )) ;;
    tq2_0) echo $(( n / 256 * 66 )) ;; tq1_0) echo $(( n / 256 * 54 )) ;; i2_s) echo $(( n / 4 + 32 )) ;;
    *) echo "?" ;;
  esac
}

for t in i2_s tq2_0 tq1_0; do
  for h in f16 q8_0; do
    m=$dir/m_${t}_$h.gguf
    "$tern" mkmodel --preset tiny --layers 2 --untied --type "$t" --head "$h" -s 3 -o "$m" 2>"$dir/err" \
      || fail "mkmodel $t $h: $(cat "$dir/err")"
    "$tern" info "$m" > "$dir/info" || fail "info $m"
    grep -q "^architecture:  bitnet-b1.58" "$dir/info" || fail "no architecture line"
    grep -q "^vocab: .* 512 tokens" "$dir/info" || fail "no vocab line: $(grep vocab "$dir/info")"
    n=0
    # table rows: "  name type cols [x rows] bytes"
    while read -r name type cols x rows bytes; do
      if [ "$x" != "x" ]; then bytes=$x; rows=1; fi
      want=$(formula "$type" "$cols" "$rows")
      [ "$bytes" = "$want" ] || fail "$t/$h: $name ($type $cols x $rows) has $bytes bytes, formula says $want"
      n=$((n + 1))
    done < <(grep -E '^  (token_embd|blk\.|output)' "$dir/info")
    [ "$n" -eq 25 ] || fail "$t/$h: $n tensors in the table, want 25 (embd + 2 × 11 + norm + head)"
    grep -q "^  output.weight  *$h " "$dir/info" || fail "output.weight is not $h"
    size=$(stat -c %s "$m")
    grep -q "file $size bytes" "$dir/info" || fail "totals do not name the file size $size"
    pass=$((pass + 1))
  done
done

# bad input: exit 1, one line on stderr
printf 'not a gguf' > "$dir/bad.gguf"
if "$tern" info "$dir/bad.gguf" 2>"$dir/err" >/dev/null; then fail "info accepted a bad file"; fi
[ "$(wc -l < "$dir/err")" -eq 1 ] && grep -q "magic: not a GGUF file" "$dir/err" || fail "bad file error: $(cat "$dir/err")"
head -c 1000 "$dir/m_i2_s_f16.gguf" > "$dir/cut.gguf"
if "$tern" info "$dir/cut.gguf" 2>"$dir/err" >/dev/null; then fail "info accepted a truncated file"; fi
[ "$(wc -l < "$dir/err")" -eq 1 ] || fail "truncated file error is not one line: $(cat "$dir/err")"
if "$tern" mkmodel --preset 3b --type tq2_0 -o "$dir/x.gguf" 2>"$dir/err"; then fail "unknown preset 3b accepted"; fi
grep -q "unknown preset '3b'" "$dir/err" || fail "unknown preset error: $(cat "$dir/err")"
[ ! -e "$dir/x.gguf" ] && [ ! -e "$dir/x.gguf.tmp" ] || fail "refused mkmodel left a file"
"$tern" info --help | grep -q -- "--no-tensors" || fail "info --help"
"$tern" mkmodel --help | grep -q -- "--preset" || fail "mkmodel --help"
pass=$((pass + 1))
echo "$pass passed, 0 failed"
