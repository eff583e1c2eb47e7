// Attention of a few new queries over a KV cache (generation), on CUDA.
//
// Decoding asks for one query row per head against up to the whole cache: a matrix-vector
// product, bound by reading K and V once. One block per (query, head, sequence); its warps
// take interleaved keys, each keeping an online softmax (running max, sum and weighted V in
// fp32), and the warps merge their partial results at the end. Head dims up to 256.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"

namespace sigma::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxPerLane = 8;  // head dims up to 8 * 32 = 256

__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

template <typename T>
__global__ void attention_cached_kernel(T* out, const T* q, const T* k, const T* v, int t_q,
                                        int t_k, int n_q, int n_k, int n_v, int d_qk, int d_v,
                                        float scale) {
  const int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int hk = int(int64_t(h) * n_k / n_q), hv = int(int64_t(h) * n_v / n_q);
  const int n = t_k - t_q + t + 1;  // causal: keys 0 .. past + t

  const T* q_t = q + ((int64_t(b) * t_q + t) * n_q + h) * d_qk;
  float q_reg[kMaxPerLane], acc[kMaxPerLane];
  for (int r = 0; r < kMaxPerLane; ++r) {
    int i = lane + 32 * r;
    q_reg[r] = i < d_qk ? to_float(q_t[i]) * scale : 0.0f;
    acc[r] = 0.0f;
  }
  float max = -INFINITY, sum = 0.0f;
  for (int j = warp; j < n; j += kWarps) {
    const T* k_j = k + ((int64_t(b) * t_k + j) * n_k + hk) * d_qk;
    float s = 0.0f;
    for (int r = 0; r < kMaxPerLane; ++r) {
      int i = lane + 32 * r;
      if (i < d_qk) s += q_reg[r] * to_float(k_j[i]);
    }
    s = warp_sum(s);
    float new_max = fmaxf(max, s);
    float correction = __expf(max - new_max), p = __expf(s - new_max);
    sum = sum * correction + p;
    const T* v_j = v + ((int64_t(b) * t_k + j) * n_v + hv) * d_v;
    for (int r = 0; r < kMaxPerLane; ++r) {
      int i = lane + 32 * r;
      if (i < d_v) acc[r] = acc[r] * correction + p * to_float(v_j[i]);
    }
    max = new_max;
  }

  // Merge the warps: rescale each to the common max, then normalise by the summed weights.
  __shared__ float warp_max[kWarps], warp_sum_exp[kWarps];
  __shared__ float warp_acc[kWarps][kMaxPerLane * 32];
  if (lane == 0) {
    warp_max[warp] = max;
    warp_sum_exp[warp] = sum;
  }
  for (int r = 0; r < kMaxPerLane; ++r) warp_acc[warp][lane + 32 * r] = acc[r];
  __syncthreads();
  float total_max = -INFINITY;
  for (int w = 0; w < kWarps; ++w) total_max = fmaxf(total_max, warp_max[w]);
  float weight[kWarps], total = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    // A warp that saw no key has max -inf and contributes nothing.
    weight[w] = warp_max[w] == -INFINITY ? 0.0f : __expf(warp_max[w] - total_max);
    total += weight[w] * warp_sum_exp[w];
  }
  T* o_t = out + ((int64_t(b) * t_q + t) * n_q + h) * d_v;
  for (int i = threadIdx.x; i < d_v; i += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < kWarps; ++w) o += weight[w] * warp_acc[w][i];
    o_t[i] = from_float<T>(o / total);
  }
}

}  // namespace

void attention_cached_forward(Tensor out, Tensor q, Tensor k, Tensor v) {
  const int64_t batch = q.size(0), t_q = q.size(1), t_k = k.size(1);
  const int64_t n_q = q.size(2), n_k = k.size(2), n_v = v.size(2);
  const int64_t d_qk = q.size(3), d_v = v.size(3);
  SIGMA_CHECK(d_qk <= 32 * kMaxPerLane && d_v <= 32 * kMaxPerLane,
              "attention_cached_forward: head dims {} / {} above {}", d_qk, d_v, 32 * kMaxPerLane);
  SIGMA_CHECK(q.dtype == k.dtype && k.dtype == v.dtype && v.dtype == out.dtype,
              "attention_cached_forward: q, k, v and out must share a dtype");
  SIGMA_CHECK(t_q <= 65535 && n_q <= 65535 && batch <= 65535,
              "attention_cached_forward: {} queries x {} heads x {} sequences is too many", t_q,
              n_q, batch);
  dim3 grid{unsigned(t_q), unsigned(n_q), unsigned(batch)};
  float scale = float(1.0 / std::sqrt(double(d_qk)));
  SIGMA_DISPATCH_FLOAT(q.dtype, T, {
    attention_cached_kernel<T><<<grid, 32 * kWarps, 0, stream()>>>(
        static_cast<T*>(out.data), static_cast<const T*>(q.data), static_cast<const T*>(k.data),
        static_cast<const T*>(v.data), int(t_q), int(t_k), int(n_q), int(n_k), int(n_v),
        int(d_qk), int(d_v), scale);
  });
  SIGMA_CUDA_LAUNCHED("attention_cached");
}

}  // namespace sigma::cuda
