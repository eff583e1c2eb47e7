#include "core/train/batch_schedule.h"

#include "core/error.h"

#include <algorithm>

namespace sigma {

BatchSchedule::BatchSchedule(const TrainConfig& config, int64_t seq_len)
    : micro_tokens_(config.micro_batch * seq_len),
      target_micro_batches_(config.global_batch_tokens / micro_tokens_),
      start_micro_batches_(config.batch_ramp_start_tokens > 0
                               ? config.batch_ramp_start_tokens / micro_tokens_
                               : target_micro_batches_),
      ramp_tokens_(config.batch_ramp_start_tokens > 0 ? config.batch_ramp_tokens : 0) {
  SIGMA_CHECK(target_micro_batches_ >= 1 && start_micro_batches_ >= 1, "global batch {} < micro {}",
              config.global_batch_tokens, micro_tokens_);
  if (config.steps > 0) {
    total_steps_ = config.steps;
    return;
  }
  // Walk the ramp in closed form where the batch is constant, step by step where it grows.
  total_steps_ = 0;
  int64_t consumed = 0;
  while (consumed < config.tokens && consumed < ramp_tokens_) {
    consumed += micro_batches_at(consumed) * micro_tokens_;
    ++total_steps_;
  }
  if (consumed < config.tokens) {
    int64_t step_tokens = target_micro_batches_ * micro_tokens_;
    total_steps_ += (config.tokens - consumed + step_tokens - 1) / step_tokens;
  }
}

int64_t BatchSchedule::micro_batches_at(int64_t tokens_consumed) const {
  if (tokens_consumed >= ramp_tokens_) return target_micro_batches_;
  double fraction = double(tokens_consumed) / double(ramp_tokens_);
  int64_t grown = int64_t(double(target_micro_batches_ - start_micro_batches_) * fraction);
  return std::clamp(start_micro_batches_ + grown, start_micro_batches_, target_micro_batches_);
}

}  // namespace sigma
