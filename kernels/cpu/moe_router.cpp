// The MoE router's ops, CPU reference: score functions, top-k selection with the optional
// expert bias and renormalisation, the balancing losses with their gradient coefficients and
// gradients, and the aux-loss-free bias update.
//
// Everything is fp32 storage with the reductions a balancing loss sums over tokens done in
// double, serially in row order (deterministic; an [N, E] pass is cheap beside the experts'
// matmuls). The CUDA twin (kernels/cuda/moe_router.cu) computes the same on the device, so a
// training step never waits for the router.
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

void router_scores_topk_forward(Tensor scores, Tensor probs, Tensor experts, Tensor logits,
                                Tensor bias, ops::ScoreFunction fn, bool renormalize) {
  cpu::router_scores_forward(scores, logits, fn);
  cpu::router_topk_forward(probs, experts, scores, bias, renormalize);
}

namespace {

// The row sums behind the balancing losses, in row order, in double.
struct RowSums {
  std::vector<float> score, sharp;  // [E] column sums of scores and of the sharp softmax
  double top1 = 0;                  // sum_n max_e scores[n, e]
  double z_sq = 0;                  // sum_n logsumexp(logits[n])^2
  double entropy = 0;               // sum_n entropy of scores[n] normalised to sum 1 (nats)
};

RowSums row_sums(const float* z, const float* s, int64_t n, int64_t e, bool sharp,
                 float temperature) {
  std::vector<double> score_acc(size_t(e), 0.0), sharp_acc(size_t(e), 0.0);
  std::vector<float> q(static_cast<size_t>(e));
  RowSums sums;
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
    if (sharp) {
      softmax_row(q.data(), z + r * e, e, temperature);
      for (int64_t i = 0; i < e; ++i) sharp_acc[size_t(i)] += q[size_t(i)];
    }
  }
  // The column sums are kept in fp32, as the CUDA twin keeps them.
  sums.score.assign(score_acc.begin(), score_acc.end());
  sums.sharp.assign(sharp_acc.begin(), sharp_acc.end());
  return sums;
}

}  // namespace

void router_balance_forward(Tensor losses, Tensor coeffs, Tensor logits, Tensor scores,
                            Tensor counts, const ops::RouterBalanceConfig& c) {
  int64_t e = scores.size(-1), rows = scores.numel() / e;
  bool top1 = c.top1_lbl_coeff > 0;
  RowSums sums =
      row_sums(logits.f32(), scores.f32(), rows, e, top1, float(c.top1_lbl_temperature));
  const std::vector<float>& sharp = sums.sharp;
  const int32_t* count = counts.i32();
  int64_t total_count = 0;
  for (int64_t i = 0; i < e; ++i) total_count += count[i];
  SIGMA_CHECK(total_count > 0, "router_balance_forward: no token routed");
  double n = double(rows), experts = double(e), total = double(total_count);
  float* g = coeffs.f32();  // [score E | sharp E | top1 | z]
  double lbl = 0, top1_lbl = 0;
  for (int64_t i = 0; i < e; ++i) {
    double f = double(count[i]) / total;
    lbl += experts * f * sums.score[size_t(i)] / n;
    // d LBL / d scores[n, i] = E f_i / N for every token n.
    g[i] = float(c.lbl_coeff * experts * f / n);
  }
  double mean_top1 = sums.top1 / n;
  std::fill(g + e, g + 2 * e + 1, 0.0f);
  if (top1) {
    double sum_sq = 0;
    for (int64_t i = 0; i < e; ++i) sum_sq += (sharp[size_t(i)] / n) * (sharp[size_t(i)] / n);
    top1_lbl = experts * sum_sq / mean_top1;
    for (int64_t i = 0; i < e; ++i)
      g[e + i] = float(c.top1_lbl_coeff * experts * 2.0 * (sharp[size_t(i)] / n) / mean_top1 / n);
    g[2 * e] = float(-c.top1_lbl_coeff * experts * sum_sq / (mean_top1 * mean_top1) / n);
  }
  g[2 * e + 1] = float(c.z_loss_coeff / n);
  double z_loss = sums.z_sq / n;
  float* l = losses.f32();
  l[ops::kLossLbl] = float(lbl);
  l[ops::kLossTop1Lbl] = float(top1_lbl);
  l[ops::kLossZ] = float(z_loss);
  l[ops::kLossEntropy] = float(sums.entropy / n);
  l[ops::kLossAux] =
      float(c.lbl_coeff * lbl + c.top1_lbl_coeff * top1_lbl + c.z_loss_coeff * z_loss);
}

void router_balance_backward_scores(Tensor d_scores, Tensor scores, Tensor coeffs,
                                    float aux_scale) {
  int64_t e = scores.size(-1), n = scores.numel() / e;
  const float* s = scores.f32();
  const float* c = coeffs.f32();
  float* ds = d_scores.f32();
  std::vector<float> g_score(static_cast<size_t>(e));
  for (int64_t i = 0; i < e; ++i) g_score[size_t(i)] = aux_scale * c[i];
  float g_top1 = aux_scale * c[2 * e];
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < e; ++i) ds[r * e + i] += g_score[size_t(i)];
    if (g_top1 != 0) ds[r * e + argmax_row(s + r * e, e)] += g_top1;
  }
}

void router_balance_backward_logits(Tensor d_logits, Tensor logits, Tensor coeffs,
                                    const ops::RouterBalanceConfig& c, float aux_scale) {
  int64_t e = logits.size(-1), n = logits.numel() / e;
  const float* z = logits.f32();
  float* dz = d_logits.f32();
  float temperature = float(c.top1_lbl_temperature);
  std::vector<float> g_sharp(static_cast<size_t>(e));
  for (int64_t i = 0; i < e; ++i) g_sharp[size_t(i)] = aux_scale * coeffs.f32()[e + i];
  bool sharp = c.top1_lbl_coeff > 0;
  float g_z = aux_scale * coeffs.f32()[2 * e + 1];
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    std::vector<float> q(static_cast<size_t>(e));
    const float* zr = z + r * e;
    if (sharp) {
      // fhat's softmax at temperature tau: d z = q * (g - <q, g>) / tau.
      softmax_row(q.data(), zr, e, temperature);
      double dot = 0;
      for (int64_t i = 0; i < e; ++i) dot += double(q[size_t(i)]) * g_sharp[size_t(i)];
      for (int64_t i = 0; i < e; ++i)
        dz[r * e + i] += q[size_t(i)] * (g_sharp[size_t(i)] - float(dot)) / temperature;
    }
    if (g_z != 0) {
      // d lse^2 / dz = 2 lse softmax(z).
      double lse = logsumexp_row(zr, e);
      softmax_row(q.data(), zr, e, 1.0f);
      for (int64_t i = 0; i < e; ++i) dz[r * e + i] += float(2.0 * g_z * lse * q[size_t(i)]);
    }
  }
}

void router_bias_update(Tensor bias, Tensor counts, float rate) {
  int64_t e = bias.numel();
  const int32_t* count = counts.i32();
  int64_t total = 0;
  for (int64_t i = 0; i < e; ++i) total += count[i];
  double mean = double(total) / double(e);
  float* b = bias.f32();
  for (int64_t i = 0; i < e; ++i) {
    double load = double(count[i]);
    // An overloaded expert's bias falls, an idle one's rises (DeepSeek-V3, section 2.1.2).
    if (load < mean) b[i] += rate;
    if (load > mean) b[i] -= rate;
  }
}

}  // namespace sigma::cpu
