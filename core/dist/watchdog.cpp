// The watchdog thread: timeouts, heartbeat files, and the one-line report (watchdog.h).
#include "core/dist/watchdog.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace sigma {
namespace fs = std::filesystem;
namespace {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "?";
  return name;
}

std::string heartbeat_path(const std::string& dir, int rank) {
  return (fs::path(dir) / fmt::format("rank_{:05d}", rank)).string();
}

// Tabs separate the fields, so a phase may hold spaces; none of ours holds a tab.
std::string clean(std::string text) {
  std::replace(text.begin(), text.end(), '\t', ' ');
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

struct Heartbeat {
  int pid = 0;
  std::string host;
  double time = 0;
  std::string phase, waiting;
};

bool read_heartbeat(const std::string& path, Heartbeat& beat) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return false;
  std::vector<std::string> fields;
  std::stringstream split(line);
  for (std::string field; std::getline(split, field, '\t');) fields.push_back(field);
  if (fields.size() < 6) return false;
  beat.pid = std::atoi(fields[1].c_str());
  beat.host = fields[2];
  beat.time = std::atof(fields[3].c_str());
  beat.phase = fields[4];
  beat.waiting = fields[5] == "-" ? "" : fields[5];
  return true;
}

}  // namespace

Watchdog::Watchdog(WatchdogConfig config) : config_(std::move(config)) {
  start_unix_ = unix_now();
  phase_start_ = Clock::now();
  if (!config_.heartbeat_dir.empty()) {
    std::error_code error;
    fs::create_directories(config_.heartbeat_dir, error);  // every rank: whoever comes first
    write_heartbeat();
  }
  thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Watchdog::set_phase(std::string phase) {
  std::lock_guard lock(mutex_);
  phase_ = std::move(phase);
  phase_start_ = Clock::now();
}

Watchdog::Wait Watchdog::wait(std::string what) {
  std::lock_guard lock(mutex_);
  waiting_ = std::move(what);
  wait_start_ = Clock::now();
  return Wait(this);
}

Watchdog::Wait::~Wait() {
  if (!watchdog_) return;
  std::lock_guard lock(watchdog_->mutex_);
  watchdog_->waiting_.clear();
  // The wait ended: the main thread moves again, which is progress.
  watchdog_->phase_start_ = Clock::now();
}

void Watchdog::write_heartbeat() {
  std::string line;
  {
    std::lock_guard lock(mutex_);
    line = fmt::format("{}\t{}\t{}\t{:.3f}\t{}\t{}\n", config_.rank, ::getpid(), clean(host_name()),
                       unix_now(), clean(phase_), waiting_.empty() ? "-" : clean(waiting_));
  }
  std::string path = heartbeat_path(config_.heartbeat_dir, config_.rank);
  std::string tmp = path + ".tmp";
  // Best effort: a full disk must not end the run, and the next beat tries again.
  if (FILE* f = std::fopen(tmp.c_str(), "w")) {
    std::fputs(line.c_str(), f);
    std::fclose(f);
    std::rename(tmp.c_str(), path.c_str());
  }
}

std::string Watchdog::describe_peers() const {
  if (config_.heartbeat_dir.empty()) return "";
  double now = unix_now();
  // A peer that has not beaten for a few beats is not running.
  double stale_after = std::max(2.0, 3 * std::min(2.0, config_.collective_timeout_s / 4));
  std::vector<std::string> suspects;
  int more = 0;
  for (int r = 0; r < config_.world_size; ++r) {
    if (r == config_.rank) continue;
    Heartbeat beat;
    std::string what;
    if (!read_heartbeat(heartbeat_path(config_.heartbeat_dir, r), beat) ||
        beat.time < start_unix_ - 60) {
      what = fmt::format("rank {} has not started (no heartbeat)", r);
    } else if (now - beat.time > stale_after) {
      what = fmt::format(
          "rank {} (pid {} on {}) has been silent for {:.1f} s, last in {} "
          "(dead or stopped)",
          r, beat.pid, beat.host, now - beat.time,
          beat.waiting.empty() ? beat.phase : beat.phase + ", waiting in " + beat.waiting);
    } else if (beat.waiting.empty()) {
      what = fmt::format("rank {} (pid {} on {}) is alive but still in {} (slow or hung)", r,
                         beat.pid, beat.host, beat.phase);
    } else {
      continue;  // waiting in a collective too: a victim, not the cause
    }
    if (suspects.size() < 4)
      suspects.push_back(what);
    else
      ++more;
  }
  if (suspects.empty()) return "; every peer is waiting too (a mismatched collective?)";
  std::string text;
  for (const std::string& s : suspects) text += "; " + s;
  if (more > 0) text += fmt::format("; and {} more", more);
  return text;
}

void Watchdog::fire(const std::string& line) {
  std::fprintf(stderr, "sigma: rank %d: %s\n", config_.rank, line.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  // _Exit: the main thread is stuck inside a collective or a kernel; unwinding or running
  // destructors from here could block on it forever.
  std::_Exit(kWatchdogExitCode);
}

void Watchdog::run() {
  double shortest = std::min(config_.collective_timeout_s, config_.progress_timeout_s);
  auto tick = std::chrono::duration<double>(std::clamp(shortest / 10, 0.01, 1.0));
  // A beat at least every `beat_every`, and at the next tick when the phase changed (0.1 s
  // apart at most), so a peer's report says what this rank last did.
  double beat_every = std::min(2.0, config_.collective_timeout_s / 4);
  auto last_beat = Clock::now();
  std::unique_lock lock(mutex_);
  std::string beaten = phase_ + waiting_;
  while (!wake_.wait_for(lock, tick, [this] { return stopping_; })) {
    auto now = Clock::now();
    auto seconds = [&](Clock::time_point since) {
      return std::chrono::duration<double>(now - since).count();
    };
    if (!waiting_.empty() && seconds(wait_start_) > config_.collective_timeout_s) {
      std::string line =
          fmt::format("no answer for {:.3g} s (parallelism.collective_timeout_s) in {} during {}",
                      seconds(wait_start_), waiting_, phase_);
      lock.unlock();
      fire(line + describe_peers() + "; exiting");
    }
    if (waiting_.empty() && seconds(phase_start_) > config_.progress_timeout_s) {
      std::string line = fmt::format(
          "no progress for {:.3g} s (parallelism.progress_timeout_s) in {}: this rank hangs; "
          "exiting",
          seconds(phase_start_), phase_);
      lock.unlock();
      fire(line);
    }
    bool changed = beaten != phase_ + waiting_ && seconds(last_beat) >= 0.1;
    if (!config_.heartbeat_dir.empty() && (changed || seconds(last_beat) >= beat_every)) {
      beaten = phase_ + waiting_;
      lock.unlock();
      write_heartbeat();
      lock.lock();
      last_beat = now;
    }
  }
}

}  // namespace sigma
