# Preemption: SIGTERM, SIGINT or SIGUSR1 mid-run finishes the step, writes a checkpoint of it
# and exits 0, and the resumed run has the losses of an uninterrupted one. A second signal
# during that checkpoint's write (held open by a SIGMA_FAULTS pause) exits at once with
# 128 + the signal, leaving the committed checkpoints intact for --resume auto.
source "$(dirname "$0")/common.bash"
make_dataset "$SCRATCH/data"
common=(recipes/tiny/dense.toml --set "data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]"
        --set train.steps=150 --set checkpoint.interval=50 --set eval.interval=0
        --set train.threads=1 --set log.peak_tflops=1)

# Waits until $1 holds at least $2 lines matching $3 (a training process is writing it).
wait_for() {
  for _ in $(seq 600); do
    [[ -f $1 && $(grep -c -- "$3" "$1") -ge $2 ]] && return 0
    sleep 0.02
  done
  die "timed out waiting for $2 x '$3' in $1"
}

"$SIGMA" train "${common[@]}" --out "$SCRATCH/straight" > "$SCRATCH/straight.out"

for sig in TERM INT USR1; do
  out=$SCRATCH/$sig
  "$SIGMA" train "${common[@]}" --out "$out" > "$out.out" 2>&1 &
  pid=$!
  wait_for "$out/metrics.jsonl" 5 '"loss"'
  kill -s "$sig" "$pid"
  rc=0; wait "$pid" || rc=$?
  [[ $rc -eq 0 ]] || die "SIG$sig: exit $rc, expected 0: $(tail -3 "$out.out")"
  line=$(grep "stopped by SIG$sig after step" "$out.out") || die "SIG$sig: no stop line"
  step=$(sed 's/.*after step \([0-9]*\);.*/\1/' <<< "$line")
  (( step < 150 )) || die "SIG$sig: the run finished before the signal"
  dir=$(printf '%s/checkpoints/step_%08d' "$out" "$step")
  [[ -f $dir/COMMITTED && $(cat "$out/checkpoints/latest") == $(basename "$dir") ]] \
    || die "SIG$sig: no committed checkpoint of step $step"
  "$SIGMA" train "${common[@]}" --out "$out" --resume auto > "$out.resumed"
  grep -q "resumed from $dir at step $step" "$out.resumed" || die "SIG$sig: did not resume"
  diff <(losses "$SCRATCH/straight/metrics.jsonl") <(losses "$out/metrics.jsonl") \
    || die "SIG$sig: losses differ from the uninterrupted run"
  echo "ok: SIG$sig after step $step: checkpoint, exit 0, resumed with identical losses"
done

# A second signal while the preemption checkpoint is being written.
out=$SCRATCH/twice
"$SIGMA" train "${common[@]}" --out "$out" --stop-at-step 50 > "$out.first"
SIGMA_FAULTS=pause@checkpoint.rank_file.tensor \
  "$SIGMA" train "${common[@]}" --out "$out" --resume auto --set checkpoint.interval=0 \
  > "$out.out" 2> "$out.err" &
pid=$!
wait_for "$out/metrics.jsonl" 55 '"loss"'
kill -TERM "$pid"
wait_for "$out/train.log" 1 "SIGTERM: saving a checkpoint"
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
[[ $rc -eq 143 ]] || die "second SIGTERM: exit $rc, expected 143"
grep -q "second stop signal: exiting now" "$out.err" || die "no message: $(cat "$out.err")"
for dir in "$out"/checkpoints/step_*; do
  [[ $dir == */step_00000050 || ! -f $dir/COMMITTED ]] || die "the interrupted $dir is committed"
done
"$SIGMA" train "${common[@]}" --out "$out" --resume auto > "$out.resumed"
grep -q "resumed from .*step_00000050 at step 50" "$out.resumed" || die "did not resume at 50"
diff <(losses "$SCRATCH/straight/metrics.jsonl") <(losses "$out/metrics.jsonl") \
  || die "losses differ after the second-signal exit"
echo "ok: a second SIGTERM mid-write exits 143; step 50 stays committed and resumes"
