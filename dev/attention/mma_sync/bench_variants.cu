// bench_variants: tile-size variants of the mma.sync flash attention (version 1) side by side on the three
// bench shapes (../../bench/bench_attention.cpp): each variant's median time and its relative
// difference from the mainline configuration's outputs (a different tiling sums in another
// order, so ~1e-3 is expected; order 1 means a broken variant). It includes the kernel files
// so it can instantiate configurations they do not; build it by hand (../NOTES.md).
#include "dev/attention/mma_sync/attention_backward.cu"
#include "dev/attention/mma_sync/attention_forward.cu"

#include "kernels/device.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace sigma {
namespace {

using cuda::attention::Dims;

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
      uint32_t bits;
      std::memcpy(&bits, &x, 4);
      if (dtype == DType::kF32)
        static_cast<float*>(h.data)[i] = x;
      else
        static_cast<uint16_t*>(h.data)[i] = uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    }
    device::copy(tensor, h);
  }
  operator Tensor() const { return tensor; }
};

std::vector<float> host_values(Tensor t) {
  Buffer staging(t.bytes(), Device::kCpu);
  Tensor h = staging.tensor(0, t.shape, t.dtype);
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

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

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
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

struct Problem {
  int64_t batch, seq_len, n_q, n_k, n_v, d;
  DeviceTensor q, k, v, d_out, out, lse, d_q, d_k, d_v;
  Dims s;
  std::vector<float> ref_out, ref_dq, ref_dk, ref_dv;
  Problem(int64_t b, int64_t t, int64_t nq, int64_t nk, int64_t nv, int64_t dim)
      : batch(b), seq_len(t), n_q(nq), n_k(nk), n_v(nv), d(dim),
        q({b, t, nq, dim}, DType::kBF16, 1), k({b, t, nk, dim}, DType::kBF16, 2),
        v({b, t, nv, dim}, DType::kBF16, 3), d_out({b, t, nq, dim}, DType::kBF16, 4),
        out({b, t, nq, dim}, DType::kBF16, 5), lse({b, nq, t}, DType::kF32, 6),
        d_q({b, t, nq, dim}, DType::kBF16, 7), d_k({b, t, nk, dim}, DType::kBF16, 8),
        d_v({b, t, nv, dim}, DType::kBF16, 9), s(cuda::attention::dims_of(q, k, v)) {
    cuda::attention_forward(out, lse, q, k, v);
    cuda::attention_backward(d_q, d_k, d_v, d_out, q, k, v, out, lse);
    ref_out = host_values(out);
    ref_dq = host_values(d_q);
    ref_dk = host_values(d_k);
    ref_dv = host_values(d_v);
  }
  double flops() const { return 4.0 * double(batch * n_q) * double(seq_len * seq_len) * double(d) / 2; }
};

template <int kDim, int kWarps, int kBlockN>
void forward_variant(Problem& p) {
  auto run = [&] { cuda::attention::launch_forward<kDim, kWarps, kBlockN>(p.out, p.lse, p.q, p.k, p.v, p.s); };
  double ms = median_ms(run, 3, 20);
  run();
  double diff = rel_diff(host_values(p.out), p.ref_out);
  fmt::print("  fwd  warps {} kBlockN {:>3}: {:8.3f} ms {:6.1f} TFLOP/s  diff {:.1e}\n", kWarps,
             kBlockN, ms, p.flops() / ms / 1e9, diff);
  cuda::attention_forward(p.out, p.lse, p.q, p.k, p.v);  // leave the mainline out for backward
}

template <int kDim, int kDqBlockN, int kKvBlockM>
void backward_variant(Problem& p) {
  auto run = [&] {
    cuda::attention::launch_backward<kDim, kDqBlockN, kKvBlockM>(p.d_q, p.d_k, p.d_v, p.d_out,
                                                                 p.q, p.k, p.v, p.out, p.lse, p.s);
  };
  double ms = median_ms(run, 3, 20);
  run();
  double diff = std::max({rel_diff(host_values(p.d_q), p.ref_dq), rel_diff(host_values(p.d_k), p.ref_dk),
                          rel_diff(host_values(p.d_v), p.ref_dv)});
  fmt::print("  bwd  dq kBlockN {:>3} dkdv kBlockM {:>3}: {:8.3f} ms {:6.1f} TFLOP/s (2.5x fwd)  diff {:.1e}\n",
             kDqBlockN, kKvBlockM, ms, 2.5 * p.flops() / ms / 1e9, diff);
}

template <int kDim>
void variants(int64_t b, int64_t t, int64_t nq, int64_t nk, int64_t nv) {
  Problem p(b, t, nq, nk, nv, kDim);
  fmt::print("B{} T{} {}/{}/{} d{}\n", b, t, nq, nk, nv, kDim);
  forward_variant<kDim, 8, 64>(p);
  forward_variant<kDim, 8, 128>(p);
  forward_variant<kDim, 4, 64>(p);
  forward_variant<kDim, 4, 128>(p);
  backward_variant<kDim, 64, 64>(p);
  backward_variant<kDim, 64, 32>(p);
  backward_variant<kDim, 32, 64>(p);
  backward_variant<kDim, 32, 32>(p);
}

}  // namespace
}  // namespace sigma

int main() {
  try {
    sigma::variants<64>(4, 4096, 32, 4, 16);
    sigma::variants<96>(4, 4096, 16, 4, 4);
    sigma::variants<128>(2, 8192, 32, 4, 16);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_variants: {}\n", e.what());
    return 2;
  }
}
