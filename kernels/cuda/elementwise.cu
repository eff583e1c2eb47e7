// Elementwise ops and full reductions (add, convert, scale, sum, sum_squares) on CUDA.
//
// The elementwise ops move 16-byte packs (vector_io.cuh) and compute element by element, so
// they give the bits of a scalar loop. Reductions are deterministic: a fixed grid writes one
// double partial per block, and one block adds the partials in order, so the result does not
// depend on scheduling.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/vector_io.cuh"

namespace sigma::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kReduceBlocks = 1024;
// Loads a reduction thread keeps in flight (the grid is fixed, so bytes in flight come from
// each thread).
constexpr int kReduceUnroll = 8;

template <typename T>
__global__ void add_kernel(T* out, const T* a, const T* b, int64_t n, bool vectorized) {
  for_each_pack(n, vectorized, [&](int64_t i, auto width) {
    constexpr int N = decltype(width)::value;
    Pack<T, N> x = load_pack<N>(a + i), y = load_pack<N>(b + i), r;
#pragma unroll
    for (int k = 0; k < N; ++k) r.v[k] = from_float<T>(to_float(x.v[k]) + to_float(y.v[k]));
    store_pack(out + i, r);
  });
}

template <typename Out, typename In>
__global__ void convert_kernel(Out* out, const In* inp, int64_t n, bool vectorized) {
  for_each_pack(n, vectorized, [&](int64_t i, auto width) {
    constexpr int N = decltype(width)::value;
    Pack<In, N> x = load_pack<N>(inp + i);
    Pack<Out, N> r;
#pragma unroll
    for (int k = 0; k < N; ++k) r.v[k] = from_float<Out>(to_float(x.v[k]));
    store_pack(out + i, r);
  });
}

template <typename T>
__global__ void scale_kernel(T* x, float s, int64_t n, bool vectorized) {
  for_each_pack(n, vectorized, [&](int64_t i, auto width) {
    constexpr int N = decltype(width)::value;
    Pack<T, N> r = load_pack<N>(x + i);
#pragma unroll
    for (int k = 0; k < N; ++k) r.v[k] = from_float<T>(to_float(r.v[k]) * s);
    store_pack(x + i, r);
  });
}

// Block sum of one double per thread; the result lands in thread 0.
__device__ double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffff, v, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  v = 0;
  if (threadIdx.x < 32) {
    v = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0;
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffff, v, offset);
  }
  return v;
}

// Thread t adds elements t, t + stride, t + 2 stride, ... in that order (the loads are
// batched, the additions are not reordered), so the partials keep their bits whatever the
// unrolling.
template <bool kSquares, typename T>
__global__ void partial_sums_kernel(double* partials, const T* x, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  double acc = 0;
  for (; i + (kReduceUnroll - 1) * stride < n; i += kReduceUnroll * stride) {
    float batch[kReduceUnroll];
#pragma unroll
    for (int u = 0; u < kReduceUnroll; ++u) batch[u] = to_float(x[i + u * stride]);
#pragma unroll
    for (int u = 0; u < kReduceUnroll; ++u) {
      double v = batch[u];
      acc += kSquares ? v * v : v;
    }
  }
  for (; i < n; i += stride) {
    double v = to_float(x[i]);
    acc += kSquares ? v * v : v;
  }
  double total = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void finish_sum_kernel(double* result, const double* partials, int count) {
  double acc = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  double total = block_sum(acc);
  if (threadIdx.x == 0) *result = total;
}

template <bool kSquares>
double reduce(Tensor x) {
  auto* partials = static_cast<double*>(scratch());
  double* result = partials + kReduceBlocks;
  SIGMA_DISPATCH_FLOAT(x.dtype, T, {
    partial_sums_kernel<kSquares><<<kReduceBlocks, kThreads, 0, stream()>>>(
        partials, static_cast<const T*>(x.data), x.numel());
  });
  SIGMA_CUDA_LAUNCHED("partial_sums");
  finish_sum_kernel<<<1, kThreads, 0, stream()>>>(result, partials, kReduceBlocks);
  SIGMA_CUDA_LAUNCHED("finish_sum");
  double host = 0;
  SIGMA_CUDA_CHECK(cudaMemcpyAsync(&host, result, sizeof(double), cudaMemcpyDeviceToHost, stream()));
  check_data_errors();  // synchronises the stream
  return host;
}

}  // namespace

void add(Tensor out, Tensor a, Tensor b) {
  SIGMA_CHECK(out.dtype == a.dtype && a.dtype == b.dtype, "add: mixed dtypes");
  int64_t n = out.numel();
  if (n == 0) return;
  bool vectorized = aligned16(out.data) && aligned16(a.data) && aligned16(b.data);
  int blocks = elementwise_blocks(n, kThreads);
  SIGMA_DISPATCH_FLOAT(out.dtype, T, {
    add_kernel<<<blocks, kThreads, 0, stream()>>>(static_cast<T*>(out.data),
                                                  static_cast<const T*>(a.data),
                                                  static_cast<const T*>(b.data), n, vectorized);
  });
  SIGMA_CUDA_LAUNCHED("add");
}

void convert(Tensor out, Tensor inp) {
  int64_t n = out.numel();
  if (n == 0) return;
  bool vectorized = aligned16(out.data) && aligned16(inp.data);
  int blocks = elementwise_blocks(n, kThreads);
  SIGMA_DISPATCH_FLOAT(out.dtype, Out, {
    SIGMA_DISPATCH_FLOAT(inp.dtype, In, {
      convert_kernel<<<blocks, kThreads, 0, stream()>>>(
          static_cast<Out*>(out.data), static_cast<const In*>(inp.data), n, vectorized);
    });
  });
  SIGMA_CUDA_LAUNCHED("convert");
}

void scale(Tensor x, float s) {
  int64_t n = x.numel();
  if (n == 0) return;
  int blocks = elementwise_blocks(n, kThreads);
  SIGMA_DISPATCH_FLOAT(x.dtype, T, {
    scale_kernel<<<blocks, kThreads, 0, stream()>>>(static_cast<T*>(x.data), s, n,
                                                    aligned16(x.data));
  });
  SIGMA_CUDA_LAUNCHED("scale");
}

double sum_squares(Tensor x) { return reduce<true>(x); }
double sum(Tensor x) { return reduce<false>(x); }

}  // namespace sigma::cuda
