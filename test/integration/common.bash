# Shared helpers for the integration tests (sourced, not a test itself).
# Each test is run as: bash test/integration/<name>.sh <sigma binary> <scratch dir>
set -euo pipefail
SIGMA=$(realpath "$1")
SCRATCH=$2
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"

die() { echo "FAIL: $*" >&2; exit 1; }

# A small byte-level dataset from this repository's own sources (deterministic text).
make_dataset() {
  local prefix=$1
  "$SIGMA" data prepare core models kernels --tokenizer byte --out "$prefix" > /dev/null
}

# Expects a command to fail with exit code 2 and exactly one stderr line containing $1.
expect_user_error() {
  local want=$1; shift
  local err rc=0
  err=$("$@" 2>&1 >/dev/null) || rc=$?
  [[ $rc -eq 2 ]] || die "expected exit 2, got $rc from: $* -- stderr: $err"
  [[ $(printf '%s\n' "$err" | wc -l) -eq 1 ]] || die "expected one line, got: $err"
  [[ "$err" == *"$want"* ]] || die "expected '$want' in: $err"
  echo "ok: $err"
}

# The "loss" of every training row of a metrics.jsonl, one per line, as written.
losses() { grep -o '"loss":[^,}]*' "$1"; }
