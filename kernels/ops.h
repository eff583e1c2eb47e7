// ops.h: every op the models use, one signature each, dispatched on the tensors' device.
//
// Each op has a CPU reference in kernels/cpu/<op>.cpp (fp32, reads like the math) and, when
// the CUDA backend is built, a twin in kernels/cuda/<op>.cu with the same signature.
// Conventions, so model code can rely on them:
//   - Shapes are row-major. N = tokens in the micro-batch (B*T), D = d_model.
//   - Forward ops overwrite their outputs.
//   - Backward ops overwrite input gradients (d_inp) and ACCUMULATE (+=) parameter gradients
//     (d_weight), so gradient accumulation over micro-batches needs no extra buffer.
//   - An input gradient tensor may be left undefined (data == nullptr) to skip computing it.
#pragma once

#include "core/tensor/tensor.h"

#include <cstdint>

namespace sigma::ops {

// --- embedding -----------------------------------------------------------------------
// out[n, :] = weight[tokens[n], :].   out [N, D], tokens i32 [N], weight [V, D].
void embedding_forward(Tensor out, Tensor tokens, Tensor weight);
// d_weight[tokens[n], :] += d_out[n, :], in token order (deterministic).
void embedding_backward(Tensor d_weight, Tensor d_out, Tensor tokens);

// --- matmul (a bias-free Linear) ---------------------------------------------------------
// out = inp @ weight^T.   out [N, O], inp [N, I], weight [O, I] (HF's [out, in] layout).
void matmul_forward(Tensor out, Tensor inp, Tensor weight);
// d_inp = d_out @ weight (overwrite; skipped if undefined); d_weight += d_out^T @ inp.
void matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight);

// --- RMSNorm over the last dimension ------------------------------------------------------
// out = inp * rstd * weight, rstd = 1 / sqrt(mean(inp^2) + eps).
// out, inp [R, C]; weight [C]; rstd [R] is saved for backward.
void rmsnorm_forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, float eps);
// d_inp (overwrite), d_weight (+=).
void rmsnorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                      Tensor rstd);

// --- RoPE, rotate-half convention of HF Llama --------------------------------------------
// x [N, H, d] viewed per token position pos[n] (i32 [N]); for i < d/2, with
// angle = pos * theta^(-2i/d):  out[i] = x[i] cos - x[i+d/2] sin;  out[i+d/2] = x[i+d/2] cos + x[i] sin.
void rope_forward(Tensor out, Tensor inp, Tensor positions, float theta);
// The transpose rotation (angle -> -angle). d_inp overwrite.
void rope_backward(Tensor d_inp, Tensor d_out, Tensor positions, float theta);

// --- causal attention with distinct head counts (DiffQKV, Sigma paper section 2) ------------
// q [B, T, n_q, d_qk], k [B, T, n_k, d_qk], v [B, T, n_v, d_v], out [B, T, n_q, d_v].
// Query head h reads key head h * n_k / n_q and value head h * n_v / n_q; scale 1/sqrt(d_qk).
// lse [B, n_q, T] f32 keeps each row's log-sum-exp so backward can rebuild the softmax.
void attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v);
// d_q, d_k, d_v overwrite (the K/V gradients sum over the query heads sharing them).
void attention_backward(Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor q, Tensor k,
                        Tensor v, Tensor out, Tensor lse);

// --- SwiGLU ------------------------------------------------------------------------------
// out = silu(gate) * up, elementwise, all [N, F].
void swiglu_forward(Tensor out, Tensor gate, Tensor up);
void swiglu_backward(Tensor d_gate, Tensor d_up, Tensor d_out, Tensor gate, Tensor up);

// --- cross-entropy fused with softmax ------------------------------------------------------
// logits [N, V], targets i32 [N] (a negative target is ignored), losses [N] (0 where ignored).
void cross_entropy_forward(Tensor losses, Tensor logits, Tensor targets);
// d_logits = (softmax(logits) - onehot(target)) * loss_scale, 0 on ignored rows. Overwrite.
// d_logits may alias logits (the CPU engine does this to save a [N, V] buffer).
void cross_entropy_backward(Tensor d_logits, Tensor logits, Tensor targets, float loss_scale);

// --- elementwise and reductions ------------------------------------------------------------
// out = a + b (out may alias a or b).
void add(Tensor out, Tensor a, Tensor b);
// x *= scale.
void scale(Tensor x, float scale);
// Sum of squares of x, accumulated in double for a stable gradient norm.
double sum_squares(Tensor x);
// Sum of x (e.g. the losses of a micro-batch), accumulated in double.
double sum(Tensor x);

// --- AdamW (decoupled weight decay, Loshchilov & Hutter) -------------------------------------
struct AdamWStep {
  float lr;
  float beta1;
  float beta2;
  float eps;
  float weight_decay;  // 0 for tensors excluded from decay
  int64_t step;        // 1-based, for bias correction
  float grad_scale;    // multiplies the gradient first (clipping, loss averaging)
};
// param, grad, m, v all [numel] f32 (master weights and moments are fp32 on every device).
void adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWStep& step);

}  // namespace sigma::ops
