# Fault injection: a run killed with SIGKILL again and again, at every named point of a
# checkpoint write (SIGMA_FAULTS kill@POINT) and at 20 random instants, always resumes with
# --resume auto from an intact committed checkpoint (no checkpoint is ever skipped as
# damaged) and ends with the losses of an uninterrupted run, bit for bit. Then a flipped byte
# in the newest checkpoint makes --resume auto fall back to the previous one, and a full disk
# (a small tmpfs where user namespaces allow one, and a file-size limit) fails the write
# with the reason while the previous checkpoint stays intact.
source "$(dirname "$0")/common.bash"
make_dataset "$SCRATCH/data"
common=(recipes/tiny/dense.toml --set "data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]"
        --set train.steps=120 --set checkpoint.interval=3 --set checkpoint.keep=2
        --set eval.interval=0 --set train.threads=1 --set log.peak_tflops=1)
"$SIGMA" train "${common[@]}" --out "$SCRATCH/straight" > "$SCRATCH/straight.out"

run=$SCRATCH/crashy
kills=0 inside_write=0
# After a kill: were we inside a checkpoint write (an uncommitted step directory or staging
# copy is left)? Then the next start must resume from a committed one, never skipping one.
after_kill() {
  kills=$((kills + 1))
  for dir in "$run"/checkpoints/step_*; do
    [[ -d $dir && ! -f $dir/COMMITTED ]] && { inside_write=$((inside_write + 1)); break; }
  done
  return 0
}
resume() { "$SIGMA" train "${common[@]}" --out "$run" --resume auto "$@"; }
check_resumed() {
  ! grep -q "skipped checkpoint" "$1" || die "a committed checkpoint was damaged: $(grep skipped "$1")"
}

points=(checkpoint.snapshot checkpoint.rank_file.tensor#1 checkpoint.rank_file.tensor#9
        checkpoint.rank_file checkpoint.index checkpoint.committed checkpoint.latest
        checkpoint.prune)
for point in "${points[@]}"; do
  rc=0
  SIGMA_FAULTS="kill@$point" resume > "$SCRATCH/point.out" 2>&1 || rc=$?
  [[ $rc -eq 137 ]] || die "kill@$point: exit $rc, expected 137 (SIGKILL)"
  check_resumed "$SCRATCH/point.out"
  after_kill
done

RANDOM=7  # the same instants on every run of the test
for i in $(seq 20); do
  "$SIGMA" train "${common[@]}" --out "$run" --resume auto > "$SCRATCH/random.out" 2>&1 &
  pid=$!
  sleep "0.$(printf '%03d' $((20 + RANDOM % 230)))"
  kill -KILL "$pid" 2>/dev/null || true
  { wait "$pid"; } 2>/dev/null || true
  check_resumed "$SCRATCH/random.out"
  after_kill
done
resume > "$SCRATCH/final.out"
check_resumed "$SCRATCH/final.out"
grep -q "^done: 120 steps" "$SCRATCH/final.out" || die "the last run did not finish"
diff <(losses "$SCRATCH/straight/metrics.jsonl") <(losses "$run/metrics.jsonl") \
  || die "losses differ from the uninterrupted run"
echo "ok: $kills kills ($inside_write inside a checkpoint write), same 120 losses as uninterrupted"

# A flipped byte in the newest checkpoint's rank file: detected, the previous one is used.
newest=$run/checkpoints/$(cat "$run/checkpoints/latest")
python3 - "$newest/rank_00000.h5" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(4096); b = f.read(1); f.seek(4096); f.write(bytes([b[0] ^ 0x20]))
PY
resume --set train.steps=123 > "$SCRATCH/flipped.out"
grep -q "warning: skipped checkpoint $newest: $newest/rank_00000.h5: checksum mismatch" \
  "$SCRATCH/flipped.out" || die "the flipped byte went unnoticed: $(head -3 "$SCRATCH/flipped.out")"
grep -q "resumed from .*step_00000117 at step 117" "$SCRATCH/flipped.out" \
  || die "did not fall back to step 117"
echo "ok: a flipped byte in step 120 is detected; resumed from step 117"

# A full disk during a write: full_disk NAME REASON COMMAND... expects COMMAND to fail at the
# step-10 checkpoint with REASON, naming step 5 as intact.
full_disk() {
  local out=$1 reason=$2 rc=0; shift 2
  "$@" > "$out.out" 2> "$out.err" || rc=$?
  [[ $rc -eq 2 ]] || die "$out: exit $rc, expected 2: $(cat "$out.err")"
  [[ $(wc -l < "$out.err") -eq 1 ]] || die "$out: not one line: $(cat "$out.err")"
  grep -q "step 10 | checkpoint not written: .*rank_00000.h5: .*: $reason); the last committed checkpoint, .*step_00000005, is intact" \
    "$out.err" || die "$out: $(cat "$out.err")"
  echo "ok: $(cut -c1-60 "$out.err")... ($reason)"
}
limited=(--set train.steps=20 --set checkpoint.interval=5 --set checkpoint.keep=3)
"$SIGMA" train "${common[@]}" "${limited[@]}" --out "$SCRATCH/limited" --stop-at-step 5 > /dev/null
# The rank file is ~1.5 MB; logs stay far below the 1000 KiB limit.
full_disk "$SCRATCH/limited" "File too large" bash -c 'ulimit -f 1000; exec "$@"' _ \
  "$SIGMA" train "${common[@]}" "${limited[@]}" --out "$SCRATCH/limited" --resume auto
"$SIGMA" train "${common[@]}" "${limited[@]}" --out "$SCRATCH/limited" --resume auto \
  --set train.steps=5 > "$SCRATCH/limited.resumed"
grep -q "resumed from .*step_00000005" "$SCRATCH/limited.resumed" || die "step 5 is not intact"
[[ ! -e $SCRATCH/limited/checkpoints/step_00000010 ]] || die "the failed write was left behind"

disk=$SCRATCH/disk
mkdir -p "$disk"
if unshare --user --map-root-user --mount true 2>/dev/null; then
  # 2.5 MB holds one checkpoint and the logs, not two checkpoints.
  full_disk "$SCRATCH/tmpfs" "No space left on device" unshare --user --map-root-user --mount \
    bash -c 'mount -t tmpfs -o size=2500k tmpfs "$1" && shift && exec "$@"' _ "$disk" \
    "$SIGMA" train "${common[@]}" "${limited[@]}" --out "$disk/run"
else
  echo "skip: no user namespaces for a tmpfs; the file-size limit stood in for a full disk"
fi
