#include "core/tensor/arena.h"

#include <algorithm>

namespace sigma {

Tensor Arena::take(Shape shape, DType dtype, const std::string& category) {
  Tensor t;
  t.shape = shape;
  t.dtype = dtype;
  t.device = device_;
  size_t bytes = (t.bytes() + alignment_ - 1) / alignment_ * alignment_;
  if (allocated()) {
    t = buffer_.tensor(cursor_, shape, dtype);
  } else if (cursor_ + bytes > cursor_max_) {
    // Only memory no earlier tensor shared (see rewind) adds to the plan.
    by_category_[category] += cursor_ + bytes - std::max(cursor_, cursor_max_);
  }
  cursor_ += bytes;
  cursor_max_ = std::max(cursor_max_, cursor_);
  pass_end_ = std::max(pass_end_, cursor_);
  return t;
}

void Arena::allocate() {
  SIGMA_CHECK(!allocated(), "arena allocated twice");
  buffer_ = Buffer(cursor_max_, device_);
  cursor_ = 0;
  pass_end_ = 0;
}

}  // namespace sigma
