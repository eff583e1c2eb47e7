#include "infer/sampler.h"

#include "core/error.h"

#include <algorithm>
#include <cmath>

namespace sigma {

Sampler::Sampler(const SamplingConfig& config) : config_(config), rng_(config.seed) {
  if (config.temperature < 0)
    fail("--temperature {}: allowed: >= 0 (0 = greedy)", config.temperature);
  if (config.top_k < 0) fail("--top-k {}: allowed: >= 0 (0 = all tokens)", config.top_k);
  if (!(config.top_p > 0 && config.top_p <= 1)) fail("--top-p {}: allowed: (0, 1]", config.top_p);
}

int32_t Sampler::sample(std::span<const float> logits) {
  int64_t vocab = int64_t(logits.size());
  if (config_.temperature == 0) {
    // max_element keeps the first of equal maxima: the lower id.
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  candidates_.resize(size_t(vocab));
  for (int64_t i = 0; i < vocab; ++i)
    candidates_[size_t(i)] = {double(logits[size_t(i)]) / config_.temperature, int32_t(i)};
  // Most likely first; equal scores in id order, so the draw is reproducible.
  auto more_likely = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  int64_t keep = config_.top_k > 0 ? std::min(config_.top_k, vocab) : vocab;
  std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(),
                    more_likely);
  candidates_.resize(size_t(keep));
  double max = candidates_.front().first, sum = 0;
  for (auto& [p, id] : candidates_) sum += (p = std::exp(p - max));
  double mass = 0;
  size_t nucleus = 0;
  // The smallest prefix whose mass reaches top_p (the most likely token always stays).
  while (nucleus < candidates_.size()) {
    mass += candidates_[nucleus++].first / sum;
    if (mass >= config_.top_p) break;
  }
  double total = 0;
  for (size_t i = 0; i < nucleus; ++i) total += candidates_[i].first;
  double u = rng_.uniform() * total;
  for (size_t i = 0; i < nucleus; ++i) {
    u -= candidates_[i].first;
    if (u < 0) return candidates_[i].second;
  }
  return candidates_[nucleus - 1].second;  // u rounded to the very top of the range
}

}  // namespace sigma
