// AdamW (Loshchilov & Hutter 2019, decoupled weight decay), CPU reference.
//
// Follows torch.optim.AdamW's single-tensor update operation for operation, so a PyTorch
// run is a reference to the last bits that fp32 allows:
//   p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g;
//   p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps),   with g = grad * grad_scale.
// Scalars are formed in double, as Python does, and rounded to fp32 once.
#include "kernels/cpu/cpu_ops.h"

#include <cmath>

namespace sigma::cpu {

void adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const ops::AdamWStep& step,
                  Tensor weight) {
  int64_t n = param.numel();
  float* p = param.f32();
  const float* g = grad.f32();
  float *mp = m.f32(), *vp = v.f32();
  const double lr = step.lr, t = double(step.step);
  const float decay = float(1.0 - lr * double(step.weight_decay));
  const float beta1 = float(step.beta1), one_minus_beta1 = float(1.0 - double(step.beta1));
  const float beta2 = float(step.beta2), one_minus_beta2 = float(1.0 - double(step.beta2));
  const float step_size = float(lr / (1.0 - std::pow(double(step.beta1), t)));
  const float bias_correction2_sqrt = float(std::sqrt(1.0 - std::pow(double(step.beta2), t)));
  const float eps = float(step.eps), grad_scale = float(step.grad_scale);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i] * grad_scale;
    p[i] *= decay;
    mp[i] = mp[i] * beta1 + one_minus_beta1 * gi;
    vp[i] = vp[i] * beta2 + one_minus_beta2 * gi * gi;
    float denom = std::sqrt(vp[i]) / bias_correction2_sqrt + eps;
    p[i] += (-step_size * mp[i]) / denom;
  }
  // The CPU computes in fp32 throughout: a separate weight is a plain copy.
  if (weight.defined() && weight.data != param.data) convert(weight, param);
}

}  // namespace sigma::cpu
