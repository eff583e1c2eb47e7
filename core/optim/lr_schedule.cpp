#include "core/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace sigma {

namespace {

// Goes from `start` to `end` as q goes from 0 to 1.
double interpolate(LrShape shape, double start, double end, double q) {
  q = std::clamp(q, 0.0, 1.0);
  switch (shape) {
    case LrShape::kConstant: return start;
    case LrShape::kLinear: return start + (end - start) * q;
    case LrShape::kCosine: return end + (start - end) * 0.5 * (1.0 + std::cos(M_PI * q));
    case LrShape::kSqrt: return start + (end - start) * std::sqrt(q);  // the WSD paper's 1-sqrt decay
  }
  return start;
}

double multiplier_after_warmup(const LrSchedulerConfig& c, double progress) {
  switch (c.kind) {
    case LrSchedule::kConstant: return 1.0;
    case LrSchedule::kCosine: return interpolate(LrShape::kCosine, 1.0, c.min_lr_ratio, progress);
    case LrSchedule::kWsd: {
      double stable = 1.0 - c.decay_fraction;
      if (progress < stable) return 1.0;
      return interpolate(c.decay_shape, 1.0, c.min_lr_ratio, (progress - stable) / c.decay_fraction);
    }
    case LrSchedule::kPhases: {
      double begin = 0;
      for (const LrPhase& phase : c.phases) {
        if (progress < begin + phase.fraction || &phase == &c.phases.back())
          return interpolate(phase.shape, phase.start, phase.end, (progress - begin) / phase.fraction);
        begin += phase.fraction;
      }
      return 1.0;
    }
  }
  return 1.0;
}

}  // namespace

double lr_at(const LrSchedulerConfig& config, double peak_lr, int64_t step, int64_t total_steps) {
  if (step < config.warmup_steps) return peak_lr * double(step + 1) / double(config.warmup_steps);
  int64_t decay_steps = std::max<int64_t>(1, total_steps - config.warmup_steps);
  double progress = double(step - config.warmup_steps) / double(decay_steps);
  return peak_lr * multiplier_after_warmup(config, progress);
}

}  // namespace sigma
