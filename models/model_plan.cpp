#include "models/model_plan.h"

#include "kernels/attention_workspace.h"
#include "models/transformer.h"

#include <fmt/format.h>

namespace sigma {

std::string describe_top_k(const std::vector<int64_t>& top_k, int64_t n_layers) {
  std::string text;
  int64_t l = 0;
  while (l < n_layers) {
    int64_t k = MoeConfig::at_layer(top_k, l), run = 0;
    while (l < n_layers && MoeConfig::at_layer(top_k, l) == k) ++l, ++run;
    text += fmt::format("{}{} x{}", text.empty() ? "" : ", ", k, run);
  }
  return "[" + text + "]";
}

ModelPlan plan_model(const ModelConfig& config, int64_t micro_batch, int64_t seq_len,
                     Device device, Recompute recompute) {
  ParameterSet params(device);
  Arena acts(device);
  Transformer model(config, micro_batch, seq_len, recompute);
  model.bind_params(params);
  model.layout_acts(acts);

  ModelPlan plan;
  plan.total_params = params.num_elements();
  plan.embedding_params = config.vocab_size * config.d_model;
  // A tied embedding is also the LM head, which is a matmul: it stays active.
  int64_t dense_active = plan.total_params - (config.tie_embeddings ? 0 : plan.embedding_params);
  const AttentionConfig& a = config.attention;
  double attention_flops =
      3.0 * double(config.n_layers * seq_len * a.n_q * (a.d_qk + a.d_v));
  plan.active_params = dense_active;
  plan.flops_per_token = 6.0 * double(dense_active) + attention_flops;
  const MoeConfig& moe = config.moe;
  for (int64_t phase = 0; moe.enabled() && phase < moe.num_phases(); ++phase) {
    // A token runs k of the E routed experts of each MoE layer; the others are idle for it.
    int64_t expert_params = 3 * config.d_model * moe.d_expert, idle = 0;
    for (int64_t l = moe.dense_layers; l < config.n_layers; ++l)
      idle += (moe.n_experts - MoeConfig::at_layer(moe.phase_top_k(phase), l)) * expert_params;
    PhaseCost cost{moe.phase_top_k(phase), dense_active - idle, 0};
    cost.flops_per_token = 6.0 * double(cost.active_params) + attention_flops;
    plan.moe_phases.push_back(cost);
    plan.active_params = cost.active_params;
    plan.flops_per_token = cost.flops_per_token;
  }
  plan.bytes = acts.bytes_by_category();
  for (const auto& [category, bytes] : params.values().bytes_by_category())
    plan.bytes[category] += bytes;
  // Gradients mirror the weights' layout, and AdamW keeps two moments of the same layout.
  plan.bytes["gradients"] = plan.bytes["weights"];
  plan.bytes["optimizer state"] = 2 * plan.bytes["weights"];
  if (params.separate_weights()) {
    plan.bytes["weights (bf16 copy)"] = params.num_elements() * dtype_size(DType::kBF16);
    // The CUDA runtime's cuBLASLt workspace and reduction scratch (kernels/cuda/runtime.h),
    // and the attention backward's accumulators (kernels/attention_workspace.h).
    const AttentionWorkspace attention =
        attention_workspace(micro_batch, seq_len, a.n_q, a.n_k, a.n_v, a.d_qk, a.d_v);
    plan.bytes["runtime buffers"] = (size_t(128) << 20) + attention.bytes();
  }
  return plan;
}

}  // namespace sigma
