#include "models/moe/router.h"

#include "kernels/device.h"

namespace sigma {

namespace {

ops::ScoreFunction score_function(RouterScore score) {
  return score == RouterScore::kSoftmax ? ops::ScoreFunction::kSoftmax
                                        : ops::ScoreFunction::kSigmoid;
}

}  // namespace

Router::Router(const ModelConfig& config, int64_t tokens, int64_t max_top_k)
    : config_(config),
      balance_config_{config.moe.lbl_coeff, config.moe.top1_lbl_coeff,
                      config.moe.top1_lbl_temperature, config.moe.z_loss_coeff},
      tokens_(tokens),
      max_top_k_(max_top_k),
      top_k_(max_top_k) {}

void Router::bind_params(ParameterSet& params, const std::string& prefix) {
  // No weight decay: the router's scale sets how sharp routing is, not a capacity to regularise.
  gate_ = params.add(prefix + "weight", {config_.moe.n_experts, config_.d_model},
                     ParamInit::kNormal, config_.init_std, false);
}

void Router::layout_acts(Arena& arena, const std::string& category) {
  // The router runs in fp32 whatever the activations' dtype (SIGMA-FAMILY.md section 2).
  int64_t n = tokens_, e = config_.moe.n_experts;
  logits_NE_ = arena.take({n, e}, DType::kF32, category);
  scores_NE_ = arena.take({n, e}, DType::kF32, category);
  probs_buf_ = arena.take({n * max_top_k_}, DType::kF32, category);
  experts_buf_ = arena.take({n * max_top_k_}, DType::kI32, category);
  if (config_.moe.bias_update_rate > 0) bias_E_ = arena.take({e}, DType::kF32, "router state");
  losses_L_ = arena.take({ops::kRouterLosses}, DType::kF32, category);
  coeffs_ = arena.take({2 * e + 2}, DType::kF32, category);
}

RouterGrads Router::layout_grads(Arena& arena, const ModelConfig& config, int64_t tokens) {
  int64_t e = config.moe.n_experts;
  const std::string scratch = "gradient scratch";
  const DType act = activation_dtype(arena.device());
  RouterGrads g;
  g.d_scores_NE = arena.take({tokens, e}, DType::kF32, scratch);
  g.d_logits_NE = arena.take({tokens, e}, DType::kF32, scratch);
  g.d_logits_act_NE = act == DType::kF32 ? g.d_logits_NE : arena.take({tokens, e}, act, scratch);
  return g;
}

void Router::set_top_k(int64_t top_k) {
  SIGMA_CHECK(top_k >= 1 && top_k <= max_top_k_, "top-k {} outside [1, {}]", top_k, max_top_k_);
  top_k_ = top_k;
}

void Router::forward(Tensor h_ND) {
  // bf16 h and gate on CUDA, fp32 logits (fp32 accumulation either way).
  ops::matmul_forward(logits_NE_, h_ND, gate_.weight);
  ops::router_scores_topk_forward(scores_NE_, probs_NK(), experts_NK(), logits_NE_, bias_E_,
                                  score_function(config_.moe.score), config_.moe.renormalize);
}

void Router::balance(Tensor counts_E) {
  ops::router_balance_forward(losses_L_, coeffs_, logits_NE_, scores_NE_, counts_E,
                              balance_config_);
}

RouterBalance Router::balance_values() const {
  float host[ops::kRouterLosses];
  Tensor h = losses_L_;
  h.data = host;
  h.device = Device::kCpu;
  device::copy(h, losses_L_);
  RouterBalance b;
  b.lbl = host[ops::kLossLbl];
  b.top1_lbl = host[ops::kLossTop1Lbl];
  b.z_loss = host[ops::kLossZ];
  b.entropy = host[ops::kLossEntropy];
  b.aux = host[ops::kLossAux];
  return b;
}

void Router::backward(Tensor d_h_ND, Tensor d_probs_NK, Tensor h_ND, float aux_scale,
                      const RouterGrads& g) {
  const MoeConfig& m = config_.moe;
  ops::router_topk_backward(g.d_scores_NE, d_probs_NK, probs_NK(), experts_NK(), scores_NE_,
                            m.renormalize);
  ops::router_balance_backward_scores(g.d_scores_NE, scores_NE_, coeffs_, aux_scale);
  ops::router_scores_backward(g.d_logits_NE, g.d_scores_NE, scores_NE_, score_function(m.score));
  ops::router_balance_backward_logits(g.d_logits_NE, logits_NE_, coeffs_, balance_config_,
                                      aux_scale);
  ops::convert(g.d_logits_act_NE, g.d_logits_NE);  // nothing to do on the CPU (same tensor)
  linear_backward(d_h_ND, gate_, g.d_logits_act_NE, h_ND, ops::GradWrite::kAccumulate);
}

void Router::update_bias(Tensor counts_E) {
  if (bias_E_.defined())
    ops::router_bias_update(bias_E_, counts_E, float(config_.moe.bias_update_rate));
}

}  // namespace sigma
