// The three model shapes of the decoder tests (test_decoder.cpp on the CPU, test_cuda_decoder.cpp
// against it): dense DiffQKV (n_k != n_v) + AugQ, untied; GQA + QK-norm, tied; an MoE with a
// shared expert and an expert bias after one dense layer. Every width is a multiple of `unit`:
// d_model 4u, d_ff 6u, d_qk u, d_v 1.5u, AugQ 2u, experts 2u (u = 4 on the CPU; 16 for the
// CUDA grouped GEMM, which needs multiples of 8).
#pragma once

#include "models/config.h"

#include <cstdint>

namespace sigma::test {

inline ModelConfig decoder_test_config(int kind, int64_t unit, int64_t vocab, double init_std) {
  ModelConfig c;
  c.n_layers = 2;
  c.d_model = 4 * unit;
  c.d_ff = 6 * unit;
  c.vocab_size = vocab;
  c.init_std = init_std;
  c.attention = {4, 1, 2, unit, unit * 3 / 2, 2 * unit, false};
  if (kind >= 1) {
    c.attention = {4, 2, 2, unit, unit, 0, true};
    c.tie_embeddings = true;
  }
  if (kind == 2) {
    c.moe.n_experts = 4;
    c.moe.d_expert = 2 * unit;
    c.moe.n_shared_experts = 1;
    c.moe.dense_layers = 1;
    c.moe.top_k = {2};
    c.moe.renormalize = true;
    c.moe.bias_update_rate = 0.01;
  }
  return c;
}

}  // namespace sigma::test
