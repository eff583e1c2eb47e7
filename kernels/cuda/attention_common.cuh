// attention_common.cuh: what the DiffQKV flash-attention kernels share (attention_forward.cu,
// attention_backward.cu): the call's shape and supported head dims, cp.async, and the
// register-level pieces of the softmax (bf16 packing, exp2, storing accumulator rows).
//
// kDim is the head dim rounded up to 64, 96 or 128; the columns past the real d_qk / d_v are
// zero-filled on load and never stored, so one kernel serves d = 8..128 (multiples of 8) and
// d_qk != d_v runs at the larger of the two.
//
// Fragment layout (PTX ISA, "mma.m16n8k16" and "wgmma.m64nNk16"): per warp, lane l holds, of
// each 16x8 block of an fp32 accumulator, rows l/4 and l/4 + 8, columns 2 (l%4) and
// 2 (l%4) + 1; a bf16 A operand (16x16) is four registers (rows l/4 | l/4+8) x
// (cols 2(l%4) | 2(l%4)+8), the same positions as two adjacent accumulator blocks, so a
// softmax tile turns into an A operand in registers.
#pragma once

#include "kernels/attention_workspace.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/sm90.cuh"

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

namespace sigma::cuda::attention {

using bf16 = __nv_bfloat16;
using sm90::pack_bf16;
using sm90::smem_address;

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
inline int padded_dim(const Dims& s) { return int(attention_tile_dim(s.d_qk, s.d_v)); }

inline void check_supported(const char* op, const Dims& s, const Tensor& q) {
  if (q.dtype != DType::kBF16)
    fail("{}: the CUDA kernels take bf16 q, k, v (got {})", op, dtype_name(q.dtype));
  for (int d : {s.d_qk, s.d_v})
    if (d < 8 || d > 128 || d % 8 != 0)
      fail("{}: head dims must be multiples of 8 from 8 to 128 on CUDA (d_qk {}, d_v {})", op,
           s.d_qk, s.d_v);
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

// Accumulator blocks 2kk and 2kk+1 (16 x 16 of fp32) as one bf16 A operand.
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

// Writes a warp's 16 x kCols accumulator rows (kCols / 8 blocks of 4, times `scale`) as bf16,
// rows [row0, row0+16) of a matrix with `row_stride` elements per row, skipping rows >= rows
// and cols >= cols.
template <int kCols>
__device__ __forceinline__ void store_rows(bf16* dst, int64_t row_stride, int row0, int rows,
                                           int cols, const float (*acc)[4], float scale) {
  int lane = threadIdx.x % 32;
#pragma unroll
  for (int nt = 0; nt < kCols / 8; ++nt) {
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
