// What a model costs before it runs: parameter counts, FLOPs per token and the memory plan,
// computed by the same layout passes that allocate the real run (so they cannot disagree).
#pragma once

#include "models/config.h"

#include <cstdint>
#include <map>
#include <string>

namespace sigma {

struct ModelPlan {
  int64_t total_params = 0;
  int64_t embedding_params = 0;  // the token embedding (a lookup, not a matmul)
  int64_t active_params = 0;     // used per token by matmuls, LM head included
  // 6 x active params + causal attention 3 x L x T x n_q x (d_qk + d_v): the counting of
  // shared/bench/README.md, so MFU compares with the PyTorch peer.
  double flops_per_token = 0;
  std::map<std::string, size_t> bytes;  // weights, gradients, optimizer state, activations, ...
};

ModelPlan plan_model(const ModelConfig& config, int64_t micro_batch, int64_t seq_len);

}  // namespace sigma
