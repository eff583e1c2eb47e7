// Byte-level BPE from a Hugging Face tokenizer.json (GPT-2, Llama-3, Qwen2 and o200k styles),
// encoding and decoding exactly as the `tokenizers` library does: added and special tokens
// are cut out of the text first (leftmost-longest, with lstrip / rstrip / single_word), the
// rest is pre-tokenized (pretokenizer.h), each piece's bytes are merged by rank, and the
// post-processor (TemplateProcessing, Roberta/Bert, ByteLevel, Sequence) adds BOS / EOS.
//
// sigma works on bytes where Hugging Face takes a str: invalid UTF-8 is encoded byte by byte
// (such bytes never match a pre-tokenizer pattern) and decode returns the exact bytes, so
// decode(encode(x)) == x for any x without special-token text, when the vocabulary holds all
// 256 bytes. On valid UTF-8 the ids are Hugging Face's; its decode is ours read as lossy UTF-8.
//
// The NFC normalizer (Qwen2/Qwen3) is applied to the text between added tokens, as Hugging
// Face does; invalid UTF-8 bytes pass through it unchanged (see pretokenizer.h).
//
// Leaves out: normalizers other than NFC (files with one are refused), BPE dropout, byte
// fallback, word-piece style prefixes and suffixes, truncation and padding, offsets, and
// Unicode classes newer than the Unicode version of the system's PCRE2 (Unicode 14 for Debian
// 12's 10.42), where Hugging Face's regex library may already know more characters.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/data/pretokenizer.h"
#include "core/data/tokenizer.h"

namespace sigma {

// Whether encode applies the post-processor (Hugging Face's add_special_tokens).
enum class AddSpecialTokens { kYes, kNo };
// Whether decode drops the text of special tokens (Hugging Face's skip_special_tokens).
enum class SkipSpecialTokens { kYes, kNo };

class BpeTokenizer final : public Tokenizer {
 public:
  // Reads a tokenizer.json file; a malformed or unsupported one is a UserError of one line
  // naming the file and what is wrong with it.
  explicit BpeTokenizer(const std::string& path);
  // The same from parsed JSON; `source` names it in errors.
  BpeTokenizer(const nlohmann::json& tokenizer_json, const std::string& source);
  ~BpeTokenizer() override;
  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;

  // Hugging Face's defaults: encode adds the post-processor's tokens, decode skips specials.
  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;

  std::vector<int32_t> encode(std::string_view text, AddSpecialTokens add) const;
  // Encodes documents on `num_threads` threads (0: one per hardware thread); the result is
  // identical to encoding each document in turn.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts,
                                                 AddSpecialTokens add,
                                                 int num_threads = 0) const;
  // Ids outside the vocabulary are skipped, as Hugging Face skips them.
  std::string decode(const std::vector<int32_t>& ids, SkipSpecialTokens skip) const;

  // The end-of-document token: the first special token among <|endoftext|>,
  // <|end_of_text|>, </s>, <eos>, <|eos|>; a UserError when the file has none of them.
  int32_t eos_id() const override;
  int64_t vocab_size() const override;  // the largest id plus one
  // A token as the file spells it (vocabulary spelling, or an added token's content).
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;

 private:
  struct State;
  struct Scratch;
  void encode_into(std::string_view text, AddSpecialTokens add, Scratch& scratch,
                   std::vector<int32_t>& out) const;
  void encode_piece(std::string_view bytes, Scratch& scratch, std::vector<int32_t>& out) const;
  void merge(std::string_view bytes, Scratch& scratch, std::vector<int32_t>& out) const;
  Scratch& local_scratch() const;  // this thread's buffers and cache for this tokenizer

  std::unique_ptr<const State> state_;
};

}  // namespace sigma
