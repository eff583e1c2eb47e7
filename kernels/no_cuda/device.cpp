// device.cpp: kernels/device.h in a build without the CUDA backend: there is no GPU, and
// asking for device memory is a clear error rather than a crash.
#include "kernels/device.h"

#include <cstring>

namespace sigma::device {

bool cuda_available() { return false; }
std::string describe() { return "no GPU (this sigma was built without CUDA: -DSIGMA_CUDA=ON)"; }

void* allocate(size_t) { fail("--device cuda needs a sigma built with -DSIGMA_CUDA=ON"); }
void release(void*, size_t) {}
void zero(void* data, size_t bytes, Device where) {
  if (where != Device::kCpu) fail("device memory needs the CUDA backend");
  std::memset(data, 0, bytes);
}

void copy(Tensor dst, Tensor src) {
  SIGMA_CHECK(dst.device == Device::kCpu && src.device == Device::kCpu,
              "copy between devices needs the CUDA backend");
  SIGMA_CHECK(dst.bytes() == src.bytes(), "copy of {} bytes into {}", src.bytes(), dst.bytes());
  if (dst.data != src.data && src.bytes() > 0) std::memcpy(dst.data, src.data, src.bytes());
}

void synchronize() {}
size_t peak_bytes() { return 0; }
size_t used_bytes() { return 0; }

void* record_event() { fail("GPU timing needs the CUDA backend"); }
double event_elapsed_ms(void*, void*) { fail("GPU timing needs the CUDA backend"); }

}  // namespace sigma::device
