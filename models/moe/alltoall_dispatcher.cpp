// Expert-parallel token exchange (alltoall_dispatcher.h).
#include "models/moe/alltoall_dispatcher.h"

#include "kernels/device.h"

#include <numeric>

namespace sigma {

AllToAllDispatcher::AllToAllDispatcher(const ModelConfig& config, int64_t max_rows,
                                       ProcessGroup& ep_group)
    : config_(config),
      max_rows_(max_rows),
      group_(ep_group),
      local_experts_(config.moe.n_experts / ep_group.size()) {
  SIGMA_CHECK(local_experts_ * group_.size() == config.moe.n_experts, "{} experts over {} ranks",
              config.moe.n_experts, group_.size());
}

void AllToAllDispatcher::layout_acts(Arena& arena, const std::string& category) {
  int64_t d = config_.d_model, received = max_received_rows();
  // The rows' dtype is the local dispatcher's (models/moe/dispatcher.cpp).
  const DType act = activation_dtype(arena.device());
  exchange_buf_ = arena.take({received, d}, act, category);
  x_buf_ = arena.take({received, d}, act, category);
  y_buf_ = arena.take({max_rows_, d}, act, category);
  local_counts_L_ = arena.take({local_experts_}, DType::kI32, category);
}

void AllToAllDispatcher::dispatch(Tensor x_RD, const std::vector<int64_t>& tokens_per_expert) {
  int64_t ranks = group_.size(), l = local_experts_;
  SIGMA_CHECK(int64_t(tokens_per_expert.size()) == ranks * l, "{} counts for {} experts",
              tokens_per_expert.size(), ranks * l);
  // Counts first: rank j learns how many rows of each of its experts come from each rank.
  recv_counts_.assign(size_t(ranks * l), 0);
  group_.all_to_all_host(recv_counts_, tokens_per_expert);
  send_rows_.assign(size_t(ranks), 0);
  recv_rows_.assign(size_t(ranks), 0);
  local_counts_.assign(size_t(l), 0);
  for (int64_t j = 0; j < ranks; ++j)
    for (int64_t e = 0; e < l; ++e) {
      send_rows_[size_t(j)] += tokens_per_expert[size_t(j * l + e)];
      recv_rows_[size_t(j)] += recv_counts_[size_t(j * l + e)];
      local_counts_[size_t(e)] += recv_counts_[size_t(j * l + e)];
    }
  local_rows_ = std::accumulate(send_rows_.begin(), send_rows_.end(), int64_t(0));
  received_rows_ = std::accumulate(recv_rows_.begin(), recv_rows_.end(), int64_t(0));
  SIGMA_CHECK(local_rows_ == x_RD.size(0) && received_rows_ <= max_received_rows(),
              "{} rows for {} routed, {} received of at most {}", x_RD.size(0), local_rows_,
              received_rows_, max_received_rows());
  // The experts' grouped matmuls read their counts on the device.
  std::vector<int32_t> counts(local_counts_.begin(), local_counts_.end());
  Tensor host = local_counts_L_;
  host.data = counts.data();
  host.device = Device::kCpu;
  device::copy(local_counts_L_, host);
  to_experts(x_SD(), x_RD);
}

void AllToAllDispatcher::combine(Tensor y_RD, Tensor y_SD) { from_experts(y_RD, y_SD); }

void AllToAllDispatcher::combine_backward(Tensor d_y_SD, Tensor d_y_RD) {
  to_experts(d_y_SD, d_y_RD);
}

void AllToAllDispatcher::dispatch_backward(Tensor d_x_RD, Tensor d_x_SD) {
  from_experts(d_x_RD, d_x_SD);
}

void AllToAllDispatcher::to_experts(Tensor out_SD, Tensor in_RD) {
  Tensor exchanged = rows(exchange_buf_);
  group_.all_to_all(exchanged, recv_rows_, in_RD, send_rows_);
  sort_chunks(out_SD, exchanged, true);
}

void AllToAllDispatcher::from_experts(Tensor out_RD, Tensor in_SD) {
  Tensor exchanged = rows(exchange_buf_);
  sort_chunks(exchanged, in_SD, false);
  // Back along the same paths: what came from rank j returns to it.
  group_.all_to_all(out_RD, send_rows_, exchanged, recv_rows_);
}

void AllToAllDispatcher::sort_chunks(Tensor out, Tensor in, bool to_expert_major) {
  int64_t ranks = group_.size(), l = local_experts_;
  // Chunk (j, e) starts at source_major[j * l + e] in source-major order and at
  // expert_major[e * ranks + j] in expert-major order.
  std::vector<int64_t> source_major(size_t(ranks * l)), expert_major(size_t(ranks * l));
  int64_t offset = 0;
  for (int64_t j = 0; j < ranks; ++j)
    for (int64_t e = 0; e < l; ++e) {
      source_major[size_t(j * l + e)] = offset;
      offset += recv_counts_[size_t(j * l + e)];
    }
  offset = 0;
  for (int64_t e = 0; e < l; ++e)
    for (int64_t j = 0; j < ranks; ++j) {
      expert_major[size_t(e * ranks + j)] = offset;
      offset += recv_counts_[size_t(j * l + e)];
    }
  for (int64_t j = 0; j < ranks; ++j)
    for (int64_t e = 0; e < l; ++e) {
      int64_t count = recv_counts_[size_t(j * l + e)];
      if (count == 0) continue;
      int64_t from = source_major[size_t(j * l + e)], to = expert_major[size_t(e * ranks + j)];
      if (!to_expert_major) std::swap(from, to);
      device::copy(out.slice_rows(to, to + count), in.slice_rows(from, from + count));
    }
}

}  // namespace sigma
