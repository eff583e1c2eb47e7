// Causal DiffQKV attention forward on CUDA (Sigma paper section 2): FlashAttention-2's
// online softmax (Dao 2023, algorithm 1) on Hopper's warpgroup tensor-core instructions
// (wgmma, sm_90a; attention_wgmma.cuh), with FlashAttention-3's intra-warpgroup pipelining
// of the two products and the softmax (Shah et al. 2024, section 3.2).
//
// One block = 128 query rows of one (batch, query head), two warpgroups of 64 rows; each warp
// owns 16 rows end to end (the running max and sum of its rows), so the softmax needs no
// shared memory: S = Q K^T comes from Q and K tiles in shared memory, one m64n128k16 per
// 16-wide k step over the whole key tile, and P goes from the S accumulators straight into
// the register A operand of O += P V. 128 rows share each K/V tile, so each byte brought from
// L2 feeds 128 FLOP. Key tile j: S_j and O += P_{j-1} V_{j-1} are issued together, and the
// softmax of S_j runs while the tensor cores do P_{j-1} V_{j-1}. K and V tiles are each
// double-buffered with cp.async, K one tile ahead of V. Query head h reads K head h*n_k/n_q
// and V head h*n_v/n_q in place: K and V are never repeated. Statistics (max, sum, lse) are
// fp32; P is rounded to bf16 for P V, as in every flash attention. Q stays in shared memory
// rather than in registers: a register A operand that lives across the key loop was
// reallocated under a later wgmma by ptxas 13.0 (dev/attention/NOTES.md). Left out: dropout,
// non-causal masks, TMA, warp specialisation and FA3's ping-pong between warpgroups (the one
// barrier per key tile keeps the two warpgroups in step).
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
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  bf16* k_s = q_s + kBlockM * kDim;      // [2][kBlockN][kDim]: K_j in k_s[j % 2]
  bf16* v_s = k_s + 2 * kBlockN * kDim;  // [2][kBlockN][kDim]: V_j in v_s[j % 2]

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

  auto k_tile = [&](int j) { return k_s + (j % 2) * kBlockN * kDim; };
  auto v_tile = [&](int j) { return v_s + (j % 2) * kBlockN * kDim; };
  // K_{j+1} (if any) and V_j, as one cp.async group. The strides pass through an empty asm
  // so that each thread's chunk offsets (row * stride) are recomputed per tile: hoisted out of
  // the key loop, they stay live beside S, P and O and spilled at kDim 128.
  auto load_next = [&](int j) {
    int64_t ks = k_stride, vs = v_stride;
    asm volatile("" : "+l"(ks), "+l"(vs));
    if (j + 1 < n_blocks) {
      int k0 = (j + 1) * kBlockN;
      load_tile_blocked<kBlockN, kDim, kThreads>(k_tile(j + 1), k_head + k0 * ks,
                                                 ks, min(kBlockN, s.seq_len - k0), s.d_qk);
    }
    int k0 = j * kBlockN;
    load_tile_blocked<kBlockN, kDim, kThreads>(v_tile(j), v_head + k0 * vs, vs,
                                               min(kBlockN, s.seq_len - k0), s.d_v);
    cp_async_commit();
  };
  // Every cp.async group issued so far has landed, and every warp is past the wgmma waits
  // before this point (so no wgmma still reads the buffers the next loads overwrite).
  auto tiles_ready = [] {
    cp_async_wait_all();
    fence_proxy_async();
    __syncthreads();
  };

  float sc[kBlockN / 8][4];  // S_j = Q K_j^T for the warpgroup's 64 rows x kBlockN keys, then P_j
  // One m64nNk16 per 16-wide k step over all kBlockN keys, so Q is read once per step; the
  // first step overwrites (scale-d 0) what P_{j-1} left in sc, so sc needs no zeroing.
  auto issue_s = [&](int j) {
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks)
      Wgmma<kBlockN, 0>::ss(sc, k_major_descriptor<kDim>(q_s, wg * 64, ks * 16),
                            k_major_descriptor<kDim>(k_tile(j), 0, ks * 16), ks > 0);
    wgmma_commit();
  };

  float o[kDim / 8][4] = {};
  uint32_t pa[kBlockN / 16][4];  // P_j in bf16 as register A operands of O += P_j V_j
  auto issue_pv = [&](int j) {
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk)
      wgmma_rs_wide<kDim, 1>(o, pa[kk], [&](int n0) {
        return mn_major_descriptor<kDim>(v_tile(j), kk * 16, n0);
      });
    wgmma_commit();
  };

  // This lane's two rows (lane/4 and lane/4 + 8 of the warp's 16): running max (base-2,
  // scaled) and this lane's share of the running sum (the quad adds its shares at the end).
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  const int row_q[2] = {q0 + warp * 16 + lane / 4, q0 + warp * 16 + lane / 4 + 8};
  // Online softmax of S_j in place (sc becomes P_j); alpha[half] is the factor by which O,
  // still under the old max, must be scaled before P_j V_j is added to it.
  float alpha[2];
  auto softmax = [&](int j) {
    const int k0 = j * kBlockN;
    if (k0 + kBlockN - 1 > q0) {  // tiles on the diagonal (they also hold the keys past T)
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (k0 + nt * 8 + lane % 4 * 2 + (e & 1) > row_q[e >> 1]) sc[nt][e] = -INFINITY;
    }
    // Key 0 is in every row's first tile, so row_max is finite from j = 0.
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt)
        mx = fmaxf(mx, fmaxf(sc[nt][2 * half], sc[nt][2 * half + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      float new_max = fmaxf(row_max[half], mx * s.scale_log2);
      alpha[half] = exp2_approx(row_max[half] - new_max);
      row_max[half] = new_max;
      float sum = row_sum[half] * alpha[half];
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
  };
  auto rescale_o = [&] {
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int nt = 0; nt < kDim / 8; ++nt) {
        o[nt][2 * half] *= alpha[half];
        o[nt][2 * half + 1] *= alpha[half];
      }
  };
  auto pack_p = [&] {
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) to_a_operand(pa[kk], sc[2 * kk], sc[2 * kk + 1]);
  };

  // Pipeline (FA3 section 3.2). Iteration j (1 <= j < n_blocks), in order: wait for
  // P_{j-2} V_{j-2}; pack P_{j-1}; barrier; issue S_j, rescale O by alpha_{j-1}, issue
  // O += P_{j-1} V_{j-1}; start the loads of K_{j+1} and V_j; wait for S_j only (wgmma groups
  // complete in order); softmax of S_j while P_{j-1} V_{j-1} runs. The wait for P_{j-2} V_{j-2}
  // opens an iteration rather than closing the previous one: placed after the softmax, in the
  // same basic block, ptxas 13.0 scheduled it above the softmax, and the overlap was lost.
  // Buffers: S_j reads k_s[j % 2] and P_{j-1} V_{j-1} reads v_s[(j-1) % 2]. The loads of
  // iteration j go to k_s[(j+1) % 2], which held K_{j-1} (S_{j-1} was waited for in iteration
  // j - 1), and to v_s[j % 2], which held V_{j-2} (P_{j-2} V_{j-2} was waited for before the
  // barrier of iteration j); they land by the barrier of iteration j + 1 (or the epilogue's),
  // the only barrier per key tile.
  load_tile_blocked<kBlockM, kDim, kThreads>(q_s, q + (row0 + q0) * q_stride + h * s.d_qk,
                                             q_stride, q_end - q0, s.d_qk);
  load_tile_blocked<kBlockN, kDim, kThreads>(k_tile(0), k_head, k_stride,
                                             min(kBlockN, s.seq_len), s.d_qk);
  cp_async_commit();
  tiles_ready();
  wgmma_fence();
  issue_s(0);
  load_next(0);
  wgmma_wait<0>();
  register_fence(sc);
  softmax(0);

  for (int j = 1; j < n_blocks; ++j) {
    wgmma_wait<0>();  // P_{j-2} V_{j-2} (none at j = 1)
    register_fence(o);
    register_fence(pa);
    pack_p();       // P_{j-1}
    tiles_ready();  // K_j and V_{j-1}
    wgmma_fence();
    issue_s(j);
    rescale_o();  // by alpha_{j-1}
    wgmma_fence();
    issue_pv(j - 1);
    load_next(j);
    wgmma_wait<1>();  // S_j; P_{j-1} V_{j-1} may still run
    register_fence(sc);
    softmax(j);
  }
  // The last key tile: O += P_{n-1} V_{n-1}.
  wgmma_wait<0>();
  register_fence(o);
  register_fence(pa);
  pack_p();
  tiles_ready();  // V_{n-1}
  rescale_o();
  wgmma_fence();
  issue_pv(n_blocks - 1);
  wgmma_wait<0>();
  register_fence(o);
  register_fence(pa);

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
  switch (padded_dim(s)) {
    case 64: return launch_forward<64, 128>(out, lse, q, k, v, s);
    case 96: return launch_forward<96, 128>(out, lse, q, k, v, s);
    default: return launch_forward<128, 128>(out, lse, q, k, v, s);
  }
}

}  // namespace sigma::cuda
