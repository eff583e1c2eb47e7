// ModelConfig: the [model] and [model.attention] recipe sections for the dense Sigma family.
//
// Sigma paper (arXiv 2501.13629) section 2: DiffQKV gives Q, K and V their own head counts
// and head dims; AugQ adds a SwiGLU block on Q after q_proj. QK-norm is the Sigma-MoE-Tiny
// choice (SIGMA-FAMILY.md section 2). [model.moe] turns the MLPs into mixtures of experts
// (Sigma-MoE-Tiny, SIGMA-FAMILY.md sections 2-3; models/moe/README.md).
// Recipe keys (docs, ranges) and cross-field checks: models/config.cpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace sigma {

enum class ModelFamily { kSigma };

struct AttentionConfig {
  int64_t n_q = 8;       // query heads
  int64_t n_k = 2;       // key heads; divides n_q
  int64_t n_v = 4;       // value heads; divides n_q; may differ from n_k (DiffQKV)
  int64_t d_qk = 32;     // head dim of Q and K
  int64_t d_v = 32;      // head dim of V (each query head outputs d_v values)
  int64_t d_augq = 0;    // inner width of the AugQ SwiGLU block; 0 disables AugQ
  bool qk_norm = false;  // RMSNorm over each Q and K head before RoPE

  bool operator==(const AttentionConfig&) const = default;
};

enum class RouterScore { kSoftmax, kSigmoid };
enum class LblScope { kMicroBatch, kGlobalBatch };

// One phase of progressive sparsification: `top_k` per layer while the run is before
// `until` (a fraction of its optimizer steps).
struct MoePhase {
  double until = 1.0;
  std::vector<int64_t> top_k = {1};

  bool operator==(const MoePhase&) const = default;
};

struct MoeConfig {
  int64_t n_experts = 0;          // routed experts per MoE layer; 0 keeps every MLP dense
  int64_t d_expert = 0;           // SwiGLU inner width of one routed expert
  int64_t n_shared_experts = 0;   // always-on experts, fused into one SwiGLU of n * d_shared
  int64_t d_shared_expert = 0;    // inner width of one shared expert; 0 means d_expert
  int64_t dense_layers = 0;       // the first layers keep the dense MLP (d_ff)
  RouterScore score = RouterScore::kSoftmax;
  bool renormalize = false;       // chosen weights divided by their sum
  // Per layer; the last value repeats for the remaining layers. The final phase's top-k.
  std::vector<int64_t> top_k = {1};
  std::vector<MoePhase> phases;   // earlier phases, ordered by `until`
  double lbl_coeff = 0;           // N_E * sum_i f_i p_i
  LblScope lbl_scope = LblScope::kMicroBatch;
  double top1_lbl_coeff = 0;      // N_E * sum_i fhat_i^2 / mean top-1 probability
  double top1_lbl_temperature = 0.1;
  double z_loss_coeff = 0;        // mean_n logsumexp(logits_n)^2
  double bias_update_rate = 0;    // aux-loss-free expert bias (DeepSeek-V3); 0 disables

  bool operator==(const MoeConfig&) const = default;

  bool enabled() const { return n_experts > 0; }
  bool is_moe_layer(int64_t layer) const { return enabled() && layer >= dense_layers; }
  int64_t shared_width() const {
    return n_shared_experts * (d_shared_expert > 0 ? d_shared_expert : d_expert);
  }
  int64_t num_phases() const { return int64_t(phases.size()) + 1; }
  // The top-k list of phase `phase` (the last one is `top_k`) and its value at `layer`.
  const std::vector<int64_t>& phase_top_k(int64_t phase) const {
    return phase < int64_t(phases.size()) ? phases[size_t(phase)].top_k : top_k;
  }
  static int64_t at_layer(const std::vector<int64_t>& list, int64_t layer) {
    return list[size_t(layer < int64_t(list.size()) ? layer : int64_t(list.size()) - 1)];
  }
  // The phase that step `steps_done` (optimizer steps completed before it) runs in.
  int64_t phase_at(int64_t steps_done, int64_t total_steps) const {
    for (size_t i = 0; i < phases.size(); ++i)
      if (double(steps_done) < phases[i].until * double(total_steps)) return int64_t(i);
    return int64_t(phases.size());
  }
  // The largest top-k any phase asks of `layer`: the dropless buffers' size.
  int64_t max_top_k(int64_t layer) const {
    int64_t k = at_layer(top_k, layer);
    for (const MoePhase& p : phases) k = std::max(k, at_layer(p.top_k, layer));
    return k;
  }
};

// Which activations backward recomputes instead of keeping (memory for compute):
// kAttention keeps each layer's inputs and recomputes its attention block (projections,
// AugQ, RoPE, flash attention: every layer shares one set of those buffers); kLayer keeps
// only each layer's input and reruns the whole layer (MoE layers keep their own buffers,
// since routing statistics must be counted once).
enum class Recompute { kNone, kAttention, kLayer };

struct ModelConfig {
  ModelFamily family = ModelFamily::kSigma;
  int64_t n_layers = 6;
  int64_t d_model = 256;
  int64_t d_ff = 768;          // SwiGLU inner width
  int64_t vocab_size = 320;
  double norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_embeddings = false;
  double init_std = 0.02;       // normal(0, init_std) for every matrix
  bool init_scale_residual = true;  // o_proj and down_proj std / sqrt(2 * n_layers) (GPT-2)
  AttentionConfig attention;
  MoeConfig moe;

  bool operator==(const ModelConfig&) const = default;
};

}  // namespace sigma
