// attention_wgmma.cuh: Hopper warpgroup matrix instructions (wgmma.mma_async, sm_90a) for the
// flash-attention kernels, and the shared-memory tile layout they read.
//
// A [kRows][kDim] tile is stored as column panels, each its rows one after another: kDim / 64
// panels of 64 columns, 128B-swizzled (rows of 128 bytes whose 16-byte chunks are XORed with
// the row modulo 8), and at kDim 96 a last panel of 32 columns, 64B-swizzled (rows of 64 bytes,
// chunks XORed with the row / 2 modulo 4). These are the layouts a TMA copy with
// CU_TENSOR_MAP_SWIZZLE_128B / _64B writes (sm90.cuh); tiles are 1024-byte aligned and a panel
// starts a multiple of kRows x 128 bytes in (kRows >= 64), so the address bits the hardware
// XORs with are the row's. wgmma reads a panel through a swizzled
// descriptor, K-major (K along the rows, e.g. K in S = Q K^T) or MN-major (N along the rows,
// e.g. V in O = P V, with imm-trans-b = 1); one wgmma never spans two panels (K steps are 16
// wide, N chunks 64 or 32: wgmma_rs_wide).
//
// Why swizzled: a 16-byte chunk's bank group is its position in the 128-byte row, so eight
// threads can fetch one contiguous row (one L2 request of four sectors) and still write eight
// bank groups. The unswizzled core-matrix layout this replaced made a conflict-free phase read
// eight rows, 16 bytes each: one sector per L2 request (Nsight Compute on the d64 forward:
// 128.5 M requests for 128.5 M sectors, L2 at 90% of its peak; swizzled, 28%).
//
// Accumulators of m64nNk16 are, per warp of the warpgroup (16 rows each), the same registers
// as N/8 mma.sync m16n8 blocks, and a register A operand has the mma.sync A layout
// (attention_common.cuh), so softmax tiles become A operands in place.
#pragma once

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/sm90.cuh"

namespace sigma::cuda::attention {

// Shared memory written by cp.async (the generic proxy) and read next by wgmma (the async
// proxy): each writing thread fences (fence_async_shared) after its copies land, before the
// barrier.
using sm90::fence_async_shared;
using sm90::wgmma_commit;
using sm90::wgmma_fence;
using sm90::wgmma_wait;

template <int kRows, int kDim>
struct TileLayout {
  static_assert(kRows % 64 == 0 && (kDim == 64 || kDim == 96 || kDim == 128));
  static constexpr int kWidePanels = kDim / 64;
  static constexpr bool kNarrowPanel = kDim % 64 != 0;
  // The width of the panel holding column c, and the element where that panel starts.
  static __device__ __forceinline__ constexpr int width(int c) {
    return c < kWidePanels * 64 ? 64 : 32;
  }
  static __device__ __forceinline__ constexpr int panel(int c) { return c / 64 * 64 * kRows; }
};

// Element offset of 16-byte chunk j of row r in a panel kWidth columns wide.
template <int kWidth>
__device__ __forceinline__ int swizzled_chunk(int r, int j) {
  return r * kWidth + (j ^ (kWidth == 64 ? r % 8 : r / 2 % 4)) * 8;
}

// Rows [0, rows) and columns [0, cols) of a bf16 matrix (`row_stride` elements per row) into
// kPanels side-by-side panels kWidth wide of kRows rows, zero-filling the rest, with cp.async.
// Consecutive threads take consecutive 16-byte chunks of a row, so each 8-thread phase reads
// 128 contiguous bytes (one 64-column panel row, or two rows of a 32-column panel) and writes
// one swizzled 128-byte span: eight bank groups.
template <int kRows, int kWidth, int kPanels, int kThreads>
__device__ __forceinline__ void load_panels(bf16* dst, const bf16* src, int64_t row_stride,
                                            int rows, int cols) {
  constexpr int kPerPanelRow = kWidth / 8, kPerRow = kPerPanelRow * kPanels;
  constexpr int kChunks = kRows * kPerRow;
#pragma unroll
  for (int i = 0; i < (kChunks + kThreads - 1) / kThreads; ++i) {
    const int c = int(threadIdx.x) + i * kThreads;
    if (kChunks % kThreads != 0 && c >= kChunks) break;
    const int r = c / kPerRow, p = c / kPerPanelRow % kPanels, j = c % kPerPanelRow;
    const int col = p * kWidth + j * 8;
    const bool valid = r < rows && col < cols;
    cp_async_16(dst + p * kWidth * kRows + swizzled_chunk<kWidth>(r, j),
                valid ? src + r * row_stride + col : src, valid);
  }
}

// A [kRows][kDim] tile: its 64-wide panels, then the 32-wide one (compile-time: no branch).
template <int kRows, int kDim, int kThreads>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int64_t row_stride,
                                          int rows, int cols) {
  using Layout = TileLayout<kRows, kDim>;
  constexpr int kWide = Layout::kWidePanels * 64;
  load_panels<kRows, 64, Layout::kWidePanels, kThreads>(dst, src, row_stride, rows, cols);
  if constexpr (Layout::kNarrowPanel)
    load_panels<kRows, 32, 1, kThreads>(dst + kWide * kRows, src + kWide, row_stride, rows,
                                        cols - kWide);
}

// The descriptor of an operand at `start` in a panel `width` (64 or 32) columns wide.
__device__ __forceinline__ uint64_t panel_descriptor(const bf16* start, int width,
                                                     uint32_t leading) {
  return sm90::matrix_descriptor(smem_address(start), leading, width * 16,  // 8 rows
                                 width == 64 ? sm90::Swizzle::k128B : sm90::Swizzle::k64B);
}
// Operand at (row0, k0) of a tile whose rows are M or N and columns K: a k step of 16 moves
// the start 32 bytes along the panel's row (the hardware applies the swizzle to the address).
template <int kRows, int kDim>
__device__ __forceinline__ uint64_t k_major_descriptor(const bf16* tile, int row0, int k0) {
  using Layout = TileLayout<kRows, kDim>;
  return panel_descriptor(tile + Layout::panel(k0) + row0 * Layout::width(k0) + k0 % 64,
                          Layout::width(k0), 16);
}
// Operand at (k0, n0) of a tile whose rows are K and columns N, n0 a panel's first column.
template <int kRows, int kDim>
__device__ __forceinline__ uint64_t mn_major_descriptor(const bf16* tile, int k0, int n0) {
  using Layout = TileLayout<kRows, kDim>;
  return panel_descriptor(tile + Layout::panel(n0) + k0 * Layout::width(n0), Layout::width(n0),
                          kRows * 128);
}

// Operand at k0 of one MN-major panel kWidth columns wide: for a tile also kept as narrower
// panels than its TileLayout's (the backward's K at kDim 64, read 32 columns at a time).
template <int kRows, int kWidth>
__device__ __forceinline__ uint64_t mn_major_panel_descriptor(const bf16* panel, int k0) {
  return panel_descriptor(panel + k0 * kWidth, kWidth, kRows * 128);
}

// Keeps the compiler from touching registers a wgmma still reads or writes: used right
// after wgmma_wait<0> on its accumulators and register A operands.
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
// registers (this warp's 16 rows), ss from shared memory K-major, ss_mn from shared memory
// MN-major (M along the rows: A stored transposed); B from shared memory, K-major (kTransB 0)
// or MN-major (kTransB 1). With scale_d = 0 (the ss forms that take it), acc = A B: a
// product's first k step needs no zeroed accumulators.
template <int N, int kTransB>
struct Wgmma {
  static __device__ void rs(float (*acc)[4], const uint32_t (&a)[4], uint64_t desc_b);
  static __device__ void ss(float (*acc)[4], uint64_t desc_a, uint64_t desc_b);
  static __device__ void ss(float (*acc)[4], uint64_t desc_a, uint64_t desc_b, int scale_d);
  static __device__ void ss_mn(float (*acc)[4], uint64_t desc_a, uint64_t desc_b, int scale_d);
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

template <>
__device__ __forceinline__ void Wgmma<32, 1>::ss_mn(float (*acc)[4], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
      "%16, %17, p, 1, 1, 1, 1;\n}\n"
      : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]), "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]), "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]), "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

template <>
__device__ __forceinline__ void Wgmma<64, 1>::ss_mn(float (*acc)[4], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "%32, %33, p, 1, 1, 1, 1;\n}\n"
      : "+f"(acc[0][0]), "+f"(acc[0][1]), "+f"(acc[0][2]), "+f"(acc[0][3]), "+f"(acc[1][0]), "+f"(acc[1][1]), "+f"(acc[1][2]), "+f"(acc[1][3]), "+f"(acc[2][0]), "+f"(acc[2][1]), "+f"(acc[2][2]), "+f"(acc[2][3]), "+f"(acc[3][0]), "+f"(acc[3][1]), "+f"(acc[3][2]), "+f"(acc[3][3]), "+f"(acc[4][0]), "+f"(acc[4][1]), "+f"(acc[4][2]), "+f"(acc[4][3]), "+f"(acc[5][0]), "+f"(acc[5][1]), "+f"(acc[5][2]), "+f"(acc[5][3]), "+f"(acc[6][0]), "+f"(acc[6][1]), "+f"(acc[6][2]), "+f"(acc[6][3]), "+f"(acc[7][0]), "+f"(acc[7][1]), "+f"(acc[7][2]), "+f"(acc[7][3])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

}  // namespace sigma::cuda::attention
