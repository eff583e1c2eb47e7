#include "models/transformer.h"

#include "kernels/device.h"
#include "kernels/ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>

namespace sigma {

Transformer::Transformer(const ModelConfig& config, int64_t batch, int64_t seq_len,
                         Recompute recompute, ProcessGroup* ep_group)
    : config_(config),
      batch_(batch),
      seq_len_(seq_len),
      recompute_(recompute),
      ep_size_(ep_group ? ep_group->size() : 1) {
  for (int64_t l = 0; l < config.n_layers; ++l) {
    Layer layer{Attention(config, batch, seq_len), {}, {}, {}, {}, {}, {}, {}, {}};
    if (config.moe.is_moe_layer(l))
      layer.moe.emplace(config, batch * seq_len, l, ep_group);
    else
      layer.mlp.emplace(config, batch * seq_len, config.d_ff);
    layers_.push_back(std::move(layer));
  }
}

void Transformer::bind_params(ParameterSet& params) {
  int64_t d = config_.d_model, v = config_.vocab_size;
  // Embeddings and norms take no weight decay unless the optimizer section says otherwise.
  embed_tokens_ = params.add("model.embed_tokens.weight", {v, d}, ParamInit::kNormal,
                             config_.init_std, false);
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    Layer& layer = layers_[l];
    std::string prefix = fmt::format("model.layers.{}.", l);
    layer.input_layernorm =
        params.add(prefix + "input_layernorm.weight", {d}, ParamInit::kOnes, 0, false);
    layer.attention.bind_params(params, prefix + "self_attn.");
    layer.post_attention_layernorm =
        params.add(prefix + "post_attention_layernorm.weight", {d}, ParamInit::kOnes, 0, false);
    if (layer.moe)
      layer.moe->bind_params(params, prefix + "mlp.");
    else
      layer.mlp->bind_params(params, prefix + "mlp.");
  }
  final_norm_ = params.add("model.norm.weight", {d}, ParamInit::kOnes, 0, false);
  lm_head_ = config_.tie_embeddings
                 ? embed_tokens_
                 : params.add("lm_head.weight", {v, d}, ParamInit::kNormal, config_.init_std, true);
}

void Transformer::layout_acts(Arena& arena) {
  int64_t n = batch_ * seq_len_, d = config_.d_model;
  const std::string acts = "activations";
  const DType act = activation_dtype(arena.device());
  tokens_N_ = arena.take({n}, DType::kI32, acts);
  targets_N_ = arena.take({n}, DType::kI32, acts);
  positions_N_ = arena.take({n}, DType::kI32, acts);
  residual_ND_.clear();
  mid_ND_.assign(layers_.size(), Tensor{});
  for (int64_t l = 0; l <= config_.n_layers; ++l)
    residual_ND_.push_back(arena.take({n, d}, act, acts));
  // A layer's own activations: its branch inputs, and the blocks' internal buffers.
  auto take_inputs = [&](size_t l) {
    Layer& layer = layers_[l];
    mid_ND_[l] = arena.take({n, d}, act, acts);
    layer.h1_ND = arena.take({n, d}, act, acts);
    layer.rstd1_N = arena.take({n}, DType::kF32, acts);
    layer.h2_ND = arena.take({n, d}, act, acts);
    layer.rstd2_N = arena.take({n}, DType::kF32, acts);
  };
  auto take_ffn = [&](Layer& layer) {
    if (layer.moe)
      layer.moe->layout_acts(arena, acts);
    else
      layer.mlp->layout_acts(arena, acts);
  };
  bool layer_mode = recompute_ == Recompute::kLayer;
  // Kept for backward: everything without recomputation; the inputs with kAttention; with
  // kLayer only the MoE blocks, whose routing statistics must not be counted twice.
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& layer = layers_[l];
    if (!layer_mode) take_inputs(l);
    if (recompute_ == Recompute::kNone) layer.attention.layout_acts(arena, acts);
    if (!layer_mode || layer.moe) take_ffn(layer);
  }
  // Recomputed in backward, one layer at a time: every layer's copies share one region.
  if (recompute_ != Recompute::kNone) {
    const std::string shared = "activations (recomputed)";
    size_t start = arena.mark();
    for (size_t l = 0; l < layers_.size(); ++l) {
      Layer& layer = layers_[l];
      arena.rewind(start);
      if (layer_mode) take_inputs(l);
      layer.attention.layout_acts(arena, shared);
      if (layer_mode && !layer.moe) layer.mlp->layout_acts(arena, shared);
    }
    arena.skip_to_end();
  }
  // The feed-forward blocks' SwiGLU products live from a block's forward to its down_proj
  // and are recomputed in its backward (Mlp::backward), so every layer's share one buffer:
  // kept per layer they would take 4.9 GiB in sigma-1.5b's bench (26 x 16384 x 6144 bf16).
  const std::string products = "activations (shared)";
  size_t products_start = arena.mark();
  for (Layer& layer : layers_) {
    arena.rewind(products_start);
    if (layer.moe)
      layer.moe->layout_scratch(arena, products);
    else
      layer.mlp->layout_scratch(arena, products);
  }
  arena.skip_to_end();
  branch_ND_ = arena.take({n, d}, act, acts);
  final_ND_ = arena.take({n, d}, act, acts);
  final_rstd_N_ = arena.take({n}, DType::kF32, acts);
  // About 2 GiB of fp32 logits a chunk: each chunk's GEMMs fill a GPU, and the LM head's fp32
  // weight gradient, which every chunk reads and writes back (2.4 GB for a 200K vocabulary
  // of width 1536), is passed over half as often as with 1 GiB chunks.
  int64_t v = config_.vocab_size;
  head_chunk_ = std::clamp<int64_t>((int64_t(1) << 29) / v / 128 * 128, 128, n);
  logits_CV_ = arena.take({head_chunk_, v}, DType::kF32, "logits");
  d_logits_CV_ = act == DType::kF32 ? logits_CV_ : arena.take({head_chunk_, v}, act, "logits");
  lse_C_ = arena.take({head_chunk_}, DType::kF32, "logits");
  losses_N_ = arena.take({n}, DType::kF32, acts);

  d_res_ND_ = arena.take({n, d}, act, "gradient scratch");
  d_h_ND_ = arena.take({n, d}, act, "gradient scratch");
  attention_grads_ = Attention::layout_grads(arena, config_, n);
  const MoeConfig& moe = config_.moe;
  // Each kind of feed-forward block gets scratch only when some layer uses it.
  if (!moe.enabled() || moe.dense_layers > 0)
    mlp_grads_ = Mlp::layout_grads(arena, n, config_.d_ff);
  if (moe.enabled()) moe_grads_ = MoeLayer::layout_grads(arena, config_, n, ep_size_);

  if (arena.allocated()) {
    Buffer staging(positions_N_.bytes(), Device::kCpu);
    Tensor pos = staging.tensor(0, positions_N_.shape, DType::kI32);
    for (int64_t i = 0; i < n; ++i) pos.i32()[i] = int32_t(i % seq_len_);
    device::copy(positions_N_, pos);
  }
}

double Transformer::forward(float head_grad_scale) {
  forward_layers();
  float eps = float(config_.norm_eps);
  ops::rmsnorm_forward(final_ND_, final_rstd_N_, residual_ND_.back(), final_norm_.weight, eps);
  int64_t n = tokens_per_pass();
  for (int64_t begin = 0; begin < n; begin += head_chunk_)
    head_chunk(begin, std::min(n, begin + head_chunk_), head_grad_scale);
  head_grad_scale_ = head_grad_scale;
  return ops::sum(losses_N_);
}

// logits = final @ lm_head^T, the losses, and with grad_scale > 0 the head's backward:
// d_logits = (softmax - onehot) * grad_scale, d_h = d_logits @ lm_head, lm_head.grad +=.
void Transformer::head_chunk(int64_t begin, int64_t end, float grad_scale) {
  int64_t rows = end - begin;
  Tensor logits = logits_CV_.slice_rows(0, rows), d_logits = d_logits_CV_.slice_rows(0, rows);
  Tensor final = final_ND_.slice_rows(begin, end), targets = targets_N_.slice_rows(begin, end);
  ops::matmul_forward(logits, final, lm_head_.weight);
  Tensor lse = grad_scale == 0 ? Tensor{} : lse_C_.slice_rows(0, rows);
  ops::cross_entropy_forward(losses_N_.slice_rows(begin, end), lse, logits, targets);
  if (grad_scale == 0) return;
  ops::cross_entropy_backward(d_logits, logits, lse, targets, grad_scale);
  linear_backward(d_h_ND_.slice_rows(begin, end), lm_head_, d_logits, final);
}

void Transformer::forward_layers() {
  ops::embedding_forward(residual_ND_[0], tokens_N_, embed_tokens_.weight);
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& layer = layers_[l];
    forward_layer(l, true);
    if (layer.moe) layer.moe->forward(branch_ND_, layer.h2_ND);
    ops::add(residual_ND_[l + 1], mid_ND_[l], branch_ND_);
  }
}

void Transformer::forward_layer(size_t l, bool with_mlp) {
  float eps = float(config_.norm_eps);
  Layer& layer = layers_[l];
  Tensor x = residual_ND_[l], mid = mid_ND_[l];
  ops::rmsnorm_forward(layer.h1_ND, layer.rstd1_N, x, layer.input_layernorm.weight, eps);
  layer.attention.forward(branch_ND_, layer.h1_ND, positions_N_);
  ops::add_rmsnorm_forward(mid, layer.h2_ND, layer.rstd2_N, x, branch_ND_,
                           layer.post_attention_layernorm.weight, eps);
  if (with_mlp && layer.mlp) layer.mlp->forward(branch_ND_, layer.h2_ND);
}

void Transformer::backward(float loss_scale) {
  // The head's gradient, unless the forward pass already produced it with this scale.
  if (head_grad_scale_ != loss_scale) {
    int64_t n = tokens_per_pass();
    for (int64_t begin = 0; begin < n; begin += head_chunk_)
      head_chunk(begin, std::min(n, begin + head_chunk_), loss_scale);
  }
  head_grad_scale_ = 0;
  ops::rmsnorm_backward(d_res_ND_, accumulating_grad(final_norm_), d_h_ND_, residual_ND_.back(),
                        final_norm_.weight, final_rstd_N_);
  grads_ready(config_.n_layers + 1);
  for (size_t l = layers_.size(); l-- > 0;) {
    Layer& layer = layers_[l];
    Tensor x = residual_ND_[l], mid = mid_ND_[l];
    // Rebuild what this layer's backward reads (the same values: every op is deterministic).
    if (recompute_ == Recompute::kLayer) forward_layer(l, true);
    // d_res holds d(loss)/d(x_{l+1}); the residual passes it straight to x_mid, and the MLP
    // branch adds its share through the post-attention norm.
    if (layer.moe)
      layer.moe->backward(d_h_ND_, d_res_ND_, layer.h2_ND, *moe_grads_,
                          loss_scale * float(tokens_per_pass()));
    else
      layer.mlp->backward(d_h_ND_, d_res_ND_, layer.h2_ND, *mlp_grads_);
    ops::rmsnorm_backward(d_res_ND_, accumulating_grad(layer.post_attention_layernorm), d_h_ND_,
                          mid, layer.post_attention_layernorm.weight, layer.rstd2_N,
                          ops::GradWrite::kAccumulate);
    if (recompute_ == Recompute::kAttention)
      layer.attention.forward(branch_ND_, layer.h1_ND, positions_N_);
    layer.attention.backward(d_h_ND_, d_res_ND_, layer.h1_ND, positions_N_, attention_grads_);
    ops::rmsnorm_backward(d_res_ND_, accumulating_grad(layer.input_layernorm), d_h_ND_, x,
                          layer.input_layernorm.weight, layer.rstd1_N, ops::GradWrite::kAccumulate);
    grads_ready(int64_t(l) + 1);
  }
  ops::embedding_backward(accumulating_grad(embed_tokens_), d_res_ND_, tokens_N_);
  grads_ready(0);
}

int64_t Transformer::backward_part(const std::string& param_name) const {
  if (param_name == "model.embed_tokens.weight") return 0;
  int64_t layer = -1;
  if (std::sscanf(param_name.c_str(), "model.layers.%" SCNd64 ".", &layer) == 1) return layer + 1;
  return config_.n_layers + 1;  // model.norm.weight, lm_head.weight
}

double Transformer::aux_loss() const {
  double aux = 0;
  for (const Layer& layer : layers_)
    if (layer.moe) aux += layer.moe->aux_loss();
  return aux;
}

void Transformer::set_moe_phase(int64_t phase) {
  for (Layer& layer : layers_)
    if (layer.moe) layer.moe->set_phase(phase);
}

std::vector<std::pair<std::string, Tensor>> Transformer::state_tensors() {
  std::vector<std::pair<std::string, Tensor>> state;
  for (size_t l = 0; l < layers_.size(); ++l)
    if (layers_[l].moe && layers_[l].moe->bias().defined())
      // Hugging Face's DeepSeek-V3 name for the selection bias.
      state.emplace_back(fmt::format("model.layers.{}.mlp.gate.e_score_correction_bias", l),
                         layers_[l].moe->bias());
  return state;
}

}  // namespace sigma
