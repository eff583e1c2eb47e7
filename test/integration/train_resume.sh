# Training on the CPU: the loss falls, checkpoints are committed, and 20 steps straight equal
# 10 steps + a restart + 10 more, bit for bit (losses and every saved tensor).
source "$(dirname "$0")/common.bash"
make_dataset "$SCRATCH/data"
common=(recipes/tiny/dense.toml --set "data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]"
        --set train.steps=20 --set checkpoint.interval=5 --set checkpoint.keep=2)

"$SIGMA" train "${common[@]}" --out "$SCRATCH/straight" > "$SCRATCH/straight.out"
"$SIGMA" train "${common[@]}" --out "$SCRATCH/resumed" --stop-at-step 10 > "$SCRATCH/first.out"
"$SIGMA" train "${common[@]}" --out "$SCRATCH/resumed" --resume auto > "$SCRATCH/second.out"
grep -q "resumed from" "$SCRATCH/second.out" || die "second run did not resume"

[[ $(losses "$SCRATCH/straight/metrics.jsonl" | wc -l) -eq 20 ]] || die "expected 20 loss rows"
diff <(losses "$SCRATCH/straight/metrics.jsonl") <(losses "$SCRATCH/resumed/metrics.jsonl") \
  || die "losses differ between the straight and the resumed run"

first=$(losses "$SCRATCH/straight/metrics.jsonl" | head -1 | cut -d: -f2)
last=$(losses "$SCRATCH/straight/metrics.jsonl" | tail -1 | cut -d: -f2)
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || die "loss did not fall: $first -> $last"

ckpt=$SCRATCH/straight/checkpoints
[[ -f $ckpt/step_00000020/COMMITTED && $(cat "$ckpt/latest") == step_00000020 ]] \
  || die "final checkpoint missing or not latest"
[[ $(ls -d "$ckpt"/step_* | wc -l) -eq 2 ]] || die "keep=2 not honoured: $(ls "$ckpt")"

/usr/bin/python3 - "$ckpt/step_00000020/rank_00000.h5" \
  "$SCRATCH/resumed/checkpoints/step_00000020/rank_00000.h5" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
names = []
a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
assert any(n.startswith("model/") for n in names) and any(n.startswith("optim/m/") for n in names)
for n in names:
    if not np.array_equal(a[n][()], b[n][()]):
        sys.exit(f"FAIL: {n} differs between the straight and the resumed run")
print(f"ok: {len(names)} tensors identical after resume")
PY
echo "ok: loss $first -> $last, resume bit-exact"
