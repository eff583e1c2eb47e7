// CheckpointWriter: saving a checkpoint while training goes on. Large runs must checkpoint
// often and cheaply (SIGMA-FAMILY.md section 3: asynchronous save, per-rank files).
//
// save() copies every tensor of the request, on the host or on a GPU, into one host buffer
// (the snapshot, allocated on first use and reused), which is all the training thread waits
// for; then the copy is written by save_checkpoint on a background thread (async) or before
// save() returns. A synchronous save of host tensors writes them in place, without the copy.
// At most one write is in flight, and its outcome must be collected (poll or wait) before
// the next save(). The crash safety is save_checkpoint's: a write killed at any instant
// leaves the committed checkpoints as they were. A failed write removes its partial
// directory (a full disk gets its space back) and reports why.
//
// HDF5 must be called from one thread at a time (hdf5_file.h): nothing else in the process
// may use HDF5 while a write is in flight, so call wait() before loading a checkpoint.
// Memory: the snapshot is as large as the saved state (fp32 weights and both AdamW moments).
#pragma once

#include "core/checkpoint/checkpoint.h"
#include "core/dist/process_group.h"

#include <atomic>
#include <exception>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace sigma {

struct SaveOutcome {
  int64_t step = 0;
  std::string dir;              // the committed step directory; "" when the write failed
  std::exception_ptr error;     // why it failed (UserError for disk trouble), else null
  double snapshot_seconds = 0;  // the copy, on the caller's thread
  double write_seconds = 0;     // the write, on the background thread when async
};

class CheckpointWriter {
 public:
  // Every rank of `group` saves together (multi_rank.h); with more than one rank the commit
  // takes collectives, which must not run beside the training thread's: then always sync.
  CheckpointWriter(bool async, ProcessGroup& group)
      : async_(async && group.size() == 1), group_(group) {}
  ~CheckpointWriter();  // waits for a write in flight (its outcome is then lost)
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Snapshots request.tensors and writes them. The previous outcome must have been taken.
  void save(SaveRequest request);
  // The outcome of a finished write, once; nullopt while one is in flight or none is left.
  std::optional<SaveOutcome> poll();
  // Blocks until no write is in flight; then as poll().
  std::optional<SaveOutcome> wait();
  bool async() const { return async_; }

 private:
  void write(const SaveRequest& request);

  bool async_;
  ProcessGroup& group_;
  std::vector<float> snapshot_;
  std::thread thread_;
  std::atomic<bool> finished_{false};
  std::optional<SaveOutcome> outcome_;  // the write's, until taken
};

}  // namespace sigma
