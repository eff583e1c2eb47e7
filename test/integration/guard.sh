# Numerical guards on a real run, with faults injected through SIGMA_FAULTS (core/fault.h):
# a NaN loss is skipped, a loss spike and a gradient-norm spike are skipped once the window
# is full, three NaN gradient norms in a row roll the run back to the last checkpoint with
# the data read since skipped; every event is a train.log line and a metrics.jsonl row, and
# the run still finishes. A malformed SIGMA_FAULTS is a one-line error.
source "$(dirname "$0")/common.bash"
make_dataset "$SCRATCH/data"
common=(recipes/tiny/dense.toml --set "data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]"
        --set train.steps=20 --set checkpoint.interval=5 --set train.threads=1
        --set log.peak_tflops=1 --set guard.window=5 --set guard.rollback_after=3
        --set guard.loss_z=50 --set guard.grad_norm_z=50)
# The injected spikes stand hundreds of sd above the moving means; z 50 keeps this tiny
# model's own noisy early steps (gradient norms up to ~16 sd over a 5-step window) from
# adding events of their own, so the list of events below is exact.

SIGMA_FAULTS="nan_loss@3,nan_grad@8x3,loss_spike@12,grad_spike@14" \
  "$SIGMA" train "${common[@]}" --out "$SCRATCH/run" > "$SCRATCH/run.out"
log=$SCRATCH/run/train.log
grep -q "step 3 | guard: loss is nan; update skipped (1 in a row)" "$log" || die "no NaN skip"
grep -q "step 8 | guard: gradient norm is nan; update skipped (3 in a row)" "$log" \
  || die "no third NaN gradient skip"
grep -q "step 8 | guard: 3 steps skipped in a row: rolling back to .*step_00000005 (step 5)" "$log" \
  || die "no rollback to step 5: $(grep guard: "$log")"
grep -q "step 12 | guard: loss .* sd above its moving mean" "$log" || die "no loss spike skip"
grep -q "step 14 | guard: gradient norm .* sd above its moving mean" "$log" \
  || die "no gradient-norm spike skip"
grep -q "^done: 20 steps" "$log" || die "the run did not finish"

python3 - "$SCRATCH/run/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
events = [(r["step"], r["event"], r.get("reason")) for r in rows if r.get("event", "").startswith("guard")]
want = [(3, "guard.skip", "nan_loss")] + [(8, "guard.skip", "nan_grad_norm")] * 3 + \
       [(8, "guard.rollback", None), (12, "guard.skip", "loss_spike"),
        (14, "guard.skip", "grad_norm_spike")]
assert events == want, f"FAIL: guard events {events}"
rollback = next(r for r in rows if r.get("event") == "guard.rollback")
assert rollback["to_step"] == 5 and rollback["skipped_samples"] > 0, f"FAIL: {rollback}"
# After the rollback, steps 6.. are trained again on later data: the row of step 6 appears
# twice, with different losses.
six = [r["loss"] for r in rows if r.get("step") == 6 and "loss" in r]
assert len(six) == 2 and six[0] != six[1], f"FAIL: step 6 rows {six}"
print(f"ok: {len(events)} guard events in metrics.jsonl")
PY

expect_user_error "SIGMA_FAULTS: 'kill': expected KIND@WHERE" \
  env SIGMA_FAULTS=kill "$SIGMA" train "${common[@]}" --out "$SCRATCH/bad"
expect_user_error "unknown kind 'boom'" \
  env SIGMA_FAULTS=boom@3 "$SIGMA" train "${common[@]}" --out "$SCRATCH/bad"
echo "ok: NaN and spikes skipped, rollback after 3 in a row, run finished"
