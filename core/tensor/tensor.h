// Tensor: a non-owning, typed view of contiguous memory on one device; Buffer owns memory.
//
// Model code passes Tensors to kernels/ops.h, which dispatches on `device`. Views never
// allocate: every buffer is planned up front (see arena.h), so a run never grows.
// Shapes are row-major and contiguous; strides are implied. Up to 4 dimensions.
#pragma once

#include "core/error.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace sigma {

enum class DType { kF32, kBF16, kI32 };
enum class Device { kCpu, kCuda };

size_t dtype_size(DType dtype);
// What activations are stored in: fp32 on the CPU (the reference), bf16 on CUDA
// (DESIGN.md, "Precision"). Statistics, losses and router math stay fp32 everywhere.
inline DType activation_dtype(Device device) {
  return device == Device::kCpu ? DType::kF32 : DType::kBF16;
}
const char* dtype_name(DType dtype);
const char* device_name(Device device);

struct Shape {
  std::array<int64_t, 4> dims{};
  int rank = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> list);
  int64_t operator[](int i) const { return dims[i]; }
  int64_t numel() const;
  std::string str() const;  // "[2, 3, 4]"
  bool operator==(const Shape& other) const;
};

struct Tensor {
  void* data = nullptr;
  Shape shape;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;

  int64_t numel() const { return shape.numel(); }
  size_t bytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t size(int dim) const { return shape[dim < 0 ? shape.rank + dim : dim]; }
  bool defined() const { return data != nullptr; }

  float* f32() const;           // checks dtype == kF32
  int32_t* i32() const;         // checks dtype == kI32
  // The same memory seen with another shape of equal numel.
  Tensor view(Shape new_shape) const;
  // Rows [begin, end) of the first dimension.
  Tensor slice_rows(int64_t begin, int64_t end) const;
};

// Owns one allocation on a device. Move-only.
class Buffer {
 public:
  Buffer() = default;
  Buffer(size_t bytes, Device device);
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  // A tensor over this buffer at a byte offset.
  Tensor tensor(size_t byte_offset, Shape shape, DType dtype) const;
  void zero();

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_ = Device::kCpu;
};

}  // namespace sigma
