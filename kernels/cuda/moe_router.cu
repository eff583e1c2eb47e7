// The MoE router's ops on CUDA: scores fused with top-k, their backward passes, the balancing
// losses with their gradient coefficients, and the expert-bias update, all on the device.
//
// One warp per row of E experts (E <= 1024): rows are short, so a warp holds one with a few
// columns per lane, and reductions are shuffles. The arithmetic follows the CPU reference
// (kernels/cpu/moe_router.cpp) operation for operation: the softmax normaliser and every
// row sum in double, exp in double, products rounded before they are added (__fmul_rn), so
// the scores, and with them the top-k choice, match the CPU's to the last bit but for the
// order of a few double additions. The balancing sums are deterministic: a fixed grid writes
// one partial per block and a single block adds them in block order, then does the E-length
// arithmetic of router_balance_forward, serially as the CPU does.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"

#include <algorithm>

namespace sigma::cuda {
namespace {

constexpr int kMaxExperts = 1024;
constexpr int kWarps = 4;  // rows per block in the row kernels
constexpr int kBalanceBlocks = 128;
constexpr unsigned kAll = 0xffffffffu;

__device__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(kAll, v, offset));
  return v;
}

__device__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(kAll, v, offset);
  return v;
}

// A candidate of an argmax: the larger key wins, ties go to the lower index, none (-1) loses.
struct Best {
  float key;
  int index;
};

__device__ Best better(Best a, Best b) {
  if (a.index < 0) return b;
  if (b.index < 0) return a;
  return b.key > a.key || (b.key == a.key && b.index < a.index) ? b : a;
}

__device__ Best warp_best(Best b) {
  for (int offset = 16; offset > 0; offset /= 2) {
    Best o{__shfl_xor_sync(kAll, b.key, offset), __shfl_xor_sync(kAll, b.index, offset)};
    b = better(b, o);
  }
  return b;
}

// argmax of a row (ties to the lower index), known to every lane.
__device__ int row_argmax(const float* s, int e, int lane) {
  Best b{0.0f, -1};
  for (int i = lane; i < e; i += 32) b = better(b, Best{s[i], i});
  return warp_best(b).index;
}

// softmax(z / temperature) of one row into out, the CPU reference's arithmetic.
__device__ void softmax_row(float* out, const float* z, int e, float temperature, int lane) {
  float m = -INFINITY;
  for (int i = lane; i < e; i += 32) m = fmaxf(m, z[i]);
  m = warp_max(m);
  double sum = 0;
  for (int i = lane; i < e; i += 32) sum += exp(double(z[i] - m) / temperature);
  sum = warp_sum(sum);
  for (int i = lane; i < e; i += 32) out[i] = float(exp(double(z[i] - m) / temperature) / sum);
}

// max + log(sum exp(z - max)) of one row, in double.
__device__ double logsumexp_row(const float* z, int e, int lane) {
  float m = -INFINITY;
  for (int i = lane; i < e; i += 32) m = fmaxf(m, z[i]);
  m = warp_max(m);
  double sum = 0;
  for (int i = lane; i < e; i += 32) sum += exp(double(z[i] - m));
  return double(m) + log(warp_sum(sum));
}

__device__ void scores_row(float* s, const float* z, int e, ops::ScoreFunction fn, int lane) {
  if (fn == ops::ScoreFunction::kSoftmax) {
    softmax_row(s, z, e, 1.0f, lane);
  } else {
    // expf correctly rounded through double, as the CPU's std::exp(float) is.
    for (int i = lane; i < e; i += 32)
      s[i] = __fdiv_rn(1.0f, __fadd_rn(1.0f, float(exp(-double(z[i])))));
  }
}

// Scores (when logits is given; else read from scores), then the top-k of scores + bias.
// Each warp keeps its row's keys in shared memory; a lane remembers which of its columns
// were taken in a bit mask (a column is only ever read by the lane that owns it).
__global__ void router_topk_kernel(float* scores, float* probs, int32_t* experts,
                                   const float* logits, const float* bias, int64_t n, int e,
                                   int k, ops::ScoreFunction fn, bool renormalize) {
  extern __shared__ float keys_shared[];
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int64_t r = blockIdx.x * int64_t(kWarps) + warp;
  if (r >= n) return;
  float* s = scores + r * e;
  if (logits) {
    scores_row(s, logits + r * e, e, fn, lane);
    __syncwarp();
  }
  float* keys = keys_shared + warp * e;
  for (int i = lane; i < e; i += 32) keys[i] = bias ? __fadd_rn(s[i], bias[i]) : s[i];
  uint32_t taken = 0;  // bit j: column lane + 32 j
  double sum = 0;
  for (int j = 0; j < k; ++j) {
    Best b{0.0f, -1};
    for (int i = lane, bit = 0; i < e; i += 32, ++bit)
      if (!(taken >> bit & 1u)) b = better(b, Best{keys[i], i});
    b = warp_best(b);
    if (b.index % 32 == lane) taken |= 1u << (b.index / 32);
    if (lane == 0) {
      float p = s[b.index];
      experts[r * k + j] = b.index;
      probs[r * k + j] = p;
      sum += p;
    }
  }
  if (lane == 0 && renormalize)
    for (int j = 0; j < k; ++j) probs[r * k + j] = float(double(probs[r * k + j]) / sum);
}

__global__ void scores_backward_kernel(float* d_logits, const float* d_scores, const float* scores,
                                       int64_t n, int e, ops::ScoreFunction fn) {
  int lane = threadIdx.x % 32;
  int64_t r = blockIdx.x * int64_t(kWarps) + threadIdx.x / 32;
  if (r >= n) return;
  const float* g = d_scores + r * e;
  const float* s = scores + r * e;
  float* dz = d_logits + r * e;
  if (fn == ops::ScoreFunction::kSoftmax) {
    // Softmax Jacobian: dz = s * (g - <s, g>).
    double dot = 0;
    for (int i = lane; i < e; i += 32) dot += double(s[i]) * g[i];
    float dot_f = float(warp_sum(dot));
    for (int i = lane; i < e; i += 32) dz[i] = __fmul_rn(s[i], g[i] - dot_f);
  } else {
    for (int i = lane; i < e; i += 32) dz[i] = __fmul_rn(__fmul_rn(g[i], s[i]), 1.0f - s[i]);
  }
}

// d_scores (overwrite): zero but at the chosen experts. Lane 0 does the K-long sums in k
// order, as the CPU does.
__global__ void topk_backward_kernel(float* d_scores, const float* d_probs, const float* probs,
                                     const int32_t* experts, const float* scores, int64_t n,
                                     int e, int k, bool renormalize) {
  int lane = threadIdx.x % 32;
  int64_t r = blockIdx.x * int64_t(kWarps) + threadIdx.x / 32;
  if (r >= n) return;
  float* ds = d_scores + r * e;
  for (int i = lane; i < e; i += 32) ds[i] = 0.0f;
  __syncwarp();
  if (lane != 0) return;
  const float* g = d_probs + r * k;
  const int32_t* ex = experts + r * k;
  if (!renormalize) {
    for (int j = 0; j < k; ++j) ds[ex[j]] = g[j];
    return;
  }
  // p_j = s_j / S with S the chosen scores' sum: ds_j = (g_j - sum_i g_i p_i) / S.
  double sum = 0, dot = 0;
  for (int j = 0; j < k; ++j) {
    sum += scores[r * e + ex[j]];
    dot += double(g[j]) * probs[r * k + j];
  }
  for (int j = 0; j < k; ++j) ds[ex[j]] = float((double(g[j]) - dot) / sum);
}

__global__ void balance_backward_scores_kernel(float* d_scores, const float* scores,
                                               const float* coeffs, float aux_scale, int64_t n,
                                               int e) {
  int lane = threadIdx.x % 32;
  int64_t r = blockIdx.x * int64_t(kWarps) + threadIdx.x / 32;
  if (r >= n) return;
  float* ds = d_scores + r * e;
  for (int i = lane; i < e; i += 32) ds[i] += __fmul_rn(aux_scale, coeffs[i]);
  float g_top1 = __fmul_rn(aux_scale, coeffs[2 * e]);
  if (g_top1 == 0) return;
  int best = row_argmax(scores + r * e, e, lane);
  if (best % 32 == lane) ds[best] += g_top1;  // the lane that wrote ds[best] above
}

// q per warp in shared memory: [kWarps][e].
__global__ void balance_backward_logits_kernel(float* d_logits, const float* logits,
                                               const float* coeffs, float temperature,
                                               bool sharp, float aux_scale, int64_t n, int e) {
  extern __shared__ float q_shared[];
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int64_t r = blockIdx.x * int64_t(kWarps) + warp;
  if (r >= n) return;
  const float* z = logits + r * e;
  float* dz = d_logits + r * e;
  float* q = q_shared + warp * e;
  if (sharp) {
    // fhat's softmax at temperature tau: d z = q * (g - <q, g>) / tau.
    softmax_row(q, z, e, temperature, lane);
    double dot = 0;
    for (int i = lane; i < e; i += 32) dot += double(q[i]) * __fmul_rn(aux_scale, coeffs[e + i]);
    float dot_f = float(warp_sum(dot));
    for (int i = lane; i < e; i += 32)
      dz[i] += __fdiv_rn(__fmul_rn(q[i], __fmul_rn(aux_scale, coeffs[e + i]) - dot_f), temperature);
  }
  float g_z = __fmul_rn(aux_scale, coeffs[2 * e + 1]);
  if (g_z != 0) {
    // d lse^2 / dz = 2 lse softmax(z).
    double lse = logsumexp_row(z, e, lane);
    softmax_row(q, z, e, 1.0f, lane);
    for (int i = lane; i < e; i += 32) dz[i] += float(2.0 * g_z * lse * q[i]);
  }
}

// One partial per block of [score sums E | sharp sums E | top1 | z_sq | entropy], doubles;
// each warp sums its rows into its own shared row (a lane owns its columns), then the block
// adds its warps in order. Shared memory: those rows, then a row of the sharp softmax per warp.
__global__ void balance_partials_kernel(double* partials, const float* logits,
                                        const float* scores, int64_t n, int e, bool sharp,
                                        float temperature) {
  extern __shared__ double acc_shared[];
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int width = 2 * e + 3;
  double* acc = acc_shared + warp * width;
  float* q = reinterpret_cast<float*>(acc_shared + kWarps * width) + warp * e;
  for (int i = lane; i < width; i += 32) acc[i] = 0;
  __syncwarp();
  double top1 = 0, z_sq = 0, entropy = 0;  // lane 0's
  for (int64_t r = blockIdx.x * int64_t(kWarps) + warp; r < n;
       r += int64_t(gridDim.x) * kWarps) {
    const float* s = scores + r * e;
    const float* z = logits + r * e;
    double row_sum = 0;
    for (int i = lane; i < e; i += 32) {
      acc[i] += s[i];
      row_sum += s[i];
    }
    row_sum = warp_sum(row_sum);
    int best = row_argmax(s, e, lane);
    double lse = logsumexp_row(z, e, lane);
    double h = 0;
    for (int i = lane; i < e; i += 32) {
      double p = s[i] / row_sum;
      if (p > 0) h -= p * log(p);
    }
    h = warp_sum(h);
    if (lane == 0) {
      top1 += s[best];
      z_sq += lse * lse;
      entropy += h;
    }
    if (sharp) {
      softmax_row(q, z, e, temperature, lane);
      __syncwarp();
      for (int i = lane; i < e; i += 32) acc[e + i] += q[i];
    }
  }
  if (lane == 0) {
    acc[2 * e] = top1;
    acc[2 * e + 1] = z_sq;
    acc[2 * e + 2] = entropy;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    double total = 0;
    for (int w = 0; w < kWarps; ++w) total += acc_shared[w * width + i];
    partials[blockIdx.x * int64_t(width) + i] = total;
  }
}

// One block: adds the partials in block order, then router_balance_forward's E-length
// arithmetic exactly as the CPU reference does it (thread 0, in expert order).
__global__ void balance_finish_kernel(float* losses, float* coeffs, const double* partials,
                                      int blocks, const int32_t* counts, int64_t rows, int e,
                                      ops::RouterBalanceConfig c) {
  extern __shared__ double sums[];  // [2E + 3]
  int width = 2 * e + 3;
  for (int i = threadIdx.x; i < width; i += blockDim.x) {
    double total = 0;
    for (int b = 0; b < blocks; ++b) total += partials[b * int64_t(width) + i];
    // The column sums are kept in fp32, as the CPU reference keeps them.
    sums[i] = i < 2 * e ? double(float(total)) : total;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  const double* score = sums;
  const double* sharp_sum = sums + e;
  double top1_sum = sums[2 * e], z_sq = sums[2 * e + 1], entropy = sums[2 * e + 2];
  int64_t total_count = 0;
  for (int i = 0; i < e; ++i) total_count += counts[i];
  double n = double(rows), experts = double(e), total = double(total_count);
  double lbl = 0, top1_lbl = 0;
  for (int i = 0; i < e; ++i) {
    double f = double(counts[i]) / total;
    lbl += experts * f * score[i] / n;
    coeffs[i] = float(c.lbl_coeff * experts * f / n);
  }
  double mean_top1 = top1_sum / n;
  for (int i = e; i <= 2 * e; ++i) coeffs[i] = 0.0f;
  if (c.top1_lbl_coeff > 0) {
    double sum_sq = 0;
    for (int i = 0; i < e; ++i) sum_sq += (sharp_sum[i] / n) * (sharp_sum[i] / n);
    top1_lbl = experts * sum_sq / mean_top1;
    for (int i = 0; i < e; ++i)
      coeffs[e + i] = float(c.top1_lbl_coeff * experts * 2.0 * (sharp_sum[i] / n) / mean_top1 / n);
    coeffs[2 * e] = float(-c.top1_lbl_coeff * experts * sum_sq / (mean_top1 * mean_top1) / n);
  }
  coeffs[2 * e + 1] = float(c.z_loss_coeff / n);
  double z_loss = z_sq / n;
  losses[ops::kLossLbl] = float(lbl);
  losses[ops::kLossTop1Lbl] = float(top1_lbl);
  losses[ops::kLossZ] = float(z_loss);
  losses[ops::kLossEntropy] = float(entropy / n);
  losses[ops::kLossAux] =
      float(c.lbl_coeff * lbl + c.top1_lbl_coeff * top1_lbl + c.z_loss_coeff * z_loss);
}

__global__ void bias_update_kernel(float* bias, const int32_t* counts, int e, float rate) {
  __shared__ double mean;
  if (threadIdx.x == 0) {
    int64_t total = 0;
    for (int i = 0; i < e; ++i) total += counts[i];
    mean = double(total) / double(e);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < e; i += blockDim.x) {
    double load = double(counts[i]);
    // An overloaded expert's bias falls, an idle one's rises (DeepSeek-V3, section 2.1.2).
    if (load < mean) bias[i] += rate;
    if (load > mean) bias[i] -= rate;
  }
}

unsigned row_blocks(int64_t n) { return unsigned(ceil_div(n, kWarps)); }

int experts_of(const char* op, Tensor t) {
  int64_t e = t.size(-1);
  SIGMA_CHECK(e <= kMaxExperts, "{}: {} experts (the CUDA router takes at most {})", op, e,
              kMaxExperts);
  return int(e);
}

void topk(Tensor scores, Tensor probs, Tensor experts, Tensor logits, Tensor bias,
          ops::ScoreFunction fn, bool renormalize) {
  int e = experts_of("router_topk_forward", scores);
  int64_t n = scores.numel() / e;
  int k = int(probs.size(-1));
  if (n == 0) return;
  size_t shared = size_t(kWarps) * e * sizeof(float);
  router_topk_kernel<<<row_blocks(n), kWarps * 32, shared, stream()>>>(
      scores.f32(), probs.f32(), experts.i32(), logits.defined() ? logits.f32() : nullptr,
      bias.defined() ? bias.f32() : nullptr, n, e, k, fn, renormalize);
  SIGMA_CUDA_LAUNCHED("router_topk");
}

}  // namespace

void router_scores_forward(Tensor scores, Tensor logits, ops::ScoreFunction fn) {
  int e = experts_of("router_scores_forward", logits);
  int64_t n = logits.numel() / e;
  if (n == 0) return;
  // The fused kernel with nothing to choose: scores only.
  router_topk_kernel<<<row_blocks(n), kWarps * 32, size_t(kWarps) * e * sizeof(float),
                       stream()>>>(scores.f32(), nullptr, nullptr, logits.f32(), nullptr, n, e,
                                   0, fn, false);
  SIGMA_CUDA_LAUNCHED("router_scores_forward");
}

void router_scores_backward(Tensor d_logits, Tensor d_scores, Tensor scores,
                            ops::ScoreFunction fn) {
  int e = experts_of("router_scores_backward", scores);
  int64_t n = scores.numel() / e;
  if (n == 0) return;
  scores_backward_kernel<<<row_blocks(n), kWarps * 32, 0, stream()>>>(
      d_logits.f32(), d_scores.f32(), scores.f32(), n, e, fn);
  SIGMA_CUDA_LAUNCHED("router_scores_backward");
}

void router_topk_forward(Tensor probs, Tensor experts, Tensor scores, Tensor bias,
                         bool renormalize) {
  topk(scores, probs, experts, Tensor{}, bias, ops::ScoreFunction::kSoftmax, renormalize);
}

void router_scores_topk_forward(Tensor scores, Tensor probs, Tensor experts, Tensor logits,
                                Tensor bias, ops::ScoreFunction fn, bool renormalize) {
  topk(scores, probs, experts, logits, bias, fn, renormalize);
}

void router_topk_backward(Tensor d_scores, Tensor d_probs, Tensor probs, Tensor experts,
                          Tensor scores, bool renormalize) {
  int e = experts_of("router_topk_backward", scores);
  int64_t n = scores.numel() / e;
  if (n == 0) return;
  topk_backward_kernel<<<row_blocks(n), kWarps * 32, 0, stream()>>>(
      d_scores.f32(), d_probs.f32(), probs.f32(), experts.i32(), scores.f32(), n, e,
      int(probs.size(-1)), renormalize);
  SIGMA_CUDA_LAUNCHED("router_topk_backward");
}

void router_balance_forward(Tensor losses, Tensor coeffs, Tensor logits, Tensor scores,
                            Tensor counts, const ops::RouterBalanceConfig& config) {
  int e = experts_of("router_balance_forward", scores);
  int64_t n = scores.numel() / e;
  bool sharp = config.top1_lbl_coeff > 0;
  // A fixed grid for a given N: the same additions in the same order on every run.
  int blocks = int(std::clamp<int64_t>(ceil_div(n, kWarps), 1, kBalanceBlocks));
  int width = 2 * e + 3;
  auto* partials = static_cast<double*>(scratch());
  size_t shared = size_t(kWarps) * (width * sizeof(double) + e * sizeof(float));
  if (shared > 48 * 1024)  // up to 82 KiB for 1024 experts: past the default, opt in
    SIGMA_CUDA_CHECK(cudaFuncSetAttribute(balance_partials_kernel,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(shared)));
  balance_partials_kernel<<<blocks, kWarps * 32, shared, stream()>>>(
      partials, logits.f32(), scores.f32(), n, e, sharp, float(config.top1_lbl_temperature));
  SIGMA_CUDA_LAUNCHED("router_balance_partials");
  balance_finish_kernel<<<1, 256, size_t(width) * sizeof(double), stream()>>>(
      losses.f32(), coeffs.f32(), partials, blocks, counts.i32(), n, e, config);
  SIGMA_CUDA_LAUNCHED("router_balance_finish");
}

void router_balance_backward_scores(Tensor d_scores, Tensor scores, Tensor coeffs,
                                    float aux_scale) {
  int e = experts_of("router_balance_backward_scores", scores);
  int64_t n = scores.numel() / e;
  if (n == 0) return;
  balance_backward_scores_kernel<<<row_blocks(n), kWarps * 32, 0, stream()>>>(
      d_scores.f32(), scores.f32(), coeffs.f32(), aux_scale, n, e);
  SIGMA_CUDA_LAUNCHED("router_balance_backward_scores");
}

void router_balance_backward_logits(Tensor d_logits, Tensor logits, Tensor coeffs,
                                    const ops::RouterBalanceConfig& config, float aux_scale) {
  int e = experts_of("router_balance_backward_logits", logits);
  int64_t n = logits.numel() / e;
  if (n == 0) return;
  balance_backward_logits_kernel<<<row_blocks(n), kWarps * 32, size_t(kWarps) * e * sizeof(float),
                                   stream()>>>(
      d_logits.f32(), logits.f32(), coeffs.f32(), float(config.top1_lbl_temperature),
      config.top1_lbl_coeff > 0, aux_scale, n, e);
  SIGMA_CUDA_LAUNCHED("router_balance_backward_logits");
}

void router_bias_update(Tensor bias, Tensor counts, float rate) {
  bias_update_kernel<<<1, 256, 0, stream()>>>(bias.f32(), counts.i32(), int(bias.numel()), rate);
  SIGMA_CUDA_LAUNCHED("router_bias_update");
}

}  // namespace sigma::cuda
