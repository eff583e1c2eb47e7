// RoPE (Su et al. 2021), HF Llama's rotate-half convention, on CUDA.
//
// The angle pos * theta^(-2i/d) is formed in double and its cos/sin taken in double, as
// the CPU reference does, so both backends rotate by the same fp32 cos/sin. The cost is
// small next to the bytes moved: one thread per rotated pair.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"

namespace sigma::cuda {
namespace {

// x [rows = N*H, d]; positions [N]; direction -1 applies the inverse rotation (backward).
template <typename T>
__global__ void rope_kernel(T* out, const T* inp, const int32_t* positions, int64_t heads,
                            int64_t half, int64_t pairs, double log_theta, double direction) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < pairs;
       idx += int64_t(gridDim.x) * blockDim.x) {
    int64_t row = idx / half, i = idx % half;
    int64_t n = row / heads;
    double inv_freq = exp(-2.0 * double(i) / double(2 * half) * log_theta);
    double angle = double(positions[n]) * inv_freq;
    float c = float(cos(angle)), s = float(direction * sin(angle));
    const T* x = inp + row * 2 * half;
    float x1 = to_float(x[i]), x2 = to_float(x[i + half]);
    T* o = out + row * 2 * half;
    o[i] = from_float<T>(x1 * c - x2 * s);
    o[i + half] = from_float<T>(x2 * c + x1 * s);
  }
}

void rope(Tensor out, Tensor inp, Tensor positions, float theta, double direction) {
  int64_t d = inp.size(-1), heads = inp.size(-2), rows = inp.numel() / d, half = d / 2;
  int64_t pairs = rows * half;
  int blocks = int(std::min<int64_t>(ceil_div(pairs, 256), 65536));
  SIGMA_DISPATCH_FLOAT(inp.dtype, T, {
    rope_kernel<<<blocks, 256, 0, stream()>>>(static_cast<T*>(out.data),
                                             static_cast<const T*>(inp.data), positions.i32(),
                                             heads, half, pairs, std::log(double(theta)),
                                             direction);
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
