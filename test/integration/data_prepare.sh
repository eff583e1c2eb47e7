# `sigma data prepare`: text, .gz and JSONL in, a Megatron dataset out whose sizes follow
# from the input; a reader written from the format description (numpy, as Megatron reads
# it) gets the documents back; bad input gets one line and exit 2.
source "$(dirname "$0")/common.bash"

in=$SCRATCH/in
mkdir -p "$in/sub"
printf 'hello\n' > "$in/a.txt"                 # 6 bytes
printf 'second file' > "$in/sub/b.md"          # 11 bytes
printf 'zipped text\n' | gzip > "$in/c.txt.gz" # 12 bytes once decompressed
: > "$in/empty.txt"                            # skipped: empty
printf 'bin\0ary' > "$in/blob.dat"             # skipped: binary
printf '{"text": "one"}\n{"text": "two", "id": 2}\n' > "$in/d.jsonl"  # 3 + 3 bytes

out=$("$SIGMA" data prepare "$in" --tokenizer byte --out "$SCRATCH/ds") || die "prepare failed"
echo "$out"
documents=5
tokens=$((6 + 11 + 12 + 3 + 3 + documents))  # one EOS per document
grep -qE "^documents +$documents\$" <<< "$out" || die "expected $documents documents"
grep -qE "^tokens +$tokens " <<< "$out" || die "expected $tokens tokens"
grep -qE "^skipped +1 " <<< "$out" || die "expected one skipped file"
# u16 tokens; .idx = 34-byte header + 12 bytes per sequence + 8 per document index.
[[ $(stat -c %s "$SCRATCH/ds.bin") -eq $((2 * tokens)) ]] || die "ds.bin has the wrong size"
[[ $(stat -c %s "$SCRATCH/ds.idx") -eq $((34 + 12 * documents + 8 * (documents + 1))) ]] ||
  die "ds.idx has the wrong size"

/usr/bin/python3 - "$SCRATCH/ds" << 'EOF' || die "numpy reader disagrees"
import sys, numpy as np
prefix = sys.argv[1]
idx = open(prefix + ".idx", "rb").read()
assert idx[:9] == b"MMIDIDX\x00\x00", idx[:9]
version = int(np.frombuffer(idx, np.uint64, 1, 9)[0])
n, m = (int(x) for x in np.frombuffer(idx, np.uint64, 2, 18))
code = idx[17]
assert (version, code, n, m) == (1, 8, 5, 6), (version, code, n, m)
lengths = np.frombuffer(idx, np.int32, n, 34)
pointers = np.frombuffer(idx, np.int64, n, 34 + 4 * n)
docs = np.frombuffer(idx, np.int64, m, 34 + 12 * n)
assert list(docs) == list(range(6)), docs
tokens = np.fromfile(prefix + ".bin", np.uint16)
texts = []
for length, pointer in zip(lengths, pointers):
    seq = tokens[pointer // 2: pointer // 2 + length]
    assert seq[-1] == 256, seq
    texts.append(bytes(seq[:-1].astype(np.uint8)).decode())
want = ["hello\n", "zipped text\n", "one", "two", "second file"]
assert texts == want, texts
EOF
echo "ok: numpy reads the documents back"

printf '{"text": "fine"}\n{"text": broken\n' > "$SCRATCH/bad.jsonl"
expect_user_error "bad.jsonl:2: malformed JSON" \
  "$SIGMA" data prepare "$SCRATCH/bad.jsonl" --out "$SCRATCH/bad"
[[ ! -e "$SCRATCH/bad.idx" ]] || die "a failed prepare left an index"
expect_user_error "input $SCRATCH/missing: not found" \
  "$SIGMA" data prepare "$SCRATCH/missing" --out "$SCRATCH/missing-out"
expect_user_error "tokenizer 'gpt2'" "$SIGMA" data prepare "$in" --tokenizer gpt2 --out "$SCRATCH/t"
echo "ok: data prepare"
