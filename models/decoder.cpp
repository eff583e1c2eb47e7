#include "models/decoder.h"

#include "kernels/device.h"
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
  const DType act = activation_dtype(arena.device());
  auto take = [&](Shape s, DType t) { return arena.take(s, t, acts); };
  p.tokens_N = take({n}, DType::kI32);
  p.positions_N = take({n}, DType::kI32);
  p.targets_N = take({n}, DType::kI32);
  p.losses_N = take({n}, DType::kF32);
  p.x_ND = take({n, d}, act);
  p.h_ND = take({n, d}, act);
  p.rstd_N = take({n}, DType::kF32);
  p.branch_ND = take({n, d}, act);
  p.q_NQ = take({n, q}, act);
  if (a.d_augq > 0) {
    p.gate_NA = take({n, a.d_augq}, act);
    p.up_NA = take({n, a.d_augq}, act);
    p.act_NA = take({n, a.d_augq}, act);
    p.qaug_NQ = take({n, q}, act);
  }
  p.k_NK = take({n, k}, act);
  p.v_NVh = take({n, a.n_v * a.d_v}, act);
  if (a.qk_norm) {
    p.qnorm_NQ = take({n, q}, act);
    p.qrstd = take({n * a.n_q}, DType::kF32);
    p.knorm_NK = take({n, k}, act);
    p.krstd = take({n * a.n_k}, DType::kF32);
  }
  p.qrope_NQ = take({n, q}, act);
  p.y_NO = take({n, a.n_q * a.d_v}, act);
  p.final_ND = take({n, d}, act);
  p.final_rstd_N = take({n}, DType::kF32);
  // fp32 logits from bf16 operands on CUDA (fp32 accumulation), as the trainer's LM head.
  p.logits_NV = take({n, config_.vocab_size}, DType::kF32);
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    if (p.moe[size_t(l)]) {
      p.moe[size_t(l)]->layout_acts(arena, acts);
      p.moe[size_t(l)]->layout_scratch(arena, acts);
    } else {
      p.mlp[size_t(l)]->layout_acts(arena, acts);
      p.mlp[size_t(l)]->layout_scratch(arena, acts);
    }
  }
}

void Decoder::layout(Arena& arena) {
  const AttentionConfig& a = config_.attention;
  const DType act = activation_dtype(arena.device());
  k_cache_SK_.clear();
  v_cache_SV_.clear();
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    k_cache_SK_.push_back(arena.take({capacity_, a.n_k * a.d_qk}, act, "kv cache"));
    v_cache_SV_.push_back(arena.take({capacity_, a.n_v * a.d_v}, act, "kv cache"));
  }
  layout_pass(arena, chunk_);
  layout_pass(arena, step_);
  if (arena.allocated()) layout_host(arena.device());
}

// Host staging for the larger pass; logits and losses only where the arena is not host memory.
void Decoder::layout_host(Device device) {
  int64_t n = chunk_.tokens;
  host_ = Arena(Device::kCpu);
  for (int pass = 0; pass < 2; ++pass) {
    host_tokens_N_ = host_.take({n}, DType::kI32, "decoder host");
    host_positions_N_ = host_.take({n}, DType::kI32, "decoder host");
    host_targets_N_ = host_.take({n}, DType::kI32, "decoder host");
    if (device != Device::kCpu) {
      host_logits_NV_ = host_.take({n, config_.vocab_size}, DType::kF32, "decoder host");
      host_losses_N_ = host_.take({n}, DType::kF32, "decoder host");
    }
    if (pass == 0) host_.allocate();
  }
}

Tensor Decoder::on_host(Tensor t, Tensor host) {
  if (t.device == Device::kCpu) return t;
  Tensor h = host.slice_rows(0, t.size(0));
  device::copy(h, t);
  return h;
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
// this pass's K and V stored in the caches at positions length_ .. length_ + N. RoPE writes K
// straight into its cache; V is projected into v_NVh and copied, because a cache row past
// the first need not be aligned as cuBLASLt's output must be (256 bytes).
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
  ops::matmul_forward(p.v_NVh, p.h_ND, w.v_proj.weight);
  device::copy(v_cache.slice_rows(begin, end), p.v_NVh);
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

void Decoder::run(Pass& p, const int32_t* tokens) {
  int64_t n = p.tokens;
  float eps = float(config_.norm_eps);
  int32_t* token_ids = host_tokens_N_.i32();
  int32_t* positions = host_positions_N_.i32();
  for (int64_t i = 0; i < n; ++i) {
    token_ids[i] = tokens[i];
    positions[i] = int32_t(length_ + i);
  }
  device::copy(p.tokens_N, host_tokens_N_.slice_rows(0, n));
  device::copy(p.positions_N, host_positions_N_.slice_rows(0, n));
  ops::embedding_forward(p.x_ND, p.tokens_N, embed_tokens_.weight);
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    ops::rmsnorm_forward(p.h_ND, p.rstd_N, p.x_ND, input_layernorm_[size_t(l)].weight, eps);
    attend(p, l, p.branch_ND);
    ops::add_rmsnorm_forward(p.x_ND, p.h_ND, p.rstd_N, p.x_ND, p.branch_ND,
                             post_attention_layernorm_[size_t(l)].weight, eps);
    if (p.moe[size_t(l)])
      p.moe[size_t(l)]->forward(p.branch_ND, p.h_ND);
    else
      p.mlp[size_t(l)]->forward(p.branch_ND, p.h_ND);
    ops::add(p.x_ND, p.x_ND, p.branch_ND);
  }
  length_ += n;
}

// Every row, also where only the last is wanted: the LM head then multiplies whole tensors
// (cuBLASLt wants its operands aligned as the arena's tensors start), and on the CPU the last
// row gets the bits it gets in a pass that scores every row.
void Decoder::head(Pass& p) {
  ops::rmsnorm_forward(p.final_ND, p.final_rstd_N, p.x_ND, final_norm_.weight,
                       float(config_.norm_eps));
  ops::matmul_forward(p.logits_NV, p.final_ND, lm_head_.weight);
}

template <typename Each>
void Decoder::append(std::span<const int32_t> tokens, LogitsOf logits, Each each) {
  int64_t n = int64_t(tokens.size());
  if (length_ + n > capacity_)
    fail("the sequence needs {} positions; the decoder holds {} (raise --max-seq)", length_ + n,
         capacity_);
  int64_t done = 0;
  while (done < n) {
    Pass& pass = n - done >= chunk_.tokens ? chunk_ : step_;
    run(pass, tokens.data() + done);
    if (logits == LogitsOf::kEveryPass || done + pass.tokens == n) head(pass);
    each(pass, done);
    done += pass.tokens;
  }
}

Tensor Decoder::next_logits(std::span<const int32_t> tokens) {
  SIGMA_CHECK(!tokens.empty(), "next_logits of no token");
  Tensor last;
  append(tokens, LogitsOf::kFinalPass, [&](Pass& pass, int64_t) {
    last = pass.logits_NV.slice_rows(pass.tokens - 1, pass.tokens);
  });
  return on_host(last, host_logits_NV_);
}

Tensor Decoder::prefill_logits(std::span<const int32_t> tokens) {
  SIGMA_CHECK(int64_t(tokens.size()) == chunk_.tokens, "prefill_logits of {} tokens; chunk is {}",
              tokens.size(), chunk_.tokens);
  append(tokens, LogitsOf::kEveryPass, [](Pass&, int64_t) {});
  return on_host(chunk_.logits_NV, host_logits_NV_);
}

std::vector<double> Decoder::token_logprobs(std::span<const int32_t> tokens,
                                            std::span<const int32_t> targets) {
  SIGMA_CHECK(tokens.size() == targets.size(), "{} tokens, {} targets", tokens.size(),
              targets.size());
  std::vector<double> logprobs(tokens.size());
  append(tokens, LogitsOf::kEveryPass, [&](Pass& pass, int64_t first) {
    int64_t n = pass.tokens;
    int32_t* t = host_targets_N_.i32();
    for (int64_t i = 0; i < n; ++i) t[i] = targets[size_t(first + i)];
    device::copy(pass.targets_N, host_targets_N_.slice_rows(0, n));
    // The cross-entropy op is -log softmax at the target: the same op the training loss uses.
    ops::cross_entropy_forward(pass.losses_N, Tensor{}, pass.logits_NV, pass.targets_N);
    const float* losses = on_host(pass.losses_N, host_losses_N_).f32();
    for (int64_t i = 0; i < n; ++i) logprobs[size_t(first + i)] = -double(losses[i]);
  });
  return logprobs;
}

}  // namespace sigma
