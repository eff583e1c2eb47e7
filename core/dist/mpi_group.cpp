// MPI collectives run on one communication thread (mpi_group.h).
#include "core/dist/mpi_group.h"

#include "core/dist/watchdog.h"

#include <fmt/format.h>
// The C API only: OpenMPI's (and MPICH's) deprecated C++ bindings need a library we do not link.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

namespace sigma {
namespace {

void check_mpi(int code, const std::string& what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, text, &length);
  fail("MPI {} failed: {}", what, std::string(text, size_t(length)));
}

// Bytes of one row (dim 0) of t, also when t has no rows.
int64_t bytes_per_row(const Tensor& t) {
  int64_t n = int64_t(dtype_size(t.dtype));
  for (int i = 1; i < t.shape.rank; ++i) n *= t.shape[i];
  return n;
}

int as_int(int64_t value, const char* what) {
  SIGMA_CHECK(value >= 0 && value <= INT_MAX, "{} {} does not fit an MPI count", what, value);
  return int(value);
}

// The thread every MPI call of the process runs on, in submission order.
class CommThread {
 public:
  CommThread() {
    thread_ = std::thread([state = state_] { serve(*state); });
  }
  ~CommThread() {
    if (thread_.joinable()) abandon();
  }

  std::future<void> submit(std::function<void()> fn) {
    std::packaged_task<void()> task(std::move(fn));
    std::future<void> done = task.get_future();
    {
      std::lock_guard lock(state_->mutex);
      state_->queue.push_back(std::move(task));
    }
    state_->wake.notify_one();
    return done;
  }

  // Normal end: finalise MPI after everything queued, then join.
  void finish() {
    submit([] { MPI_Finalize(); }).get();
    stop();
    thread_.join();
  }

  // Some rank failed: the thread may be blocked in MPI for good. It keeps its own state
  // (shared), so letting it go is safe; the process exits soon.
  void abandon() {
    stop();
    thread_.detach();
  }

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable wake;
    std::deque<std::packaged_task<void()>> queue;
    bool stop = false;
  };

  static void serve(State& state) {
    // OpenMPI waits by polling, and this thread shares the cores with the compute threads:
    // at the lowest priority it spins only on cycles the compute leaves idle. When the main
    // thread blocks on a collective it sleeps, and this thread has the core to itself.
    setpriority(PRIO_PROCESS, pid_t(::syscall(SYS_gettid)), 19);
    for (;;) {
      std::packaged_task<void()> task;
      {
        std::unique_lock lock(state.mutex);
        state.wake.wait(lock, [&] { return state.stop || !state.queue.empty(); });
        if (state.queue.empty()) return;
        task = std::move(state.queue.front());
        state.queue.pop_front();
      }
      task();  // an exception lands in the task's future
    }
  }

  void stop() {
    {
      std::lock_guard lock(state_->mutex);
      state_->stop = true;
    }
    state_->wake.notify_one();
  }

  std::shared_ptr<State> state_ = std::make_shared<State>();
  std::thread thread_;
};

class MpiGroup : public ProcessGroup {
 public:
  MpiGroup(std::shared_ptr<CommThread> comm, MPI_Comm mpi_comm, bool world, std::string label,
           Watchdog* watchdog)
      : comm_(std::move(comm)),
        mpi_comm_(mpi_comm),
        world_(world),
        label_(std::move(label)),
        watchdog_(watchdog) {
    run("rank query", [&] {
      check_mpi(MPI_Comm_set_errhandler(mpi_comm_, MPI_ERRORS_RETURN), "set error handler");
      check_mpi(MPI_Comm_rank(mpi_comm_, &rank_), "rank query");
      check_mpi(MPI_Comm_size(mpi_comm_, &size_), "size query");
    });
  }

  ~MpiGroup() override {
    bool failing = std::uncaught_exceptions() > 0;
    if (world_) {
      if (failing)
        comm_->abandon();
      else
        comm_->finish();
    } else if (!failing) {
      run("communicator free", [this] { MPI_Comm_free(&mpi_comm_); });
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::kCpu; }
  std::string name() const override { return fmt::format("mpi {} ({} ranks)", label_, size_); }

  void all_reduce(Tensor data) override {
    check_f32(data);
    run("all-reduce", [&] {
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, data.data, as_int(data.numel(), "all-reduce"),
                              MPI_FLOAT, MPI_SUM, mpi_comm_),
                "all-reduce");
    });
  }

  std::unique_ptr<Work> reduce_scatter_async(Tensor out, Tensor in,
                                             std::span<const int64_t> counts) override {
    check_f32(out);
    check_f32(in);
    SIGMA_CHECK(int(counts.size()) == size_ && out.numel() == counts[size_t(rank_)],
                "reduce-scatter into {} of parts {}", out.numel(), counts.size());
    auto recv_counts = std::make_shared<std::vector<int>>();
    int64_t total = 0;
    for (int64_t c : counts) recv_counts->push_back(as_int(c, "reduce-scatter")), total += c;
    SIGMA_CHECK(total == in.numel(), "reduce-scatter parts {} of {}", total, in.numel());
    // Captures values only: the call may still be queued when the caller moves on.
    std::future<void> done = comm_->submit([comm = mpi_comm_, out, in, recv_counts] {
      check_mpi(
          MPI_Reduce_scatter(in.data, out.data, recv_counts->data(), MPI_FLOAT, MPI_SUM, comm),
          "reduce-scatter");
    });
    return std::make_unique<Pending>(this, "reduce-scatter", std::move(done));
  }

  void all_gather(Tensor data, std::span<const int64_t> counts) override {
    check_f32(data);
    std::vector<int> sizes, offsets;
    int64_t offset = 0;
    for (int64_t c : counts) {
      sizes.push_back(as_int(c, "all-gather"));
      offsets.push_back(as_int(offset, "all-gather offset"));
      offset += c;
    }
    SIGMA_CHECK(int(counts.size()) == size_ && offset == data.numel(), "all-gather of {} in {}",
                offset, data.numel());
    run("all-gather", [&] {
      check_mpi(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data.data, sizes.data(),
                               offsets.data(), MPI_FLOAT, mpi_comm_),
                "all-gather");
    });
  }

  void all_to_all(Tensor out, std::span<const int64_t> recv_rows, Tensor in,
                  std::span<const int64_t> send_rows) override {
    SIGMA_CHECK(out.device == Device::kCpu && in.device == Device::kCpu && out.dtype == in.dtype,
                "all-to-all of {} into {}", dtype_name(in.dtype), dtype_name(out.dtype));
    int64_t row_bytes = bytes_per_row(in);
    SIGMA_CHECK(bytes_per_row(out) == row_bytes, "all-to-all rows of {} and {} bytes", row_bytes,
                bytes_per_row(out));
    std::vector<int> send_counts, send_offsets, recv_counts, recv_offsets;
    auto layout = [&](std::span<const int64_t> rows, std::vector<int>& counts,
                      std::vector<int>& offsets, int64_t available) {
      int64_t offset = 0;
      for (int64_t r : rows) {
        counts.push_back(as_int(r, "all-to-all rows"));
        offsets.push_back(as_int(offset, "all-to-all offset"));
        offset += r;
      }
      SIGMA_CHECK(int(rows.size()) == size_ && offset <= available, "{} rows in {}", offset,
                  available);
    };
    layout(send_rows, send_counts, send_offsets, in.shape[0]);
    layout(recv_rows, recv_counts, recv_offsets, out.shape[0]);
    run("all-to-all", [&] {
      MPI_Datatype row;
      check_mpi(
          MPI_Type_contiguous(as_int(std::max<int64_t>(row_bytes, 1), "row bytes"), MPI_BYTE, &row),
          "row type");
      check_mpi(MPI_Type_commit(&row), "row type");
      int code = MPI_Alltoallv(in.data, send_counts.data(), send_offsets.data(), row, out.data,
                               recv_counts.data(), recv_offsets.data(), row, mpi_comm_);
      MPI_Type_free(&row);
      check_mpi(code, "all-to-all");
    });
  }

  void all_reduce_host(std::span<double> values, ReduceOp op) override {
    run("all-reduce", [&] {
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, values.data(), as_int(int64_t(values.size()), "count"),
                              MPI_DOUBLE, mpi_op(op), mpi_comm_),
                "all-reduce");
    });
  }

  void all_reduce_host(std::span<int64_t> values, ReduceOp op) override {
    run("all-reduce", [&] {
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, values.data(), as_int(int64_t(values.size()), "count"),
                              MPI_INT64_T, mpi_op(op), mpi_comm_),
                "all-reduce");
    });
  }

  void all_to_all_host(std::span<int64_t> recv, std::span<const int64_t> send) override {
    SIGMA_CHECK(send.size() == recv.size() && send.size() % size_t(size_) == 0,
                "all-to-all of {} into {} over {} ranks", send.size(), recv.size(), size_);
    int block = as_int(int64_t(send.size()) / size_, "block");
    run("all-to-all", [&] {
      check_mpi(
          MPI_Alltoall(send.data(), block, MPI_INT64_T, recv.data(), block, MPI_INT64_T, mpi_comm_),
          "all-to-all");
    });
  }

  std::vector<std::string> all_gather_bytes(const std::string& mine) override {
    std::vector<std::string> all(static_cast<size_t>(size_));
    run("all-gather", [&] {
      int length = as_int(int64_t(mine.size()), "bytes");
      std::vector<int> lengths(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
      check_mpi(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, mpi_comm_),
                "all-gather");
      int64_t total = 0;
      for (int r = 0; r < size_; ++r) {
        offsets[size_t(r)] = as_int(total, "offset");
        total += lengths[size_t(r)];
      }
      std::string joined(size_t(total), '\0');
      check_mpi(MPI_Allgatherv(mine.data(), length, MPI_BYTE, joined.data(), lengths.data(),
                               offsets.data(), MPI_BYTE, mpi_comm_),
                "all-gather");
      for (int r = 0; r < size_; ++r)
        all[size_t(r)] = joined.substr(size_t(offsets[size_t(r)]), size_t(lengths[size_t(r)]));
    });
    return all;
  }

  std::string broadcast_bytes(const std::string& value, int root) override {
    std::string result = value;
    run("broadcast", [&] {
      int64_t length = int64_t(result.size());
      check_mpi(MPI_Bcast(&length, 1, MPI_INT64_T, root, mpi_comm_), "broadcast");
      result.resize(size_t(length));
      check_mpi(MPI_Bcast(result.data(), as_int(length, "bytes"), MPI_BYTE, root, mpi_comm_),
                "broadcast");
    });
    return result;
  }

  void barrier() override {
    run("barrier", [&] { check_mpi(MPI_Barrier(mpi_comm_), "barrier"); });
  }

  std::unique_ptr<ProcessGroup> split(int color, int key, const std::string& label) override {
    MPI_Comm sub = MPI_COMM_NULL;
    run("communicator split",
        [&] { check_mpi(MPI_Comm_split(mpi_comm_, color, key, &sub), "communicator split"); });
    return std::make_unique<MpiGroup>(comm_, sub, false, label, watchdog_);
  }

  // Waits for a queued call, timed by the watchdog.
  void wait(const char* what, std::future<void>& done) {
    std::optional<Watchdog::Wait> timed;
    if (watchdog_) timed.emplace(watchdog_->wait(fmt::format("{} on {}", what, name())));
    done.get();  // rethrows the call's error
  }

 private:
  struct Pending : Work {
    Pending(MpiGroup* group, const char* what, std::future<void> done)
        : group(group), what(what), done(std::move(done)) {}
    void wait() override {
      if (done.valid()) group->wait(what, done);
    }
    MpiGroup* group;
    const char* what;
    std::future<void> done;
  };

  void run(const char* what, std::function<void()> fn) {
    std::future<void> done = comm_->submit(std::move(fn));
    wait(what, done);
  }

  static void check_f32(const Tensor& t) {
    SIGMA_CHECK(t.device == Device::kCpu && t.dtype == DType::kF32, "MPI collective on {} {}",
                device_name(t.device), dtype_name(t.dtype));
  }

  static MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::kSum ? MPI_SUM : MPI_MAX; }

  std::shared_ptr<CommThread> comm_;
  MPI_Comm mpi_comm_;
  bool world_;
  std::string label_;
  Watchdog* watchdog_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<ProcessGroup> make_mpi_world(Watchdog* watchdog) {
  auto comm = std::make_shared<CommThread>();
  comm->submit([] {
        int provided = 0;
        check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "init");
        // Every call comes from the communication thread, which also initialised MPI.
        if (provided < MPI_THREAD_FUNNELED)
          fail("this MPI library gives thread level {}; sigma needs MPI_THREAD_FUNNELED", provided);
      })
      .get();
  return std::make_unique<MpiGroup>(comm, MPI_COMM_WORLD, true, "world", watchdog);
}

}  // namespace sigma
