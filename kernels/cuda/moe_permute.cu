// MoE dispatch on CUDA: the routing map (a stable counting sort made on the device), the
// step's running counts, and permute / unpermute of token rows with their backward passes.
//
// The routing map is one block: each warp takes a contiguous segment of the (token, k)
// assignments, counts them per expert (__match_any_sync groups the lanes that chose one
// expert), the block scans the counts (over warps, then over experts), and each warp walks
// its segment again to place every assignment at its expert's next free row. Rows within an
// expert so follow assignment order, exactly as the CPU's counting sort: the map is
// deterministic and identical to the CPU's. One block suffices for N * K up to a few
// hundred thousand (two passes over <= 1 MB of i32 from one SM, plus the scan), and needs no
// second launch or global scratch.
// Token rows move 16 bytes per load where the row width allows (8 bf16 or 4 fp32), with fp32
// arithmetic; the weighted sums run in k order with rounded (unfused) products, so fp32
// rows give the CPU's bits. Leaves out: capacity factors and dropping.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

namespace sigma::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kRowThreads = 128;  // a token's row: 1536 bf16 columns are 192 packs
constexpr int kMapThreads = 1024;
constexpr int kMapSharedInts = 12288;  // 48 KiB of counters
constexpr int kUnroll = 8;             // batches of 32 assignments in flight per warp

// --- routing map ------------------------------------------------------------------------

// cnt [warps][E]: a warp's count per expert, then (after the scan) its first row per expert;
// start [E]: each expert's first row.
__global__ void routing_map_kernel(int32_t* row_of, int32_t* tokens_per_expert,
                                   const int32_t* experts, int64_t assignments, int e,
                                   int warps) {
  extern __shared__ int32_t shared[];
  int32_t* cnt = shared;
  int32_t* start = shared + warps * e;
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int i = threadIdx.x; i < warps * e; i += blockDim.x) cnt[i] = 0;
  __syncthreads();
  int64_t segment = (assignments + warps - 1) / warps;
  int64_t begin = std::min<int64_t>(assignments, warp * segment);
  int64_t end = std::min<int64_t>(assignments, begin + segment);
  int32_t* my = cnt + warp * e;
  // kUnroll batches of 32 assignments, loaded together so their latencies overlap; -1 past
  // the segment. Experts come from router_topk (always in range); a bad id is skipped.
  auto load_tile = [&](int32_t (&x)[kUnroll], int64_t tile) {
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) {
      int64_t a = tile + j * 32 + lane;
      x[j] = a < end ? experts[a] : -1;
      if (x[j] >= e) x[j] = -1;
    }
  };
  if (warp < warps) {
    for (int64_t tile = begin; tile < end; tile += 32 * kUnroll) {
      int32_t x[kUnroll];
      load_tile(x, tile);
#pragma unroll
      for (int j = 0; j < kUnroll; ++j) {
        unsigned peers = __match_any_sync(0xffffffffu, x[j]);
        if (x[j] >= 0 && lane == __ffs(peers) - 1) my[x[j]] += __popc(peers);
      }
    }
  }
  __syncthreads();
  // Per expert: exclusive prefix over warps (segment order), then the expert's total.
  for (int x = threadIdx.x; x < e; x += blockDim.x) {
    int32_t running = 0;
    for (int w = 0; w < warps; ++w) {
      int32_t c = cnt[w * e + x];
      cnt[w * e + x] = running;
      running += c;
    }
    start[x] = running;
    tokens_per_expert[x] = running;
  }
  __syncthreads();
  // Exclusive scan of the totals over experts, 32 at a time by warp 0.
  if (warp == 0) {
    int32_t carry = 0;
    for (int base = 0; base < e; base += 32) {
      int x = base + lane;
      int32_t v = x < e ? start[x] : 0, inclusive = v;
      for (int offset = 1; offset < 32; offset *= 2) {
        int32_t up = __shfl_up_sync(0xffffffffu, inclusive, offset);
        if (lane >= offset) inclusive += up;
      }
      if (x < e) start[x] = carry + inclusive - v;
      carry += __shfl_sync(0xffffffffu, inclusive, 31);
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < warps * e; i += blockDim.x) cnt[i] += start[i % e];
  __syncthreads();
  if (warp < warps) {
    unsigned below = (1u << lane) - 1;
    for (int64_t tile = begin; tile < end; tile += 32 * kUnroll) {
      int32_t x[kUnroll];
      load_tile(x, tile);
#pragma unroll
      for (int j = 0; j < kUnroll; ++j) {
        unsigned peers = __match_any_sync(0xffffffffu, x[j]);
        int32_t next = x[j] >= 0 ? my[x[j]] : 0;
        if (x[j] >= 0) row_of[tile + j * 32 + lane] = next + __popc(peers & below);
        __syncwarp();
        if (x[j] >= 0 && lane == __ffs(peers) - 1) my[x[j]] = next + __popc(peers);
        __syncwarp();
      }
    }
  }
}

__global__ void counts_accumulate_kernel(int32_t* total, const int32_t* counts, int64_t n) {
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i < n) total[i] += counts[i];
}

// --- token rows ------------------------------------------------------------------------------

// V consecutive elements, loaded and stored as one access (16 bytes when V = 16 / sizeof(T)).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ void load(float (&out)[V], const T* p) {
  Pack<T, V> pack = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int j = 0; j < V; ++j) out[j] = to_float(pack.v[j]);
}

template <typename T, int V>
__device__ __forceinline__ void store(T* p, const float (&in)[V]) {
  Pack<T, V> pack;
#pragma unroll
  for (int j = 0; j < V; ++j) pack.v[j] = from_float<T>(in[j]);
  *reinterpret_cast<Pack<T, V>*>(p) = pack;
}

// The row kernels below run one block per token t, each thread V columns at a time.

// out[row_of[n, k]] = inp[n] for every k.
template <typename T, int V>
__global__ void permute_forward_kernel(T* out, const T* inp, const int32_t* row_of, int64_t d,
                                       int k) {
  int64_t t = blockIdx.x;
  for (int64_t c = int64_t(threadIdx.x) * V; c < d; c += int64_t(blockDim.x) * V) {
    Pack<T, V> pack = *reinterpret_cast<const Pack<T, V>*>(inp + t * d + c);
    for (int j = 0; j < k; ++j)
      *reinterpret_cast<Pack<T, V>*>(out + int64_t(row_of[t * k + j]) * d + c) = pack;
  }
}

// d_inp[n] = sum_k d_out[row_of[n, k]], k in order.
template <typename T, int V>
__global__ void permute_backward_kernel(T* d_inp, const T* d_out, const int32_t* row_of,
                                        int64_t d, int k) {
  int64_t t = blockIdx.x;
  for (int64_t c = int64_t(threadIdx.x) * V; c < d; c += int64_t(blockDim.x) * V) {
    float acc[V], row[V];
    load<T, V>(acc, d_out + int64_t(row_of[t * k]) * d + c);
    for (int j = 1; j < k; ++j) {
      load<T, V>(row, d_out + int64_t(row_of[t * k + j]) * d + c);
#pragma unroll
      for (int m = 0; m < V; ++m) acc[m] = __fadd_rn(acc[m], row[m]);
    }
    store<T, V>(d_inp + t * d + c, acc);
  }
}

// out[n] = sum_k probs[n, k] * inp[row_of[n, k]], k in order.
template <typename T, int V>
__global__ void unpermute_forward_kernel(T* out, const T* inp, const int32_t* row_of,
                                         const float* probs, int64_t d, int k) {
  int64_t t = blockIdx.x;
  for (int64_t c = int64_t(threadIdx.x) * V; c < d; c += int64_t(blockDim.x) * V) {
    float acc[V] = {}, row[V];
    for (int j = 0; j < k; ++j) {
      float w = probs[t * k + j];
      load<T, V>(row, inp + int64_t(row_of[t * k + j]) * d + c);
#pragma unroll
      for (int m = 0; m < V; ++m) acc[m] = __fadd_rn(acc[m], __fmul_rn(w, row[m]));
    }
    store<T, V>(out + t * d + c, acc);
  }
}

// One warp per assignment (n, k): d_inp[row] = probs[n, k] * d_out[n], and
// d_probs[n, k] = <d_out[n], inp[row]> (fp32 per lane, then a fixed shuffle tree).
template <typename T, int V>
__global__ void unpermute_backward_kernel(T* d_inp, float* d_probs, const T* d_out, const T* inp,
                                          const int32_t* row_of, const float* probs,
                                          int64_t assignments, int64_t d, int k) {
  int64_t a = blockIdx.x * int64_t(kThreads / 32) + threadIdx.x / 32;
  int lane = threadIdx.x % 32;
  if (a >= assignments) return;
  int64_t t = a / k, row = row_of[a];
  float w = probs[a], dot = 0;
  for (int64_t c = int64_t(lane) * V; c < d; c += 32 * V) {
    float g[V], y[V], out[V];
    load<T, V>(g, d_out + t * d + c);
    load<T, V>(y, inp + row * d + c);
#pragma unroll
    for (int m = 0; m < V; ++m) {
      out[m] = __fmul_rn(w, g[m]);
      dot += g[m] * y[m];
    }
    store<T, V>(d_inp + row * d + c, out);
  }
  for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
  if (lane == 0) d_probs[a] = dot;
}

// 16-byte accesses when every row starts on a 16-byte boundary.
template <typename T>
bool use_packs(int64_t d, std::initializer_list<const void*> pointers) {
  constexpr int v = 16 / sizeof(T);
  if (d % v != 0) return false;
  for (const void* p : pointers)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

template <typename T>
struct Rows {
  using type = T;
};
template <int V>
using Width = std::integral_constant<int, V>;

// Calls launch(Rows<T>, Width<V>) with the token rows' storage type and pack width.
template <typename Launch>
void with_rows(DType dtype, int64_t d, std::initializer_list<const void*> pointers,
               Launch&& launch) {
  SIGMA_DISPATCH_FLOAT(dtype, T, {
    if (use_packs<T>(d, pointers))
      launch(Rows<T>{}, Width<16 / sizeof(T)>{});
    else
      launch(Rows<T>{}, Width<1>{});
  });
}

void check_rows(const char* op, std::initializer_list<Tensor> rows) {
  for (const Tensor& t : rows)
    SIGMA_CHECK(t.dtype == rows.begin()->dtype, "{}: token rows in {} and {}", op,
                dtype_name(rows.begin()->dtype), dtype_name(t.dtype));
}

}  // namespace

void moe_routing_map(Tensor row_of, Tensor tokens_per_expert, Tensor experts) {
  int64_t assignments = experts.numel();
  int e = int(tokens_per_expert.numel());
  SIGMA_CHECK(e >= 1 && 2 * e <= kMapSharedInts, "moe_routing_map: {} experts (at most {})", e,
              kMapSharedInts / 2);
  SIGMA_CHECK(assignments < (int64_t(1) << 31), "moe_routing_map: {} assignments", assignments);
  // One counter row per warp plus the experts' starts, in 48 KiB.
  int warps = std::min(kMapThreads / 32, kMapSharedInts / e - 1);
  size_t shared = size_t(warps + 1) * size_t(e) * sizeof(int32_t);
  routing_map_kernel<<<1, kMapThreads, shared, stream()>>>(
      row_of.i32(), tokens_per_expert.i32(), experts.i32(), assignments, e, warps);
  SIGMA_CUDA_LAUNCHED("moe_routing_map");
}

void moe_counts_accumulate(Tensor total, Tensor counts) {
  int64_t n = total.numel();
  counts_accumulate_kernel<<<unsigned(ceil_div(n, kThreads)), kThreads, 0, stream()>>>(
      total.i32(), counts.i32(), n);
  SIGMA_CUDA_LAUNCHED("moe_counts_accumulate");
}

void moe_permute_forward(Tensor out, Tensor inp, Tensor row_of) {
  check_rows("moe_permute_forward", {out, inp});
  int64_t d = inp.size(-1), n = inp.numel() / d;
  int k = int(row_of.numel() / n);
  with_rows(inp.dtype, d, {out.data, inp.data}, [&](auto rows, auto width) {
    using T = typename decltype(rows)::type;
    constexpr int V = decltype(width)::value;
    permute_forward_kernel<T, V><<<unsigned(n), kRowThreads, 0, stream()>>>(
        static_cast<T*>(out.data), static_cast<const T*>(inp.data), row_of.i32(), d, k);
  });
  SIGMA_CUDA_LAUNCHED("moe_permute_forward");
}

void moe_permute_backward(Tensor d_inp, Tensor d_out, Tensor row_of) {
  check_rows("moe_permute_backward", {d_inp, d_out});
  int64_t d = d_inp.size(-1), n = d_inp.numel() / d;
  int k = int(row_of.numel() / n);
  with_rows(d_inp.dtype, d, {d_inp.data, d_out.data}, [&](auto rows, auto width) {
    using T = typename decltype(rows)::type;
    constexpr int V = decltype(width)::value;
    permute_backward_kernel<T, V><<<unsigned(n), kRowThreads, 0, stream()>>>(
        static_cast<T*>(d_inp.data), static_cast<const T*>(d_out.data), row_of.i32(), d, k);
  });
  SIGMA_CUDA_LAUNCHED("moe_permute_backward");
}

void moe_unpermute_forward(Tensor out, Tensor inp, Tensor row_of, Tensor probs) {
  check_rows("moe_unpermute_forward", {out, inp});
  int64_t d = out.size(-1), n = out.numel() / d;
  int k = int(row_of.numel() / n);
  with_rows(out.dtype, d, {out.data, inp.data}, [&](auto rows, auto width) {
    using T = typename decltype(rows)::type;
    constexpr int V = decltype(width)::value;
    unpermute_forward_kernel<T, V><<<unsigned(n), kRowThreads, 0, stream()>>>(
        static_cast<T*>(out.data), static_cast<const T*>(inp.data), row_of.i32(), probs.f32(), d,
        k);
  });
  SIGMA_CUDA_LAUNCHED("moe_unpermute_forward");
}

void moe_unpermute_backward(Tensor d_inp, Tensor d_probs, Tensor d_out, Tensor inp, Tensor row_of,
                            Tensor probs) {
  check_rows("moe_unpermute_backward", {d_inp, d_out, inp});
  int64_t d = d_out.size(-1), n = d_out.numel() / d, assignments = row_of.numel();
  int k = int(assignments / n);
  unsigned blocks = unsigned(ceil_div(assignments, kThreads / 32));
  with_rows(d_out.dtype, d, {d_inp.data, d_out.data, inp.data}, [&](auto rows, auto width) {
    using T = typename decltype(rows)::type;
    constexpr int V = decltype(width)::value;
    unpermute_backward_kernel<T, V><<<blocks, kThreads, 0, stream()>>>(
        static_cast<T*>(d_inp.data), d_probs.f32(), static_cast<const T*>(d_out.data),
        static_cast<const T*>(inp.data), row_of.i32(), probs.f32(), assignments, d, k);
  });
  SIGMA_CUDA_LAUNCHED("moe_unpermute_backward");
}

}  // namespace sigma::cuda
