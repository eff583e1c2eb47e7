// NCCL collectives on CUDA tensors (nccl_group.h).
#include "core/dist/nccl_group.h"

#include "core/dist/tcp_rendezvous.h"
#include "core/dist/watchdog.h"
#include "kernels/cuda/runtime.h"
#include "kernels/device.h"

#include <fmt/format.h>
#include <nccl.h>

#include <exception>
#include <numeric>
#include <optional>

// Every NCCL call is checked where it is made.
#define SIGMA_NCCL_CHECK(expr)                                                 \
  do {                                                                         \
    ncclResult_t sigma_nccl_ = (expr);                                         \
    if (sigma_nccl_ != ncclSuccess)                                            \
      ::sigma::fail("NCCL error at {}:{}: {} ({})", __FILE__, __LINE__, #expr, \
                    ncclGetErrorString(sigma_nccl_));                          \
  } while (0)

namespace sigma {
namespace {

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::kSum ? ncclSum : ncclMax; }

char* bytes_at(const Tensor& t, int64_t byte_offset) {
  return static_cast<char*>(t.data) + byte_offset;
}

int64_t bytes_per_row(const Tensor& t) {
  int64_t n = int64_t(dtype_size(t.dtype));
  for (int i = 1; i < t.shape.rank; ++i) n *= t.shape[i];
  return n;
}

bool all_equal(std::span<const int64_t> counts) {
  return std::all_of(counts.begin(), counts.end(), [&](int64_t c) { return c == counts[0]; });
}

// A host buffer seen as a tensor of its bytes, for device::copy (which checks byte counts).
Tensor host_view(void* data, size_t bytes) {
  return Tensor{data, {int64_t(bytes / 4)}, DType::kI32, Device::kCpu};
}

class NcclGroup : public ProcessGroup {
 public:
  NcclGroup(ncclComm_t comm, std::string label, Watchdog* watchdog)
      : comm_(comm), label_(std::move(label)), watchdog_(watchdog) {
    SIGMA_NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
    SIGMA_NCCL_CHECK(ncclCommCount(comm_, &size_));
    SIGMA_CUDA_CHECK(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking));
  }

  ~NcclGroup() override {
    // A failing run may have peers that never answer: abort rather than wait for them.
    if (std::uncaught_exceptions() > 0) {
      ncclCommAbort(comm_);
    } else {
      cudaStreamSynchronize(side_);
      ncclCommDestroy(comm_);
    }
    cudaStreamDestroy(side_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::kCuda; }
  std::string name() const override { return fmt::format("nccl {} ({} ranks)", label_, size_); }

  void all_reduce(Tensor data) override {
    check_f32(data);
    SIGMA_NCCL_CHECK(ncclAllReduce(data.data, data.data, size_t(data.numel()), ncclFloat32, ncclSum,
                                   comm_, cuda::stream()));
  }

  std::unique_ptr<Work> reduce_scatter_async(Tensor out, Tensor in,
                                             std::span<const int64_t> counts) override {
    check_f32(out);
    check_f32(in);
    SIGMA_CHECK(int(counts.size()) == size_ && out.numel() == counts[size_t(rank_)],
                "reduce-scatter into {} of {} parts", out.numel(), counts.size());
    auto pending = std::make_unique<Pending>(this);
    // The side stream starts once backward has written the bucket on the compute stream.
    SIGMA_CUDA_CHECK(cudaEventRecord(pending->ready, cuda::stream()));
    SIGMA_CUDA_CHECK(cudaStreamWaitEvent(side_, pending->ready, 0));
    if (all_equal(counts)) {
      SIGMA_NCCL_CHECK(ncclReduceScatter(in.data, out.data, size_t(counts[0]), ncclFloat32, ncclSum,
                                         comm_, side_));
    } else {
      SIGMA_NCCL_CHECK(ncclGroupStart());
      int64_t offset = 0;
      for (int r = 0; r < size_; ++r) {
        float* part = in.f32() + offset;
        void* recv = r == rank_ ? out.data : static_cast<void*>(part);  // ignored off the root
        SIGMA_NCCL_CHECK(ncclReduce(part, recv, size_t(counts[size_t(r)]), ncclFloat32, ncclSum, r,
                                    comm_, side_));
        offset += counts[size_t(r)];
      }
      SIGMA_NCCL_CHECK(ncclGroupEnd());
    }
    SIGMA_CUDA_CHECK(cudaEventRecord(pending->done, side_));
    return pending;
  }

  void all_gather(Tensor data, std::span<const int64_t> counts) override {
    SIGMA_CHECK(data.device == Device::kCuda &&
                    (data.dtype == DType::kF32 || data.dtype == DType::kBF16),
                "NCCL all-gather of {} {}", device_name(data.device), dtype_name(data.dtype));
    const ncclDataType_t type = data.dtype == DType::kF32 ? ncclFloat32 : ncclBfloat16;
    const int64_t item = int64_t(dtype_size(data.dtype));
    int64_t offset = std::accumulate(counts.begin(), counts.begin() + rank_, int64_t(0));
    if (all_equal(counts)) {
      // In place: this rank's part already sits at rank * count.
      SIGMA_NCCL_CHECK(ncclAllGather(bytes_at(data, offset * item), data.data, size_t(counts[0]),
                                     type, comm_, cuda::stream()));
      return;
    }
    SIGMA_NCCL_CHECK(ncclGroupStart());
    offset = 0;
    for (int r = 0; r < size_; ++r) {
      char* part = bytes_at(data, offset * item);
      SIGMA_NCCL_CHECK(ncclBroadcast(part, part, size_t(counts[size_t(r)]), type, r, comm_,
                                     cuda::stream()));
      offset += counts[size_t(r)];
    }
    SIGMA_NCCL_CHECK(ncclGroupEnd());
  }

  void all_to_all(Tensor out, std::span<const int64_t> recv_rows, Tensor in,
                  std::span<const int64_t> send_rows) override {
    SIGMA_CHECK(out.device == Device::kCuda && in.device == Device::kCuda &&
                    out.dtype == in.dtype && bytes_per_row(out) == bytes_per_row(in),
                "all-to-all of {} {} into {} {}", device_name(in.device), dtype_name(in.dtype),
                device_name(out.device), dtype_name(out.dtype));
    int64_t row = bytes_per_row(in), sent = 0, received = 0;
    SIGMA_NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < size_; ++r) {
      int64_t s = send_rows[size_t(r)] * row, q = recv_rows[size_t(r)] * row;
      if (s > 0)
        SIGMA_NCCL_CHECK(
            ncclSend(bytes_at(in, sent), size_t(s), ncclInt8, r, comm_, cuda::stream()));
      if (q > 0)
        SIGMA_NCCL_CHECK(
            ncclRecv(bytes_at(out, received), size_t(q), ncclInt8, r, comm_, cuda::stream()));
      sent += s;
      received += q;
    }
    SIGMA_NCCL_CHECK(ncclGroupEnd());
    SIGMA_CHECK(sent <= int64_t(in.bytes()) && received <= int64_t(out.bytes()),
                "all-to-all of {} bytes from {}, {} into {}", sent, in.bytes(), received,
                out.bytes());
  }

  void all_reduce_host(std::span<double> values, ReduceOp op) override {
    host_all_reduce(values.data(), values.size(), sizeof(double), ncclFloat64, op);
  }

  void all_reduce_host(std::span<int64_t> values, ReduceOp op) override {
    host_all_reduce(values.data(), values.size(), sizeof(int64_t), ncclInt64, op);
  }

  void all_to_all_host(std::span<int64_t> recv, std::span<const int64_t> send) override {
    SIGMA_CHECK(send.size() == recv.size() && send.size() % size_t(size_) == 0,
                "all-to-all of {} into {} over {} ranks", send.size(), recv.size(), size_);
    size_t bytes = send.size() * sizeof(int64_t), block = bytes / size_t(size_);
    Tensor both = scratch(2 * bytes);
    auto timed = wait("all-to-all");
    Tensor dev_send = both.slice_rows(0, int64_t(bytes / 4));
    Tensor dev_recv = both.slice_rows(int64_t(bytes / 4), int64_t(2 * bytes / 4));
    device::copy(dev_send, host_view(const_cast<int64_t*>(send.data()), bytes));
    SIGMA_NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < size_; ++r) {
      SIGMA_NCCL_CHECK(ncclSend(bytes_at(dev_send, int64_t(block) * r), block, ncclInt8, r, comm_,
                                cuda::stream()));
      SIGMA_NCCL_CHECK(ncclRecv(bytes_at(dev_recv, int64_t(block) * r), block, ncclInt8, r, comm_,
                                cuda::stream()));
    }
    SIGMA_NCCL_CHECK(ncclGroupEnd());
    device::copy(host_view(recv.data(), bytes), dev_recv);
  }

  std::vector<std::string> all_gather_bytes(const std::string& mine) override {
    std::vector<int64_t> lengths(static_cast<size_t>(size_), 0);
    lengths[size_t(rank_)] = int64_t(mine.size());
    all_reduce_host(std::span<int64_t>(lengths), ReduceOp::kSum);
    int64_t longest = *std::max_element(lengths.begin(), lengths.end());
    size_t slot = size_t((longest + 3) / 4 * 4);  // whole 4-byte words, for the copies
    std::string padded(slot * size_t(size_), '\0');
    std::copy(mine.begin(), mine.end(), padded.begin() + std::ptrdiff_t(slot * size_t(rank_)));
    Tensor dev = scratch(padded.size());
    auto timed = wait("all-gather");
    device::copy(dev, host_view(padded.data(), padded.size()));
    SIGMA_NCCL_CHECK(ncclAllGather(bytes_at(dev, int64_t(slot) * rank_), dev.data, slot, ncclInt8,
                                   comm_, cuda::stream()));
    device::copy(host_view(padded.data(), padded.size()), dev);
    std::vector<std::string> all;
    for (int r = 0; r < size_; ++r)
      all.push_back(padded.substr(slot * size_t(r), size_t(lengths[size_t(r)])));
    return all;
  }

  std::string broadcast_bytes(const std::string& value, int root) override {
    std::vector<int64_t> length = {rank_ == root ? int64_t(value.size()) : 0};
    all_reduce_host(std::span<int64_t>(length), ReduceOp::kSum);
    size_t padded = size_t((length[0] + 3) / 4 * 4);
    std::string result(padded, '\0');
    if (rank_ == root) std::copy(value.begin(), value.end(), result.begin());
    if (padded == 0) return "";
    Tensor dev = scratch(padded);
    auto timed = wait("broadcast");
    device::copy(dev, host_view(result.data(), padded));
    SIGMA_NCCL_CHECK(
        ncclBroadcast(dev.data, dev.data, padded, ncclInt8, root, comm_, cuda::stream()));
    device::copy(host_view(result.data(), padded), dev);
    result.resize(size_t(length[0]));
    return result;
  }

  void barrier() override {
    std::vector<int64_t> one = {1};
    all_reduce_host(std::span<int64_t>(one), ReduceOp::kSum);
  }

  std::unique_ptr<ProcessGroup> split(int color, int key, const std::string& label) override {
    ncclComm_t sub = nullptr;
    {
      auto timed = wait("communicator split");
      SIGMA_NCCL_CHECK(ncclCommSplit(comm_, color, key, &sub, nullptr));
    }
    return std::make_unique<NcclGroup>(sub, label, watchdog_);
  }

 private:
  struct Pending : Work {
    explicit Pending(NcclGroup* group) : group(group) {
      SIGMA_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
      SIGMA_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    }
    ~Pending() override {
      cudaEventDestroy(ready);  // released once the event completes
      cudaEventDestroy(done);
    }
    void wait() override {
      SIGMA_CUDA_CHECK(cudaStreamWaitEvent(cuda::stream(), done, 0));
      // The host waits too, under the watchdog: a peer that died shows here, on time.
      auto timed = group->wait("reduce-scatter");
      SIGMA_CUDA_CHECK(cudaEventSynchronize(done));
    }
    NcclGroup* group;
    cudaEvent_t ready = nullptr, done = nullptr;
  };

  std::optional<Watchdog::Wait> wait(const char* what) {
    if (!watchdog_) return std::nullopt;
    return watchdog_->wait(fmt::format("{} on {}", what, name()));
  }

  void host_all_reduce(void* values, size_t count, size_t item, ncclDataType_t type, ReduceOp op) {
    if (count == 0) return;
    size_t bytes = count * item;
    Tensor dev = scratch(bytes);
    auto timed = wait("all-reduce");
    device::copy(dev, host_view(values, bytes));
    SIGMA_NCCL_CHECK(
        ncclAllReduce(dev.data, dev.data, count, type, nccl_op(op), comm_, cuda::stream()));
    device::copy(host_view(values, bytes), dev);  // waits for the result
  }

  // Device bytes for host collectives (a multiple of 4), kept and grown as needed.
  Tensor scratch(size_t bytes) {
    if (bytes > scratch_.bytes()) scratch_ = Buffer(std::max(bytes, size_t(4096)), Device::kCuda);
    return scratch_.tensor(0, {int64_t(bytes / 4)}, DType::kI32);
  }

  static void check_f32(const Tensor& t) {
    SIGMA_CHECK(t.device == Device::kCuda && t.dtype == DType::kF32, "NCCL collective on {} {}",
                device_name(t.device), dtype_name(t.dtype));
  }

  ncclComm_t comm_;
  std::string label_;
  Watchdog* watchdog_;
  int rank_ = 0, size_ = 1;
  cudaStream_t side_ = nullptr;
  Buffer scratch_;
};

}  // namespace

std::unique_ptr<ProcessGroup> make_nccl_world(const Launch& launch, ProcessGroup* mpi,
                                              Watchdog* watchdog, double timeout_s) {
  int gpus = 0;
  SIGMA_CUDA_CHECK(cudaGetDeviceCount(&gpus));
  // Before anything touches the GPU: every CUDA object of this rank lives on its device.
  SIGMA_CUDA_CHECK(cudaSetDevice(launch.local_rank % gpus));
  ncclUniqueId id;
  if (launch.rank == 0) SIGMA_NCCL_CHECK(ncclGetUniqueId(&id));
  std::string mine(reinterpret_cast<const char*>(&id), sizeof(id));
  std::string shared =
      mpi ? mpi->broadcast_bytes(mine, 0) : rendezvous_over_tcp(launch, mine, timeout_s);
  SIGMA_CHECK(shared.size() == sizeof(id), "unique id of {} bytes", shared.size());
  std::memcpy(&id, shared.data(), sizeof(id));
  ncclComm_t comm = nullptr;
  {
    std::optional<Watchdog::Wait> timed;
    if (watchdog)
      timed.emplace(watchdog->wait(fmt::format("NCCL init of {} ranks", launch.world_size)));
    SIGMA_NCCL_CHECK(ncclCommInitRank(&comm, launch.world_size, id, launch.rank));
  }
  return std::make_unique<NcclGroup>(comm, "world", watchdog);
}

}  // namespace sigma
