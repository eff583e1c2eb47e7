#include "models/attention.h"

#include "kernels/ops.h"

#include <cmath>

namespace sigma {

void Attention::bind_params(ParameterSet& params, const std::string& prefix) {
  const AttentionConfig& a = config_.attention;
  int64_t d = config_.d_model, q = a.n_q * a.d_qk;
  double std = config_.init_std;
  // o_proj writes into the residual stream: GPT-2's 1/sqrt(2 L) keeps its variance flat in depth.
  double out_std = config_.init_scale_residual ? std / std::sqrt(2.0 * config_.n_layers) : std;
  p_.q_proj = params.add(prefix + "q_proj.weight", {q, d}, ParamInit::kNormal, std, true);
  p_.k_proj = params.add(prefix + "k_proj.weight", {a.n_k * a.d_qk, d}, ParamInit::kNormal, std, true);
  p_.v_proj = params.add(prefix + "v_proj.weight", {a.n_v * a.d_v, d}, ParamInit::kNormal, std, true);
  p_.o_proj = params.add(prefix + "o_proj.weight", {d, a.n_q * a.d_v}, ParamInit::kNormal, out_std, true);
  if (a.d_augq > 0) {
    p_.q_gate_proj = params.add(prefix + "q_gate_proj.weight", {a.d_augq, q}, ParamInit::kNormal, std, true);
    p_.q_up_proj = params.add(prefix + "q_up_proj.weight", {a.d_augq, q}, ParamInit::kNormal, std, true);
    p_.q_down_proj = params.add(prefix + "q_down_proj.weight", {q, a.d_augq}, ParamInit::kNormal, std, true);
  }
  if (a.qk_norm) {
    p_.q_norm = params.add(prefix + "q_norm.weight", {a.d_qk}, ParamInit::kOnes, 0, false);
    p_.k_norm = params.add(prefix + "k_norm.weight", {a.d_qk}, ParamInit::kOnes, 0, false);
  }
}

void Attention::layout_acts(Arena& arena, const std::string& category) {
  const AttentionConfig& a = config_.attention;
  int64_t n = batch_ * seq_len_, q = a.n_q * a.d_qk, k = a.n_k * a.d_qk, v = a.n_v * a.d_v;
  const DType act = activation_dtype(arena.device());
  auto take = [&](Shape s, DType t) { return arena.take(s, t, category); };
  a_.q_NQ = take({n, q}, act);
  if (a.d_augq > 0) {
    a_.gate_NA = take({n, a.d_augq}, act);
    a_.up_NA = take({n, a.d_augq}, act);
    a_.act_NA = take({n, a.d_augq}, act);
    a_.qaug_NQ = take({n, q}, act);
  }
  a_.k_NK = take({n, k}, act);
  a_.v_NV = take({n, v}, act);
  if (a.qk_norm) {
    a_.qnorm_NQ = take({n, q}, act);
    a_.qrstd_N = take({n * a.n_q}, DType::kF32);
    a_.knorm_NK = take({n, k}, act);
    a_.krstd_N = take({n * a.n_k}, DType::kF32);
  }
  a_.qrope_NQ = take({n, q}, act);
  a_.krope_NK = take({n, k}, act);
  a_.y_NO = take({n, a.n_q * a.d_v}, act);
  a_.lse = take({batch_, a.n_q, seq_len_}, DType::kF32);
}

AttentionGrads Attention::layout_grads(Arena& arena, const ModelConfig& config, int64_t n) {
  const AttentionConfig& a = config.attention;
  int64_t q = a.n_q * a.d_qk, k = a.n_k * a.d_qk;
  const DType act = activation_dtype(arena.device());
  auto take = [&](Shape s) { return arena.take(s, act, "gradient scratch"); };
  AttentionGrads g;
  g.d_y_NO = take({n, a.n_q * a.d_v});
  g.d_v_NV = take({n, a.n_v * a.d_v});
  g.d_q1_NQ = take({n, q});
  g.d_q2_NQ = take({n, q});
  g.d_k1_NK = take({n, k});
  g.d_k2_NK = take({n, k});
  if (a.d_augq > 0) {
    g.d_act_NA = take({n, a.d_augq});
    g.d_gate_NA = take({n, a.d_augq});
    g.d_up_NA = take({n, a.d_augq});
  }
  return g;
}

namespace {
// [N, H*d] seen as [B, T, H, d] for attention, or as [N*H, d] rows for per-head RMSNorm.
Tensor heads(Tensor x, int64_t batch, int64_t seq_len, int64_t h, int64_t d) {
  return x.view({batch, seq_len, h, d});
}
Tensor head_rows(Tensor x, int64_t h, int64_t d) { return x.view({x.size(0) * h, d}); }
}  // namespace

void Attention::forward(Tensor out_ND, Tensor h_ND, Tensor positions) {
  const AttentionConfig& a = config_.attention;
  float eps = float(config_.norm_eps), theta = float(config_.rope_theta);
  ops::matmul_forward(a_.q_NQ, h_ND, p_.q_proj.weight);
  Tensor q = a_.q_NQ;
  if (a.d_augq > 0) {  // AugQ (Sigma section 2.3): a SwiGLU block on Q, compute only, never cached
    ops::matmul_forward(a_.gate_NA, q, p_.q_gate_proj.weight);
    ops::matmul_forward(a_.up_NA, q, p_.q_up_proj.weight);
    ops::swiglu_forward(a_.act_NA, a_.gate_NA, a_.up_NA);
    ops::matmul_forward(a_.qaug_NQ, a_.act_NA, p_.q_down_proj.weight);
    q = a_.qaug_NQ;
  }
  ops::matmul_forward(a_.k_NK, h_ND, p_.k_proj.weight);
  ops::matmul_forward(a_.v_NV, h_ND, p_.v_proj.weight);
  Tensor k = a_.k_NK;
  if (a.qk_norm) {
    ops::rmsnorm_forward(head_rows(a_.qnorm_NQ, a.n_q, a.d_qk), a_.qrstd_N,
                         head_rows(q, a.n_q, a.d_qk), p_.q_norm.weight, eps);
    ops::rmsnorm_forward(head_rows(a_.knorm_NK, a.n_k, a.d_qk), a_.krstd_N,
                         head_rows(k, a.n_k, a.d_qk), p_.k_norm.weight, eps);
    q = a_.qnorm_NQ;
    k = a_.knorm_NK;
  }
  int64_t b = batch_, t = seq_len_;
  ops::rope_forward(heads(a_.qrope_NQ, b, t, a.n_q, a.d_qk), heads(q, b, t, a.n_q, a.d_qk),
                    positions, theta);
  ops::rope_forward(heads(a_.krope_NK, b, t, a.n_k, a.d_qk), heads(k, b, t, a.n_k, a.d_qk),
                    positions, theta);
  ops::attention_forward(heads(a_.y_NO, b, t, a.n_q, a.d_v), a_.lse,
                         heads(a_.qrope_NQ, b, t, a.n_q, a.d_qk),
                         heads(a_.krope_NK, b, t, a.n_k, a.d_qk), heads(a_.v_NV, b, t, a.n_v, a.d_v));
  ops::matmul_forward(out_ND, a_.y_NO, p_.o_proj.weight);
}

void Attention::backward(Tensor d_h_ND, Tensor d_out_ND, Tensor h_ND, Tensor positions,
                         const AttentionGrads& g) {
  const AttentionConfig& a = config_.attention;
  float theta = float(config_.rope_theta);
  int64_t b = batch_, t = seq_len_;
  linear_backward(g.d_y_NO, p_.o_proj, d_out_ND, a_.y_NO);
  ops::attention_backward(heads(g.d_q1_NQ, b, t, a.n_q, a.d_qk), heads(g.d_k1_NK, b, t, a.n_k, a.d_qk),
                          heads(g.d_v_NV, b, t, a.n_v, a.d_v), heads(g.d_y_NO, b, t, a.n_q, a.d_v),
                          heads(a_.qrope_NQ, b, t, a.n_q, a.d_qk),
                          heads(a_.krope_NK, b, t, a.n_k, a.d_qk), heads(a_.v_NV, b, t, a.n_v, a.d_v),
                          heads(a_.y_NO, b, t, a.n_q, a.d_v), a_.lse);
  // Q chain: RoPE -> (QK-norm) -> (AugQ) -> q_proj. d_q holds the gradient at each stage.
  ops::rope_backward(heads(g.d_q2_NQ, b, t, a.n_q, a.d_qk), heads(g.d_q1_NQ, b, t, a.n_q, a.d_qk),
                     positions, theta);
  ops::rope_backward(heads(g.d_k2_NK, b, t, a.n_k, a.d_qk), heads(g.d_k1_NK, b, t, a.n_k, a.d_qk),
                     positions, theta);
  Tensor d_q = g.d_q2_NQ, d_k = g.d_k2_NK;
  Tensor q_in = a.d_augq > 0 ? a_.qaug_NQ : a_.q_NQ;
  if (a.qk_norm) {
    ops::rmsnorm_backward(head_rows(g.d_q1_NQ, a.n_q, a.d_qk), accumulating_grad(p_.q_norm),
                          head_rows(d_q, a.n_q, a.d_qk), head_rows(q_in, a.n_q, a.d_qk),
                          p_.q_norm.weight, a_.qrstd_N);
    ops::rmsnorm_backward(head_rows(g.d_k1_NK, a.n_k, a.d_qk), accumulating_grad(p_.k_norm),
                          head_rows(d_k, a.n_k, a.d_qk), head_rows(a_.k_NK, a.n_k, a.d_qk),
                          p_.k_norm.weight, a_.krstd_N);
    d_q = g.d_q1_NQ;
    d_k = g.d_k1_NK;
  }
  if (a.d_augq > 0) {
    // q feeds both q_gate_proj and q_up_proj, so its gradient is the sum of the two.
    Tensor d_qa = d_q.data == g.d_q1_NQ.data ? g.d_q2_NQ : g.d_q1_NQ;
    linear_backward(g.d_act_NA, p_.q_down_proj, d_q, a_.act_NA);
    ops::swiglu_backward(g.d_gate_NA, g.d_up_NA, g.d_act_NA, a_.gate_NA, a_.up_NA);
    linear_backward(d_qa, p_.q_gate_proj, g.d_gate_NA, a_.q_NQ);
    linear_backward(d_qa, p_.q_up_proj, g.d_up_NA, a_.q_NQ, ops::GradWrite::kAccumulate);
    d_q = d_qa;
  }
  // h feeds q_proj, k_proj and v_proj: d_h is the sum of their three input gradients, the
  // last two added by their products.
  linear_backward(d_h_ND, p_.q_proj, d_q, h_ND);
  linear_backward(d_h_ND, p_.k_proj, d_k, h_ND, ops::GradWrite::kAccumulate);
  linear_backward(d_h_ND, p_.v_proj, g.d_v_NV, h_ND, ops::GradWrite::kAccumulate);
}

}  // namespace sigma
