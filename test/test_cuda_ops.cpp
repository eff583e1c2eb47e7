// Parity of the CUDA ops with their CPU twins (kernels/cuda vs kernels/cpu), forward and
// backward, on fresh random inputs. Inputs are rounded to bf16 first, so both backends see
// the same values; the bound on ||cuda - cpu|| / ||cpu|| is METHOD.md's for the precision:
// bf16 outputs carry one rounding (2^-9 relative, ~2e-3) plus fp32 accumulation, so 1e-2;
// fp32 outputs of bf16 inputs (gradients, statistics) 2e-3; pure fp32 paths 1e-5.
// Outputs are poisoned (NaN) first, so an element the kernel never writes fails the test.
#include "core/random.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/device.h"
#include "kernels/ops.h"
#include "cuda_parity.h"

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

namespace sigma {
namespace {

using test::cpu_view;
using test::poisoned;
using test::random_vector;
using test::rel_error;
using test::rounded;
using test::to_device;
using test::to_host;

constexpr double kBf16Out = 1e-2, kF32OutOfBf16 = 2e-3, kF32 = 1e-5;

// Both gradients with the same GradWrite: += onto 0.5 (d_weight) and onto rounded random values
// (d_inp), or = over NaN.
TEST_CASE("cuda ops: matmul forward and backward match the CPU in bf16 and fp32") {
  SIGMA_REQUIRE_GPU();
  for (ops::GradWrite write : {ops::GradWrite::kAccumulate, ops::GradWrite::kOverwrite})
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    const int64_t n = 77, in = 96, out = 40;
    const bool accumulate = write == ops::GradWrite::kAccumulate;
    auto x = rounded(random_vector(n * in, 1), dtype), w = rounded(random_vector(out * in, 2, 0.1), dtype);
    auto dy = rounded(random_vector(n * out, 3), dtype);
    std::vector<float> y(size_t(n * out)), dw(size_t(out * in), 0.5f);
    std::vector<float> dx = accumulate ? rounded(random_vector(n * in, 7), dtype)
                                       : std::vector<float>(size_t(n * in));
    auto dw_init = dw, dx_init = dx;
    cpu::matmul_forward(cpu_view(y, {n, out}), cpu_view(x, {n, in}), cpu_view(w, {out, in}));
    cpu::matmul_backward(cpu_view(dx, {n, in}), cpu_view(dw, {out, in}), cpu_view(dy, {n, out}),
                         cpu_view(x, {n, in}), cpu_view(w, {out, in}), write, write);
    auto gx = to_device(x, {n, in}, dtype), gw = to_device(w, {out, in}, dtype);
    auto gdy = to_device(dy, {n, out}, dtype);
    auto gy = poisoned({n, out}, dtype);
    auto gdx = accumulate ? to_device(dx_init, {n, in}, dtype) : poisoned({n, in}, dtype);
    auto gdw = accumulate ? to_device(dw_init, {out, in}, DType::kF32)
                          : poisoned({out, in}, DType::kF32);
    ops::matmul_forward(gy, gx, gw);
    ops::matmul_backward(gdx, gdw, gdy, gx, gw, write, write);
    double bound = dtype == DType::kF32 ? kF32 : kBf16Out;
    CHECK(rel_error(to_host(gy), y) < bound);
    CHECK(rel_error(to_host(gdx), dx) < bound);
    CHECK(rel_error(to_host(gdw), dw) < (dtype == DType::kF32 ? kF32 : kF32OutOfBf16));
  }
}

TEST_CASE("cuda ops: bf16 matmul writes an fp32 output (the router logits)") {
  SIGMA_REQUIRE_GPU();
  const int64_t n = 64, in = 128, out = 8;
  auto x = rounded(random_vector(n * in, 4), DType::kBF16);
  auto w = rounded(random_vector(out * in, 5, 0.1), DType::kBF16);
  std::vector<float> y(size_t(n * out));
  cpu::matmul_forward(cpu_view(y, {n, out}), cpu_view(x, {n, in}), cpu_view(w, {out, in}));
  auto gx = to_device(x, {n, in}, DType::kBF16), gw = to_device(w, {out, in}, DType::kBF16);
  auto gy = poisoned({n, out}, DType::kF32);
  ops::matmul_forward(gy, gx, gw);
  CHECK(rel_error(to_host(gy), y) < kF32OutOfBf16);
}

TEST_CASE("cuda ops: embedding forward and deterministic backward match the CPU") {
  SIGMA_REQUIRE_GPU();
  const int64_t n = 300, vocab = 50, d = 72;
  Rng rng(6);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (int32_t& t : tokens) t = int32_t(rng.below(vocab));
  auto w = rounded(random_vector(vocab * d, 7), DType::kBF16);
  auto dy = rounded(random_vector(n * d, 8), DType::kBF16);
  std::vector<float> y(size_t(n * d)), dw(size_t(vocab * d), 0.25f);
  auto dw_init = dw;
  cpu::embedding_forward(cpu_view(y, {n, d}), cpu_view(tokens, {n}), cpu_view(w, {vocab, d}));
  cpu::embedding_backward(cpu_view(dw, {vocab, d}), cpu_view(dy, {n, d}), cpu_view(tokens, {n}));
  auto gt = test::to_device_i32(tokens, {n});
  auto gw = to_device(w, {vocab, d}, DType::kBF16), gdy = to_device(dy, {n, d}, DType::kBF16);
  auto gy = poisoned({n, d}, DType::kBF16);
  ops::embedding_forward(gy, gt, gw);
  CHECK(rel_error(to_host(gy), y) == 0.0);  // a copy: exact
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    auto gdw = to_device(dw_init, {vocab, d}, DType::kF32);
    ops::embedding_backward(gdw, gdy, gt);
    std::vector<float> out = to_host(gdw);
    CHECK(rel_error(out, dw) < kF32);
    if (run == 0) first = out;
    else CHECK(out == first);  // no atomics: the same bits every run
  }
}

TEST_CASE("cuda ops: rmsnorm forward and backward match the CPU") {
  SIGMA_REQUIRE_GPU();
  for (int64_t c : {64, 1536, 2048}) {
    const int64_t rows = 37;
    auto x = rounded(random_vector(rows * c, 9), DType::kBF16);
    auto w = rounded(random_vector(c, 10, 0.5), DType::kBF16);
    for (float& v : w) v += 1.0f;
    w = rounded(w, DType::kBF16);
    auto dy = rounded(random_vector(rows * c, 11), DType::kBF16);
    std::vector<float> y(size_t(rows * c)), rstd(static_cast<size_t>(rows)), dx(size_t(rows * c)), dw(size_t(c), 0.1f);
    auto dw_init = dw;
    cpu::rmsnorm_forward(cpu_view(y, {rows, c}), cpu_view(rstd, {rows}), cpu_view(x, {rows, c}),
                         cpu_view(w, {c}), 1e-6f);
    cpu::rmsnorm_backward(cpu_view(dx, {rows, c}), cpu_view(dw, {c}), cpu_view(dy, {rows, c}),
                          cpu_view(x, {rows, c}), cpu_view(w, {c}), cpu_view(rstd, {rows}),
                          ops::GradWrite::kOverwrite);
    auto gx = to_device(x, {rows, c}, DType::kBF16), gw = to_device(w, {c}, DType::kBF16);
    auto gdy = to_device(dy, {rows, c}, DType::kBF16);
    auto gy = poisoned({rows, c}, DType::kBF16), grstd = poisoned({rows}, DType::kF32);
    auto gdx = poisoned({rows, c}, DType::kBF16);
    auto gdw = to_device(dw_init, {c}, DType::kF32);
    ops::rmsnorm_forward(gy, grstd, gx, gw, 1e-6f);
    ops::rmsnorm_backward(gdx, gdw, gdy, gx, gw, grstd);
    CHECK(rel_error(to_host(gy), y) < kBf16Out);
    CHECK(rel_error(to_host(grstd), rstd) < kF32OutOfBf16);
    CHECK(rel_error(to_host(gdx), dx) < kBf16Out);
    CHECK(rel_error(to_host(gdw), dw) < kF32OutOfBf16);
  }
}

TEST_CASE("cuda ops: rmsnorm with the residual add in front, and accumulating into d_inp") {
  SIGMA_REQUIRE_GPU();
  for (int64_t c : {64, 100, 2048}) {  // 100: the one-element path
    CAPTURE(c);
    const int64_t rows = 37;
    auto a = rounded(random_vector(rows * c, 30), DType::kBF16);
    auto b = rounded(random_vector(rows * c, 31), DType::kBF16);
    auto w = rounded(random_vector(c, 32, 0.5), DType::kBF16);
    auto dy = rounded(random_vector(rows * c, 33), DType::kBF16);
    auto dx0 = rounded(random_vector(rows * c, 34), DType::kBF16);  // the residual's gradient so far
    std::vector<float> sum(size_t(rows * c)), y(sum.size()), rstd(static_cast<size_t>(rows)), dx = dx0,
        dw(size_t(c), 0.0f);
    cpu::add_rmsnorm_forward(cpu_view(sum, {rows, c}), cpu_view(y, {rows, c}),
                             cpu_view(rstd, {rows}), cpu_view(a, {rows, c}),
                             cpu_view(b, {rows, c}), cpu_view(w, {c}), 1e-6f);
    cpu::rmsnorm_backward(cpu_view(dx, {rows, c}), cpu_view(dw, {c}), cpu_view(dy, {rows, c}),
                          cpu_view(sum, {rows, c}), cpu_view(w, {c}), cpu_view(rstd, {rows}),
                          ops::GradWrite::kAccumulate);
    auto ga = to_device(a, {rows, c}, DType::kBF16), gb = to_device(b, {rows, c}, DType::kBF16);
    auto gw = to_device(w, {c}, DType::kBF16), gdy = to_device(dy, {rows, c}, DType::kBF16);
    auto gy = poisoned({rows, c}, DType::kBF16), grstd = poisoned({rows}, DType::kF32);
    auto gdx = to_device(dx0, {rows, c}, DType::kBF16);
    auto gdw = to_device(std::vector<float>(static_cast<size_t>(c), 0.0f), {c}, DType::kF32);
    ops::add_rmsnorm_forward(ga, gy, grstd, ga, gb, gw, 1e-6f);  // the sum over a, as the model
    ops::rmsnorm_backward(gdx, gdw, gdy, ga, gw, grstd, ops::GradWrite::kAccumulate);
    CHECK(rel_error(to_host(ga), sum) < kBf16Out);
    CHECK(rel_error(to_host(gy), y) < kBf16Out);
    CHECK(rel_error(to_host(grstd), rstd) < kF32OutOfBf16);
    CHECK(rel_error(to_host(gdx), dx) < kBf16Out);
    CHECK(rel_error(to_host(gdw), dw) < kF32OutOfBf16);
  }
}

TEST_CASE("cuda ops: rope forward and backward match the CPU") {
  SIGMA_REQUIRE_GPU();
  const int64_t b = 2, t = 300, h = 3, d = 64, n = b * t;
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = int32_t(i % t);
  auto x = rounded(random_vector(n * h * d, 12), DType::kBF16);
  std::vector<float> y(x.size()), back(x.size());
  cpu::rope_forward(cpu_view(y, {b, t, h, d}), cpu_view(x, {b, t, h, d}), cpu_view(pos, {n}), 1e4f);
  cpu::rope_backward(cpu_view(back, {b, t, h, d}), cpu_view(x, {b, t, h, d}), cpu_view(pos, {n}), 1e4f);
  auto gx = to_device(x, {b, t, h, d}, DType::kBF16);
  auto gpos = test::to_device_i32(pos, {n});
  auto gy = poisoned({b, t, h, d}, DType::kBF16), gback = poisoned({b, t, h, d}, DType::kBF16);
  ops::rope_forward(gy, gx, gpos, 1e4f);
  ops::rope_backward(gback, gx, gpos, 1e4f);
  CHECK(rel_error(to_host(gy), y) < kBf16Out);
  CHECK(rel_error(to_host(gback), back) < kBf16Out);
}

TEST_CASE("cuda ops: swiglu forward and backward match the CPU") {
  SIGMA_REQUIRE_GPU();
  const int64_t n = 1000;
  auto g = rounded(random_vector(n, 13, 2.0), DType::kBF16), u = rounded(random_vector(n, 14), DType::kBF16);
  auto dy = rounded(random_vector(n, 15), DType::kBF16);
  std::vector<float> y(static_cast<size_t>(n)), dg(static_cast<size_t>(n)), du(static_cast<size_t>(n));
  cpu::swiglu_forward(cpu_view(y, {n}), cpu_view(g, {n}), cpu_view(u, {n}));
  cpu::swiglu_backward(cpu_view(dg, {n}), cpu_view(du, {n}), cpu_view(dy, {n}), cpu_view(g, {n}),
                       cpu_view(u, {n}));
  auto gg = to_device(g, {n}, DType::kBF16), gu = to_device(u, {n}, DType::kBF16);
  auto gdy = to_device(dy, {n}, DType::kBF16);
  auto gy = poisoned({n}, DType::kBF16), gdg = poisoned({n}, DType::kBF16), gdu = poisoned({n}, DType::kBF16);
  ops::swiglu_forward(gy, gg, gu);
  ops::swiglu_backward(gdg, gdu, gdy, gg, gu);
  CHECK(rel_error(to_host(gy), y) < kBf16Out);
  CHECK(rel_error(to_host(gdg), dg) < kBf16Out);
  CHECK(rel_error(to_host(gdu), du) < kBf16Out);
}

TEST_CASE("cuda ops: cross-entropy forward and backward match the CPU, in place too") {
  SIGMA_REQUIRE_GPU();
  const int64_t n = 33, v = 5000;
  auto z = rounded(random_vector(n * v, 16, 3.0), DType::kBF16);
  Rng rng(17);
  std::vector<int32_t> targets(static_cast<size_t>(n));
  for (int32_t& t : targets) t = int32_t(rng.below(v));
  targets[3] = -1;  // ignored row
  std::vector<float> loss(static_cast<size_t>(n)), lse(static_cast<size_t>(n)), dz(z.size());
  cpu::cross_entropy_forward(cpu_view(loss, {n}), cpu_view(lse, {n}), cpu_view(z, {n, v}),
                             cpu_view(targets, {n}));
  cpu::cross_entropy_backward(cpu_view(dz, {n, v}), cpu_view(z, {n, v}), cpu_view(lse, {n}),
                              cpu_view(targets, {n}), 0.5f);
  auto gt = test::to_device_i32(targets, {n});
  for (DType dtype : {DType::kBF16, DType::kF32}) {  // bf16 in place; fp32 logits -> bf16, as the model
    CAPTURE(dtype_name(dtype));
    auto gz = to_device(z, {n, v}, dtype);
    auto gloss = poisoned({n}, DType::kF32), glse = poisoned({n}, DType::kF32);
    ops::cross_entropy_forward(gloss, glse, gz, gt);
    CHECK(rel_error(to_host(gloss), loss) < 1e-4);
    CHECK(rel_error(to_host(glse), lse) < 1e-5);
    auto separate = poisoned({n, v}, DType::kBF16);
    Tensor gdz = dtype == DType::kBF16 ? gz.tensor : separate.tensor;
    ops::cross_entropy_backward(gdz, gz, glse, gt, 0.5f);
    CHECK(rel_error(to_host(gdz), dz) < kBf16Out);
  }
}

TEST_CASE("cuda ops: add, scale, convert, sum and sum_squares match the CPU") {
  SIGMA_REQUIRE_GPU();
  const int64_t n = 100003;
  auto a = random_vector(n, 18), b = random_vector(n, 19);
  std::vector<float> c(static_cast<size_t>(n));
  cpu::add(cpu_view(c, {n}), cpu_view(a, {n}), cpu_view(b, {n}));
  cpu::scale(cpu_view(c, {n}), 0.75f);
  auto ga = to_device(a, {n}, DType::kF32), gb = to_device(b, {n}, DType::kF32);
  auto gc = poisoned({n}, DType::kF32);
  ops::add(gc, ga, gb);
  ops::scale(gc, 0.75f);
  CHECK(rel_error(to_host(gc), c) < kF32);
  CHECK(ops::sum(gc) == doctest::Approx(cpu::sum(cpu_view(c, {n}))).epsilon(1e-9));
  CHECK(ops::sum_squares(gc) == doctest::Approx(cpu::sum_squares(cpu_view(c, {n}))).epsilon(1e-9));
  auto half = poisoned({n}, DType::kBF16);
  ops::convert(half, gc);
  CHECK(to_host(half) == rounded(c, DType::kBF16));  // round to nearest even, like the host
}

TEST_CASE("cuda ops: adamw matches the CPU update to fp32 rounding and writes the bf16 copy") {
  SIGMA_REQUIRE_GPU();
  const int64_t n = 4099;
  auto p = random_vector(n, 20), g = random_vector(n, 21), m = random_vector(n, 22, 0.1);
  auto v = random_vector(n, 23, 0.1);
  for (float& x : v) x = x * x;
  auto gp = to_device(p, {n}, DType::kF32), gg = to_device(g, {n}, DType::kF32);
  auto gm = to_device(m, {n}, DType::kF32), gv = to_device(v, {n}, DType::kF32);
  auto gweight = poisoned({n}, DType::kBF16);
  for (int64_t step = 1; step <= 3; ++step) {
    ops::AdamWStep s{1e-3, 0.9, 0.95, 1e-8, 0.1, step, 0.5};
    cpu::adamw_update(cpu_view(p, {n}), cpu_view(g, {n}), cpu_view(m, {n}), cpu_view(v, {n}), s,
                      Tensor{});
    ops::adamw_update(gp, gg, gm, gv, s, gweight);
  }
  CHECK(rel_error(to_host(gp), p) < 1e-6);
  CHECK(to_host(gweight) == rounded(to_host(gp), DType::kBF16));
  CHECK(rel_error(to_host(gm), m) < 1e-6);
  CHECK(rel_error(to_host(gv), v) < 1e-6);
}

}  // namespace
}  // namespace sigma
