// op_profile.h: where a step's time goes, op by op (sigma train --profile-ops).
//
// While recording, kernels/dispatch.cpp wraps every op call in a Scope, which takes a time
// point before and after it on the op's device (kernels/device.h): CUDA events on the compute
// stream, so the GPU's own time is measured and the host never waits, or the host clock for
// the CPU's synchronous ops. take() reads the times (waiting for the GPU once) and sums them
// by op and by the shapes of its first two tensors. Collectives, copies and memsets are not
// ops and are not timed; an op's span includes any wait for the host to launch its kernels.
#pragma once

#include "core/tensor/tensor.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sigma::op_profile {

// Scopes record only between start() and stop().
void start();
void stop();
bool recording();

class Scope {
 public:
  // `first` and `second`: the op's first two defined tensors, which name its shape.
  Scope(const char* op, const Tensor& first, const Tensor& second);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  int64_t record_ = -1;
};

struct Row {
  std::string op;      // e.g. "matmul_forward"
  std::string shapes;  // e.g. "[16384, 6144] [16384, 2048]"
  int64_t calls = 0;
  double ms = 0;
};

// Every call recorded since the last take(), summed by op and shapes, longest first; then
// forgets them.
std::vector<Row> take();

}  // namespace sigma::op_profile
