// tensor_map.h: TMA tensor maps (CUtensorMap) over contiguous bf16 tensors, for the kernels
// that load tiles with cp.async.bulk.tensor (sm90.cuh): the grouped matmul and the attention
// forward.
#pragma once

#include <cuda.h>

#include <cstdint>
#include <initializer_list>

namespace sigma::cuda {

// A map over a contiguous bf16 tensor of the given sizes (innermost first, rank 2 to 5), read
// in boxes of `box` elements (innermost first; dims past the ones given are 1; box[0] x 2
// bytes = the swizzle's row: 128 bytes for CU_TENSOR_MAP_SWIZZLE_128B, 64 for _64B). Reads
// outside the tensor return zeros.
CUtensorMap bf16_tensor_map(const void* data, std::initializer_list<int64_t> sizes,
                            std::initializer_list<uint32_t> box, CUtensorMapSwizzle swizzle);

}  // namespace sigma::cuda
