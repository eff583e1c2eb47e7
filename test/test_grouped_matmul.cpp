// The grouped matmul over experts: the CPU reference against naive per-expert sums in double
// (empty experts included, whose weight gradient must stay as it was when it accumulates and
// become zero when it is overwritten), and the CUDA kernel
// against the CPU reference on bf16-rounded inputs, on shapes that leave partial tiles in
// every dimension. Bounds (METHOD.md): fp32 against fp64 1e-5; bf16 outputs carry one
// rounding (2^-9 relative) on top of fp32 sums, so 1e-2; fp32 weight gradients of bf16
// inputs differ from the CPU's only by summation order, 2e-3 as for the other CUDA ops.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"
#include "cuda_parity.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace sigma {
namespace {

using test::cpu_view;
using test::random_vector;
using test::rel_error;

// One grouped problem: counts per expert, inputs, and an output gradient.
struct Grouped {
  int64_t experts, in, out, rows;
  std::vector<int32_t> counts;
  std::vector<float> x, w, dy;
  Grouped(std::vector<int32_t> tokens_per_expert, int64_t in_features, int64_t out_features,
          uint64_t seed)
      : experts(int64_t(tokens_per_expert.size())), in(in_features), out(out_features),
        rows(std::accumulate(tokens_per_expert.begin(), tokens_per_expert.end(), int64_t(0))),
        counts(std::move(tokens_per_expert)), x(random_vector(rows * in, seed)),
        w(random_vector(experts * out * in, seed + 1, 0.1)),
        dy(random_vector(rows * out, seed + 2)) {}
  int64_t expert_of(int64_t row) const {
    int64_t e = 0, end = counts[0];
    while (row >= end) end += counts[size_t(++e)];
    return e;
  }
};

// CPU results of both passes; d_weight starts at 0.5 everywhere (backward adds to it).
struct Results {
  std::vector<float> y, dx, dw;
};

Results cpu_grouped(Grouped& g) {
  Results r{std::vector<float>(size_t(g.rows * g.out)), std::vector<float>(size_t(g.rows * g.in)),
            std::vector<float>(size_t(g.experts * g.out * g.in), 0.5f)};
  Tensor tpe = cpu_view(g.counts, {g.experts});
  ops::grouped_matmul_forward(cpu_view(r.y, {g.rows, g.out}), cpu_view(g.x, {g.rows, g.in}),
                              cpu_view(g.w, {g.experts, g.out, g.in}), tpe);
  ops::grouped_matmul_backward(cpu_view(r.dx, {g.rows, g.in}),
                               cpu_view(r.dw, {g.experts, g.out, g.in}),
                               cpu_view(g.dy, {g.rows, g.out}), cpu_view(g.x, {g.rows, g.in}),
                               cpu_view(g.w, {g.experts, g.out, g.in}), tpe);
  return r;
}

// Relative error of each expert's rows (of a [rows, cols] output), to locate a failure.
void report_by_expert(const char* what, const Grouped& g, const std::vector<float>& got,
                      const std::vector<float>& want, int64_t cols) {
  int64_t begin = 0;
  for (int64_t e = 0; e < g.experts; ++e) {
    int64_t end = begin + g.counts[size_t(e)];
    std::vector<float> a(got.begin() + begin * cols, got.begin() + end * cols);
    std::vector<float> b(want.begin() + begin * cols, want.begin() + end * cols);
    if (end > begin) MESSAGE(what << " expert " << e << " rows " << begin << ".." << end
                                  << " rel error " << rel_error(a, b));
    begin = end;
  }
}

}  // namespace

TEST_CASE("grouped matmul: the CPU reference matches naive per-expert sums, empty experts too") {
  Grouped g({0, 3, 0, 5, 1, 0}, 12, 10, 21);
  Results r = cpu_grouped(g);
  std::vector<float> y(r.y.size()), dx(r.dx.size()), dw(r.dw.size(), 0.5f);
  for (int64_t n = 0; n < g.rows; ++n) {
    int64_t e = g.expert_of(n);
    const float* w = g.w.data() + e * g.out * g.in;
    for (int64_t o = 0; o < g.out; ++o) {
      double sum = 0;
      for (int64_t i = 0; i < g.in; ++i) sum += double(g.x[size_t(n * g.in + i)]) * w[o * g.in + i];
      y[size_t(n * g.out + o)] = float(sum);
    }
    for (int64_t i = 0; i < g.in; ++i) {
      double sum = 0;
      for (int64_t o = 0; o < g.out; ++o) sum += double(g.dy[size_t(n * g.out + o)]) * w[o * g.in + i];
      dx[size_t(n * g.in + i)] = float(sum);
    }
  }
  for (int64_t e = 0, begin = 0; e < g.experts; begin += g.counts[size_t(e)], ++e)
    for (int64_t o = 0; o < g.out; ++o)
      for (int64_t i = 0; i < g.in; ++i) {
        double sum = 0.5;
        for (int64_t n = begin; n < begin + g.counts[size_t(e)]; ++n)
          sum += double(g.dy[size_t(n * g.out + o)]) * g.x[size_t(n * g.in + i)];
        dw[size_t((e * g.out + o) * g.in + i)] = float(sum);
      }
  CHECK(rel_error(r.y, y) < 1e-5);
  CHECK(rel_error(r.dx, dx) < 1e-5);
  CHECK(rel_error(r.dw, dw) < 1e-5);
  for (int64_t e : {0, 2, 5})  // no rows: the gradient is left exactly as it was
    for (int64_t k = 0; k < g.out * g.in; ++k) REQUIRE(r.dw[size_t(e * g.out * g.in + k)] == 0.5f);

  // Without d_inp the weight gradient is the same.
  std::vector<float> dw_only(r.dw.size(), 0.5f);
  ops::grouped_matmul_backward(Tensor{}, cpu_view(dw_only, {g.experts, g.out, g.in}),
                               cpu_view(g.dy, {g.rows, g.out}), cpu_view(g.x, {g.rows, g.in}),
                               cpu_view(g.w, {g.experts, g.out, g.in}),
                               cpu_view(g.counts, {g.experts}));
  CHECK(dw_only == r.dw);

  // Overwritten: what the gradient held (NaN here) is gone; experts with rows get the same
  // sums as when added to zero, empty experts zero.
  std::vector<float> from_zero(r.dw.size(), 0.0f), overwritten(r.dw.size(), NAN);
  for (std::vector<float>* dw_v : {&from_zero, &overwritten})
    ops::grouped_matmul_backward(Tensor{}, cpu_view(*dw_v, {g.experts, g.out, g.in}),
                                 cpu_view(g.dy, {g.rows, g.out}), cpu_view(g.x, {g.rows, g.in}),
                                 cpu_view(g.w, {g.experts, g.out, g.in}),
                                 cpu_view(g.counts, {g.experts}),
                                 dw_v == &from_zero ? ops::GradWrite::kAccumulate
                                                    : ops::GradWrite::kOverwrite);
  CHECK(overwritten == from_zero);
}

TEST_CASE("grouped matmul: CUDA matches the CPU, with empty experts and partial tiles") {
  SIGMA_REQUIRE_GPU();
  struct Case {
    std::vector<int32_t> counts;
    int64_t in, out;
  };
  // Partial tiles in rows (130 = 128 + 2), columns (264 = 256 + 8) and K (200 = 3 x 64 + 8);
  // a one-row expert; tensors smaller than one tile; then more tiles than SMs, so each CTA
  // walks several.
  std::vector<Case> cases = {{{0, 130, 1, 0, 77}, 200, 264},
                             {{0, 5, 0, 3}, 64, 72},
                             {{300, 0, 517, 64, 128, 1, 700, 290, 0, 1000, 33, 96}, 1536, 1536}};
  for (Case& c : cases) {
    Grouped g(c.counts, c.in, c.out, 40 + uint64_t(c.in));
    g.x = test::rounded(g.x, DType::kBF16);
    g.w = test::rounded(g.w, DType::kBF16);
    g.dy = test::rounded(g.dy, DType::kBF16);
    Results want = cpu_grouped(g);

    auto x = test::to_device(g.x, {g.rows, g.in}, DType::kBF16);
    auto w = test::to_device(g.w, {g.experts, g.out, g.in}, DType::kBF16);
    auto dy = test::to_device(g.dy, {g.rows, g.out}, DType::kBF16);
    auto tpe = test::to_device_i32(g.counts, {g.experts});
    std::vector<float> half(size_t(g.experts * g.out * g.in), 0.5f);
    auto y = test::poisoned({g.rows, g.out}, DType::kBF16);
    auto dx = test::poisoned({g.rows, g.in}, DType::kBF16);
    auto dw = test::to_device(half, {g.experts, g.out, g.in}, DType::kF32);
    ops::grouped_matmul_forward(y, x, w, tpe);
    ops::grouped_matmul_backward(dx, dw, dy, x, w, tpe);
    Results got{test::to_host(y), test::to_host(dx), test::to_host(dw)};

    double err_y = rel_error(got.y, want.y), err_dx = rel_error(got.dx, want.dx),
           err_dw = rel_error(got.dw, want.dw);
    MESSAGE("experts " << g.experts << ", " << g.rows << " rows, " << g.in << " -> " << g.out
                       << ": rel error out " << err_y << ", d_inp " << err_dx << ", d_weight "
                       << err_dw);
    CHECK(err_y < 1e-2);
    CHECK(err_dx < 1e-2);
    CHECK(err_dw < 2e-3);
    if (err_y >= 1e-2) report_by_expert("out", g, got.y, want.y, g.out);
    if (err_dx >= 1e-2) report_by_expert("d_inp", g, got.dx, want.dx, g.in);
    for (int64_t e = 0; e < g.experts; ++e) {
      if (g.counts[size_t(e)] != 0) continue;
      bool untouched = true;
      for (int64_t k = 0; k < g.out * g.in; ++k)
        untouched = untouched && got.dw[size_t(e * g.out * g.in + k)] == 0.5f;
      CHECK_MESSAGE(untouched, "the weight gradient of empty expert " << e << " changed");
    }

    // Deterministic: the same inputs give the same bits, d_inp skipped or not.
    auto dw_again = test::to_device(half, {g.experts, g.out, g.in}, DType::kF32);
    ops::grouped_matmul_forward(y, x, w, tpe);
    ops::grouped_matmul_backward(Tensor{}, dw_again, dy, x, w, tpe);
    CHECK(test::to_host(y) == got.y);
    CHECK(test::to_host(dw_again) == got.dw);

    // Overwriting a poisoned gradient gives the same sums minus the 0.5 they were added to,
    // and zeros for the empty experts, every element written.
    auto dw_over = test::poisoned({g.experts, g.out, g.in}, DType::kF32);
    ops::grouped_matmul_backward(Tensor{}, dw_over, dy, x, w, tpe, ops::GradWrite::kOverwrite);
    std::vector<float> over = test::to_host(dw_over), want_over = want.dw;
    for (float& v : want_over) v -= 0.5f;
    double err_over = rel_error(over, want_over);
    MESSAGE("d_weight overwritten: rel error " << err_over);
    CHECK(err_over < 2e-3);
    for (int64_t e = 0; e < g.experts; ++e) {
      if (g.counts[size_t(e)] != 0) continue;
      bool zero = true;
      for (int64_t k = 0; k < g.out * g.in; ++k) zero = zero && over[size_t(e * g.out * g.in + k)] == 0.0f;
      CHECK_MESSAGE(zero, "the overwritten weight gradient of empty expert " << e << " is not zero");
    }
  }
}

}  // namespace sigma
