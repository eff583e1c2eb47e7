// runtime.h: what every CUDA kernel file shares: error checks, the compute stream, the
// cuBLASLt handle and its workspace, and small bf16 helpers.
//
// One stream carries every kernel of a run, so ops are ordered without events and the
// host never waits except where an op returns a number (ops.h says which).
#pragma once

#include "core/error.h"
#include "core/tensor/tensor.h"

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

// Every CUDA runtime and cuBLASLt call is checked where it is made.
#define SIGMA_CUDA_CHECK(expr)                                                              \
  do {                                                                                      \
    cudaError_t sigma_err_ = (expr);                                                        \
    if (sigma_err_ != cudaSuccess)                                                          \
      ::sigma::fail("CUDA error at {}:{}: {} ({})", __FILE__, __LINE__, #expr,              \
                    cudaGetErrorString(sigma_err_));                                        \
  } while (0)

#define SIGMA_CUBLAS_CHECK(expr)                                                            \
  do {                                                                                      \
    cublasStatus_t sigma_status_ = (expr);                                                  \
    if (sigma_status_ != CUBLAS_STATUS_SUCCESS)                                             \
      ::sigma::fail("cuBLASLt error at {}:{}: {} ({})", __FILE__, __LINE__, #expr,          \
                    cublasLtGetStatusString(sigma_status_));                                \
  } while (0)

// After a kernel launch: catches bad launch configurations at once (kernel faults surface
// at the next synchronisation, named by device::synchronize()).
#define SIGMA_CUDA_LAUNCHED(name) SIGMA_CUDA_CHECK(cudaGetLastError())

// Runs the statement with T = float or __nv_bfloat16, the storage type of `dtype`.
#define SIGMA_DISPATCH_FLOAT(dtype, T, ...)                                       \
  do {                                                                            \
    if ((dtype) == ::sigma::DType::kF32) {                                        \
      using T = float;                                                            \
      __VA_ARGS__;                                                                \
    } else {                                                                      \
      SIGMA_CHECK((dtype) == ::sigma::DType::kBF16, "{} is not a float dtype",     \
                  ::sigma::dtype_name(dtype));                                    \
      using T = __nv_bfloat16;                                                    \
      __VA_ARGS__;                                                                \
    }                                                                             \
  } while (0)

namespace sigma::cuda {

cudaStream_t stream();
cublasLtHandle_t cublaslt();
// A workspace for cuBLASLt's split-K and stream-K algorithms, owned by the runtime.
void* cublaslt_workspace();
constexpr size_t kCublasLtWorkspaceBytes = size_t(64) << 20;
int num_sms();
// Device scratch for multi-pass reductions (partial sums), owned by the runtime; one op
// uses it at a time (every op runs on the one stream).
void* scratch();
constexpr size_t kScratchBytes = size_t(64) << 20;
// Raised by kernels that meet bad data (a token id outside the vocabulary): they skip the
// row and set it; ops that synchronise anyway (sum) report it as a user error.
int* data_error_flag();
void check_data_errors();

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Lets kernel `kKernel` launch with up to kSmem bytes of dynamic shared memory (past the
// default 48 KiB); set once per kernel, at its first launch.
template <auto kKernel, int kSmem>
void allow_dynamic_smem() {
  static const bool configured = [] {
    SIGMA_CUDA_CHECK(
        cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    return true;
  }();
  (void)configured;
}

// Loads and stores that read as float whatever the storage type (fp32 or bf16).
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);  // round to nearest even
}

}  // namespace sigma::cuda
