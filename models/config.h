// ModelConfig: the [model] and [model.attention] recipe sections for the dense Sigma family.
//
// Sigma paper (arXiv 2501.13629) section 2: DiffQKV gives Q, K and V their own head counts
// and head dims; AugQ adds a SwiGLU block on Q after q_proj. QK-norm is the Sigma-MoE-Tiny
// choice (SIGMA-FAMILY.md section 2). MoE fields arrive with the MoE issue.
// Recipe keys (docs, ranges) and cross-field checks: models/config.cpp.
#pragma once

#include <cstdint>

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

  bool operator==(const ModelConfig&) const = default;
};

}  // namespace sigma
