// vector_io.cuh: 16-byte loads and stores for the memory-bound kernels (elementwise, swiglu,
// adamw, rmsnorm, rope, cross-entropy).
//
// HBM feeds an SM only with enough bytes in flight; one 16-byte access per thread carries 8
// bf16 or 4 fp32 where a scalar access carries one element. A Pack<T, N> is N consecutive
// elements moved by as few accesses as its size allows (16 bytes each, or one narrower
// access). The caller guarantees the address is aligned to the Pack's alignment: tensors
// can be views with offsets, so the host checks with aligned16() and falls back to N = 1.
#pragma once

#include "kernels/cuda/runtime.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace sigma::cuda {

template <typename T, int N>
struct alignas(N * sizeof(T) >= 16 ? 16 : N * sizeof(T)) Pack {
  T v[N];
};

// The unsigned type of one access of kBytes.
template <int kBytes>
struct AccessBits;
template <>
struct AccessBits<16> { using type = uint4; };
template <>
struct AccessBits<8> { using type = uint2; };
template <>
struct AccessBits<4> { using type = unsigned; };
template <>
struct AccessBits<2> { using type = unsigned short; };

// Packs move as whole integer vectors: a plain struct copy may be split into one access per
// element (nvcc did so for 4 bf16: two 2-byte stores and a 4-byte one).
template <int N, typename T>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  constexpr int kBytes = N * sizeof(T), kUnit = kBytes < 16 ? kBytes : 16;
  using Bits = typename AccessBits<kUnit>::type;
  Pack<T, N> pack;
#pragma unroll
  for (int i = 0; i < kBytes / kUnit; ++i) {
    Bits bits = reinterpret_cast<const Bits*>(p)[i];
    memcpy(reinterpret_cast<char*>(&pack) + i * kUnit, &bits, kUnit);
  }
  return pack;
}

template <int N, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& pack) {
  constexpr int kBytes = N * sizeof(T), kUnit = kBytes < 16 ? kBytes : 16;
  using Bits = typename AccessBits<kUnit>::type;
#pragma unroll
  for (int i = 0; i < kBytes / kUnit; ++i) {
    Bits bits;
    memcpy(&bits, reinterpret_cast<const char*>(&pack) + i * kUnit, kUnit);
    reinterpret_cast<Bits*>(p)[i] = bits;
  }
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Elements per thread and step in the elementwise loops: 16 bytes of bf16, 32 of fp32.
constexpr int kPack = 8;
template <int N>
using Width = std::integral_constant<int, N>;

// The grid-stride loop of an elementwise kernel over n elements: body(i, Width<kPack>) on
// the packs [i, i + kPack) when `vectorized` (every pointer 16-byte aligned), then
// body(i, Width<1>) on each element the packs leave over (all of them when not vectorized).
// Each element is read and written by one thread, so outputs may alias inputs.
template <typename Body>
__device__ __forceinline__ void for_each_pack(int64_t n, bool vectorized, Body&& body) {
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t packs = vectorized ? n / kPack : 0;
  for (int64_t p = first; p < packs; p += stride) body(p * kPack, Width<kPack>{});
  for (int64_t i = packs * kPack + first; i < n; i += stride) body(i, Width<1>{});
}

// Blocks for an elementwise kernel over n elements: one pack per thread. Blocks run in as
// many waves as the hardware schedules; a persistent grid sized from num_sms() would need
// each kernel's occupancy (its register count) to avoid a half-empty last wave.
inline int elementwise_blocks(int64_t n, int threads) {
  return int(std::clamp<int64_t>(ceil_div(ceil_div(n, kPack), threads), 1, int64_t(1) << 30));
}

}  // namespace sigma::cuda
