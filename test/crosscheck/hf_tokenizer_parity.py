"""sigma's byte-level BPE against Hugging Face `tokenizers` (pip install tokenizers).

    python3 hf_tokenizer_parity.py build DIR
        writes DIR/corpus/*.txt and, trained on it by Hugging Face, DIR/hf-<style>.json for
        the styles gpt2, gpt2-legacy (the same in the older file layout), gpt2-prefix
        (add_prefix_space, Roberta post-processor, added tokens with lstrip / rstrip /
        single_word / normalized), llama3, qwen2 (trained without the full byte alphabet, so
        unseen bytes are dropped), qwen2-nfc (Qwen2's pre-tokenizer after the NFC normalizer
        of Qwen2/Qwen3 files, with normalized and unnormalized added tokens) and o200k
    python3 hf_tokenizer_parity.py compare TOOL TOKENIZER.json...
        encodes a varied text set (scripts, code, whitespace runs, digits, emoji, special and
        added tokens in the text) with sigma (TOOL = test/tools/tokenize_tool) and with
        Hugging Face, with and without the post-processor, and compares the ids and both
        decodings (special tokens skipped and kept); then decodes random id sequences; then,
        for tokenizers without a normalizer whose vocabulary holds all 256 bytes, checks that
        sigma round-trips random byte strings, invalid UTF-8 included (Hugging Face takes
        only str, so this part is sigma's own contract)
    python3 hf_tokenizer_parity.py selftest TOOL DIR
        negative control: sigma given DIR/hf-gpt2.json without its first merge, Hugging
        Face the original: the comparison must fail

Exit 0 when everything matches, 1 on a mismatch (the first few are printed), 2 on misuse.
This file shares no code with sigma: only the tokenizer.json files and the tool's output.
"""
import json
import os
import random
import subprocess
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers
from tokenizers import processors, trainers

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
O200K = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
         r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
         r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}|"
         r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Samples per script; every character is in Unicode 14, which the system PCRE2 knows.
SAMPLES = [
    "The quick brown fox jumps over the lazy dog. naïve café résumé Straße Ærøskøbing",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. ΣΊΣΥΦΟΣ",
    "我能吞下玻璃而不伤身体。私はガラスを食べられます。나는 유리를 먹을 수 있어요.",
    "أنا قادر على أكل الزجاج و هذا لا يؤلمني. אני יכול לאכול זכוכית וזה לא מזיק לי",
    "मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती। நான் கண்ணாடி சாப்பிடுவேன்",
    "ฉันกินกระจกได้ แต่มันไม่ทำให้ฉันเจ็บ ພາສາລາວ ქართული Հայերեն ꦧꦱꦗꦮ",
    "😀 🎉 👍🏽 ❤️ 🇫🇷🇯🇵 👨‍👩‍👧 🧑🏿‍💻 ©®™ ✓✗ ★☆ ♠♣",
    "∀x∈ℝ: x² ≥ 0, ∑ᵢ aᵢ = ½ ⅔ ⅞ Ⅻ ①② ∞ ≠ ≈ 𝔸𝐁𝒞 ﬁﬂ",
    "def f(x):\n    return x**2  # square\n\tif (a != b) { y += 3; }\n",
    "for (int i = 0; i < n; ++i) {\n  sum += a[i] * b[i];\n}\n// done\n",
    "0 12 345 6789 3.14159 1,000,000 2024-01-31 ٣٤٥ १२३ ０１２",
    "a  b   c\t\td\n\n\ne \r\n f \u00a0g\u3000h\u2028i  \n   \u180e j\u200bk\ufeffl",
    "I'm you're he's they've we'll she'd IT'S DON'T We'Ll o'clock rock'n'roll",
    "ǅemal ǈubljana ᾈ ß ẞ İstanbul ı Ǆ ﬀ Å Å é é",
    "<html><body class=\"x\">Hello &amp; welcome!</body></html>\n{\"key\": [1, 2.5, null]}",
]
SPECIALS = ["<|endoftext|>", "<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>",
            "<|im_end|>", "<|fim|>", "<s>", "</s>"]
POOLS = ["abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789",
         "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'", "   \t\n\r\x0b\x0c",
         "\u00a0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000\x85",
         "\u180e\u200b\ufeff\x1c\x1f",
         "éèàüößçñøåæœÉÀÜ", "абвгдеёжзийклмнопАБВГД", "αβγδεζηθΩΣΔ", "中文字符测试日本語のテキスト한국어",
         "العربيةעברית", "हिन्दीதமிழ்ไทย", "😀🎉👍🏽❤️🇫🇷👨‍👩‍👧", "\u0301\u0308\u0327\u093f\u0e31",
         "²³¹¼½ⅫⅠ①٣६",
         # NFC rewrites these: combining marks after a base, singletons (Kelvin, Angstrom,
         # Ohm), Hangul jamo that compose into syllables, and marks that NFC reorders.
         "e\u0301A\u030a\u212b\u212a\u2126\u1100\u1161\u11a8\u1112\u1173\u11ab"
         "\u0344\u0958\u1e9b\u0323o\u0308\u0301\u0323\u0307", "ǅǈᾈ", "ʰʲˆ", "\u200d\u200c\u2060", "\x00\x01\x7f", "𝐀𝐁𝔸ꓐ"]
PIECES = ["'s", "'T", "'re", "'Ve", "'ll", "'d", "'M", "  ", "\r\n", " \n ", "1234567", "\n\n\n",
          "    ", "\t\t", " hello world ", "hello", "<|fim", "|>"] + SPECIALS


def fail(message):
    print(f"hf_tokenizer_parity: {message}", file=sys.stderr)
    sys.exit(2)


def corpus_lines(rng, count):
    for _ in range(count):
        words = []
        for _ in range(rng.randint(3, 14)):
            sample = rng.choice(SAMPLES)
            start = rng.randrange(len(sample))
            words.append(sample[start:start + rng.randint(1, 24)])
        yield rng.choice([" ", "  ", "\t", "\n", ", "]).join(words) + "\n"


def build(out_dir):
    corpus = os.path.join(out_dir, "corpus")
    os.makedirs(corpus, exist_ok=True)
    rng = random.Random(1234)
    files = []
    for d in range(4):
        path = os.path.join(corpus, f"doc{d}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(SAMPLES) * 8)
            f.writelines(corpus_lines(rng, 1500))
            f.write("<|endoftext|> between documents <|endoftext|>\n")
        files.append(path)
    alphabet = pre_tokenizers.ByteLevel.alphabet()

    def trained(pre_tokenizer, specials, full_alphabet=True, normalizer=None, **bpe):
        tok = Tokenizer(models.BPE(**bpe))
        if normalizer is not None:
            tok.normalizer = normalizer
        tok.pre_tokenizer = pre_tokenizer
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=1200, min_frequency=2, special_tokens=specials,
                                      initial_alphabet=alphabet if full_alphabet else [],
                                      show_progress=False)
        tok.train(files, trainer)
        return tok

    def split_style(pattern):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])

    gpt2 = trained(pre_tokenizers.ByteLevel(add_prefix_space=False), ["<|endoftext|>"])
    gpt2.post_processor = processors.ByteLevel(trim_offsets=False)
    gpt2.save(os.path.join(out_dir, "hf-gpt2.json"))
    # The layout of older files such as GPT-2's own: merges as "a b" strings, empty prefix
    # and suffix, no use_regex / ignore_merges / byte_fallback fields.
    legacy = json.loads(gpt2.to_str())
    model = legacy["model"]
    model["merges"] = [" ".join(pair) for pair in model["merges"]]
    model.update(continuing_subword_prefix="", end_of_word_suffix="")
    for key in ("ignore_merges", "byte_fallback"):
        del model[key]
    del legacy["pre_tokenizer"]["use_regex"]
    with open(os.path.join(out_dir, "hf-gpt2-legacy.json"), "w", encoding="utf-8") as f:
        json.dump(legacy, f, ensure_ascii=False)

    prefix = trained(pre_tokenizers.ByteLevel(add_prefix_space=True), ["<s>", "</s>"])
    prefix.post_processor = processors.RobertaProcessing(("</s>", prefix.token_to_id("</s>")),
                                                         ("<s>", prefix.token_to_id("<s>")))
    prefix.add_special_tokens([AddedToken("<|fim|>", lstrip=True, rstrip=True)])
    prefix.add_tokens([AddedToken("hello", single_word=True),
                       AddedToken(" hello world ", normalized=True),
                       AddedToken("<|fim", normalized=False), AddedToken("été", rstrip=True)])
    prefix.save(os.path.join(out_dir, "hf-gpt2-prefix.json"))

    llama = trained(split_style(LLAMA3), ["<|begin_of_text|>", "<|end_of_text|>"]
                    + [f"<|reserved_special_token_{i}|>" for i in range(4)], ignore_merges=True)
    bos = llama.token_to_id("<|begin_of_text|>")
    llama.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    llama.save(os.path.join(out_dir, "hf-llama3.json"))

    qwen = trained(split_style(QWEN2), ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                   full_alphabet=False)
    qwen.post_processor = processors.ByteLevel(trim_offsets=False)
    qwen.save(os.path.join(out_dir, "hf-qwen2.json"))

    # Qwen2/Qwen3 files carry an NFC normalizer. "cafe\u0301" is normalized, so it also
    # matches "café" and is matched after NFC; "A\u030a!" is not, so only that spelling.
    nfc = trained(split_style(QWEN2), ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                  normalizer=normalizers.NFC())
    nfc.post_processor = processors.ByteLevel(trim_offsets=False)
    nfc.add_tokens([AddedToken("cafe\u0301", normalized=True),
                    AddedToken("A\u030a!", normalized=False)])
    nfc.save(os.path.join(out_dir, "hf-qwen2-nfc.json"))

    o200k = trained(split_style(O200K), ["<|endoftext|>"])
    o200k.post_processor = processors.ByteLevel(trim_offsets=False)
    o200k.save(os.path.join(out_dir, "hf-o200k.json"))


def text_set(rng):
    texts = ["", " ", "  ", "\n", "a", "<|endoftext|>", " <|fim|> x", "hello", "say hello!",
             "hellos", "a hello world b", "été  x", "été", "<|fim|>",
             "<|im_start|>user\nhi<|im_end|>", "e\u0301", "\u212b", "\u1100\u1161\u11a8",
             "cafe\u0301 café caf\u00e9\u0301", "A\u030a! \u00c5! \u212b!", "o\u0323\u0308 q\u0307\u0323",
             "\u1112\u1173\u11ab<|im_end|>\u1100\u1161 x\u0301<|endoftext|>\u0301"]
    texts += SAMPLES
    texts += ["".join(SAMPLES), " ".join(SAMPLES), "\n\n".join(SAMPLES)]
    texts.append(" " * 300 + "x" + "\n" * 50 + "\t" * 20 + "y" * 200)
    texts.append("9" * 101 + "a" * 150 + "😀" * 40)
    for _ in range(1500):
        parts = []
        for _ in range(rng.randint(0, 30)):
            r = rng.random()
            if r < 0.25:
                parts.append(rng.choice(PIECES))
            elif r < 0.45:
                sample = rng.choice(SAMPLES)
                start = rng.randrange(len(sample))
                parts.append(sample[start:start + rng.randint(1, 20)])
            else:
                parts.append(rng.choice(rng.choice(POOLS)))
        texts.append("".join(parts))
    return texts


def run_tool(tool, tokenizer, mode, lines, *flags):
    result = subprocess.run([tool, mode, tokenizer, *flags], input="".join(l + "\n" for l in lines),
                            capture_output=True, text=True)
    if result.returncode != 0:
        print(f"{tokenizer}: tokenize_tool {mode} failed: {result.stderr.strip()}")
        sys.exit(1)
    return result.stdout.splitlines()


def lossy(hex_text):
    # Rust's from_utf8_lossy and Python's errors="replace" both emit one U+FFFD per maximal
    # invalid subsequence, so the two decodings agree when the bytes agree.
    return bytes.fromhex(hex_text).decode("utf-8", errors="replace")


def compare(tool, path, hf_path=None, quiet=False):
    hf = Tokenizer.from_file(hf_path or path)
    name = os.path.basename(path)
    rng = random.Random(99)
    texts = text_set(rng)
    mismatches = []
    for add in (True, False):
        flags = [] if add else ["--no-special"]
        rows = run_tool(tool, path, "encode", [t.encode().hex() for t in texts], *flags)
        if len(rows) != len(texts):
            fail(f"{name}: tool gave {len(rows)} rows for {len(texts)} texts")
        for text, row in zip(texts, rows):
            ids_field, skipped, kept = row.split("\t")
            ids = [int(i) for i in ids_field.split()]
            want = hf.encode(text, add_special_tokens=add).ids
            if ids != want:
                mismatches.append(f"encode(add_special_tokens={add}) {text!r}:\n"
                                  f"    hf    {want}\n    sigma {ids}")
                continue
            for skip, got in ((True, skipped), (False, kept)):
                if lossy(got) != hf.decode(want, skip_special_tokens=skip):
                    mismatches.append(f"decode(skip_special_tokens={skip}) of {text!r}")
    size = hf.get_vocab_size()
    sequences = [[rng.randrange(size + 3) for _ in range(rng.randint(0, 12))] for _ in range(2000)]
    rows = run_tool(tool, path, "decode", [" ".join(map(str, s)) for s in sequences])
    for ids, row in zip(sequences, rows):
        skipped, kept = row.split("\t")
        for skip, got in ((True, skipped), (False, kept)):
            if lossy(got) != hf.decode(ids, skip_special_tokens=skip):
                mismatches.append(f"decode(skip_special_tokens={skip}) of ids {ids}")
    checked = f"{len(texts)} texts x 2, {len(sequences)} id sequences"
    if round_trips(path, hf):
        blobs = [random_bytes(rng) for _ in range(3000)]
        rows = run_tool(tool, path, "encode", [b.hex() for b in blobs], "--no-special")
        for blob, row in zip(blobs, rows):
            if row.split("\t")[2] != blob.hex():
                mismatches.append(f"sigma round trip of bytes {blob!r}")
        checked += f", {len(blobs)} byte strings round-tripped"
    if not quiet:
        for m in mismatches[:8]:
            print(f"{name}: MISMATCH {m}")
        print(f"{name}: {len(mismatches)} mismatches ({checked})")
    return not mismatches


def round_trips(path, hf):
    """Whether decode(encode(x)) == x is promised: every byte is in the vocabulary, and
    nothing adds text (add_prefix_space) or swallows it (lstrip / rstrip added tokens)."""
    if hf.normalizer is not None:  # a normalizer rewrites text, so it need not come back
        return False
    vocab = hf.get_vocab(with_added_tokens=False)
    if not all(c in vocab for c in pre_tokenizers.ByteLevel.alphabet()):
        return False
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    if '"add_prefix_space": true' in json.dumps(spec["pre_tokenizer"]):
        return False
    return not any(t["lstrip"] or t["rstrip"] for t in spec["added_tokens"])


def random_bytes(rng):
    # Valid UTF-8, arbitrary bytes, and the classic invalid forms: stray continuation bytes,
    # truncated sequences, overlong encodings, surrogates, code points past U+10FFFF.
    parts = []
    for _ in range(rng.randint(0, 12)):
        r = rng.random()
        if r < 0.3:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 6))))
        elif r < 0.5:
            parts.append(rng.choice([b"\x80", b"\xbf", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98",
                                     b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
                                     b"\xf4\x90\x80\x80", b"\xfe", b"\xff"]))
        else:
            parts.append(rng.choice(SAMPLES + PIECES)[:rng.randint(1, 10)].encode())
    return b"".join(parts)


def selftest(tool, out_dir):
    """sigma reads a copy of hf-gpt2.json without its first merge, Hugging Face the
    original: the comparison must report mismatches."""
    original = os.path.join(out_dir, "hf-gpt2.json")
    with open(original, encoding="utf-8") as f:
        spec = json.load(f)
    del spec["model"]["merges"][0]
    changed = os.path.join(out_dir, "gpt2-without-first-merge.json")
    with open(changed, "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False)
    caught = not compare(tool, changed, hf_path=original, quiet=True)
    print(f"selftest: a tokenizer without one merge is {'caught' if caught else 'NOT caught'}")
    return caught


def main(argv):
    if len(argv) >= 2 and argv[0] == "build":
        build(argv[1])
        return 0
    if len(argv) >= 3 and argv[0] == "compare":
        ok = all([compare(argv[1], path) for path in argv[2:]])
        return 0 if ok else 1
    if len(argv) == 3 and argv[0] == "selftest":
        return 0 if selftest(argv[1], argv[2]) else 1
    fail("usage: build DIR | compare TOOL TOKENIZER.json... | selftest TOOL DIR")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
