// Fuzz target: loading a Hugging Face tokenizer.json. The input is the file; one that loads
// must encode a fixed text (ASCII, special-token text, other scripts, invalid UTF-8) and
// decode the ids. Rejection only as a UserError.
#include "core/data/bpe_tokenizer.h"
#include "core/error.h"
#include "fuzz/scratch.h"

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::filesystem::path path = sigma::fuzz::scratch_dir("tokenizer_json") / "tokenizer.json";
  sigma::fuzz::write_file(path, {reinterpret_cast<const char*>(data), size});
  static const std::string kText =
      "Hello world! It's 2024: 3.14 tokens<|endoftext|>  naïve café 日本語\n\t\xff\xfe ok";
  try {
    sigma::BpeTokenizer tokenizer(path.string());
    std::vector<int32_t> ids = tokenizer.encode(kText);
    (void)tokenizer.decode(ids);
    (void)tokenizer.encode(kText, sigma::AddSpecialTokens::kNo);
    (void)tokenizer.vocab_size();
    (void)tokenizer.token_to_id("a");
    (void)tokenizer.id_to_token(0);
    (void)tokenizer.eos_id();
  } catch (const sigma::UserError&) {
  }
  return 0;
}
