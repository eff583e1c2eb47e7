// device.cu: kernels/device.h on CUDA: allocation, copies and the shared runtime objects.
#include "kernels/cuda/runtime.h"
#include "kernels/device.h"

#include <fmt/format.h>

#include <atomic>
#include <cstring>

namespace sigma {
namespace {

struct Runtime {
  cudaStream_t stream = nullptr;
  cublasLtHandle_t cublaslt = nullptr;
  void* workspace = nullptr;
  void* scratch = nullptr;
  int* data_error = nullptr;
  int num_sms = 0;

  Runtime() {
    SIGMA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    SIGMA_CUBLAS_CHECK(cublasLtCreate(&cublaslt));
    SIGMA_CUDA_CHECK(cudaMalloc(&workspace, cuda::kCublasLtWorkspaceBytes));
    SIGMA_CUDA_CHECK(cudaMalloc(&scratch, cuda::kScratchBytes));
    SIGMA_CUDA_CHECK(cudaMalloc(&data_error, sizeof(int)));
    SIGMA_CUDA_CHECK(cudaMemset(data_error, 0, sizeof(int)));
    int device = 0;
    SIGMA_CUDA_CHECK(cudaGetDevice(&device));
    SIGMA_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device));
  }
};

std::atomic<size_t> live_bytes{0}, peak{0};

void count_allocation(size_t bytes) {
  size_t now = live_bytes += bytes;
  size_t old = peak.load();
  while (now > old && !peak.compare_exchange_weak(old, now)) {
  }
}

// Created on first use and kept for the process: the driver frees it all at exit.
Runtime& runtime() {
  static Runtime* r = [] {
    auto* created = new Runtime();
    count_allocation(cuda::kCublasLtWorkspaceBytes + cuda::kScratchBytes);
    return created;
  }();
  return *r;
}

}  // namespace

namespace cuda {
cudaStream_t stream() { return runtime().stream; }
cublasLtHandle_t cublaslt() { return runtime().cublaslt; }
void* cublaslt_workspace() { return runtime().workspace; }
int num_sms() { return runtime().num_sms; }
void* scratch() { return runtime().scratch; }
int* data_error_flag() { return runtime().data_error; }

void check_data_errors() {
  int flag = 0;
  SIGMA_CUDA_CHECK(cudaMemcpyAsync(&flag, runtime().data_error, sizeof(int),
                                   cudaMemcpyDeviceToHost, stream()));
  SIGMA_CUDA_CHECK(cudaStreamSynchronize(stream()));
  if (flag == 0) return;
  SIGMA_CUDA_CHECK(cudaMemsetAsync(runtime().data_error, 0, sizeof(int), stream()));
  fail("a token id in the batch is outside the model's vocabulary (the data was built "
       "for a bigger vocabulary than model.vocab_size)");
}
}  // namespace cuda

namespace device {

bool cuda_available() {
  int count = 0;
  // Any error (no driver, driver too old, no device) means "no GPU" (../shared/GPU.md).
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

std::string describe() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return fmt::format("no GPU ({})", cudaGetErrorString(err));
  if (count == 0) return "no GPU (no CUDA device)";
  cudaDeviceProp p{};
  SIGMA_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
  return fmt::format("{}, {:.1f} GiB, sm_{}{}, {} SMs", p.name, double(p.totalGlobalMem) / (1 << 30),
                     p.major, p.minor, p.multiProcessorCount);
}

void* allocate(size_t bytes) {
  runtime();
  void* data = nullptr;
  cudaError_t err = cudaMalloc(&data, bytes);
  if (err != cudaSuccess) {
    size_t free = 0, total = 0;
    cudaMemGetInfo(&free, &total);
    fail("out of GPU memory allocating {:.2f} GiB ({:.2f} GiB free of {:.2f}): reduce "
         "train.micro_batch or data.seq_len, or recompute activations",
         double(bytes) / (1 << 30), double(free) / (1 << 30), double(total) / (1 << 30));
  }
  SIGMA_CUDA_CHECK(cudaMemsetAsync(data, 0, bytes, cuda::stream()));
  count_allocation(bytes);
  return data;
}

void release(void* data, size_t bytes) {
  if (!data) return;
  // Freed memory may still be read by queued kernels: finish them first.
  SIGMA_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
  SIGMA_CUDA_CHECK(cudaFree(data));
  live_bytes -= bytes;
}

void zero(void* data, size_t bytes, Device where) {
  if (where == Device::kCpu)
    std::memset(data, 0, bytes);
  else
    SIGMA_CUDA_CHECK(cudaMemsetAsync(data, 0, bytes, cuda::stream()));
}

void copy(Tensor dst, Tensor src) {
  SIGMA_CHECK(dst.bytes() == src.bytes(), "copy of {} bytes into {}", src.bytes(), dst.bytes());
  if (src.bytes() == 0) return;
  // Host to host needs no GPU (CPU runs in a CUDA build, on machines without one).
  if (dst.device == Device::kCpu && src.device == Device::kCpu) {
    if (dst.data != src.data) std::memcpy(dst.data, src.data, src.bytes());
    return;
  }
  SIGMA_CUDA_CHECK(
      cudaMemcpyAsync(dst.data, src.data, src.bytes(), cudaMemcpyDefault, cuda::stream()));
  if (dst.device == Device::kCpu) SIGMA_CUDA_CHECK(cudaStreamSynchronize(cuda::stream()));
}

void synchronize() { SIGMA_CUDA_CHECK(cudaStreamSynchronize(cuda::stream())); }

size_t peak_bytes() { return peak.load(); }

size_t used_bytes() {
  size_t free = 0, total = 0;
  SIGMA_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  return total - free;
}

void* record_event() {
  cudaEvent_t event;
  SIGMA_CUDA_CHECK(cudaEventCreate(&event));
  SIGMA_CUDA_CHECK(cudaEventRecord(event, cuda::stream()));
  return event;
}

double event_elapsed_ms(void* from, void* to) {
  auto a = static_cast<cudaEvent_t>(from), b = static_cast<cudaEvent_t>(to);
  SIGMA_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  SIGMA_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  SIGMA_CUDA_CHECK(cudaEventDestroy(a));
  SIGMA_CUDA_CHECK(cudaEventDestroy(b));
  return ms;
}

}  // namespace device
}  // namespace sigma
