// (Version 1, mma.sync, kept for the record: ../NOTES.md; the mainline is wgmma.)
//
// Causal DiffQKV attention backward on CUDA (Sigma paper section 2), FlashAttention-2's
// recomputation (Dao 2023, algorithm 2) on bf16 tensor cores (mma.sync m16n8k16):
//   P = exp(scale S - lse),  dP = dO V^T,  dS = P * (dP - delta),  delta = rowsum(dO * O),
//   dV = P^T dO,  dK = scale dS^T Q,  dQ = scale dS K.
//
// Deterministic without atomics, in two kernels:
// - dq: one block per 128 query rows of a (batch, query head), looping over key tiles as the
//   forward does; it also writes delta for the second kernel. It recomputes S and dP, the
//   price of not adding dQ from every key tile with float atomics (whose order, and so the
//   bits, would change from run to run).
// - dkdv: one block per 128 keys of a (batch, head group), where a group is the smallest
//   run of query heads that owns its K and V heads (lcm of n_q/n_k and n_q/n_v heads, as the
//   CPU reference splits its work). The block loops over the group's query heads in order
//   and over their query tiles, keeping dK and dV in registers; since each K head and each
//   V head is read by a contiguous run of query heads inside the group, a head's sum is
//   complete when the loop moves past its run, and it is written then, once, in a fixed
//   order. Each warp owns 16 keys and computes S^T and dP^T directly (keys as rows), so
//   P^T and dS^T feed the dV and dK products from registers with no shared-memory trip.
// Left out: dropout, non-causal masks, wgmma.
#include "dev/attention/mma_sync/attention_common.cuh"
#include "kernels/cuda/cuda_ops.h"

#include <numeric>

namespace sigma::cuda {
namespace attention {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
// dq kernel: 128 query rows (16 per warp) x key tiles of kBlockN.
constexpr int kDqBlockM = 16 * kWarps;
// dkdv kernel: 128 keys (16 per warp) x query tiles of kBlockM.
constexpr int kKvBlockN = 16 * kWarps;

template <int kDim, int kBlockN>
constexpr int dq_smem_bytes() {  // Q, dO, 2 x (K, V), delta
  return (2 * kDqBlockM + 4 * kBlockN) * kStride<kDim> * int(sizeof(bf16)) +
         kDqBlockM * int(sizeof(float));
}
template <int kDim, int kBlockM>
constexpr int dkdv_smem_bytes() {  // K, V, 2 x (Q, dO, lse, delta)
  return (2 * kKvBlockN + 4 * kBlockM) * kStride<kDim> * int(sizeof(bf16)) +
         4 * kBlockM * int(sizeof(float));
}

template <int kDim, int kBlockN>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dq_kernel(bf16* d_q, float* delta, const bf16* d_out, const bf16* q,
                                 const bf16* k, const bf16* v, const bf16* out,
                                 const float* lse, Dims s) {
  constexpr int S = kStride<kDim>;
  constexpr int kBlockM = kDqBlockM;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  bf16* do_s = q_s + kBlockM * S;
  bf16* k_s = do_s + kBlockM * S;     // [2][kBlockN][S]
  bf16* v_s = k_s + 2 * kBlockN * S;  // [2][kBlockN][S]
  float* delta_s = reinterpret_cast<float*>(v_s + 2 * kBlockN * S);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
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

  auto load_kv = [&](int j, int stage) {
    int k0 = j * kBlockN, rows = min(kBlockN, s.seq_len - k0);
    load_tile<kBlockN, kDim, kThreads>(k_s + stage * kBlockN * S, k_head + k0 * k_stride,
                                       k_stride, rows, s.d_qk);
    load_tile<kBlockN, kDim, kThreads>(v_s + stage * kBlockN * S, v_head + k0 * v_stride,
                                       v_stride, rows, s.d_v);
  };
  load_tile<kBlockM, kDim, kThreads>(q_s, q + (row0 + q0) * q_stride + h * s.d_qk, q_stride,
                                     q_end - q0, s.d_qk);
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
  __syncthreads();

  uint32_t q_frag[kDim / 16][4], do_frag[kDim / 16][4];
#pragma unroll
  for (int ks = 0; ks < kDim / 16; ++ks) {
    ldmatrix_x4(q_frag[ks], a_operand(q_s, S, warp * 16, ks * 16));
    ldmatrix_x4(do_frag[ks], a_operand(do_s, S, warp * 16, ks * 16));
  }
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
    const bf16* k_t = k_s + (j % 2) * kBlockN * S;
    const bf16* v_t = v_s + (j % 2) * kBlockN * S;

    float sc[kBlockN / 8][4] = {}, dp[kBlockN / 8][4] = {};  // S = Q K^T, dP = dO V^T
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks) {
#pragma unroll
      for (int np = 0; np < kBlockN / 16; ++np) {
        uint32_t bk[4], bv[4];
        ldmatrix_x4(bk, b_operand_nk(k_t, S, np * 16, ks * 16));
        ldmatrix_x4(bv, b_operand_nk(v_t, S, np * 16, ks * 16));
        mma(sc[2 * np], q_frag[ks], bk[0], bk[1]);
        mma(sc[2 * np + 1], q_frag[ks], bk[2], bk[3]);
        mma(dp[2 * np], do_frag[ks], bv[0], bv[1]);
        mma(dp[2 * np + 1], do_frag[ks], bv[2], bv[3]);
      }
    }
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

    // dQ += dS K, with dS from the accumulators as bf16 A operands.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      uint32_t da[4];
      to_a_operand(da, sc[2 * kk], sc[2 * kk + 1]);
#pragma unroll
      for (int dn = 0; dn < kDim / 16; ++dn) {
        uint32_t bk[4];
        ldmatrix_x4_trans(bk, b_operand_kn(k_t, S, kk * 16, dn * 16));
        mma(dq[2 * dn], da, bk[0], bk[1]);
        mma(dq[2 * dn + 1], da, bk[2], bk[3]);
      }
    }
    cp_async_wait_all();
    __syncthreads();
  }
  store_rows<kDim>(d_q + row0 * q_stride + h * s.d_qk, q_stride, q0 + warp * 16, s.seq_len,
                   s.d_qk, dq, s.scale);
}

template <int kDim, int kBlockM>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dkdv_kernel(bf16* d_k, bf16* d_v, const bf16* d_out, const bf16* q,
                                   const bf16* k, const bf16* v, const float* lse,
                                   const float* delta, Dims s, int group) {
  constexpr int S = kStride<kDim>;
  constexpr int kBlockN = kKvBlockN;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* k_s = reinterpret_cast<bf16*>(smem);
  bf16* v_s = k_s + kBlockN * S;
  bf16* q_s = v_s + kBlockN * S;      // [2][kBlockM][S]
  bf16* do_s = q_s + 2 * kBlockM * S;  // [2][kBlockM][S]
  float* lse_s = reinterpret_cast<float*>(do_s + 2 * kBlockM * S);  // [2][kBlockM]
  float* delta_s = lse_s + 2 * kBlockM;                               // [2][kBlockM]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int num_groups = s.n_q / group;
  const int b = blockIdx.x / num_groups, h_first = blockIdx.x % num_groups * group;
  const int k0 = blockIdx.y * kBlockN;  // blockIdx.y = 0 has the most query tiles: first
  const int64_t q_stride = int64_t(s.n_q) * s.d_qk, k_stride = int64_t(s.n_k) * s.d_qk;
  const int64_t v_stride = int64_t(s.n_v) * s.d_v, o_stride = int64_t(s.n_q) * s.d_v;
  const int64_t row0 = int64_t(b) * s.seq_len;
  // Causal: query tiles from the one holding query k0 to the last.
  const int i_start = k0 / kBlockM, tiles_per_head = (s.seq_len + kBlockM - 1) / kBlockM - i_start;
  const int steps = group * tiles_per_head;
  const int key_rows = min(kBlockN, s.seq_len - k0);
  auto k_head_of = [&](int h) { return h * s.n_k / s.n_q; };
  auto v_head_of = [&](int h) { return h * s.n_v / s.n_q; };

  auto load_kv = [&](int hk, int hv) {
    load_tile<kBlockN, kDim, kThreads>(k_s, k + (row0 + k0) * k_stride + hk * s.d_qk, k_stride,
                                       key_rows, s.d_qk);
    load_tile<kBlockN, kDim, kThreads>(v_s, v + (row0 + k0) * v_stride + hv * s.d_v, v_stride,
                                       key_rows, s.d_v);
  };
  auto load_step = [&](int step, int stage) {  // Q, dO, lse, delta of one query tile
    int h = h_first + step / tiles_per_head, t0 = (i_start + step % tiles_per_head) * kBlockM;
    int rows = min(kBlockM, s.seq_len - t0);
    load_tile<kBlockM, kDim, kThreads>(q_s + stage * kBlockM * S,
                                       q + (row0 + t0) * q_stride + h * s.d_qk, q_stride, rows,
                                       s.d_qk);
    load_tile<kBlockM, kDim, kThreads>(do_s + stage * kBlockM * S,
                                       d_out + (row0 + t0) * o_stride + h * s.d_v, o_stride,
                                       rows, s.d_v);
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
      __syncthreads();
    }
    if (step + 1 < steps) {
      load_step(step + 1, (step + 1) % 2);
      cp_async_commit();
    }
    const int stage = step % 2;
    const bf16* q_t = q_s + stage * kBlockM * S;
    const bf16* do_t = do_s + stage * kBlockM * S;
    const float* lse_t = lse_s + stage * kBlockM;
    const float* delta_t = delta_s + stage * kBlockM;

    // S^T = K Q^T and dP^T = V dO^T: this warp's 16 keys x kBlockM queries.
    float st[kBlockM / 8][4] = {}, dpt[kBlockM / 8][4] = {};
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks) {
      uint32_t ka[4], va[4];
      ldmatrix_x4(ka, a_operand(k_s, S, warp * 16, ks * 16));
      ldmatrix_x4(va, a_operand(v_s, S, warp * 16, ks * 16));
#pragma unroll
      for (int np = 0; np < kBlockM / 16; ++np) {
        uint32_t bq[4], bo[4];
        ldmatrix_x4(bq, b_operand_nk(q_t, S, np * 16, ks * 16));
        ldmatrix_x4(bo, b_operand_nk(do_t, S, np * 16, ks * 16));
        mma(st[2 * np], ka, bq[0], bq[1]);
        mma(st[2 * np + 1], ka, bq[2], bq[3]);
        mma(dpt[2 * np], va, bo[0], bo[1]);
        mma(dpt[2 * np + 1], va, bo[2], bo[3]);
      }
    }
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
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
      uint32_t pa[4], da[4];
      to_a_operand(pa, st[2 * kk], st[2 * kk + 1]);
      to_a_operand(da, dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
      for (int dn = 0; dn < kDim / 16; ++dn) {
        uint32_t bo[4], bq[4];
        ldmatrix_x4_trans(bo, b_operand_kn(do_t, S, kk * 16, dn * 16));
        ldmatrix_x4_trans(bq, b_operand_kn(q_t, S, kk * 16, dn * 16));
        mma(dv[2 * dn], pa, bo[0], bo[1]);
        mma(dv[2 * dn + 1], pa, bo[2], bo[3]);
        mma(dk[2 * dn], da, bq[0], bq[1]);
        mma(dk[2 * dn + 1], da, bq[2], bq[3]);
      }
    }
    cp_async_wait_all();
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

template <int kDim, int kDqBlockN, int kKvBlockM>
void launch_backward(Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor q, Tensor k,
                     Tensor v, Tensor out, Tensor lse, const Dims& s) {
  auto* delta = static_cast<float*>(scratch());  // [B, n_q, T]
  SIGMA_CHECK(size_t(s.batch) * s.n_q * s.seq_len * sizeof(float) <= kScratchBytes,
              "attention delta [{}, {}, {}] exceeds the CUDA scratch", s.batch, s.n_q, s.seq_len);
  const auto* dop = static_cast<const bf16*>(d_out.data);
  const auto *qp = static_cast<const bf16*>(q.data), *kp = static_cast<const bf16*>(k.data);
  const auto *vp = static_cast<const bf16*>(v.data), *op = static_cast<const bf16*>(out.data);

  constexpr int dq_smem = dq_smem_bytes<kDim, kDqBlockN>();
  allow_smem<attention_backward_dq_kernel<kDim, kDqBlockN>, dq_smem>();
  dim3 dq_grid(unsigned(s.batch * s.n_q), unsigned(ceil_div(s.seq_len, kDqBlockM)));
  attention_backward_dq_kernel<kDim, kDqBlockN><<<dq_grid, kThreads, dq_smem, stream()>>>(
      static_cast<bf16*>(d_q.data), delta, dop, qp, kp, vp, op, lse.f32(), s);
  SIGMA_CUDA_LAUNCHED("attention_backward_dq");

  const int group = std::lcm(s.n_q / s.n_k, s.n_q / s.n_v);
  constexpr int dkdv_smem = dkdv_smem_bytes<kDim, kKvBlockM>();
  allow_smem<attention_backward_dkdv_kernel<kDim, kKvBlockM>, dkdv_smem>();
  dim3 dkdv_grid(unsigned(s.batch * (s.n_q / group)), unsigned(ceil_div(s.seq_len, kKvBlockN)));
  attention_backward_dkdv_kernel<kDim, kKvBlockM><<<dkdv_grid, kThreads, dkdv_smem, stream()>>>(
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
    // 64-query tiles for dkdv also at d 128, where they spill 144 bytes: still 5% faster
    // than 32-query tiles on an H200 (dev/attention/NOTES.md).
    case 64: return launch_backward<64, 64, 64>(d_q, d_k, d_v, d_out, q, k, v, out, lse, s);
    case 96: return launch_backward<96, 64, 64>(d_q, d_k, d_v, d_out, q, k, v, out, lse, s);
    default: return launch_backward<128, 64, 64>(d_q, d_k, d_v, d_out, q, k, v, out, lse, s);
  }
}

}  // namespace sigma::cuda
