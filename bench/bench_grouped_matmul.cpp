// bench_grouped_matmul: the grouped matmul over experts (forward, input grad, weight grad)
// against a dense cuBLASLt GEMM of equal FLOPs measured in the same run, on the shapes of
// ../shared/bench/README.md: 96 experts, D 1536 -> 2 x 768 (gate and up stacked as O = 1536),
// random routing of 16,384 tokens top-1 and top-8 and 65,536 tokens top-1.
//
// Each pass is first checked against a per-expert loop of plain matmuls (ops::matmul_*,
// cuBLASLt) on the same data, then timed: medians of CUDA-event times over many launches.
// The input grad is timed as backward with d_inp minus backward without it. FLOPs per pass
// are 2 R D O; the weight grad also moves 2 x 4 E O D bytes (its fp32 read-add-write), or
// 4 E O D when it overwrites the gradient (ops::GradWrite::kOverwrite, a step's first pass).
#include "core/random.h"
#include "core/tensor/tensor.h"
#include "kernels/cuda/runtime.h"
#include "kernels/device.h"
#include "kernels/ops.h"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

using namespace sigma;

namespace {

constexpr int64_t kExperts = 96, kIn = 1536, kOut = 1536;

// Random bf16 values of magnitude in [2^(exponent-127), 2^(exponent-126)), random sign: fast
// to make in bulk, and never zero (METHOD.md: zeros hide unwritten outputs).
Buffer random_bf16(int64_t n, uint64_t seed, int exponent) {
  Buffer host(size_t(n) * 2, Device::kCpu);
  auto* bits = static_cast<uint16_t*>(host.data());
  Rng rng(seed);
  for (int64_t i = 0; i < n; i += 4) {
    uint64_t r = rng.next_u64();
    for (int64_t j = i; j < std::min(n, i + 4); ++j, r >>= 16)
      bits[j] = uint16_t((r & 0x8000) | (uint32_t(exponent) << 7) | (r & 0x7f));
  }
  Buffer device(host.bytes(), Device::kCuda);
  device::copy(device.tensor(0, {n}, DType::kBF16), host.tensor(0, {n}, DType::kBF16));
  return device;
}

std::vector<float> to_host(Tensor t) {
  Buffer host(t.bytes(), Device::kCpu);
  Tensor h = host.tensor(0, t.shape, t.dtype);
  device::copy(h, t);
  std::vector<float> out(size_t(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    if (t.dtype == DType::kF32) {
      out[i] = static_cast<const float*>(h.data)[i];
    } else {
      uint32_t bits = uint32_t(static_cast<const uint16_t*>(h.data)[i]) << 16;
      std::memcpy(&out[i], &bits, 4);
    }
  }
  return out;
}

double rel_error(Tensor got, Tensor want) {
  std::vector<float> a = to_host(got), b = to_host(want);
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

// Median milliseconds of fn over `reps` launches, after warm-up.
double time_ms(const std::function<void()>& fn, int reps = 30) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t start, stop;
  SIGMA_CUDA_CHECK(cudaEventCreate(&start));
  SIGMA_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    SIGMA_CUDA_CHECK(cudaEventRecord(start, cuda::stream()));
    fn();
    SIGMA_CUDA_CHECK(cudaEventRecord(stop, cuda::stream()));
    SIGMA_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    SIGMA_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  device::synchronize();
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void run_case(int64_t tokens, int64_t top_k) {
  const int64_t rows = tokens * top_k;
  std::vector<int32_t> counts(kExperts, 0);
  Rng route(7 + uint64_t(rows));
  for (int64_t r = 0; r < rows; ++r) ++counts[route.below(kExperts)];

  Buffer x_buf = random_bf16(rows * kIn, 1, 127), dy_buf = random_bf16(rows * kOut, 2, 127);
  Buffer w_buf = random_bf16(kExperts * kOut * kIn, 3, 121);  // |w| ~ 1/64
  Buffer dense_w_buf = random_bf16(kOut * kIn, 4, 121);
  Tensor x = x_buf.tensor(0, {rows, kIn}, DType::kBF16);
  Tensor dy = dy_buf.tensor(0, {rows, kOut}, DType::kBF16);
  Tensor w = w_buf.tensor(0, {kExperts, kOut, kIn}, DType::kBF16);
  Tensor dense_w = dense_w_buf.tensor(0, {kOut, kIn}, DType::kBF16);
  Buffer tpe_buf(kExperts * 4, Device::kCuda), tpe_host(kExperts * 4, Device::kCpu);
  std::memcpy(tpe_host.data(), counts.data(), kExperts * 4);
  Tensor tpe = tpe_buf.tensor(0, {kExperts}, DType::kI32);
  device::copy(tpe, tpe_host.tensor(0, {kExperts}, DType::kI32));

  auto activation = [&](int64_t cols) { return Buffer(size_t(rows * cols) * 2, Device::kCuda); };
  Buffer y_buf = activation(kOut), y_ref_buf = activation(kOut), dx_buf = activation(kIn),
         dx_ref_buf = activation(kIn);
  Buffer dw_buf(size_t(kExperts * kOut * kIn) * 4, Device::kCuda);
  Buffer dw_ref_buf(dw_buf.bytes(), Device::kCuda);
  Tensor y = y_buf.tensor(0, {rows, kOut}, DType::kBF16);
  Tensor y_ref = y_ref_buf.tensor(0, {rows, kOut}, DType::kBF16);
  Tensor dx = dx_buf.tensor(0, {rows, kIn}, DType::kBF16);
  Tensor dx_ref = dx_ref_buf.tensor(0, {rows, kIn}, DType::kBF16);
  Tensor dw = dw_buf.tensor(0, {kExperts, kOut, kIn}, DType::kF32);
  Tensor dw_ref = dw_ref_buf.tensor(0, {kExperts, kOut, kIn}, DType::kF32);

  // The reference: one cuBLASLt matmul per expert (the Hugging Face way).
  auto per_expert = [&](bool backward) {
    int64_t begin = 0;
    for (int64_t e = 0; e < kExperts; ++e) {
      int64_t end = begin + counts[size_t(e)];
      Tensor w_e = w.slice_rows(e, e + 1).view({kOut, kIn});
      if (end > begin && !backward)
        ops::matmul_forward(y_ref.slice_rows(begin, end), x.slice_rows(begin, end), w_e);
      if (end > begin && backward)
        ops::matmul_backward(dx_ref.slice_rows(begin, end),
                             dw_ref.slice_rows(e, e + 1).view({kOut, kIn}),
                             dy.slice_rows(begin, end), x.slice_rows(begin, end), w_e);
      begin = end;
    }
  };
  per_expert(false);
  per_expert(true);
  ops::grouped_matmul_forward(y, x, w, tpe);
  ops::grouped_matmul_backward(dx, dw, dy, x, w, tpe);
  double err_y = rel_error(y, y_ref), err_dx = rel_error(dx, dx_ref), err_dw = rel_error(dw, dw_ref);

  Buffer dense_y_buf = activation(kOut);
  Tensor dense_y = dense_y_buf.tensor(0, {rows, kOut}, DType::kBF16);
  double flops = 2.0 * double(rows) * kIn * kOut;
  double dense = time_ms([&] { ops::matmul_forward(dense_y, x, dense_w); });
  double fwd = time_ms([&] { ops::grouped_matmul_forward(y, x, w, tpe); });
  double bwd = time_ms([&] { ops::grouped_matmul_backward(dx, dw, dy, x, w, tpe); });
  double wgrad = time_ms([&] { ops::grouped_matmul_backward(Tensor{}, dw, dy, x, w, tpe); });
  double wgrad_over = time_ms([&] {
    ops::grouped_matmul_backward(Tensor{}, dw, dy, x, w, tpe, ops::GradWrite::kOverwrite);
  });
  double loop = time_ms([&] { per_expert(false); }, 10);
  auto tflops = [&](double ms) { return flops / ms / 1e9; };

  fmt::print("{} tokens top-{} ({} rows, {}..{} an expert): check vs per-expert cuBLASLt: "
             "out {:.1e}, d_inp {:.1e}, d_weight {:.1e}\n",
             tokens, top_k, rows, *std::min_element(counts.begin(), counts.end()),
             *std::max_element(counts.begin(), counts.end()), err_y, err_dx, err_dw);
  double dense_tf = tflops(dense);
  auto row = [&](const char* pass, double ms) {
    fmt::print("  {:<34} {:8.3f} ms {:7.1f} TFLOP/s  {:5.1f}% of dense\n", pass, ms, tflops(ms),
               100 * tflops(ms) / dense_tf);
  };
  row("dense cuBLASLt GEMM, equal FLOPs", dense);
  row("grouped forward", fwd);
  row("grouped input grad (bwd - wgrad)", bwd - wgrad);
  row("grouped weight grad", wgrad);
  row("grouped weight grad, overwriting", wgrad_over);
  row("per-expert cuBLASLt loop, forward", loop);
  fmt::print("  weight grad fp32 read-add-write: {:.0f} GB/s; overwrite: {:.0f} GB/s\n",
             2.0 * 4 * kExperts * kOut * kIn / wgrad / 1e6,
             4.0 * kExperts * kOut * kIn / wgrad_over / 1e6);
}

}  // namespace

int main() {
  if (!device::cuda_available()) {
    fmt::print("bench_grouped_matmul: no GPU ({})\n", device::describe());
    return 1;
  }
  fmt::print("{}\n", device::describe());
  run_case(16384, 1);
  run_case(16384, 8);
  run_case(65536, 1);
  return 0;
}
