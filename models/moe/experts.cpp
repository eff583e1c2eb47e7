#include "models/moe/experts.h"

#include "kernels/ops.h"

#include <cmath>

namespace sigma {

void Experts::bind_params(ParameterSet& params, const std::string& prefix) {
  int64_t e = num_experts_, d = config_.d_model, f = config_.moe.d_expert;
  double std = config_.init_std;
  double out_std = config_.init_scale_residual ? std / std::sqrt(2.0 * config_.n_layers) : std;
  ParamRows rows{config_.moe.n_experts, first_expert_};
  gate_proj_ =
      params.add(prefix + "gate_proj.weight", {e, f, d}, ParamInit::kNormal, std, true, rows);
  up_proj_ = params.add(prefix + "up_proj.weight", {e, f, d}, ParamInit::kNormal, std, true, rows);
  down_proj_ =
      params.add(prefix + "down_proj.weight", {e, d, f}, ParamInit::kNormal, out_std, true, rows);
}

void Experts::layout_acts(Arena& arena, const std::string& category) {
  int64_t f = config_.moe.d_expert;
  const DType act = activation_dtype(arena.device());
  gate_buf_ = arena.take({max_rows_, f}, act, category);
  up_buf_ = arena.take({max_rows_, f}, act, category);
  act_buf_ = arena.take({max_rows_, f}, act, category);
  out_buf_ = arena.take({max_rows_, config_.d_model}, act, category);
}

ExpertGrads Experts::layout_grads(Arena& arena, const ModelConfig& config, int64_t max_rows) {
  auto take = [&](int64_t cols) {
    return arena.take({max_rows, cols}, activation_dtype(arena.device()), "gradient scratch");
  };
  int64_t f = config.moe.d_expert;
  return {take(f), take(f), take(f), take(config.d_model)};
}

void Experts::forward(Tensor y_RD, Tensor x_RD, Tensor tokens_per_expert_E) {
  int64_t r = x_RD.size(0);
  Tensor gate = gate_buf_.slice_rows(0, r), up = up_buf_.slice_rows(0, r);
  Tensor act = act_buf_.slice_rows(0, r);
  ops::grouped_matmul_forward(gate, x_RD, gate_proj_.weight, tokens_per_expert_E);
  ops::grouped_matmul_forward(up, x_RD, up_proj_.weight, tokens_per_expert_E);
  ops::swiglu_forward(act, gate, up);
  ops::grouped_matmul_forward(y_RD, act, down_proj_.weight, tokens_per_expert_E);
}

void Experts::backward(Tensor d_x_RD, Tensor d_y_RD, Tensor x_RD, Tensor tokens_per_expert_E,
                       const ExpertGrads& g) {
  int64_t r = x_RD.size(0);
  auto rows = [&](Tensor t) { return t.slice_rows(0, r); };
  ops::grouped_matmul_backward(rows(g.d_act_RF), down_proj_.grad, d_y_RD, rows(act_buf_),
                               down_proj_.weight, tokens_per_expert_E, take_grad_write(down_proj_));
  ops::swiglu_backward(rows(g.d_gate_RF), rows(g.d_up_RF), rows(g.d_act_RF), rows(gate_buf_),
                       rows(up_buf_));
  // x feeds gate_proj and up_proj: its gradient is the sum of both.
  ops::grouped_matmul_backward(d_x_RD, gate_proj_.grad, rows(g.d_gate_RF), x_RD,
                               gate_proj_.weight, tokens_per_expert_E, take_grad_write(gate_proj_));
  ops::grouped_matmul_backward(rows(g.d_tmp_RD), up_proj_.grad, rows(g.d_up_RF), x_RD,
                               up_proj_.weight, tokens_per_expert_E, take_grad_write(up_proj_));
  ops::add(d_x_RD, d_x_RD, rows(g.d_tmp_RD));
}

}  // namespace sigma
