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

// Attention of new queries over a KV cache (generation; models/decoder.h). q [B, Tq, n_q, d_qk],
// k [B, Tk, n_k, d_qk], v [B, Tk, n_v, d_v] with Tk >= Tq: the queries are the last Tq positions,
// so query t sees keys 0 .. Tk - Tq + t. out [B, Tq, n_q, d_v]. Head mapping and scale as
// attention_forward, whose rows it reproduces when Tq == Tk. Forward only (no lse).
void attention_cached_forward(Tensor out, Tensor q, Tensor k, Tensor v);

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
// out = inp converted to out's dtype (f32 <-> bf16 on CUDA; a copy on the CPU). Same numel.
void convert(Tensor out, Tensor inp);
// x *= scale.
void scale(Tensor x, float scale);
// Sum of squares of x, accumulated in double for a stable gradient norm.
double sum_squares(Tensor x);
// Sum of x (e.g. the losses of a micro-batch), accumulated in double.
double sum(Tensor x);

// --- AdamW (decoupled weight decay, Loshchilov & Hutter) -------------------------------------
struct AdamWStep {
  // Hyper-parameters stay in double, as PyTorch keeps them, and are rounded to the
  // device's precision once inside the kernel.
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;  // 0 for tensors excluded from decay
  int64_t step;         // 1-based, for bias correction
  double grad_scale;    // multiplies the gradient first (clipping, loss averaging)
};
// param, grad, m, v all [numel] f32 (master weights and moments are fp32 on every device).
void adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWStep& step);

// --- MoE router (Sigma-MoE-Tiny; models/moe/README.md) ------------------------------------------
// E experts, K chosen per token (a prefix view of the dropless buffers). Router math is fp32.
enum class ScoreFunction { kSoftmax, kSigmoid };
// scores = softmax(logits) per row, or sigmoid(logits) elementwise.   [N, E] f32 each.
void router_scores_forward(Tensor scores, Tensor logits, ScoreFunction fn);
// d_logits (overwrite) from d_scores through the score function.
void router_scores_backward(Tensor d_logits, Tensor d_scores, Tensor scores, ScoreFunction fn);
// experts i32 [N, K]: the K largest of scores + bias (bias f32 [E], may be undefined; it steers
// selection only, DeepSeek-V3), ties to the lower expert index, in descending order.
// probs [N, K] = the chosen scores, divided by their sum when renormalize.
void router_topk_forward(Tensor probs, Tensor experts, Tensor scores, Tensor bias,
                         bool renormalize);
// d_scores (overwrite): zero except at the chosen experts.
void router_topk_backward(Tensor d_scores, Tensor d_probs, Tensor probs, Tensor experts,
                          Tensor scores, bool renormalize);

// Row sums behind the balancing losses and the balance metrics, in row order, in double.
struct RouterSums {
  double top1 = 0;     // sum_n max_e scores[n, e]
  double z_sq = 0;     // sum_n logsumexp(logits[n])^2
  double entropy = 0;  // sum_n entropy of scores[n] normalised to sum 1 (nats)
};
// score_sum [E] = sum_n scores[n, :]; sharp_sum [E] = sum_n softmax(logits[n] / temperature)
// (skipped when undefined).
RouterSums router_balance_sums(Tensor score_sum, Tensor sharp_sum, Tensor logits, Tensor scores,
                               float temperature);
// d_scores[n, e] += g_score[e] + g_top1 * (e == argmax scores[n], ties to the lower index).
void router_balance_backward_scores(Tensor d_scores, Tensor scores, Tensor g_score, float g_top1);
// d_logits[n] += q (g_sharp - <q, g_sharp>) / temperature + 2 g_z lse_n softmax(logits[n]),
// q = softmax(logits[n] / temperature); g_sharp [E] may be undefined.
void router_balance_backward_logits(Tensor d_logits, Tensor logits, Tensor g_sharp,
                                    float temperature, float g_z);

// --- MoE dispatch: permute tokens into expert-contiguous rows and back ------------------------
// R = N * K rows (dropless). row_of i32 [N, K]: the row of assignment (n, k) when rows are
// grouped by expert in index order, tokens in order within each (a stable counting sort:
// deterministic). tokens_per_expert i32 [E].
void moe_routing_map(Tensor row_of, Tensor tokens_per_expert, Tensor experts);
// out[row_of[n, k]] = inp[n].   out [R, D], inp [N, D].
void moe_permute_forward(Tensor out, Tensor inp, Tensor row_of);
// d_inp[n] = sum_k d_out[row_of[n, k]] (overwrite, k in order).
void moe_permute_backward(Tensor d_inp, Tensor d_out, Tensor row_of);
// out[n] = sum_k probs[n, k] * inp[row_of[n, k]].   out [N, D], inp [R, D], probs [N, K].
void moe_unpermute_forward(Tensor out, Tensor inp, Tensor row_of, Tensor probs);
// d_inp[row_of[n, k]] = probs[n, k] * d_out[n]; d_probs[n, k] = <d_out[n], inp[row_of[n, k]]>.
// Both overwrite.
void moe_unpermute_backward(Tensor d_inp, Tensor d_probs, Tensor d_out, Tensor inp, Tensor row_of,
                            Tensor probs);

}  // namespace sigma::ops
