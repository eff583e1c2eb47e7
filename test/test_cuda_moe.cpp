// Parity of the MoE CUDA ops (kernels/cuda/moe_router.cu, moe_permute.cu) with their CPU
// twins on fresh random inputs, and permute / unpermute against their inverses.
//
// Bounds: the router is fp32 with double row sums on both sides, so its outputs differ only
// by the order of a few double additions: 1e-6. The top-k choice, the routing map and the
// counts must be identical (exact): training is bit-reproducible only if they are. Token
// rows: copies are exact; fp32 rows sum in the CPU's order, so they are exact too; bf16 rows
// carry one rounding of an fp32 result (2^-9 relative), so 1e-2 as in test_cuda_ops.cpp;
// dot products (d_probs) accumulate in fp32 on CUDA, double on the CPU: 1e-5.
// Outputs are poisoned (NaN, or -1 for indices) first, so an unwritten element fails.
#include "core/random.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"
#include "cuda_parity.h"

#include <doctest/doctest.h>

#include <algorithm>
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
using test::to_host_i32;

constexpr double kRouter = 1e-6, kBf16Out = 1e-2, kDot = 1e-5;

// Routing of n tokens to k of e experts, skewed (expert 0 busy, the last one never chosen)
// so that groups have very different sizes.
std::vector<int32_t> random_routing(int64_t n, int64_t k, int64_t e, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> experts;
  for (int64_t t = 0; t < n; ++t) {
    std::vector<int32_t> row;
    while (int64_t(row.size()) < k) {
      int32_t x = rng.below(4) == 0 ? 0 : int32_t(rng.below(uint64_t(e - 1)));
      if (std::find(row.begin(), row.end(), x) == row.end()) row.push_back(x);
    }
    experts.insert(experts.end(), row.begin(), row.end());
  }
  return experts;
}

}  // namespace

TEST_CASE("cuda moe: fused scores + top-k match the CPU, the top-k exactly") {
  SIGMA_REQUIRE_GPU();
  const int64_t n = 1000, e = 96, k = 8;
  auto bias = random_vector(e, 2, 0.01);
  for (auto fn : {ops::ScoreFunction::kSoftmax, ops::ScoreFunction::kSigmoid}) {
    for (bool renormalize : {false, true}) {
      for (bool with_bias : {false, true}) {
        auto logits = random_vector(n * e, 1, 2.0);
        std::vector<float> scores(size_t(n * e)), probs(size_t(n * k));
        std::vector<int32_t> experts(size_t(n * k));
        Tensor cpu_bias = with_bias ? cpu_view(bias, {e}) : Tensor{};
        cpu::router_scores_topk_forward(cpu_view(scores, {n, e}), cpu_view(probs, {n, k}),
                                        cpu_view(experts, {n, k}), cpu_view(logits, {n, e}),
                                        cpu_bias, fn, renormalize);
        auto gl = to_device(logits, {n, e}, DType::kF32), gb = to_device(bias, {e}, DType::kF32);
        auto gs = poisoned({n, e}, DType::kF32), gp = poisoned({n, k}, DType::kF32);
        auto gx = poisoned({n, k}, DType::kI32);
        Tensor gpu_bias = with_bias ? Tensor(gb) : Tensor{};
        ops::router_scores_topk_forward(gs, gp, gx, gl, gpu_bias, fn, renormalize);
        CHECK(rel_error(to_host(gs), scores) < kRouter);
        CHECK(to_host_i32(gx) == experts);
        CHECK(rel_error(to_host(gp), probs) < kRouter);
        // The fusion against its two ops on the GPU: the same bits.
        auto gs2 = poisoned({n, e}, DType::kF32), gp2 = poisoned({n, k}, DType::kF32);
        auto gx2 = poisoned({n, k}, DType::kI32);
        ops::router_scores_forward(gs2, gl, fn);
        ops::router_topk_forward(gp2, gx2, gs2, gpu_bias, renormalize);
        CHECK(to_host(gs2) == to_host(gs));
        CHECK(to_host(gp2) == to_host(gp));
        CHECK(to_host_i32(gx2) == to_host_i32(gx));
      }
    }
  }
}

TEST_CASE("cuda moe: top-k takes ties to the lower index like the CPU") {
  SIGMA_REQUIRE_GPU();
  // Scores on a coarse grid: every row has many ties; 40 experts puts two columns per lane.
  const int64_t n = 64, e = 40, k = 5;
  Rng rng(3);
  std::vector<float> scores(size_t(n * e)), probs(size_t(n * k));
  for (float& s : scores) s = float(rng.below(4)) * 0.25f;
  std::vector<int32_t> experts(size_t(n * k));
  cpu::router_topk_forward(cpu_view(probs, {n, k}), cpu_view(experts, {n, k}),
                           cpu_view(scores, {n, e}), Tensor{}, false);
  auto gs = to_device(scores, {n, e}, DType::kF32);
  auto gp = poisoned({n, k}, DType::kF32), gx = poisoned({n, k}, DType::kI32);
  ops::router_topk_forward(gp, gx, gs, Tensor{}, false);
  CHECK(to_host_i32(gx) == experts);
  CHECK(to_host(gp) == probs);
}

TEST_CASE("cuda moe: scores and top-k backward match the CPU") {
  SIGMA_REQUIRE_GPU();
  const int64_t n = 500, e = 64, k = 4;
  for (auto fn : {ops::ScoreFunction::kSoftmax, ops::ScoreFunction::kSigmoid}) {
    for (bool renormalize : {false, true}) {
      auto logits = random_vector(n * e, 4, 1.5), d_probs = random_vector(n * k, 5);
      std::vector<float> scores(size_t(n * e)), probs(size_t(n * k));
      std::vector<float> d_scores(size_t(n * e)), d_logits(size_t(n * e));
      std::vector<int32_t> experts(size_t(n * k));
      cpu::router_scores_topk_forward(cpu_view(scores, {n, e}), cpu_view(probs, {n, k}),
                                      cpu_view(experts, {n, k}), cpu_view(logits, {n, e}),
                                      Tensor{}, fn, renormalize);
      cpu::router_topk_backward(cpu_view(d_scores, {n, e}), cpu_view(d_probs, {n, k}),
                                cpu_view(probs, {n, k}), cpu_view(experts, {n, k}),
                                cpu_view(scores, {n, e}), renormalize);
      cpu::router_scores_backward(cpu_view(d_logits, {n, e}), cpu_view(d_scores, {n, e}),
                                  cpu_view(scores, {n, e}), fn);
      // The GPU starts from the CPU's forward, so both differentiate at the same point.
      auto gs = to_device(scores, {n, e}, DType::kF32), gp = to_device(probs, {n, k}, DType::kF32);
      auto gx = test::to_device_i32(experts, {n, k});
      auto gdp = to_device(d_probs, {n, k}, DType::kF32);
      auto gds = poisoned({n, e}, DType::kF32), gdl = poisoned({n, e}, DType::kF32);
      ops::router_topk_backward(gds, gdp, gp, gx, gs, renormalize);
      ops::router_scores_backward(gdl, gds, gs, fn);
      CHECK(rel_error(to_host(gds), d_scores) < kRouter);
      CHECK(rel_error(to_host(gdl), d_logits) < kRouter);
    }
  }
}

TEST_CASE("cuda moe: balancing losses, coefficients and gradients match the CPU") {
  SIGMA_REQUIRE_GPU();
  const int64_t e = 96;
  for (int64_t n : {int64_t(7), int64_t(3000)}) {  // fewer rows than one block; many blocks
    for (double top1 : {0.0, 0.05}) {
      ops::RouterBalanceConfig config{0.01, top1, 0.7, 1e-3};
      auto logits = random_vector(n * e, 6, 2.0);
      std::vector<float> scores(size_t(n * e)), losses(ops::kRouterLosses);
      std::vector<float> coeffs(size_t(2 * e + 2));
      cpu::router_scores_forward(cpu_view(scores, {n, e}), cpu_view(logits, {n, e}),
                                 ops::ScoreFunction::kSoftmax);
      std::vector<int32_t> counts(static_cast<size_t>(e));
      Rng rng(7);
      for (int32_t& c : counts) c = int32_t(rng.below(50));
      counts[3] = 0;
      cpu::router_balance_forward(cpu_view(losses, {ops::kRouterLosses}),
                                  cpu_view(coeffs, {2 * e + 2}), cpu_view(logits, {n, e}),
                                  cpu_view(scores, {n, e}), cpu_view(counts, {e}), config);
      auto d_scores = random_vector(n * e, 8), d_logits = random_vector(n * e, 9);
      auto d_scores_init = d_scores, d_logits_init = d_logits;  // the ops add onto these
      const float aux_scale = 3.0f;
      cpu::router_balance_backward_scores(cpu_view(d_scores, {n, e}), cpu_view(scores, {n, e}),
                                          cpu_view(coeffs, {2 * e + 2}), aux_scale);
      cpu::router_balance_backward_logits(cpu_view(d_logits, {n, e}), cpu_view(logits, {n, e}),
                                          cpu_view(coeffs, {2 * e + 2}), config, aux_scale);

      auto gl = to_device(logits, {n, e}, DType::kF32), gs = to_device(scores, {n, e}, DType::kF32);
      auto gc = test::to_device_i32(counts, {e});
      auto glosses = poisoned({ops::kRouterLosses}, DType::kF32);
      auto gcoeffs = poisoned({2 * e + 2}, DType::kF32);
      ops::router_balance_forward(glosses, gcoeffs, gl, gs, gc, config);
      std::vector<float> got = to_host(glosses);
      for (int i = 0; i < ops::kRouterLosses; ++i) {
        INFO("loss ", i, " cuda ", got[size_t(i)], " cpu ", losses[size_t(i)]);
        double want = losses[size_t(i)];
        CHECK(std::fabs(got[size_t(i)] - want) <= kRouter * std::fabs(want));
      }
      CHECK(rel_error(to_host(gcoeffs), coeffs) < kRouter);
      // The backward ops read the CPU's coefficients, so they are checked on their own.
      auto gcc = to_device(coeffs, {2 * e + 2}, DType::kF32);
      auto gds = to_device(d_scores_init, {n, e}, DType::kF32);
      auto gdl = to_device(d_logits_init, {n, e}, DType::kF32);
      ops::router_balance_backward_scores(gds, gs, gcc, aux_scale);
      ops::router_balance_backward_logits(gdl, gl, gcc, config, aux_scale);
      CHECK(rel_error(to_host(gds), d_scores) < kRouter);
      CHECK(rel_error(to_host(gdl), d_logits) < kRouter);
      // Deterministic: a second run gives the same bits.
      ops::router_balance_forward(glosses, gcoeffs, gl, gs, gc, config);
      CHECK(to_host(glosses) == got);
    }
  }
}

TEST_CASE("cuda moe: the routing map is identical to the CPU's, counts and bias update too") {
  SIGMA_REQUIRE_GPU();
  struct Case {
    int64_t n, k, e;
  };
  // One token; the bench shape (top-1 of 96); top-8 (more assignments than the block's
  // warps cover in one pass); 600 experts (fewer warps, for the shared counters).
  for (Case c : {Case{1, 1, 4}, Case{16384, 1, 96}, Case{16384, 8, 96}, Case{3000, 3, 600}}) {
    INFO("n ", c.n, " k ", c.k, " e ", c.e);
    std::vector<int32_t> experts = random_routing(c.n, c.k, c.e, uint64_t(c.n + c.e));
    std::vector<int32_t> row_of(size_t(c.n * c.k)), counts(size_t(c.e));
    cpu::moe_routing_map(cpu_view(row_of, {c.n, c.k}), cpu_view(counts, {c.e}),
                         cpu_view(experts, {c.n, c.k}));
    auto gx = test::to_device_i32(experts, {c.n, c.k});
    auto grow = poisoned({c.n, c.k}, DType::kI32), gcounts = poisoned({c.e}, DType::kI32);
    ops::moe_routing_map(grow, gcounts, gx);
    CHECK(to_host_i32(grow) == row_of);
    CHECK(to_host_i32(gcounts) == counts);

    std::vector<int32_t> total(size_t(c.e), 5);
    auto gtotal = test::to_device_i32(total, {c.e});
    ops::moe_counts_accumulate(gtotal, gcounts);
    cpu::moe_counts_accumulate(cpu_view(total, {c.e}), cpu_view(counts, {c.e}));
    CHECK(to_host_i32(gtotal) == total);
    auto bias = random_vector(c.e, 10, 0.01);
    auto gbias = to_device(bias, {c.e}, DType::kF32);
    ops::router_bias_update(gbias, gtotal, 1e-3f);
    cpu::router_bias_update(cpu_view(bias, {c.e}), cpu_view(total, {c.e}), 1e-3f);
    CHECK(to_host(gbias) == bias);
  }
}

TEST_CASE("cuda moe: permute and unpermute match the CPU in bf16 and fp32, forward and backward") {
  SIGMA_REQUIRE_GPU();
  const int64_t n = 300, k = 4, e = 16;
  std::vector<int32_t> experts = random_routing(n, k, e, 11);
  std::vector<int32_t> row_of(size_t(n * k)), counts(static_cast<size_t>(e));
  cpu::moe_routing_map(cpu_view(row_of, {n, k}), cpu_view(counts, {e}),
                       cpu_view(experts, {n, k}));
  auto grow = test::to_device_i32(row_of, {n, k});
  auto probs = random_vector(n * k, 12);
  auto gprobs = to_device(probs, {n, k}, DType::kF32);
  // d = 1536 takes 16-byte packs; 37 the one-element path.
  for (int64_t d : {int64_t(1536), int64_t(37)}) {
    for (DType dtype : {DType::kBF16, DType::kF32}) {
      INFO("d ", d, " ", dtype_name(dtype));
      const int64_t r = n * k;
      auto x = rounded(random_vector(n * d, 13), dtype);
      auto y = rounded(random_vector(r * d, 14), dtype);
      auto d_out = rounded(random_vector(n * d, 15), dtype);
      auto d_perm = rounded(random_vector(r * d, 16), dtype);
      std::vector<float> perm(size_t(r * d)), out(size_t(n * d)), d_x(size_t(n * d));
      std::vector<float> d_y(size_t(r * d)), d_probs(size_t(n * k));
      cpu::moe_permute_forward(cpu_view(perm, {r, d}), cpu_view(x, {n, d}),
                               cpu_view(row_of, {n, k}));
      cpu::moe_permute_backward(cpu_view(d_x, {n, d}), cpu_view(d_perm, {r, d}),
                                cpu_view(row_of, {n, k}));
      cpu::moe_unpermute_forward(cpu_view(out, {n, d}), cpu_view(y, {r, d}),
                                 cpu_view(row_of, {n, k}), cpu_view(probs, {n, k}));
      cpu::moe_unpermute_backward(cpu_view(d_y, {r, d}), cpu_view(d_probs, {n, k}),
                                  cpu_view(d_out, {n, d}), cpu_view(y, {r, d}),
                                  cpu_view(row_of, {n, k}), cpu_view(probs, {n, k}));
      auto gx = to_device(x, {n, d}, dtype), gy = to_device(y, {r, d}, dtype);
      auto gd_out = to_device(d_out, {n, d}, dtype), gd_perm = to_device(d_perm, {r, d}, dtype);
      auto gperm = poisoned({r, d}, dtype), gout = poisoned({n, d}, dtype);
      auto gd_x = poisoned({n, d}, dtype), gd_y = poisoned({r, d}, dtype);
      auto gd_probs = poisoned({n, k}, DType::kF32);
      ops::moe_permute_forward(gperm, gx, grow);
      ops::moe_permute_backward(gd_x, gd_perm, grow);
      ops::moe_unpermute_forward(gout, gy, grow, gprobs);
      ops::moe_unpermute_backward(gd_y, gd_probs, gd_out, gy, grow, gprobs);
      CHECK(to_host(gperm) == perm);  // a copy
      if (dtype == DType::kF32) {    // the CPU's order of operations: its bits
        CHECK(to_host(gd_x) == d_x);
        CHECK(to_host(gout) == out);
        CHECK(to_host(gd_y) == d_y);
      } else {
        CHECK(rel_error(to_host(gd_x), d_x) < kBf16Out);
        CHECK(rel_error(to_host(gout), out) < kBf16Out);
        CHECK(rel_error(to_host(gd_y), d_y) < kBf16Out);
      }
      CHECK(rel_error(to_host(gd_probs), d_probs) < kDot);
    }
  }
}

TEST_CASE("cuda moe: unpermute(permute(x)) == x and the gradients' round trip, in bf16") {
  SIGMA_REQUIRE_GPU();
  const int64_t n = 513, k = 4, e = 12, d = 1536, r = n * k;
  std::vector<int32_t> experts = random_routing(n, k, e, 17);
  auto gx_experts = test::to_device_i32(experts, {n, k});
  auto grow = poisoned({n, k}, DType::kI32), gcounts = poisoned({e}, DType::kI32);
  ops::moe_routing_map(grow, gcounts, gx_experts);
  auto x = rounded(random_vector(n * d, 18), DType::kBF16);
  auto gx = to_device(x, {n, d}, DType::kBF16);
  auto gperm = poisoned({r, d}, DType::kBF16), gback = poisoned({n, d}, DType::kBF16);
  // k copies weighted 1/k each sum to x exactly (powers of two), before and after rounding.
  auto quarter = to_device(std::vector<float>(size_t(r), 0.25f), {n, k}, DType::kF32);
  ops::moe_permute_forward(gperm, gx, grow);
  ops::moe_unpermute_forward(gback, gperm, grow, quarter);
  CHECK(to_host(gback) == x);
  // Backward: d_y = d_out / k at each copy, and summing the copies gives d_out back.
  auto gd_y = poisoned({r, d}, DType::kBF16), gd_x = poisoned({n, d}, DType::kBF16);
  auto gd_probs = poisoned({n, k}, DType::kF32);
  ops::moe_unpermute_backward(gd_y, gd_probs, gx, gperm, grow, quarter);
  ops::moe_permute_backward(gd_x, gd_y, grow);
  CHECK(to_host(gd_x) == x);
  // d_probs[n, k] = <x_n, x_n> for every copy.
  std::vector<float> norms = to_host(gd_probs);
  for (int64_t t = 0; t < n; t += 97) {
    double sq = 0;
    for (int64_t c = 0; c < d; ++c) sq += double(x[size_t(t * d + c)]) * x[size_t(t * d + c)];
    CHECK(std::fabs(norms[size_t(t * k)] - sq) <= kDot * sq);
  }
}

}  // namespace sigma
