# Data and expert parallelism on the CPU under mpirun (2 and 4 ranks on this machine):
#   - DP (ZeRO-1) follows one process's loss curve on the same global batch, within fp32
#     round-off (1e-5 relative: the sums over ranks run in another order than one process's
#     gradient accumulation; measured ~4e-8 here), and overlapping the reduction with
#     backward changes nothing, bit for bit (same sums, other timing)
#   - checkpoints written by 2 ranks resume on 1 and then 4, continuing the same curve
#   - EP (experts split over ranks, all-to-all dispatch) follows the curve without EP, and
#     an EP = 2 checkpoint resumes on one process
#   - a layout that does not fit the launch is one error line, from rank 0
source "$(dirname "$0")/common.bash"
source "$(dirname "$0")/mpi.bash"
make_dataset "$SCRATCH/data"
data="data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]"
# 4 micro-batches per step: splits over 1, 2 and 4 ranks. Small buckets: several of them.
dense=(recipes/tiny/dense.toml --set "$data" --set train.global_batch_tokens=512
       --set train.steps=12 --set checkpoint.interval=4 --set eval.interval=6
       --set parallelism.bucket_mb=0.05 --set train.threads=1)

"$SIGMA" train "${dense[@]}" --out "$SCRATCH/dense1" > /dev/null
mpi 2 "$SIGMA" train "${dense[@]}" --out "$SCRATCH/dense2" > "$SCRATCH/dense2.out"
mpi 4 "$SIGMA" train "${dense[@]}" --out "$SCRATCH/dense4" > /dev/null
mpi 2 "$SIGMA" train "${dense[@]}" --set parallelism.overlap_grad_reduce=false \
  --out "$SCRATCH/dense2_serial" > /dev/null
grep -aq "parallel: 2 ranks (mpi world (2 ranks)), dp 2 with ZeRO-1" "$SCRATCH/dense2.out" \
  || die "no parallel line: $(head -3 "$SCRATCH/dense2.out")"
same_losses "$SCRATCH/dense1/metrics.jsonl" "$SCRATCH/dense2/metrics.jsonl" 1e-5 "dp=2 vs one process"
same_losses "$SCRATCH/dense1/metrics.jsonl" "$SCRATCH/dense4/metrics.jsonl" 1e-5 "dp=4 vs one process"
same_losses "$SCRATCH/dense2/metrics.jsonl" "$SCRATCH/dense2_serial/metrics.jsonl" 0 \
  "reduction overlapped with backward vs after it"

# Resharding: 2 ranks write steps 4, then 1 rank continues to 8, then 4 ranks to 12.
mpi 2 "$SIGMA" train "${dense[@]}" --out "$SCRATCH/reshard" --stop-at-step 4 > /dev/null
"$SIGMA" train "${dense[@]}" --out "$SCRATCH/reshard" --resume auto --stop-at-step 8 \
  > "$SCRATCH/reshard1.out"
mpi 4 "$SIGMA" train "${dense[@]}" --out "$SCRATCH/reshard" --resume auto > "$SCRATCH/reshard4.out"
grep -aq "resumed from .*step_00000004 at step 4" "$SCRATCH/reshard1.out" || die "1 rank did not resume"
grep -aq "resumed from .*step_00000008 at step 8" "$SCRATCH/reshard4.out" || die "4 ranks did not resume"
same_losses "$SCRATCH/dense2/metrics.jsonl" "$SCRATCH/reshard/metrics.jsonl" 1e-5 \
  "2 ranks -> 1 -> 4 vs 2 ranks straight"

/usr/bin/python3 - "$SCRATCH/dense2/checkpoints/step_00000012" "$SCRATCH/reshard/checkpoints/step_00000012" <<'PY'
import sys, h5py
two, four = (h5py.File(d + "/index.h5", "r") for d in sys.argv[1:])
assert len(two["rank_files"]) == 2 and len(four["rank_files"]) == 4, "FAIL: rank file counts"
for name in ["model/model.embed_tokens.weight", "optim/v/lm_head.weight"]:
    for index, ranks in ((two, 2), (four, 4)):
        rows = sorted((int(s["row_offset"]), int(s["rows"]), int(s["rank"])) for s in index["tensors/" + name][:])
        assert [r for _, _, r in rows] == list(range(ranks)), f"FAIL: {name} slices {rows}"
        assert sum(n for _, n, _ in rows) == index["tensors/" + name].attrs["global_shape"][0], f"FAIL: {name} rows {rows}"
print("ok: each rank file holds its shard of every tensor: 2 and 4 slices")
PY

# Expert parallelism: 8 experts over 2 ranks, against one process.
moe=(recipes/tiny/moe.toml --set "$data" --set train.global_batch_tokens=512 --set train.steps=12
     --set eval.interval=0 --set model.moe.bias_update_rate=1e-3 --set checkpoint.interval=6
     --set train.threads=1)
"$SIGMA" train "${moe[@]}" --out "$SCRATCH/moe1" > /dev/null
mpi 2 "$SIGMA" train "${moe[@]}" --set parallelism.ep=2 --out "$SCRATCH/moe_ep2" > /dev/null
mpi 4 "$SIGMA" train "${moe[@]}" --set parallelism.ep=2 --out "$SCRATCH/moe_dp4_ep2" > /dev/null
same_losses "$SCRATCH/moe1/metrics.jsonl" "$SCRATCH/moe_ep2/metrics.jsonl" 1e-5 "ep=2 vs one process"
same_losses "$SCRATCH/moe1/metrics.jsonl" "$SCRATCH/moe_dp4_ep2/metrics.jsonl" 1e-5 \
  "dp=4 with ep=2 vs one process"
/usr/bin/python3 - "$SCRATCH/moe1/metrics.jsonl" "$SCRATCH/moe_ep2/metrics.jsonl" <<'PY'
import json, sys
one, ep = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
# Step 1 routes identical weights: the global token counts (all-reduced) match exactly.
for key in ("moe.l1.max_dev_pct", "moe.l1.min_dev_pct", "moe.l2.idle_experts", "moe.l2.max_dev_pct"):
    assert one[0][key] == ep[0][key], f"FAIL: step 1 {key}: {one[0][key]} vs {ep[0][key]}"
print("ok: the balance metrics of step 1 are the global batch's, as in one process")
PY
# EP 2 -> 1: the expert shards of two ranks load into one.
mpi 2 "$SIGMA" train "${moe[@]}" --set parallelism.ep=2 --out "$SCRATCH/moe_reshard" \
  --stop-at-step 6 > /dev/null
"$SIGMA" train "${moe[@]}" --out "$SCRATCH/moe_reshard" --resume auto > /dev/null
same_losses "$SCRATCH/moe_ep2/metrics.jsonl" "$SCRATCH/moe_reshard/metrics.jsonl" 1e-5 \
  "ep=2 -> one process vs ep=2 straight"

# A layout the launch cannot meet: one line, from rank 0 (mpirun adds its own banner).
rc=0
mpi 2 "$SIGMA" train "${dense[@]}" --set parallelism.dp=4 --out "$SCRATCH/bad" \
  > /dev/null 2> "$SCRATCH/bad.err" || rc=$?
[[ $rc -eq 2 ]] || die "a wrong dp exited $rc, not 2"
lines=$(grep -a "^sigma:" "$SCRATCH/bad.err" || true)
[[ $(printf '%s\n' "$lines" | wc -l) -eq 1 && "$lines" == *"parallelism.dp = 4 but 2 ranks were launched"* ]] \
  || die "expected one sigma line about parallelism.dp, got: $lines"
echo "ok: $lines"
