// Causal DiffQKV attention backward on CUDA (Sigma paper section 2), FlashAttention-2's
// recomputation (Dao 2023, algorithm 2) on Hopper's warpgroup tensor-core instructions
// (wgmma, sm_90a; attention_wgmma.cuh):
//   P = exp(scale S - lse),  dP = dO V^T,  dS = P * (dP - delta),  delta = rowsum(dO * O),
//   dV = P^T dO,  dK = scale dS^T Q,  dQ = scale dS K.
//
// Deterministic without atomics, in two kernels:
// - dq: one block per 128 query rows of a (batch, query head), two warpgroups of 64 rows,
//   looping over key tiles of 128 (64 at kDim 64) as the forward does; it also writes delta
//   for the second kernel. It recomputes S and dP, the price of not adding dQ from every key
//   tile with float atomics (whose order, and so the bits, would change from run to run).
//   S and dP are each one m64nNk16 per 16-wide k step over the whole key tile, so Q and dO
//   are read from shared memory once per step and key tile.
// - dkdv: one block per 128 keys of a (batch, head group), where a group is the smallest
//   run of query heads that owns its K and V heads (lcm of n_q/n_k and n_q/n_v heads, as the
//   CPU reference splits its work). The block loops over the group's query heads in order
//   and over their query tiles, keeping dK and dV in registers; since each K head and each
//   V head is read by a contiguous run of query heads inside the group, a head's sum is
//   complete when the loop moves past its run, and it is written then, once, in a fixed
//   order. Each warpgroup owns 64 keys and computes S^T and dP^T directly (keys as rows), so
//   P^T and dS^T feed the dV and dK products as register A operands.
// Every A operand that lives across a loop is read from shared memory (see
// attention_forward.cu). The first k step of S, dP, S^T and dP^T passes scale-d 0, so their
// accumulators are never zeroed and ptxas inserts no wait of its own (dev/attention/NOTES.md,
// version 5). Left out: dropout, non-causal masks, TMA, warp specialisation, and FA3's
// overlap of the elementwise work with the next products (the forward has it).
#include "kernels/cuda/attention_wgmma.cuh"
#include "kernels/cuda/cuda_ops.h"

#include <numeric>

namespace sigma::cuda {
namespace attention {
namespace {

constexpr int kThreads = 256;
constexpr int kDqBlockM = 128;  // dq: query rows per block (64 per warpgroup)
// dq: keys per K/V tile (the N of S = Q K^T). 128 reads Q and dO from shared memory once per
// 128 keys; at kDim 64 the 64-key tile keeps the kernel at 128 registers, two blocks per SM.
template <int kDim>
constexpr int kDqBlockN = kDim == 64 ? 64 : 128;
constexpr int kKvBlockN = 128;  // dkdv: keys per block (64 per warpgroup)
constexpr int kKvBlockM = 64;   // dkdv: queries per Q/dO tile (the N of S^T = K Q^T)

template <int kDim>
constexpr int dq_smem_bytes() {  // Q, dO, 2 x (K, V), delta
  return (2 * kDqBlockM + 4 * kDqBlockN<kDim>) * kDim * int(sizeof(bf16)) +
         kDqBlockM * int(sizeof(float));
}
template <int kDim>
constexpr int dkdv_smem_bytes() {  // K, V, 2 x (Q, dO, lse, delta)
  return (2 * kKvBlockN + 4 * kKvBlockM) * kDim * int(sizeof(bf16)) +
         4 * kKvBlockM * int(sizeof(float));
}

template <int kDim, int kBlockN>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dq_kernel(bf16* d_q, float* delta, const bf16* d_out, const bf16* q,
                                 const bf16* k, const bf16* v, const bf16* out,
                                 const float* lse, Dims s) {
  constexpr int kBlockM = kDqBlockM;
  extern __shared__ __align__(1024) unsigned char smem[];
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  bf16* do_s = q_s + kBlockM * kDim;
  bf16* k_s = do_s + kBlockM * kDim;     // [2][kBlockN][kDim]
  bf16* v_s = k_s + 2 * kBlockN * kDim;  // [2][kBlockN][kDim]
  float* delta_s = reinterpret_cast<float*>(v_s + 2 * kBlockN * kDim);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wg = warp / 4;
  const int b = blockIdx.x / s.n_q, h = blockIdx.x % s.n_q;
  const int hk = h * s.n_k / s.n_q, hv = h * s.n_v / s.n_q;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kBlockM;
  const int64_t q_stride = int64_t(s.n_q) * s.d_qk, k_stride = int64_t(s.n_k) * s.d_qk;
  const int64_t v_stride = int64_t(s.n_v) * s.d_v, o_stride = int64_t(s.n_q) * s.d_v;
  const int64_t row0 = int64_t(b) * s.seq_len;
  const int64_t stat0 = (int64_t(b) * s.n_q + h) * s.seq_len;  // lse / delta of (b, h, t = 0)
  const bf16* k_head = k + row0 * k_stride + hk * s.d_qk;
  const bf16* v_head = v + row0 * v_stride + hv * s.d_v;
  const int q_end = min(q0 + kBlockM, s.seq_len);
  const int n_blocks = (q_end + kBlockN - 1) / kBlockN;

  // The strides pass through an empty asm so that each thread's chunk offsets (row * stride)
  // are recomputed per tile: hoisted out of the key loop, they stay live beside S, dP and dQ
  // and spilled at kDim 128 (as in the forward).
  auto load_kv = [&](int j, int stage) {
    int64_t ks = k_stride, vs = v_stride;
    asm volatile("" : "+l"(ks), "+l"(vs));
    int k0 = j * kBlockN, rows = min(kBlockN, s.seq_len - k0);
    load_tile<kBlockN, kDim, kThreads>(k_s + stage * kBlockN * kDim, k_head + k0 * ks,
                                       ks, rows, s.d_qk);
    load_tile<kBlockN, kDim, kThreads>(v_s + stage * kBlockN * kDim, v_head + k0 * vs,
                                       vs, rows, s.d_v);
  };
  load_tile<kBlockM, kDim, kThreads>(q_s, q + (row0 + q0) * q_stride + h * s.d_qk,
                                     q_stride, q_end - q0, s.d_qk);
  load_tile<kBlockM, kDim, kThreads>(do_s, d_out + (row0 + q0) * o_stride + h * s.d_v,
                                     o_stride, q_end - q0, s.d_v);
  load_kv(0, 0);
  cp_async_commit();
  {  // delta = rowsum(dO * O) while the tiles land: two lanes per row, 8 columns a load.
    const int r = warp * 16 + lane / 2, t = q0 + r;
    float acc = 0.0f;
    if (t < s.seq_len) {
      const bf16* o_row = out + (row0 + t) * o_stride + h * s.d_v;
      const bf16* do_row = d_out + (row0 + t) * o_stride + h * s.d_v;
      for (int c = lane % 2 * 8; c < s.d_v; c += 16) {
        uint4 ov = *reinterpret_cast<const uint4*>(o_row + c);
        uint4 gv = *reinterpret_cast<const uint4*>(do_row + c);
        const __nv_bfloat162* o2 = reinterpret_cast<const __nv_bfloat162*>(&ov);
        const __nv_bfloat162* g2 = reinterpret_cast<const __nv_bfloat162*>(&gv);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          float2 of = __bfloat1622float2(o2[i]), gf = __bfloat1622float2(g2[i]);
          acc += of.x * gf.x + of.y * gf.y;
        }
      }
    }
    acc += __shfl_xor_sync(0xffffffffu, acc, 1);
    if (lane % 2 == 0) {
      delta_s[r] = acc;
      if (t < s.seq_len) delta[stat0 + t] = acc;
    }
  }
  cp_async_wait_all();
  fence_async_shared();
  __syncthreads();

  const int row_q[2] = {q0 + warp * 16 + lane / 4, q0 + warp * 16 + lane / 4 + 8};
  float lse2[2], row_delta[2];  // rows past T: any finite value (their dO is 0)
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    lse2[half] = row_q[half] < s.seq_len ? lse[stat0 + row_q[half]] * kLog2e : 0.0f;
    row_delta[half] = delta_s[warp * 16 + lane / 4 + half * 8];
  }

  float dq[kDim / 8][4] = {};
  for (int j = 0; j < n_blocks; ++j) {
    if (j + 1 < n_blocks) {
      load_kv(j + 1, (j + 1) % 2);
      cp_async_commit();
    }
    const bf16* k_t = k_s + (j % 2) * kBlockN * kDim;
    const bf16* v_t = v_s + (j % 2) * kBlockN * kDim;

    // S = Q K^T and dP = dO V^T, each one m64nNk16 per 16-wide k step over the whole key tile
    // (Q and dO read from shared memory once per step); the first step overwrites (scale-d 0),
    // so the accumulators need no zeroing.
    float sc[kBlockN / 8][4], dp[kBlockN / 8][4];
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks) {
      Wgmma<kBlockN, 0>::ss(sc, k_major_descriptor<kBlockM, kDim>(q_s, wg * 64, ks * 16),
                            k_major_descriptor<kBlockN, kDim>(k_t, 0, ks * 16), ks > 0);
      Wgmma<kBlockN, 0>::ss(dp, k_major_descriptor<kBlockM, kDim>(do_s, wg * 64, ks * 16),
                            k_major_descriptor<kBlockN, kDim>(v_t, 0, ks * 16), ks > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    register_fence(sc);
    register_fence(dp);

    const int k0 = j * kBlockN;
    const bool diagonal = k0 + kBlockN - 1 > q0;
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float p = exp2_approx(fmaf(sc[nt][e], s.scale_log2, -lse2[e >> 1]));
        if (diagonal && k0 + nt * 8 + lane % 4 * 2 + (e & 1) > row_q[e >> 1]) p = 0.0f;
        sc[nt][e] = p * (dp[nt][e] - row_delta[e >> 1]);  // dS
      }
    // dQ += dS K, with dS from the accumulators as bf16 register A operands.
    uint32_t da[kBlockN / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) to_a_operand(da[kk], sc[2 * kk], sc[2 * kk + 1]);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk)
      wgmma_rs_wide<kDim, 1>(dq, da[kk], [&](int n0) {
        return mn_major_descriptor<kBlockN, kDim>(k_t, kk * 16, n0);
      });
    wgmma_commit();
    wgmma_wait<0>();
    register_fence(dq);
    register_fence(da);
    cp_async_wait_all();
    fence_async_shared();
    __syncthreads();
  }
  store_rows<kDim>(d_q + row0 * q_stride + h * s.d_qk, q_stride, q0 + warp * 16, s.seq_len,
                   s.d_qk, dq, s.scale);
}

template <int kDim>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dkdv_kernel(bf16* d_k, bf16* d_v, const bf16* d_out, const bf16* q,
                                   const bf16* k, const bf16* v, const float* lse,
                                   const float* delta, Dims s, int group) {
  constexpr int kBlockM = kKvBlockM, kBlockN = kKvBlockN;
  extern __shared__ __align__(1024) unsigned char smem[];
  bf16* k_s = reinterpret_cast<bf16*>(smem);
  bf16* v_s = k_s + kBlockN * kDim;
  bf16* q_s = v_s + kBlockN * kDim;       // [2][kBlockM][kDim]
  bf16* do_s = q_s + 2 * kBlockM * kDim;  // [2][kBlockM][kDim]
  float* lse_s = reinterpret_cast<float*>(do_s + 2 * kBlockM * kDim);  // [2][kBlockM]
  float* delta_s = lse_s + 2 * kBlockM;                                // [2][kBlockM]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wg = warp / 4;
  const int num_groups = s.n_q / group;
  const int b = blockIdx.x / num_groups, h_first = blockIdx.x % num_groups * group;
  const int k0 = blockIdx.y * kBlockN;  // blockIdx.y = 0 has the most query tiles: first
  const int64_t q_stride = int64_t(s.n_q) * s.d_qk, k_stride = int64_t(s.n_k) * s.d_qk;
  const int64_t v_stride = int64_t(s.n_v) * s.d_v, o_stride = int64_t(s.n_q) * s.d_v;
  const int64_t row0 = int64_t(b) * s.seq_len;
  // Causal: query tiles from the one holding query k0 to the last.
  const int i_start = k0 / kBlockM;
  const int tiles_per_head = (s.seq_len + kBlockM - 1) / kBlockM - i_start;
  const int steps = group * tiles_per_head;
  const int key_rows = min(kBlockN, s.seq_len - k0);
  auto k_head_of = [&](int h) { return h * s.n_k / s.n_q; };
  auto v_head_of = [&](int h) { return h * s.n_v / s.n_q; };

  auto load_kv = [&](int hk, int hv) {
    load_tile<kBlockN, kDim, kThreads>(k_s, k + (row0 + k0) * k_stride + hk * s.d_qk,
                                       k_stride, key_rows, s.d_qk);
    load_tile<kBlockN, kDim, kThreads>(v_s, v + (row0 + k0) * v_stride + hv * s.d_v,
                                       v_stride, key_rows, s.d_v);
  };
  // Q, dO, lse, delta of one query tile. The strides pass through an empty asm so that the
  // chunk offsets are recomputed per step, not kept live beside S^T, dP^T, dK and dV.
  auto load_step = [&](int step, int stage) {
    int64_t qs = q_stride, os = o_stride;
    asm volatile("" : "+l"(qs), "+l"(os));
    int h = h_first + step / tiles_per_head, t0 = (i_start + step % tiles_per_head) * kBlockM;
    int rows = min(kBlockM, s.seq_len - t0);
    load_tile<kBlockM, kDim, kThreads>(q_s + stage * kBlockM * kDim,
                                       q + (row0 + t0) * qs + h * s.d_qk, qs, rows,
                                       s.d_qk);
    load_tile<kBlockM, kDim, kThreads>(do_s + stage * kBlockM * kDim,
                                       d_out + (row0 + t0) * os + h * s.d_v, os, rows,
                                       s.d_v);
    const int64_t stat = (int64_t(b) * s.n_q + h) * s.seq_len + t0;
    const int i = threadIdx.x % kBlockM;
    const float* src = threadIdx.x < kBlockM ? lse + stat : delta + stat;
    float* dst = (threadIdx.x < kBlockM ? lse_s : delta_s) + stage * kBlockM + i;
    if (threadIdx.x < 2 * kBlockM) cp_async_4(dst, i < rows ? src + i : src, i < rows);
  };

  int cur_hk = k_head_of(h_first), cur_hv = v_head_of(h_first);
  load_kv(cur_hk, cur_hv);
  load_step(0, 0);
  cp_async_commit();
  cp_async_wait_all();
  fence_async_shared();
  __syncthreads();

  float dk[kDim / 8][4] = {}, dv[kDim / 8][4] = {};
  bf16* d_k_rows = d_k + row0 * k_stride;
  bf16* d_v_rows = d_v + row0 * v_stride;
  const int key_of_lane = k0 + warp * 16 + lane / 4;  // and key_of_lane + 8
  for (int step = 0; step < steps; ++step) {
    const int h = h_first + step / tiles_per_head;
    const int t0 = (i_start + step % tiles_per_head) * kBlockM;
    const int hk = k_head_of(h), hv = v_head_of(h);
    if (hk != cur_hk || hv != cur_hv) {  // a K or V head's run of query heads has ended
      if (hk != cur_hk) {
        store_rows<kDim>(d_k_rows + cur_hk * s.d_qk, k_stride, k0 + warp * 16, s.seq_len,
                         s.d_qk, dk, s.scale);
        for (auto& tile : dk) tile[0] = tile[1] = tile[2] = tile[3] = 0.0f;
      }
      if (hv != cur_hv) {
        store_rows<kDim>(d_v_rows + cur_hv * s.d_v, v_stride, k0 + warp * 16, s.seq_len,
                         s.d_v, dv, 1.0f);
        for (auto& tile : dv) tile[0] = tile[1] = tile[2] = tile[3] = 0.0f;
      }
      cur_hk = hk;
      cur_hv = hv;
      load_kv(hk, hv);  // the barrier closing the last step freed the K/V tiles
      cp_async_commit();
      cp_async_wait_all();
      fence_async_shared();
      __syncthreads();
    }
    if (step + 1 < steps) {
      load_step(step + 1, (step + 1) % 2);
      cp_async_commit();
    }
    const int stage = step % 2;
    const bf16* q_t = q_s + stage * kBlockM * kDim;
    const bf16* do_t = do_s + stage * kBlockM * kDim;
    const float* lse_t = lse_s + stage * kBlockM;
    const float* delta_t = delta_s + stage * kBlockM;

    // S^T = K Q^T and dP^T = V dO^T: the warpgroup's 64 keys x kBlockM queries.
    // The first k step overwrites (scale-d 0): no zeroed accumulators.
    float st[kBlockM / 8][4], dpt[kBlockM / 8][4];
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks) {
      Wgmma<kBlockM, 0>::ss(st, k_major_descriptor<kBlockN, kDim>(k_s, wg * 64, ks * 16),
                            k_major_descriptor<kBlockM, kDim>(q_t, 0, ks * 16), ks > 0);
      Wgmma<kBlockM, 0>::ss(dpt, k_major_descriptor<kBlockN, kDim>(v_s, wg * 64, ks * 16),
                            k_major_descriptor<kBlockM, kDim>(do_t, 0, ks * 16), ks > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    register_fence(st);
    register_fence(dpt);

    // Keys after the query (and queries past T) get P = 0.
    const bool masked = k0 + kBlockN - 1 > t0 || t0 + kBlockM > s.seq_len;
#pragma unroll
    for (int nt = 0; nt < kBlockM / 8; ++nt) {
      const int col = nt * 8 + lane % 4 * 2;
      const float2 l2 = *reinterpret_cast<const float2*>(lse_t + col);
      const float2 d2 = *reinterpret_cast<const float2*>(delta_t + col);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int query = t0 + col + (e & 1);
        float p = exp2_approx(fmaf(st[nt][e], s.scale_log2, -(e & 1 ? l2.y : l2.x) * kLog2e));
        if (masked && (key_of_lane + (e >> 1) * 8 > query || query >= s.seq_len)) p = 0.0f;
        dpt[nt][e] = p * (dpt[nt][e] - (e & 1 ? d2.y : d2.x));  // dS^T
        st[nt][e] = p;                                          // P^T
      }
    }
    // dV += P^T dO and dK += dS^T Q, the A operands straight from the accumulators.
    uint32_t pa[kBlockM / 16][4], da[kBlockM / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
      to_a_operand(pa[kk], st[2 * kk], st[2 * kk + 1]);
      to_a_operand(da[kk], dpt[2 * kk], dpt[2 * kk + 1]);
    }
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
      wgmma_rs_wide<kDim, 1>(dv, pa[kk], [&](int n0) {
        return mn_major_descriptor<kBlockM, kDim>(do_t, kk * 16, n0);
      });
      wgmma_rs_wide<kDim, 1>(dk, da[kk], [&](int n0) {
        return mn_major_descriptor<kBlockM, kDim>(q_t, kk * 16, n0);
      });
    }
    wgmma_commit();
    wgmma_wait<0>();
    register_fence(dv);
    register_fence(dk);
    register_fence(pa);
    register_fence(da);
    cp_async_wait_all();
    fence_async_shared();
    __syncthreads();
  }
  store_rows<kDim>(d_k_rows + cur_hk * s.d_qk, k_stride, k0 + warp * 16, s.seq_len, s.d_qk, dk,
                   s.scale);
  store_rows<kDim>(d_v_rows + cur_hv * s.d_v, v_stride, k0 + warp * 16, s.seq_len, s.d_v, dv,
                   1.0f);
}

template <auto kKernel, int kSmem>
void allow_smem() {
  static const bool configured = [] {
    SIGMA_CUDA_CHECK(
        cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    return true;
  }();
  (void)configured;
}

template <int kDim>
void launch_backward(Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor q, Tensor k,
                     Tensor v, Tensor out, Tensor lse, const Dims& s) {
  auto* delta = static_cast<float*>(scratch());  // [B, n_q, T]
  SIGMA_CHECK(size_t(s.batch) * s.n_q * s.seq_len * sizeof(float) <= kScratchBytes,
              "attention delta [{}, {}, {}] exceeds the CUDA scratch", s.batch, s.n_q, s.seq_len);
  const auto* dop = static_cast<const bf16*>(d_out.data);
  const auto *qp = static_cast<const bf16*>(q.data), *kp = static_cast<const bf16*>(k.data);
  const auto *vp = static_cast<const bf16*>(v.data), *op = static_cast<const bf16*>(out.data);

  constexpr int dq_smem = dq_smem_bytes<kDim>(), dq_block_n = kDqBlockN<kDim>;
  allow_smem<attention_backward_dq_kernel<kDim, dq_block_n>, dq_smem>();
  dim3 dq_grid(unsigned(s.batch * s.n_q), unsigned(ceil_div(s.seq_len, kDqBlockM)));
  attention_backward_dq_kernel<kDim, dq_block_n><<<dq_grid, kThreads, dq_smem, stream()>>>(
      static_cast<bf16*>(d_q.data), delta, dop, qp, kp, vp, op, lse.f32(), s);
  SIGMA_CUDA_LAUNCHED("attention_backward_dq");

  const int group = std::lcm(s.n_q / s.n_k, s.n_q / s.n_v);
  constexpr int dkdv_smem = dkdv_smem_bytes<kDim>();
  allow_smem<attention_backward_dkdv_kernel<kDim>, dkdv_smem>();
  dim3 dkdv_grid(unsigned(s.batch * (s.n_q / group)), unsigned(ceil_div(s.seq_len, kKvBlockN)));
  attention_backward_dkdv_kernel<kDim><<<dkdv_grid, kThreads, dkdv_smem, stream()>>>(
      static_cast<bf16*>(d_k.data), static_cast<bf16*>(d_v.data), dop, qp, kp, vp, lse.f32(),
      delta, s, group);
  SIGMA_CUDA_LAUNCHED("attention_backward_dkdv");
}

}  // namespace
}  // namespace attention

void attention_backward(Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor q, Tensor k,
                        Tensor v, Tensor out, Tensor lse) {
  using namespace attention;
  const Dims s = dims_of(q, k, v);
  check_supported("attention_backward", s, q);
  switch (padded_dim(s)) {
    case 64: return launch_backward<64>(d_q, d_k, d_v, d_out, q, k, v, out, lse, s);
    case 96: return launch_backward<96>(d_q, d_k, d_v, d_out, q, k, v, out, lse, s);
    default: return launch_backward<128>(d_q, d_k, d_v, d_out, q, k, v, out, lse, s);
  }
}

}  // namespace sigma::cuda
