// The dense Sigma decoder: embedding, pre-norm blocks (DiffQKV attention + SwiGLU), final
// norm and LM head, with an explicit forward and backward (no autograd; DESIGN.md, "The engine").
//
// Shape legend: B micro-batch, T sequence length, N = B*T tokens, D d_model, V vocab.
//   x_0 = embed(tokens)
//   x_mid = x_l + attention(rmsnorm(x_l));  x_{l+1} = x_mid + mlp(rmsnorm(x_mid))
//   loss = cross_entropy(lm_head(rmsnorm(x_L)), targets)
// Every activation backward needs is saved in the planned arena; nothing is recomputed yet.
#pragma once

#include "core/tensor/arena.h"
#include "models/attention.h"
#include "models/config.h"
#include "models/mlp.h"
#include "models/parameters.h"

#include <vector>

namespace sigma {

class Transformer {
 public:
  Transformer(const ModelConfig& config, int64_t batch, int64_t seq_len);

  // Layout passes; each runs twice (plan, then bind after allocation).
  void bind_params(ParameterSet& params);
  void layout_acts(Arena& arena);

  // Inputs of the next forward pass: i32 [N] each. A negative target is ignored.
  Tensor tokens() const { return tokens_N_; }
  Tensor targets() const { return targets_N_; }

  // Runs forward and returns the sum of the per-token losses.
  double forward();
  // Backpropagates loss_scale * (sum of losses); parameter gradients accumulate.
  void backward(float loss_scale);

  const ModelConfig& config() const { return config_; }
  int64_t tokens_per_pass() const { return batch_ * seq_len_; }

 private:
  struct Layer {
    Attention attention;
    Mlp mlp;
    Param input_layernorm, post_attention_layernorm;
    Tensor h1_ND, rstd1_N, h2_ND, rstd2_N;  // normed inputs of the two branches
  };

  const ModelConfig& config_;
  int64_t batch_, seq_len_;
  std::vector<Layer> layers_;
  Param embed_tokens_, final_norm_, lm_head_;

  Tensor tokens_N_, targets_N_, positions_N_;
  std::vector<Tensor> residual_ND_;  // x_0 .. x_L
  std::vector<Tensor> mid_ND_;       // x_mid of each layer
  Tensor branch_ND_;                 // a branch's output before it joins the residual
  Tensor final_ND_, final_rstd_N_, logits_NV_, losses_N_;
  // Gradient scratch, shared by all layers.
  Tensor d_res_ND_, d_h_ND_, d_tmp_ND_;
  AttentionGrads attention_grads_;
  MlpGrads mlp_grads_;
};

}  // namespace sigma
