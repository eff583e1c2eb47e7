// The [optimizer] and [lr_scheduler] recipe keys (and the items of lr_scheduler.phases)
// and their cross-field checks. Leaves out: the schedule itself (lr_schedule.cpp).
#include "core/recipe/sections.h"

#include <fmt/format.h>

#include <cmath>

namespace sigma {

using schema::Range;

namespace {
// Phase fractions are written by hand (4.5/6.5 as 0.692308): this much slack in their sum.
constexpr double kFractionSumTolerance = 1e-6;

const std::vector<std::pair<LrShape, std::string>> kShapeNames = {
    {LrShape::kConstant, "constant"},
    {LrShape::kLinear, "linear"},
    {LrShape::kCosine, "cosine"},
    {LrShape::kSqrt, "sqrt"}};
}  // namespace

const schema::Section<OptimizerConfig>& optimizer_section() {
  static const schema::Section<OptimizerConfig> section = [] {
    schema::Section<OptimizerConfig> optimizer("AdamW.");
    optimizer.key("lr", &OptimizerConfig::lr, "peak learning rate (0 freezes the weights: a diagnostic run)", Range::at_least(0))
        .key("beta1", &OptimizerConfig::beta1, "first-moment decay", Range::half_open(0, 1))
        .key("beta2", &OptimizerConfig::beta2, "second-moment decay", Range::half_open(0, 1))
        .key("eps", &OptimizerConfig::eps, "added to the root of the second moment",
             Range::above(0))
        .key("weight_decay", &OptimizerConfig::weight_decay, "decoupled weight decay",
             Range::at_least(0))
        .key("decay_norms_and_embeddings", &OptimizerConfig::decay_norms_and_embeddings,
             "also decay norm weights and the embedding (by default only the matrices inside "
             "layers and lm_head decay)");
    return optimizer;
  }();
  return section;
}

const schema::Section<LrSchedulerConfig>& lr_scheduler_section() {
  static const schema::Section<LrSchedulerConfig> section = [] {
    schema::Section<LrPhase> phase(
        "One phase of kind = \"phases\": the LR goes from start to end (multiples of the peak "
        "LR) over a fraction of the steps after warmup.");
    phase
        .key("fraction", &LrPhase::fraction, "share of the steps after warmup; phases sum to 1",
             Range::open_closed(0, 1))
        .key("start", &LrPhase::start, "LR at the phase's start, as a multiple of the peak",
             Range::at_least(0))
        .key("end", &LrPhase::end, "LR at the phase's end, as a multiple of the peak",
             Range::at_least(0))
        .key("shape", &LrPhase::shape, "how the LR moves from start to end", kShapeNames);

    schema::Section<LrSchedulerConfig> lr(
        "Learning-rate schedule: linear warmup from 0 to the peak, then a decay kind.");
    lr.key("kind", &LrSchedulerConfig::kind, "the schedule after warmup",
           {{LrSchedule::kConstant, "constant"},
            {LrSchedule::kCosine, "cosine"},
            {LrSchedule::kWsd, "wsd"},
            {LrSchedule::kPhases, "phases"}})
        .key("warmup_steps", &LrSchedulerConfig::warmup_steps, "linear warmup from 0 to the peak",
             Range::at_least(0), "steps")
        .key("min_lr_ratio", &LrSchedulerConfig::min_lr_ratio,
             "cosine's floor and WSD's end, as a multiple of the peak", Range::closed(0, 1))
        .key("decay_fraction", &LrSchedulerConfig::decay_fraction,
             "wsd: the final share of the steps spent decaying", Range::closed(0, 1))
        .key("decay_shape", &LrSchedulerConfig::decay_shape, "wsd: the decay's shape",
             kShapeNames)
        .key("phases", &LrSchedulerConfig::phases,
             "kind = \"phases\": the phases in order (Sigma: peak, 20% of peak, anneal to 0)",
             phase);
    return lr;
  }();
  return section;
}

void check_lr_scheduler(const LrSchedulerConfig& lr, const schema::Checker& check) {
  if (lr.kind != LrSchedule::kPhases) return;
  if (lr.phases.empty())
    check.fail("lr_scheduler.phases",
               "empty while lr_scheduler.kind = \"phases\"; allowed: one or more "
               "{ fraction, start, end, shape } tables");
  double sum = 0;
  for (const LrPhase& phase : lr.phases) sum += phase.fraction;
  if (std::abs(sum - 1.0) > kFractionSumTolerance)
    check.fail("lr_scheduler.phases",
               fmt::format("the fractions sum to {}; allowed: a sum of 1 (within {})",
                           schema::float_text(sum), kFractionSumTolerance));
}

}  // namespace sigma
