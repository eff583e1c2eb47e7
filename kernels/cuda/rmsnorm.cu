// RMSNorm (Zhang & Sennrich 2019) on CUDA, fp32 statistics.
//
// A group of threads (a power of two: a few lanes for a 64-wide head norm, a whole block
// for d_model) takes a row and holds it in registers, kPerThread elements per thread, so
// the row is read from memory once; the row's sum is a shuffle reduction within the group,
// through shared memory when the group spans warps. Rows reach 512 * kPerThread = 8192
// elements (d_model and head dims of every recipe).
// Elements move as 16-byte packs (vector_io.cuh) when the row length and the pointers
// allow, one by one otherwise. The forward can first add a residual branch (kAdd: sum = a + b,
// stored, then normalised as stored); the backward can add its d_inp into the residual
// stream's gradient (kAccumulate): each saves a separate elementwise pass over [N, D].
//
// Backward computes the weight gradient, a column sum over rows, in the same pass: each
// block takes a contiguous chunk of rows, each thread adds g x rstd for its columns over the
// chunk's rows in order, a block's groups are added in order, and a second kernel adds the
// chunks' partials in a fixed order. No atomics: the same bits every run on one GPU model
// (the number of chunks follows the SM count and the kernel's occupancy).
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cuda/vector_io.cuh"

namespace sigma::cuda {
namespace {

constexpr int kPerThread = 16;  // row elements a thread holds
// Rows reach kMaxGroup * kPerThread = 8192 elements, every recipe's d_model and head dim.
// 1024-thread groups would cap the forward kernels at 64 registers (the one-element path
// spills there) and need over 48 KB of dynamic shared memory in backward.
constexpr int kMaxGroup = 512;
constexpr int kMaxRow = kMaxGroup * kPerThread;
constexpr int kMinBlock = 256;  // small groups share a block, several rows per block

struct RowLayout {
  int group;  // threads per row: a power of two with group * kPerThread >= c
  int block;  // threads per block
  int rows_per_block() const { return block / group; }
};

RowLayout layout_for(int64_t c) {
  SIGMA_CHECK(c <= kMaxRow, "rmsnorm on CUDA: rows of {} elements, at most {}", c, kMaxRow);
  int group = 1;
  while (int64_t(group) * kPerThread < c) group *= 2;
  return {group, std::max(group, kMinBlock)};
}

// The sum of v over the `group` threads of a row, returned to each of them. Every thread of
// the block calls it: a group wider than a warp synchronises the block.
__device__ float group_sum(float v, int group, float* warp_sums) {
  for (int offset = min(group, 32) / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffff, v, offset);
  if (group <= 32) return v;
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  const int first = threadIdx.x / group * (group / 32);
  float total = 0;
  for (int w = 0; w < group / 32; ++w) total += warp_sums[first + w];
  __syncthreads();  // warp_sums is reused by the next call
  return total;
}

// Thread `member` of a row's group holds accesses a = 0 .. kPerThread / kWidth - 1 of
// kWidth elements each, starting at column (a * group + member) * kWidth: consecutive
// threads read consecutive packs. kWidth is 8 (packs) or 1 (any row length or alignment).
template <int kWidth>
__device__ __forceinline__ int column_of(int a, int group, int member) {
  return (a * group + member) * kWidth;
}

// Register bounds (ptxas, sm_90a): packs fit 42 registers without spilling, six blocks of 256
// threads per SM; the one-element path spills under 64, so it gets what it asks for.
// With kAdd, inp is a, addend is b and sum receives a + b (sum may alias a or b: each thread
// writes only the elements it read).
template <typename T, typename W, int kWidth, bool kAdd>
__global__ void __launch_bounds__(kMaxGroup, kWidth == 1 ? 1 : 3)
    rmsnorm_forward_kernel(T* out, float* rstd, const T* inp, const W* weight, T* sum,
                           const T* addend, int64_t rows, int c, int group, float eps) {
  constexpr int kAccesses = kPerThread / kWidth;
  __shared__ float warp_sums[kMaxGroup / 32];
  const int member = threadIdx.x % group;
  const int64_t row = blockIdx.x * int64_t(blockDim.x / group) + threadIdx.x / group;
  const bool valid = row < rows;
  const int64_t offset = (valid ? row : 0) * c;
  Pack<T, kWidth> xs[kAccesses];
  float sum_sq = 0;
#pragma unroll
  for (int a = 0; a < kAccesses; ++a) {
    const int e = column_of<kWidth>(a, group, member);
    if (!valid || e >= c) continue;
    xs[a] = load_pack<kWidth>(inp + offset + e);
    if constexpr (kAdd) {
      Pack<T, kWidth> b = load_pack<kWidth>(addend + offset + e);
#pragma unroll
      for (int k = 0; k < kWidth; ++k)
        xs[a].v[k] = from_float<T>(to_float(xs[a].v[k]) + to_float(b.v[k]));
      store_pack(sum + offset + e, xs[a]);
    }
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      float v = to_float(xs[a].v[k]);
      sum_sq += v * v;
    }
  }
  sum_sq = group_sum(sum_sq, group, warp_sums);
  if (!valid) return;  // after the group's last barrier
  const float s = rsqrtf(sum_sq / float(c) + eps);
#pragma unroll
  for (int a = 0; a < kAccesses; ++a) {
    const int e = column_of<kWidth>(a, group, member);
    if (e >= c) continue;
    Pack<W, kWidth> w = load_pack<kWidth>(weight + e);
    Pack<T, kWidth> y;
#pragma unroll
    for (int k = 0; k < kWidth; ++k)
      y.v[k] = from_float<T>(to_float(xs[a].v[k]) * s * to_float(w.v[k]));
    store_pack(out + offset + e, y);
  }
  if (member == 0) rstd[row] = s;
}

// d_inp = rstd (w g - x rstd^2 mean(w g x)) (d_inp += that with kAccumulate); partials[chunk,
// col] = sum over the chunk's rows of g x rstd. Each thread writes only the d_inp elements it
// read from d_out, so d_inp may alias d_out when it is overwritten. The column sums live in
// shared memory (dynamic, kPerThread floats per thread, laid out [element][thread] so the
// updates hit distinct banks): in registers they push the kernel past 64 registers (ptxas:
// 96-106), half the occupancy; with them in shared memory it fits 64 without spilling, 4
// blocks of 256 threads per SM.
template <typename T, typename W, int kWidth, bool kAccumulate>
__global__ void __launch_bounds__(kMaxGroup, 2)
    rmsnorm_backward_kernel(T* d_inp, float* partials, const T* d_out, const T* inp,
                            const W* weight, const float* rstd, int64_t rows, int c, int group,
                            int64_t rows_per_chunk) {
  constexpr int kAccesses = kPerThread / kWidth;
  __shared__ float warp_sums[kMaxGroup / 32];
  extern __shared__ float column_sums[];  // [kPerThread][blockDim.x]
  const int member = threadIdx.x % group, groups = blockDim.x / group;
  const int64_t begin = blockIdx.x * rows_per_chunk, end = min(rows, begin + rows_per_chunk);
  float* my_sums = column_sums + threadIdx.x;  // element j at my_sums[j * blockDim.x]
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) my_sums[j * blockDim.x] = 0.0f;
  // Every group runs the same iterations, so the barriers in group_sum line up.
  for (int64_t first = begin; first < end; first += groups) {
    const int64_t row = first + threadIdx.x / group;
    const bool valid = row < end;
    const int64_t offset = (valid ? row : begin) * c;
    const float s = valid ? rstd[row] : 0.0f;
    Pack<T, kWidth> xs[kAccesses], gs[kAccesses];
    float dot = 0;
#pragma unroll
    for (int a = 0; a < kAccesses; ++a) {
      const int e = column_of<kWidth>(a, group, member);
      if (!valid || e >= c) continue;
      xs[a] = load_pack<kWidth>(inp + offset + e);
      gs[a] = load_pack<kWidth>(d_out + offset + e);
      Pack<W, kWidth> w = load_pack<kWidth>(weight + e);
#pragma unroll
      for (int k = 0; k < kWidth; ++k)
        dot += to_float(w.v[k]) * to_float(gs[a].v[k]) * to_float(xs[a].v[k]);
    }
    dot = group_sum(dot, group, warp_sums);
    if (!valid) continue;
    const float scale = dot / float(c) * s * s;
#pragma unroll
    for (int a = 0; a < kAccesses; ++a) {
      const int e = column_of<kWidth>(a, group, member);
      if (e >= c) continue;
      // The weight again, from L1: holding it across the reduction costs registers.
      Pack<W, kWidth> w = load_pack<kWidth>(weight + e);
      Pack<T, kWidth> dx;
      if constexpr (kAccumulate) dx = load_pack<kWidth>(d_inp + offset + e);
#pragma unroll
      for (int k = 0; k < kWidth; ++k) {
        float g = to_float(gs[a].v[k]), x = to_float(xs[a].v[k]);
        float d = s * (to_float(w.v[k]) * g - x * scale);
        if constexpr (kAccumulate) d += to_float(dx.v[k]);
        dx.v[k] = from_float<T>(d);
        my_sums[(a * kWidth + k) * blockDim.x] += g * x * s;
      }
      store_pack(d_inp + offset + e, dx);
    }
  }
  __syncthreads();
  // The block's partial: each column's sums over the block's groups, in group order.
  // Column col sits at element j of thread member in every group (column_of inverted).
  float* partial = partials + blockIdx.x * int64_t(c);
  for (int col = threadIdx.x; col < c; col += blockDim.x) {
    const int pack = col / kWidth, j = pack / group * kWidth + col % kWidth;
    const float* sums = column_sums + j * blockDim.x + pack % group;
    float total = 0;
    for (int g = 0; g < groups; ++g) total += sums[g * group];
    partial[col] = total;
  }
}

// d_weight[col] += the sum of partials[chunk, col] over chunks, in a fixed order: thread
// (x, y) of a 32 x 32 block adds chunks y, y + 32, ... of column x, then row y = 0 adds the
// 32 sums in order.
__global__ void rmsnorm_weight_finish(float* d_weight, const float* partials, int64_t chunks,
                                      int c) {
  __shared__ float sums[32][33];
  const int col = blockIdx.x * 32 + threadIdx.x;
  float acc = 0;
  if (col < c)
    for (int64_t k = threadIdx.y; k < chunks; k += 32) acc += partials[k * c + col];
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || col >= c) return;
  float total = 0;
  for (int y = 0; y < 32; ++y) total += sums[y][threadIdx.x];
  d_weight[col] += total;
}

// Packs need whole 16-byte packs per row (c a multiple of 8) and aligned pointers.
bool packs_fit(int64_t c, std::initializer_list<const void*> pointers) {
  if (c % kPack != 0) return false;
  for (const void* p : pointers)
    if (!aligned16(p)) return false;
  return true;
}

// sum and addend: undefined for a plain rmsnorm.
template <typename T, typename W, int kWidth, bool kAdd>
void forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, Tensor sum, Tensor addend,
             float eps, int64_t rows, int c) {
  RowLayout layout = layout_for(c);
  int64_t blocks = ceil_div(rows, layout.rows_per_block());
  rmsnorm_forward_kernel<T, W, kWidth, kAdd><<<unsigned(blocks), layout.block, 0, stream()>>>(
      static_cast<T*>(out.data), rstd.f32(), static_cast<const T*>(inp.data),
      static_cast<const W*>(weight.data), static_cast<T*>(sum.data),
      static_cast<const T*>(addend.data), rows, c, layout.group, eps);
}

template <typename T, typename W, int kWidth, bool kAccumulate>
void backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
              Tensor rstd, int64_t rows, int c) {
  RowLayout layout = layout_for(c);
  auto kernel = rmsnorm_backward_kernel<T, W, kWidth, kAccumulate>;
  // One chunk per block the GPU holds at once (a single wave), few enough that the partials
  // fit the scratch; each chunk a whole number of the block's row groups.
  int per_sm = 0;
  size_t smem = sizeof(float) * kPerThread * size_t(layout.block);
  SIGMA_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, layout.block, smem));
  int64_t chunks = int64_t(num_sms()) * std::max(per_sm, 1);
  chunks = std::min(chunks, int64_t(kScratchBytes / (sizeof(float) * size_t(c))));
  chunks = std::clamp<int64_t>(chunks, 1, ceil_div(rows, layout.rows_per_block()));
  int64_t rows_per_chunk = ceil_div(ceil_div(rows, chunks), layout.rows_per_block()) *
                           layout.rows_per_block();
  chunks = ceil_div(rows, rows_per_chunk);
  auto* partials = static_cast<float*>(scratch());
  kernel<<<unsigned(chunks), layout.block, smem, stream()>>>(
      static_cast<T*>(d_inp.data), partials, static_cast<const T*>(d_out.data),
      static_cast<const T*>(inp.data), static_cast<const W*>(weight.data), rstd.f32(), rows, c,
      layout.group, rows_per_chunk);
  SIGMA_CUDA_LAUNCHED("rmsnorm_backward");
  rmsnorm_weight_finish<<<unsigned(ceil_div(c, 32)), dim3(32, 32), 0, stream()>>>(
      d_weight.f32(), partials, chunks, c);
  SIGMA_CUDA_LAUNCHED("rmsnorm_weight_finish");
}

// A plain rmsnorm (sum, addend undefined) or the add in front of it.
template <bool kAdd>
void forward_any(Tensor out, Tensor rstd, Tensor inp, Tensor weight, Tensor sum, Tensor addend,
                 float eps) {
  int64_t c = inp.size(-1), rows = inp.numel() / c;
  if (rows == 0) return;
  bool packs = packs_fit(c, {out.data, inp.data, weight.data}) &&
               (!kAdd || packs_fit(c, {sum.data, addend.data}));
  SIGMA_DISPATCH_FLOAT(inp.dtype, T, {
    SIGMA_DISPATCH_FLOAT(weight.dtype, W, {
      if (packs)
        forward<T, W, kPack, kAdd>(out, rstd, inp, weight, sum, addend, eps, rows, int(c));
      else
        forward<T, W, 1, kAdd>(out, rstd, inp, weight, sum, addend, eps, rows, int(c));
    });
  });
  SIGMA_CUDA_LAUNCHED("rmsnorm_forward");
}

template <bool kAccumulate>
void backward_any(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                  Tensor rstd) {
  int64_t c = inp.size(-1), rows = inp.numel() / c;
  if (rows == 0) return;
  bool packs = packs_fit(c, {d_inp.data, d_out.data, inp.data, weight.data});
  SIGMA_DISPATCH_FLOAT(inp.dtype, T, {
    SIGMA_DISPATCH_FLOAT(weight.dtype, W, {
      if (packs)
        backward<T, W, kPack, kAccumulate>(d_inp, d_weight, d_out, inp, weight, rstd, rows,
                                           int(c));
      else
        backward<T, W, 1, kAccumulate>(d_inp, d_weight, d_out, inp, weight, rstd, rows,
                                       int(c));
    });
  });
}

}  // namespace

void rmsnorm_forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, float eps) {
  forward_any<false>(out, rstd, inp, weight, Tensor{}, Tensor{}, eps);
}

void add_rmsnorm_forward(Tensor sum, Tensor out, Tensor rstd, Tensor a, Tensor b, Tensor weight,
                         float eps) {
  forward_any<true>(out, rstd, a, weight, sum, b, eps);
}

void rmsnorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                      Tensor rstd, GradWrite d_inp_write) {
  if (d_inp_write == GradWrite::kAccumulate)
    backward_any<true>(d_inp, d_weight, d_out, inp, weight, rstd);
  else
    backward_any<false>(d_inp, d_weight, d_out, inp, weight, rstd);
}

}  // namespace sigma::cuda
