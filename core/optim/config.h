// OptimizerConfig and LrSchedulerConfig: the [optimizer] and [lr_scheduler] recipe sections.
// Recipe keys (docs, ranges) and cross-field checks: core/optim/config.cpp.
#pragma once

#include <cstdint>
#include <vector>

namespace sigma {

struct OptimizerConfig {
  double lr = 1e-3;  // peak learning rate
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  bool decay_norms_and_embeddings = false;  // by default only matrices inside layers and lm_head decay

  bool operator==(const OptimizerConfig&) const = default;
};

enum class LrSchedule { kConstant, kCosine, kWsd, kPhases };
enum class LrShape { kConstant, kLinear, kCosine, kSqrt };

// One phase of a multi-phase schedule: LR goes from start to end (multiples of the peak LR)
// over `fraction` of the steps after warmup, with the given shape. Sigma trained in phases
// (3.5T + 1T at peak, 1T at 20% of peak, then an anneal to 0; SIGMA-FAMILY.md section 1).
struct LrPhase {
  double fraction = 1.0;
  double start = 1.0;
  double end = 1.0;
  LrShape shape = LrShape::kConstant;

  bool operator==(const LrPhase&) const = default;
};

struct LrSchedulerConfig {
  LrSchedule kind = LrSchedule::kCosine;
  int64_t warmup_steps = 100;       // linear from 0 to the peak LR
  double min_lr_ratio = 0.1;        // cosine floor; WSD's end of decay
  double decay_fraction = 0.2;      // WSD: the final fraction of steps spent decaying
  LrShape decay_shape = LrShape::kLinear;  // WSD decay shape
  std::vector<LrPhase> phases;      // kind = "phases": fractions sum to 1

  bool operator==(const LrSchedulerConfig&) const = default;
};

}  // namespace sigma
