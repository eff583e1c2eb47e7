#include "models/parameters.h"

#include "core/random.h"
#include "kernels/device.h"
#include "kernels/ops.h"

#include <algorithm>
#include <exception>
#include <numeric>
#include <vector>

namespace sigma {

Param ParameterSet::add(const std::string& name, Shape shape, ParamInit init, double init_std,
                        bool decay, ParamRows rows) {
  Param p;
  p.value = values_.take(shape, DType::kF32, "weights");
  p.weight = separate_weights() ? weights_.take(shape, DType::kBF16, "weights (bf16 copy)") : p.value;
  p.grad = grads_.take(shape, DType::kF32, "gradients");
  if (!allocated()) {
    Shape global = shape;
    if (rows.global_rows > 0) global.dims[0] = rows.global_rows;
    SIGMA_CHECK(rows.row_offset >= 0 && rows.row_offset + shape[0] <= global[0],
                "{}: rows {} at {} of {}", name, shape[0], rows.row_offset, global[0]);
    params_.push_back({name, shape, init, init_std, decay, p, global, rows.row_offset});
  } else {
    SIGMA_CHECK(cursor_ < params_.size() && params_[cursor_].name == name,
                "binding pass diverged from planning at {}", name);
    p.grad_stale = &grad_stale_[cursor_];
    params_[cursor_++].param = p;
  }
  return p;
}

void ParameterSet::allocate() {
  values_.allocate();
  if (separate_weights()) weights_.allocate();
  grads_.allocate();  // zeroed
  grad_stale_ = std::make_unique<bool[]>(params_.size());  // all false
  cursor_ = 0;
}

void ParameterSet::zero_grads() {
  grads_.zero();
  std::fill_n(grad_stale_.get(), params_.size(), false);
}

void ParameterSet::mark_gradients_stale() {
  std::fill_n(grad_stale_.get(), params_.size(), true);
}

void ParameterSet::zero_stale_gradients() {
  for (size_t i = 0; i < params_.size(); ++i)
    if (grad_stale_[i]) accumulating_grad(params_[i].param);
}

ops::GradWrite take_grad_write(const Param& p) {
  if (!*p.grad_stale) return ops::GradWrite::kAccumulate;
  *p.grad_stale = false;
  return ops::GradWrite::kOverwrite;
}

void linear_backward(Tensor d_inp, const Param& p, Tensor d_out, Tensor inp,
                     ops::GradWrite input_write) {
  ops::matmul_backward(d_inp, p.grad, d_out, inp, p.weight, take_grad_write(p), input_write);
}

Tensor accumulating_grad(const Param& p) {
  if (*p.grad_stale) {
    device::zero(p.grad.data, p.grad.bytes(), p.grad.device);
    *p.grad_stale = false;
  }
  return p.grad;
}

void ParameterSet::rebind() {
  SIGMA_CHECK(allocated(), "rebind before allocate");
  values_.rewind(0);
  weights_.rewind(0);
  grads_.rewind(0);
  cursor_ = 0;
}

void ParameterSet::initialize(uint64_t seed) {
  SIGMA_CHECK(allocated() && cursor_ == params_.size(), "initialize before binding");
  // Drawn on the host, so every device starts from the same bits. Each tensor has its own
  // stream, so tensors are drawn in parallel, the largest first (a 2.3B-parameter model took
  // ~50 s on one core). Uploads take turns.
  std::vector<size_t> order(params_.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return params_[a].shape.numel() > params_[b].shape.numel();
  });
  std::exception_ptr error;
#pragma omp parallel
  {
    std::vector<float> staging;
#pragma omp for schedule(dynamic, 1)
    for (size_t k = 0; k < order.size(); ++k) {
      const ParamInfo& info = params_[order[k]];
      const Tensor& target = info.param.value;
      int64_t n = info.shape.numel();
      bool on_host = target.device == Device::kCpu;
      if (!on_host) staging.resize(size_t(n));
      float* w = on_host ? target.f32() : staging.data();
      if (info.init == ParamInit::kOnes) {
        std::fill_n(w, n, 1.0f);
      } else {
        Rng rng(seed_for(seed, info.name));
        // The draws of the rows before ours are made and dropped, so the stream lines up.
        int64_t skip = info.row_offset == 0 ? 0 : info.row_offset * (n / info.shape[0]);
        for (int64_t i = 0; i < skip; ++i) rng.normal();
        for (int64_t i = 0; i < n; ++i) w[i] = float(info.init_std * rng.normal());
      }
      if (!on_host) {
        Tensor host = target;
        host.device = Device::kCpu;
        host.data = staging.data();
#pragma omp critical(sigma_parameter_upload)
        try {
          device::copy(target, host);
        } catch (...) {
          if (!error) error = std::current_exception();
        }
      }
    }
  }
  if (error) std::rethrow_exception(error);
  refresh_weights();
}

void ParameterSet::refresh_weights() {
  if (!separate_weights()) return;
  for (const ParamInfo& info : params_) ops::convert(info.param.weight, info.param.value);
}

int64_t ParameterSet::num_elements() const {
  int64_t n = 0;
  for (const ParamInfo& info : params_) n += info.shape.numel();
  return n;
}

}  // namespace sigma
