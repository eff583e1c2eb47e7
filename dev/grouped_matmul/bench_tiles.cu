// bench_tiles: the grouped matmul kernel with each tile shape (Square 192 x 192 with 3
// consumer warpgroups, the one the ops use; Wide 128 x 256 with 2) on the shapes of
// bench/bench_grouped_matmul.cpp, after two small cases with empty experts and partial tiles.
// Each pass is checked against a per-expert loop of ops::matmul_* (cuBLASLt) before it is
// timed. Build and run: see README.md beside this.
#include "kernels/cuda/grouped_matmul.cu"

#include "core/random.h"
#include "kernels/device.h"
#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

using namespace sigma;

namespace {

struct Device2 {  // a device tensor that owns its memory
  Buffer buffer;
  Tensor t;
  Device2(Shape shape, DType dtype)
      : buffer(size_t(shape.numel()) * dtype_size(dtype), Device::kCuda),
        t(buffer.tensor(0, shape, dtype)) {}
};

void fill_bf16(Tensor t, uint64_t seed, int exponent) {
  Buffer host(t.bytes(), Device::kCpu);
  auto* bits = static_cast<uint16_t*>(host.data());
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i)
    bits[i] = uint16_t((rng.next_u64() & 0x807f) | (uint32_t(exponent) << 7));
  device::copy(t, host.tensor(0, t.shape, t.dtype));
}

std::vector<float> host_floats(Tensor t) {
  Buffer host(t.bytes(), Device::kCpu);
  device::copy(host.tensor(0, t.shape, t.dtype), t);
  std::vector<float> v(size_t(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t.dtype == DType::kF32) {
      v[i] = static_cast<const float*>(host.data())[i];
    } else {
      uint32_t b = uint32_t(static_cast<const uint16_t*>(host.data())[i]) << 16;
      std::memcpy(&v[i], &b, 4);
    }
  }
  return v;
}

double rel_error(Tensor got, Tensor want) {
  std::vector<float> a = host_floats(got), b = host_floats(want);
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

double median_ms(const std::function<void()>& fn) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> ms(25);
  for (float& m : ms) {
    cudaEventRecord(start, cuda::stream());
    fn();
    cudaEventRecord(stop, cuda::stream());
    cudaEventSynchronize(stop);
    cudaEventElapsedTime(&m, start, stop);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

template <class T>
void run_shape(const char* name, Tensor x, Tensor w, Tensor dy, Tensor tpe, Tensor y_ref,
               Tensor dx_ref, Tensor dw_ref, bool timed) {
  Device2 y(y_ref.shape, DType::kBF16), dx(dx_ref.shape, DType::kBF16),
      dw(dw_ref.shape, DType::kF32);
  cuda::forward_with<T>(y.t, x, w, tpe);
  cuda::backward_with<T>(dx.t, dw.t, dy, x, w, tpe, ops::GradWrite::kAccumulate);
  double ey = rel_error(y.t, y_ref), edx = rel_error(dx.t, dx_ref), edw = rel_error(dw.t, dw_ref);
  std::printf("  %-7s errors out %.1e d_inp %.1e d_weight %.1e", name, ey, edx, edw);
  if (!timed) {
    std::printf("\n");
    return;
  }
  double flops = 2.0 * double(x.size(0)) * x.size(1) * y.t.size(1);
  double fwd = median_ms([&] { cuda::forward_with<T>(y.t, x, w, tpe); });
  double bwd = median_ms([&] { cuda::backward_with<T>(dx.t, dw.t, dy, x, w, tpe, ops::GradWrite::kAccumulate); });
  double wgrad = median_ms([&] { cuda::backward_with<T>(Tensor{}, dw.t, dy, x, w, tpe, ops::GradWrite::kAccumulate); });
  std::printf(" | fwd %.3f ms %4.0f TF | dX %.3f ms %4.0f TF | dW %.3f ms %4.0f TF\n", fwd,
              flops / fwd / 1e9, bwd - wgrad, flops / (bwd - wgrad) / 1e9, wgrad,
              flops / wgrad / 1e9);
}

void run_case(std::vector<int32_t> counts, int64_t in, int64_t out, bool timed) {
  const int64_t experts = int64_t(counts.size());
  int64_t rows = 0;
  for (int32_t c : counts) rows += c;
  Device2 x({rows, in}, DType::kBF16), dy({rows, out}, DType::kBF16),
      w({experts, out, in}, DType::kBF16), tpe({experts}, DType::kI32);
  fill_bf16(x.t, 1, 127);
  fill_bf16(dy.t, 2, 127);
  fill_bf16(w.t, 3, 121);
  Buffer counts_host(size_t(experts) * 4, Device::kCpu);
  std::memcpy(counts_host.data(), counts.data(), size_t(experts) * 4);
  device::copy(tpe.t, counts_host.tensor(0, {experts}, DType::kI32));
  Device2 y_ref({rows, out}, DType::kBF16), dx_ref({rows, in}, DType::kBF16),
      dw_ref({experts, out, in}, DType::kF32);
  for (int64_t e = 0, begin = 0; e < experts; begin += counts[size_t(e)], ++e) {
    int64_t end = begin + counts[size_t(e)];
    if (end == begin) continue;
    Tensor w_e = w.t.slice_rows(e, e + 1).view({out, in});
    ops::matmul_forward(y_ref.t.slice_rows(begin, end), x.t.slice_rows(begin, end), w_e);
    ops::matmul_backward(dx_ref.t.slice_rows(begin, end),
                         dw_ref.t.slice_rows(e, e + 1).view({out, in}),
                         dy.t.slice_rows(begin, end), x.t.slice_rows(begin, end), w_e);
  }
  std::printf("%lld experts, %lld rows (%d..%d an expert), %lld -> %lld\n", (long long)experts,
              (long long)rows, *std::min_element(counts.begin(), counts.end()),
              *std::max_element(counts.begin(), counts.end()), (long long)in, (long long)out);
  run_shape<cuda::Square>("192x192", x.t, w.t, dy.t, tpe.t, y_ref.t, dx_ref.t, dw_ref.t, timed);
  run_shape<cuda::Wide>("128x256", x.t, w.t, dy.t, tpe.t, y_ref.t, dx_ref.t, dw_ref.t, timed);
}

// 96 experts with random routing (the bench's shapes).
std::vector<int32_t> routed(int64_t rows) {
  std::vector<int32_t> counts(96, 0);
  Rng route(99 + uint64_t(rows));
  for (int64_t r = 0; r < rows; ++r) ++counts[route.below(96)];
  return counts;
}

}  // namespace

int main() {
  if (!device::cuda_available()) {
    std::printf("bench_tiles: no GPU (%s)\n", device::describe().c_str());
    return 1;
  }
  run_case({0, 130, 1, 0, 77}, 200, 264, false);
  run_case({0, 5, 0, 3}, 64, 72, false);
  for (int64_t rows : {16384, 131072, 65536}) run_case(routed(rows), 1536, 1536, true);
  return 0;
}
