// A tiny model bound to real memory with random tokens and targets, shared by the dense and
// MoE model tests.
#pragma once

#include "core/random.h"
#include "models/transformer.h"

#include <vector>

namespace sigma::test {

struct TinyModel {
  explicit TinyModel(const ModelConfig& config, int64_t batch = 2, int64_t seq_len = 5)
      : params(Device::kCpu), acts(Device::kCpu), model(config, batch, seq_len) {
    model.bind_params(params);
    params.allocate();
    model.bind_params(params);
    model.layout_acts(acts);
    acts.allocate();
    model.layout_acts(acts);
    params.initialize(7);
    Rng rng(3);
    for (int64_t i = 0; i < model.tokens().numel(); ++i) {
      model.tokens().i32()[i] = int32_t(rng.below(uint64_t(config.vocab_size)));
      model.targets().i32()[i] = int32_t(rng.below(uint64_t(config.vocab_size)));
    }
  }
  // The objective backward(1 / N) differentiates: mean token loss + balancing losses (0 for
  // a dense model).
  double loss() { return model.forward() / double(model.tokens_per_pass()) + model.aux_loss(); }
  // Every parameter gradient, concatenated in parameter order.
  std::vector<float> grads() const {
    std::vector<float> all;
    for (const ParamInfo& p : params.list())
      all.insert(all.end(), p.param.grad.f32(), p.param.grad.f32() + p.shape.numel());
    return all;
  }

  ParameterSet params;
  Arena acts;
  Transformer model;
};

}  // namespace sigma::test
