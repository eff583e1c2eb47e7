// attention_workspace.h: the device memory the CUDA attention backward holds beside its
// operands (kernels/cuda/attention_backward.cu), sized here so that the memory plan
// (models/model_plan.cpp) counts it too: fp32 accumulators for the gradients it sums across
// blocks (dQ per query tile, dK and dV per key tile, at the head dim rounded up to the
// kernels' tile width, attention_tile_dim) and turn counters (one per key tile's rows of each).
#pragma once

#include <cstddef>
#include <cstdint>

namespace sigma {

// The backward's tiles: a block owns kAttentionKeyTile keys and loops over query tiles of
// kAttentionQueryTile rows.
constexpr int kAttentionKeyTile = 128, kAttentionQueryTile = 64;

struct AttentionWorkspace {
  int64_t dq_turns, dk_turns, dv_turns, dq_floats, dk_floats, dv_floats;
  int64_t turns() const { return dq_turns + dk_turns + dv_turns; }
  size_t bytes() const {
    return size_t(dq_floats + dk_floats + dv_floats) * sizeof(float) +
           size_t(turns()) * sizeof(int);
  }
};

// The kernels' tile width for a head dim pair: the larger rounded up to 64, 96 or 128.
inline int64_t attention_tile_dim(int64_t d_qk, int64_t d_v) {
  const int64_t d = d_qk > d_v ? d_qk : d_v;
  return d <= 64 ? 64 : d <= 96 ? 96 : 128;
}

inline AttentionWorkspace attention_workspace(int64_t batch, int64_t seq_len, int64_t n_q,
                                              int64_t n_k, int64_t n_v, int64_t d_qk,
                                              int64_t d_v) {
  const int64_t dim = attention_tile_dim(d_qk, d_v);
  const int64_t query_tiles = (seq_len + kAttentionQueryTile - 1) / kAttentionQueryTile;
  const int64_t key_tiles = (seq_len + kAttentionKeyTile - 1) / kAttentionKeyTile;
  const int64_t dq = batch * n_q * key_tiles, dk = batch * n_k * key_tiles,
                dv = batch * n_v * key_tiles;
  return {dq, dk, dv, batch * n_q * query_tiles * kAttentionQueryTile * dim,
          dk * kAttentionKeyTile * dim, dv * kAttentionKeyTile * dim};
}

}  // namespace sigma
