// Stacked SwiGLU experts over expert-contiguous rows: expert e maps its rows x to
// down_e(silu(gate_e x) * up_e x), with gate/up [E, F, D] and down [E, D, F] stacked as in
// Hugging Face's Qwen3-MoE layout (DESIGN.md, Contracts).
//
// Shape legend: R permuted rows (grouped by expert, counts from the dispatcher), D d_model,
// F d_expert. Each projection is one ops::grouped_matmul over this rank's experts, which
// reads the counts on the device (Megatron-Core's GroupedMLP), so no host synchronisation is
// needed. With expert parallelism a rank holds experts [first, first + count) of the layer,
// as rows [first, first + count) of the stacked tensors (models/moe/alltoall_dispatcher.h).
#pragma once

#include "core/tensor/arena.h"
#include "models/config.h"
#include "models/parameters.h"

namespace sigma {

struct ExpertGrads {
  Tensor d_act_RF, d_gate_RF, d_up_RF, d_tmp_RD;  // [N * max top-k, .] buffers
};

class Experts {
 public:
  // Experts [first_expert, first_expert + num_experts) of model.moe.n_experts.
  Experts(const ModelConfig& config, int64_t max_rows, int64_t first_expert, int64_t num_experts)
      : config_(config), max_rows_(max_rows), first_expert_(first_expert),
        num_experts_(num_experts) {}

  void bind_params(ParameterSet& params, const std::string& prefix);
  void layout_acts(Arena& arena, const std::string& category);
  static ExpertGrads layout_grads(Arena& arena, const ModelConfig& config, int64_t max_rows);

  // y_RD = experts(x_RD), rows grouped by tokens_per_expert_E (i32 [this rank's experts] on
  // the device).
  void forward(Tensor y_RD, Tensor x_RD, Tensor tokens_per_expert_E);
  // d_x_RD (overwrite) from d_y_RD; the stacked weights' gradients accumulate.
  void backward(Tensor d_x_RD, Tensor d_y_RD, Tensor x_RD, Tensor tokens_per_expert_E,
                const ExpertGrads& scratch);

  // The output buffer, [N * max top-k, D]; forward's y_RD is a prefix of it.
  Tensor out_buffer() const { return out_buf_; }

 private:
  const ModelConfig& config_;
  int64_t max_rows_, first_expert_, num_experts_;
  Param gate_proj_, up_proj_, down_proj_;
  Tensor gate_buf_, up_buf_, act_buf_, out_buf_;
};

}  // namespace sigma
