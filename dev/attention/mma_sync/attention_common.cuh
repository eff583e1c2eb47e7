// (Version 1, mma.sync, kept for the record: ../NOTES.md; the mainline is wgmma.)
//
// attention_common.cuh: what the DiffQKV flash-attention kernels share (attention_forward.cu,
// attention_backward.cu): the call's shape, tile loads through cp.async, and the bf16 tensor
// core instruction mma.sync m16n8k16 with its ldmatrix operand loads.
//
// Tiles live in shared memory as [rows][kDim + 8] bf16: the 16 padding bytes per row shift
// consecutive rows by one 16-byte bank group, so the eight row addresses of an ldmatrix
// 8x8 matrix hit eight different bank groups (no conflicts) for kDim = 64, 96 and 128.
// kDim is the head dim rounded up to 64, 96 or 128; the columns past the real d_qk / d_v
// are zero-filled on load and never stored, so one kernel serves d = 8..128 (multiples of 8)
// and d_qk != d_v runs at the larger of the two.
//
// Fragment layouts (PTX ISA, "mma.m16n8k16"): lane l holds, of a 16x8 fp32 accumulator,
// rows l/4 and l/4 + 8, columns 2 (l%4) and 2 (l%4) + 1; an A operand (16x16 bf16) is four
// registers (rows l/4 | l/4+8) x (cols 2(l%4) | 2(l%4)+8), the same positions as two
// adjacent accumulator tiles, so a softmax tile turns into an A operand in registers.
#pragma once

#include "kernels/cuda/runtime.h"

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

namespace sigma::cuda::attention {

using bf16 = __nv_bfloat16;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// One call's sizes. The softmax runs in base 2: exp(x * scale) = exp2(x * scale_log2).
struct Dims {
  int batch, seq_len, n_q, n_k, n_v, d_qk, d_v;
  float scale;       // 1 / sqrt(d_qk)
  float scale_log2;  // scale * log2(e)
};

inline Dims dims_of(const Tensor& q, const Tensor& k, const Tensor& v) {
  Dims s{int(q.size(0)), int(q.size(1)), int(q.size(2)), int(k.size(2)), int(v.size(2)),
         int(q.size(3)), int(v.size(3)), 0.0f, 0.0f};
  s.scale = float(1.0 / std::sqrt(double(s.d_qk)));
  s.scale_log2 = s.scale * kLog2e;
  return s;
}

// The shared-memory tile width for the head dims: 64, 96 or 128.
inline int padded_dim(const Dims& s) {
  int d = s.d_qk > s.d_v ? s.d_qk : s.d_v;
  return d <= 64 ? 64 : d <= 96 ? 96 : 128;
}

inline void check_supported(const char* op, const Dims& s, const Tensor& q) {
  if (q.dtype != DType::kBF16)
    fail("{}: the CUDA kernels take bf16 q, k, v (got {})", op, dtype_name(q.dtype));
  for (int d : {s.d_qk, s.d_v})
    if (d < 8 || d > 128 || d % 8 != 0)
      fail("{}: head dims must be multiples of 8 from 8 to 128 on CUDA (d_qk {}, d_v {})", op,
           s.d_qk, s.d_v);
}

template <int kDim>
constexpr int kStride = kDim + 8;  // shared-memory row length in elements

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; zero-filled (nothing read) when !valid.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(dst)),
               "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_address(dst)),
               "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// Rows [0, rows) and columns [0, cols) of a bf16 matrix with `row_stride` elements per row
// into a [kRows][kStride<kDim>] tile; the rest of the tile is zero-filled.
template <int kRows, int kDim, int kThreads>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int64_t row_stride,
                                          int rows, int cols) {
  constexpr int kChunksPerRow = kDim / 8, kChunks = kRows * kChunksPerRow;
#pragma unroll
  for (int i = 0; i < (kChunks + kThreads - 1) / kThreads; ++i) {
    int c = int(threadIdx.x) + i * kThreads;
    if (kChunks % kThreads != 0 && c >= kChunks) break;
    int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    bool valid = r < rows && col < cols;
    cp_async_16(dst + r * kStride<kDim> + col, valid ? src + r * row_stride + col : src, valid);
  }
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

// c += a b, a 16x16 and b 16x8 in bf16, c 16x8 in fp32.
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The element address each lane hands ldmatrix.x4 so that the four 8x8 matrices form:
// - an A operand of rows [row0, row0+16) x cols [col0, col0+16) of a row-major tile;
__device__ __forceinline__ const bf16* a_operand(const bf16* tile, int stride, int row0, int col0) {
  int lane = threadIdx.x % 32;
  return tile + (row0 + lane % 8 + (lane / 8) % 2 * 8) * stride + col0 + lane / 16 * 8;
}
// - two B operands (n-tiles n0 and n0 + 8, k = [k0, k0+16)) where B[k][n] = tile[n][k]
//   (K for Q K^T): plain ldmatrix, registers {0,1} and {2,3};
__device__ __forceinline__ const bf16* b_operand_nk(const bf16* tile, int stride, int n0, int k0) {
  int lane = threadIdx.x % 32;
  return tile + (n0 + lane % 8 + lane / 16 * 8) * stride + k0 + (lane / 8) % 2 * 8;
}
// - two B operands where B[k][n] = tile[k][n] (V for P V): ldmatrix.trans.
__device__ __forceinline__ const bf16* b_operand_kn(const bf16* tile, int stride, int k0, int n0) {
  int lane = threadIdx.x % 32;
  return tile + (k0 + lane % 8 + (lane / 8) % 2 * 8) * stride + n0 + lane / 16 * 8;
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// Accumulator tiles 2kk and 2kk+1 (16 x 16 of fp32) as one bf16 A operand.
__device__ __forceinline__ void to_a_operand(uint32_t (&a)[4], const float (&lo)[4],
                                             const float (&hi)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

__device__ __forceinline__ float exp2_approx(float x) {  // exp2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Writes a warp's 16 x kDim accumulator rows (times `scale`) as bf16, rows [row0, row0+16)
// of a matrix with `row_stride` elements per row, skipping rows >= rows and cols >= cols.
template <int kDim>
__device__ __forceinline__ void store_rows(bf16* dst, int64_t row_stride, int row0, int rows,
                                           int cols, const float (&acc)[kDim / 8][4],
                                           float scale) {
  int lane = threadIdx.x % 32;
#pragma unroll
  for (int nt = 0; nt < kDim / 8; ++nt) {
    int col = nt * 8 + lane % 4 * 2;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      int row = row0 + lane / 4 + half * 8;
      if (row < rows && col < cols)
        *reinterpret_cast<__nv_bfloat162*>(dst + row * row_stride + col) =
            __floats2bfloat162_rn(acc[nt][2 * half] * scale, acc[nt][2 * half + 1] * scale);
    }
  }
}

}  // namespace sigma::cuda::attention
