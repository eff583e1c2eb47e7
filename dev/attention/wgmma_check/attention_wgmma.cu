// attention_wgmma (version 2, kept for the record: ../NOTES.md): the mma.sync kernels of
// ../mma_sync/ with every product on wgmma (attention_wgmma.cuh), same tiles, same softmax
// code, same deterministic two-kernel backward; it found the descriptor order the mainline
// uses, and that ptxas 13.0 reuses the registers of a register A operand (Q, dO here) that
// lives across the key loop, which broke d 64. Each warpgroup (4 warps) owns 64 rows
// (queries, or keys in dkdv); B operands come from shared memory through descriptors, A from
// registers (Q, dO, P, dS) or, for K and V in dkdv, from shared memory.
//
//   attention_wgmma check KSWAP MNSWAP   small shapes vs the library kernels (rel diff)
//   attention_wgmma bench KSWAP MNSWAP   the three bench shapes, timed, vs the library
// KSWAP / MNSWAP pick the order of the descriptor offsets (attention_wgmma.cuh); one process
// per pair, so a wrong pair that faults cannot take the others down.
#include "dev/attention/wgmma_check/attention_wgmma.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/device.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

namespace sigma::cuda::attention {
namespace {

struct Swaps {
  bool k, mn;
};

constexpr int kThreads = 256, kRowsPerBlock = 128;

template <int kDim, int kBlockN>
__global__ void __launch_bounds__(kThreads)
    forward_wgmma(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, Dims s,
                  Swaps sw) {
  constexpr int kBlockM = kRowsPerBlock;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  bf16* k_s = q_s + kBlockM * kDim;
  bf16* v_s = k_s + 2 * kBlockN * kDim;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = blockIdx.x / s.n_q, h = blockIdx.x % s.n_q;
  const int hk = h * s.n_k / s.n_q, hv = h * s.n_v / s.n_q;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kBlockM;
  const int64_t q_stride = int64_t(s.n_q) * s.d_qk, k_stride = int64_t(s.n_k) * s.d_qk;
  const int64_t v_stride = int64_t(s.n_v) * s.d_v, o_stride = int64_t(s.n_q) * s.d_v;
  const int64_t row0 = int64_t(b) * s.seq_len;
  const bf16* k_head = k + row0 * k_stride + hk * s.d_qk;
  const bf16* v_head = v + row0 * v_stride + hv * s.d_v;
  const int q_end = min(q0 + kBlockM, s.seq_len);
  const int n_blocks = (q_end + kBlockN - 1) / kBlockN;

  auto load_kv = [&](int j, int stage) {
    int k0 = j * kBlockN, rows = min(kBlockN, s.seq_len - k0);
    load_tile_blocked<kBlockN, kDim, kThreads>(k_s + stage * kBlockN * kDim,
                                               k_head + k0 * k_stride, k_stride, rows, s.d_qk);
    load_tile_blocked<kBlockN, kDim, kThreads>(v_s + stage * kBlockN * kDim,
                                               v_head + k0 * v_stride, v_stride, rows, s.d_v);
  };
  load_tile_blocked<kBlockM, kDim, kThreads>(q_s, q + (row0 + q0) * q_stride + h * s.d_qk,
                                             q_stride, q_end - q0, s.d_qk);
  load_kv(0, 0);
  cp_async_commit();
  cp_async_wait_all();
  fence_proxy_async();
  __syncthreads();

  uint32_t q_frag[kDim / 16][4];
#pragma unroll
  for (int ks = 0; ks < kDim / 16; ++ks)
    ldmatrix_x4(q_frag[ks], a_operand_blocked<kDim>(q_s, warp * 16, ks * 16));

  float o[kDim / 8][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  const int row_q[2] = {q0 + warp * 16 + lane / 4, q0 + warp * 16 + lane / 4 + 8};

  for (int j = 0; j < n_blocks; ++j) {
    if (j + 1 < n_blocks) {
      load_kv(j + 1, (j + 1) % 2);
      cp_async_commit();
    }
    const bf16* k_t = k_s + (j % 2) * kBlockN * kDim;
    const bf16* v_t = v_s + (j % 2) * kBlockN * kDim;

    float sc[kBlockN / 8][4] = {};
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks)
#pragma unroll
      for (int n0 = 0; n0 < kBlockN; n0 += 64)
        Wgmma<64, 0>::rs(sc + n0 / 8, q_frag[ks], k_major_descriptor<kDim>(k_t, n0, ks * 16, sw.k));
    wgmma_commit();
    wgmma_wait_all();
    register_fence(sc);
    register_fence(q_frag);

    const int k0 = j * kBlockN;
    if (k0 + kBlockN - 1 > q0) {
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (k0 + nt * 8 + lane % 4 * 2 + (e & 1) > row_q[e >> 1]) sc[nt][e] = -INFINITY;
    }
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

    uint32_t pa[kBlockN / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) to_a_operand(pa[kk], sc[2 * kk], sc[2 * kk + 1]);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk)
      wgmma_rs_wide<kDim, 1>(o, pa[kk], [&](int n0) {
        return mn_major_descriptor<kDim>(v_t, kk * 16, n0, sw.mn);
      });
    wgmma_commit();
    wgmma_wait_all();
    register_fence(o);
    register_fence(pa);
    cp_async_wait_all();
    fence_proxy_async();
    __syncthreads();
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
__global__ void __launch_bounds__(kThreads)
    dq_wgmma(bf16* d_q, float* delta, const bf16* d_out, const bf16* q, const bf16* k,
             const bf16* v, const bf16* out, const float* lse, Dims s, Swaps sw) {
  constexpr int kBlockM = kRowsPerBlock;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  bf16* do_s = q_s + kBlockM * kDim;
  bf16* k_s = do_s + kBlockM * kDim;
  bf16* v_s = k_s + 2 * kBlockN * kDim;
  float* delta_s = reinterpret_cast<float*>(v_s + 2 * kBlockN * kDim);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b = blockIdx.x / s.n_q, h = blockIdx.x % s.n_q;
  const int hk = h * s.n_k / s.n_q, hv = h * s.n_v / s.n_q;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kBlockM;
  const int64_t q_stride = int64_t(s.n_q) * s.d_qk, k_stride = int64_t(s.n_k) * s.d_qk;
  const int64_t v_stride = int64_t(s.n_v) * s.d_v, o_stride = int64_t(s.n_q) * s.d_v;
  const int64_t row0 = int64_t(b) * s.seq_len;
  const int64_t stat0 = (int64_t(b) * s.n_q + h) * s.seq_len;
  const bf16* k_head = k + row0 * k_stride + hk * s.d_qk;
  const bf16* v_head = v + row0 * v_stride + hv * s.d_v;
  const int q_end = min(q0 + kBlockM, s.seq_len);
  const int n_blocks = (q_end + kBlockN - 1) / kBlockN;

  auto load_kv = [&](int j, int stage) {
    int k0 = j * kBlockN, rows = min(kBlockN, s.seq_len - k0);
    load_tile_blocked<kBlockN, kDim, kThreads>(k_s + stage * kBlockN * kDim,
                                               k_head + k0 * k_stride, k_stride, rows, s.d_qk);
    load_tile_blocked<kBlockN, kDim, kThreads>(v_s + stage * kBlockN * kDim,
                                               v_head + k0 * v_stride, v_stride, rows, s.d_v);
  };
  load_tile_blocked<kBlockM, kDim, kThreads>(q_s, q + (row0 + q0) * q_stride + h * s.d_qk,
                                             q_stride, q_end - q0, s.d_qk);
  load_tile_blocked<kBlockM, kDim, kThreads>(do_s, d_out + (row0 + q0) * o_stride + h * s.d_v,
                                             o_stride, q_end - q0, s.d_v);
  load_kv(0, 0);
  cp_async_commit();
  {
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
  fence_proxy_async();
  __syncthreads();

  uint32_t q_frag[kDim / 16][4], do_frag[kDim / 16][4];
#pragma unroll
  for (int ks = 0; ks < kDim / 16; ++ks) {
    ldmatrix_x4(q_frag[ks], a_operand_blocked<kDim>(q_s, warp * 16, ks * 16));
    ldmatrix_x4(do_frag[ks], a_operand_blocked<kDim>(do_s, warp * 16, ks * 16));
  }
  const int row_q[2] = {q0 + warp * 16 + lane / 4, q0 + warp * 16 + lane / 4 + 8};
  float lse2[2], row_delta[2];
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

    float sc[kBlockN / 8][4] = {}, dp[kBlockN / 8][4] = {};
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks)
#pragma unroll
      for (int n0 = 0; n0 < kBlockN; n0 += 64) {
        Wgmma<64, 0>::rs(sc + n0 / 8, q_frag[ks], k_major_descriptor<kDim>(k_t, n0, ks * 16, sw.k));
        Wgmma<64, 0>::rs(dp + n0 / 8, do_frag[ks], k_major_descriptor<kDim>(v_t, n0, ks * 16, sw.k));
      }
    wgmma_commit();
    wgmma_wait_all();
    register_fence(sc);
    register_fence(dp);
    register_fence(q_frag);
    register_fence(do_frag);

    const int k0 = j * kBlockN;
    const bool diagonal = k0 + kBlockN - 1 > q0;
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float p = exp2_approx(fmaf(sc[nt][e], s.scale_log2, -lse2[e >> 1]));
        if (diagonal && k0 + nt * 8 + lane % 4 * 2 + (e & 1) > row_q[e >> 1]) p = 0.0f;
        sc[nt][e] = p * (dp[nt][e] - row_delta[e >> 1]);
      }
    uint32_t da[kBlockN / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) to_a_operand(da[kk], sc[2 * kk], sc[2 * kk + 1]);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk)
      wgmma_rs_wide<kDim, 1>(dq, da[kk], [&](int n0) {
        return mn_major_descriptor<kDim>(k_t, kk * 16, n0, sw.mn);
      });
    wgmma_commit();
    wgmma_wait_all();
    register_fence(dq);
    register_fence(da);
    cp_async_wait_all();
    fence_proxy_async();
    __syncthreads();
  }
  store_rows<kDim>(d_q + row0 * q_stride + h * s.d_qk, q_stride, q0 + warp * 16, s.seq_len,
                   s.d_qk, dq, s.scale);
}

template <int kDim>
__global__ void __launch_bounds__(kThreads)
    dkdv_wgmma(bf16* d_k, bf16* d_v, const bf16* d_out, const bf16* q, const bf16* k,
               const bf16* v, const float* lse, const float* delta, Dims s, int group, Swaps sw) {
  constexpr int kBlockM = 64, kBlockN = kRowsPerBlock;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* k_s = reinterpret_cast<bf16*>(smem);
  bf16* v_s = k_s + kBlockN * kDim;
  bf16* q_s = v_s + kBlockN * kDim;
  bf16* do_s = q_s + 2 * kBlockM * kDim;
  float* lse_s = reinterpret_cast<float*>(do_s + 2 * kBlockM * kDim);
  float* delta_s = lse_s + 2 * kBlockM;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wg = warp / 4;
  const int num_groups = s.n_q / group;
  const int b = blockIdx.x / num_groups, h_first = blockIdx.x % num_groups * group;
  const int k0 = blockIdx.y * kBlockN;
  const int64_t q_stride = int64_t(s.n_q) * s.d_qk, k_stride = int64_t(s.n_k) * s.d_qk;
  const int64_t v_stride = int64_t(s.n_v) * s.d_v, o_stride = int64_t(s.n_q) * s.d_v;
  const int64_t row0 = int64_t(b) * s.seq_len;
  const int i_start = k0 / kBlockM, tiles_per_head = (s.seq_len + kBlockM - 1) / kBlockM - i_start;
  const int steps = group * tiles_per_head;
  const int key_rows = min(kBlockN, s.seq_len - k0);
  auto k_head_of = [&](int h) { return h * s.n_k / s.n_q; };
  auto v_head_of = [&](int h) { return h * s.n_v / s.n_q; };

  auto load_kv = [&](int hk, int hv) {
    load_tile_blocked<kBlockN, kDim, kThreads>(k_s, k + (row0 + k0) * k_stride + hk * s.d_qk,
                                               k_stride, key_rows, s.d_qk);
    load_tile_blocked<kBlockN, kDim, kThreads>(v_s, v + (row0 + k0) * v_stride + hv * s.d_v,
                                               v_stride, key_rows, s.d_v);
  };
  auto load_step = [&](int step, int stage) {
    int h = h_first + step / tiles_per_head, t0 = (i_start + step % tiles_per_head) * kBlockM;
    int rows = min(kBlockM, s.seq_len - t0);
    load_tile_blocked<kBlockM, kDim, kThreads>(q_s + stage * kBlockM * kDim,
                                               q + (row0 + t0) * q_stride + h * s.d_qk,
                                               q_stride, rows, s.d_qk);
    load_tile_blocked<kBlockM, kDim, kThreads>(do_s + stage * kBlockM * kDim,
                                               d_out + (row0 + t0) * o_stride + h * s.d_v,
                                               o_stride, rows, s.d_v);
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
  fence_proxy_async();
  __syncthreads();

  float dk[kDim / 8][4] = {}, dv[kDim / 8][4] = {};
  bf16* d_k_rows = d_k + row0 * k_stride;
  bf16* d_v_rows = d_v + row0 * v_stride;
  const int key_of_lane = k0 + warp * 16 + lane / 4;
  for (int step = 0; step < steps; ++step) {
    const int h = h_first + step / tiles_per_head;
    const int t0 = (i_start + step % tiles_per_head) * kBlockM;
    const int hk = k_head_of(h), hv = v_head_of(h);
    if (hk != cur_hk || hv != cur_hv) {
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
      load_kv(hk, hv);
      cp_async_commit();
      cp_async_wait_all();
      fence_proxy_async();
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

    float st[kBlockM / 8][4] = {}, dpt[kBlockM / 8][4] = {};
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks) {
      Wgmma<64, 0>::ss(st, k_major_descriptor<kDim>(k_s, wg * 64, ks * 16, sw.k),
                       k_major_descriptor<kDim>(q_t, 0, ks * 16, sw.k));
      Wgmma<64, 0>::ss(dpt, k_major_descriptor<kDim>(v_s, wg * 64, ks * 16, sw.k),
                       k_major_descriptor<kDim>(do_t, 0, ks * 16, sw.k));
    }
    wgmma_commit();
    wgmma_wait_all();
    register_fence(st);
    register_fence(dpt);

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
        dpt[nt][e] = p * (dpt[nt][e] - (e & 1 ? d2.y : d2.x));
        st[nt][e] = p;
      }
    }
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
        return mn_major_descriptor<kDim>(do_t, kk * 16, n0, sw.mn);
      });
      wgmma_rs_wide<kDim, 1>(dk, da[kk], [&](int n0) {
        return mn_major_descriptor<kDim>(q_t, kk * 16, n0, sw.mn);
      });
    }
    wgmma_commit();
    wgmma_wait_all();
    register_fence(dv);
    register_fence(dk);
    register_fence(pa);
    register_fence(da);
    cp_async_wait_all();
    fence_proxy_async();
    __syncthreads();
  }
  store_rows<kDim>(d_k_rows + cur_hk * s.d_qk, k_stride, k0 + warp * 16, s.seq_len, s.d_qk, dk,
                   s.scale);
  store_rows<kDim>(d_v_rows + cur_hv * s.d_v, v_stride, k0 + warp * 16, s.seq_len, s.d_v, dv,
                   1.0f);
}

template <auto kKernel>
void allow_smem(int bytes) {
  SIGMA_CUDA_CHECK(cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

template <int kDim, int kBlockN>
void forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, Swaps sw) {
  const Dims s = dims_of(q, k, v);
  const int smem = (kRowsPerBlock + 4 * kBlockN) * kDim * 2;
  allow_smem<forward_wgmma<kDim, kBlockN>>(smem);
  dim3 grid(unsigned(s.batch * s.n_q), unsigned(ceil_div(s.seq_len, kRowsPerBlock)));
  forward_wgmma<kDim, kBlockN><<<grid, kThreads, smem, stream()>>>(
      static_cast<bf16*>(out.data), lse.f32(), static_cast<const bf16*>(q.data),
      static_cast<const bf16*>(k.data), static_cast<const bf16*>(v.data), s, sw);
  SIGMA_CUDA_LAUNCHED("forward_wgmma");
}

template <int kDim>
void backward(Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor q, Tensor k, Tensor v,
              Tensor out, Tensor lse, Swaps sw) {
  const Dims s = dims_of(q, k, v);
  auto* delta = static_cast<float*>(scratch());
  constexpr int kDqBlockN = 64;
  const int dq_smem = (2 * kRowsPerBlock + 4 * kDqBlockN) * kDim * 2 + kRowsPerBlock * 4;
  allow_smem<dq_wgmma<kDim, kDqBlockN>>(dq_smem);
  dim3 dq_grid(unsigned(s.batch * s.n_q), unsigned(ceil_div(s.seq_len, kRowsPerBlock)));
  const auto* dop = static_cast<const bf16*>(d_out.data);
  const auto *qp = static_cast<const bf16*>(q.data), *kp = static_cast<const bf16*>(k.data);
  const auto *vp = static_cast<const bf16*>(v.data), *op = static_cast<const bf16*>(out.data);
  dq_wgmma<kDim, kDqBlockN><<<dq_grid, kThreads, dq_smem, stream()>>>(
      static_cast<bf16*>(d_q.data), delta, dop, qp, kp, vp, op, lse.f32(), s, sw);
  SIGMA_CUDA_LAUNCHED("dq_wgmma");
  const int group = std::lcm(s.n_q / s.n_k, s.n_q / s.n_v);
  const int dkdv_smem = (2 * kRowsPerBlock + 4 * 64) * kDim * 2 + 4 * 64 * 4;
  allow_smem<dkdv_wgmma<kDim>>(dkdv_smem);
  dim3 dkdv_grid(unsigned(s.batch * (s.n_q / group)), unsigned(ceil_div(s.seq_len, kRowsPerBlock)));
  dkdv_wgmma<kDim><<<dkdv_grid, kThreads, dkdv_smem, stream()>>>(
      static_cast<bf16*>(d_k.data), static_cast<bf16*>(d_v.data), dop, qp, kp, vp, lse.f32(),
      delta, s, group, sw);
  SIGMA_CUDA_LAUNCHED("dkdv_wgmma");
}

}  // namespace
}  // namespace sigma::cuda::attention

namespace sigma {
namespace {

struct DeviceTensor {
  Buffer buffer;
  Tensor tensor;
  DeviceTensor(Shape shape, DType dtype, uint64_t seed)
      : buffer(size_t(shape.numel()) * dtype_size(dtype), Device::kCuda),
        tensor(buffer.tensor(0, shape, dtype)) {
    Buffer host(tensor.bytes(), Device::kCpu);
    Tensor h = host.tensor(0, shape, dtype);
    for (int64_t i = 0; i < shape.numel(); ++i) {
      uint64_t z = (seed << 40) + uint64_t(i) + 0x9e3779b97f4a7c15ull;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
      float x = (float(z >> 40) / float(1 << 24) - 0.5f) * 3.4641016f;
      uint32_t bits;
      std::memcpy(&bits, &x, 4);
      if (dtype == DType::kF32)
        static_cast<float*>(h.data)[i] = x;
      else
        static_cast<uint16_t*>(h.data)[i] = uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    }
    device::copy(tensor, h);
  }
  operator Tensor() const { return tensor; }
};

std::vector<float> host_values(Tensor t) {
  Buffer staging(t.bytes(), Device::kCpu);
  Tensor h = staging.tensor(0, t.shape, t.dtype);
  device::copy(h, t);
  std::vector<float> out(size_t(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    if (t.dtype == DType::kF32) {
      out[i] = static_cast<const float*>(h.data)[i];
    } else {
      uint32_t bits = uint32_t(static_cast<const uint16_t*>(h.data)[i]) << 16;
      std::memcpy(&out[i], &bits, 4);
    }
  }
  return out;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

template <typename Fn>
double median_ms(Fn&& fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  SIGMA_CUDA_CHECK(cudaEventCreate(&start));
  SIGMA_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    SIGMA_CUDA_CHECK(cudaEventRecord(start, cuda::stream()));
    fn();
    SIGMA_CUDA_CHECK(cudaEventRecord(stop, cuda::stream()));
    SIGMA_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    SIGMA_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// One problem: the mainline kernels' outputs, then the wgmma kernels' against them.
template <int kDim, int kFwdBlockN>
void compare(int64_t b, int64_t t, int64_t nq, int64_t nk, int64_t nv, cuda::attention::Swaps sw,
             bool time) {
  DeviceTensor q({b, t, nq, kDim}, DType::kBF16, 1), k({b, t, nk, kDim}, DType::kBF16, 2);
  DeviceTensor v({b, t, nv, kDim}, DType::kBF16, 3), d_out({b, t, nq, kDim}, DType::kBF16, 4);
  DeviceTensor out({b, t, nq, kDim}, DType::kBF16, 5), lse({b, nq, t}, DType::kF32, 6);
  DeviceTensor d_q({b, t, nq, kDim}, DType::kBF16, 7), d_k({b, t, nk, kDim}, DType::kBF16, 8);
  DeviceTensor d_v({b, t, nv, kDim}, DType::kBF16, 9);
  auto main_fwd = [&] { cuda::attention_forward(out, lse, q, k, v); };
  auto main_bwd = [&] { cuda::attention_backward(d_q, d_k, d_v, d_out, q, k, v, out, lse); };
  auto wg_fwd = [&] { cuda::attention::forward<kDim, kFwdBlockN>(out, lse, q, k, v, sw); };
  auto wg_bwd = [&] { cuda::attention::backward<kDim>(d_q, d_k, d_v, d_out, q, k, v, out, lse, sw); };
  main_fwd();
  main_bwd();
  auto r_out = host_values(out), r_lse = host_values(lse), r_dq = host_values(d_q);
  auto r_dk = host_values(d_k), r_dv = host_values(d_v);
  wg_fwd();
  double e_out = rel_diff(host_values(out), r_out), e_lse = rel_diff(host_values(lse), r_lse);
  main_fwd();  // backward from the mainline's out and lse
  wg_bwd();
  double e_dq = rel_diff(host_values(d_q), r_dq), e_dk = rel_diff(host_values(d_k), r_dk);
  double e_dv = rel_diff(host_values(d_v), r_dv);
  fmt::print("B{} T{} {}/{}/{} d{} swaps k{} mn{}: diff out {:.1e} lse {:.1e} dq {:.1e} dk {:.1e} dv {:.1e}\n",
             b, t, nq, nk, nv, kDim, int(sw.k), int(sw.mn), e_out, e_lse, e_dq, e_dk, e_dv);
  if (!time) return;
  double flops = 4.0 * double(b * nq) * double(t) * double(t) * kDim / 2;
  double mf = median_ms(main_fwd, 3, 20), wf = median_ms(wg_fwd, 3, 20);
  double mb = median_ms(main_bwd, 3, 20), wb = median_ms(wg_bwd, 3, 20);
  fmt::print("  mma.sync fwd {:.3f} ms {:.1f} TFLOP/s  bwd {:.3f} ms | wgmma fwd {:.3f} ms {:.1f} TFLOP/s  bwd {:.3f} ms"
             "  | fwd+bwd mma.sync {:.1f} wgmma {:.1f} TFLOP/s\n",
             mf, flops / mf / 1e9, mb, wf, flops / wf / 1e9, wb, 3.5 * flops / (mf + mb) / 1e9,
             3.5 * flops / (wf + wb) / 1e9);
}

}  // namespace
}  // namespace sigma

int main(int argc, char** argv) {
  if (argc != 4) {
    fmt::print(stderr, "usage: attention_wgmma check|bench KSWAP MNSWAP\n");
    return 2;
  }
  const std::string mode = argv[1];
  const sigma::cuda::attention::Swaps sw{std::atoi(argv[2]) != 0, std::atoi(argv[3]) != 0};
  try {
    if (mode == "check") {
      sigma::compare<64, 64>(2, 1000, 32, 4, 16, sw, false);
      sigma::compare<96, 128>(1, 777, 16, 4, 4, sw, false);
      sigma::compare<128, 128>(1, 1000, 8, 2, 4, sw, false);
    } else {
      sigma::compare<64, 64>(4, 4096, 32, 4, 16, sw, true);
      sigma::compare<64, 128>(4, 4096, 32, 4, 16, sw, true);
      sigma::compare<96, 128>(4, 4096, 16, 4, 4, sw, true);
      sigma::compare<128, 128>(2, 8192, 32, 4, 16, sw, true);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "attention_wgmma: {}\n", e.what());
    return 2;
  }
  return 0;
}
