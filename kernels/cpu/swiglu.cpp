// SwiGLU activation (Shazeer 2020): out = silu(gate) * up, elementwise, CPU reference.
//
// Each element is read before its outputs are written, so outputs may alias inputs.
#include "kernels/cpu/cpu_ops.h"

#include <cmath>

namespace sigma::cpu {
namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
}  // namespace

void swiglu_forward(Tensor out, Tensor gate, Tensor up) {
  int64_t n = gate.numel();
  const float *g = gate.f32(), *u = up.f32();
  float* o = out.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) o[i] = g[i] * sigmoid(g[i]) * u[i];
}

// silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g).
void swiglu_backward(Tensor d_gate, Tensor d_up, Tensor d_out, Tensor gate, Tensor up) {
  int64_t n = gate.numel();
  const float *g = gate.f32(), *u = up.f32(), *dout = d_out.f32();
  float *dg = d_gate.f32(), *du = d_up.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float x = g[i], s = sigmoid(x), grad = dout[i], up_i = u[i];
    du[i] = grad * x * s;
    dg[i] = grad * up_i * s * (1.0f + x * (1.0f - s));
  }
}

}  // namespace sigma::cpu
