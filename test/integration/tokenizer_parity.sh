# sigma's byte-level BPE against Hugging Face `tokenizers` (test/crosscheck/hf_tokenizer_parity.py):
# tokenizers of the GPT-2, GPT-2 with add_prefix_space and added tokens, Llama-3, Qwen2 (also
# with Qwen2/Qwen3's NFC normalizer) and o200k styles are trained by Hugging Face on a generated multi-script corpus, and two more by
# `sigma data train-tokenizer` (GPT-2 style, and Llama-3 style with a BOS template); sigma
# (through test/tools/tokenize_tool) and Hugging Face then encode and decode the same text set
# and must agree exactly, and sigma must round-trip random bytes. A negative control checks the
# comparison can fail, and malformed tokenizer.json files must give one line and exit 2.
# Then `sigma data prepare` with the Llama-3 style file: each document read back from the
# dataset must be Hugging Face's encoding with BOS, then EOS, for 1 and 2 threads alike.
source "$(dirname "$0")/common.bash"
SCRATCH=$(realpath "$SCRATCH")
PYTHON=${SIGMA_HF_PYTHON:-python3}
CHECK=test/crosscheck/hf_tokenizer_parity.py
TOOL=${TOKENIZE_TOOL:-$(dirname "$SIGMA")/test/tokenize_tool}
[[ -x $TOOL ]] || die "no tokenize_tool at $TOOL (it is built with the tests; or set TOKENIZE_TOOL)"
"$PYTHON" -c 'import tokenizers' 2> /dev/null \
  || die "$PYTHON cannot import tokenizers (pip install tokenizers; scripts/setup --with-test-deps)"

"$PYTHON" "$CHECK" build "$SCRATCH"

llama3=$("$PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1]); import hf_tokenizer_parity as p
print(p.LLAMA3)' test/crosscheck)
"$SIGMA" data train-tokenizer "$SCRATCH/corpus" --vocab-size 1200 \
  --out "$SCRATCH/sigma-gpt2.json" > "$SCRATCH/train-gpt2.out" \
  || { cat "$SCRATCH/train-gpt2.out"; die "sigma data train-tokenizer (GPT-2 style) failed"; }
"$SIGMA" data train-tokenizer "$SCRATCH/corpus" --vocab-size 1200 --pattern "$llama3" \
  --special-token '<|begin_of_text|>' --special-token '<|end_of_text|>' \
  --bos-token '<|begin_of_text|>' --out "$SCRATCH/sigma-llama3.json" > "$SCRATCH/train-llama3.out" \
  || { cat "$SCRATCH/train-llama3.out"; die "sigma data train-tokenizer (Llama-3 style) failed"; }

"$PYTHON" "$CHECK" compare "$TOOL" "$SCRATCH"/hf-*.json "$SCRATCH"/sigma-*.json \
  || die "sigma and Hugging Face tokenizers disagree"
"$PYTHON" "$CHECK" selftest "$TOOL" "$SCRATCH" \
  || die "the comparison did not catch a changed tokenizer"

# A JSONL of the corpus lines (field "body"), prepared with 1 and 2 threads.
"$PYTHON" - "$SCRATCH" <<'PY'
import glob, json, sys
with open(sys.argv[1] + "/docs.jsonl", "w", encoding="utf-8") as out:
    for path in sorted(glob.glob(sys.argv[1] + "/corpus/*.txt")):
        for line in open(path, encoding="utf-8"):
            if line.strip():
                out.write(json.dumps({"body": line}) + "\n")
PY
for threads in 1 2; do
  "$SIGMA" data prepare "$SCRATCH/docs.jsonl" --jsonl-field body --threads $threads \
    --tokenizer "$SCRATCH/sigma-llama3.json" --out "$SCRATCH/ds$threads" > "$SCRATCH/prepare.out" \
    || { cat "$SCRATCH/prepare.out"; die "sigma data prepare with a tokenizer.json failed"; }
done
cmp -s "$SCRATCH/ds1.bin" "$SCRATCH/ds2.bin" && cmp -s "$SCRATCH/ds1.idx" "$SCRATCH/ds2.idx" \
  || die "data prepare wrote different datasets with 1 and 2 threads"
"$PYTHON" - "$SCRATCH" <<'PY' || die "the prepared dataset disagrees with Hugging Face"
import json, sys
import numpy as np
from tokenizers import Tokenizer
scratch = sys.argv[1]
hf = Tokenizer.from_file(scratch + "/sigma-llama3.json")
eos = hf.token_to_id("<|end_of_text|>")
texts = [json.loads(line)["body"] for line in open(scratch + "/docs.jsonl", encoding="utf-8")]
idx = open(scratch + "/ds1.idx", "rb").read()
assert idx[:9] == b"MMIDIDX\x00\x00" and idx[17] == 8, idx[:18]
n = int(np.frombuffer(idx, np.uint64, 1, 18)[0])
lengths = np.frombuffer(idx, np.int32, n, 34)
pointers = np.frombuffer(idx, np.int64, n, 34 + 4 * n)
tokens = np.fromfile(scratch + "/ds1.bin", np.uint16)
assert n == len(texts), (n, len(texts))
for d, (length, pointer, text) in enumerate(zip(lengths, pointers, texts)):
    got = tokens[pointer // 2: pointer // 2 + length].tolist()
    want = hf.encode(text).ids + [eos]  # the post-processor's BOS, the text, EOS
    assert got == want, (d, text, got[:10], want[:10])
    assert hf.decode(got) == text, (d, text)
print(f"ok: {n} documents read back as Hugging Face encodes them (BOS text EOS)")
PY

# Malformed files, through the real binary: each is one line naming the file, and exit 2.
mkdir -p "$SCRATCH/docs"
echo "hello world" > "$SCRATCH/docs/a.txt"
malformed() {  # NAME EXPECTED PYTHON-EDIT-OF-j
  local name=$1 want=$2 edit=$3
  "$PYTHON" - "$SCRATCH/hf-gpt2.json" "$SCRATCH/$name.json" "$edit" <<'PY'
import json, sys
j = json.load(open(sys.argv[1], encoding="utf-8"))
exec(sys.argv[3])
json.dump(j, open(sys.argv[2], "w", encoding="utf-8"), ensure_ascii=False)
PY
  expect_user_error "$name.json: $want" \
    "$SIGMA" data prepare "$SCRATCH/docs" --tokenizer "$SCRATCH/$name.json" --out "$SCRATCH/bad"
}
echo '{"model": {"type": "BPE", ' > "$SCRATCH/truncated.json"
expect_user_error "truncated.json: not valid JSON" \
  "$SIGMA" data prepare "$SCRATCH/docs" --tokenizer "$SCRATCH/truncated.json" --out "$SCRATCH/bad"
malformed no-model '"model" is missing' 'del j["model"]'
malformed wordpiece 'model.type is "WordPiece"' 'j["model"]["type"] = "WordPiece"'
malformed unknown-merge 'model.merges[3] refers to "Ġzzz"' 'j["model"]["merges"][3] = ["Ġzzz", "a"]'
malformed digits 'pre_tokenizer.pretokenizers[0]: pre-tokenizer type "Digits" is not supported' \
  'j["pre_tokenizer"] = {"type": "Sequence",
                         "pretokenizers": [{"type": "Digits"}, j["pre_tokenizer"]]}'
malformed nfkc 'normalizer "NFKC" is not supported' 'j["normalizer"] = {"type": "NFKC"}'
echo "ok: sigma matches Hugging Face tokenizers; malformed files are one-line errors"
