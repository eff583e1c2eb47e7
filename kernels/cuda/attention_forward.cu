// Causal DiffQKV attention forward on CUDA (Sigma paper section 2): FlashAttention-2's
// online softmax (Dao 2023, algorithm 1) on Hopper's warpgroup tensor-core instructions
// (wgmma, sm_90a; attention_wgmma.cuh).
//
// One block = 128 query rows of one (batch, query head), two warpgroups of 64 rows; each warp
// owns 16 rows end to end (the running max and sum of its rows), so the softmax needs no
// shared memory: S = Q K^T comes from Q and K tiles in shared memory, and P goes from the S
// accumulators straight into the register A operand of O += P V. 128 rows share each K/V
// tile, so each byte brought from L2 feeds 128 FLOP. K/V tiles are double-buffered with
// cp.async. Query head h reads K head h*n_k/n_q and V head h*n_v/n_q in place: K and V are
// never repeated. Statistics (max, sum, lse) are fp32; P is rounded to bf16 for P V, as in
// every flash attention. Q stays in shared memory rather than in registers: a register A
// operand that lives across the key loop was reallocated under a later wgmma by ptxas 13.0
// (dev/attention/NOTES.md). Left out: dropout, non-causal masks, TMA and warp specialisation.
#include "kernels/cuda/attention_wgmma.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace sigma::cuda {
namespace attention {
namespace {

constexpr int kThreads = 256;
constexpr int kBlockM = 128;  // query rows per block, 64 per warpgroup

template <int kDim, int kBlockN>
constexpr int forward_smem_bytes() {
  return (kBlockM + 4 * kBlockN) * kDim * int(sizeof(bf16));  // Q, 2 x (K, V)
}

template <int kDim, int kBlockN>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(bf16* out, float* lse, const bf16* q, const bf16* k,
                             const bf16* v, Dims s) {
  extern __shared__ __align__(1024) unsigned char smem[];
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  bf16* k_s = q_s + kBlockM * kDim;       // [2][kBlockN][kDim]
  bf16* v_s = k_s + 2 * kBlockN * kDim;  // [2][kBlockN][kDim]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wg = warp / 4;
  const int b = blockIdx.x / s.n_q, h = blockIdx.x % s.n_q;
  const int hk = h * s.n_k / s.n_q, hv = h * s.n_v / s.n_q;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kBlockM;  // the longest rows start first
  const int64_t q_stride = int64_t(s.n_q) * s.d_qk, k_stride = int64_t(s.n_k) * s.d_qk;
  const int64_t v_stride = int64_t(s.n_v) * s.d_v, o_stride = int64_t(s.n_q) * s.d_v;
  const int64_t row0 = int64_t(b) * s.seq_len;  // (b, t = 0)
  const bf16* k_head = k + row0 * k_stride + hk * s.d_qk;
  const bf16* v_head = v + row0 * v_stride + hv * s.d_v;
  // Causal: the block's last row reads keys up to q_end - 1.
  const int q_end = min(q0 + kBlockM, s.seq_len);
  const int n_blocks = (q_end + kBlockN - 1) / kBlockN;

  auto load_kv = [&](int j, int stage) {
    int k0 = j * kBlockN, rows = min(kBlockN, s.seq_len - k0);
    load_tile<kBlockN, kDim, kThreads>(k_s + stage * kBlockN * kDim,
                                       k_head + k0 * k_stride, k_stride, rows, s.d_qk);
    load_tile<kBlockN, kDim, kThreads>(v_s + stage * kBlockN * kDim,
                                       v_head + k0 * v_stride, v_stride, rows, s.d_v);
  };
  load_tile<kBlockM, kDim, kThreads>(q_s, q + (row0 + q0) * q_stride + h * s.d_qk,
                                     q_stride, q_end - q0, s.d_qk);
  load_kv(0, 0);
  cp_async_commit();
  cp_async_wait_all();
  fence_async_shared();
  __syncthreads();

  float o[kDim / 8][4] = {};
  // This lane's two rows (lane/4 and lane/4 + 8 of the warp's 16): running max (base-2,
  // scaled) and this lane's share of the running sum (the quad adds its shares at the end).
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  const int row_q[2] = {q0 + warp * 16 + lane / 4, q0 + warp * 16 + lane / 4 + 8};

  for (int j = 0; j < n_blocks; ++j) {
    if (j + 1 < n_blocks) {
      load_kv(j + 1, (j + 1) % 2);
      cp_async_commit();
    }
    const bf16* k_t = k_s + (j % 2) * kBlockN * kDim;
    const bf16* v_t = v_s + (j % 2) * kBlockN * kDim;

    float sc[kBlockN / 8][4] = {};  // S = Q K^T for the warpgroup's 64 rows x kBlockN keys
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks)
#pragma unroll
      for (int n0 = 0; n0 < kBlockN; n0 += 64)
        Wgmma<64, 0>::ss(sc + n0 / 8, k_major_descriptor<kBlockM, kDim>(q_s, wg * 64, ks * 16),
                         k_major_descriptor<kBlockN, kDim>(k_t, n0, ks * 16));
    wgmma_commit();
    wgmma_wait<0>();
    register_fence(sc);

    const int k0 = j * kBlockN;
    if (k0 + kBlockN - 1 > q0) {  // tiles on the diagonal (they also hold the keys past T)
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (k0 + nt * 8 + lane % 4 * 2 + (e & 1) > row_q[e >> 1]) sc[nt][e] = -INFINITY;
    }

    // Online softmax. Key 0 is in every row's first tile, so row_max is finite from j = 0.
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt)
        mx = fmaxf(mx, fmaxf(sc[nt][2 * half], sc[nt][2 * half + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      float new_max = fmaxf(row_max[half], mx * s.scale_log2);
      float alpha = exp2_approx(row_max[half] - new_max);
      row_max[half] = new_max;
      float sum = row_sum[half] * alpha;
#pragma unroll
      for (int nt = 0; nt < kDim / 8; ++nt) {
        o[nt][2 * half] *= alpha;
        o[nt][2 * half + 1] *= alpha;
      }
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
        for (int e = 2 * half; e < 2 * half + 2; ++e) {
          float p = exp2_approx(fmaf(sc[nt][e], s.scale_log2, -new_max));
          sc[nt][e] = p;
          sum += p;
        }
      row_sum[half] = sum;
    }

    // O += P V, with P from the accumulators as bf16 register A operands.
    uint32_t pa[kBlockN / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) to_a_operand(pa[kk], sc[2 * kk], sc[2 * kk + 1]);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk)
      wgmma_rs_wide<kDim, 1>(o, pa[kk], [&](int n0) {
        return mn_major_descriptor<kBlockN, kDim>(v_t, kk * 16, n0);
      });
    wgmma_commit();
    wgmma_wait<0>();
    register_fence(o);
    register_fence(pa);
    cp_async_wait_all();  // tile j + 1 has landed...
    fence_async_shared();
    __syncthreads();      // ...and no warp still reads tile j's buffers
  }

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float sum = row_sum[half];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    float inv = 1.0f / sum;
#pragma unroll
    for (int nt = 0; nt < kDim / 8; ++nt) {
      o[nt][2 * half] *= inv;
      o[nt][2 * half + 1] *= inv;
    }
    if (lane % 4 == 0 && row_q[half] < s.seq_len)
      lse[(int64_t(b) * s.n_q + h) * s.seq_len + row_q[half]] =
          (row_max[half] + __log2f(sum)) * kLn2;
  }
  store_rows<kDim>(out + row0 * o_stride + h * s.d_v, o_stride, q0 + warp * 16, s.seq_len,
                   s.d_v, o, 1.0f);
}

template <int kDim, int kBlockN>
void launch_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, const Dims& s) {
  constexpr int smem = forward_smem_bytes<kDim, kBlockN>();
  static const bool configured = [] {
    SIGMA_CUDA_CHECK(cudaFuncSetAttribute(attention_forward_kernel<kDim, kBlockN>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    return true;
  }();
  (void)configured;
  dim3 grid(unsigned(s.batch * s.n_q), unsigned(ceil_div(s.seq_len, kBlockM)));
  attention_forward_kernel<kDim, kBlockN><<<grid, kThreads, smem, stream()>>>(
      static_cast<bf16*>(out.data), lse.f32(), static_cast<const bf16*>(q.data),
      static_cast<const bf16*>(k.data), static_cast<const bf16*>(v.data), s);
  SIGMA_CUDA_LAUNCHED("attention_forward");
}

}  // namespace
}  // namespace attention

void attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v) {
  using namespace attention;
  const Dims s = dims_of(q, k, v);
  check_supported("attention_forward", s, q);
  // Key tiles of 64 at d64 (0.967 ms against 1.316 with 128 for B4 T4096 32/4/16 on an H200),
  // of 128 at d96 and d128 (dev/attention/NOTES.md, version 1's tile sweep).
  switch (padded_dim(s)) {
    case 64: return launch_forward<64, 64>(out, lse, q, k, v, s);
    case 96: return launch_forward<96, 128>(out, lse, q, k, v, s);
    default: return launch_forward<128, 128>(out, lse, q, k, v, s);
  }
}

}  // namespace sigma::cuda
