// attention_wgmma.cuh: Hopper warpgroup matrix instructions (wgmma.mma_async, sm_90a) for the
// flash-attention kernels, and the shared-memory tile layout they read.
//
// wgmma reads its shared-memory operands through a 64-bit descriptor. At kDim 64 and 128 the
// tiles are 128B-swizzled (kSwizzled, below). At kDim 96 they have no swizzle: the layout is
// made of "core matrices", 8 rows of 16 bytes (8 bf16) stored contiguously (128 B), and
// tiles are [rows][kDim] cut into such blocks, the blocks of one 8-row group side by
// side (column block c at +128 c bytes), row groups kDim * 16 bytes apart. The same tile
// serves both operand majors (PTX ISA, "Matrix Descriptor"; CUTLASS's canonical layouts):
// - K-major (K along the 16-byte rows, e.g. K in S = Q K^T): K-adjacent core matrices are
//   128 B apart (leading byte offset), 8-row groups kDim * 16 B (stride byte offset);
// - MN-major (N along the rows, e.g. V in O = P V, transposed with imm-trans-b = 1):
//   N-adjacent core matrices 128 B apart (stride byte offset), K-adjacent kDim * 16 B
//   (leading byte offset).
// That order was checked on an H200: the swapped one gives wrong results or faults
// (dev/attention/NOTES.md). Accumulators of m64nNk16 are, per warp of the warpgroup (16 rows
// each), the same registers as N/8 mma.sync m16n8 blocks, and a register A operand has the
// mma.sync A layout (attention_common.cuh), so softmax tiles become A operands in place.
#pragma once

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/sm90.cuh"

namespace sigma::cuda::attention {

// Element offset of (r, c) in a blocked [rows][kDim] tile.
template <int kDim>
__device__ __forceinline__ int blocked(int r, int c) {
  return (r >> 3) * (kDim * 8) + (c >> 3) * 64 + (r & 7) * 8 + (c & 7);
}

// At kDim 64 and 128 tiles are instead 128B-swizzled (the layout a TMA copy with
// CU_TENSOR_MAP_SWIZZLE_128B writes, sm90.cuh): each 8-row group holds kDim / 64
// swizzle atoms of 1024 bytes side by side, an atom being 8 rows of 128 bytes (64 columns)
// whose 16-byte chunks are XORed with the row modulo 8; tiles are 1024-byte aligned, and wgmma
// reads them through swizzled descriptors. Their loads read whole rows: eight threads fetch
// 128 contiguous bytes (one L2 request of four sectors) and write eight different bank
// groups. The blocked layout puts a chunk's bank group at its row modulo 8, so a conflict-free
// phase there reads eight rows, 16 bytes each: one sector per L2 request (Nsight Compute on
// the d64 forward: 128.5 M requests for 128.5 M sectors, L2 at 90% of its peak; swizzled,
// 28%). kDim 96 stays blocked: its 32-column rest is not a whole atom.
template <int kDim>
constexpr bool kSwizzled = kDim != 96;

// Rows [0, rows) and columns [0, cols) of a bf16 matrix with `row_stride` elements per row
// into a [kRows][kDim] tile (swizzled or blocked), zero-filling the rest, with cp.async.
// Blocked: consecutive threads fill consecutive 16-byte slots of a core matrix (no bank
// conflicts); each 8-thread group reads one 16-byte chunk of 8 rows. Swizzled: each 8-thread
// group reads one row.
template <int kRows, int kDim, int kThreads>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int64_t row_stride,
                                          int rows, int cols) {
  constexpr int kChunksPerRow = kDim / 8, kChunks = kRows * kChunksPerRow;
#pragma unroll
  for (int i = 0; i < (kChunks + kThreads - 1) / kThreads; ++i) {
    int c = int(threadIdx.x) + i * kThreads;
    if (kChunks % kThreads != 0 && c >= kChunks) break;
    int r, col, slot;
    if constexpr (kSwizzled<kDim>) {
      r = c / kChunksPerRow;
      col = c % kChunksPerRow * 8;
      slot = r / 8 * (8 * kDim) + col / 64 * 512 + r % 8 * 64 + (c % 8 ^ r % 8) * 8;
    } else {
      r = c % 8 + c / (8 * kChunksPerRow) * 8;
      col = c / 8 % kChunksPerRow * 8;
      slot = blocked<kDim>(r, col);
    }
    bool valid = r < rows && col < cols;
    cp_async_16(dst + slot, valid ? src + r * row_stride + col : src, valid);
  }
}

__device__ __forceinline__ uint64_t matrix_descriptor(const bf16* start, uint32_t leading_bytes,
                                                      uint32_t stride_bytes) {
  return uint64_t((smem_address(start) & 0x3FFFF) >> 4) |
         uint64_t((leading_bytes & 0x3FFFF) >> 4) << 16 |
         uint64_t((stride_bytes & 0x3FFFF) >> 4) << 32;  // no swizzle, base offset 0
}

// Operand at (row0, k0) of a tile whose rows are M or N and columns K. Swizzled: 8-row groups
// kDim * 16 bytes apart; a k step of 16 moves the start 32 bytes inside its atom.
template <int kDim>
__device__ __forceinline__ uint64_t k_major_descriptor(const bf16* tile, int row0, int k0) {
  if constexpr (kSwizzled<kDim>)
    return sm90::matrix_descriptor(smem_address(tile + row0 * kDim + k0 / 64 * 512 + k0 % 64),
                                   16, kDim * 16);
  else
    return matrix_descriptor(tile + blocked<kDim>(row0, k0), 128, kDim * 16);
}
// Operand at (k0, n0) of a tile whose rows are K and columns N. Swizzled: N is one 64-wide
// atom (n0 a multiple of 64), 8-row groups of K kDim * 16 bytes apart.
template <int kDim>
__device__ __forceinline__ uint64_t mn_major_descriptor(const bf16* tile, int k0, int n0) {
  if constexpr (kSwizzled<kDim>)
    return sm90::matrix_descriptor(smem_address(tile + k0 * kDim + n0 / 64 * 512), 1024,
                                   kDim * 16);
  else
    return matrix_descriptor(tile + blocked<kDim>(k0, n0), kDim * 16, 128);
}

// Shared memory written by cp.async (the generic proxy) and read next by wgmma (the async
// proxy): each writing thread fences after its copies land, before the barrier.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait_all() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// Keeps the compiler from touching registers a wgmma still reads or writes: used right
// after wgmma_wait_all on its accumulators and register A operands.
__device__ __forceinline__ void register_fence(float& x) { asm volatile("" : "+f"(x)::"memory"); }
__device__ __forceinline__ void register_fence(uint32_t& x) { asm volatile("" : "+r"(x)::"memory"); }
template <typename T, int kRows, int kCols>
__device__ __forceinline__ void register_fence(T (&x)[kRows][kCols]) {
#pragma unroll
  for (int i = 0; i < kRows; ++i)
#pragma unroll
    for (int j = 0; j < kCols; ++j) register_fence(x[i][j]);
}

// acc (N/8 tiles of 4) += A B for one 64 x N x 16 step of the warpgroup: rs takes A from
// registers (this warp's 16 rows), ss from shared memory (K-major); B from shared memory,
// K-major (kTransB 0) or MN-major (kTransB 1). With scale_d = 0 (SS at N = 64 and 128 only),
// acc = A B: a product's first k step needs no zeroed accumulators.
template <int N, int kTransB>
struct Wgmma {
  static __device__ void rs(float (*acc)[4], const uint32_t (&a)[4], uint64_t desc_b);
  static __device__ void ss(float (*acc)[4], uint64_t desc_a, uint64_t desc_b);
  static __device__ void ss(float (*acc)[4], uint64_t desc_a, uint64_t desc_b, int scale_d);
};

// acc += A B over N columns in chunks of 64 (and one of 32 for N = 96).
template <int N, int kTransB, typename Desc>
__device__ __forceinline__ void wgmma_rs_wide(float (*acc)[4], const uint32_t (&a)[4],
                                              Desc desc_at) {
#pragma unroll
  for (int n0 = 0; n0 < N; n0 += 64) {
    if (N - n0 >= 64)
      Wgmma<64, kTransB>::rs(acc + n0 / 8, a, desc_at(n0));
    else
      Wgmma<32, kTransB>::rs(acc + n0 / 8, a, desc_at(n0));
  }
}

// Generated: one asm statement per shape (dev/attention/gen_wgmma.py).
template <>
__device__ __forceinline__ void Wgmma<32, 1>::rs(float (*acc)[4], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
      "{%16, %17, %18, %19}, %20, p, 1, 1, 1;\n}\n"
      : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]), "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]), "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]), "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}

template <>
__device__ __forceinline__ void Wgmma<64, 1>::rs(float (*acc)[4], const uint32_t (&a)[4], uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]), "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]), "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]), "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3]), "+f"(acc[4][0]), "+f"(acc[4][1]), "+f"(acc[4][2]), "+f"(acc[4][3]), "+f"(acc[5][0]), "+f"(acc[5][1]), "+f"(acc[5][2]), "+f"(acc[5][3]), "+f"(acc[6][0]), "+f"(acc[6][1]), "+f"(acc[6][2]), "+f"(acc[6][3]), "+f"(acc[7][0]), "+f"(acc[7][1]), "+f"(acc[7][2]), "+f"(acc[7][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}

template <>
__device__ __forceinline__ void Wgmma<64, 0>::ss(float (*acc)[4], uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]), "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]), "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]), "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3]), "+f"(acc[4][0]), "+f"(acc[4][1]), "+f"(acc[4][2]), "+f"(acc[4][3]), "+f"(acc[5][0]), "+f"(acc[5][1]), "+f"(acc[5][2]), "+f"(acc[5][3]), "+f"(acc[6][0]), "+f"(acc[6][1]), "+f"(acc[6][2]), "+f"(acc[6][3]), "+f"(acc[7][0]), "+f"(acc[7][1]), "+f"(acc[7][2]), "+f"(acc[7][3])
      : "l"(desc_a), "l"(desc_b), "r"(1));
}

template <>
__device__ __forceinline__ void Wgmma<128, 0>::ss(float (*acc)[4], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]), "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]), "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]), "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3]), "+f"(acc[4][0]), "+f"(acc[4][1]), "+f"(acc[4][2]), "+f"(acc[4][3]), "+f"(acc[5][0]), "+f"(acc[5][1]), "+f"(acc[5][2]), "+f"(acc[5][3]), "+f"(acc[6][0]), "+f"(acc[6][1]), "+f"(acc[6][2]), "+f"(acc[6][3]), "+f"(acc[7][0]), "+f"(acc[7][1]), "+f"(acc[7][2]), "+f"(acc[7][3]), "+f"(acc[8][0]), "+f"(acc[8][1]), "+f"(acc[8][2]), "+f"(acc[8][3]), "+f"(acc[9][0]), "+f"(acc[9][1]), "+f"(acc[9][2]), "+f"(acc[9][3]), "+f"(acc[10][0]), "+f"(acc[10][1]), "+f"(acc[10][2]), "+f"(acc[10][3]), "+f"(acc[11][0]), "+f"(acc[11][1]), "+f"(acc[11][2]), "+f"(acc[11][3]), "+f"(acc[12][0]), "+f"(acc[12][1]), "+f"(acc[12][2]), "+f"(acc[12][3]), "+f"(acc[13][0]), "+f"(acc[13][1]), "+f"(acc[13][2]), "+f"(acc[13][3]), "+f"(acc[14][0]), "+f"(acc[14][1]), "+f"(acc[14][2]), "+f"(acc[14][3]), "+f"(acc[15][0]), "+f"(acc[15][1]), "+f"(acc[15][2]), "+f"(acc[15][3])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

template <>
__device__ __forceinline__ void Wgmma<64, 0>::ss(float (*acc)[4], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]), "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]), "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]), "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3]), "+f"(acc[4][0]), "+f"(acc[4][1]), "+f"(acc[4][2]), "+f"(acc[4][3]), "+f"(acc[5][0]), "+f"(acc[5][1]), "+f"(acc[5][2]), "+f"(acc[5][3]), "+f"(acc[6][0]), "+f"(acc[6][1]), "+f"(acc[6][2]), "+f"(acc[6][3]), "+f"(acc[7][0]), "+f"(acc[7][1]), "+f"(acc[7][2]), "+f"(acc[7][3])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

}  // namespace sigma::cuda::attention
