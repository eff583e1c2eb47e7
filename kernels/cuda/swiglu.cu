// SwiGLU (Shazeer 2020) on CUDA: out = silu(gate) * up, elementwise, fp32 arithmetic.
//
// Memory-bound: the kernels move 16-byte packs (vector_io.cuh) and compute element by
// element, so the bits are those of a scalar loop.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/vector_io.cuh"

namespace sigma::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void swiglu_forward_kernel(T* out, const T* gate, const T* up, int64_t n,
                                      bool vectorized) {
  for_each_pack(n, vectorized, [&](int64_t i, auto width) {
    constexpr int N = decltype(width)::value;
    Pack<T, N> g = load_pack<N>(gate + i), u = load_pack<N>(up + i), o;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      float gk = to_float(g.v[k]);
      float sig = 1.0f / (1.0f + __expf(-gk));
      o.v[k] = from_float<T>(gk * sig * to_float(u.v[k]));
    }
    store_pack(out + i, o);
  });
}

// d silu(g) / dg = sig(g) (1 + g (1 - sig(g))).
template <typename T>
__global__ void swiglu_backward_kernel(T* d_gate, T* d_up, const T* d_out, const T* gate,
                                       const T* up, int64_t n, bool vectorized) {
  for_each_pack(n, vectorized, [&](int64_t i, auto width) {
    constexpr int N = decltype(width)::value;
    Pack<T, N> g = load_pack<N>(gate + i), u = load_pack<N>(up + i), d = load_pack<N>(d_out + i);
    Pack<T, N> dg, du;
#pragma unroll
    for (int k = 0; k < N; ++k) {
      float gk = to_float(g.v[k]), uk = to_float(u.v[k]), dk = to_float(d.v[k]);
      float sig = 1.0f / (1.0f + __expf(-gk));
      du.v[k] = from_float<T>(dk * gk * sig);
      dg.v[k] = from_float<T>(dk * uk * sig * (1.0f + gk * (1.0f - sig)));
    }
    store_pack(d_up + i, du);
    store_pack(d_gate + i, dg);
  });
}

}  // namespace

void swiglu_forward(Tensor out, Tensor gate, Tensor up) {
  int64_t n = out.numel();
  if (n == 0) return;
  bool vectorized = aligned16(out.data) && aligned16(gate.data) && aligned16(up.data);
  int blocks = elementwise_blocks(n, kThreads);
  SIGMA_DISPATCH_FLOAT(out.dtype, T, {
    swiglu_forward_kernel<<<blocks, kThreads, 0, stream()>>>(
        static_cast<T*>(out.data), static_cast<const T*>(gate.data),
        static_cast<const T*>(up.data), n, vectorized);
  });
  SIGMA_CUDA_LAUNCHED("swiglu_forward");
}

void swiglu_backward(Tensor d_gate, Tensor d_up, Tensor d_out, Tensor gate, Tensor up) {
  int64_t n = d_out.numel();
  if (n == 0) return;
  bool vectorized = aligned16(d_gate.data) && aligned16(d_up.data) && aligned16(d_out.data) &&
                    aligned16(gate.data) && aligned16(up.data);
  int blocks = elementwise_blocks(n, kThreads);
  SIGMA_DISPATCH_FLOAT(d_out.dtype, T, {
    swiglu_backward_kernel<<<blocks, kThreads, 0, stream()>>>(
        static_cast<T*>(d_gate.data), static_cast<T*>(d_up.data),
        static_cast<const T*>(d_out.data), static_cast<const T*>(gate.data),
        static_cast<const T*>(up.data), n, vectorized);
  });
  SIGMA_CUDA_LAUNCHED("swiglu_backward");
}

}  // namespace sigma::cuda
