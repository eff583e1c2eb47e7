// AdamW over a ParameterSet: fp32 moments laid out like the parameters, decoupled weight decay.
//
// Which tensors decay comes from the model (matrices inside layers and the LM head) unless
// optimizer.decay_norms_and_embeddings extends it to all of them.
#pragma once

#include "core/optim/config.h"
#include "kernels/ops.h"
#include "models/parameters.h"

#include <vector>

namespace sigma {

// The update of one parameter: the config's hyperparameters, weight decay where the parameter
// decays (ParamInfo::decay, or every tensor with decay_norms_and_embeddings). Shared by AdamW
// and the sharded optimizer of data parallelism (core/train/data_parallel.h).
ops::AdamWStep adamw_step(const OptimizerConfig& config, const ParamInfo& info, double lr,
                          double grad_scale, int64_t step);

class AdamW {
 public:
  AdamW(const OptimizerConfig& config, ParameterSet& params);

  // One update with learning rate `lr`; gradients are multiplied by grad_scale first
  // (loss averaging and clipping). `step` is the 1-based step number (bias correction).
  void step(double lr, double grad_scale, int64_t step);

  // The moments of parameter i, for checkpoints.
  Tensor m(size_t i) const { return m_[i]; }
  Tensor v(size_t i) const { return v_[i]; }

 private:
  const OptimizerConfig& config_;
  ParameterSet& params_;
  Arena moments_;
  std::vector<Tensor> m_, v_;
};

}  // namespace sigma
