// Learning-rate schedules: linear warmup, then constant, cosine, warmup-stable-decay (WSD) or
// explicit phases. Sigma trained in phases (peak, peak, 20% of peak, anneal to 0;
// SIGMA-FAMILY.md section 1), which `phases` expresses directly.
#pragma once

#include "core/optim/config.h"

#include <cstdint>

namespace sigma {

// The learning rate for 0-based step `step` of `total_steps`.
double lr_at(const LrSchedulerConfig& config, double peak_lr, int64_t step, int64_t total_steps);

}  // namespace sigma
