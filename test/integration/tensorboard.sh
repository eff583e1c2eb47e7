# TensorBoard reads sigma's event files: every number of metrics.jsonl (loss, lr, grad norm,
# tok/s, MFU, validation loss, MoE balance per layer, per-layer norms) is a scalar at its step,
# also across a kill -9 and a resume (the resumed file's session START hides the steps the
# killed process logged past its checkpoint). Needs the `tensorboard` package from PyPI
# (scripts/setup --with-test-deps); skipped (exit 77) without it.
source "$(dirname "$0")/common.bash"
python3 -c 'import tensorboard' 2>/dev/null || { echo "skip: no tensorboard package"; exit 77; }
make_dataset "$SCRATCH/data"
common=(recipes/tiny/moe.toml --set "data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]"
        --set train.steps=12 --set checkpoint.interval=4 --set eval.interval=6
        --set train.threads=1 --set log.peak_tflops=1 --out "$SCRATCH/run")
rc=0
SIGMA_FAULTS=kill@checkpoint.rank_file#3 "$SIGMA" train "${common[@]}" > "$SCRATCH/killed.out" || rc=$?
[[ $rc -eq 137 ]] || die "expected the kill at step 12's checkpoint, got exit $rc"
"$SIGMA" train "${common[@]}" --resume auto > "$SCRATCH/resumed.out"
grep -q "resumed from .*step_00000008" "$SCRATCH/resumed.out" || die "did not resume at step 8"
[[ $(ls "$SCRATCH/run"/events.out.tfevents.* | wc -l) -eq 2 ]] || die "expected two event files"

# TensorBoard's own messages (it notices the restart and purges) go to tb.err.
python3 - "$SCRATCH/run" > "$SCRATCH/tb.out" 2> "$SCRATCH/tb.err" <<'PY' ||
import json, sys
import numpy as np
from tensorboard.backend.event_processing import event_accumulator as ea
run = sys.argv[1]
acc = ea.EventAccumulator(run, size_guidance={ea.SCALARS: 0})
acc.Reload()
tags = set(acc.Tags()["scalars"])
rows = [json.loads(l) for l in open(run + "/metrics.jsonl")]
rows = [r for r in rows if "event" not in r]
checked = 0
for key in ["loss", "lr", "grad_norm", "tok_per_s", "mfu", "valid_loss", "aux_loss",
            "moe.l1.max_dev_pct", "moe.l2.min_dev_pct", "moe.l2.idle_experts",
            "layers.l1.param_norm", "layers.l2.grad_norm"]:
    tag = key.replace(".", "/")
    assert tag in tags, f"FAIL: no scalar {tag}; have {sorted(tags)}"
    want = [(r["step"], r[key]) for r in rows if key in r]
    got = [(e.step, e.value) for e in acc.Scalars(tag)]
    assert [s for s, _ in got] == [s for s, _ in want], f"FAIL: {tag} steps {got}"
    assert np.array_equal(np.float32([v for _, v in want]), np.float32([v for _, v in got])), \
        f"FAIL: {tag} values differ"
    checked += len(got)
print(f"ok: tensorboard reads {len(tags)} scalar tags; {checked} values equal metrics.jsonl")
PY
  die "tensorboard check failed: $(tail -5 "$SCRATCH/tb.err")"
cat "$SCRATCH/tb.out"
