// Global batch size over training: fixed, or ramped linearly by tokens consumed (Sigma
// ramped from 4M to 16M tokens; SIGMA-FAMILY.md section 1). The batch is always a whole
// number of micro-batches, and the schedule depends only on tokens consumed, so a resumed
// run follows it exactly.
#pragma once

#include "core/train/config.h"

#include <cstdint>

namespace sigma {

class BatchSchedule {
 public:
  BatchSchedule(const TrainConfig& config, int64_t seq_len);

  // Micro-batches in the step that starts after `tokens_consumed` training tokens.
  int64_t micro_batches_at(int64_t tokens_consumed) const;
  // train.steps, or the steps it takes to consume train.tokens along the ramp.
  int64_t total_steps() const { return total_steps_; }
  int64_t tokens_per_micro_batch() const { return micro_tokens_; }

 private:
  int64_t micro_tokens_;
  int64_t target_micro_batches_;
  int64_t start_micro_batches_;
  int64_t ramp_tokens_;
  int64_t total_steps_;
};

}  // namespace sigma
