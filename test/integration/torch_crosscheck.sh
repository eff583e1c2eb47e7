# sigma against an independent PyTorch model: the loss, every parameter's gradient and the
# gradient norm of one training step, for the tiny recipes (DiffQKV + AugQ, untied; GQA
# + QK-norm, tied; MoE), the first also at a larger init where attention is far from uniform.
# The gradient comes out of the step-1 checkpoint: with lr = 0 and no clipping AdamW keeps
# the initial weights and stores m = (1 - beta1) * gradient (test/crosscheck/README.md).
# A negative control then checks that the comparison can fail.
source "$(dirname "$0")/common.bash"
SCRATCH=$(realpath "$SCRATCH")
PYTHON=/usr/bin/python3
CHECK=test/crosscheck/torch_sigma.py
"$PYTHON" -c 'import torch, h5py, numpy, tomllib' \
  || die "$PYTHON needs torch, h5py and numpy (scripts/setup --with-test-deps installs python3-torch, python3-h5py)"

# A deterministic corpus of 12 documents (~25 KB): pseudo-random words from a small LCG (exact
# in any awk's doubles), so the token stream is the same on every machine and for every build.
mkdir -p "$SCRATCH/corpus"
awk -v dir="$SCRATCH/corpus" 'BEGIN {
  n = split("the a model token layer query key value head norm gradient step loss batch " \
            "weight rope attention sigma of to and in is with for 0 1 2 3 4 5 6 7 8 9 , . ; ( )", w, " ")
  s = 1
  for (d = 0; d < 12; d++) {
    f = sprintf("%s/doc%02d.txt", dir, d); line = ""
    for (i = 0; i < 450; i++) {
      s = (s * 75 + 74) % 65537
      line = line w[1 + s % n] " "
      if (length(line) > 70) { print line > f; line = "" }
    }
    close(f)
  }
}'
"$SIGMA" data prepare "$SCRATCH/corpus" --tokenizer byte --out "$SCRATCH/data" > /dev/null

# Two micro-batches of 2 x 64 tokens: gradient accumulation is part of what is checked.
micro_batch=2
seq_len=64
step_tokens=$((micro_batch * seq_len * 2))
gradient_step=(--set train.steps=1 --set optimizer.lr=0 --set train.grad_clip=0
               --set checkpoint.interval=1 --set data.shuffle=false --set data.valid_fraction=0
               --set eval.interval=0 --set "data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]"
               --set train.micro_batch=$micro_batch --set data.seq_len=$seq_len
               --set train.global_batch_tokens=$step_tokens)

failed=()
check_run() {  # NAME RECIPE [--set key=value]...
  local name=$1 recipe=$2
  shift 2
  "$SIGMA" train "$recipe" "${gradient_step[@]}" "$@" --out "$SCRATCH/$name" > "$SCRATCH/$name.out" 2>&1 \
    || { cat "$SCRATCH/$name.out"; die "sigma train $recipe${*:+ $*} failed"; }
  "$PYTHON" "$CHECK" "$SCRATCH/$name" || failed+=("$name")
}
check_run dense recipes/tiny/dense.toml
check_run gqa-qknorm recipes/tiny/gqa-qknorm.toml
# At the default init (std 0.02) attention is nearly uniform and, with AugQ, the Q/K path's
# gradients are ~1e-7. At std 0.1 attention is far from uniform and AugQ's SiLU works off its
# linear part, while fp32 stays well conditioned (errors ~1e-6 of scale; at 0.4 they pass 1e-4).
check_run dense-init0.1 recipes/tiny/dense.toml --set model.init_std=0.1
# MoE (tiny/moe.toml): softmax router, renormalised top-4/top-2 phase, shared expert,
# global-batch LBL over the two micro-batches (the routing pre-pass) and z-loss; then a
# sigmoid router with raw weights, micro-batch LBL and the Top-1 LBL.
check_run moe recipes/tiny/moe.toml
check_run moe-sigmoid-top1 recipes/tiny/moe.toml --set model.moe.score=sigmoid \
  --set model.moe.renormalize=false --set model.moe.lbl_scope=micro_batch \
  --set model.moe.top1_lbl_coeff=0.01
[[ ${#failed[@]} -eq 0 ]] || die "sigma differs from PyTorch on: ${failed[*]}"

# Negative control: one gradient element off by 0.1% of the tensor's largest must fail.
cp -r "$SCRATCH/dense" "$SCRATCH/dense-perturbed"
"$PYTHON" - "$SCRATCH/dense-perturbed/checkpoints/step_00000001/rank_00000.h5" <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    m = f["optim/m/model.layers.0.self_attn.k_proj.weight"]
    a = m[()]
    i = np.unravel_index(np.abs(a).argmax(), a.shape)
    a[i] *= 1.001
    m[...] = a
PY
rc=0
"$PYTHON" "$CHECK" "$SCRATCH/dense-perturbed" > "$SCRATCH/perturbed.out" || rc=$?
[[ $rc -eq 1 ]] || { cat "$SCRATCH/perturbed.out"; die "a perturbed gradient was not caught (exit $rc)"; }
echo "ok: sigma matches PyTorch on the tiny recipes, MoE included (and at init std 0.1); a 0.1% gradient error is caught"
