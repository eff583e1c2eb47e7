// The MoE router's ops, CPU reference: score functions, top-k selection with the optional
// expert bias and renormalisation, and the row sums and gradients of the balancing losses.
//
// Everything is fp32 storage with the reductions a balancing loss sums over tokens done in
// double, serially in row order (deterministic; an [N, E] pass is cheap beside the experts'
// matmuls). Leaves out: the E-length arithmetic that turns sums into losses and gradient
// coefficients (models/moe/router.cpp), and the bias update (host-side, once per step).
#include "kernels/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace sigma::cpu {
namespace {

// softmax(z / temperature) of one row into out, in double for the normaliser.
void softmax_row(float* out, const float* z, int64_t e, float temperature) {
  float max = z[0];
  for (int64_t i = 1; i < e; ++i) max = std::max(max, z[i]);
  double sum = 0;
  for (int64_t i = 0; i < e; ++i) sum += std::exp(double(z[i] - max) / temperature);
  for (int64_t i = 0; i < e; ++i) out[i] = float(std::exp(double(z[i] - max) / temperature) / sum);
}

double logsumexp_row(const float* z, int64_t e) {
  float max = z[0];
  for (int64_t i = 1; i < e; ++i) max = std::max(max, z[i]);
  double sum = 0;
  for (int64_t i = 0; i < e; ++i) sum += std::exp(double(z[i] - max));
  return double(max) + std::log(sum);
}

int64_t argmax_row(const float* s, int64_t e) {
  int64_t best = 0;
  for (int64_t i = 1; i < e; ++i)
    if (s[i] > s[best]) best = i;  // strict: ties keep the lower index
  return best;
}

}  // namespace

void router_scores_forward(Tensor scores, Tensor logits, ops::ScoreFunction fn) {
  int64_t e = logits.size(-1), n = logits.numel() / e;
  const float* z = logits.f32();
  float* s = scores.f32();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    if (fn == ops::ScoreFunction::kSoftmax) {
      softmax_row(s + r * e, z + r * e, e, 1.0f);
    } else {
      for (int64_t i = 0; i < e; ++i) s[r * e + i] = 1.0f / (1.0f + std::exp(-z[r * e + i]));
    }
  }
}

void router_scores_backward(Tensor d_logits, Tensor d_scores, Tensor scores, ops::ScoreFunction fn) {
  int64_t e = scores.size(-1), n = scores.numel() / e;
  const float* g = d_scores.f32();
  const float* s = scores.f32();
  float* dz = d_logits.f32();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    const float* gr = g + r * e;
    const float* sr = s + r * e;
    if (fn == ops::ScoreFunction::kSoftmax) {
      // Softmax Jacobian: dz = s * (g - <s, g>).
      double dot = 0;
      for (int64_t i = 0; i < e; ++i) dot += double(sr[i]) * gr[i];
      for (int64_t i = 0; i < e; ++i) dz[r * e + i] = sr[i] * (gr[i] - float(dot));
    } else {
      for (int64_t i = 0; i < e; ++i) dz[r * e + i] = gr[i] * sr[i] * (1.0f - sr[i]);
    }
  }
}

void router_topk_forward(Tensor probs, Tensor experts, Tensor scores, Tensor bias,
                         bool renormalize) {
  int64_t e = scores.size(-1), n = scores.numel() / e, k = probs.size(-1);
  const float* s = scores.f32();
  const float* b = bias.defined() ? bias.f32() : nullptr;
  float* p = probs.f32();
  int32_t* ex = experts.i32();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    const float* sr = s + r * e;
    std::vector<bool> taken(size_t(e), false);
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) {
      int64_t best = -1;
      float best_key = 0;
      for (int64_t i = 0; i < e; ++i) {
        if (taken[size_t(i)]) continue;
        float key = b ? sr[i] + b[i] : sr[i];
        if (best < 0 || key > best_key) best = i, best_key = key;  // strict: ties to lower index
      }
      taken[size_t(best)] = true;
      ex[r * k + j] = int32_t(best);
      p[r * k + j] = sr[best];
      sum += sr[best];
    }
    if (renormalize)
      for (int64_t j = 0; j < k; ++j) p[r * k + j] = float(double(p[r * k + j]) / sum);
  }
}

void router_topk_backward(Tensor d_scores, Tensor d_probs, Tensor probs, Tensor experts,
                          Tensor scores, bool renormalize) {
  int64_t e = scores.size(-1), n = scores.numel() / e, k = probs.size(-1);
  const float* s = scores.f32();
  const float* g = d_probs.f32();
  const float* p = probs.f32();
  const int32_t* ex = experts.i32();
  float* ds = d_scores.f32();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    std::fill(ds + r * e, ds + (r + 1) * e, 0.0f);
    if (!renormalize) {
      for (int64_t j = 0; j < k; ++j) ds[r * e + ex[r * k + j]] = g[r * k + j];
      continue;
    }
    // p_j = s_j / S with S the chosen scores' sum: ds_j = (g_j - sum_i g_i p_i) / S.
    double sum = 0, dot = 0;
    for (int64_t j = 0; j < k; ++j) {
      sum += s[r * e + ex[r * k + j]];
      dot += double(g[r * k + j]) * p[r * k + j];
    }
    for (int64_t j = 0; j < k; ++j)
      ds[r * e + ex[r * k + j]] = float((double(g[r * k + j]) - dot) / sum);
  }
}

ops::RouterSums router_balance_sums(Tensor score_sum, Tensor sharp_sum, Tensor logits, Tensor scores,
                                    float temperature) {
  int64_t e = scores.size(-1), n = scores.numel() / e;
  const float* z = logits.f32();
  const float* s = scores.f32();
  std::vector<double> score_acc(size_t(e), 0.0), sharp_acc(size_t(e), 0.0);
  std::vector<float> q(static_cast<size_t>(e));
  ops::RouterSums sums;
  for (int64_t r = 0; r < n; ++r) {
    const float* sr = s + r * e;
    double row_sum = 0;
    for (int64_t i = 0; i < e; ++i) {
      score_acc[size_t(i)] += sr[i];
      row_sum += sr[i];
    }
    sums.top1 += sr[argmax_row(sr, e)];
    double lse = logsumexp_row(z + r * e, e);
    sums.z_sq += lse * lse;
    for (int64_t i = 0; i < e; ++i) {
      double pi = sr[i] / row_sum;
      if (pi > 0) sums.entropy -= pi * std::log(pi);
    }
    if (sharp_sum.defined()) {
      softmax_row(q.data(), z + r * e, e, temperature);
      for (int64_t i = 0; i < e; ++i) sharp_acc[size_t(i)] += q[size_t(i)];
    }
  }
  for (int64_t i = 0; i < e; ++i) score_sum.f32()[i] = float(score_acc[size_t(i)]);
  if (sharp_sum.defined())
    for (int64_t i = 0; i < e; ++i) sharp_sum.f32()[i] = float(sharp_acc[size_t(i)]);
  return sums;
}

void router_balance_backward_scores(Tensor d_scores, Tensor scores, Tensor g_score, float g_top1) {
  int64_t e = scores.size(-1), n = scores.numel() / e;
  const float* s = scores.f32();
  const float* gs = g_score.f32();
  float* ds = d_scores.f32();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < e; ++i) ds[r * e + i] += gs[i];
    if (g_top1 != 0) ds[r * e + argmax_row(s + r * e, e)] += g_top1;
  }
}

void router_balance_backward_logits(Tensor d_logits, Tensor logits, Tensor g_sharp,
                                    float temperature, float g_z) {
  int64_t e = logits.size(-1), n = logits.numel() / e;
  const float* z = logits.f32();
  const float* gq = g_sharp.defined() ? g_sharp.f32() : nullptr;
  float* dz = d_logits.f32();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    std::vector<float> q(static_cast<size_t>(e));
    const float* zr = z + r * e;
    if (gq) {
      // fhat's softmax at temperature tau: d z = q * (g - <q, g>) / tau.
      softmax_row(q.data(), zr, e, temperature);
      double dot = 0;
      for (int64_t i = 0; i < e; ++i) dot += double(q[size_t(i)]) * gq[i];
      for (int64_t i = 0; i < e; ++i)
        dz[r * e + i] += q[size_t(i)] * (gq[i] - float(dot)) / temperature;
    }
    if (g_z != 0) {
      // d lse^2 / dz = 2 lse softmax(z).
      double lse = logsumexp_row(zr, e);
      softmax_row(q.data(), zr, e, 1.0f);
      for (int64_t i = 0; i < e; ++i) dz[r * e + i] += float(2.0 * g_z * lse * q[size_t(i)]);
    }
  }
}

}  // namespace sigma::cpu
