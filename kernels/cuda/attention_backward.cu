// Causal DiffQKV attention backward on CUDA (Sigma paper section 2), FlashAttention-2's
// recomputation (Dao 2023, algorithm 2) on Hopper's warpgroup tensor-core instructions
// (wgmma, sm_90a; attention_wgmma.cuh):
//   P = exp(scale S - lse),  dP = dO V^T,  dS = P * (dP - delta),  delta = rowsum(dO * O),
//   dV = P^T dO,  dK = scale dS^T Q,  dQ = scale dS K.
//
// One kernel, five products per tile, deterministic. A block owns 128 keys of one (batch,
// query head), two warpgroups of 64, and loops over the 64-row query tiles that see them,
// keeping dK and dV in registers; each warpgroup computes S^T and dP^T directly (keys as
// rows), so P^T and dS^T feed the dV and dK products as register A operands, and dS^T goes
// to shared memory, where it is the (transposed) A operand of the tile's dQ = dS K.
// Gradients summed across blocks go through fp32 accumulators in global memory: query tiles'
// dQ over their key tiles, and a K (V) head's dK (dV) over the query heads that read it. The
// additions into one accumulator come in a fixed order, kept by turn counters (as
// FlashAttention-3's deterministic mode does): query tiles 2m and 2m+1 take key tiles m,
// m - 1, ..., 0, each adding its part of both with one bulk reduction (TMA) from shared
// memory; a K or V tile takes its query heads in order. The first writer stores, the middle
// ones add, the last adds and writes the bf16 gradient, so the sums, and their bits, do not
// depend on timing. A block only waits for blocks launched before it (a (batch, head)'s key
// tiles go last to first, side by side so that its dQ accumulator stays in L2; heads in
// order), which the hardware starts no later, so every wait ends; and a key tile, having
// fewer query tiles, runs ahead of the next one down. This replaced a dq kernel that
// recomputed S and dP (seven products instead of five: dev/attention/NOTES.md, version 8).
// Every A operand that lives across a loop is read from shared memory (see
// attention_forward.cu). The first k step of each shared-memory product passes scale-d 0, so
// its accumulators are never zeroed and ptxas inserts no wait of its own (NOTES.md, version
// 5). At head dim 64 a writer warp does the dQ additions and turns (see kWriterWarp). Left
// out: dropout, non-causal masks, TMA loads, and FA3's overlap of the elementwise work with
// the other warpgroup's products (the forward has it); at head dim 64 the next tile's S^T and
// dP^T are issued behind this tile's dQ (kScoresAhead).
#include "kernels/cuda/attention_wgmma.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/device.h"

#include <type_traits>

namespace sigma::cuda {
namespace attention {
namespace {

using sm90::bulk_commit;
using sm90::bulk_reduce_add;
using sm90::bulk_store;
using sm90::bulk_wait;
using sm90::bulk_wait_read;

constexpr int kThreads = 256;  // the compute warps: two warpgroups
constexpr int kBlockN = kAttentionKeyTile;    // keys per block (64 per warpgroup)
constexpr int kBlockM = kAttentionQueryTile;  // queries per Q/dO tile (the N of S^T = K Q^T)
static_assert(kBlockN == 128 && kBlockM == 64, "the warpgroup split and the dQ pairs assume these");

// dQ's columns by warpgroup: [0, kDqCols0) and [kDqCols0, kDim). At kDim 64 each takes 32,
// read from a copy of K kept as two 32-wide panels (a wgmma's N never spans part of a
// 128B-swizzled panel); at 96 the split is 64 | 32 (the tile's own panels), at 128, 64 | 64.
template <int kDim>
constexpr int kDqCols0 = kDim == 64 ? 32 : 64;

// At kDim 64 a writer warp takes each pair of dQ tiles the compute warps stage in shared
// memory and adds it into the accumulator under its turn (write_dq), so that waiting for the
// turns, their fences and the bulk additions' completion stay off the compute warps: at d64
// they cost 0.38 ms of 2.52 (dev/attention/NOTES.md, version 10). Registers come per
// warpgroup, so the writer's is a third warpgroup, three of whose warps leave at once;
// setmaxnreg moves its registers to the compute warps. It only moves what the block was given
// at launch (384 x 168, the cap __launch_bounds__ sets), so 128 x 40 + 256 x 232 must not
// exceed that: a larger sum leaves the compute warps waiting for ever. At 96 and 128 the
// compute warps need 250 and 255 registers, which leaves none for a writer, and thread 0 does
// its work between steps.
template <int kDim>
constexpr bool kWriterWarp = kDim == 64;
template <int kDim>
constexpr int kBlockThreads = kThreads + (kWriterWarp<kDim> ? 128 : 0);
constexpr uint32_t kWriterRegisters = 40, kComputeRegisters = 232;
constexpr uint32_t kLaunchRegisters = 65536 / kBlockThreads<64> / 8 * 8;  // 168
static_assert(128 * kWriterRegisters + kThreads * kComputeRegisters <=
              kBlockThreads<64> * kLaunchRegisters);
// At kDim 64 the next query tile's S^T and dP^T products are issued right behind this tile's
// dQ product, so that the tensor cores go on while the warps stage dQ and meet at the step's
// end (d64 backward 2.36 -> 2.24 ms: NOTES.md, version 11); their 64 accumulator registers
// are then live beside dK, dV, dQ and the A operands, which at 96 and 128 would not fit.
template <int kDim>
constexpr bool kScoresAhead = kDim == 64;
// Staged pairs of dQ tiles: two for the writer, which then finishes one while the next is staged.
// A block's u-th pair (u = m - n, its order) goes to buffer u % kStagedPairs; the phase of that
// buffer's full and empty barriers flips each time the pairs come round to it again.
template <int kDim>
constexpr int kStagedPairs = kWriterWarp<kDim> ? 2 : 1;

// K, V, [K as 32-wide panels], 2 x (Q, dO), dS^T, 2 x (lse, delta), staged pairs of dQ tiles
// (fp32), and the staged pairs' full and empty mbarriers.
template <int kDim>
constexpr int smem_bytes() {
  return (2 * kBlockN + (kDim == 64 ? kBlockN : 0) + 4 * kBlockM) * kDim * int(sizeof(bf16)) +
         kBlockN * kBlockM * int(sizeof(bf16)) + 4 * kBlockM * int(sizeof(float)) +
         kStagedPairs<kDim> * 2 * kBlockM * kDim * int(sizeof(float)) +
         2 * kStagedPairs<kDim> * int(sizeof(uint64_t));
}

// Where the kernel sums across blocks, in the attention's workspace (attention_workspace.h):
// fp32 accumulator tiles, dQ per (b, query head, 64-row tile) and dK / dV per (b, K / V head,
// 128-row tile), stored fragment by fragment (fragment_at), and turn counters zeroed before
// the kernel: one per dK / dV tile, one per pair of dQ tiles.
struct Accumulators {
  float *dq, *dk, *dv;
  int *dq_turn, *dk_turn, *dv_turn;
};

__device__ __forceinline__ int read_turn(const int* turn) {
  int seen;
  asm volatile("ld.relaxed.gpu.global.b32 %0, [%1];\n" : "=r"(seen) : "l"(turn) : "memory");
  return seen;
}
// Waits until the turn reaches `value`, `seen` being a read of it made earlier (issued before
// the step's products, so that its latency hides behind them); the fence (acquire) then orders
// the writes of the turn's holders before this block's reads and writes.
__device__ __forceinline__ void wait_turn(const int* turn, int value, int seen) {
  while (seen != value) seen = read_turn(turn);
  asm volatile("fence.acq_rel.gpu;" ::: "memory");
}

// Passes the turn on once this thread's bulk additions are done; the release makes what the
// barrier before ordered visible to the GPU first (it is cumulative).
__device__ __forceinline__ void pass_turn(int* turn) {
  bulk_wait<0>();
  asm volatile("red.release.gpu.global.add.s32 [%0], 1;" ::"l"(turn) : "memory");
}

// A warpgroup thread's accumulator block nt (of kN / 8) in a tile region of kN columns, stored
// fragment by fragment: each access of a warp is 512 contiguous bytes.
template <int kN>
__device__ __forceinline__ float4* fragment_at(float* region, int nt) {
  const int warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  return reinterpret_cast<float4*>(region) + (warp * (kN / 8) + nt) * 32 + lane;
}
template <int kN>
__device__ __forceinline__ void store_fragments(float* region, const float (*acc)[4]) {
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
    *fragment_at<kN>(region, nt) = make_float4(acc[nt][0], acc[nt][1], acc[nt][2], acc[nt][3]);
}
template <int kN>
__device__ __forceinline__ void load_fragments(float (*acc)[4], float* region) {
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt) {
    const float4 v = *fragment_at<kN>(region, nt);
    acc[nt][0] = v.x, acc[nt][1] = v.y, acc[nt][2] = v.z, acc[nt][3] = v.w;
  }
}
// The region += acc, atomically (the turns keep writers apart; atomics skip the read).
template <int kN>
__device__ __forceinline__ void atomic_add_fragments(float* region, const float (*acc)[4]) {
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt)
    atomicAdd(fragment_at<kN>(region, nt),
              make_float4(acc[nt][0], acc[nt][1], acc[nt][2], acc[nt][3]));
}
// acc += the region (global memory, read from L2: other blocks wrote it).
template <int kN>
__device__ __forceinline__ void add_fragments(float (*acc)[4], float* region) {
#pragma unroll
  for (int nt = 0; nt < kN / 8; ++nt) {
    const float4 sum = __ldcg(fragment_at<kN>(region, nt));
    acc[nt][0] += sum.x, acc[nt][1] += sum.y, acc[nt][2] += sum.z, acc[nt][3] += sum.w;
  }
}
// Calls f(std::integral_constant<int, N>) with N the number of dQ columns of warpgroup wg.
template <int kDim, typename F>
__device__ __forceinline__ void with_dq_columns(int wg, F&& f) {
  if (wg == 0) f(std::integral_constant<int, kDqCols0<kDim>>{});
  else f(std::integral_constant<int, kDim - kDqCols0<kDim>>{});
}

// dq = dS K over a block's 128 keys for kN columns of K: dS is read transposed from dS^T in
// shared memory (keys as rows, one 64-wide panel), `b_at(key)` gives K's descriptor.
template <int kN, typename BAt>
__device__ __forceinline__ void ds_times_k(float (*dq)[4], const bf16* ds_s, BAt b_at) {
  wgmma_fence();  // in the branch itself: ptxas fences each path that lacks one (info C7519)
#pragma unroll
  for (int kk = 0; kk < kBlockN / 16; ++kk)
    Wgmma<kN, 1>::ss_mn(dq, mn_major_descriptor<kBlockN, kBlockM>(ds_s, kk * 16, 0),
                        b_at(kk * 16), kk > 0);
}

// A pair of query tiles 2m and 2m + 1 (2m alone at the end of an odd count) as one block adds
// it: `order` key tiles added into it before this one. Its tiles sit back to back in the
// accumulator (`sums`) and in shared memory (`staged`), fragment by fragment (fragment_at).
struct DqPair {
  int tiles, order;
  int* turn;
};

// The staged pair into the accumulator, as one bulk copy once the turn is ours (`seen`: an
// earlier read of it): stored by the first key tile to reach it (the pair's diagonal), added
// by the others. The caller passes the turn on once the copy is done (pass_turn).
template <int kDim>
__device__ __forceinline__ void add_pair(float* sums, const float* staged, const DqPair& pair,
                                         int seen) {
  const uint32_t bytes = pair.tiles * kBlockM * kDim * sizeof(float);
  if (pair.order > 0) {
    wait_turn(pair.turn, pair.order, seen);
    bulk_reduce_add(sums, staged, bytes);
  } else {
    bulk_store(sums, staged, bytes);
  }
  bulk_commit();
}

// delta = rowsum(dO * O), [B, n_q, T]: 16 lanes per (b, t, head) row, 8 columns a load.
__global__ void attention_delta_kernel(float* delta, const bf16* d_out, const bf16* out,
                                       Dims s) {
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 16;
  const int lane = threadIdx.x % 16;
  const int64_t rows = int64_t(s.batch) * s.seq_len * s.n_q;
  float acc = 0.0f;
  if (row < rows) {
    for (int c = lane * 8; c < s.d_v; c += 128) {
      uint4 ov = *reinterpret_cast<const uint4*>(out + row * s.d_v + c);
      uint4 gv = *reinterpret_cast<const uint4*>(d_out + row * s.d_v + c);
      const __nv_bfloat162* o2 = reinterpret_cast<const __nv_bfloat162*>(&ov);
      const __nv_bfloat162* g2 = reinterpret_cast<const __nv_bfloat162*>(&gv);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float2 of = __bfloat1622float2(o2[i]), gf = __bfloat1622float2(g2[i]);
        acc += of.x * gf.x + of.y * gf.y;
      }
    }
  }
#pragma unroll
  for (int offset = 8; offset > 0; offset /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
  if (row < rows && lane == 0) {
    const int64_t h = row % s.n_q, bt = row / s.n_q, b = bt / s.seq_len, t = bt % s.seq_len;
    delta[(b * s.n_q + h) * s.seq_len + t] = acc;
  }
}

// The dQ writer (kWriterWarp, one thread), on key tiles above 0: for each pair of the block in
// order, waits until the compute warps have staged it (`full`), adds it into the accumulator
// under its turn, passes the turn on once the addition is done and frees the staging buffer
// (`empty`). Key tile 0's compute warps sum and write dQ themselves: they hold its tiles in
// registers already, and the writer's 32 lanes reading the sums back ran slower than the
// steps (NOTES.md, version 10).
template <int kDim>
__device__ __forceinline__ void write_dq(const Accumulators& acc, const Dims& s, float* dq_s,
                                         uint64_t* full, uint64_t* empty, int n, int b, int h,
                                         int key_tiles, int query_tiles) {
  const int64_t head = int64_t(b) * s.n_q + h;
  for (int m = n; 2 * m < query_tiles; ++m) {
    const int u = m - n, buffer = u % kStagedPairs<kDim>;
    const DqPair pair{min(2, query_tiles - 2 * m), u, acc.dq_turn + head * key_tiles + m};
    sm90::mbarrier_wait(full + buffer, u / kStagedPairs<kDim> % 2);
    add_pair<kDim>(acc.dq + (head * query_tiles + 2 * m) * kBlockM * kDim,
                   dq_s + buffer * 2 * kBlockM * kDim, pair,
                   pair.order > 0 ? read_turn(pair.turn) : 0);
    pass_turn(pair.turn);
    sm90::mbarrier_arrive(empty + buffer);
  }
}

template <int kDim>
__global__ void __launch_bounds__(kBlockThreads<kDim>, 1)
    attention_backward_kernel(bf16* d_q, bf16* d_k, bf16* d_v, const bf16* d_out,
                              const bf16* q, const bf16* k, const bf16* v, const float* lse,
                              const float* delta, Accumulators acc, Dims s) {
  constexpr int kCols0 = kDqCols0<kDim>;
  extern __shared__ __align__(1024) unsigned char smem[];
  bf16* k_s = reinterpret_cast<bf16*>(smem);
  bf16* v_s = k_s + kBlockN * kDim;
  bf16* k32_s = v_s + kBlockN * kDim;                   // [2][kBlockN][32] (kDim 64)
  bf16* q_s = k32_s + (kDim == 64 ? kBlockN * kDim : 0);  // [2][kBlockM][kDim]
  bf16* do_s = q_s + 2 * kBlockM * kDim;                // [2][kBlockM][kDim]
  bf16* ds_s = do_s + 2 * kBlockM * kDim;               // dS^T: [kBlockN][kBlockM]
  float* lse_s = reinterpret_cast<float*>(ds_s + kBlockN * kBlockM);  // [2][kBlockM]
  float* delta_s = lse_s + 2 * kBlockM;                               // [2][kBlockM]
  // [kStagedPairs][2][kBlockM * kDim], laid out as the accumulator, and its mbarriers.
  float* dq_s = delta_s + 2 * kBlockM;
  uint64_t* dq_full = reinterpret_cast<uint64_t*>(dq_s + kStagedPairs<kDim> * 2 * kBlockM * kDim);
  uint64_t* dq_empty = dq_full + kStagedPairs<kDim>;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Broadcast from lane 0 so that ptxas sees the warpgroup index as uniform across the warp:
  // wgmmas in branches on it are then not serialised (info C7520).
  const int wg = __shfl_sync(0xffffffffu, warp / 4, 0);
  // All key tiles of a (batch, head) run side by side, so that its dQ accumulator (T x kDim
  // floats) stays in L2 while they add into it.
  const int key_tiles = gridDim.x, query_tiles = (s.seq_len + kBlockM - 1) / kBlockM;
  const int n = key_tiles - 1 - blockIdx.x;  // the last key tile first: see the top
  const int b = blockIdx.y / s.n_q, h = blockIdx.y % s.n_q;
  const int hk = h * s.n_k / s.n_q, hv = h * s.n_v / s.n_q;
  const int k0 = n * kBlockN;
  const int64_t q_stride = int64_t(s.n_q) * s.d_qk, k_stride = int64_t(s.n_k) * s.d_qk;
  const int64_t v_stride = int64_t(s.n_v) * s.d_v, o_stride = int64_t(s.n_q) * s.d_v;
  const int64_t row0 = int64_t(b) * s.seq_len;
  const int64_t stat0 = (int64_t(b) * s.n_q + h) * s.seq_len;
  const int key_rows = min(kBlockN, s.seq_len - k0);
  const int i_start = k0 / kBlockM;  // causal: the query tile holding query k0, to the last
  // The compute warps' barrier (the writer warp goes its own way).
  auto sync_compute = [] { sm90::named_barrier(1, kThreads); };
  if constexpr (kWriterWarp<kDim>) {
    if (threadIdx.x == 0) {
      for (int p = 0; p < kStagedPairs<kDim>; ++p) {
        sm90::mbarrier_init(dq_full + p, 1);
        sm90::mbarrier_init(dq_empty + p, 1);
      }
      sm90::mbarrier_init_fence();
    }
    __syncthreads();
    if (threadIdx.x >= kThreads) {
      sm90::shrink_registers<kWriterRegisters>();
      if (threadIdx.x == kThreads && n > 0)
        write_dq<kDim>(acc, s, dq_s, dq_full, dq_empty, n, b, h, key_tiles, query_tiles);
      return;
    }
    sm90::grow_registers<kComputeRegisters>();
  }

  const bf16* k_rows = k + (row0 + k0) * k_stride + hk * s.d_qk;
  load_tile<kBlockN, kDim, kThreads>(k_s, k_rows, k_stride, key_rows, s.d_qk);
  if constexpr (kDim == 64)
    load_panels<kBlockN, 32, 2, kThreads>(k32_s, k_rows, k_stride, key_rows, s.d_qk);
  load_tile<kBlockN, kDim, kThreads>(v_s, v + (row0 + k0) * v_stride + hv * s.d_v, v_stride,
                                     key_rows, s.d_v);
  // Q, dO, lse, delta of query tile i. The strides pass through an empty asm so that the
  // chunk offsets are recomputed per step, not kept live beside S^T, dP^T, dK and dV.
  auto load_step = [&](int i, int stage) {
    int64_t qs = q_stride, os = o_stride;
    asm volatile("" : "+l"(qs), "+l"(os));
    const int t0 = i * kBlockM, rows = min(kBlockM, s.seq_len - t0);
    load_tile<kBlockM, kDim, kThreads>(q_s + stage * kBlockM * kDim,
                                       q + (row0 + t0) * qs + h * s.d_qk, qs, rows, s.d_qk);
    load_tile<kBlockM, kDim, kThreads>(do_s + stage * kBlockM * kDim,
                                       d_out + (row0 + t0) * os + h * s.d_v, os, rows, s.d_v);
    const int r = threadIdx.x % kBlockM;
    const float* src = (threadIdx.x < kBlockM ? lse : delta) + stat0 + t0;
    float* dst = (threadIdx.x < kBlockM ? lse_s : delta_s) + stage * kBlockM + r;
    if (threadIdx.x < 2 * kBlockM) cp_async_4(dst, r < rows ? src + r : src, r < rows);
  };
  load_step(i_start, 0);
  cp_async_commit();
  cp_async_wait_all();
  fence_async_shared();
  sync_compute();

  float dk[kDim / 8][4] = {}, dv[kDim / 8][4] = {};
  // S^T = K Q^T and dP^T = V dO^T of the query tile in `stage`: the warpgroup's 64 keys x
  // kBlockM queries.
  float st[kBlockM / 8][4], dpt[kBlockM / 8][4];
  auto issue_scores = [&](int stage) {
    const bf16* q_t = q_s + stage * kBlockM * kDim;
    const bf16* do_t = do_s + stage * kBlockM * kDim;
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kDim / 16; ++ks) {
      Wgmma<kBlockM, 0>::ss(st, k_major_descriptor<kBlockN, kDim>(k_s, wg * 64, ks * 16),
                            k_major_descriptor<kBlockM, kDim>(q_t, 0, ks * 16), ks > 0);
      Wgmma<kBlockM, 0>::ss(dpt, k_major_descriptor<kBlockN, kDim>(v_s, wg * 64, ks * 16),
                            k_major_descriptor<kBlockM, kDim>(do_t, 0, ks * 16), ks > 0);
    }
    wgmma_commit();
  };
  if constexpr (kScoresAhead<kDim>) issue_scores(0);
  const int key_of_lane = k0 + warp * 16 + lane / 4;  // and key_of_lane + 8
  // Where this warpgroup's fragments (its columns) sit in a dQ tile's accumulator.
  const int64_t dq_region = wg * kBlockM * kCols0;
  int* signal = nullptr;  // thread 0: the turn to pass once the last pair's bulk add is done
  const bool writer = kWriterWarp<kDim> && n > 0;  // the writer warp adds this block's pairs
  for (int i = i_start; i < query_tiles; ++i) {
    const int stage = (i - i_start) % 2, t0 = i * kBlockM;
    if (i + 1 < query_tiles) {
      load_step(i + 1, stage ^ 1);
      cp_async_commit();
    }
    // Key tiles m, m - 1, ..., 0 add into query tiles 2m and 2m + 1 (the rows of key tile m),
    // in that order; the pair shares a turn, and a block adds its part of both at once.
    const int m = i / 2, order = m - n;
    const bool pair_end = i % 2 == 1 || i + 1 == query_tiles;
    const int64_t tile = (int64_t(b) * s.n_q + h) * query_tiles + i;  // its accumulator
    int* const turn = acc.dq_turn + (int64_t(b) * s.n_q + h) * key_tiles + m;
    // Thread 0 reads the turn it waits for, if any, early (issued before the products).
    const int seen = !writer && threadIdx.x == 0 && order > 0 && pair_end ? read_turn(turn) : 0;
    // The writer's staging buffer for this pair, free again once it finished the pair two back.
    const int buffer = order % kStagedPairs<kDim>;
    float* const staged = dq_s + buffer * 2 * kBlockM * kDim;
    const bf16* q_t = q_s + stage * kBlockM * kDim;
    const bf16* do_t = do_s + stage * kBlockM * kDim;
    const float* lse_t = lse_s + stage * kBlockM;
    const float* delta_t = delta_s + stage * kBlockM;

    if constexpr (!kScoresAhead<kDim>) issue_scores(stage);
    wgmma_wait<0>();
    register_fence(st);
    register_fence(dpt);

    // Keys after the query (and queries past T) get P = 0. The tiles off the diagonal and
    // inside T, most of them, take a copy of the loop without the mask's compares (written out:
    // left to the compiler, it made one copy in some builds: NOTES.md, version 10).
    auto softmax_grad = [&](auto masked) {
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
    };
    if (k0 + kBlockN - 1 > t0 || t0 + kBlockM > s.seq_len)
      softmax_grad(std::true_type{});
    else
      softmax_grad(std::false_type{});
    // dV += P^T dO and dK += dS^T Q, the A operands straight from the accumulators; dS^T also
    // to shared memory (rows = keys, one swizzled 64-wide panel) for dQ.
    uint32_t pa[kBlockM / 16][4], da[kBlockM / 16][4];
    const int key_row = warp * 16 + lane / 4;
#pragma unroll
    for (int kk = 0; kk < kBlockM / 16; ++kk) {
      to_a_operand(pa[kk], st[2 * kk], st[2 * kk + 1]);
      to_a_operand(da[kk], dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
      for (int half = 0; half < 2; ++half) {  // columns kk*16 + [0, 8) and + [8, 16)
        const int chunk = 2 * kk + half, at = lane % 4 * 2;
        *reinterpret_cast<uint32_t*>(ds_s + swizzled_chunk<64>(key_row, chunk) + at) =
            da[kk][2 * half];
        *reinterpret_cast<uint32_t*>(ds_s + swizzled_chunk<64>(key_row + 8, chunk) + at) =
            da[kk][2 * half + 1];
      }
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
    // The last pair's bulk add has read the staging buffers this pair's steps rewrite.
    if (!writer && threadIdx.x == 0 && signal) bulk_wait_read<0>();
    if constexpr (kScoresAhead<kDim>) cp_async_wait_all();  // the next tile, for its scores below
    fence_async_shared();  // dS^T (and at 64 that tile's Q and dO) to the tensor cores
    sync_compute();        // dS^T whole: both warpgroups' keys

    // This warpgroup's columns of the tile's dQ = dS K over the block's 128 keys.
    float dq[kCols0 / 8][4];
    if constexpr (kDim > 64) {  // dQ's registers while P^T and dS^T are live would not fit
      wgmma_wait<0>();
      register_fence(pa);
      register_fence(da);
    }
    if constexpr (kDim == 64)
      ds_times_k<32>(dq, ds_s, [&](int kr) {
        return mn_major_panel_descriptor<kBlockN, 32>(k32_s + wg * 32 * kBlockN, kr);
      });
    else if (kDim == 128 || wg == 0)  // at 128 one path: no branch around the wgmmas
      ds_times_k<64>(dq, ds_s, [&](int kr) {
        return mn_major_descriptor<kBlockN, kDim>(k_s, kr, wg * 64);
      });
    else
      ds_times_k<kDim - 64>(dq, ds_s, [&](int kr) {
        return mn_major_descriptor<kBlockN, kDim>(k_s, kr, 64);
      });
    wgmma_commit();
    // The last pair's turn passes on under the products, a step after its bulk add was issued
    // (so that the add has finished; later passes cost more waiting down the line).
    if (!writer && threadIdx.x == 0 && signal) pass_turn(signal);
    signal = nullptr;
    if constexpr (kScoresAhead<kDim>) {
      // Unconditional: wgmmas under a branch get serialised (ptxas C7520). After the last tile
      // they read a stale stage and are discarded (one pair of products in ~32 steps).
      issue_scores(stage ^ 1);
      wgmma_wait<1>();  // this tile's products; the next tile's scores go on
    } else {
      wgmma_wait<0>();
    }
    register_fence(dv);
    register_fence(dk);
    register_fence(dq);
    register_fence(pa);
    register_fence(da);

    // This block's part of the tile goes to shared memory. At the end of a pair the writer
    // warp takes it; without one, thread 0 adds both tiles with one bulk reduction once the
    // turn is ours, or on the last adder (key tile 0) the compute warps add the sums and write
    // dQ. Waiting only at the pair's end leaves the key tile above a step to pass the turn on.
    if (writer && i % 2 == 0 && order >= kStagedPairs<kDim>)
      sm90::mbarrier_wait(dq_empty + buffer, (order / kStagedPairs<kDim> - 1) % 2);  // a round ago
    with_dq_columns<kDim>(wg, [&](auto kN) {
      store_fragments<kN>(staged + i % 2 * kBlockM * kDim + dq_region, dq);
    });
    if (threadIdx.x == 0 && n == 0 && order > 0 && pair_end) wait_turn(turn, order, seen);
    if constexpr (!kScoresAhead<kDim>) {  // (at 64 the next tile landed before its scores)
      cp_async_wait_all();
      fence_async_shared();
    } else if (writer && pair_end) {
      fence_async_shared();  // the staged pair, to the writer's bulk copy
    }
    sync_compute();  // staged (and for key tile 0, the turn is ours); the next tile landed
    if (pair_end && n == 0) {
      for (int p = 0; p <= i % 2; ++p) {
        const int64_t t = tile - i % 2 + p;  // the pair's tiles in order
        const int t0 = (i - i % 2 + p) * kBlockM;
        bf16* dst = d_q + (row0 + t0) * q_stride + h * s.d_qk + wg * kCols0;
        const int row = (warp % 4) * 16, cols = s.d_qk - wg * kCols0;
        with_dq_columns<kDim>(wg, [&](auto kN) {
          load_fragments<kN>(dq, staged + p * kBlockM * kDim + dq_region);
          if (order > 0) add_fragments<kN>(dq, acc.dq + t * kBlockM * kDim + dq_region);
          store_rows<kN>(dst, q_stride, row, s.seq_len - t0, cols, dq, s.scale);
        });
      }
    } else if (pair_end && writer) {
      if (threadIdx.x == 0) sm90::mbarrier_arrive(dq_full + buffer);
    } else if (pair_end && threadIdx.x == 0) {
      add_pair<kDim>(acc.dq + (tile - i % 2) * kBlockM * kDim, staged,
                     DqPair{i % 2 + 1, order, turn}, seen);
      signal = turn;
    }
  }
  if (threadIdx.x == 0 && signal) pass_turn(signal);
  if constexpr (kScoresAhead<kDim>) wgmma_wait<0>();  // the discarded scores

  // dK and dV: the query heads reading one K (V) head add into its tile in head order.
  auto first_head = [&](int head, int n_heads) {  // the first query head reading it
    return (head * s.n_q + n_heads - 1) / n_heads;
  };
  const int k_first = first_head(hk, s.n_k), v_first = first_head(hv, s.n_v);
  const int k_order = h - k_first, k_last = first_head(hk + 1, s.n_k) - 1 - k_first;
  const int v_order = h - v_first, v_last = first_head(hv + 1, s.n_v) - 1 - v_first;
  const int64_t k_tile = (int64_t(b) * s.n_k + hk) * key_tiles + n;
  const int64_t v_tile = (int64_t(b) * s.n_v + hv) * key_tiles + n;
  if (threadIdx.x == 0) {
    if (k_order > 0) wait_turn(acc.dk_turn + k_tile, k_order, read_turn(acc.dk_turn + k_tile));
    if (v_order > 0) wait_turn(acc.dv_turn + v_tile, v_order, read_turn(acc.dv_turn + v_tile));
  }
  sync_compute();
  auto finish = [&](float (*grad)[4], float* region, int order, int last, bf16* dst,
                    int64_t stride, int cols, float scale) {
    region += wg * 64 * kDim;
    if (order == last) {
      if (order > 0) add_fragments<kDim>(grad, region);
      store_rows<kDim>(dst, stride, k0 + warp * 16, s.seq_len, cols, grad, scale);
    } else if (order == 0) {
      store_fragments<kDim>(region, grad);
    } else {
      atomic_add_fragments<kDim>(region, grad);
    }
  };
  finish(dk, acc.dk + k_tile * kBlockN * kDim, k_order, k_last,
         d_k + row0 * k_stride + hk * s.d_qk, k_stride, s.d_qk, s.scale);
  finish(dv, acc.dv + v_tile * kBlockN * kDim, v_order, v_last,
         d_v + row0 * v_stride + hv * s.d_v, v_stride, s.d_v, 1.0f);
  if (k_order < k_last || v_order < v_last) {
    sync_compute();
    if (threadIdx.x == 0) {
      if (k_order < k_last) pass_turn(acc.dk_turn + k_tile);
      if (v_order < v_last) pass_turn(acc.dv_turn + v_tile);
    }
  }
}

// The accumulators and turn counters, in one device buffer that grows to the largest call.
Accumulators accumulators(const Dims& s) {
  const AttentionWorkspace w =
      attention_workspace(s.batch, s.seq_len, s.n_q, s.n_k, s.n_v, s.d_qk, s.d_v);
  static void* data = nullptr;
  static size_t bytes = 0;
  if (w.bytes() > bytes) {
    device::release(data, bytes);
    data = device::allocate(w.bytes());
    bytes = w.bytes();
  }
  Accumulators a;
  a.dq = static_cast<float*>(data);
  a.dk = a.dq + w.dq_floats;
  a.dv = a.dk + w.dk_floats;
  a.dq_turn = reinterpret_cast<int*>(a.dv + w.dv_floats);
  a.dk_turn = a.dq_turn + w.dq_turns;
  a.dv_turn = a.dk_turn + w.dk_turns;
  SIGMA_CUDA_CHECK(cudaMemsetAsync(a.dq_turn, 0, w.turns() * sizeof(int), stream()));
  return a;
}

template <int kDim>
void launch_backward(Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor q, Tensor k,
                     Tensor v, Tensor out, Tensor lse, const Dims& s) {
  auto* delta = static_cast<float*>(scratch());  // [B, n_q, T]
  SIGMA_CHECK(size_t(s.batch) * s.n_q * s.seq_len * sizeof(float) <= kScratchBytes,
              "attention delta [{}, {}, {}] exceeds the CUDA scratch", s.batch, s.n_q, s.seq_len);
  const auto* dop = static_cast<const bf16*>(d_out.data);
  const int64_t rows = int64_t(s.batch) * s.seq_len * s.n_q;
  attention_delta_kernel<<<unsigned(ceil_div(rows * 16, kThreads)), kThreads, 0, stream()>>>(
      delta, dop, static_cast<const bf16*>(out.data), s);
  SIGMA_CUDA_LAUNCHED("attention_delta");

  const Accumulators acc = accumulators(s);
  constexpr int smem = smem_bytes<kDim>();
  allow_dynamic_smem<attention_backward_kernel<kDim>, smem>();
  dim3 grid(unsigned(ceil_div(s.seq_len, kBlockN)), unsigned(s.batch * s.n_q));
  attention_backward_kernel<kDim><<<grid, kBlockThreads<kDim>, smem, stream()>>>(
      static_cast<bf16*>(d_q.data), static_cast<bf16*>(d_k.data), static_cast<bf16*>(d_v.data),
      dop, static_cast<const bf16*>(q.data), static_cast<const bf16*>(k.data),
      static_cast<const bf16*>(v.data), lse.f32(), delta, acc, s);
  SIGMA_CUDA_LAUNCHED("attention_backward");
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
