#include "models/moe/router.h"

#include "kernels/ops.h"

#include <numeric>

namespace sigma {

namespace {

ops::ScoreFunction score_function(RouterScore score) {
  return score == RouterScore::kSoftmax ? ops::ScoreFunction::kSoftmax
                                        : ops::ScoreFunction::kSigmoid;
}

}  // namespace

Router::Router(const ModelConfig& config, int64_t tokens, int64_t max_top_k)
    : config_(config), tokens_(tokens), max_top_k_(max_top_k), top_k_(max_top_k) {}

void Router::bind_params(ParameterSet& params, const std::string& prefix) {
  // No weight decay: the router's scale sets how sharp routing is, not a capacity to regularise.
  gate_ = params.add(prefix + "weight", {config_.moe.n_experts, config_.d_model},
                     ParamInit::kNormal, config_.init_std, false);
}

void Router::layout_acts(Arena& arena, const std::string& category) {
  int64_t n = tokens_, e = config_.moe.n_experts;
  logits_NE_ = arena.take({n, e}, DType::kF32, category);
  scores_NE_ = arena.take({n, e}, DType::kF32, category);
  probs_buf_ = arena.take({n * max_top_k_}, DType::kF32, category);
  experts_buf_ = arena.take({n * max_top_k_}, DType::kI32, category);
  if (config_.moe.bias_update_rate > 0) bias_E_ = arena.take({e}, DType::kF32, "router state");
  score_sum_E_ = arena.take({e}, DType::kF32, category);
  sharp_sum_E_ = arena.take({e}, DType::kF32, category);
  g_score_E_ = arena.take({e}, DType::kF32, category);
  g_sharp_E_ = arena.take({e}, DType::kF32, category);
}

RouterGrads Router::layout_grads(Arena& arena, const ModelConfig& config, int64_t tokens) {
  int64_t e = config.moe.n_experts;
  const std::string scratch = "gradient scratch";
  return {arena.take({tokens, e}, DType::kF32, scratch),
          arena.take({tokens, e}, DType::kF32, scratch)};
}

void Router::set_top_k(int64_t top_k) {
  SIGMA_CHECK(top_k >= 1 && top_k <= max_top_k_, "top-k {} outside [1, {}]", top_k, max_top_k_);
  top_k_ = top_k;
}

void Router::forward(Tensor h_ND) {
  // The router runs in fp32 whatever the activations' dtype (SIGMA-FAMILY.md section 2).
  ops::matmul_forward(logits_NE_, h_ND, gate_.weight);
  ops::router_scores_forward(scores_NE_, logits_NE_, score_function(config_.moe.score));
  ops::router_topk_forward(probs_NK(), experts_NK(), scores_NE_, bias_E_,
                           config_.moe.renormalize);
}

RouterBalance Router::balance(const std::vector<int64_t>& counts) {
  const MoeConfig& m = config_.moe;
  int64_t e = m.n_experts;
  double n = double(tokens_), experts = double(e);
  bool top1 = m.top1_lbl_coeff > 0;
  ops::RouterSums sums = ops::router_balance_sums(score_sum_E_, top1 ? sharp_sum_E_ : Tensor{},
                                                  logits_NE_, scores_NE_,
                                                  float(m.top1_lbl_temperature));
  double total = double(std::accumulate(counts.begin(), counts.end(), int64_t(0)));
  SIGMA_CHECK(int64_t(counts.size()) == e && total > 0, "balance: {} counts, {} routed",
              counts.size(), total);
  RouterBalance b;
  b.entropy = sums.entropy / n;
  b.z_loss = sums.z_sq / n;
  coeff_score_.assign(size_t(e), 0.0f);
  coeff_sharp_.assign(size_t(e), 0.0f);
  const float* score_sum = score_sum_E_.f32();
  for (int64_t i = 0; i < e; ++i) {
    double f = double(counts[size_t(i)]) / total;
    b.lbl += experts * f * score_sum[i] / n;
    // d LBL / d scores[n, i] = E f_i / N for every token n.
    coeff_score_[size_t(i)] = float(m.lbl_coeff * experts * f / n);
  }
  double mean_top1 = sums.top1 / n;
  coeff_top1_ = 0;
  if (top1) {
    const float* sharp_sum = sharp_sum_E_.f32();
    double sum_sq = 0;
    for (int64_t i = 0; i < e; ++i) sum_sq += (sharp_sum[i] / n) * (sharp_sum[i] / n);
    b.top1_lbl = experts * sum_sq / mean_top1;
    for (int64_t i = 0; i < e; ++i)
      coeff_sharp_[size_t(i)] =
          float(m.top1_lbl_coeff * experts * 2.0 * (sharp_sum[i] / n) / mean_top1 / n);
    coeff_top1_ = float(-m.top1_lbl_coeff * experts * sum_sq / (mean_top1 * mean_top1) / n);
  }
  coeff_z_ = float(m.z_loss_coeff / n);
  b.aux = m.lbl_coeff * b.lbl + m.top1_lbl_coeff * b.top1_lbl + m.z_loss_coeff * b.z_loss;
  return b;
}

void Router::backward(Tensor d_h_ND, Tensor d_probs_NK, Tensor h_ND, float aux_scale,
                      const RouterGrads& g) {
  const MoeConfig& m = config_.moe;
  int64_t e = m.n_experts;
  Tensor d_scores = g.d_scores_NE.view({tokens_, e});
  ops::router_topk_backward(d_scores, d_probs_NK, probs_NK(), experts_NK(), scores_NE_,
                            m.renormalize);
  float* g_score = g_score_E_.f32();
  float* g_sharp = g_sharp_E_.f32();
  for (int64_t i = 0; i < e; ++i) {
    g_score[i] = aux_scale * coeff_score_[size_t(i)];
    g_sharp[i] = aux_scale * coeff_sharp_[size_t(i)];
  }
  ops::router_balance_backward_scores(d_scores, scores_NE_, g_score_E_, aux_scale * coeff_top1_);
  ops::router_scores_backward(g.d_logits_NE, d_scores, scores_NE_, score_function(m.score));
  ops::router_balance_backward_logits(g.d_logits_NE, logits_NE_,
                                      m.top1_lbl_coeff > 0 ? g_sharp_E_ : Tensor{},
                                      float(m.top1_lbl_temperature), aux_scale * coeff_z_);
  ops::matmul_backward(d_h_ND, gate_.grad, g.d_logits_NE, h_ND, gate_.weight);
}

void Router::update_bias(const std::vector<int64_t>& counts) {
  if (!bias_E_.defined()) return;
  int64_t e = config_.moe.n_experts;
  double mean = double(std::accumulate(counts.begin(), counts.end(), int64_t(0))) / double(e);
  float rate = float(config_.moe.bias_update_rate);
  float* b = bias_E_.f32();
  for (int64_t i = 0; i < e; ++i) {
    double load = double(counts[size_t(i)]);
    // An overloaded expert's bias falls, an idle one's rises (DeepSeek-V3, section 2.1.2).
    if (load < mean) b[i] += rate;
    if (load > mean) b[i] -= rate;
  }
}

}  // namespace sigma
