# Hugging Face export and import, checked with the real client: each model below (byte-level,
# and one with a BPE tokenizer.json that must encode as sigma does) is trained for two steps, exported (sigma convert --to hf), loaded by transformers (native Llama, Qwen3 and
# Qwen3-MoE where the model is exactly one, our modeling_sigma.py otherwise) whose logits and
# greedy tokens must match sigma's; the export is imported back (--from hf) and must give the
# same weights bit for bit, and training resumes from the import. Models saved by
# transformers itself (Llama, Qwen3-MoE) are imported and must give transformers' logits.
# A negative control checks that a mismatch is caught. Skips (exit 77) where torch and transformers cannot be imported.
source "$(dirname "$0")/common.bash"
SCRATCH=$(realpath "$SCRATCH")
PYTHON=${SIGMA_HF_PYTHON:-python3}
"$PYTHON" -c 'import torch, transformers' 2> /dev/null || {
  echo "skipped: $PYTHON cannot import torch and transformers (scripts/setup --with-test-deps installs them)"
  exit 77
}
TOOL=$(dirname "$SIGMA")/test/model_tool
[[ -x "$TOOL" ]] || die "no $TOOL (build the model_tool target)"
make_dataset "$SCRATCH/data"
train=(--set "data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]" --set train.steps=2
       --set eval.interval=0 --set model.init_std=0.1 --set train.threads=1)
text='Sigma: DiffQKV keeps K and V apart; caf'$'\xc3\xa9'' 42'
printf '%s' "$text" > "$SCRATCH/prompt.text"
od -An -tu1 -v "$SCRATCH/prompt.text" | tr -s ' \n' ' ' > "$SCRATCH/prompt.ids"  # byte ids
# A BPE run: its tokenizer.json travels with the export.
"$SIGMA" data train-tokenizer core models --vocab-size 384 --out "$SCRATCH/bpe.json" > /dev/null
"$SIGMA" data prepare core models --tokenizer "$SCRATCH/bpe.json" --out "$SCRATCH/data-bpe" > /dev/null

specs=()
export_check() {  # NAME RECIPE ARCH [--set key=value]...
  local name=$1 recipe=$2 arch=$3 run=$SCRATCH/$1
  shift 3
  "$SIGMA" train "$recipe" "${train[@]}" "$@" --out "$run" > "$run.train.log" 2>&1 ||
    { cat "$run.train.log"; die "training $name failed"; }
  "$SIGMA" convert "$run" --to hf "$run-hf" || die "export of $name failed"
  cp "$SCRATCH/prompt.text" "$run.text"
  "$TOOL" encode "$run" "$run.text" > "$run.ids" || die "model_tool encode $name failed"
  "$TOOL" logits "$run" "$run.ids" "$run" 8 || die "model_tool logits $name failed"
  "$SIGMA" convert "$run-hf" --from hf "$run-back" > /dev/null || die "import of $name failed"
  "$TOOL" same-weights "$run" "$run-back" || die "$name: export + import changed the weights"
  specs+=("$run-hf:$run:$arch:1e-4")
}
export_check dense recipes/tiny/dense.toml SigmaForCausalLM
export_check llama recipes/tiny/gqa-qknorm.toml LlamaForCausalLM --set model.attention.qk_norm=false
export_check qwen3 recipes/tiny/gqa-qknorm.toml Qwen3ForCausalLM --set model.tie_embeddings=false
export_check moe recipes/tiny/moe.toml SigmaForCausalLM --set model.moe.score=sigmoid \
  --set model.moe.bias_update_rate=0.01
export_check bpe recipes/tiny/dense.toml SigmaForCausalLM --set model.vocab_size=384 \
  --set "data.tokenizer=\"$SCRATCH/bpe.json\"" --set "data.sources=[{path=\"$SCRATCH/data-bpe\",weight=1.0}]"
export_check qwen3moe recipes/tiny/moe.toml Qwen3MoeForCausalLM --set model.moe.n_shared_experts=0 \
  --set model.moe.d_shared_expert=0 --set 'model.moe.phases=[]' --set 'model.moe.top_k=[2]'

# bf16, sharded: transformers reads the index and the shards.
"$SIGMA" convert "$SCRATCH/dense" --to hf "$SCRATCH/dense-bf16" --dtype bf16 --shard-size 0.1 > /dev/null
[[ -f "$SCRATCH/dense-bf16/model.safetensors.index.json" ]] || die "the bf16 export is not sharded"
specs+=("$SCRATCH/dense-bf16:$SCRATCH/dense:SigmaForCausalLM:2e-2")

# Models saved by transformers itself (its own file layout, e.g. its expert format) imported.
for arch in LlamaForCausalLM Qwen3MoeForCausalLM; do
  "$PYTHON" test/crosscheck/hf_transformers_check.py make "$SCRATCH/saved-$arch" "$arch" ||
    die "transformers could not save a $arch"
  "$SIGMA" convert "$SCRATCH/saved-$arch" --from hf "$SCRATCH/imported-$arch" > /dev/null ||
    die "import of a $arch saved by transformers failed"
  cp "$SCRATCH/prompt.ids" "$SCRATCH/imported-$arch.ids"
  "$TOOL" logits "$SCRATCH/imported-$arch" "$SCRATCH/prompt.ids" "$SCRATCH/imported-$arch" 8
  specs+=("$SCRATCH/saved-$arch:$SCRATCH/imported-$arch:$arch:1e-4")
done

"$PYTHON" test/crosscheck/hf_transformers_check.py "${specs[@]}" || die "transformers differs from sigma"

# Negative control: the Llama export against the dense model's logits must fail.
rc=0
"$PYTHON" test/crosscheck/hf_transformers_check.py "$SCRATCH/llama-hf:$SCRATCH/dense:LlamaForCausalLM:1e-4" \
  > "$SCRATCH/negative.out" 2>&1 || rc=$?
[[ $rc -eq 1 ]] || { cat "$SCRATCH/negative.out"; die "a wrong model was not caught (exit $rc)"; }

# An imported model continues training.
"$SIGMA" train "$SCRATCH/dense-back/recipe.toml" --set "data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]" \
  --set train.steps=1 --set eval.interval=0 --set train.threads=1 --resume auto > "$SCRATCH/resume.log" 2>&1 ||
  { cat "$SCRATCH/resume.log"; die "training from the imported checkpoint failed"; }
grep -q "resumed from .*step_00000000 at step 0" "$SCRATCH/resume.log" || die "the import was not resumed"
echo "ok: transformers matches sigma on every export; export + import keeps the weights bit for bit"
