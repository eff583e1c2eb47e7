// The MoE router: fp32 logits -> scores -> top-k routing map + probs, the balancing losses
// and their gradients, and the aux-loss-free expert bias (Sigma-MoE-Tiny, SIGMA-FAMILY.md
// section 2; DeepSeek-V3 for the bias; ST-MoE for the z-loss).
//
// Shape legend: N tokens, D d_model, E experts, K experts per token (the active top-k; the
// buffers hold the largest any phase uses), L the ops::kRouterLosses balancing values.
//   logits = h @ gate^T;  scores = softmax(logits) or sigmoid(logits)
//   experts = top-k(scores + bias);  probs = scores[experts] (/ their sum when renormalize)
// Balancing losses of one micro-batch, each with its recipe coefficient, summed:
//   LBL       = E * sum_i f_i p_i,   f_i = count_i / sum(count), p_i = mean_n scores[n, i]
//   Top-1 LBL = E * sum_i fhat_i^2 / m,  fhat_i = mean_n softmax(logits_n / tau)_i,
//               m = mean_n max_i scores[n, i]
//   z-loss    = mean_n logsumexp(logits_n)^2
// f (from counts) and the top-k choice carry no gradient; everything else does.
// Everything stays on the device: the losses and their gradient coefficients are small device
// tensors (ops::router_balance_forward), read by the host only for logging (balance_values()).
// Leaves out: the counts themselves (the dispatcher's tokens_per_expert, or the step's
// global counts), which arrive as an input to balance().
#pragma once

#include "core/tensor/arena.h"
#include "kernels/ops.h"
#include "models/config.h"
#include "models/parameters.h"

namespace sigma {

// One micro-batch's balancing values, without coefficients (LBL is 1.0 when balanced), on
// the host.
struct RouterBalance {
  double lbl = 0, top1_lbl = 0, z_loss = 0;
  double entropy = 0;  // mean router entropy per token, nats
  double aux = 0;      // the coefficient-weighted sum that enters the loss
};

struct RouterGrads {
  Tensor d_scores_NE, d_logits_NE;  // f32
  // d_logits_NE in the activation dtype, for the gate's matmul (cuBLASLt multiplies operands
  // of one dtype: bf16 on CUDA); the same tensor as d_logits_NE on the CPU.
  Tensor d_logits_act_NE;
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
  // The balancing losses for this micro-batch with f from counts_E (i32 [E] on the device:
  // this micro-batch's, or the step's global counts) into losses_L(); keeps their gradient
  // coefficients for backward. Nothing waits for the device.
  void balance(Tensor counts_E);
  // The last balance()'s values, copied to the host (a synchronisation: logging and tests).
  RouterBalance balance_values() const;
  // d_h_ND += the gradient through the router, from d_probs_NK and the balancing losses scaled
  // by aux_scale (the gate's product adds it: h also feeds the experts); the gate weight's
  // gradient as take_grad_write says.
  void backward(Tensor d_h_ND, Tensor d_probs_NK, Tensor h_ND, float aux_scale,
                const RouterGrads& scratch);

  // b_i += rate * sign(mean load - load_i), from the step's token counts (i32 [E] on the
  // device; DeepSeek-V3).
  void update_bias(Tensor counts_E);
  // Selection bias [E]; undefined unless model.moe.bias_update_rate > 0.
  Tensor bias() const { return bias_E_; }

  // The last balance()'s values, f32 [ops::kRouterLosses] on the device (ops.h's order).
  Tensor losses_L() const { return losses_L_; }
  Tensor probs_NK() const {
    return probs_buf_.slice_rows(0, tokens_ * top_k_).view({tokens_, top_k_});
  }
  Tensor experts_NK() const {
    return experts_buf_.slice_rows(0, tokens_ * top_k_).view({tokens_, top_k_});
  }

 private:
  const ModelConfig& config_;
  ops::RouterBalanceConfig balance_config_;
  int64_t tokens_, max_top_k_, top_k_;
  Param gate_;
  Tensor logits_NE_, scores_NE_, probs_buf_, experts_buf_, bias_E_;
  // The last balance(): its values, and d aux / d(...) for backward (ops.h's layout, [2E + 2]).
  Tensor losses_L_, coeffs_;
};

}  // namespace sigma
