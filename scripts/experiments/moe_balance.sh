#!/usr/bin/env bash
# Sigma-MoE-Tiny's balance finding at small scale (SIGMA-FAMILY.md section 2): a top-1 MoE
# (8 layers, 32 experts) trained five times on the CPU with no balancing, micro-batch LBL,
# global-batch LBL, the Top-1 LBL and the aux-loss-free expert bias. Prints the final
# per-layer deviation of the busiest and the idlest expert for each, and plots them over
# steps (runs/moe-balance/moe_balance.png).
#
# Usage: scripts/experiments/moe_balance.sh [SIGMA] [STEPS]   (defaults: build/sigma, 300)
# Needs data/corpus/system (scripts/corpus builds it) and python3 with matplotlib.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIGMA=${1:-build/sigma}
STEPS=${2:-300}
OUT=runs/moe-balance
DATA=data/corpus/system
[[ -f $DATA.idx ]] || { echo "no $DATA.idx: run scripts/corpus first" >&2; exit 1; }
mkdir -p "$OUT"

# A small top-1 MoE: every layer MoE, 32 experts of width 64, softmax router, raw top-1
# weights. 32 micro-batches of one 128-token sequence per step, so micro-batch LBL
# balances each sequence while global-batch LBL balances the 4096-token step (128 tokens
# per expert on average: enough for the per-step deviation to mean something).
cat > "$OUT/base.toml" <<TOML
[run]
name = "moe-balance"
seed = 1234

[model]
n_layers = 8
d_model = 64
d_ff = 64
vocab_size = 320
tie_embeddings = true

[model.attention]
n_q = 4
n_k = 2
n_v = 2
d_qk = 16
d_v = 16
qk_norm = true

[model.moe]
n_experts = 32
d_expert = 64
score = "softmax"
renormalize = false
top_k = [1]

[data]
sources = [{ path = "$DATA", weight = 1.0 }]
tokenizer = "byte"
seq_len = 128
valid_fraction = 0.0

[train]
steps = $STEPS
micro_batch = 1
global_batch_tokens = 4096

[optimizer]
lr = 3e-3

[lr_scheduler]
kind = "cosine"
warmup_steps = 20

[checkpoint]
interval = 0
save_final = false

[eval]
interval = 0

[log]
interval = 5
TOML

declare -A METHODS=(
  [none]=""
  [micro_lbl]="--set model.moe.lbl_coeff=1e-2 --set model.moe.lbl_scope=micro_batch"
  [global_lbl]="--set model.moe.lbl_coeff=1e-2 --set model.moe.lbl_scope=global_batch"
  [top1_lbl]="--set model.moe.top1_lbl_coeff=1e-2 --set model.moe.top1_lbl_temperature=0.1"
  [expert_bias]="--set model.moe.bias_update_rate=1e-3"
)
ORDER=(none micro_lbl global_lbl top1_lbl expert_bias)
for method in "${ORDER[@]}"; do
  echo "== $method"
  rm -rf "${OUT:?}/$method"  # a fresh run: metrics.jsonl appends
  # shellcheck disable=SC2086
  "$SIGMA" train "$OUT/base.toml" ${METHODS[$method]} --out "$OUT/$method" > "$OUT/$method.log"
  tail -1 "$OUT/$method.log"
done

python3 - "$OUT" "${ORDER[@]}" <<'PY'
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out, methods = sys.argv[1], sys.argv[2:]
rows = {m: [json.loads(l) for l in open(f"{out}/{m}/metrics.jsonl") if '"loss"' in l] for m in methods}
layers = sorted({int(k.split(".")[1][1:]) for k in rows[methods[0]][-1] if k.startswith("moe.l")})
print("\nfinal step, busiest / idlest expert deviation from uniform (%) per layer; layer 0's")
print("LBL value (N_E sum f p, 1.0 when balanced) and the final loss")
print(f"{'method':<12} " + " ".join(f"{'l' + str(l):>11}" for l in layers) + f" {'l0 LBL':>7} {'loss':>7}")
for m in methods:
    last = rows[m][-1]
    cells = [f"{last[f'moe.l{l}.max_dev_pct']:+5.0f}/{last[f'moe.l{l}.min_dev_pct']:+4.0f}" for l in layers]
    print(f"{m:<12} " + " ".join(f"{c:>11}" for c in cells) +
          f" {last['moe.l0.lbl']:7.3f} {last['loss']:7.3f}")
fig, axes = plt.subplots(2, len(methods), figsize=(4 * len(methods), 7), sharex=True, sharey="row")
for j, m in enumerate(methods):
    steps = [r["step"] for r in rows[m]]
    for l in layers:
        axes[0][j].plot(steps, [r[f"moe.l{l}.max_dev_pct"] for r in rows[m]], label=f"layer {l}")
        axes[1][j].plot(steps, [r[f"moe.l{l}.min_dev_pct"] for r in rows[m]])
    axes[0][j].set_title(m)
    axes[1][j].set_xlabel("step")
axes[0][0].set_ylabel("busiest expert vs uniform (%)")
axes[1][0].set_ylabel("idlest expert vs uniform (%)")
axes[0][0].legend(fontsize=7)
fig.tight_layout()
fig.savefig(f"{out}/moe_balance.png", dpi=100)
print(f"\nplot: {out}/moe_balance.png")
PY
