// Attention of new queries over a KV cache, CPU reference (generation; models/decoder.h).
//
// The Tq queries sit at positions past .. past + Tq - 1 (past = Tk - Tq), query t reads keys
// 0 .. past + t, query head h reads key head h * n_k / n_q and value head h * n_v / n_q
// (DiffQKV, Sigma paper section 2: K and V keep their own head counts in the cache, never
// repeated to n_q). Each score and each output element is summed in the order
// attention_forward uses (over the head dim, then over key positions, starting from zero), so
// a cached pass gives the bits of the full causal pass whenever its inputs have the same bits.
// Forward only: generation never differentiates.
#include "kernels/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace sigma::cpu {

void attention_cached_forward(Tensor out, Tensor q, Tensor k, Tensor v) {
  const int64_t batch = q.size(0), t_q = q.size(1), t_k = k.size(1), past = t_k - t_q;
  const int64_t n_q = q.size(2), n_k = k.size(2), n_v = v.size(2);
  const int64_t d_qk = q.size(3), d_v = v.size(3);
  const float scale = float(1.0 / std::sqrt(double(d_qk)));
  const float *qp = q.f32(), *kp = k.f32(), *vp = v.f32();
  float* op = out.f32();
#pragma omp parallel
  {
    std::vector<float> p(static_cast<size_t>(t_k));  // one row of scores, then probabilities
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < n_q; ++h) {
        int64_t hk = h * n_k / n_q, hv = h * n_v / n_q;
        for (int64_t t = 0; t < t_q; ++t) {
          const float* q_t = qp + ((b * t_q + t) * n_q + h) * d_qk;
          int64_t n = past + t + 1;  // causal: keys 0 .. past + t
          float max = -INFINITY;
          for (int64_t j = 0; j < n; ++j) {
            const float* k_j = kp + ((b * t_k + j) * n_k + hk) * d_qk;
            float s = 0.0f;
            for (int64_t i = 0; i < d_qk; ++i) s = s + q_t[i] * k_j[i];
            max = std::max(max, p[size_t(j)] = s * scale);
          }
          float sum = 0.0f;
          for (int64_t j = 0; j < n; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - max));
          float inv_sum = 1.0f / sum;
          for (int64_t j = 0; j < n; ++j) p[size_t(j)] *= inv_sum;
          float* o_t = op + ((b * t_q + t) * n_q + h) * d_v;
          std::fill(o_t, o_t + d_v, 0.0f);
          for (int64_t j = 0; j < n; ++j) {
            const float* v_j = vp + ((b * t_k + j) * n_v + hv) * d_v;
            for (int64_t i = 0; i < d_v; ++i) o_t[i] += p[size_t(j)] * v_j[i];
          }
        }
      }
  }
}

}  // namespace sigma::cpu
