// The byte tokenizer (every byte is its own id, 0..255, and 256 marks the end of a document)
// and make_tokenizer, which picks it or a Hugging Face tokenizer.json (bpe_tokenizer.h).
// The byte tokenizer needs no training and no file, which makes it the default for tests.
// Leaves out: tokenizer formats other than byte-level BPE (SentencePiece .model files).
#include "core/data/tokenizer.h"

#include "core/data/bpe_tokenizer.h"
#include "core/error.h"

#include <filesystem>

namespace sigma {

namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }

  // EOS is dropped. A model may have a larger (padded) vocabulary than the tokenizer and
  // sample an id no byte maps to: it becomes U+FFFD rather than an error mid-generation.
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    text.reserve(ids.size());
    for (int32_t id : ids) {
      if (id == kEos) continue;
      if (id >= 0 && id < 256) text.push_back(static_cast<char>(id));
      else text += "\xEF\xBF\xBD";
    }
    return text;
  }

  int32_t eos_id() const override { return kEos; }
  int64_t vocab_size() const override { return kEos + 1; }

 private:
  static constexpr int32_t kEos = 256;
};

}  // namespace

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(spec, ec))
    fail("tokenizer '{}': not \"byte\" and not a tokenizer.json file", spec);
  return std::make_unique<BpeTokenizer>(spec);
}

}  // namespace sigma
