// ProcessGroup: the collectives a set of ranks runs together, behind one interface with
// three implementations: MPI for CPU tensors (mpi_group.h), NCCL for CUDA tensors
// (nccl_group.h, built with SIGMA_CUDA) and a single process (single_group.h).
//
// Every member is collective: each rank of the group calls it, in the same order, with
// matching sizes. Tensor collectives move tensors on device(); "host" collectives move small
// control values (loss sums, token counts, checkpoint bookkeeping) in host memory. Blocking
// calls return when the result may be used; on CUDA that means "ordered before any later
// work on the compute stream", so the host does not wait except where a host value comes
// back. A group never becomes global state: whoever needs one is handed it (STYLE.md).
// Groups that can block are given the process's Watchdog when made, and time every wait
// with it (parallelism.collective_timeout_s).
#pragma once

#include "core/tensor/tensor.h"

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace sigma {

enum class ReduceOp { kSum, kMax };

// A collective started by an *_async call; wait() makes its result usable (see above).
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual Device device() const = 0;     // where tensor collectives' data lives
  virtual std::string name() const = 0;  // "mpi world", "nccl ep", for messages

  // --- tensors --------------------------------------------------------------------------
  // In place: data = the sum of every rank's data (f32).
  virtual void all_reduce(Tensor data) = 0;
  // `in` (f32) is split into size() consecutive parts of counts[r] elements; out (counts
  // [rank()] elements) receives the sum of every rank's part rank(). Starts now, on a side
  // channel (a thread for MPI, a stream for NCCL), so the caller may keep computing: the
  // data-parallel gradient buckets overlap backward this way.
  virtual std::unique_ptr<Work> reduce_scatter_async(Tensor out, Tensor in,
                                                     std::span<const int64_t> counts) = 0;
  // In place over `data` (f32; bf16 too on NCCL) split as in reduce_scatter: every rank
  // receives part r from rank r.
  virtual void all_gather(Tensor data, std::span<const int64_t> counts) = 0;
  // Rows (dim 0, any dtype): the first send_rows[0] rows of `in` go to rank 0, the next
  // send_rows[1] to rank 1, ...; `out` receives recv_rows[r] rows from each rank r, in rank
  // order. in and out have the same row size and must not overlap.
  virtual void all_to_all(Tensor out, std::span<const int64_t> recv_rows, Tensor in,
                          std::span<const int64_t> send_rows) = 0;

  // --- host values ----------------------------------------------------------------------
  virtual void all_reduce_host(std::span<double> values, ReduceOp op) = 0;
  virtual void all_reduce_host(std::span<int64_t> values, ReduceOp op) = 0;
  // send holds size() blocks of equal length, block r for rank r; recv receives block
  // rank() of every rank, in rank order.
  virtual void all_to_all_host(std::span<int64_t> recv, std::span<const int64_t> send) = 0;
  // Every rank's bytes, in rank order.
  virtual std::vector<std::string> all_gather_bytes(const std::string& mine) = 0;
  // `root`'s value, on every rank.
  virtual std::string broadcast_bytes(const std::string& value, int root) = 0;
  virtual void barrier() = 0;

  // A group of the ranks that pass the same `color`, ranked by `key` (then by rank here);
  // `label` names it in messages ("ep" gives "mpi ep").
  virtual std::unique_ptr<ProcessGroup> split(int color, int key, const std::string& label) = 0;
};

}  // namespace sigma
