// Early warnings: per-layer norms, the MoE depth profile, idle experts (early_warnings.h).
#include "core/train/early_warnings.h"

#include "kernels/ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string_view>

namespace sigma {
namespace {

// The layer a parameter belongs to ("model.layers.<i>."), or -1 (embeddings, final norm, head).
int64_t layer_of(const std::string& name) {
  constexpr std::string_view kPrefix = "model.layers.";
  if (!std::string_view(name).starts_with(kPrefix)) return -1;
  int64_t layer = -1;
  const char* begin = name.data() + kPrefix.size();
  auto [end, error] = std::from_chars(begin, name.data() + name.size(), layer);
  return error == std::errc() && end != begin && *end == '.' ? layer : -1;
}

std::string join(const std::vector<int64_t>& values) {
  std::string text;
  for (int64_t v : values) text += (text.empty() ? "" : ", ") + std::to_string(v);
  return text;
}

}  // namespace

EarlyWarnings::EarlyWarnings(const GuardConfig& config, int64_t expert_load_interval,
                             Transformer& model, const ParameterSet& params)
    : config_(config), model_(model), params_(params), expert_load_interval_(expert_load_interval) {
  int64_t n_layers = model.config().n_layers;
  layer_params_.resize(size_t(n_layers));
  idle_steps_.resize(size_t(n_layers));
  const auto& list = params.list();
  for (size_t i = 0; i < list.size(); ++i) {
    int64_t layer = layer_of(list[i].name);
    if (layer >= 0 && layer < n_layers) layer_params_[size_t(layer)].push_back(i);
  }
  for (int64_t l = 0; l < n_layers; ++l)
    if (model.moe_layer(l)) idle_steps_[size_t(l)].assign(size_t(model.config().moe.n_experts), 0);
  load_sums_ = idle_steps_;
}

void EarlyWarnings::observe_experts(int64_t step, RunLog& log) {
  load_steps_ += 1;
  for (size_t l = 0; l < idle_steps_.size(); ++l) {
    MoeLayer* layer = model_.moe_layer(int64_t(l));
    if (!layer) continue;
    const std::vector<int64_t>& counts = layer->step_stats().counts;
    std::vector<int64_t> newly_idle;
    for (size_t e = 0; e < idle_steps_[l].size() && e < counts.size(); ++e) {
      load_sums_[l][e] += counts[e];
      int64_t& idle = idle_steps_[l][e];
      idle = counts[e] == 0 ? idle + 1 : 0;
      if (idle == config_.idle_expert_steps) newly_idle.push_back(int64_t(e));
    }
    if (newly_idle.empty() || config_.idle_expert_steps == 0) continue;
    log.line(fmt::format("step {} | warning: layer {}: expert{} {} got no token for {} steps", step,
                         l, newly_idle.size() > 1 ? "s" : "", join(newly_idle),
                         config_.idle_expert_steps));
    log.metrics({{"step", step},
                 {"event", "warning.idle_experts"},
                 {"layer", l},
                 {"experts", newly_idle},
                 {"idle_steps", config_.idle_expert_steps}});
  }
}

void EarlyWarnings::log_layers(int64_t step, nlohmann::json& row, RunLog& log) {
  const auto& list = params_.list();
  std::vector<double> param_norms;  // of the MoE layers, by depth
  std::vector<int64_t> moe_ids;
  bool load_due = expert_load_interval_ > 0 && load_steps_ >= expert_load_interval_;
  for (size_t l = 0; l < layer_params_.size(); ++l) {
    double value_sq = 0, grad_sq = 0;
    for (size_t i : layer_params_[l]) {
      // The compute weights: with data parallelism only they are whole on every rank.
      value_sq += ops::sum_squares(list[i].param.weight);
      grad_sq += ops::sum_squares(list[i].param.grad);
    }
    std::string prefix = fmt::format("layers.l{}.", l);
    row[prefix + "param_norm"] = std::sqrt(value_sq);
    row[prefix + "grad_norm"] = std::sqrt(grad_sq);
    if (model_.moe_layer(int64_t(l))) {
      param_norms.push_back(std::sqrt(value_sq));
      moe_ids.push_back(int64_t(l));
      if (load_due) {
        row[fmt::format("moe.l{}.tokens_per_expert", l)] = load_sums_[l];
        std::fill(load_sums_[l].begin(), load_sums_[l].end(), 0);
      }
    }
  }
  if (load_due) load_steps_ = 0;
  if (param_norms.size() >= 3) check_depth_profile(step, param_norms, moe_ids, row, log);
}

void EarlyWarnings::check_depth_profile(int64_t step, const std::vector<double>& norms,
                                        const std::vector<int64_t>& layers, nlohmann::json& row,
                                        RunLog& log) {
  // prefix_max[i]: the largest norm among the first i + 1 MoE layers; suffix_max likewise.
  size_t n = norms.size();
  std::vector<double> prefix_max(norms), suffix_max(norms);
  for (size_t i = 1; i < n; ++i) prefix_max[i] = std::max(prefix_max[i - 1], norms[i]);
  for (size_t i = n - 1; i-- > 0;) suffix_max[i] = std::max(suffix_max[i + 1], norms[i]);
  double deepest = 0;
  size_t where = 0;
  for (size_t i = 1; i + 1 < n; ++i) {
    double dip = 1 - norms[i] / std::min(prefix_max[i - 1], suffix_max[i + 1]);
    if (dip > deepest) deepest = dip, where = i;
  }
  row["moe.norm_dip"] = deepest;
  bool dipped = config_.norm_dip > 0 && deepest > config_.norm_dip;
  if (dipped && !dip_warned_) {
    int64_t layer = layers[where];
    log.line(
        fmt::format("step {} | warning: the parameter norm dips {:.1f}% in the middle "
                    "of the MoE layers (layer {}); in the LTF report such a dip came "
                    "before an MoE collapse",
                    step, 100 * deepest, layer));
    log.metrics(
        {{"step", step}, {"event", "warning.norm_dip"}, {"layer", layer}, {"dip", deepest}});
  }
  dip_warned_ = dipped;
}

}  // namespace sigma
