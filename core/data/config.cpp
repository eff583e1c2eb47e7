// The [data] recipe keys (and the items of data.sources) and their cross-field checks.
// Leaves out: whether a source's files exist and are valid (the loader checks that when it
// opens them), and per-phase mixtures (not supported yet).
#include "core/recipe/sections.h"

#include <fmt/format.h>

namespace sigma {

using schema::Range;

namespace {
// The byte tokenizer's ids: 256 byte values, then end-of-document.
constexpr int64_t kByteVocab = 257;
}  // namespace

const schema::Section<DataConfig>& data_section() {
  static const schema::Section<DataConfig> section = [] {
    schema::Section<DataSource> source(
        "One source of a data mixture: a Megatron indexed dataset and its sampling weight.");
    source
        .key("path", &DataSource::path,
             "dataset prefix: PREFIX.bin + PREFIX.idx (relative to the working directory)")
        .key("weight", &DataSource::weight,
             "sampling weight, normalised over all sources", Range::above(0));

    schema::Section<DataConfig> data("Training data: the source mixture, tokenizer and sequences.");
    data.key("sources", &DataConfig::sources,
             "the mixture; may be empty for `sigma info`, training needs at least one", source)
        .key("tokenizer", &DataConfig::tokenizer,
             "\"byte\" (ids 0..255 are bytes, 256 ends a document); BPE tokenizer.json later")
        .key("seq_len", &DataConfig::seq_len, "tokens per training sequence", Range::at_least(1),
             "tokens")
        .key("valid_fraction", &DataConfig::valid_fraction,
             "the last documents of each source held out for validation",
             Range::half_open(0, 1))
        .key("shuffle", &DataConfig::shuffle, "visit documents and samples in seeded order");
    return data;
  }();
  return section;
}

void check_data(const DataConfig& data, const ModelConfig& model, const schema::Checker& check) {
  for (size_t i = 0; i < data.sources.size(); ++i)
    if (data.sources[i].path.empty())
      check.fail(fmt::format("data.sources[{}].path", i),
                 "missing or empty; allowed: a dataset prefix (PREFIX.bin + PREFIX.idx)");
  if (data.tokenizer == "byte" && model.vocab_size < kByteVocab)
    check.fail("model.vocab_size",
               fmt::format("{} is too small for data.tokenizer = \"byte\"; allowed: >= {} "
                           "(256 bytes + end-of-document)",
                           model.vocab_size, kByteVocab));
}

}  // namespace sigma
