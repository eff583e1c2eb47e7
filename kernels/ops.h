// ops.h: every op the models use, one signature each, dispatched on the tensors' device.
//
// Each op has a CPU reference in kernels/cpu/<op>.cpp (fp32, reads like the math) and, when
// the CUDA backend is built, a twin in kernels/cuda/<op>.cu with the same signature.
// Conventions, so model code can rely on them:
//   - Shapes are row-major. N = tokens in the micro-batch (B*T), D = d_model.
//   - Forward ops overwrite their outputs.
//   - Backward ops overwrite input gradients (d_inp) and ACCUMULATE (+=) parameter gradients
//     (d_weight), so gradient accumulation over micro-batches needs no extra buffer. The ops
//     that write the large parameter gradients (matmul, grouped_matmul) can overwrite them
//     instead (GradWrite), so a step's first micro-batch needs no zeroed gradient to add to.
//   - An input gradient tensor may be left undefined (data == nullptr) to skip computing it.
#pragma once

#include "core/tensor/tensor.h"

#include <cstdint>

namespace sigma::ops {

// How a backward op writes a parameter gradient: kAccumulate adds (d_weight +=), kOverwrite
// replaces whatever d_weight held (d_weight =). Overwriting saves zeroing the gradient and
// reading it back: for the sigma-moe-tiny-8L bench the expert gradients alone are 11 GB a
// step (models/parameters.h, ParameterSet::mark_gradients_stale).
enum class GradWrite { kAccumulate, kOverwrite };

// --- embedding -----------------------------------------------------------------------
// out[n, :] = weight[tokens[n], :].   out [N, D], tokens i32 [N], weight [V, D].
void embedding_forward(Tensor out, Tensor tokens, Tensor weight);
// d_weight[tokens[n], :] += d_out[n, :], in token order (deterministic).
void embedding_backward(Tensor d_weight, Tensor d_out, Tensor tokens);

// --- matmul (a bias-free Linear) ---------------------------------------------------------
// out = inp @ weight^T.   out [N, O], inp [N, I], weight [O, I] (HF's [out, in] layout).
void matmul_forward(Tensor out, Tensor inp, Tensor weight);
// d_inp = d_out @ weight (skipped if undefined; += with input_write kAccumulate, which sums the
// input gradients of several Linears reading one input in their products, without an add);
// d_weight += d_out^T @ inp (= with write kOverwrite).
void matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                     GradWrite write = GradWrite::kAccumulate,
                     GradWrite input_write = GradWrite::kOverwrite);

// --- RMSNorm over the last dimension ------------------------------------------------------
// out = inp * rstd * weight, rstd = 1 / sqrt(mean(inp^2) + eps).
// out, inp [R, C]; weight [C]; rstd [R] is saved for backward.
void rmsnorm_forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, float eps);
// A residual add and the norm after it in one pass: sum = a + b (stored in sum's dtype), then
// out = rmsnorm(sum) exactly as rmsnorm_forward computes it from the stored sum. sum may
// alias a or b.
void add_rmsnorm_forward(Tensor sum, Tensor out, Tensor rstd, Tensor a, Tensor b, Tensor weight,
                         float eps);
// d_inp (overwrite; += with GradWrite::kAccumulate, adding into the residual stream's
// gradient without a temporary; then it must not alias d_out), d_weight (+=).
void rmsnorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                      Tensor rstd, GradWrite d_inp_write = GradWrite::kOverwrite);

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
// logits [N, V], targets i32 [N] (a negative target is ignored), losses [N] (0 where ignored),
// lse f32 [N]: each row's log-sum-exp (0 where ignored) for backward; skipped if undefined.
void cross_entropy_forward(Tensor losses, Tensor lse, Tensor logits, Tensor targets);
// d_logits = (exp(logits - lse) - onehot(target)) * loss_scale = (softmax - onehot) * scale,
// 0 on ignored rows. Overwrite. lse as cross_entropy_forward wrote it for these logits, so
// backward is one elementwise pass. d_logits may alias logits (the CPU engine does this to
// save a [N, V] buffer).
void cross_entropy_backward(Tensor d_logits, Tensor logits, Tensor lse, Tensor targets,
                            float loss_scale);

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
// weight, when defined and not param itself, receives the updated param in its own dtype
// (the bf16 compute copy on CUDA), in the same pass.
void adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWStep& step,
                  Tensor weight = {});

// --- MoE router (Sigma-MoE-Tiny; models/moe/README.md) ------------------------------------------
// E experts, K chosen per token (a prefix view of the dropless buffers). Router math is fp32
// on every device (logits, scores, probs, the balancing values); nothing here returns a number
// to the host, so a training step routes without a host synchronisation.
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
// router_scores_forward then router_topk_forward, in one pass over each row on CUDA.
void router_scores_topk_forward(Tensor scores, Tensor probs, Tensor experts, Tensor logits,
                                Tensor bias, ScoreFunction fn, bool renormalize);
// d_scores (overwrite): zero except at the chosen experts.
void router_topk_backward(Tensor d_scores, Tensor d_probs, Tensor probs, Tensor experts,
                          Tensor scores, bool renormalize);

// The balancing losses of one micro-batch of N tokens (models/moe/router.h has the formulas),
// with f_i = counts[i] / sum(counts) for counts i32 [E] (the micro-batch's or the step's):
//   losses f32 [kRouterLosses]: LBL, Top-1 LBL, z-loss, mean entropy of the scores normalised
//     per row (nats), and aux = the coefficient-weighted sum of the three losses.
//   coeffs f32 [2E + 2]: d aux / d(...) for the backward ops, at these offsets: [0, E) each
//     score column (summed over rows), [E, 2E) each column of softmax(logits / temperature),
//     2E the top-1 score of a row, 2E + 1 a row's logsumexp(logits)^2.
// Row sums run in double, in row order on the CPU and in a fixed order on CUDA (deterministic).
struct RouterBalanceConfig {  // model.moe's coefficients
  double lbl_coeff = 0, top1_lbl_coeff = 0, top1_lbl_temperature = 1, z_loss_coeff = 0;
};
constexpr int kLossLbl = 0, kLossTop1Lbl = 1, kLossZ = 2, kLossEntropy = 3, kLossAux = 4;
constexpr int kRouterLosses = 5;
void router_balance_forward(Tensor losses, Tensor coeffs, Tensor logits, Tensor scores,
                            Tensor counts, const RouterBalanceConfig& config);
// d_scores[n, e] += aux_scale coeffs[e] + aux_scale coeffs[2E] (e == argmax scores[n], ties
// to the lower index).
void router_balance_backward_scores(Tensor d_scores, Tensor scores, Tensor coeffs,
                                    float aux_scale);
// d_logits[n] += q (g - <q, g>) / temperature + 2 g_z lse_n softmax(logits[n]), with
// q = softmax(logits[n] / temperature), g = aux_scale coeffs[E, 2E) (skipped without a Top-1
// LBL coefficient) and g_z = aux_scale coeffs[2E + 1].
void router_balance_backward_logits(Tensor d_logits, Tensor logits, Tensor coeffs,
                                    const RouterBalanceConfig& config, float aux_scale);
// Aux-loss-free balancing (DeepSeek-V3, section 2.1.2): bias[e] += rate where counts[e] is
// under the mean count, -= rate where over.   bias f32 [E], counts i32 [E].
void router_bias_update(Tensor bias, Tensor counts, float rate);

// --- MoE dispatch: permute tokens into expert-contiguous rows and back ------------------------
// R = N * K rows (dropless). row_of i32 [N, K]: the row of assignment (n, k) when rows are
// grouped by expert in index order, tokens in order within each (a stable counting sort:
// deterministic). tokens_per_expert i32 [E].
void moe_routing_map(Tensor row_of, Tensor tokens_per_expert, Tensor experts);
// total i32 [E] += counts i32 [E] (a step's tokens per expert, summed over its micro-batches).
void moe_counts_accumulate(Tensor total, Tensor counts);
// Token rows below are activations (fp32 on the CPU, bf16 on CUDA); probs stay f32.
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

// --- grouped matmul over experts (the MoE experts as one op, Megatron-Core's GroupedMLP) ------
// Rows of inp are grouped by expert in order: the first tokens_per_expert[0] rows belong to
// expert 0, and so on; the counts sum to R (dropless, as moe_routing_map makes them).
// out [R, O] = inp [R, I] @ weight[e]^T for the rows of expert e. weight [E, O, I];
// tokens_per_expert i32 [E], read on the device (no host synchronisation).
void grouped_matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor tokens_per_expert);
// d_inp (overwrite, skipped if undefined) = d_out @ weight[e] per group;
// d_weight[e] (f32) += d_out_e^T @ inp_e. An expert with no rows leaves d_weight[e] as it is;
// with GradWrite::kOverwrite, d_weight[e] = d_out_e^T @ inp_e, zero for an expert with no rows.
void grouped_matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp,
                             Tensor weight, Tensor tokens_per_expert,
                             GradWrite write = GradWrite::kAccumulate);

}  // namespace sigma::ops
