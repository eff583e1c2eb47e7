// Token embedding lookup and its gradient, CPU reference.
//
// The backward is a scatter-add that repeated tokens hit more than once; it runs in token
// order inside each block of columns, so it needs no atomics and gives the same bits for
// any thread count. Token ids outside [0, V) are a user error (data built for another
// vocabulary) and are reported before any work starts.
#include "kernels/cpu/cpu_ops.h"

#include <cstring>

namespace sigma::cpu {
namespace {

constexpr int64_t kColumnBlock = 16;  // one 64-byte cache line of fp32 per block

void check_token_ids(const int32_t* tokens, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab)
      fail("token id {} at position {} is outside the vocabulary [0, {})", tokens[i], i, vocab);
  }
}

}  // namespace

void embedding_forward(Tensor out, Tensor tokens, Tensor weight) {
  int64_t n = tokens.numel(), v = weight.size(0), d = weight.size(1);
  const int32_t* tok = tokens.i32();
  const float* w = weight.f32();
  float* o = out.f32();
  check_token_ids(tok, n, v);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) std::memcpy(o + i * d, w + int64_t(tok[i]) * d, d * sizeof(float));
}

void embedding_backward(Tensor d_weight, Tensor d_out, Tensor tokens) {
  int64_t n = tokens.numel(), v = d_weight.size(0), d = d_weight.size(1);
  const int32_t* tok = tokens.i32();
  const float* dout = d_out.f32();
  float* dw = d_weight.f32();
  check_token_ids(tok, n, v);
  int64_t num_blocks = (d + kColumnBlock - 1) / kColumnBlock;
  // Threads own disjoint column blocks; within a block rows are added in token order.
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < num_blocks; ++blk) {
    int64_t c0 = blk * kColumnBlock, c1 = c0 + kColumnBlock < d ? c0 + kColumnBlock : d;
    for (int64_t i = 0; i < n; ++i) {
      float* dst = dw + int64_t(tok[i]) * d;
      const float* src = dout + i * d;
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

}  // namespace sigma::cpu
