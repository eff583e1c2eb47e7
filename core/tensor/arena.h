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
  explicit Arena(Device device) : device_(device) {}

  // A tensor of `shape` from the arena, counted under `category` in the plan.
  Tensor take(Shape shape, DType dtype, const std::string& category);
  // Allocates what was planned and rewinds, so the layout pass can run again for real.
  void allocate();
  bool allocated() const { return buffer_.data() != nullptr; }
  // After allocation: starts another binding pass over the same memory (take() hands out the
  // same offsets again), so a second model structure can bind to tensors already bound.
  void rewind() { cursor_ = 0; }
  // Zeroes the whole arena (e.g. gradients before a step).
  void zero() { buffer_.zero(); }

  size_t planned_bytes() const { return cursor_max_; }
  const std::map<std::string, size_t>& bytes_by_category() const { return by_category_; }
  Device device() const { return device_; }

 private:
  Device device_;
  Buffer buffer_;
  size_t cursor_ = 0;
  size_t cursor_max_ = 0;
  std::map<std::string, size_t> by_category_;
};

}  // namespace sigma
