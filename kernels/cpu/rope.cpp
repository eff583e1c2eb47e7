// Rotary position embedding, rotate-half convention of HF Llama (Su et al. 2021), CPU reference.
//
// Pairs (i, i + d/2) of each head are rotated by pos * theta^(-2i/d). Angles and their
// cos/sin are computed in double and rounded once, into a table over the call's range of
// positions. Backward is the same rotation by the negative angle. In-place use (out == inp)
// is fine: each pair is read before it is written.
#include "kernels/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace sigma::cpu {
namespace {

void rotate(Tensor out, Tensor inp, Tensor positions, float theta, float direction) {
  int64_t d = inp.size(-1), heads = inp.size(-2), half = d / 2;
  int64_t n = inp.numel() / (heads * d);
  if (n == 0) return;
  const int32_t* pos = positions.i32();
  const auto [min_it, max_it] = std::minmax_element(pos, pos + n);
  int64_t pos_min = *min_it, num_pos = int64_t(*max_it) - pos_min + 1;

  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(double(theta), -2.0 * double(i) / double(d));
  std::vector<float> cos_table(size_t(num_pos * half)), sin_table(size_t(num_pos * half));
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < num_pos; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      double angle = double(pos_min + p) * inv_freq[i];
      cos_table[p * half + i] = float(std::cos(angle));
      sin_table[p * half + i] = direction * float(std::sin(angle));
    }
  }

  const float* x = inp.f32();
  float* y = out.f32();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < n * heads; ++row) {
    int64_t p = pos[row / heads] - pos_min;
    const float* cs = cos_table.data() + p * half;
    const float* sn = sin_table.data() + p * half;
    const float* x_row = x + row * d;
    float* y_row = y + row * d;
    for (int64_t i = 0; i < half; ++i) {
      float a = x_row[i], b = x_row[i + half];
      y_row[i] = a * cs[i] - b * sn[i];
      y_row[i + half] = b * cs[i] + a * sn[i];
    }
  }
}

}  // namespace

void rope_forward(Tensor out, Tensor inp, Tensor positions, float theta) {
  rotate(out, inp, positions, theta, 1.0f);
}

void rope_backward(Tensor d_inp, Tensor d_out, Tensor positions, float theta) {
  rotate(d_inp, d_out, positions, theta, -1.0f);
}

}  // namespace sigma::cpu
