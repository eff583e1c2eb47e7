// DataConfig: the [data] recipe section (sources, tokenizer, sequence length, validation).
// Recipe keys (docs, ranges) and cross-field checks: core/data/config.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sigma {

struct DataSource {
  std::string path;     // Megatron indexed dataset prefix (PREFIX.bin + PREFIX.idx)
  double weight = 1.0;  // sampling weight, normalised over all sources

  bool operator==(const DataSource&) const = default;
};

struct DataConfig {
  std::vector<DataSource> sources;
  // "byte" (256 byte ids + EOS = 256) or a Hugging Face tokenizer.json path (byte-level BPE)
  std::string tokenizer = "byte";
  int64_t seq_len = 256;
  double valid_fraction = 0.01;    // the last documents of each source, held out
  bool shuffle = true;

  bool operator==(const DataConfig&) const = default;
};

}  // namespace sigma
