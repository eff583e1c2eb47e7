// AdamW on CUDA: the CPU reference's update (kernels/cpu/adamw.cpp), operation for
// operation in fp32, on fp32 master weights and moments. Scalars are formed in double on
// the host and rounded once, as the reference does.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"

#include <cmath>

namespace sigma::cuda {
namespace {

struct AdamWScalars {
  float decay, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, bias_correction2_sqrt,
      eps, grad_scale;
};

// W is the compute copy's type; with kWrite false it is not written.
template <typename W, bool kWrite>
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, W* weight,
                             AdamWScalars s, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float gi = __fmul_rn(g[i], s.grad_scale);
    float pi = __fmul_rn(p[i], s.decay);
    float mi = __fadd_rn(__fmul_rn(m[i], s.beta1), __fmul_rn(s.one_minus_beta1, gi));
    float vi = __fadd_rn(__fmul_rn(v[i], s.beta2), __fmul_rn(__fmul_rn(s.one_minus_beta2, gi), gi));
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bias_correction2_sqrt), s.eps);
    float updated = __fadd_rn(pi, __fdiv_rn(-__fmul_rn(s.step_size, mi), denom));
    p[i] = updated;
    if constexpr (kWrite) weight[i] = from_float<W>(updated);
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace

void adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const ops::AdamWStep& step,
                  Tensor weight) {
  const double lr = step.lr, t = double(step.step);
  AdamWScalars s;
  s.decay = float(1.0 - lr * double(step.weight_decay));
  s.beta1 = float(step.beta1);
  s.one_minus_beta1 = float(1.0 - double(step.beta1));
  s.beta2 = float(step.beta2);
  s.one_minus_beta2 = float(1.0 - double(step.beta2));
  s.step_size = float(lr / (1.0 - std::pow(double(step.beta1), t)));
  s.bias_correction2_sqrt = float(std::sqrt(1.0 - std::pow(double(step.beta2), t)));
  s.eps = float(step.eps);
  s.grad_scale = float(step.grad_scale);
  int64_t n = param.numel();
  int blocks = int(std::min<int64_t>(ceil_div(n, 256), 8 * num_sms()));
  if (weight.defined() && weight.data != param.data) {
    SIGMA_DISPATCH_FLOAT(weight.dtype, W, {
      adamw_kernel<W, true><<<blocks, 256, 0, stream()>>>(param.f32(), grad.f32(), m.f32(),
                                                          v.f32(), static_cast<W*>(weight.data), s, n);
    });
  } else {
    adamw_kernel<float, false><<<blocks, 256, 0, stream()>>>(param.f32(), grad.f32(), m.f32(),
                                                             v.f32(), nullptr, s, n);
  }
  SIGMA_CUDA_LAUNCHED("adamw");
}

}  // namespace sigma::cuda
