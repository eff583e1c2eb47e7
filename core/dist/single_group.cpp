// The one-process group (single_group.h): collectives reduce to copies.
#include "core/dist/single_group.h"

#include "kernels/device.h"

#include <algorithm>

namespace sigma {
namespace {

struct DoneWork : Work {
  void wait() override {}
};

}  // namespace

std::unique_ptr<Work> SingleGroup::reduce_scatter_async(Tensor out, Tensor in,
                                                        std::span<const int64_t> counts) {
  SIGMA_CHECK(counts.size() == 1 && counts[0] == in.numel() && out.numel() == in.numel(),
              "reduce-scatter of {} into {}", in.numel(), out.numel());
  device::copy(out, in);
  return std::make_unique<DoneWork>();
}

void SingleGroup::all_to_all(Tensor out, std::span<const int64_t> recv_rows, Tensor in,
                             std::span<const int64_t> send_rows) {
  SIGMA_CHECK(recv_rows.size() == 1 && send_rows.size() == 1 && recv_rows[0] == send_rows[0],
              "all-to-all of {} rows", send_rows.empty() ? -1 : send_rows[0]);
  device::copy(out.slice_rows(0, recv_rows[0]), in.slice_rows(0, send_rows[0]));
}

void SingleGroup::all_to_all_host(std::span<int64_t> recv, std::span<const int64_t> send) {
  SIGMA_CHECK(recv.size() == send.size(), "{} into {}", send.size(), recv.size());
  std::copy(send.begin(), send.end(), recv.begin());
}

}  // namespace sigma
