// SwiGLU (Shazeer 2020) on CUDA: out = silu(gate) * up, elementwise, fp32 arithmetic.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"

namespace sigma::cuda {
namespace {

template <typename T>
__global__ void swiglu_forward_kernel(T* out, const T* gate, const T* up, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float g = to_float(gate[i]);
    float sig = 1.0f / (1.0f + __expf(-g));
    out[i] = from_float<T>(g * sig * to_float(up[i]));
  }
}

// d silu(g) / dg = sig(g) (1 + g (1 - sig(g))).
template <typename T>
__global__ void swiglu_backward_kernel(T* d_gate, T* d_up, const T* d_out, const T* gate,
                                       const T* up, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float g = to_float(gate[i]), u = to_float(up[i]), d = to_float(d_out[i]);
    float sig = 1.0f / (1.0f + __expf(-g));
    d_up[i] = from_float<T>(d * g * sig);
    d_gate[i] = from_float<T>(d * u * sig * (1.0f + g * (1.0f - sig)));
  }
}

int grid_for(int64_t n) { return int(std::min<int64_t>(ceil_div(n, 256), 65536)); }

}  // namespace

void swiglu_forward(Tensor out, Tensor gate, Tensor up) {
  int64_t n = out.numel();
  SIGMA_DISPATCH_FLOAT(out.dtype, T, {
    swiglu_forward_kernel<<<grid_for(n), 256, 0, stream()>>>(
        static_cast<T*>(out.data), static_cast<const T*>(gate.data),
        static_cast<const T*>(up.data), n);
  });
  SIGMA_CUDA_LAUNCHED("swiglu_forward");
}

void swiglu_backward(Tensor d_gate, Tensor d_up, Tensor d_out, Tensor gate, Tensor up) {
  int64_t n = d_out.numel();
  SIGMA_DISPATCH_FLOAT(d_out.dtype, T, {
    swiglu_backward_kernel<<<grid_for(n), 256, 0, stream()>>>(
        static_cast<T*>(d_gate.data), static_cast<T*>(d_up.data),
        static_cast<const T*>(d_out.data), static_cast<const T*>(gate.data),
        static_cast<const T*>(up.data), n);
  });
  SIGMA_CUDA_LAUNCHED("swiglu_backward");
}

}  // namespace sigma::cuda
