// `sigma data train-tokenizer`: learns a byte-level BPE from text files and writes it as a
// Hugging Face tokenizer.json (model BPE with vocab and merges, ByteLevel pre-tokenizer or
// Split + ByteLevel, ByteLevel decoder, special tokens as added tokens) that both sigma's
// BpeTokenizer and Hugging Face `tokenizers` load and encode identically.
//
// The algorithm is the usual one (Sennrich et al. 2016, as GPT-2 applies it to bytes): count
// the pre-tokens of the corpus, start from the 256 byte symbols, and repeatedly merge the
// most frequent adjacent pair (ties: the pair of smaller ids) until the vocabulary is full or
// no pair occurs min_frequency times. Counting runs on all threads; merging on one.
//
// Leaves out: JSONL inputs, normalizers, unigram / word-piece models, and HF's options
// limit_alphabet, initial_alphabet and max_token_length (the alphabet is always all bytes).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sigma {

struct BpeTrainOptions {
  std::vector<std::string> inputs;  // text files or directories (walked recursively, sorted)
  std::string out_path;             // the tokenizer.json to write
  int64_t vocab_size = 32000;       // special tokens + 256 bytes + merges
  int64_t min_frequency = 2;        // a pair seen fewer times is never merged
  // Ids 0.. in this order; matched literally in the corpus and never counted in pre-tokens.
  std::vector<std::string> special_tokens = {"<|endoftext|>"};
  // Empty: GPT-2's ByteLevel regex. Otherwise a Split regex (Llama-3, Qwen2 or o200k style)
  // followed by ByteLevel without its own regex.
  std::string pattern;
  // When set (one of special_tokens), the post-processor puts it before every sequence.
  std::string bos_token;
  int num_threads = 0;  // 0: one per hardware thread
};

struct BpeTrainStats {
  int64_t files = 0;
  int64_t bytes = 0;
  int64_t distinct_pre_tokens = 0;
  int64_t merges = 0;
  int64_t vocab_size = 0;  // may fall short of the option when min_frequency stops early
  double seconds = 0;
};

BpeTrainStats train_bpe(const BpeTrainOptions& options);

}  // namespace sigma
