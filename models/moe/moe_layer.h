// The MoE feed-forward block: router -> dispatcher -> stacked experts -> combine, plus the
// optional shared experts, behind the same interface as Mlp (bind_params, layout_acts,
// forward, backward). Sigma-MoE-Tiny (SIGMA-FAMILY.md section 2); models/moe/README.md.
//
// Shape legend: N tokens, D d_model, E experts, K the active top-k, R = N * K rows, L the
// ops::kRouterLosses balancing values.
//   probs_NK, experts_NK = router(h_ND)
//   x_RD = permute(h_ND);  y_RD = experts(x_RD);  out_ND = combine(y_RD, probs_NK)
//   out_ND += shared_expert(h_ND)                        when n_shared_experts > 0
// The balancing losses of each forward are kept (aux_loss()) and their gradients added in
// backward, scaled like the language-model loss of the same micro-batch.
// Per-step statistics (token counts, LBL, entropy) accumulate over forwards until
// reset_step_stats(): the balance metrics and the expert-bias update read them. All of it
// stays on the device; forward and backward never wait for it. The host reads values only
// through aux_loss(), balance() and step_stats(), each a copy (and a synchronisation).
// With an expert-parallel group, this rank holds E/ep experts and an AllToAllDispatcher
// trades permuted rows with the group between the local dispatcher and the experts:
//   x_RD = permute(h_ND);  x_SD = all-to-all(x_RD);  y_SD = experts(x_SD);
//   y_RD = all-to-all back(y_SD);  out_ND = combine(y_RD, probs_NK)
#pragma once

#include "models/mlp.h"
#include "models/moe/alltoall_dispatcher.h"
#include "models/moe/dispatcher.h"
#include "models/moe/experts.h"
#include "models/moe/router.h"

#include <optional>
#include <vector>

namespace sigma {

struct MoeGrads {
  RouterGrads router;
  ExpertGrads experts;
  Tensor d_x_buf, d_y_buf;  // [N * max top-k, D]
  // The experts' side of the exchange, [ep * N * max top-k, D] (expert parallelism only).
  Tensor d_x_expert_buf, d_y_expert_buf;
  Tensor d_probs_buf;       // [N * max top-k]
  std::optional<MlpGrads> shared;
};

// What the forwards since the last reset_step_stats() saw, on the host.
struct MoeStepStats {
  std::vector<int64_t> counts;  // tokens per expert, summed
  double lbl_sum = 0, entropy_sum = 0, aux_sum = 0;
  int64_t forwards = 0;
};

// The paper's balance metric over token counts per expert: the busiest and the idlest
// expert's deviation from the mean count, (max / mean - 1) and (min / mean - 1) in %, and
// how many experts got no token.
struct LoadBalance {
  double max_dev_pct = 0, min_dev_pct = 0;
  int64_t idle_experts = 0;
};
LoadBalance load_balance(const std::vector<int64_t>& counts);

class MoeLayer {
 public:
  // `ep_group`: the expert-parallel group splitting the experts, or null (every expert here).
  MoeLayer(const ModelConfig& config, int64_t tokens, int64_t layer,
           ProcessGroup* ep_group = nullptr);

  void bind_params(ParameterSet& params, const std::string& prefix);
  void layout_acts(Arena& arena, const std::string& category);
  // The shared experts' SwiGLU product (Mlp::layout_scratch), if the layer has them.
  void layout_scratch(Arena& arena, const std::string& category);
  // Scratch for every MoE layer of `config` (sized for the largest top-k of any layer, and
  // for what ep ranks can send to this one's experts).
  static MoeGrads layout_grads(Arena& arena, const ModelConfig& config, int64_t tokens,
                               int64_t ep_size = 1);

  // The top-k of progressive-sparsification phase `phase` (model.moe.phases).
  void set_phase(int64_t phase);
  int64_t top_k() const { return router_.top_k(); }

  void forward(Tensor out_ND, Tensor h_ND);
  // d_h_ND (overwrite); the balancing losses' gradients are scaled by aux_scale.
  void backward(Tensor d_h_ND, Tensor d_out_ND, Tensor h_ND, const MoeGrads& scratch,
                float aux_scale);

  // The last forward's coefficient-weighted balancing loss (copied from the device).
  double aux_loss() const { return router_.balance_values().aux; }
  RouterBalance balance() const { return router_.balance_values(); }

  // f_i of the LBL from these counts (the step's, summed over micro-batches and ranks)
  // instead of the micro-batch's own; an empty vector returns to the micro-batch's. Copied to
  // the device once, before the step's passes.
  void set_global_counts(const std::vector<int64_t>& counts);

  void reset_step_stats();
  // Copied from the device: read it at logging time, not inside a step.
  MoeStepStats step_stats() const;
  // Replaces the step's statistics (data parallelism sums them over ranks before the bias
  // update and the metrics read them); copied to the device.
  void set_step_stats(const MoeStepStats& stats);
  // The aux-loss-free bias update from the step's counts (no-op when disabled), on the device.
  void update_bias() { router_.update_bias(step_counts_E_); }
  Tensor bias() const { return router_.bias(); }
  Tensor experts_NK() const { return router_.experts_NK(); }

 private:
  const ModelConfig& config_;
  int64_t tokens_, layer_;
  Router router_;
  Dispatcher dispatcher_;
  std::optional<AllToAllDispatcher> alltoall_;  // expert parallelism only
  Experts experts_;
  std::optional<Mlp> shared_;
  Tensor shared_out_ND_;
  bool use_global_counts_ = false;
  // The step's counts for global-batch LBL, and the running step statistics: tokens per
  // expert and the sums of each forward's balancing values (ops.h's order), i32 / f32.
  Tensor global_counts_E_, step_counts_E_, step_losses_L_;
  int64_t forwards_ = 0;
};

}  // namespace sigma
