// Causal DiffQKV attention forward on CUDA (Sigma paper section 2): FlashAttention-2's online
// softmax (Dao 2023, algorithm 1), scheduled as FlashAttention-3 does on Hopper (Shah et al.
// 2024, section 3): warp specialisation and a ping-pong of two warpgroups.
//
// One block = 128 query rows of one (batch, query head) and three warpgroups. The producer
// (warpgroup 0, one thread) loads Q once and the K and V tiles into a ring of kStages stages
// with TMA (full / empty mbarriers per tile; K and V apart, so S can start before V lands).
// Each consumer warpgroup owns 64 query rows end to end; each warp 16 rows with their running
// max and sum, so the softmax needs no shared memory: P goes from the S accumulators straight
// into the register A operand of O += P V. Per key tile j a consumer issues S_j = Q K_j^T and
// O += P_{j-1} V_{j-1} back to back, waits for S_j, runs its softmax, waits for P_{j-1} V_{j-1}
// and rescales O. (ptxas hoists that second wait above the softmax; forcing the order ran
// slower: dev/attention/NOTES.md, version 9.) The two consumers take turns to issue (two
// named barriers), so one's softmax runs under the other's products. Query head h reads K head
// h*n_k/n_q and V head h*n_v/n_q in place: K and V are never repeated. Statistics (max, sum,
// lse) are fp32; P is rounded to bf16 for P V, as in every flash attention. Left out: dropout,
// non-causal masks.
#include "kernels/cuda/attention_wgmma.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/tensor_map.h"

namespace sigma::cuda {
namespace attention {
namespace {

// A block: the producer warpgroup, then kConsumers consumer warpgroups of 64 query rows (three
// consumers, 192-row blocks, ran no faster at d64: dev/attention/NOTES.md, version 9).
constexpr int kConsumers = 2;
constexpr int kBlockM = 64 * kConsumers;
constexpr int kThreads = 128 * (kConsumers + 1);
// The producer gives its registers to the consumers, within the SM's 64K: 128 x (24 + 2 x 240).
constexpr uint32_t kProducerRegisters = 24, kConsumerRegisters = 240;
// Named barriers 1, 2: consumer c may issue its products once it syncs on 1 + c, and then
// passes the turn to the next consumer (the last to consumer 0): 128 threads sync, 128 arrive.
constexpr uint32_t kTurnBarrier = 1, kTurnThreads = 256;

// Q, K and V as TMA maps over [B, T, heads, d], i.e. 4-d (d, heads, T, B), read a panel at a
// time (attention_wgmma.cuh): boxes of 64 columns with the 128B swizzle and, at kDim 96, of 32
// columns with the 64B swizzle for the last panel.
struct Maps {
  CUtensorMap q, k, v, q_narrow, k_narrow, v_narrow;
};

template <int kDim, int kBlockN, int kStages>
struct Shared {
  bf16 q[kBlockM * kDim];
  bf16 k[kStages][kBlockN * kDim];
  bf16 v[kStages][kBlockN * kDim];
  uint64_t q_full, k_full[kStages], v_full[kStages], k_empty[kStages], v_empty[kStages];
};

// Starts a [kRows][kDim] tile's TMA loads, panel by panel, completing on `bar`.
template <int kRows, int kDim>
__device__ __forceinline__ void load_tile_tma(bf16* dst, const CUtensorMap* wide,
                                              const CUtensorMap* narrow, uint64_t* bar,
                                              int head, int row, int batch) {
  using Layout = TileLayout<kRows, kDim>;
#pragma unroll
  for (int p = 0; p < Layout::kWidePanels; ++p)
    sm90::tma_load_4d(dst + p * 64 * kRows, wide, bar, p * 64, head, row, batch);
  if constexpr (Layout::kNarrowPanel)
    sm90::tma_load_4d(dst + Layout::kWidePanels * 64 * kRows, narrow, bar,
                      Layout::kWidePanels * 64, head, row, batch);
}

template <int kDim, int kBlockN, int kStages>
__global__ void __launch_bounds__(kThreads, 1)
    attention_forward_kernel(bf16* out, float* lse, const __grid_constant__ Maps maps, Dims s) {
  using Smem = Shared<kDim, kBlockN, kStages>;
  extern __shared__ __align__(1024) unsigned char smem_bytes[];
  Smem& sm = *reinterpret_cast<Smem*>(smem_bytes);
  constexpr uint32_t kTileBytes = kBlockN * kDim * sizeof(bf16);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wg = warp / 4;
  const int b = blockIdx.x / s.n_q, h = blockIdx.x % s.n_q;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kBlockM;  // the longest rows start first
  // Causal: the block's last row reads keys up to q_end - 1.
  const int q_end = min(q0 + kBlockM, s.seq_len);
  const int n_blocks = (q_end + kBlockN - 1) / kBlockN;

  if (threadIdx.x == 0) {
    sm90::mbarrier_init(&sm.q_full, 1);
    for (int i = 0; i < kStages; ++i) {
      sm90::mbarrier_init(&sm.k_full[i], 1);  // the producer's arrive_expect_tx, plus the bytes
      sm90::mbarrier_init(&sm.v_full[i], 1);
      sm90::mbarrier_init(&sm.k_empty[i], 4 * kConsumers);  // one arrival per consumer warp
      sm90::mbarrier_init(&sm.v_empty[i], 4 * kConsumers);
    }
    sm90::mbarrier_init_fence();
  }
  __syncthreads();

  if (wg == 0) {  // the producer
    sm90::shrink_registers<kProducerRegisters>();
    if (threadIdx.x != 0) return;
    const int hk = h * s.n_k / s.n_q, hv = h * s.n_v / s.n_q;
    sm90::mbarrier_arrive_expect_tx(&sm.q_full, kBlockM * kDim * sizeof(bf16));
    load_tile_tma<kBlockM, kDim>(sm.q, &maps.q, &maps.q_narrow, &sm.q_full, h, q0, b);
    for (int j = 0; j < n_blocks; ++j) {
      const int stage = j % kStages;
      const uint32_t phase = j / kStages % 2;
      sm90::mbarrier_wait(&sm.k_empty[stage], phase ^ 1);
      sm90::mbarrier_arrive_expect_tx(&sm.k_full[stage], kTileBytes);
      load_tile_tma<kBlockN, kDim>(sm.k[stage], &maps.k, &maps.k_narrow, &sm.k_full[stage], hk,
                                   j * kBlockN, b);
      sm90::mbarrier_wait(&sm.v_empty[stage], phase ^ 1);
      sm90::mbarrier_arrive_expect_tx(&sm.v_full[stage], kTileBytes);
      load_tile_tma<kBlockN, kDim>(sm.v[stage], &maps.v, &maps.v_narrow, &sm.v_full[stage], hv,
                                   j * kBlockN, b);
    }
    return;
  }

  sm90::grow_registers<kConsumerRegisters>();
  const int consumer = wg - 1, cwarp = warp - 4;  // this warp's 16 rows: cwarp * 16 on
  const uint32_t my_turn = kTurnBarrier + consumer;
  const uint32_t next_turn = kTurnBarrier + (consumer + 1) % kConsumers;
  // Consumer 0 goes first: the last consumer passes it the turn before its first product.
  if (consumer == kConsumers - 1) sm90::named_barrier_arrive(next_turn, kTurnThreads);

  float o[kDim / 8][4] = {};
  uint32_t pa[kBlockN / 16][4];  // P of the previous key tile, as bf16 A operands
  // This lane's two rows (lane/4 and lane/4 + 8 of the warp's 16): running max (base-2,
  // scaled) and this lane's share of the running sum (the quad adds its shares at the end).
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  const int row_q[2] = {q0 + cwarp * 16 + lane / 4, q0 + cwarp * 16 + lane / 4 + 8};

  // Our turn at the tensor cores, and passing it on once our products are issued.
  auto take_turn = [&] {
    sm90::named_barrier(my_turn, kTurnThreads);
    wgmma_fence();
  };
  auto pass_turn = [&] { sm90::named_barrier_arrive(next_turn, kTurnThreads); };
  // S = Q K_j^T.
  using Scores = float[kBlockN / 8][4];  // S, then P, for the warpgroup's 64 rows x kBlockN keys
  auto issue_s = [&](int j, Scores& sc) {
    const int stage = j % kStages;
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks)
      Wgmma<kBlockN, 0>::ss(sc, k_major_descriptor<kBlockM, kDim>(sm.q, consumer * 64, ks * 16),
                            k_major_descriptor<kBlockN, kDim>(sm.k[stage], 0, ks * 16), ks > 0);
    wgmma_commit();
  };
  // O += P V_j, P being the key tile's softmax in pa. (Its loads are waited for before the
  // turn: a spin loop between two wgmmas would make ptxas serialise them.)
  auto wait_v = [&](int j) { sm90::mbarrier_wait(&sm.v_full[j % kStages], j / kStages % 2); };
  auto issue_pv = [&](int j) {
    const int stage = j % kStages;
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk)
      wgmma_rs_wide<kDim, 1>(o, pa[kk], [&](int n0) {
        return mn_major_descriptor<kBlockN, kDim>(sm.v[stage], kk * 16, n0);
      });
    wgmma_commit();
  };
  // S_j has landed in sc (K_j's stage is free): mask it, and turn it into P with the running
  // statistics; alpha rescales what O holds.
  auto softmax = [&](int j, Scores& sc, float (&alpha)[2]) {
    register_fence(sc);
    if (lane == 0) sm90::mbarrier_arrive(&sm.k_empty[j % kStages]);
    const int k0 = j * kBlockN;
    if (k0 + kBlockN - 1 > q0 + cwarp * 16) {  // tiles on the warp's diagonal (and past T)
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
      const float new_max = fmaxf(row_max[half], mx * s.scale_log2);
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
  auto keep_p = [&](const Scores& sc) {
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) to_a_operand(pa[kk], sc[2 * kk], sc[2 * kk + 1]);
  };

  sm90::mbarrier_wait(&sm.q_full, 0);
  {  // key tile 0: no P V before it
    Scores sc;
    float alpha[2];
    sm90::mbarrier_wait(&sm.k_full[0], 0);
    take_turn();
    issue_s(0, sc);
    pass_turn();
    wgmma_wait<0>();
    softmax(0, sc, alpha);
    keep_p(sc);
  }
  for (int j = 1; j < n_blocks; ++j) {
    Scores sc;
    float alpha[2];
    sm90::mbarrier_wait(&sm.k_full[j % kStages], j / kStages % 2);
    wait_v(j - 1);
    take_turn();
    issue_s(j, sc);
    issue_pv(j - 1);
    pass_turn();
    wgmma_wait<1>();  // S_j done
    softmax(j, sc, alpha);
    wgmma_wait<0>();  // the previous P V has finished: O and pa are ours again
    register_fence(o);
    register_fence(pa);
    if (lane == 0) sm90::mbarrier_arrive(&sm.v_empty[(j - 1) % kStages]);
#pragma unroll
    for (int nt = 0; nt < kDim / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[nt][e] *= alpha[e >> 1];
    keep_p(sc);
  }

  // The last tile's P V, in turn; the last consumer to issue passes no turn on.
  wait_v(n_blocks - 1);
  take_turn();
  issue_pv(n_blocks - 1);
  if (consumer != kConsumers - 1) pass_turn();
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
  const int64_t o_stride = int64_t(s.n_q) * s.d_v;
  store_rows<kDim>(out + int64_t(b) * s.seq_len * o_stride + h * s.d_v, o_stride,
                   q0 + cwarp * 16, s.seq_len, s.d_v, o, 1.0f);
}

// The TMA maps of one call: each of Q, K, V as (d, heads, T, B), boxes of one panel's width.
template <int kDim, int kBlockN>
Maps maps_of(const Tensor& q, const Tensor& k, const Tensor& v, const Dims& s) {
  auto map = [&](const Tensor& t, int heads, int d, uint32_t rows, uint32_t width) {
    return bf16_tensor_map(t.data, {d, heads, s.seq_len, s.batch}, {width, 1, rows, 1},
                           width == 64 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B);
  };
  Maps m;
  m.q = map(q, s.n_q, s.d_qk, kBlockM, 64);
  m.k = map(k, s.n_k, s.d_qk, kBlockN, 64);
  m.v = map(v, s.n_v, s.d_v, kBlockN, 64);
  if constexpr (TileLayout<kBlockM, kDim>::kNarrowPanel) {
    m.q_narrow = map(q, s.n_q, s.d_qk, kBlockM, 32);
    m.k_narrow = map(k, s.n_k, s.d_qk, kBlockN, 32);
    m.v_narrow = map(v, s.n_v, s.d_v, kBlockN, 32);
  } else {
    m.q_narrow = m.q, m.k_narrow = m.k, m.v_narrow = m.v;  // never read
  }
  return m;
}

template <int kDim, int kBlockN, int kStages>
void launch_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, const Dims& s) {
  constexpr int smem = int(sizeof(Shared<kDim, kBlockN, kStages>));
  constexpr auto kernel = attention_forward_kernel<kDim, kBlockN, kStages>;
  allow_dynamic_smem<kernel, smem>();
  dim3 grid(unsigned(s.batch * s.n_q), unsigned(ceil_div(s.seq_len, kBlockM)));
  kernel<<<grid, kThreads, smem, stream()>>>(static_cast<bf16*>(out.data), lse.f32(),
                                             maps_of<kDim, kBlockN>(q, k, v, s), s);
  SIGMA_CUDA_LAUNCHED("attention_forward");
}

}  // namespace
}  // namespace attention

void attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v) {
  using namespace attention;
  const Dims s = dims_of(q, k, v);
  check_supported("attention_forward", s, q);
  switch (padded_dim(s)) {
    // Key tiles of 128 everywhere (64 ran the same at d64: NOTES.md, version 9); three stages
    // where shared memory has room.
    case 64: return launch_forward<64, 128, 3>(out, lse, q, k, v, s);
    case 96: return launch_forward<96, 128, 2>(out, lse, q, k, v, s);
    default: return launch_forward<128, 128, 2>(out, lse, q, k, v, s);
  }
}

}  // namespace sigma::cuda
