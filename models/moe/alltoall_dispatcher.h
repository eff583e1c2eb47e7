// The all-to-all token dispatcher of expert parallelism (Megatron-Core's
// MoEAlltoAllTokenDispatcher). It sits beside the local Dispatcher: that one permutes this
// rank's tokens into rows grouped by expert (all E experts of the layer); this one trades
// rows with the other ranks of the expert-parallel group, so each rank's Experts, which hold
// E/ep experts, see every row routed to them from the whole group.
//
// Shape legend: R rows of the local permutation (N * K), S rows this rank's experts
// receive, D d_model, ep ranks in the group, L = E / ep experts per rank (rank j holds
// experts [j*L, (j+1)*L)).
//   dispatch: counts first: an all-to-all of tokens per expert gives, for each source rank
//     and local expert, how many rows will come; then the payload: x_RD's rows for rank j's
//     experts go to rank j (they are contiguous, as rows are grouped by expert). The rows
//     received, grouped by source then expert, are sorted expert-major into x_SD (sources in
//     rank order within an expert), with tokens_per_local_expert [L].
//   combine: the inverse: y_SD back to source-major order, sent home, y_RD in x_RD's order.
// Backward moves gradients along the same paths: d(combine) travels like dispatch and
// d(dispatch) like combine. Everything is deterministic: the order of rows depends only on
// the routing.
// Dropless: S can reach ep * R (every token of the group routed to this rank's experts), so
// the receive buffers are planned for that worst case. Leaves out: capacity factors, and
// overlapping the all-to-all with the shared expert's compute.
#pragma once

#include "core/dist/process_group.h"
#include "core/tensor/arena.h"
#include "models/config.h"

#include <vector>

namespace sigma {

class AllToAllDispatcher {
 public:
  // `max_rows`: the largest R (tokens * the layer's largest top-k).
  AllToAllDispatcher(const ModelConfig& config, int64_t max_rows, ProcessGroup& ep_group);

  void layout_acts(Arena& arena, const std::string& category);

  int64_t first_expert() const { return group_.rank() * local_experts_; }
  int64_t local_experts() const { return local_experts_; }
  // The largest S: rows of buffers on the experts' side.
  int64_t max_received_rows() const { return int64_t(group_.size()) * max_rows_; }

  // x_SD from x_RD, whose rows are grouped by expert with tokens_per_expert [E].
  void dispatch(Tensor x_RD, const std::vector<int64_t>& tokens_per_expert);
  // y_RD (overwrite) from the experts' y_SD.
  void combine(Tensor y_RD, Tensor y_SD);
  // d_y_SD (overwrite) from d_y_RD.
  void combine_backward(Tensor d_y_SD, Tensor d_y_RD);
  // d_x_RD (overwrite) from d_x_SD.
  void dispatch_backward(Tensor d_x_RD, Tensor d_x_SD);

  Tensor x_SD() const { return rows(x_buf_); }
  // The last combine's output, which combine_backward needs.
  Tensor y_RD() const { return y_buf_.slice_rows(0, local_rows_); }
  // Rows per local expert of the last dispatch, i32 [L] on the device.
  Tensor tokens_per_local_expert() const { return local_counts_L_; }
  // The first S rows of a [max_received_rows(), C] buffer.
  Tensor rows(Tensor buffer) const { return buffer.slice_rows(0, received_rows_); }

 private:
  // The exchange towards the experts (dispatch, combine_backward) and back.
  void to_experts(Tensor out_SD, Tensor in_RD);
  void from_experts(Tensor out_RD, Tensor in_SD);
  // Copies the (source, expert) chunks of `in` into `out`, from source-major order to
  // expert-major (forward) or back.
  void sort_chunks(Tensor out, Tensor in, bool to_expert_major);

  const ModelConfig& config_;
  int64_t max_rows_;
  ProcessGroup& group_;
  int64_t local_experts_;
  // From the last dispatch: rows to and from each rank, rows per (source, local expert) in
  // source-major order, rows per local expert.
  std::vector<int64_t> send_rows_, recv_rows_, recv_counts_, local_counts_;
  int64_t local_rows_ = 0, received_rows_ = 0;
  Tensor exchange_buf_, x_buf_, y_buf_, local_counts_L_;
};

}  // namespace sigma
