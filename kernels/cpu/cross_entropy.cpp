// Cross-entropy fused with softmax over the vocabulary, CPU reference.
//
// Stable form: loss = log(sum exp(z - max)) + max - z[target], with the sum in double.
// Backward recomputes the row's max and sum rather than keeping probabilities, so d_logits
// can overwrite logits in place. A negative target marks a row to ignore (padding); targets
// at or past V are a user error (data built for a bigger vocabulary).
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

void cross_entropy_forward(Tensor losses, Tensor logits, Tensor targets) {
  int64_t v = logits.size(-1), n = logits.numel() / v;
  const float* z = logits.f32();
  const int32_t* target = targets.i32();
  float* loss = losses.f32();
  check_targets(target, n, v);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < n; ++row) {
    if (target[row] < 0) {
      loss[row] = 0.0f;
      continue;
    }
    const float* z_row = z + row * v;
    RowStats st = row_stats(z_row, v);
    loss[row] = float(std::log(st.sum_exp) + double(st.max) - double(z_row[target[row]]));
  }
}

// d_logits = (softmax(z) - onehot(target)) * loss_scale, zero on ignored rows.
void cross_entropy_backward(Tensor d_logits, Tensor logits, Tensor targets, float loss_scale) {
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
    RowStats st = row_stats(z_row, v);
    float inv_sum = float(1.0 / st.sum_exp);
    for (int64_t i = 0; i < v; ++i) {
      float prob = std::exp(z_row[i] - st.max) * inv_sum;
      dz_row[i] = (prob - (i == target[row] ? 1.0f : 0.0f)) * loss_scale;
    }
  }
}

}  // namespace sigma::cpu
