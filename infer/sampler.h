// Picking the next token from logits: greedy, or sampling with temperature, top-k and top-p
// (nucleus; Holtzman et al. 2020), reproducible from a seed.
//
// The order of the filters is Hugging Face's (temperature, then top-k, then top-p), so the
// same settings mean the same distribution there and here. Ties go to the lower token id.
#pragma once

#include "core/random.h"

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace sigma {

struct SamplingConfig {
  double temperature = 0;  // 0 = greedy (argmax)
  int64_t top_k = 0;       // keep the k most likely tokens; 0 keeps all
  double top_p = 1.0;      // keep the smallest set whose probability reaches top_p
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingConfig& config);
  // The next token id from one row of logits.
  int32_t sample(std::span<const float> logits);

 private:
  SamplingConfig config_;
  Rng rng_;
  std::vector<std::pair<double, int32_t>> candidates_;  // (probability, id), scratch
};

}  // namespace sigma
