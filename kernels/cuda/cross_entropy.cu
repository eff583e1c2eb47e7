// Cross-entropy fused with softmax over the vocabulary, on CUDA.
//
// A row's softmax statistics (max, sum of exp) are kept online (Milakov & Gimelshein 2018):
// each thread folds in 16-byte packs of logits (vector_io.cuh), one rescale per pack, and the
// threads' statistics are combined in a fixed order. Forward takes one block per row and reads
// it once.
//
// Backward needs the row's statistics before it can write anything. Rather than read the row
// twice, a thread-block cluster (Hopper) splits it into slices: each block copies its slice
// into shared memory while folding it into the statistics, the blocks combine their statistics
// through distributed shared memory (in rank order, so every block gets the same bits), and
// each block writes its slice's gradient from the copy. The logits are read once per pass,
// the [N, V] probability matrix never exists, and d_logits may overwrite logits (ops.h). A
// vocabulary too wide for eight slices in shared memory falls back to reading its slice again.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/vector_io.cuh"

#include <cooperative_groups.h>

namespace sigma::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 512;
constexpr int kUnroll = 4;      // packs a thread loads before it uses them
constexpr int kMaxCluster = 8;  // the portable cluster size
// A block's slice of the row: two such blocks fit an SM's 228 KB of shared memory.
constexpr size_t kMaxSliceBytes = size_t(112) << 10;

struct SoftmaxStats {
  float max;
  float sum;  // sum of exp(z - max)
};

__device__ SoftmaxStats combine(SoftmaxStats a, SoftmaxStats b) {
  float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return {m, 0.0f};
  return {m, a.sum * __expf(a.max - m) + b.sum * __expf(b.max - m)};
}

// Folds N values into s: one rescale to the pack's max, then one exp per value.
template <int N>
__device__ __forceinline__ void fold(SoftmaxStats& s, const float (&x)[N]) {
  float m = x[0];
#pragma unroll
  for (int k = 1; k < N; ++k) m = fmaxf(m, x[k]);
  if (m > s.max) {
    s.sum *= __expf(s.max - m);
    s.max = m;
  }
#pragma unroll
  for (int k = 0; k < N; ++k) s.sum += __expf(x[k] - s.max);
}

// The block's statistics, combined over warps in order; every thread gets them.
__device__ SoftmaxStats block_stats(SoftmaxStats s) {
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

// Statistics of z[0, count), count a multiple of kWidth, read in packs of kWidth; each pack
// is also copied to stage when there is one. Thread t reads packs t, t + kThreads, ...
template <int kWidth, typename T>
__device__ SoftmaxStats slice_stats(const T* z, int64_t count, T* stage) {
  constexpr int64_t kStep = int64_t(kThreads) * kWidth;
  SoftmaxStats s{-INFINITY, 0.0f};
  for (int64_t base = threadIdx.x * kWidth; base < count; base += kUnroll * kStep) {
    Pack<T, kWidth> packs[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (base + u * kStep < count) packs[u] = load_pack<kWidth>(z + base + u * kStep);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + u * kStep;
      if (j >= count) break;
      if (stage) store_pack(stage + j, packs[u]);
      float x[kWidth];
#pragma unroll
      for (int k = 0; k < kWidth; ++k) x[k] = to_float(packs[u].v[k]);
      fold(s, x);
    }
  }
  return block_stats(s);
}

template <typename T, int kWidth>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_forward_kernel(float* losses, const T* logits, const int32_t* targets,
                                 int64_t v, int* error) {
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
  SoftmaxStats s = slice_stats<kWidth>(z, v, static_cast<T*>(nullptr));
  if (threadIdx.x == 0) losses[row] = logf(s.sum) + s.max - to_float(z[target]);
}

// A cluster of blocks per row; block `rank` owns columns [rank * slice, (rank + 1) * slice).
// With `staged`, the slice is copied to dynamic shared memory on the first read and the
// gradient is computed from the copy; without, the slice is read again.
template <typename T, typename D, int kWidth>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_backward_kernel(D* d_logits, const T* logits, const int32_t* targets,
                                  int64_t v, int64_t slice, bool staged, float scale) {
  extern __shared__ __align__(16) unsigned char stage_bytes[];
  __shared__ SoftmaxStats published, row_stats;
  constexpr int64_t kStep = int64_t(kThreads) * kWidth;
  cg::cluster_group cluster = cg::this_cluster();
  const int64_t row = blockIdx.x / cluster.num_blocks();
  const int64_t begin = min(v, cluster.block_rank() * slice);
  const int64_t count = min(v, begin + slice) - begin;
  const int32_t target = targets[row];
  D* dz = d_logits + row * v + begin;
  if (target < 0 || target >= v) {  // the whole cluster leaves here, touching no shared memory
    Pack<D, kWidth> zero;
#pragma unroll
    for (int k = 0; k < kWidth; ++k) zero.v[k] = from_float<D>(0.0f);
    for (int64_t j = threadIdx.x * kWidth; j < count; j += kStep) store_pack(dz + j, zero);
    return;
  }
  const T* z = logits + row * v + begin;
  T* stage = staged ? reinterpret_cast<T*>(stage_bytes) : nullptr;
  SoftmaxStats mine = slice_stats<kWidth>(z, count, stage);
  if (threadIdx.x == 0) published = mine;
  cluster.sync();  // every block's statistics are published
  if (threadIdx.x == 0) {
    SoftmaxStats t{-INFINITY, 0.0f};
    for (unsigned r = 0; r < cluster.num_blocks(); ++r)
      t = combine(t, *cluster.map_shared_rank(&published, r));
    row_stats = t;
  }
  // No block leaves (releasing the shared memory others read) before all have read, and
  // row_stats is visible to the whole block.
  cluster.sync();
  const SoftmaxStats s = row_stats;
  const float inv_sum = 1.0f / s.sum;
  // Without a stage, each thread reads only the elements it writes: in-place is safe.
  const T* src = staged ? stage : z;
  for (int64_t j = threadIdx.x * kWidth; j < count; j += kStep) {
    Pack<T, kWidth> x = load_pack<kWidth>(src + j);
    Pack<D, kWidth> d;
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      float p = __expf(to_float(x.v[k]) - s.max) * inv_sum;
      d.v[k] = from_float<D>((p - (begin + j + k == target ? 1.0f : 0.0f)) * scale);
    }
    store_pack(dz + j, d);
  }
}

template <typename T, typename D, int kWidth>
void launch_backward(Tensor d_logits, Tensor logits, Tensor targets, float loss_scale, int64_t n,
                     int64_t v) {
  // Blocks per row: enough that a slice fits in shared memory, and enough blocks to give
  // every SM two even when the chunk has few rows.
  auto slice_for = [&](int64_t blocks) { return ceil_div(ceil_div(v, blocks), kWidth) * kWidth; };
  int64_t cluster = 1;
  while (cluster < kMaxCluster && (size_t(slice_for(cluster)) * sizeof(T) > kMaxSliceBytes ||
                                   n * cluster < 2 * int64_t(num_sms())))
    cluster *= 2;
  const int64_t slice = slice_for(cluster);
  const bool staged = size_t(slice) * sizeof(T) <= kMaxSliceBytes;
  const size_t smem = staged ? size_t(slice) * sizeof(T) : 0;
  auto kernel = cross_entropy_backward_kernel<T, D, kWidth>;
  SIGMA_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = unsigned(cluster);
  attribute.val.clusterDim.y = 1;
  attribute.val.clusterDim.z = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(unsigned(n * cluster));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = smem;
  config.stream = stream();
  config.attrs = &attribute;
  config.numAttrs = 1;
  SIGMA_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, static_cast<D*>(d_logits.data),
                                      static_cast<const T*>(logits.data), targets.i32(), v, slice,
                                      staged, loss_scale));
}

}  // namespace

void cross_entropy_forward(Tensor losses, Tensor logits, Tensor targets) {
  int64_t v = logits.size(-1), n = logits.numel() / v;
  if (n == 0) return;
  SIGMA_DISPATCH_FLOAT(logits.dtype, T, {
    constexpr int kVector = 16 / sizeof(T);
    auto* z = static_cast<const T*>(logits.data);
    if (v % kVector == 0 && aligned16(z))
      cross_entropy_forward_kernel<T, kVector><<<unsigned(n), kThreads, 0, stream()>>>(
          losses.f32(), z, targets.i32(), v, data_error_flag());
    else
      cross_entropy_forward_kernel<T, 1><<<unsigned(n), kThreads, 0, stream()>>>(
          losses.f32(), z, targets.i32(), v, data_error_flag());
  });
  SIGMA_CUDA_LAUNCHED("cross_entropy_forward");
}

void cross_entropy_backward(Tensor d_logits, Tensor logits, Tensor targets, float loss_scale) {
  int64_t v = logits.size(-1), n = logits.numel() / v;
  if (n == 0) return;
  SIGMA_DISPATCH_FLOAT(logits.dtype, T, {
    SIGMA_DISPATCH_FLOAT(d_logits.dtype, D, {
      constexpr int kVector = 16 / sizeof(T);
      // Packs need every row and slice to start on a whole pack of both tensors.
      if (v % kVector == 0 && aligned16(logits.data) && aligned16(d_logits.data))
        launch_backward<T, D, kVector>(d_logits, logits, targets, loss_scale, n, v);
      else
        launch_backward<T, D, 1>(d_logits, logits, targets, loss_scale, n, v);
    });
  });
  SIGMA_CUDA_LAUNCHED("cross_entropy_backward");
}

}  // namespace sigma::cuda
