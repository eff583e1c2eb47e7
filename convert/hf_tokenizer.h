// Tokenizer files of a Hugging Face export, and the tokenizer of an import.
//
// A BPE run's tokenizer.json is copied as is. A byte-level run (data.tokenizer = "byte": ids
// 0..255 are bytes, 256 ends a document) gets a tokenizer.json that `tokenizers` reads as the
// same tokenizer: a byte-level BPE with the 256 single-byte tokens as ids 0..255 (in GPT-2's
// byte-to-Unicode spelling, core/data/byte_unicode.h), no merges, no regex split, and the
// special token <|endoftext|> = 256. Every text then encodes to its bytes, except that the
// literal text "<|endoftext|>" becomes id 256 there (sigma's byte tokenizer keeps its 13 bytes).
// Import recognises that file and gives the run data.tokenizer = "byte" again.
#pragma once

#include "core/data/tokenizer.h"

#include <string>

namespace sigma {

struct HfTokenizerFiles {
  std::string summary;  // one phrase for the export's summary line
};

// Writes tokenizer.json and tokenizer_config.json into out_dir.
HfTokenizerFiles write_hf_tokenizer(const std::string& spec, const Tokenizer& tokenizer,
                                    const std::string& out_dir, int64_t max_length);

// The tokenizer spec for a run imported from hf_dir: "byte" for sigma's byte-level file, else
// the path of a copy of hf_dir/tokenizer.json in out_run; "" when hf_dir has none.
std::string import_hf_tokenizer(const std::string& hf_dir, const std::string& out_run);

}  // namespace sigma
