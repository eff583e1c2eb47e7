// Preemption: a scheduler's stop signal ends a run cleanly. SIGTERM, SIGINT and SIGUSR1
// (Slurm sends it ahead of a time limit with `--signal=USR1@T`) ask the trainer to finish the
// step it is in, write a checkpoint and exit 0; a second such signal exits at once with
// 128 + its number, leaving the committed checkpoints as they are (a write in progress is
// never committed). Also ignores SIGXFSZ, so a file-size limit fails a write with EFBIG,
// reported like a full disk, instead of killing the process.
// Leaves out: agreeing on the stop across ranks (the multi-rank layer must all-reduce it).
#pragma once

#include <string>

namespace sigma {

// Installs the handlers for its lifetime (one at a time, process-wide).
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The first stop signal received (its number), or 0.
  int requested() const;
};

std::string signal_name(int signal);  // "SIGTERM"

}  // namespace sigma
