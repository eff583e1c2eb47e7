// Causal scaled dot-product attention with distinct Q/K/V head counts (DiffQKV, Sigma paper
// section 2), CPU reference.
//
// Query head h reads key head h * n_k / n_q and value head h * n_v / n_q. Forward keeps the
// log-sum-exp of each softmax row; backward rebuilds P = exp(S - lse) from q and k instead of
// storing the [T, T] matrix (as FlashAttention does), then
//   dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),  dQ = scale dS K,  dK = scale dS^T Q,  dV = P^T dO.
// Speed: K and V heads are copied transposed ([dim, T]) so the loops over key positions run
// over contiguous memory and vectorize; no loop reassociates a sum, so the results do not
// depend on the vector width. Backward work is split over (batch, head group) units that own
// whole K and V heads: no two threads write the same dK/dV rows, and every sum has a fixed
// order. Left out: dropout, masks other than causal.
#include "kernels/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>
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

// Row (b, t, head) of a [B, T, heads, dim] tensor.
template <typename T>
T* row(T* base, const Dims& s, int64_t b, int64_t t, int64_t heads, int64_t head, int64_t dim) {
  return base + ((b * s.seq_len + t) * heads + head) * dim;
}

// y[0, n) += alpha * x[0, n). Unrolled: these loops are short (n <= T) and GCC would
// otherwise spend half of each vector step on loop control.
void axpy(float* y, float alpha, const float* x, int64_t n) {
#pragma GCC unroll 4
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// out [dim, T] = head `head` of batch b of x [B, T, heads, dim], transposed.
void transpose_head(float* out, const float* x, const Dims& s, int64_t b, int64_t heads,
                    int64_t head, int64_t dim) {
  for (int64_t t = 0; t < s.seq_len; ++t) {
    const float* x_t = row(x, s, b, t, heads, head, dim);
    for (int64_t i = 0; i < dim; ++i) out[i * s.seq_len + t] = x_t[i];
  }
}

// y[0, n) += sum over r < m of a[r] * x[r * stride + (0, n)]: a vector-matrix product added to
// y. Four rows are added per pass over y, left to right, so the sum and its order are those of
// one row per pass, with a quarter of the loads and stores of y; no sum is reassociated, so
// the bits do not depend on the vector width.
void add_rows(float* y, int64_t n, const float* a, const float* x, int64_t m, int64_t stride) {
  int64_t r = 0;
  for (; r + 4 <= m; r += 4) {
    const float *x0 = x + r * stride, *x1 = x0 + stride, *x2 = x1 + stride, *x3 = x2 + stride;
    float a0 = a[r], a1 = a[r + 1], a2 = a[r + 2], a3 = a[r + 3];
#pragma GCC unroll 4
    for (int64_t i = 0; i < n; ++i) y[i] = y[i] + a0 * x0[i] + a1 * x1[i] + a2 * x2[i] + a3 * x3[i];
  }
  for (; r < m; ++r) axpy(y, a[r], x + r * stride, n);
}

}  // namespace

void attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v) {
  const Dims s = dims_of(q, k, v);
  const float *qp = q.f32(), *kp = k.f32(), *vp = v.f32();
  float *op = out.f32(), *lp = lse.f32();
#pragma omp parallel
  {
    std::vector<float> kt(s.d_qk * s.seq_len), p(s.seq_len);  // K^T of the head; one row of P
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < s.batch * s.n_q; ++bh) {
      int64_t b = bh / s.n_q, h = bh % s.n_q;
      int64_t hk = h * s.n_k / s.n_q, hv = h * s.n_v / s.n_q;
      transpose_head(kt.data(), kp, s, b, s.n_k, hk, s.d_qk);
      for (int64_t t = 0; t < s.seq_len; ++t) {
        int64_t n = t + 1;  // causal: keys 0..t
        std::fill(p.begin(), p.begin() + n, 0.0f);
        add_rows(p.data(), n, row(qp, s, b, t, s.n_q, h, s.d_qk), kt.data(), s.d_qk, s.seq_len);
        float max = -INFINITY;
        for (int64_t j = 0; j < n; ++j) max = std::max(max, p[j] *= s.scale);
        float sum = 0.0f;
        for (int64_t j = 0; j < n; ++j) sum += (p[j] = std::exp(p[j] - max));
        float inv_sum = 1.0f / sum;
        for (int64_t j = 0; j < n; ++j) p[j] *= inv_sum;
        float* o_t = row(op, s, b, t, s.n_q, h, s.d_v);
        std::fill(o_t, o_t + s.d_v, 0.0f);
        add_rows(o_t, s.d_v, p.data(), row(vp, s, b, 0, s.n_v, hv, s.d_v), n, s.n_v * s.d_v);
        lp[(b * s.n_q + h) * s.seq_len + t] = max + std::log(sum);
      }
    }
  }
}

void attention_backward(Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor q, Tensor k,
                        Tensor v, Tensor out, Tensor lse) {
  const Dims s = dims_of(q, k, v);
  const int64_t T = s.seq_len;
  const float *qp = q.f32(), *kp = k.f32(), *vp = v.f32(), *op = out.f32(), *lp = lse.f32();
  const float* dop = d_out.f32();
  float *dqp = d_q.f32(), *dkp = d_k.f32(), *dvp = d_v.f32();
  // The smallest run of consecutive query heads whose key heads and value heads are used by
  // no other run: a multiple of both n_q / n_k and n_q / n_v.
  const int64_t group = std::lcm(s.n_q / s.n_k, s.n_q / s.n_v), num_groups = s.n_q / group;
  const int64_t k_per_group = group * s.n_k / s.n_q, v_per_group = group * s.n_v / s.n_q;
#pragma omp parallel
  {
    // K^T and V^T of the current heads; dK^T and dV^T of all the group's heads.
    std::vector<float> kt(s.d_qk * T), vt(s.d_v * T);
    std::vector<float> dkt(k_per_group * s.d_qk * T), dvt(v_per_group * s.d_v * T);
    std::vector<float> p(T), ds(T);
#pragma omp for schedule(static)
    for (int64_t unit = 0; unit < s.batch * num_groups; ++unit) {
      int64_t b = unit / num_groups, g = unit % num_groups;
      std::fill(dkt.begin(), dkt.end(), 0.0f);
      std::fill(dvt.begin(), dvt.end(), 0.0f);
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        int64_t hk = h * s.n_k / s.n_q, hv = h * s.n_v / s.n_q;
        float* dkt_h = dkt.data() + (hk - g * k_per_group) * s.d_qk * T;
        float* dvt_h = dvt.data() + (hv - g * v_per_group) * s.d_v * T;
        transpose_head(kt.data(), kp, s, b, s.n_k, hk, s.d_qk);
        transpose_head(vt.data(), vp, s, b, s.n_v, hv, s.d_v);
        for (int64_t t = 0; t < T; ++t) {
          int64_t n = t + 1;
          const float* q_t = row(qp, s, b, t, s.n_q, h, s.d_qk);
          const float* do_t = row(dop, s, b, t, s.n_q, h, s.d_v);
          const float* o_t = row(op, s, b, t, s.n_q, h, s.d_v);
          float lse_t = lp[(b * s.n_q + h) * T + t];
          float do_dot_o = 0.0f;  // rowsum(dO * O)
          for (int64_t i = 0; i < s.d_v; ++i) do_dot_o += do_t[i] * o_t[i];
          std::fill(p.begin(), p.begin() + n, 0.0f);
          std::fill(ds.begin(), ds.begin() + n, 0.0f);
          add_rows(p.data(), n, q_t, kt.data(), s.d_qk, T);    // S row (unscaled)
          add_rows(ds.data(), n, do_t, vt.data(), s.d_v, T);  // dP row
          for (int64_t j = 0; j < n; ++j) {
            p[j] = std::exp(s.scale * p[j] - lse_t);
            ds[j] = s.scale * p[j] * (ds[j] - do_dot_o);  // dS, with the softmax scale folded in
          }
          float* dq_t = row(dqp, s, b, t, s.n_q, h, s.d_qk);
          std::fill(dq_t, dq_t + s.d_qk, 0.0f);
          add_rows(dq_t, s.d_qk, ds.data(), row(kp, s, b, 0, s.n_k, hk, s.d_qk), n, s.n_k * s.d_qk);
          for (int64_t i = 0; i < s.d_qk; ++i) axpy(dkt_h + i * T, q_t[i], ds.data(), n);
          for (int64_t i = 0; i < s.d_v; ++i) axpy(dvt_h + i * T, do_t[i], p.data(), n);
        }
      }
      // Write the group's dK and dV rows back untransposed (overwriting: no zeroing needed).
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t c = 0; c < k_per_group; ++c) {
          float* dk_t = row(dkp, s, b, t, s.n_k, g * k_per_group + c, s.d_qk);
          for (int64_t i = 0; i < s.d_qk; ++i) dk_t[i] = dkt[(c * s.d_qk + i) * T + t];
        }
        for (int64_t c = 0; c < v_per_group; ++c) {
          float* dv_t = row(dvp, s, b, t, s.n_v, g * v_per_group + c, s.d_v);
          for (int64_t i = 0; i < s.d_v; ++i) dv_t[i] = dvt[(c * s.d_v + i) * T + t];
        }
      }
    }
  }
}

}  // namespace sigma::cpu
