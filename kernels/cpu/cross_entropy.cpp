// Cross-entropy fused with softmax over the vocabulary, CPU reference.
//
// Stable form: lse = log(sum exp(z - max)) + max, loss = lse - z[target], with the sum in
// double. Backward reads lse from forward instead of keeping probabilities, so it is one
// elementwise pass and d_logits can overwrite logits in place. A negative target marks a row
// to ignore (padding); targets at or past V are a user error (data built for a bigger
// vocabulary).
#include "kernels/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>

namespace sigma::cpu {
namespace {

struct RowStats {
  float max;
  double sum_exp;  // sum of exp(z - max)
};

RowStats row_stats(const float* z, int64_t v) {
  float max = z[0];
  for (int64_t i = 1; i < v; ++i) max = std::max(max, z[i]);
  double sum = 0;
  for (int64_t i = 0; i < v; ++i) sum += std::exp(z[i] - max);
  return {max, sum};
}

void check_targets(const int32_t* targets, int64_t n, int64_t v) {
  for (int64_t i = 0; i < n; ++i) {
    if (targets[i] >= v)
      fail("target token id {} at position {} is outside the vocabulary [0, {})", targets[i], i, v);
  }
}

}  // namespace

void cross_entropy_forward(Tensor losses, Tensor lse, Tensor logits, Tensor targets) {
  int64_t v = logits.size(-1), n = logits.numel() / v;
  const float* z = logits.f32();
  const int32_t* target = targets.i32();
  float* loss = losses.f32();
  float* lse_out = lse.defined() ? lse.f32() : nullptr;
  check_targets(target, n, v);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < n; ++row) {
    double row_lse = 0;
    if (target[row] >= 0) {
      RowStats st = row_stats(z + row * v, v);
      row_lse = std::log(st.sum_exp) + double(st.max);
    }
    loss[row] = target[row] < 0 ? 0.0f : float(row_lse - double(z[row * v + target[row]]));
    if (lse_out) lse_out[row] = float(row_lse);
  }
}

// d_logits = (exp(z - lse) - onehot(target)) * loss_scale, zero on ignored rows.
void cross_entropy_backward(Tensor d_logits, Tensor logits, Tensor lse, Tensor targets,
                            float loss_scale) {
  int64_t v = logits.size(-1), n = logits.numel() / v;
  const float* z = logits.f32();
  const int32_t* target = targets.i32();
  float* dz = d_logits.f32();
  check_targets(target, n, v);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < n; ++row) {
    float* dz_row = dz + row * v;
    if (target[row] < 0) {
      std::fill(dz_row, dz_row + v, 0.0f);
      continue;
    }
    const float* z_row = z + row * v;
    const float row_lse = lse.f32()[row];
    for (int64_t i = 0; i < v; ++i) {
      float prob = std::exp(z_row[i] - row_lse);
      dz_row[i] = (prob - (i == target[row] ? 1.0f : 0.0f)) * loss_scale;
    }
  }
}

}  // namespace sigma::cpu
