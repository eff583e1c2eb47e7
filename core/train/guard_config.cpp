// The [guard] recipe keys. Leaves out: what they drive (guard.cpp, early_warnings.cpp).
#include "core/recipe/sections.h"

namespace sigma {

using schema::Range;

const schema::Section<GuardConfig>& guard_section() {
  static const schema::Section<GuardConfig> section = [] {
    schema::Section<GuardConfig> guard(
        "Numerical guards (skip a bad step, roll back after several) and early warnings. A "
        "step whose loss or gradient norm is not finite is always skipped.");
    guard
        .key("loss_z", &GuardConfig::loss_z,
             "skip a step whose loss is this many standard deviations above its moving mean; "
             "0 disables",
             Range::at_least(0))
        .key("grad_norm_z", &GuardConfig::grad_norm_z,
             "the same for the gradient norm (before clipping); 0 disables", Range::at_least(0))
        .key("window", &GuardConfig::window,
             "span of the exponential moving mean and variance behind the z-scores; spike "
             "checks start after this many applied steps",
             Range::at_least(2), "steps")
        .key("rollback_after", &GuardConfig::rollback_after,
             "consecutive skipped steps after which the run reloads the last committed "
             "checkpoint and skips the data read since; 0 never rolls back",
             Range::at_least(0), "steps")
        .key("max_rollbacks", &GuardConfig::max_rollbacks,
             "rollbacks after which one more need stops the run with an error", Range::at_least(0))
        .key("idle_expert_steps", &GuardConfig::idle_expert_steps,
             "warn when an MoE expert gets no token for this many consecutive steps; 0 disables",
             Range::at_least(0), "steps")
        .key("norm_dip", &GuardConfig::norm_dip,
             "warn when a middle MoE-model layer's parameter norm is this fraction below the "
             "layers on both sides of it (the collapse signal); 0 disables",
             Range::half_open(0, 1));
    return guard;
  }();
  return section;
}

}  // namespace sigma
