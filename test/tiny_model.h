// A tiny model bound to real memory with random tokens and targets, shared by the dense and
// MoE model tests.
#pragma once

#include "core/random.h"
#include "kernels/device.h"
#include "models/transformer.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace sigma::test {

struct TinyModel {
  // `ep_group`: split the experts over its ranks (test/test_dist.cpp).
  explicit TinyModel(const ModelConfig& config, int64_t batch = 2, int64_t seq_len = 5,
                     Device device = Device::kCpu, Recompute recompute = Recompute::kNone,
                     ProcessGroup* ep_group = nullptr)
      : params(device), acts(device), model(config, batch, seq_len, recompute, ep_group) {
    model.bind_params(params);
    params.allocate();
    model.bind_params(params);
    model.layout_acts(acts);
    acts.allocate();
    model.layout_acts(acts);
    params.initialize(7);
    Rng rng(3);
    int64_t n = model.tokens().numel();
    Buffer host(2 * size_t(n) * sizeof(int32_t), Device::kCpu);
    Tensor tokens = host.tensor(0, {n}, DType::kI32), targets = host.tensor(tokens.bytes(), {n}, DType::kI32);
    for (int64_t i = 0; i < n; ++i) {
      tokens.i32()[i] = int32_t(rng.below(uint64_t(config.vocab_size)));
      targets.i32()[i] = int32_t(rng.below(uint64_t(config.vocab_size)));
    }
    device::copy(model.tokens(), tokens);
    device::copy(model.targets(), targets);
  }
  // The objective backward(1 / N) differentiates: mean token loss + balancing losses (0 for
  // a dense model).
  double loss() { return model.forward() / double(model.tokens_per_pass()) + model.aux_loss(); }
  // Every parameter gradient, concatenated in parameter order.
  std::vector<float> grads() const {
    std::vector<float> all;
    for (const ParamInfo& p : params.list()) {
      Buffer host(p.param.grad.bytes(), Device::kCpu);
      Tensor g = host.tensor(0, p.shape, DType::kF32);
      device::copy(g, p.param.grad);
      all.insert(all.end(), g.f32(), g.f32() + p.shape.numel());
    }
    return all;
  }

  // Every gradient after two forward and backward passes that start from stale gradients
  // (ParameterSet::mark_gradients_stale, as the trainer starts a step) holding NaN: each
  // first write must overwrite them, so the result must equal two passes from zeroed ones.
  std::vector<float> grads_of_two_passes_from_stale() {
    Tensor all = params.grads().whole(DType::kF32);
    std::vector<float> nan(size_t(all.numel()), NAN);
    Buffer host(all.bytes(), Device::kCpu);
    Tensor h = host.tensor(0, all.shape, DType::kF32);
    std::copy(nan.begin(), nan.end(), h.f32());
    device::copy(all, h);
    params.mark_gradients_stale();
    for (int pass = 0; pass < 2; ++pass) {
      model.forward();
      model.backward(0.5f);
    }
    params.zero_stale_gradients();
    return grads();
  }
  std::vector<float> grads_of_two_passes_from_zero() {
    params.zero_grads();
    for (int pass = 0; pass < 2; ++pass) {
      model.forward();
      model.backward(0.5f);
    }
    return grads();
  }

  ParameterSet params;
  Arena acts;
  Transformer model;
};

struct GradientCheckCounts {
  int checked = 0;
  int skipped = 0;
};

// Holds every parameter's gradient (4 random entries each) against central differences of
// m.loss(). `smooth()` is asked after each perturbation; a probe whose perturbation it
// rejects (for MoE: the routing changed, where top-k is not differentiable) is skipped.
inline GradientCheckCounts check_gradients_numerically(TinyModel& m,
                                                       const std::function<bool()>& smooth) {
  m.params.zero_grads();
  m.model.forward();
  m.model.backward(float(1.0 / double(m.model.tokens_per_pass())));
  Rng pick(11);
  GradientCheckCounts counts;
  for (const ParamInfo& p : m.params.list()) {
    float* w = p.param.value.f32();
    const float* g = p.param.grad.f32();
    int64_t n = p.shape.numel();
    float g_max = 0;
    for (int64_t i = 0; i < n; ++i) g_max = std::max(g_max, std::fabs(g[i]));
    for (int probe = 0; probe < 4; ++probe) {
      int64_t i = int64_t(pick.below(uint64_t(n)));
      // Central difference with h = 2e-3: the truncation error O(h^2 f''') stays below 1e-3
      // relative even through QK-norm over 4-wide heads (h = 1e-2 was not), and the fp32
      // round-off of the loss (~3e-7 absolute over 2h) adds under 1e-4 absolute.
      const float h = 2e-3f, saved = w[i];
      w[i] = saved + h;
      double up = m.loss();
      bool stable = smooth();
      w[i] = saved - h;
      double down = m.loss();
      stable = stable && smooth();
      w[i] = saved;
      if (!stable) {
        ++counts.skipped;
        continue;
      }
      ++counts.checked;
      double numeric = (up - down) / (2.0 * h);
      INFO(p.name, "[", i, "] analytic ", g[i], " numeric ", numeric);
      CHECK(std::fabs(numeric - g[i]) <= 2e-3 * g_max + 1e-4);
    }
  }
  return counts;
}

}  // namespace sigma::test
