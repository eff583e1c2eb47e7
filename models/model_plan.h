// What a model costs before it runs: parameter counts, FLOPs per token and the memory plan,
// computed by the same layout passes that allocate the real run (so they cannot disagree).
#pragma once

#include "core/tensor/tensor.h"
#include "models/config.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sigma {

// What one progressive-sparsification phase of an MoE model uses per token.
struct PhaseCost {
  std::vector<int64_t> top_k;  // as the recipe lists it
  int64_t active_params = 0;
  double flops_per_token = 0;
};

struct ModelPlan {
  int64_t total_params = 0;
  int64_t embedding_params = 0;  // the token embedding (a lookup, not a matmul)
  // Used per token by matmuls, LM head included; for MoE: attention, router, the top-k
  // routed experts and the shared ones, of the final phase (moe_phases lists every phase).
  int64_t active_params = 0;
  // 6 x active params + causal attention 3 x L x T x n_q x (d_qk + d_v): the counting of
  // shared/bench/README.md, so MFU compares with the PyTorch peer.
  double flops_per_token = 0;
  std::vector<PhaseCost> moe_phases;  // empty for a dense model
  std::map<std::string, size_t> bytes;  // weights, gradients, optimizer state, activations, ...
};

// "[8 x8, 1 x48]": a per-layer top-k list, run-length encoded over n_layers, for logs.
std::string describe_top_k(const std::vector<int64_t>& top_k, int64_t n_layers);

// On Device::kCuda the plan has bf16 activations and the bf16 weight copies of the CUDA
// engine (planning allocates nothing, so it works on a machine without a GPU).
ModelPlan plan_model(const ModelConfig& config, int64_t micro_batch, int64_t seq_len,
                     Device device = Device::kCpu, Recompute recompute = Recompute::kNone);

}  // namespace sigma
