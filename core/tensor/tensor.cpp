#include "core/tensor/tensor.h"

#include "kernels/device.h"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <utility>

namespace sigma {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kI32: return "i32";
  }
  return "?";
}

const char* device_name(Device device) { return device == Device::kCpu ? "cpu" : "cuda"; }

Shape::Shape(std::initializer_list<int64_t> list) {
  SIGMA_CHECK(list.size() <= 4, "rank {}", list.size());
  for (int64_t d : list) dims[rank++] = d;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= dims[i];
  return n;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < rank; ++i) s += fmt::format("{}{}", i ? ", " : "", dims[i]);
  return s + "]";
}

bool Shape::operator==(const Shape& other) const {
  if (rank != other.rank) return false;
  for (int i = 0; i < rank; ++i)
    if (dims[i] != other.dims[i]) return false;
  return true;
}

float* Tensor::f32() const {
  SIGMA_CHECK(dtype == DType::kF32, "tensor is {}", dtype_name(dtype));
  return static_cast<float*>(data);
}

int32_t* Tensor::i32() const {
  SIGMA_CHECK(dtype == DType::kI32, "tensor is {}", dtype_name(dtype));
  return static_cast<int32_t*>(data);
}

Tensor Tensor::view(Shape new_shape) const {
  SIGMA_CHECK(new_shape.numel() == numel(), "{} -> {}", shape.str(), new_shape.str());
  Tensor t = *this;
  t.shape = new_shape;
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  SIGMA_CHECK(0 <= begin && begin <= end && end <= shape[0], "rows [{}, {}) of {}", begin, end,
              shape.str());
  Tensor t = *this;
  int64_t row = numel() / shape[0];
  t.shape.dims[0] = end - begin;
  if (data) t.data = static_cast<char*>(data) + size_t(begin * row) * dtype_size(dtype);
  return t;
}

Buffer::Buffer(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (device != Device::kCpu) {
    data_ = device::allocate(bytes);  // zeroed, 256-byte aligned
    return;
  }
  // 64-byte alignment: whole cache lines and AVX-512 loads for every tensor in the arena.
  data_ = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!data_) fail("out of host memory allocating {} bytes", bytes);
  std::memset(data_, 0, bytes_);
}

Buffer::~Buffer() {
  if (device_ == Device::kCpu)
    std::free(data_);
  else
    device::release(data_, bytes_);
}

Buffer::Buffer(Buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      device_(other.device_) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  std::swap(data_, other.data_);
  std::swap(bytes_, other.bytes_);
  std::swap(device_, other.device_);
  return *this;
}

Tensor Buffer::tensor(size_t byte_offset, Shape shape, DType dtype) const {
  Tensor t;
  t.shape = shape;
  t.dtype = dtype;
  t.device = device_;
  SIGMA_CHECK(byte_offset + t.bytes() <= bytes_, "offset {} + {} past {}", byte_offset, t.bytes(),
              bytes_);
  t.data = static_cast<char*>(data_) + byte_offset;
  return t;
}

void Buffer::zero() {
  if (data_) device::zero(data_, bytes_, device_);
}

}  // namespace sigma
