// The process group of one process: every collective is a copy or nothing at all, so code
// written against ProcessGroup runs unchanged without a launcher (and tests can drive it).
#pragma once

#include "core/dist/process_group.h"

namespace sigma {

class SingleGroup : public ProcessGroup {
 public:
  explicit SingleGroup(Device device, std::string label = "world")
      : device_(device), label_(std::move(label)) {}

  int rank() const override { return 0; }
  int size() const override { return 1; }
  Device device() const override { return device_; }
  std::string name() const override { return "single " + label_; }

  void all_reduce(Tensor) override {}
  std::unique_ptr<Work> reduce_scatter_async(Tensor out, Tensor in,
                                             std::span<const int64_t> counts) override;
  void all_gather(Tensor, std::span<const int64_t>) override {}
  void all_to_all(Tensor out, std::span<const int64_t> recv_rows, Tensor in,
                  std::span<const int64_t> send_rows) override;

  void all_reduce_host(std::span<double>, ReduceOp) override {}
  void all_reduce_host(std::span<int64_t>, ReduceOp) override {}
  void all_to_all_host(std::span<int64_t> recv, std::span<const int64_t> send) override;
  std::vector<std::string> all_gather_bytes(const std::string& mine) override { return {mine}; }
  std::string broadcast_bytes(const std::string& value, int) override { return value; }
  void barrier() override {}
  std::unique_ptr<ProcessGroup> split(int, int, const std::string& label) override {
    return std::make_unique<SingleGroup>(device_, label);
  }

 private:
  Device device_;
  std::string label_;
};

}  // namespace sigma
