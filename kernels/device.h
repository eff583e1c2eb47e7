// device.h: memory and copies on the compute device, for code outside kernels/ (Buffer,
// the trainer's input staging, checkpoints). A CPU-only build answers "no GPU" and fails
// clearly if asked for device memory.
#pragma once

#include "core/tensor/tensor.h"

#include <cstddef>
#include <string>

namespace sigma::device {

// True when this build has the CUDA backend and a usable GPU is present.
bool cuda_available();
// A one-line description of the GPU ("NVIDIA H200, 139.8 GiB, sm_90"), or why there is none.
std::string describe();

void* allocate(size_t bytes);  // zeroed; fails with a clear error when memory runs out
void release(void* data, size_t bytes);
// Zeroes `bytes` at `data` in host memory, or in device memory (ordered on the compute stream).
void zero(void* data, size_t bytes, Device where);
// Copies between tensors of equal bytes on any devices (host<->device, device<->device).
// Ordered on the compute stream; a copy to the host waits until its data has arrived.
void copy(Tensor dst, Tensor src);
// Waits until every queued kernel has finished (and reports any asynchronous error).
void synchronize();
// The most device memory sigma's allocations held at once (0 without CUDA); the cuBLASLt
// workspace and the CUDA context come on top.
size_t peak_bytes();
// Device memory in use on the whole GPU (total - free, as nvidia-smi counts it: the CUDA
// context and library pools included); 0 without CUDA.
size_t used_bytes();

// A CUDA event recorded now on the compute stream, for timing GPU work (kernels/op_profile.h).
void* record_event();
// Milliseconds between two recorded events, once the GPU has reached `to`; frees both.
double event_elapsed_ms(void* from, void* to);

// A moment on a device's clock, for timing its work: on CUDA an event on the compute stream
// (taking one never waits: it marks where the queued work has got to), on the CPU the host
// clock (its ops are synchronous). device_time.cpp.
struct TimePoint {
  void* event = nullptr;
  double host_ms = 0;
};
TimePoint time_now(Device where);
// Milliseconds from `from` to `to`, two points of one device; waits for the GPU to reach `to`.
// Each point is read once (its event is freed).
double elapsed_ms(TimePoint from, TimePoint to);

}  // namespace sigma::device
