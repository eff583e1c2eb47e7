// GuardConfig: the [guard] recipe section (numerical guards and early warnings).
// Recipe keys (docs, ranges): core/train/guard_config.cpp; what they drive: guard.h and
// early_warnings.h.
#pragma once

#include <cstdint>

namespace sigma {

struct GuardConfig {
  // A step is skipped (no update) when its loss or gradient norm is not finite, or lies more
  // than this many standard deviations above its moving mean; 0 turns a spike check off.
  double loss_z = 6.0;
  double grad_norm_z = 6.0;
  int64_t window = 100;             // span of the moving mean and variance, in applied steps
  int64_t rollback_after = 3;       // consecutive skipped steps that trigger a rollback; 0: never
  int64_t max_rollbacks = 3;        // rollbacks a run may do before it stops with an error
  int64_t idle_expert_steps = 100;  // warn when an expert gets no token this long; 0: never
  double norm_dip = 0.1;            // warn when a middle layer's norm dips this far; 0: never

  bool operator==(const GuardConfig&) const = default;
};

}  // namespace sigma
