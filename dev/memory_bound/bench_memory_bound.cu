// bench_memory_bound: the memory-bound CUDA ops at the sigma-1.5b bench shapes
// (recipes/bench/sigma-1.5b.toml: B 4, T 4096, d_model 2048, SwiGLU 6144, 32 query heads of
// 64, vocabulary 128,256, LM head chunks of 2048 rows), each timed alone: median of
// CUDA-event-timed calls after warm-up. Bytes are counted as NOTES.md counts them (every
// tensor read once and written once); the bandwidth is compared with the H200's device copy,
// 4.24 TB/s (../shared/bench/README.md). Inputs are random (a hash of the index, on the
// device), except AdamW's second moment, zero as at step 1. Build and run: NOTES.md.
#include "kernels/cuda/runtime.h"
#include "kernels/device.h"
#include "kernels/ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sigma {
namespace {

constexpr double kCopyBandwidth = 4.24e12;  // bytes/s, H200 device copy

// Uniform values of unit variance times `scale` (a splitmix64 hash of the index), or for
// i32 tensors integers in [0, int_range).
__global__ void fill_kernel(void* data, DType dtype, int64_t n, uint64_t seed, float scale,
                            int32_t int_range) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = (seed << 40) + uint64_t(i) + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    float x = (float(z >> 40) / float(1 << 24) - 0.5f) * 3.4641016f * scale;
    if (dtype == DType::kF32) static_cast<float*>(data)[i] = x;
    else if (dtype == DType::kBF16) static_cast<__nv_bfloat16*>(data)[i] = __float2bfloat16(x);
    else static_cast<int32_t*>(data)[i] = int32_t((z >> 8) % uint64_t(int_range));
  }
}

struct DeviceTensor {
  Buffer buffer;
  Tensor tensor;
  DeviceTensor(Shape shape, DType dtype, uint64_t seed, float scale = 1.0f, int32_t range = 1)
      : buffer(size_t(shape.numel()) * dtype_size(dtype), Device::kCuda),
        tensor(buffer.tensor(0, shape, dtype)) {
    fill_kernel<<<1024, 256, 0, cuda::stream()>>>(tensor.data, dtype, shape.numel(), seed, scale,
                                                  range);
    SIGMA_CUDA_LAUNCHED("fill");
  }
  operator Tensor() const { return tensor; }
};

double median_us(const std::function<void()>& fn) {
  constexpr int kWarmup = 3, kReps = 20;
  for (int i = 0; i < kWarmup; ++i) fn();
  cudaEvent_t start, stop;
  SIGMA_CUDA_CHECK(cudaEventCreate(&start));
  SIGMA_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> ms(kReps);
  for (float& t : ms) {
    SIGMA_CUDA_CHECK(cudaEventRecord(start, cuda::stream()));
    fn();
    SIGMA_CUDA_CHECK(cudaEventRecord(stop, cuda::stream()));
    SIGMA_CUDA_CHECK(cudaEventSynchronize(stop));
    SIGMA_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
  }
  device::synchronize();
  SIGMA_CUDA_CHECK(cudaEventDestroy(start));
  SIGMA_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return 1e3 * ms[ms.size() / 2];
}

void report(const std::string& name, double bytes, const std::function<void()>& fn) {
  double us = median_us(fn);
  double floor_us = bytes / kCopyBandwidth * 1e6;
  fmt::print("{:<44} {:>9.1f} {:>9.1f} {:>9.1f} {:>8.2f} {:>6.0f}%\n", name, bytes / 1e6, us,
             floor_us, bytes / us / 1e6, 100 * floor_us / us);
}

int run() {
  if (!device::cuda_available()) fail("bench_memory_bound needs a GPU: {}", device::describe());
  fmt::print("{}\n{:<44} {:>9} {:>9} {:>9} {:>8} {:>7}\n", device::describe(), "op [shape]", "MB",
             "us", "floor us", "TB/s", "of copy");
  const int64_t b = 4, t = 4096, n = b * t, d = 2048, f = 6144, heads = 32, head_dim = 64;
  const int64_t vocab = 128256, chunk = 2048;
  const DType bf = DType::kBF16, f32 = DType::kF32;
  const double act = double(n * d) * 2;  // bytes of one [N, D] bf16 activation
  {
    DeviceTensor x({n, d}, bf, 1), w({d}, bf, 2, 0.1f), y({n, d}, bf, 3), dy({n, d}, bf, 4);
    DeviceTensor dx({n, d}, bf, 5), rstd({n}, f32, 6), dw({d}, f32, 7);
    report("rmsnorm_forward [16384, 2048]", 2 * act,
           [&] { ops::rmsnorm_forward(y, rstd, x, w, 1e-6f); });
    report("rmsnorm_backward [16384, 2048]", 3 * act,
           [&] { ops::rmsnorm_backward(dx, dw, dy, x, w, rstd); });
    report("add [16384, 2048]", 3 * act, [&] { ops::add(dx, dx, dy); });
  }
  {
    const double ff = double(n * f) * 2;
    DeviceTensor gate({n, f}, bf, 8, 2.0f), up({n, f}, bf, 9), out({n, f}, bf, 10);
    DeviceTensor d_gate({n, f}, bf, 11), d_up({n, f}, bf, 12);
    report("swiglu_forward [16384, 6144]", 3 * ff, [&] { ops::swiglu_forward(out, gate, up); });
    report("swiglu_backward [16384, 6144]", 5 * ff,
           [&] { ops::swiglu_backward(d_gate, d_up, out, gate, up); });
  }
  {
    DeviceTensor q({b, t, heads, head_dim}, bf, 13), q_rope({b, t, heads, head_dim}, bf, 14);
    DeviceTensor positions({n}, DType::kI32, 15, 1.0f, int32_t(t));
    report("rope_forward [4, 4096, 32, 64]", 2 * act,
           [&] { ops::rope_forward(q_rope, q, positions, 1e4f); });
  }
  {
    const double logits_bytes = double(chunk * vocab) * 4;
    DeviceTensor logits({chunk, vocab}, f32, 16, 3.0f), d_logits({chunk, vocab}, bf, 17);
    DeviceTensor targets({chunk}, DType::kI32, 18, 1.0f, int32_t(vocab)), losses({chunk}, f32, 19),
        lse({chunk}, f32, 20);
    report("cross_entropy_forward [2048, 128256] f32", logits_bytes,
           [&] { ops::cross_entropy_forward(losses, lse, logits, targets); });
    report("cross_entropy_backward [2048, 128256] ->bf16", 1.5 * logits_bytes,
           [&] { ops::cross_entropy_backward(d_logits, logits, lse, targets, 1.0f / 16384); });
  }
  {
    const int64_t params = vocab * d;  // the LM head, the biggest tensor AdamW updates
    DeviceTensor p({params}, f32, 20), g({params}, f32, 21), m({params}, f32, 22, 0.1f);
    DeviceTensor v({params}, f32, 23, 0.0f), weight({params}, bf, 24);
    report("sum_squares [262668288] f32", double(params) * 4, [&] { ops::sum_squares(g); });
    ops::AdamWStep step{1e-4, 0.9, 0.999, 1e-8, 0.01, 1, 1.0};
    report("adamw [262668288] + bf16 copy", double(params) * 30,
           [&] { ops::adamw_update(p, g, m, v, step, weight); });
  }
  return 0;
}

}  // namespace
}  // namespace sigma

int main() {
  try {
    return sigma::run();
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_memory_bound: {}\n", e.what());
    return 2;
  }
}
