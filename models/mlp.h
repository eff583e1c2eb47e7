// The dense SwiGLU feed-forward block: out = down_proj(silu(gate_proj(h)) * up_proj(h)).
//
// Shape legend: N tokens, D d_model, F its inner width (d_ff; for an MoE layer's shared
// experts, models/moe/moe_layer.h, their fused width).
#pragma once

#include "core/tensor/arena.h"
#include "models/config.h"
#include "models/parameters.h"

namespace sigma {

struct MlpGrads {
  Tensor d_act_NF, d_gate_NF, d_up_NF;
};

class Mlp {
 public:
  Mlp(const ModelConfig& config, int64_t tokens, int64_t width)
      : config_(config), tokens_(tokens), width_(width) {}

  void bind_params(ParameterSet& params, const std::string& prefix);
  // What backward reads: the gate and up projections.
  void layout_acts(Arena& arena, const std::string& category);
  // The SwiGLU product silu(gate) * up, which down_proj reads in forward and backward
  // recomputes: blocks that never run at the same time can be given one buffer.
  void layout_scratch(Arena& arena, const std::string& category);
  static MlpGrads layout_grads(Arena& arena, int64_t tokens, int64_t width);

  void forward(Tensor out_ND, Tensor h_ND);
  // d_h_ND (overwrite, or += with input_write kAccumulate) from d_out_ND; parameter gradients
  // as take_grad_write says.
  void backward(Tensor d_h_ND, Tensor d_out_ND, Tensor h_ND, const MlpGrads& scratch,
                ops::GradWrite input_write = ops::GradWrite::kOverwrite);

 private:
  const ModelConfig& config_;
  int64_t tokens_, width_;
  Param gate_proj_, up_proj_, down_proj_;
  Tensor gate_NF_, up_NF_, act_NF_;
};

}  // namespace sigma
