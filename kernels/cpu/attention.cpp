// Causal scaled dot-product attention with distinct Q/K/V head counts (DiffQKV, Sigma paper
// section 2), CPU reference.
//
// Query head h reads key head h * n_k / n_q and value head h * n_v / n_q. Forward keeps the
// log-sum-exp of each softmax row; backward rebuilds P = exp(S - lse) from q and k instead of
// storing the [T, T] matrix (as FlashAttention does), then
//   dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),  dQ = scale dS K,  dK = scale dS^T Q,  dV = P^T dO.
// Backward work is split over (batch, head group) units that own whole K and V heads, so no
// two threads add into the same dK/dV rows and the sums run in a fixed order. Left out:
// dropout, masks other than causal, and blocking over T (one query row at a time suffices
// for the CPU's short sequences).
#include "kernels/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

namespace sigma::cpu {
namespace {

struct Dims {
  int64_t batch, seq_len, n_q, n_k, n_v, d_qk, d_v;
  float scale;
};

Dims dims_of(const Tensor& q, const Tensor& k, const Tensor& v) {
  return {q.size(0), q.size(1), q.size(2), k.size(2), v.size(2), q.size(3), v.size(3),
          float(1.0 / std::sqrt(double(q.size(3))))};
}

float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// y += alpha * x
void axpy(float* y, float alpha, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// Row (b, t, head) of a [B, T, heads, dim] tensor.
template <typename T>
T* row(T* base, const Dims& s, int64_t b, int64_t t, int64_t heads, int64_t head, int64_t dim) {
  return base + ((b * s.seq_len + t) * heads + head) * dim;
}

}  // namespace

void attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v) {
  const Dims s = dims_of(q, k, v);
  const float *qp = q.f32(), *kp = k.f32(), *vp = v.f32();
  float *op = out.f32(), *lp = lse.f32();
#pragma omp parallel
  {
    std::vector<float> p(size_t(s.seq_len));  // one row of scores, then probabilities
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < s.batch * s.n_q; ++bh) {
      int64_t b = bh / s.n_q, h = bh % s.n_q;
      int64_t hk = h * s.n_k / s.n_q, hv = h * s.n_v / s.n_q;
      for (int64_t t = 0; t < s.seq_len; ++t) {
        const float* q_t = row(qp, s, b, t, s.n_q, h, s.d_qk);
        float max = -INFINITY;
        for (int64_t j = 0; j <= t; ++j) {
          p[j] = s.scale * dot(q_t, row(kp, s, b, j, s.n_k, hk, s.d_qk), s.d_qk);
          max = std::max(max, p[j]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j <= t; ++j) {
          p[j] = std::exp(p[j] - max);
          sum += p[j];
        }
        float inv_sum = 1.0f / sum;
        float* o_t = row(op, s, b, t, s.n_q, h, s.d_v);
        std::memset(o_t, 0, size_t(s.d_v) * sizeof(float));
        for (int64_t j = 0; j <= t; ++j) axpy(o_t, p[j] * inv_sum, row(vp, s, b, j, s.n_v, hv, s.d_v), s.d_v);
        lp[(b * s.n_q + h) * s.seq_len + t] = max + std::log(sum);
      }
    }
  }
}

void attention_backward(Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor q, Tensor k,
                        Tensor v, Tensor out, Tensor lse) {
  const Dims s = dims_of(q, k, v);
  const float *qp = q.f32(), *kp = k.f32(), *vp = v.f32(), *op = out.f32(), *lp = lse.f32();
  const float* dop = d_out.f32();
  float *dqp = d_q.f32(), *dkp = d_k.f32(), *dvp = d_v.f32();
  // The smallest run of consecutive query heads whose key heads and value heads are used by
  // no other run: a multiple of both n_q / n_k and n_q / n_v.
  const int64_t group = std::lcm(s.n_q / s.n_k, s.n_q / s.n_v), num_groups = s.n_q / group;
  const int64_t k_per_group = group * s.n_k / s.n_q, v_per_group = group * s.n_v / s.n_q;
#pragma omp parallel for schedule(static)
  for (int64_t unit = 0; unit < s.batch * num_groups; ++unit) {
    int64_t b = unit / num_groups, g = unit % num_groups;
    for (int64_t t = 0; t < s.seq_len; ++t) {
      std::memset(row(dkp, s, b, t, s.n_k, g * k_per_group, s.d_qk), 0,
                  size_t(k_per_group * s.d_qk) * sizeof(float));
      std::memset(row(dvp, s, b, t, s.n_v, g * v_per_group, s.d_v), 0,
                  size_t(v_per_group * s.d_v) * sizeof(float));
    }
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      int64_t hk = h * s.n_k / s.n_q, hv = h * s.n_v / s.n_q;
      for (int64_t t = 0; t < s.seq_len; ++t) {
        const float* q_t = row(qp, s, b, t, s.n_q, h, s.d_qk);
        const float* do_t = row(dop, s, b, t, s.n_q, h, s.d_v);
        float* dq_t = row(dqp, s, b, t, s.n_q, h, s.d_qk);
        float lse_t = lp[(b * s.n_q + h) * s.seq_len + t];
        float do_dot_o = dot(do_t, row(op, s, b, t, s.n_q, h, s.d_v), s.d_v);
        std::memset(dq_t, 0, size_t(s.d_qk) * sizeof(float));
        for (int64_t j = 0; j <= t; ++j) {
          const float* k_j = row(kp, s, b, j, s.n_k, hk, s.d_qk);
          const float* v_j = row(vp, s, b, j, s.n_v, hv, s.d_v);
          float p = std::exp(s.scale * dot(q_t, k_j, s.d_qk) - lse_t);
          float ds = p * (dot(do_t, v_j, s.d_v) - do_dot_o);
          axpy(dq_t, s.scale * ds, k_j, s.d_qk);
          axpy(row(dkp, s, b, j, s.n_k, hk, s.d_qk), s.scale * ds, q_t, s.d_qk);
          axpy(row(dvp, s, b, j, s.n_v, hv, s.d_v), p, do_t, s.d_v);
        }
      }
    }
  }
}

}  // namespace sigma::cpu
