# sigma generate, eval and convert on a tiny trained model: determinism, stop sequences,
# streaming output, every bench and its JSON, --device, and bad input (one line, exit 2).
source "$(dirname "$0")/common.bash"
make_dataset "$SCRATCH/data"
data=(--set "data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]")
"$SIGMA" train recipes/tiny/dense.toml "${data[@]}" --set train.steps=4 --set eval.interval=0 \
  --set train.threads=1 --out "$SCRATCH/run" > /dev/null

gen() { "$SIGMA" generate "$SCRATCH/run" --prompt "int main(" --max-new-tokens 24 --device cpu "$@"; }
greedy=$(gen 2> "$SCRATCH/gen.err")
[[ "$greedy" == "$(gen 2> /dev/null)" ]] || die "greedy generation is not deterministic"
grep -q "KV cache 384 bytes/token fp32 (K 1 heads x 16, V 2 heads x 16, 2 layers); GQA with 2 K heads: 512 bytes/token, 25.0% saved" \
  "$SCRATCH/gen.err" || die "no KV cache line: $(cat "$SCRATCH/gen.err")"
a=$(gen --temperature 1 --top-k 50 --top-p 0.95 --seed 5 2> /dev/null)
[[ "$a" == "$(gen --temperature 1 --top-k 50 --top-p 0.95 --seed 5 2> /dev/null)" ]] || die "a seed does not fix sampling"
# A stop sequence taken from the sampled text itself: the output must end right before it.
body=${a%$'\n'}
[[ ${#body} -ge 8 ]] || die "sampled text too short to test --stop: '$a'"
stop=${body:5:3}
# Command substitution drops trailing newlines from `out`, so from the expected text too.
prefix=$(printf '%s' "${body%%"$stop"*}")
out=$(gen --temperature 1 --top-k 50 --top-p 0.95 --seed 5 --stop "$stop" 2> "$SCRATCH/stop.err")
[[ "$out" == "$prefix" ]] || die "--stop '$stop': got '$out', want '$prefix'"
grep -q "finish: stop" "$SCRATCH/stop.err" || die "no 'finish: stop' in $(cat "$SCRATCH/stop.err")"

# --device auto: the GPU where there is one (a bf16 KV cache, half the bytes), else the CPU's
# very text; --device cuda without a GPU is one clear line.
auto=$("$SIGMA" generate "$SCRATCH/run" --prompt "int main(" --max-new-tokens 24 2> "$SCRATCH/auto.err")
if grep -q " on cuda | KV cache 192 bytes/token bf16 " "$SCRATCH/auto.err"; then
  "$SIGMA" eval "$SCRATCH/run" --bench ppl --device cuda > /dev/null
  "$SIGMA" eval "$SCRATCH/run" --bench mc --data eval/tasks/mc.jsonl --device cuda > /dev/null
else
  grep -q " on cpu | KV cache 384 bytes/token fp32 " "$SCRATCH/auto.err" || die "--device auto: $(cat "$SCRATCH/auto.err")"
  [[ "$auto" == "$greedy" ]] || die "--device auto on the CPU differs from --device cpu"
  expect_user_error "--device cuda: no GPU" "$SIGMA" generate "$SCRATCH/run" --prompt x --device cuda
  expect_user_error "--device cuda: no GPU" "$SIGMA" eval "$SCRATCH/run" --bench ppl --device cuda
fi
expect_user_error "--device: gpu not in {auto,cpu,cuda}" "$SIGMA" generate "$SCRATCH/run" --prompt x --device gpu

ev() { "$SIGMA" eval "$SCRATCH/run" --threads 1 --device cpu "$@"; }
ev --bench ppl --out "$SCRATCH/ppl.json" > /dev/null
ev --bench ppl --data "$SCRATCH/data" --limit 8 > /dev/null
ev --bench mc --data eval/tasks/mc.jsonl --out "$SCRATCH/mc.json" > /dev/null
ev --bench aimicius --limit 1 --max-new-tokens 8 --out "$SCRATCH/aimicius.json" > "$SCRATCH/aimicius.txt"
for metric in '"perplexity"' '"bits_per_byte"'; do grep -q "$metric" "$SCRATCH/ppl.json" || die "ppl: no $metric"; done
for metric in '"acc"' '"acc_norm"'; do grep -q "$metric" "$SCRATCH/mc.json" || die "mc: no $metric"; done
for metric in exact_match cmd_score all_fields result_accuracy code_detected plan_valid plan_improved \
              syntax jaccard column_recall; do
  grep -q "\"$metric\"" "$SCRATCH/aimicius.json" || die "aimicius: no $metric in the JSON"
  grep -q " $metric " "$SCRATCH/aimicius.txt" || die "aimicius: no $metric in the table"
done

# CMDGen-style items from the man pages, where this machine has them.
if [[ -e /usr/share/man/man1/ls.1.gz || -e /usr/share/man/man1/ls.1 ]]; then
  scripts/cmdgen-from-man --commands ls --per-command 3 --out "$SCRATCH/cmdgen-man.jsonl" 2> /dev/null
  [[ $(grep -c '"answer": "ls -' "$SCRATCH/cmdgen-man.jsonl") -eq 3 ]] || die "cmdgen-from-man: $(cat "$SCRATCH/cmdgen-man.jsonl")"
  ev --bench aimicius:cmdgen --data "$SCRATCH/cmdgen-man.jsonl" --max-new-tokens 8 | grep -q "exact_match_generic" ||
    die "the generated CMDGen items did not evaluate"
fi

# Bad input.
expect_user_error "unknown bench" "$SIGMA" eval "$SCRATCH/run" --bench nope
expect_user_error "unknown task" "$SIGMA" eval "$SCRATCH/run" --bench aimicius:nope
expect_user_error "--bench mc needs --data" "$SIGMA" eval "$SCRATCH/run" --bench mc
printf '{"context": "a", "choices": ["b", "c"], "answer": 0}\n{"context": "a", "choices": ["b"], "answer": 0}\n' > "$SCRATCH/bad-mc.jsonl"
expect_user_error "bad-mc.jsonl:2: \"choices\" needs at least two" "$SIGMA" eval "$SCRATCH/run" --bench mc --data "$SCRATCH/bad-mc.jsonl"
printf '{"question": "q", "answer": "a"}\n{not json\n' > "$SCRATCH/bad-cmdgen.jsonl"
expect_user_error "bad-cmdgen.jsonl:2: not valid JSON" "$SIGMA" eval "$SCRATCH/run" --bench aimicius:cmdgen --data "$SCRATCH/bad-cmdgen.jsonl"
printf '{"question": "q", "answer": "T | frobnicate"}\n' > "$SCRATCH/bad-kql.jsonl"
expect_user_error "bad-kql.jsonl:1: the gold \"answer\" fails the KQL syntax check" "$SIGMA" eval "$SCRATCH/run" --bench aimicius:nl2kql --data "$SCRATCH/bad-kql.jsonl"
expect_user_error "no/such" "$SIGMA" generate no/such --prompt x
step=$(ls -d "$SCRATCH/run/checkpoints/step_"* | tail -1)
cp -r "$step" "$SCRATCH/uncommitted"
rm "$SCRATCH/uncommitted/COMMITTED"
expect_user_error "not a committed checkpoint" "$SIGMA" generate "$SCRATCH/uncommitted" --prompt x
expect_user_error "not a committed checkpoint" "$SIGMA" eval "$SCRATCH/uncommitted" --bench ppl
expect_user_error "not a committed checkpoint" "$SIGMA" convert "$SCRATCH/uncommitted" --to hf "$SCRATCH/hf"
mkdir -p "$SCRATCH/gpt2"
printf '{"architectures": ["GPT2LMHeadModel"], "vocab_size": 320}\n' > "$SCRATCH/gpt2/config.json"
expect_user_error "architecture \"GPT2LMHeadModel\" is not supported" "$SIGMA" convert "$SCRATCH/gpt2" --from hf "$SCRATCH/imported"
expect_user_error "not a Hugging Face model directory" "$SIGMA" convert "$SCRATCH/run" --from hf "$SCRATCH/imported"
expect_user_error "exactly one of --to hf" "$SIGMA" convert "$SCRATCH/run" "$SCRATCH/hf"
echo "ok: generate, eval and convert, and their bad input"
