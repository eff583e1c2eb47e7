// tensor_map.cu: building TMA maps through the driver's cuTensorMapEncodeTiled, looked up once
// through the runtime (so that nothing links libcuda directly).
#include "kernels/cuda/tensor_map.h"

#include "kernels/cuda/runtime.h"

#include <cudaTypedefs.h>

namespace sigma::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found;
    SIGMA_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                                      cudaEnableDefault, &found));
    SIGMA_CHECK(found == cudaDriverEntryPointSuccess && fn != nullptr,
                "the CUDA driver has no cuTensorMapEncodeTiled");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

}  // namespace

CUtensorMap bf16_tensor_map(const void* data, std::initializer_list<int64_t> sizes,
                            std::initializer_list<uint32_t> box, CUtensorMapSwizzle swizzle) {
  constexpr int kMaxRank = 5;
  SIGMA_CHECK(sizes.size() >= 2 && sizes.size() <= kMaxRank && box.size() <= sizes.size(),
              "bf16_tensor_map: rank {} with a box of rank {}", sizes.size(), box.size());
  SIGMA_CHECK(reinterpret_cast<uintptr_t>(data) % 16 == 0, "bf16_tensor_map: unaligned tensor");
  cuuint64_t size[kMaxRank], stride[kMaxRank - 1];
  cuuint32_t box_size[kMaxRank], element_stride[kMaxRank];
  int rank = 0;
  cuuint64_t bytes = 2;
  for (int64_t n : sizes) {
    if (rank > 0) stride[rank - 1] = bytes;
    size[rank] = cuuint64_t(n);
    box_size[rank] = 1;
    element_stride[rank++] = 1;
    bytes *= cuuint64_t(n);
  }
  int dim = 0;
  for (uint32_t n : box) box_size[dim++] = n;
  CUtensorMap map;
  CUresult result = tensor_map_encoder()(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, cuuint32_t(rank), const_cast<void*>(data), size,
      stride, box_size, element_stride, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  SIGMA_CHECK(result == CUDA_SUCCESS, "cuTensorMapEncodeTiled failed ({})", int(result));
  return map;
}

}  // namespace sigma::cuda
