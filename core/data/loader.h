// The training data loader: samples of seq_len + 1 tokens from a weighted mixture of sources.
//
// Each source is one indexed dataset. Its training documents (all but the last
// valid_fraction) are concatenated in a seeded, per-epoch shuffled order into a token
// stream, cut into samples of seq_len + 1 tokens at stride seq_len; the samples of an epoch
// are visited in a seeded shuffled order. Sources are blended like Megatron-LM's
// BlendedDataset: sample i goes to the source whose count lags its weight the most, so the
// mixture is exact and needs no random numbers. The whole loader state is therefore one
// number, the count of samples consumed, which the checkpoint stores: resume is exact.
//
// The details, which a Python mirror of this loader can reproduce bit for bit:
// - split: the last floor(valid_fraction * documents) documents of a source are validation,
//   the rest training; with valid_fraction > 0 each side needs at least one document.
// - epoch e of a source: its documents in a Fisher-Yates order drawn from std::mt19937_64
//   (seeded from run seed, source index, split, epoch), samples taken at k * seq_len, and
//   visited in a second Fisher-Yates order; the last partial sample is dropped. With
//   shuffle = false both orders are the file order. Validation never shuffles.
// - blending: sample i goes to the source d maximising weight_d * (i + 1) - count_d, the
//   lowest index on ties (Megatron-LM's BlendedDataset rule).
#pragma once

#include "core/data/config.h"
#include "core/data/indexed_dataset.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace sigma {

enum class Split { kTrain, kValid };

class DataLoader {
 public:
  DataLoader(const DataConfig& config, Split split, uint64_t seed);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Fills tokens and targets (i32, [batch * seq_len] each) with the next `batch` samples:
  // inputs are a sample's first seq_len tokens, targets its last seq_len.
  void next(int64_t batch, int32_t* tokens, int32_t* targets);

  int64_t position() const { return position_; }  // samples consumed
  void set_position(int64_t samples);             // recomputes the per-source counts
  int64_t samples_per_epoch() const;              // over all sources

 private:
  struct Source;
  size_t pick_source() const;  // the source of sample position_, from counts_

  std::vector<std::unique_ptr<Source>> sources_;
  std::vector<double> weights_;  // normalised to sum 1
  std::vector<int64_t> counts_;  // samples taken from each source before position_
  std::vector<int32_t> sample_;  // scratch: one sample of seq_len + 1 tokens
  int64_t seq_len_;
  int64_t position_ = 0;
};

}  // namespace sigma
