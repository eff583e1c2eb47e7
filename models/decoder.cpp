#include "models/decoder.h"

#include "kernels/ops.h"

#include <fmt/format.h>

namespace sigma {

KvCacheCost kv_cache_cost(const ModelConfig& config, DType dtype) {
  const AttentionConfig& a = config.attention;
  int64_t per_elem = int64_t(dtype_size(dtype)) * config.n_layers;
  KvCacheCost cost;
  cost.k_bytes = a.n_k * a.d_qk * per_elem;
  cost.v_bytes = a.n_v * a.d_v * per_elem;
  cost.gqa_bytes = (a.n_v * a.d_qk + a.n_v * a.d_v) * per_elem;
  return cost;
}

Decoder::Decoder(const ModelConfig& config, int64_t capacity, int64_t chunk)
    : config_(config), capacity_(capacity) {
  SIGMA_CHECK(capacity >= 1 && chunk >= 1, "decoder capacity {} chunk {}", capacity, chunk);
  chunk_.tokens = chunk;
  step_.tokens = 1;
  for (int64_t l = 0; l < config.n_layers; ++l) {
    attention_.emplace_back(config, 1, 1);
    for (Pass* pass : {&chunk_, &step_}) {
      pass->mlp.emplace_back();
      pass->moe.emplace_back();
      if (config.moe.is_moe_layer(l))
        pass->moe.back().emplace(config, pass->tokens, l);
      else
        pass->mlp.back().emplace(config, pass->tokens, config.d_ff);
    }
  }
  input_layernorm_.resize(size_t(config.n_layers));
  post_attention_layernorm_.resize(size_t(config.n_layers));
}

// The order and names of Transformer::bind_params: a ParameterSet planned by either binds the
// other (ParameterSet::add checks every name).
void Decoder::bind_all(ParameterSet& params, Pass& pass) {
  int64_t d = config_.d_model, v = config_.vocab_size;
  embed_tokens_ =
      params.add("model.embed_tokens.weight", {v, d}, ParamInit::kNormal, config_.init_std, false);
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    std::string prefix = fmt::format("model.layers.{}.", l);
    input_layernorm_[size_t(l)] =
        params.add(prefix + "input_layernorm.weight", {d}, ParamInit::kOnes, 0, false);
    attention_[size_t(l)].bind_params(params, prefix + "self_attn.");
    post_attention_layernorm_[size_t(l)] =
        params.add(prefix + "post_attention_layernorm.weight", {d}, ParamInit::kOnes, 0, false);
    if (pass.moe[size_t(l)])
      pass.moe[size_t(l)]->bind_params(params, prefix + "mlp.");
    else
      pass.mlp[size_t(l)]->bind_params(params, prefix + "mlp.");
  }
  final_norm_ = params.add("model.norm.weight", {d}, ParamInit::kOnes, 0, false);
  lm_head_ = config_.tie_embeddings
                 ? embed_tokens_
                 : params.add("lm_head.weight", {v, d}, ParamInit::kNormal, config_.init_std, true);
}

void Decoder::bind_params(ParameterSet& params) {
  if (!params.allocated()) {
    bind_all(params, chunk_);
    return;
  }
  for (Pass* pass : {&chunk_, &step_}) {
    params.rebind();
    bind_all(params, *pass);
  }
}

void Decoder::layout_pass(Arena& arena, Pass& p) {
  const AttentionConfig& a = config_.attention;
  int64_t n = p.tokens, d = config_.d_model;
  int64_t q = a.n_q * a.d_qk, k = a.n_k * a.d_qk;
  const std::string acts = "decoder activations";
  auto take = [&](Shape s, DType t = DType::kF32) { return arena.take(s, t, acts); };
  p.tokens_N = take({n}, DType::kI32);
  p.positions_N = take({n}, DType::kI32);
  p.targets_N = take({n}, DType::kI32);
  p.losses_N = take({n});
  p.x_ND = take({n, d});
  p.h_ND = take({n, d});
  p.rstd_N = take({n});
  p.branch_ND = take({n, d});
  p.q_NQ = take({n, q});
  if (a.d_augq > 0) {
    p.gate_NA = take({n, a.d_augq});
    p.up_NA = take({n, a.d_augq});
    p.act_NA = take({n, a.d_augq});
    p.qaug_NQ = take({n, q});
  }
  p.k_NK = take({n, k});
  if (a.qk_norm) {
    p.qnorm_NQ = take({n, q});
    p.qrstd = take({n * a.n_q});
    p.knorm_NK = take({n, k});
    p.krstd = take({n * a.n_k});
  }
  p.qrope_NQ = take({n, q});
  p.y_NO = take({n, a.n_q * a.d_v});
  p.final_ND = take({n, d});
  p.final_rstd_N = take({n});
  p.logits_NV = take({n, config_.vocab_size});
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    if (p.moe[size_t(l)])
      p.moe[size_t(l)]->layout_acts(arena, acts);
    else
      p.mlp[size_t(l)]->layout_acts(arena, acts);
  }
}

void Decoder::layout(Arena& arena) {
  const AttentionConfig& a = config_.attention;
  k_cache_SK_.clear();
  v_cache_SV_.clear();
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    k_cache_SK_.push_back(arena.take({capacity_, a.n_k * a.d_qk}, DType::kF32, "kv cache"));
    v_cache_SV_.push_back(arena.take({capacity_, a.n_v * a.d_v}, DType::kF32, "kv cache"));
  }
  layout_pass(arena, chunk_);
  layout_pass(arena, step_);
}

void Decoder::set_moe_phase(int64_t phase) {
  for (Pass* pass : {&chunk_, &step_})
    for (std::optional<MoeLayer>& moe : pass->moe)
      if (moe) moe->set_phase(phase);
}

std::vector<std::pair<std::string, Tensor>> Decoder::state_tensors() {
  std::vector<std::pair<std::string, Tensor>> state;
  for (Pass* pass : {&chunk_, &step_})
    for (size_t l = 0; l < pass->moe.size(); ++l)
      if (pass->moe[l] && pass->moe[l]->bias().defined())
        // Transformer::state_tensors' name (Hugging Face's DeepSeek-V3 name).
        state.emplace_back(fmt::format("model.layers.{}.mlp.gate.e_score_correction_bias", l),
                           pass->moe[l]->bias());
  return state;
}

void Decoder::truncate(int64_t length) {
  SIGMA_CHECK(length >= 0 && length <= length_, "truncate to {} of {}", length, length_);
  length_ = length;
}

namespace {
Tensor heads(Tensor x_N, int64_t h, int64_t d) { return x_N.view({1, x_N.size(0), h, d}); }
Tensor head_rows(Tensor x_N, int64_t h, int64_t d) { return x_N.view({x_N.size(0) * h, d}); }
}  // namespace

// The cached twin of Attention::forward: the same chain (q_proj, AugQ, QK-norm, RoPE), with
// this pass's K and V written straight into the caches at positions length_ .. length_ + N.
void Decoder::attend(Pass& p, int64_t layer, Tensor out_ND) {
  const AttentionConfig& a = config_.attention;
  const AttentionParams& w = attention_[size_t(layer)].params();
  float eps = float(config_.norm_eps), theta = float(config_.rope_theta);
  int64_t begin = length_, end = length_ + p.tokens;
  Tensor k_cache = k_cache_SK_[size_t(layer)], v_cache = v_cache_SV_[size_t(layer)];
  ops::matmul_forward(p.q_NQ, p.h_ND, w.q_proj.weight);
  Tensor q = p.q_NQ;
  if (a.d_augq > 0) {  // AugQ (Sigma section 2.3): Q only, so nothing of it is cached
    ops::matmul_forward(p.gate_NA, q, w.q_gate_proj.weight);
    ops::matmul_forward(p.up_NA, q, w.q_up_proj.weight);
    ops::swiglu_forward(p.act_NA, p.gate_NA, p.up_NA);
    ops::matmul_forward(p.qaug_NQ, p.act_NA, w.q_down_proj.weight);
    q = p.qaug_NQ;
  }
  ops::matmul_forward(p.k_NK, p.h_ND, w.k_proj.weight);
  ops::matmul_forward(v_cache.slice_rows(begin, end), p.h_ND, w.v_proj.weight);
  Tensor k = p.k_NK;
  if (a.qk_norm) {
    ops::rmsnorm_forward(head_rows(p.qnorm_NQ, a.n_q, a.d_qk), p.qrstd, head_rows(q, a.n_q, a.d_qk),
                         w.q_norm.weight, eps);
    ops::rmsnorm_forward(head_rows(p.knorm_NK, a.n_k, a.d_qk), p.krstd, head_rows(k, a.n_k, a.d_qk),
                         w.k_norm.weight, eps);
    q = p.qnorm_NQ;
    k = p.knorm_NK;
  }
  ops::rope_forward(heads(p.qrope_NQ, a.n_q, a.d_qk), heads(q, a.n_q, a.d_qk), p.positions_N,
                    theta);
  ops::rope_forward(heads(k_cache.slice_rows(begin, end), a.n_k, a.d_qk), heads(k, a.n_k, a.d_qk),
                    p.positions_N, theta);
  ops::attention_cached_forward(heads(p.y_NO, a.n_q, a.d_v), heads(p.qrope_NQ, a.n_q, a.d_qk),
                                heads(k_cache.slice_rows(0, end), a.n_k, a.d_qk),
                                heads(v_cache.slice_rows(0, end), a.n_v, a.d_v));
  ops::matmul_forward(out_ND, p.y_NO, w.o_proj.weight);
}

void Decoder::run(Pass& p, const int32_t* tokens, bool all_rows) {
  int64_t n = p.tokens;
  float eps = float(config_.norm_eps);
  int32_t* token_ids = p.tokens_N.i32();
  int32_t* positions = p.positions_N.i32();
  for (int64_t i = 0; i < n; ++i) {
    token_ids[i] = tokens[i];
    positions[i] = int32_t(length_ + i);
  }
  ops::embedding_forward(p.x_ND, p.tokens_N, embed_tokens_.weight);
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    ops::rmsnorm_forward(p.h_ND, p.rstd_N, p.x_ND, input_layernorm_[size_t(l)].weight, eps);
    attend(p, l, p.branch_ND);
    ops::add(p.x_ND, p.x_ND, p.branch_ND);
    ops::rmsnorm_forward(p.h_ND, p.rstd_N, p.x_ND, post_attention_layernorm_[size_t(l)].weight,
                         eps);
    if (p.moe[size_t(l)])
      p.moe[size_t(l)]->forward(p.branch_ND, p.h_ND);
    else
      p.mlp[size_t(l)]->forward(p.branch_ND, p.h_ND);
    ops::add(p.x_ND, p.x_ND, p.branch_ND);
  }
  // Only the rows whose logits are wanted go through the final norm and the LM head.
  int64_t first = all_rows ? 0 : n - 1;
  Tensor x = p.x_ND.slice_rows(first, n), h = p.final_ND.slice_rows(first, n);
  ops::rmsnorm_forward(h, p.final_rstd_N.slice_rows(first, n), x, final_norm_.weight, eps);
  ops::matmul_forward(p.logits_NV.slice_rows(first, n), h, lm_head_.weight);
  length_ += n;
}

template <typename Each>
void Decoder::append(std::span<const int32_t> tokens, bool all_rows, Each each) {
  int64_t n = int64_t(tokens.size());
  if (length_ + n > capacity_)
    fail("the sequence needs {} positions; the decoder holds {} (raise --max-seq)", length_ + n,
         capacity_);
  int64_t done = 0;
  while (done < n) {
    Pass& pass = n - done >= chunk_.tokens ? chunk_ : step_;
    run(pass, tokens.data() + done, all_rows || done + pass.tokens == n);
    each(pass, done);
    done += pass.tokens;
  }
}

Tensor Decoder::next_logits(std::span<const int32_t> tokens) {
  SIGMA_CHECK(!tokens.empty(), "next_logits of no token");
  Tensor last;
  append(tokens, false, [&](Pass& pass, int64_t) {
    last = pass.logits_NV.slice_rows(pass.tokens - 1, pass.tokens);
  });
  return last;
}

Tensor Decoder::prefill_logits(std::span<const int32_t> tokens) {
  SIGMA_CHECK(int64_t(tokens.size()) == chunk_.tokens, "prefill_logits of {} tokens; chunk is {}",
              tokens.size(), chunk_.tokens);
  append(tokens, true, [](Pass&, int64_t) {});
  return chunk_.logits_NV;
}

std::vector<double> Decoder::token_logprobs(std::span<const int32_t> tokens,
                                            std::span<const int32_t> targets) {
  SIGMA_CHECK(tokens.size() == targets.size(), "{} tokens, {} targets", tokens.size(),
              targets.size());
  std::vector<double> logprobs(tokens.size());
  append(tokens, true, [&](Pass& pass, int64_t first) {
    int32_t* t = pass.targets_N.i32();
    for (int64_t i = 0; i < pass.tokens; ++i) t[i] = targets[size_t(first + i)];
    // The cross-entropy op is -log softmax at the target: the same op the training loss uses.
    ops::cross_entropy_forward(pass.losses_N, pass.logits_NV, pass.targets_N);
    const float* losses = pass.losses_N.f32();
    for (int64_t i = 0; i < pass.tokens; ++i) logprobs[size_t(first + i)] = -double(losses[i]);
  });
  return logprobs;
}

}  // namespace sigma
