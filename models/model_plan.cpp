#include "models/model_plan.h"

#include "models/transformer.h"

namespace sigma {

ModelPlan plan_model(const ModelConfig& config, int64_t micro_batch, int64_t seq_len) {
  ParameterSet params(Device::kCpu);
  Arena acts(Device::kCpu);
  Transformer model(config, micro_batch, seq_len);
  model.bind_params(params);
  model.layout_acts(acts);

  ModelPlan plan;
  plan.total_params = params.num_elements();
  plan.embedding_params = config.vocab_size * config.d_model;
  // A tied embedding is also the LM head, which is a matmul: it stays active.
  plan.active_params = plan.total_params - (config.tie_embeddings ? 0 : plan.embedding_params);
  const AttentionConfig& a = config.attention;
  plan.flops_per_token = 6.0 * double(plan.active_params) +
                         3.0 * double(config.n_layers * seq_len * a.n_q * (a.d_qk + a.d_v));
  plan.bytes = acts.bytes_by_category();
  for (const auto& [category, bytes] : params.values().bytes_by_category())
    plan.bytes[category] += bytes;
  // Gradients mirror the weights' layout, and AdamW keeps two moments of the same layout.
  plan.bytes["gradients"] = plan.bytes["weights"];
  plan.bytes["optimizer state"] = 2 * plan.bytes["weights"];
  return plan;
}

}  // namespace sigma
