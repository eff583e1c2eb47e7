// The MoE ops of kernels/ops.h against naive versions and finite differences: score
// functions, top-k (ties, bias, renormalisation; fused with the scores), the balancing losses
// and their gradients, the bias update, and permute / unpermute (each other's inverse, and
// their backward passes).
#include "core/random.h"
#include "kernels/ops.h"

#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <vector>

using namespace sigma;

namespace {

// Host tensors that own their memory.
struct Host {
  std::vector<float> f;
  std::vector<int32_t> i;
  Tensor t;
  Host(Shape shape, DType dtype = DType::kF32) {
    t.shape = shape;
    t.dtype = dtype;
    if (dtype == DType::kF32) {
      f.assign(size_t(shape.numel()), 0.0f);
      t.data = f.data();
    } else {
      i.assign(size_t(shape.numel()), 0);
      t.data = i.data();
    }
  }
};

void fill(Host& h, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  for (float& x : h.f) x = float(scale * rng.normal());
}

// Central differences of a scalar function of x at every element, against `analytic`.
void check_fd(std::vector<float>& x, const std::function<double()>& loss,
              const std::vector<float>& analytic, double h = 1e-3, double tol = 2e-3) {
  float g_max = 0;
  for (float g : analytic) g_max = std::max(g_max, std::fabs(g));
  for (size_t i = 0; i < x.size(); ++i) {
    float saved = x[i];
    x[i] = saved + float(h);
    double up = loss();
    x[i] = saved - float(h);
    double down = loss();
    x[i] = saved;
    double numeric = (up - down) / (2 * h);
    INFO("element ", i, " analytic ", analytic[i], " numeric ", numeric);
    CHECK(std::fabs(numeric - analytic[i]) <= tol * g_max + 1e-5);
  }
}

}  // namespace

TEST_CASE("moe ops: top-k picks the largest, ties to the lower index, bias steers only") {
  Host scores({2, 4}), probs({2, 2}), experts({2, 2}, DType::kI32), bias({4});
  scores.f = {0.1f, 0.4f, 0.4f, 0.1f, 0.3f, 0.2f, 0.1f, 0.4f};
  ops::router_topk_forward(probs.t, experts.t, scores.t, Tensor{}, false);
  CHECK(experts.i == std::vector<int32_t>{1, 2, 3, 0});
  CHECK(probs.f == std::vector<float>{0.4f, 0.4f, 0.4f, 0.3f});
  // A bias of +1 on expert 0 makes it win; the weight is still its unbiased score.
  bias.f = {1.0f, 0, 0, 0};
  ops::router_topk_forward(probs.t, experts.t, scores.t, bias.t, true);
  CHECK(experts.i == std::vector<int32_t>{0, 1, 0, 3});
  CHECK(probs.f[0] == doctest::Approx(0.1 / 0.5));
  CHECK(probs.f[1] == doctest::Approx(0.4 / 0.5));
  CHECK(probs.f[2] == doctest::Approx(0.3 / 0.7));
}

TEST_CASE("moe ops: scores and top-k backward match finite differences") {
  const int64_t n = 3, e = 5, k = 2;
  for (auto fn : {ops::ScoreFunction::kSoftmax, ops::ScoreFunction::kSigmoid}) {
    for (bool renormalize : {false, true}) {
      Host logits({n, e}), scores({n, e}), probs({n, k}), experts({n, k}, DType::kI32);
      Host w({n, k}), d_probs({n, k}), d_scores({n, e}), d_logits({n, e});
      fill(logits, 1, 1.5);
      fill(w, 2);
      auto loss = [&] {
        ops::router_scores_forward(scores.t, logits.t, fn);
        ops::router_topk_forward(probs.t, experts.t, scores.t, Tensor{}, renormalize);
        double l = 0;
        for (size_t i = 0; i < probs.f.size(); ++i) l += double(w.f[i]) * probs.f[i];
        return l;
      };
      loss();
      d_probs.f = w.f;
      ops::router_topk_backward(d_scores.t, d_probs.t, probs.t, experts.t, scores.t, renormalize);
      ops::router_scores_backward(d_logits.t, d_scores.t, scores.t, fn);
      check_fd(logits.f, loss, d_logits.f);
    }
  }
}

TEST_CASE("moe ops: balancing losses match naive values, their gradients finite differences") {
  const int64_t n = 4, e = 3;
  ops::RouterBalanceConfig config{0.3, 0.5, 0.5, 0.25};
  Host logits({n, e}), scores({n, e}), counts({e}, DType::kI32), losses({ops::kRouterLosses});
  Host coeffs({2 * e + 2});
  fill(logits, 5);
  counts.i = {5, 0, 3};
  ops::router_scores_forward(scores.t, logits.t, ops::ScoreFunction::kSoftmax);
  ops::router_balance_forward(losses.t, coeffs.t, logits.t, scores.t, counts.t, config);
  // The formulas of models/moe/router.h, term by term, in double.
  double lbl = 0, top1 = 0, z = 0, entropy = 0;
  std::vector<double> fhat(static_cast<size_t>(e), 0.0);
  for (int64_t r = 0; r < n; ++r) {
    double m = 0, se = 0, sq = 0;
    for (int64_t i = 0; i < e; ++i) {
      double s = scores.f[size_t(r * e + i)], l = logits.f[size_t(r * e + i)];
      m = std::max(m, s);
      entropy -= s * std::log(s) / n;
      se += std::exp(l);
      sq += std::exp(l / config.top1_lbl_temperature);
      lbl += e * (counts.i[size_t(i)] / 8.0) * s / n;
    }
    for (int64_t i = 0; i < e; ++i) {
      double l = logits.f[size_t(r * e + i)];
      fhat[size_t(i)] += std::exp(l / config.top1_lbl_temperature) / sq / n;
    }
    top1 += m / n;
    z += std::log(se) * std::log(se) / n;
  }
  double top1_lbl = 0;
  for (double f : fhat) top1_lbl += e * f * f / top1;
  CHECK(losses.f[ops::kLossLbl] == doctest::Approx(lbl));
  CHECK(losses.f[ops::kLossTop1Lbl] == doctest::Approx(top1_lbl));
  CHECK(losses.f[ops::kLossZ] == doctest::Approx(z));
  CHECK(losses.f[ops::kLossEntropy] == doctest::Approx(entropy));
  CHECK(losses.f[ops::kLossAux] == doctest::Approx(0.3 * lbl + 0.5 * top1_lbl + 0.25 * z));

  // aux through the logits (the counts fixed): the two backward ops and the scores' backward
  // must give its gradient, scaled by aux_scale.
  const float aux_scale = 2.0f;
  auto loss = [&] {
    ops::router_scores_forward(scores.t, logits.t, ops::ScoreFunction::kSoftmax);
    ops::router_balance_forward(losses.t, coeffs.t, logits.t, scores.t, counts.t, config);
    return double(aux_scale) * losses.f[ops::kLossAux];
  };
  loss();
  Host d_scores({n, e}), d_logits({n, e});
  ops::router_balance_backward_scores(d_scores.t, scores.t, coeffs.t, aux_scale);
  ops::router_scores_backward(d_logits.t, d_scores.t, scores.t, ops::ScoreFunction::kSoftmax);
  ops::router_balance_backward_logits(d_logits.t, logits.t, coeffs.t, config, aux_scale);
  check_fd(logits.f, loss, d_logits.f, 1e-2);
}

TEST_CASE("moe ops: fused scores + top-k equal the two ops, the bias update follows the loads") {
  const int64_t n = 6, e = 5, k = 2;
  for (auto fn : {ops::ScoreFunction::kSoftmax, ops::ScoreFunction::kSigmoid}) {
    Host logits({n, e}), bias({e}), scores({n, e}), probs({n, k}), experts({n, k}, DType::kI32);
    Host fused_scores({n, e}), fused_probs({n, k}), fused_experts({n, k}, DType::kI32);
    fill(logits, 7);
    fill(bias, 8, 0.1);
    ops::router_scores_forward(scores.t, logits.t, fn);
    ops::router_topk_forward(probs.t, experts.t, scores.t, bias.t, true);
    ops::router_scores_topk_forward(fused_scores.t, fused_probs.t, fused_experts.t, logits.t,
                                    bias.t, fn, true);
    CHECK(fused_scores.f == scores.f);
    CHECK(fused_probs.f == probs.f);
    CHECK(fused_experts.i == experts.i);
  }
  Host bias({4}), counts({4}, DType::kI32), step({4}, DType::kI32);
  counts.i = {1, 2, 3, 2};  // mean 2
  ops::moe_counts_accumulate(step.t, counts.t);
  ops::moe_counts_accumulate(step.t, counts.t);
  CHECK(step.i == std::vector<int32_t>{2, 4, 6, 4});
  ops::router_bias_update(bias.t, step.t, 0.5f);
  CHECK(bias.f == std::vector<float>{0.5f, 0.0f, -0.5f, 0.0f});
}

TEST_CASE("moe ops: the routing map groups by expert, stable, and unpermute(permute(x)) == x") {
  const int64_t n = 5, k = 2, e = 4, d = 3;
  Host experts({n, k}, DType::kI32), row_of({n, k}, DType::kI32), counts({e}, DType::kI32);
  experts.i = {2, 0, 0, 3, 2, 1, 0, 2, 3, 0};
  ops::moe_routing_map(row_of.t, counts.t, experts.t);
  CHECK(counts.i == std::vector<int32_t>{4, 1, 3, 2});
  // Expert 0's rows 0..3 hold tokens 0, 1, 3, 4 in order; expert 2's rows 5..7 tokens 0, 2, 3.
  CHECK(row_of.i == std::vector<int32_t>{5, 0, 1, 8, 6, 4, 2, 7, 9, 3});

  Host x({n, d}), perm({n * k, d}), back({n, d}), ones({n, k});
  fill(x, 9);
  for (float& p : ones.f) p = 0.5f;  // two copies, each weighted 1/2, give x back
  ops::moe_permute_forward(perm.t, x.t, row_of.t);
  ops::moe_unpermute_forward(back.t, perm.t, row_of.t, ones.t);
  for (size_t i = 0; i < x.f.size(); ++i) CHECK(back.f[i] == x.f[i]);
}

TEST_CASE("moe ops: permute and unpermute backward match finite differences") {
  const int64_t n = 4, k = 2, e = 3, d = 2;
  Host experts({n, k}, DType::kI32), row_of({n, k}, DType::kI32), counts({e}, DType::kI32);
  experts.i = {0, 2, 1, 0, 2, 1, 0, 1};
  ops::moe_routing_map(row_of.t, counts.t, experts.t);
  Host x({n, d}), perm({n * k, d}), probs({n, k}), out({n, d}), w({n, d});
  fill(x, 3);
  fill(probs, 4);
  fill(w, 6);
  // L = <w, unpermute(permute(x) * c, probs)> with a per-row factor c so rows differ.
  auto loss = [&] {
    ops::moe_permute_forward(perm.t, x.t, row_of.t);
    for (int64_t r = 0; r < n * k; ++r)
      for (int64_t c = 0; c < d; ++c) perm.f[size_t(r * d + c)] *= float(1 + r);
    ops::moe_unpermute_forward(out.t, perm.t, row_of.t, probs.t);
    double l = 0;
    for (size_t i = 0; i < out.f.size(); ++i) l += double(w.f[i]) * out.f[i];
    return l;
  };
  loss();
  Host d_perm({n * k, d}), d_probs({n, k}), d_x({n, d});
  ops::moe_unpermute_backward(d_perm.t, d_probs.t, w.t, perm.t, row_of.t, probs.t);
  for (int64_t r = 0; r < n * k; ++r)
    for (int64_t c = 0; c < d; ++c) d_perm.f[size_t(r * d + c)] *= float(1 + r);
  ops::moe_permute_backward(d_x.t, d_perm.t, row_of.t);
  check_fd(x.f, loss, d_x.f);
  check_fd(probs.f, loss, d_probs.f);
}
