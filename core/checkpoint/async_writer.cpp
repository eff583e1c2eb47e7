// The background checkpoint writer: snapshot on the caller's thread, write on another.
#include "core/checkpoint/async_writer.h"

#include "core/checkpoint/durable_fs.h"
#include "core/checkpoint/layout.h"
#include "core/checkpoint/multi_rank.h"
#include "core/error.h"
#include "core/fault.h"
#include "kernels/device.h"

#include <chrono>
#include <filesystem>
#include <utility>

namespace sigma {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// What a failed save leaves: its uncommitted step directory, or its staging copy beside a
// committed one. Best effort: the save's own error is the one worth reporting.
void remove_partial_save(const SaveRequest& request) {
  fs::path root(request.root);
  try {
    fs::path dir = root / step_dir_name(request.step);
    if (!is_committed(dir)) remove_durably(dir);
    remove_durably(root / leftover_dir_name(request.step, "tmp"));
  } catch (const std::exception&) {
  }
}

}  // namespace

CheckpointWriter::~CheckpointWriter() {
  if (thread_.joinable()) thread_.join();
}

void CheckpointWriter::save(SaveRequest request) {
  SIGMA_CHECK(!thread_.joinable() && !outcome_, "a checkpoint write's outcome was not taken");
  auto start = Clock::now();
  bool on_host = true;
  size_t floats = 0;
  for (const CheckpointTensor& tensor : request.tensors) {
    SIGMA_CHECK(tensor.data.dtype == DType::kF32, "{}: checkpoints hold f32 tensors", tensor.name);
    on_host = on_host && tensor.data.device == Device::kCpu;
    floats += size_t(tensor.data.numel());
  }
  // A synchronous write of host tensors reads them in place; anything else is copied first
  // (device tensors must come to the host anyway, and training may change them meanwhile).
  if (async_ || !on_host) {
    if (snapshot_.size() < floats) snapshot_.resize(floats);
    float* next = snapshot_.data();
    for (CheckpointTensor& tensor : request.tensors) {
      Tensor host = tensor.data;
      host.data = next;
      host.device = Device::kCpu;
      device::copy(host, tensor.data);
      tensor.data = host;
      next += tensor.data.numel();
    }
  }
  outcome_ = SaveOutcome{request.step, "", nullptr, seconds_since(start), 0};
  fault::point("checkpoint.snapshot");
  if (!async_) {
    write(request);
    return;
  }
  finished_.store(false);
  thread_ = std::thread([this, request = std::move(request)] {
    write(request);
    finished_.store(true, std::memory_order_release);
  });
}

void CheckpointWriter::write(const SaveRequest& request) {
  auto start = Clock::now();
  try {
    outcome_->dir = save_checkpoint(request, group_);
  } catch (...) {
    outcome_->error = std::current_exception();
    remove_partial_save(request);
  }
  outcome_->write_seconds = seconds_since(start);
}

std::optional<SaveOutcome> CheckpointWriter::poll() {
  if (thread_.joinable()) {
    if (!finished_.load(std::memory_order_acquire)) return std::nullopt;
    thread_.join();
  }
  return std::exchange(outcome_, std::nullopt);
}

std::optional<SaveOutcome> CheckpointWriter::wait() {
  if (thread_.joinable()) thread_.join();
  return std::exchange(outcome_, std::nullopt);
}

}  // namespace sigma
