# bench/lib.sh: what the benchmark scripts share; sourced with `here` (the repository) set.
#
# bench_tern WHO: TERN = $TERN_BIN or here/build/tern as an absolute path (exported as TERN_BIN for
# the processes a bench starts), cache = $TERN_CACHE or ~/.cache/tern; exits the script with a
# line naming WHO when there is no binary.
bench_tern() {
  TERN="${TERN_BIN:-$here/build/tern}"
  [ -x "$TERN" ] || { echo "$1: no tern binary at $TERN (set TERN_BIN)" >&2; exit 1; }
  TERN=$(cd "$(dirname "$TERN")" && pwd)/$(basename "$TERN")
  export TERN_BIN="$TERN"
  cache="${TERN_CACHE:-$HOME/.cache/tern}"
}
#
# bench_model WHO NAME CACHE: sets `model` to NAME's GGUF. small | 2b4t: CACHE/models/NAME-i2_s.gguf,
# made once with `tern mkmodel` (BitNet b1.58, I2_S, seed 1, the Llama-3 vocabulary when
# CACHE/llama3/tokenizer.json is there, as deploy/install-deps.sh leaves it); anything else is a
# path that must exist. Exits the script with a line naming WHO when it cannot.
bench_model() {
  local who=$1 name=$2 cache=$3
  case "$name" in
    small|2b4t) model="$cache/models/$name-i2_s.gguf" ;;
    *) model="$name" ;;
  esac
  [ -s "$model" ] && return 0
  case "$name" in
    small|2b4t)
      local v=() vocab="$cache/llama3/tokenizer.json"
      [ -s "$vocab" ] && v=(--vocab "$vocab")
      echo "$who: making $model" >&2
      mkdir -p "$cache/models"
      "$TERN" mkmodel --preset "$name" --arch bitnet-b1.58 --type i2_s "${v[@]}" --seed 1 -o "$model" >&2 || exit 1 ;;
    *) echo "$who: no model file $model" >&2; exit 1 ;;
  esac
}
