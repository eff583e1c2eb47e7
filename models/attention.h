// DiffQKV attention with augmented Q (Sigma paper, arXiv 2501.13629, section 2).
//
// Shape legend: N tokens (B*T), D d_model, Q = n_q*d_qk, K = n_k*d_qk, V = n_v*d_v,
// O = n_q*d_v, A = d_augq.
//   q = q_proj(h)                                        [N, Q]
//   q = q_down(silu(q_gate(q)) * q_up(q))                AugQ, only when d_augq > 0
//   q, k = rmsnorm per head                              only when qk_norm
//   q, k = rope(q), rope(k); y = causal_attention(q, k, v)   K and V keep their own head counts
//   out = o_proj(y)                                      [N, D]
// The K and V caches of generation are separate and never repeated to n_q heads.
#pragma once

#include "core/tensor/arena.h"
#include "models/config.h"
#include "models/parameters.h"

namespace sigma {

struct AttentionParams {
  Param q_proj, k_proj, v_proj, o_proj;
  Param q_gate_proj, q_up_proj, q_down_proj;  // AugQ
  Param q_norm, k_norm;                       // QK-norm
};

// What forward saves for backward.
struct AttentionActs {
  Tensor q_NQ;                                     // q_proj output
  Tensor gate_NA, up_NA, act_NA;                   // AugQ internals
  Tensor qaug_NQ;                                  // AugQ output
  Tensor qnorm_NQ, qrstd_N, knorm_NK, krstd_N;     // QK-norm outputs and statistics
  Tensor k_NK, v_NV;
  Tensor qrope_NQ, krope_NK;
  Tensor y_NO, lse;                                // attention output and log-sum-exp
};

// Gradient scratch shared by all layers (one layer's backward runs at a time).
struct AttentionGrads {
  Tensor d_y_NO, d_v_NV;
  Tensor d_q1_NQ, d_q2_NQ;           // Q-shaped gradients along the RoPE / norm / AugQ chain
  Tensor d_k1_NK, d_k2_NK;
  Tensor d_act_NA, d_gate_NA, d_up_NA;
};

class Attention {
 public:
  Attention(const ModelConfig& config, int64_t batch, int64_t seq_len)
      : config_(config), batch_(batch), seq_len_(seq_len) {}

  void bind_params(ParameterSet& params, const std::string& prefix);
  // The bound weights, for the cached decoding path (models/decoder.cpp).
  const AttentionParams& params() const { return p_; }
  void layout_acts(Arena& arena, const std::string& category);
  static AttentionGrads layout_grads(Arena& arena, const ModelConfig& config, int64_t tokens);

  // out_ND = attention(h_ND). positions i32 [N].
  void forward(Tensor out_ND, Tensor h_ND, Tensor positions);
  // d_h_ND (overwrite) from d_out_ND; parameter gradients accumulate.
  void backward(Tensor d_h_ND, Tensor d_out_ND, Tensor h_ND, Tensor positions,
                const AttentionGrads& scratch);

 private:
  const ModelConfig& config_;
  int64_t batch_, seq_len_;
  AttentionParams p_;
  AttentionActs a_;
};

}  // namespace sigma
