#include "models/moe/dispatcher.h"

#include "kernels/ops.h"

namespace sigma {

void Dispatcher::layout_acts(Arena& arena, const std::string& category) {
  int64_t rows = tokens_ * max_top_k_;
  row_of_buf_ = arena.take({rows}, DType::kI32, category);
  tokens_per_expert_E_ = arena.take({config_.moe.n_experts}, DType::kI32, category);
  x_buf_ = arena.take({rows, config_.d_model}, activation_dtype(arena.device()), category);
}

void Dispatcher::dispatch(Tensor h_ND, Tensor experts_NK) {
  top_k_ = experts_NK.size(1);
  Tensor row_of = row_of_buf_.slice_rows(0, tokens_ * top_k_).view(experts_NK.shape);
  ops::moe_routing_map(row_of, tokens_per_expert_E_, experts_NK);
  ops::moe_permute_forward(x_RD(), h_ND, row_of);
}

void Dispatcher::combine(Tensor out_ND, Tensor y_RD, Tensor probs_NK) {
  Tensor row_of = row_of_buf_.slice_rows(0, tokens_ * top_k_).view(probs_NK.shape);
  ops::moe_unpermute_forward(out_ND, y_RD, row_of, probs_NK);
}

void Dispatcher::combine_backward(Tensor d_y_RD, Tensor d_probs_NK, Tensor d_out_ND, Tensor y_RD,
                                  Tensor probs_NK) {
  Tensor row_of = row_of_buf_.slice_rows(0, tokens_ * top_k_).view(probs_NK.shape);
  ops::moe_unpermute_backward(d_y_RD, d_probs_NK, d_out_ND, y_RD, row_of, probs_NK);
}

void Dispatcher::dispatch_backward(Tensor d_h_ND, Tensor d_x_RD) {
  Tensor row_of = row_of_buf_.slice_rows(0, tokens_ * top_k_).view({tokens_, top_k_});
  ops::moe_permute_backward(d_h_ND, d_x_RD, row_of);
}

}  // namespace sigma
