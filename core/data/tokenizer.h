// Tokenizer: text <-> token ids. The byte tokenizer maps each byte to its value (0..255)
// and uses id 256 for end-of-document; BpeTokenizer (bpe_tokenizer.h) reads a Hugging Face
// tokenizer.json. encode and decode may be called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sigma {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int64_t vocab_size() const = 0;  // ids are in [0, vocab_size)
};

// "byte" -> the byte tokenizer; a path to a tokenizer.json -> BpeTokenizer. Anything else,
// or a malformed file, is a UserError naming it.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);

}  // namespace sigma
