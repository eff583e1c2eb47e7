// Token embedding on CUDA: a row gather forward; a deterministic scatter-add backward.
//
// Backward sorts the positions by token id (a stable radix sort, so positions keep their
// order within a token) and lets one block sum each token's rows in that order: no float
// atomics, the same bits on every run. Out-of-vocabulary ids raise the runtime's data
// error flag (reported at the next synchronising op) and embed as zeros.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"

#include <cub/device/device_radix_sort.cuh>

namespace sigma::cuda {
namespace {

template <typename T, typename W>
__global__ void embedding_forward_kernel(T* out, const int32_t* tokens, const W* weight,
                                         int64_t vocab, int64_t d, int* error) {
  int64_t n = blockIdx.x;
  int32_t token = tokens[n];
  bool valid = token >= 0 && token < vocab;
  if (!valid && threadIdx.x == 0) atomicExch(error, 1);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
    out[n * d + i] = from_float<T>(valid ? to_float(weight[token * d + i]) : 0.0f);
}

__global__ void iota_kernel(int32_t* values, int64_t n) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) values[i] = int32_t(i);
}

// Block i owns the run of equal tokens that starts at sorted position i (if one does).
template <typename T>
__global__ void embedding_backward_kernel(float* d_weight, const T* d_out,
                                          const int32_t* sorted_tokens,
                                          const int32_t* sorted_positions, int64_t n,
                                          int64_t vocab, int64_t d) {
  int64_t i = blockIdx.x;
  int32_t token = sorted_tokens[i];
  if ((i > 0 && sorted_tokens[i - 1] == token) || token < 0 || token >= vocab) return;
  for (int64_t col = threadIdx.x; col < d; col += blockDim.x) {
    float acc = 0;
    for (int64_t j = i; j < n && sorted_tokens[j] == token; ++j)
      acc += to_float(d_out[int64_t(sorted_positions[j]) * d + col]);
    d_weight[int64_t(token) * d + col] += acc;
  }
}

}  // namespace

void embedding_forward(Tensor out, Tensor tokens, Tensor weight) {
  int64_t n = tokens.numel(), vocab = weight.size(0), d = weight.size(1);
  if (n == 0) return;
  SIGMA_DISPATCH_FLOAT(out.dtype, T, {
    SIGMA_DISPATCH_FLOAT(weight.dtype, W, {
      embedding_forward_kernel<<<unsigned(n), 256, 0, stream()>>>(
          static_cast<T*>(out.data), tokens.i32(), static_cast<const W*>(weight.data), vocab, d,
          data_error_flag());
    });
  });
  SIGMA_CUDA_LAUNCHED("embedding_forward");
}

void embedding_backward(Tensor d_weight, Tensor d_out, Tensor tokens) {
  int64_t n = tokens.numel(), vocab = d_weight.size(0), d = d_weight.size(1);
  if (n == 0) return;
  auto* base = static_cast<char*>(scratch());
  auto* sorted_tokens = reinterpret_cast<int32_t*>(base);
  auto* positions = sorted_tokens + n;
  auto* sorted_positions = positions + n;
  void* temp = sorted_positions + n;
  size_t temp_bytes = 0;
  int end_bit = 1;
  while ((int64_t(1) << end_bit) < vocab && end_bit < 31) ++end_bit;
  SIGMA_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, tokens.i32(),
                                                   sorted_tokens, positions, sorted_positions,
                                                   n, 0, end_bit, stream()));
  SIGMA_CHECK(3 * size_t(n) * sizeof(int32_t) + temp_bytes + 256 <= kScratchBytes,
              "embedding_backward: {} tokens exceed the scratch", n);
  temp = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(temp) + 255) / 256 * 256);
  iota_kernel<<<unsigned(ceil_div(n, 256)), 256, 0, stream()>>>(positions, n);
  SIGMA_CUDA_LAUNCHED("iota");
  SIGMA_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, tokens.i32(), sorted_tokens,
                                                   positions, sorted_positions, n, 0, end_bit,
                                                   stream()));
  SIGMA_DISPATCH_FLOAT(d_out.dtype, T, {
    embedding_backward_kernel<<<unsigned(n), 256, 0, stream()>>>(
        d_weight.f32(), static_cast<const T*>(d_out.data), sorted_tokens, sorted_positions, n,
        vocab, d);
  });
  SIGMA_CUDA_LAUNCHED("embedding_backward");
}

}  // namespace sigma::cuda
