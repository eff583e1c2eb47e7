# MoE training on the CPU (recipes/tiny/moe.toml): the loss falls, metrics.jsonl carries the
# per-layer balance fields, the top-k phase switch is logged at its step, and a run stopped
# before the switch and resumed across it equals an uninterrupted one bit for bit (losses
# and every saved tensor, the expert biases included).
source "$(dirname "$0")/common.bash"
make_dataset "$SCRATCH/data"
# The expert bias is on here so its checkpointing is part of the resume check.
common=(recipes/tiny/moe.toml --set "data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]"
        --set train.steps=12 --set checkpoint.interval=4 --set model.moe.bias_update_rate=1e-3
        --set eval.interval=0)

"$SIGMA" train "${common[@]}" --out "$SCRATCH/straight" > "$SCRATCH/straight.out"
"$SIGMA" train "${common[@]}" --out "$SCRATCH/resumed" --stop-at-step 4 > "$SCRATCH/first.out"
"$SIGMA" train "${common[@]}" --out "$SCRATCH/resumed" --resume auto > "$SCRATCH/second.out"
grep -q "resumed from" "$SCRATCH/second.out" || die "second run did not resume"

# until = 0.5 of 12 steps: steps 1-6 in phase 1, the switch before step 7.
grep -q "step 7 | moe: phase 2/2, top-k \[1 x3\]" "$SCRATCH/straight.out" \
  || die "no phase-switch line at step 7: $(grep moe: "$SCRATCH/straight.out")"
grep -q "step 7 | moe: phase 2/2" "$SCRATCH/second.out" || die "the resumed run did not switch"

[[ $(losses "$SCRATCH/straight/metrics.jsonl" | wc -l) -eq 12 ]] || die "expected 12 loss rows"
diff <(losses "$SCRATCH/straight/metrics.jsonl") <(losses "$SCRATCH/resumed/metrics.jsonl") \
  || die "losses differ between the straight and the resumed run"
first=$(losses "$SCRATCH/straight/metrics.jsonl" | head -1 | cut -d: -f2)
last=$(losses "$SCRATCH/straight/metrics.jsonl" | tail -1 | cut -d: -f2)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || die "loss did not fall: $first -> $last"

/usr/bin/python3 - "$SCRATCH/straight" "$SCRATCH/resumed" <<'PY'
import json, sys, h5py, numpy as np
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
rows = [r for r in rows if "event" not in r]  # step rows only
for row in rows:
    for key in ["aux_loss", "moe.phase"] + [f"moe.l{l}.{f}" for l in (1, 2) for f in
                ("top_k", "max_dev_pct", "min_dev_pct", "idle_experts", "lbl", "entropy")]:
        assert key in row, f"FAIL: step {row['step']} lacks {key}"
    assert "moe.l0.lbl" not in row, "FAIL: the dense layer 0 has balance fields"
assert [r["moe.l1.top_k"] for r in rows] == [4] * 6 + [1] * 6, "FAIL: top-k per step"
ckpt = "/checkpoints/step_00000012/rank_00000.h5"
a, b = h5py.File(sys.argv[1] + ckpt, "r"), h5py.File(sys.argv[2] + ckpt, "r")
names = []
a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
bias = "model/model.layers.1.mlp.gate.e_score_correction_bias"
assert bias in names and np.abs(a[bias][()]).max() > 0, "FAIL: expert bias not saved"
for n in names:
    if not np.array_equal(a[n][()], b[n][()]):
        sys.exit(f"FAIL: {n} differs between the straight and the resumed run")
print(f"ok: balance fields on {len(rows)} rows; {len(names)} tensors identical after resume")
PY
echo "ok: MoE loss $first -> $last, phase switch at step 7, resume across it bit-exact"
