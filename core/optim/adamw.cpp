#include "core/optim/adamw.h"

#include "kernels/ops.h"

namespace sigma {

ops::AdamWStep adamw_step(const OptimizerConfig& config, const ParamInfo& info, double lr,
                          double grad_scale, int64_t step) {
  bool decay = info.decay || config.decay_norms_and_embeddings;
  return {lr,   config.beta1, config.beta2, config.eps, decay ? config.weight_decay : 0.0,
          step, grad_scale};
}

AdamW::AdamW(const OptimizerConfig& config, ParameterSet& params)
    : config_(config), params_(params), moments_(params.values().device()) {
  for (int pass = 0; pass < 2; ++pass) {
    m_.clear();
    v_.clear();
    for (const ParamInfo& info : params.list()) {
      m_.push_back(moments_.take(info.shape, DType::kF32, "optimizer state"));
      v_.push_back(moments_.take(info.shape, DType::kF32, "optimizer state"));
    }
    if (pass == 0) moments_.allocate();
  }
}

void AdamW::step(double lr, double grad_scale, int64_t step) {
  const std::vector<ParamInfo>& list = params_.list();
  for (size_t i = 0; i < list.size(); ++i) {
    const ParamInfo& info = list[i];
    // The bf16 compute copy (CUDA) is rewritten in the same pass.
    ops::adamw_update(info.param.value, info.param.grad, m_[i], v_[i],
                      adamw_step(config_, info, lr, grad_scale, step), info.param.weight);
  }
}

}  // namespace sigma
