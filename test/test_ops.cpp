// Op tests: every op in kernels/ops.h against a naive twin written here, and every backward
// against fp64 finite differences of that twin; then the contracts the engine relies on
// (ignored targets, in-place cross-entropy, token-order scatter, RoPE inverse, AdamW as
// PyTorch computes it, bit-identical reruns, one-line errors).
//
// The naive twins are templates: in double they are the reference; in float they measure
// how much error plain fp32 arithmetic makes, which is what a fast op's tolerance is
// derived from (STYLE.md, "Fast and reference"). The file is long (~700 lines) because the
// parity table, the twins and the checkers it runs are one piece; split by op family, each
// part would repeat the helpers.
#include "core/error.h"
#include "core/random.h"
#include "kernels/ops.h"
#include "kernels/threads.h"

#include <cblas.h>
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

using namespace sigma;

namespace {

constexpr double kUnitRoundoff = 0x1p-24;  // fp32 rounding error of one operation
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- host tensors --------------------------------------------------------------------

Tensor view(std::vector<float>& v, Shape shape) {
  REQUIRE(int64_t(v.size()) == shape.numel());
  Tensor t;
  t.data = v.data();
  t.shape = shape;
  return t;
}

Tensor view(std::vector<int32_t>& v, Shape shape) {
  REQUIRE(int64_t(v.size()) == shape.numel());
  Tensor t;
  t.data = v.data();
  t.shape = shape;
  t.dtype = DType::kI32;
  return t;
}

std::vector<float> randn(Rng& rng, int64_t n, double std = 1.0) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = float(rng.normal() * std);
  return v;
}

std::vector<int32_t> randint(Rng& rng, int64_t n, int64_t lo, int64_t hi) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& x : v) x = int32_t(lo + int64_t(rng.below(uint64_t(hi - lo))));
  return v;
}

template <typename R>
std::vector<R> cast(const std::vector<float>& v) {
  return std::vector<R>(v.begin(), v.end());
}

// max |x - ref| / max |ref|: the error relative to the output's scale. A NaN (an output
// never written, or added to instead of overwritten) is an infinite error.
template <typename A>
double rel_error(const std::vector<A>& x, const std::vector<double>& ref) {
  REQUIRE(x.size() == ref.size());
  double err = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(double(x[i]))) return INFINITY;
    err = std::max(err, std::fabs(double(x[i]) - ref[i]));
    scale = std::max(scale, std::fabs(ref[i]));
  }
  return scale > 0 ? err / scale : err;
}

// ---- naive twins: plain loops, in the precision R ------------------------------------

template <typename R>
std::vector<R> naive_embedding(const std::vector<R>& w, const std::vector<int32_t>& tok, int64_t d) {
  std::vector<R> out;
  for (int32_t t : tok) out.insert(out.end(), w.begin() + t * d, w.begin() + (t + 1) * d);
  return out;
}

// out [n, o] = x [n, i] @ w [o, i]^T
template <typename R>
std::vector<R> naive_matmul(const std::vector<R>& x, const std::vector<R>& w, int64_t n, int64_t i,
                            int64_t o) {
  std::vector<R> out(static_cast<size_t>(n * o));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < o; ++c) {
      R acc = 0;
      for (int64_t k = 0; k < i; ++k) acc += x[r * i + k] * w[c * i + k];
      out[r * o + c] = acc;
    }
  return out;
}

template <typename R>
std::vector<R> naive_rmsnorm(const std::vector<R>& x, const std::vector<R>& w, int64_t c, R eps) {
  std::vector<R> out(x.size());
  for (size_t r = 0; r < x.size() / c; ++r) {
    R ms = 0;
    for (int64_t i = 0; i < c; ++i) ms += x[r * c + i] * x[r * c + i];
    R rstd = R(1) / std::sqrt(ms / R(c) + eps);
    for (int64_t i = 0; i < c; ++i) out[r * c + i] = x[r * c + i] * rstd * w[i];
  }
  return out;
}

// x [n, h, d]; angle = pos * theta^(-2i/d), in double as ops.h specifies.
template <typename R>
std::vector<R> naive_rope(const std::vector<R>& x, const std::vector<int32_t>& pos, int64_t h,
                          int64_t d, double theta) {
  std::vector<R> out(x.size());
  int64_t half = d / 2;
  for (size_t n = 0; n < pos.size(); ++n)
    for (int64_t head = 0; head < h; ++head)
      for (int64_t i = 0; i < half; ++i) {
        double angle = double(pos[n]) * std::pow(theta, -2.0 * double(i) / double(d));
        R c = R(std::cos(angle)), s = R(std::sin(angle));
        const R* row = x.data() + (n * h + head) * d;
        out[(n * h + head) * d + i] = row[i] * c - row[i + half] * s;
        out[(n * h + head) * d + i + half] = row[i + half] * c + row[i] * s;
      }
  return out;
}

struct AttentionShape {
  int64_t b, t, n_q, n_k, n_v, d_qk, d_v;
};

// Full-matrix causal attention with K and V heads repeated up to n_q first (as the PyTorch
// peer does with repeat_interleave). Returns out [B, T, n_q, d_v]; fills lse [B, n_q, T].
template <typename R>
std::vector<R> naive_attention(const std::vector<R>& q, const std::vector<R>& k,
                               const std::vector<R>& v, const AttentionShape& a,
                               std::vector<R>* lse = nullptr) {
  std::vector<R> k_rep(static_cast<size_t>(a.b * a.t * a.n_q * a.d_qk));
  std::vector<R> v_rep(static_cast<size_t>(a.b * a.t * a.n_q * a.d_v));
  for (int64_t bt = 0; bt < a.b * a.t; ++bt)
    for (int64_t h = 0; h < a.n_q; ++h) {
      for (int64_t i = 0; i < a.d_qk; ++i)
        k_rep[(bt * a.n_q + h) * a.d_qk + i] = k[(bt * a.n_k + h / (a.n_q / a.n_k)) * a.d_qk + i];
      for (int64_t i = 0; i < a.d_v; ++i)
        v_rep[(bt * a.n_q + h) * a.d_v + i] = v[(bt * a.n_v + h / (a.n_q / a.n_v)) * a.d_v + i];
    }
  std::vector<R> out(static_cast<size_t>(a.b * a.t * a.n_q * a.d_v), R(0));
  if (lse) lse->assign(static_cast<size_t>(a.b * a.n_q * a.t), R(0));
  R scale = R(1) / std::sqrt(R(a.d_qk));
  std::vector<R> p(static_cast<size_t>(a.t));
  for (int64_t b = 0; b < a.b; ++b)
    for (int64_t h = 0; h < a.n_q; ++h)
      for (int64_t t = 0; t < a.t; ++t) {
        R max = -INFINITY;
        for (int64_t s = 0; s < a.t; ++s) {
          R score = 0;
          for (int64_t i = 0; i < a.d_qk; ++i)
            score += q[((b * a.t + t) * a.n_q + h) * a.d_qk + i] *
                     k_rep[((b * a.t + s) * a.n_q + h) * a.d_qk + i];
          p[s] = s <= t ? score * scale : R(-INFINITY);
          max = std::max(max, p[s]);
        }
        R sum = 0;
        for (int64_t s = 0; s < a.t; ++s) sum += (p[s] = std::exp(p[s] - max));
        for (int64_t s = 0; s < a.t; ++s)
          for (int64_t i = 0; i < a.d_v; ++i)
            out[((b * a.t + t) * a.n_q + h) * a.d_v + i] +=
                p[s] / sum * v_rep[((b * a.t + s) * a.n_q + h) * a.d_v + i];
        if (lse) (*lse)[(b * a.n_q + h) * a.t + t] = max + std::log(sum);
      }
  return out;
}

template <typename R>
std::vector<R> naive_swiglu(const std::vector<R>& gate, const std::vector<R>& up) {
  std::vector<R> out(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) out[i] = gate[i] / (R(1) + std::exp(-gate[i])) * up[i];
  return out;
}

template <typename R>
std::vector<R> naive_cross_entropy(const std::vector<R>& z, const std::vector<int32_t>& target,
                                   int64_t v) {
  std::vector<R> loss(target.size(), R(0));
  for (size_t n = 0; n < target.size(); ++n) {
    if (target[n] < 0) continue;
    const R* row = z.data() + n * v;
    R max = *std::max_element(row, row + v), sum = 0;
    for (int64_t i = 0; i < v; ++i) sum += std::exp(row[i] - max);
    loss[n] = std::log(sum) + max - row[target[n]];
  }
  return loss;
}

// ---- forward parity: fast fp32 and naive fp32, both against naive fp64 ----------------

struct Errors {
  double fast;   // the op under test
  double naive;  // the naive twin run in fp32: the error plain fp32 arithmetic makes
};

Errors embedding_forward_errors(Rng& rng, int64_t n, int64_t v, int64_t d) {
  auto w = randn(rng, v * d);
  auto tok = randint(rng, n, 0, v);
  std::vector<float> out(static_cast<size_t>(n * d), kNaN);
  ops::embedding_forward(view(out, {n, d}), view(tok, {n}), view(w, {v, d}));
  auto ref = naive_embedding(cast<double>(w), tok, d);
  return {rel_error(out, ref), rel_error(naive_embedding(w, tok, d), ref)};
}

// Who splits a matmul over the cores (kernels/cpu/matmul.cpp): OpenBLAS's own threads, or
// OpenMP threads each calling a single-threaded sgemm on a block of rows.
enum class MatmulSplit { kOpenBlas, kOpenMp };

// Sets OpenBLAS's thread count for one scope (both paths are tested whatever the default).
class BlasThreads {
 public:
  explicit BlasThreads(MatmulSplit split) : saved_(openblas_get_num_threads()) {
    openblas_set_num_threads(split == MatmulSplit::kOpenMp ? 1 : 2);
  }
  ~BlasThreads() { openblas_set_num_threads(saved_); }

 private:
  int saved_;
};

Errors matmul_forward_errors(Rng& rng, int64_t n, int64_t i, int64_t o, MatmulSplit split) {
  auto x = randn(rng, n * i), w = randn(rng, o * i);
  std::vector<float> out(static_cast<size_t>(n * o), kNaN);
  BlasThreads blas(split);
  ops::matmul_forward(view(out, {n, o}), view(x, {n, i}), view(w, {o, i}));
  auto ref = naive_matmul(cast<double>(x), cast<double>(w), n, i, o);
  return {rel_error(out, ref), rel_error(naive_matmul(x, w, n, i, o), ref)};
}

Errors rmsnorm_forward_errors(Rng& rng, int64_t rows, int64_t c) {
  auto x = randn(rng, rows * c, 3.0), w = randn(rng, c);
  std::vector<float> out(x.size(), kNaN), rstd(static_cast<size_t>(rows), kNaN);
  float eps = 1e-5f;
  ops::rmsnorm_forward(view(out, {rows, c}), view(rstd, {rows}), view(x, {rows, c}), view(w, {c}), eps);
  auto ref = naive_rmsnorm(cast<double>(x), cast<double>(w), c, double(eps));
  return {rel_error(out, ref), rel_error(naive_rmsnorm(x, w, c, eps), ref)};
}

Errors rope_forward_errors(Rng& rng, Shape shape) {
  int64_t h = shape[shape.rank - 2], d = shape[shape.rank - 1], n = shape.numel() / (h * d);
  auto x = randn(rng, shape.numel());
  auto pos = randint(rng, n, 0, 4096);
  std::vector<float> out(x.size(), kNaN);
  ops::rope_forward(view(out, shape), view(x, shape), view(pos, {n}), 10000.0f);
  auto ref = naive_rope(cast<double>(x), pos, h, d, 10000.0);
  return {rel_error(out, ref), rel_error(naive_rope(x, pos, h, d, 10000.0), ref)};
}

Errors attention_forward_errors(Rng& rng, const AttentionShape& a) {
  Shape q_shape{a.b, a.t, a.n_q, a.d_qk}, k_shape{a.b, a.t, a.n_k, a.d_qk},
      v_shape{a.b, a.t, a.n_v, a.d_v}, o_shape{a.b, a.t, a.n_q, a.d_v};
  // std 2 makes some softmax rows peaked, so max subtraction matters.
  auto q = randn(rng, q_shape.numel(), 2.0), k = randn(rng, k_shape.numel(), 2.0);
  auto v = randn(rng, v_shape.numel());
  std::vector<float> out(static_cast<size_t>(o_shape.numel()), kNaN);
  std::vector<float> lse(static_cast<size_t>(a.b * a.n_q * a.t), kNaN);
  ops::attention_forward(view(out, o_shape), view(lse, {a.b, a.n_q, a.t}), view(q, q_shape),
                         view(k, k_shape), view(v, v_shape));
  std::vector<double> lse_ref;
  std::vector<float> lse_naive;
  auto ref = naive_attention(cast<double>(q), cast<double>(k), cast<double>(v), a, &lse_ref);
  auto naive = naive_attention(q, k, v, a, &lse_naive);
  return {std::max(rel_error(out, ref), rel_error(lse, lse_ref)),
          std::max(rel_error(naive, ref), rel_error(lse_naive, lse_ref))};
}

Errors swiglu_forward_errors(Rng& rng, int64_t n) {
  auto gate = randn(rng, n, 4.0), up = randn(rng, n);
  std::vector<float> out(gate.size(), kNaN);
  ops::swiglu_forward(view(out, {n}), view(gate, {n}), view(up, {n}));
  auto ref = naive_swiglu(cast<double>(gate), cast<double>(up));
  return {rel_error(out, ref), rel_error(naive_swiglu(gate, up), ref)};
}

Errors cross_entropy_forward_errors(Rng& rng, int64_t n, int64_t v, double logit_std) {
  auto z = randn(rng, n * v, logit_std);
  auto target = randint(rng, n, -1, v);  // -1: some rows are ignored
  std::vector<float> loss(static_cast<size_t>(n), kNaN), lse(static_cast<size_t>(n), kNaN);
  ops::cross_entropy_forward(view(loss, {n}), view(lse, {n}), view(z, {n, v}), view(target, {n}));
  auto ref = naive_cross_entropy(cast<double>(z), target, v);
  // lse - z[target] is the loss on kept rows; ignored rows keep lse 0.
  std::vector<float> lse_minus_target(lse.size());
  for (int64_t r = 0; r < n; ++r)
    lse_minus_target[size_t(r)] = target[size_t(r)] < 0 ? lse[size_t(r)]
                                                         : lse[size_t(r)] - z[size_t(r * v + target[size_t(r)])];
  return {std::max(rel_error(loss, ref), rel_error(lse_minus_target, ref)),
          rel_error(naive_cross_entropy(z, target, v), ref)};
}

Errors add_errors(Rng& rng, int64_t n) {
  auto a = randn(rng, n), b = randn(rng, n);
  std::vector<float> out(a.size(), kNaN), naive(a.size()), scaled = a;
  std::vector<double> ref(a.size()), scaled_ref(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    naive[i] = a[i] + b[i];
    ref[i] = double(a[i]) + double(b[i]);
    scaled_ref[i] = double(a[i]) * 0.3;
  }
  ops::add(view(out, {n}), view(a, {n}), view(b, {n}));
  ops::scale(view(scaled, {n}), 0.3f);
  return {std::max(rel_error(out, ref), rel_error(scaled, scaled_ref)), rel_error(naive, ref)};
}

// ops.h promises double accumulation: the naive twin is a plain loop in double, the
// reference one in long double.
Errors reduction_errors(Rng& rng, int64_t n) {
  auto x = randn(rng, n);
  long double ref_sum = 0, ref_sq = 0;
  double naive_sum = 0, naive_sq = 0;
  for (float e : x) {
    ref_sum += e;
    ref_sq += (long double)e * e;
    naive_sum += e;
    naive_sq += double(e) * e;
  }
  auto rel = [](double got, long double want) { return double(std::fabs(got - want) / std::fabs(want)); };
  return {std::max(rel(ops::sum(view(x, {n})), ref_sum), rel(ops::sum_squares(view(x, {n})), ref_sq)),
          std::max(rel(naive_sum, ref_sum), rel(naive_sq, ref_sq))};
}

// ---- backward: fast fp32 gradients against fp64 central differences -------------------

using Loss = std::function<double(const std::vector<double>&)>;

// d loss / d x by central differences. With h = 1e-4 relative, truncation (h^2 f''') and
// fp64 rounding (1e-16 |f| / h) both stay far below fp32's error.
std::vector<double> numeric_gradient(std::vector<double> x, const Loss& loss) {
  std::vector<double> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double x0 = x[i], h = 1e-4 * std::max(1.0, std::fabs(x0));
    x[i] = x0 + h;
    double up = loss(x);
    x[i] = x0 - h;
    double down = loss(x);
    x[i] = x0;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

// sum(g * y): the scalar whose gradient is the backward op given upstream gradient g.
double weighted_sum(const std::vector<float>& g, const std::vector<double>& y) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += double(g[i]) * y[i];
  return s;
}

// A parameter gradient accumulates (+=): subtract what was in the buffer before.
std::vector<float> minus(const std::vector<float>& after, const std::vector<float>& before) {
  std::vector<float> d(after.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = after[i] - before[i];
  return d;
}

// d_weight accumulates onto random values, or overwrites NaN (GradWrite::kOverwrite); d_inp
// overwrites NaN, or accumulates onto random values (input_write kAccumulate).
double matmul_backward_error(Rng& rng, int64_t n, int64_t i, int64_t o, bool with_d_inp,
                             MatmulSplit split,
                             ops::GradWrite write = ops::GradWrite::kAccumulate,
                             ops::GradWrite input_write = ops::GradWrite::kOverwrite) {
  auto x = randn(rng, n * i), w = randn(rng, o * i), g = randn(rng, n * o);
  std::vector<float> d_x(x.size(), kNaN), d_x0(x.size(), 0.0f);
  std::vector<float> d_w0 = randn(rng, o * i), d_w = d_w0;
  if (write == ops::GradWrite::kOverwrite) {
    std::fill(d_w.begin(), d_w.end(), kNaN);
    std::fill(d_w0.begin(), d_w0.end(), 0.0f);
  }
  if (input_write == ops::GradWrite::kAccumulate) d_x = d_x0 = randn(rng, n * i);
  Tensor d_x_t = with_d_inp ? view(d_x, {n, i}) : Tensor{};
  BlasThreads blas(split);
  ops::matmul_backward(d_x_t, view(d_w, {o, i}), view(g, {n, o}), view(x, {n, i}), view(w, {o, i}),
                       write, input_write);
  auto xd = cast<double>(x), wd = cast<double>(w);
  double err = rel_error(minus(d_w, d_w0), numeric_gradient(wd, [&](const std::vector<double>& p) {
                           return weighted_sum(g, naive_matmul(xd, p, n, i, o));
                         }));
  if (with_d_inp)
    err = std::max(err, rel_error(minus(d_x, d_x0), numeric_gradient(xd, [&](const std::vector<double>& p) {
                                    return weighted_sum(g, naive_matmul(p, wd, n, i, o));
                                  })));
  return err;
}

double rmsnorm_backward_error(Rng& rng, int64_t rows, int64_t c) {
  auto x = randn(rng, rows * c), w = randn(rng, c), g = randn(rng, rows * c);
  std::vector<float> out(x.size()), rstd(static_cast<size_t>(rows));
  float eps = 1e-5f;
  ops::rmsnorm_forward(view(out, {rows, c}), view(rstd, {rows}), view(x, {rows, c}), view(w, {c}), eps);
  std::vector<float> d_x(x.size(), kNaN), d_w0 = randn(rng, c), d_w = d_w0;
  ops::rmsnorm_backward(view(d_x, {rows, c}), view(d_w, {c}), view(g, {rows, c}), view(x, {rows, c}),
                        view(w, {c}), view(rstd, {rows}));
  auto xd = cast<double>(x), wd = cast<double>(w);
  return std::max(rel_error(d_x, numeric_gradient(xd, [&](const std::vector<double>& p) {
                    return weighted_sum(g, naive_rmsnorm(p, wd, c, double(eps)));
                  })),
                  rel_error(minus(d_w, d_w0), numeric_gradient(wd, [&](const std::vector<double>& p) {
                    return weighted_sum(g, naive_rmsnorm(xd, p, c, double(eps)));
                  })));
}

double rope_backward_error(Rng& rng, int64_t n, int64_t h, int64_t d) {
  auto g = randn(rng, n * h * d);
  auto pos = randint(rng, n, 0, 300);
  std::vector<float> d_x(g.size(), kNaN);
  ops::rope_backward(view(d_x, {n, h, d}), view(g, {n, h, d}), view(pos, {n}), 500.0f);
  auto x0 = std::vector<double>(g.size(), 0.5);
  return rel_error(d_x, numeric_gradient(x0, [&](const std::vector<double>& p) {
                     return weighted_sum(g, naive_rope(p, pos, h, d, 500.0));
                   }));
}

struct AttentionData {
  AttentionShape a;
  Shape q_shape, k_shape, v_shape, o_shape, lse_shape;
  std::vector<float> q, k, v, out, lse, d_out;

  AttentionData(Rng& rng, const AttentionShape& shape)
      : a(shape),
        q_shape{a.b, a.t, a.n_q, a.d_qk},
        k_shape{a.b, a.t, a.n_k, a.d_qk},
        v_shape{a.b, a.t, a.n_v, a.d_v},
        o_shape{a.b, a.t, a.n_q, a.d_v},
        lse_shape{a.b, a.n_q, a.t},
        q(randn(rng, q_shape.numel(), 1.5)),
        k(randn(rng, k_shape.numel(), 1.5)),
        v(randn(rng, v_shape.numel())),
        out(static_cast<size_t>(o_shape.numel())),
        lse(static_cast<size_t>(lse_shape.numel())),
        d_out(randn(rng, o_shape.numel())) {
    ops::attention_forward(view(out, o_shape), view(lse, lse_shape), view(q, q_shape),
                           view(k, k_shape), view(v, v_shape));
  }

  // Gradients into NaN-filled buffers, which also checks they are overwritten, not added to.
  void backward(std::vector<float>& d_q, std::vector<float>& d_k, std::vector<float>& d_v) {
    d_q.assign(q.size(), kNaN);
    d_k.assign(k.size(), kNaN);
    d_v.assign(v.size(), kNaN);
    ops::attention_backward(view(d_q, q_shape), view(d_k, k_shape), view(d_v, v_shape),
                            view(d_out, o_shape), view(q, q_shape), view(k, k_shape),
                            view(v, v_shape), view(out, o_shape), view(lse, lse_shape));
  }
};

double attention_backward_error(Rng& rng, const AttentionShape& shape) {
  AttentionData data(rng, shape);
  std::vector<float> d_q, d_k, d_v;
  data.backward(d_q, d_k, d_v);
  auto qd = cast<double>(data.q), kd = cast<double>(data.k), vd = cast<double>(data.v);
  auto loss = [&](const std::vector<double>& q, const std::vector<double>& k,
                  const std::vector<double>& v) {
    return weighted_sum(data.d_out, naive_attention(q, k, v, shape));
  };
  double err_q = rel_error(d_q, numeric_gradient(qd, [&](const auto& p) { return loss(p, kd, vd); }));
  double err_k = rel_error(d_k, numeric_gradient(kd, [&](const auto& p) { return loss(qd, p, vd); }));
  double err_v = rel_error(d_v, numeric_gradient(vd, [&](const auto& p) { return loss(qd, kd, p); }));
  return std::max({err_q, err_k, err_v});
}

double swiglu_backward_error(Rng& rng, int64_t n) {
  auto gate = randn(rng, n, 3.0), up = randn(rng, n), g = randn(rng, n);
  std::vector<float> d_gate(gate.size(), kNaN), d_up(up.size(), kNaN);
  ops::swiglu_backward(view(d_gate, {n}), view(d_up, {n}), view(g, {n}), view(gate, {n}), view(up, {n}));
  auto gd = cast<double>(gate), ud = cast<double>(up);
  return std::max(rel_error(d_gate, numeric_gradient(gd, [&](const std::vector<double>& p) {
                    return weighted_sum(g, naive_swiglu(p, ud));
                  })),
                  rel_error(d_up, numeric_gradient(ud, [&](const std::vector<double>& p) {
                    return weighted_sum(g, naive_swiglu(gd, p));
                  })));
}

double cross_entropy_backward_error(Rng& rng, int64_t n, int64_t v) {
  auto z = randn(rng, n * v, 2.0);
  auto target = randint(rng, n, -1, v);
  float loss_scale = 0.37f;
  std::vector<float> d_z(z.size(), kNaN), loss(static_cast<size_t>(n)), lse(static_cast<size_t>(n));
  ops::cross_entropy_forward(view(loss, {n}), view(lse, {n}), view(z, {n, v}), view(target, {n}));
  ops::cross_entropy_backward(view(d_z, {n, v}), view(z, {n, v}), view(lse, {n}), view(target, {n}),
                              loss_scale);
  return rel_error(d_z, numeric_gradient(cast<double>(z), [&](const std::vector<double>& p) {
                     double total = 0;
                     for (double l : naive_cross_entropy(p, target, v)) total += l;
                     return loss_scale * total;
                   }));
}

double embedding_backward_error(Rng& rng, int64_t n, int64_t v, int64_t d) {
  auto tok = randint(rng, n, 0, v);  // n > v: tokens repeat
  auto g = randn(rng, n * d);
  std::vector<float> d_w0 = randn(rng, v * d), d_w = d_w0;
  ops::embedding_backward(view(d_w, {v, d}), view(g, {n, d}), view(tok, {n}));
  return rel_error(minus(d_w, d_w0),
                   numeric_gradient(std::vector<double>(d_w.size(), 0.0), [&](const auto& p) {
                     return weighted_sum(g, naive_embedding(p, tok, d));
                   }));
}

// ---- the parity table -----------------------------------------------------------------

enum class Metric {
  // Forward: max |fast - fp64 naive| / max |fp64 naive| must stay within `bound` times the
  // same error of the naive twin run in fp32 (+2 ulp, for ops the fp32 twin gets exact).
  // 4x: a blocked or vectorized sum reorders terms but has the same error growth as the
  // plain loop; what it cannot do is lose a term or use a wrong formula.
  kTimesNaiveFp32,
  // Backward: max |fast - fp64 central differences| / max |differences| <= bound, where the
  // bound is 8 K u: Higham's gamma_K = K u for a fp32 sum of K terms (K: the longest sum in
  // the op's backward), times 8 because the error is divided by max |gradient| instead of
  // the sum of |terms|. A wrong term or sign gives errors of order 1.
  kVsFiniteDifferences,
};

struct ParityRow {
  const char* op;
  const char* shapes;
  Metric metric;
  double bound;
  std::function<Errors(Rng&)> run;
};

double fp32_sum_bound(int64_t terms) { return 8.0 * double(terms) * kUnitRoundoff; }

template <typename F>
std::function<Errors(Rng&)> gradient(F f) {
  return [f](Rng& rng) { return Errors{f(rng), 0.0}; };
}

const std::vector<ParityRow>& parity_table() {
  using M = Metric;
  static const std::vector<ParityRow> rows = {
      {"embedding_forward", "N 37, V 11, D 19", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return embedding_forward_errors(r, 37, 11, 19); }},
      {"matmul_forward", "N 33, I 70, O 17, OpenBLAS threads", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return matmul_forward_errors(r, 33, 70, 17, MatmulSplit::kOpenBlas); }},
      {"matmul_forward", "N 33, I 70, O 17, OpenMP rows", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return matmul_forward_errors(r, 33, 70, 17, MatmulSplit::kOpenMp); }},
      {"matmul_forward", "N 1, I 5, O 3, OpenMP rows", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return matmul_forward_errors(r, 1, 5, 3, MatmulSplit::kOpenMp); }},
      {"matmul_forward", "N 64, I 256, O 96, OpenBLAS threads", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return matmul_forward_errors(r, 64, 256, 96, MatmulSplit::kOpenBlas); }},
      {"rmsnorm_forward", "R 13, C 37", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return rmsnorm_forward_errors(r, 13, 37); }},
      {"rmsnorm_forward", "R 8, C 256", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return rmsnorm_forward_errors(r, 8, 256); }},
      {"rope_forward", "[N 9, H 3, d 16]", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return rope_forward_errors(r, {9, 3, 16}); }},
      {"rope_forward", "[B 2, T 5, H 2, d 6]", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return rope_forward_errors(r, {2, 5, 2, 6}); }},
      {"attention_forward", "B 2, T 13, q/k/v 4/2/1, d_qk 8, d_v 5", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return attention_forward_errors(r, {2, 13, 4, 2, 1, 8, 5}); }},
      {"attention_forward", "B 1, T 37, q/k/v 6/3/2, d_qk 4, d_v 4", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return attention_forward_errors(r, {1, 37, 6, 3, 2, 4, 4}); }},
      {"attention_forward", "B 3, T 1, q/k/v 2/2/2, d_qk 3, d_v 7", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return attention_forward_errors(r, {3, 1, 2, 2, 2, 3, 7}); }},
      {"attention_forward", "B 2, T 67, q/k/v 8/2/4, d 32", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return attention_forward_errors(r, {2, 67, 8, 2, 4, 32, 32}); }},
      {"swiglu_forward", "N 1000", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return swiglu_forward_errors(r, 1000); }},
      {"cross_entropy_forward", "N 17, V 29", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return cross_entropy_forward_errors(r, 17, 29, 1.0); }},
      {"cross_entropy_forward", "N 4, V 1000, logits std 30", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return cross_entropy_forward_errors(r, 4, 1000, 30.0); }},
      {"add, scale", "N 1001", M::kTimesNaiveFp32, 4, [](Rng& r) { return add_errors(r, 1001); }},
      {"sum, sum_squares", "N 100003", M::kTimesNaiveFp32, 4,
       [](Rng& r) { return reduction_errors(r, 100003); }},

      {"matmul_backward", "N 5, I 7, O 3, OpenBLAS threads", M::kVsFiniteDifferences,
       fp32_sum_bound(7),
       gradient([](Rng& r) { return matmul_backward_error(r, 5, 7, 3, true, MatmulSplit::kOpenBlas); })},
      {"matmul_backward", "N 5, I 7, O 3, OpenMP rows", M::kVsFiniteDifferences, fp32_sum_bound(7),
       gradient([](Rng& r) { return matmul_backward_error(r, 5, 7, 3, true, MatmulSplit::kOpenMp); })},
      {"matmul_backward", "N 6, I 4, O 9, no d_inp, OpenMP rows", M::kVsFiniteDifferences,
       fp32_sum_bound(6),
       gradient([](Rng& r) { return matmul_backward_error(r, 6, 4, 9, false, MatmulSplit::kOpenMp); })},
      {"matmul_backward", "N 5, I 7, O 3, d_weight overwritten, OpenBLAS threads",
       M::kVsFiniteDifferences, fp32_sum_bound(7), gradient([](Rng& r) {
         return matmul_backward_error(r, 5, 7, 3, true, MatmulSplit::kOpenBlas,
                                      ops::GradWrite::kOverwrite);
       })},
      {"matmul_backward", "N 5, I 7, O 3, d_weight overwritten, OpenMP rows",
       M::kVsFiniteDifferences, fp32_sum_bound(7), gradient([](Rng& r) {
         return matmul_backward_error(r, 5, 7, 3, true, MatmulSplit::kOpenMp,
                                      ops::GradWrite::kOverwrite);
       })},
      {"matmul_backward", "N 5, I 7, O 3, d_inp accumulated, OpenBLAS threads",
       M::kVsFiniteDifferences, fp32_sum_bound(7), gradient([](Rng& r) {
         return matmul_backward_error(r, 5, 7, 3, true, MatmulSplit::kOpenBlas,
                                      ops::GradWrite::kAccumulate, ops::GradWrite::kAccumulate);
       })},
      {"matmul_backward", "N 5, I 7, O 3, d_inp accumulated, OpenMP rows",
       M::kVsFiniteDifferences, fp32_sum_bound(7), gradient([](Rng& r) {
         return matmul_backward_error(r, 5, 7, 3, true, MatmulSplit::kOpenMp,
                                      ops::GradWrite::kAccumulate, ops::GradWrite::kAccumulate);
       })},
      {"rmsnorm_backward", "R 4, C 9", M::kVsFiniteDifferences, fp32_sum_bound(9),
       gradient([](Rng& r) { return rmsnorm_backward_error(r, 4, 9); })},
      {"rope_backward", "N 3, H 2, d 8", M::kVsFiniteDifferences, fp32_sum_bound(2),
       gradient([](Rng& r) { return rope_backward_error(r, 3, 2, 8); })},
      // K: a dK or dV row sums over T query rows of every query head sharing it (n_q / n_k
      // or n_q / n_v of them), plus the d-long dots.
      {"attention_backward", "B 2, T 7, q/k/v 4/2/1, d_qk 4, d_v 3", M::kVsFiniteDifferences,
       fp32_sum_bound(7 * 4 + 4),
       gradient([](Rng& r) { return attention_backward_error(r, {2, 7, 4, 2, 1, 4, 3}); })},
      {"attention_backward", "B 1, T 9, q/k/v 6/3/2, d_qk 3, d_v 2", M::kVsFiniteDifferences,
       fp32_sum_bound(9 * 3 + 3),
       gradient([](Rng& r) { return attention_backward_error(r, {1, 9, 6, 3, 2, 3, 2}); })},
      // More (batch, head group) units than threads: each thread reuses its scratch.
      {"attention_backward", "B 3, T 5, q/k/v 4/4/2, d_qk 2, d_v 3", M::kVsFiniteDifferences,
       fp32_sum_bound(5 * 2 + 3),
       gradient([](Rng& r) { return attention_backward_error(r, {3, 5, 4, 4, 2, 2, 3}); })},
      {"swiglu_backward", "N 50", M::kVsFiniteDifferences, fp32_sum_bound(4),
       gradient([](Rng& r) { return swiglu_backward_error(r, 50); })},
      {"cross_entropy_backward", "N 6, V 7", M::kVsFiniteDifferences, fp32_sum_bound(7),
       gradient([](Rng& r) { return cross_entropy_backward_error(r, 6, 7); })},
      {"embedding_backward", "N 12, V 4, D 3", M::kVsFiniteDifferences, fp32_sum_bound(12),
       gradient([](Rng& r) { return embedding_backward_error(r, 12, 4, 3); })},
  };
  return rows;
}

void run_parity_rows(Metric metric) {
  Rng rng(2024);
  for (const ParityRow& row : parity_table()) {
    if (row.metric != metric) continue;
    Errors e = row.run(rng);
    INFO(row.op, " ", row.shapes, ": error ", e.fast, ", naive fp32 ", e.naive, ", bound ", row.bound);
    if (metric == Metric::kTimesNaiveFp32)
      CHECK(e.fast <= row.bound * e.naive + 2 * kUnitRoundoff);
    else
      CHECK(e.fast <= row.bound);
  }
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("ops: forward parity against naive fp64 twins") { run_parity_rows(Metric::kTimesNaiveFp32); }

TEST_CASE("ops: backward against finite differences") { run_parity_rows(Metric::kVsFiniteDifferences); }

TEST_CASE("ops: add_rmsnorm_forward and an accumulating rmsnorm_backward equal the ops apart") {
  Rng rng(12);
  int64_t rows = 6, c = 19;
  auto a = randn(rng, rows * c), b = randn(rng, rows * c), w = randn(rng, c), g = randn(rng, rows * c);
  auto d_res = randn(rng, rows * c);
  // Apart: add, rmsnorm_forward; rmsnorm_backward into a temporary, add into d_res.
  std::vector<float> sum(a.size()), y(a.size()), rstd(static_cast<size_t>(rows)), tmp(a.size());
  std::vector<float> dw(static_cast<size_t>(c), 0.0f), d_res_apart = d_res;
  ops::add(view(sum, {rows, c}), view(a, {rows, c}), view(b, {rows, c}));
  ops::rmsnorm_forward(view(y, {rows, c}), view(rstd, {rows}), view(sum, {rows, c}), view(w, {c}),
                       1e-5f);
  ops::rmsnorm_backward(view(tmp, {rows, c}), view(dw, {c}), view(g, {rows, c}),
                        view(sum, {rows, c}), view(w, {c}), view(rstd, {rows}));
  ops::add(view(d_res_apart, {rows, c}), view(d_res_apart, {rows, c}), view(tmp, {rows, c}));
  // Fused, the sum written over a as the model does.
  std::vector<float> fused_a = a, fused_y(a.size(), kNaN), fused_rstd(rstd.size(), kNaN);
  std::vector<float> fused_dw(dw.size(), 0.0f), d_res_fused = d_res;
  ops::add_rmsnorm_forward(view(fused_a, {rows, c}), view(fused_y, {rows, c}),
                           view(fused_rstd, {rows}), view(fused_a, {rows, c}), view(b, {rows, c}),
                           view(w, {c}), 1e-5f);
  ops::rmsnorm_backward(view(d_res_fused, {rows, c}), view(fused_dw, {c}), view(g, {rows, c}),
                        view(fused_a, {rows, c}), view(w, {c}), view(fused_rstd, {rows}),
                        ops::GradWrite::kAccumulate);
  CHECK(same_bits(fused_a, sum));
  CHECK(same_bits(fused_y, y));
  CHECK(same_bits(fused_rstd, rstd));
  CHECK(same_bits(d_res_fused, d_res_apart));
  CHECK(same_bits(fused_dw, dw));
  // Accumulating into the gradient it reads from is refused.
  CHECK_THROWS(ops::rmsnorm_backward(view(g, {rows, c}), view(dw, {c}), view(g, {rows, c}),
                                     view(sum, {rows, c}), view(w, {c}), view(rstd, {rows}),
                                     ops::GradWrite::kAccumulate));
}

TEST_CASE("ops: rope_backward inverts rope_forward") {
  Rng rng(5);
  int64_t n = 40, h = 3, d = 32;
  auto x = randn(rng, n * h * d);
  auto pos = randint(rng, n, 0, 8192);
  std::vector<float> y(x.size()), back(x.size());
  ops::rope_forward(view(y, {n, h, d}), view(x, {n, h, d}), view(pos, {n}), 10000.0f);
  ops::rope_backward(view(back, {n, h, d}), view(y, {n, h, d}), view(pos, {n}), 10000.0f);
  // A rotation and its transpose: only the rounding of cos^2 + sin^2 and of two products
  // per element remains, a few ulp of the pair's magnitude.
  CHECK(rel_error(back, cast<double>(x)) <= 8 * kUnitRoundoff);
  ops::rope_forward(view(back, {n, h, d}), view(x, {n, h, d}), view(pos, {n}), 10000.0f);
  CHECK(same_bits(back, y));  // the table gives the same rotation every call
  std::vector<float> in_place = x;
  ops::rope_forward(view(in_place, {n, h, d}), view(in_place, {n, h, d}), view(pos, {n}), 10000.0f);
  CHECK(same_bits(in_place, y));
}

TEST_CASE("ops: cross-entropy ignores negative targets and may write in place") {
  Rng rng(6);
  int64_t n = 5, v = 11;
  auto z = randn(rng, n * v, 3.0);
  std::vector<int32_t> target = {3, -1, 0, -100, 10};
  std::vector<float> loss(static_cast<size_t>(n), kNaN), lse(static_cast<size_t>(n), kNaN),
      d_z(z.size(), kNaN);
  ops::cross_entropy_forward(view(loss, {n}), view(lse, {n}), view(z, {n, v}), view(target, {n}));
  ops::cross_entropy_backward(view(d_z, {n, v}), view(z, {n, v}), view(lse, {n}), view(target, {n}),
                              0.5f);
  for (int64_t r = 0; r < n; ++r) {
    double row_sum = 0;
    bool zero_row = true;
    for (int64_t i = 0; i < v; ++i) {
      row_sum += d_z[r * v + i];
      zero_row = zero_row && d_z[r * v + i] == 0.0f;
    }
    CAPTURE(r);
    if (target[r] < 0) {
      CHECK(loss[r] == 0.0f);
      CHECK(lse[r] == 0.0f);
      CHECK(zero_row);
    } else {
      CHECK(loss[r] > 0.0f);
      CHECK(std::fabs(row_sum) < 1e-6);  // softmax sums to one, minus the one-hot
    }
  }
  std::vector<float> in_place = z;
  ops::cross_entropy_backward(view(in_place, {n, v}), view(in_place, {n, v}), view(lse, {n}),
                              view(target, {n}), 0.5f);
  CHECK(same_bits(in_place, d_z));
}

TEST_CASE("ops: embedding_backward adds repeated tokens in token order") {
  Rng rng(7);
  int64_t v = 5, d = 37;
  std::vector<int32_t> tok = {2, 0, 2, 2, 4, 0, 2, 1, 2};
  int64_t n = int64_t(tok.size());
  auto g = randn(rng, n * d);
  std::vector<float> d_w = randn(rng, v * d), expected = d_w;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < d; ++c) expected[tok[i] * d + c] += g[i * d + c];
  ops::embedding_backward(view(d_w, {v, d}), view(g, {n, d}), view(tok, {n}));
  CHECK(same_bits(d_w, expected));  // fp32 adds in the order ops.h specifies, bit for bit
}

TEST_CASE("ops: adamw matches torch.optim.AdamW over two steps") {
  // Expected values from /usr/bin/python3 with Debian's torch 1.13, printed with float.hex:
  //   f32 = lambda x: float(numpy.float32(x))   # AdamWStep carries fp32 hyperparameters
  //   p = torch.tensor([0.5, -1.25, 2.0, 0.0, -0.375], requires_grad=True)
  //   opt = torch.optim.AdamW([p], lr=f32(0.01), betas=(f32(0.9), f32(0.95)), eps=f32(1e-8),
  //                           weight_decay=f32(0.1))
  //   step 1: p.grad = [0.1, -0.2, 0.3, 1e-3, -5.0];  step 2: p.grad = [-0.4, 0.25, 0.3, 0.0, 2.0]
  //   after each opt.step(): p, opt.state[p]['exp_avg'], opt.state[p]['exp_avg_sq']
  std::vector<float> p = {0.5f, -1.25f, 2.0f, 0.0f, -0.375f};
  std::vector<float> m(5, 0.0f), v(5, 0.0f);
  // grad_scale 0.5 on doubled gradients: the same fp32 values as torch's gradients.
  std::vector<std::vector<float>> grads = {{0.2f, -0.4f, 0.6f, 2e-3f, -10.0f},
                                           {-0.8f, 0.5f, 0.6f, 0.0f, 4.0f}};
  const std::vector<std::vector<float>> expected_p = {
      {0x1.f53f7ep-2f, -0x1.3d1eb8p+0f, 0x1.fced92p+0f, -0x1.47ad3cp-7f, -0x1.756042p-2f},
      {0x1.fa69e2p-2f, -0x1.3d37e4p+0f, 0x1.f9dbeep+0f, -0x1.12dcdp-6f, -0x1.716e52p-2f}};
  const std::vector<std::vector<float>> expected_m = {
      {0x1.47ae1ap-7f, -0x1.47ae1ap-6f, 0x1.eb8528p-6f, 0x1.a36e36p-14f, -0x1.000004p-1f},
      {-0x1.fbe774p-6f, 0x1.cac088p-8f, 0x1.d2f1b2p-5f, 0x1.797ccap-14f, -0x1.000004p-2f}};
  const std::vector<std::vector<float>> expected_v = {
      {0x1.0624e2p-11f, 0x1.0624e2p-9f, 0x1.26e98p-8f, 0x1.ad7f32p-25f, 0x1.400004p+0f},
      {0x1.15b578p-7f, 0x1.495188p-8f, 0x1.1f8a1p-7f, 0x1.9805a2p-25f, 0x1.633338p+0f}};
  for (int step = 1; step <= 2; ++step) {
    ops::AdamWStep s{0.01f, 0.9f, 0.95f, 1e-8f, 0.1f, step, 0.5f};
    ops::adamw_update(view(p, {5}), view(grads[step - 1], {5}), view(m, {5}), view(v, {5}), s);
    // The same operations in the same order as torch's single-tensor AdamW: the same bits.
    CAPTURE(step);
    CHECK(same_bits(p, expected_p[step - 1]));
    CHECK(same_bits(m, expected_m[step - 1]));
    CHECK(same_bits(v, expected_v[step - 1]));
  }
}

TEST_CASE("ops: backward ops give the same bits on every run and thread count") {
  int previous = omp_get_max_threads();
  Rng rng(8);
  AttentionData data(rng, {2, 67, 8, 2, 4, 16, 24});
  int64_t rows = 301, c = 40;
  auto x = randn(rng, rows * c), w = randn(rng, c), g = randn(rng, rows * c);
  std::vector<float> out(x.size()), rstd(static_cast<size_t>(rows));
  ops::rmsnorm_forward(view(out, {rows, c}), view(rstd, {rows}), view(x, {rows, c}), view(w, {c}), 1e-5f);
  auto run = [&](int threads) {
    set_cpu_threads(threads);
    std::vector<float> d_q, d_k, d_v, d_x(x.size()), d_w(w.size(), 0.5f);
    data.backward(d_q, d_k, d_v);
    ops::rmsnorm_backward(view(d_x, {rows, c}), view(d_w, {c}), view(g, {rows, c}), view(x, {rows, c}),
                          view(w, {c}), view(rstd, {rows}));
    return std::vector<std::vector<float>>{d_q, d_k, d_v, d_x, d_w};
  };
  auto first = run(2), second = run(2), single = run(1);
  set_cpu_threads(previous);
  for (size_t i = 0; i < first.size(); ++i) {
    CAPTURE(i);
    CHECK(same_bits(first[i], second[i]));
    CHECK(same_bits(first[i], single[i]));
  }
}

TEST_CASE("ops: bad token ids are one-line user errors") {
  std::vector<float> w(4 * 3), out(2 * 3), loss(2), z(2 * 4);
  std::vector<int32_t> tok = {1, 4};
  CHECK_THROWS_WITH_AS(ops::embedding_forward(view(out, {2, 3}), view(tok, {2}), view(w, {4, 3})),
                       "token id 4 at position 1 is outside the vocabulary [0, 4)", UserError);
  CHECK_THROWS_AS(
      ops::cross_entropy_forward(view(loss, {2}), Tensor{}, view(z, {2, 4}), view(tok, {2})),
      UserError);
}

TEST_CASE("ops: dispatch checks shapes and devices") {
  std::vector<float> a(6), b(6), out(4);
  CHECK_THROWS_AS(ops::add(view(out, {4}), view(a, {6}), view(b, {6})), InternalError);
  std::vector<float> x(2 * 3), w(5 * 4), y(2 * 5);
  CHECK_THROWS_AS(ops::matmul_forward(view(y, {2, 5}), view(x, {2, 3}), view(w, {5, 4})), InternalError);
  Tensor on_gpu = view(a, {6});
  on_gpu.device = Device::kCuda;
  CHECK_THROWS_AS(ops::add(view(b, {6}), view(a, {6}), on_gpu), InternalError);  // mixed devices
#ifndef SIGMA_CUDA
  CHECK_THROWS_WITH_AS(ops::scale(on_gpu, 2.0f), "scale needs the CUDA backend; this build has none",
                       UserError);
#endif
}
