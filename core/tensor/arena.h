// Arena: one up-front allocation carved into named tensors, planned before anything runs.
//
// Layout code runs twice over the same Arena: first in planning mode (take() returns views
// with data == nullptr and only counts bytes), then after allocate() in binding mode, where
// take() hands out the same offsets over real memory. `sigma info` prints the plan from the
// first pass without allocating; the trainer uses the second. A run never allocates again.
#pragma once

#include "core/tensor/tensor.h"

#include <map>
#include <string>

namespace sigma {

class Arena {
 public:
  // Every tensor starts a multiple of `alignment` bytes in (256: vector loads, GPU copies).
  explicit Arena(Device device, size_t alignment = 256)
      : device_(device), alignment_(alignment) {}

  // A tensor of `shape` from the arena, counted under `category` in the plan.
  Tensor take(Shape shape, DType dtype, const std::string& category);
  // Allocates what was planned and rewinds, so the layout pass can run again for real.
  void allocate();
  bool allocated() const { return buffer_.data() != nullptr; }
  // Zeroes the whole arena (e.g. gradients before a step).
  void zero() { buffer_.zero(); }

  size_t planned_bytes() const { return cursor_max_; }

  // Tensors that are never live at the same time can share memory: take them after
  // rewinding to a mark (activation recomputation gives every layer the same scratch), then
  // continue past everything taken so far with skip_to_end().
  size_t mark() const { return cursor_; }
  void rewind(size_t mark) { cursor_ = mark; }
  void skip_to_end() { cursor_ = pass_end_; }
  // The whole allocation as one 1-D tensor (alignment gaps included; they stay zero), for
  // passes over every tensor at once such as the global gradient norm.
  Tensor whole(DType dtype) const {
    return buffer_.tensor(0, {int64_t(buffer_.bytes() / dtype_size(dtype))}, dtype);
  }
  const std::map<std::string, size_t>& bytes_by_category() const { return by_category_; }
  Device device() const { return device_; }

 private:
  Device device_;
  size_t alignment_;
  Buffer buffer_;
  size_t cursor_ = 0;
  size_t cursor_max_ = 0;
  size_t pass_end_ = 0;  // the furthest this layout pass has taken
  std::map<std::string, size_t> by_category_;
};

}  // namespace sigma
