// Grouped matmul over experts on Hopper: one persistent, warp-specialised wgmma kernel per
// pass, which finds its tiles from tokens_per_expert on the device (no host synchronisation).
// (One file for the kernel and its launch: ~500 lines, most of it the one kernel's parts.)
//
// The three passes are one GEMM template, C [M, N] = A [M, K] B [K, N] per expert:
//   forward      out_e   [rows, O] = inp_e [rows, I]  W_e^T      A K-major, B K-major
//   input grad   d_inp_e [rows, I] = d_out_e [rows, O] W_e        A K-major, B N-major
//   weight grad  dW_e    [O, I]  (+)= d_out_e^T       inp_e       A M-major, B N-major (K = rows)
// wgmma reads either major-ness from shared memory, so no operand is ever transposed in memory.
//
// A CTA is 3 consumer warpgroups and a producer warpgroup. One producer thread loads 192 x 64
// tiles of A and B with TMA into a ring of kStages shared-memory stages (mbarriers "full" and
// "empty" hand them over); each consumer warpgroup multiplies 64 rows of the 192 x 192 output
// tile (wgmma m64n192k16, fp32 accumulators in registers) and writes them out. The grid is one
// CTA per SM; CTA b takes tiles b, b + grid, ... of one list ordered expert by expert, so tiles
// running together share their expert's weight and input rows in L2. Every output element is
// summed by one thread in a fixed order, so the results are deterministic.
//
// Row tiles (forward, input grad) start at each expert's first row, so a tile never mixes
// experts; its rows past the expert's end are computed from whatever rows follow and are not
// stored, and a warpgroup whose 64 rows are all past the end skips its MMAs. The weight
// gradient reduces over an expert's rows in blocks of 64: rows of the last block past the
// expert's end are zeroed in shared memory before the MMA. Experts with no rows get no tiles
// when the weight gradient accumulates (it is left untouched), and tiles that store zeros when
// it is overwritten (GradWrite::kOverwrite, which halves the gradient's traffic). TMA reads
// outside a tensor as zeros, so O and I need not be multiples of the tile, only of 8 (TMA rows
// are multiples of 16 bytes).
// dev/grouped_matmul/README.md has the measurements behind these choices.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/sm90.cuh"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/tensor_map.h"

#include <algorithm>
#include <initializer_list>

namespace sigma::cuda {
namespace {

enum class Pass { kForward, kInputGrad, kWeightGrad };

constexpr int kTileK = 64;     // 64 bf16 = 128 bytes: one row of the 128B swizzle
constexpr int kStages = 4;
constexpr int kBoxBytes = 64 * kTileK * 2;  // 8 KB: a 64 x 64 box, one swizzle column
constexpr int kMaxExperts = 1024;

// A CTA's tile: kConsumers warpgroups of 64 rows each, kTileN columns (the wgmma's N), and a
// producer warpgroup after them. Registers are handed out per 4 warps, so the producer costs a
// warpgroup's worth at launch; it gives most back to the consumers (setmaxnreg), within the
// SM's 64K: 128 threads x (kProducerRegisters + kConsumers x kConsumerRegisters) <= 65536.
template <int kConsumerWarpgroups, int kColumns>
struct TileShape {
  static constexpr int kConsumers = kConsumerWarpgroups;
  static constexpr int kTileM = 64 * kConsumers;
  static constexpr int kTileN = kColumns;
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static constexpr uint32_t kProducerRegisters = 40;
  static constexpr uint32_t kConsumerRegisters = (512 - kProducerRegisters) / kConsumers / 8 * 8;
  static constexpr int kTileABytes = kTileM * kTileK * 2;
  static constexpr int kTileBBytes = kTileN * kTileK * 2;
  static constexpr int kStageBytes = kTileABytes + kTileBBytes;
};
// The ops' tile, 192 x 192 (96 accumulators a thread, 96 FLOP per byte loaded): an expert's
// ~170 rows of the 16K-token top-1 bench fit one row tile, so its weight is read from DRAM
// once (forward 431 against 302 TFLOP/s for Wide there; the two within noise on larger shapes).
using Square = TileShape<3, 192>;
// 128 x 256 (128 accumulators, 85 FLOP per byte), the usual Hopper GEMM tile: the comparison
// in dev/grouped_matmul/bench_tiles.cu.
using Wide = TileShape<2, 256>;

struct Problem {
  const int32_t* tokens_per_expert;
  int experts;
  int rows;     // R
  int m, n, k;  // the fixed extents: forward n = O, k = I; input grad n = I, k = O;
                // weight grad m = O, n = I (k is each expert's rows)
  void* out;    // bf16 [R, n] (forward, input grad) or f32 [E, m, n] (weight grad)
  bool overwrite;  // weight grad: store into out instead of adding to it
};

// What one tile covers. Forward and input grad: output rows [row0, row0 + kTileM) clipped to
// row_end, columns [n0, n0 + kTileN). Weight grad: output [m0, m0 + kTileM) x [n0, n0 + kTileN)
// of expert `expert`, summed over its rows [row0, row_end).
struct Tile {
  int expert, row0, row_end, m0, n0, k_blocks;
};

// The per-CTA view of tokens_per_expert, in shared memory: row_begin[e] (prefix sums of the
// counts) and unit_begin[e] (prefix sums of each expert's work units: kTileM-row tiles, or for
// the weight grad one unit per expert with rows, or per expert when it is overwritten).
template <class T>
struct Schedule {
  const int* count;
  const int* row_begin;
  const int* unit_begin;
  int tiles_per_unit, n_tiles, total;

  template <Pass kPass>
  __device__ Tile locate(int t, const Problem& p) const {
    int unit = t / tiles_per_unit, sub = t % tiles_per_unit;
    int lo = 0, hi = p.experts;  // unit_begin[lo] <= unit < unit_begin[hi]
    while (hi - lo > 1) {
      int mid = (lo + hi) / 2;
      if (unit_begin[mid] <= unit) lo = mid; else hi = mid;
    }
    Tile tile;
    tile.expert = lo;
    tile.row_end = min(row_begin[lo] + count[lo], p.rows);
    if (kPass == Pass::kWeightGrad) {
      tile.row0 = row_begin[lo];
      tile.m0 = sub / n_tiles * T::kTileM;
      tile.n0 = sub % n_tiles * T::kTileN;
      tile.k_blocks = max(0, tile.row_end - tile.row0 + kTileK - 1) / kTileK;
    } else {
      tile.row0 = row_begin[lo] + (unit - unit_begin[lo]) * T::kTileM;
      tile.m0 = 0;
      tile.n0 = sub * T::kTileN;
      tile.k_blocks = (p.k + kTileK - 1) / kTileK;
    }
    return tile;
  }
};

// Shared memory: kStages A tiles, kStages B tiles (1024-byte aligned for the swizzle), the
// barriers, then the expert tables.
template <class T>
struct SharedLayout {
  uint8_t* a;
  uint8_t* b;
  uint64_t* full;
  uint64_t* empty;
  int* count;
  int* row_begin;
  int* unit_begin;

  static constexpr size_t bytes(int experts) {
    return 1024 + size_t(kStages) * T::kStageBytes + 2 * kStages * sizeof(uint64_t) +
           (3 * size_t(experts) + 2) * sizeof(int);
  }
  __device__ SharedLayout(uint8_t* raw, int experts) {
    uintptr_t base = (reinterpret_cast<uintptr_t>(raw) + 1023) & ~uintptr_t(1023);
    a = reinterpret_cast<uint8_t*>(base);
    b = a + kStages * T::kTileABytes;
    full = reinterpret_cast<uint64_t*>(b + kStages * T::kTileBBytes);
    empty = full + kStages;
    count = reinterpret_cast<int*>(empty + kStages);
    row_begin = count + experts;
    unit_begin = row_begin + experts + 1;
  }
};

// Reads the counts and builds the prefix sums (warp 0, 32 experts at a time).
template <class T, Pass kPass>
__device__ Schedule<T> build_schedule(const SharedLayout<T>& s, const Problem& p) {
  for (int e = threadIdx.x; e < p.experts; e += blockDim.x)
    s.count[e] = max(p.tokens_per_expert[e], 0);  // a negative count (bad data) reads as empty
  __syncthreads();
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    int row_carry = 0, unit_carry = 0;
    for (int base = 0; base < p.experts; base += 32) {
      int e = base + lane;
      int rows = e < p.experts ? s.count[e] : 0;
      int units = kPass == Pass::kWeightGrad ? int(rows > 0 || p.overwrite)
                                             : (rows + T::kTileM - 1) / T::kTileM;
      int rows_incl = rows, units_incl = units;
#pragma unroll
      for (int d = 1; d < 32; d *= 2) {
        int r = __shfl_up_sync(0xffffffffu, rows_incl, d);
        int u = __shfl_up_sync(0xffffffffu, units_incl, d);
        if (lane >= d) rows_incl += r, units_incl += u;
      }
      if (e < p.experts) {
        s.row_begin[e] = row_carry + rows_incl - rows;
        s.unit_begin[e] = unit_carry + units_incl - units;
      }
      row_carry += __shfl_sync(0xffffffffu, rows_incl, 31);
      unit_carry += __shfl_sync(0xffffffffu, units_incl, 31);
    }
    if (lane == 0) {
      s.row_begin[p.experts] = row_carry;
      s.unit_begin[p.experts] = unit_carry;
    }
  }
  __syncthreads();
  Schedule<T> sched;
  sched.count = s.count;
  sched.row_begin = s.row_begin;
  sched.unit_begin = s.unit_begin;
  int m_tiles = (p.m + T::kTileM - 1) / T::kTileM;
  sched.n_tiles = (p.n + T::kTileN - 1) / T::kTileN;
  sched.tiles_per_unit = kPass == Pass::kWeightGrad ? m_tiles * sched.n_tiles : sched.n_tiles;
  sched.total = s.unit_begin[p.experts] * sched.tiles_per_unit;
  return sched;
}

// The producer: one thread fills the stages with TMA copies, tile after tile.
template <class T, Pass kPass>
__device__ void produce(const CUtensorMap* map_a, const CUtensorMap* map_b,
                        const SharedLayout<T>& s, const Schedule<T>& sched, const Problem& p) {
  int stage = 0;
  uint32_t phase = 0;
  for (int t = blockIdx.x; t < sched.total; t += gridDim.x) {
    const Tile tile = sched.template locate<kPass>(t, p);
    for (int kb = 0; kb < tile.k_blocks; ++kb) {
      sm90::mbarrier_wait(&s.empty[stage], phase ^ 1);
      sm90::mbarrier_arrive_expect_tx(&s.full[stage], T::kStageBytes);
      uint8_t* a = s.a + stage * T::kTileABytes;
      uint8_t* b = s.b + stage * T::kTileBBytes;
      uint64_t* bar = &s.full[stage];
      const int k0 = kb * kTileK;
      if (kPass == Pass::kForward) {
        sm90::tma_load_2d(a, map_a, bar, k0, tile.row0);             // inp [R, I]
        sm90::tma_load_3d(b, map_b, bar, k0, tile.n0, tile.expert);  // W [E, O, I]
      } else if (kPass == Pass::kInputGrad) {
        sm90::tma_load_2d(a, map_a, bar, k0, tile.row0);  // d_out [R, O]
        for (int q = 0; q < T::kTileN / 64; ++q)          // W [E, O, I], read N-major
          sm90::tma_load_3d(b + q * kBoxBytes, map_b, bar, tile.n0 + 64 * q, k0, tile.expert);
      } else {
        const int row = tile.row0 + k0;
        for (int q = 0; q < T::kTileM / 64; ++q)  // d_out [R, O], read M-major
          sm90::tma_load_2d(a + q * kBoxBytes, map_a, bar, tile.m0 + 64 * q, row);
        for (int q = 0; q < T::kTileN / 64; ++q)  // inp [R, I], read N-major
          sm90::tma_load_2d(b + q * kBoxBytes, map_b, bar, tile.n0 + 64 * q, row);
      }
      if (++stage == kStages) stage = 0, phase ^= 1;
    }
  }
}

// Weight grad: rows of the last K block past the expert's end belong to other experts (or lie
// past R); zero them in both operands so they add nothing (not even NaN times zero).
template <class T>
__device__ void zero_rows_past_end(uint8_t* a, uint8_t* b, int valid_rows, int consumer_thread) {
  constexpr int kBoxesA = T::kTileM / 64, kBoxes = kBoxesA + T::kTileN / 64;
  const int rows = kTileK - valid_rows, chunks = rows * 8;  // 16-byte chunks per box
  for (int i = consumer_thread; i < kBoxes * chunks; i += 128 * T::kConsumers) {
    int box = i / chunks, r = valid_rows + i % chunks / 8, c = i % 8;
    uint8_t* base = box < kBoxesA ? a + box * kBoxBytes : b + (box - kBoxesA) * kBoxBytes;
    // The swizzle permutes chunks within a 128-byte row, so whole rows stay whole rows.
    *reinterpret_cast<uint4*>(base + r * 128 + c * 16) = make_uint4(0, 0, 0, 0);
  }
  sm90::fence_async_shared();
  sm90::named_barrier(1, 128 * T::kConsumers);
}

// bf16 output rows of this warpgroup, clipped to the expert's rows and to n. A lane holds two
// adjacent columns of each 8-column block (acc[4 j + 2 h ..]: row lane/4 + 8 h, columns
// 8 j + 2 (lane % 4) ..); the four lanes of a quad trade them (a 4 x 4 transpose in three
// shuffle rounds) so that each stores whole 16-byte blocks: a warp's store then fills 64
// contiguous bytes of each of its 8 rows, against 16 with one bf16 pair a lane (4x fewer
// store instructions, whole sectors).
template <class T>
__device__ void store_rows(const float (&acc)[T::kTileN / 2], const Tile& tile, const Problem& p,
                           int wg, int thread) {
  static_assert(T::kTileN % 32 == 0, "column blocks come in quads");
  auto* out = static_cast<__nv_bfloat16*>(p.out);
  const int lane = thread % 32, q = lane % 4;
  const int row = tile.row0 + 64 * wg + 16 * (thread / 32) + lane / 4;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const bool row_valid = row + 8 * h < tile.row_end;
    __nv_bfloat16* dst = out + int64_t(row + 8 * h) * p.n;
#pragma unroll
    for (int g = 0; g < T::kTileN / 32; ++g) {
      // mine[b]: this lane's pair of block 4 g + b; chunk[k]: lane k's pair of block 4 g + q.
      uint32_t mine[4], chunk[4];
#pragma unroll
      for (int b = 0; b < 4; ++b)
        mine[b] = sm90::pack_bf16(acc[4 * (4 * g + b) + 2 * h], acc[4 * (4 * g + b) + 2 * h + 1]);
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        // Round r pairs lane q with lane q ^ r: each sends its pair of the other's block.
        const int other = q ^ r;
        const uint32_t send =
            other == 0 ? mine[0] : other == 1 ? mine[1] : other == 2 ? mine[2] : mine[3];
        const uint32_t got = r == 0 ? send : __shfl_xor_sync(0xffffffffu, send, r);
        if (other == 0) chunk[0] = got;
        if (other == 1) chunk[1] = got;
        if (other == 2) chunk[2] = got;
        if (other == 3) chunk[3] = got;
      }
      const int col = tile.n0 + 8 * (4 * g + q);
      if (row_valid && col < p.n)
        *reinterpret_cast<uint4*>(dst + col) = make_uint4(chunk[0], chunk[1], chunk[2], chunk[3]);
    }
  }
}

// dW_e[m, n] = acc (overwrite) or dW_e[m, n] += acc as fire-and-forget vector adds done in L2
// (red.global.add.v2.f32): the SM never waits on the gradient's round trip, which with 96-128
// registers of accumulators left too few loads in flight to cover. Each element gets exactly
// one add per call, so the result is deterministic; the L2 adder flushes subnormal sums to zero.
template <class T>
__device__ void write_weight_grad(const float (&acc)[T::kTileN / 2], const Tile& tile,
                                  const Problem& p, int wg, int thread) {
  float* dw = static_cast<float*>(p.out) + int64_t(tile.expert) * p.m * p.n;
  const int row = tile.m0 + 64 * wg + 16 * (thread / 32) + thread % 32 / 4;
  const int col = tile.n0 + 2 * (thread % 4);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (row + 8 * h >= p.m) continue;
    float* dst = dw + int64_t(row + 8 * h) * p.n;
#pragma unroll
    for (int j = 0; j < T::kTileN / 8; ++j) {
      if (col + 8 * j >= p.n) continue;
      float2 value = make_float2(acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
      auto* target = reinterpret_cast<float2*>(dst + col + 8 * j);
      if (p.overwrite)
        *target = value;
      else
        atomicAdd(target, value);
    }
  }
}

// The consumers' walk through the stage ring, one K block at a time.
struct Ring {
  int stage = 0;
  uint32_t phase = 0;
  __device__ void advance() {
    if (++stage == kStages) stage = 0, phase ^= 1;
  }
};

// One warp's share of handing a stage back to the producer (the empty barrier counts warps).
__device__ void release(uint64_t* empty) {
  __syncwarp();
  if (threadIdx.x % 32 == 0) sm90::mbarrier_arrive(empty);
}

// One tile's K loop for warpgroup wg: wgmma on each stage as it fills, one group kept in
// flight, each stage released once its MMAs are done. The accumulators live only in here, so
// the compiler sees no wgmma result crossing a branch (it would serialise them: ptxas C7518).
template <class T, Pass kPass>
__device__ void multiply_tile(const SharedLayout<T>& s, const Tile& tile, const Problem& p,
                              int wg, Ring& ring) {
  constexpr int kTransA = kPass == Pass::kWeightGrad ? 1 : 0;
  constexpr int kTransB = kPass == Pass::kForward ? 0 : 1;
  // Descriptor steps per 16-wide K step (>> 4 already): K-major moves 32 bytes along the row,
  // MN-major 16 rows of 128 bytes. MN-major operands span boxes of 64 columns, kBoxBytes apart.
  constexpr uint32_t kStepA = kTransA ? 2048 >> 4 : 32 >> 4;
  constexpr uint32_t kStepB = kTransB ? 2048 >> 4 : 32 >> 4;
  float acc[T::kTileN / 2];
  int previous = -1;
  for (int kb = 0; kb < tile.k_blocks; ++kb) {
    sm90::mbarrier_wait(&s.full[ring.stage], ring.phase);
    uint8_t* a = s.a + ring.stage * T::kTileABytes;
    uint8_t* b = s.b + ring.stage * T::kTileBBytes;
    if (kPass == Pass::kWeightGrad) {
      int valid = tile.row_end - tile.row0 - kb * kTileK;
      if (valid < kTileK) zero_rows_past_end<T>(a, b, valid, threadIdx.x);
    }
    // Warpgroup wg's 64 rows of A: rows 64 wg.. of a K-major tile, or the wg-th box of an
    // M-major one; both start kBoxBytes * wg in.
    uint64_t desc_a = sm90::matrix_descriptor(sm90::smem_address(a + wg * kBoxBytes), kBoxBytes, 1024);
    uint64_t desc_b = sm90::matrix_descriptor(sm90::smem_address(b), kBoxBytes, 1024);
    sm90::fence_accumulators(acc);
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kTileK / 16; ++kk)
      sm90::wgmma<T::kTileN, kTransA, kTransB>(acc, desc_a + kk * kStepA, desc_b + kk * kStepB,
                                               kb > 0 || kk > 0);
    sm90::wgmma_commit();
    sm90::wgmma_wait<1>();  // the previous stage's MMAs are done: hand it back
    if (previous >= 0) release(&s.empty[previous]);
    previous = ring.stage;
    ring.advance();
  }
  sm90::wgmma_wait<0>();
  sm90::fence_accumulators(acc);
  if (previous >= 0) release(&s.empty[previous]);
  if (tile.k_blocks == 0) return;
  const int thread = threadIdx.x % 128;
  if (kPass == Pass::kWeightGrad)
    write_weight_grad<T>(acc, tile, p, wg, thread);
  else
    store_rows<T>(acc, tile, p, wg, thread);
}

// The consumer warpgroups (wg 0 .. kConsumers - 1, 64 rows of each tile apiece). A warpgroup
// whose rows all lie past the expert's end only passes the stages through.
template <class T, Pass kPass>
__device__ void consume(const SharedLayout<T>& s, const Schedule<T>& sched, const Problem& p,
                        int wg) {
  Ring ring;
  for (int t = blockIdx.x; t < sched.total; t += gridDim.x) {
    const Tile tile = sched.template locate<kPass>(t, p);
    if (kPass == Pass::kWeightGrad && tile.k_blocks == 0) {  // an overwritten expert with no rows
      const float zeros[T::kTileN / 2] = {};
      write_weight_grad<T>(zeros, tile, p, wg, threadIdx.x % 128);
    } else if (kPass == Pass::kWeightGrad || tile.row0 + 64 * wg < tile.row_end) {
      multiply_tile<T, kPass>(s, tile, p, wg, ring);
    } else {
      for (int kb = 0; kb < tile.k_blocks; ++kb) {
        sm90::mbarrier_wait(&s.full[ring.stage], ring.phase);
        release(&s.empty[ring.stage]);
        ring.advance();
      }
    }
  }
}

template <class T, Pass kPass>
__global__ void __launch_bounds__(T::kThreads, 1)
    grouped_matmul_kernel(const __grid_constant__ CUtensorMap map_a,
                          const __grid_constant__ CUtensorMap map_b, const Problem p) {
  extern __shared__ uint8_t shared_raw[];
  const SharedLayout<T> s(shared_raw, p.experts);
  if (threadIdx.x == 0) {
    for (int i = 0; i < kStages; ++i) {
      sm90::mbarrier_init(&s.full[i], 1);  // the producer's arrive_expect_tx, plus the bytes
      sm90::mbarrier_init(&s.empty[i], 4 * T::kConsumers);  // one arrival per consumer warp
    }
    sm90::mbarrier_init_fence();
  }
  const Schedule<T> sched = build_schedule<T, kPass>(s, p);  // synchronises the CTA
  // Broadcast from lane 0 so the compiler sees the warpgroup index as warp-uniform; otherwise
  // it serialises the wgmmas under any branch that depends on it (ptxas C7518).
  const int wg = __shfl_sync(0xffffffffu, int(threadIdx.x / 128), 0);
  if (wg < T::kConsumers) {
    sm90::grow_registers<T::kConsumerRegisters>();
    consume<T, kPass>(s, sched, p, wg);
  } else {
    sm90::shrink_registers<T::kProducerRegisters>();
    if (threadIdx.x == 128 * T::kConsumers) produce<T, kPass>(&map_a, &map_b, s, sched, p);
  }
}

// A map over a row-major bf16 tensor (sizes innermost first) read in boxes of 64 x box_rows
// (x 1): one 128-byte swizzle row per box row.
CUtensorMap tensor_map(const void* data, std::initializer_list<int64_t> sizes,
                       uint32_t box_rows) {
  return bf16_tensor_map(data, sizes, {64, box_rows}, CU_TENSOR_MAP_SWIZZLE_128B);
}

template <class T, Pass kPass>
void launch(const CUtensorMap& a, const CUtensorMap& b, const Problem& p, int64_t max_tiles) {
  allow_dynamic_smem<grouped_matmul_kernel<T, kPass>, int(SharedLayout<T>::bytes(kMaxExperts))>();
  int grid = int(std::min<int64_t>(num_sms(), max_tiles));
  grouped_matmul_kernel<T, kPass>
      <<<grid, T::kThreads, SharedLayout<T>::bytes(p.experts), stream()>>>(a, b, p);
  SIGMA_CUDA_LAUNCHED("grouped_matmul_kernel");
}

// The limits of this kernel (dispatch.cpp has checked the shapes and dtypes).
void check_limits(const Tensor& inp, const Tensor& weight) {
  int64_t e = weight.size(0), o = weight.size(1), i = weight.size(2);
  if (o % 8 != 0 || i % 8 != 0)
    fail("grouped_matmul on CUDA needs in and out features that are multiples of 8, got {} -> {}",
         i, o);
  SIGMA_CHECK(e >= 1 && e <= kMaxExperts, "grouped_matmul: {} experts (1 to {} supported)", e,
              kMaxExperts);
  SIGMA_CHECK(inp.size(0) < (int64_t(1) << 31) && o < (1 << 30) && i < (1 << 30),
              "grouped_matmul: {} rows of {} -> {} exceed int32 indexing", inp.size(0), i, o);
}

Problem problem(const Tensor& inp, const Tensor& weight, const Tensor& tokens_per_expert,
                int m, int n, int k, void* out, bool overwrite = false) {
  return {static_cast<const int32_t*>(tokens_per_expert.data), int(weight.size(0)),
          int(inp.size(0)), m, n, k, out, overwrite};
}

// The ops with tile shape T (the ops below use Square; dev/grouped_matmul/ times both).
template <class T>
void forward_with(Tensor out, Tensor inp, Tensor weight, Tensor tokens_per_expert) {
  check_limits(inp, weight);
  int64_t e = weight.size(0), o = weight.size(1), i = weight.size(2), r = inp.size(0);
  if (r == 0) return;
  CUtensorMap a = tensor_map(inp.data, {i, r}, T::kTileM);
  CUtensorMap b = tensor_map(weight.data, {i, o, e}, T::kTileN);
  launch<T, Pass::kForward>(a, b,
                            problem(inp, weight, tokens_per_expert, 0, int(o), int(i), out.data),
                            (ceil_div(r, T::kTileM) + e) * ceil_div(o, T::kTileN));
}

template <class T>
void backward_with(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                   Tensor tokens_per_expert, GradWrite write) {
  check_limits(inp, weight);
  int64_t e = weight.size(0), o = weight.size(1), i = weight.size(2), r = inp.size(0);
  const bool overwrite = write == GradWrite::kOverwrite;
  if (r == 0) {  // no rows at all: a zero gradient
    if (overwrite)
      SIGMA_CUDA_CHECK(cudaMemsetAsync(d_weight.data, 0, d_weight.bytes(), stream()));
    return;
  }
  if (d_inp.defined()) {
    CUtensorMap a = tensor_map(d_out.data, {o, r}, T::kTileM);
    CUtensorMap b = tensor_map(weight.data, {i, o, e}, 64);
    launch<T, Pass::kInputGrad>(
        a, b, problem(inp, weight, tokens_per_expert, 0, int(i), int(o), d_inp.data),
        (ceil_div(r, T::kTileM) + e) * ceil_div(i, T::kTileN));
  }
  CUtensorMap a = tensor_map(d_out.data, {o, r}, 64);
  CUtensorMap b = tensor_map(inp.data, {i, r}, 64);
  launch<T, Pass::kWeightGrad>(
      a, b, problem(inp, weight, tokens_per_expert, int(o), int(i), 0, d_weight.data, overwrite),
      e * ceil_div(o, T::kTileM) * ceil_div(i, T::kTileN));
}

}  // namespace

void grouped_matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor tokens_per_expert) {
  forward_with<Square>(out, inp, weight, tokens_per_expert);
}

void grouped_matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp,
                             Tensor weight, Tensor tokens_per_expert, GradWrite write) {
  backward_with<Square>(d_inp, d_weight, d_out, inp, weight, tokens_per_expert, write);
}

}  // namespace sigma::cuda
