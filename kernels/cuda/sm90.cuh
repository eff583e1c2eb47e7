// sm90.cuh: Hopper (sm_90a) building blocks: mbarriers, bulk tensor copies (TMA), and warpgroup
// MMAs (wgmma) on swizzled tiles, for the grouped matmul (grouped_matmul.cu) and the flash
// attention (attention_wgmma.cuh, which adds 64B-swizzled panels at head dim 96).
//
// Each is one PTX instruction with its operands spelled out (PTX ISA 8.x, sections
// "mbarrier", "cp.async.bulk.tensor" and "wgmma"). Tiles are laid out the way a TMA copy with
// CU_TENSOR_MAP_SWIZZLE_128B writes them: rows of 128 bytes (64 bf16), 16-byte chunks XORed
// with the row index modulo 8, every tile 1024-byte aligned. wgmma reads the same layout
// through a matrix descriptor with the 128B swizzle mode, K-major or MN-major (PTX "Shared
// Memory Matrix Layout": the canonical ((8,m),(T,2k)) and ((T,8,m),(8,k)) layouts).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace sigma::cuda::sm90 {

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// --- mbarrier: a transaction-counting barrier in shared memory ---------------------------------

__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_address(bar)), "r"(arrivals));
}

// Makes the initialised barriers visible to the other threads and to the TMA unit.
__device__ __forceinline__ void mbarrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// One arrival that also announces `bytes` of TMA traffic for this phase.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_address(bar)),
               "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_address(bar)) : "memory");
}

// Waits until the phase of the given parity has completed. A fresh barrier is in phase 0, and
// the phase "before" it (parity 1) counts as completed, so a wait on parity 1 passes at once.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t address = smem_address(bar);
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(address), "r"(parity)
        : "memory");
  }
}

// --- TMA: bulk tensor copies global -> shared, completing on an mbarrier -------------------------
// Coordinates are in elements, innermost dimension first; out-of-bounds elements read as zero
// and still count toward the barrier's bytes.

__device__ __forceinline__ void tma_load_2d(void* dst, const void* map, uint64_t* bar, int c0,
                                            int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4}], [%2];" ::"r"(smem_address(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_address(bar)), "r"(c0), "r"(c1)
      : "memory");
}

__device__ __forceinline__ void tma_load_3d(void* dst, const void* map, uint64_t* bar, int c0,
                                            int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5}], [%2];" ::"r"(smem_address(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_address(bar)), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

__device__ __forceinline__ void tma_load_4d(void* dst, const void* map, uint64_t* bar, int c0,
                                            int c1, int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6}], [%2];" ::"r"(smem_address(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_address(bar)), "r"(c0), "r"(c1), "r"(c2),
      "r"(c3)
      : "memory");
}

// Bulk copies from shared to global memory by the TMA engine (asynchronous, in the async proxy:
// the source's writers fence_async_shared first). `bytes` a multiple of 16, both addresses
// 16-byte aligned. Tracked per issuing thread in bulk groups: bulk_commit closes one;
// bulk_wait_read<N> returns once at most N still read their source (the others' may be
// rewritten), bulk_wait<N> once at most N are unfinished (the others' writes done).
__device__ __forceinline__ void bulk_store(void* dst, const void* src, uint32_t bytes) {
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" ::"l"(dst),
               "r"(smem_address(src)), "r"(bytes) : "memory");
}
// dst[i] += src[i] (fp32), each element added once, atomically with respect to other adds.
__device__ __forceinline__ void bulk_reduce_add(float* dst, const float* src, uint32_t bytes) {
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;"
               ::"l"(dst), "r"(smem_address(src)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void bulk_commit() {
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;" ::"n"(kPending) : "memory");
}
template <int kPending>
__device__ __forceinline__ void bulk_wait() {
  asm volatile("cp.async.bulk.wait_group %0;" ::"n"(kPending) : "memory");
}

// Orders this thread's ordinary shared-memory stores before later reads by wgmma or TMA.
__device__ __forceinline__ void fence_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// A barrier among `threads` threads (a multiple of 32) under hardware barrier `id` (0 is
// __syncthreads').
__device__ __forceinline__ void named_barrier(uint32_t id, uint32_t threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// This warp's arrival at named barrier `id` (of `threads` in all), without waiting for it.
__device__ __forceinline__ void named_barrier_arrive(uint32_t id, uint32_t threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// Gives registers back (the producer) or takes the freed ones (the consumers): warpgroup-wide,
// and honoured because the kernel's __launch_bounds__ caps registers at entry.
template <uint32_t kRegisters>
__device__ __forceinline__ void shrink_registers() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegisters));
}
template <uint32_t kRegisters>
__device__ __forceinline__ void grow_registers() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegisters));
}

// --- wgmma ---------------------------------------------------------------------------------------

// The swizzle modes of a matrix descriptor (its bits 62-63). 128B: rows of 128 bytes whose
// 16-byte chunks are XORed with the row modulo 8 (1024-byte atoms); 64B: rows of 64 bytes,
// chunks XORed with the row / 2 modulo 4 (512-byte atoms).
enum class Swizzle : uint64_t { k128B = 1, k64B = 2 };

// A shared-memory matrix descriptor for a swizzled tile (PTX "Matrix Descriptor Format"):
// start address, leading and stride byte offsets (all >> 4), swizzle mode.
// K-major: stride = 8 rows (1024 bytes at 128B), leading unused. MN-major: leading = the
// distance between blocks of 64 (128B) elements along M/N, stride = 8 rows of K.
__device__ __forceinline__ uint64_t matrix_descriptor(uint32_t smem, uint32_t leading,
                                                      uint32_t stride,
                                                      Swizzle swizzle = Swizzle::k128B) {
  return uint64_t((smem & 0x3FFFF) >> 4) | uint64_t((leading & 0x3FFFF) >> 4) << 16 |
         uint64_t((stride & 0x3FFFF) >> 4) << 32 | uint64_t(swizzle) << 62;
}

// Before the first wgmma that reads accumulators other instructions wrote.
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
// Waits until at most kPending committed groups are still running.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}
// Two fp32 accumulators as one bf16x2 register, `lo` in the low half (the element first in
// memory): a wgmma A operand, or a 4-byte store.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
// Keeps the compiler from moving accumulator reads or writes across a wgmma wait.
template <int kRegisters>
__device__ __forceinline__ void fence_accumulators(float (&d)[kRegisters]) {
#pragma unroll
  for (int i = 0; i < kRegisters; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define SIGMA_WGMMA_F4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define SIGMA_WGMMA_F16(i) \
  SIGMA_WGMMA_F4(i), SIGMA_WGMMA_F4(i + 4), SIGMA_WGMMA_F4(i + 8), SIGMA_WGMMA_F4(i + 12)

// d[64 x N] (+)= A[64 x 16] B[16 x N], bf16 operands from shared memory, fp32 accumulators,
// for N = 192 or 256. kTransA / kTransB: 0 = K-major, 1 = M- / N-major; accumulate = false
// overwrites d. Thread t of the warpgroup holds rows 16 (t / 32) + (t % 32) / 4 + {0, 8} and
// columns 8 j + 2 (t % 4) + {0, 1}: d[4 j + 2 h + c] is row + 8 h, column 8 j + 2 (t % 4) + c.
template <int kN, int kTransA, int kTransB>
__device__ __forceinline__ void wgmma(float (&d)[kN / 2], uint64_t a, uint64_t b, bool accumulate) {
  static_assert(kN == 192 || kN == 256, "wgmma: N is 192 or 256");
  if constexpr (kN == 192) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %98, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
        "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "
        "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "
        "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, "
        "%70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, "
        "%87, %88, %89, %90, %91, %92, %93, %94, %95}, %96, %97, p, 1, 1, %99, %100;\n"
        "}\n"
        : SIGMA_WGMMA_F16(0), SIGMA_WGMMA_F16(16), SIGMA_WGMMA_F16(32), SIGMA_WGMMA_F16(48),
          SIGMA_WGMMA_F16(64), SIGMA_WGMMA_F16(80)
        : "l"(a), "l"(b), "r"(int32_t(accumulate)), "n"(kTransA), "n"(kTransB));
  } else {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
        "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "
        "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "
        "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, "
        "%70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, "
        "%87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, "
        "%103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, "
        "%117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, "
        "1, %131, %132;\n"
        "}\n"
        : SIGMA_WGMMA_F16(0), SIGMA_WGMMA_F16(16), SIGMA_WGMMA_F16(32), SIGMA_WGMMA_F16(48),
          SIGMA_WGMMA_F16(64), SIGMA_WGMMA_F16(80), SIGMA_WGMMA_F16(96), SIGMA_WGMMA_F16(112)
        : "l"(a), "l"(b), "r"(int32_t(accumulate)), "n"(kTransA), "n"(kTransB));
  }
}

#undef SIGMA_WGMMA_F16
#undef SIGMA_WGMMA_F4

}  // namespace sigma::cuda::sm90
