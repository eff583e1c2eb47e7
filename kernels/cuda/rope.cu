// RoPE (Su et al. 2021), HF Llama's rotate-half convention, on CUDA.
//
// The angle pos * theta^(-2i/d) is formed in double and its cos/sin taken in double, as
// the CPU reference does, so both backends rotate by the same fp32 cos/sin. The angle
// depends on (position, i) only: a thread takes one token and kWidth consecutive pairs and
// rotates them in every head, so the double-precision work is done once per (position, i)
// rather than once per head, and the pairs move as 16-byte packs (vector_io.cuh).
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/vector_io.cuh"

namespace sigma::cuda {
namespace {

constexpr int kThreads = 128;
// Heads whose loads a thread issues together, to keep bytes in flight.
constexpr int kHeadBatch = 4;

// x [tokens, heads, 2 half]; positions [tokens]; direction -1 applies the inverse rotation
// (backward). Each thread reads all its pairs before writing them: out may alias inp.
template <typename T, int kWidth>
__global__ void rope_kernel(T* out, const T* inp, const int32_t* positions, int64_t tokens,
                            int heads, int half, double log_theta, double direction) {
  const int groups = half / kWidth;  // of kWidth pairs, per head
  const int64_t row_stride = 2 * int64_t(half);
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < tokens * groups;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = idx / groups;
    const int i0 = int(idx % groups) * kWidth;
    float c[kWidth], s[kWidth];
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      double inv_freq = exp(-2.0 * double(i0 + k) / double(2 * half) * log_theta);
      double angle = double(positions[n]) * inv_freq;
      c[k] = float(cos(angle));
      s[k] = float(direction * sin(angle));
    }
    const T* x = inp + n * heads * row_stride + i0;
    T* o = out + n * heads * row_stride + i0;
    for (int h0 = 0; h0 < heads; h0 += kHeadBatch) {
      Pack<T, kWidth> x1[kHeadBatch], x2[kHeadBatch];
#pragma unroll
      for (int u = 0; u < kHeadBatch; ++u) {
        if (h0 + u >= heads) break;
        x1[u] = load_pack<kWidth>(x + (h0 + u) * row_stride);
        x2[u] = load_pack<kWidth>(x + (h0 + u) * row_stride + half);
      }
#pragma unroll
      for (int u = 0; u < kHeadBatch; ++u) {
        if (h0 + u >= heads) break;
        Pack<T, kWidth> o1, o2;
#pragma unroll
        for (int k = 0; k < kWidth; ++k) {
          float a = to_float(x1[u].v[k]), b = to_float(x2[u].v[k]);
          o1.v[k] = from_float<T>(a * c[k] - b * s[k]);
          o2.v[k] = from_float<T>(b * c[k] + a * s[k]);
        }
        store_pack(o + (h0 + u) * row_stride, o1);
        store_pack(o + (h0 + u) * row_stride + half, o2);
      }
    }
  }
}

template <typename T, int kWidth>
void launch(Tensor out, Tensor inp, Tensor positions, int64_t tokens, int heads, int half,
            double log_theta, double direction) {
  int64_t threads = tokens * (half / kWidth);
  int blocks = int(std::clamp<int64_t>(ceil_div(threads, kThreads), 1, int64_t(1) << 30));
  rope_kernel<T, kWidth><<<blocks, kThreads, 0, stream()>>>(
      static_cast<T*>(out.data), static_cast<const T*>(inp.data), positions.i32(), tokens, heads,
      half, log_theta, direction);
}

void rope(Tensor out, Tensor inp, Tensor positions, float theta, double direction) {
  if (inp.numel() == 0) return;
  int64_t d = inp.size(-1), heads = inp.size(-2), half = d / 2;
  int64_t tokens = inp.numel() / (heads * d);
  double log_theta = std::log(double(theta));
  SIGMA_DISPATCH_FLOAT(inp.dtype, T, {
    constexpr int kVector = 16 / sizeof(T);  // elements in a 16-byte pack
    // Packs need both halves of every head 16-byte aligned.
    if (half % kVector == 0 && aligned16(out.data) && aligned16(inp.data))
      launch<T, kVector>(out, inp, positions, tokens, int(heads), int(half), log_theta, direction);
    else
      launch<T, 1>(out, inp, positions, tokens, int(heads), int(half), log_theta, direction);
  });
  SIGMA_CUDA_LAUNCHED("rope");
}

}  // namespace

void rope_forward(Tensor out, Tensor inp, Tensor positions, float theta) {
  rope(out, inp, positions, theta, 1.0);
}

void rope_backward(Tensor d_inp, Tensor d_out, Tensor positions, float theta) {
  rope(d_inp, d_out, positions, theta, -1.0);
}

}  // namespace sigma::cuda
