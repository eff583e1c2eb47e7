// The MoE router: fp32 logits -> scores -> top-k routing map + probs, the balancing losses
// and their gradients, and the aux-loss-free expert bias (Sigma-MoE-Tiny, SIGMA-FAMILY.md
// section 2; DeepSeek-V3 for the bias; ST-MoE for the z-loss).
//
// Shape legend: N tokens, D d_model, E experts, K experts per token (the active top-k; the
// buffers hold the largest any phase uses).
//   logits = h @ gate^T;  scores = softmax(logits) or sigmoid(logits)
//   experts = top-k(scores + bias);  probs = scores[experts] (/ their sum when renormalize)
// Balancing losses of one micro-batch, each with its recipe coefficient, summed:
//   LBL       = E * sum_i f_i p_i,   f_i = count_i / sum(count), p_i = mean_n scores[n, i]
//   Top-1 LBL = E * sum_i fhat_i^2 / m,  fhat_i = mean_n softmax(logits_n / tau)_i,
//               m = mean_n max_i scores[n, i]
//   z-loss    = mean_n logsumexp(logits_n)^2
// f (from counts) and the top-k choice carry no gradient; everything else does.
// Leaves out: the counts themselves (the dispatcher's tokens_per_expert, or the step's
// global counts), which arrive as an input to balance().
#pragma once

#include "core/tensor/arena.h"
#include "models/config.h"
#include "models/parameters.h"

#include <vector>

namespace sigma {

// One micro-batch's balancing values, without coefficients (LBL is 1.0 when balanced).
struct RouterBalance {
  double lbl = 0, top1_lbl = 0, z_loss = 0;
  double entropy = 0;  // mean router entropy per token, nats
  double aux = 0;      // the coefficient-weighted sum that enters the loss
};

struct RouterGrads {
  Tensor d_scores_NE, d_logits_NE;
};

class Router {
 public:
  Router(const ModelConfig& config, int64_t tokens, int64_t max_top_k);

  void bind_params(ParameterSet& params, const std::string& prefix);
  void layout_acts(Arena& arena, const std::string& category);
  static RouterGrads layout_grads(Arena& arena, const ModelConfig& config, int64_t tokens);

  void set_top_k(int64_t top_k);
  int64_t top_k() const { return top_k_; }

  // Routes h_ND: fills probs_NK() and experts_NK().
  void forward(Tensor h_ND);
  // The balancing losses for this micro-batch with f from `counts` [E] (this micro-batch's,
  // or the step's global counts); keeps their gradient coefficients for backward.
  RouterBalance balance(const std::vector<int64_t>& counts);
  // d_h_ND (overwrite) from d_probs_NK and the balancing losses scaled by aux_scale; the gate
  // weight's gradient accumulates.
  void backward(Tensor d_h_ND, Tensor d_probs_NK, Tensor h_ND, float aux_scale,
                const RouterGrads& scratch);

  // b_i += rate * sign(mean load - load_i), from the step's token counts (DeepSeek-V3).
  void update_bias(const std::vector<int64_t>& counts);
  // Selection bias [E]; undefined unless model.moe.bias_update_rate > 0.
  Tensor bias() const { return bias_E_; }

  Tensor probs_NK() const {
    return probs_buf_.slice_rows(0, tokens_ * top_k_).view({tokens_, top_k_});
  }
  Tensor experts_NK() const {
    return experts_buf_.slice_rows(0, tokens_ * top_k_).view({tokens_, top_k_});
  }

 private:
  const ModelConfig& config_;
  int64_t tokens_, max_top_k_, top_k_;
  Param gate_;
  Tensor logits_NE_, scores_NE_, probs_buf_, experts_buf_, bias_E_;
  // E-vectors: the row sums balance() reads, and the gradient coefficients backward writes.
  Tensor score_sum_E_, sharp_sum_E_, g_score_E_, g_sharp_E_;
  // dLoss/d(scores, sharp softmax, top-1 score, z) of the last balance(), before aux_scale.
  std::vector<float> coeff_score_, coeff_sharp_;
  float coeff_top1_ = 0, coeff_z_ = 0;
};

}  // namespace sigma
