// The Sigma decoder: embedding, pre-norm blocks (DiffQKV attention + a SwiGLU MLP or an MoE
// block), final norm and LM head, with an explicit forward and backward (no autograd;
// DESIGN.md, "The engine").
//
// Shape legend: B micro-batch, T sequence length, N = B*T tokens, D d_model, V vocab.
//   x_0 = embed(tokens)
//   x_mid = x_l + attention(rmsnorm(x_l));  x_{l+1} = x_mid + mlp(rmsnorm(x_mid))
//   loss = cross_entropy(lm_head(rmsnorm(x_L)), targets)
// With [model.moe], mlp is an MoeLayer from layer model.moe.dense_layers on, and each MoE
// layer adds its balancing losses (aux_loss()), whose gradients backward includes.
// Activations backward needs are kept in the planned arena, or recomputed per layer when the
// recipe asks (Recompute in models/config.h).
#pragma once

#include "core/tensor/arena.h"
#include "models/attention.h"
#include "models/config.h"
#include "models/mlp.h"
#include "models/moe/moe_layer.h"
#include "models/parameters.h"

#include <functional>
#include <optional>
#include <utility>
#include <vector>

namespace sigma {

class Transformer {
 public:
  // `ep_group` splits each MoE layer's experts over its ranks (null: every expert here).
  Transformer(const ModelConfig& config, int64_t batch, int64_t seq_len,
              Recompute recompute = Recompute::kNone, ProcessGroup* ep_group = nullptr);

  // Layout passes; each runs twice (plan, then bind after allocation).
  void bind_params(ParameterSet& params);
  void layout_acts(Arena& arena);

  // Inputs of the next forward pass: i32 [N] each. A negative target is ignored.
  Tensor tokens() const { return tokens_N_; }
  Tensor targets() const { return targets_N_; }

  // Runs forward and returns the sum of the per-token losses. With head_grad_scale > 0 (a
  // training pass that will call backward(head_grad_scale)) the LM head's backward runs
  // fused into its forward, chunk by chunk, so no [N, V] logits buffer ever exists.
  double forward(float head_grad_scale = 0);
  // The layers only, no LM head: the routing pre-pass of global-batch LBL.
  void forward_layers();
  // Backpropagates loss_scale * (sum of losses + tokens_per_pass() * aux_loss()), so the
  // balancing losses, means over a micro-batch, weigh like its mean token loss. Parameter
  // gradients accumulate.
  void backward(float loss_scale);

  // Backward calls `hook(part)` as each part's parameter gradients become final for the
  // pass: part n_layers + 1 (final norm, LM head), then layer l as part l + 1 from the last
  // layer down, then part 0 (embedding, and the LM head when tied). Data parallelism starts
  // reducing a gradient bucket there, overlapping the rest of backward.
  void on_grads_ready(std::function<void(int64_t part)> hook) { grads_ready_ = std::move(hook); }
  // The part of a parameter, by its name (the numbering above).
  int64_t backward_part(const std::string& param_name) const;

  // The last forward's balancing losses, summed over MoE layers (0 for a dense model).
  double aux_loss() const;
  // The MoE block of layer l, or nullptr where the layer is dense.
  MoeLayer* moe_layer(int64_t l) {
    std::optional<MoeLayer>& moe = layers_[size_t(l)].moe;
    return moe ? &*moe : nullptr;
  }
  // Every MoE layer switches to the top-k of progressive-sparsification phase `phase`.
  void set_moe_phase(int64_t phase);
  // Non-trainable state a checkpoint must keep (the expert biases), by name.
  std::vector<std::pair<std::string, Tensor>> state_tensors();

  const ModelConfig& config() const { return config_; }
  int64_t tokens_per_pass() const { return batch_ * seq_len_; }

 private:
  struct Layer {
    Attention attention;
    std::optional<Mlp> mlp;       // dense layers
    std::optional<MoeLayer> moe;  // MoE layers
    Param input_layernorm, post_attention_layernorm;
    Tensor h1_ND, rstd1_N, h2_ND, rstd2_N;  // normed inputs of the two branches
  };

  // Layer l's norms, attention and add (and its dense MLP with `with_mlp`), from x_l.
  void forward_layer(size_t l, bool with_mlp);
  void grads_ready(int64_t part) {
    if (grads_ready_) grads_ready_(part);
  }

  const ModelConfig& config_;
  int64_t batch_, seq_len_;
  Recompute recompute_;
  int64_t ep_size_ = 1;
  std::function<void(int64_t)> grads_ready_;
  std::vector<Layer> layers_;
  Param embed_tokens_, final_norm_, lm_head_;

  Tensor tokens_N_, targets_N_, positions_N_;
  std::vector<Tensor> residual_ND_;  // x_0 .. x_L
  std::vector<Tensor> mid_ND_;       // x_mid of each layer
  Tensor branch_ND_;                 // a branch's output before it joins the residual
  // The LM head and loss run over chunks of head_chunk_ rows: fp32 logits [C, V] and their
  // gradient (the same buffer on the CPU; bf16 on CUDA, for the tensor cores).
  void head_chunk(int64_t begin, int64_t end, float grad_scale);
  int64_t head_chunk_ = 0;
  float head_grad_scale_ = 0;  // the scale the last forward already applied to d_h_ND_, or 0
  Tensor final_ND_, final_rstd_N_, logits_CV_, d_logits_CV_, lse_C_, losses_N_;
  // Gradient scratch, shared by all layers.
  Tensor d_res_ND_, d_h_ND_;
  AttentionGrads attention_grads_;
  std::optional<MlpGrads> mlp_grads_;
  std::optional<MoeGrads> moe_grads_;
};

}  // namespace sigma
