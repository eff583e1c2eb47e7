// The MoE dispatcher: permutes each token's copy for each chosen expert into expert-contiguous
// rows (dispatch), and sums the experts' outputs back per token, weighted by the router's
// probs (combine), with the backward of both. Megatron-Core's token dispatcher, on one rank.
//
// Shape legend: N tokens, D d_model, E experts, K the active top-k, R = N * K permuted rows.
// Dropless: every assignment gets a row, so buffers hold N * (largest top-k) rows. The
// routing map and the counts are made on the device: nothing here waits for it.
// With expert parallelism, AllToAllDispatcher (alltoall_dispatcher.h) takes x_RD on to the
// ranks holding the experts and brings y_RD back. Leaves out: capacity factors and dropping.
#pragma once

#include "core/tensor/arena.h"
#include "models/config.h"

namespace sigma {

class Dispatcher {
 public:
  Dispatcher(const ModelConfig& config, int64_t tokens, int64_t max_top_k)
      : config_(config), tokens_(tokens), max_top_k_(max_top_k) {}

  void layout_acts(Arena& arena, const std::string& category);

  // Routing map from experts_NK, then x_RD = h_ND permuted. Counts land in tokens_per_expert().
  void dispatch(Tensor h_ND, Tensor experts_NK);
  // out_ND = sum_k probs[n, k] * y_RD[row of (n, k)].
  void combine(Tensor out_ND, Tensor y_RD, Tensor probs_NK);
  // d_y_RD and d_probs_NK (overwrite) from d_out_ND.
  void combine_backward(Tensor d_y_RD, Tensor d_probs_NK, Tensor d_out_ND, Tensor y_RD,
                        Tensor probs_NK);
  // d_h_ND (overwrite) = the sum of each token's rows of d_x_RD.
  void dispatch_backward(Tensor d_h_ND, Tensor d_x_RD);

  // The permuted tokens of the last dispatch, [R, D].
  Tensor x_RD() const { return rows(x_buf_); }
  // Tokens per expert of the last dispatch, i32 [E] on the device (the experts' grouped
  // matmuls and the balancing losses read them there).
  Tensor tokens_per_expert() const { return tokens_per_expert_E_; }
  int64_t top_k() const { return top_k_; }
  // The first R rows of a [N * max_top_k, C] buffer.
  Tensor rows(Tensor buffer) const { return buffer.slice_rows(0, tokens_ * top_k_); }

 private:
  const ModelConfig& config_;
  int64_t tokens_, max_top_k_, top_k_ = 1;
  Tensor row_of_buf_, tokens_per_expert_E_, x_buf_;
};

}  // namespace sigma
