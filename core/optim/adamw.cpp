#include "core/optim/adamw.h"

#include "kernels/ops.h"

namespace sigma {

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
    bool decay = info.decay || config_.decay_norms_and_embeddings;
    ops::AdamWStep s{lr,           config_.beta1, config_.beta2, config_.eps,
                     decay ? config_.weight_decay : 0.0, step, grad_scale};
    // The bf16 compute copy (CUDA) is rewritten in the same pass.
    ops::adamw_update(info.param.value, info.param.grad, m_[i], v_[i], s, info.param.weight);
  }
}

}  // namespace sigma
