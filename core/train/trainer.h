// The training loop: data -> forward -> loss -> backward -> clip -> AdamW, with logging,
// validation and checkpoints, resumable bit for bit on the CPU.
#pragma once

#include "core/recipe/recipe.h"

#include <cstdint>
#include <string>

namespace sigma {

struct TrainOptions {
  std::string resume;        // "" = fresh, "auto" = newest committed checkpoint if any, or a path
  int64_t stop_at_step = 0;  // > 0: save a checkpoint after this step and exit (as if preempted)
  bool profile_ops = false;  // time every op of the steps after the first (kernels/op_profile.h)
};

void train(const Recipe& recipe, const TrainOptions& options);

}  // namespace sigma
