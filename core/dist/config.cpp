// The [parallelism] recipe keys and their checks against the model (the checks against the
// launched world size run in core/dist/world.cpp, once it is known).
#include "core/recipe/sections.h"

#include <fmt/format.h>

namespace sigma {

using schema::Range;

const schema::Section<ParallelismConfig>& parallelism_section() {
  static const schema::Section<ParallelismConfig> section = [] {
    schema::Section<ParallelismConfig> parallelism(
        "How ranks share the work (launch with mpirun, srun or torchrun-style variables; "
        "core/dist/README.md) and how long a rank waits for the others.");
    parallelism
        .key("dp", &ParallelismConfig::dp,
             "data-parallel ranks (ZeRO-1: optimizer state and master weights sharded); must "
             "equal the launched world size; 0 means every launched rank",
             Range::at_least(0), "ranks")
        .key("ep", &ParallelismConfig::ep,
             "expert-parallel ranks: each MoE layer's experts are split over groups of ep "
             "consecutive ranks; divides dp and model.moe.n_experts",
             Range::at_least(1), "ranks")
        .key("bucket_mb", &ParallelismConfig::bucket_mb,
             "gradient bucket size: each bucket's reduce-scatter starts as soon as backward "
             "has finished its gradients",
             Range::above(0), "MiB")
        .key("overlap_grad_reduce", &ParallelismConfig::overlap_grad_reduce,
             "start each bucket's reduce-scatter during backward; false waits for the whole "
             "backward (to measure what the overlap saves)")
        .key("collective_timeout_s", &ParallelismConfig::collective_timeout_s,
             "a rank waiting this long for the others in one collective names the ranks it "
             "waits for and exits non-zero",
             Range::above(0), "seconds")
        .key("progress_timeout_s", &ParallelismConfig::progress_timeout_s,
             "a rank making no progress (one phase of a step, a checkpoint) for this long "
             "reports a hang and exits non-zero",
             Range::above(0), "seconds");
    return parallelism;
  }();
  return section;
}

void check_parallelism(const ParallelismConfig& parallelism, const ModelConfig& model,
                       const schema::Checker& check) {
  int64_t ep = parallelism.ep;
  if (ep == 1) return;
  if (!model.moe.enabled())
    check.fail("parallelism.ep", fmt::format("{} needs experts to split, but the model has no "
                                             "[model.moe]; allowed for a dense model: 1",
                                             ep));
  if (model.moe.n_experts % ep != 0)
    check.fail("parallelism.ep",
               fmt::format("{} does not divide model.moe.n_experts = {}; allowed: a divisor of "
                           "the expert count",
                           ep, model.moe.n_experts));
  if (parallelism.dp > 0 && parallelism.dp % ep != 0)
    check.fail("parallelism.ep", fmt::format("{} does not divide parallelism.dp = {}; allowed: a "
                                             "divisor of dp (expert parallelism runs inside "
                                             "data parallelism)",
                                             ep, parallelism.dp));
}

}  // namespace sigma
