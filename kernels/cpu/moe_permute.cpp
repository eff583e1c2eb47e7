// MoE dispatch ops, CPU reference: the routing map (a stable counting sort of the token ->
// expert assignments) and the step's running counts, permute into expert-contiguous rows, and
// unpermute with the weighted combine, with their backward passes.
//
// Dropless: every assignment gets a row, R = N * K. Each output row is written by exactly
// one (n, k), and the combine sums a token's K rows in k order, so all of it is
// deterministic under any thread count. Leaves out: capacity factors and token dropping.
#include "kernels/cpu/cpu_ops.h"

#include <cstring>
#include <vector>

namespace sigma::cpu {

void moe_routing_map(Tensor row_of, Tensor tokens_per_expert, Tensor experts) {
  int64_t n_assign = experts.numel(), e = tokens_per_expert.numel();
  const int32_t* ex = experts.i32();
  int32_t* counts = tokens_per_expert.i32();
  int32_t* row = row_of.i32();
  std::fill(counts, counts + e, 0);
  for (int64_t a = 0; a < n_assign; ++a) {
    SIGMA_CHECK(ex[a] >= 0 && ex[a] < e, "moe_routing_map: expert {} of {}", ex[a], e);
    counts[ex[a]] += 1;
  }
  std::vector<int64_t> next(size_t(e), 0);  // the first free row of each expert
  for (int64_t i = 1; i < e; ++i) next[size_t(i)] = next[size_t(i - 1)] + counts[i - 1];
  // Assignments in (token, k) order, so rows within an expert follow token order.
  for (int64_t a = 0; a < n_assign; ++a) row[a] = int32_t(next[size_t(ex[a])]++);
}

void moe_counts_accumulate(Tensor total, Tensor counts) {
  int32_t* t = total.i32();
  const int32_t* c = counts.i32();
  for (int64_t i = 0; i < total.numel(); ++i) t[i] += c[i];
}

void moe_permute_forward(Tensor out, Tensor inp, Tensor row_of) {
  int64_t d = inp.size(-1), n = inp.numel() / d, k = row_of.numel() / n;
  const float* x = inp.f32();
  const int32_t* row = row_of.i32();
  float* y = out.f32();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < k; ++j)
      std::memcpy(y + int64_t(row[t * k + j]) * d, x + t * d, size_t(d) * sizeof(float));
}

void moe_permute_backward(Tensor d_inp, Tensor d_out, Tensor row_of) {
  int64_t d = d_inp.size(-1), n = d_inp.numel() / d, k = row_of.numel() / n;
  const float* g = d_out.f32();
  const int32_t* row = row_of.i32();
  float* dx = d_inp.f32();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    float* dxt = dx + t * d;
    std::memcpy(dxt, g + int64_t(row[t * k]) * d, size_t(d) * sizeof(float));
    for (int64_t j = 1; j < k; ++j) {
      const float* gr = g + int64_t(row[t * k + j]) * d;
      for (int64_t c = 0; c < d; ++c) dxt[c] += gr[c];
    }
  }
}

void moe_unpermute_forward(Tensor out, Tensor inp, Tensor row_of, Tensor probs) {
  int64_t d = out.size(-1), n = out.numel() / d, k = row_of.numel() / n;
  const float* y = inp.f32();
  const float* p = probs.f32();
  const int32_t* row = row_of.i32();
  float* o = out.f32();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    float* ot = o + t * d;
    std::fill(ot, ot + d, 0.0f);
    for (int64_t j = 0; j < k; ++j) {
      const float* yr = y + int64_t(row[t * k + j]) * d;
      float w = p[t * k + j];
      for (int64_t c = 0; c < d; ++c) ot[c] += w * yr[c];
    }
  }
}

void moe_unpermute_backward(Tensor d_inp, Tensor d_probs, Tensor d_out, Tensor inp, Tensor row_of,
                            Tensor probs) {
  int64_t d = d_out.size(-1), n = d_out.numel() / d, k = row_of.numel() / n;
  const float* g = d_out.f32();
  const float* y = inp.f32();
  const float* p = probs.f32();
  const int32_t* row = row_of.i32();
  float* dy = d_inp.f32();
  float* dp = d_probs.f32();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    const float* gt = g + t * d;
    for (int64_t j = 0; j < k; ++j) {
      int64_t r = row[t * k + j];
      float w = p[t * k + j];
      double dot = 0;
      for (int64_t c = 0; c < d; ++c) {
        dy[r * d + c] = w * gt[c];
        dot += double(gt[c]) * y[r * d + c];
      }
      dp[t * k + j] = float(dot);
    }
  }
}

}  // namespace sigma::cpu
