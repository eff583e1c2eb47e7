// EarlyWarnings: signs of trouble before the loss shows them.
//
// - Per-layer parameter and gradient norms at every logged step, as metrics
//   `layers.l<i>.param_norm` and `layers.l<i>.grad_norm` (the gradient before clipping).
// - For MoE models, the norm-by-depth profile of the MoE layers: in a healthy MoE the
//   parameter norm rises with depth, and a dip in the middle layers foretold a collapse
//   about 6K steps before the loss diverged (SIGMA-FAMILY.md section 3, the LTF report).
//   The dip of a middle layer is 1 - norm / min(largest norm before it, largest after it),
//   logged as `moe.norm_dip` (the deepest); above guard.norm_dip it is a warning.
// - For MoE models, an expert that gets no token for guard.idle_expert_steps steps in a
//   row: a dead expert wastes its share of the parameters and usually stays dead.
//   The tokens per expert, summed over log.expert_load_interval steps, are logged too
//   (`moe.l<i>.tokens_per_expert`, at the first logged step after each interval), for the
//   heatmap of `sigma report`: a row per step would be 5K numbers for Sigma-MoE-Tiny.
// A warning is a train.log line and a metrics.jsonl row, once per episode: it is given
// again only after the condition cleared. Leaves out: acting on a warning.
#pragma once

#include "core/train/guard_config.h"
#include "core/train/run_log.h"
#include "models/transformer.h"

#include <cstdint>
#include <vector>

namespace sigma {

class EarlyWarnings {
 public:
  EarlyWarnings(const GuardConfig& config, int64_t expert_load_interval, Transformer& model,
                const ParameterSet& params);

  // After every applied step (MoE models): which experts got tokens.
  void observe_experts(int64_t step, RunLog& log);
  // At a logged step: the per-layer norms (and expert loads, when due) into `row`, and the
  // depth check.
  void log_layers(int64_t step, nlohmann::json& row, RunLog& log);

 private:
  // `norms` of the MoE layers `layers`, by depth.
  void check_depth_profile(int64_t step, const std::vector<double>& norms,
                           const std::vector<int64_t>& layers, nlohmann::json& row, RunLog& log);

  const GuardConfig& config_;
  Transformer& model_;
  const ParameterSet& params_;
  std::vector<std::vector<size_t>> layer_params_;  // per layer, its parameters' indices
  std::vector<std::vector<int64_t>> idle_steps_;   // per layer, per expert (MoE layers only)
  std::vector<std::vector<int64_t>> load_sums_;    // tokens per expert since the last load row
  int64_t expert_load_interval_;
  int64_t load_steps_ = 0;  // steps summed in load_sums_
  bool dip_warned_ = false;
};

}  // namespace sigma
