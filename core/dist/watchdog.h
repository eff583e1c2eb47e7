// Watchdog: a thread that ends this rank, cleanly and with a reason, when the main thread is
// stuck: blocked in one collective longer than parallelism.collective_timeout_s (a peer
// died, hangs or cannot be reached), or in one phase of the work longer than
// parallelism.progress_timeout_s (this rank hangs). It prints one line naming this rank,
// what it was doing and, for a collective, which peers it is waiting for and what they last
// did, then exits with kWatchdogExitCode, so the launcher ends the job and a supervisor
// (scripts/supervise) can restart it from the last checkpoint.
//
// Peers are known through heartbeat files: every `beat` each rank writes
// HEARTBEAT_DIR/rank_NNNNN (one line: rank, pid, host, unix time, phase, what it waits in),
// replaced atomically. They live in the run directory, which every rank shares already
// (checkpoints are committed there by rank 0 from every rank's files). A peer whose file
// has gone stale is dead or stopped; a fresh one stuck in a phase hangs.
// Leaves out: aborting in-flight NCCL communicators before exiting (the process exit frees
// them) and any recovery inside the job: a failure ends the job, the supervisor restarts it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace sigma {

// The exit code of a rank the watchdog ends (2 is a user error, 3 a bug).
inline constexpr int kWatchdogExitCode = 4;

struct WatchdogConfig {
  int rank = 0;
  int world_size = 1;
  std::string heartbeat_dir;  // "" writes and reads no heartbeat files
  double collective_timeout_s = 600;
  double progress_timeout_s = 1800;
};

class Watchdog {
 public:
  explicit Watchdog(WatchdogConfig config);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // What the main thread does now ("step 12: backward, micro-batch 2"). Setting a phase is
  // progress: the progress timeout restarts.
  void set_phase(std::string phase);

  // While a Wait lives, the main thread is blocked in a collective (`what`, e.g.
  // "all-to-all on mpi ep"); it may last collective_timeout_s.
  class Wait {
   public:
    Wait(Wait&& other) noexcept : watchdog_(other.watchdog_) { other.watchdog_ = nullptr; }
    Wait(const Wait&) = delete;
    Wait& operator=(const Wait&) = delete;
    ~Wait();

   private:
    friend class Watchdog;
    explicit Wait(Watchdog* watchdog) : watchdog_(watchdog) {}
    Watchdog* watchdog_;
  };
  [[nodiscard]] Wait wait(std::string what);

  const WatchdogConfig& config() const { return config_; }

 private:
  using Clock = std::chrono::steady_clock;

  void run();
  void write_heartbeat();
  [[noreturn]] void fire(const std::string& line);
  std::string describe_peers() const;

  WatchdogConfig config_;
  double start_unix_ = 0;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::string phase_ = "starting";
  Clock::time_point phase_start_;
  std::string waiting_;  // "" when not in a collective
  Clock::time_point wait_start_;
  std::thread thread_;
};

}  // namespace sigma
