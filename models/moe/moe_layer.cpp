#include "models/moe/moe_layer.h"

#include "kernels/device.h"
#include "kernels/ops.h"

#include <algorithm>
#include <numeric>

namespace sigma {

namespace {

// A host tensor over `data` with t's shape and dtype, for copies to and from t.
Tensor host_view(Tensor t, void* data) {
  t.data = data;
  t.device = Device::kCpu;
  return t;
}

// A device tensor of i32 counts as host integers (a synchronisation).
std::vector<int64_t> host_counts(Tensor counts) {
  std::vector<int32_t> host(size_t(counts.numel()));
  device::copy(host_view(counts, host.data()), counts);
  return {host.begin(), host.end()};
}

}  // namespace

LoadBalance load_balance(const std::vector<int64_t>& counts) {
  double mean = double(std::accumulate(counts.begin(), counts.end(), int64_t(0))) /
                double(counts.size());
  auto [min, max] = std::minmax_element(counts.begin(), counts.end());
  LoadBalance b;
  b.max_dev_pct = 100.0 * (double(*max) / mean - 1.0);
  b.min_dev_pct = 100.0 * (double(*min) / mean - 1.0);
  b.idle_experts = std::count(counts.begin(), counts.end(), int64_t(0));
  return b;
}

namespace {

int64_t ep_size(const ProcessGroup* group) { return group ? group->size() : 1; }

}  // namespace

MoeLayer::MoeLayer(const ModelConfig& config, int64_t tokens, int64_t layer,
                   ProcessGroup* ep_group)
    : config_(config),
      tokens_(tokens),
      layer_(layer),
      router_(config, tokens, config.moe.max_top_k(layer)),
      dispatcher_(config, tokens, config.moe.max_top_k(layer)),
      alltoall_(ep_group && ep_group->size() > 1
                    ? std::optional<AllToAllDispatcher>(std::in_place, config,
                                                        tokens * config.moe.max_top_k(layer),
                                                        *ep_group)
                    : std::nullopt),
      experts_(config, tokens * config.moe.max_top_k(layer) * ep_size(ep_group),
               alltoall_ ? alltoall_->first_expert() : 0,
               alltoall_ ? alltoall_->local_experts() : config.moe.n_experts) {
  if (config.moe.n_shared_experts > 0) shared_.emplace(config, tokens, config.moe.shared_width());
  set_phase(config.moe.num_phases() - 1);
}

void MoeLayer::bind_params(ParameterSet& params, const std::string& prefix) {
  router_.bind_params(params, prefix + "gate.");
  experts_.bind_params(params, prefix + "experts.");
  if (shared_) shared_->bind_params(params, prefix + "shared_expert.");
}

void MoeLayer::layout_acts(Arena& arena, const std::string& category) {
  router_.layout_acts(arena, category);
  dispatcher_.layout_acts(arena, category);
  if (alltoall_) alltoall_->layout_acts(arena, category);
  experts_.layout_acts(arena, category);
  if (shared_) {
    shared_->layout_acts(arena, category);
    shared_out_ND_ = arena.take({tokens_, config_.d_model}, activation_dtype(arena.device()),
                                category);
  }
  int64_t e = config_.moe.n_experts;
  global_counts_E_ = arena.take({e}, DType::kI32, category);
  step_counts_E_ = arena.take({e}, DType::kI32, category);
  step_losses_L_ = arena.take({ops::kRouterLosses}, DType::kF32, category);
}

void MoeLayer::layout_scratch(Arena& arena, const std::string& category) {
  if (shared_) shared_->layout_scratch(arena, category);
}

MoeGrads MoeLayer::layout_grads(Arena& arena, const ModelConfig& config, int64_t tokens,
                                int64_t ep_size) {
  int64_t max_k = 1;
  for (int64_t l = config.moe.dense_layers; l < config.n_layers; ++l)
    max_k = std::max(max_k, config.moe.max_top_k(l));
  int64_t rows = tokens * max_k, d = config.d_model;
  const std::string scratch = "gradient scratch";
  const DType act = activation_dtype(arena.device());
  MoeGrads g;
  g.router = Router::layout_grads(arena, config, tokens);
  g.experts = Experts::layout_grads(arena, config, rows * ep_size);
  g.d_x_buf = arena.take({rows, d}, act, scratch);
  g.d_y_buf = arena.take({rows, d}, act, scratch);
  if (ep_size > 1) {
    g.d_x_expert_buf = arena.take({rows * ep_size, d}, act, scratch);
    g.d_y_expert_buf = arena.take({rows * ep_size, d}, act, scratch);
  }
  g.d_probs_buf = arena.take({rows}, DType::kF32, scratch);
  if (config.moe.n_shared_experts > 0)
    g.shared = Mlp::layout_grads(arena, tokens, config.moe.shared_width());
  return g;
}

void MoeLayer::set_phase(int64_t phase) {
  router_.set_top_k(MoeConfig::at_layer(config_.moe.phase_top_k(phase), layer_));
}

void MoeLayer::forward(Tensor out_ND, Tensor h_ND) {
  router_.forward(h_ND);
  dispatcher_.dispatch(h_ND, router_.experts_NK());
  Tensor counts_E = dispatcher_.tokens_per_expert();
  Tensor y_RD;
  if (alltoall_) {
    // The all-to-all's sizes come from the counts: the one host synchronisation of an
    // expert-parallel layer (as in Megatron-Core's all-to-all dispatcher).
    alltoall_->dispatch(dispatcher_.x_RD(), host_counts(counts_E));
    Tensor y_SD = alltoall_->rows(experts_.out_buffer());
    experts_.forward(y_SD, alltoall_->x_SD(), alltoall_->tokens_per_local_expert());
    y_RD = alltoall_->y_RD();
    alltoall_->combine(y_RD, y_SD);
  } else {
    y_RD = dispatcher_.rows(experts_.out_buffer());
    experts_.forward(y_RD, dispatcher_.x_RD(), counts_E);
  }
  dispatcher_.combine(out_ND, y_RD, router_.probs_NK());
  if (shared_) {
    shared_->forward(shared_out_ND_, h_ND);
    ops::add(out_ND, out_ND, shared_out_ND_);
  }
  bool global = config_.moe.lbl_scope == LblScope::kGlobalBatch && use_global_counts_;
  router_.balance(global ? global_counts_E_ : counts_E);
  ops::moe_counts_accumulate(step_counts_E_, counts_E);
  ops::add(step_losses_L_, step_losses_L_, router_.losses_L());
  forwards_ += 1;
}

void MoeLayer::backward(Tensor d_h_ND, Tensor d_out_ND, Tensor h_ND, const MoeGrads& g,
                        float aux_scale) {
  Tensor probs = router_.probs_NK();
  Tensor d_probs = g.d_probs_buf.slice_rows(0, probs.numel()).view(probs.shape);
  Tensor d_y = dispatcher_.rows(g.d_y_buf), d_x = dispatcher_.rows(g.d_x_buf);
  Tensor y_RD = alltoall_ ? alltoall_->y_RD() : dispatcher_.rows(experts_.out_buffer());
  dispatcher_.combine_backward(d_y, d_probs, d_out_ND, y_RD, probs);
  if (alltoall_) {
    Tensor d_y_SD = alltoall_->rows(g.d_y_expert_buf), d_x_SD = alltoall_->rows(g.d_x_expert_buf);
    alltoall_->combine_backward(d_y_SD, d_y);
    experts_.backward(d_x_SD, d_y_SD, alltoall_->x_SD(), alltoall_->tokens_per_local_expert(),
                      g.experts);
    alltoall_->dispatch_backward(d_x, d_x_SD);
  } else {
    experts_.backward(d_x, d_y, dispatcher_.x_RD(), dispatcher_.tokens_per_expert(), g.experts);
  }
  dispatcher_.dispatch_backward(d_h_ND, d_x);
  router_.backward(d_h_ND, d_probs, h_ND, aux_scale, g.router);
  if (shared_) shared_->backward(d_h_ND, d_out_ND, h_ND, *g.shared, ops::GradWrite::kAccumulate);
}

void MoeLayer::set_global_counts(const std::vector<int64_t>& counts) {
  use_global_counts_ = !counts.empty();
  if (!use_global_counts_) return;
  SIGMA_CHECK(int64_t(counts.size()) == config_.moe.n_experts, "{} global counts for {} experts",
              counts.size(), config_.moe.n_experts);
  std::vector<int32_t> host(counts.begin(), counts.end());
  device::copy(global_counts_E_, host_view(global_counts_E_, host.data()));
}

void MoeLayer::reset_step_stats() {
  forwards_ = 0;
  std::vector<int32_t> zero_counts(size_t(config_.moe.n_experts), 0);
  std::vector<float> zero_losses(size_t(ops::kRouterLosses), 0.0f);
  device::copy(step_counts_E_, host_view(step_counts_E_, zero_counts.data()));
  device::copy(step_losses_L_, host_view(step_losses_L_, zero_losses.data()));
}

void MoeLayer::set_step_stats(const MoeStepStats& stats) {
  SIGMA_CHECK(int64_t(stats.counts.size()) == config_.moe.n_experts, "{} counts for {} experts",
              stats.counts.size(), config_.moe.n_experts);
  std::vector<int32_t> counts(stats.counts.begin(), stats.counts.end());
  std::vector<float> losses(size_t(ops::kRouterLosses), 0.0f);
  losses[ops::kLossLbl] = float(stats.lbl_sum);
  losses[ops::kLossEntropy] = float(stats.entropy_sum);
  losses[ops::kLossAux] = float(stats.aux_sum);
  device::copy(step_counts_E_, host_view(step_counts_E_, counts.data()));
  device::copy(step_losses_L_, host_view(step_losses_L_, losses.data()));
  forwards_ = stats.forwards;
}

MoeStepStats MoeLayer::step_stats() const {
  std::vector<int32_t> counts(size_t(config_.moe.n_experts));
  std::vector<float> losses(static_cast<size_t>(ops::kRouterLosses));
  device::copy(host_view(step_counts_E_, counts.data()), step_counts_E_);
  device::copy(host_view(step_losses_L_, losses.data()), step_losses_L_);
  MoeStepStats stats;
  stats.counts.assign(counts.begin(), counts.end());
  stats.lbl_sum = losses[ops::kLossLbl];
  stats.entropy_sum = losses[ops::kLossEntropy];
  stats.aux_sum = losses[ops::kLossAux];
  stats.forwards = forwards_;
  return stats;
}

}  // namespace sigma
