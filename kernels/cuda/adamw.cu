// AdamW on CUDA: the CPU reference's update (kernels/cpu/adamw.cpp), operation for
// operation in fp32, on fp32 master weights and moments. Scalars are formed in double on
// the host and rounded once, as the reference does.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/vector_io.cuh"

#include <cmath>

namespace sigma::cuda {
namespace {

struct AdamWScalars {
  float decay, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, bias_correction2_sqrt,
      eps, grad_scale;
};

// W is the compute copy's type; with kWrite false it is not written. Packs of elements move
// with 16-byte accesses (vector_io.cuh); the arithmetic is per element, as in the reference.
template <typename W, bool kWrite>
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, W* weight,
                             AdamWScalars s, int64_t n, bool vectorized) {
  for_each_pack(n, vectorized, [&](int64_t i, auto width) {
    constexpr int N = decltype(width)::value;
    Pack<float, N> pp = load_pack<N>(p + i), gp = load_pack<N>(g + i);
    Pack<float, N> mp = load_pack<N>(m + i), vp = load_pack<N>(v + i);
    Pack<W, N> wp;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      float gi = __fmul_rn(gp.v[k], s.grad_scale);
      float pi = __fmul_rn(pp.v[k], s.decay);
      float mi = __fadd_rn(__fmul_rn(mp.v[k], s.beta1), __fmul_rn(s.one_minus_beta1, gi));
      float vi = __fadd_rn(__fmul_rn(vp.v[k], s.beta2),
                           __fmul_rn(__fmul_rn(s.one_minus_beta2, gi), gi));
      float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bias_correction2_sqrt), s.eps);
      float updated = __fadd_rn(pi, __fdiv_rn(-__fmul_rn(s.step_size, mi), denom));
      pp.v[k] = updated;
      if constexpr (kWrite) wp.v[k] = from_float<W>(updated);
      mp.v[k] = mi;
      vp.v[k] = vi;
    }
    store_pack(p + i, pp);
    if constexpr (kWrite) store_pack(weight + i, wp);
    store_pack(m + i, mp);
    store_pack(v + i, vp);
  });
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
  if (n == 0) return;
  constexpr int kThreads = 256;
  int blocks = elementwise_blocks(n, kThreads);
  bool vectorized = aligned16(param.data) && aligned16(grad.data) && aligned16(m.data) &&
                    aligned16(v.data);
  if (weight.defined() && weight.data != param.data) {
    vectorized = vectorized && aligned16(weight.data);
    SIGMA_DISPATCH_FLOAT(weight.dtype, W, {
      adamw_kernel<W, true><<<blocks, kThreads, 0, stream()>>>(
          param.f32(), grad.f32(), m.f32(), v.f32(), static_cast<W*>(weight.data), s, n,
          vectorized);
    });
  } else {
    adamw_kernel<float, false><<<blocks, kThreads, 0, stream()>>>(
        param.f32(), grad.f32(), m.f32(), v.f32(), nullptr, s, n, vectorized);
  }
  SIGMA_CUDA_LAUNCHED("adamw");
}

}  // namespace sigma::cuda
