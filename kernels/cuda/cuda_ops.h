// cuda_ops.h: the CUDA backend, one function per op in kernels/ops.h.
//
// Same signatures and contracts as ops.h; kernels/dispatch.cpp checks shapes and dtypes
// first. Activations are bf16 (fp32 accepted where a kernel says so), statistics and
// parameter gradients fp32. Every kernel is launched on the one compute stream of
// kernels/cuda/runtime.h, in order, so no op needs a host synchronisation; the ops that
// return a number to the host (sum, sum_squares) synchronise.
#pragma once

#include "kernels/ops.h"

namespace sigma::cuda {

using ops::GradWrite;

void embedding_forward(Tensor out, Tensor tokens, Tensor weight);
void embedding_backward(Tensor d_weight, Tensor d_out, Tensor tokens);

void matmul_forward(Tensor out, Tensor inp, Tensor weight);
void matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                     GradWrite write, GradWrite input_write);

void rmsnorm_forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, float eps);
void add_rmsnorm_forward(Tensor sum, Tensor out, Tensor rstd, Tensor a, Tensor b, Tensor weight,
                         float eps);
void rmsnorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                      Tensor rstd, GradWrite d_inp_write);

void rope_forward(Tensor out, Tensor inp, Tensor positions, float theta);
void rope_backward(Tensor d_inp, Tensor d_out, Tensor positions, float theta);

void attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v);
void attention_backward(Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor q, Tensor k,
                        Tensor v, Tensor out, Tensor lse);
void attention_cached_forward(Tensor out, Tensor q, Tensor k, Tensor v);

void swiglu_forward(Tensor out, Tensor gate, Tensor up);
void swiglu_backward(Tensor d_gate, Tensor d_up, Tensor d_out, Tensor gate, Tensor up);

void cross_entropy_forward(Tensor losses, Tensor lse, Tensor logits, Tensor targets);
void cross_entropy_backward(Tensor d_logits, Tensor logits, Tensor lse, Tensor targets,
                            float loss_scale);

void add(Tensor out, Tensor a, Tensor b);
void convert(Tensor out, Tensor inp);
void scale(Tensor x, float scale);
double sum_squares(Tensor x);
double sum(Tensor x);

void adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const ops::AdamWStep& step,
                  Tensor weight);

// MoE router (moe_router.cu) and dispatch (moe_permute.cu).
void router_scores_forward(Tensor scores, Tensor logits, ops::ScoreFunction fn);
void router_scores_backward(Tensor d_logits, Tensor d_scores, Tensor scores, ops::ScoreFunction fn);
void router_topk_forward(Tensor probs, Tensor experts, Tensor scores, Tensor bias,
                         bool renormalize);
void router_scores_topk_forward(Tensor scores, Tensor probs, Tensor experts, Tensor logits,
                                Tensor bias, ops::ScoreFunction fn, bool renormalize);
void router_topk_backward(Tensor d_scores, Tensor d_probs, Tensor probs, Tensor experts,
                          Tensor scores, bool renormalize);
void router_balance_forward(Tensor losses, Tensor coeffs, Tensor logits, Tensor scores,
                            Tensor counts, const ops::RouterBalanceConfig& config);
void router_balance_backward_scores(Tensor d_scores, Tensor scores, Tensor coeffs,
                                    float aux_scale);
void router_balance_backward_logits(Tensor d_logits, Tensor logits, Tensor coeffs,
                                    const ops::RouterBalanceConfig& config, float aux_scale);
void router_bias_update(Tensor bias, Tensor counts, float rate);
void moe_routing_map(Tensor row_of, Tensor tokens_per_expert, Tensor experts);
void moe_counts_accumulate(Tensor total, Tensor counts);
void moe_permute_forward(Tensor out, Tensor inp, Tensor row_of);
void moe_permute_backward(Tensor d_inp, Tensor d_out, Tensor row_of);
void moe_unpermute_forward(Tensor out, Tensor inp, Tensor row_of, Tensor probs);
void moe_unpermute_backward(Tensor d_inp, Tensor d_probs, Tensor d_out, Tensor inp, Tensor row_of,
                            Tensor probs);

// Grouped matmul over experts (grouped_matmul.cu).
void grouped_matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor tokens_per_expert);
void grouped_matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp,
                             Tensor weight, Tensor tokens_per_expert, GradWrite write);

}  // namespace sigma::cuda
