// Shared helpers of the CUDA parity tests: seeded random inputs, CPU views of host vectors
// for the CPU twins, fp32 host data moved to the GPU in fp32 or bf16 and back, NaN-poisoned
// outputs, and the comparison with the CPU reference by ||out - ref|| / ||ref|| (METHOD.md).
// Every CUDA test starts with SIGMA_REQUIRE_GPU(), so the suite passes on machines
// without a GPU (CI) and runs the checks where one is present.
#pragma once

#include "core/random.h"
#include "core/tensor/tensor.h"
#include "kernels/device.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#define SIGMA_REQUIRE_GPU()                                      \
  do {                                                           \
    if (!::sigma::device::cuda_available()) {                    \
      MESSAGE("skipped: " << ::sigma::device::describe());       \
      return;                                                    \
    }                                                            \
  } while (0)

namespace sigma::test {

// n standard normals times scale: the tests' fresh random inputs (seeded, so reproducible).
inline std::vector<float> random_vector(int64_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = float(scale * rng.normal());
  return v;
}

// A CPU tensor over a vector's memory, for calling the CPU twins on test data.
inline Tensor cpu_view(std::vector<float>& v, Shape shape) {
  Tensor t;
  t.data = v.data();
  t.shape = shape;
  return t;
}

inline Tensor cpu_view(std::vector<int32_t>& v, Shape shape) {
  Tensor t;
  t.data = v.data();
  t.shape = shape;
  t.dtype = DType::kI32;
  return t;
}

// fp32 -> bf16 with round-to-nearest-even, as __float2bfloat16 does (NaN stays NaN).
inline uint16_t to_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

inline float from_bf16(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

// Values as the GPU will see them after rounding to `dtype` (so the CPU reference can be
// fed the same inputs).
inline std::vector<float> rounded(std::vector<float> v, DType dtype) {
  if (dtype == DType::kBF16)
    for (float& x : v) x = from_bf16(to_bf16(x));
  return v;
}

// A GPU tensor that owns its memory.
struct DeviceTensor {
  Buffer buffer;
  Tensor tensor;
  DeviceTensor(Shape shape, DType dtype)
      : buffer(size_t(shape.numel()) * dtype_size(dtype), Device::kCuda),
        tensor(buffer.tensor(0, shape, dtype)) {}
  operator Tensor() const { return tensor; }
};

inline DeviceTensor to_device(const std::vector<float>& host, Shape shape, DType dtype) {
  DeviceTensor out(shape, dtype);
  Buffer staging(out.tensor.bytes(), Device::kCpu);
  Tensor h = staging.tensor(0, shape, dtype);
  if (dtype == DType::kBF16) {
    auto* p = static_cast<uint16_t*>(h.data);
    for (size_t i = 0; i < host.size(); ++i) p[i] = to_bf16(host[i]);
  } else if (dtype == DType::kI32) {
    auto* p = static_cast<int32_t*>(h.data);
    for (size_t i = 0; i < host.size(); ++i) p[i] = int32_t(host[i]);
  } else {
    std::memcpy(h.data, host.data(), host.size() * sizeof(float));
  }
  device::copy(out.tensor, h);
  return out;
}

inline DeviceTensor to_device_i32(const std::vector<int32_t>& host, Shape shape) {
  DeviceTensor out(shape, DType::kI32);
  Buffer staging(out.tensor.bytes(), Device::kCpu);
  Tensor h = staging.tensor(0, shape, DType::kI32);
  std::memcpy(h.data, host.data(), host.size() * sizeof(int32_t));
  device::copy(out.tensor, h);
  return out;
}

inline std::vector<float> to_host(Tensor t) {
  Buffer staging(t.bytes(), Device::kCpu);
  Tensor h = staging.tensor(0, t.shape, t.dtype);
  device::copy(h, t);
  std::vector<float> out(size_t(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    if (t.dtype == DType::kBF16)
      out[i] = from_bf16(static_cast<const uint16_t*>(h.data)[i]);
    else if (t.dtype == DType::kI32)
      out[i] = float(static_cast<const int32_t*>(h.data)[i]);
    else
      out[i] = static_cast<const float*>(h.data)[i];
  }
  return out;
}

// Through float, exact below 2^24: indices and counts.
inline std::vector<int32_t> to_host_i32(Tensor t) {
  std::vector<float> f = to_host(t);
  return std::vector<int32_t>(f.begin(), f.end());
}

// An output buffer filled with NaN (-1 for indices), so an element a kernel fails to write
// shows up in the comparison.
inline DeviceTensor poisoned(Shape shape, DType dtype) {
  std::vector<float> poison(size_t(shape.numel()), dtype == DType::kI32 ? -1.0f : NAN);
  return to_device(poison, shape, dtype);
}

// ||out - ref|| / ||ref||, in double; NaN anywhere gives infinity (never a pass).
inline double rel_error(const std::vector<float>& out, const std::vector<float>& ref) {
  REQUIRE(out.size() == ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    double d = double(out[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

}  // namespace sigma::test
