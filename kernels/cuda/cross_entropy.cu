// Cross-entropy fused with softmax over the vocabulary, on CUDA: one block per row.
//
// Each thread keeps a running (max, sum of exp) over its strided slice of the row (online
// softmax, Milakov & Gimelshein 2018), and the block combines them, so a row is read once
// for its statistics. Backward recomputes them instead of keeping probabilities, so the
// [N, V] probability matrix never exists and d_logits may overwrite logits (ops.h).
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"

namespace sigma::cuda {
namespace {

constexpr int kThreads = 1024;

struct SoftmaxStats {
  float max;
  float sum;  // sum of exp(z - max)
};

__device__ SoftmaxStats combine(SoftmaxStats a, SoftmaxStats b) {
  float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return {m, 0.0f};
  return {m, a.sum * __expf(a.max - m) + b.sum * __expf(b.max - m)};
}

template <typename T>
__device__ SoftmaxStats row_stats(const T* z, int64_t v) {
  SoftmaxStats s{-INFINITY, 0.0f};
  for (int64_t i = threadIdx.x; i < v; i += kThreads) {
    float x = to_float(z[i]);
    if (x > s.max) {
      s.sum = s.sum * __expf(s.max - x) + 1.0f;
      s.max = x;
    } else {
      s.sum += __expf(x - s.max);
    }
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    SoftmaxStats o{__shfl_xor_sync(0xffffffff, s.max, offset),
                   __shfl_xor_sync(0xffffffff, s.sum, offset)};
    s = combine(s, o);
  }
  __shared__ SoftmaxStats warp_stats[kThreads / 32];
  __shared__ SoftmaxStats total;
  if (threadIdx.x % 32 == 0) warp_stats[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    SoftmaxStats t = warp_stats[0];
    for (int w = 1; w < kThreads / 32; ++w) t = combine(t, warp_stats[w]);
    total = t;
  }
  __syncthreads();
  return total;
}

template <typename T>
__global__ void cross_entropy_forward_kernel(float* losses, const T* logits,
                                             const int32_t* targets, int64_t v, int* error) {
  int64_t row = blockIdx.x;
  int32_t target = targets[row];
  if (target < 0 || target >= v) {  // ignored, or bad data (flagged)
    if (threadIdx.x == 0) {
      losses[row] = 0.0f;
      if (target >= v) atomicExch(error, 1);
    }
    return;
  }
  const T* z = logits + row * v;
  SoftmaxStats s = row_stats(z, v);
  if (threadIdx.x == 0) losses[row] = logf(s.sum) + s.max - to_float(z[target]);
}

template <typename T, typename D>
__global__ void cross_entropy_backward_kernel(D* d_logits, const T* logits,
                                              const int32_t* targets, int64_t v, float scale) {
  int64_t row = blockIdx.x;
  int32_t target = targets[row];
  D* dz = d_logits + row * v;
  if (target < 0 || target >= v) {
    for (int64_t i = threadIdx.x; i < v; i += kThreads) dz[i] = from_float<D>(0.0f);
    return;
  }
  const T* z = logits + row * v;
  SoftmaxStats s = row_stats(z, v);
  float inv_sum = 1.0f / s.sum;
  // Every read of z in this row happens before the barrier inside row_stats returns, and
  // each thread below reads only the elements it writes: in-place is safe.
  for (int64_t i = threadIdx.x; i < v; i += kThreads) {
    float p = __expf(to_float(z[i]) - s.max) * inv_sum;
    dz[i] = from_float<D>((p - (i == target ? 1.0f : 0.0f)) * scale);
  }
}

}  // namespace

void cross_entropy_forward(Tensor losses, Tensor logits, Tensor targets) {
  int64_t v = logits.size(-1), n = logits.numel() / v;
  if (n == 0) return;
  SIGMA_DISPATCH_FLOAT(logits.dtype, T, {
    cross_entropy_forward_kernel<<<unsigned(n), kThreads, 0, stream()>>>(
        losses.f32(), static_cast<const T*>(logits.data), targets.i32(), v, data_error_flag());
  });
  SIGMA_CUDA_LAUNCHED("cross_entropy_forward");
}

void cross_entropy_backward(Tensor d_logits, Tensor logits, Tensor targets, float loss_scale) {
  int64_t v = logits.size(-1), n = logits.numel() / v;
  if (n == 0) return;
  SIGMA_DISPATCH_FLOAT(logits.dtype, T, {
    SIGMA_DISPATCH_FLOAT(d_logits.dtype, D, {
      cross_entropy_backward_kernel<<<unsigned(n), kThreads, 0, stream()>>>(
          static_cast<D*>(d_logits.data), static_cast<const T*>(logits.data), targets.i32(), v,
          loss_scale);
    });
  });
  SIGMA_CUDA_LAUNCHED("cross_entropy_backward");
}

}  // namespace sigma::cuda
