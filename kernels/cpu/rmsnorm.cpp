// RMSNorm over the last dimension (Zhang & Sennrich 2019), CPU reference.
//
// Row statistics are accumulated in double. The weight gradient is a sum over rows; it is
// computed per block of columns with the rows in order, so it is the same bits for any
// thread count (no per-thread partials to combine).
#include "kernels/cpu/cpu_ops.h"

#include <cmath>

namespace sigma::cpu {
namespace {

constexpr int64_t kColumnBlock = 16;  // one 64-byte cache line of fp32 per block

// One row: o = x * rstd * w; returns rstd = 1 / sqrt(mean(x^2) + eps).
float normalize_row(float* o, const float* x, const float* w, int64_t c, float eps) {
  double sum_sq = 0;
  for (int64_t i = 0; i < c; ++i) sum_sq += double(x[i]) * x[i];
  float s = float(1.0 / std::sqrt(sum_sq / double(c) + eps));
  for (int64_t i = 0; i < c; ++i) o[i] = x[i] * s * w[i];
  return s;
}

}  // namespace

// out = inp * rstd * weight, rstd = 1 / sqrt(mean(inp^2) + eps)
void rmsnorm_forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, float eps) {
  int64_t c = inp.size(-1), rows = inp.numel() / c;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row)
    rstd.f32()[row] = normalize_row(out.f32() + row * c, inp.f32() + row * c, weight.f32(), c, eps);
}

void add_rmsnorm_forward(Tensor sum, Tensor out, Tensor rstd, Tensor a, Tensor b, Tensor weight,
                         float eps) {
  int64_t c = sum.size(-1), rows = sum.numel() / c;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    float* s_row = sum.f32() + row * c;
    const float *a_row = a.f32() + row * c, *b_row = b.f32() + row * c;
    for (int64_t i = 0; i < c; ++i) s_row[i] = a_row[i] + b_row[i];
    rstd.f32()[row] = normalize_row(out.f32() + row * c, s_row, weight.f32(), c, eps);
  }
}

// With y = x * rstd * w and g = d_out:
//   d_inp = rstd * (w g - x rstd^2 mean(w g x)),   d_weight += sum over rows of g x rstd.
void rmsnorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                      Tensor rstd, GradWrite d_inp_write) {
  int64_t c = inp.size(-1), rows = inp.numel() / c;
  const float* x = inp.f32();
  const float* w = weight.f32();
  const float* g = d_out.f32();
  const float* r = rstd.f32();
  float* dx = d_inp.f32();
  float* dw = d_weight.f32();

  // d_weight first: d_inp may alias d_out (both are read here, then d_inp is written).
  int64_t num_blocks = (c + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < num_blocks; ++blk) {
    int64_t c0 = blk * kColumnBlock, c1 = c0 + kColumnBlock < c ? c0 + kColumnBlock : c;
    double acc[kColumnBlock] = {};
    for (int64_t row = 0; row < rows; ++row) {
      const float* x_row = x + row * c;
      const float* g_row = g + row * c;
      for (int64_t i = c0; i < c1; ++i) acc[i - c0] += double(g_row[i] * x_row[i] * r[row]);
    }
    for (int64_t i = c0; i < c1; ++i) dw[i] += float(acc[i - c0]);
  }

#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    const float* x_row = x + row * c;
    const float* g_row = g + row * c;
    float s = r[row];
    double dot = 0;  // sum of w g x over the row
    for (int64_t i = 0; i < c; ++i) dot += double(w[i] * g_row[i]) * x_row[i];
    float k = float(dot / double(c)) * s * s;
    float* dx_row = dx + row * c;
    if (d_inp_write == GradWrite::kAccumulate)
      for (int64_t i = 0; i < c; ++i) dx_row[i] += s * (w[i] * g_row[i] - x_row[i] * k);
    else
      for (int64_t i = 0; i < c; ++i) dx_row[i] = s * (w[i] * g_row[i] - x_row[i] * k);
  }
}

}  // namespace sigma::cpu
