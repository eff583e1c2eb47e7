#include "models/moe/experts.h"

#include "kernels/ops.h"

#include <cmath>

namespace sigma {

namespace {

// Expert e's [rows, cols] matrix within a stacked [E, rows, cols] weight.
Tensor expert_matrix(Tensor stacked, int64_t e) {
  return stacked.slice_rows(e, e + 1).view({stacked.size(1), stacked.size(2)});
}

}  // namespace

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
  gate_buf_ = arena.take({max_rows_, f}, DType::kF32, category);
  up_buf_ = arena.take({max_rows_, f}, DType::kF32, category);
  act_buf_ = arena.take({max_rows_, f}, DType::kF32, category);
  out_buf_ = arena.take({max_rows_, config_.d_model}, DType::kF32, category);
}

ExpertGrads Experts::layout_grads(Arena& arena, const ModelConfig& config, int64_t max_rows) {
  auto take = [&](int64_t cols) {
    return arena.take({max_rows, cols}, DType::kF32, "gradient scratch");
  };
  int64_t f = config.moe.d_expert;
  return {take(f), take(f), take(f), take(config.d_model)};
}

void Experts::forward(Tensor y_RD, Tensor x_RD, const std::vector<int64_t>& counts) {
  int64_t begin = 0;
  for (int64_t e = 0; e < num_experts_; ++e) {
    int64_t end = begin + counts[size_t(e)];
    if (end > begin) {
      Tensor gate = gate_buf_.slice_rows(begin, end), up = up_buf_.slice_rows(begin, end);
      Tensor act = act_buf_.slice_rows(begin, end), x = x_RD.slice_rows(begin, end);
      ops::matmul_forward(gate, x, expert_matrix(gate_proj_.weight, e));
      ops::matmul_forward(up, x, expert_matrix(up_proj_.weight, e));
      ops::swiglu_forward(act, gate, up);
      ops::matmul_forward(y_RD.slice_rows(begin, end), act, expert_matrix(down_proj_.weight, e));
    }
    begin = end;
  }
}

void Experts::backward(Tensor d_x_RD, Tensor d_y_RD, Tensor x_RD,
                       const std::vector<int64_t>& counts, const ExpertGrads& g) {
  int64_t begin = 0;
  for (int64_t e = 0; e < num_experts_; ++e) {
    int64_t end = begin + counts[size_t(e)];
    if (end > begin) {
      auto rows = [&](Tensor t) { return t.slice_rows(begin, end); };
      ops::matmul_backward(rows(g.d_act_RF), expert_matrix(down_proj_.grad, e), rows(d_y_RD),
                           rows(act_buf_), expert_matrix(down_proj_.weight, e));
      ops::swiglu_backward(rows(g.d_gate_RF), rows(g.d_up_RF), rows(g.d_act_RF), rows(gate_buf_),
                           rows(up_buf_));
      // x feeds gate_proj and up_proj: its gradient is the sum of both.
      ops::matmul_backward(rows(d_x_RD), expert_matrix(gate_proj_.grad, e), rows(g.d_gate_RF),
                           rows(x_RD), expert_matrix(gate_proj_.weight, e));
      ops::matmul_backward(rows(g.d_tmp_RD), expert_matrix(up_proj_.grad, e), rows(g.d_up_RF),
                           rows(x_RD), expert_matrix(up_proj_.weight, e));
      ops::add(rows(d_x_RD), rows(d_x_RD), rows(g.d_tmp_RD));
    }
    begin = end;
  }
}

}  // namespace sigma
