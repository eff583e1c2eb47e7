// RMSNorm (Zhang & Sennrich 2019) on CUDA: one warp per row, fp32 statistics.
//
// The weight gradient is a column sum over rows: a fixed grid of row chunks writes fp32
// partials, and a second kernel adds them in chunk order, so it is deterministic. It runs
// before the input gradient because d_inp may alias d_out (ops.h).
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"

namespace sigma::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

__device__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffff, v, offset);
  return v;
}

template <typename T, typename W>
__global__ void rmsnorm_forward_warp_per_row(T* out, float* rstd, const T* inp, const W* weight,
                                             int64_t rows, int64_t c, float eps) {
  int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T* x = inp + row * c;
  float sum_sq = 0;
  for (int64_t i = lane; i < c; i += 32) {
    float v = to_float(x[i]);
    sum_sq += v * v;
  }
  sum_sq = warp_sum(sum_sq);
  float s = rsqrtf(sum_sq / float(c) + eps);
  T* o = out + row * c;
  for (int64_t i = lane; i < c; i += 32) o[i] = from_float<T>(to_float(x[i]) * s * to_float(weight[i]));
  if (lane == 0) rstd[row] = s;
}

// partials[chunk, col] = sum over the chunk's rows of d_out * inp * rstd.
template <typename T>
__global__ void rmsnorm_weight_partials(float* partials, const T* d_out, const T* inp,
                                        const float* rstd, int64_t rows, int64_t c,
                                        int64_t rows_per_chunk) {
  int64_t col = blockIdx.y * int64_t(blockDim.x) + threadIdx.x;
  if (col >= c) return;
  int64_t chunk = blockIdx.x, begin = chunk * rows_per_chunk;
  int64_t end = min(rows, begin + rows_per_chunk);
  float acc = 0;
  for (int64_t r = begin; r < end; ++r)
    acc += to_float(d_out[r * c + col]) * to_float(inp[r * c + col]) * rstd[r];
  partials[chunk * c + col] = acc;
}

__global__ void rmsnorm_weight_finish(float* d_weight, const float* partials, int64_t chunks,
                                      int64_t c) {
  int64_t col = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (col >= c) return;
  float acc = 0;
  for (int64_t k = 0; k < chunks; ++k) acc += partials[k * c + col];
  d_weight[col] += acc;
}

// d_inp = rstd (w g - x rstd^2 mean(w g x)).
template <typename T, typename W>
__global__ void rmsnorm_input_grad_warp_per_row(T* d_inp, const T* d_out, const T* inp,
                                                const W* weight, const float* rstd, int64_t rows,
                                                int64_t c) {
  int64_t row = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T* x = inp + row * c;
  const T* g = d_out + row * c;
  float dot = 0;
  for (int64_t i = lane; i < c; i += 32) dot += to_float(weight[i]) * to_float(g[i]) * to_float(x[i]);
  dot = warp_sum(dot);
  float s = rstd[row];
  float k = dot / float(c) * s * s;
  T* dx = d_inp + row * c;
  // Each lane writes exactly the elements it read, so d_inp may alias d_out.
  for (int64_t i = lane; i < c; i += 32)
    dx[i] = from_float<T>(s * (to_float(weight[i]) * to_float(g[i]) - to_float(x[i]) * k));
}

}  // namespace

void rmsnorm_forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, float eps) {
  int64_t c = inp.size(-1), rows = inp.numel() / c;
  int blocks = int(ceil_div(rows, kWarpsPerBlock));
  SIGMA_DISPATCH_FLOAT(inp.dtype, T, {
    SIGMA_DISPATCH_FLOAT(weight.dtype, W, {
      rmsnorm_forward_warp_per_row<<<blocks, 32 * kWarpsPerBlock, 0, stream()>>>(
          static_cast<T*>(out.data), rstd.f32(), static_cast<const T*>(inp.data),
          static_cast<const W*>(weight.data), rows, c, eps);
    });
  });
  SIGMA_CUDA_LAUNCHED("rmsnorm_forward");
}

void rmsnorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                      Tensor rstd) {
  int64_t c = inp.size(-1), rows = inp.numel() / c;
  int threads = int(std::min<int64_t>(c, 256));
  int64_t col_blocks = ceil_div(c, threads);
  // Enough chunks to fill the GPU, few enough that the partials fit the scratch.
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(ceil_div(4 * num_sms(), col_blocks), rows));
  chunks = std::min<int64_t>(chunks, int64_t(kScratchBytes / (sizeof(float) * size_t(c))));
  int64_t rows_per_chunk = ceil_div(rows, chunks);
  chunks = ceil_div(rows, rows_per_chunk);
  auto* partials = static_cast<float*>(scratch());
  SIGMA_DISPATCH_FLOAT(inp.dtype, T, {
    rmsnorm_weight_partials<<<dim3(unsigned(chunks), unsigned(col_blocks)), threads, 0, stream()>>>(
        partials, static_cast<const T*>(d_out.data), static_cast<const T*>(inp.data), rstd.f32(),
        rows, c, rows_per_chunk);
  });
  SIGMA_CUDA_LAUNCHED("rmsnorm_weight_partials");
  rmsnorm_weight_finish<<<unsigned(ceil_div(c, 256)), 256, 0, stream()>>>(d_weight.f32(), partials,
                                                                          chunks, c);
  SIGMA_CUDA_LAUNCHED("rmsnorm_weight_finish");
  int blocks = int(ceil_div(rows, kWarpsPerBlock));
  SIGMA_DISPATCH_FLOAT(inp.dtype, T, {
    SIGMA_DISPATCH_FLOAT(weight.dtype, W, {
      rmsnorm_input_grad_warp_per_row<<<blocks, 32 * kWarpsPerBlock, 0, stream()>>>(
          static_cast<T*>(d_inp.data), static_cast<const T*>(d_out.data),
          static_cast<const T*>(inp.data), static_cast<const W*>(weight.data), rstd.f32(), rows, c);
    });
  });
  SIGMA_CUDA_LAUNCHED("rmsnorm_input_grad");
}

}  // namespace sigma::cuda
