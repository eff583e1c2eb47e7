#include "models/mlp.h"

#include "kernels/ops.h"

#include <cmath>

namespace sigma {

void Mlp::bind_params(ParameterSet& params, const std::string& prefix) {
  int64_t d = config_.d_model, f = width_;
  double std = config_.init_std;
  double out_std = config_.init_scale_residual ? std / std::sqrt(2.0 * config_.n_layers) : std;
  gate_proj_ = params.add(prefix + "gate_proj.weight", {f, d}, ParamInit::kNormal, std, true);
  up_proj_ = params.add(prefix + "up_proj.weight", {f, d}, ParamInit::kNormal, std, true);
  down_proj_ = params.add(prefix + "down_proj.weight", {d, f}, ParamInit::kNormal, out_std, true);
}

void Mlp::layout_acts(Arena& arena, const std::string& category) {
  const DType act = activation_dtype(arena.device());
  gate_NF_ = arena.take({tokens_, width_}, act, category);
  up_NF_ = arena.take({tokens_, width_}, act, category);
}

void Mlp::layout_scratch(Arena& arena, const std::string& category) {
  act_NF_ = arena.take({tokens_, width_}, activation_dtype(arena.device()), category);
}

MlpGrads Mlp::layout_grads(Arena& arena, int64_t tokens, int64_t width) {
  auto take = [&](int64_t cols) {
    return arena.take({tokens, cols}, activation_dtype(arena.device()), "gradient scratch");
  };
  return {take(width), take(width), take(width)};
}

void Mlp::forward(Tensor out_ND, Tensor h_ND) {
  ops::matmul_forward(gate_NF_, h_ND, gate_proj_.weight);
  ops::matmul_forward(up_NF_, h_ND, up_proj_.weight);
  ops::swiglu_forward(act_NF_, gate_NF_, up_NF_);
  ops::matmul_forward(out_ND, act_NF_, down_proj_.weight);
}

void Mlp::backward(Tensor d_h_ND, Tensor d_out_ND, Tensor h_ND, const MlpGrads& g,
                   ops::GradWrite input_write) {
  // The product may hold another block's by now: one elementwise pass (~1% of a step)
  // instead of keeping every layer's, as torch.compile's partitioner also chooses.
  ops::swiglu_forward(act_NF_, gate_NF_, up_NF_);
  linear_backward(g.d_act_NF, down_proj_, d_out_ND, act_NF_);
  ops::swiglu_backward(g.d_gate_NF, g.d_up_NF, g.d_act_NF, gate_NF_, up_NF_);
  // h feeds gate_proj and up_proj: its gradient is the sum of both (the second product adds).
  linear_backward(d_h_ND, gate_proj_, g.d_gate_NF, h_ND, input_write);
  linear_backward(d_h_ND, up_proj_, g.d_up_NF, h_ND, ops::GradWrite::kAccumulate);
}

}  // namespace sigma
