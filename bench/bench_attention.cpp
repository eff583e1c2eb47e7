// bench_attention: the CUDA DiffQKV flash attention, forward and forward+backward, against
// PyTorch SDPA (K and V repeated to the query heads) on the shapes of the SDPA rows of
// ../shared/bench/README.md. FLOPs are counted as kernels_peer.py counts them: the causal
// forward is 2 B n_q T^2 (d_qk + d_v) / 2 (= 4 B n_q T^2 d / 2), forward+backward 3.5 times
// that (the backward's five products, S and dP recomputed, dV, dK, dQ, are 2.5 times the
// forward's two). Times are medians of CUDA-event-timed calls after warm-up, on random bf16
// inputs (never zeros: METHOD.md), with one input set per shape (each is several times L2).
//
//   bench_attention            prints one row per shape and the ratio to SDPA
#include "kernels/cuda/runtime.h"
#include "kernels/device.h"
#include "kernels/ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace sigma {
namespace {

struct BenchShape {
  int64_t batch, seq_len, n_q, n_k, n_v, d;
  double sdpa_fwd, sdpa_fwd_bwd;  // TFLOP/s, ../shared/bench/README.md (H200, PyTorch 2.11)
};

constexpr BenchShape kShapes[] = {
    {4, 4096, 32, 4, 16, 64, 351, 351},
    {4, 4096, 16, 4, 4, 96, 354, 342},
    {2, 8192, 32, 4, 16, 128, 513, 481},
};

// A device tensor that owns its memory, filled with uniform values of unit variance (a
// splitmix64 hash of the index: fast enough for 10^8 elements, and never zero-heavy).
struct DeviceTensor {
  Buffer buffer;
  Tensor tensor;
  DeviceTensor(Shape shape, DType dtype, uint64_t seed)
      : buffer(size_t(shape.numel()) * dtype_size(dtype), Device::kCuda),
        tensor(buffer.tensor(0, shape, dtype)) {
    Buffer host(tensor.bytes(), Device::kCpu);
    Tensor h = host.tensor(0, shape, dtype);
    for (int64_t i = 0; i < shape.numel(); ++i) {
      uint64_t z = (seed << 40) + uint64_t(i) + 0x9e3779b97f4a7c15ull;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
      float x = (float(z >> 40) / float(1 << 24) - 0.5f) * 3.4641016f;
      if (dtype == DType::kF32) {
        static_cast<float*>(h.data)[i] = x;
      } else {
        uint32_t bits;
        std::memcpy(&bits, &x, 4);
        static_cast<uint16_t*>(h.data)[i] = uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
      }
    }
    device::copy(tensor, h);
  }
  operator Tensor() const { return tensor; }
};

// Median milliseconds of `reps` event-timed calls after `warmup` untimed ones.
template <typename Fn>
double median_ms(Fn&& fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  SIGMA_CUDA_CHECK(cudaEventCreate(&start));
  SIGMA_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    SIGMA_CUDA_CHECK(cudaEventRecord(start, cuda::stream()));
    fn();
    SIGMA_CUDA_CHECK(cudaEventRecord(stop, cuda::stream()));
    SIGMA_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    SIGMA_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  device::synchronize();
  SIGMA_CUDA_CHECK(cudaEventDestroy(start));
  SIGMA_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

int run() {
  if (!device::cuda_available()) fail("bench_attention needs a GPU: {}", device::describe());
  fmt::print("{}\n", device::describe());
  fmt::print("{:<30} {:>8} {:>8} {:>6} {:>6} | {:>8} {:>8} {:>6} {:>6} | {:>8}\n", "shape (heads q/k/v)",
             "fwd ms", "TFLOP/s", "SDPA", "ratio", "f+b ms", "TFLOP/s", "SDPA", "ratio", "bwd ms");
  for (const BenchShape& b : kShapes) {
    const Shape q_shape{b.batch, b.seq_len, b.n_q, b.d}, k_shape{b.batch, b.seq_len, b.n_k, b.d};
    const Shape v_shape{b.batch, b.seq_len, b.n_v, b.d};
    DeviceTensor q(q_shape, DType::kBF16, 1), k(k_shape, DType::kBF16, 2);
    DeviceTensor v(v_shape, DType::kBF16, 3), d_out(q_shape, DType::kBF16, 4);
    DeviceTensor out(q_shape, DType::kBF16, 5), d_q(q_shape, DType::kBF16, 6);
    DeviceTensor d_k(k_shape, DType::kBF16, 7), d_v(v_shape, DType::kBF16, 8);
    DeviceTensor lse({b.batch, b.n_q, b.seq_len}, DType::kF32, 9);
    auto forward = [&] { ops::attention_forward(out, lse, q, k, v); };
    auto backward = [&] { ops::attention_backward(d_q, d_k, d_v, d_out, q, k, v, out, lse); };
    double fwd = median_ms(forward, 3, 20);
    double bwd = median_ms(backward, 3, 20);
    double fwd_bwd = median_ms([&] { forward(); backward(); }, 3, 20);
    double flops = 4.0 * double(b.batch * b.n_q) * double(b.seq_len) * double(b.seq_len) *
                   double(b.d) / 2;
    double tf_fwd = flops / fwd / 1e9, tf_fb = 3.5 * flops / fwd_bwd / 1e9;
    fmt::print("{:<30} {:>8.3f} {:>8.1f} {:>6.0f} {:>6.2f} | {:>8.3f} {:>8.1f} {:>6.0f} {:>6.2f} | {:>8.3f}\n",
               fmt::format("B{} T{} {}/{}/{} d{}", b.batch, b.seq_len, b.n_q, b.n_k, b.n_v, b.d),
               fwd, tf_fwd, b.sdpa_fwd, tf_fwd / b.sdpa_fwd, fwd_bwd, tf_fb, b.sdpa_fwd_bwd,
               tf_fb / b.sdpa_fwd_bwd, bwd);
  }
  return 0;
}

}  // namespace
}  // namespace sigma

int main() {
  try {
    return sigma::run();
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_attention: {}\n", e.what());
    return 2;
  }
}
