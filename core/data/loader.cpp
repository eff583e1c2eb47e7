// The resumable blended loader (semantics in loader.h). Nothing proportional to the token
// count is held in memory: per source and epoch we keep the document order, a prefix sum of
// document lengths over it (a sample's start is found by binary search) and the sample
// order, and read tokens straight from the memory-mapped dataset.
// Leaves out: sharding samples across data-parallel ranks (each rank will take every
// world_size-th sample once the trainer is distributed).
#include "core/data/loader.h"

#include "core/error.h"

#include <algorithm>
#include <cmath>
#include <random>

namespace sigma {

namespace {

// Chains one value into a seed (splitmix64's finaliser over seed + golden * (value + 1)), so
// that (run seed, source, split, epoch, stream) give independent generators.
uint64_t mix_seed(uint64_t seed, uint64_t value) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (value + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform in [0, bound) by rejection: the standard distributions are implementation-defined.
uint64_t draw_below(std::mt19937_64& rng, uint64_t bound) {
  uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t x;
  do x = rng();
  while (x >= limit);
  return x % bound;
}

// 0, 1, ..., n-1, then (when rng is given) Fisher-Yates from the back.
void fill_order(std::vector<int64_t>& order, int64_t n, std::mt19937_64* rng) {
  order.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  if (!rng) return;
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[draw_below(*rng, uint64_t(i + 1))]);
}

enum class Stream : uint64_t { kDocuments = 0, kSamples = 1 };

}  // namespace

struct DataLoader::Source {
  std::unique_ptr<IndexedDataset> data;
  int64_t first_doc = 0;             // the split's documents: [first_doc, first_doc + size)
  std::vector<int64_t> doc_tokens;   // tokens of each of them
  int64_t samples_per_epoch = 0;
  uint64_t seed = 0;                 // run seed mixed with source index and split
  bool shuffle = false;

  int64_t epoch = -1;                // the epoch the three arrays below describe
  std::vector<int64_t> order;        // split-relative documents in stream order
  std::vector<int64_t> starts;       // starts[k]: stream offset of order[k]; back() = total
  std::vector<int64_t> sample_order; // samples of the epoch in visiting order

  void build_epoch(int64_t e) {
    if (epoch == e || (!shuffle && epoch >= 0)) return;  // unshuffled epochs are all alike
    int64_t num_docs = int64_t(doc_tokens.size());
    std::mt19937_64 doc_rng(mix_seed(mix_seed(seed, uint64_t(e)), uint64_t(Stream::kDocuments)));
    std::mt19937_64 sample_rng(mix_seed(mix_seed(seed, uint64_t(e)), uint64_t(Stream::kSamples)));
    fill_order(order, num_docs, shuffle ? &doc_rng : nullptr);
    fill_order(sample_order, samples_per_epoch, shuffle ? &sample_rng : nullptr);
    starts.resize(size_t(num_docs + 1));
    starts[0] = 0;
    for (int64_t k = 0; k < num_docs; ++k) starts[k + 1] = starts[k] + doc_tokens[order[k]];
    epoch = e;
  }

  // Sample j of this source (counting over all epochs): count tokens into out.
  void read_sample(int64_t j, int64_t seq_len, int64_t count, int32_t* out) {
    build_epoch(j / samples_per_epoch);
    int64_t start = sample_order[j % samples_per_epoch] * seq_len;
    size_t k = size_t(std::upper_bound(starts.begin(), starts.end(), start) - starts.begin()) - 1;
    int64_t offset = start - starts[k];
    while (count > 0) {
      SIGMA_CHECK(k < order.size(), "{}: sample {} runs past the stream", data->prefix(), j);
      int64_t take = std::min(count, doc_tokens[order[k]] - offset);
      data->read_document(first_doc + order[k], offset, take, out);
      out += take;
      count -= take;
      offset = 0;
      ++k;
    }
  }
};

DataLoader::DataLoader(const DataConfig& config, Split split, uint64_t seed)
    : seq_len_(config.seq_len) {
  const char* split_name = split == Split::kTrain ? "training" : "validation";
  if (config.sources.empty()) fail("data.sources: no data sources given");
  if (seq_len_ < 1) fail("data.seq_len: {} must be at least 1", seq_len_);
  if (split == Split::kValid && !(config.valid_fraction > 0))
    fail("data.valid_fraction is {}: there is no validation split", config.valid_fraction);

  double weight_sum = 0;
  for (const DataSource& s : config.sources) {
    if (!(s.weight > 0)) fail("data source {}: weight {} must be positive", s.path, s.weight);
    weight_sum += s.weight;
  }
  for (size_t index = 0; index < config.sources.size(); ++index) {
    const DataSource& s = config.sources[index];
    auto source = std::make_unique<Source>();
    source->data = std::make_unique<IndexedDataset>(s.path);
    int64_t num_docs = source->data->num_documents();
    int64_t num_valid = int64_t(std::floor(config.valid_fraction * double(num_docs)));
    if (config.valid_fraction > 0 && (num_valid < 1 || num_docs - num_valid < 1))
      fail("data source {}: valid_fraction {} of its {} documents leaves {} for validation and "
           "{} for training; each side needs at least one document",
           s.path, config.valid_fraction, num_docs, num_valid, num_docs - num_valid);
    source->first_doc = split == Split::kTrain ? 0 : num_docs - num_valid;
    int64_t split_docs = split == Split::kTrain ? num_docs - num_valid : num_valid;
    source->doc_tokens.resize(size_t(split_docs));
    int64_t tokens = 0;
    for (int64_t d = 0; d < split_docs; ++d) {
      source->doc_tokens[d] = source->data->document_length(source->first_doc + d);
      tokens += source->doc_tokens[d];
    }
    if (tokens < seq_len_ + 1)
      fail("data source {}: its {} part has {} tokens, fewer than seq_len + 1 = {}", s.path,
           split_name, tokens, seq_len_ + 1);
    // Sample k covers [k * seq_len, k * seq_len + seq_len + 1): the last full one decides.
    source->samples_per_epoch = (tokens - 1) / seq_len_;
    source->seed = mix_seed(mix_seed(seed, index), uint64_t(split));
    source->shuffle = config.shuffle && split == Split::kTrain;
    sources_.push_back(std::move(source));
    weights_.push_back(s.weight / weight_sum);
  }
  counts_.assign(sources_.size(), 0);
  sample_.resize(size_t(seq_len_ + 1));
}

DataLoader::~DataLoader() = default;

size_t DataLoader::pick_source() const {
  size_t best = 0;
  double best_lag = -INFINITY;
  for (size_t d = 0; d < sources_.size(); ++d) {
    double lag = weights_[d] * double(position_ + 1) - double(counts_[d]);
    if (lag > best_lag) best = d, best_lag = lag;
  }
  return best;
}

void DataLoader::set_position(int64_t samples) {
  if (samples < 0) fail("data loader position {} is negative", samples);
  // The per-source counts follow from the position alone; replaying the blending rule is
  // O(position * sources) and only happens on resume.
  if (samples < position_) {
    position_ = 0;
    counts_.assign(sources_.size(), 0);
  }
  while (position_ < samples) {
    ++counts_[pick_source()];
    ++position_;
  }
}

void DataLoader::next(int64_t batch, int32_t* tokens, int32_t* targets) {
  for (int64_t b = 0; b < batch; ++b) {
    size_t d = pick_source();
    sources_[d]->read_sample(counts_[d], seq_len_, seq_len_ + 1, sample_.data());
    ++counts_[d];
    ++position_;
    std::copy(sample_.begin(), sample_.end() - 1, tokens + b * seq_len_);
    std::copy(sample_.begin() + 1, sample_.end(), targets + b * seq_len_);
  }
}

int64_t DataLoader::samples_per_epoch() const {
  int64_t total = 0;
  for (const auto& source : sources_) total += source->samples_per_epoch;
  return total;
}

}  // namespace sigma
