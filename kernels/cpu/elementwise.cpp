// Elementwise ops and full reductions (add, scale, sum_squares, sum), CPU reference.
//
// The reductions accumulate in double over fixed blocks of kBlock elements, and add the
// block sums in order: the result does not depend on the thread count, and is the same
// bits on every run (OpenMP's own reduction clause leaves the combining order open).
#include "kernels/cpu/cpu_ops.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace sigma::cpu {
namespace {

constexpr int64_t kBlock = 1 << 14;

template <typename Term>
double blocked_sum(const float* x, int64_t n, Term term) {
  int64_t num_blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(num_blocks));
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < num_blocks; ++blk) {
    int64_t end = std::min(n, (blk + 1) * kBlock);
    double acc = 0;
    for (int64_t i = blk * kBlock; i < end; ++i) acc += term(double(x[i]));
    partial[blk] = acc;
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

void add(Tensor out, Tensor a, Tensor b) {
  int64_t n = out.numel();
  const float *x = a.f32(), *y = b.f32();
  float* o = out.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) o[i] = x[i] + y[i];
}

void convert(Tensor out, Tensor inp) {
  if (out.data != inp.data) std::memcpy(out.data, inp.data, inp.bytes());
}

void scale(Tensor x, float scale) {
  int64_t n = x.numel();
  float* p = x.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] *= scale;
}

double sum_squares(Tensor x) {
  return blocked_sum(x.f32(), x.numel(), [](double e) { return e * e; });
}

double sum(Tensor x) {
  return blocked_sum(x.f32(), x.numel(), [](double e) { return e; });
}

}  // namespace sigma::cpu
