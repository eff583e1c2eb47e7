# Bad input gets one clear line on stderr and exit code 2, never a crash.
source "$(dirname "$0")/common.bash"
make_dataset "$SCRATCH/data"
src=(--set "data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]" --set train.steps=2)

printf 'include = "%s/recipes/tiny/dense.toml"\n[train]\nstpes = 3\n' "$PWD" > "$SCRATCH/typo.toml"
expect_user_error "did you mean train.steps" "$SIGMA" train "$SCRATCH/typo.toml"
expect_user_error "typo.toml:3" "$SIGMA" info "$SCRATCH/typo.toml"
printf 'include = "%s/recipes/tiny/dense.toml"\n[train]\nsteps = "ten"\n' "$PWD" > "$SCRATCH/type.toml"
expect_user_error "train.steps" "$SIGMA" info "$SCRATCH/type.toml"
expect_user_error "model.attention.n_k" "$SIGMA" info recipes/tiny/dense.toml --set model.attention.n_k=3
expect_user_error "no/such/recipe.toml" "$SIGMA" train no/such/recipe.toml
expect_user_error "$SCRATCH/missing" "$SIGMA" train recipes/tiny/dense.toml \
  --set "data.sources=[{path=\"$SCRATCH/missing\",weight=1.0}]" --out "$SCRATCH/run-missing"

cp "$SCRATCH/data.bin" "$SCRATCH/trunc.bin"
head -c 40 "$SCRATCH/data.idx" > "$SCRATCH/trunc.idx"
expect_user_error "trunc.idx" "$SIGMA" train recipes/tiny/dense.toml \
  --set "data.sources=[{path=\"$SCRATCH/trunc\",weight=1.0}]" --out "$SCRATCH/run-trunc"

"$SIGMA" train recipes/tiny/dense.toml "${src[@]}" --set checkpoint.interval=1 \
  --out "$SCRATCH/run" > /dev/null
rm "$SCRATCH/run/checkpoints/step_00000002/COMMITTED"
expect_user_error "not a committed checkpoint" "$SIGMA" train recipes/tiny/dense.toml "${src[@]}" \
  --out "$SCRATCH/run2" --resume "$SCRATCH/run/checkpoints/step_00000002"
expect_user_error "has shape" "$SIGMA" train recipes/tiny/dense.toml "${src[@]}" \
  --set model.d_model=32 --out "$SCRATCH/run3" --resume "$SCRATCH/run/checkpoints/step_00000001"
expect_user_error "--stop-at-step" "$SIGMA" train recipes/tiny/dense.toml --stop-at-step x
echo "ok: every bad input got one line and exit 2"
